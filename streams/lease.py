"""The fenced Redis lease (DESIGN §4): acquire with a new epoch, renew and release if owner.

Contention is a return value (:class:`Held`), never an exception. Redis errors propagate
to the caller (the elector decides how long to retry them, against its own deadline).
"""

from __future__ import annotations

import secrets

import msgspec
import redis.asyncio as aioredis

from schemas.errors import ScriptError
from streams import scripts
from streams.keys import Keys
from streams.replies import text


def make_owner_id(instance_id: str) -> str:
    """Return ``<instance>#<nonce>``: a restarted process never inherits its old lease."""
    return f"{instance_id}#{secrets.token_hex(6)}"


class Acquired(msgspec.Struct, frozen=True):
    """The lease is ours under ``epoch``."""

    epoch: int


class Held(msgspec.Struct, frozen=True):
    """Someone (``owner``) holds the lease for ``pttl_ms`` more milliseconds.

    A lease key without expiry (set by hand) is reported with a full TTL, so followers back
    off for a retry period instead of spinning on it. ``epoch`` is the current epoch (0 when
    none), which a follower keeps as the floor of its own next epoch.
    """

    owner: str
    pttl_ms: int
    epoch: int = 0


class Unconfirmed(msgspec.Struct, frozen=True):
    """The lease was taken under ``epoch``, but ``WAIT`` saw only ``replicas`` replicas
    confirm it in time: it was released again and the attempt counts as lost (a lease
    that a promoted replica never saw could be granted twice)."""

    epoch: int
    replicas: int


class Quarantined(msgspec.Struct, frozen=True):
    """The primary changed (a new replication id ``replid``): no one may acquire for
    ``pttl_ms`` more milliseconds (one full TTL from when the change was first seen;
    ``started``: by this attempt). ``epoch`` is the current epoch (0 when none)."""

    pttl_ms: int
    replid: str
    started: bool
    epoch: int = 0


class LeaseInfo(msgspec.Struct, frozen=True):
    """A read-only view of the lease for status and monitoring; ``quarantine_ms``: time
    left before anyone may acquire after a primary change (None: no quarantine),
    ``held_decisions``: decisions committed but waiting for the replicas."""

    owner: str | None
    pttl_ms: int | None
    epoch: int
    quarantine_ms: int | None = None
    held_decisions: int = 0


class Lease:
    """Acquire, renew and release one namespace's lease on behalf of one owner."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        owner: str,
        ttl_ms: int,
        *,
        min_replicas: int = 0,
        confirm_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.min_replicas = min_replicas
        self.confirm_timeout_ms = confirm_timeout_ms
        # The replication id of the primary the last acquire attempt ran on: if Redis lost
        # its keys, this is how the acquire script still sees that the primary changed.
        self.seen_replid = ""
        self._acquire = scripts.register(redis, "acquire")
        self._renew = scripts.register(redis, "renew")
        self._release = scripts.register(redis, "release")

    async def acquire(self, seen_epoch: int = 0) -> Acquired | Held | Unconfirmed | Quarantined:
        """Try once to take the lease; return the new epoch or who holds it.

        After the primary changed (its replication id differs from the one the lease was
        last contended on) nobody acquires for one TTL: :class:`Quarantined` (see
        ``streams/lua/acquire.lua``).

        With ``min_replicas`` > 0 a taken lease counts only once ``WAIT min_replicas``
        confirms it within ``confirm_timeout_ms``; otherwise it is released at once and the
        result is :class:`Unconfirmed`. WAIT counts the writes of its own connection, so
        the acquire and the WAIT share one connection.

        The new epoch is larger than the current one, than the server's TIME in ms and than
        ``seen_epoch`` (the largest epoch the caller knows of), so epochs never go back even
        when Redis lost its data (see ``streams/lua/acquire.lua``). Re-entrant: if the lease
        already names this owner (an earlier acquire ran but its reply was lost), it is taken
        again under a new epoch, which fences that earlier term.
        """
        if self.min_replicas == 0:
            return self._parse(await self._acquire_on(None, seen_epoch))
        async with self.redis.client() as conn:
            result = self._parse(await self._acquire_on(conn, seen_epoch))
            if not isinstance(result, Acquired):
                return result
            replicas = int(await conn.wait(self.min_replicas, self.confirm_timeout_ms))
            if replicas >= self.min_replicas:
                return result
            await self._release(
                keys=[self.keys.leader, self.keys.epoch],
                args=[self.owner, self.keys.released, result.epoch],
                client=conn,
            )
            return Unconfirmed(epoch=result.epoch, replicas=replicas)

    async def _acquire_on(self, conn: aioredis.Redis | None, seen_epoch: int) -> object:
        keys = self.keys
        return await self._acquire(
            keys=[keys.leader, keys.epoch, keys.primary, keys.quarantine],
            args=[self.owner, self.ttl_ms, seen_epoch, self.seen_replid],
            client=conn,
        )

    def _parse(self, reply: object) -> Acquired | Held | Quarantined:
        if not isinstance(reply, list) or len(reply) not in (3, 5):
            raise ScriptError(f"acquire script answered {reply!r}")
        code = int(reply[0])
        self.seen_replid = text(reply[4] if code == 0 else reply[2])
        if code == 1:
            return Acquired(epoch=int(reply[1]))
        if code == 2:
            return Quarantined(
                pttl_ms=int(reply[1]),
                replid=self.seen_replid,
                started=int(reply[3]) == 1,
                epoch=int(reply[4]) if reply[4] is not None else 0,
            )
        holder = text(reply[1]) if reply[1] is not None else ""
        pttl = int(reply[2])
        epoch = int(reply[3]) if reply[3] is not None else 0
        return Held(owner=holder, pttl_ms=self.ttl_ms if pttl == -1 else max(pttl, 0), epoch=epoch)

    async def renew(self, epoch: int) -> bool:
        """Extend the lease by its TTL if we still own it under ``epoch``."""
        reply = await self._renew(
            keys=[self.keys.leader, self.keys.epoch], args=[self.owner, self.ttl_ms, epoch]
        )
        return int(reply) == 1

    async def release(self, epoch: int) -> bool:
        """Delete the lease if we own it under ``epoch`` and tell followers.

        Returns False if it was not ours: a release from an earlier term that reaches Redis
        late must not delete a newer term's lease.
        """
        reply = await self._release(
            keys=[self.keys.leader, self.keys.epoch],
            args=[self.owner, self.keys.released, epoch],
        )
        return int(reply) == 1


async def read_lease(redis: aioredis.Redis, keys: Keys) -> LeaseInfo:
    """Read owner, remaining TTL, current epoch, quarantine and held decisions in one
    round trip."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.leader)
        pipe.pttl(keys.leader)
        pipe.get(keys.epoch)
        pipe.pttl(keys.quarantine)
        pipe.llen(keys.held_decisions)
        owner, pttl, epoch, quarantine, held = await pipe.execute()
    return LeaseInfo(
        owner=text(owner) if owner is not None else None,
        pttl_ms=int(pttl) if owner is not None and int(pttl) >= 0 else None,
        epoch=int(epoch) if epoch is not None else 0,
        quarantine_ms=int(quarantine) if int(quarantine) >= 0 else None,
        held_decisions=int(held),
    )
