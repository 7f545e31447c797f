"""A fenced group read as :class:`StreamEntry` tuples, for tests that look at entries."""

from __future__ import annotations

from collections.abc import Sequence

from streams.commit import Fenced
from streams.group import ConsumerGroup, StreamEntry


async def read_entries(
    group: ConsumerGroup, streams: Sequence[int], count: int, after: Sequence[bytes] | None = None
) -> list[list[StreamEntry]] | Fenced:
    """:meth:`ConsumerGroup.read_raw`, one list per input stream; a redelivered entry
    counts 2 deliveries (the tests redeliver at most once)."""
    got = await group.read_raw(streams, count, after)
    if isinstance(got, Fenced):
        return got
    out: list[list[StreamEntry]] = []
    for i, entries in enumerate(got.entries):
        again = set(got.redelivered[i])
        out.append([StreamEntry(i, e[0], e[1], 2 if e[0] in again else 1) for e in entries])
    return out
