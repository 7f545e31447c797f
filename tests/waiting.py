"""Waiting for a state instead of sleeping for a guessed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def wait_for(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float,
    what: str,
    interval_s: float = 0.02,
) -> None:
    """Poll ``predicate()`` (sync or async) until it is truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_for_sync(
    predicate: Callable[[], object], timeout: float, what: str, interval_s: float = 0.02
) -> None:
    """:func:`wait_for` for tests without an event loop (a sync predicate)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval_s)
