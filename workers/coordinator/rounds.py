"""Applied rounds waiting for their commit, and when one is carried into the next commit.

Every commit writes the complete policy state along with its acks (DESIGN §5). With many
observers that state is ~0.5 MB, and while a backlog drains one read at a time, encoding,
sending and storing it once per read is most of what an entry costs the leader and Redis
(``bench.hostile``: 1,000 observers). So while a backlog drains and the state is large, up
to :data:`MAX_ROUNDS` rounds share one commit and the state is written once for them all.

Nothing else changes. A round that plans a decision is committed at once, with whatever it
carries, so decisions are not delayed; acks and the state still land in one fenced commit,
so a crash re-applies from the last commit as before (at most the carried rounds); a term
that ends drops carried rounds like any applied round not yet committed. Memory: a carried
round holds its acks and dead letters only; a round is carried only while fewer dead letters
than a full read's worth are held, and each read is bounded (README "Memory").
"""

from __future__ import annotations

import msgspec

from schemas.state import RegionState
from streams.commit import Batch
from workers.policy.apply import Outcome

LARGE_STATE_BYTES = 64 * 1024
"""A state this large is written once for up to :data:`MAX_ROUNDS` backlog rounds."""
MAX_ROUNDS = 8
"""The most rounds one commit holds."""


class Work(msgspec.Struct):
    """One or more applied rounds before their commit (``verdicts``: each region's state and
    down reason in the state this batch commits)."""

    batch: Batch = msgspec.field(default_factory=Batch)
    out: Outcome = msgspec.field(default_factory=Outcome)
    ticked: bool = False
    verdicts: dict[str, tuple[RegionState, str | None]] = msgspec.field(default_factory=dict)
    rounds: int = 0


def carries(work: Work, entries: int, full: int, state_bytes: int) -> bool:
    """Whether ``work``, whose last round applied ``entries`` (a full read is ``full``), waits
    for the next round instead of being committed now."""
    return (
        not work.out.planned
        and entries >= max(1, full // 2)  # a backlog: the next read is on its way
        and state_bytes >= LARGE_STATE_BYTES
        and work.rounds < MAX_ROUNDS
        # Dead letters keep (parts of) their entries: a commit holds at most about two
        # reads' worth of them, as a commit of single rounds of bad entries might.
        and len(work.out.letters) < full
    )
