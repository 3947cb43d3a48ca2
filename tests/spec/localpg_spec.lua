-- orch.localpg: the throwaway cluster the dev recipe and the tests use.
local localpg = require "orch.localpg"
local sys = require "orch.sys"
local H = require "helper"

describe("orch.localpg", function()
  it("finds the server programs", function()
    local bin = localpg.bindir()
    assert.is_true(sys.exists(bin .. "/initdb"))
    assert.is_true(sys.exists(bin .. "/pg_ctl"))
  end)

  it("says what to install when ORCH_PG_BINDIR points nowhere", function()
    local r = H.orch({ H.write(H.tmpdir() .. "/b.lua", "require('orch.localpg').bindir()\n") },
      { env = { ORCH_PG_BINDIR = "/nonexistent" } })
    assert.equals(1, r.code)
    assert.matches("ORCH_PG_BINDIR=/nonexistent has no initdb", r.stderr, 1, true)
  end)

  describe("a cluster of its own", function()
    local dir, pg
    setup(function()
      dir = H.tmpdir() .. "/cluster"
      pg = localpg.ensure(dir)
    end)
    teardown(function()
      localpg.open(dir):destroy()
    end)

    it("listens on a loopback port only and accepts connections", function()
      local c <close> = pg:connect("postgres")
      assert.equals("127.0.0.1", c:value("SHOW listen_addresses"))
      assert.equals(tostring(pg.port), c:value("SHOW port"))
      if sys.getuid() == 0 then
        -- PostgreSQL refuses root: the server runs as the postgres user
        local owner = sys.stat(pg.data).uid
        assert.equals(sys.user("postgres").uid, owner)
      end
    end)

    it("is reused, not re-created, by a second ensure", function()
      local c <close> = pg:connect("postgres")
      local started = c:value("SELECT pg_postmaster_start_time()::text")
      local again = localpg.ensure(dir)
      assert.equals(pg.port, again.port)
      local c2 <close> = again:connect("postgres")
      assert.equals(started, c2:value("SELECT pg_postmaster_start_time()::text"))
    end)

    it("creates and re-creates databases", function()
      local url = pg:create_database("app")
      local c <close> = require("orch.db").connect(url)
      c:exec("CREATE TABLE keep (id int)")
      c:close()
      pg:create_database("app", { drop = true })
      local c2 <close> = pg:connect("app")
      assert.equals(0, c2:value("SELECT count(*) FROM pg_tables WHERE tablename = 'keep'"))
    end)

    it("moves to a free port when its old port is taken while stopped", function()
      pg:stop()
      assert.is_false(pg:running())
      -- occupy the old port with the test cluster's neighbour: a listening socket
      local old = pg.port
      local r = sys.spawn { "sh", "-c", string.format([[python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d)); s.listen(1); print("up", flush=True); time.sleep(20)' > %s/holder.out & echo $!]], old, pg.dir) }
      local holder = tonumber(r.stdout:match("%d+"))
      finally(function() sys.kill(holder) end)
      local deadline = sys.monotonic() + 30
      while not (H.read(pg.dir .. "/holder.out") or ""):find("up") and sys.monotonic() < deadline do sys.sleep(0.05) end
      assert.is_true(sys.port_open(old), "the old port is taken")
      local again = localpg.ensure(dir)
      assert.are_not.equal(old, again.port)
      local c <close> = again:connect("postgres")
      assert.equals(1, c:value("SELECT 1"))
      pg = again
    end)

    it("moves to another port when its port is taken between the check and the server's bind", function()
      pg:stop()
      -- a socket bound to the port but not listening: nothing answers there (the check finds it
      -- free), and the server cannot bind it: what a port taken a moment after the check looks like
      local old = pg.port
      local r = sys.spawn { "sh", "-c", string.format([[python3 -c '
import socket, time
s = socket.socket()
# closed connections of the stopped server keep the port in TIME_WAIT for up to 60 s: try until it is free
for i in range(700):
    try:
        s.bind(("127.0.0.1", %d)); break
    except OSError:
        time.sleep(0.1)
print("up", flush=True); time.sleep(60)' > %s/binder.out 2>&1 & echo $!]], old, pg.dir) }
      local holder = tonumber(r.stdout:match("%d+"))
      finally(function() sys.kill(holder) end)
      local deadline = sys.monotonic() + 80
      while not (H.read(pg.dir .. "/binder.out") or ""):find("up") do
        assert.is_true(sys.monotonic() < deadline, "the port could not be bound: " .. (H.read(pg.dir .. "/binder.out") or ""))
        sys.sleep(0.05)
      end
      assert.is_false(sys.port_open(old), "the bound port answers")
      local again = localpg.ensure(dir)
      assert.are_not.equal(old, again.port)
      local c <close> = again:connect("postgres")
      assert.equals(1, c:value("SELECT 1"))
      assert.matches("Address already in use", H.read(again.logfile), 1, true)
      pg = again
    end)
  end)

  it("reports a failed start with the server's own log lines", function()
    local dir = H.tmpdir() .. "/broken"
    local pg = localpg.open(dir):init()
    finally(function() localpg.open(dir):destroy() end)
    local f = assert(io.open(pg.data .. "/postgresql.conf", "a"))
    f:write("\nshared_buffers = 'not a size'\n")
    f:close()
    local ok, e = pcall(pg.start, pg)
    assert.is_false(ok)
    assert.matches("did not start", e)
    assert.matches("shared_buffers", e)
  end)

  describe("a cluster of another PostgreSQL build (bindir)", function()
    it("runs that build's server and remembers it for a later open without bindir", function()
      local bin = require("pgmajors").bindir(12)
      local dir = H.tmpdir() .. "/pg12"
      local pg = localpg.ensure(dir, { bindir = bin })
      finally(function() localpg.open(dir):destroy() end)
      local c <close> = pg:connect("postgres")
      assert.equals(12, tonumber(c:value("SHOW server_version_num")) // 10000)
      assert.equals(12, pg:major())
      -- 12 has no DROP DATABASE ... WITH (FORCE): drop_database ends the sessions itself
      pg:create_database("busy")
      local busy <close> = pg:connect("busy")
      pg:drop_database("busy")
      assert.is_nil(c:value("SELECT 1 FROM pg_database WHERE datname = 'busy'"))
      local again = localpg.open(dir)
      assert.equals(bin, again.bin)
      assert.is_true(again:running())
      again:stop()
      assert.is_false(localpg.open(dir):running())
    end)

    it("refuses a bin directory without the server programs, naming the missing one", function()
      local empty = H.tmpdir()
      local ok, e = pcall(localpg.open, H.tmpdir() .. "/x", { bindir = empty })
      assert.is_false(ok)
      assert.matches("has no initdb in it", e, 1, true)
    end)

  end)
end)
