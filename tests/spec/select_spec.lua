-- Selection and content options with pg_dump's and pg_restore's meaning
-- (issue 9, "pg_dump parity"): orch backup -n/-N/-t/-T/--exclude-table-data/
-- -s/-a/-x/--no-comments against stock pg_dump 15 with the same options on
-- the same database (the archive's listing, and the database pg_restore
-- makes of each), partial backups in manifests, listings, verify, retention
-- and the recovery paths.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

-- schemas, a mixed-case name, a trigger and its function, an identity, a view, a materialized
-- view, extended statistics, default privileges, comments, grants, a large object
local FIXTURE = H.read("tests/fixtures/select.sql")

-- An archive's table of contents as pg_restore -l lists it, as a sorted set of
-- "TYPE schema tag owner" lines (ids and oids differ between any two dumps).
-- pg_dump writes an identity column's sequence as an entry of its own, orch
-- inside its table's: that line is left out of both.
local function listing(path)
  local r = H.pgtool("pg_restore", { "-l", path })
  assert(r.ok, r.stderr)
  local out = {}
  for line in r.stdout:gmatch("[^\n]+") do
    if not line:match("^;") then
      local rest = line:match("^%d+; %d+ %d+ (.*)$")
      assert(rest, "unexpected pg_restore -l line: " .. line)
      if rest ~= "SEQUENCE app orders_id_seq postgres" then out[#out + 1] = rest end
    end
  end
  table.sort(out)
  return table.concat(out, "\n")
end

describe("orch backup with pg_dump's selection options", function()
  local work, src, url
  setup(function()
    work = H.tmpdir()
    H.setup_roles()
    url, src = H.fresh_db("sel_src")
    local c <close> = db.connect(url)
    c:exec(FIXTURE)
  end)
  teardown(function() H.drop_db(src) end)

  local n = 0
  -- orch's archive with these options and pg_dump's; returns both paths and orch's manifest
  local function both(opts)
    n = n + 1
    local mine, theirs = string.format("%s/orch-%d.dump", work, n), string.format("%s/pgdump-%d.dump", work, n)
    local argv = { "backup", "--db", url, "--output", mine, "--json" }
    for _, o in ipairs(opts) do argv[#argv + 1] = o end
    local r = H.orch(argv)
    assert.is_true(r.ok, r.stderr)
    local p = { "-Fc", "-f", theirs, "-d", src }
    for _, o in ipairs(opts) do p[#p + 1] = o end
    local d = H.pgtool("pg_dump", p)
    assert.is_true(d.ok, d.stderr)
    return mine, theirs, json.decode(r.stdout)
  end

  -- pg_restore each archive into its own fresh database (after setup SQL, for
  -- archives that need what they do not hold), then compare the two
  local function same_restore(mine, theirs, before)
    local dbs = {}
    for i, path in ipairs { mine, theirs } do
      local u, d = H.fresh_db("sel_dst")
      dbs[i] = d
      if before then
        local c <close> = db.connect(u)
        c:exec(before)
      end
      local r = H.pgtool("pg_restore", { "-d", d, "--exit-on-error", path })
      assert.is_true(r.ok, path .. ": " .. r.stderr)
    end
    H.same_database(dbs[1], dbs[2])
    return dbs
  end

  local CASES = {
    { "-n app" }, { "-n", "a*" }, { "--schema=app", "-n", '"Mixed"' }, { "-N", "audit" }, { "-N", "app", "-N", "audit" },
    { "-n", "app", "-T", "app.big_orders" }, { "-T", "audit.log_archive" }, { "-T", "audit.*_archive", "-T", "public.?lain" },
    { "--exclude-table-data", "audit.log" },
    { "--exclude-table-data=audit.log*", "-n", "audit" }, { "-s" }, { "--schema-only", "-N", "audit" }, { "-x" },
    { "--no-comments" }, { "-x", "--no-comments", "-n", "app" }, { "-n", "app", "-N", "app" },
  }
  for _, opts in ipairs(CASES) do
    local flat = {}
    for _, o in ipairs(opts) do for w in o:gmatch("%S+") do flat[#flat + 1] = w end end
    it("orch backup " .. table.concat(flat, " ") .. ": the same entries as pg_dump's, and pg_restore makes the same database of both", function()
      local mine, theirs, m = both(flat)
      assert.equals(listing(theirs), listing(mine))
      local dbs = same_restore(mine, theirs)
      for _, d in ipairs(dbs) do H.drop_db(d) end
      -- the manifest says the backup is partial, with the options as given
      assert.is_table(m.partial)
      assert.is_true(#m.partial.options > 0)
    end)
  end

  it("orch backup -T: what hangs on a left-out table goes with it, its owned sequence stays, a view on it stays (as pg_dump: neither archive restores alone)", function()
    for _, opts in ipairs { { "-T", "app.users" }, { "-T", "app.*s" }, { "-n", "app", "-T", "app.orders" } } do
      local mine, theirs = both(opts)
      local l = listing(mine)
      assert.equals(listing(theirs), l)
      if opts[2] == "app.users" then
        assert.matches("SEQUENCE app users_id_seq", l, 1, true)
        assert.matches("MATERIALIZED VIEW app user_count", l, 1, true)
        assert.is_nil(l:find("INDEX app users_mood", 1, true))
      end
    end
  end)

  it("orch backup -t: the tables with their data, indexes, constraints, triggers, owned sequences, comments and privileges, not their schema, types or functions", function()
    local mine, theirs, m = both { "-t", "app.users" }
    local l = listing(mine)
    assert.equals(listing(theirs), l)
    for _, want in ipairs { "TABLE app users", "TABLE DATA app users", "INDEX app users_mood", "TRIGGER app users users_touch",
        "SEQUENCE app users_id_seq", "SEQUENCE SET app users_id_seq", "CONSTRAINT app users users_pkey", "COMMENT app TABLE users",
        "ACL app TABLE users" } do
      assert.matches(want, l, 1, true)
    end
    for _, unwanted in ipairs { "SCHEMA", "FUNCTION", "TYPE", "STATISTICS", "BLOB" } do
      assert.is_nil(l:find(unwanted, 1, true), unwanted .. " in a -t backup:\n" .. l)
    end
    assert.same({ { option = "-t", pattern = "app.users", matched = { "app.users" } } }, m.partial.patterns)
    -- self-contained tables (quoted mixed-case names, several -t, a pattern) restore alike
    local mine2, theirs2 = both { "-t", '"Mixed"."CamelT"', "-t", "audit.log*" }
    assert.equals(listing(theirs2), listing(mine2))
    local dbs = same_restore(mine2, theirs2, 'CREATE SCHEMA "Mixed"; CREATE SCHEMA audit;')
    for _, d in ipairs(dbs) do H.drop_db(d) end
  end)

  it("orch backup -a: rows, sequence values and large objects only, referenced tables' rows first; pg_restore -a loads them into the schema", function()
    local mine, theirs, m = both { "-a" }
    assert.equals(listing(theirs), listing(mine))
    assert.equals(m.rows, 20 + 200 + 500 + 5 + 2 + 1)
    -- the schema first (pg_dump -s of the source), then each data-only archive: FK order matters without --disable-triggers
    local schema = H.schema_of(src)
    local dbs = {}
    for i, path in ipairs { mine, theirs } do
      local u, d = H.fresh_db("sel_data")
      dbs[i] = d
      local c <close> = db.connect(u)
      c:exec(schema)
      local r = H.pgtool("pg_restore", { "-d", d, "--exit-on-error", "-a", path })
      assert.is_true(r.ok, path .. ": " .. r.stderr)
    end
    H.same_database(dbs[1], dbs[2])
    for _, d in ipairs(dbs) do H.drop_db(d) end
  end)

  it("an extension's configuration tables' rows follow their own schema and table (-n, -N, -t, -T, --exclude-table-data), not the extension, as in pg_dump", function()
    local eurl, edb = H.fresh_db("sel_ext")
    local c <close> = db.connect(eurl)
    c:exec("CREATE EXTENSION orch_kinds_ext; INSERT INTO public.settings VALUES ('k', 'v'); CREATE TABLE public.t (x int); INSERT INTO public.t VALUES (1)")
    -- owners left out (orch writes none on an extension's data entries); pg_dump -n public writes CREATE SCHEMA public,
    -- which no restore into a database that has one can run: orch leaves the public schema's entries out
    local function bare(path)
      local out = {}
      for line in listing(path):gmatch("[^\n]+") do
        line = line:gsub(" postgres$", ""):gsub(" $", "")
        if not (line:match("SCHEMA public") or line:match("^SCHEMA %- public")) then out[#out + 1] = line end
      end
      return table.concat(out, "\n")
    end
    for _, opts in ipairs { { "-n", "public" }, { "-N", "public" }, { "-t", "public.settings" }, { "-T", "public.settings" },
        { "--exclude-table-data", "public.ref_sys" } } do
      n = n + 1
      local mine, theirs = string.format("%s/ext-orch-%d.dump", work, n), string.format("%s/ext-pgdump-%d.dump", work, n)
      local r = H.orch { "backup", "--db", eurl, "--output", mine, opts[1], opts[2] }
      assert.is_true(r.ok, r.stderr)
      local d = H.pgtool("pg_dump", { "-Fc", "-f", theirs, "-d", edb, opts[1], opts[2] })
      assert.is_true(d.ok, d.stderr)
      assert.equals(bare(theirs), bare(mine), table.concat(opts, " "))
    end
    H.drop_db(edb)
  end)

  it("refuses a pattern that matches nothing (inclusions and exclusions alike), and options that exclude each other, naming them", function()
    for _, case in ipairs {
      { { "-t", "nosuch" }, "%-t nosuch matched nothing" },
      { { "-t", "users" }, "%-t users matched nothing" },   -- app.users is not on the search path
      { { "-n", "app", "-T", "app.nosuch*" }, "%-T app.nosuch%* matched nothing" },
      { { "-N", "Mixed" }, "%-N Mixed matched nothing" },   -- unquoted: folds to mixed
      { { "--exclude-table-data", "audit.logs" }, "%-%-exclude%-table%-data audit.logs matched nothing" },
      { { "-s", "-a" }, "exclude each other" },
      { { "-t", "other_db.app.users" }, "names another database" },
      { { "-t", 'app."users' }, "unterminated double quote" },
      { { "-n", "app." }, "an empty name" },
    } do
      local argv = { "backup", "--db", url, "--output", work .. "/never.dump" }
      for _, o in ipairs(case[1]) do argv[#argv + 1] = o end
      local r = H.orch(argv)
      assert.equals(1, r.code, table.concat(case[1], " ") .. ": " .. r.stdout .. r.stderr)
      assert.matches(case[2], r.stderr)
      assert.is_false(sys.exists(work .. "/never.dump"))
    end
  end)

  it("a partial backup: orch backups list marks it, verify and verify --deep check it, retention counts it apart from whole ones", function()
    local dir = work .. "/partial"
    local function take(...)
      local argv = { "backup", "--db", url, "--dir", dir, "--json", ... }
      local r = H.orch(argv)
      assert.is_true(r.ok, r.stderr)
      return json.decode(r.stdout)
    end
    local whole = take()
    assert.is_nil(whole.partial)
    local part = take("-t", "audit.log", "--no-comments")
    assert.same({ "-t audit.log", "--no-comments" }, part.partial.options)
    assert.same({ ["audit.log"] = 500 }, part.tables)
    local data = take("-a", "-n", "audit")
    local l = H.orch { "backups", "list", "--dir", dir }
    assert.is_true(l.ok, l.stderr)
    assert.matches("PARTIAL, not the whole database: %-t audit.log %-%-no%-comments", l.stdout)
    assert.matches("PARTIAL, not the whole database: %-n audit %-%-data%-only", l.stdout)
    -- verify: the checksum and every block; --deep restores a -t backup (its schema made empty first)
    local v = H.orch { "verify", part.path, "--deep", "--db", url }
    assert.is_true(v.ok, v.stdout .. v.stderr)
    assert.matches("row counts match after a restore", v.stdout)
    assert.is_true(H.orch({ "verify", data.path }).ok)
    local vd = H.orch { "verify", data.path, "--deep", "--db", url }
    assert.equals(1, vd.code)
    assert.matches("data%-only", vd.stderr)
    assert.matches("without %-%-deep", vd.stderr)
    -- retention: keep 1 keeps the one whole backup, whatever partial ones are newer; each selection is a series of its own
    -- newest first is by the manifests' start second: part2 must start in a later second than part
    local deadline = sys.monotonic() + 5
    while os.date("!%Y-%m-%dT%H:%M:%SZ") <= part.started_at do
      assert(sys.monotonic() < deadline, "the clock did not pass " .. part.started_at)
      sys.sleep(0.05)
    end
    local part2 = take("-t", "audit.log", "--no-comments")
    assert.is_true(H.orch({ "verify", part2.path }).ok)   -- a series' newest verified backup is never deleted: part2 is now
    local deleted = require("orch.backup").retain(dir, { keep = 1 })
    assert.same({ part.path }, deleted)
    assert.is_true(sys.exists(whole.path))
    assert.is_true(sys.exists(part2.path))
    assert.is_true(sys.exists(data.path))
  end)

  it("a --skip that left objects out makes a partial backup (listed, counted apart, never restored as the whole database); one that matched nothing does not", function()
    local dir = work .. "/skipped"
    local sel = require "orch.backup.select"
    local function take(...)
      local r = H.orch { "backup", "--db", url, "--dir", dir, "--json", ... }
      assert.is_true(r.ok, r.stderr)
      return json.decode(r.stdout)
    end
    local whole = take("--skip", "event_trigger")   -- the fixture has none: a whole backup
    assert.is_nil(sel.summary(whole))
    local lo = take("--skip", "large_object")     -- the fixture's large object is left out
    assert.equals("--skip large_object", sel.summary(lo))
    local l = H.orch { "backups", "list", "--dir", dir }
    assert.is_true(l.ok, l.stderr)
    assert.matches("PARTIAL, not the whole database: %-%-skip large_object", l.stdout)
    -- retention: the newer --skip backup is no newer whole one, so keep 1 keeps the whole one
    assert.same({}, require("orch.backup").retain(dir, { keep = 1 }))
    assert.is_true(sys.exists(whole.path))
    -- the recovery paths' restore refuses it by name, before touching anything
    local ok, err = pcall(require("orch.backup.restore").run, { archive = lo.path, db = url, mode = "swap", whole = true })
    assert.is_false(ok)
    assert.matches("partial backup %(%-%-skip large_object%)", tostring(type(err) == "table" and err.message or err))
  end)

  it("the recovery paths never restore a partial backup as the whole database: recipes/restore.lua passes it over, refuses it by name, and restore.run { whole = true } refuses it", function()
    local dir = H.tmpdir()
    local u, dst = H.fresh_db("sel_recipe")
    local c = db.connect(u)
    c:exec(FIXTURE)
    c:close()
    H.write(dir .. "/orch.env.lua", string.format([[return {
  prod = { database = { env = "TEST_PROD_URL" }, backups = { dir = %q } },
}]], dir .. "/backups/prod"))
    local bdir = dir .. "/backups/prod"
    local w = H.orch { "backup", "--db", u, "--dir", bdir, "--json" }
    assert.is_true(w.ok, w.stderr)
    local p = H.orch { "backup", "--db", u, "--dir", bdir, "--json", "-t", "audit.log" }
    assert.is_true(p.ok, p.stderr)
    local part = json.decode(p.stdout)
    -- the run-level restore (recipe steps and the recovery rung pass whole = true)
    local ok, err = pcall(require("orch.backup.restore").run, { archive = part.path, db = u, mode = "swap", whole = true })
    assert.is_false(ok)
    assert.matches("partial backup %(%-t audit.log%)", tostring(type(err) == "table" and err.message or err))
    local function recipe(...)
      local argv = { H.orch_bin, H.recipe("restore", dir), "--env", "prod", "--yes", "--no-safety-backup", ... }
      argv.cwd, argv.timeout, argv.env = dir, 300, { TEST_PROD_URL = u, DATABASE_URL = false }
      return sys.spawn(argv)
    end
    local r = recipe("--dry-run")
    assert.equals(0, r.code, r.stdout .. r.stderr)
    -- the newest backup is the partial one: the recipe chooses the whole one
    assert.matches("would restore " .. json.decode(w.stdout).path:gsub("%p", "%%%0"), r.stdout)
    local named = recipe("--backup", part.path)
    assert.equals(1, named.code, named.stdout .. named.stderr)
    assert.matches("is partial %(%-t audit.log%)", named.stdout .. named.stderr)
    H.drop_db(dst)
  end)
end)
