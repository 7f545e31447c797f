"""faust's Kafka consumer handing each partition's fetched records over as one batch.

faust delivers records one at a time: its fetch loop (``Consumer._drain_messages``) awaits,
for every record, mode's ``wait_first`` (four tasks and an ``asyncio.wait``) around the
conductor, which puts the record on a channel queue, from which the agent's stream takes
it, runs its processors and hands it on. Measured in the bridge that is ~90 us of CPU per
record (faust 0.15 with its Cython paths), a ceiling of ~11k records/s per process whatever
the agent does with them (buffered takes included; see the README, "Kafka bridge").

:class:`BatchApp` keeps everything else of faust (the consumer thread and its fetches, the
group and its rebalances, flow control, the acked-offset bookkeeping, gaps and the commit
loop) and replaces only that loop: each fetch's records of one partition go, in Kafka
order, to one coroutine (``App.batch_sink``) in one call. Acks stay faust's
(``Consumer.ack`` per message), so faust still commits only what was acked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

BatchSink = Callable[[TP, list[Message]], Awaitable[None]]


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer whose fetch loop hands over a partition's records at once."""

    async def _drain_messages(self, fetcher: Any) -> None:  # faust's fetch loop, batched
        sink: BatchSink = self.app.batch_sink  # type: ignore[attr-defined]
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        to_message = self._to_message
        while not (consumer_stopped() or fetcher_stopped()):
            records, active = await self._wait_next_records(1.0)
            await asyncio.sleep(0)  # as faust does: never hold the loop across fetches
            if not records or self.should_stop:
                continue
            if not self.flow_active:
                # What faust's getmany does: the fetch raced a rebalance; start again
                # from the committed offsets.
                await self.perform_seek()
                continue
            generation = self.app.consumer_generation_id
            for tp, rows in records.items():
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    break  # a rebalance began: these records are fetched again later
                if active is not None and tp not in active and tp not in self._buffered_partitions:
                    continue
                last = read_offset[tp]
                messages: list[Message] = [
                    to_message(tp, row) for row in rows if last is None or row.offset >= last
                ]
                if not messages:
                    continue
                if acks_enabled_for(tp.topic):
                    await self._add_gaps(tp, last, messages)
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                # Blocks while the sink is full (backpressure); a rebalance interrupts it
                # and the batch is dropped unacked: faust re-fetches from the committed offset.
                results = await self.wait_first(sink(tp, messages), self.suspend_flow.wait())
                if results.stopped or self.suspend_flow.is_set():
                    break
                read_offset[tp] = messages[-1].offset

    async def _add_gaps(self, tp: TP, last: int | None, messages: list[Message]) -> None:
        # Offsets skipped (compaction, transaction markers) are gaps: faust commits up to
        # the first offset neither acked nor a gap. Unlike faust's own loop, a gap ends
        # before the next record, so a record is never counted done before its ack.
        previous = last
        for message in messages:
            if previous is not None and message.offset - previous > 1:
                await self._add_gap(tp, previous + 1, message.offset - 1)
            previous = message.offset


class BatchTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`BatchConsumer` as its consumer."""

    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A faust app whose consumer hands fetched records to ``batch_sink`` per partition."""

    batch_sink: BatchSink

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)
