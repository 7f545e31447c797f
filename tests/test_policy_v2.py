"""Scenario tests of the v2 policy rules (DESIGN §6, issue 10): fresh verdicts, panic hold,
pause, manual expiry, observer bounds and expiry, configuration in the state, migration."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from schemas.codec import encode_data
from schemas.errors import DecodeError
from schemas.events import (
    ConfigChanged,
    ForgetObserver,
    HealthEvent,
    ManualFailover,
    Pause,
    Resume,
)
from schemas.state import PlannedFailover
from workers.policy.apply import TOO_MANY_OBSERVERS, Applier, Outcome
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, decode_state, encode_state
from workers.policy.views import observer_rows
from workers.settings import Settings

T0 = 1_700_000_000.0
US, EU, AP = "us-east", "eu-west", "ap-south"
REGIONS = (US, EU, AP)
_ids = itertools.count()


def config(**kw: float) -> PolicyConfig:
    """The settings table's defaults, with ``kw`` changed."""
    return PolicyConfig.from_settings(Settings(regions=REGIONS, **kw))  # type: ignore[arg-type]


def health(region: str, source: str, status: str, at: float) -> HealthEvent:
    return HealthEvent(f"{source}-{next(_ids)}", region, source, status, at)  # type: ignore[arg-type]


def rounds(
    policy: Policy, region: str, sources: list[str], status: str, start: float, n: int
) -> list[PlannedFailover]:
    out: list[PlannedFailover] = []
    for i in range(n):
        for s in sources:
            out += policy.apply(health(region, s, status, start + i))
    return out


def ctl(kind: type, at: float, **kw: object) -> object:
    return kind(event_id=f"x-{next(_ids)}", actor="alice", at=at, **kw)


# -- fresh verdicts -------------------------------------------------------------------


def test_a_silent_observers_old_passing_verdict_does_not_make_a_target() -> None:
    # The ghost: quorum 2; EU's second passing vote comes from a prober silent for
    # ten minutes while the live one sees EU failing. Without freshness EU was "up" (ghost
    # + other) and the policy failed over to it; now EU is suspect and AP is the target.
    policy = Policy(config(quorum=2, window_ms=60_000, stale_after_ms=1_000_000))
    for region in REGIONS:
        rounds(policy, region, ["ghost", "live", "other"], "healthy", T0, 3)
    late = T0 + 600
    rounds(policy, EU, ["other"], "healthy", late, 3)
    rounds(policy, EU, ["live"], "unhealthy", late, 1)
    rounds(policy, AP, ["live", "other"], "healthy", late, 3)
    assert policy.region_state(EU) == "suspect"
    assert policy.region_state(AP) == "up"
    [decision] = rounds(policy, US, ["live", "other"], "unhealthy", late + 3, 3)
    assert (decision.from_region, decision.to_region) == (US, AP)


def test_a_target_stops_being_up_when_its_observers_go_silent() -> None:
    policy = Policy(config(window_ms=10_000, stale_after_ms=100_000, panic_fraction=1.0))
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    assert policy.region_state(EU) == "up"
    policy.tick(T0 + 2 + 10)
    assert policy.region_state(EU) == "up"  # exactly window old: still fresh
    policy.tick(T0 + 2 + 10.5)
    assert policy.region_state(EU) == "suspect"


# -- panic ----------------------------------------------------------------------------


def test_all_regions_failing_at_once_holds_and_leaving_panic_decides_once() -> None:
    policy = Policy(config(cooldown_ms=0, panic_hold_ms=300_000))
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    out = []
    for i in range(3):
        for region in REGIONS:
            out += policy.apply(health(region, "a", "unhealthy", T0 + 10 + i))
    assert out == []
    st = policy.state
    assert st.panic_since is not None and st.panic_down == 3
    assert st.held == "panic"
    # EU recovers: 2 of 3 down is still more than half.
    assert rounds(policy, EU, ["a"], "healthy", T0 + 20, 3) == []
    assert policy.state.held == "panic"
    summary = policy.summary()
    assert summary.panic is not None and summary.panic.down == 2
    # AP recovers too: 1 of 3 down, the panic ends and the still-down US fails over once.
    out = rounds(policy, AP, ["a"], "healthy", T0 + 30, 3)
    [decision] = out
    assert (decision.from_region, decision.to_region) == (US, EU)
    assert policy.state.panic_since is None
    assert rounds(policy, AP, ["a"], "healthy", T0 + 40, 3) == []


