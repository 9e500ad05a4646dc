"""Sandboxes for the `python` tool: code a model wrote runs in a process of its own per call,
and must not read coop's secrets, change the host's files, reach the network or take the node
down. Isolation comes in levels, strongest first:

- `bubblewrap`: the `bwrap` binary makes new namespaces and a new root that holds only what
  the code needs — the interpreter and the system's libraries, read-only — with private /dev
  and /proc, and /tmp (the code's working dir) and /dev/shm as size-capped tmpfs.
- `namespaces`: util-linux `unshare` makes the namespaces and the launcher
  (coop/sandbox_init.py) builds the same root itself, for nodes without bwrap.
- `process`: resource limits, an empty environment, an unprivileged user when coop is root,
  the seccomp filter and a scratch cwd on the node's disk: no isolation of the host's files
  or network. Only ever used when asked for by name.

`choose` gives the level asked for, or raises SandboxUnavailable in one line: never a weaker
level in silence. Whether a level works is found by trying it once per process, since a
binary can be installed and still fail (user namespaces disabled, an old kernel).

Every run has fresh scratch space (the code's cwd and HOME, gone afterwards), an environment
of SANDBOX_ENV only, the seccomp filter of coop/sandbox_filter.py, and the launcher between
the wrapper and the code: it sets the limits inside the sandbox, where RLIMIT_NPROC counts
this sandbox's processes alone, holds the code's processes to one CPU budget together, ends
every one of them with the call, and reports the code's exit status, which `bwrap` and
`unshare` would blur. When coop runs as root the code runs as NOBODY: RLIMIT_NPROC does not
restrain root, and root's own files would stay readable to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import functools
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from coop import constants as C
from coop.errors import CoopError
from coop.sandbox_filter import FilterUnavailable, program
from coop.secret_paths import interpreter_dirs, outermost, secret_paths, within

log = logging.getLogger(__name__)

NOBODY = 65534
"""The unprivileged uid and gid a sandbox's code runs as when coop runs as root."""
PR_SET_DUMPABLE = 4
"""prctl's option (linux/prctl.h) that makes a process's memory and /proc files its own."""
INIT_MAP = ["0", "0", "4294967295"]
"""/proc/self/uid_map in the initial user namespace."""
WORKDIR = "/tmp/work"
"""The code's working dir inside bubblewrap and namespaces sandboxes, on their /tmp tmpfs."""
MAIN = "main.py"
"""The file in the scratch dir that holds the code."""
LAUNCHER = Path(__file__).with_name("sandbox_init.py")
"""The launcher, run as `python -I -c <its text>`: it needs no path inside the sandbox."""
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""The system's programs and libraries, shown read-only in every sandbox with a root of its
own (as links where the host has links: merged-/usr systems)."""
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
"""What of /etc is shown: the dynamic loader's cache and config, the time zone and Debian's
alternatives (links to BLAS and the like). Not the rest: users, hosts, services' credentials."""
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "MPLBACKEND": "Agg",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""The whole environment the code sees, with HOME (the scratch dir) and the interpreter's
directory on PATH: nothing of coop's, so no key. One thread per maths library, as threads
count against the process limit."""
NAMESPACE_FLAGS = ("--mount", "--pid", "--net", "--ipc", "--uts", "--cgroup", "--kill-child")
"""`unshare`'s namespaces; `--kill-child` forks the launcher as the pid namespace's init and
kills it, and so the whole sandbox, when unshare dies."""
BWRAP_USER = ("--unshare-all", "--unshare-user", "--disable-userns")
"""bwrap run by a user: every namespace, the user one its own and the last."""
BWRAP_ROOT = (
    *("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"),
    *("--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"),
    *("--cap-add", "CAP_KILL"),
)
"""bwrap run by root, which keeps root's capabilities unless told: only those the launcher
needs to become NOBODY (the code then makes its user namespace) and to stop the code's
processes, which run as NOBODY."""
BWRAP_COMMON = ("--die-with-parent", "--new-session", "--clearenv", "--proc", "/proc")
"""What every bwrap sandbox has besides its view: a fresh /proc."""
BINARIES = {"bubblewrap": "bwrap", "namespaces": "unshare"}
"""The binary each wrapped level needs."""
FIXES = {
    "bubblewrap": "install bubblewrap (apt-get install bubblewrap) and enable unprivileged "
    "user namespaces",
    "namespaces": "it needs util-linux unshare, unprivileged user namespaces and Linux >= 5.12",
    "process": "under root the code runs as nobody, who must be able to reach the "
    "interpreter (install Python outside /root)",
}
"""What makes each level work."""
GRACE = 0.5
"""Seconds output is still read once the code has ended."""
BACKSTOP = 1.0
"""Seconds past the wall-clock limit before coop stops a run the launcher has not: the
launcher stops it at the limit, with all its processes."""
STOP_GRACE = 1.0
"""Seconds the launcher has to stop every process of a run it is asked to stop (SIGTERM),
before the wrapper's whole process group is killed."""
CHUNK = 65536
"""Bytes read from a pipe at a time."""
PROBE = "print('ok')"
"""The trivial run that tells whether a level works on this node."""
MEMORY_ERROR = re.compile(r"^[\w.]*MemoryError\b")
"""The last line of a traceback that ran out of memory (numpy's errors included)."""
AUTO = "auto"
"""`choose`'s default: the strongest level that works here, never `process`."""


