-- orch.health: HTTP checks against a real local HTTP server, database
-- checks against the real test cluster, wait_for, reports in the
-- application/health+json shape, and team checks.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"
local db = require "orch.db"
local health = require "orch.health"

describe("orch.health HTTP checks", function()
  local srv
  setup(function() srv = H.httpd() end)
  teardown(function() srv:stop() end)

  it("passes a 2xx by default, and names the status it got otherwise", function()
    local r = health.http { name = "api", url = srv:url("/status/204") }
    assert.equals("pass", r.status)
    assert.equals("api", r.name)
    assert.equals("ms", r.unit)
    assert.is_number(r.observed)
    r = health.http { url = srv:url("/status/404"), expect_status = 200, retries = 0 }
    assert.equals("fail", r.status)
    assert.equals("HTTP 404, expected 200", r.output)
    r = health.http { url = srv:url("/status/301"), expect_status = { 200, "3xx" }, max_redirects = 0 }
    assert.equals("pass", r.status)
  end)

  it("checks body text and JSON fields", function()
    assert.equals("pass", health.http { url = srv:url("/json"), expect_body = '"version":"1.2.3"' }.status)
    local r = health.http { url = srv:url("/json"), expect_body = "ready", retries = 0 }
    assert.equals("fail", r.status)
    assert.matches('does not contain "ready"', r.output)
    assert.equals("pass", health.http { url = srv:url("/json"), expect_json = { ["db.status"] = "up", ["items.2"] = 2 } }.status)
    r = health.http { url = srv:url("/json"), expect_json = { ["db.status"] = "down" }, retries = 0 }
    assert.equals("fail", r.status)
    assert.equals('JSON field db.status is "up", expected "down"', r.output)
    r = health.http { url = srv:url("/json"), expect_json = { ["db.replicas"] = 2 }, retries = 0 }
    assert.matches("JSON field db.replicas is missing", r.output)
    r = health.http { url = srv:url("/status/200"), expect_json = { status = "up" }, retries = 0 }
    assert.matches("the body is not JSON", r.output)
  end)

  it("understands application/health+json: pass, warn, and a 503 fail with the service's reasons", function()
    assert.equals("pass", health.http { url = srv:url("/health/pass") }.status)
    local r = health.http { url = srv:url("/health/warn") }
    assert.equals("warn", r.status)
    assert.matches("the service reports warn", r.output)
    r = health.http { url = srv:url("/health/fail"), retries = 0 }
    assert.equals("fail", r.status)
    assert.equals(503, r.http_status)
    assert.matches("HTTP 503, expected 2xx; the service reports fail", r.output)
    assert.matches("db:responseTime fail", r.output)
  end)

  it("fails (or warns) on latency over the limits", function()
    local r = health.http { url = srv:url("/delay/0.3"), max_latency = "100ms", retries = 0 }
    assert.equals("fail", r.status)
    assert.matches("latency %d+ ms exceeds max_latency 100 ms", r.output)
    assert.is_true(r.observed >= 300)
    r = health.http { url = srv:url("/delay/0.3"), warn_latency = 0.1, max_latency = "5s" }
    assert.equals("warn", r.status)
  end)

  it("retries with exponential backoff until it passes", function()
    local t0 = sys.monotonic()
    local r = health.http { url = srv:url("/flaky/retry1/2"), retries = 3, backoff = "100ms" }
    local took = sys.monotonic() - t0
    assert.equals("pass", r.status)
    assert.equals(3, r.attempts)
    -- two waits: 50-100 ms, then 100-200 ms (jitter takes up to half off)
    assert.is_true(took >= 0.15 and took < 2, "took " .. took)
  end)

  it("gives up when the overall deadline passes, however many retries are left", function()
    local t0 = sys.monotonic()
    local r = health.http { url = srv:url("/flaky/forever/1000"), retries = 100, backoff = "200ms", deadline = "1s" }
    local took = sys.monotonic() - t0
    assert.equals("fail", r.status)
    assert.matches("HTTP 503, expected 2xx", r.output)
    assert.matches("deadline 1s reached after %d+ attempts", r.output)
    assert.is_true(took < 3, "took " .. took)
    assert.is_true(r.attempts >= 2 and r.attempts < 10, r.attempts)
  end)

  it("reports an endpoint that is down, within its deadline", function()
    local t0 = sys.monotonic()
    local r = health.http { name = "down", url = "http://127.0.0.1:" .. sys.free_port() .. "/health", retries = 2, backoff = "50ms" }
    assert.equals("fail", r.status)
    assert.matches("could not connect", r.output)
    assert.equals(3, r.attempts)
    assert.is_true(sys.monotonic() - t0 < 4)
  end)

  it("honours the request timeout on a slow endpoint", function()
    local t0 = sys.monotonic()
    local r = health.http { url = srv:url("/hang"), timeout = "500ms", retries = 1, backoff = "10ms" }
    local took = sys.monotonic() - t0
    assert.equals("fail", r.status)
    assert.matches("timed out", r.output)
    assert.equals(2, r.attempts)
    assert.is_true(took >= 0.9 and took < 3, "took " .. took)
  end)

  it("an environment's endpoints with wait: polled until the service is up again", function()
    local env = { name = "t", backups = {}, health = { wait_interval = "100ms",
      http = { { name = "api", url = srv:url("/flaky/envwait/3"), retries = 0 } } } }
    local report = health.run_checks { env = env, wait = 10, only = "http" }
    assert.equals("pass", report.status)
    assert.equals(1, #report.checks)
    assert.equals(4, report.checks[1].attempts)
    report = health.run_checks { env = { name = "t", backups = {}, health = { http = { { name = "api", url = srv:url("/flaky/envwait2/3"), retries = 0 } } } },
      only = "http" }
    assert.equals("fail", report.status)
  end)

  it("reads the URL from an environment variable and says when it is not set", function()
    local r = health.http { name = "api", url_env = "ORCH_TEST_SURELY_UNSET_URL" }
    assert.equals("fail", r.status)
    assert.matches("ORCH_TEST_SURELY_UNSET_URL .*is not set", r.output)
  end)

  it("wait_for polls until healthy, or says how long it waited", function()
    local r = health.wait_for({ url = srv:url("/flaky/wait1/3") }, { deadline = "10s", interval = "100ms" })
    assert.equals("pass", r.status)
    assert.equals(4, r.attempts)
    local calls = 0
    r = health.wait_for(function() calls = calls + 1 return calls >= 2, "not yet" end, { deadline = "5s", interval = 0.05 })
    assert.equals("pass", r.status)
    local t0 = sys.monotonic()
    r = health.wait_for({ url = srv:url("/status/503") }, { deadline = "1s", interval = "200ms" })
    assert.equals("fail", r.status)
    assert.matches("not healthy after waiting %d+s, %d+ tries", r.output)
    assert.is_true(sys.monotonic() - t0 < 3.5)
  end)
end)

describe("orch.health database checks", function()
  local url, name, c
  setup(function()
    url, name = H.fresh_db("health")
    c = db.connect(url)
    c:exec("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT g, g FROM generate_series(1, 10) g")
  end)
  teardown(function()
    c:close()
    H.drop_db(name)
  end)

  it("connect, version and role", function()
    local r = health.db.connect(c, { url = url })
    assert.equals("pass", r.status)
    assert.matches("connect [%d.]+ ms, round trip [%d.]+ ms", r.detail)
    assert.equals("pass", health.db.version(c, { min_version = 12 }).status)
    r = health.db.version(c, { min_version = "99.1" })
    assert.equals("fail", r.status)
    assert.matches("older than min_version 99.1", r.output)
    assert.equals("primary", health.db.role(c).observed)
    r = health.db.role(c, { expect = "standby" })
    assert.equals("fail", r.status)
    assert.equals("the server is a primary, expected a standby", r.output)
    r = health.db.connect(c, { url = "postgresql://nobody@127.0.0.1:" .. sys.free_port() .. "/x" })
    assert.equals("fail", r.status)
    assert.matches("Connection refused", r.output)
  end)

  it("replication lag on a primary without standbys", function()
    local r = health.db.replication_lag(c, { max = "5s" })
    assert.equals("pass", r.status)
    assert.equals("primary without standbys", r.detail)
  end)

  it("finds a transaction open too long, naming its pid and application", function()
    local other <close> = db.connect(url, { application_name = "stuck-worker" })
    other:exec("BEGIN")
    other:exec("SELECT 1")
    sys.sleep(0.3)
    local r = health.db.long_transactions(c, { max = "100ms" })
    assert.equals("fail", r.status)
    assert.matches("1 transaction%(s%) open longer than 0.1s: pid %d+ %(postgres, stuck%-worker, idle in transaction%)", r.output)
    other:exec("COMMIT")
    assert.equals("pass", health.db.long_transactions(c, { max = "100ms" }).status)
  end)

  it("finds sessions blocked on a lock, with their blocker", function()
    local holder <close> = db.connect(url, { application_name = "lock-holder" })
    holder:exec("BEGIN")
    holder:exec("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    local hpid = holder:value("SELECT pg_backend_pid()")
    -- a second client, in its own process, queues behind the lock
    local pg = H.cluster()
    local waiter = sys.spawn { "sh", "-c", string.format(
      "PGAPPNAME=waiter %s/psql -h %s -p %d -U postgres -d %s -c 'SET lock_timeout = 20000' -c 'SELECT count(*) FROM t' > /dev/null 2>&1 & echo $!",
      require("orch.localpg").bindir(), pg.host, pg.port, name) }
    local wpid = tonumber(waiter.stdout:match("%d+"))
    finally(function() sys.kill(wpid) end)
    local deadline = sys.monotonic() + 60
    while c:value("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'waiter' AND datname = current_database()") == 0 do
      assert.is_true(sys.monotonic() < deadline, "psql did not queue behind the lock within 60 s")
      sys.sleep(0.05)
    end
    local r = health.db.blocked(c, { max_wait = "30s" })
    assert.equals("warn", r.status)
    assert.matches("1 session%(s%) blocked on locks: pid %d+ %(waiter%) waits %d+s on pid " .. hpid .. " %(lock%-holder, idle in transaction", r.output)
    r = health.db.blocked(c, { max_wait = "0s" })
    assert.equals("fail", r.status)
    holder:exec("COMMIT")
    -- the waiter gets its lock a moment after the commit
    local deadline2 = sys.monotonic() + 60
    while health.db.blocked(c).status ~= "pass" and sys.monotonic() < deadline2 do sys.sleep(0.05) end
    assert.equals("pass", health.db.blocked(c).status)
  end)

  it("connection headroom against max_connections", function()
    local r = health.db.connections(c)
    assert.equals("pass", r.status)
    local used, usable = r.detail:match("^(%d+) of (%d+) connections in use")
    assert.is_true(tonumber(used) >= 1 and tonumber(usable) > tonumber(used), r.detail)
    r = health.db.connections(c, { warn = 0.0001 })
    assert.equals("warn", r.status)
    r = health.db.connections(c, { warn = 0, max = 0.0001 })
    assert.equals("fail", r.status)
    assert.matches("new sessions .* will soon be refused", r.output)
  end)

  it("invalid indexes fail and NOT VALID constraints warn, by name", function()
    c:exec("CREATE INDEX t_v_idx ON t (v)")
    c:exec("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 't_v_idx'::regclass")
    local r = health.db.invalid_indexes(c)
    assert.equals("fail", r.status)
    assert.matches("1 invalid index%(es%): public.t_v_idx on public.t", r.output)
    c:exec("DROP INDEX t_v_idx")
    assert.equals("pass", health.db.invalid_indexes(c).status)
    c:exec("ALTER TABLE t ADD CONSTRAINT v_positive CHECK (v > 0) NOT VALID")
    r = health.db.not_valid_constraints(c)
    assert.equals("warn", r.status)
    assert.matches("v_positive on public.t", r.output)
    c:exec("ALTER TABLE t VALIDATE CONSTRAINT v_positive")
    assert.equals("pass", health.db.not_valid_constraints(c).status)
  end)

  it("schema at the expected migration", function()
    local dir = H.tmpdir()
    sys.mkdir_p(dir .. "/migrations")
    H.write(dir .. "/migrations/V1__a.sql", "CREATE TABLE a (id int);\n")
    H.write(dir .. "/migrations/V2__b.sql", "CREATE TABLE b (id int);\n")
    local u2, n2 = H.fresh_db("health_schema")
    local c2 <close> = db.connect(u2)
    local m = H.orch { "migrate", "--db", u2, "--dir", dir .. "/migrations", "--target", "1" }
    assert.is_true(m.ok, m.stderr)
    local r = health.db.schema_version(c2, { dir = dir .. "/migrations" })
    assert.equals("fail", r.status)
    assert.equals("1 migration(s) pending: the schema is at V1, not the latest", r.output)
    assert.equals("pass", health.db.schema_version(c2, { dir = dir .. "/migrations", expect = "1" }).status)
    r = health.db.schema_version(c2, { dir = dir .. "/migrations", expect = "2" })
    assert.equals("the schema is at V1, expected V2", r.output)
    m = H.orch { "migrate", "--db", u2, "--dir", dir .. "/migrations" }
    assert.is_true(m.ok, m.stderr)
    r = health.db.schema_version(c2, { dir = dir .. "/migrations" })
    assert.equals("pass", r.status)
    assert.equals("V2", r.observed)
    c2:close()
    H.drop_db(n2)
    sys.rmtree(dir)
  end)

  it("SQL assertions and row counts", function()
    assert.equals("pass", health.db.sql(c, { name = "ten rows", query = "SELECT count(*) = 10 FROM t" }).status)
    local r = health.db.sql(c, { name = "count", query = "SELECT count(*) FROM t WHERE v > $1", params = { 5 }, expect = 4 })
    assert.equals("fail", r.status)
    assert.equals("got 5, expected 4", r.output)
    assert.equals("sql:count", r.name)
    r = health.db.sql(c, { name = "typo", query = "SELECT count(*) FROM no_such_table" })
    assert.equals("fail", r.status)
    assert.matches("the query failed: .*no_such_table", r.output)
    assert.equals("pass", health.db.rows(c, { table = "t", min = 10 }).status)
    r = health.db.rows(c, { table = "public.t", min = 11 })
    assert.equals("10 rows, expected at least 11", r.output)
  end)

  it("room for a backup, measured without creating the directory", function()
    local dir = H.tmpdir() .. "/not/yet"
    local r = health.db.backup_room(c, { dir = dir })
    assert.equals("pass", r.status)
    assert.is_false(sys.exists(dir))
    r = health.db.backup_room(c, { dir = dir, factor = 1e9 })
    assert.equals("fail", r.status)
    assert.matches("not enough room for a backup in " .. dir:gsub("%p", "%%%0"), r.output)
  end)

  it("an environment's checks as one report: worst status wins, health+json shape, a table for people", function()
    local srv = H.httpd()
    finally(function() srv:stop() end)
    health.register("always_warn", function(conn, spec) return "warn", "team check: " .. spec.what end)
    local env = { name = "t", backups = { dir = H.tmpdir() }, health = {
      db = { schema = false },
      sql = { { name = "has rows", query = "SELECT count(*) > 0 FROM t" } },
      rows = { { table = "t", min = 1 } },
      http = { { name = "api", url = srv:url("/health/pass") } },
      checks = { { name = "cache", kind = "always_warn", what = "cache is cold" },
                 { name = "raises", run = function() error("boom") end } } } }
    local report = health.run_checks { conn = c, env = env, project_checks = {} }
    assert.equals("fail", report.status)
    local by = {}
    for _, r in ipairs(report.checks) do by[r.name] = r end
    assert.equals("pass", by["database:long_transactions"].status)
    assert.equals("pass", by["sql:has rows"].status)
    assert.equals("pass", by["rows:t"].status)
    assert.equals("pass", by["api"].status)
    assert.equals("warn", by["cache"].status)
    assert.equals("team check: cache is cold", by["cache"].output)
    assert.equals("fail", by["raises"].status)
    assert.matches("the check raised: .*boom", by["raises"].output)
    local doc = json.decode(json.encode(health.to_json(report)))
    assert.equals("fail", doc.status)
    assert.equals("pass", doc.checks["api:responseTime"][1].status)
    assert.equals("http", doc.checks["api:responseTime"][1].componentType)
    assert.equals("ms", doc.checks["api:responseTime"][1].observedUnit)
    assert.equals("warn", doc.checks["cache:status"][1].status)
    assert.matches("raises: the check raised", doc.output)
    local text = health.format_table(report)
    assert.matches("CHECK%s+STATUS%s+OBSERVED%s+DETAIL", text)
    assert.matches("\ncache%s+warn%s+team check: cache is cold", text)
    assert.matches("overall: fail %(%d+ checks: %d+ pass, 1 warn, 1 fail%)", text)
  end)

  it("durations are read as people write them, and a wrong one is named", function()
    assert.equals(0.5, health.seconds("500ms"))
    assert.equals(120, health.seconds("2m"))
    assert.equals(3, health.seconds(3))
    assert.has_error(function() health.seconds("soon", "deadline") end, "deadline: 'soon' is not a duration (use e.g. 500ms, 5s, 2m)")
  end)
end)
