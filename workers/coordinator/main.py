"""``python -m workers.coordinator``: one member of the coordinator fleet (DESIGN §7).

Settings → elector → leader pipeline while elected. Run two or more; one leads. The process
lifecycle (settings, logging, signals, exit codes, the shutdown timeout) is
:func:`workers.runtime.run`'s: on SIGTERM/SIGINT the coordinator stops reading, abandons or
finishes the batch in flight (a commit is one script, never half-applied), releases the
lease and exits 0; past ``FAILOVER_SHUTDOWN_TIMEOUT_MS`` the leader work is cut off (the
lease then simply expires). Redis outages (a full Redis answering OOM too) are ridden out:
the leader steps down and the process keeps campaigning. Before every election attempt it
reads Redis's ``maxmemory-policy``: under ``allkeys-*`` it does not campaign (one log line
per attempt, metric ``failover_eviction_unsafe``) unless ``FAILOVER_ALLOW_EVICTION=1``. An
unknown exception is a bug (exit 70, after handing the lease on). Bad settings exit 2. With
``FAILOVER_METRICS_PORT`` set, Prometheus metrics (is-leader, commits and their latency,
decisions, dead letters) are served at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from streams.connection import connect
from streams.keys import Keys
from streams.lease import make_owner_id
from streams.memory import eviction_refusal, evicts_any_key, maxmemory_policy
from workers.coordinator.collector import tune_collector
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import ElectorTiming, Leadership
from workers.coordinator.pipeline import LeaderPipeline
from workers.exposition import serve_settings
from workers.monitor.metrics import CoordinatorMetrics
from workers.runtime import current_membership, log_context, run
from workers.settings import Settings

log = logging.getLogger("workers.coordinator")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run one coordinator until ``stop`` is set; an unknown error propagates (a bug)."""
    tune_collector()
    timing = ElectorTiming.from_settings(settings)  # a bad combination is a ConfigError: exit 2
    member = current_membership()
    # One owner id per process: the lease, the consumer name and the heartbeat agree.
    owner = member.owner if member is not None else make_owner_id(settings.instance_id)
    keys = Keys(settings.namespace)
    metrics = CoordinatorMetrics(settings.instance_id)
    metrics.started(owner)
    log_context(owner=owner)

    def elected(term: Leadership) -> None:
        metrics.elected()
        log_context(epoch=term.epoch)
        if member is not None:
            member.see(leader=term.owner, epoch=term.epoch)

    def demoted(term: Leadership, _: str) -> None:
        metrics.demoted()
        log_context(epoch=None)
        if member is not None:
            member.see(leader=None, epoch=None)

    exporter = serve_settings(metrics.registry, settings)  # a taken port: exit 2 before anything
    redis = connect(settings.redis_target, client_name=f"coordinator:{owner}")

    async def may_lead() -> str | None:
        policy = await maxmemory_policy(redis)
        unsafe = evicts_any_key(policy)
        metrics.eviction(unsafe=unsafe)
        if not unsafe:
            return None
        if settings.allow_eviction:
            log.warning(
                "campaigning under Redis maxmemory-policy %s because FAILOVER_ALLOW_EVICTION=1:"
                " Redis may evict the state, the epoch or undelivered entries",
                policy,
            )
            return None
        return eviction_refusal(policy)

    elector = Elector(
        redis,
        keys,
        owner,
        timing,
        on_elected=elected,
        on_demoted=demoted,
        may_lead=may_lead,
    )

    async def lead(leadership: Leadership) -> None:
        on_config = member.see_config if member is not None else None
        await LeaderPipeline(
            redis, keys, settings, leadership, metrics=metrics, on_config=on_config
        ).run()

    log.info(
        "coordinator starting owner=%s namespace=%s regions=%s redis=%s",
        owner,
        settings.namespace,
        ",".join(settings.regions),
        settings.redacted_url,
    )
    runner = asyncio.create_task(elector.run(lead), name="elector")
    stopper = asyncio.create_task(stop.wait(), name="stop-requested")
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stopping owner=%s", owner)
            elector.stop()
        # The runtime cancels this (and so the elector) if it outlasts the shutdown timeout.
        await runner
        log.info("coordinator stopped owner=%s", owner)
    finally:
        stopper.cancel()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner
        if exporter is not None:
            exporter.close()
        with contextlib.suppress(Exception):
            await redis.aclose()


def main() -> None:
    """Process entry point (``python -m workers.coordinator``)."""
    run("coordinator", serve)


if __name__ == "__main__":
    main()
