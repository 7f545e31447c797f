"""Cost of ``failoverctl status`` and of one lag-monitor sample on a loaded Redis, same run.

    python -m bench.status [--entries 50000] [--pending 2000] [--rounds 200] [--cli-runs 20]
                           [--json]

Starts its own Redis on a free loopback port, fills ``NS:health`` and ``NS:events`` with
``--entries`` each, delivers ``--pending`` of them unacknowledged, holds a lease, and keeps a
writer thread appending in pipelines of 50 while measuring. Rows:

* ``ping``: a PING round trip (the baseline: the network and event-loop floor);
* ``lag-sample``: one :class:`streams.lag.LagSampler` snapshot (what lagmon does per interval);
* ``status-read``: :func:`workers.ops.status.gather_status` (what ``failoverctl status`` reads);
* ``server-cost``: Redis CPU per snapshot from ``INFO commandstats`` (usec per EVALSHA), per
  stream, with Redis reporting the lag and with the lag NULL (counted, capped);
* ``failoverctl-status``: the whole command as a process (interpreter start dominates).

Latency rows print p50 and p99 (nearest rank) with >= 100 samples, else p50 and "max of
N" (:mod:`bench.percentiles`); ``--rounds`` is 200 and ``--cli-runs`` 20 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio as aioredis

from bench.percentiles import summarize, tail
from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.lag import LagSampler
from streams.server import RedisServer
from workers.ops.status import gather_status
from workers.settings import load_settings

REGIONS = "us-east,eu-west,ap-south"


async def _time(op: Callable[[], Awaitable[Any]], rounds: int) -> dict[str, float]:
    await op()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await op()
        times.append((time.perf_counter() - start) * 1000)
    return summarize(times, 3)


async def _server_us(r: aioredis.Redis, sampler: LagSampler, rounds: int) -> float:
    await sampler.sample()
    await r.config_resetstat()
    for _ in range(rounds):
        await sampler.sample()
    stats = (await r.info("commandstats"))["cmdstat_evalsha"]
    return float(stats["usec"]) / float(stats["calls"])


async def _fill(r: aioredis.Redis, keys: Keys, entries: int, pending: int) -> None:
    for stream in keys.input_streams:
        for start in range(0, entries, 2500):
            async with r.pipeline(transaction=False) as pipe:
                for i in range(start, min(entries, start + 2500)):
                    pipe.xadd(stream, {"data": f'{{"type":"health","n":{i},"pad":"{"x" * 150}"}}'})
                await pipe.execute()
        await r.xgroup_create(stream, GROUP, id="0")
        await r.xreadgroup(GROUP, "leader#1", {stream: ">"}, count=pending)
    await r.set(keys.leader, "leader#1", px=600_000)
    await r.set(keys.epoch, 1)


def _writer(url: str, stream: str, stop: threading.Event) -> None:
    client = redis.Redis.from_url(url)
    while not stop.is_set():
        with client.pipeline(transaction=False) as pipe:
            for _ in range(50):
                pipe.xadd(stream, {"data": "{}"})
            pipe.execute()
    client.close()


def _cli_runs(url: str, namespace: str, runs: int) -> dict[str, float]:
    # A process start costs ~0.2 s, so runs are few: below 100 the tail printed is "max of N".
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {"FAILOVER_REDIS_URL": url, "FAILOVER_NAMESPACE": namespace, "FAILOVER_REGIONS": REGIONS}
    # The console script beside this interpreter: the figure is the installed command's, and
    # it is found without an activated venv.
    failoverctl = str(Path(sys.executable).parent / "failoverctl")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([failoverctl, "status", "--json"], env=env, capture_output=True, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return summarize(times, 3)


async def run(entries: int, pending: int, rounds: int, cli_runs: int = 20) -> dict[str, Any]:
    """Measure every row; returns the figures."""
    server = RedisServer()
    server.start()
    keys = Keys("{bench}")
    r = connect(server.url)
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(server.url, keys.health, stop))
    try:
        await _fill(r, keys, entries, pending)
        settings = load_settings(
            {"FAILOVER_REGIONS": REGIONS, "FAILOVER_REDIS_URL": server.url,
             "FAILOVER_NAMESPACE": keys.namespace}
        )  # fmt: skip
        sampler = LagSampler(r, keys)
        exact_us = await _server_us(r, sampler, rounds)
        writer.start()
        rows = {
            "ping": await _time(r.ping, rounds),
            "lag-sample": await _time(sampler.sample, rounds),
            "status-read": await _time(lambda: gather_status(r, settings), rounds),
        }
        stop.set()
        writer.join()
        later = await r.xrange(keys.events, min="-", max="+", count=pending + 500)
        await r.xdel(keys.events, later[-1][0])  # Redis now answers lag = NULL on events
        counted_us = await _server_us(r, sampler, rounds)
        rows["server-cost"] = {
            "us_per_stream_reported_lag": round(exact_us / 2, 1),
            "us_per_stream_counted_lag": round(counted_us - exact_us / 2, 1),
        }
        rows["failoverctl-status"] = _cli_runs(server.url, keys.namespace, cli_runs)
        return {"entries_per_stream": entries, "pending": pending, "rounds": rounds, "rows": rows}
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        await r.aclose()
        server.stop()


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=50_000)
    p.add_argument("--pending", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--cli-runs", type=int, default=20)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = asyncio.run(run(a.entries, a.pending, a.rounds, a.cli_runs))
    if a.json:
        print(json.dumps(result))
        return
    print(f"{a.entries} entries per stream, {a.pending} pending, writer running, {a.rounds} rounds")
    for name, row in result["rows"].items():
        if "p50_ms" in row:
            line = f"p50 {row['p50_ms']} ms  {tail(row)}"
        else:
            line = "  ".join(f"{k}={v}" for k, v in row.items())
        print(f"  {name:<20} {line}")


if __name__ == "__main__":
    main()
