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
  return e
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

--- Webhook targets with their URLs read from the environment variables named.
function E.webhooks(e)
  local out = {}
  for _, w in ipairs(e.webhooks or {}) do
    local url = w.url_env and os.getenv(w.url_env) or nil
    if url and url ~= "" then
      log.secret(url)
      out[#out + 1] = { url = url, kind = w.kind or "json", name = w.url_env }
    end
  end
  return out
end

return E
