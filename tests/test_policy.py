"""Scenario tests for the pure failover policy (DESIGN §6), one rule at a time."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable

import msgspec
import pytest

from schemas.errors import ConfigError, DecodeError
from schemas.events import (
    Drain,
    FailoverCompleted,
    FailoverEvent,
    FailoverFailed,
    HealthEvent,
    ManualFailover,
    Restore,
)
from schemas.state import PlannedFailover
from workers.policy.rules import Policy, decision_id
from workers.policy.state import PolicyConfig, decode_state, encode_state
from workers.settings import Settings, load_settings

T0 = 1_700_000_000.0
US, EU, AP = "us-east", "eu-west", "ap-south"
REGIONS = (US, EU, AP)
_ids = itertools.count()


def health(region: str, source: str, status: str, at: float, event_id: str = "") -> HealthEvent:
    return HealthEvent(
        event_id=event_id or f"{source}-{next(_ids)}",
        region=region,
        source=source,
        status=status,  # type: ignore[arg-type]
        observed_at=at,
    )


def manual(region: str, target: str, at: float, event_id: str = "") -> ManualFailover:
    return ManualFailover(
        event_id=event_id or f"m-{next(_ids)}", region=region, actor="alice", at=at, target=target
    )


def drain(region: str, at: float) -> Drain:
    return Drain(event_id=f"dr-{next(_ids)}", region=region, actor="alice", at=at)


def restore(region: str, at: float) -> Restore:
    return Restore(event_id=f"rs-{next(_ids)}", region=region, actor="alice", at=at)


def completed(region: str, at: float, decision: str | None = None) -> FailoverCompleted:
    return FailoverCompleted(
        event_id=f"c-{next(_ids)}", region=region, actor="dns", at=at, decision_id=decision
    )


def failed(region: str, at: float, decision: str | None = None) -> FailoverFailed:
    return FailoverFailed(
        event_id=f"f-{next(_ids)}", region=region, actor="dns", at=at, decision_id=decision
    )


def feed(policy: Policy, events: Iterable[HealthEvent | FailoverEvent]) -> list[PlannedFailover]:
    out: list[PlannedFailover] = []
    for event in events:
        out.extend(policy.apply(event))
    return out


def observe(
    policy: Policy, region: str, sources: Iterable[str], status: str, start: float, n: int
) -> list[PlannedFailover]:
    """``n`` rounds, one second apart, of every source reporting ``status`` for ``region``."""
    sources = list(sources)
    return feed(
        policy,
        (health(region, s, status, start + i) for i in range(n) for s in sources),
    )


def _config(regions: tuple[str, ...] = REGIONS, **kw: float) -> PolicyConfig:
    """A policy configuration: the settings table's defaults, with ``kw`` changed.

    The panic hold is off unless a test asks for it: these tests pin one rule each, with
    several regions down at once (tests/test_policy_v2.py covers the panic).
    """
    kw.setdefault("panic_fraction", 1.0)
    return PolicyConfig.from_settings(Settings(regions=regions, **kw))  # type: ignore[arg-type]


def make(**kw: float) -> Policy:
    return Policy(_config(**kw))


def healthy_world(policy: Policy, sources: Iterable[str] = ("a",), start: float = T0) -> None:
    """Every region up: ``recovery_threshold`` healthy rounds from every source."""
    for region in REGIONS:
        assert observe(policy, region, sources, "healthy", start, 3) == []
    for region in REGIONS:
        assert policy.region_state(region) == "up"


# -- quorum, threshold, window -------------------------------------------------------------


def test_quorum_not_met_one_of_two_observers_failing_no_decision() -> None:
    policy = make(quorum=2)
    healthy_world(policy, ("a", "b"))
    out = observe(policy, US, ["a"], "unhealthy", T0 + 10, 6)
    out += observe(policy, US, ["b"], "healthy", T0 + 10, 6)
    assert out == []
    assert policy.state.active == US
    assert policy.region_state(US) == "suspect"  # b alone is not a passing quorum either
    assert policy.summary().regions[US].down_reason is None


def test_quorum_met_decides_with_the_failing_runs_as_evidence() -> None:
    policy = make(quorum=2)
    healthy_world(policy, ("b", "a"))
    a = [health(US, "a", "unhealthy", T0 + 10 + i) for i in range(3)]
    b = [health(US, "b", "unhealthy", T0 + 10.5 + i) for i in range(3)]
    assert feed(policy, a) == []
    assert feed(policy, b[:2]) == []  # b's run is below threshold: quorum not met yet
    [decision] = policy.apply(b[2])
    evidence = [e.event_id for e in a] + [e.event_id for e in b]  # observers in name order
    assert decision.from_region == US
    assert decision.to_region == EU
    assert decision.reason == "quorum_unhealthy"
    assert decision.evidence == evidence
    assert decision.decided_at == T0 + 12.5
    payload = msgspec.json.encode([1, US, EU, evidence])
    assert decision.decision_id == "d-" + hashlib.sha256(payload).hexdigest()[:16]
    assert policy.state.active == EU
    assert policy.summary().last_decision == decision
    assert policy.summary().open_failover == {
        "decision_id": decision.decision_id,
        "from_region": US,
        "to_region": EU,
        "reason": "quorum_unhealthy",
        "decided_at": T0 + 12.5,
        "status": "open",
        "reported_at": None,
        "reported_by": None,
        "report_event_id": None,
        "detail": None,
    }


def test_evidence_is_the_last_threshold_observations_of_a_longer_run() -> None:
    policy = make(quorum=2, threshold=2, recovery_threshold=2)
    healthy_world(policy, ("a", "b"))
    a = [health(US, "a", "unhealthy", T0 + 10 + i) for i in range(4)]
    assert feed(policy, a) == []
    b = [health(US, "b", "unhealthy", T0 + 20 + i) for i in range(2)]
    [decision] = feed(policy, b)
    assert decision.evidence == [a[2].event_id, a[3].event_id, b[0].event_id, b[1].event_id]


def test_flapping_observer_never_reaches_threshold() -> None:
    policy = make()
    healthy_world(policy)
    statuses = ["unhealthy", "unhealthy", "healthy"] * 10
    out = feed(policy, (health(US, "a", s, T0 + 10 + i) for i, s in enumerate(statuses)))
    assert out == []
    assert policy.state.active == US
    assert policy.region_state(US) == "suspect"


def test_failures_outside_the_window_do_not_count() -> None:
    policy = make(window_ms=10_000, stale_after_ms=100_000)
    healthy_world(policy)
    out = feed(
        policy, [health(US, "a", "unhealthy", T0 + 10), health(US, "a", "unhealthy", T0 + 11)]
    )
    # EU keeps reporting: a target's passing verdict counts only while fresh (v2).
    out += observe(policy, EU, ["a"], "healthy", T0 + 27, 3)
    # The third failure of the run comes 20 s later: the run's last 3 span more than 10 s.
    out += policy.apply(health(US, "a", "unhealthy", T0 + 30))
    assert out == []
    assert policy.region_state(US) == "suspect"
    assert policy.apply(health(US, "a", "unhealthy", T0 + 31)) == []  # T0+11 still 20 s old
    [decision] = policy.apply(health(US, "a", "unhealthy", T0 + 32))
    assert decision.reason == "quorum_unhealthy"
    assert len(decision.evidence) == 3


def test_window_is_measured_from_the_policy_clock_not_the_event() -> None:
    policy = make(quorum=2, window_ms=10_000, stale_after_ms=1_000_000)
    healthy_world(policy, ("a", "b"))
    assert observe(policy, US, ["a"], "unhealthy", T0 + 10, 3) == []
    assert policy.tick(T0 + 40) == []  # a's failures are now 28-30 s old
    assert observe(policy, US, ["b"], "unhealthy", T0 + 40, 3) == []
    assert policy.state.active == US
    assert policy.region_state(US) == "suspect"


def test_degraded_counts_as_passing() -> None:
    policy = make()
    healthy_world(policy)
    statuses = ["healthy", "degraded", "healthy"]
    feed(policy, (health(EU, "a", s, T0 + 10 + i) for i, s in enumerate(["unhealthy", *statuses])))
    assert policy.region_state(EU) == "up"  # one run of three passing verdicts
    assert observe(policy, AP, ["a"], "degraded", T0 + 10, 3) == []
    assert policy.region_state(AP) == "up"
    assert policy.summary().regions[AP].observers == {"a": "degraded"}
    assert observe(policy, US, ["a"], "degraded", T0 + 20, 5) == []
    assert policy.state.active == US  # degraded is shown, not acted on


# -- staleness ------------------------------------------------------------------------------


def test_stale_active_region_fails_over_with_stale_evidence() -> None:
    policy = make(stale_after_ms=30_000)
    healthy_world(policy)
    observe(policy, EU, ["a"], "healthy", T0 + 3, 25)  # EU keeps reporting until T0+27
    observe(policy, AP, ["a"], "healthy", T0 + 3, 25)
    assert policy.tick(T0 + 2 + 30) == []  # exactly stale_after since US's last report
    [decision] = policy.tick(T0 + 2 + 30.5)
    assert decision.reason == "stale"
    assert decision.evidence == [f"stale:{US}"]
    assert (decision.from_region, decision.to_region) == (US, EU)
    assert policy.summary().regions[US].down_reason == "stale"


def test_staleness_also_follows_the_clock_of_other_regions_events() -> None:
    policy = make(stale_after_ms=30_000)
    healthy_world(policy)  # US last reported at T0+2
    # No ticks at all: the clock advances through EU's own reports.
    [decision] = observe(policy, EU, ["a"], "healthy", T0 + 3, 40)
    assert (decision.reason, decision.to_region) == ("stale", EU)
    assert decision.decided_at == T0 + 33  # the first report more than 30 s after US's last


def test_active_region_first_seen_after_other_regions_still_goes_stale() -> None:
    policy = make(stale_after_ms=30_000)
    observe(policy, EU, ["a"], "healthy", T0, 3)  # evaluated while US was never observed
    policy.apply(health(US, "a", "healthy", T0 + 3))
    # Only EU reports from now on (no ticks): US goes stale 30 s after its one report.
    [decision] = observe(policy, EU, ["a"], "healthy", T0 + 4, 40)
    assert (decision.reason, decision.decided_at) == ("stale", T0 + 34)


def test_a_failing_report_that_ends_staleness_can_reveal_a_target() -> None:
    policy = make(stale_after_ms=30_000, cooldown_ms=0)
    healthy_world(policy)  # every region: a passing run of 3 from observer a, up to T0+2
    [first] = observe(policy, EU, ["a"], "healthy", T0 + 3, 37)
    assert (first.reason, first.to_region) == ("stale", EU)
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 40, 3) == []
    assert policy.region_state(AP) == "down"  # stale: last report at T0+2
    assert policy.summary().no_target is not None
    # One failing report from a new observer ends AP's staleness, and a's run makes it up.
    [second] = policy.apply(health(AP, "b", "unhealthy", T0 + 43))
    assert policy.region_state(AP) == "up"
    assert (second.from_region, second.to_region) == (EU, AP)


def test_no_target_is_reported_when_the_waiting_target_goes_stale() -> None:
    policy = make(cooldown_ms=60_000, stale_after_ms=30_000, window_ms=1_000_000)
    healthy_world(policy)
    observe(policy, AP, ["a"], "healthy", T0 + 3, 10)  # AP last reports at T0+12
    observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    observe(policy, EU, ["a"], "unhealthy", T0 + 13, 3)  # EU down within the cooldown
    assert policy.summary().no_target is None
    observe(policy, US, ["a"], "unhealthy", T0 + 16, 28)  # only US (not a target) reports
    assert policy.state.clock == T0 + 43
    assert policy.region_state(AP) == "down"
    assert policy.summary().no_target is not None


def test_never_observed_region_is_stale_from_the_first_tick() -> None:
    policy = make(stale_after_ms=30_000)
    # Without a tick, a region that was never observed is never stale.
    assert observe(policy, EU, ["a"], "healthy", T0, 100) == []
    assert policy.region_state(US) == "unknown"
    assert policy.tick(T0 + 50) == []
    assert policy.state.first_tick == T0 + 99  # the clock (EU's last report) was ahead
    assert observe(policy, EU, ["a"], "healthy", T0 + 100, 29) == []
    assert policy.tick(T0 + 129) == []
    [decision] = policy.tick(T0 + 129.5)
    assert (decision.reason, decision.evidence) == ("stale", [f"stale:{US}"])
    assert policy.region_state(US) == "down"
    assert policy.region_state(AP) == "down"


# -- recovery -------------------------------------------------------------------------------


def test_recovery_needs_recovery_threshold_passing_observations() -> None:
    policy = make(recovery_threshold=3)
    healthy_world(policy)
    observe(policy, EU, ["a"], "unhealthy", T0 + 10, 3)
    observe(policy, AP, ["a"], "unhealthy", T0 + 10, 3)
    assert observe(policy, US, ["a"], "unhealthy", T0 + 10, 3) == []
    assert policy.summary().no_target is not None
    seen = []
    for i in range(3):
        seen.append(policy.region_state(EU))
        out = policy.apply(health(EU, "a", "healthy", T0 + 20 + i))
    assert seen == ["down", "suspect", "suspect"]
    assert policy.region_state(EU) == "up"
    [decision] = out
    assert (decision.from_region, decision.to_region) == (US, EU)
    assert policy.summary().no_target is None


def test_no_target_then_decision_once_a_target_recovers_after_cooldown() -> None:
    policy = make(cooldown_ms=60_000, stale_after_ms=1_000_000, window_ms=1_000_000)
    healthy_world(policy)
    [first] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert first.to_region == EU
    observe(policy, AP, ["a"], "unhealthy", T0 + 13, 3)
    observe(policy, US, ["a"], "unhealthy", T0 + 13, 3)
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3) == []
    assert policy.summary().no_target == (
        f"{EU} is down (quorum_unhealthy) and no other region is up and not drained"
    )
    # AP recovers inside the cooldown: no_target is resolved, but no decision yet.
    assert observe(policy, AP, ["a"], "healthy", T0 + 30, 3) == []
    assert policy.summary().no_target is None
    assert policy.summary().cooldown_until == first.decided_at + 60
    assert policy.tick(first.decided_at + 59.9) == []
    [second] = policy.tick(first.decided_at + 60)
    assert (second.from_region, second.to_region) == (EU, AP)
    assert second.decision_id != first.decision_id


# -- cooldown and manual failover ---------------------------------------------------------


def test_cooldown_blocks_a_second_automatic_decision_but_not_a_manual_one() -> None:
    policy = make(cooldown_ms=60_000)
    healthy_world(policy)
    [first] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert (first.from_region, first.to_region) == (US, EU)
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3) == []  # within cooldown
    assert policy.state.active == EU
    assert policy.region_state(EU) == "down"
    observe(policy, AP, ["a"], "healthy", T0 + 20, 3)
    request = manual(EU, AP, T0 + 25)
    [second] = policy.apply(request)
    assert (second.from_region, second.to_region, second.reason) == (EU, AP, "manual")
    assert second.evidence == [request.event_id]
    assert second.decided_at == T0 + 25
    assert policy.state.active == AP


def test_automatic_decision_resumes_when_the_cooldown_ends() -> None:
    policy = make(cooldown_ms=60_000, stale_after_ms=1_000_000, window_ms=1_000_000)
    healthy_world(policy)
    [first] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3) == []
    # Only health events move the clock: AP keeps reporting and the cooldown runs out.
    out = observe(policy, AP, ["a"], "healthy", T0 + 20, 60)
    [second] = out
    assert second.decided_at - first.decided_at >= 60
    assert second.decided_at == first.decided_at + 60  # AP reports every second
    assert (second.from_region, second.to_region) == (EU, AP)


def test_cooldown_end_is_noticed_while_only_an_unrelated_region_reports() -> None:
    policy = make(cooldown_ms=60_000, stale_after_ms=1_000_000, window_ms=1_000_000)
    healthy_world(policy)
    [first] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3) == []  # AP waits for the cooldown
    # From now on only US (down, not a target) reports; its reports still move the clock.
    out = observe(policy, US, ["a"], "unhealthy", T0 + 30, 60)
    [second] = out
    assert (second.from_region, second.to_region) == (EU, AP)
    assert second.decided_at == first.decided_at + 60


def test_no_target_is_reported_as_soon_as_the_last_target_fails_during_cooldown() -> None:
    policy = make(cooldown_ms=60_000, stale_after_ms=1_000_000, window_ms=1_000_000)
    healthy_world(policy)
    observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3)
    assert policy.summary().no_target is None  # AP is a target, the cooldown holds it back
    policy.apply(health(AP, "a", "unhealthy", T0 + 30))  # ends AP's passing run: not up
    assert policy.region_state(AP) == "suspect"
    assert policy.summary().no_target is not None


@pytest.mark.parametrize(
    ("setup", "region", "target", "why"),
    [
        ("drain", US, EU, f"target {EU} is drained"),
        ("", EU, AP, f"{EU} is not the active region ({US} is)"),
        ("", US, US, f"target {US} is already the active region"),
        ("", US, "mars", "unknown target mars"),
        ("", "mars", EU, "unknown region mars"),
        ("sick", US, EU, f"target {EU} is down, not up"),
        ("flap", US, EU, f"target {EU} is suspect, not up"),
        ("unseen", US, EU, f"target {EU} is unknown, not up"),
    ],
)
def test_manual_failover_refused(setup: str, region: str, target: str, why: str) -> None:
    policy = make()
    if setup == "unseen":
        observe(policy, US, ["a"], "healthy", T0, 3)
    else:
        healthy_world(policy)
    if setup == "drain":
        policy.apply(drain(EU, T0 + 5))
    elif setup == "sick":
        observe(policy, EU, ["a"], "unhealthy", T0 + 5, 3)
    elif setup == "flap":
        observe(policy, EU, ["a"], "unhealthy", T0 + 5, 1)
        observe(policy, EU, ["a"], "healthy", T0 + 6, 1)
    request = manual(region, target, T0 + 10)
    assert policy.apply(request) == []
    assert policy.state.active == US
    [refusal] = policy.summary().refused
    assert refusal == {
        "event_id": request.event_id,
        "kind": "manual_failover",
        "actor": "alice",
        "region": region,
        "target": target,
        "reason": why,
        "at": T0 + 10,
    }


def test_refusals_are_bounded() -> None:
    policy = make()
    for i in range(30):
        policy.apply(manual(EU, AP, T0 + i, event_id=f"r{i}"))
    assert [r["event_id"] for r in policy.summary().refused] == [f"r{i}" for i in range(10, 30)]


def test_drain_and_restore_choose_the_next_region_in_priority_order() -> None:
    policy = make(cooldown_ms=0)
    healthy_world(policy)
    policy.apply(drain(EU, T0 + 5))
    policy.apply(drain(EU, T0 + 5))  # draining twice is harmless
    assert policy.summary().regions[EU].drained
    [d1] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert d1.to_region == AP
    policy.apply(restore(EU, T0 + 14))
    assert not policy.summary().regions[EU].drained
    observe(policy, US, ["a"], "healthy", T0 + 14, 3)  # US recovers and outranks EU
    observe(policy, EU, ["a"], "healthy", T0 + 14, 3)
    [d2] = observe(policy, AP, ["a"], "unhealthy", T0 + 20, 3)
    assert d2.to_region == US
    policy.apply(drain("mars", T0 + 30))
    policy.apply(restore("mars", T0 + 30))
    assert [r["reason"] for r in policy.summary().refused] == ["unknown region mars"] * 2


# -- executor reports ---------------------------------------------------------------------


def test_failover_completed_is_recorded_against_the_open_failover() -> None:
    policy = make()
    healthy_world(policy)
    assert policy.apply(completed(EU, T0 + 5)) == []  # nothing open yet
    [decision] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    policy.apply(completed(EU, T0 + 13, decision="d-0000000000000000"))  # someone else's
    assert policy.summary().open_failover["status"] == "open"  # type: ignore[index]
    report = completed(EU, T0 + 14, decision=decision.decision_id)
    policy.apply(report)
    summary = policy.summary()
    assert summary.open_failover is not None
    assert summary.open_failover["status"] == "completed"
    assert summary.open_failover["reported_by"] == "dns"
    assert summary.open_failover["report_event_id"] == report.event_id
    assert summary.open_failover["reported_at"] == T0 + 14
    assert [r["reason"] for r in summary.refused] == [
        "no open failover to report on",
        f"does not match the open failover {decision.decision_id}",
    ]
    assert policy.region_state(EU) == "up"
    assert policy.state.active == EU


def test_report_without_decision_id_matches_on_the_target_region() -> None:
    policy = make()
    healthy_world(policy)
    observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    policy.apply(completed(AP, T0 + 14))
    assert policy.summary().open_failover["status"] == "open"  # type: ignore[index]
    policy.apply(completed(EU, T0 + 15))
    assert policy.summary().open_failover["status"] == "completed"  # type: ignore[index]


def test_failover_failed_makes_the_target_suspect_until_it_recovers() -> None:
    policy = make()
    healthy_world(policy)
    [decision] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert policy.region_state(EU) == "up"
    policy.apply(failed(EU, T0 + 13, decision=decision.decision_id))
    summary = policy.summary()
    assert summary.open_failover is not None
    assert summary.open_failover["status"] == "failed"
    assert summary.regions[EU].suspect_since_failure == T0 + 13
    assert policy.region_state(EU) == "suspect"
    assert policy.state.active == EU  # the decision stays the authority
    # A late report observed before the failure does not count towards recovery.
    policy.apply(health(EU, "a", "healthy", T0 + 12.5))
    states = []
    for i in range(3):
        policy.apply(health(EU, "a", "healthy", T0 + 14 + i))
        states.append(policy.region_state(EU))
    assert states == ["suspect", "suspect", "up"]
    assert policy.summary().regions[EU].suspect_since_failure is None


def test_failure_reported_after_fresh_passing_observations_leaves_the_target_up() -> None:
    policy = make()
    healthy_world(policy)
    [decision] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    observe(policy, EU, ["a"], "healthy", T0 + 20, 3)
    policy.apply(failed(EU, T0 + 15, decision=decision.decision_id))  # a late report
    assert policy.region_state(EU) == "up"
    assert policy.summary().regions[EU].suspect_since_failure is None


def test_failed_target_is_not_chosen_again_until_it_recovers() -> None:
    policy = make(cooldown_ms=0)
    healthy_world(policy)
    observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    manual_back = manual(EU, AP, T0 + 13)
    [to_ap] = policy.apply(manual_back)
    policy.apply(failed(AP, T0 + 14))
    observe(policy, US, ["a"], "healthy", T0 + 14, 3)
    assert policy.region_state(AP) == "suspect"
    policy.apply(manual(AP, EU, T0 + 18))
    assert policy.state.active == EU
    observe(policy, US, ["a"], "unhealthy", T0 + 20, 3)
    # EU goes down: US is down too, AP is suspect since its failure: nothing to choose.
    assert observe(policy, EU, ["a"], "unhealthy", T0 + 20, 3) == []
    assert policy.summary().no_target is not None
    out = observe(policy, AP, ["a"], "healthy", T0 + 25, 3)
    assert [(d.from_region, d.to_region) for d in out] == [(EU, AP)]
    assert to_ap.to_region == AP


# -- duplicates, unknown regions, redelivery ---------------------------------------------


def test_duplicates_are_ignored() -> None:
    policy = make()
    healthy_world(policy)
    first = health(US, "a", "unhealthy", T0 + 10)
    policy.apply(first)
    before = encode_state(policy.state)
    replays = [
        first,  # redelivered as is
        health(US, "a", "unhealthy", T0 + 11, event_id=first.event_id),  # same id, later time
        health(US, "a", "unhealthy", T0 + 10),  # new id, same observed_at
        health(US, "a", "unhealthy", T0 + 9),  # new id, older
    ]
    for event in replays:
        assert policy.apply(event) == []
        assert encode_state(policy.state) == before
    assert policy.state.runs[US]["a"].count == 1
    # Another observer's report at the same instant is not a duplicate.
    policy.apply(health(US, "b", "unhealthy", T0 + 10))
    assert policy.state.runs[US]["b"].count == 1


def test_redelivered_failover_event_is_applied_once() -> None:
    policy = make(cooldown_ms=0)
    healthy_world(policy)
    request = manual(US, EU, T0 + 5)
    assert len(policy.apply(request)) == 1
    assert policy.apply(request) == []
    assert policy.summary().refused == []  # not refused: ignored as a redelivery


def test_unknown_regions_are_ignored() -> None:
    policy = make()
    healthy_world(policy)
    before = encode_state(policy.state)
    for i in range(5):
        assert policy.apply(health("mars", "a", "unhealthy", T0 + 1000 + i)) == []
    assert encode_state(policy.state) == before
    assert policy.region_state("mars") == "unknown"
    assert "mars" not in policy.summary().regions


# -- determinism and persistence ----------------------------------------------------------


def _scripted_history() -> list[HealthEvent | FailoverEvent | float]:
    """A history with every kind of event and several decisions; floats are ticks."""
    items: list[HealthEvent | FailoverEvent | float] = []
    t = T0
    for region in REGIONS:
        items += [
            health(region, s, "healthy", t + i, f"{region}-{s}-{i}") for i in range(3) for s in "ab"
        ]
    items += [
        health(US, s, "unhealthy", t + 10 + i, f"us-bad-{s}-{i}") for i in range(3) for s in "ab"
    ]
    items += [t + 20.0, completed(EU, t + 21), drain(AP, t + 22)]
    items += [health(EU, "a", "unhealthy", t + 23 + i, f"eu-bad-{i}") for i in range(3)]
    items += [
        health(US, s, "healthy", t + 30 + i, f"us-ok-{s}-{i}") for i in range(3) for s in "ab"
    ]
    items += [manual(EU, US, t + 40, "m-1"), failed(US, t + 41), restore(AP, t + 42)]
    items += [health(AP, "a", "healthy", t + 43 + i, f"ap-{i}") for i in range(40)]
    items += [t + 60.0, t + 90.0, t + 200.0]
    items += [health(EU, "b", "healthy", t + 201 + i, f"eu-ok-{i}") for i in range(3)]
    items += [health(EU, "a", "healthy", t + 201 + i, f"eu-ok-a-{i}") for i in range(3)]
    items += [t + 300.0, manual(AP, EU, t + 301, "m-2")]
    return items


def _run(policy: Policy, items: list[HealthEvent | FailoverEvent | float]) -> list[PlannedFailover]:
    out: list[PlannedFailover] = []
    for item in items:
        out.extend(policy.tick(item) if isinstance(item, float) else policy.apply(item))
    return out


def test_state_round_trips_mid_history_and_continuing_is_identical() -> None:
    config = _config(cooldown_ms=30_000, stale_after_ms=30_000)
    items = _scripted_history()
    straight = Policy(config)
    expected = _run(straight, items)
    assert len(expected) >= 4
    assert len({d.decision_id for d in expected}) == len(expected)
    final = encode_state(straight.state)
    for split in range(len(items) + 1):
        first = Policy(config)
        out = _run(first, items[:split])
        data = encode_state(first.state)
        resumed = Policy(config, decode_state(data))
        assert encode_state(resumed.state) == data
        out += _run(resumed, items[split:])
        assert out == expected, split
        assert encode_state(resumed.state) == final, split


def test_replaying_the_same_history_gives_the_same_ids() -> None:
    config = _config(cooldown_ms=30_000)
    items = _scripted_history()
    assert _run(Policy(config), items) == _run(Policy(config), items)


def test_decision_ids_differ_when_the_evidence_repeats() -> None:
    policy = make(cooldown_ms=0, stale_after_ms=10_000)
    healthy_world(policy)
    decisions = []
    t = T0 + 3
    for _ in range(2):
        # US falls silent and goes stale; come back to US by hand once it reports again.
        decisions += observe(policy, EU, ["a"], "healthy", t, 12)
        decisions += observe(policy, US, ["a"], "healthy", t + 13, 3)
        decisions += policy.apply(manual(EU, US, t + 16))
        t += 20
    assert [d.reason for d in decisions] == ["stale", "manual"] * 2
    ids = [d.decision_id for d in decisions]
    assert len(set(ids)) == 4
    assert ids[0] == decision_id(1, US, EU, [f"stale:{US}"])
    assert ids[2] == decision_id(3, US, EU, [f"stale:{US}"])


def test_decode_state_rejects_garbage() -> None:
    with pytest.raises(DecodeError):
        decode_state(b"{not json")
    with pytest.raises(DecodeError):
        decode_state(b'{"active": 3}')
    with pytest.raises(DecodeError, match="version"):
        decode_state(b'{"active": "us-east", "version": 99}')


def test_state_for_another_region_set_is_a_config_error() -> None:
    state = Policy(_config(("x", "y"))).state
    with pytest.raises(ConfigError, match="active region 'x'"):
        Policy(_config(), state)


def test_state_gains_regions_added_to_the_configuration() -> None:
    old = Policy(_config((US, EU)))
    observe(old, US, ["a"], "healthy", T0, 3)
    policy = Policy(_config(), decode_state(encode_state(old.state)))
    observe(policy, AP, ["a"], "healthy", T0, 3)
    assert policy.region_state(AP) == "up"
    assert policy.region_state(US) == "up"


def test_assigning_a_state_rebinds_the_policy() -> None:
    policy = make()
    healthy_world(policy)
    saved = encode_state(policy.state)
    observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert policy.state.active == EU
    policy.state = decode_state(saved)
    assert policy.state.active == US
    [decision] = observe(policy, US, ["a"], "unhealthy", T0 + 10, 3)
    assert decision.to_region == EU


# -- configuration and views --------------------------------------------------------------


def test_config_from_settings() -> None:
    settings = load_settings(
        {
            "FAILOVER_REGIONS": "a,b",
            "FAILOVER_THRESHOLD": "4",
            "FAILOVER_QUORUM": "2",
            "FAILOVER_WINDOW_MS": "5000",
            "FAILOVER_STALE_AFTER_MS": "6000",
            "FAILOVER_RECOVERY_THRESHOLD": "5",
            "FAILOVER_COOLDOWN_MS": "7000",
        }
    )
    assert PolicyConfig.from_settings(settings) == PolicyConfig(
        regions=("a", "b"),
        threshold=4,
        quorum=2,
        window_ms=5000,
        stale_after_ms=6000,
        recovery_threshold=5,
        cooldown_ms=7000,
        panic_fraction=0.5,
        panic_hold_ms=300000,
        manual_max_age_ms=300000,
        observer_expiry_ms=86400000,
    )


def test_config_defaults_live_only_in_the_settings_table() -> None:
    with pytest.raises(TypeError):
        PolicyConfig(regions=REGIONS)  # type: ignore[call-arg]
    config = PolicyConfig.from_settings(load_settings({"FAILOVER_REGIONS": ",".join(REGIONS)}))
    assert config == _config(panic_fraction=0.5)
    assert (config.threshold, config.quorum, config.cooldown_ms) == (3, 1, 60000)
    assert (config.panic_fraction, config.panic_hold_ms) == (0.5, 300000)
    assert (config.manual_max_age_ms, config.observer_expiry_ms) == (300000, 86400000)


@pytest.mark.parametrize(
    "kw",
    [
        {"regions": ()},
        {"regions": ("a", "a")},
        {"regions": ("a",), "threshold": 0},
        {"regions": ("a",), "quorum": 0},
        {"regions": ("a",), "window_ms": 0},
        {"regions": ("a",), "cooldown_ms": -1},
    ],
)
def test_config_rejects_unusable_values(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PolicyConfig.from_settings(Settings(**kw))  # type: ignore[arg-type]


def test_summary_shows_each_region() -> None:
    policy = make(quorum=1)
    assert policy.summary().clock is None
    assert {r: s.state for r, s in policy.summary().regions.items()} == dict.fromkeys(
        REGIONS, "unknown"
    )
    observe(policy, US, ["a", "b"], "healthy", T0, 3)
    observe(policy, EU, ["a"], "unhealthy", T0, 3)
    policy.apply(health(AP, "a", "degraded", T0 + 2))
    summary = policy.summary()
    assert summary.active_region == US
    assert summary.clock == T0 + 2
    us, eu, ap = (summary.regions[r] for r in REGIONS)
    assert (us.state, us.observers, us.last_seen, us.down_reason) == (
        "up",
        {"a": "healthy", "b": "healthy"},
        T0 + 2,
        None,
    )
    assert (eu.state, eu.down_reason, eu.observers) == (
        "down",
        "quorum_unhealthy",
        {"a": "unhealthy"},
    )
    assert (ap.state, ap.drained) == ("suspect", False)
    assert summary.last_decision is None
    assert summary.open_failover is None
    assert summary.no_target is None
    assert summary.cooldown_until is None
