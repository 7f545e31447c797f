"""The applier's fast path for the usual health entry is held to its general path."""

from __future__ import annotations

import random

import msgspec

from schemas.codec import encode_data
from schemas.events import HealthEvent, ManualFailover
from workers.policy.apply import Applier, Outcome
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig, encode_state
from workers.settings import Settings

T0 = 1_700_000_000.0
REGIONS = ("eu-west", "us-east", "ap-south")


def _config() -> PolicyConfig:
    settings = Settings(regions=REGIONS, quorum=2, cooldown_ms=0)  # type: ignore[arg-type]
    return PolicyConfig.from_settings(settings)


def _entries(rng: random.Random, n: int) -> tuple[list[list[object]], dict[bytes, int]]:
    """Entries of every kind the health stream may hold, mostly the usual one."""
    entries: list[list[object]] = []
    deliveries: dict[bytes, int] = {}
    ms = int(T0 * 1000)
    for i in range(n):
        ms += rng.choice((0, 1, 2))
        entry_id = b"%d-%d" % (ms, i)
        source = f"o{rng.randrange(8)}"  # o6, o7: outside FAILOVER_OBSERVERS
        at = ms / 1000 + rng.choice((0.0, -0.5, 0.001, 4.9, 5.0, 5.0011, 60.0))
        status = rng.choice(("healthy", "unhealthy", "unhealthy", "degraded"))
        region = rng.choice((*REGIONS, "mars"))
        event = HealthEvent(f"e{rng.randrange(n)}", region, source, status, at)  # type: ignore[arg-type]
        data = encode_data(event)
        kind = rng.random()
        fields: object = [b"data", data]
        if kind < 0.03:
            fields = [b"data", b"{not json"]
        elif kind < 0.06:
            op = ManualFailover(
                event_id="m1", region="eu-west", actor="ops", at=at, target="us-east"
            )
            fields = [b"data", encode_data(op)]
        elif kind < 0.08:
            fields = [b"data", data, b"data", data]
        elif kind < 0.10:
            fields = [b"other", data]
        elif kind < 0.12:
            fields = [b"data", data + b" " * 400]  # over max_entry_bytes below
        elif kind < 0.13:
            fields = None  # deleted while pending
        elif kind < 0.15:
            fields = [b"data", data.replace(b'"health"', b'"healthy"')]
        if rng.random() < 0.05:
            deliveries[entry_id] = rng.choice((2, 5, 6, 9))
        entries.append([entry_id, fields])
    return entries, deliveries


def _run(fast: bool, seed: int) -> tuple[bytes, bytes, int]:
    rng = random.Random(seed)
    policy = Policy(_config())
    applier = Applier(
        policy, ("ns:health", "ns:events"), max_deliveries=5, max_clock_skew_ms=5000,
        max_observers=5, observers=tuple(f"o{i}" for i in range(6)), max_entry_bytes=400,
        fast=fast,
    )  # fmt: skip
    out = Outcome()
    for batch in range(20):
        entries, deliveries = _entries(rng, 100)
        server_ms = int(T0 * 1000) + rng.choice((-100_000, 0, 50 * batch, 10**9))
        applier.apply(0, entries, out, deliveries, rng.choice((None, server_ms)))
    encode = msgspec.json.encode
    return encode(out), encode_state(policy.state), out.applied


def test_the_fast_path_gives_what_the_general_path_gives() -> None:
    for seed in range(30):
        fast, general = _run(True, seed), _run(False, seed)
        assert fast == general, seed
        # Not vacuous: entries were applied and others dead-lettered, for several reasons.
        _, _, applied = fast
        letters = msgspec.json.decode(fast[0])["letters"]
        assert applied > 0
        assert len({letter["reason"].split(":")[0] for letter in letters}) >= 5
