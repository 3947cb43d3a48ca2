-- The recipes under bad input and faults, on the example project against
-- the real server and a real local HTTP server: a health check (SQL or the
-- API's health endpoint) failing after migrate, a slow endpoint, webhooks
-- that fail, a health URL that is not set, Ctrl-C in the middle of a prod run, a declined approval on a terminal, and the emergency
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

local function recipe(dir, name, url, argv, wrap, env)
  local a = {}
  for _, w in ipairs(wrap or {}) do a[#a + 1] = w end
  a[#a + 1] = H.orch_bin
  a[#a + 1] = H.recipe(name:gsub("%.lua$", ""), dir)
  for _, x in ipairs(argv or {}) do a[#a + 1] = x end
  a.cwd, a.timeout = dir, 300
  a.env = { TEST_PROD_URL = url, DATABASE_URL = false }
  for k, v in pairs(env or {}) do a.env[k] = v end
  return sys.spawn(a)
end

-- The recipe started in the background (its own process group), then signalled with sig
-- (by the whole group) once its migration runs `SELECT pg_sleep(30)` in database dbname:
-- a signal during migrate whatever the machine's load made of the steps before it. Raises
-- when the migration is not reached within 60 s. wrap: a command to run it under; the signal
-- then goes to that command alone (timeout passes it on to orch and to the group, as it
-- does its own). Returns what sys.spawn would: {code, signal, stdout, stderr}.
local function recipe_signalled_in_migration(dir, name, url, argv, dbname, sig, wrap)
  local a = { table.unpack(wrap or {}) }
  a[#a + 1] = H.orch_bin
  a[#a + 1] = H.recipe(name:gsub("%.lua$", ""), dir)
  for _, x in ipairs(argv or {}) do a[#a + 1] = x end
  local out, err = dir .. "/recipe.out", dir .. "/recipe.err"
  a.cwd, a.stdout, a.stderr = dir, out, err
  a.env = { TEST_PROD_URL = url, DATABASE_URL = false }
  local p <close> = require("orch.proc").start(a)
  local c <close> = H.connect(dbname)
  local deadline = sys.monotonic() + 60
  while c:value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' " ..
      "AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()") == 0 do
    assert(not p:poll() and sys.monotonic() < deadline, "the recipe did not reach its slow migration:\n" .. (H.read(out) or "") .. (H.read(err) or ""))
    sys.sleep(0.05)
  end
  local signalled_at = sys.monotonic()
  if wrap then sys.kill(p:pid(), sig) else p:signal(sig) end
  local res
  deadline = sys.monotonic() + 120
  repeat res = p:poll() if not res then sys.sleep(0.05) end until res or sys.monotonic() > deadline
  assert(res, "the recipe did not end within 120 s of the signal:\n" .. (H.read(out) or "") .. (H.read(err) or ""))
  return { code = res.code, signal = res.signal, ok = res.code == 0, stdout = H.read(out) or "", stderr = H.read(err) or "",
           signalled_at = signalled_at }
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

-- Drop what a run left: the database kept aside by a swap (named in its
-- output), the test database, and the project directory.
local function finish(name, dir, r)
  local kept = r and (r.stdout:match("the failed database is kept as (%S+)") or r.stdout:match("the previous database is kept as (%S+)"))
  if kept then H.drop_db(kept) end
  H.drop_db(name)
  sys.rmtree(dir)
end

describe("recipes under faults", function()
  it("prod: a database check failing after the migrations rolls the release back inside its transaction (exit 1), database identical", function()
    local url, name = production("prod_health")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    -- the release migrates fine, but the team's SQL check says the release is bad: it runs before COMMIT
    local dir = project(8, nil, [[health = { sql = { { name = "no reporting views yet", query = "SELECT to_regclass('public.ticket_daily_stats') IS NULL" } } }]])
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("ran V8__reporting_views%.sql", r.stdout)
    assert.matches("1 database check%(s%) failed inside the release's transaction: sql:no reporting views yet", r.stdout)
    assert.matches("FAILED AND ROLLED BACK %(nothing was changed%)", r.stdout)
    assert.equals(before_schema, schema_of(name))
    -- (but for the history's identity counter: PostgreSQL never rolls a sequence back)
    local after_rows = contents_of(name)
    after_rows["seq public.orch_schema_history_installed_rank_seq"], before_rows["seq public.orch_schema_history_installed_rank_seq"] = nil, nil
    assert.same(before_rows, after_rows)
    finish(name, dir)
  end)

  it("prod: Ctrl-C during migrate exits 130, the run log says where, the database is untouched and the backup restores exactly", function()
    local url, name = production("prod_int")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    local backup_rows = contents_of(name)
    local dir = project(4, { ["V5__slow.sql"] = "CREATE TABLE slow_marker (id int);\nSELECT pg_sleep(30);\n" })
    local r = recipe_signalled_in_migration(dir, "prod.lua", url, { "--yes" }, name, 2, { "timeout", "--preserve-status", "-s", "INT", "600" })
    assert.equals(130, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - r.signalled_at < 20, "Ctrl-C did not stop the migration")
    assert.matches("interrupted during 'migrate'", r.stdout)
    local ev = runlog(r, dir)
    local stopped
    for _, e in ipairs(ev) do if e.event == "interrupted" then stopped = e.step end end
    assert.equals("migrate", stopped)
    assert.equals(130, ev[#ev].exit_code)
    -- the release's transaction was cancelled and rolled back: same schema, same
    -- data, and no history row either (the release ran as one transaction)
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    local c <close> = db.connect(url)
    assert.equals(0, c:value("SELECT count(*) FROM orch_schema_history WHERE run_id = $1", ev[1].run_id))
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
    finish(name, dir)
  end)

  it("prod killed outright (SIGKILL) during migrate: orch runs says where it stopped, and the backup is complete", function()
    local url, name = production("prod_kill")
    local dir = project(4, { ["V5__slow.sql"] = "CREATE TABLE slow_marker (id int);\nSELECT pg_sleep(30);\n" })
    local r = recipe_signalled_in_migration(dir, "prod.lua", url, { "--yes" }, name, 9)
    assert.is_true(r.signal == 9 or r.code == 137, r.stdout .. r.stderr)
    local runs = H.orch({ "runs", "--env", "prod", "--json" }, { cwd = dir, env = { TEST_PROD_URL = url } })
    assert.equals(0, runs.code, runs.stderr)
    local list = json.decode(runs.stdout)
    assert.equals(1, #list)
    assert.equals("DID NOT FINISH", list[1].outcome)
    assert.equals("migrate", list[1].failed_step)
    assert.truthy(list[1].backup)
    assert.is_true(H.orch({ "verify", list[1].backup }, { cwd = dir }).ok)
    finish(name, dir)
  end)

  it("prod on a terminal: a declined approval changes nothing and takes no backup", function()
    local url, name = production("prod_decline")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    local dir = project(8)
    local cmd = string.format("cd %s && TEST_PROD_URL=%s %s %s", dir, url, H.orch_bin, H.recipe("prod", dir))
    local r = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "n\n", timeout = 120, env = { DATABASE_URL = false } }
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("apply 4 migration%(s%) to prod", r.stdout)
    assert.matches("approval declined: nothing was changed", r.stdout)
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    local dumps = 0
    for _, f in ipairs(sys.listdir(dir .. "/backups/prod") or {}) do if f:match("%.dump$") then dumps = dumps + 1 end end
    assert.equals(0, dumps)
    finish(name, dir)
  end)

  it("prod: a lock held by the application makes the release time out and retry as a whole, then roll back (exit 1), database identical", function()
    local url, name = production("prod_lock")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    -- the application holds an uncommitted write on tickets: V5's foreign keys to tickets must wait for it
    local app = db.connect(url)
    app:exec("BEGIN")
    app:exec("UPDATE tickets SET title = title WHERE id = 1")
    local dir = project(8)
    local t0 = sys.monotonic()
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - t0 < 60)
    assert.matches("lock timeout .*%(SQLSTATE 55P03%): the release runs in one transaction, so all of it is retried in [%d.]+s %(attempt 2 of 2%)", r.stderr)
    assert.matches("lock timeout", r.stdout)
    assert.matches("FAILED AND ROLLED BACK", r.stdout)
    -- nothing was restored: the application's session and its open transaction were never touched
    assert.equals(1, app:value("SELECT 1"))
    app:exec("ROLLBACK")
    app:close()
    assert.equals(before_schema, schema_of(name))
    assert.same(before_rows, contents_of(name))
    finish(name, dir, r)
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
    finish(name, dir)
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
    local dry = recipe(dir, "restore.lua", url, { "--backup", release_run, "--dry-run", "--jobs", "2" })
    assert.equals(0, dry.code, dry.stdout .. dry.stderr)
    assert.matches("would restore .*" .. release_run:gsub("%p", "%%%0"), dry.stdout)
    assert.matches("swap it in by rename %(the current one kept%), on 2 connections", dry.stdout)
    local r = recipe(dir, "restore.lua", url, { "--backup", release_run, "--yes", "--jobs", "2" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("into " .. name .. " on 2 connections", r.stdout)
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
    finish(name, dir)
  end)
end)

describe("prod with HTTP health checks and webhooks", function()
  local srv
  setup(function() srv = H.httpd() end)
  teardown(function() srv:stop() end)

  local SECRET_PATH = "T0000-B1111-s3cr3tw3bh00k"
  local TOKEN = "ev-token-9f8e7d6c5b4a"
  local function hooks_env(api_url)
    return { API_URL = api_url, SLACK_URL = srv:url("/hook/slack-" .. SECRET_PATH),
             EVENTS_URL = srv:url("/hook/events"), EVENTS_TOKEN = TOKEN }
  end
  local HOOKS = [[webhooks = { { url_env = "SLACK_URL", kind = "slack" }, { url_env = "EVENTS_URL", kind = "json", token_env = "EVENTS_TOKEN" } }]]

  it("the API answers 503 health+json after the release committed: undone (exit 3), schema and data as before, webhooks told, secrets never shown", function()
    srv:reset()
    local url, name = production("prod_http503")
    local before_schema, before_rows = schema_of(name), contents_of(name)
    local dir = project(8, nil, [[health = { http = { { name = "api", url_env = "API_URL", retries = 1, backoff = "50ms" } } }, ]] .. HOOKS)
    local r = recipe(dir, "prod.lua", url, { "--yes" }, nil, hooks_env(srv:url("/health/fail")))
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("4 migration%(s%) applied", r.stdout)
    assert.matches("FAILED verify", r.stdout)
    assert.matches("api fail: HTTP 503, expected 2xx; the service reports fail", r.stdout)
    assert.matches("FAILED AND UNDONE", r.stdout)
    assert.matches("recovery: undo — 'verify' failed after the release committed; this run's 4 migrations undone newest first", r.stdout)
    assert.equals(before_schema, schema_of(name))
    -- the same rows, but for the history, which now says the release was applied and undone
    local after_rows = contents_of(name)
    for _, k in ipairs { "public.orch_schema_history", "seq public.orch_schema_history_installed_rank_seq" } do
      after_rows[k], before_rows[k] = nil, nil
    end
    assert.same(before_rows, after_rows)
    -- both webhooks heard the start and the recovery
    local got = {}
    for _, h in ipairs(srv:hooks()) do
      local body = json.decode(h.body)
      got[#got + 1] = { name = h.name, body = body, auth = h.headers.authorization }
    end
    assert.equals(4, #got, json.encode(got))
    local slack, events = {}, {}
    for _, g in ipairs(got) do
      if g.name == "events" then events[#events + 1] = g else slack[#slack + 1] = g end
    end
    assert.matches("orch prod on prod started", slack[1].body.text)
    assert.matches("orch prod on prod FAILED and was UNDONE", slack[2].body.text)
    assert.matches("recovery: undo", slack[2].body.attachments[1].text)
    assert.equals("warning", slack[2].body.attachments[1].color)
    assert.matches("failed step: verify", slack[2].body.attachments[1].text)
    assert.equals("run_started", events[1].body.event)
    assert.equals("run_restored", events[2].body.event)
    assert.equals("undo", events[2].body.recovery.rung)
    assert.equals("verify", events[2].body.failed_step)
    assert.equals(3, events[2].body.exit_code)
    assert.equals("Bearer " .. TOKEN, events[2].auth)
    assert.is_nil(slack[1].auth)
    -- the run log records each delivery; neither the webhook URL's token nor the bearer token appears anywhere
    local ev = runlog(r, dir)
    local delivered = 0
    for _, e in ipairs(ev) do if e.event == "notification" and e.delivered then delivered = delivered + 1 end end
    assert.equals(4, delivered)
    local all = r.stdout .. r.stderr .. H.read(r.stdout:match("run log: (%S+)"))
    assert.is_nil(all:find(SECRET_PATH, 1, true))
    assert.is_nil(all:find(TOKEN, 1, true))
    finish(name, dir, r)
  end)

  it("a slow endpoint: the request timeout is honoured, then the backup is restored", function()
    local url, name = production("prod_slow")
    local before_schema = schema_of(name)
    local dir = project(8, nil, [[health = { http = { { name = "api", url_env = "API_URL", timeout = "1s", retries = 0 } } }]])
    local t0 = sys.monotonic()
    local r = recipe(dir, "prod.lua", url, { "--yes" }, nil, { API_URL = srv:url("/hang") })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("api fail: GET http://127.0.0.1:%d+/hang: timed out", r.stdout)
    assert.is_true(sys.monotonic() - t0 < 30)
    local verify
    for _, e in ipairs(runlog(r, dir)) do if e.event == "step_end" and e.step == "verify" then verify = e end end
    assert.is_true(verify.seconds >= 0.9 and verify.seconds < 4, tostring(verify.seconds))
    assert.equals(before_schema, schema_of(name))
    finish(name, dir, r)
  end)

  it("webhooks that fail or cannot be reached never fail the run; the run log says so", function()
    srv:reset()
    local url, name = production("prod_hookfail")
    local dir = project(8, nil, [[health = { http = { { name = "api", url_env = "API_URL" } } },
      webhooks = { { url_env = "BROKEN_URL", kind = "json" }, { url_env = "GONE_URL", kind = "slack" } }]])
    local r = recipe(dir, "prod.lua", url, { "--yes" }, nil, { API_URL = srv:url("/health/pass"),
      BROKEN_URL = srv:url("/hook-fail/broken"), GONE_URL = "http://127.0.0.1:" .. sys.free_port() .. "/gone" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("SUCCEEDED", r.stdout)
    assert.matches("notification run_succeeded to BROKEN_URL not delivered: HTTP 500", r.stderr)
    assert.matches("notification run_succeeded to GONE_URL not delivered: .*could not connect", r.stderr)
    assert.matches("0 of 2 webhook%(s%) notified", r.stdout)
    local failed = {}
    for _, e in ipairs(runlog(r, dir)) do
      if e.event == "notification" and not e.delivered then failed[#failed + 1] = e.hook .. ":" .. e.what .. ":" .. tostring(e.status) end
    end
    table.sort(failed)
    assert.same({ "BROKEN_URL:run_started:500", "BROKEN_URL:run_succeeded:500", "GONE_URL:run_started:null", "GONE_URL:run_succeeded:null" }, failed)
    -- the failing hook was tried twice per event (5xx is retried once); nothing else was recorded
    assert.equals(4, #srv:hooks())
    finish(name, dir)
  end)

  it("a health check whose URL variable is not set stops prod in preflight, before any backup or change", function()
    local url, name = production("prod_nourl")
    local before_schema = schema_of(name)
    local dir = project(8, nil, [[health = { http = { { name = "api", url_env = "API_URL_NOT_SET" } } }]])
    local r = recipe(dir, "prod.lua", url, { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("health check api reads its URL from API_URL_NOT_SET, which is not set", r.stdout)
    assert.is_false(sys.exists(dir .. "/backups/prod") and #(sys.listdir(dir .. "/backups/prod")) > 1)
    assert.equals(before_schema, schema_of(name))
    finish(name, dir)
  end)

  it("restore.lua: an application that is still down after the restore is reported, and the restore stands", function()
    local url, name = production("restore_apidown")
    local dir = project(4, nil, [[health = { http = { { name = "api", url_env = "API_URL", retries = 0 } } }]])
    local b = H.orch { "backup", "--db", url, "--dir", dir .. "/backups/prod" }
    assert.is_true(b.ok, b.stderr)
    local path = assert(b.stdout:match("(%S+%.dump)"), b.stdout)
    assert.is_true(H.orch({ "verify", path }).ok)
    local want_schema, want_rows = schema_of(name), contents_of(name)
    local c <close> = db.connect(url)
    c:exec("DELETE FROM tickets WHERE id > 10")      -- the incident
    c:close()
    local r = recipe(dir, "restore.lua", url, { "--yes" }, nil, { API_URL = srv:url("/health/fail") })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("NOT healthy %(reported, not acted on%): api fail: HTTP 503", r.stdout)
    assert.equals(want_schema, schema_of(name))
    assert.same(want_rows, contents_of(name))
    finish(name, dir, r)
  end)

  it("a literal webhook URL in orch.env.lua is refused without echoing it", function()
    local dir = project(8, nil, [[webhooks = { { url = "https://hooks.example.test/services/]] .. SECRET_PATH .. [[", kind = "slack" } }]])
    local r = recipe(dir, "prod.lua", "postgresql://x@127.0.0.1:1/x", { "--yes" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("environment prod: webhooks%[1%] has a literal url; webhook URLs carry tokens", r.stderr)
    assert.matches('url_env = "PROD_WEBHOOK_URL"', r.stderr)
    assert.is_nil((r.stdout .. r.stderr):find(SECRET_PATH, 1, true))
    sys.rmtree(dir)
  end)
end)
