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
  print(string.format("test cluster running: %s (data in %s)", pg:url(), pg.dir))
elseif action == "stop" then
  localpg.open(dir):destroy()
  print("test cluster stopped and removed: " .. dir)
else
  io.stderr:write("unknown action " .. tostring(action) .. "\n")
  return 2
end
