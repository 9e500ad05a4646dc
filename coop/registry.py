"""Which objectives exist: the live board actors in the `coop` namespace are the registry.

Ray's own name table already answers "which boards exist" atomically, so there is no second
actor to keep consistent with it (BabyAGI's objectives list could disagree with its boards).
"""

from __future__ import annotations

import uuid
from typing import Any

import ray

from coop import cluster
from coop.board import Board
from coop.config import RunSettings
from coop.text import objective_id
from coop.types import CoopError, Objective

INFO_TIMEOUT = 10.0


class ObjectiveNotFound(CoopError):
    pass


def board_ids() -> list[str]:
    suffix = ":board"
    return sorted(n[len("coop:"):-len(suffix)] for n in cluster.actor_names()
                  if n.startswith("coop:") and n.endswith(suffix))


def create_board(objective: str, settings: RunSettings) -> tuple[str, Any]:
    """A new board for `objective`; an existing one is an error, not silently reused."""
    oid = objective_id(objective)
    nonce = uuid.uuid4().hex
    handle = cluster.named_actor(Board, oid, "board", oid, objective, settings, nonce)
    info: Objective = ray.get(handle.describe.remote())
    if info.nonce != nonce:
        raise CoopError(f"objective {oid} already exists ({info.state.value}); use "
                        f"`coop start --resume {oid}` to continue it, or `coop status {oid}`")
    return oid, handle


def find(ref: str) -> tuple[str, Any]:
    """A board by id, unique id prefix, or the objective's exact text."""
    ref = ref.strip()
    known = board_ids()
    if ref in known:
        matches = [ref]
    elif objective_id(ref) in known:
        matches = [objective_id(ref)]
    else:
        matches = [k for k in known if ref and k.startswith(ref)]
    if len(matches) == 1:
        handle = cluster.existing_actor(matches[0], "board")
        if handle is not None:
            return matches[0], handle
    if len(matches) > 1:
        raise ObjectiveNotFound(f"{ref!r} matches several objectives: {', '.join(matches)}")
    listing = ", ".join(known) if known else "none yet (start one with `coop start`)"
    raise ObjectiveNotFound(f"no objective {ref!r} on this cluster; known: {listing}")


def list_objectives() -> list[Objective]:
    ids = board_ids()
    handles = [cluster.existing_actor(i, "board") for i in ids]
    refs = [h.describe.remote() for h in handles if h is not None]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=INFO_TIMEOUT)
    found: list[Objective] = []
    for ref in ready:
        try:
            found.append(ray.get(ref))
        except ray.exceptions.RayError:
            continue  # a board that died between listing and asking
    return sorted(found, key=lambda o: o.created)
