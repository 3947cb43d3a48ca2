-- Other tools' history (issue 15 §3): Flyway's flyway_schema_history read
-- and written in Flyway's own layout, so a team can switch between Flyway
-- and orch; orch migrate refusing a non-empty database without history, as
-- Flyway does; and orch baseline --adopt taking over knex, dbmate,
-- golang-migrate, alembic and brief 002's migration_history, each migration
-- mapped to its file or refused by name. On a real server.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local files = require "orch.migrate.files"

local FIX = sys.realpath("tests/fixtures/layouts")
local B000 = FIX .. "/brief000/migrations"

local project_dir = H.project_dir

local run = H.orch_project

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Flyway 9/10's table on PostgreSQL, as Flyway creates it (its createMetaDataTable script's column set)
local FLYWAY_DDL = [[
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");]]

local function columns(c, tbl)
  local out = {}
  for _, r in ipairs(c:query([[SELECT column_name || ' ' || data_type || coalesce('(' || character_maximum_length || ')', '') ||
      CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END AS col
    FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position]], tbl)) do out[#out + 1] = r.col end
  return out
end

describe("Flyway's history, shared", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("fly")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  it("reads a Flyway-written history, extends it with rows in Flyway's exact layout, undoes and reads them back", function()
    -- the database as Flyway left it: its table, its schema-creation row, V1 applied by Flyway
    c:exec(FLYWAY_DDL)
    c:exec(read(B000 .. "/V1__initial_schema.sql"))
    c:query([[INSERT INTO flyway_schema_history VALUES
      (0, NULL, '<< Flyway Schema Creation >>', 'SCHEMA', '"public"', NULL, 'flyway_user', now(), 0, true),
      (1, '1', 'initial schema', 'SQL', 'V1__initial_schema.sql', $1, 'flyway_user', now(), 23, true)]],
      files.checksum(read(B000 .. "/V1__initial_schema.sql")))
    local cols = columns(c, "flyway_schema_history")
    local st = json.decode(run(url, B000, "status", "--json", "--history-table", "flyway_schema_history").stdout)
    assert.same({ applied = 1, pending = 3 }, st.summary)
    -- orch migrates on, writing Flyway's rows into Flyway's table
    local r = run(url, B000, "migrate", "--history-table", "flyway_schema_history")
    assert.is_true(r.ok, r.stderr)
    assert.same(cols, columns(c, "flyway_schema_history"))   -- not one column added
    local rows = c:query([[SELECT installed_rank, version, description, type, script, checksum, installed_by = current_user AS me,
        execution_time >= 0 AS timed, success FROM flyway_schema_history ORDER BY installed_rank]])
    assert.equals(5, #rows)
    assert.same({ 2, "2", "auth tables", "SQL", "V2__auth_tables.sql", files.checksum(read(B000 .. "/V2__auth_tables.sql")), true, true, true },
      { rows[3].installed_rank, rows[3].version, rows[3].description, rows[3].type, rows[3].script, rows[3].checksum, rows[3].me, rows[3].timed, rows[3].success })
    assert.is_nil(rows[5].version)
    assert.same({ 4, "user views", "SQL", "R__user_views.sql" }, { rows[5].installed_rank, rows[5].description, rows[5].type, rows[5].script })
    assert.is_false(c:value("SELECT to_regclass('orch_schema_history') IS NOT NULL"))
    -- undo writes Flyway's UNDO_SQL row; status reads it back; migrate re-applies
    local u = run(url, B000, "undo", "--history-table", "flyway_schema_history", "--yes")
    assert.is_true(u.ok, u.stderr)
    assert.same({ "3", "UNDO_SQL", "U3__ticket_tables.sql" },
      (function() local x = c:query("SELECT version, type, script FROM flyway_schema_history ORDER BY installed_rank DESC LIMIT 1")[1]
        return { x.version, x.type, x.script } end)())
    st = json.decode(run(url, B000, "status", "--json", "--history-table", "flyway_schema_history").stdout)
    assert.equals(1, st.summary.pending)
    assert.is_true(run(url, B000, "migrate", "--history-table", "flyway_schema_history").ok)
    assert.is_true(run(url, B000, "validate", "--history-table", "flyway_schema_history").ok)
  end)

  it("makes Flyway's own table when there is none, writes no row for a migration PostgreSQL rolled back, and keeps services out", function()
    local r = run(url, B000, "migrate", "--history-table", "public.flyway_schema_history")
    assert.is_true(r.ok, r.stderr)
    assert.same({ "installed_rank integer not null", "version character varying(50)", "description character varying(200) not null",
      "type character varying(20) not null", "script character varying(1000) not null", "checksum integer",
      "installed_by character varying(100) not null", "installed_on timestamp without time zone not null",
      "execution_time integer not null", "success boolean not null" }, columns(c, "flyway_schema_history"))
    assert.equals("flyway_schema_history_pk", c:value([[SELECT conname FROM pg_constraint WHERE conrelid = 'flyway_schema_history'::regclass AND contype = 'p']]))
    assert.is_true(c:value("SELECT to_regclass('flyway_schema_history_s_idx') IS NOT NULL"))
    assert.same({ 1, 2, 3, 4 }, (function() local t = {} for i, x in ipairs(c:query("SELECT installed_rank FROM flyway_schema_history ORDER BY 1")) do t[i] = x.installed_rank end return t end)())
    -- a failing migration: rolled back, and like Flyway on PostgreSQL no failed row
    local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);\n", ["V2__b.sql"] = "CREATE TABLE b (id int);\nSELECT 1/0;\n" }
    local url2, name2 = H.fresh_db("fly")
    r = run(url2, dir, "migrate", "--history-table", "flyway_schema_history")
    assert.equals(1, r.code)
    local c2 <close> = db.connect(url2)
    assert.equals(1, c2:value("SELECT count(*) FROM flyway_schema_history"))
    -- Flyway's repair marks a migration whose file is gone with a DELETE row: orch no longer counts it
    c2:exec([[INSERT INTO flyway_schema_history VALUES (2, '9', 'gone', 'SQL', 'V9__gone.sql', 5, 'flyway_user', now(), 1, true),
      (3, '9', 'gone', 'DELETE', 'V9__gone.sql', 5, 'flyway_user', now(), 0, true)]])
    H.write(dir .. "/V2__b.sql", "CREATE TABLE b (id int);\n")
    r = run(url2, dir, "validate", "--history-table", "flyway_schema_history")
    assert.is_true(r.ok, r.stderr)
    c2:close()
    H.drop_db(name2)
    -- a project with services cannot share Flyway's table: it has no service column
    local svc = project_dir { ["auth/V1__users.sql"] = "CREATE TABLE users (id int);\n" }
    local url3, name3 = H.fresh_db("fly")
    r = run(url3, svc, "migrate", "--history-table", "flyway_schema_history")
    assert.equals(1, r.code)
    assert.matches("Flyway's history, which has no service column: the service 'auth'", r.stderr)
    H.drop_db(name3)
  end)
end)

describe("orch migrate on a database made without orch", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("adopt")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  it("refuses a non-empty database without history, naming orch baseline; --allow-non-empty or a baseline lets it go on", function()
    c:exec("CREATE TABLE legacy (id int); CREATE TYPE mood AS ENUM ('ok')")
    local dir = project_dir { ["V1__legacy.sql"] = "CREATE TABLE legacy (id int);\n", ["V2__next.sql"] = "CREATE TABLE next (id int);\n" }
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("the database is not empty %(public.legacy, type public.mood%)", r.stderr)
    assert.matches("orch baseline %-%-version VERSION", r.stderr)
    assert.is_false(c:value("SELECT to_regclass('orch_schema_history') IS NOT NULL"))
    assert.equals(1, run(url, dir, "migrate", "--dry-run").code)
    assert.is_true(run(url, dir, "baseline", "--version", "1").ok)
    r = run(url, dir, "migrate")
    assert.is_true(r.ok, r.stderr)
    assert.is_true(c:value("SELECT to_regclass('next') IS NOT NULL"))
    -- told otherwise: it runs
    local url2, name2 = H.fresh_db("adopt")
    local c2 <close> = db.connect(url2)
    c2:exec("CREATE TABLE other (id int)")
    r = run(url2, dir, "migrate", "--allow-non-empty")
    assert.is_true(r.ok, r.stderr)
    c2:close()
    H.drop_db(name2)
  end)

  local numbered = {
    ["20240101120000_create_users.sql"] = "CREATE TABLE users (id int);\n",
    ["20240102120000_add_roles.sql"] = "CREATE TABLE roles (id int);\n",
    ["20240103120000_add_teams.sql"] = "CREATE TABLE teams (id int);\n",
  }

  local function adopted(dir)
    local st = json.decode(run(url, dir, "status", "--json").stdout)
    local out = {}
    for _, m in ipairs(st.migrations) do out[#out + 1] = m.version .. "=" .. m.state end
    return out
  end

  it("adopts knex_migrations, mapping each migration to its file, and refuses one without a file by name", function()
    local dir = project_dir(numbered)
    c:exec([[CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar(255), batch integer, migration_time timestamptz);
      CREATE TABLE knex_migrations_lock (index serial PRIMARY KEY, is_locked integer);
      CREATE TABLE users (id int); CREATE TABLE roles (id int);
      INSERT INTO knex_migrations (name, batch, migration_time) VALUES
        ('20240101120000_create_users.js', 1, '2024-01-01 12:00:05+00'), ('20240102120000_add_roles.js', 2, '2024-01-02 12:00:05+00')]])
    local r = run(url, dir, "baseline", "--adopt", "knex")
    assert.is_true(r.ok, r.stderr)
    assert.matches("adopted 2 rows from", r.stdout)
    assert.same({ "20240101120000=applied", "20240102120000=applied", "20240103120000=pending" }, adopted(dir))
    assert.equals("2024-01-01 12:00:05", c:value([[SELECT to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
      FROM orch_schema_history WHERE version = '20240101120000']]))
    assert.is_true(run(url, dir, "migrate").ok)
    assert.is_true(c:value("SELECT to_regclass('teams') IS NOT NULL"))
    -- a knex migration orch has no file for: named, nothing adopted
    local url2, name2 = H.fresh_db("adopt")
    local c2 <close> = db.connect(url2)
    c2:exec([[CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar(255), batch integer, migration_time timestamptz);
      INSERT INTO knex_migrations (name, batch, migration_time) VALUES ('20231231000000_old_thing.js', 1, now())]])
    r = run(url2, dir, "baseline", "--adopt", "knex")
    assert.equals(1, r.code)
    assert.matches("lists 20231231000000_old_thing.js %(batch 1%) as applied, but .* has no migration with version 20231231000000", r.stderr)
    assert.equals(0, c2:value("SELECT count(*) FROM orch_schema_history"))
    c2:close()
    H.drop_db(name2)
  end)

  it("adopts dbmate's and golang-migrate's schema_migrations", function()
    local dir = project_dir(numbered)
    c:exec([[CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY);
      INSERT INTO schema_migrations VALUES ('20240101120000'), ('20240102120000')]])
    assert.is_true(run(url, dir, "baseline", "--adopt", "dbmate").ok)
    assert.same({ "20240101120000=applied", "20240102120000=applied", "20240103120000=pending" }, adopted(dir))
    -- golang-migrate: one row, the current version, and its .up.sql / .down.sql pairs
    local gm = project_dir {
      ["000001_create_users.up.sql"] = "CREATE TABLE users (id int);\n", ["000001_create_users.down.sql"] = "DROP TABLE users;\n",
      ["000002_add_roles.up.sql"] = "CREATE TABLE roles (id int);\n", ["000002_add_roles.down.sql"] = "DROP TABLE roles;\n",
      ["000003_add_teams.up.sql"] = "CREATE TABLE teams (id int);\n", ["000003_add_teams.down.sql"] = "DROP TABLE teams;\n",
    }
    local url2, name2 = H.fresh_db("adopt")
    local c2 <close> = db.connect(url2)
    c2:exec([[CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
      INSERT INTO schema_migrations VALUES (2, true); CREATE TABLE users (id int); CREATE TABLE roles (id int)]])
    local r = run(url2, gm, "baseline", "--adopt", "golang-migrate")
    assert.equals(1, r.code)
    assert.matches("version 2 is dirty", r.stderr)
    r = run(url2, gm, "baseline", "--adopt", "dbmate")
    assert.equals(2, r.code)
    assert.matches("it is golang%-migrate's", r.stderr)
    c2:exec("UPDATE schema_migrations SET dirty = false")
    r = run(url2, gm, "baseline", "--adopt", "golang-migrate")
    assert.is_true(r.ok, r.stderr)
    assert.equals(2, c2:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    assert.is_true(run(url2, gm, "migrate").ok)
    assert.is_true(run(url2, gm, "undo", "--yes").ok)   -- the .down.sql of 000003
    assert.is_false(c2:value("SELECT to_regclass('teams') IS NOT NULL"))
    c2:close()
    H.drop_db(name2)
  end)

  it("adopts alembic_version when its revision is a number, and names a revision it cannot place", function()
    local dir = project_dir {
      ["001_create_users.sql"] = "CREATE TABLE users (id int);\n", ["002_create_customers.sql"] = "CREATE TABLE customers (id int);\n",
      ["003_add_audit_logs.sql"] = "CREATE TABLE audit_logs (id int);\n",
    }
    c:exec("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL PRIMARY KEY); INSERT INTO alembic_version VALUES ('ae1027a6acf')")
    local r = run(url, dir, "baseline", "--adopt", "alembic")
    assert.equals(1, r.code)
    assert.matches("at revision ae1027a6acf, which is not a number", r.stderr)
    c:exec("UPDATE alembic_version SET version_num = '002'")
    r = run(url, dir, "baseline", "--adopt", "alembic")
    assert.is_true(r.ok, r.stderr)
    assert.same({ "1=applied", "2=applied", "3=pending" }, adopted(dir))
  end)

  it("adopts brief 002's migration_history: applied rows count, rolled-back ones do not", function()
    local dir = FIX .. "/brief002/migrations"
    c:exec([[CREATE TABLE migration_history (
        id SERIAL PRIMARY KEY, migration_number VARCHAR(10) UNIQUE NOT NULL, migration_name VARCHAR(255) NOT NULL,
        applied_at TIMESTAMP DEFAULT NOW(), rollback_at TIMESTAMP, status VARCHAR(20) NOT NULL DEFAULT 'applied');
      INSERT INTO migration_history (migration_number, migration_name, status) VALUES
        ('001', 'initial_schema', 'applied'), ('002', 'add_new_feature', 'rolled_back')]])
    local r = run(url, dir, "baseline", "--adopt", "migration_history")
    assert.is_true(r.ok, r.stderr)
    assert.same({ "1=applied", "2=pending", "3=pending" }, adopted(dir))
    r = run(url, dir, "baseline", "--adopt", "liquibase")
    assert.equals(2, r.code)
    assert.matches("orch cannot adopt the history of 'liquibase' %(it can: flyway, knex", r.stderr)
  end)
end)
