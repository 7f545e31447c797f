-- READ_GUARD: the fence of the leader's group read.
-- Contract (with the transaction around it): entries are taken off the consumer group only
-- by the current leader under its current epoch. The fenced read is one MULTI/EXEC:
--   EVALSHA read_guard; XREADGROUP ... STREAMS <guard> <inputs...> > ...; DEL <guard>
-- This script creates the caller's guard stream (with the group) only if it owns the lease
-- under its epoch. XREADGROUP checks every listed stream's group before serving any, so
-- without the guard it fails with NOGROUP and takes nothing; the closing DEL means a guard
-- never outlives its transaction, so if this script fails or is skipped for any reason
-- (NOSCRIPT included) the read fails too. A fenced ex-leader therefore takes nothing once
-- a new leader is elected, and the new leader's claim of pending entries is complete.
-- Why not XREADGROUP inside the script: converting the reply to Lua and back tripled the
-- server time of a 500-entry read (1374 us vs 557 us, bench/pipeline.py), and the read is
-- the leader's hottest call.
-- Returns 1 when the guard was created (the read may proceed), 0 when fenced.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local guard_key = KEYS[3]
local owner = ARGV[1]
local epoch = ARGV[2]
local group = ARGV[3]

redis.call('DEL', guard_key)
if not holds_lease(leader_key, epoch_key, owner, epoch) then
  return 0
end
redis.call('XGROUP', 'CREATE', guard_key, group, '$', 'MKSTREAM')
return 1
