--- orch clean: drop everything (throwaway databases only).
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"
local sys = require "orch.sys"

local spec = C.spec({ "db", "dir", "env", "json", "yes" })

return {
  summary = "drop every object in the database (refused unless the environment allows it)",
  usage = "usage: ORCH_ALLOW_CLEAN=1 orch clean --yes",
  spec = spec,
  run = function(argv)
    local opts, project = C.setup(argv, "clean", spec)
    local allow = os.getenv("ORCH_ALLOW_CLEAN") == "1"
    local ok, envmod = pcall(require, "orch.env")
    if not allow and ok and envmod.load and opts.env then
      local e = envmod.load(opts.env)
      allow = e and e.allow_clean == true
    end
    local c <close> = C.connect(opts)
    if allow and not C.confirm("drop every object in " .. c:info().dbname .. "?", opts) then
      sys.error("clean needs confirmation: answer y on a terminal, or pass --yes", 1)
    end
    local r = migrate.clean(c, project, { allow = allow })
    if opts.json then C.print_json(r) else print("dropped schemas: " .. table.concat(r.schemas, ", ")) end
    return 0
  end,
}
