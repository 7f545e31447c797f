"""Prometheus metrics of the prober: every probe's duration and verdict, publish failures."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from schemas.state import ProbeResult
from streams.address import redact
from workers.exposition import process_registry
from workers.settings import ProbeTarget

VERDICTS = ("healthy", "degraded", "unhealthy")
# A probe is a connect plus one small HTTP answer: milliseconds nearby, up to the timeout.
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProberMetrics:
    """Per (region, target): duration histogram and results by verdict (all created at 0)."""

    def __init__(
        self, targets: Sequence[ProbeTarget], registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or process_registry("prober")
        r = self.registry
        labels = ["region", "target"]
        self._duration = Histogram(
            "failover_probe_duration_seconds",
            "Time one probe took (connect + answer, or until it failed)",
            labels,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self._results = Counter(
            "failover_probe_results",
            "Probe results by verdict (healthy, degraded, unhealthy)",
            [*labels, "verdict"],
            registry=r,
        )
        self._publish_errors = Counter(
            "failover_probe_publish_errors",
            "Probe rounds whose health events could not be written to Redis",
            registry=r,
        )
        self._last_round = Gauge(
            "failover_probe_last_round_timestamp_seconds",
            "Wall time the last probe round ended",
            registry=r,
        )
        for t in targets:
            self._duration.labels(t.region, redact(t.url))
            for verdict in VERDICTS:
                self._results.labels(t.region, redact(t.url), verdict)

    def observed(self, results: Sequence[ProbeResult]) -> None:
        """Count one round's results."""
        for res in results:
            target = redact(res.url)
            self._duration.labels(res.region, target).observe(res.latency_ms / 1000)
            self._results.labels(res.region, target, res.status).inc()
        self._last_round.set(time.time())

    def publish_failed(self) -> None:
        """A round's events did not reach Redis."""
        self._publish_errors.inc()
