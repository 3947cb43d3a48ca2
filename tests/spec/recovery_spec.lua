-- Issue 10 §1, the recovery ladder, with a real application writer: a
-- separate orch process (tests/writer.lua) commits a row into tickets every
-- ~50 ms and records each committed id, while prod releases fail at the
-- first, a middle and the last migration, in the HTTP verify after commit,
-- and in a non-transactional migration. Afterwards every committed row
-- exists, and the report names the rung that was used and why. Then the
-- restore rung: refused while rows were written since the backup (exit 4,
-- tables and counts named, the command that would restore anyway), and
-- done when the environment allows discarding writes (the report lists
-- what the kept old database holds).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

-- the release: three migrations, each with its undo
local RELEASE = {
  ["V5__ticket_region.sql"] = "ALTER TABLE tickets ADD COLUMN region text;\n",
  ["U5__ticket_region.sql"] = "ALTER TABLE tickets DROP COLUMN region;\n",
  ["V6__ticket_tags.sql"] = "CREATE TABLE ticket_tags (ticket_id bigint NOT NULL REFERENCES tickets(id), tag text NOT NULL);\n",
  ["U6__ticket_tags.sql"] = "DROP TABLE ticket_tags;\n",
  ["V7__ticket_title_index.sql"] = "CREATE INDEX tickets_title_idx ON tickets (title);\n",
  ["U7__ticket_title_index.sql"] = "DROP INDEX tickets_title_idx;\n",
}
local BROKEN = "\nSELECT 1 / 0;   -- the release's bug\n"
-- V5 as a release during which the application surely wrote: it first waits (up to 60 s) until
-- the writer committed a row after V5 began, that is after the run's backup, whatever the
-- machine's load did to the writer
local V5_AFTER_A_WRITE = [[DO $$ DECLARE seen bigint := (SELECT max(id) FROM tickets); BEGIN
  FOR i IN 1..1200 LOOP EXIT WHEN (SELECT max(id) FROM tickets) > seen; PERFORM pg_sleep(0.05); END LOOP; END $$;
]] .. RELEASE["V5__ticket_region.sql"]
-- a migration without a transaction whose second statement fails: the first stays committed
local NOTX = "-- orch: transaction=false\nALTER TABLE tickets ADD COLUMN tagged boolean;\nSELECT 1 / 0;\n"

-- A project: the example's V1..V4, the release (changes = { file = text | false }),
-- and an orch.env.lua whose prod reads TEST_PROD_URL.
local function project(changes, prod_extra)
  local dir = H.tmpdir()
  sys.mkdir_p(dir .. "/migrations")
  for _, f in ipairs(sys.listdir("migrations")) do
    local v = tonumber(f:match("^[VU](%d+)__"))
    if v and v <= 4 then H.write(dir .. "/migrations/" .. f, H.read("migrations/" .. f)) end
  end
  local files = {}
  for k, v in pairs(RELEASE) do files[k] = v end
  for k, v in pairs(changes or {}) do files[k] = v end
  for name, text in pairs(files) do if text then H.write(dir .. "/migrations/" .. name, text) end end
  H.write(dir .. "/orch.env.lua", string.format([[return {
  prod = { database = { env = "TEST_PROD_URL" }, protected = true, backups = { dir = %q }, lock_timeout = "3s", retries = 2, %s },
}]], dir .. "/backups/prod", prod_extra or ""))
  return dir
end

-- Production before the release: V1..V4 and a user the writer's tickets belong to.
local function production(prefix)
  local url, name = H.fresh_db(prefix)
  local dir = project({})
  for f in pairs(RELEASE) do os.remove(dir .. "/migrations/" .. f) end
  local m = H.orch { "migrate", "--db", url, "--dir", dir .. "/migrations" }
  assert(m.ok, m.stderr)
  local c <close> = db.connect(url)
  c:exec([[INSERT INTO users (username, email, password_hash, full_name, role, status)
           VALUES ('ops', 'ops@example.test', 'x', 'Ops', 'ADMIN', 'ACTIVE')]])
  c:exec("INSERT INTO tickets (title, requestor_id) SELECT 'ticket ' || g, 1 FROM generate_series(1, 20) g")
  sys.rmtree(dir)
  return url, name
end

