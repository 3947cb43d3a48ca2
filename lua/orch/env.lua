--- orch.env: named environments from orch.env.lua at the project root
-- (or ORCH_ENV_FILE). Each names where its database comes from (never the
-- password), its backups, protection level, health checks, webhooks and
-- placeholders:
--
--   return {
--     prod = { database = { env = "PROD_DATABASE_URL", service = "prod" }, protected = true,
--              backups = { dir = "backups/prod", keep = 14, max_age = "30d" },
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
    if type(v) == "table" then check_secrets(v, path, here)
    elseif looks_secret(v) or (type(k) == "string" and k:lower():match("password") and type(v) == "string") then
      sys.error(string.format("%s: %s holds a secret; keep secrets out of files: name an environment variable instead " ..
        "(e.g. database = { env = \"PROD_DATABASE_URL\" }) or use ~/.pgpass / a libpq service", path, here), 1)
    end
  end
end

--- All environments of the project (a table), or {} when there is no file.
function E.all(path)
  path = path or os.getenv("ORCH_ENV_FILE") or E.default_file
  if not sys.exists(path) then return {}, path end
  local chunk, err = loadfile(path, "t")
  if not chunk then sys.error("environment file does not parse: " .. err, 1) end
  local ok, envs = pcall(chunk)
  if not ok then sys.error(string.format("environment file %s raised: %s", path, tostring(envs)), 1) end
  if type(envs) ~= "table" then sys.error(path .. " must return a table of environments", 1) end
  check_secrets(envs, path, "environments")
  return envs, path
end

--- The environment called name, with defaults filled in. An unknown name is
-- an error that lists the known ones.
function E.load(name, path)
  local envs, file = E.all(path)
  name = name or os.getenv("ORCH_ENV") or "dev"
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
  e.backups = e.backups or {}
  e.backups.dir = e.backups.dir or ("backups/" .. name)
  e.database = e.database or {}
  e.placeholders = e.placeholders or {}
  e.health = e.health or {}
  e.webhooks = e.webhooks or {}
  E.check(e, file)
  return e
end

--- The backups settings for a command's --env: the environment's backups
-- table when orch.env.lua defines it (dir, keep, max_age, keep_runs), else
-- { dir = "backups/<name>" } (the name is then only a label), else
-- { dir = "backups/default" }.
function E.backups(name, path)
  if not name then return { dir = "backups/default" } end
  if E.all(path)[name] then return E.load(name, path).backups end
  return { dir = "backups/" .. name }
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

--- The database target for an environment: --db, else DATABASE_URL, else
-- the environment's variable, else its libpq service, else nil (libpq
-- defaults; for dev, the local throwaway cluster). Never logs a password.
function E.database(e, opts)
  opts = opts or {}
  local t = opts.db or os.getenv("DATABASE_URL")
  if (not t or t == "") and e.database.env then t = os.getenv(e.database.env) end
  if (not t or t == "") and e.database.service then t = "service=" .. e.database.service end
  if t == "" then t = nil end
  if t then log.secret(t:match("://[^:/@]*:([^@]+)@")) end
  return t
end

return E
