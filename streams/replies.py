"""What redis-py replies look like, and turning their values into text."""

from __future__ import annotations

from typing import TypeAlias

Entry: TypeAlias = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as redis-py parses XRANGE/XREAD replies: id and fields."""


def text(value: object) -> str:
    """A reply value (bytes, or already str/int) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_or_none(value: object) -> str | None:
    """:func:`text`, but None for a nil reply (None, or Lua's false)."""
    if value is None or value is False:
        return None
    return text(value)
