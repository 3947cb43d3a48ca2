--- orch.backup.catalog: the database's catalog as the TOC of a pg_dump-compatible
-- archive: DDL, sections, owners, dependencies, in an order that is a valid
-- execution order. Run inside one REPEATABLE READ READ ONLY transaction
-- (orch.backup does that) so schema and data come from one snapshot.
--
--   local toc = catalog.build(conn, { skip = { aggregate = true } })
--   toc.entries  -- list of archive entries (orch.pgarchive entry tables)
--   toc.tables   -- the TABLE DATA entries with what COPY needs
--
-- Kinds orch does not dump yet make build() raise, naming every object, unless
-- the caller skips that kind explicitly: never a silent omission.
local C = {}

local function q(c, s) return c:quote_ident(s) end
local function qn(c, ns, name) return q(c, ns) .. "." .. q(c, name) end

-- Objects orch cannot dump yet: kind -> query returning a "name" column.
local UNSUPPORTED = {
  ordered_set_aggregate = [[SELECT p.oid::regprocedure::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.prokind = 'a' AND a.aggkind <> 'n' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')]],
  operator = [[SELECT o.oid::regoperator::text AS name FROM pg_operator o WHERE o.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_operator'::regclass AND d.objid = o.oid AND d.deptype = 'e')]],
  cast = [[SELECT format('%s AS %s', c.castsource::regtype, c.casttarget::regtype) AS name FROM pg_cast c WHERE c.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_cast'::regclass AND d.objid = c.oid AND d.deptype IN ('e', 'i'))]],
  foreign_table = [[SELECT c.oid::regclass::text AS name FROM pg_class c WHERE c.relkind = 'f']],
  foreign_server = [[SELECT srvname AS name FROM pg_foreign_server]],
  event_trigger = [[SELECT evtname AS name FROM pg_event_trigger]],
  publication = [[SELECT pubname AS name FROM pg_publication]],
  subscription = [[SELECT subname AS name FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())]],
  large_object = [[SELECT 'large object ' || oid AS name FROM pg_largeobject_metadata]],
  collation = [[SELECT c.oid::regcollation::text AS name FROM pg_collation c WHERE c.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_collation'::regclass AND d.objid = c.oid AND d.deptype = 'e')]],
  text_search = [[SELECT cfgname AS name FROM pg_ts_config WHERE oid >= 16384 UNION ALL SELECT dictname FROM pg_ts_dict WHERE oid >= 16384]],
  statistics = [[SELECT stxname AS name FROM pg_statistic_ext]],
  default_acl = [[SELECT 'default privileges of ' || pg_get_userbyid(defaclrole) AS name FROM pg_default_acl]],
  column_acl = [[SELECT format('%s.%s', a.attrelid::regclass, quote_ident(a.attname)) AS name FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid WHERE a.attacl IS NOT NULL AND c.oid >= 16384]],
  base_type = [[SELECT t.oid::regtype::text AS name FROM pg_type t WHERE t.typtype = 'b' AND t.oid >= 16384 AND t.typelem = 0
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')]],
  typed_table = [[SELECT c.oid::regclass::text AS name FROM pg_class c WHERE c.reloftype <> 0]],
  tablespace = [[SELECT c.oid::regclass::text AS name FROM pg_class c WHERE c.reltablespace <> 0 AND c.oid >= 16384]],
}

--- Raise if the database holds kinds orch cannot dump (unless skipped).
function C.check_unsupported(conn, skip)
  skip = skip or {}
  local found = {}
  local kinds = {}
  for k in pairs(UNSUPPORTED) do kinds[#kinds + 1] = k end
  table.sort(kinds)
  for _, kind in ipairs(kinds) do
    if not skip[kind] then
      for _, r in ipairs(conn:query(UNSUPPORTED[kind])) do
        found[#found + 1] = string.format("%s %s", kind:gsub("_", " "), r.name)
        found.first_kind = found.first_kind or kind
      end
    end
  end
  if #found > 0 then
    local shown = {}
    for i = 1, math.min(#found, 20) do shown[i] = "  - " .. found[i] end
    if #found > 20 then shown[#shown + 1] = string.format("  ... and %d more", #found - 20) end
    require("orch.sys").error("orch cannot back up these objects yet, so the backup was not taken:\n" ..
      table.concat(shown, "\n") .. "\nSkip a kind explicitly (it will be missing from the backup) with --skip KIND, e.g. --skip " ..
      found.first_kind, 1)
  end
end

-- ================================================================ build

function C.build(conn, opts)
  opts = opts or {}
  -- with only pg_catalog on the path, every pg_get_*def and regclass output is schema-qualified
  conn:query("SELECT set_config('search_path', 'pg_catalog', true)")
  C.check_unsupported(conn, opts.skip)
  local entries, by_obj, tables = {}, {}, {}
  local pre, post, acl_entries, comments = {}, {}, {}, {}
  local function owner_ok(o) return (opts.no_owner and nil) or o end

  -- -------------------------------------------------- objects and their DDL
  local objs = {}      -- pre-data objects: { key, kind, rank, name, entry fields }
  local function add_pre(key, rank, e)
    e.key, e.rank = key, rank
    objs[#objs + 1] = e
    by_obj[key] = e
    return e
  end

  local ext_member = [[NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = %s::regclass AND d.objid = %s AND d.deptype = 'e')]]

  -- schemas
  for _, r in ipairs(conn:query([[SELECT n.oid, n.nspname, pg_get_userbyid(n.nspowner) AS owner,
      obj_description(n.oid, 'pg_namespace') AS comment, n.nspacl::text AS acl
    FROM pg_namespace n WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND n.nspname <> 'public'
      AND ]] .. ext_member:format("'pg_namespace'", "n.oid") .. " ORDER BY n.nspname")) do
    add_pre("pg_namespace:" .. r.oid, 1, { tag = r.nspname, desc = "SCHEMA", defn = "CREATE SCHEMA " .. q(conn, r.nspname) .. ";\n",
      drop = "DROP SCHEMA " .. q(conn, r.nspname) .. ";\n", owner = r.owner, comment = r.comment, acl = r.acl,
      acl_obj = "SCHEMA " .. q(conn, r.nspname), comment_obj = "SCHEMA " .. q(conn, r.nspname), comment_tag = "SCHEMA " .. r.nspname })
  end

  -- extensions (plpgsql is part of every database)
  for _, r in ipairs(conn:query([[SELECT e.oid, e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname <> 'plpgsql' ORDER BY e.extname]])) do
    add_pre("pg_extension:" .. r.oid, 2, { tag = r.extname, desc = "EXTENSION",
      defn = string.format("CREATE EXTENSION IF NOT EXISTS %s WITH SCHEMA %s;\n", q(conn, r.extname), q(conn, r.nspname)),
      drop = "DROP EXTENSION " .. q(conn, r.extname) .. ";\n", schema_oid = nil })
  end

  -- types: enum, composite, domain, range
  for _, r in ipairs(conn:query([[SELECT t.oid, t.typname, n.nspname, t.typtype, pg_get_userbyid(t.typowner) AS owner,
      obj_description(t.oid, 'pg_type') AS comment, t.typacl::text AS acl, t.typrelid, t.typbasetype,
      format_type(t.typbasetype, t.typtypmod) AS basetype, t.typnotnull, t.typdefault,
      (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) AS relkind
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND t.typtype IN ('e', 'c', 'd', 'r')
      AND ]] .. ext_member:format("'pg_type'", "t.oid") .. [[
    ORDER BY n.nspname, t.typname]])) do
    local name = qn(conn, r.nspname, r.typname)
    local defn
    if r.typtype == "e" then
      local labels = {}
      for _, l in ipairs(conn:query("SELECT enumlabel FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder", r.oid)) do
        labels[#labels + 1] = "    " .. conn:quote_literal(l.enumlabel)
      end
      defn = string.format("CREATE TYPE %s AS ENUM (\n%s\n);\n", name, table.concat(labels, ",\n"))
    elseif r.typtype == "c" then
      if r.relkind ~= "c" then goto continue end   -- a table's row type comes with the table
      local cols = {}
      for _, a in ipairs(conn:query([[SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum]], r.typrelid)) do
        cols[#cols + 1] = "    " .. q(conn, a.attname) .. " " .. a.type
      end
      defn = string.format("CREATE TYPE %s AS (\n%s\n);\n", name, table.concat(cols, ",\n"))
    elseif r.typtype == "d" then
      local parts = { string.format("CREATE DOMAIN %s AS %s", name, r.basetype) }
      if r.typdefault then parts[#parts + 1] = " DEFAULT " .. r.typdefault end
      if r.typnotnull then parts[#parts + 1] = " NOT NULL" end
      for _, k in ipairs(conn:query([[SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
          WHERE contypid = $1 ORDER BY conname]], r.oid)) do
        parts[#parts + 1] = string.format("\n\tCONSTRAINT %s %s", q(conn, k.conname), k.def)
      end
      defn = table.concat(parts) .. ";\n"
    else
      local rg = conn:query([[SELECT format_type(rngsubtype, NULL) AS sub, format_type(rngmultitypid, NULL) AS multi,
          opc.opcname, opcn.nspname AS opcns, opc.opcdefault, rngcollation, rngcanonical::text AS canonical, rngsubdiff::text AS subdiff
        FROM pg_range JOIN pg_opclass opc ON opc.oid = rngsubopc JOIN pg_namespace opcn ON opcn.oid = opc.opcnamespace
        WHERE rngtypid = $1]], r.oid)[1]
      local p = { "    subtype = " .. rg.sub }
      if rg.multi then p[#p + 1] = "    multirange_type_name = " .. rg.multi end
      if not rg.opcdefault then p[#p + 1] = "    subtype_opclass = " .. qn(conn, rg.opcns, rg.opcname) end
      if rg.subdiff ~= "-" then p[#p + 1] = "    subtype_diff = " .. rg.subdiff end
      if rg.canonical ~= "-" then p[#p + 1] = "    canonical = " .. rg.canonical end
      defn = string.format("CREATE TYPE %s AS RANGE (\n%s\n);\n", name, table.concat(p, ",\n"))
    end
    add_pre("pg_type:" .. r.oid, 3, { tag = r.typname, desc = r.typtype == "d" and "DOMAIN" or "TYPE", namespace = r.nspname,
      defn = defn, drop = (r.typtype == "d" and "DROP DOMAIN " or "DROP TYPE ") .. name .. ";\n", owner = r.owner,
      comment = r.comment, comment_obj = (r.typtype == "d" and "DOMAIN " or "TYPE ") .. name,
      comment_tag = (r.typtype == "d" and "DOMAIN " or "TYPE ") .. r.typname,
      acl = r.acl, acl_obj = "TYPE " .. name, acl_public_default = "USAGE" })
    ::continue::
  end

  -- functions and procedures
  for _, r in ipairs(conn:query([[SELECT p.oid, p.proname, n.nspname, p.prokind, pg_get_functiondef(p.oid) AS def,
      pg_get_function_identity_arguments(p.oid) AS args, pg_get_userbyid(p.proowner) AS owner,
      obj_description(p.oid, 'pg_proc') AS comment, p.proacl::text AS acl
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND p.prokind IN ('f', 'p', 'w')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype IN ('e', 'i'))
      AND ]] .. ext_member:format("'pg_proc'", "p.oid") .. [[
    ORDER BY n.nspname, p.proname, args]])) do
    local kw = r.prokind == "p" and "PROCEDURE" or "FUNCTION"
    local sig = string.format("%s(%s)", qn(conn, r.nspname, r.proname), r.args)
    add_pre("pg_proc:" .. r.oid, 4, { tag = string.format("%s(%s)", r.proname, r.args), desc = kw, namespace = r.nspname,
      defn = r.def:gsub("\n$", "") .. ";\n", drop = "DROP " .. kw .. " " .. sig .. ";\n", owner = r.owner,
      comment = r.comment, comment_obj = kw .. " " .. sig, comment_tag = string.format("%s %s(%s)", kw, r.proname, r.args),
      acl = r.acl, acl_obj = kw .. " " .. sig, acl_public_default = "EXECUTE" })
  end

  -- aggregates (normal ones; ordered-set aggregates are refused above)
  for _, r in ipairs(conn:query([[SELECT p.oid, p.proname, n.nspname, pg_get_function_identity_arguments(p.oid) AS args,
      pg_get_userbyid(p.proowner) AS owner, obj_description(p.oid, 'pg_proc') AS comment, p.proacl::text AS acl,
      a.aggtransfn::regprocedure::text AS sfunc, a.aggtransfn::oid AS sfunc_oid, format_type(a.aggtranstype, NULL) AS stype,
      NULLIF(a.aggfinalfn, 0)::regproc::text AS finalfunc, NULLIF(a.aggcombinefn, 0)::regproc::text AS combinefunc,
      NULLIF(a.aggserialfn, 0)::regproc::text AS serialfunc, NULLIF(a.aggdeserialfn, 0)::regproc::text AS deserialfunc,
      a.agginitval, a.aggfinalextra, NULLIF(a.aggsortop, 0)::regoperator::text AS sortop, p.proparallel
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.prokind = 'a' AND a.aggkind = 'n' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
      AND ]] .. ext_member:format("'pg_proc'", "p.oid") .. " ORDER BY n.nspname, p.proname")) do
    local sig = string.format("%s(%s)", qn(conn, r.nspname, r.proname), r.args ~= "" and r.args or "*")
    local p = { "    SFUNC = " .. r.sfunc:gsub("%(.*$", ""), "    STYPE = " .. r.stype }
    if r.agginitval then p[#p + 1] = "    INITCOND = " .. conn:quote_literal(r.agginitval) end
    if r.finalfunc then p[#p + 1] = "    FINALFUNC = " .. r.finalfunc end
    if r.aggfinalextra then p[#p + 1] = "    FINALFUNC_EXTRA" end
    if r.combinefunc then p[#p + 1] = "    COMBINEFUNC = " .. r.combinefunc end
    if r.serialfunc then p[#p + 1] = "    SERIALFUNC = " .. r.serialfunc end
    if r.deserialfunc then p[#p + 1] = "    DESERIALFUNC = " .. r.deserialfunc end
    if r.sortop then p[#p + 1] = "    SORTOP = OPERATOR(" .. r.sortop:gsub("%(.*$", "") .. ")" end
    if r.proparallel == "s" then p[#p + 1] = "    PARALLEL = safe" elseif r.proparallel == "r" then p[#p + 1] = "    PARALLEL = restricted" end
    add_pre("pg_proc:" .. r.oid, 4, { tag = string.format("%s(%s)", r.proname, r.args ~= "" and r.args or "*"), desc = "AGGREGATE",
      namespace = r.nspname, defn = string.format("CREATE AGGREGATE %s (\n%s\n);\n", sig, table.concat(p, ",\n")),
      drop = "DROP AGGREGATE " .. sig .. ";\n", owner = r.owner, comment = r.comment, comment_obj = "AGGREGATE " .. sig,
      comment_tag = string.format("AGGREGATE %s(%s)", r.proname, r.args), acl = r.acl, acl_obj = "FUNCTION " .. sig, acl_public_default = "EXECUTE" })
  end

  -- sequences that are not identity columns'
  local seq_sets, owned_by = {}, {}
  for _, r in ipairs(conn:query([[SELECT c.oid, c.relname, n.nspname, pg_get_userbyid(c.relowner) AS owner, format_type(s.seqtypid, NULL) AS type,
      s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, obj_description(c.oid, 'pg_class') AS comment, c.relacl::text AS acl,
      (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i') AS identity_of,
      (SELECT format('%s.%s', d.refobjid::regclass, quote_ident(a.attname)) FROM pg_depend d
         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'a' AND d.refclassid = 'pg_class'::regclass) AS owned_by,
      (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'a'
         AND d.refclassid = 'pg_class'::regclass) AS owned_by_oid
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
    WHERE c.relkind = 'S' AND ]] .. ext_member:format("'pg_class'", "c.oid") .. " ORDER BY n.nspname, c.relname")) do
    local name = qn(conn, r.nspname, r.relname)
    local val = conn:query(string.format("SELECT last_value, is_called FROM %s", name))[1]
    seq_sets[#seq_sets + 1] = { name = name, tag = r.relname, ns = r.nspname, last = val.last_value, called = val.is_called,
                               key = "pg_class:" .. r.oid }
    if not r.identity_of then
      local p = { "CREATE SEQUENCE " .. name }
      if r.type ~= "bigint" then p[#p + 1] = "    AS " .. r.type end
      p[#p + 1] = "    START WITH " .. r.seqstart
      p[#p + 1] = "    INCREMENT BY " .. r.seqincrement
      p[#p + 1] = "    MINVALUE " .. r.seqmin
      p[#p + 1] = "    MAXVALUE " .. r.seqmax
      p[#p + 1] = "    CACHE " .. r.seqcache .. (r.seqcycle and "\n    CYCLE" or "")
      add_pre("pg_class:" .. r.oid, 5, { tag = r.relname, desc = "SEQUENCE", namespace = r.nspname, defn = table.concat(p, "\n") .. ";\n",
        drop = "DROP SEQUENCE " .. name .. ";\n", owner = r.owner, comment = r.comment, comment_obj = "SEQUENCE " .. name,
        comment_tag = "SEQUENCE " .. r.relname, acl = r.acl, acl_obj = "SEQUENCE " .. name })
      if r.owned_by then
        owned_by[#owned_by + 1] = { tag = r.relname, ns = r.nspname, defn = string.format("ALTER SEQUENCE %s OWNED BY %s;\n", name, r.owned_by),
          seq_key = "pg_class:" .. r.oid, table_key = "pg_class:" .. r.owned_by_oid }
      end
    end
  end

  -- tables (ordinary, partitioned, partitions), views, materialized views
  local rels = conn:query([[SELECT c.oid, c.relname, n.nspname, c.relkind, c.relpersistence, c.relispartition,
      pg_get_userbyid(c.relowner) AS owner, obj_description(c.oid, 'pg_class') AS comment, c.relacl::text AS acl,
      array_to_string(c.reloptions, ', ') AS options, c.relrowsecurity, c.relforcerowsecurity,
      CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partkey,
      CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS bound,
      (SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid) AS parents,
      CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END AS viewdef, c.relispopulated,
      am.amname
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam
    WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
      AND ]] .. ext_member:format("'pg_class'", "c.oid") .. " ORDER BY n.nspname, c.relname")
  local matviews = {}
  for _, r in ipairs(rels) do
    local name = qn(conn, r.nspname, r.relname)
    local key = "pg_class:" .. r.oid
    if r.relkind == "v" or r.relkind == "m" then
      local with = r.options and r.options ~= "" and (" WITH (" .. r.options .. ")") or ""
      local def = r.viewdef:gsub(";%s*$", "")
      local e
      if r.relkind == "v" then
        e = add_pre(key, 7, { tag = r.relname, desc = "VIEW", namespace = r.nspname,
          defn = string.format("CREATE VIEW %s%s AS\n%s;\n", name, with, def), drop = "DROP VIEW " .. name .. ";\n",
          owner = r.owner, comment = r.comment, comment_obj = "VIEW " .. name, comment_tag = "VIEW " .. r.relname,
          acl = r.acl, acl_obj = "TABLE " .. name })
      else
        e = add_pre(key, 7, { tag = r.relname, desc = "MATERIALIZED VIEW", namespace = r.nspname, tablespace = "", tableam = r.amname,
          defn = string.format("CREATE MATERIALIZED VIEW %s%s AS\n%s\n  WITH NO DATA;\n", name, with, def),
          drop = "DROP MATERIALIZED VIEW " .. name .. ";\n", owner = r.owner, comment = r.comment,
          comment_obj = "MATERIALIZED VIEW " .. name, comment_tag = "MATERIALIZED VIEW " .. r.relname,
          acl = r.acl, acl_obj = "TABLE " .. name })
        if r.relispopulated then matviews[#matviews + 1] = { key = key, name = name, tag = r.relname, ns = r.nspname } end
      end
      e.columns_of = r.oid
    else
      local cols, copycols = {}, {}
      for _, a in ipairs(conn:query([[SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, a.attidentity,
          a.attgenerated, pg_get_expr(d.adbin, d.adrelid) AS def, a.attislocal, a.attstorage, t.typstorage,
          CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_collation co
                  JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation,
          col_description(a.attrelid, a.attnum) AS comment,
          (SELECT format(E'SEQUENCE NAME %s\n    START WITH %s\n    INCREMENT BY %s\n    MINVALUE %s\n    MAXVALUE %s\n    CACHE %s%s',
              s.seqrelid::regclass, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN E'\n    CYCLE' ELSE '' END)
             FROM pg_depend d2 JOIN pg_sequence s ON s.seqrelid = d2.objid
             WHERE d2.refobjid = a.attrelid AND d2.refobjsubid = a.attnum AND d2.deptype = 'i' AND d2.classid = 'pg_class'::regclass) AS identity_seq
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum]], r.oid)) do
        if a.attgenerated == "" then copycols[#copycols + 1] = q(conn, a.attname) end
        if a.attislocal and not r.relispartition then
          local c = "    " .. q(conn, a.attname) .. " " .. a.type
          if a.collation then c = c .. " COLLATE " .. a.collation end
          if a.attgenerated == "s" then c = c .. " GENERATED ALWAYS AS (" .. a.def .. ") STORED"
          elseif a.def then c = c .. " DEFAULT " .. a.def end
          if a.attnotnull then c = c .. " NOT NULL" end
          if a.attidentity ~= "" then
            c = c .. string.format(" GENERATED %s AS IDENTITY (\n    %s\n)", a.attidentity == "a" and "ALWAYS" or "BY DEFAULT", a.identity_seq or "")
          end
          cols[#cols + 1] = c
        end
        if a.attstorage ~= a.typstorage then
          post[#post + 1] = { rank = 0, tag = r.relname .. " " .. a.attname, desc = "TABLE", namespace = r.nspname,
            defn = nil, extra_for = key, extra = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STORAGE %s;\n", name, q(conn, a.attname),
              ({ p = "PLAIN", e = "EXTERNAL", m = "MAIN", x = "EXTENDED" })[a.attstorage]) }
        end
        if a.comment then
          comments[#comments + 1] = { parent = key, tag = "COLUMN " .. r.relname .. "." .. a.attname, ns = r.nspname,
            defn = string.format("COMMENT ON COLUMN %s.%s IS %s;\n", name, q(conn, a.attname), conn:quote_literal(a.comment)) }
        end
      end
      -- valid CHECK constraints go inline; NOT VALID ones after the data
      for _, k in ipairs(conn:query([[SELECT conname, pg_get_constraintdef(oid) AS def, convalidated, obj_description(oid, 'pg_constraint') AS comment
          FROM pg_constraint WHERE conrelid = $1 AND contype = 'c' AND conislocal ORDER BY conname]], r.oid)) do
        if k.convalidated then
          cols[#cols + 1] = "    CONSTRAINT " .. q(conn, k.conname) .. " " .. k.def
        else
          post[#post + 1] = { rank = 1, tag = r.relname .. " " .. k.conname, desc = "CHECK CONSTRAINT", namespace = r.nspname, table_key = key,
            defn = string.format("ALTER TABLE %s\n    ADD CONSTRAINT %s %s;\n", name, q(conn, k.conname), k.def),
            drop = string.format("ALTER TABLE %s DROP CONSTRAINT %s;\n", name, q(conn, k.conname)) }
        end
        if k.comment then
          comments[#comments + 1] = { parent = key, tag = "CONSTRAINT " .. k.conname .. " ON " .. r.relname, ns = r.nspname,
            defn = string.format("COMMENT ON CONSTRAINT %s ON %s IS %s;\n", q(conn, k.conname), name, conn:quote_literal(k.comment)) }
        end
      end
      local defn
      local unlogged = r.relpersistence == "u" and "UNLOGGED " or ""
      if r.relispartition then
        local parent = r.parents
        defn = string.format("CREATE %sTABLE %s PARTITION OF %s%s\n%s", unlogged, name, parent,
          #cols > 0 and (" (\n" .. table.concat(cols, ",\n") .. "\n)") or "", r.bound)
      else
        defn = string.format("CREATE %sTABLE %s (\n%s\n)", unlogged, name, table.concat(cols, ",\n"))
        if r.parents then defn = defn .. "\nINHERITS (" .. r.parents .. ")" end
        if r.partkey then defn = defn .. "\nPARTITION BY " .. r.partkey end
      end
      if r.options and r.options ~= "" then defn = defn .. "\nWITH (" .. r.options .. ")" end
      defn = defn .. ";\n"
      local e = add_pre(key, 6, { tag = r.relname, desc = "TABLE", namespace = r.nspname, tablespace = "",
        tableam = r.relkind == "r" and r.amname or nil, defn = defn, drop = "DROP TABLE " .. name .. ";\n", owner = r.owner,
        comment = r.comment, comment_obj = "TABLE " .. name, comment_tag = "TABLE " .. r.relname,
        acl = r.acl, acl_obj = "TABLE " .. name })
      if r.relrowsecurity then
        post[#post + 1] = { rank = 6, tag = r.relname, desc = "ROW SECURITY", namespace = r.nspname, table_key = key,
          defn = string.format("ALTER TABLE %s ENABLE ROW LEVEL SECURITY;\n", name) .. (r.relforcerowsecurity and
            string.format("ALTER TABLE %s FORCE ROW LEVEL SECURITY;\n", name) or "") }
      end
      if r.relkind == "r" then
        tables[#tables + 1] = { key = key, tag = r.relname, ns = r.nspname, name = name, oid = r.oid,
          copy_out = string.format("COPY %s (%s) TO STDOUT", name, table.concat(copycols, ", ")),
          copy_in = #copycols > 0 and string.format("COPY %s (%s) FROM stdin;\n", name, table.concat(copycols, ", "))
                    or string.format("COPY %s  FROM stdin;\n", name) }
      end
      e.relkind = r.relkind
    end
  end

  -- -------------------------------------------------- post-data objects
  for _, k in ipairs(conn:query([[SELECT k.oid, k.conname, k.contype, k.conrelid, c.relname, c.relkind, n.nspname, pg_get_constraintdef(k.oid) AS def,
      k.confrelid, k.conindid, obj_description(k.oid, 'pg_constraint') AS comment
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE k.contype IN ('p', 'u', 'x', 'f') AND k.conparentid = 0 AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
      AND ]] .. ext_member:format("'pg_class'", "c.oid") .. " ORDER BY n.nspname, c.relname, k.conname")) do
    local tname = qn(conn, k.nspname, k.relname)
    local fk = k.contype == "f"
    post[#post + 1] = { rank = fk and 5 or 1, tag = k.relname .. " " .. k.conname, desc = fk and "FK CONSTRAINT" or "CONSTRAINT",
      namespace = k.nspname, tablespace = not fk and "" or nil, table_key = "pg_class:" .. k.conrelid,
      ref_key = fk and ("pg_class:" .. k.confrelid) or nil, ref_index = fk and k.conindid or nil, index_oid = (not fk) and k.conindid or nil,
      -- on a partitioned table the constraint must recurse to the partitions (ONLY would leave them without it)
      defn = string.format("ALTER TABLE %s%s\n    ADD CONSTRAINT %s %s;\n", k.relkind == "p" and "" or "ONLY ", tname, q(conn, k.conname), k.def),
      drop = string.format("ALTER TABLE ONLY %s DROP CONSTRAINT %s;\n", tname, q(conn, k.conname)),
      comment = k.comment, comment_obj = string.format("CONSTRAINT %s ON %s", q(conn, k.conname), tname),
      comment_tag = "CONSTRAINT " .. k.conname .. " ON " .. k.relname }
  end
  for _, i in ipairs(conn:query([[SELECT i.indexrelid, ic.relname, n.nspname, i.indrelid, pg_get_indexdef(i.indexrelid) AS def,
      obj_description(i.indexrelid, 'pg_class') AS comment
    FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
    JOIN pg_class tc ON tc.oid = i.indrelid
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND tc.relkind IN ('r', 'p', 'm')
      AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
      AND NOT ic.relispartition
      AND ]] .. ext_member:format("'pg_class'", "tc.oid") .. " ORDER BY n.nspname, ic.relname")) do
    post[#post + 1] = { rank = 2, tag = i.relname, desc = "INDEX", namespace = i.nspname, tablespace = "", table_key = "pg_class:" .. i.indrelid,
      index_oid = i.indexrelid, defn = i.def:gsub(" ON ONLY ", " ON ", 1) .. ";\n", drop = "DROP INDEX " .. qn(conn, i.nspname, i.relname) .. ";\n",
      comment = i.comment, comment_obj = "INDEX " .. qn(conn, i.nspname, i.relname), comment_tag = "INDEX " .. i.relname }
  end
  for _, r in ipairs(conn:query([[SELECT r.oid, r.rulename, c.relname, n.nspname, c.oid AS reloid, pg_get_ruledef(r.oid) AS def
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE r.rulename <> '_RETURN' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 3, 2]])) do
    post[#post + 1] = { rank = 3, tag = r.relname .. " " .. r.rulename, desc = "RULE", namespace = r.nspname, table_key = "pg_class:" .. r.reloid,
      defn = r.def .. "\n", drop = string.format("DROP RULE %s ON %s;\n", q(conn, r.rulename), qn(conn, r.nspname, r.relname)) }
  end
  for _, t in ipairs(conn:query([[SELECT t.oid, t.tgname, c.relname, n.nspname, c.oid AS reloid, pg_get_triggerdef(t.oid) AS def,
      t.tgenabled, obj_description(t.oid, 'pg_trigger') AS comment, t.tgfoid
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 3, 2]])) do
    local name = qn(conn, t.nspname, t.relname)
    local defn = t.def .. ";\n"
    if t.tgenabled == "D" then defn = defn .. string.format("ALTER TABLE %s DISABLE TRIGGER %s;\n", name, q(conn, t.tgname)) end
    post[#post + 1] = { rank = 4, tag = t.relname .. " " .. t.tgname, desc = "TRIGGER", namespace = t.nspname, table_key = "pg_class:" .. t.reloid,
      func_key = "pg_proc:" .. t.tgfoid, defn = defn, drop = string.format("DROP TRIGGER %s ON %s;\n", q(conn, t.tgname), name),
      comment = t.comment, comment_obj = string.format("TRIGGER %s ON %s", q(conn, t.tgname), name), comment_tag = "TRIGGER " .. t.tgname .. " ON " .. t.relname }
  end
  for _, p in ipairs(conn:query([[SELECT p.oid, p.polname, c.relname, n.nspname, c.oid AS reloid, p.polpermissive, p.polcmd,
      CASE WHEN p.polroles = '{0}' THEN 'PUBLIC' ELSE (SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname) FROM pg_roles WHERE oid = ANY (p.polroles)) END AS roles,
      pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS withcheck
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY 3, 2]])) do
    local name = qn(conn, p.nspname, p.relname)
    local cmd = ({ r = "SELECT", a = "INSERT", w = "UPDATE", d = "DELETE", ["*"] = "ALL" })[p.polcmd]
    local defn = string.format("CREATE POLICY %s ON %s%s FOR %s TO %s", q(conn, p.polname), name, p.polpermissive and "" or " AS RESTRICTIVE", cmd, p.roles)
    if p.qual then defn = defn .. " USING (" .. p.qual .. ")" end
    if p.withcheck then defn = defn .. " WITH CHECK (" .. p.withcheck .. ")" end
    post[#post + 1] = { rank = 6, tag = p.relname .. " " .. p.polname, desc = "POLICY", namespace = p.nspname, table_key = "pg_class:" .. p.reloid,
      defn = defn .. ";\n", drop = string.format("DROP POLICY %s ON %s;\n", q(conn, p.polname), name) }
  end

  -- -------------------------------------------------- order pre-data by dependencies
  local deps = {}   -- key -> set of keys it depends on
  for _, o in ipairs(objs) do deps[o.key] = {} end
  local rows = conn:query([[
    WITH d AS (
      SELECT d.classid::regclass::text AS cls, d.objid, d.refclassid::regclass::text AS refcls, d.refobjid
      FROM pg_depend d WHERE d.deptype IN ('n', 'a') AND d.objid >= 16384 AND d.refobjid >= 16384)
    SELECT CASE WHEN d.cls = 'pg_rewrite' THEN 'pg_class:' || r.ev_class
                WHEN d.cls = 'pg_attrdef' THEN 'pg_class:' || ad.adrelid
                WHEN d.cls = 'pg_constraint' AND dc.contypid <> 0 THEN 'pg_type:' || dc.contypid
                WHEN d.cls = 'pg_constraint' THEN 'pg_class:' || dc.conrelid
                WHEN d.cls = 'pg_type' AND t.typrelid <> 0 AND tr.relkind <> 'c' THEN 'pg_class:' || t.typrelid
                ELSE d.cls || ':' || d.objid END AS key,
           CASE WHEN d.refcls = 'pg_type' AND rt.typrelid <> 0 AND rtr.relkind <> 'c' THEN 'pg_class:' || rt.typrelid
                WHEN d.refcls = 'pg_type' AND rt.typelem <> 0 AND rt.typcategory = 'A' THEN 'pg_type:' || rt.typelem
                WHEN d.refcls = 'pg_constraint' THEN 'pg_class:' || rc.conrelid
                ELSE d.refcls || ':' || d.refobjid END AS ref
    FROM d
    LEFT JOIN pg_rewrite r ON d.cls = 'pg_rewrite' AND r.oid = d.objid
    LEFT JOIN pg_attrdef ad ON d.cls = 'pg_attrdef' AND ad.oid = d.objid
    LEFT JOIN pg_constraint dc ON d.cls = 'pg_constraint' AND dc.oid = d.objid
    LEFT JOIN pg_type t ON d.cls = 'pg_type' AND t.oid = d.objid LEFT JOIN pg_class tr ON tr.oid = t.typrelid
    LEFT JOIN pg_type rt ON d.refcls = 'pg_type' AND rt.oid = d.refobjid LEFT JOIN pg_class rtr ON rtr.oid = rt.typrelid
    LEFT JOIN pg_constraint rc ON d.refcls = 'pg_constraint' AND rc.oid = d.refobjid]])
  for _, r in ipairs(rows) do
    if deps[r.key] and by_obj[r.ref] and r.key ~= r.ref then
      -- a sequence owned by a table column must not wait for that table
      local o = by_obj[r.key]
      if not (o.desc == "SEQUENCE" and by_obj[r.ref].desc == "TABLE") then deps[r.key][r.ref] = true end
    end
  end
  -- schemas come before everything in them
  local ns_key = {}
  for _, o in ipairs(objs) do if o.desc == "SCHEMA" then ns_key[o.tag] = o.key end end
  for _, o in ipairs(objs) do
    if o.namespace and ns_key[o.namespace] then deps[o.key][ns_key[o.namespace]] = true end
  end
  -- topological sort with (rank, schema, name) as the tie-breaker
  local indeg, rev = {}, {}
  for _, o in ipairs(objs) do indeg[o.key] = 0; rev[o.key] = {} end
  for k, set in pairs(deps) do
    for ref in pairs(set) do indeg[k] = indeg[k] + 1; table.insert(rev[ref], k) end
  end
  local function before(a, b)
    if a.rank ~= b.rank then return a.rank < b.rank end
    if (a.namespace or "") ~= (b.namespace or "") then return (a.namespace or "") < (b.namespace or "") end
    return a.tag < b.tag
  end
  local ready, ordered = {}, {}
  for _, o in ipairs(objs) do if indeg[o.key] == 0 then ready[#ready + 1] = o end end
  while #ready > 0 do
    table.sort(ready, function(a, b) return before(b, a) end)
    local o = table.remove(ready)
    ordered[#ordered + 1] = o
    for _, k in ipairs(rev[o.key]) do
      indeg[k] = indeg[k] - 1
      if indeg[k] == 0 then ready[#ready + 1] = by_obj[k] end
    end
  end
  if #ordered < #objs then
    local stuck = {}
    for _, o in ipairs(objs) do if indeg[o.key] > 0 then stuck[#stuck + 1] = o.desc .. " " .. (o.namespace and (o.namespace .. ".") or "") .. o.tag end end
    require("orch.sys").error("circular dependencies between objects orch cannot order yet: " .. table.concat(stuck, ", "), 1)
  end

  -- -------------------------------------------------- emit the TOC
  local id = 0
  local function emit(e)
    id = id + 1
    e.id = id
    entries[#entries + 1] = e
    return e
  end
  local function dep_ids(keys)
    local out, seen = {}, {}
    for _, k in ipairs(keys) do
      local o = by_obj[k]
      if o and o.id and not seen[o.id] then out[#out + 1] = o.id; seen[o.id] = true end
    end
    table.sort(out)
    return out
  end
  local function emit_comment(o, parent_id)
    if not o.comment then return end
    emit { tag = o.comment_tag, desc = "COMMENT", section = "none", namespace = o.desc ~= "SCHEMA" and o.namespace or nil,
      defn = string.format("COMMENT ON %s IS %s;\n", o.comment_obj, conn:quote_literal(o.comment)), owner = owner_ok(o.owner), deps = { parent_id } }
  end
  local info = conn:query([[SELECT pg_encoding_to_char(encoding) AS enc, current_setting('standard_conforming_strings') AS scs,
    current_database() AS db, current_setting('server_version') AS version FROM pg_database WHERE datname = current_database()]])[1]
  emit { tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = string.format("SET client_encoding = '%s';\n", info.enc) }
  emit { tag = "STDSTRINGS", desc = "STDSTRINGS", section = "pre-data", defn = string.format("SET standard_conforming_strings = '%s';\n", info.scs) }
  emit { tag = "SEARCHPATH", desc = "SEARCHPATH", section = "pre-data", defn = "SELECT pg_catalog.set_config('search_path', '', false);\n" }
  for _, o in ipairs(ordered) do
    local d = {}
    for ref in pairs(deps[o.key]) do d[#d + 1] = ref end
    emit { tag = o.tag, desc = o.desc, section = "pre-data", namespace = o.desc ~= "SCHEMA" and o.namespace or nil,
      tablespace = o.tablespace or ((o.desc == "TABLE") and "" or nil), tableam = o.tableam,
      defn = o.defn, drop = o.drop, owner = owner_ok(o.owner), deps = dep_ids(d) }
    o.id = id
    emit_comment(o, o.id)
  end
  for _, s in ipairs(owned_by) do
    emit { tag = s.tag, desc = "SEQUENCE OWNED BY", section = "pre-data", namespace = s.ns, defn = s.defn, deps = dep_ids { s.seq_key, s.table_key } }
  end
  -- column storage settings ride on an extra pre-data entry per table
  for _, p in ipairs(post) do
    if p.extra_for then
      emit { tag = p.tag, desc = "TABLE", section = "pre-data", namespace = p.namespace, defn = p.extra, deps = dep_ids { p.extra_for } }
    end
  end
  for _, c in ipairs(comments) do
    emit { tag = c.tag, desc = "COMMENT", section = "none", namespace = c.ns, defn = c.defn, deps = dep_ids { c.parent } }
  end
  -- data
  for _, t in ipairs(tables) do
    local e = emit { tag = t.tag, desc = "TABLE DATA", section = "data", namespace = t.ns, had_dumper = true, copy = t.copy_in,
      deps = dep_ids { t.key } }
    t.id = e.id
    by_obj["data:" .. t.key] = e
  end
  for _, s in ipairs(seq_sets) do
    emit { tag = s.tag, desc = "SEQUENCE SET", section = "data", namespace = s.ns,
      defn = string.format("SELECT pg_catalog.setval(%s, %s, %s);\n", conn:quote_literal(s.name), s.last, s.called and "true" or "false"),
      deps = dep_ids { s.key } }
  end
  -- post-data, in pg_dump's kind order; FKs depend on the referenced key constraint
  local post_real = {}
  for _, p in ipairs(post) do if not p.extra_for then post_real[#post_real + 1] = p end end
  table.sort(post_real, function(a, b)
    if a.rank ~= b.rank then return a.rank < b.rank end
    if a.namespace ~= b.namespace then return a.namespace < b.namespace end
    return a.tag < b.tag
  end)
  local by_index = {}
  for _, p in ipairs(post_real) do
    local d = { p.table_key }
    if p.ref_key then d[#d + 1] = p.ref_key end
    local ids = dep_ids(d)
    if p.ref_index and by_index[p.ref_index] then ids[#ids + 1] = by_index[p.ref_index] end
    if p.func_key and by_obj[p.func_key] then ids[#ids + 1] = by_obj[p.func_key].id end
    local e = emit { tag = p.tag, desc = p.desc, section = "post-data", namespace = p.namespace, tablespace = p.tablespace,
      defn = p.defn, drop = p.drop, deps = ids }
    if p.index_oid then by_index[p.index_oid] = e.id end
    if p.comment then
      emit { tag = p.comment_tag, desc = "COMMENT", section = "none", namespace = p.namespace,
        defn = string.format("COMMENT ON %s IS %s;\n", p.comment_obj, conn:quote_literal(p.comment)), deps = { e.id } }
    end
  end
  -- privileges (pg_restore runs ACL entries in a second pass)
  for _, o in ipairs(ordered) do
    if o.acl and not opts.no_acl then
      local lines = {}
      if o.acl_public_default then lines[#lines + 1] = string.format("REVOKE ALL ON %s FROM PUBLIC;", o.acl_obj) end
      if o.owner then lines[#lines + 1] = string.format("REVOKE ALL ON %s FROM %s;", o.acl_obj, q(conn, o.owner)) end
      for _, g in ipairs(conn:query([[SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who,
          string_agg(a.privilege_type, ',' ORDER BY a.privilege_type) AS privs, a.is_grantable
        FROM aclexplode($1::aclitem[]) a GROUP BY 1, 3 ORDER BY 1, 3]], o.acl)) do
        lines[#lines + 1] = string.format("GRANT %s ON %s TO %s%s;", g.privs, o.acl_obj, g.who, g.is_grantable and " WITH GRANT OPTION" or "")
      end
      emit { tag = o.acl_obj:gsub('"', ""), desc = "ACL", section = "none", namespace = o.desc ~= "SCHEMA" and o.namespace or nil,
        defn = table.concat(lines, "\n") .. "\n", owner = owner_ok(o.owner), deps = { o.id } }
    end
  end
  -- materialized view data, refreshed last, in dependency order
  for _, o in ipairs(ordered) do
    for _, m in ipairs(matviews) do
      if m.key == o.key then
        emit { tag = m.tag, desc = "MATERIALIZED VIEW DATA", section = "post-data", namespace = m.ns,
          defn = string.format("REFRESH MATERIALIZED VIEW %s;\n", m.name), deps = { o.id } }
      end
    end
  end
  return { entries = entries, tables = tables, dbname = info.db, server_version = info.version, encoding = info.enc }
end

return C
