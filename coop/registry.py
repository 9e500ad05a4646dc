"""Which objectives exist: the live board actors in the `coop` namespace, and the journals.

Ray's own name table already answers "which boards are alive" atomically, so there is no second
actor to keep consistent with it (BabyAGI's objectives list could disagree with its boards);
the state dir's journals answer "which objectives could be revived".
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import ray

from coop import cluster
from coop import memory as memories
from coop.board import Board, BoardClient, BoardUnavailable
from coop.board.client import describe_all
from coop.config import RunSettings
from coop.errors import CoopError
from coop.journal import JournalError, JournalInfo, journal_path, list_journals, remove_db
from coop.text import objective_id
from coop.types import Objective, State

log = logging.getLogger(__name__)

INFO_TIMEOUT = 10.0


class ObjectiveNotFound(CoopError):
    """No objective by that id, prefix or text, live or journaled (the message lists those
    that exist)."""


def board_ids() -> list[str]:
    suffix = ":board"
    return sorted(
        n[len("coop:") : -len(suffix)]
        for n in cluster.actor_names()
        if n.startswith("coop:") and n.endswith(suffix)
    )


def _match(ref: str, known: Sequence[str]) -> list[str]:
    """Ids matching `ref`: exactly, as the objective's text, or as a unique prefix."""
    ref = ref.strip()
    for exact in (ref, objective_id(ref)):
        if exact in known:
            return [exact]
    return [k for k in known if ref and k.startswith(ref)]


def _started(
    oid: str, objective: str, settings: RunSettings, nonce: str, root: Path
) -> BoardClient:
    """The board's client at once, while its process starts: calls wait for it."""
    handle = cluster.named_actor(Board, oid, "board", oid, objective, settings, nonce, str(root))
    return BoardClient.of_actor(oid, handle)


def _described(board: BoardClient) -> Objective:
    try:  # the board's first answer: whether it could open its journal
        return board.describe()
    except BoardUnavailable as exc:
        raise CoopError(f"the board of {board.objective_id} could not start: {exc.cause}") from None


def create_board(objective: str, settings: RunSettings, root: Path) -> BoardClient:
    """A new board for `objective`; an existing one is an error, not silently reused."""
    board, nonce = spawn_board(objective, settings, root)
    confirm_board(board, nonce)
    return board


def spawn_board(objective: str, settings: RunSettings, root: Path) -> tuple[BoardClient, str]:
    """`create_board` in two steps, so that what needs only the board's client (the workers of
    `coop start`) can start while the board's process does: the board, and the nonce that
    `confirm_board` checks it by."""
    oid = objective_id(objective)
    if journal_path(root, oid).exists():
        raise CoopError(
            f"objective {oid} already exists (journal in {root}); continue it "
            f"with `coop start --resume {oid}`"
        )
    nonce = uuid.uuid4().hex
    return _started(oid, objective, settings, nonce, root), nonce


def confirm_board(board: BoardClient, nonce: str) -> None:
    """Once the board has started: raises unless it is the one `spawn_board` made (it could
    be another's of the same objective, made a moment before)."""
    info = _described(board)
    if info.nonce != nonce:
        raise CoopError(
            f"objective {info.id} already exists ({info.state.value}); use "
            f"`coop start --resume {info.id}` to continue it, or `coop status {info.id}`"
        )


def find(ref: str) -> BoardClient:
    """A live board by id, unique id prefix, or the objective's exact text."""
    known = board_ids()
    matches = _match(ref, known)
    if len(matches) == 1:
        handle = cluster.existing_actor(matches[0], "board")
        if handle is not None:
            return BoardClient.of_actor(matches[0], handle)
    if len(matches) > 1:
        raise ObjectiveNotFound(f"{ref!r} matches several objectives: {', '.join(matches)}")
    listing = ", ".join(known) if known else "none yet (start one with `coop start`)"
    raise ObjectiveNotFound(f"no objective {ref!r} on this cluster; known: {listing}")


def find_or_revive(ref: str, root: Path) -> BoardClient:
    """A live board, or one rebuilt from its journal after the cluster lost it."""
    try:
        return find(ref)
    except ObjectiveNotFound:
        info = _journal_for(ref, root, board_ids())
    board = _started(info.objective_id, info.objective, _settings(info), "revived", root)
    _described(board)
    return board


