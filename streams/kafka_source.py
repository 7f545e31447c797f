"""Kafka topics as a source of record batches, through faust (the bridge's input side).

faust runs the consumer (its thread and fetches, the group and rebalances, flow control,
acked-offset bookkeeping and the commit loop); its fetch loop is the batched one of
:mod:`streams.kafka_batches`: each fetch's records of a partition arrive here at once, in
Kafka order, and go to one queue in chunks of at most ``batch_size``;
:meth:`KafkaSource.next_batch` returns what is queued. One queue and one caller keep each
partition's records in order. Offsets are committed only for records the caller has passed
to :meth:`KafkaSource.ack`, which it does after it has stored them: at least once.

Two faust defaults would break that and are bypassed on purpose. faust's own ``take()``
batching and plain iteration ack in a ``finally`` even when the body fails or is cancelled,
which would commit records never stored; no agent iterates here, and only :meth:`ack` acks
(faust's ``Consumer.ack``). faust's own wait for unacked records on stop or rebalance
(``stream_wait_empty``) swallows cancellation and would wait out an outage of the store
forever; it is off, and :meth:`drain` is the bounded replacement.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP, Message

from streams.kafka import KafkaSecurity, aiokafka_security, split_bootstrap
from streams.kafka_batches import BatchApp

log = logging.getLogger(__name__)


class SourceBatch(NamedTuple):
    """Records of one partition in Kafka order: their route and values, unchanged."""

    route: str
    values: list[bytes]
    messages: list[Message]  # faust's, for the ack


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


class KafkaSource:
    """Records of several topics in batches; an offset is committed once its record is acked."""

    def __init__(
        self,
        *,
        bootstrap: str,
        group: str,
        routes: Mapping[str, str],
        security: KafkaSecurity,
        client_id: str,
        session_timeout_ms: int,
        batch_size: int,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.batch_size = batch_size
        self._routes = dict(routes)
        # Two chunks per topic may wait while the caller writes; then the hand-over blocks,
        # and faust's fetch loop with it (the backpressure: at most one fetch more is held).
        self._queue: asyncio.Queue[SourceBatch] = asyncio.Queue(maxsize=2 * len(routes))
        self._next: SourceBatch | None = None  # taken from the queue, not handed out yet
        self._idle = asyncio.Event()  # nothing queued, nothing handed out and not yet acked
        self._idle.set()
        self._datadir = tempfile.mkdtemp(prefix="failover-bridge-")
        self._app = self._build_app(
            bootstrap=bootstrap,
            group=group,
            routes=routes,
            security=security,
            client_id=client_id,
            session_timeout_ms=session_timeout_ms,
            commit_interval_s=commit_interval_s,
        )

    @property
    def started(self) -> bool:
        """True once :meth:`start` has started the consumer."""
        return bool(self._app.started)

    def failure(self) -> str | None:
        """Why the consumer stopped on its own, or None while it runs (or was told to stop)."""
        if not self._app.should_stop:
            return None
        return f"faust stopped on its own: {self._app.crash_reason!r}"

    async def start(self) -> None:
        """Join the group and start fetching."""
        await self._app.start()

    async def next_batch(self) -> list[SourceBatch]:
        """Wait for records; return the batches queued, in arrival order, as many as fit
        in ``batch_size`` records (always at least one)."""
        first = self._next if self._next is not None else await self._queue.get()
        self._next = None
        self._idle.clear()
        batches = [first]
        count = len(first.values)
        while not self._queue.empty():
            batch = self._queue.get_nowait()
            if count + len(batch.values) > self.batch_size:
                self._next = batch  # the first of the next call
                break
            batches.append(batch)
            count += len(batch.values)
        return batches

    async def ack(self, batches: list[SourceBatch]) -> None:
        """Mark ``batches`` done: their offsets are committed at the next commit interval."""
        ack = self._app.consumer.ack
        for batch in batches:
            for message in batch.messages:
                ack(message)
        if self._queue.empty() and self._next is None:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every record received is acked; False if that takes over ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def lag(self, timeout_s: float = 2.0) -> dict[tuple[str, int], int]:
        """Records not yet committed, per assigned partition: the high watermark of the last
        fetch minus the group's committed offset (from the start of the log when the group
        has none). Partitions not fetched yet are left out; {} before :meth:`start`."""
        if not self._app.started:
            return {}
        consumer = self._app.consumer
        highs: dict[Any, int] = {}
        for tp in consumer.assignment():
            try:
                # Cached from the last fetch response: no request. A rebalance in the
                # consumer's thread between assignment() and here trips aiokafka's assert.
                high = consumer.highwater(tp)
            except (AssertionError, ConsumerNotStarted):
                continue
            if high is not None:
                highs[tp] = high
        # faust keeps the committed offset of each partition (read at assignment, moved at
        # each commit); it has no public accessor. 0 reads as None there, as "none yet".
        offsets: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
        committed = {tp: offsets.get(tp) for tp in highs}
        fresh = [tp for tp, offset in committed.items() if offset is None]
        if fresh:
            try:
                async with asyncio.timeout(timeout_s):
                    committed.update(await consumer.earliest_offsets(*fresh))
            except (TimeoutError, KafkaError, ConsumerNotStarted) as exc:
                log.debug("bridge lag: earliest offsets unavailable: %s", exc)
        return {
            (tp.topic, tp.partition): max(high - offset, 0)
            for tp, high in highs.items()
            if (offset := committed.get(tp)) is not None
        }

    def stop_reading(self) -> None:
        """Stop fetching; records buffered (never acked, so never committed) are dropped."""
        # What faust itself does first when it stops.
        if not self._app.started:
            return
        consumer = self._app.consumer
        assignment = consumer.assignment()
        consumer.stop_flow()
        self._app.flow_control.suspend()
        if assignment:
            consumer.pause_partitions(assignment)
        self._app.flow_control.clear()

    async def stop(self, timeout_s: float) -> bool:
        """Leave the group, committing the acked offsets; False if faust did not stop in time."""
        try:
            # A task, not asyncio.timeout(): parts of faust swallow CancelledError.
            stopping = asyncio.create_task(self._app.stop(), name="faust-stop")
            done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
            if not done:
                log.error("faust did not stop within %.1fs; no final commit", timeout_s)
                return False
            stopping.result()
            return True
        finally:
            shutil.rmtree(self._datadir, ignore_errors=True)

    async def _take(self, tp: TP, messages: list[Message]) -> None:
        # One partition's records of one fetch, in Kafka order, in chunks of at most
        # batch_size. Blocks while the caller is behind: that is the backpressure (faust
        # stops fetching meanwhile). A tombstone (null value) becomes an empty value.
        route = self._routes[tp.topic]
        self._idle.clear()  # received, not yet acked: drain() waits for these too
        for at in range(0, len(messages), self.batch_size):
            chunk = messages[at : at + self.batch_size]
            values = [b"" if (value := message.value) is None else value for message in chunk]
            await self._queue.put(SourceBatch(route, values, chunk))

    def _build_app(
        self,
        *,
        bootstrap: str,
        group: str,
        routes: Mapping[str, str],
        security: KafkaSecurity,
        client_id: str,
        session_timeout_ms: int,
        commit_interval_s: float,
    ) -> faust.App:
        session_s = session_timeout_ms / 1000
        app = BatchApp(
            group,
            broker=[f"kafka://{host}" for host in split_bootstrap(bootstrap)],
            broker_credentials=faust_credentials(security),
            broker_client_id=client_id,
            broker_session_timeout=session_s,
            broker_heartbeat_interval=min(3.0, session_s / 5),
            broker_commit_interval=commit_interval_s,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,  # see the module doc: drain() instead
            topic_allow_declare=False,  # ensure_topics() decided about missing topics already
            topic_disable_leader=True,
            web_enabled=False,
            autodiscover=False,
            store="memory://",
            datadir=self._datadir,
        )
        for topic_name in routes:
            # Subscribed through faust's conductor; records reach _take, not an agent.
            app.topics.add(app.topic(topic_name, value_serializer="raw"))
        app.batch_sink = self._take
        return app
