"""The ``coordinator`` consumer group on the input streams (DESIGN §5.1-5.2).

Creation is idempotent; reads, claims and consumer pruning are fenced Lua scripts, so only
the current leader under its epoch moves entries. Replies are parsed from the scripts' raw
arrays (never redis-py's dict parsing) so every entry keeps its fields in order, with
duplicates: a dead letter must carry the entry exactly as the producer wrote it.

Entries are plain tuples (:class:`StreamEntry`) because the leader handles hundreds of
thousands per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

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
        self._read = redis.register_script(scripts.READ_FENCED)
        self._claim = redis.register_script(scripts.CLAIM_FENCED)
        self._prune = redis.register_script(scripts.PRUNE_CONSUMERS)

    async def ensure(self) -> None:
        """Create the group on both input streams (and the streams) unless they exist.

        A new group starts at ``0`` so that entries written before the first coordinator
        ever ran are applied too.
        """
        await ensure_group(self.redis, self.keys)

    async def read(
        self,
        streams: Sequence[int],
        count: int,
        after: Sequence[bytes] | None = None,
    ) -> list[list[StreamEntry]] | Fenced:
        """Take up to ``count`` new entries from each of ``streams``, if still leader.

        With ``after`` (the last id seen on each stream, aligned with ``streams``) our own
        pending entries beyond those ids come first: that recovers a reply lost in transit.
        Returns one list per input stream (all of them, empty when not read), in id order.
        """
        names = [self.streams[i] for i in streams]
        args: list[bytes | str | int] = [
            self.owner,
            self.epoch,
            GROUP,
            count,
            1 if after is not None else 0,
        ]
        if after is not None:
            args.extend(after)
        reply = await self._read(keys=[self.keys.leader, self.keys.epoch, *names], args=args)
        if not isinstance(reply, list) or not reply:
            raise ScriptError(f"read script answered {reply!r}")
        if int(reply[0]) == 0:
            return FENCED
        out: list[list[StreamEntry]] = [[] for _ in self.streams]
        # History (already delivered to us once) first: it is older than anything new.
        self._collect(reply[1], out, deliveries=2)
        self._collect(reply[2], out, deliveries=1)
        return out

    def _collect(self, reply: object, out: list[list[StreamEntry]], deliveries: int) -> None:
        if not reply:
            return
        if not isinstance(reply, list):
            raise ScriptError(f"read script answered {reply!r}")
        index = self._index
        for name, entries in reply:
            i = index[name]
            bucket = out[i]
            for entry_id, fields in entries:
                bucket.append(StreamEntry(i, entry_id, fields, deliveries))

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
    """``b"<ms>-<seq>"`` as a sortable pair of ints."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq)
