"""The health prober (``python -m workers.health``): probe every region endpoint, publish verdicts.

Each round probes all ``FAILOVER_PROBE_TARGETS`` concurrently (HTTP/1.1 GET with the
expected status, or a TCP connect, each bounded by ``FAILOVER_PROBE_TIMEOUT_MS``), appends
one health event per target to ``NS:health`` with this prober's instance id as ``source``,
and writes the region snapshots ``NS:region:health:<region>`` (TTL 60 s). A refused
connection, a timeout, a hung server or a bad reply is an observation (``unhealthy`` with a
detail), never a crash. Two probers in different places are two observers for the quorum.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import ssl
import time
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from schemas.errors import ConfigError, RedisUnavailable
from schemas.events import HealthEvent, Status
from schemas.state import ProbeResult, RegionSnapshot
from streams.address import redact
from streams.connection import Client, connect
from streams.keys import Keys
from streams.producer import append_many
from streams.retry import call
from streams.snapshots import write_snapshots
from workers.exposition import serve_settings
from workers.probe.metrics import ProberMetrics
from workers.runtime import every, redact_text, redis_outage, run
from workers.settings import ProbeTarget, Settings

log = logging.getLogger(__name__)

SNAPSHOT_TTL_S = 60
# A probe that succeeds but takes more than this share of its timeout is "degraded":
# shown by status, not acted on by the policy.
SLOW_FRACTION = 0.8
_SEVERITY: dict[Status, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


async def _http_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str) -> int:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    # Credentials in the target URL are sent as HTTP Basic auth, and never shown anywhere.
    auth = ""
    if parts.username is not None:
        user = unquote(parts.username)
        secret = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        auth = f"Authorization: Basic {token}\r\n"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: failover-prober\r\n"
        f"{auth}Accept: */*\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode("ascii", "replace"))
    await writer.drain()
    line = await reader.readline()
    if not line:
        raise EOFError("connection closed before a status line")
    fields = line.decode("latin-1").split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise ValueError(f"bad status line {line[:60]!r}")
    return int(fields[1])


async def probe(target: ProbeTarget, *, timeout_ms: int, expect_status: int) -> ProbeResult:
    """Probe one target once; every failure mode comes back as an ``unhealthy`` result.

    The result names the target by its URL with any password masked: results travel into
    events, snapshots, logs and CLI output.
    """
    parts = urlsplit(target.url)
    scheme = parts.scheme
    default_port = {"http": 80, "https": 443}.get(scheme)
    start = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    status: Status = "unhealthy"
    stage = "connect"
    try:
        port = parts.port or default_port
        if not parts.hostname or port is None:
            raise ValueError(f"no host or port in {redact(target.url)!r}")  # noqa: TRY301 - an observation
        async with asyncio.timeout(timeout_ms / 1000):
            reader, writer = await asyncio.open_connection(
                parts.hostname,
                port,
                ssl=ssl.create_default_context() if scheme == "https" else None,
            )
            if scheme == "tcp":
                detail = "connected"
                status = "healthy"
            else:
                stage = "response"
                code = await _http_status(reader, writer, target.url)
                status = "healthy" if code == expect_status else "unhealthy"
                detail = f"HTTP {code}"
                if code != expect_status:
                    detail += f", expected {expect_status}"
    except TimeoutError:
        detail = f"timeout after {timeout_ms}ms waiting for {stage}"
    except OSError as exc:
        detail = f"{stage} failed: {exc.strerror or exc}"
    except (EOFError, ValueError, UnicodeError) as exc:
        detail = f"{stage} failed: {exc}"
    finally:
        if writer is not None:
            writer.close()
    shown = redact(target.url)
    detail = redact_text(detail)  # an error message may quote the URL
    latency_ms = (time.monotonic() - start) * 1000
    if status == "healthy" and latency_ms > SLOW_FRACTION * timeout_ms:
        status = "degraded"
        detail += f", slow: {latency_ms:.0f}ms of a {timeout_ms}ms timeout"
    return ProbeResult(
        region=target.region,
        url=shown,
        status=status,
        latency_ms=round(latency_ms, 3),
        detail=detail,
        observed_at=time.time(),
    )


async def probe_all(
    targets: Sequence[ProbeTarget], *, timeout_ms: int, expect_status: int
) -> list[ProbeResult]:
    """Probe every target concurrently; results come back in target order."""
    return list(
        await asyncio.gather(
            *(probe(t, timeout_ms=timeout_ms, expect_status=expect_status) for t in targets)
        )
    )


def _worst(results: Sequence[ProbeResult]) -> Status:
    return max((r.status for r in results), key=_SEVERITY.__getitem__)


class Prober:
    """Runs probe rounds for one settings object and writes their results to Redis."""

    def __init__(
        self, redis: Client, settings: Settings, metrics: ProberMetrics | None = None
    ) -> None:
        self.redis = redis
        self.metrics = metrics or ProberMetrics(settings.probe_targets)
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.source = settings.instance_id
        self._nonce = secrets.token_hex(4)
        self._round = 0
        self._last_status: dict[tuple[str, str], Status] = {}

    def events(self, results: Sequence[ProbeResult]) -> list[HealthEvent]:
        """One health event per result, ids unique per prober, times increasing per region."""
        self._round += 1
        last: dict[str, float] = {}
        events = []
        for i, r in enumerate(results):
            # The policy ignores an observer's event not newer than its previous one for
            # the region, so two targets of one region must not share an instant.
            at = max(r.observed_at, last.get(r.region, 0.0) + 1e-6)
            last[r.region] = at
            events.append(
                HealthEvent(
                    event_id=f"{self.source}:{self._nonce}:{self._round}:{i}",
                    region=r.region,
                    source=self.source,
                    status=r.status,
                    observed_at=at,
                    latency_ms=r.latency_ms,
                    detail=f"{r.url}: {r.detail}",
                )
            )
        return events

    def snapshots(self, results: Sequence[ProbeResult]) -> dict[str, RegionSnapshot]:
        """The snapshot of every probed region (worst status of its targets)."""
        by_region: dict[str, list[ProbeResult]] = {}
        for r in results:
            by_region.setdefault(r.region, []).append(r)
        return {
            region: RegionSnapshot(
                region=region,
                status=_worst(rs),
                source=self.source,
                observed_at=max(r.observed_at for r in rs),
                targets=rs,
            )
            for region, rs in by_region.items()
        }

    async def publish(self, results: Sequence[ProbeResult]) -> None:
        """Append the round's events, then write the snapshots (retried)."""
        events = self.events(results)
        snapshots = self.snapshots(results)

        async def write() -> None:
            await append_many(self.redis, [(self.keys.health, event) for event in events])
            await write_snapshots(self.redis, self.keys, snapshots, ttl_s=SNAPSHOT_TTL_S)

        # A retried write may append an event twice; its event_id makes the copy a
        # duplicate the policy ignores.
        await call(write, what="publish health", deadline_s=self.settings.probe_interval_ms / 1000)

    async def round(self) -> list[ProbeResult]:
        """Probe every target once and publish; a Redis outage is logged, not raised."""
        s = self.settings
        results = await probe_all(
            s.probe_targets, timeout_ms=s.probe_timeout_ms, expect_status=s.probe_expect_status
        )
        self.metrics.observed(results)
        for r in results:
            self._log_result(r)
        try:
            await self.publish(results)
        except RedisUnavailable as exc:
            self.metrics.publish_failed()
            redis_outage.failed(log, f"publishing {len(results)} health events", exc)
        else:
            redis_outage.recovered(log)
        return results

    def _log_result(self, r: ProbeResult) -> None:
        # A verdict change is news (INFO, WARNING when it turns unhealthy); a repeat is not.
        key = (r.region, r.url)
        before = self._last_status.get(key)
        self._last_status[key] = r.status
        if before == r.status:
            log.debug("probe %s %s %s %.1fms %s", r.region, r.url, r.status, r.latency_ms, r.detail)
            return
        log.log(
            logging.WARNING if r.status == "unhealthy" else logging.INFO,
            "probe %s %s: %s -> %s (%.1fms, %s)",
            r.region,
            redact(r.url),
            before or "first",
            r.status,
            r.latency_ms,
            r.detail,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run a round every ``probe_interval_ms`` (monotonic schedule) until ``stop``."""
        await every(self.settings.probe_interval_ms / 1000, stop, self.round)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Probe until ``stop`` is set (the prober's main, run by :func:`workers.runtime.run`)."""
    if not settings.probe_targets:
        raise ConfigError("FAILOVER_PROBE_TARGETS: is required for the prober")
    metrics = ProberMetrics(settings.probe_targets)
    server = serve_settings(metrics.registry, settings)  # a taken port: exit 2 before anything
    redis = connect(settings.redis_target, client_name=f"prober:{settings.instance_id}")
    log.info(
        "prober %s: %d targets every %sms, redis %s",
        settings.instance_id,
        len(settings.probe_targets),
        settings.probe_interval_ms,
        settings.redacted_url,
    )
    prober = Prober(redis, settings, metrics)
    try:
        await prober.run(stop)
    finally:
        if server is not None:
            server.close()
        await redis.aclose()


def main() -> None:
    """Process entry point: exit 2 on bad settings, 0 after SIGTERM/SIGINT."""
    run("prober", serve)


if __name__ == "__main__":
    main()
