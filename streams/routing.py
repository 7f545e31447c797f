"""Connections that follow ``MOVED`` to the node serving the namespace's slot (Redis Cluster).

:func:`streams.connection.connect` builds every TCP client with these classes; against a
single server no ``MOVED`` ever comes and they behave as redis-py's own. A ``MOVED``
re-routes the client (:class:`Route`), drops the connection and the command is sent again,
once, to the owner: a ``MOVED`` means it did not run. See
:mod:`streams.cluster` for why one node at a time is enough.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as rex
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streams.prompt import PromptSend


class MovedAway(rex.ConnectionError):
    """The node answered ``MOVED``: the command did not run there, and this connection is
    dropped. redis-py sends the command once more (to the owner, :func:`follow_moved`);
    a second ``MOVED`` in a row is a transient error for :func:`streams.retry.call`."""


def follow_moved() -> Retry:
    """redis-py's own retry policy for these connections: resend a command (or a whole
    pipeline or transaction: a ``MOVED`` aborts it unrun) once after a ``MOVED``, and
    nothing else (every other retry is :func:`streams.retry.call`'s)."""
    return Retry(NoBackoff(), 1, supported_errors=(MovedAway,))


class Route:
    """Where one client's namespace lives: the URL's node, until a ``MOVED`` names another.

    One per client (shared by its connection pool), so every connection of the client
    follows a redirect that any of them met.
    """

    def __init__(self) -> None:
        self.owner: tuple[str, int] | None = None

    def moved(self, host: str, port: int) -> None:
        """Remember the node a ``MOVED`` named."""
        self.owner = (host, port)

    def forget(self, address: tuple[str, int]) -> None:
        """Go back to the URL's node (``address`` did not answer)."""
        if self.owner == address:
            self.owner = None


class RoutedConnection(PromptSend, Connection):
    """A TCP connection to the node that owns the namespace's slot, once a ``MOVED`` told
    which one (the URL's node until then, or again after the owner stopped answering)."""

    def __init__(self, *, cluster_route: Route, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._route = cluster_route
        self._seed = (self.host, self.port)

    async def _connect(self) -> None:
        target = self._route.owner or self._seed
        self.host, self.port = target
        try:
            await super()._connect()  # type: ignore[no-untyped-call]
        except Exception:
            if target != self._seed:  # the learned owner is gone: ask the URL's node again
                self._route.forget(target)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read one reply; a ``MOVED`` re-routes the client and drops this connection."""
        try:
            return await super().read_response(*args, **kwargs)
        except rex.MovedError as exc:
            host = exc.host if exc.host not in ("", "?") else self._seed[0]
            self._route.moved(host, exc.port)
            await self.disconnect()
            raise MovedAway(
                f"MOVED: slot {exc.slot_id} is served by {host}:{exc.port}; reconnecting there"
            ) from exc


class RoutedSSLConnection(RoutedConnection, SSLConnection):
    """:class:`RoutedConnection` over TLS (``rediss://``)."""
