"""Appending entries to Redis streams (DESIGN §3): producers' side of the input streams."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from schemas.codec import DATA_FIELD
from streams.connection import call


async def append_raw(
    client: aioredis.Redis,
    entries: Sequence[tuple[str, bytes]],
    *,
    what: str,
    deadline_s: float,
) -> None:
    """Append each ``(stream key, data value)`` unchanged as one entry, all or none.

    The values are not checked (the leader dead-letters what it cannot decode). Retried
    with the shared policy; :class:`~schemas.errors.RedisUnavailable` after ``deadline_s``.
    """

    async def op() -> None:
        # MULTI/EXEC: a batch lands whole or not at all, so a retry after a lost
        # connection duplicates at most the batches whose reply was lost.
        async with client.pipeline(transaction=True) as pipe:
            for key, value in entries:
                pipe.xadd(key, {DATA_FIELD: value})
            await pipe.execute()

    await call(op, what=what, deadline_s=deadline_s)
