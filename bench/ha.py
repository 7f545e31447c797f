"""Leadership across primary losses on a replicated Redis, and what FAILOVER_MIN_REPLICAS costs.

    python -m bench.ha [--kills 20] [--ttl-ms 1000] [--rate 2000] [--decisions 40] [--json]
                       [--log-dir DIR] [--no-latency]

Starts its own replica set on free loopback ports (:class:`streams.replica_set.ReplicaSet`:
a primary, two replicas, three Sentinels, ``down-after-milliseconds`` 1000) and fleets of
three ``python -m workers.coordinator`` processes that find the primary through Sentinel.

* ``kills``: the primary is SIGKILLed ``--kills`` times (each time restarted as a replica of
  the new primary, and the set left to settle, so the next kill has replicas). Per kill:
  ``switch`` = SIGKILL -> the first Sentinel naming another primary
  (``SENTINEL get-master-addr-by-name``, polled every 10 ms); ``leader`` = SIGKILL -> the
  next ``leader_changed`` on ``NS:decisions`` (its entry id, the server's clock; same host);
  ``leader - switch`` is what the fleet adds to Sentinel's own time; ``+switch-master`` =
  SIGKILL -> the first Sentinel's ``+switch-master`` message (the other Sentinels adopting
  the promotion, when the leader's hello reaches them; coordinators act on the leader's
  ``+promoted-slave`` before that). Per kill in ``--json`` (``kills.rows``); ``--log-dir``
  keeps the coordinators' INFO logs, ``--no-latency`` runs only the kills. Fleet run with
  ``FAILOVER_MIN_REPLICAS`` = ``--kill-min-replicas`` (default 1, what the README advises).
* ``decision latency``: a producer writes ``--rate`` health events/s (3 regions x 4
  observers, the rounds due every 10 ms in one pipeline); every 50 rounds the active
  region fails by quorum for 3 rounds; latency =
  decision entry id - the entry id of the event that completed its evidence (Redis clock,
  1 ms resolution), as :mod:`bench.pipeline` measures it; ``client`` = that event's XADD
  sent -> the decision seen by a blocking XREAD. Once with ``FAILOVER_MIN_REPLICAS`` 0, once 1.

Goal: leader back within Sentinel's switch time + TTL + 100 ms (p99 of ``leader - switch``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import redis.asyncio

from bench.percentiles import P99_MIN_SAMPLES, spread
from bench.phases import Phases
from schemas.codec import decode_entry, encode_data
from schemas.events import FailoverDecision, HealthEvent, LeaderChanged
from streams.address import RedisTarget
from streams.cancel import cancel_and_wait
from streams.connection import connect
from streams.group import split_id
from streams.keys import Keys
from streams.replica_set import ReplicaSet
from streams.server import die_with_parent

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("eu", "us", "ap")
OBSERVERS = ("o1", "o2", "o3", "o4")


def _summary(values_ms: list[float]) -> dict[str, float]:
    return spread(values_ms, digits=1)  # empty: {"n": 0}, the table prints nan


class _Fleet:
    """Three coordinator processes on the replica set, under one namespace."""

    def __init__(
        self,
        group: ReplicaSet,
        keys: Keys,
        ttl_ms: int,
        min_replicas: int,
        log_dir: Path | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FAILOVER_REDIS_URL": group.url,
            "FAILOVER_REDIS_SENTINELS": group.sentinels_setting,
            "FAILOVER_NAMESPACE": keys.namespace,
            "FAILOVER_REGIONS": ",".join(REGIONS),
            "FAILOVER_MIN_REPLICAS": str(min_replicas),
            "FAILOVER_LEASE_TTL_MS": str(ttl_ms),
            "FAILOVER_QUORUM": "2",
            "FAILOVER_THRESHOLD": "3",
            "FAILOVER_RECOVERY_THRESHOLD": "3",
            "FAILOVER_COOLDOWN_MS": "50",
            "FAILOVER_LOG_LEVEL": "INFO" if log_dir else "ERROR",
        }
        self.logs = [
            open(log_dir / f"{keys.namespace.strip('{}')}-ha{n}.log", "ab")  # noqa: SIM115
            if log_dir
            else None
            for n in range(3)
        ]
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "workers.coordinator"],
                env={**self.env, "FAILOVER_INSTANCE_ID": f"ha{n}"},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=self.logs[n] or subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - none outlives a killed bench
            )
            for n in range(3)
        ]

    def stop(self) -> list[int]:
        """SIGTERM all (a process that exited earlier keeps its code); the exit codes."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in self.procs]
        for log in self.logs:
            if log is not None:
                log.close()
        return codes


