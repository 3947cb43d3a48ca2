-- recipes/prod.lua -- production: preflight, plan and lint, approval, a verified
-- backup, migrate with lock timeouts and retries, verify; on failure the
-- recovery ladder (orch.recipe's R.step.recover), then verify the database
-- again, and notify.
--   orch recipes/prod.lua [--env prod] [--yes] [--dry-run]
--
-- The release runs in one transaction when every pending migration allows
-- it, with the environment's database checks inside it before COMMIT: a
-- failing migration or check then changes nothing (exit 1, "rolled back").
-- After a commit (a non-transactional migration, or the HTTP checks of
-- verify failing), the ladder undoes this run's migrations with their U
-- files / Lua down, newest first (exit 3, the application's writes stay);
-- when that is not possible it restores the run's backup only if nothing
-- was written since it (exit 3), else it stops for a human (exit 4) with
-- the tables and rows that a restore would lose and the next steps.
-- orch.env.lua decides: release = { atomic = false } (one transaction per
-- migration), release = { discard_writes = true } (restore even over writes).
local R = require "orch.recipe"

local opts, env = R.setup({ ... }, "prod", nil,
  "production migration: backup, migrate (one transaction when possible), verify; on failure roll back, undo, or restore only when no write is lost")

return R.run {
  name = "prod", opts = opts, env = env, uses_migrations = true,
  steps = {
    R.step.preflight {},
    R.step.plan {},
    R.step.approve {},
    R.step.backup { verify = true },
    R.step.migrate {},
    R.step.verify {},
  },
  on_failure = {
    R.step.recover { rungs = { "rolled back", "undo", "restore" } },
    -- the database checks and assertions; the endpoints may need a deploy rollback first
    R.step.verify { name = "verify the recovered database", only = "db" },
  },
  always = { R.step.notify() },
}
