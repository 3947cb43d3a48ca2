--- orch.target: which database a command works on. One rule for every
-- command: --db URL, else DATABASE_URL, else libpq's own defaults (PGHOST,
-- PGPORT, PGDATABASE, PGUSER, PGSERVICE, ~/.pgpass, service files).
local db = require "orch.db"
local log = require "orch.log"

local target = {}

--- The connection target for opts (a parsed command line or recipe
-- settings): a URL/conninfo string, or nil for libpq's defaults.
function target.resolve(opts)
  opts = opts or {}
  local t = opts.db or os.getenv("DATABASE_URL")
  if t == "" then t = nil end
  if t then log.secret(t:match("://[^:/@]*:([^@]+)@")) end
  return t
end

--- A printable description of the target, without any password.
function target.describe(opts)
  local t = target.resolve(opts)
  if not t then return "libpq defaults (PG* variables / service file)" end
  return log.redact(t)
end

--- Connect to the target. Raises orch.db's connection error object.
function target.connect(opts)
  return db.connect(target.resolve(opts), { connect_timeout = opts and opts.connect_timeout })
end

return target
