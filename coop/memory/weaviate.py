"""Weaviate memory: one collection for every objective, one tenant per objective.

Vectors are coop's own (the same embedding model as the planner), object ids are uuid5 of
objective and task, so a retried completion overwrites its result instead of adding a copy,
and results that arrive together from one process's slots go in one batch. Every process
opens one client, lazily, and closes it at exit; clients never travel through Ray.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import weaviate
import weaviate.exceptions as wex
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.classes.tenants import Tenant
from weaviate.collections import Collection

from coop import constants as C
from coop.config import RunSettings, weaviate_url
from coop.errors import CoopError
from coop.llm import LLM
from coop.memory import Embedder, Hit

BATCH_LINGER = 0.02
"""Seconds the first of several concurrent writes waits for the others to join its batch."""
CLOUD_SUFFIXES = (".weaviate.cloud", ".weaviate.network")
PROPERTIES = [
    Property(name="task_id", data_type=DataType.INT),
    Property(name="task", data_type=DataType.TEXT),
    Property(name="result", data_type=DataType.TEXT),
    Property(name="worker", data_type=DataType.TEXT),
    Property(name="created", data_type=DataType.DATE),
    Property(name="tokens", data_type=DataType.INT),
    Property(name="lease_token", data_type=DataType.INT),
]


class WeaviateError(CoopError):
    """Weaviate is unreachable, refused us, or refused a write."""


@dataclass(frozen=True)
class Where:
    """How this process reaches Weaviate: from the environment, else the objective's settings."""

    mode: str  # "weaviate" or "weaviate-embedded"
    url: str = ""
    grpc_host: str = ""
    grpc_port: int = 0
    data_path: str = ""  # embedded only
    api_key: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{self.url} (gRPC {self.grpc_host}:{self.grpc_port})"


def where(settings: RunSettings, state_dir: Path) -> Where:
    if settings.memory == "weaviate-embedded":
        port, grpc_port = C.WEAVIATE_EMBEDDED_PORTS
        return Where(
            settings.memory,
            f"http://127.0.0.1:{port}",
            "127.0.0.1",
            grpc_port,
            str(state_dir / "weaviate"),
        )
    url = weaviate_url(settings)
    if not url:
        raise WeaviateError(
            "--memory weaviate needs WEAVIATE_URL (e.g. http://127.0.0.1:8080, or your "
            "Weaviate Cloud URL with WEAVIATE_API_KEY)"
        )
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number
    except ValueError:
        raise WeaviateError(f"bad WEAVIATE_URL {url!r}: expected http(s)://host[:port]") from None
    secure = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    cloud = host.endswith(CLOUD_SUFFIXES)
    grpc_host = os.environ.get("WEAVIATE_GRPC_HOST") or (f"grpc-{host}" if cloud else host)
    grpc_text = os.environ.get("WEAVIATE_GRPC_PORT") or str(443 if secure else C.WEAVIATE_GRPC_PORT)
    if not grpc_text.isdigit():
        raise WeaviateError(f"WEAVIATE_GRPC_PORT must be a port number, not {grpc_text!r}")
    http_port = parts.port or (443 if secure else C.WEAVIATE_HTTP_PORT)
    return Where(
        settings.memory,
        f"{parts.scheme}://{host}:{http_port}",
        grpc_host,
        int(grpc_text),
        api_key=os.environ.get("WEAVIATE_API_KEY", ""),
    )


_clients: dict[Where, weaviate.WeaviateClient] = {}
_clients_lock = threading.Lock()


def client(spot: Where) -> weaviate.WeaviateClient:
    """This process's client for `spot`, connected on first use and closed at exit."""
    with _clients_lock:
        found = _clients.get(spot)
        if found is None:
            found = _clients[spot] = _connect(spot)
        return found


@atexit.register
def close_all() -> None:
    with _clients_lock:
        for c in _clients.values():
            c.close()
        _clients.clear()


