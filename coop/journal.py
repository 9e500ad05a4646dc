"""The durable journal of one objective: an append-only SQLite log in WAL mode.

Every state change of a board is an event here before it takes effect (write-ahead), so a
board rebuilt from its journal — after an actor crash or a whole-cluster restart — is the board
that was. Events that acknowledge paid work (tasks added by the planner, completions, failures,
stops) are committed with `synchronous=FULL`, so a completion a worker was told about is on
disk even across a power cut; the rest (leases, usage, reorders) use WAL's cheaper NORMAL
commits, which survive a process crash.

A call to the board is one transaction (`begin` … `commit`): its events and its reply, under the
request id its client made, are committed together. A call Ray retries after the board's
process died (the reply lost) finds its reply here and is answered with it, not run twice;
a call whose transaction never committed left nothing, and runs afresh.

Format 2 added the replies; a format-1 journal is upgraded when it is opened for writing (its
events are unchanged), and read as it is by readers.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coop import events
from coop.constants import STATE_DIR_ENV
from coop.errors import CoopError
from coop.types import EventKind

FORMAT = "coop-journal/2"
READABLE = frozenset({"coop-journal/1", FORMAT})
"""Formats this coop reads; the older ones are upgraded to FORMAT on a writable open."""
REPLIES_KEPT = 10_000
"""Replies remembered for retried calls: Ray retries a call as soon as the restarted board
answers, so the newest few thousand are all a retry can ask for."""


class JournalError(CoopError):
    """The journal or the state directory cannot be used; nothing is written or deleted."""


def state_dir(explicit: str | None = None) -> Path:
    """The state directory (COOP_STATE_DIR, default ~/.coop), created private (0700)."""
    path = Path(explicit or os.environ.get(STATE_DIR_ENV) or Path.home() / ".coop").expanduser()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("journal", "memory"):
            (path / sub).mkdir(mode=0o700, exist_ok=True)
        probe = path / "journal" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise JournalError(
            f"state dir {path} is not usable ({exc.strerror or exc}); set "
            f"{STATE_DIR_ENV} to a writable directory"
        ) from None
    return path.resolve()


def journal_path(root: Path, objective_id: str) -> Path:
    return root / "journal" / f"{objective_id}.db"


def remove_db(path: Path) -> None:
    """A SQLite file of coop's (journal or memory) with its WAL side files."""
    for extra in ("", "-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)


@dataclass(frozen=True)
class Event:
    """One change of a board, as journaled: its place on the tape, when, what, and its line
    (format 2's keys; `events.decode` makes it the typed event the board applies)."""

    seq: int
    at: float
    kind: EventKind
    data: dict[str, Any]

    def to_json(self) -> str:
        """One line of the exported tape (`coop events --json`, the report's events file)."""
        return json.dumps({"seq": self.seq, "at": self.at, "event": self.kind.value, **self.data})


@dataclass(frozen=True)
class JournalInfo:
    """A journal's header: whose it is, and the settings its objective was created with."""

    objective_id: str
    objective: str
    created: float
    settings: dict[str, Any]  # as stored: fields this version does not know are kept
    path: Path
    format: str = FORMAT


class Journal:
    """One objective's log. Not thread-safe: owned by the single-threaded board actor."""

    def __init__(
        self,
        path: Path,
        objective_id: str,
        *,
        create: dict[str, Any] | None = None,
        readonly: bool = False,
    ) -> None:
        """Open the journal at `path`; with `create` (objective, settings), make it if absent;
        `readonly` for readers beside a live board (reports of a dormant objective)."""
        self.path = path
        self.readonly = readonly
        self._written: list[EventKind] | None = None  # kinds appended in the open transaction
        self._replies = 0  # replies kept by this process (old ones are pruned every 1000)
        fresh = not path.exists()
        if fresh and create is None:
            raise JournalError(f"no journal for {objective_id} at {path}")
        if not fresh:  # look before writing anything: a foreign or corrupt file stays as it was
            self.info = read_info(path)
            if self.info.objective_id != objective_id:
                raise JournalError(
                    f"{path} is the journal of {self.info.objective_id}, not of "
                    f"{objective_id}; it was left untouched"
                )
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            return
        try:
            if fresh:
                _create(path, objective_id, create or {})
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if fresh:
                self.info = _read_info(self._db, path)
            elif self.info.format != FORMAT:
                self._upgrade()
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from None

    def _upgrade(self) -> None:
        """coop-journal/1 → 2, in one transaction: every event with the keys format 2 holds
        (`events.upgrade_v1`), and the table of replies."""
        rows = self._db.execute("SELECT seq, kind, data FROM events").fetchall()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for seq, kind, data in rows:
                old = json.loads(data)
                new = events.upgrade_v1(EventKind(kind), old)
                if new != old:
                    self._db.execute("UPDATE events SET data = ? WHERE seq = ?", (_dumps(new), seq))
            self._db.execute(_REPLIES)
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'format'", (json.dumps(FORMAT),)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.info = _read_info(self._db, self.path)

    def append(self, kind: EventKind, data: dict[str, Any]) -> None:
        """Write one event; durable kinds (`EventKind.durable`) with a full sync (inside a
        call's transaction: when it commits)."""
        if self.readonly:
            raise JournalError(f"{self.path} was opened read-only")
        durable = kind.durable and self._written is None
        try:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "INSERT INTO events (at, kind, data) VALUES (?, ?, ?)",
                (time.time(), kind.value, _dumps(data)),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from None
        finally:
            if durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
        if self._written is not None:
            self._written.append(kind)

    # -- one call, one transaction ------------------------------------------------------------

    def reply(self, rid: str) -> tuple[bool, Any]:
        """(True, the reply) of the call `rid` if it was committed, else (False, None)."""
        row = self._db.execute("SELECT reply FROM replies WHERE rid = ?", (rid,)).fetchone()
        return (False, None) if row is None else (True, pickle.loads(row[0]))

    def begin(self) -> None:
        """Open a call's transaction: what it appends is committed at once by `commit`."""
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from None
        self._written = []

    def commit(self, rid: str, reply: Any) -> bool:
        """Commit the call's events with its `reply` under `rid` (none without `rid`, nor
        when it wrote no event: run again, it would answer the same). False if the transaction
        was lost (SQLite rolls it back by itself on a full disk): the events appended since
        `begin` are not in the journal. Raises JournalError if it cannot be committed; then
        nothing is."""
        written, self._written = self._written or [], None
        if not self._db.in_transaction:
            return not written
        try:
            if written and rid:
                self._db.execute(
                    "INSERT INTO replies (rid, reply) VALUES (?, ?)",
                    (rid, pickle.dumps(reply)),
                )
                self._replies += 1
                if self._replies % 1000 == 0:
                    self._db.execute(
                        "DELETE FROM replies WHERE n <= (SELECT MAX(n) FROM replies) - ?",
                        (REPLIES_KEPT,),
                    )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.rollback()
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from None
        if any(kind.durable for kind in written):
            self._sync()
        return True

    def rollback(self) -> None:
        self._written = None
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _sync(self) -> None:
        """What `synchronous=FULL` does at a commit (SQLite will not change the level inside
        a transaction): the WAL on disk before anyone is told."""
        fd = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self, since: int = 0) -> Iterator[Event]:
        rows = self._db.execute(
            "SELECT seq, at, kind, data FROM events WHERE seq > ? ORDER BY seq", (since,)
        )
        for row in rows:
            yield self._event(*row)

    def tail(self, count: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT seq, at, kind, data FROM events ORDER BY seq DESC LIMIT ?", (count,)
        ).fetchall()
        return [self._event(*row) for row in reversed(rows)]

    def _event(self, seq: int, at: float, kind: str, data: str) -> Event:
        """A row as format 2 holds it (a format-1 journal read without upgrading it)."""
        known, line = EventKind(kind), json.loads(data)
        if self.info.format != FORMAT:
            line = events.upgrade_v1(known, line)
        return Event(seq, at, known, line)

    def close(self) -> None:
        self._db.close()


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


