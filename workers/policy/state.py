"""The failover policy's configuration, complete serialisable state and read-only views.

``PolicyState`` is everything the policy knows (DESIGN §5.5): a new leader that decodes the
last committed state continues exactly where the previous leader stopped. It is plain data;
the rules that change it live in :mod:`workers.policy.rules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

from schemas.errors import ConfigError, DecodeError
from schemas.state import PlannedFailover, PolicySummary, RegionState, RegionSummary

if TYPE_CHECKING:
    from collections.abc import Mapping

STATE_VERSION = 1
MAX_REFUSED = 20
MAX_RECENT_EVENTS = 64

FailoverStatus = Literal["open", "completed", "failed"]


class PolicyKnobs(Protocol):
    """What :meth:`PolicyConfig.from_settings` reads (the process settings have all of it)."""

    @property
    def regions(self) -> tuple[str, ...]: ...
    @property
    def threshold(self) -> int: ...
    @property
    def quorum(self) -> int: ...
    @property
    def window_ms(self) -> int: ...
    @property
    def stale_after_ms(self) -> int: ...
    @property
    def recovery_threshold(self) -> int: ...
    @property
    def cooldown_ms(self) -> int: ...


class PolicyConfig(msgspec.Struct, frozen=True):
    """The policy's knobs (DESIGN §7); times in milliseconds.

    No defaults here: they live in the settings table, so build one with
    :meth:`from_settings` (the policy imports nothing but ``schemas``).
    """

    regions: tuple[str, ...]
    threshold: int
    quorum: int
    window_ms: int
    stale_after_ms: int
    recovery_threshold: int
    cooldown_ms: int

    def __post_init__(self) -> None:
        """Reject a configuration the rules cannot work with."""
        if not self.regions:
            raise ConfigError("policy needs at least one region")
        if len(set(self.regions)) != len(self.regions):
            raise ConfigError(f"policy regions must be distinct, got {self.regions!r}")
        for name in ("threshold", "quorum", "recovery_threshold", "window_ms", "stale_after_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"policy {name} must be >= 1, got {getattr(self, name)}")
        if self.cooldown_ms < 0:
            raise ConfigError(f"policy cooldown_ms must be >= 0, got {self.cooldown_ms}")

    @classmethod
    def from_settings(cls, settings: PolicyKnobs) -> PolicyConfig:
        """Take the policy's knobs from the process settings."""
        return cls(
            regions=tuple(settings.regions),
            threshold=settings.threshold,
            quorum=settings.quorum,
            window_ms=settings.window_ms,
            stale_after_ms=settings.stale_after_ms,
            recovery_threshold=settings.recovery_threshold,
            cooldown_ms=settings.cooldown_ms,
        )


class ObserverRun(msgspec.Struct):
    """One observer's current run for one region: consecutive same-verdict observations.

    ``ids``/``times`` keep the most recent observations of the run (at most
    max(threshold, recovery_threshold)); their last entries are the last applied event,
    which is what duplicates are recognised by.
    """

    status: str
    failing: bool
    count: int
    ids: list[str]
    times: list[float]


class OpenFailover(msgspec.Struct):
    """The last decision and what executors reported about it."""

    decision_id: str
    from_region: str
    to_region: str
    reason: str
    decided_at: float
    status: FailoverStatus = "open"
    reported_at: float | None = None
    reported_by: str | None = None
    report_event_id: str | None = None
    detail: str | None = None


class Refusal(msgspec.Struct, frozen=True):
    """A failover event the policy did not act on, and why (shown by ``status``)."""

    event_id: str
    kind: str
    actor: str
    region: str
    target: str | None
    reason: str
    at: float


class PolicyState(msgspec.Struct):
    """The policy's complete state; round-trips through :func:`encode_state`."""

    active: str
    version: int = STATE_VERSION
    clock: float | None = None
    first_tick: float | None = None
    runs: dict[str, dict[str, ObserverRun]] = {}
    last_seen: dict[str, float] = {}
    drained: dict[str, float] = {}
    failed_at: dict[str, float] = {}
    last_decision: PlannedFailover | None = None
    decisions: int = 0
    open_failover: OpenFailover | None = None
    refused: list[Refusal] = []
    no_target: str | None = None
    recent_events: list[str] = []


def summarize(
    state: PolicyState,
    verdicts: Mapping[str, tuple[RegionState, str | None]],
    cooldown_s: float,
) -> PolicySummary:
    """The view ``status`` shows, given each region's state and down reason, in order."""
    regions = {
        region: RegionSummary(
            state=verdict,
            drained=region in state.drained,
            observers={name: run.status for name, run in state.runs.get(region, {}).items()},
            last_seen=state.last_seen.get(region),
            down_reason=reason,
            suspect_since_failure=state.failed_at.get(region),
        )
        for region, (verdict, reason) in verdicts.items()
    }
    last = state.last_decision
    return PolicySummary(
        active_region=state.active,
        clock=state.clock,
        regions=regions,
        last_decision=last,
        open_failover=None
        if state.open_failover is None
        else msgspec.structs.asdict(state.open_failover),
        refused=[msgspec.structs.asdict(r) for r in state.refused],
        no_target=state.no_target,
        cooldown_until=None if last is None else last.decided_at + cooldown_s,
    )


def initial_state(config: PolicyConfig) -> PolicyState:
    """The state before any event: the first region active, nothing observed."""
    return PolicyState(active=config.regions[0], runs={r: {} for r in config.regions})


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PolicyState)


def encode_state(state: PolicyState) -> bytes:
    """Serialise the state as msgspec JSON (what the fenced commit stores)."""
    return _encoder.encode(state)


def decode_state(data: bytes) -> PolicyState:
    """Parse a state written by :func:`encode_state`; :class:`DecodeError` if it is not one."""
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"policy state: {exc}") from exc
    if state.version != STATE_VERSION:
        raise DecodeError(f"policy state version {state.version}, expected {STATE_VERSION}")
    return state
