-- The test run's PostgreSQL clusters (ctest fixtures):
--   orch tests/pgcluster.lua start DIR [MAJOR]  -- initdb + start on a free loopback port
--   orch tests/pgcluster.lua stop DIR           -- stop and remove
-- Without MAJOR the cluster is the default one (the newest Debian server, 15);
-- with it, that major's server from tests/pgmajors.lua (fixtures pg12 ... pg18).
-- Failing to start is a failure, never a skip: the specs that need the
-- server are then reported as not run and the whole test run fails.
package.path = "./tests/?.lua;" .. package.path
local localpg = require "orch.localpg"
local action, dir, major = ...
if not dir then io.stderr:write("usage: orch tests/pgcluster.lua start|stop DIR [MAJOR]\n") return 2 end
local sys = require "orch.sys"
-- Only ever remove what is clearly a previous test cluster (or nothing).
local function safe_to_clear(d)
  local st = sys.stat(d, true)
  if not st then return true end
  if st.type ~= "directory" then return false end
  local names = sys.listdir(d) or {}
  return #names == 0 or sys.exists(d .. "/data/PG_VERSION")
end
if (action == "start" or action == "stop") and not safe_to_clear(dir) then
  io.stderr:write("refusing to use " .. dir .. ": it exists and is not a test cluster directory\n")
  return 2
end
-- The suite's own extension (tests/fixtures/kinds/extension), where the
-- server connection c looks for extensions; raises when it cannot be written.
local function install_test_extension(c)
  local extdir = c:value("SELECT setting FROM pg_config WHERE name = 'SHAREDIR'") .. "/extension"
  for _, name in ipairs(sys.listdir("tests/fixtures/kinds/extension") or {}) do
    local src = assert(io.open("tests/fixtures/kinds/extension/" .. name, "rb"))
    local text = src:read("a")
    src:close()
    local dst, err = io.open(extdir .. "/" .. name, "wb")
    if not dst then
      error("cannot install the suite's test extension into " .. extdir .. " (" .. tostring(err) ..
        "): run the tests as a user who may write there (root in CI)", 0)
    end
    dst:write(text)
    dst:close()
  end
end
if action == "start" then
  -- a server left running there by an earlier run is stopped before the directory is re-created
  local old = localpg.open(dir)
  if old:initialized() and old:running() then old:stop() end
  sys.rmtree(dir)
  if major then
    local pgmajors = require "pgmajors"
    local pg = localpg.ensure(dir, { fast = true, bindir = pgmajors.bindir(major) })
    local c <close> = pg:connect("postgres")
    local num = c:value("SHOW server_version_num")
    if tonumber(num) // 10000 ~= pgmajors.check(major) then
      error(string.format("the PostgreSQL %s cluster in %s runs server_version_num %s", major, pg.dir, num), 0)
    end
    print(string.format("PostgreSQL %s test cluster running: %s (server_version_num %s, data in %s)",
      major, pg:url(), num, pg.dir))
    return
  end
  local pg = localpg.ensure(dir, { fast = true })
  -- one role that must authenticate with a password (scram-sha-256 over TCP), for the
  -- wrong-password tests and the password-in-the-URL paths (swap restore, verify --deep,
  -- the restore recipe: it creates and renames databases, so CREATEDB)
  local hba = pg.data .. "/pg_hba.conf"
  local f = assert(io.open(hba))
  local text = f:read("a")
  f:close()
  f = assert(io.open(hba, "w"))
  f:write("host all orch_pw 127.0.0.1/32 scram-sha-256\n", text)
  f:close()
  local c <close> = pg:connect("postgres")
  c:exec("CREATE ROLE orch_pw LOGIN CREATEDB PASSWORD 'correct-horse-battery'")
  c:exec("SELECT pg_reload_conf()")
  install_test_extension(c)
  print(string.format("test cluster running: %s (data in %s)", pg:url(), pg.dir))
elseif action == "stop" then
  localpg.open(dir):destroy()
  print("test cluster stopped and removed: " .. dir)
else
  io.stderr:write("unknown action " .. tostring(action) .. "\n")
  return 2
end
