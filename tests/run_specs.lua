-- Runs busted specs inside orch, so they exercise the library exactly as
-- compiled into build/orch: `orch tests/run_specs.lua tests/spec/db_spec.lua`.
package.path = "./tests/?.lua;" .. package.path
if #arg == 0 then arg[1] = "tests/spec" end
-- plain output unless a terminal asks for colour
local has_output = false
for _, a in ipairs(arg) do if a:match("^%-o") or a:match("^%-%-output") then has_output = true end end
if not has_output then table.insert(arg, 1, "--output=plainTerminal") end
require("busted.runner")({ standalone = false })
-- busted returns here only when every spec passed (it exits on failures):
-- remove the temporary directories the specs made
local helper = package.loaded.helper
if helper then
  for _, d in ipairs(helper.tmpdirs or {}) do require("orch.sys").rmtree(d) end
end
