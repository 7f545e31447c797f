"""The one retry policy for Redis I/O (tenacity), and which errors it retries.

Retries happen here and only here: exponential backoff with jitter, bounded by a deadline on
the monotonic clock; after it, callers see :class:`~schemas.errors.RedisUnavailable`.
:func:`call` also re-raises a cancellation that redis-py lost (see :mod:`streams.cancel`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions as rex
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from schemas.errors import RedisUnavailable
from streams.cancel import reraise_lost_cancel

# The logger name the retry lines have always had (operators and tests filter on it).
log = logging.getLogger("streams.connection")

T = TypeVar("T")

# Server replies that mean "not now" rather than "never": loading, a script hogging the
# server, a replica promoted mid-call, cluster reconfiguration, memory full.
_TRANSIENT_REPLIES = (
    "BUSY",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "OOM",
)


def is_retriable(exc: BaseException) -> bool:
    """True for Redis errors that may succeed if tried again later."""
    # redis-py files a wrong password or a missing permission under ConnectionError; those
    # will not heal by themselves, so they must surface at once, not after a deadline.
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return False
    # Neither will a certificate that does not verify (or TLS against a plain port).
    if tls_refused(exc):
        return False
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, rex.ReadOnlyError | rex.BusyLoadingError | rex.TryAgainError):
        return True
    if isinstance(exc, rex.ClusterDownError | rex.MasterDownError):
        return True
    # A Redis Cluster's slot moving (MOVED; ASK while it is half-moved): the connection
    # follows it (streams/routing.py), so the next attempt reaches the slot's owner.
    if isinstance(exc, rex.AskError):
        return True
    # Out of memory under maxmemory + noeviction: memory may be freed (a trim, an operator,
    # a larger limit); until then every process waits rather than exits (DESIGN §3).
    if isinstance(exc, rex.OutOfMemoryError):
        return True
    if isinstance(exc, rex.ResponseError):
        return str(exc).startswith(_TRANSIENT_REPLIES)
    return False


def tls_refused(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a failed TLS handshake, not an outage."""
    seen: BaseException | None = exc
    for _ in range(5):  # redis-py wraps the ssl error once or twice
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, ssl.SSLZeroReturnError):
            return True
        text = str(seen)
        if "CERTIFICATE_VERIFY_FAILED" in text or "WRONG_VERSION_NUMBER" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Attempts:
    """What the retry loop has seen so far, for the log lines and the final error."""

    def __init__(self) -> None:
        self.failed = 0
        self.last: BaseException | None = None
        self.sleeping = False


