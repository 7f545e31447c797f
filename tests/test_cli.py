"""failoverctl against a real Redis: every command, its JSON, its errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import msgspec
import pytest
import redis as sync_redis

from schemas.codec import decode_entry, encode_data, encode_entry, raw_from_fields
from schemas.events import (
    DeadLetter,
    FailoverDecision,
    HealthEvent,
    LeaderChanged,
    ManualFailover,
)
from schemas.state import ProbeResult, RegionSnapshot
from streams import scripts
from streams.connection import connect
from streams.keys import GROUP, Keys
from streams.server import RedisServer, free_port
from tests.waiting import wait_for_sync
from workers.ops.cli import build_parser, main
from workers.ops.replay import merge
from workers.ops.status import gather_status
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig
from workers.settings import load_settings

REGIONS = "us-east,eu-west,ap-south"


@pytest.fixture
def env(
    redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """FAILOVER_* for this test's namespace on the session server."""
    for key in list(os.environ):
        if key.startswith("FAILOVER_"):
            monkeypatch.delenv(key)
    values = {
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": REGIONS,
        "FAILOVER_THRESHOLD": "2",
        "FAILOVER_QUORUM": "2",
        "FAILOVER_RECOVERY_THRESHOLD": "2",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        client.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _health(region: str, source: str, status: str, at: float, n: int) -> dict[bytes, bytes]:
    event = HealthEvent(f"{source}-{n}", region, source, status, at)  # type: ignore[arg-type]
    return encode_entry(event)


# -- status -------------------------------------------------------------------------------


def test_status_of_an_empty_namespace(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "status")
    assert code == 0 and err == ""
    assert "leader    NONE" in out and "no committed state yet" in out
    assert "STOP (no leader holds the lease" in out
    code, out, _ = cli(capsys, "status", "--json")
    data = json.loads(out)
    assert data["leader"] == {"owner": None, "epoch": 0, "lease_ms_left": None}
    assert data["policy"] is None and data["dead_letters"] == 0
    assert [s["length"] for s in data["streams"]] == [0, 0]
    assert data["lag_status"]["status"] == "STOP"


def test_status_shows_regions_leader_lag_and_snapshots(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings()
    policy = Policy(PolicyConfig.from_settings(settings))
    now = time.time()
    for n in range(3):
        for src in ("p1", "p2"):
            for region in ("us-east", "eu-west"):
                status = "unhealthy" if region == "us-east" else "healthy"
                event = HealthEvent(f"{src}-{region}-{n}", region, src, status, now + n)  # type: ignore[arg-type]
                policy.apply(event)
    policy.tick(now + 3)
    r.set(keys.leader, "node-a#1", px=5000)
    r.set(keys.epoch, 7)
    r.hset(
        keys.state,
        mapping={
            "summary": msgspec.json.encode(policy.summary()),
            "epoch": 7,
            "leader": "node-a#1",
            "updated_at": now,
        },
    )
    snap = RegionSnapshot(
        "eu-west",
        "healthy",
        "probe-x",
        now,
        [ProbeResult("eu-west", "tcp://x:1", "healthy", 1.0, "connected", now)],
    )
    r.set(keys.region_health("eu-west"), msgspec.json.encode(snap))
    r.xgroup_create(keys.health, GROUP, id="0", mkstream=True)
    for n in range(5):
        r.xadd(keys.health, _health("us-east", "p1", "healthy", now, n))
    r.xreadgroup(GROUP, "node-a#1", {keys.health: ">"}, count=2)
    r.xadd(keys.dlq, {"data": "x"})

    code, out, _ = cli(capsys, "status")
    assert code == 0
    assert "leader    node-a#1  epoch 7" in out
    # us-east failed on both observers: the policy moved to eu-west.
    assert policy.summary().active_region == "eu-west"
    assert "active    eu-west  (state committed" in out
    assert "decision  d-" in out and "us-east -> eu-west (quorum_unhealthy" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["us-east"][1:3] == ["down", "-"]
    assert "p1=unhealthy" in lines["us-east"] and "p2=unhealthy" in lines["us-east"]
    assert lines["eu-west*"][1] == "up" and "p1=healthy" in lines["eu-west*"]
    assert lines["ap-south"][1] == "unknown"
    assert "healthy (probe-x" in out
    assert "dead letters 1" in out

    data = json.loads(cli(capsys, "status", "--json")[1])
    assert data["leader"]["owner"] == "node-a#1" and data["leader"]["epoch"] == 7
    assert 4000 < data["leader"]["lease_ms_left"] <= 5000
    assert data["state"]["epoch"] == 7
    regions = data["policy"]["regions"]
    assert regions["eu-west"]["state"] == "up"
    assert regions["us-east"]["observers"] == {"p1": "unhealthy", "p2": "unhealthy"}
    assert data["active_region"] == policy.summary().active_region
    health = data["streams"][0]
    assert (health["length"], health["lag"], health["pending"]) == (5, 3, 2)
    assert health["lag_status"]["status"] == "OK"
    assert data["snapshots"]["eu-west"]["source"] == "probe-x"


async def test_status_latency_under_load(own_redis_server: RedisServer) -> None:
    """p99 of the status read < 100 ms with 2 x 50k entries and a writer hammering Redis."""
    keys = Keys("{load}")
    client = connect(own_redis_server.url)
    try:
        for stream in keys.input_streams:
            for _ in range(20):
                async with client.pipeline(transaction=False) as pipe:
                    for i in range(2500):
                        pipe.xadd(stream, {"data": f'{{"n":{i}}}'})
                    await pipe.execute()
            await client.xgroup_create(stream, GROUP, id="0")
            await client.xreadgroup(GROUP, "c1", {stream: ">"}, count=2000)
        await client.set(keys.leader, "node#1", px=60_000)
        stop = threading.Event()

        def hammer() -> None:
            w = sync_redis.Redis.from_url(own_redis_server.url)
            while not stop.is_set():
                with w.pipeline(transaction=False) as pipe:
                    for _ in range(50):
                        pipe.xadd(keys.health, {"data": "{}"})
                    pipe.execute()
            w.close()

        writer = threading.Thread(target=hammer)
        writer.start()
        settings = load_settings(
            {
                "FAILOVER_REGIONS": REGIONS,
                "FAILOVER_REDIS_URL": own_redis_server.url,
                "FAILOVER_NAMESPACE": keys.namespace,
            }
        )
        try:
            times = []
            for _ in range(60):
                start = time.perf_counter()
                report = await gather_status(client, settings)
                times.append((time.perf_counter() - start) * 1000)
        finally:
            stop.set()
            await asyncio.to_thread(writer.join)
    finally:
        await client.aclose()
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    print(f"status read under load: p50 {p50:.2f}ms p99 {p99:.2f}ms (n={len(times)})")
    assert report.lag.streams[0].length > 50_000
    assert p99 < 100


# -- emit ---------------------------------------------------------------------------------


def test_emit_health_and_events(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys, "emit", "health", "--region", "us-east", "--status", "degraded",
        "--source", "probe-9", "--latency-ms", "12.5", "--detail", "slow",
    )  # fmt: skip
    assert code == 0
    entry_id, stream, data = out.strip().split(" ", 2)
    assert stream == keys.health
    [(got_id, fields)] = r.xrange(keys.health)
    assert got_id.decode() == entry_id and fields[b"data"].decode() == data
    event = decode_entry(fields, stream="health")
    assert isinstance(event, HealthEvent)
    assert (event.source, event.status, event.latency_ms) == ("probe-9", "degraded", 12.5)
    assert len(event.event_id) == 32 and abs(event.observed_at - time.time()) < 5

    code, out, _ = cli(
        capsys, "emit", "event", "manual_failover", "--region", "us-east", "--target", "eu-west",
        "--actor", "alice", "--event-id", "req-1", "--json",
    )  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    assert shown["stream"] == keys.events and shown["entry"]["type"] == "manual_failover"
    [(_, fields)] = r.xrange(keys.events)
    manual = decode_entry(fields, stream="events")
    assert isinstance(manual, ManualFailover)
    assert (manual.event_id, manual.actor, manual.target) == ("req-1", "alice", "eu-west")
    for kind in ("drain", "restore", "failover_completed", "failover_failed"):
        assert cli(capsys, "emit", "event", kind, "--region", "ap-south")[0] == 0
    assert r.xlen(keys.events) == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["emit", "health", "--region", "mars", "--status", "healthy", "--source", "p"],
         "not one of"),
        (["emit", "event", "manual_failover", "--region", "us-east"], "target"),
        (["emit", "event", "drain", "--region", "us-east", "--target", "eu-west"], "only"),
        (["emit", "health", "--region", "us-east", "--status", "healthy",
          "--source", "p", "--observed-at", "-1"], "observed_at"),
        (["emit", "health", "--region", "us-east", "--status", "healthy",
          "--source", ""], "source"),
    ],
)  # fmt: skip
def test_emit_refuses_invalid_events(
    env: dict[str, str],
    r: sync_redis.Redis,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.startswith("failoverctl: ") and len(err.splitlines()) == 1
    assert r.xlen(keys.health) == 0 and r.xlen(keys.events) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--bogus"],
        ["emit", "health", "--region", "us-east", "--status", "sick", "--source", "p"],
        # No ghost observers: an operator must say which observer it speaks for.
        ["emit", "health", "--region", "us-east", "--status", "healthy"],
        ["emit", "event", "explode", "--region", "us-east"],
        ["decisions", "--last", "0"],
        ["replay", "--from", "-", "--quorum", "0"],
        ["dlq"],
        ["demo", "--seconds", "0"],
        ["nothing"],
        [],
    ],
)
def test_bad_arguments_exit_2(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: failoverctl" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("failoverctl ") and out.split()[1][0].isdigit()


def test_global_options_work_before_and_after_the_command(
    env: dict[str, str], keys: Keys, r: sync_redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    r.xadd(keys.decisions, {"data": b'{"type":"leader_changed","epoch":1,"leader":"x#1","at":1}'})
    other = "{nobody-" + keys.namespace.strip("{}") + "}"
    before = cli(capsys, "--namespace", other, "decisions")
    after = cli(capsys, "decisions", "--namespace", other, "-v", "--timeout", "1")
    assert before[:2] == after[:2] == (0, "no decisions\n")
    # After the command wins over before it; absent after keeps what came before.
    code, out, _ = cli(capsys, "--namespace", other, "decisions", "--namespace", keys.namespace)
    assert code == 0 and "leader_changed" in out
    code, out, _ = cli(capsys, "--namespace", keys.namespace, "decisions", "--json")
    assert code == 0 and "leader_changed" in out


def _actions(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _actions(child, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_option_has_help() -> None:
    actions = _actions(build_parser(), "failoverctl")
    assert len(actions) > 50
    missing = [(path, a.dest) for path, a in actions if not a.help]
    assert missing == []


def test_too_short_demo_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "demo", "--seconds", "5")
    assert code == 2 and "at least 10" in err


def test_bad_settings_print_each_line_and_exit_2(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAILOVER_THRESHOLD", "zero")
    monkeypatch.setenv("FAILOVER_REDIS_URL", "http://u:hunter2@host/0")
    code, out, err = cli(capsys, "status")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("failoverctl: FAILOVER_") for line in lines)
    assert "hunter2" not in err
    code, _, err = cli(capsys, "--redis-url", "redis://h:notaport/0", "status")
    assert code == 2 and "FAILOVER_THRESHOLD" in err


# -- decisions ----------------------------------------------------------------------------


def _decisions(r: sync_redis.Redis, keys: Keys) -> list[str]:
    now = time.time()
    ids = [r.xadd(keys.decisions, encode_entry(LeaderChanged(epoch=1, leader="a#1", at=now)))]
    fail = FailoverDecision(
        decision_id="d-1", epoch=1, leader="a#1", from_region="us-east", to_region="eu-west",
        reason="quorum_unhealthy", evidence=["e1", "e2"], decided_at=now,
    )  # fmt: skip
    ids.append(r.xadd(keys.decisions, encode_entry(fail)))
    ids.append(r.xadd(keys.decisions, {"data": b"not json"}))
    return [i.decode() for i in ids]


def test_decisions_text_json_since_last(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "decisions")
    assert (code, out.strip()) == (0, "no decisions")
    ids = _decisions(r, keys)
    code, out, _ = cli(capsys, "decisions")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "leader_changed  epoch=1 leader=a#1" in lines[0]
    assert "failover  us-east -> eu-west" in lines[1] and "decision=d-1" in lines[1]
    assert "undecodable" in lines[2]
    rows = [json.loads(line) for line in cli(capsys, "decisions", "--json")[1].splitlines()]
    assert [row["id"] for row in rows] == ids
    assert rows[1]["type"] == "failover" and rows[1]["evidence"] == ["e1", "e2"]
    assert "error" in rows[2]
    since = cli(capsys, "decisions", "--since", ids[0], "--json")[1].splitlines()
    assert [json.loads(x)["id"] for x in since] == ids[1:]
    last = cli(capsys, "decisions", "--last", "1", "--json")[1].splitlines()
    assert [json.loads(x)["id"] for x in last] == ids[2:]
    assert cli(capsys, "decisions", "--since", "yesterday")[0] == 2


def _blocked_in_xread(r: sync_redis.Redis) -> bool:
    return any(c.get("cmd") == "xread" for c in r.client_list())


def test_decisions_follow_prints_new_entries_and_ends_on_ctrl_c(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.ops.cli", "decisions", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Started and tailing: blocked in its XREAD, so what is written next is new to it.
        wait_for_sync(lambda: _blocked_in_xread(r), 10, "decisions --follow to block in XREAD")
        ids = _decisions(r, keys)
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert [json.loads(line)["id"] for line in lines] == ids
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=5)
        stopped_in = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Prompt: within one short blocking read (plus a loaded host's scheduling), not the
    # shutdown timeout.
    assert code == 0 and stopped_in < 3.0
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


# -- dead letters -------------------------------------------------------------------------


def _dead(r: sync_redis.Redis, keys: Keys, stream: str, fields: list[tuple[bytes, bytes]]) -> str:
    raw, encoding = raw_from_fields(fields)
    letter = DeadLetter(stream=stream, entry_id="1-1", reason="invalid event: x", deliveries=1,
                        raw=raw, raw_encoding=encoding)  # fmt: skip
    return r.xadd(keys.dlq, {"data": encode_data(letter)}).decode()


def _raw_range(r: sync_redis.Redis, key: str) -> list[list[object]]:
    # Through EVAL, so redis-py does not fold the fields into a dict (losing duplicates).
    return r.eval("return redis.call('XRANGE', KEYS[1], '-', '+')", 1, key)  # type: ignore[no-any-return]


def test_dlq_list_replay_drop(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(capsys, "dlq", "list")[1].strip() == "no dead letters"
    text_fields = [(b"data", b'{"type":"health"}'), (b"extra", b"1"), (b"data", b"dup")]
    binary_fields = [(b"data", b"\xff\xfe not utf-8")]
    a = _dead(r, keys, keys.health, text_fields)
    b = _dead(r, keys, keys.events, binary_fields)
    c = _dead(r, keys, "elsewhere:stream", [(b"data", b"x")])
    junk = r.xadd(keys.dlq, {"data": b"garbage"}).decode()

    code, out, _ = cli(capsys, "dlq", "list")
    assert code == 0 and len(out.splitlines()) == 4 and "not a dead letter" in out
    rows = json.loads(cli(capsys, "dlq", "list", "--json")[1])
    assert [row["id"] for row in rows] == [a, b, c, junk]
    assert rows[1]["raw_encoding"] == "base64" and rows[0]["reason"] == "invalid event: x"

    code, out, _ = cli(capsys, "dlq", "replay", a, b, "--json")
    assert code == 0
    results = json.loads(out)
    assert [x["result"] for x in results] == ["replayed", "replayed"]
    [(health_id, health_fields)] = r.xrange(keys.health)
    assert health_id.decode() == results[0]["new_id"]
    # Field order and the duplicate are kept exactly (XRANGE as pairs would merge them).
    raw = _raw_range(r, keys.health)
    assert raw[0][1] == [x for pair in text_fields for x in pair]
    assert _raw_range(r, keys.events)[0][1] == [
        b"data",
        b"\xff\xfe not utf-8",
    ]
    assert health_fields  # decoded view exists
    assert r.xlen(keys.dlq) == 2

    code, out, _ = cli(capsys, "dlq", "replay", a)  # already replayed
    assert code == 1 and "not replayed: missing" in out
    code, out, _ = cli(capsys, "dlq", "replay", "--all")
    assert code == 1 and "is not an input" in out and "not a dead letter" in out
    assert r.xlen(keys.dlq) == 2 and r.xlen(keys.health) == 1

    code, out, _ = cli(capsys, "dlq", "drop", c, junk, "--json")
    assert code == 0 and [x["dropped"] for x in json.loads(out)] == [True, True]
    code, out, _ = cli(capsys, "dlq", "drop", c)
    assert code == 1 and "not found" in out
    assert cli(capsys, "dlq", "drop", "nope")[0] == 2
    assert cli(capsys, "dlq", "replay")[0] == 2
    assert cli(capsys, "dlq", "replay", "--all", c)[0] == 2
    assert r.xlen(keys.dlq) == 0


def test_only_the_commands_that_use_regions_demand_them(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FAILOVER_REGIONS")
    assert cli(capsys, "dlq", "list") == (0, "no dead letters\n", "")
    assert cli(capsys, "decisions")[:2] == (0, "no decisions\n")
    for argv in (
        ["status"],
        ["emit", "health", "--region", "x", "--status", "healthy", "--source", "p"],
    ):
        code, out, err = cli(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("failoverctl: FAILOVER_REGIONS: is required") and err.count("\n") == 1


def test_dlq_replay_script_is_a_no_op_when_the_letter_changed(
    r: sync_redis.Redis, keys: Keys
) -> None:
    a = _dead(r, keys, keys.health, [(b"data", b"{}")])
    script = r.register_script(scripts.source("dlq_replay"))
    reply = script(keys=[keys.dlq, keys.health], args=[a, b"other data", b"data", b"{}"])
    assert reply == [0, b"changed"]
    assert r.xlen(keys.health) == 0 and r.xlen(keys.dlq) == 1
    reply = script(keys=[keys.dlq, keys.health], args=["1-1", b"x", b"data", b"{}"])
    assert reply == [0, b"missing"]


# -- replay -------------------------------------------------------------------------------


def test_replay_runs_the_policy_and_writes_nothing(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    first = None
    for n in range(4):
        for src in ("p1", "p2"):
            for region in ("us-east", "eu-west", "ap-south"):
                status = "unhealthy" if region == "us-east" and n >= 1 else "healthy"
                entry_id = r.xadd(keys.health, _health(region, src, status, now + n / 10, n))
                first = first or entry_id.decode()
    r.xadd(keys.health, {"data": b"broken"})
    before = {k: r.xlen(k) for k in (keys.health, keys.events, keys.decisions, keys.dlq)}

    code, out, _ = cli(capsys, "replay", "--from", "-")
    assert code == 0, out
    assert "us-east -> eu-west  quorum_unhealthy" in out
    assert "final: active eu-west" in out and "undecodable (would be dead letters): 1" in out
    data = json.loads(cli(capsys, "replay", "--from", first, "--json")[1])
    assert [d["decision"]["to_region"] for d in data["decisions"]] == ["eu-west"]
    assert data["applied"] == {"health": 24, "events": 0}
    # What-if: with a higher threshold the same history decides nothing.
    code, out, _ = cli(capsys, "replay", "--from", "-", "--threshold", "5")
    assert code == 0 and "it would make no decision" in out and "final: active us-east" in out
    # Only history after the outage started: too few failing observations per observer.
    assert cli(capsys, "replay", "--from", "-", "--to", first, "--json")[0] == 0
    assert before == {k: r.xlen(k) for k in before}
    assert r.exists(keys.state) == 0
    assert cli(capsys, "replay", "--from", "last week")[0] == 2


def test_replay_of_empty_history(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "replay", "--from", "-")
    assert code == 0 and "replayed 0 health and 0 failover events" in out


# -- check --------------------------------------------------------------------------------


def test_check_probes_once_and_fails_on_unhealthy(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    up = listener.getsockname()[1]
    try:
        monkeypatch.setenv(
            "FAILOVER_PROBE_TARGETS", f"us-east=tcp://127.0.0.1:{up},eu-west=tcp://127.0.0.1:{up}"
        )
        code, out, _ = cli(capsys, "check")
        assert code == 0 and out.count("healthy") == 2 and "all endpoints pass" in out
        down = free_port()
        monkeypatch.setenv(
            "FAILOVER_PROBE_TARGETS", f"us-east=tcp://127.0.0.1:{up},eu-west=tcp://127.0.0.1:{down}"
        )
        code, out, _ = cli(capsys, "check", "--json")
        data = json.loads(out)
        assert code == 1 and data["ok"] is False
        assert [x["status"] for x in data["results"]] == ["healthy", "unhealthy"]
    finally:
        listener.close()
    monkeypatch.delenv("FAILOVER_PROBE_TARGETS")
    code, _, err = cli(capsys, "check")
    assert code == 2 and "FAILOVER_PROBE_TARGETS" in err


# -- Redis down ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["decisions"],
        ["dlq", "list"],
        ["emit", "health", "--region", "us-east", "--status", "healthy", "--source", "p"],
        ["replay", "--from", "-"],
    ],
)
def test_unreachable_redis_is_one_line_and_exit_1(argv: list[str], namespace: str) -> None:
    url = f"redis://admin:s3cret@127.0.0.1:{free_port()}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {"FAILOVER_REGIONS": REGIONS, "FAILOVER_REDIS_URL": url, "FAILOVER_NAMESPACE": namespace}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "--timeout", "0.5", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "cannot reach Redis at redis://admin:***@127.0.0.1" in done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - start < 10


# -- against a live coordinator -----------------------------------------------------------


def test_live_coordinator_status_decisions_and_replay_agree(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real coordinator decides; status shows it; replay of the history gives the same id."""
    child_env = {**os.environ, "FAILOVER_LEASE_TTL_MS": "2000", "FAILOVER_TICK_MS": "100",
                 "FAILOVER_INSTANCE_ID": "coord-cli"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.coordinator"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while r.get(keys.leader) is None:
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.05)
        for n in range(4):
            for src in ("p1", "p2"):
                for region in ("us-east", "eu-west", "ap-south"):
                    status = "unhealthy" if region == "us-east" and n >= 2 else "healthy"
                    argv = ["emit", "health", "--region", region, "--status", status,
                            "--source", src, "--event-id", f"{src}-{region}-{n}"]  # fmt: skip
                    assert cli(capsys, *argv)[0] == 0
        recorded = []
        while not recorded:
            assert time.monotonic() < deadline + 10, "no decision"
            rows = cli(capsys, "decisions", "--json")[1].splitlines()
            recorded = [json.loads(x) for x in rows if json.loads(x).get("type") == "failover"]
            time.sleep(0.05)
        assert (recorded[0]["from_region"], recorded[0]["to_region"]) == ("us-east", "eu-west")

        lag = [1]
        while any(lag):
            data = json.loads(cli(capsys, "status", "--json")[1])
            lag = [s["lag"] + s["pending"] for s in data["streams"]]
            assert time.monotonic() < deadline + 20, data
        assert data["leader"]["owner"].startswith("coord-cli#")
        assert data["active_region"] == "eu-west"
        assert data["policy"]["regions"]["us-east"]["state"] == "down"
        assert data["policy"]["last_decision"]["decision_id"] == recorded[0]["decision_id"]
        assert data["lag_status"]["status"] == "OK"

        replayed = json.loads(cli(capsys, "replay", "--from", "-", "--json")[1])
        ids = [d["decision"]["decision_id"] for d in replayed["decisions"]]
        assert ids == [recorded[0]["decision_id"]]
        assert [d["decision_id"] for d in replayed["recorded"]] == ids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_replay_merges_like_the_leader_applies() -> None:
    """Entry id order across the two streams; health before events on an equal id."""
    health = [(b"5-0", {}), (b"7-1", {}), (b"9-0", {})]
    events = [(b"6-0", {}), (b"7-1", {}), (b"7-2", {}), (b"10-0", {})]
    merged = [(i, e.decode()) for i, e, _ in merge([health, events])]
    assert merged == [(0, "5-0"), (1, "6-0"), (0, "7-1"), (1, "7-1"), (1, "7-2"),
                      (0, "9-0"), (1, "10-0")]  # fmt: skip


def test_replay_interleaves_failover_events_in_stream_order(
    env: dict[str, str], r: sync_redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drain recorded between the health rounds steers the decision away from eu-west."""
    now = time.time()
    for n in range(4):
        if n == 1:
            assert cli(capsys, "emit", "event", "drain", "--region", "eu-west")[0] == 0
        for src in ("p1", "p2"):
            for region in ("us-east", "eu-west", "ap-south"):
                status = "unhealthy" if region == "us-east" and n >= 2 else "healthy"
                r.xadd(keys.health, _health(region, src, status, now + n / 10, n))
    data = json.loads(cli(capsys, "replay", "--from", "-", "--json")[1])
    assert data["applied"] == {"health": 24, "events": 1}
    assert [d["decision"]["to_region"] for d in data["decisions"]] == ["ap-south"]
    assert data["summary"]["regions"]["eu-west"]["drained"] is True
