"""Kafka client construction and startup checks for the Kafka edge (bridge and decision mirror).

Takes plain values, or anything shaped like the workers' Kafka settings (streams must not
import workers). The checks turn the two common misconfigurations into one clear line each:
brokers that do not answer (naming the bootstrap list) and topics that do not exist while
auto-creation is off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from schemas.errors import ConfigError, KafkaUnavailable

log = logging.getLogger(__name__)

LIBRARY_LOGGERS = ("faust", "mode", "aiokafka")
"""Loggers of the Kafka libraries; processes keep them at WARNING (they chatter at INFO)."""

SSL_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaSecurity(msgspec.Struct, frozen=True):
    """How to authenticate to the brokers; passed through to aiokafka unchanged."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""

    def __repr__(self) -> str:
        # The password must never reach a log line, not even through a repr.
        return (
            f"KafkaSecurity(security_protocol={self.security_protocol!r}, "
            f"sasl_mechanism={self.sasl_mechanism!r}, sasl_username={self.sasl_username!r}, "
            f"ssl_cafile={self.ssl_cafile!r})"
        )


class SecuritySettings(Protocol):
    """Any settings object with the five SASL/TLS values (the workers' Kafka settings)."""

    @property
    def security_protocol(self) -> str: ...
    @property
    def sasl_mechanism(self) -> str: ...
    @property
    def sasl_username(self) -> str: ...
    @property
    def sasl_password(self) -> str: ...
    @property
    def ssl_cafile(self) -> str: ...


def security_of(kafka: SecuritySettings) -> KafkaSecurity:
    """The SASL/TLS part of the Kafka settings, as the streams layer takes it."""
    return KafkaSecurity(
        security_protocol=kafka.security_protocol,
        sasl_mechanism=kafka.sasl_mechanism,
        sasl_username=kafka.sasl_username,
        sasl_password=kafka.sasl_password,
        ssl_cafile=kafka.ssl_cafile,
    )


def split_bootstrap(bootstrap: str) -> list[str]:
    """``host:port`` entries of a comma-separated bootstrap list, blanks dropped."""
    return [part.strip() for part in bootstrap.split(",") if part.strip()]


def aiokafka_security(security: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: protocol, TLS context, SASL credentials."""
    kwargs: dict[str, Any] = {"security_protocol": security.security_protocol}
    if security.security_protocol in SSL_PROTOCOLS:
        kwargs["ssl_context"] = create_ssl_context(cafile=security.ssl_cafile or None)
    if security.security_protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = security.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = security.sasl_username
        kwargs["sasl_plain_password"] = security.sasl_password
    return kwargs


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    security: KafkaSecurity,
    auto_create: bool,
    timeout_s: float = 15.0,
    partitions: int = 1,
) -> None:
    """Check that the brokers answer and every topic exists; create missing ones if allowed.

    Raises :class:`KafkaUnavailable` when no broker of ``bootstrap`` answers within
    ``timeout_s`` and :class:`ConfigError` when a topic is missing and ``auto_create`` is off.
    """
    wanted = sorted(set(topics))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=split_bootstrap(bootstrap),
        request_timeout_ms=int(timeout_s * 1000),
        client_id="failover-preflight",
        **aiokafka_security(security),
    )
    started = time.monotonic()
    library = logging.getLogger("aiokafka")
    level = library.level
    try:
        try:
            # The failure is reported below in one line; aiokafka's own ERROR line about
            # the same connection would only repeat it.
            library.setLevel(logging.CRITICAL)
            async with asyncio.timeout(timeout_s):
                await admin.start()
                existing = set(await admin.list_topics())
        except (TimeoutError, KafkaError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            waited = time.monotonic() - started
            when = (
                f"no answer within {timeout_s:.0f}s"
                if waited >= timeout_s * 0.9
                else f"gave up after {waited:.1f}s"
            )
            raise KafkaUnavailable(
                f"Kafka brokers {bootstrap} unreachable ({when}): {why}"
            ) from None
        finally:
            library.setLevel(level)
        missing = [topic for topic in wanted if topic not in existing]
        if not missing:
            return
        if not auto_create:
            raise ConfigError(
                f"Kafka topic(s) {', '.join(missing)} missing on {bootstrap} and "
                "FAILOVER_KAFKA_AUTO_CREATE_TOPICS is off: create them or turn it on"
            )
        await _create(admin, missing, partitions, timeout_s, bootstrap)
    finally:
        await admin.close()


async def _create(
    admin: AIOKafkaAdminClient, missing: list[str], partitions: int, timeout_s: float, where: str
) -> None:
    log.warning("creating Kafka topic(s) %s on %s", ", ".join(missing), where)
    new = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in missing]
    try:
        async with asyncio.timeout(timeout_s):
            await admin.create_topics(new)
            # Metadata trails creation by a moment; wait until every topic is listed.
            for _ in range(int(timeout_s / 0.05)):
                if not set(missing) - set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.05)
    except TopicAlreadyExistsError:
        pass  # another worker created it first
    except (TimeoutError, KafkaError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        raise KafkaUnavailable(
            f"could not create Kafka topic(s) {missing} on {where}: {why}"
        ) from None
