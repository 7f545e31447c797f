-- TRIM_INPUT: drop old input entries that every group is done with, fenced.
-- Contract: the input streams are trimmed only of entries that every consumer group of the
-- stream has been delivered AND has acknowledged, and that are older than the retention
-- (on the server's clock); an entry still undelivered or pending for any group is never
-- removed, and a stream with no group is left whole (nobody has read it yet). Only the
-- current leader under its epoch trims. MINID with '~' removes whole macro nodes only, so
-- it may keep a few more entries than the cut, never fewer; LIMIT 0 lifts '~''s default
-- cap of 10,000 entries per call, which a stream fed faster than 1,000 entries/s between
-- two trims would outgrow forever (freeing whole nodes stays cheap). Ids are compared and stepped
-- as strings (prelude "ids"), so sequences up to 2^64-1 are exact.
-- KEYS: leader, epoch, then every input stream.
-- Returns {0} when fenced, else {1, entries removed}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local stream_keys = {}
for k = 3, #KEYS do stream_keys[#stream_keys + 1] = KEYS[k] end
local owner = ARGV[1]
local epoch = ARGV[2]
local retention_ms = tonumber(ARGV[3])

if not holds_lease(leader_key, epoch_key, owner, epoch) then return {0} end
local now = redis.call('TIME')
-- Milliseconds since 1970 stay far below 2^53, so a Lua number holds them exactly.
local horizon = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - retention_ms
if horizon <= 0 then return {1, 0} end
local removed = 0
for _, key in ipairs(stream_keys) do
  if redis.call('TYPE', key).ok == 'stream' then
    local groups = redis.call('XINFO', 'GROUPS', key)
    if #groups > 0 then
      local cut = string.format('%.0f-0', horizon)
      for _, g in ipairs(groups) do
        local f = {}
        for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
        -- The first entry after last-delivered is undelivered: keep it and all after.
        local after = id_next(f['last-delivered-id'])
        if id_lt(after, cut) then cut = after end
        if f['pending'] > 0 then
          local oldest = redis.call('XPENDING', key, f['name'])[2]
          if id_lt(oldest, cut) then cut = oldest end
        end
      end
      removed = removed + redis.call('XTRIM', key, 'MINID', '~', cut, 'LIMIT', 0)
    end
  end
end
return {1, removed}
