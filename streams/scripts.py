"""Every Lua script of the coordinator, each with the guarantee it gives.

Scripts run atomically in Redis, so each check-then-write below cannot interleave with
another client's command. Keys are passed in KEYS (never built inside a script) so a
hash-tagged namespace keeps them in one Redis Cluster slot.
"""

from __future__ import annotations

# Guarantees: at most one owner holds the lease at a time; every successful acquisition
# gets an epoch strictly greater than every earlier one (INCR never goes back, even when
# the same owner acquires again). Contention returns the holder and its remaining PTTL so
# a follower can sleep exactly until expiry.
# KEYS: leader, epoch. ARGV: owner, ttl_ms.
# Returns {1, epoch} on success, {0, holder, pttl_ms} when held.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  return {1, epoch}
end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""

# Guarantees: the TTL is extended only while the caller still holds the lease under the
# epoch it was granted; an owner whose lease expired (and was possibly re-granted) can
# never revive it.
# KEYS: leader, epoch. ARGV: owner, ttl_ms, epoch.
# Returns 1 if renewed, 0 if not the owner (or not the current epoch).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[3] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Guarantees: only the owner can delete the lease; on delete, followers are told at once on
# the release channel instead of waiting for the TTL.
# KEYS: leader. ARGV: owner, release channel.
# Returns 1 if released, 0 if the caller was not the owner.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
"""
