-- What hangs on objects — comments, security labels, privileges — and the
-- entries about the database itself, round-tripped three ways (orch backup →
-- pg_restore 15; pg_dump -Fc → orch restore; orch → orch) on a cluster of
-- this spec's own that loads a security label provider (PostgreSQL stores
-- a label only when a provider accepts it, and Debian's server has none):
-- tests/seclabel/orch_test_seclabel.c, built here against the server's
-- headers (postgresql-server-dev-15, scripts/install-deps).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local localpg = require "orch.localpg"

local ROLES = { "orch_dec_owner", "orch_dec_a", "orch_dec_b" }

-- The decorations of a database as the server holds them, one sorted line
-- each: comments (user objects and the public schema), security labels on
-- anything, every ACL (items sorted), column ACLs and the public schema's
-- owner. Objects are named by pg_identify_object, never by oid.
local FACTS = [[
SELECT 'comment ' || (pg_identify_object(classoid, objoid, objsubid)).type || ' ' ||
       (pg_identify_object(classoid, objoid, objsubid)).identity || ' = ' || description
  FROM pg_description WHERE objoid >= 16384 OR classoid = 'pg_namespace'::regclass AND objoid = 2200
    OR classoid = 'pg_largeobject'::regclass
UNION ALL
SELECT 'label ' || provider || ' ' || coalesce((pg_identify_object(classoid, objoid, objsubid)).type || ' ' ||
       (pg_identify_object(classoid, objoid, objsubid)).identity, 'large object ' || objoid) || ' = ' || label FROM pg_seclabel
UNION ALL
SELECT 'acl ' || (pg_identify_object(x.cls, x.oid, 0)).type || ' ' || (pg_identify_object(x.cls, x.oid, 0)).identity || ' = ' ||
       (SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(x.acl) a)
  FROM (SELECT 'pg_class'::regclass AS cls, oid, relacl AS acl FROM pg_class WHERE relacl IS NOT NULL
        UNION ALL SELECT 'pg_proc'::regclass, oid, proacl FROM pg_proc WHERE proacl IS NOT NULL
        UNION ALL SELECT 'pg_type'::regclass, oid, typacl FROM pg_type WHERE typacl IS NOT NULL
        UNION ALL SELECT 'pg_namespace'::regclass, oid, nspacl FROM pg_namespace WHERE nspacl IS NOT NULL
        UNION ALL SELECT 'pg_language'::regclass, oid, lanacl FROM pg_language WHERE lanacl IS NOT NULL
        UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, oid, fdwacl FROM pg_foreign_data_wrapper WHERE fdwacl IS NOT NULL
        UNION ALL SELECT 'pg_foreign_server'::regclass, oid, srvacl FROM pg_foreign_server WHERE srvacl IS NOT NULL
        UNION ALL SELECT 'pg_largeobject'::regclass, oid, lomacl FROM pg_largeobject_metadata WHERE lomacl IS NOT NULL) x
UNION ALL
SELECT 'column acl ' || attrelid::regclass::text || '.' || attname || ' = ' ||
       (SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(attacl) a)
  FROM pg_attribute WHERE attacl IS NOT NULL
UNION ALL
SELECT 'owner schema public = ' || pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'
ORDER BY 1]]

-- The database itself: owner, encoding, locale, limits, ACL, comment,
-- labels and settings (the database's and its roles').
local DB_FACTS = [[
SELECT 'database owner=' || pg_get_userbyid(datdba) || ' encoding=' || pg_encoding_to_char(encoding) || ' collate=' || datcollate ||
       ' ctype=' || datctype || ' template=' || datistemplate || ' connlimit=' || datconnlimit ||
       ' acl=' || coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(datacl) a), 'default') ||
       ' comment=' || coalesce(shobj_description(oid, 'pg_database'), '-')
  FROM pg_database WHERE datname = current_database()
UNION ALL
SELECT 'label ' || provider || ' = ' || label FROM pg_shseclabel
  WHERE classoid = 'pg_database'::regclass AND objoid = (SELECT oid FROM pg_database WHERE datname = current_database())
UNION ALL
SELECT 'setting ' || coalesce(pg_get_userbyid(nullif(setrole, 0)), 'database') || ' ' || array_to_string(setconfig, ' | ')
  FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1]]

