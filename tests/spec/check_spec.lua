-- `orch check`: an environment's health checks from the command line, against
-- the real test cluster and a real local HTTP server; a table for people,
-- application/health+json with --json, and the exit code.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"

describe("orch check", function()
  local srv, url, name, dir
  setup(function()
    srv = H.httpd()
    url, name = H.fresh_db("check")
    local c <close> = H.connect(name)
    c:exec("CREATE TABLE users (id int); INSERT INTO users VALUES (1), (2)")
  end)
  teardown(function()
    srv:stop()
    H.drop_db(name)
  end)
  before_each(function() dir = H.tmpdir() end)
  after_each(function() sys.rmtree(dir) end)

  local function envfile(health)
    H.write(dir .. "/orch.env.lua", string.format([[return {
  prod = { database = { env = "CHECK_DB_URL" }, backups = { dir = %q }, health = %s },
}]], dir .. "/backups", health))
  end

  local function check(argv, extra_env)
    local a = { "check", "--env", "prod" }
    for _, x in ipairs(argv or {}) do a[#a + 1] = x end
    local env = { CHECK_DB_URL = url, DATABASE_URL = false }
    for k, v in pairs(extra_env or {}) do env[k] = v end
    return H.orch(a, { cwd = dir, env = env, timeout = 120 })
  end

  it("all checks pass: a table and exit 0", function()
    envfile(string.format([[{ sql = { { name = "users exist", query = "SELECT count(*) > 0 FROM users" } },
      rows = { { table = "users", min = 2 } }, http = { { name = "api", url_env = "API_URL" } } }]]))
    local r = check({}, { API_URL = srv:url("/health/pass") })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("health of prod %(postgresql://", r.stdout)
    assert.matches("\ndatabase:connect%s+pass", r.stdout)
    assert.matches("\nsql:users exist%s+pass", r.stdout)
    assert.matches("\nrows:users%s+pass%s+2 rows", r.stdout)
    assert.matches("\napi%s+pass%s+%d+ ms", r.stdout)
    assert.matches("overall: pass", r.stdout)
  end)

  it("--json prints application/health+json; a failing endpoint makes the status fail and the exit code 1", function()
    envfile([[{ http = { { name = "api", url_env = "API_URL", retries = 0 } } }]])
    local r = check({ "--json" }, { API_URL = srv:url("/health/fail") })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals("fail", doc.status)
    assert.equals("prod", doc.serviceId)
    local api = doc.checks["api:responseTime"][1]
    assert.equals("fail", api.status)
    assert.equals("http", api.componentType)
    assert.matches("HTTP 503, expected 2xx; the service reports fail", api.output)
    assert.equals("pass", doc.checks["database:connect"][1].status)
    assert.matches("api: HTTP 503", doc.output)
  end)

  it("a warning exits 1 unless --allow-warn", function()
    envfile([[{ http = { { name = "api", url_env = "API_URL" } } }]])
    local r = check({}, { API_URL = srv:url("/health/warn") })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("overall: warn", r.stdout)
    r = check({ "--allow-warn" }, { API_URL = srv:url("/health/warn") })
    assert.equals(0, r.code, r.stdout .. r.stderr)
  end)

  it("--wait keeps trying until the checks pass", function()
    srv:reset()
    envfile([[{ http = { { name = "api", url_env = "API_URL", retries = 0 } } }]])
    local r = check({ "--wait", "30s", "--interval", "200ms" }, { API_URL = srv:url("/flaky/check-wait/3") })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("after 4 tries", r.stdout)
    assert.matches("try 1: api fail: HTTP 503", r.stderr)
  end)

  it("an endpoint that is down, a database that is down, and a check URL that is not set all fail clearly", function()
    envfile([[{ http = { { name = "api", url_env = "API_URL", retries = 1, backoff = "50ms" }, { name = "admin", url_env = "ADMIN_URL" } } }]])
    local t0 = sys.monotonic()
    local r = check({}, { API_URL = "http://127.0.0.1:" .. sys.free_port() .. "/health",
      CHECK_DB_URL = "postgresql://postgres@127.0.0.1:" .. sys.free_port() .. "/nope" })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - t0 < 15)
    assert.matches("\ndatabase:connect%s+fail%s+.*Connection refused", r.stdout)
    assert.matches("\napi%s+fail%s+GET http://127.0.0.1:%d+/health: could not connect.*%(after 2 attempts%)", r.stdout)
    assert.matches("\nadmin%s+fail%s+the environment variable ADMIN_URL %(url_env of health check admin%) is not set", r.stdout)
  end)

  it("--only http skips the database; --url adds an endpoint", function()
    envfile([[{}]])
    local r = check({ "--only", "http", "--url", srv:url("/status/200"), "--json" }, { CHECK_DB_URL = "postgresql://x@127.0.0.1:1/x" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local doc = json.decode(r.stdout)
    assert.is_nil(doc.checks["database:connect"])
    local n = 0
    for _ in pairs(doc.checks) do n = n + 1 end
    assert.equals(1, n)
    r = check({ "--only", "http" })
    assert.equals(1, r.code)
    assert.matches("nothing to check: environment prod has no HTTP checks", r.stderr)
    r = check({ "--only", "disk" })
    assert.equals(2, r.code)
    assert.matches("%-%-only takes db or http", r.stderr)
  end)

  it("team checks from orch.health.lua run with the rest", function()
    envfile([[{}]])
    H.write(dir .. "/orch.health.lua", [[
return { { name = "tickets table", run = function(conn)
  if conn:value("SELECT to_regclass('public.tickets') IS NULL") then return "fail", "no tickets table" end
  return "pass" end } }]])
    local r = check({})
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("\ntickets table%s+fail%s+no tickets table", r.stdout)
  end)

  it("an unknown environment is a usage error", function()
    envfile([[{}]])
    local r = check({ "--env", "prdo" })
    assert.equals(2, r.code)
    assert.matches("no environment named 'prdo'.*known: prod", r.stderr)
  end)
end)

describe("orch notify", function()
  local srv, dir
  setup(function() srv = H.httpd() end)
  teardown(function() srv:stop() end)
  before_each(function()
    dir = H.tmpdir()
    srv:reset()
    H.write(dir .. "/orch.env.lua", [[return { prod = {
  webhooks = { { url_env = "N_SLACK", kind = "slack" }, { url_env = "N_JSON", kind = "json", token_env = "N_TOKEN" } } } }]])
  end)
  after_each(function() sys.rmtree(dir) end)

  it("sends a test notification to every webhook and says which took it", function()
    local r = H.orch({ "notify", "--env", "prod", "--message", "release 42 at 14:00" }, { cwd = dir,
      env = { N_SLACK = srv:url("/hook/slack-tok3n-path"), N_JSON = srv:url("/hook/json"), N_TOKEN = "tkn-abcdef" } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("N_SLACK%s+delivered %(HTTP 200%)", r.stdout)
    assert.matches("2 of 2 webhook%(s%) took the test notification", r.stdout)
    local hooks = srv:hooks()
    assert.equals(2, #hooks)
    local slack = json.decode(hooks[1].name:match("^slack") and hooks[1].body or hooks[2].body)
    assert.equals("orch notify on prod test notification", slack.text)
    assert.matches("release 42 at 14:00", slack.attachments[1].text)
    local ev = json.decode(hooks[1].name == "json" and hooks[1].body or hooks[2].body)
    assert.equals("test", ev.event)
    assert.equals("release 42 at 14:00", ev.message)
    assert.is_nil((r.stdout .. r.stderr):find("tok3n", 1, true))
  end)

  it("a webhook that fails or whose variable is not set makes it exit 1", function()
    local r = H.orch({ "notify", "--env", "prod", "--json" }, { cwd = dir,
      env = { N_SLACK = srv:url("/hook-fail/slack"), N_JSON = false } })
    assert.equals(1, r.code, r.stdout .. r.stderr)
    local doc = json.decode(r.stdout)
    assert.equals(0, doc.delivered)
    assert.matches("HTTP 500", doc.webhooks[1].error)
    assert.equals("the variable N_JSON is not set", doc.webhooks[2].error)
  end)
end)

describe("orch.env health settings", function()
  it("refuses a literal credential header and reads it from a variable with headers_env", function()
    local srv = H.httpd()
    finally(function() srv:stop() end)
    local dir = H.tmpdir()
    H.write(dir .. "/orch.env.lua", [[return { prod = { health = { db = false,
      http = { { name = "api", url = "]] .. srv:url("/echo") .. [[", headers = { Authorization = "Bearer hunter2hunter2" } } } } } }]])
    local r = H.orch({ "check", "--env", "prod", "--only", "http" }, { cwd = dir })
    assert.equals(1, r.code)
    assert.matches("health.http%[1%] has a literal Authorization header; credentials stay out of files", r.stderr)
    assert.is_nil(r.stderr:find("hunter2hunter2", 1, true))
    H.write(dir .. "/orch.env.lua", [[return { prod = { health = { db = false,
      http = { { name = "api", url = "]] .. srv:url("/echo") .. [[", headers_env = { Authorization = "API_AUTH" },
                 expect_json = { ["headers.authorization"] = "Bearer hunter2hunter2" } } } } } }]])
    r = H.orch({ "check", "--env", "prod", "--only", "http" }, { cwd = dir, env = { API_AUTH = "Bearer hunter2hunter2" } })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    r = H.orch({ "check", "--env", "prod", "--only", "http" }, { cwd = dir, env = { API_AUTH = false } })
    assert.equals(1, r.code)
    assert.matches("the environment variable API_AUTH %(header Authorization of health check api%) is not set", r.stdout)
    sys.rmtree(dir)
  end)
end)