class SandboxUnavailable(CoopError):
    """The sandbox asked for cannot run on this node (one line: what to install or enable)."""


class Isolation(str, enum.Enum):
    BUBBLEWRAP = "bubblewrap"
    NAMESPACES = "namespaces"
    PROCESS = "process"


STRONG = (Isolation.BUBBLEWRAP, Isolation.NAMESPACES)
"""The levels `auto` picks from, strongest first."""


@dataclass(frozen=True)
class Limits:
    """What one run may use. CPU seconds are for all the run's processes together; memory is
    per process; `processes` counts every task of the sandbox, threads included (not enforced
    at the `process` level); `scratch_mb` bounds /tmp (the working dir) and /dev/shm, each a
    tmpfs — RAM, not disk — at the wrapped levels, and the working dir at the `process`
    level, where a file may hold no more either."""

    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    memory_mb: int = 512
    processes: int = 64
    output_bytes: int = 64_000  # stdout and stderr together
    scratch_mb: int = C.DEFAULT_SCRATCH_MB

    @property
    def scratch_bytes(self) -> int:
        return self.scratch_mb << 20

    def rlimits(self, count_processes: bool) -> dict[str, list[int]]:
        """The launcher's setrlimit calls, by resource name."""
        mb = 1 << 20
        pairs = {
            "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + 1],  # SIGXCPU, then SIGKILL
            "RLIMIT_AS": [self.memory_mb * mb] * 2,
            "RLIMIT_FSIZE": [self.scratch_bytes] * 2,
            "RLIMIT_CORE": [0, 0],
        }
        if count_processes:
            pairs["RLIMIT_NPROC"] = [self.processes] * 2
        return pairs


DEFAULT_LIMITS = Limits()
"""Limits for a run that names none."""


@dataclass(frozen=True)
class Run:
    """How one run ended. A run never raises for what the code did: it is all here."""

    isolation: Isolation
    exit_code: int  # -N: killed by signal N
    stdout: str
    stderr: str
    timed_out: bool = False  # stopped at the wall-clock limit
    cpu_exceeded: bool = False  # stopped: its processes used up their CPU time together
    memory_exceeded: bool = False
    scratch_exceeded: bool = False  # stopped: it wrote more than its scratch space
    truncated: bool = False  # output cut at the limit (the code was then stopped)
    seconds: float = 0.0


