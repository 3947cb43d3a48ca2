-- Rows in COPY's binary format (src/copybin.c, orch restore --copy-format):
-- the converter turns the text the server writes into exactly the binary
-- the server reads -- judged by the server itself, every kind of value, in
-- several time zones and bytea styles, fed in pieces of any size --; it
-- refuses, naming row and column, whatever it does not read exactly as the
-- server writes it; a restore sends binary rows from orch's and pg_dump's
-- archives and gets what pg_restore gets; a table the converter stops on
-- is loaded again as text in every path (one connection, a job of several,
-- a table split over connections). orch's own gzip archives inflate piece
-- by piece, and a manifest that claims so for an archive written otherwise
-- is named, not believed.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local A = require "orch.pgarchive"

-- one column of every kind the converter knows (a domain and an enum too), and the awkward values of each
local KINDS_SQL = [[
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > -1000000000000);
CREATE TABLE every (b bool, s int2, i int4, l int8, f4 real, f8 float8, n numeric, t text, vc varchar(10), bc char(5),
  nm name, js json, jb jsonb, u uuid, y bytea, d date, ts timestamp, tz timestamptz, e mood, p posint);
INSERT INTO every VALUES
 (true, -32768, -2147483648, -9223372036854775808, 'NaN', 'Infinity', 'NaN', E'tab\there\nnl\\back\r', 'x', 'ab', 'nm',
  '{"a": [1, 2]}', '{"ü": "\u00e9", "n": 1.50}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff5c0a0d09', '4713-11-24 BC',
  '294276-12-31 23:59:59.999999', '2024-02-29 12:34:56.5+05:30', 'happy', 0),
 (false, 32767, 2147483647, 9223372036854775807, '-Infinity', '-0', '0.00', '', '', '', '',
  'null', '[]', '00000000-0000-0000-0000-000000000000', '', 'infinity', '-infinity', 'infinity', 'sad', -5),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (true, 0, 0, 0, 1.17549435e-38, 4.9e-324, '-0.0001000', 'é😀', 'vé', 'é', 'n', '1', '{"x": null}',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', '\x5c5c', '2000-01-01', '1999-12-31 23:59:59', '1900-01-01 00:00:00+00', 'ok', 7),
 (false, 1, 1, 1, 3.4028235e38, 1.7976931348623157e308, '-123456789012345678901234567890.000123456789', E'\\N', 'a\tb',
  'a b', 'x', '"s"', '123', '12345678-1234-1234-1234-123456789abc', E'\\x', '0001-01-01', '0001-01-01 00:00:00 BC',
  '0001-01-01 00:00:00+00 BC', 'ok', 123456789),
 (true, -1, -1, -1, 1e-45, 2.2250738585072014e-308, '0.0001', repeat('x', 10000), repeat('y', 10), 'abcde', repeat('z', 63),
  '{}', '{"a": {"b": [true, false, null]}}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', decode(repeat('ab', 3000), 'hex'),
  '2024-02-29', '2024-02-29 00:00:00.000001', '1847-03-01 00:00:00 Europe/Amsterdam', 'sad', -1),
 (false, 7, 7, 7, 0.1, 0.1, '10000', E'\\.', 'b', 'c', 'd', '[1]', '1e2', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x',
  '10000-01-01', '10000-01-01 01:02:03', '2024-07-01 00:00:00 America/St_Johns', 'ok', 2),
 (true, 2, 2, 2, 1, 1, '99990000.00010000', E'\\\\.\n\\.', 'q', 'q', 'q', '2', '2', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '\x01', '1970-01-01', '1970-01-01 00:00:00', '2038-01-19 03:14:08+00', 'ok', 3);
]]
local KINDS = "b248fFnttttt" .. "juydszt4"

