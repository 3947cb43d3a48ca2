--- orch version: print orch's version and what it is built with.
return {
  summary = "print the version of orch, Lua and libpq (--json: as an object)",
  usage = "usage: orch version [--json]",
  examples = { "orch version", "orch version --json" },
  run = function()
    return require("orch.cli").print_version()
  end,
}
