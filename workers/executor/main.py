"""``python -m workers.executor``: carry out failover decisions (DESIGN §8b).

Follows ``NS:decisions`` in group ``FAILOVER_EXECUTOR_GROUP`` and runs one action per
failover decision: a signed webhook (``FAILOVER_EXECUTOR_WEBHOOK_URL`` +
``FAILOVER_EXECUTOR_WEBHOOK_SECRET``) or a command (``FAILOVER_EXECUTOR_COMMAND``); see
:mod:`workers.executor.follower` for the fencing and what happens across crashes. Exactly
one action must be set (else exit 2). With ``FAILOVER_METRICS_PORT`` set, metrics are
served at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from schemas.errors import ConfigError, FailoverError
from streams.connection import connect
from streams.keys import Keys
from streams.lease import make_owner_id
from streams.ledger import ExecutorLedger
from workers.executor.command import CommandAction
from workers.executor.follower import Follower
from workers.executor.metrics import ExecutorMetrics
from workers.executor.outcome import worst_case_s
from workers.executor.webhook import WebhookAction
from workers.exposition import serve_settings
from workers.runtime import every, run
from workers.settings import ExecutorSettings, Settings

log = logging.getLogger("workers.executor")

LAG_SAMPLE_S = 1.0
HOLD_MARGIN_MS = 2000  # beyond the action's worst case: scheduling, the report's round trip


def build_action(ex: ExecutorSettings) -> WebhookAction | CommandAction:
    """The one action the settings name; ConfigError (exit 2) unless exactly one is set."""
    timeout_s, backoff_s = ex.timeout_ms / 1000, ex.backoff_ms / 1000
    if ex.webhook_url and ex.command:
        raise ConfigError(
            "FAILOVER_EXECUTOR_COMMAND: set either it or FAILOVER_EXECUTOR_WEBHOOK_URL, not both"
        )
    if ex.webhook_url:
        if not ex.webhook_secret:
            raise ConfigError(
                "FAILOVER_EXECUTOR_WEBHOOK_SECRET: is required with FAILOVER_EXECUTOR_WEBHOOK_URL"
                " (the receiver checks the signature)"
            )
        return WebhookAction(
            ex.webhook_url,
            ex.webhook_secret,
            attempts=ex.attempts,
            timeout_s=timeout_s,
            backoff_s=backoff_s,
        )
    if ex.command:
        return CommandAction(
            ex.command, attempts=ex.attempts, timeout_s=timeout_s, backoff_s=backoff_s
        )
    raise ConfigError(
        "FAILOVER_EXECUTOR_WEBHOOK_URL: is required: the action to run"
        " (or set FAILOVER_EXECUTOR_COMMAND)"
    )


def hold_ms(ex: ExecutorSettings) -> int:
    """How long a started decision belongs to its consumer: every attempt, every backoff."""
    worst = worst_case_s(ex.attempts, ex.timeout_ms / 1000, ex.backoff_ms / 1000)
    return int(worst * 1000) + HOLD_MARGIN_MS


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run one executor until ``stop`` is set."""
    ex = settings.executor
    action = build_action(ex)
    consumer = make_owner_id(settings.instance_id)
    keys = Keys(settings.namespace)
    redis = connect(settings.redis_url, client_name=f"executor:{consumer}")
    metrics = ExecutorMetrics(ex.group)
    follower = Follower(
        redis,
        keys,
        ex.group,
        consumer,
        action,
        hold_ms=hold_ms(ex),
        claim_idle_ms=ex.claim_idle_ms,
        metrics=metrics,
    )
    exporter = serve_settings(metrics.registry, settings)  # a taken port: exit 2 here
    log.info(
        "executor %s starting: group %s on %s, action %r, redis %s",
        consumer,
        ex.group,
        keys.decisions,
        action,
        settings.redacted_url,
    )
    ledger = ExecutorLedger(redis, keys, ex.group)

    async def sample_lag() -> None:
        try:
            metrics.lag(*await ledger.lag())
        except FailoverError as exc:  # a missed sample is only a stale gauge
            log.warning("executor %s: lag sample failed: %s", ex.group, exc)

    try:
        async with action, asyncio.TaskGroup() as tasks:
            if exporter is not None:
                tasks.create_task(every(LAG_SAMPLE_S, stop, sample_lag))
            await follower.run(stop)
    finally:
        if exporter is not None:
            exporter.close()
        with contextlib.suppress(Exception):
            await redis.aclose()


def main() -> None:
    """Process entry point: exit 0 on SIGTERM, 1 Redis unreachable, 2 bad settings."""
    run("executor", serve)
