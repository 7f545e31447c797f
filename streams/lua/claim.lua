-- CLAIM: take over pending entries of the group, fenced.
-- Contract: pending entries of the group move to the caller only while it is the current
-- leader under its epoch (a fenced ex-leader claims nothing). XAUTOCLAIM with min-idle 0
-- takes every pending entry, whoever held it, in id order from the cursor; the delivery
-- count of each claimed entry (as Redis counts it: +1 per claim) is returned alongside,
-- read in the same atomic step. Ids of entries deleted from the stream while pending are
-- returned separately (Redis drops them from the pending list).
-- An entry over max_bytes is returned as its summary (prelude "entries"), never whole.
-- KEYS: leader, epoch, the stream. ARGV: owner, epoch, group, cursor, count, max_bytes.
-- Returns {0} when fenced, else {1, next cursor, entries, deliveries, deleted ids}.
local leader_key = KEYS[1]
local epoch_key = KEYS[2]
local stream_key = KEYS[3]
local owner = ARGV[1]
local epoch = ARGV[2]
local group = ARGV[3]
local cursor = ARGV[4]
local count = ARGV[5]
local max_bytes = tonumber(ARGV[6])

if not holds_lease(leader_key, epoch_key, owner, epoch) then return {0} end
local r = redis.call('XAUTOCLAIM', stream_key, group, owner, 0, cursor, 'COUNT', count)
local entries = r[2]
local deleted = r[3] or {}
local live = {}
for _, e in ipairs(entries) do
  if e[2] then live[#live + 1] = shaped(e, max_bytes) else deleted[#deleted + 1] = e[1] end
end
local deliveries = {}
if #live > 0 then
  local counts = {}
  local p = redis.call('XPENDING', stream_key, group, live[1][1], live[#live][1], #live, owner)
  for _, row in ipairs(p) do counts[row[1]] = row[4] end
  for i, e in ipairs(live) do deliveries[i] = counts[e[1]] or 1 end
end
return {1, r[1], live, deliveries, deleted}