def _connect(spot: Where) -> weaviate.WeaviateClient:
    config = AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120))
    auth = Auth.api_key(spot.api_key) if spot.api_key else None
    try:
        if spot.mode == "weaviate-embedded":
            return _embedded(spot, config)
        parts = urlsplit(spot.url)
        return weaviate.connect_to_custom(
            http_host=parts.hostname or "",
            http_port=parts.port or 0,
            http_secure=parts.scheme == "https",
            grpc_host=spot.grpc_host,
            grpc_port=spot.grpc_port,
            grpc_secure=parts.scheme == "https",
            auth_credentials=auth,
            additional_config=config,
        )
    except wex.WeaviateGRPCUnavailableError:
        raise WeaviateError(
            f"Weaviate at {spot.url} answers over HTTP but not over gRPC at "
            f"{spot.grpc_host}:{spot.grpc_port}: open that port, or set WEAVIATE_GRPC_HOST / "
            "WEAVIATE_GRPC_PORT"
        ) from None
    except wex.UnexpectedStatusCodeError as exc:
        if exc.status_code in (401, 403):
            raise WeaviateError(
                f"Weaviate at {spot.url} refused coop ({exc.status_code}): "
                + ("check WEAVIATE_API_KEY" if spot.api_key else "set WEAVIATE_API_KEY")
            ) from None
        raise WeaviateError(
            f"Weaviate at {spot.url} answered {exc.status_code}: {_first_line(exc)}"
        ) from None
    except wex.WeaviateStartUpError as exc:
        raise WeaviateError(f"Weaviate at {spot.label}: {_first_line(exc)}") from None
    except (wex.WeaviateBaseError, OSError) as exc:
        raise WeaviateError(f"cannot reach Weaviate at {spot.label}: {_first_line(exc)}") from None


