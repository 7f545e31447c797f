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
-- Quarantine: after the primary changes, no one acquires before one full TTL has passed,
-- so a leader whose lease the promotion lost has stepped down (its renew fails, or its
-- renew deadline < TTL passes) before anyone else leads. A change is a new replication id
-- (INFO replication's master_replid: a promoted replica takes a new one, and so does a
-- primary restarted without its data) compared with the one this script last ran on
-- (KEYS[3], written here; when that key was lost with the data, the one the caller last
-- saw, ARGV[4]). A change sets KEYS[4] to the new id with PX ttl; while it exists every
-- attempt is refused with its remaining PTTL (the holder of a lease that survived the
-- promotion keeps renewing: renew is not an acquire). Read here, in the same atomic step as
-- the acquisition, so a promotion cannot slip between the check and the grant.
-- Returns {1, epoch, replid} on success, {0, holder, pttl_ms, epoch or false, replid} when
-- held by another, {2, quarantine pttl_ms, replid, 1 if this call started it, epoch or
-- false} during a quarantine.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local primary_key = KEYS[3]
local quarantine_key = KEYS[4]
local owner = ARGV[1]
local ttl_ms = ARGV[2]
local seen_epoch = tonumber(ARGV[3]) or 0
local seen_replid = ARGV[4]

local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
local known = redis.call('GET', primary_key)
if not known and seen_replid ~= '' then known = seen_replid end
local started = 0
if known ~= replid then
  redis.call('SET', primary_key, replid)
  if known then
    redis.call('SET', quarantine_key, replid, 'PX', ttl_ms)
    started = 1
  end
end
local left = redis.call('PTTL', quarantine_key)
if left ~= -2 then
  if left < 0 then left = tonumber(ttl_ms) end  -- no expiry (set by hand): a full TTL
  return {2, left, replid, started, redis.call('GET', epoch_key)}
end

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
  return {1, epoch, replid}
end
return {0, holder, redis.call('PTTL', leader_key), redis.call('GET', epoch_key), replid}
