--- orch.backup.select: what part of a database a backup takes, with
-- pg_dump's options and meaning: -n/-N schemas, -t/-T tables,
-- --exclude-table-data, -s (definitions only), -a (data only), -x (no
-- privileges), --no-comments.
--
-- Patterns are psql's: unquoted letters fold to lower case, * matches any
-- run of characters, ? any one, "double quotes" keep a name as written (and
-- make * ? . literal; "" is a quote), a dot separates schema and name
-- (database.schema.name: the database part must be this database). Any
-- other character matches itself. Unlike pg_dump, every pattern must match
-- something, exclusions too (pg_dump --strict-names checks only the
-- inclusions): a pattern that matches nothing fails the backup naming it,
-- because a typo in -T would otherwise take the huge table it meant to
-- leave out, and one in -t an empty backup.
--
-- Which objects (pg_dump 15's rules): with -t, the matching relations
-- (tables, partitioned tables, views, materialized views, sequences,
-- foreign tables) and what hangs on them (data, indexes, constraints,
-- triggers, rules, policies, defaults, the sequences they own, comments,
-- privileges), nothing else: not their schema, not the functions or types
-- they use; -n and -N do not apply then. Else with -n, the objects of the
-- matching schemas that -N does not exclude; without -n, everything but
-- -N's schemas. Objects that belong to no schema (extensions, languages,
-- casts, publications, event triggers, large objects, ...) only when
-- neither -n nor -t is given. -T removes tables (and what hangs on them; a
-- sequence a removed table owns stays, as in pg_dump), --exclude-table-data
-- keeps a table's definition and leaves its rows (or a materialized view's
-- REFRESH) out.
local sys = require "orch.sys"

local S = {}

-- The options, in the order --help and the manifest name them.
S.PATTERN_OPTIONS = {
  { key = "schemas", flag = "-n", what = "schema" },
  { key = "exclude_schemas", flag = "-N", what = "schema" },
  { key = "tables", flag = "-t", what = "table" },
  { key = "exclude_tables", flag = "-T", what = "table" },
  { key = "exclude_table_data", flag = "--exclude-table-data", what = "table" },
}
S.CONTENT_OPTIONS = {
  { key = "schema_only", flag = "--schema-only" }, { key = "data_only", flag = "--data-only" },
  { key = "no_privileges", flag = "--no-privileges" }, { key = "no_comments", flag = "--no-comments" },
}

local function fail(msg) sys.error(msg, 1) end

--- The selection of a backup from its options (tables of patterns and
-- booleans, as orch backup parses them), or nil when the backup takes the
-- whole database. Raises on a combination that cannot work.
function S.from_opts(o)
  local sel, any = {}, false
  for _, p in ipairs(S.PATTERN_OPTIONS) do
    local list = o[p.key]
    if list and #list > 0 then sel[p.key] = list; any = true end
  end
  for _, c in ipairs(S.CONTENT_OPTIONS) do
    if o[c.key] then sel[c.key] = true; any = true end
  end
  if not any then return nil end
  if sel.schema_only and sel.data_only then
    fail("--schema-only and --data-only exclude each other (the first takes no rows, the second nothing but rows)")
  end
  if sel.schema_only and sel.exclude_table_data then
    fail("--exclude-table-data has nothing to leave out with --schema-only, which takes no rows at all")
  end
  return sel
end

-- A regular expression special character, escaped for the server's ~ operator.
local function esc(c)
  if c:match("[%^%$%.%[%]%(%)%*%+%?%{%}%|\\]") then return "\\" .. c end
  return c
end

