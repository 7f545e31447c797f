"""A reader's consumer group on ``NS:decisions`` (DESIGN §9): at least once, in order.

Unlike the leader's fenced group on the input streams, any number of readers share one such
group (the Kafka mirror's is ``kafka-mirror``). A reader gets the entries it holds and has
not acked again, in order, before anything newer; entries another consumer of the group left
pending (a dead reader) are claimed once they have been idle for ``claim_idle_ms``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex

from streams.connection import call
from streams.keys import Keys

log = logging.getLogger(__name__)

Decision = tuple[bytes, dict[bytes, bytes] | None]
"""``(entry id, fields)``; fields None when the entry was trimmed away while pending."""


class DecisionsGroup:
    """One consumer of a named group on ``NS:decisions``, starting from the first entry."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int = 10000,
        deadline_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.stream = keys.decisions
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self.deadline_s = deadline_s
        self._own_pending = True  # what this consumer held before a restart comes first
        self._unacked: set[bytes] = set()
        self._next_claim = 0.0

    async def ensure(self) -> None:
        """Create the group at the start of the stream, and the stream, unless they exist."""

        async def create() -> None:
            try:
                await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        await call(create, what=f"{self.group} group create", deadline_s=self.deadline_s)

    async def read(self, count: int, block_ms: int) -> list[Decision]:
        """Up to ``count`` entries: unacked ones of this consumer first, then new ones.

        Waits up to ``block_ms`` for new entries; raises
        :class:`~schemas.errors.RedisUnavailable` when Redis does not answer.
        """
        if self._unacked:
            self._own_pending = True  # the caller gave up on them: send them again first
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
            if await self._claim(count):
                self._own_pending = True
        if self._own_pending:
            entries = await self._read("0", count, None)
            if entries:
                return entries
            self._own_pending = False
        return await self._read(">", count, block_ms)

    async def ack(self, ids: list[bytes]) -> None:
        """Mark ``ids`` done for the group; they are never delivered again."""
        await call(
            lambda: self.redis.xack(self.stream, self.group, *ids),
            what=f"{self.group} ack",
            deadline_s=self.deadline_s,
        )
        self._unacked.difference_update(ids)

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[Decision]:
        reply: Any = await call(
            lambda: self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
            ),
            what=f"{self.group} read",
            deadline_s=self.deadline_s,
        )
        if not reply:
            return []
        _stream, entries = reply[0]
        out = [(entry_id, fields or None) for entry_id, fields in entries]
        self._unacked.update(entry_id for entry_id, _ in out)
        return out

    async def _claim(self, count: int) -> bool:
        """Take over entries another consumer left pending for ``claim_idle_ms``."""
        reply: Any = await call(
            lambda: self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id="0",
                count=count,
                justid=True,
            ),
            what=f"{self.group} claim",
            deadline_s=self.deadline_s,
        )
        claimed = list(reply or [])  # with JUSTID redis-py answers the claimed ids only
        if claimed:
            log.warning(
                "%s %s: claimed %d idle pending entries", self.group, self.consumer, len(claimed)
            )
        return bool(claimed)
