"""Helpers for executor tests and the executor benchmark: decisions as a leader writes them,
a real receiver process, the environment of an executor process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from schemas.events import FailoverDecision, LeaderChanged
from streams.server import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-for-tests"


def failover(n: int, to: str = "us", frm: str = "eu", epoch: int = 1) -> FailoverDecision:
    """A failover decision as the leader would commit it."""
    return FailoverDecision(
        decision_id=f"d{n}",
        epoch=epoch,
        leader="c1#abc",
        from_region=frm,
        to_region=to,
        reason="quorum_unhealthy",
        evidence=[f"e{n}"],
        decided_at=time.time(),
    )


def leader(epoch: int) -> LeaderChanged:
    """A leader_changed decision."""
    return LeaderChanged(epoch=epoch, leader=f"c{epoch}#abc", at=time.time())


def clean_env(**failover: str) -> dict[str, str]:
    """This process's environment without FAILOVER_*, plus ``FAILOVER_<KEY>`` values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAILOVER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update({f"FAILOVER_{k.upper()}": v for k, v in failover.items()})
    return env


def executor_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    """An executor's environment: quick retries so a test sees every path in seconds."""
    values = {
        "redis_url": redis_url,
        "namespace": namespace,
        "executor_timeout_ms": "1000",
        "executor_attempts": "3",
        "executor_backoff_ms": "50",
        "executor_claim_idle_ms": "500",
        "shutdown_timeout_ms": "2000",
    }
    values.update(extra)
    return clean_env(**values)


class ReceiverProcess:
    """``python -m workers.executor.receiver`` as a child process on a fixed free port."""

    def __init__(
        self,
        *,
        secret: str = SECRET,
        state: Path | None = None,
        delay_ms: int = 0,
        fail_status: int | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.secret = secret
        self.state_file = state
        self.delay_ms = delay_ms
        self.fail_status = fail_status
        self.log = Path(tempfile.mkstemp(prefix="receiver-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> ReceiverProcess:
        """Start and wait until it says it listens."""
        argv = [sys.executable, "-m", "workers.executor.receiver", "--port", str(self.port)]
        if self.state_file is not None:
            argv += ["--state", str(self.state_file)]
        if self.delay_ms:
            argv += ["--delay-ms", str(self.delay_ms)]
        if self.fail_status is not None:
            argv += ["--fail-status", str(self.fail_status)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=clean_env(executor_webhook_secret=self.secret),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while "listening on" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"receiver did not start: {self.output()}")
            time.sleep(0.02)
        return self

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        """GET /state."""
        with urllib.request.urlopen(self.url + "state", timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
            return data

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """POST ``body`` as anyone could: (status, answer text)."""
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def applied_ids(self) -> list[str]:
        """Decision ids applied, in order (a repeat would show twice)."""
        return [a["decision_id"] for a in self.state()["applied"]]

    def kill(self) -> None:
        """SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Kill and remove the log."""
        self.kill()
        self.log.unlink(missing_ok=True)
