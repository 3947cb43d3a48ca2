-- Parallel backups (orch backup --jobs N): N connections on one exported
-- snapshot writing one custom archive that stock pg_restore (serial, -j 2,
-- from a pipe) and orch restore read; one snapshot whatever is written
-- meanwhile; a worker's killed connection fails the whole backup.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local contents_of = H.contents_of

local same_database, url_of, setup_roles = H.same_database, H.url_of, H.setup_roles

describe("orch backup --jobs", function()
  local work
  local src_example, src_all
  setup(function()
    work = H.tmpdir()
    setup_roles()
    local url
    url, src_example = H.fresh_db("par_example")
    assert(H.orch({ "migrate", "--db", url, "--env", "dev" }).ok)
    url, src_all = H.fresh_db("par_all")
    local c <close> = db.connect(url)
    c:exec(H.read("tests/fixtures/allkinds.sql"))
  end)
  teardown(function()
    H.drop_db(src_example)
    H.drop_db(src_all)
    sys.rmtree(work)
  end)

  for _, which in ipairs { "example", "allkinds" } do
    it("writes one archive of the " .. which .. " database that pg_restore (file, -j 2, pipe) and orch restore --jobs 2 reproduce exactly", function()
      local src = which == "example" and src_example or src_all
      local r = H.orch { "backup", "--db", url_of(src), "--dir", work .. "/" .. which, "--jobs", "3", "--json" }
      assert.is_true(r.ok, r.stderr)
      local m = json.decode(r.stdout)
      assert.is_true(m.jobs > 1, "more than one connection")
      local v = H.orch { "verify", m.path }
      assert.is_true(v.ok, v.stderr)
      for _, how in ipairs { "file", "parallel", "pipe", "orch" } do
        local _, dst = H.fresh_db("par_" .. which .. "_" .. how)
        local rr
        if how == "pipe" then
          -- the file's blocks are in TOC order: pg_restore reads it from a pipe as well
          rr = sys.spawn { "sh", "-c", string.format("cat %s | %s/pg_restore -h %s -p %d -U postgres -d %s --exit-on-error",
            m.path, require("orch.localpg").bindir(), H.cluster().host, H.cluster().port, dst) }
        elseif how == "orch" then
          rr = H.orch { "restore", m.path, "--db", url_of(dst), "--jobs", "2" }
        else
          local argv = { "-d", dst, "--exit-on-error", m.path }
          if how == "parallel" then table.insert(argv, 1, "2"); table.insert(argv, 1, "-j") end
          rr = H.pgtool("pg_restore", argv)
        end
        assert.is_true(rr.ok, how .. ": " .. rr.stderr)
        same_database(src, dst)
        H.drop_db(dst)
      end
    end)
  end

  it("streams to standard output with several connections, blocks in TOC order, and says so", function()
    local _, dst = H.fresh_db("par_stream")
    local r = sys.spawn { "sh", "-c", string.format("%s backup --db %s --output - --jobs 2 2>%s/stream.err | %s/pg_restore -h %s -p %d -U postgres -d %s --exit-on-error",
      H.orch_bin, url_of(src_all), work, require("orch.localpg").bindir(), H.cluster().host, H.cluster().port, dst) }
    assert.is_true(r.ok, r.stderr)
    assert.matches("streamed to standard output with 2 connections", H.read(work .. "/stream.err"))
    same_database(src_all, dst)
    H.drop_db(dst)
  end)

  it("reads every table as of one snapshot: writes committed while it waits for a lock are not in the archive", function()
    local url, name = H.fresh_db("par_snap")
    local c <close> = db.connect(url)
    for i = 1, 4 do
      c:exec(string.format("CREATE TABLE t%d AS SELECT g AS id, 'before' AS v FROM generate_series(1, %d) g", i, 20000 * i))
    end
    c:exec("CREATE TABLE zz_gate (id int)")
    local before = contents_of(name)
    -- the backup takes its snapshot, then waits for zz_gate; meanwhile every table changes
    local holder = db.connect(url)
    holder:exec("BEGIN; LOCK TABLE zz_gate IN ACCESS EXCLUSIVE MODE")
    local dir = work .. "/snap"
    local out = work .. "/snap.json"
    local pid = sys.spawn { "sh", "-c", string.format("(%s backup --db %s --dir %s --jobs 4 --json > %s 2>&1; echo $? > %s.code) > /dev/null 2>&1 &",
      H.orch_bin, url, dir, out, out) }
    assert.is_true(pid.ok)
    local waited = false
    for _ = 1, 300 do
      if c:value("SELECT count(*) FROM pg_locks WHERE relation = 'zz_gate'::regclass AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") > 0 then waited = true break end
      sys.sleep(0.05)
    end
    assert.is_true(waited, "the backup waits for the lock on zz_gate")
    for i = 1, 4 do holder:exec(string.format("UPDATE t%d SET v = 'after'; INSERT INTO t%d VALUES (0, 'new')", i, i)) end
    holder:exec("COMMIT")
    holder:close()
    -- (the shell creates the .code file before it writes the code into it: wait for the code)
    local code, deadline = nil, sys.monotonic() + 120
    repeat
      code = (H.read(out .. ".code") or ""):match("%d+")
      if not code then sys.sleep(0.1) end
    until code or sys.monotonic() > deadline
    assert.equals("0", code, H.read(out))
    local m = json.decode(H.read(out))
    assert.equals(4, m.jobs)
    local _, dst = H.fresh_db("par_snap_dst")
    local rr = H.pgtool("pg_restore", { "-j", "2", "-d", dst, "--exit-on-error", m.path })
    assert.is_true(rr.ok, rr.stderr)
    assert.same(before, contents_of(dst))
    assert.are_not.same(before, contents_of(name))
    H.drop_db(dst)
    c:close()
    H.drop_db(name)
  end)

  it("fails as a whole when a worker's connection is killed mid-backup: nothing at the final name", function()
    local url, name = H.fresh_db("par_kill")
    local c <close> = db.connect(url)
    c:exec("CREATE TABLE big1 AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS pad FROM generate_series(1, 300000) g")
    c:exec("CREATE TABLE big2 AS SELECT g AS id, md5(g::text) || repeat('y', 200) AS pad FROM generate_series(1, 300000) g")
    local dir = work .. "/killed"
    sys.mkdir_p(dir)
    local r = sys.spawn { "sh", "-c", string.format(
      "%s backup --db %s --dir %s --jobs 2 --threads 1 > %s/out 2> %s/err & pid=$!; " ..
      "k=no; for i in $(seq 400); do n=$(%s/psql -h %s -p %d -U postgres -d %s -XAtc \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity " ..
      "WHERE application_name = 'orch backup worker 2' AND query LIKE 'COPY%%' AND datname = current_database()\"); [ -n \"$n\" ] && k=yes && break; sleep 0.02; done; " ..
      "wait $pid; c=$?; echo killed=$k; echo $c",
      H.orch_bin, url, dir, work, work, require("orch.localpg").bindir(), H.cluster().host, H.cluster().port, name) }
    assert.matches("killed=yes", r.stdout, 1, true)   -- worker 2 was seen in its COPY, and terminated
    assert.equals("1", r.stdout:match("%d+"), H.read(work .. "/err"))
    local err = H.read(work .. "/err")
    assert.is_truthy(err:match("terminating connection due to administrator command") or err:match("SQLSTATE 08006"), err)
    assert.matches("COPY", err)
    assert.same({}, sys.listdir(dir))
    c:close()
    H.drop_db(name)
  end)

  it("names the session queued for an exclusive lock that keeps a worker from locking its table", function()
    local url, name = H.fresh_db("par_lock")
    local c <close> = db.connect(url)
    -- tables big enough that the leader is still on its first when the worker asks for its own
    c:exec("CREATE TABLE a1 (id int); CREATE TABLE a2 (id int); CREATE TABLE zz_gate (id int)")
    c:exec("INSERT INTO a1 SELECT generate_series(1, 200000); INSERT INTO a2 SELECT generate_series(1, 200000)")
    local gate = db.connect(url)
    gate:exec("BEGIN; LOCK TABLE zz_gate IN ACCESS EXCLUSIVE MODE")
    local out = work .. "/lock.err"
    assert.is_true(sys.spawn { "sh", "-c", string.format("(%s backup --db %s --dir %s/lock --jobs 2 --lock-timeout 10s > /dev/null 2> %s; echo $? > %s.code) > /dev/null 2>&1 &",
      H.orch_bin, url, work, out, out) }.ok)
    local function waiting(sql, n)
      for _ = 1, 600 do
        if c:value(sql) >= n then return true end
        sys.sleep(0.05)
      end
      return false
    end
    -- the backup holds a1 and a2 and waits for zz_gate
    assert.is_true(waiting("SELECT count(*) FROM pg_locks WHERE relation = 'zz_gate'::regclass AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 1), "the backup waits for zz_gate")
    -- sessions queue for exclusive locks behind the backup's on every table, zz_gate too (behind
    -- the backup's own request): whichever table the worker takes, its ACCESS SHARE queues behind one
    for _, t in ipairs { "a1", "a2", "zz_gate" } do
      assert.is_true(sys.spawn { "sh", "-c", string.format("%s/psql -h %s -p %d -U postgres -d %s -XAtc 'BEGIN; SET lock_timeout = 60000; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE; COMMIT' >/dev/null 2>&1 &",
        require("orch.localpg").bindir(), H.cluster().host, H.cluster().port, name, t) }.ok)
    end
    assert.is_true(waiting("SELECT count(*) FROM pg_locks WHERE relation IN ('a1'::regclass, 'a2'::regclass) AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 2), "sessions queue on a1 and a2")
    assert.is_true(waiting("SELECT count(*) FROM pg_locks WHERE relation = 'zz_gate'::regclass AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", 2), "a session queues on zz_gate")
    gate:exec("COMMIT")
    gate:close()
    -- (the shell creates the .code file before it writes the code into it: wait for the code)
    local code, deadline = nil, sys.monotonic() + 120
    repeat
      code = (H.read(out .. ".code") or ""):match("%d+")
      if not code then sys.sleep(0.1) end
    until code or sys.monotonic() > deadline
    local err = H.read(out)
    assert.equals("1", code, err)
    assert.matches("could not lock table public%.[%w_]+ for the backup %(on its connection 2%) within 10s: pid %d+ is waiting for AccessExclusiveLock", err)
    assert.matches("queued behind this backup's own lock", err, 1, true)
    c:exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    c:close()
    H.drop_db(name)
  end)
  describe("orch restore --jobs 2 that fails half-way (a worker's connection killed during its COPY)", function()
    local archive, src
    setup(function()
      local url
      url, src = H.fresh_db("par_rsrc")
      local c <close> = db.connect(url)
      c:exec("CREATE TABLE big1 AS SELECT g AS id, md5(g::text) || repeat('x', 300) AS pad FROM generate_series(1, 300000) g")
      c:exec("CREATE TABLE big2 AS SELECT g AS id, md5(g::text) || repeat('y', 300) AS pad FROM generate_series(1, 300000) g")
      c:exec("ALTER TABLE big1 ADD PRIMARY KEY (id); ALTER TABLE big2 ADD PRIMARY KEY (id)")
      c:exec("SELECT lo_from_bytea(0, 'a large object')")
      local r = H.orch { "backup", "--db", url, "--dir", work .. "/rsrc", "--jobs", "2", "--json" }
      assert.is_true(r.ok, r.stderr)
      archive = json.decode(r.stdout).path
    end)
    teardown(function() H.drop_db(src) end)

    local function restore_killed(dst, extra)
      local argv = { H.orch_bin, "restore", archive, "--db", url_of(dst), "--jobs", "2" }
      for _, x in ipairs(extra) do argv[#argv + 1] = x end
      local r = sys.spawn { "sh", "-c", string.format(
        "%s > %s/r.out 2> %s/r.err & pid=$!; k=no; " ..
        "for i in $(seq 600); do n=$(%s/psql -h %s -p %d -U postgres -d postgres -XAtc \"SELECT pg_terminate_backend(pid) FROM pg_stat_activity " ..
        "WHERE application_name = 'orch restore worker 2' AND query LIKE 'COPY%%' AND datname LIKE '%s%%'\"); [ -n \"$n\" ] && k=yes && break; sleep 0.02; done; " ..
        "wait $pid; c=$?; echo killed=$k; echo $c",
        table.concat(argv, " "), work, work, require("orch.localpg").bindir(), H.cluster().host, H.cluster().port, dst) }
      assert.matches("killed=yes", r.stdout, 1, true)   -- worker 2 was seen in its COPY, and terminated
      return r.stdout:match("(%d+)%s*$"), H.read(work .. "/r.err")
    end

    it("default mode: the target is empty again, its large objects too", function()
      local url, dst = H.fresh_db("par_rfail_empty")
      local code, err = restore_killed(dst, {})
      assert.equals("1", code, err)
      assert.is_truthy(err:match("terminating connection due to administrator command") or err:match("SQLSTATE 08006"), err)
      assert.matches("what was restored was dropped again: the target is as empty as it was", err)
      local c <close> = db.connect(url)
      assert.equals(0, c:value("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"))
      assert.equals(0, c:value("SELECT count(*) FROM pg_largeobject_metadata"))
      c:close()
      -- and a restore afterwards works
      local again = H.orch { "restore", archive, "--db", url, "--jobs", "2" }
      assert.is_true(again.ok, again.stderr)
      same_database(src, dst)
      H.drop_db(dst)
    end)

    it("--swap: the target is untouched and the partial copy dropped", function()
      local url, dst = H.fresh_db("par_rfail_swap")
      local c <close> = db.connect(url)
      c:exec("CREATE TABLE keep AS SELECT 1 AS id")
      local code, err = restore_killed(dst, { "--swap" })
      assert.equals("1", code, err)
      assert.matches("was not touched", err)
      assert.equals(1, c:value("SELECT count(*) FROM keep"))
      assert.equals(0, c:value("SELECT count(*) FROM pg_database WHERE datname LIKE $1", dst .. "_orch_restore_%"))
      c:close()
      H.drop_db(dst)
    end)

    it("--drop-existing: says the target is partly restored", function()
      local url, dst = H.fresh_db("par_rfail_drop")
      local c <close> = db.connect(url)
      c:exec("CREATE TABLE keep AS SELECT 1 AS id")
      c:close()
      local code, err = restore_killed(dst, { "--drop-existing", "--yes" })
      assert.equals("1", code, err)
      assert.matches("PARTLY RESTORED", err)
      H.drop_db(dst)
    end)
  end)

  it("restores a stock pg_dump -Fc archive with --jobs 2 in every mode (default, --swap, --drop-existing) to the same schema and rows", function()
    local path = work .. "/stock_allkinds.dump"
    local d = H.pgtool("pg_dump", { "-Fc", "-f", path, "-d", src_all })
    assert.is_true(d.ok, d.stderr)
    -- --drop-existing recreates the public schema it dropped (not initdb's own, which pg_dump leaves
    -- out): its reference is the same restore with one connection
    local function restored(mode, jobs)
      local url, dst = H.fresh_db("par_stock_" .. mode:gsub("%-", "_") .. "_" .. jobs)
      local argv = { "restore", path, "--db", url, "--jobs", tostring(jobs), "--no-manifest" }
      if mode == "swap" then argv[#argv + 1] = "--swap" end
      if mode == "drop-existing" then
        local c <close> = db.connect(url)
        c:exec("CREATE TABLE old_stuff AS SELECT 1 AS id")
        c:close()
        argv[#argv + 1] = "--drop-existing"
        argv[#argv + 1] = "--yes"
        argv[#argv + 1] = "--force"
      end
      local r = H.orch(argv)
      assert.is_true(r.ok, mode .. ": " .. r.stderr)
      if jobs > 1 then assert.matches("2 connections", r.stdout) end
      if mode == "swap" then
        local old = r.stdout:match("kept as ([%w_]+)")
        if old then H.drop_db(old) end
      end
      return dst
    end
    for _, mode in ipairs { "default", "swap", "drop-existing" } do
      local dst = restored(mode, 2)
      if mode == "drop-existing" then
        local ref = restored("drop-existing", 1)
        same_database(ref, dst)
        assert.same(contents_of(src_all), contents_of(dst))
        H.drop_db(ref)
      else
        same_database(src_all, dst)
      end
      H.drop_db(dst)
    end
  end)

  it("restore --jobs from standard input and with --single-transaction runs on one connection and says why", function()
    local r = H.orch { "backup", "--db", url_of(src_example), "--dir", work .. "/one", "--json" }
    assert.is_true(r.ok, r.stderr)
    local path = json.decode(r.stdout).path
    local _, d1 = H.fresh_db("par_one_pipe")
    local p = sys.spawn { "sh", "-c", string.format("cat %s | %s restore - --db %s --jobs 2", path, H.orch_bin, url_of(d1)) }
    assert.is_true(p.ok, p.stderr)
    assert.matches("standard input cannot seek", p.stdout)
    same_database(src_example, d1)
    local _, d2 = H.fresh_db("par_one_tx")
    local t = H.orch { "restore", path, "--db", url_of(d2), "--jobs", "2", "--single-transaction" }
    assert.is_true(t.ok, t.stderr)
    assert.matches("%-%-single%-transaction is one transaction on one connection", t.stdout)
    same_database(src_example, d2)
    H.drop_db(d1)
    H.drop_db(d2)
  end)
end)
