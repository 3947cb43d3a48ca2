-- The recipes under bad input and faults, on the example project against
-- the real server: a health check failing after migrate, Ctrl-C in the middle
-- of a prod run, a declined approval on a terminal, and the emergency
-- restore recipe bringing back a chosen backup exactly.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local schema_of, contents_of = H.schema_of, H.contents_of

-- A project dir with the example migrations up to `upto`, extra files, and
-- an orch.env.lua whose prod reads TEST_PROD_URL.
local function project(upto, extra, prod_extra)
  local dir = H.tmpdir()
  sys.mkdir_p(dir .. "/migrations")
  for _, f in ipairs(sys.listdir("migrations")) do
    local v = tonumber(f:match("^[VU](%d+)__"))
    if v and v <= upto then H.write(dir .. "/migrations/" .. f, H.read("migrations/" .. f)) end
  end
  for name, text in pairs(extra or {}) do H.write(dir .. "/migrations/" .. name, text) end
  H.write(dir .. "/orch.env.lua", string.format([[return {
  prod = { database = { env = "TEST_PROD_URL" }, protected = true, backups = { dir = %q }, lock_timeout = "2s", retries = 1, %s },
}]], dir .. "/backups/prod", prod_extra or ""))
  return dir
end

local function recipe(dir, name, url, argv, wrap)
  local a = {}
  for _, w in ipairs(wrap or {}) do a[#a + 1] = w end
  a[#a + 1] = H.orch_bin
  a[#a + 1] = sys.realpath("recipes/" .. name)
  for _, x in ipairs(argv or {}) do a[#a + 1] = x end
  a.cwd, a.timeout = dir, 300
  a.env = { TEST_PROD_URL = url, DATABASE_URL = false }
  return sys.spawn(a)
end

local function runlog(r, dir)
  local path = r.stdout:match("run log: (%S+)")
  assert(path, "no run log in:\n" .. r.stdout .. r.stderr)
  local ev = {}
  for line in io.lines(path) do ev[#ev + 1] = json.decode(line) end
  return ev
end

-- A database at V4 with a few rows of our own: "production before the release".
local function production(prefix)
  local url, name = H.fresh_db(prefix)
  local base = project(4)
  local m = H.orch { "migrate", "--db", url, "--dir", base .. "/migrations" }
  assert(m.ok, m.stderr)
  local c <close> = db.connect(url)
  c:exec([[INSERT INTO users (username, email, password_hash, full_name, role, status)
           VALUES ('ops', 'ops@example.test', 'x', 'Ops', 'ADMIN', 'ACTIVE')]])
  c:exec("INSERT INTO tickets (title, requestor_id) SELECT 'ticket ' || g, 1 FROM generate_series(1, 30) g")
  sys.rmtree(base)
  return url, name
end

describe("recipes under faults", function()
  it("prod: a health check failing after migrate restores the backup (exit 3), database identical", function()
    local url, name = production("prod_health")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    -- the release migrates fine, but the service's check says the release is bad
    local dir = project(8, nil, [[health = { sql = { { name = "no reporting views yet", query = "SELECT to_regclass('public.ticket_daily_stats') IS NULL" } } }]])
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("4 migration%(s%) applied", r.stdout)
    assert.matches("no reporting views yet", r.stdout)
    assert.matches("FAILED AND RESTORED", r.stdout)
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    local old = r.stdout:match("the failed database is kept as (%S+)")
    H.drop_db(old)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("prod: Ctrl-C during migrate exits 130, the run log says where, the database is untouched and the backup restores exactly", function()
    local url, name = production("prod_int")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    local backup_rows = contents_of(name)
    local dir = project(4, { ["V5__slow.sql"] = "CREATE TABLE slow_marker (id int);\nSELECT pg_sleep(30);\n" })
    local t0 = sys.monotonic()
    local r = recipe(dir, "prod.lua", url, { "--yes" }, { "timeout", "--preserve-status", "-s", "INT", "4" })
    assert.equals(130, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - t0 < 20, "Ctrl-C did not stop the migration")
    assert.matches("interrupted during 'migrate'", r.stdout)
    local ev = runlog(r, dir)
    local stopped
    for _, e in ipairs(ev) do if e.event == "interrupted" then stopped = e.step end end
    assert.equals("migrate", stopped)
    assert.equals(130, ev[#ev].exit_code)
    -- the migration's transaction was cancelled and rolled back: same schema, same
    -- data; the history gained one row saying V5 failed (rolled back) in this run
    assert.equals(before_schema, schema_of(name))
    local after_rows = contents_of(name)
    for _, k in ipairs { "public.orch_schema_history", "seq public.orch_schema_history_installed_rank_seq" } do
      assert.is_not_nil(after_rows[k])
      after_rows[k], before_rows[k] = nil, nil
    end
    assert.same(before_rows, after_rows)
    local c <close> = db.connect(url)
    local h = c:query("SELECT version, success, rolled_back FROM orch_schema_history WHERE run_id = $1", ev[1].run_id)
    assert.equals(1, #h)
    assert.equals("5", h[1].version)
    assert.is_false(h[1].success)
    assert.is_true(h[1].rolled_back)
    c:close()
    before_rows = contents_of(name)
    -- the run's backup is complete and usable: it verifies and restores to the same state
    local bpath = r.stdout:match("the backup (%S+) is complete and usable")
    assert.truthy(bpath, r.stdout)
    assert.is_true(H.orch({ "verify", bpath }).ok)
    local url2, name2 = H.fresh_db("prod_int_check")
    local rr = H.orch { "restore", bpath, "--db", url2 }
    assert.is_true(rr.ok, rr.stderr)
    assert.equals(before_schema, schema_of(name2))
    assert.same(backup_rows, contents_of(name2))
    H.drop_db(name2)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("prod on a terminal: a declined approval changes nothing and takes no backup", function()
    local url, name = production("prod_decline")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    local dir = project(8)
    local cmd = string.format("cd %s && TEST_PROD_URL=%s %s %s", dir, url, H.orch_bin, sys.realpath("recipes/prod.lua"))
    local r = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "n\n", timeout = 120, env = { DATABASE_URL = false } }
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("apply 4 migration%(s%) to prod", r.stdout)
    assert.matches("approval declined: nothing was changed", r.stdout)
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    local dumps = 0
    for _, f in ipairs(sys.listdir(dir .. "/backups/prod") or {}) do if f:match("%.dump$") then dumps = dumps + 1 end end
    assert.equals(0, dumps)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("prod: a lock held by the application makes migrate time out and retry, then restore (exit 3), database identical", function()
    local url, name = production("prod_lock")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    -- the application holds an uncommitted write on tickets: V5's foreign keys to tickets must wait for it
    local app = db.connect(url)
    app:exec("BEGIN")
    app:exec("UPDATE tickets SET title = title WHERE id = 1")
    local dir = project(8)
    local t0 = sys.monotonic()
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - t0 < 60)
    assert.matches("V5__comments_attachments_history%.sql: .*SQLSTATE 55P03%); retrying", r.stderr)
    assert.matches("lock timeout", r.stdout)
    assert.matches("FAILED AND RESTORED", r.stdout)
    pcall(app.close, app)   -- the swap ended its session
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    H.drop_db(r.stdout:match("the failed database is kept as (%S+)"))
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("prod: a team's lint rule (orch.lint.lua in the project) stops the run before any change (exit 1)", function()
    local url, name = production("prod_lint")
    local before_schema = schema_of(name)
    local dir = project(8)
    H.write(dir .. "/orch.lint.lua", [[return {
  { id = "TEAM001", name = "no-materialized-views", severity = "error", hint = "our replicas cannot refresh them",
    check = function(s) if s.norm:match("^CREATE MATERIALIZED VIEW") then return "creates a materialized view" end end },
}]])
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("TEAM001", r.stdout)
    assert.matches("lint error", r.stdout)
    assert.matches("FAILED %(nothing was changed%)", r.stdout)
    assert.equals(before_schema, schema_of(name))
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("restore.lua: brings back a chosen backup exactly, after a safety backup, and says what to do next", function()
    local url, name = production("restore")
    local dir = project(8)
    -- a prod release: its backup holds the V4 state
    local p = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(0, p.code, p.stdout .. p.stderr)
    local release_run = runlog(p, dir)[1].run_id
    local manifest
    for _, f in ipairs(sys.listdir(dir .. "/backups/prod")) do
      if f:match("%.manifest%.json$") then manifest = f end
    end
    -- what the database looked like in that backup: restore it with stock pg_restore as the judge
    local bfile = dir .. "/backups/prod/" .. manifest:gsub("%.manifest%.json$", ".dump")
    local jurl, jname = H.fresh_db("restore_judge")
    local pr = H.pgtool("pg_restore", { "-d", jname, bfile })
    assert.is_true(pr.ok, pr.stderr)
    local want_schema, want_rows = schema_of(jname), contents_of(jname)
    H.drop_db(jname)
    -- later writes that the emergency restore must undo
    local c = db.connect(url)
    c:exec("INSERT INTO tickets (title, requestor_id) SELECT 'later ' || g, 1 FROM generate_series(1, 5) g")
    c:close()
    local dry = recipe(dir, "restore.lua", url, { "--backup", release_run, "--dry-run" })
    assert.equals(0, dry.code, dry.stdout .. dry.stderr)
    assert.matches("would restore .*" .. release_run:gsub("%p", "%%%0"), dry.stdout)
    local r = recipe(dir, "restore.lua", url, { "--backup", release_run, "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("tables with the backup's row counts, schema at V4", r.stdout)
    assert.matches("DROP DATABASE", r.stdout)
    assert.equals(want_schema, schema_of(name))
    assert.same(want_rows, contents_of(name))
    local old = r.stdout:match("the previous database is kept as (%S+)")
    H.drop_db(old)
    -- the safety backup holds the state just before the restore (the later rows)
    local safety = r.stdout:match("to undo this restore: .* %-%-backup (%S+)")
    assert.truthy(safety, r.stdout)
    assert.is_true(H.orch({ "verify", safety }).ok)
    -- by time: nothing that old is a clear failure; a time after the release picks the newest backup taken by then
    local early = recipe(dir, "restore.lua", url, { "--before", "2000-01-01", "--yes" })
    assert.equals(1, early.code, early.stdout .. early.stderr)
    assert.matches("no complete backup taken at or before 2000%-01%-01T00:00:00Z", early.stdout)
    local bytime = recipe(dir, "restore.lua", url, { "--before", os.date("!%Y-%m-%dT%H:%M:%S"), "--dry-run" })
    assert.equals(0, bytime.code, bytime.stdout .. bytime.stderr)
    assert.matches("would restore %S+%.dump", bytime.stdout)
    -- an unknown backup id is a clear failure that changes nothing
    local bad = recipe(dir, "restore.lua", url, { "--backup", "nope", "--yes" })
    assert.equals(1, bad.code)
    assert.matches("no complete backup 'nope'", bad.stdout)
    H.drop_db(name)
    sys.rmtree(dir)
  end)
end)
