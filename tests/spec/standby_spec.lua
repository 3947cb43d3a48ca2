-- Health checks and the prod recipe against a real streaming standby of the
-- test cluster: role, replication lag seen from both sides, and prod
-- refusing to migrate a standby before it changes anything.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local health = require "orch.health"

describe("with a streaming standby", function()
  local sb, url, name
  setup(function()
    url, name = H.fresh_db("standby")
    local c <close> = db.connect(url)
    c:exec("CREATE TABLE t (id int)")
    sb = H.standby()
  end)
  teardown(function()
    if sb then sb:destroy() end
    H.drop_db(name)
  end)

  -- wait until the standby has replayed everything the primary wrote so far
  local function caught_up(primary, standby)
    local lsn = primary:value("SELECT pg_current_wal_insert_lsn()::text")
    for _ = 1, 1200 do
      -- the replay position moves a moment before the replayed commit's time is recorded: wait for both
      if standby:value("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AND pg_last_xact_replay_timestamp() IS NOT NULL", lsn) then return true end
      sys.sleep(0.05)
    end
    error("the standby did not catch up with " .. lsn)
  end

  it("the standby reports its role and how far behind it is; the primary sees its standby", function()
    local p <close> = db.connect(url)
    p:exec("INSERT INTO t VALUES (1)")
    local s <close> = sb:connect(name)
    caught_up(p, s)
    local r = health.db.role(s)
    assert.equals("standby", r.observed)
    r = health.db.role(s, { expect = "primary" })
    assert.equals("fail", r.status)
    assert.equals("the server is a standby, expected a primary: migrations must run on the primary", r.output)
    r = health.db.replication_lag(s, { max = "60s" })
    assert.equals("pass", r.status)
    -- with replay paused, WAL the standby has received but not replayed is
    -- lag, as old as the last transaction it did replay
    s:exec("SELECT pg_wal_replay_pause()")
    finally(function() if not s:is_closed() then s:exec("SELECT pg_wal_replay_resume()") end end)
    sys.sleep(1.2)
    p:exec("INSERT INTO t VALUES (2)")
    local lsn = p:value("SELECT pg_current_wal_insert_lsn()::text")
    local deadline = sys.monotonic() + 60
    while not s:value("SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", lsn) do
      assert.is_true(sys.monotonic() < deadline, "the standby did not receive " .. lsn .. " within 60 s")
      sys.sleep(0.05)
    end
    r = health.db.replication_lag(s, { max = "1s" })
    assert.equals("fail", r.status)
    assert.matches("replication lag [%d.]+s exceeds 1s", r.output)
    assert.matches("^standby, [%d.]+s behind its primary$", r.detail)
    -- replayed again: caught up is no lag, however idle the primary is
    s:exec("SELECT pg_wal_replay_resume()")
    caught_up(p, s)
    sys.sleep(1.2)
    -- (other specs may be writing, a lot at times: look until a moment when all it received is replayed)
    deadline = sys.monotonic() + 60
    repeat
      r = health.db.replication_lag(s, { max = "1s" })
      if r.detail ~= "standby, replayed all it received" then sys.sleep(0.05) end
    until r.detail == "standby, replayed all it received" or sys.monotonic() > deadline
    assert.equals("standby, replayed all it received", r.detail)
    assert.equals("pass", r.status)
    assert.equals(0, r.observed)
    r = health.db.replication_lag(p, { max = "10s" })
    assert.equals("pass", r.status)
    assert.matches("^1 standby%(s%), worst replay lag", r.detail)
    assert.equals("primary", health.db.role(p, { expect = "primary" }).observed)
  end)

  it("prod pointed at the standby stops in preflight, before any backup or change", function()
    local dir = H.tmpdir()
    sys.mkdir_p(dir .. "/migrations")
    H.write(dir .. "/migrations/V1__a.sql", "CREATE TABLE a (id int);\n")
    H.write(dir .. "/orch.env.lua", string.format([[return { prod = { database = { env = "SB_URL" }, protected = true, backups = { dir = %q } } }]],
      dir .. "/backups"))
    local r = H.orch({ H.recipe("prod", dir), "--yes" }, { cwd = dir, env = { SB_URL = sb:url(name), DATABASE_URL = false } })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("preflight found problems", r.stdout)
    assert.matches("the server is a standby, expected a primary: migrations must run on the primary", r.stdout)
    assert.matches("FAILED %(nothing was changed%)", r.stdout)
    assert.is_false(sys.exists(dir .. "/backups") and #sys.listdir(dir .. "/backups") > 1)
    sys.rmtree(dir)
  end)
end)
