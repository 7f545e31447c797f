"""Stream entry <-> typed event codec: every entry holds one field, ``data``, with tagged JSON.

Decoding raises only :class:`~schemas.errors.DecodeError`, whose ``reason`` is fit for a dead
letter; nothing a producer writes can make it raise anything else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, TypeAlias

import msgspec

from schemas.errors import DecodeError
from schemas.events import (
    OPERATOR_EVENT_TYPES,
    AnyEntry,
    DeadLetter,
    Event,
    FailoverDecision,
    HealthEvent,
    LeaderChanged,
)

# An entry larger than this is refused before parsing: no real event is near it, and a
# runaway producer must not make the leader parse megabytes per entry.
MAX_DATA_BYTES = 64 * 1024

DATA_FIELD = b"data"

# Dead letters stay under DEAD_LETTER_MAX_BYTES whatever the entry: past RAW_WHOLE_BYTES of
# encoded raw, ``raw`` keeps the first RAW_MAX_PAIRS pairs, each cut to RAW_CUT_BYTES (JSON
# escapes a control byte as 6 characters: 8 pairs x 2 x 1024 x 6 = 96 KiB at worst).
DEAD_LETTER_MAX_BYTES = 128 * 1024
RAW_WHOLE_BYTES = 96 * 1024
RAW_CUT_BYTES = 1024
RAW_MAX_PAIRS = 8
REASON_MAX_CHARS = 1024

StreamKind: TypeAlias = Literal["health", "events", "decisions", "dlq"]
Fields: TypeAlias = Sequence[tuple[bytes, bytes]] | Mapping[bytes, bytes]

# Which entry types each stream may carry; a valid entry on the wrong stream is a dead letter.
_ALLOWED: dict[str, tuple[type, ...]] = {
    "health": (HealthEvent,),
    "events": OPERATOR_EVENT_TYPES,
    "decisions": (LeaderChanged, FailoverDecision),
    "dlq": (DeadLetter,),
}

_decoder = msgspec.json.Decoder(AnyEntry)
_encoder = msgspec.json.Encoder()


def _pairs(fields: Fields) -> list[tuple[bytes, bytes]]:
    if isinstance(fields, Mapping):
        return list(fields.items())
    return list(fields)


def decode_data(data: bytes, max_bytes: int | None = MAX_DATA_BYTES) -> AnyEntry:
    """Decode one ``data`` value (tagged JSON) into its Struct, or raise DecodeError."""
    if max_bytes is not None and len(data) > max_bytes:
        raise DecodeError(f"entry too large: {len(data)} bytes > {max_bytes}")
    try:
        entry: AnyEntry = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid event: {exc}") from None
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    return entry


class Oversize(msgspec.Struct, frozen=True):
    """An entry over the size limit as the leader receives it: never whole.

    ``fields`` is flat and cut as a truncated dead letter's ``raw`` is (at most
    RAW_MAX_PAIRS pairs, each part RAW_CUT_BYTES); ``total_bytes`` is the size of all its
    fields and values; ``sha256`` their digest, concatenated in order (None if unknown).
    """

    fields: list[bytes]
    total_bytes: int
    sha256: str | None = None


def too_large(total_bytes: int, max_bytes: int) -> str:
    """The dead-letter reason of an entry over ``FAILOVER_MAX_ENTRY_BYTES``."""
    return f"entry too large: {total_bytes} bytes (FAILOVER_MAX_ENTRY_BYTES={max_bytes})"


def decode_entry(
    fields: Fields, *, stream: StreamKind, max_bytes: int | None = MAX_DATA_BYTES
) -> AnyEntry:
    """Decode a stream entry's fields into a typed event allowed on ``stream``.

    ``max_bytes`` caps the ``data`` value (the dlq is never capped); None: no cap.
    """
    datas = [value for key, value in _pairs(fields) if key == DATA_FIELD]
    if not datas:
        raise DecodeError("entry has no 'data' field")
    if len(datas) > 1:
        raise DecodeError(f"entry has {len(datas)} 'data' fields, expected one")
    # The size cap guards the leader against runaway producers; a dead letter legitimately
    # carries such an entry whole, so the dlq (written only by the leader) is not capped.
    entry = decode_data(datas[0], None if stream == "dlq" else max_bytes)
    if not isinstance(entry, _ALLOWED[stream]):
        kind = type(entry).__struct_config__.tag
        raise DecodeError(f"a {kind!s} entry does not belong on the {stream} stream")
    return entry


CLOCK_AHEAD = "event time ahead of the Redis server clock"
"""The start of every clock-skew dead letter's reason (replay recognises them by it)."""


def entry_ms(entry_id: bytes) -> int:
    """The millisecond part of ``b"<ms>-<seq>"`` as an exact int (any size Redis accepts)."""
    return int(entry_id[: entry_id.index(b"-")])


