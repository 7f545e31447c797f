"""Soak: a coordinator fleet under leader chaos and adversarial producers, watched for growth.

    python -m bench.soak [--minutes 60] [--rate 2000] [--chaos-s 60] [--json]

Three ``python -m workers.coordinator`` processes on a private Redis; producers write
``--rate`` entries/s (90 % valid health events from 1,000 observers, 10 % bad ones of the
kinds :mod:`bench.hostile` uses, oversize ones included); every ``--chaos-s`` seconds the
leader is SIGKILLed and restarted. Every minute it prints the leader's RSS, Redis
``used_memory``, the ``NS:state`` size, the dead-letter stream length and the backlog; at
the end the growth of each from the first sample after warm-up (``--warmup`` minutes, by
when the dead-letter stream is at ``FAILOVER_DLQ_MAXLEN``) to the last.
Goal (issue 9): flat, under 10 % growth over 60 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.history import REGIONS
from bench.hostile import bad_entry
from schemas.codec import encode_data
from schemas.events import HealthEvent
from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
KEYS = Keys("{soak}")


class Fleet:
    """Three coordinator processes, restartable by name."""

    def __init__(self, url: str) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FAILOVER_REDIS_URL": url,
            "FAILOVER_NAMESPACE": KEYS.namespace,
            "FAILOVER_REGIONS": ",".join(REGIONS),
            "FAILOVER_LEASE_TTL_MS": "2000",
            "FAILOVER_REELECT_DELAY_MS": "1500",
            "FAILOVER_REELECT_JITTER_MS": "500",
            "FAILOVER_INPUT_RETENTION_MS": "60000",
            "FAILOVER_DECISIONS_MAXLEN": "10000",
            "FAILOVER_DLQ_MAXLEN": os.environ.get("SOAK_DLQ_MAXLEN", "100000"),
            "FAILOVER_LOG_LEVEL": "ERROR",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}

    def start(self, name: str) -> None:
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "workers.coordinator"],
            env={**self.env, "FAILOVER_INSTANCE_ID": name},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started[name] = time.monotonic()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=30)


async def _leader(r: aioredis.Redis) -> str | None:
    owner = await r.get(KEYS.leader)
    return owner.decode().split("#", 1)[0] if owner else None


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


async def _produce(r: aioredis.Redis, rate: int, stop: asyncio.Event) -> None:
    rng = random.Random(5)
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    next_at = time.perf_counter()
    i = 0
    while not stop.is_set():
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        next_at += tick
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(per_tick):
                i += 1
                if rng.random() < 0.10:
                    pipe.execute_command("XADD", KEYS.health, "*", *bad_entry(i, rng))
                    continue
                status = "unhealthy" if rng.random() < 0.01 else "healthy"
                event = HealthEvent(
                    f"s{i}", REGIONS[i % 3], f"observer-{rng.randrange(1000)}", status, time.time()
                )  # type: ignore[arg-type]
                pipe.xadd(KEYS.health, {b"data": encode_data(event)})
            await pipe.execute()


async def _sample(r: aioredis.Redis, fleet: Fleet, minute: int) -> dict[str, Any]:
    name = await _leader(r)
    proc = fleet.procs.get(name or "")
    if proc is not None and time.monotonic() - fleet.started[name or ""] < 10:
        proc = None  # the lease still names a killed process; its successor is not leading
    info = await r.info("memory")
    groups = await r.xinfo_groups(KEYS.health)
    backlog = sum(
        int(g["lag"] or 0) + int(g["pending"]) for g in groups if g["name"] == GROUP.encode()
    )
    return {
        "minute": minute,
        "leader": name,
        "leader_rss_mib": round(_rss_mib(proc.pid), 1) if proc else None,
        "redis_used_memory_mib": round(int(info["used_memory"]) / 2**20, 1),
        "state_bytes": await r.hstrlen(KEYS.state, "policy"),
        "dlq_length": await r.xlen(KEYS.dlq),
        "health_length": await r.xlen(KEYS.health),
        "backlog": backlog,
    }


def _growth(first: dict[str, Any], last: dict[str, Any], field: str) -> float | None:
    a, b = first.get(field), last.get(field)
    if not a or b is None:
        return None
    return round((b - a) / a * 100, 1)


async def soak(minutes: float, rate: int, chaos_s: float, warmup: int, out: bool) -> dict[str, Any]:
    """Run the soak; print a line per minute unless ``out`` is False."""
    server = RedisServer()
    server.start()
    fleet = Fleet(server.url)
    r = connect(server.url, socket_timeout=10)
    stop = asyncio.Event()
    samples: list[dict[str, Any]] = []
    try:
        for name in ("s1", "s2", "s3"):
            fleet.start(name)
        producer = asyncio.create_task(_produce(r, rate, stop))
        start = time.monotonic()
        # Half a period off the minute: a sample never lands just after a kill.
        next_chaos = start + chaos_s / 2
        minute = 0
        while time.monotonic() - start < minutes * 60:
            await asyncio.sleep(1)
            if time.monotonic() >= next_chaos:
                next_chaos += chaos_s
                name = await _leader(r)
                if name is not None:
                    fleet.kill(name)
                    fleet.start(name)
            if time.monotonic() - start >= (minute + 1) * 60:
                minute += 1
                samples.append(await _sample(r, fleet, minute))
                if out:
                    print(json.dumps(samples[-1]), flush=True)
        stop.set()
        await producer
    finally:
        fleet.stop()
        await r.aclose()
        server.stop()
    # After warm-up the dead-letter stream has reached FAILOVER_DLQ_MAXLEN and the input
    # streams their retention; growth is measured from there.
    warm = next((x for x in samples if x["minute"] >= warmup), samples[-1] if samples else {})
    last = samples[-1] if samples else {}
    fields = ("leader_rss_mib", "redis_used_memory_mib", "state_bytes", "dlq_length")
    growth = {f: _growth(warm, last, f) for f in fields}
    return {
        "minutes": minutes,
        "rate": rate,
        "warmup_minutes": warmup,
        "samples": samples,
        "growth_pct": growth,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--chaos-s", type=float, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="minutes before growth counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = await soak(args.minutes, args.rate, args.chaos_s, args.warmup, out=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"growth after warm-up (minute {args.warmup} -> last), %:", result["growth_pct"])


if __name__ == "__main__":
    asyncio.run(main())
