"""Mirror of ``NS:decisions`` onto a Kafka topic (DESIGN §9): ``python -m workers.mirror``.

Reads the decisions through its own consumer group (``kafka-mirror``, from the first entry),
produces each one's ``data`` unchanged with ``acks=all`` and XACKs it only after Kafka
acknowledged it: at least once. A batch Kafka refused stays pending and is sent again, in
order, before anything newer; entries left pending by a dead mirror are claimed once idle.
Records are keyed so that compaction and partitioning make sense to Kafka consumers:
``failover`` by its ``to_region``, ``leader_changed`` by the constant ``leader`` (all
leader changes on one partition, in order); headers carry the Redis entry id and the type.
Consumers de-duplicate by ``decision_id`` (``failover``) or ``epoch`` (``leader_changed``):
a resend after a lost acknowledgement is possible even with the idempotent producer, whose
de-duplication spans one producer session only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from schemas.codec import DATA_FIELD, decode_entry
from schemas.errors import (
    ConfigError,
    DecodeError,
    FailoverError,
    GroupMissing,
    KafkaUnavailable,
)
from schemas.events import FailoverDecision, LeaderChanged
from streams.connection import connect
from streams.decisions import Decision, DecisionsGroup
from streams.kafka import LIBRARY_LOGGERS, ensure_topics, security_of
from streams.kafka_sink import KafkaSink, SinkRecord
from streams.keys import Keys
from streams.lease import make_owner_id
from streams.ledger import group_lag
from workers.exposition import serve_settings
from workers.kafka.metrics import MirrorMetrics
from workers.runtime import every, redis_outage, run
from workers.settings import Settings

log = logging.getLogger(__name__)

MIRROR_GROUP = "kafka-mirror"
LEADER_KEY = b"leader"
REDIS_DEADLINE_S = 10.0
LAG_SAMPLE_S = 1.0


def record_key(fields: dict[bytes, bytes]) -> bytes | None:
    """The Kafka key of one decision entry: its target region, ``leader``, or None."""
    try:
        entry = decode_entry(fields, stream="decisions")
    except DecodeError as exc:
        # Not ours to judge (a newer leader may write a newer type): mirror it unkeyed.
        log.warning("mirror: decision entry not understood (%s); mirrored without a key", exc)
        return None
    if isinstance(entry, FailoverDecision):
        return entry.to_region.encode()
    if isinstance(entry, LeaderChanged):
        return LEADER_KEY
    return None  # pragma: no cover - decode_entry allows only the two types above


def _entry_type(fields: dict[bytes, bytes]) -> bytes:
    # Cheap provenance header without a second decode: the tag is near the front.
    data = fields.get(DATA_FIELD, b"")
    marker = b'"type":"'
    start = data.find(marker)
    if start < 0:
        return b""
    start += len(marker)
    end = data.find(b'"', start)
    return data[start:end] if end > start else b""


def to_record(entry_id: bytes, fields: dict[bytes, bytes]) -> SinkRecord:
    """The Kafka record of one decision: ``data`` unchanged, keyed, with provenance headers."""
    return SinkRecord(
        value=fields.get(DATA_FIELD, b""),
        key=record_key(fields),
        headers=[("failover-entry-id", entry_id), ("failover-type", _entry_type(fields))],
    )


class DecisionMirror:
    """Moves decisions from the Redis stream to the Kafka topic, acking after Kafka did."""

    def __init__(
        self,
        group: DecisionsGroup,
        sink: KafkaSink,
        *,
        batch_size: int = 100,
        block_ms: int = 100,
        retry_backoff_s: float = 0.5,
        metrics: MirrorMetrics | None = None,
    ) -> None:
        self.group = group
        self.metrics = metrics or MirrorMetrics(CollectorRegistry())
        self.sink = sink
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.retry_backoff_s = retry_backoff_s
        self.mirrored = 0
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Mirror until ``stop`` is set; Redis and Kafka outages are waited out, never skipped."""
        self._stop = stop
        while not stop.is_set():
            try:
                # Unacked decisions come back first, in order: a refused batch is resent.
                entries = await self.group.read(self.batch_size, self.block_ms)
            except GroupMissing:
                # The stream or the group was deleted (an operator's XGROUP DESTROY, a
                # FLUSHDB): make it again from the first entry, so nothing still in the
                # stream goes unmirrored; consumers de-duplicate the resends.
                log.warning("mirror: the group %s is gone; creating it again", MIRROR_GROUP)
                await self._recreate(stop)
                continue
            except FailoverError as exc:  # RedisUnavailable: wait and try again
                self.metrics.failed("redis")
                redis_outage.failed(log, "mirror: reading decisions", exc)
                await self._pause(stop)
                continue
            redis_outage.recovered(log)
            if entries and not await self.mirror(entries):
                await self._pause(stop)

    async def mirror(self, entries: Sequence[Decision]) -> bool:
        """Produce ``entries`` in order, then ack them; False if Kafka or Redis refused."""
        ids = [entry_id for entry_id, _ in entries]
        records = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed away while pending: nothing left to send
                log.warning("mirror: decision %s was trimmed before it was mirrored", entry_id)
                continue
            records.append(to_record(entry_id, fields))
        try:
            if not await self.sink.deliver(records, self._stop):
                log.warning(
                    "mirror: stopping with %d decisions not acknowledged by Kafka; "
                    "they stay pending for the next mirror",
                    len(ids),
                )
                return False
        except KafkaUnavailable as exc:
            self.metrics.failed("kafka")
            log.error("mirror: %s; kept pending, will resend", exc)  # noqa: TRY400 - outage
            return False
        try:
            await self.group.ack(ids)
        except FailoverError as exc:
            self.metrics.failed("redis")
            log.error("mirror: %s; the batch will be sent again", exc)  # noqa: TRY400
            return False
        self.mirrored += len(ids)
        self.metrics.mirrored(len(ids))
        log.info("mirror: %d decisions to %s, last %s", len(ids), self.sink.topic, ids[-1].decode())
        return True

    async def _recreate(self, stop: asyncio.Event) -> None:
        try:
            await self.group.ensure()
        except FailoverError as exc:
            self.metrics.failed("redis")
            redis_outage.failed(log, "mirror: creating its group", exc)
            await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(self.retry_backoff_s):
                await stop.wait()
        except TimeoutError:
            pass


