"""Heartbeats of real processes, ``failoverctl members`` and ``failoverctl step-down``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import redis as sync_redis

from schemas.members import Heartbeat
from streams.keys import Keys
from streams.server import RedisServer
from tests.waiting import wait_for_sync
from tests.worker_process import ROOT, WorkerProcess

INTERVAL_MS = 200


def _env(server: RedisServer, namespace: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": server.url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": "eu,us",
        "FAILOVER_LEASE_TTL_MS": "3000",
        "FAILOVER_HEARTBEAT_INTERVAL_MS": str(INTERVAL_MS),
        "FAILOVER_REELECT_DELAY_MS": "1000",
        "FAILOVER_REELECT_JITTER_MS": "0",
        "FAILOVER_LAG_INTERVAL_MS": "200",
        **extra,
    }


def _ctl(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _members(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = _ctl(env, "members", "--json")
    assert done.stderr == "", done.stderr
    return done.returncode, json.loads(done.stdout)


def _start(
    workers: list[WorkerProcess], module: str, env: dict[str, str], name: str
) -> WorkerProcess:
    proc = WorkerProcess(module, env | {"FAILOVER_INSTANCE_ID": name}, name=name).start()
    workers.append(proc)
    return proc


def test_every_process_is_listed_with_its_view_and_a_dead_one_is_missing(
    redis_server: RedisServer, namespace: str, workers: list[WorkerProcess]
) -> None:
    env = _env(redis_server, namespace)
    c1 = _start(workers, "workers.coordinator", env, "c1")
    c2 = _start(workers, "workers.coordinator", env, "c2")
    lag = _start(workers, "workers.lagmon", env, "lag1")

    def listed() -> bool:
        _, out = _members(env)
        rows = out["members"]
        return (
            len(rows) == 3
            and out["leader"] is not None
            and all(r["leader"] == out["leader"] for r in rows)
        )

    wait_for_sync(listed, 30, "three heartbeats that agree on the leader")
    code, out = _members(env)
    assert code == 0
    by_instance = {r["instance"]: r for r in out["members"]}
    assert {r["role"] for r in out["members"]} == {"coordinator", "lagmon"}
    assert by_instance["lag1"]["role"] == "lagmon"
    for proc, name in ((c1, "c1"), (c2, "c2"), (lag, "lag1")):
        row = by_instance[name]
        assert proc.proc is not None and row["pid"] == proc.proc.pid
        assert row["owner"].startswith(name + "#")
        assert row["state"] == "alive" and row["interval_ms"] == INTERVAL_MS
        assert row["epoch"] == out["epoch"]
    leaders = [r for r in out["members"] if r["is_leader"]]
    assert len(leaders) == 1 and leaders[0]["role"] == "coordinator"
    # The lease owner is the coordinator's heartbeat owner: one id per process.
    assert leaders[0]["owner"] == out["leader"]

    keys = Keys(namespace)
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        ttl = client.pttl(keys.member(by_instance["lag1"]["owner"]))
        assert 0 < ttl <= 3 * INTERVAL_MS
        raw = client.hgetall(keys.member(by_instance["c1"]["owner"]))
        beat = Heartbeat.from_fields({k.decode(): v.decode() for k, v in raw.items()})
        assert beat.role == "coordinator" and beat.instance == "c1"
    finally:
        client.close()

    lag.kill()  # no goodbye: missing once its hash expires (3 intervals)

    def lag_missing() -> bool:
        _, now = _members(env)
        return any(r["instance"] == "lag1" and r["state"] == "missing" for r in now["members"])

    wait_for_sync(lag_missing, 10, "the killed lag monitor to be listed as missing")
    code, out = _members(env)
    assert code == 1  # someone is missing
    text = _ctl(env, "members")
    assert text.returncode == 1
    assert "MISSING" in text.stdout and "2 alive, 1 missing" in text.stdout

    follower = c2 if by_instance["c1"]["is_leader"] else c1
    assert follower.terminate() == 0  # a clean stop leaves: not missing

    def follower_gone() -> bool:
        _, now = _members(env)
        return all(r["pid"] != follower.proc.pid for r in now["members"])  # type: ignore[union-attr]

    wait_for_sync(follower_gone, 10, "the stopped coordinator to leave the list")


def test_step_down_hands_over_at_once(
    redis_server: RedisServer, namespace: str, workers: list[WorkerProcess]
) -> None:
    # A 3 s lease and a 600 ms retry period: a takeover within ~0.5 s comes from the release.
    env = _env(redis_server, namespace, FAILOVER_LEASE_TTL_MS="3000")
    procs = [_start(workers, "workers.coordinator", env, f"s{n}") for n in range(2)]
    wait_for_sync(lambda: _members(env)[1]["leader"] is not None, 30, "a leader")
    wait_for_sync(lambda: len(_members(env)[1]["members"]) == 2, 30, "both heartbeats")
    _, before = _members(env)
    old = before["leader"]
    done = _ctl(env, "step-down", "--wait", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    _, after = _members(env)
    assert after["leader"] != old and after["epoch"] > before["epoch"]
    assert f"{old} (epoch {before['epoch']}) stepped down" in done.stdout
    took = float(done.stdout.split(" after ")[1].split("s")[0])
    assert took < 1.0, done.stdout  # far below the lease's remaining 2+ s
    # The old leader did not exit: it follows now.
    assert all(p.proc is not None and p.proc.poll() is None for p in procs)


def test_step_down_without_a_leader_is_exit_1(redis_server: RedisServer, namespace: str) -> None:
    done = _ctl(_env(redis_server, namespace), "step-down")
    assert done.returncode == 1
    assert "no leader" in done.stdout


@pytest.mark.parametrize("argv", [["members"], ["members", "--json"]])
def test_members_of_an_empty_namespace(
    redis_server: RedisServer, namespace: str, argv: list[str]
) -> None:
    done = _ctl(_env(redis_server, namespace), *argv)
    assert done.returncode == 0, done.stderr
    if "--json" in argv:
        assert json.loads(done.stdout)["members"] == []
    else:
        assert "no process has sent a heartbeat" in done.stdout
