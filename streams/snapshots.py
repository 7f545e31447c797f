"""Region health snapshots ``NS:region:health:<region>``: a prober's latest view, with a TTL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import msgspec

from streams.connection import Client
from streams.keys import Keys


async def write_snapshots(
    client: Client, keys: Keys, snapshots: Mapping[str, msgspec.Struct], *, ttl_s: int
) -> None:
    """Set each region's snapshot (JSON) with a TTL of ``ttl_s``, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for region, snapshot in snapshots.items():
            pipe.set(keys.region_health(region), msgspec.json.encode(snapshot), ex=ttl_s)
        await pipe.execute()


async def read_snapshots(client: Client, keys: Keys, regions: Sequence[str]) -> list[bytes | None]:
    """The raw snapshot of each region, in order (None where none is stored)."""
    if not regions:
        return []
    return cast(list[bytes | None], await client.mget([keys.region_health(r) for r in regions]))
