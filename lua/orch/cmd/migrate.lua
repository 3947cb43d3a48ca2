--- orch migrate: apply pending migrations.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local log = require "orch.log"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "dry_run", "yes" }, {
  { name = "target", type = "string", metavar = "[SERVICE:]VERSION", help = "migrate up to this version only (SERVICE:VERSION: that service's)" },
  { name = "lock-timeout", type = "duration", metavar = "DURATION", help = "lock_timeout for every migration (default: the environment's lock_timeout, else 5s)" },
  { name = "retries", type = "integer", min = 0, metavar = "N", help = "retries when a lock is not available (55P03) (default: the environment's retries, else 5)" },
  { name = "lock-wait", type = "number", min = 0, default = 60, metavar = "SECONDS", help = "wait this long for another orch's migration lock" },
  { name = "out-of-order", type = "boolean", help = "also apply pending migrations older than the newest applied one" },
  { name = "run-id", type = "string", help = "tie the history rows to this run id" },
  { name = "only", type = "string", metavar = "MIGRATION", help = "apply this one pending migration (a file name, SERVICE:VERSION or VERSION) when its dependencies are applied" },
  { name = "schema-file", type = "string", metavar = "PATH", help = "after migrating, write the schema there for review (orch's own catalog code; orch drift compares with it; default: the environment's schema_file, else none)" },
  { name = "allow-non-empty", type = "boolean", help = "migrate a database that has objects but no migration history (refused otherwise, as Flyway does: see orch baseline)" },
})

return {
  summary = "apply pending migrations (versioned, then changed repeatables)",
  usage = "usage: orch migrate [--db URL] [--dir DIR] [--target [SERVICE:]VERSION] [--service NAME]... [--dry-run] [--json]",
  description = "Each migration runs in its own transaction (unless it says '-- orch: transaction=false'),\n" ..
    "with lock_timeout set and bounded retries; an advisory lock on a separate session keeps two\n" ..
    "orch processes from migrating one database at once. --dry-run prints the plan and the SQL and\nwrites nothing.\n" ..
    "--env NAME (or ORCH_ENV) picks the database, lock_timeout and retries from orch.env.lua; a\n" ..
    "protected environment asks before applying (on a terminal) or needs --yes.",
  examples = { "orch migrate", "orch migrate --target 3 --dry-run", "orch migrate --service auth-service --only 20240101_002", "DATABASE_URL=postgres://app@db/app orch migrate --json" },
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "migrate", spec)
    local c <close> = C.connect(opts)
    if not opts.dry_run and env.protected and not opts.yes then
      local plan = migrate.up(c, project, { target = opts.target, out_of_order = opts.out_of_order, dry_run = true, pick = opts.only,
        refuse_non_empty = not opts.allow_non_empty }).planned
      if #plan > 0 then
        if not opts.json then C.print_plan(plan, project, false) end
        C.approve(env, opts, string.format("apply %d migration%s to %s (%s)?", #plan, #plan == 1 and "" or "s",
          env.name, log.redact(c:info().dbname)))
      end
    end
    -- every run has an id in the history, so orch undo --run last can take back exactly this run
    local run_id = opts.run_id or (not opts.dry_run and require("orch.recipe").new_run_id()) or nil
    local r = migrate.up(c, project, {
      target = opts.target, dry_run = opts.dry_run, run_id = run_id, pick = opts.only,
      lock_timeout = opts.lock_timeout or env.lock_timeout, retries = opts.retries or env.retries, lock_wait = opts.lock_wait, out_of_order = opts.out_of_order,
      refuse_non_empty = not opts.allow_non_empty,
      on_progress = not opts.json and not opts.quiet and function(ev)
        if ev.event == "start" then
          io.stdout:write(string.format("[%d/%d] %s ... ", ev.index, ev.total, ev.migration.name)); io.stdout:flush()
        else
          io.stdout:write(log.paint("ok", "ok"), string.format(" (%d ms)\n", ev.ms))
        end
      end or nil,
    })
    local schema_file = not r.dry_run and (opts.schema_file or (not env.implicit and env.schema_file))
    if schema_file then
      local n = require("orch.migrate.snapshot").write(c, schema_file, string.format("database %s after orch migrate (run %s)",
        log.redact(c:info().dbname), run_id))
      log.info("wrote the schema (%d objects) to %s", n, schema_file)
    end
    if opts.json then
      local planned = {}
      for i, e in ipairs(r.planned) do planned[i] = e.name end
      C.print_json { dry_run = r.dry_run or false, applied = r.applied, planned = planned, run_id = run_id }
    elseif r.dry_run then
      C.print_plan(r.planned, project, true)
    elseif #r.applied == 0 then
      print("nothing to migrate: the database is up to date")
    else
      print(string.format("applied %d migration%s (run %s: orch undo --run last takes them back)", #r.applied,
        #r.applied == 1 and "" or "s", run_id))
    end
    return 0
  end,
}
