"""``failoverctl members`` (the fleet, patronictl-list style) and ``failoverctl step-down``.

``members`` lists every process that sent a heartbeat in the last day: alive ones (their
``NS:members:<owner>`` hash is there) and missing ones (it expired without a goodbye: the
process died, hangs or cannot reach Redis). ``step-down`` asks the current leader to hand
over at once, through the same path as SIGTERM (release, followers wake on the release
message), for planned maintenance of a coordinator host; it waits until another owner
holds the lease.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from streams.lease import read_lease
from streams.members import Member, list_members
from streams.notifications import publish_step_down
from workers.ops.context import EXIT_FAILED, EXIT_OK, Context, iso


def _row(member: Member, leader: str, now: float) -> dict[str, Any]:
    beat = member.heartbeat
    out: dict[str, Any] = msgspec.to_builtins(beat)
    out["state"] = "alive" if member.alive else "missing"
    out["is_leader"] = beat.owner == leader
    out["uptime_s"] = round(max(0.0, beat.at - beat.started_at), 3)
    out["last_seen_s_ago"] = round(max(0.0, now - member.last_seen_ms / 1000), 3)
    return out


async def cmd_members(ctx: Context) -> int:
    """The fleet: role, instance, owner, host, pid, version, uptime, leader seen, epoch,
    config version, and who is missing. Exit 1 when any process is missing."""
    members: list[Member] = await ctx.io(lambda: list_members(ctx.redis, ctx.keys), "members")
    lease = await ctx.io(lambda: read_lease(ctx.redis, ctx.keys), "read lease")
    now = time.time()
    rows = [_row(m, lease.owner or "", now) for m in members]
    missing = [r for r in rows if r["state"] == "missing"]
    if ctx.args.json:
        ctx.emit_json(
            {
                "leader": lease.owner,
                "epoch": lease.epoch,
                "quarantine_ms": lease.quarantine_ms,
                "held_decisions": lease.held_decisions,
                "members": rows,
            }
        )
        return EXIT_FAILED if missing else EXIT_OK
    ctx.print(f"leader: {lease.owner or '(none)'}  epoch: {lease.epoch}")
    if lease.quarantine_ms is not None:
        ctx.print(f"quarantine: the Redis primary changed; no acquire for {lease.quarantine_ms}ms")
    if lease.held_decisions:
        ctx.print(f"held decisions (waiting for FAILOVER_MIN_REPLICAS): {lease.held_decisions}")
    if not rows:
        ctx.print("no process has sent a heartbeat (none running, or another namespace)")
        return EXIT_OK
    header = ("ROLE", "INSTANCE", "OWNER", "HOST", "PID", "VERSION", "UPTIME", "STATE",
              "SEES LEADER", "EPOCH", "CONFIG")  # fmt: skip
    table = [header] + [
        (
            r["role"] + (" *" if r["is_leader"] else ""),
            r["instance"],
            r["owner"],
            r["host"],
            str(r["pid"]),
            r["version"],
            _duration(r["uptime_s"]),
            "alive" if r["state"] == "alive" else f"MISSING {_duration(r['last_seen_s_ago'])}",
            r["leader"] or "-",
            str(r["epoch"]),
            r["config_version"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        ctx.print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    ctx.print(f"{len(rows) - len(missing)} alive, {len(missing)} missing; * = holds the lease")
    for r in rows:
        if r.get("config_drift"):
            ctx.print(f"{r['owner']}: environment differs from the config in force: "
                      f"{r['config_drift']}")  # fmt: skip
    return EXIT_FAILED if missing else EXIT_OK


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


async def cmd_step_down(ctx: Context) -> int:
    """Ask the leader to hand over now; wait (``--wait`` s) until another owner leads."""
    lease = await ctx.io(lambda: read_lease(ctx.redis, ctx.keys), "read lease")
    if lease.owner is None:
        ctx.print("no leader holds the lease: nothing to step down")
        return EXIT_FAILED
    old, old_epoch = lease.owner, lease.epoch
    heard = await ctx.io(lambda: publish_step_down(ctx.redis, ctx.keys, old), "step down")
    if not heard:
        ctx.print(f"leader {old} is not listening (an old version, or hung): not stepped down")
        return EXIT_FAILED
    start = time.monotonic()
    deadline = start + ctx.args.wait
    while time.monotonic() < deadline:
        lease = await ctx.io(lambda: read_lease(ctx.redis, ctx.keys), "read lease")
        if lease.owner is not None and lease.owner != old:
            took = time.monotonic() - start
            ctx.print(
                f"{old} (epoch {old_epoch}) stepped down; {lease.owner} leads under epoch"
                f" {lease.epoch} after {took:.2f}s ({iso(time.time())})"
            )
            return EXIT_OK
        await asyncio.sleep(0.02)
    ctx.print(
        f"asked {old} to step down, but no other coordinator took the lease within"
        f" {ctx.args.wait:g}s (is there a follower?)"
    )
    return EXIT_FAILED
