"""The executor library (follow, fence, act, report, ack) against a real Redis, its actions
against a real receiver process and real commands, and the executor process's settings."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from schemas.codec import decode_entry, encode_data
from schemas.events import FailoverCompleted, FailoverDecision, FailoverFailed
from streams.connection import connect
from streams.keys import Keys
from streams.ledger import ExecutorLedger, read_groups
from streams.producer import append
from streams.server import RedisServer, free_port
from tests.executor_helpers import (
    SECRET,
    ReceiverProcess,
    clean_env,
    failover,
    leader,
)
from tests.waiting import wait_for
from workers.executor import Follower, Outcome, sign, verify
from workers.executor.command import CommandAction
from workers.executor.signature import DECISION_ID_HEADER, EPOCH_HEADER, HEADER
from workers.executor.webhook import WebhookAction

GROUP = "dns"


class Recorder:
    """An action that records every call and answers as told."""

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.outcome = outcome or Outcome.done("moved")

    async def __call__(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
        assert decode_entry({b"data": body}, stream="decisions") == decision
        self.calls.append((decision.decision_id, decision.epoch, run))
        return self.outcome


class Running:
    """Followers run as tasks of the test, stopped as SIGTERM stops them."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, follower: Follower) -> Follower:
        self.tasks.append(asyncio.create_task(follower.run(self.stop)))
        return follower

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    run = Running()
    try:
        yield run
    finally:
        run.stop.set()
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)


@pytest.fixture
def receivers() -> Iterator[list[ReceiverProcess]]:
    started: list[ReceiverProcess] = []
    try:
        yield started
    finally:
        for receiver in started:
            receiver.close()


def follower(
    redis: aioredis.Redis, keys: Keys, action: object, consumer: str = "x1#a", **kw: int
) -> Follower:
    kw.setdefault("hold_ms", 2000)
    kw.setdefault("claim_idle_ms", 200)
    return Follower(redis, keys, GROUP, consumer, action, block_ms=20, **kw)  # type: ignore[arg-type]


async def reports(redis: aioredis.Redis, keys: Keys) -> list[FailoverCompleted | FailoverFailed]:
    out = []
    for _, fields in await redis.xrange(keys.events):
        entry = decode_entry(fields, stream="events")
        assert isinstance(entry, FailoverCompleted | FailoverFailed)
        out.append(entry)
    return out


async def settled(redis: aioredis.Redis, keys: Keys) -> bool:
    """Every decision delivered to the group and acked."""
    groups = {g.group: g for g in await read_groups(redis, keys)}
    g = groups.get(GROUP)
    return g is not None and g.lag == 0 and g.pending == 0


# -- the library ------------------------------------------------------------------------


