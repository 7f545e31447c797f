"""A fleet of real ``python -m workers.coordinator`` processes under SIGKILL, SIGSTOP and SIGTERM.

A producer writes thousands of health events (4 observers x 3 regions) with two quorum
outages, a manual failover and some bad entries while the leader is killed, frozen past its
lease and terminated. Afterwards nothing is pending or undelivered, every bad entry is one
dead letter, epochs only grow along the decisions stream, and the decisions are exactly
those the pure policy gives over the same history in the pipeline's order (entry id, health
before events on a tie). Staleness, the window and the cooldown are set so time cannot
change the outcome: only the order of events does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.codec import decode_entry, encode_entry
from schemas.errors import DecodeError
from schemas.events import (
    DeadLetter,
    FailoverDecision,
    HealthEvent,
    LeaderChanged,
    ManualFailover,
)
from streams.group import split_id
from streams.keys import GROUP, Keys
from streams.server import RedisServer, die_with_parent, free_port
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig

pytestmark = pytest.mark.chaos

REGIONS = ("eu", "us", "ap")
OBSERVERS = ("o1", "o2", "o3", "o4")
ROUNDS = 360
NAMESPACE = "{fleet}"
ENV = {
    "FAILOVER_NAMESPACE": NAMESPACE,
    "FAILOVER_REGIONS": ",".join(REGIONS),
    "FAILOVER_LEASE_TTL_MS": "1200",
    "FAILOVER_THRESHOLD": "3",
    "FAILOVER_QUORUM": "2",
    "FAILOVER_RECOVERY_THRESHOLD": "3",
    "FAILOVER_WINDOW_MS": "600000",
    "FAILOVER_STALE_AFTER_MS": "3600000",
    "FAILOVER_COOLDOWN_MS": "0",
    "FAILOVER_TICK_MS": "100",
    "FAILOVER_BATCH_SIZE": "50",
    "FAILOVER_MAX_DELIVERIES": "20",
    "FAILOVER_REELECT_DELAY_MS": "1000",
    "FAILOVER_REELECT_JITTER_MS": "0",
    "FAILOVER_SHUTDOWN_TIMEOUT_MS": "3000",
}
# (round, stream, fields): bad entries the leader must dead-letter, each exactly once.
BAD = [
    (10, "health", [b"data", b"not json"]),
    (70, "events", [b"data", b"\xff\xfe\x00garbage"]),
    (130, "health", [b"data", b'{"type":"health","event_id":"x","region":"eu"}']),
    (200, "events", [b"data", encode_entry(HealthEvent("y", "eu", "o1", "healthy", 1.0))[b"data"]]),
    (260, "health", [b"data", b'{"type":"health","detail":"' + b"x" * 1_000_000 + b'"}']),
    (320, "events", [b"payload", b"{}"]),
]


def _status(rnd: int, region: str, observer: str) -> str:
    """The scripted history: eu fails (rounds 50-99), then us (180-229), by a quorum."""
    if region == "eu" and 50 <= rnd < 100 and observer != "o4":
        return "unhealthy"
    if region == "us" and 180 <= rnd < 230 and observer != "o1":
        return "unhealthy"
    if region == "ap" and rnd % 7 == 0 and observer == "o2":
        return "degraded"
    return "healthy"


class Fleet:
    """Coordinator processes with their logs."""

    def __init__(self, url: str, logs: Path) -> None:
        self.env = {**os.environ, **ENV, "FAILOVER_REDIS_URL": url}
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "workers.coordinator"],
            env={**self.env, "FAILOVER_INSTANCE_ID": name},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
            # A killed test run must not leave coordinators behind (main thread: safe).
            preexec_fn=die_with_parent,  # noqa: PLW1509
        )
        log.close()

    def tails(self) -> str:
        out = []
        for name in self.procs:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(out)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


@pytest.fixture
def fleet(own_redis_server: RedisServer, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(own_redis_server.url, tmp_path)
    try:
        yield fleet
    finally:
        for proc in fleet.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


def _leader(
    r: redis.Redis, keys: Keys, timeout: float = 10.0, skip: frozenset[str] = frozenset()
) -> str:
    """The instance name of the current leader (waits for one not in ``skip``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = r.get(keys.leader)
        if owner and owner.decode().partition("#")[0] not in skip:
            return owner.decode().partition("#")[0]
        time.sleep(0.02)
    raise AssertionError("no leader")


def _drained(r: redis.Redis, keys: Keys) -> bool:
    for stream in keys.input_streams:
        groups = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode()]
        if not groups or groups[0]["pending"] or groups[0]["lag"]:
            return False
    return True


