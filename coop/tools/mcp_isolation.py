"""How an MCP stdio server is kept away from the worker that starts it: the worker's memory and
environment (the model's and the memory store's API keys) and coop's files.

A server is someone else's program, and many run whatever the model asks (a shell, a browser,
a Python session), so a prompt-injected page is enough to steer one. Its own environment is
filtered (coop/tools/mcp.py), but a process of the worker's user may still read
`/proc/<worker>/environ` and `/proc/<worker>/mem`, and a process of root reads everything. So:

- the process that opens servers is made non-dumpable (`undumpable`): a process of the same
  user can then neither ptrace it nor open its /proc files, only one with CAP_SYS_PTRACE —
  which a server started by root has, hence the levels below;
- each server runs at a level (`Isolation`), chosen in its `mcpServers` entry (`"isolation"`)
  or, by default, the strongest that works on the node (`default`), tried once per process.

The levels wrap the server's command (a bwrap or setpriv argv before it) and keep the SDK's
`stdio_client`: the server still talks over its stdin and stdout, its stderr still reaches the
worker's tail, and the SDK's kill of the process group still ends it.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from coop.sandbox import NOBODY, filtered
from coop.sandbox_filter import FilterUnavailable
from coop.secret_paths import interpreter_dirs, outermost, secret_paths, within
from coop.text import one_line

if TYPE_CHECKING:  # the SDK's import is most of a second: only a worker with servers pays it
    from mcp import StdioServerParameters

log = logging.getLogger(__name__)


class Isolation(str, enum.Enum):
    """What a stdio server is kept from, strongest first (the README says what each reaches).

    `sandbox`: bubblewrap — its own pid, ipc and uts namespaces (no process of the host in
    sight), the host's files read-only with the home dir, coop's state dir, the `.env`, /run
    and /var/tmp masked, a private /tmp that is its HOME, the node's network; as NOBODY
    without capabilities when coop is root. `user`: util-linux setpriv — NOBODY without
    capabilities or the means to regain them, a private HOME it may write, the host's files
    and network as NOBODY may use them (coop must be root). `none`: coop's own user, as the
    SDK starts it; only the non-dumpable worker stands between it and the keys, and under
    root not even that."""

    SANDBOX = "sandbox"
    USER = "user"
    NONE = "none"


SETPRIV = (
    *(f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
    *("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--pdeathsig=SIGKILL"),
)
"""setpriv's options: NOBODY with no groups, no capability it could inherit or regain (nor a
setuid binary to regain them by), killed when the worker's thread that started it ends."""
BWRAP_ROOT = (
    *("--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"),
    *("--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"),
    *("--cap-add", "CAP_SETPCAP"),
)
"""bwrap run by root: no user namespace (it would map NOBODY onto root outside), and only the
capabilities setpriv needs to become NOBODY and drop the rest."""
BWRAP_USER = ("--unshare-all", "--share-net", "--unshare-user", "--disable-userns")
"""bwrap run by a user: every namespace but the network's, the user one its own and the last."""
BWRAP_VIEW = (
    *("--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
    *("--chdir", "/tmp"),
)
"""What every sandboxed server has: the host read-only, a minimal /dev, the /proc of its own
pid namespace, /tmp as its working dir; it dies with the worker."""
SCRATCH = (Path("/tmp"), Path("/var/tmp"))
"""Private, writable and empty in the sandbox: the host's (Ray's session dir and sockets, other
programs' files and sockets) are out of sight."""
SCRATCH_BYTES = 1 << 30
"""The size of each private scratch tmpfs: room for an npx or uvx download, held in memory."""
SANDBOX_HOME = "/tmp"
"""A sandboxed server's HOME (npm's and uv's caches go there)."""
RESOLV_CONF = Path("/etc/resolv.conf")
"""Shown again in the sandbox when it points into a mask (systemd-resolved's lives in /run)."""
TRIAL = "true"
"""The command a level is tried with, once per process."""
TRIAL_TIMEOUT = 30.0
"""Seconds a level's trial may take."""
INSTALL = {"bwrap": "apt-get install bubblewrap", "setpriv": "util-linux"}
"""Where each binary comes from, for the line that says it is missing."""


def _root() -> bool:
    """Whether coop may run a server as another user (and must, to take root's powers away)."""
    return os.geteuid() == 0


@functools.cache
def unavailable(isolation: Isolation) -> str | None:
    """Why `isolation` cannot run a server on this node, or None; tried once per process with
    a trivial command, since a binary can be installed and still fail (user namespaces off)."""
    if isolation is Isolation.NONE:
        return None
    if isolation is Isolation.USER and not _root():
        return "coop does not run as root, so it cannot run a server as another user"
    needed = ["bwrap"] if isolation is Isolation.SANDBOX else []
    if _root():  # setpriv makes a server of root NOBODY, at either level
        needed.append("setpriv")
    for name in needed:
        if shutil.which(name) is None:
            return f"{name} not found ({INSTALL[name]})"
    try:
        command, args = _wrapped(isolation, TRIAL, [])
        run = subprocess.run(
            [command, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TRIAL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired, FilterUnavailable) as exc:
        return one_line(str(exc), 200)
    lines = run.stderr.decode(errors="replace").strip().splitlines()
    return (
        None if run.returncode == 0 else one_line(lines[-1] if lines else f"exit {run.returncode}")
    )


@functools.cache
def default_isolation() -> Isolation:
    """The strongest level that works here, said once in the log: `sandbox`, else `user`,
    else `none`."""
    why: list[str] = []
    for isolation in (Isolation.SANDBOX, Isolation.USER):
        found = unavailable(isolation)
        if found is None:
            log.info(
                'MCP stdio servers run in isolation "%s" unless their entry sets "isolation"',
                isolation.value,
            )
            return isolation
        why.append(f"{isolation.value}: {found}")
    bound = (
        "as root they can read everything"
        if _root()
        else "only this worker's memory and environment are out of their reach"
    )
    log.warning("MCP stdio servers run unisolated, as coop's user (%s): %s", "; ".join(why), bound)
    return Isolation.NONE


@contextlib.contextmanager
def isolated(
    isolation: Isolation, params: StdioServerParameters
) -> Iterator[StdioServerParameters]:
    """`params` wrapped for `isolation`, for the server's whole life: a private HOME (and its
    working dir) is made for it, and removed once it has ended."""
    with _home(isolation) as home:
        if isolation is Isolation.NONE:
            yield params
            return
        env = {**(params.env or {}), "HOME": home or SANDBOX_HOME}
        if isolation is Isolation.SANDBOX:  # `python` is coop's (shown again), not a hidden shim
            env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', os.defpath)}"
        if shutil.which(params.command, path=env.get("PATH")) is None:  # as the SDK would say
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), params.command)
        command, args = _wrapped(isolation, params.command, params.args)
        yield params.model_copy(update={"command": command, "args": args, "env": env, "cwd": home})


