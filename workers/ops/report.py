"""``failoverctl report --html FILE [--from ID] [--to ID]``: a picture of what happened."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from schemas.errors import ConfigError
from streams.connection import Client
from streams.keys import Keys
from workers.ops.context import EXIT_OK, Context
from workers.ops.history_report import gather
from workers.ops.replay import leader_rules, parse_id
from workers.ops.report_html import render
from workers.policy.state import PolicyConfig
from workers.settings import Settings


async def write_report(
    redis: Client,
    settings: Settings,
    path: Path,
    *,
    first: str = "-",
    last: str = "+",
    deadline_s: float = 5.0,
) -> Path:
    """Render the history between ``first`` and ``last`` to ``path`` (atomically)."""
    keys = Keys(settings.namespace)
    report = await gather(
        redis,
        keys,
        PolicyConfig.from_settings(settings),
        first=first,
        last=last,
        tick_ms=settings.tick_ms,
        deadline_s=deadline_s,
        rules=await leader_rules(redis, keys, settings, deadline_s=deadline_s),
    )
    save(render(report), path)
    return path


def save(page: str, path: Path) -> None:
    """Write ``page`` to ``path`` whole: beside it first, then renamed over it."""
    directory = path.resolve().parent
    if not directory.is_dir():
        raise ConfigError(f"--html: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # a report is for sharing, unlike mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(page)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def cmd_report(ctx: Context) -> int:
    """Write the HTML report of the recorded history and print its path."""
    a = ctx.args
    first = parse_id(a.from_id, what="--from")
    last = parse_id(a.to_id, what="--to") if a.to_id else "+"
    path = await write_report(
        ctx.redis, ctx.settings, Path(a.html), first=first, last=last, deadline_s=ctx.deadline_s
    )
    ctx.print(f"report written to {path}")
    return EXIT_OK