def _expected_decisions(r: redis.Redis, keys: Keys) -> list[tuple[object, ...]]:
    """Replay both streams through the pure policy in the pipeline's order."""
    rows = []
    for index, stream in enumerate(keys.input_streams):
        for entry_id, fields in r.xrange(stream):
            rows.append((split_id(entry_id), index, fields))
    rows.sort(key=lambda row: (row[0], row[1]))
    policy = Policy(
        PolicyConfig(
            regions=REGIONS,
            threshold=3,
            quorum=2,
            window_ms=600000,
            stale_after_ms=3600000,
            recovery_threshold=3,
            cooldown_ms=0,
            # The settings table's defaults, as the coordinators run with them.
            panic_fraction=0.5,
            panic_hold_ms=300000,
            manual_max_age_ms=300000,
            observer_expiry_ms=86400000,
        )
    )
    planned = []
    for _, index, fields in rows:
        try:
            event = decode_entry(fields, stream="health" if index == 0 else "events")
        except DecodeError:
            continue
        assert not isinstance(event, DeadLetter | LeaderChanged | FailoverDecision)
        planned.extend(policy.apply(event))
    return [(p.decision_id, p.from_region, p.to_region, p.reason, p.evidence) for p in planned]


def test_fleet_survives_kill_stop_and_term_with_exact_decisions(
    fleet: Fleet, own_redis_server: RedisServer
) -> None:
    keys = Keys(NAMESPACE)
    r = redis.Redis(port=own_redis_server.port)
    for name in ("c1", "c2", "c3"):
        fleet.start(name)
    _leader(r, keys)
    bad: set[tuple[str, str]] = set()  # (stream, id): the streams number entries apart
    terminated: subprocess.Popen[bytes] | None = None
    faults: list[str] = []
    affected: set[str] = set()
    started = time.monotonic()
    try:
        for rnd in range(ROUNDS):
            pipe = r.pipeline(transaction=False)
            for region in REGIONS:
                for observer in OBSERVERS:
                    event = HealthEvent(
                        event_id=f"{observer}-{region}-{rnd}",
                        region=region,
                        source=observer,
                        status=_status(rnd, region, observer),  # type: ignore[arg-type]
                        observed_at=time.time(),
                    )
                    pipe.xadd(keys.health, encode_entry(event))
            pipe.execute()
            for at, stream, fields in BAD:
                if at == rnd:
                    key = keys.health if stream == "health" else keys.events
                    bad.add((key, r.execute_command("XADD", key, "*", *fields).decode()))
            if rnd == 300:
                # Not racing a health entry in the same millisecond keeps the replay exact.
                time.sleep(0.005)
                manual = ManualFailover("m-1", "eu", "operator", time.time(), target="ap")
                r.xadd(keys.events, encode_entry(manual))
                time.sleep(0.005)
            if rnd == 60:
                victim = _leader(r, keys)
                affected.add(victim)
                fleet.procs[victim].kill()  # SIGKILL: its lease runs out, pending is claimed
                fleet.start("c4")
                faults.append(f"SIGKILL {victim}")
            if rnd == 150:
                victim = _leader(r, keys, skip=frozenset(affected))
                affected.add(victim)
                proc = fleet.procs[victim]
                proc.send_signal(signal.SIGSTOP)  # frozen well past its 1.2 s lease
                threading.Timer(2.5, proc.send_signal, args=(signal.SIGCONT,)).start()
                faults.append(f"SIGSTOP {victim}")
            if rnd == 240:
                # Any leader but the killed one and the frozen one (whose lease ran out).
                victim = _leader(r, keys, skip=frozenset(affected))
                terminated = fleet.procs[victim]
                terminated.send_signal(signal.SIGTERM)
                fleet.start("c5")
                faults.append(f"SIGTERM {victim}")
            time.sleep(0.02)
        assert terminated is not None
        assert terminated.wait(timeout=5) == 0, fleet.tails()
        deadline = time.monotonic() + 30
        while not _drained(r, keys):
            assert time.monotonic() < deadline, "not drained\n" + fleet.tails()
            time.sleep(0.1)
        time.sleep(0.3)  # the last commit's decisions are in with its acks; be generous
    finally:
        codes = fleet.stop_all()
    elapsed = time.monotonic() - started
    assert all(code == 0 for name, code in codes.items() if fleet.procs[name].returncode != -9), (
        codes,
        fleet.tails(),
    )
    assert len(faults) == 3, faults

    # Nothing pending, nothing undelivered.
    for stream in keys.input_streams:
        (group,) = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode()]
        assert (group["pending"], group["lag"]) == (0, 0), stream

    # Every bad entry exactly once in the dead-letter stream, and nothing else there.
    letters = []
    for _, fields in r.xrange(keys.dlq):
        letter = decode_entry(fields, stream="dlq")
        assert isinstance(letter, DeadLetter)
        letters.append(letter)
    assert sorted((letter.stream, letter.entry_id) for letter in letters) == sorted(bad), (
        fleet.tails()
    )

    # Epochs never go back along the decisions stream.
    current = 0
    leaders: dict[int, str] = {}
    live = []
    for _, fields in r.xrange(keys.decisions):
        entry = decode_entry(fields, stream="decisions")
        if isinstance(entry, LeaderChanged):
            assert entry.epoch > current, "leader_changed epochs must grow"
            current = entry.epoch
            leaders[entry.epoch] = entry.leader
        else:
            assert isinstance(entry, FailoverDecision)
            assert entry.epoch == current, "a decision from an older epoch after a newer leader"
            assert entry.leader == leaders[entry.epoch]
            live.append(
                (
                    entry.decision_id,
                    entry.from_region,
                    entry.to_region,
                    entry.reason,
                    entry.evidence,
                )
            )
    assert len(leaders) >= 4, leaders  # the first leader and one per fault at least

    # Exactly the decisions the history implies, once each.
    expected = _expected_decisions(r, keys)
    assert [(d[1], d[2], d[3]) for d in expected] == [
        ("eu", "us", "quorum_unhealthy"),
        ("us", "eu", "quorum_unhealthy"),
        ("eu", "ap", "manual"),
    ]
    assert live == expected, fleet.tails()
    assert elapsed < 90
    r.close()


