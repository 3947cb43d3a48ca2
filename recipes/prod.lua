-- recipes/prod.lua -- production: preflight, plan and lint, approval, a verified
-- backup, migrate with lock timeouts and retries, verify; on failure restore
-- this run's backup by swap, verify again, and notify.
--   orch recipes/prod.lua [--env prod] [--yes] [--dry-run]
local R = require "orch.recipe"

local opts, env = R.setup({ ... }, "prod", nil,
  "production migration: backup, migrate, verify, and restore automatically on failure")

return R.run {
  name = "prod", opts = opts, env = env,
  steps = {
    R.step.preflight {},
    R.step.plan {},
    R.step.approve {},
    R.step.backup { verify = true },
    R.step.migrate {},
    R.step.verify {},
  },
  on_failure = {
    R.step.restore { mode = "swap" },
    -- the database checks and assertions; the endpoints may need a deploy rollback first
    R.step.verify { name = "verify the restored database", only = "db" },
  },
  always = { R.step.notify() },
}
