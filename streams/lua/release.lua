-- RELEASE: give the lease up and tell followers.
-- Contract: only the owner can delete the lease, and only under the epoch it was granted:
-- a release from an earlier term that reaches Redis late (sent to a paused server, then
-- the same owner re-acquired) cannot delete the owner's newer lease. On delete, followers
-- are told at once on the release channel instead of waiting for the TTL.
-- Returns 1 if released, 0 if the caller was not the owner (or not under that epoch).
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local owner = ARGV[1]
local released_channel = ARGV[2]
local epoch = ARGV[3]

if holds_lease(leader_key, epoch_key, owner, epoch) then
  redis.call('DEL', leader_key)
  redis.call('PUBLISH', released_channel, owner)
  return 1
end
return 0
