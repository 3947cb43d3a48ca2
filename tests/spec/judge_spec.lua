-- The cross-version judge (tests/judge.lua, H.catalog_of) sees what it claims
-- to see, on every major: two databases made by one script read alike, and
-- two that differ in one setting only read differently, in that setting.
-- ctest: every major
local H = require "helper"
local judge = require "judge"

-- the schema both databases start from (valid on every major, 12 up)
local BASE = [[
SET client_min_messages = error;
CREATE TABLE t (id int PRIMARY KEY, a int, b text, c text);
CREATE INDEX t_a ON t (a);
CREATE TABLE pt (a int, b int) PARTITION BY RANGE (a);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100);
CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER trg BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();
CREATE VIEW v AS SELECT id, a FROM t;
CREATE SEQUENCE s;
INSERT INTO t VALUES (1, 1, 'x', 'y');
]]

-- one object of nearly every kind (valid on every major, 12 up)
local RICH = [[
SET client_min_messages = error;
CREATE EXTENSION hstore;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('sad', 'ok');
CREATE TYPE app.span AS RANGE (subtype = float8);
CREATE TYPE app.later;
CREATE DOMAIN app.pos AS int DEFAULT 1 NOT NULL;
ALTER DOMAIN app.pos ADD CONSTRAINT pos_check CHECK (VALUE > 0) NOT VALID;
CREATE TYPE app.pair AS (a int, b text);
CREATE TABLE app.typed OF app.pair;
CREATE TABLE app.base (x int); CREATE TABLE app.derived (y int) INHERITS (app.base);
CREATE TABLE app.ev (at date NOT NULL, k int, v hstore) PARTITION BY RANGE (at);
CREATE TABLE app.ev_2024 PARTITION OF app.ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (k);
CREATE TABLE app.ev_2024_1 PARTITION OF app.ev_2024 FOR VALUES IN (1);
CREATE INDEX ev_k ON app.ev (k);
CREATE FUNCTION app.tf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER ev_after AFTER INSERT ON app.ev FOR EACH ROW EXECUTE FUNCTION app.tf();
CREATE PROCEDURE app.noop() LANGUAGE sql AS $$ SELECT 1 $$;
CREATE AGGREGATE app.total(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0');
CREATE MATERIALIZED VIEW app.mv AS SELECT 1 AS one;
CREATE OPERATOR app.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq, COMMUTATOR = OPERATOR(app.===));
CREATE OPERATOR FAMILY app.fam USING btree;
CREATE OPERATOR CLASS app.cls FOR TYPE int USING btree FAMILY app.fam AS OPERATOR 1 <, OPERATOR 3 =, FUNCTION 1 btint4cmp(int, int);
CREATE FUNCTION app.to_bool(app.pair) RETURNS bool LANGUAGE sql AS 'SELECT true';
CREATE CAST (app.pair AS bool) WITH FUNCTION app.to_bool(app.pair);
CREATE COLLATION app.phone (provider = icu, locale = 'de-u-co-phonebk');
CREATE CONVERSION app.conv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;
CREATE TEXT SEARCH DICTIONARY app.dict (TEMPLATE = simple);
CREATE TEXT SEARCH CONFIGURATION app.cfg (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION app.cfg ALTER MAPPING FOR word WITH app.dict;
CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler;
CREATE TABLE app.other_am (x int) USING heap2;
CREATE FOREIGN DATA WRAPPER fdw; CREATE SERVER srv FOREIGN DATA WRAPPER fdw OPTIONS (host 'h');
CREATE USER MAPPING FOR PUBLIC SERVER srv OPTIONS (user 'u');
CREATE FOREIGN TABLE app.ft (x int OPTIONS (column_name 'xx')) SERVER srv OPTIONS (table_name 't');
CREATE PUBLICATION pub FOR TABLE app.base;
CREATE SUBSCRIPTION sub CONNECTION 'dbname=none' PUBLICATION pub WITH (connect = false);
CREATE STATISTICS app.st (ndistinct) ON k, at FROM app.ev_2024_1;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO orch_judge_r;
SELECT lo_from_bytea(4711, 'large');
COMMENT ON LARGE OBJECT 4711 IS 'a large object';
CREATE FUNCTION app.ef() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;
CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION app.ef();
ALTER EVENT TRIGGER et DISABLE;
CREATE POLICY p ON app.base USING (x > 0);
ALTER TABLE app.base ENABLE ROW LEVEL SECURITY;
INSERT INTO app.ev VALUES ('2024-02-13', 1, 'a=>1');
]]

-- what the rich database's text must show, on every major
local RICH_SEES = { "extension hstore | version", "extension hstore member type public.hstore",
  "enum type app.mood | labels", "range type app.span | subtype", "pseudo type app.later | state = shell",
  "constraint pos_check on domain app.pos | validated = false", "table app.typed | of_type = app.pair",
  "table app.derived | inherits = app.base", "partitioned table app.ev_2024 | partition_key = LIST (k)",
  "trigger ev_after on app.ev_2024_1 | clone_of = app.ev_2024", "partitioned index app.ev_k", "procedure app.noop()",
  "aggregate app.total(integer) | initcond = 0", "materialized view app.mv | populated = true",
  "operator app.===(integer,integer) | commutator", "operator family app.fam using btree",
  "operator class app.cls using btree | family = app.fam", "cast (app.pair AS boolean)", "collation app.phone | provider = i",
  "conversion app.conv | source_encoding = LATIN1", "text search dictionary app.dict | template",
  "text search configuration app.cfg mapping word | dictionaries = app.dict", "access method heap2 | type = t",
  "table app.other_am | access_method = heap2", "foreign-data wrapper fdw", "server srv | options = host=h",
  "user mapping for PUBLIC server srv | options = user=u", "foreign table app.ft column x | fdw_options = column_name=xx",
  "publication pub table app.base", "subscription sub | enabled = false", "statistics app.st | definition",
  "default privileges for role postgres in schema app on tables | acl", "large object 4711 | md5",
  "comment on large object 4711 | text = a large object", "event trigger et | enabled = D",
  "policy p on app.base | using = (x > 0)", "table app.base | row_security = true" }

-- a statement naming the current database (%I), whatever it is called
local function for_this_db(stmt)
  return "DO $$ BEGIN EXECUTE format('" .. stmt:gsub("'", "''") .. "', current_database()); END $$"
end

-- Each setting: b applied to one database, a (if any) to the other; expect: a
-- piece of the lines that must differ. min: the first major that has it.
local SETTINGS = {
  { "a REPLICA IDENTITY", b = "ALTER TABLE t REPLICA IDENTITY FULL", expect = "table public.t | replica_identity" },
  { "a REPLICA IDENTITY index", b = "ALTER TABLE t REPLICA IDENTITY USING INDEX t_pkey", expect = "replica_identity_index" },
  { "a column's statistics target", b = "ALTER TABLE t ALTER COLUMN a SET STATISTICS 500", expect = "column a | statistics" },
  { "an index column's statistics target", a = "CREATE INDEX t_expr ON t ((a + 1))",
    b = "CREATE INDEX t_expr ON t ((a + 1)); ALTER INDEX t_expr ALTER COLUMN 1 SET STATISTICS 50", expect = "t_expr column 1 | statistics" },
  { "an attribute option (n_distinct)", b = "ALTER TABLE t ALTER COLUMN a SET (n_distinct = 100)", expect = "column a | options" },
  { "a column's storage", b = "ALTER TABLE t ALTER COLUMN b SET STORAGE EXTERNAL", expect = "column b | storage" },
  { "a column's compression", min = 14, b = "ALTER TABLE t ALTER COLUMN b SET COMPRESSION pglz", expect = "column b | compression" },
  { "a column's collation", a = "ALTER TABLE t ADD COLUMN z text", b = [[ALTER TABLE t ADD COLUMN z text COLLATE "POSIX"]],
    expect = "column z | collation" },
  { "a column default", b = "ALTER TABLE t ALTER COLUMN a SET DEFAULT 7", expect = "column a | default" },
  { "an identity column's kind", a = "ALTER TABLE t ADD COLUMN i int GENERATED ALWAYS AS IDENTITY",
    b = "ALTER TABLE t ADD COLUMN i int GENERATED BY DEFAULT AS IDENTITY", expect = "column i | identity" },
  { "a table privilege", b = "GRANT SELECT ON t TO orch_judge_r", expect = "table public.t | acl" },
  { "a column privilege", b = "GRANT UPDATE (a) ON t TO orch_judge_r", expect = "column a | acl" },
  { "the public schema's privileges", b = "REVOKE ALL ON SCHEMA public FROM PUBLIC", expect = "schema public | acl" },
  { "the public schema's owner", b = "ALTER SCHEMA public OWNER TO orch_judge_r", expect = "schema public | owner" },
  { "the public schema's comment", b = "COMMENT ON SCHEMA public IS 'ours'", expect = "comment on schema public" },
  { "a column comment", b = "COMMENT ON COLUMN t.a IS 'the a'", expect = "comment on table column public.t.a" },
  { "a NOT VALID constraint", a = "ALTER TABLE t ADD CONSTRAINT t_a_pos CHECK (a > 0)",
    b = "ALTER TABLE t ADD CONSTRAINT t_a_pos CHECK (a > 0) NOT VALID", expect = "constraint t_a_pos on public.t | validated" },
  { "a NOT VALID domain constraint", a = "CREATE DOMAIN d AS int CONSTRAINT d_pos CHECK (VALUE > 0)",
    b = "CREATE DOMAIN d AS int; ALTER DOMAIN d ADD CONSTRAINT d_pos CHECK (VALUE > 0) NOT VALID",
    expect = "constraint d_pos on domain public.d | validated" },
  { "a deferrable constraint", a = "ALTER TABLE t ADD CONSTRAINT t_b_u UNIQUE (b)",
    b = "ALTER TABLE t ADD CONSTRAINT t_b_u UNIQUE (b) DEFERRABLE INITIALLY DEFERRED", expect = "constraint t_b_u on public.t | deferrable" },
  { "a NOT ENFORCED constraint", min = 18, a = "ALTER TABLE t ADD CONSTRAINT t_chk CHECK (a > 0)",
    b = "ALTER TABLE t ADD CONSTRAINT t_chk CHECK (a > 0) NOT ENFORCED", expect = "constraint t_chk on public.t | enforced" },
  { "a named NOT NULL constraint", min = 18, a = "ALTER TABLE t ALTER COLUMN c SET NOT NULL",
    b = "ALTER TABLE t ADD CONSTRAINT c_present NOT NULL c", expect = "constraint c_present on public.t" },
  { "a virtual generated column", min = 18, a = "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 2) STORED",
    b = "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (a * 2) VIRTUAL", expect = "column g | generated" },
  { "a sub-partition's PARTITION BY", a = "CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (200)",
    b = "CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (200) PARTITION BY LIST (b)", expect = "pt2 | partition_key" },
  { "a partition bound", a = "CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (200)",
    b = "CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (300)", expect = "pt2 | partition_bound" },
  { "CLUSTER ON", b = "ALTER TABLE t CLUSTER ON t_a", expect = "table public.t | cluster_on" },
  { "a storage parameter", b = "ALTER TABLE t SET (fillfactor = 70)", expect = "table public.t | options" },
  { "a TOAST storage parameter", b = "ALTER TABLE t SET (toast.autovacuum_enabled = false)", expect = "table public.t | toast_options" },
  { "an unlogged table", a = "CREATE TABLE u (x int)", b = "CREATE UNLOGGED TABLE u (x int)", expect = "table public.u | persistence" },
  { "row level security", b = "ALTER TABLE t ENABLE ROW LEVEL SECURITY", expect = "table public.t | row_security" },
  { "forced row level security", b = "ALTER TABLE t FORCE ROW LEVEL SECURITY", expect = "force_row_security" },
  { "a policy's expression", a = "CREATE POLICY p ON t USING (a > 0)", b = "CREATE POLICY p ON t USING (a > 1)",
    expect = "policy p on public.t | using" },
  { "a disabled trigger", b = "ALTER TABLE t DISABLE TRIGGER trg", expect = "trigger trg on public.t | enabled" },
  { "a rule", b = "CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING", expect = "rule r on public.t" },
  { "inheritance", a = "CREATE TABLE k (x int)", b = "CREATE TABLE k (x int) INHERITS (t)", expect = "table public.k | inherits" },
  { "a typed table", a = "CREATE TYPE ty AS (x int); CREATE TABLE tt (x int)", b = "CREATE TYPE ty AS (x int); CREATE TABLE tt OF ty",
    expect = "table public.tt | of_type" },
  { "a view option", b = "ALTER VIEW v SET (security_barrier = true)", expect = "view public.v | options" },
  { "an unpopulated materialized view", a = "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x",
    b = "CREATE MATERIALIZED VIEW mv AS SELECT 1 AS x WITH NO DATA", expect = "materialized view public.mv | populated" },
  { "a sequence's state", a = "CREATE SEQUENCE s2", b = "CREATE SEQUENCE s2; SELECT setval('s2', 42)", expect = "sequence public.s2 | state" },
  { "a sequence parameter", b = "ALTER SEQUENCE s INCREMENT BY 3", expect = "sequence public.s | increment" },
  { "an enum's label order", a = "CREATE TYPE e AS ENUM ('x', 'y')", b = "CREATE TYPE e AS ENUM ('y', 'x')", expect = "enum type public.e | labels" },
  { "a function's SECURITY DEFINER", b = "ALTER FUNCTION f() SECURITY DEFINER", expect = "function public.f() | definition" },
  { "a function privilege", b = "REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC", expect = "function public.f() | acl" },
  { "a default privilege", b = "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO orch_judge_r", expect = "default privileges" },
  { "an extended statistics object's target", min = 13, a = "CREATE STATISTICS st ON a, b FROM t",
    b = "CREATE STATISTICS st ON a, b FROM t; ALTER STATISTICS st SET STATISTICS 50", expect = "statistics public.st | statistics" },
  { "a publication's options", a = "CREATE PUBLICATION pb FOR TABLE t",
    b = "CREATE PUBLICATION pb FOR TABLE t WITH (publish = 'insert')", expect = "publication pb | update" },
  { "a foreign server's options", a = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w OPTIONS (host 'a')",
    b = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w OPTIONS (host 'b')", expect = "server sv | options" },
  { "an event trigger's state",
    a = "CREATE FUNCTION ef() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$; CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION ef()",
    b = "CREATE FUNCTION ef() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$; CREATE EVENT TRIGGER et ON ddl_command_end EXECUTE FUNCTION ef(); ALTER EVENT TRIGGER et DISABLE",
    expect = "event trigger et | enabled" },
  { "an extension's schema", a = "CREATE EXTENSION hstore", b = "CREATE SCHEMA x; CREATE EXTENSION hstore SCHEMA x",
    expect = "extension hstore | schema" },
  { "an extension member's privileges changed after CREATE EXTENSION", a = "CREATE EXTENSION hstore",
    b = "CREATE EXTENSION hstore; REVOKE ALL ON TYPE hstore FROM PUBLIC", expect = "member type public.hstore | acl_changed_after_create" },
  { "a collation's determinism", a = "CREATE COLLATION co (provider = icu, locale = 'und', deterministic = true)",
    b = "CREATE COLLATION co (provider = icu, locale = 'und', deterministic = false)", expect = "collation public.co | deterministic" },
  { "a text search configuration's mapping", a = "CREATE TEXT SEARCH CONFIGURATION tsc (COPY = simple)",
    b = "CREATE TEXT SEARCH CONFIGURATION tsc (COPY = simple); ALTER TEXT SEARCH CONFIGURATION tsc DROP MAPPING FOR word",
    expect = "text search configuration public.tsc mapping word" },
  { "a cast's context", a = "CREATE FUNCTION tb(t) RETURNS bool LANGUAGE sql AS 'SELECT true'; CREATE CAST (t AS bool) WITH FUNCTION tb(t)",
    b = "CREATE FUNCTION tb(t) RETURNS bool LANGUAGE sql AS 'SELECT true'; CREATE CAST (t AS bool) WITH FUNCTION tb(t) AS IMPLICIT",
    expect = "cast (public.t AS boolean) | context" },
  { "an operator's commutator", a = "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)",
    b = "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq, COMMUTATOR = ===)", expect = "| commutator" },
  { "an aggregate's initial state", a = "CREATE AGGREGATE ag(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0')",
    b = "CREATE AGGREGATE ag(int) (SFUNC = int4pl, STYPE = int, INITCOND = '1')", expect = "aggregate public.ag(integer) | initcond" },
  { "a user mapping's options",
    a = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w; CREATE USER MAPPING FOR PUBLIC SERVER sv OPTIONS (user 'a')",
    b = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w; CREATE USER MAPPING FOR PUBLIC SERVER sv OPTIONS (user 'b')",
    expect = "user mapping for PUBLIC server sv | options" },
  { "a foreign table column's options",
    a = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w; CREATE FOREIGN TABLE ft (x int OPTIONS (name 'a')) SERVER sv",
    b = "CREATE FOREIGN DATA WRAPPER w; CREATE SERVER sv FOREIGN DATA WRAPPER w; CREATE FOREIGN TABLE ft (x int OPTIONS (name 'b')) SERVER sv",
    expect = "foreign table public.ft column x | fdw_options" },
  { "a subscription's options", a = "CREATE SUBSCRIPTION sb CONNECTION 'dbname=none' PUBLICATION p WITH (connect = false)",
    b = "CREATE SUBSCRIPTION sb CONNECTION 'dbname=none' PUBLICATION p WITH (connect = false, synchronous_commit = 'on')",
    expect = "subscription sb | synchronous_commit" },
  { "a large object's contents", a = "SELECT lo_from_bytea(4242, 'one')", b = "SELECT lo_from_bytea(4242, 'two')", expect = "large object 4242 | md5" },
  { "a large object's privileges", a = "SELECT lo_from_bytea(4243, 'x')",
    b = "SELECT lo_from_bytea(4243, 'x'); GRANT SELECT ON LARGE OBJECT 4243 TO orch_judge_r", expect = "large object 4243 | acl" },
  { "a database setting", b = for_this_db("ALTER DATABASE %I SET DateStyle = 'SQL, DMY'"), expect = "database setting" },
  { "the database comment", b = for_this_db("COMMENT ON DATABASE %I IS 'ours'"), expect = "database comment" },
}

-- Apply sql inside a transaction on conn, read the judge's text, roll back.
local function text_with(conn, sql)
  conn:exec("BEGIN")
  local ok, text = pcall(function()
    if sql then conn:exec(sql) end
    return judge.catalog(conn)
  end)
  conn:exec("ROLLBACK")
  if not ok then error(text, 0) end
  return text
end

for _, major in ipairs(H.test_majors()) do
  describe("the judge on PostgreSQL " .. major, function()
    local name_a, name_b, ca, cb, base_a
    setup(function()
      local c <close> = H.connect("postgres", major)
      H.ensure_role(c, "orch_judge_r")
      c:close()
      _, name_a = H.fresh_db("judge_a", major)
      _, name_b = H.fresh_db("judge_b", major)
      -- made one after the other, so every object's OID differs between the two
      for _, n in ipairs { name_a, name_b } do
        local cn <close> = H.connect(n, major)
        cn:exec(BASE)
      end
      ca, cb = H.connect(name_a, major), H.connect(name_b, major)
      for _, cn in ipairs { ca, cb } do cn:exec("SET client_min_messages = error") end
      base_a = judge.catalog(ca)
    end)
    teardown(function()
      if ca then ca:close() end
      if cb then cb:close() end
      H.drop_db(name_a, major)
      H.drop_db(name_b, major)
    end)

    it("reads two databases made by one script alike, with no OID in the text", function()
      local a, b = H.catalog_of(name_a, major), H.catalog_of(name_b, major)
      assert.equals("", H.catalog_diff(a, b))
      assert.equals(a, b)
      assert.matches("table public.t | replica_identity = d", a, 1, true)
      -- no OID of the database's own objects appears
      local oids = ca:query([[SELECT oid::text AS oid FROM pg_class WHERE oid >= 16384
        UNION SELECT oid::text FROM pg_proc WHERE oid >= 16384 UNION SELECT oid::text FROM pg_type WHERE oid >= 16384]])
      assert.is_true(#oids > 5)
      for _, r in ipairs(oids) do assert.is_nil(a:find("%f[%d]" .. r.oid .. "%f[%D]"), "OID " .. r.oid .. " in the text") end
    end)

    it("reads two databases holding nearly every kind of object alike, and shows each kind", function()
      local names = {}
      for i = 1, 2 do
        local _, n = H.fresh_db("judge_rich", major)
        names[i] = n
        local c <close> = H.connect(n, major)
        c:exec(RICH)
      end
      finally(function()
        for _, n in ipairs(names) do
          -- a subscription keeps its database from being dropped
          local c <close> = H.connect(n, major)
          c:exec("SET client_min_messages = error; ALTER SUBSCRIPTION sub DISABLE; ALTER SUBSCRIPTION sub SET (slot_name = NONE); DROP SUBSCRIPTION sub")
          c:close()
          H.drop_db(n, major)
        end
      end)
      local a, b = H.catalog_of(names[1], major), H.catalog_of(names[2], major)
      assert.equals("", H.catalog_diff(a, b))
      local missing = {}
      for _, want in ipairs(RICH_SEES) do if not a:find(want, 1, true) then missing[#missing + 1] = want end end
      assert.same({}, missing)
      assert.same(H.contents_of(names[1], major), H.contents_of(names[2], major))
    end)

    it("reads a database's rows alike in both (contents_of) and sees one changed row", function()
      assert.same(H.contents_of(name_a, major), H.contents_of(name_b, major))
      cb:exec("BEGIN")
      cb:exec("UPDATE t SET b = 'changed'")
      local changed = judge.contents(cb)
      cb:exec("ROLLBACK")
      assert.are_not.same(H.contents_of(name_a, major), changed)
    end)

    for _, s in ipairs(SETTINGS) do
      if (s.min or 0) > major then
        it("knows that PostgreSQL " .. major .. " has no " .. s[1] .. " (new in " .. s.min .. ")", function()
          local ok = pcall(text_with, cb, s.b)
          assert.is_false(ok)
        end)
      else
        it("sees " .. s[1], function()
          local a = s.a and text_with(ca, s.a) or base_a
          local b = text_with(cb, s.b)
          local diff = H.catalog_diff(a, b)
          assert.are_not.equal("", diff, "the judge did not see " .. s[1])
        assert.matches(s.expect, diff, 1, true)
        end)
      end
    end

    it("still reads both alike after every setting was rolled back", function()
      assert.equals("", H.catalog_diff(judge.catalog(ca), judge.catalog(cb)))
    end)
  end)
end
