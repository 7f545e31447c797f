-- INPUT_WAITING: does any input stream hold an entry after the leader's position?
-- Contract: read only, and no entry's bytes leave Redis (the answer is 0 or 1): the idle
-- leader polls this instead of a blocking XREAD, which would hand it the next entry whole
-- (up to 512 MB) just to wake it up. Ids are stepped as strings (prelude "ids").
-- KEYS: the input streams. ARGV: the last id the leader has seen on each, in KEYS order.
-- Returns 1 if an entry follows the given id on some stream, else 0.
for i, key in ipairs(KEYS) do
  local after = ARGV[i]
  local from = id_next(after)
  if from ~= after and #redis.call('XRANGE', key, from, '+', 'COUNT', 1) > 0 then
    return 1
  end
end
return 0
