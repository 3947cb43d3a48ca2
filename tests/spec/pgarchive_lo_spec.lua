-- orch.pgarchive and orch restore with large objects and tablespaces, with
-- the stock pg_restore 15 and 17 as judges (split from pgarchive_spec so
-- the two run side by side).
local H = require "helper"
local A = require "orch.pgarchive"
local db = require "orch.db"
local sys = require "orch.sys"

-- Large objects (issue 9 section 1) and tablespaces: orch's writer and
-- reader for BLOBS blocks, and orch restore of stock archives that carry
-- them, judged by the server's own catalogs.
describe("orch.pgarchive large objects", function()
  local url, name, c, dir
  -- every large object as oid:owner:acl:md5(contents):comment
  local LO_STATE = [[SELECT coalesce(string_agg(m.oid || ':' || pg_get_userbyid(m.lomowner) || ':' || coalesce(m.lomacl::text, '-') || ':' ||
      md5(lo_get(m.oid)) || ':' || coalesce(obj_description(m.oid, 'pg_largeobject'), '-'), ' ' ORDER BY m.oid), 'none')
    FROM pg_largeobject_metadata m]]
  local function lo_state(dbname)
    local d <close> = H.connect(dbname)
    return d:value(LO_STATE)
  end
  local oids = { 7001, 7002, 7003, 7004, 7010, 7011 }

  setup(function()
    url, name = H.fresh_db("lo")
    c = db.connect(url)
    c:exec("SET client_min_messages = warning")
    local admin <close> = H.connect()
    for _, r in ipairs { "orch_lo_owner", "orch_lo_reader" } do
      H.ensure_role(admin, r)
    end
    c:exec([[
      SELECT lo_from_bytea(7001, 'a small one');
      SELECT lo_from_bytea(7002, '');
      SELECT lo_from_bytea(7003, convert_to(string_agg(md5(g::text), '' ORDER BY g), 'UTF8')) FROM generate_series(1, 120000) g;
      SELECT lo_from_bytea(7004, 'owned by someone else');
      ALTER LARGE OBJECT 7004 OWNER TO orch_lo_owner;
      GRANT SELECT ON LARGE OBJECT 7001 TO orch_lo_reader;
      COMMENT ON LARGE OBJECT 7001 IS 'the first, with a comment';
      SELECT lo_from_bytea(7010, 'group a');
      SELECT lo_from_bytea(7011, 'group b');
      GRANT SELECT, UPDATE ON LARGE OBJECT 7010 TO orch_lo_reader;
      GRANT SELECT, UPDATE ON LARGE OBJECT 7011 TO orch_lo_reader;]])
    dir = H.tmpdir()
  end)
  teardown(function()
    c:close()
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  -- An archive in the shape the catalog writes (see w:copy_blobs): BLOB
  -- entries with owners, a COMMENT and an ACL, then the BLOBS block.
  local function write_lo_archive(path, compression, with_blob_entries)
    local w = A.writer(path, { compression = compression, dbname = name, server_version = "15", dumper_version = "orch test", overwrite = true })
    w:entry { id = 1, tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = "SET client_encoding = 'UTF8';\n" }
    w:entry { id = 2, tag = "STDSTRINGS", desc = "STDSTRINGS", section = "pre-data", defn = "SET standard_conforming_strings = 'on';\n" }
    local id = 10
    if with_blob_entries then
      for _, row in ipairs(c:query("SELECT oid::text AS oid, pg_get_userbyid(lomowner) AS owner FROM pg_largeobject_metadata ORDER BY oid")) do
        id = id + 1
        w:entry { id = id, tag = row.oid, desc = "BLOB", section = "pre-data", owner = row.owner,
                  defn = "SELECT pg_catalog.lo_create('" .. row.oid .. "');\n", drop = "SELECT pg_catalog.lo_unlink('" .. row.oid .. "');\n" }
        if row.oid == "7001" then
          w:entry { id = 100, tag = "LARGE OBJECT 7001", desc = "COMMENT", section = "none", owner = "postgres", deps = { id },
                    defn = "COMMENT ON LARGE OBJECT 7001 IS 'the first, with a comment';\n" }
          w:entry { id = 101, tag = "LARGE OBJECT 7001", desc = "ACL", section = "none", owner = "postgres", deps = { id },
                    defn = "GRANT SELECT ON LARGE OBJECT 7001 TO orch_lo_reader;\n" }
        elseif row.oid == "7010" or row.oid == "7011" then
          w:entry { id = 100 + id, tag = "LARGE OBJECT " .. row.oid, desc = "ACL", section = "none", owner = "postgres", deps = { id },
                    defn = "GRANT SELECT,UPDATE ON LARGE OBJECT " .. row.oid .. " TO orch_lo_reader;\n" }
        end
      end
    end
    w:entry { id = 500, tag = "BLOBS", desc = "BLOBS", section = "data", had_dumper = true }
    w:write_toc()
    c:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    -- an iterator, as the catalog may stream the oids
    local i = 0
    local n, bytes = w:copy_blobs(c, 500, function() i = i + 1; return oids[i] end)
    c:exec("COMMIT")
    local info = w:close()
    return n, bytes, info
  end

  it("w:copy_blobs writes a BLOBS block from real large objects that stock pg_restore 15 (gzip, none) and 17 (lz4, zstd) restore with contents", function()
    local want = lo_state(name)
    assert.matches("7003:postgres:%-:", want)
    for _, z in ipairs { "gzip", "none", "lz4", "zstd" } do
      local path = dir .. "/lo-" .. z .. ".dump"
      local n, bytes = write_lo_archive(path, z, true)
      assert.equals(#oids, n)
      assert.equals(c:value("SELECT sum(length(lo_get(oid)))::bigint FROM pg_largeobject_metadata"), bytes)
      local _, target = H.fresh_db("lo_pr" .. z)
      local r = (z == "gzip" or z == "none") and H.pgtool("pg_restore", { "-d", target, "--exit-on-error", path })
        or H.pg17_restore(path, target)
      assert.is_true(r.ok, z .. ": " .. (r.stderr or ""))
      assert.equals(want, lo_state(target), z)
      H.drop_db(target)
      local a <close> = A.open(path)
      local v = a:verify()
      assert.equals(#oids, v.large_objects)
    end
    -- an array of oids works too, and an oid that does not exist is named
    local w = A.writer(dir .. "/lo-missing.dump", { overwrite = true })
    w:entry { id = 1, tag = "BLOBS", desc = "BLOBS", section = "data", had_dumper = true }
    w:write_toc()
    c:exec("BEGIN")
    local ok, e = pcall(w.copy_blobs, w, c, 1, { 7001, 424242 })
    c:exec("ROLLBACK")
    assert.is_false(ok)
    assert.matches("large object 424242", tostring(e))
    pcall(w.close, w)
    assert.has_error(function()
      local w2 <close> = A.writer(dir .. "/lo-notx.dump", { overwrite = true })
      w2:entry { id = 1, tag = "BLOBS", desc = "BLOBS", section = "data", had_dumper = true }
      w2:write_toc()
      w2:copy_blobs(c, 1, { 7001 })
    end, "copy_blobs() needs the connection inside a transaction (lo_open works only in one)")
  end)

  it("r:restore_blobs writes each object in bounded pieces, creating them when no entry does, and refuses a corrupt one by oid and entry", function()
    local path = dir .. "/lo-bare.dump"
    write_lo_archive(path, "zstd", false)
    local turl, target = H.fresh_db("lo_rb")
    local t <close> = db.connect(turl)
    local a <close> = A.open(path)
    t:exec("BEGIN")
    local n, bytes = a:restore_blobs(t, 500, { create = true })
    t:exec("COMMIT")
    assert.equals(#oids, n)
    assert.is_true(bytes > 3000000)
    assert.equals(c:value("SELECT string_agg(oid || ':' || md5(lo_get(oid)), ' ' ORDER BY oid) FROM pg_largeobject_metadata"),
      t:value("SELECT string_agg(oid || ':' || md5(lo_get(oid)), ' ' ORDER BY oid) FROM pg_largeobject_metadata"))
    t:close()
    H.drop_db(target)
    -- one byte changed inside the big object's compressed stream
    for _, z in ipairs { "gzip", "lz4", "zstd" } do
      local p = dir .. "/lo-k-" .. z .. ".dump"
      write_lo_archive(p, z, false)
      local good = H.read(p)
      local at = #good // 2
      local bad = H.write(dir .. "/lo-bad.dump", good:sub(1, at - 1) .. string.char((good:byte(at) + 0x33) % 256) .. good:sub(at + 1))
      local ok, e = pcall(function()
        local b <close> = A.open(bad)
        return b:verify()
      end)
      assert.is_false(ok, z)
      assert.matches("entry 500 %(BLOBS BLOBS%)", tostring(e))
      assert.matches("large object 7003", tostring(e))
    end
  end)

  it("orch restore of stock pg_dump -Fc archives (15: BLOB entries, 17: BLOB METADATA groups) gives large objects back with contents, owners, privileges and comments", function()
    local want = lo_state(name)
    for _, v in ipairs { "15", "17" } do
      local path = dir .. "/stock-lo" .. v .. ".dump"
      local tool = v == "15" and H.pgtool or H.pg17tool
      local r = tool("pg_dump", { "-Fc", "-f", path, "-d", name })
      assert.is_true(r.ok, r.stderr)
      if v == "17" then   -- the two objects with one owner and one ACL form a group
        local a <close> = A.open(path)
        local tags = {}
        for _, e in ipairs(a:entries()) do tags[#tags + 1] = e.desc .. " " .. e.tag end
        assert.matches("ACL LARGE OBJECTS 7010%.%.7011", table.concat(tags, "\n"))
      end
      local turl, target = H.fresh_db("lo_stock" .. v)
      local rr = H.orch { "restore", path, "--db", turl }
      assert.is_true(rr.ok, rr.stderr)
      assert.equals(want, lo_state(target), "pg_dump " .. v)
      H.drop_db(target)
    end
  end)

  it("orch restore honours an entry's tablespace (SET default_tablespace, as pg_restore does)", function()
    local pg = H.cluster()
    local parent = H.tmpdir()
    sys.chmod(parent, 457)   -- 0711: the server's OS user must reach the directory inside
    local tsdir = parent .. "/ts"
    assert(sys.mkdir_p(tsdir, 448))
    if pg.os_user then sys.chown(tsdir, pg.os_user, true) end
    local admin <close> = H.connect()
    local ts = "orch_ts_" .. sys.getpid()
    admin:exec(string.format("CREATE TABLESPACE %s LOCATION '%s'", ts, tsdir))
    local surl, src = H.fresh_db("ts_src")
    local turl, target = H.fresh_db("ts_dst")
    local ok, err = pcall(function()
      local s <close> = db.connect(surl)
      s:exec(string.format([[CREATE TABLE placed (id int PRIMARY KEY USING INDEX TABLESPACE %s, v text) TABLESPACE %s;
        CREATE TABLE plain (id int); INSERT INTO placed VALUES (1, 'x'); CREATE INDEX placed_v ON placed (v) TABLESPACE %s]], ts, ts, ts))
      local path = dir .. "/ts.dump"
      local r = H.pgtool("pg_dump", { "-Fc", "-f", path, "-d", src })
      assert.is_true(r.ok, r.stderr)
      local rr = H.orch { "restore", path, "--db", turl }
      assert.is_true(rr.ok, rr.stderr)
      local t <close> = db.connect(turl)
      local q = "SELECT string_agg(c.relname || '=' || coalesce(t.spcname, 'default'), ' ' ORDER BY c.relname) FROM pg_class c " ..
        "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace " ..
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
      assert.equals(string.format("placed=%s placed_pkey=%s placed_v=%s plain=default", ts, ts, ts), t:value(q))
      assert.equals(1, t:value("SELECT count(*) FROM placed"))
      -- --no-tablespaces puts everything in the target's default, as pg_restore's option does
      local nurl, nt = H.fresh_db("ts_none")
      local rn = H.orch { "restore", path, "--db", nurl, "--no-tablespaces" }
      local placed
      if rn.ok then
        local n <close> = db.connect(nurl)
        placed = n:value(q)
      end
      H.drop_db(nt)
      assert.is_true(rn.ok, rn.stderr)
      assert.equals("placed=default placed_pkey=default placed_v=default plain=default", placed)
    end)
    H.drop_db(src)
    H.drop_db(target)
    admin:exec("DROP TABLESPACE IF EXISTS " .. ts)
    if not ok then error(err, 0) end
  end)
end)
