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
# Re-entrant for the same owner: if the lease already holds this owner (an earlier acquire
# whose reply was lost -- timed out on a slow or paused server, or a connection dropped after
# sending -- still ran), the owner takes it again under a NEW epoch and a full TTL instead of
# waiting out its own ghost lease. The new epoch fences anything still in flight from the
# owner's earlier term (renew, release and fenced writes all check the epoch).
# KEYS: leader, epoch. ARGV: owner, ttl_ms.
# Returns {1, epoch} on success, {0, holder, pttl_ms} when held by another owner.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local epoch = redis.call('INCR', KEYS[2])
  return {1, epoch}
end
return {0, holder, redis.call('PTTL', KEYS[1])}
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

# Guarantees: only the owner can delete the lease, and, when an epoch is given, only under
# that epoch: a release from an earlier term that reaches Redis late (sent to a paused
# server, then the same owner re-acquired) cannot delete the owner's newer lease. On delete,
# followers are told at once on the release channel instead of waiting for the TTL.
# KEYS: leader, epoch (needed only with an epoch). ARGV: owner, release channel, epoch or ''.
# Returns 1 if released, 0 if the caller was not the owner (or not under that epoch).
RELEASE = """
local epoch = ARGV[3]
if redis.call('GET', KEYS[1]) == ARGV[1]
    and (epoch == nil or epoch == '' or redis.call('GET', KEYS[2]) == epoch) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
"""

# Shared Lua helper for the scripts below: the fence. The caller's write or read goes ahead
# only while it still owns the lease under the epoch it was granted.
# Stream ids compared as numbers (ms, then seq), without float rounding of 13+ digits.
_ID_LT = """
local function id_lt(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if #ams ~= #bms then return #ams < #bms end
  if ams ~= bms then return ams < bms end
  if #aseq ~= #bseq then return #aseq < #bseq end
  return aseq < bseq
end
"""

_FENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {0}
end
"""

# Guarantees (with the transaction around it): entries are taken off the consumer group
# only by the current leader under its current epoch. The fenced read is one MULTI/EXEC:
#   EVAL READ_GUARD; XREADGROUP ... STREAMS <guard> <health> <events> > > >; DEL <guard>
# This script creates the caller's guard stream (with the group) only if it owns the lease
# under its epoch. XREADGROUP checks every listed stream's group before serving any, so
# without the guard it fails with NOGROUP and takes nothing; the closing DEL means a guard
# never outlives its transaction, so if this script fails or is skipped for any reason the
# read fails too. A fenced ex-leader therefore takes nothing once a new leader is elected,
# and the new leader's claim of pending entries is complete. Why not XREADGROUP inside the
# script: converting the reply to Lua and back tripled the server time of a 500-entry read
# (1374 us vs 557 us, bench/pipeline.py), and the read is the leader's hottest call.
# KEYS: leader, epoch, guard. ARGV: owner, epoch, group.
# Returns 1 when the guard was created (the read may proceed), 0 when fenced.
READ_GUARD = """
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[3], '$', 'MKSTREAM')
return 1
"""

# Guarantees: pending entries of the group move to the caller only while it is the current
# leader under its epoch (a fenced ex-leader claims nothing). XAUTOCLAIM with min-idle 0
# takes every pending entry, whoever held it, in id order from the cursor; the delivery
# count of each claimed entry (as Redis counts it: +1 per claim) is returned alongside, read
# in the same atomic step. Ids of entries deleted from the stream while pending are returned
# separately (Redis drops them from the pending list).
# KEYS: leader, epoch, stream. ARGV: owner, epoch, group, cursor, count.
# Returns {0} when fenced, else {1, next cursor, entries, deliveries, deleted ids}.
CLAIM_FENCED = (
    _FENCE
    + """