--- A psql pattern as anchored regular expressions, one per dotted part
-- (1 to 3 parts). Raises naming the pattern when it is malformed.
function S.parts(pattern, flag)
  local parts, cur, quoted, i = {}, {}, false, 1
  local function push() parts[#parts + 1] = table.concat(cur); cur = {} end
  while i <= #pattern do
    local c = pattern:sub(i, i)
    if c == '"' then
      if quoted and pattern:sub(i + 1, i + 1) == '"' then cur[#cur + 1] = '"'; i = i + 1
      else quoted = not quoted end
    elseif quoted then cur[#cur + 1] = esc(c)
    elseif c == "." then push()
    elseif c == "*" then cur[#cur + 1] = ".*"
    elseif c == "?" then cur[#cur + 1] = "."
    elseif c:match("%s") then
      fail(string.format("%s %q: a space outside double quotes (quote a name that holds one: \"my table\")", flag, pattern))
    else cur[#cur + 1] = esc(c:lower()) end
    i = i + 1
  end
  if quoted then fail(string.format("%s %q: an unterminated double quote", flag, pattern)) end
  push()
  for _, p in ipairs(parts) do
    if p == "" then fail(string.format("%s %q: an empty name (a dot at the start or the end, or two in a row)", flag, pattern)) end
  end
  for k, p in ipairs(parts) do parts[k] = "^(" .. p .. ")$" end
  return parts
end

local USER_NS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'"

-- The database part of a pattern must name this database (as pg_dump requires).
local function check_db(conn, regex, flag, pattern)
  if not conn:value("SELECT pg_catalog.current_database() ~ $1", regex) then
    fail(string.format("%s %q: its first part names another database than %s (orch backs up one database)", flag, pattern,
      conn:value("SELECT pg_catalog.current_database()")))
  end
end

-- The schemas (name list) a schema pattern matches.
local function match_schemas(conn, pattern, flag)
  local p = S.parts(pattern, flag)
  if #p > 2 then fail(string.format("%s %q: too many dotted names (a schema pattern is SCHEMA or DATABASE.SCHEMA)", flag, pattern)) end
  if #p == 2 then check_db(conn, p[1], flag, pattern) end
  local out = {}
  for _, r in ipairs(conn:query("SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE " .. USER_NS ..
      " AND n.nspname ~ $1 ORDER BY 1", p[#p])) do
    out[#out + 1] = r.nspname
  end
  return out
end

-- The relations ({oid, name}) a table pattern matches. Without a schema part,
-- those visible on the database's and role's own search_path (pg_dump's rule).
local function match_tables(conn, pattern, flag)
  local p = S.parts(pattern, flag)
  if #p > 3 then fail(string.format("%s %q: too many dotted names (a table pattern is [[DATABASE.]SCHEMA.]TABLE)", flag, pattern)) end
  if #p == 3 then check_db(conn, p[1], flag, pattern) end
  local sql = "SELECT c.oid::int8 AS oid, n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " ..
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND " .. USER_NS .. " AND c.relname ~ $1"
  local rows
  if #p == 1 then
    rows = conn:query(sql .. " AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3", p[1])
  else
    rows = conn:query(sql .. " AND n.nspname ~ $2 ORDER BY 2, 3", p[#p], p[#p - 1])
  end
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = { oid = tostring(math.tointeger(r.oid) or r.oid), name = r.nspname .. "." .. r.relname } end
  return out
end

--- Resolve a selection's patterns on conn (inside the backup's snapshot).
-- Returns the resolved selection: sets of schema names and relation oids,
-- and per option the names each pattern matched (for the manifest). Raises
-- naming every pattern that matches nothing.
function S.resolve(conn, sel)
  local r = { sel = sel, schema = nil, exclude_schema = {}, table = nil, exclude_table = {}, exclude_data = {}, matched = {} }
  -- an unqualified table pattern is looked up on the search path the database and role give (not orch's pinned one)
  local path = conn:value("SELECT pg_catalog.current_setting('search_path')")
  conn:query("SELECT pg_catalog.set_config('search_path', (SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'search_path'), true)")
  local ok, err = pcall(function()
    local empty = {}
    for _, o in ipairs(S.PATTERN_OPTIONS) do
      for _, pat in ipairs(sel[o.key] or {}) do
        local names, list = {}, nil
        if o.what == "schema" then
          list = match_schemas(conn, pat, o.flag)
          for _, n in ipairs(list) do names[#names + 1] = n end
        else
          list = match_tables(conn, pat, o.flag)
          for _, t in ipairs(list) do names[#names + 1] = t.name end
        end
        if #list == 0 then empty[#empty + 1] = string.format("%s %s", o.flag, pat) end
        r.matched[#r.matched + 1] = { option = o.flag, pattern = pat, matched = names }
        for _, x in ipairs(list) do
          if o.key == "schemas" then r.schema = r.schema or {}; r.schema[x] = true
          elseif o.key == "exclude_schemas" then r.exclude_schema[x] = true
          elseif o.key == "tables" then r.table = r.table or {}; r.table["pg_class:" .. x.oid] = true
          elseif o.key == "exclude_tables" then r.exclude_table["pg_class:" .. x.oid] = true
          else r.exclude_data["pg_class:" .. x.oid] = true end
        end
      end
    end
    if #empty > 0 then
      fail(string.format("the backup was not taken: %s matched nothing in database %s (patterns are psql's: * ? \"Quoted\" schema.table; " ..
        "a table pattern without a schema looks on the search path, %s). Correct the pattern, or leave it out",
        table.concat(empty, ", "), conn:value("SELECT pg_catalog.current_database()"),
        conn:value("SELECT pg_catalog.current_setting('search_path')")))
    end
  end)
  conn:query("SELECT pg_catalog.set_config('search_path', $1, true)", path)
  if not ok then error(err, 0) end
  r.everything = r.schema == nil and r.table == nil
  return r
end

-- Objects that follow the relation they hang on (their first dependency, or
-- the parent they are written inside), as pg_dump dumps them with their table.
local ATTACHED = { INDEX = true, CONSTRAINT = true, ["CHECK CONSTRAINT"] = true, ["FK CONSTRAINT"] = true, TRIGGER = true,
  RULE = true, POLICY = true, ["ROW SECURITY"] = true, DEFAULT = true, ["TABLE ATTACH"] = true, ["INDEX ATTACH"] = true,
  ["TABLE DATA"] = true, ["MATERIALIZED VIEW DATA"] = true, ["SEQUENCE SET"] = true }
local RELATION = { TABLE = true, VIEW = true, SEQUENCE = true, ["MATERIALIZED VIEW"] = true, ["FOREIGN TABLE"] = true }

--- Mark the objects of catalog cat the selection leaves out (o.excluded):
-- they are registered (coverage knows them) but neither written nor
-- ordered against (graph.lua), and nothing that needs them fails.
function S.apply(cat, r)
  local memo = {}
  local function schema_in(ns)
    if r.table then return false end
    if r.schema and not r.schema[ns] then return false end
    return not r.exclude_schema[ns]
  end
  -- a sequence owned by a selected table is selected with it (pg_dump's owned sequences)
  local owned_by = {}
  for _, o in ipairs(cat.list) do
    if o.desc == "SEQUENCE OWNED BY" then owned_by[o.deps[1]] = cat:resolve(o.deps[2]) end
  end
  local selected
  local function own(o)
    if o.inline and o.parent then return selected(cat.objects[o.parent]) end
    if o.desc == "SCHEMA" then return schema_in(o.tag) end
    if RELATION[o.desc] and o.key:match("^pg_class:") then
      local yes
      if r.exclude_table[o.key] then yes = false
      elseif r.table then yes = r.table[o.key] == true
      else yes = schema_in(o.namespace) end
      if not yes and o.desc == "SEQUENCE" and owned_by[o.key] then
        local t = cat.objects[owned_by[o.key]]
        yes = t ~= nil and selected(t)
      end
      return yes
    end
    if o.desc == "SEQUENCE OWNED BY" or o.desc == "PUBLICATION TABLE" then
      -- needs both ends: the sequence and its table, the publication and its table
      for _, k in ipairs(o.deps) do
        local t = cat.objects[cat:resolve(k)]
        if t and not selected(t) then return false end
      end
      return true
    end
    if o.desc == "STATISTICS" then
      -- extended statistics: their table and their own schema both selected (pg_dump 15)
      local t = o.deps[1] and cat.objects[cat:resolve(o.deps[1])]
      if t and not selected(t) then return false end
      return o.namespace ~= nil and schema_in(o.namespace)
    end
    if o.kind == "extension" and (o.desc == "TABLE DATA" or o.desc == "SEQUENCE SET") then
      -- an extension's configuration table or sequence: its rows follow the relation's own selection (-t, -T,
      -- its schema for -n/-N), not the extension's, as in pg_dump
      local rel = "pg_class:" .. (o.key:match("^%a+:pg_class:(%d+)$") or "")
      if r.exclude_table[rel] then return false end
      if r.table then return r.table[rel] == true end
      return o.namespace ~= nil and schema_in(o.namespace)
    end
    if ATTACHED[o.desc] and o.deps[1] then
      local t = cat.objects[cat:resolve(o.deps[1])]
      if t and t ~= o then return selected(t) end
    end
    if o.namespace then return schema_in(o.namespace) end
    return r.everything
  end
  selected = function(o)
    local v = memo[o.key]
    if v == nil then
      memo[o.key] = false   -- a cycle counts as not selected
      v = own(o)
      memo[o.key] = v
    end
    return v
  end
  for _, o in ipairs(cat.list) do
    if not selected(o) then o.excluded = true end
  end
  if r.sel.data_only then S.order_data(cat) end
end

--- A data-only backup is restored into tables whose foreign keys are in
-- place: the rows of a referenced table come before those referencing it
-- (as pg_dump orders them). A reference that would close a cycle orders
-- nothing (restore those with --disable-triggers).
function S.order_data(cat)
  local after = {}
  local function reaches(from, to, seen)
    if from == to then return true end
    if seen[from] then return false end
    seen[from] = true
    for k in pairs(after[from] or {}) do if reaches(k, to, seen) then return true end end
    return false
  end
  for _, f in ipairs(cat:query([[SELECT c.conrelid::int8 AS t, c.confrelid::int8 AS ref FROM pg_catalog.pg_constraint c
      WHERE c.contype = 'f' AND c.conrelid <> c.confrelid ORDER BY c.oid]])) do
    local d = cat.objects["data:pg_class:" .. math.tointeger(f.t)]
    local rd = cat.objects["data:pg_class:" .. math.tointeger(f.ref)]
    if d and rd and not d.excluded and not rd.excluded and not reaches(rd.key, d.key, {}) then
      after[d.key] = after[d.key] or {}
      after[d.key][rd.key] = true
      cat:dep(d, rd.key)
    end
  end
end

local DATA = require("orch.backup.restore_select").DATA

--- Does an object (emitted as an entry) stay under the content options?
function S.keep_object(r, o)
  local sel = r.sel
  if sel.schema_only and (DATA[o.desc] or o.desc == "MATERIALIZED VIEW DATA") then return false end
  if sel.data_only and not DATA[o.desc] then return false end
  if (o.desc == "TABLE DATA" or o.desc == "MATERIALIZED VIEW DATA") and o.deps[1] and r.exclude_data[o.deps[1]] then return false end
  -- (an extension's configuration table: its data hangs on the extension, the table is named by its oid)
  if o.desc == "TABLE DATA" and o.data and o.data.oid and r.exclude_data["pg_class:" .. (math.tointeger(o.data.oid) or o.data.oid)] then
    return false
  end
  -- a sequence the pattern matches loses its value (pg_dump matches sequences too)
  if o.desc == "SEQUENCE SET" and r.exclude_data[(o.key:match("^seqset:(.*)$") or "")] then return false end
  return true
end

--- Does a decoration (COMMENT, SECURITY LABEL, ACL entry) stay? desc is
-- its entry type. (-x needs no test here: with it the catalog collects no
-- privileges at all, catalog.build's no_acl.)
function S.keep_decoration(r, desc) return not (r.sel.no_comments and desc == "COMMENT") end

--- Do the database's own entries (DATABASE, its COMMENT, ACL, ...) stay?
-- DATABASE and its properties always (pg_restore -C and --swap need them);
-- its decorations as the options say, none with --data-only (as pg_dump).
function S.keep_database_entry(r, e)
  if e.desc == "DATABASE" or e.desc == "DATABASE PROPERTIES" then return true end
  if r.sel.data_only then return false end
  return S.keep_decoration(r, e.desc)
end

--- What the manifest says about a partial backup: the options as given and
-- what each pattern matched.
function S.describe(r)
  local sel = r.sel
  local d = { options = {}, patterns = r.matched }
  for _, o in ipairs(S.PATTERN_OPTIONS) do
    for _, p in ipairs(sel[o.key] or {}) do d.options[#d.options + 1] = o.flag .. " " .. p end
  end
  for _, c in ipairs(S.CONTENT_OPTIONS) do
    if sel[c.key] then d.options[#d.options + 1] = c.flag end
  end
  return d
end

--- One line for a manifest's partial selection (nil for a whole backup):
-- its selection options, and each --skip KIND that left objects out (a
-- --skip that matched nothing left the backup whole).
function S.summary(m)
  if type(m) ~= "table" then return nil end
  local parts = {}
  if type(m.partial) == "table" then
    for _, o in ipairs(m.partial.options or {}) do parts[#parts + 1] = o end
  end
  for _, k in ipairs(type(m.skipped) == "table" and m.skipped or {}) do
    if type(k) == "table" and type(k.kind) == "string" and (tonumber(k.count) or 0) > 0 then
      parts[#parts + 1] = "--skip " .. k.kind
    end
  end
  if #parts == 0 then return nil end
  return table.concat(parts, " ")
end

--- Is the manifest's backup a --data-only one (rows without definitions)?
function S.data_only(m)
  local p = type(m) == "table" and m.partial
  if type(p) ~= "table" then return false end
  for _, o in ipairs(p.options or {}) do if o == "--data-only" then return true end end
  return false
end

return S
