"""A Kafka topic as a sink of records (the decision mirror's output side), through aiokafka.

The producer waits for every in-sync replica (``acks=all``) and is idempotent unless told
otherwise, so a retry inside one producer session writes no duplicate. aiokafka's errors
become :class:`~schemas.errors.KafkaUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from schemas.errors import KafkaUnavailable
from streams.kafka import KafkaSecurity, aiokafka_security, split_bootstrap


class SinkRecord(NamedTuple):
    """One record to produce: value, key (None: unkeyed) and headers, all bytes."""

    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


class KafkaSink:
    """Produces records to one topic and reports when the brokers acknowledged them."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        security: KafkaSecurity,
        client_id: str,
        idempotent: bool,
        request_timeout_ms: int = 30000,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.idempotent = idempotent
        self._producer = AIOKafkaProducer(
            bootstrap_servers=split_bootstrap(bootstrap),
            client_id=client_id,
            acks="all",
            enable_idempotence=idempotent,
            request_timeout_ms=request_timeout_ms,
            **aiokafka_security(security),
        )

    async def start(self) -> None:
        """Connect; :class:`KafkaUnavailable` if the brokers do not answer or refuse us."""
        try:
            await self._producer.start()
        except (KafkaError, OSError) as exc:
            await self._producer.stop()
            raise KafkaUnavailable(
                f"Kafka brokers {self.bootstrap} refused the producer for {self.topic} "
                f"(idempotent={self.idempotent}): {exc}"
            ) from None

    async def deliver(self, records: Sequence[SinkRecord], stop: asyncio.Event) -> bool:
        """Produce ``records`` in order and wait until Kafka acknowledged every one.

        Returns False when ``stop`` is set first (their fate is then unknown); raises
        :class:`KafkaUnavailable` when Kafka refused one.
        """
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                futures.append(
                    await self._producer.send(
                        self.topic, value=record.value, key=record.key, headers=record.headers
                    )
                )
            return await self._acknowledged(futures, stop)
        except KafkaError as exc:
            for future in futures:
                future.cancel()
            raise KafkaUnavailable(
                f"Kafka did not take {len(records)} records for {self.topic}: {exc}"
            ) from None

    async def close(self, timeout_s: float) -> bool:
        """Flush what is in flight and disconnect; False if Kafka did not let go in time."""
        try:
            # A broker that does not answer must not hold the caller past its timeout.
            async with asyncio.timeout(timeout_s):
                await self._producer.stop()
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _acknowledged(futures: list[asyncio.Future[Any]], stop: asyncio.Event) -> bool:
        sending = asyncio.ensure_future(asyncio.gather(*futures))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not sending.done():
            sending.cancel()
            return False
        sending.result()
        return True
