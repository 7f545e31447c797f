"""The health prober against real local HTTP and TCP servers flipped between behaviours."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from schemas.codec import decode_entry
from schemas.events import HealthEvent
from schemas.state import RegionSnapshot
from streams.connection import connect
from streams.keys import Keys
from streams.server import RedisServer, free_port
from workers.probe.prober import Prober, probe, probe_all
from workers.settings import ProbeTarget, Settings

TIMEOUT_MS = 300


class FlippableHttp:
    """An HTTP/1.1 server whose behaviour the test switches: ok, error, hang, slow, garbage."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            self.requests += 1
            if self.mode == "hang":
                await asyncio.sleep(30)
            if self.mode == "slow":
                await asyncio.sleep(TIMEOUT_MS * 0.9 / 1000)
            if self.mode == "garbage":
                writer.write(b"hello there\r\n")
            elif self.mode == "close":
                pass
            else:
                code = b"503 Service Unavailable" if self.mode == "error" else b"200 OK"
                writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def __aenter__(self) -> FlippableHttp:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def http() -> AsyncIterator[FlippableHttp]:
    async with FlippableHttp() as server:
        yield server


async def _probe(url: str, region: str = "a", expect: int = 200) -> tuple[str, str, float]:
    result = await probe(ProbeTarget(region, url), timeout_ms=TIMEOUT_MS, expect_status=expect)
    assert result.region == region and result.url == url
    return result.status, result.detail, result.latency_ms


async def test_http_probe_follows_the_server(http: FlippableHttp) -> None:
    url = f"http://127.0.0.1:{http.port}/healthz?deep=1"
    status, detail, latency = await _probe(url)
    assert (status, detail) == ("healthy", "HTTP 200") and latency < TIMEOUT_MS
    http.mode = "error"
    status, detail, _ = await _probe(url)
    assert (status, detail) == ("unhealthy", "HTTP 503, expected 200")
    assert (await _probe(url, expect=503))[0] == "healthy"
    http.mode = "garbage"
    status, detail, _ = await _probe(url)
    assert status == "unhealthy" and "bad status line" in detail
    http.mode = "close"
    status, detail, _ = await _probe(url)
    assert status == "unhealthy" and "closed" in detail
    http.mode = "ok"
    assert (await _probe(url))[0] == "healthy"
    assert http.requests == 6


async def test_hanging_server_is_unhealthy_within_the_timeout(http: FlippableHttp) -> None:
    http.mode = "hang"
    start = time.monotonic()
    status, detail, latency = await _probe(f"http://127.0.0.1:{http.port}/")
    elapsed = time.monotonic() - start
    assert status == "unhealthy"
    assert detail == f"timeout after {TIMEOUT_MS}ms waiting for response"
    assert latency >= TIMEOUT_MS * 0.9 and elapsed < TIMEOUT_MS / 1000 + 0.5


async def test_slow_but_correct_answer_is_degraded(http: FlippableHttp) -> None:
    http.mode = "slow"
    status, detail, _ = await _probe(f"http://127.0.0.1:{http.port}/")
    assert status == "degraded" and "slow" in detail


async def test_refused_and_unresolvable_are_unhealthy() -> None:
    port = free_port()
    status, detail, _ = await _probe(f"http://127.0.0.1:{port}/")
    assert status == "unhealthy" and detail.startswith("connect failed")
    status, detail, _ = await _probe(f"tcp://127.0.0.1:{port}")
    assert status == "unhealthy" and detail.startswith("connect failed")
    status, detail, _ = await _probe("tcp://no-such-host.invalid:80")
    assert status == "unhealthy"
    status, detail, _ = await _probe("tcp://127.0.0.1")
    assert status == "unhealthy" and "no host or port" in detail


async def test_tcp_probe_flips_with_the_listener() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    assert (await _probe(f"tcp://127.0.0.1:{port}"))[:2] == ("healthy", "connected")
    server.close()
    await server.wait_closed()
    assert (await _probe(f"tcp://127.0.0.1:{port}"))[0] == "unhealthy"


async def test_probes_run_concurrently(http: FlippableHttp) -> None:
    http.mode = "hang"
    targets = [ProbeTarget(r, f"http://127.0.0.1:{http.port}/") for r in ("a", "b", "c", "d")]
    start = time.monotonic()
    results = await probe_all(targets, timeout_ms=TIMEOUT_MS, expect_status=200)
    elapsed = time.monotonic() - start
    assert [r.region for r in results] == ["a", "b", "c", "d"]
    assert all(r.status == "unhealthy" for r in results)
    assert elapsed < 2 * TIMEOUT_MS / 1000  # not 4 timeouts in a row


