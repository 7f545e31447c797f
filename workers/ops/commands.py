"""The ``failoverctl`` commands: each takes a :class:`Context` and returns its exit code."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import msgspec

from schemas.codec import decode_entry, encode_entry
from schemas.errors import ConfigError, DecodeError
from schemas.events import (
    Drain,
    FailoverCompleted,
    FailoverDecision,
    FailoverFailed,
    HealthEvent,
    LeaderChanged,
    ManualFailover,
    Restore,
)
from streams.decisions import DecisionsReader
from streams.producer import append
from streams.replies import text
from workers.ops.context import EXIT_FAILED, EXIT_OK, Context, iso
from workers.ops.dlq import cmd_dlq_drop, cmd_dlq_list, cmd_dlq_replay
from workers.ops.explain import cmd_explain
from workers.ops.members import cmd_members, cmd_step_down
from workers.ops.policyctl import (
    cmd_config_diff,
    cmd_config_history,
    cmd_config_set,
    cmd_config_show,
    cmd_observers,
    cmd_observers_forget,
    cmd_pause,
    cmd_resume,
    first_config,
    parse_assignments,
    read_state,
    wait_for,
)
from workers.ops.replay import bounds, leader_rules, merge, parse_id, read_range, replay
from workers.ops.report import cmd_report
from workers.ops.status import gather_status, render_status, status_json
from workers.probe.prober import probe_all
from workers.settings import Settings

EVENT_TYPES: dict[str, type] = {
    "manual_failover": ManualFailover,
    "drain": Drain,
    "restore": Restore,
    "failover_completed": FailoverCompleted,
    "failover_failed": FailoverFailed,
}
_FOLLOW_BLOCK_MS = 200


def _me() -> str:
    return f"failoverctl@{socket.gethostname()}"


# -- status ---------------------------------------------------------------------------


async def cmd_status(ctx: Context) -> int:
    """Leader, epoch, lease, active region, regions, lag, dead letters, lag status."""
    report = await gather_status(ctx.redis, ctx.settings, deadline_s=ctx.deadline_s)
    if ctx.args.json:
        ctx.emit_json(status_json(report))
    else:
        ctx.print(render_status(report))
    return EXIT_OK


# -- emit -----------------------------------------------------------------------------


def _check_region(settings: Settings, region: str, what: str) -> None:
    if region not in settings.regions:
        raise ConfigError(
            f"{what} {region!r} is not one of FAILOVER_REGIONS ({', '.join(settings.regions)})"
        )


def _build(kind: type, fields: dict[str, Any]) -> Any:
    clean = {k: v for k, v in fields.items() if v is not None}
    try:
        return msgspec.convert(clean, kind)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid {kind.__name__}: {exc}") from None


async def cmd_emit(ctx: Context) -> int:
    """Validate and append one health or failover event, exactly as any producer would."""
    a, s = ctx.args, ctx.settings
    _check_region(s, a.region, "--region")
    event: Any
    if a.what == "health":
        stream, kind = ctx.keys.health, "health"
        event = _build(
            HealthEvent,
            {
                "event_id": uuid.uuid4().hex if a.event_id is None else a.event_id,
                "region": a.region,
                "source": _me() if a.source is None else a.source,
                "status": a.status,
                "observed_at": a.observed_at if a.observed_at is not None else time.time(),
                "latency_ms": a.latency_ms,
                "detail": a.detail,
            },
        )
    else:
        stream, kind = ctx.keys.events, "events"
        if a.target is not None and a.type != "manual_failover":
            raise ConfigError(f"--target applies to manual_failover only, not {a.type}")
        if a.target is not None:
            _check_region(s, a.target, "--target")
        event = _build(
            EVENT_TYPES[a.type],
            {
                "event_id": uuid.uuid4().hex if a.event_id is None else a.event_id,
                "region": a.region,
                "actor": _me() if a.actor is None else a.actor,
                "at": a.at if a.at is not None else time.time(),
                "target": a.target,
                "detail": a.detail,
                "decision_id": a.decision_id,
            },
        )
    fields = encode_entry(event)
    try:  # the exact check the leader applies, so what we write is never a dead letter
        decode_entry(fields, stream=kind)  # type: ignore[arg-type]
    except DecodeError as exc:
        raise ConfigError(f"event would be a dead letter: {exc.reason}") from None
    entry_id = await ctx.io(lambda: append(ctx.redis, stream, fields), "emit")
    if getattr(a, "wait", False):
        return await wait_for(ctx, event, entry_id)
    if a.json:
        ctx.emit_json({"id": entry_id, "stream": stream, "entry": msgspec.to_builtins(event)})
    else:
        ctx.print(f"{entry_id} {stream} {fields[b'data'].decode()}")
    return EXIT_OK


# -- decisions ------------------------------------------------------------------------


def _show_decision(ctx: Context, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
    eid = text(entry_id)
    try:
        d = decode_entry(fields, stream="decisions")
    except DecodeError as exc:
        if ctx.args.json:
            ctx.emit_json({"id": eid, "error": exc.reason})
        else:
            ctx.print(f"{eid}  undecodable: {exc.reason}")
        return
    if ctx.args.json:
        ctx.emit_json({"id": eid, **msgspec.to_builtins(d)})
    elif isinstance(d, LeaderChanged):
        ctx.print(f"{eid}  {iso(d.at)}  leader_changed  epoch={d.epoch} leader={d.leader}")
    elif isinstance(d, FailoverDecision):
        evidence = ",".join(d.evidence[:6]) + (",..." if len(d.evidence) > 6 else "")
        ctx.print(
            f"{eid}  {iso(d.decided_at)}  failover  {d.from_region} -> {d.to_region}"
            f"  reason={d.reason} epoch={d.epoch} leader={d.leader}"
            f" decision={d.decision_id} evidence={evidence}"
        )


async def cmd_decisions(ctx: Context) -> int:
    """Print the decisions stream (optionally the last N, or after an id); --follow tails it."""
    a = ctx.args
    reader = DecisionsReader(ctx.redis, ctx.keys)
    last = parse_id(a.since, what="--since") if a.since else None
    if a.last is not None:
        entries = await ctx.io(lambda: reader.last(a.last), "decisions")
    else:
        entries = await reader.read_all(last, deadline_s=ctx.deadline_s)
    for entry_id, fields in entries:
        _show_decision(ctx, entry_id, fields)
    if not a.follow:
        if not entries and not a.json:
            ctx.print("no decisions" + (f" after {last}" if last else ""))
        return EXIT_OK
    cursor = text(entries[-1][0]) if entries else (last or "0-0")
    while True:
        # Short blocks: Ctrl-C (task cancellation) is honoured within one block.
        page = await ctx.io(partial(reader.follow, cursor, block_ms=_FOLLOW_BLOCK_MS), "follow")
        for entry_id, fields in page:
            _show_decision(ctx, entry_id, fields)
            cursor = text(entry_id)


# -- replay ---------------------------------------------------------------------------


def _overrides(ctx: Context) -> dict[str, int | float]:
    """``--set K=V`` and the older per-setting flags, checked like ``config set``."""
    a = ctx.args
    flags = ("threshold", "quorum", "window_ms", "stale_after_ms", "recovery_threshold",
             "cooldown_ms")  # fmt: skip
    changes = {name: getattr(a, name) for name in flags if getattr(a, name) is not None}
    return changes | parse_assignments(a.set or [])


async def cmd_replay(ctx: Context) -> int:
    """Run the pure policy over recorded history; print the decisions it would make."""
    a = ctx.args
    first = parse_id(a.from_id, what="--from")
    last = parse_id(a.to_id, what="--to") if a.to_id else "+"
    # Replay from the first version that was in force, not this shell's environment.
    config = first_config(ctx, await read_state(ctx))
    overrides = _overrides(ctx)
    config.changed(overrides)  # a bad override is a usage error before any work
    tick_ms = a.tick_ms or ctx.settings.tick_ms
    streams = await read_range(ctx.redis, ctx.keys, first, last, deadline_s=ctx.deadline_s)
    rules = await leader_rules(ctx.redis, ctx.keys, ctx.settings, deadline_s=ctx.deadline_s)
    merged = merge(streams)
    start, end = bounds(merged, first, a.to_id)
    result = replay(
        merged,
        config,
        tick_ms=tick_ms,
        start=start,
        end=end,
        rules=rules,
        overrides=overrides,
    )
    reader = DecisionsReader(ctx.redis, ctx.keys)
    recorded = await ctx.io(partial(reader.range, first, last, count=1000), "decisions")
    recorded_failovers = []
    for _, fields in recorded:
        try:
            entry = decode_entry(fields, stream="decisions")
        except DecodeError:
            continue
        if isinstance(entry, FailoverDecision):
            recorded_failovers.append(entry)
    if a.json:
        ctx.emit_json(
            msgspec.to_builtins(result)
            | {"recorded": [msgspec.to_builtins(d) for d in recorded_failovers]}
        )
        return EXIT_OK
    c = result.config
    ctx.print(
        f"replayed {result.applied['health']} health and {result.applied['events']} failover"
        f" events from {first} to {last} ({len(result.undecodable)} undecodable,"
        f" {result.ticks} ticks of {tick_ms}ms); nothing was written"
    )
    ctx.print(
        f"policy: threshold={c.threshold} quorum={c.quorum} window={c.window_ms}ms"
        f" stale_after={c.stale_after_ms}ms recovery={c.recovery_threshold}"
        f" cooldown={c.cooldown_ms}ms panic_fraction={c.panic_fraction}"
        f" panic_hold={c.panic_hold_ms}ms manual_max_age={c.manual_max_age_ms}ms"
        + (f" (overridden: {', '.join(overrides)})" if overrides else "")
    )
    ctx.print("decisions it would make:" if result.decisions else "it would make no decision")
    for r in result.decisions:
        planned = r.decision
        ctx.print(
            f"  {iso(planned.decided_at)}  {planned.decision_id}"
            f"  {planned.from_region} -> {planned.to_region}  {planned.reason}"
            f"  after {r.trigger}  evidence={','.join(planned.evidence[:6])}"
        )
    states = ", ".join(f"{n} {info.state}" for n, info in result.summary.regions.items())
    ctx.print(f"final: active {result.summary.active_region}; {states}")
    if result.undecodable:
        ctx.print(f"undecodable (would be dead letters): {len(result.undecodable)}")
    ctx.print("recorded failover decisions in the range:" if recorded_failovers else
              "no failover decision was recorded in the range")  # fmt: skip
    for d in recorded_failovers:
        ctx.print(
            f"  {iso(d.decided_at)}  {d.decision_id}  {d.from_region} -> {d.to_region}"
            f"  {d.reason}  epoch={d.epoch}"
        )
    return EXIT_OK


# -- check ----------------------------------------------------------------------------


async def cmd_check(ctx: Context) -> int:
    """Probe every configured endpoint once; 0 when all pass (healthy or degraded), else 1."""
    s = ctx.settings
    if not s.probe_targets:
        raise ConfigError("FAILOVER_PROBE_TARGETS: no endpoints configured to check")
    timeout_ms = ctx.args.timeout_ms or s.probe_timeout_ms
    results = await probe_all(
        s.probe_targets, timeout_ms=timeout_ms, expect_status=s.probe_expect_status
    )
    ok = all(r.status != "unhealthy" for r in results)
    if ctx.args.json:
        ctx.emit_json({"ok": ok, "results": msgspec.to_builtins(results)})
        return EXIT_OK if ok else EXIT_FAILED
    width = max(len(r.url) for r in results)
    for r in results:
        ctx.print(
            f"{r.region:<12} {r.url:<{width}}  {r.status:<9} {r.latency_ms:8.1f}ms  {r.detail}"
        )
    bad = sum(r.status == "unhealthy" for r in results)
    ctx.print("all endpoints pass" if ok else f"{bad} of {len(results)} endpoints unhealthy")
    return EXIT_OK if ok else EXIT_FAILED


COMMANDS: dict[str, Callable[[Context], Awaitable[int]]] = {
    "status": cmd_status,
    "emit": cmd_emit,
    "decisions": cmd_decisions,
    "dlq list": cmd_dlq_list,
    "dlq replay": cmd_dlq_replay,
    "dlq drop": cmd_dlq_drop,
    "replay": cmd_replay,
    "check": cmd_check,
    "members": cmd_members,
    "step-down": cmd_step_down,
    "observers list": cmd_observers,
    "observers forget": cmd_observers_forget,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "config show": cmd_config_show,
    "config set": cmd_config_set,
    "config history": cmd_config_history,
    "config diff": cmd_config_diff,
    "explain": cmd_explain,
    "report": cmd_report,
}
