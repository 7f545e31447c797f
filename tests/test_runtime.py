"""The one process lifecycle (workers/runtime.py), through real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from streams.keys import Keys
from streams.server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+ ")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    # Never the default URL: the heartbeat would write to whatever listens on 6379.
    env["FAILOVER_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return env | extra


def _script(body: str, **env: str) -> subprocess.Popen[str]:
    """A process whose main is ``amain`` in ``body``, run by workers.runtime.run."""
    code = "import asyncio\nfrom workers.runtime import run\n" + textwrap.dedent(body)
    code += '\nrun("coordinator", amain, [])\n'
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=_env(FAILOVER_REGIONS="a,b", **env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if needle in line:
            return
        assert line or proc.poll() is None, "process ended before logging " + needle
    raise AssertionError(f"no log line with {needle!r}")


def test_help_exits_0_and_lists_the_variables() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.coordinator", "--help"],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "FAILOVER_REDIS_URL" in done.stdout and "FAILOVER_LEASE_TTL_MS" in done.stdout


def test_bad_settings_exit_2_with_one_line_per_bad_value() -> None:
    env = _env(
        FAILOVER_REGIONS="",
        FAILOVER_LEASE_TTL_MS="soon",
        FAILOVER_LOG_FORMAT="xml",
        FAILOVER_REDIS_URL="http://u:hunter2@host/0",
    )
    # The coordinator reads all four (the lag monitor reads neither REGIONS nor the lease).
    done = subprocess.run(
        [sys.executable, "-m", "workers.coordinator"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 4, done.stderr
    assert all(line.startswith("coordinator: FAILOVER_") for line in lines), lines
    for name in ("REGIONS", "LEASE_TTL_MS", "LOG_FORMAT", "REDIS_URL"):
        assert sum(f"FAILOVER_{name}:" in line for line in lines) == 1, name
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_unreachable_redis_is_one_line_and_exit_1() -> None:
    proc = _script(
        """
        from streams.connection import connect
        from streams.retry import call

        async def amain(settings, stop):
            redis = connect(settings.redis_url)
            await call(redis.ping, what="ping", deadline_s=0.5)
        """,
        FAILOVER_REDIS_URL=f"redis://admin:s3cret@127.0.0.1:{free_port()}/0",
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if not TEXT_LINE.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("coordinator: cannot reach Redis at redis://admin:***@127.0.0.1")
    assert "s3cret" not in err and "Traceback" not in err


def test_a_bug_is_logged_with_its_traceback_and_exits_70() -> None:
    proc = _script(
        """
        async def amain(settings, stop):
            raise KeyError("surprise")
        """
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 70, err
    assert "Traceback" in err and "KeyError: 'surprise'" in err


def test_json_logs_are_one_object_per_line(redis_server: RedisServer, keys: Keys) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.lagmon"],
        env=_env(
            FAILOVER_REDIS_URL=redis_server.url,
            FAILOVER_NAMESPACE=keys.namespace,
            FAILOVER_REGIONS="a,b",
            FAILOVER_LAG_INTERVAL_MS="50",
            FAILOVER_LOG_FORMAT="json",
            FAILOVER_LOG_LEVEL="debug",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(proc, "lag status")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert records and records[-1]["message"] == "lagmon stopped"
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])


def test_text_logs_carry_utc_time_level_and_logger() -> None:
    proc = _script(
        """
        import logging

        async def amain(settings, stop):
            logging.getLogger("x.y").warning("hello %s", "there")
        """
    )
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    line = next(line for line in err.splitlines() if "hello" in line)
    assert TEXT_LINE.match(line) and line.endswith(" WARNING x.y hello there"), line


HANGS = """
    import logging

    async def amain(settings, stop):
        logging.getLogger("t").warning("ready")
        while True:
            try:
                await asyncio.sleep(10)  # ignores stop, and swallows cancellation too
            except asyncio.CancelledError:
                pass
    """


def test_sigterm_exits_0_within_the_shutdown_timeout_even_if_the_work_hangs() -> None:
    proc = _script(HANGS, FAILOVER_SHUTDOWN_TIMEOUT_MS="1000")
    try:
        _wait_for_line(proc, "ready")
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 2.5  # 1 s timeout, plus slack for a loaded host
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_lets_well_behaved_work_finish_and_exit_0() -> None:
    proc = _script(
        """
        import logging

        async def amain(settings, stop):
            logging.getLogger("t").warning("ready")
            await stop.wait()
            logging.getLogger("t").warning("wound down")
        """
    )
    try:
        _wait_for_line(proc, "ready")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "wound down" in err and "Traceback" not in err


def test_a_second_signal_exits_at_once() -> None:
    proc = _script(HANGS, FAILOVER_SHUTDOWN_TIMEOUT_MS="60000")
    try:
        _wait_for_line(proc, "ready")
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc, "received SIGINT")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 128 + signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("argv", [["--bogus"], ["extra"]])
def test_unexpected_arguments_exit_2(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.coordinator", *argv],
        env=_env(FAILOVER_REGIONS="a"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--help" in done.stderr
