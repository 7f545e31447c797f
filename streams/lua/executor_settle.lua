-- EXECUTOR SETTLE: one decisions entry done for an executor group, all or nothing.
-- Contract: in one atomic step, the group's position moves to this entry, its epoch to the
-- highest seen, the report (if any) is XADDed to the events stream, the decision's record
-- is finished and the entry is XACKed; so a report is on NS:events exactly when the entry
-- is acked, and a crash leaves either everything or nothing. Entries are settled in stream
-- order: an earlier unsettled entry gives {0, its id} and nothing is written. An entry at
-- or before the position was settled already: it is acked again and {2} returned (a retry
-- whose first reply was lost is a no-op).
-- kind: 'failover' (finishes the started record with status completed|failed),
-- 'stale' / 'duplicate' (a skipped decision, counted; no record), 'leader' (a
-- leader_changed: advances the epoch), 'ignored' (an entry not understood or trimmed).
-- The records of the last `keep` finished decisions are kept (older ones are dropped;
-- their entries are behind the position anyway).
-- Returns {1, report entry id or ''}.
local state_key = KEYS[1]
local order_key = KEYS[2]
local decisions_key = KEYS[3]
local events_key = KEYS[4]
local group = ARGV[1]
local entry_id = ARGV[2]
local kind = ARGV[3]
local decision_id = ARGV[4]
local epoch = ARGV[5]
local status = ARGV[6]
local detail = ARGV[7]
local report = ARGV[8]
local keep = tonumber(ARGV[9])

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local position = redis.call('HGET', state_key, 'position') or '0-0'
if not id_lt(position, entry_id) then
  redis.call('XACK', decisions_key, group, entry_id)
  return {2}
end
local earlier = redis.call('XRANGE', decisions_key, '(' .. position, '(' .. entry_id, 'COUNT', 1)
if #earlier > 0 then return {0, earlier[1][1]} end

local report_id = ''
if report ~= '' then report_id = redis.call('XADD', events_key, '*', 'data', report) end

if kind == 'failover' then
  local field = 'd:' .. decision_id
  local raw = redis.call('HGET', state_key, field)
  local record = raw and cjson.decode(raw) or {
    decision_id = decision_id, epoch = epoch, entry = entry_id, runs = 1,
  }
  record.status = status
  record.detail = detail
  record.finished_at = now_ms
  record.report = report_id
  local encoded = cjson.encode(record)
  redis.call('HSET', state_key, field, encoded, 'last', encoded)
  redis.call('RPUSH', order_key, decision_id)
  while redis.call('LLEN', order_key) > keep do
    redis.call('HDEL', state_key, 'd:' .. redis.call('LPOP', order_key))
  end
  redis.call('HINCRBY', state_key, status, 1)
elseif kind ~= 'leader' then
  redis.call('HINCRBY', state_key, kind, 1)
end

if epoch ~= '' and kind ~= 'stale' then
  local seen = tonumber(redis.call('HGET', state_key, 'epoch') or '0')
  if tonumber(epoch) > seen then redis.call('HSET', state_key, 'epoch', epoch) end
end
redis.call('HSET', state_key, 'position', entry_id, 'updated_at', now_ms)
redis.call('XACK', decisions_key, group, entry_id)
return {1, report_id}
