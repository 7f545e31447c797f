"""Kafka -> Redis bridge throughput and latency, next to a bare aiokafka consumer, same run.

    python -m bench.bridge [--records 200000] [--partitions 4] [--rate 1000] [--seconds 5] [--json]

Starts its own tansu broker and Redis server on free loopback ports. Three readers, each with
a fresh consumer group on the same topic:

* ``bare-aiokafka``: one aiokafka consumer in this process (getmany, no Redis): the ceiling;
  ``bare-aiokafka-wait1500`` the same with faust's fetch wait (see FAUST_FETCH_WAIT_MS);
  ``aiokafka+redis`` the same consumer appending each batch to Redis before committing: what
  a hand-written bridge without faust would do.
* ``bridge-x1``: one ``python -m workers.bridge`` process.
* ``bridge-x2``: two bridge processes sharing the partitions.

Throughput: the topic is filled first; a reader's rate is counted from its first record to
the last, and also over the steady middle (10%-90%: excludes start-up and the rebalance when
the second bridge joins). Latency: afterwards records are produced at a fixed rate, each
carrying its send time; latency = arrival (delivered by the consumer, or seen in the Redis
stream) - send time; p50/p99. On the shared 2-core machine figures are noisy: compare the
rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.server import RedisServer
from tests.kafka_broker import TansuBroker, create_topics
from tests.kafka_helpers import Topics, kafka_env
from tests.worker_process import WorkerProcess

PAYLOAD_PAD = "x" * 80  # a health event is ~200-250 bytes of JSON
# faust-streaming hard-codes fetch_max_wait_ms=1500 for its consumer; tansu holds a fetch for
# up to about half the max wait even when records are waiting (a real Kafka broker answers as
# soon as fetch_min_bytes is there), so the bare consumer runs with both waits for comparison.
FAUST_FETCH_WAIT_MS = 1500
SCENARIOS: list[tuple[str, int]] = [
    ("bare-aiokafka", 0),
    ("bare-aiokafka-wait1500", 0),
    ("aiokafka+redis", 0),
    ("bridge-x1", 1),
    ("bridge-x2", 2),
]


def record(n: int, sent_at: float | None = None) -> bytes:
    """One health event; ``sent_at`` (unix seconds) rides along in ``detail`` for latency."""
    return json.dumps(
        {
            "type": "health",
            "event_id": f"bench-{n}",
            "region": f"r{n % 3}",
            "source": f"p{n % 16}",
            "status": "healthy",
            "observed_at": time.time(),
            "detail": f"{sent_at!r}|{PAYLOAD_PAD}" if sent_at else PAYLOAD_PAD,
        }
    ).encode()


def sent_time(value: bytes) -> float | None:
    """The send time a latency record carries, else None."""
    detail = json.loads(value).get("detail") or ""
    head = detail.split("|", 1)[0]
    try:
        return float(head)
    except ValueError:
        return None


async def fill(bootstrap: str, topic: str, count: int, start: int = 0) -> float:
    """Produce ``count`` records as fast as batching allows; returns records/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    began = time.perf_counter()
    try:
        futures = [
            await producer.send(topic, record(start + n), key=f"k{n % 64}".encode())
            for n in range(count)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count / (time.perf_counter() - began)


async def paced(bootstrap: str, topic: str, rate: float, seconds: float) -> int:
    """Produce at ``rate`` records/s for ``seconds``, each carrying its send time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent = 0
    began = time.monotonic()
    try:
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                await producer.send(topic, record(10**9 + sent, time.time()), key=b"lat")
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rates(arrivals: list[tuple[float, int]], total: int) -> dict[str, float]:
    """Records/s from (time, count-so-far) samples: whole run and the 10%-90% middle."""
    first = next(t for t, n in arrivals if n > 0)
    last = next(t for t, n in arrivals if n >= total)
    lo = next(t for t, n in arrivals if n >= total * 0.1)
    hi = next(t for t, n in arrivals if n >= total * 0.9)
    return {
        "records_per_s": total / max(last - first, 1e-9),
        "steady_records_per_s": total * 0.8 / max(hi - lo, 1e-9),
        "seconds": last - first,
    }


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds."""
    if len(latencies) < 2:
        return {"n": len(latencies)}
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "n": len(latencies),
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def bare_consumer(
    bootstrap: str,
    topic: str,
    total: int,
    rate: float,
    seconds: float,
    fetch_wait_ms: int,
    redis: aioredis.Redis | None = None,
) -> dict[str, Any]:
    """The baseline: one aiokafka consumer in a fresh group; with ``redis``, each batch is
    also appended (MULTI/EXEC) before its commit, as a hand-written bridge would."""
    key = f"bench-{uuid.uuid4().hex[:8]}"

    async def write(batch: dict[Any, list[Any]]) -> None:
        if redis is None or not batch:
            return
        async with redis.pipeline(transaction=True) as pipe:
            for msgs in batch.values():
                for msg in msgs:
                    pipe.xadd(key, {b"data": msg.value})
            await pipe.execute()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
        max_poll_records=500,
        fetch_max_wait_ms=fetch_wait_ms,
    )
    await consumer.start()
    try:
        count = 0
        arrivals = [(time.perf_counter(), 0)]
        cpu_began: float | None = None
        while count < total:
            batch = await consumer.getmany(timeout_ms=200)
            if cpu_began is None and batch:
                cpu_began = time.process_time()
            await write(batch)
            count += sum(len(msgs) for msgs in batch.values())
            arrivals.append((time.perf_counter(), count))
            if batch:
                await consumer.commit()
        result: dict[str, Any] = rates(arrivals, total)
        # This process's CPU (client side only: not the broker's, not Redis's).
        result["cpu_us_per_record"] = (time.process_time() - (cpu_began or 0)) / total * 1e6
        latencies: list[float] = []
        feeding = asyncio.create_task(paced(bootstrap, topic, rate, seconds))
        expected: int | None = None
        deadline = time.monotonic() + seconds + 30
        while (expected is None or len(latencies) < expected) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=50)
            await write(batch)
            now = time.time()
            for msgs in batch.values():
                for msg in msgs:
                    sent = sent_time(msg.value)
                    if sent is not None:
                        latencies.append(now - sent)
            if batch:
                await consumer.commit()
            if expected is None and feeding.done():
                expected = feeding.result()
        result["latency"] = percentiles(latencies)
        return result
    finally:
        await consumer.stop()


