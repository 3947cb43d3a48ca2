--- orch baseline: adopt an existing database at a version.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"

local spec = C.spec({ "db", "dir", "env", "json", "yes" }, {
  { name = "version", type = "string", default = "1", help = "the version the database is already at" },
  { name = "description", type = "string", help = "description of the baseline" },
  { name = "adopt-flyway", type = "boolean", help = "instead: take over public.flyway_schema_history (copy its rows)" },
})

return {
  summary = "mark an existing database as being at a version (runs nothing)",
  usage = "usage: orch baseline --version V [--db URL] | --adopt-flyway",
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "baseline", spec)
    local c <close> = C.connect(opts)
    C.approve(env, opts, (opts.adopt_flyway and "adopt the Flyway history of " or "baseline ") .. c:info().dbname .. "?")
    if opts.adopt_flyway then
      local r = migrate.adopt(c, project, {})
      if opts.json then C.print_json(r) else print(string.format("adopted %d rows from %s", r.rows, r.from)) end
      return 0
    end
    local r = migrate.baseline(c, project, { version = opts.version, description = opts.description })
    if opts.json then C.print_json(r) else print("baselined at version " .. r.version) end
    return 0
  end,
}
