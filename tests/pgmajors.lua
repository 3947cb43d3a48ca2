--- Where the test suite finds a server of each PostgreSQL major, and where it
-- keeps that major's test cluster. Shared by tests/pgcluster.lua (which starts
-- the clusters as ctest fixtures) and tests/helper.lua (which hands them to specs).
--
-- 15 is Debian's postgresql-15 (the default cluster, fixture `pg`, whose client
-- tools are the judges); every other major comes from scripts/install-deps,
-- which puts it in $ORCH_TEST_PG_ROOT/<major> (default /opt/orch-test-pg).
local sys = require "orch.sys"

local M = {}

--- Every major the suite runs a server of, oldest first.
M.list = { 12, 13, 14, 15, 16, 17, 18 }

--- The major served by the default cluster (ORCH_TEST_PGDIR).
M.default = 15

--- The directory holding the PostgreSQL installs of every major but 15.
function M.root()
  local r = os.getenv("ORCH_TEST_PG_ROOT")
  if r and r ~= "" then return r end
  return "/opt/orch-test-pg"
end

--- Is m one of M.list? Raises naming the list otherwise.
function M.check(m)
  m = math.tointeger(tonumber(m))
  for _, x in ipairs(M.list) do if x == m then return m end end
  error(string.format("no test server of PostgreSQL %s: the suite has %s", tostring(m),
    table.concat(M.list, ", ")), 0)
end

--- The bin directory (initdb, pg_ctl, postgres) of major m; raises with the
-- command that installs it when it is missing.
function M.bindir(m)
  m = M.check(m)
  local d
  if m == M.default then
    d = "/usr/lib/postgresql/15/bin"
    if not sys.exists(d .. "/initdb") then
      error("PostgreSQL 15's server programs are not in " .. d .. ": install them with " ..
        "'apt-get install postgresql-15' (scripts/install-deps does)", 0)
    end
  else
    d = M.root() .. "/" .. m .. "/bin"
    if not sys.exists(d .. "/postgres") then
      error(string.format("no PostgreSQL %d test server in %s: run scripts/install-deps (it installs " ..
        "every major into ORCH_TEST_PG_ROOT, default /opt/orch-test-pg)", m, d), 0)
    end
  end
  return d
end

--- The cluster directory of major m, beside the default cluster's directory.
function M.dir(base, m)
  return base .. "-" .. M.check(m)
end

--- The majors this spec process should cover: ORCH_TEST_MAJORS ("12" or
-- "12,13"; ctest sets it, one test per major) or every major.
function M.under_test()
  local env = os.getenv("ORCH_TEST_MAJORS")
  if not env or env == "" then return { table.unpack(M.list) } end
  local out = {}
  for m in env:gmatch("[^%s,]+") do out[#out + 1] = M.check(m) end
  return out
end

return M