describe("decorations and database-level entries", function()
  local work, pg, src, dbsrc

  -- the stock tools, aimed at this spec's cluster
  local function tool(prog, argv)
    local spec = { localpg.bindir() .. "/" .. prog }
    for _, a in ipairs(argv) do spec[#spec + 1] = a end
    spec.env = { PGHOST = pg.host, PGPORT = tostring(pg.port), PGUSER = pg.user }
    spec.timeout = 300
    return sys.spawn(spec)
  end
  local function url(name) return pg:url(name) end
  local function lines(dbname, sql)
    local c <close> = pg:connect(dbname)
    local out = {}
    local res = c:query(sql)
    for _, r in ipairs(res) do out[#out + 1] = r[res.columns[1]] end
    return table.concat(out, "\n")
  end
  local function facts(dbname) return lines(dbname, FACTS) end
  local function schema(dbname)
    local r = tool("pg_dump", { "--schema-only", "-d", dbname })
    assert(r.ok, r.stderr)
    return (r.stdout:gsub("\\u?n?restrict [^\n]*\n", ""))
  end
  local counter = 0
  local function fresh(prefix)
    counter = counter + 1
    local name = string.format("%s_%d", prefix, counter)
    pg:create_database(name, { drop = true })
    return name
  end
  local function drop(name)
    local c <close> = pg:connect("postgres")
    c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(name) .. " WITH (FORCE)")
  end
  local function orch_backup(dbname, extra)
    local argv = { "backup", "--db", url(dbname), "--dir", work .. "/backups", "--json" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = H.orch(argv)
    assert.is_true(r.ok, r.stderr)
    return json.decode(r.stdout).path
  end

  setup(function()
    work = H.tmpdir()
    -- the server (running as the postgres user when we are root) loads the provider from here
    sys.chmod(work, 493)
    local bindir = localpg.bindir()
    local cfg = sys.exists(bindir .. "/pg_config") and (bindir .. "/pg_config") or "pg_config"
    local inc = sys.spawn { cfg, "--includedir-server", timeout = 30 }
    local incdir = inc.ok and inc.stdout:gsub("%s+$", "")
    if not incdir or not sys.exists(incdir .. "/postgres.h") then
      error("the test label provider needs PostgreSQL's server headers (postgres.h under " .. tostring(incdir) ..
        "): install postgresql-server-dev-15 (scripts/install-deps does)", 0)
    end
    local so = work .. "/orch_test_seclabel.so"
    local cc = sys.spawn { "cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I" .. incdir, "-o", so,
      sys.realpath("tests/seclabel/orch_test_seclabel.c"), timeout = 120 }
    assert(cc.ok, "building the label provider: " .. cc.stderr)
    sys.chmod(so, 493)
    pg = localpg.open(work .. "/pg")
    pg:init()
    local f = assert(io.open(pg.data .. "/postgresql.conf", "a"))
    f:write("\nshared_preload_libraries = '" .. so .. "'\n")
    f:close()
    pg:start()
    local c <close> = pg:connect("postgres")
    for _, r in ipairs(ROLES) do c:exec("CREATE ROLE " .. r) end
    src = fresh("decor_src")
    local s <close> = pg:connect(src)
    s:exec(H.read("tests/fixtures/kinds/decorations.sql"))
    s:exec(H.read("tests/fixtures/kinds/decorations_labels.sql"))
  end)
  teardown(function()
    if pg then pg:destroy() end
  end)

  it("the fixture really holds every decoration (the provider stores labels)", function()
    local f = facts(src)
    for _, want in ipairs { "label orch_test table deco.t = table", "label orch_test table column deco.t.secret = column: it's quoted",
        "label orch_test language plpgsql = language", "label orch_test function deco.similarity(pg_catalog.text,pg_catalog.text) = extension member",
        "comment index deco.t_pkey = a primary key's index", "comment domain constraint posint_positive on deco.posint = a domain's constraint",
        "owner schema public = orch_dec_owner", "comment schema public = public, decorated",
        "comment large object 4242 = a large object", "label orch_test large object 4242 = large object",
        "acl large object 4242 = orch_dec_a=r*/postgres postgres=rw/postgres" } do
      assert.matches(want, f, 1, true)
    end
    assert.matches("orch_dec_a=a*r*w*/orch_dec_owner", f, 1, true)
  end)

  it("orch backup -> pg_restore 15: every comment, label and privilege is back, grantors and system objects' too", function()
    local path = orch_backup(src)
    local dst = fresh("decor_pgr")
    local r = tool("pg_restore", { "-d", dst, "--exit-on-error", path })
    assert.is_true(r.ok, r.stderr)
    assert.equals(schema(src), schema(dst))
    assert.equals(facts(src), facts(dst))
    -- the chain: orch_dec_b's SELECT on deco.t was granted by orch_dec_a, who holds it WITH GRANT OPTION
    assert.matches("orch_dec_b=r/orch_dec_a", facts(dst), 1, true)
    drop(dst)
  end)

  it("pg_dump -Fc -> orch restore gives what pg_restore gives (public's owner too)", function()
    local dump = work .. "/decor.pgdump"
    assert.is_true(tool("pg_dump", { "-Fc", "-f", dump, "-d", src }).ok)
    local judge, mine = fresh("decor_judge"), fresh("decor_viaorch")
    assert.is_true(tool("pg_restore", { "-d", judge, "--exit-on-error", dump }).ok)
    local r = H.orch { "restore", dump, "--db", url(mine) }
    assert.is_true(r.ok, r.stderr)
    assert.equals(schema(judge), schema(mine))
    assert.equals(facts(judge), facts(mine))
    assert.matches("owner schema public = orch_dec_owner", facts(mine), 1, true)
    drop(judge); drop(mine)
  end)

  it("orch -> orch: everything, and the labels pg_dump leaves out (a language's, an extension member's, a system object's)", function()
    local path = orch_backup(src)
    local dst = fresh("decor_orch")
    local r = H.orch { "restore", path, "--db", url(dst) }
    assert.is_true(r.ok, r.stderr)
    assert.equals(schema(src), schema(dst))
    assert.equals(facts(src), facts(dst))
    local f = facts(dst)
    assert.matches("label orch_test function pg_catalog.pg_stat_reset() = system function", f, 1, true)
    assert.matches("label orch_test language plpgsql = language", f, 1, true)
    drop(dst)
  end)

  it("privileges on system objects and extension members are written against their initial privileges", function()
    local path = orch_backup(src)
    local list = tool("pg_restore", { "-f", "-", path })
    assert.is_true(list.ok, list.stderr)
    local sql = list.stdout
    assert.matches("GRANT EXECUTE ON FUNCTION pg_stat_reset() TO \"orch_dec_a\";", sql, 1, true)
    assert.matches("REVOKE EXECUTE ON FUNCTION pg_sleep(double precision) FROM PUBLIC;", sql, 1, true)
    assert.matches("REVOKE EXECUTE ON FUNCTION deco.show_trgm(text) FROM PUBLIC;", sql, 1, true)
    -- what initdb granted is not a change: information_schema's views stay out of the archive
    assert.is_nil(sql:find("information_schema", 1, true))
    -- the public schema's privileges are written as a change from a new database's, under its new owner
    assert.matches("GRANT CREATE,USAGE ON SCHEMA public TO \"orch_dec_a\";", sql, 1, true)
    assert.is_nil(sql:find("FROM \"pg_database_owner\"", 1, true))
  end)

  it("a public schema recreated by DROP and CREATE (a NULL ACL: no USAGE for PUBLIC) comes back without it", function()
    local name = fresh("decor_pubnull")
    local c <close> = pg:connect(name)
    c:exec("DROP SCHEMA public; CREATE SCHEMA public; COMMENT ON SCHEMA public IS 'recreated'")
    local path = orch_backup(name)
    for _, how in ipairs { "pg_restore", "orch" } do
      local dst = fresh("decor_pubnull_" .. how)
      local r = how == "orch" and H.orch { "restore", path, "--db", url(dst) } or tool("pg_restore", { "-d", dst, "--exit-on-error", path })
      assert.is_true(r.ok, r.stderr)
      assert.equals(lines(name, "SELECT array_to_string(coalesce(nspacl, acldefault('n', nspowner)), ' ') || ' ' || obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'public'"),
        lines(dst, "SELECT array_to_string(coalesce(nspacl, acldefault('n', nspowner)), ' ') || ' ' || obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'public'"))
      drop(dst)
    end
    drop(name)
  end)

  describe("the database itself", function()
    local path, dump
    setup(function()
      dbsrc = fresh("decor_db")
      local c <close> = pg:connect(dbsrc)
      local q = c:quote_ident(dbsrc)
      c:exec(table.concat({
        "COMMENT ON DATABASE " .. q .. " IS 'the database, commented'",
        "SECURITY LABEL FOR orch_test ON DATABASE " .. q .. " IS 'database label'",
        "ALTER DATABASE " .. q .. " SET work_mem = '7MB'",
        "ALTER DATABASE " .. q .. " SET search_path = app, \"My Schema\", public",
        "ALTER DATABASE " .. q .. " SET myapp.greeting = 'it''s me'",
        "ALTER ROLE orch_dec_a IN DATABASE " .. q .. " SET statement_timeout = '5s'",
        "ALTER DATABASE " .. q .. " CONNECTION LIMIT 50",
        "REVOKE TEMPORARY ON DATABASE " .. q .. " FROM PUBLIC",
        "GRANT CREATE ON DATABASE " .. q .. " TO orch_dec_a WITH GRANT OPTION",
        "CREATE TABLE kept (id int)", "INSERT INTO kept VALUES (1)",
      }, ";\n"))
      c:close()
      -- orch_dec_a passes its grant on (a grantor other than the owner)
      local a <close> = pg:connect(dbsrc)
      a:exec("SET ROLE orch_dec_a; GRANT CREATE ON DATABASE " .. q .. " TO orch_dec_b; RESET ROLE")
      path = orch_backup(dbsrc)
      dump = work .. "/db.pgdump"
      assert.is_true(tool("pg_dump", { "-Fc", "-f", dump, "-d", dbsrc }).ok)
    end)

    -- the source renamed out of the way while pg_restore -C recreates it under its own name
    local function with_source_renamed(fn)
      local c <close> = pg:connect("postgres")
      local aside = dbsrc .. "_aside"
      c:exec(string.format("ALTER DATABASE %s RENAME TO %s", c:quote_ident(dbsrc), c:quote_ident(aside)))
      local ok, err = pcall(fn, aside)
      c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(dbsrc) .. " WITH (FORCE)")
      c:exec(string.format("ALTER DATABASE %s RENAME TO %s", c:quote_ident(aside), c:quote_ident(dbsrc)))
      if not ok then error(err, 0) end
    end

    it("orch's archive lists them as pg_dump's does, and pg_restore -C recreates the database with all of them", function()
      local l = tool("pg_restore", { "-l", "-C", path })
      assert.is_true(l.ok, l.stderr)
      for _, e in ipairs { "DATABASE - " .. dbsrc, "COMMENT - DATABASE " .. dbsrc, "SECURITY LABEL - DATABASE " .. dbsrc,
          "ACL - DATABASE " .. dbsrc, "DATABASE PROPERTIES - " .. dbsrc } do
        assert.matches(e, l.stdout, 1, true)
      end
      local want = lines(dbsrc, DB_FACTS)
      assert.matches("setting orch_dec_a statement_timeout=5s", want, 1, true)
      assert.matches("orch_dec_b=C/orch_dec_a", want, 1, true)
      with_source_renamed(function()
        for _, archive in ipairs { dump, path } do
          local r = tool("pg_restore", { "-C", "-d", "postgres", "--exit-on-error", archive })
          assert.is_true(r.ok, archive .. ": " .. r.stderr)
          assert.equals(want, lines(dbsrc, DB_FACTS))
          assert.equals("1", lines(dbsrc, "SELECT count(*)::text FROM kept"))
          drop(dbsrc)
        end
      end)
    end)

    it("pg_restore without -C leaves them out; so does orch restore into an existing database, naming each one", function()
      for _, archive in ipairs { path, dump } do
        local a, b = fresh("decor_db_pgr"), fresh("decor_db_in")
        local before = lines(b, DB_FACTS)
        assert.is_true(tool("pg_restore", { "-d", a, "--exit-on-error", archive }).ok)
        local r = H.orch { "restore", archive, "--db", url(b), "--no-manifest" }
        assert.is_true(r.ok, r.stderr)
        assert.equals(before, lines(b, DB_FACTS))
        assert.equals(lines(a, DB_FACTS):gsub(a, "X"), lines(b, DB_FACTS):gsub(b, "X"))
        assert.matches("database settings NOT applied", r.stdout, 1, true)
        -- each statement, rewritten for the target (identifiers compared without their quotes)
        local out = r.stdout:gsub('"', "")
        for _, st in ipairs { "COMMENT ON DATABASE " .. b .. " IS 'the database, commented';",
            "ALTER DATABASE " .. b .. " SET work_mem TO '7MB';",
            "ALTER ROLE orch_dec_a IN DATABASE " .. b .. " SET statement_timeout TO '5s';" } do
          assert.matches(st, out, 1, true)
        end
        -- the source database (the archive's statements name it) was not touched
        assert.matches("comment=the database, commented", lines(dbsrc, DB_FACTS), 1, true)
        drop(a); drop(b)
      end
    end)

    it("orch restore --swap creates the database as the archive's was, with its comment, label, privileges and settings", function()
      local want = lines(dbsrc, DB_FACTS)
      for _, archive in ipairs { path, dump } do
        local target = fresh("decor_db_swap")
        local r = H.orch { "restore", archive, "--db", url(target), "--swap", "--no-manifest" }
        assert.is_true(r.ok, r.stderr)
        assert.matches("applied to the new database", r.stdout, 1, true)
        assert.equals(want, lines(target, DB_FACTS))
        assert.equals("1", lines(target, "SELECT count(*)::text FROM kept"))
        local old = r.stdout:match("kept as (%S+)")
        drop(old); drop(target)
      end
    end)
  end)
end)
