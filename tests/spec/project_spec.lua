-- The project root (found like git finds its repository) and the project's
-- own throwaway cluster (orch local), through the real binary: a recipe or
-- a command run from another directory or from a subdirectory works in the
-- project and writes nothing where it was started.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"
local localpg = require "orch.localpg"

local ENV = { DATABASE_URL = false, PGHOST = false, PGPORT = "1", PGDATABASE = false, ORCH_ENV = false, ORCH_ENV_FILE = false }

-- a project: orch.env.lua (dev on the local cluster), the example migrations
-- (or the ones given), and the shipped dev recipe linked into recipes/
local function project(migrations)
  local dir = H.tmpdir()
  H.write(dir .. "/orch.env.lua", "return { dev = { database = { local_cluster = true, dbname = \"orch_dev\" }, backups = { keep = 3 } } }\n")
  assert(sys.mkdir_p(dir .. "/migrations", 493))
  if migrations then
    for name, text in pairs(migrations) do H.write(dir .. "/migrations/" .. name, text) end
  else
    for _, f in ipairs(sys.listdir("migrations")) do H.write(dir .. "/migrations/" .. f, H.read("migrations/" .. f)) end
  end
  H.recipe("dev", dir)
  return dir
end

local function orch(argv, cwd, env)
  local e = {}
  for k, v in pairs(ENV) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  return H.orch(argv, { cwd = cwd, env = e, timeout = 300 })
end

