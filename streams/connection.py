"""Redis client construction and the one retry policy for Redis I/O (tenacity).

Retries happen here and only here: exponential backoff with jitter, bounded by a deadline on
the monotonic clock; after it, callers see :class:`~schemas.errors.RedisUnavailable`.
:func:`call` also re-raises a cancellation that redis-py lost (see :mod:`streams.cancel`).

Workers hold a client as :data:`Client` and never import redis themselves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from schemas.errors import ConfigError, RedisUnavailable
from streams.cancel import reraise_lost_cancel

log = logging.getLogger(__name__)

T = TypeVar("T")

Client: TypeAlias = aioredis.Redis
"""The Redis client type, for annotations outside ``streams/`` (built by :func:`connect`)."""

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

# The query parameters a Redis URL may carry (README, "TLS"). redis-py would hand any other
# one to its connection class and fail at the first command, with a traceback.
URL_PARAMS = (
    "db",
    "username",
    "password",
    "protocol",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_check_hostname",
    "ssl_cert_reqs",
)
_FILE_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")

# Query parameters that may carry a secret (redis-py accepts ``?password=``).
_SECRET_PARAMS = ("pass", "secret", "token", "auth", "key")


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(any(word in name.lower() for word in _SECRET_PARAMS) for name, _ in pairs):
        return query
    return urlencode(
        [
            (name, "***" if any(word in name.lower() for word in _SECRET_PARAMS) else value)
            for name, value in pairs
        ],
        safe="*",
    )


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors).

    Also masks secret-looking query parameters (``?password=``), and when an ``@`` sits
    outside the part a parser reads as user:password@host (no scheme, or a ``/``, ``?`` or
    ``#`` inside the password), everything before the last ``@``: a mistyped URL must not
    leak its password either.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    rest = urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    if "@" in rest or ("@" in url and "@" not in parts.netloc):
        tail = url.rpartition("@")[2]
        head, mark, query = tail.partition("?")
        return "***@" + head + (mark + _redact_query(query) if mark else "")
    netloc = parts.netloc
    if "@" in netloc:
        # Rebuild from the raw netloc so an invalid port cannot make redaction itself fail.
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            netloc = f"{user}:***@{hostport}"
    query = _redact_query(parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def validate_url(url: str) -> None:
    """Raise ConfigError unless ``url`` is a usable redis://, rediss:// or unix:// URL."""
    # Messages never quote the parser's exception: it can echo the raw netloc, password and all.
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed URL {redact(url)!r}: it cannot be parsed") from None
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"malformed URL {redact(url)!r}: the port must be a number from 1 to 65535"
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"URL {redact(url)!r} must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        # unix://[user:password@]/path/to/socket[?db=N]: the path is the socket, not a db.
        if not parts.path:
            raise ConfigError(f"URL {redact(url)!r} has no socket path")
        return
    if not parts.hostname:
        raise ConfigError(f"URL {redact(url)!r} has no host")
    if port == 0:
        raise ConfigError(f"URL {redact(url)!r} has port 0")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        # The path is not quoted back: in a mistyped URL it may hold part of a password.
        raise ConfigError(f"URL {redact(url)!r}: the database (the path) must be a number")
    _check_params(url, parts.scheme, parse_qsl(parts.query, keep_blank_values=True))


def _check_params(url: str, scheme: str, params: list[tuple[str, str]]) -> None:
    """Refuse unknown query parameters, TLS ones without ``rediss://``, verification
    turned off, and certificate files that cannot be read."""
    shown = redact(url)
    for name, value in params:
        if name not in URL_PARAMS:
            raise ConfigError(
                f"URL {shown!r}: unknown parameter {name!r} (allowed: {', '.join(URL_PARAMS)})"
            )
        if name.startswith("ssl_") and scheme != "rediss":
            raise ConfigError(f"URL {shown!r}: {name} needs a rediss:// (TLS) URL")
        if name == "ssl_cert_reqs" and value.lower() != "required":
            raise ConfigError(
                f"URL {shown!r}: ssl_cert_reqs={value} would stop verifying the server's"
                " certificate; give its CA instead (FAILOVER_REDIS_TLS_CA or ssl_ca_certs)"
            )
        if name == "ssl_check_hostname" and value.lower() not in ("true", "false"):
            raise ConfigError(f"URL {shown!r}: ssl_check_hostname must be true or false")
        if name == "protocol" and value not in ("2", "3"):
            raise ConfigError(f"URL {shown!r}: protocol must be 2 or 3")
        if name == "db" and not value.isdigit():
            raise ConfigError(f"URL {shown!r}: db must be a number")
        if name in _FILE_PARAMS and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ConfigError(f"URL {shown!r}: {name}: no readable file at {value!r}")
        if name == "ssl_ca_path" and not os.path.isdir(value):
            raise ConfigError(f"URL {shown!r}: ssl_ca_path: no directory at {value!r}")


