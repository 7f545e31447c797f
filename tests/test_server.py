"""streams.server.RedisServer: lifecycle, pause/resume, restart, and no orphans left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streams.server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis(
        port=server.port,
        socket_timeout=0.3,
        socket_connect_timeout=0.3,
        retry=Retry(NoBackoff(), 0),  # fail at once: the pause must show, not be retried
    )


@pytest.mark.chaos
def test_lifecycle_pause_restart_stop() -> None:
    server = RedisServer()
    assert server.port != 6379
    server.start()
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = _client(server)
        client.set("k", "v")
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        server.resume()
        client = _client(server)
        assert client.get("k") == b"v"
        server.restart()  # killed and started again: nothing was persisted
        client = _client(server)
        assert client.get("k") is None
        assert server.proc is not None
        pid = server.proc.pid
    finally:
        server.stop()
    assert not _alive(pid)
    assert not Path(server.dir).exists()
    with pytest.raises(redis.ConnectionError):
        _client(server).ping()


def _kill_owner_and_expect_orphan_gone(code: str) -> None:
    """Run ``code`` (it prints the pid of what it started, then a port or nothing),
    SIGKILL it, and require that pid to be gone within 5 s."""
    owner = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        pid, *port = (int(x) for x in owner.stdout.readline().split())
        assert _alive(pid)
        if port:
            assert redis.Redis(port=port[0], socket_timeout=1).ping()
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(pid):
            assert time.monotonic() < deadline, f"orphaned process {pid} still running"
            time.sleep(0.05)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)


@pytest.mark.chaos
def test_server_dies_with_the_process_that_started_it() -> None:
    """A test process killed outright (timeout, OOM, Ctrl-C twice) leaves no server behind."""
    _kill_owner_and_expect_orphan_gone(
        "import sys, time\n"
        "from streams.server import RedisServer\n"
        "s = RedisServer(); s.start()\n"
        "print(s.proc.pid, s.port, flush=True)\n"
        "time.sleep(60)\n"
    )


@pytest.mark.chaos
def test_children_started_with_die_with_parent_get_sigterm_when_it_is_killed() -> None:
    """The demo's coordinators stop (and release their lease) if the demo is SIGKILLed."""
    _kill_owner_and_expect_orphan_gone(
        "import subprocess, sys, time\n"
        "from streams.server import die_with_parent\n"
        "child = subprocess.Popen(\n"
        "    [sys.executable, '-c',\n"
        "     'import signal, sys, time\\n'\n"
        "     'signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\\n'\n"
        "     'print(\"ready\", flush=True)\\n'\n"
        "     'time.sleep(60)\\n'],\n"
        "    start_new_session=True, preexec_fn=die_with_parent, stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
