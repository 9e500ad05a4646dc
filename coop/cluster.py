"""Connecting to Ray, or starting a local cluster on loopback, naming and placing coop's
actors, and the process helpers every `coop` process needs (its name, its signals)."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import ray
import ray._private.ray_constants as ray_constants
from ray._raylet import Config  # type: ignore[attr-defined]
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from coop import constants as C
from coop.errors import CoopError
from coop.journal import state_dir

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 3.0
LEAVE_GRACE = 20.0
"""Seconds a command gives Ray's shutdown as it exits (stopping a cluster it started takes a
few); past that, shutdown waits on a connection a partition broke, and the command exits
without it."""
GCS_PROBE = "/ray.rpc.NodeInfoGcsService/GetClusterId"
"""A GCS method any client may call: it answers, or refuses for want of a token."""


class ClusterError(CoopError):
    """Ray is not reachable, or refused us."""


class Unreachable(ClusterError):
    """No cluster answers at the address (or none runs here): not a mistake in the input."""


def actor_name(objective_id: str, role: str) -> str:
    """`coop:<objective-id>:<role>`: readable in the dashboard and in `ray list actors`."""
    return f"coop:{objective_id}:{role}"


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes: ray.init retries an unreachable GCS for about two."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}: expected host:port, e.g. 127.0.0.1:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise Unreachable(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def _is_loopback(address: str) -> bool:
    host = address.removeprefix("ray://").rpartition(":")[0]
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _requires_token(address: str) -> bool:
    """Whether the cluster at `address` has Ray's token authentication on (it refuses an
    unauthenticated call), asked with one small gRPC call to its GCS."""
    channel = grpc.insecure_channel(address.removeprefix("ray://"))
    try:
        channel.unary_unary(GCS_PROBE)(b"", timeout=CONNECT_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[no-any-return]
    finally:
        channel.close()
    return False


def _match_auth_mode(address: str) -> None:
    """Ray uses token auth for an explicit address only when told to, and a client in the
    wrong mode fails obscurely (a token-mode client's actors never start on a cluster without
    auth). So ask the cluster, and set the mode to match."""
    wanted = "token" if _requires_token(address) else "disabled"
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if wanted == "token" and not (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        raise ClusterError(
            f"the Ray cluster at {address} requires an authentication token: copy the head's "
            "~/.ray/auth_token to this machine, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
        )
    if os.environ.get("RAY_AUTH_MODE", "disabled") != wanted:
        _set_auth_mode(wanted)


def _set_auth_mode(mode: str) -> None:
    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray caches its config at import: make it read the mode again


ANNOUNCED = "ray-cluster"
"""The file in the state dir where a `coop start` that started a private cluster writes its
address, so that `coop status`, `events`, `join`… in another terminal find it by themselves."""


def _local_cluster_address() -> str | None:
    """The address of a cluster running on this machine, if it still answers: the one
    `ray start --head` left, else the one a `coop start` announced."""
    tmp = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    for path in (Path(tmp) / "ray" / "ray_current_cluster", state_dir() / ANNOUNCED):
        try:
            address = path.read_text().strip()
            _check_reachable(address)
        except (OSError, ClusterError):
            continue
        if address:
            return address
    return None


def _announce(address: str) -> None:
    """Say where this process's private cluster is, for as long as it lives."""
    path = state_dir() / ANNOUNCED
    try:
        path.write_text(address)
    except OSError:
        return  # other commands then need --address: the banner prints it

    def withdraw() -> None:
        with contextlib.suppress(OSError):
            if path.read_text() == address:
                path.unlink()

    atexit.register(withdraw)


@dataclass(frozen=True)
class Connection:
    address: str
    dashboard: str | None
    started_here: bool  # a cluster of our own: it ends when this process does


