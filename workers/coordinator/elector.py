"""Leader election over the fenced lease (DESIGN §4), in the manner of Patroni's ``ha.py``.

The leader renews every ``renew_interval``; "not owner" ends leadership at once, and Redis
errors are retried until ``renew_deadline`` measured on the monotonic clock from the *send*
time of the last good renew, so it always steps down before its lease can expire in Redis.
Followers sleep until the holder's lease runs out (bounded by the retry period) or wake on
the release message. Leader work runs in a task that is cancelled and awaited on demotion.
After a Redis primary change nobody acquires for one TTL (:mod:`.quarantine`); through
Sentinel the failover leader's ``+promoted-slave`` (and every ``+switch-master``) wakes
every campaigner at once (:mod:`.listeners`), so the quarantine starts right after the
promotion.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from schemas.errors import RedisUnavailable
from streams.cancel import cancel_and_wait
from streams.connection import Client
from streams.keys import Keys
from streams.lease import Acquired, Lease, Quarantined, Unconfirmed
from streams.retry import call
from workers.coordinator.leadership import (
    DemotionReason,
    ElectorTiming,
    Leadership,
    MayLead,
    OnDemoted,
    OnElected,
    Work,
)
from workers.coordinator.listeners import Listeners
from workers.coordinator.quarantine import Quarantine
from workers.coordinator.stalls import STALL_S, watch_stalls
from workers.runtime import redis_outage

log = logging.getLogger(__name__)

# Followers wake this long after the holder's lease should have expired, so that their
# acquire lands after expiry in Redis rather than a hair before it.
_EXPIRY_MARGIN_MS = 2


class Elector:
    """Campaigns for the lease, runs leader work while it holds it, and steps down safely."""

    def __init__(
        self,
        redis: Client,
        keys: Keys,
        owner: str,
        timing: ElectorTiming,
        *,
        on_elected: OnElected | None = None,
        on_demoted: OnDemoted | None = None,
        may_lead: MayLead | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.owner = owner
        self.timing = timing
        # WAIT for the replicas at most a retry period: the lease must still have most of
        # its TTL left when leading starts.
        self.lease = Lease(
            redis,
            keys,
            owner,
            timing.ttl_ms,
            min_replicas=timing.min_replicas,
            confirm_timeout_ms=timing.retry_period_ms,
        )
        self.leadership: Leadership | None = None
        self.quarantine = Quarantine()
        self.leadership_changes = 0
        # Monotonic *send* time of the last renew Redis confirmed (or of the acquisition) in
        # the current or most recent term: the lease lives in Redis until at least this +
        # ttl, and the leader steps down by this + renew_deadline. None before any term.
        self.renewed_at: float | None = None
        # The largest epoch this process has seen (its own terms, the holders it was refused
        # by): the floor of its next epoch, so a promoted primary whose clock is behind the
        # old one's still cannot hand out an epoch that goes back.
        self.seen_epoch = 0
        self._on_elected = on_elected
        self._on_demoted = on_demoted
        self._may_lead = may_lead
        # Why the last election attempt was not made (None: it was).
        self.refusal: str | None = None
        self._stopping = asyncio.Event()
        self._listeners = Listeners(redis, keys, owner, self._stopping)
        # The lease holder this process last saw, so a change is logged once.
        self.seen_leader: str | None = None
        # The longest event-loop stall measured in the current term (seconds).
        self.stalled_s = 0.0

    @property
    def is_leader(self) -> bool:
        """True while this elector holds the lease and runs leader work."""
        return self.leadership is not None

    def stop(self) -> None:
        """Ask :meth:`run` to stop: leader work is cancelled, the lease released, run returns."""
        self._stopping.set()

    async def run(self, work: Work) -> None:
        """Campaign and lead until :meth:`stop`; an unexpected error in ``work`` propagates.

        Cancelling ``run`` is a crash, not a shutdown: leader work is cancelled and awaited,
        but the lease is not released (followers take over when it expires) and
        ``on_demoted`` is not called. Use :meth:`stop` for a clean handoff.
        """
        listener = self._listeners.start()
        try:
            await self._listeners.wait_subscribed(self.timing.retry_period_ms / 1000)
            while not self._stopping.is_set():
                leadership = await self._campaign()
                if leadership is None:
                    return
                reason = await self._lead(leadership, work)
                if reason == "shutdown" or self._stopping.is_set():
                    return
                await self._pause_before_reelection()
        finally:
            await cancel_and_wait(listener)
            failure = None if listener.cancelled() else listener.exception()
            if failure is not None:
                raise failure  # the listener only dies of bugs (e.g. a refused password)

    async def _campaign(self) -> Leadership | None:
        retry_s = self.timing.retry_period_ms / 1000
        while not self._stopping.is_set():
            self._listeners.clear()
            failure = self._listeners.failure()
            if failure is not None:  # e.g. no ACL grant on the release channel
                raise failure
            try:
                if await self._refused(retry_s):
                    await self._sleep_or_wake(retry_s, wake_on_release=False)
                    continue
                sent = time.monotonic()
                result = await call(
                    lambda: self.lease.acquire(self.seen_epoch),
                    what="acquire",
                    # Room for the WAIT too (a confirm timeout is one retry period).
                    deadline_s=retry_s * (2 if self.timing.min_replicas else 1),
                    # A primary switch Sentinel announced ends a backoff pause at once.
                    wake=self._listeners.switched,
                )
            except RedisUnavailable as exc:
                redis_outage.failed(log, "campaign for the lease", exc)
                await self._sleep_or_wake(retry_s, wake_on_release=False)
                continue
            redis_outage.recovered(log)
            self.seen_epoch = max(self.seen_epoch, result.epoch)
            if isinstance(result, Quarantined):
                await self._sleep_or_wake(
                    self.quarantine.refused(result, sent), wake_on_release=False
                )
                continue
            self.quarantine.over()
            if isinstance(result, Unconfirmed):
                log.warning(
                    "lease epoch=%s confirmed by %s of %s replicas within %sms: released,"
                    " attempt lost",
                    result.epoch,
                    result.replicas,
                    self.timing.min_replicas,
                    self.timing.retry_period_ms,
                )
                await self._sleep_or_wake(retry_s, wake_on_release=False)
                continue
            if isinstance(result, Acquired):
                return Leadership(
                    owner=self.owner,
                    epoch=result.epoch,
                    acquired_at=sent,
                    elected_at=time.monotonic(),
                )
            wait_ms = min(result.pttl_ms + _EXPIRY_MARGIN_MS, self.timing.retry_period_ms) + (
                random.uniform(0, self.timing.follower_jitter_ms)
            )
            if result.owner != self.seen_leader:
                log.info(
                    "leader changed: %s leads (lease %sms left); following",
                    result.owner,
                    result.pttl_ms,
                )
                self.seen_leader = result.owner
            log.debug(
                "lease held by %s for %sms; waiting %.0fms", result.owner, result.pttl_ms, wait_ms
            )
            await self._sleep_or_wake(wait_ms / 1000, wake_on_release=True)
        return None

    async def _refused(self, retry_s: float) -> bool:
        """Ask ``may_lead``; log its refusal (one line per attempt) and return True if any."""
        if self._may_lead is None:
            return False
        # Its first round trip after a primary loss meets the outage too: a promotion
        # Sentinel announces cuts its retry pause short, as for the acquire.
        self.refusal = await call(
            self._may_lead,
            what="check leading",
            deadline_s=retry_s,
            wake=self._listeners.switched,
        )
        if self.refusal is None:
            return False
        log.error("%s owner=%s", self.refusal, self.owner)
        return True

    async def _lead(self, leadership: Leadership, work: Work) -> DemotionReason:
        self.leadership = leadership
        self.renewed_at = leadership.acquired_at
        self.leadership_changes += 1
        self.stalled_s = 0.0
        log.info(
            "leader changed: this process leads owner=%s epoch=%s (after %s)",
            leadership.owner,
            leadership.epoch,
            self.seen_leader or "no leader",
        )
        self.seen_leader = leadership.owner
        if self._on_elected is not None:
            self._on_elected(leadership)
        self._listeners.releases.step_down.clear()  # a request is for the term it was sent in
        work_task = asyncio.create_task(work(leadership), name=f"leader-work-{leadership.epoch}")
        renew_task = asyncio.create_task(self._renew(leadership), name="lease-renew")
        stall_task = asyncio.create_task(
            watch_stalls(leadership.epoch, self._stalled), name="stalls"
        )
        stop_task = asyncio.create_task(self._stopping.wait(), name="stop-wait")
        step_down_task = asyncio.create_task(
            self._listeners.releases.step_down.wait(), name="step-down"
        )
        crash: BaseException | None = None
        # The release listener lives across terms; a refusal it meets while this process
        # leads (e.g. no grant on the channel, noticed late on a loaded host) ends the term.
        listener = self._listeners.task
        watched = {work_task, renew_task, stop_task, step_down_task}
        if listener is not None:
            watched.add(listener)
        try:
            try:
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(work_task, renew_task, stop_task, step_down_task, stall_task)
        except asyncio.CancelledError:
            # run() was cancelled (a crash): the work is gone, so is_leader must say so.
            self.leadership = None
            raise
        reason: DemotionReason
        if listener is not None and listener.done() and not listener.cancelled():
            crash = listener.exception() or RuntimeError("lease-release listener ended")
            reason = "work_ended"
        elif (
            renew_task.done() and not renew_task.cancelled() and renew_task.exception() is not None
        ):
            # The renew loop returns a reason; anything it raises is a bug (a ScriptError, a
            # non-retriable reply): step down, hand the lease on, then let the bug surface.
            crash = renew_task.exception()
            reason = "work_ended"
        elif renew_task.done() and not renew_task.cancelled():
            reason = renew_task.result()
        elif stop_task.done() and not stop_task.cancelled():
            reason = "shutdown"
        elif step_down_task.done() and not step_down_task.cancelled():
            reason = "step_down"  # failoverctl step-down: release, then pause like any loss
        elif not work_task.cancelled() and work_task.exception() is not None:
            crash = work_task.exception()
            reason = "redis_unavailable" if isinstance(crash, RedisUnavailable) else "work_ended"
        else:
            reason = "work_ended"
        self.leadership = None
        log.log(
            logging.INFO if reason in ("shutdown", "step_down") else logging.WARNING,
            "stepped down owner=%s epoch=%s reason=%s%s",
            leadership.owner,
            leadership.epoch,
            reason,
            self._paused_note() if reason not in ("shutdown", "step_down") else "",
        )
        if self._on_demoted is not None:
            self._on_demoted(leadership, reason)
        if reason != "lost":
            await self._release(leadership.epoch)
        if crash is not None and not isinstance(crash, RedisUnavailable):
            # An unknown exception in leader work is a bug: let the process die loudly
            # (the supervisor restarts it), after handing the lease on.
            raise crash
        return reason

    async def _renew(self, leadership: Leadership) -> DemotionReason:
        interval = self.timing.renew_interval_ms / 1000
        deadline = self.timing.renew_deadline_ms / 1000
        last_good = leadership.acquired_at
        while True:
            wake_at = max(time.monotonic(), last_good + interval)
            await asyncio.sleep(wake_at - time.monotonic())
            sent = time.monotonic()
            if sent - wake_at > STALL_S:  # seen here first if this task woke before the watch
                self.stalled_s = max(self.stalled_s, sent - wake_at)
            remaining = last_good + deadline - sent
            if remaining <= 0:
                log.error(
                    "renew deadline passed%s epoch=%s: stepping down",
                    self._paused_note(),
                    leadership.epoch,
                )
                return "renew_deadline"
            try:
                renewed = await call(
                    lambda: self.lease.renew(leadership.epoch),
                    what="renew",
                    deadline_s=remaining,
                    max_backoff_s=max(interval / 2, 0.01),
                )
            except RedisUnavailable as exc:
                if self.stalled_s:
                    # The deadline ran out while the process was not running, not because
                    # Redis failed: say so rather than blame Redis.
                    log.error(  # noqa: TRY400 - a pause, not a bug: no traceback
                        "renew deadline passed%s epoch=%s", self._paused_note(), leadership.epoch
                    )
                else:
                    log.error(  # noqa: TRY400 - an outage, not a bug: no traceback
                        "lease renew deadline passed epoch=%s: %s", leadership.epoch, exc
                    )
                return "renew_deadline"
            if not renewed:
                log.error(
                    "lease lost: no longer owner%s epoch=%s", self._paused_note(), leadership.epoch
                )
                return "lost"
            last_good = sent
            self.renewed_at = sent

    def _stalled(self, seconds: float) -> None:
        self.stalled_s = max(self.stalled_s, seconds)

    def _paused_note(self) -> str:
        if not self.stalled_s:
            return ""
        return f" after this process was paused for {self.stalled_s:.1f}s (not a Redis failure)"

    async def _release(self, epoch: int) -> None:
        try:
            released = await call(
                lambda: self.lease.release(epoch),
                what="release",
                deadline_s=min(1.0, self.timing.renew_interval_ms / 1000),
            )
        except RedisUnavailable as exc:
            log.warning(
                "could not release the lease epoch=%s (it will expire on its own): %s", epoch, exc
            )
            return
        log.info("lease epoch=%s %s", epoch, "released" if released else "was no longer ours")

    async def _pause_before_reelection(self) -> None:
        timing = self.timing
        delay_ms = timing.reelect_delay_ms + random.uniform(
            -timing.reelect_jitter_ms, timing.reelect_jitter_ms
        )
        delay_ms = max(delay_ms, float(timing.min_reelect_ms))
        log.info("waiting %.0fms before campaigning again", delay_ms)
        await self._sleep_or_wake(delay_ms / 1000, wake_on_release=False)

    async def _sleep_or_wake(self, seconds: float, *, wake_on_release: bool) -> None:
        await self._listeners.sleep(seconds, wake_on_release=wake_on_release)
