--- orch clean: drop everything (throwaway databases only).
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local sys = require "orch.sys"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json", "yes" })

return {
  summary = "drop every object in the database (refused unless the environment allows it)",
  usage = "usage: ORCH_ALLOW_CLEAN=1 orch clean --yes",
  description = "Allowed when the environment says allow_clean = true, or ORCH_ALLOW_CLEAN=1 is set for a\n" ..
    "throwaway database. A protected environment (protected = true) is never cleaned: neither\n" ..
    "ORCH_ALLOW_CLEAN nor allow_clean overrides that.",
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "clean", spec)
    if env.protected then
      sys.error(string.format("environment %s is protected: orch clean is refused (ORCH_ALLOW_CLEAN and allow_clean never " ..
        "override protected = true); nothing was dropped", env.name), 1)
    end
    local allow = os.getenv("ORCH_ALLOW_CLEAN") == "1" or env.allow_clean == true
    local c <close> = C.connect(opts)
    if allow and not C.confirm("drop every object in " .. c:info().dbname .. "?", opts) then
      sys.error("clean needs confirmation: answer y on a terminal, or pass --yes", 1)
    end
    local r = migrate.clean(c, project, { allow = allow })
    if opts.json then C.print_json(r) else print("dropped schemas: " .. table.concat(r.schemas, ", ")) end
    return 0
  end,
}
