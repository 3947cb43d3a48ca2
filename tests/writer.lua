-- tests/writer.lua: a real application writer for the recovery specs and
-- the release transcript. Commits one row into tickets every ~50 ms on its
-- own connection and appends each committed id to a file (after COMMIT
-- returned, so every id in the file was committed). Survives its session
-- being ended (a restore's swap) by reconnecting. Stops when STOPFILE
-- exists, or after 180 s.
--   orch tests/writer.lua URL IDS_FILE STOPFILE
local db = require "orch.db"
local sys = require "orch.sys"
local url, out, stopfile = ...
assert(url and out and stopfile, "usage: orch tests/writer.lua URL IDS_FILE STOPFILE")
local f = assert(io.open(out, "a"))
f:setvbuf("line")
local c
local deadline = sys.monotonic() + 180
while not sys.exists(stopfile) and sys.monotonic() < deadline do
  local ok, err = pcall(function()
    if not c or c:is_closed() then c = db.connect(url, { application_name = "app writer" }) end
    local id = c:value("INSERT INTO tickets (title, requestor_id) VALUES ('written by the application', 1) RETURNING id")
    f:write(tostring(id), "\n")
  end)
  if not ok then
    io.stderr:write("writer: ", tostring(err):gsub("\n.*", ""), "\n")
    if c then pcall(c.close, c) end
    c = nil
  end
  sys.sleep(0.05)
end
f:close()
