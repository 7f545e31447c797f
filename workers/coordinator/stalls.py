"""Event-loop stalls of a leader: a process that was not running explains a lost lease.

A leader's stall watch that wakes this much later than it asked to was not running: the
process was paused (SIGSTOP, a VM freeze, swapping) or the event loop blocked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("workers.coordinator.elector")  # the lines it has always logged

STALL_S = 0.5
"""A wake-up this late was a stall: well above an asyncio sleep's jitter on a loaded host."""


async def watch_stalls(epoch: int, on_stall: Callable[[float], None]) -> None:
    """Measure event-loop stalls while leading (until cancelled); report each to ``on_stall``."""
    tick = 0.1
    last = time.monotonic()
    while True:
        await asyncio.sleep(tick)
        now = time.monotonic()
        stall = now - last - tick
        last = now
        if stall > STALL_S:
            on_stall(stall)
            log.warning(
                "this process was paused for %.1fs (event loop stalled) epoch=%s", stall, epoch
            )
