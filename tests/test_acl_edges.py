"""The executor, the Kafka bridge and the decision mirror run under exactly their documented
ACL (``streams/acl.py``), as ``tests/test_acl.py`` does for the other roles.

Each edge process connects as a Redis user made with ``ACL SETUSER`` from the table; the
coordinator that makes the decisions runs as the default user. The work must be done and
Redis's ``ACL LOG`` must hold no denial for the role's user (its heartbeat included).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import pytest
import redis

from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverCompleted, FailoverDecision, HealthEvent
from schemas.state import PolicySummary
from streams.acl import setuser_rules
from streams.keys import Keys, StateField
from streams.server import RedisServer
from tests.executor_helpers import SECRET, ReceiverProcess, clean_env, executor_env, failover
from tests.kafka_broker import TansuBroker
from tests.kafka_helpers import kafka_env, make_topics, produce, read_topic
from tests.waiting import wait_for, wait_for_sync
from tests.worker_process import WorkerProcess
from workers.kafka.mirror import MIRROR_GROUP

NAMESPACE = "{acl-edge}"
KEYS = Keys(NAMESPACE)
PASSWORD = "edge-pw"


@pytest.fixture
def admin(own_redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The default user, with a user per edge role made from the table."""
    client = redis.Redis.from_url(own_redis_server.url, socket_timeout=5)
    for role in ("executor", "bridge", "mirror"):
        rules = setuser_rules(role, NAMESPACE)
        client.execute_command("ACL", "SETUSER", role, "on", f">{PASSWORD}", *rules)
    client.execute_command("ACL", "LOG", "RESET")
    try:
        yield client
    finally:
        client.close()


def _url(server: RedisServer, role: str) -> str:
    return f"redis://{role}:{PASSWORD}@127.0.0.1:{server.port}/0"


def _denials(admin: redis.Redis, role: str) -> list[object]:
    return [e for e in admin.execute_command("ACL", "LOG") if e[b"username"] == role.encode()]


def _member_roles(admin: redis.Redis) -> set[str]:
    """The roles whose heartbeat hash exists now (written under the role's own user)."""
    found = set()
    for key in admin.scan_iter(match=f"{KEYS.namespace}:members:*"):
        role = admin.hget(key, "role")
        if role is not None:
            found.add(role.decode())
    return found


def _settled(admin: redis.Redis, group: str) -> bool:
    for info in admin.xinfo_groups(KEYS.decisions):
        if info["name"].decode() == group:
            return bool(info["lag"] == 0 and info["pending"] == 0)
    return False


def _outage(admin: redis.Redis) -> None:
    """One observer sees both regions healthy, then eu unhealthy: the leader fails over."""
    now = time.time()
    for n, (region, status) in enumerate(
        [("eu", "healthy"), ("us", "healthy"), ("eu", "unhealthy")]
    ):
        event = HealthEvent(f"o1-{n}", region, "o1", status, now + n / 1000)  # type: ignore[arg-type]
        admin.xadd(KEYS.health, encode_entry(event))  # type: ignore[arg-type]


def _completed_recorded(admin: redis.Redis) -> bool:
    raw = admin.hget(KEYS.state, StateField.SUMMARY)
    if raw is None:
        return False
    summary = msgspec.json.decode(raw, type=PolicySummary)
    return (summary.open_failover or {}).get("status") == "completed"