class Sandbox(Protocol):
    @property
    def isolation(self) -> Isolation: ...

    @property
    def python(self) -> str:
        """The interpreter the code runs on."""
        ...

    def run(self, code: str, limits: Limits = DEFAULT_LIMITS) -> Run: ...


def choose(asked: str = AUTO) -> Sandbox:
    """The sandbox `asked` for ("auto" or a level's name), or SandboxUnavailable in one line:
    never a weaker level than asked, and "auto" never `process`."""
    if asked == AUTO:
        return _strongest()
    try:
        isolation = Isolation(asked)
    except ValueError:
        names = ", ".join(level.value for level in Isolation)
        raise SandboxUnavailable(f"unknown sandbox {asked!r}: auto, {names}") from None
    found = _attempt(isolation)
    if isinstance(found, str):
        raise SandboxUnavailable(f"sandbox {asked} unavailable: {found}; {FIXES[asked]}")
    return found


@dataclass(frozen=True)
class _Launch:
    """How to start one run: the command and the descriptors it inherits."""

    argv: list[str]
    fds: tuple[int, ...] = ()  # closed here once the command has started


@dataclass(frozen=True)
class View:
    """What of the host's files a sandbox with a root of its own shows: `show`, read-only at
    the same paths, and `links`; inside them, `masks` hidden. Nothing else: no socket, no
    /run, /var/tmp, /home, /sys."""

    show: tuple[str, ...]
    links: dict[str, str]
    masks: tuple[str, ...]

    def isolate(self, limits: Limits) -> dict[str, Any]:
        """The launcher's `isolate` instructions (namespaces level)."""
        return {
            "show_paths": list(self.show),
            "links": self.links,
            "masks": list(self.masks),
            "workdir": WORKDIR,
            "scratch_bytes": limits.scratch_bytes,
        }


class _Sandbox:
    """A level: what it starts (`launch`); running it, capturing and judging are shared."""

    isolation: ClassVar[Isolation]
    python: str

    def run(self, code: str, limits: Limits = DEFAULT_LIMITS) -> Run:
        started = time.monotonic()
        with (
            _code_file(code) as code_fd,
            _status_pipe() as (status_read, status_write),
            self.workdir() as cwd,
        ):
            spec = _spec(self.python, limits, status_write, code_fd, cwd)
            launch = self.launch(spec, limits)
            capture = _execute(launch, (status_write, code_fd), limits, started)
            status = _read_status(status_read)
        return capture.verdict(self.isolation, status, time.monotonic() - started)

    @contextlib.contextmanager
    def workdir(self) -> Iterator[str]:
        """The code's working dir, as the code sees it: on the sandbox's own tmpfs."""
        yield WORKDIR

    def launch(self, spec: dict[str, Any], limits: Limits) -> _Launch:
        raise NotImplementedError


@dataclass(frozen=True)
class ProcessSandbox(_Sandbox):
    """Limits, an empty environment, the filter, an unprivileged user under root and a
    scratch cwd on the node's disk, watched for size: no isolation from the host."""

    python: str = sys.executable
    isolation: ClassVar[Isolation] = Isolation.PROCESS

    @contextlib.contextmanager
    def workdir(self) -> Iterator[str]:
        with _scratch_dir(NOBODY if _root() else None) as path:
            yield str(path)

    def launch(self, spec: dict[str, Any], limits: Limits) -> _Launch:
        undumpable()  # the code shares the host's /proc, and may be of coop's own user
        spec["rlimits"] = limits.rlimits(count_processes=False)
        spec["watch"]["scratch_bytes"] = limits.scratch_bytes
        spec["confine"] = {"uid": NOBODY, "userns": False} if _root() else None
        return _Launch(_python(spec))


