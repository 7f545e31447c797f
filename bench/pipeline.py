"""Throughput and decision latency of the leader pipeline, with its ceilings, in one run.

    python -m bench.pipeline [--events 200000] [--batches 500,2000] [--repeat 5]
                             [--rate 2000] [--high-rate 20000] [--decisions 100] [--json]

Starts its own Redis on a free loopback port. Rows:

* ``pipeline``: the whole leader pipeline (fenced Lua read, decode, pure policy, one fenced
  commit per batch with state, decisions and acks) over the pre-filled ``NS:health``;
* ``bare-loop``: redis-py's public API (``XREADGROUP``, msgspec decode, one ``XACK`` per
  batch, in sequence) over the same entries in its own group — no fencing, no policy, no
  state, no dead letters; not a ceiling: it pays for redis-py's per-entry dicts;
* the ceilings of :mod:`bench.baselines` (redis-py tuned; a thin hiredis protocol client)
  and the peer of :mod:`bench.faststream_peer` (FastStream's batch subscriber, 1000 per
  batch), same entries, each in its own group;
* ``leader memory``: a real ``python -m workers.coordinator`` drains the same entries at
  the default batch size; its events/s and peak RSS (``VmHWM``);
* ``decision-latency``: a ``python -m workers.coordinator`` process follows ``NS:health`` fed
  at a steady ``--rate`` events/s (goal p99 <= 5 ms at 2,000), then a fresh one at
  ``--high-rate`` (goal p99 <= 10 ms at 20,000), by 3 regions x 4 observers; every 0.3 s
  the active region fails by quorum; latency is from the ``XADD`` of the entry that
  completed the evidence to the decision (:mod:`bench.latency`).

Throughput rows are measured for each batch size (``FAILOVER_BATCH_SIZE``; the loops use the
same COUNT) in ``--repeat`` interleaved passes (every consumer once per pass; the machine is
shared and noisy); the medians are compared, the pipeline's to each consumer's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench import baselines, hostile
from bench.faststream_peer import MAX_RECORDS, faststream
from bench.history import REGIONS, fill, history
from bench.latency import decision_latency
from bench.leader_memory import leader_row
from bench.percentiles import tail
from bench.phases import Phases
from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.lease import Acquired, Lease
from streams.server import RedisServer
from workers.coordinator.collector import tune_collector
from workers.coordinator.leadership import Leadership
from workers.coordinator.pipeline import LeaderPipeline
from workers.settings import load_settings

# The other consumers of the same entries: label, consumer, COUNT (None: the batch size).
_OTHERS: dict[str, tuple[str, baselines.Baseline, int | None]] = {
    "redis_py_tuned": ("redis-py tuned (ceiling)", baselines.redis_py_tuned, None),
    "thin_hiredis": ("thin hiredis client (ceiling)", baselines.thin_hiredis, None),
    "faststream": (f"FastStream batch {MAX_RECORDS} (peer)", faststream, MAX_RECORDS),
}
_GOALS = {"redis_py_tuned": "goal >= 0.75 x", "faststream": "goal >= 3 x"}
# Decision latency goals (p99, ms) by paced event rate.
_LATENCY_GOALS_MS = {2000: 5, 20_000: 10}


def _versus(pipe: list[float], values: list[float]) -> dict[str, Any]:
    """One consumer's median events/s and the pipeline's median over it."""
    median = statistics.median(values)
    return {
        "events_per_s": round(median),
        "ratio": round(statistics.median(pipe) / median, 3),
        "all": [round(x) for x in values],
    }


def _table(row: dict[str, Any]) -> list[str]:
    """The batch's medians: every consumer beside the pipeline, and pipeline / consumer."""
    lines = [
        f"  {'batch ' + str(row['batch']) + ', medians':<34} {'events/s':>9}  pipeline / it",
        f"  {'leader pipeline':<34} {row['median_pipeline_events_per_s']:>9,}",
        f"  {'redis-py public API (bare loop)':<34} {row['median_bare_loop_events_per_s']:>9,}"
        f"  {row['median_ratio']:>5.2f} x",
    ]
    for name, (label, _, _) in _OTHERS.items():
        other = row[name]
        lines.append(
            f"  {label:<34} {other['events_per_s']:>9,}  {other['ratio']:>5.2f} x"
            f"  {_GOALS.get(name, '')}".rstrip()
        )
    return lines


async def _pipeline(r: aioredis.Redis, url: str, keys: Keys, n: int, batch: int) -> dict[str, Any]:
    """The whole leader pipeline over the pre-filled stream, from a fresh group and state."""
    await r.delete(keys.state, keys.decisions, keys.dlq, keys.leader)
    groups = [g["name"] for g in await r.xinfo_groups(keys.health)]
    if GROUP.encode() in groups:
        await r.xgroup_destroy(keys.health, GROUP)
    settings = load_settings(
        {
            "FAILOVER_REDIS_URL": url,
            "FAILOVER_NAMESPACE": keys.namespace,
            "FAILOVER_REGIONS": ",".join(REGIONS),
            "FAILOVER_QUORUM": "2",
            "FAILOVER_BATCH_SIZE": str(batch),
            "FAILOVER_COOLDOWN_MS": "0",
            "FAILOVER_WINDOW_MS": "600000",
            "FAILOVER_STALE_AFTER_MS": "600000",
        }
    )
    result = await Lease(r, keys, "bench#1", 60_000).acquire()
    assert isinstance(result, Acquired)
    now = time.monotonic()
    leadership = Leadership("bench#1", result.epoch, now, now)
    pipeline = LeaderPipeline(r, keys, settings, leadership)
    start = time.perf_counter()
    task = asyncio.create_task(pipeline.run())
    while pipeline.stats.applied + pipeline.stats.dead_letters < n:
        if task.done():
            task.result()
            raise RuntimeError("pipeline ended early")
        await asyncio.sleep(0.002)
    # The last batch is applied; wait for its commit (acks) to land.
    while (await r.xpending(keys.health, GROUP))["pending"]:
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return {
        "events_per_s": n / elapsed,
        "decisions": pipeline.stats.decisions,
        "commits": pipeline.stats.commits,
    }


