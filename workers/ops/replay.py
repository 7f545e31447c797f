"""Replay recorded history through the pure policy (``failoverctl replay``): what-ifs, postmortems.

Entries of ``NS:health`` and ``NS:events`` in an id range are merged in the order the
leader applies them (entry id, ``health`` before ``events`` on a tie, see
:mod:`workers.coordinator.intake`) and fed through the leader's own step
(:mod:`workers.policy.apply`: decode, clock-skew check, dead letters) to a fresh
:class:`~workers.policy.rules.Policy`, optionally with other knobs. The coordinator's ticks
are simulated every ``tick_ms`` on the entries' id clock, from the start of the range to its
end. Nothing is written.

**Clock verdicts.** The leader judges an event's time against the earlier of its entry id
and the Redis server's ``TIME`` at the read. Replay judges against the server's ``TIME``
now, which only ever accepts more; the one verdict it cannot recompute — an entry with a
producer-chosen future id whose event time was then too far ahead — is in ``NS:dlq``, so
replay takes the leader's clock dead letters from there and stays exact while they are
kept (``FAILOVER_DLQ_MAXLEN``).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import msgspec

from schemas.codec import CLOCK_AHEAD
from schemas.errors import ConfigError
from schemas.state import PlannedFailover, PolicySummary
from streams.connection import Client
from streams.history import read_all, read_page, server_time_ms
from streams.keys import Keys
from streams.replies import text
from streams.retry import call
from workers.policy.apply import INPUT_KINDS, Applier, Outcome
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig
from workers.settings import Settings

_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
# Simulated ticks are cheap but not free: about a month of 1 s ticks.
MAX_TICKS = 3_000_000

# (stream index, entry id, fields) as read from Redis.
RawEntry = tuple[int, bytes, dict[bytes, bytes]]
# Dead letters are up to 128 KiB each: read the DLQ in small pages to bound memory.
_DLQ_PAGE = 100


class _Verdict(msgspec.Struct):
    """The parts of a dead letter replay needs (the raw fields are skipped, not kept)."""

    stream: str
    entry_id: str
    reason: str


_verdict = msgspec.json.Decoder(_Verdict)


def parse_id(text: str, *, what: str) -> str:
    """Validate a stream id argument (``-``, ``+``, ``<ms>`` or ``<ms>-<seq>``)."""
    if text in ("-", "+") or _ID.match(text):
        return text
    raise ConfigError(f"{what}: {text!r} is not a stream id (<ms>-<seq>, <ms>, - or +)")


def _split(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class ReplayedDecision(msgspec.Struct, frozen=True):
    """A decision the policy made during the replay, and what triggered it."""

    decision: PlannedFailover
    trigger: str
    at: float


class Undecodable(msgspec.Struct, frozen=True):
    """An entry the leader would have dead-lettered."""

    stream: str
    entry_id: str
    reason: str


class ReplayResult(msgspec.Struct, frozen=True):
    """The outcome of one replay; ``config`` is the one in force at its end."""

    config: PolicyConfig
    start: float | None
    end: float | None
    applied: dict[str, int]
    ticks: int
    undecodable: list[Undecodable]
    decisions: list[ReplayedDecision]
    summary: PolicySummary


class _Reached(Exception):
    """The replay made the decision it was asked to stop at."""


def _flat(fields: dict[bytes, bytes]) -> list[bytes]:
    return [part for pair in fields.items() for part in pair]


def merge(streams: Sequence[Sequence[tuple[bytes, dict[bytes, bytes]]]]) -> list[RawEntry]:
    """Merge per-stream entries (each in id order) by id, lower stream index first on a tie."""
    keyed = [
        [((*_split(entry_id), index), (index, entry_id, fields)) for entry_id, fields in entries]
        for index, entries in enumerate(streams)
    ]
    return [entry for _, entry in heapq.merge(*keyed, key=lambda pair: pair[0])]


def replay(
    entries: Iterable[RawEntry],
    config: PolicyConfig,
    *,
    tick_ms: int,
    start: float | None,
    end: float | None,
    rules: LeaderRules,
    overrides: dict[str, int | float] | None = None,
    policy: Policy | None = None,
    until: str | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> ReplayResult:
    """Apply ``entries`` (merged) to a fresh policy with simulated ticks; pure.

    ``config`` is the first configuration version; ``config_changed`` events in the range
    change it where they happened, and ``overrides`` win over every version (what-ifs).
    ``policy`` (default: a fresh one) is the policy fed, so a caller can inspect it after;
    with ``until``, the replay stops right after making the decision with that id;
    ``on_tick`` is called after every simulated tick with its time (e.g. to sample states).
    ``rules`` are what the leader judged entries by (see :func:`leader_rules`).
    """
    policy = Policy(config, overrides=overrides) if policy is None else policy
    tick_s = tick_ms / 1000
    # A producer-chosen future id is no clock here either: the simulated ticks never run
    # past the server's clock (the leader's ticks never did).
    server_ms, clock_letters = rules.server_ms, rules.clock_letters
    ceiling = None if server_ms is None else server_ms / 1000
    if ceiling is not None:
        start = None if start is None else min(start, ceiling)
        end = None if end is None else min(end, ceiling)
    if start is not None and end is not None and (end - start) / tick_s > MAX_TICKS:
        raise ConfigError(
            f"replay range of {end - start:.0f}s needs more than {MAX_TICKS} ticks of {tick_ms}ms:"
            " narrow --from/--to or raise --tick-ms"
        )
    next_tick = start
    ticks = 0
    applied: dict[str, int] = dict.fromkeys(INPUT_KINDS, 0)
    undecodable: list[Undecodable] = []
    decisions: list[ReplayedDecision] = []

    def tick_until(t: float) -> None:
        nonlocal next_tick, ticks
        while next_tick is not None and next_tick <= t:
            for d in policy.tick(next_tick):
                decided(ReplayedDecision(d, f"tick at {next_tick:.3f}", next_tick))
            ticks += 1
            if on_tick is not None:
                on_tick(next_tick)
            next_tick += tick_s

    def decided(d: ReplayedDecision) -> None:
        decisions.append(d)
        if d.decision.decision_id == until:
            raise _Reached

    # The leader's own step; history read by XRANGE is a first delivery of every entry.
    applier = Applier(
        policy,
        INPUT_KINDS,
        max_deliveries=1,
        max_clock_skew_ms=rules.max_clock_skew_ms,
        max_observers=rules.max_observers,
        observers=rules.observers,
        max_entry_bytes=rules.max_entry_bytes,
    )
    try:
        for index, entry_id, fields in entries:
            kind = INPUT_KINDS[index]
            at = _split(entry_id)[0] / 1000
            if ceiling is not None and at > ceiling:
                at = ceiling
            if next_tick is None:
                next_tick = at
            tick_until(at)
            judged = clock_letters.get((index, entry_id)) if clock_letters else None
            if judged is not None:
                undecodable.append(Undecodable(kind, entry_id.decode(), judged))
                continue
            out = Outcome()
            applier.apply(index, [(entry_id, _flat(fields))], out, server_ms=server_ms)
            for letter in out.letters:
                undecodable.append(Undecodable(kind, letter.entry_id, letter.reason))
            applied[kind] += out.applied
            for d in out.planned:
                decided(ReplayedDecision(d, f"{kind} {entry_id.decode()}", at))
        if end is not None:
            tick_until(end)
    except _Reached:
        pass
    return ReplayResult(
        config=policy.config,
        start=start,
        end=end,
        applied=applied,
        ticks=ticks,
        undecodable=undecodable,
        decisions=decisions,
        summary=policy.summary(),
    )


async def read_range(
    redis: Client, keys: Keys, first: str, last: str, *, deadline_s: float
) -> list[list[tuple[bytes, dict[bytes, bytes]]]]:
    """Every entry of both input streams between ``first`` and ``last`` (inclusive), paged."""
    return [
        await read_all(redis, stream, first, last, what="replay read", deadline_s=deadline_s)
        for stream in keys.input_streams
    ]


async def read_clock_letters(
    redis: Client, keys: Keys, *, deadline_s: float
) -> dict[tuple[int, bytes], str]:
    """The leader's clock-skew dead letters in ``NS:dlq``: (stream index, entry id) -> reason."""
    index = {name: i for i, name in enumerate(keys.input_streams)}
    found: dict[tuple[int, bytes], str] = {}
    low = "-"
    while True:
        page = await call(
            partial(read_page, redis, keys.dlq, low, count=_DLQ_PAGE),
            what="replay dlq read",
            deadline_s=deadline_s,
        )
        for _, fields in page:
            try:
                letter = _verdict.decode(fields.get(b"data", b""))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            i = index.get(letter.stream)
            if i is not None and letter.reason.startswith(CLOCK_AHEAD):
                found[i, letter.entry_id.encode()] = letter.reason
        if len(page) < _DLQ_PAGE:
            return found
        low = "(" + text(page[-1][0])


