-- orch.env.lua: the example project's environments. `--env NAME` picks one
-- (default: ORCH_ENV, else the recipe's own). No secrets here: connections
-- come from environment variables or a libpq service file
-- (~/.pg_service.conf), passwords from PGPASSWORD / ~/.pgpass; orch refuses
-- this file if it holds a password.
--
-- database: --db wins, then DATABASE_URL, then database.env (a variable's
-- name), then database.service (a libpq service); dev falls back to the
-- throwaway local cluster in .orch/localpg.
--
-- backups: where this environment's backups and run logs live, and their
-- retention, applied after each backup and by `orch backups prune --env NAME`:
-- keep (newest N), max_age ("30d"), keep_runs (run logs, default 100; a kept
-- backup's run log is always kept).
--
-- health: what `orch check --env NAME` and the recipes' verify steps run.
-- The database checks run by default (connect, version, role, replication
-- lag, long transactions, lock waits, invalid indexes, NOT VALID
-- constraints, schema at the latest migration, room for a backup); db = {}
-- tunes them, sql / rows add assertions, http adds endpoints (URLs may be
-- written here, or read from a variable with url_env).
-- webhooks: Slack-compatible ("slack") or plain JSON ("json"), the URL always
-- from a variable (url_env): webhook URLs carry tokens.
--
-- release: how the recipes run a release and recover from a failed one
-- (README, "Recovering from a failed release"). atomic (default true): the
-- whole release in one transaction when every pending migration allows it,
-- the database checks inside it; false for a release too long to hold its
-- locks. discard_writes (default false): true lets the recovery restore the
-- run's backup even over rows the application wrote since it (the old
-- database is kept, and the report says what it holds).
--
-- Every setting is checked when this file is loaded: a wrong type or an
-- unknown key is an error naming the environment and the key.
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
    health = {
      sql = { { name = "SLA policies P1-P4", query = "SELECT count(*) = 4 FROM sla_policies" } },
    },
    webhooks = { { url_env = "STAGING_WEBHOOK_URL", kind = "slack" } },
  },
  prod = {
    database = { env = "PROD_DATABASE_URL", service = "prod" },
    protected = true,           -- no change without approval: a terminal, or --yes
    backups = { dir = "backups/prod", keep = 14, max_age = "30d", keep_runs = 500 },
    lock_timeout = "3s",
    retries = 5,
    release = { atomic = true, discard_writes = false },
    preflight = { max_transaction_age = "5m", max_replication_lag = "10s" },
    health = {
      db = { max_transaction_age = "5m", max_lock_wait = "30s", max_replication_lag = "10s", expect_role = "primary" },
      sql = { { name = "SLA policies P1-P4", query = "SELECT count(*) = 4 FROM sla_policies" } },
      rows = { { table = "users", min = 1 } },
      -- the API's health endpoint (application/health+json understood); retried with backoff within the deadline
      http = { { name = "api", url_env = "PROD_HEALTH_URL", expect_status = 200, max_latency = "1s", retries = 3, deadline = "30s" } },
    },
    webhooks = { { url_env = "PROD_WEBHOOK_URL", kind = "slack" },
                 { url_env = "PROD_EVENTS_URL", kind = "json", token_env = "PROD_EVENTS_TOKEN", events = { "run_failed", "run_restored", "run_needs_human" } } },
  },
}
