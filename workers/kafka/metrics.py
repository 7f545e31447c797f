"""Prometheus metrics of the Kafka edge: records bridged, decisions mirrored, their errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from workers.exposition import process_registry


class BridgeMetrics:
    """Records the bridge wrote to Redis (by stream), failed write rounds, records held."""

    def __init__(self, streams: Iterable[str], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry("bridge")
        r = self.registry
        self._records = Counter(
            "failover_bridge_records",
            "Kafka records written to their Redis stream (acked to Kafka after)",
            ["stream"],
            registry=r,
        )
        self._errors = Counter(
            "failover_bridge_write_errors",
            "Failed Redis write attempts (the records are held and retried)",
            registry=r,
        )
        self._held = Gauge(
            "failover_bridge_held_records",
            "Records read from Kafka and not yet written to Redis",
            registry=r,
        )
        self._lag = Gauge(
            "failover_bridge_consumer_lag_records",
            "Records of an assigned partition not yet committed by the bridge's group"
            " (high watermark minus committed offset)",
            ["topic", "partition"],
            registry=r,
        )
        self._lag_labels: set[tuple[str, str]] = set()
        for stream in streams:
            self._records.labels(stream)

    def holding(self, count: int) -> None:
        """``count`` records are read and waiting for their Redis write."""
        self._held.set(count)

    def written(self, stream: str, count: int) -> None:
        """``count`` records reached ``stream``."""
        self._records.labels(stream).inc(count)

    def write_failed(self) -> None:
        """One attempt of a Redis write failed (it is retried)."""
        self._errors.inc()

    def consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of each assigned partition; partitions no longer assigned go away."""
        labels = {(topic, str(partition)): n for (topic, partition), n in lag.items()}
        for gone in self._lag_labels - labels.keys():
            self._lag.remove(*gone)
        for label, n in labels.items():
            self._lag.labels(*label).set(n)
        self._lag_labels = set(labels)


class MirrorMetrics:
    """Decisions mirrored to Kafka, errors by side, the last mirrored decision's time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry("mirror")
        r = self.registry
        self._mirrored = Counter(
            "failover_mirror_decisions",
            "Decisions produced to Kafka and acknowledged in Redis",
            registry=r,
        )
        self._errors = Counter(
            "failover_mirror_errors",
            "Failed attempts by side (kafka: not acknowledged; redis: read or ack failed)",
            ["side"],
            registry=r,
        )
        self._batch = Gauge(
            "failover_mirror_last_batch_size", "Decisions in the last mirrored batch", registry=r
        )
        self._lag = Gauge(
            "failover_mirror_lag_entries",
            "Entries of the decisions stream not yet delivered to the mirror's group",
            registry=r,
        )
        self._pending = Gauge(
            "failover_mirror_pending",
            "Decisions delivered to the mirror's group and not yet acknowledged by Kafka",
            registry=r,
        )
        for side in ("kafka", "redis"):
            self._errors.labels(side)

    def mirrored(self, count: int) -> None:
        """A batch of ``count`` decisions was produced and acked."""
        self._mirrored.inc(count)
        self._batch.set(count)

    def failed(self, side: str) -> None:
        """An attempt failed on ``side`` (``kafka`` or ``redis``)."""
        self._errors.labels(side).inc()

    def lag(self, entries: int | None, pending: int) -> None:
        """Set the lag gauges from one sample of the group (entries None: Redis cannot tell)."""
        if entries is not None:
            self._lag.set(entries)
        self._pending.set(pending)
