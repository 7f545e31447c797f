-- Prelude "ids", prepended to every script that compares or steps stream entry ids.
-- Contract: ids are handled as two decimal strings (ms and seq, each up to 2^64-1) and
-- never converted to Lua numbers (doubles: exact only up to 2^53), so the order and the
-- successor of an id are exact for every id Redis accepts.

-- The ms and seq parts of '<ms>-<seq>' as strings.
local function id_parts(id)
  return string.match(id, '^(%d+)-(%d+)$')
end

-- True when decimal string a < decimal string b (no leading zeros: Redis writes none).
local function digits_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- True when id a sorts before id b, as Redis orders them (ms, then seq).
local function id_lt(a, b)
  local ams, aseq = id_parts(a)
  local bms, bseq = id_parts(b)
  if ams ~= bms then return digits_lt(ams, bms) end
  return digits_lt(aseq, bseq)
end

-- Decimal string s plus one, with the carry done on the digits.
local function digits_incr(s)
  local i = #s
  while i > 0 and string.sub(s, i, i) == '9' do i = i - 1 end
  if i == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1)
    .. string.rep('0', #s - i)
end

local MAX_ID_PART = '18446744073709551615'

-- The smallest id after id: seq + 1, or the next ms at seq 0 when seq is at its maximum.
-- The very last possible id has no successor and is returned itself (a cut there keeps
-- one entry more, never one fewer).
local function id_next(id)
  local ms, seq = id_parts(id)
  if seq ~= MAX_ID_PART then return ms .. '-' .. digits_incr(seq) end
  if ms ~= MAX_ID_PART then return digits_incr(ms) .. '-0' end
  return id
end
