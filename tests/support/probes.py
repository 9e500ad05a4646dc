"""What an attacker's code tries from inside the `python` tool's sandbox: one program that
probes every bound the README promises and prints one `name=verdict` line per probe, so the
same probes run through the sandbox directly and end to end through `coop start`.

System call numbers are resolved here, on the host, by libseccomp (the names are the
architecture-independent part), and written into the program.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyseccomp

from coop.simulate import Simulator

SYSCALLS = (
    "keyctl",
    "add_key",
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "userfaultfd",
    "ptrace",
    "setns",
    "pidfd_getfd",
    "open_by_handle_at",
    "process_vm_readv",
)
"""Calls the seccomp filter refuses, made raw (arguments that would fail anyway with EINVAL or
EBADF if the call got through: the verdict must be EPERM, the filter's answer)."""
CLONE_NEWUSER = 0x10000000
SIGCHLD = 17

PROGRAM = """
import ctypes, errno, os, socket, subprocess, sys, threading

libc = ctypes.CDLL(None, use_errno=True)
out = {{}}

def err():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

out["uid"] = os.getuid()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
for field in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"):
    out[field] = status[field].strip()
out["unshare_user"] = err() if libc.unshare({newuser}) == -1 else "made"
clone = {clone}
pid = libc.syscall(clone, {newuser} | {sigchld}, 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
out["clone_newuser"] = err() if pid == -1 else "made"
try:
    made = subprocess.run(["unshare", "-Urn", "true"], capture_output=True, timeout=10)
    out["unshare_cmd"] = "made" if made.returncode == 0 else "refused"
except OSError as exc:
    out["unshare_cmd"] = type(exc).__name__
os.makedirs("m", exist_ok=True)
out["mount"] = err() if libc.mount(b"none", b"m", b"tmpfs", 0, None) == -1 else "made"
for name, number in {numbers}.items():
    out[name] = err() if libc.syscall(number, 0, 0, 0, 0, 0) == -1 else "made"
box = []
thread = threading.Thread(target=box.append, args=(1,))
thread.start()
thread.join()
out["thread"] = "ok" if box else "failed"
child = os.fork()
if child == 0:
    os._exit(7)
out["fork"] = "ok" if os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 7 else "failed"
for path in {sockets}:
    try:
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        out["socket " + path] = "connected"
    except OSError as exc:
        out["socket " + path] = type(exc).__name__
for path in {paths}:
    out["path " + path] = "there" if os.path.lexists(path) else "absent"
out["secrets"] = ",".join(sorted(k for k in os.environ if "KEY" in k or "TOKEN" in k)) or "none"
for line in sorted(out.items()):
    print("%s=%s" % line)
"""
"""The probe program; `program()` fills it in."""

HOST_PATHS = ("/var/tmp", "/run", "/home", "/srv", "/mnt", "/opt", "/sys/kernel", "/root/.coop")
"""Host dirs the code has no business seeing."""


def syscall_number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


def program(sockets: tuple[str, ...] = (), paths: tuple[str, ...] = HOST_PATHS) -> str:
    """The probe program, trying `sockets` (unix socket paths) and `paths`."""
    return PROGRAM.format(
        newuser=CLONE_NEWUSER,
        sigchld=SIGCHLD,
        clone=syscall_number("clone"),
        numbers={name: syscall_number(name) for name in SYSCALLS},
        sockets=sockets,
        paths=paths,
    )


def verdicts(stdout: str) -> dict[str, str]:
    """The probe's `name=verdict` lines."""
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def refused_everywhere(found: dict[str, str]) -> list[str]:
    """What a probe run at any level must have been refused, and was not: every probe of the
    filter and of privilege (the empty list when all held)."""
    wrong = []
    for name in ("unshare_user", "clone_newuser", "mount", *SYSCALLS):
        if found.get(name) != "EPERM":
            wrong.append(f"{name}: {found.get(name)}")
    expected = {
        "unshare_cmd": "refused",
        "thread": "ok",
        "fork": "ok",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "secrets": "none",
    }
    wrong += [f"{k}: {found.get(k)}" for k, v in expected.items() if found.get(k) != v]
    return wrong


@dataclass
class Prober(Simulator):
    """The simulated model, but every task it executes asks the `python` tool to run `code`;
    it keeps every tool output it is shown, as the model would read it."""

    code: str = ""
    outputs: list[str] = field(default_factory=list)

    def chat(
        self, messages: Sequence[dict[str, Any]], specs: Sequence[dict[str, Any]]
    ) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
        self.outputs += [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        return super().chat(messages, specs)

    def _tool_plan(
        self, step: int, answer: str, tools: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        return [("python", {"code": self.code})] if "python" in tools else []
