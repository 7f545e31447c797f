"""msgspec Structs for every entry on the wire (DESIGN §3), tagged by ``type``.

Optional fields are ``None`` when absent; unknown fields are ignored so producers may add
fields without breaking older coordinators.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# Unix seconds; bounded so a garbled timestamp (ms instead of s, 1e308) is rejected at the edge.
UnixTime = Annotated[float, msgspec.Meta(ge=0, lt=1e10)]
Status = Literal["healthy", "degraded", "unhealthy"]


class HealthEvent(msgspec.Struct, frozen=True, tag="health", tag_field="type"):
    """One observer's verdict about one region at one instant."""

    event_id: NonEmpty
    region: NonEmpty
    source: NonEmpty
    status: Status
    observed_at: UnixTime
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    detail: str | None = None


class _FailoverEventFields(msgspec.Struct, frozen=True):
    """Fields every failover event carries (DESIGN §3)."""

    event_id: NonEmpty
    region: NonEmpty
    actor: NonEmpty
    at: UnixTime
    detail: str | None = None
    decision_id: NonEmpty | None = None


class FailoverCompleted(
    _FailoverEventFields, frozen=True, tag="failover_completed", tag_field="type"
):
    """An executor reports that traffic now runs in ``region`` (the decision's target)."""


class FailoverFailed(_FailoverEventFields, frozen=True, tag="failover_failed", tag_field="type"):
    """An executor reports that moving traffic to ``region`` failed."""


class ManualFailover(
    _FailoverEventFields, frozen=True, kw_only=True, tag="manual_failover", tag_field="type"
):
    """An operator asks to leave the active ``region`` for ``target``."""

    target: NonEmpty


class Drain(_FailoverEventFields, frozen=True, tag="drain", tag_field="type"):
    """An operator forbids ``region`` as a failover target."""


class Restore(_FailoverEventFields, frozen=True, tag="restore", tag_field="type"):
    """An operator allows a drained ``region`` as a target again."""


class _ControlEventFields(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every v2 control event carries; ``region`` is ignored and may be absent."""

    event_id: NonEmpty
    actor: NonEmpty
    at: UnixTime
    detail: str | None = None
    region: NonEmpty | None = None


class Pause(_ControlEventFields, frozen=True, kw_only=True, tag="pause", tag_field="type"):
    """An operator stops automatic decisions (manual ones still apply) until ``resume``."""


class Resume(_ControlEventFields, frozen=True, kw_only=True, tag="resume", tag_field="type"):
    """An operator lets automatic decisions happen again."""


ConfigValue = Annotated[float, msgspec.Meta(ge=0, le=1e12)] | Annotated[int, msgspec.Meta(ge=0)]


class ConfigChanged(
    _ControlEventFields, frozen=True, kw_only=True, tag="config_changed", tag_field="type"
):
    """An operator changes policy settings; ``version`` must follow the one in force."""

    config: dict[NonEmpty, ConfigValue]
    version: Annotated[int, msgspec.Meta(ge=1)]


class ForgetObserver(
    _ControlEventFields, frozen=True, kw_only=True, tag="forget_observer", tag_field="type"
):
    """An operator drops one observer's runs from the state (it may come back as new)."""

    source: NonEmpty


class LeaderChanged(msgspec.Struct, frozen=True, tag="leader_changed", tag_field="type"):
    """Written first by every new leader, under its epoch."""

    epoch: Annotated[int, msgspec.Meta(ge=1)]
    leader: NonEmpty
    at: UnixTime


class FailoverDecision(msgspec.Struct, frozen=True, tag="failover", tag_field="type"):
    """The leader's order to move traffic from ``from_region`` to ``to_region``."""

    decision_id: NonEmpty
    epoch: Annotated[int, msgspec.Meta(ge=1)]
    leader: NonEmpty
    from_region: NonEmpty
    to_region: NonEmpty
    reason: str
    evidence: list[str]
    decided_at: UnixTime
    config_version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class DeadLetter(msgspec.Struct, frozen=True, tag="dead_letter", tag_field="type"):
    """An entry the leader could not apply, with why and the original fields.

    ``raw`` is the whole entry unless ``raw_truncated``: then it holds at most the first
    pairs, each field and value cut to its first 1024 bytes, and ``raw_bytes`` (the
    entry's total size) and ``raw_sha256`` (of its fields and values concatenated in
    order; None if the entry vanished before it could be hashed) identify the original.
    """

    stream: str
    entry_id: str
    reason: str
    deliveries: int
    raw: list[tuple[str, str]]
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    raw_truncated: bool = False
    raw_bytes: int | None = None
    raw_sha256: str | None = None


FailoverEvent = FailoverCompleted | FailoverFailed | ManualFailover | Drain | Restore
ControlEvent = Pause | Resume | ConfigChanged | ForgetObserver
OperatorEvent = FailoverEvent | ControlEvent
"""Everything ``NS:events`` may carry."""
OPERATOR_EVENT_TYPES = (
    FailoverCompleted,
    FailoverFailed,
    ManualFailover,
    Drain,
    Restore,
    Pause,
    Resume,
    ConfigChanged,
    ForgetObserver,
)
"""The classes of :data:`OperatorEvent`, for ``isinstance`` (the codec's allowed list too)."""
Decision = LeaderChanged | FailoverDecision
Event = HealthEvent | OperatorEvent
AnyEntry = HealthEvent | OperatorEvent | Decision | DeadLetter
