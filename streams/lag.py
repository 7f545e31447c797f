"""Stream lag of the coordinator group, read as one atomic snapshot (one script round trip).

For each input stream: length, the group's delivered position, lag in entries and in
seconds (age of the oldest undelivered entry, from its id, against the server's clock),
pending entries and the age of the oldest one. Also the lease, the epoch and the lengths of
the dead-letter and decision streams, and on request the policy state fields for `status`.
"""

from __future__ import annotations

from schemas.errors import ScriptError
from schemas.lag import LagReport, StateFields, StreamLag
from streams import scripts
from streams.connection import Client
from streams.keys import GROUP, Keys
from streams.replies import text_or_none

# Upper bound on entries counted on each side of the delivered position when Redis cannot
# report the lag itself; beyond it on both sides the lag is a lower bound (``lag_exact``
# False). Keeps a sample under a millisecond per stream.
COUNT_CAP = 100


def id_ms(entry_id: str) -> int:
    """Milliseconds part of a stream entry id (``<ms>-<seq>``)."""
    return int(entry_id.partition("-")[0])


def _age_s(now_ms: int, entry_id: str | None) -> float:
    if entry_id is None:
        return 0.0
    return max(0, now_ms - id_ms(entry_id)) / 1000


def _stream(name: str, row: list[object], now_ms: int) -> StreamLag:
    if not isinstance(row, list) or len(row) != 12:
        raise ScriptError(f"lag snapshot row for {name} is {row!r}")
    kind = text_or_none(row[0]) or "none"
    first = text_or_none(row[7])
    oldest = text_or_none(row[9])
    return StreamLag(
        stream=name,
        kind=kind,
        length=int(row[1]),  # type: ignore[call-overload]
        group_found=bool(row[2]),
        consumers=int(row[3]),  # type: ignore[call-overload]
        last_delivered_id=text_or_none(row[4]),
        lag=int(row[5]),  # type: ignore[call-overload]
        lag_exact=bool(row[6]),
        lag_seconds=_age_s(now_ms, first),
        first_undelivered_id=first,
        pending=int(row[8]),  # type: ignore[call-overload]
        oldest_pending_id=oldest,
        oldest_pending_age_seconds=_age_s(now_ms, oldest),
        oldest_pending_idle_ms=int(row[10]),  # type: ignore[call-overload]
        oldest_pending_deliveries=int(row[11]),  # type: ignore[call-overload]
    )


def _number(value: object, kind: type[int] | type[float]) -> int | float | None:
    # State fields are written by the leader; an unexpected value is shown as unknown
    # rather than making status fail.
    try:
        return kind(text_or_none(value) or "")
    except ValueError:
        return None


def _state(reply: object) -> StateFields | None:
    if not isinstance(reply, list) or len(reply) != 4:
        return None
    summary, epoch, leader, updated_at = reply
    epoch_n = _number(epoch, int)
    return StateFields(
        summary=summary if isinstance(summary, bytes) else None,
        epoch=int(epoch_n) if epoch_n is not None else None,
        leader=text_or_none(leader),
        updated_at=_number(updated_at, float),
    )


class LagSampler:
    """Takes lag snapshots of one namespace through ``streams/lua/lag_snapshot.lua``."""

    def __init__(self, redis: Client, keys: Keys, *, count_cap: int = COUNT_CAP) -> None:
        self.keys = keys
        self.count_cap = count_cap
        self._script = scripts.register(redis, "lag_snapshot")

    async def sample(self, *, with_state: bool = False) -> LagReport:
        """One round trip: the lease, the group's lag on every input stream, DLQ size."""
        k = self.keys
        reply = await self._script(
            keys=[k.leader, k.epoch, k.dlq, k.decisions, k.state, *k.input_streams],
            args=[GROUP, self.count_cap, "1" if with_state else "0"],
        )
        if not isinstance(reply, list) or len(reply) != 9:
            raise ScriptError(f"lag snapshot answered {reply!r}")
        now_ms = int(reply[0]) * 1000 + int(reply[1]) // 1000
        owner = text_or_none(reply[2])
        rows = reply[8]
        return LagReport(
            now_ms=now_ms,
            leader=owner,
            lease_ms_left=int(reply[3]) if owner is not None and int(reply[3]) >= 0 else None,
            epoch=int(reply[4]) if reply[4] is not None else 0,
            dlq_length=int(reply[5]),
            decisions_length=int(reply[6]),
            streams=tuple(
                _stream(name, row, now_ms) for name, row in zip(k.input_streams, rows, strict=True)
            ),
            state=_state(reply[7]) if with_state else None,
        )
