"""Sandboxes for the `python` tool: code a model wrote runs in a process of its own per call,
and must not read coop's secrets, change the host's files, reach the network or take the node
down. Isolation comes in levels, strongest first:

- `bubblewrap`: the `bwrap` binary makes new namespaces, a read-only view of the host, private
  /tmp, /dev and /proc, and masks what holds secrets.
- `namespaces`: util-linux `unshare` makes the namespaces and the launcher
  (coop/sandbox_init.py) makes the same mounts itself, for nodes without bwrap.
- `process`: resource limits, an empty environment and a scratch cwd, nothing more. Only
  ever used when asked for by name.

`choose` gives the level asked for, or raises SandboxUnavailable in one line: never a weaker
level in silence. Whether a level works is found by trying it once per process, since a
binary can be installed and still fail (user namespaces disabled, an old kernel).

Every run has a fresh scratch dir (the code's cwd and HOME, removed afterwards), an
environment of SANDBOX_ENV only, and the launcher between the wrapper and the code: it sets
the limits inside the sandbox, where RLIMIT_NPROC counts this sandbox's processes alone, and
reports the code's exit status, which `bwrap` and `unshare` would blur. When coop runs as
root the code runs as NOBODY: RLIMIT_NPROC does not restrain root, and root's own files
would stay readable to it.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from dotenv import find_dotenv

from coop.errors import CoopError
from coop.journal import STATE_DIR_ENV

NOBODY = 65534
"""The unprivileged uid and gid a sandbox's code runs as when coop runs as root."""
INIT_MAP = ["0", "0", "4294967295"]
"""/proc/self/uid_map in the initial user namespace."""
WORKDIR = "/tmp/work"
"""Where the scratch dir appears inside bubblewrap and namespaces sandboxes."""
MAIN = "main.py"
"""The file in the scratch dir that holds the code."""
LAUNCHER = Path(__file__).with_name("sandbox_init.py")
"""The launcher, run as `python -I -c <its text>`: it needs no path inside the sandbox."""
TMP = Path("/tmp")
"""Private in every sandbox with mounts of its own: nothing under it needs masking."""
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
)
"""bwrap run by root, which keeps root's capabilities unless told: only those the launcher
needs to become NOBODY (it then makes the user namespace)."""
BWRAP_COMMON = (
    *("--die-with-parent", "--new-session", "--clearenv"),
    *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
)
"""What every bwrap sandbox has: the host read-only, a fresh /proc, a minimal /dev."""
BINARIES = {"bubblewrap": "bwrap", "namespaces": "unshare"}
"""The binary each wrapped level needs."""
FIXES = {
    "bubblewrap": "install bubblewrap (apt-get install bubblewrap) and enable unprivileged "
    "user namespaces",
    "namespaces": "it needs util-linux unshare, unprivileged user namespaces and Linux >= 5.12",
    "process": "the interpreter cannot start a process",
}
"""What makes each level work."""
GRACE = 0.5
"""Seconds output is still read once the code has ended (background processes of a
`process` sandbox may hold its pipes open)."""
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
    """What one run may use. CPU, memory and file size are per process; `processes` counts
    every task of the sandbox, threads included (not enforced at the `process` level)."""

    cpu_seconds: int = 10
    wall_seconds: float = 30.0
    memory_mb: int = 512  # also the size of each private tmpfs (/tmp, /dev/shm)
    processes: int = 64
    output_bytes: int = 64_000  # stdout and stderr together
    file_mb: int = 64

    def rlimits(self, count_processes: bool) -> dict[str, list[int]]:
        """The launcher's setrlimit calls, by resource name."""
        mb = 1 << 20
        pairs = {
            "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + 1],  # SIGXCPU, then SIGKILL
            "RLIMIT_AS": [self.memory_mb * mb] * 2,
            "RLIMIT_FSIZE": [self.file_mb * mb] * 2,
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
    cpu_exceeded: bool = False
    memory_exceeded: bool = False
    truncated: bool = False  # output cut at the limit (the code was then stopped)
    seconds: float = 0.0


class Sandbox(Protocol):
    @property
    def isolation(self) -> Isolation: ...

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


class _Sandbox:
    """A level: what it starts (`launch`); running it, capturing and judging are shared."""

    isolation: ClassVar[Isolation]

    def run(self, code: str, limits: Limits = DEFAULT_LIMITS) -> Run:
        started = time.monotonic()
        owner = NOBODY if _root() and self.isolation is not Isolation.PROCESS else None
        with _scratch_dir(code, owner) as scratch, _status_pipe() as (status_read, status_write):
            launch = self.launch(scratch, limits, status_write)
            capture = _execute(launch, status_write, limits, started)
            status = _read_status(status_read)
        return capture.verdict(self.isolation, status, time.monotonic() - started)

    def launch(self, scratch: Path, limits: Limits, status_fd: int) -> _Launch:
        raise NotImplementedError


@dataclass(frozen=True)
class ProcessSandbox(_Sandbox):
    """Limits, an empty environment and a scratch cwd: no isolation from the host."""

    isolation: ClassVar[Isolation] = Isolation.PROCESS

    def launch(self, scratch: Path, limits: Limits, status_fd: int) -> _Launch:
        return _Launch(_python(_spec(limits, status_fd, str(scratch), count_processes=False)))


@dataclass(frozen=True)
class NamespacesSandbox(_Sandbox):
    """unshare makes the namespaces (a user one unless coop is root, which needs none to make
    the others); the launcher makes the mounts, then confines the code."""

    binary: str
    isolation: ClassVar[Isolation] = Isolation.NAMESPACES

    def launch(self, scratch: Path, limits: Limits, status_fd: int) -> _Launch:
        hidden = _masks()
        isolate = {
            "scratch": str(scratch),
            "workdir": WORKDIR,
            "masks": [str(path) for path in hidden],
            "keep": [str(path) for path in _shown(hidden)],
            "tmp_bytes": limits.memory_mb << 20,
        }
        confine = {"uid": NOBODY if _root() else None}
        spec = _spec(limits, status_fd, WORKDIR, isolate=isolate, confine=confine)
        user = () if _root() else ("--user", "--map-root-user")
        return _Launch([self.binary, *user, *NAMESPACE_FLAGS, "--", *_python(spec)])


@dataclass(frozen=True)
class BubblewrapSandbox(_Sandbox):
    """bwrap makes the namespaces and the mounts; the launcher confines the code only when
    coop is root (bwrap then makes no user namespace)."""

    binary: str
    isolation: ClassVar[Isolation] = Isolation.BUBBLEWRAP

    def launch(self, scratch: Path, limits: Limits, status_fd: int) -> _Launch:
        hidden = _masks()
        work = os.open(scratch, os.O_PATH)
        keep = {path: os.open(path, os.O_PATH) for path in _shown(hidden)}
        tmpfs = ("--size", str(limits.memory_mb << 20), "--perms", "1777", "--tmpfs")
        confine = {"uid": NOBODY} if _root() else None
        argv = [
            self.binary,
            *(BWRAP_ROOT if _root() else BWRAP_USER),
            *BWRAP_COMMON,
            *(*tmpfs, "/tmp", *tmpfs, "/dev/shm"),
            *_bwrap_masks(hidden, keep),
            *("--bind-fd", str(work), WORKDIR, "--"),
            *_python(_spec(limits, status_fd, WORKDIR, confine=confine)),
        ]
        return _Launch(argv, (work, *keep.values()))


def _bwrap_masks(hidden: list[Path], keep: dict[Path, int]) -> list[str]:
    """bwrap's options for the masks, the interpreter's dirs shown again inside them (the
    dirs leading there searchable by all) and the masks then made read-only."""
    args: list[str] = []
    for path in hidden:
        args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    for path, fd in keep.items():
        for parent in _leading(path, [*hidden, TMP]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind-fd", str(fd), str(path)]
    for path in filter(Path.is_dir, hidden):
        args += ["--remount-ro", str(path)]
    return args


def _root() -> bool:
    """Whether coop runs as the host's root (uid 0 of the initial user namespace): root in a
    container's user namespace is restrained by RLIMIT_NPROC, and may have no NOBODY."""
    return os.geteuid() == 0 and Path("/proc/self/uid_map").read_text().split() == INIT_MAP


def _masks() -> list[Path]:
    """What a sandbox with mounts of its own hides: the home dir (keys, ~/.ray, ~/.coop), the
    state dir, /run (docker's and dbus's sockets…), the .env coop would read, and any dir on
    the way to the interpreter that others may not search (/root: NOBODY reaches a Python
    installed there once it is shown again). Those that exist, outermost only, none under
    the private /tmp."""
    home = Path.home()
    state = Path(os.environ.get(STATE_DIR_ENV) or home / ".coop").expanduser()
    dotenv = find_dotenv(usecwd=True)
    wanted = [home, home / ".ray", state, Path("/run"), *([Path(dotenv)] if dotenv else [])]
    found = _outermost([*(path.resolve() for path in wanted if path.exists()), *_closed()])
    return [path for path in found if path != Path("/") and not _within(path, [TMP])]


def _prefixes() -> list[Path]:
    """The interpreter's installation dirs (a virtualenv's and its base's)."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return _outermost(Path(path).resolve() for path in dirs)


def _closed() -> Iterator[Path]:
    """The outermost dir on the way to each of the interpreter's that others may not search."""
    for prefix in _prefixes():
        yield from [parent for parent in prefix.parents if not parent.stat().st_mode & 0o001][-1:]


def _shown(hidden: list[Path]) -> list[Path]:
    """The interpreter's dirs that `hidden` or the private /tmp would hide: shown again,
    read-only."""
    return [path for path in _prefixes() if _within(path, [*hidden, TMP])]


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """`paths` less those inside another of them."""
    kept: list[Path] = []
    for path in sorted(set(paths)):
        if not _within(path, kept):
            kept.append(path)
    return kept


def _within(path: Path, parents: Iterable[Path]) -> bool:
    return any(path.is_relative_to(parent) for parent in parents)


def _leading(path: Path, parents: list[Path]) -> list[Path]:
    """The dirs between the first of `parents` that holds `path` and `path`, outermost first."""
    top = next(parent for parent in parents if path.is_relative_to(parent))
    return [parent for parent in reversed(path.parents) if parent != top and _within(parent, [top])]


def _spec(
    limits: Limits,
    status_fd: int,
    cwd: str,
    count_processes: bool = True,
    isolate: dict[str, Any] | None = None,
    confine: dict[str, Any] | None = None,
) -> str:
    """The launcher's instructions (coop/sandbox_init.py says what each means)."""
    path = f"{Path(sys.executable).parent}:{SANDBOX_ENV['PATH']}"
    return json.dumps(
        {
            "python": sys.executable,
            "main": MAIN,
            "cwd": cwd,
            "env": {**SANDBOX_ENV, "HOME": cwd, "PATH": path},
            "rlimits": limits.rlimits(count_processes),
            "status_fd": status_fd,
            "isolate": isolate,
            "confine": confine,
        }
    )


def _python(spec: str) -> list[str]:
    """The command that runs the launcher on `spec`."""
    return [sys.executable, "-I", "-c", _launcher_source(), spec]


@functools.cache
def _launcher_source() -> str:
    return LAUNCHER.read_text(encoding="utf-8")


@contextlib.contextmanager
def _scratch_dir(code: str, owner: int | None) -> Iterator[Path]:
    """A fresh private dir holding the code: the only place of the host's a sandbox may
    write. Removed afterwards, whatever the code made of it."""
    path = Path(tempfile.mkdtemp(prefix="coop-sandbox-"))
    try:
        (path / MAIN).write_text(code, encoding="utf-8")
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


def _execute(launch: _Launch, status_fd: int, limits: Limits, started: float) -> _Capture:
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
            pass_fds=(status_fd, *launch.fds),
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
    """Kills the run's process group: the wrapper's death ends its namespaces."""
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
        deadline = self.started + self.limits.wall_seconds
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
        code = os.waitstatus_to_exitcode(status["status"]) if status else self.proc.returncode
        cpu = status["cpu"] if status else 0.0
        stderr = self.err.decode(errors="replace")
        return Run(
            isolation,
            code,
            self.out.decode(errors="replace"),
            stderr,
            timed_out=self.timed_out,
            cpu_exceeded=code == -signal.SIGXCPU or cpu >= self.limits.cpu_seconds,
            memory_exceeded=code == 1 and MEMORY_ERROR.match(_last_line(stderr)) is not None,
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
