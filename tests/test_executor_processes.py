"""The executor as a real process: with a real coordinator and a real receiver, under
SIGKILL at every step of carrying out a decision, and two of them in one group."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverCompleted, FailoverFailed, HealthEvent
from schemas.state import PolicySummary
from streams.keys import Keys, StateField
from streams.server import RedisServer, free_port
from tests.executor_helpers import (
    SECRET,
    ReceiverProcess,
    clean_env,
    executor_env,
    failover,
    leader,
)
from tests.waiting import wait_for_sync
from tests.worker_process import WorkerProcess

GROUP = "executor"


@pytest.fixture
def receivers() -> Iterator[list[ReceiverProcess]]:
    started: list[ReceiverProcess] = []
    try:
        yield started
    finally:
        for receiver in started:
            receiver.close()


def sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def reports(r: redis.Redis, keys: Keys) -> list[FailoverCompleted | FailoverFailed]:
    out = []
    for _, fields in r.xrange(keys.events):
        entry = decode_entry(fields, stream="events")
        if isinstance(entry, FailoverCompleted | FailoverFailed):
            out.append(entry)
    return out


def settled(r: redis.Redis, keys: Keys, group: str = GROUP) -> bool:
    """The group exists, everything was delivered to it and nothing is pending."""
    for info in r.xinfo_groups(keys.decisions):
        if info["name"].decode() == group:
            return bool(info["lag"] == 0 and info["pending"] == 0)
    return False


def record(r: redis.Redis, keys: Keys, decision_id: str) -> dict[str, object] | None:
    raw = r.hget(keys.executor(GROUP), f"d:{decision_id}")
    return None if raw is None else msgspec.json.decode(raw)


def start_executor(
    workers: list[WorkerProcess], url: str, namespace: str, name: str, **extra: str
) -> WorkerProcess:
    env = executor_env(url, namespace, instance_id=name, **extra)
    worker = WorkerProcess("workers.executor", env, name=name).start()
    workers.append(worker)
    return worker


# -- with a real coordinator ------------------------------------------------------------

COORDINATOR = {
    "regions": "eu,us",
    "threshold": "1",
    "quorum": "1",
    "recovery_threshold": "1",
    "window_ms": "600000",
    "stale_after_ms": "3600000",
    "cooldown_ms": "0",
    "tick_ms": "100",
    "lease_ttl_ms": "2000",
}


def outage(r: redis.Redis, keys: Keys) -> None:
    """One observer sees both regions healthy, then eu unhealthy: the leader fails over."""
    now = time.time()
    for n, (region, status) in enumerate(
        [("eu", "healthy"), ("us", "healthy"), ("eu", "unhealthy")]
    ):
        event = HealthEvent(
            event_id=f"o1-{n}",
            region=region,
            source="o1",
            status=status,
            observed_at=now + n / 1000,
        )
        r.xadd(keys.health, encode_entry(event))


def summary(r: redis.Redis, keys: Keys) -> PolicySummary | None:
    raw = r.hget(keys.state, StateField.SUMMARY)
    return None if raw is None else msgspec.json.decode(raw, type=PolicySummary)


def start_coordinator(workers: list[WorkerProcess], url: str, namespace: str) -> None:
    env = clean_env(redis_url=url, namespace=namespace, instance_id="c1", **COORDINATOR)
    workers.append(WorkerProcess("workers.coordinator", env, name="c1").start())


def test_a_decision_reaches_the_receiver_once_and_the_coordinator_records_it_completed(
    redis_server: RedisServer,
    namespace: str,
    workers: list[WorkerProcess],
    receivers: list[ReceiverProcess],
) -> None:
    keys = Keys(namespace)
    r = sync_client(redis_server.url)
    receiver = ReceiverProcess().start()
    receivers.append(receiver)
    metrics_port = free_port()
    start_coordinator(workers, redis_server.url, namespace)
    executor = start_executor(
        workers,
        redis_server.url,
        namespace,
        "x1",
        executor_webhook_url=receiver.url,
        executor_webhook_secret=SECRET,
        metrics_port=str(metrics_port),
    )
    wait_for_sync(lambda: r.get(keys.leader), 20, "a leader")
    outage(r, keys)
    wait_for_sync(lambda: receiver.state()["routing"] == "us", 20, "routing moved to us")
    wait_for_sync(lambda: settled(r, keys), 10, "the decision settled")
    [applied] = receiver.state()["applied"]
    assert (applied["from_region"], applied["to_region"]) == ("eu", "us")
    # The receiver applies only what is signed with the secret: this one was.
    assert receiver.state()["bad_signatures"] == 0
    [report] = reports(r, keys)
    assert isinstance(report, FailoverCompleted)
    assert report.decision_id == applied["decision_id"] and report.region == "us"

    def recorded() -> bool:
        s = summary(r, keys)
        return s is not None and (s.open_failover or {}).get("status") == "completed"

    wait_for_sync(recorded, 20, "the coordinator to record failover_completed")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as m:
        text = m.read().decode()
    assert 'failover_executor_actions_total{group="executor",outcome="completed"} 1.0' in text
    assert 'failover_executor_action_seconds_count{group="executor"} 1.0' in text
    wait_for_sync(
        lambda: (
            'failover_executor_lag_entries{group="executor"} 0.0'
            in urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
            .read()
            .decode()
        ),
        10,
        "the lag gauge",
    )
    assert executor.terminate() == 0
    assert SECRET not in executor.output()
    # failoverctl status: the group's position and the last decision it applied.
    env = clean_env(redis_url=redis_server.url, namespace=namespace, regions="eu,us")
    shown = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    position = r.hget(keys.executor(GROUP), "position").decode()
    row = next(line for line in shown.splitlines() if line.startswith("executor "))
    assert position in row and f"{applied['decision_id']} completed" in row, shown
    assert "[1 completed, 0 failed]" in row
    as_json = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    [group] = json.loads(as_json)["decision_groups"]
    assert group["group"] == GROUP and group["position"] == position
    assert group["last"]["decision_id"] == applied["decision_id"]


def test_a_failing_action_retried_then_reported_failed_makes_the_target_suspect(
    redis_server: RedisServer, namespace: str, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    keys = Keys(namespace)
    r = sync_client(redis_server.url)
    runs = tmp_path / "runs"
    action = tmp_path / "dns.sh"
    action.write_text(f'#!/bin/sh\necho x >> {runs}\necho "DNS API 503" >&2\nexit 1\n')
    action.chmod(0o755)
    start_coordinator(workers, redis_server.url, namespace)
    start_executor(workers, redis_server.url, namespace, "x1", executor_command=str(action))
    wait_for_sync(lambda: r.get(keys.leader), 20, "a leader")
    outage(r, keys)
    wait_for_sync(lambda: reports(r, keys), 20, "a report")
    [report] = reports(r, keys)
    assert isinstance(report, FailoverFailed) and report.region == "us"
    assert "exit 1: DNS API 503" in (report.detail or "") and "after 3 attempts" in (
        report.detail or ""
    )
    assert runs.read_text().count("x") == 3

    def suspect() -> bool:
        s = summary(r, keys)
        return (
            s is not None
            and (s.open_failover or {}).get("status") == "failed"
            and s.regions["us"].state == "suspect"
        )

    wait_for_sync(suspect, 20, "us suspect after the failed failover")


# -- SIGKILL at every step --------------------------------------------------------------

_SPIN = "local n = 0 while true do n = n + 1 end"


def busy_redis(url: str) -> threading.Thread:
    """Run a script that never ends (until SCRIPT KILL); every other command gets BUSY."""
    sync_client(url).config_set("busy-reply-threshold", 50)
    # No socket timeout and no retries: redis-py would otherwise send the EVAL again after
    # a timeout, and that second spin could start right after the test's SCRIPT KILL.
    client = redis.Redis.from_url(url, socket_timeout=None, retry=Retry(NoBackoff(), 0))

    def spin() -> None:
        # SCRIPT KILL ends it with an error; a killed server too.
        with contextlib.suppress(redis.RedisError):
            client.eval(_SPIN, 0)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    probe = sync_client(url)
    wait_for_sync(lambda: _busy(probe), 10, "Redis busy")
    return thread


def _busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.ResponseError as exc:
        return "BUSY" in str(exc)
    return False


@pytest.mark.chaos
@pytest.mark.parametrize("step", ["before", "during", "after"])
def test_sigkill_at_every_step_never_applies_a_decision_twice_and_applies_every_one(
    own_redis_server: RedisServer,
    namespace: str,
    workers: list[WorkerProcess],
    receivers: list[ReceiverProcess],
    tmp_path: Path,
    step: str,
) -> None:
    """before: started, the receiver not reached; during: the receiver applied it and has
    not answered; after: the receiver answered, the report and ack cannot be written."""
    keys = Keys(namespace)
    url = own_redis_server.url
    r = sync_client(url)
    port = free_port()
    state = tmp_path / "routing.json"
    # The receiver holds its answers for a while so the test can act in between.
    receiver = ReceiverProcess(state=state, port=port, delay_ms=0 if step == "before" else 1500)
    webhook = {
        "executor_webhook_url": receiver.url,
        "executor_webhook_secret": SECRET,
        "executor_timeout_ms": "5000",
    }
    if step != "before":
        receivers.append(receiver.start())
    r.xadd(keys.decisions, encode_entry(leader(1)))
    r.xadd(keys.decisions, encode_entry(failover(1, to="us", epoch=1)))
    first = start_executor(workers, url, namespace, "x1", **webhook)

    if step == "before":  # connection refused: the action is started and being retried
        wait_for_sync(lambda: (record(r, keys, "d1") or {}).get("status") == "started", 20, "start")
        wait_for_sync(lambda: "attempt 1 failed" in first.output(), 20, "a refused attempt")
        first.kill()
        receivers.append(receiver.start())
    elif step == "during":
        wait_for_sync(lambda: receiver.applied_ids() == ["d1"], 20, "the receiver applied d1")
        first.kill()
    else:
        wait_for_sync(lambda: receiver.applied_ids() == ["d1"], 20, "the receiver applied d1")
        # Hold Redis in a busy script: the settle is answered BUSY (not queued, as it would
        # be behind a SIGSTOP), so the executor is stuck between the action and the record.
        hog = busy_redis(url)
        try:
            # Retries are logged at DEBUG; the line that counts says the settle gave up.
            wait_for_sync(
                lambda: "settle: BUSY" in first.output() and "gave up" in first.output(),
                30,
                "the settle to give up",
            )
            first.kill()
        finally:
            r.script_kill()
            hog.join(timeout=10)
    assert reports(r, keys) == [] and not settled(r, keys)
    # More decisions while it is down: every one must be applied after the restart.
    r.xadd(keys.decisions, encode_entry(failover(2, to="eu", frm="us", epoch=1)))
    r.xadd(keys.decisions, encode_entry(leader(2)))
    r.xadd(keys.decisions, encode_entry(failover(3, to="us", epoch=2)))
    start_executor(workers, url, namespace, "x1", **webhook)
    wait_for_sync(lambda: settled(r, keys), 60, "every decision settled after the restart")
    assert receiver.applied_ids() == ["d1", "d2", "d3"]
    assert receiver.state()["routing"] == "us"
    done = reports(r, keys)
    assert [(type(e), e.decision_id) for e in done] == [
        (FailoverCompleted, "d1"),
        (FailoverCompleted, "d2"),
        (FailoverCompleted, "d3"),
    ]
    assert (record(r, keys, "d1") or {}).get("runs") == 2  # sent again once, same id


@pytest.mark.chaos
def test_two_executors_in_one_group_apply_each_decision_once_in_total_even_if_one_dies(
    redis_server: RedisServer,
    namespace: str,
    workers: list[WorkerProcess],
    receivers: list[ReceiverProcess],
) -> None:
    keys = Keys(namespace)
    r = sync_client(redis_server.url)
    receiver = ReceiverProcess(delay_ms=20).start()
    receivers.append(receiver)
    webhook = {"executor_webhook_url": receiver.url, "executor_webhook_secret": SECRET}
    a = start_executor(workers, redis_server.url, namespace, "xa", **webhook)
    start_executor(workers, redis_server.url, namespace, "xb", **webhook)
    targets = ["us", "eu"]
    ids = [f"d{n}" for n in range(40)]
    for n in range(40):
        r.xadd(keys.decisions, encode_entry(failover(n, to=targets[n % 2], epoch=1)))
        if n == 20:
            a.kill()  # one of them dies mid-stream, maybe inside an action
    wait_for_sync(lambda: settled(r, keys), 60, "every decision settled")
    assert receiver.applied_ids() == ids  # once each, in stream order
    done = reports(r, keys)
    assert sorted(e.decision_id for e in done) == sorted(ids)
    assert all(isinstance(e, FailoverCompleted) for e in done)
