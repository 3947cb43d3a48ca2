-- What orch says about the files it is given, through the real binary: files
-- that look like migrations but are not run, binary and non-UTF-8 files,
-- symbolic link loops, a recipe that raises a table, and repair doing what
-- its hint says.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"

local function orch(argv, opts)
  opts = opts or {}
  opts.env = opts.env or { DATABASE_URL = false }
  return H.orch(argv, opts)
end

local function migrations(files)
  local dir = H.tmpdir()
  for name, text in pairs(files) do H.write(dir .. "/" .. name, text) end
  return dir
end

local function ln(target, link) assert(sys.spawn { "ln", "-s", target, link }.ok) end

describe("migration files", function()
  local dbs = {}
  local function fresh(p)
    local url, name = H.fresh_db(p)
    dbs[#dbs + 1] = name
    return url
  end
  teardown(function() for _, n in ipairs(dbs) do H.drop_db(n) end end)

  it("warns by name about files that look like migrations but are not run", function()
    local dir = migrations {
      ["V1__real.sql"] = "CREATE TABLE real_one (id int);\n",
      ["V3__upper.SQL"] = "CREATE TABLE upper_one (id int);\n",
      ["V4__data.LUA"] = "return { up = function() end }\n",
      ["V1__real.sql.bak"] = "CREATE TABLE old (id int);\n",
      ["V1__real.sql~"] = "CREATE TABLE older (id int);\n",
      [".V1__real.sql.swp"] = "\0\0",
      ["README.md"] = "notes\n",
    }
    local url = fresh("mf_warn")
    local r = orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(0, r.code, r.stderr)
    assert.matches("applied 1 migration", r.stdout)
    local function warned(name, why)
      assert.matches("ignored " .. (dir .. "/" .. name):gsub("%p", "%%%0") .. ": it looks like a migration, but " .. why, r.stderr)
    end
    warned("V3__upper.SQL", "its extension is %.SQL, not %.sql: rename it V3__upper%.sql to run it")
    warned("V4__data.LUA", "its extension is %.LUA, not %.lua")
    warned("V1__real.sql.bak", "its name does not end in %.sql or %.lua")
    warned("V1__real.sql~", "its name does not end in %.sql or %.lua")
    warned(".V1__real.sql.swp", "its name does not end")
    assert.not_matches("README", r.stderr)
    -- status --json carries them too
    local s = json.decode(orch { "status", "--db", url, "--dir", dir, "--json" }.stdout)
    assert.equals(5, #s.ignored)
    -- a .sql file whose name is not a migration's is an error naming it, as before
    H.write(dir .. "/V1_x.sql", "SELECT 1;\n")
    local bad = orch { "status", "--db", url, "--dir", dir }
    assert.equals(1, bad.code)
    assert.matches("malformed migration file name " .. (dir .. "/V1_x.sql"):gsub("%p", "%%%0"), bad.stderr)
  end)

  it("reports a binary or non-UTF-8 migration by file and byte offset, without echoing it", function()
    local line1, before = "CREATE TABLE t (note text);\n", "INSERT INTO t VALUES ('caf"
    local dir = migrations { ["V1__latin1.sql"] = line1 .. before .. "\233');\n" }   -- a Latin-1 e-acute
    local r = orch { "migrate", "--db", fresh("mf_utf8"), "--dir", dir }
    assert.equals(1, r.code, r.stderr)
    assert.matches("migration " .. (dir .. "/V1__latin1.sql"):gsub("%p", "%%%0") .. string.format(
      " is not UTF%%-8 text: the byte 0xE9 at byte offset %d %%(line 2, byte %d of the line%%)", #line1 + #before, #before + 1), r.stderr)
    assert.matches("nothing was checked or applied", r.stderr)
    assert.is_nil(r.stderr:find("\233", 1, true), "the bad byte is not echoed")
    local bin = migrations { ["V1__blob.sql"] = "\127ELF\2\1\1\0\0\0\0binary\255\254" }
    local b = orch { "status", "--db", fresh("mf_bin"), "--dir", bin }
    assert.equals(1, b.code)
    assert.matches("V1__blob%.sql is a binary file, not text: a NUL byte at byte offset 7 %(line 1", b.stderr)
    assert.is_nil(b.stderr:find("ELF", 1, true))
    -- a Lua migration too
    local lua = migrations { ["V1__data.lua"] = "return { up = function() end } -- \255\n" }
    local l = orch { "status", "--db", fresh("mf_lua"), "--dir", lua }
    assert.equals(1, l.code)
    assert.matches("V1__data%.lua is not UTF%-8 text: the byte 0xFF at byte offset 34", l.stderr)
  end)

  it("names a symbolic link loop as one: a migration, a service directory, the migrations directory", function()
    local url = fresh("mf_loop")
    local dir = migrations { ["V1__ok.sql"] = "SELECT 1;\n" }
    ln("V2__b.sql", dir .. "/V2__a.sql")
    ln("V2__a.sql", dir .. "/V2__b.sql")
    local r = orch { "status", "--db", url, "--dir", dir }
    assert.equals(1, r.code, r.stderr)
    local first, second = r.stderr:match("/(V2__%a%.sql) is a symbolic link loop %(.-/V2__%a%.sql %-> (V2__%a%.sql) %-> V2__%a%.sql%)")
    assert.truthy(first, r.stderr)
    assert.are_not.equal(first, second)
    -- a loop under any name, not only a migration's
    local d2 = migrations { ["V1__ok.sql"] = "SELECT 1;\n" }
    ln("self", d2 .. "/self")
    local r2 = orch { "status", "--db", url, "--dir", d2 }
    assert.equals(1, r2.code)
    assert.matches("self is a symbolic link loop %(.-self %-> self%)", r2.stderr)
    -- a service directory that leads back to the migrations directory
    local d3 = migrations { ["V1__ok.sql"] = "SELECT 1;\n" }
    ln("..", d3 .. "/billing")
    local r3 = orch { "status", "--db", url, "--dir", d3 }
    assert.equals(1, r3.code)
    assert.matches("the service directory .-/billing is a symbolic link loop", r3.stderr)
    -- the migrations directory itself
    local top = H.tmpdir()
    ln("loop2", top .. "/loop1")
    ln("loop1", top .. "/loop2")
    local r4 = orch { "status", "--db", url, "--dir", top .. "/loop1" }
    assert.equals(1, r4.code)
    assert.matches("the migrations directory .-loop1 is a symbolic link loop %(.-loop1 %-> loop2 %-> loop1%)", r4.stderr)
    assert.not_matches("not found", r4.stderr)
    -- a recipe
    ln("b.lua", top .. "/a.lua")
    ln("a.lua", top .. "/b.lua")
    local r5 = orch { top .. "/a.lua" }
    assert.equals(2, r5.code)
    assert.matches("cannot open recipe: .-a%.lua is a symbolic link loop %(.-a%.lua %-> b%.lua %-> a%.lua%)", r5.stderr)
  end)

  it("repair's hint names the command that accepts an edited file, and that command accepts it", function()
    local url = fresh("mf_repair")
    local dir = migrations { ["V1__a.sql"] = "CREATE TABLE a (id int);\n", ["V2__b.sql"] = "CREATE TABLE b (id int);\n" }
    assert.equals(0, orch { "migrate", "--db", url, "--dir", dir }.code)
    H.write(dir .. "/V1__a.sql", "CREATE TABLE a (id int); -- edited after it was applied\n")
    H.write(dir .. "/V3__c.sql", "CREATE TABLE c (id int);\n")
    local m = orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(1, m.code)
    local hint = m.stderr:match("accept it with '(orch repair[^']*)'")
    assert.equals("orch repair --accept-changed", hint)
    -- plain repair does not accept it, and says so
    local plain = orch { "repair", "--db", url, "--dir", dir }
    assert.equals(0, plain.code, plain.stderr)
    assert.matches("V1__a%.sql was edited after it was applied: NOT accepted %(pass %-%-accept%-changed", plain.stdout)
    assert.equals(1, orch { "validate", "--db", url, "--dir", dir }.code)
    -- the command of the hint does (without a terminal it needs --yes, as it says)
    local argv = {}
    for w in hint:gmatch("%S+") do argv[#argv + 1] = w end
    table.remove(argv, 1)
    for _, x in ipairs { "--db", url, "--dir", dir } do argv[#argv + 1] = x end
    local ask = orch(argv)
    assert.equals(1, ask.code)
    assert.matches("pass %-%-yes", ask.stderr)
    argv[#argv + 1] = "--yes"
    local ok = orch(argv)
    assert.equals(0, ok.code, ok.stderr)
    assert.matches("accepted the new checksum of V1__a%.sql", ok.stdout)
    assert.equals(0, orch { "validate", "--db", url, "--dir", dir }.code)
    local again = orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(0, again.code, again.stderr)
    assert.matches("applied 1 migration", again.stdout)
    -- the missing-file hint, likewise
    sys.unlink(dir .. "/V2__b.sql")
    local v = orch { "validate", "--db", url, "--dir", dir }
    local forget = v.stderr:match("forget it with '(orch repair[^']*)'")
    assert.equals("orch repair --forget-missing", forget)
    local f = orch { "repair", "--forget-missing", "--db", url, "--dir", dir }
    assert.equals(0, f.code, f.stderr)
    assert.equals(0, orch { "validate", "--db", url, "--dir", dir }.code)
  end)
end)

describe("errors a recipe raises", function()
  it("a table is printed by its fields, not as table: 0x...", function()
    local dir = H.tmpdir()
    local f = H.write(dir .. "/raise.lua", "local t = { reason = 'disk full', code = 3, where = { host = 'db1' } }\nerror(t)\n")
    local r = orch { f }
    assert.equals(1, r.code)
    assert.not_matches("table: 0x", r.stderr)
    assert.matches("raise%.lua:2: an error raised as a table: { code = 3, reason = \"disk full\", where = { host = \"db1\" } }", r.stderr)
    -- with a message field: the message first, and its exit code honoured
    local g = H.write(dir .. "/msg.lua", "error({ message = 'the queue is not empty', jobs = 12, exit_code = 4 })\n")
    local m = orch { g }
    assert.equals(4, m.code)
    assert.matches("msg%.lua:1: the queue is not empty { jobs = 12 }", m.stderr)
    -- --json: its fields as they are
    local j = json.decode(orch { g, "--json" }.stderr)
    assert.equals(12, j.jobs)
    assert.equals(4, j.exit_code)
    -- inside a recipe step: the step's failure and the report show the fields too
    H.write(dir .. "/orch.env.lua", "return { dev = {} }\n")
    H.write(dir .. "/step.lua", [[local R = require "orch.recipe"
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = { R.step.lua { name = "boom", run = function() error({ reason = "no space", free = 0 }) end } } }
]])
    local s = orch({ dir .. "/step.lua", "--db", H.cluster():url("postgres") }, { cwd = dir })
    assert.equals(1, s.code, s.stdout .. s.stderr)
    assert.matches("cause: an error raised as a table: { free = 0, reason = \"no space\" }", s.stdout)
    assert.not_matches("table: 0x", s.stdout)
  end)
end)
