--- orch.env: named environments from orch.env.lua at the project root
-- (or ORCH_ENV_FILE). Each names where its database comes from (never the
-- password), its backups, protection level, health checks, webhooks and
-- placeholders:
--
--   return {
--     prod = { database = { env = "PROD_DATABASE_URL", service = "prod" }, protected = true,
--              backups = { dir = "backups/prod", keep = 14, max_age = "30d" },   -- s3://...: also cainfo = "ca.pem"
--              health = { http = { { url_env = "PROD_HEALTH_URL", expect_status = 200 } } },
--              webhooks = { { url_env = "PROD_SLACK_WEBHOOK", kind = "slack" } },
--              placeholders = { app_user = "ticket_app" } },
--   }
local sys = require "orch.sys"
local log = require "orch.log"

local E = {}

E.default_file = "orch.env.lua"

local function looks_secret(v)
  return type(v) == "string" and (v:match("://[^/@:]+:[^/@]+@") or v:lower():match("password%s*=") or v:match("^xox[bp]%-"))
end

local function check_secrets(t, path, where)
  for k, v in pairs(t) do
    local here = where .. "." .. tostring(k)
    local lk = type(k) == "string" and k:lower() or ""
    -- object storage settings: only from the standard variables, never from a file
    local in_backups = where:match("%.backups$") ~= nil
    if lk == "aws_access_key_id" or lk == "aws_secret_access_key" or lk == "aws_session_token"
      or (in_backups and (lk:match("^aws_") or lk:match("access_key") or lk:match("secret") or lk:match("session_token")
        or lk == "endpoint" or lk == "endpoint_url" or lk == "region" or lk == "credentials")) then
      sys.error(string.format("%s: %s is not read from orch.env.lua: the endpoint, region and credentials of s3:// backups come only " ..
        "from the environment variables AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and " ..
        "AWS_SESSION_TOKEN; remove it from the file and set those instead", path, here), 1)
    end
    if type(v) == "table" then check_secrets(v, path, here)
    elseif looks_secret(v) or (type(k) == "string" and k:lower():match("password") and type(v) == "string") then
      sys.error(string.format("%s: %s holds a secret; keep secrets out of files: name an environment variable instead " ..
        "(e.g. database = { env = \"PROD_DATABASE_URL\" }) or use ~/.pgpass / a libpq service", path, here), 1)
    end
  end
end

-- orch.env.lua runs in a sandbox: its globals are the standard ones, except
-- that os.exit (also through require "os") raises instead of ending orch. A
-- file that calls os.exit(0) would otherwise end `orch check` with "passed"
-- before any check ran; here the call is remembered and refused even when
-- the file catches the error itself (pcall(os.exit, 0)).
local function sandbox(path)
  local exited
  local function no_exit(code)
    exited = exited or tostring(code == nil and "" or code)
    error(string.format("%s called os.exit(%s): an environment file may not end orch", path, exited), 2)
  end
  local safe_os = setmetatable({ exit = no_exit }, { __index = os })
  local env = setmetatable({ os = safe_os, require = function(name)
    if name == "os" then return safe_os end
    return require(name)
  end }, { __index = _G })
  return env, function() return exited end
end

--- All environments of the project (a table), or {} when there is no file.
function E.all(path)
  path = path or require("orch.project").env_file()
  if not sys.exists(path) then return {}, path end
  local genv, exited = sandbox(path)
  local chunk, err = loadfile(path, "t", genv)
  if not chunk then sys.error("environment file does not parse: " .. err, 1) end
  local ok, envs = pcall(chunk)
  if exited() then
    sys.error(string.format("environment file %s called os.exit(%s) while loading: refused (an environment file returns a table; it cannot end orch)",
      path, exited()), 1)
  end
  if not ok then sys.error(string.format("environment file %s raised: %s", path, tostring(envs)), 1) end
  if type(envs) ~= "table" then sys.error(path .. " must return a table of environments", 1) end
  -- the one key that is not an environment: how the project's migration files are laid out (E.migrations)
  E._migrations = envs.migrations
  envs.migrations = nil
  for k, v in pairs(envs) do
    if type(k) ~= "string" then sys.error(string.format("%s: the environments must be named by strings (found the key %s)", path, tostring(k)), 1) end
    if type(v) ~= "table" then
      sys.error(string.format("%s: environment %s is a %s; it must be a table { database = {...}, ... }", path, k, type(v)), 1)
    end
  end
  check_secrets(envs, path, "environments")
  return envs, path
