"""The launcher that runs first inside a sandbox (coop/sandbox.py starts it): it finishes the
isolation the wrapper (`bwrap` or `unshare`) began, runs the model's code in a child process
under resource limits and a seccomp filter, watches every process the code starts, and reports
how the code ended.

The sandbox module cannot do this from outside: the mounts must be made inside the new mount
namespace, RLIMIT_NPROC only counts per sandbox when it is set inside a user namespace of the
sandbox's own, the exit status of the code is lost behind `bwrap` and `unshare`, which turn a
death by signal into an exit code, and only a process inside can see and stop all of the
code's processes. So the launcher is the sandbox's first process and the code's subreaper: it
forks the code, and every process the code starts stays its descendant, even a daemon that
double-forks; it adds up their CPU time, stops them all when together they pass the CPU limit
or the wall-clock limit (or the scratch limit, at the `process` level, where no tmpfs bounds
it), and stops them all when the code ends; then it writes the code's wait status, the CPU
time and why it stopped it on a pipe.

It is run as `python -I -c <this file's text> <spec>`, so that it works wherever coop is
installed, even under a directory the sandbox hides; hence it imports only the standard
library. The spec is JSON: `python`, `cwd`, `env` and `main` (how to exec the code), `code_fd`
(a memfd holding the code, written to `cwd/main`), `rlimits` (resource name → [soft, hard]),
`status_fd`, `seccomp` (the filter program, hex), `watch` (`cpu` and `wall` seconds, and
`scratch_bytes` for the cwd, or null), `isolate` (the view to build, or null) and `confine`
(null, or `{"uid": …, "userns": …, "seen_as": …}`: a uid to switch to, or null to stay,
whether to enter a user namespace of the code's own, and the uid the code has in it). Run as
`… --exec <filter> -- command…`, it only installs the filter and becomes the command
(`exec_filtered`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import stat
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE, MS_REC = 2, 4, 8, 0x1000, 0x2000, 0x4000
MS_PRIVATE = 0x40000
"""mount(2) flags."""
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
"""mount_setattr(2) attributes."""
SYS_MOUNT_SETATTR = 442
"""mount_setattr's syscall number (Linux >= 5.12), the same on every architecture but alpha."""
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
"""mount_setattr(2)'s dirfd for "relative to the cwd" and its flag for a whole subtree."""
CLONE_NEWUSER = 0x10000000
"""unshare(2)'s flag for a new user namespace."""
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP = 1, 4, 22, 24
PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 36, 38
"""prctl(2) options."""
SECCOMP_MODE_FILTER = 2
"""PR_SET_SECCOMP's mode for a BPF program."""
NEW_ROOT = "/tmp"
"""Where a namespaces sandbox builds its root before moving it onto /: the host's /tmp, covered
in the sandbox's mount namespace only."""
ROOT_BYTES = 1 << 20
"""The size of the tmpfs that holds a namespaces sandbox's root and its /dev: only dirs,
links and mount points, read-only once built."""
TICK = 0.05
"""Seconds between two looks at the code's processes (their CPU time, the scratch dir)."""
TICKS = os.sysconf("SC_CLK_TCK")
"""Clock ticks a second, the unit of the times in /proc/<pid>/stat."""
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
"""The host devices a namespaces sandbox's /dev holds, as bubblewrap's --dev does."""
LINKS = {"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2"}
"""The symlinks of a minimal /dev."""
MOUNT_FAILED = 125
"""The launcher's exit code when the sandbox could not be set up (nothing was run)."""
EXEC_FAILED = 126
"""The code's exit code when it could not be started inside the sandbox."""
EXEC = "--exec"
"""argv[1] of the launcher's exec mode: `--exec <filter, hex> -- command…`."""


