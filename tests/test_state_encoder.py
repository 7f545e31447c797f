"""The incremental state encoder and the one-pass verdicts the leader commits with.

The leader no longer encodes every observer run for every commit, nor judges every region
from all its runs: it re-encodes and recounts only the runs a batch changed. These tests
hold both shortcuts to the plain definitions (``encode_state``; ``region_state`` /
``down_reason`` per region) over the random histories of the policy's property tests,
committed in random slices.
"""

from __future__ import annotations

import random

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import ForgetObserver, HealthEvent
from tests.test_policy_properties import PROPS, Item, histories
from workers.policy.encoder import StateEncoder
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, decode_state, encode_state

T0 = 1_700_000_000.0


def _step(policy: Policy, item: Item) -> None:
    if isinstance(item, float):
        policy.tick(item)
    else:
        policy.apply(item)


def _check(policy: Policy, encoder: StateEncoder) -> None:
    """One commit as the leader makes it: the incremental encoding and verdicts must be
    what encoding everything and judging every region from scratch give."""
    changed = policy.take_run_changes()
    got = encoder.encode(policy.state, changed)
    assert got == encode_state(policy.state)
    assert decode_state(got) == policy.state
    verdicts = policy.verdicts(changed)
    regions = policy.config.regions
    assert list(verdicts) == list(regions)
    for region in regions:
        assert verdicts[region] == (policy.region_state(region), policy.down_reason(region))
    assert policy.summary(verdicts) == policy.summary()


@PROPS
@given(histories(), st.lists(st.integers(0, 8), min_size=1, max_size=30))
def test_the_incremental_encoding_is_exactly_encode_state_at_every_commit(
    case: tuple[PolicyConfig, list[Item]], slices: list[int]
) -> None:
    config, items = case
    policy = Policy(config)
    encoder = StateEncoder()
    _check(policy, encoder)
    position = 0
    for size in slices * 10:
        for item in items[position : position + size]:
            _step(policy, item)
        position += size
        _check(policy, encoder)
        if position >= len(items):
            break
    # A new term: a fresh encoder over the decoded state (the next leader's view).
    resumed = Policy(config, decode_state(encode_state(policy.state)))
    _check(resumed, StateEncoder())


def test_a_large_fleet_is_encoded_exactly_while_observers_come_and_go() -> None:
    config = PolicyConfig(
        regions=("eu", "us", "ap"),
        threshold=3,
        quorum=2,
        window_ms=600_000,
        stale_after_ms=600_000,
        recovery_threshold=2,
        cooldown_ms=0,
        panic_fraction=0.5,
        panic_hold_ms=0,
        manual_max_age_ms=60_000,
        observer_expiry_ms=600_000,
    )
    rng = random.Random(3)
    policy = Policy(config)
    encoder = StateEncoder()
    at = T0
    for batch in range(40):
        for i in range(300):
            at += 0.001
            status = rng.choice(["healthy", "healthy", "degraded", "unhealthy"])
            source = f"o{rng.randrange(400 + batch * 10)}"  # new observers keep arriving
            event = HealthEvent(f"e{batch}-{i}", rng.choice(config.regions), source, status, at)
            policy.apply(event)  # type: ignore[arg-type]
        if batch % 7 == 3:
            source = f"o{rng.randrange(400)}"
            forget = ForgetObserver(event_id=f"f{batch}", actor="op", at=at, source=source)
            policy.apply(forget)
        if batch % 11 == 5:
            policy.tick(at + 700)  # expires every observer silent for longer than 600 s
        _check(policy, encoder)
    assert len(msgspec.json.decode(encode_state(policy.state))["runs"]["eu"]) > 100


def test_a_change_the_notes_missed_is_caught_by_the_run_counts() -> None:
    """Runs removed behind the policy's back (no note) make the encoder start over."""
    config = PolicyConfig(("eu", "us"), 1, 1, 60_000, 60_000, 1, 0, 0.5, 0, 60_000, 60_000)
    policy = Policy(config)
    encoder = StateEncoder()
    for i, source in enumerate(["a", "b", "c"]):
        policy.apply(HealthEvent(f"e{i}", "eu", source, "healthy", T0 + i))
    encoder.encode(policy.state, policy.take_run_changes())
    del policy.state.runs["eu"]["b"]
    assert encoder.encode(policy.state, []) == encode_state(policy.state)