def _log_retry(
    what: str,
    seen: _Attempts,
    on_retry: Callable[[BaseException], None] | None,
    *,
    start: float,
    before: int = 0,
) -> Callable[[RetryCallState], None]:
    """tenacity's before-sleep hook; ``before`` attempts were made before tenacity's first."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _failed(what, seen, on_retry, exc, attempt=before + state.attempt_number, start=start)

    return before_sleep


def _failed(
    what: str,
    seen: _Attempts,
    on_retry: Callable[[BaseException], None] | None,
    exc: BaseException | None,
    *,
    attempt: int,
    start: float,
) -> None:
    """Record and log failed attempt number ``attempt`` before its pause."""
    seen.failed, seen.last, seen.sleeping = attempt, exc, True
    if on_retry is not None and exc is not None:
        on_retry(exc)
    # DEBUG: the caller reports the outcome once (rate-limited in long-running
    # processes); a line per attempt would flood the log during an outage.
    log.debug(
        "redis %s failed (attempt %s, %.2fs elapsed): %s",
        what,
        attempt,
        time.monotonic() - start,
        exc,
    )


def _gave_up(what: str, cause: object, elapsed: float, attempts: int) -> RedisUnavailable:
    log.debug("redis %s gave up after %.2fs and %s attempts: %s", what, elapsed, attempts, cause)
    return RedisUnavailable(
        f"redis {what}: {cause} (gave up after {elapsed:.2f}s, {attempts} attempts)"
    )


async def call(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    deadline_s: float,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
    on_retry: Callable[[BaseException], None] | None = None,
    wake: asyncio.Event | None = None,
) -> T:
    """Run ``op`` with retries on transient Redis errors until ``deadline_s`` has passed.

    ``on_retry`` is called with each failed attempt's error before the pause (a long
    deadline would otherwise hide an outage from the caller until it ends). ``wake`` cuts
    a pause short when it is set (and clears it, so only that one pause is skipped): news
    that the next attempt can succeed, such as a primary switch Sentinel announced.

    Non-retriable errors propagate at once (they are bugs or contract violations). A call
    hung on a paused server is cut by the same deadline, so the caller's clock is honoured.
    Each failed attempt is logged with its number; the final :class:`RedisUnavailable`
    names the last error and how many attempts were made. A cancellation of the caller
    that redis-py lost on the way is raised here (see :mod:`streams.cancel`).
    """
    task = asyncio.current_task()
    baseline = task.cancelling() if task is not None else 0
    try:
        result = await _call(
            op, what, deadline_s, initial_backoff_s, max_backoff_s, on_retry=on_retry, wake=wake
        )
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if task is not None and task.cancelling() > baseline:
            raise asyncio.CancelledError from exc
        raise
    reraise_lost_cancel(baseline)
    return result


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _sleep_or_wake(wake: asyncio.Event) -> Callable[[float], Awaitable[None]]:
    async def pause(seconds: float) -> None:
        # asyncio.wait, not a nested timeout: the deadline's own cancel must stay intact.
        waiter = asyncio.ensure_future(wake.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
        if done:
            wake.clear()

    return pause


async def _call(
    op: Callable[[], Awaitable[T]],
    what: str,
    deadline_s: float,
    initial_backoff_s: float,
    max_backoff_s: float,
    *,
    on_retry: Callable[[BaseException], None] | None = None,
    wake: asyncio.Event | None = None,
) -> T:
    start = time.monotonic()
    seen = _Attempts()
    sleep = _sleep if wake is None else _sleep_or_wake(wake)
    try:
        async with asyncio.timeout(deadline_s):
            # The first attempt without tenacity: setting up its loop costs about as much
            # client CPU as the leader's Redis round trip (~90 us), and nearly every call
            # succeeds at once. A retriable failure pauses as tenacity's first would, then
            # the loop takes over, its attempts numbered and its backoff stepped from 2.
            try:
                return await op()
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                _failed(what, seen, on_retry, exc, attempt=1, start=start)
            await sleep(
                min(initial_backoff_s, max_backoff_s) + random.uniform(0, initial_backoff_s)
            )
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retriable),
                # Exponential backoff plus up to one initial step of random jitter
                # (wait_exponential + wait_random exist in every supported tenacity);
                # tenacity's attempt n is attempt n + 1 here.
                wait=wait_exponential(multiplier=2 * initial_backoff_s, max=max_backoff_s)
                + wait_random(0, initial_backoff_s),
                stop=stop_after_delay(max(0.0, deadline_s - (time.monotonic() - start))),
                before_sleep=_log_retry(what, seen, on_retry, start=start, before=1),
                sleep=sleep,
                reraise=True,
            ):
                with attempt:
                    seen.sleeping = False
                    return await op()
    except TimeoutError as exc:
        elapsed = time.monotonic() - start
        if seen.sleeping and seen.last is not None:  # the deadline fell in a backoff pause
            raise _gave_up(what, seen.last, elapsed, seen.failed) from seen.last
        cause = f"no answer within {elapsed:.2f}s"
        raise _gave_up(what, cause, elapsed, seen.failed + 1) from exc
    except Exception as exc:
        if is_retriable(exc):
            raise _gave_up(what, exc, time.monotonic() - start, seen.failed + 1) from exc
        raise
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
