"""What an action returns (:class:`Outcome`) and the one retry policy of actions.

An action attempt raises :class:`Transient` for a failure that may pass (connection
refused, HTTP 5xx, 408/429, a timeout, a command's exit code other than 0 and 2) and
:class:`Permanent` for one that will not (HTTP 4xx, exit code 2). :func:`with_retries`
runs the attempts under a per-attempt timeout with exponential backoff (tenacity) and turns
the result into an :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

log = logging.getLogger(__name__)

# The longest wait between two attempts, as a multiple of the first one.
MAX_BACKOFF_FACTOR = 16
DETAIL_LIMIT = 400  # characters of an answer or stderr kept in a report


class Outcome(msgspec.Struct, frozen=True):
    """The result of carrying out one decision: done or not, why, after how many attempts."""

    ok: bool
    detail: str = ""
    attempts: int = 1

    @classmethod
    def done(cls, detail: str = "", attempts: int = 1) -> Outcome:
        """The action took effect."""
        return cls(True, detail[:DETAIL_LIMIT], attempts)

    @classmethod
    def failed(cls, detail: str, attempts: int = 1) -> Outcome:
        """The action did not take effect (the report is ``failover_failed``)."""
        return cls(False, detail[:DETAIL_LIMIT], attempts)


class Transient(Exception):
    """An attempt failed in a way that may pass: try again (within the bounds)."""


class Permanent(Exception):
    """An attempt failed in a way that trying again will not fix."""


def worst_case_s(attempts: int, timeout_s: float, backoff_s: float) -> float:
    """The longest :func:`with_retries` can take: every attempt timing out, every wait full."""
    waits = sum(
        min(backoff_s * 2.0**n, backoff_s * MAX_BACKOFF_FACTOR) for n in range(attempts - 1)
    )
    return attempts * timeout_s + float(waits)


async def with_retries(
    attempt: Callable[[], Awaitable[str]],
    *,
    attempts: int,
    timeout_s: float,
    backoff_s: float,
    what: str,
) -> Outcome:
    """Run ``attempt`` until it returns (done), raises Permanent, or ``attempts`` ran out."""
    tried = 0

    async def once() -> str:
        nonlocal tried
        tried += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await attempt()
        except TimeoutError:
            raise Transient(f"no answer within {timeout_s * 1000:.0f}ms") from None

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed: %s; retrying", what, state.attempt_number, exc)

    start = time.monotonic()
    try:
        async for retrying in AsyncRetrying(
            retry=retry_if_exception_type(Transient),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=backoff_s, max=backoff_s * MAX_BACKOFF_FACTOR),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with retrying:
                detail = await once()
    except Permanent as exc:
        return Outcome.failed(f"{exc} (permanent, not retried)", tried)
    except Transient as exc:
        took = time.monotonic() - start
        return Outcome.failed(f"{exc} (gave up after {tried} attempts, {took:.1f}s)", tried)
    return Outcome.done(detail, tried)