def new_sink(settings: Settings, *, request_timeout_ms: int = 30000) -> KafkaSink:
    """The decisions producer: acks=all, idempotent unless FAILOVER_KAFKA_IDEMPOTENT=false."""
    kafka = settings.kafka
    return KafkaSink(
        bootstrap=kafka.bootstrap,
        topic=kafka.decisions_topic,
        security=security_of(kafka),
        client_id=f"failover-mirror-{settings.instance_id}",
        idempotent=kafka.idempotent,
        request_timeout_ms=request_timeout_ms,
    )


async def start_sink(sink: KafkaSink) -> None:
    """Start ``sink``; a broker that refuses it gives one line saying what to change."""
    try:
        await sink.start()
    except KafkaUnavailable as exc:
        if not sink.idempotent:
            raise
        raise KafkaUnavailable(
            f"{exc}; if the brokers do not support idempotent producers, "
            "set FAILOVER_KAFKA_IDEMPOTENT=false"
        ) from None


async def run_mirror(
    settings: Settings, stop: asyncio.Event, *, claim_idle_ms: int | None = None
) -> int:
    """Run the mirror until ``stop`` is set; returns how many decisions it mirrored."""
    kafka = settings.kafka
    if not kafka.bootstrap:
        raise ConfigError("FAILOVER_KAFKA_BOOTSTRAP: is required for the decision mirror")
    await ensure_topics(
        kafka.bootstrap,
        (kafka.decisions_topic,),
        security=security_of(kafka),
        auto_create=kafka.auto_create_topics,
    )
    consumer = make_owner_id(settings.instance_id)
    metrics = MirrorMetrics()
    exporter = serve_settings(metrics.registry, settings)  # a taken port: exit 2 here
    redis = connect(settings.redis_target, client_name=f"failover-mirror-{settings.instance_id}")
    sink = new_sink(settings)
    try:
        await start_sink(sink)
        group_keys = Keys(settings.namespace)
        group = DecisionsGroup(
            redis,
            group_keys,
            MIRROR_GROUP,
            consumer,
            claim_idle_ms=kafka.session_timeout_ms if claim_idle_ms is None else claim_idle_ms,
            deadline_s=REDIS_DEADLINE_S,
        )
        await group.ensure()
        mirror = DecisionMirror(
            group, sink, batch_size=min(settings.batch_size, 1000), metrics=metrics
        )
        log.info(
            "mirror %s: %s -> %s on %s (idempotent=%s)",
            consumer,
            group.stream,
            kafka.decisions_topic,
            kafka.bootstrap,
            kafka.idempotent,
        )

        async def sample_lag() -> None:
            try:
                metrics.lag(*await group_lag(redis, group_keys, MIRROR_GROUP))
            except FailoverError as exc:  # the mirror's own loop reports the outage
                log.debug("mirror: lag sample failed: %s", exc)

        async with asyncio.TaskGroup() as tasks:
            if exporter is not None:
                tasks.create_task(every(LAG_SAMPLE_S, stop, sample_lag))
            await mirror.run(stop)
        return mirror.mirrored
    finally:
        # Closing flushes what is in flight, bounded by the shutdown timeout (decisions
        # not acknowledged by then stay pending).
        if not await sink.close(settings.shutdown_timeout_ms / 1000):
            log.warning("mirror: Kafka producer did not close in time")
        await redis.aclose()
        if exporter is not None:
            exporter.close()


def main() -> None:
    """Process entry point: SIGTERM/SIGINT stop the mirror; exit 0, 1 or 2 (see runtime)."""

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        await run_mirror(settings, stop)

    run("mirror", serve, quiet=LIBRARY_LOGGERS)


if __name__ == "__main__":
    main()
