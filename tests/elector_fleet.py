"""A fleet of in-process electors that records every term of leadership, for elector tests.

Each member has its own client (its own connections, as separate processes would). A term
runs from ``on_elected`` to ``on_demoted`` -- demotion is reported after the leader work was
cancelled and awaited -- or, for a crash (``run`` cancelled, no release), to the moment the
cancelled ``run`` has finished, which can only make a term look longer than it was.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from streams.cancel import cancel_and_wait
from streams.connection import connect
from streams.keys import Keys
from streams.lease import Acquired, Held, make_owner_id
from workers.coordinator.elector import Elector
from workers.coordinator.leadership import DemotionReason, ElectorTiming, Leadership


@dataclass
class Term:
    """One term as the fleet saw it, on the monotonic clock."""

    owner: str
    epoch: int
    start: float
    end: float | None = None
    reason: str | None = None
    renewed_at_end: float | None = None  # the elector's last good renew send time at the end


@dataclass
class Member:
    """One elector with its client, its run task, and a switch per term to end its work."""

    name: str
    elector: Elector
    client: aioredis.Redis
    task: asyncio.Task[None] | None = None
    finish: dict[int, asyncio.Event] = field(default_factory=dict)
    work_cleaned_at: dict[int, float] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """The member's lease owner id."""
        return self.elector.owner


class Fleet:
    """Spawns, stops and crashes electors on one namespace and checks the terms they report."""

    def __init__(self, url: str, keys: Keys, timing: ElectorTiming, work_cleanup_s: float = 0.0):
        self.url = url
        self.keys = keys
        self.timing = timing
        self.work_cleanup_s = work_cleanup_s
        self.members: list[Member] = []
        self.terms: list[Term] = []
        self.open: dict[str, Term] = {}
        self.violations: list[str] = []
        self._count = 0

    def spawn(self, timing: ElectorTiming | None = None) -> Member:
        """Start one more elector campaigning on the fleet's namespace."""
        self._count += 1
        name = f"m{self._count}"
        client = connect(self.url, client_name=name)
        member: Member

        def elected(leadership: Leadership) -> None:
            member.finish[leadership.epoch] = asyncio.Event()
            self._elected(leadership)

        def demoted(leadership: Leadership, reason: DemotionReason) -> None:
            self._close(leadership.owner, reason, member.elector.renewed_at)

        elector = Elector(
            client,
            self.keys,
            make_owner_id(name),
            timing or self.timing,
            on_elected=elected,
            on_demoted=demoted,
        )
        member = Member(name=name, elector=elector, client=client)

        async def work(leadership: Leadership) -> None:
            try:
                await member.finish[leadership.epoch].wait()
            finally:
                if self.work_cleanup_s:
                    # Cleanup that takes a while must still finish before demotion is reported.
                    await asyncio.shield(asyncio.sleep(self.work_cleanup_s))
                member.work_cleaned_at[leadership.epoch] = time.monotonic()

        member.task = asyncio.create_task(elector.run(work), name=f"elector-{name}")
        self.members.append(member)
        return member

    def _elected(self, leadership: Leadership) -> None:
        now = time.monotonic()
        if self.open:
            self.violations.append(
                f"{leadership.owner} elected (epoch {leadership.epoch}) at {now:.4f} while "
                f"{sorted(self.open)} still lead"
            )
        if self.terms and leadership.epoch <= max(t.epoch for t in self.terms):
            self.violations.append(f"epoch {leadership.epoch} is not above every earlier epoch")
        term = Term(owner=leadership.owner, epoch=leadership.epoch, start=now)
        self.terms.append(term)
        self.open[leadership.owner] = term

    def _close(self, owner: str, reason: str, renewed_at: float | None) -> None:
        term = self.open.pop(owner, None)
        if term is not None:
            term.end = time.monotonic()
            term.reason = reason
            term.renewed_at_end = renewed_at

    async def leader(self, after_epoch: int = 0, timeout: float = 10.0) -> Member:
        """Wait until a member leads under an epoch above ``after_epoch``; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                term = self.open.get(member.owner)
                if term is not None and term.epoch > after_epoch:
                    return member
            await asyncio.sleep(0.002)
        raise AssertionError(f"no leader above epoch {after_epoch} within {timeout}s")

    def term_of(self, member: Member) -> Term:
        """The member's open term."""
        return self.open[member.owner]

    async def stop(self, member: Member, timeout: float = 5.0) -> None:
        """Graceful stop: work cancelled, lease released, run returns."""
        member.elector.stop()
        assert member.task is not None
        await asyncio.wait_for(member.task, timeout)
        await self._retire(member)

    async def crash(self, member: Member) -> float:
        """Cancel ``run`` without release (a crash); return when it had finished."""
        assert member.task is not None
        # cancel_and_wait: a cancel that lands while run() is inside a Redis command can be
        # lost on Python 3.11 (see streams.retry); it is then sent again.
        await cancel_and_wait(member.task)
        ended = time.monotonic()
        self._close(member.owner, "crash", member.elector.renewed_at)
        await self._retire(member)
        return ended

    async def _retire(self, member: Member) -> None:
        self.members.remove(member)
        await member.client.aclose()

    async def close(self) -> None:
        """Stop every remaining member gracefully; a member whose run failed fails the test."""
        for member in list(self.members):
            member.elector.stop()
        for member in list(self.members):
            assert member.task is not None
            await asyncio.wait_for(member.task, 10)  # re-raises a crash of run()
            await self._retire(member)

    def assert_safe(self) -> None:
        """No two terms ever overlapped, epochs only grew, and every term ended after it began."""
        assert not self.violations, self.violations
        closed = sorted(self.terms, key=lambda t: t.start)
        for term in closed:
            assert term.end is not None, f"term {term} never ended"
            assert term.end >= term.start
        for before, after in itertools.pairwise(closed):
            assert before.end is not None
            assert before.end < after.start, f"overlap: {before} and {after}"
            assert before.epoch < after.epoch, f"epoch went back: {before} then {after}"


def refusals(elector: Elector) -> list[Held]:
    """Record every campaign attempt of ``elector`` that finds the lease held by another.

    Wrap before the elector's task first runs; a non-empty list means it is following.
    """
    refused: list[Held] = []
    acquire = elector.lease.acquire

    async def recording(seen_epoch: int = 0) -> Acquired | Held:
        result = await acquire(seen_epoch)
        if isinstance(result, Held):
            refused.append(result)
        return result

    elector.lease.acquire = recording  # type: ignore[method-assign]
    return refused