def with_tls_files(url: str, ca: str, cert: str, key: str) -> str:
    """``url`` with the given CA / client certificate / key files as its TLS parameters."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    for name, value in (("ssl_ca_certs", ca), ("ssl_certfile", cert), ("ssl_keyfile", key)):
        if value:
            params = [(n, v) for n, v in params if n != name] + [(name, value)]
    query = urlencode(params, safe="/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class RedisTarget(msgspec.Struct, frozen=True):
    """Where Redis is: a URL, or the primary Sentinel names (user, password, db and TLS
    still from the URL, whose host and port are then unused)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = ""

    def __repr__(self) -> str:
        """The target with its passwords masked (it gets logged)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        if not hosts:
            return f"RedisTarget({redact(self.url)!r})"
        return (
            f"RedisTarget({redact(self.url)!r}, sentinels={hosts}, master={self.sentinel_master})"
        )

    def describe(self) -> str:
        """One phrase for logs and error lines: the URL, or the sentinels and master name."""
        if not self.sentinels:
            return redact(self.url)
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel master {self.sentinel_master!r} via {hosts} ({redact(self.url)})"


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` as pairs; ValueError naming the first bad item."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")  # [::1]:26379
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        out.append((host, int(port)))
    if not out:
        raise ValueError("no sentinel given")
    return tuple(out)


class _SentinelClient(aioredis.Redis):
    """A client of the primary Sentinel names; closing it closes the sentinel clients too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the primary's connections, then the sentinels'."""
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


def connect(
    target: str | RedisTarget, *, socket_timeout: float = 2.0, client_name: str | None = None
) -> Client:
    """Build an asyncio client from a URL (TLS via ``rediss://``, ACL user/password in it),
    or for the primary that Sentinel names (:class:`RedisTarget` with sentinels).

    Through Sentinel the client asks for the primary's address whenever it (re)connects,
    and a primary demoted under it answers READONLY, which drops the connection (a
    transient error for :func:`call`), so it follows promotions. redis-py's own retries are
    switched off: all retrying goes through :func:`call`, so an outage is retried once,
    with one deadline, and logged with its attempt count.
    """
    if isinstance(target, str):
        target = RedisTarget(target)
    common: dict[str, object] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        "health_check_interval": 0,
    }
    if not target.sentinels:
        return aioredis.Redis.from_url(target.url, **common)  # type: ignore[arg-type]
    return _sentinel_client(target, common)


def _sentinel_client(target: RedisTarget, common: dict[str, object]) -> Client:
    if target.url.startswith("unix:"):
        raise ConfigError("a unix:// URL cannot be combined with Sentinel")
    kwargs: dict[str, object] = dict(parse_url(target.url))
    for unused in ("host", "port"):
        kwargs.pop(unused, None)
    tls = kwargs.pop("connection_class", None) is SSLConnection
    tls_options = {k: v for k, v in kwargs.items() if k.startswith("ssl_")}
    sentinel_kwargs: dict[str, object] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **({"ssl": True, **tls_options} if tls else {}),
    }
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    pool_kwargs: dict[str, Any] = {**kwargs, **common, **({"ssl": True} if tls else {})}
    client = cast(
        "_SentinelClient",
        sentinel.master_for(target.sentinel_master, redis_class=_SentinelClient, **pool_kwargs),
    )
    client.sentinel_manager = sentinel
    return client


async def ping(client: aioredis.Redis, *, deadline_s: float) -> None:
    """Check that Redis answers (retried); :class:`RedisUnavailable` after ``deadline_s``."""
    await call(client.ping, what="ping", deadline_s=deadline_s)


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
    what: str, seen: _Attempts, on_retry: Callable[[BaseException], None] | None
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        seen.failed, seen.last, seen.sleeping = state.attempt_number, exc, True
        if on_retry is not None and exc is not None:
            on_retry(exc)
        # DEBUG: the caller reports the outcome once (rate-limited in long-running
        # processes); a line per attempt would flood the log during an outage.
        log.debug(
            "redis %s failed (attempt %s, %.2fs elapsed): %s",
            what,
            state.attempt_number,
            state.seconds_since_start or 0.0,
            exc,
        )

    return before_sleep


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
) -> T:
    """Run ``op`` with retries on transient Redis errors until ``deadline_s`` has passed.

    ``on_retry`` is called with each failed attempt's error before the pause (a long
    deadline would otherwise hide an outage from the caller until it ends).

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
            op, what, deadline_s, initial_backoff_s, max_backoff_s, on_retry=on_retry
        )
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if task is not None and task.cancelling() > baseline:
            raise asyncio.CancelledError from exc
        raise
    reraise_lost_cancel(baseline)
    return result


async def _call(
    op: Callable[[], Awaitable[T]],
    what: str,
    deadline_s: float,
    initial_backoff_s: float,
    max_backoff_s: float,
    *,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    start = time.monotonic()
    seen = _Attempts()
    try:
        async with asyncio.timeout(deadline_s):
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retriable),
                # Exponential backoff plus up to one initial step of random jitter
                # (wait_exponential + wait_random exist in every supported tenacity).
                wait=wait_exponential(multiplier=initial_backoff_s, max=max_backoff_s)
                + wait_random(0, initial_backoff_s),
                stop=stop_after_delay(deadline_s),
                before_sleep=_log_retry(what, seen, on_retry),
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
