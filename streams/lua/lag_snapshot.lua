-- LAG_SNAPSHOT: everything `status` and the lag monitor read, as of one instant.
-- Contract: read-only; one atomic snapshot of the lease, the epoch, the dead-letter and
-- decision stream lengths, every input stream's length, its group's delivered position,
-- lag, pending count and oldest pending entry, and (when with_state == '1') the policy
-- state fields, all as of one instant of the server's clock (TIME), so `status` never mixes
-- a leader from one moment with lag from another. Cost is O(1) per stream (XLEN, XINFO
-- GROUPS, XPENDING summary, two COUNT 1 ranges) except when Redis cannot report the lag
-- (no `lag` field before Redis 7, NULL after deletions in the undelivered range): then the
-- entries after the delivered position are counted, at most count_cap; past that, the
-- entries up to it (at most count_cap again) and the lag is the rest; only when both sides
-- exceed the cap is the lag the cap, flagged as a lower bound (lag_exact 0).
-- KEYS: leader, epoch, dlq, decisions, state, then every input stream.
-- Returns {time_s, time_us, owner, pttl, epoch, dlq_len, decisions_len, state, streams}
-- where state = {summary, epoch, leader, updated_at} (false when not asked) and each
-- stream is {type, length, group_found, consumers, last_delivered, lag, lag_exact,
-- first_undelivered, pending, oldest_pending, oldest_idle_ms, oldest_deliveries}; absent
-- values are false.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local dlq_key = KEYS[3]
local decisions_key = KEYS[4]
local state_key = KEYS[5]
local input_keys = {}
for k = 6, #KEYS do input_keys[#input_keys + 1] = KEYS[k] end
local group = ARGV[1]
local count_cap = tonumber(ARGV[2])
local with_state = ARGV[3] == '1'

local function field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end
local now = redis.call('TIME')
local owner = redis.call('GET', leader_key)
local pttl = redis.call('PTTL', leader_key)
local epoch = redis.call('GET', epoch_key)
local function xlen(key)
  if redis.call('TYPE', key).ok ~= 'stream' then return 0 end
  return redis.call('XLEN', key)
end
local state = false
if with_state then
  state = redis.call(
    'HMGET', state_key,
    state_field.summary, state_field.epoch, state_field.leader, state_field.updated_at
  )
end
local streams = {}
for _, key in ipairs(input_keys) do
  local kind = redis.call('TYPE', key).ok
  local row = {kind, 0, 0, 0, false, 0, 1, false, 0, false, 0, 0}
  if kind == 'stream' then
    row[2] = redis.call('XLEN', key)
    local g = nil
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      if field(info, 'name') == group then g = info end
    end
    local start = '-'
    local lag
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
      local undelivered = redis.call('XRANGE', key, start, '+', 'COUNT', count_cap)
      row[6] = #undelivered
      if #undelivered > 0 then row[8] = undelivered[1][1] end
      if #undelivered >= count_cap then
        -- Many undelivered: count the delivered side instead; if it is short, the lag is
        -- exactly the rest, else report the cap as a lower bound.
        local delivered = redis.call('XREVRANGE', key, row[5], '-', 'COUNT', count_cap)
        if #delivered < count_cap then row[6] = row[2] - #delivered else row[7] = 0 end
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
return {now[1], now[2], owner, pttl, epoch, xlen(dlq_key), xlen(decisions_key), state, streams}
