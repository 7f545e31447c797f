"""The leader's upkeep of the input group: taking over earlier leaders' pending entries,
pruning their empty consumers, and trimming acknowledged input by the retention.

Each step is fenced: it returns False (or None) as soon as a command finds the lease lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from schemas.errors import GroupMissing
from streams.commit import Fenced
from streams.group import ZERO_ID, ConsumerGroup
from workers.coordinator.intake import Intake

# The pipeline's logger: these lines are steps of its term (operators and tests filter on it).
log = logging.getLogger("workers.coordinator.pipeline")

T = TypeVar("T")


class Io(Protocol):
    """Runs one Redis operation under the retry policy (the pipeline's ``_io``)."""

    def __call__(self, op: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        """Run ``op``, named ``what`` in logs and errors."""
        ...


async def claim_pending(
    io: Io,
    group: ConsumerGroup,
    intake: Intake,
    *,
    count: int,
    epoch: int,
    on_claimed: Callable[[int], None],
) -> bool:
    """Take every entry pending in the group, in id order per stream; prune consumers.

    ``on_claimed`` gets the number of entries taken over; False when fenced.
    """
    for stream in range(len(intake.buffers)):
        cursor: bytes | None = ZERO_ID
        while cursor is not None:
            cursor = await _claim_page(io, group, intake, stream, cursor, count=count)
            if cursor == b"":
                log.warning("fenced while claiming pending entries epoch=%s", epoch)
                return False
    claimed = sum(len(buf) for buf in intake.buffers)
    on_claimed(claimed)
    if claimed or intake.orphans:
        log.warning(
            "claimed %s pending entries of earlier leaders (%s deleted while pending) epoch=%s",
            claimed,
            len(intake.orphans),
            epoch,
        )
    pruned = await io(group.prune, "prune consumers")
    if isinstance(pruned, Fenced):
        return False
    if pruned:
        log.info("deleted %s empty consumers of earlier leaders", pruned)
    intake.seen = await io(group.last_delivered, "read group position")
    return True


async def _claim_page(
    io: Io, group: ConsumerGroup, intake: Intake, stream: int, cursor: bytes, *, count: int
) -> bytes | None:
    """Claim one page; the next cursor, None when done, ``b""`` when fenced."""
    try:
        page = await io(lambda: group.claim(stream, cursor, count), "claim")
    except GroupMissing:
        # The stream was deleted under a starting leader: its pending entries went with
        # it, so there is nothing left to claim; the group is made again for the reads.
        log.warning("consumer group vanished while claiming (stream deleted?); recreating it")
        await io(group.ensure, "create group")
        return None
    if isinstance(page, Fenced):
        return b""
    intake.add_claimed(stream, page.entries, page.deleted)
    return None if page.done else page.cursor


async def trim_input(io: Io, group: ConsumerGroup, *, retention_ms: int, epoch: int) -> bool:
    """Bound the input streams by the retention; False when fenced."""
    removed = await io(lambda: group.trim(retention_ms), "trim")
    if isinstance(removed, Fenced):
        return False
    if removed:
        log.info(
            "trimmed %s acked input entries older than %sms epoch=%s",
            removed,
            retention_ms,
            epoch,
        )
    return True