local function copy_text(c, sql)
  local parts = {}
  c:copy_out(sql, function(chunk) parts[#parts + 1] = chunk end)
  return table.concat(parts)
end

describe("rows in COPY's binary format", function()
  local url, name
  setup(function()
    url, name = H.fresh_db("copybin")
    local c <close> = db.connect(url)
    c:exec(KINDS_SQL)
  end)
  teardown(function() H.drop_db(name) end)

  it("converts every kind of value to what the server reads back as the same value, in any time zone, bytea style and piece size", function()
    local c <close> = db.connect(url)
    c:exec("CREATE TABLE back (LIKE every)")
    for _, tz in ipairs { "UTC", "Asia/Kolkata", "America/Los_Angeles", "Europe/Amsterdam" } do
      for _, bytea in ipairs { "hex", "escape" } do
        c:exec(string.format("SET TimeZone = '%s'; SET DateStyle = ISO; SET extra_float_digits = 3; SET bytea_output = %s", tz, bytea))
        local text = copy_text(c, "COPY every TO STDOUT")
        for _, piece in ipairs { 0, 1, 7, 65536 } do
          local bin, err = A.copy_binary(KINDS, text, piece)
          assert.is_truthy(bin, err)
          c:exec("TRUNCATE back")
          c:copy_in_begin("COPY back FROM STDIN (FORMAT binary)")
          c:copy_in_put(bin)
          assert.equals(8, c:copy_in_end())
          assert.equals(text, copy_text(c, "COPY back TO STDOUT"), tz .. " " .. bytea .. " " .. piece)
        end
      end
    end
  end)

  it("writes byte for byte what the server's own binary COPY writes", function()
    local c <close> = db.connect(url)
    c:exec("SET TimeZone = 'Asia/Kolkata'; SET DateStyle = ISO; SET extra_float_digits = 3")
    -- the server sends whatever display scale a numeric infinity happens to carry; orch sends 0 (both read it alike)
    local where = " WHERE n IS NULL OR n <> 'Infinity' AND n <> '-Infinity'"
    local text = copy_text(c, "COPY (SELECT * FROM every" .. where .. ") TO STDOUT")
    local bin = copy_text(c, "COPY (SELECT * FROM every" .. where .. ") TO STDOUT (FORMAT binary)")
    assert.equals(bin, (A.copy_binary(KINDS, text)))
    -- and the end-of-data line ends the rows (nothing after it is data)
    assert.equals(bin, (A.copy_binary(KINDS, text .. "\\.\n\n\n", 3)))
  end)

  it("refuses, naming row and column, every value the server would not have written so", function()
    local c <close> = db.connect(url)
    -- other DateStyles: the server's own text for the same rows
    for _, style in ipairs { "SQL, DMY", "SQL, MDY", "German", "Postgres" } do
      c:exec("SET DateStyle = '" .. style .. "'")
      local text = copy_text(c, "COPY (SELECT d, ts, tz FROM every WHERE d <> 'infinity') TO STDOUT")
      local bin, err = A.copy_binary("dsz", text)
      assert.is_nil(bin, style)
      assert.matches("^row 1, column 1: not a date as the server writes one", err)
    end
    c:exec("SET DateStyle = ISO")
    local cases = {
      { "d", "2024-02-30\n", "row 1, column 1: not a date" },
      { "d", "2023-02-29\n", "row 1, column 1: not a date" },
      { "d", "0000-01-01\n", "row 1, column 1: not a date" },
      { "s", "2024-01-01 24:00:00\n", "row 1, column 1: not a timestamp" },
      { "s", "2024-01-01T00:00:00\n", "row 1, column 1: not a timestamp" },
      { "s", "2024-01-01 00:00:00+00\n", "row 1, column 1: not a timestamp" },
      { "z", "2024-01-01 00:00:00\n", "row 1, column 1: not a timestamptz" },
      { "z", "2024-01-01 00:00:00.1234567+00\n", "row 1, column 1: not a timestamptz" },
      { "z", "2024-01-01 00:00:00 UTC\n", "row 1, column 1: not a timestamptz" },
      { "b", "yes\n", "row 1, column 1: not a boolean" },
      { "4", "1\n2147483648\n", "row 2, column 1: not an integer" },
      { "2", "32768\n", "row 1, column 1: not a smallint" },
      { "8", "9223372036854775808\n", "row 1, column 1: not a bigint" },
      { "4", " 1\n", "row 1, column 1: not an integer" },
      { "4", "+1\n", "row 1, column 1: not an integer" },
      { "4", "1_000\n", "row 1, column 1: not an integer" },
      { "8", "0x10\n", "row 1, column 1: not a bigint" },
      { "F", "1e999\n", "row 1, column 1: not a double precision" },
      { "F", "inf\n", "row 1, column 1: not a double precision" },
      { "f", "1e-50\n", "row 1, column 1: not a real" },
      { "n", "1e5\n", "row 1, column 1: not a numeric" },
      { "n", string.rep("7", 20000) .. "\n", "row 1, column 1: not a numeric" },   -- more digits than binary numeric carries
      { "u", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}\n", "row 1, column 1: not a uuid" },
      { "u", "a0eebc999c0b4ef8bb6d6bb9bd380a11\n", "row 1, column 1: not a uuid" },
      { "y", "\\\\x123\n", "row 1, column 1: not a bytea" },
      { "y", "\\\\xzz\n", "row 1, column 1: not a bytea" },
      { "y", "a\\\\9b\n", "row 1, column 1: not a bytea" },
      { "tt", "a\tb\r\n", "row 1: a carriage return" },
      { "t", "a\\.b\n", "row 1, column 1: an escape COPY does not write" },
      { "t", "ab\\\n", "row 1, column 1: a backslash ends the row" },
      { "tt", "a\n", "row 1: fewer columns than the COPY names" },
      { "t", "a\tb\n", "row 1: more columns than the COPY names" },
      { "44", "1\t2\n3\n", "row 2: fewer columns" },
    }
    for _, case in ipairs(cases) do
      local bin, err = A.copy_binary(case[1], case[2])
      assert.is_nil(bin, case[2])
      assert.is_truthy(err:find(case[3], 1, true), err .. " for " .. case[2])
    end
    -- a last row without its newline is a row (as the server reads it)
    local one = A.copy_binary("4", "1\n2")
    local two = A.copy_binary("4", "1\n2\n")
    assert.equals(two, one)
    assert.error_matches(function() A.copy_binary("4x", "") end, "column kinds expected")
  end)

  describe("in a restore", function()
    local work, archives, refs, srcs = nil, {}, {}, {}
    -- a numeric of 20,000 digits is a value the text format carries and the binary one does not:
    -- one such row in the middle of a big table makes the converter stop there
    local BIG = [[
      CREATE TABLE big (id int PRIMARY KEY, v text, n numeric, at timestamptz);
      INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
        CASE WHEN g = 40000 THEN repeat('7', 20000)::numeric ELSE g / 7.0 END,
        timestamptz '2026-01-01' + g * interval '17 minutes'
      FROM generate_series(1, 80000) g;
      CREATE INDEX big_at ON big (at);
    ]]
    setup(function()
      work = H.tmpdir()
      for set, sql in pairs { kinds = KINDS_SQL .. "CREATE TABLE more AS SELECT g AS id, now() - g * interval '1 hour' AS at, md5(g::text)::uuid AS u FROM generate_series(1, 20000) g;", big = BIG } do
        local src
        src, archives[set] = H.dumped_db("copybin_" .. set, sql, work)
        srcs[#srcs + 1] = src
        local _, ref = H.fresh_db("copybin_ref_" .. set)
        local rr = H.pgtool("pg_restore", { "-d", ref, "--exit-on-error", archives[set].stock })
        assert.is_true(rr.ok, rr.stderr)
        refs[set] = ref
      end
    end)
    teardown(function()
      for _, s in ipairs(srcs) do H.drop_db(s) end
      for _, r in pairs(refs) do H.drop_db(r) end
      sys.rmtree(work)
    end)

    local function restore(path, extra, which)
      local turl, dst = H.fresh_db("copybin_dst")
      local argv = { "restore", path, "--db", turl }
      for _, x in ipairs(extra) do argv[#argv + 1] = x end
      if which == "stock" then argv[#argv + 1] = "--no-manifest" end
      local r = H.orch(argv)
      assert.is_true(r.ok, r.stderr .. r.stdout)
      return r, dst
    end

    for _, which in ipairs { "orch", "stock" } do
      for _, jobs in ipairs { "1", "2" } do
        it(string.format("sends the rows of the %s archive as binary with --jobs %s and gets what pg_restore gets", which, jobs), function()
          local r, dst = restore(archives.kinds[which], { "--copy-format", "binary", "--jobs", jobs }, which)
          assert.matches("rows of 2 tables sent in COPY's binary format", r.stdout)
          assert.not_matches("loaded as text", r.stdout)
          assert.same(H.contents_of(refs.kinds), H.contents_of(dst))
          assert.equals(H.schema_of(refs.kinds), H.schema_of(dst))
          H.drop_db(dst)
        end)
      end
    end

    it("sends nothing as binary with --copy-format text, nor small tables by default", function()
      for _, fmt in ipairs { "text", "auto" } do
        local r, dst = restore(archives.kinds.orch, { "--copy-format", fmt }, "orch")
        assert.not_matches("binary format", r.stdout)
        assert.same(H.contents_of(refs.kinds), H.contents_of(dst))
        H.drop_db(dst)
      end
    end)

    local paths = {
      { "one connection", { "--jobs", "1" } },
      { "a job of two connections", { "--jobs", "2", "--split-mib", "0" } },
      { "a table split over two connections", { "--jobs", "2", "--split-mib", "1" } },
    }
    for _, which in ipairs { "orch", "stock" } do
      for _, p in ipairs(paths) do
        it(string.format("loads a table the converter stops on again as text (%s archive, %s)", which, p[1]), function()
          local argv = { "--copy-format", "binary" }
          for _, x in ipairs(p[2]) do argv[#argv + 1] = x end
          local r, dst = restore(archives.big[which], argv, which)
          if p[1]:match("split") then
            -- each part counts its own rows
            assert.matches("loaded as text after the binary format stopped: public%.big %(row %d+, column 3: not a numeric.- of one part of its rows%)", r.stdout)
            assert.matches("split: public%.big over 2 connections", r.stdout)
          else
            assert.matches("loaded as text after the binary format stopped: public%.big %(row 40000, column 3: not a numeric", r.stdout)
          end
          assert.same(H.contents_of(refs.big), H.contents_of(dst))
          local c <close> = H.connect(dst)
          assert.equals(80000, c:value("SELECT count(*) FROM big"))
          assert.equals(20000, c:value("SELECT length(n::text) FROM big WHERE id = 40000"))
          c:close()
          H.drop_db(dst)
        end)
      end
    end

    it("restore and verify inflate orch's gzip archive piece by piece, as its manifest says, and name a manifest that says so wrongly", function()
      local m = json.decode(H.read(archives.big.orch:gsub("%.dump$", ".manifest.json")))
      assert.equals(262144, m.deflate_pieces)
      -- pg_dump's archive with a manifest that claims orch's pieces: its SHA-256 and size are right, its pieces are not
      local fake = work .. "/fake.dump"
      H.write(fake, H.read(archives.big.stock))
      local sum, size = sys.sha256_file(fake)
      m.sha256, m.size, m.file = sum, size, "fake.dump"
      H.write(work .. "/fake.manifest.json", json.encode(m))
      -- orch verify inflates the same way once the SHA-256 matched
      assert.is_true(H.orch({ "verify", archives.big.orch }).ok)
      local v = H.orch { "verify", fake }
      assert.is_false(v.ok)
      assert.matches("manifest says orch wrote the archive so", v.stderr)
      local turl, dst = H.fresh_db("copybin_fake")
      local r = H.orch { "restore", fake, "--db", turl }
      assert.is_false(r.ok)
      assert.matches("manifest says orch wrote the archive so", r.stderr)
      local c <close> = H.connect(dst)
      assert.equals(0, c:value("SELECT count(*) FROM pg_class WHERE relname = 'big'"))
      c:close()
      H.drop_db(dst)
    end)
  end)
end)
