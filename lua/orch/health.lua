--- orch.health: health checks for databases and HTTP services.
--
-- Every check returns a result in the shape of one application/health+json
-- check entry:
--   { name = "api", measurement = "responseTime", kind = "http"|"database"|"custom",
--     status = "pass"|"warn"|"fail", output = "why (on warn/fail)", observed = 12,
--     unit = "ms", seconds = 0.012, attempts = 1 }
-- and health.run_checks(...) gathers an environment's into a report
-- { status, checks, seconds } whose worst status wins. health.to_json(report) is the health+json body,
-- health.format_table(report) the terminal view.
--
--   local health = require "orch.health"
--   local r = health.http { url = "https://api.example.com/health", expect_status = 200,
--                           max_latency = "500ms", retries = 3, deadline = "30s" }
--   local c = require("orch.db").connect(url)
--   local lag = health.db.replication_lag(c, { max = "10s" })
--   local ok = health.wait_for({ url = "http://localhost:8080/ready" }, { deadline = "60s" })
--
-- Environments declare their checks in orch.env.lua (health = { http = {...},
-- db = {...}, sql = {...}, rows = {...} }); teams add their own check kinds
-- with health.register(kind, fn) or checks in orch.health.lua.
local sys = require "orch.sys"
local json = require "orch.json"
local log = require "orch.log"

local H = { db = {}, kinds = {} }

local RANK = { pass = 1, warn = 2, fail = 3 }

-- ================================================================ small helpers

--- Seconds from a number or a text "250ms", "5s", "2m" (orch.args.seconds).
H.seconds = require("orch.args").seconds

local function ms(s) return s and math.floor(s * 1000 + 0.5) end

local function worst(a, b) return (RANK[a] or 3) >= (RANK[b] or 3) and a or b end

--- A check result with its defaults filled in. Every result passes through
-- here, so this is where outputs are redacted: they quote what services and
-- servers answered, and no registered secret may get through.
local function result(t)
  t.status = t.status or "pass"
  if t.output then t.output = log.redact(t.output) end
  t.time = t.time or os.date("!%Y-%m-%dT%H:%M:%SZ")
  return t
end
H.result = result

-- ================================================================ HTTP

-- health+json statuses and the words services commonly use for them
local STATUS_WORDS = { pass = "pass", ok = "pass", up = "pass", healthy = "pass", green = "pass",
  warn = "warn", degraded = "warn", yellow = "warn",
  fail = "fail", down = "fail", error = "fail", unhealthy = "fail", red = "fail" }