def test_with_two_regions_one_down_is_not_a_panic() -> None:
    policy = Policy(PolicyConfig.from_settings(Settings(regions=(US, EU))))
    for region in (US, EU):
        rounds(policy, region, ["a"], "healthy", T0, 3)
    [decision] = rounds(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert decision.to_region == EU


def test_the_panic_hold_ends_after_panic_hold_ms() -> None:
    policy = Policy(config(panic_hold_ms=60_000, stale_after_ms=1_000_000, window_ms=1_000_000))
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    rounds(policy, AP, ["a"], "unhealthy", T0 + 5, 3)
    assert rounds(policy, US, ["a"], "unhealthy", T0 + 10, 3) == []  # 2 of 3: panic
    since = policy.state.panic_since
    assert since == T0 + 12
    assert policy.tick(since + 59.9) == []
    [decision] = policy.tick(since + 60)
    assert (decision.from_region, decision.to_region) == (US, EU)


def test_manual_failover_works_during_a_panic() -> None:
    policy = Policy(config())
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    rounds(policy, AP, ["a"], "unhealthy", T0 + 5, 3)
    assert rounds(policy, US, ["a"], "unhealthy", T0 + 10, 3) == []
    rounds(policy, EU, ["a"], "healthy", T0 + 13, 1)
    [decision] = policy.apply(ManualFailover("m-1", US, "alice", T0 + 14, target=EU))
    assert decision.reason == "manual"


# -- pause ----------------------------------------------------------------------------


def test_pause_holds_automatic_decisions_and_resume_releases_them() -> None:
    policy = Policy(config(cooldown_ms=0))
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    assert policy.apply(ctl(Pause, T0 + 5, detail="db upgrade")) == []  # type: ignore[arg-type]
    assert policy.state.paused is not None and policy.state.paused.reason == "db upgrade"
    assert rounds(policy, US, ["a"], "unhealthy", T0 + 10, 3) == []
    assert policy.state.held == "paused"
    assert policy.summary().paused is not None
    again = ctl(Pause, T0 + 13)
    policy.apply(again)  # type: ignore[arg-type]
    assert policy.state.refused[-1].reason.startswith("already paused")
    rounds(policy, EU, ["a"], "healthy", T0 + 14, 1)
    [decision] = policy.apply(ctl(Resume, T0 + 15))  # type: ignore[arg-type]
    assert (decision.from_region, decision.to_region) == (US, EU)
    policy.apply(ctl(Resume, T0 + 16))  # type: ignore[arg-type]
    assert policy.state.refused[-1].reason == "not paused"


# -- manual expiry --------------------------------------------------------------------


def test_an_old_manual_request_is_refused_as_expired() -> None:
    policy = Policy(config(manual_max_age_ms=300_000))
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0 + 400, 3)
    stale = ManualFailover("m-old", US, "alice", T0 + 402 - 301, target=EU)
    assert policy.apply(stale) == []
    assert policy.state.refused[-1].reason.startswith("expired: requested 301s ago")
    fresh = ManualFailover("m-new", US, "alice", T0 + 402 - 299, target=EU)
    [decision] = policy.apply(fresh)
    assert decision.evidence == ["m-new"]


# -- observers ------------------------------------------------------------------------


def test_silent_observers_are_forgotten_after_the_expiry() -> None:
    policy = Policy(config(observer_expiry_ms=120_000))
    rounds(policy, US, ["old", "new"], "healthy", T0, 3)
    rounds(policy, US, ["new"], "healthy", T0 + 100, 1)
    policy.tick(T0 + 2 + 120)
    assert set(policy.state.observers) == {"old", "new"}
    policy.tick(T0 + 2 + 120.5)
    assert set(policy.state.observers) == {"new"}
    assert "old" not in policy.state.runs[US]


def test_forget_observer_drops_its_runs_and_refuses_an_unknown_name() -> None:
    policy = Policy(config())
    rounds(policy, US, ["a", "b"], "healthy", T0, 3)
    policy.apply(ctl(ForgetObserver, T0 + 5, source="a"))  # type: ignore[arg-type]
    assert set(policy.state.observers) == {"b"}
    assert set(policy.state.runs[US]) == {"b"}
    policy.apply(ctl(ForgetObserver, T0 + 6, source="zz"))  # type: ignore[arg-type]
    assert policy.state.refused[-1].reason == "unknown observer zz"


def test_observer_rows_show_freshness_per_region() -> None:
    cfg = config(window_ms=10_000)
    policy = Policy(cfg)
    rounds(policy, US, ["a"], "healthy", T0, 3)
    rounds(policy, EU, ["a"], "unhealthy", T0 + 20, 1)
    [row] = observer_rows(policy.state, cfg)
    assert row.source == "a" and row.last_seen == T0 + 20 and row.age_s == 0
    fresh = {v.region: (v.status, v.run, v.fresh) for v in row.runs}
    assert fresh == {US: ("healthy", 3, False), EU: ("unhealthy", 1, True)}


def _entry(event: object) -> list[object]:
    return [b"%d-0" % next(_ids), [b"data", encode_data(event)]]  # type: ignore[arg-type]


def test_the_applier_dead_letters_unknown_and_too_many_observers() -> None:
    policy = Policy(config())
    applier = Applier(
        policy, ("ns:health", "ns:events"), max_deliveries=5, max_clock_skew_ms=0,
        max_observers=2, observers=("a", "b", "c"), max_entry_bytes=65536,
    )  # fmt: skip
    out = Outcome()
    events = [health(US, s, "healthy", T0 + i) for i, s in enumerate(["a", "b", "c", "x", "a"])]
    applier.apply(0, [_entry(e) for e in events], out)
    reasons = [letter.reason for letter in out.letters]
    assert reasons == [TOO_MANY_OBSERVERS, "unknown observer: x"]
    assert out.applied == 3
    assert set(policy.state.observers) == {"a", "b"}