def test_coordinator_exits_2_on_bad_settings(tmp_path: Path) -> None:
    env = {**os.environ, "FAILOVER_REGIONS": "", "FAILOVER_LEASE_TTL_MS": "soon"}
    done = subprocess.run(
        [sys.executable, "-m", "workers.coordinator"],
        env={k: v for k, v in env.items() if k != "FAILOVER_REDIS_URL"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"FAILOVER_REGIONS" in done.stderr and b"FAILOVER_LEASE_TTL_MS" in done.stderr


def test_coordinator_keeps_running_through_a_redis_outage(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    fleet = Fleet(own_redis_server.url, tmp_path)
    keys = Keys(NAMESPACE)
    r = redis.Redis(port=own_redis_server.port)
    try:
        fleet.start("solo")
        _leader(r, keys)
        own_redis_server.restart()  # everything in Redis is gone, connections drop
        proc = fleet.procs["solo"]
        # It steps down, keeps running and leads again once Redis is back.
        assert _leader(r, keys, timeout=15) == "solo", fleet.tails()
        assert proc.poll() is None
        r.xadd(keys.health, {b"data": json.dumps({"type": "health"}).encode()})
        deadline = time.monotonic() + 10
        while r.xlen(keys.dlq) < 1:
            assert time.monotonic() < deadline, fleet.tails()
            time.sleep(0.05)
    finally:
        codes = fleet.stop_all()
        r.close()
    assert codes == {"solo": 0}, fleet.tails()


def test_coordinator_serves_its_metrics(own_redis_server: RedisServer, tmp_path: Path) -> None:
    fleet = Fleet(own_redis_server.url, tmp_path)
    port = free_port()
    fleet.env["FAILOVER_METRICS_PORT"] = str(port)
    keys = Keys(NAMESPACE)
    r = redis.Redis(port=own_redis_server.port)
    try:
        fleet.start("m1")
        _leader(r, keys)
        r.xadd(keys.health, {b"data": b"not json"})
        deadline = time.monotonic() + 10
        text = ""
        while 'failover_dead_lettered_total{coordinator="m1"} 1.0' not in text:
            assert time.monotonic() < deadline, text + fleet.tails()
            time.sleep(0.1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as rsp:
                    text = rsp.read().decode()
            except OSError:
                continue
        assert 'failover_is_leader{coordinator="m1"} 1.0' in text
        assert 'failover_decisions_total{coordinator="m1",type="leader_changed"} 1.0' in text
        assert 'failover_commits_total{coordinator="m1",outcome="ok"}' in text
        assert 'failover_commit_latency_seconds_count{coordinator="m1"}' in text
    finally:
        codes = fleet.stop_all()
        r.close()
    assert codes == {"m1": 0}, fleet.tails()
