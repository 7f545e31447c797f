"""Held decisions become visible once the replicas have them (DESIGN §4 v2).

With ``FAILOVER_MIN_REPLICAS`` = N > 0 the fenced commit appends decisions to
``NS:decisions:held`` instead of ``NS:decisions`` (:class:`streams.commit.Committer` with
``hold``). :class:`HeldDecisions` moves them to the stream in rounds, each one pipeline on
one connection: the publish script (``streams/lua/publish.lua``: fenced; publishes what the
previous round confirmed, then writes a mark if decisions remain held) followed by ``WAIT
N``. ``WAIT`` counts the writes of its own connection, and the mark is always the last one,
so a WAIT that reaches N confirms every decision held when the mark was written — the next
round publishes exactly those. A decision a reader can see on ``NS:decisions`` is
therefore on N replicas, and survives the promotion of one of them (Sentinel promotes the
most up-to-date replica). A round whose reply is lost is harmless: the repeat finds the
mark moved on and publishes nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as rex

from schemas.errors import ScriptError
from streams import scripts
from streams.commit import FENCED, Fenced
from streams.keys import Keys
from streams.replies import text


class Round(msgspec.Struct, frozen=True):
    """What one round did: the entries it published (ids, in order), how many decisions
    are still held, and how many replicas the round's ``WAIT`` saw (of ``wanted``)."""

    published: list[str]
    held: int
    replicas: int
    wanted: int

    @property
    def confirmed(self) -> bool:
        """True when every decision still held is confirmed (the next round publishes it)."""
        return self.held == 0 or self.replicas >= self.wanted


class HeldDecisions:
    """Publishes one leader term's held decisions, confirmed on ``min_replicas`` replicas."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        owner: str,
        epoch: int,
        *,
        min_replicas: int,
        confirm_timeout_ms: int,
        decisions_maxlen: int = 0,
    ) -> None:
        if min_replicas <= 0:
            raise ValueError("held decisions need min_replicas > 0")
        self.redis = redis
        self.keys = keys
        self.owner = owner
        self.epoch = epoch
        self.min_replicas = min_replicas
        self.confirm_timeout_ms = confirm_timeout_ms
        self.decisions_maxlen = decisions_maxlen
        self._sha: str | None = None
        self._seq = 0
        # (mark token, held count) of the last round whose WAIT confirmed it, if any.
        self._confirmed: tuple[str, int] | None = None
        self._keys = [keys.leader, keys.epoch, keys.held_decisions, keys.held_mark, keys.decisions]

    async def step(self) -> Round | Fenced:
        """One round: publish what the last round confirmed; mark and WAIT for the rest."""
        sha = self._sha
        if sha is None:
            sha = self._sha = await scripts.load(self.redis, "publish")
        self._seq += 1
        token = f"{self.epoch}:{self._seq}"
        replies = await self._round(sha, token)
        if isinstance(replies[0], rex.NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH): nothing ran, so loading
            # again and repeating once is safe.
            sha = self._sha = await scripts.load(self.redis, "publish")
            replies = await self._round(sha, token)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        script, waited = replies
        if not isinstance(script, list) or not script:
            raise ScriptError(f"publish script answered {script!r}")
        if int(script[0]) == 0:
            self._confirmed = None
            return FENCED
        if len(script) != 3:
            raise ScriptError(f"publish script answered {script!r}")
        ids: Sequence[object] = script[1]
        held, replicas = int(script[2]), int(waited)
        self._confirmed = (token, held) if held and replicas >= self.min_replicas else None
        return Round(
            published=[text(i) for i in ids],
            held=held,
            replicas=replicas,
            wanted=self.min_replicas,
        )

    async def _round(self, sha: str, token: str) -> list[Any]:
        """The publish script and WAIT, pipelined on one connection (WAIT counts its
        connection's writes); replies, errors included, in that order."""
        confirm, count = self._confirmed or ("", 0)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(
                sha,
                len(self._keys),
                *self._keys,
                self.owner,
                self.epoch,
                confirm,
                count,
                token,
                self.decisions_maxlen,
            )
            pipe.execute_command("WAIT", self.min_replicas, self.confirm_timeout_ms)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


async def held_count(redis: aioredis.Redis, keys: Keys) -> int:
    """How many decisions are committed but not yet visible (status)."""
    return int(await redis.llen(keys.held_decisions))
