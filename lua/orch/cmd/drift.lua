--- orch drift: how the live schema differs from the snapshot orch migrate wrote.
local C = require "orch.migrate.cli"
local snapshot = require "orch.migrate.snapshot"
local log = require "orch.log"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json" }, {
  { name = "schema-file", type = "string", metavar = "PATH", help = "the snapshot to compare with (default: the environment's schema_file, else DIR/schema.sql)" },
})

return {
  summary = "compare the live schema with the snapshot orch migrate wrote (schema.sql), naming each difference",
  usage = "usage: orch drift [--db URL] [--schema-file PATH] [--json]",
  description = "Exit 0 when the database's schema is the snapshot's, 1 when it differs: each object missing\n" ..
    "from the database, added to it, or defined differently, by type, schema and name.",
  spec = spec,
  run = function(argv)
    local opts, project, _, env = C.setup(argv, "drift", spec)
    local path = opts.schema_file or (not env.implicit and env.schema_file) or (project.dir .. "/schema.sql")
    local file = snapshot.read(path)
    local c <close> = C.connect(opts)
    local diffs = snapshot.diff(file, snapshot.capture(c))
    if opts.json then
      C.print_json { drift = #diffs > 0, snapshot = path, differences = diffs }
      return #diffs > 0 and 1 or 0
    end
    if #diffs == 0 then
      print(string.format("no drift: the schema is the one in %s (%d objects)", path, #file))
      return 0
    end
    for _, d in ipairs(diffs) do
      local what = string.format("%s %s%s", d.type, d.schema ~= "-" and (d.schema .. ".") or "", d.name)
      if d.kind == "missing" then
        print(log.paint("error", "missing") .. "  " .. what .. ": in " .. path .. ", not in the database")
      elseif d.kind == "extra" then
        print(log.paint("error", "extra") .. "    " .. what .. ": in the database, not in " .. path)
      else
        local line, a, b = snapshot.first_difference(d.file, d.live)
        print(log.paint("error", "changed") .. "  " .. what .. string.format(": line %d of its definition is %q in %s, %q in the database",
          line or 0, a or "", path, b or ""))
      end
    end
    print(string.format("\n%d difference%s between the database and %s", #diffs, #diffs == 1 and "" or "s", path))
    return 1
  end,
}
