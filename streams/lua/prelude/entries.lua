-- Prelude "entries", prepended to every script that may hand an input entry to the leader.
-- Contract: an entry larger than max_bytes (its fields and values together) leaves Redis
-- only as a summary {id, cut fields, total bytes}: at most RAW_MAX_PAIRS pairs, each field
-- and value cut to RAW_CUT_BYTES (must match schemas/codec.py), so no entry size can make
-- the leader's memory or a dead letter grow.

local RAW_MAX_PAIRS = 8
local RAW_CUT_BYTES = 1024

-- The size of an entry's flat field list, in bytes.
local function entry_bytes(fields)
  local n = 0
  for _, part in ipairs(fields) do n = n + #part end
  return n
end

-- The entry {id, fields} as the leader may receive it under max_bytes.
local function shaped(e, max_bytes)
  local fields = e[2]
  local n = entry_bytes(fields)
  if n <= max_bytes then return e end
  local cut = {}
  for i = 1, math.min(#fields, 2 * RAW_MAX_PAIRS) do
    cut[i] = string.sub(fields[i], 1, RAW_CUT_BYTES)
  end
  return {e[1], cut, n}
end
