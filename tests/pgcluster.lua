-- The test run's PostgreSQL cluster (a ctest fixture):
--   orch tests/pgcluster.lua start DIR   -- initdb + start on a free loopback port
--   orch tests/pgcluster.lua stop DIR    -- stop and remove
-- Failing to start is a failure, never a skip: the specs that need the
-- server are then reported as not run and the whole test run fails.
local localpg = require "orch.localpg"
local action, dir = ...
if not dir then io.stderr:write("usage: orch tests/pgcluster.lua start|stop DIR\n") return 2 end
if action == "start" then
  require("orch.sys").rmtree(dir)
  local pg = localpg.ensure(dir, { fast = true })
  -- one role that must authenticate with a password, for the wrong-password tests
  local hba = pg.data .. "/pg_hba.conf"
  local f = assert(io.open(hba))
  local text = f:read("a")
  f:close()
  f = assert(io.open(hba, "w"))
  f:write("host all orch_pw 127.0.0.1/32 scram-sha-256\n", text)
  f:close()
  local c <close> = pg:connect("postgres")
  c:exec("CREATE ROLE orch_pw LOGIN PASSWORD 'correct-horse-battery'")
  c:exec("SELECT pg_reload_conf()")
  print(string.format("test cluster running: %s (data in %s)", pg:url(), pg.dir))
elseif action == "stop" then
  localpg.open(dir):destroy()
  print("test cluster stopped and removed: " .. dir)
else
  io.stderr:write("unknown action " .. tostring(action) .. "\n")
  return 2
end
