--- orch.backup.catalog.database: the entries about the database itself,
-- where pg_dump puts them in a custom archive (right after the session
-- settings), so that `pg_restore -C` recreates the database as it was:
--
--   DATABASE             CREATE DATABASE with its encoding, locale and
--                        tablespace, owned by the database's owner
--   COMMENT              COMMENT ON DATABASE          (tag "DATABASE name")
--   SECURITY LABEL       SECURITY LABEL ON DATABASE   (tag "DATABASE name")
--   ACL                  GRANT / REVOKE ON DATABASE   (tag "DATABASE name")
--   DATABASE PROPERTIES  CONNECTION LIMIT, IS_TEMPLATE, ALTER DATABASE ...
--                        SET and ALTER ROLE ... IN DATABASE ... SET
--
-- pg_restore runs all of them only with --create (-C): a restore into an
-- existing database keeps that database's own. orch restore applies them to
-- the database a --swap creates, and names them when it leaves them out
-- (see orch.backup.dbprops). The CREATE DATABASE text uses the options the
-- source server has (LOCALE_PROVIDER from 15 on, ICU_RULES from 16,
-- BUILTIN_LOCALE from 17), so it runs on a server of the same major.
local decor = require "orch.backup.catalog.decor"

local DB = {}

-- Settings whose value is a list of names: each element is quoted on its
-- own (as pg_dump's list of GUC_LIST_QUOTE variables).
local LIST_QUOTE = { search_path = true, temp_tablespaces = true, session_preload_libraries = true,
  shared_preload_libraries = true, local_preload_libraries = true, unix_socket_directories = true }

-- A setting's name as SET takes it: bare when it is a plain (or dotted
-- custom) name, quoted otherwise.
local function setting_name(cat, name)
  for part in (name .. "."):gmatch("([^.]*)%.") do
    if not part:match("^[a-z_][a-z0-9_]*$") then return cat:q(name) end
  end
  return name
end

