"""Finds the primary through Sentinel, the failover leader's promotion included, before the
other Sentinels adopt it (DESIGN §4 v2).

redis-py's discovery reads ``SENTINEL MASTERS`` and takes the first Sentinel that lists the
master up. A failover leaves a gap there: the Sentinel leading it names the promoted
replica (``SENTINEL GET-MASTER-ADDR-BY-NAME``) as soon as that replica reports itself
master, but lists it in ``SENTINEL MASTERS`` only at the failover's end (a second or more
later), and the other Sentinels adopt it only when the leader's hello reaches them (up to
~100 ms later: their ``+switch-master``). Meanwhile every Sentinel lists the old primary as
down, so redis-py finds no primary at all.

:class:`SentinelDiscovery` asks every Sentinel at once for both (one round trip each):

* an address that a majority of the Sentinels name, list up and agree on is taken as soon
  as those answers are in, unless an answer already in has a newer configuration epoch
  (the usual case; it waits for a majority instead of the first answer);
* otherwise every address some Sentinel names is weighed, newest configuration epoch first
  (the epoch Sentinel itself settles disagreements with; the failover leader bumps it when
  the promotion is confirmed), and the first that answers, on a connection of its own, that
  its role is master is taken: as soon as a majority of the Sentinels have answered (one
  that hangs does not hold up every connect), else once all have. An address no Sentinel
  lists up (the leader's promoted replica) is never taken unverified; one a Sentinel lists
  up that cannot be reached is taken if nothing was verified (the client's connect then
  fails and is retried, as with redis-py's own discovery); one that answers as a replica
  never is.

The role comes from ``HELLO``, which every ACL user may run (``ROLE`` and ``INFO`` need a
grant most roles do not have). A server without ``HELLO`` (Redis < 6) cannot be verified,
so there only what the Sentinels agree on is used, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.connection import Connection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from streams.cancel import cancel_and_wait
from streams.replies import text

Address = tuple[str, int]


@dataclass
class Answer:
    """What one Sentinel says of the master: the address it names and how it lists it."""

    named: Address
    """``SENTINEL GET-MASTER-ADDR-BY-NAME``: during a failover it leads, the promoted replica."""
    epoch: int
    """The master's configuration epoch there (``config-epoch``)."""
    listed_up: bool = False
    """It lists ``named`` in ``SENTINEL MASTER`` as a master that is not down."""
    promoted: bool = False
    """It lists another address there: ``named`` is the replica it promoted, in a failover
    it leads that has not ended."""


@dataclass
class _Candidate:
    address: Address
    epoch: int
    listed_up: bool
    votes: int = field(default=1)


class SentinelDiscovery(Sentinel):
    """redis-py's :class:`~redis.asyncio.sentinel.Sentinel` with the discovery above.

    ``primary_class(host=, port=, **primary_kwargs)`` is a connection to a data server with
    the client's options (user, password, TLS, timeouts), for the role check.
    """

    def __init__(
        self,
        sentinels: list[Address],
        *,
        sentinel_kwargs: dict[str, object],
        primary_class: type[Connection],
        primary_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        self._primary_class = primary_class
        self._primary_kwargs = primary_kwargs

    async def discover_master(self, service_name: str) -> Address:
        """The primary's address, as described in the module; :class:`MasterNotFoundError`
        (a connection error: transient) when there is none to take."""
        majority = len(self.sentinels) // 2 + 1
        tasks = [asyncio.create_task(self._ask(s, service_name)) for s in self.sentinels]
        answers: list[Answer] = []
        errors: list[str] = []
        try:
            pending: set[asyncio.Task[Answer | str | None]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    outcome = task.result()
                    if isinstance(outcome, Answer):
                        answers.append(outcome)
                    elif outcome is not None:
                        errors.append(outcome)
                agreed = self._agreed(answers)
                if agreed is not None:
                    return agreed
                if pending and len(tasks) - len(pending) >= majority:
                    # A Sentinel that does not answer (paused, cut off) must not hold up
                    # every connect for its timeout: once a majority has answered, a
                    # verified master among their answers will do.
                    verified = await self.choose(answers, fallback=False)
                    if verified is not None:
                        return verified
        finally:
            await cancel_and_wait(*tasks)
        chosen = await self.choose(answers)
        if chosen is None:
            detail = f" : {', '.join(errors)}" if errors else ""
            raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")
        return chosen

    async def _ask(self, sentinel: Any, service_name: str) -> Answer | str | None:
        """One Sentinel's answer; an error line if it could not give one; None if it does
        not know the master (or names none)."""
        try:
            async with sentinel.pipeline(transaction=False) as pipe:
                pipe.sentinel_master(service_name)
                pipe.sentinel_get_master_addr_by_name(service_name)
                state, named = await pipe.execute()
        except (ConnectionError, TimeoutError) as exc:
            return f"{sentinel} - {exc!r}"
        except ResponseError as exc:
            if "no such master" in str(exc).lower():
                return None
            raise
        if not named:
            return None
        address = (text(named[0]), int(named[1]))
        listed = (text(state["ip"]), int(state["port"]))
        return Answer(
            named=address,
            epoch=int(state.get("config-epoch", 0)),
            listed_up=address == listed and self.check_master_state(state, service_name),
            promoted=address != listed,
        )

    def _agreed(self, answers: list[Answer]) -> Address | None:
        """The address a majority of all Sentinels list up, if none answered newer."""
        majority = len(self.sentinels) // 2 + 1
        newest = max((a.epoch for a in answers), default=0)
        counts: dict[tuple[Address, int], int] = {}
        for answer in answers:
            if answer.listed_up:
                key = (answer.named, answer.epoch)
                counts[key] = counts.get(key, 0) + 1
        for (address, epoch), count in counts.items():
            if count >= majority and epoch >= newest:
                return address
        return None

    async def choose(self, answers: list[Answer], *, fallback: bool = True) -> Address | None:
        """The address to take when the Sentinels do not agree (see the module): among those
        some Sentinel lists up or has just promoted, a verified master, newest epoch first;
        else (with ``fallback``) one listed up that could not be reached; else None."""
        candidates: dict[Address, _Candidate] = {}
        for answer in answers:
            if not (answer.listed_up or answer.promoted):
                continue  # a master it lists as down: not worth a connection attempt
            known = candidates.get(answer.named)
            if known is None:
                candidates[answer.named] = _Candidate(answer.named, answer.epoch, answer.listed_up)
                continue
            known.epoch = max(known.epoch, answer.epoch)
            known.listed_up = known.listed_up or answer.listed_up
            known.votes += 1
        unreachable: Address | None = None
        for candidate in sorted(candidates.values(), key=lambda c: (-c.epoch, -c.votes)):
            role = await self.role(candidate.address)
            if role == "master":
                return candidate.address
            if role is None and candidate.listed_up and unreachable is None:
                unreachable = candidate.address
        return unreachable if fallback else None

    async def role(self, address: Address) -> str | None:
        """The role ``address`` reports (``master``, ``replica``...), on a connection of
        its own; None if it cannot say (unreachable, no ``HELLO``)."""
        connection = self._primary_class(host=address[0], port=address[1], **self._primary_kwargs)
        try:
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_command("HELLO", connection.protocol or 2)
            reply = await connection.read_response()
        except (ConnectionError, TimeoutError, ResponseError, OSError):
            return None
        finally:
            await connection.disconnect()
        pairs = reply.items() if isinstance(reply, dict) else zip(*[iter(reply)] * 2, strict=True)
        roles = [text(value) for key, value in pairs if text(key) == "role"]
        return roles[0] if roles else None
