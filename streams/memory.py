"""Redis's memory policy as the coordinator must judge it (DESIGN §3, "Redis limits").

Under an ``allkeys-*`` ``maxmemory-policy`` Redis may evict any key once memory is full:
``NS:state`` (the policy state), ``NS:leader:epoch`` (the fencing epoch) or an input stream
with undelivered entries. A coordinator then could start fresh at epoch 1 and undo earlier
decisions, so none leads under such a policy unless told to. ``volatile-*`` policies evict
only keys with a TTL (the lease, region snapshots): a lease evicted early costs an extra
election, never state. The policy is read with ``INFO memory`` (no CONFIG permission).
"""

from __future__ import annotations

from streams.connection import Client

SAFE_POLICY = "noeviction"


async def maxmemory_policy(redis: Client) -> str:
    """The server's ``maxmemory-policy`` (``noeviction`` if it does not say)."""
    info = await redis.info("memory")
    return str(info.get("maxmemory_policy", SAFE_POLICY))


def evicts_any_key(policy: str) -> bool:
    """True when ``policy`` may evict keys without a TTL (state, epoch, streams)."""
    return policy.startswith("allkeys-")


def eviction_refusal(policy: str) -> str:
    """The one line a coordinator logs (and status shows) when it will not lead."""
    return (
        f"refusing to lead: Redis maxmemory-policy is {policy}, which may evict the policy"
        f" state, the fencing epoch or undelivered entries; set maxmemory-policy"
        f" {SAFE_POLICY} (or FAILOVER_ALLOW_EVICTION=1 to lead anyway)"
    )
