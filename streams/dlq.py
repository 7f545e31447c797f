"""The dead-letter stream ``NS:dlq`` as operators handle it: read, replay, drop.

Replay is ``streams/lua/dlq_replay.lua``: the original fields are appended back onto their
source stream and the dead letter deleted in one atomic step, and only if it is still there
with the same ``data``, so two operators replaying at once cannot duplicate it. Each
function is one round trip (run it under :func:`streams.retry.call`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams import scripts
from streams.connection import Client
from streams.history import read_page
from streams.keys import Keys
from streams.replies import Entry, text


async def read_dead_letters(
    client: Client, keys: Keys, low: str = "-", high: str = "+", *, count: int | None = None
) -> list[Entry]:
    """Dead-letter entries with ids from ``low`` to ``high``, oldest first (all if no count)."""
    return await read_page(client, keys.dlq, low, high, count=count)


async def replay_dead_letter(
    client: Client,
    keys: Keys,
    dlq_id: str,
    *,
    data: bytes,
    stream: str,
    fields: Sequence[tuple[bytes, bytes]],
) -> tuple[bool, str]:
    """Move dead letter ``dlq_id`` back onto ``stream`` as ``fields`` if its ``data`` is
    unchanged: ``(True, new id)``, or ``(False, "missing" | "changed")``."""
    script = scripts.register(client, "dlq_replay")
    args: list[str | bytes] = [dlq_id, data, *[x for pair in fields for x in pair]]
    reply: list[Any] = await script(keys=[keys.dlq, stream], args=args)
    return int(reply[0]) == 1, text(reply[1])


async def drop_dead_letters(client: Client, keys: Keys, ids: Sequence[str]) -> list[bool]:
    """Delete the given dead letters in one round trip; per id, whether it existed."""
    async with client.pipeline(transaction=False) as pipe:
        for i in ids:
            pipe.xdel(keys.dlq, i)
        return [bool(n) for n in await pipe.execute()]
