"""The v2 policy with real coordinators on a real Redis (issue 10): fresh verdicts, panic,
configuration in NS:state whichever coordinator leads, and the operator commands that wait.

Event times are chosen (a ghost observer's reports lie in the past) so that no test sleeps
for time to pass: each waits for the state the coordinator commits.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverDecision, HealthEvent
from streams.keys import Keys, StateField
from streams.server import RedisServer
from tests.waiting import wait_for_sync
from tests.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("eu", "us", "ap")


def _env(url: str, namespace: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "FAILOVER_REDIS_URL": url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": ",".join(REGIONS),
        "FAILOVER_LEASE_TTL_MS": "1500",
        "FAILOVER_TICK_MS": "100",
        "FAILOVER_COOLDOWN_MS": "0",
        "FAILOVER_STALE_AFTER_MS": "3600000",
        "FAILOVER_WINDOW_MS": "60000",
        "FAILOVER_REELECT_DELAY_MS": "1000",
        "FAILOVER_REELECT_JITTER_MS": "0",
        "PYTHONPATH": str(ROOT),
    }
    env.update({f"FAILOVER_{k}": v for k, v in extra.items()})
    return env


def _start(workers: list[WorkerProcess], env: dict[str, str], name: str) -> WorkerProcess:
    proc = WorkerProcess("workers.coordinator", {**env, "FAILOVER_INSTANCE_ID": name}, name)
    workers.append(proc.start())
    return proc


def _health(r: redis.Redis, keys: Keys, region: str, source: str, status: str, at: float) -> None:
    event = HealthEvent(uuid.uuid4().hex, region, source, status, at)  # type: ignore[arg-type]
    r.xadd(keys.health, encode_entry(event))  # type: ignore[arg-type]


def _rounds(
    r: redis.Redis, keys: Keys, region: str, sources: list[str], status: str, at: float, n: int
) -> None:
    for i in range(n):
        for source in sources:
            _health(r, keys, region, source, status, at + i * 0.01)


def _failovers(r: redis.Redis, keys: Keys) -> list[FailoverDecision]:
    out = []
    for _, fields in r.xrange(keys.decisions):
        entry = decode_entry(fields, stream="decisions")
        if isinstance(entry, FailoverDecision):
            out.append(entry)
    return out


def _summary(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    raw = r.hget(keys.state, StateField.SUMMARY)
    return {} if raw is None else json.loads(raw)


def _leader(r: redis.Redis, keys: Keys) -> str | None:
    owner = r.get(keys.leader)
    return None if owner is None else owner.decode().partition("#")[0]


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


@pytest.fixture
def ns() -> str:
    return f"p10-{uuid.uuid4().hex[:8]}"


def test_a_dead_observers_old_passing_verdict_is_not_used(
    redis_server: RedisServer, workers: list[WorkerProcess], ns: str
) -> None:
    env = _env(redis_server.url, ns, QUORUM="2")
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_server.url)
    _start(workers, env, "c1")
    wait_for_sync(lambda: _leader(r, keys) == "c1", 15, "c1 to lead")
    now = time.time()
    # The ghost reported every region healthy ten minutes ago and died. "other" still sees
    # us passing, "live" sees it failing: with the ghost's vote us would be "up" (quorum 2)
    # and the first target; with fresh verdicts only, it is suspect and ap is the target.
    for region in REGIONS:
        _rounds(r, keys, region, ["ghost"], "healthy", now - 600, 3)
    _rounds(r, keys, "eu", ["live", "other"], "healthy", now - 2, 3)
    _rounds(r, keys, "us", ["other"], "healthy", now - 2, 3)
    _health(r, keys, "us", "live", "unhealthy", now - 1.5)
    _rounds(r, keys, "ap", ["live", "other"], "healthy", now - 2, 3)
    _rounds(r, keys, "eu", ["live", "other"], "unhealthy", now - 1, 3)  # the active fails
    wait_for_sync(lambda: _failovers(r, keys), 15, "a failover decision")
    [decision] = _failovers(r, keys)
    assert (decision.from_region, decision.to_region, decision.reason) == (
        "eu",
        "ap",
        "quorum_unhealthy",
    )
    assert decision.config_version == 1
    summary = _summary(r, keys)
    assert summary["regions"]["us"]["state"] == "suspect"
    # explain: the decision from history, and why us was not the target.
    shown = _ctl(env, "explain", decision.decision_id)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"decision {decision.decision_id}: eu -> ap (quorum_unhealthy)" in shown.stdout
    assert "2 observers (live, other) failing >= 3 times" in shown.stdout
    assert "config    version 1:" in shown.stdout
    data = json.loads(_ctl(env, "explain", decision.decision_id, "--json").stdout)
    assert {rule["name"]: rule["passed"] for rule in data["rules"]} == {
        "quorum": True, "pause": True, "panic": True, "cooldown": True, "drained": True,
        "up": True,
    }  # fmt: skip
    ghost = {source: view for source, view in data["observers"]["eu"]}["ghost"]
    assert ghost["fresh"] is False
    assert len(data["evidence"]) == 6 and data["evidence"][0]["region"] == "eu"
    why = _ctl(env, "explain", "--region", "us")
    assert why.returncode == 0, why.stdout + why.stderr
    assert "BLOCKS  up" in why.stdout and "us is suspect" in why.stdout
    assert "ghost" in why.stdout and "expired" in why.stdout


def test_all_regions_failing_at_once_is_a_panic_and_leaving_it_decides_once(
    redis_server: RedisServer, workers: list[WorkerProcess], ns: str
) -> None:
    env = _env(redis_server.url, ns)
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_server.url)
    coordinator = _start(workers, env, "c1")
    wait_for_sync(lambda: _leader(r, keys) == "c1", 15, "c1 to lead")
    now = time.time()
    for region in REGIONS:
        _rounds(r, keys, region, ["o1"], "healthy", now - 3, 3)
    for i in range(3):  # every region fails at once: round by round
        for region in REGIONS:
            _health(r, keys, region, "o1", "unhealthy", now - 2 + i * 0.01)
    wait_for_sync(lambda: _summary(r, keys).get("panic"), 15, "the panic in the state")
    panic = _summary(r, keys)["panic"]
    assert (panic["down"], panic["regions"]) == (3, 3)
    assert _summary(r, keys)["held"] == "panic"
    status = _ctl(env, "status")
    assert "PANIC     3 of 3 regions down" in status.stdout, status.stdout
    # us recovers: 2 of 3 down is still a panic; nothing is decided.
    _rounds(r, keys, "us", ["o1"], "healthy", now - 1, 3)
    wait_for_sync(lambda: _summary(r, keys)["panic"]["down"] == 2, 15, "2 of 3 down")
    assert _failovers(r, keys) == []
    # ap recovers too: the panic ends, and eu (still down) fails over once, to us.
    _rounds(r, keys, "ap", ["o1"], "healthy", now - 0.5, 3)
    wait_for_sync(lambda: _failovers(r, keys), 15, "the failover after the panic")
    _rounds(r, keys, "ap", ["o1"], "healthy", now, 3)
    wait_for_sync(lambda: _summary(r, keys).get("panic") is None, 15, "the panic to end")
    [decision] = _failovers(r, keys)
    assert (decision.from_region, decision.to_region) == ("eu", "us")
    log = coordinator.output()
    # One line on entry (the journal reads the live state, which may already have 2 down).
    assert len(re.findall(r"panic: [23] of 3 regions down", log)) == 1, log
    assert "panic over" in log
    assert re.search(r"region eu: (unknown|up|suspect) -> down \(quorum_unhealthy\)", log), log


def test_two_coordinators_with_different_thresholds_decide_by_the_version_in_force(
    redis_server: RedisServer, workers: list[WorkerProcess], ns: str
) -> None:
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_server.url)
    env5 = _env(redis_server.url, ns, THRESHOLD="5")
    env1 = _env(redis_server.url, ns, THRESHOLD="1")
    first = _start(workers, env5, "five")
    wait_for_sync(lambda: _leader(r, keys) == "five", 15, "five to lead")
    wait_for_sync(lambda: _summary(r, keys).get("config_version") == 1, 15, "version 1")
    assert _summary(r, keys)["config"]["threshold"] == 5  # seeded from the first leader's env
    _start(workers, env1, "one")
    assert first.terminate() == 0
    wait_for_sync(lambda: _leader(r, keys) == "one", 15, "one to take over")
    now = time.time()
    for region in REGIONS:
        _rounds(r, keys, region, ["o1"], "healthy", now - 2, 3)
    _rounds(r, keys, "eu", ["o1"], "unhealthy", now - 1, 4)  # enough for 1, not for 5
    wait_for_sync(
        lambda: _summary(r, keys)["regions"]["eu"]["observers"] == {"o1": "unhealthy"}, 15, "o1"
    )
    leader_log = workers[-1]
    wait_for_sync(lambda: "environment differs" in leader_log.output(), 15, "the drift log line")
    assert "threshold env=1 in force=5" in leader_log.output()

    def heartbeat_of_one() -> dict[str, Any]:
        members = json.loads(_ctl(env1, "members", "--json").stdout)["members"]
        return next((m for m in members if m["instance"] == "one"), {})

    # ...and its heartbeat says so, for `failoverctl members`.
    wait_for_sync(lambda: heartbeat_of_one().get("config_drift"), 15, "the drift heartbeat")
    beat = heartbeat_of_one()
    assert beat["config_version"] == "1"
    assert beat["config_drift"] == "threshold env=1 in force=5"
    assert _failovers(r, keys) == []
    # The operator lowers it for the whole fleet, and the leader applies it in order.
    done = _ctl(env5, "config", "set", "threshold=2", "--reason", "faster", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration version 2 in force" in done.stdout
    _health(r, keys, "eu", "o1", "unhealthy", now)
    wait_for_sync(lambda: _failovers(r, keys), 15, "the decision under version 2")
    [decision] = _failovers(r, keys)
    assert decision.config_version == 2
    shown = json.loads(_ctl(env1, "config", "show", "--json").stdout)
    assert shown["version"] == 2 and shown["config"]["threshold"] == 2
    assert shown["environment_differs"]["threshold"] == {"environment": 1, "in_force": 2}
    history = _ctl(env1, "config", "history").stdout
    assert "v1" in history and "v2" in history and "threshold=2" in history
    assert "threshold" in _ctl(env1, "config", "diff").stdout
    # replay applies the change where it happened and reproduces the id; --set overrides it.
    replayed = json.loads(_ctl(env1, "replay", "--from", "-", "--json").stdout)
    assert [d["decision"]["decision_id"] for d in replayed["decisions"]] == [decision.decision_id]
    assert replayed["decisions"][0]["decision"]["config_version"] == 2
    what_if = json.loads(_ctl(env1, "replay", "--from", "-", "--set", "threshold=10",
                              "--json").stdout)  # fmt: skip
    assert what_if["decisions"] == []


def test_operator_commands_wait_for_the_leader(
    redis_server: RedisServer, workers: list[WorkerProcess], ns: str
) -> None:
    env = _env(redis_server.url, ns)
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_server.url)
    now = time.time()
    # No leader yet: --wait gives up, says so, exit 1.
    timed_out = _ctl(env, "pause", "--reason", "upgrade", "--wait", "--wait-timeout", "0.5")
    assert timed_out.returncode == 1
    assert "no leader has applied it" in timed_out.stdout
    _start(workers, env, "c1")
    wait_for_sync(lambda: _leader(r, keys) == "c1", 15, "c1 to lead")
    wait_for_sync(lambda: _summary(r, keys).get("paused"), 15, "the earlier pause applied")
    again = _ctl(env, "pause", "--wait")
    assert again.returncode == 1 and "refused: already paused" in again.stdout
    for region in REGIONS:
        _rounds(r, keys, region, ["o1"], "healthy", now - 2, 3)
    _rounds(r, keys, "eu", ["o1"], "unhealthy", now - 1, 3)
    wait_for_sync(lambda: _summary(r, keys).get("held") == "paused", 15, "the held decision")
    assert "PAUSED    by" in _ctl(env, "status").stdout
    assert _failovers(r, keys) == []
    resumed = _ctl(env, "resume", "--wait")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    wait_for_sync(lambda: _failovers(r, keys), 15, "the decision after resume")
    [auto] = _failovers(r, keys)
    moved = _ctl(env, "emit", "event", "manual_failover", "--region", auto.to_region,
                 "--target", "ap" if auto.to_region != "ap" else "us", "--wait")  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    manual_decision = _failovers(r, keys)[-1]
    assert f"decision {manual_decision.decision_id}:" in moved.stdout
    # A manual request from long ago is refused as expired, and --wait says why.
    old = _ctl(env, "emit", "event", "manual_failover", "--region", "us", "--target", "eu",
               "--at", str(now - 400), "--wait")  # fmt: skip
    assert old.returncode == 1
    assert "refused: expired" in old.stdout
    # Observers: listed, then one forgotten through the events stream.
    listed = json.loads(_ctl(env, "observers", "--json").stdout)
    assert [row["source"] for row in listed] == ["o1"]
    forgot = _ctl(env, "observers", "forget", "o1", "--wait")
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert json.loads(_ctl(env, "observers", "--json").stdout) == []
    unknown = _ctl(env, "observers", "forget", "nobody", "--wait")
    assert unknown.returncode == 1 and "unknown observer nobody" in unknown.stdout
