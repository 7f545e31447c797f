"""The Grafana dashboard's queries against a real Prometheus scraping a live fleet.

Two coordinators, the lag monitor and a prober run as real processes; a real Prometheus
(Debian package ``prometheus``, .ci/run installs it) scrapes them every second. After a
manual failover and a leader handover, every panel query and every annotation query of
deploy/grafana/failover.json must return data over the test's time range.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.server import RedisServer, free_port
from tests.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "failover.json"


class Prometheus:
    """A private Prometheus server scraping ``targets`` every second."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: apt-get install prometheus (see .ci/run)"
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: failover\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path> and return its ``data``."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        """True once the server answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None when it has no result."""
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(where, expr, instant) for every panel target and annotation."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((panel["title"], target["expr"], bool(target.get("instant"))))
    for note in dashboard["annotations"]["list"]:
        found.append((f"annotation {note['name']}", note["expr"], False))
    return found


def _wait(what: str, check: Any, timeout: float, tails: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{tails()}"
        time.sleep(0.25)


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for Prometheus's config and data."""
    yield tmp_path


def test_every_dashboard_query_returns_data_from_a_live_fleet(
    redis_server: RedisServer, workers: list[WorkerProcess], prometheus_dir: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 20
    namespace = "{dash-" + uuid.uuid4().hex[:10] + "}"
    ports = {name: free_port() for name in ("coord-a", "coord-b", "lagmon", "prober")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    base |= {
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": "us-east,eu-west",
        "FAILOVER_METRICS_ADDR": "127.0.0.1",
        "FAILOVER_LAG_INTERVAL_MS": "250",
        "FAILOVER_PROBE_INTERVAL_MS": "250",
        "FAILOVER_PROBE_TARGETS": (
            f"us-east=http://127.0.0.1:{ports['lagmon']}/metrics,"
            f"eu-west=tcp://127.0.0.1:{ports['lagmon']}"
        ),
        "FAILOVER_TICK_MS": "200",
        "FAILOVER_LEASE_TTL_MS": "2000",
    }
    modules = {
        "coord-a": "workers.coordinator",
        "coord-b": "workers.coordinator",
        "lagmon": "workers.lagmon",
        "prober": "workers.health",
    }
    procs = {}
    for name, module in modules.items():
        env = base | {"FAILOVER_INSTANCE_ID": name, "FAILOVER_METRICS_PORT": str(ports[name])}
        procs[name] = WorkerProcess(module, env, name=name).start()
        workers.append(procs[name])
    prom = Prometheus(prometheus_dir, [f"127.0.0.1:{p}" for p in ports.values()])

    def tails() -> str:
        parts = [f"--- {n}\n{p.output()[-2000:]}" for n, p in procs.items()]
        return (
            "\n".join(parts)
            + "\n--- prometheus\n"
            + (prometheus_dir / "prometheus.log").read_text()
        )

    try:
        started = time.time()
        _wait("prometheus not ready", prom.ready, 30, tails)
        _wait(
            "regions never up in Prometheus",
            lambda: prom.value('sum(failover_region_state{state="up"})') == 2,
            60,
            tails,
        )
        # increase() needs a sample at 0 before the first decision: wait until Prometheus
        # has scraped both coordinators' pre-created counters (a loaded host can make the
        # first scrapes of a process fail, and a counter first seen at 1 increases by 0).
        _wait(
            "the decision counters were never scraped at 0",
            lambda: prom.value('count(failover_decisions_total{type="failover"} == 0)') == 2,
            60,
            tails,
        )
        # A decision (the manual failover) and a leader change, so the annotations have data.
        cli = subprocess.run(
            [sys.executable, "-m", "workers.ops.cli", "emit", "event", "manual_failover",
             "--region", "us-east", "--target", "eu-west", "--actor", "dashboard-test"],
            env=base, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        _wait(
            "the failover never showed",
            lambda: prom.value('max(failover_active_region{region="eu-west"})') == 1,
            30,
            tails,
        )
        _wait(
            "the leader's decision counter was never scraped",
            lambda: prom.value('sum(failover_decisions_total{type="failover"})') == 1,
            30,
            tails,
        )
        leader = prom.value('max(failover_is_leader{coordinator="coord-a"})')
        first = "coord-a" if leader == 1 else "coord-b"
        before = prom.value("max(failover_leader_epoch)")
        assert before is not None and before > 0
        assert procs[first].terminate() == 0
        _wait(
            "no handover seen",
            lambda: (prom.value("max(failover_leader_epoch)") or 0) > before,
            30,
            tails,
        )
        time.sleep(3)  # a few more scrapes after the handover: rates need two samples
        empty = []
        for where, expr, instant in queries:
            if instant:
                result = prom.api("query", query=expr)["result"]
            else:
                result = prom.api(
                    "query_range", query=expr, start=f"{started:.3f}", end=f"{time.time():.3f}",
                    step="1",
                )["result"]  # fmt: skip
            if not result:
                empty.append((where, expr))
    finally:
        prom.close()
    assert empty == [], empty
