-- COMMIT: one batch of the leader's output, all or nothing, fenced and idempotent.
-- Contract: one batch is committed entirely or not at all, and only by the current leader
-- under its epoch: the state fields, the decisions, the dead letters and the acks of the
-- batch's entries are written in one atomic step after the fence check; a fenced caller
-- gets {0} and nothing is written (its entries stay pending for the next leader). A commit
-- token (epoch:sequence) recorded in the state hash makes a retried commit whose first
-- reply was lost a no-op instead of a second copy of its decisions; that reply still names
-- the entries the first attempt wrote (the newest entries of each stream, when they carry
-- exactly this batch's values), or none when they are no longer there.
-- Trimming (maxlen > 0) of the decision and dead-letter streams never drops an entry that a
-- consumer group of that stream has not been delivered or has not acked: when every group
-- is caught up (no pending, lag known and <= maxlen) an approximate MAXLEN trim is used;
-- else the cut is lowered to the oldest entry some group still needs and trimmed exactly by
-- MINID, at most 100 entries per commit so the script stays short. Key types are checked
-- before the first write (Redis does not roll back a script that fails halfway).
-- Held decisions (hold = '1', FAILOVER_MIN_REPLICAS > 0): the decisions are appended to the
-- held list (KEYS[6]) instead of the decisions stream, in the same atomic step as the state
-- and the acks; streams/lua/publish.lua moves them to the stream once a WAIT confirmed the
-- commit on the replicas. Nothing is visible on the stream before that, and the decision
-- ids reported are then empty (the entries do not exist yet); the reply gives the length
-- of the held list instead.
-- Any number of input streams: KEYS are leader, epoch, state, decisions, dlq, held, then
-- the n_inputs input streams; ARGV are owner, epoch, group, token, decisions maxlen, dlq
-- maxlen, #state pairs, #decisions, #dead letters, n_inputs, hold, then one ack list per
-- input stream (each one MessagePack array of id strings: one argument instead of hundreds
-- keeps the client's packing and the script's parsing cheap), then the state field/value
-- pairs, the decision data values and the dead-letter data values.
-- Returns {0} fenced, {2, decision ids, dead-letter ids, held} already committed,
-- else {1, decision ids, dead-letter ids, acked, held}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local state_key = KEYS[3]
local decisions_key = KEYS[4]
local dlq_key = KEYS[5]
local held_key = KEYS[6]
local owner = ARGV[1]
local epoch = ARGV[2]
local group = ARGV[3]
local token = ARGV[4]
local decisions_maxlen = tonumber(ARGV[5])
local dlq_maxlen = tonumber(ARGV[6])
local n_state = tonumber(ARGV[7])
local n_decisions = tonumber(ARGV[8])
local n_dead = tonumber(ARGV[9])
local n_inputs = tonumber(ARGV[10])
local hold = ARGV[11] == '1'
if #KEYS ~= 6 + n_inputs then
  return redis.error_reply('ERR commit: ' .. n_inputs .. ' input streams but '
    .. (#KEYS - 6) .. ' input keys')
end
-- The variable-length parts, named once: input_keys[s] and packed_acks[s] belong together.
local input_keys, packed_acks = {}, {}
for s = 1, n_inputs do
  input_keys[s] = KEYS[6 + s]
  packed_acks[s] = ARGV[11 + s]
end
local function argv_list(first, n)
  local out = {}
  for j = 1, n do out[j] = ARGV[first + j - 1] end
  return out
end
local state_pairs = argv_list(12 + n_inputs, 2 * n_state)
local decisions = argv_list(12 + n_inputs + 2 * n_state, n_decisions)
local dead_letters = argv_list(12 + n_inputs + 2 * n_state + n_decisions, n_dead)

-- Refuse before the first write rather than fail halfway: Redis does not roll back a
-- script that errors, so a wrong key type must stop the commit while nothing is written.
local function check_type(key, kind)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= kind then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. t .. ', expected ' .. kind)
  end
end

-- The ids of the newest entries of key if they are exactly values (one 'data' field
-- each, in order), else none.
local function tail_ids(key, values)
  if #values == 0 then return {} end
  local tail = redis.call('XREVRANGE', key, '+', '-', 'COUNT', #values)
  if #tail ~= #values then return {} end
  local ids = {}
  for j = 1, #values do
    local entry = tail[#values - j + 1]
    local f = entry[2]
    if #f ~= 2 or f[1] ~= 'data' or f[2] ~= values[j] then return {} end
    ids[j] = entry[1]
  end
  return ids
end

if not holds_lease(leader_key, epoch_key, owner, epoch) then return {0} end
local wrong = check_type(state_key, 'hash') or check_type(decisions_key, 'stream')
  or check_type(dlq_key, 'stream') or check_type(held_key, 'list')
if wrong then return wrong end
for _, key in ipairs(input_keys) do
  wrong = check_type(key, 'stream')
  if wrong then return wrong end
end
if redis.call('HGET', state_key, state_field.commit) == token then
  local shown = hold and {} or tail_ids(decisions_key, decisions)
  return {2, shown, tail_ids(dlq_key, dead_letters), hold and redis.call('LLEN', held_key) or 0}
end
for j = 1, #state_pairs, 2 do
  redis.call('HSET', state_key, state_pairs[j], state_pairs[j + 1])
end
redis.call('HSET', state_key, state_field.commit, token)
local decision_ids, dead_ids = {}, {}
for _, data in ipairs(decisions) do
  if hold then
    redis.call('RPUSH', held_key, data)
  else
    decision_ids[#decision_ids + 1] = redis.call('XADD', decisions_key, '*', 'data', data)
  end
end
for _, data in ipairs(dead_letters) do
  dead_ids[#dead_ids + 1] = redis.call('XADD', dlq_key, '*', 'data', data)
end
if n_decisions > 0 and not hold then trim(decisions_key, decisions_maxlen) end
if n_dead > 0 then trim(dlq_key, dlq_maxlen) end
local acked = 0
for s, key in ipairs(input_keys) do
  local ids = cmsgpack.unpack(packed_acks[s])
  -- XACK in chunks: unpack() is limited by the Lua C stack (about 8000 values).
  for first = 1, #ids, 1000 do
    local last = math.min(first + 999, #ids)
    acked = acked + redis.call('XACK', key, group, unpack(ids, first, last))
  end
end
return {1, decision_ids, dead_ids, acked, hold and redis.call('LLEN', held_key) or 0}
