"""A MULTI ... EXEC sent in one write, its replies read under one timeout: :func:`transaction`.

The leader's fenced read (:mod:`streams.group`) is its hottest call. redis-py's
transaction pipeline builds a command stack, and arms and cancels a timer for each of the
replies (``+OK``, one ``+QUEUED`` per command, then EXEC's array): about 60 us of the
leader's CPU per read, a third of what the read cost the client. Here the commands are
packed and written at once, and one socket timeout bounds reading all the replies. Replies
stay raw (no response callbacks); an error inside EXEC's array stays in its place, as an
exception instance, for the caller to judge.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex

from streams.routing import MovedAway


async def transaction(redis: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` (``MULTI`` first, ``EXEC`` last) and return EXEC's replies.

    A ``MOVED`` (a Redis Cluster slot that moved: nothing ran) sends the transaction once
    more, to the owner the connection now follows, as redis-py's own retry would.
    """
    try:
        return await _once(redis, commands)
    except MovedAway:
        return await _once(redis, commands)


async def _once(redis: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        async with asyncio.timeout(conn.socket_timeout):
            for _ in commands[:-1]:  # +OK, then +QUEUED for each command
                await conn.read_response(timeout=math.inf)
            replies: list[Any] = await conn.read_response(timeout=math.inf)
    except TimeoutError:
        # Any failure drops the connection: it may still hold replies not yet read.
        await conn.disconnect(nowait=True)
        raise rex.TimeoutError("Timeout reading a transaction's replies") from None
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        await pool.release(conn)
    return replies