end

--- The project's migration settings: the top-level key migrations of
-- orch.env.lua (it is not an environment), checked, with defaults.
--   migrations = { layout = "timestamp" | "sequential", seeds = { "dev", "test" } }
-- layout says how to read names N_M_description.sql whose N is shorter
-- than a date (001_002_x.sql: "timestamp" reads version 1.2, "sequential"
-- version 1); seeds names the environments whose seeds/ folders are
-- applied (default dev and test).
function E.migrations(path)
  path = path or require("orch.project").env_file()
  E._migrations = nil
  E.all(path)
  local m = E._migrations
  if m == nil then return { seeds = { "dev", "test" } } end
  if type(m) ~= "table" then
    sys.error(string.format("%s: migrations is a %s; it must be a table such as migrations = { layout = \"timestamp\" }", path, type(m)), 1)
  end
  for k, v in pairs(m) do
    if k == "layout" then
      if v ~= "timestamp" and v ~= "sequential" then
        sys.error(string.format("%s: migrations.layout is %s; it must be \"timestamp\" (20240101_001_x.sql is version 20240101.1) " ..
          "or \"sequential\" (001_x.sql is version 1)", path, tostring(v)), 1)
      end
    elseif k == "seeds" then
      if type(v) == "string" then m.seeds = { v }
      elseif type(v) ~= "table" then
        sys.error(string.format("%s: migrations.seeds must list environment names, e.g. seeds = { \"dev\", \"test\" }", path), 1)
      end
    else
      sys.error(string.format("%s: migrations.%s is not a setting orch knows (known: layout, seeds)", path, tostring(k)), 1)
    end
  end
  m.seeds = m.seeds or { "dev", "test" }
  return m
end

