-- orch restore --jobs N cuts a big table's data at row ends over several
-- connections at once (pool:split): the rows come back exactly as stock
-- pg_restore gives them, from orch's and from stock archives, in every mode;
-- a part that fails half-way rolls every part back (none commits) and the
-- target ends as the mode promises.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local url_of = H.url_of

-- The awkward rows of COPY's text format: escaped newlines, tabs and
-- backslashes, a value that reads like the end-of-data line, empty strings,
-- NULLs, multibyte text. "big" is the largest table, so it is split first,
-- over every connection (all are free then).
local AWKWARD = [[
CREATE TABLE big (id int PRIMARY KEY, v text, note text, b bytea);
INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
  CASE g % 9 WHEN 0 THEN E'line\nbreak' WHEN 1 THEN E'\\.' WHEN 2 THEN E'\n\\.\n' WHEN 3 THEN '' WHEN 4 THEN NULL
    WHEN 5 THEN E'tab\there\\back' WHEN 6 THEN 'ünï €' WHEN 7 THEN E'\r\n' ELSE '.' END,
  decode(md5(g::text), 'hex')
FROM generate_series(1, 60000) g;
CREATE INDEX big_v ON big (v);
CREATE TABLE small (id int PRIMARY KEY, v text);
INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 100) g;
]]
-- A one-column table where every other value is the empty string, which
-- COPY writes as an empty line: only the end-of-data line ends the data.
local LINES = [[
CREATE TABLE lines (v text);
INSERT INTO lines SELECT CASE WHEN g % 2 = 0 THEN '' ELSE md5(g::text) || md5((g * 3)::text) END FROM generate_series(1, 150000) g;
]]

