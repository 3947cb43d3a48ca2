--- orch baseline: adopt an existing database at a version.
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json", "yes" }, {
  { name = "version", type = "string", default = "1", help = "the version the database is already at" },
  { name = "description", type = "string", help = "description of the baseline" },
  { name = "adopt", type = "string", metavar = "TOOL", help = "instead: take over another tool's history: flyway (flyway_schema_history), knex (knex_migrations), dbmate or golang-migrate (schema_migrations), alembic (alembic_version), migration_history (brief 002's runner)" },
  { name = "adopt-flyway", type = "boolean", help = "the same as --adopt flyway" },
})

return {
  summary = "mark an existing database as being at a version (runs nothing)",
  usage = "usage: orch baseline --version V [--db URL] | orch baseline --adopt TOOL [--service NAME]",
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "baseline", spec)
    local c <close> = C.connect(opts)
    if opts.adopt_flyway then opts.adopt = "flyway" end
    if #(opts.service or {}) > 1 then require("orch.args").usage_error("baseline", "--service names one service here") end
    local service = (opts.service or {})[1]
    C.approve(env, opts, (opts.adopt and ("adopt the " .. opts.adopt .. " history of ") or "baseline ") .. c:info().dbname .. "?")
    if opts.adopt then
      local r = migrate.adopt_tool(c, project, { tool = opts.adopt, service = service })
      if opts.json then C.print_json(r) else print(string.format("adopted %d rows from %s", r.rows, r.from)) end
      return 0
    end
    local r = migrate.baseline(c, project, { version = opts.version, description = opts.description, service = service })
    if opts.json then C.print_json(r) else print("baselined at version " .. r.version) end
    return 0
  end,
}
