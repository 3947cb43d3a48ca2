--- orch: the facade. `local orch = require "orch"` gives every part of the
-- library on first use (orch.db, orch.migrate, orch.backup, ...), so recipes
-- need one require.
local orch = { version = package.orch_version }

return setmetatable(orch, {
  __index = function(t, k)
    local ok, mod = pcall(require, "orch." .. k)
    if not ok then
      if tostring(mod):find("module 'orch." .. k .. "' not found", 1, true) then
        error("orch has no part named '" .. tostring(k) .. "'", 2)
      end
      error(mod, 0)
    end
    rawset(t, k, mod)
    return mod
  end,
})
