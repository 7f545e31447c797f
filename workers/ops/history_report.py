"""What happened, from recorded history: the model behind ``failoverctl report --html``.

Everything comes from the streams, on the entries' own clock (their ids, Redis time):

- leaders and epochs, failover decisions and the active region they set: ``NS:decisions``
  (the authority);
- dead letters: ``NS:dlq``;
- each region's state over time and the refused requests: the pure policy replayed over
  ``NS:health`` and ``NS:events`` with the deployed settings, from the start of the range
  (exactly what the leader computed when the range starts at the beginning of history, as
  ``failoverctl replay`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from schemas.codec import decode_entry
from schemas.errors import DecodeError
from schemas.events import DeadLetter, FailoverDecision, LeaderChanged
from streams.connection import Client
from streams.history import read_all
from streams.keys import Keys
from workers.ops.replay import LeaderRules, RawEntry, bounds, merge, read_range, replay
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, Refusal

# At most this many state samples across the range: enough for a picture 1000 px wide.
MAX_SAMPLES = 2000


class Segment(msgspec.Struct, frozen=True):
    """A value held from ``start`` to ``end`` (unix seconds)."""

    start: float
    end: float
    value: str


class Decision(msgspec.Struct, frozen=True):
    """One recorded failover decision."""

    at: float
    entry_id: str
    decision: FailoverDecision


class Letter(msgspec.Struct, frozen=True):
    """One recorded dead letter."""

    at: float
    entry_id: str
    stream: str
    reason: str


class HistoryReport(msgspec.Struct, frozen=True):
    """Everything the report draws, on one time axis [start, end]."""

    namespace: str
    first_id: str
    last_id: str
    start: float
    end: float
    regions: list[str]
    active: list[Segment]
    states: dict[str, list[Segment]]
    leaders: list[Segment]
    epochs: dict[str, int]
    decisions: list[Decision]
    refusals: list[Refusal]
    dead_letters: list[Letter]
    applied: int


def _at(entry_id: bytes | str) -> float:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0]) / 1000


def _close(segments: list[Segment], value: str, at: float) -> None:
    """Extend the last segment to ``at``; start a new one when the value changed."""
    if segments and segments[-1].value == value:
        segments[-1] = Segment(segments[-1].start, at, value)
        return
    if segments:
        segments[-1] = Segment(segments[-1].start, at, segments[-1].value)
    segments.append(Segment(at, at, value))


def replay_states(
    merged: Sequence[RawEntry],
    config: PolicyConfig,
    *,
    tick_ms: int,
    start: float,
    end: float,
    rules: LeaderRules,
) -> tuple[dict[str, list[Segment]], list[Refusal], int]:
    """Each region's state over time, the refusals and the entries applied; pure.

    The replay is ``failoverctl replay``'s own (:func:`workers.ops.replay.replay`), so the
    picture cannot drift from what the leader decided; this only samples it.
    """
    policy = Policy(config)
    sample_s = max(tick_ms / 1000, (end - start) / MAX_SAMPLES)
    states: dict[str, list[Segment]] = {}
    next_sample = start

    def sample(at: float) -> None:
        for region, info in policy.summary().regions.items():
            _close(states.setdefault(region, []), info.state, at)

    def on_tick(at: float) -> None:
        nonlocal next_sample
        if at >= next_sample:
            sample(at)
            next_sample = at + sample_s

    result = replay(
        merged, config, tick_ms=tick_ms, start=start, end=end, rules=rules, policy=policy,
        on_tick=on_tick,
    )  # fmt: skip
    sample(end)
    refusals = msgspec.convert(policy.summary().refused, list[Refusal])
    return states, refusals, sum(result.applied.values())


async def gather(
    redis: Client,
    keys: Keys,
    config: PolicyConfig,
    *,
    first: str,
    last: str,
    tick_ms: int,
    deadline_s: float,
    rules: LeaderRules,
) -> HistoryReport:
    """Read the range of every stream and build the report."""
    inputs = await read_range(redis, keys, first, last, deadline_s=deadline_s)
    merged = merge(inputs)
    recorded = await read_all(
        redis, keys.decisions, first, last, what="report decisions", deadline_s=deadline_s
    )
    letters_raw = await read_all(
        redis, keys.dlq, first, last, what="report dead letters", deadline_s=deadline_s
    )
    start, end = bounds(merged, first, None if last == "+" else last)
    times = [_at(e[1]) for e in merged] + [_at(i) for i, _ in recorded + letters_raw]
    start = min([start, *times] if start is not None else times, default=0.0)
    end = max([end, *times] if end is not None else times, default=start)
    end = max(end, start + 1.0)

    decisions: list[Decision] = []
    leaders: list[Segment] = []
    epochs: dict[str, int] = {}
    for entry_id, fields in recorded:
        try:
            entry = decode_entry(fields, stream="decisions")
        except DecodeError:
            continue
        at = _at(entry_id)
        if isinstance(entry, LeaderChanged):
            _close(leaders, entry.leader, at)
            epochs[entry.leader] = entry.epoch
        elif isinstance(entry, FailoverDecision):
            decisions.append(Decision(at, entry_id.decode(), entry))
    if leaders:
        _close(leaders, leaders[-1].value, end)

    active: list[Segment] = []
    initial = decisions[0].decision.from_region if decisions else config.regions[0]
    _close(active, initial, start)
    for d in decisions:
        _close(active, d.decision.to_region, d.at)
    _close(active, active[-1].value, end)

    dead: list[Letter] = []
    for entry_id, fields in letters_raw:
        try:
            letter = decode_entry(fields, stream="dlq")
        except DecodeError:
            continue
        if isinstance(letter, DeadLetter):
            dead.append(Letter(_at(entry_id), entry_id.decode(), letter.stream, letter.reason))

    states, refusals, applied = replay_states(
        merged,
        config,
        tick_ms=tick_ms,
        start=start,
        end=end,
        rules=rules,
    )
    regions = list(config.regions) + [r for r in states if r not in config.regions]
    return HistoryReport(
        namespace=keys.namespace,
        first_id=first,
        last_id=last,
        start=start,
        end=end,
        regions=regions,
        active=active,
        states=states,
        leaders=leaders,
        epochs=epochs,
        decisions=decisions,
        refusals=refusals,
        dead_letters=dead,
        applied=applied,
    )