local function tree(dir)
  local out = {}
  local function walk(d, prefix)
    for _, f in ipairs(sys.listdir(d) or {}) do
      out[#out + 1] = prefix .. f
      local st = sys.stat(d .. "/" .. f, true)
      if st and st.type == "directory" then walk(d .. "/" .. f, prefix .. f .. "/") end
    end
  end
  walk(dir, "")
  table.sort(out)
  return out
end

-- a process that runs (not gone, not a zombie waiting for a parent that never reaps it)
local function alive(pid)
  if not sys.kill(pid, 0) then return false end
  local stat = H.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("%)%s+(%S)") ~= "Z"
end

local function status_of(dir)
  local r = orch({ "local", "status", "--json" }, dir)
  return json.decode(r.stdout), r
end

describe("the project root", function()
  it("a recipe run from another directory works in its project and writes nothing there", function()
    local url, name = H.fresh_db("proj_else")
    local proj, elsewhere = project(), H.tmpdir()
    local r = orch({ proj .. "/recipes/dev.lua", "--db", url }, elsewhere)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("dev database ready", r.stdout)
    assert.matches("schema at V100", r.stdout)
    assert.matches("project " .. proj:gsub("%p", "%%%0"), r.stdout)
    assert.same({}, sys.listdir(elsewhere))
    -- the run log is the project's, and named so that it can be found from there
    local log = r.stdout:match("run log: (%S+)")
    assert.matches("^" .. proj:gsub("%p", "%%%0") .. "/backups/dev/runs/", log)
    assert.is_true(sys.exists(log))
    H.drop_db(name)
  end)

  it("from a subdirectory of the project: recipes and commands find the root; paths typed stay where you stand", function()
    local url, name = H.fresh_db("proj_sub")
    local proj = project()
    local sub = proj .. "/sub/deeper"
    assert(sys.mkdir_p(sub, 493))
    local r = orch({ "../../recipes/dev.lua", "--db", url }, sub)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("dev database ready", r.stdout)
    local s = orch({ "status", "--db", url, "--json" }, sub)
    assert.equals(0, s.code, s.stderr)
    local summary = json.decode(s.stdout).summary
    assert.is_true(summary.applied > 0)
    assert.is_nil(summary.pending)
    -- a backup goes into the project's backups/, or where --output says, from where you stand
    local b = orch({ "backup", "--db", url }, sub)
    assert.equals(0, b.code, b.stderr)
    assert.matches("backup " .. proj:gsub("%p", "%%%0") .. "/backups/dev/", b.stdout)
    -- and orch backups list (no --env either) lists that directory: the backup just made is there
    local l = orch({ "backups", "list", "--json" }, sub)
    assert.equals(0, l.code, l.stderr)
    local listed = json.decode(l.stdout)
    assert.equals(1, #listed)
    assert.matches("^" .. proj:gsub("%p", "%%%0") .. "/backups/dev/", listed[1].path)
    local o = orch({ "backup", "--db", url, "-o", "here.dump" }, sub)
    assert.equals(0, o.code, o.stderr)
    assert.same({ "here.dump", "here.manifest.json" }, tree(sub))
    assert.equals(0, orch({ "verify", "here.dump" }, sub).code)
    assert.equals(0, orch({ "restore", "here.dump", "--list" }, sub).code)
    -- orch new writes into the project's migrations/ and names the files so that they are found from here
    local n = orch({ "new", "from", "sub" }, sub)
    assert.equals(0, n.code, n.stderr)
    local made = n.stdout:match("created (%S+)")
    assert.matches("^" .. proj:gsub("%p", "%%%0") .. "/migrations/V%d+__from_sub%.sql$", made)
    assert.is_true(sys.exists(made))
    assert.same({ "here.dump", "here.manifest.json" }, tree(sub))
    H.drop_db(name)
  end)

  it("the recipe's directory decides over the current one: a project's recipe run from inside another project", function()
    local url, name = H.fresh_db("proj_two")
    local a = project()
    local b = project { ["V1__only_b.sql"] = "CREATE TABLE only_b (id int);\n" }
    local r = orch({ a .. "/recipes/dev.lua", "--db", url }, b)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("schema at V100", r.stdout)
    assert.is_nil(sys.stat(b .. "/backups"))
    H.drop_db(name)
  end)

  it("a missing migrations directory stops the dev recipe before anything changes (exit 1)", function()
    local url, name = H.fresh_db("proj_nomig")
    local c <close> = require("orch.db").connect(url)
    c:exec("CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    local proj = H.tmpdir()
    H.write(proj .. "/orch.env.lua", "return { dev = { database = { local_cluster = true } } }\n")
    H.recipe("dev", proj)
    local r = orch({ proj .. "/recipes/dev.lua", "--db", url }, H.tmpdir())
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("migrations directory " .. proj:gsub("%p", "%%%0") .. "/migrations not found", r.stderr)
    assert.matches("nothing was changed", r.stderr)
    assert.equals(1, c:value("SELECT count(*) FROM precious"))
    assert.is_nil(c:value("SELECT 1 FROM pg_tables WHERE tablename = 'orch_schema_history'"))
    -- and no local cluster was started for it either
    local lr = orch({ proj .. "/recipes/dev.lua" }, proj)
    assert.equals(1, lr.code)
    assert.is_false(localpg.open(proj .. "/.orch/localpg"):initialized())
    c:close()
    H.drop_db(name)
  end)
end)

describe("orch local: the project's throwaway cluster", function()
  local a, b, orig_proj, copy
  teardown(function()
    for _, p in ipairs { a, b, orig_proj, copy } do
      if p then pcall(function() localpg.open(p .. "/.orch/localpg"):destroy() end) end
    end
  end)

  it("two projects run from the same directory each get their own cluster and database", function()
    a = project()
    b = project { ["V1__only_b.sql"] = "CREATE TABLE only_b (id int);\n" }
    local elsewhere = H.tmpdir()
    local ra = orch({ a .. "/recipes/dev.lua" }, elsewhere)
    assert.equals(0, ra.code, ra.stdout .. ra.stderr)
    assert.matches("orch local stop", ra.stdout)   -- the recipe says how to stop it
    local rb = orch({ b .. "/recipes/dev.lua" }, elsewhere)
    assert.equals(0, rb.code, rb.stdout .. rb.stderr)
    assert.same({}, sys.listdir(elsewhere))
    local sa, sb = status_of(a), status_of(b)
    assert.is_true(sa.running)
    assert.is_true(sb.running)
    assert.are_not.equal(sa.dir, sb.dir)
    assert.are_not.equal(sa.port, sb.port)
    -- and each database holds its own project's migrations, untouched by the other's run
    local ca <close> = require("orch.db").connect(sa.url)
    local cb <close> = require("orch.db").connect(sb.url)
    assert.equals(20, ca:value("SELECT count(*) FROM tickets"))
    assert.is_nil(ca:value("SELECT 1 FROM pg_tables WHERE tablename = 'only_b'"))
    assert.equals(1, cb:value("SELECT 1 FROM pg_tables WHERE tablename = 'only_b'"))
    assert.is_nil(cb:value("SELECT 1 FROM pg_tables WHERE tablename = 'tickets'"))
  end)

  it("a project copied while its cluster runs (cp -a) gets a cluster of its own, and never stops the original's", function()
    -- a project the server's user can reach (else the cluster lives under /tmp, keyed by the project's path,
    -- and a copy of the project has none to share)
    orig_proj = project { ["V1__only_b.sql"] = "CREATE TABLE only_b (id int);\n" }
    sys.chmod(orig_proj, 493)
    local b = orig_proj
    local up = orch({ "local", "start" }, b)
    assert.equals(0, up.code, up.stdout .. up.stderr)
    assert.equals(0, orch({ "migrate" }, b).code)
    local orig = status_of(b)
    assert.is_true(orig.running)
    assert.equals(sys.realpath(b) .. "/.orch/localpg", orig.dir)
    local parent = H.tmpdir()
    sys.chmod(parent, 493)
    copy = parent .. "/copy"
    local cp = sys.spawn { "cp", "-a", b, copy }
    assert.is_true(cp.ok, cp.stderr)
    -- the copy's postmaster.pid is the original server's: the copy is not running, and says whose it is
    local st, r = status_of(copy)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.is_false(st.running)
    assert.equals(sys.realpath(b) .. "/.orch/localpg/data", st.copy_of)
    assert.matches("copied     from " .. st.copy_of:gsub("%p", "%%%0"), orch({ "local", "status" }, copy).stdout)
    -- destroy in the copy removes the copy only
    local d = orch({ "local", "destroy" }, copy)
    assert.equals(0, d.code, d.stdout .. d.stderr)
    assert.is_true(alive(orig.pid), "the original's server still runs")
    assert.is_nil(sys.stat(copy .. "/.orch/localpg"))
    -- copied again, the copy starts a server of its own on a port of its own, with the copied data
    assert.is_true(sys.spawn({ "cp", "-a", b .. "/.orch/localpg", copy .. "/.orch/localpg" }).ok)
    local start = orch({ "local", "start" }, copy)
    assert.equals(0, start.code, start.stdout .. start.stderr)
    assert.matches("is a copy of", start.stdout .. start.stderr)
    local mine = status_of(copy)
    assert.is_true(mine.running)
    assert.are_not.equal(orig.port, mine.port)
    assert.are_not.equal(orig.pid, mine.pid)
    local c <close> = require("orch.db").connect(mine.url)
    assert.equals(1, c:value("SELECT 1 FROM pg_tables WHERE tablename = 'only_b'"))
    assert.equals(c:value("SHOW data_directory"), sys.realpath(copy .. "/.orch/localpg/data"))
    c:close()
    assert.equals(0, orch({ "local", "stop" }, copy).code)
    assert.is_true(alive(orig.pid), "stopping the copy left the original running")
    assert.equals(0, orch({ "local", "status" }, b).code)
  end)

  it("status, stop, start and destroy; destroy stops the server first and removes nothing it cannot stop", function()
    assert.truthy(a, "the spec above made the project")
    local sub = a .. "/sub"
    assert(sys.mkdir_p(sub, 493))
    local st, r = status_of(sub)
    assert.equals(0, r.code)
    assert.is_true(st.running)
    assert.equals(sys.realpath(a), st.project)
    assert.matches("orch_dev", table.concat(st.databases, " "))
    local text = orch({ "local", "status" }, sub)
    assert.matches("running", text.stdout)
    assert.matches("url        postgresql://postgres@127%.0%.0%.1:" .. st.port .. "/orch_dev", text.stdout)
    local pid = st.pid
    assert.is_true(alive(pid))

    -- stop: the data stays
    local stop = orch({ "local", "stop" }, sub)
    assert.equals(0, stop.code, stop.stderr)
    assert.matches("stopped the local cluster", stop.stdout)
    local stopped, sr = status_of(sub)
    assert.equals(1, sr.code)
    assert.is_false(stopped.running)
    assert.is_true(stopped.initialized)
    -- start again: the same database, with its data
    local start = orch({ "local", "start" }, sub)
    assert.equals(0, start.code, start.stderr)
    local again = status_of(sub)
    assert.is_true(again.running)
    local c <close> = require("orch.db").connect(again.url)
    assert.equals(20, c:value("SELECT count(*) FROM tickets"))
    c:close()

    -- a server that will not stop is not removed from under itself
    local fake = sys.mkdtemp("/tmp/orch-test-fakebin-")
    H.tmpdirs[#H.tmpdirs + 1] = fake
    sys.chmod(fake, 493)
    local real = localpg.bindir()
    for _, p in ipairs { "initdb", "postgres" } do assert(sys.spawn { "ln", "-s", real .. "/" .. p, fake .. "/" .. p }.ok) end
    H.write(fake .. "/pg_ctl", "#!/bin/sh\ncase \"$1\" in stop) echo 'pg_ctl: could not stop (the test says no)' >&2; exit 1 ;; esac\nexec " ..
      real .. "/pg_ctl \"$@\"\n")
    sys.chmod(fake .. "/pg_ctl", 493)
    local refused = orch({ "local", "destroy" }, sub, { ORCH_PG_BINDIR = fake })
    assert.equals(1, refused.code, refused.stdout .. refused.stderr)
    assert.matches("did not stop", refused.stderr)
    local still = status_of(sub)
    assert.is_true(still.running)
    assert.is_true(sys.exists(still.dir .. "/data/PG_VERSION"))

    -- destroy: stopped first, then removed
    local pid2 = still.pid
    local d = orch({ "local", "destroy" }, sub)
    assert.equals(0, d.code, d.stderr)
    assert.matches("stopped and removed the local cluster", d.stdout)
    assert.is_false(alive(pid2), "the server is gone")
    assert.is_nil(sys.stat(still.dir))
    local gone, gr = status_of(sub)
    assert.equals(1, gr.code)
    assert.is_false(gone.initialized)
    assert.equals(0, orch({ "local", "destroy" }, sub).code)   -- nothing to remove is fine
  end)

  it("refuses an environment that does not use a local cluster", function()
    local dir = H.tmpdir()
    H.write(dir .. "/orch.env.lua", "return { prod = { database = { env = \"X_URL\" } } }\n")
    local r = orch({ "local", "status", "--env", "prod" }, dir)
    assert.equals(2, r.code)
    assert.matches("environment prod does not use a local cluster", r.stderr)
  end)
end)
