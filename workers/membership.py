"""This process's membership of the fleet: its heartbeat ``NS:members:<owner>`` (DESIGN §4 v2).

:func:`workers.runtime.run` creates one :class:`Membership` per process and runs its
heartbeat loop beside the process's work; the coordinator adds its own view (the term it
leads) through :meth:`Membership.see`. The heartbeat never ends the process: while Redis
is unreachable it is skipped (one warning when it starts failing, one line when it is
back), and the process's own work reports the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from importlib import metadata

from schemas.errors import FailoverError
from schemas.members import Heartbeat
from streams.connection import Client, connect
from streams.keys import Keys
from streams.lease import make_owner_id
from streams.members import forget, prune, read_leader, write_heartbeat
from streams.retry import call
from workers.settings import Settings

log = logging.getLogger("workers.membership")

# Old entries of the fleet index are pruned every this many heartbeats.
_PRUNE_EVERY = 100

_current: Membership | None = None


def _version() -> str:
    try:
        return metadata.version("failover-coordinator")
    except metadata.PackageNotFoundError:
        return "unknown"


class Membership:
    """Who this process is in the fleet, and the loop that says so every interval."""

    def __init__(self, role: str, settings: Settings) -> None:
        self.role = role
        self.settings = settings
        self.owner = make_owner_id(settings.instance_id)
        self.keys = Keys(settings.namespace)
        self.interval_ms = settings.heartbeat_interval_ms
        self.started_at = time.time()
        self.beats = 0
        self._own: dict[str, str | int] = {}
        self._redis: Client | None = None
        self._failing = False

    def see(self, *, leader: str | None = None, epoch: int | None = None) -> None:
        """Report this process's own view of the lease (a leader: its term); ``None``
        clears it, and the heartbeat shows what Redis says instead."""
        for name, value in (("leader", leader), ("epoch", epoch)):
            if value is None:
                self._own.pop(name, None)
            else:
                self._own[name] = value

    def see_config(
        self, version: int, drift: Mapping[str, tuple[int | float, int | float]]
    ) -> None:
        """Report the policy configuration version in force and how this process's
        environment differs from it (a leader knows both)."""
        self._own["config_version"] = str(version)
        self._own["config_drift"] = "; ".join(
            f"{name} env={env} in force={in_force}" for name, (env, in_force) in drift.items()
        )

    def heartbeat(self, leader: str, epoch: int) -> Heartbeat:
        """This process's heartbeat now, given the lease as Redis shows it."""
        own = self._own
        return Heartbeat(
            role=self.role,
            instance=self.settings.instance_id,
            owner=self.owner,
            pid=os.getpid(),
            host=socket.gethostname(),
            version=_version(),
            started_at=self.started_at,
            at=time.time(),
            interval_ms=self.interval_ms,
            leader=str(own.get("leader", leader)),
            epoch=int(own.get("epoch", epoch)),
            config_version=str(own.get("config_version", "")),
            config_drift=str(own.get("config_drift", "")),
        )

    async def run(self) -> None:
        """Write the heartbeat every interval until cancelled."""
        self._redis = connect(self.settings.redis_target, client_name=f"{self.role}:heartbeat")
        interval_s = self.interval_ms / 1000
        next_at = time.monotonic()
        while True:
            await self._beat(interval_s)
            next_at = max(next_at + interval_s, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _beat(self, deadline_s: float) -> None:
        redis = self._redis
        assert redis is not None

        async def beat() -> None:
            view = await read_leader(redis, self.keys)
            await write_heartbeat(redis, self.keys, self.heartbeat(view.leader, view.epoch))
            if self.beats % _PRUNE_EVERY == 0:
                await prune(redis, self.keys, int(time.time() * 1000))

        try:
            await call(beat, what="heartbeat", deadline_s=deadline_s)
        except FailoverError as exc:
            if not self._failing and self.beats:
                log.warning("heartbeat not written (retrying every interval): %s", exc)
            self._failing = True
            return
        if self._failing and self.beats:
            log.info("heartbeat written again")
        self._failing = False
        self.beats += 1

    async def close(self, *, leave: bool) -> None:
        """Stop: on a clean exit (``leave``) remove this process from the fleet, so it is
        not listed as missing; close the client."""
        redis, self._redis = self._redis, None
        if redis is None:
            return
        if leave and self.beats:
            with contextlib.suppress(FailoverError):
                await call(
                    lambda: forget(redis, self.keys, self.owner), what="leave", deadline_s=0.5
                )
        with contextlib.suppress(Exception):
            await redis.aclose()


def set_membership(membership: Membership) -> Membership:
    """Make ``membership`` this process's (done by :func:`workers.runtime.run`)."""
    global _current  # noqa: PLW0603 - one membership per process, like the process itself
    _current = membership
    return membership


def current_membership() -> Membership | None:
    """This process's membership, or None outside :func:`workers.runtime.run`."""
    return _current
