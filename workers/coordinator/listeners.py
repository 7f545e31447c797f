"""What an elector hears in the background, and how it sleeps until it hears something.

Lease releases and step-down requests (:class:`~streams.notifications.ReleaseNotifications`)
and, when Redis is found through Sentinel, primary switches
(:class:`~streams.sentinel_watch.SwitchWatch`: the failover leader's promotion, then each
Sentinel's switch): one wakes a campaigning elector at once, so its next attempt reaches
the new primary and the quarantine after a primary change starts right after the
promotion, not up to a retry period later.
"""

from __future__ import annotations

import asyncio

from streams.cancel import cancel_and_wait
from streams.connection import Client
from streams.keys import Keys
from streams.notifications import ReleaseNotifications
from streams.sentinel_watch import watch_switches


class Listeners:
    """The background subscriptions of one elector, as one task (:meth:`start`)."""

    def __init__(self, redis: Client, keys: Keys, owner: str, stopping: asyncio.Event) -> None:
        self.releases = ReleaseNotifications(redis, keys, owner)
        self.switches = watch_switches(redis)  # None: not through Sentinel
        self._stopping = stopping
        self.task: asyncio.Task[None] | None = None

    @property
    def switched(self) -> asyncio.Event | None:
        """Set when Sentinel announced a primary switch since :meth:`clear` (None: no
        Sentinel)."""
        return self.switches.switched if self.switches is not None else None

    def start(self) -> asyncio.Task[None]:
        """Start listening; the task ends only by cancellation or of an error that will
        not heal by waiting (e.g. a refused password or channel grant)."""
        self.task = asyncio.create_task(self._listen(), name="lease-release-listener")
        return self.task

    async def _listen(self) -> None:
        if self.switches is None:
            await self.releases.listen()
            return
        tasks = [
            asyncio.create_task(self.releases.listen(), name="release-listener"),
            asyncio.create_task(self.switches.listen(), name="switch-watch"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            await cancel_and_wait(*tasks)

    def failure(self) -> BaseException | None:
        """The error the listening task died of, if it did."""
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def wait_subscribed(self, timeout_s: float) -> None:
        """Give the release listener ``timeout_s`` to subscribe, so a refused subscription
        (no ACL grant on the channel) stops the process at start; raise its error."""
        assert self.task is not None, "start() first"
        subscribed = asyncio.create_task(self.releases.subscribed.wait())
        try:
            await asyncio.wait(
                {subscribed, self.task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            await cancel_and_wait(subscribed)
        failure = self.failure()
        if failure is not None:
            raise failure

    def clear(self) -> None:
        """Forget releases and switches heard so far (call before each attempt)."""
        self.releases.clear()
        if self.switches is not None:
            self.switches.switched.clear()

    async def sleep(self, seconds: float, *, wake_on_release: bool) -> None:
        """Sleep ``seconds``, or until the elector stops, a primary switch is heard, or
        (with ``wake_on_release``) a lease release is heard."""
        tasks: list[asyncio.Task[bool]] = [asyncio.create_task(self._stopping.wait())]
        if wake_on_release:
            tasks.append(asyncio.create_task(self.releases.wait()))
        if self.switches is not None:
            tasks.append(asyncio.create_task(self.switches.switched.wait()))
        try:
            await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*tasks)