# -- configuration in the state -------------------------------------------------------


def test_config_changes_apply_in_order_and_decisions_carry_the_version() -> None:
    policy = Policy(config(threshold=3, cooldown_ms=0))
    assert policy.state.config_version == 1
    for region in REGIONS:
        rounds(policy, region, ["a"], "healthy", T0, 3)
    change = ctl(ConfigChanged, T0 + 5, config={"threshold": 1}, version=2)
    policy.apply(change)  # type: ignore[arg-type]
    assert policy.config.threshold == 1 and policy.state.config_version == 2
    [decision] = rounds(policy, US, ["a"], "unhealthy", T0 + 10, 1)
    assert decision.config_version == 2
    history = policy.state.config_history
    assert [(c.version, c.changes) for c in history][1:] == [(2, {"threshold": 1})]


@pytest.mark.parametrize(
    ("changes", "version", "reason"),
    [
        ({"threshold": 2}, 3, "version 3 is not the next one (version 1 is in force)"),
        ({"threshold": 2}, 1, "version 1 is not the next one (version 1 is in force)"),
        ({"regions": 2}, 2, "unknown policy setting regions"),
        ({"quorum": 0}, 2, "policy quorum must be >= 1, got 0"),
        ({"panic_fraction": 2}, 2, "policy panic_fraction must be in [0, 1], got 2"),
        ({"observer_expiry_ms": 10}, 2, "policy observer_expiry_ms must be >= window_ms"),
    ],
)
def test_invalid_config_changes_are_refused(
    changes: dict[str, int], version: int, reason: str
) -> None:
    policy = Policy(config())
    policy.apply(ctl(ConfigChanged, T0, config=changes, version=version))  # type: ignore[arg-type]
    assert policy.state.refused[-1].reason.startswith(reason)
    assert policy.state.config_version == 1


def test_a_state_keeps_its_configuration_whatever_the_environment_says() -> None:
    policy = Policy(config(threshold=3))
    policy.apply(ctl(ConfigChanged, T0, config={"quorum": 2}, version=2))  # type: ignore[arg-type]
    saved = encode_state(policy.state)
    other = Policy(config(threshold=5), decode_state(saved))
    assert (other.config.threshold, other.config.quorum) == (3, 2)
    assert other.state.config_version == 2


def test_raising_the_threshold_counts_only_the_kept_observations() -> None:
    policy = Policy(config(threshold=1, recovery_threshold=1, stale_after_ms=1_000_000))
    rounds(policy, US, ["a"], "unhealthy", T0, 5)  # a run of 5, one observation kept
    policy.apply(ctl(ConfigChanged, T0 + 5, config={"threshold": 3}, version=2))  # type: ignore[arg-type]
    assert policy.state.runs[US]["a"].count == 1
    assert policy.region_state(US) == "suspect"


def test_a_version_1_state_is_migrated_on_load() -> None:
    # A state as the previous release committed it: no observer index, no configuration.
    v1 = {
        "active": EU, "version": 1, "clock": T0 + 5, "first_tick": T0,
        "runs": {US: {"a": {"status": "healthy", "failing": False, "count": 4,
                            "ids": ["1", "2", "3"], "times": [T0 + 1, T0 + 2, T0 + 3]}},
                 EU: {"b": {"status": "healthy", "failing": False, "count": 1,
                            "ids": ["9"], "times": [T0 + 5]}}},
        "last_seen": {US: T0 + 3, EU: T0 + 5}, "decisions": 1,
    }  # fmt: skip
    state = decode_state(msgspec.json.encode(v1))
    assert state.version == 2
    assert state.observers == {"a": T0 + 3, "b": T0 + 5}
    policy = Policy(config(threshold=4), state)
    assert policy.state.config_version == 1 and policy.config.threshold == 4
    assert policy.state.active == EU


def test_a_state_from_a_newer_release_is_refused_loudly() -> None:
    with pytest.raises(DecodeError, match="version 3"):
        decode_state(msgspec.json.encode({"active": US, "version": 3}))


def test_the_state_stays_under_2_mib_with_the_maximum_number_of_observers() -> None:
    # FAILOVER_MAX_OBSERVERS (1000) long-named observers, each with a full run per region.
    policy = Policy(config())
    for i in range(3):
        for o in range(1000):
            for region in REGIONS:
                name = f"prober-{o:04d}.{region}.compute.internal.example.com"
                status = "unhealthy" if o % 3 == 0 else "healthy"
                policy.apply(HealthEvent(f"{o}-{i}-{region}-{'x' * 24}", region, name, status,
                                         T0 + i))  # fmt: skip
    state = encode_state(policy.state)
    summary = msgspec.json.encode(policy.summary())
    assert len(state) + len(summary) < 2 * 1024 * 1024
    assert len(summary) < 16 * 1024  # status names a region's observers only when few
    assert policy.summary().regions[US].observer_counts == {"healthy": 666, "unhealthy": 334}
