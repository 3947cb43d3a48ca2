--- orch.backup.catalog.decor: what hangs on objects — comments, security
-- labels and privileges — read in bulk and attached to the objects the kind
-- modules registered, by catalog identity (catalog, oid, sub-id).
--
-- An object takes part by naming itself: label ("TABLE app.t", what
-- COMMENT ON and SECURITY LABEL ON take), label_tag ("TABLE t", the archive
-- tag), acl_obj ("TABLE app.t", what GRANT ... ON takes), and for column
-- decorations qname ("app.t") and columns ({ [attnum] = name }). A part
-- that lives inside another object's entry but has its own name (the index
-- behind a PRIMARY KEY) is registered with cat.labels[key] = { target =,
-- label =, label_tag = }.
--
-- Privileges are written as pg_dump writes them: the difference between the
-- object's ACL and its baseline — the initial privileges of pg_init_privs
-- when there are some (extension members, system objects), otherwise the
-- built-in default for its owner (acldefault) — as REVOKEs and GRANTs;
-- grants whose grantor is not the owner run as that grantor. Objects orch
-- does not create (system objects, extension members) still get their
-- changed privileges, in ACL entries of their own.
local sys = require "orch.sys"

local D = {}

-- Catalogs with privileges: oid, owner, ACL column, acldefault's kind, the
-- GRANT object text for objects no kind module registered, and what initdb
-- granted beyond acldefault where pg_init_privs does not record it
-- (information_schema, whose views PUBLIC may read).
local SOURCES = {
  { cat = "pg_class", acl = "relacl", owner = "relowner", kind = "CASE WHEN o.relkind = 'S' THEN 's' ELSE 'r' END",
    obj = "CASE WHEN o.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || o.oid::pg_catalog.regclass::text",
    ns = "o.relnamespace",
    initial = "CASE WHEN o.relnamespace = 'information_schema'::pg_catalog.regnamespace AND o.relkind <> 'S' " ..
      "THEN ARRAY[pg_catalog.makeaclitem(0, o.relowner, 'SELECT', false)] END" },
  { cat = "pg_proc", acl = "proacl", owner = "proowner", kind = "'f'",
    obj = "CASE WHEN o.prokind = 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END || o.oid::pg_catalog.regprocedure::text", ns = "o.pronamespace" },
  { cat = "pg_type", acl = "typacl", owner = "typowner", kind = "'T'",
    obj = "'TYPE ' || pg_catalog.format_type(o.oid, NULL)", ns = "o.typnamespace" },
  { cat = "pg_namespace", acl = "nspacl", owner = "nspowner", kind = "'n'", obj = "'SCHEMA ' || pg_catalog.quote_ident(o.nspname)", ns = "o.oid",
    initial = "CASE WHEN o.nspname = 'information_schema' THEN ARRAY[pg_catalog.makeaclitem(0, o.nspowner, 'USAGE', false)] END" },
  { cat = "pg_language", acl = "lanacl", owner = "lanowner", kind = "'l'", obj = "'LANGUAGE ' || pg_catalog.quote_ident(o.lanname)" },
  { cat = "pg_foreign_data_wrapper", acl = "fdwacl", owner = "fdwowner", kind = "'F'",
    obj = "'FOREIGN DATA WRAPPER ' || pg_catalog.quote_ident(o.fdwname)" },
  { cat = "pg_foreign_server", acl = "srvacl", owner = "srvowner", kind = "'S'", obj = "'FOREIGN SERVER ' || pg_catalog.quote_ident(o.srvname)" },
  { cat = "pg_largeobject_metadata", acl = "lomacl", owner = "lomowner", kind = "'L'", obj = "'LARGE OBJECT ' || o.oid" },
}

local function role_names(cat)
  if cat._roles then return cat._roles end
  local r = { [0] = "PUBLIC" }
  for _, row in ipairs(cat:query("SELECT oid, rolname FROM pg_catalog.pg_roles")) do r[row.oid] = cat:q(row.rolname) end
  cat._roles = r
  return r
end

-- ---------------------------------------------------------------- privileges

