"""What ``failoverctl status`` (and the demo's live table) shows, read in one round trip.

The lease, the epoch, the stream lag and the committed policy summary come from one atomic
script call (:mod:`streams.lag`); the prober snapshots are read concurrently with it. The
lag status here is evaluated from that one snapshot (STOP, STALL or OK, see
:func:`workers.monitor.lag_status.evaluate_instant`); WARN needs a window and is the lag monitor's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from schemas.errors import DecodeError
from schemas.executor import ExecutorGroupState
from schemas.lag import LagReport
from schemas.state import PolicySummary, RegionSnapshot
from streams.connection import Client
from streams.keys import Keys
from streams.lag import LagSampler
from streams.ledger import read_groups
from streams.memory import evicts_any_key, maxmemory_policy
from streams.retry import call
from streams.snapshots import read_snapshots
from workers.monitor.lag_status import GroupSample, Verdict, evaluate_instant, worst
from workers.settings import Settings

_summary_decoder = msgspec.json.Decoder(PolicySummary)
_snapshot_decoder = msgspec.json.Decoder(RegionSnapshot)


class StatusReport(msgspec.Struct, frozen=True):
    """Everything status shows, as read at one instant of the server's clock."""

    namespace: str
    redis_url: str
    regions: tuple[str, ...]
    elapsed_ms: float
    lag: LagReport
    summary: PolicySummary | None
    summary_error: str | None
    snapshots: dict[str, RegionSnapshot | None]
    verdicts: dict[str, Verdict]
    overall: Verdict
    decision_groups: list[ExecutorGroupState] = []
    eviction_policy: str = "noeviction"
    allow_eviction: bool = False


def _decode_summary(raw: bytes | None) -> tuple[PolicySummary | None, str | None]:
    if raw is None:
        return None, None
    try:
        return _summary_decoder.decode(raw), None
    except (msgspec.DecodeError, DecodeError) as exc:
        return None, f"unreadable policy summary: {exc}"


def _decode_snapshot(raw: object) -> RegionSnapshot | None:
    if not isinstance(raw, bytes):
        return None
    try:
        return _snapshot_decoder.decode(raw)
    except msgspec.DecodeError:
        return None


async def gather_status(
    redis: Client, settings: Settings, *, deadline_s: float = 2.0
) -> StatusReport:
    """Read the status of ``settings.namespace``: one script call and one MGET, concurrently."""
    keys = Keys(settings.namespace)
    sampler = LagSampler(redis, keys)
    start = time.perf_counter()
    report, raw_snapshots, groups, policy = await asyncio.gather(
        call(lambda: sampler.sample(with_state=True), what="status", deadline_s=deadline_s),
        call(
            lambda: read_snapshots(redis, keys, settings.regions),
            what="snapshots",
            deadline_s=deadline_s,
        ),
        read_groups(redis, keys, deadline_s=deadline_s),
        call(lambda: maxmemory_policy(redis), what="memory policy", deadline_s=deadline_s),
    )
    elapsed_ms = (time.perf_counter() - start) * 1000
    summary, error = _decode_summary(report.state.summary if report.state else None)
    window_s = settings.lag_window * settings.lag_interval_ms / 1000
    verdicts = {
        s.stream: evaluate_instant(GroupSample.of(report, s), window_s=window_s)
        for s in report.streams
    }
    return StatusReport(
        namespace=settings.namespace,
        redis_url=settings.redacted_url,
        regions=settings.regions,
        elapsed_ms=round(elapsed_ms, 3),
        lag=report,
        summary=summary,
        summary_error=error,
        snapshots={
            r: _decode_snapshot(raw) for r, raw in zip(settings.regions, raw_snapshots, strict=True)
        },
        verdicts=verdicts,
        overall=worst(verdicts.values()),
        decision_groups=groups,
        eviction_policy=policy,
        allow_eviction=settings.allow_eviction,
    )


def _ago(now_s: float, then: float | None) -> str:
    if then is None:
        return "never"
    delta = now_s - then
    return f"{delta:.1f}s ago" if delta >= 0 else f"in {-delta:.1f}s"


