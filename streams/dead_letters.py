"""Dead letters (DESIGN §3): an entry the leader could not apply, kept whole with the reason.

The raw fields are copied from the stream reply as Redis returned them — order kept,
duplicates kept — as text, or base64 for every field and value when any is not UTF-8, so
:func:`schemas.codec.fields_from_raw` gives back the exact bytes for replay.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.codec import encode_data, raw_from_fields
from schemas.events import DeadLetter


def pairs(flat: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
    """``[f1, v1, f2, v2, ...]`` as ``[(f1, v1), (f2, v2), ...]`` (a stream reply's fields)."""
    return list(zip(flat[0::2], flat[1::2], strict=True))


def dead_letter(
    stream: str,
    entry_id: bytes | str,
    reason: str,
    deliveries: int,
    fields: Sequence[bytes] | None,
) -> DeadLetter:
    """Build the dead letter of one entry; ``fields`` None means it was deleted from Redis."""
    raw, encoding = raw_from_fields(pairs(fields or ()))
    return DeadLetter(
        stream=stream,
        entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        reason=reason,
        deliveries=deliveries,
        raw=raw,
        raw_encoding=encoding,
    )


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """The ``data`` value of a dead letter entry."""
    return encode_data(letter)
