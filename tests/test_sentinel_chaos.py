"""A coordinator fleet on a replicated Redis that loses its primary three times (issue 11).

Real processes and servers only: a primary, two replicas and three Sentinels
(:class:`streams.replica_set.ReplicaSet`, down-after 1 s) and three ``python -m
workers.coordinator`` processes that find the primary through Sentinel. A producer writes
health events, each ``XADD`` followed by ``WAIT 1`` on the same connection, and records the
entries a replica confirmed; outages it scripts take the active region down by quorum and
back, so the leader decides failovers while the faults happen. A reader follows
``NS:decisions`` as an executor would. Mid-traffic the primary is SIGKILLed, SIGSTOPped
past down-after then SIGCONTed (it must come back as a replica), and SIGKILLed again; each
killed server is started again as a replica so the next fault has replicas to promote.

Checked: a working leader (a marker entry added after the switch, on the primary Sentinel
names, is applied) within the switch time + TTL + 2 s of each fault; along
``NS:decisions`` ``leader_changed`` epochs strictly increase and every decision carries
its leader's epoch; no decision id twice; every entry confirmed by ``WAIT`` is applied
(acked by the group, the last one per observer in the policy state) or dead-lettered; no
coordinator exits. With ``FAILOVER_MIN_REPLICAS=1`` also: every entry the reader saw is
still on ``NS:decisions`` after the faults (the lease is confirmed on a replica, so a
paused primary that comes back cannot grant it).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.exceptions as rex

from schemas.codec import decode_entry, encode_entry
from schemas.events import DeadLetter, FailoverDecision, HealthEvent, LeaderChanged, Status
from streams.address import RedisTarget
from streams.cancel import cancel_and_wait
from streams.connection import connect
from streams.group import split_id
from streams.keys import GROUP, Keys, StateField
from streams.replica_set import ReplicaSet
from tests.waiting import wait_for, wait_for_sync
from tests.worker_process import ROOT, WorkerProcess
from workers.policy.state import decode_state

pytestmark = pytest.mark.chaos

REGIONS = ("eu", "us", "ap")
OBSERVERS = ("o1", "o2", "o3")
TTL_MS = 1500
ROUND_S = 0.05
# Every OUTAGE_EVERY_S from 2 s on, the active region (as the reader last saw it decided)
# goes down by a quorum (o1, o2) for OUTAGE_S.
OUTAGE_EVERY_S = 4.0
OUTAGE_S = 1.0


@dataclass
class Traffic:
    """What the producer wrote and had confirmed, and what the reader saw."""

    confirmed: list[tuple[bytes, HealthEvent, float]] = field(default_factory=list)
    last_attempt: dict[tuple[str, str], str] = field(default_factory=dict)
    unconfirmed: int = 0
    errors: int = 0
    seen: list[tuple[bytes, LeaderChanged | FailoverDecision]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def _status(elapsed: float, region: str, observer: str, failing: str) -> Status:
    into = (elapsed - 2.0) % OUTAGE_EVERY_S
    if elapsed >= 2.0 and into < OUTAGE_S and region == failing and observer != "o3":
        return "unhealthy"
    return "healthy"


def _active(traffic: Traffic) -> str:
    """The active region as the reader last saw it decided (the first region before)."""
    moves = [d.to_region for _, d in traffic.seen if isinstance(d, FailoverDecision)]
    return moves[-1] if moves else REGIONS[0]


async def _produce(client: Any, keys: Keys, traffic: Traffic) -> None:
    """Health events, each XADD then WAIT 1 on one connection; a last all-healthy round."""
    started = time.monotonic()
    rnd = 0
    final = False
    targets: dict[int, str] = {}
    while not final:
        final = traffic.stop.is_set()
        elapsed = time.monotonic() - started
        # One region per outage: the one active when it began.
        failing = targets.setdefault(int((elapsed - 2.0) // OUTAGE_EVERY_S), _active(traffic))
        for region in REGIONS:
            for observer in OBSERVERS:
                status: Status = "healthy" if final else _status(elapsed, region, observer, failing)
                event = HealthEvent(
                    f"{observer}-{region}-{rnd}", region, observer, status, time.time()
                )
                traffic.last_attempt[region, observer] = event.event_id
                try:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.xadd(keys.health, encode_entry(event))
                        pipe.wait(1, 1000)
                        entry_id, replicas = await pipe.execute()
                except (rex.RedisError, OSError):
                    traffic.errors += 1  # written or not: unknown, so not counted either way
                    await asyncio.sleep(0.05)
                    continue
                if int(replicas) >= 1:
                    traffic.confirmed.append((entry_id, event, time.monotonic()))
                else:
                    traffic.unconfirmed += 1
        rnd += 1
        await asyncio.sleep(ROUND_S)


async def _read(client: Any, keys: Keys, traffic: Traffic) -> None:
    """Follow NS:decisions as an executor would, through every switch."""
    last = b"0-0"
    while not traffic.stop.is_set():
        try:
            reply = await client.xread({keys.decisions: last}, block=200)
        except (rex.RedisError, OSError):
            await asyncio.sleep(0.05)
            continue
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                decision = decode_entry(fields, stream="decisions")
                assert isinstance(decision, LeaderChanged | FailoverDecision), decision
                traffic.seen.append((entry_id, decision))


def _leader_back(group: ReplicaSet, keys: Keys, timeout: float) -> None:
    """Wait until the primary Sentinel names has a leader applying entries: a marker added
    there (a healthy observation of a region no outage touches) is acked by the group.

    Asked of the named primary on fresh connections: after a SIGCONT the old primary still
    answers as a primary to the connections clients kept, until Sentinel demotes it.
    """
    deadline = time.monotonic() + timeout
    marker: tuple[int, bytes] | None = None
    n = 0
    while time.monotonic() < deadline:
        try:
            port = group.primary_port()
            client: Any = redis.Redis(port=port, socket_timeout=1)
            try:
                if marker is None or marker[0] != port:
                    n += 1
                    event = HealthEvent(f"marker-{n}", "ap", "marker", "healthy", time.time())
                    marker = (port, client.xadd(keys.health, encode_entry(event)))
                if _applied_sync(client, keys, marker[1]):
                    return
            finally:
                client.close()
        except (rex.RedisError, OSError, RuntimeError):
            marker = None
        time.sleep(0.05)
    raise AssertionError(f"no leader applied entries within {timeout:.1f}s")


def _applied_sync(client: Any, keys: Keys, entry_id: bytes) -> bool:
    groups: Any = client.xinfo_groups(keys.health)
    group = next((g for g in groups if g["name"] == GROUP.encode()), None)
    if group is None or split_id(group["last-delivered-id"]) < split_id(entry_id):
        return False
    return not client.xpending_range(keys.health, GROUP, entry_id, entry_id, 1)


@pytest.fixture(params=[0, 1], ids=["min-replicas-0", "min-replicas-1"])
def min_replicas(request: pytest.FixtureRequest) -> Iterator[int]:
    """FAILOVER_MIN_REPLICAS for the fleet."""
    yield int(request.param)


async def test_fleet_survives_losing_the_primary_three_times(
    replica_set: ReplicaSet, workers: list[WorkerProcess], namespace: str, min_replicas: int
) -> None:
    keys = Keys(namespace)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": replica_set.url,
        "FAILOVER_REDIS_SENTINELS": replica_set.sentinels_setting,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": ",".join(REGIONS),
        "FAILOVER_MIN_REPLICAS": str(min_replicas),
        "FAILOVER_LEASE_TTL_MS": str(TTL_MS),
        "FAILOVER_REELECT_DELAY_MS": "1000",
        "FAILOVER_REELECT_JITTER_MS": "0",
        "FAILOVER_THRESHOLD": "3",
        "FAILOVER_QUORUM": "2",
        "FAILOVER_RECOVERY_THRESHOLD": "3",
        "FAILOVER_WINDOW_MS": "600000",
        "FAILOVER_STALE_AFTER_MS": "3600000",
        "FAILOVER_COOLDOWN_MS": "0",
        "FAILOVER_TICK_MS": "100",
    }
    for n in range(3):
        proc = WorkerProcess("workers.coordinator", env | {"FAILOVER_INSTANCE_ID": f"c{n}"})
        workers.append(proc.start())
    target = RedisTarget(replica_set.url, sentinels=replica_set.sentinel_addresses)
    # Any: redis-py's asyncio reply types are unions of every possible reply.
    producer: Any = connect(target)
    reader: Any = connect(target)
    final: Any = None  # a direct client of the primary once everything has settled
    traffic = Traffic()
    tasks: list[asyncio.Task[None]] = []
    faults: list[dict[str, float | str]] = []
    try:

        async def first_leader() -> bool:
            return any(isinstance(d, LeaderChanged) for _, d in traffic.seen)

        tasks.append(asyncio.create_task(_read(reader, keys, traffic)))
        await wait_for(first_leader, 30, "a first leader through Sentinel")
        tasks.append(asyncio.create_task(_produce(producer, keys, traffic)))

        async def fault(kind: str) -> None:
            old = replica_set.primary_port()
            server = replica_set.by_port(old)
            struck = time.monotonic()
            if kind == "SIGKILL":
                await asyncio.to_thread(server.kill)
            else:
                server.pause()
            try:
                await asyncio.to_thread(replica_set.wait_switch, old, 30)
            finally:
                server.resume()
            switched = time.monotonic()
            # With FAILOVER_MIN_REPLICAS = N no lease counts before N replicas follow the
            # primary, so the clock starts once they do: Sentinel has been seen to take
            # ~10 s to re-point the remaining replica, and to fail the promoted replica over
            # again ~2 s after promoting it (then re-pointing the demoted one slowly). Both
            # are Sentinel's, so the clock restarts whenever the primary changes until the
            # leader is back. The one-TTL quarantine fits in the bound.
            settling = _Settling(replica_set, min_replicas)
            watch = asyncio.create_task(asyncio.to_thread(settling.follow))
            try:
                await asyncio.to_thread(_leader_back, replica_set, keys, 90)
            finally:
                settling.stop.set()
                await watch
            back = time.monotonic() - struck
            ready = settling.ready_at
            assert ready is not None, "the leader came back before the replicas attached"
            bound = ready - struck + TTL_MS / 1000 + 2.0
            faults.append(
                {
                    "kind": kind,
                    "switch_s": switched - struck,
                    "primaries": settling.primaries,
                    "replicas_s": ready - struck,
                    "back_s": back,
                }
            )
            assert back <= bound, (faults, [w.output()[-3000:] for w in workers])
            if kind == "SIGKILL":
                await asyncio.to_thread(replica_set.rejoin, server)
            await asyncio.to_thread(replica_set.wait_synced)
            if kind == "SIGSTOP":  # Sentinel demoted the paused primary when it came back
                direct = redis.Redis(port=old, socket_timeout=3)
                try:
                    assert direct.info("replication")["role"] == "slave"
                finally:
                    direct.close()

        for kind in ("SIGKILL", "SIGSTOP", "SIGKILL"):
            await asyncio.sleep(3.0)
            await fault(kind)
        await asyncio.sleep(2.0)
        traffic.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        final = redis.Redis(port=replica_set.primary_port(), socket_timeout=5)
        last_entry = traffic.confirmed[-1][0]
        wait_for_sync(
            lambda: _applied_sync(final, keys, last_entry), 30, "the last confirmed entry applied"
        )
        running = [w for w in workers if w.proc is not None and w.proc.poll() is None]
        assert len(running) == 3, [w.output()[-3000:] for w in workers]
        for worker in workers:
            assert "Traceback" not in worker.output(), worker.output()[-5000:]

        rows = final.xrange(keys.decisions)
        decisions = [(entry_id, decode_entry(f, stream="decisions")) for entry_id, f in rows]

        # Epochs: leader_changed strictly grows; a decision carries its leader's epoch.
        current, ids = 0, []
        for _, entry in decisions:
            if isinstance(entry, LeaderChanged):
                assert entry.epoch > current, decisions
                current = entry.epoch
            else:
                assert isinstance(entry, FailoverDecision)
                assert entry.epoch == current, decisions
                ids.append(entry.decision_id)
        assert len(ids) == len(set(ids)), ids
        assert len(ids) >= 3, (ids, traffic.errors, faults)  # failovers were decided meanwhile

        # Every WAIT-confirmed entry is still there, and applied or dead-lettered.
        letters = set()
        for _, fields in final.xrange(keys.dlq):
            letter = decode_entry(fields, stream="dlq")
            assert isinstance(letter, DeadLetter)
            letters.add(letter.entry_id.encode())
        present = {entry_id for entry_id, _ in final.xrange(keys.health)}
        missing = [e for e, _, _ in traffic.confirmed if e not in present]
        assert not missing, (len(missing), len(traffic.confirmed), faults)
        (group,) = [g for g in final.xinfo_groups(keys.health) if g["name"] == GROUP.encode()]
        delivered = split_id(group["last-delivered-id"])
        pending = {
            p["message_id"] for p in final.xpending_range(keys.health, GROUP, "-", "+", 10**6)
        }
        unapplied = [
            e
            for e, _, _ in traffic.confirmed
            if e not in letters and (split_id(e) > delivered or e in pending)
        ]
        assert not unapplied, (len(unapplied), len(traffic.confirmed))
        # ... and in the policy state: each observer's last event (when it was confirmed).
        runs = decode_state(final.hget(keys.state, StateField.POLICY)).runs
        last_confirmed = {(e.region, e.source): e.event_id for _, e, _ in traffic.confirmed}
        checked = 0
        for (region, source), event_id in last_confirmed.items():
            if traffic.last_attempt[region, source] == event_id:
                assert runs[region][source].ids[-1] == event_id, (region, source)
                checked += 1
        assert checked, "no observer's last event was confirmed"

        # What the reader saw before each fault is still there after the last one.
        kept = dict(decisions)
        lost = [(e, d) for e, d in traffic.seen if kept.get(e) != d]
        if min_replicas >= 1:
            # Decisions are published only once N replicas confirmed them (held
            # decisions) and nobody leads for one TTL after a primary change, so what a
            # reader saw was on the replica Sentinel promoted.
            assert not lost, lost
        print(
            f"min replicas {min_replicas}: faults {faults}; {len(traffic.confirmed)} confirmed,"
            f" {traffic.unconfirmed} unconfirmed, {traffic.errors} failed writes;"
            f" {len(ids)} failovers; {len(traffic.seen)} decisions seen, {len(lost)} then lost"
        )
    finally:
        traffic.stop.set()
        await cancel_and_wait(*tasks)
        for client in (producer, reader):
            await client.aclose()
        if final is not None:
            final.close()
    for worker in workers:
        assert worker.terminate() == 0, worker.output()[-3000:]


class _Settling:
    """When the primary Sentinel names last became one with ``n`` replicas online."""

    def __init__(self, replica_set: ReplicaSet, n: int) -> None:
        self.replica_set = replica_set
        self.n = n
        self.stop = threading.Event()
        self.ready_at: float | None = None
        self.primaries: int = 0  # how many primaries were seen while waiting
        self._port: int | None = None

    def follow(self) -> None:
        """Sample every 50 ms until :attr:`stop` is set."""
        while not self.stop.is_set():
            port, ready = self._sample()
            if port is not None and port != self._port:
                self._port, self.ready_at = port, None
                self.primaries += 1
            if ready and self.ready_at is None:
                self.ready_at = time.monotonic()
            self.stop.wait(0.05)

    def _sample(self) -> tuple[int | None, bool]:
        try:
            port = self.replica_set.primary_port()
            with redis.Redis(port=port, socket_timeout=2) as client:
                info: Any = client.info("replication")
        except (redis.ConnectionError, redis.TimeoutError, StopIteration, RuntimeError):
            return None, False
        online = sum(
            1
            for key, value in info.items()
            if key.startswith("slave")
            and isinstance(value, dict)
            and value.get("state") == "online"
        )
        return port, info.get("role") == "master" and online >= self.n