def status_json(report: StatusReport) -> dict[str, Any]:
    """The report as plain JSON-able data (``status --json``)."""
    lag = report.lag
    state = lag.state
    data: dict[str, Any] = {
        "namespace": report.namespace,
        "redis_url": report.redis_url,
        "elapsed_ms": report.elapsed_ms,
        "server_time": lag.now_ms / 1000,
        "leader": {
            "owner": lag.leader,
            "epoch": lag.epoch,
            "lease_ms_left": lag.lease_ms_left,
        },
        "state": {
            "epoch": state.epoch if state else None,
            "leader": state.leader if state else None,
            "updated_at": state.updated_at if state else None,
            "error": report.summary_error,
        },
        "active_region": report.summary.active_region if report.summary else None,
        "policy": msgspec.to_builtins(report.summary) if report.summary else None,
        "snapshots": msgspec.to_builtins(report.snapshots),
        "streams": [
            {**msgspec.to_builtins(s), "lag_status": msgspec.to_builtins(report.verdicts[s.stream])}
            for s in lag.streams
        ],
        "dead_letters": lag.dlq_length,
        "decisions": lag.decisions_length,
        "lag_status": msgspec.to_builtins(report.overall),
        "decision_groups": msgspec.to_builtins(report.decision_groups),
        "eviction": {
            "policy": report.eviction_policy,
            "unsafe": evicts_any_key(report.eviction_policy),
            "allowed": report.allow_eviction,
        },
    }
    return data


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def _observers(observers: dict[str, str], counts: dict[str, int]) -> str:
    """A few observers by name; many as counts per verdict (``failoverctl observers`` lists all)."""
    if observers and len(observers) <= 4:
        return " ".join(f"{k}={v}" for k, v in sorted(observers.items()))
    if not counts:
        counts = {}
        for verdict in observers.values():
            counts[verdict] = counts.get(verdict, 0) + 1
    if not counts:
        return "-"
    total = sum(counts.values())
    return f"{total}: " + " ".join(f"{v}={n}" for v, n in sorted(counts.items()))


def _region_rows(report: StatusReport, now_s: float) -> list[list[str]]:
    rows = []
    summary = report.summary
    for region in report.regions:
        snap = report.snapshots.get(region)
        probe = f"{snap.status} ({snap.source}, {_ago(now_s, snap.observed_at)})" if snap else "-"
        info = summary.regions.get(region) if summary else None
        if info is None:
            rows.append([region, "unknown", "-", "never", "-", probe, "-"])
            continue
        observers = _observers(info.observers, info.observer_counts)
        active = "*" if summary is not None and summary.active_region == region else ""
        rows.append(
            [
                region + active,
                info.state,
                "drained" if info.drained else "-",
                _ago(now_s, info.last_seen),
                observers,
                probe,
                info.down_reason or "-",
            ]
        )
    return rows


def _group_row(g: ExecutorGroupState, now_s: float) -> list[str]:
    """One consumer group of NS:decisions; for an executor, its fence and last decision."""
    lag = "?" if g.lag is None else str(g.lag)
    if not g.is_executor:
        return [g.group, str(g.consumers), lag, str(g.pending), "-", "-", "(not an executor)"]
    last = "-"
    if g.last is not None:
        finished = None if g.last.finished_at is None else g.last.finished_at / 1000
        last = (
            f"{g.last.decision_id} {g.last.status} ({_ago(now_s, finished)}, epoch {g.last.epoch})"
        )
    skipped = (
        f"; skipped {g.stale} stale, {g.duplicate} duplicate" if g.stale or g.duplicate else ""
    )
    counts = f"   [{g.completed} completed, {g.failed} failed{skipped}]"
    return [
        g.group,
        str(g.consumers),
        lag,
        str(g.pending),
        g.position or "-",
        str(g.epoch),
        last + counts,
    ]


