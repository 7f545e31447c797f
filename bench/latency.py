"""Decision latency of a real coordinator process at a steady event rate (bench/pipeline.py).

A producer feeds ``NS:health`` with 3 regions x 4 observers at ``rate`` events/s, paced in
rounds of 12 events; every 0.3 s (by the schedule, whatever the rate) the active region
fails for 3 rounds by quorum, which makes one failover decision. Latency is from the
``XADD`` of the entry that completed the evidence to the decision: ``server`` = decision
entry id - trigger entry id (Redis clock, 1 ms resolution), ``client`` = trigger ``XADD``
sent -> decision seen by a blocking ``XREAD``.

Pacing: a round is due every ``12 / rate`` seconds; when the producer wakes late (a
sleep's granularity is about a millisecond, and at 20,000 events/s a round is due every
0.6 ms) every round due by then goes out in one pipeline, so the rate holds on average
and each entry still gets its own id. ``achieved_rate`` is what was really sent.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from bench.coordinator_process import spawn_coordinator
from bench.percentiles import summarize
from schemas.codec import decode_entry, encode_data
from schemas.events import FailoverDecision, HealthEvent
from streams.connection import connect
from streams.group import split_id
from streams.keys import Keys

OUTAGE_EVERY_S = 0.3
OBSERVERS = ("o1", "o2", "o3", "o4")
REGIONS = ("eu", "us", "ap")
# At most this many rounds in one pipeline when catching up (12 events each).
MAX_ROUNDS_PER_SEND = 50


async def decision_latency(url: str, rate: int, decisions: int, namespace: str) -> dict[str, Any]:
    """Run a coordinator process at ``rate`` events/s until ``decisions`` decisions."""
    keys = Keys(namespace)
    proc = spawn_coordinator(
        url,
        keys.namespace,
        REGIONS,
        instance_id="bench",
        quorum="2",
        threshold="3",
        recovery_threshold="3",
        cooldown_ms="50",
        log_level="INFO",
    )
    producer = connect(url)
    follower = connect(url, socket_timeout=5)
    # Failing event id -> (entry id, send time): the evidence of every decision.
    sent: dict[str, tuple[bytes, float]] = {}
    counts = {"events": 0}
    stop = asyncio.Event()
    seen_decisions: list[tuple[bytes, FailoverDecision, float]] = []

    async def follow() -> None:
        last = b"0-0"
        while not stop.is_set():
            reply = await follower.xread({keys.decisions: last}, block=100)
            seen = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    decision = decode_entry(fields, stream="decisions")
                    if isinstance(decision, FailoverDecision):
                        seen_decisions.append((entry_id, decision, seen))
            if len(seen_decisions) >= decisions:
                stop.set()

    async def produce() -> None:
        period = len(REGIONS) * len(OBSERVERS) / rate
        every = max(1, round(OUTAGE_EVERY_S / period))  # rounds between outages
        rnd = 0
        outage = 0
        failing: str | None = None
        failing_until = 0
        next_at = time.perf_counter() + 0.5  # let the coordinator get elected
        while not stop.is_set():
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            due = 1 + int((time.perf_counter() - next_at) / period)
            due = min(max(due, 1), MAX_ROUNDS_PER_SEND)
            next_at += due * period
            failing_ids: list[tuple[str, int]] = []
            async with producer.pipeline(transaction=False) as pipe:
                k = 0
                for _ in range(due):
                    if rnd % every == 0 and rnd >= 2 * every:
                        failing = "eu" if outage % 2 == 0 else "us"  # the active region
                        failing_until = rnd + 3
                        outage += 1
                    for region in REGIONS:
                        unhealthy = region == failing and rnd < failing_until
                        status = "unhealthy" if unhealthy else "healthy"
                        for observer in OBSERVERS:
                            event_id = f"{observer}-{region}-{rnd}"
                            event = HealthEvent(event_id, region, observer, status, time.time())  # type: ignore[arg-type]
                            pipe.xadd(keys.health, {b"data": encode_data(event)})
                            if unhealthy:
                                failing_ids.append((event_id, k))
                            k += 1
                    rnd += 1
                start = time.perf_counter()
                entry_ids = await pipe.execute()
            counts["events"] += len(entry_ids)
            for event_id, i in failing_ids:
                sent[event_id] = (entry_ids[i], start)

    try:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(follow(), produce()), timeout=180)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        await producer.aclose()
        await follower.aclose()
    server_ms: list[float] = []
    client_ms: list[float] = []
    for entry_id, decision, seen in seen_decisions:
        # The trigger is the newest entry of the evidence: it completed the quorum.
        trigger = max(decision.evidence, key=lambda e: split_id(sent[e][0]))
        trigger_id, trigger_sent = sent[trigger]
        server_ms.append(float(split_id(entry_id)[0] - split_id(trigger_id)[0]))
        client_ms.append((seen - trigger_sent) * 1000)
    return {
        "rate": rate,
        "events": counts["events"],
        "achieved_rate": round(counts["events"] / elapsed),
        "server": summarize(server_ms),
        "client": summarize(client_ms),
        "coordinator_exit": proc.returncode,
    }
