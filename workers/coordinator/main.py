"""``python -m workers.coordinator``: one member of the coordinator fleet (DESIGN §7).

Settings → elector → leader pipeline while elected. Run two or more; one leads. Signals
are handled here only: SIGTERM/SIGINT stop reading, abandon or finish the batch in flight
(a commit is one script, never half-applied), release the lease and exit 0 within
``FAILOVER_SHUTDOWN_TIMEOUT_MS``; past that the leader work is cut off (the lease then
simply expires) and the process still exits 0, with a warning. Redis outages are ridden
out: the leader steps down and the process keeps campaigning. An unknown exception is a
bug: it is logged and the process exits 1 (after handing the lease on). Bad settings exit 2.
With ``FAILOVER_METRICS_PORT`` set, Prometheus metrics (is-leader, commits and their
latency, decisions, dead letters) are served at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from schemas.errors import ConfigError
from streams.connection import connect
from streams.keys import Keys
from streams.lease import make_owner_id
from workers.coordinator.elector import Elector, ElectorTiming, Leadership
from workers.coordinator.pipeline import LeaderPipeline
from workers.monitor.metrics import CoordinatorMetrics
from workers.monitor.metrics import serve as serve_metrics
from workers.settings import Settings, load_settings

log = logging.getLogger("workers.coordinator")

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_CONFIG = 2


async def serve(settings: Settings) -> int:
    """Run one coordinator until SIGTERM/SIGINT; return the process exit code."""
    owner = make_owner_id(settings.instance_id)
    keys = Keys(settings.namespace)
    redis = connect(settings.redis_url, client_name=f"coordinator:{owner}")
    metrics = CoordinatorMetrics(settings.instance_id)
    elector = Elector(
        redis,
        keys,
        owner,
        ElectorTiming.from_settings(settings),
        on_elected=lambda _: metrics.elected(),
        on_demoted=lambda _, __: metrics.demoted(),
    )

    async def lead(leadership: Leadership) -> None:
        await LeaderPipeline(redis, keys, settings, leadership, metrics=metrics).run()

    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if not stop_requested.is_set():
            log.info("received %s: stopping owner=%s", sig.name, owner)
        stop_requested.set()
        elector.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "coordinator starting owner=%s namespace=%s regions=%s redis=%s",
        owner,
        settings.namespace,
        ",".join(settings.regions),
        settings.redacted_url,
    )
    exporter = (
        serve_metrics(metrics.registry, settings.metrics_port) if settings.metrics_port else None
    )
    runner = asyncio.create_task(elector.run(lead), name="elector")
    stopper = asyncio.create_task(stop_requested.wait(), name="stop-requested")
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not runner.done():
            timeout = settings.shutdown_timeout_ms / 1000
            done, _ = await asyncio.wait({runner}, timeout=timeout)
            if not done:
                log.warning(
                    "shutdown took longer than %sms: abandoning leader work; "
                    "the lease will expire on its own",
                    settings.shutdown_timeout_ms,
                )
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
                return EXIT_OK
        try:
            runner.result()
        except Exception:
            log.exception("coordinator crashed owner=%s", owner)
            return EXIT_CRASH
        log.info("coordinator stopped owner=%s", owner)
        return EXIT_OK
    finally:
        stopper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if exporter is not None:
            exporter.close()
        with contextlib.suppress(Exception):
            await redis.aclose()


def main() -> None:
    """Process entry point: configure logging, load settings, serve, exit with its code."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = load_settings(role="coordinator")
        ElectorTiming.from_settings(settings)  # validated here so a bad value exits 2
    except ConfigError as exc:
        print(f"coordinator: invalid configuration:\n{exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
