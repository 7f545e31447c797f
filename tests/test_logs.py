"""What the processes' logs say about leadership and outages, read from real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from streams.keys import Keys
from streams.server import RedisServer
from tests.test_coordinator_processes import NAMESPACE, Fleet, _leader


def _wait_for(
    what: str, check: Callable[[], bool], timeout: float, tails: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{tails()}"
        time.sleep(0.05)


def _lines(log: Path, needle: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if needle in line]


def test_one_line_per_leader_change_and_followers_name_the_leader(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    fleet = Fleet(redis_server.url, tmp_path)
    fleet.env["FAILOVER_NAMESPACE"] = "{logs-" + tmp_path.name[-12:] + "}"
    keys = Keys(fleet.env["FAILOVER_NAMESPACE"])
    r = redis.Redis(port=redis_server.port)
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    try:
        fleet.start("a")
        assert _leader(r, keys) == "a"
        fleet.start("b")
        _wait_for(
            "b never named the leader",
            lambda: bool(_lines(b_log, "leader changed: a#")),
            15,
            fleet.tails,
        )
        fleet.procs["a"].send_signal(signal.SIGTERM)
        assert fleet.procs["a"].wait(timeout=10) == 0
        _wait_for(
            "b never said it leads",
            lambda: bool(_lines(b_log, "leader changed: this process leads owner=b#")),
            15,
            fleet.tails,
        )
    finally:
        codes = fleet.stop_all()
        r.close()
    assert codes == {"a": 0, "b": 0}, fleet.tails()
    [a_change] = _lines(a_log, "leader changed")
    assert "this process leads owner=a#" in a_change and "(after no leader)" in a_change
    [followed, led] = _lines(b_log, "leader changed")
    assert "a#" in followed and "following" in followed
    assert "(after a#" in led
    # The committed leader_changed decision is not a second INFO line.
    assert not _lines(a_log, "INFO workers.coordinator.pipeline leader_changed")


@pytest.mark.chaos
def test_a_paused_leader_says_it_was_paused_not_that_redis_failed(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    fleet = Fleet(own_redis_server.url, tmp_path)
    keys = Keys(NAMESPACE)
    r = redis.Redis(port=own_redis_server.port)
    a_log = tmp_path / "a.log"
    try:
        fleet.start("a")
        assert _leader(r, keys) == "a"
        fleet.start("b")
        _wait_for("b not following", lambda: bool(_lines(tmp_path / "b.log", "following")), 15,
                  fleet.tails)  # fmt: skip
        fleet.procs["a"].send_signal(signal.SIGSTOP)
        assert _leader(r, keys, timeout=15, skip=frozenset({"a"})) == "b"
        fleet.procs["a"].send_signal(signal.SIGCONT)
        _wait_for("a never stepped down", lambda: bool(_lines(a_log, "stepped down")), 15,
                  fleet.tails)  # fmt: skip
    finally:
        codes = fleet.stop_all()
        r.close()
    assert codes == {"a": 0, "b": 0}, fleet.tails()
    text = a_log.read_text(errors="replace")
    [paused] = _lines(a_log, "(event loop stalled)")
    seconds = float(paused.split("paused for ")[1].split("s ")[0])
    # b took over meanwhile: the pause outlasted the lease left after a's last renew.
    assert seconds > 0.8, paused
    [down] = _lines(a_log, "stepped down")
    assert "after this process was paused for" in down and "not a Redis failure" in down
    assert "redis wait gave up" not in text and "cannot reach" not in text.lower(), text


@pytest.mark.chaos
def test_a_redis_outage_is_one_line_per_10s_per_process(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {
        "FAILOVER_REDIS_URL": own_redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_LAG_INTERVAL_MS": "100",
    }
    log = tmp_path / "lagmon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.lagmon"], env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for("lagmon never sampled", lambda: bool(_lines(log, "lag status")), 20,
                  log.read_text)  # fmt: skip
        own_redis_server.pause()
        try:
            # About ten failed samples (each waits up to its 0.5 s deadline).
            time.sleep(6)
        finally:
            own_redis_server.resume()
        _wait_for("no recovery line", lambda: bool(_lines(log, "reachable again")), 20,
                  log.read_text)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    failed = _lines(log, "lag sample failed")
    assert len(failed) == 1, log.read_text()
    [back] = _lines(log, "reachable again")
    attempts = int(back.split("(")[1].split(" failed")[0])
    assert attempts >= 5, back  # many failures, one line


def test_json_lines_say_role_instance_owner_and_epoch(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    fleet = Fleet(redis_server.url, tmp_path)
    fleet.env["FAILOVER_NAMESPACE"] = "{json-" + tmp_path.name[-12:] + "}"
    fleet.env["FAILOVER_LOG_FORMAT"] = "json"
    keys = Keys(fleet.env["FAILOVER_NAMESPACE"])
    r = redis.Redis(port=redis_server.port)
    try:
        fleet.start("j")
        assert _leader(r, keys) == "j"
        _wait_for(
            "no fresh-state line",
            lambda: bool(_lines(tmp_path / "j.log", "starting fresh")),
            15,
            fleet.tails,
        )
    finally:
        codes = fleet.stop_all()
        r.close()
    assert codes == {"j": 0}, fleet.tails()
    records = [json.loads(line) for line in (tmp_path / "j.log").read_text().splitlines()]
    assert all(rec["role"] == "coordinator" and rec["instance"] == "j" for rec in records)
    fresh = next(rec for rec in records if "starting fresh" in rec["message"])
    # The term's epoch, as the line that announced the term gave it (epochs are clock-seeded).
    assert fresh["owner"].startswith("j#") and f"epoch={fresh['epoch']}" in fresh["message"], fresh
    assert fresh["level"] == "INFO" and fresh["ts"].endswith("Z")
    # Once it stopped leading, lines no longer claim an epoch.
    stopped = next(rec for rec in records if rec["message"] == "coordinator stopped")
    assert "epoch" not in stopped and stopped["owner"] == fresh["owner"]
