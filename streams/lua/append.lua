-- APPEND: add many entries to several streams in one atomic step (the Kafka bridge's write).
-- Contract: every value becomes one entry with the single field `field`, auto id, in the
-- order given within each stream, and no other client's command runs in between. An error
-- (a key of another type, out of memory) ends the script with the entries before it kept:
-- the caller retries the whole call, as it does when the reply is lost, so values may land
-- twice but none is skipped (at least once; the readers ignore a repeated event_id).
-- KEYS are the streams; ARGV are the field name, then for each key in order its number of
-- values followed by those values.
-- Returns the number of entries appended.
local field = ARGV[1]
local at = 2 -- index in ARGV of the next key's count
local added = 0
for _, stream_key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  for i = at + 1, at + count do
    redis.call('XADD', stream_key, '*', field, ARGV[i])
  end
  added = added + count
  at = at + count + 1
end
return added
