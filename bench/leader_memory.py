"""The leader's peak memory over a pre-filled stream: a real coordinator process drains it.

The throughput passes of :mod:`bench.pipeline` run the pipeline inside the bench process,
whose memory also holds the bench itself; this runs ``python -m workers.coordinator`` over
the same ``NS:health`` (a fresh group, state and decisions) and reads its ``VmHWM``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.coordinator_process import spawn_coordinator
from streams.connection import connect
from streams.keys import GROUP, Keys

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (``VmHWM``) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def leader_row(url: str, keys: Keys, n: int, batch: int) -> dict[str, Any]:
    """Drain ``n`` pre-filled entries with a coordinator process; its rate and peak RSS."""
    r = connect(url, socket_timeout=30)
    await r.delete(keys.state, keys.decisions, keys.dlq, keys.leader)
    if GROUP.encode() in [g["name"] for g in await r.xinfo_groups(keys.health)]:
        await r.xgroup_destroy(keys.health, GROUP)
    proc = spawn_coordinator(
        url,
        keys.namespace,
        quorum="2",
        batch_size=str(batch),
        cooldown_ms="0",
        stale_after_ms="600000",
        window_ms="600000",
    )
    try:
        while not await r.exists(keys.leader):
            if proc.poll() is not None:
                raise RuntimeError(f"coordinator exited with {proc.returncode}")
            await asyncio.sleep(0.005)
        start = time.perf_counter()
        while True:
            groups = {g["name"]: g for g in await r.xinfo_groups(keys.health)}
            group = groups.get(GROUP.encode())
            if group and int(group.get("entries-read") or 0) >= n and not int(group["pending"]):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"coordinator exited with {proc.returncode}")
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
        return {
            "events": n,
            "batch": batch,
            "events_per_s": round(n / elapsed),
            "leader_peak_rss_mib": round(peak_rss_mib(proc.pid), 1),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await r.aclose()