@contextlib.contextmanager
def _home(isolation: Isolation) -> Iterator[str | None]:
    """A `user` server's HOME on the host: a fresh dir only NOBODY may use, removed afterwards
    (the other levels need none: a sandbox's lives in its private /tmp)."""
    if isolation is not Isolation.USER:
        yield None
        return
    home = tempfile.mkdtemp(prefix="coop-mcp-")
    try:
        os.chown(home, NOBODY, NOBODY)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _wrapped(isolation: Isolation, command: str, args: list[str]) -> tuple[str, list[str]]:
    """The command and arguments that run `command` at `isolation`: at `user` and `sandbox`
    under the seccomp filter of the `python` tool's sandbox (installed by coop's launcher,
    still as root where setpriv then drops to NOBODY), so that a server can make no namespace
    (a user namespace would give it every capability inside), mount, or reach the keyring,
    bpf, io_uring or another process's memory."""
    setpriv = [_binary("setpriv"), *SETPRIV, "--"] if _root() else []
    if isolation is Isolation.USER:
        shim = filtered([*setpriv, command, *args])
        return shim[0], shim[1:]
    if isolation is Isolation.SANDBOX:
        view = [*(BWRAP_ROOT if _root() else BWRAP_USER), *BWRAP_VIEW, *_masks_args()]
        return _binary("bwrap"), [*view, "--", *filtered([*setpriv, command, *args])]
    return command, args


def _binary(name: str) -> str:
    return shutil.which(name) or name


def _masks_args() -> list[str]:
    """bwrap's options for the private scratch dirs, the masks, what is shown again inside them
    (with the dirs leading there searchable by all) and the masks then made read-only."""
    hidden = _masks()
    tops = [*hidden, *SCRATCH]
    args: list[str] = []
    for path in SCRATCH:
        args += ["--size", str(SCRATCH_BYTES), "--perms", "1777", "--tmpfs", str(path)]
    for path in hidden:
        args += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    for path in _shown(tops):
        top = next(top for top in tops if path.is_relative_to(top))
        for parent in reversed(path.parents):
            if parent != top and parent.is_relative_to(top):
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(path), str(path)]
    for path in filter(Path.is_dir, hidden):
        args += ["--remount-ro", str(path)]
    return args


def _masks() -> list[Path]:
    """What a sandboxed server must not read (coop/secret_paths.py), and the outermost dir on
    the way to the interpreter that others may not search (so that NOBODY reaches the
    interpreter shown again). Those that exist, outermost only, none under a private scratch
    dir."""
    closed = [_closed(prefix) for prefix in interpreter_dirs()]
    found = outermost([*secret_paths(), *filter(None, closed)])
    return [path for path in found if path != Path("/") and not within(path, SCRATCH)]


def _closed(path: Path) -> Path | None:
    """The outermost dir on the way to `path` that others may not search, if any."""
    return next(
        (parent for parent in reversed(path.parents) if not parent.stat().st_mode & 0o001), None
    )


def _shown(tops: list[Path]) -> list[Path]:
    """What is shown again, read-only, where a mask or a scratch dir hides it: the interpreter
    (servers run by coop's Python, and the filter's launcher) and the resolver's
    configuration."""
    wanted = [*interpreter_dirs(), RESOLV_CONF.resolve()]
    return [path for path in wanted if path.exists() and within(path, tops)]
