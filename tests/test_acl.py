"""Each role runs its real work under exactly its documented ACL (``streams/acl.py``).

A Redis user per role is made with ``ACL SETUSER`` from the table; the role's processes
connect as that user. Afterwards Redis's ``ACL LOG`` must hold no denial for it, and the
work must be done. The producer's ACL can XADD to its stream and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schemas.codec import encode_entry
from schemas.events import HealthEvent
from streams.acl import BY_ROLE, ROLES, setuser_rules
from streams.keys import GROUP, Keys
from streams.server import RedisServer
from tests.waiting import wait_for_sync
from tests.worker_process import ROOT, WorkerProcess

NAMESPACE = "{acl}"
KEYS = Keys(NAMESPACE)
PASSWORD = "role-pw"


@pytest.fixture
def admin(own_redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The default (all-powerful) user, with a user per role made from the table."""
    client = redis.Redis.from_url(own_redis_server.url)
    for acl in ROLES:
        rules = setuser_rules(acl.role, NAMESPACE)
        client.execute_command("ACL", "SETUSER", acl.role, "on", f">{PASSWORD}", *rules)
    client.execute_command("ACL", "LOG", "RESET")
    try:
        yield client
    finally:
        client.close()


def _url(server: RedisServer, role: str) -> str:
    return f"redis://{role}:{PASSWORD}@127.0.0.1:{server.port}/0"


def _env(server: RedisServer, role: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": _url(server, role),
        "FAILOVER_NAMESPACE": NAMESPACE,
        "FAILOVER_REGIONS": "eu,us,ap",
        "FAILOVER_LEASE_TTL_MS": "1000",
        "FAILOVER_TICK_MS": "100",
        "FAILOVER_INPUT_RETENTION_MS": "1",
        "FAILOVER_REELECT_DELAY_MS": "1000",
        "FAILOVER_REELECT_JITTER_MS": "0",
        **extra,
    }


def _denials(admin: redis.Redis, role: str) -> list[object]:
    return [e for e in admin.execute_command("ACL", "LOG") if e[b"username"] == role.encode()]


def _health(i: int, status: str = "healthy") -> dict[bytes, bytes]:
    event = HealthEvent(f"e{i}", "eu", "o1", status, time.time())  # type: ignore[arg-type]
    return encode_entry(event)


def _backlog(admin: redis.Redis) -> int:
    total = 0
    for stream in KEYS.input_streams:
        for g in admin.xinfo_groups(stream):
            if g["name"] == GROUP.encode():
                total += int(g["lag"] or 0) + int(g["pending"])
    return total


def test_coordinators_lead_claim_commit_trim_and_hand_over_under_their_acl(
    own_redis_server: RedisServer, admin: redis.Redis, workers: list[WorkerProcess]
) -> None:
    # Entries pending for a dead leader (claimed), a bad one, an oversize one (the read
    # guard's own read and the hashing script), then two coordinators and a handover.
    for i in range(5):
        admin.xadd(KEYS.health, _health(i))  # type: ignore[arg-type]
    admin.xgroup_create(KEYS.health, GROUP, id="0")
    admin.xgroup_create(KEYS.events, GROUP, id="0", mkstream=True)
    admin.xreadgroup(GROUP, "dead#1", {KEYS.health: ">"}, count=2)
    admin.xadd(KEYS.health, {"data": "not json"})
    admin.xadd(KEYS.health, {"data": "x" * 100_000})
    for name in ("a", "b"):
        env = _env(own_redis_server, "coordinator", FAILOVER_INSTANCE_ID=name)
        workers.append(WorkerProcess("workers.coordinator", env, f"acl-{name}").start())
    wait_for_sync(lambda: admin.exists(KEYS.leader) == 1, 20, "a leader")
    wait_for_sync(lambda: _backlog(admin) == 0, 20, "every entry committed")
    first = admin.get(KEYS.leader)
    assert first is not None
    leader = next(w for w in workers if first.decode().startswith(w.name.removeprefix("acl-")))
    assert leader.terminate() == 0, leader.output()
    wait_for_sync(
        lambda: admin.get(KEYS.leader) not in (None, first), 20, "the follower takes over"
    )
    admin.xadd(KEYS.health, _health(9))  # type: ignore[arg-type]
    wait_for_sync(lambda: _backlog(admin) == 0, 20, "the new leader applies")
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            assert w.terminate() == 0, w.output()
    assert admin.xlen(KEYS.dlq) == 2
    assert _denials(admin, "coordinator") == []


