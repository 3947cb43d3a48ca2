-- The recipes end to end on the example project against a real server.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local schema_of, rows_of = H.schema_of, H.contents_of

-- A project dir: the example migrations (optionally up to a version) plus extra files, and an env file.
local function project(upto, extra)
  local dir = H.tmpdir()
  sys.mkdir_p(dir .. "/migrations")
  for _, f in ipairs(sys.listdir("migrations")) do
    local v = tonumber(f:match("^[VU](%d+)__"))
    if v and (not upto or v <= upto) then H.write(dir .. "/migrations/" .. f, H.read("migrations/" .. f)) end
  end
  for name, text in pairs(extra or {}) do H.write(dir .. "/migrations/" .. name, text) end
  H.write(dir .. "/orch.env.lua", string.format([[return {
  prod = { database = { env = "TEST_PROD_URL" }, protected = true, backups = { dir = %q, keep = 5 },
           lock_timeout = "2s", retries = 1, webhooks = { { url_env = "TEST_HOOK", kind = "slack" } } },
  staging = { database = { env = "TEST_PROD_URL" }, backups = { dir = %q } },
}]], dir .. "/backups/prod", dir .. "/backups/staging"))
  return dir
end

local function run_recipe(dir, recipe, url, argv, env)
  local a = { H.recipe(recipe:gsub("%.lua$", ""), dir) }
  for _, x in ipairs(argv or {}) do a[#a + 1] = x end
  local e = { TEST_PROD_URL = url, DATABASE_URL = false, TEST_HOOK = "http://127.0.0.1:9/unreachable" }
  for k, v in pairs(env or {}) do e[k] = v end
  return H.orch(a, { cwd = dir, env = e, timeout = 300 })
end

describe("recipes", function()
  it("prod refuses a database that has objects but no migration history, before the approval and the backup; allow_non_empty lets it run", function()
    local url, name = H.fresh_db("prod_nonempty")
    do
      local c <close> = db.connect(url)
      c:exec("CREATE TABLE legacy_users (id int PRIMARY KEY, email text)")
    end
    local dir = project(2)
    local r = run_recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local out = r.stdout .. r.stderr
    assert.matches("the database is not empty (public.legacy_users) but has no migration history", out, 1, true)
    assert.matches("orch baseline --version VERSION", out, 1, true)
    assert.matches("set allow_non_empty = true in environment prod (orch.env.lua)", out, 1, true)
    -- nothing was done: no backup, no history table
    assert.is_false(sys.exists(dir .. "/backups/prod") and #(function()
      local n = {} for _, f in ipairs(sys.listdir(dir .. "/backups/prod")) do if f:match("%.dump$") then n[#n + 1] = f end end return n end)() > 0)
    do
      local c <close> = db.connect(url)
      assert.is_false(c:value("SELECT to_regclass('public.orch_schema_history') IS NOT NULL"))
    end
    -- the dry run says it would stop
    local dry = run_recipe(dir, "prod.lua", url, { "--dry-run" })
    assert.matches("would stop: the database is not empty", dry.stdout .. dry.stderr, 1, true)
    -- told so, it migrates over the existing objects
    H.write(dir .. "/orch.env.lua", H.read(dir .. "/orch.env.lua"):gsub("protected = true,", "protected = true, allow_non_empty = true,", 1))
    local ok = run_recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(0, ok.code, ok.stdout .. ok.stderr)
    do
      local c <close> = db.connect(url)
      assert.equals(2, c:value("SELECT count(*) FROM public.orch_schema_history WHERE success"))
    end
    H.drop_db(name)
  end)

  it("prod: a failing migration rolls the whole release back (one transaction); the database is as before the run (exit 1)", function()
    local url, name = H.fresh_db("prod_fail")
    -- production runs V1..V4 already, with data
    local base = project(4)
    assert.is_true(H.orch({ "migrate", "--db", url, "--dir", base .. "/migrations" }).ok)
    local c = db.connect(url)
    c:exec([[INSERT INTO users (username, email, password_hash, full_name, role, status)
             VALUES ('ops', 'ops@example.test', 'x', 'Ops', 'ADMIN', 'ACTIVE')]])
    c:exec("INSERT INTO tickets (title, requestor_id) SELECT 'ticket ' || g, 1 FROM generate_series(1, 50) g")
    c:close()
    local before_schema, before_rows = schema_of(name), rows_of(name)
    -- the release: V5..V8, and a V9 that fails half-way
    local dir = project(8, { ["V9__broken_release.sql"] =
      "ALTER TABLE tickets ADD COLUMN region text;\nUPDATE tickets SET region = 'eu';\nALTER TABLE tickets ADD CONSTRAINT tickets_region_check CHECK (region = 'us');\n" })
    local r = run_recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("FAILED AND ROLLED BACK %(nothing was changed%)", r.stdout)
    assert.matches("V9__broken_release%.sql", r.stdout)
    assert.matches("recovery: rolled back", r.stdout)
    -- identical to before the run: schema text and row checksums (the history included)
    assert.equals(before_schema, schema_of(name))
    -- (but for the history's identity counter: PostgreSQL never rolls a sequence back)
    local after_rows = rows_of(name)
    after_rows["seq public.orch_schema_history_installed_rank_seq"], before_rows["seq public.orch_schema_history_installed_rank_seq"] = nil, nil
    assert.same(before_rows, after_rows)
    -- the run log tells the story; the webhook could not be delivered and the run went on
    local runlog = r.stdout:match("run log: (%S+)")
    local events = {}
    if runlog:sub(1, 1) ~= "/" then runlog = dir .. "/" .. runlog end
    for line in io.lines(runlog) do events[#events + 1] = json.decode(line) end
    local kinds = {}
    for _, e in ipairs(events) do kinds[#kinds + 1] = e.event .. (e.step and (":" .. e.step) or "") end
    local text = table.concat(kinds, " ")
    assert.matches("step_end:migrate", text)
    assert.matches("recovery", text)
    assert.matches("notification", text)
    assert.is_false(events[#events].exit_code == 0)
    -- the backup's manifest carries the run id and the snapshot it was taken in; no history row does (nothing was committed)
    local run_id = events[1].run_id
    local manifests = {}
    for _, f in ipairs(sys.listdir(dir .. "/backups/prod")) do if f:match("manifest") then manifests[#manifests + 1] = f end end
    local m = json.decode(H.read(dir .. "/backups/prod/" .. manifests[1]))
    assert.equals(run_id, m.run_id)
    assert.matches("^%d+:%d+:", m.since.snapshot)
    local hc <close> = H.connect(name)
    assert.equals(0, hc:value("SELECT count(*) FROM orch_schema_history WHERE run_id = $1", run_id))
    hc:close()
    H.drop_db(name)
  end)

  it("prod: succeeds end to end on the example project (exit 0)", function()
    local url, name = H.fresh_db("prod_ok")
    local dir = project(8)
    local r = run_recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("SUCCEEDED", r.stdout)
    local c <close> = db.connect(url)
    assert.equals(8, c:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    c:close()
    H.drop_db(name)
  end)

  it("prod: protected, no terminal and no --yes stops before changing anything (exit 1)", function()
    local url, name = H.fresh_db("prod_noyes")
    local dir = project(8)
    local r = run_recipe(dir, "prod.lua", url, {})
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("is protected and there is no terminal", r.stdout)
    local c <close> = db.connect(url)
    assert.is_false(c:value("SELECT to_regclass('public.tickets') IS NOT NULL"))
    assert.same({}, sys.listdir(dir .. "/backups/prod") and {} or {})
    c:close()
    H.drop_db(name)
  end)

  it("prod --dry-run says what every step would do and changes nothing", function()
    local url, name = H.fresh_db("prod_dry")
    local dir = project(8)
    local r = run_recipe(dir, "prod.lua", url, { "--dry-run" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("would apply: V1__types_and_helpers%.sql", r.stdout)
    assert.matches("would back up the database", r.stdout)
    -- the read-only preflight runs for real in a dry run: its findings are facts, not plans
    assert.matches("preflight\n    ok [%d.]+m?s  database %d+ MiB on the primary", r.stdout)
    local c <close> = db.connect(url)
    assert.is_false(c:value("SELECT to_regclass('public.orch_schema_history') IS NOT NULL"))
    assert.is_false(sys.exists(dir .. "/backups/prod"))
    c:close()
    H.drop_db(name)
  end)

  it("staging: migrates, proves the rollback and migrates again", function()
    local url, name = H.fresh_db("staging")
    local dir = project(8)
    local r = run_recipe(dir, "staging.lua", url, { "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("8 migration%(s%) undone", r.stdout)
    local c <close> = db.connect(url)
    assert.is_true(c:value("SELECT to_regclass('public.ticket_daily_stats') IS NOT NULL"))
    c:close()
    H.drop_db(name)
  end)

  it("names an unknown environment and lists the known ones (exit 2)", function()
    local dir = project(1)
    local r = run_recipe(dir, "prod.lua", "postgresql://x@127.0.0.1:1/x", { "--env", "prdo" })
    assert.equals(2, r.code)
    assert.matches("no environment named 'prdo' in orch%.env%.lua %(known: prod, staging%)", r.stderr)
  end)

  it("orch help RECIPE prints the recipe's options and steps", function()
    local r = H.orch { "help", "recipes/prod.lua" }
    assert.is_true(r.ok, r.stderr)
    assert.matches("steps:", r.stdout)
    assert.matches("backup", r.stdout)
    assert.matches("on failure:", r.stdout)
    assert.matches("%-%-dry%-run", r.stdout)
  end)
end)