_REPLIES = (
    "CREATE TABLE replies (n INTEGER PRIMARY KEY, rid TEXT UNIQUE NOT NULL, reply BLOB NOT NULL)"
)


def _read_info(db: sqlite3.Connection, path: Path) -> JournalInfo:
    try:
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except sqlite3.OperationalError:
        meta = {}
    if meta.get("format") not in READABLE:
        raise sqlite3.DatabaseError(f"format is {meta.get('format')!r}, expected {FORMAT}")
    return JournalInfo(
        meta["objective_id"],
        meta.get("objective", ""),
        meta["created"],
        meta.get("settings", {}),
        path,
        meta["format"],
    )


def _create(path: Path, objective_id: str, create: dict[str, Any]) -> None:
    """Make a journal beside `path` and link it into place whole: a reader listing or watching
    the state dir (`coop list`, a test polling the file) never meets a file without its tables,
    and of two processes creating one objective at once, the second fails instead of erasing."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.new")
    partial.unlink(missing_ok=True)
    partial.touch(mode=0o600)
    try:
        with closing(sqlite3.connect(partial, isolation_level=None)) as db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY, at REAL NOT NULL, "
                "kind TEXT NOT NULL, data TEXT NOT NULL)"
            )
            db.execute(_REPLIES)
            meta = {
                "format": FORMAT,
                "objective_id": objective_id,
                "created": time.time(),
                **create,
            }
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
        os.link(partial, path)  # never over a journal another process made meanwhile
    finally:
        partial.unlink(missing_ok=True)


def read_info(path: Path) -> JournalInfo:
    """The header of a journal file, read without writing to it."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return _read_info(db, path)
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"{path} is not a readable coop journal ({exc}); it was left untouched"
        ) from None


def list_journals(root: Path) -> tuple[list[JournalInfo], dict[str, str]]:
    """Journals under `root`, and for each file that could not be read (by objective id, its
    file name) why."""
    found: list[JournalInfo] = []
    problems: dict[str, str] = {}
    for path in sorted((root / "journal").glob("*.db")):
        try:
            found.append(read_info(path))
        except JournalError as exc:
            problems[path.stem] = str(exc)
    return found, problems
