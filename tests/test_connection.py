"""streams.address and streams.retry: URL redaction and validation, error classification,
the retry policy.

The retry tests run against real servers that are paused (SIGSTOP), killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.errors import ConfigError, RedisUnavailable
from streams.address import redact, validate_url
from streams.cancel import cancel_and_wait
from streams.connection import connect
from streams.retry import call, is_retriable
from streams.server import RedisServer

SECRET = "hunter2-Sekr3t"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host/0", "redis://user@host/0"),  # a lone user is a username
        (f"redis://user:{SECRET}@host:6380/2", "redis://user:***@host:6380/2"),
        (f"rediss://:{SECRET}@host", "rediss://:***@host"),
        (f"redis://user:{SECRET}@[::1]:7000/0", "redis://user:***@[::1]:7000/0"),
        (f"redis://user:{SECRET}@host:notaport", "redis://user:***@host:notaport"),
        (f"unix://user:{SECRET}@/run/redis.sock?db=1", "unix://user:***@/run/redis.sock?db=1"),
        (f"redis://h/0?password={SECRET}&db=1", "redis://h/0?password=***&db=1"),
        (f"redis://h/0?db=1&auth_token={SECRET}", "redis://h/0?db=1&auth_token=***"),
        (f"user:{SECRET}@host:6379", "***@host:6379"),  # scheme forgotten
        (f"redis://user:{SECRET}/x@host:6379/0", "***@host:6379/0"),  # '/' in the password
        (f"redis://user:{SECRET}#x@host/0?password={SECRET}", "***@host/0?password=***"),
        (f"redis://user:{SECRET}@[::1/0", "<unparseable url>"),
        (f"redis://user:{SECRET}\uff20x@host/0", "<unparseable url>"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert SECRET not in redact(url)


_MARK = "Zq9MARK"


@settings(max_examples=400, deadline=None)
@given(
    user=st.text(alphabet="abcXYZ019_-.", max_size=6),
    secret=st.text(max_size=16),
    host=st.sampled_from(["h", "redis.example.com", "10.0.0.1", "[::1]", ""]),
    port=st.sampled_from(["", ":6379", ":x"]),
    form=st.sampled_from(["quoted", "raw", "query", "noscheme"]),
)
def test_redact_never_leaks_a_password(
    user: str, secret: str, host: str, port: str, form: str
) -> None:
    password = _MARK + secret
    if form == "quoted":
        url = f"redis://{user}:{quote(password, safe='')}@{host}{port}/0"
    elif form == "raw":
        url = f"rediss://{user}:{password}@{host}{port}/0"
    elif form == "query":
        url = f"redis://{host}{port}/0?db=0&password={quote(password, safe='')}"
    else:
        url = f"{user}:{password}@{host}{port}"
    shown = redact(url)
    assert _MARK not in shown, (url, shown)
    assert quote(_MARK) not in shown
    with pytest.raises(ConfigError) as info:  # ... nor does validation quote it back
        validate_url(url.replace("redis", "http", 1) if form != "noscheme" else url)
    assert _MARK not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h",
        "redis://127.0.0.1:6379/0",
        f"rediss://user:{SECRET}@cache.example:6380/15",
        "redis://[::1]:6379",
        "unix:///var/run/redis.sock",
        "redis://h/0?password=x",
    ],
)
def test_validate_url_accepts(url: str) -> None:
    validate_url(url)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://h", "must start with redis://"),
        ("h:6379", "must start with redis://"),
        ("redis://", "has no host"),
        ("redis://:6379", "has no host"),
        ("redis://h:0", "has port 0"),
        ("redis://h:65536", "port must be a number"),
        ("redis://h:-1", "port must be a number"),
        ("redis://h/x", "must be a number"),
        ("unix://", "no socket path"),
        ("redis://[::1", "cannot be parsed"),
    ],
)
def test_validate_url_refuses(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        validate_url(url)


@pytest.mark.parametrize(
    ("exc", "retriable"),
    [
        (rex.ConnectionError("Connection refused"), True),
        (rex.TimeoutError("Timeout reading from socket"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (ConnectionResetError(104, "reset"), True),
        (TimeoutError(), True),
        (rex.BusyLoadingError("LOADING Redis is loading the dataset in memory"), True),
        (rex.ReadOnlyError("READONLY You can't write against a read only replica."), True),
        (rex.TryAgainError("TRYAGAIN"), True),
        (rex.ClusterDownError("CLUSTERDOWN The cluster is down"), True),
        (rex.MasterDownError("MASTERDOWN Link with MASTER is down"), True),
        (rex.ResponseError("BUSY Redis is busy running a script."), True),
        (rex.ResponseError("MASTERDOWN Link with MASTER is down"), True),
        (rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False),
        (rex.ResponseError("ERR syntax error"), False),
        (rex.ResponseError("NOSCRIPT No matching script"), False),
        # Issue 9: a full Redis is a transient condition (it was False before).
        (rex.ResponseError("OOM command not allowed"), True),
        (rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
        (rex.NoPermissionError("NOPERM this user has no permissions"), False),
        (rex.AuthenticationError("WRONGPASS invalid username-password pair"), False),
        (rex.AuthorizationError("NOAUTH Authentication required."), False),
        (rex.DataError("Invalid input of type: 'NoneType'"), False),
        (RedisUnavailable("already wrapped"), False),
        (ValueError("bug"), False),
        (KeyError("bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_retriable(exc: BaseException, retriable: bool) -> None:
    assert is_retriable(exc) is retriable


def _failing(
    failures: list[BaseException], result: str = "ok"
) -> tuple[list[float], Callable[[], Awaitable[str]]]:
    calls: list[float] = []

    async def op() -> str:
        calls.append(time.monotonic())
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return result

    return calls, op


async def test_call_retries_a_transient_failure_then_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls, op = _failing([rex.ConnectionError("refused"), rex.TimeoutError("slow")])
    with caplog.at_level(logging.DEBUG, logger="streams.connection"):
        assert await call(op, what="probe-op", deadline_s=5.0) == "ok"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.04  # backed off (initial 50 ms, jittered upwards)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "redis probe-op failed (attempt 1," in messages[0] and "refused" in messages[0]
    assert "redis probe-op failed (attempt 2," in messages[1] and "slow" in messages[1]


async def test_call_gives_up_after_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    calls, op = _failing([rex.ConnectionError("refused")] * 10_000)
    start = time.monotonic()
    with (
        caplog.at_level(logging.DEBUG, logger="streams.connection"),
        pytest.raises(RedisUnavailable) as info,
    ):
        await call(op, what="doomed", deadline_s=0.4, max_backoff_s=0.1)
    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 0.4 + 1.0, elapsed
    assert info.value.retriable is True
    assert isinstance(info.value.__cause__, rex.ConnectionError)
    assert len(calls) >= 3
    assert f"{len(calls)} attempts" in str(info.value), str(info.value)
    assert any(f"and {len(calls)} attempts: refused" in r.getMessage() for r in caplog.records)


async def test_call_cuts_a_hung_operation_at_the_deadline() -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    start = time.monotonic()
    with pytest.raises(
        RedisUnavailable, match=r"no answer within 0\.\d\ds \(gave up .*, 1 attempts\)"
    ):
        await call(hang, what="hang", deadline_s=0.3)
    assert 0.25 <= time.monotonic() - start < 1.3


async def test_non_retriable_errors_propagate_at_once() -> None:
    for error in (rex.ResponseError("WRONGTYPE wrong kind"), ValueError("bug")):
        calls, op = _failing([error] * 100)
        start = time.monotonic()
        with pytest.raises(type(error)) as info:
            await call(op, what="bug", deadline_s=5.0)
        assert info.value is error
        assert len(calls) == 1 and time.monotonic() - start < 0.5


async def test_real_non_retriable_reply_is_not_retried(redis_client: aioredis.Redis) -> None:
    key = f"t:{uuid.uuid4().hex}"
    await redis_client.set(key, "string")
    attempts = 0

    async def push() -> int:
        nonlocal attempts
        attempts += 1
        return await redis_client.lpush(key, "x")  # type: ignore[misc,no-any-return]

    with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
        await call(push, what="lpush", deadline_s=5.0)
    assert attempts == 1


async def test_outside_cancellation_is_not_turned_into_unavailable() -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(call(hang, what="hang", deadline_s=10.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_connect_sets_client_name(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, client_name="coord-test")
    try:
        assert await client.client_getname() in ("coord-test", b"coord-test")
        assert await call(client.ping, what="ping", deadline_s=2.0) is True
    finally:
        await client.aclose()


@pytest.mark.chaos
async def test_paused_server_gives_unavailable_after_deadline_then_recovers(
    own_redis_server: RedisServer,
) -> None:
    client = connect(own_redis_server.url)
    try:
        await client.set("k", "before")
        own_redis_server.pause()
        try:
            start = time.monotonic()
            with pytest.raises(RedisUnavailable, match="no answer within"):
                await call(lambda: client.set("k", "during"), what="set", deadline_s=0.5)
            elapsed = time.monotonic() - start
            assert 0.45 <= elapsed < 1.5, elapsed
        finally:
            own_redis_server.resume()
        # The timed-out command still ran once the server thawed (commands already sent
        # cannot be recalled) -- and the connection it used was dropped, so no reply is
        # ever matched to the wrong command afterwards.
        assert await call(lambda: client.get("k"), what="get", deadline_s=2.0) in (
            b"before",
            b"during",
        )
        for i in range(20):
            await client.set(f"n{i}", i)
            assert await client.get(f"n{i}") == str(i).encode()
    finally:
        await client.aclose()


@pytest.mark.chaos
async def test_killed_server_gives_unavailable_then_a_restart_is_ridden_out(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(own_redis_server.url, socket_timeout=0.5)
    try:
        assert await client.ping() is True
        own_redis_server.kill()
        with pytest.raises(RedisUnavailable) as info:
            await call(client.ping, what="ping", deadline_s=0.5)
        assert "attempts" in str(info.value)
        assert int(str(info.value).rsplit(", ", 1)[1].split()[0]) >= 2  # it did retry

        async def restart_later() -> None:
            await asyncio.sleep(0.4)
            await asyncio.to_thread(own_redis_server.start)

        restarter = asyncio.create_task(restart_later())
        caplog.clear()
        start = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="streams.connection"):
            assert await call(client.ping, what="ping", deadline_s=10.0) is True
        await restarter
        assert time.monotonic() - start >= 0.3
        attempts = [r.getMessage() for r in caplog.records if "failed (attempt" in r.getMessage()]
        assert len(attempts) >= 2, attempts  # each failed attempt logged with its number
        assert "attempt 1," in attempts[0] and "attempt 2," in attempts[1]
    finally:
        await client.aclose()


@pytest.mark.chaos
async def test_wrong_password_fails_at_once_without_leaking(
    own_redis_server: RedisServer,
) -> None:
    admin = connect(own_redis_server.url)
    try:
        await admin.config_set("requirepass", "right-password")
    finally:
        await admin.aclose()
    url = f"redis://default:{SECRET}@127.0.0.1:{own_redis_server.port}/0"
    client = connect(url)
    try:
        start = time.monotonic()
        with pytest.raises(rex.AuthenticationError) as info:
            await call(client.ping, what="ping", deadline_s=5.0)
        assert time.monotonic() - start < 1.0  # not retried until the deadline
        assert SECRET not in str(info.value)
    finally:
        await client.aclose()


async def test_a_cancel_is_never_lost_inside_call(redis_client: aioredis.Redis) -> None:
    """Cancelling a task that loops on call() always ends it.

    On Python 3.11 a cancel that lands while redis-py sends a command can be dropped by
    asyncio.wait_for; call() must notice (Task.cancelling()) and raise it. Without that
    guard this loop ran on after its cancel within a few hundred trials.
    """
    rng = random.Random(3)

    async def loop() -> None:
        while True:
            with contextlib.suppress(RedisUnavailable):
                await call(redis_client.ping, what="ping", deadline_s=rng.choice([0.001, 1.0]))
            await asyncio.sleep(rng.choice([0, 0.0005]))

    for trial in range(1500):
        task = asyncio.create_task(loop())
        await asyncio.sleep(rng.uniform(0, 0.002))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done, f"cancel lost at trial {trial}"
        assert task.cancelled()


async def test_cancel_and_wait_resends_a_lost_cancel(caplog: pytest.LogCaptureFixture) -> None:
    cleaned: list[str] = []

    async def deaf() -> None:  # swallows its first cancel, as a lost one would look
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)

    async def tidy() -> None:  # cleans up for a while after its cancel: must not be cut short
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.1)
            cleaned.append("tidy")

    tasks = [asyncio.create_task(deaf(), name="deaf"), asyncio.create_task(tidy(), name="tidy")]
    await asyncio.sleep(0.01)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streams.cancel"):
        await cancel_and_wait(*tasks, grace_s=0.3)
    assert all(t.cancelled() for t in tasks)
    assert cleaned == ["tidy"]
    assert 0.3 <= time.monotonic() - start < 2.0
    assert [r.getMessage() for r in caplog.records] == [
        "task deaf ignored its cancellation; cancelling it again"
    ]
