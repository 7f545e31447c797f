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

import asyncio
import hashlib
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex

from schemas.codec import MAX_DATA_BYTES, Oversize
from schemas.errors import ScriptError
from streams import scripts
from streams.commit import FENCED, Fenced
from streams.keys import GROUP, Keys
from streams.transaction import transaction

ZERO_ID = b"0-0"
# At most about this many bytes of entries per stream in one read (bounds the leader's
# memory with large-but-allowed entries); a read always takes at least one entry.
READ_BUDGET_BYTES = 4 * 1024 * 1024
# Slice size when hashing an oversize entry (its bytes never travel whole). Each slice is
# one script call that loads the entry inside Redis, so slices are large: a 512 MB value
# takes 16 calls, and the leader holds at most two slices' worth at once.
CHUNK_BYTES = 32 * 1024 * 1024
# The idle leader's longest pause between two looks for new input (its added latency):
# 1 ms for the first WAIT_POLL_BRISK_MS of a wait (the gaps of a steady input stream),
# then backing off to WAIT_POLL_MAX_MS (a quiet fleet polls a few hundred times a second).
WAIT_POLL_BRISK_MAX_MS = 1.0
WAIT_POLL_BRISK_MS = 20.0
WAIT_POLL_MAX_MS = 4.0


class StreamEntry(NamedTuple):
    """One entry of an input stream, as delivered to the leader.

    ``stream`` indexes :attr:`Keys.input_streams`; ``fields`` is the flat
    ``[field, value, ...]`` list exactly as Redis holds it, an :class:`Oversize` summary
    when the entry is over the size limit, or None when the entry was deleted from the
    stream while it was pending; ``deliveries`` is Redis's delivery count.
    """

    stream: int
    entry_id: bytes
    fields: list[bytes] | Oversize | None
    deliveries: int


RawEntry = list[Any]
"""``[entry_id, fields]`` as Redis replied (fields None if deleted while pending, an
:class:`Oversize` if over the size limit)."""


