"""Hosts on a private test network, whose links a test can cut: Linux network namespaces.

    with netns.network("head", "node") as net:        # 10.203.0.1, 10.203.0.2
        net.spawn("head", ["ray", "start", ...], env=env, log=path)
        net.cut("node")                                 # the node hears nothing, and is not heard
        net.heal("node")
    # every process started in them is gone, and so are the namespaces and links

Layout: a star around one bridge. Each host is a network namespace with loopback up and one
veth `eth0` at 10.203.0.<n>/24; the other end of each veth is a port of a bridge that lives in
a namespace of its own, the switch. Why a bridge rather than veth pairs: any host reaches any
other at one address (head, worker node and planner all talk to each other, as on a LAN), and
cutting one host's port isolates that host while the others stay connected, which is what a
failed cable, NIC or switch port does; pairs would need a link and an address pair per two
hosts, and routing. Why the switch in a namespace of its own: nothing is added to the
machine's own namespace (no interface, address or route a process there could see or use), and
the machine's firewall and bridge-netfilter settings never see the test traffic. No host has a
default route, and nothing routes between the subnet and anything else: traffic can only go to
loopback and to the other hosts. Inside a namespace DNS does not answer: use IP addresses.

Each host also gets a PID namespace (with its own /proc) and a host name of its own (a UTS
namespace: `coop` names its instances and workers after it), whose first process only reaps
orphans. Ray's drivers find "their" raylet by scanning the machine's processes: without this,
a `coop` process in one namespace would attach to the raylet of another (the head's, which Ray
prefers) through its Unix socket, a path the cut does not touch. With it, each host sees only
its own processes, as separate machines do. It also makes teardown certain: when the first
process of a PID namespace dies, the kernel kills every process left in it.

`cut` sets the host's switch port down: like a pulled cable, the host keeps its address and
routes, and what it sends or is sent vanishes without an error (TCP retransmits; once the
neighbours' ARP entries expire, new packets fail with "no route to host"). `heal` sets it up.

Needs root, `ip` (iproute2), `unshare` and `nsenter` (util-linux), and a kernel that lets us
make namespaces: `unavailable()` says why not, for `pytest.skip`. Namespaces are named
`coopnet<pid>-<host>` after the process that made them; `sweep()` removes those of processes
that are gone (a test run killed outright), `leftovers()` lists what remains.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SUBNET = "10.203.0"
"""The test subnet, a /24: host n (from 1) is SUBNET.n."""
PREFIX = "coopnet"
"""Every namespace this module makes is named `<PREFIX><owner pid>-<name>`."""
SWITCH = "switch"
BRIDGE = "br0"
NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
REAPER = (
    "import os, socket, sys, time\n"
    "socket.sethostname(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(0.5)\n"
)
"""The first process of each host's PID namespace: names the host (its own UTS namespace), then
reaps the orphans Ray leaves (the raylet and GCS after `ray start` exits), so that no zombie
piles up."""
UNSHARE = ("unshare", "--pid", "--uts", "--fork", "--mount-proc", "--kill-child")
"""A host's namespaces besides the network's: PID (with its /proc, so a mount one too) and UTS;
when `unshare` dies (killed in teardown), its child, the PID namespace's first process, dies."""
NSENTER = ("--net", "--pid", "--mount", "--uts")


class NetnsError(RuntimeError):
    """A namespace, link or process could not be made or removed."""


@dataclass
class Host:
    name: str  # "head", "node", ...
    netns: str  # the network namespace, `coopnet<pid>-<name>`
    ip: str  # its address on the test subnet
    port: str  # its port on the switch's bridge (in the switch namespace)
    init: subprocess.Popen[bytes] | None = None  # `unshare`, parent of the PID namespace
    pid: int = 0  # the PID namespace's first process, as this process sees it


