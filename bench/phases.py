"""A progress line per phase of a long benchmark, on stderr (stdout keeps the table or JSON)."""

from __future__ import annotations

import sys
import time


class Phases:
    """Call with a phase's description as it starts: ``[  12.3s] description``."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, what: str) -> None:
        """Print one line with the time since the benchmark began."""
        print(f"[{time.monotonic() - self.started:7.1f}s] {what}", file=sys.stderr, flush=True)
