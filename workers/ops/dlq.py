"""Operator actions on the dead-letter stream: list, replay onto the source stream, drop,
and the ``failoverctl dlq`` commands that run them.

Replay goes one dead letter at a time through :func:`streams.dlq.replay_dead_letter`
(atomic, and only if the dead letter is still there unchanged).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import partial
from typing import Literal

import msgspec

from schemas.codec import decode_entry, fields_from_raw
from schemas.errors import ConfigError, DecodeError
from schemas.events import DeadLetter
from streams import dlq
from streams.connection import Client
from streams.keys import Keys
from streams.replies import text
from streams.retry import call
from workers.ops.context import EXIT_FAILED, EXIT_OK, Context
from workers.ops.replay import parse_id

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


def _decode(fields: dict[bytes, bytes]) -> DeadLetter:
    letter = decode_entry(fields, stream="dlq")
    assert isinstance(letter, DeadLetter)  # the dlq stream admits nothing else
    return letter


async def list_dead_letters(
    redis: Client, keys: Keys, *, count: int | None, deadline_s: float
) -> list[DeadLetterRow]:
    """The first ``count`` dead letters (all when None), oldest first."""
    page = await call(
        partial(dlq.read_dead_letters, redis, keys, count=count),
        what="dlq list",
        deadline_s=deadline_s,
    )
    now = time.time()
    rows = []
    for entry_id, fields in page:
        eid = text(entry_id)
        age = round(max(0.0, now - int(eid.split("-", 1)[0]) / 1000), 3)
        try:
            rows.append(DeadLetterRow(eid, age, letter=_decode(fields)))
        except DecodeError as exc:
            rows.append(DeadLetterRow(eid, age, error=f"not a dead letter: {exc.reason}"))
    return rows


async def _replay_one(redis: Client, keys: Keys, dlq_id: str, deadline_s: float) -> ReplayOutcome:
    found = await call(
        partial(dlq.read_dead_letters, redis, keys, dlq_id, dlq_id),
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
    if letter.raw_truncated:
        return ReplayOutcome(
            dlq_id,
            "invalid",
            reason=f"the dead letter holds only the start of a {letter.raw_bytes}-byte entry"
            f" (sha256 {letter.raw_sha256}); it cannot be replayed",
        )
    try:
        raw = fields_from_raw(letter.raw, letter.raw_encoding)
    except DecodeError as exc:
        return ReplayOutcome(dlq_id, "invalid", reason=exc.reason)
    if not raw:
        return ReplayOutcome(dlq_id, "invalid", reason="the original entry had no fields")
    data, source = fields[b"data"], letter.stream
    replayed, detail = await call(
        lambda: dlq.replay_dead_letter(redis, keys, dlq_id, data=data, stream=source, fields=raw),
        what="dlq replay",
        deadline_s=deadline_s,
    )
    if replayed:
        return ReplayOutcome(dlq_id, "replayed", stream=letter.stream, new_id=detail)
    result: ReplayResult = "missing" if detail == "missing" else "changed"
    return ReplayOutcome(dlq_id, result)


async def replay_dead_letters(
    redis: Client, keys: Keys, ids: Sequence[str] | None, *, deadline_s: float
) -> list[ReplayOutcome]:
    """Replay the given dead letters (every one when ``ids`` is None), one script each."""
    if ids is None:
        ids = [row.id for row in await list_dead_letters(redis, keys, count=None,
                                                          deadline_s=deadline_s)]  # fmt: skip
    return [await _replay_one(redis, keys, i, deadline_s) for i in ids]


async def drop_dead_letters(
    redis: Client, keys: Keys, ids: Sequence[str], *, deadline_s: float
) -> list[bool]:
    """Delete the given dead letters; per id, whether it existed."""
    return await call(
        partial(dlq.drop_dead_letters, redis, keys, ids), what="dlq drop", deadline_s=deadline_s
    )


# -- the failoverctl dlq commands --------------------------------------------------


async def cmd_dlq_list(ctx: Context) -> int:
    """List dead letters: where they came from, why, and the raw entry."""
    rows = await list_dead_letters(
        ctx.redis, ctx.keys, count=ctx.args.count, deadline_s=ctx.deadline_s
    )
    if ctx.args.json:
        ctx.emit_json(
            [{"id": r.id, "age_s": r.age_s, **msgspec.to_builtins(r.letter)} if r.letter
             else {"id": r.id, "error": r.error} for r in rows]
        )  # fmt: skip
        return EXIT_OK
    if not rows:
        ctx.print("no dead letters")
    for row in rows:
        letter = row.letter
        if letter is None:
            ctx.print(f"{row.id}  {row.error}")
            continue
        raw = json.dumps(letter.raw)
        raw = raw if len(raw) <= 80 else raw[:77] + "..."
        ctx.print(
            f"{row.id}  {row.age_s:.0f}s ago  {letter.stream} {letter.entry_id}"
            f"  deliveries={letter.deliveries}  {letter.reason}  raw={raw}"
        )
    return EXIT_OK


async def cmd_dlq_replay(ctx: Context) -> int:
    """Put dead letters back on their source stream and remove them, atomically, one by one."""
    a = ctx.args
    if a.all == bool(a.ids):
        raise ConfigError("give dead letter ids, or --all (not both)")
    ids = None if a.all else [parse_id(i, what="dead letter id") for i in a.ids]
    results = await replay_dead_letters(ctx.redis, ctx.keys, ids, deadline_s=ctx.deadline_s)
    if a.json:
        ctx.emit_json(msgspec.to_builtins(results))
    else:
        for r in results:
            if r.result == "replayed":
                ctx.print(f"{r.id}  replayed onto {r.stream} as {r.new_id}")
            else:
                ctx.print(f"{r.id}  not replayed: {r.reason or r.result}")
        if not results:
            ctx.print("no dead letters")
    return EXIT_OK if all(r.result == "replayed" for r in results) else EXIT_FAILED


async def cmd_dlq_drop(ctx: Context) -> int:
    """Delete dead letters for good."""
    ids = [parse_id(i, what="dead letter id") for i in ctx.args.ids]
    dropped = await drop_dead_letters(ctx.redis, ctx.keys, ids, deadline_s=ctx.deadline_s)
    if ctx.args.json:
        ctx.emit_json([{"id": i, "dropped": d} for i, d in zip(ids, dropped, strict=True)])
    else:
        for i, d in zip(ids, dropped, strict=True):
            ctx.print(f"{i}  {'dropped' if d else 'not found'}")
    return EXIT_OK if all(dropped) else EXIT_FAILED
