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
    """Everything one commit writes; ``acks`` holds entry ids per input stream, in order."""

    state: dict[str, bytes] = msgspec.field(default_factory=dict)
    decisions: list[bytes] = msgspec.field(default_factory=list)
    dead_letters: list[bytes] = msgspec.field(default_factory=list)
    acks: tuple[list[bytes], list[bytes]] = msgspec.field(default_factory=lambda: ([], []))

    @property
    def empty(self) -> bool:
        """True when committing would write nothing but the commit token."""
        return not (
            self.state or self.decisions or self.dead_letters or self.acks[0] or self.acks[1]
        )


class Committed(msgspec.Struct, frozen=True):
    """The batch is in Redis; ``replayed`` when an earlier attempt of it had already landed."""

    decision_ids: list[str]
    dead_letter_ids: list[str]
    acked: int
    replayed: bool = False


_msgpack = msgspec.msgpack.Encoder()


def _pack_ids(ids: list[bytes]) -> bytes:
    """Entry ids as a MessagePack array of strings (Redis's cmsgpack has no bin type)."""
    return _msgpack.encode([i.decode() for i in ids])


class Committer:
    """Commits batches for one leader term (owner + epoch) through the COMMIT script."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        owner: str,
        epoch: int,
        *,
        decisions_maxlen: int = 0,
        dlq_maxlen: int = 0,
    ) -> None:
        self.keys = keys
        self.owner = owner
        self.epoch = epoch
        self.decisions_maxlen = decisions_maxlen
        self.dlq_maxlen = dlq_maxlen
        self._script = redis.register_script(scripts.COMMIT)
        self._seq = 0
        self._keys = [
            keys.leader,
            keys.epoch,
            keys.state,
            keys.decisions,
            keys.dlq,
            *keys.input_streams,
        ]

    def next_token(self) -> str:
        """A token unique to one batch of this term; reuse it when retrying that batch."""
        self._seq += 1
        return f"{self.epoch}:{self._seq}"

    async def commit(self, batch: Batch, token: str) -> Committed | Fenced:
        """Write ``batch`` atomically if still leader under our epoch, else write nothing."""
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
            _pack_ids(batch.acks[0]),
            _pack_ids(batch.acks[1]),
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
    if code == 2:
        return Committed(decision_ids=[], dead_letter_ids=[], acked=0, replayed=True)
    if code != 1 or len(reply) != 4:
        raise ScriptError(f"commit script answered {reply!r}")
    decision_ids: Sequence[object] = reply[1]
    dead_ids: Sequence[object] = reply[2]
    return Committed(
        decision_ids=[text(i) for i in decision_ids],
        dead_letter_ids=[text(i) for i in dead_ids],
        acked=int(reply[3]),
    )
