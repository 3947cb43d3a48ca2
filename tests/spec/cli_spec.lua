-- The command line's conventions, through the real binary on a real server:
-- global options anywhere, -q that is quiet, --json results and JSON errors,
-- colour only on a terminal, usage errors (exit 2) for anything orch does
-- not understand, orch help help.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"

local MIGRATIONS = sys.realpath("migrations")

-- a fresh database and its URL; dropped at the end of the spec
local dbs = {}
local function fresh(prefix)
  local url, name = H.fresh_db(prefix)
  dbs[#dbs + 1] = name
  return url
end

local function orch(argv, opts)
  opts = opts or {}
  opts.env = opts.env or { DATABASE_URL = false, NO_COLOR = false }
  return H.orch(argv, opts)
end

-- a project of its own (no migrations needed) for the commands that need one
local function project()
  local dir = H.tmpdir()
  H.write(dir .. "/orch.env.lua", "return { dev = { database = { local_cluster = true } } }\n")
  return dir
end

describe("the command line", function()
  teardown(function() for _, n in ipairs(dbs) do H.drop_db(n) end end)

  describe("global options", function()
    it("--verbose and -v work after the command too: orch migrate -v gives a traceback with an error", function()
      for _, argv in ipairs {
        { "migrate", "-v", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS },
        { "-v", "migrate", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS },
        { "migrate", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS, "--verbose" },
      } do
        local r = orch(argv)
        assert.equals(1, r.code, table.concat(argv, " ") .. "\n" .. r.stderr)
        assert.matches("could not connect", r.stderr)
        assert.matches("stack traceback", r.stderr, table.concat(argv, " "))
      end
      assert.not_matches("stack traceback", orch { "migrate", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS }.stderr)
    end)

    it("-q before or after the command is quiet: nothing on stdout or stderr, the exit code tells", function()
      local url = fresh("cli_q")
      local dir = H.tmpdir()
      for _, argv in ipairs {
        { "migrate", "-q", "--db", url, "--dir", MIGRATIONS },
        { "-q", "status", "--db", url, "--dir", MIGRATIONS },
        { "validate", "--quiet", "--db", url, "--dir", MIGRATIONS },
        { "backup", "-q", "--db", url, "--dir", dir },
        { "-q", "backup", "--db", url, "--dir", dir, "--skip", "aggregate" },
        { "backups", "list", "-q", "--dir", dir },
        { "version", "-q" },
        { "lint", "-q", "--dir", MIGRATIONS },
      } do
        local r = orch(argv)
        assert.equals(0, r.code, table.concat(argv, " ") .. "\n" .. r.stderr)
        assert.equals("", r.stdout, table.concat(argv, " "))
        assert.equals("", r.stderr, table.concat(argv, " "))
      end
      local dumps = 0
      for _, f in ipairs(sys.listdir(dir) or {}) do if f:match("%.dump$") then dumps = dumps + 1 end end
      assert.equals(2, dumps, "the two quiet backups were written")
      -- quiet, and still the error
      local bad = orch { "status", "-q", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS }
      assert.equals(1, bad.code)
      assert.equals("", bad.stdout)
      assert.matches("^orch: could not connect", bad.stderr)
      -- -q --json: the JSON result is what was asked for
      local j = orch { "status", "-q", "--json", "--db", url, "--dir", MIGRATIONS }
      assert.equals(0, j.code, j.stderr)
      assert.equals("", j.stderr)
      assert.is_table(json.decode(j.stdout).migrations)
    end)

    it("-q makes a recipe quiet too", function()
      local dir = project()
      H.write(dir .. "/r.lua", [[local R = require "orch.recipe"
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "quiet", opts = opts, env = env, steps = { R.step.lua { name = "say", run = function() print("hello") return "said" end } } }
]])
      local r = orch({ dir .. "/r.lua", "--db", fresh("cli_rq"), "-q" }, { cwd = dir })
      assert.equals(0, r.code, r.stderr)
      assert.equals("", r.stdout)
      assert.equals("", r.stderr)
      local loud = orch({ dir .. "/r.lua", "--db", fresh("cli_rl") }, { cwd = dir })
      assert.matches("hello", loud.stdout)
    end)
  end)

  describe("--json", function()
    it("orch version, orch --version and orch new print JSON results", function()
      for _, argv in ipairs { { "version", "--json" }, { "--json", "--version" }, { "--version", "--json" } } do
        local r = orch(argv)
        assert.equals(0, r.code, r.stderr)
        local v = json.decode(r.stdout)
        assert.equals(package.orch_version, v.orch)
        assert.matches("^%d+%.%d+$", v.libpq)
      end
      local dir = H.tmpdir()
      local r = orch { "new", "add", "ticket", "priority", "--dir", dir, "--json" }
      assert.equals(0, r.code, r.stderr)
      local created = json.decode(r.stdout).created
      assert.equals(2, #created)
      assert.matches("/V1__add_ticket_priority%.sql$", created[1])
      assert.matches("/U1__add_ticket_priority%.sql$", created[2])
      assert.is_true(sys.exists(created[1]))
    end)

    it("orch restore --list --json prints the archive's table of contents as data", function()
      local url = fresh("cli_list")
      assert.is_true(orch { "migrate", "-q", "--db", url, "--dir", MIGRATIONS }.ok)
      local file = H.tmpdir() .. "/x.dump"
      assert.is_true(orch { "backup", "-q", "--db", url, "--output", file }.ok)
      local r = orch { "restore", file, "--list", "--json" }
      assert.equals(0, r.code, r.stderr)
      local toc = json.decode(r.stdout)
      assert.equals("gzip", toc.compression)
      local tables = {}
      for _, e in ipairs(toc.entries) do if e.desc == "TABLE" then tables[e.tag] = e.namespace end end
      assert.equals("public", tables.tickets)
      -- the text listing is unchanged
      assert.matches("TABLE public tickets", orch { "restore", file, "--list" }.stdout)
    end)

    it("an error is one JSON object on stderr with its message, fields and exit code", function()
      -- a connection error: its fields
      local r = orch { "status", "--json", "--db", "postgresql://postgres@127.0.0.1:1/none", "--dir", MIGRATIONS }
      assert.equals(1, r.code)
      assert.equals("", r.stdout)
      local e = json.decode(r.stderr)
      assert.equals(1, e.exit_code)
      assert.matches("could not connect", e.error)
      assert.equals("08001", e.sqlstate)
      -- a usage error, even one before --json on the line
      local u = orch { "status", "--bogus", "--json" }
      assert.equals(2, u.code)
      local ue = json.decode(u.stderr)
      assert.equals(2, ue.exit_code)
      assert.matches("unknown option %-%-bogus", ue.error)
      -- a failing migration: sqlstate, the migration, its file and line
      local dir = H.tmpdir()
      H.write(dir .. "/V1__ok.sql", "CREATE TABLE a (id int);\n")
      H.write(dir .. "/V2__bad.sql", "-- a comment\nCREATE TABLE b (id int);\nINSERT INTO nowhere VALUES (1);\n")
      local m = orch { "migrate", "--json", "--db", fresh("cli_jerr"), "--dir", dir }
      assert.equals(1, m.code, m.stderr)
      local me = json.decode(m.stderr)
      assert.equals("42P01", me.sqlstate)
      assert.equals("V2__bad.sql", me.migration)
      assert.equals(dir .. "/V2__bad.sql", me.file)
      assert.equals(3, me.line)
      assert.equals(1, me.exit_code)
      assert.matches("migration V2__bad%.sql failed", me.error)
      -- without --json the same error is text
      assert.matches("^orch: migration V2__bad%.sql failed", orch { "migrate", "--db", fresh("cli_terr"), "--dir", dir }.stderr)
    end)

    it("a command's own refusals are error objects too: notify without webhooks, check with nothing to check", function()
      local p = project()
      H.write(p .. "/orch.env.lua", "return { dev = { database = { local_cluster = true } },\n" ..
        "  bare = { database = { env = 'CLI_BARE_URL' } } }\n")
      local n = orch({ "notify", "--json" }, { cwd = p })
      assert.equals(1, n.code, n.stderr)
      assert.equals("", n.stdout)
      local ne = json.decode(n.stderr)
      assert.equals(1, ne.exit_code)
      assert.matches("environment dev has no webhooks", ne.error)
      local c = orch({ "check", "--env", "bare", "--only", "http", "--json" }, { cwd = p, env = { CLI_BARE_URL = "postgresql://x@127.0.0.1:1/x", DATABASE_URL = false } })
      assert.equals(1, c.code, c.stdout .. c.stderr)
      assert.equals("", c.stdout)
      assert.matches("nothing to check: environment bare has no HTTP checks", json.decode(c.stderr).error)
    end)
  end)

  describe("colour and control codes", function()
    -- runs orch under a pseudo-terminal (script); shell is the command line given to sh
    local function on_tty(shell, env)
      local e = { DATABASE_URL = false, NO_COLOR = false, TERM = "xterm" }
      for k, v in pairs(env or {}) do e[k] = v end
      return sys.spawn { "script", "-qec", shell, "/dev/null", env = e, timeout = 120 }
    end
    local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

    it("appear on a terminal, never on piped or redirected stdout, never with NO_COLOR", function()
      local cmd = function(url) return string.format("%s migrate --db %s --dir %s", q(H.orch_bin), q(url), q(MIGRATIONS)) end
      local tty = on_tty(cmd(fresh("cli_c1")))
      assert.is_true(tty.ok, tty.stdout .. tty.stderr)
      assert.matches("\27%[32mok\27%[0m", tty.stdout)
      -- stdout into a file while stderr is the terminal
      local out = H.tmpdir() .. "/out.txt"
      local redirected = on_tty(cmd(fresh("cli_c2")) .. " > " .. q(out))
      assert.is_true(redirected.ok, redirected.stdout)
      local text = H.read(out)
      assert.matches("applied %d+ migrations", text)
      assert.is_nil(text:find("\27", 1, true), "no control codes in redirected stdout")
      -- NO_COLOR on the terminal
      local plain = on_tty(cmd(fresh("cli_c3")), { NO_COLOR = "1" })
      assert.is_true(plain.ok)
      assert.matches("%.%.%. ok %(", plain.stdout)
      assert.is_nil(plain.stdout:find("\27[", 1, true))
      -- piped (no terminal at all)
      local piped = orch { "migrate", "--db", fresh("cli_c4"), "--dir", MIGRATIONS }
      assert.is_true(piped.ok)
      assert.is_nil((piped.stdout .. piped.stderr):find("\27", 1, true))
    end)
  end)

  describe("help", function()
    it("orch help help explains help", function()
      local r = orch { "help", "help" }
      assert.equals(0, r.code, r.stderr)
      assert.matches("usage: orch help %[COMMAND | RECIPE%.lua%]", r.stdout)
      assert.equals(r.stdout, orch { "help", "--help" }.stdout)
      assert.equals(orch { "help", "migrate" }.stdout, orch { "migrate", "--help" }.stdout)
      assert.equals(orch { "help", "migrate" }.stdout, orch { "--help", "migrate" }.stdout)
    end)

    it("--json gives the same help as data: the commands, a command's options and examples, a recipe's steps", function()
      local cli = require "orch.cli"
      local top = orch { "help", "--json" }
      assert.equals(0, top.code, top.stderr)
      local t = json.decode(top.stdout)
      local names = {}
      for i, c in ipairs(t.commands) do names[i] = c.name end
      assert.same(cli.commands(), names)
      assert.equals(#cli.global_options, #t.global_options)
      assert.equals(130, t.exit_codes[#t.exit_codes].code)
      assert.same(t, json.decode(orch({ "--json", "--help" }).stdout))
      local b = json.decode(orch({ "help", "backup", "--json" }).stdout)
      assert.equals("backup", b.command)
      assert.same(cli.command("backup").examples, b.examples)
      local compress
      for _, o in ipairs(b.options) do if o.name == "compress" then compress = o end end
      assert.equals("Z", compress.short)
      assert.equals(false, compress.global)
      assert.same(b, json.decode(orch({ "backup", "--help", "--json" }).stdout))
      local dir = H.tmpdir()
      H.recipe("dev", dir)
      local d = orch({ "help", "recipes/dev.lua", "--json" }, { cwd = dir })
      assert.equals(0, d.code, d.stderr)
      local dj = json.decode(d.stdout)
      assert.equals("dev", dj.name)
      assert.equals("database", dj.steps[1].name)
      assert.equals("summary", dj.always[1].name)
    end)

    it("lists the global options from one table, in orch --help and in every command's help", function()
      local top = orch { "--help" }.stdout
      local cli = require "orch.cli"
      for _, o in ipairs(cli.global_options) do
        assert.truthy(top:find("--" .. o.name .. " ", 1, true), o.name)
      end
      for _, n in ipairs(cli.commands()) do
        local r = orch { n, "--help" }
        assert.equals(0, r.code, n .. ": " .. r.stderr)
        local line = r.stdout:match("\n  global options: ([^\n]*)")
        assert.truthy(line, n)
        -- each global option, unless the command has an option of that name (baseline --version V)
        for _, o in ipairs(cli.global_options) do
          local own = false
          for _, s in ipairs(cli.spec_of(cli.command(n))) do if s.name == o.name and not s.global then own = true end end
          assert.equals(not own, line:find("--" .. o.name, 1, true) ~= nil, n .. " --" .. o.name)
        end
      end
    end)
  end)

  describe("usage errors (exit 2)", function()
    it("an unknown option, a malformed value or an extra argument, for every command", function()
      local cases = {
        { "status", "--bogus" }, { "migrate", "-x" }, { "backup", "-Zq0" }, { "version", "--db", "x" },
        { "backups", "prune", "--keep", "x" }, { "backups", "prune", "--keep", "1.5" }, { "backups", "prune", "--keep", "0" },
        { "undo", "--count", "2x" }, { "check", "--wait", "soon" }, { "check", "--only", "disk" },
        { "backup", "--threads", "0" }, { "migrate", "--lock-timeout", "fast" }, { "runs", "--last", "-3" },
        { "status", "extra" }, { "version", "now" }, { "verify", "a.dump", "b.dump" }, { "backup", "extra" },
        { "migrate", "up" }, { "restore", "a.dump", "b.dump" }, { "runs", "list", "x" }, { "local", "status", "now" },
        { "help", "migrate", "extra" }, { "backups", "list", "more" }, { "check", "-" },
        { "status", "--dir" }, { "status", "--dir=" }, { "migrate", "--json=maybe" },
      }
      for _, argv in ipairs(cases) do
        local r = orch(argv)
        assert.equals(2, r.code, table.concat(argv, " ") .. ": " .. r.stdout .. r.stderr)
        assert.matches("see 'orch [%w]+ %-%-help'", r.stderr, nil, table.concat(argv, " "))
      end
      assert.matches("unexpected argument 'extra': orch status takes options only", orch { "status", "extra" }.stderr)
      assert.matches("option %-%-keep expects a whole number, got '1%.5'", orch { "backups", "prune", "--keep", "1.5" }.stderr)
      assert.matches("option %-%-only takes db or http, not 'disk'", orch { "check", "--only", "disk" }.stderr)
      assert.equals(2, orch { "--bogus" }.code)
      assert.equals(2, orch { "frobnicate" }.code)
      -- a recipe's too: an extra word, an unknown option, each pointing at the recipe's own help
      local rp = project()
      H.recipe("dev", rp)
      for _, argv in ipairs { { "recipes/dev.lua", "extra" }, { "recipes/dev.lua", "--bogus" }, { "recipes/dev.lua", "--keep=maybe" } } do
        local r = orch(argv, { cwd = rp })
        assert.equals(2, r.code, table.concat(argv, " ") .. ": " .. r.stdout .. r.stderr)
        assert.matches("^orch: [^\n]+\nsee 'orch recipes/dev%.lua %-%-help'\n$", r.stderr)
        assert.equals("", r.stdout)
      end
      assert.matches("unexpected argument 'extra': this recipe takes options only", orch({ "recipes/dev.lua", "extra" }, { cwd = rp }).stderr)
      assert.is_nil(sys.stat(rp .. "/.orch"), "nothing started for a refused command line")
      -- a command's option before the command: named, with where it goes
      local before = orch { "--env", "prod", "status" }
      assert.equals(2, before.code)
      assert.matches("%-%-env is not a global option: a command's options go after the command %(orch status %-%-env", before.stderr)
      assert.matches("unknown option %-%-bogus\n", orch { "--bogus", "status" }.stderr)
      assert.matches("%-Z is not a global option", orch { "-Z0", "backup" }.stderr)
    end)

    it("-Z0 is honoured as -Z 0 (an uncompressed archive), not ignored", function()
      local url = fresh("cli_z")
      local dir = H.tmpdir()
      for i, argv in ipairs { { "-Z0" }, { "-Z", "0" }, { "--compress=none" }, { "-Z9" }, { "-Zzstd:3" } } do
        local file = dir .. "/" .. i .. ".dump"
        local a = { "backup", "--db", url, "-o", file }
        for _, x in ipairs(argv) do a[#a + 1] = x end
        local r = orch(a)
        assert.equals(0, r.code, table.concat(argv, " ") .. ": " .. r.stderr)
      end
      local function compression(name)
        return json.decode(orch { "restore", dir .. "/" .. name .. ".dump", "--list", "--json" }.stdout).compression
      end
      assert.equals("none", compression("1"))   -- -Z0
      assert.equals("none", compression("2"))   -- -Z 0
      assert.equals("none", compression("3"))
      assert.equals("gzip", compression("4"))
      assert.equals("zstd", compression("5"))
    end)
  end)

  describe("outside any project", function()
    it("commands that need one say so (exit 2); those that do not still work", function()
      local nowhere = H.tmpdir()
      for _, argv in ipairs { { "status" }, { "migrate" }, { "backup" }, { "backups", "list" }, { "runs" }, { "local", "status" },
                              { "new", "x" }, { "lint" } } do
        local r = orch(argv, { cwd = nowhere })
        assert.equals(2, r.code, table.concat(argv, " ") .. ": " .. r.stderr)
        assert.matches("needs a project, and " .. nowhere:gsub("%p", "%%%0") .. " is not inside one", r.stderr)
      end
      assert.same({}, sys.listdir(nowhere))
      -- a recipe kept outside any project, run from outside one: both places are named, nothing is written
      local shelf = H.tmpdir()
      H.write(shelf .. "/r.lua", H.read("recipes/dev.lua"))
      local r = orch({ shelf .. "/r.lua" }, { cwd = nowhere })
      assert.equals(2, r.code, r.stdout .. r.stderr)
      assert.matches("a recipe needs a project, and neither the recipe's directory " .. shelf:gsub("%p", "%%%0") ..
        " nor " .. nowhere:gsub("%p", "%%%0") .. " is inside one", r.stderr)
      assert.same({}, sys.listdir(nowhere))
      assert.same({ "r.lua" }, sys.listdir(shelf))
      -- given what they need, they work anywhere
      local url = fresh("cli_out")
      assert.equals(0, orch({ "status", "--db", url, "--dir", MIGRATIONS }, { cwd = nowhere }).code)
      local b = orch({ "backup", "--db", url, "-o", "here.dump" }, { cwd = nowhere })
      assert.equals(0, b.code, b.stderr)
      assert.is_true(sys.exists(nowhere .. "/here.dump"))
      assert.equals(0, orch({ "version" }, { cwd = nowhere }).code)
    end)
  end)
end)