describe("orch restore --jobs splits a big table's data over connections", function()
  local work
  local archives, refs, srcs = {}, {}, {}
  setup(function()
    work = H.tmpdir()
    for set, sql in pairs { awkward = AWKWARD, lines = LINES } do
      local src
      src, archives[set] = H.dumped_db("split_" .. set, sql, work)
      srcs[#srcs + 1] = src
      -- what stock pg_restore gives back from the same files: the references
      refs[set] = {}
      for which, path in pairs(archives[set]) do if set == "awkward" or which == "orch" then
        local _, ref = H.fresh_db("split_ref_" .. set .. "_" .. which)
        local rr = H.pgtool("pg_restore", { "-d", ref, "--exit-on-error", path })
        assert.is_true(rr.ok, rr.stderr)
        refs[set][which] = ref
      end end
    end
  end)
  teardown(function()
    for _, s in ipairs(srcs) do H.drop_db(s) end
    for _, r in pairs(refs) do for _, d in pairs(r) do H.drop_db(d) end end
    sys.rmtree(work)
  end)

  -- what stock pg_restore gives back from the same file: the reference
  local function reference(path)
    local _, ref = H.fresh_db("split_ref")
    local r = H.pgtool("pg_restore", { "-d", ref, "--exit-on-error", path })
    assert.is_true(r.ok, r.stderr)
    return ref
  end

  local cases = {}
  for _, mode in ipairs { "default", "swap", "drop-existing" } do cases[#cases + 1] = { "awkward", "orch", mode, "big" } end
  for _, mode in ipairs { "default", "swap" } do cases[#cases + 1] = { "awkward", "stock", mode, "big" } end
  cases[#cases + 1] = { "lines", "orch", "default", "lines" }
  for _, case in ipairs(cases) do
    local set, which, mode, tname = table.unpack(case)
    it(string.format("restores the %s archive of the %s rows in mode %s, %s split, exactly as pg_restore does", which, set, mode, tname), function()
      local path = archives[set][which]
      local ref = refs[set][which]
      local url, dst = H.fresh_db("split_" .. which .. "_" .. mode:gsub("%-", "_"))
      local argv = { "restore", path, "--db", url, "--jobs", "3", "--split-mib", "1" }
      if which == "stock" then argv[#argv + 1] = "--no-manifest" end
      if mode == "swap" then argv[#argv + 1] = "--swap" end
      if mode == "drop-existing" then
        local c <close> = db.connect(url)
        c:exec("CREATE TABLE old_stuff AS SELECT 1 AS id")
        c:close()
        for _, x in ipairs { "--drop-existing", "--yes" } do argv[#argv + 1] = x end
      end
      local r = H.orch(argv)
      assert.is_true(r.ok, r.stderr)
      assert.matches("split: public%." .. tname .. " over 3 connections", r.stdout)
      if mode == "swap" then
        local old = r.stdout:match("kept as ([%w_]+)")
        assert.is_truthy(old, r.stdout)
        H.drop_db(old)
      end
      assert.same(H.contents_of(ref), H.contents_of(dst))
      -- --drop-existing makes its own public schema (not initdb's), so its schema text differs in that only
      if mode ~= "drop-existing" then assert.equals(H.schema_of(ref), H.schema_of(dst)) end
      local c <close> = db.connect(url)
      if set == "lines" then
        assert.equals(75000, c:value("SELECT count(*) FROM lines WHERE v = ''"))
        assert.equals(150000, c:value("SELECT count(*) FROM lines"))
      else
        assert.equals(60000, c:value("SELECT count(*) FROM big"))
        assert.equals(6667, c:value("SELECT count(*) FROM big WHERE note = $1", [[\.]]))
      end
      c:close()
      H.drop_db(dst)
    end)
  end

  describe("a part that fails half-way", function()
    local gated
    setup(function()
      -- every row's CHECK takes a shared advisory lock: while the test holds it, each part's
      -- COPY waits at its first row, so the test acts while both parts are provably under way.
      -- The rows (about 50 MB of COPY text) are more than the receiving part's socket buffers
      -- (4 MiB to send, 32 MiB to receive at most here) and the queue can hold while it waits,
      -- so the reading part must send rows down its own COPY too, and reaches the gate as well
      local url, name = H.fresh_db("split_gsrc")
      local c <close> = db.connect(url)
      c:exec([[CREATE FUNCTION gate(int) RETURNS boolean LANGUAGE plpgsql AS
          $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN true; END $$;
        CREATE TABLE gated (id int PRIMARY KEY CHECK (gate(id)), v text);
        INSERT INTO gated SELECT g, md5(g::text) || md5((g * 5)::text) || md5((g * 11)::text) FROM generate_series(1, 500000) g;]])
      local r = H.orch { "backup", "--db", url, "--dir", work .. "/gated", "--json" }
      assert.is_true(r.ok, r.stderr)
      gated = json.decode(r.stdout).path
      c:close()
      H.drop_db(name)
    end)

    -- Restore the gated archive with --jobs 2 in mode extra (argv) while
    -- holding the gate; when both parts wait at it, kill the session victim
    -- picks, then open the gate. Returns the exit code and stderr.
    local function restore_killing(dst, extra, victim)
      local holder = db.connect(url_of(dst))
      holder:exec("SELECT pg_advisory_lock(4242)")
      local out = work .. "/g_" .. dst
      local argv = { H.orch_bin, "restore", gated, "--db", url_of(dst), "--jobs", "2", "--split-mib", "1" }
      for _, x in ipairs(extra) do argv[#argv + 1] = x end
      assert.is_true(sys.spawn { "sh", "-c", string.format("(%s > %s.out 2> %s.err; echo $? > %s.code) > /dev/null 2>&1 &",
        table.concat(argv, " "), out, out, out) }.ok)
      local waiting = 0
      for _ = 1, 2400 do
        waiting = holder:value([[SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND NOT l.granted AND a.query LIKE 'COPY%' AND a.datname = current_database()]])
        if waiting >= 2 then break end
        sys.sleep(0.05)
      end
      assert.equals(2, waiting, "both parts of the split COPY wait at the gate")
      local killed = holder:value(string.format([[SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE datname = current_database() AND query LIKE 'COPY%%' AND %s]], victim))
      assert.equals(1, killed)
      holder:exec("SELECT pg_advisory_unlock(4242)")
      holder:close()
      for _ = 1, 2400 do
        if sys.exists(out .. ".code") and H.read(out .. ".code"):match("%d") then break end
        sys.sleep(0.05)
      end
      return H.read(out .. ".code"):match("%d+"), H.read(out .. ".err")
    end

    for _, who in ipairs { { "a receiving part", "application_name = 'orch restore worker 2'" },
                           { "the reading part", "application_name <> 'orch restore worker 2'" } } do
      it("(" .. who[1] .. " killed) leaves the table empty under --drop-existing: no part commits, and says the target is partly restored", function()
        local url, dst = H.fresh_db("split_gdrop")
        local code, err = restore_killing(dst, { "--drop-existing", "--yes" }, who[2])
        assert.equals("1", code, err)
        assert.is_truthy(err:match("terminating connection due to administrator command") or err:match("SQLSTATE 08006")
          or err:match("server closed the connection"), err)
        assert.matches("PARTLY RESTORED", err)
        local c <close> = db.connect(url)
        assert.equals(1, c:value("SELECT count(*) FROM pg_class WHERE relname = 'gated'"))
        assert.equals(0, c:value("SELECT count(*) FROM gated"))
        c:close()
        H.drop_db(dst)
      end)
    end

    it("(a receiving part killed) in the default mode leaves the target as empty as it was", function()
      local url, dst = H.fresh_db("split_gempty")
      local code, err = restore_killing(dst, {}, "application_name = 'orch restore worker 2'")
      assert.equals("1", code, err)
      assert.matches("what was restored was dropped again: the target is as empty as it was", err)
      local c <close> = db.connect(url)
      assert.equals(0, c:value("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"))
      assert.equals(0, c:value("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"))
      c:close()
      H.drop_db(dst)
    end)
  end)

  it("--split-mib 0 never splits, and one connection never does", function()
    for _, argv in ipairs { { "--jobs", "2", "--split-mib", "0" }, { "--jobs", "1", "--split-mib", "1" } } do
      local url, dst = H.fresh_db("split_none")
      local r = H.orch { "restore", archives.awkward.orch, "--db", url, table.unpack(argv) }
      assert.is_true(r.ok, r.stderr)
      assert.is_nil(r.stdout:match("split:"), r.stdout)
      H.drop_db(dst)
    end
  end)
end)