def render_status(report: StatusReport) -> str:
    """The report as text for a terminal."""
    lag = report.lag
    now_s = lag.now_ms / 1000
    lines = [f"namespace {report.namespace} on {report.redis_url}"]
    if lag.leader is None:
        lines.append(f"leader    NONE (epoch {lag.epoch}): no coordinator holds the lease")
    else:
        left = (lag.lease_ms_left or 0) / 1000
        lines.append(f"leader    {lag.leader}  epoch {lag.epoch}  lease {left:.1f}s left")
    summary = report.summary
    state = lag.state
    if summary is None:
        lines.append(
            f"active    {report.regions[0]} (no committed state yet: first of FAILOVER_REGIONS)"
        )
    else:
        as_of = _ago(now_s, state.updated_at if state else None)
        epoch = state.epoch if state else "?"
        lines.append(f"active    {summary.active_region}  (state committed {as_of}, epoch {epoch})")
    if report.summary_error:
        lines.append(f"WARNING   {report.summary_error}")
    if evicts_any_key(report.eviction_policy):
        consequence = (
            "coordinators lead anyway (FAILOVER_ALLOW_EVICTION=1)"
            if report.allow_eviction
            else "coordinators refuse to lead unless FAILOVER_ALLOW_EVICTION=1"
        )
        lines.append(
            f"WARNING   Redis maxmemory-policy {report.eviction_policy} may evict the state,"
            f" the epoch or undelivered entries: {consequence}"
        )
    if summary is not None:
        last = summary.last_decision
        if last is not None:
            open_fo = summary.open_failover or {}
            lines.append(
                f"decision  {last.decision_id}: {last.from_region} -> {last.to_region}"
                f" ({last.reason}, {_ago(now_s, last.decided_at)})"
                f" [{open_fo.get('status', '?')}]"
            )
        if summary.no_target:
            lines.append(f"NO TARGET {summary.no_target}")
        if summary.paused:
            p = summary.paused
            lines.append(
                f"PAUSED    by {p.get('actor')} {_ago(now_s, p.get('at'))}"
                f" ({p.get('reason') or 'no reason given'}): no automatic decision until resumed"
            )
        if summary.panic is not None:
            pn = summary.panic
            hold = pn.hold_until - now_s
            lines.append(
                f"PANIC     {pn.down} of {pn.regions} regions down since {_ago(now_s, pn.since)}:"
                + (f" automatic decisions held {hold:.0f}s more" if hold > 0 else " hold expired")
            )
        if summary.held and not summary.no_target:
            lines.append(f"HELD      automatic failover held: {summary.held}")
        if summary.config_version is not None:
            lines.append(
                f"config    version {summary.config_version}, {summary.observers} observers"
                "  (failoverctl config show / observers)"
            )
        if summary.cooldown_until is not None and summary.cooldown_until > now_s:
            lines.append(f"cooldown  until {summary.cooldown_until - now_s:.1f}s from now")
        for refusal in summary.refused[-3:]:
            lines.append(
                f"refused   {refusal.get('kind')} {refusal.get('region')}"
                f" by {refusal.get('actor')}: {refusal.get('reason')}"
            )
    lines.append("")
    lines += _table(
        ["REGION", "STATE", "DRAINED", "LAST SEEN", "OBSERVERS", "PROBE SNAPSHOT", "DOWN REASON"],
        _region_rows(report, now_s),
    )
    lines.append("")
    rows = []
    for s in lag.streams:
        verdict = report.verdicts[s.stream]
        rows.append(
            [
                s.stream,
                str(s.length),
                f"{s.lag}" + ("" if s.lag_exact else "+"),
                f"{s.lag_seconds:.1f}s" if s.lag else "-",
                str(s.pending),
                f"{s.oldest_pending_age_seconds:.1f}s" if s.pending else "-",
                f"{verdict.status} ({verdict.reason})",
            ]
        )
    lines += _table(
        ["STREAM", "LENGTH", "LAG", "LAG AGE", "PENDING", "OLDEST PENDING", "LAG STATUS"], rows
    )
    if report.decision_groups:
        lines.append("")
        lines += _table(
            ["DECISIONS GROUP", "CONSUMERS", "LAG", "PENDING", "POSITION", "EPOCH", "LAST APPLIED"],
            [_group_row(g, now_s) for g in report.decision_groups],
        )
    lines.append("")
    lines.append(
        f"dead letters {lag.dlq_length}   decisions {lag.decisions_length}"
        f"   lag status {report.overall.status}   read in {report.elapsed_ms:.1f}ms"
    )
    return "\n".join(lines)
