-- §3 of issue 10: the environment decides, for every command. --env NAME
-- (or ORCH_ENV) picks the database, protection, lock_timeout and retries,
-- the backups directory and retention; an unknown name is exit 2;
-- ORCH_ALLOW_CLEAN never overrides protected = true; orch.env.lua is checked
-- when loaded (a wrong type names the key) and os.exit inside it cannot end
-- orch with a pass. Real commands, real server.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local MIGRATIONS = {
  ["V1__items.sql"] = "CREATE TABLE items (id int PRIMARY KEY, name text);\n",
  ["U1__items.sql"] = "DROP TABLE items;\n",
  ["V2__item_owner.sql"] = "ALTER TABLE items ADD COLUMN owner text;\n",
  ["U2__item_owner.sql"] = "ALTER TABLE items DROP COLUMN owner;\n",
}

-- A project: migrations, and an orch.env.lua whose prod reads SPEC_PROD_URL.
local function project(prod_extra)
  local dir = H.tmpdir()
  sys.mkdir_p(dir .. "/migrations")
  for f, text in pairs(MIGRATIONS) do H.write(dir .. "/migrations/" .. f, text) end
  H.write(dir .. "/orch.env.lua", string.format([[return {
  dev = { backups = { dir = %q } },
  prod = { database = { env = "SPEC_PROD_URL" }, protected = true, backups = { dir = %q, keep = 2 },
           lock_timeout = "1s", retries = 1, %s },
}]], dir .. "/backups/dev", dir .. "/backups/prod", prod_extra or ""))
  return dir
end

-- The test run's server, as PG* variables pointing at another database: a
-- command that ignored the environment would land there.
local function decoy_env(prod_url, decoy_name, extra)
  local pg = H.cluster()
  local e = { SPEC_PROD_URL = prod_url, DATABASE_URL = pg:url(decoy_name), PGHOST = pg.host, PGPORT = tostring(pg.port),
              PGUSER = pg.user, PGDATABASE = decoy_name, ORCH_ENV = false, ORCH_ALLOW_CLEAN = false }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function orch(dir, argv, env, opts)
  opts = opts or {}
  opts.cwd, opts.env = dir, env
  return H.orch(argv, opts)
end

local function has_table(url, name)
  local c <close> = db.connect(url)
  return c:value("SELECT to_regclass($1) IS NOT NULL", name)
end

