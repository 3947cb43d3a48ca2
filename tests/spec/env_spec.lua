-- orch.env: named environments from orch.env.lua, no secrets in files.
local H = require "helper"
local sys = require "orch.sys"
local E = require "orch.env"

local function file(text)
  local dir = H.tmpdir()
  return H.write(dir .. "/orch.env.lua", text), dir
end

local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return tostring(e), type(e) == "table" and e.exit_code
end

describe("orch.env", function()
  it("loads a named environment with defaults filled in", function()
    local path = file([[return {
      prod = { database = { env = "X_PROD_URL", service = "prod" }, protected = true, placeholders = { app = "ticket_app" } },
      dev = {},
    }]])
    local e = E.load("prod", path)
    assert.equals("prod", e.name)
    assert.is_true(e.protected)
    assert.equals("backups/prod", e.backups.dir)
    assert.equals("ticket_app", e.placeholders.app)
    assert.same({}, E.load("dev", path).webhooks)
  end)

  it("an unknown name is a usage error (exit 2) listing the known ones", function()
    local path = file("return { dev = {}, staging = {}, prod = {} }")
    local msg, code = err_of(E.load, "prdo", path)
    assert.equals(2, code)
    assert.matches("no environment named 'prdo'", msg)
    assert.matches("known: dev, prod, staging", msg)
  end)

  it("without the file, names the file it looked for", function()
    local msg, code = err_of(E.load, "prod", "/nonexistent/orch.env.lua")
    assert.equals(2, code)
    assert.matches("/nonexistent/orch.env.lua", msg, 1, true)
  end)

  it("without orch.env.lua, dev is the local throwaway cluster (the README's first command works anywhere)", function()
    local e = E.load("dev", "/nonexistent/orch.env.lua")
    assert.is_true(e.database.local_cluster)
    assert.equals("backups/dev", e.backups.dir)
  end)

  it("refuses secrets in the file: URLs with passwords, password= conninfo, password fields", function()
    for _, text in ipairs {
      [[return { prod = { database = { url = "postgresql://app:s3cret@db.example.com/app" } } }]],
      [[return { prod = { database = { conninfo = "host=db password=s3cret" } } }]],
      [[return { prod = { database = { password = "s3cret" } } }]],
    } do
      local msg = err_of(E.load, "prod", file(text))
      assert.matches("secret", msg)
      assert.is_nil(msg:find("s3cret", 1, true), "the error repeats the secret: " .. msg)
    end
  end)

  it("chooses the database: --db, then the environment's variable, then its service (before DATABASE_URL); a variable it names but nobody set is an error", function()
    local e = E.load("prod", file([[return { prod = { database = { env = "ORCH_SPEC_NO_SUCH_VAR", service = "prod" } } }]]))
    assert.equals("postgresql://a@h/d", E.database(e, { db = "postgresql://a@h/d" }))
    -- the variable is not set: its service, whatever DATABASE_URL says (env_commands_spec runs it with a decoy DATABASE_URL)
    assert.equals("service=prod", E.database(e, {}))
    local only_var = E.load("prod", file([[return { prod = { database = { env = "ORCH_SPEC_NO_SUCH_VAR" } } }]]))
    local msg = err_of(E.database, only_var, {})
    assert.matches("environment prod reads its database from ORCH_SPEC_NO_SUCH_VAR, which is not set: set it, or pass %-%-db URL", msg)
  end)

  it("reads a real environment variable named by database.env (through a child orch)", function()
    local path, dir = file([[return { prod = { database = { env = "SPEC_PROD_URL" } } }]])
    H.write(dir .. "/show.lua", [[local E = require "orch.env"; print(E.database(E.load("prod")))]])
    local r = H.orch({ dir .. "/show.lua" }, { cwd = dir, env = { DATABASE_URL = false, SPEC_PROD_URL = "postgresql://u@db.internal/app" } })
    assert.is_true(r.ok, r.stderr)
    assert.equals("postgresql://u@db.internal/app\n", r.stdout)
    sys.rmtree(dir)
  end)

  it("the example project's orch.env.lua loads and reads prod from PROD_DATABASE_URL", function()
    local e = E.load("prod", "orch.env.lua")
    assert.is_true(e.protected)
    assert.equals("PROD_DATABASE_URL", e.database.env)
    assert.truthy(E.load("dev", "orch.env.lua").database.local_cluster)
    E.load("staging", "orch.env.lua")
  end)
end)
