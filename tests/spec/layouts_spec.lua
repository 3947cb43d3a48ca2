-- The product brief's migration layouts, unchanged (issue 15 §1): brief
-- 004's per-service folders (schema/ data/ seeds/ rollback/, timestamp
-- names, "-- Dependencies:" headers, files wrapped in BEGIN; ... COMMIT;)
-- and brief 002's numbered files (Lua apply/rollback), on a real server:
-- migrated, undone and re-applied to the same schema.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local files = require "orch.migrate.files"

local FIX = sys.realpath("tests/fixtures/layouts")

local project_dir = H.project_dir

local run = H.orch_project

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function tables(c)
  local out = {}
  for _, r in ipairs(c:query([[SELECT tablename FROM pg_tables WHERE schemaname = 'public'
      AND tablename <> 'orch_schema_history' ORDER BY 1]])) do out[#out + 1] = r.tablename end
  return out
end

describe("migration file names of every layout", function()
  it("reads Flyway, timestamp and sequential names", function()
    local e = files.parse_name("20240101_001_auth_create_users_table.sql", "x")
    assert.same({ 20240101, 1 }, e.version)
    assert.equals("20240101.1", e.version_text)
    assert.equals("auth create users table", e.description)
    e = files.parse_name("001_initial_schema.lua", "x")
    assert.same({ 1 }, e.version)
    assert.equals("initial schema", e.description)
    assert.equals("V", e.kind)
    e = files.parse_name("20240101120000_create_users.sql", "x")   -- dbmate's timestamps
    assert.same({ 20240101120000 }, e.version)
    assert.equals("1.2", files.parse_name("V1.2__x.sql", "x").version_text)
  end)

  it("calls a name that reads two ways ambiguous and names the orch.env.lua line that decides", function()
    local ok, err = pcall(files.parse_name, "001_002_add_x.sql", "m/001_002_add_x.sql")
    assert.is_false(ok)
    assert.matches("is 001_002 the version 1.2", tostring(err))
    assert.matches('migrations = { layout = "timestamp" }', tostring(err), 1, true)
    assert.same({ 1, 2 }, files.parse_name("001_002_add_x.sql", "x", "timestamp").version)
    assert.same({ 1 }, files.parse_name("001_002_add_x.sql", "x", "sequential").version)
  end)

  it("keeps both depends= keys of one directive, and reads a -- Dependencies: header", function()
    local d = files.directives("-- orch: depends=auth:V3, depends=billing:V2\nSELECT 1;\n", "f")
    assert.same({ "auth:V3", "billing:V2" }, d.depends)
    d = files.directives("-- orch: depends=auth:V3, billing:V2, env=dev\n-- orch: depends=crm:V1\n", "f")
    assert.same({ "auth:V3", "billing:V2", "crm:V1" }, d.depends)
    assert.same({ "dev" }, d.env)
    d = files.directives("-- Migration: x\n-- Dependencies: 20240101_001, 20240101_002\n\nBEGIN;\n", "f")
    assert.same({ "20240101_001", "20240101_002" }, d.depends)
    assert.is_nil(files.directives("-- Dependencies: none\n", "f").depends)
    assert.same({ "20240101_001" }, files.directives('-- Dependencies: ["20240101_001"]\n', "f").depends)
  end)

  it("runs a self-wrapped script without its wrapper, and refuses two blocks in one file by line", function()
    local s = files.unwrap_transaction(files.split_sql("-- x\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n"), "f")
    assert.equals(1, #s)
    assert.matches("^%s*CREATE TABLE a", s[1].sql)
    s = files.unwrap_transaction(files.split_sql("BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nEND;\n"), "f")
    assert.equals("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", s[1].sql)
    local ok, err = pcall(files.unwrap_transaction, files.split_sql("BEGIN;\nSELECT 1;\nCOMMIT;\nBEGIN;\nSELECT 2;\nCOMMIT;\n"), "f.sql")
    assert.is_false(ok)
    assert.matches("f.sql:3: COMMIT inside the script's own BEGIN", tostring(err))
    ok, err = pcall(files.unwrap_transaction, files.split_sql("BEGIN;\nSELECT 1;\n"), "f.sql")
    assert.is_false(ok)
    assert.matches("f.sql:1: the script opens a transaction %(BEGIN%) but does not end with COMMIT", tostring(err))
    -- a DO block's BEGIN is not the script's
    local plain = files.split_sql("DO $$ BEGIN PERFORM 1; END $$;\n")
    local _, wrapped = files.unwrap_transaction(plain, "f")
    assert.is_false(wrapped)
  end)
end)

describe("the brief's layouts on a real server", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("lay")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  local b004 = FIX .. "/brief004/migrations"

  it("brief 004: two services with schema, data, seeds and rollback folders migrate, undo and re-apply to the same schema", function()
    local r = run(url, b004, "migrate", "--env", "dev")
    assert.is_true(r.ok, r.stderr)
    assert.matches("applied 7 migrations", r.stdout)
    -- the yml the brief keeps beside the folders is not read, and orch says so
    assert.matches("migration%-dependencies.yml is not read", r.stderr)
    -- dependency order: crm's customers after auth's users and preferences; seeds last, where their headers say
    local hist = c:query([[SELECT service, version, type, script, checksum, success FROM orch_schema_history ORDER BY installed_rank]])
    local order = {}
    for i, h in ipairs(hist) do order[i] = h.service .. ":" .. h.version end
    assert.same({ "auth-service:20240101.1", "auth-service:20240101.2", "crm-service:20240101.3", "auth-service:20240102.1",
                  "crm-service:20240102.2", "auth-service:20240103.1", "crm-service:20240103.2" }, order)
    -- history rows as for Flyway names: the file name, SQL, Flyway's checksum of the file as it is
    assert.equals("20240101_001_auth_create_users_table.sql", hist[1].script)
    assert.equals("SQL", hist[1].type)
    assert.equals(files.checksum(read(b004 .. "/auth-service/schema/20240101_001_auth_create_users_table.sql")), hist[1].checksum)
    assert.same({ "customers", "user_preferences", "users" }, tables(c))
    assert.equals(2, c:value("SELECT count(*) FROM customers WHERE owner_id = '00000000-0000-0000-0000-000000000001'"))
    assert.equals("active", c:value("SELECT status FROM customers LIMIT 1"))
    local schema1 = H.schema_of(name, { exclude_table = "orch_schema_history" })
    -- status names the services and says all is applied
    local st = json.decode(run(url, b004, "status", "--json", "--env", "dev").stdout)
    assert.equals(7, st.summary.applied)
    -- every rollback/ file undoes its same-named migration, newest first
    local u = run(url, b004, "undo", "--target", "0", "--yes", "--env", "dev")
    assert.is_true(u.ok, u.stderr)
    assert.same({}, tables(c))
    assert.equals(7, c:value("SELECT count(*) FROM orch_schema_history WHERE type = 'UNDO_SQL' AND success"))
    -- and again: the same schema
    assert.is_true(run(url, b004, "migrate", "--env", "dev").ok)
    assert.equals(schema1, H.schema_of(name, { exclude_table = "orch_schema_history" }))
  end)

  it("brief 004: seeds/ only in the environments that load seeds; seeds/NAME/ only in NAME", function()
    local r = run(url, b004, "migrate", "--json")
    assert.is_true(r.ok, r.stderr)
    assert.equals(5, #json.decode(r.stdout).applied)
    assert.equals(0, c:value("SELECT count(*) FROM users"))
    local st = json.decode(run(url, b004, "status", "--json").stdout)
    assert.equals(2, st.summary.skipped)
    local dir = project_dir {
      ["app/schema/001_t.sql"] = "CREATE TABLE t (v text);\n",
      ["app/seeds/002_all.sql"] = "INSERT INTO t VALUES ('seeds');\n",
      ["app/seeds/staging/003_staging.sql"] = "INSERT INTO t VALUES ('staging');\n",
    }
    local url2, name2 = H.fresh_db("lay")
    local envdir = project_dir { ["orch.env.lua"] = "return { staging = {}, migrations = { seeds = { 'staging' } } }\n" }
    local m = H.orch({ "migrate", "--db", url2, "--dir", dir, "--env", "staging" }, { cwd = envdir })
    assert.is_true(m.ok, m.stderr)
    local c2 <close> = db.connect(url2)
    assert.equals("seeds,staging", c2:value("SELECT string_agg(v, ',' ORDER BY v) FROM t"))
    c2:close()
    H.drop_db(name2)
  end)

  it("brief 004: a script's own BEGIN; ... COMMIT; is the migration's one transaction: a failure leaves nothing, history included", function()
    local dir = project_dir {
      ["auth-service/schema/20240101_001_auth_a.sql"] = "-- Dependencies: none\n\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
      ["auth-service/schema/20240101_002_auth_b.sql"] = "BEGIN;\nCREATE TABLE b (id int);\nINSERT INTO b VALUES ('x');\nCOMMIT;\n",
    }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("20240101_002_auth_b.sql:3", r.stderr)
    assert.not_matches("already a transaction", r.stderr)
    assert.same({ "a" }, tables(c))
    assert.equals(1, c:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    -- the first one's history row committed with it, in the same single transaction: no warning from the server either
    assert.equals(0, c:value("SELECT count(*) FROM orch_schema_history WHERE script = '20240101_002_auth_b.sql' AND success"))
    -- two blocks in one file: refused before anything runs, by line
    H.write(dir .. "/auth-service/schema/20240101_002_auth_b.sql", "BEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\nBEGIN;\nSELECT 1;\nCOMMIT;\n")
    r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("20240101_002_auth_b.sql:3: COMMIT inside the script's own BEGIN", r.stderr)
    assert.same({ "a" }, tables(c))
  end)

  it("honours every dependency: a -- Dependencies: header across services and two depends= keys in one directive", function()
    local dir = project_dir {
      -- crm's file has the lowest version, but needs auth's users (a header) and billing's invoices (found by version)
      ["crm/schema/20240101_001_crm_customers.sql"] = "-- Dependencies: 20240105_001, billing/20240107_001_billing_invoices.sql\n" ..
        "CREATE TABLE customers (id int, user_id int REFERENCES users(id), invoice_id int REFERENCES invoices(id));\n",
      ["auth/schema/20240105_001_auth_users.sql"] = "CREATE TABLE users (id int PRIMARY KEY);\n",
      ["billing/schema/20240107_001_billing_invoices.sql"] = "CREATE TABLE invoices (id int PRIMARY KEY);\n",
      -- two depends= keys in one directive: both kept (the last alone let it run before auth's)
      ["ops/V1__audit.sql"] = "-- orch: depends=billing:20240107_001, depends=auth:20240105_001\n" ..
        "CREATE TABLE audit (user_id int REFERENCES users(id), invoice_id int REFERENCES invoices(id));\n",
    }
    local r = run(url, dir, "migrate")
    assert.is_true(r.ok, r.stderr)
    local order = {}
    for i, h in ipairs(c:query("SELECT service FROM orch_schema_history ORDER BY installed_rank")) do order[i] = h.service end
    assert.same({ "auth", "billing", "ops", "crm" }, order)
    -- a dependency that exists nowhere is named
    H.write(dir .. "/ops/V2__x.sql", "-- Dependencies: 20991231_001\nSELECT 1;\n")
    r = run(url, dir, "status")
    assert.equals(1, r.code)
    assert.matches("V2__x.sql depends on 20991231_001, which does not exist in any service", r.stderr)
  end)

  it("brief 002: numbered Lua files with apply/rollback and a numbered SQL file migrate, undo and re-apply", function()
    local dir = FIX .. "/brief002/migrations"
    local r = run(url, dir, "migrate")
    assert.is_true(r.ok, r.stderr)
    assert.same({ "clients", "flow_steps", "job_schedules", "system_settings", "users" }, tables(c))
    assert.equals(3, c:value("SELECT count(*) FROM flow_steps"))
    local hist = c:query("SELECT version, type, script, checksum FROM orch_schema_history ORDER BY installed_rank")
    assert.same({ "1", "LUA", "001_initial_schema.lua" }, { hist[1].version, hist[1].type, hist[1].script })
    assert.equals(files.checksum(read(dir .. "/003_system_settings.sql")), hist[3].checksum)
    local schema1 = H.schema_of(name, { exclude_table = "orch_schema_history" })
    r = run(url, dir, "undo", "--target", "0", "--yes")
    assert.is_true(r.ok, r.stderr)
    assert.same({}, tables(c))
    assert.is_true(run(url, dir, "migrate").ok)
    assert.equals(schema1, H.schema_of(name, { exclude_table = "orch_schema_history" }))
  end)

  it("never says 'up to date' about files it did not look at: an unknown folder, an ambiguous name, fixed by one orch.env.lua line", function()
    local dir = project_dir { ["auth-service/migrations/20240101_001_auth_users.sql"] = "CREATE TABLE users (id int);\n" }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("holds 20240101_001_auth_users.sql, but orch does not look for migrations there", r.stderr)
    assert.matches("schema/, data/, seeds/ and rollback/", r.stderr)
    dir = project_dir { ["001_002_users.sql"] = "CREATE TABLE users (id int);\n" }
    r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("is 001_002 the version 1.2", r.stderr)
    local envdir = project_dir { ["orch.env.lua"] = 'return { dev = {}, migrations = { layout = "timestamp" } }\n' }
    r = H.orch({ "migrate", "--db", url, "--dir", dir }, { cwd = envdir })
    assert.is_true(r.ok, r.stderr)
    assert.equals("1.2", c:value("SELECT version FROM orch_schema_history"))
    -- a setting orch does not know is named
    H.write(envdir .. "/orch.env.lua", 'return { dev = {}, migrations = { layuot = "timestamp" } }\n')
    r = H.orch({ "status", "--db", url, "--dir", dir }, { cwd = envdir })
    assert.equals(1, r.code)
    assert.matches("migrations.layuot is not a setting orch knows", r.stderr)
  end)

  it("--service: migrate, status, validate, undo and lint one service at a time; dependencies across services honoured", function()
    -- crm alone on an empty database: its dependencies on auth are named, nothing runs
    local r = run(url, b004, "migrate", "--service", "crm-service")
    assert.equals(1, r.code)
    assert.matches("crm%-service:V20240101.3 depends on auth%-service:V20240101.1 .* add %-%-service auth%-service", r.stderr)
    assert.is_false(c:value("SELECT to_regclass('customers') IS NOT NULL"))
    r = run(url, b004, "migrate", "--service", "auth-service", "--json")
    assert.is_true(r.ok, r.stderr)
    assert.equals(3, #json.decode(r.stdout).applied)
    assert.same({ "user_preferences", "users" }, tables(c))
    local st = json.decode(run(url, b004, "status", "--service", "crm-service", "--json").stdout)
    assert.equals(2, st.summary.pending)
    assert.is_nil(st.summary.applied)
    for _, m in ipairs(st.migrations) do assert.equals("crm-service", m.service) end
    assert.is_true(run(url, b004, "migrate", "--service", "crm-service").ok)
    assert.same({ "customers", "user_preferences", "users" }, tables(c))
    -- undo auth's first version while crm's customers depend on it: refused by name
    r = run(url, b004, "undo", "--target", "auth-service:0", "--yes")
    assert.equals(1, r.code)
    assert.matches("crm%-service:V20240101.3 .* is applied and depends on it", r.stderr)
    assert.same({ "customers", "user_preferences", "users" }, tables(c))
    -- crm's down to nothing, then auth's newest only
    r = run(url, b004, "undo", "--target", "crm-service:0", "--yes")
    assert.is_true(r.ok, r.stderr)
    assert.same({ "user_preferences", "users" }, tables(c))
    r = run(url, b004, "undo", "--service", "auth-service", "--yes")
    assert.is_true(r.ok, r.stderr)
    assert.matches("undone 20240102_001_auth_lowercase_emails.sql", r.stdout)
    assert.equals(0, c:value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email_normalized'"))
    -- validate one service; an unknown service is a usage error naming the ones there are
    c:exec("UPDATE orch_schema_history SET checksum = 1 WHERE service = 'crm-service'")
    assert.is_true(run(url, b004, "validate", "--service", "auth-service").ok)
    r = run(url, b004, "validate", "--service", "crm-service")
    assert.equals(0, r.code)   -- crm's rows were undone: nothing applied to check
    r = run(url, b004, "status", "--service", "billing")
    assert.equals(2, r.code)
    assert.matches("no service 'billing' .*services: auth%-service, crm%-service", r.stderr)
    local l = H.orch({ "lint", "--dir", b004, "--service", "crm-service", "--json" }, { cwd = H.tmpdir() })
    for _, f in ipairs(json.decode(l.stdout).findings) do assert.matches("/crm%-service/", f.file) end
  end)

  it("orch new --service writes the next name of the layout there, and its rollback/ twin", function()
    local dir = project_dir {
      ["auth/schema/20240101_001_auth_users.sql"] = "SELECT 1;\n",
      ["auth/rollback/20240101_001_auth_users.sql"] = "SELECT 1;\n",
      ["jobs/001_initial.lua"] = "return { apply = function() end }\n",
    }
    local before = os.date("!%Y%m%d")
    local r = H.orch({ "new", "add_roles", "--service", "auth", "--dir", dir }, { cwd = H.tmpdir() })
    assert.is_true(r.ok, r.stderr)
    -- the day orch saw: the one before it ran, unless midnight (UTC) passed meanwhile
    local day = sys.exists(dir .. "/auth/schema/" .. before .. "_001_add_roles.sql") and before or os.date("!%Y%m%d")
    local stem = day .. "_001_add_roles.sql"
    assert.is_true(sys.exists(dir .. "/auth/schema/" .. stem))
    assert.is_true(sys.exists(dir .. "/auth/rollback/" .. stem))
    r = H.orch({ "new", "cleanup", "--service", "jobs", "--lua", "--dir", dir }, { cwd = H.tmpdir() })
    assert.is_true(r.ok, r.stderr)
    assert.matches("apply = function", read(dir .. "/jobs/002_cleanup.lua"))
  end)
end)
