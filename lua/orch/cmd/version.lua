--- orch version: print orch's version and what it is built with.
return {
  summary = "print the version of orch, Lua and libpq",
  usage = "usage: orch version",
  run = function()
    print(string.format("orch %s (%s, libpq %d)", package.orch_version, _VERSION,
      require("orch.db").lib_version()))
    return 0
  end,
}
