--- orch.migrate: versioned, undo and repeatable migrations.
--
--   local migrate = require "orch.migrate"
--   local project = migrate.load { dir = "migrations", env = "dev", placeholders = { app = "x" } }
--   local c <close> = require("orch.db").connect(url)
--   print(migrate.format_status(migrate.status(c, project)))
--   migrate.up(c, project, { run_id = id, lock_timeout = "5s", retries = 5 })
--   migrate.undo(c, project, { count = 1 })
--
-- Policy lives here; every function takes an orch.db connection. The
-- history table (default public.orch_schema_history) is append-only except
-- for repair: applying, failing and undoing each add a row, and a version's
-- state is what its latest row says.
local sys = require "orch.sys"
local log = require "orch.log"
local db = require "orch.db"
local files = require "orch.migrate.files"

local M = {}

M.defaults = {
  dir = "migrations",
  schema = "public",
  table = "orch_schema_history",
  lock_timeout = "5s",     -- every migration, unless its directive says otherwise
  retries = 5,             -- on lock_not_available (55P03) and deadlocks
  lock_wait = 60,          -- seconds to wait for another orch's migration lock
}

local LOCK_CLASS = 1869767528   -- 'orch' as an int4: the advisory lock's first key

local function opt(opts, k)
  if opts and opts[k] ~= nil then return opts[k] end
  return M.defaults[k]
end

local function fail(msg, code) sys.error(msg, code or 1) end

-- ================================================================ project

local function key_of(service, version_text)
  return (service ~= "" and (service .. ":") or "") .. "V" .. version_text
end

--- A strict environment for Lua migrations: standard globals, typos raise.
local function lua_env()
  return setmetatable({}, { __index = function(_, k)
    local v = _G[k]
    if v == nil then error(string.format("undefined global '%s'", tostring(k)), 2) end
    return v
  end })
end

local function load_lua_migration(e)
  local chunk, err = load(e.text, "@" .. e.path, "t", lua_env())
  if not chunk then fail(string.format("Lua migration does not parse: %s", err)) end
  local ok, t = pcall(chunk)
  if not ok then fail(string.format("Lua migration %s raised while loading: %s", e.path, tostring(t))) end
  if type(t) ~= "table" then fail(string.format("Lua migration %s must return a table { up = function(db, ctx) ... end, down = ... }", e.path)) end
  -- brief 002's names: apply (forward) and rollback (backward)
  for _, pair in ipairs { { "up", "apply" }, { "down", "rollback" } } do
    local a, b = pair[1], pair[2]
    if t[a] ~= nil and t[b] ~= nil then
      fail(string.format("Lua migration %s has both %s and %s functions: they are two names of one thing, keep one", e.path, a, b))
    end
    if t[b] ~= nil then t[a] = t[b] end
  end
  if e.kind ~= "U" and type(t.up) ~= "function" then fail(string.format("Lua migration %s has no up (or apply) function", e.path)) end
  local d = {}
  if t.transaction ~= nil then d.transaction = t.transaction and true or false end
  d.env = type(t.env) == "string" and { t.env } or t.env
  d.depends = type(t.depends) == "string" and { t.depends } or t.depends
  d.lock_timeout, d.statement_timeout = t.lock_timeout, t.statement_timeout
  e.directives = d
  e.module = t
end

