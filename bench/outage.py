"""The policy's cost per health report while the active region is down and has no target.

    python -m bench.outage [--observers 1000] [--rounds 5] [--json]

The policy alone (no Redis): ``--observers`` observers report two regions, the second all
failing, then two observers make the active one fail by quorum, so it is down with no
target to fail over to; then every observer reports the active region healthy again,
``--rounds`` times. Rows: the policy as the leader runs it, and the same policy evaluating
after every report (what the policy did for each of those reports before it learned that
a passing run passing again changes nothing while the region is down by quorum).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.events import HealthEvent
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig

T0 = 1_800_000_000.0


class _Eager(Policy):
    _eager = True


def outage_config(regions: tuple[str, str] = ("eu", "us")) -> PolicyConfig:
    """Two regions, a quorum of two failing observers, nothing that holds a decision back."""
    return PolicyConfig(
        regions=regions,
        threshold=3,
        quorum=2,
        window_ms=600_000,
        stale_after_ms=600_000,
        recovery_threshold=2,
        cooldown_ms=0,
        panic_fraction=1.0,
        panic_hold_ms=0,
        manual_max_age_ms=300_000,
        observer_expiry_ms=3_600_000,
    )


def _per_report_us(policy: Policy, observers: int, rounds: int) -> float:
    t = T0
    for i in range(observers):
        t += 0.001
        policy.apply(HealthEvent(f"a{i}", "eu", f"o{i}", "healthy", t))
        policy.apply(HealthEvent(f"b{i}", "us", f"o{i}", "unhealthy", t))
    for k in range(3):
        for j in range(2):
            t += 0.001
            policy.apply(HealthEvent(f"f{k}-{j}", "eu", f"f{j}", "unhealthy", t))
    assert policy.verdicts()["eu"][0] == "down" and policy.state.active == "eu"
    reports = [
        HealthEvent(f"p{r}-{i}", "eu", f"o{i}", "healthy", t + 1 + r + i * 1e-5)
        for r in range(rounds)
        for i in range(observers)
    ]
    start = time.process_time()
    for report in reports:
        policy.apply(report)
    return (time.process_time() - start) / len(reports) * 1e6


def main() -> None:
    """Run both rows, print them (or JSON)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--observers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {
        "observers": args.observers,
        "reports": args.observers * args.rounds,
        "leader_us_per_report": round(
            _per_report_us(Policy(outage_config()), args.observers, args.rounds), 2
        ),
        "eager_us_per_report": round(
            _per_report_us(_Eager(outage_config()), args.observers, args.rounds), 2
        ),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['reports']} passing reports of the active region while it is down by quorum"
        f" with no target, {args.observers} observers (CPU time per report):"
    )
    print(f"  the policy as the leader runs it       {result['leader_us_per_report']:8.2f} us")
    print(f"  evaluating after every report (before)  {result['eager_us_per_report']:8.2f} us")


if __name__ == "__main__":
    main()
