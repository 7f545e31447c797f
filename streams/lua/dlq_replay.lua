-- DLQ_REPLAY: put one dead letter back onto its source stream.
-- Contract: a dead letter is replayed at most once and never lost: the raw fields are
-- XADDed back onto their source stream (with a new id, so the group delivers them again)
-- and the dead letter is XDELed in the same atomic script, and only if the dead letter is
-- still there with exactly the `data` the caller decoded (a concurrent replay or drop
-- makes this a no-op). XADD runs first: if it fails (wrong key type), nothing was removed.
-- ARGV: dead letter id, its data value, then the entry's field/value pairs.
-- Returns {1, new id} when replayed, {0, 'missing'} or {0, 'changed'} when not.
local dlq_key = KEYS[1]
local source_key = KEYS[2]
local dead_id = ARGV[1]
local expected_data = ARGV[2]
local FIRST_FIELD = 3 -- ARGV[FIRST_FIELD..] are the entry's field/value pairs
local n_field_args = #ARGV - FIRST_FIELD + 1

local found = redis.call('XRANGE', dlq_key, dead_id, dead_id)
if #found == 0 then return {0, 'missing'} end
local fields = found[1][2]
local data = nil
for i = 1, #fields, 2 do
  if fields[i] == 'data' then data = fields[i + 1] end
end
if data ~= expected_data then return {0, 'changed'} end
if n_field_args < 2 or n_field_args % 2 ~= 0 then
  return redis.error_reply('replay needs field/value pairs')
end
local new_id = redis.call('XADD', source_key, '*', unpack(ARGV, FIRST_FIELD))
redis.call('XDEL', dlq_key, dead_id)
return {1, new_id}
