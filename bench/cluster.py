"""Lease round trips on one server and on a 3-primary Redis Cluster, in one run.

    python -m bench.cluster [--rounds 2000] [--fresh 100] [--json]

Starts its own server and cluster on free loopback ports. On the cluster every client is
given a node that does NOT own the namespace's slot, as an operator's URL may be:

* ``renew`` / ``read lease``: the renew script (EVALSHA) and the lease read (MULTI/EXEC)
  on a warm client, interleaved single/cluster, ``--rounds`` each;
* ``first renew``: the first call of a fresh client (connect + HELLO/CLIENT SETNAME, and on
  the cluster the ``MOVED`` and the resend to the owner), ``--fresh`` clients each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.cluster_set import ClusterSet
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Lease, read_lease
from streams.server import RedisServer

NAMESPACE = "{bench}"


def _pct(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(p99, 3)}


async def _timed(op: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await op()
    return (time.perf_counter() - start) * 1000


async def _measure(urls: dict[str, str], rounds: int, fresh: int) -> dict[str, Any]:
    keys = Keys(NAMESPACE)
    clients = {name: connect(url) for name, url in urls.items()}
    leases = {name: Lease(c, keys, "bench#1", 60_000) for name, c in clients.items()}
    epochs = {}
    for name, lease in leases.items():
        result = await lease.acquire()
        assert isinstance(result, Acquired)
        epochs[name] = result.epoch
    times: dict[str, dict[str, list[float]]] = {
        op: {name: [] for name in urls} for op in ("renew", "read lease", "first renew")
    }
    for _ in range(rounds):  # interleaved, so load on the host hits both alike
        for name, lease in leases.items():
            epoch = epochs[name]
            times["renew"][name].append(await _timed(lambda: lease.renew(epoch)))  # noqa: B023
            client = clients[name]
            times["read lease"][name].append(await _timed(lambda: read_lease(client, keys)))  # noqa: B023
    for _ in range(fresh):
        for name, url in urls.items():
            client = connect(url)
            lease = Lease(client, keys, "bench#1", 60_000)
            epoch = epochs[name]
            times["first renew"][name].append(await _timed(lambda: lease.renew(epoch)))  # noqa: B023
            await client.aclose()
    for client in clients.values():
        await client.aclose()
    return {
        op: {name: {**_pct(values), "n": len(values)} for name, values in per.items()}
        for op, per in times.items()
    }


def main() -> None:
    """Run the measurement and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--fresh", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server, cluster = RedisServer(), ClusterSet()
    try:
        server.start()
        cluster.start()
        urls = {"single": server.url, "cluster": cluster.entry_url(NAMESPACE)}
        result = asyncio.run(_measure(urls, args.rounds, args.fresh))
    finally:
        cluster.stop()
        server.stop()
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'operation':<12} {'redis':<8} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for op, per in result.items():
        for name, row in per.items():
            print(f"{op:<12} {name:<8} {row['n']:>5} {row['p50_ms']:>8} {row['p99_ms']:>8}")


if __name__ == "__main__":
    main()
