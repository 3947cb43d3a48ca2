--- orch check: run an environment's health checks (database, SQL
-- assertions, row counts, HTTP endpoints, team checks) once, or until they
-- pass (--wait). A table on a terminal; --json prints the
-- application/health+json document. Exit 0 when every check passes.
local args = require "orch.args"
local envmod = require "orch.env"
local health = require "orch.health"
local json = require "orch.json"
local log = require "orch.log"
local sys = require "orch.sys"

local spec = args.spec({ "db", "dir", "env", "fleet_target" }, {
  { name = "wait", type = "duration", metavar = "DURATION", help = "retry until every check passes or DURATION passes (e.g. 2m)" },
  { name = "interval", type = "duration", metavar = "DURATION", default = "2s", help = "pause between tries with --wait" },
  { name = "only", type = "string", metavar = "db|http", choices = { "db", "http" }, help = "run only the database or only the HTTP checks" },
  { name = "url", type = "list", metavar = "URL", help = "also check this HTTP endpoint (expects 2xx; repeatable)" },
  { name = "allow-warn", type = "boolean", help = "exit 0 when the worst result is a warning" },
})

-- The database to check: --db, DATABASE_URL, the environment's variable or
-- service; for a local-cluster environment, that cluster if it is running.
local function database(env, opts)
  local url = envmod.database(env, opts)
  if url or not env.database.local_cluster then return url end
  local pg = require("orch.localpg").open(env.database.dir or ".orch/localpg")
  if pg:running() then return pg:url(env.database.dbname or "orch_dev") end
  return nil, string.format("environment %s uses the local throwaway cluster in %s, and it is not running: " ..
    "start it with 'orch local start' (or run orch recipes/dev.lua), or pass --db URL", env.name, env.database.dir or ".orch/localpg")
end

return {
  summary = "run the environment's health checks: database, SQL assertions, HTTP endpoints (--json: health+json)",
  usage = "usage: orch check [--env NAME] [--db URL] [--json] [--wait 2m] [--only db|http] [--url URL]",
  description = [[
Checks, from orch.env.lua's health = { db = {...}, sql = {...}, rows = {...}, http = {...}, checks = {...} }:
  database   connect and round trip, server version, primary/standby, replication lag,
             long transactions, sessions blocked on locks (and their blocker), connection
             headroom (max_connections), invalid
             indexes, NOT VALID constraints, schema at the latest migration, room for a backup
  sql        a team's assertions: { name = "...", query = "SELECT ...", expect = value }
  rows       row counts: { table = "users", min = 1 }
  http       endpoints: status, body text or JSON field, latency, retries within a deadline;
             application/health+json verdicts (pass / warn / fail) are understood
  checks     team checks: { name = "...", run = function(conn) return "pass" end }, and orch.health.lua
Exit status: 0 every check passes, 1 a check fails (or warns, unless --allow-warn), 2 usage.]],
  examples = { "orch check --env prod", "orch check --env prod --json | jq .status", "orch check --only http --wait 2m --env staging" },
  spec = spec,
  run = function(argv)
    local opts = args.parse(argv, spec, "check")
    if opts.only and opts.only ~= "db" and opts.only ~= "http" then args.usage_error("check", "--only takes db or http, not '" .. opts.only .. "'") end
    local env = envmod.load_target(opts.env, nil, opts.fleet_target)
    for _, u in ipairs(opts.url or {}) do
      env.health.http = env.health.http or {}
      table.insert(env.health.http, { name = "url:" .. log.redact(u):gsub("%?.*", ""), url = u })
    end
    local url, why = nil, nil
    if opts.only ~= "http" then url, why = database(env, opts) end
    local wait = args.seconds(opts.wait, "--wait")
    local interval = args.seconds(opts.interval, "--interval")
    local t0 = sys.monotonic()
    local report, tries = nil, 0
    while true do
      tries = tries + 1
      if why then
        -- no database to connect to: say so as the connect check, and run the endpoints
        local checks = { health.result { name = "database:connect", kind = "database", measurement = "responseTime", status = "fail", output = why } }
        for _, r in ipairs(health.run_checks { env = env, only = "http", dir = opts.dir }.checks) do checks[#checks + 1] = r end
        report = health.report(checks, t0)
      else
        report = health.run_checks { url = url, env = env, only = opts.only, dir = opts.dir }
      end
      if report.status ~= "fail" or not wait then break end
      local left = wait - (sys.monotonic() - t0)
      if left <= interval then break end
      log.info("try %d: %s; trying again in %gs (%.0fs left)", tries, table.concat(health.problems(report, "fail"), "; "), interval, left)
      sys.sleep(interval)
    end
    if #report.checks == 0 then
      -- raised, so that --json makes it an error object like every other
      require("orch.sys").error(string.format("nothing to check: environment %s has no %schecks (see orch help check)", env.name,
        opts.only == "http" and "HTTP " or opts.only == "db" and "database " or ""), 1)
    end
    if opts.json then
      io.stdout:write(json.encode(health.to_json(report, { description = "orch check for environment " .. env.name,
        service = env.name, notes = { string.format("%d tr%s in %.1fs", tries, tries == 1 and "y" or "ies", sys.monotonic() - t0) } }),
        { indent = "  " }), "\n")
    else
      print(string.format("health of %s (%s)%s", env.name, url and log.redact(url) or "no database",
        tries > 1 and string.format(" after %d tries", tries) or ""))
      print(health.format_table(report))
    end
    if report.status == "pass" or (report.status == "warn" and opts.allow_warn) then return 0 end
    return 1
  end,
}
