-- recipes/dev.lua -- the development flow, and the first thing a new user runs:
--   orch recipes/dev.lua            (or scripts/dev)
-- Uses the database in --db / DATABASE_URL when one is configured, otherwise
-- starts (or reuses) a throwaway local cluster in .orch/localpg and recreates
-- the database there from scratch. Then: migrate (with the dev seed data),
-- lint, a few health checks, and a summary.
local args = require "orch.args"
local target = require "orch.target"
local localpg = require "orch.localpg"
local migrate = require "orch.migrate"
local lint = require "orch.lint"
local log = require "orch.log"
local sys = require "orch.sys"
local db = require "orch.db"

local spec = args.spec({ "db", "dir" }, {
  { name = "dbname", type = "string", default = "orch_dev", help = "database to (re)create in the local cluster" },
  { name = "keep", type = "boolean", help = "keep the existing local database instead of recreating it" },
})
local opts = args.parse({ ... }, spec, "recipes/dev.lua")
if opts.help then
  print("usage: orch recipes/dev.lua [--db URL] [--dbname NAME] [--keep]\n\n" .. args.help(spec))
  return 0
end

local t0 = sys.monotonic()
local function step(name) log.info(log.paint("notice", "==> ") .. name) end

step("database")
local url = target.resolve(opts)
if not url then
  log.info("no database configured (--db, DATABASE_URL): using the local throwaway cluster in .orch/localpg")
  local pg = localpg.ensure(".orch/localpg")
  url = pg:create_database(opts.dbname, { drop = not opts.keep })
  log.info("%s the database %s on %s:%d", opts.keep and "reusing" or "recreated", opts.dbname, pg.host, pg.port)
end
local c <close> = db.connect(url)
local info = c:info()
print(string.format("connected to %s on %s:%s as %s (PostgreSQL %s)",
  info.dbname, info.host, info.port, info.user, info.server_version))

step("migrate (env dev, with seed data)")
local project = migrate.load { dir = opts.dir or "migrations", env = "dev" }
local r = migrate.up(c, project, {
  on_progress = function(ev)
    if ev.event == "done" then log.info("  applied %-40s %5d ms", ev.migration.name, ev.ms) end
  end,
})
if #r.applied == 0 then log.info("  nothing to migrate: up to date") end

step("lint")
local findings = lint.run(project)
if #findings == 0 then log.info("  no findings") else log.info("%s", lint.format(findings)) end

step("health")
local checks = {
  { "round trip", function() local s = sys.monotonic(); c:value("SELECT 1"); return string.format("%.1f ms", (sys.monotonic() - s) * 1000) end },
  { "invalid indexes", function()
      local n = c:value("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
      if n > 0 then error(n .. " invalid index(es)", 0) end
      return "none" end },
  { "schema version", function() return "V" .. (migrate.current_version(c, project) or "none") end },
}
local failed = 0
for _, ch in ipairs(checks) do
  local ok, v = pcall(ch[2])
  if not ok then failed = failed + 1 end
  log.info("  %-16s %s %s", ch[1], ok and log.paint("ok", "pass") or log.paint("error", "fail"), tostring(v))
end

step("summary")
local st = migrate.status(c, project)
print(string.format("dev database ready in %.1fs: %s, schema at V%s, %d applied now, %d lint finding%s, health %s",
  sys.monotonic() - t0, log.redact(url), migrate.current_version(c, project) or "-", #r.applied,
  #findings, #findings == 1 and "" or "s", failed == 0 and "ok" or (failed .. " failed")))
print("connect with: psql " .. log.redact(url))
return failed == 0 and 0 or 1