class _Follower:
    """Follows NS:decisions through Sentinel across switches, as an executor would."""

    def __init__(self, target: RedisTarget, keys: Keys) -> None:
        self.client: Any = connect(target, socket_timeout=2)
        self.keys = keys
        self.seen: list[tuple[bytes, LeaderChanged | FailoverDecision, float]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        last = b"0-0"
        while True:
            try:
                reply = await self.client.xread({self.keys.decisions: last}, block=100)
            except (redis.RedisError, OSError):
                await asyncio.sleep(0.01)
                continue
            at = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    entry = decode_entry(fields, stream="decisions")
                    assert isinstance(entry, LeaderChanged | FailoverDecision)
                    self.seen.append((entry_id, entry, at))

    def leaders_after(self, wall_ms: float) -> list[int]:
        """Entry-id milliseconds of the leader_changed entries written after ``wall_ms``."""
        return [
            split_id(e)[0]
            for e, d, _ in self.seen
            if isinstance(d, LeaderChanged) and split_id(e)[0] >= wall_ms
        ]

    def active(self) -> str:
        """The active region as the last decision seen made it."""
        moves = [d.to_region for _, d, _ in self.seen if isinstance(d, FailoverDecision)]
        return moves[-1] if moves else REGIONS[0]

    async def close(self) -> None:
        """Stop following; close the client."""
        await cancel_and_wait(self.task)  # a plain cancel can be lost in redis-py (3.11)
        await self.client.aclose()


async def _first_leader(follower: _Follower, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not follower.leaders_after(0):
            await asyncio.sleep(0.05)


class _SwitchMessages:
    """Monotonic arrival times of every Sentinel's ``+switch-master`` (the coordinators
    hear it too, after the failover leader's ``+promoted-slave``)."""

    def __init__(self, group: ReplicaSet) -> None:
        self.clients: list[Any] = [
            redis.asyncio.Redis(port=port) for _, port in group.sentinel_addresses
        ]
        self.heard: list[float] = []
        self.tasks = [asyncio.create_task(self._listen(c)) for c in self.clients]

    async def _listen(self, client: Any) -> None:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe("+switch-master")
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    self.heard.append(time.monotonic())

    def first_after(self, at: float) -> float | None:
        """The first message heard after monotonic ``at``."""
        return min((t for t in self.heard if t > at), default=None)

    async def close(self) -> None:
        """Stop listening."""
        await cancel_and_wait(*self.tasks)
        for client in self.clients:
            await client.aclose()


async def _kills(group: ReplicaSet, args: argparse.Namespace, phase: Phases) -> dict[str, Any]:
    keys = Keys("{ha-kills-" + uuid.uuid4().hex[:8] + "}")
    target = RedisTarget(group.url, sentinels=group.sentinel_addresses)
    fleet = _Fleet(group, keys, args.ttl_ms, args.kill_min_replicas, args.log_dir)
    follower = _Follower(target, keys)
    messages = _SwitchMessages(group)
    rows: list[dict[str, float | None]] = []  # per kill: seconds to the switch, to a leader
    try:
        await _first_leader(follower)
        for n in range(args.kills):
            phase(f"kill {n + 1}/{args.kills}")
            await asyncio.to_thread(group.wait_synced)
            await asyncio.sleep(0.5)  # a few renewals on the settled primary
            old = group.primary_port()
            killed_wall_ms = time.time() * 1000
            killed = time.monotonic()
            await asyncio.to_thread(group.by_port(old).kill)
            switch_at = await asyncio.to_thread(group.first_switch, old)
            switch_s = switch_at - killed
            leader_s: float | None = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = follower.leaders_after(killed_wall_ms)
                if found:
                    leader_s = (found[0] - killed_wall_ms) / 1000
                    break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(group.wait_switch, old, 30)
            heard = messages.first_after(killed)
            rows.append(
                {
                    "killed_wall_ms": killed_wall_ms,
                    "switch_s": switch_s,
                    "switch_message_s": None if heard is None else heard - killed,
                    "leader_s": leader_s,
                    "leader_minus_switch_s": None if leader_s is None else leader_s - switch_s,
                }
            )
            await asyncio.to_thread(group.rejoin, group.by_port(old))
    finally:
        await messages.close()
        await follower.close()
        codes = fleet.stop()
    done = [r for r in rows if r["leader_s"] is not None]
    gap = [float(r["leader_s"] or 0) - float(r["switch_s"] or 0) for r in done]
    return {
        "kills": len(rows),
        "without_new_leader_in_30s": len(rows) - len(done),
        "switch": _summary([float(r["switch_s"] or 0) * 1000 for r in rows]),
        "switch_message": _summary(
            [float(r["switch_message_s"]) * 1000 for r in rows if r["switch_message_s"]]
        ),
        "leader": _summary([float(r["leader_s"] or 0) * 1000 for r in done]),
        "leader_minus_switch": _summary([g * 1000 for g in gap]),
        "coordinator_exits": codes,
        "rows": rows,
    }


async def _latency(
    group: ReplicaSet, min_replicas: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Decision latency with a fleet at ``FAILOVER_MIN_REPLICAS`` = ``min_replicas``."""
    keys = Keys("{ha-lat-" + uuid.uuid4().hex[:8] + "}")
    target = RedisTarget(group.url, sentinels=group.sentinel_addresses)
    fleet = _Fleet(group, keys, args.ttl_ms, min_replicas, args.log_dir)
    follower = _Follower(target, keys)
    producer: Any = connect(target, socket_timeout=5)
    sent: dict[str, tuple[bytes, float]] = {}  # event id -> (entry id, send time)
    elapsed = 0.0
    try:
        await _first_leader(follower)
        per_s = args.rate / (len(REGIONS) * len(OBSERVERS))  # rounds per second
        rnd, failing, failing_until = 0, "", 0
        started = time.perf_counter()

        def decided() -> int:
            return sum(isinstance(d, FailoverDecision) for _, d, _ in follower.seen)

        while decided() < args.decisions and time.perf_counter() - started < 180:
            # Every 10 ms the rounds now due, in one pipeline: the rate holds on a busy host.
            await asyncio.sleep(0.01)
            first, rnd = rnd, int((time.perf_counter() - started) * per_s)
            ids = []
            async with producer.pipeline(transaction=False) as pipe:
                for r in range(first, rnd):
                    if r % 50 == 0 and r >= 100:
                        failing, failing_until = follower.active(), r + 3
                    for region in REGIONS:
                        for observer in OBSERVERS:
                            down = region == failing and r < failing_until
                            event_id = f"{observer}-{region}-{r}"
                            status = "unhealthy" if down else "healthy"
                            event = HealthEvent(event_id, region, observer, status, time.time())  # type: ignore[arg-type]
                            pipe.xadd(keys.health, {b"data": encode_data(event)})
                            ids.append(event_id)
                at = time.perf_counter()
                entry_ids = await pipe.execute()
            for event_id, entry_id in zip(ids, entry_ids, strict=True):
                sent[event_id] = (entry_id, at)
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.2)
    finally:
        await follower.close()
        await producer.aclose()
        codes = fleet.stop()
    server_ms, client_ms = [], []
    for entry_id, decision, seen in follower.seen:
        if not isinstance(decision, FailoverDecision):
            continue
        # The trigger is the newest entry of the evidence: it completed the quorum.
        trigger_id, trigger_sent = max(
            (sent[e] for e in decision.evidence), key=lambda s: split_id(s[0])
        )
        server_ms.append(float(split_id(entry_id)[0] - split_id(trigger_id)[0]))
        client_ms.append((seen - trigger_sent) * 1000)
    return {
        "min_replicas": min_replicas,
        "events": len(sent),
        "achieved_rate": round(len(sent) / elapsed) if elapsed else 0,
        "server": _summary(server_ms),
        "client": _summary(client_ms),
        "coordinator_exits": codes,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    phase, started, group = Phases(), time.monotonic(), ReplicaSet()
    phase("starting the replica set (primary, 2 replicas, 3 sentinels)")
    group.start()
    try:
        latency = []
        for min_replicas in () if args.no_latency else (0, 1):
            phase(f"decision latency at {args.rate} events/s, FAILOVER_MIN_REPLICAS={min_replicas}")
            latency.append(await _latency(group, min_replicas, args))
        kills = await _kills(group, args, phase)
        phase("done")
    finally:
        group.stop()
    p99_gap = kills["leader_minus_switch"].get("p99_ms", math.inf)
    limit = args.ttl_ms + 100
    goals = [
        {
            "goal": "leader back within switch + TTL + 100 ms (p99 of leader - switch)",
            "value_ms": p99_gap,
            "n": kills["leader_minus_switch"].get("n", 0),
            "limit_ms": limit,
            "pass": p99_gap <= limit and kills["without_new_leader_in_30s"] == 0,
        }
    ]
    return {
        "config": {
            "kills": args.kills,
            "ttl_ms": args.ttl_ms,
            "kill_min_replicas": args.kill_min_replicas,
            "down_after_ms": group.down_after_ms,
            "rate": args.rate,
            "decisions": args.decisions,
            "python": sys.version.split()[0],
        },
        "kills": kills,
        "decision_latency": latency,
        "goals": goals,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _print(result: dict[str, Any]) -> None:
    cfg, kills = result["config"], result["kills"]
    print(
        f"ha bench: {cfg['kills']} primary SIGKILLs (down-after {cfg['down_after_ms']} ms, "
        f"TTL {cfg['ttl_ms']} ms, FAILOVER_MIN_REPLICAS={cfg['kill_min_replicas']}); "
        f"decision latency at {cfg['rate']} events/s; {result['elapsed_s']} s"
    )
    print(f"{'':46} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'min':>8} {'max':>8}")
    rows = [
        ("SIGKILL -> Sentinel switch", kills["switch"]),
        ("SIGKILL -> first +switch-master message", kills["switch_message"]),
        ("SIGKILL -> next leader_changed", kills["leader"]),
        ("  leader_changed - switch", kills["leader_minus_switch"]),
    ]
    for lat in result["decision_latency"]:
        name = f"decision latency, MIN_REPLICAS={lat['min_replicas']}"
        rows.append((f"{name} (server)", lat["server"]))
        rows.append((f"{name} (client)", lat["client"]))
    for name, summary in rows:
        s = {"p50_ms": math.nan, "p99_ms": math.nan, "min_ms": math.nan, "max_ms": math.nan}
        s.update(summary)
        # Below 100 samples the nearest-rank "p99" is the maximum: no p99 column then.
        p99 = f"{s['p99_ms']:9.1f}" if s.get("n", 0) >= P99_MIN_SAMPLES else f"{'-':>9}"
        print(
            f"{name:46} {s['n']:4} {s['p50_ms']:9.1f} {p99} {s['min_ms']:8.1f} {s['max_ms']:8.1f}"
        )
    print(f"(no p99 below {P99_MIN_SAMPLES} samples: the max column is the tail)")
    for lat in result["decision_latency"]:
        print(
            f"MIN_REPLICAS={lat['min_replicas']}: {lat['events']} events at "
            f"{lat['achieved_rate']} events/s; coordinator exits {lat['coordinator_exits']}"
        )
    print(
        f"kills without a new leader within 30 s: {kills['without_new_leader_in_30s']}; "
        f"coordinator exits {kills['coordinator_exits']}"
    )
    for goal in result["goals"]:
        verdict = "PASS" if goal["pass"] else "FAIL"
        n = goal.get("n", P99_MIN_SAMPLES)
        judged = f" (max of {n}: too few kills for a p99)" if n < P99_MIN_SAMPLES else ""
        print(
            f"{verdict}  {goal['goal']}: {goal['value_ms']} ms{judged} "
            f"(limit {goal['limit_ms']} ms)"
        )


def main() -> None:
    """Parse arguments, run the benchmark, print the table or JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="primary SIGKILLs (default 20)")
    parser.add_argument("--ttl-ms", type=int, default=1000, help="lease TTL (default 1000)")
    parser.add_argument(
        "--kill-min-replicas", type=int, default=1, help="FAILOVER_MIN_REPLICAS while killing"
    )
    parser.add_argument("--rate", type=int, default=2000, help="events/s (default 2000)")
    parser.add_argument("--decisions", type=int, default=40, help="per setting (default 40)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--log-dir", type=Path, help="coordinators log at INFO to files here (default: ERROR)"
    )
    parser.add_argument(
        "--no-latency", action="store_true", help="only the kills (investigating them)"
    )
    args = parser.parse_args()
    if args.kills < 1 or args.decisions < 1 or args.rate < 12 or args.ttl_ms < 100:
        parser.error("--kills and --decisions >= 1, --rate >= 12, --ttl-ms >= 100")
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(_main(args))
    print(json.dumps(result, indent=2)) if args.json else _print(result)
    sys.exit(0 if all(g["pass"] for g in result["goals"]) else 1)


if __name__ == "__main__":
    main()
