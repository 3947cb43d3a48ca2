--- orch status: what is applied, pending, failed, changed or missing.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json" })

return {
  summary = "show applied, pending, failed, changed and missing migrations",
  usage = "usage: orch status [--db URL] [--dir DIR] [--service NAME]... [--json]",
  examples = { "orch status", "orch status --json | jq '.summary'" },
  spec = spec,
  run = function(argv)
    local opts, project = C.setup(argv, "status", spec)
    local c <close> = C.connect(opts)
    local st = migrate.status(c, project)
    if project.services then
      -- --service: those services' migrations only, counted again
      local items, summary = {}, {}
      for _, it in ipairs(st.items) do
        if migrate.selected(project, it.service) then
          items[#items + 1] = it
          summary[it.state] = (summary[it.state] or 0) + 1
        end
      end
      st.items, st.summary = items, summary
    end
    if opts.json then
      local items = {}
      for i, it in ipairs(st.items) do
        items[i] = { key = it.key, service = it.service, version = it.version, description = it.description,
          type = it.type, script = it.script, state = it.state, checksum = it.checksum,
          applied_checksum = it.applied_checksum, installed_on = it.installed_on,
          execution_time = it.execution_time, run_id = it.run_id, message = it.message }
      end
      C.print_json { history = st.history, migrations = items, summary = require("orch.json").object(st.summary),
        ignored = project.ignored or {} }
    else
      print(migrate.format_status(st, project))
    end
    return 0
  end,
}
