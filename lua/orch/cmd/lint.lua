--- orch lint: risky statements in migrations, before they reach a database.
local args = require "orch.args"
local migrate = require "orch.migrate"
local lint = require "orch.lint"
local json = require "orch.json"

local spec = args.spec({ "dir" }, {
  { name = "rules", type = "string", metavar = "FILE", path = true, complete = "file", help = "extra rules (default: orch.lint.lua in the project root, if present)" },
  { name = "strict", type = "boolean", help = "fail on warnings too, not only errors" },
  { name = "service", type = "list", metavar = "NAME", help = "only this service's migrations (repeatable)" },
  { name = "list", type = "boolean", help = "list the rules (built-in and orch.lint.lua's): id, name, severity, what to do instead" },
  { name = "pg-version", type = "string", metavar = "N", help = "the target server's major version (default: orch.lint.lua's pg_version, else 15): what is safe on 11+, 12+, 14+" },
})

return {
  summary = "find risky statements (drops, renames, locking DDL, unbatched updates) with fix hints",
  usage = "usage: orch lint [--dir DIR] [--service NAME]... [--json] [--strict] [--pg-version N] [FILE...]",
  description = "Suppress a finding with a comment inside the statement: -- orch:lint-ignore OR008; " ..
    "a whole file's with a comment line -- orch:lint-disable OR030, OR031; a project's in orch.lint.lua " ..
    "(severity = { OR030 = \"off\" }, pg_version = 12, team rules).",
  operands = { max = math.huge, name = "FILE...", complete = "file" },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "lint")
    local project = require "orch.project"
    if opts.list then
      lint.load_rules(opts.rules or "orch.lint.lua")
      for _, r in ipairs(lint.rules) do
        local lvl = lint.config.severity[r.id] or (r.name and lint.config.severity[r.name]) or r.severity
        print(string.format("%-6s %-30s %-8s %s", r.id, r.name or "", lvl, r.hint or ""))
      end
      return 0
    end
    if #rest == 0 and not opts.dir then project.need("orch lint", "name the files (orch lint FILE...) or pass --dir DIR") end
    for i, p in ipairs(rest) do rest[i] = project.from_cwd(p) end
    lint.load_rules(opts.rules or "orch.lint.lua")
    local pgv = opts.pg_version
    if pgv then
      local v = math.tointeger(tonumber(pgv))
      if not v or v < 9 or v > 99 then require("orch.sys").error("bad --pg-version '" .. tostring(pgv) .. "': expected a major version such as 12", 2) end
      lint.config.pg_version = v
    end
    local findings
    if #rest > 0 then
      findings = {}
      for _, path in ipairs(rest) do
        local f = io.open(path, "rb")
        if not f then require("orch.sys").error("cannot read " .. path, 1) end
        local text = f:read("a"); f:close()
        for _, x in ipairs(lint.check_file(text, path)) do findings[#findings + 1] = x end
      end
    else
      local project = migrate.load { dir = opts.dir or "migrations" }
      migrate.select_services(project, opts.service)
      local entries
      if project.services then
        entries = {}
        for _, list in ipairs { project.versioned, project.repeatable } do
          for _, e in ipairs(list) do if migrate.selected(project, e.service) then entries[#entries + 1] = e end end
        end
      end
      findings = lint.run(project, entries, { release = false })
    end
    local errors, warnings = 0, 0
    for _, f in ipairs(findings) do
      if f.severity == "error" then errors = errors + 1 elseif f.severity == "warning" then warnings = warnings + 1 end
    end
    if opts.json then
      io.stdout:write(json.encode({ findings = findings, errors = errors, warnings = warnings }, { indent = "  " }), "\n")
    elseif #findings == 0 then
      print("no findings")
    else
      print(lint.format(findings))
      print(string.format("\n%d error%s, %d warning%s", errors, errors == 1 and "" or "s", warnings, warnings == 1 and "" or "s"))
    end
    if errors > 0 or (opts.strict and warnings > 0) then return 1 end
    return 0
  end,
}
