"""What the size guard costs Redis per read: CPU time, not wall time, in one run.

    python -m bench.read_guard [--events 100000] [--batch 500] [--repeat 3] [--json]

Starts its own Redis, pre-fills ``NS:health`` with realistic events and drains it with
``--batch``-entry reads, alternating each way per pass:

* ``native``: a bare ``XREADGROUP`` of the two input streams (no fence, no guard);
* ``guarded``: the leader's fenced read (:meth:`ConsumerGroup.read_raw`: the guard script's
  look-ahead, ``TIME``, the native ``XREADGROUP``, in one MULTI/EXEC);
* ``look-ahead``: the guard's look-ahead alone (a script that only ``XRANGE``\\ s the next
  entries into Lua), then the native read.

Redis's own CPU time (``INFO cpu``, user + system) per read is the figure: on a shared
machine it moves far less than wall time. Reads only; nothing is acked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench.history import fill, history
from streams.commit import Fenced
from streams.connection import connect
from streams.group import ConsumerGroup
from streams.keys import GROUP, Keys
from streams.lease import Acquired, Lease
from streams.server import RedisServer

_LOOK = "return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))"
MODES = ("native", "guarded", "look-ahead")


async def _cpu_s(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _drain(r: aioredis.Redis, keys: Keys, group: ConsumerGroup, mode: str, batch: int) -> int:
    """Read the whole stream from a fresh group one way; the number of reads."""
    await r.xgroup_destroy(keys.health, GROUP)
    await group.ensure()
    look = await r.script_load(_LOOK)
    after = "-"
    reads = 0
    while True:
        reads += 1
        if mode == "guarded":
            got = await group.read_raw([0, 1], batch)
            if isinstance(got, Fenced):
                raise RuntimeError("fenced: another leader took the bench's lease")
            entries = got.entries[0]
        else:
            if mode == "look-ahead":
                await r.evalsha(look, 1, keys.health, after, batch)
            reply = await r.xreadgroup(
                GROUP, group.owner, {keys.health: ">", keys.events: ">"}, count=batch
            )
            entries = reply[0][1] if reply else []
        if not entries:
            return reads
        after = "(" + (entries[-1][0].decode())


async def run(events: int, batch: int, repeat: int) -> dict[str, Any]:
    """Redis CPU microseconds per read, each way, median over ``repeat`` passes."""
    server = RedisServer()
    server.start()
    try:
        r = connect(server.url, socket_timeout=30)
        keys = Keys("{guard}")
        await fill(r, keys.health, history(events))
        lease = await Lease(r, keys, "bench", 600_000).acquire()
        assert isinstance(lease, Acquired)
        group = ConsumerGroup(r, keys, "bench", lease.epoch)
        await group.ensure()
        per_read: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(repeat):
            for mode in MODES:
                before = await _cpu_s(r)
                reads = await _drain(r, keys, group, mode, batch)
                per_read[mode].append((await _cpu_s(r) - before) / reads * 1e6)
        await r.aclose()
    finally:
        server.stop()
    medians = {mode: statistics.median(v) for mode, v in per_read.items()}
    return {
        "events": events,
        "batch": batch,
        "redis_cpu_us_per_read": {m: round(v) for m, v in medians.items()},
        "all": {m: [round(x) for x in v] for m, v in per_read.items()},
        "guarded_over_native": round(medians["guarded"] / medians["native"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.events, args.batch, args.repeat))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.events} events, {args.batch}-entry reads, Redis CPU per read (median):")
    for mode in MODES:
        all_ = ", ".join(str(x) for x in result["all"][mode])
        print(f"  {mode:<10} {result['redis_cpu_us_per_read'][mode]:>6} us  ({all_})")
    print(f"guarded / native = {result['guarded_over_native']:.2f} x")


if __name__ == "__main__":
    main()
