"""Kafka -> Redis ingestion (DESIGN §9): ``python -m workers.bridge``, a faust-streaming app.

One agent per topic (health, failover events) hands each record to one Redis writer, which
appends the record's value *unchanged* as field ``data`` to ``NS:health`` / ``NS:events``.
Invalid payloads pass through too: the leader dead-letters them with a reason, so nothing is
dropped at the edge.

At least once: the agents iterate with faust's acks switched off, and the writer acks each
record only after the Redis write that holds it succeeded; faust commits only acked offsets.
(faust's own ``take()`` batching and plain iteration ack in a ``finally`` even when the body
fails or is cancelled, which would lose records, so they are not used.) A Redis outage is
retried with the shared policy, again and again, never skipped; meanwhile the agents block,
faust's buffers fill and it pauses fetching. A crash re-delivers whatever was not committed,
so Redis may receive duplicates: the policy ignores a health event it has already applied.

SIGTERM: stop fetching, give the writer half the shutdown timeout to finish what it holds,
then stop faust, which commits the acked offsets; records still unwritten (Redis down) are
not committed and go to the next bridge. faust's own wait for unacked records
(``stream_wait_empty``) is off: it swallows cancellation and would wait out an outage.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import redis.asyncio as aioredis

from schemas.codec import DATA_FIELD
from schemas.errors import ConfigError, FailoverError, RedisUnavailable
from streams.connection import call, connect
from streams.kafka import (
    CLIENT_LOGGERS,
    KafkaSecurity,
    aiokafka_security,
    ensure_topics,
    security_of,
    split_bootstrap,
)
from streams.keys import Keys
from workers.runtime import exit_now, run
from workers.settings import Settings

log = logging.getLogger(__name__)

WRITE_DEADLINE_S = 10.0
"""One retry round of a Redis write; after it the writer logs and starts another round."""

_Item = tuple[str, bytes, Any, Any]  # (stream key, value, faust stream, faust event)


def faust_credentials(security: KafkaSecurity) -> faust.auth.Credentials | None:
    """The same SASL/TLS settings in faust's shape (faust builds its aiokafka clients itself)."""
    kwargs = aiokafka_security(security)
    context = kwargs.get("ssl_context")
    if security.security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=kwargs["sasl_plain_username"],
            password=kwargs["sasl_plain_password"],
            mechanism=kwargs["sasl_mechanism"],
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class RedisAppender:
    """Appends queued records to their Redis stream in batches, then acks them to faust."""

    def __init__(self, redis: aioredis.Redis, *, batch_size: int, linger_s: float = 0.002) -> None:
        self.redis = redis
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=2 * batch_size)
        self.written = 0
        self._idle = asyncio.Event()  # nothing queued, nothing being written
        self._idle.set()

    async def put(self, key: str, value: bytes | None, stream: Any, event: Any) -> None:
        """Queue one record (blocks while the writer is behind: that is the backpressure)."""
        # A tombstone (null value) becomes an empty entry, which the leader dead-letters.
        await self.queue.put((key, b"" if value is None else value, stream, event))

    async def run(self) -> None:
        """Write batches forever; cancel to stop (a batch not written is never acked)."""
        while True:
            batch = [await self.queue.get()]
            self._idle.clear()
            if self.queue.qsize() < self.batch_size - 1:
                # faust hands records over one by one; without a moment's linger (as Kafka
                # producers linger) every record would cost a Redis round trip of its own.
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self._write(batch)
            for _key, _value, stream, event in batch:
                await stream.ack(event)
            self.written += len(batch)
            if self.queue.empty():
                self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until everything queued is written and acked; False if Redis is too slow."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def _write(self, batch: list[_Item]) -> None:
        async def op() -> None:
            # MULTI/EXEC: a batch lands whole or not at all, so a retry after a lost
            # connection duplicates at most the batches whose reply was lost.
            async with self.redis.pipeline(transaction=True) as pipe:
                for key, value, _stream, _event in batch:
                    pipe.xadd(key, {DATA_FIELD: value})
                await pipe.execute()

        rounds = 0
        while True:
            try:
                await call(op, what=f"bridge append of {len(batch)}", deadline_s=WRITE_DEADLINE_S)
            except RedisUnavailable as exc:
                rounds += 1
                log.error(  # noqa: TRY400 - an outage, not a bug: no traceback
                    "bridge: %s; holding %d records (offsets not committed), retry round %d",
                    exc,
                    len(batch),
                    rounds,
                )
                continue
            if rounds:
                log.warning("bridge: redis is back, wrote %d held records", len(batch))
            return


