"""Redis client construction and the one retry policy for Redis I/O (tenacity).

Retries happen here and only here: exponential backoff with jitter, bounded by a deadline on
the monotonic clock; after it, callers see :class:`~schemas.errors.RedisUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from schemas.errors import ConfigError, RedisUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Server replies that mean "not now" rather than "never": loading, a script hogging the
# server, a replica promoted mid-call, cluster reconfiguration.
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    # Rebuild from the raw netloc so an invalid port cannot make redaction itself fail.
    hostport = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username or ''}:***@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def validate_url(url: str) -> None:
    """Raise ConfigError unless ``url`` is a usable redis://, rediss:// or unix:// URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"malformed URL {redact(url)!r}: {exc}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"URL {redact(url)!r} must start with redis://, rediss:// or unix://")
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"URL {redact(url)!r} has no host")
    if port == 0:
        raise ConfigError(f"URL {redact(url)!r} has port 0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"URL {redact(url)!r} has database {db!r}, expected a number")


def connect(
    url: str, *, socket_timeout: float = 2.0, client_name: str | None = None
) -> aioredis.Redis:
    """Build an asyncio client from ``url`` (TLS via ``rediss://``, ACL user/password in it).

    redis-py's own retries are switched off: all retrying goes through :func:`call`, so an
    outage is retried once, with one deadline, and logged with its attempt count.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=client_name,
        health_check_interval=0,
    )


def is_retriable(exc: BaseException) -> bool:
    """True for Redis errors that may succeed if tried again later."""
    if isinstance(exc, rex.ConnectionError | rex.TimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, rex.ReadOnlyError | rex.BusyLoadingError | rex.TryAgainError):
        return True
    if isinstance(exc, rex.ClusterDownError | rex.MasterDownError):
        return True
    if isinstance(exc, rex.ResponseError):
        return str(exc).startswith(_TRANSIENT_REPLIES)
    return False


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "redis %s failed (attempt %s, %.2fs elapsed): %s",
            what,
            state.attempt_number,
            state.seconds_since_start or 0.0,
            exc,
        )

    return before_sleep


async def call(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    deadline_s: float,
    initial_backoff_s: float = 0.05,
    max_backoff_s: float = 1.0,
) -> T:
    """Run ``op`` with retries on transient Redis errors until ``deadline_s`` has passed.

    Non-retriable errors propagate at once (they are bugs or contract violations). A call
    hung on a paused server is cut by the same deadline, so the caller's clock is honoured.
    """
    start = time.monotonic()
    try:
        async with asyncio.timeout(deadline_s):
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retriable),
                wait=wait_exponential_jitter(
                    initial=initial_backoff_s, max=max_backoff_s, jitter=initial_backoff_s
                ),
                stop=stop_after_delay(deadline_s),
                before_sleep=_log_retry(what),
                reraise=True,
            ):
                with attempt:
                    return await op()
    except TimeoutError as exc:
        elapsed = time.monotonic() - start
        raise RedisUnavailable(f"redis {what}: no answer within {elapsed:.2f}s") from exc
    except Exception as exc:
        if is_retriable(exc):
            elapsed = time.monotonic() - start
            raise RedisUnavailable(f"redis {what}: {exc} (gave up after {elapsed:.2f}s)") from exc
        raise
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
