"""Reading ``NS:decisions``: plainly (:class:`DecisionsReader`: a range, the last N,
following from an id) or through a consumer group of the reader's own
(:class:`DecisionsGroup`: the mirror, an executor), at least once and in order.

A plain read is one round trip (run it under :func:`streams.retry.call`); Redis errors
come out translated (:mod:`streams.errors`). Unlike the leader's fenced group on the input
streams, any number of readers share one decisions group: a reader gets the entries it
holds and has not acked again, in order, before anything newer, and entries another
consumer of the group left pending (a dead reader) are claimed once idle for
``claim_idle_ms``. Group calls retry Redis errors themselves, up to ``deadline_s``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeAlias

import redis.exceptions as rex

from streams.connection import Client
from streams.errors import translated
from streams.history import read_all, read_last, read_page
from streams.keys import Keys
from streams.replies import Entry
from streams.retry import call

Decision: TypeAlias = tuple[bytes, dict[bytes, bytes] | None]
"""A decision read through a group: id and fields (None if trimmed while pending)."""

log = logging.getLogger(__name__)


class DecisionsReader:
    """Reads the decisions of one namespace, without a group."""

    def __init__(self, client: Client, keys: Keys) -> None:
        self.client = client
        self.key = keys.decisions

    # -- plain reads ----------------------------------------------------------------------

    async def last(self, count: int) -> list[Entry]:
        """The last ``count`` decisions, oldest first."""
        with translated():
            return await read_last(self.client, self.key, count)

    async def range(self, start: str = "-", end: str = "+", *, count: int = 1000) -> list[Entry]:
        """Up to ``count`` decisions with ids from ``start`` to ``end`` (inclusive)."""
        with translated():
            return await read_page(self.client, self.key, start, end, count=count)

    async def read_all(self, after: str | None = None, *, deadline_s: float) -> list[Entry]:
        """Every decision after id ``after`` (all if None), paged, each page retried."""
        low = "-" if after is None else f"({after}"
        with translated():
            return await read_all(self.client, self.key, low, what="read", deadline_s=deadline_s)

    async def follow(self, after: str, *, count: int = 100, block_ms: int = 200) -> list[Entry]:
        """Decisions after id ``after``, waiting up to ``block_ms`` for one (keep it short:
        a cancel during a long blocking call has been seen to be ignored)."""
        with translated():
            reply: Any = await self.client.xread({self.key: after}, count=count, block=block_ms)
        return [entry for _, entries in reply or [] for entry in entries]


class DecisionsGroup:
    """One consumer of a named group on ``NS:decisions``, starting from the first entry."""

    def __init__(
        self,
        redis: Client,
        keys: Keys,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int,
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
            with translated():
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

        async def ack() -> None:
            with translated():
                await self.redis.xack(self.stream, self.group, *ids)

        await call(ack, what=f"{self.group} ack", deadline_s=self.deadline_s)
        self._unacked.difference_update(ids)

    def settled(self, ids: list[bytes]) -> None:
        """Note that ``ids`` were acked by a script of the caller's (an executor's settle)."""
        self._unacked.difference_update(ids)

    async def _read(self, start: str, count: int, block_ms: int | None) -> list[Decision]:
        async def read() -> Any:
            with translated():
                return await self.redis.xreadgroup(
                    self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
                )

        reply = await call(read, what=f"{self.group} read", deadline_s=self.deadline_s)
        if not reply:
            return []
        _stream, entries = reply[0]
        out = [(entry_id, fields or None) for entry_id, fields in entries]
        self._unacked.update(entry_id for entry_id, _ in out)
        return out

    async def _claim(self, count: int) -> bool:
        """Take over entries another consumer left pending for ``claim_idle_ms``."""

        async def claim() -> Any:
            with translated():
                return await self.redis.xautoclaim(
                    self.stream,
                    self.group,
                    self.consumer,
                    min_idle_time=self.claim_idle_ms,
                    start_id="0",
                    count=count,
                    justid=True,
                )

        reply = await call(claim, what=f"{self.group} claim", deadline_s=self.deadline_s)
        claimed = list(reply or [])  # with JUSTID redis-py answers the claimed ids only
        if claimed:
            log.warning(
                "%s %s: claimed %d idle pending entries", self.group, self.consumer, len(claimed)
            )
        return bool(claimed)