class LeaderRules(msgspec.Struct, frozen=True):
    """What the leader judged each entry by, so a replay judges it the same way."""

    max_clock_skew_ms: int
    max_observers: int
    observers: tuple[str, ...]
    max_entry_bytes: int
    server_ms: int | None = None
    """The Redis server's clock when the replay reads history (caps the simulated clock)."""
    clock_letters: dict[tuple[int, bytes], str] = msgspec.field(default_factory=dict)
    """The leader's clock-skew dead letters: (stream index, entry id) -> reason."""


async def leader_rules(
    redis: Client, keys: Keys, settings: Settings, *, deadline_s: float
) -> LeaderRules:
    """The settings and the server-side facts (clock, clock dead letters) replay needs."""
    server_ms = await call(
        partial(server_time_ms, redis), what="server time", deadline_s=deadline_s
    )
    return LeaderRules(
        max_clock_skew_ms=settings.max_clock_skew_ms,
        max_observers=settings.max_observers,
        observers=tuple(settings.observers),
        max_entry_bytes=settings.max_entry_bytes,
        server_ms=server_ms,
        clock_letters=await read_clock_letters(redis, keys, deadline_s=deadline_s),
    )


def bounds(
    merged: Sequence[RawEntry], first: str, last: str | None
) -> tuple[float | None, float | None]:
    """Start and end of the simulated clock: the range's ids, else its first/last entries."""
    start = end = None
    if first not in ("-", "0") and _ID.match(first):
        start = int(first.split("-", maxsplit=1)[0]) / 1000
    elif merged:
        start = _split(merged[0][1])[0] / 1000
    if last is not None and _ID.match(last):
        end = int(last.split("-", maxsplit=1)[0]) / 1000
    elif merged:
        end = _split(merged[-1][1])[0] / 1000
    return start, end