def build_app(
    settings: Settings, appender: RedisAppender, *, datadir: str, commit_interval_s: float = 1.0
) -> faust.App:
    """The faust app: one agent per input topic, feeding ``appender``."""
    kafka = settings.kafka
    keys = Keys(settings.namespace)
    session_s = kafka.session_timeout_ms / 1000
    app = faust.App(
        kafka.group,
        broker=[f"kafka://{host}" for host in split_bootstrap(kafka.bootstrap)],
        broker_credentials=faust_credentials(security_of(kafka)),
        broker_client_id=f"failover-bridge-{settings.instance_id}",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=min(3.0, session_s / 5),
        broker_commit_interval=commit_interval_s,
        consumer_auto_offset_reset="earliest",
        # Not faust's own wait for unacked records on stop/rebalance: it swallows
        # cancellation and would wait out a Redis outage forever. run_bridge drains the
        # writer itself, bounded; unacked records are simply not committed (re-delivered).
        stream_wait_empty=False,
        topic_allow_declare=False,  # ensure_topics() decided about missing topics already
        topic_disable_leader=True,
        web_enabled=False,
        autodiscover=False,
        store="memory://",
        datadir=datadir,
    )
    for topic_name, stream_key in (
        (kafka.health_topic, keys.health),
        (kafka.events_topic, keys.events),
    ):
        topic = app.topic(topic_name, key_type=bytes, value_type=bytes, value_serializer="raw")
        app.agent(topic, name=f"bridge-{stream_key}")(_forwarder(appender, stream_key))
    return app


def _forwarder(appender: RedisAppender, stream_key: str) -> Callable[[Any], Awaitable[None]]:
    async def forward(stream: Any) -> None:
        manual = stream.noack()  # acks come from the writer, after the Redis write
        async for event in manual.events():
            await appender.put(stream_key, event.value, manual, event)

    return forward


async def run_bridge(settings: Settings, stop: asyncio.Event) -> bool:
    """Run the bridge until ``stop`` is set or faust crashes; commit what was written.

    Returns False when faust did not stop within the shutdown timeout (nothing more was
    committed; the rest is re-delivered to the next bridge).
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
    redis = connect(settings.redis_url, client_name=f"failover-bridge-{settings.instance_id}")
    datadir = tempfile.mkdtemp(prefix="failover-bridge-")
    appender = RedisAppender(redis, batch_size=settings.batch_size)
    writer = asyncio.create_task(appender.run(), name="bridge-writer")
    app = build_app(settings, appender, datadir=datadir)
    try:
        await call(redis.ping, what="ping", deadline_s=WRITE_DEADLINE_S)
        await app.start()
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
        while not stop.is_set() and not app.should_stop and not writer.done():
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass
        if writer.done():
            writer.result()  # an unexpected writer error is a bug: let it surface
        if app.should_stop and not stop.is_set():
            raise FailoverError(f"faust stopped on its own: {app.crash_reason!r}")
    finally:
        # Stop reading, let the writer finish what it holds (bounded), then stop faust,
        # which commits the acked offsets. The writer is stopped last.
        budget = settings.shutdown_timeout_ms / 1000
        began = time.monotonic()
        if app.started:
            _stop_reading(app)
            if not await appender.drain(budget / 2):
                log.warning("bridge: records still unwritten at shutdown; they are re-delivered")
        clean = await _stop_app(app, max(budget - (time.monotonic() - began), 0.5))
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await redis.aclose()
        shutil.rmtree(datadir, ignore_errors=True)
        log.info("bridge %s stopped after %d records", settings.instance_id, appender.written)
    return clean


def _stop_reading(app: faust.App) -> None:
    # What faust itself does first when it stops: no more fetching, buffered (never
    # acked, so never committed) records dropped.
    consumer = app.consumer
    assignment = consumer.assignment()
    consumer.stop_flow()
    app.flow_control.suspend()
    if assignment:
        consumer.pause_partitions(assignment)
    app.flow_control.clear()


async def _stop_app(app: faust.App, timeout_s: float) -> bool:
    # A task, not asyncio.timeout(): parts of faust swallow CancelledError.
    stopping = asyncio.create_task(app.stop(), name="faust-stop")
    done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    if not done:
        log.error("bridge: faust did not stop within %.1fs; no final commit", timeout_s)
        return False
    stopping.result()
    return True


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Bridge until ``stop`` is set (the bridge's main, run by :func:`workers.runtime.run`)."""
    if not await run_bridge(settings, stop):
        # Stuck client threads (no daemons) would keep the process alive: leave now,
        # nothing unwritten was committed.
        exit_now(0)


def main() -> None:
    """Process entry point: SIGTERM/SIGINT stop the bridge; exit 0, 1 or 2 (see runtime)."""
    run("bridge", serve, quiet=CLIENT_LOGGERS)


if __name__ == "__main__":
    main()
