"""Redis Cluster: the namespace's hash-tag rule, and asking a server whether it is one.

A namespace with a hash tag (``{failover}``) puts every key of the contract in one slot, so
one node serves all of them: each script, transaction, ``WAIT`` and blocking read runs on
that node exactly as on a single server. A client therefore talks to one node at a time.
``FAILOVER_REDIS_URL`` names any node; the first keyed command sent elsewhere is answered
``MOVED <slot> <host:port>``; the connection (:class:`~streams.routing.RoutedConnection`)
remembers that address, drops itself and raises a transient error, so
:func:`streams.retry.call` retries it on a connection to the owner. A reshard of the
namespace's slot, or a replica the cluster promotes, is followed the same way; while the
slot is half-moved, ``ASK`` and ``TRYAGAIN`` are transient too. Reshards of other slots
never reach the client: it only sends commands for its own. Pub/sub (the lease release
channel) works on any node: a plain ``PUBLISH``, from a script too, reaches the whole
cluster.

Whether the server is a cluster is asked with ``HELLO`` (its ``mode`` field; any user may
send it, whatever its ACL), see :func:`server_mode`.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as rex

from schemas.errors import ConfigError
from streams.connection import Client
from streams.errors import translated

NAMESPACE_SETTING = "FAILOVER_NAMESPACE"


def hash_tag(namespace: str) -> str | None:
    """The hash tag every key under ``namespace`` hashes by, or None if it has none.

    Redis hashes a key by the part between its first ``{`` and the first ``}`` after it,
    if that part is not empty. The tag must close inside the namespace: otherwise the
    rest of each key name (``:members:<owner>``) would decide where the tag ends.
    """
    start = namespace.find("{")
    if start < 0:
        return None
    end = namespace.find("}", start + 1)
    if end <= start + 1:
        return None
    return namespace[start + 1 : end]


def namespace_refusal(namespace: str) -> str:
    """The one line a process exits with when a cluster meets an untagged namespace."""
    return (
        f"{NAMESPACE_SETTING}: Redis is a cluster, so the namespace needs a hash tag to keep"
        f" its keys in one slot (e.g. {{{namespace or 'failover'}}}), got {namespace!r}"
    )


async def server_mode(redis: Client) -> str:
    """``standalone``, ``cluster`` or ``sentinel``, as the server's ``HELLO`` says (a
    server too old for HELLO is standalone)."""
    with translated():
        try:
            reply: Any = await redis.execute_command("HELLO")  # type: ignore[no-untyped-call]
        except rex.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                return "standalone"
            raise
    fields = _fields(reply)
    mode = fields.get("mode", "standalone")
    return mode.decode() if isinstance(mode, bytes) else str(mode)


def _fields(reply: Any) -> dict[str, Any]:
    if isinstance(reply, dict):
        return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in reply.items()}
    # RESP2: a flat list of field, value, field, value...
    pairs = zip(reply[::2], reply[1::2], strict=True)
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in pairs}


async def check_namespace(redis: Client, namespace: str) -> None:
    """Raise :class:`ConfigError` if the server is a cluster and ``namespace`` has no hash
    tag (one HELLO; Redis errors propagate like any command's)."""
    if hash_tag(namespace) is not None:
        return
    if await server_mode(redis) == "cluster":
        raise ConfigError(namespace_refusal(namespace))
