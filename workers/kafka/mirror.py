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
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rex
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.codec import DATA_FIELD, decode_entry
from schemas.errors import ConfigError, DecodeError, FailoverError, KafkaUnavailable
from schemas.events import FailoverDecision, LeaderChanged
from streams.connection import call, connect
from streams.kafka import (
    CLIENT_LOGGERS,
    aiokafka_security,
    ensure_topics,
    security_of,
    split_bootstrap,
)
from streams.keys import Keys
from streams.lease import make_owner_id
from workers.runtime import run
from workers.settings import Settings

log = logging.getLogger(__name__)

MIRROR_GROUP = "kafka-mirror"
LEADER_KEY = b"leader"
REDIS_DEADLINE_S = 10.0

_Entry = tuple[bytes, dict[bytes, bytes] | None]


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


class DecisionMirror:
    """Moves decisions from the Redis stream to the Kafka topic, acking after Kafka did."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        consumer: str,
        batch_size: int = 100,
        claim_idle_ms: int = 10000,
        block_ms: int = 100,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.producer = producer
        self.topic = topic
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.block_ms = block_ms
        self.retry_backoff_s = retry_backoff_s
        self.mirrored = 0
        self._stop = asyncio.Event()

    async def setup(self) -> None:
        """Create the mirror's group at the start of the stream (idempotent)."""

        async def create() -> None:
            try:
                await self.redis.xgroup_create(
                    self.keys.decisions, MIRROR_GROUP, id="0", mkstream=True
                )
            except rex.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        await call(create, what="mirror group create", deadline_s=REDIS_DEADLINE_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Mirror until ``stop`` is set; Redis and Kafka outages are waited out, never skipped."""
        self._stop = stop
        own_pending = True  # re-send what this consumer holds before reading anything new
        next_claim = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + self.claim_idle_ms / 2000
                    if await self._claim():
                        own_pending = True
                entries = await self._read("0" if own_pending else ">")
            except FailoverError as exc:  # RedisUnavailable: wait and try again
                log.error("mirror: %s; retrying", exc)  # noqa: TRY400 - outage, no traceback
                await self._pause(stop)
                continue
            if own_pending and not entries:
                own_pending = False
                continue
            if entries and not await self.mirror(entries):
                own_pending = True
                await self._pause(stop)

    async def mirror(self, entries: Sequence[_Entry]) -> bool:
        """Produce ``entries`` in order, then XACK them; False if Kafka or Redis refused."""
        ids = [entry_id for entry_id, _ in entries]
        futures = []
        try:
            for entry_id, fields in entries:
                if fields is None:  # trimmed away while pending: nothing left to send
                    log.warning("mirror: decision %s was trimmed before it was mirrored", entry_id)
                    continue
                futures.append(
                    await self.producer.send(
                        self.topic,
                        value=fields.get(DATA_FIELD, b""),
                        key=record_key(fields),
                        headers=[
                            ("failover-entry-id", entry_id),
                            ("failover-type", _entry_type(fields)),
                        ],
                    )
                )
            if not await self._acknowledged(futures):
                log.warning(
                    "mirror: stopping with %d decisions not acknowledged by Kafka; "
                    "they stay pending for the next mirror",
                    len(ids),
                )
                return False
        except KafkaError as exc:
            for future in futures:
                future.cancel()
            log.error(  # noqa: TRY400 - an outage, not a bug: no traceback
                "mirror: Kafka did not take %d decisions (%s); kept pending, will resend",
                len(ids),
                exc,
            )
            return False
        try:
            await call(
                lambda: self.redis.xack(self.keys.decisions, MIRROR_GROUP, *ids),
                what="mirror ack",
                deadline_s=REDIS_DEADLINE_S,
            )
        except FailoverError as exc:
            log.error("mirror: %s; the batch will be sent again", exc)  # noqa: TRY400
            return False
        self.mirrored += len(ids)
        log.info("mirror: %d decisions to %s, last %s", len(ids), self.topic, ids[-1].decode())
        return True

    async def _acknowledged(self, futures: list[asyncio.Future[Any]]) -> bool:
        """Wait for Kafka's acks, or for stop (False); a refused send raises KafkaError."""
        sending = asyncio.ensure_future(asyncio.gather(*futures))
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not sending.done():
            sending.cancel()
            return False
        sending.result()
        return True

    async def _read(self, start: str) -> list[_Entry]:
        block = self.block_ms if start == ">" else None
        reply: Any = await call(
            lambda: self.redis.xreadgroup(
                MIRROR_GROUP,
                self.consumer,
                {self.keys.decisions: start},
                count=self.batch_size,
                block=block,
            ),
            what="mirror read",
            deadline_s=REDIS_DEADLINE_S,
        )
        if not reply:
            return []
        _stream, entries = reply[0]
        return [(entry_id, fields or None) for entry_id, fields in entries]

    async def _claim(self) -> bool:
        """Take over entries another (dead) mirror left pending for ``claim_idle_ms``."""
        reply: Any = await call(
            lambda: self.redis.xautoclaim(
                self.keys.decisions,
                MIRROR_GROUP,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id="0",
                count=self.batch_size,
                justid=True,
            ),
            what="mirror claim",
            deadline_s=REDIS_DEADLINE_S,
        )
        claimed = list(reply or [])  # with JUSTID redis-py answers the claimed ids only
        if claimed:
            log.warning("mirror %s: claimed %d idle pending decisions", self.consumer, len(claimed))
        return bool(claimed)

    async def _pause(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(self.retry_backoff_s):
                await stop.wait()
        except TimeoutError:
            pass


def new_producer(settings: Settings, *, request_timeout_ms: int = 30000) -> AIOKafkaProducer:
    """The decisions producer: acks=all, idempotent unless FAILOVER_KAFKA_IDEMPOTENT=false."""
    kafka = settings.kafka
    return AIOKafkaProducer(
        bootstrap_servers=split_bootstrap(kafka.bootstrap),
        client_id=f"failover-mirror-{settings.instance_id}",
        acks="all",
        enable_idempotence=kafka.idempotent,
        request_timeout_ms=request_timeout_ms,
        **aiokafka_security(security_of(kafka)),
    )


async def start_producer(producer: AIOKafkaProducer, settings: Settings) -> None:
    """Start ``producer``; a broker that refuses it gives one line saying what to change."""
    kafka = settings.kafka
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        hint = ""
        if kafka.idempotent:
            hint = (
                "; if the brokers do not support idempotent producers, "
                "set FAILOVER_KAFKA_IDEMPOTENT=false"
            )
        raise KafkaUnavailable(
            f"Kafka brokers {kafka.bootstrap} refused the decisions producer "
            f"(idempotent={kafka.idempotent}): {exc}{hint}"
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
    redis = connect(settings.redis_url, client_name=f"failover-mirror-{settings.instance_id}")
    producer = new_producer(settings)
    try:
        await start_producer(producer, settings)
        mirror = DecisionMirror(
            redis,
            Keys(settings.namespace),
            producer,
            kafka.decisions_topic,
            consumer=consumer,
            batch_size=min(settings.batch_size, 1000),
            claim_idle_ms=kafka.session_timeout_ms if claim_idle_ms is None else claim_idle_ms,
        )
        await mirror.setup()
        log.info(
            "mirror %s: %s -> %s on %s (idempotent=%s)",
            consumer,
            mirror.keys.decisions,
            kafka.decisions_topic,
            kafka.bootstrap,
            kafka.idempotent,
        )
        await mirror.run(stop)
        return mirror.mirrored
    finally:
        try:
            # stop() flushes what is in flight; a broker that does not answer must not
            # hold the process past the shutdown timeout (those decisions stay pending).
            async with asyncio.timeout(settings.shutdown_timeout_ms / 1000):
                await producer.stop()
        except TimeoutError:
            log.warning("mirror: Kafka producer did not close in time")
        await redis.aclose()


def main() -> None:
    """Process entry point: SIGTERM/SIGINT stop the mirror; exit 0, 1 or 2 (see runtime)."""

    async def serve(settings: Settings, stop: asyncio.Event) -> None:
        await run_mirror(settings, stop)

    run("mirror", serve, quiet=CLIENT_LOGGERS)


if __name__ == "__main__":
    main()
