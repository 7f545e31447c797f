"""Why the policy did (or would not do) something: pure, from a policy and its history.

:func:`explain_decision` describes a decision from the state the policy was in when it made
it: the evidence, the observers of both regions with their runs and freshness, the
thresholds of the configuration version in force, and each rule that let it through.
:func:`explain_region` says why a region is or is not an eligible target right now.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from schemas.events import HealthEvent
from schemas.state import PlannedFailover
from workers.policy.rules import Policy
from workers.policy.views import ObserverView


class Rule(msgspec.Struct, frozen=True):
    """One rule of DESIGN §6 and whether it let the decision through (or blocks a target)."""

    name: str
    passed: bool
    detail: str


class Explanation(msgspec.Struct, frozen=True):
    """A decision, or a region, explained."""

    subject: str
    config_version: int
    config: dict[str, int | float]
    rules: list[Rule]
    observers: dict[str, list[tuple[str, ObserverView]]]
    evidence: list[HealthEvent | str] = []
    decision: PlannedFailover | None = None


def _observers(policy: Policy, region: str) -> list[tuple[str, ObserverView]]:
    st = policy.state
    now = st.clock or 0.0
    window = policy.config.window_ms / 1000
    return [
        (
            source,
            ObserverView(
                region,
                run.status,
                run.failing,
                run.count,
                run.times[-1],
                now - run.times[-1] <= window,
            ),
        )
        for source, run in sorted(policy.state.runs.get(region, {}).items())
    ]


def _common(policy: Policy, now: float, previous: PlannedFailover | None) -> list[Rule]:
    c, st = policy.config, policy.state
    rules = [
        Rule(
            "pause",
            st.paused is None,
            "not paused"
            if st.paused is None
            else f"paused by {st.paused.actor}: {st.paused.reason or 'no reason given'}",
        ),
    ]
    if st.panic_since is None:
        rules.append(Rule("panic", True, f"not more than {c.panic_fraction:g} of the regions down"))
    else:
        held = now - st.panic_since < c.panic_hold_ms / 1000
        rules.append(
            Rule(
                "panic",
                not held,
                f"{st.panic_down} of {len(c.regions)} regions down since {st.panic_since:.3f}; "
                + ("held" if held else f"hold of {c.panic_hold_ms}ms over"),
            )
        )
    if previous is None:
        rules.append(Rule("cooldown", True, "no earlier decision"))
    else:
        gap = now - previous.decided_at
        rules.append(
            Rule(
                "cooldown",
                gap >= c.cooldown_ms / 1000,
                f"{gap:.1f}s since {previous.decision_id}, cooldown {c.cooldown_ms}ms",
            )
        )
    return rules


def _target_rules(policy: Policy, region: str) -> list[Rule]:
    st, c = policy.state, policy.config
    state = policy.region_state(region)
    fresh = [
        s
        for s, v in _observers(policy, region)
        if v.fresh and not v.failing and v.run >= c.recovery_threshold
    ]
    return [
        Rule(
            "active",
            region != st.active,
            f"{region} is the active region" if region == st.active else f"{st.active} is active",
        ),
        Rule(
            "drained",
            region not in st.drained,
            "drained" if region in st.drained else "not drained",
        ),
        Rule(
            "up",
            state == "up",
            f"{region} is {state}"
            + (f" ({policy.down_reason(region)})" if state == "down" else "")
            + f"; {len(fresh)} observers passing >= {c.recovery_threshold} times within"
            f" {c.window_ms}ms (fresh), quorum {c.quorum}",
        ),
    ]


def explain_decision(
    policy: Policy,
    decision: PlannedFailover,
    previous: PlannedFailover | None,
    health: Mapping[str, HealthEvent],
) -> Explanation:
    """``decision`` explained from ``policy`` as it stood right after making it."""
    c, st = policy.config, policy.state
    now = decision.decided_at
    frm, to = decision.from_region, decision.to_region
    rules: list[Rule] = []
    if decision.reason == "manual":
        rules.append(
            Rule(
                "manual",
                True,
                "an operator's manual_failover: cooldown, panic and pause do not apply",
            )
        )
        rules.append(
            Rule("expiry", True, f"requested within manual_max_age_ms={c.manual_max_age_ms}")
        )
    elif decision.reason == "stale":
        seen = st.last_seen.get(frm)
        rules.append(
            Rule(
                "stale",
                True,
                f"{frm} last observed {seen}, more than"
                f" stale_after_ms={c.stale_after_ms} before {now:.3f}",
            )
        )
    else:
        failing = {e.source for e in health.values() if e.region == frm}
        rules.append(
            Rule(
                "quorum",
                True,
                f"{len(failing)} observers ({', '.join(sorted(failing))}) failing >="
                f" {c.threshold} times within window_ms={c.window_ms}; quorum {c.quorum}",
            )
        )
    if decision.reason != "manual":
        rules += _common(policy, now, previous)
    target = _target_rules(policy, to)[1:]  # after the decision the target is active
    rules += target
    return Explanation(
        subject=f"decision {decision.decision_id}: {frm} -> {to} ({decision.reason})",
        config_version=decision.config_version or st.config_version,
        config=c.tunables(),
        rules=rules,
        observers={frm: _observers(policy, frm), to: _observers(policy, to)},
        evidence=[health.get(i, i) for i in decision.evidence],
        decision=decision,
    )


def explain_region(policy: Policy, region: str) -> Explanation:
    """Why ``region`` is or is not an eligible failover target at the policy clock."""
    st = policy.state
    now = st.clock or 0.0
    rules = _target_rules(policy, region)
    if region != st.active and policy.region_state(st.active) != "down":
        rules.append(
            Rule(
                "need",
                False,
                f"the active region {st.active} is not down: no automatic failover is needed",
            )
        )
    rules += _common(policy, now, st.last_decision)
    return Explanation(
        subject=f"region {region}",
        config_version=st.config_version,
        config=policy.config.tunables(),
        rules=rules,
        observers={region: _observers(policy, region)},
    )
