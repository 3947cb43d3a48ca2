--- orch undo: run undo migrations, newest first.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local sys = require "orch.sys"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json", "dry_run", "yes" }, {
  { name = "count", type = "integer", min = 1, metavar = "N", default = 1, help = "undo the last N migrations" },
  { name = "target", type = "string", metavar = "[SERVICE:]VERSION", help = "undo every migration above VERSION (0 = all); SERVICE:VERSION for one service's" },
  { name = "run-id", type = "string", help = "tie the history rows to this run id" },
  { name = "run", type = "string", metavar = "RUN_ID|last", help = "undo what that run applied (last: the newest run still applied, like Knex's last batch)" },
  { name = "only", type = "string", metavar = "MIGRATION", help = "undo this one applied migration (a file name, SERVICE:VERSION or VERSION) when nothing applied depends on it" },
})

return {
  summary = "undo the last N migrations, or down to a version, with U files or Lua down functions",
  usage = "usage: orch undo [--count N | --target [SERVICE:]VERSION | --run RUN_ID|last | --only MIGRATION] [--service NAME]... [--yes] [--dry-run]",
  examples = { "orch undo", "orch undo --target 0 --yes", "orch undo --target auth-service:20240101_001 --yes", "orch undo --run last --yes" },
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "undo", spec)
    local c <close> = C.connect(opts)
    local plan = migrate.undo(c, project, { count = opts.count, target = opts.target, run = opts.run, pick = opts.only, dry_run = true })
    if opts.dry_run or #plan.planned == 0 then
      if opts.json then
        local p = {}
        for i, e in ipairs(plan.planned) do p[i] = e.undo.name end
        C.print_json { dry_run = true, planned = p }
      else
        C.print_plan(plan.planned, project, opts.dry_run, true)
      end
      return 0
    end
    if not C.confirm(string.format("undo %d migration%s%s?", #plan.planned, #plan.planned == 1 and "" or "s",
        env.protected and (" in the protected environment " .. env.name) or ""), opts) then
      sys.error("undo needs confirmation: answer y on a terminal, or pass --yes", 1)
    end
    local r = migrate.undo(c, project, { count = opts.count, target = opts.target, run = opts.run, pick = opts.only, run_id = opts.run_id,
      lock_timeout = env.lock_timeout, retries = env.retries })
    if opts.json then C.print_json { undone = r.undone }
    else
      for _, u in ipairs(r.undone) do print(string.format("undone %s (%d ms)", u.script, u.ms)) end
    end
    return 0
  end,
}
