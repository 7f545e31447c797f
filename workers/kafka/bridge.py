"""Kafka -> Redis ingestion (DESIGN §9): ``python -m workers.bridge``.

A :class:`~streams.kafka_source.KafkaSource` reads the health and failover
events topics in batches; one Redis writer appends each record's value *unchanged* as field
``data`` to ``NS:health`` / ``NS:events``, all the batches it holds in one atomic script
call (``streams/lua/append.lua``), one write at a time so each partition's order is kept.
Invalid payloads pass through too: the leader dead-letters them with a reason, so nothing is
dropped at the edge.

At least once: the writer acks a batch to the source only after the Redis write that holds
it succeeded, and only acked offsets are committed. A Redis outage is retried with the
shared policy, again and again, never skipped; meanwhile the source blocks, its buffers fill
and it pauses fetching. A crash re-delivers whatever was not committed, so Redis may receive
duplicates: the policy ignores a health event it has already applied.

SIGTERM: stop fetching, give the writer half the shutdown timeout to finish what it holds,
then stop the source, which commits the acked offsets; records still unwritten (Redis down)
are not committed and go to the next bridge.
"""

from __future__ import annotations

import asyncio
import logging
import time

from schemas.codec import DATA_FIELD
from schemas.errors import ConfigError, FailoverError, RedisUnavailable
from streams.connection import Client, connect, ping
from streams.kafka import LIBRARY_LOGGERS, ensure_topics, security_of
from streams.kafka_source import KafkaSource
from streams.keys import Keys
from streams.producer import append_values
from streams.retry import call
from workers.exposition import serve_settings
from workers.kafka.metrics import BridgeMetrics
from workers.runtime import exit_now, redis_outage, run
from workers.settings import Settings

log = logging.getLogger(__name__)

WRITE_DEADLINE_S = 10.0
"""One retry round of a Redis write; after it the writer logs and starts another round."""
LAG_SAMPLE_S = 1.0


class RedisAppender:
    """Appends the source's batches to their Redis streams, then acks them to the source."""

    def __init__(
        self, redis: Client, source: KafkaSource, metrics: BridgeMetrics | None = None
    ) -> None:
        self.redis = redis
        self.source = source
        self.metrics = metrics
        self.written = 0

    async def run(self) -> None:
        """Write batches forever; cancel to stop (a batch not written is never acked)."""
        while True:
            batches = await self.source.next_batch()
            routes: dict[str, list[bytes]] = {}
            for batch in batches:  # in arrival order, so per partition in Kafka order
                routes.setdefault(batch.route, []).extend(batch.values)
            count = sum(len(values) for values in routes.values())
            if self.metrics is not None:
                self.metrics.holding(count)
            await self._write(routes, count)
            await self.source.ack(batches)
            self.written += count
            if self.metrics is not None:
                self.metrics.holding(0)
                for route, values in routes.items():
                    self.metrics.written(route, len(values))

    def _retrying(self, exc: BaseException) -> None:
        redis_outage.failed(log, "bridge append", exc)
        if self.metrics is not None:
            self.metrics.write_failed()

    async def _write(self, routes: dict[str, list[bytes]], count: int) -> None:
        # Values go in unchanged: the leader dead-letters what it cannot decode.
        rounds = 0
        while True:
            try:
                await call(
                    lambda: append_values(self.redis, DATA_FIELD, routes),
                    what=f"bridge append of {count}",
                    deadline_s=WRITE_DEADLINE_S,
                    on_retry=self._retrying,
                )
            except RedisUnavailable as exc:
                rounds += 1
                log.error(  # noqa: TRY400 - an outage, not a bug: no traceback
                    "bridge: %s; holding %d records (offsets not committed), retry round %d",
                    exc,
                    count,
                    rounds,
                )
                continue
            redis_outage.recovered(log)
            if rounds:
                log.warning("bridge: redis is back, wrote %d held records", count)
            return


def new_source(settings: Settings) -> KafkaSource:
    """The Kafka side: both input topics, each routed to its Redis stream."""
    kafka = settings.kafka
    keys = Keys(settings.namespace)
    return KafkaSource(
        bootstrap=kafka.bootstrap,
        group=kafka.group,
        routes={kafka.health_topic: keys.health, kafka.events_topic: keys.events},
        security=security_of(kafka),
        client_id=f"failover-bridge-{settings.instance_id}",
        session_timeout_ms=kafka.session_timeout_ms,
        batch_size=settings.batch_size,
    )


async def run_bridge(settings: Settings, stop: asyncio.Event) -> bool:
    """Run the bridge until ``stop`` is set or the consumer crashes; commit what was written.

    Returns False when the consumer did not stop within the shutdown timeout (nothing more
    was committed; the rest is re-delivered to the next bridge).
    """
    kafka = settings.kafka
    if not kafka.bootstrap:
        raise ConfigError("FAILOVER_KAFKA_BOOTSTRAP: is required for the bridge")
    await ensure_topics(
        kafka.bootstrap,
        (kafka.health_topic, kafka.events_topic),
        security=security_of(kafka),
        auto_create=kafka.auto_create_topics,
    )
    keys = Keys(settings.namespace)
    metrics = BridgeMetrics(keys.input_streams)
    exporter = serve_settings(metrics.registry, settings)  # a taken port: exit 2 here
    redis = connect(settings.redis_target, client_name=f"failover-bridge-{settings.instance_id}")
    source = new_source(settings)
    appender = RedisAppender(redis, source, metrics)
    writer = asyncio.create_task(appender.run(), name="bridge-writer")
    try:
        await ping(redis, deadline_s=WRITE_DEADLINE_S)
        await source.start()
        log.info(
            "bridge %s: %s -> %s, %s -> %s (group %s, brokers %s)",
            settings.instance_id,
            kafka.health_topic,
            Keys(settings.namespace).health,
            kafka.events_topic,
            Keys(settings.namespace).events,
            kafka.group,
            kafka.bootstrap,
        )
        next_lag = time.monotonic()
        while not stop.is_set() and source.failure() is None and not writer.done():
            if exporter is not None and time.monotonic() >= next_lag:
                next_lag = time.monotonic() + LAG_SAMPLE_S
                metrics.consumer_lag(await source.lag())
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass
        if writer.done():
            writer.result()  # an unexpected writer error is a bug: let it surface
        failure = source.failure()
        if failure is not None and not stop.is_set():
            raise FailoverError(failure)
    finally:
        # Stop reading, let the writer finish what it holds (bounded), then stop the
        # consumer, which commits the acked offsets. The writer is stopped last.
        budget = settings.shutdown_timeout_ms / 1000
        began = time.monotonic()
        if source.started:
            source.stop_reading()
            if not await source.drain(budget / 2):
                log.warning("bridge: records still unwritten at shutdown; they are re-delivered")
        clean = await source.stop(max(budget - (time.monotonic() - began), 0.5))
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await redis.aclose()
        if exporter is not None:
            exporter.close()
        log.info("bridge %s stopped after %d records", settings.instance_id, appender.written)
    return clean


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Bridge until ``stop`` is set (the bridge's main, run by :func:`workers.runtime.run`)."""
    if not await run_bridge(settings, stop):
        # Stuck client threads (no daemons) would keep the process alive: leave now,
        # nothing unwritten was committed.
        exit_now(0)


def main() -> None:
    """Process entry point: SIGTERM/SIGINT stop the bridge; exit 0, 1 or 2 (see runtime)."""
    run("bridge", serve, quiet=LIBRARY_LOGGERS)


if __name__ == "__main__":
    main()
