"""One objective's board: the actor (`actor.Board`), a facade that journals and delegates to
its desks (`workers`, `planning`), which decide, and its books (`books`), which hold the parts
(`tasks`, `leases`, `budget`, `claim`, `roster`…) as the journal's events built them; and the
typed client every role talks to it through (`client`)."""

from coop.board.actor import Board
from coop.board.bell import Wake
from coop.board.claim import PlannerLost
from coop.board.client import BoardClient, BoardUnavailable

__all__ = ["Board", "BoardClient", "BoardUnavailable", "PlannerLost", "Wake"]
