-- PRUNE: delete idle consumers of the group, fenced.
-- Contract: a consumer is deleted from the group only when it holds no pending entry
-- (checked in the same atomic step), so no entry is ever dropped from the pending list;
-- the caller's own consumer is kept. Fenced like every leader write.
-- KEYS: leader, epoch, then every input stream.
-- Returns {0} when fenced, else {1, number of consumers deleted}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local stream_keys = {}
for k = 3, #KEYS do stream_keys[#stream_keys + 1] = KEYS[k] end
local owner = ARGV[1]
local epoch = ARGV[2]
local group = ARGV[3]

if not holds_lease(leader_key, epoch_key, owner, epoch) then return {0} end
local deleted = 0
for _, stream_key in ipairs(stream_keys) do
  -- A stream (or its group) deleted under a starting leader has no consumers to prune;
  -- the read that follows finds the group missing and makes it again.
  local consumers = redis.pcall('XINFO', 'CONSUMERS', stream_key, group)
  if consumers.err then consumers = {} end
  for _, c in ipairs(consumers) do
    local name, pending = nil, nil
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if name ~= owner and pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream_key, group, name)
      deleted = deleted + 1
    end
  end
end
return {1, deleted}