def connect(address: str | None, *, start_local: bool, stream_logs: bool = False) -> Connection:
    """Join the cluster at `address` (or RAY_ADDRESS, or one running on this machine); failing
    that, start a local one on loopback if allowed. `stream_logs`: print the log lines of the
    worker actors this process starts, prefixed with their names.

    A process already connected (a script that called `ray.init()`, a Ray Job's driver, a
    second command of the Python API) keeps its connection: Ray allows one per process."""
    if ray.is_initialized():
        return _current()
    address = address or os.environ.get("RAY_ADDRESS") or _local_cluster_address()
    kwargs: dict[str, Any] = {
        "namespace": C.NAMESPACE,
        "logging_level": logging.WARNING,
        "log_to_driver": stream_logs,
    }
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in log files
    if address is None or _is_loopback(address):
        # Ray otherwise announces this machine's external address; a loopback cluster must
        # stay on 127.0.0.1, in this process and in every process Ray starts from it.
        # The variable reaches the processes Ray starts; this process read it when it
        # imported ray, so its copy is set too.
        os.environ.update(C.LOOPBACK_ENV)
        ray_constants.ENABLE_RAY_CLUSTER = False
    if address is None:
        if not start_local:
            raise Unreachable(
                "no running Ray cluster found here: pass --address <head-ip>:6379 or set "
                "RAY_ADDRESS (on the head, `ray start --head` prints the address)"
            )
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1")
        if "RAY_AUTH_MODE" not in os.environ:
            _set_auth_mode("token")  # Ray's default for a new local cluster, minus its warning
    else:
        _check_reachable(address)
        _match_auth_mode(address)
    try:
        ctx = ray.init(address=address, **kwargs)
    except ray.exceptions.AuthenticationError:
        raise ClusterError(
            "Ray refused coop's authentication token: copy the head's ~/.ray/auth_token to this "
            "node, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
        ) from None
    except (OSError, RuntimeError) as exc:  # ConnectionError; a Ray temp dir path too long
        raise ClusterError(
            f"cannot connect to Ray at {address or 'a new local cluster'}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    dashboard = ctx.dashboard_url or None
    info: dict[str, Any] = getattr(ctx, "address_info", {})  # a RayContext, typed loosely
    gcs = info.get("gcs_address") or address or "?"
    if address is None:
        _announce(gcs)
    return Connection(
        gcs,
        f"http://{dashboard}" if dashboard and "://" not in dashboard else dashboard,
        started_here=address is None,
    )


def _current() -> Connection:
    """The connection this process already has, described as `connect` describes one."""
    gcs = ray.get_runtime_context().gcs_address
    node = ray._private.worker.global_worker.node
    dashboard = node.address_info.get("webui_url") if node is not None else None
    if dashboard and "://" not in dashboard:
        dashboard = f"http://{dashboard}"
    return Connection(gcs, dashboard or None, started_here=False)


HEAD_RESOURCE = "node:__internal_head__"
"""Ray's marker resource of the head node: coop's actors live there, beside their files."""


def named_actor(cls: type[T], objective_id: str, role: str, *args: Any) -> Any:
    """Get or create a detached actor in one atomic step (no get-then-create race).

    Pinned to the head node, where the state dir is. If its process dies, Ray restarts it
    with the same arguments (it rebuilds itself from its files) and retries the calls that
    were in flight; every mutating call of the board is answered once (`Board.invoke`).
    """
    return actor_class(cls).options(**restartable(objective_id, role)).remote(*args)


def actor_class(cls: type[T]) -> Any:
    """`ray.remote(cls)`, with the class's `GROUPS` (name: threads), if it has them, as its
    Ray concurrency groups beside the default one (Ray refuses a method of a group the
    actor was not made with)."""
    groups: dict[str, int] | None = getattr(cls, "GROUPS", None)
    if not groups:
        return ray.remote(cls)
    return ray.remote(concurrency_groups=groups)(cls)  # type: ignore[call-overload]  # Ray's stubs lack it


def in_group(name: str) -> Callable[[F], F]:
    """`@ray.method(concurrency_group=name)`, typed as what it is: the method itself, marked
    (Ray's stubs make it a remote method, and a class used in-process calls it plainly)."""

    def mark(method: F) -> F:
        marked: F = ray.method(concurrency_group=name)(method)
        return marked

    return mark


def restartable(objective_id: str, role: str) -> dict[str, Any]:
    """`named_actor`'s options: a detached actor on the head node that Ray restarts, retrying
    the calls in flight when its process died."""
    return {
        "name": actor_name(objective_id, role),
        "namespace": C.NAMESPACE,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": 0,
        "resources": {HEAD_RESOURCE: 0.001},
        "max_restarts": C.ACTOR_RESTARTS,
        "max_task_retries": C.ACTOR_RESTARTS,
    }


def restarted() -> bool:
    """Whether this process is an actor Ray restarted after its process died."""
    if not ray.is_initialized():
        return False
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:
        return False
    with warnings.catch_warnings():  # Ray's own property reads its deprecated `actor_id`
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(context.was_current_actor_reconstructed)


def resolve_node(ref: str | None) -> tuple[str, str]:
    """(node id, host name) of the live node whose id starts with `ref`; default: this
    process's node."""
    alive = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    if ref is None:
        ref = ray.get_runtime_context().get_node_id()
    found = [n for n in alive if n["NodeID"].startswith(ref.strip().lower())] if ref else []
    if len(found) != 1:
        ids = ", ".join(n["NodeID"][:12] for n in alive)
        what = "matches no live node" if not found else "matches several nodes"
        raise ClusterError(f"--node {ref!r} {what}; live nodes: {ids}")
    return found[0]["NodeID"], found[0].get("NodeManagerHostname") or found[0]["NodeManagerAddress"]


def pinned_actor(
    cls: type[T],
    name: str,
    node_id: str,
    *,
    concurrency: int,
    args: tuple[Any, ...],
    resources: dict[str, float] | None = None,
) -> Any | None:
    """A named actor on `node_id` (or, with "", wherever `resources` are), owned by this
    process (it dies with it); None if the name is taken."""
    custom = dict(resources or {})
    placement: dict[str, Any] = {"num_gpus": custom.pop("GPU")} if "GPU" in custom else {}
    if custom:  # Ray takes GPUs by their own keyword, everything else as resources
        placement["resources"] = custom
    if node_id:
        placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    try:
        return (
            ray.remote(cls)
            .options(
                name=name,
                namespace=C.NAMESPACE,
                num_cpus=0,
                max_concurrency=concurrency,
                **placement,
            )
            .remote(*args)
        )
    except ValueError:  # Ray: "The name ... is already taken"
        return None


def death_cause(exc: ray.exceptions.RayError) -> str:
    """The one line that says why an actor died: the last of Ray's report, which ends with the
    actor's own exception (`WeaviateError: cannot reach ...`), not Ray's framing."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(exc).__name__


def get(ref: Any, timeout: float | None = None) -> Any:
    """`ray.get`, with an actor method's own exception (a board's `JournalError`, a memory's
    dimension mismatch) raised as itself rather than inside Ray's wrapper and its traceback."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from None
        raise


