"""The ``coordinator`` consumer group on the input streams (DESIGN §5.1-5.2).

Creation is idempotent; reads, claims and consumer pruning are fenced, so only the current
leader under its epoch moves entries: claims and pruning are Lua scripts, and a read is one
MULTI/EXEC in which a Lua fence check creates the guard stream without which the native
XREADGROUP that follows cannot read (see ``streams/lua/read_guard.lua``). Replies are kept as the
raw arrays Redis sent (never redis-py's dict parsing) so every entry keeps its fields in
order, with duplicates: a dead letter must carry the entry exactly as the producer wrote it.

Entries are plain tuples (:class:`StreamEntry`) because the leader handles hundreds of
thousands per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex

from schemas.errors import ScriptError
from streams import scripts
from streams.commit import FENCED, Fenced
from streams.keys import GROUP, Keys

ZERO_ID = b"0-0"


class StreamEntry(NamedTuple):
    """One entry of an input stream, as delivered to the leader.

    ``stream`` indexes :attr:`Keys.input_streams`; ``fields`` is the flat
    ``[field, value, ...]`` list exactly as Redis holds it, or None when the entry was
    deleted from the stream while it was pending; ``deliveries`` is Redis's delivery count.
    """

    stream: int
    entry_id: bytes
    fields: list[bytes] | None
    deliveries: int


RawEntry = list[Any]
"""``[entry_id, fields]`` exactly as Redis replied (fields None if deleted while pending)."""


class RawRead(msgspec.Struct, frozen=True):
    """One fenced read: each input stream's entries in id order, the redelivered ids, and
    the server's clock (ms) in the same atomic step (what entry times are judged against)."""

    entries: list[list[RawEntry]]
    redelivered: list[list[bytes]]
    server_ms: int | None = None


class ClaimPage(msgspec.Struct, frozen=True):
    """One XAUTOCLAIM step: the claimed entries in id order and where to continue."""

    cursor: bytes
    entries: list[StreamEntry]
    deleted: list[bytes]

    @property
    def done(self) -> bool:
        """True when the scan of the pending list has wrapped around."""
        return self.cursor == ZERO_ID


