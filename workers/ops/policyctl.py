"""``failoverctl`` commands that manage the policy: observers, pause / resume, configuration,
and waiting until the leader has applied an operator event (``--wait``).

Every change goes through ``NS:events`` like any producer's event, so the leader applies it
in stream order and ``failoverctl replay`` sees it where it happened. ``--wait`` reads
``NS:state`` (what the leader committed) until the event's outcome shows there.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import msgspec

from schemas.codec import decode_entry, encode_entry
from schemas.errors import ConfigError, DecodeError
from schemas.events import (
    ConfigChanged,
    ForgetObserver,
    ManualFailover,
    OperatorEvent,
    Pause,
    Resume,
)
from streams.producer import append
from streams.state import read_policy_state
from workers.ops.context import EXIT_FAILED, EXIT_OK, Context, iso
from workers.policy.state import PolicyConfig, PolicyState, config_differences, decode_state
from workers.policy.views import observer_rows
from workers.settings.table import BY_ENV

_POLL_S = 0.05


def actor(ctx: Context) -> str:
    """Who this command acts as: ``--actor`` or ``failoverctl@<host>``."""
    given: str | None = getattr(ctx.args, "actor", None)
    return given or f"failoverctl@{socket.gethostname()}"


async def read_state(ctx: Context) -> PolicyState | None:
    """The committed policy state, or None when no leader ever committed one."""
    raw = await ctx.io(lambda: read_policy_state(ctx.redis, ctx.keys), "read state")
    if raw is None:
        return None
    try:
        return decode_state(raw)
    except DecodeError as exc:
        raise ConfigError(f"NS:state holds no policy state this version reads: {exc}") from None


async def _state_or_fail(ctx: Context) -> PolicyState:
    state = await read_state(ctx)
    if state is None:
        raise ConfigError(f"{ctx.keys.state} is empty: no leader has committed a state yet")
    return state


def first_config(ctx: Context, state: PolicyState | None) -> PolicyConfig:
    """The first configuration version (what a replay from the start begins with): kept in
    the state's history, else this shell's environment."""
    config = PolicyConfig.from_settings(ctx.settings)
    if state is not None and state.config_history and state.config_history[0].version == 1:
        config = config.changed(state.config_history[0].changes)
    return config


def _in_force(ctx: Context, state: PolicyState) -> PolicyConfig:
    env = PolicyConfig.from_settings(ctx.settings)
    return env if state.config is None else state.config


# -- observers ------------------------------------------------------------------------


async def cmd_observers(ctx: Context) -> int:
    """Every observer: last seen, and per region its verdict, run and freshness."""
    state = await _state_or_fail(ctx)
    config = _in_force(ctx, state)
    rows = observer_rows(state, config)
    if ctx.args.json:
        ctx.emit_json(msgspec.to_builtins(rows))
        return EXIT_OK
    if not rows:
        ctx.print("no observers")
    for row in rows:
        age = "" if row.age_s is None else f" ({row.age_s:.0f}s ago)"
        ctx.print(
            f"{row.source}  last seen {iso(row.last_seen)}{age}  expires {iso(row.expires_at)}"
        )
        for v in row.runs:
            freshness = "fresh" if v.fresh else "expired"
            ctx.print(f"  {v.region:<12} {v.status:<9} run={v.run:<4} {freshness}"
                      f"  last {iso(v.last_at)}")  # fmt: skip
    ctx.print(f"{len(rows)} observers (window {config.window_ms}ms decides fresh/expired)")
    return EXIT_OK


async def cmd_observers_forget(ctx: Context) -> int:
    """Remove one observer's runs through a ``forget_observer`` event."""
    event = ForgetObserver(
        event_id=uuid.uuid4().hex, actor=actor(ctx), at=time.time(), source=ctx.args.name
    )
    return await emit_control(ctx, event)


# -- pause / resume -------------------------------------------------------------------


