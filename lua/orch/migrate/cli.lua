--- orch.migrate.cli: what the migration commands share: options, the
-- project, the connection, and printing results (table or --json).
local args = require "orch.args"
local json = require "orch.json"
local log = require "orch.log"
local sys = require "orch.sys"
local migrate = require "orch.migrate"
local envmod = require "orch.env"

local C = {}

C.project_options = {
  { name = "placeholder", type = "list", metavar = "K=V", help = "set a ${K} placeholder (repeatable, or K=V,K2=V2)" },
  { name = "service", type = "list", metavar = "NAME", help = "only this service's migrations (repeatable; a service is a subdirectory of the migrations directory)" },
  { name = "wait", type = "duration", metavar = "DURATION", help = "wait up to this long for the server to accept connections (retries with backoff; default: the environment's database.wait, else none)" },
  { name = "create-db", type = "boolean", help = "create the database when it does not exist (also database.create = true in the environment)" },
  { name = "history-table", type = "string", metavar = "[SCHEMA.]TABLE", help = "history table (default public.orch_schema_history; flyway_schema_history to read Flyway's)" },
}

function C.spec(common, extra)
  local e = {}
  for _, o in ipairs(C.project_options) do e[#e + 1] = o end
  for _, o in ipairs(extra or {}) do e[#e + 1] = o end
  return args.spec(common, e)
end

--- Parse argv, load the environment (--env NAME, else ORCH_ENV, else dev;
-- see orch.env.for_command) and the project. Returns opts, project, rest,
-- env; opts.env_loaded is the environment too. The environment's
-- placeholders are the defaults of --placeholder.
function C.setup(argv, name, spec)
  local opts, rest = args.parse(argv, spec, name)
  -- migrations/ is the project's: outside any project there is none
  if not opts.dir then require("orch.project").need("orch " .. name, "pass --dir DIR") end
  local env = envmod.for_command(opts)
  opts.env_loaded = env
  local placeholders = {}
  if not env.implicit then
    for k, v in pairs(env.placeholders or {}) do placeholders[k] = tostring(v) end
  end
  for _, kv in ipairs(opts.placeholder or {}) do
    local k, v = kv:match("^([%w_.:-]+)=(.*)$")
    if not k then args.usage_error(name, "bad --placeholder '" .. kv .. "' (expected NAME=VALUE)") end
    placeholders[k] = v
  end
  local schema, tbl
  if opts.history_table then
    schema, tbl = opts.history_table:match("^([^.]+)%.([^.]+)$")
    if not schema then tbl = opts.history_table end
  end
  local project = migrate.load {
    dir = opts.dir or "migrations", env = not env.implicit and env.name or nil,
    placeholders = placeholders, schema = schema, table = tbl,
  }
  migrate.select_services(project, opts.service)
  return opts, project, rest, env
end

--- Connect to the command's database: --db, else the environment's (see
-- orch.env.command_database), else DATABASE_URL / libpq's defaults.
-- The same target with another database name: a URL's path, a conninfo's
-- dbname (the last one wins), a table's dbname, libpq's defaults.
local function with_dbname(target, name)
  if type(target) == "table" then
    local t = {}
    for k, v in pairs(target) do t[k] = v end
    t.dbname = name
    return t
  elseif target == nil then
    return { dbname = name }
  elseif target:match("^postgres%a*://") then
    local head, rest = target:match("^(postgres%a*://[^/?]*)(.*)$")
    return head .. "/" .. name .. (rest:match("%?.*$") or "")
  end
  return target .. " dbname=" .. name
end

-- Errors of a server that is not there yet (refused, starting up, restarting) rather than of a wrong setting.
local function transient(err)
  local m = tostring(type(err) == "table" and err.message or err)
  return m:match("Connection refused") or m:match("could not connect") or m:match("starting up")
    or m:match("shutting down") or m:match("No such file or directory") or m:match("timeout expired")
    or m:match("in recovery mode") or m:match("not yet accepting")
end

--- Connect to the command's database: --db, else the environment's (see
-- orch.env.command_database), else DATABASE_URL / libpq's defaults.
-- --wait DURATION (or database.wait) retries a server that is not up yet,
-- with backoff, until then; --create-db (or database.create) creates a
-- database that does not exist, from the server's postgres database
-- (never with how = { create = false }, as orch backup connects).
function C.connect(opts, how)
  local env = opts.env_loaded or envmod.for_command(opts)
  local db = require "orch.db"
  local target = envmod.command_database(env, opts)
  local wait_text = opts.wait or (env.database and env.database.wait)
  local wait = wait_text and args.seconds(wait_text, "database.wait")
  -- how.create = false: a command that reads a database (backup) never makes one
  local create = not (how and how.create == false) and (opts.create_db or (env.database and env.database.create))
  local deadline = sys.monotonic() + (wait or 0)
  local attempt = 0
  while true do
    attempt = attempt + 1
    local ok, c = pcall(db.connect, target, { connect_timeout = opts.connect_timeout })
    if ok then return c end
    local missing = tostring(type(c) == "table" and c.message or c):match('database "(.-)" does not exist')
    -- how.probe: only waiting for the server; a missing database means it is up
    if missing and how and how.probe then return nil end
    if missing and create then
      local admin <close> = db.connect(with_dbname(target, "postgres"), { connect_timeout = opts.connect_timeout })
      admin:exec("CREATE DATABASE " .. admin:quote_ident(missing))
      log.info("created database %s (it did not exist)", missing)
      return db.connect(target, { connect_timeout = opts.connect_timeout })
    end
    if missing then
      c.hint = string.format("create it: pass --create-db (or set database.create = true in the environment), " ..
        "or choose another with --db / DATABASE_URL")
    end
    if not (wait and transient(c)) then error(c, 0) end
    local left = deadline - sys.monotonic()
    if left <= 0 then
      sys.error(string.format("the server did not accept connections within %s (%d attempts): %s; is it running, and is this its address?",
        tostring(wait_text), attempt, log.redact(tostring(c.message or c))), 1)
    end
    local pause = math.min(0.2 * 2 ^ (attempt - 1), 5, left)
    if attempt == 1 then log.info("waiting for the server (%s)", log.redact(tostring(c.message or c):gsub("\n.*", ""))) end
    sys.sleep(pause)
  end
end

--- Wait for the command's server when --wait (or the environment's
-- database.wait) says so, for commands that connect later on their own
-- (restore, verify --deep); without a wait, nothing is tried here.
function C.wait_for_server(opts)
  local env = opts.env_loaded or envmod.for_command(opts)
  if not (opts.wait or (env.database and env.database.wait)) then return end
  local c = C.connect(opts, { create = false, probe = true })
  if c then c:close() end
end

--- A change to a protected environment needs approval: --yes, or y on a
-- terminal; without a terminal it stops (exit 1) before anything changes.
-- Unprotected environments go ahead. question names what would change.
function C.approve(env, opts, question)
  if not env.protected or opts.yes then return true end
  if sys.isatty(0) then
    io.stderr:write(string.format("environment %s is protected: %s [y/N] ", env.name, question))
    io.stderr:flush()
    local a = io.read("l")
    if a and a:lower():match("^y") then return true end
    sys.error("not approved: nothing was changed", 1)
  end
  sys.error(string.format("environment %s is protected and there is no terminal to ask: pass --yes to approve (%s); nothing was changed",
    env.name, question), 1)
end

function C.print_json(v)
  io.stdout:write(json.encode(v, { indent = "  " }), "\n")
end

--- Ask yes/no on the terminal; false when there is no terminal.
function C.confirm(question, opts)
  if opts.yes then return true end
  if not sys.isatty(0) then return false end
  io.stderr:write(question, " [y/N] ")
  io.stderr:flush()
  local a = io.read("l")
  return a ~= nil and a:lower():match("^y") ~= nil
end

-- how many lines of each migration's SQL a dry run shows
C.PLAN_LINES = 60

function C.print_plan(plan, project, show_sql, undo)
  if #plan == 0 then print(undo and "nothing to undo" or "nothing to migrate: the database is up to date") return end
  print(string.format("%s %d migration%s%s:", undo and "would undo" or "would apply", #plan, #plan == 1 and "" or "s",
    project.env and (" (env " .. project.env .. ")") or ""))
  for _, e in ipairs(plan) do
    local src = undo and e.undo or e
    print(string.format("  %s  %s%s", e.version_text and ((e.service ~= "" and e.service .. ":" or "") .. "V" .. e.version_text) or "R",
      src.name or e.name, (e.directives and e.directives.transaction == false) and "  [no transaction]" or ""))
    if show_sql and src.text then
      local text = src.text
      local ok, filled = pcall(require("orch.migrate.files").placeholders, text, project.placeholders, src.path)
      if ok then text = filled end
      -- a big data migration is not poured onto the terminal: its first lines, then where the rest is
      local shown, pos = 0, 1
      while pos <= #text and shown < C.PLAN_LINES do
        local nl = text:find("\n", pos, true) or (#text + 1)
        print("      | " .. text:sub(pos, nl - 1))
        shown, pos = shown + 1, nl + 1
      end
      if pos <= #text then
        local rest = text:sub(-1) == "\n" and 0 or 1   -- the newlines from pos on, counted without copying the text
        for _ in text:gmatch("\n", pos) do rest = rest + 1 end
        print(string.format("      | … %d more line%s (%.1f MiB): %s", rest, rest == 1 and "" or "s", (#text - pos + 1) / 1048576, src.path or src.name))
      end
    end
  end
end

return C
