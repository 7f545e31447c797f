-- EXECUTOR BEGIN: may this consumer of an executor group act on this failover decision now?
-- Contract: atomically, against the group's state hash, answers one of
--   {'settled', position}  the entry is at or before the group's position: already settled
--                          (its ack was lost or it was redelivered); ack it, do nothing else;
--   {'wait', why}          an earlier entry of the stream is not settled yet, or another
--                          live consumer holds this decision: entries are settled in stream
--                          order, one action at a time per group, so routing ends where the
--                          newest decision says;
--   {'crashed', runs}      the decision was started max_runs times without being settled
--                          (the executor died each time): it is not sent again;
--   {'stale', epoch}       its epoch is lower than one the group has already seen: skip it
--                          (checked before duplicates: an old decision re-added is stale);
--   {'duplicate', status}  the group already finished this decision id: skip it;
--   {'run', runs}          go: the decision is recorded 'started' by this consumer, held
--                          for hold_ms (server clock), runs = 1 the first time, > 1 when a
--                          crashed consumer's action is sent again with the same decision id
--                          and epoch (the resource's idempotency key).
-- Only the 'run' answer writes (the decision's record); every check comes first.
local state_key = KEYS[1]
local decisions_key = KEYS[2]
local entry_id = ARGV[1]
local decision_id = ARGV[2]
-- Epochs are compared as numbers (exact: below 2^53) but stored as the decimal strings
-- they came as: cjson writes numbers with 14 significant digits, an epoch has 16.
local epoch_text = ARGV[3]
local epoch = tonumber(epoch_text)
local consumer = ARGV[4]
local hold_ms = tonumber(ARGV[5])
local max_runs = tonumber(ARGV[6])

local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local position = redis.call('HGET', state_key, 'position') or '0-0'
if not id_lt(position, entry_id) then return {'settled', position} end
local earlier = redis.call('XRANGE', decisions_key, '(' .. position, '(' .. entry_id, 'COUNT', 1)
if #earlier > 0 then return {'wait', 'earlier entry ' .. earlier[1][1]} end

local field = 'd:' .. decision_id
local raw = redis.call('HGET', state_key, field)
local record = raw and cjson.decode(raw)
if record and record.status == 'started' then
  if record.consumer ~= consumer and record.held_until > now_ms then
    return {'wait', 'held by ' .. record.consumer}
  end
  if record.runs >= max_runs then return {'crashed', tostring(record.runs)} end
  record.runs = record.runs + 1
  record.consumer = consumer
  record.held_until = now_ms + hold_ms
  redis.call('HSET', state_key, field, cjson.encode(record))
  return {'run', tostring(record.runs)}
end

-- The fence comes before the duplicate check: an old decision re-added is counted stale.
local seen_text = redis.call('HGET', state_key, 'epoch') or '0'
if epoch < tonumber(seen_text) then return {'stale', seen_text} end
if record then return {'duplicate', record.status} end
record = {
  status = 'started', decision_id = decision_id, epoch = epoch_text, entry = entry_id,
  consumer = consumer, runs = 1, started_at = now_ms, held_until = now_ms + hold_ms,
}
redis.call('HSET', state_key, field, cjson.encode(record))
return {'run', '1'}