def _settings(url: str, namespace: str, targets: tuple[ProbeTarget, ...]) -> Settings:
    return Settings(
        regions=("a", "b"),
        redis_url=url,
        namespace=namespace,
        instance_id="probe-1",
        probe_targets=targets,
        probe_timeout_ms=TIMEOUT_MS,
        probe_interval_ms=100,
    )


async def _health(r: aioredis.Redis, keys: Keys) -> list[HealthEvent]:
    entries = await r.xrange(keys.health)
    events = [decode_entry(fields, stream="health") for _, fields in entries]
    assert all(isinstance(e, HealthEvent) for e in events)
    return events  # type: ignore[return-value]


async def test_round_writes_events_and_snapshots(
    http: FlippableHttp, redis_client: aioredis.Redis, keys: Keys, redis_server: RedisServer
) -> None:
    tcp = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    tcp_port = tcp.sockets[0].getsockname()[1]
    targets = (
        ProbeTarget("a", f"http://127.0.0.1:{http.port}/"),
        ProbeTarget("a", f"tcp://127.0.0.1:{tcp_port}"),
        ProbeTarget("b", f"http://127.0.0.1:{free_port()}/"),
    )
    prober = Prober(redis_client, _settings(redis_server.url, keys.namespace, targets))
    try:
        await prober.round()
        http.mode = "error"
        await prober.round()
    finally:
        tcp.close()
    events = await _health(redis_client, keys)
    assert len(events) == 6
    statuses = [e.status for e in events]
    assert statuses == ["healthy", "healthy", "unhealthy", "unhealthy", "healthy", "unhealthy"]
    assert {e.source for e in events} == {"probe-1"}
    assert len({e.event_id for e in events}) == 6
    # Two targets of one region never share an instant (the policy would drop the second).
    region_a = [e.observed_at for e in events if e.region == "a"]
    assert region_a == sorted(region_a) and len(set(region_a)) == 4
    snap_a = msgspec.json.decode(
        await redis_client.get(keys.region_health("a")), type=RegionSnapshot
    )
    assert (snap_a.status, snap_a.source, len(snap_a.targets)) == ("unhealthy", "probe-1", 2)
    ttl = await redis_client.ttl(keys.region_health("b"))
    assert 55 <= ttl <= 60


@pytest.mark.chaos
async def test_redis_outage_is_logged_not_raised(own_redis_server: RedisServer, keys: Keys) -> None:
    r = connect(own_redis_server.url, socket_timeout=0.2)
    targets = (ProbeTarget("a", f"tcp://127.0.0.1:{free_port()}"),)
    prober = Prober(r, _settings(own_redis_server.url, keys.namespace, targets))
    try:
        own_redis_server.kill()
        results = await prober.round()  # must return, not raise
        assert results[0].status == "unhealthy"
    finally:
        await r.aclose()


def test_prober_process_runs_rounds_and_exits_0_on_sigterm(
    redis_server: RedisServer, keys: Keys
) -> None:
    env = {
        **os.environ,
        "FAILOVER_REDIS_URL": redis_server.url,
        "FAILOVER_NAMESPACE": keys.namespace,
        "FAILOVER_REGIONS": "a,b",
        "FAILOVER_INSTANCE_ID": "probe-proc",
        "FAILOVER_PROBE_TARGETS": f"a=tcp://127.0.0.1:{free_port()},b=http://127.0.0.1:{free_port()}/",
        "FAILOVER_PROBE_INTERVAL_MS": "100",
        "FAILOVER_PROBE_TIMEOUT_MS": "200",
    }
    proc = subprocess.Popen([sys.executable, "-m", "workers.health"], env=env)
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        deadline = time.monotonic() + 15
        while client.xlen(keys.health) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.xlen(keys.health) >= 6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()


def test_prober_without_targets_exits_2() -> None:
    env = {**os.environ, "FAILOVER_REGIONS": "a,b"}
    env.pop("FAILOVER_PROBE_TARGETS", None)
    done = subprocess.run(
        [sys.executable, "-m", "workers.health"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "FAILOVER_PROBE_TARGETS" in done.stderr and "Traceback" not in done.stderr