async def cmd_pause(ctx: Context) -> int:
    """Stop automatic decisions until ``resume`` (manual failovers still apply)."""
    event = Pause(
        event_id=uuid.uuid4().hex, actor=actor(ctx), at=time.time(), detail=ctx.args.reason
    )
    return await emit_control(ctx, event)


async def cmd_resume(ctx: Context) -> int:
    """Allow automatic decisions again."""
    event = Resume(
        event_id=uuid.uuid4().hex, actor=actor(ctx), at=time.time(), detail=ctx.args.reason
    )
    return await emit_control(ctx, event)


# -- configuration --------------------------------------------------------------------


def _row_for(name: str) -> tuple[str, Any]:
    """The policy setting ``name`` (``threshold``, ``THRESHOLD`` or ``FAILOVER_THRESHOLD``)."""
    key = name.upper().removeprefix("FAILOVER_")
    row = BY_ENV.get(key)
    field = key.lower()
    if row is None or field not in _TUNABLES:
        raise ConfigError(f"{name!r} is not a policy setting; one of {', '.join(_TUNABLES)}")
    return field, row


_TUNABLES = (
    "threshold", "quorum", "window_ms", "stale_after_ms", "recovery_threshold", "cooldown_ms",
    "panic_fraction", "panic_hold_ms", "manual_max_age_ms", "observer_expiry_ms",
)  # fmt: skip