async def test_a_decision_is_acted_on_once_reported_and_acked_with_the_report(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    action = Recorder()
    await append(redis_client, keys.decisions, leader(3))
    entry = await append(redis_client, keys.decisions, failover(1, epoch=3))
    running.start(follower(redis_client, keys, action))
    await wait_for(lambda: settled(redis_client, keys), 10, "the decision settled")
    assert action.calls == [("d1", 3, 1)]
    [report] = await reports(redis_client, keys)
    assert isinstance(report, FailoverCompleted)
    assert (report.decision_id, report.region, report.detail) == ("d1", "us", "moved")
    [group] = await read_groups(redis_client, keys)
    assert group.position == entry and group.epoch == 3 and group.completed == 1
    assert group.last is not None and group.last.decision_id == "d1"
    assert group.last.status == "completed" and group.last.report is not None
    # A restart of the follower (new consumer) acts on nothing again.
    await running.close()
    again = Running()
    again.start(follower(redis_client, keys, action, consumer="x2#b"))
    await asyncio.sleep(0.3)  # nothing to wait for: the point is that nothing happens
    await again.close()
    assert action.calls == [("d1", 3, 1)]


async def test_a_lower_epoch_re_added_by_hand_is_skipped_reported_and_counted(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    action = Recorder()
    await append(redis_client, keys.decisions, failover(1, epoch=2))
    await append(redis_client, keys.decisions, failover(2, to="ap", epoch=5))
    running.start(follower(redis_client, keys, action))
    await wait_for(lambda: settled(redis_client, keys), 10, "two decisions settled")
    # By hand: the first decision again (epoch 2), and a new one at epoch 4 < 5.
    await append(redis_client, keys.decisions, failover(1, epoch=2))
    await append(redis_client, keys.decisions, failover(3, epoch=4))
    await wait_for(lambda: settled(redis_client, keys), 10, "the hand-added ones settled")
    assert action.calls == [("d1", 2, 1), ("d2", 5, 1)]
    [group] = await read_groups(redis_client, keys)
    assert (group.stale, group.completed, group.epoch) == (2, 2, 5)
    stale = [r for r in await reports(redis_client, keys) if isinstance(r, FailoverFailed)]
    assert [r.decision_id for r in stale] == ["d1", "d3"]
    assert all("lower than epoch 5" in (r.detail or "") for r in stale)


async def test_epochs_as_large_as_the_lease_makes_them_stay_exact(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    # The acquire script seeds epochs from the server clock in microseconds (16 digits);
    # the group's records and its stale check must keep every digit (cjson would not).
    big = 1_795_944_125_872_927
    action = Recorder()
    await append(redis_client, keys.decisions, failover(1, epoch=big))
    await append(redis_client, keys.decisions, failover(2, to="ap", epoch=big - 1))
    running.start(follower(redis_client, keys, action))
    await wait_for(lambda: settled(redis_client, keys), 10, "both decisions settled")
    assert action.calls == [("d1", big, 1)]
    [group] = await read_groups(redis_client, keys)
    assert group.epoch == big and group.stale == 1
    record = await redis_client.hget(keys.executor(GROUP), "d:d1")
    assert record is not None and str(big).encode() in record
    [stale] = [r for r in await reports(redis_client, keys) if isinstance(r, FailoverFailed)]
    assert f"lower than epoch {big}" in (stale.detail or "")


async def test_a_decision_id_already_done_is_not_acted_on_again(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    action = Recorder()
    await append(redis_client, keys.decisions, failover(1, epoch=2))
    running.start(follower(redis_client, keys, action))
    await wait_for(lambda: settled(redis_client, keys), 10, "the decision settled")
    await append(redis_client, keys.decisions, failover(1, epoch=2))  # same id, same epoch
    await append(redis_client, keys.decisions, leader(3))
    await wait_for(lambda: settled(redis_client, keys), 10, "the copy settled")
    assert action.calls == [("d1", 2, 1)]
    [group] = await read_groups(redis_client, keys)
    assert (group.duplicate, group.completed, group.epoch) == (1, 1, 3)
    assert len(await reports(redis_client, keys)) == 1


async def test_a_decision_a_dead_consumer_started_is_sent_again_once_its_hold_ran_out(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    entry = await append(redis_client, keys.decisions, failover(1, epoch=2))
    ledger = ExecutorLedger(redis_client, keys, GROUP)
    # What a consumer that died inside the action leaves behind: a started record.
    begun = await ledger.begin(entry, "d1", 2, "dead#1", hold_ms=1500, max_runs=3)
    assert (begun.answer, begun.detail) == ("run", "1")
    action = Recorder()
    running.start(follower(redis_client, keys, action))
    await asyncio.sleep(0.5)  # inside the dead consumer's hold: the point is that it waits
    assert action.calls == []
    await wait_for(lambda: settled(redis_client, keys), 10, "the decision settled")
    assert action.calls == [("d1", 2, 2)]  # run 2: the resource sees it is a repeat
    record = await ledger.record("d1")
    assert record is not None and (record.status, record.runs) == ("completed", 2)


async def test_a_decision_that_stopped_its_executor_max_runs_times_is_reported_failed(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    entry = await append(redis_client, keys.decisions, failover(1, epoch=2))
    ledger = ExecutorLedger(redis_client, keys, GROUP)
    for n in range(3):
        assert (await ledger.begin(entry, "d1", 2, f"dead#{n}", hold_ms=0, max_runs=3)).answer == (
            "run"
        )
    action = Recorder()
    running.start(follower(redis_client, keys, action, max_runs=3))
    await wait_for(lambda: settled(redis_client, keys), 10, "the decision settled")
    assert action.calls == []
    [report] = await reports(redis_client, keys)
    assert isinstance(report, FailoverFailed) and "stopped 3 times" in (report.detail or "")


async def test_two_followers_in_one_group_act_once_each_in_stream_order(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    order: list[str] = []

    class Slow(Recorder):
        async def __call__(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
            order.append(decision.decision_id)
            await asyncio.sleep(0.01)
            return await super().__call__(decision, body, run)

    a, b = Slow(), Slow()
    running.start(follower(redis_client, keys, a, consumer="a#1"))
    running.start(follower(redis_client, keys, b, consumer="b#1"))
    targets = ["us", "ap", "eu"]
    for n in range(30):
        await append(redis_client, keys.decisions, failover(n, to=targets[n % 3], epoch=1))
    await wait_for(lambda: settled(redis_client, keys), 20, "thirty decisions settled")
    assert order == [f"d{n}" for n in range(30)]
    assert len(a.calls) + len(b.calls) == 30 and a.calls and b.calls
    assert len(await reports(redis_client, keys)) == 30


async def test_a_deleted_decisions_stream_is_followed_again_once_recreated(
    redis_client: aioredis.Redis, keys: Keys, running: Running
) -> None:
    action = Recorder()
    await append(redis_client, keys.decisions, failover(1, epoch=2))
    running.start(follower(redis_client, keys, action))
    await wait_for(lambda: settled(redis_client, keys), 10, "the decision settled")
    await redis_client.delete(keys.decisions)  # an operator's mistake: the group goes too
    await append(redis_client, keys.decisions, failover(2, to="ap", epoch=2))
    await wait_for(lambda: settled(redis_client, keys), 10, "the new stream's decision settled")
    assert action.calls == [("d1", 2, 1), ("d2", 2, 1)]


async def test_redis_gone_between_action_and_report_does_not_run_the_action_again(
    own_redis_server: RedisServer, keys: Keys, running: Running
) -> None:
    redis = connect(own_redis_server.url, socket_timeout=0.5)
    try:
        paused = asyncio.Event()

        class PauseRedis(Recorder):
            async def __call__(self, decision: FailoverDecision, body: bytes, run: int) -> Outcome:
                outcome = await super().__call__(decision, body, run)
                own_redis_server.pause()  # the report cannot be written now
                paused.set()
                return outcome

        action = PauseRedis()
        await append(redis, keys.decisions, failover(1, epoch=2))
        running.start(follower(redis, keys, action))
        await asyncio.wait_for(paused.wait(), 10)
        await asyncio.sleep(1.5)  # the settle is failing and being retried meanwhile
        own_redis_server.resume()
        await wait_for(lambda: settled(redis, keys), 20, "the decision settled")
        assert action.calls == [("d1", 2, 1)]
        assert len(await reports(redis, keys)) == 1
    finally:
        own_redis_server.resume()
        await redis.aclose()


# -- the webhook and the receiver -------------------------------------------------------


def webhook(url: str, secret: str = SECRET, attempts: int = 3) -> WebhookAction:
    return WebhookAction(url, secret, attempts=attempts, timeout_s=1.0, backoff_s=0.02)


def test_signature_round_trip() -> None:
    body = b'{"type":"failover"}'
    assert verify("k", body, sign("k", body))
    assert not verify("k", body + b" ", sign("k", body))
    assert not verify("other", body, sign("k", body))
    assert not verify("k", body, None) and not verify("", body, sign("", body))


async def test_webhook_reaches_the_receiver_signed_and_a_repeat_is_not_applied_twice(
    receivers: list[ReceiverProcess], tmp_path: Path
) -> None:
    receiver = ReceiverProcess(state=tmp_path / "routing.json").start()
    receivers.append(receiver)
    decision = failover(1, to="ap", epoch=4)
    body = encode_data(decision)
    async with webhook(receiver.url) as action:
        first = await action(decision, body, 1)
        repeat = await action(decision, body, 2)  # a crashed executor sends it again
    assert first.ok and "applied" in first.detail and first.attempts == 1
    assert repeat.ok and "duplicate" in repeat.detail
    state = receiver.state()
    assert state["routing"] == "ap" and state["epoch"] == 4 and state["duplicates"] == 1
    assert receiver.applied_ids() == ["d1"]
    # The routing survives a restart of the receiver (its state file).
    receiver.kill()
    receiver = ReceiverProcess(state=tmp_path / "routing.json", port=receiver.port).start()
    receivers.append(receiver)
    assert receiver.state()["routing"] == "ap"


async def test_the_receiver_rejects_a_forged_signature_a_stale_epoch_and_garbage(
    receivers: list[ReceiverProcess],
) -> None:
    receiver = ReceiverProcess().start()
    receivers.append(receiver)
    async with webhook(receiver.url) as action:
        assert (await action(failover(1, epoch=5), encode_data(failover(1, epoch=5)), 1)).ok
        stale = await action(failover(2, epoch=4), encode_data(failover(2, epoch=4)), 1)
        forged = await webhook(receiver.url, secret="guessed").__aenter__()
        try:
            bad = await forged(failover(3, epoch=9), encode_data(failover(3, epoch=9)), 1)
        finally:
            await forged.__aexit__(None, None, None)
    assert not stale.ok and "409" in stale.detail and stale.attempts == 1
    assert not bad.ok and "401" in bad.detail and bad.attempts == 1
    body = encode_data(failover(4, to="ap", epoch=9))
    headers = {DECISION_ID_HEADER: "d4", EPOCH_HEADER: "9"}
    assert receiver.post(body, headers)[0] == 401  # no signature at all
    assert receiver.post(body, {**headers, HEADER: sign(SECRET, body + b" ")})[0] == 401
    assert (
        receiver.post(body, {**headers, HEADER: sign(SECRET, body), EPOCH_HEADER: "10"})[0] == 400
    )
    assert receiver.post(b"[]", {**headers, HEADER: sign(SECRET, b"[]")})[0] == 400
    state = receiver.state()
    assert state["routing"] == "us" and receiver.applied_ids() == ["d1"]
    assert state["bad_signatures"] == 3 and state["stale"] == 1 and state["invalid"] == 2


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (429, 3), (400, 1), (404, 1)])
async def test_webhook_retries_only_what_can_pass(
    receivers: list[ReceiverProcess], status: int, attempts: int
) -> None:
    receiver = ReceiverProcess(fail_status=status).start()
    receivers.append(receiver)
    async with webhook(receiver.url) as action:
        outcome = await action(failover(1), encode_data(failover(1)), 1)
    assert not outcome.ok and f"HTTP {status}" in outcome.detail
    assert outcome.attempts == attempts
    assert receiver.applied_ids() == []


async def test_webhook_retries_a_refused_connection() -> None:
    async with webhook(f"http://127.0.0.1:{free_port()}/") as action:
        refused = await action(failover(1), encode_data(failover(1)), 1)
    assert not refused.ok and refused.attempts == 3 and "gave up after 3 attempts" in refused.detail


async def test_webhook_times_out_a_receiver_that_holds_its_answer(
    receivers: list[ReceiverProcess],
) -> None:
    receiver = ReceiverProcess(delay_ms=3000).start()
    receivers.append(receiver)
    action = WebhookAction(receiver.url, SECRET, attempts=2, timeout_s=0.3, backoff_s=0.01)
    async with action:
        outcome = await action(failover(1), encode_data(failover(1)), 1)
    assert not outcome.ok and "no answer within 300ms" in outcome.detail
    assert outcome.attempts == 2
    # Applied on the first try (the answer was late, not the change), a repeat on the second.
    assert receiver.applied_ids() == ["d1"] and receiver.state()["duplicates"] == 1


# -- the command action -----------------------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "action.py"
    path.write_text(textwrap.dedent(body))
    return f"{sys.executable} {path} {tmp_path}"


async def test_command_gets_the_decision_on_stdin_and_in_its_environment_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAILOVER_REDIS_URL", "redis://user:hunter2@example:1/0")
    monkeypatch.setenv("FAILOVER_EXECUTOR_WEBHOOK_SECRET", "hunter2")
    command = script(
        tmp_path,
        """
        import json, os, sys
        out = {"stdin": json.load(sys.stdin), "env": {k: v for k, v in os.environ.items()
               if k.startswith("FAILOVER_")}}
        open(os.path.join(sys.argv[1], "seen.json"), "w").write(json.dumps(out))
        print("routed")
        """,
    )
    decision = failover(7, to="ap", frm="us", epoch=12)
    action = CommandAction(command, attempts=3, timeout_s=5, backoff_s=0.01)
    outcome = await action(decision, encode_data(decision), 2)
    assert outcome.ok and outcome.detail == "exit 0: routed"
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["stdin"]["decision_id"] == "d7" and seen["stdin"]["to_region"] == "ap"
    assert seen["env"] == {
        "FAILOVER_DECISION_ID": "d7",
        "FAILOVER_EPOCH": "12",
        "FAILOVER_FROM_REGION": "us",
        "FAILOVER_TO_REGION": "ap",
        "FAILOVER_RUN": "2",
    }


@pytest.mark.parametrize(("code", "attempts"), [(1, 3), (2, 1)])
async def test_command_exit_2_is_permanent_other_codes_are_retried(
    tmp_path: Path, code: int, attempts: int
) -> None:
    command = script(
        tmp_path,
        f"""
        import os, sys
        with open(os.path.join(sys.argv[1], "runs"), "a") as f:
            f.write("x")
        print("dns api said no", file=sys.stderr)
        sys.exit({code})
        """,
    )
    action = CommandAction(command, attempts=3, timeout_s=5, backoff_s=0.01)
    outcome = await action(failover(1), encode_data(failover(1)), 1)
    assert not outcome.ok and f"exit {code}: dns api said no" in outcome.detail
    assert outcome.attempts == attempts and (tmp_path / "runs").read_text() == "x" * attempts


async def test_command_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open(os.path.join(sys.argv[1], "child"), "w").write(str(child.pid))
        time.sleep(60)
        """,
    )
    action = CommandAction(command, attempts=1, timeout_s=1.0, backoff_s=0)
    outcome = await action(failover(1), encode_data(failover(1)), 1)
    assert not outcome.ok and "no answer within 1000ms" in outcome.detail
    child = int((tmp_path / "child").read_text())
    await wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 5, "child gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def test_a_missing_program_is_a_permanent_failure() -> None:
    action = CommandAction("/nonexistent/dns-update", attempts=3, timeout_s=1, backoff_s=0)
    outcome = await action(failover(1), encode_data(failover(1)), 1)
    assert not outcome.ok and outcome.attempts == 1 and "cannot run" in outcome.detail


# -- the process's settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        ({}, "FAILOVER_EXECUTOR_WEBHOOK_URL: is required"),
        ({"executor_webhook_url": "http://127.0.0.1:1/"}, "FAILOVER_EXECUTOR_WEBHOOK_SECRET: is"),
        (
            {
                "executor_webhook_url": "http://x/",
                "executor_webhook_secret": "k",
                "executor_command": "true",
            },
            "not both",
        ),
        ({"executor_webhook_url": "ftp://x/"}, "must be an http:// or https:// URL"),
        ({"executor_group": "a b", "executor_command": "true"}, "FAILOVER_EXECUTOR_GROUP: must"),
        ({"executor_attempts": "1000", "executor_command": "true"}, "<= 100"),
    ],
)
def test_bad_executor_settings_are_one_line_and_exit_2(
    redis_server: RedisServer, settings: dict[str, str], line: str
) -> None:
    env = clean_env(redis_url=redis_server.url, **settings)
    done = subprocess.run(
        [sys.executable, "-m", "workers.executor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert line in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_webhook_secret_is_never_printed(redis_server: RedisServer) -> None:
    env = clean_env(
        redis_url=redis_server.url,
        executor_webhook_url="http://user:pw-in-url@127.0.0.1:1/",
        executor_webhook_secret="hunter2-secret",
        executor_attempts="1000",  # invalid: the process prints its settings problem and exits
    )
    done = subprocess.run(
        [sys.executable, "-m", "workers.executor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    helped = subprocess.run(
        [sys.executable, "-m", "workers.executor", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "FAILOVER_EXECUTOR_WEBHOOK_SECRET" in helped.stdout
    for text in (done.stdout, done.stderr, helped.stdout, helped.stderr):
        assert "hunter2-secret" not in text and "pw-in-url" not in text


# -- the README's library example -------------------------------------------------------


def readme_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("### The library: write your own executor") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("\n```", start)]


async def test_the_readme_library_example_runs_as_written(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = readme_example()
    assert len(code.splitlines()) <= 25
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    keys = Keys("failover")  # the example's namespace, on this test's private server
    redis = connect(redis_server.url)
    try:
        await redis.delete(keys.decisions, keys.events, keys.executor("dns"))
        await append(redis, keys.decisions, failover(1, to="ap", epoch=7))
        stop = asyncio.Event()
        task = asyncio.create_task(scope["main"](redis_server.url, stop))  # type: ignore[operator]
        await wait_for(lambda: _settled_group(redis, keys, "dns"), 10, "the example to settle")
        stop.set()
        await asyncio.wait_for(task, 10)
        [report] = await reports(redis, keys)
        assert isinstance(report, FailoverCompleted) and report.detail == "routed"
        assert "route to ap: epoch 7, id d1" in capsys.readouterr().out
    finally:
        await redis.delete(keys.decisions, keys.events, keys.executor("dns"))
        await redis.aclose()


async def _settled_group(redis: aioredis.Redis, keys: Keys, group: str) -> bool:
    return any(
        g.group == group and g.lag == 0 and g.pending == 0 for g in await read_groups(redis, keys)
    )


def test_the_receiver_says_in_one_line_why_it_cannot_start(tmp_path: Path) -> None:
    bad_state = tmp_path / "state.json"
    bad_state.write_text("{not json")
    cases = [
        ([], {}, 2, "FAILOVER_EXECUTOR_WEBHOOK_SECRET: is required"),
        (["--state", str(bad_state)], {"executor_webhook_secret": "k"}, 2, "unreadable"),
        (["--host", "192.0.2.1"], {"executor_webhook_secret": "k"}, 1, "address"),
    ]
    for args, env, code, says in cases:
        done = subprocess.run(
            [sys.executable, "-m", "workers.executor.receiver", *args],
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == code, done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
