-- luacheck configuration for the Redis scripts under streams/lua/ (run: luacheck streams/lua).
-- Redis runs scripts on Lua 5.1 with these globals, all read-only (a script may not create
-- globals).
std = "lua51"
max_line_length = 100
read_globals = { "redis", "KEYS", "ARGV", "cjson", "cmsgpack", "bit", "struct" }

-- streams/scripts.py prepends the preludes to the scripts that list them, so their local
-- functions are in scope there: scripts may read them, and a prelude need not use its own.
-- ``state_field`` (the NS:state field names) is a prelude generated from streams/keys.py.
files["streams/lua/*.lua"] = {
  read_globals = { "holds_lease", "id_lt", "id_next", "state_field", "entry_bytes", "shaped",
    "trim" },
}
files["streams/lua/prelude/*.lua"] = {
  read_globals = { "id_lt" },  -- the trim prelude comes after the ids prelude
  ignore = { "211/holds_lease", "211/id_lt", "211/id_next", "211/entry_bytes", "211/shaped",
    "211/trim" },
}
-- .ci/run also checks each script as Redis runs it (preludes prepended, as text on stdin):
-- there the prelude functions are real locals, and only their being unused is ignored.