def parse_assignments(items: list[str]) -> dict[str, int | float]:
    """``K=V`` arguments as policy settings, each checked against its row's bounds."""
    out: dict[str, int | float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{item!r}: expected KEY=VALUE")
        field, row = _row_for(name.strip())
        text = text.strip()
        try:
            value: int | float = float(text) if row.kind == "fraction" else int(text)
        except ValueError:
            raise ConfigError(f"{row.name}: {text!r} is not a number") from None
        lo, hi = (0, 1) if row.kind == "fraction" else (row.minimum, row.maximum)
        if not lo <= value <= hi:
            raise ConfigError(f"{row.name}: {value} is outside {lo}..{hi}")
        out[field] = value
    return out


async def cmd_config_show(ctx: Context) -> int:
    """The configuration in force, its version, and how this shell's environment differs."""
    state = await _state_or_fail(ctx)
    config = _in_force(ctx, state)
    drift = config_differences(PolicyConfig.from_settings(ctx.settings), config)
    if ctx.args.json:
        ctx.emit_json({"version": state.config_version, "config": config.tunables(),
                       "environment_differs": {k: {"environment": a, "in_force": b}
                                               for k, (a, b) in drift.items()}})  # fmt: skip
        return EXIT_OK
    ctx.print(f"configuration version {state.config_version}")
    for k, v in config.tunables().items():
        note = f"   (this environment: {drift[k][0]})" if k in drift else ""
        ctx.print(f"  {k:<20} {v}{note}")
    return EXIT_OK


async def cmd_config_history(ctx: Context) -> int:
    """Every version kept in the state: who changed what, when."""
    state = await _state_or_fail(ctx)
    if ctx.args.json:
        ctx.emit_json(msgspec.to_builtins(state.config_history))
        return EXIT_OK
    for c in state.config_history:
        when = "at first start" if c.at is None else iso(c.at)
        changes = " ".join(f"{k}={v}" for k, v in c.changes.items())
        ctx.print(
            f"v{c.version}  {when}  by {c.actor}  {changes}"
            + (f"  ({c.detail})" if c.detail else "")
        )
    return EXIT_OK


async def cmd_config_diff(ctx: Context) -> int:
    """Differences between two versions (default: the first kept and the one in force)."""
    state = await _state_or_fail(ctx)
    versions = {c.version: c for c in state.config_history}
    first = min(versions) if versions else 1
    a, b = ctx.args.a or first, ctx.args.b or state.config_version
    for v in (a, b):
        if v not in versions:
            raise ConfigError(f"version {v} is not kept in the state (kept: {sorted(versions)})")
    config: dict[str, int | float] = {}
    at: dict[int, dict[str, int | float]] = {}
    for v in sorted(versions):
        config = {**config, **versions[v].changes}
        at[v] = dict(config)
    diff = {k: (at[a].get(k), at[b].get(k)) for k in at[b] if at[a].get(k) != at[b].get(k)}
    if ctx.args.json:
        ctx.emit_json({k: {f"v{a}": x, f"v{b}": y} for k, (x, y) in diff.items()})
        return EXIT_OK
    if not diff:
        ctx.print(f"v{a} and v{b} are the same")
    for k, (x, y) in diff.items():
        ctx.print(f"  {k:<20} v{a}={x}  v{b}={y}")
    return EXIT_OK


async def cmd_config_set(ctx: Context) -> int:
    """Validate and emit a ``config_changed`` event with the next version."""
    changes = parse_assignments(ctx.args.assignments)
    state = await _state_or_fail(ctx)
    config = _in_force(ctx, state)
    config.changed(changes)  # the leader's own check, before anything is written
    event = ConfigChanged(
        event_id=uuid.uuid4().hex,
        actor=actor(ctx),
        at=time.time(),
        detail=ctx.args.reason,
        config=changes,
        version=state.config_version + 1,
    )
    return await emit_control(ctx, event)


# -- emitting and waiting -------------------------------------------------------------


async def emit_control(ctx: Context, event: OperatorEvent) -> int:
    """Append ``event`` to ``NS:events``; with ``--wait``, report what the leader did."""
    fields = encode_entry(event)
    decode_entry(fields, stream="events")  # what we write is never a dead letter
    entry_id = await ctx.io(lambda: append(ctx.redis, ctx.keys.events, fields), "emit")
    if not getattr(ctx.args, "wait", False):
        if ctx.args.json:
            ctx.emit_json({"id": entry_id, "entry": msgspec.to_builtins(event)})
        else:
            ctx.print(f"{entry_id} {ctx.keys.events} {fields[b'data'].decode()}")
        return EXIT_OK
    return await wait_for(ctx, event, entry_id)


def outcome(state: PolicyState, event: OperatorEvent) -> tuple[bool, str] | None:
    """``(applied, what)`` once the state shows what the leader did with ``event``."""
    for refusal in state.refused:
        if refusal.event_id == event.event_id and refusal.actor == event.actor:
            return False, f"refused: {refusal.reason}"
    last = state.last_decision
    if isinstance(event, ManualFailover):
        if last is not None and last.reason == "manual" and last.evidence == [event.event_id]:
            return True, f"decision {last.decision_id}: {last.from_region} -> {last.to_region}"
    elif isinstance(event, ConfigChanged):
        if any(c.event_id == event.event_id for c in state.config_history):
            return True, f"configuration version {event.version} in force"
    elif isinstance(event, Pause) and state.paused and state.paused.event_id == event.event_id:
        return True, "paused"
    if f"{event.actor}\x00{event.event_id}" in state.recent_events:
        return True, "applied"
    return None


async def wait_for(ctx: Context, event: OperatorEvent, entry_id: str) -> int:
    """Poll ``NS:state`` until the leader applied ``event``: 0 applied, 1 refused or timeout."""
    deadline = time.monotonic() + ctx.args.wait_timeout
    result = None
    while result is None and time.monotonic() < deadline:
        state = await read_state(ctx)
        result = None if state is None else outcome(state, event)
        if result is None:
            await asyncio.sleep(_POLL_S)
    if result is None:
        what = (
            f"timed out after {ctx.args.wait_timeout}s: {entry_id} is on {ctx.keys.events}"
            " but no leader has applied it yet (is a coordinator leading?)"
        )
        ok = False
    else:
        ok, what = result
    if ctx.args.json:
        ctx.emit_json({"id": entry_id, "event_id": event.event_id, "applied": ok, "outcome": what})
    else:
        ctx.print(f"{entry_id} {what}")
    return EXIT_OK if ok else EXIT_FAILED