class ConsumerGroup:
    """The group as one leader term (owner + epoch) sees it."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, owner: str, epoch: int) -> None:
        self.redis = redis
        self.keys = keys
        self.owner = owner
        self.epoch = epoch
        self.streams = keys.input_streams
        self._index = {name.encode(): i for i, name in enumerate(self.streams)}
        # Same connections, but XREADGROUP replies stay raw arrays (redis-py would turn
        # each entry's fields into a dict, losing their order and any duplicates).
        self._raw = aioredis.Redis(connection_pool=redis.connection_pool)
        self._raw.set_response_callback("XREADGROUP", _raw_reply)
        self._guard = keys.read_guard(owner)
        self._guard_sha: str | None = None  # read_guard, once loaded on the server
        self._claim = scripts.register(redis, "claim")
        self._prune = scripts.register(redis, "prune")
        self._trim = scripts.register(redis, "trim_input")

    async def ensure(self) -> None:
        """Create the group on both input streams (and the streams) unless they exist.

        A new group starts at ``0`` so that entries written before the first coordinator
        ever ran are applied too.
        """
        await ensure_group(self.redis, self.keys)

    async def read_raw(
        self,
        streams: Sequence[int],
        count: int,
        after: Sequence[bytes] | None = None,
    ) -> RawRead | Fenced:
        """Take up to ``count`` new entries from each of ``streams``, if still leader.

        With ``after`` (the last id seen on each stream, aligned with ``streams``) our own
        pending entries beyond those ids come first: that recovers a reply lost in transit;
        their ids are listed in :attr:`RawRead.redelivered`. Entries stay the ``[id,
        fields]`` lists Redis sent (the hot path allocates nothing per entry).
        """
        names = [self.streams[i] for i in streams]
        sha = self._guard_sha
        if sha is None:
            sha = self._guard_sha = await scripts.load(self.redis, "read_guard")
        replies = await self._fenced_read(sha, names, count, after)
        if isinstance(replies[0], rex.NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH); the failed guard made the
            # whole read take nothing, so loading again and retrying once is safe.
            sha = self._guard_sha = await scripts.load(self.redis, "read_guard")
            replies = await self._fenced_read(sha, names, count, after)
        if isinstance(replies[0], Exception):
            raise replies[0]
        if int(replies[0]) == 0:
            return FENCED
        for reply in replies[1:-1]:
            if isinstance(reply, Exception):
                raise reply
        history = replies[2] if after is not None else None
        new = replies[-2]
        result = RawRead(
            entries=[[] for _ in self.streams],
            redelivered=[[] for _ in self.streams],
            server_ms=_time_ms(replies[1]),
        )
        # History (already delivered to us once) first: it is older than anything new.
        for name, entries in _streams_of(history):
            i = self._index.get(name)
            if i is None:  # the guard stream, listed empty in a history read
                continue
            result.entries[i].extend(entries)
            result.redelivered[i].extend(entry[0] for entry in entries)
        for name, entries in _streams_of(new):
            result.entries[self._index[name]].extend(entries)
        return result

    async def _fenced_read(
        self, sha: str, names: list[str], count: int, after: Sequence[bytes] | None
    ) -> list[Any]:
        """One MULTI/EXEC: the guard script, the server's TIME, the history read (with
        ``after``), the new read, the guard's deletion; replies (errors included) in that
        order."""
        guard = self._guard
        read = ["XREADGROUP", "GROUP", GROUP, self.owner, "COUNT", count, "STREAMS", guard, *names]
        async with self._raw.pipeline(transaction=True) as pipe:
            pipe.evalsha(
                sha,
                3,
                self.keys.leader,
                self.keys.epoch,
                guard,
                self.owner,
                self.epoch,
                GROUP,
            )
            pipe.execute_command("TIME")
            if after is not None:
                pipe.execute_command(*read, "0", *after)
            pipe.execute_command(*read, *([">"] * (len(names) + 1)))
            pipe.delete(guard)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def claim(self, stream: int, cursor: bytes, count: int) -> ClaimPage | Fenced:
        """Claim up to ``count`` pending entries of ``stream`` (any consumer) from ``cursor``."""
        reply = await self._claim(
            keys=[self.keys.leader, self.keys.epoch, self.streams[stream]],
            args=[self.owner, self.epoch, GROUP, cursor, count],
        )
        if not isinstance(reply, list) or not reply:
            raise ScriptError(f"claim script answered {reply!r}")
        if int(reply[0]) == 0:
            return FENCED
        _, next_cursor, entries, deliveries, deleted = reply
        claimed = [
            StreamEntry(stream, entry_id, fields, int(n))
            for (entry_id, fields), n in zip(entries, deliveries, strict=True)
        ]
        return ClaimPage(cursor=next_cursor, entries=claimed, deleted=list(deleted))

    async def prune(self) -> int | Fenced:
        """Delete every other consumer of the group that holds no pending entry."""
        reply = await self._prune(
            keys=[self.keys.leader, self.keys.epoch, *self.streams],
            args=[self.owner, self.epoch, GROUP],
        )
        if not isinstance(reply, list) or not reply:
            raise ScriptError(f"prune script answered {reply!r}")
        if int(reply[0]) == 0:
            return FENCED
        return int(reply[1])

    async def trim(self, retention_ms: int) -> int | Fenced:
        """Drop input entries older than ``retention_ms`` that every group has acked."""
        reply = await self._trim(
            keys=[self.keys.leader, self.keys.epoch, *self.streams],
            args=[self.owner, self.epoch, retention_ms],
        )
        if not isinstance(reply, list) or not reply:
            raise ScriptError(f"trim script answered {reply!r}")
        if int(reply[0]) == 0:
            return FENCED
        return int(reply[1])

    async def last_delivered(self) -> list[bytes]:
        """The group's last-delivered id on each input stream (``0-0`` if none)."""
        return await last_delivered(self.redis, self.keys)

    async def wait(self, after: Sequence[bytes], block_ms: int) -> bool:
        """Block up to ``block_ms`` for an entry after ``after`` on any input stream.

        A plain XREAD (not the group): it takes nothing, it only wakes the leader. Keep
        ``block_ms`` short: cancelling a long blocking call has been seen to be ignored.
        """
        reply = await self.redis.xread(
            dict(zip(self.streams, after, strict=True)), count=1, block=max(1, block_ms)
        )
        return bool(reply)


def _raw_reply(response: object, **_: object) -> object:
    return response


def _time_ms(reply: Any) -> int:
    """A TIME reply (seconds, microseconds; parsed by redis-py or raw) in milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _streams_of(reply: Any) -> Iterable[tuple[bytes, list[RawEntry]]]:
    """``(stream, entries)`` pairs of an XREADGROUP reply: a map in RESP3, pairs in RESP2."""
    if not reply:
        return ()
    if isinstance(reply, dict):
        return reply.items()
    return ((name, entries) for name, entries in reply)


async def ensure_group(redis: aioredis.Redis, keys: Keys) -> None:
    """Create group ``coordinator`` at ``0`` on both input streams (MKSTREAM); idempotent."""
    for stream in keys.input_streams:
        try:
            await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except rex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def last_delivered(redis: aioredis.Redis, keys: Keys) -> list[bytes]:
    """The group's last-delivered id on each input stream (``0-0`` if no group yet)."""
    out = []
    for stream in keys.input_streams:
        found = ZERO_ID
        try:
            groups = await redis.xinfo_groups(stream)
        except rex.ResponseError:
            groups = []
        for group in groups:
            name = group["name"]
            if name in (GROUP, GROUP.encode()):
                value = group["last-delivered-id"]
                found = value if isinstance(value, bytes) else str(value).encode()
        out.append(found)
    return out


def split_id(entry_id: bytes) -> tuple[int, int]:
    """``b"<ms>-<seq>"`` as a sortable pair of exact ints (parts up to 2^64-1 included)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)
