-- orch.pgarchive: pg_dump's custom format written and read by orch, with
-- the stock pg_restore and pg_dump as independent judges.
local H = require "helper"
local A = require "orch.pgarchive"
local db = require "orch.db"
local sys = require "orch.sys"

-- A small archive in the shape of the format doc's section 7, with data
-- streamed by COPY from a real table that carries awkward values.
local function build_archive(path, src_conn, opts)
  local w = A.writer(path, { compression = opts and opts.compression, level = opts and opts.level or -1, dbname = "src", server_version = "15",
                             dumper_version = "orch test", overwrite = true })
  local E = {
    { id = 1, tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = "SET client_encoding = 'UTF8';\n" },
    { id = 2, tag = "STDSTRINGS", desc = "STDSTRINGS", section = "pre-data", defn = "SET standard_conforming_strings = 'on';\n" },
    { id = 3, tag = "SEARCHPATH", desc = "SEARCHPATH", section = "pre-data", defn = "SELECT pg_catalog.set_config('search_path', '', false);\n" },
    { id = 4, tag = "s", desc = "SCHEMA", section = "pre-data", defn = "CREATE SCHEMA s;\n", drop = "DROP SCHEMA s;\n" },
    { id = 5, tag = "t", desc = "TABLE", section = "pre-data", namespace = "s", tablespace = "", tableam = "heap",
      defn = "CREATE TABLE s.t (\n    id integer NOT NULL,\n    note text\n);\n", drop = "DROP TABLE s.t;\n", deps = { 4 } },
    { id = 6, tag = "t", desc = "TABLE DATA", section = "data", namespace = "s", had_dumper = true,
      copy = "COPY s.t (id, note) FROM stdin;\n", deps = { 5 } },
    { id = 7, tag = "t t_pkey", desc = "CONSTRAINT", section = "post-data", namespace = "s", tablespace = "",
      defn = "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n", drop = "ALTER TABLE ONLY s.t DROP CONSTRAINT t_pkey;\n", deps = { 5 } },
  }
  for _, e in ipairs(E) do w:entry(e) end
  w:write_toc()
  local rows = w:copy_table(src_conn, 6, "COPY " .. (opts and opts.from or "public.src") .. " (id, note) TO STDOUT")
  return w:close(), rows
end

