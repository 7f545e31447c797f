"""Prometheus metrics of an executor process (prefix ``failover_executor_``), per group."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from workers.exposition import process_registry

# An action is an HTTP call or a process start: milliseconds locally, seconds through a
# cloud DNS API, up to the timeout times the attempts when it keeps failing.
_ACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ExecutorMetrics:
    """What one executor exports, labelled with its group."""

    def __init__(self, group: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry("executor")
        self.group = group
        r = self.registry
        self._actions = Counter(
            "failover_executor_actions",
            "Failover decisions carried out, by outcome (completed, failed)",
            ["group", "outcome"],
            registry=r,
        )
        self._duration = Histogram(
            "failover_executor_action_seconds",
            "Time from starting an action to its outcome, retries included",
            ["group"],
            buckets=_ACTION_BUCKETS,
            registry=r,
        )
        self._skipped = Counter(
            "failover_executor_skipped",
            "Decisions not acted on, by reason (stale: epoch lower than one seen;"
            " duplicate: decision id already finished)",
            ["group", "reason"],
            registry=r,
        )
        self._lag = Gauge(
            "failover_executor_lag_entries",
            "Entries of the decisions stream not yet delivered to the group",
            ["group"],
            registry=r,
        )
        self._pending = Gauge(
            "failover_executor_pending",
            "Decisions delivered to the group and not yet settled",
            ["group"],
            registry=r,
        )
        self._epoch = Gauge(
            "failover_executor_epoch",
            "Highest leader epoch this executor has seen on the decisions stream",
            ["group"],
            registry=r,
        )
        self._seen_epoch = 0
        for outcome in ("completed", "failed"):
            self._actions.labels(group, outcome)
        for reason in ("stale", "duplicate"):
            self._skipped.labels(group, reason)

    def acted(self, ok: bool, seconds: float) -> None:
        """Call after an action with its outcome and how long it took."""
        self._actions.labels(self.group, "completed" if ok else "failed").inc()
        self._duration.labels(self.group).observe(seconds)

    def skipped(self, reason: str) -> None:
        """Call for a decision skipped as ``stale`` or ``duplicate``."""
        self._skipped.labels(self.group, reason).inc()

    def saw_epoch(self, epoch: int) -> None:
        """Call with the epoch of each decision or leader change settled."""
        self._seen_epoch = max(self._seen_epoch, epoch)
        self._epoch.labels(self.group).set(self._seen_epoch)

    def lag(self, entries: int | None, pending: int) -> None:
        """Set the lag gauges from one sample of the group."""
        if entries is not None:
            self._lag.labels(self.group).set(entries)
        self._pending.labels(self.group).set(pending)
