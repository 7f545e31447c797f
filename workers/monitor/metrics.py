"""Prometheus metrics (prefix ``failover_``) of the lag monitor and of coordinators.

The lag monitor fills :class:`LagMetrics` from its snapshots. Everything read from Redis is
exported only while the last sample succeeded: when Redis cannot be sampled those series
*disappear* (an alert on ``failover_leader_present`` or the lag status then sees no data,
and ``failover_lagmon_up`` is 0) instead of repeating the last good values. A coordinator
calls :class:`CoordinatorMetrics` at election, demotion, each commit and each decision; its
series carry a stable ``coordinator`` label (``FAILOVER_INSTANCE_ID``), never the per-start
owner id (that is in ``failover_coordinator_info``), so a restart makes no new series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.lag import LagReport
from streams.keys import GROUP, Keys
from workers.exposition import process_registry
from workers.monitor.lag_status import STATUSES, Verdict

# Commit latency is a Lua script round trip: sub-millisecond on a quiet server, tens of ms
# under load or across regions.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REGION_STATES = ("up", "down", "suspect", "unknown")
DECISION_TYPES = ("failover", "leader_changed")
COMMIT_OUTCOMES = ("ok", "fenced")


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


def _flag(value: object) -> float:
    """A summary field that may be a bool, a number, an object (active) or None (inactive)."""
    number = _number(value)
    if number is not None:
        return 1.0 if number else 0.0
    if isinstance(value, Mapping):
        return 1.0 if value.get("active", True) else 0.0
    return 0.0 if value is None else 1.0


def _observers(region: Mapping[str, Any]) -> int:
    fresh = region.get("fresh_observers")
    if isinstance(fresh, int) and not isinstance(fresh, bool):
        return fresh
    if isinstance(fresh, list | dict):
        return len(fresh)
    observers = region.get("observers")
    return len(observers) if isinstance(observers, dict) else 0


class _Snapshot(Collector):
    """The Redis-derived gauges of the last good sample; nothing at all after a failed one."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.report: LagReport | None = None
        self.verdicts: Mapping[str, Verdict] = {}
        self.summary: Mapping[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        """The gauges of :attr:`report` (called by the registry on every scrape)."""
        report = self.report
        if report is None:
            return
        group = ["stream", "group"]

        def fam(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        length = fam("failover_stream_length", "Entries in the stream", ["stream"])
        lag = fam("failover_group_lag_entries", "Entries not yet delivered to the group", group)
        lag_s = fam(
            "failover_group_lag_seconds",
            "Age of the oldest entry not yet delivered to the group (0 when none)",
            group,
        )
        exact = fam(
            "failover_group_lag_exact",
            "1 when the lag is exact, 0 when it is a lower bound (Redis could not report it)",
            group,
        )
        pending = fam("failover_group_pending", "Entries delivered but not yet acknowledged", group)
        oldest = fam(
            "failover_oldest_pending_age_seconds",
            "Age of the oldest pending entry, from its id (0 when none)",
            group,
        )
        status = fam(
            "failover_lag_status",
            "1 for the Burrow-style status of the group on the stream (label state), else 0",
            [*group, "state"],
        )
        for s in report.streams:
            labels = [s.stream, GROUP]
            length.add_metric([s.stream], s.length)
            lag.add_metric(labels, s.lag)
            lag_s.add_metric(labels, s.lag_seconds)
            exact.add_metric(labels, 1 if s.lag_exact else 0)
            pending.add_metric(labels, s.pending)
            oldest.add_metric(labels, s.oldest_pending_age_seconds)
            verdict = self.verdicts.get(s.stream)
            if verdict is not None:
                for state in STATUSES:
                    status.add_metric([*labels, state], 1 if verdict.status == state else 0)
        length.add_metric([self.keys.decisions], report.decisions_length)
        length.add_metric([self.keys.dlq], report.dlq_length)
        yield from (length, lag, lag_s, exact, pending, oldest, status)
        yield self._one(
            "failover_dead_letters", "Entries in the dead-letter stream", report.dlq_length
        )
        yield self._one("failover_leader_epoch", "Current fencing epoch", report.epoch)
        yield self._one(
            "failover_leader_present",
            "1 while some coordinator holds the lease",
            1 if report.leader is not None else 0,
        )
        yield self._one(
            "failover_lease_seconds_left",
            "Time left on the leader's lease",
            (report.lease_ms_left or 0) / 1000,
        )
        leader = fam(
            "failover_leader_info", "1 for the lease holder (owner id and its coordinator)",
            ["owner", "coordinator"],
        )  # fmt: skip
        if report.leader is not None:
            leader.add_metric([report.leader, report.leader.partition("#")[0]], 1)
        yield leader
        if report.state is not None and report.state.updated_at is not None:
            yield self._one(
                "failover_state_updated_timestamp_seconds",
                "Wall time of the last commit of the policy state",
                report.state.updated_at,
            )
        if self.summary is not None:
            yield from self._policy(self.summary)

    @staticmethod
    def _one(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    def _policy(self, summary: Mapping[str, Any]) -> Iterator[Metric]:
        # Read defensively: the summary is written by whichever coordinator version leads.
        raw_regions = summary.get("regions")
        regions = raw_regions if isinstance(raw_regions, dict) else {}
        active = summary.get("active_region")
        active_f = GaugeMetricFamily(
            "failover_active_region", "1 for the active region, 0 for the others", labels=["region"]
        )
        state_f = GaugeMetricFamily(
            "failover_region_state",
            "1 for the region's policy state (label state: up, down, suspect, unknown), else 0",
            labels=["region", "state"],
        )
        observers_f = GaugeMetricFamily(
            "failover_region_observers",
            "Observers whose verdicts count for the region (fresh ones when the policy says)",
            labels=["region"],
        )
        drained_f = GaugeMetricFamily(
            "failover_region_drained", "1 while the region is drained", labels=["region"]
        )
        names = list(regions) or ([active] if isinstance(active, str) else [])
        for name in names:
            active_f.add_metric([name], 1 if name == active else 0)
            info = regions.get(name)
            if not isinstance(info, dict):
                continue
            for state in REGION_STATES:
                state_f.add_metric([name, state], 1 if info.get("state") == state else 0)
            observers_f.add_metric([name], _observers(info))
            drained_f.add_metric([name], 1 if info.get("drained") else 0)
        yield from (active_f, state_f, observers_f, drained_f)
        last = summary.get("last_decision")
        decided_at = _number(last.get("decided_at")) if isinstance(last, dict) else None
        if decided_at is not None:
            yield self._one(
                "failover_last_decision_timestamp_seconds",
                "Wall time of the last failover decision",
                decided_at,
            )
        for key, name, doc in (
            ("panic", "failover_panic", "1 while automatic decisions are held (panic)"),
            ("paused", "failover_paused", "1 while an operator paused automatic decisions"),
            ("held", "failover_held", "1 while an automatic failover is held (panic or pause)"),
        ):
            if key in summary:
                yield self._one(name, doc, _flag(summary[key]))
        version = _number(summary.get("config_version"))
        if version is not None:
            yield self._one(
                "failover_config_version", "Version of the policy configuration in force", version
            )


class LagMetrics:
    """Stream, group, lease, policy and lag-status metrics of one namespace, from snapshots."""

    def __init__(self, keys: Keys, registry: CollectorRegistry | None = None) -> None:
        self.keys = keys
        self.registry = registry or process_registry("lagmon")
        r = self.registry
        self.up = Gauge(
            "failover_lagmon_up",
            "1 when the last sample of Redis succeeded; 0 while Redis cannot be sampled",
            registry=r,
        )
        self.errors = Counter(
            "failover_lagmon_errors", "Samples that failed (Redis unreachable or erroring)",
            registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "failover_lagmon_last_success_timestamp_seconds",
            "Wall time of the last successful sample (0 before the first)",
            registry=r,
        )
        self.leadership_changes = Counter(
            "failover_leadership_changes",
            "Leader elections seen (samples whose epoch changed; epochs are not consecutive)",
            registry=r,
        )
        self.sample_seconds = Histogram(
            "failover_lag_sample_seconds",
            "Round trip of one lag snapshot",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._snapshot = _Snapshot(keys)
        r.register(self._snapshot)
        self._last_epoch: int | None = None

    def record(
        self,
        report: LagReport,
        verdicts: Mapping[str, Verdict],
        sample_seconds: float,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        """Export ``report``, the per-stream ``verdicts`` and the policy ``summary``."""
        self._snapshot.report = report
        self._snapshot.verdicts = dict(verdicts)
        self._snapshot.summary = summary
        # Epochs jump (the acquire script's clock floor), so a change counts once: several
        # elections between two samples are one change here; a new leader is what matters.
        if self._last_epoch is not None and report.epoch != self._last_epoch:
            self.leadership_changes.inc()
        self._last_epoch = report.epoch
        self.sample_seconds.observe(sample_seconds)
        self.up.set(1)
        self.last_success.set(time.time())

    def failed(self) -> None:
        """A sample failed: drop every Redis-derived series until the next good one."""
        self._snapshot.report = None
        self._snapshot.summary = None
        self.up.set(0)
        self.errors.inc()


def decode_summary(raw: bytes | None) -> dict[str, Any] | None:
    """The policy summary of ``NS:state`` as plain JSON values; None if absent or unreadable."""
    if not raw:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


class CoordinatorMetrics:
    """What a coordinator process exports, labelled ``coordinator`` = its instance id."""

    def __init__(self, coordinator: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or process_registry("coordinator")
        self.coordinator = coordinator
        r = self.registry
        by = ["coordinator"]
        self._is_leader = Gauge(
            "failover_is_leader", "1 while this coordinator leads", by, registry=r
        )
        self._info = Gauge(
            "failover_coordinator_info",
            "Always 1; owner = this process's lease owner id (new at every start)",
            ["coordinator", "owner"],
            registry=r,
        )
        self._commits = Counter(
            "failover_commits", "Fenced commits by outcome (ok, fenced)", [*by, "outcome"],
            registry=r,
        )  # fmt: skip
        self._commit_latency = Histogram(
            "failover_commit_latency_seconds",
            "Round trip of the fenced commit script",
            by,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._decisions = Counter(
            "failover_decisions",
            "Decisions committed by this coordinator, by type (failover, leader_changed)",
            [*by, "type"],
            registry=r,
        )
        self._dead_lettered = Counter(
            "failover_dead_lettered",
            "Entries this coordinator moved to the dead-letter stream",
            by,
            registry=r,
        )
        # Every series exists from the start at 0, so increase() sees the first event.
        self._is_leader.labels(coordinator).set(0)
        for outcome in COMMIT_OUTCOMES:
            self._commits.labels(coordinator, outcome)
        for kind in DECISION_TYPES:
            self._decisions.labels(coordinator, kind)
        self._commit_latency.labels(coordinator)
        self._dead_lettered.labels(coordinator)
        self._eviction_unsafe = Gauge(
            "failover_eviction_unsafe",
            "1 while Redis's maxmemory-policy may evict any key (allkeys-*): this coordinator"
            " then refuses to lead unless FAILOVER_ALLOW_EVICTION=1",
            ["coordinator"],
            registry=r,
        )
        self._eviction_unsafe.labels(coordinator).set(0)

    def started(self, owner: str) -> None:
        """Call once with this process's lease owner id."""
        self._info.labels(self.coordinator, owner).set(1)

    def eviction(self, *, unsafe: bool) -> None:
        """Call after each check of Redis's maxmemory-policy."""
        self._eviction_unsafe.labels(self.coordinator).set(1 if unsafe else 0)

    def elected(self) -> None:
        """Call when this coordinator becomes leader."""
        self._is_leader.labels(self.coordinator).set(1)

    def demoted(self) -> None:
        """Call when this coordinator stops leading (for any reason)."""
        self._is_leader.labels(self.coordinator).set(0)

    def committed(self, seconds: float, *, fenced: bool = False) -> None:
        """Call after each fenced commit with its round trip and whether it was FENCED."""
        self._commits.labels(self.coordinator, "fenced" if fenced else "ok").inc()
        self._commit_latency.labels(self.coordinator).observe(seconds)

    def decided(self, kind: str, count: int = 1) -> None:
        """Call after a commit that wrote ``count`` decisions of type ``kind``."""
        if count:
            self._decisions.labels(self.coordinator, kind).inc(count)

    def dead_lettered(self, count: int) -> None:
        """Call after a commit that wrote ``count`` dead letters."""
        if count:
            self._dead_lettered.labels(self.coordinator).inc(count)