class Network:
    """Hosts on one bridge; made by `network()`, which also tears it down."""

    def __init__(self, names: Sequence[str], subnet: str = SUBNET) -> None:
        if len(set(names)) != len(names) or not all(NAME.match(n) for n in names):
            raise ValueError(f"host names must be distinct, short and lowercase: {names}")
        if len(names) > 250:
            raise ValueError("at most 250 hosts on a /24")
        self.owner = os.getpid()
        self.switch = f"{PREFIX}{self.owner}-{SWITCH}"
        self.hosts = {
            name: Host(name, f"{PREFIX}{self.owner}-{name}", f"{subnet}.{i}", f"p{i}")
            for i, name in enumerate(names, 1)
        }
        self._procs: list[subprocess.Popen[Any]] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # -- building ---------------------------------------------------------------------------

    def build(self) -> None:
        """The switch, then each host: its namespace, its veth on the bridge, its PID
        namespace. On failure, whatever was made stays for `close()` to remove."""
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.netns)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip(
                *f"link add eth0 netns {host.netns} type veth".split(),
                *f"peer name {host.port} netns {self.switch}".split(),
            )
            _ip("-n", self.switch, "link", "set", host.port, "master", BRIDGE, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            self._start_init(host)

    def _start_init(self, host: Host) -> None:
        host.init = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                *UNSHARE,
                sys.executable,
                "-S",
                "-c",
                REAPER,
                host.name,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for pytest is not theirs
        )
        assert host.init.stdout is not None and host.init.stderr is not None
        said = host.init.stdout.readline()  # once named; EOF if it failed
        host.init.stdout.close()
        children = _children(host.init.pid)
        if said.strip() != b"ready" or not children:
            host.init.kill()
            err = host.init.stderr.read().decode(errors="replace").strip()
            raise NetnsError(f"cannot start a PID namespace in {host.netns}: {err}")
        host.pid = children[0]

    # -- running things in a host --------------------------------------------------------------

    def command(self, host: str, argv: Sequence[str], cwd: Path | str | None = None) -> list[str]:
        """`argv` as run inside `host`: its network, PID and mount namespaces."""
        h = self.hosts[host]
        where = os.fspath(cwd) if cwd is not None else os.getcwd()
        return [
            "nsenter",
            f"--target={h.pid}",
            *NSENTER,
            f"--wd={where}",
            "--",
            *map(os.fspath, argv),
        ]

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path | None = None,
        cwd: Path | str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in `host` with exactly `env`, its output (both streams) to `log`."""
        out: IO[bytes] | int = log.open("wb") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                self.command(host, argv, cwd),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own copy
        self._procs.append(proc)
        return proc

    def run(
        self,
        host: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float = 60,
        cwd: Path | str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in `host` to its end; its output captured as text."""
        return subprocess.run(
            self.command(host, argv, cwd),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def pids(self, host: str) -> list[int]:
        """Every process in `host`'s network namespace (as this process numbers them)."""
        return _netns_pids(self.hosts[host].netns)

    # -- the links ---------------------------------------------------------------------------

    def cut(self, host: str) -> None:
        """Disconnect `host` from every other host: its switch port goes down."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "down")

    def heal(self, host: str, timeout: float = 5.0) -> None:
        """Reconnect `host`: its switch port comes up again; returns once the host sees the
        carrier."""
        _ip("-n", self.switch, "link", "set", self.hosts[host].port, "up")
        deadline = time.monotonic() + timeout
        while not self.linked(host):
            if time.monotonic() > deadline:
                raise NetnsError(f"{host}: no carrier {timeout:g}s after its port came up")
            time.sleep(0.02)

    def linked(self, host: str) -> bool:
        """Whether `host`'s link carries traffic (its eth0 sees a carrier)."""
        out = _ip("-n", self.hosts[host].netns, "-o", "link", "show", "eth0")
        return "LOWER_UP" in out.split(">", 1)[0]

    # -- teardown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the hosts, then delete the namespaces (and with them the
        veths and the bridge). Safe to call on a half-built network, and twice. Raises
        NetnsError if anything survives, after trying everything."""
        for host in self.hosts.values():
            if host.init is not None and host.init.poll() is None:
                with suppress(ProcessLookupError):
                    os.kill(host.init.pid, signal.SIGKILL)  # --kill-child: its init dies too
            if host.pid:
                with suppress(ProcessLookupError):
                    os.kill(host.pid, signal.SIGKILL)  # and with it the whole PID namespace
        problems = [p for name in self._names() if (p := remove_namespace(name))]
        for proc in self._procs:  # our own children: reap them
            with suppress(ProcessLookupError):
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for host in self.hosts.values():
            if host.init is not None:
                with suppress(subprocess.TimeoutExpired):
                    host.init.wait(5)
                if host.init.stderr is not None:
                    host.init.stderr.close()
        if problems:
            raise NetnsError("; ".join(problems))

    def _names(self) -> list[str]:
        return [*(h.netns for h in self.hosts.values()), self.switch]


@contextmanager
def network(*names: str, subnet: str = SUBNET) -> Iterator[Network]:
    """Hosts `names` on one bridge (10.203.0.1, .2, ... in order), torn down on exit however
    the block ends. Namespaces left by earlier runs that were killed are removed first."""
    sweep()
    net = Network(names, subnet)
    try:
        net.build()
        yield net
    finally:
        net.close()


# --- whether it can run here, and what is left -------------------------------------------


@functools.cache
def unavailable() -> str | None:
    """Why partition tests cannot run here (None: they can): not Linux, not root, a command
    missing, or the kernel refusing namespaces, veths, bridges or PID namespaces. Tried for real,
    once per process, with a throwaway network of two hosts."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"no `{tool}` command ({package})"
    try:
        with network("a", "b") as net:
            ping = net.run("a", [sys.executable, "-S", "-c", _PROBE % net["b"].ip], env={})
            if ping.returncode != 0:
                return f"hosts on a test bridge cannot reach each other: {ping.stderr.strip()}"
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network namespaces here: {str(exc).strip()[:300]}"
    return None


_PROBE = """
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("%s", 9))
except ConnectionRefusedError:
    pass  # it answered: the bridge works
"""
"""A TCP connect to a closed port of the other host: refused means the packets got there."""


def leftovers(owner: int | None = None) -> list[str]:
    """Namespaces made by this module (by `owner`, a pid, if given) that still exist."""
    names = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    mine = f"{PREFIX}{owner}-" if owner is not None else PREFIX
    return sorted(n for n in names if n.startswith(mine))


def sweep() -> list[str]:
    """Remove the namespaces of runs whose process is gone (killed before its teardown):
    their processes are killed, the namespaces deleted. Returns what was removed."""
    removed = []
    for name in leftovers():
        owner = re.match(rf"{PREFIX}(\d+)-", name)
        if owner and not _alive(int(owner.group(1))):
            remove_namespace(name)
            removed.append(name)
    return removed


def remove_namespace(name: str, timeout: float = 10.0) -> str:
    """Kill every process in network namespace `name`, then delete it. Returns "" when it is
    gone, else what is wrong."""
    if name not in leftovers():
        return ""
    deadline = time.monotonic() + timeout
    while pids := _netns_pids(name):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return f"{name}: processes {pids} survived SIGKILL"
        time.sleep(0.05)
    try:
        _ip("netns", "delete", name)
    except NetnsError as exc:
        return str(exc)
    return ""


# --- plumbing ------------------------------------------------------------------------------


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _netns_pids(name: str) -> list[int]:
    """Live processes in network namespace `name` (zombies hold none)."""
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split() if p.isdigit() and _alive(int(p))]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
