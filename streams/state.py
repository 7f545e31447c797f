"""``NS:state``, the hash the fenced commit writes: the read side (a new leader's first step)."""

from __future__ import annotations

from streams.connection import Client
from streams.keys import Keys, StateField


async def read_policy_state(client: Client, keys: Keys) -> bytes | None:
    """The committed policy state (its encoded bytes), or None when nothing was committed."""
    raw = await client.hget(keys.state, StateField.POLICY)
    if raw is None or isinstance(raw, bytes):
        return raw
    return str(raw).encode()
