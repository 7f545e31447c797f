"""Operator actions on the dead-letter stream: list, replay onto the source stream, drop.

Replay goes through the ``dlq_replay`` script, one dead letter at a time: the raw fields are
appended back onto their source stream and the dead letter deleted in one atomic step, and
only if it is still there unchanged, so two operators replaying at once cannot duplicate it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal, cast

import msgspec
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from schemas.codec import decode_entry, fields_from_raw
from schemas.errors import DecodeError
from schemas.events import DeadLetter
from streams import scripts
from streams.connection import call
from streams.keys import Keys

ReplayResult = Literal["replayed", "missing", "changed", "invalid"]


class DeadLetterRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One entry of ``NS:dlq``: the dead letter, or why it is not one."""

    id: str
    age_s: float
    letter: DeadLetter | None = None
    error: str | None = None


class ReplayOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What replaying one dead letter did."""

    id: str
    result: ReplayResult
    stream: str | None = None
    new_id: str | None = None
    reason: str | None = None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def _range(
    redis: aioredis.Redis, key: str, low: str, high: str, count: int | None
) -> Entries:
    return cast(Entries, await redis.xrange(key, min=low, max=high, count=count))


def _decode(fields: dict[bytes, bytes]) -> DeadLetter:
    letter = decode_entry(fields, stream="dlq")
    assert isinstance(letter, DeadLetter)  # the dlq stream admits nothing else
    return letter


async def list_dead_letters(
    redis: aioredis.Redis, keys: Keys, *, count: int | None, deadline_s: float
) -> list[DeadLetterRow]:
    """The first ``count`` dead letters (all when None), oldest first."""
    page = await call(
        partial(_range, redis, keys.dlq, "-", "+", count), what="dlq list", deadline_s=deadline_s
    )
    now = time.time()
    rows = []
    for entry_id, fields in page:
        eid = _text(entry_id)
        age = round(max(0.0, now - int(eid.split("-", 1)[0]) / 1000), 3)
        try:
            rows.append(DeadLetterRow(eid, age, letter=_decode(fields)))
        except DecodeError as exc:
            rows.append(DeadLetterRow(eid, age, error=f"not a dead letter: {exc.reason}"))
    return rows


async def _replay_one(
    redis: aioredis.Redis, keys: Keys, script: AsyncScript, dlq_id: str, deadline_s: float
) -> ReplayOutcome:
    found = await call(
        partial(_range, redis, keys.dlq, dlq_id, dlq_id, None),
        what="dlq read",
        deadline_s=deadline_s,
    )
    if not found:
        return ReplayOutcome(dlq_id, "missing")
    fields = found[0][1]
    try:
        letter = _decode(fields)
    except DecodeError as exc:
        return ReplayOutcome(dlq_id, "invalid", reason=f"not a dead letter: {exc.reason}")
    if letter.stream not in keys.input_streams:
        return ReplayOutcome(
            dlq_id, "invalid", reason=f"source {letter.stream!r} is not an input stream"
        )
    try:
        raw = fields_from_raw(letter.raw, letter.raw_encoding)
    except DecodeError as exc:
        return ReplayOutcome(dlq_id, "invalid", reason=exc.reason)
    if not raw:
        return ReplayOutcome(dlq_id, "invalid", reason="the original entry had no fields")
    args: list[str | bytes] = [dlq_id, fields[b"data"], *[x for pair in raw for x in pair]]
    reply: list[Any] = await call(
        partial(script, keys=[keys.dlq, letter.stream], args=args),
        what="dlq replay",
        deadline_s=deadline_s,
    )
    if int(reply[0]) == 1:
        return ReplayOutcome(dlq_id, "replayed", stream=letter.stream, new_id=_text(reply[1]))
    result: ReplayResult = "missing" if _text(reply[1]) == "missing" else "changed"
    return ReplayOutcome(dlq_id, result)


async def replay_dead_letters(
    redis: aioredis.Redis, keys: Keys, ids: Sequence[str] | None, *, deadline_s: float
) -> list[ReplayOutcome]:
    """Replay the given dead letters (every one when ``ids`` is None), one script each."""
    if ids is None:
        ids = [row.id for row in await list_dead_letters(redis, keys, count=None,
                                                          deadline_s=deadline_s)]  # fmt: skip
    script = scripts.register(redis, "dlq_replay")
    return [await _replay_one(redis, keys, script, i, deadline_s) for i in ids]


async def drop_dead_letters(
    redis: aioredis.Redis, keys: Keys, ids: Sequence[str], *, deadline_s: float
) -> list[bool]:
    """Delete the given dead letters; per id, whether it existed."""

    async def drop() -> list[bool]:
        async with redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.xdel(keys.dlq, i)
            return [bool(n) for n in await pipe.execute()]

    return await call(drop, what="dlq drop", deadline_s=deadline_s)
