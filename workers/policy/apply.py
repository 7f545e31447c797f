"""One step from a raw input entry to the policy's output, shared by the leader and replay.

decode → dead letter → policy → stamp, in exactly one place, so ``failoverctl replay``
judges every entry as the leader did: a deleted entry, one delivered more than
``FAILOVER_MAX_DELIVERIES`` times, one that does not decode as an event allowed on its
stream, or one whose time is too far ahead of its arrival or of the Redis server's clock
(``FAILOVER_MAX_CLOCK_SKEW_MS``) becomes a dead letter, and so does a health event from a
source outside ``FAILOVER_OBSERVERS`` (when set) or from a new source past
``FAILOVER_MAX_OBSERVERS``; everything else is applied to the policy in the order given.

Pure: no I/O, no clock. This is the pipeline's hot path, so the loop keeps its lookups in
locals and decodes the usual one-field entry without building pairs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import msgspec

from schemas.codec import (
    Oversize,
    StreamKind,
    check_event_time,
    dead_letter,
    decode_data,
    decode_entry,
    pairs,
    too_large,
)
from schemas.errors import DecodeError
from schemas.events import (
    OPERATOR_EVENT_TYPES,
    AnyEntry,
    DeadLetter,
    FailoverDecision,
    HealthEvent,
    OperatorEvent,
)
from schemas.state import PlannedFailover
from workers.policy.rules import Policy

INPUT_KINDS: tuple[StreamKind, StreamKind] = ("health", "events")
"""What each input stream may carry, by its index (``Keys.input_streams`` order)."""

DELETED = "entry was deleted from the stream while pending"

_DATA = b"data"

TOO_MANY_OBSERVERS = "too many observers"
# What decoding a ``data`` value may raise (schemas.codec.decode_data turns each into a
# DecodeError with its reason; the fast path only needs to know that it failed).
_DECODE_ERRORS = (msgspec.DecodeError, ValueError, RecursionError)
_decode_any = msgspec.json.Decoder(AnyEntry).decode
_INPUT_TYPES = (HealthEvent, *OPERATOR_EVENT_TYPES)


class Outcome(msgspec.Struct):
    """What applying entries produced; successive calls append to it."""

    planned: list[PlannedFailover] = msgspec.field(default_factory=list)
    letters: list[DeadLetter] = msgspec.field(default_factory=list)
    applied: int = 0


class Applier:
    """Feeds raw input entries to one policy, dead-lettering what the leader may not apply."""

    def __init__(
        self,
        policy: Policy,
        streams: Sequence[str],
        *,
        max_deliveries: int,
        max_clock_skew_ms: int,
        max_observers: int,
        observers: Collection[str],
        max_entry_bytes: int,
        fast: bool = True,
    ) -> None:
        self.policy = policy
        # False: every entry goes the general way (tests hold the fast path to it).
        self.fast = fast
        self.streams = streams
        self.max_deliveries = max_deliveries
        self.max_clock_skew_ms = max_clock_skew_ms
        self.max_observers = max_observers
        self.allowed = frozenset(observers) or None
        self.max_entry_bytes = max_entry_bytes

    def apply(
        self,
        stream: int,
        entries: Iterable[Sequence[Any]],
        out: Outcome,
        deliveries: dict[bytes, int] | None = None,
        server_ms: int | None = None,
    ) -> None:
        """Apply ``entries`` (``[id, flat fields or None]``) of input stream ``stream`` in order.

        ``deliveries`` holds the delivery counts other than 1; the entries' counts are
        removed from it as they are used. ``server_ms`` is the Redis server's clock when
        the entries were read: no event time may be further ahead of it than the skew.
        """
        max_deliveries = self.max_deliveries
        max_skew_ms = self.max_clock_skew_ms
        max_bytes = self.max_entry_bytes
        allowed = self.allowed
        policy = self.policy
        policy_apply = policy.apply
        apply_health = policy.apply_health
        knows = policy.knows_observer
        decode = _decode_any
        planned_all = out.planned
        applied = 0
        fast = stream == 0 and self.fast  # the health stream's usual entry: see below
        for entry_id, fields in entries:
            count = deliveries.pop(entry_id, 1) if deliveries else 1
            decoded: HealthEvent | None = None
            # Fast path: one 'data' field holding a valid health event that passes every
            # check. It decides nothing on its own: whatever it does not accept goes the
            # general way below, which judges the entry from scratch (and words the dead
            # letter's reason), so both ways give the same result for every entry; only a
            # health event it decoded is not decoded twice (the same decoder, same bytes).
            if (
                fast
                and fields.__class__ is list
                and len(fields) == 2
                and fields[0] == _DATA
                and 4 + len(fields[1]) <= max_bytes
                and count <= max_deliveries
            ):
                try:
                    event = decode(fields[1])
                except _DECODE_ERRORS:
                    event = None
                if type(event) is HealthEvent:
                    source = event.source
                    if max_skew_ms > 0:
                        arrived_ms = int(entry_id[: entry_id.index(b"-")])
                        if server_ms is not None and server_ms < arrived_ms:
                            arrived_ms = server_ms
                        on_time = event.observed_at * 1000.0 - arrived_ms <= max_skew_ms
                    else:
                        on_time = True
                    if on_time and (allowed is None or source in allowed) and knows(source):
                        planned = apply_health(event)
                        applied += 1
                        if planned:
                            planned_all.extend(planned)
                        continue
                    decoded = event
            if fields.__class__ is not list:
                # Deleted while pending (None), or over the size limit and never read whole.
                reason = DELETED if fields is None else too_large(fields.total_bytes, max_bytes)
                self.dead(out, stream, entry_id, fields=fields, deliveries=count, reason=reason)
                continue
            size = len(fields[0]) + len(fields[1]) if len(fields) == 2 else sum(map(len, fields))
            if size > max_bytes:
                reason = too_large(size, max_bytes)
                self.dead(out, stream, entry_id, fields=fields, deliveries=count, reason=reason)
                continue
            if count > max_deliveries:
                reason = (
                    f"delivered {count} times, more than FAILOVER_MAX_DELIVERIES={max_deliveries}"
                )
                self.dead(out, stream, entry_id, fields=fields, deliveries=count, reason=reason)
                continue
            try:
                event = decode_input(stream, fields) if decoded is None else decoded
                check_event_time(event, entry_id, max_skew_ms, server_ms)
            except DecodeError as exc:
                self.dead(out, stream, entry_id, fields=fields, deliveries=count, reason=exc.reason)
                continue
            if type(event) is HealthEvent:
                refused = self._observer_refusal(event.source)
                if refused is not None:
                    self.dead(
                        out, stream, entry_id, fields=fields, deliveries=count, reason=refused
                    )
                    continue
            planned = policy_apply(event)
            applied += 1
            if planned:
                planned_all.extend(planned)
        out.applied += applied

    def _observer_refusal(self, source: str) -> str | None:
        """Why a health event from ``source`` may not be applied, or None."""
        if self.allowed is not None and source not in self.allowed:
            return f"unknown observer: {source}"
        policy = self.policy
        if not policy.knows_observer(source) and len(policy.state.observers) >= self.max_observers:
            return TOO_MANY_OBSERVERS
        return None

    def dead(
        self,
        out: Outcome,
        stream: int,
        entry_id: bytes,
        *,
        fields: Sequence[bytes] | Oversize | None,
        deliveries: int,
        reason: str,
    ) -> None:
        """Record the dead letter of one entry of input stream ``stream``."""
        out.letters.append(dead_letter(self.streams[stream], entry_id, reason, deliveries, fields))


def decode_input(stream: int, fields: Sequence[bytes]) -> HealthEvent | OperatorEvent:
    """Decode an input entry's flat fields; DecodeError (the codec's reason) if not valid here."""
    if len(fields) == 2 and fields[0] == _DATA:
        # Fast path for the usual one-field entry; anything unusual goes the general way.
        event = decode_data(fields[1], None)  # the applier checked the entry's size
        if stream == 0:
            if type(event) is HealthEvent:
                return event
        elif isinstance(event, OPERATOR_EVENT_TYPES):
            return event
    entry = decode_entry(pairs(fields), stream=INPUT_KINDS[stream], max_bytes=None)
    if isinstance(entry, _INPUT_TYPES):
        return entry
    raise AssertionError(f"codec let {type(entry).__name__} onto an input stream")


def stamp(plan: PlannedFailover, epoch: int, leader: str) -> FailoverDecision:
    """The decision entry of a planned failover, under the leader's epoch."""
    return FailoverDecision(
        decision_id=plan.decision_id,
        epoch=epoch,
        leader=leader,
        from_region=plan.from_region,
        to_region=plan.to_region,
        reason=plan.reason,
        evidence=plan.evidence,
        decided_at=plan.decided_at,
        config_version=plan.config_version,
    )
