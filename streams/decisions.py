"""Reading ``NS:decisions``: plainly (a range, the last N, following from an id) or through
a consumer group of the reader's own (the mirror, an executor), with pending entries
redelivered after a crash and acks once handled.

Every method is one round trip (run it under :func:`streams.connection.call`); Redis errors
come out translated (:mod:`streams.errors`), e.g. :class:`~schemas.errors.GroupMissing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import redis.exceptions as rex

from streams.connection import Client
from streams.errors import translated
from streams.history import read_all, read_last, read_page
from streams.keys import Keys
from streams.replies import Entry

GroupEntry: TypeAlias = tuple[bytes, dict[bytes, bytes] | None]
"""A decision read through a group: id and fields (None if trimmed while pending)."""


class DecisionsReader:
    """Reads the decisions of one namespace; ``group``/``consumer`` for the group mode."""

    def __init__(
        self, client: Client, keys: Keys, *, group: str | None = None, consumer: str | None = None
    ) -> None:
        self.client = client
        self.key = keys.decisions
        self.group = group
        self.consumer = consumer
        # Own pending entries (a crash's unacked batch) go first, until a read finds none.
        self._pending = True

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

    # -- group mode -----------------------------------------------------------------------

    def _names(self) -> tuple[str, str]:
        if self.group is None or self.consumer is None:
            raise TypeError("DecisionsReader: group mode needs group= and consumer=")
        return self.group, self.consumer

    async def ensure_group(self, start: str = "0") -> None:
        """Create the group at ``start`` (``0``: every decision ever written); idempotent."""
        group, _ = self._names()
        with translated():
            try:
                await self.client.xgroup_create(self.key, group, id=start, mkstream=True)
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def redeliver(self) -> None:
        """Make the next :meth:`read` start again with this consumer's pending entries."""
        self._pending = True

    async def read(self, *, count: int = 100, block_ms: int | None = 100) -> list[GroupEntry]:
        """This consumer's pending entries first, then new ones (waited for up to ``block_ms``).

        Pending entries come back on every read until acked (:meth:`ack`): handle, ack,
        read again; once a read finds none pending, reads take new entries only.
        """
        group, consumer = self._names()
        while True:
            start = "0" if self._pending else ">"
            with translated():
                reply: Any = await self.client.xreadgroup(
                    group,
                    consumer,
                    {self.key: start},
                    count=count,
                    block=None if self._pending else block_ms,
                )
            entries = [(i, fields or None) for _, page in reply or [] for i, fields in page]
            if entries or not self._pending:
                return entries
            self._pending = False

    async def claim_idle(self, min_idle_ms: int, count: int = 100) -> list[bytes]:
        """Take over entries other consumers left pending for ``min_idle_ms``; their ids.

        Claimed entries are read by the next :meth:`read` (it redelivers first).
        """
        group, consumer = self._names()
        with translated():
            reply: Any = await self.client.xautoclaim(
                self.key, group, consumer, min_idle_time=min_idle_ms, start_id="0",
                count=count, justid=True,
            )  # fmt: skip
        claimed = list(reply or [])  # with JUSTID redis-py answers the claimed ids only
        if claimed:
            self._pending = True
        return claimed

    async def ack(self, ids: Sequence[bytes | str]) -> int:
        """Acknowledge handled entries; how many were pending."""
        group, _ = self._names()
        if not ids:
            return 0
        with translated():
            return int(await self.client.xack(self.key, group, *ids))
