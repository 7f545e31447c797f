"""Appending entries to a stream, as every producer does (CLI, prober, demo, bridge).

An entry is a wire value (encoded into its one ``data`` field) or fields already encoded.
These are single round trips: run them under :func:`streams.retry.call` for retries.
A retried append may land twice; a repeated ``event_id`` makes the copy a duplicate the
policy ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.codec import encode_entry
from schemas.events import AnyEntry
from streams import scripts
from streams.connection import Client
from streams.replies import text

Fields = Mapping[bytes, bytes]


def _fields(entry: AnyEntry | Fields) -> Any:
    return entry if isinstance(entry, Mapping) else encode_entry(entry)


async def append(
    client: Client, key: str, entry: AnyEntry | Fields, *, maxlen: int | None = None
) -> str:
    """XADD one entry to ``key`` (trimmed to about ``maxlen`` if given); its new id."""
    return text(await client.xadd(key, _fields(entry), maxlen=maxlen, approximate=True))


async def append_many(
    client: Client,
    entries: Sequence[tuple[str, AnyEntry | Fields]],
    *,
    maxlen: int | None = None,
) -> list[str]:
    """XADD each ``(key, entry)`` in order in one round trip; their ids."""
    async with client.pipeline(transaction=False) as pipe:
        for key, entry in entries:
            pipe.xadd(key, _fields(entry), maxlen=maxlen, approximate=True)
        return [text(i) for i in await pipe.execute()]


async def append_values(
    client: Client, field: bytes, streams: Mapping[str, Sequence[bytes]]
) -> int:
    """XADD each value as the one field ``field`` of an entry, in order per stream, all in
    one atomic script call (``streams/lua/append.lua``): one command for the whole batch,
    so the client packs one request and parses one reply. Returns the entries appended."""
    keys = list(streams)
    args: list[bytes | int] = [field]
    for values in streams.values():
        args.append(len(values))
        args.extend(values)
    added: int = await scripts.register(client, "append")(keys=keys, args=args)
    return added