class RawRead(msgspec.Struct, frozen=True):
    """One fenced read: each input stream's entries in id order, the redelivered ids, the
    server's clock (ms) in the same atomic step (what entry times are judged against), and
    the streams whose read the byte budget cut short (more may follow at once)."""

    entries: list[list[RawEntry]]
    redelivered: list[list[bytes]]
    server_ms: int | None = None
    cut: list[bool] | None = None


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

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        owner: str,
        epoch: int,
        *,
        max_entry_bytes: int = MAX_DATA_BYTES,
        budget_bytes: int = READ_BUDGET_BYTES,
    ) -> None:
        self.redis = redis
        self.max_entry_bytes = max_entry_bytes
        self.budget_bytes = budget_bytes
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
        self._chunk = scripts.register(redis, "entry_chunk")
        self._waiting = scripts.register(redis, "input_waiting")

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
        guard = replies[0]
        if isinstance(guard, Exception):
            raise guard
        if guard == 0:
            return FENCED
        server_ms = _time_ms(replies[1])
        result = RawRead(
            entries=[[] for _ in self.streams],
            redelivered=[[] for _ in self.streams],
            server_ms=server_ms,
            cut=[False] * len(self.streams),
        )
        if isinstance(guard, list):
            # The script served the read itself (oversize or over-budget entries, or a
            # retry); the native read in the transaction took nothing (NOGROUP).
            await self._served(guard, [self._index[n.encode()] for n in names], result)
            return result
        for reply in replies[2:-1]:
            if isinstance(reply, Exception):
                raise reply
        for name, entries in _streams_of(replies[-2]):
            result.entries[self._index[name]].extend(entries)
        return result

    async def _served(self, reply: list[Any], indexes: list[int], result: RawRead) -> None:
        """Fill ``result`` from the guard script's own read: history first, then new."""
        _, history, new, more = reply
        assert result.cut is not None
        for k, i in enumerate(indexes):
            stream = self.streams[i]
            for entry in history[k]:
                result.entries[i].append(await self._entry(stream, entry))
                result.redelivered[i].append(entry[0])
            for entry in new[k]:
                result.entries[i].append(await self._entry(stream, entry))
            result.cut[i] = bool(int(more[k]))

    async def _entry(self, stream: str, entry: list[Any]) -> RawEntry:
        """``[id, fields]``, with an oversize summary turned into an :class:`Oversize`."""
        if len(entry) == 2:
            return entry
        entry_id, cut, total = entry
        digest = await self.sha256(stream, entry_id)
        return [entry_id, Oversize(list(cut), int(total), digest)]

    async def sha256(self, stream: str, entry_id: bytes) -> str | None:
        """The SHA-256 of an entry's fields and values in order, read in slices; None if gone."""
        digest = hashlib.sha256()
        offset = 0
        while True:
            reply = await self._chunk(keys=[stream], args=[entry_id, offset, CHUNK_BYTES])
            if not reply:
                return None
            total, piece = int(reply[0]), reply[1]
            digest.update(piece)
            offset += len(piece)
            if offset >= total or not piece:
                return digest.hexdigest()

    async def _fenced_read(
        self, sha: str, names: list[str], count: int, after: Sequence[bytes] | None
    ) -> list[Any]:
        """One MULTI/EXEC: the guard script, the server's TIME, the native read (unless the
        guard serves it: always after a lost reply, ``after`` given), the guard's deletion;
        replies (errors included) in that order."""
        guard = self._guard
        mode = "new" if after is None else "history"
        commands: list[tuple[Any, ...]] = [
            ("MULTI",),
            (
                "EVALSHA",
                sha,
                3 + len(names),
                self.keys.leader,
                self.keys.epoch,
                guard,
                *names,
                self.owner,
                self.epoch,
                GROUP,
                count,
                self.max_entry_bytes,
                self.budget_bytes,
                mode,
                *(after or ()),
            ),
            ("TIME",),
        ]
        if after is None:
            commands.append(
                (
                    "XREADGROUP",
                    "GROUP",
                    GROUP,
                    self.owner,
                    "COUNT",
                    count,
                    "STREAMS",
                    guard,
                    *names,
                    *([">"] * (len(names) + 1)),
                )
            )
        commands += [("DEL", guard), ("EXEC",)]
        return await transaction(self._raw, commands)

    async def claim(self, stream: int, cursor: bytes, count: int) -> ClaimPage | Fenced:
        """Claim up to ``count`` pending entries of ``stream`` (any consumer) from ``cursor``."""
        reply = await self._claim(
            keys=[self.keys.leader, self.keys.epoch, self.streams[stream]],
            args=[self.owner, self.epoch, GROUP, cursor, count, self.max_entry_bytes],
        )
        if not isinstance(reply, list) or not reply:
            raise ScriptError(f"claim script answered {reply!r}")
        if int(reply[0]) == 0:
            return FENCED
        _, next_cursor, entries, deliveries, deleted = reply
        name = self.streams[stream]
        claimed = []
        for entry, n in zip(entries, deliveries, strict=True):
            entry_id, fields = await self._entry(name, entry)
            claimed.append(StreamEntry(stream, entry_id, fields, int(n)))
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
        """Wait up to ``block_ms`` for an entry after ``after`` on any input stream.

        Polls a script that answers yes or no (0.5 ms apart at first, then 1 ms for
        WAIT_POLL_BRISK_MS, then backing off to WAIT_POLL_MAX_MS): a blocking XREAD would
        wake the leader with the next entry itself, whole, whatever its size. It takes
        nothing; it only wakes the leader.
        """
        began = time.monotonic()
        deadline = began + block_ms / 1000
        brisk_until = began + WAIT_POLL_BRISK_MS / 1000
        pause_ms = 0.5
        while True:
            if await self._waiting(keys=self.streams, args=list(after)):
                return True
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                return False
            await asyncio.sleep(min(pause_ms / 1000, left))
            cap = WAIT_POLL_BRISK_MAX_MS if now < brisk_until else WAIT_POLL_MAX_MS
            pause_ms = min(2 * pause_ms, cap)


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
