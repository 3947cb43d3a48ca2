-- orch restore with pg_restore's selection options (issue 9, "pg_dump
-- parity"): -a/-s, -x/--no-acl, --no-comments, -N, -I, -P, -T, --section,
-- -L and --disable-triggers, on orch's and stock pg_dump's archives of one
-- database, each judged against pg_restore 15 with the same options into a
-- database made alike (schema text and rows); and the combinations that
-- cannot work, refused before the target is touched.
local H = require "helper"
local db = require "orch.db"

local FIXTURE = H.read("tests/fixtures/select.sql")

describe("orch restore with pg_restore's selection options, on orch's and stock pg_dump's archives", function()
  local work, src, archives
  setup(function()
    work = H.tmpdir()
    H.setup_roles()
    local url
    url, src = H.fresh_db("rsel_src")
    local c <close> = db.connect(url)
    c:exec(FIXTURE)
    archives = { orch = work .. "/orch.dump", pg_dump = work .. "/pgdump.dump" }
    local r = H.orch { "backup", "--db", url, "--output", archives.orch }
    assert(r.ok, r.stderr)
    local d = H.pgtool("pg_dump", { "-Fc", "-f", archives.pg_dump, "-d", src })
    assert(d.ok, d.stderr)
  end)
  teardown(function() H.drop_db(src) end)

  -- two fresh databases, each prepared by pg_restore with `prep` options (nil: left empty)
  local function targets(archive, prep)
    local out = {}
    for i = 1, 2 do
      local u, d = H.fresh_db("rsel_dst")
      if prep then
        local argv = { "-d", d, "--exit-on-error" }
        for _, o in ipairs(prep) do argv[#argv + 1] = o end
        argv[#argv + 1] = archive
        local r = H.pgtool("pg_restore", argv)
        assert(r.ok, r.stderr)
      end
      out[i] = { url = u, name = d }
    end
    return out[1], out[2]
  end

  local function judge(archive, opts, prep)
    local mine, theirs = targets(archive, prep)
    local argv = { "restore", archive, "--db", mine.url }
    for _, o in ipairs(opts) do argv[#argv + 1] = o end
    local r = H.orch(argv)
    assert.is_true(r.ok, table.concat(opts, " ") .. ": " .. r.stdout .. r.stderr)
    local p = { "-d", theirs.name, "--exit-on-error" }
    for _, o in ipairs(opts) do p[#p + 1] = o end
    p[#p + 1] = archive
    local pr = H.pgtool("pg_restore", p)
    assert.is_true(pr.ok, pr.stderr)
    return mine.name, theirs.name
  end

  local CASES = {
    { { "-s" } }, { { "-x" } }, { { "--no-acl", "--no-comments" } },
    { { "--section", "pre-data" } }, { { "--section=pre-data", "--section=data" } },
    { { "-a", "--disable-triggers" }, { "-s" } }, { { "--section", "data", "--disable-triggers", "-a" }, { "--section", "pre-data" } },
    { { "--section", "post-data" }, { "--section", "pre-data", "--section", "data" } },
    { { "-I", "users_mood", "-T", "users users_touch" }, { "--section", "pre-data", "--section", "data" } },
    { { "-T", "users_touch" }, { "--section", "pre-data" } },
    -- pg_restore -N creates the schema empty: the function goes into it
    { { "-P", "touch()" }, { "-s", "-N", "app" } },
  }
  for _, which in ipairs { "orch", "pg_dump" } do
    for _, case in ipairs(CASES) do
      local opts, prep = case[1], case[2]
      it(string.format("restore %s %s of %s's archive%s: the same database as pg_restore's", table.concat(opts, " "), "", which,
          prep and (" into one pg_restore " .. table.concat(prep, " ") .. " made") or ""), function()
        local o = {}
        -- pg_restore takes -T as the trigger's tag only ("TABLE TRIGGER"); orch also takes its name
        for _, x in ipairs(opts) do o[#o + 1] = x end
        local mine, theirs
        if o[1] == "-T" and o[2] == "users_touch" then
          local a, b = targets(archives[which], prep)
          local r = H.orch { "restore", archives[which], "--db", a.url, "-T", "users_touch" }
          assert.is_true(r.ok, r.stdout .. r.stderr)
          local pr = H.pgtool("pg_restore", { "-d", b.name, "--exit-on-error", "-T", "users users_touch", archives[which] })
          assert.is_true(pr.ok, pr.stderr)
          mine, theirs = a.name, b.name
        else
          mine, theirs = judge(archives[which], o, prep)
        end
        H.same_database(mine, theirs)
        H.drop_db(mine)
        H.drop_db(theirs)
      end)
    end

    it("restore -N of " .. which .. "'s archive leaves the schema and everything in it out (pg_restore creates the schema empty)", function()
      local mine, theirs = judge(archives[which], { "-N", "audit" })
      local c <close> = H.connect(theirs)
      c:exec("DROP SCHEMA audit")
      H.same_database(mine, theirs)
      H.drop_db(mine)
      H.drop_db(theirs)
    end)

    it("restore -L of " .. which .. "'s archive: the entries its listing keeps (orch restore --list and pg_restore -l alike), ';' lines left out", function()
      for _, lister in ipairs { "orch", "pg_restore" } do
        local l = lister == "orch" and H.orch { "restore", archives[which], "--list" } or H.pgtool("pg_restore", { "-l", archives[which] })
        assert.is_true(l.ok, l.stderr)
        local lines = {}
        for line in l.stdout:gmatch("[^\n]+") do
          -- leave out the audit schema's entries and every table's rows but app.users'
          if line:match(" audit ") or line:match("SCHEMA %- audit") or (line:match("TABLE DATA") and not line:match("app users")) then
            line = ";" .. line
          end
          lines[#lines + 1] = line
        end
        local list = H.write(work .. "/" .. which .. "-" .. lister .. ".list", table.concat(lines, "\n") .. "\n")
        local mine, theirs = judge(archives[which], { "-L", list })
        H.same_database(mine, theirs)
        H.drop_db(mine)
        H.drop_db(theirs)
      end
    end)
  end

  it("refuses what cannot work, naming why, before the target is touched", function()
    local u, d = H.fresh_db("rsel_refuse")
    local list = H.orch { "restore", archives.orch, "--list" }
    local ids = {}
    for id in list.stdout:gmatch("\n(%d+);") do ids[#ids + 1] = id end
    local reordered = H.write(work .. "/reordered.list", ids[#ids] .. "; x\n" .. ids[1] .. "; y\n")
    local bad = H.write(work .. "/bad.list", "hello\n")
    local unknown = H.write(work .. "/unknown.list", "999999; nothing\n")
    for _, case in ipairs {
      { { "-a", "-s" }, 2, "exclude each other" },
      { { "-a", "--swap" }, 2, "%-%-swap cannot work" },
      { { "--section", "data", "--drop-existing", "--yes" }, 2, "%-%-drop%-existing cannot work" },
      { { "--disable-triggers" }, 2, "for %-%-data%-only" },
      { { "--section", "middle" }, 2, "no such section" },
      { { "-I", "nosuch", "-T", "users_touch" }, 1, "%-I nosuch matched no entry" },
      { { "-N", "nosuch" }, 1, "%-N nosuch matched no entry" },
      { { "-t", "nosuch", "-n", "app" }, 1, "%-t nosuch matched no entry" },
      { { "-P", "touch(integer)" }, 1, "%-P touch%(integer%) matched no entry" },
      { { "-L", reordered }, 1, "in the archive's order" },
      { { "-L", bad }, 1, "line 1" },
      { { "-L", unknown }, 1, "no entry 999999" },
      { { "-s", "--section", "data" }, 1, "select no entry" },
    } do
      local argv = { "restore", archives.orch, "--db", u }
      for _, o in ipairs(case[1]) do argv[#argv + 1] = o end
      local r = H.orch(argv)
      assert.equals(case[2], r.code, table.concat(case[1], " ") .. ": " .. r.stdout .. r.stderr)
      assert.matches(case[3], r.stderr)
    end
    local c <close> = H.connect(d)
    assert.equals(0, c:value("SELECT count(*) FROM pg_namespace WHERE nspname IN ('app', 'audit')"))
    H.drop_db(d)
  end)

  it("an orch -a backup restores with orch restore -a into the schema, and is refused without -a by name", function()
    local b = work .. "/data-only.dump"
    local r = H.orch { "backup", "--db", H.url_of(src), "--output", b, "-a" }
    assert.is_true(r.ok, r.stderr)
    local mine, theirs = targets(archives.pg_dump, { "-s" })
    local no = H.orch { "restore", b, "--db", mine.url }
    assert.equals(2, no.code)
    assert.matches("data%-only backup", no.stderr)
    local yes = H.orch { "restore", b, "--db", mine.url, "-a" }
    assert.is_true(yes.ok, yes.stdout .. yes.stderr)
    assert.matches("PARTIAL backup", yes.stdout)
    local pr = H.pgtool("pg_restore", { "-d", theirs.name, "--exit-on-error", "-a", b })
    assert.is_true(pr.ok, pr.stderr)
    H.same_database(mine.name, theirs.name)
    H.same_database(src, mine.name)
    H.drop_db(mine.name)
    H.drop_db(theirs.name)
  end)
end)
