"""The failover policy's configuration, complete serialisable state and read-only views.

``PolicyState`` is everything the policy knows (DESIGN §5.5): a new leader that decodes the
last committed state continues exactly where the previous leader stopped. It is plain data;
the rules that change it live in :mod:`workers.policy.rules`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from schemas.errors import ConfigError, DecodeError
from schemas.state import PlannedFailover

if TYPE_CHECKING:
    from collections.abc import Mapping

STATE_VERSION = 2
MAX_REFUSED = 20
MAX_RECENT_EVENTS = 64
MAX_CONFIG_HISTORY = 50

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
    @property
    def panic_fraction(self) -> float: ...
    @property
    def panic_hold_ms(self) -> int: ...
    @property
    def manual_max_age_ms(self) -> int: ...
    @property
    def observer_expiry_ms(self) -> int: ...


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
    panic_fraction: float
    panic_hold_ms: int
    manual_max_age_ms: int
    observer_expiry_ms: int

    def __post_init__(self) -> None:
        """Reject a configuration the rules cannot work with."""
        if not self.regions:
            raise ConfigError("policy needs at least one region")
        if len(set(self.regions)) != len(self.regions):
            raise ConfigError(f"policy regions must be distinct, got {self.regions!r}")
        for name in ("threshold", "quorum", "recovery_threshold", "window_ms", "stale_after_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"policy {name} must be >= 1, got {getattr(self, name)}")
        for name in ("cooldown_ms", "panic_hold_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"policy {name} must be >= 0, got {getattr(self, name)}")
        if self.manual_max_age_ms < 1:
            raise ConfigError(
                f"policy manual_max_age_ms must be >= 1, got {self.manual_max_age_ms}"
            )
        if not 0 <= self.panic_fraction <= 1:
            raise ConfigError(f"policy panic_fraction must be in [0, 1], got {self.panic_fraction}")
        if self.observer_expiry_ms < self.window_ms:
            # Then forgetting an observer never changes a verdict: its runs are stale anyway.
            raise ConfigError(
                f"policy observer_expiry_ms must be >= window_ms ({self.window_ms}),"
                f" got {self.observer_expiry_ms}"
            )

    def tunables(self) -> dict[str, int | float]:
        """The settings a ``config_changed`` event may change (all but the regions)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if k != "regions"}

    def changed(self, changes: Mapping[str, int | float]) -> PolicyConfig:
        """This configuration with ``changes``; ConfigError naming what is wrong."""
        allowed = self.tunables()
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise ConfigError(
                f"unknown policy setting {', '.join(unknown)}; one of {', '.join(allowed)}"
            )
        merged: dict[str, Any] = {**allowed, **changes, "regions": list(self.regions)}
        try:
            return msgspec.convert(merged, PolicyConfig)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid policy setting: {exc}") from None

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
            panic_fraction=settings.panic_fraction,
            panic_hold_ms=settings.panic_hold_ms,
            manual_max_age_ms=settings.manual_max_age_ms,
            observer_expiry_ms=settings.observer_expiry_ms,
        )


def config_differences(
    a: PolicyConfig, b: PolicyConfig
) -> dict[str, tuple[int | float, int | float]]:
    """The tunable settings that differ: ``{name: (a's, b's)}``."""
    mine, theirs = a.tunables(), b.tunables()
    return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


class ObserverRun(msgspec.Struct):
    """One observer's current run for one region: consecutive same-verdict observations.

    ``times`` keeps the most recent observations of the run (at most
    max(threshold, recovery_threshold)), ``ids`` their event ids for a failing run (the
    evidence) and only the last one for a passing run; the last entries are the last
    applied event, which is what duplicates are recognised by.
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


class Pause(msgspec.Struct, frozen=True):
    """Who paused automatic decisions, when and why."""

    actor: str
    at: float
    event_id: str
    reason: str | None = None


class ConfigChange(msgspec.Struct, frozen=True):
    """One version of the configuration: what changed, by whom, when."""

    version: int
    actor: str
    at: float | None
    changes: dict[str, int | float]
    event_id: str | None = None
    detail: str | None = None


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
    # v2: latest observation per source, any region (observer bounds, expiry, `observers`)
    observers: dict[str, float] = {}
    paused: Pause | None = None
    # Set while more than panic_fraction of the regions are down with the active one.
    panic_since: float | None = None
    panic_down: int = 0
    # Why an automatic decision is being held right now: "paused" or "panic", else None.
    held: str | None = None
    config: PolicyConfig | None = None
    config_version: int = 0
    config_history: list[ConfigChange] = []


def initial_state(config: PolicyConfig) -> PolicyState:
    """The state before any event: the first region active, nothing observed, config v1."""
    return PolicyState(
        active=config.regions[0],
        runs={r: {} for r in config.regions},
        config=config,
        config_version=1,
        config_history=[ConfigChange(1, "environment", None, config.tunables())],
    )


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
    if state.version == 1:
        _migrate_v1(state)
    if state.version != STATE_VERSION:
        raise DecodeError(
            f"policy state version {state.version}, this coordinator reads 1..{STATE_VERSION}:"
            " upgrade it"
        )
    return state


def _migrate_v1(state: PolicyState) -> None:
    """A v1 state (before issue 10) has no observer index and no configuration: derive the
    index from the runs; the coordinator seeds the configuration from its settings."""
    for runs in state.runs.values():
        for source, run in runs.items():
            state.observers[source] = max(state.observers.get(source, run.times[-1]), run.times[-1])
    state.version = STATE_VERSION
