-- Prelude "lease", prepended to every script that acts for a leader term.
-- Contract: holds_lease is true only while GET leader == owner and GET epoch == epoch, so
-- a caller whose lease expired, was re-granted, or who acquired again under a newer epoch
-- is fenced. It reads two keys and writes nothing.
local function holds_lease(leader_key, epoch_key, owner, epoch)
  return redis.call('GET', leader_key) == owner and redis.call('GET', epoch_key) == epoch
end