def check_event_time(
    event: Event, entry_id: bytes, max_ahead_ms: int, server_ms: int | None = None
) -> None:
    """Raise DecodeError if ``event`` claims a time over ``max_ahead_ms`` after its arrival.

    The arrival is the earlier of the entry id's millisecond part (stamped by the Redis
    server at ``XADD``, unless the producer chose the id) and ``server_ms``, the server's
    ``TIME`` when the leader judged the entry: a producer-chosen future id is therefore no
    licence, and no event moves the policy clock more than ``max_ahead_ms`` past the
    server clock. ``max_ahead_ms`` 0 turns it off.
    """
    if max_ahead_ms <= 0:
        return
    at = event.observed_at if type(event) is HealthEvent else event.at  # type: ignore[union-attr]
    arrived_ms = entry_ms(entry_id)
    if server_ms is not None and server_ms < arrived_ms:
        arrived_ms = server_ms
    ahead_ms = at * 1000.0 - arrived_ms
    if ahead_ms > max_ahead_ms:
        raise DecodeError(
            f"{CLOCK_AHEAD}: event time {at:.3f} is {ahead_ms / 1000:.3f}s ahead of its"
            f" arrival in Redis at {arrived_ms}ms (entry id {entry_id.decode()}): the"
            f" producer's clock is off by more than FAILOVER_MAX_CLOCK_SKEW_MS={max_ahead_ms}"
        )


def encode_data(entry: AnyEntry) -> bytes:
    """Encode a Struct as the tagged JSON held in ``data``."""
    return _encoder.encode(entry)


def encode_entry(entry: AnyEntry) -> dict[bytes, bytes]:
    """Encode a Struct as the field map to pass to ``XADD``."""
    return {DATA_FIELD: _encoder.encode(entry)}


def raw_from_fields(fields: Fields) -> tuple[list[tuple[str, str]], Literal["utf-8", "base64"]]:
    """Keep an entry's fields, in order and with duplicates, as text for a dead letter."""
    pairs = _pairs(fields)
    try:
        return [(k.decode("utf-8"), v.decode("utf-8")) for k, v in pairs], "utf-8"
    except UnicodeDecodeError:
        return [
            (base64.b64encode(k).decode("ascii"), base64.b64encode(v).decode("ascii"))
            for k, v in pairs
        ], "base64"


def pairs(flat: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """``[f1, v1, f2, v2, ...]`` as ``[(f1, v1), (f2, v2), ...]`` (a stream reply's fields)."""
    return list(zip(flat[0::2], flat[1::2], strict=True))


def dead_letter(
    stream: str,
    entry_id: bytes | str,
    reason: str,
    deliveries: int,
    fields: Sequence[bytes] | Oversize | None,
) -> DeadLetter:
    """The dead letter of one entry; ``fields`` is flat, as Redis returned it (None: deleted).

    The raw fields keep their order and duplicates, as text, or base64 for every field and
    value when any is not UTF-8, so :func:`fields_from_raw` gives back the exact bytes —
    unless the entry is too large to carry: then ``raw`` is cut (see :class:`DeadLetter`)
    and the letter stays under DEAD_LETTER_MAX_BYTES whatever the entry.
    """
    if len(reason) > REASON_MAX_CHARS:
        reason = reason[:REASON_MAX_CHARS] + "…"
    entry_text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if isinstance(fields, Oversize):
        return _cut_letter(stream, entry_text, reason, deliveries, fields)
    flat = fields or ()
    raw, encoding = raw_from_fields(pairs(flat))
    letter = DeadLetter(
        stream=stream,
        entry_id=entry_text,
        reason=reason,
        deliveries=deliveries,
        raw=raw,
        raw_encoding=encoding,
    )
    # Cheap bound first (every byte escaped as 6 characters), the real size only if needed.
    if 6 * sum(map(len, flat)) + 16 * len(flat) <= RAW_WHOLE_BYTES:
        return letter
    if len(_encoder.encode(letter)) <= RAW_WHOLE_BYTES:
        return letter
    digest = hashlib.sha256()
    for part in flat:
        digest.update(part)
    oversize = Oversize(cut_fields(flat), sum(map(len, flat)), digest.hexdigest())
    return _cut_letter(stream, entry_text, reason, deliveries, oversize)


def cut_fields(flat: Sequence[bytes]) -> list[bytes]:
    """The first RAW_MAX_PAIRS pairs of ``flat``, each part cut to RAW_CUT_BYTES."""
    return [part[:RAW_CUT_BYTES] for part in flat[: 2 * RAW_MAX_PAIRS]]


def _cut_letter(
    stream: str, entry_id: str, reason: str, deliveries: int, oversize: Oversize
) -> DeadLetter:
    cut = oversize.fields
    if len(cut) % 2:  # a cut flat list always holds whole pairs; never trust it blindly
        cut = [*cut, b""]
    raw, encoding = raw_from_fields(pairs(cut))
    return DeadLetter(
        stream=stream,
        entry_id=entry_id,
        reason=reason,
        deliveries=deliveries,
        raw=raw,
        raw_encoding=encoding,
        raw_truncated=True,
        raw_bytes=oversize.total_bytes,
        raw_sha256=oversize.sha256,
    )


def fields_from_raw(
    raw: Iterable[tuple[str, str]], encoding: Literal["utf-8", "base64"]
) -> list[tuple[bytes, bytes]]:
    """Invert :func:`raw_from_fields`: the original field/value bytes, for replay.

    Raises :class:`DecodeError` if ``raw`` is not valid for ``encoding`` (a hand-edited or
    foreign dead letter), never anything else.
    """
    try:
        if encoding == "base64":
            return [
                (base64.b64decode(k, validate=True), base64.b64decode(v, validate=True))
                for k, v in raw
            ]
        return [(k.encode("utf-8"), v.encode("utf-8")) for k, v in raw]
    except (ValueError, UnicodeError) as exc:  # binascii.Error is a ValueError
        raise DecodeError(f"dead letter raw fields are not valid {encoding}: {exc}") from None
