"""One objective's board: the actor (`actor.Board`) made of parts (`tasks`, `leases`, `claim`,
`budget`, `ratelimit`), and the typed client every role talks to it through (`client`)."""

from coop.board.actor import Board
from coop.board.claim import PlannerLost
from coop.board.client import BoardClient, BoardUnavailable

__all__ = ["Board", "BoardClient", "BoardUnavailable", "PlannerLost"]