def _embedded(spot: Where, config: AdditionalConfig) -> weaviate.WeaviateClient:
    Path(spot.data_path).mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return weaviate.connect_to_embedded(
            port=int(spot.url.rsplit(":", 1)[1]),
            grpc_port=spot.grpc_port,
            persistence_data_path=spot.data_path,
            additional_config=config,
        )
    except OSError as exc:  # the server binary is fetched from GitHub on first use
        raise WeaviateError(
            f"embedded Weaviate could not download its server binary ({_first_line(exc)}); "
            "without network access, run a Weaviate server and use --memory weaviate with "
            "WEAVIATE_URL instead"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def result_uuid(objective_id: str, task_id: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"coop:{objective_id}:{task_id}")


@dataclass
class _Write:
    task_id: int
    task: str
    result: str
    worker: str
    token: int
    stored: bool = False
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Batcher:
    """Group commit: concurrent `submit`s from one process go out as one write. The first
    caller waits briefly, then writes whatever has queued, until nothing has."""

    def __init__(self, write: Callable[[list[_Write]], None]) -> None:
        self._write = write
        self._queue: list[_Write] = []
        self._lock = threading.Lock()
        self._leader = False

    def submit(self, item: _Write) -> _Write:
        with self._lock:
            self._queue.append(item)
            lead, self._leader = not self._leader, True
        if lead:
            time.sleep(BATCH_LINGER)
            while True:
                with self._lock:
                    batch, self._queue = self._queue, []
                    if not batch:
                        self._leader = False
                        break
                try:
                    self._write(batch)
                except Exception as exc:  # every waiter sees the batch's error
                    for w in batch:
                        w.error = exc
                for w in batch:
                    w.done.set()
        item.done.wait()
        return item


class WeaviateMemory:
    """The results of one objective, in its own tenant of the shared collection."""

    def __init__(
        self,
        objective_id: str,
        llm: LLM,
        settings: RunSettings,
        state_dir: Path,
        on_usage: Callable[[int], None] | None = None,
    ) -> None:
        self.objective_id = objective_id
        self.collection = settings.weaviate_collection
        self._where = where(settings, state_dir)
        self._embed = Embedder(llm, on_usage)
        self._batcher = _Batcher(self._write)
        self._ready = False

    def _tenant(self) -> Collection[Any, Any]:
        """The objective's tenant, created (with the collection) on first use."""
        db = client(self._where)
        if not self._ready:
            ensure_tenant(db, self.collection, self.objective_id)
            self._ready = True
        return db.collections.use(self.collection).with_tenant(self.objective_id)

    def add(self, task_id: int, task: str, result: str, *, token: int, worker: str) -> bool:
        done = self._batcher.submit(_Write(task_id, task, result, worker, token))
        if done.error is not None:
            raise done.error
        return done.stored

    def _write(self, batch: list[_Write]) -> None:
        tenant = self._tenant()
        ids = [result_uuid(self.objective_id, w.task_id) for w in batch]
        newer = self._stored_tokens(tenant, ids)
        # a zombie's late write (an older lease token than the stored one) is refused
        fresh = [(w, i) for w, i in zip(batch, ids, strict=True) if newer.get(i, -1) <= w.token]
        if not fresh:
            return
        embedded = self._embed.vectors([f"{w.task}\n{w.result}" for w, _ in fresh])
        now = datetime.now(timezone.utc)
        objects: list[DataObject[Any, Any]] = [
            DataObject(
                uuid=i,
                vector=v,
                properties={
                    "task_id": w.task_id,
                    "task": w.task,
                    "result": w.result,
                    "worker": w.worker,
                    "created": now,
                    "tokens": self._embed.count(w.result),
                    "lease_token": w.token,
                },
            )
            for (w, i), v in zip(fresh, embedded, strict=True)
        ]
        try:
            out = tenant.data.insert_many(objects)
        except wex.WeaviateBaseError as exc:
            raise WeaviateError(f"Weaviate refused the results: {_first_line(exc)}") from None
        for n, (w, _) in enumerate(fresh):
            if n in out.errors:
                w.error = WeaviateError(
                    f"Weaviate refused result #{w.task_id}: {out.errors[n].message}"
                )
            else:
                w.stored = True

    @staticmethod
    def _stored_tokens(
        tenant: Collection[Any, Any],
        ids: Sequence[uuid.UUID],
    ) -> dict[uuid.UUID, int]:
        found = tenant.query.fetch_objects(
            filters=Filter.by_id().contains_any(list(ids)),
            limit=len(ids),
            return_properties=["lease_token"],
        )
        return {
            uuid.UUID(str(o.uuid)): cast(int, o.properties["lease_token"]) for o in found.objects
        }

    def query(self, text: str, k: int) -> list[Hit]:
        if k <= 0:
            return []
        (vector,) = self._embed.vectors([text])
        try:
            found = self._tenant().query.near_vector(
                near_vector=vector,
                limit=k,
                return_metadata=MetadataQuery(distance=True),
                return_properties=["task_id", "task", "result"],
            )
        except wex.WeaviateBaseError as exc:
            raise WeaviateError(f"Weaviate query failed: {_first_line(exc)}") from None
        return [
            Hit(
                cast(int, o.properties["task_id"]),
                str(o.properties["task"]),
                str(o.properties["result"]),
                1.0 - float(o.metadata.distance or 0.0),  # cosine distance -> similarity
            )
            for o in found.objects
        ]

    def count(self) -> int:
        return int(self._tenant().aggregate.over_all(total_count=True).total_count or 0)

    def drop(self) -> None:
        drop_tenant(client(self._where), self.collection, self.objective_id)
        self._ready = False


def ensure_tenant(db: weaviate.WeaviateClient, collection: str, tenant: str) -> None:
    """Collection and tenant, created if missing; another process creating them at the same
    moment is fine."""
    try:
        if not db.collections.exists(collection):
            try:
                db.collections.create(
                    collection,
                    properties=PROPERTIES,
                    vector_config=Configure.Vectors.self_provided(),
                    multi_tenancy_config=Configure.multi_tenancy(enabled=True),
                )
            except wex.UnexpectedStatusCodeError as exc:
                if exc.status_code != 422 or not db.collections.exists(collection):
                    raise
        coll = db.collections.use(collection)
        if not coll.tenants.exists(tenant):
            try:
                coll.tenants.create([Tenant(name=tenant)])
            except wex.UnexpectedStatusCodeError:
                if not coll.tenants.exists(tenant):
                    raise
    except wex.WeaviateBaseError as exc:
        raise WeaviateError(
            f"cannot prepare Weaviate collection {collection}: {_first_line(exc)}"
        ) from None


def drop_tenant(db: weaviate.WeaviateClient, collection: str, tenant: str) -> bool:
    """Remove an objective's results; False if there were none."""
    try:
        if not db.collections.exists(collection):
            return False
        coll = db.collections.use(collection)
        if not coll.tenants.exists(tenant):
            return False
        coll.tenants.remove([tenant])
    except wex.WeaviateBaseError as exc:
        raise WeaviateError(f"cannot delete from Weaviate: {_first_line(exc)}") from None
    return True