@dataclass(frozen=True)
class NamespacesSandbox(_Sandbox):
    """unshare makes the namespaces (a user one unless coop is root, which needs none to make
    the others); the launcher builds the root, then confines the code."""

    binary: str
    python: str = sys.executable
    isolation: ClassVar[Isolation] = Isolation.NAMESPACES

    def launch(self, spec: dict[str, Any], limits: Limits) -> _Launch:
        spec["isolate"] = _view().isolate(limits)
        spec["confine"] = {
            "uid": NOBODY if _root() else None,
            "userns": True,
            "seen_as": NOBODY if _root() else os.getuid(),  # not root of unshare's namespace
        }
        user = () if _root() else ("--user", "--map-root-user")
        return _Launch([self.binary, *user, *NAMESPACE_FLAGS, "--", *_python(spec)])


@dataclass(frozen=True)
class BubblewrapSandbox(_Sandbox):
    """bwrap makes the namespaces and the root; the launcher confines the code only when
    coop is root (bwrap then makes no user namespace)."""

    binary: str
    python: str = sys.executable
    isolation: ClassVar[Isolation] = Isolation.BUBBLEWRAP

    def launch(self, spec: dict[str, Any], limits: Limits) -> _Launch:
        view = _view()
        keep = {path: os.open(path, os.O_PATH) for path in view.show}
        spec["confine"] = {"uid": NOBODY, "userns": True} if _root() else None
        argv = [
            self.binary,
            *(BWRAP_ROOT if _root() else BWRAP_USER),
            *BWRAP_COMMON,
            *_bwrap_view(view, keep, limits),
            "--",
            *_python(spec),
        ]
        return _Launch(argv, tuple(keep.values()))


