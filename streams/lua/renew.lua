-- RENEW: extend the lease's TTL.
-- Contract: the TTL is extended only while the caller still holds the lease under the
-- epoch it was granted; an owner whose lease expired (and was possibly re-granted) can
-- never revive it.
-- Returns 1 if renewed, 0 if not the owner (or not the current epoch).
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local owner = ARGV[1]
local ttl_ms = ARGV[2]
local epoch = ARGV[3]

if holds_lease(leader_key, epoch_key, owner, epoch) then
  return redis.call('PEXPIRE', leader_key, ttl_ms)
end
return 0
