-- recipes/staging.lua -- staging: preflight, verified backup, migrate, verify,
-- then the rollback test (undo this run's migrations, verify, migrate again).
-- On failure the recovery ladder of prod: rolled back, undo, or restore
-- only when nothing was written since the backup; else a human (exit 4).
--   orch recipes/staging.lua [--env staging] [--yes]
local R = require "orch.recipe"

local opts, env = R.setup({ ... }, "staging", nil, "staging rehearsal: migrate, verify, and prove the rollback works")

return R.run {
  name = "staging", opts = opts, env = env, uses_migrations = true,
  steps = {
    R.step.preflight {},
    R.step.plan {},
    R.step.approve {},
    R.step.backup { verify = true },
    R.step.migrate {},
    R.step.verify {},
    R.step.undo_applied {},
    -- the schema is back where it was: the database checks, expecting the version from before the run
    -- (the environment's SQL assertions and endpoints describe the new release, so they wait)
    R.step.verify { name = "verify after undo", schema = "before", only = "database" },
    R.step.migrate {},
    R.step.verify { name = "verify after migrating again" },
  },
  on_failure = { R.step.recover {}, R.step.verify { name = "verify the recovered database", only = "db" } },
  always = { R.step.notify() },
}
