"""Redis client construction: from a URL (one node of a Redis Cluster too), or for the
primary that Sentinel names.

The retry policy every Redis call goes through is :func:`streams.retry.call`; where Redis is
(URL checks, redaction, the Sentinel target) is :mod:`streams.address`. Workers hold a
client as :data:`Client` and never import redis themselves.
"""

from __future__ import annotations

from typing import Any, TypeAlias, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from schemas.errors import ConfigError
from streams.address import RedisTarget
from streams.prompt import PromptSend
from streams.retry import call
from streams.routing import Route, RoutedConnection, RoutedSSLConnection, follow_moved
from streams.sentinel_discovery import SentinelDiscovery

Client: TypeAlias = aioredis.Redis
"""The Redis client type, for annotations outside ``streams/`` (built by :func:`connect`)."""


class _SentinelClient(aioredis.Redis):
    """A client of the primary Sentinel names; closing it closes the sentinel clients too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the primary's connections, then the sentinels'."""
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


class _PromptSentinelConnection(PromptSend, SentinelManagedConnection):
    """A connection to the primary Sentinel names, writing commands at once (streams.prompt)."""


class _PromptSentinelSSLConnection(PromptSend, SentinelManagedSSLConnection):
    """:class:`_PromptSentinelConnection` over TLS."""


def connect(
    target: str | RedisTarget, *, socket_timeout: float = 2.0, client_name: str | None = None
) -> Client:
    """Build an asyncio client from a URL (TLS via ``rediss://``, ACL user/password in it),
    or for the primary that Sentinel names (:class:`RedisTarget` with sentinels).

    Through Sentinel the client asks for the primary's address whenever it (re)connects
    (every Sentinel at once, the failover leader's promotion included:
    :mod:`streams.sentinel_discovery`), and a primary demoted under it answers READONLY,
    which drops the connection (a transient error for :func:`~streams.retry.call`), so it
    follows promotions. On a Redis
    Cluster, the URL names any node and the client follows ``MOVED`` to the node serving
    the namespace's (hash-tagged) slot (:mod:`streams.routing`). redis-py's own retries
    are switched off but for that one resend: all retrying goes through
    :func:`~streams.retry.call`, so an outage is retried once, with one deadline, and
    logged with its attempt count.
    """
    if isinstance(target, str):
        target = RedisTarget(target)
    common: dict[str, object] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        "health_check_interval": 0,
    }
    if not target.sentinels:
        # The one retry redis-py makes itself: a command a cluster node answered MOVED
        # (it did not run) goes once more, to the node that owns the slot.
        return _url_client(target.url, {**common, "retry": follow_moved()})
    return _sentinel_client(target, common)


def _url_client(url: str, common: dict[str, object]) -> Client:
    """A client of the server at ``url``; over TCP one that follows a Redis Cluster's
    ``MOVED`` to the node serving its namespace (:mod:`streams.routing`)."""
    kwargs: dict[str, Any] = {**common, **parse_url(url)}  # the URL wins, as in from_url
    tcp = kwargs.get("connection_class")
    if tcp is None or tcp is SSLConnection:
        kwargs["connection_class"] = RoutedSSLConnection if tcp else RoutedConnection
        kwargs["cluster_route"] = Route()
    return aioredis.Redis.from_pool(ConnectionPool(**kwargs))


def _sentinel_client(target: RedisTarget, common: dict[str, object]) -> Client:
    if target.url.startswith("unix:"):
        raise ConfigError("a unix:// URL cannot be combined with Sentinel")
    kwargs: dict[str, object] = dict(parse_url(target.url))
    for unused in ("host", "port"):
        kwargs.pop(unused, None)
    tls = kwargs.pop("connection_class", None) is SSLConnection
    tls_options = {k: v for k, v in kwargs.items() if k.startswith("ssl_")}
    sentinel_kwargs: dict[str, object] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **({"ssl": True, **tls_options} if tls else {}),
    }
    if target.sentinel_username:
        sentinel_kwargs["username"] = target.sentinel_username
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    # The role check of a promoted replica (streams.sentinel_discovery) connects as the
    # client does, without its db and name: it sends HELLO and hangs up.
    check_kwargs = {k: v for k, v in {**kwargs, **common}.items() if k not in ("db", "client_name")}
    sentinel = SentinelDiscovery(
        list(target.sentinels),
        sentinel_kwargs=sentinel_kwargs,
        primary_class=SSLConnection if tls else Connection,
        primary_kwargs=check_kwargs,
    )
    pool_kwargs: dict[str, Any] = {
        **kwargs,
        **common,
        **({"ssl": True} if tls else {}),
        "connection_class": _PromptSentinelSSLConnection if tls else _PromptSentinelConnection,
    }
    client = cast(
        "_SentinelClient",
        sentinel.master_for(target.sentinel_master, redis_class=_SentinelClient, **pool_kwargs),
    )
    client.sentinel_manager = sentinel
    return client


async def ping(client: aioredis.Redis, *, deadline_s: float) -> None:
    """Check that Redis answers (retried); :class:`RedisUnavailable` after ``deadline_s``."""
    await call(client.ping, what="ping", deadline_s=deadline_s)
