-- ENTRY_CHUNK: a slice of one stream entry's bytes, so the leader can hash an entry too
-- large to read whole (the sha256 of an oversize entry's dead letter) in bounded memory.
-- Contract: read only; the bytes are the entry's fields and values concatenated in order;
-- entries are immutable, so successive slices of one id belong to the same bytes.
-- KEYS: the stream. ARGV: entry id, offset (0-based), length.
-- Returns {} when the entry is gone, else {total bytes, slice}.
local stream_key = KEYS[1]
local entry_id = ARGV[1]
local offset = tonumber(ARGV[2])
local length = tonumber(ARGV[3])

local rows = redis.call('XRANGE', stream_key, entry_id, entry_id)
if #rows == 0 then return {} end
local fields = rows[1][2]
local total = entry_bytes(fields)
local parts = {}
local pos = 0 -- bytes of the entry before the current part
local stop = offset + length
for _, part in ipairs(fields) do
  local size = #part
  if pos + size > offset and pos < stop then
    local first = math.max(offset - pos, 0) + 1
    local last = math.min(stop - pos, size)
    parts[#parts + 1] = string.sub(part, first, last)
  end
  pos = pos + size
  if pos >= stop then break end
end
return {total, table.concat(parts)}
