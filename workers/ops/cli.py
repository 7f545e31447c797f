"""``failoverctl``: see the coordinator, feed it, inspect its decisions and dead letters, try it.

Exit codes: 0 success; 1 a failed check or an operation that did not happen (Redis
unreachable, an id not found, an unhealthy endpoint); 2 bad usage or configuration. Errors
are one line on stderr (URLs with the password redacted), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from schemas.errors import ConfigError, RedisRefused, RedisUnavailable
from streams.address import redact, validate_url
from streams.cancel import cancel_and_wait
from streams.cluster import check_namespace
from streams.errors import translated
from workers.exposition import version
from workers.ops.commands import COMMANDS, EVENT_TYPES
from workers.ops.context import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Context
from workers.runtime import configure_logging, say, unavailable_line
from workers.settings import Settings, load_settings, read_setting

PROG = "failoverctl"

# -- parser ---------------------------------------------------------------------------


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value

    return parse


_positive = _at_least(1)
_non_negative = _at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} must be in (0, 3600]")
    return value


def _waits(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--wait", action="store_true", help="return once the leader applied it (exit 1: refused)"
    )
    cmd.add_argument(
        "--wait-timeout",
        dest="wait_timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="with --wait: give up after this long (10)",
    )


def _global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command accepts, before or after its name.

    The top-level parser holds the defaults; each command's parser repeats the options with
    ``SUPPRESS`` so that a value given after the command wins and an absent one does not
    reset a value given before it.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    g = p.add_argument_group("global options (before or after the command)")
    g.add_argument(
        "--redis-url", metavar="URL", default=default(None), help="override FAILOVER_REDIS_URL"
    )
    g.add_argument(
        "--namespace", metavar="NS", default=default(None), help="override FAILOVER_NAMESPACE"
    )
    g.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        default=default(2.0),
        help="deadline of each Redis call, retries included, in seconds (default 2)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log every Redis retry and other details on stderr",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the README's CLI reference)."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Operate the regional failover coordinator (settings from FAILOVER_*).",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {version()}")
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text
        )
        _global_options(parser, defaults=False)
        return parser

    def data_cmd(name: str, help_text: str, parent: Any = sub) -> argparse.ArgumentParser:
        parser = cmd(name, help_text, parent)
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        return parser

    data_cmd("status", "leader, regions, lag, dead letters, lag status")

    emit = cmd("emit", "append a health or failover event")
    emit_sub = emit.add_subparsers(dest="what", required=True, metavar="KIND")
    health = data_cmd("health", "a health observation", emit_sub)
    health.add_argument("--region", required=True, help="the region observed")
    health.add_argument(
        "--status",
        required=True,
        choices=["healthy", "degraded", "unhealthy"],
        help="the verdict (only unhealthy counts as failing)",
    )
    health.add_argument(
        "--source",
        required=True,
        help="the observer you speak for: quorum counts distinct sources, so a made-up name"
        " would be a new observer",
    )
    health.add_argument("--event-id", help="unique per source (default: random)")
    health.add_argument(
        "--observed-at", type=float, metavar="T", help="unix seconds (default: now)"
    )
    health.add_argument("--latency-ms", type=float, metavar="N", help="probe latency, ms")
    health.add_argument("--detail", help="free text shown by status")
    event = data_cmd("event", "a failover event", emit_sub)
    event.add_argument("type", choices=list(EVENT_TYPES), help="the event type")
    event.add_argument("--region", required=True, help="region the event is about")
    event.add_argument("--target", help="manual_failover: the region to move to")
    event.add_argument("--actor", help="who (default failoverctl@<host>)")
    event.add_argument("--event-id", help="unique per actor (default: random)")
    event.add_argument("--at", type=float, metavar="T", help="unix seconds (default: now)")
    event.add_argument("--detail", help="free text (why)")
    event.add_argument("--decision-id", help="the decision an executor reports on")
    _waits(event)

    decisions = data_cmd("decisions", "print (and follow) the decisions stream")
    decisions.add_argument("--since", metavar="ID", help="only entries after this id")
    decisions.add_argument("--last", type=_positive, metavar="N", help="only the last N")
    decisions.add_argument("--follow", "-f", action="store_true", help="wait for new ones")

    dlq = cmd("dlq", "dead letters: list, replay, drop")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = data_cmd("list", "list dead letters", dlq_sub)
    dlq_list.add_argument(
        "--count", type=_positive, default=1000, metavar="N", help="at most N (default 1000)"
    )
    dlq_replay = data_cmd("replay", "put dead letters back on their stream", dlq_sub)
    dlq_replay.add_argument("ids", nargs="*", metavar="ID", help="dead-letter entry ids")
    dlq_replay.add_argument("--all", action="store_true", help="every dead letter")
    dlq_drop = data_cmd("drop", "delete dead letters", dlq_sub)
    dlq_drop.add_argument("ids", nargs="+", metavar="ID", help="dead-letter entry ids")

    rp = data_cmd("replay", "run the policy over recorded history (writes nothing)")
    rp.add_argument(
        "--from", dest="from_id", required=True, metavar="ID",
        help="first entry id to replay (- for the start of history)",
    )  # fmt: skip
    rp.add_argument("--to", dest="to_id", metavar="ID", help="last entry id (default: the end)")
    for name in ("threshold", "quorum", "recovery-threshold"):
        rp.add_argument(f"--{name}", type=_positive, metavar="N", help="override the setting")
    for name in ("window-ms", "stale-after-ms"):
        rp.add_argument(f"--{name}", type=_positive, metavar="MS", help="override the setting")
    rp.add_argument("--cooldown-ms", type=_non_negative, metavar="MS", help="override the setting")
    rp.add_argument(
        "--tick-ms", type=_positive, metavar="MS", help="simulated tick (FAILOVER_TICK_MS)"
    )
    rp.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a policy setting over every configuration version (what-if)",
    )

    check = data_cmd("check", "probe FAILOVER_PROBE_TARGETS once; exit 1 if any is unhealthy")
    check.add_argument(
        "--timeout-ms", type=_positive, metavar="MS", help="override FAILOVER_PROBE_TIMEOUT_MS"
    )

    data_cmd("members", "the fleet: every process's heartbeat, and who is missing (exit 1)")
    step = cmd("step-down", "make the leader hand over now (planned maintenance)")
    step.add_argument(
        "--wait",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="wait this long for a new leader, s (10)",
    )
    obs = cmd("observers", "list observers, or forget one")
    obs_sub = obs.add_subparsers(dest="observers_command", metavar="ACTION")
    obs.add_argument("--json", action="store_true", help="machine-readable output")
    data_cmd(
        "list", "every observer: last seen, verdict and run per region, fresh/expired", obs_sub
    )
    forget = data_cmd("forget", "drop an observer's runs (a forget_observer event)", obs_sub)
    forget.add_argument("name", help="the observer (health event source)")
    forget.add_argument("--actor", help="who (default failoverctl@<host>)")
    _waits(forget)
    for name, text in (("pause", "stop automatic decisions (manual ones still apply)"),
                       ("resume", "allow automatic decisions again")):  # fmt: skip
        toggle = data_cmd(name, text)
        toggle.add_argument("--reason", help="why (shown by status)")
        toggle.add_argument("--actor", help="who (default failoverctl@<host>)")
        _waits(toggle)
    cfg = cmd("config", "the policy configuration in force (in NS:state)")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    data_cmd("show", "the version in force, and how this environment differs", cfg_sub)
    cfg_set = data_cmd("set", "change settings: a validated config_changed event", cfg_sub)
    cfg_set.add_argument(
        "assignments", nargs="+", metavar="KEY=VALUE", help="policy settings to change"
    )
    cfg_set.add_argument("--reason", help="why (kept in the history)")
    cfg_set.add_argument("--actor", help="who (default failoverctl@<host>)")
    _waits(cfg_set)
    data_cmd("history", "every version kept: who changed what, when", cfg_sub)
    diff = data_cmd("diff", "settings that differ between two versions", cfg_sub)
    diff.add_argument("a", nargs="?", type=_positive, help="version (default: the first kept)")
    diff.add_argument("b", nargs="?", type=_positive, help="version (default: in force)")

    explain = data_cmd("explain", "why a decision was made, or why a region is not a target")
    explain.add_argument(
        "decision_id", nargs="?", metavar="DECISION_ID", help="the decision to explain"
    )
    explain.add_argument("--region", help="why this region is (not) an eligible target now")

    report = cmd("report", "one self-contained HTML page of what happened (no network needed)")
    report.add_argument(
        "--html", required=True, metavar="FILE", help="write the page here (replaced whole)"
    )
    report.add_argument(
        "--from", dest="from_id", default="-", metavar="ID",
        help="first entry id of the range (default: the start of history)",
    )  # fmt: skip
    report.add_argument("--to", dest="to_id", metavar="ID", help="last entry id (default: now)")

    demo = cmd("demo", "run a private coordinator fleet through an outage")
    demo.add_argument("--seconds", type=_positive, default=30, metavar="N", help="how long (30)")
    return p


# The commands that use FAILOVER_REGIONS; the others (dlq, decisions, check) run without it.
_NEEDS_REGIONS = {"status", "emit", "replay", "report", "observers", "config", "explain"}


def _settings(args: argparse.Namespace) -> Settings:
    needs = ("REGIONS",) if args.command in _NEEDS_REGIONS else ()
    settings = load_settings(role="operator", require=needs)
    changes: dict[str, str] = {}
    if args.redis_url:
        validate_url(args.redis_url)
        changes["redis_url"] = args.redis_url
    if args.namespace:
        changes["namespace"] = args.namespace
    return msgspec.structs.replace(settings, **changes) if changes else settings


# Commands that never talk to Redis.
_OFFLINE = frozenset({"check"})


async def _command(name: str, ctx: Context) -> int:
    with translated():
        if name not in _OFFLINE:
            # On a Redis Cluster an untagged namespace is a bad setting (exit 2).
            namespace = ctx.settings.namespace
            await ctx.io(lambda: check_namespace(ctx.redis, namespace), "namespace check")
        return await COMMANDS[name](ctx)


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    sub = {
        "dlq": getattr(args, "dlq_command", None),
        "config": getattr(args, "config_command", None),
        "observers": getattr(args, "observers_command", None) or "list",
    }
    name = args.command + (f" {sub[args.command]}" if args.command in sub else "")
    ctx = Context(settings, args, out)
    command = asyncio.create_task(_command(name, ctx), name=name)
    stopper: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        # cancel_and_wait cancels again until the command has noticed (a cancel can be
        # lost inside redis-py, see streams.cancel).
        nonlocal stopper
        if stopper is None:
            stopper = loop.create_task(cancel_and_wait(command, grace_s=0.1))

    # Installed explicitly (not left to asyncio.run's SIGINT handling) so Ctrl-C and SIGTERM
    # work even when the shell started us with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        return await command
    except asyncio.CancelledError:
        if stopper is None:
            raise
        # Ctrl-C is how `decisions --follow` ends: a normal exit.
        return EXIT_OK if getattr(args, "follow", False) else 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if stopper is not None:
            await stopper
        await ctx.close()


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Console entry point; returns the exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    # The processes' log format; the level is the CLI's own (-v), its output is the point.
    try:
        log_format = read_setting("LOG_FORMAT")
    except ConfigError as exc:
        say(PROG, str(exc))
        return EXIT_USAGE
    configure_logging(logging.DEBUG if args.verbose else logging.ERROR, log_format)
    if args.command == "demo":
        from workers.ops.demo import run_demo  # noqa: PLC0415 - only the demo needs it

        return run_demo(args.seconds, out=out)
    url = "<unknown>"
    try:
        settings = _settings(args)
        url = settings.redacted_url
        return asyncio.run(_run(args, settings, out))
    except ConfigError as exc:
        say(PROG, str(exc).splitlines())
        return EXIT_USAGE
    except RedisUnavailable as exc:
        say(PROG, unavailable_line(exc, url))
        return EXIT_FAILED
    except RedisRefused as exc:
        say(PROG, f"Redis at {url} answered: {redact(str(exc))}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "follow", False) else 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's final
        # flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
