-- Benchmark (not a test): apply N small migrations with `orch migrate`, then
-- time `orch status` with N applied. Starts a throwaway cluster of its own.
--   build/orch tests/bench/migrations_1000.lua [N]
local sys = require "orch.sys"
local localpg = require "orch.localpg"
local n = math.tointeger(tonumber((...) or "1000"))
local bin = sys.realpath(arg[-1] == "orch" and "build/orch" or arg[-1]) or "build/orch"
local work = sys.mkdtemp("/tmp/orch-bench-mig-")
local pg = localpg.ensure(work .. "/pg")
local url = pg:create_database("bench")
local dir = work .. "/migrations"
sys.mkdir_p(dir)
for i = 1, n do
  local f = assert(io.open(string.format("%s/V%d__step_%d.sql", dir, i, i), "w"))
  f:write(string.format("CREATE TABLE t_%d (id int PRIMARY KEY, note text);\nINSERT INTO t_%d VALUES (%d, 'row');\n", i, i, i))
  f:close()
end
local function timed(argv)
  local t0 = sys.monotonic()
  local r = sys.spawn(argv)
  local dt = sys.monotonic() - t0
  if not r.ok then error(table.concat(argv, " ") .. " failed:\n" .. r.stderr, 0) end
  return dt, r
end
local t_migrate = timed { bin, "migrate", "--db", url, "--dir", dir, "--quiet", "--json" }
local t_status = timed { bin, "status", "--db", url, "--dir", dir }
local t_status_json = timed { bin, "status", "--db", url, "--dir", dir, "--json" }
local t_noop = timed { bin, "migrate", "--db", url, "--dir", dir, "--json" }
print(string.format("migrations=%d migrate=%.2fs (%.1f ms each) status=%.3fs status_json=%.3fs migrate_noop=%.3fs",
  n, t_migrate, t_migrate * 1000 / n, t_status, t_status_json, t_noop))
pg:destroy()
sys.rmtree(work)
