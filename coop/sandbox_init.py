"""The launcher that runs first inside a sandbox (coop/sandbox.py starts it): it finishes the
isolation the wrapper (`bwrap` or `unshare`) began, runs the model's code in a child process
under resource limits, and reports how that child ended.

The sandbox module cannot do this from outside: the mounts must be made inside the new mount
namespace, RLIMIT_NPROC only counts per sandbox when it is set inside a user namespace of the
sandbox's own, and the exit status of the code is lost behind `bwrap` and `unshare`, which
turn a death by signal into an exit code. So the launcher is the sandbox's first process: it
forks the code, waits, and writes the child's wait status and CPU time on a pipe.

It is run as `python -I -c <this file's text> <spec>`, so that it works wherever coop is
installed, even under a directory the sandbox hides; hence it imports only the standard
library. The spec is JSON: `python`, `cwd`, `env` and `main` (how to exec the code),
`rlimits` (resource name → [soft, hard]), `status_fd`, `isolate` (the mounts to make, or
null) and `confine` (null, or `{"uid": …}`: a uid to switch to, or null to stay).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 0x1000, 0x4000, 0x40000
"""mount(2) flags."""
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
"""mount_setattr(2) attributes."""
SYS_MOUNT_SETATTR = 442
"""mount_setattr's syscall number (Linux >= 5.12), the same on every architecture but alpha."""
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
"""mount_setattr(2)'s dirfd for "relative to the cwd" and its flag for a whole subtree."""
CLONE_NEWUSER = 0x10000000
"""unshare(2)'s flag for a new user namespace."""
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
"""prctl(2) options."""
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
"""The host devices a namespaces sandbox's /dev holds, as bubblewrap's --dev does."""
LINKS = {"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2"}
"""The symlinks of a minimal /dev."""
MOUNT_FAILED = 125
"""The launcher's exit code when the sandbox could not be set up (nothing was run)."""
EXEC_FAILED = 126
"""The code's exit code when it could not be started inside the sandbox."""


class MountAttr(ctypes.Structure):
    """struct mount_attr of mount_setattr(2)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


LIBC = ctypes.CDLL(None, use_errno=True)
"""The C library, for the calls Python does not wrap."""


def check(result: int, what: str) -> None:
    """Raises OSError for a C call that returned -1."""
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    encoded = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    check(LIBC.mount(*encoded[:3], ctypes.c_ulong(flags), encoded[3]), f"mount {target}")


def set_attributes(path: str, on: int, off: int = 0, recursive: bool = False) -> None:
    """Sets (`on`) and clears (`off`) per-mount attributes of the mount at `path`."""
    attr = MountAttr(attr_set=on, attr_clr=off)
    check(
        LIBC.syscall(
            SYS_MOUNT_SETATTR,
            ctypes.c_int(AT_FDCWD),
            path.encode(),
            ctypes.c_uint(AT_RECURSIVE if recursive else 0),
            ctypes.byref(attr),
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
        f"mount_setattr {path}",
    )


def bind(fd: int, target: str, writable: bool = False) -> None:
    """Bind-mounts what `fd` holds (opened before it was hidden) on `target`."""
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if writable:
        set_attributes(target, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY)
    else:
        set_attributes(target, MOUNT_ATTR_RDONLY, recursive=True)


def hold(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def populate_dev(devices: dict[str, int], size: int) -> None:
    """A private /dev: the harmless devices, the usual links, a /dev/shm, nothing else."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, f"mode=0755,size={size}")
    for name, fd in devices.items():
        Path("/dev", name).touch()
        bind(fd, f"/dev/{name}")
    for name, target in LINKS.items():
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/shm", 0o1777)
    os.chmod("/dev/shm", 0o1777)


def mask(path: str, null: int) -> None:
    """Hides a directory under an empty tmpfs (made read-only later) or a file under
    /dev/null."""
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    else:
        bind(null, path)


def isolate(scratch: str, workdir: str, masks: list[str], keep: list[str], tmp_bytes: int) -> None:
    """The mounts of a namespaces sandbox: the whole tree read-only, private /tmp, /dev and
    /proc, the `masks` hidden, the interpreter (`keep`) shown again if they hid it, and the
    scratch dir, the only writable place of the host's, at `workdir`."""
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    held = {path: hold(path) for path in (scratch, *keep)}
    devices = {name: hold(f"/dev/{name}") for name in DEVICES}
    set_attributes("/", MOUNT_ATTR_RDONLY, recursive=True)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_bytes}")
    populate_dev(devices, tmp_bytes)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in masks:
        mask(path, devices["null"])
    for path in keep:
        os.makedirs(path, exist_ok=True)
        bind(held[path], path)
    for path in filter(os.path.isdir, masks):
        set_attributes(path, MOUNT_ATTR_RDONLY)
    os.mkdir(workdir)
    bind(held[scratch], workdir, writable=True)
    for fd in (*held.values(), *devices.values()):
        os.close(fd)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def confine(uid: int | None) -> None:
    """Leaves the code no privilege: switches to `uid` (root's sandboxes run as an
    unprivileged user, whom RLIMIT_NPROC restrains), then enters a user namespace of its own
    (where the process limit counts this sandbox only, and which owns none of the mounts) and
    drops every capability for good."""
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        check(LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")  # or /proc/self is root's
    user, group = os.geteuid(), os.getegid()
    check(LIBC.unshare(CLONE_NEWUSER), "unshare")
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"{user} {user} 1")
    write("/proc/self/gid_map", f"{group} {group} 1")
    for cap in range(int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1):
        check(LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capabilities")
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def start(spec: dict[str, Any]) -> NoReturn:
    """In the child: confinement, limits, then the code. Never returns."""
    try:
        if spec["confine"] is not None:
            confine(spec["confine"]["uid"])
        for name, pair in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), tuple(pair))
        os.chdir(spec["cwd"])
        os.execve(spec["python"], [spec["python"], spec["main"]], spec["env"])
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(EXEC_FAILED)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    status_fd = spec["status_fd"]
    os.set_inheritable(status_fd, False)
    if spec["isolate"] is not None:
        try:
            isolate(**spec["isolate"])
        except OSError as exc:
            print(f"sandbox setup failed: {exc}", file=sys.stderr)
            return MOUNT_FAILED
    child = os.fork()
    if child == 0:
        start(spec)
    _, status, usage = os.wait4(child, 0)
    report = {"status": status, "cpu": usage.ru_utime + usage.ru_stime}
    os.write(status_fd, json.dumps(report).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