async def bridges(
    broker: TansuBroker,
    redis_url: str,
    topic: str,
    n_workers: int,
    total: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """``n_workers`` bridge processes in a fresh group, each into a fresh namespace."""
    namespace = "{bench-" + uuid.uuid4().hex[:8] + "}"
    topics = Topics(health=topic, events=topic + "-events", decisions=topic + "-decisions")
    env = kafka_env(broker.bootstrap, topics, redis_url=redis_url, namespace=namespace)
    procs = [WorkerProcess("workers.bridge", env, f"bench-bridge-{i}") for i in range(n_workers)]
    redis = aioredis.Redis.from_url(redis_url)
    key = f"{namespace}:health"
    try:
        for proc in procs:
            proc.start()
        arrivals = [(time.perf_counter(), 0)]
        deadline = time.monotonic() + 120
        count = 0
        cpu_began: dict[int, float] = {}
        while count < total:
            dead = [p for p in procs if p.proc is not None and p.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                proc = (dead or procs)[0]
                raise RuntimeError(f"bridge stuck at {count}/{total}: {proc.output()[-800:]}")
            count = int(await redis.xlen(key))
            if count and not cpu_began:
                cpu_began = {p.proc.pid: process_cpu_s(p.proc.pid) for p in procs if p.proc}
            arrivals.append((time.perf_counter(), count))
            await asyncio.sleep(0.005)
        result: dict[str, Any] = rates(arrivals, total)
        # The bridge processes' CPU from their first record in Redis to the last (all
        # threads, client side only); counted from the first record, so start-up is out.
        used = sum(process_cpu_s(pid) - began for pid, began in cpu_began.items())
        result["cpu_us_per_record"] = used / total * 1e6
        # Read on from the last entry there, not from "$": a write landing between two
        # XREADs from "$" would be missed (and counted as duplicates below).
        newest = await redis.xrevrange(key, count=1)
        last_id = newest[0][0] if newest else b"0-0"
        latencies: list[float] = []
        feeding = asyncio.create_task(paced(broker.bootstrap, topic, rate, seconds))
        expected: int | None = None
        deadline = time.monotonic() + seconds + 30
        while (expected is None or len(latencies) < expected) and time.monotonic() < deadline:
            reply = await redis.xread({key: last_id}, block=50, count=1000)
            now = time.time()
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    sent = sent_time(fields[b"data"])
                    if sent is not None:
                        latencies.append(now - sent)
            if expected is None and feeding.done():
                expected = feeding.result()
        result["latency"] = percentiles(latencies)
        result["duplicates"] = int(await redis.xlen(key)) - total - len(latencies)
        for proc in procs:
            proc.terminate()
        return result
    finally:
        for proc in procs:
            proc.close()
        await redis.aclose()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario, each reading its own copy of the same records."""
    broker = TansuBroker()
    server = RedisServer()
    broker.start()
    server.start()
    try:
        out: dict[str, Any] = {
            "records": args.records,
            "partitions": args.partitions,
            "latency_rate_per_s": args.rate,
            "latency_seconds": args.seconds,
            "cpus": os.cpu_count(),
        }
        for name, n_workers in SCENARIOS:
            # A topic per scenario: the paced latency records of one must not reach the next.
            topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            await create_topics(broker.bootstrap, {topic: args.partitions, topic + "-events": 1})
            out.setdefault("produce_records_per_s", {})[name] = await fill(
                broker.bootstrap, topic, args.records
            )
            if n_workers == 0:
                wait_ms = FAUST_FETCH_WAIT_MS if name.endswith("1500") else 500
                redis = aioredis.Redis.from_url(server.url) if "redis" in name else None
                try:
                    out[name] = await bare_consumer(
                        broker.bootstrap,
                        topic,
                        args.records,
                        args.rate,
                        args.seconds,
                        wait_ms,
                        redis,
                    )
                finally:
                    if redis is not None:
                        await redis.aclose()
            else:
                out[name] = await bridges(
                    broker, server.url, topic, n_workers, args.records, args.rate, args.seconds
                )
        return out
    finally:
        broker.stop()
        server.stop()


def show(out: dict[str, Any]) -> None:
    """The figures as a small table."""
    print(
        f"{out['records']} records on {out['partitions']} partitions, "
        f"latency at {out['latency_rate_per_s']:.0f}/s for {out['latency_seconds']:.0f}s, "
        f"{out['cpus']} CPUs"
    )
    print(
        f"{'reader':<24}{'rec/s':>10}{'steady/s':>10}{'cpu us/rec':>11}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for name, _n in SCENARIOS:
        row = out[name]
        lat = row["latency"]
        print(
            f"{name:<24}{row['records_per_s']:>10.0f}{row['steady_records_per_s']:>10.0f}"
            f"{row['cpu_us_per_record']:>11.1f}"
            f"{lat.get('p50_ms', float('nan')):>9.1f}{lat.get('p99_ms', float('nan')):>9.1f}"
            f"{lat.get('max_ms', float('nan')):>9.1f}"
        )
    base = out["bare-aiokafka"]["steady_records_per_s"]
    hand = out["aiokafka+redis"]["steady_records_per_s"]
    for name in ("bridge-x1", "bridge-x2"):
        rate = out[name]["steady_records_per_s"]
        print(
            f"{name}: {rate / base:.1%} of the bare consumer's steady rate, "
            f"{rate / hand:.0%} of aiokafka+redis"
        )


def main() -> None:
    """Parse arguments, run, print (or dump JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=200000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1000.0, help="latency phase records/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency phase length")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        show(out)


if __name__ == "__main__":
    main()