def _latency_line(lat: dict[str, Any]) -> str:
    """One decision-latency row, with its goal."""
    goal = _LATENCY_GOALS_MS.get(lat["rate"])
    return (
        f"decision latency at {lat['achieved_rate']:,} events/s (paced at {lat['rate']:,})"
        f" over {lat['server']['n']} decisions: server p50 {lat['server']['p50_ms']} ms"
        f" {tail(lat['server'])}; client p50 {lat['client']['p50_ms']} ms"
        f" {tail(lat['client'])}" + (f"  (goal p99 <= {goal} ms)" if goal else "")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batches", default="500,2000", help="comma-separated batch sizes")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--high-rate", type=int, default=20_000, help="0: no second row")
    parser.add_argument("--decisions", type=int, default=100)  # a p99 needs 100
    parser.add_argument("--adversarial-events", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # The in-process pipeline runs with the coordinator process's collector settings (every
    # consumer of this process, the baselines too, runs under them).
    tune_collector()
    logging.getLogger("workers").setLevel(logging.CRITICAL)  # decisions would flood stdout
    batches = [int(b) for b in args.batches.split(",")]
    server = RedisServer()
    server.start()
    throughput = []
    phase = Phases()
    try:
        r = connect(server.url, socket_timeout=30)
        keys = Keys("{bench}")
        phase(f"filling {args.events} health events")
        await fill(r, keys.health, history(args.events))
        for batch in batches:
            bare, pipe, runs = [], [], []
            others: dict[str, list[float]] = {name: [] for name in _OTHERS}
            for i in range(args.repeat):
                phase(f"batch {batch}: pass {i + 1}/{args.repeat} (each loop, then the pipeline)")
                bare.append(await baselines.redis_py(server.url, keys.health, args.events, batch))
                for name, (_, consume, count) in _OTHERS.items():
                    others[name].append(
                        await consume(server.url, keys.health, args.events, count or batch)
                    )
                run = await _pipeline(r, server.url, keys, args.events, batch)
                pipe.append(run["events_per_s"])
                runs.append(run)
            throughput.append(
                {
                    "batch": batch,
                    "bare_loop_events_per_s": round(max(bare)),
                    "pipeline_events_per_s": round(max(pipe)),
                    "ratio": round(max(pipe) / max(bare), 3),
                    "median_bare_loop_events_per_s": round(statistics.median(bare)),
                    "median_pipeline_events_per_s": round(statistics.median(pipe)),
                    "median_ratio": round(statistics.median(pipe) / statistics.median(bare), 3),
                    "all_bare": [round(x) for x in bare],
                    "all_pipeline": [round(x) for x in pipe],
                    "commits": runs[0]["commits"],
                    "decisions": runs[0]["decisions"],
                }
                | {name: _versus(pipe, values) for name, values in others.items()}
            )
        phase(f"leader memory: a coordinator process drains {args.events} events")
        memory = await leader_row(server.url, keys, args.events, batches[0])
        await r.aclose()
        phase(f"decision latency: {args.decisions} decisions at {args.rate} events/s")
        latency = await decision_latency(server.url, args.rate, args.decisions, "{lat}")
        high: dict[str, Any] | None = None
        if args.high_rate:
            phase(f"decision latency: {args.decisions} decisions at {args.high_rate} events/s")
            high = await decision_latency(server.url, args.high_rate, args.decisions, "{lat2}")
        phase("adversarial: the same leader under hostile input")
        # The same leader under hostile input (bench/hostile.py), same server.
        adversarial = await hostile.rows(server.url, args.adversarial_events)
        phase("done")
    finally:
        server.stop()
    result = {
        "events": args.events,
        "throughput": throughput,
        "leader_memory": memory,
        "decision_latency": latency,
        "decision_latency_high_rate": high,
        "adversarial": adversarial,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.events} pre-filled health events; {args.repeat} interleaved passes each")
    for row in throughput:
        for label, suffix in (("median", "median_"), ("best  ", "")):
            print(
                f"batch {row['batch']:>5} {label}: redis-py loop"
                f" {row[suffix + 'bare_loop_events_per_s']:>9,} events/s  pipeline"
                f" {row[suffix + 'pipeline_events_per_s']:>9,} events/s"
                f"  = {row[suffix + 'ratio']:.2f} x it  ({row['commits']} commits)"
            )
        print("\n".join(_table(row)))
    mem = memory
    print(
        f"leader memory: a coordinator process drained {mem['events']:,} events (batch"
        f" {mem['batch']}) at {mem['events_per_s']:,} events/s, peak RSS"
        f" {mem['leader_peak_rss_mib']} MiB"
    )
    for lat in (latency, high):
        if lat is not None:
            print(_latency_line(lat))
    print("\n".join(hostile.render(adversarial)))


if __name__ == "__main__":
    asyncio.run(main())