def test_executor_carries_out_and_reports_a_decision_under_its_acl(
    own_redis_server: RedisServer, admin: redis.Redis, workers: list[WorkerProcess]
) -> None:
    receiver = ReceiverProcess().start()
    try:
        coordinator = clean_env(
            redis_url=own_redis_server.url, namespace=NAMESPACE, instance_id="c1",
            regions="eu,us", threshold="1", quorum="1", recovery_threshold="1",
            window_ms="600000", stale_after_ms="3600000", cooldown_ms="0", tick_ms="100",
            lease_ttl_ms="2000",
        )  # fmt: skip
        workers.append(WorkerProcess("workers.coordinator", coordinator, name="c1").start())
        env = executor_env(
            _url(own_redis_server, "executor"), NAMESPACE, instance_id="x1", regions="eu,us",
            executor_webhook_url=receiver.url, executor_webhook_secret=SECRET,
        )  # fmt: skip
        executor = WorkerProcess("workers.executor", env, name="x1").start()
        workers.append(executor)
        wait_for_sync(lambda: admin.get(KEYS.leader), 20, "a leader")
        wait_for_sync(lambda: "executor" in _member_roles(admin), 20, "the executor heartbeat")
        _outage(admin)
        wait_for_sync(lambda: receiver.state()["routing"] == "us", 20, "routing moved to us")
        wait_for_sync(lambda: _settled(admin, "executor"), 10, "the decision settled")
        [applied] = receiver.state()["applied"]
        reports = [decode_entry(f, stream="events") for _, f in admin.xrange(KEYS.events)]
        [report] = [r for r in reports if isinstance(r, FailoverCompleted)]
        assert report.decision_id == applied["decision_id"]
        wait_for_sync(lambda: _completed_recorded(admin), 20, "failover_completed recorded")
        assert executor.terminate() == 0, executor.output()
    finally:
        receiver.close()
    assert _denials(admin, "executor") == []


@pytest.mark.kafka
async def test_bridge_appends_to_health_under_its_acl(
    kafka_broker: TansuBroker, own_redis_server: RedisServer, admin: redis.Redis,
    workers: list[WorkerProcess],
) -> None:  # fmt: skip
    topics = await make_topics(kafka_broker.bootstrap, health=1, events=1)
    value = HealthEvent("k1", "eu", "p1", "healthy", time.time())
    record = encode_entry(value)[b"data"]
    await produce(kafka_broker.bootstrap, topics.health, [(b"p1", record)])
    url = _url(own_redis_server, "bridge")
    env = kafka_env(kafka_broker.bootstrap, topics, redis_url=url, namespace=NAMESPACE)
    bridge = WorkerProcess("workers.bridge", env, "acl-bridge")
    workers.append(bridge.start())

    def landed() -> bool:
        return [f[b"data"] for _, f in admin.xrange(KEYS.health)] == [record]

    await wait_for(landed, 30, "the record on NS:health")
    await wait_for(lambda: "bridge" in _member_roles(admin), 20, "the bridge heartbeat")
    assert bridge.terminate() == 0, bridge.output()
    assert _denials(admin, "bridge") == []


@pytest.mark.kafka
async def test_mirror_sends_a_decision_to_kafka_under_its_acl(
    kafka_broker: TansuBroker, own_redis_server: RedisServer, admin: redis.Redis,
    workers: list[WorkerProcess],
) -> None:  # fmt: skip
    topics = await make_topics(kafka_broker.bootstrap, decisions=1)
    url = _url(own_redis_server, "mirror")
    env = kafka_env(kafka_broker.bootstrap, topics, redis_url=url, namespace=NAMESPACE)
    mirror = WorkerProcess("workers.mirror", env, "acl-mirror")
    workers.append(mirror.start())
    await wait_for(lambda: "mirror" in _member_roles(admin), 20, "the mirror heartbeat")
    decision: FailoverDecision = failover(1, "us")
    admin.xadd(KEYS.decisions, encode_entry(decision))  # type: ignore[arg-type]

    async def on_kafka() -> bool:
        return len(await read_topic(kafka_broker.bootstrap, topics.decisions)) >= 1

    await wait_for(on_kafka, 30, "the decision on the decisions topic")
    [record] = await read_topic(kafka_broker.bootstrap, topics.decisions)
    assert record.value == encode_entry(decision)[b"data"]  # type: ignore[attr-defined]
    await wait_for(lambda: _settled(admin, MIRROR_GROUP), 10, "the mirror acked")
    assert mirror.terminate() == 0, mirror.output()
    assert _denials(admin, "mirror") == []
