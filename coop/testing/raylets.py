"""A local multi-node Ray cluster on one machine: a head plus N worker raylets on 127.0.0.1.

Why: multi-node behaviour (work pinned to another node, Ray Jobs, `coop join` on a second
raylet) can be shown and tested without a second machine. Every node is started by
`ray start` as on a real cluster, each with its own ports and Ray temp dir, the dashboard on
127.0.0.1 and Ray's token authentication on, with a token kept in the cluster's own dir
(never `~/.ray`). Each worker node carries a resource naming it (`{"coop-node-1": 1}`), so
work can be pinned to it.

    python -m scripts.local_cluster up --workers 2    # prints address, dashboard, nodes
    eval "$(python -m scripts.local_cluster env)"      # RAY_ADDRESS, token path, ...
    python -m scripts.local_cluster down              # stops this cluster, and only it

Everything lives in one dir (default `<tmp>/coop-local-cluster`): `cluster.json` (addresses,
ports, node ids, the client env), `auth_token` (0600), `logs/` (`ray start` output) and one
Ray temp dir per node under `ray/`, so `/tmp/ray/ray_current_cluster` is not written and
runs that auto-discover a cluster from it never find this one. Never use a bare `ray stop`
for it: that stops every Ray process on the machine. `down` finds this cluster's processes
by a marker in the environment of everything `ray start` launched (and their descendants),
plus Ray processes holding files in its Ray dir, and stops those alone.

Loopback only: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` keeps every Ray process from swapping
127.0.0.1 for the machine's external address. `ray start --address` refuses to add a node
while it is 0 (multi-node clusters are unsupported on macOS and Windows, which that variable
is meant for), so a worker node's `ray start` runs with that one check lifted in its own
process; the variable stays 0 in every process Ray starts. After starting, every node must
report 127.0.0.1 and every listening socket must be on loopback, or the cluster is stopped.
Linux only (it reads /proc), as multi-node Ray is.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only

import importlib.util
import ipaddress
import json
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
DEFAULT_ROOT = Path(tempfile.gettempdir()) / "coop-local-cluster"
STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
MARKER = "COOP_LOCAL_CLUSTER"
"""Set to the cluster's dir in the environment of every process `ray start` launches."""
RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE_BYTES = 256 * 1024**2  # per node: enough for coop, polite to /dev/shm
MAX_ROOT_CHARS = 35
"""Ray's socket paths (`<root>/ray/nN/session_<date>_<pid>/sockets/plasma_store`) must fit
the 107 bytes of a Unix socket address."""
NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "metrics-export-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
)
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")
CLIENT_CONFLICTS = ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE")
"""Variables a caller may have set for another cluster: they would override this one's."""


class ClusterError(RuntimeError):
    """The cluster did not come up as promised (and was stopped), or did not go away."""