def existing_actor(objective_id: str, role: str) -> Any | None:
    try:
        return ray.get_actor(actor_name(objective_id, role), namespace=C.NAMESPACE)
    except ValueError:
        return None


def actor_names() -> list[str]:
    """coop's named actors, whatever namespace this process's own connection is in (a user's
    `ray.init()` has Ray's anonymous one)."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in named if a["namespace"] == C.NAMESPACE]


def instance_name(suffix: str = "") -> str:
    """`host-pid[-suffix]`: unique in a cluster, and says where the process runs."""
    return f"{socket.gethostname()}-{os.getpid()}{suffix}"


def leave(grace: float = LEAVE_GRACE) -> bool:
    """Ray's shutdown, given `grace` seconds; False if it had not finished by then. Ray would
    run it at exit anyway, with no limit: a process cut off from its cluster (a planner that
    gave up in a partition) would hang there for minutes."""
    if not ray.is_initialized():
        return True
    worker = threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True)
    worker.start()
    worker.join(grace)
    if worker.is_alive():
        log.warning("left the Ray cluster without its shutdown: no answer in %gs", grace)
        return False
    return True


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT/SIGTERM; a second SIGINT interrupts at once.

    Call it after `connect`: ray.init replaces the SIGTERM handler with one that exits. Off
    the main thread (`coop.start` plans in a thread of the caller's) signals stay the
    caller's: the event is only set by whoever holds it.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("stopping: finishing in-flight tasks (Ctrl-C again to abort)")
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