def _bwrap_view(view: View, keep: dict[str, int], limits: Limits) -> list[str]:
    """bwrap's options for the private /tmp (first, so that an interpreter installed under
    the host's /tmp is shown on top of it, not hidden by it), the view (each shown path from a
    descriptor opened here, so a path swapped meanwhile changes nothing), the private /dev and
    /dev/shm, and the root then made read-only."""
    tmpfs = ("--size", str(limits.scratch_bytes), "--perms", "1777", "--tmpfs")
    args = [*tmpfs, "/tmp", "--perms", "1777", "--dir", WORKDIR]
    for path, fd in keep.items():
        for parent in reversed(Path(path).parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind-fd", str(fd), path]
    for path, target in view.links.items():
        args += ["--symlink", target, path]
    for path in view.masks:
        if Path(path).is_dir():
            args += ["--tmpfs", path, "--remount-ro", path]
        else:
            args += ["--ro-bind", "/dev/null", path]
    return [
        *args,
        *("--dev", "/dev", *tmpfs, "/dev/shm", "--remount-ro", "/dev"),
        *("--remount-ro", "/"),
    ]


def _view() -> View:
    """The view of every sandbox with a root of its own: the system's dirs, a few files of
    /etc, the interpreter's installation; the masks of what holds secrets, where those lie
    inside what is shown (a home dir holding the virtualenv)."""
    links = {path: os.readlink(path) for path in SYSTEM if os.path.islink(path)}
    dirs = [Path(path) for path in SYSTEM if os.path.isdir(path) and path not in links]
    etc = [Path("/etc", name) for name in ETC if os.path.lexists(f"/etc/{name}")]
    shown = outermost([*dirs, *etc, *interpreter_dirs()])
    masks = [path for path in secret_paths() if within(path, shown) and path not in shown]
    return View(tuple(map(str, shown)), links, tuple(map(str, masks)))


def undumpable() -> None:
    """Make this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`), so that a program it
    starts that runs as the same user — an MCP server, code at the `process` level of a coop
    that is not root — cannot ptrace it nor open its /proc/<pid>/environ (the keys) or mem.

    Called where tools are used, since that is the process they could read: a Ray actor's
    process (Ray may reuse a worker process for several actors, so it is done when the tools
    open rather than once at start; the flag stays for the process's life, a cost only to
    debuggers and py-spy of the same user). It is never inherited across exec, so the
    programs themselves stay ordinary processes."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        log.warning("this process stays dumpable (prctl: %s)", os.strerror(error))


def _root() -> bool:
    """Whether coop runs as the host's root (uid 0 of the initial user namespace): root in a
    container's user namespace is restrained by RLIMIT_NPROC, and may have no NOBODY."""
    return os.geteuid() == 0 and Path("/proc/self/uid_map").read_text().split() == INIT_MAP


def _spec(python: str, limits: Limits, status_fd: int, code_fd: int, cwd: str) -> dict[str, Any]:
    """The launcher's instructions (coop/sandbox_init.py says what each means); a level
    adds its own isolation and confinement."""
    path = f"{Path(python).parent}:{SANDBOX_ENV['PATH']}"
    return {
        "python": python,
        "main": MAIN,
        "cwd": cwd,
        "env": {**SANDBOX_ENV, "HOME": cwd, "PATH": path},
        "rlimits": limits.rlimits(count_processes=True),
        "status_fd": status_fd,
        "code_fd": code_fd,
        "seccomp": program().hex(),
        "watch": {"cpu": limits.cpu_seconds, "wall": limits.wall_seconds, "scratch_bytes": None},
        "isolate": None,
        "confine": None,
    }


def filtered(command: list[str]) -> list[str]:
    """`command` under the sandbox's seccomp filter (and no_new_privs), run through the
    launcher's exec mode: for programs that run as themselves, such as MCP servers. Raises
    FilterUnavailable where libseccomp is missing."""
    return [
        sys.executable,
        "-I",
        "-c",
        _launcher_source(),
        "--exec",
        program().hex(),
        "--",
        *command,
    ]


def _python(spec: dict[str, Any]) -> list[str]:
    """The command that runs the launcher on `spec`."""
    return [sys.executable, "-I", "-c", _launcher_source(), json.dumps(spec)]


@functools.cache
def _launcher_source() -> str:
    return LAUNCHER.read_text(encoding="utf-8")


@contextlib.contextmanager
def _code_file(code: str) -> Iterator[int]:
    """The code in a memfd the launcher inherits and copies into the working dir: no file of
    the host's holds it, and no size limit of a command line applies."""
    fd = os.memfd_create("coop-sandbox-code")
    try:
        os.write(fd, code.encode("utf-8"))
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _scratch_dir(owner: int | None) -> Iterator[Path]:
    """A fresh private dir on the node's disk, the `process` level's working dir. Removed
    afterwards, whatever the code made of it."""
    path = Path(tempfile.mkdtemp(prefix="coop-sandbox-"))
    try:
        if owner is not None:
            os.chown(path, owner, owner)
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    """Removes a tree whose dirs the code may have made unreadable, never following links."""
    path.chmod(0o700)
    for parent, dirs, _ in os.walk(path):
        for name in dirs:
            child = Path(parent, name)
            if not child.is_symlink():
                child.chmod(0o700)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _status_pipe() -> Iterator[tuple[int, int]]:
    """The pipe the launcher reports the code's end on: (read end, write end)."""
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)


