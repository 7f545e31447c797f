"""The fenced commit (DESIGN §5.3): one atomic script per batch, or nothing at all.

A batch is the leader's whole output for a slice of input: the changed ``NS:state`` fields,
the decisions, the dead letters and the ids to acknowledge. The script writes all of it
only if the caller still owns the lease under its epoch; otherwise the result is
:data:`FENCED` and Redis is untouched. FENCED is a normal result, not an exception.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from schemas.errors import ScriptError
from streams import scripts
from streams.keys import GROUP, Keys
from streams.replies import text


class Fenced(msgspec.Struct, frozen=True):
    """The caller no longer holds the lease under its epoch: it must stop leading at once."""


FENCED = Fenced()
"""The one :class:`Fenced` value (compare with ``is`` or ``isinstance``)."""


class Batch(msgspec.Struct):
    """Everything one commit writes; ``acks`` maps an input stream's index (in
    :attr:`Keys.input_streams`) to the entry ids to acknowledge on it, in order."""

    state: dict[str, bytes] = msgspec.field(default_factory=dict)
    decisions: list[bytes] = msgspec.field(default_factory=list)
    dead_letters: list[bytes] = msgspec.field(default_factory=list)
    acks: dict[int, list[bytes]] = msgspec.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when committing would write nothing but the commit token."""
        return not (self.state or self.decisions or self.dead_letters or any(self.acks.values()))


class Committed(msgspec.Struct, frozen=True):
    """The batch is in Redis, with the ids of its entries.

    When a retry finds that an earlier attempt of the batch had already landed, the ids are
    those that attempt wrote (empty if they are no longer the streams' newest entries) and
    ``acked`` is 0. A committer that holds decisions reports no decision ids (the entries
    do not exist yet) and ``held``, the number of decisions now waiting to be published.
    """

    decision_ids: list[str]
    dead_letter_ids: list[str]
    acked: int
    held: int = 0


_msgpack = msgspec.msgpack.Encoder()


def _pack_ids(ids: list[bytes]) -> bytes:
    """Entry ids as a MessagePack array of strings (Redis's cmsgpack has no bin type)."""
    return _msgpack.encode([i.decode() for i in ids])


class Committer:
    """Commits batches for one leader term (owner + epoch) through ``streams/lua/commit.lua``.

    With ``hold`` the decisions go to :attr:`Keys.held_decisions` instead of the decisions
    stream (``FAILOVER_MIN_REPLICAS`` > 0: :mod:`streams.publish` makes them visible once
    the replicas confirmed them).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        owner: str,
        epoch: int,
        *,
        decisions_maxlen: int = 0,
        dlq_maxlen: int = 0,
        hold: bool = False,
    ) -> None:
        self.keys = keys
        self.hold = hold
        self.owner = owner
        self.epoch = epoch
        self.decisions_maxlen = decisions_maxlen
        self.dlq_maxlen = dlq_maxlen
        self._script = scripts.register(redis, "commit")
        self._seq = 0
        self._inputs = len(keys.input_streams)
        # The order commit.lua documents: leader, epoch, state, decisions, dlq, held, inputs.
        self._keys = [
            keys.leader,
            keys.epoch,
            keys.state,
            keys.decisions,
            keys.dlq,
            keys.held_decisions,
            *keys.input_streams,
        ]

    def next_token(self) -> str:
        """A token unique to one batch of this term; reuse it when retrying that batch."""
        self._seq += 1
        return f"{self.epoch}:{self._seq}"

    async def commit(self, batch: Batch, token: str) -> Committed | Fenced:
        """Write ``batch`` atomically if still leader under our epoch, else write nothing."""
        if any(not 0 <= stream < self._inputs for stream in batch.acks):
            raise ValueError(f"acks for unknown input streams: {sorted(batch.acks)}")
        args: list[bytes | str | int] = [
            self.owner,
            self.epoch,
            GROUP,
            token,
            self.decisions_maxlen,
            self.dlq_maxlen,
            len(batch.state),
            len(batch.decisions),
            len(batch.dead_letters),
            self._inputs,
            1 if self.hold else 0,
            *[_pack_ids(batch.acks.get(stream, [])) for stream in range(self._inputs)],
        ]
        for field, value in batch.state.items():
            args.append(field)
            args.append(value)
        args.extend(batch.decisions)
        args.extend(batch.dead_letters)
        reply = await self._script(keys=self._keys, args=args)
        return _parse(reply)


def _parse(reply: object) -> Committed | Fenced:
    if not isinstance(reply, list) or not reply:
        raise ScriptError(f"commit script answered {reply!r}")
    code = int(reply[0])
    if code == 0:
        return FENCED
    if (code, len(reply)) not in ((1, 5), (2, 4)):
        raise ScriptError(f"commit script answered {reply!r}")
    decision_ids: Sequence[object] = reply[1]
    dead_ids: Sequence[object] = reply[2]
    return Committed(
        decision_ids=[text(i) for i in decision_ids],
        dead_letter_ids=[text(i) for i in dead_ids],
        acked=int(reply[3]) if code == 1 else 0,
        held=int(reply[-1]),
    )
