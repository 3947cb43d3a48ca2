-- Migrations against a real server: the commands, and the failure list of
-- the issue (each case in its own database and project directory).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local migrate = require "orch.migrate"
local files = require "orch.migrate.files"

local project_dir = H.project_dir

local function run(url, dir, ...)
  local argv = { ... }
  -- many cases make their tables by hand before the first migrate (orch migrate refuses that by default, see layouts_spec)
  if argv[1] == "migrate" then table.insert(argv, "--allow-non-empty") end
  table.insert(argv, "--db")
  table.insert(argv, url)
  table.insert(argv, "--dir")
  table.insert(argv, dir)
  return H.orch(argv)
end

local function has_table(c, name)
  return c:value("SELECT to_regclass($1) IS NOT NULL", name)
end

describe("migration files", function()
  it("computes Flyway's checksums (the issue's vectors)", function()
    assert.equals(110955474, files.checksum("CREATE TABLE t (id int);\r\n-- comment\n\nSELECT 1;"))
    assert.equals(110955474, files.checksum("\239\187\191CREATE TABLE t (id int);\n-- comment\n\nSELECT 1;"))
    assert.equals(-2055433966, files.checksum("INSERT INTO t VALUES ('é');\n"))
  end)

  it("orders versions part by part as numbers", function()
    local v = function(s) return files.parse_version(s) end
    assert.equals(1, files.compare(v("1.10"), v("1.9")))
    assert.equals(0, files.compare(v("1"), v("1.0")))
    assert.equals(-1, files.compare(v("20240101_001"), v("20240101_002")))
    assert.equals("20240101.1", files.version_string(v("20240101_001")))
  end)

  it("splits statements across quotes, dollar quotes and comments, with their lines", function()
    local s = files.split_sql("-- c;\nSELECT 'a;b';\n\nCREATE FUNCTION f() RETURNS int AS $x$ SELECT 1; $x$ LANGUAGE sql;\n/* ; */ SELECT \"x;\" FROM t")
    assert.equals(3, #s)
    assert.same({ 2, 4, 5 }, { s[1].line, s[2].line, s[3].line })
  end)

  it("rejects a malformed file name", function()
    local dir = project_dir { ["V1_missing_underscore.sql"] = "SELECT 1;" }
    local ok, e = pcall(migrate.load, { dir = dir })
    assert.is_false(ok)
    assert.matches("malformed migration file name .*V1_missing_underscore%.sql.*two underscores", tostring(e.message or e))
  end)

  it("rejects two files with one version", function()
    local dir = project_dir { ["V2__a.sql"] = "SELECT 1;", ["V2.0__b.sql"] = "SELECT 2;" }
    local ok, e = pcall(migrate.load, { dir = dir })
    assert.is_false(ok)
    assert.matches("two migrations with version 2", tostring(e.message or e))
  end)

  it("rejects an undo without its versioned file", function()
    local dir = project_dir { ["V1__a.sql"] = "SELECT 1;", ["U2__b.sql"] = "SELECT 2;" }
    local ok, e = pcall(migrate.load, { dir = dir })
    assert.is_false(ok)
    assert.matches("undo file .*U2__b%.sql has no versioned migration V2", tostring(e.message or e))
  end)

  it("reports a dependency cycle with its members", function()
    local dir = project_dir {
      ["auth/V1__a.sql"] = "-- orch: depends=crm:V1\nSELECT 1;",
      ["crm/V1__c.sql"] = "-- orch: depends=auth:V1\nSELECT 1;",
    }
    local ok, e = pcall(migrate.load, { dir = dir })
    assert.is_false(ok)
    local msg = tostring(e.message or e)
    assert.matches("dependency cycle", msg)
    assert.matches("auth:V1", msg)
    assert.matches("crm:V1", msg)
  end)

  it("orders services by their dependencies", function()
    local dir = project_dir {
      ["V1__app.sql"] = "-- orch: depends=auth:V2\nSELECT 1;",
      ["auth/V1__a.sql"] = "SELECT 1;",
      ["auth/V2__b.sql"] = "SELECT 1;",
    }
    local p = migrate.load { dir = dir }
    local keys = {}
    for i, e in ipairs(p.versioned) do keys[i] = e.key end
    assert.same({ "auth:V1", "auth:V2", "V1" }, keys)
  end)
end)

describe("orch migrate / status / undo", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("mig")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  local basic = {
    ["V1__create_items.sql"] = "CREATE TABLE items (id int PRIMARY KEY, name text);\n",
    ["U1__create_items.sql"] = "DROP TABLE items;\n",
    ["V1.1__add_owner.sql"] = "ALTER TABLE items ADD COLUMN owner text DEFAULT '${owner}';\n",
    ["U1.1__add_owner.sql"] = "ALTER TABLE items DROP COLUMN owner;\n",
    ["V2__seed.sql"] = "-- orch: env=dev\nINSERT INTO items (id, name) VALUES (1, 'seed');\n",
    ["U2__seed.sql"] = "DELETE FROM items WHERE id = 1;\n",
  }

  it("applies pending migrations in order, records history, and undoes them all", function()
    local dir = project_dir(basic)
    local r = run(url, dir, "migrate", "--placeholder", "owner=ops", "--env", "dev")
    assert.is_true(r.ok, r.stderr)
    assert.equals("ops", c:value("SELECT column_default FROM information_schema.columns WHERE table_name='items' AND column_name='owner'"):match("'(%w+)'"))
    assert.equals(1, c:value("SELECT count(*) FROM items"))
    local hist = c:query("SELECT version, type, success, checksum FROM orch_schema_history ORDER BY installed_rank")
    assert.equals(3, #hist)
    assert.same({ "1", "1.1", "2" }, { hist[1].version, hist[2].version, hist[3].version })
    assert.equals(files.checksum(basic["V1__create_items.sql"]), hist[1].checksum)
    -- status --json says all applied
    local st = run(url, dir, "status", "--json", "--env", "dev")
    assert.is_true(st.ok, st.stderr)
    local j = require("orch.json").decode(st.stdout)
    assert.equals(3, j.summary.applied)
    -- undo everything
    local u = run(url, dir, "undo", "--target", "0", "--yes", "--placeholder", "owner=ops", "--env", "dev")
    assert.is_true(u.ok, u.stderr)
    assert.is_false(has_table(c, "items"))
    -- and again: the same schema
    assert.is_true(run(url, dir, "migrate", "--placeholder", "owner=ops", "--env", "dev").ok)
    assert.is_true(has_table(c, "items"))
  end)

  it("skips files for other environments", function()
    local dir = project_dir(basic)
    assert.is_true(run(url, dir, "migrate", "--placeholder", "owner=x", "--env", "prod", "--yes").ok)   -- prod is protected
    assert.equals(0, c:value("SELECT count(*) FROM items"))
    local st = require("orch.json").decode(run(url, dir, "status", "--json", "--env", "prod").stdout)
    assert.equals(1, st.summary.skipped)
  end)

  it("--dry-run prints the plan and the SQL and writes nothing, not even the history table", function()
    local dir = project_dir(basic)
    local r = run(url, dir, "migrate", "--dry-run", "--placeholder", "owner=ops")
    assert.is_true(r.ok, r.stderr)
    assert.matches("would apply 2 migrations", r.stdout)
    assert.matches("ALTER TABLE items ADD COLUMN owner text DEFAULT 'ops'", r.stdout, 1, true)
    assert.is_false(has_table(c, "orch_schema_history"))
    assert.is_false(has_table(c, "items"))
  end)

  it("--dry-run shows a big migration's first 60 lines and then how much more there is, not the whole file", function()
    local lines = { "CREATE TABLE big (id int);" }
    for i = 1, 99 do lines[#lines + 1] = string.format("INSERT INTO big VALUES (%d);", i) end
    local dir = project_dir { ["V1__big.sql"] = table.concat(lines, "\n") .. "\n" }
    local r = run(url, dir, "migrate", "--dry-run")
    assert.is_true(r.ok, r.stderr)
    assert.matches("| INSERT INTO big VALUES (59);\n", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("VALUES (60);", 1, true), r.stdout)
    assert.matches("| … 40 more lines (0.0 MiB): " .. dir .. "/V1__big.sql", r.stdout, 1, true)
    assert.is_false(has_table(c, "big"))
  end)

  it("migrates only up to --target", function()
    local dir = project_dir(basic)
    assert.is_true(run(url, dir, "migrate", "--target", "1", "--placeholder", "owner=x").ok)
    assert.equals(0, c:value("SELECT count(*) FROM information_schema.columns WHERE table_name='items' AND column_name='owner'"))
  end)

  it("refuses a missing placeholder naming file and line, before anything runs", function()
    local dir = project_dir(basic)
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("V1%.1__add_owner%.sql:1: unknown placeholder %${owner}", r.stderr)
    assert.is_false(has_table(c, "items"))
  end)

  it("stops on an SQL error in the middle of a file: rolled back, file, line, statement and SQLSTATE", function()
    local dir = project_dir {
      ["V1__ok.sql"] = "CREATE TABLE first (id int);\n",
      ["V2__broken.sql"] = "CREATE TABLE second (id int);\n\nINSERT INTO second VALUES (1);\nINSERT INTO second VALUES ('x');\nCREATE TABLE third (id int);\n",
      ["V3__later.sql"] = "CREATE TABLE later (id int);\n",
    }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("migration V2__broken%.sql failed at .*V2__broken%.sql:4 %(statement 3 of 4%)", r.stderr)
    assert.matches("SQLSTATE 22P02", r.stderr)
    assert.matches("statement: INSERT INTO second VALUES ('x');", r.stderr, 1, true)
    assert.matches("rolled back", r.stderr)
    assert.is_true(has_table(c, "first"))
    assert.is_false(has_table(c, "second"))
    assert.is_false(has_table(c, "later"))
    local f = c:query("SELECT success, error FROM orch_schema_history WHERE version = '2'")[1]
    assert.is_false(f.success)
    assert.matches("22P02", f.error)
    -- fixed file: migrate again applies it (a rolled-back failure does not block)
    H.write(dir .. "/V2__broken.sql", "CREATE TABLE second (id int);\n")
    local again = run(url, dir, "migrate")
    assert.is_true(again.ok, again.stderr)
    assert.is_true(has_table(c, "later"))
  end)

  it("detects an applied file edited afterwards, refuses to migrate, and repair accepts it", function()
    local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);\n" }
    assert.is_true(run(url, dir, "migrate").ok)
    H.write(dir .. "/V1__a.sql", "CREATE TABLE a (id bigint);\n")
    H.write(dir .. "/V2__b.sql", "CREATE TABLE b (id int);\n")
    local st = require("orch.json").decode(run(url, dir, "status", "--json").stdout)
    assert.equals("changed", st.migrations[1].state)
    local v = run(url, dir, "validate")
    assert.equals(1, v.code)
    assert.matches("V1__a%.sql was edited after it was applied", v.stderr)
    local m = run(url, dir, "migrate")
    assert.equals(1, m.code)
    assert.is_false(has_table(c, "b"))
    assert.equals(1, run(url, dir, "repair", "--accept-changed").code)   -- no terminal, no --yes
    assert.is_true(run(url, dir, "repair", "--accept-changed", "--yes").ok)
    assert.is_true(run(url, dir, "validate").ok)
    assert.is_true(run(url, dir, "migrate").ok)
    assert.is_true(has_table(c, "b"))
  end)

  it("detects a file deleted after being applied", function()
    local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);\n", ["V2__b.sql"] = "CREATE TABLE b (id int);\n" }
    assert.is_true(run(url, dir, "migrate").ok)
    os.remove(dir .. "/V1__a.sql")
    local v = run(url, dir, "validate")
    assert.equals(1, v.code)
    assert.matches("V1__a%.sql was applied but its file is gone", v.stderr)
    assert.is_true(run(url, dir, "repair", "--forget-missing").ok)
    assert.is_true(run(url, dir, "validate").ok)
  end)

  it("records the failure and rolls back when the connection is killed mid-migration", function()
    local dir = project_dir {
      ["V1__killed.sql"] = "CREATE TABLE k (id int);\nSELECT pg_terminate_backend(pg_backend_pid());\n",
    }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("terminat", r.stderr)
    assert.is_false(has_table(c, "k"))
    local f = c:query("SELECT success FROM orch_schema_history WHERE version = '1'")[1]
    assert.is_false(f.success)
    H.write(dir .. "/V1__killed.sql", "CREATE TABLE k (id int);\n")
    assert.is_true(run(url, dir, "migrate").ok)
  end)

  it("lets only one of two orch processes started together migrate; the other waits and says who holds the lock", function()
    local out = H.tmpdir()
    -- the first to take the lock keeps it until the other has said it waits (the server reads
    -- their stderr files), not for a fixed time a slow start of the other could outlast
    sys.chmod(out, 493)
    local said = string.format("coalesce(pg_read_file('%s/a.err', 0, 1000000, true), '') || coalesce(pg_read_file('%s/b.err', 0, 1000000, true), '')", out, out)
    local dir = project_dir {
      ["V1__slow.sql"] = "CREATE TABLE slow (id int);\n" ..
        "DO $$ BEGIN FOR i IN 1..2400 LOOP EXIT WHEN " .. said .. " LIKE '%waiting for the migration lock%'; PERFORM pg_sleep(0.05); END LOOP; END $$;\n",
    }
    local cmd = string.format("%s migrate --db %s --dir %s > %s/a.out 2> %s/a.err & %s migrate --db %s --dir %s > %s/b.out 2> %s/b.err & wait",
      H.orch_bin, url, dir, out, out, H.orch_bin, url, dir, out, out)
    local r = sys.spawn { "sh", "-c", cmd, timeout = 60 }
    assert.is_true(r.ok)
    local errs = (H.read(out .. "/a.err") or "") .. (H.read(out .. "/b.err") or "")
    local outs = (H.read(out .. "/a.out") or "") .. (H.read(out .. "/b.out") or "")
    assert.equals("", errs:gsub("waiting for the migration lock[^\n]*\n", ""))
    assert.matches("waiting for the migration lock on .* held by pid %d+ %(orch", errs)
    assert.matches("applied 1 migration", outs)
    assert.matches("nothing to migrate", outs)
    assert.equals(1, c:value("SELECT count(*) FROM orch_schema_history WHERE version = '1' AND success"))
  end)

  it("does not queue behind a long transaction: lock_timeout, jittered retries, then a clear failure", function()
    c:exec("CREATE TABLE busy (id int)")
    local holder = db.connect(url)
    holder:exec("BEGIN; LOCK TABLE busy IN ACCESS SHARE MODE")
    local dir = project_dir { ["V1__alter.sql"] = "ALTER TABLE busy ADD COLUMN x int;\n" }
    local r = run(url, dir, "migrate", "--lock-timeout", "100ms", "--retries", "2")
    holder:close()
    assert.equals(1, r.code)
    assert.matches("retrying in", r.stderr)
    assert.matches("55P03", r.stderr)
    assert.matches("lock timeout", r.stderr)
    assert.is_true(run(url, dir, "migrate", "--lock-timeout", "1s").ok)
  end)

  it("refuses CREATE INDEX CONCURRENTLY inside a transaction and says how to fix it", function()
    local dir = project_dir { ["V1__idx.sql"] = "CREATE TABLE t (id int);\nCREATE INDEX CONCURRENTLY t_id ON t (id);\n" }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("V1__idx%.sql:2: CREATE INDEX CONCURRENTLY cannot run inside a transaction", r.stderr)
    assert.matches("transaction=false", r.stderr)
    assert.is_false(has_table(c, "t"))
  end)

  it("says which statements ran when a non-transactional file fails half-way, and blocks until repair", function()
    c:exec("CREATE TABLE nt (id int); INSERT INTO nt VALUES (1), (1)")
    local dir = project_dir {
      ["V1__nt.sql"] = "-- orch: transaction=false\nCREATE INDEX CONCURRENTLY nt_plain ON nt (id);\nCREATE UNIQUE INDEX CONCURRENTLY nt_unique ON nt (id);\n",
    }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("statement 2 of 2", r.stderr)
    assert.matches("statements 1..1 of 2 ran and stay committed", r.stderr)
    assert.is_true(has_table(c, "nt_plain"))
    -- the failed unique build's INVALID index was dropped, and the message says so
    assert.matches("the INVALID index public.nt_unique that the failed concurrent build left was dropped", r.stderr, 1, true)
    assert.is_nil(c:value("SELECT to_regclass('nt_unique')::text"))
    local blocked = run(url, dir, "migrate")
    assert.equals(1, blocked.code)
    assert.matches("failed part%-way outside a transaction", blocked.stderr)
    -- fix the data, repair, migrate: the invalid index is reported, dropped and rebuilt
    c:exec("DELETE FROM nt WHERE ctid = (SELECT max(ctid) FROM nt)")
    H.write(dir .. "/V1__nt.sql", "-- orch: transaction=false\nCREATE INDEX CONCURRENTLY IF NOT EXISTS nt_plain ON nt (id);\nCREATE UNIQUE INDEX CONCURRENTLY nt_unique ON nt (id);\n")
    assert.is_true(run(url, dir, "repair").ok)
    local fixed = run(url, dir, "migrate")
    assert.is_true(fixed.ok, fixed.stderr)
    assert.is_true(c:value("SELECT indisvalid FROM pg_index WHERE indexrelid = 'nt_unique'::regclass"))
  end)

  it("runs Lua data migrations with the batch helper, and rolls back one that raises", function()
    c:exec("CREATE TABLE people (id int PRIMARY KEY, name text, lower_name text)")
    c:exec("INSERT INTO people SELECT g, 'Name' || g, NULL FROM generate_series(1, 2500) g")
    local dir = project_dir {
      ["V1__lower.lua"] = [[
return {
  up = function(db, ctx)
    local n = ctx.batch { table = "people", key = "id", size = 1000, set = "lower_name = lower(name)", where = "lower_name IS NULL" }
    assert(n == 2500, "updated " .. n)
  end,
  down = function(db) db:exec("UPDATE people SET lower_name = NULL") end,
}
]],
      ["V2__raises.lua"] = [[
return { up = function(db) db:exec("CREATE TABLE half (id int)"); error("data check failed: 3 rows without owner") end }
]],
    }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("migration V2__raises%.lua failed", r.stderr)
    assert.matches("data check failed: 3 rows without owner", r.stderr)
    assert.equals(0, c:value("SELECT count(*) FROM people WHERE lower_name IS NULL"))
    assert.equals("name7", c:value("SELECT lower_name FROM people WHERE id = 7"))
    assert.is_false(has_table(c, "half"))
    -- undo the Lua migration with its down function
    os.remove(dir .. "/V2__raises.lua")
    assert.is_true(run(url, dir, "undo", "--yes").ok)
    assert.equals(2500, c:value("SELECT count(*) FROM people WHERE lower_name IS NULL"))
  end)

  it("refuses to undo a migration that has no undo, before undoing anything", function()
    local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);\n", ["U1__a.sql"] = "DROP TABLE a;\n", ["V2__b.sql"] = "CREATE TABLE b (id int);\n" }
    assert.is_true(run(url, dir, "migrate").ok)
    local r = run(url, dir, "undo", "--target", "0", "--yes")
    assert.equals(1, r.code)
    assert.matches("cannot undo V2__b%.sql: it has no undo", r.stderr)
    assert.is_true(has_table(c, "a"))
    assert.is_true(has_table(c, "b"))
  end)

  it("re-applies a repeatable migration when its file changes", function()
    c:exec("CREATE TABLE base (id int)")
    local dir = project_dir { ["R__view.sql"] = "CREATE OR REPLACE VIEW v AS SELECT id FROM base;\n" }
    assert.is_true(run(url, dir, "migrate").ok)
    assert.matches("nothing to migrate", run(url, dir, "migrate").stdout)
    H.write(dir .. "/R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT id, id * 2 AS twice FROM base;\n")
    local st = require("orch.json").decode(run(url, dir, "status", "--json").stdout)
    assert.equals("outdated", st.migrations[1].state)
    assert.is_true(run(url, dir, "migrate").ok)
    assert.equals(1, c:value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'v' AND column_name = 'twice'"))
  end)

  it("baselines an existing database, and adopts a Flyway history", function()
    c:exec("CREATE TABLE legacy (id int)")
    local dir = project_dir { ["V1__legacy.sql"] = "CREATE TABLE legacy (id int);\n", ["V2__next.sql"] = "CREATE TABLE next (id int);\n" }
    assert.is_true(run(url, dir, "baseline", "--version", "1").ok)
    assert.is_true(run(url, dir, "migrate").ok)
    assert.is_true(has_table(c, "next"))
    -- Flyway's own table, as Flyway writes it
    local url2, name2 = H.fresh_db("fly")
    local f <close> = db.connect(url2)
    f:exec([[CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
      type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int, installed_by varchar(100) NOT NULL,
      installed_on timestamp NOT NULL DEFAULT now(), execution_time int NOT NULL, success boolean NOT NULL);
      CREATE TABLE legacy (id int);]])
    f:query("INSERT INTO flyway_schema_history VALUES (1, '1', 'legacy', 'SQL', 'V1__legacy.sql', $1, 'flyway', now(), 5, true)",
      files.checksum("CREATE TABLE legacy (id int);\n"))
    local st = require("orch.json").decode(run(url2, dir, "status", "--json", "--history-table", "public.flyway_schema_history").stdout)
    assert.equals("applied", st.migrations[1].state)
    assert.equals("pending", st.migrations[2].state)
    assert.is_true(run(url2, dir, "baseline", "--adopt-flyway").ok)
    assert.is_true(run(url2, dir, "migrate").ok)
    assert.equals(2, f:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    f:close()
    H.drop_db(name2)
  end)

  it("refuses clean unless the environment allows it", function()
    local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);\n" }
    assert.is_true(run(url, dir, "migrate").ok)
    local r = run(url, dir, "clean", "--yes")
    assert.equals(1, r.code)
    assert.matches("refused unless the environment allows it", r.stderr)
    assert.is_true(has_table(c, "a"))
    local ok = H.orch({ "clean", "--yes", "--db", url, "--dir", dir }, { env = { ORCH_ALLOW_CLEAN = "1" } })
    assert.is_true(ok.ok, ok.stderr)
    assert.is_false(has_table(c, "a"))
  end)

  it("creates the next correctly named files with orch new", function()
    local dir = project_dir { ["V7__a.sql"] = "SELECT 1;\n" }
    local r = H.orch { "new", "add", "ticket", "priority", "--dir", dir }
    assert.is_true(r.ok, r.stderr)
    assert.is_true(sys.exists(dir .. "/V8__add_ticket_priority.sql"))
    assert.is_true(sys.exists(dir .. "/U8__add_ticket_priority.sql"))
  end)
end)
