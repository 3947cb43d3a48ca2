-- orch fleet on the real test cluster: a recipe rolled over many databases,
-- each target a run of its own (run id, backup namespace, history rows,
-- recovery), in parallel within --parallel; a canary that fails stops
-- everything; --max-failures leaves later targets untouched and reports
-- them as not started; --only; --dry-run changes nothing; --json; targets
-- from a file, a query, URLs and services with variables; the rollout's
-- webhooks; Ctrl-C mid-rollout (once: running targets finish; twice: they
-- are interrupted). The 200-database rollout is tests/bench/fleet_200.sh.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local proc = require "orch.proc"

local function server() return H.cluster():url("postgres") end

-- n fresh databases named PREFIX_PID_i (on cluster pg, default the test
-- cluster's); returns the list of names. FILE_COPY (15+) makes a small
-- database 3-4 times faster than WAL_LOG.
local function databases(prefix, n, pg)
  local c <close> = (pg or H.cluster()):connect("postgres")
  local strategy = tonumber(c:value("SHOW server_version_num")) >= 150000 and " STRATEGY FILE_COPY" or ""
  local names = {}
  for i = 1, n do
    local name = string.format("%s_%d_%02d", prefix, sys.getpid(), i)
    c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(name) .. " WITH (FORCE)")
    c:exec("CREATE DATABASE " .. c:quote_ident(name) .. strategy)
    names[i] = name
  end
  return names
end

local function drop_all(names, pg)
  local c <close> = (pg or H.cluster()):connect("postgres")
  for _, n in ipairs(names) do c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(n) .. " WITH (FORCE)") end
  -- what a swap restore kept aside
  for _, r in ipairs(c:query("SELECT datname FROM pg_database WHERE datname LIKE $1", (names[1]:gsub("_%d+$", "")) .. "%")) do
    c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(r.datname) .. " WITH (FORCE)")
  end
end

-- the light recipe: a backup, the migrations, the recovery ladder (and the notify step)
local LIGHT = [[
local R = require "orch.recipe"
local opts, env = R.setup({ ... }, "fleet")
return R.run { name = "light", opts = opts, env = env,
  steps = { R.step.backup { verify = false }, R.step.migrate { checks = false } },
  on_failure = { R.step.recover {} }, always = { R.step.notify() } }
]]

-- A project: migrations (name -> text), orch.env.lua with environment
-- "fleet" on the test cluster (TEST_FLEET_SERVER), its targets and extra settings.
local function project(migrations, targets, extra)
  local dir = H.tmpdir()
  sys.mkdir_p(dir .. "/migrations")
  for name, text in pairs(migrations) do H.write(dir .. "/migrations/" .. name, text) end
  H.write(dir .. "/light.lua", LIGHT)
  H.write(dir .. "/orch.env.lua", string.format([[return {
  fleet = { database = { env = "TEST_FLEET_SERVER" }, protected = true, backups = { dir = %q, keep = 2 },
            lock_timeout = "2s", retries = 1, targets = %s, %s },
}]], dir .. "/backups", targets, extra or ""))
  return dir
end

local function list(names)
  local q = {}
  for i, n in ipairs(names) do q[i] = string.format("%q", n) end
  return "{ " .. table.concat(q, ", ") .. " }"
end

