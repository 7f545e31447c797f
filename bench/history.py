"""Realistic health history for the benchmarks, and how they pre-fill a stream with it."""

from __future__ import annotations

import random
import time

import redis.asyncio as aioredis

from schemas.codec import encode_data
from schemas.events import HealthEvent

REGIONS = ("eu-west", "us-east", "ap-south")
OBSERVERS = ("probe-fra", "probe-iad", "probe-sin", "probe-gru", "probe-syd")


def history(n: int) -> list[bytes]:
    """``n`` realistic health events: mostly healthy, some degraded, a few outages.

    Their times end about now (the pipeline's ticks feed wall time to the policy), spaced
    as if ``n`` events had arrived over a few seconds.
    """
    rng = random.Random(7)
    t0 = time.time() - n * 1e-5
    out = []
    per_round = len(REGIONS) * len(OBSERVERS)
    for i in range(n):
        rnd, k = divmod(i, per_round)
        region = REGIONS[k // len(OBSERVERS)]
        observer = OBSERVERS[k % len(OBSERVERS)]
        status = "healthy"
        if rng.random() < 0.03:
            status = "degraded"
        # Every 1000 rounds the region that should be active by then has a 5-round outage.
        if rnd >= 1000 and rnd % 1000 < 5 and region == REGIONS[(rnd // 1000 - 1) % 2]:
            status = "unhealthy"
        event = HealthEvent(
            event_id=f"{observer}:{region}:{rnd}",
            region=region,
            source=observer,
            status=status,  # type: ignore[arg-type]
            observed_at=t0 + i * 1e-5,
            latency_ms=round(rng.uniform(5, 80), 2),
            detail="HTTP 200" if status == "healthy" else "HTTP 503",
        )
        out.append(encode_data(event))
    return out


async def fill(r: aioredis.Redis, stream: str, datas: list[bytes]) -> None:
    for start in range(0, len(datas), 5000):
        async with r.pipeline(transaction=False) as pipe:
            for data in datas[start : start + 5000]:
                pipe.xadd(stream, {b"data": data})
            await pipe.execute()
