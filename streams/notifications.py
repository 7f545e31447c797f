"""Lease notifications: releases (``NS:leader:released``) and step-down requests.

Followers sleep until the holder's lease runs out, or until they hear it was released
(DESIGN §4). :meth:`ReleaseNotifications.listen` keeps a subscription up (reconnecting
after outages); :meth:`ReleaseNotifications.wait` is what a follower awaits. The same
subscription hears ``failoverctl step-down`` on ``NS:leader:stepdown``: a message naming
this process's owner id sets :attr:`ReleaseNotifications.step_down`, which the leader
awaits to hand over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.exceptions as rex

from streams.cancel import reraise_lost_cancel
from streams.connection import Client
from streams.errors import translate, translated
from streams.keys import Keys
from streams.replies import text
from streams.retry import is_retriable

log = logging.getLogger(__name__)

# Short reads: cancellation must not wait on a long blocking read.
_POLL_S = 0.5
_RECONNECT_S = 0.5


async def publish_step_down(client: Client, keys: Keys, owner: str) -> int:
    """Ask the leader ``owner`` to hand over now; how many processes heard it (0: nobody
    listens, so nothing will happen)."""
    with translated():
        heard: int = await client.publish(keys.step_down, owner)
    return heard


class ReleaseNotifications:
    """Hears lease releases of one namespace; a follower awaits :meth:`wait`."""

    def __init__(self, client: Client, keys: Keys, owner: str = "") -> None:
        self.client = client
        self.keys = keys
        self.owner = owner
        self._released = asyncio.Event()
        self.step_down = asyncio.Event()
        """Set when a step-down request naming ``owner`` is heard; the leader clears it."""
        # Set once the first subscription is up (a missing channel grant fails it instead).
        self.subscribed = asyncio.Event()

    def clear(self) -> None:
        """Forget releases heard so far (call before each attempt to acquire)."""
        self._released.clear()

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until a release is heard (since :meth:`clear`) or ``timeout_s``; True if heard."""
        if timeout_s is None:
            await self._released.wait()
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._released.wait()
        return self._released.is_set()

    async def listen(self) -> None:
        """Subscribe and note every release until cancelled; reconnect after outages.

        Raises the project's error (:mod:`streams.errors`) for a Redis error that will not
        heal by waiting (a refused password or permission).
        """
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.keys.released, self.keys.step_down)
                reraise_lost_cancel()
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_POLL_S
                    )
                    reraise_lost_cancel()
                    if message is None:
                        continue
                    if text(message["channel"]) == self.keys.released:
                        self._released.set()
                    elif self.owner and text(message["data"]) == self.owner:
                        self.step_down.set()
            except (rex.RedisError, OSError) as exc:
                if not is_retriable(exc):
                    raise translate(exc) from exc
                log.debug("release listener reconnecting: %s", exc)
                await asyncio.sleep(_RECONNECT_S)
            finally:
                with contextlib.suppress(rex.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