class SockFprog(ctypes.Structure):
    """struct sock_fprog of seccomp(2): a BPF program's length and instructions."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


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


def populate_dev(devices: dict[str, int], at: str, shm_bytes: int) -> None:
    """A private /dev: the harmless devices, the usual links, a size-capped /dev/shm, nothing
    else; read-only but for /dev/shm."""
    mount("tmpfs", at, "tmpfs", MS_NOSUID | MS_NOEXEC, f"mode=0755,size={ROOT_BYTES}")
    for name, fd in devices.items():
        Path(at, name).touch()
        bind(fd, f"{at}/{name}")
    for name, target in LINKS.items():
        os.symlink(target, f"{at}/{name}")
    os.mkdir(f"{at}/shm")
    mount("tmpfs", f"{at}/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={shm_bytes}")
    set_attributes(at, MOUNT_ATTR_RDONLY)


def mask(path: str, null: int) -> None:
    """Hides a directory under an empty read-only tmpfs, or a file under /dev/null."""
    if os.path.isdir(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4k")
        set_attributes(path, MOUNT_ATTR_RDONLY)
    else:
        bind(null, path)


def show(fd: int, target: str) -> None:
    """Shows what `fd` holds read-only at `target`, making the dirs on the way (searchable by
    all). Whether it is a dir is asked of `fd`: its path may be covered by now (an
    interpreter under the host's /tmp, where the new root is built)."""
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        Path(target).touch()
    bind(fd, target)


def isolate(
    show_paths: list[str],
    links: dict[str, str],
    masks: list[str],
    workdir: str,
    scratch_bytes: int,
) -> None:
    """The mounts of a namespaces sandbox, as bubblewrap makes them: a new root holding only
    what the code needs — the host's `show_paths` read-only (the interpreter, its libraries),
    the `links` (merged-/usr systems), a private /dev and /proc, and /tmp (holding `workdir`)
    and /dev/shm as tmpfs of `scratch_bytes` each — with the `masks` hidden; nothing else of
    the host's, so no socket, /run or /var/tmp. The launcher then lives in it too."""
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    held = {path: hold(path) for path in show_paths}
    devices = {name: hold(f"/dev/{name}") for name in DEVICES}
    root = NEW_ROOT
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={ROOT_BYTES}")
    os.mkdir(root + "/tmp")  # first, so that what is shown under /tmp lands on top of it
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={scratch_bytes}")
    os.mkdir(root + workdir)
    os.chmod(root + workdir, 0o1777)
    for path in show_paths:
        show(held[path], root + path)
    for path, target in links.items():
        os.makedirs(os.path.dirname(root + path), 0o755, exist_ok=True)
        os.symlink(target, root + path)
    for path in masks:
        mask(root + path, devices["null"])
    os.mkdir(root + "/dev")
    populate_dev(devices, root + "/dev", scratch_bytes)
    os.mkdir(root + "/proc")
    for fd in (*held.values(), *devices.values()):
        os.close(fd)
    os.chdir(root)
    mount(root, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    set_attributes("/", MOUNT_ATTR_RDONLY)


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def drop_bounding_set() -> None:
    """Takes every capability out of the bounding set, so no exec can bring one back."""
    for cap in range(int(Path("/proc/sys/kernel/cap_last_cap").read_text()) + 1):
        check(LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capabilities")


def confine(uid: int | None, userns: bool, seen_as: int | None = None) -> None:
    """Leaves the code no privilege: switches to `uid` (root's sandboxes run as an
    unprivileged user, whom RLIMIT_NPROC restrains), then, at the wrapped levels, enters a
    user namespace of its own (where the process limit counts this sandbox only, and which
    owns none of the mounts), in which it is `seen_as` (the user it really is, rather than
    root of unshare's namespace); every capability dropped for good either way."""
    if not userns:
        drop_bounding_set()  # while still root: it takes CAP_SETPCAP
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        check(LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")  # or /proc/self is root's
    if userns:
        user, group = os.geteuid(), os.getegid()
        inside = user if seen_as is None else seen_as
        check(LIBC.unshare(CLONE_NEWUSER), "unshare")
        write("/proc/self/setgroups", "deny")
        write("/proc/self/uid_map", f"{inside} {user} 1")
        write("/proc/self/gid_map", f"{inside} {group} 1")
        drop_bounding_set()


def install_filter(program: bytes) -> None:
    """The seccomp filter (coop/sandbox_filter.py builds it), for this process and all it
    starts; it takes no_new_privs, which also keeps setuid binaries from raising privilege."""
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def start(spec: dict[str, Any]) -> NoReturn:
    """In the child: confinement, limits, the filter, then the code. Never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if spec["confine"] is not None:
            confine(**spec["confine"])
        for name, pair in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), tuple(pair))
        os.chdir(spec["cwd"])
        install_filter(bytes.fromhex(spec["seccomp"]))
        os.execve(spec["python"], [spec["python"], spec["main"]], spec["env"])
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(EXEC_FAILED)


def processes() -> dict[int, tuple[int, str, float]]:
    """Every process this /proc shows: pid → (parent pid, state, CPU seconds of it and of the
    children it has reaped)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = Path("/proc", name, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            fields = text[text.rindex(")") + 2 :].split()
            seconds = sum(int(value) for value in fields[11:15]) / TICKS
            table[int(name)] = (int(fields[1]), fields[0], seconds)
    return table


def descendants(table: dict[int, tuple[int, str, float]]) -> list[int]:
    """This process's descendants in `table`: as their subreaper, every process the code
    started, whatever it did to leave its parent."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def scratch_bytes(path: str) -> int:
    """What the files under `path` take on disk."""
    total = 0
    for parent, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(parent, name)).st_blocks * 512
    return total


class Watch:
    """The code's processes, from the launcher: their CPU time together, and why they were
    stopped, if they were."""

    def __init__(self, limits: dict[str, Any], cwd: str) -> None:
        self.limits, self.cwd = limits, cwd
        self.deadline = time.monotonic() + limits["wall"]
        self.child = 0
        self.status: int | None = None
        self.why: str | None = None
        self.asked_to_stop = False

    def ask_to_stop(self, signum: int, frame: Any) -> None:
        """SIGTERM's handler: the parent wants the run over (or has died)."""
        self.asked_to_stop = True

    def run(self, child: int) -> dict[str, Any]:
        """Waits for the code, stopping everything it started when it ends or passes a
        limit, and reports."""
        self.child = child
        pidfd = os.pidfd_open(child)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while self.status is None and self.why is None:
            poller.poll(TICK * 1000)
            self.reap()
            self.why = self.over()
        os.close(pidfd)
        self.stop_all()
        times = os.times()  # every process of the code has been reaped into these by now
        cpu = times.children_user + times.children_system
        return {"status": self.status, "cpu": cpu, "stopped": self.why}

    def over(self) -> str | None:
        """Which limit the code has passed, if any."""
        if self.asked_to_stop:
            return "asked"
        if self.cpu() > self.limits["cpu"]:
            return "cpu"
        if time.monotonic() > self.deadline:
            return "wall"
        cap = self.limits["scratch_bytes"]
        if cap is not None and scratch_bytes(self.cwd) > cap:
            return "scratch"
        return None

    def cpu(self) -> float:
        """CPU seconds the code's processes have used, the living and the reaped."""
        times = os.times()
        table = processes()
        living = sum(table[pid][2] for pid in descendants(table))
        return times.children_user + times.children_system + living

    def reap(self) -> None:
        """Collects every ended child (orphans come to the launcher), noting the code's end."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.status = status

    def stop_all(self) -> None:
        """SIGKILL to every process left, until none is, then every one reaped."""
        while True:
            table = processes()
            alive = [pid for pid in descendants(table) if table[pid][1] != "Z"]
            if not alive:
                break
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.reap()
            time.sleep(0.005)
        while self.status is None or descendants(processes()):
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.child:
                self.status = status


def exec_filtered(program: str, command: list[str]) -> NoReturn:
    """The launcher's other use: installs the filter and becomes `command` — how an MCP
    server, which must run as itself, gets the filter of the code's sandbox."""
    install_filter(bytes.fromhex(program))
    os.execvp(command[0], command)


def main(argv: list[str]) -> int:
    if argv[1] == EXEC:
        exec_filtered(argv[2], argv[4:])  # argv[3] is "--"
    spec = json.loads(argv[1])
    status_fd = spec["status_fd"]
    os.set_inheritable(status_fd, False)
    code = os.pread(spec["code_fd"], os.fstat(spec["code_fd"]).st_size, 0)
    os.close(spec["code_fd"])
    if spec["isolate"] is not None:
        try:
            isolate(**spec["isolate"])
        except OSError as exc:
            print(f"sandbox setup failed: {exc}", file=sys.stderr)
            return MOUNT_FAILED
    Path(spec["cwd"], spec["main"]).write_bytes(code)
    watch = Watch(spec["watch"], spec["cwd"])
    signal.signal(signal.SIGTERM, watch.ask_to_stop)
    check(LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "parent death signal")
    check(LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "subreaper")
    child = os.fork()
    if child == 0:
        start(spec)
    os.write(status_fd, json.dumps(watch.run(child)).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
