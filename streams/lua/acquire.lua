-- ACQUIRE: take the lease for owner with a new epoch.
-- Contract: at most one owner holds the lease at a time; every successful acquisition gets
-- an epoch strictly greater than every earlier one, even across a loss of Redis's data (a
-- restart without persistence, the promotion of a replica that missed the last
-- acquisitions): the new epoch is the largest of INCR on the epoch key, the server's TIME in
-- microseconds (a floor that survives data loss: an earlier epoch was at most the TIME of
-- its own acquisition, as no two scripts run within one microsecond), and one more than the
-- largest epoch the caller has seen (covers a new primary whose clock is behind the old
-- one's, as long as any coordinator remembers). So epochs look like unix microseconds (about
-- 2^51 today: exact in Lua's doubles until the year 2255); they are only ever compared,
-- never read as times.
-- Contention returns the holder, its remaining PTTL (so a follower can sleep exactly until
-- expiry) and the current epoch (so every follower keeps its floor up to date).
-- Re-entrant for the same owner: if the lease already holds this owner (an earlier acquire
-- whose reply was lost -- timed out on a slow or paused server, or a connection dropped
-- after sending -- still ran), the owner takes it again under a NEW epoch and a full TTL
-- instead of waiting out its own ghost lease. The new epoch fences anything still in flight
-- from the owner's earlier term (renew, release and fenced writes all check the epoch).
-- Returns {1, epoch} on success, {0, holder, pttl_ms, epoch or false} when held by another.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local owner = ARGV[1]
local ttl_ms = ARGV[2]
local seen_epoch = tonumber(ARGV[3]) or 0

local holder = redis.call('GET', leader_key)
if holder == false or holder == owner then
  redis.call('SET', leader_key, owner, 'PX', ttl_ms)
  local epoch = redis.call('INCR', epoch_key)
  local now = redis.call('TIME')
  local floor = math.max(tonumber(now[1]) * 1000000 + tonumber(now[2]),
    seen_epoch + 1)
  if floor > epoch then
    -- '%d' keeps the decimal form exact (a plain number argument would be sent as %.14g).
    redis.call('SET', epoch_key, string.format('%d', floor))
    epoch = floor
  end
  return {1, epoch}
end
return {0, holder, redis.call('PTTL', leader_key), redis.call('GET', epoch_key)}