def test_prober_publishes_under_its_acl(
    own_redis_server: RedisServer, admin: redis.Redis, workers: list[WorkerProcess]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        env = _env(
            own_redis_server,
            "prober",
            FAILOVER_PROBE_TARGETS=f"eu=tcp://127.0.0.1:{port}",
            FAILOVER_PROBE_INTERVAL_MS="200",
        )
        prober = WorkerProcess("workers.health", env, "acl-prober").start()
        workers.append(prober)
        wait_for_sync(lambda: admin.xlen(KEYS.health) >= 3, 20, "three rounds")
        assert admin.exists(KEYS.region_health("eu")) == 1
        assert prober.terminate() == 0, prober.output()
    assert _denials(admin, "prober") == []


def test_lag_monitor_samples_under_its_acl(
    own_redis_server: RedisServer, admin: redis.Redis, workers: list[WorkerProcess]
) -> None:
    admin.xadd(KEYS.health, _health(1))  # type: ignore[arg-type]
    env = _env(own_redis_server, "lagmon", FAILOVER_LAG_INTERVAL_MS="100")
    lagmon = WorkerProcess("workers.lagmon", env, "acl-lagmon").start()
    workers.append(lagmon)
    # No leader: after a few samples the input streams are STOP, which it logs.
    wait_for_sync(lambda: "STOP" in lagmon.output(), 20, "a lag status")
    assert lagmon.terminate() == 0, lagmon.output()
    assert _denials(admin, "lagmon") == []


def _cli(server: RedisServer, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", *args],
        env=_env(server, "operator"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_failoverctl_works_under_the_operator_acl(
    own_redis_server: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    admin.xadd(KEYS.dlq, {"data": json.dumps({"type": "dead_letter", "stream": KEYS.health,
               "entry_id": "1-1", "reason": "r", "deliveries": 1,
               "raw": [["data", "x"]], "raw_encoding": "utf-8"})})  # fmt: skip
    admin.xadd(KEYS.dlq, {"data": "not a dead letter"})
    _cli(own_redis_server, "emit", "health", "--region", "eu", "--status", "healthy",
         "--source", "ops-check")  # fmt: skip
    _cli(own_redis_server, "emit", "event", "drain", "--region", "ap")
    _cli(own_redis_server, "status")
    assert json.loads(_cli(own_redis_server, "status", "--json"))["namespace"] == NAMESPACE
    _cli(own_redis_server, "decisions")
    first, second = [i.decode() for i, _ in admin.xrange(KEYS.dlq)]
    _cli(own_redis_server, "dlq", "list")
    _cli(own_redis_server, "dlq", "replay", first)
    _cli(own_redis_server, "dlq", "drop", second)
    _cli(own_redis_server, "replay", "--from", "-")
    # The v2 operator commands too: the fleet, pause and resume, the report. (observers and
    # config read a committed state, which needs a leader: not in this test.)
    _cli(own_redis_server, "members")
    _cli(own_redis_server, "pause", "--reason", "acl check")
    _cli(own_redis_server, "resume")
    _cli(own_redis_server, "report", "--html", str(tmp_path / "report.html"))
    assert admin.xlen(KEYS.dlq) == 0
    assert _denials(admin, "operator") == []


def test_a_producer_can_only_xadd_to_its_stream(
    own_redis_server: RedisServer, admin: redis.Redis
) -> None:
    producer = redis.Redis.from_url(_url(own_redis_server, "producer"))
    try:
        assert producer.xadd(KEYS.health, _health(1))  # type: ignore[arg-type]
        attempts = {
            "SET NS:leader": lambda: producer.set(KEYS.leader, "me"),
            "DEL NS:leader": lambda: producer.delete(KEYS.leader),
            "HSET NS:state": lambda: producer.hset(KEYS.state, "policy", "{}"),
            "XADD NS:state": lambda: producer.xadd(KEYS.state, {"x": "1"}),
            "INCR NS:leader:epoch": lambda: producer.incr(KEYS.epoch),
            "XADD NS:decisions": lambda: producer.xadd(KEYS.decisions, {"data": "{}"}),
            "XADD NS:events": lambda: producer.xadd(KEYS.events, {"data": "{}"}),
            "XRANGE NS:health": lambda: producer.xrange(KEYS.health),
            "EVAL": lambda: producer.eval("return redis.call('SET', KEYS[1], 'x')", 1, KEYS.leader),
            "PUBLISH": lambda: producer.publish(KEYS.released, "x"),
        }
        for what, attempt in attempts.items():
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
                pytest.fail(f"producer could {what}")
    finally:
        producer.close()
    assert admin.get(KEYS.leader) is None and admin.exists(KEYS.state) == 0


def test_readme_acl_table_matches_the_roles() -> None:
    readme = (Path(ROOT) / "README.md").read_text()
    for acl in ROLES:
        row = next(
            (line for line in readme.splitlines() if line.startswith(f"| {acl.role} |")), None
        )
        assert row is not None, f"README has no ACL row for {acl.role}"
        # A `|` inside a table cell is written `\|` (command|subcommand).
        assert " ".join(setuser_rules(acl.role, "NS")) in row.replace("\\|", "|"), acl.role
    assert BY_ROLE["producer"].commands == ("xadd",)


def test_sigterm_keeps_working_under_acl(own_redis_server: RedisServer, admin: redis.Redis) -> None:
    # The issue saw SIGTERM exit 1 with a traceback under a restricted ACL.
    env = _env(own_redis_server, "coordinator", FAILOVER_INSTANCE_ID="solo")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.coordinator"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_sync(lambda: admin.exists(KEYS.leader) == 1, 20, "a leader")
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
