"""What every long-running process shares: a stop event set by signals, a steady schedule.

Only process entry points call :func:`stop_on_signals` (signals belong to them alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable


def configure_logging(quiet: Iterable[str] = ()) -> None:
    """One line per record; the loggers named in ``quiet`` only from WARNING up."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stop_on_signals() -> asyncio.Event:
    """Return an event that SIGTERM or SIGINT sets, on the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def every(
    interval_s: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]]
) -> None:
    """Await ``step`` every ``interval_s`` on the monotonic clock until ``stop`` is set.

    A slow step delays the next one instead of piling up, and ``stop`` ends the wait at
    once rather than after the interval.
    """
    next_at = time.monotonic()
    while not stop.is_set():
        await step()
        next_at = max(next_at + interval_s, time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(next_at - time.monotonic()):
                await stop.wait()
