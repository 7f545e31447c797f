"""FastStream's Redis Streams batch subscriber over the same stream: a peer, not a ceiling.

One :class:`faststream.redis.RedisBroker` with ``StreamSub(batch=True, max_records=1000)``
in a consumer group of its own; each entry's ``data`` is decoded with msgspec into
:class:`schemas.events.HealthEvent` by a custom decoder, and FastStream acknowledges each
batch after the handler returns (its default). The entries are plain ``data`` fields, not
FastStream's own envelope, so a :class:`MessageFormat` hands FastStream the ``data`` value;
FastStream still runs its own JSON parse of every entry before the decoder (its batch path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.parser.message import MessageFormat

from bench.baselines import group_name
from schemas.events import HealthEvent

MAX_RECORDS = 1000
_DECODER = msgspec.json.Decoder(HealthEvent)


class _PlainData(MessageFormat):
    """Entries written by other producers: one ``data`` field, no FastStream headers."""

    @classmethod
    def parse(cls, data: Any) -> tuple[bytes, dict[str, Any]]:
        """The ``data`` value as the body, no headers."""
        return data[b"data"], {}


def _decode(message: Any) -> list[HealthEvent]:
    return [_DECODER.decode(fields[b"data"]) for fields in message.raw_message["data"]]


async def faststream(url: str, stream: str, n: int, batch: int = MAX_RECORDS) -> float:
    """Drain ``n`` entries of ``stream`` with a FastStream batch subscriber; events/s."""
    r = aioredis.Redis.from_url(url)
    group = group_name("faststream")
    # From the start of the stream: FastStream itself would create the group at ``$``.
    await r.xgroup_create(stream, group, id="0")
    logger = logging.getLogger("bench.faststream")
    logger.setLevel(logging.WARNING)
    broker = RedisBroker(url, logger=logger)
    done = asyncio.Event()
    got = 0

    @broker.subscriber(
        stream=StreamSub(stream, group=group, consumer="c", batch=True, max_records=batch),
        decoder=_decode,
        message_format=_PlainData,
    )
    async def handle(events: Any) -> None:
        nonlocal got
        got += len(events)
        if got >= n:
            done.set()

    start = time.perf_counter()
    await broker.start()
    await asyncio.wait_for(done.wait(), timeout=600)
    # FastStream acks a batch after its handler returns: wait for the last ack to land.
    while (await r.xpending(stream, group))["pending"]:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    # Stopping cuts the subscriber's next blocking read short, which FastStream logs as a
    # fetch error with a traceback: nothing to report once the figure is taken.
    logger.setLevel(logging.CRITICAL)
    await broker.stop()
    await r.xgroup_destroy(stream, group)
    await r.aclose()
    assert got == n, (got, n)
    return n / elapsed