local function status_matches(expect, status)
  if expect == nil then return status >= 200 and status < 300, "2xx" end
  if type(expect) == "number" then return status == expect, tostring(expect) end
  if type(expect) == "string" then
    local class = expect:match("^(%d)xx$")
    if class then return status // 100 == tonumber(class), expect end
    return status == tonumber(expect), expect
  end
  if type(expect) == "table" then
    local texts = {}
    for _, e in ipairs(expect) do
      local ok, text = status_matches(e, status)
      if ok then return true end
      texts[#texts + 1] = text
    end
    return false, table.concat(texts, " or ")
  end
  error("expect_status must be a number, \"2xx\" or a list", 0)
end

--- The value at a dotted path ("db.status", "items.1") in decoded JSON.
function H.json_path(doc, path)
  local v = doc
  for part in tostring(path):gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    local n = tonumber(part)
    if n and v[n] ~= nil then v = v[n] else v = v[part] end
  end
  return v
end

local function scalar_equal(a, b)
  if type(a) == "number" or type(b) == "number" then return tonumber(a) == tonumber(b) end
  return tostring(a) == tostring(b)
end

-- One attempt: the response judged against the spec. Returns status, output, observed latency.
local function judge_http(spec, r)
  local lat = r.timings.total
  local okst, expected = status_matches(spec.expect_status, r.status)
  local ctype = (r.headers["content-type"] or ""):lower()
  local doc
  if ctype:match("json") then doc = select(2, pcall(json.decode, r.body)) end
  if type(doc) ~= "table" then doc = nil end
  -- application/health+json (or any JSON with a health status word): the service's own verdict
  local service_status, service_output
  if doc and type(doc.status) == "string" and (ctype:match("health%+json") or spec.expect_json == nil) then
    service_status = STATUS_WORDS[doc.status:lower()]
    if service_status and service_status ~= "pass" then
      local parts = {}
      if type(doc.output) == "string" and doc.output ~= "" then parts[#parts + 1] = doc.output end
      if type(doc.checks) == "table" then
        for k, list in pairs(doc.checks) do
          for _, c in ipairs(type(list) == "table" and list or {}) do
            local s = type(c) == "table" and type(c.status) == "string" and STATUS_WORDS[c.status:lower()]
            if s and s ~= "pass" then parts[#parts + 1] = string.format("%s %s%s", k, c.status, c.output and (": " .. tostring(c.output)) or "") end
          end
        end
        table.sort(parts)
      end
      service_output = string.format("the service reports %s%s", doc.status, #parts > 0 and (" (" .. table.concat(parts, "; ") .. ")") or "")
    end
  end
  if not okst then
    return "fail", string.format("HTTP %d, expected %s%s", r.status, expected, service_output and ("; " .. service_output) or ""), lat
  end
  if service_status == "fail" then return "fail", service_output, lat end
  if spec.expect_body and not r.body:find(spec.expect_body, 1, true) then
    return "fail", string.format("the body does not contain %q", spec.expect_body), lat
  end
  if spec.expect_json then
    if not doc then return "fail", "the body is not JSON (content-type " .. (ctype ~= "" and ctype or "none") .. ")", lat end
    local keys = {}
    for k in pairs(spec.expect_json) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local want, got = spec.expect_json[k], H.json_path(doc, k)
      if type(want) == "function" then
        if not want(got) then return "fail", string.format("JSON field %s = %s did not satisfy the check", k, json.encode(got)), lat end
      elseif got == nil or not scalar_equal(got, want) then
        return "fail", string.format("JSON field %s is %s, expected %s", k, got == nil and "missing" or json.encode(got), json.encode(want)), lat
      end
    end
  end
  local max, warn_at = H.seconds(spec.max_latency, "max_latency"), H.seconds(spec.warn_latency, "warn_latency")
  if max and lat > max then return "fail", string.format("latency %d ms exceeds max_latency %d ms", ms(lat), ms(max)), lat end
  if warn_at and lat > warn_at then return "warn", string.format("latency %d ms exceeds warn_latency %d ms", ms(lat), ms(warn_at)), lat end
  if service_status == "warn" then return "warn", service_output, lat end
  return "pass", nil, lat
end

local function check_url(spec)
  local url = spec.url
  if not url and spec.url_env then
    url = os.getenv(spec.url_env)
    if not url or url == "" then
      return nil, string.format("the environment variable %s (url_env of health check %s) is not set", spec.url_env, spec.name or "?")
    end
  end
  if not url then return nil, "health check " .. (spec.name or "?") .. " has no url or url_env" end
  if url:match("://[^/@]*@") or url:match("[?&][%w_]*[Tt][Oo][Kk][Ee][Nn]=") then log.secret(url) end
  return url
end

--- An HTTP check. spec: url | url_env, name, method, headers, body,
-- headers_env ({ Authorization = "VAR" }: values from the environment),
-- expect_status (200 | "2xx" | {200, 204}; default 2xx), expect_body (text),
-- expect_json ({ ["db.status"] = "up" }), max_latency / warn_latency,
-- timeout (per request, default 5s), connect_timeout, retries (default 2),
-- backoff (first wait, default 0.5s, doubled each time with jitter, at most
-- max_backoff 5s), deadline (overall, default 30s), verify, cainfo, capath.
-- Understands application/health+json (pass / warn / fail).
function H.http(spec)
  local http = require "orch.http"
  local name = spec.name or "http"
  local url, uerr = check_url(spec)
  local t0 = sys.monotonic()
  if not url then return result { name = name, kind = "http", measurement = "responseTime", status = "fail", output = uerr, seconds = 0, attempts = 0 } end
  -- headers_env = { Authorization = "VAR" }: credentials read from the environment, never shown
  local headers = spec.headers
  if spec.headers_env then
    headers = {}
    for k, v in pairs(spec.headers or {}) do headers[k] = v end
    for k, var in pairs(spec.headers_env) do
      local v = os.getenv(var)
      if not v or v == "" then
        return result { name = name, kind = "http", measurement = "responseTime", status = "fail", seconds = 0, attempts = 0,
          output = string.format("the environment variable %s (header %s of health check %s) is not set", var, k, name) }
      end
      log.secret(v)
      headers[k] = v
    end
  end
  local deadline = H.seconds(spec.deadline or "30s", "deadline")
  local timeout = H.seconds(spec.timeout or "5s", "timeout")
  local retries = spec.retries or 2
  local backoff = H.seconds(spec.backoff or "0.5s", "backoff")
  local max_backoff = H.seconds(spec.max_backoff or "5s", "max_backoff")
  local attempt, status, output, lat, last = 0, "fail", nil, nil, nil
  while true do
    attempt = attempt + 1
    local left = deadline - (sys.monotonic() - t0)
    local r, err = http.request { url = url, method = spec.method, headers = headers, body = spec.body,
      timeout = math.max(0.05, math.min(timeout, left)), connect_timeout = H.seconds(spec.connect_timeout, "connect_timeout"),
      verify = spec.verify, cainfo = spec.cainfo, capath = spec.capath, max_redirects = spec.max_redirects,
      max_body = spec.max_body or 1048576 }
    if r then
      status, output, lat = judge_http(spec, r)
      last = r
    else
      status, output, lat = "fail", err, nil
    end
    if status ~= "fail" or attempt > retries then break end
    -- exponential backoff with full jitter, never past the deadline
    local wait = math.min(max_backoff, backoff * 2 ^ (attempt - 1)) * (0.5 + math.random() * 0.5)
    left = deadline - (sys.monotonic() - t0)
    if left <= wait + 0.05 then
      output = output .. string.format(" (deadline %gs reached after %d attempt%s)", deadline, attempt, attempt == 1 and "" or "s")
      break
    end
    log.debug("health %s: attempt %d failed (%s); retrying in %.2fs", name, attempt, output, wait)
    sys.sleep(wait)
  end
  if status == "fail" and attempt > 1 and not output:match("attempt") then
    output = output .. string.format(" (after %d attempts)", attempt)
  end
  return result { name = name, kind = "http", measurement = "responseTime", status = status, output = output,
    observed = lat and ms(lat), unit = "ms", seconds = sys.monotonic() - t0, attempts = attempt,
    http_status = last and last.status, endpoint = log.redact(url):gsub("%?.*", "?***") }
end

-- ================================================================ database

-- Each database check takes an open connection and its options and returns a result.
local function dbres(name, measurement, t) t.name = "database:" .. name; t.measurement = measurement; t.kind = "database"; return result(t) end

local function list_text(items, max)
  max = max or 5
  local shown = {}
  for i = 1, math.min(#items, max) do shown[i] = items[i] end
  return table.concat(shown, "; ") .. (#items > max and string.format("; and %d more", #items - max) or "")
end

-- Open a connection for the checks, timing it. Returns conn, seconds; or
-- nil, the failed connect check's result.
local function open_timed(url)
  local t0 = sys.monotonic()
  local ok, c = pcall(require("orch.db").connect, url, { connect_timeout = 5, application_name = "orch check" })
  if not ok then return nil, dbres("connect", "responseTime", { status = "fail", output = tostring(c):gsub("\n.*", "") }) end
  return c, sys.monotonic() - t0
end

--- Connecting and a round trip. opts: url (connects anew to time it) or
-- connect_seconds (the caller timed it), max_latency, warn_latency (round trip).
function H.db.connect(conn, opts)
  opts = opts or {}
  local c, connect_s = conn, opts.connect_seconds
  if opts.url then
    local seconds_or_failure
    c, seconds_or_failure = open_timed(opts.url)
    if not c then return seconds_or_failure end
    connect_s = seconds_or_failure
  end
  local s = sys.monotonic()
  local ok, e = pcall(c.value, c, "SELECT 1")
  local rt = sys.monotonic() - s
  if opts.url then c:close() end
  if not ok then return dbres("connect", "responseTime", { status = "fail", output = tostring(e) }) end
  local status, out = "pass", nil
  local max, warn_at = H.seconds(opts.max_latency, "max_latency"), H.seconds(opts.warn_latency, "warn_latency")
  if max and rt > max then status, out = "fail", string.format("round trip %.1f ms exceeds %d ms", rt * 1000, ms(max))
  elseif warn_at and rt > warn_at then status, out = "warn", string.format("round trip %.1f ms exceeds %d ms", rt * 1000, ms(warn_at)) end
  return dbres("connect", "responseTime", { status = status, output = out, observed = math.floor(rt * 10000 + 0.5) / 10, unit = "ms",
    detail = connect_s and string.format("connect %.1f ms, round trip %.1f ms", connect_s * 1000, rt * 1000) or string.format("round trip %.1f ms", rt * 1000) })
end

--- Server version; opts.min_version (e.g. 14 or "15.2") fails older servers.
function H.db.version(conn, opts)
  opts = opts or {}
  local num = tonumber(conn:value("SHOW server_version_num"))
  local text = conn:value("SHOW server_version")
  local status, out = "pass", nil
  if opts.min_version then
    local maj, min = tostring(opts.min_version):match("^(%d+)%.?(%d*)")
    local want = tonumber(maj) * 10000 + (tonumber(min) or 0)
    if num < want then status, out = "fail", string.format("server %s is older than min_version %s", text, opts.min_version) end
  end
  return dbres("version", "serverVersion", { status = status, output = out, observed = text, detail = "PostgreSQL " .. text })
end

--- Primary or standby; opts.expect = "primary" | "standby".
function H.db.role(conn, opts)
  opts = opts or {}
  local standby = conn:value("SELECT pg_is_in_recovery()")
  local role = standby and "standby" or "primary"
  local status, out = "pass", nil
  if opts.expect and opts.expect ~= role then
    status, out = "fail", string.format("the server is a %s, expected a %s%s", role, opts.expect,
      role == "standby" and ": migrations must run on the primary" or "")
  end
  return dbres("role", "role", { status = status, output = out, observed = role, detail = role })
end

--- Replication lag in seconds: on a primary the worst replay lag of its
-- standbys; on a standby 0 when it has replayed everything it received,
-- else the age of the last replayed transaction.
-- opts.max (fail), opts.warn; opts.role ("primary" | "standby", from
-- H.db.role's result) saves asking the server again.
function H.db.replication_lag(conn, opts)
  opts = opts or {}
  local standby
  if opts.role == "primary" or opts.role == "standby" then standby = opts.role == "standby"
  else standby = conn:value("SELECT pg_is_in_recovery()") end
  local lag, detail
  if standby then
    -- a standby that has replayed all it received is not behind, however
    -- long ago the primary's last transaction was (an idle primary is no lag)
    local r = conn:query([[SELECT pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS caught_up,
        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS age]])[1]
    lag = r.caught_up and 0 or r.age
    detail = r.caught_up and "standby, replayed all it received" or
      (lag and string.format("standby, %.1fs behind its primary", lag) or "standby, nothing replayed yet")
  else
    local r = conn:query("SELECT count(*)::int AS n, max(extract(epoch FROM replay_lag))::float8 AS lag FROM pg_stat_replication")[1]
    lag = r.lag
    detail = r.n == 0 and "primary without standbys" or string.format("%d standby(s), worst replay lag %.1fs", r.n, lag or 0)
  end
  local max, warn_at = H.seconds(opts.max or "10s", "max replication lag"), H.seconds(opts.warn, "warn replication lag")
  local status, out = "pass", nil
  if lag and lag > max then status, out = "fail", string.format("replication lag %.1fs exceeds %gs", lag, max)
  elseif lag and warn_at and lag > warn_at then status, out = "warn", string.format("replication lag %.1fs exceeds %gs", lag, warn_at) end
  return dbres("replication_lag", "replicationLag", { status = status, output = out, observed = lag or 0, unit = "s", detail = detail })
end

--- Transactions open longer than opts.max (default 5m) in this database.
function H.db.long_transactions(conn, opts)
  opts = opts or {}
  local max = H.seconds(opts.max or "5m", "max transaction age")
  local rows = conn:query([[SELECT pid, usename, application_name, state,
        extract(epoch FROM now() - xact_start)::float8 AS age, left(regexp_replace(query, '\s+', ' ', 'g'), 80) AS query
      FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database()
        AND backend_type = 'client backend' AND extract(epoch FROM now() - xact_start) > $1 ORDER BY xact_start]], max)
  local items = {}
  for _, r in ipairs(rows) do
    items[#items + 1] = string.format("pid %d (%s, %s, %s) open %.0fs: %s", r.pid, r.usename or "?",
      (r.application_name or "") ~= "" and r.application_name or "no application_name", r.state or "?", r.age, r.query or "")
  end
  return dbres("long_transactions", "transactions", { status = #items > 0 and (opts.severity or "fail") or "pass",
    output = #items > 0 and string.format("%d transaction(s) open longer than %gs: %s", #items, max, list_text(items)) or nil,
    observed = #items, detail = #items == 0 and string.format("none older than %gs", max) or nil, pids = rows })
end

--- Sessions waiting on locks, with who blocks them. Waits longer than
-- opts.max_wait (default 30s) fail; shorter ones warn.
function H.db.blocked(conn, opts)
  opts = opts or {}
  local max_wait = H.seconds(opts.max_wait or "30s", "max lock wait")
  local rows = conn:query([[SELECT w.pid, w.usename, w.application_name, left(regexp_replace(w.query, '\s+', ' ', 'g'), 60) AS query,
        extract(epoch FROM now() - coalesce(w.state_change, w.query_start))::float8 AS waited,
        b.pid AS blocker, b.application_name AS blocker_app, b.state AS blocker_state,
        left(regexp_replace(b.query, '\s+', ' ', 'g'), 60) AS blocker_query
      FROM pg_stat_activity w
      CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
      LEFT JOIN pg_stat_activity b ON b.pid = bp.pid
      WHERE w.wait_event_type = 'Lock' AND w.datname = current_database() ORDER BY waited DESC]])
  local items, status = {}, "pass"
  for _, r in ipairs(rows) do
    items[#items + 1] = string.format("pid %d (%s) waits %.0fs on pid %d (%s, %s: %s): %s", r.pid,
      (r.application_name or "") ~= "" and r.application_name or "?", r.waited or 0, r.blocker,
      (r.blocker_app or "") ~= "" and r.blocker_app or "?", r.blocker_state or "?", r.blocker_query or "", r.query or "")
    status = worst(status, (r.waited or 0) > max_wait and "fail" or "warn")
  end
  return dbres("blocked", "lockWaits", { status = status, observed = #rows,
    output = #items > 0 and string.format("%d session(s) blocked on locks: %s", #items, list_text(items)) or nil,
    detail = #items == 0 and "no session waits on a lock" or nil, waits = rows })
end

--- Connection headroom: sessions in use against max_connections (less the
-- superuser reserve). opts.warn (default 0.8) and opts.max (default 0.95)
-- are fractions.
function H.db.connections(conn, opts)
  opts = opts or {}
  local r = conn:query([[SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used,
      current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int AS usable]])[1]
  local frac = r.used / math.max(1, r.usable)
  local status, out = "pass", nil
  local text = string.format("%d of %d connections in use (%.0f%%)", r.used, r.usable, frac * 100)
  if frac >= (opts.max or 0.95) then status, out = "fail", text .. ": new sessions (the application's, orch's) will soon be refused"
  elseif frac >= (opts.warn or 0.8) then status, out = "warn", text end
  return dbres("connections", "utilization", { status = status, output = out, observed = math.floor(frac * 1000 + 0.5) / 10,
    unit = "%", detail = text })
end

--- Indexes left INVALID (an interrupted CREATE INDEX CONCURRENTLY).
function H.db.invalid_indexes(conn, opts)
  local rows = conn:query([[SELECT format('%I.%I', n.nspname, c.relname) AS name, format('%I.%I', tn.nspname, t.relname) AS tbl
      FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
      WHERE NOT i.indisvalid ORDER BY 1]])
  local items = {}
  for _, r in ipairs(rows) do items[#items + 1] = r.name .. " on " .. r.tbl end
  return dbres("invalid_indexes", "indexes", { status = #items > 0 and "fail" or "pass", observed = #items,
    output = #items > 0 and string.format("%d invalid index(es): %s; drop and rebuild them (DROP INDEX CONCURRENTLY, then CREATE INDEX CONCURRENTLY)", #items, list_text(items)) or nil,
    detail = #items == 0 and "none" or nil })
end

--- Constraints added NOT VALID and not validated yet (warn by default:
-- often intended, but the rows they cover were never checked).
function H.db.not_valid_constraints(conn, opts)
  opts = opts or {}
  local rows = conn:query([[SELECT format('%I.%I', n.nspname, t.relname) AS tbl, c.conname
      FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE NOT c.convalidated AND c.contype IN ('c', 'f') ORDER BY 1, 2]])
  local items = {}
  for _, r in ipairs(rows) do items[#items + 1] = r.conname .. " on " .. r.tbl end
  return dbres("not_valid_constraints", "constraints", { status = #items > 0 and (opts.severity or "warn") or "pass", observed = #items,
    output = #items > 0 and string.format("%d constraint(s) NOT VALID: %s; run ALTER TABLE ... VALIDATE CONSTRAINT in a later migration", #items, list_text(items)) or nil,
    detail = #items == 0 and "none" or nil })
end

--- The schema is at the expected migration. opts.project (orch.migrate
-- project) and opts.expect: "latest" (default: nothing pending, failed,
-- changed or missing) or a version ("8", "2024.01.02").
function H.db.schema_version(conn, opts)
  opts = opts or {}
  local migrate = require "orch.migrate"
  local project = opts.project or migrate.load { dir = opts.dir or "migrations", env = opts.env }
  local st = migrate.status(conn, project)
  local current = migrate.current_version(conn, project, nil, st)
  local bad, retry = {}, 0
  for _, it in ipairs(st.items) do
    if it.state == "failed" and it.rolled_back ~= false then
      retry = retry + 1    -- failed inside its transaction: nothing of it stayed, the next migrate runs it again
    elseif it.state == "failed" or it.state == "changed" or it.state == "missing" then
      bad[#bad + 1] = string.format("%s %s", it.script or it.key, it.state)
    end
  end
  local expect = opts.expect or "latest"
  local status, out = "pass", nil
  if #bad > 0 then
    status, out = "fail", string.format("migration history has problems: %s (run orch status)", list_text(bad))
  elseif expect == "latest" then
    local pending = (st.summary.pending or 0) + retry
    if pending > 0 then
      status, out = "fail", string.format("%d migration(s) pending: %s", pending,
        current and ("the schema is at V" .. current .. ", not the latest") or "no migration is applied yet")
    end
  elseif tostring(current or "none") ~= tostring(expect) then
    status, out = "fail", expect == "none" and string.format("the schema is at V%s, expected no migration applied", current)
      or string.format("the schema is at %s, expected V%s", current and ("V" .. current) or "no migration", expect)
  end
  return dbres("schema_version", "schemaVersion", { status = status, output = out, observed = current and ("V" .. current) or "none",
    detail = "V" .. (current or "none") })
end

--- A team's SQL assertion: { name, query, params = {...}, expect = value |
-- function(v) -> ok[, why] }; without expect the first value must be true
-- (or a non-zero number / non-empty text).
function H.db.sql(conn, spec)
  local name = spec.name or spec.query
  local ok, v = pcall(conn.value, conn, spec.query, table.unpack(spec.params or {}))
  local r = { name = "sql:" .. name, kind = "database", measurement = "assertion" }
  if not ok then
    r.status, r.output = "fail", "the query failed: " .. tostring(v):gsub("\n.*", "")
    return result(r)
  end
  r.observed = v
  local good, why
  if type(spec.expect) == "function" then good, why = spec.expect(v)
  elseif spec.expect ~= nil then good = scalar_equal(v, spec.expect); why = string.format("got %s, expected %s", tostring(v), tostring(spec.expect))
  else good = v ~= nil and v ~= false and v ~= 0 and v ~= ""; why = "got " .. tostring(v) end
  r.status = good and "pass" or (spec.severity or "fail")
  if not good then r.output = why or ("got " .. tostring(v)) end
  return result(r)
end

--- Row counts: { table = "tickets", min = 1, max = n } (exact count(*)).
function H.db.rows(conn, spec)
  local t = spec.table
  local parts = {}
  for p in t:gmatch("[^.]+") do parts[#parts + 1] = conn:quote_ident(p) end
  local ok, n = pcall(conn.value, conn, "SELECT count(*) FROM " .. table.concat(parts, "."))
  local r = { name = "rows:" .. t, kind = "database", measurement = "rows", unit = "rows" }
  if not ok then r.status, r.output = "fail", "counting failed: " .. tostring(n):gsub("\n.*", "") return result(r) end
  r.observed = n
  if spec.min and n < spec.min then r.status, r.output = "fail", string.format("%d rows, expected at least %d", n, spec.min)
  elseif spec.max and n > spec.max then r.status, r.output = "fail", string.format("%d rows, expected at most %d", n, spec.max) end
  return result(r)
end

--- Room for a backup: the database's size against the free space in the
-- backup directory. opts.dir; opts.factor (default 1.0: free >= size) fails
-- below it, and below twice the size warns.
function H.db.backup_room(conn, opts)
  opts = opts or {}
  local dir = opts.dir or "backups"
  local size = conn:value("SELECT pg_database_size(current_database())")
  -- backups in object storage need no local room to be taken, but a restore spools the archive
  -- to local disk first: that is the room measured
  if require("orch.storage").is_remote(dir) then dir = require("orch.storage").spool_base() end
  -- the directory may not exist yet: measure the nearest one that does (checking creates nothing)
  local probe = dir
  while not sys.exists(probe) and probe:match("/") do probe = probe:match("^(.*)/[^/]*$") end
  if not sys.exists(probe) then probe = "." end
  local fs, err = sys.statvfs(probe)
  if not fs then return dbres("backup_room", "freeSpace", { status = "fail", output = "cannot read the free space of " .. dir .. ": " .. tostring(err) }) end
  local factor = opts.factor or 1.0
  local need = size * factor
  local status, out = "pass", nil
  if fs.free < need then
    status, out = "fail", string.format("not enough room for a backup in %s: %d MiB free, the database is %d MiB", dir, fs.free // 1048576, size // 1048576)
  elseif fs.free < 2 * need then
    status, out = "warn", string.format("little room for backups in %s: %d MiB free for a %d MiB database", dir, fs.free // 1048576, size // 1048576)
  end
  return dbres("backup_room", "freeSpace", { status = status, output = out, observed = fs.free // 1048576, unit = "MiB",
    database_bytes = size, free_bytes = fs.free, dir = dir,
    detail = string.format("%d MiB free in %s, database %d MiB", fs.free // 1048576, dir, size // 1048576) })
end

-- ================================================================ extension

--- Register a check kind: fn(conn, spec, ctx) -> result table (or status,
-- output, observed). Then { kind = "name", ... } entries in an environment's
-- health.checks run it.
function H.register(kind, fn)
  assert(type(kind) == "string" and type(fn) == "function", "health.register(kind, function) expected")
  H.kinds[kind] = fn
end

-- A custom check's return values made into a result.
local function custom_result(name, ok, a, b, c)
  if not ok then return result { name = name, kind = "custom", status = "fail", output = "the check raised: " .. tostring(a) } end
  if type(a) == "table" then a.name = a.name or name; a.kind = a.kind or "custom"; return result(a) end
  if a == true or a == nil then return result { name = name, kind = "custom", status = "pass", output = b and tostring(b) or nil } end
  if a == false then return result { name = name, kind = "custom", status = "fail", output = b and tostring(b) or "failed" } end
  if RANK[a] then return result { name = name, kind = "custom", status = a, output = b, observed = c } end
  return result { name = name, kind = "custom", status = "fail", output = "the check returned " .. tostring(a) .. " (pass/warn/fail, a boolean or a result table expected)" }
end

--- Run a team check: { name, kind = registered | run = function(conn, spec, ctx) }.
function H.custom(conn, spec, ctx)
  local fn = spec.run or H.kinds[spec.kind]
  local name = spec.name or spec.kind or "custom"
  if not fn then return result { name = name, kind = "custom", status = "fail", output = "no check kind '" .. tostring(spec.kind) .. "' (health.register it, or give run = function)" } end
  local t0 = sys.monotonic()
  local r = custom_result(name, pcall(fn, conn, spec, ctx))
  r.seconds = r.seconds or (sys.monotonic() - t0)
  return r
end

--- Team checks from a project file (default orch.health.lua): it returns a
-- list of { name, run = function(conn, spec, ctx) } and may register kinds.
function H.load_project_checks(path)
  path = path or "orch.health.lua"
  if not sys.exists(path) then return {} end
  local chunk, err = loadfile(path, "t")
  if not chunk then error("health checks file does not parse: " .. err, 0) end
  local list = chunk()
  if list ~= nil and type(list) ~= "table" then error(path .. " must return a list of checks", 0) end
  return list or {}
end

-- ================================================================ running

--- A report of a list of results: { status (the worst), checks, seconds
-- (since t0, when given), time }.
function H.report(results, t0)
  local status = "pass"
  for _, r in ipairs(results) do status = worst(status, r.status) end
  return { status = status, checks = results, seconds = t0 and (sys.monotonic() - t0) or nil, time = os.date("!%Y-%m-%dT%H:%M:%SZ") }
end

local function timed(fn, ...)
  local t0 = sys.monotonic()
  local ok, r = pcall(fn, ...)
  if not ok then
    if type(r) == "table" and r.interrupted then error(r, 0) end
    return nil, r
  end
  r.seconds = r.seconds or (sys.monotonic() - t0)
  return r
end

--- The checks of an environment's health = { ... } (orch.env.lua):
--   health = {
--     db = { max_transaction_age = "5m", max_lock_wait = "30s", max_replication_lag = "10s",
--            expect_role = "primary", min_version = 14, schema = "latest" | "8" | false,
--            backup_room = true, not_valid = "warn", max_latency = "200ms" },
--     http = { { name = "api", url_env = "API_HEALTH_URL", expect_status = 200, max_latency = "500ms" } },
--     sql = { { name = "sla policies", query = "SELECT count(*) = 4 FROM sla_policies" } },
--     rows = { { table = "users", min = 1 } },
--     checks = { { name = "cache", kind = "redis", ... }, { name = "x", run = function(conn) ... end } },
--   }
-- o: conn (open connection), url (to time a fresh connection), env, project,
-- only = "db" | "http" | "database" (the built-in database checks alone) | "release" (what judges the
-- release's contents, for inside its transaction: schema version, invalid indexes, NOT VALID constraints,
-- SQL assertions, row counts, team checks; not the server's state nor the endpoints),
-- savepoints (each check in a savepoint of the caller's transaction, so a failing query cannot abort it),
-- wait (seconds: keep retrying until pass or this passes).
function H.run_checks(o)
  local t0 = sys.monotonic()
  local env = o.env or { health = {}, backups = {} }
  local hc = env.health or {}
  local dbo = hc.db or {}
  local results = {}
  local release = o.only == "release"
  local function add(fn, ...)
    local conn = o.savepoints and o.conn
    if conn then conn:exec("SAVEPOINT orch_check") end
    local r, err = timed(fn, ...)
    if conn then conn:exec("ROLLBACK TO SAVEPOINT orch_check; RELEASE SAVEPOINT orch_check") end
    results[#results + 1] = r or result { name = "check", status = "fail", output = tostring(err) }
  end
  local server = function(fn, ...) if not release then add(fn, ...) end end
  if o.only ~= "http" and dbo ~= false then
    -- the caller's connection, or one of our own (its connect time is the connect check's)
    local conn, own, connect_s = o.conn, nil, nil
    if not conn then
      local seconds_or_failure
      own, seconds_or_failure = open_timed(o.url)
      if not own then
        results[#results + 1] = seconds_or_failure
        goto http
      end
      conn, connect_s = own, seconds_or_failure
    end
    server(H.db.connect, conn, { connect_seconds = connect_s, max_latency = dbo.max_latency, warn_latency = dbo.warn_latency })
    server(H.db.version, conn, { min_version = dbo.min_version })
    server(H.db.role, conn, { expect = dbo.expect_role })
    server(H.db.replication_lag, conn, { max = dbo.max_replication_lag, warn = dbo.warn_replication_lag,
      role = results[#results] and results[#results].observed })
    server(H.db.long_transactions, conn, { max = dbo.max_transaction_age })
    server(H.db.blocked, conn, { max_wait = dbo.max_lock_wait })
    server(H.db.connections, conn, { warn = dbo.connections_warn, max = dbo.connections_max })
    add(H.db.invalid_indexes, conn, {})
    add(H.db.not_valid_constraints, conn, { severity = dbo.not_valid })
    local schema = dbo.schema
    if o.schema ~= nil then schema = o.schema end
    if schema ~= false and (o.project or sys.exists(o.dir or "migrations")) then
      add(H.db.schema_version, conn, { project = o.project, dir = o.dir, env = env.name, expect = schema })
    end
    if dbo.backup_room ~= false and env.backups and env.backups.dir then
      server(H.db.backup_room, conn, { dir = env.backups.dir, factor = type(dbo.backup_room) == "number" and dbo.backup_room or nil })
    end
    if o.only ~= "database" then
      for _, s in ipairs(hc.sql or {}) do add(H.db.sql, conn, s) end
      for _, s in ipairs(hc.rows or {}) do add(H.db.rows, conn, s) end
      local team = {}
      for _, s in ipairs(hc.checks or {}) do team[#team + 1] = s end
      for _, s in ipairs(o.project_checks or H.load_project_checks()) do team[#team + 1] = s end
      for _, s in ipairs(team) do add(H.custom, conn, s, o.ctx) end
    end
    if own then own:close() end
  end
  ::http::
  if o.only ~= "db" and o.only ~= "database" and not release then
    for _, s in ipairs(hc.http or {}) do
      if o.wait then
        add(H.wait_for, s, { deadline = o.wait, interval = hc.wait_interval })
      else
        add(H.http, s)
      end
    end
  end
  return H.report(results, t0)
end

--- Poll a check until it passes or the deadline passes. check: an HTTP
-- spec table, or a function returning a result (or true / false, why).
-- opts: deadline (default 60s), interval (default 1s). Returns the last
-- result; its output says how long it waited.
function H.wait_for(check, opts)
  opts = opts or {}
  local deadline = H.seconds(opts.deadline or "60s", "deadline")
  local interval = H.seconds(opts.interval or "1s", "interval")
  local t0 = sys.monotonic()
  local n, r = 0, nil
  while true do
    n = n + 1
    local left = deadline - (sys.monotonic() - t0)
    if type(check) == "function" then
      r = custom_result(opts.name or "wait_for", pcall(check))
    else
      local spec = setmetatable({ deadline = math.max(0.1, math.min(left, H.seconds(check.deadline or left, "deadline"))),
        retries = check.retries or 0 }, { __index = check })
      r = H.http(spec)
    end
    if r.status ~= "fail" then break end
    left = deadline - (sys.monotonic() - t0)
    if left <= interval then
      r.output = string.format("%s (not healthy after waiting %.0fs, %d tries)", r.output or "failed", sys.monotonic() - t0, n)
      break
    end
    log.debug("waiting for %s: %s", r.name, r.output or "")
    sys.sleep(interval)
  end
  r.seconds = sys.monotonic() - t0
  r.attempts = n
  return r
end

-- ================================================================ output

--- The report as an application/health+json document.
function H.to_json(report, meta)
  meta = meta or {}
  local checks = json.object {}
  for _, r in ipairs(report.checks) do
    local key = r.name:find(":", 1, true) and r.name or (r.name .. ":" .. (r.measurement or "status"))
    local entry = json.object { componentType = r.kind, status = r.status, time = r.time,
      observedValue = r.observed, observedUnit = r.unit, output = r.output, componentId = r.endpoint,
      affectedEndpoints = r.endpoint and { r.endpoint } or nil }
    checks[key] = checks[key] or {}
    table.insert(checks[key], entry)
  end
  local failing = {}
  for _, r in ipairs(report.checks) do if r.status ~= "pass" then failing[#failing + 1] = r.name .. ": " .. (r.output or r.status) end end
  return json.object { status = report.status, version = meta.version, serviceId = meta.service,
    description = meta.description, output = #failing > 0 and table.concat(failing, "; ") or nil,
    notes = meta.notes, checks = checks }
end

--- A terminal table of the report.
function H.format_table(report, opts)
  opts = opts or {}
  local rows = { { "CHECK", "STATUS", "OBSERVED", "DETAIL" } }
  for _, r in ipairs(report.checks) do
    if opts.problems_only and r.status == "pass" then goto next end
    local obs = r.observed ~= nil and (tostring(r.observed) .. (r.unit and (" " .. r.unit) or "")) or ""
    rows[#rows + 1] = { r.name, r.status, obs, r.output or r.detail or "" }
    ::next::
  end
  local w = { 0, 0, 0 }
  for _, row in ipairs(rows) do for i = 1, 3 do w[i] = math.max(w[i], #tostring(row[i])) end end
  local out = {}
  if #rows == 1 and opts.problems_only then rows = {} end
  for i, row in ipairs(rows) do
    local st = row[2]
    local painted = i == 1 and st or log.paint(st == "pass" and "ok" or st == "warn" and "warn" or "error", st)
    out[#out + 1] = (opts.indent or "") .. string.format("%-" .. w[1] .. "s  ", row[1]) .. painted .. string.rep(" ", w[2] - #st + 2)
      .. string.format("%-" .. w[3] .. "s  %s", row[3], row[4])
  end
  local n = { pass = 0, warn = 0, fail = 0 }
  for _, r in ipairs(report.checks) do n[r.status] = (n[r.status] or 0) + 1 end
  out[#out + 1] = (opts.indent or "") .. string.format("overall: %s (%d checks: %d pass, %d warn, %d fail)%s", report.status,
    #report.checks, n.pass, n.warn, n.fail, report.seconds and string.format(" in %d ms", ms(report.seconds)) or "")
  return table.concat(out, "\n")
end

--- The failing and warning lines of a report (for error messages).
function H.problems(report, level)
  local out = {}
  for _, r in ipairs(report.checks) do
    if RANK[r.status] >= RANK[level or "warn"] then out[#out + 1] = string.format("%s %s: %s", r.name, r.status, r.output or "") end
  end
  return out
end

return H