local function fleet(dir, argv, env, wrap)
  local a = {}
  for _, w in ipairs(wrap or {}) do a[#a + 1] = w end
  a[#a + 1] = H.orch_bin
  a[#a + 1] = "fleet"
  for _, x in ipairs(argv) do a[#a + 1] = x end
  a.cwd, a.timeout = dir, 300
  a.env = { TEST_FLEET_SERVER = server(), DATABASE_URL = false, ORCH_ENV = false }
  for k, v in pairs(env or {}) do a.env[k] = v end
  return sys.spawn(a)
end

local function report(r)
  local ok, doc = pcall(json.decode, r.stdout)
  assert(ok and type(doc) == "table", "no JSON report on stdout:\n" .. r.stdout .. "\n" .. r.stderr)
  local by = {}
  for _, t in ipairs(doc.targets) do by[t.name] = t end
  return doc, by
end

local function has_history(name)
  local c <close> = H.connect(name)
  return c:value("SELECT to_regclass('public.orch_schema_history') IS NOT NULL")
end

-- the example project's prod.lua, as a recipe of the project in dir (see H.recipe)
local function PROD(dir) return H.recipe("prod", dir) end
local TWO = { ["V1__t.sql"] = "CREATE TABLE t (id int PRIMARY KEY, note text);\n",
              ["V2__u.sql"] = "ALTER TABLE t ADD COLUMN tenant text;\n" }

describe("orch fleet", function()
  -- (the light recipe: prod.lua's preflight, verify and health checks, times 20, cost the suite more than they prove here;
  -- prod.lua runs in the recovery, dry-run and terminal specs below)
  it("rolls a recipe over 20 databases on two servers in parallel: each its own run id, history rows, backup namespace and run log; --json says it all", function()
    -- 18 database names on the environment's server, and 2 URLs on another server
    local names = databases("fl_par", 18)
    local far = require("orch.localpg").ensure(string.format("/tmp/orch-fleet-far-%d", sys.getpid()))
    local far_names = databases("fl_far", 2, far)
    local entries = {}
    for i, n in ipairs(names) do entries[i] = string.format("%q", n) end
    for i, n in ipairs(far_names) do
      entries[#entries + 1] = string.format("{ name = %q, url = %q }", n, far:url(n))
      names[#names + 1] = n
    end
    local dir = project(TWO, "{ " .. table.concat(entries, ", ") .. " }")
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--parallel", "4", "--yes", "--json" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals(0, doc.exit_code)
    assert.equals("SUCCEEDED", doc.outcome)
    assert.equals("fleet", doc.env)
    assert.equals(4, doc.parallel)
    assert.same({ succeeded = 20, failed = 0, interrupted = 0, not_started = 0 }, doc.counts)
    assert.equals(20, #doc.targets)
    -- bounded, and really parallel: never more than 4 at once, more than one at some point
    assert.is_true(doc.peak_running <= 4 and doc.peak_running > 1, "peak " .. tostring(doc.peak_running))
    local ids = {}
    for i, name in ipairs(names) do
      local t = by[name]
      assert.equals(name, doc.targets[i].name)   -- the report keeps the fleet's order
      assert.equals("succeeded", t.status)
      assert.equals(0, t.exit_code)
      assert.equals("SUCCEEDED", t.outcome)
      assert.is_number(t.seconds)
      assert.is_number(t.started)
      assert.is_nil(ids[t.run_id], "run ids are per target")
      ids[t.run_id] = true
      -- the backup lives in the target's own namespace, with its manifest, and names this run
      assert.equals(dir .. "/backups/" .. name, t.backups_dir)
      assert.equals(dir .. "/backups/" .. name, t.backup:match("^(.*)/[^/]+$"))
      local m = json.decode(H.read(t.backup:gsub("%.dump$", ".manifest.json")))
      assert.equals(t.run_id, m.run_id)
      -- the history rows carry the target's run id; the run log is the target's
      local c <close> = i > 18 and far:connect(name) or H.connect(name)
      assert.equals(2, c:value("SELECT count(*) FROM orch_schema_history WHERE run_id = $1 AND success", t.run_id))
      assert.equals(dir .. "/backups/" .. name .. "/runs/" .. t.run_id .. ".jsonl", t.run_log)
      local last = json.decode(H.read(t.run_log):match("([^\n]+)\n$"))
      assert.equals("run_end", last.event)
      assert.equals(0, last.exit_code)
    end
    -- the rollout's own record
    assert.truthy(sys.exists(doc.report), doc.report)
    assert.equals(doc.fleet_id, json.decode(H.read(doc.report)).fleet_id)
    assert.matches("fleet .* SUCCEEDED over environment fleet — 20 targets: 20 succeeded", r.stderr)
    far:destroy()
    names[19], names[20] = nil, nil
    drop_all(names)
  end)

  it("a failing target runs its own recovery (undo, exit 3) and the others' results stand; the overall exit is the worst", function()
    local names = databases("fl_rec", 6)
    -- the fourth tenant already has a t2: its V2 fails after V1 committed, and the ladder undoes V1
    local c <close> = H.connect(names[4])
    c:exec("CREATE TABLE t2 (id int)")
    c:close()
    local dir = project({ ["V1__t.sql"] = "CREATE TABLE t (id int);\n", ["U1__t.sql"] = "DROP TABLE t;\n",
                          ["V2__t2.sql"] = "CREATE TABLE t2 (id int);\n" }, list(names), "release = { atomic = false }, allow_non_empty = true")
    local r = fleet(dir, { PROD(dir), "--env", "fleet", "--parallel", "3", "--yes", "--json" })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals(3, doc.exit_code)
    assert.same({ succeeded = 5, failed = 1, interrupted = 0, not_started = 0 }, doc.counts)
    local bad = by[names[4]]
    assert.equals(3, bad.exit_code)
    assert.equals("failed", bad.status)
    assert.equals("migrate", bad.failed_step)
    assert.equals("undo", bad.recovery.rung)
    assert.matches("t2", bad.cause)
    local b <close> = H.connect(names[4])
    assert.is_nil(b:value("SELECT to_regclass('public.t')"), "V1 was undone")
    for i, n in ipairs(names) do
      if i ~= 4 then
        assert.equals(0, by[n].exit_code)
        local x <close> = H.connect(n)
        assert.equals(2, x:value("SELECT count(*) FROM orch_schema_history WHERE success"))
      end
    end
    assert.matches("FAILED AND UNDONE", r.stderr)
    drop_all(names)
  end)

  it("a canary that fails stops everything: no other target is started, and they are reported as not started", function()
    local names = databases("fl_can", 5)
    local c <close> = H.connect(names[1])
    c:exec("CREATE TABLE t (x int)")   -- the canary's V1 fails
    c:close()
    local dir = project(TWO, list(names))
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--canary", "1", "--parallel", "4", "--yes", "--json" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals("canary", doc.stopped.reason)
    assert.equals("STOPPED: THE CANARY FAILED", doc.outcome)
    assert.is_true(by[names[1]].canary)
    assert.equals(1, by[names[1]].exit_code)
    for i = 2, 5 do
      assert.equals("not started", by[names[i]].status)
      assert.equals("canary", by[names[i]].not_started_because)
      assert.is_nil(by[names[i]].exit_code)
      assert.is_false(has_history(names[i]), names[i] .. " was touched")
      assert.is_false(sys.exists(dir .. "/backups/" .. names[i]))
    end
    assert.matches("not started %(the canary failed%)", r.stderr)
    drop_all(names)
  end)

  it("--max-failures 1 with --parallel 1 leaves the later targets untouched and reports them as not started", function()
    local names = databases("fl_max", 5)
    local c <close> = H.connect(names[2])
    c:exec("CREATE TABLE t (x int)")
    c:close()
    local dir = project(TWO, list(names))
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--parallel", "1", "--max-failures", "1", "--yes", "--json" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals("max_failures", doc.stopped.reason)
    assert.same({ succeeded = 1, failed = 1, interrupted = 0, not_started = 3 }, doc.counts)
    assert.equals(0, by[names[1]].exit_code)
    assert.is_true(has_history(names[1]))
    assert.equals(1, by[names[2]].exit_code)
    for i = 3, 5 do
      assert.equals("not started", by[names[i]].status)
      assert.equals("max_failures", by[names[i]].not_started_because)
      assert.is_false(has_history(names[i]))
    end
    drop_all(names)
  end)

  it("--only runs the named targets alone; a name the fleet lacks is a usage error (exit 2) before anything starts", function()
    local names = databases("fl_only", 4)
    local dir = project(TWO, list(names))
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--only", names[3] .. "," .. names[1], "--yes", "--json" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc = report(r)
    assert.equals(2, #doc.targets)
    assert.equals(names[1], doc.targets[1].name)   -- the fleet's order, not the option's
    assert.equals(names[3], doc.targets[2].name)
    assert.is_true(has_history(names[1]))
    assert.is_true(has_history(names[3]))
    assert.is_false(has_history(names[2]))
    assert.is_false(has_history(names[4]))
    local u = fleet(dir, { "light.lua", "--env", "fleet", "--only", "nosuch", "--yes" })
    assert.equals(2, u.code, u.stdout .. u.stderr)
    assert.matches("%-%-only nosuch: the fleet has no target of that name", u.stderr)
    assert.is_false(has_history(names[2]))
    -- a recipe of another project would run on that project's migrations: refused before anything starts
    local other = project({ ["V1__other.sql"] = "CREATE TABLE other (id int);\n" }, list(names))
    local o = fleet(dir, { other .. "/light.lua", "--env", "fleet", "--yes" })
    assert.equals(2, o.code, o.stdout .. o.stderr)
    assert.matches("recipe .*light%.lua belongs to the project in .*, not to this one", o.stderr)
    assert.is_false(has_history(names[2]))
    drop_all(names)
  end)

  it("the recipe sees env.target (name and variables); a target killed outright is reported as such and needs a human (exit 4)", function()
    local names = databases("fl_who", 2)
    local dir = project({}, string.format([[{ { name = "gold", dbname = %q, vars = { plan = "gold" } },
                                               { name = "crash", dbname = %q, vars = { plan = "crash" } } }]], names[1], names[2]))
    H.write(dir .. "/who.lua", [[
local R = require "orch.recipe"
local sys = require "orch.sys"
local opts, env = R.setup({ ... }, "fleet")
return R.run { name = "who", opts = opts, env = env, steps = {
  R.step.lua { name = "who am i", run = function(ctx)
    local c = ctx:conn()
    c:exec("CREATE TABLE whoami (name text, plan text)")
    c:query("INSERT INTO whoami VALUES ($1, $2)", env.target.name, env.target.vars.plan)
    if env.target.vars.plan == "crash" then sys.kill(sys.getpid(), 9) end
    return "ok"
  end } } }
]])
    local r = fleet(dir, { "who.lua", "--env", "fleet", "--yes", "--json" })
    assert.equals(4, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals(0, by.gold.exit_code)
    assert.equals(4, by.crash.exit_code)
    assert.equals(9, by.crash.signal)
    assert.matches("killed by signal 9", by.crash.outcome)
    for i, want in ipairs { "gold", "crash" } do
      local c <close> = H.connect(names[i])
      local row = c:query("SELECT name, plan FROM whoami")[1]
      assert.equals(want, row.name)
      assert.equals(want, row.plan)
    end
    -- a recipe that does not parse fails once, before any target starts
    H.write(dir .. "/broken.lua", "local x = \n")
    local b = fleet(dir, { "broken.lua", "--env", "fleet", "--yes" })
    assert.equals(1, b.code, b.stdout .. b.stderr)
    assert.matches("recipe does not parse: .* %(no target was started%)", b.stderr)
    drop_all(names)
  end)

  it("retention is per target: each namespace keeps its own newest backups.keep backups", function()
    local names = databases("fl_keep", 2)
    local dir = project(TWO, list(names))   -- backups.keep = 2
    for _ = 1, 3 do
      local r = fleet(dir, { "light.lua", "--env", "fleet", "--yes" })
      assert.equals(0, r.code, r.stdout .. r.stderr)
    end
    for _, n in ipairs(names) do
      local dumps = 0
      for _, f in ipairs(sys.listdir(dir .. "/backups/" .. n)) do if f:match("%.dump$") then dumps = dumps + 1 end end
      assert.equals(2, dumps, n)
    end
    local reports = 0
    for _, f in ipairs(sys.listdir(dir .. "/backups/fleet")) do if f:match("%.json$") then reports = reports + 1 end end
    assert.equals(3, reports)
    drop_all(names)
  end)

  it("--fleet-target NAME narrows a command or recipe to one target: its database, backups, run logs; a name the fleet lacks is exit 2", function()
    local names = databases("fl_tgt", 2)
    local dir = project(TWO, list(names))
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local function orch(argv)
      return H.orch(argv, { cwd = dir, env = { TEST_FLEET_SERVER = server(), DATABASE_URL = false, ORCH_ENV = false } })
    end
    -- the target's own backup namespace, not the environment's base directory
    local b = orch { "backups", "list", "--env", "fleet", "--fleet-target", names[2], "--json" }
    assert.equals(0, b.code, b.stderr)
    local listed = json.decode(b.stdout)
    assert.equals(1, #listed)
    assert.equals(dir .. "/backups/" .. names[2], listed[1].path:match("^(.*)/[^/]+$"))
    assert.equals(names[2], listed[1].manifest.database)
    local runs = orch { "runs", "--env", "fleet", "--fleet-target", names[1], "--json" }
    assert.equals(0, runs.code, runs.stderr)
    assert.equals(1, #json.decode(runs.stdout))
    -- a migration command reaches the target's database
    do
      local c <close> = H.cluster():connect(names[2])
      c:exec("DROP TABLE public.orch_schema_history, t")
    end
    local function applied(name)
      local st = orch { "status", "--env", "fleet", "--fleet-target", name, "--json" }
      assert.equals(0, st.code, st.stderr)
      return json.decode(st.stdout).summary.applied or 0
    end
    assert.equals(2, applied(names[1]))
    assert.equals(0, applied(names[2]))
    -- a recipe takes it too (its dry run names the target's database)
    local dry = orch { "light.lua", "--env", "fleet", "--fleet-target", names[2], "--dry-run" }
    assert.equals(0, dry.code, dry.stderr)
    assert.matches(names[2], dry.stdout, 1, true)
    assert.is_nil(dry.stdout:find(names[1], 1, true))
    local bad = orch { "status", "--env", "fleet", "--fleet-target", "nosuch" }
    assert.equals(2, bad.code)
    assert.matches("--fleet-target nosuch: environment fleet has no target of that name (it has 2: " .. names[1] .. ", " .. names[2] .. ")", bad.stderr, 1, true)
    H.write(dir .. "/orch.env.lua", H.read(dir .. "/orch.env.lua"):gsub("\n}$", "\n  plain = { database = { env = \"TEST_FLEET_SERVER\" } },\n}"))
    local notfleet = orch { "backups", "list", "--env", "plain", "--fleet-target", names[1] }
    assert.equals(2, notfleet.code, notfleet.stderr)
    assert.matches("environment plain has no targets (it is not a fleet)", notfleet.stderr, 1, true)
    drop_all(names)
  end)

  it("--timeout interrupts a target that runs too long (its release rolls back) and reports it TIMED OUT; the others stand", function()
    local names = databases("fl_slow", 3)
    local targets = string.format([[{ { name = "a", dbname = %q, vars = { nap = "0" } }, { name = "slow", dbname = %q, vars = { nap = "300" } },
      { name = "c", dbname = %q, vars = { nap = "0" } } }]], names[1], names[2], names[3])
    local dir = project({ ["V1__t.sql"] = "CREATE TABLE t (id int);\nSELECT pg_sleep(${nap});\n" }, targets)
    -- the quick targets have 20 s for a backup and one migration, whatever the machine's load
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--parallel", "3", "--timeout", "20s", "--yes", "--json" })
    assert.equals(130, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals(0, by.a.exit_code, r.stderr)
    assert.equals(0, by.c.exit_code, r.stderr)
    assert.equals(130, by.slow.exit_code, r.stderr)
    assert.is_true(by.slow.timed_out)
    assert.matches("^TIMED OUT after 20%.0s %(%-%-timeout%)", by.slow.outcome)
    assert.matches("still running after --timeout 20.0s: interrupted", by.slow.cause, 1, true)
    assert.is_true(by.slow.seconds < 20 + require("orch.fleet").TIMEOUT_GRACE, "interrupted, not waited for")
    assert.matches("slow: still running after --timeout 20.0s: interrupting it", r.stderr, 1, true)
    -- its release was rolled back; the others' stand
    assert.is_true(has_history(names[1]))
    assert.is_true(has_history(names[3]))
    local c <close> = H.connect(names[2])
    assert.is_nil(c:value("SELECT to_regclass('public.t')"))
    drop_all(names)
  end)

  it("--dry-run shows each target's plan and changes nothing: no history, no backup, no run log", function()
    local names = databases("fl_dry", 3)
    local dir = project(TWO, list(names))
    local r = fleet(dir, { PROD(dir), "--env", "fleet", "--dry-run", "--json" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.is_true(doc.dry_run)
    assert.equals("DRY RUN (nothing was changed)", doc.outcome)
    for _, n in ipairs(names) do
      assert.equals("would apply: V1__t.sql, V2__u.sql", by[n].plan)
      assert.is_false(has_history(n))
    end
    assert.is_false(sys.exists(dir .. "/backups"), "a dry run wrote into the backups directory")
    -- and a protected environment without a terminal and without --yes starts nothing
    local p = fleet(dir, { PROD(dir), "--env", "fleet" })
    assert.equals(1, p.code, p.stdout .. p.stderr)
    assert.matches("is protected and there is no terminal to ask: pass %-%-yes", p.stderr)
    for _, n in ipairs(names) do assert.is_false(has_history(n)) end
    drop_all(names)
  end)

  it("on a terminal without --yes: the plan per target (grouped), one question; no starts nothing, y rolls out", function()
    local names = databases("fl_tty", 3)
    local dir = project(TWO, list(names))
    -- the third is at V1 already: its plan differs
    local m = H.orch { "migrate", "--db", H.cluster():url(names[3]), "--dir", dir .. "/migrations", "--target", "1" }
    assert.equals(0, m.code, m.stderr)
    local cmd = string.format("cd %s && %s fleet %s --env fleet", dir, H.orch_bin, PROD(dir))
    local env = { TEST_FLEET_SERVER = server(), DATABASE_URL = false, ORCH_ENV = false }
    local no = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "n\n", timeout = 120, env = env }
    assert.equals(1, no.code, no.stdout .. no.stderr)
    assert.matches("the plan per target %(a dry run of each, nothing is changed%)", no.stdout)
    assert.matches("would apply: V1__t%.sql, V2__u%.sql\r?\n%s+2 targets: " .. names[1] .. ", " .. names[2], no.stdout)
    assert.matches("would apply: V2__u%.sql\r?\n%s+1 target: " .. names[3], no.stdout)
    assert.matches("on these 3 target%(s%) of fleet", no.stdout)
    assert.matches("approval declined: no target was started, nothing was changed", no.stdout)
    assert.is_false(has_history(names[1]))
    assert.is_false(sys.exists(dir .. "/backups/" .. names[1]))
    local cmd2 = string.format("cd %s && %s fleet %s --env fleet --only %s,%s", dir, H.orch_bin, PROD(dir), names[1], names[2])
    local yes = sys.spawn { "script", "-qec", cmd2, "/dev/null", stdin = "y\n", timeout = 120, env = env }
    assert.equals(0, yes.code, yes.stdout .. yes.stderr)
    assert.is_true(has_history(names[1]))
    assert.is_true(has_history(names[2]))
    drop_all(names)
  end)

  it("targets from a file, a directory query, URLs and libpq services, each with variables the recipe sees as placeholders", function()
    local names = databases("fl_src", 4)
    local pg = H.cluster()
    local svcfile = H.write(H.tmpdir() .. "/pg_service.conf", string.format("[fleet_svc]\nhost=%s\nport=%d\nuser=%s\ndbname=%s\n",
      pg.host, pg.port, pg.user, names[4]))
    local mig = { ["V1__t.sql"] = "CREATE TABLE t (tenant text DEFAULT '${tenant}');\n" }
    local dir = project(mig, [[{ file = "tenants.txt" }]], [[placeholders = { tenant = "none" }]])
    H.write(dir .. "/tenants.txt", table.concat({
      "# name target vars",
      "acme " .. names[1] .. " tenant=ACME",
      pg:url(names[2]) .. " tenant=URL",
      "",
      "svc service=fleet_svc tenant=SVC",
      names[3],
    }, "\n") .. "\n")
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--yes", "--json" }, { PGSERVICEFILE = svcfile })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc = report(r)
    assert.same({ "acme", names[2], "svc", names[3] }, { doc.targets[1].name, doc.targets[2].name, doc.targets[3].name, doc.targets[4].name })
    local function default_of(n)
      local c <close> = H.connect(n)
      return c:value("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'public.t'::regclass")
    end
    assert.equals("'ACME'::text", default_of(names[1]))
    assert.equals("'URL'::text", default_of(names[2]))
    assert.equals("'none'::text", default_of(names[3]))
    assert.equals("'SVC'::text", default_of(names[4]))
    assert.truthy(sys.exists(dir .. "/backups/svc"))
    -- the same from a query against a directory database: name, dbname, and the rest are variables
    local dirdb_url, dirdb = H.fresh_db("fl_directory")
    local d <close> = db.connect(dirdb_url)
    d:exec("CREATE TABLE tenants (name text, dbname text, tenant text, active bool)")
    for i, n in ipairs(names) do d:query("INSERT INTO tenants VALUES ($1, $2, $3, $4)", "q" .. i, n, "Q" .. i, i ~= 2 and "t" or "f") end
    d:close()
    local mig2 = { ["V1__t.sql"] = mig["V1__t.sql"], ["V2__q.sql"] = "CREATE TABLE q (tenant text DEFAULT '${tenant}');\n" }
    local dir2 = project(mig2, [[{ query = "SELECT name, dbname, tenant FROM tenants WHERE active ORDER BY name", directory = { env = "TEST_DIRECTORY" } }]],
      [[placeholders = { tenant = "none" }]])
    local r2 = fleet(dir2, { "light.lua", "--env", "fleet", "--yes", "--json" }, { TEST_DIRECTORY = dirdb_url })
    assert.equals(0, r2.code, r2.stdout .. r2.stderr)
    local doc2 = report(r2)
    assert.equals(3, #doc2.targets)
    assert.same({ "q1", "q3", "q4" }, { doc2.targets[1].name, doc2.targets[2].name, doc2.targets[3].name })
    local c <close> = H.connect(names[3])
    assert.equals("'Q3'::text", c:value("SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = 'public.q'::regclass"))
    c:close()
    -- a bad entry is named, and nothing starts
    local dir3 = project(mig, [[{ "ok_db", { name = "x", dbname = "a", url = "postgresql://h/b" } }]])
    local r3 = fleet(dir3, { "light.lua", "--env", "fleet", "--yes" })
    assert.equals(1, r3.code, r3.stdout .. r3.stderr)
    assert.matches("targets%[2%]: names its database more than one way", r3.stderr)
    H.drop_db(dirdb)
    drop_all(names)
  end)

  it("webhooks: one for the rollout's start and end; the targets' own only when the environment sets fleet.notify_targets", function()
    local srv = H.httpd()
    local names = databases("fl_hook", 3)
    local dir = project(TWO, list(names), [[webhooks = { { url_env = "TEST_HOOK", kind = "json" } }]])
    local r = fleet(dir, { "light.lua", "--env", "fleet", "--yes" }, { TEST_HOOK = srv:url("/hook/fleet") })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local events = {}
    for _, h in ipairs(srv:hooks()) do events[#events + 1] = json.decode(h.body).event end
    assert.same({ "fleet_started", "fleet_succeeded" }, events)
    local last = json.decode(srv:hooks()[2].body)
    assert.equals(0, last.exit_code)
    assert.matches("3 targets: 3 succeeded", last.message)
    srv:reset()
    -- now per target too, on a fleet with a failing member
    local names2 = databases("fl_hook2", 2)
    local c <close> = H.connect(names2[2])
    c:exec("CREATE TABLE t (x int)")
    c:close()
    local dir2 = project(TWO, list(names2), [[webhooks = { { url_env = "TEST_HOOK", kind = "json" } }, fleet = { notify_targets = true }]])
    local r2 = fleet(dir2, { "light.lua", "--env", "fleet", "--yes", "--parallel", "1" }, { TEST_HOOK = srv:url("/hook/fleet") })
    assert.equals(1, r2.code, r2.stdout .. r2.stderr)
    local seen = {}
    for _, h in ipairs(srv:hooks()) do
      local b = json.decode(h.body)
      seen[#seen + 1] = b.event
    end
    assert.equals("fleet_started", seen[1])
    assert.equals("fleet_failed", seen[#seen])
    local per = table.concat(seen, " ", 2, #seen - 1)
    assert.equals("run_started run_succeeded run_started run_failed", per)
    srv:stop()
    drop_all(names)
    drop_all(names2)
  end)

  -- wait until `n` of the databases `names` run a statement containing sleep_text, while the
  -- process p runs (err: its stderr, for the message when it does not happen within 60 s).
  -- Only those databases count: other specs run the same pg_sleep at the same time.
  local function wait_in_migration(p, names, sleep_text, n, err)
    local deadline = sys.monotonic() + 60
    while true do
      local c <close> = H.connect("postgres")
      -- (the pattern is split so that this query does not count itself)
      if c:value("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND state = 'active' AND pid <> pg_backend_pid() " ..
          "AND datname = ANY ($2::text[])", sleep_text, "{" .. table.concat(names, ",") .. "}") >= n then break end
      c:close()
      assert.truthy(sys.monotonic() < deadline and not p:poll(), "the targets did not reach their migration:\n" .. (H.read(err) or ""))
      sys.sleep(0.1)
    end
  end

  -- start the fleet in the background (its own process group, as from a shell) and wait until
  -- `n` targets (of names) are inside their slow migration; returns the handle and its output files.
  -- wrap: a command to run the fleet under (timeout ...).
  local function fleet_in_background(dir, names, sleep_text, n, wrap)
    local out, err = dir .. "/fleet.out", dir .. "/fleet.err"
    local argv = { table.unpack(wrap or {}) }
    for _, a in ipairs { H.orch_bin, "fleet", "light.lua", "--env", "fleet", "--parallel", tostring(n), "--yes", "--json" } do argv[#argv + 1] = a end
    argv.cwd, argv.stdout, argv.stderr = dir, out, err
    argv.env = { TEST_FLEET_SERVER = server(), DATABASE_URL = false, ORCH_ENV = false }
    local p = proc.start(argv)
    wait_in_migration(p, names, sleep_text, n, err)
    return p, out, err
  end

  local function wait_end(p, seconds)
    local deadline, res = sys.monotonic() + seconds, nil
    while not res and sys.monotonic() < deadline do res = p:poll() if not res then sys.sleep(0.05) end end
    return res
  end

  it("Ctrl-C mid-rollout: no new target starts, the running ones finish (exit 0), the rest are not started, exit 130", function()
    local names = databases("fl_int", 6)
    local dir = project({ ["V1__t.sql"] = "CREATE TABLE t (id int);\nSELECT pg_sleep(3);\n" }, list(names))
    local p <close>, out, err = fleet_in_background(dir, names, "pg_sleep(3)", 2)
    assert.is_true(p:signal(2))
    local res = wait_end(p, 60)
    assert.truthy(res, "the fleet did not end after Ctrl-C")
    assert.equals(130, res.code, H.read(err))
    local doc, by = report({ stdout = H.read(out), stderr = H.read(err) })
    assert.equals("INTERRUPTED", doc.outcome)
    assert.equals("interrupted", doc.stopped.reason)
    assert.same({ succeeded = 2, failed = 0, interrupted = 0, not_started = 4 }, doc.counts)
    for i, n in ipairs(names) do
      if i <= 2 then
        assert.equals(0, by[n].exit_code, "a running target reached its end")
        assert.is_true(has_history(n))
      else
        assert.equals("interrupted", by[n].not_started_because)
        assert.is_false(has_history(n))
      end
    end
    assert.matches("Ctrl%-C: no new target starts; waiting for the 2 running target%(s%) to finish", H.read(err))
    drop_all(names)
  end)

  it("Ctrl-C from timeout (orch and its group signalled at once) counts once: the running targets still finish", function()
    local names = databases("fl_tmo", 3)
    local dir = project({ ["V1__t.sql"] = "CREATE TABLE t (id int);\nSELECT pg_sleep(3);\n" }, list(names))
    -- timeout passes a SIGINT it gets on as it does its own: to orch, then to the whole group.
    -- It gets one once the first target is inside its migration, not after a guessed time.
    local p <close>, out, err = fleet_in_background(dir, { names[1] }, "pg_sleep(3)", 1, { "timeout", "--preserve-status", "-s", "INT", "600" })
    sys.kill(p:pid(), 2)
    local res = wait_end(p, 60)
    assert.truthy(res, "the fleet did not end after Ctrl-C")
    local r = { code = res.code, stdout = H.read(out), stderr = H.read(err) }
    assert.equals(130, r.code, r.stdout .. r.stderr)
    local doc, by = report(r)
    assert.equals(0, by[names[1]].exit_code, r.stderr)
    assert.equals(2, doc.counts.not_started)
    assert.is_nil(r.stderr:match("second Ctrl%-C"), "the echo of the first signal was taken for a second Ctrl-C")
    drop_all(names)
  end)

  it("a second Ctrl-C interrupts the running targets: each cancels its release (rolled back) and reports 130", function()
    local names = databases("fl_int2", 4)
    local dir = project({ ["V1__t.sql"] = "CREATE TABLE t (id int);\nSELECT pg_sleep(30);\n" }, list(names))
    local p <close>, out, err = fleet_in_background(dir, names, "pg_sleep(30)", 2)
    assert.is_true(p:signal(2))
    -- a second, separate Ctrl-C: past the 0.5 s duplicate window counted from when orch took the
    -- first (it says so then), however late a loaded machine let it run
    local deadline = sys.monotonic() + 30
    while not (H.read(err) or ""):find("Ctrl-C: no new target starts", 1, true) do
      assert.is_true(sys.monotonic() < deadline, "the fleet did not take the first Ctrl-C:\n" .. (H.read(err) or ""))
      sys.sleep(0.02)
    end
    sys.sleep(0.8)
    assert.is_true(p:signal(2))
    local t0 = sys.monotonic()
    local res = wait_end(p, 40)
    assert.truthy(res, "the fleet did not end after the second Ctrl-C")
    assert.equals(130, res.code, H.read(err))
    assert.is_true(sys.monotonic() - t0 < 20, "the running targets were not interrupted")
    local doc, by = report({ stdout = H.read(out), stderr = H.read(err) })
    assert.same({ succeeded = 0, failed = 0, interrupted = 2, not_started = 2 }, doc.counts)
    for i, n in ipairs(names) do
      if i <= 2 then assert.equals(130, by[n].exit_code) end
      local c <close> = H.connect(n)
      -- the release was one transaction: cancelled and rolled back, no table
      assert.is_true(c:value("SELECT to_regclass('public.t') IS NULL"))
    end
    assert.matches("second Ctrl%-C: interrupting the 2 running target%(s%)", H.read(err))
    drop_all(names)
  end)
end)

describe("orch fleet --list", function()
  -- the table's rows: fields split where two or more spaces are (a field holds at most single spaces)
  local function rows(stdout)
    local out = {}
    for line in stdout:gmatch("[^\n]+") do
      if line:sub(1, 2) == "  " then
        local f = {}
        for x in (line:sub(3) .. "  "):gmatch("(.-)  +") do f[#f + 1] = x end
        out[#out + 1] = f
      end
    end
    return out
  end
  -- a server nothing listens on: any connection orch tried would fail the listing
  local NOWHERE = "postgresql://fleetuser:Pw_server_s3cret@127.0.0.1:1/postgres"

  it("lists a list of database names in rollout order (name, connection, variables, backups dir) and a count; databases that do not exist list fine", function()
    local names = { "fl_list_none_" .. sys.getpid() .. "_b", "fl_list_none_" .. sys.getpid() .. "_a" }
    local dir = project({}, string.format([[{ %q, %q, { name = "eu", service = "tickets_eu", vars = { region = "eu", tier = "gold plus" } } }]],
      names[1], names[2]))
    local r = fleet(dir, { "--list", "--env", "fleet" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local t = rows(r.stdout)
    assert.same({ "NAME", "CONNECTS TO", "VARIABLES", "BACKUPS DIR" }, t[1])
    local T, redact = require "orch.fleet.targets", require("orch.log").redact
    assert.same({ names[1], redact(T.on_server(server(), names[1])), "-", dir .. "/backups/" .. names[1] }, t[2])
    assert.same({ names[2], redact(T.on_server(server(), names[2])), "-", dir .. "/backups/" .. names[2] }, t[3])
    assert.same({ "eu", "service='tickets_eu'", 'region=eu tier="gold plus"', dir .. "/backups/eu" }, t[4])
    assert.equals(4, #t)
    assert.matches("\n3 targets of environment fleet %(protected%), in rollout order\n$", r.stdout)
    -- listing connected to none of them, and created nothing
    local c <close> = H.cluster():connect("postgres")
    assert.equals(0, c:value("SELECT count(*) FROM pg_database WHERE datname LIKE $1", "fl_list_none_" .. sys.getpid() .. "%"))
    assert.is_false(sys.exists(dir .. "/backups"), "a listing writes nothing")
  end)

  it("lists a targets file with its variables; a URL's password never shows, in text or --json; nothing is connected to", function()
    local dir = project({}, [[{ file = "tenants.txt" }]])
    H.write(dir .. "/tenants.txt", "# name target vars\nacme tenant_acme plan=gold region=eu\n" ..
      "shard2 postgresql://app:Pw_file_s3cret@127.0.0.1:1/tickets region=us\nservice=s1\n")
    local r = fleet(dir, { "--list", "--env", "fleet" }, { TEST_FLEET_SERVER = NOWHERE })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local all = r.stdout .. r.stderr
    assert.is_nil(all:find("Pw_file_s3cret", 1, true), all)
    assert.is_nil(all:find("Pw_server_s3cret", 1, true), all)
    local t = rows(r.stdout)
    assert.same({ "acme", "postgresql://fleetuser:***@127.0.0.1:1/tenant_acme", "plan=gold region=eu", dir .. "/backups/acme" }, t[2])
    assert.same({ "shard2", "postgresql://app:***@127.0.0.1:1/tickets", "region=us", dir .. "/backups/shard2" }, t[3])
    assert.same({ "s1", "service='s1'", "-", dir .. "/backups/s1" }, t[4])
    assert.matches("\n3 targets of environment fleet %(protected%)", r.stdout)
    local j = fleet(dir, { "--list", "--env", "fleet", "--json" }, { TEST_FLEET_SERVER = NOWHERE })
    assert.equals(0, j.code, j.stdout .. j.stderr)
    local jall = j.stdout .. j.stderr
    assert.is_nil(jall:find("Pw_file_s3cret", 1, true), jall)
    assert.is_nil(jall:find("Pw_server_s3cret", 1, true), jall)
    local doc = json.decode(j.stdout)
    assert.equals(3, #doc)
    assert.same({ name = "acme", dbname = "tenant_acme", connection = "postgresql://fleetuser:***@127.0.0.1:1/tenant_acme",
      vars = { plan = "gold", region = "eu" }, backups_dir = dir .. "/backups/acme" }, doc[1])
    assert.same({ name = "shard2", url = "postgresql://app:***@127.0.0.1:1/tickets", connection = "postgresql://app:***@127.0.0.1:1/tickets",
      vars = { region = "us" }, backups_dir = dir .. "/backups/shard2" }, doc[2])
    assert.same({ name = "s1", service = "s1", connection = "service='s1'", vars = {}, backups_dir = dir .. "/backups/s1" }, doc[3])
    assert.equals("{}", j.stdout:match('"vars": (%b{}),?\n%s*}\n%]'))   -- no variables: an object, not a list
  end)

  it("lists the targets a directory query returns (the query runs; the targets are not connected to)", function()
    local dirdb_url, dirdb = H.fresh_db("fl_list_dir")
    local d <close> = db.connect(dirdb_url)
    d:exec("CREATE TABLE tenants (name text, dbname text, plan text, active bool)")
    d:exec("INSERT INTO tenants VALUES ('q1', 'fl_list_nodb_1', 'gold', true), ('q2', 'fl_list_nodb_2', 'free', false), ('q3', 'fl_list_nodb_3', 'free', true)")
    d:close()
    local dir = project({}, [[{ query = "SELECT name, dbname, plan FROM tenants WHERE active ORDER BY name", directory = { env = "TEST_DIRECTORY" } }]])
    local r = fleet(dir, { "--list", "--env", "fleet", "--json" }, { TEST_DIRECTORY = dirdb_url, TEST_FLEET_SERVER = NOWHERE })
    H.drop_db(dirdb)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc = json.decode(r.stdout)
    assert.same({ "q1", "q3" }, { doc[1].name, doc[2].name })
    assert.same({ "fl_list_nodb_1", "fl_list_nodb_3" }, { doc[1].dbname, doc[2].dbname })
    assert.same({ plan = "gold" }, doc[1].vars)
    assert.equals(2, #doc)
  end)

  it("--only lists the named targets in the fleet's order; an unknown env, an env without targets or a name the fleet lacks is exit 2", function()
    local dir = project({}, [[{ "t_one", "t_two", "t_three" }]])
    H.write(dir .. "/orch.env.lua", H.read(dir .. "/orch.env.lua"):gsub("\n}$", "\n  plain = { database = { env = \"TEST_FLEET_SERVER\" } },\n}"))
    local r = fleet(dir, { "--list", "--env", "fleet", "--only", "t_three,t_one" }, { TEST_FLEET_SERVER = NOWHERE })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local t = rows(r.stdout)
    assert.same({ "t_one", "t_three" }, { t[2][1], t[3][1] })
    assert.equals(3, #t)
    assert.matches("\n2 targets of environment fleet %(protected%) %(%-%-only: 2 of 3%), in rollout order\n$", r.stdout)
    local j = fleet(dir, { "--list", "--env", "fleet", "--only", "t_two", "--json" }, { TEST_FLEET_SERVER = NOWHERE })
    assert.equals(0, j.code, j.stdout .. j.stderr)
    assert.same({ "t_two" }, { json.decode(j.stdout)[1].name, json.decode(j.stdout)[2] })
    local cases = {
      { { "--env", "nope" }, "no environment named 'nope' in orch.env.lua (known: fleet, plain)" },
      { { "--env", "plain" }, "environment plain has no targets: a fleet needs them" },
      { { "--env", "fleet", "--only", "t_four" }, "--only t_four: the fleet has no target of that name (it has 3: t_one, t_two, t_three)" },
      { { "--env", "fleet", "light.lua" }, "--list takes no RECIPE (got 'light.lua')" },
      { { "--env", "fleet", "--yes" }, "--yes is an option of a rollout; --list runs nothing: drop --yes" },
      { { "--env", "fleet", "--parallel", "2" }, "--parallel is an option of a rollout" },
    }
    for _, case in ipairs(cases) do
      local e = fleet(dir, { "--list", table.unpack(case[1]) }, { TEST_FLEET_SERVER = NOWHERE })
      assert.equals(2, e.code, table.concat(case[1], " ") .. ": " .. e.stdout .. e.stderr)
      assert.matches(case[2], e.stderr, 1, true)
      assert.equals("", e.stdout)
    end
  end)
end)

describe("orch.fleet.targets", function()
  local T = require "orch.fleet.targets"
  local function env(targets) return { name = "t", targets = targets, database = {}, backups = { dir = "b" } } end
  local function err_of(f, ...)
    local ok, e = pcall(f, ...)
    assert.is_false(ok, "no error")
    return tostring(e), type(e) == "table" and e.exit_code
  end

  it("a database name is reached on the environment's server with every other parameter kept", function()
    assert.equals("postgresql://app:pw@db.internal:6432/tenant%20a?sslmode=require",
      T.on_server("postgresql://app:pw@db.internal:6432/main?sslmode=require", "tenant a"))
    assert.equals("postgresql://db.internal/t1", T.on_server("postgresql://db.internal", "t1"))
    assert.equals("host=h port=5 dbname='o\\'brien'", T.on_server("host=h port=5", "o'brien"))
    assert.equals("service=prod dbname='t1'", T.on_server("service=prod", "t1"))
    assert.equals("dbname='t1'", T.on_server(nil, "t1"))
  end)

  it("reads a .json list and a text file; names come from the entry or its database; passwords never show", function()
    local dir = H.tmpdir()
    H.write(dir .. "/t.json", [=[["db_one", {"name": "two", "url": "postgresql://u:sekrit@h/db2", "vars": {"plan": "gold", "seats": 5}},
      {"service": "svc_three"}]]=])
    local ts = T.load(env { file = dir .. "/t.json" })
    assert.same({ "db_one", "two", "svc_three" }, { ts[1].name, ts[2].name, ts[3].name })
    assert.same({ "dbname", "url", "service" }, { ts[1].kind, ts[2].kind, ts[3].kind })
    assert.same({ plan = "gold", seats = "5" }, ts[2].vars)
    assert.equals("postgresql://u:***@h/db2", ts[2].where)
    assert.equals("service='svc_three'", ts[3].conn)
    H.write(dir .. "/t.txt", "# tenants\nacme tenant_acme plan=gold region=eu\n\npostgresql://h/x\nservice=s1\n")
    local tt = T.load(env { file = dir .. "/t.txt" })
    assert.same({ "acme", "x", "s1" }, { tt[1].name, tt[2].name, tt[3].name })
    assert.same({ plan = "gold", region = "eu" }, tt[1].vars)
    assert.equals("postgresql://h/x", tt[2].conn)
  end)

  it("refuses what it cannot use, naming the entry: duplicates, unusable names, unknown keys, bad lines, no targets", function()
    assert.matches("the target name 'a' is used twice", err_of(T.load, env { "a", { name = "a", dbname = "b" } }))
    assert.matches("'x/y' is not usable as a target name", err_of(T.load, env { { name = "x/y", dbname = "b" } }))
    assert.matches("targets%[1%]: 'db' is not a target setting orch knows", err_of(T.load, env { { db = "b" } }))
    assert.matches("targets%[1%]: names no database", err_of(T.load, env { { name = "n" } }))
    assert.matches("targets%.files is not a setting orch knows", err_of(T.load, env { files = "x" }))
    local none, none_code = err_of(T.load, env(nil))
    assert.matches("has no targets: a fleet needs them", none)
    assert.equals(2, none_code)   -- the --env named an environment that is not a fleet: a usage error
    assert.matches("the fleet is empty", err_of(T.load, env {}))
    local dir = H.tmpdir()
    H.write(dir .. "/bad.txt", "acme tenant_acme plan\n")
    assert.matches("bad%.txt line 1: 'plan' is not KEY=VALUE", err_of(T.load, env { file = dir .. "/bad.txt" }))
    assert.matches("does not exist", err_of(T.load, env { file = dir .. "/none.txt" }))
    local msg, code = err_of(T.only, T.load(env { "a", "b" }), { "c" })
    assert.matches("%-%-only c: the fleet has no target of that name %(it has 2: a, b%)", msg)
    assert.equals(2, code)
  end)

  it("the overall exit code is the worst target's: 1 < 2 < 3 < 130 < 4", function()
    local F = require "orch.fleet"
    assert.equals(3, F.worse(F.worse(0, 3), 1))
    assert.equals(130, F.worse(3, 130))
    assert.equals(4, F.worse(130, 4))
    assert.equals(4, F.worse(4, 1))
  end)
end)
