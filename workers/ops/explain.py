"""``failoverctl explain``: why a decision was made, or why a region is not a target now.

A decision is explained from history: both input streams are replayed through the pure
policy (the leader's own step, configuration changes where they happened) until it makes
that decision again, and the policy is asked what it saw. A region is explained from the
state the leader last committed.
"""

from __future__ import annotations

import msgspec

from schemas.codec import decode_entry
from schemas.errors import ConfigError, DecodeError
from schemas.events import FailoverDecision, HealthEvent
from streams.decisions import DecisionsReader
from streams.replies import text
from workers.ops.context import EXIT_FAILED, EXIT_OK, Context, iso
from workers.ops.policyctl import first_config, read_state
from workers.ops.replay import bounds, leader_rules, merge, read_range, replay
from workers.policy.explain import Explanation, explain_decision, explain_region
from workers.policy.rules import Policy
from workers.policy.state import PolicyConfig


async def cmd_explain(ctx: Context) -> int:
    """Explain ``DECISION_ID`` from history, or ``--region R`` from the committed state."""
    a = ctx.args
    if (a.decision_id is None) == (a.region is None):
        raise ConfigError("give a DECISION_ID, or --region R (not both)")
    if a.region is not None:
        if a.region not in ctx.settings.regions:
            raise ConfigError(f"--region {a.region!r} is not one of FAILOVER_REGIONS")
        state = await read_state(ctx)
        if state is None:
            raise ConfigError(f"{ctx.keys.state} is empty: no leader has committed a state yet")
        policy = Policy(PolicyConfig.from_settings(ctx.settings), state)
        return _show(ctx, explain_region(policy, a.region))
    found = await _find(ctx, a.decision_id)
    if found is None:
        ctx.print(f"no failover decision {a.decision_id} on {ctx.keys.decisions}")
        return EXIT_FAILED
    entry_id, recorded = found
    state = await read_state(ctx)
    config = first_config(ctx, state)
    streams = await read_range(ctx.redis, ctx.keys, "-", entry_id, deadline_s=ctx.deadline_s)
    merged = merge(streams)
    start, end = bounds(merged, "-", entry_id)
    policy = Policy(config)
    rules = await leader_rules(ctx.redis, ctx.keys, ctx.settings, deadline_s=ctx.deadline_s)
    result = replay(
        merged, config, tick_ms=ctx.settings.tick_ms, start=start, end=end, rules=rules,
        policy=policy, until=recorded.decision_id,
    )  # fmt: skip
    ids = [d.decision.decision_id for d in result.decisions]
    if recorded.decision_id not in ids:
        ctx.print(
            f"decision {recorded.decision_id} ({recorded.from_region} -> {recorded.to_region},"
            f" {recorded.reason}, config v{recorded.config_version}) could not be reproduced"
            " from the input streams: entries before it were trimmed"
            " (FAILOVER_INPUT_RETENTION_MS) or the first configuration version is not kept"
        )
        return EXIT_FAILED
    at = ids.index(recorded.decision_id)
    previous = result.decisions[at - 1].decision if at else None
    wanted = {e.encode() for e in recorded.evidence}
    health: dict[str, HealthEvent] = {}
    for index, _, fields in merged:
        data = fields.get(b"data", b"")
        if index == 0 and any(w in data for w in wanted):
            try:
                event = decode_entry(fields, stream="health")
            except DecodeError:
                continue
            if isinstance(event, HealthEvent) and event.event_id in recorded.evidence:
                health[event.event_id] = event
    explanation = explain_decision(policy, result.decisions[at].decision, previous, health)
    return _show(
        ctx, explanation, f"{text(entry_id)} on {ctx.keys.decisions}, epoch {recorded.epoch}"
    )


async def _find(ctx: Context, decision_id: str) -> tuple[str, FailoverDecision] | None:
    reader = DecisionsReader(ctx.redis, ctx.keys)
    for entry_id, fields in await reader.read_all(None, deadline_s=ctx.deadline_s):
        try:
            entry = decode_entry(fields, stream="decisions")
        except DecodeError:
            continue
        if isinstance(entry, FailoverDecision) and entry.decision_id == decision_id:
            return text(entry_id), entry
    return None


def _show(ctx: Context, e: Explanation, where: str = "") -> int:
    if ctx.args.json:
        ctx.emit_json(msgspec.to_builtins(e))
        return EXIT_OK
    ctx.print(e.subject + (f"  ({where})" if where else ""))
    if e.decision is not None:
        ctx.print(f"decided   {iso(e.decision.decided_at)}")
    ctx.print(f"config    version {e.config_version}: "
              + " ".join(f"{k}={v}" for k, v in e.config.items()))  # fmt: skip
    if e.evidence:
        ctx.print("evidence")
        for ev in e.evidence:
            if isinstance(ev, HealthEvent):
                ctx.print(f"  {ev.event_id}  {ev.region} {ev.source} {ev.status}"
                          f" at {iso(ev.observed_at)}")  # fmt: skip
            else:
                ctx.print(f"  {ev}")
    ctx.print("rules")
    for rule in e.rules:
        ctx.print(f"  {'ok     ' if rule.passed else 'BLOCKS '} {rule.name:<9} {rule.detail}")
    for region, rows in e.observers.items():
        ctx.print(f"observers of {region}" + ("" if rows else ": none"))
        for source, v in rows:
            ctx.print(f"  {source:<24} {v.status:<9} run={v.run:<4}"
                      f" {'fresh' if v.fresh else 'expired'}  last {iso(v.last_at)}")  # fmt: skip
    return EXIT_OK