describe("orch.pgarchive", function()
  local url, name, c, dir
  setup(function()
    url, name = H.fresh_db("arc")
    c = db.connect(url)
    c:exec("SET client_min_messages = warning")
    c:exec([[CREATE TABLE src (id int, note text);
      INSERT INTO src VALUES (1, E'tab\there'), (2, E'new\nline'), (3, E'back\\slash'), (4, '\N'), (5, NULL), (6, 'unicode é ✓');
      INSERT INTO src SELECT g, repeat(md5(g::text), 50) FROM generate_series(7, 20000) g;
      CREATE TABLE small (id int, note text);
      INSERT INTO small SELECT id, note FROM src WHERE id <= 6;
      INSERT INTO small SELECT g, repeat(md5(g::text), g % 7) FROM generate_series(7, 3000) g;]])
    dir = H.tmpdir()
  end)
  teardown(function()
    c:close()
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  local function restored_checksum(dbname)
    local d <close> = H.cluster():connect(dbname)
    return d:value("SELECT md5(string_agg(id || ':' || coalesce(note, '<null>'), '|' ORDER BY id)) FROM s.t")
  end
  local function source_checksum(t)
    return c:value("SELECT md5(string_agg(id || ':' || coalesce(note, '<null>'), '|' ORDER BY id)) FROM " .. (t or "src"))
  end

  it("writes an archive that pg_restore lists and restores (file, stdin, -j 2), with offsets", function()
    local path = dir .. "/a.dump"
    local info, rows = build_archive(path, c)
    assert.equals(20000, rows)
    assert.is_true(info.offsets)
    assert.equals(sys.stat(path).size, info.bytes)
    local l = H.pgtool("pg_restore", { "-l", path })
    assert.is_true(l.ok, l.stderr)
    assert.matches("TABLE DATA s t", l.stdout, 1, true)
    for i, mode in ipairs { "file", "stdin", "parallel" } do
      local target_url, target = H.fresh_db("arc_r" .. i)
      local argv = { "-d", target, "--exit-on-error" }
      local opts = {}
      if mode == "file" then argv[#argv + 1] = path
      elseif mode == "parallel" then argv[#argv + 1] = "-j"; argv[#argv + 1] = "2"; argv[#argv + 1] = path
      else opts.stdin = H.read(path) end
      local r = H.pgtool("pg_restore", argv, opts)
      assert.is_true(r.ok, mode .. ": " .. r.stderr)
      assert.equals(source_checksum(), restored_checksum(target), mode)
      H.drop_db(target)
    end
  end)

  it("writes to a pipe without offsets, and pg_restore reads that too", function()
    local f = H.write(dir .. "/pipe.lua", string.format([[
local A = require 'orch.pgarchive'
local c <close> = require('orch.db').connect(%q)
local w = A.writer('-', { level = 6 })
w:entry { id = 1, tag = 'ENCODING', desc = 'ENCODING', section = 'pre-data', defn = "SET client_encoding = 'UTF8';\n" }
w:entry { id = 2, tag = 'STDSTRINGS', desc = 'STDSTRINGS', section = 'pre-data', defn = "SET standard_conforming_strings = 'on';\n" }
w:entry { id = 3, tag = 'p', desc = 'TABLE', section = 'pre-data', namespace = 'public', defn = 'CREATE TABLE public.p (id integer, note text);\n', drop = 'DROP TABLE public.p;\n' }
w:entry { id = 4, tag = 'p', desc = 'TABLE DATA', section = 'data', namespace = 'public', had_dumper = true, copy = 'COPY public.p (id, note) FROM stdin;\n', deps = { 3 } }
w:write_toc()
w:copy_table(c, 4, 'COPY public.src (id, note) TO STDOUT')
local info = w:close()
io.stderr:write(tostring(info.offsets), '\n')
]], url))
    local out = dir .. "/piped.dump"
    local r = sys.spawn { "sh", "-c", string.format("%s %s | cat > %s", H.orch_bin, f, out) }
    assert.is_true(r.ok, r.stderr)
    assert.equals("false\n", r.stderr)
    local _, target = H.fresh_db("arc_pipe")
    local pr = H.pgtool("pg_restore", { "-d", target, "--exit-on-error", out })
    assert.is_true(pr.ok, pr.stderr)
    local d <close> = H.cluster():connect(target)
    assert.equals(20000, d:value("SELECT count(*) FROM public.p"))
    d:close()
    H.drop_db(target)
  end)

  it("reads stock pg_dump -Fc archives (gzip and -Z 0, file and pipe) and streams their data", function()
    for _, z in ipairs { "6", "0" } do
      local path = dir .. "/stock" .. z .. ".dump"
      local r = H.pgtool("pg_dump", { "-Fc", "-Z", z, "-t", "src", "-f", path, "-d", name })
      assert.is_true(r.ok, r.stderr)
      local a <close> = A.open(path)
      local h = a:header()
      assert.equals("1.14", h.version)
      local data_id
      for _, e in ipairs(a:entries()) do if e.desc == "TABLE DATA" and e.tag == "src" then data_id = e.id end end
      assert.is_truthy(data_id)
      local parts = {}
      a:read_block(data_id, function(chunk) parts[#parts + 1] = chunk end)
      local text = table.concat(parts)
      assert.matches("^1\ttab\\there\n", text)
      assert.matches("\\%.\n\n\n$", text)
      local v = a:verify()
      assert.equals(1, v.blocks)
      -- copy it into a table of ours through the reader
      c:exec("DROP TABLE IF EXISTS back; CREATE TABLE back (id int, note text)")
      a:copy_into(c, data_id, "COPY public.back (id, note) FROM stdin")
      assert.equals(c:value("SELECT md5(string_agg(id || ':' || coalesce(note, '<null>'), '|' ORDER BY id)) FROM src"),
        c:value("SELECT md5(string_agg(id || ':' || coalesce(note, '<null>'), '|' ORDER BY id)) FROM back"))
    end
    -- from a pipe: blocks found by walking forward
    local f = H.write(dir .. "/readpipe.lua", [[
local a = require('orch.pgarchive').open('-')
local n = 0
for _, e in ipairs(a:entries()) do if e.had_dumper then n = n + a:read_block(e.id) end end
print(n)
]])
    local r = sys.spawn { "sh", "-c", string.format("cat %s/stock6.dump | %s %s", dir, H.orch_bin, f) }
    assert.is_true(r.ok, r.stderr)
    assert.is_true(tonumber(r.stdout) > 600000)
  end)

  it("refuses damaged and foreign files with a clear error", function()
    local path = dir .. "/good.dump"
    build_archive(path, c)
    local good = H.read(path)
    local function check(bytes, pattern)
      local p = H.write(dir .. "/bad.dump", bytes)
      local ok, e = pcall(function()
        local a <close> = A.open(p)
        return a:verify()
      end)
      assert.is_false(ok, "accepted: " .. pattern)
      assert.matches(pattern, tostring(e))
    end
    check("hello, I am not an archive", "not a pg_dump custom%-format archive")
    check(good:sub(1, 300), "truncated")
    check(good:sub(1, #good - 100), "truncated")
    local mid = #good - 2000
    check(good:sub(1, mid - 1) .. string.char((good:byte(mid) + 1) % 256) .. good:sub(mid + 1), "corrupt")
    -- a 1.15 header with an algorithm byte orch does not know
    check(good:sub(1, 6) .. "\15" .. good:sub(8, 11) .. "\7" .. good:sub(17), "unknown compression algorithm 7")
  end)

  -- Archives built byte by byte (format doc sections 2-5), for what no
  -- writer produces: 8-byte integers, lying lengths and counts.
  local function int(v, size)
    local m, t = math.abs(v), { string.char(v < 0 and 1 or 0) }
    for _ = 1, size or 4 do t[#t + 1] = string.char(m % 256); m = m // 256 end
    return table.concat(t)
  end
  local function str(v, size) return v == nil and int(-1, size) or int(#v, size) .. v end
  local function crafted(o)
    local n = o.intsize or 4
    local h = { "PGDMP", string.char(1, o.minor or 14, 0, n, 8, 1), int(0, n) }
    for _ = 1, 7 do h[#h + 1] = int(1, n) end
    h[#h + 1] = str("db", n) .. str("15", n) .. str(o.dumper or "crafted", n) .. int(o.count or 1, n)
    -- one TABLE DATA entry, id 7, data not compressed, offset not set
    h[#h + 1] = int(o.id or 7, n) .. int(1, n) .. str("0", n) .. str("0", n) .. str("t", n) .. str("TABLE DATA", n) .. int(3, n)
    h[#h + 1] = str(nil, n) .. str(nil, n) .. str("COPY public.t (a) FROM stdin;\n", n) .. str("public", n) .. str(nil, n) .. str(nil, n)
    h[#h + 1] = str("postgres", n) .. str("false", n) .. str(nil, n) .. "\1" .. string.rep("\0", 8)
    h[#h + 1] = "\1" .. int(o.id or 7, n) .. int(#(o.data or "1\n\\.\n\n\n"), n) .. (o.data or "1\n\\.\n\n\n") .. int(0, n)
    return table.concat(h)
  end
  local function refused(bytes, pattern)
    local p = H.write(dir .. "/crafted.dump", bytes)
    local ok, e = pcall(function()
      local a <close> = A.open(p)
      return a:verify()
    end)
    assert.is_false(ok, "accepted, expected: " .. pattern)
    assert.matches(pattern, tostring(e))
    return tostring(e)
  end

  it("reads 8-byte integers, and refuses values that do not fit in 32 bits as pg_restore would (issue 10)", function()
    for _, n in ipairs { 4, 8 } do
      local a <close> = A.open(H.write(dir .. "/int" .. n .. ".dump", crafted { intsize = n }))
      local parts = {}
      assert.equals(7, a:entries()[1].id)
      a:read_block(7, function(c) parts[#parts + 1] = c end)
      assert.equals("1\n\\.\n\n\n", table.concat(parts))
    end
    local e = refused(crafted { intsize = 8, id = (1 << 32) + 7 }, "integer 4294967303 at byte %d+ in TOC entry 1 of 1 .- does not fit in 32 bits")
    assert.matches("crafted.dump", e)
    refused(crafted { intsize = 8, id = 1 << 62 }, "does not fit in 32 bits")
  end)

  it("bounds every allocation by what the file holds: lying counts and lengths are refused before memory is taken (issue 10)", function()
    local before = collectgarbage("count")
    assert.equals(76, #crafted { dumper = "x" }:sub(1, 76))
    local e = refused(crafted { count = (1 << 31) - 1, dumper = "x" }:sub(1, 76), "claims 2147483647 entries, more than the %d+ bytes after it can hold")
    assert.matches("truncated or corrupt", e)
    assert.is_true(collectgarbage("count") - before < 4096, "the reader allocated for the claimed count")
    -- a string claiming 2 GB in a file of a few hundred bytes
    local good = crafted {}
    local at = good:find("COPY public", 1, true) - 5
    refused(good:sub(1, at - 1) .. int((1 << 31) - 1) .. good:sub(at + 5), "a string of 2147483647 bytes at byte %d+ in the TOC entry 7 %(TABLE DATA t%) .- runs past the end of the file")
    -- a chunk claiming more bytes than the file has: named with its entry and offset
    refused(crafted { data = "x" }:sub(1, -6) .. int(1000) .. "x", "block of entry 7 %(TABLE DATA public.t%)")
  end)


  -- ------------------------------------------------------------ compression (issue 9 section 5)
  local function block_text(path, id)
    local a <close> = A.open(path)
    local parts = {}
    a:read_block(id, function(chunk) parts[#parts + 1] = chunk end)
    return table.concat(parts), a:header()
  end

  it("writes none, gzip, lz4 and zstd archives that orch and pg_restore 17 read back identically; pg_restore 15 refuses lz4/zstd (1.15) with its own message", function()
    local copy = {}
    c:copy_out("COPY public.small (id, note) TO STDOUT", function(chunk) copy[#copy + 1] = chunk end)
    local expect = table.concat(copy) .. "\\.\n\n\n"
    for _, z in ipairs { "none", "gzip", "lz4", "zstd" } do
      local path = dir .. "/c-" .. z .. ".dump"
      local info = build_archive(path, c, { compression = z, from = "public.small" })
      local version = (z == "lz4" or z == "zstd") and "1.15" or "1.14"
      assert.equals(z, info.compression)
      assert.equals(version, info.version)
      local text, h = block_text(path, 6)
      assert.equals(z, h.compression)
      assert.equals(version, h.version)
      assert.is_true(text == expect, z .. ": the block does not read back as the COPY output")
      do  -- orch writes lz4/zstd frames with content checksums
        local a <close> = A.open(path)
        assert.equals(z == "none" and 1 or 0, a:verify().unchecked_streams, z)
      end
      local _, target = H.fresh_db("arc_c" .. z)
      local r = H.pg17_restore(path, target)
      assert.is_true(r.ok, z .. ": " .. (r.stderr or ""))
      assert.equals(source_checksum("small"), restored_checksum(target), z)
      H.drop_db(target)
      local r15 = H.pgtool("pg_restore", { "-l", path })
      if version == "1.15" then
        assert.is_false(r15.ok)
        assert.matches("unsupported version %(1%.15%) in file header", r15.stderr)
      else
        assert.is_true(r15.ok, r15.stderr)
      end
    end
    -- explicit levels
    for _, zl in ipairs { { "zstd", 19 }, { "lz4", 12 }, { "gzip", 1 } } do
      build_archive(dir .. "/lvl.dump", c, { compression = zl[1], level = zl[2], from = "public.small" })
      assert.is_true(block_text(dir .. "/lvl.dump", 6) == expect, zl[1] .. ":" .. zl[2])
    end
    assert.has_error(function() A.writer(dir .. "/bad.dump", { compression = "lz4", level = 13 }) end, "lz4 compression level must be 1..12 (got 13)")
    assert.has_error(function() A.writer(dir .. "/bad.dump", { compression = "brotli" }) end)
  end)

  it("refuses corrupt lz4 and zstd blocks like corrupt zlib ones, naming the entry", function()
    for _, z in ipairs { "gzip", "lz4", "zstd" } do
      local path = dir .. "/k-" .. z .. ".dump"
      build_archive(path, c, { compression = z, from = "public.small" })
      local good = H.read(path)
      for _, back in ipairs { 1500, 9000 } do
        local at = #good - back
        local p = H.write(dir .. "/k-bad.dump", good:sub(1, at - 1) .. string.char((good:byte(at) + 0x55) % 256) .. good:sub(at + 1))
        local ok, e = pcall(function()
          local a <close> = A.open(p)
          return a:verify()
        end)
        assert.is_false(ok, z .. " accepted a changed byte")
        assert.matches("entry 6 %(TABLE DATA s%.t%)", tostring(e))
        assert.matches("corrupt", tostring(e))
      end
    end
  end)

  it("reads pg_dump 17's archives (1.16: relkind, BLOB METADATA, BLOBS) with gzip, none, lz4 and zstd", function()
    c:exec([[SELECT lo_from_bytea(0, convert_to(repeat('large object ', 10000), 'UTF8')) FROM generate_series(1, 2)]])
    local los = {}
    for _, row in ipairs(c:query("SELECT oid::text AS oid, encode(lo_get(oid), 'hex') AS hex FROM pg_largeobject_metadata")) do
      los[row.oid] = row.hex
    end
    for _, z in ipairs { "gzip", "none", "lz4", "zstd" } do
      local path = dir .. "/pg17-" .. z .. ".dump"
      local r = H.pg17tool("pg_dump", { "-Fc", "-Z", z, "-b", "-t", "small", "-f", path, "-d", name })
      assert.is_true(r.ok, r.stderr)
      local a <close> = A.open(path)
      local h = a:header()
      assert.equals("1.16", h.version)
      assert.equals(z, h.compression)
      local byd = {}
      for _, e in ipairs(a:entries()) do byd[e.desc] = e end
      assert.equals(string.byte("r"), byd.TABLE.relkind)
      assert.is_truthy(byd["BLOB METADATA"])
      local got, cur = {}, nil
      a:read_block(byd.BLOBS.id, function(chunk, oid)
        if chunk == "" then cur = {}; got[tostring(oid)] = cur end
        cur[#cur + 1] = chunk
      end)
      for oid, hex in pairs(los) do
        assert.equals(hex, (table.concat(got[oid] or {}):gsub(".", function(ch) return string.format("%02x", ch:byte()) end)), z .. ": large object " .. oid)
      end
      c:exec("DROP TABLE IF EXISTS back; CREATE TABLE back (id int, note text)")
      a:copy_into(c, byd["TABLE DATA"].id, "COPY public.back (id, note) FROM stdin")
      assert.equals(source_checksum("small"), c:value("SELECT md5(string_agg(id || ':' || coalesce(note, '<null>'), '|' ORDER BY id)) FROM back"))
      local v = a:verify()
      assert.equals(2, v.blocks)
      assert.is_true(v.large_objects >= 2)
      -- pg_dump 17 writes lz4/zstd frames without content checksums: only zlib's vouch for the bytes
      assert.equals(z == "gzip" and 0 or 1 + v.large_objects, v.unchecked_streams, z)
      local bv = H.orch { "verify", path, "--no-manifest" }
      assert.equals(z == "gzip" and 0 or 1, bv.code, z .. ": " .. bv.stderr)
    end
    c:exec("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
  end)

  it("orch backup --compress METHOD[:LEVEL] | -Z N: 1.15 for lz4/zstd, 1.14 otherwise; orch restore reads each back identically", function()
    local cases = { { { "--compress", "zstd:5" }, "zstd", "1.15" }, { { "--compress", "lz4" }, "lz4", "1.15" },
      { { "--compress", "gzip:3" }, "gzip", "1.14" }, { { "--compress", "none" }, "none", "1.14" },
      { { "-Z", "0" }, "none", "1.14" }, { {}, "gzip", "1.14" } }
    local curl, cname = H.fresh_db("arc_clisrc")
    local cc <close> = db.connect(curl)
    cc:exec([[CREATE TABLE notes (id int PRIMARY KEY, body text, at date);
      INSERT INTO notes SELECT g, repeat(md5(g::text), g % 9), DATE '2024-02-13' + g FROM generate_series(1, 3000) g]])
    local want = H.contents_of(cname)
    for i, case in ipairs(cases) do
      local out = dir .. "/cli" .. i .. ".dump"
      local argv = { "backup", "--db", curl, "--output", out }
      for _, a in ipairs(case[1]) do argv[#argv + 1] = a end
      local r = H.orch(argv)
      assert.is_true(r.ok, table.concat(case[1], " ") .. ": " .. r.stderr)
      local a <close> = A.open(out)
      assert.equals(case[2], a:header().compression, table.concat(case[1], " "))
      assert.equals(case[3], a:header().version, table.concat(case[1], " "))
      local turl, target = H.fresh_db("arc_cli" .. i)
      local rr = H.orch { "restore", out, "--db", turl }
      assert.is_true(rr.ok, rr.stderr)
      assert.same(want, H.contents_of(target))
      H.drop_db(target)
      if case[2] == "zstd" then
        local r15 = H.pgtool("pg_restore", { "-l", out })
        assert.is_false(r15.ok)
        assert.matches("pg_restore: error: unsupported version %(1%.15%) in file header", r15.stderr)
      end
    end
    cc:close()
    H.drop_db(cname)
    local bad = H.orch { "backup", "--db", curl, "--output", dir .. "/never.dump", "--compress", "zstd:30" }
    assert.equals(2, bad.code)
    assert.matches("zstd levels are 1%-22", bad.stderr)
    assert.is_nil(sys.stat(dir .. "/never.dump"))
  end)

  it("aborts a restore COPY from a corrupt block, leaving the target table empty and the connection usable", function()
    local path = dir .. "/good2.dump"
    build_archive(path, c)
    local good = H.read(path)
    local mid = #good - 5000
    local p = H.write(dir .. "/corrupt.dump", good:sub(1, mid - 1) .. string.char((good:byte(mid) + 7) % 256) .. good:sub(mid + 1))
    c:exec("CREATE TABLE IF NOT EXISTS victim (id int, note text)")
    local a <close> = A.open(p)
    local ok, e = pcall(a.copy_into, a, c, 6, "COPY public.victim (id, note) FROM stdin")
    assert.is_false(ok)
    assert.matches("corrupt", tostring(e))
    assert.equals(0, c:value("SELECT count(*) FROM victim"))
  end)
end)
