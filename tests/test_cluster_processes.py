"""Real processes on a Redis Cluster of three primaries (and the same on a single server).

- a ``python -m workers.coordinator`` fleet applies health events and decides a failover;
  ``failoverctl status`` and the lag monitor's sample report it;
- resharding another slot under the running fleet (held half-moved, so the node that
  serves the namespace answers ``ASK``/``MOVED`` for it) changes nothing: no exit, the
  same leader and epoch, events still applied; moving the namespace's own slot is
  followed (the processes reconnect to the new owner and keep applying);
- an untagged namespace on a cluster is one line and exit 2 for every process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverDecision, HealthEvent
from streams.cluster_set import ClusterSet
from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.lag import LagSampler
from streams.server import RedisServer, die_with_parent

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "FAILOVER_REGIONS": "eu,us,ap",
    "FAILOVER_LEASE_TTL_MS": "3000",
    "FAILOVER_THRESHOLD": "2",
    "FAILOVER_QUORUM": "2",
    "FAILOVER_RECOVERY_THRESHOLD": "2",
    "FAILOVER_WINDOW_MS": "600000",
    "FAILOVER_STALE_AFTER_MS": "3600000",
    "FAILOVER_COOLDOWN_MS": "0",
    "FAILOVER_TICK_MS": "100",
    "FAILOVER_REELECT_DELAY_MS": "1000",
    "FAILOVER_REELECT_JITTER_MS": "0",
    "FAILOVER_MAX_CLOCK_SKEW_MS": "0",
    "FAILOVER_SHUTDOWN_TIMEOUT_MS": "3000",
}


def _env(url: str, namespace: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    return base | ENV | {"FAILOVER_REDIS_URL": url, "FAILOVER_NAMESPACE": namespace, **extra}


class Fleet:
    """Coordinator processes, their logs in ``tmp_path``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, env: dict[str, str], module: str = "workers.coordinator") -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**env, "FAILOVER_INSTANCE_ID": name},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - main thread
            )

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs.values())

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            for name in self.procs
        )

    def stop(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    group = Fleet(tmp_path)
    try:
        yield group
    finally:
        for proc in group.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _client(url: str, cluster: bool) -> redis.Redis | RedisCluster:
    """The test's own view: redis-py's cluster client on a cluster (it follows redirects
    itself, independently of ``streams.routing``), else a plain client."""
    if cluster:
        port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)], socket_timeout=5)
    return redis.Redis.from_url(url, socket_timeout=5)