--- Read the migrations of a project. opts: dir, env (the environment name
-- for env directives), placeholders (table), schema, table. Raises for
-- malformed names, duplicate versions, undos without their migration,
-- unknown dependencies and dependency cycles.
function M.load(opts)
  opts = opts or {}
  local dir = opt(opts, "dir")
  local project = {
    dir = dir, env = opts.env, placeholders = opts.placeholders or {},
    schema = opt(opts, "schema"), table = opt(opts, "table"),
    versioned = {}, repeatable = {}, by_key = {}, undo_files = {},
  }
  local settings = opts.settings or require("orch.env").migrations()
  project.settings = settings
  local undos, verifies = {}, {}
  local found, ignored = files.scan(dir, { layout = settings.layout })
  project.ignored = ignored
  for _, e in ipairs(found) do
    if e.lang == "lua" then load_lua_migration(e) end
    if e.folder == "seeds" and not (e.directives and e.directives.env) then
      -- seeds/ applies where the project loads seeds; seeds/NAME/ in environment NAME only
      e.directives = e.directives or {}
      e.directives.env = e.seed_env and { e.seed_env } or settings.seeds
    end
    if e.kind == "verify" then
      local k = key_of(e.service, e.version_text)
      if verifies[k] then fail(string.format("two verify scripts for %s: %s and %s", k, verifies[k].path, e.path)) end
      verifies[k] = e
    elseif e.kind == "V" then
      e.key = key_of(e.service, e.version_text)
      local other = project.by_key[e.key]
      if other then
        fail(string.format("two migrations with version %s%s: %s and %s: rename one of them",
          e.version_text, e.service ~= "" and (" in service '" .. e.service .. "'") or "", other.path, e.path))
      end
      project.by_key[e.key] = e
      project.versioned[#project.versioned + 1] = e
    elseif e.kind == "U" then
      local k = key_of(e.service, e.version_text)
      if undos[k] then fail(string.format("two undo files for version %s%s: %s and %s", e.version_text,
        e.service ~= "" and (" in service '" .. e.service .. "'") or "", undos[k].path, e.path)) end
      undos[k] = e
    else
      e.key = (e.service ~= "" and (e.service .. ":") or "") .. "R__" .. e.description
      project.repeatable[#project.repeatable + 1] = e
    end
  end
  for k, u in pairs(undos) do
    local v = project.by_key[k]
    if not v then
      fail(string.format("undo file %s has no versioned migration %s: add it, or remove the undo", u.path, k))
    end
    v.undo = u
  end
  for k, f in pairs(verifies) do
    local v = project.by_key[k]
    if not v then fail(string.format("verify script %s has no versioned migration %s: add it, or remove the script", f.path, k)) end
    v.verify = f
  end
  for _, v in ipairs(project.versioned) do
    if not v.verify and v.module and type(v.module.verify) == "function" then v.verify = { lua_verify = v.module.verify, path = v.path, name = v.name } end
  end
  for _, v in ipairs(project.versioned) do
    if not v.undo and v.module and v.module.down then v.undo = { lua_down = v.module.down, path = v.path, name = v.name } end
  end
  table.sort(project.repeatable, function(a, b) return a.key < b.key end)
  M.order(project)
  return project
end

--- Resolve a dependency seen from migration from to a migration key:
-- "auth:V3", "V3", "3", "20240101_001" (brief 004's Dependencies), a file
-- name ("20240101_001_auth_create_users_table.sql"), each optionally with
-- "service:" or "service/" before it. A version without a service is the
-- migration's own service's, else the one other service that has it.
local function resolve_dep(project, from, dep)
  local svc, ref = dep:match("^([%w_.-]+)[:/](.+)$")
  if not svc then ref = dep end
  ref = ref:gsub("%.sql$", ""):gsub("%.lua$", "")
  local ver = ref:match("^[Vv]?([%d._]+)$")
  if not ver then
    local ok, e = pcall(files.parse_name, ref .. ".sql", ref, project.settings and project.settings.layout)
    ver = ok and e and e.version_text
  end
  local v = ver and files.parse_version(ver)
  if not v then
    fail(string.format("%s: bad dependency '%s' (expected service:V<version>, V<version>, a version such as 20240101_001, " ..
      "or a migration's file name)", from.path, dep))
  end
  local vt = files.version_string(v)
  local k = key_of(svc or from.service, vt)
  if not project.by_key[k] and not svc then
    local found = {}
    for _, e in ipairs(project.versioned) do
      if e.version_text == vt and e.service ~= from.service then found[#found + 1] = e end
    end
    if #found == 1 then return found[1].key end
    if #found > 1 then
      local names = {}
      for i, e in ipairs(found) do names[i] = e.key end
      fail(string.format("%s depends on version %s, which services %s all have: name the service (%s)",
        from.path, vt, table.concat(names, ", "), found[1].key))
    end
  end
  if not project.by_key[k] then
    fail(string.format("%s depends on %s, which does not exist%s", from.path, svc and k or dep,
      svc and "" or " in any service"))
  end
  return k
end

--- Put the versioned migrations in execution order: within a service by
-- version; across services by dependencies (topological), ties broken by
-- version then service. A cycle is reported with its members.
function M.order(project)
  local nodes = project.versioned
  local edges, indeg = {}, {}
  for _, n in ipairs(nodes) do edges[n.key] = {}; indeg[n.key] = 0 end
  local by_service = {}
  for _, n in ipairs(nodes) do
    by_service[n.service] = by_service[n.service] or {}
    table.insert(by_service[n.service], n)
  end
  local function add(from, to)
    table.insert(edges[from], to)
    indeg[to] = indeg[to] + 1
  end
  for _, list in pairs(by_service) do
    for _, n in ipairs(list) do n.vkey = n.vkey or files.version_key(n.version) end
    table.sort(list, function(a, b) return a.vkey < b.vkey end)
    for i = 2, #list do add(list[i - 1].key, list[i].key) end
  end
  for _, n in ipairs(nodes) do
    n.deps = {}
    for _, d in ipairs(n.directives and n.directives.depends or {}) do
      local k = resolve_dep(project, n, d)
      n.deps[#n.deps + 1] = k
      add(k, n.key)
    end
  end
  local function before(a, b)
    if a.vkey ~= b.vkey then return a.vkey < b.vkey end
    return a.service < b.service
  end
  local ready, out = {}, {}
  for _, n in ipairs(nodes) do if indeg[n.key] == 0 then ready[#ready + 1] = n end end
  while #ready > 0 do
    table.sort(ready, function(a, b) return before(b, a) end)
    local n = table.remove(ready)
    out[#out + 1] = n
    for _, k in ipairs(edges[n.key]) do
      indeg[k] = indeg[k] - 1
      if indeg[k] == 0 then ready[#ready + 1] = project.by_key[k] end
    end
  end
  if #out < #nodes then
    -- find one cycle among the nodes left, to name it
    local left = {}
    for _, n in ipairs(nodes) do if indeg[n.key] > 0 then left[n.key] = true end end
    local start
    for _, n in ipairs(nodes) do if left[n.key] then start = n.key break end end
    local path, seen, k = {}, {}, start
    while not seen[k] do
      seen[k] = #path + 1
      path[#path + 1] = k
      for _, nxt in ipairs(edges[k]) do if left[nxt] then k = nxt break end end
    end
    local cycle = {}
    for i = seen[k], #path do cycle[#cycle + 1] = path[i] end
    cycle[#cycle + 1] = k
    fail("dependency cycle between migrations: " .. table.concat(cycle, " -> "))
  end
  project.versioned = out
  for i, n in ipairs(out) do n.rank = i end
end

--- Does a migration apply in this environment?
local function applies(project, e)
  local envs = e.directives and e.directives.env
  if not envs then return true end
  for _, x in ipairs(envs) do if x == project.env then return true end end
  return false
end
M.applies = applies

-- ================================================================ history

function M.history_name(conn, project)
  return conn:quote_ident(project.schema) .. "." .. conn:quote_ident(project.table)
end

local function history_exists(conn, project)
  return conn:value("SELECT to_regclass($1) IS NOT NULL", M.history_name(conn, project))
end

--- Is the history table in Flyway's own layout (flyway_schema_history:
-- no service, run_id or error columns)? An existing table says by its
-- columns; a missing one named flyway_schema_history will be made so.
-- Orch then reads and writes rows exactly as Flyway does, so Flyway and orch
-- can take turns on one database.
function M.flyway_layout(conn, project)
  if history_exists(conn, project) then
    return not conn:value([[SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'service' AND NOT attisdropped]],
      M.history_name(conn, project))
  end
  return project.table == "flyway_schema_history"
end

--- The type Flyway knows for a row orch writes: a Lua migration is one
-- of Flyway's CUSTOM kind (Flyway reads the table; it cannot run the file).
function M.flyway_type(t)
  return (t:gsub("LUA$", "CUSTOM"))
end

-- Flyway's history has no service column: a project with services cannot share it.
local function check_flyway_services(conn, project, list)
  if not M.flyway_layout(conn, project) then return false end
  for _, e in ipairs(list or project.versioned) do
    if (e.service or "") ~= "" then
      fail(string.format("%s is Flyway's history, which has no service column: the service '%s' (%s) cannot be recorded in it. " ..
        "Keep services in orch's own history (the default, public.orch_schema_history), or migrate the files of %s alone",
        M.history_name(conn, project), e.service, e.path or e.name, project.dir))
    end
  end
  return true
end

--- Create the history table if it is missing.
function M.ensure_history(conn, project)
  if history_exists(conn, project) then return end
  local name = M.history_name(conn, project)
  if not conn:value("SELECT 1 FROM pg_namespace WHERE nspname = $1", project.schema) then
    conn:exec("CREATE SCHEMA " .. conn:quote_ident(project.schema))
  end
  if project.table == "flyway_schema_history" then
    -- Flyway's own table (its column set, types, key and index), so Flyway reads it as its own
    conn:exec(string.format([[
CREATE TABLE %s (
  installed_rank integer NOT NULL,
  version varchar(50),
  description varchar(200) NOT NULL,
  type varchar(20) NOT NULL,
  script varchar(1000) NOT NULL,
  checksum integer,
  installed_by varchar(100) NOT NULL,
  installed_on timestamp NOT NULL DEFAULT now(),
  execution_time integer NOT NULL,
  success boolean NOT NULL,
  CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank)
);
CREATE INDEX flyway_schema_history_s_idx ON %s (success);]], name, name))
    return
  end
  conn:exec(string.format([[
CREATE TABLE IF NOT EXISTS %s (
  installed_rank integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  service text NOT NULL DEFAULT '',
  version text,
  description text NOT NULL,
  type text NOT NULL,
  script text NOT NULL,
  checksum integer,
  installed_by text NOT NULL DEFAULT current_user,
  installed_on timestamptz NOT NULL DEFAULT now(),
  finished_on timestamptz,
  execution_time integer NOT NULL DEFAULT 0,
  success boolean NOT NULL,
  rolled_back boolean NOT NULL DEFAULT true,
  run_id text,
  error text
);
COMMENT ON TABLE %s IS 'orch migration history: one row per apply, failure, undo or baseline';]],
    name, name))
end

--- All history rows in order, or {} when there is no table yet.
-- Reads Flyway's flyway_schema_history too (when project.table names it).
function M.history(conn, project)
  if not history_exists(conn, project) then return {} end
  local name = M.history_name(conn, project)
  local cols = {}
  for _, r in ipairs(conn:query([[SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped]], name)) do
    cols[r.attname] = true
  end
  local sel = string.format([[SELECT installed_rank, %s AS service, version, description, type, script, checksum,
      installed_by, installed_on::text AS installed_on, execution_time, success, %s AS rolled_back, %s AS run_id, %s AS error
    FROM %s ORDER BY installed_rank]],
    cols.service and "service" or "''", cols.rolled_back and "rolled_back" or "true",
    cols.run_id and "run_id" or "NULL::text", cols.error and "error" or "NULL::text", name)
  local rows = conn:query(sel)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = { rank = r.installed_rank, service = r.service, version = r.version, description = r.description,
      type = r.type, script = r.script, checksum = r.checksum, installed_by = r.installed_by,
      installed_on = r.installed_on, execution_time = r.execution_time, success = r.success,
      rolled_back = r.rolled_back, run_id = r.run_id, error = r.error }
  end
  return out
end

-- A history row; with fields.start_rank, the row record_start wrote is
-- completed instead (a non-transactional migration's start, see apply_one).
local function record(conn, project, e, fields)
  if M.flyway_layout(conn, project) then
    -- Flyway's row: no service, run id or error; installed_rank is the next one
    if fields.start_rank then
      conn:query(string.format([[UPDATE %s SET checksum = $2, installed_on = to_timestamp($3)::timestamp, execution_time = $4,
          success = $5 WHERE installed_rank = $1]], M.history_name(conn, project)),
        fields.start_rank, fields.checksum, fields.started, fields.ms or 0, fields.success)
      return
    end
    local name = M.history_name(conn, project)
    conn:query(string.format([[INSERT INTO %s (installed_rank, version, description, type, script, checksum, installed_by,
        installed_on, execution_time, success)
      SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, $3, $4, $5, current_user, to_timestamp($6)::timestamp, $7, $8 FROM %s]],
      name, name), fields.version, e.description, M.flyway_type(fields.type), e.name or e.script, fields.checksum,
      fields.started or sys.now(), fields.ms or 0, fields.success)
    return
  end
  if fields.start_rank then
    conn:query(string.format([[UPDATE %s SET checksum = $2, installed_on = to_timestamp($3), finished_on = to_timestamp($4),
        execution_time = $5, success = $6, rolled_back = $7, error = $8 WHERE installed_rank = $1]], M.history_name(conn, project)),
      fields.start_rank, fields.checksum, fields.started, fields.finished or sys.now(), fields.ms or 0, fields.success,
      fields.rolled_back ~= false, fields.error)
    return
  end
  conn:query(string.format([[INSERT INTO %s (service, version, description, type, script, checksum,
      installed_on, finished_on, execution_time, success, rolled_back, run_id, error)
    VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), to_timestamp($8), $9, $10, $11, $12, $13)]], M.history_name(conn, project)),
    e.service or "", fields.version, e.description, fields.type, e.name or e.script, fields.checksum,
    fields.started, fields.finished or sys.now(), fields.ms or 0, fields.success, fields.rolled_back ~= false,
    fields.run_id, fields.error)
end

-- ================================================================ status

local function type_of(e, undo)
  local lang = e.lang == "lua" and "LUA" or "SQL"
  return undo and ("UNDO_" .. lang) or lang
end

--- Fold the history into the effective state of every version and
-- repeatable: { [key] = { applied=bool, row=last row, failed=row } }.
local function effective(rows)
  local state, baseline = {}, {}
  for _, r in ipairs(rows) do
    if r.type == "SCHEMA" then
      -- Flyway's note that it created the schema: not a migration
    elseif r.type == "DELETE" and r.success then
      -- Flyway's repair marked a migration whose file is gone as deleted: no longer applied
      local k = r.version and key_of(r.service, files.version_string(files.parse_version(r.version) or { 0 }))
        or ((r.service ~= "" and (r.service .. ":") or "") .. "R__" .. r.description)
      if state[k] then state[k].applied, state[k].failed = false, nil end
    elseif r.type == "BASELINE" and r.success then
      baseline[r.service] = files.parse_version(r.version)
    elseif r.version then
      local k = key_of(r.service, files.version_string(files.parse_version(r.version) or { 0 }))
      local s = state[k] or { key = k }
      state[k] = s
      if r.type:match("^UNDO") then
        if r.success then s.applied, s.row, s.failed = false, r, nil end
      elseif r.success then
        s.applied, s.row, s.failed = true, r, nil
      else
        s.failed = r
      end
    else
      local k = (r.service ~= "" and (r.service .. ":") or "") .. "R__" .. r.description
      local s = state[k] or { key = k, repeatable = true }
      state[k] = s
      if r.success then s.applied, s.row, s.failed = true, r, nil else s.failed = r end
    end
  end
  return state, baseline
end

local function below_baseline(baseline, e)
  local b = baseline[e.service]
  return b and files.compare(e.version, b) <= 0
end

--- Status of every migration. Returns { items = {...}, summary = {...},
-- history = name, exists = bool }. Each item: key, service, version,
-- description, type, script, state, checksum (file), applied_checksum,
-- installed_on, execution_time, run_id, message.
-- States: applied, pending, failed, missing (applied, file gone), changed
-- (applied, file edited), out_of_order (pending below the newest applied),
-- future (applied, newer than any file), baseline, below_baseline,
-- skipped (env), outdated (repeatable whose file changed).
function M.status(conn, project)
  local rows = M.history(conn, project)
  local state, baseline = effective(rows)
  local items, summary = {}, {}
  local newest, newest_key = {}, {}   -- newest applied version per service (and its sort key)
  for _, s in pairs(state) do
    if s.applied and not s.repeatable and s.row then
      local v = files.parse_version(s.row.version)
      local svc = s.row.service
      local vk = v and files.version_key(v)
      if vk and (not newest_key[svc] or vk > newest_key[svc]) then newest[svc], newest_key[svc] = v, vk end
    end
  end
  local newest_file = {}
  for _, e in ipairs(project.versioned) do
    if not newest_file[e.service] or files.compare(e.version, newest_file[e.service]) > 0 then newest_file[e.service] = e.version end
  end
  local function add(item)
    items[#items + 1] = item
    summary[item.state] = (summary[item.state] or 0) + 1
  end
  for svc, b in pairs(baseline) do
    add { key = key_of(svc, files.version_string(b)), service = svc, version = files.version_string(b),
          description = "<< baseline >>", type = "BASELINE", state = "baseline" }
  end
  for _, e in ipairs(project.versioned) do
    local s = state[e.key]
    local item = { key = e.key, service = e.service, version = e.version_text, description = e.description,
      type = type_of(e), script = e.name, path = e.path, checksum = e.checksum,
      has_undo = e.undo ~= nil, rank = e.rank }
    if s and s.row then
      item.applied_checksum, item.installed_on = s.row.checksum, s.row.installed_on
      item.execution_time, item.run_id = s.row.execution_time, s.row.run_id
    end
    if s and s.applied then
      if s.row.checksum ~= nil and s.row.checksum ~= e.checksum then
        item.state = "changed"
        item.message = string.format("checksum %d in history, %d on disk: the file was edited after it was applied",
          s.row.checksum, e.checksum)
      else
        item.state = "applied"
      end
    elseif s and s.failed then
      item.state = "failed"
      item.message = s.failed.error
      item.rolled_back = s.failed.rolled_back
      item.installed_on = s.failed.installed_on
    elseif below_baseline(baseline, e) then
      item.state = "below_baseline"
    elseif not applies(project, e) then
      item.state = "skipped"
      item.message = "only for " .. table.concat(e.directives.env, ", ")
    elseif newest_key[e.service] and (e.vkey or files.version_key(e.version)) < newest_key[e.service] then
      item.state = "out_of_order"
      item.message = "older than the newest applied version " .. files.version_string(newest[e.service])
    else
      item.state = "pending"
    end
    add(item)
  end
  for k, s in pairs(state) do
    if not s.repeatable and s.applied and not project.by_key[k] then
      local v = files.parse_version(s.row.version)
      local nf = newest_file[s.row.service]
      add { key = k, service = s.row.service, version = s.row.version, description = s.row.description,
            type = s.row.type, script = s.row.script, applied_checksum = s.row.checksum,
            installed_on = s.row.installed_on, run_id = s.row.run_id,
            state = (not nf or files.compare(v, nf) > 0) and "future" or "missing",
            message = "applied, but no file " .. s.row.script .. " in " .. project.dir }
    end
  end
  local seen_r = {}
  for _, e in ipairs(project.repeatable) do
    seen_r[e.key] = true
    local s = state[e.key]
    local item = { key = e.key, service = e.service, description = e.description, type = type_of(e),
      script = e.name, path = e.path, checksum = e.checksum }
    if s and s.row then item.applied_checksum, item.installed_on = s.row.checksum, s.row.installed_on end
    if not applies(project, e) then item.state = "skipped"
    elseif s and s.applied and s.row.checksum == e.checksum then item.state = "applied"
    elseif s and s.failed then item.state = "failed"; item.message = s.failed.error
    elseif s and s.applied then item.state = "outdated"; item.message = "file changed: will be re-applied"
    else item.state = "pending" end
    add(item)
  end
  for k, s in pairs(state) do
    if s.repeatable and s.applied and not seen_r[k] then
      add { key = k, service = s.row.service, description = s.row.description, type = s.row.type,
            script = s.row.script, state = "missing", installed_on = s.row.installed_on,
            message = "applied, but no file " .. s.row.script }
    end
  end
  local function before(a, b)
    local ra, rb = a.rank or (a.version and 1e9 or 2e9), b.rank or (b.version and 1e9 or 2e9)
    if a.state == "baseline" then ra = 0 end
    if b.state == "baseline" then rb = 0 end
    if ra ~= rb then return ra < rb end
    return a.key < b.key
  end
  -- built in rank order already, as a rule: sort only when it is not
  for i = 2, #items do
    if before(items[i], items[i - 1]) then table.sort(items, before) break end
  end
  return { items = items, summary = summary, history = M.history_name(conn, project),
           exists = #rows > 0 or history_exists(conn, project), rows = rows }
end

--- Problems that stop a migrate: changed checksums, missing files,
-- failures that left the database half-migrated. Returns a list of
-- { key, state, message } (empty when all is well).
function M.validate(conn, project, st)
  st = st or M.status(conn, project)
  local problems = {}
  for _, it in ipairs(st.items) do
    if it.state == "changed" then
      problems[#problems + 1] = { key = it.key, service = it.service, state = it.state, script = it.script,
        message = string.format("%s was edited after it was applied (%s); revert the edit, or accept it with 'orch repair --accept-changed'", it.script, it.message) }
    elseif it.state == "missing" then
      problems[#problems + 1] = { key = it.key, service = it.service, state = it.state, script = it.script,
        message = string.format("%s was applied but its file is gone from %s; restore the file, or forget it with 'orch repair --forget-missing'", it.script, project.dir) }
    elseif it.state == "failed" and it.rolled_back == false then
      problems[#problems + 1] = { key = it.key, service = it.service, state = it.state, script = it.script,
        message = string.format("%s failed part-way outside a transaction (%s); check the database, then 'orch repair' to clear it", it.script, it.message or "") }
    elseif it.state == "out_of_order" then
      problems[#problems + 1] = { key = it.key, service = it.service, state = it.state, script = it.script,
        message = string.format("%s is pending but older than applied migrations (%s); rename it to a newer version, or run with --out-of-order", it.script, it.message) }
    end
  end
  return problems
end

--- Run the verify script of every applied migration (each in a
-- transaction that is rolled back: it changes nothing). Returns problems
-- as M.validate does, one per failing script.
function M.verify_applied(conn, project, st)
  st = st or M.status(conn, project)
  local problems = {}
  for _, it in ipairs(st.items) do
    local e = project.by_key[it.key]
    if e and e.verify and (it.state == "applied" or it.state == "changed") and M.selected(project, e.service) then
      conn:exec("BEGIN")
      local ok, err = pcall(M.run_verify, conn, project, e, {})
      pcall(conn.exec, conn, "ROLLBACK")
      if not ok then
        problems[#problems + 1] = { key = it.key, service = it.service, state = "verify_failed", script = e.verify.name,
          message = string.format("%s: %s", e.verify.path, tostring(type(err) == "table" and (err.message or err) or err)) }
      end
    end
  end
  return problems
end

local function raise_validation(problems)
  local lines = { "validation failed:" }
  for _, p in ipairs(problems) do lines[#lines + 1] = "  - " .. p.message end
  fail(table.concat(lines, "\n"))
end

-- ================================================================ lock

--- Take the migration lock on a connection of its own (so our own
-- transactions, and concurrent index builds, never wait on it). Waits up to
-- lock_wait seconds, saying who holds it. Returns the lock connection; close
-- it (or let <close> do it) to release.
function M.lock(conn, project, opts)
  local lc = conn:clone()
  local name = M.history_name(conn, project)
  local deadline = sys.monotonic() + opt(opts, "lock_wait")
  local told = false
  while true do
    if lc:value("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, name) then return lc end
    local h = lc:query([[SELECT a.pid, a.application_name, a.usename, a.client_addr::text AS client,
        a.backend_start::text AS since, a.state
      FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND l.granted
        AND l.objid::bigint = (hashtext($2)::bigint + 4294967296) % 4294967296]], LOCK_CLASS, name)[1]
    local who = h and string.format("pid %d (%s, user %s%s, since %s)", h.pid, h.application_name ~= "" and h.application_name or "no application name",
      h.usename, h.client and (", from " .. h.client) or "", h.since) or "another session"
    if sys.monotonic() > deadline then
      lc:close()
      fail(string.format("another migration holds the lock on %s: %s; waited %ds. Wait for it to finish, or stop it.", name, who, opt(opts, "lock_wait")))
    end
    if not told then
      log.info("waiting for the migration lock on %s, held by %s", name, who)
      told = true
    end
    sys.sleep(0.25)
  end
end

-- ================================================================ applying

local function duration_text(v)
  if type(v) == "number" then return string.format("%dms", math.floor(v * 1000)) end
  return v
end

local function set_timeouts(conn, e, opts)
  local d = e.directives or {}
  local lt = d.lock_timeout or opt(opts, "lock_timeout")
  local st = d.statement_timeout or opts.statement_timeout
  local scope = (d.transaction == false) and "SESSION" or "LOCAL"
  conn:query("SELECT set_config('lock_timeout', $1, $2)", duration_text(lt) or "0", scope == "LOCAL")
  conn:query("SELECT set_config('statement_timeout', $1, $2)", duration_text(st) or "0", scope == "LOCAL")
end

local function reset_session_timeouts(conn)
  if not conn:is_closed() then pcall(conn.exec, conn, "RESET lock_timeout; RESET statement_timeout") end
end

--- Attach where a migration failed to an SQL error (or wrap a Lua error).
local function migration_error(e, err, stmt, idx, total, extra)
  local obj
  if db.is_error(err) then obj = err else obj = db.as_error { message = tostring(err) } end
  obj.migration = e.name
  obj.file = e.path
  if stmt then
    obj.line = stmt.line
    if obj.position and stmt.sql then
      obj.line = stmt.line + files.line_of(stmt.sql, obj.position) - files.line_of(stmt.sql, (stmt.sql:find("%S") or 1))
    end
    obj.statement_index = idx
  end
  obj.prefix = string.format("migration %s failed%s", e.name,
    obj.line and string.format(" at %s:%d%s", e.path, obj.line, idx and string.format(" (statement %d of %d)", idx, total) or "") or "")
  if extra then obj.where = extra end
  obj.exit_code = obj.interrupted and 130 or 1
  return obj
end

local function is_retryable(err)
  return db.is_error(err) and (err.sqlstate == "55P03" or err.sqlstate == "40P01")
end

-- ---------------------------------------------------------------- concurrent index builds

-- The first tokens of a statement, comments skipped: unquoted words folded
-- to lower case (as the server folds them), "quoted" identifiers exact,
-- punctuation as itself. { {v = text, quoted = bool}, ... }
local function tokens(sql, max)
  local out, i, n = {}, 1, #sql
  while i <= n and #out < max do
    local c = sql:sub(i, i)
    if c:match("%s") then i = i + 1
    elseif sql:sub(i, i + 1) == "--" then i = (sql:find("\n", i, true) or n) + 1
    elseif sql:sub(i, i + 1) == "/*" then i = (select(2, sql:find("*/", i + 2, true)) or n) + 1
    elseif c == '"' then
      local j, v = i + 1, {}
      while j <= n do
        local q = sql:find('"', j, true) or n + 1
        v[#v + 1] = sql:sub(j, q - 1)
        if sql:sub(q + 1, q + 1) == '"' then v[#v + 1] = '"'; j = q + 2 else j = q + 1 break end
      end
      out[#out + 1] = { v = table.concat(v), quoted = true }
      i = j
    elseif c:match("[%a_]") then
      local w = sql:match("^[%w_$]+", i)
      out[#out + 1] = { v = w:lower() }
      i = i + #w
    else
      out[#out + 1] = { v = c }
      i = i + 1
    end
  end
  return out
end

--- What a CREATE [UNIQUE] INDEX CONCURRENTLY statement builds: its name
-- (nil when the server picks one) and its table as a quoted, possibly
-- schema-qualified name; nil for any other statement.
local function concurrent_index(conn, sql)
  local t = tokens(sql, 16)
  local k = 1
  local function word(w) if t[k] and not t[k].quoted and t[k].v == w then k = k + 1 return true end end
  if not word("create") then return nil end
  word("unique")
  if not (word("index") and word("concurrently")) then return nil end
  if word("if") then if not (word("not") and word("exists")) then return nil end end
  local name
  if not word("on") then
    name = t[k] and t[k].v
    k = k + 1
    if not word("on") then return nil end
  end
  word("only")
  if not t[k] then return nil end
  local parts = { conn:quote_ident(t[k].v) }
  if t[k + 1] and t[k + 1].v == "." and t[k + 2] then parts[2] = conn:quote_ident(t[k + 2].v) end
  return { name = name, table = table.concat(parts, ".") }
end

-- The INVALID indexes of a table (name -> schema-qualified name).
local function invalid_indexes(conn, tbl)
  local out = {}
  for _, r in ipairs(conn:query([[SELECT c.relname, format('%I.%I', n.nspname, c.relname) AS qname FROM pg_index i
      JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE NOT i.indisvalid AND i.indrelid = to_regclass($1)]], tbl)) do out[r.relname] = r.qname end
  return out
end

-- Before a concurrent build: drop the INVALID index of that name an earlier,
-- interrupted build left (IF NOT EXISTS would otherwise keep it, invalid).
-- Returns what the statement builds and the table's invalid indexes now.
local function before_concurrent_index(conn, sql)
  local ci = concurrent_index(conn, sql)
  if not ci then return nil end
  local bad = invalid_indexes(conn, ci.table)
  if ci.name and bad[ci.name] then
    log.warn("index %s is INVALID (left by an interrupted concurrent build): dropping it before building it again", bad[ci.name])
    conn:exec("DROP INDEX CONCURRENTLY IF EXISTS " .. bad[ci.name])
    bad[ci.name] = nil
  end
  ci.before = bad
  return ci
end

-- After a failed concurrent build: drop the INVALID index it left (a
-- unique build failing on duplicates, a build cancelled by a timeout).
-- Returns a sentence for the error message, or nil.
local function after_failed_concurrent_index(conn, ci)
  if not ci then return nil end
  if conn:is_closed() then
    return string.format("the connection was lost: look for an INVALID index on %s and drop it (DROP INDEX CONCURRENTLY ...)", ci.table)
  end
  local ok, now = pcall(invalid_indexes, conn, ci.table)
  if not ok then return nil end
  local said = {}
  for relname, qname in pairs(now) do
    if not ci.before[relname] then
      pcall(conn.exec, conn, "SET statement_timeout = 0")
      local dropped, derr = pcall(conn.exec, conn, "DROP INDEX CONCURRENTLY IF EXISTS " .. qname)
      said[#said + 1] = dropped and string.format("the INVALID index %s that the failed concurrent build left was dropped", qname)
        or string.format("the failed concurrent build left the INVALID index %s, and dropping it failed (%s): run DROP INDEX CONCURRENTLY %s;",
          qname, tostring(derr), qname)
    end
  end
  return #said > 0 and table.concat(said, "; ") or nil
end

--- The batching helper for Lua data migrations: update a table in batches
-- keyed by its primary key (never OFFSET), reporting progress.
--   ctx.batch { table = "public.tickets", key = "id", size = 1000,
--               set = "title_lower = lower(title)", where = "title_lower IS NULL" }
-- key may name several columns ({ "tenant", "id" } or "tenant, id"). The
-- cursor is a row comparison on the key columns, and the database both
-- orders the batch and says where it ended, so text keys page by their own
-- collation (comparing them in Lua, byte-wise, updated rows twice under a
-- non-C collation). Each batch commits on its own when the migration runs
-- without a transaction. Returns the number of rows updated.
local function make_batch(conn, e, in_tx)
  return function(spec)
    assert(type(spec) == "table" and spec.table and spec.set, "batch{ table =, set =, key =, size = } expected")
    local cols = {}
    if type(spec.key) == "table" then cols = spec.key
    else for c in tostring(spec.key or "id"):gmatch("[^,%s]+") do cols[#cols + 1] = c end end
    assert(#cols > 0, "batch: key names no column")
    local q, ks, tq, bq, params, outs = {}, {}, {}, {}, {}, {}
    for i, c in ipairs(cols) do
      q[i] = conn:quote_ident(c)
      ks[i] = string.format("%s AS __orch_k%d", q[i], i)
      tq[i] = "t." .. q[i]
      bq[i] = "b.__orch_k" .. i
      params[i] = "$" .. i
      outs[i] = string.format("(SELECT __orch_k%d FROM b ORDER BY __orch_ord DESC LIMIT 1) AS k%d", i, i)
    end
    local key = table.concat(q, ", ")
    local size = math.tointeger(spec.size or 1000)
    local tbl = spec.table:find("%.") and spec.table or conn:quote_ident(spec.table)
    local where = spec.where and (" AND (" .. spec.where .. ")") or ""
    local total, batches, cursor = 0, 0, nil
    local t0 = sys.monotonic()
    while true do
      local cond = cursor == nil and "true" or string.format("(%s) > (%s)", key, table.concat(params, ", "))
      -- b: the next batch in key order, under names the SET and WHERE expressions cannot mean
      local sql = string.format([[WITH b AS MATERIALIZED (SELECT %s, row_number() OVER (ORDER BY %s) AS __orch_ord FROM
          (SELECT %s FROM %s WHERE %s%s ORDER BY %s LIMIT %d) s),
        u AS (UPDATE %s t SET %s FROM b WHERE (%s) = (%s) RETURNING 1)
        SELECT (SELECT count(*) FROM b) AS n, (SELECT count(*) FROM u) AS updated, %s]],
        table.concat(ks, ", "), key, key, tbl, cond, where, key, size, tbl, spec.set,
        table.concat(tq, ", "), table.concat(bq, ", "), table.concat(outs, ", "))
      local r
      if cursor == nil then r = conn:query(sql)[1] else r = conn:query(sql, table.unpack(cursor, 1, #cols))[1] end
      if r.n == 0 then break end
      cursor = {}
      for i = 1, #cols do cursor[i] = r["k" .. i] end
      total = total + r.updated
      batches = batches + 1
      if spec.progress ~= false and (batches % 10 == 0) then
        log.info("  %s: %d rows updated in %d batches (%.0f rows/s)", e.name, total, batches, total / math.max(sys.monotonic() - t0, 0.001))
      end
      sys.check_interrupt()
      if r.n < size then break end
    end
    return total
  end
end

local function run_lua(conn, project, e, fn, opts, in_tx)
  local ctx = { env = project.env, placeholders = project.placeholders, run_id = opts.run_id,
                log = log, migration = e.name, batch = make_batch(conn, e, in_tx) }
  local ok, err = pcall(fn, conn, ctx)
  if not ok then error(migration_error(e, err, nil, nil, nil, "in the Lua migration's function"), 0) end
end

-- Is the server newer than the grammar orch parses with (PostgreSQL 15)?
-- Then syntax the parser rejects may be the server's own: it is split with
-- the scanner and the server judges it.
local function newer_than_grammar(conn)
  if not conn or conn:is_closed() then return false end
  local ok, info = pcall(conn.info, conn)
  return ok and (info.server_version_num or 0) // 10000 > require("orch.pgquery").version // 10000
end

-- The statements of a SQL file; in_tx: it runs in orch's transaction, so
-- a script that wraps itself in BEGIN; ... COMMIT; runs without the wrapper
-- (one transaction, not a nested one; see files.unwrap_transaction). conn:
-- the server, when one is there to judge what the grammar rejects.
local function statements_of(project, e, text, in_tx, conn)
  text = files.placeholders(text, project.placeholders, e.path)
  local stmts = files.split_sql(text, e.path, { scanner = newer_than_grammar(conn) })
  if in_tx then stmts = files.unwrap_transaction(stmts, e.path) end
  return stmts
end

-- A file of one statement that cannot run in a transaction (a lone CREATE
-- INDEX CONCURRENTLY) and no transaction directive runs without one: there
-- is nothing for a transaction to hold together. Returns its kind, or nil.
local function lone_no_tx(project, src, conn)
  if src.lang ~= "sql" or not src.text or (src.directives and src.directives.transaction ~= nil) then return nil end
  local ok, stmts = pcall(statements_of, project, src, src.text, false, conn)
  if not ok or #stmts ~= 1 then return nil end
  return files.needs_no_transaction(stmts[1].sql)
end
M.lone_no_tx = lone_no_tx

-- Run one migration (or its undo) inside a transaction. fn(conn) does the work.
local function in_transaction(conn, project, e, opts, work, hist)
  local attempts = 0
  while true do
    attempts = attempts + 1
    local started = sys.now()
    local t0 = sys.monotonic()
    local ok, err = pcall(conn.tx, conn, function()
      set_timeouts(conn, e, opts)
      work()
      local ms = math.floor((sys.monotonic() - t0) * 1000)
      hist.started, hist.ms = started, ms
      record(conn, project, e, hist)
    end)
    if ok then return hist.ms end
    if is_retryable(err) and attempts <= opt(opts, "retries") and not conn:is_closed() then
      local wait = math.min(0.25 * 2 ^ (attempts - 1), 10) * (0.5 + math.random())
      log.warn("%s: %s (SQLSTATE %s); retrying in %.1fs (attempt %d of %d)", e.name,
        err.message, err.sqlstate, wait, attempts + 1, opt(opts, "retries") + 1)
      sys.sleep(wait)
    else
      return nil, err, started
    end
  end
end

-- One statement of a SQL file; a COPY ... FROM STDIN with the data that followed it.
local function run_statement(conn, s)
  if s.copy then return conn:copy_in(s.sql, s.copy) end
  return conn:exec(s.sql)
end

--- Run a migration's verify script (or Lua verify function) on conn, in
-- the transaction the caller has open: it raises when what the migration
-- made is not there (a dropped column, a missing table).
function M.run_verify(conn, project, e, opts)
  local v = e.verify
  if not v then return end
  local ok, err
  if v.lua_verify then
    ok, err = pcall(v.lua_verify, conn, { env = project.env, placeholders = project.placeholders, log = log, migration = e.name })
  else
    local stmts = files.split_sql(files.placeholders(v.text, project.placeholders, v.path), v.path)
    for i, st in ipairs(stmts) do
      ok, err = pcall(run_statement, conn, st)
      if not ok then err = migration_error(v, err, st, i, #stmts) break end
    end
    if ok == nil then ok = true end
  end
  if not ok then
    local obj = type(err) == "table" and err or db.as_error { message = tostring(err) }
    obj.prefix = string.format("verify of %s failed%s", e.name, obj.line and string.format(" at %s:%d", v.path, obj.line) or "")
    obj.verify_failed = true
    error(obj, 0)
  end
end

local function apply_sql_tx(conn, project, e, text, opts, hist, verify)
  local stmts = statements_of(project, e, text, true, conn)
  for i, s in ipairs(stmts) do
    local kind = files.needs_no_transaction(s.sql)
    if kind then
      fail(string.format("%s:%d: %s cannot run inside a transaction: add '-- orch: transaction=false' as the first line of %s " ..
        "(the file then runs statement by statement, without a transaction)", e.path, s.line, kind, e.name))
    end
  end
  return in_transaction(conn, project, e, opts, function()
    for i, s in ipairs(stmts) do
      local ok, err = pcall(run_statement, conn, s)
      if not ok then error(migration_error(e, err, s, i, #stmts), 0) end
    end
    -- the verify script runs in the same transaction: when it fails, nothing of the migration stays
    if verify then M.run_verify(conn, project, verify, opts) end
  end, hist)
end

local function apply_sql_notx(conn, project, e, text, opts, hist)
  local stmts = statements_of(project, e, text, false, conn)
  local started, t0 = sys.now(), sys.monotonic()
  set_timeouts(conn, e, opts)
  for i, s in ipairs(stmts) do
    local attempts = 0
    while true do
      attempts = attempts + 1
      local ci = before_concurrent_index(conn, s.sql)
      local ok, err = pcall(run_statement, conn, s)
      if ok then break end
      local index_note = after_failed_concurrent_index(conn, ci)
      if is_retryable(err) and attempts <= opt(opts, "retries") and not conn:is_closed() then
        local wait = math.min(0.25 * 2 ^ (attempts - 1), 10) * (0.5 + math.random())
        log.warn("%s: statement %d: %s; retrying in %.1fs", e.name, i, err.message, wait)
        sys.sleep(wait)
      else
        reset_session_timeouts(conn)
        local ran = i - 1
        local where = ran == 0 and "no statement of this file ran" or
          string.format("statements 1..%d of %d ran and stay committed (the file runs without a transaction); the database is partly migrated: fix it, then 'orch repair' clears the failure", ran, #stmts)
        if index_note then where = where .. "; " .. index_note end
        return nil, migration_error(e, err, s, i, #stmts, where), started, ran
      end
    end
  end
  reset_session_timeouts(conn)
  hist.started, hist.ms = started, math.floor((sys.monotonic() - t0) * 1000)
  record(conn, project, e, hist)
  return hist.ms
end

-- Record a failure on the lock connection (its own session: it works even
-- when the migration's connection is gone or its transaction aborted).
local function record_failure(lc, project, e, hist, err, started, rolled_back)
  if rolled_back and not hist.start_rank and M.flyway_layout(lc, project) then return end
  local ok, rerr = pcall(record, lc, project, e, { start_rank = hist.start_rank,
    version = hist.version, type = hist.type, checksum = hist.checksum, run_id = hist.run_id,
    started = started or sys.now(), success = false, rolled_back = rolled_back,
    error = log.redact(tostring(err)):sub(1, 2000) })
  if not ok then log.warn("could not record the failure in the history table: %s", tostring(rerr)) end
end

local function apply_one(conn, lc, project, e, opts, undo)
  local src = undo and e.undo or e
  if undo then
    -- errors and history rows name the undo file, everything else is the migration's
    e = setmetatable({ name = src.name, path = src.path, lang = src.lang or e.lang,
                       directives = src.directives or e.directives }, { __index = e })
  end
  local hist = { version = e.version_text, type = type_of(src, undo), checksum = src.checksum or e.checksum,
                 run_id = opts.run_id, success = true }
  if undo then hist.type = (src.lua_down or src.lang == "lua") and "UNDO_LUA" or "UNDO_SQL" end
  local transactional = not (e.directives and e.directives.transaction == false)
  if undo and src.directives and src.directives.transaction == false then transactional = false end
  if transactional then
    local kind = lone_no_tx(project, src, conn)
    if kind then
      log.info("%s: its one statement, %s, cannot run inside a transaction: running it without one", src.name or e.name, kind)
      transactional = false
    end
  end
  if not transactional and not undo then
    -- written before it runs (on the lock connection, committed at once): if orch or the server
    -- dies half-way, status shows the migration failed part-way instead of pending
    local row = M.flyway_layout(lc, project) and lc:query(string.format([[INSERT INTO %s (installed_rank, version, description, type,
        script, checksum, installed_by, installed_on, execution_time, success)
      SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, $3, $4, $5, current_user, now(), 0, false FROM %s RETURNING installed_rank]],
      M.history_name(lc, project), M.history_name(lc, project)), hist.version, e.description, M.flyway_type(hist.type), e.name, hist.checksum)[1]
      or lc:query(string.format([[INSERT INTO %s (service, version, description, type, script, checksum, installed_on,
        success, rolled_back, run_id, error) VALUES ($1, $2, $3, $4, $5, $6, now(), false, false, $7, $8) RETURNING installed_rank]],
      M.history_name(lc, project)), e.service or "", hist.version, e.description, hist.type, e.name, hist.checksum, opts.run_id,
      string.format("started at %s without a transaction and did not finish: orch or the server stopped while it ran " ..
        "(killed, connection lost, server restart), so it may be partly applied: check the database, then 'orch repair' clears it",
        os.date("!%Y-%m-%dT%H:%M:%SZ")))[1]
    hist.start_rank = row.installed_rank
  end
  local ms, err, started, ran
  if src.lua_down or (src.lang == "lua") then
    local fn = src.lua_down or (undo and src.module.down) or src.module.up
    if transactional then
      ms, err, started = in_transaction(conn, project, e, opts, function()
        run_lua(conn, project, e, fn, opts, true)
        if not undo then M.run_verify(conn, project, e, opts) end
      end, hist)
    else
      started = sys.now()
      local t0 = sys.monotonic()
      local ok, lerr = pcall(run_lua, conn, project, e, fn, opts, false)
      if ok then
        hist.started, hist.ms = started, math.floor((sys.monotonic() - t0) * 1000)
        record(conn, project, e, hist)
        ms = hist.ms
      else
        err = lerr
      end
    end
  elseif transactional then
    ms, err, started = apply_sql_tx(conn, project, e, src.text, opts, hist, not undo and e or nil)
  else
    ms, err, started, ran = apply_sql_notx(conn, project, e, src.text, opts, hist)
  end
  if ms and not undo and not transactional and e.verify then
    -- applied without a transaction: verify afterwards, in a transaction of its own that changes nothing
    conn:exec("BEGIN")
    local okv, verr = pcall(M.run_verify, conn, project, e, opts)
    pcall(conn.exec, conn, "ROLLBACK")
    if not okv then
      if type(verr) == "table" then
        verr.where = "the migration ran without a transaction and stays applied: fix what the verify script checks, or undo it"
        verr.exit_code = 1
      end
      error(verr, 0)
    end
  end
  if not ms then
    if not db.is_error(err) and type(err) ~= "table" then err = migration_error(e, err) end
    record_failure(lc, project, e, hist, err, started, transactional)
    if transactional and type(err) == "table" and not err.where then
      err.where = conn:is_closed() and "the connection was lost; the server rolled the migration back"
        or "rolled back: nothing of this migration was applied"
    end
    -- what a recovery needs to know: did this failure leave part of the migration applied?
    -- (a Lua migration without a transaction may have committed batches: assume it did)
    if type(err) == "table" then
      err.transactional = transactional
      err.partial = not transactional and (ran == nil or ran > 0)
    end
    error(err, 0)
  end
  return ms
end

-- ================================================================ the release in one transaction

--- Can the plan run as one transaction? Returns true, or false and the
-- first migration that cannot (it says transaction=false) and why.
function M.groupable(plan)
  for _, e in ipairs(plan) do
    if e.directives and e.directives.transaction == false then
      return false, e, string.format("%s is transaction=false", e.name)
    end
    if e.lang == "sql" and e.text then
      -- (a file the parser rejects was judged before: classify it by its tokens)
      local ok, stmts = pcall(files.split_sql, e.text, e.path)
      if not ok then stmts = files.split_sql(e.text, e.path, { scanner = true }) end
      for _, s in ipairs((files.unwrap_transaction(stmts, e.path))) do
        local kind = files.needs_no_transaction(s.sql)
        if kind then return false, e, string.format("%s runs %s, which cannot run inside a transaction", e.name, kind) end
      end
    end
  end
  return true
end

-- Apply the whole plan in one transaction (Flyway's group mode): every
-- migration and its history row, then opts.before_commit(conn) (the
-- release's database checks), then COMMIT. Any error rolls everything
-- back, so the database is exactly as it was: no history row is written
-- either (the run log has the story). A lock timeout or deadlock retries
-- the whole group, with the same bounded backoff as one migration.
local function apply_group(conn, lc, project, plan, opts, result)
  local ok_g, bad, why = M.groupable(plan)
  if not ok_g then fail("cannot apply the release in one transaction: " .. why) end
  local attempts = 0
  while true do
    attempts = attempts + 1
    local done = {}
    local ok, err = pcall(conn.tx, conn, function()
      for i, e in ipairs(plan) do
        if opts.on_progress then opts.on_progress { event = "start", index = i, total = #plan, migration = e, group = true } end
        local started, t0 = sys.now(), sys.monotonic()
        set_timeouts(conn, e, opts)
        if e.lang == "lua" then
          run_lua(conn, project, e, e.module.up, opts, true)
        else
          local stmts = statements_of(project, e, e.text, true, conn)
          for j, s in ipairs(stmts) do
            local okx, xerr = pcall(run_statement, conn, s)
            if not okx then error(migration_error(e, xerr, s, j, #stmts), 0) end
          end
        end
        M.run_verify(conn, project, e, opts)
        local ms = math.floor((sys.monotonic() - t0) * 1000)
        record(conn, project, e, { version = e.version_text, type = type_of(e), checksum = e.checksum, run_id = opts.run_id,
          success = true, started = started, ms = ms })
        done[#done + 1] = { key = e.key, script = e.name, version = e.version_text, ms = ms }
        if opts.on_progress then opts.on_progress { event = "done", index = i, total = #plan, migration = e, ms = ms, group = true } end
        sys.check_interrupt()
      end
      if opts.before_commit then
        local okc, cerr = pcall(opts.before_commit, conn)
        if not okc then
          if type(cerr) == "table" and cerr.interrupted then error(cerr, 0) end
          local obj = db.is_error(cerr) and cerr or db.as_error { message = tostring(cerr) }
          obj.prefix = obj.prefix or "the release's database checks failed before COMMIT"
          obj.checks_failed = true
          error(obj, 0)
        end
      end
    end)
    if ok then
      for _, a in ipairs(done) do result.applied[#result.applied + 1] = a end
      if opts.on_progress then opts.on_progress { event = "committed", total = #plan, applied = done, group = true } end
      return result
    end
    if is_retryable(err) and attempts <= opt(opts, "retries") and not conn:is_closed() then
      local wait = math.min(0.25 * 2 ^ (attempts - 1), 10) * (0.5 + math.random())
      log.warn("%s (SQLSTATE %s): the release runs in one transaction, so all of it is retried in %.1fs (attempt %d of %d)",
        tostring(err.message), err.sqlstate, wait, attempts + 1, opt(opts, "retries") + 1)
      sys.sleep(wait)
    else
      if type(err) ~= "table" then err = db.as_error { message = tostring(err) } end
      err.group = true
      err.transactional = true
      err.partial = false
      if not err.interrupted then
        err.where = (err.where and (err.where .. "; ") or "") .. (conn:is_closed()
          and "the connection was lost: the server rolled the whole release back"
          or string.format("the release ran in one transaction (%d migration%s): rolled back, the database is exactly as it was", #plan, #plan == 1 and "" or "s"))
      end
      err.exit_code = err.interrupted and 130 or 1
      error(err, 0)
    end
  end
end

--- Which migrations migrate would run, in order (versioned, then
-- repeatables). opts.target limits versioned ones (in the default service
-- or "service:V"). Validation problems raise unless opts.skip_validate.
function M.plan(conn, project, opts)
  opts = opts or {}
  local st = M.status(conn, project)
  if not opts.skip_validate then
    local problems = M.validate(conn, project, st)
    local keep = {}
    for _, p in ipairs(problems) do
      if not (opts.out_of_order and p.state == "out_of_order") and M.selected(project, p.service) then keep[#keep + 1] = p end
    end
    if #keep > 0 then raise_validation(keep) end
  end
  local tsvc, target = M.parse_target(opts.target, project)
  local states = {}
  for _, it in ipairs(st.items) do states[it.key] = it.state end
  local plan, planned = {}, {}
  local pick = opts.pick and M.find(project, opts.pick)
  if pick then
    local s = states[pick.key]
    if s ~= "pending" and s ~= "failed" and s ~= "out_of_order" then
      fail(string.format("%s is %s: migrate --only applies a pending migration%s", pick.name, s or "unknown",
        s == "skipped" and " (this one does not apply in this environment)" or ""))
    end
  end
  for _, e in ipairs(project.versioned) do
    local s = states[e.key]
    local go = s == "pending" or (s == "failed") or (opts.out_of_order and s == "out_of_order")
    if pick then go = e == pick end
    if go and target and (tsvc == nil or tsvc == e.service) and files.compare(e.version, target) > 0 then go = false end
    if go and not M.selected(project, e.service) then go = false end
    if go then
      -- every dependency applied already, or earlier in this plan: else nothing runs
      for _, k in ipairs(e.deps or {}) do
        local ds = states[k]
        if not planned[k] and ds ~= "applied" and ds ~= "changed" and ds ~= "below_baseline" then
          local d = project.by_key[k]
          fail(string.format("%s depends on %s (%s), which is %s and not in this run%s; nothing was applied",
            e.key, k, d and d.name or k, ds or "not applied",
            project.services and not project.services[d.service] and string.format(": add --service %s", d.service ~= "" and d.service or "''")
              or (ds == "skipped" and ": it does not apply in this environment") or ""))
        end
      end
      planned[e.key] = true
      plan[#plan + 1] = e
    end
  end
  for _, e in ipairs(project.repeatable) do
    local s = states[e.key]
    if not pick and (s == "pending" or s == "outdated" or s == "failed") and M.selected(project, e.service) then plan[#plan + 1] = e end
  end
  return plan, st
end

--- The versioned migration a command names (--only): a file name or path
-- ("20240101_001_auth_create_users_table.sql", "V3__x.sql"), a key
-- ("auth-service:V20240101.1"), SERVICE:VERSION, or a version (of the files
-- directly in the directory, else of the one service that has it). Raises
-- (exit 2) naming what it is not.
function M.find(project, ref)
  local base = ref:match("([^/]+)$")
  local hits = {}
  for _, e in ipairs(project.versioned) do
    if e.path == ref or e.key == ref or (base == ref and e.name == ref) or e.path:sub(-#ref - 1) == "/" .. ref then
      hits[#hits + 1] = e
    end
  end
  if #hits == 0 then
    local svc, ver = ref:match("^([%w_.-]+):[Vv]?([%d._]+)$")
    if not svc then ver = ref:match("^[Vv]?([%d._]+)$") end
    local v = ver and files.parse_version(ver)
    if v then
      local vt = files.version_string(v)
      for _, e in ipairs(project.versioned) do
        if e.version_text == vt and (svc == nil or e.service == svc) then hits[#hits + 1] = e end
      end
      if #hits > 1 and not svc then
        local own = {}
        for _, e in ipairs(hits) do if e.service == "" then own[#own + 1] = e end end
        if #own == 1 then hits = own end
      end
    end
  end
  if #hits == 1 then return hits[1] end
  if #hits > 1 then
    local names = {}
    for i, e in ipairs(hits) do names[i] = e.key end
    fail(string.format("'%s' names %d migrations (%s): name one as SERVICE:VERSION or by its file", ref, #hits, table.concat(names, ", ")), 2)
  end
  fail(string.format("no migration '%s' in %s: name one by its file, SERVICE:VERSION or version (orch status lists them)", ref, project.dir), 2)
end

--- Is a service selected (--service)? Every one is when none was named.
function M.selected(project, service)
  return not project.services or project.services[service or ""] == true
end

--- Restrict a project to some services (--service NAME, repeatable); an
-- unknown name is a usage error (exit 2) listing the services there are.
function M.select_services(project, names)
  if not names or #names == 0 then return end
  local known = {}
  for _, e in ipairs(project.versioned) do known[e.service] = true end
  for _, e in ipairs(project.repeatable) do known[e.service] = true end
  project.services = {}
  for _, n in ipairs(names) do
    if not known[n] then
      local list = {}
      for k in pairs(known) do list[#list + 1] = k ~= "" and k or "'' (the files directly in " .. project.dir .. ")" end
      table.sort(list)
      fail(string.format("no service '%s' in %s (services: %s)", n, project.dir, #list > 0 and table.concat(list, ", ") or "none"), 2)
    end
    project.services[n] = true
  end
end

--- A --target: "3", "V1.2", "20240101_001", or "SERVICE:VERSION". Returns
-- the service (nil: every service) and the parsed version, or nil.
function M.parse_target(t, project)
  if t == nil then return nil, nil end
  local svc, ver = tostring(t):match("^([%w_.-]+):(.+)$")
  if not svc then ver = tostring(t) end
  local v = files.parse_version((ver:gsub("^[Vv]", "")))
  if not v then
    fail(string.format("bad --target '%s': expected a version such as 3, 1.2 or 20240101_001, or SERVICE:VERSION", tostring(t)), 2)
  end
  if svc and project then M.select_services({ versioned = project.versioned, repeatable = project.repeatable, dir = project.dir }, { svc }) end
  return svc, v
end

--- Raise before anything runs if a planned SQL file (or its undo, when
-- undo is set) uses a placeholder that has no value, or does not parse
-- (PostgreSQL's parser: the error names file:line:column). On a server
-- newer than the parser's grammar (conn), a file it rejects is only
-- warned about: the server judges its syntax.
function M.check_placeholders(project, plan, undo, conn)
  local grammar = require("orch.pgquery").version // 10000
  for _, e in ipairs(plan) do
    local src = undo and e.undo or e
    if src.text and src.lang == "sql" then
      local text = files.placeholders(src.text, project.placeholders, src.path)
      local ok, err = pcall(files.split_sql, text, src.path)
      if not ok then
        local msg = tostring(type(err) == "table" and err.message or err)
        if newer_than_grammar(conn) and pcall(files.split_sql, text, src.path, { scanner = true }) then
          log.warn("%s: PostgreSQL %d's grammar rejects %s; the server is newer and judges it (statements split by tokens)",
            src.name or src.path, grammar, msg)
        else
          fail(string.format("%s does not parse: %s; nothing was applied (orch reads migrations with PostgreSQL %d's grammar: " ..
            "fix the statement)", src.name or src.path, msg, grammar))
        end
      end
    end
  end
end

--- Refuse to migrate a database that holds objects but no migration
-- history, as Flyway does: the migrations would run over whatever made
-- them. Only with opts.refuse_non_empty (orch migrate sets it unless
-- --allow-non-empty), so scripts that prepare a database first go on. Objects are relations,
-- functions and types in the non-system schemas, not an extension's.
function M.check_non_empty(conn, project, opts)
  if not (opts and opts.refuse_non_empty) or opts.allow_non_empty then return end
  if history_exists(conn, project) and conn:value(string.format("SELECT count(*) FROM %s", M.history_name(conn, project))) > 0 then
    return
  end
  local objs = conn:query([[
    WITH ns AS (SELECT oid, nspname FROM pg_namespace
                WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp_)'),
    ext AS (SELECT objid, classid FROM pg_depend WHERE deptype = 'e'),
    o AS (
      SELECT format('%I.%I', ns.nspname, c.relname) AS name FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.oid <> coalesce(to_regclass($1), 0)
          AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.deptype IN ('a', 'i') AND d.refobjid = coalesce(to_regclass($1), 0))
      UNION ALL
      SELECT format('%I.%I()', ns.nspname, p.proname) FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
        WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid)
      UNION ALL
      SELECT format('type %I.%I', ns.nspname, t.typname) FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
        WHERE (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid))
    SELECT name, count(*) OVER () AS n FROM o ORDER BY name LIMIT 5]], M.history_name(conn, project))
  if #objs == 0 then return end
  local names = {}
  for i, r in ipairs(objs) do names[i] = r.name end
  fail(string.format("the database is not empty (%s%s) but has no migration history in %s: the migrations would run over " ..
    "whatever made those objects. If it is already at a version, record that first: orch baseline --version VERSION " ..
    "(or take over another tool's history: orch baseline --adopt flyway|knex|dbmate|golang-migrate|alembic|migration_history); " ..
    "to migrate it as it is, %s. Nothing was changed",
    table.concat(names, ", "), objs[1].n > #objs and string.format(" and %d more", objs[1].n - #objs) or "",
    M.history_name(conn, project), opts.override or "pass --allow-non-empty"))
end

--- Apply pending migrations. opts: target, dry_run, run_id, lock_timeout,
-- retries, lock_wait, out_of_order, on_progress(event), group (the whole
-- plan in one transaction, see M.groupable; raises before anything runs if
-- it cannot be), before_commit(conn) (group only: raise to roll it all
-- back). Returns { applied = { {key, script, ms}... }, planned = {...},
-- dry_run = bool }. On failure raises an error object naming file, line,
-- statement, SQLSTATE and message, with .committed (what this call
-- committed before, oldest first), .partial (the failing migration ran
-- without a transaction and may be half applied) and .group; without group,
-- earlier migrations of the run stay applied.
function M.up(conn, project, opts)
  opts = opts or {}
  if opts.dry_run then
    M.check_non_empty(conn, project, opts)
    local plan = M.plan(conn, project, opts)
    check_flyway_services(conn, project, plan)
    M.check_placeholders(project, plan, nil, conn)
    return { applied = {}, planned = plan, dry_run = true }
  end
  local lc <close> = M.lock(conn, project, opts)
  M.check_non_empty(conn, project, opts)
  M.ensure_history(conn, project)
  local plan = M.plan(conn, project, opts)
  check_flyway_services(conn, project, plan)
  M.check_placeholders(project, plan, nil, conn)
  local result = { applied = {}, planned = plan, run_id = opts.run_id }
  if opts.group and #plan > 0 then return apply_group(conn, lc, project, plan, opts, result) end
  for i, e in ipairs(plan) do
    if opts.on_progress then opts.on_progress { event = "start", index = i, total = #plan, migration = e } end
    local okm, ms = pcall(apply_one, conn, lc, project, e, opts, false)
    if not okm then
      if type(ms) == "table" then ms.committed = result.applied; ms.failed_key = e.key end
      error(ms, 0)
    end
    result.applied[#result.applied + 1] = { key = e.key, script = e.name, version = e.version_text, ms = ms }
    if opts.on_progress then opts.on_progress { event = "done", index = i, total = #plan, migration = e, ms = ms } end
    sys.check_interrupt()
  end
  return result
end

--- Undo applied versioned migrations, newest first. opts: count (default
-- 1), target (undo everything above this version; 0 = all), only (a list
-- of project entries, undone in that order), dry_run, run_id. Every selected migration must have an undo (U file or Lua down);
-- otherwise nothing runs. Returns { undone = {...}, planned = {...} }.
function M.undo(conn, project, opts)
  opts = opts or {}
  local st = M.status(conn, project)
  local applied = {}
  for _, it in ipairs(st.items) do
    if (it.state == "applied" or it.state == "changed") and it.version and project.by_key[it.key] then
      applied[#applied + 1] = project.by_key[it.key]
    end
  end
  table.sort(applied, function(a, b) return a.rank > b.rank end)
  local tsvc, target = M.parse_target(opts.target, project)
  local chosen = {}
  local item_of = {}
  for _, it in ipairs(st.items) do item_of[it.key] = it end
  local run = opts.run
  if run == "last" then
    -- Knex's "last batch": the run of the newest history row whose migration is still applied
    run = nil
    for i = #st.rows, 1, -1 do
      local r = st.rows[i]
      local k = r.version and key_of(r.service, files.version_string(files.parse_version(r.version) or { 0 }))
      local it = k and item_of[k]
      if r.success and r.run_id and not r.type:match("^UNDO") and r.type ~= "BASELINE" and it
        and (it.state == "applied" or it.state == "changed") and it.run_id == r.run_id then run = r.run_id break end
    end
    if not run then
      fail("orch undo --run last: no applied migration records the run that applied it (orch migrate records one since it writes run ids; " ..
        "Flyway's table has none): undo by --count or --target instead")
    end
  end
  local pick = opts.pick and M.find(project, opts.pick)
  if pick and not (item_of[pick.key] and (item_of[pick.key].state == "applied" or item_of[pick.key].state == "changed")) then
    fail(string.format("%s is %s, not applied: there is nothing of it to undo", pick.name, item_of[pick.key] and item_of[pick.key].state or "unknown"))
  end
  for _, e in ipairs(applied) do
    if run and (item_of[e.key] or {}).run_id ~= run then -- --run: that run's only
    elseif run then chosen[#chosen + 1] = e
    elseif pick then if e == pick then chosen[#chosen + 1] = e end
    elseif tsvc and e.service ~= tsvc then -- undo --target SERVICE:VERSION: that service only
    elseif not M.selected(project, e.service) then -- --service: those only
    elseif target then
      if files.compare(e.version, target) > 0 then chosen[#chosen + 1] = e end
    elseif #chosen < (opts.count or 1) then
      chosen[#chosen + 1] = e
    end
  end
  if run and #chosen == 0 then
    fail(string.format("no applied migration was applied by run %s (orch status --json shows each one's run_id)", run))
  end
  -- opts.only: exactly these migrations, in this order (the recovery ladder undoes what its
  -- run committed, a half-applied one included, whatever else the history says)
  if opts.only then chosen = opts.only
  else
    -- a migration is undone only after everything applied that depends on it
    local going, still = {}, {}
    for _, e in ipairs(chosen) do going[e.key] = true end
    for _, e in ipairs(applied) do if not going[e.key] then still[#still + 1] = e end end
    for _, e in ipairs(chosen) do
      for _, o in ipairs(still) do
        for _, k in ipairs(o.deps or {}) do
          if k == e.key then
            fail(string.format("cannot undo %s (%s): %s (%s) is applied and depends on it; undo that first%s; nothing was undone",
              e.key, e.name, o.key, o.name, o.service ~= e.service and string.format(" (orch undo --target %s:...)", o.service) or ""))
          end
        end
      end
    end
  end
  for _, e in ipairs(chosen) do
    if not e.undo then
      fail(string.format("cannot undo %s: it has no undo (no U%s__*.%s file and no down function); nothing was undone",
        e.name, e.version_text, e.lang))
    end
  end
  M.check_placeholders(project, chosen, true, conn)
  check_flyway_services(conn, project, chosen)
  if opts.dry_run then return { undone = {}, planned = chosen, dry_run = true } end
  local lc <close> = M.lock(conn, project, opts)
  local result = { undone = {}, planned = chosen }
  for i, e in ipairs(chosen) do
    if opts.on_progress then opts.on_progress { event = "start", index = i, total = #chosen, migration = e, undo = true } end
    local ms = apply_one(conn, lc, project, e, opts, true)
    result.undone[#result.undone + 1] = { key = e.key, script = e.undo.name, version = e.version_text, ms = ms }
    if opts.on_progress then opts.on_progress { event = "done", index = i, total = #chosen, migration = e, ms = ms, undo = true } end
    sys.check_interrupt()
  end
  return result
end

--- Mark an existing database as being at version v (nothing runs).
function M.baseline(conn, project, opts)
  local v = files.parse_version(tostring(opts.version or "1"):gsub("^[Vv]", ""))
  if not v then fail("bad baseline version '" .. tostring(opts.version) .. "'", 2) end
  local lc <close> = M.lock(conn, project, opts)
  M.ensure_history(conn, project)
  for _, r in ipairs(M.history(conn, project)) do
    if r.success and (r.service or "") == (opts.service or "") then
      fail(string.format("cannot baseline: %s already has history (%s applied on %s); baseline is for databases orch has never migrated",
        M.history_name(conn, project), r.script, r.installed_on))
    end
  end
  if M.flyway_layout(conn, project) then
    if (opts.service or "") ~= "" then check_flyway_services(conn, project, { { service = opts.service, name = opts.service } }) end
    local name = M.history_name(conn, project)
    conn:query(string.format([[INSERT INTO %s (installed_rank, version, description, type, script, checksum, installed_by,
        installed_on, execution_time, success)
      SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, 'BASELINE', $2, NULL, current_user, now(), 0, true FROM %s]], name, name),
      files.version_string(v), opts.description or "<< Flyway Baseline >>")
    return { version = files.version_string(v) }
  end
  conn:query(string.format([[INSERT INTO %s (service, version, description, type, script, success, run_id, finished_on)
    VALUES ($1, $2, $3, 'BASELINE', $3, true, $4, now())]], M.history_name(conn, project)),
    opts.service or "", files.version_string(v), opts.description or "<< baseline >>", opts.run_id)
  return { version = files.version_string(v) }
end

--- Take over an existing Flyway history: copy the rows of
-- schema.flyway_schema_history (opts.from) into orch's history table, so
-- validation and status continue from where Flyway stopped. Refused when
-- orch's history already has rows.
function M.adopt(conn, project, opts)
  opts = opts or {}
  local from = opts.from or (project.schema .. ".flyway_schema_history")
  if not conn:value("SELECT to_regclass($1) IS NOT NULL", from) then
    fail(string.format("no Flyway history table %s to adopt", from))
  end
  local lc <close> = M.lock(conn, project, opts)
  M.ensure_history(conn, project)
  local name = M.history_name(conn, project)
  if conn:value(string.format("SELECT count(*) FROM %s", name)) > 0 then
    fail(string.format("cannot adopt %s: %s already has rows", from, name))
  end
  local n
  conn:tx(function()
    local r = conn:query(string.format([[INSERT INTO %s (service, version, description, type, script, checksum,
        installed_by, installed_on, finished_on, execution_time, success, rolled_back, run_id)
      SELECT '', version, description, CASE WHEN type IN ('SQL', 'BASELINE', 'UNDO_SQL') THEN type ELSE 'SQL' END,
             script, checksum, installed_by, installed_on, installed_on, execution_time, success, true, $1
      FROM %s ORDER BY installed_rank]], name, from), opts.run_id or "adopted-from-flyway")
    n = r.affected
  end)
  return { rows = n, from = from }
end

-- What other tools say is applied: a reader per tool returns the table it
-- read and either rows (each { version = parsed, label, t = epoch }) or
-- upto (every migration up to this version is applied) with its label.
local function source_table(conn, project, name)
  local q = conn:quote_ident(project.schema) .. "." .. conn:quote_ident(name)
  if not conn:value("SELECT to_regclass($1) IS NOT NULL", q) then return nil end
  return q
end

local function has_column(conn, tbl, col)
  return conn:value("SELECT 1 FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped", tbl, col) ~= nil
end

local function version_of_name(project, name)
  local stem = name:gsub("%.[%w]+$", "")
  local ok, e = pcall(files.parse_name, stem .. ".sql", name, project.settings and project.settings.layout)
  return ok and e and e.version or nil
end

local readers = {}
readers.knex = function(conn, project)
  local t = source_table(conn, project, "knex_migrations")
  if not t then return nil, "knex_migrations" end
  local rows = {}
  for _, r in ipairs(conn:query(string.format(
      "SELECT name, batch, extract(epoch FROM migration_time)::float8 AS t FROM %s ORDER BY id", t))) do
    local v = version_of_name(project, r.name)
    if not v then
      fail(string.format("%s lists %s (batch %d), whose name starts with no version orch can read " ..
        "(20240101120000_x.js): rename nothing, baseline by hand with orch baseline --version N; nothing was adopted", t, r.name, r.batch))
    end
    rows[#rows + 1] = { version = v, label = string.format("%s (batch %d)", r.name, r.batch), t = r.t }
  end
  return { from = t, rows = rows }
end
local function schema_migrations(tool)
  return function(conn, project)
    local t = source_table(conn, project, "schema_migrations")
    if not t then return nil, "schema_migrations" end
    local dirty = has_column(conn, t, "dirty")
    if dirty and tool ~= "golang-migrate" then
      fail(string.format("%s has a dirty column: it is golang-migrate's, not %s's: orch baseline --adopt golang-migrate", t, tool), 2)
    elseif not dirty and tool == "golang-migrate" then
      fail(string.format("%s has no dirty column: it is dbmate's (or Rails'), not golang-migrate's: orch baseline --adopt dbmate", t), 2)
    end
    if dirty then
      local r = conn:query(string.format("SELECT version::text AS version, dirty FROM %s", t))
      if #r ~= 1 then fail(string.format("%s holds %d rows; golang-migrate keeps exactly one (the current version)", t, #r)) end
      if r[1].dirty then
        fail(string.format("%s says version %s is dirty (golang-migrate stopped in the middle of it): check the database, " ..
          "then clear it with migrate force %s before adopting; nothing was adopted", t, r[1].version, r[1].version))
      end
      return { from = t, upto = files.parse_version(r[1].version), label = "version " .. r[1].version }
    end
    local rows = {}
    for _, r in ipairs(conn:query(string.format("SELECT version::text AS version FROM %s ORDER BY version", t))) do
      local v = files.parse_version(r.version)
      if not v then fail(string.format("%s lists the version '%s', which is not a number", t, r.version)) end
      rows[#rows + 1] = { version = v, label = "version " .. r.version }
    end
    return { from = t, rows = rows }
  end
end
readers.dbmate = schema_migrations("dbmate")
readers["golang-migrate"] = schema_migrations("golang-migrate")
readers.alembic = function(conn, project)
  local t = source_table(conn, project, "alembic_version")
  if not t then return nil, "alembic_version" end
  local r = conn:query(string.format("SELECT version_num FROM %s", t))
  if #r ~= 1 then
    fail(string.format("%s holds %d revisions (alembic branches): orch follows one sequence; baseline by hand with orch baseline --version N", t, #r))
  end
  local v = r[1].version_num:match("^%d+$") and files.parse_version(r[1].version_num)
  if not v then
    fail(string.format("%s is at revision %s, which is not a number: orch cannot tell which migration files that covers " ..
      "(alembic's order lives in its Python files); baseline by hand with orch baseline --version N; nothing was adopted", t, r[1].version_num))
  end
  return { from = t, upto = v, label = "revision " .. r[1].version_num }
end
readers.migration_history = function(conn, project)
  local t = source_table(conn, project, "migration_history")
  if not t then return nil, "migration_history" end
  local rows = {}
  for _, r in ipairs(conn:query(string.format([[SELECT migration_number, migration_name, status,
      extract(epoch FROM applied_at)::float8 AS t FROM %s ORDER BY id]], t))) do
    if r.status == "applied" then
      local v = files.parse_version(r.migration_number)
      if not v then fail(string.format("%s lists migration number '%s' (%s), which is not a number", t, r.migration_number, r.migration_name)) end
      rows[#rows + 1] = { version = v, label = string.format("%s %s", r.migration_number, r.migration_name), t = r.t }
    elseif r.status ~= "rolled_back" then
      fail(string.format("%s says migration %s is '%s'; orch knows 'applied' and 'rolled_back'", t, r.migration_number, tostring(r.status)))
    end
  end
  return { from = t, rows = rows }
end

M.adopt_tools = { "flyway", "knex", "dbmate", "golang-migrate", "alembic", "migration_history" }

--- Take over another tool's history: opts.tool is one of M.adopt_tools
-- (flyway copies its rows, see M.adopt). Each migration the tool applied
-- is mapped to its file on disk (by version, in opts.service, default the
-- files directly in the directory) and recorded in orch's history with the
-- file's checksum; one without a file is refused by name and nothing is
-- adopted. Refused when orch's history already has rows.
function M.adopt_tool(conn, project, opts)
  opts = opts or {}
  if opts.tool == "flyway" then return M.adopt(conn, project, opts) end
  local reader = readers[opts.tool]
  if not reader then
    fail(string.format("orch cannot adopt the history of '%s' (it can: %s)", tostring(opts.tool), table.concat(M.adopt_tools, ", ")), 2)
  end
  local svc = opts.service or ""
  local lc <close> = M.lock(conn, project, opts)
  local got, missing = reader(conn, project)
  if not got then
    fail(string.format("no %s table %s.%s to adopt: is this the right database (and --history-table's schema)?", opts.tool, project.schema, missing))
  end
  M.ensure_history(conn, project)
  local name = M.history_name(conn, project)
  if conn:value(string.format("SELECT count(*) FROM %s", name)) > 0 then
    fail(string.format("cannot adopt %s: %s already has rows", got.from, name))
  end
  local by_version = {}
  for _, e in ipairs(project.versioned) do if e.service == svc then by_version[e.version_text] = e end end
  local where = project.dir .. (svc ~= "" and ("/" .. svc) or "")
  local chosen = {}
  if got.upto then
    local vt = files.version_string(got.upto)
    if not by_version[vt] then
      fail(string.format("%s is at %s, but %s has no migration with version %s: add its file, or baseline by hand " ..
        "with orch baseline --version N; nothing was adopted", got.from, got.label, where, vt))
    end
    for _, e in ipairs(project.versioned) do
      if e.service == svc and files.compare(e.version, got.upto) <= 0 then chosen[#chosen + 1] = { e = e } end
    end
  else
    for _, r in ipairs(got.rows) do
      local vt = files.version_string(r.version)
      local e = by_version[vt]
      if not e then
        fail(string.format("%s lists %s as applied, but %s has no migration with version %s: add its file (any name with " ..
          "that version), or baseline by hand with orch baseline --version N; nothing was adopted", got.from, r.label, where, vt))
      end
      chosen[#chosen + 1] = { e = e, t = r.t }
    end
  end
  conn:tx(function()
    for _, c in ipairs(chosen) do
      record(conn, project, c.e, { version = c.e.version_text, type = type_of(c.e), checksum = c.e.checksum,
        run_id = opts.run_id or ("adopted-from-" .. opts.tool), success = true, started = c.t or sys.now(), finished = c.t, ms = 0 })
    end
  end)
  return { rows = #chosen, from = got.from, tool = opts.tool }
end

--- Repair the history: remove failed rows; with accept_changed, store the
-- current checksum of edited applied files; with forget_missing, mark
-- applied migrations whose file is gone as undone. Returns what it did.
function M.repair(conn, project, opts)
  opts = opts or {}
  local lc <close> = M.lock(conn, project, opts)
  local st = M.status(conn, project)
  local name = M.history_name(conn, project)
  local done = { removed_failed = 0, accepted = {}, forgotten = {}, not_accepted = {}, not_forgotten = {} }
  conn:tx(function()
    local r = conn:query(string.format("DELETE FROM %s WHERE NOT success", name))
    done.removed_failed = r.affected or 0
    local flyway = M.flyway_layout(conn, project)
    for _, it in ipairs(st.items) do
      if flyway and it.state == "changed" and opts.accept_changed then
        conn:query(string.format([[UPDATE %s SET checksum = $1 WHERE installed_rank = (SELECT max(installed_rank)
          FROM %s WHERE version = $2 AND success AND type NOT LIKE 'UNDO%%')]], name, name), it.checksum, it.version)
        done.accepted[#done.accepted + 1] = it.script
      elseif flyway and it.state == "missing" and opts.forget_missing and it.version then
        -- as Flyway's own repair does: a DELETE row for the migration whose file is gone
        conn:query(string.format([[INSERT INTO %s (installed_rank, version, description, type, script, checksum, installed_by,
            installed_on, execution_time, success)
          SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, 'DELETE', $3, NULL, current_user, now(), 0, true FROM %s]], name, name),
          it.version, it.description, it.script)
        done.forgotten[#done.forgotten + 1] = it.script
      elseif it.state == "changed" and opts.accept_changed then
        conn:query(string.format([[UPDATE %s SET checksum = $1 WHERE installed_rank = (SELECT max(installed_rank)
          FROM %s WHERE service = $2 AND version = $3 AND success AND type NOT LIKE 'UNDO%%')]], name, name),
          it.checksum, it.service, it.version)
        done.accepted[#done.accepted + 1] = it.script
      elseif it.state == "missing" and opts.forget_missing and it.version then
        conn:query(string.format([[INSERT INTO %s (service, version, description, type, script, success, run_id, finished_on, error)
          VALUES ($1, $2, $3, 'UNDO_SQL', $4, true, $5, now(), 'forgotten by orch repair: file missing')]], name),
          it.service, it.version, it.description, it.script, opts.run_id)
        done.forgotten[#done.forgotten + 1] = it.script
      elseif it.state == "changed" then
        done.not_accepted[#done.not_accepted + 1] = it.script
      elseif it.state == "missing" and it.version then
        done.not_forgotten[#done.not_forgotten + 1] = it.script
      end
    end
  end)
  return done
end

--- Drop every object in the database's non-system schemas (and the
-- history). Refused unless opts.allow is true (the environment must say so).
function M.clean(conn, project, opts)
  opts = opts or {}
  if not opts.allow then
    fail("clean drops every object in the database and is refused unless the environment allows it " ..
      "(allow_clean = true in orch.env.lua, or ORCH_ALLOW_CLEAN=1 for a throwaway database)")
  end
  local lc <close> = M.lock(conn, project, opts)
  local schemas = conn:query([[SELECT nspname FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema' ORDER BY 1]])
  conn:tx(function()
    for _, s in ipairs(schemas) do
      conn:exec("DROP SCHEMA " .. conn:quote_ident(s.nspname) .. " CASCADE")
    end
    conn:exec("CREATE SCHEMA public")
  end)
  local dropped = {}
  for i, s in ipairs(schemas) do dropped[i] = s.nspname end
  return { schemas = dropped }
end

-- orch new in the brief's layouts: SERVICE/schema|data|seeds/ (default
-- schema/) and its undo in rollback/ under the same name, or numbered files
-- directly in the directory (brief 002: a Lua file has apply and rollback).
-- Names follow the ones already there: 20240101_001_x (today's date, the
-- next sequence of that date in the whole project) or 001_x (the next
-- number, as wide as the others).
local function new_in_folders(dir, target, name, opts)
  local folder = opts.folder
  if not folder then
    local st = sys.stat(target .. "/schema")
    folder = st and st.type == "directory" and "schema" or nil
  end
  local here = folder and (target .. "/" .. folder) or target
  local all = files.scan(dir, { layout = require("orch.env").migrations().layout })
  local naming, maxn, width = nil, 0, 3
  for _, e in ipairs(all) do
    if e.service == (opts.service or "") and e.naming ~= "flyway" then
      naming = naming or e.naming
      if e.naming == "sequential" then
        maxn = math.max(maxn, e.version[1])
        width = math.max(width, #e.name:match("^%d+"))
      end
    end
  end
  naming = naming or "timestamp"
  local desc = name:gsub("[ -]", "_")
  local stem
  if naming == "timestamp" then
    local today = math.tointeger(tonumber(os.date("!%Y%m%d")))
    local seq = 0
    for _, e in ipairs(all) do
      if e.naming == "timestamp" and e.version[1] == today then seq = math.max(seq, e.version[2] or 0) end
    end
    stem = string.format("%d_%03d_%s", today, seq + 1, desc)
  else
    stem = string.format("%0" .. width .. "d_%s", maxn + 1, desc)
  end
  local ext = opts.lua and "lua" or "sql"
  sys.mkdir_p(here)
  local up = here .. "/" .. stem .. "." .. ext
  if sys.exists(up) then fail(up .. " already exists") end
  local function write(path, text)
    local f = assert(io.open(path, "w")); f:write(text); f:close()
  end
  if opts.lua then
    write(up, "-- " .. name .. "\nreturn {\n  apply = function(db, ctx)\n  end,\n  rollback = function(db, ctx)\n  end,\n}\n")
    return { up }
  end
  write(up, string.format("-- Migration: %s\n-- Service: %s\n-- Date: %s\n-- Dependencies: none\n\nBEGIN;\n\nCOMMIT;\n",
    name, opts.service or "", os.date("!%Y-%m-%d")))
  local rb = sys.stat(target .. "/rollback")
  if not folder and not (rb and rb.type == "directory") then return { up } end
  sys.mkdir_p(target .. "/rollback")
  local undo = target .. "/rollback/" .. stem .. ".sql"
  write(undo, string.format("-- Rollback: %s\n-- Service: %s\n-- Date: %s\n\nBEGIN;\n\nCOMMIT;\n", name, opts.service or "", os.date("!%Y-%m-%d")))
  return { up, undo }
end

--- Create the next migration file (and its undo) in dir. opts: service,
-- lua (a .lua data migration). Returns the paths created.
function M.new(dir, name, opts)
  opts = opts or {}
  if not name or not name:match("^[%w][%w_ -]*$") then
    fail("a migration name is letters, digits, spaces, '-' and '_' (e.g. add_ticket_priority)", 2)
  end
  local target = opts.service and (dir .. "/" .. opts.service) or dir
  if opts.folder and not (files.folders[opts.folder] and opts.folder ~= "rollback") then
    fail(string.format("--folder %s: a migration goes in schema/, data/ or seeds/ (its undo goes in rollback/ by itself)", opts.folder), 2)
  end
  local st = sys.stat(target .. "/schema")
  if opts.folder or (st and st.type == "directory") then
    return new_in_folders(dir, target, name, opts)
  end
  local numbered
  for _, f in ipairs(sys.listdir(target) or {}) do
    local ok, e = pcall(files.parse_name, f, target .. "/" .. f)
    if ok and e and e.naming ~= "flyway" then numbered = true end
  end
  if numbered then return new_in_folders(dir, target, name, opts) end
  sys.mkdir_p(target)
  local max, stamp = nil, false
  for _, f in ipairs(sys.listdir(target) or {}) do
    local ok, e = pcall(files.parse_name, f, target .. "/" .. f)
    if ok and e and e.version then
      if not max or files.compare(e.version, max) > 0 then max = e.version end
      if e.version[1] >= 19000000 then stamp = true end
    end
  end
  local v
  if stamp then v = os.date("!%Y%m%d%H%M%S") else v = tostring(((max and max[1]) or 0) + 1) end
  local ext = opts.lua and "lua" or "sql"
  local desc = name:gsub("[ -]", "_")
  local up = string.format("%s/V%s__%s.%s", target, v, desc, ext)
  if sys.exists(up) then fail(up .. " already exists") end
  local body
  if opts.lua then
    body = "-- " .. name .. "\nreturn {\n  -- transaction = false,  -- commit each batch on its own (large tables)\n" ..
      "  up = function(db, ctx)\n    -- ctx.batch { table = \"t\", key = \"id\", size = 1000, set = \"col = expr\", where = \"col IS NULL\" }\n  end,\n" ..
      "  down = function(db, ctx)\n  end,\n}\n"
    local f = assert(io.open(up, "w")); f:write(body); f:close()
    return { up }
  end
  local f = assert(io.open(up, "w"))
  f:write("-- " .. name .. "\n")
  f:close()
  local undo = string.format("%s/U%s__%s.sql", target, v, desc)
  f = assert(io.open(undo, "w"))
  f:write("-- undo of V" .. v .. ": reverse every statement of the migration, newest first\n")
  f:close()
  return { up, undo }
end

-- ================================================================ output

local function width(s) return s:find("[\128-\255]") and (utf8.len(s) or #s) or #s end
local function pad(s, n, w) s = tostring(s or ""); return s .. string.rep(" ", math.max(0, n - (w or width(s)))) end

--- A table for people: one line per migration.
function M.format_status(st, project)
  local head = { "Version", "Description", "Type", "State", "Installed on", "ms" }
  local rows = {}
  for _, it in ipairs(st.items) do
    local ver = it.version and ((it.service ~= "" and (it.service .. ":") or "") .. it.version) or
      ((it.service ~= "" and (it.service .. ":") or "") .. "R")
    rows[#rows + 1] = { ver, it.description, it.type, it.state, (it.installed_on or ""):sub(1, 19),
                        it.execution_time and tostring(it.execution_time) or "" }
  end
  local w = {}
  for i, h in ipairs(head) do w[i] = #h end
  local cw = {}
  for _, r in ipairs(rows) do
    local ws = {}
    for i, c in ipairs(r) do ws[i] = width(c); if ws[i] > w[i] then w[i] = ws[i] end end
    cw[r] = ws
  end
  local out = {}
  local plain = not log.color
  local fmt = {}
  for i = 1, #head do fmt[i] = "%-" .. w[i] .. "s" end
  fmt = table.concat(fmt, "  ")
  local function line(r)
    local ws = cw[r]
    if plain and ws then
      -- every cell is as wide as its bytes (no multi-byte characters, no colour): one format
      local ascii = true
      for i, c in ipairs(r) do if ws[i] ~= #c then ascii = false break end end
      if ascii then out[#out + 1] = string.format(fmt, r[1], r[2], r[3], r[4], r[5], r[6]) return end
    end
    local cells = {}
    for i, c in ipairs(r) do
      local text = pad(c, w[i], ws and ws[i])
      if i == 4 then
        local kind = (c == "applied" or c == "baseline") and "ok" or (c == "pending" or c == "outdated") and "notice"
          or (c == "skipped" or c == "below_baseline") and "debug" or "error"
        text = log.paint(kind, text)
      end
      cells[i] = text
    end
    out[#out + 1] = table.concat(cells, "  ")
  end
  line(head)
  local sep = {}
  for i = 1, #head do sep[i] = string.rep("-", w[i]) end
  out[#out + 1] = table.concat(sep, "  ")
  for _, r in ipairs(rows) do line(r) end
  for _, it in ipairs(st.items) do
    if it.message and it.state ~= "skipped" and it.state ~= "out_of_order" then
      out[#out + 1] = string.format("%s %s: %s", log.paint("warn", "!"), it.script or it.key, it.message)
    end
  end
  local parts = {}
  for _, k in ipairs { "applied", "pending", "outdated", "failed", "changed", "missing", "out_of_order", "future", "skipped" } do
    if st.summary[k] then parts[#parts + 1] = string.format("%d %s", st.summary[k], k) end
  end
  out[#out + 1] = ""
  out[#out + 1] = (#parts > 0 and table.concat(parts, ", ") or "no migrations") .. " (history: " .. st.history .. ")"
  return table.concat(out, "\n")
end

--- The latest applied version of a service ("" by default), or nil.
function M.current_version(conn, project, service, st)
  st = st or M.status(conn, project)   -- a caller that has the status already passes it
  local best
  for _, it in ipairs(st.items) do
    if (it.state == "applied" or it.state == "baseline") and it.version and (it.service or "") == (service or "") then
      local v = files.parse_version(it.version)
      if not best or files.compare(v, best) > 0 then best = v end
    end
  end
  return best and files.version_string(best)
end

return M
