--- orch new: create the next correctly named migration file.
local args = require "orch.args"
local migrate = require "orch.migrate"

local spec = args.spec({ "dir" }, {
  { name = "service", type = "string", help = "create it in migrations/SERVICE/" },
  { name = "lua", type = "boolean", help = "a Lua data migration (up/down functions) instead of SQL" },
  { name = "folder", type = "string", metavar = "schema|data|seeds", help = "in a service with folders: which one (default schema; the undo goes in rollback/)" },
})

return {
  summary = "create the next migration file (and its undo): orch new add_ticket_priority",
  usage = "usage: orch new NAME... [--service S] [--folder schema|data|seeds] [--lua] [--dir DIR] [--json]",
  description = "The words of NAME are joined with underscores: orch new add ticket priority makes\n" ..
    "V<next>__add_ticket_priority.sql and its undo U<next>__add_ticket_priority.sql; in the brief's layouts\n" ..
    "the next name of that layout (SERVICE/schema/20240101_001_x.sql and its rollback/ twin, or 001_x.sql).",
  operands = { max = math.huge, name = "NAME...", min = 1 },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "new")
    if not rest[1] then args.usage_error("new", "missing NAME, e.g. orch new add_ticket_priority") end
    if not opts.dir then require("orch.project").need("orch new", "pass --dir DIR") end
    local created = migrate.new(opts.dir or "migrations", table.concat(rest, "_"), { service = opts.service, lua = opts.lua, folder = opts.folder })
    -- named so that they can be found from where orch was run (absolute when that is not the project root)
    for i, p in ipairs(created) do created[i] = require("orch.project").path(p) end
    if opts.json then
      io.stdout:write(require("orch.json").encode({ created = created }, { indent = "  " }), "\n")
    else
      for _, p in ipairs(created) do print("created " .. p) end
    end
    return 0
  end,
}
