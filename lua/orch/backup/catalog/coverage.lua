--- orch.backup.catalog.coverage: nothing is left out silently.
--
-- Every row of every catalog of this database that describes a user object
-- (oid 16384 or above: FirstNormalObjectId) must be accounted for: an
-- object a kind module registered, an alias of one (a table's row type), a
-- part of one (an enum's labels, an operator family's members, or anything
-- bound to a covered object by an internal, extension or partition
-- dependency), or an object of a kind the caller asked to skip. Anything
-- else — a kind orch does not know, or a new catalog of a newer server —
-- fails the backup, naming each object as the server describes it.
local sys = require "orch.sys"
local graph = require "orch.backup.catalog.graph"

local V = {}

-- The --skip name of an object, by catalog (and kind column where one catalog holds several kinds).
local KIND = {
  pg_am = "access_method", pg_cast = "cast", pg_collation = "collation", pg_conversion = "conversion",
  pg_default_acl = "default_acl", pg_event_trigger = "event_trigger", pg_extension = "extension",
  pg_foreign_data_wrapper = "foreign_data_wrapper", pg_foreign_server = "foreign_server", pg_language = "language",
  pg_largeobject_metadata = "large_object", pg_namespace = "schema", pg_opclass = "operator_class",
  pg_opfamily = "operator_family", pg_operator = "operator", pg_policy = "policy", pg_publication = "publication",
  pg_publication_namespace = "publication", pg_publication_rel = "publication", pg_rewrite = "rule",
  pg_statistic_ext = "statistics", pg_transform = "transform", pg_trigger = "trigger",
  pg_ts_config = "text_search", pg_ts_dict = "text_search", pg_ts_parser = "text_search", pg_ts_template = "text_search",
  pg_user_mapping = "user_mapping", pg_constraint = "constraint", pg_attrdef = "default", pg_proc = "function",
  pg_type = "type", pg_class = "table", pg_enum = "type", pg_amop = "operator_family", pg_amproc = "operator_family",
}

local RELKIND = { r = "table", p = "table", v = "view", m = "materialized_view", S = "sequence", f = "foreign_table",
  c = "type", i = "index", I = "index" }

local PROKIND = { a = "aggregate", p = "procedure" }
local TYPTYPE = { b = "base_type", d = "domain" }

--- The --skip name of a catalog row's kind.
function V.kind_of(catalog, relkind)
  if catalog == "pg_class" and relkind then return RELKIND[relkind] or ("relkind_" .. relkind) end
  if catalog == "pg_proc" and relkind then return PROKIND[relkind] or "function" end
  if catalog == "pg_type" and relkind then return TYPTYPE[relkind] or "type" end
  return KIND[catalog] or catalog
end

-- Catalogs only a superuser may read, seen through the view the server offers everyone.
local VIA_VIEW = { pg_user_mapping = "SELECT umid AS oid FROM pg_catalog.pg_user_mappings WHERE umid >= 16384" }

-- Rows that belong to the object another column names (no pg_depend row of their own).
-- (An operator family's members: their pg_depend rows name the family only when it is not a
-- built-in one, so a member a user added to a built-in family is named, not silently lost.)
local PARENT = { pg_enum = { col = "enumtypid", cat = "pg_type" }, pg_amop = { col = "amopfamily", cat = "pg_opfamily" },
  pg_amproc = { col = "amprocfamily", cat = "pg_opfamily" } }

--- The catalogs of this database that can hold user objects: non-shared
-- pg_catalog tables with an oid column, with their namespace column if any.
local function catalogs(cat)
  return cat:query([[
    SELECT c.relname,
      (SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname LIKE '%namespace'
         AND a.atttypid = 'pg_catalog.oid'::pg_catalog.regtype AND a.attnum > 0 LIMIT 1) AS nscol,
      (SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname IN ('relkind', 'prokind', 'typtype')) AS kindcol
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace AND c.relkind = 'r' AND NOT c.relisshared
      AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'oid' AND a.attnum > 0)
    ORDER BY 1]])
end

-- Catalog rows pg_describe_object does not take by their own catalog: a
-- large object is named by pg_largeobject, an enum label by its type.
local DESCRIBE = {
  pg_largeobject_metadata = "SELECT pg_catalog.pg_describe_object('pg_catalog.pg_largeobject'::pg_catalog.regclass, $1, 0)",
  pg_enum = "SELECT 'label ' || pg_catalog.quote_literal(e.enumlabel) || ' of ' || pg_catalog.pg_describe_object('pg_catalog.pg_type'::pg_catalog.regclass, e.enumtypid, 0) FROM pg_catalog.pg_enum e WHERE e.oid = $1",
}

