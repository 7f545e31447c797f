-- ACQUIRE: take the lease for owner with a new epoch.
-- Contract: at most one owner holds the lease at a time; every successful acquisition gets
-- an epoch strictly greater than every earlier one (INCR never goes back, even when the
-- same owner acquires again). Contention returns the holder and its remaining PTTL so a
-- follower can sleep exactly until expiry.
-- Re-entrant for the same owner: if the lease already holds this owner (an earlier acquire
-- whose reply was lost -- timed out on a slow or paused server, or a connection dropped
-- after sending -- still ran), the owner takes it again under a NEW epoch and a full TTL
-- instead of waiting out its own ghost lease. The new epoch fences anything still in flight
-- from the owner's earlier term (renew, release and fenced writes all check the epoch).
-- Returns {1, epoch} on success, {0, holder, pttl_ms} when held by another owner.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local owner = ARGV[1]
local ttl_ms = ARGV[2]

local holder = redis.call('GET', leader_key)
if holder == false or holder == owner then
  redis.call('SET', leader_key, owner, 'PX', ttl_ms)
  local epoch = redis.call('INCR', epoch_key)
  return {1, epoch}
end
return {0, holder, redis.call('PTTL', leader_key)}
