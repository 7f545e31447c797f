"""Executor latency and drain rate: decision written -> action started -> report on NS:events.

    python -m bench.executor [--paced 20] [--queued 1000] [--actions webhook,command] [--json]

Starts its own Redis on a free loopback port, the receiver (``python -m
workers.executor.receiver``) and one executor process per action kind, and writes failover
decisions to ``NS:decisions`` as a leader would. All times come from one host's clock: the
decision's entry id (Redis time at XADD), the action's start (the receiver's ``applied_at``,
or the command's own timestamp), the report's entry id on ``NS:events``. Rows:

* ``paced``: one decision per second (``--paced`` of them), executor idle in between:
  written -> action started and written -> reported, p50 and p99 (max of N below 100);
* ``queued``: ``--queued`` decisions written while the executor is stopped, then it starts:
  how long it takes to drain them and the rate, decisions per second (each one is a begin
  script, the action, and the settle script, one after the other: the group acts on one
  decision at a time, in order).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.percentiles import summarize, tail
from schemas.codec import decode_entry, encode_entry
from schemas.events import FailoverCompleted, FailoverDecision
from streams.keys import Keys
from streams.server import RedisServer
from tests.executor_helpers import SECRET, ReceiverProcess, executor_env

NAMESPACE = "{bench}"
GROUP = "executor"
# The command action: read the decision, note when it started (ns), succeed.
COMMAND = "/bin/sh -c 'cat >/dev/null; echo \"$FAILOVER_DECISION_ID $(date +%s%N)\" >> {log}'"


def _ms(entry_id: bytes | str) -> float:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return float(raw.partition("-")[0])


def _decision(n: int, tag: str) -> FailoverDecision:
    return FailoverDecision(
        decision_id=f"{tag}-{n}",
        epoch=1,
        leader="bench#1",
        from_region="us" if n % 2 else "eu",
        to_region="eu" if n % 2 else "us",
        reason="bench",
        evidence=[],
        decided_at=time.time(),
    )


class Run:
    """One action kind against one Redis: an executor process started and stopped at will."""

    def __init__(self, server: RedisServer, kind: str, workdir: Path) -> None:
        self.r = redis.Redis.from_url(server.url)
        self.keys = Keys(NAMESPACE)
        self.kind = kind
        self.workdir = workdir
        self.receiver: ReceiverProcess | None = None
        self.command_log = workdir / "started.log"
        env: dict[str, str] = {"executor_group": GROUP, "log_level": "WARNING"}
        if kind == "webhook":
            self.receiver = ReceiverProcess().start()
            env |= {"executor_webhook_url": self.receiver.url, "executor_webhook_secret": SECRET}
        else:
            env["executor_command"] = COMMAND.format(log=self.command_log)
        self.env = executor_env(server.url, NAMESPACE, **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.executor"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Until the executor process reads: its group has a consumer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.r.exists(self.keys.decisions):
                for info in self.r.xinfo_groups(self.keys.decisions):
                    if info["name"].decode() == GROUP and info["consumers"] > 0:
                        return
            time.sleep(0.01)
        raise RuntimeError("the executor did not start reading")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        if self.receiver is not None:
            self.receiver.close()

    def write(self, decisions: list[FailoverDecision]) -> dict[str, float]:
        """XADD the decisions in one pipeline; decision id -> entry id ms."""
        pipe = self.r.pipeline(transaction=False)
        for d in decisions:
            pipe.xadd(self.keys.decisions, encode_entry(d))
        ids = pipe.execute()
        return {d.decision_id: _ms(i) for d, i in zip(decisions, ids, strict=True)}

    def reported(self) -> dict[str, float]:
        """Decision id -> report entry id ms, for completed reports."""
        out = {}
        for entry_id, fields in self.r.xrange(self.keys.events):
            entry = decode_entry(fields, stream="events")
            if isinstance(entry, FailoverCompleted) and entry.decision_id:
                out[entry.decision_id] = _ms(entry_id)
        return out

    def started(self) -> dict[str, float]:
        """Decision id -> when the action reached the resource (ms)."""
        if self.receiver is not None:
            return {
                a["decision_id"]: a["applied_at"] * 1000 for a in self.receiver.state()["applied"]
            }
        out = {}
        if self.command_log.exists():
            for line in self.command_log.read_text().splitlines():
                ident, ns = line.split()
                out[ident] = int(ns) / 1e6
        return out

    def settled(self) -> bool:
        """Every decision delivered to the group and acked (one cheap XINFO call)."""
        for info in self.r.xinfo_groups(self.keys.decisions):
            if info["name"].decode() == GROUP:
                return bool(info["lag"] == 0 and info["pending"] == 0)
        return False

    def wait_reported(self, ids: set[str], timeout_s: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        while not self.settled():
            if time.monotonic() > deadline:
                raise RuntimeError("decisions not settled in time")
            time.sleep(0.005)
        got = self.reported()
        if not ids <= got.keys():
            raise RuntimeError(f"{len(ids - got.keys())} decisions settled without a completion")
        return got


def paced(run: Run, count: int) -> dict[str, Any]:
    run.start()
    run.wait_ready()
    written: dict[str, float] = {}
    for n in range(count):
        d = _decision(n, f"{run.kind}-paced")
        written |= run.write([d])
        run.wait_reported({d.decision_id}, 60)
        time.sleep(max(0.0, 1.0 - (time.time() * 1000 - written[d.decision_id]) / 1000))
    reported = run.reported()
    started = run.started()
    run.stop()
    return {
        "decisions": count,
        "written_to_started": summarize([started[i] - written[i] for i in written]),
        "written_to_reported": summarize([reported[i] - written[i] for i in written]),
    }


def queued(run: Run, count: int) -> dict[str, Any]:
    decisions = [_decision(n, f"{run.kind}-queued") for n in range(count)]
    run.write(decisions)
    began = time.monotonic()
    run.start()
    ids = {d.decision_id for d in decisions}
    reported = run.wait_reported(ids, 600)
    took = time.monotonic() - began
    first, last = min(reported[i] for i in ids), max(reported[i] for i in ids)
    run.stop()
    per_s = (count - 1) / ((last - first) / 1000) if last > first else float("inf")
    return {
        "decisions": count,
        "drain_s_incl_start": round(took, 2),
        "first_to_last_report_s": round((last - first) / 1000, 2),
        "rate_per_s": round(per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paced", type=int, default=20)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--actions", default="webhook,command")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for kind in args.actions.split(","):
        server = RedisServer()
        server.start()
        with tempfile.TemporaryDirectory() as tmp:
            run = Run(server, kind, Path(tmp))
            try:
                results[kind] = {
                    "paced": paced(run, args.paced),
                    "queued": queued(run, args.queued),
                }
            finally:
                run.close()
                server.stop()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"executor, one process, local Redis and receiver ({os.cpu_count()} cpus)")
    started, reported = "written->started p50, tail", "written->reported p50, tail"
    print(f"{'action':<8} {'row':<7} {started:>32} {reported:>32} {'drain':>22}")
    for kind, res in results.items():
        p = res["paced"]
        s, r = p["written_to_started"], p["written_to_reported"]
        print(f"{kind:<8} {'paced':<7} {_latency(s):>32} {_latency(r):>32} {'-':>22}")
        q = res["queued"]
        drain = f"{q['decisions']} in {q['first_to_last_report_s']}s = {q['rate_per_s']}/s"
        print(f"{kind:<8} {'queued':<7} {'-':>32} {'-':>32} {drain:>22}")


def _latency(summary: dict[str, float]) -> str:
    # "max of N" rather than a "p99" of fewer than 100 samples (bench/percentiles.py).
    return f"{summary['p50_ms']:.1f} ms, {tail(summary)}"


if __name__ == "__main__":
    main()