--- The GRANT / REVOKE commands that turn the baseline privileges into the
-- current ones. cur and base: lists of { grantor, grantee, privilege, grantable }
-- (role oids, as aclexplode gives them); obj: "TABLE app.t"; owner: the
-- owner's role oid; column: nil, or a quoted column name (column privileges).
-- Returns the SQL text ("" when they are equal).
function D.acl_commands(cat, cur, base, obj, owner, column)
  local names = role_names(cat)
  local function index(list)
    local t = {}
    for _, a in ipairs(list) do t[a.grantor .. "|" .. a.grantee .. "|" .. a.privilege_type] = a end
    return t
  end
  local c, b = index(cur), index(base)
  -- (grantor, grantee, grant option) -> privileges, for revokes and grants
  local groups, order = {}, {}
  local function add(verb, a, option)
    local k = table.concat({ verb, a.grantor, a.grantee, tostring(option) }, "|")
    if not groups[k] then
      groups[k] = { verb = verb, grantor = a.grantor, grantee = a.grantee, option = option, privs = {} }
      order[#order + 1] = k
    end
    local p = groups[k].privs
    p[#p + 1] = column and string.format("%s(%s)", a.privilege_type, column) or a.privilege_type
  end
  for k, a in pairs(b) do
    local now = c[k]
    if not now then add("REVOKE", a, false)
    elseif a.is_grantable and not now.is_grantable then add("REVOKE", a, true) end
  end
  for k, a in pairs(c) do
    local was = b[k]
    if not was then add("GRANT", a, a.is_grantable)
    elseif a.is_grantable and not was.is_grantable then add("GRANT", a, true) end
  end
  table.sort(order, function(x, y)
    local gx, gy = groups[x], groups[y]
    if gx.verb ~= gy.verb then return gx.verb == "REVOKE" end   -- revokes first
    if gx.grantor ~= gy.grantor then return gx.grantor == owner or (gy.grantor ~= owner and gx.grantor < gy.grantor) end
    return x < y
  end)
  local lines = {}
  for _, k in ipairs(order) do
    local g = groups[k]
    table.sort(g.privs)
    local who = names[g.grantee] or ("role " .. g.grantee)
    local line
    if g.verb == "REVOKE" then
      line = string.format("REVOKE %s%s ON %s FROM %s;", g.option and "GRANT OPTION FOR " or "", table.concat(g.privs, ","), obj, who)
    else
      line = string.format("GRANT %s ON %s TO %s%s;", table.concat(g.privs, ","), obj, who, g.option and " WITH GRANT OPTION" or "")
    end
    if g.grantor ~= owner and names[g.grantor] then
      line = string.format("SET SESSION AUTHORIZATION %s;\n%s\nRESET SESSION AUTHORIZATION;", names[g.grantor], line)
    end
    lines[#lines + 1] = line
  end
  return #lines > 0 and (table.concat(lines, "\n") .. "\n") or ""
end

-- The public schema a new database starts with, as aclexplode rows with
-- the schema's current owner in the initial owner's place (ALTER SCHEMA
-- OWNER rewrites the ACL the same way, and pg_init_privs keeps the initial
-- one): USAGE and CREATE for the owner, and USAGE for PUBLIC from 15 on,
-- CREATE too before.
local function public_baseline(cat, owner)
  local b = {}
  local function item(grantee, priv) b[#b + 1] = { grantor = owner, grantee = grantee, privilege_type = priv, is_grantable = false } end
  item(owner, "CREATE"); item(owner, "USAGE"); item(0, "USAGE")
  if not cat:since(150000) then item(0, "CREATE") end
  return b
end
D.public_baseline = public_baseline

-- Every object with a non-default ACL: current and baseline items, by key.
local function load_acls(cat)
  local out = {}
  for _, s in ipairs(SOURCES) do
    local nsfilter = s.ns and string.format([[ AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.oid = %s
        AND (n.nspname ~ '^pg_(toast|temp_|toast_temp_)'))]], s.ns) or ""
    local rows = cat:query(string.format([[
      SELECT o.oid, o.%s AS owner, %s AS obj, 'cur' AS which, a.grantor, a.grantee, a.privilege_type, a.is_grantable
        FROM pg_catalog.%s o, pg_catalog.aclexplode(o.%s) a WHERE o.%s IS NOT NULL %s
      UNION ALL
      SELECT o.oid, o.%s, NULL, 'base', b.grantor, b.grantee, b.privilege_type, b.is_grantable
        FROM pg_catalog.%s o
        LEFT JOIN pg_catalog.pg_init_privs ip ON ip.objoid = o.oid AND ip.classoid = '%s'::pg_catalog.regclass AND ip.objsubid = 0,
        pg_catalog.aclexplode(coalesce(ip.initprivs, pg_catalog.acldefault((%s)::"char", o.%s) || coalesce(%s, '{}'))) b
        WHERE o.%s IS NOT NULL %s]],
      s.owner, s.obj, s.cat, s.acl, s.acl, nsfilter,
      s.owner, s.cat, s.cat, s.kind, s.owner, s.initial or "NULL::pg_catalog.aclitem[]", s.acl, nsfilter))
    for _, r in ipairs(rows) do
      local key = s.cat .. ":" .. r.oid
      local e = out[key]
      if not e then e = { key = key, owner = r.owner, cur = {}, base = {} }; out[key] = e end
      if r.which == "cur" then e.cur[#e.cur + 1] = r; e.obj = r.obj else e.base[#e.base + 1] = r end
    end
  end
  -- the public schema: what a new database has, whoever owns it now (see public_baseline)
  -- (a NULL ACL, after DROP and CREATE SCHEMA public, is the owner's privileges only)
  local pub = cat:query([[SELECT n.oid, n.nspowner, a.grantor, a.grantee, a.privilege_type, a.is_grantable
    FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
    WHERE n.nspname = 'public']])
  if #pub > 0 then
    local key = "pg_namespace:" .. pub[1].oid
    out[key] = { key = key, owner = pub[1].nspowner, cur = pub, base = public_baseline(cat, pub[1].nspowner), obj = "SCHEMA public" }
  end
  -- column privileges (their baseline: none, or pg_init_privs for extension/system columns)
  local rows = cat:query([[
    SELECT a.attrelid, a.attnum, c.relowner AS owner, 'cur' AS which, x.grantor, x.grantee, x.privilege_type, x.is_grantable
      FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid, pg_catalog.aclexplode(a.attacl) x
      WHERE a.attacl IS NOT NULL AND NOT a.attisdropped
    UNION ALL
    SELECT ip.objoid, ip.objsubid, c.relowner, 'base', x.grantor, x.grantee, x.privilege_type, x.is_grantable
      FROM pg_catalog.pg_init_privs ip JOIN pg_catalog.pg_class c ON c.oid = ip.objoid, pg_catalog.aclexplode(ip.initprivs) x
      WHERE ip.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND ip.objsubid > 0]])
  for _, r in ipairs(rows) do
    local key = "pg_class:" .. r.attrelid
    local e = out[key]
    if not e then e = { key = key, owner = r.owner, cur = {}, base = {}, none = true }; out[key] = e end
    e.columns = e.columns or {}
    local col = e.columns[r.attnum]
    if not col then col = { cur = {}, base = {} }; e.columns[r.attnum] = col end
    if r.which == "cur" then col.cur[#col.cur + 1] = r else col.base[#col.base + 1] = r end
  end
  return out
end

-- ---------------------------------------------------------------- attach

-- The object (and the name to use) that decorations of catalog key go to.
local function holder(cat, key)
  local l = cat.labels[key]
  if l then return cat.objects[l.target], l end
  return cat.objects[cat:resolve(key)], nil
end

-- ---------------------------------------------------------------- naming what orch did not register

-- What COMMENT ON / SECURITY LABEL ON take for an object the server
-- identifies as (type, names, args) — pg_identify_object_as_address, with
-- names n1..n3 raw and args joined by ", " (NONE for a missing operand).
-- For decorations of objects no kind module registered, or registered
-- without a label. Raises naming a type it does not know.
local TWO_PART = { table = "TABLE", sequence = "SEQUENCE", view = "VIEW", ["materialized view"] = "MATERIALIZED VIEW",
  ["foreign table"] = "FOREIGN TABLE", index = "INDEX", ["composite type"] = "TYPE", collation = "COLLATION",
  conversion = "CONVERSION", ["statistics object"] = "STATISTICS", ["text search parser"] = "TEXT SEARCH PARSER",
  ["text search dictionary"] = "TEXT SEARCH DICTIONARY", ["text search template"] = "TEXT SEARCH TEMPLATE",
  ["text search configuration"] = "TEXT SEARCH CONFIGURATION" }
local ONE_PART = { schema = "SCHEMA", language = "LANGUAGE", extension = "EXTENSION", ["event trigger"] = "EVENT TRIGGER",
  publication = "PUBLICATION", subscription = "SUBSCRIPTION", role = "ROLE", database = "DATABASE", tablespace = "TABLESPACE",
  ["access method"] = "ACCESS METHOD", ["foreign-data wrapper"] = "FOREIGN DATA WRAPPER", server = "SERVER" }
local ON_TABLE = { rule = "RULE", trigger = "TRIGGER", policy = "POLICY", ["table constraint"] = "CONSTRAINT" }
local ROUTINE = { ["function"] = "FUNCTION", procedure = "PROCEDURE", aggregate = "AGGREGATE" }

function D.address(cat, r)
  local q = function(s) return cat:q(s) end
  local t = r.type
  if TWO_PART[t] then return TWO_PART[t] .. " " .. q(r.n1) .. "." .. q(r.n2) end
  if ONE_PART[t] then return ONE_PART[t] .. " " .. q(r.n1) end
  if t:match(" column$") then return "COLUMN " .. q(r.n1) .. "." .. q(r.n2) .. "." .. q(r.n3) end
  if ON_TABLE[t] then return ON_TABLE[t] .. " " .. q(r.n3) .. " ON " .. q(r.n1) .. "." .. q(r.n2) end
  if ROUTINE[t] then
    local args = r.args or ""
    if t == "aggregate" and args == "" then args = "*" end
    return ROUTINE[t] .. " " .. q(r.n1) .. "." .. q(r.n2) .. "(" .. args .. ")"
  end
  if t == "type" then return "TYPE " .. r.n1 end
  if t == "domain constraint" then return "CONSTRAINT " .. q(r.a1) .. " ON DOMAIN " .. r.n1 end
  if t == "large object" then return "LARGE OBJECT " .. r.n1 end
  if t == "operator" then return "OPERATOR " .. q(r.n1) .. "." .. r.n2 .. " (" .. (r.args or "") .. ")" end
  if t == "operator class" or t == "operator family" then
    return t:upper() .. " " .. q(r.n2) .. "." .. q(r.n3) .. " USING " .. q(r.n1)
  end
  if t == "cast" then return "CAST (" .. r.n1 .. " AS " .. r.a1 .. ")" end
  if t == "transform" then return "TRANSFORM FOR " .. r.n1 .. " LANGUAGE " .. q(r.a1) end
  sys.error(string.format("the backup was not taken: a comment or security label is attached to %s (a %s), and orch does not know " ..
    "how to name that kind of object; please report this", r.identity or "?", t), 1)
end

-- The columns of a decoration query that name its object for D.address.
local ADDRESS_COLS = [[, a.type, a.object_names[1] AS n1, a.object_names[2] AS n2, a.object_names[3] AS n3,
    a.object_args[1] AS a1, pg_catalog.array_to_string(a.object_args, ', ', 'NONE') AS args,
    (pg_catalog.pg_identify_object(%s, %s, %s)).identity,
    EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = %s AND e.objid = %s AND e.deptype = 'e') AS ext_member]]

local function address_cols(cls, oid, sub)
  return string.format(ADDRESS_COLS, cls, oid, sub, cls, oid)
end


-- ---------------------------------------------------------------- attach

--- Read comments, security labels and privileges and attach them:
-- o.decor = list of { desc, tag, defn } written right after o;
-- cat.acl_only = entries for objects orch does not create (system objects,
-- extension members, parts made by another object's DDL): their changed
-- privileges, their security labels, and comments on parts, written at the
-- end, named as the server identifies them.
--
-- Comments on extension members and system objects are not kept: the
-- extension's script and initdb set them, and nothing records which of
-- them a user changed (pg_dump keeps none either). Security labels have no
-- such source, so every label is kept, on any object.
function D.collect(cat)
  for _, o in ipairs(cat.list) do o.decor = o.decor or {} end
  cat.acl_only = {}
  local skipped = {}
  for _, s in ipairs(cat.skipped or {}) do skipped[s.key] = true end
  local function put(o, d) o.decor[#o.decor + 1] = d end
  local function colname(o, sub)
    local n = o.columns and o.columns[sub]
    if not n then return nil end
    return "COLUMN " .. o.qname .. "." .. cat:q(n), "COLUMN " .. (o.tag or "") .. "." .. n
  end
  -- the text COMMENT ON / SECURITY LABEL ON takes for a decoration row, its
  -- tag, and the object it is written after (nil: written at the end)
  local function target_of(r)
    local key = r.cls .. ":" .. r.objoid
    if skipped[key] then return nil end
    local o, l = holder(cat, key)
    if o and o.skipped then return nil end
    if o then
      local label, tag
      if r.objsubid > 0 then label, tag = colname(o, r.objsubid) else label, tag = (l or o).label, (l or o).label_tag end
      if label then return label, tag, o end
    end
    local text = D.address(cat, r)
    return text, (text:gsub('"', "")), o
  end
  local function emit_decor(r, desc, defn_of)
    local label, tag, o = target_of(r)
    if not label then return end
    local d = { desc = desc, tag = tag, defn = defn_of(label) }
    if o then put(o, d) else cat.acl_only[#cat.acl_only + 1] = d end
  end
  -- comments: on user objects (and the public schema, created with every database; large objects, whatever their oid)
  for _, r in ipairs(cat:query([[SELECT d.classoid::pg_catalog.regclass::text AS cls, d.objoid, d.objsubid, d.description]] ..
      address_cols("d.classoid", "d.objoid", "d.objsubid") .. [[
      FROM pg_catalog.pg_description d, pg_catalog.pg_identify_object_as_address(d.classoid, d.objoid, d.objsubid) a
      WHERE d.objoid >= 16384 OR (d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objoid = 2200)
        OR d.classoid = 'pg_catalog.pg_largeobject'::pg_catalog.regclass
      ORDER BY 1, 2, 3]])) do
    local o = holder(cat, r.cls .. ":" .. r.objoid)
    if not r.ext_member and not (o and r.objsubid == 0 and r.description == o.default_comment) then
      emit_decor(r, "COMMENT", function(label) return string.format("COMMENT ON %s IS %s;\n", label, cat:lit(r.description)) end)
    end
  end
  -- security labels: on every object, extension members and system objects too
  for _, r in ipairs(cat:query([[SELECT s.classoid::pg_catalog.regclass::text AS cls, s.objoid, s.objsubid, s.provider, s.label]] ..
      address_cols("s.classoid", "s.objoid", "s.objsubid") .. [[
      FROM pg_catalog.pg_seclabel s, pg_catalog.pg_identify_object_as_address(s.classoid, s.objoid, s.objsubid) a
      ORDER BY 1, 2, 3, 4]])) do
    emit_decor(r, "SECURITY LABEL", function(label)
      return string.format("SECURITY LABEL FOR %s ON %s IS %s;\n", cat:q(r.provider), label, r.label and cat:lit(r.label) or "NULL")
    end)
  end
  -- privileges
  if cat.opts.no_acl then return end
  local acls = load_acls(cat)
  local keys = {}
  for k in pairs(acls) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local e = acls[k]
    local o = cat.objects[k]
    if (o and o.skipped) or skipped[k] then goto next end
    local obj = o and o.acl_obj or e.obj
    if not o and not obj then goto next end
    local text = (not e.none) and obj and D.acl_commands(cat, e.cur, e.base, obj, e.owner) or ""
    local cols = {}
    if e.columns then
      local nums = {}
      for n in pairs(e.columns) do nums[#nums + 1] = n end
      table.sort(nums)
      for _, n in ipairs(nums) do
        local name = o and o.columns and o.columns[n]
        if not name then
          name = cat.conn:value("SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2", tonumber(k:match("%d+$")), n)
        end
        local t = D.acl_commands(cat, e.columns[n].cur, e.columns[n].base, obj or o.acl_obj, e.owner, cat:q(name))
        if t ~= "" then cols[#cols + 1] = { name = name, text = t } end
      end
    end
    local function tag_of(colname_)
      local base = (obj or ""):gsub('"', "")
      return colname_ and ("COLUMN " .. ((o and o.tag) or base) .. "." .. colname_) or base
    end
    if o then
      if text ~= "" then put(o, { desc = "ACL", tag = o.acl_tag or tag_of(nil), defn = text }) end
      for _, cc in ipairs(cols) do put(o, { desc = "ACL", tag = tag_of(cc.name), defn = cc.text }) end
    elseif obj then
      -- an object orch does not create (a system object, an extension member): only its changed privileges
      if text ~= "" then cat.acl_only[#cat.acl_only + 1] = { desc = "ACL", key = k, tag = tag_of(nil), defn = text } end
      for _, cc in ipairs(cols) do cat.acl_only[#cat.acl_only + 1] = { desc = "ACL", key = k, tag = tag_of(cc.name), defn = cc.text } end
    end
    ::next::
  end
end

return D
