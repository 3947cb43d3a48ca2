--- orch.backup.restore_select: which entries of an archive (orch's or
-- stock pg_dump's) a restore runs, with pg_restore's options: -a/-s, -x,
-- --no-comments, -N SCHEMA, -I INDEX, -P FUNCTION(args), -T TRIGGER,
-- --section, -L LIST (orch restore --list's or pg_restore -l's output), and
-- --disable-triggers. orch.backup.restore asks through RS.wrap; -n and -t
-- are restore.lua's own (selected()).
--
-- Where orch differs from pg_restore, deliberately: -N leaves out the
-- schema itself too (pg_restore creates it empty); every name given to
-- -N, -I, -P, -T must match an entry (pg_restore silently restores nothing
-- for a typo); -L restores the listed entries in the archive's order and
-- refuses a list that reorders them; --disable-triggers sets
-- session_replication_role = replica for the restore's one transaction
-- (pg_restore disables each table's triggers by ALTER TABLE; both need a
-- superuser; ENABLE ALWAYS triggers still fire with orch's).
local sys = require "orch.sys"

local RS = {}

-- the entries of the data section (shared with orch.backup.select)
local DATA = { ["TABLE DATA"] = true, ["SEQUENCE SET"] = true, BLOBS = true, BLOB = true, ["BLOB METADATA"] = true }
RS.DATA = DATA
-- relations: what -t names
local RELATIONS = { TABLE = true, VIEW = true, SEQUENCE = true, ["MATERIALIZED VIEW"] = true, ["FOREIGN TABLE"] = true }
local FUNCTIONS = { FUNCTION = true, PROCEDURE = true, AGGREGATE = true }
local DECOR = { COMMENT = true, ACL = true, ["SECURITY LABEL"] = true }
local SECTIONS = { ["pre-data"] = true, data = true, ["post-data"] = true }

local function fail(msg) sys.error(msg, 2) end

--- Is entry e data, as pg_restore counts it (rows, sequence values, large objects)?
function RS.is_data(e)
  if DATA[e.desc] then return true end
  return DECOR[e.desc] ~= nil and (e.tag or ""):match("^LARGE OBJECTS? ") ~= nil
end

--- Check the options against each other and the mode; returns nothing, or
-- raises (a usage error, exit 2) naming why the combination cannot work.
function RS.check(opts, mode)
  if opts.data_only and opts.schema_only then
    fail("--data-only and --schema-only exclude each other (rows only, or everything but rows)")
  end
  if opts.disable_triggers and not opts.data_only then
    fail("--disable-triggers is for --data-only restores: a whole restore loads rows before it creates triggers and foreign keys")
  end
  for _, s in ipairs(opts.sections or {}) do
    if not SECTIONS[s] then fail(string.format("--section %s: no such section (pre-data, data or post-data)", s)) end
  end
end

-- The section of every entry: one without a section of its own (a comment,
-- privileges) is in the section of the entry before it (as pg_restore).
local function sections_of(entries)
  local section_of, cur = {}, "pre-data"
  for _, e in ipairs(entries) do
    if SECTIONS[e.section] then cur = e.section end
    section_of[e.id] = cur
  end
  return section_of
end

--- Does the restore go into a database whose schema exists? True when the
-- options select no pre-data entry (-a, --section data, -I, -T, a list of
-- post-data entries): the target is then not required empty, and the
-- restore runs in one transaction. Raises for a mode that cannot work so.
function RS.into_existing(entries, want, mode, opts)
  local section_of = sections_of(entries)
  -- single objects by name (-I, -P, -T) go into a database that holds what they need
  local by_name = #(opts.indexes or {}) + #(opts.functions or {}) + #(opts.triggers or {}) > 0
  for _, e in ipairs(entries) do
    if by_name then break end
    if section_of[e.id] == "pre-data" and e.section ~= "none" and not RS.is_data(e) and want(e) and e.desc ~= "ENCODING" and e.desc ~= "STDSTRINGS"
        and e.desc ~= "SEARCHPATH" and e.desc ~= "DATABASE" and e.desc ~= "DATABASE PROPERTIES" then
      return false
    end
  end
  if mode ~= "empty" then
    fail(string.format("--%s cannot work with these options: they select nothing of the pre-data section (no tables, " ..
      "--data-only, --section data) or name single objects (-I, -P, -T), so the restore goes into the tables the target holds, and %s", mode,
      mode == "swap" and "--swap restores into a new, empty database" or "--drop-existing drops them first"))
  end
  return true
end

--- Does any option of this module apply?
function RS.active(opts)
  return (opts.schemas and #opts.schemas > 0) or (opts.tables and #opts.tables > 0) or opts.data_only or opts.schema_only or opts.no_privileges or opts.no_comments or opts.use_list
    or (opts.exclude_schemas and #opts.exclude_schemas > 0) or (opts.indexes and #opts.indexes > 0)
    or (opts.functions and #opts.functions > 0) or (opts.triggers and #opts.triggers > 0)
    or (opts.sections and #opts.sections > 0) or false
end

--- The entry ids a list file (-L) names, in its order: lines "ID; ..." as
-- orch restore --list and pg_restore -l write them; ";" starts a comment.
function RS.read_list(path, by_id)
  local f, err = io.open(path, "rb")
  if not f then sys.error(string.format("-L %s: cannot read the list: %s", path, tostring(err)), 1) end
  local ids, n = {}, 0
  for line in f:lines() do
    n = n + 1
    if line:match("^%s*;") or line:match("^%s*$") then goto next end
    local id = line:match("^%s*(%d+)%s*;")
    if not id then
      f:close()
      sys.error(string.format("-L %s, line %d: %q is neither an entry (\"ID; ...\", as orch restore --list and pg_restore -l write) " ..
        "nor a comment (\";\")", path, n, line), 1)
    end
    id = math.tointeger(tonumber(id))
    if not by_id[id] then
      f:close()
      sys.error(string.format("-L %s, line %d: the archive has no entry %d (was the list made from another archive?)", path, n, id), 1)
    end
    ids[#ids + 1] = id
    ::next::
  end
  f:close()
  return ids
end

-- Does entry e carry one of these names (tag, or for a trigger "TABLE TRIGGER" or the trigger's name)?
local function named(e, names, trigger)
  local tag = e.tag or ""
  for _, n in ipairs(names) do
    if tag == n then return n end
    if trigger and tag:sub(-#n - 1) == " " .. n then return n end
    if not trigger and FUNCTIONS[e.desc] and tag:match("^(.-)%(") == n then return n end
  end
  return nil
end

--- The selection function of a restore: base (restore.lua's own -n/-t
-- selection) narrowed by this module's options. Raises naming a name that
-- matches nothing, a list that reorders the archive, or a selection of
-- nothing at all.
function RS.wrap(entries, opts, base, is_special)
  if not RS.active(opts) then return base end
  local by_id = {}
  for _, e in ipairs(entries) do by_id[e.id] = e end
  local listed
  if opts.use_list then
    local ids = RS.read_list(opts.use_list, by_id)
    listed = {}
    local pos = {}
    for i, e in ipairs(entries) do pos[e.id] = i end
    local last
    for _, id in ipairs(ids) do
      if last and pos[id] < pos[last] then
        sys.error(string.format("-L %s lists entry %d after entry %d, which the archive holds after it: orch restores the listed entries " ..
          "in the archive's order (dependencies first); keep the lines in the order orch restore --list gives", opts.use_list, id, last), 1)
      end
      listed[id] = true
      last = id
    end
  end
  local excluded_ns = {}
  for _, s in ipairs(opts.exclude_schemas or {}) do excluded_ns[s] = true end
  local indexes, functions, triggers = opts.indexes or {}, opts.functions or {}, opts.triggers or {}
  local by_name = #indexes + #functions + #triggers > 0
  local tables_given = opts.tables and #opts.tables > 0
  local schemas = {}
  for _, s in ipairs(opts.schemas or {}) do schemas[s] = true end
  local use_sections
  if opts.sections and #opts.sections > 0 then
    use_sections = {}
    for _, s in ipairs(opts.sections) do use_sections[s] = true end
  end
  local section_of = sections_of(entries)
  local seen = { index = {}, ["function"] = {}, trigger = {}, schema = {}, schema_n = {}, table = {} }
  local function want(e)
    if listed and not listed[e.id] then return false end
    if use_sections and not use_sections[section_of[e.id]] then return false end
    if opts.data_only and not RS.is_data(e) then return false end
    if opts.schema_only and RS.is_data(e) then return false end
    if opts.no_privileges and (e.desc == "ACL" or e.desc == "DEFAULT ACL") then return false end
    if opts.no_comments and e.desc == "COMMENT" then return false end
    if e.namespace and excluded_ns[e.namespace] then seen.schema[e.namespace] = true return false end
    if e.desc == "SCHEMA" and excluded_ns[e.tag] then seen.schema[e.tag] = true return false end
    if DECOR[e.desc] and not e.namespace and e.deps and e.deps[1] then
      local d = by_id[e.deps[1]]
      if d and d.desc == "SCHEMA" and excluded_ns[d.tag] then return false end
    end
    if by_name then
      local hit
      if e.desc == "INDEX" then hit = named(e, indexes); if hit then seen.index[hit] = true end
      elseif FUNCTIONS[e.desc] then hit = named(e, functions); if hit then seen["function"][hit] = true end
      elseif e.desc == "TRIGGER" then hit = named(e, triggers, true); if hit then seen.trigger[hit] = true end end
      if hit then return not next(schemas) or tables_given or schemas[e.namespace or ""] == true end
      return tables_given and base(e) or false
    end
    return base(e)
  end
  -- decide once per entry (the checks below need the whole pass)
  local keep, count = {}, 0
  for _, e in ipairs(entries) do
    if not is_special(e) and want(e) then keep[e.id] = true; count = count + 1 end
  end
  local missing = {}
  -- -n and -t (restore.lua's selection) must name something the archive holds too
  for _, e in ipairs(entries) do
    if e.namespace then seen.schema_n[e.namespace] = true end
    if e.desc == "SCHEMA" then seen.schema_n[e.tag] = true end
    if RELATIONS[e.desc] then seen.table[e.tag] = true end
  end
  for _, x in ipairs { { "-n", opts.schemas or {}, "schema_n" }, { "-t", opts.tables or {}, "table" },
      { "-I", indexes, "index" }, { "-P", functions, "function" }, { "-T", triggers, "trigger" },
      { "-N", opts.exclude_schemas or {}, "schema" } } do
    for _, n in ipairs(x[2]) do
      if not seen[x[3]][n] then missing[#missing + 1] = x[1] .. " " .. n end
    end
  end
  if #missing > 0 then
    sys.error(string.format("%s matched no entry of the archive (names as orch restore --list shows them: an index by its name, " ..
      "a schema or table by its name as written, a function with its argument types, e.g. \"f(integer)\", a trigger as " ..
      "\"TABLE TRIGGER\" or its name); nothing was restored",
      table.concat(missing, ", ")), 1)
  end
  if count == 0 then
    sys.error("these options select no entry of the archive (orch restore --list shows what it holds); nothing was restored", 1)
  end
  return function(e) return keep[e.id] == true or (is_special(e) and base(e)) end
end

--- The session settings a restore adds (after the archive's own).
function RS.settings(opts)
  if opts.disable_triggers then
    -- triggers, foreign-key checks included, do not fire for the rows of this restore
    return { "SET session_replication_role = replica" }
  end
  return {}
end

return RS
