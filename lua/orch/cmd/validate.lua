--- orch validate: are the files and the history consistent?
local C = require "orch.migrate.cli"
local migrate = require "orch.migrate"

local spec = C.spec({ "db", "dir", "env", "fleet_target", "json" }, {
  { name = "verify", type = "boolean", help = "also run every applied migration's verify script (V3__x.verify.sql or a Lua verify function), changing nothing" },
})

return {
  summary = "check that applied migrations still match their files (checksums, missing files, failures)",
  usage = "usage: orch validate [--db URL] [--dir DIR] [--service NAME]... [--verify] [--json]",
  spec = spec,
  run = function(argv)
    local opts, project = C.setup(argv, "validate", spec)
    local c <close> = C.connect(opts)
    local problems = {}
    for _, p in ipairs(migrate.validate(c, project)) do
      if migrate.selected(project, p.service) then problems[#problems + 1] = p end
    end
    if opts.verify then
      for _, p in ipairs(migrate.verify_applied(c, project)) do problems[#problems + 1] = p end
    end
    if opts.json then
      C.print_json { valid = #problems == 0, problems = problems }
    elseif #problems == 0 then
      print("valid: every applied migration matches its file")
    else
      io.stderr:write("validation failed:\n")
      for _, p in ipairs(problems) do io.stderr:write("  - ", p.message, "\n") end
    end
    return #problems == 0 and 0 or 1
  end,
}
