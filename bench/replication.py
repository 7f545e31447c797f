"""Decision latency with held decisions: FAILOVER_MIN_REPLICAS = 0 against N > 0.

    python -m bench.replication [--samples 200] [--min-replicas 0,1,2] [--json]

Starts its own replica set (primary + 2 replicas + 3 Sentinels on free loopback ports,
:class:`streams.replica_set.ReplicaSet`, as the tests do). For each N a leader pipeline
runs in this process, through Sentinel, with ``FAILOVER_MIN_REPLICAS=N``. Every sample
writes one health event that takes the active region down (two regions, threshold,
recovery threshold and quorum 1, cooldown 0: each sample is one failover, alternating
direction) and measures from that ``XADD`` to the decision being readable on
``NS:decisions`` (a blocking ``XREAD`` on another connection). With N = 0 that is the
pipeline's read, apply and one fenced commit; with N > 0 the commit holds the decision and
the publisher adds one round (publish script + ``WAIT N``, returning once N replicas
acked) and the publish itself. The difference between the rows is the cost of the
guarantee. The settings run side by side (one term each, own namespace) and take their
samples in turn, so a loaded host slows them alike. :func:`measure` returns the figures
(``bench.ha`` may call it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.percentiles import spread
from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverDecision, HealthEvent
from streams.address import RedisTarget
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Lease
from streams.replica_set import ReplicaSet
from workers.coordinator.leadership import Leadership
from workers.coordinator.pipeline import LeaderPipeline
from workers.settings import load_settings

_WARMUP = 5


def _summary(values_s: list[float]) -> dict[str, float]:
    return spread([v * 1000 for v in values_s])


def _health(event_id: str, region: str, status: str) -> dict[bytes, bytes]:
    return encode_entry(
        HealthEvent(
            event_id=event_id,
            region=region,
            source="bench",
            status=status,  # type: ignore[arg-type]
            observed_at=time.time(),
        )
    )


async def _next_failover(redis: aioredis.Redis, keys: Keys, last: bytes) -> bytes:
    """Block until a failover decision after ``last`` is readable; return its entry id."""
    while True:
        reply: Any = await redis.xread({keys.decisions: last}, block=1000, count=10)
        for _, rows in reply:
            for entry_id, fields in rows:
                last = entry_id
                if isinstance(decode_entry(fields, stream="decisions"), FailoverDecision):
                    return bytes(entry_id)


class _Setting:
    """One leader term with FAILOVER_MIN_REPLICAS=N in a namespace of its own."""

    def __init__(self, group: ReplicaSet, min_replicas: int) -> None:
        self.min_replicas = min_replicas
        self.keys = Keys(f"bench-repl-{uuid.uuid4().hex[:8]}")
        target = RedisTarget(group.url, sentinels=group.sentinel_addresses)
        self.writer, self.reader = connect(target), connect(target, socket_timeout=5.0)
        self.settings = load_settings(
            {
                "FAILOVER_REDIS_URL": group.url,
                "FAILOVER_NAMESPACE": self.keys.namespace,
                "FAILOVER_REGIONS": "eu,us",
                "FAILOVER_THRESHOLD": "1",
                "FAILOVER_RECOVERY_THRESHOLD": "1",
                "FAILOVER_QUORUM": "1",
                "FAILOVER_COOLDOWN_MS": "0",
                "FAILOVER_STALE_AFTER_MS": "600000",
                "FAILOVER_MIN_REPLICAS": str(min_replicas),
            }
        )
        self.task: asyncio.Task[None] | None = None
        self.last = b"0-0"
        self.active, self.other = "eu", "us"
        self.latencies: list[float] = []

    async def start(self) -> None:
        """Take the lease and run a leader pipeline under it."""
        acquired = await Lease(self.writer, self.keys, "bench#1", 600_000).acquire()
        assert isinstance(acquired, Acquired)
        now = time.monotonic()
        term = Leadership(owner="bench#1", epoch=acquired.epoch, acquired_at=now, elected_at=now)
        pipeline = LeaderPipeline(self.writer, self.keys, self.settings, term)
        self.task = asyncio.create_task(pipeline.run(), name=f"bench-term-{self.min_replicas}")

    async def sample(self, n: int, *, record: bool) -> None:
        """One failover: the health event that decides it -> the decision readable."""
        writer, keys = self.writer, self.keys
        await writer.xadd(keys.health, _health(f"up-{n}", self.other, "healthy"))
        waiting = asyncio.create_task(_next_failover(self.reader, keys, self.last))
        start = time.perf_counter()
        await writer.xadd(keys.health, _health(f"down-{n}", self.active, "unhealthy"))
        self.last = await asyncio.wait_for(waiting, 30)
        if record:
            self.latencies.append(time.perf_counter() - start)
        self.active, self.other = self.other, self.active
        if self.task is not None and self.task.done():
            self.task.result()  # a term that ended is a failure of the bench

    async def stop(self) -> None:
        """End the term and close the connections."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.writer.delete(self.keys.leader)
        await self.writer.aclose()
        await self.reader.aclose()


async def measure(
    samples: int = 200, min_replicas: tuple[int, ...] = (0, 1), group: ReplicaSet | None = None
) -> dict[str, Any]:
    """Decision latency p50/p99 per FAILOVER_MIN_REPLICAS value, on ``group`` (or a replica
    set of its own: primary + 2 replicas + 3 Sentinels)."""
    own = group is None
    if group is None:
        group = ReplicaSet()
        await asyncio.to_thread(group.start)
    started = time.monotonic()
    settings = [_Setting(group, n) for n in min_replicas]
    try:
        for setting in settings:
            await setting.start()
        # Interleaved, so a loaded host slows every setting alike.
        for n in range(samples + _WARMUP):
            for setting in settings:
                await setting.sample(n, record=n >= _WARMUP)
        rows = {str(s.min_replicas): _summary(s.latencies) for s in settings}
    finally:
        for setting in settings:
            await setting.stop()
        if own:
            group.stop()
    return {
        "config": {
            "samples": samples,
            "min_replicas": list(min_replicas),
            "replicas": len(group.servers) - 1,
        },
        "decision_latency": rows,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _print(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print(
        f"replication bench: {cfg['samples']} decisions per setting, primary + "
        f"{cfg['replicas']} replicas on loopback, {result['elapsed_s']} s"
    )
    print(
        f"{'health event -> decision visible':36} {'p50 ms':>9} {'p99 ms':>9} {'min':>8} {'max':>8}"
    )
    for n, s in result["decision_latency"].items():
        name = f"FAILOVER_MIN_REPLICAS={n}"
        print(
            f"{name:36} {s['p50_ms']:9.3f} {s['p99_ms']:9.3f} {s['min_ms']:8.3f} {s['max_ms']:8.3f}"
        )


def main() -> None:
    """Parse arguments, run the benchmark, print figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="per setting (default 200)")
    parser.add_argument(
        "--min-replicas", default="0,1,2", help="comma-separated N values (default 0,1,2)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    try:
        values = tuple(int(v) for v in args.min_replicas.split(","))
    except ValueError:
        parser.error("--min-replicas must be comma-separated integers")
    if args.samples < 1 or any(not 0 <= v <= 2 for v in values):
        parser.error("--samples must be >= 1 and each N in 0..2 (the set has 2 replicas)")
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    result = asyncio.run(measure(args.samples, values))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)


if __name__ == "__main__":
    main()
