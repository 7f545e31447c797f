"""``failoverctl report --html`` from a real coordinator's history, rendered by headless Chromium.

Chromium comes with the Debian package ``chromium`` (.ci/run installs it); the test fails,
rather than skips, without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from PIL import Image

from schemas.codec import encode_entry
from schemas.events import HealthEvent, ManualFailover
from streams.keys import Keys
from streams.server import RedisServer
from tests.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
STATE_GREEN, STATE_RED = (0x2E, 0x9E, 0x44), (0xD6, 0x27, 0x28)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium not found: apt-get install chromium (see .ci/run)"
    return found


def _browser(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _wait(what: str, check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def history(redis_server: RedisServer, workers: list[WorkerProcess]) -> dict[str, str]:
    """A coordinator that decided one failover, refused one request, dead-lettered one entry."""
    namespace = "{report-" + uuid.uuid4().hex[:10] + "}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env |= {
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": "us-east,eu-west",
        "FAILOVER_THRESHOLD": "2",
        "FAILOVER_RECOVERY_THRESHOLD": "1",
        "FAILOVER_TICK_MS": "100",
        "FAILOVER_INSTANCE_ID": "coord-r",
    }
    keys = Keys(namespace)
    r = redis.Redis(port=redis_server.port)
    coordinator = WorkerProcess("workers.coordinator", env, name="coord-r").start()
    workers.append(coordinator)
    _wait("no leader", lambda: r.get(keys.leader) is not None)
    env["EXPECTED_EPOCH"] = r.get(keys.epoch).decode()  # clock-seeded: read, not guessed
    now = time.time()

    def health(n: int, region: str, status: str) -> None:
        event = HealthEvent(f"p1-{region}-{n}", region, "p1", status, now + n / 10)  # type: ignore[arg-type]
        r.xadd(keys.health, encode_entry(event))  # type: ignore[arg-type]

    health(1, "us-east", "healthy")
    health(2, "eu-west", "healthy")
    time.sleep(0.3)
    health(3, "us-east", "unhealthy")
    health(4, "us-east", "unhealthy")
    _wait("no failover decision", lambda: r.xlen(keys.decisions) >= 2)
    time.sleep(0.3)
    # us-east is no longer active: this request is refused.
    manual = ManualFailover(
        event_id="chg-1", region="us-east", actor="alice", at=time.time(), target="eu-west"
    )
    r.xadd(keys.events, encode_entry(manual))  # type: ignore[arg-type]
    r.xadd(keys.health, {b"data": b"not json"})
    _wait("no dead letter", lambda: r.xlen(keys.dlq) == 1)
    time.sleep(0.3)
    r.close()
    return env


def test_report_is_a_self_contained_page_chromium_draws(
    history: dict[str, str], tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "workers.ops.cli", "report", "--html", str(page)],
        env=history, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"report written to {page}\n"
    text = page.read_text()
    # Self-contained: nothing to fetch, nothing to run.
    for needle in ("<script", " src=", " href=", "url(", "@import", "<link"):
        assert needle not in text.lower(), needle
    assert text.count("http") == text.count('xmlns="http://www.w3.org/2000/svg"')

    dom = _browser("--dump-dom", page.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert '<svg id="timeline"' in html
    assert 'data-lane="active"' in html and 'data-lane="leader"' in html
    assert 'data-lane="region:us-east"' in html and 'data-lane="region:eu-west"' in html
    assert 'class="seg" data-value="down"' in html and 'class="seg" data-value="up"' in html
    assert html.count('class="decision"') == 1
    assert html.count('class="refusal"') == 1 and html.count('class="dead-letter"') == 1
    assert f"coord-r (epoch {history['EXPECTED_EPOCH']})" in html
    decisions = html.split('<table id="decisions">')[1].split("</table>")[0]
    assert "us-east" in decisions and "eu-west" in decisions and "d-" in decisions
    assert "alice" in html.split('<table id="refusals">')[1].split("</table>")[0]
    letters = html.split('<table id="dead-letters">')[1].split("</table>")[0]
    assert letters.count("<tr>") == 2 and ":health</td>" in letters  # header + one letter

    png = tmp_path / "report.png"
    shot = _browser(
        f"--screenshot={png}", "--window-size=1200,900", page.as_uri(), profile=tmp_path / "p2"
    )
    assert shot.returncode == 0 and png.exists(), shot.stderr
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 900)
    raw = image.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    white = sum(1 for p in pixels if p == (255, 255, 255))
    assert white < 0.9 * len(pixels), "the screenshot is (nearly) blank"
    colours = set(pixels)
    assert len(colours) > 50
    # The region lanes are drawn: some pixels in the up and down colours.
    assert sum(1 for p in pixels if p == STATE_GREEN) > 500
    assert sum(1 for p in pixels if p == STATE_RED) > 100
