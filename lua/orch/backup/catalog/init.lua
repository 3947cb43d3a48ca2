--- orch.backup.catalog: the database's catalog as the TOC of a
-- pg_dump-compatible archive: every object a database holds, with its DDL,
-- section, owner, privileges, comment and security labels, in an order that
-- is a valid execution order. Run inside the backup's REPEATABLE READ READ
-- ONLY transaction (orch.backup does that), so schema and data come from
-- one snapshot.
--
--   local toc = catalog.build(conn, { skip = { statistics = true } })
--   toc.entries  -- archive entries (orch.pgarchive entry tables), in file order
--   toc.tables   -- the TABLE DATA entries, with what COPY needs
--
-- How it is built (a chapter each, in the files of this folder):
--   kinds/*.lua   one module per family of object kinds: collect(cat) reads
--                 the catalogs and registers objects with cat:add{...}
--   decor.lua     comments, security labels and privileges, attached to the
--                 objects by catalog identity
--   graph.lua     pg_depend as edges between objects, and a topological
--                 sort that splits an inline part out to break a cycle, as
--                 pg_dump does (a column default, a CHECK, a view's query)
--   coverage.lua  every catalog row of a user object must belong to
--                 something orch dumped (or was told to skip): a kind orch
--                 does not know fails the backup by name
--
-- An object (what kinds register): key ("pg_class:16390" — catalog and
-- oid, or any unique string), desc (the archive entry type, "TABLE"),
-- section ("pre-data" | "data" | "post-data"), tag, namespace, owner, defn
-- (string, or render = function(o, cat) returning it, called after the
-- sort), drop, prio (sort order within the graph; defaults by desc),
-- tablespace, tableam, relkind, deps (list of keys), kind (the --skip name:
-- an object of a skipped kind is registered but never written). Decorations: label
-- ("TABLE app.t": what COMMENT ON / SECURITY LABEL ON name), label_tag
-- ("TABLE t"), acl ({ text, default, obj } aclitem[] texts and the GRANT
-- object, see decor.lua), columns ({ [attnum] = name }). Parts written
-- inside their parent's DDL are registered with parent = key, inline = true:
-- their dependencies count for the parent until a cycle makes graph.lua
-- split them out (inline = false), and the parent's render must then leave
-- them out. A dependency that must not order two objects the way pg_depend
-- says (a base type's I/O functions take the type the type needs them for)
-- is pointed elsewhere with cat:redirect(from, to, instead): the functions
-- then wait for the type's shell (CREATE TYPE t;) instead, as in pg_dump.
local sys = require "orch.sys"

local C = {}

-- The kind modules, in the order they collect (later ones may look up
-- objects of earlier ones).
C.KINDS = { "schemas", "extensions", "languages", "collations", "types", "functions", "access_methods", "casts", "conversions",
            "transforms", "operators", "text_search", "foreign", "relations", "constraints", "indexes", "statistics", "rules",
            "triggers", "policies", "publications", "event_triggers", "default_acls", "large_objects" }

-- The names --skip takes (an object's `kind`, coverage.lua's names for rows), in the order --help lists them.
C.SKIP_KINDS = { "schema", "extension", "language", "collation", "type", "base_type", "domain", "function", "procedure",
  "aggregate", "access_method", "cast", "conversion", "transform", "operator", "operator_family", "operator_class",
  "text_search", "foreign_data_wrapper", "foreign_server", "user_mapping", "foreign_table", "table", "table_data",
  "sequence", "view", "materialized_view", "default", "constraint", "foreign_key", "index", "statistics", "rule",
  "trigger", "policy", "publication", "subscription", "event_trigger", "default_acl", "large_object", "database" }

-- Sort order of entry types inside the graph (lower first, dependencies
-- permitting), after pg_dump's own: pre-data < 100 < data < 200 < post-data.
C.PRIO = {
  SCHEMA = 1, ["PROCEDURAL LANGUAGE"] = 2, COLLATION = 3, TRANSFORM = 3, EXTENSION = 4, ["SHELL TYPE"] = 5, TYPE = 5,
  DOMAIN = 5, CAST = 6, FUNCTION = 7, PROCEDURE = 7, AGGREGATE = 8, ["ACCESS METHOD"] = 9, OPERATOR = 9,
  ["OPERATOR FAMILY"] = 10, ["OPERATOR CLASS"] = 10, CONVERSION = 11, ["TEXT SEARCH PARSER"] = 12,
  ["TEXT SEARCH TEMPLATE"] = 13, ["TEXT SEARCH DICTIONARY"] = 14, ["TEXT SEARCH CONFIGURATION"] = 15,
  ["FOREIGN DATA WRAPPER"] = 16, SERVER = 17, ["USER MAPPING"] = 17, TABLE = 18, SEQUENCE = 18, VIEW = 18,
  ["MATERIALIZED VIEW"] = 18, ["FOREIGN TABLE"] = 18, ["SEQUENCE OWNED BY"] = 19, ["TABLE ATTACH"] = 19,
  DEFAULT = 20, BLOB = 21, ["BLOB METADATA"] = 21,
  ["TABLE DATA"] = 110, ["SEQUENCE SET"] = 111, BLOBS = 112,
  CONSTRAINT = 201, ["CHECK CONSTRAINT"] = 201, INDEX = 202, ["INDEX ATTACH"] = 203, STATISTICS = 204, RULE = 205,
  TRIGGER = 206, ["FK CONSTRAINT"] = 207, POLICY = 208, ["ROW SECURITY"] = 208, PUBLICATION = 209,
  ["PUBLICATION TABLE"] = 210, ["PUBLICATION TABLES IN SCHEMA"] = 210, SUBSCRIPTION = 211,
  ["SUBSCRIPTION TABLE"] = 212, ["DEFAULT ACL"] = 213, ["EVENT TRIGGER"] = 214, ["MATERIALIZED VIEW DATA"] = 215,
}
local SECTION_PRIO = { ["pre-data"] = 50, data = 150, ["post-data"] = 250 }

-- ================================================================ the catalog being built

local Cat = {}
Cat.__index = Cat

--- Register an object (see the file's header for its fields); returns it.
function Cat:add(o)
  assert(o.key, "catalog object without a key")
  assert(o.desc, "catalog object " .. o.key .. " without desc")
  if self.objects[o.key] then error("catalog object registered twice: " .. o.key .. " (" .. o.desc .. " " .. tostring(o.tag) .. ")", 2) end
  o.section = o.section or "pre-data"
  o.prio = o.prio or C.PRIO[o.desc] or SECTION_PRIO[o.section]
  o.deps = o.deps or {}
  o.seq = #self.list + 1
  -- a kind the caller asked to leave out (--skip KIND): kept for the report, never written
  if o.kind and self.skip[o.kind] then
    o.skipped = true
    self.skipped[#self.skipped + 1] = o
  end
  self.objects[o.key] = o
  self.list[#self.list + 1] = o
  return o
end

--- The object registered under key, or nil.
function Cat:get(key) return self.objects[key] end

--- Make references to catalog object key (dependencies, decorations,
-- coverage) count as references to the object target: a table's row type,
-- a view's _RETURN rule, the index behind a constraint.
function Cat:alias(key, target) self.aliases[key] = target end

--- Mark catalog object key as deliberately not dumped (a kind the caller
-- skipped, or a part of another object that needs no entry): coverage
-- accepts it, dependencies on it are ignored.
function Cat:cover(key, why) self.covered[key] = why or true end

--- References from object `from` to object `to` (keys, aliases followed)
-- go to object `instead`: a type's I/O functions depend on the type, which
-- depends on them; pg_dump breaks that cycle by pointing the functions at a
-- shell type written first (CREATE TYPE t;), and so does this.
function Cat:redirect(from, to, instead)
  self.redirects[from .. ">" .. to] = instead
end

--- o (an object or key) depends on key ref.
function Cat:dep(o, ref)
  if type(o) == "string" then o = assert(self.objects[o], o) end
  o.deps[#o.deps + 1] = ref
end

--- Follow aliases to the key an object is registered (or covered) under.
function Cat:resolve(key)
  local seen = 0
  while self.aliases[key] and seen < 8 do key = self.aliases[key]; seen = seen + 1 end
  return key
end

--- Is this kind of object to be left out (--skip KIND)?
function Cat:skipping(kind) return self.skip[kind] == true end

function Cat:query(sql, ...) return self.conn:query(sql, ...) end
function Cat:q(s) return self.conn:quote_ident(s) end
function Cat:qn(ns, name) return self.conn:quote_ident(ns) .. "." .. self.conn:quote_ident(name) end
function Cat:lit(s) return self.conn:quote_literal(s) end

--- Does the server have this version (server_version_num) or newer?
function Cat:since(num) return self.version >= num end

--- The SQL condition "this object is not a member of an extension" for a
-- catalog (regclass text) and its oid column.
function Cat:not_ext(catalog, oidcol)
  return string.format("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '%s'::pg_catalog.regclass AND d.objid = %s AND d.deptype = 'e')",
    catalog, oidcol)
end

-- The SQL condition: a schema orch dumps objects of (not system, not temporary, not TOAST).
function Cat:user_ns(col)
  return string.format("%s NOT IN ('pg_catalog', 'information_schema') AND %s !~ '^pg_(toast|temp_|toast_temp_)'", col, col)
end

-- ================================================================ build

--- Build the TOC of the database conn is connected to (see the header).
-- opts: skip (set of kind names), no_owner, no_acl, selection (orch.backup.select.from_opts). Raises naming every
-- object orch cannot dump, and every cycle it cannot break.
function C.build(conn, opts)
  opts = opts or {}
  local info = conn:info()
  local cat = setmetatable({ conn = conn, opts = opts, skip = opts.skip or {}, version = info.server_version_num,
    objects = {}, list = {}, aliases = {}, covered = {}, labels = {}, skipped = {}, redirects = {} }, Cat)
  -- with only pg_catalog on the path, every pg_get_*def and regclass output is schema-qualified
  conn:query("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
  local without = C.test_without_kinds()
  for _, k in ipairs(C.KINDS) do
    if not without[k] then require("orch.backup.catalog.kinds." .. k).collect(cat) end
  end
  -- a backup's selection (-n, -t, -T, ...): resolved in this snapshot, what it leaves out marked
  if opts.selection then
    local select = require "orch.backup.select"
    cat.selection = select.resolve(conn, opts.selection)
    select.apply(cat, cat.selection)
  end
  if next(cat.skip) then C.skip_attached(cat) end
  require("orch.backup.catalog.coverage").check(cat)
  require("orch.backup.catalog.decor").collect(cat)
  local graph = require "orch.backup.catalog.graph"
  graph.load(cat)
  local order, targets = graph.sort(cat)
  local toc = require("orch.backup.catalog.emit").toc(cat, order, targets)
  toc.skipped = C.skipped_summary(cat)
  toc.selection = cat.selection
  return toc
end

--- Leave out, with a skipped object, what is attached to it: its data,
-- the parts written inside it, and the objects that name it in their deps
-- (an index, a trigger, a constraint of a skipped table). They are listed
-- under the skipped kind (o.skipped_with), never written.
function C.skip_attached(cat)
  local changed = true
  while changed do
    changed = false
    for _, o in ipairs(cat.list) do
      if not o.skipped then
        local by = o.parent and cat.objects[o.parent]
        if not (by and by.skipped) then
          by = nil
          for _, k in ipairs(o.deps) do
            local t = cat.objects[cat:resolve(k)]
            if t and t.skipped then by = t break end
          end
        end
        if by then
          o.skipped, o.skipped_with = true, by.skipped_with or by
          cat.skipped[#cat.skipped + 1] = o
          changed = true
        end
      end
    end
  end
end

--- The kind modules a test asked to leave out, from the test-only
-- environment variable ORCH_TEST_WITHOUT_KINDS (names from C.KINDS,
-- comma-separated): their objects become unknown to orch, as a future
-- server's new kind would be, so the specs can prove that coverage fails
-- the backup naming them. Never set it outside tests; orch warns when it is.
function C.test_without_kinds()
  local set, list = {}, {}
  for k in (os.getenv("ORCH_TEST_WITHOUT_KINDS") or ""):gmatch("[^,%s]+") do
    local known = false
    for _, m in ipairs(C.KINDS) do if m == k then known = true end end
    if not known then sys.error("ORCH_TEST_WITHOUT_KINDS names " .. k .. ", which is not a kind module (" .. table.concat(C.KINDS, ", ") .. ")", 2) end
    set[k] = true
    list[#list + 1] = k
  end
  if #list > 0 then
    require("orch.log").warn("ORCH_TEST_WITHOUT_KINDS is set (a test-only switch): orch does not know the objects of %s", table.concat(list, ", "))
  end
  return set
end

--- What the caller's --skip left out, for the backup's output and
-- manifest: a list of { kind, count, objects = { names } } sorted by kind,
-- with a kind that matched nothing listed with count 0.
function C.skipped_summary(cat)
  local by, names = {}, {}
  local describe = {}
  for _, o in ipairs(cat.skipped) do
    -- data entries are the contents of what was skipped, not objects of their own
    if o.data or o.blobs then goto next end
    local k = o.skipped_with and o.skipped_with.kind or o.kind or "?"
    by[k] = by[k] or {}
    local cls, oid = (o.key or ""):match("^(pg_[%w_]+):(%d+)$")
    if o.seq == nil and cls then
      -- found by coverage, not registered: the server names it
      describe[#describe + 1] = { list = by[k], cls = cls, oid = oid }
      by[k][#by[k] + 1] = o.key
    else
      local w = o.skipped_with
      by[k][#by[k] + 1] = string.format("%s %s%s%s", (o.desc or ""):lower(), o.namespace and (o.namespace .. ".") or "", o.tag or o.key,
        w and string.format(" (with %s %s%s)", (w.desc or ""):lower(), w.namespace and (w.namespace .. ".") or "", w.tag or w.key) or "")
    end
    ::next::
  end
  if #describe > 0 then
    local coverage = require "orch.backup.catalog.coverage"
    for _, d in ipairs(describe) do
      local what = coverage.describe(cat, d.cls, d.oid)
      for i, v in ipairs(d.list) do if v == d.cls .. ":" .. d.oid then d.list[i] = what end end
    end
  end
  for k in pairs(cat.skip) do if not by[k] then by[k] = {} end end
  for k in pairs(by) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do
    table.sort(by[k])
    out[#out + 1] = { kind = k, count = #by[k], objects = by[k] }
  end
  return out
end

C.Cat = Cat
return C
