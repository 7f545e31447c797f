"""The leader's publisher of held decisions (``FAILOVER_MIN_REPLICAS`` > 0, DESIGN §4 v2).

The fenced commit holds decisions back (``NS:decisions:held``); this task, one per term,
makes them visible on ``NS:decisions`` once ``WAIT`` confirmed them on the replicas
(:class:`streams.publish.HeldDecisions`). It runs beside the pipeline rather than inside a
commit, so replicas that are slow or gone delay decisions, never the reading and acking
of input. The pipeline pokes it after every commit that left decisions held, and at the
start of a term (the first commit, ``leader_changed``, is held too, so decisions an earlier
leader left held are published by this one, after its own confirmation). While replicas do
not confirm it retries, each attempt waiting at most the confirm timeout in ``WAIT``.
A fenced round ends the task (and the term); a Redis outage past the deadline raises
:class:`~schemas.errors.RedisUnavailable`, as in the pipeline.
"""

from __future__ import annotations

import asyncio
import logging

from streams.cancel import cancel_and_wait
from streams.commit import Fenced
from streams.connection import Client
from streams.errors import translated
from streams.keys import Keys
from streams.publish import HeldDecisions, Round
from streams.retry import call
from workers.coordinator.leadership import Leadership
from workers.settings import Settings

log = logging.getLogger(__name__)

_MAX_CONFIRM_MS = 1000


class Publisher:
    """Publishes held decisions in rounds until fenced; :meth:`poke` after a held commit.

    Without ``held`` (decisions are not held, N = 0) every method does nothing.
    """

    def __init__(self, held: HeldDecisions | None, *, deadline_s: float = 0.0) -> None:
        self.held = held
        self.published = 0
        self._deadline_s = deadline_s
        self._wake = asyncio.Event()
        # Rounds in a row that WAIT did not confirm (logged on the first and on recovery).
        self._unconfirmed = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_term(
        cls, redis: Client, keys: Keys, settings: Settings, leadership: Leadership
    ) -> Publisher:
        """The publisher of one term (one that does nothing when N = 0)."""
        if settings.min_replicas == 0:
            return cls(None)
        held = HeldDecisions(
            redis,
            keys,
            leadership.owner,
            leadership.epoch,
            min_replicas=settings.min_replicas,
            # Short, so cancelling a term is prompt (a blocking call may ignore a cancel).
            confirm_timeout_ms=min(settings.renew_interval_ms, _MAX_CONFIRM_MS),
            decisions_maxlen=settings.decisions_maxlen,
        )
        return cls(held, deadline_s=settings.renew_deadline_ms / 1000)

    def start(self) -> None:
        """Run :meth:`run` in a task of its own (one per term)."""
        if self.held is not None:
            self._task = asyncio.create_task(self._run(self.held), name="publish")

    def ended(self) -> bool:
        """True once the task ended (fenced); its failure, if any, is raised here."""
        task = self._task
        if task is None or not task.done():
            return False
        task.result()  # RedisUnavailable ends the term; anything else is a bug
        return True

    async def stop(self) -> None:
        """Cancel the task and wait for it; held decisions stay for the next round or term."""
        if self._task is not None:
            await cancel_and_wait(self._task)

    def poke(self) -> None:
        """Decisions were held by a commit: publish them once confirmed."""
        self._wake.set()

    async def _run(self, held: HeldDecisions) -> None:
        """Publish until fenced (returns) or cancelled; RedisUnavailable propagates."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                with translated():
                    got = await call(
                        held.step, what="publish decisions", deadline_s=self._deadline_s
                    )
                if isinstance(got, Fenced):
                    log.error(
                        "fenced on publish: held decisions left to the next leader epoch=%s",
                        held.epoch,
                    )
                    return
                self._report(held, got)
                if got.held == 0:
                    break

    def _report(self, held: HeldDecisions, got: Round) -> None:
        if got.published:
            self.published += len(got.published)
            log.info(
                "published %s held decision(s) confirmed on %s replica(s): %s epoch=%s",
                len(got.published),
                held.min_replicas,
                ",".join(got.published),
                held.epoch,
            )
        if not got.confirmed:
            if self._unconfirmed == 0:
                log.warning(
                    "%s decision(s) held: WAIT saw %s of %s replicas within %sms; retrying"
                    " epoch=%s",
                    got.held,
                    got.replicas,
                    got.wanted,
                    held.confirm_timeout_ms,
                    held.epoch,
                )
            self._unconfirmed += 1
        elif self._unconfirmed:
            log.info(
                "held decisions confirmed again after %s round(s) epoch=%s",
                self._unconfirmed,
                held.epoch,
            )
            self._unconfirmed = 0