def _wait(check: Any, what: str, fleet: Fleet, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if not fleet.alive():
            raise AssertionError(f"a process exited waiting for {what}:\n{fleet.logs_text()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{fleet.logs_text()}")


def _health(r: Any, keys: Keys, region: str, status: str, observers: tuple[str, ...]) -> None:
    for source in observers:
        event = HealthEvent(uuid.uuid4().hex, region, source, status, time.time())  # type: ignore[arg-type]
        r.xadd(keys.health, encode_entry(event))


def _leader(r: Any, keys: Keys) -> tuple[str, int] | None:
    owner, epoch = r.get(keys.leader), r.get(keys.epoch)
    return (owner.decode(), int(epoch)) if owner else None


def _drained(r: Any, keys: Keys) -> bool:
    for stream in keys.input_streams:
        try:
            groups = [g for g in r.xinfo_groups(stream) if g["name"] == GROUP.encode()]
        except redis.ResponseError:
            return False
        if not groups or groups[0]["pending"] or groups[0]["lag"]:
            return False
    return True


def _failovers(r: Any, keys: Keys) -> list[FailoverDecision]:
    out = []
    for _, fields in r.xrange(keys.decisions):
        entry = decode_entry(fields, stream="decisions")
        if isinstance(entry, FailoverDecision):
            out.append(entry)
    return out


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


def test_fleet_decides_a_failover_and_reports_it(
    any_redis_url: str, namespace: str, fleet: Fleet, request: pytest.FixtureRequest
) -> None:
    cluster = "cluster" in request.node.callspec.id
    keys = Keys(namespace)
    env = _env(any_redis_url, namespace)
    fleet.start("c1", env)
    fleet.start("c2", env)
    r = _client(any_redis_url, cluster)
    try:
        owner, epoch = _wait(lambda: _leader(r, keys), "a leader", fleet)
        for _ in range(2):  # FAILOVER_RECOVERY_THRESHOLD reports: us and ap are up
            _health(r, keys, "us", "healthy", ("o1", "o2"))
            _health(r, keys, "ap", "healthy", ("o1", "o2"))
        for _ in range(2):  # FAILOVER_THRESHOLD reports by a quorum: eu is down
            _health(r, keys, "eu", "unhealthy", ("o1", "o2"))
        (decision,) = _wait(lambda: _failovers(r, keys), "a failover decision", fleet)
        assert decision.from_region == "eu" and decision.epoch == epoch
        _wait(lambda: _drained(r, keys), "every event applied", fleet)

        done = _ctl(env, "status", "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["leader"]["owner"] == owner and status["leader"]["epoch"] == epoch
        assert status["state"]["epoch"] == epoch
        assert status["active_region"] == decision.to_region
        assert status["decisions"] >= 2  # leader_changed, then the failover

        async def sample() -> Any:
            client = connect(any_redis_url)
            try:
                return await LagSampler(client, keys).sample(with_state=True)
            finally:
                await client.aclose()

        report = asyncio.run(sample())
        assert report.leader == owner and report.epoch == epoch
        assert [(s.lag, s.pending) for s in report.streams] == [(0, 0), (0, 0)]
        assert report.state is not None and report.state.epoch == epoch
        assert fleet.alive()
        assert fleet.stop() == {"c1": 0, "c2": 0}
    finally:
        r.close()
    assert "Traceback" not in fleet.logs_text()


def _foreign_tag(cluster: ClusterSet, owner: RedisServer) -> str:
    """A hash tag of a slot other than the namespace's, served by the same node."""
    while True:
        tag = "{other-" + uuid.uuid4().hex[:8] + "}"
        if cluster.owner(cluster.slot(tag)) is owner:
            return tag


def test_resharding_under_a_running_fleet(
    redis_cluster: ClusterSet, namespace: str, fleet: Fleet
) -> None:
    keys = Keys(namespace)
    slot = redis_cluster.slot(keys.leader)
    home = redis_cluster.owner(slot)
    others = [s for s in redis_cluster.servers if s is not home]
    env_a = _env(redis_cluster.entry_url(namespace), namespace)
    env_b = _env(home.url, namespace)
    fleet.start("c1", env_a)
    fleet.start("c2", env_b)
    r = _client(home.url, cluster=True)
    try:
        leader = _wait(lambda: _leader(r, keys), "a leader", fleet)

        # 1. Another slot of the same node moves, held half-moved for 1.5 s meanwhile.
        tag = _foreign_tag(redis_cluster, home)
        for i in range(20):
            r.set(f"{tag}:k{i}", i)
        mover = threading.Thread(
            target=redis_cluster.migrate_slot,
            args=(redis_cluster.slot(tag), others[0]),
            kwargs={"pause_s": 1.5},
        )
        mover.start()
        for _ in range(15):
            _health(r, keys, "us", "healthy", ("o1", "o2", "o3"))
            time.sleep(0.1)
        mover.join(timeout=30)
        assert redis_cluster.owner(redis_cluster.slot(tag)) is others[0]
        assert r.get(f"{tag}:k7") == b"7"
        _wait(lambda: _drained(r, keys), "the events applied", fleet)
        assert _leader(r, keys) == leader  # same owner, same epoch: nothing noticed

        # 2. The namespace's own slot moves: every process follows MOVED to the new owner.
        mover = threading.Thread(
            target=redis_cluster.migrate_slot, args=(slot, others[1]), kwargs={"pause_s": 1.0}
        )
        mover.start()
        for _ in range(2):
            _health(r, keys, "eu", "unhealthy", ("o1", "o2"))
            time.sleep(0.3)
        mover.join(timeout=30)
        assert redis_cluster.owner(slot) is others[1]
        _health(r, keys, "ap", "healthy", ("o1", "o2"))
        (decision,) = _wait(lambda: _failovers(r, keys), "a failover decision", fleet)
        assert decision.from_region == "eu"
        _wait(lambda: _drained(r, keys), "the events applied", fleet)
        # Both coordinators talk to the new owner now (their clients are named after them).
        assert _wait(lambda: _clients_on(others[1]) >= {"c1", "c2"}, "clients moved", fleet)
        assert fleet.alive()
        assert fleet.stop() == {"c1": 0, "c2": 0}
    finally:
        r.close()
    assert "Traceback" not in fleet.logs_text()


def _clients_on(server: RedisServer) -> set[str]:
    """The instances whose coordinator client is connected to ``server``."""
    with redis.Redis(port=server.port, socket_timeout=5) as client:
        rows: list[dict[str, Any]] = client.client_list()
    names = [str(row.get("name", "")) for row in rows]
    return {n.split(":", 1)[1].split("#")[0] for n in names if n.startswith("coordinator:c")}


# Every process the runtime runs, and what each needs besides Redis to get that far.
PROCESSES = {
    "workers.coordinator": {},
    "workers.health": {"FAILOVER_PROBE_TARGETS": "eu=http://127.0.0.1:9/health"},
    "workers.lagmon": {},
    "workers.executor": {"FAILOVER_EXECUTOR_COMMAND": "true"},
    "workers.bridge": {"FAILOVER_KAFKA_BOOTSTRAP": "127.0.0.1:9"},
    "workers.mirror": {"FAILOVER_KAFKA_BOOTSTRAP": "127.0.0.1:9"},
}


def test_an_untagged_namespace_on_a_cluster_is_exit_2_for_every_process(
    redis_cluster: ClusterSet, redis_server: RedisServer, tmp_path: Path
) -> None:
    untagged = "plain-" + uuid.uuid4().hex[:8]
    procs = {}
    for module, extra in PROCESSES.items():
        env = _env(redis_cluster.url, untagged, **extra)
        procs[module] = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        ctl = _ctl(_env(redis_cluster.url, untagged), "status")
        results = {name: (p.wait(timeout=30), *p.communicate()) for name, p in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results["failoverctl"] = (ctl.returncode, ctl.stdout, ctl.stderr)
    for name, (code, out, err) in results.items():
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (name, out, err)
        assert len(lines) == 1 and "FAILOVER_NAMESPACE" in lines[0], (name, err)
        assert "hash tag" in lines[0] and untagged in lines[0], (name, err)
    # The same namespace on a single server is fine, and a tagged one on the cluster too.
    single = _ctl(_env(redis_server.url, untagged), "status", "--json")
    assert single.returncode == 0, single.stderr
    tagged = _ctl(_env(redis_cluster.url, "{" + untagged + "}"), "status", "--json")
    assert tagged.returncode == 0, tagged.stderr