--- How the server names catalog row oid of catalog cls ("function app.f(integer)").
function V.describe(cat, cls, oid)
  local ok, what
  if DESCRIBE[cls] then ok, what = pcall(cat.conn.value, cat.conn, DESCRIBE[cls], oid)
  else ok, what = pcall(cat.conn.value, cat.conn, "SELECT pg_catalog.pg_describe_object($1::pg_catalog.regclass, $2, 0)", cls, oid) end
  return ok and what or (cls .. " row " .. tostring(oid))
end

--- Raise unless every user object of the database is covered (see above).
-- Objects of skipped kinds are recorded in cat.skipped_objects.
function V.check(cat)
  -- the dependency bonds that make a row a part of another object
  local bonds = {}
  for _, r in ipairs(graph.depends(cat)) do
    -- (an automatic dependency on an extension's member — a constraint, index, default, rule or trigger of
    -- its table — makes the row a part of that member: graph.depends names the extension as the reference)
    if r.deptype == "i" or r.deptype == "e" or r.deptype == "P" or r.deptype == "S"
       or (r.deptype == "a" and r.refcls == "pg_extension") then
      local k = r.cls .. ":" .. r.objid
      local b = bonds[k]
      if not b then b = {}; bonds[k] = b end
      b[#b + 1] = r.refcls .. ":" .. r.refobjid
    end
  end
  local memo = {}
  local function covered(key, depth)
    if memo[key] ~= nil then return memo[key] end
    if cat.objects[key] or cat.aliases[key] or cat.covered[key] or cat.labels[key] then memo[key] = true return true end
    if (depth or 0) > 20 then return false end
    memo[key] = false   -- cycles of bonds do not cover themselves
    for _, ref in ipairs(bonds[key] or {}) do
      if covered(ref, (depth or 0) + 1) then memo[key] = true return true end
    end
    return false
  end
  local missing = {}
  for _, c in ipairs(catalogs(cat)) do
    local where = "o.oid >= 16384"
    if c.relname == "pg_namespace" then
      where = where .. " AND o.nspname !~ '^pg_(toast|temp_|toast_temp_)'"
    elseif c.nscol then
      where = where .. string.format(" AND o.%s NOT IN (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname ~ '^pg_(toast|temp_|toast_temp_)')",
        c.nscol)
    end
    local parent = PARENT[c.relname]
    local rows
    if VIA_VIEW[c.relname] then
      rows = cat:query(VIA_VIEW[c.relname])
    else
      rows = cat:query(string.format("SELECT o.oid%s%s FROM pg_catalog.%s o WHERE %s",
        parent and (", o." .. parent.col .. " AS parent") or "", c.kindcol and (", o." .. c.kindcol .. "::text AS kindval") or "", c.relname, where))
    end
    for _, r in ipairs(rows) do
      local key = c.relname .. ":" .. r.oid
      if not covered(key) and not (parent and covered(parent.cat .. ":" .. r.parent)) then
        local relkind = c.kindcol and r.kindval or nil
        local kind = V.kind_of(c.relname, relkind)
        if cat.skip[kind] or cat.skip[c.relname] then
          cat.skipped[#cat.skipped + 1] = { key = key, kind = kind, desc = c.relname, tag = tostring(r.oid) }
        else
          missing[#missing + 1] = { cls = c.relname, oid = r.oid, relkind = relkind }
        end
      end
    end
  end
  if #missing == 0 then return end
  -- name them as the server does, with the --skip name of their kind
  local lines, kinds, seen = {}, {}, {}
  for i, m in ipairs(missing) do
    if i > 40 then lines[#lines + 1] = string.format("  ... and %d more", #missing - 40) break end
    local what = V.describe(cat, m.cls, m.oid)
    local kind = V.kind_of(m.cls, m.relkind)
    lines[#lines + 1] = string.format("  - %s  (%s, --skip %s)", what, m.cls, kind)
    if not seen[kind] then seen[kind] = true; kinds[#kinds + 1] = kind end
  end
  sys.error("orch cannot back up these objects, so the backup was not taken:\n" .. table.concat(lines, "\n") ..
    "\nThey are of a kind orch does not know (on a newer server, a new kind). Leave a kind out explicitly, knowing it will be " ..
    "missing from the backup, with --skip " .. table.concat(kinds, " --skip "), 1)
end

V.KIND = KIND
return V
