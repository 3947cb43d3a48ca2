-- Every object kind of tests/fixtures/kinds/ round-trips three ways, judged
-- by the stock tools: orch backup -> pg_restore 15, pg_dump -Fc -> orch
-- restore, orch backup -> orch restore; each result is compared with the
-- source on pg_dump --schema-only text (definitions, owners, privileges,
-- comments) and on rows and sequences (H.contents_of).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local ROLES = { "orch_kind_owner", "orch_kind_reader" }

local function setup_roles()
  local c <close> = H.connect("postgres")
  for _, r in ipairs(ROLES) do
    H.ensure_role(c, r)
  end
end

local function url_of(name) return H.cluster():url(name) end

local drop = H.drop_db

-- A new database loaded with a fixture of tests/fixtures/kinds/.
local function fixture_db(kind)
  local url, name = H.fresh_db("ko_" .. kind)
  -- psql runs each statement in its own transaction (a new enum value must be committed before use)
  local r = H.pgtool("psql", { "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name, "-f", "tests/fixtures/kinds/" .. kind .. ".sql" })
  assert.is_true(r.ok, "loading fixture " .. kind .. ": " .. r.stderr)
  return url, name
end

-- the source's view, read once per source
local judged = {}
local function judge(name)
  if not judged[name] then judged[name] = { schema = H.schema_of(name), contents = H.contents_of(name) } end
  return judged[name]
end

local function same_database(a, b, how)
  local sa, sb = judge(a).schema, H.schema_of(b)
  if sa ~= sb then
    -- name the first differing line, so a failure says what was lost
    local la, lb = {}, {}
    for l in sa:gmatch("[^\n]*") do la[#la + 1] = l end
    for l in sb:gmatch("[^\n]*") do lb[#lb + 1] = l end
    for i = 1, math.max(#la, #lb) do
      if la[i] ~= lb[i] then
        error(string.format("%s: schema differs at line %d:\n  source:   %s\n  restored: %s", how, i, tostring(la[i]), tostring(lb[i])), 2)
      end
    end
  end
  assert.same(judge(a).contents, H.contents_of(b), how .. ": rows or sequences differ")
end

local function backup(src, path, extra)
  local argv = { "backup", "--db", url_of(src), "--output", path }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local r = H.orch(argv)
  assert.is_true(r.ok, r.stderr)
  return r
end

-- The three round trips of database src (a fixture already loaded); check,
-- if given, is called with each restored database's name and the way it came.
local function three_ways(src, work, check)
  local mine = work .. "/" .. src .. ".orch.dump"
  backup(src, mine)
  -- 1. orch backup -> stock pg_restore
  local _, d1 = H.fresh_db("ko_pgr")
  local r = H.pgtool("pg_restore", { "-d", d1, "--exit-on-error", mine })
  assert.is_true(r.ok, "pg_restore of orch's archive: " .. r.stderr)
  same_database(src, d1, "orch backup -> pg_restore")
  if check then check(d1, "orch backup -> pg_restore") end
  drop(d1)
  -- 2. stock pg_dump -Fc -> orch restore
  local theirs = work .. "/" .. src .. ".pg.dump"
  r = H.pgtool("pg_dump", { "-Fc", "-f", theirs, "-d", src })
  assert.is_true(r.ok, r.stderr)
  local u2, d2 = H.fresh_db("ko_orr")
  r = H.orch { "restore", theirs, "--db", u2 }
  assert.is_true(r.ok, "orch restore of pg_dump's archive: " .. r.stderr)
  same_database(src, d2, "pg_dump -> orch restore")
  if check then check(d2, "pg_dump -> orch restore") end
  drop(d2)
  -- 3. orch backup -> orch restore
  local u3, d3 = H.fresh_db("ko_oo")
  r = H.orch { "restore", mine, "--db", u3 }
  assert.is_true(r.ok, "orch restore of orch's archive: " .. r.stderr)
  same_database(src, d3, "orch backup -> orch restore")
  if check then check(d3, "orch backup -> orch restore") end
  drop(d3)
end

-- fixture -> what the test claims it covers
local KINDS = {
  { "types", "base types with shell types and I/O functions, ranges with canonical functions, multiranges, enums grown " ..
    "BEFORE/AFTER, composite types, domains with NOT VALID constraints after the data" },
  { "functions", "SQL-standard bodies, procedures, window functions, SET options, LEAKPROOF, SUPPORT, transforms, " ..
    "DEPENDS ON EXTENSION; ordered-set, hypothetical, moving and FINALFUNC_MODIFY aggregates" },
  { "operators", "commutator/negator pairs naming each other, prefix operators, operator families with loose " ..
    "ALTER OPERATOR FAMILY ... ADD members, operator classes (default, STORAGE, FOR ORDER BY) used by indexes" },
  { "casts", "WITH FUNCTION, WITHOUT FUNCTION, WITH INOUT; explicit, assignment and implicit" },
  { "collations", "libc and ICU, deterministic or not, used by columns, domains, indexes and range types" },
  { "conversions", "default and plain conversions" },
  { "access_methods", "index and table access methods, a table and a materialized view stored with one" },
  { "languages", "trusted and untrusted procedural languages with their own handler, inline and validator functions" },
  { "text_search", "parsers, templates, dictionaries with options, configurations with their token mappings" },
  { "foreign", "postgres_fdw and file_fdw servers, a handler-less wrapper, user mappings with options, foreign tables " ..
    "with column options, defaults, CHECK constraints and privileges, a foreign partition" },
  { "publications", "FOR ALL TABLES, tables with column lists and row filters, TABLES IN SCHEMA, publish options, " ..
    "via partition root; subscriptions with slot names and options" },
  { "event_triggers", "every event, WHEN TAG filters, disabled, ALWAYS and REPLICA" },
  { "default_acls", "global and per-schema default privileges of two roles on every object type, grant options" },
}

describe("catalog object kinds", function()
  local work
  setup(function()
    work = H.tmpdir()
    setup_roles()
  end)
  teardown(function() sys.rmtree(work) end)

  describe("extensions (the suite's own, tests/fixtures/kinds/extension, installed by tests/pgcluster.lua)", function()
    it("keep their version and schema, dump the rows users added to configuration tables (filtered as pg_extension_config_dump " ..
       "says) and configuration sequences, never re-create member objects (a rule on a member view), and restore user objects " ..
       "over members, three ways", function()
      local _, src = fixture_db("extensions")
      local mine = work .. "/ext.orch.dump"
      backup(src, mine)
      -- members are the extension's: no entry of orch's archive creates one
      local l = H.pgtool("pg_restore", { "-l", mine })
      assert.is_true(l.ok, l.stderr)
      for _, member in ipairs { " TABLE ko_gis ref_sys", " VIEW ko_gis ref_names", " RULE ko_gis ref_names ", " TYPE ko_gis shape", " SEQUENCE ko_gis ticket_seq" } do
        assert.is_nil(l.stdout:find(member, 1, true), member .. " is listed in the archive")
      end
      assert.matches("TABLE DATA ko_gis ref_sys", l.stdout)
      assert.matches("SEQUENCE SET ko_gis ticket_seq", l.stdout)
      three_ways(src, work, function(db_, how)
        local c <close> = H.connect(db_)
        -- pg_dump leaves the version to the target's default; orch keeps the source's
        if how ~= "pg_dump -> orch restore" then
          assert.equals("1.0", c:value("SELECT extversion FROM pg_extension WHERE extname = 'orch_kinds_ext'"), how)
        end
        assert.equals("ko_gis", c:value("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'orch_kinds_ext'"), how)
        assert.equals(3, c:value("SELECT count(*) FROM ko_gis.ref_sys"), how)
        assert.equals(2, c:value("SELECT last_value FROM ko_gis.ticket_seq"), how)
      end)
      drop(src)
    end)
  end)

  it("a role that may not read subscriptions' connection strings or user mappings' options gets no backup, told which; " ..
     "--skip subscription --skip user_mapping takes the rest and the manifest lists what it left out", function()
    local url, name = H.fresh_db("ko_nosuper")
    local c <close> = db.connect(url)
    c:exec([[CREATE EXTENSION postgres_fdw;
      CREATE SERVER elsewhere FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db.example.com');
      CREATE USER MAPPING FOR orch_kind_reader SERVER elsewhere OPTIONS (user 'r', password 'secret');
      CREATE TABLE kept (id integer); INSERT INTO kept VALUES (1);
      CREATE PUBLICATION p]])
    c:exec("CREATE SUBSCRIPTION sub CONNECTION 'dbname=nowhere' PUBLICATION p WITH (connect = false, slot_name = NONE)")
    local admin <close> = H.connect("postgres")
    H.ensure_role(admin, "orch_kind_login", "LOGIN")
    c:exec("GRANT SELECT ON kept TO orch_kind_login")
    local as_login = url:gsub("//[^@/]*@", "//orch_kind_login@")
    local dir = work .. "/nosuper"
    local r = H.orch { "backup", "--db", as_login, "--dir", dir }
    assert.equals(1, r.code)
    assert.matches("user mapping for orch_kind_reader on server elsewhere", r.stderr)
    assert.matches("%-%-skip user_mapping", r.stderr)
    assert.same({}, sys.listdir(dir) or {})
    r = H.orch { "backup", "--db", as_login, "--dir", dir, "--skip", "user_mapping" }
    assert.equals(1, r.code)
    assert.matches("subscriptions %(sub%), and only a superuser may read their connection strings", r.stderr)
    assert.matches("%-%-skip subscription", r.stderr)
    assert.same({}, sys.listdir(dir) or {})
    r = H.orch { "backup", "--db", as_login, "--dir", dir, "--skip", "subscription", "--skip", "user_mapping", "--json" }
    assert.is_true(r.ok, r.stderr)
    local m = json.decode(r.stdout)
    local left = {}
    for _, k in ipairs(m.skipped) do left[k.kind] = table.concat(k.objects, "; ") end
    assert.same({ subscription = "subscription sub", user_mapping = "user mapping USER MAPPING orch_kind_reader SERVER elsewhere" }, left)
    assert.equals(1, m.tables["public.kept"])
    c:close()
    drop(name)
  end)

  it("--skip of a kind other objects need is refused naming both; leaving those out too gives an archive that restores", function()
    local url, name = H.fresh_db("ko_skipdeps")
    local c <close> = db.connect(url)
    c:exec([[CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
      CREATE TABLE words (w text COLLATE nocase); CREATE TABLE other (id integer); INSERT INTO other VALUES (7)]])
    local r = H.orch { "backup", "--db", url, "--output", work .. "/skipdeps.dump", "--skip", "collation" }
    assert.equals(1, r.code)
    assert.matches("TABLE public%.words needs COLLATION public%.nocase %(%-%-skip collation%)", r.stderr)
    assert.is_false(sys.exists(work .. "/skipdeps.dump"))
    backup(name, work .. "/skipdeps.dump", { "--skip", "collation", "--skip", "table", "--skip", "table_data" })
    local u2, d2 = H.fresh_db("ko_skipdeps_r")
    r = H.orch { "restore", work .. "/skipdeps.dump", "--db", u2 }
    assert.is_true(r.ok, r.stderr)
    local c2 <close> = db.connect(u2)
    assert.equals(0, c2:value("SELECT count(*) FROM pg_class WHERE relname IN ('words', 'other')"))
    assert.equals(0, c2:value("SELECT count(*) FROM pg_collation WHERE collname = 'nocase'"))
    c2:close()
    c:close()
    drop(d2)
    drop(name)
  end)

  for _, k in ipairs(KINDS) do
    it(k[1] .. " (" .. k[2] .. ") round-trip three ways with schema, owners, privileges, comments and rows intact", function()
      local _, src = fixture_db(k[1])
      three_ways(src, work)
      drop(src)
    end)
  end
end)
