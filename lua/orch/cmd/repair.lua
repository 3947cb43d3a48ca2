--- orch repair: clear failures, accept edited files, forget missing ones.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local sys = require "orch.sys"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json", "yes" }, {
  { name = "accept-changed", type = "boolean", help = "store the current checksum of edited applied files" },
  { name = "forget-missing", type = "boolean", help = "mark applied migrations whose file is gone as undone" },
})

return {
  summary = "remove failed history entries; accept edited files (--accept-changed), forget deleted ones (--forget-missing)",
  usage = "usage: orch repair [--accept-changed] [--forget-missing] [--yes]",
  description = "Without options it removes the history rows of failed migrations. An applied migration\n" ..
    "whose file was edited since is accepted only with --accept-changed (its new checksum is\n" ..
    "stored), one whose file is gone only with --forget-missing; repair names the ones it left.",
  examples = { "orch repair", "orch repair --accept-changed --yes", "orch repair --forget-missing" },
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "repair", spec)
    local c <close> = C.connect(opts)
    C.approve(env, opts, "repair the migration history of " .. c:info().dbname .. "?")
    if opts.accept_changed then
      local changed = {}
      for _, p in ipairs(migrate.validate(c, project)) do if p.state == "changed" then changed[#changed + 1] = p.script end end
      if #changed > 0 and not C.confirm("accept the edited files " .. table.concat(changed, ", ") .. " as applied?", opts) then
        sys.error("accepting changed checksums needs confirmation: answer y on a terminal, or pass --yes", 1)
      end
    end
    local r = migrate.repair(c, project, { accept_changed = opts.accept_changed, forget_missing = opts.forget_missing })
    if opts.json then C.print_json(r)
    else
      print(string.format("removed %d failed entr%s", r.removed_failed, r.removed_failed == 1 and "y" or "ies"))
      for _, s in ipairs(r.accepted) do print("accepted the new checksum of " .. s) end
      for _, s in ipairs(r.forgotten) do print("forgot " .. s) end
      for _, s in ipairs(r.not_accepted) do print(s .. " was edited after it was applied: NOT accepted (pass --accept-changed to accept it)") end
      for _, s in ipairs(r.not_forgotten) do print(s .. " is applied but its file is gone: NOT forgotten (pass --forget-missing)") end
    end
    return 0
  end,
}
