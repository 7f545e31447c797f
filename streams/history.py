"""Reading recorded entries of a stream by id range (paged XRANGE), for replay and the CLI."""

from __future__ import annotations

from functools import partial
from typing import cast

from streams.connection import Client
from streams.replies import Entry, text
from streams.retry import call

PAGE = 1000


async def read_page(
    client: Client, key: str, low: str, high: str = "+", *, count: int | None = PAGE
) -> list[Entry]:
    """Entries of ``key`` with ids from ``low`` to ``high`` (``(`` excludes), at most ``count``."""
    return cast(list[Entry], await client.xrange(key, min=low, max=high, count=count))


async def read_last(client: Client, key: str, count: int) -> list[Entry]:
    """The last ``count`` entries of ``key``, oldest first."""
    page = cast(list[Entry], await client.xrevrange(key, count=count))
    return page[::-1]


async def read_all(
    client: Client, key: str, low: str, high: str = "+", *, what: str, deadline_s: float
) -> list[Entry]:
    """Every entry of ``key`` between ``low`` and ``high``, one retried call per page."""
    entries: list[Entry] = []
    while True:
        page = await call(
            partial(read_page, client, key, low, high), what=what, deadline_s=deadline_s
        )
        entries.extend(page)
        if len(page) < PAGE:
            return entries
        low = "(" + text(page[-1][0])


async def server_time_ms(client: Client) -> int:
    """The Redis server's clock in milliseconds (one round trip; run it under ``call``)."""
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000
