"""Prometheus metrics (prefix ``failover_``) of the lag monitor and of coordinators.

Each process owns one registry: the lag monitor fills :class:`LagMetrics` from its
snapshots; a coordinator calls :class:`CoordinatorMetrics` at election, demotion, each
commit and each decision. :func:`serve` exposes a registry over HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    start_http_server,
)

from schemas.errors import ConfigError
from schemas.lag import LagReport
from streams.keys import GROUP, Keys
from workers.monitor.lag_status import STATUSES, Verdict

# Commit latency is a Lua script round trip: sub-millisecond on a quiet server, tens of ms
# under load or across regions.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LagMetrics:
    """Stream, group, lease and lag-status metrics of one namespace, set from snapshots."""

    def __init__(self, keys: Keys, registry: CollectorRegistry | None = None) -> None:
        self.keys = keys
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        group = ["stream", "group"]
        self.stream_length = Gauge(
            "failover_stream_length", "Entries in the stream", ["stream"], registry=r
        )
        self.lag_entries = Gauge(
            "failover_group_lag_entries", "Entries not yet delivered to the group", group,
            registry=r,
        )  # fmt: skip
        self.lag_seconds = Gauge(
            "failover_group_lag_seconds",
            "Age of the oldest entry not yet delivered to the group (0 when none)",
            group,
            registry=r,
        )
        self.lag_exact = Gauge(
            "failover_group_lag_exact",
            "1 when the lag is exact, 0 when it is a lower bound (Redis could not report it)",
            group,
            registry=r,
        )
        self.pending = Gauge(
            "failover_group_pending", "Entries delivered but not yet acknowledged", group,
            registry=r,
        )  # fmt: skip
        self.oldest_pending_age = Gauge(
            "failover_oldest_pending_age_seconds",
            "Age of the oldest pending entry, from its id (0 when none)",
            group,
            registry=r,
        )
        self.dead_letters = Gauge(
            "failover_dead_letters", "Entries in the dead-letter stream", registry=r
        )
        self.epoch = Gauge("failover_leader_epoch", "Current fencing epoch", registry=r)
        self.leader_present = Gauge(
            "failover_leader_present", "1 while some coordinator holds the lease", registry=r
        )
        self.lease_left = Gauge(
            "failover_lease_seconds_left", "Time left on the leader's lease", registry=r
        )
        self.leadership_changes = Counter(
            "failover_leadership_changes",
            "Leader elections seen (epoch increments between samples)",
            registry=r,
        )
        self.lag_status = Enum(
            "failover_lag_status",
            "Burrow-style status of the group on the stream over the sample window",
            group,
            states=list(STATUSES),
            registry=r,
        )
        self.sample_seconds = Histogram(
            "failover_lag_sample_seconds",
            "Round trip of one lag snapshot",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._last_epoch: int | None = None

    def record(
        self, report: LagReport, verdicts: Mapping[str, Verdict], sample_seconds: float
    ) -> None:
        """Set every gauge from ``report`` and the per-stream ``verdicts``."""
        for s in report.streams:
            labels = (s.stream, GROUP)
            self.stream_length.labels(s.stream).set(s.length)
            self.lag_entries.labels(*labels).set(s.lag)
            self.lag_exact.labels(*labels).set(1 if s.lag_exact else 0)
            self.lag_seconds.labels(*labels).set(s.lag_seconds)
            self.pending.labels(*labels).set(s.pending)
            self.oldest_pending_age.labels(*labels).set(s.oldest_pending_age_seconds)
            verdict = verdicts.get(s.stream)
            if verdict is not None:
                self.lag_status.labels(*labels).state(verdict.status)
        self.stream_length.labels(self.keys.decisions).set(report.decisions_length)
        self.stream_length.labels(self.keys.dlq).set(report.dlq_length)
        self.dead_letters.set(report.dlq_length)
        self.epoch.set(report.epoch)
        self.leader_present.set(1 if report.leader is not None else 0)
        self.lease_left.set((report.lease_ms_left or 0) / 1000)
        if self._last_epoch is not None and report.epoch > self._last_epoch:
            self.leadership_changes.inc(report.epoch - self._last_epoch)
        self._last_epoch = report.epoch
        self.sample_seconds.observe(sample_seconds)


class CoordinatorMetrics:
    """What a coordinator process exports, labelled with its instance id."""

    def __init__(self, instance: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.instance = instance
        r = self.registry
        self._is_leader = Gauge(
            "failover_is_leader", "1 while this instance leads", ["instance"], registry=r
        )
        self._commits = Counter(
            "failover_commits",
            "Fenced commits by outcome (ok, fenced)",
            ["instance", "outcome"],
            registry=r,
        )
        self._commit_latency = Histogram(
            "failover_commit_latency_seconds",
            "Round trip of the fenced commit script",
            ["instance"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._decisions = Counter(
            "failover_decisions",
            "Decisions committed by this instance, by type (failover, leader_changed)",
            ["instance", "type"],
            registry=r,
        )
        self._dead_lettered = Counter(
            "failover_dead_lettered",
            "Entries this instance moved to the dead-letter stream",
            ["instance"],
            registry=r,
        )
        self._eviction_unsafe = Gauge(
            "failover_eviction_unsafe",
            "1 while Redis's maxmemory-policy may evict any key (allkeys-*): this instance"
            " then refuses to lead unless FAILOVER_ALLOW_EVICTION=1",
            ["instance"],
            registry=r,
        )
        self._is_leader.labels(instance).set(0)
        self._eviction_unsafe.labels(instance).set(0)

    def eviction(self, *, unsafe: bool) -> None:
        """Call after each check of Redis's maxmemory-policy."""
        self._eviction_unsafe.labels(self.instance).set(1 if unsafe else 0)

    def elected(self) -> None:
        """Call when this instance becomes leader."""
        self._is_leader.labels(self.instance).set(1)

    def demoted(self) -> None:
        """Call when this instance stops leading (for any reason)."""
        self._is_leader.labels(self.instance).set(0)

    def committed(self, seconds: float, *, fenced: bool = False) -> None:
        """Call after each fenced commit with its round trip and whether it was FENCED."""
        self._commits.labels(self.instance, "fenced" if fenced else "ok").inc()
        self._commit_latency.labels(self.instance).observe(seconds)

    def decided(self, kind: str, count: int = 1) -> None:
        """Call after a commit that wrote ``count`` decisions of type ``kind``."""
        if count:
            self._decisions.labels(self.instance, kind).inc(count)

    def dead_lettered(self, count: int) -> None:
        """Call after a commit that wrote ``count`` dead letters."""
        if count:
            self._dead_lettered.labels(self.instance).inc(count)


class MetricsServer:
    """A running HTTP exposition server; :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        port: int = self._server.server_address[1]
        return port

    def close(self) -> None:
        """Stop serving and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> MetricsServer:  # noqa: S104
    """Expose ``registry`` at ``http://addr:port/metrics`` from a daemon thread.

    A port in use or an address this host does not have is a ConfigError (one line, exit 2).
    """
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"FAILOVER_METRICS_PORT / FAILOVER_METRICS_ADDR: cannot serve metrics on"
            f" {addr}:{port}: {exc.strerror or exc}"
        ) from None
    return MetricsServer(server, thread)
