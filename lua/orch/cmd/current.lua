--- orch current: the version the database is at, in one line (Alembic's current).
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local json = require "orch.json"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json" })

return {
  summary = "print the version the database is at, one line (per service: SERVICE:VERSION)",
  usage = "usage: orch current [--db URL] [--dir DIR] [--service NAME]... [--json]",
  description = "The newest applied (or baselined) version of each service, and how many migrations are pending.\n" ..
    "Nothing applied prints 'none'. --json: { current = { SERVICE = { version, script, installed_on } }, pending }.",
  examples = { "orch current", "orch current --json | jq -r '.current[\"\"].version'" },
  spec = spec,
  run = function(argv)
    local opts, project = C.setup(argv, "current", spec)
    local c <close> = C.connect(opts)
    local st = migrate.status(c, project)
    local best, pending = {}, 0
    for _, it in ipairs(st.items) do
      if migrate.selected(project, it.service) then
        if it.state == "pending" or it.state == "failed" or it.state == "out_of_order" then pending = pending + 1 end
        if (it.state == "applied" or it.state == "changed" or it.state == "baseline") and it.version then
          local svc = it.service or ""
          local v = require("orch.migrate.files").parse_version(it.version)
          local b = best[svc]
          if not b or require("orch.migrate.files").compare(v, b.v) > 0 then
            best[svc] = { v = v, version = it.version, script = it.script, installed_on = it.installed_on }
          end
        end
      end
    end
    local names = {}
    for svc in pairs(best) do names[#names + 1] = svc end
    table.sort(names)
    if opts.json then
      local cur = {}
      for _, svc in ipairs(names) do
        local b = best[svc]
        cur[svc] = { version = b.version, script = b.script, installed_on = b.installed_on }
      end
      C.print_json { current = json.object(cur), pending = pending, history = st.history }
      return 0
    end
    local parts = {}
    for _, svc in ipairs(names) do
      local b = best[svc]
      parts[#parts + 1] = (svc ~= "" and (svc .. ":") or "") .. b.version .. (#names == 1 and b.script and (" (" .. b.script .. ")") or "")
    end
    print((#parts > 0 and table.concat(parts, " ") or "none") .. (pending > 0 and string.format(", %d pending", pending) or ""))
    return 0
  end,
}
