"""Ceilings for the leader pipeline: bare consumers of the same pre-filled stream.

Each reads ``NS:health`` through its own consumer group with ``XREADGROUP COUNT <batch>``,
decodes every entry's ``data`` with msgspec into :class:`schemas.events.HealthEvent`, and
acknowledges each batch; nothing else (no fence, no policy, no state, no dead letters):

* ``redis-py`` (public API): ``xreadgroup`` (redis-py turns each entry's fields into a
  dict), then one ``xack`` per batch, strictly in sequence;
* ``redis-py tuned``: the raw reply (no per-entry dicts), commands packed by hiredis, and
  the ``XACK`` of a batch sent in the same round trip as the next read;
* ``thin hiredis``: an :class:`asyncio.Protocol` with a :class:`hiredis.Reader` and
  :func:`hiredis.pack_command`, ``XACK`` sent with the next read — the least a Python
  consumer can do per batch.

FastStream, a peer rather than a ceiling, is in :mod:`bench.faststream_peer`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import hiredis
import msgspec
import redis.asyncio as aioredis

from schemas.events import HealthEvent

Baseline = Callable[[str, str, int, int], Awaitable[float]]
"""``(url, stream, n, batch) -> events/s``: drains ``n`` entries of ``stream`` once."""

_DECODER = msgspec.json.Decoder(HealthEvent)
_CONSUMER = "c"


def group_name(kind: str) -> str:
    """A consumer group name of its own for one pass (every pass reads from ``0``)."""
    return f"{kind}-{time.monotonic_ns()}"


def _entries(reply: Any) -> list[Any]:
    """The entries of a one-stream XREADGROUP reply: a map in RESP3, pairs in RESP2."""
    entries: list[Any] = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    return entries


def _decode(entries: list[Any]) -> None:
    """Decode each raw ``[id, [b"data", value]]`` entry's value into a HealthEvent."""
    decode = _DECODER.decode
    for entry in entries:
        fields = entry[1]
        if fields[0] == b"data":
            decode(fields[1])


async def redis_py(url: str, stream: str, n: int, batch: int) -> float:
    """redis-py's public API: xreadgroup, msgspec decode, one xack per batch, in sequence."""
    r = aioredis.Redis.from_url(url)
    group = group_name("public")
    await r.xgroup_create(stream, group, id="0")
    decode = _DECODER.decode
    done = 0
    start = time.perf_counter()
    while done < n:
        reply = await r.xreadgroup(group, _CONSUMER, {stream: ">"}, count=batch)
        if not reply:
            break
        entries = _entries(reply)
        for _, fields in entries:
            decode(fields[b"data"])
        await r.xack(stream, group, *[entry_id for entry_id, _ in entries])
        done += len(entries)
    elapsed = time.perf_counter() - start
    await r.xgroup_destroy(stream, group)
    await r.aclose()
    assert done == n, (done, n)
    return n / elapsed


class _HiredisPacked(aioredis.Connection):
    """A redis-py connection whose commands are packed by hiredis (C), not in Python."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """The command as one RESP buffer."""
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])  # "XGROUP CREATE": two words on the wire
        return [hiredis.pack_command(args)]


def _raw(response: object, **_: object) -> object:
    return response


async def redis_py_tuned(url: str, stream: str, n: int, batch: int) -> float:
    """redis-py tuned: raw reply, hiredis packing, XACK pipelined with the next read."""
    pool = aioredis.ConnectionPool.from_url(url, connection_class=_HiredisPacked)
    r = aioredis.Redis(connection_pool=pool)
    r.set_response_callback("XREADGROUP", _raw)
    r.set_response_callback("XACK", _raw)
    group = group_name("tuned")
    await r.xgroup_create(stream, group, id="0")
    read = ("XREADGROUP", "GROUP", group, _CONSUMER, "COUNT", batch, "STREAMS", stream, ">")
    done = acked = 0
    ids: list[bytes] = []
    start = time.perf_counter()
    while done < n:
        pipe = r.pipeline(transaction=False)
        if ids:
            pipe.execute_command("XACK", stream, group, *ids)
        pipe.execute_command(*read)
        replies = await pipe.execute()
        if ids:
            acked += replies[0]
        reply = replies[-1]
        if not reply:
            break
        entries = _entries(reply)
        _decode(entries)
        ids = [entry[0] for entry in entries]
        done += len(entries)
    acked += await r.xack(stream, group, *ids)
    elapsed = time.perf_counter() - start
    await r.xgroup_destroy(stream, group)
    await r.aclose()
    assert done == acked == n, (done, acked, n)
    return n / elapsed


class _Thin(asyncio.Protocol):
    """One Redis connection: pipelined commands out, replies parsed by hiredis, in order."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to write to."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Feed the parser; each complete reply resolves the oldest waiting command."""
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail whatever still waits."""
        while self.waiting:
            self.waiting.popleft().set_exception(exc or ConnectionError("connection closed"))

    def send(self, *commands: tuple[Any, ...]) -> list[asyncio.Future[Any]]:
        """Write the commands in one buffer; one future per reply."""
        assert self.transport is not None
        self.transport.write(b"".join(hiredis.pack_command(c) for c in commands))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self.waiting.extend(futures)
        return futures


async def thin_hiredis(url: str, stream: str, n: int, batch: int) -> float:
    """asyncio.Protocol + hiredis: read, decode, XACK sent with the next read."""
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_Thin, host, int(port))
    group = group_name("thin")
    (created,) = proto.send(("XGROUP", "CREATE", stream, group, "0"))
    await created
    read = ("XREADGROUP", "GROUP", group, _CONSUMER, "COUNT", batch, "STREAMS", stream, ">")
    done = acked = 0
    ack: asyncio.Future[Any] | None = None
    ids: list[bytes] = []
    start = time.perf_counter()
    while done < n:
        if ids:
            ack, reading = proto.send(("XACK", stream, group, *ids), read)
        else:
            (reading,) = proto.send(read)
        reply = await reading
        if ack is not None:
            acked += await ack  # answered before the read: already resolved
        if not reply:
            break
        entries = _entries(reply)
        _decode(entries)
        ids = [entry[0] for entry in entries]
        done += len(entries)
    (last,) = proto.send(("XACK", stream, group, *ids))
    acked += await last
    elapsed = time.perf_counter() - start
    (destroyed,) = proto.send(("XGROUP", "DESTROY", stream, group))
    await destroyed
    transport.close()
    assert done == acked == n, (done, acked, n)
    return n / elapsed