local r = redis.call('XAUTOCLAIM', KEYS[3], ARGV[3], ARGV[1], 0, ARGV[4], 'COUNT', ARGV[5])
local entries = r[2]
local deleted = r[3] or {}
local live = {}
for _, e in ipairs(entries) do
  if e[2] then live[#live + 1] = e else deleted[#deleted + 1] = e[1] end
end
local deliveries = {}
if #live > 0 then
  local counts = {}
  local p = redis.call('XPENDING', KEYS[3], ARGV[3], live[1][1], live[#live][1], #live, ARGV[1])
  for _, row in ipairs(p) do counts[row[1]] = row[4] end
  for i, e in ipairs(live) do deliveries[i] = counts[e[1]] or 1 end
end
return {1, r[1], live, deliveries, deleted}
"""
)

# Guarantees: a consumer is deleted from the group only when it holds no pending entry
# (checked in the same atomic step), so no entry is ever dropped from the pending list; the
# caller's own consumer is kept. Fenced like every leader write.
# KEYS: leader, epoch, stream1..streamN. ARGV: owner, epoch, group.
# Returns {0} when fenced, else {1, number of consumers deleted}.
PRUNE_CONSUMERS = (
    _FENCE
    + """
local deleted = 0
for k = 3, #KEYS do
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[k], ARGV[3])) do
    local name, pending = nil, nil
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= ARGV[1] and pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[k], ARGV[3], name)
      deleted = deleted + 1
    end
  end
end
return {1, deleted}
"""
)

# Guarantees: one batch is committed entirely or not at all, and only by the current leader
# under its epoch: the state fields, the decisions, the dead letters and the acks of the
# batch's entries are written in one atomic step after the fence check; a fenced caller
# gets {0} and nothing is written (its entries stay pending for the next leader). A commit
# token (epoch:sequence) recorded in the state hash makes a retried commit whose first reply
# was lost a no-op ({2}) instead of a second copy of its decisions.
# Trimming (maxlen > 0) of the decision and dead-letter streams never drops an entry that a
# consumer group of that stream has not been delivered or has not acked: when every group is
# caught up (no pending, lag known and <= maxlen) an approximate MAXLEN trim is used; else
# the cut is lowered to the oldest entry some group still needs and trimmed exactly by
# MINID, at most 100 entries per commit so the script stays short. Key types are checked
# before the first write (Redis does not roll back a script that fails halfway).
# KEYS: leader, epoch, state, decisions, dlq, input stream 1, input stream 2.
# ARGV: owner, epoch, group, token, decisions maxlen, dlq maxlen, #state pairs, #decisions,
# #dead letters, ack ids of stream 1, ack ids of stream 2 (each one MessagePack array of
# strings: one argument instead of hundreds keeps the client's packing and the script's
# parsing cheap), then state field/value pairs, decision data values, dead-letter values.
# Returns {0} fenced, {2} already committed, else {1, decision ids, dead-letter ids, acked}.
COMMIT = (
    _FENCE
    + _ID_LT
    + """
-- Refuse before the first write rather than fail halfway: Redis does not roll back a
-- script that errors, so a wrong key type must stop the commit while nothing is written.
for k = 3, 7 do
  local kind = k == 3 and 'hash' or 'stream'
  local t = redis.call('TYPE', KEYS[k]).ok
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' is a ' .. t .. ', expected ' .. kind)
  end