--- The environment called name, with defaults filled in. An unknown name is
-- an error (exit 2) that lists the known ones.
function E.load(name, path)
  local envs, file = E.all(path)
  name = name or os.getenv("ORCH_ENV") or "dev"
  if name == "" then sys.error("the environment name is empty: pass --env NAME or set ORCH_ENV to one of the names in " .. file, 2) end
  local e = envs[name]
  if not e and name == "dev" and not sys.exists(file) then
    -- a project without orch.env.lua still has a dev environment: the README's first command works anywhere
    e = { database = { local_cluster = true, dbname = "orch_dev" } }
  end
  if not e then
    local known = {}
    for k in pairs(envs) do known[#known + 1] = k end
    table.sort(known)
    sys.error(string.format("no environment named '%s' in %s%s", name, file,
      #known > 0 and (" (known: " .. table.concat(known, ", ") .. ")") or " (the file does not exist)"), 2)
  end
  e.name = name
  E.check_types(e, file)
  e.backups = e.backups or {}
  -- relative to the project root; named absolutely when orch was started elsewhere
  e.backups.dir = require("orch.project").path(e.backups.dir or ("backups/" .. name))
  e.database = e.database or {}
  e.placeholders = e.placeholders or {}
  e.health = e.health or {}
  e.webhooks = e.webhooks or {}
  e.release = e.release or {}
  E.check(e, file)
  E.fleet_child(e)
  if e.backups.cainfo then
    -- the CA bundle that verifies the S3 endpoint of this environment's backups (read when they are)
    require("orch.storage.s3").set_cainfo(e.backups.dir, require("orch.project").path(e.backups.cainfo),
      string.format("%s: environment %s: backups.cainfo", file, name))
  end
  return e
end

--- E.load narrowed to one target of the environment's fleet when target
-- (a command's --fleet-target) is given; see E.select_target.
function E.load_target(name, path, target)
  local e = E.load(name, path)
  if not e.target and target and target ~= "" then E.select_target(e, target) end
  return e
end

--- Narrow environment e to one target of its fleet (--fleet-target NAME),
-- as orch fleet runs it: the target's database, its backup
-- namespace (backups.dir/NAME: backups, run logs, retention) and its
-- variables as placeholders. A name the fleet does not have, or an
-- environment without targets, is a usage error (exit 2) naming the ones
-- it has. Resolving a query-based fleet connects to its directory database.
function E.select_target(e, name)
  local args = require "orch.args"
  if e.targets == nil then
    args.usage_error(nil, string.format("--fleet-target %s: environment %s has no targets (it is not a fleet); drop --fleet-target, or add targets = { ... } to it in %s",
      name, e.name, os.getenv("ORCH_ENV_FILE") or "orch.env.lua"))
  end
  local list = require("orch.fleet.targets").load(e)
  local names = {}
  for _, t in ipairs(list) do
    if t.name == name then
      e.target = { name = t.name, vars = t.vars }
      e.database = { conn = t.conn }
      e.backups.dir = require("orch.fleet").backups_dir(e, t)
      for k, v in pairs(t.vars or {}) do e.placeholders[k] = v end
      return e
    end
    if #names < 8 then names[#names + 1] = t.name end
  end
  args.usage_error(nil, string.format("--fleet-target %s: environment %s has no target of that name (it has %d: %s%s)", name, e.name, #list,
    table.concat(names, ", "), #list > #names and ", ..." or ""))
end

--- In a run that orch fleet started for one of its targets (the variables
-- below are set by orch.fleet, for this environment only), the environment
-- is the target's: its database, its own backup namespace (backups.dir/NAME,
-- so backups, run logs and retention are per target), its variables (as
-- e.target.vars and as placeholders), the run id the fleet gave it, and
-- no webhooks unless the environment sets fleet.notify_targets.
function E.fleet_child(e)
  local raw = os.getenv("ORCH_FLEET_TARGET")
  if not raw or raw == "" or os.getenv("ORCH_FLEET_ENV") ~= e.name then return end
  local ok, t = pcall(require("orch.json").decode, raw)
  if not ok or type(t) ~= "table" or type(t.name) ~= "string" then
    sys.error("ORCH_FLEET_TARGET is not the JSON orch fleet writes: " .. tostring(t), 1)
  end
  e.target = t
  e.database = { env = "ORCH_FLEET_DATABASE" }
  e.backups.dir = assert(os.getenv("ORCH_FLEET_BACKUPS_DIR"), "ORCH_FLEET_BACKUPS_DIR is not set")
  for k, v in pairs(t.vars or {}) do e.placeholders[k] = v end
  if not (e.fleet and e.fleet.notify_targets) then e.webhooks = {} end
end

--- The environment a built-in command works in: --env NAME, else ORCH_ENV
-- (an unknown name is an error, exit 2), else the project's dev
-- environment when orch.env.lua has one (or there is no file), else a plain
-- unprotected environment named "default" whose database is --db /
-- DATABASE_URL / libpq's defaults and whose backups go to backups/default.
-- An environment nobody named is marked implicit: its env directives and
-- placeholders stay the command line's, as before environments existed.
function E.for_command(opts, path)
  local name = opts and opts.env or os.getenv("ORCH_ENV")
  if name == "" then name = nil end
  if name then return E.load_target(name, path, opts and opts.fleet_target) end
  local envs, file = E.all(path)
  if envs.dev or not sys.exists(file) then
    local e = E.load_target("dev", path, opts and opts.fleet_target)
    e.implicit = true
    return e
  end
  return { name = "default", implicit = true, backups = { dir = require("orch.project").path("backups/default") }, database = {}, placeholders = {},
           health = {}, webhooks = {}, release = {} }
end

--- The backups settings for a command's --env: the environment's backups
-- table (dir, keep, max_age, keep_runs); a name orch.env.lua does not have
-- is an error (exit 2). Without orch.env.lua the name is only a label:
-- { dir = "backups/<name>" }; without a name { dir = "backups/default" }.
function E.backups(name, path, target)
  local P = require "orch.project"
  if not name then return { dir = P.path("backups/default") } end
  local _, file = E.all(path)
  if sys.exists(file) then return E.load_target(name, path, target).backups end
  return { dir = P.path("backups/" .. name) }
end

-- What each setting of an environment must be: a type, or a table of its
-- own keys. Anything else is refused by name, so a typo ("protect = true")
-- is an error, not a silently unprotected production.
local SHAPE = {
  name = "string", protected = "boolean", allow_clean = "boolean", allow_non_empty = "boolean", lock_timeout = "duration", retries = "count",
  schema_file = "string",
  database = { env = "string", service = "string", local_cluster = "boolean", dbname = "string", dir = "string",
               create = "boolean", wait = "duration" },
  backups = { dir = "string", keep = "any", keep_runs = "any", max_age = "any", cainfo = "string" },
  preflight = { max_transaction_age = "duration", max_replication_lag = "duration", max_lock_wait = "duration", expect_role = "string" },
  release = { atomic = "boolean", discard_writes = "boolean" },
  health = "table", webhooks = "table", placeholders = "table",
  -- orch fleet: the databases (orch.fleet.targets checks the entries) and the rollout's defaults
  targets = "table",
  fleet = { parallel = "count", canary = "count", max_failures = "count", notify_targets = "boolean", timeout = "duration" },
}

local WANT_TEXT = { string = "a string", boolean = "true or false", table = "a table", duration = "a duration such as \"3s\" (or seconds)",
  count = "a whole number of 0 or more" }

local function shape_error(where, key, want, v)
  sys.error(string.format("%s: %s is %s (a %s); it must be %s", where, key,
    type(v) == "string" and ("'" .. v .. "'") or tostring(v), type(v), WANT_TEXT[want] or want), 1)
end

local function check_value(where, key, want, v)
  if v == nil or want == "any" then return end
  if want == "duration" then
    local ok = (type(v) == "number" and v >= 0) or (type(v) == "string" and pcall(require("orch.args").seconds, v))
    if not ok then shape_error(where, key, want, v) end
  elseif want == "count" then
    if math.type(v) ~= "integer" or v < 0 then shape_error(where, key, want, v) end
  elseif type(want) == "table" then
    if type(v) ~= "table" then shape_error(where, key, "table", v) end
    local names = {}
    for k in pairs(want) do names[#names + 1] = k end
    table.sort(names)
    for k, x in pairs(v) do
      if not want[k] then
        sys.error(string.format("%s: %s.%s is not a setting orch knows (%s takes %s)", where, key, tostring(k), key, table.concat(names, ", ")), 1)
      end
      check_value(where, key .. "." .. k, want[k], x)
    end
  elseif type(v) ~= want then
    shape_error(where, key, want, v)
  end
end

--- Refuse a setting of the wrong type, or one orch does not know, naming
-- the environment and the key (load calls it before filling in defaults).
function E.check_types(e, file)
  local where = string.format("%s: environment %s", file, e.name)
  local names = {}
  for k in pairs(SHAPE) do if k ~= "name" then names[#names + 1] = k end end
  table.sort(names)
  for k, v in pairs(e) do
    if not SHAPE[k] then
      sys.error(string.format("%s: '%s' is not a setting orch knows (an environment takes %s)", where, tostring(k), table.concat(names, ", ")), 1)
    end
    check_value(where, k, SHAPE[k], v)
  end
  for k, v in pairs(type(e.placeholders) == "table" and e.placeholders or {}) do
    if type(v) ~= "string" and type(v) ~= "number" then
      sys.error(string.format("%s: placeholders.%s is a %s; a placeholder's value is a string", where, tostring(k), type(v)), 1)
    end
  end
end

--- Refuse settings that cannot work, naming the environment and the key.
function E.check(e, file)
  local where = string.format("%s: environment %s", file, e.name)
  if type(e.webhooks) ~= "table" then sys.error(where .. ": webhooks must be a list", 1) end
  for i, w in ipairs(e.webhooks) do
    if type(w) ~= "table" then sys.error(string.format("%s: webhooks[%d] must be a table { url_env = \"VAR\", kind = \"slack\" }", where, i), 1) end
    if w.url then
      -- webhook URLs carry their token: never in a file
      sys.error(string.format("%s: webhooks[%d] has a literal url; webhook URLs carry tokens and stay out of files: " ..
        "name an environment variable instead (url_env = \"%s_WEBHOOK_URL\")", where, i, e.name:upper()), 1)
    end
    if not w.url_env then sys.error(string.format("%s: webhooks[%d] needs url_env (the environment variable holding the URL)", where, i), 1) end
    if w.kind and w.kind ~= "slack" and w.kind ~= "json" then
      sys.error(string.format("%s: webhooks[%d].kind is '%s'; use \"slack\" or \"json\"", where, i, tostring(w.kind)), 1)
    end
  end
  local b = e.backups
  if type(b) ~= "table" then sys.error(where .. ": backups must be a table { dir = ..., keep = N, max_age = \"30d\" }", 1) end
  for _, k in ipairs { "keep", "keep_runs" } do
    if b[k] ~= nil and (math.type(b[k]) ~= "integer" or b[k] < 1) then
      sys.error(string.format("%s: backups.%s is %s; it must be a whole number of 1 or more", where, k, tostring(b[k])), 1)
    end
  end
  if b.cainfo ~= nil and not require("orch.storage.s3").is(b.dir) then
    sys.error(string.format("%s: backups.cainfo is the CA bundle of an S3 endpoint, but backups.dir %s is not an s3:// location: " ..
      "remove backups.cainfo, or set backups.dir = \"s3://BUCKET/PREFIX\"", where, b.dir), 1)
  end
  if b.max_age ~= nil then
    local ok = pcall(require("orch.args").seconds, b.max_age)
    if not ok then sys.error(string.format("%s: backups.max_age is '%s'; write an age such as \"30d\", \"12h\" or \"90m\"", where, tostring(b.max_age)), 1) end
  end
  local hc = e.health
  if type(hc) ~= "table" then sys.error(where .. ": health must be a table", 1) end
  for i, h in ipairs(hc.http or {}) do
    if type(h) ~= "table" or not (h.url or h.url_env) then
      sys.error(string.format("%s: health.http[%d] needs url or url_env", where, i), 1)
    end
    for k in pairs(type(h.headers) == "table" and h.headers or {}) do
      local lk = tostring(k):lower()
      if lk == "authorization" or lk:match("token") or lk:match("api%-key") or lk:match("secret") or lk == "cookie" then
        sys.error(string.format("%s: health.http[%d] has a literal %s header; credentials stay out of files: " ..
          "read it from a variable with headers_env = { [\"%s\"] = \"VAR_NAME\" }", where, i, k, k), 1)
      end
    end
  end
  for i, q in ipairs(hc.sql or {}) do
    if type(q) ~= "table" or type(q.query) ~= "string" then
      sys.error(string.format("%s: health.sql[%d] needs query = \"SELECT ...\"", where, i), 1)
    end
  end
end

--- The database target for an environment: --db, else the environment's
-- own variable (database.env), else its libpq service, else DATABASE_URL,
-- else nil (libpq defaults; for dev, the local throwaway cluster). An
-- environment that names its database wins over DATABASE_URL: a shell's
-- DATABASE_URL (often dev's) must never redirect `--env prod`; and when its
-- variable is not set and it has no service, that is an error rather than
-- a fall back to whatever DATABASE_URL or PG* point at. Never logs a password.
function E.database(e, opts)
  opts = opts or {}
  local t = opts.db
  local d = e.database or {}
  if (not t or t == "") and d.env then
    t = os.getenv(d.env)
    if (not t or t == "") and not d.service then
      sys.error(string.format("environment %s reads its database from %s, which is not set: set it, or pass --db URL", e.name, d.env), 1)
    end
  end
  if (not t or t == "") and d.service then t = "service=" .. d.service end
  -- (--fleet-target: the fleet target's own connection)
  if (not t or t == "") and d.conn then t = d.conn end
  if not t or t == "" then t = os.getenv("DATABASE_URL") end
  if t == "" then t = nil end
  if t then log.secret(t:match("://[^:/@]*:([^@]+)@")) end
  return t
end

--- The database a built-in command connects to in environment e: as
-- E.database, and for a local-cluster environment (dev) that cluster when
-- it is running; nil means libpq's defaults.
function E.command_database(e, opts)
  local t = E.database(e, opts)
  if t or not (e.database or {}).local_cluster then return t end
  local pg = require("orch.localpg").open(e.database.dir or ".orch/localpg")
  if pg:running() then return pg:url(e.database.dbname or "orch_dev") end
  return nil
end

return E
