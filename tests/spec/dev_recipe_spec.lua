-- recipes/dev.lua: the README's first command.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"

describe("recipes/dev.lua", function()
  it("migrates a configured database with seed data and reports a summary", function()
    local url, name = H.fresh_db("dev")
    local r = H.orch { "recipes/dev.lua", "--db", url }
    assert.is_true(r.ok, r.stderr)
    assert.matches("dev database ready", r.stdout)
    assert.matches("schema at V100", r.stdout)
    local c <close> = db.connect(url)
    assert.equals(20, c:value("SELECT count(*) FROM tickets"))
    -- a second run has nothing to do and still succeeds
    local again = H.orch { "recipes/dev.lua", "--db", url }
    assert.is_true(again.ok, again.stderr)
    assert.matches("nothing to migrate", again.stderr)
    c:close()
    H.drop_db(name)
  end)

  it("starts a throwaway local cluster when no database is configured", function()
    local dir = H.tmpdir()
    assert.is_true(sys.spawn({ "ln", "-s", sys.realpath("migrations"), dir .. "/migrations" }).ok)
    local recipe = H.recipe("dev", dir)
    finally(function()
      require("orch.localpg").open(dir .. "/.orch/localpg"):destroy()
      sys.rmtree(dir)
    end)
    local r = H.orch({ recipe }, { cwd = dir, env = { DATABASE_URL = false, PGHOST = false, PGPORT = "1", PGDATABASE = false } })
    assert.is_true(r.ok, r.stderr)
    assert.matches("using the local throwaway cluster", r.stderr)
    assert.matches("dev database ready", r.stdout)
  end)
end)