end
if redis.call('HGET', KEYS[3], 'commit') == ARGV[4] then return {2} end
local function trim(key, maxlen)
  if maxlen <= 0 then return end
  local len = redis.call('XLEN', key)
  if len <= maxlen then return end
  local groups = redis.call('XINFO', 'GROUPS', key)
  local caught_up = true
  local info = {}
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    info[#info + 1] = f
    if f['pending'] ~= 0 or type(f['lag']) ~= 'number' or f['lag'] > maxlen then
      caught_up = false
    end
  end
  if caught_up then
    redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
    return
  end
  local head = redis.call('XRANGE', key, '-', '+', 'COUNT', math.min(len - maxlen, 100) + 1)
  local cut = head[#head][1]
  for _, f in ipairs(info) do
    if id_lt(f['last-delivered-id'], cut) then cut = f['last-delivered-id'] end
    if f['pending'] > 0 then
      local oldest = redis.call('XPENDING', key, f['name'])[2]
      if id_lt(oldest, cut) then cut = oldest end
    end
  end
  redis.call('XTRIM', key, 'MINID', cut)
end
local n_state, n_dec, n_dlq = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local i = 12
for k = i, i + 2 * n_state - 1, 2 do redis.call('HSET', KEYS[3], ARGV[k], ARGV[k + 1]) end
i = i + 2 * n_state
redis.call('HSET', KEYS[3], 'commit', ARGV[4])
local decision_ids, dead_ids = {}, {}
for k = i, i + n_dec - 1 do
  decision_ids[#decision_ids + 1] = redis.call('XADD', KEYS[4], '*', 'data', ARGV[k])
end
i = i + n_dec
for k = i, i + n_dlq - 1 do
  dead_ids[#dead_ids + 1] = redis.call('XADD', KEYS[5], '*', 'data', ARGV[k])
end
i = i + n_dlq
if n_dec > 0 then trim(KEYS[4], tonumber(ARGV[5])) end
if n_dlq > 0 then trim(KEYS[5], tonumber(ARGV[6])) end
local acked = 0
for s = 1, 2 do
  local ids = cmsgpack.unpack(ARGV[9 + s])
  -- XACK in chunks: unpack() is limited by the Lua C stack (about 8000 values).
  for first = 1, #ids, 1000 do
    local last = math.min(first + 999, #ids)
    acked = acked + redis.call('XACK', KEYS[5 + s], ARGV[3], unpack(ids, first, last))
  end
end
return {1, decision_ids, dead_ids, acked}
"""
)

# Guarantees: read-only; one atomic snapshot of the lease, the epoch, the dead-letter and
# decision stream lengths, every input stream's length, its group's delivered position, lag,
# pending count and oldest pending entry, and (when ARGV[3] == '1') the policy state fields,
# all as of one instant of the server's clock (TIME), so `status` never mixes a leader from
# one moment with lag from another. Cost is O(1) per stream (XLEN, XINFO GROUPS, XPENDING
# summary, two COUNT 1 ranges) except when Redis cannot report the lag (no `lag` field
# before Redis 7, NULL after deletions in the undelivered range): then the entries after
# the delivered position are counted, at most ARGV[2]; past that, the entries up to it
# (at most ARGV[2] again) and the lag is the rest; only when both sides exceed the cap is
# the lag the cap, flagged as a lower bound (lag_exact 0).
# KEYS: leader, epoch, dlq, decisions, state, input streams... ARGV: group, count cap, with state.
# Returns {time_s, time_us, owner, pttl, epoch, dlq_len, decisions_len, state, streams} where
# state = {summary, epoch, leader, updated_at} (false when not asked) and each stream is
# {type, length, group_found, consumers, last_delivered, lag, lag_exact, first_undelivered,
#  pending, oldest_pending, oldest_idle_ms, oldest_deliveries}; absent values are false.
LAG_SNAPSHOT = """
local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end
local group, cap = ARGV[1], tonumber(ARGV[2])
local now = redis.call('TIME')
local owner = redis.call('GET', KEYS[1])
local pttl = redis.call('PTTL', KEYS[1])
local epoch = redis.call('GET', KEYS[2])
local function xlen(key)
  if redis.call('TYPE', key).ok ~= 'stream' then return 0 end
  return redis.call('XLEN', key)
end
local state = false
if ARGV[3] == '1' then
  state = redis.call('HMGET', KEYS[5], 'summary', 'epoch', 'leader', 'updated_at')
end
local streams = {}
for k = 6, #KEYS do
  local key = KEYS[k]
  local kind = redis.call('TYPE', key).ok
  local row = {kind, 0, 0, 0, false, 0, 1, false, 0, false, 0, 0}
  if kind == 'stream' then
    row[2] = redis.call('XLEN', key)
    local g = nil
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      if field(info, 'name') == group then g = info end
    end
    local start = '-'
    local lag = nil
    if g then
      row[3] = 1
      row[4] = field(g, 'consumers')
      row[5] = field(g, 'last-delivered-id')
      start = '(' .. row[5]
      lag = field(g, 'lag')
      row[9] = field(g, 'pending')
    else
      lag = row[2]
    end
    if type(lag) == 'number' then
      row[6] = lag
      if lag > 0 then
        local first = redis.call('XRANGE', key, start, '+', 'COUNT', 1)
        if #first > 0 then row[8] = first[1][1] end
      end
    else
      local undelivered = redis.call('XRANGE', key, start, '+', 'COUNT', cap)
      row[6] = #undelivered
      if #undelivered > 0 then row[8] = undelivered[1][1] end
      if #undelivered >= cap then
        -- Many undelivered: count the delivered side instead; if it is short, the lag is
        -- exactly the rest, else report the cap as a lower bound.
        local delivered = redis.call('XREVRANGE', key, row[5], '-', 'COUNT', cap)
        if #delivered < cap then row[6] = row[2] - #delivered else row[7] = 0 end
      end
    end
    if g and row[9] > 0 then
      local oldest = redis.call('XPENDING', key, group, '-', '+', 1)
      if #oldest > 0 then
        row[10] = oldest[1][1]
        row[11] = oldest[1][3]
        row[12] = oldest[1][4]
      end
    end
  end
  streams[#streams + 1] = row
end
return {now[1], now[2], owner, pttl, epoch, xlen(KEYS[3]), xlen(KEYS[4]), state, streams}
"""

# Guarantees: a dead letter is replayed at most once and never lost: the raw fields are
# XADDed back onto their source stream (with a new id, so the group delivers them again)
# and the dead letter is XDELed in the same atomic script, and only if the dead letter is
# still there with exactly the `data` the caller decoded (a concurrent replay or drop
# makes this a no-op). XADD runs first: if it fails (wrong key type), nothing was removed.
# KEYS: dlq, source stream. ARGV: dead letter id, its data value, field1, value1, ...
# Returns {1, new id} when replayed, {0, 'missing'} or {0, 'changed'} when not.
DLQ_REPLAY = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {0, 'missing'} end
local fields = found[1][2]
local data = nil
for i = 1, #fields, 2 do
  if fields[i] == 'data' then data = fields[i + 1] end
end
if data ~= ARGV[2] then return {0, 'changed'} end
if #ARGV < 4 or #ARGV % 2 ~= 0 then return redis.error_reply('replay needs field/value pairs') end
local new_id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], ARGV[1])
return {1, new_id}
"""

# Guarantees: the input streams are trimmed only of entries that every consumer group of
# the stream has been delivered AND has acknowledged, and that are older than the retention
# (on the server's clock); an entry still undelivered or pending for any group is never
# removed, and a stream with no group is left whole (nobody has read it yet). Only the
# current leader under its epoch trims. MINID with '~' removes whole macro nodes only, so
# it may keep a few more entries than the cut, never fewer.
# KEYS: leader, epoch, stream1..N. ARGV: owner, epoch, retention_ms.
# Returns {0} when fenced, else {1, entries removed}.
TRIM_INPUT = (
    _FENCE
    + _ID_LT
    + """
local now = redis.call('TIME')
local horizon = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    - tonumber(ARGV[3])
if horizon <= 0 then return {1, 0} end
local removed = 0
for k = 3, #KEYS do
  local key = KEYS[k]
  if redis.call('TYPE', key).ok == 'stream' then
    local groups = redis.call('XINFO', 'GROUPS', key)
    if #groups > 0 then
      local cut = string.format('%d-0', horizon)
      for _, g in ipairs(groups) do
        local f = {}
        for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
        -- The first entry after last-delivered is undelivered: keep it and all after.
        local delivered = f['last-delivered-id']
        local ms, seq = string.match(delivered, '^(%d+)-(%d+)$')
        local after = ms .. '-' .. string.format('%d', tonumber(seq) + 1)
        if id_lt(after, cut) then cut = after end
        if f['pending'] > 0 then
          local oldest = redis.call('XPENDING', key, f['name'])[2]
          if id_lt(oldest, cut) then cut = oldest end
        end
      end
      removed = removed + redis.call('XTRIM', key, 'MINID', '~', cut)
    end
  end
end
return {1, removed}
"""
)
