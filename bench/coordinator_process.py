"""A real ``python -m workers.coordinator`` process for the benchmarks, on one namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.history import REGIONS

ROOT = Path(__file__).resolve().parent.parent


def spawn_coordinator(
    url: str, namespace: str, regions: tuple[str, ...] = REGIONS, **settings: str
) -> subprocess.Popen[bytes]:
    """Start a coordinator on ``url`` and ``namespace`` for ``regions``; ``settings`` are
    further ``FAILOVER_<NAME>`` values (``batch_size="500"``). Its output is discarded."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FAILOVER_REDIS_URL": url,
        "FAILOVER_NAMESPACE": namespace,
        "FAILOVER_REGIONS": ",".join(regions),
        "FAILOVER_LOG_LEVEL": "ERROR",
    }
    env.update({f"FAILOVER_{name.upper()}": value for name, value in settings.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "workers.coordinator"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
