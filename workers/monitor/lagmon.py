"""The lag monitor (``python -m workers.lagmon``): stream lag and leader metrics for Prometheus.

Every ``FAILOVER_LAG_INTERVAL_MS`` it takes one snapshot (one script round trip, see
:mod:`streams.lag`), updates the metrics served on ``FAILOVER_METRICS_PORT`` and the
Burrow-style status of the coordinator group on each input stream over the last
``FAILOVER_LAG_WINDOW`` samples; each status change is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from schemas.errors import RedisUnavailable
from schemas.lag import LagReport
from streams.connection import Client, connect
from streams.keys import Keys
from streams.lag import LagSampler
from streams.retry import call
from workers.exposition import serve_settings
from workers.monitor.lag_status import GroupSample, LagWindow, Verdict
from workers.monitor.metrics import LagMetrics, decode_summary
from workers.runtime import every, redis_outage, run
from workers.settings import Settings

log = logging.getLogger(__name__)


class LagMonitor:
    """Samples one namespace and keeps a window of samples per input stream."""

    def __init__(
        self, redis: Client, settings: Settings, metrics: LagMetrics | None = None
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.sampler = LagSampler(redis, self.keys)
        self.metrics = metrics or LagMetrics(self.keys)
        self.windows = {s: LagWindow(settings.lag_window) for s in self.keys.input_streams}
        self.verdicts: dict[str, Verdict] = {}

    async def sample(self) -> tuple[LagReport, dict[str, Verdict]]:
        """Take one snapshot, evaluate every window, update metrics, log status changes."""
        deadline_s = max(self.settings.lag_interval_ms / 1000, 0.5)
        start = time.monotonic()
        report = await call(
            lambda: self.sampler.sample(with_state=True), what="lag sample", deadline_s=deadline_s
        )
        elapsed = time.monotonic() - start
        verdicts = {
            s.stream: self.windows[s.stream].add(GroupSample.of(report, s)) for s in report.streams
        }
        for stream, verdict in verdicts.items():
            before = self.verdicts.get(stream)
            if before is None or before.status != verdict.status:
                log.log(
                    logging.INFO if verdict.status == "OK" else logging.WARNING,
                    "lag status %s on %s: %s (epoch=%s)",
                    verdict.status,
                    stream,
                    verdict.reason,
                    report.epoch,
                )
        self.verdicts = verdicts
        summary = decode_summary(report.state.summary if report.state else None)
        self.metrics.record(report, verdicts, elapsed, summary)
        return report, verdicts

    async def run(self, stop: asyncio.Event) -> None:
        """Sample on a monotonic schedule until ``stop``; an outage is logged and skipped."""

        async def step() -> None:
            try:
                await self.sample()
            except RedisUnavailable as exc:
                self.metrics.failed()
                redis_outage.failed(log, "lag sample", exc)
            else:
                redis_outage.recovered(log)

        await every(self.settings.lag_interval_ms / 1000, stop, step)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Sample until ``stop`` is set (the lag monitor's main, run by :func:`workers.runtime.run`)."""
    metrics = LagMetrics(Keys(settings.namespace))
    server = serve_settings(metrics.registry, settings)  # a taken port: exit 2 before anything
    redis = connect(settings.redis_target, client_name=f"lagmon:{settings.instance_id}")
    monitor = LagMonitor(redis, settings, metrics)
    if server is not None:
        log.info("metrics on %s:%s/metrics", settings.metrics_addr, server.port)
    else:
        log.warning("FAILOVER_METRICS_PORT is 0: lag statuses are logged, no metrics served")
    log.info(
        "lag monitor on %s namespace %s every %sms, window %s",
        settings.redacted_url,
        settings.namespace,
        settings.lag_interval_ms,
        settings.lag_window,
    )
    try:
        await monitor.run(stop)
    finally:
        if server is not None:
            server.close()
        await redis.aclose()


def main() -> None:
    """Process entry point: exit 2 on bad settings, 0 after SIGTERM/SIGINT."""
    run("lagmon", serve)


if __name__ == "__main__":
    main()
