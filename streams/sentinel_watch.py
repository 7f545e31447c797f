"""Hears Sentinel announce a new primary for the master a client follows (DESIGN §4 v2).

Without it a process learns of a promotion only when its next attempt happens to reach the
new primary: up to a retry period plus a reconnect backoff after the switch. The Sentinel
leading a failover publishes ``+promoted-slave slave <name> <ip> <port> @ <master>
<old-ip> <old-port>`` as soon as the replica it promoted reports itself master (the
moment it starts naming it in ``SENTINEL GET-MASTER-ADDR-BY-NAME``, which the client's
discovery uses: :mod:`streams.sentinel_discovery`); every Sentinel publishes
``+switch-master <master> <old-ip> <old-port> <new-ip> <new-port>`` when it adopts the new
primary (the others when the leader's hello reaches them, up to ~100 ms later; the leader
at the failover's end). This subscribes to both on all of them: any one that is down or
slow does not delay the news. On either the client's idle connections are closed (they
may point at the old primary, whose host may no longer answer), then :attr:`switched` is
set for whoever waits on it (the elector).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.exceptions as rex

from streams.cancel import cancel_and_wait, reraise_lost_cancel
from streams.connection import Client
from streams.errors import translate
from streams.replies import text
from streams.retry import is_retriable

log = logging.getLogger(__name__)

_SWITCH = "+switch-master"
_PROMOTED = "+promoted-slave"
# Short reads: cancellation must not wait on a long blocking read.
_POLL_S = 0.5
# Reconnect backoff for one Sentinel: from this, doubling, up to _MAX_BACKOFF_S.
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


class SwitchWatch:
    """Subscriptions to every Sentinel's ``+switch-master`` and ``+promoted-slave``,
    filtered on one master."""

    def __init__(self, client: Client, master: str, sentinels: list[Any]) -> None:
        self.client = client
        self.master = master
        self._sentinels = list(sentinels)  # redis-py reorders its own list: keep ours
        self.switched = asyncio.Event()
        """Set on each switch or promotion heard; the waiter clears it."""
        self.primary: tuple[str, int] | None = None
        """The primary the last switch or promotion message named."""
        self.subscribed = 0
        """How many Sentinels the watch is subscribed to right now."""

    async def listen(self) -> None:
        """Watch every Sentinel until cancelled (each reconnects on its own after errors).

        Raises the project's error (:mod:`streams.errors`) for one that will not heal by
        waiting (a refused password).
        """
        tasks = [
            asyncio.create_task(self._watch(sentinel), name=f"switch-watch-{n}")
            for n, sentinel in enumerate(self._sentinels)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(*tasks)

    async def _watch(self, sentinel: Any) -> None:
        where = _address(sentinel)
        backoff = _FIRST_BACKOFF_S
        while True:
            pubsub = sentinel.pubsub()
            up = False
            try:
                await pubsub.subscribe(_SWITCH, _PROMOTED)
                reraise_lost_cancel()
                up, backoff = True, _FIRST_BACKOFF_S
                self.subscribed += 1
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_POLL_S
                    )
                    reraise_lost_cancel()
                    if message is not None:
                        await self._heard(where, text(message["channel"]), text(message["data"]))
            except (rex.RedisError, OSError) as exc:
                if not is_retriable(exc):
                    raise translate(exc) from exc
                log.debug("switch watch on sentinel %s reconnecting: %s", where, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            finally:
                if up:
                    self.subscribed -= 1
                with contextlib.suppress(rex.RedisError, OSError):
                    await pubsub.aclose()

    async def _heard(self, where: str, channel: str, data: str) -> None:
        new = self._named(channel, data.split())
        if new is None:
            return
        if new != self.primary:
            log.info(
                "primary switch heard: sentinel %s says %s %s (new primary %s:%s)",
                where,
                channel,
                data,
                *new,
            )
            self.primary = new
        # Idle connections may still point at the old primary: closed, they ask Sentinel
        # for the new one when next used. (Connections in use fail or finish by themselves.)
        # Those already on the new one stay: the other Sentinels' +switch-master comes
        # after the promotion the client may already have followed.
        idle = getattr(self.client.connection_pool, "_available_connections", ())
        for connection in list(idle):
            if (connection.host, connection.port) != new:
                with contextlib.suppress(rex.RedisError, OSError):
                    await connection.disconnect()
        self.switched.set()

    def _named(self, channel: str, fields: list[str]) -> tuple[str, int] | None:
        """The new primary a message of ours names; None for another master's."""
        if channel == _SWITCH:
            # <master> <old-ip> <old-port> <new-ip> <new-port>
            if len(fields) == 5 and fields[0] == self.master and fields[4].isdigit():
                return fields[3], int(fields[4])
        elif (
            # slave <name> <ip> <port> @ <master> <old-ip> <old-port>
            channel == _PROMOTED
            and len(fields) == 8
            and (fields[0], fields[4], fields[5]) == ("slave", "@", self.master)
            and fields[3].isdigit()
        ):
            return fields[2], int(fields[3])
        return None


def watch_switches(client: Client) -> SwitchWatch | None:
    """A :class:`SwitchWatch` for a client :func:`~streams.connection.connect` built through
    Sentinel; None for any other client (nothing to watch)."""
    manager = getattr(client, "sentinel_manager", None)
    pool = client.connection_pool
    master = getattr(pool, "service_name", None)
    if manager is None or not isinstance(master, str):
        return None
    return SwitchWatch(client, master, list(manager.sentinels))


def _address(sentinel: Any) -> str:
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
