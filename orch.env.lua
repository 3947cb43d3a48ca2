-- orch.env.lua: the example project's environments. `--env NAME` picks one
-- (default: ORCH_ENV, else the recipe's own). No secrets here: connections
-- come from environment variables or a libpq service file
-- (~/.pg_service.conf), passwords from PGPASSWORD / ~/.pgpass; orch refuses
-- this file if it holds a password.
--
-- database: --db wins, then DATABASE_URL, then database.env (a variable's
-- name), then database.service (a libpq service); dev falls back to the
-- throwaway local cluster in .orch/localpg.
return {
  dev = {
    database = { local_cluster = true, dbname = "orch_dev" },
    backups = { dir = "backups/dev", keep = 3 },
  },
  staging = {
    database = { env = "STAGING_DATABASE_URL", service = "staging" },
    backups = { dir = "backups/staging", keep = 7 },
    lock_timeout = "5s",
    retries = 5,
    webhooks = { { url_env = "STAGING_WEBHOOK_URL", kind = "slack" } },
  },
  prod = {
    database = { env = "PROD_DATABASE_URL", service = "prod" },
    protected = true,           -- no change without approval: a terminal, or --yes
    backups = { dir = "backups/prod", keep = 14, max_age = "30d" },
    lock_timeout = "3s",
    retries = 5,
    -- health = { http = { { url_env = "PROD_HEALTH_URL", expect_status = 200 } } },
    webhooks = { { url_env = "PROD_WEBHOOK_URL", kind = "slack" } },
  },
}
