-- READ_GUARD: the fence of the leader's group read, and its size guard.
-- Contract (with the transaction around it): entries are taken off the consumer group only
-- by the current leader under its current epoch, and no entry larger than max_bytes ever
-- leaves Redis whole, nor more than about budget bytes per stream in one read.
-- The fenced read is one MULTI/EXEC:
--   EVALSHA read_guard; TIME; XREADGROUP ... STREAMS <guard> <inputs...> > ...; DEL <guard>
-- Fence: this script creates the caller's guard stream (with the group) only if it owns the
-- lease under its epoch. XREADGROUP checks every listed stream's group before serving any,
-- so without the guard it fails with NOGROUP and takes nothing; the closing DEL means a
-- guard never outlives its transaction, so if this script fails or is skipped for any
-- reason (NOSCRIPT included) the read fails too. A fenced ex-leader therefore takes nothing
-- once a new leader is elected, and the new leader's claim of pending entries is complete.
-- Size: before creating the guard, the script looks at the entries the native read would
-- deliver (XRANGE after the group's last-delivered id, same count). Only if one of them is
-- over max_bytes, or together they are over budget, does the script serve the read itself
-- (XREADGROUP here, oversize entries replaced by a summary, cut at the budget) and leave
-- the guard absent, so the native read takes nothing. In 'history' mode (a retry after a
-- reply lost in transit) the script always serves: our own pending entries after the
-- given ids first, then new ones.
-- Why not XREADGROUP inside the script every time: converting the reply to Lua and back
-- tripled the server time of a 500-entry read (1374 us vs 557 us, bench/pipeline.py), and
-- the read is the leader's hottest call; the look ahead costs about as much as the read.
-- KEYS: leader, epoch, guard, then the input streams to read.
-- ARGV: owner, epoch, group, count, max_bytes, budget, mode ('new' or 'history'), then in
-- 'history' mode the id to read our pending entries after, one per input stream.
-- Returns 0 when fenced; 1 when the guard was created (the native read proceeds); or
-- {2, history, new, more} when the script served the read: per input stream, the history
-- entries, the new entries and 1 if the stream may hold more right after them. An entry is
-- {id, fields}, or {id, cut fields, total bytes} when over max_bytes (prelude
-- "entries"); a history entry deleted while pending is {id, nil}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local guard_key = KEYS[3]
local input_keys = {}
for k = 4, #KEYS do input_keys[#input_keys + 1] = KEYS[k] end
local owner = ARGV[1]
local epoch = ARGV[2]
local group = ARGV[3]
local count = tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])
local mode = ARGV[7]
local afters = {}
for k = 8, #ARGV do afters[#afters + 1] = ARGV[k] end

redis.call('DEL', guard_key)
if not holds_lease(leader_key, epoch_key, owner, epoch) then
  return 0
end

-- The group's last-delivered id on key, or nil (no stream or no group: the read fails on
-- its own with NOGROUP, which the caller handles).
local function last_delivered(key)
  if redis.call('EXISTS', key) == 0 then return nil end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == group then return f['last-delivered-id'] end
  end
  return nil
end

-- The entries a native read of key would deliver (at most count).
local function upcoming(key)
  local last = last_delivered(key)
  if last == nil then return {} end
  local from = id_next(last)
  if from == last then return {} end -- the very last id: nothing can follow it
  return redis.call('XRANGE', key, from, '+', 'COUNT', count)
end

-- Each entry's size in bytes (its fields and values together).
local function sizes_of(rows)
  local sizes = {}
  for i, e in ipairs(rows) do sizes[i] = entry_bytes(e[2]) end
  return sizes
end

-- How many of the upcoming entries one read may take: up to the budget (an oversize entry
-- counts as its summary), at least one.
local function within_budget(sizes)
  local total, take = 0, 0
  for i, n in ipairs(sizes) do
    if n > max_bytes then n = 16384 end -- a summary: 8 pairs x 2 x 1024 bytes at most
    if i > 1 and total + n > budget then break end
    total = total + n
    take = i
  end
  return take
end

-- The usual case, checked in one pass with nothing allocated per entry: every upcoming
-- entry is within max_bytes and together they are within the budget (an entry of one
-- field, the usual, is sized without a call).
local looked = {}
if mode ~= 'history' then
  local plain = true
  for s, key in ipairs(input_keys) do
    local rows = upcoming(key)
    looked[s] = rows
    local total = 0
    for i = 1, #rows do
      local f = rows[i][2]
      local n
      if #f == 2 then n = #f[1] + #f[2] else n = entry_bytes(f) end
      total = total + n
      if n > max_bytes or total > budget then
        plain = false
        break
      end
    end
  end
  if plain then
    redis.call('XGROUP', 'CREATE', guard_key, group, '$', 'MKSTREAM')
    return 1
  end
end

local function read(key, id, n)
  local reply = redis.call('XREADGROUP', 'GROUP', group, owner, 'COUNT', n, 'STREAMS', key, id)
  if not reply then return {} end
  return reply[1][2]
end

local history, new, more = {}, {}, {}
for s, key in ipairs(input_keys) do
  history[s] = {}
  if mode == 'history' then
    for i, e in ipairs(read(key, afters[s], count)) do
      if e[2] then history[s][i] = shaped(e, max_bytes) else history[s][i] = {e[1], false} end
    end
  end
  local rows = looked[s] or upcoming(key)
  local take = within_budget(sizes_of(rows))
  new[s] = {}
  if take > 0 then
    for i, e in ipairs(read(key, '>', take)) do new[s][i] = shaped(e, max_bytes) end
  end
  if take < #rows or #rows >= count then more[s] = 1 else more[s] = 0 end
end
return {2, history, new, more}