-- The application: tests/writer.lua in the background.
local Writer = {}
Writer.__index = Writer
local function writer(url)
  local dir = H.tmpdir()
  local w = setmetatable({ ids = dir .. "/ids", stop_file = dir .. "/stop", log = dir .. "/log" }, Writer)
  local cmd = string.format("%s %s '%s' '%s' '%s' > /dev/null 2> '%s' & echo $!", H.orch_bin, sys.realpath("tests/writer.lua"),
    url, w.ids, w.stop_file, w.log)
  local r = sys.spawn { "sh", "-c", cmd, timeout = 10 }
  w.pid = tonumber(r.stdout:match("%d+"))
  assert(w.pid, r.stderr)
  w:wait_for(3)
  return w
end
function Writer:committed()
  local out = {}
  for line in ((H.read(self.ids) or "") .. ""):gmatch("%d+") do out[#out + 1] = tonumber(line) end
  return out
end
function Writer:wait_for(n)
  local deadline = sys.monotonic() + 20
  local start = #self:committed()
  while #self:committed() < start + n do
    assert(sys.monotonic() < deadline, "the writer committed nothing in 20 s: " .. (H.read(self.log) or ""))
    sys.sleep(0.05)
  end
end
function Writer:stop()
  H.write(self.stop_file, "")
  local deadline = sys.monotonic() + 10
  while sys.kill(self.pid, 0) and sys.monotonic() < deadline do sys.sleep(0.05) end
  if sys.kill(self.pid, 0) then sys.kill(self.pid, 9) end
  return self:committed()
end

-- Run prod with the writer going; returns the result, the ids the writer
-- committed during the run, and all it committed.
local function release(url, dir, env)
  local w = writer(url)
  local before = #w:committed()
  local e = { TEST_PROD_URL = url, DATABASE_URL = false }
  for k, v in pairs(env or {}) do e[k] = v end
  local r = H.orch({ H.recipe("prod", dir), "--yes" }, { cwd = dir, env = e, timeout = 300 })
  local during = #w:committed() - before
  w:wait_for(3)   -- the application goes on writing after the run
  local all = w:stop()
  return r, during, all
end

-- Every id the writer recorded is a row of tickets in one of the databases.
local function assert_all_present(ids, ...)
  local present = {}
  for _, name in ipairs { ... } do
    local c <close> = H.connect(name)
    for _, row in ipairs(c:query("SELECT id FROM tickets WHERE title = 'written by the application'")) do present[row.id] = true end
  end
  local missing = {}
  for _, id in ipairs(ids) do if not present[id] then missing[#missing + 1] = id end end
  assert.equals(0, #missing, string.format("%d of %d committed rows are gone: %s", #missing, #ids, table.concat(missing, ", ")))
  assert.is_true(#ids > 0)
end

local function recovery_of(r)
  local path = r.stdout:match("run log: (%S+)")
  assert(path, r.stdout .. r.stderr)
  for line in io.lines(path) do
    local e = json.decode(line)
    if e.event == "run_end" then return e.recovery end
  end
end

local function column_exists(url, t, col)
  local c <close> = db.connect(url)
  return c:value("SELECT count(*) > 0 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2", t, col)
end

describe("the recovery ladder, with the application writing", function()
  for _, case in ipairs {
    { "the first", "V5__ticket_region.sql" },
    { "a middle", "V6__ticket_tags.sql" },
    { "the last", "V7__ticket_title_index.sql" },
  } do
    it("a release failing at " .. case[1] .. " migration rolls back as one transaction: exit 1, nothing changed, every committed row there", function()
      local url, name = production("ladder_atomic")
      local schema = H.schema_of(name)
      local dir = project({ [case[2]] = RELEASE[case[2]] .. BROKEN })
      local r, during, ids = release(url, dir)
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("all 3 pending migrations are transactional: the release and its database checks run in one transaction", r.stdout)
      assert.matches("FAILED AND ROLLED BACK %(nothing was changed%)", r.stdout)
      assert.matches("recovery: rolled back — " .. case[2]:gsub("%p", "%%%0") .. " failed; the release ran in one transaction and it rolled back: nothing to restore, no write lost", r.stdout)
      assert.equals("rolled back", recovery_of(r).rung)
      assert.is_true(during > 0, "the writer committed nothing during the run")
      assert_all_present(ids, name)
      assert.equals(schema, H.schema_of(name))
      local c <close> = db.connect(url)
      assert.equals(0, c:value("SELECT count(*) FROM orch_schema_history WHERE version::int >= 5"))
      c:close()
      H.drop_db(name)
      sys.rmtree(dir)
    end)
  end

  it("a database check failing inside the release's transaction rolls it back before COMMIT (exit 1)", function()
    local url, name = production("ladder_check")
    local dir = project({}, [[health = { sql = { { name = "no tags table yet", query = "SELECT to_regclass('public.ticket_tags') IS NULL" } } }]])
    local r, _, ids = release(url, dir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("1 database check%(s%) failed inside the release's transaction: sql:no tags table yet", r.stdout)
    assert.matches("recovery: rolled back — a database check failed before COMMIT", r.stdout)
    assert.is_false(column_exists(url, "tickets", "region"))
    assert_all_present(ids, name)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("the HTTP verify failing after the release committed: this run's migrations are undone newest first (exit 3), the writes stay", function()
    local srv = H.httpd()
    finally(function() srv:stop() end)
    local url, name = production("ladder_http")
    local schema = H.schema_of(name)
    local dir = project({}, [[health = { http = { { name = "api", url_env = "API_URL", retries = 0 } } },
      webhooks = { { url_env = "EVENTS_URL", kind = "json" } }]])
    local r, during, ids = release(url, dir, { API_URL = srv:url("/health/fail"), EVENTS_URL = srv:url("/hook/events") })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("committed 3 migration%(s%) in one transaction", r.stdout)
    assert.matches("FAILED verify", r.stdout)
    assert.matches("undid U7__ticket_title_index%.sql.*undid U6__ticket_tags%.sql.*undid U5__ticket_region%.sql", r.stdout)
    assert.matches("FAILED AND UNDONE %(the application's writes kept%)", r.stdout)
    assert.matches("recovery: undo — 'verify' failed after the release committed; this run's 3 migrations undone newest first", r.stdout)
    assert.is_true(during > 0)
    assert_all_present(ids, name)
    assert.equals(schema, H.schema_of(name))
    -- the webhook payload carries the rung and why
    local ev
    for _, h in ipairs(srv:hooks()) do local b = json.decode(h.body) if b.event ~= "run_started" then ev = b end end
    assert.equals("run_restored", ev.event)
    assert.equals("undo", ev.recovery.rung)
    assert.matches("undone newest first", ev.recovery.why)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("a non-transactional migration failing half-way: one transaction per migration, and the half-applied one is undone too (exit 3)", function()
    local url, name = production("ladder_notx")
    local dir = project({ ["V6__ticket_tags.sql"] = NOTX,
                          ["U6__ticket_tags.sql"] = "ALTER TABLE tickets DROP COLUMN IF EXISTS tagged;\n" })
    local r, during, ids = release(url, dir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("V6__ticket_tags%.sql is transaction=false: one transaction per migration", r.stdout)
    assert.matches("applied V5__ticket_region%.sql", r.stdout)
    assert.matches("recovery: undo — this run's 2 migrations undone newest first %(V6__ticket_tags%.sql, V5__ticket_region%.sql%)", r.stdout)
    assert.is_true(during > 0)
    assert_all_present(ids, name)
    assert.is_false(column_exists(url, "tickets", "region"))
    assert.is_false(column_exists(url, "tickets", "tagged"))
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("nothing to undo and rows written since the backup: the restore is refused (exit 4), naming tables and rows and the command that would restore anyway", function()
    local url, name = production("ladder_refuse")
    local dir = project({ ["V5__ticket_region.sql"] = V5_AFTER_A_WRITE, ["V6__ticket_tags.sql"] = NOTX,
                          ["U6__ticket_tags.sql"] = false })
    local r, during, ids = release(url, dir)
    assert.equals(4, r.code, r.stdout .. r.stderr)
    assert.matches("%(not undo: V6__ticket_tags%.sql has no undo", r.stdout)
    assert.matches("refused: rows were written since the backup", r.stdout)
    assert.matches("public%.tickets: %d+ rows? new or changed", r.stdout)
    local backup = r.stdout:match("orch restore (%S+%.dump) %-%-env prod %-%-swap %-%-yes")
    assert.truthy(backup, r.stdout)
    assert.matches("1%. see where the database stands: orch status %-%-env prod", r.stdout)
    assert.matches("%d%. V6__ticket_tags%.sql ran part%-way without a transaction", r.stdout)
    assert.matches("FAILED: NEEDS A HUMAN", r.stdout)
    assert.equals("a human", recovery_of(r).rung)
    assert.is_true(during > 0)
    assert_all_present(ids, name)
    -- nothing was restored: the half-applied state is still there for the human
    assert.is_true(column_exists(url, "tickets", "region"))
    -- the command it names restores anyway, keeping the current database renamed
    local o = H.orch({ "restore", backup, "--env", "prod", "--swap", "--yes" }, { cwd = dir, env = { TEST_PROD_URL = url, DATABASE_URL = false } })
    assert.equals(0, o.code, o.stdout .. o.stderr)
    assert.is_false(column_exists(url, "tickets", "region"))
    H.drop_db(o.stdout:match("kept as (%S+)"))
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("the environment allows discarding writes: the backup is restored by swap, and the report says what the kept old database holds", function()
    local url, name = production("ladder_discard")
    local dir = project({ ["V5__ticket_region.sql"] = V5_AFTER_A_WRITE, ["V6__ticket_tags.sql"] = NOTX,
                          ["U6__ticket_tags.sql"] = false }, "release = { discard_writes = true }")
    local r, _, ids = release(url, dir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("DISCARDING writes made since it %(environment prod sets release%.discard_writes = true%)", r.stdout)
    assert.matches("recovery: restore — restored %S+ by swap, discarding what was written since it", r.stdout)
    local old = r.stdout:match("the failed database is kept as (%S+)")
    assert.truthy(old, r.stdout)
    assert.matches(old .. " holds what the restored database does not:", r.stdout, 1, true)
    local n = tonumber(r.stdout:match("public%.tickets: (%d+) rows? new or changed"))
    assert.truthy(n, r.stdout)
    -- the old database holds the writer's rows up to the swap, the new one those after it: none is lost
    assert_all_present(ids, name, old)
    local oc <close> = H.connect(old)
    local c <close> = H.connect(name)
    local kept = oc:value("SELECT count(*) FROM tickets WHERE title = 'written by the application'")
    assert.is_true(kept >= n - 0 and kept > 0, string.format("%d in the old database, report says %d", kept, n))
    assert.is_false(column_exists(url, "tickets", "region"))
    oc:close() c:close()
    H.drop_db(old)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("nothing written since the backup: the restore rung restores (exit 3), and says so", function()
    local url, name = production("ladder_quiet")
    local dir = project({ ["V6__ticket_tags.sql"] = NOTX,
                          ["U6__ticket_tags.sql"] = false })
    local before = H.contents_of(name)
    local r = H.orch({ H.recipe("prod", dir), "--yes" }, { cwd = dir, env = { TEST_PROD_URL = url, DATABASE_URL = false } })
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("recovery: restore — nothing was written since the backup %(every table measured against its snapshot%)", r.stdout)
    local old = r.stdout:match("the failed database is kept as (%S+)")
    assert.matches(old .. " holds no row the restored database does not", r.stdout, 1, true)
    assert.same(before, H.contents_of(name))
    H.drop_db(old)
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("release = { atomic = false } in the environment: one transaction per migration, shown in the plan; a failure is undone", function()
    local url, name = production("ladder_noatomic")
    local dir = project({ ["V7__ticket_title_index.sql"] = RELEASE["V7__ticket_title_index.sql"] .. BROKEN }, "release = { atomic = false }")
    local dry = H.orch({ H.recipe("prod", dir), "--dry-run" }, { cwd = dir, env = { TEST_PROD_URL = url, DATABASE_URL = false } })
    assert.equals(0, dry.code, dry.stdout .. dry.stderr)
    assert.matches("release: environment prod sets release%.atomic = false: one transaction per migration", dry.stdout)
    local r, _, ids = release(url, dir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("recovery: undo — this run's 2 migrations undone newest first %(V6__ticket_tags%.sql, V5__ticket_region%.sql%)", r.stdout)
    assert_all_present(ids, name)
    H.drop_db(name)
    sys.rmtree(dir)
  end)
end)