describe("the environment decides, for every command", function()
  local prod_url, prod_name, decoy_url, decoy_name
  before_each(function()
    prod_url, prod_name = H.fresh_db("envcmd_prod")
    decoy_url, decoy_name = H.fresh_db("envcmd_decoy")
  end)
  after_each(function()
    H.drop_db(prod_name)
    H.drop_db(decoy_name)
  end)

  it("an unknown --env (or ORCH_ENV) is a usage error (exit 2) for every command, naming the known ones", function()
    local dir = project()
    local env = decoy_env(prod_url, decoy_name)
    H.write(dir .. "/x.dump", "not an archive")
    for _, argv in ipairs {
      { "migrate" }, { "status" }, { "undo", "--yes" }, { "repair", "--yes" }, { "clean", "--yes" }, { "baseline", "--yes" },
      { "backup" }, { "restore", dir .. "/x.dump", "--swap", "--yes" }, { "verify", dir .. "/x.dump", "--deep" }, { "check" },
      { "validate" }, { "backups", "list" }, { "runs" },
    } do
      local a = { table.unpack(argv) }
      a[#a + 1] = "--env"
      a[#a + 1] = "prdo"
      local r = orch(dir, a, env)
      assert.equals(2, r.code, table.concat(a, " ") .. "\n" .. r.stdout .. r.stderr)
      assert.matches("no environment named 'prdo' in orch%.env%.lua %(known: dev, prod%)", r.stderr, nil, table.concat(a, " "))
      local via = orch(dir, argv, decoy_env(prod_url, decoy_name, { ORCH_ENV = "prdo" }))
      assert.equals(2, via.code, "ORCH_ENV=prdo orch " .. table.concat(argv, " ") .. "\n" .. via.stdout .. via.stderr)
    end
    assert.is_false(has_table(decoy_url, "public.orch_schema_history"))
    sys.rmtree(dir)
  end)

  it("migrate --env prod migrates prod's database (not DATABASE_URL's or PG*'s) and needs approval: --yes, or y on a terminal", function()
    local dir = project()
    local env = decoy_env(prod_url, decoy_name)
    -- no terminal, no --yes: stops before any change
    local r = orch(dir, { "migrate", "--env", "prod" }, env)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("environment prod is protected and there is no terminal to ask: pass %-%-yes", r.stderr)
    assert.is_false(has_table(prod_url, "public.orch_schema_history"))
    -- on a terminal the plan is shown and the question asked; "n" changes nothing
    local cmd = string.format("cd %s && %s migrate --env prod", dir, H.orch_bin)
    local t = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "n\n", timeout = 60, env = env }
    assert.equals(1, t.code, t.stdout .. t.stderr)
    assert.matches("V1__items%.sql", t.stdout)
    assert.matches("environment prod is protected: apply 2 migrations to prod %(" .. prod_name .. "%)%? %[y/N%]", t.stdout)
    assert.matches("not approved: nothing was changed", t.stdout)
    assert.is_false(has_table(prod_url, "public.items"))
    -- approved: prod's database is migrated, and only it
    local ok = orch(dir, { "migrate", "--env", "prod", "--yes" }, env)
    assert.equals(0, ok.code, ok.stdout .. ok.stderr)
    assert.is_true(has_table(prod_url, "public.items"))
    assert.is_false(has_table(decoy_url, "public.items"))
    -- ORCH_ENV=prod is the same as --env prod
    local st = orch(dir, { "status", "--json" }, decoy_env(prod_url, decoy_name, { ORCH_ENV = "prod" }))
    assert.equals(0, st.code, st.stderr)
    assert.equals(2, json.decode(st.stdout).summary.applied)
    -- validate, undo (protected: --yes) and repair work on prod's database too
    assert.equals(0, orch(dir, { "validate", "--env", "prod" }, env).code)
    local u = orch(dir, { "undo", "--env", "prod" }, env)
    assert.equals(1, u.code, u.stdout .. u.stderr)
    assert.equals(0, orch(dir, { "undo", "--env", "prod", "--yes" }, env).code)
    assert.is_true(has_table(prod_url, "public.items"))
    local c <close> = db.connect(prod_url)
    assert.is_false(c:value("SELECT count(*) > 0 FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'owner'"))
    c:close()
    local rp = orch(dir, { "repair", "--env", "prod" }, env)
    assert.equals(1, rp.code, rp.stdout .. rp.stderr)
    assert.matches("protected", rp.stderr)
    assert.equals(0, orch(dir, { "repair", "--env", "prod", "--yes" }, env).code)
    sys.rmtree(dir)
  end)

  it("migrate --env prod uses prod's lock_timeout and retries (an application lock: 1s, 2 attempts)", function()
    local dir = project()
    local env = decoy_env(prod_url, decoy_name)
    assert.equals(0, orch(dir, { "migrate", "--env", "prod", "--yes", "--target", "1" }, env).code)
    local app <close> = db.connect(prod_url)
    app:exec("BEGIN")
    app:exec("LOCK TABLE items IN ACCESS SHARE MODE")   -- V2's ALTER TABLE must wait for it
    local t0 = sys.monotonic()
    local r = orch(dir, { "migrate", "--env", "prod", "--yes" }, env)
    local took = sys.monotonic() - t0
    app:exec("ROLLBACK")
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("V2__item_owner%.sql: .*SQLSTATE 55P03%); retrying in [%d.]+s %(attempt 2 of 2%)", r.stderr)
    assert.is_nil(r.stderr:find("attempt 3", 1, true), r.stderr)
    assert.matches("lock timeout", r.stderr)
    -- two attempts of prod's 1s, not the 5s default (two of those take 10 s at least); the rest of
    -- the bound is for a loaded machine's start-up and connections
    assert.is_true(took >= 2 and took < 9, string.format("took %.1fs", took))
    sys.rmtree(dir)
  end)

  it("backup honours ORCH_ENV: prod's database into prod's backups directory, then prod's retention (keep = 2)", function()
    local dir = project()
    local env = decoy_env(prod_url, decoy_name, { ORCH_ENV = "prod" })
    assert.equals(0, orch(dir, { "migrate", "--yes" }, env).code)
    local paths = {}
    for i = 1, 3 do
      local b = orch(dir, { "backup", "--json" }, env)
      assert.equals(0, b.code, b.stdout .. b.stderr)
      local m = json.decode(b.stdout)
      assert.equals(prod_name, m.database)
      assert.equals("prod", m.env)
      assert.equals(dir .. "/backups/prod", m.path:match("^(.*)/[^/]+$"))
      paths[i] = m.path
      if i == 3 then assert.equals(1, #m.pruned) assert.equals(paths[1], m.pruned[1]) end
    end
    assert.is_false(sys.exists(paths[1]))
    assert.is_true(sys.exists(paths[2]) and sys.exists(paths[3]))
    assert.is_nil(sys.listdir(dir .. "/backups/default"))
    -- backups list follows ORCH_ENV too
    local l = orch(dir, { "backups", "list", "--json" }, env)
    assert.equals(2, #json.decode(l.stdout))
    -- restore into the protected environment needs --yes; with it, prod's database is the target
    local r = orch(dir, { "restore", paths[3], "--swap" }, env)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("environment prod is protected", r.stderr)
    local ok = orch(dir, { "restore", paths[3], "--swap", "--yes" }, env)
    assert.equals(0, ok.code, ok.stdout .. ok.stderr)
    assert.matches("into " .. prod_name .. " %(swap%)", ok.stdout)
    H.drop_db(ok.stdout:match("kept as (%S+)"))
    -- verify --deep restores into a scratch database on prod's server
    local v = orch(dir, { "verify", paths[3], "--deep" }, env)
    assert.equals(0, v.code, v.stdout .. v.stderr)
    assert.matches("row counts match after a restore", v.stdout)
    sys.rmtree(dir)
  end)

  it("ORCH_ALLOW_CLEAN never overrides protected = true (nor does allow_clean)", function()
    local dir = project("allow_clean = true")
    local env = decoy_env(prod_url, decoy_name, { ORCH_ALLOW_CLEAN = "1" })
    assert.equals(0, orch(dir, { "migrate", "--env", "prod", "--yes" }, env).code)
    local r = orch(dir, { "clean", "--env", "prod", "--yes" }, env)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("environment prod is protected: orch clean is refused %(ORCH_ALLOW_CLEAN and allow_clean never override protected = true%)", r.stderr)
    assert.is_true(has_table(prod_url, "public.items"))
    -- baseline on a protected environment asks too
    local b = orch(dir, { "baseline", "--env", "prod", "--version", "5" }, env)
    assert.equals(1, b.code, b.stdout .. b.stderr)
    assert.matches("environment prod is protected and there is no terminal", b.stderr)
    -- an unprotected environment with ORCH_ALLOW_CLEAN=1 is cleaned (its own database: DATABASE_URL here)
    assert.equals(0, orch(dir, { "migrate", "--env", "dev" }, env).code)
    assert.is_true(has_table(decoy_url, "public.items"))
    local d = orch(dir, { "clean", "--env", "dev", "--yes" }, env)
    assert.equals(0, d.code, d.stdout .. d.stderr)
    assert.is_false(has_table(decoy_url, "public.items"))
    sys.rmtree(dir)
  end)

  it("orch.env.lua is checked when loaded: a wrong type or an unknown setting names the environment and the key", function()
    local dir = project()
    local env = decoy_env(prod_url, decoy_name)
    for _, case in ipairs {
      { [[protected = "yes"]], "environment prod: protected is 'yes' %(a string%); it must be true or false" },
      { [[lock_timeout = "soon"]], "environment prod: lock_timeout is 'soon' %(a string%); it must be a duration" },
      { [[retries = 1.5]], "environment prod: retries is 1%.5 %(a number%); it must be a whole number" },
      { [[release = { atomic = "no" }]], "environment prod: release%.atomic is 'no' %(a string%); it must be true or false" },
      { [[release = { atomik = true }]], "environment prod: release%.atomik is not a setting orch knows %(release takes atomic, discard_writes%)" },
      { [[protect = true]], "environment prod: 'protect' is not a setting orch knows" },
      { [[database = "prod"]], "environment prod: database is 'prod' %(a string%); it must be a table" },
    } do
      local d = project(case[1])
      local r = orch(d, { "status", "--env", "prod" }, env)
      assert.equals(1, r.code, case[1] .. "\n" .. r.stdout .. r.stderr)
      assert.matches(case[2], r.stderr, nil, case[1])
      sys.rmtree(d)
    end
    sys.rmtree(dir)
  end)

  it("os.exit inside orch.env.lua cannot make a check pass: loading it, or a check it defines, is an error", function()
    local env = decoy_env(prod_url, decoy_name)
    for _, text in ipairs {
      "os.exit(0)\nreturn { prod = {} }",
      "pcall(os.exit, 0)\nreturn { prod = {} }",
      "require('os').exit(true)\nreturn { prod = {} }",
    } do
      local dir = project()
      H.write(dir .. "/orch.env.lua", text)
      local r = orch(dir, { "check", "--env", "prod" }, env)
      assert.equals(1, r.code, text .. "\n" .. r.stdout .. r.stderr)
      assert.matches("called os%.exit%(%w*%) while loading: refused", r.stderr)
      sys.rmtree(dir)
    end
    -- a team check that calls os.exit(0) fails as a check; orch check does not end with 0
    local dir = project([[health = { checks = { { name = "sneaky", run = function() os.exit(0) end } } }]])
    local r = orch(dir, { "check", "--env", "prod", "--only", "db" }, env)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("sneaky", r.stdout)
    assert.matches("called os%.exit%(0%)", r.stdout)
    sys.rmtree(dir)
  end)
end)
