-- Prelude "trim", prepended to every script that appends to an output stream (decisions,
-- dead letters). Contract: trim(key, maxlen) never drops an entry that a consumer group of
-- key has not been delivered or has not acked: when every group is caught up (no pending,
-- lag known and <= maxlen) an approximate MAXLEN trim is used; else the cut is lowered to
-- the oldest entry some group still needs and trimmed exactly by MINID, at most 100
-- entries per call so the script stays short. maxlen <= 0 means no trimming. Needs the
-- "ids" prelude (id_lt).

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
