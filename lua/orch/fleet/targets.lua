--- orch.fleet.targets: which databases a fleet rollout runs over. An
-- environment's `targets` says it, in one of three forms:
--
--   targets = { "tenant_a", "tenant_b",                          -- database names on the environment's server
--               "postgresql://app@shard2.internal/tickets",      -- a URL (or a conninfo "host=... dbname=...")
--               { name = "eu", service = "tickets_eu" },         -- a libpq service
--               { name = "acme", dbname = "tenant_acme", vars = { plan = "gold" } } },
--   targets = { file = "tenants.txt" },   -- one target a line: [NAME] TARGET [KEY=VALUE ...]; or a .json list as above
--   targets = { query = "SELECT name, dbname, plan FROM tenants WHERE active ORDER BY name",
--               directory = { env = "DIRECTORY_URL" } },   -- (or service =; default: the environment's own database)
--
-- A query's rows name their database in a column url, service or dbname;
-- name is optional, every other column is a variable. Each target resolves
-- to { name, conn (what the run connects to), where (printable, no
-- password), kind, vars }: its name is its backup namespace and must be a
-- plain word, unique in the fleet. Anything orch cannot read is an error
-- naming the environment, the entry and what to write instead.
local sys = require "orch.sys"
local log = require "orch.log"
local json = require "orch.json"

local T = {}

local NAME_PATTERN = "^[%w][%w._-]*$"

local function fail(where, msg) sys.error(string.format("%s: %s", where, msg), 1) end

-- A conninfo value in single quotes (libpq's escaping: \ and ').
local function conninfo_quote(v) return "'" .. tostring(v):gsub("[\\']", "\\%0") .. "'" end

local function urlencode(s)
  return (tostring(s):gsub("[^%w._~-]", function(c) return string.format("%%%02X", c:byte()) end))
end

--- The connection string for database dbname on the server that base
-- (a URL, a conninfo string, or nil for libpq's defaults) reaches: every
-- other parameter of base is kept (host, port, user, password, sslmode).
function T.on_server(base, dbname)
  if base and base:match("^%a[%w+.-]*://") then
    local prefix, query = base:match("^(%a[%w+.-]*://[^/?]*)/?[^?]*(.*)$")
    return prefix .. "/" .. urlencode(dbname) .. query
  end
  local kv = "dbname=" .. conninfo_quote(dbname)
  if base and base ~= "" then return base .. " " .. kv end
  return kv
end

local function is_conn_string(s)
  return s:match("^%a[%w+.-]*://") or s:match("^%s*[%a_]+%s*=")
end

-- A name for a target that did not say one: the database it names.
local function derive_name(t)
  if t.dbname then return t.dbname end
  if t.service then return t.service end
  local s = t.url
  local path = s:match("^%a[%w+.-]*://[^/?]*/([^?]+)")
  if path then return (path:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end
  local db = s:match("dbname%s*=%s*'([^']*)'") or s:match("dbname%s*=%s*([^%s]+)")
  if db then return db end
  local host = s:match("^%a[%w+.-]*://[^@/]*@([^/:?]+)") or s:match("^%a[%w+.-]*://([^/:?]+)") or s:match("host%s*=%s*([^%s]+)")
  return host
end

-- One entry (a string or a table) -> a target, or an error naming where.
local function entry(e, where, base)
  local t
  if type(e) == "string" then
    if e == "" then fail(where, "is an empty string; write a database name, a URL or { name =, service = }") end
    if is_conn_string(e) then t = { url = e } else t = { dbname = e } end
  elseif type(e) == "table" then
    local known = { name = true, url = true, service = true, dbname = true, vars = true }
    for k in pairs(e) do
      if not known[k] then fail(where, string.format("'%s' is not a target setting orch knows (a target takes name, url, service, dbname, vars)", tostring(k))) end
    end
    local n = (e.url and 1 or 0) + (e.service and 1 or 0) + (e.dbname and 1 or 0)
    if n ~= 1 then
      fail(where, n == 0 and "names no database: give it one of url = \"postgresql://...\", service = \"NAME\" or dbname = \"NAME\""
        or "names its database more than one way: give it only one of url, service, dbname")
    end
    for _, k in ipairs { "name", "url", "service", "dbname" } do
      if e[k] ~= nil and (type(e[k]) ~= "string" or e[k] == "") then fail(where, string.format("%s is a %s; it must be a non-empty string", k, type(e[k]))) end
    end
    if e.vars ~= nil and type(e.vars) ~= "table" then fail(where, "vars must be a table { KEY = \"value\" }") end
    t = { name = e.name, url = e.url, service = e.service, dbname = e.dbname }
    t.vars = {}
    for k, v in pairs(e.vars or {}) do
      if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then fail(where, string.format("vars key %s is not a plain name (letters, digits, _)", tostring(k))) end
      if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
        fail(where, string.format("vars.%s is a %s; a variable is a string, a number or a boolean", k, type(v)))
      end
      t.vars[k] = tostring(v)
    end
  else
    fail(where, string.format("is a %s; a target is a database name, a URL or a table { name =, dbname = | url = | service =, vars = }", type(e)))
  end
  t.vars = t.vars or {}
  t.name = t.name or derive_name(t)
  if not t.name or not t.name:match(NAME_PATTERN) then
    fail(where, string.format("%s is not usable as a target name (it names the target's backup directory): " ..
      "give the target a name of letters, digits, '.', '_' or '-' (name = \"...\")", t.name and ("'" .. t.name .. "'") or "the target's database"))
  end
  if t.dbname then
    t.conn = T.on_server(base, t.dbname)
    t.kind = "dbname"
  elseif t.service then
    t.conn = "service=" .. conninfo_quote(t.service)
    t.kind = "service"
  else
    t.conn = t.url
    t.kind = "url"
    log.secret(t.url:match("://[^:/@]*:([^@]+)@"))
    local pw = t.url:match("password%s*=%s*'([^']*)'") or t.url:match("password%s*=%s*([^%s']+)")
    log.secret(pw)
  end
  t.where = log.redact(t.conn)
  return t
end

-- A text file: one target a line, `[NAME] TARGET [KEY=VALUE ...]`; blank
-- lines and lines starting with # are skipped. TARGET is one word: a
-- database name, a URL, service=NAME or dbname=NAME (a conninfo with
-- spaces goes in a .json file).
local function read_text(path, where)
  local out = {}
  local f, err = io.open(path, "r")
  if not f then fail(where, "cannot read the targets file: " .. tostring(err)) end
  local n = 0
  for line in f:lines() do
    n = n + 1
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local words = {}
      for w in line:gmatch("%S+") do words[#words + 1] = w end
      local e = { vars = {} }
      local i = 1
      -- NAME TARGET ... when the second word is not KEY=VALUE
      if words[2] and not (words[2]:match("^[%a_][%w_]*=") and not words[2]:match("^service=") and not words[2]:match("^dbname=")) then
        e.name = words[1]
        i = 2
      end
      local target = words[i]
      if target:match("^service=") then e.service = target:sub(9)
      elseif target:match("^dbname=") then e.dbname = target:sub(8)
      elseif is_conn_string(target) then e.url = target
      else e.dbname = target end
      for j = i + 1, #words do
        local k, v = words[j]:match("^([%a_][%w_]*)=(.*)$")
        if not k then fail(string.format("%s line %d", path, n), string.format("'%s' is not KEY=VALUE (a line is [NAME] TARGET [KEY=VALUE ...])", words[j])) end
        e.vars[k] = v
      end
      out[#out + 1] = { e = e, where = string.format("%s line %d", path, n) }
    end
  end
  f:close()
  return out
end

local function read_file(spec, where, project_dir)
  local path = spec.file
  if type(path) ~= "string" or path == "" then fail(where, "targets.file must be a path") end
  if path:sub(1, 1) ~= "/" and project_dir then path = project_dir .. "/" .. path end
  if not sys.exists(path) then fail(where, string.format("targets.file %s does not exist", path)) end
  if path:match("%.json$") then
    local f = assert(io.open(path, "r"))
    local text = f:read("a")
    f:close()
    local ok, list = pcall(json.decode, text)
    if not ok then fail(where, string.format("targets file %s is not valid JSON: %s", path, tostring(list))) end
    if type(list) ~= "table" then fail(where, string.format("targets file %s must hold a JSON list of targets", path)) end
    local out = {}
    for i, e in ipairs(list) do out[i] = { e = e, where = string.format("%s entry %d", path, i) } end
    return out
  end
  return read_text(path, where)
end

local function read_query(spec, where, e)
  local db = require "orch.db"
  local envmod = require "orch.env"
  local dir = spec.directory or {}
  if type(dir) ~= "table" then fail(where, "targets.directory must be a table { env = \"VAR\" } or { service = \"NAME\" }") end
  for k in pairs(dir) do
    if k ~= "env" and k ~= "service" then fail(where, string.format("targets.directory.%s is not a setting orch knows (it takes env, service)", tostring(k))) end
  end
  local conn
  if dir.env then
    conn = os.getenv(dir.env)
    if (not conn or conn == "") and not dir.service then
      fail(where, string.format("targets.directory reads its database from %s, which is not set: set it", dir.env))
    end
  end
  if (not conn or conn == "") and dir.service then conn = "service=" .. conninfo_quote(dir.service) end
  if not conn or conn == "" then conn = envmod.command_database(e) end
  if conn then log.secret(conn:match("://[^:/@]*:([^@]+)@")) end
  local ok, c = pcall(db.connect, conn)
  if not ok then fail(where, string.format("cannot connect to the targets directory database (%s): %s", log.redact(conn or "libpq defaults"), log.redact(tostring(c)))) end
  local okq, rows = pcall(c.query, c, spec.query)
  c:close()
  if not okq then fail(where, string.format("the targets query failed: %s", log.redact(tostring(rows)))) end
  local cols = {}
  for _, n in ipairs(rows.columns) do cols[n] = true end
  if not (cols.url or cols.service or cols.dbname) then
    fail(where, "the targets query returns no column url, service or dbname: name each target's database in one of them (SELECT ... AS dbname)")
  end
  local out = {}
  for i, r in ipairs(rows) do
    local en = { vars = {} }
    for _, n in ipairs(rows.columns) do
      local v = r[n]
      if n == "name" or n == "url" or n == "service" or n == "dbname" then en[n] = v
      elseif v ~= nil then en.vars[n] = tostring(v) end
    end
    out[#out + 1] = { e = en, where = string.format("targets query row %d", i) }
  end
  return out
end

--- The fleet of environment e: a list of targets in the order the
-- environment gives them. Raises (exit 1) naming what is wrong; an
-- environment without targets is a usage error (exit 2: the --env named
-- one that is not a fleet, as for --fleet-target) saying how to add them.
function T.load(e, opts)
  opts = opts or {}
  local file = os.getenv("ORCH_ENV_FILE") or "orch.env.lua"
  local where = string.format("%s: environment %s", file, e.name)
  local spec = e.targets
  if spec == nil then
    sys.error(string.format("%s has no targets: a fleet needs them, e.g. targets = { \"tenant_a\", \"tenant_b\" } " ..
      "(database names on its server), targets = { file = \"tenants.txt\" } or targets = { query = \"SELECT name, dbname FROM tenants\" }", where), 2)
  end
  if type(spec) ~= "table" then fail(where, string.format("targets is a %s; it must be a list, { file = PATH } or { query = SQL }", type(spec))) end
  local raw
  if spec.file ~= nil or spec.query ~= nil then
    for k in pairs(spec) do
      if k ~= "file" and k ~= "query" and k ~= "directory" then
        fail(where, string.format("targets.%s is not a setting orch knows (targets takes a list, or file =, or query = with directory =)", tostring(k)))
      end
    end
    if spec.file and spec.query then fail(where, "targets has both file and query: choose one") end
    if spec.file then raw = read_file(spec, where, opts.project_dir)
    else
      if type(spec.query) ~= "string" then fail(where, "targets.query must be SQL text") end
      raw = read_query(spec, where, e)
    end
  else
    raw = {}
    for k in pairs(spec) do
      if math.type(k) ~= "integer" then fail(where, string.format("targets.%s is not a setting orch knows (targets takes a list, or file =, or query =)", tostring(k))) end
    end
    for i, x in ipairs(spec) do raw[i] = { e = x, where = string.format("%s: targets[%d]", where, i) } end
  end
  -- database names live on the environment's own server
  local base
  local need_base = false
  for _, r in ipairs(raw) do
    if type(r.e) == "string" and not is_conn_string(r.e) then need_base = true end
    if type(r.e) == "table" and r.e.dbname then need_base = true end
  end
  if need_base then base = require("orch.env").command_database(e) end
  local out, seen = {}, {}
  for _, r in ipairs(raw) do
    local t = entry(r.e, r.where, base)
    if seen[t.name] then
      fail(r.where, string.format("the target name '%s' is used twice (also %s): names must be unique, they are the targets' backup directories", t.name, seen[t.name]))
    end
    seen[t.name] = r.where
    out[#out + 1] = t
  end
  if #out == 0 then fail(where, "targets lists no database: the fleet is empty") end
  return out
end

--- The targets named in only (a list of names), in the fleet's order. A
-- name the fleet does not have is a usage error (exit 2) listing the
-- nearest ones.
function T.only(targets, only)
  if not only or #only == 0 then return targets end
  local by, want = {}, {}
  for _, t in ipairs(targets) do by[t.name] = t end
  for _, n in ipairs(only) do
    if not by[n] then
      local names = {}
      for i = 1, math.min(#targets, 8) do names[#names + 1] = targets[i].name end
      require("orch.args").usage_error("fleet", string.format("--only %s: the fleet has no target of that name (it has %d: %s%s)",
        n, #targets, table.concat(names, ", "), #targets > 8 and ", ..." or ""))
    end
    want[n] = true
  end
  local out = {}
  for _, t in ipairs(targets) do if want[t.name] then out[#out + 1] = t end end
  return out
end

return T
