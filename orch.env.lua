-- orch.env.lua: the example project's environments. `--env NAME` picks one
-- (default: ORCH_ENV, else the recipe's own, else dev). No secrets here:
-- connections come from environment variables or a libpq service file
-- (~/.pg_service.conf), passwords from PGPASSWORD / ~/.pgpass.
return {
  dev = {
    description = "your machine: DATABASE_URL when set, else a throwaway local cluster",
    db_env = "DATABASE_URL",
    localpg = { dir = ".orch/localpg", dbname = "orch_dev" },
    recreate = true,            -- dev.lua drops and recreates the database each run
    allow_clean = true,
    backups = { dir = "backups/dev", keep = 3 },
  },
  staging = {
    description = "staging: STAGING_DATABASE_URL, else the libpq service 'staging'",
    db_env = "STAGING_DATABASE_URL",
    service = "staging",
    backups = { dir = "backups/staging", keep = 7 },
    lock_timeout = "5s",
    retries = 5,
    health = {},                -- e.g. { name = "api", http = "https://staging.example.com/healthz" }
    webhooks = { { url_env = "STAGING_WEBHOOK_URL" } },
  },
  prod = {
    description = "production: PROD_DATABASE_URL, else the libpq service 'prod'",
    db_env = "PROD_DATABASE_URL",
    service = "prod",
    protected = true,           -- no change without approval (a terminal, or --yes)
    backups = { dir = "backups/prod", keep = 14, max_age = "30d" },
    lock_timeout = "3s",
    retries = 5,
    health = {},                -- e.g. { name = "api", http = "https://api.example.com/healthz", expect = 200 }
    webhooks = { { url_env = "PROD_WEBHOOK_URL" } },
  },
}
