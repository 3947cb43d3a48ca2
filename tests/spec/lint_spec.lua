-- orch.lint: each built-in rule fires on its risky statement at the right
-- file:line, stays quiet on a close safe form, knows the target server and
-- what the file did before, can be turned off per statement, file and
-- project, and teams can add rules that read the parse tree.
local lint = require "orch.lint"
local H = require "helper"

local function run(sql, opts) return lint.check_sql(sql, "V9__x.sql", opts) end

local function ids(sql, opts)
  local out = {}
  for _, f in ipairs(run(sql, opts)) do out[#out + 1] = f.rule end
  table.sort(out)
  return table.concat(out, ",")
end

local notx = "-- orch: transaction=false\n"

-- { rule, risky, safe [, opts] }: the risky statement is placed on line 3 of
-- its file; the safe one must give no finding at all.
local cases = {
  { "OR001", "DROP TABLE tickets;", "CREATE TABLE scratch (id bigint);\nDROP TABLE scratch;" },
  { "OR002", "ALTER TABLE tickets DROP COLUMN legacy;", "ALTER TABLE tickets DROP CONSTRAINT legacy_check;" },
  { "OR003", "ALTER TABLE tickets RENAME COLUMN title TO subject;", "ALTER TABLE tickets RENAME CONSTRAINT a TO b;" },
  { "OR004", "ALTER TABLE tickets RENAME TO issues;", "CREATE TABLE t_new (id bigint);\nALTER TABLE t_new RENAME TO t_final;" },
  { "OR005", "ALTER TABLE tickets ALTER COLUMN priority TYPE bigint;", "ALTER TABLE tickets ALTER COLUMN priority SET STATISTICS 500;" },
  { "OR006", "ALTER TABLE tickets ADD COLUMN region text NOT NULL;", "ALTER TABLE tickets ADD COLUMN region text NOT NULL DEFAULT 'eu';" },
  { "OR007", "ALTER TABLE tickets ALTER COLUMN region SET NOT NULL;",
    "ALTER TABLE tickets ADD CONSTRAINT region_nn CHECK (region IS NOT NULL) NOT VALID;\n" ..
    "ALTER TABLE tickets VALIDATE CONSTRAINT region_nn;\nALTER TABLE tickets ALTER COLUMN region SET NOT NULL;",
    { transactional = false } },
  { "OR008", "CREATE INDEX tickets_region ON tickets (region);", notx .. "CREATE INDEX CONCURRENTLY tickets_region ON tickets (region);" },
  { "OR009", "ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id);",
    "ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;" },
  { "OR009", "ALTER TABLE comments ADD COLUMN owner_id bigint REFERENCES users (id);",
    "ALTER TABLE comments ADD COLUMN owner_id bigint;" },
  { "OR010", "ALTER TABLE tickets ADD CONSTRAINT positive CHECK (id > 0);", "ALTER TABLE tickets ADD CONSTRAINT positive CHECK (id > 0) NOT VALID;" },
  { "OR011", "ALTER TABLE tickets ADD CONSTRAINT tickets_key UNIQUE (key);", "ALTER TABLE tickets ADD CONSTRAINT tickets_key UNIQUE USING INDEX tickets_key_idx;" },
  { "OR011", "ALTER TABLE tickets ADD PRIMARY KEY (id);", "ALTER TABLE tickets ADD CONSTRAINT tickets_pkey PRIMARY KEY USING INDEX tickets_id_idx;" },
  { "OR011", "ALTER TABLE tickets ADD COLUMN code text UNIQUE;", "CREATE TABLE codes (code text UNIQUE);" },
  { "OR012", "ALTER TABLE tickets ADD COLUMN token uuid DEFAULT gen_random_uuid();", "ALTER TABLE tickets ADD COLUMN seen_at timestamptz DEFAULT now();" },
  { "OR012", "ALTER TABLE tickets ADD COLUMN n int DEFAULT 0;", "ALTER TABLE tickets ADD COLUMN n int DEFAULT 0;", { pg_version = 10 }, { pg_version = 11 } },
  { "OR013", "LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE;", "SELECT 'LOCK TABLE tickets';" },
  { "OR014", "TRUNCATE tickets;", "CREATE TABLE staging (id bigint);\nTRUNCATE staging;" },
  { "OR015", "VACUUM FULL tickets;", notx .. "VACUUM (ANALYZE) tickets;" },
  { "OR015", "CLUSTER tickets USING tickets_pkey;", "ANALYZE tickets;" },
  { "OR016", "UPDATE tickets SET region = 'eu';", "UPDATE tickets SET region = 'eu' WHERE id < 1000;" },
  { "OR016", "DELETE FROM tickets;", "DELETE FROM tickets WHERE closed;" },
  { "OR017", "DROP INDEX tickets_region;", notx .. "DROP INDEX CONCURRENTLY tickets_region;" },
  { "OR018", "REFRESH MATERIALIZED VIEW stats;", notx .. "REFRESH MATERIALIZED VIEW CONCURRENTLY stats;" },
  { "OR019", "ALTER TABLE tickets ADD COLUMN total numeric GENERATED ALWAYS AS (price * qty) STORED;", "ALTER TABLE tickets ADD COLUMN total numeric;" },
  { "OR020", "TRUNCATE staging CASCADE;", "CREATE TABLE staging (id bigint);\nTRUNCATE staging;" },
  { "OR021", "ALTER TABLE tickets ALTER COLUMN region DROP NOT NULL;", "ALTER TABLE tickets ALTER COLUMN region DROP DEFAULT;" },
  { "OR022", "REINDEX INDEX tickets_region;", notx .. "REINDEX INDEX CONCURRENTLY tickets_region;" },
  { "OR023", "DROP DATABASE old_app;", "CREATE SCHEMA app;" },
  { "OR024", "CREATE INDEX CONCURRENTLY tickets_region ON tickets (region);", notx .. "CREATE INDEX CONCURRENTLY tickets_region ON tickets (region);" },
  { "OR025", "ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;\nALTER TABLE comments VALIDATE CONSTRAINT c_fk;",
    notx .. "ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;\nALTER TABLE comments VALIDATE CONSTRAINT c_fk;" },
  { "OR026", "BEGIN;", "SAVEPOINT before_backfill;" },
  { "OR027", "CREATE DOMAIN positive AS int CHECK (VALUE > 0);", "CREATE DOMAIN label AS text;" },
  { "OR028", "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0);", "ALTER DOMAIN positive ADD CONSTRAINT p CHECK (VALUE > 0) NOT VALID;" },
  { "OR029", "ALTER TYPE mood ADD VALUE 'meh';", "ALTER TYPE mood ADD VALUE 'meh';", { pg_version = 11 }, { pg_version = 12 } },
  { "OR030", "CREATE TABLE t (id serial, name text);", "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, name text);" },
  { "OR031", "CREATE TABLE t (at timestamp);", "CREATE TABLE t (at timestamptz);" },
  { "OR032", "CREATE TABLE t (code char(3));", "CREATE TABLE t (code text);" },
  { "OR033", "CREATE TABLE t (id int PRIMARY KEY);", "CREATE TABLE t (id bigint PRIMARY KEY);" },
  { "OR033", "CREATE TABLE t (id bigint, owner_id integer);", "CREATE TABLE t (id bigint, owner_id bigint, visits integer);" },
  { "OR035", "CREATE TABLE t (id smallint PRIMARY KEY);", "CREATE TABLE t (id bigint PRIMARY KEY, rank smallint);" },
  { "OR002", "ALTER TYPE postal_address DROP ATTRIBUTE county;", "ALTER TYPE postal_address ADD ATTRIBUTE county text;" },
  { "OR021", "ALTER DOMAIN order_ref DROP NOT NULL;", "ALTER DOMAIN order_ref DROP DEFAULT;" },
  { "OR028", "ALTER DOMAIN order_ref SET NOT NULL;", "ALTER DOMAIN order_ref SET DEFAULT 'none';" },
  { "OR032", "CREATE TABLE t (code bpchar(3));", 'CREATE TABLE t (kind "char");' },
  { "OR034", "ALTER TABLE events DETACH PARTITION events_2020;", notx .. "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY;", { pg_version = 14 }, { pg_version = 14 } },
}

describe("orch.lint rules", function()
  for _, c in ipairs(cases) do
    local id, risky, safe, ropts, sopts = c[1], c[2], c[3], c[4], c[5] or c[4]
    it(id .. " flags " .. risky:gsub("\n.*", " ...") .. " at its file:line", function()
      local text = "SELECT 1;\n\n" .. risky .. "\n"
      local hit
      for _, f in ipairs(run(text, ropts)) do if f.rule == id then hit = hit or f end end
      assert.is_not_nil(hit, id .. " not flagged in:\n" .. text .. "\n" .. lint.format(run(text, ropts)))
      assert.equals("V9__x.sql", hit.file)
      local _, nl = risky:gsub("\n", "")
      local expect = 3
      if id == "OR025" then expect = 3 + nl end -- the VALIDATE is the finding
      assert.equals(expect, hit.line)
      assert.is_string(hit.hint)
      assert.is_true(hit.severity == "error" or hit.severity == "warning" or hit.severity == "info")
    end)
    it(id .. " stays quiet on " .. safe:gsub("^%-%- orch: transaction=false\n", "(transaction=false) "):gsub("\n", " "), function()
      local f = run(safe, sopts)
      assert.equals(0, #f, lint.format(f))
    end)
  end
end)

describe("orch.lint", function()
  it("treats tables created earlier in the same file as new", function()
    assert.equals("", ids("CREATE TABLE t (id bigint);\nCREATE INDEX t_id ON t (id);\nALTER TABLE t ADD COLUMN x int NOT NULL;\n" ..
      "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0);\nALTER TABLE t ALTER COLUMN x TYPE bigint;\nUPDATE t SET x = 1;"))
    -- and only after the CREATE
    assert.equals("OR008", ids("CREATE INDEX t_id ON t (id);\nCREATE TABLE t (id bigint);"))
  end)

  it("knows a validated CHECK (x IS NOT NULL) makes SET NOT NULL cheap on 12+, not before", function()
    local sql = "ALTER TABLE tickets ADD CONSTRAINT region_nn CHECK (region IS NOT NULL);\nALTER TABLE tickets ALTER COLUMN region SET NOT NULL;"
    assert.equals("OR010", ids(sql))
    assert.equals("OR007,OR010", ids(sql, { pg_version = 11 }))
    -- a NOT VALID check proves nothing until it is validated
    assert.equals("OR007", ids("ALTER TABLE tickets ADD CONSTRAINT region_nn CHECK (region IS NOT NULL) NOT VALID;\nALTER TABLE tickets ALTER COLUMN region SET NOT NULL;"))
  end)

  it("shares what earlier files of a release did with the later ones", function()
    local state = lint.new_state()
    assert.equals(0, #lint.check_sql("CREATE TABLE fresh (id bigint);", "V1__a.sql", { state = state }))
    assert.equals(0, #lint.check_sql("CREATE INDEX fresh_id ON fresh (id);", "V2__b.sql", { state = state }))
    assert.equals(1, #lint.check_sql("CREATE INDEX fresh_id ON fresh (id);", "V2__b.sql"))
  end)

  it("knows which DEFAULTs are evaluated once and which per row", function()
    assert.equals("", ids("ALTER TABLE t ADD COLUMN a int DEFAULT 2 + 2, ADD COLUMN b text DEFAULT lower('X'), ADD COLUMN c timestamptz DEFAULT current_timestamp;"))
    assert.equals("OR012", ids("ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now(123);"))
    assert.equals("OR012", ids("ALTER TABLE t ADD COLUMN c jsonb DEFAULT my_defaults();"))
    assert.equals("OR012,OR030,OR033", ids("ALTER TABLE t ADD COLUMN n serial;"))
  end)

  it("takes a VALIDATE of a constraint added elsewhere, named after the column and NOT NULL and dropped after use, as proof", function()
    local drop = "\nALTER TABLE orders DROP CONSTRAINT orders_email_not_null;"
    assert.equals("", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_email_not_null;\nALTER TABLE orders ALTER COLUMN email SET NOT NULL;" .. drop, { transactional = false }))
    assert.equals("", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_email_not_null;\nALTER TABLE orders ALTER COLUMN email SET NOT NULL;" .. drop))
    -- a name alone is no proof: kept, it may be any CHECK
    assert.equals("OR007", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_email_not_null;\nALTER TABLE orders ALTER COLUMN email SET NOT NULL;", { transactional = false }))
    assert.equals("OR007", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_email_not_null;\nALTER TABLE orders ALTER COLUMN phone SET NOT NULL;" .. drop, { transactional = false }))
    assert.equals("OR007", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_amount_positive;\nALTER TABLE orders ALTER COLUMN amount SET NOT NULL;\n" ..
      "ALTER TABLE orders DROP CONSTRAINT orders_amount_positive;", { transactional = false }))
    assert.equals("OR007", ids("ALTER TABLE orders VALIDATE CONSTRAINT orders_email_not_null;\nALTER TABLE orders ALTER COLUMN email SET NOT NULL;" .. drop, { transactional = false, pg_version = 11 }))
  end)

  it("knows a type change that keeps every value (varchar widened or to text, numeric widened, cidr to inet) rewrites nothing, once it knows the old type", function()
    local project = { versioned = {
      { lang = "sql", path = "V1__a.sql", text = "CREATE TABLE c (nick varchar(20), price numeric(8,2), net cidr, note text, n int);\n" },
      { lang = "sql", path = "V2__b.sql", text = "ALTER TABLE c ALTER COLUMN nick TYPE varchar(40), ALTER COLUMN price TYPE numeric(12,2);\n" ..
        "ALTER TABLE c ALTER COLUMN net TYPE inet;\nALTER TABLE c ALTER COLUMN note TYPE varchar;\nALTER TABLE c ALTER COLUMN nick TYPE text USING nick::text;\n" },
      { lang = "sql", path = "V3__c.sql", text = "ALTER TABLE c ALTER COLUMN nick TYPE varchar(10);\nALTER TABLE c ALTER COLUMN price TYPE numeric(12,3);\n" ..
        "ALTER TABLE c ALTER COLUMN note TYPE varchar(5);\nALTER TABLE c ALTER COLUMN n TYPE bigint;\nALTER TABLE c ALTER COLUMN net TYPE text USING host(net);\n" },
    }, repeatable = {} }
    local f = lint.run(project)
    local got = {}
    for _, x in ipairs(f) do got[#got + 1] = x.rule .. "@" .. x.file .. ":" .. x.line end
    assert.same({ "OR005@V3__c.sql:1", "OR005@V3__c.sql:2", "OR005@V3__c.sql:3", "OR005@V3__c.sql:4", "OR005@V3__c.sql:5" }, got)
    assert.matches("column nick of c from text to varchar", f[1].message)
    -- in one file: the first change's type is known to the second
    assert.equals("OR005", ids("ALTER TABLE c ALTER COLUMN nick TYPE varchar(80);\nALTER TABLE c ALTER COLUMN nick TYPE text;"))
    assert.equals("OR005,OR005", ids("ALTER TABLE c ALTER COLUMN nick TYPE varchar(80);\nALTER TABLE c ALTER COLUMN nick TYPE varchar(40);"))
    assert.equals("OR005", ids("ALTER TABLE c ALTER COLUMN at TYPE timestamptz(0);\nALTER TABLE c ALTER COLUMN at TYPE timestamptz(3);\n" ..
      "ALTER TABLE c ALTER COLUMN at TYPE timestamptz;"))
    -- a new collation rebuilds the column's indexes
    assert.equals("OR005,OR005", ids("ALTER TABLE c ALTER COLUMN nick TYPE varchar(80);\nALTER TABLE c ALTER COLUMN nick TYPE text COLLATE \"C\";"))
    -- and not knowing it, orch assumes a rewrite
    assert.equals("OR005", ids("ALTER TABLE c ALTER COLUMN nick TYPE text;"))
  end)

  it("does not take a CONCURRENTLY after the file's own COMMIT for one inside a transaction (the COMMIT is the finding)", function()
    assert.equals("OR026,OR026", ids("SELECT 1;\nCOMMIT;\nCREATE INDEX CONCURRENTLY i ON t (x);\nBEGIN;\nSELECT 2;"))
    assert.equals("OR024,OR026,OR026,OR026", ids("SELECT 1;\nCOMMIT;\nBEGIN;\nCREATE INDEX CONCURRENTLY j ON t (y);\nCOMMIT;"))
  end)

  it("lints a project's files each on its own, but keeps what their constraints proved", function()
    local project = { versioned = {
      { lang = "sql", path = "V1__a.sql", text = "CREATE TABLE a (id bigint, email text);\n" },
      { lang = "sql", path = "V2__b.sql", directives = { transaction = false },
        text = "ALTER TABLE a ADD CONSTRAINT a_mail CHECK (email IS NOT NULL) NOT VALID;\nALTER TABLE a VALIDATE CONSTRAINT a_mail;\n" },
      { lang = "sql", path = "V3__c.sql", text = "ALTER TABLE a ALTER COLUMN email SET NOT NULL;\nCREATE INDEX a_email ON a (email);\n" },
    }, repeatable = {} }
    local f = lint.run(project)
    assert.equals(1, #f, lint.format(f))
    assert.same({ "OR008", "V3__c.sql", 2 }, { f[1].rule, f[1].file, f[1].line })
    -- as one release, the table is new for all of them
    assert.equals(0, #lint.run(project, { project.versioned[1], project.versioned[2], project.versioned[3] }))
  end)

  it("flags domains with NOT NULL, but neither REINDEX SYSTEM nor renaming a domain", function()
    assert.equals("OR027", ids("CREATE DOMAIN code AS text NOT NULL;"))
    assert.equals("", ids("-- orch: transaction=false\nREINDEX SYSTEM app;"))
    assert.equals("", ids("ALTER DOMAIN code RENAME TO short_code;"))
  end)

  it("knows how migrate runs a file: a lone CONCURRENTLY without a transaction, a plain BEGIN ... COMMIT around it all as its transaction", function()
    assert.equals("", ids("CREATE INDEX CONCURRENTLY orders_placed ON orders (placed_at);"))
    assert.equals("", ids("ALTER TYPE mood ADD VALUE 'meh';", { pg_version = 11 }))
    assert.equals("", ids("BEGIN;\nCREATE TABLE t (id bigint);\nCREATE INDEX t_id ON t (id);\nCOMMIT;"))
    assert.equals("OR024", ids("BEGIN;\nCREATE INDEX CONCURRENTLY orders_placed ON orders (placed_at);\nCOMMIT;"))
    assert.equals("OR026", ids("SELECT 1;\nCOMMIT;"))
    assert.equals("OR026", ids("BEGIN;\nSELECT 1;"))
    assert.equals("OR026,OR026,OR026,OR026", ids("BEGIN;\nSELECT 1;\nCOMMIT;\nBEGIN;\nSELECT 2;\nCOMMIT;"))
    assert.equals("", ids("BEGIN ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\nCOMMIT;"))   -- its modes become SET TRANSACTION
    -- what else PostgreSQL refuses in a transaction block
    assert.equals("", ids("VACUUM t;"))
    assert.equals("OR024", ids("SELECT 1;\nVACUUM t;"))
    assert.equals("OR024", ids("-- orch: transaction=true\nVACUUM t;"))
    assert.equals("OR022,OR024", ids("SELECT 1;\nREINDEX SCHEMA app;"))
    assert.equals("OR024", ids("SELECT 1;\nDISCARD ALL;"))
    assert.equals("", ids("SELECT 1;\nANALYZE t;\nDISCARD PLANS;"))
    -- without a transaction, BEGIN ... COMMIT is the file's own business
    assert.equals("", ids("-- orch: transaction=false\nBEGIN;\nSELECT 1;\nCOMMIT;"))
  end)

  it("does not take ALTER COLUMN ... DROP DEFAULT for a dropped column", function()
    assert.equals("", ids("ALTER TABLE tickets ALTER COLUMN region DROP DEFAULT;"))
    assert.equals("", ids("ALTER TABLE tickets ALTER region DROP DEFAULT, ALTER region SET DEFAULT 'eu';"))
  end)

  it("reads non-ASCII identifiers", function()
    local f = run("SELECT 1;\nALTER TABLE \"bücher\" DROP COLUMN \"größe\";\nCREATE INDEX ix ON bücher (titel);\n")
    assert.equals(2, #f)
    assert.equals("OR002", f[1].rule)
    assert.equals(2, f[1].line)
    assert.matches("größe", f[1].message)
    assert.equals("OR008", f[2].rule)
    assert.equals(3, f[2].line)
  end)

  it("flags nothing for risky words in comments, strings and dollar-quoted bodies", function()
    assert.equals("", ids([[
-- DROP TABLE tickets; ALTER TABLE tickets DROP COLUMN x;
/* CREATE INDEX i ON tickets (x); /* nested: TRUNCATE tickets; */ VACUUM FULL tickets; */
CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $body$
BEGIN
  EXECUTE 'DROP TABLE tickets';
END
$body$;
SELECT 'UPDATE tickets SET x = 1', $q$ DELETE FROM tickets $q$;
CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;
]]))
  end)

  it("reports a file the parser rejects with the parser's message at line:column", function()
    local f = run("SELECT 1;\nALTER TABLE t ADD COLUM x int;\n")
    assert.equals(1, #f)
    assert.equals("OR000", f[1].rule)
    assert.equals("error", f[1].severity)
    assert.equals(2, f[1].line)
    assert.equals(27, f[1].column)
    assert.matches('syntax error at or near "int" at column 27', f[1].message)
    -- a newer target may know syntax PostgreSQL 15's grammar does not: a warning, not an error
    local g = run("SELECT '{}' IS JSON;", { pg_version = 16 })
    assert.same({ "OR000", "warning", 1 }, { g[1].rule, g[1].severity, g[1].line })
    assert.matches("PostgreSQL 16 may accept it", g[1].hint)
  end)

  it("lints placeholders left as written, with the lines unchanged", function()
    local f = run("SELECT 1;\nALTER TABLE ${schema}.tickets DROP COLUMN legacy;\n")
    assert.equals(1, #f)
    assert.equals("OR002", f[1].rule)
    assert.equals(2, f[1].line)
  end)

  it("gives file, line, severity and a fix hint; several findings of one ALTER get their own lines", function()
    local f = run("SELECT 1;\n\nCREATE INDEX i ON big (x);", nil)[1]
    assert.equals("V9__x.sql", f.file)
    assert.equals(3, f.line)
    assert.equals("warning", f.severity)
    assert.matches("CONCURRENTLY", f.hint)
    local g = run("ALTER TABLE big\n  ADD COLUMN a int NOT NULL,\n  ADD COLUMN b uuid DEFAULT gen_random_uuid();\n")
    assert.equals(2, #g)
    assert.same({ "OR006", 2 }, { g[1].rule, g[1].line })
    assert.same({ "OR012", 3 }, { g[2].rule, g[2].line })
  end)

  it("honours a suppression comment for one statement and a disable line for a file", function()
    assert.equals("OR008", ids("-- orch:lint-ignore OR001\nDROP TABLE old;\nCREATE INDEX i ON big (x);"))
    assert.equals("", ids("DROP TABLE old; -- not this one\n-- orch:lint-ignore\nCREATE INDEX i ON big (x);"):gsub("OR001", ""))
    assert.equals("OR008", ids("-- orch:lint-ignore drop-table\nDROP TABLE old;\nCREATE INDEX i ON big (x);"))
    assert.equals("OR008", ids("-- orch:lint-disable OR001, OR031\nDROP TABLE old;\nCREATE TABLE t (at timestamp);\nCREATE INDEX i ON big (x);"))
    assert.equals("", ids("-- orch:lint-disable\nDROP TABLE old;"))
    assert.equals("OR001", ids("DROP TABLE old;", { severity = { OR008 = "off" } }))
    assert.equals("", ids("DROP TABLE old;", { severity = { ["drop-table"] = "off" } }))
  end)

  it("runs team rules from orch.lint.lua on the parse tree and the text, takes its severities and pg_version, and the CLI fails on errors", function()
    local dir = H.tmpdir()
    H.write(dir .. "/orch.lint.lua", [[return {
      { id = "TEAM1", name = "no-serial", severity = "error",
        hint = "use identity columns", check = function(s) if s.norm:match(" SERIAL") then return "uses serial" end end },
      { id = "TEAM2", name = "no-public-tables", severity = "error", hint = "create tables in the app schema",
        check = function(s) if s.kind == "CreateStmt" and not s.node.relation.schemaname then return "creates " .. s.node.relation.relname .. " without a schema" end end },
      severity = { OR030 = "off", OR033 = "off" },
      pg_version = 10,
    }]])
    require("orch.sys").mkdir_p(dir .. "/migrations")
    H.write(dir .. "/migrations/V1__t.sql", "-- orch: lock_timeout=2s\nCREATE TABLE t (id serial PRIMARY KEY);\n")
    H.write(dir .. "/migrations/V2__u.sql", "ALTER TABLE t ADD COLUMN n int DEFAULT 0;\n")
    local r = H.orch({ "lint" }, { cwd = dir })
    assert.equals(1, r.code)
    assert.matches("V1__t%.sql:2: error TEAM1 %(no%-serial%): uses serial", r.stdout)
    assert.matches("V1__t%.sql:2: error TEAM2 %(no%-public%-tables%): creates t without a schema", r.stdout)
    assert.matches("V2__u%.sql:1: warning OR012", r.stdout)   -- pg_version 10: any DEFAULT rewrites
    assert.not_matches("OR030", r.stdout)
    local r11 = H.orch({ "lint", "--pg-version", "11", "migrations/V2__u.sql" }, { cwd = dir })
    assert.equals("no findings\n", r11.stdout)
    H.write(dir .. "/migrations/V1__t.sql", "CREATE TABLE app.t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n")
    H.write(dir .. "/migrations/V2__u.sql", "SELECT 1;\n")
    local ok = H.orch({ "lint", "--json" }, { cwd = dir })
    assert.is_true(ok.ok, ok.stderr)
    assert.equals(0, require("orch.json").decode(ok.stdout).errors)
    local list = H.orch({ "lint", "--list" }, { cwd = dir })
    assert.is_true(list.ok, list.stderr)
    assert.matches("OR008%s+index%-not%-concurrent%s+warning%s+CREATE INDEX blocks writes", list.stdout)
    assert.matches("OR030%s+prefer%-identity%s+off", list.stdout)
    assert.matches("TEAM2%s+no%-public%-tables%s+error", list.stdout)
    H.write(dir .. "/orch.lint.lua", "return { severity = { OR001 = 'loud' } }")
    local bad = H.orch({ "lint" }, { cwd = dir })
    assert.is_false(bad.ok)
    assert.matches("severity of OR001 must be error, warning, info or off", bad.stderr)
  end)
end)

-- The corpus tests/lint/<dir>/{risky,safe}_N.sql (also measured against squawk
-- by tests/bench/lint_compare.lua): every risky case is flagged by a rule that
-- answers its directory, no safe case gets a lock or safety finding (style
-- findings count only in the style directories), and no rule fails.
describe("orch.lint on the corpus tests/lint", function()
  local sys = require "orch.sys"
  local answers = dofile("tests/lint/answers.lua")
  local dirs = sys.listdir("tests/lint")
  table.sort(dirs)
  for _, dir in ipairs(dirs) do
    local st = sys.stat("tests/lint/" .. dir)
    if st and st.type == "directory" then
      local answer = {}
      for _, id in ipairs(answers.map[dir] or {}) do answer[id] = true end
      local names = sys.listdir("tests/lint/" .. dir)
      table.sort(names)
      for _, name in ipairs(names) do
        local kind = name:match("^(%a+)_%d+%.sql$") or name:match("^(%a+)_sq_%d+%.sql$")
        if kind == "risky" or kind == "safe" then
          local path = "tests/lint/" .. dir .. "/" .. name
          it(path .. (kind == "risky" and " is flagged" or " gets no finding"), function()
            assert.is_not_nil(answers.map[dir], dir .. " is not in tests/lint/answers.lua")
            local text = H.read(path)
            local found = lint.check_sql(text, path, { pg_version = tonumber(text:match("^%-%- pg: (%d+)")) or 15 })
            local hit, other = false, {}
            for _, f in ipairs(found) do
              assert.not_matches("^rule failed", f.message)
              if answer[f.rule] then hit = true end
              if not answers.style[f.rule] or answers.style_case[dir] then other[#other + 1] = f end
            end
            if kind == "risky" then
              assert.is_true(hit, path .. " not flagged by " .. table.concat(answers.map[dir], "/") .. ":\n" .. lint.format(found))
            else
              assert.equals(0, #other, lint.format(other))
            end
          end)
        end
      end
    end
  end
end)

describe("orch.lint on Lua migrations", function()
  local function ids_of(fs)
    local out = {}
    for _, f in ipairs(fs) do out[#out + 1] = f.rule end
    table.sort(out)
    return table.concat(out, ",")
  end
  local src = [==[
-- backfill, then index
local function tag_all(db) db:exec("UPDATE tickets SET region = 'eu'") end
return {
  up = function(db, ctx)
    db:exec [[
      ALTER TABLE tickets ADD COLUMN region text;
      CREATE INDEX tickets_region ON tickets (region)
    ]]
    db:exec("ALTER TABLE tickets ADD COLUMN note text")
    local t = "tickets"
    db:exec("TRUNCATE " .. t)
    db:query(string.format("SELECT * FROM %s", t))
    ctx.batch { table = "tickets", key = "id", size = 1000, set = "region = 'eu'", where = "region IS NULL" }
  end,
  down = function(db)
    db:exec("DROP TABLE tickets")
  end,
}
]==]

  it("lints the literal SQL of up (and of helpers) on the lines where it is written, not the undo", function()
    local got = {}
    for _, f in ipairs(lint.check_lua(src, "V3__x.lua")) do got[#got + 1] = f.rule .. ":" .. f.line end
    assert.same({ "OR016:2", "OR008:7", "OR036:11", "OR036:12" }, got)
  end)

  it("names each call whose SQL is built at run time as info OR036, which can be turned off", function()
    local f = lint.check_lua(src, "V3__x.lua")
    assert.equals("info", f[3].severity)
    assert.matches("exec%(%) is built at run time", f[3].message)
    assert.matches("query%(%) is built at run time", f[4].message)
    assert.equals(2, #lint.check_lua(src, "V3__x.lua", { severity = { OR036 = "off" } }))
    assert.equals(0, #lint.check_lua("-- orch:lint-disable\n" .. src, "V3__x.lua"))
  end)

  it("runs the literals as one transaction, as migrate does, unless the migration says transaction = false", function()
    local body = 'return { %s up = function(db)\n  db:exec("CREATE INDEX CONCURRENTLY i ON t (x)")\n  db:exec("ANALYZE t")\nend }\n'
    assert.equals("OR024", ids_of(lint.check_lua(body:format(""), "V4__c.lua")))
    assert.equals("", ids_of(lint.check_lua(body:format("transaction = false,"), "V4__c.lua")))
  end)

  it("is part of a project's lint, and of orch lint FILE.lua", function()
    local project = { versioned = {
      { lang = "sql", path = "V1__a.sql", text = "CREATE TABLE fresh (id bigint);\n" },
      { lang = "lua", path = "V2__b.lua", text = 'return { up = function(db) db:exec("DROP TABLE old") end }\n' },
    }, repeatable = {} }
    local f = lint.run(project)
    assert.same({ "OR001", "V2__b.lua", 1 }, { f[1].rule, f[1].file, f[1].line })
    local dir = H.tmpdir()
    H.write(dir .. "/V2__b.lua", project.versioned[2].text)
    local r = H.orch({ "lint", dir .. "/V2__b.lua" })
    assert.matches("V2__b%.lua:1: warning OR001 %(drop%-table%)", r.stdout)
  end)
end)