-- The elements of a list-valued setting as the server stores it
-- ('"$user", public'): split at commas outside double quotes, trimmed,
-- double quotes removed.
local function split_list(value)
  local out, cur, i, quoted = {}, {}, 1, false
  while i <= #value do
    local ch = value:sub(i, i)
    if quoted then
      if ch == '"' then
        if value:sub(i + 1, i + 1) == '"' then cur[#cur + 1] = '"'; i = i + 1 else quoted = false end
      else cur[#cur + 1] = ch end
    elseif ch == '"' then quoted = true
    elseif ch == "," then out[#out + 1] = table.concat(cur):match("^%s*(.-)%s*$"); cur = {}
    else cur[#cur + 1] = ch end
    i = i + 1
  end
  out[#out + 1] = table.concat(cur):match("^%s*(.-)%s*$")
  return out
end

--- The SET clause of one stored setting ("name=value"): "SET name TO 'value'".
function DB.set_clause(cat, cfg)
  local name, value = cfg:match("^([^=]*)=(.*)$")
  if not name then name, value = cfg, "" end
  local v
  if LIST_QUOTE[name:lower()] and value ~= "" then
    local items = {}
    for _, x in ipairs(split_list(value)) do items[#items + 1] = cat:lit(x) end
    v = table.concat(items, ", ")
  else
    v = cat:lit(value)
  end
  return string.format("SET %s TO %s", setting_name(cat, name), v)
end

-- The CREATE DATABASE statement of the database described by row d.
local function create_statement(cat, qname, d)
  local p = { "CREATE DATABASE " .. qname .. " WITH TEMPLATE = template0" }
  p[#p + 1] = "ENCODING = " .. cat:lit(d.encoding)
  local provider = d.locprovider or "c"
  if cat:since(150000) then
    p[#p + 1] = "LOCALE_PROVIDER = " .. ({ c = "libc", i = "icu", b = "builtin" })[provider]
  end
  if d.datcollate == d.datctype then
    p[#p + 1] = "LOCALE = " .. cat:lit(d.datcollate)
  else
    p[#p + 1] = "LC_COLLATE = " .. cat:lit(d.datcollate)
    p[#p + 1] = "LC_CTYPE = " .. cat:lit(d.datctype)
  end
  if d.loclocale and provider == "i" then p[#p + 1] = "ICU_LOCALE = " .. cat:lit(d.loclocale) end
  if d.loclocale and provider == "b" then p[#p + 1] = "BUILTIN_LOCALE = " .. cat:lit(d.loclocale) end
  if d.icurules then p[#p + 1] = "ICU_RULES = " .. cat:lit(d.icurules) end
  if d.tablespace and d.tablespace ~= "pg_default" then p[#p + 1] = "TABLESPACE = " .. cat:q(d.tablespace) end
  return table.concat(p, " ") .. ";\n"
end

--- The database-level entries (without ids) in file order; the first is
-- the DATABASE entry, the others depend on it. Nothing when
-- the caller skips kind "database" (then cat.skipped records it).
function DB.entries(cat)
  local loc = "NULL::\"char\" AS locprovider, NULL::text AS loclocale, NULL::text AS icurules"
  if cat:since(170000) then loc = "d.datlocprovider AS locprovider, d.datlocale AS loclocale, d.daticurules AS icurules"
  elseif cat:since(160000) then loc = "d.datlocprovider AS locprovider, d.daticulocale AS loclocale, d.daticurules AS icurules"
  elseif cat:since(150000) then loc = "d.datlocprovider AS locprovider, d.daticulocale AS loclocale, NULL::text AS icurules" end
  local d = cat:query([[SELECT d.oid, d.datname, d.datdba, pg_catalog.pg_get_userbyid(d.datdba) AS owner,
      pg_catalog.pg_encoding_to_char(d.encoding) AS encoding, d.datcollate, d.datctype, d.datistemplate, d.datconnlimit,
      (SELECT t.spcname FROM pg_catalog.pg_tablespace t WHERE t.oid = d.dattablespace) AS tablespace,
      pg_catalog.shobj_description(d.oid, 'pg_database') AS comment, ]] .. loc .. [[
    FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()]])[1]
  if cat:skipping("database") then
    cat.skipped[#cat.skipped + 1] = { key = "pg_database:" .. d.oid, kind = "database", desc = "DATABASE", tag = d.datname }
    return {}
  end
  local qname = cat:q(d.datname)
  local owner = (not cat.opts.no_owner) and d.owner or nil
  local label, ltag = "DATABASE " .. qname, "DATABASE " .. d.datname
  local out = {}
  local function add(e) e.owner = owner; out[#out + 1] = e; return e end
  add { desc = "DATABASE", tag = d.datname, section = "pre-data", defn = create_statement(cat, qname, d),
    drop = "DROP DATABASE " .. qname .. ";\n", tableoid = "1262", oid = tostring(d.oid) }
  if d.comment then
    add { desc = "COMMENT", tag = ltag, section = "none", defn = string.format("COMMENT ON %s IS %s;\n", label, cat:lit(d.comment)) }
  end
  local labels = {}
  for _, r in ipairs(cat:query([[SELECT provider, label FROM pg_catalog.pg_shseclabel
      WHERE classoid = 'pg_catalog.pg_database'::pg_catalog.regclass AND objoid = $1 ORDER BY provider]], d.oid)) do
    labels[#labels + 1] = string.format("SECURITY LABEL FOR %s ON %s IS %s;\n", cat:q(r.provider), label, cat:lit(r.label))
  end
  if #labels > 0 then add { desc = "SECURITY LABEL", tag = ltag, section = "none", defn = table.concat(labels) } end
  if not cat.opts.no_acl then
    local items = cat:query([[SELECT 'cur' AS which, a.grantor, a.grantee, a.privilege_type, a.is_grantable
        FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a WHERE d.oid = $1 AND d.datacl IS NOT NULL
      UNION ALL SELECT 'base', a.grantor, a.grantee, a.privilege_type, a.is_grantable
        FROM pg_catalog.pg_database d, pg_catalog.aclexplode(pg_catalog.acldefault('d', d.datdba)) a WHERE d.oid = $1 AND d.datacl IS NOT NULL]], d.oid)
    local cur, base = {}, {}
    for _, r in ipairs(items) do if r.which == "cur" then cur[#cur + 1] = r else base[#base + 1] = r end end
    local text = #cur + #base > 0 and decor.acl_commands(cat, cur, base, label, d.datdba) or ""
    if text ~= "" then add { desc = "ACL", tag = ltag, section = "none", defn = text } end
  end
  local props = {}
  if d.datconnlimit ~= -1 then props[#props + 1] = string.format("ALTER DATABASE %s CONNECTION LIMIT = %d;\n", qname, d.datconnlimit) end
  local drop = ""
  if d.datistemplate then
    props[#props + 1] = string.format("ALTER DATABASE %s IS_TEMPLATE = true;\n", qname)
    -- a template cannot be dropped: pg_restore --clean takes the marking away first
    drop = string.format("ALTER DATABASE %s IS_TEMPLATE = false;\n", qname)
  end
  for _, r in ipairs(cat:query([[SELECT s.setrole, CASE WHEN s.setrole <> 0 THEN pg_catalog.pg_get_userbyid(s.setrole) END AS role, c.cfg
      FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) WITH ORDINALITY c(cfg, n)
      WHERE s.setdatabase = $1 ORDER BY s.setrole <> 0, 2, c.n]], d.oid)) do
    if r.setrole == 0 then
      props[#props + 1] = string.format("ALTER DATABASE %s %s;\n", qname, DB.set_clause(cat, r.cfg))
    else
      props[#props + 1] = string.format("ALTER ROLE %s IN DATABASE %s %s;\n", cat:q(r.role), qname, DB.set_clause(cat, r.cfg))
    end
  end
  if #props > 0 then
    add { desc = "DATABASE PROPERTIES", tag = d.datname, section = "pre-data", defn = table.concat(props), drop = drop }
  end
  return out
end

return DB