def _journal_for(ref: str, root: Path, live: Sequence[str]) -> JournalInfo:
    """The journal `ref` names under `root`. A match that cannot be read is reported as such;
    no match lists what is known, live boards included."""
    journals, problems = list_journals(root)
    by_id = {j.objective_id: j for j in journals}
    matches = _match(ref, list(by_id))
    if len(matches) == 1:
        return by_id[matches[0]]
    broken = _match(ref, list(problems))
    if not matches and len(broken) == 1:
        raise JournalError(problems[broken[0]])
    known = ", ".join(sorted(set(live) | set(by_id))) or "none"
    raise ObjectiveNotFound(f"no objective {ref!r} on this cluster or in {root}; known: {known}")


def reader(ref: str, root: Path, address: str | None) -> BoardClient:
    """The objective's board to read: live on its cluster, else rebuilt read-only from its
    journal (`live` is False), with no cluster needed and nothing written."""
    try:
        cluster.connect(address, start_local=False)
        return find(ref)
    except cluster.Unreachable:
        info = _journal_for(ref, root, [])
    except ObjectiveNotFound:
        info = _journal_for(ref, root, board_ids())
    log.warning(
        "%s: no running cluster has it here (pass --address?); reading its journal %s",
        info.objective_id,
        info.path,
    )

    def read() -> Board:
        settings = _settings(info)
        return Board(
            info.objective_id, info.objective, settings, "reader", str(root), readonly=True
        )

    return BoardClient.in_process(read(), reread=read)


def _settings(info: JournalInfo) -> RunSettings:
    """A journal's settings, tolerating fields this version does not know."""
    names = {f.name for f in fields(RunSettings)}
    known = {k: v for k, v in info.settings.items() if k in names}
    if "prices" in known:
        known["prices"] = tuple(known["prices"])
    if "role_prices" in known:
        known["role_prices"] = tuple(tuple(p) for p in known["role_prices"])
    return RunSettings(**known)


def _live_objectives() -> list[Objective]:
    handles = [(i, cluster.existing_actor(i, "board")) for i in board_ids()]
    boards = [BoardClient.of_actor(i, h) for i, h in handles if h is not None]
    return describe_all(boards, INFO_TIMEOUT)


def list_objectives(root: Path, address: str | None) -> list[Objective]:
    """Live boards, and journaled objectives whose board is gone (resumable); with no
    cluster to ask, the journals alone."""
    found: list[Objective] = []
    try:
        cluster.connect(address, start_local=False)
    except cluster.Unreachable as exc:
        log.warning("%s; showing this machine's journals only", exc)
    else:
        found = _live_objectives()
    live = {o.id for o in found}
    journals, problems = list_journals(root)
    for problem in problems.values():
        log.warning("%s", problem)
    found += [
        Objective(j.objective_id, j.objective, j.created, State.DORMANT, None, "")
        for j in journals
        if j.objective_id not in live
    ]
    return sorted(found, key=lambda o: o.created)


@dataclass(frozen=True)
class Doomed:
    """An objective `coop delete` was asked to remove, found before anything is touched."""

    objective: Objective
    settings: RunSettings
    live: bool


def doomed(ref: str, root: Path, address: str | None) -> Doomed:
    board = reader(ref, root, address)
    info = board.describe()
    if board.live and info.state is State.RUNNING:
        raise CoopError(
            f"{info.id} is running: stop it first (`coop stop {info.id}`), then delete it"
        )
    return Doomed(info, board.run_settings(), board.live)


def delete(target: Doomed, root: Path) -> list[str]:
    """Remove the objective's live actors, results and journal; says what was removed."""
    oid = target.objective.id
    removed = []
    if target.live:
        for role in ("board", "memory"):
            handle = cluster.existing_actor(oid, role)
            if handle is not None:
                ray.kill(handle, no_restart=True)
                removed.append(f"actor {cluster.actor_name(oid, role)}")
    removed.append(memories.delete(target.settings, oid, root))
    path = journal_path(root, oid)
    remove_db(path)
    removed.append(f"journal {path}")
    return removed
