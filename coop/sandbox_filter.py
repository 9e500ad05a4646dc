"""The system calls sandboxed code may not make: a seccomp filter, compiled by libseccomp
(through `pyseccomp`, its ctypes binding) into the kernel's BPF form once per process and
installed by the launcher on the code's process just before it starts the code, at every
level of the sandbox.

Why a deny list over the default "allow": the code is arbitrary Python with arbitrary
libraries (numpy, subprocess, threads), and an allow list would break whatever the list's
author did not foresee. Namespaces, a read-only view and an unprivileged uid already keep the
code from the host's files and network; the filter takes away the kernel's attack surface that
those leave reachable to an unprivileged process — where most container escapes and local
privilege escalations of recent years began — and that no ordinary program needs.

The filter is built here, not in the launcher (which imports only the standard library, so it
runs under an interpreter the sandbox hides), and travels to it as bytes.
"""

from __future__ import annotations

import errno
import functools
import os
from typing import Any

from coop.errors import CoopError

DENIED: dict[str, tuple[str, ...]] = {
    "new namespaces (a user namespace gives every capability inside it)": (
        "unshare",
        "setns",
    ),
    "mounts and root changes (the view of the host is fixed)": (
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
    ),
    "the kernel keyring (not namespaced: keys of other users of the node)": (
        "keyctl",
        "add_key",
        "request_key",
    ),
    "in-kernel programs and tracing (verifier and perf bugs are common escalation paths)": (
        "bpf",
        "perf_event_open",
    ),
    "io_uring (a second syscall interface that the rest of this filter would not see)": (
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ),
    "reaching into other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "kcmp",
    ),
    "exploit helpers with no ordinary use": (
        "userfaultfd",  # stalls the kernel at a chosen page fault, to win a race
        "open_by_handle_at",  # opens files by handle, past the mount view
        "name_to_handle_at",
    ),
    "administration (root's, kept out even if a capability leaked)": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "reboot",
        "swapon",
        "swapoff",
        "syslog",
        "acct",
        "quotactl",
    ),
}
"""System calls refused with EPERM, by why they are refused."""
CLONE_NAMESPACES = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
"""clone(2) flags that make a namespace: a clone with any of them is refused with EPERM (its
first argument is the flags on every architecture coop runs on but s390)."""
NO_CLONE3 = "clone3"
"""clone3(2) passes its flags in memory, where a filter cannot look: it answers ENOSYS, and the
C library falls back to clone(2), whose flags the filter checks (as Docker and systemd do)."""
FIX = "install libseccomp (apt-get install libseccomp2)"
"""What makes the filter available."""


class FilterUnavailable(CoopError):
    """libseccomp is missing or refused the filter (one line: what to install)."""


def denied() -> list[str]:
    """Every system call the filter refuses outright."""
    return [name for names in DENIED.values() for name in names]


@functools.cache
def program() -> bytes:
    """The filter as the kernel's `struct sock_filter` array, or FilterUnavailable."""
    try:
        import pyseccomp as seccomp  # a ctypes binding: libseccomp itself may be missing
    except (ImportError, RuntimeError) as exc:
        raise FilterUnavailable(f"no seccomp filter ({exc}): {FIX}") from None
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    refuse = seccomp.ERRNO(errno.EPERM)
    for name in denied():
        if _known(seccomp, name):  # a call this libseccomp has never heard of is left out
            rules.add_rule(refuse, name)
    for flag in CLONE_NAMESPACES.values():
        rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), NO_CLONE3)
    fd = os.memfd_create("coop-seccomp")
    try:
        rules.export_bpf(_Fd(fd))
        return os.pread(fd, os.fstat(fd).st_size, 0)
    except OSError as exc:
        raise FilterUnavailable(f"libseccomp could not build the filter: {exc}") from None
    finally:
        os.close(fd)


def unknown() -> list[str]:
    """Names in DENIED that this node's libseccomp does not know (so not refused here)."""
    import pyseccomp as seccomp

    return [name for name in denied() if not _known(seccomp, name)]


def _known(seccomp: Any, name: str) -> bool:
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)) >= 0


class _Fd:
    """What libseccomp's export asks of a file: its descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd
