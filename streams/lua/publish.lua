-- PUBLISH: make held decisions visible on the decisions stream once the replicas have them.
-- Contract (FAILOVER_MIN_REPLICAS > 0, see streams/lua/commit.lua's "held decisions"): only
-- the current leader under its epoch publishes (a fenced caller gets {0}, nothing written).
-- A decision moves from the held list to the stream only if the caller names the confirm
-- token that is still the mark: that round's mark write (below) was confirmed by a WAIT on
-- the caller's connection, so the first `count` held decisions, which were all in the list
-- before that write, are on the replicas WAIT counted. They move in order (XADD each, then
-- LTRIM them off the list) in this one atomic step: a decision is held or published, never
-- both and never twice, even when this reply is lost and the call repeated (the mark has
-- moved on by then, so the repeat publishes nothing).
-- Then, while decisions remain held, the mark is SET to next_token: always a write, so a
-- WAIT sent right after this script on the same connection confirms every decision held
-- now (a WAIT after no write confirms nothing). With none held the mark is deleted.
-- KEYS are leader, epoch, held list, mark, decisions; ARGV are owner, epoch, confirm token
-- ('' for none), count, next token, decisions maxlen.
-- Returns {0} fenced, else {1, published entry ids, held count}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local held_key = KEYS[3]
local mark_key = KEYS[4]
local decisions_key = KEYS[5]
local owner = ARGV[1]
local epoch = ARGV[2]
local confirm_token = ARGV[3]
local count = tonumber(ARGV[4])
local next_token = ARGV[5]
local decisions_maxlen = tonumber(ARGV[6])

if not holds_lease(leader_key, epoch_key, owner, epoch) then return {0} end
local ids = {}
if confirm_token ~= '' and count > 0 and redis.call('GET', mark_key) == confirm_token then
  local confirmed = redis.call('LRANGE', held_key, 0, count - 1)
  for _, data in ipairs(confirmed) do
    ids[#ids + 1] = redis.call('XADD', decisions_key, '*', 'data', data)
  end
  redis.call('LTRIM', held_key, #confirmed, -1)
  trim(decisions_key, decisions_maxlen)
end
local held = redis.call('LLEN', held_key)
if held > 0 then
  redis.call('SET', mark_key, next_token)
else
  redis.call('DEL', mark_key)
end
return {1, ids, held}
