"""The Procfile and .env.example as an operator runs them: the real honcho, a real Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from honcho.environ import parse as parse_env
from prometheus_client.parser import text_string_to_metric_families

from streams.keys import Keys
from streams.server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PORT_VARIABLE = re.compile(r"^[A-Z_]+_METRICS_PORT$")

Samples = dict[str, list[tuple[dict[str, str], float]]]


def example_env(redis_url: str, namespace: str) -> dict[str, str]:
    """.env.example with this test's Redis, namespace and free ports (targets follow them)."""
    env = parse_env((ROOT / ".env.example").read_text())
    env["FAILOVER_REDIS_URL"] = redis_url
    env["FAILOVER_NAMESPACE"] = namespace
    for name in [n for n in env if PORT_VARIABLE.match(n)]:
        old, new = env[name], str(free_port())
        env[name] = new
        # The example's probe targets point at the lag monitor's port: keep them pointing.
        for other, value in env.items():
            if other != name:
                env[other] = re.sub(rf":{old}\b", f":{new}", value)
    return env


def write_env(path: Path, env: dict[str, str]) -> None:
    """Write ``env`` as a .env file honcho reads."""
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def scrape(port: int) -> Samples:
    """Every sample served at ``:port/metrics``, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def _get(found: Samples, name: str, **labels: str) -> list[float]:
    return [v for lab, v in found.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]


class Honcho:
    """``honcho start`` as an operator runs it (venv on PATH), its output in a file."""

    def __init__(self, tmp: Path, env_file: Path, procfile: str = "Procfile") -> None:
        self.out = tmp / "honcho.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
        # An activated virtualenv: the Procfile's `python` is this interpreter.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "honcho", "-f", str(ROOT / procfile), "-e",
                 str(env_file), "-d", str(ROOT), "--no-colour", "start"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        """What honcho printed (its own lines and every process's)."""
        return self.out.read_text(errors="replace")

    def close(self) -> None:
        """Kill the whole session if anything is left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def fleet_env(redis_server: RedisServer, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The example settings against the fixture Redis, written as a .env file."""
    env = example_env(redis_server.url, "{proc-" + uuid.uuid4().hex[:10] + "}")
    path = tmp_path / ".env"
    write_env(path, env)
    return env, path


def test_honcho_runs_the_example_fleet_and_sigint_stops_it(
    redis_server: RedisServer, fleet_env: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, env_file = fleet_env
    keys = Keys(env["FAILOVER_NAMESPACE"])
    r = redis.Redis(port=redis_server.port)
    honcho = Honcho(tmp_path, env_file)
    ports = {
        "coordinator_a": int(env["COORDINATOR_A_METRICS_PORT"]),
        "coordinator_b": int(env["COORDINATOR_B_METRICS_PORT"]),
        "health": int(env["PROBER_METRICS_PORT"]),
        "lagmon": int(env["LAGMON_METRICS_PORT"]),
    }
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, Samples] = {}

        def ready() -> bool:
            for name, port in ports.items():
                try:
                    seen[name] = scrape(port)
                except OSError:
                    return False
            leaders = sum(
                sum(_get(seen[c], "failover_is_leader")) for c in ("coordinator_a", "coordinator_b")
            )
            healthy = {
                region: sum(_get(seen["health"], "failover_probe_results_total",
                                 region=region, verdict="healthy"))
                for region in ("us-east", "eu-west")
            }  # fmt: skip
            return (
                leaders == 1
                and all(healthy.values())
                and _get(seen["lagmon"], "failover_leader_present") == [1.0]
                and _get(seen["lagmon"], "failover_region_state", region="us-east", state="up")
                == [1.0]
            )

        while not ready():
            assert honcho.proc.poll() is None, honcho.output()
            assert time.monotonic() < deadline, honcho.output()
            time.sleep(0.2)
        leader = r.get(keys.leader)
        assert leader is not None and leader.decode().split("#")[0] in {"coord-a", "coord-b"}
        os.kill(honcho.proc.pid, signal.SIGINT)
        code = honcho.proc.wait(timeout=30)
    finally:
        honcho.close()
        r.close()
    out = honcho.output()
    # honcho itself reports the signal it was stopped by (130 for SIGINT, its convention);
    # what matters is that it stopped every process and each exited cleanly.
    assert code == 130, out
    for name in ports:
        assert f"{name}.1 stopped (rc=0)" in out, out
    assert "Traceback" not in out, out


def test_a_port_clash_in_the_env_is_one_line(
    fleet_env: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """The operator's classic mistake: one FAILOVER_METRICS_PORT for every process."""
    env, env_file = fleet_env
    env["FAILOVER_METRICS_PORT"] = env["LAGMON_METRICS_PORT"]
    env["COORDINATOR_B_METRICS_PORT"] = env["COORDINATOR_A_METRICS_PORT"]
    write_env(env_file, env)
    honcho = Honcho(tmp_path, env_file)
    try:
        code = honcho.proc.wait(timeout=60)
    finally:
        honcho.close()
    out = honcho.output()
    port = env["COORDINATOR_A_METRICS_PORT"]
    clash = [line for line in out.splitlines() if "cannot serve metrics" in line]
    assert len(clash) == 1, out
    assert clash[0].endswith(
        f"coordinator: FAILOVER_METRICS_PORT={port}: cannot serve metrics on 127.0.0.1:{port}:"
        " already in use (give each process on this host its own port)"
    ), out
    assert "Traceback" not in out and "Address already in use" not in out, out
    assert code == 2, out
