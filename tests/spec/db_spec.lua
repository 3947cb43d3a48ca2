-- orch.db against a real server: values, parameters, errors, transactions,
-- COPY streams, notices, closing, and connection failures.
local H = require "helper"
local db = require "orch.db"
local sys = require "orch.sys"

describe("orch.db", function()
  local url, name, c
  setup(function()
    url, name = H.fresh_db("db")
    c = db.connect(url)
  end)
  teardown(function()
    c:close()
    H.drop_db(name)
  end)

  describe("connect", function()
    it("accepts a URL, a conninfo string and a table of libpq keywords", function()
      local pg = H.cluster()
      local a <close> = db.connect(url)
      local b <close> = db.connect(string.format("host=127.0.0.1 port=%d user=postgres dbname=%s", pg.port, name))
      local t <close> = db.connect { host = "127.0.0.1", port = pg.port, user = "postgres", dbname = name }
      for _, x in ipairs { a, b, t } do assert.equals(name, x:info().dbname) end
    end)

    it("uses libpq's PG* defaults when given nothing", function()
      local pg = H.cluster()
      local r = H.orch({ H.write(H.tmpdir() .. "/pgenv.lua",
        "local c <close> = require('orch.db').connect(); print(c:info().dbname, c:value('SELECT current_setting($1)', 'application_name'))\n") },
        { env = { PGHOST = "127.0.0.1", PGPORT = tostring(pg.port), PGUSER = "postgres", PGDATABASE = name } })
      assert.is_true(r.ok, r.stderr)
      assert.equals(name .. "\torch\n", r.stdout)
    end)

    it("reports an unreachable port with host, port, database and user", function()
      local port = sys.free_port()
      local ok, e = pcall(db.connect, string.format("postgresql://someone@127.0.0.1:%d/somedb", port))
      assert.is_false(ok)
      assert.is_true(e.connect_failed)
      local msg = tostring(e)
      assert.matches("host=127.0.0.1 port=" .. port .. " dbname=somedb user=someone", msg, 1, true)
      assert.matches("Connection refused", msg)
      assert.matches("hint: is the server running", msg)
    end)

    it("gives up on a server that never answers within connect_timeout", function()
      -- a listening socket that never accepts: the TCP handshake completes, nothing answers
      local r = sys.spawn { "sh", "-c", [[python3 -c '
import socket, time, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True); time.sleep(30)' > /tmp/orch-blackhole-$$ & echo $! $$]] }
      local pid, shpid = r.stdout:match("(%d+) (%d+)")
      local port
      finally(function() sys.kill(tonumber(pid)); os.remove("/tmp/orch-blackhole-" .. shpid) end)
      local deadline = sys.monotonic() + 30
      repeat
        port = (H.read("/tmp/orch-blackhole-" .. shpid) or ""):match("%d+")
        if not port then sys.sleep(0.05) end
      until port or sys.monotonic() > deadline
      assert.truthy(port, "the silent server did not say its port within 30 s")
      local t0 = sys.monotonic()
      local ok, e = pcall(db.connect, { host = "127.0.0.1", port = port, user = "x", dbname = "y" }, { connect_timeout = 2 })
      local took = sys.monotonic() - t0
      assert.is_false(ok)
      assert.matches("timeout", tostring(e))
      assert.is_true(took >= 1.5 and took < 10, "took " .. took .. "s")
    end)

    it("reports a wrong password without ever printing it", function()
      local pg = H.cluster()
      local secret = "wrong-secret-" .. sys.getpid()
      local ok, e = pcall(db.connect, string.format("postgresql://orch_pw:%s@127.0.0.1:%d/postgres", secret, pg.port))
      assert.is_false(ok)
      local msg = tostring(e)
      assert.matches("password authentication failed for user \"orch_pw\"", msg, 1, true)
      assert.matches("user=orch_pw", msg, 1, true)
      assert.not_matches(secret, msg, 1, true)
      -- and through the binary: stderr does not carry it either
      local r = H.orch({ H.write(H.tmpdir() .. "/pw.lua", "require('orch.db').connect(os.getenv('U'))\n") },
        { env = { U = string.format("postgresql://orch_pw:%s@127.0.0.1:%d/postgres", secret, pg.port) } })
      assert.equals(1, r.code)
      assert.not_matches(secret, r.stderr, 1, true)
      assert.matches("password authentication failed", r.stderr)
    end)

    it("connects with the right password", function()
      local pg = H.cluster()
      local ok_c <close> = db.connect(string.format("postgresql://orch_pw:correct-horse-battery@127.0.0.1:%d/postgres", pg.port))
      assert.equals("orch_pw", ok_c:value("SELECT current_user"))
    end)
  end)

  describe("query", function()
    it("returns typed values and the column names in order", function()
      local rows = c:query([[SELECT 42::int4 AS i, 9007199254740993::int8 AS big, 2.5::float8 AS f,
        1.25::numeric AS n, true AS b, 'x'::text AS s, '\x00ff'::bytea AS raw, NULL::text AS z]])
      assert.same({ "i", "big", "f", "n", "b", "s", "raw", "z" }, rows.columns)
      local r = rows[1]
      assert.equals(math.tointeger(42), r.i)
      assert.equals(9007199254740993, r.big)
      assert.equals("integer", math.type(r.big))
      assert.equals(2.5, r.f)
      assert.equals(1.25, r.n)
      assert.is_true(r.b)
      assert.equals("x", r.s)
      assert.equals("\0\255", r.raw)
    end)

    it("tells a NULL column (nil) from a missing column (error)", function()
      local r = c:query("SELECT NULL::int AS a")[1]
      assert.is_nil(r.a)
      assert.has_error(function() return r.b end, "no column 'b' in this result (columns: a)")
    end)

    it("sends values only as $n parameters, including nil and booleans", function()
      local r = c:query("SELECT $1::text AS a, $2::int AS b, $3::bool AS c, $4::text IS NULL AS d, $5::float8 AS e",
        "it's; DROP TABLE x", 7, false, nil, 0.5)[1]
      assert.equals("it's; DROP TABLE x", r.a)
      assert.equals(7, r.b)
      assert.is_false(r.c)
      assert.is_true(r.d)
      assert.equals(0.5, r.e)
    end)

    it("counts affected rows", function()
      c:exec("CREATE TABLE q (id int)")
      local r = c:query("INSERT INTO q SELECT generate_series(1, 5)")
      assert.equals(5, r.affected)
      assert.equals(5, c:value("SELECT count(*) FROM q"))
    end)

    it("raises SQL errors as objects with sqlstate, message, position and the statement", function()
      local ok, e = pcall(c.query, c, "SELECT 1,\n  nosuchcolumn FROM pg_class")
      assert.is_false(ok)
      assert.equals("42703", e.sqlstate)
      assert.equals('column "nosuchcolumn" does not exist', e.message)
      assert.equals(13, e.position)
      assert.equals("SELECT 1,\n  nosuchcolumn FROM pg_class", e.query)
      local s = tostring(e)
      assert.matches("(SQLSTATE 42703)", s, 1, true)
      assert.matches("statement:   nosuchcolumn FROM pg_class", s, 1, true)
      assert.matches("at line 2, column 3", s, 1, true)
      assert.is_true(db.is_error(e))
    end)

    it("carries detail and hint from the server", function()
      c:exec("CREATE TABLE u (id int PRIMARY KEY)")
      c:exec("INSERT INTO u VALUES (1)")
      local ok, e = pcall(c.query, c, "INSERT INTO u VALUES ($1)", 1)
      assert.is_false(ok)
      assert.equals("23505", e.sqlstate)
      assert.equals("Key (id)=(1) already exists.", e.detail)
      assert.equals("u_pkey", e.constraint)
      assert.equals("u", e.table)
      local ok2, e2 = pcall(c.query, c, "SELECT lenght('x')")
      assert.is_false(ok2)
      assert.matches("hint: No function matches", tostring(e2), 1, true)
    end)

    it("reports a syntax error with SQLSTATE 42601 and the statement", function()
      local ok, e = pcall(c.exec, c, "CREATE TABEL broken (id int)")
      assert.is_false(ok)
      assert.equals("42601", e.sqlstate)
      assert.matches("statement: CREATE TABEL broken", tostring(e), 1, true)
    end)
  end)

  describe("exec and tx", function()
    it("runs multi-statement scripts", function()
      assert.equals("INSERT 0 1", c:exec("CREATE TABLE m (v text); INSERT INTO m VALUES ('a')"))
      assert.equals("a", c:value("SELECT v FROM m"))
    end)

    it("commits on return and rolls back on error", function()
      c:exec("CREATE TABLE txt (v int)")
      local r1, r2 = c:tx(function(conn, x) conn:exec("INSERT INTO txt VALUES (1)") return x, "two" end, "one")
      assert.equals("one", r1)
      assert.equals("two", r2)
      local ok, err = pcall(c.tx, c, function(conn) conn:exec("INSERT INTO txt VALUES (2)") error("boom", 0) end)
      assert.is_false(ok)
      assert.equals("boom", err)
      assert.same({ 1 }, { c:value("SELECT sum(v) FROM txt") })
      assert.is_false(c:info().in_transaction)
    end)

    it("uses savepoints for nested calls", function()
      c:exec("CREATE TABLE nest (v int)")
      c:tx(function(conn)
        conn:exec("INSERT INTO nest VALUES (1)")
        local ok = pcall(conn.tx, conn, function(inner)
          inner:exec("INSERT INTO nest VALUES (10)")
          error("inner fails")
        end)
        assert.is_false(ok)
        conn:tx(function(inner) inner:exec("INSERT INTO nest VALUES (100)") end)
      end)
      assert.equals(101, c:value("SELECT sum(v) FROM nest"))
    end)

    it("rolls back when a statement inside fails", function()
      c:exec("CREATE TABLE txe (v int)")
      local ok, e = pcall(c.tx, c, function(conn)
        conn:exec("INSERT INTO txe VALUES (1)")
        conn:exec("INSERT INTO txe VALUES ('not a number')")
      end)
      assert.is_false(ok)
      assert.equals("22P02", e.sqlstate)
      assert.equals(0, c:value("SELECT count(*) FROM txe"))
    end)
  end)

  describe("COPY", function()
    it("round-trips 1,000,000 rows through copy_out -> copy_in without holding them", function()
      c:exec("CREATE TABLE big_src (id int, s text, n numeric)")
      c:exec("INSERT INTO big_src SELECT g, 'row ' || g || E'\\t\\\\ tab', g / 7.0 FROM generate_series(1, 1000000) g")
      c:exec("CREATE TABLE big_dst (LIKE big_src)")
      local dst <close> = db.connect(url)
      local chunks, largest = 0, 0
      dst:copy_in_begin("COPY big_dst FROM STDIN")
      local sent = c:copy_out("COPY big_src TO STDOUT", function(chunk)
        chunks = chunks + 1
        if #chunk > largest then largest = #chunk end
        dst:copy_in_put(chunk)
      end)
      local loaded = dst:copy_in_end()
      assert.equals(1000000, sent)
      assert.equals(1000000, loaded)
      assert.is_true(chunks > 100, "streamed in pieces, got " .. chunks)
      assert.is_true(largest <= 64 * 1024 + 4096, "chunk of " .. largest .. " bytes")
      local q = "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM %s t"
      assert.equals(c:value(q:format("big_src")), c:value(q:format("big_dst")))
    end)

    it("writes COPY output straight to a file and reads it back", function()
      c:exec("CREATE TABLE f_src AS SELECT g AS id FROM generate_series(1, 1000) g")
      c:exec("CREATE TABLE f_dst (id int)")
      local path = H.tmpdir() .. "/copy.txt"
      local f = assert(io.open(path, "wb"))
      assert.equals(1000, c:copy_out("COPY f_src TO STDOUT", f))
      f:close()
      f = assert(io.open(path, "rb"))
      assert.equals(1000, c:copy_in("COPY f_dst FROM STDIN", f))
      f:close()
      assert.equals(500500, c:value("SELECT sum(id) FROM f_dst"))
    end)

    it("leaves the connection usable when the sink of copy_out raises", function()
      c:exec("CREATE TABLE co (id int)")
      c:exec("INSERT INTO co SELECT generate_series(1, 200000)")
      local ok, e = pcall(c.copy_out, c, "COPY co TO STDOUT", function() error("disk full", 0) end)
      assert.is_false(ok)
      assert.equals("disk full", e)
      assert.equals(200000, c:value("SELECT count(*) FROM co"))
    end)

    it("aborts copy_in when the source raises: nothing loaded, connection usable", function()
      c:exec("CREATE TABLE ci (id int)")
      local n = 0
      local ok, e = pcall(c.copy_in, c, "COPY ci FROM STDIN", function()
        n = n + 1
        if n > 3 then error("source broke", 0) end
        return n .. "\n"
      end)
      assert.is_false(ok)
      assert.equals("source broke", e)
      assert.equals(0, c:value("SELECT count(*) FROM ci"))
    end)

    it("raises a bad row as an SQL error and stays usable", function()
      c:exec("CREATE TABLE cb (id int)")
      local ok, e = pcall(c.copy_in, c, "COPY cb FROM STDIN", "1\nnot-a-number\n")
      assert.is_false(ok)
      assert.equals("22P02", e.sqlstate)
      assert.equals(1, c:value("SELECT 1"))
    end)

    it("is clearly closed when the server ends the session during COPY", function()
      local victim = db.connect(url)
      victim:exec("CREATE TABLE ck AS SELECT generate_series(1, 300000) AS id")
      local pid = victim:info().backend_pid
      local killed = false
      local ok, e = pcall(victim.copy_out, victim, "COPY ck TO STDOUT", function()
        if not killed then
          killed = true
          c:query("SELECT pg_terminate_backend($1)", pid)
        end
      end)
      assert.is_false(ok)
      assert.matches("terminat", tostring(e))
      local ok2, e2 = pcall(victim.query, victim, "SELECT 1")
      assert.is_false(ok2)
      assert.is_true(e2.connection_lost or tostring(e2):find("connection") ~= nil)
      victim:close()
    end)
  end)

  describe("notices and closing", function()
    it("hands server notices to the handler", function()
      local seen = {}
      db.on_notice(function(sev, msg) seen[#seen + 1] = sev .. ":" .. msg end)
      finally(function() package.loaded["orch.log"] = nil; db.on_notice(nil); require("orch.log") end)
      c:exec("DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful'; END $$")
      assert.same({ "NOTICE:hello 42", "WARNING:careful" }, seen)
    end)

    it("closes safely more than once, by close(), <close> and the collector", function()
      local x = db.connect(url)
      x:close()
      x:close()
      assert.is_true(x:is_closed())
      assert.equals("orch.conn (closed)", tostring(x))
      do local y <close> = db.connect(url) end
      local z = db.connect(url)
      z = nil
      collectgarbage()
      collectgarbage()
      assert.has_error(function() x:query("SELECT 1") end, "attempt to use a closed connection")
    end)

    it("releases the server session on close", function()
      local x = db.connect(url)
      local pid = x:info().backend_pid
      x:close()
      -- the backend ends a moment after the connection closes: wait for it (a loaded machine can take seconds)
      local gone, deadline = false, sys.monotonic() + 30
      repeat
        gone = c:value("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
        if not gone then sys.sleep(0.05) end
      until gone or sys.monotonic() > deadline
      assert.is_true(gone, "the server session " .. pid .. " was still there 30 s after close")
    end)
  end)

  it("cancels the statement in flight on SIGINT and exits 130", function()
    local dir = H.tmpdir()
    local f = H.write(dir .. "/slow.lua", string.format([[
local c <close> = require('orch.db').connect(%q)
c:query('SELECT pg_sleep(30)')
]], url))
    local p <close> = require("orch.proc").start { H.orch_bin, f, stdout = dir .. "/out", stderr = dir .. "/err" }
    -- the signal goes once the statement is in flight (seen by the server), not after a guessed pause
    local deadline = sys.monotonic() + 30
    while c:value("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active' AND datname = current_database()") == 0 do
      assert.is_nil(p:poll(), "the script ended before its statement ran: " .. (H.read(dir .. "/err") or ""))
      assert.is_true(sys.monotonic() < deadline, "the statement was not running after 30 s")
      sys.sleep(0.02)
    end
    local t0 = sys.monotonic()
    assert.is_true(p:signal(2))
    local res
    repeat res = p:poll() if not res then sys.sleep(0.02) end until res or sys.monotonic() - t0 > 60
    assert.truthy(res, "the script did not end after SIGINT")
    assert.equals(130, res.code)
    assert.is_true(sys.monotonic() - t0 < 15, "the sleep was cancelled, not waited out")
    assert.matches("interrupted", H.read(dir .. "/err"))
    -- and the server is not still running it
    -- (in this spec's own database: other specs run their own pg_sleep(30) at the same time)
    assert.equals(0, c:value("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active' AND datname = current_database()"))
  end)
end)