def _read_status(fd: int) -> dict[str, Any] | None:
    """What the launcher reported, or None when it did not (killed, or it failed)."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError):
        data = os.read(fd, CHUNK)
        return json.loads(data) if data else None
    return None


def _execute(
    launch: _Launch, inherited: tuple[int, ...], limits: Limits, started: float
) -> _Capture:
    """Starts a run, collects its output within the limits and leaves nothing of it running."""
    try:
        proc = subprocess.Popen(
            launch.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            cwd="/",
            start_new_session=True,
            pass_fds=(*inherited, *launch.fds),
        )
    finally:
        for fd in launch.fds:
            os.close(fd)
    with proc:
        capture = _Capture(proc, limits, started)
        try:
            capture.collect()
        finally:
            _stop(proc)
    return capture


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ends a run that is still going: asks the wrapper (at the `process` level, the
    launcher, which then stops every process of the code) to stop, then kills its process
    group — the wrapper's death ends its namespaces, and every process in them."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class _Capture:
    """A run's stdout and stderr, read together within the wall-clock limit and the output
    budget, and its end, from a pidfd."""

    proc: subprocess.Popen[bytes]
    limits: Limits
    started: float
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    timed_out: bool = False
    truncated: bool = False

    def collect(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        deadline = self.started + self.limits.wall_seconds + BACKSTOP
        pidfd = os.pidfd_open(self.proc.pid)
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ, self.out)
            selector.register(self.proc.stderr, selectors.EVENT_READ, self.err)
            selector.register(pidfd, selectors.EVENT_READ, None)
            while selector.get_map() and not self.truncated:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = pidfd in selector.get_map()
                    break
                for key, _ in selector.select(left):
                    if key.data is None:  # the wrapper ended: a little longer for its output
                        deadline = min(deadline, time.monotonic() + GRACE)
                        selector.unregister(pidfd)
                    elif not self.read(key.fd, key.data):
                        selector.unregister(key.fd)
        os.close(pidfd)

    def read(self, fd: int, buffer: bytearray) -> bool:
        """Reads what a pipe has into `buffer`, up to the budget; False at its end."""
        chunk = os.read(fd, CHUNK)
        room = self.limits.output_bytes - len(self.out) - len(self.err)
        if len(chunk) > room:
            chunk = chunk[:room] + f"\n[output cut at {self.limits.output_bytes} bytes]\n".encode()
            self.truncated = True
        buffer += chunk
        return bool(chunk)

    def verdict(self, isolation: Isolation, status: dict[str, Any] | None, seconds: float) -> Run:
        """The run as the launcher reported it, or as the wrapper ended when it could not."""
        report = status or {"status": None, "stopped": None}
        ended = report["status"]
        code = self.proc.returncode if ended is None else os.waitstatus_to_exitcode(ended)
        stopped = report["stopped"]
        stderr = self.err.decode(errors="replace")
        return Run(
            isolation,
            code,
            self.out.decode(errors="replace"),
            stderr,
            timed_out=self.timed_out or stopped == "wall",
            cpu_exceeded=stopped == "cpu" or code == -signal.SIGXCPU,
            memory_exceeded=code == 1 and MEMORY_ERROR.match(_last_line(stderr)) is not None,
            scratch_exceeded=stopped == "scratch",
            truncated=self.truncated,
            seconds=seconds,
        )


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else ""


def _strongest() -> Sandbox:
    problems = []
    for isolation in STRONG:
        found = _attempt(isolation)
        if not isinstance(found, str):
            return found
        problems.append(f"{isolation.value}: {found}")
    raise SandboxUnavailable(
        f"no sandbox works on this node ({'; '.join(problems)}): {FIXES['bubblewrap']}, or "
        "pass --sandbox process to accept rlimits-only isolation"
    )


def _attempt(isolation: Isolation) -> _Sandbox | str:
    """The sandbox of that level, or why it cannot run on this node."""
    try:
        program()
    except FilterUnavailable as exc:
        return str(exc)
    sandbox: _Sandbox = ProcessSandbox()
    if isolation is not Isolation.PROCESS:
        binary = shutil.which(BINARIES[isolation.value])
        if binary is None:
            return f"{BINARIES[isolation.value]} not found"
        wrapped = BubblewrapSandbox if isolation is Isolation.BUBBLEWRAP else NamespacesSandbox
        sandbox = wrapped(binary)
    problem = _trial(sandbox)
    return sandbox if problem is None else f"a trial run failed ({problem})"


@functools.cache
def _trial(sandbox: _Sandbox) -> str | None:
    """Why a trivial run fails in `sandbox` on this node, or None: tried once per process."""
    try:
        run = sandbox.run(PROBE)
    except OSError as exc:
        return str(exc)
    if run.exit_code == 0 and run.stdout == "ok\n":
        return None
    return _last_line(run.stderr) or f"exit code {run.exit_code}"