@dataclass(frozen=True)
class Node:
    name: str  # "head", "coop-node-1", ...
    node_id: str
    raylet_port: int
    resource: str | None  # the custom resource that pins work to it (workers only)
    temp_dir: str
    ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LocalCluster:
    root: Path
    address: str  # GCS address, for ray.init / coop --address / RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:<port>, for `ray job` and the Jobs API
    token_path: Path
    nodes: tuple[Node, ...]
    pids: tuple[int, ...] = ()  # the cluster's processes right after start (more come later)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[Node, ...]:
        return self.nodes[1:]

    def env(self) -> dict[str, str]:
        """What a client (coop, `ray job`, a driver) needs to reach this cluster."""
        return {
            "RAY_ADDRESS": self.address,
            "RAY_API_SERVER_ADDRESS": self.dashboard,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
        }

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full environment for a client subprocess: `base` (default os.environ) without
        settings for another cluster, plus `env()`."""
        base = os.environ if base is None else base
        return {
            **{k: v for k, v in base.items() if k not in CLIENT_CONFLICTS and k != MARKER},
            **self.env(),
        }

    def token(self) -> str:
        return self.token_path.read_text().strip()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(root=str(self.root), token_path=str(self.token_path), env=self.env())
        return data

    @classmethod
    def load(cls, root: Path = DEFAULT_ROOT) -> LocalCluster:
        data = json.loads((Path(root) / STATE_FILE).read_text())
        return cls(
            root=Path(data["root"]),
            address=data["address"],
            dashboard=data["dashboard"],
            token_path=Path(data["token_path"]),
            nodes=tuple(Node(**node) for node in data["nodes"]),
            pids=tuple(data["pids"]),
        )


# --- starting --------------------------------------------------------------------------


def up(workers: int = 1, root: Path = DEFAULT_ROOT, cpus: int = 2) -> LocalCluster:
    """Start a head and `workers` worker nodes; return once all are alive on loopback."""
    root = Path(root).resolve()
    if workers < 0 or cpus < 1:
        raise ClusterError(f"need workers >= 0 and cpus >= 1, not {workers} and {cpus}")
    if len(str(root)) > MAX_ROOT_CHARS:
        raise ClusterError(f"{root}: too long for Ray's socket paths (max {MAX_ROOT_CHARS} chars)")
    if running := processes(root):
        raise ClusterError(f"a cluster already runs in {root} (pids {running}): `down` first")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # logs and the token inside
    (root / "logs").mkdir(exist_ok=True)
    token_path = _write_token(root / TOKEN_FILE)
    env = _ray_env(root, token_path)
    ports = _free_ports(len(HEAD_PORTS) + (workers + 1) * len(NODE_PORTS))
    head_ports = {name: ports.pop() for name in HEAD_PORTS}
    node_ports = [{name: ports.pop() for name in NODE_PORTS} for _ in range(workers + 1)]
    address = f"{LOOPBACK}:{head_ports['port']}"
    ray_cli = [sys.executable, str(Path(__file__).resolve()), "_ray"]

    def start(index: int) -> None:
        args = [
            "start",
            "--node-ip-address",
            LOOPBACK,
            "--temp-dir",
            str(root / "ray" / f"n{index}"),
            "--num-cpus",
            str(cpus),
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            "--disable-usage-stats",
            *_port_flags(node_ports[index]),
        ]
        if index == 0:
            args += ["--head", "--include-dashboard", "true", "--dashboard-host", LOOPBACK]
            args += _port_flags(head_ports)
            command = [str(RAY), *args] if RAY.exists() else [*ray_cli, *args]
        else:
            args += ["--address", address, "--resources", json.dumps(_resource(index))]
            command = [*ray_cli, *args]
        _run(command, env, root / "logs" / f"ray-start-n{index}.log")

    try:
        start(0)
        with ThreadPoolExecutor(max(1, workers)) as pool:  # worker nodes join side by side
            list(pool.map(start, range(1, workers + 1)))
        infos = _query_nodes(address, env, expect=workers + 1)
        cluster = _describe(root, address, head_ports, node_ports, token_path, infos)
        _check_loopback(cluster, infos)
    except BaseException:
        down(root)
        raise
    (root / STATE_FILE).write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
    return cluster


def _write_token(path: Path) -> Path:
    """A fresh token for this cluster alone, readable by its owner only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _ray_env(root: Path, token_path: Path) -> dict[str, str]:
    """The environment of every `ray start`, and so of every process of the cluster."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_CONFLICTS}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        **{MARKER: str(root)},
    )
    return env


def _free_ports(count: int) -> list[int]:
    """Distinct free ports on loopback (all held open together, so none is given twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_flags(ports: Mapping[str, int]) -> list[str]:
    return [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]


def _resource(index: int) -> dict[str, int]:
    return {f"coop-node-{index}": 1}


def _run(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        proc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=120)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise ClusterError(f"{shlex.join(command[:3])} ... failed ({log}):\n{tail}")


def _query_nodes(address: str, env: dict[str, str], expect: int) -> list[dict[str, Any]]:
    """The nodes as the GCS sees them, once `expect` are alive. Asked from a subprocess: Ray
    keeps the auth mode and token per process, and the caller may be a driver of another
    cluster."""
    script = str(Path(__file__).resolve())
    proc = subprocess.run(
        [sys.executable, script, "_nodes", address, str(expect)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ClusterError(f"nodes did not come up: {proc.stderr.strip()[-2000:]}")
    nodes: list[dict[str, Any]] = json.loads(proc.stdout)
    return nodes


def _describe(
    root: Path,
    address: str,
    head_ports: dict[str, int],
    node_ports: list[dict[str, int]],
    token_path: Path,
    infos: list[dict[str, Any]],
) -> LocalCluster:
    nodes = []
    for index, ports in enumerate(node_ports):
        marker = "node:__internal_head__" if index == 0 else f"coop-node-{index}"
        info = next(i for i in infos if marker in i["resources"])
        nodes.append(
            Node(
                name="head" if index == 0 else marker,
                node_id=info["node_id"],
                raylet_port=info["port"],
                resource=None if index == 0 else marker,
                temp_dir=str(root / "ray" / f"n{index}"),
                ports={**(head_ports if index == 0 else {}), **ports},
            )
        )
    return LocalCluster(
        root=root,
        address=address,
        dashboard=f"http://{LOOPBACK}:{head_ports['dashboard-port']}",
        token_path=token_path,
        nodes=tuple(nodes),
        pids=tuple(processes(root)),
    )


def _check_loopback(cluster: LocalCluster, infos: list[dict[str, Any]]) -> None:
    addresses = {info["ip"] for info in infos}
    if addresses != {LOOPBACK}:
        raise ClusterError(f"refusing: nodes announce {sorted(addresses)}, not only {LOOPBACK}")
    exposed = [s for s in listening(cluster.root) if not _is_loopback(s[1])]
    if exposed:
        raise ClusterError(f"refusing: sockets listen beyond loopback: {exposed}")


# --- finding and stopping its processes --------------------------------------------------


def processes(root: Path = DEFAULT_ROOT) -> list[int]:
    """Every live process of the cluster in `root`: those carrying its marker (what `ray start`
    launched), their descendants (workers, agents, job drivers), and Ray processes that hold
    a file in its Ray dir (workers whose raylet is gone). Never this process or its parents."""
    root = Path(root).resolve()
    marker = f"{MARKER}={root}".encode()
    ray_dir = f"{root / 'ray'}/"
    ray_pkg = _ray_package_dir()
    parents: dict[int, int] = {}
    found: set[int] = set()
    for pid in _pids():
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        parents[pid] = stat[1]
        marked = marker in _read(f"/proc/{pid}/environ").split(b"\0")
        if marked or (_is_ray_process(pid, ray_pkg) and _holds_file_under(pid, ray_dir)):
            found.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    family, todo = set(found), list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in family:
                family.add(child)
                todo.append(child)
    return sorted(family - _self_and_ancestors())


def down(root: Path = DEFAULT_ROOT, grace: float = 3.0) -> list[int]:
    """Stop the cluster in `root`, and nothing else, in the order `ray stop` uses: raylets,
    then everything but the GCS, then the GCS; each kind gets SIGTERM and, after `grace`
    seconds, SIGKILL (this Ray's GCS does not always exit on SIGTERM). Verifies that no
    process of it remains; returns the pids stopped."""
    root = Path(root).resolve()
    stopped: list[int] = []
    for stage in (_is_raylet, lambda pid: not _is_gcs(pid), _is_gcs):
        stopped += _terminate([pid for pid in processes(root) if stage(pid)], grace)
    for _ in range(3):  # anything started meanwhile (a worker, a job's driver)
        if not (left := processes(root)):
            break
        stopped += _terminate(left, grace)
    if left := processes(root):
        raise ClusterError(f"processes of {root} survived SIGKILL: {left}")
    (root / STATE_FILE).unlink(missing_ok=True)
    (root / TOKEN_FILE).unlink(missing_ok=True)
    return sorted(set(stopped))


def _terminate(pids: list[int], grace: float) -> list[int]:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(_alive(pid) for pid in pids):
            break
    return pids


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _is_raylet(pid: int) -> bool:
    return b"/raylet/raylet\0" in _read(f"/proc/{pid}/cmdline")


def _is_gcs(pid: int) -> bool:
    return b"/gcs/gcs_server\0" in _read(f"/proc/{pid}/cmdline")


def listening(root: Path = DEFAULT_ROOT) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the cluster's processes listen on."""
    inodes: dict[int, int] = {}
    for pid in processes(root):
        for link in _fd_links(pid):
            if link.startswith("socket:["):
                inodes[int(link[8:-1])] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(table).decode().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            host, port = fields[1].split(":")
            if int(fields[9]) in inodes:
                found.append((inodes[int(fields[9])], _proc_net_ip(host), int(port, 16)))
    return sorted(found)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/<pid>/stat; the name may contain spaces and ')'."""
    fields = _read(f"/proc/{pid}/stat").decode(errors="replace").rpartition(")")[2].split()
    return (fields[0], int(fields[1])) if len(fields) > 1 else None


def _fd_links(pid: int) -> list[str]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    links = []
    for name in names:
        with suppress(OSError):
            links.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return links


def _holds_file_under(pid: int, directory: str) -> bool:
    return any(link.startswith(directory) for link in _fd_links(pid))


def _ray_package_dir() -> str:
    spec = importlib.util.find_spec("ray")  # without importing it
    return str(Path(spec.origin).parent) if spec and spec.origin else "/ray/"


def _is_ray_process(pid: int, ray_pkg: str) -> bool:
    """A Ray worker (its title is `ray::...`), a Ray binary, or Python running Ray."""
    cmdline = _read(f"/proc/{pid}/cmdline")
    if cmdline.startswith(b"ray::") or ray_pkg.encode() in cmdline:
        return True
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


def _self_and_ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        stat = _stat(pid)
        pid = stat[1] if stat else 0
    return pids


def _proc_net_ip(hex_host: str) -> str:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_host)
    ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    return str(getattr(ip, "ipv4_mapped", None) or ip)  # ::ffff:127.0.0.1 as 127.0.0.1


def _is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


@contextmanager
def running(workers: int = 1, root: Path = DEFAULT_ROOT, cpus: int = 2) -> Iterator[LocalCluster]:
    """`up` on entry, `down` on exit."""
    cluster = up(workers, root, cpus)
    try:
        yield cluster
    finally:
        down(root)


# --- helpers run in subprocesses ----------------------------------------------------------


def _ray_cli(args: list[str]) -> None:
    """`ray <args>`, with `ray start`'s refusal to add a node while
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 lifted for this process. Only that check sees the
    change: everything else, and every process Ray starts, still reads 0 and stays on
    loopback (with 1, Ray would replace 127.0.0.1 by the machine's external address)."""
    import types

    import ray._private.ray_constants as constants
    import ray.scripts.scripts as scripts

    class Constants(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(constants, name)

    view = Constants(constants.__name__)
    view.ENABLE_RAY_CLUSTER = True  # type: ignore[attr-defined]
    scripts.ray_constants = view  # type: ignore[attr-defined]
    sys.argv = ["ray", *args]
    scripts.main()  # type: ignore[no-untyped-call]


def _print_nodes(address: str, expect: int, timeout: float = 60.0) -> None:
    """Wait until `expect` nodes are alive, then print them as JSON."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.core.generated.gcs_pb2 import GcsNodeInfo  # type: ignore[attr-defined]

    client = GcsClient(address=address)
    deadline = time.monotonic() + timeout
    while True:
        alive = [
            {
                "node_id": node_id.hex(),
                "ip": info.node_manager_address,
                "port": info.node_manager_port,
                "resources": dict(info.resources_total),
            }
            for node_id, info in client.get_all_node_info(timeout=10).items()
            if info.state == GcsNodeInfo.ALIVE
        ]
        if len(alive) >= expect or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if len(alive) != expect:
        sys.exit(f"expected {expect} alive nodes, found {len(alive)}: {alive}")
    print(json.dumps(alive))


if __name__ == "__main__":  # the helpers above, run in subprocesses of `up`
    if sys.argv[1:2] == ["_ray"]:
        _ray_cli(sys.argv[2:])
    elif sys.argv[1:2] == ["_nodes"]:
        _print_nodes(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("internal helper of coop.testing.raylets; run `python -m scripts.local_cluster`")
