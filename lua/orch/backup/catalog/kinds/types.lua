--- Types: base types (with their shell types), enums, composite types,
-- domains (with their constraints), range types, and shell types never
-- defined. Array types, multiranges and a table's row type are not objects
-- of their own: references to them are references to their element type,
-- range type or table.
--
-- A base type and its I/O functions need each other: the functions take or
-- return the type, the type names the functions. As pg_dump does, a shell
-- type (CREATE TYPE t;) is written first and the functions' references to
-- the type are redirected to it (cat:redirect); a range type's canonical
-- function (a C function over the range type) gets the same treatment.
local K = {}

local function collate_clause(cat, ns, name)
  if not name then return "" end
  return " COLLATE " .. cat:qn(ns, name)
end

-- ---------------------------------------------------------------- base types

local ALIGN = { c = "char", s = "int2", i = "int4", d = "double" }
local STORAGE = { p = "plain", e = "external", x = "extended", m = "main" }

-- The functions a base type names (input, output, ...): they get its shell type.
local function base_functions(cat, oid)
  local sub = cat:since(140000) and "typsubscript" or "0"
  local out = {}
  for _, f in ipairs(cat:query(string.format([[SELECT f FROM (SELECT unnest(ARRAY[typinput, typoutput, typreceive, typsend,
      typmodin, typmodout, typanalyze, %s]::pg_catalog.oid[]) AS f FROM pg_catalog.pg_type WHERE oid = $1) s WHERE f >= 16384]], sub), oid)) do
    out[#out + 1] = f.f
  end
  return out
end

-- CREATE TYPE name (...) for base type row r.
local function base_type(cat, r, name)
  local b = cat:query([[SELECT t.typlen, t.typinput::pg_catalog.regproc::text AS input, t.typoutput::pg_catalog.regproc::text AS output,
      NULLIF(t.typreceive, 0)::pg_catalog.regproc::text AS receive, NULLIF(t.typsend, 0)::pg_catalog.regproc::text AS send,
      NULLIF(t.typmodin, 0)::pg_catalog.regproc::text AS modin, NULLIF(t.typmodout, 0)::pg_catalog.regproc::text AS modout,
      NULLIF(t.typanalyze, 0)::pg_catalog.regproc::text AS analyze, ]] ..
      (cat:since(140000) and "NULLIF(t.typsubscript, 0)::pg_catalog.regproc::text" or "NULL::text") .. [[ AS subscript,
      t.typcollation <> 0 AS collatable, pg_catalog.pg_get_expr(t.typdefaultbin, 0) AS defaultbin, t.typdefault,
      CASE WHEN t.typelem <> 0 THEN pg_catalog.format_type(t.typelem, NULL) END AS element,
      t.typcategory, t.typispreferred, t.typdelim, t.typalign, t.typstorage, t.typbyval
    FROM pg_catalog.pg_type t WHERE t.oid = $1]], r.oid)[1]
  local p = { "    INTERNALLENGTH = " .. (b.typlen == -1 and "variable" or tostring(b.typlen)),
    "    INPUT = " .. b.input, "    OUTPUT = " .. b.output }
  local function opt(k, v) if v then p[#p + 1] = "    " .. k .. " = " .. v end end
  opt("RECEIVE", b.receive); opt("SEND", b.send); opt("TYPMOD_IN", b.modin); opt("TYPMOD_OUT", b.modout); opt("ANALYZE", b.analyze)
  if b.collatable then p[#p + 1] = "    COLLATABLE = true" end
  if b.defaultbin then opt("DEFAULT", b.defaultbin) elseif b.typdefault then opt("DEFAULT", cat:lit(b.typdefault)) end
  opt("SUBSCRIPT", b.subscript)
  opt("ELEMENT", b.element)
  if b.typcategory ~= "U" then opt("CATEGORY", cat:lit(b.typcategory)) end
  if b.typispreferred then p[#p + 1] = "    PREFERRED = true" end
  if b.typdelim ~= "," then opt("DELIMITER", cat:lit(b.typdelim)) end
  opt("ALIGNMENT", ALIGN[b.typalign])
  opt("STORAGE", STORAGE[b.typstorage])
  if b.typbyval then p[#p + 1] = "    PASSEDBYVALUE" end
  return string.format("CREATE TYPE %s (\n%s\n);\n", name, table.concat(p, ",\n"))
end

-- The shell of type o (row r), written before the functions (oids) that
-- need the type to exist; their references to the type go to the shell.
local function shell(cat, r, name, o, funcs)
  local skey = "shell:" .. o.key
  cat:add { key = skey, kind = o.kind, desc = "SHELL TYPE", tag = r.typname, namespace = r.nspname, owner = r.owner,
    defn = "CREATE TYPE " .. name .. ";\n", deps = { "pg_namespace:" .. r.typnamespace } }
  cat:dep(o, skey)
  for _, f in ipairs(funcs) do cat:redirect("pg_proc:" .. f, o.key, skey) end
end

function K.collect(cat)
  -- references to array types and row types go to what they are made of
  for _, r in ipairs(cat:query([[SELECT t.oid, t.typelem, t.typrelid, t.typtype,
      (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) AS relkind
    FROM pg_catalog.pg_type t WHERE t.oid >= 16384 AND (t.typrelid <> 0
      OR EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid))]])) do
    if r.typelem ~= 0 then cat:alias("pg_type:" .. r.oid, "pg_type:" .. r.typelem)
    elseif r.relkind == "c" then cat:alias("pg_class:" .. r.typrelid, "pg_type:" .. r.oid)
    else cat:alias("pg_type:" .. r.oid, "pg_class:" .. r.typrelid) end
  end
  if cat:since(140000) then
    for _, r in ipairs(cat:query("SELECT rngmultitypid, rngtypid FROM pg_catalog.pg_range WHERE rngtypid >= 16384")) do
      cat:alias("pg_type:" .. r.rngmultitypid, "pg_type:" .. r.rngtypid)
    end
  end

  local rows = cat:query([[SELECT t.oid, t.typname, n.nspname, t.typnamespace, t.typtype, pg_catalog.pg_get_userbyid(t.typowner) AS owner,
      t.typrelid, pg_catalog.format_type(t.typbasetype, t.typtypmod) AS basetype, t.typnotnull, t.typdefault,
      (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) AS relkind,
      CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> (SELECT b.typcollation FROM pg_catalog.pg_type b WHERE b.oid = t.typbasetype)
        THEN (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = t.typcollation) END AS collname,
      CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> (SELECT b.typcollation FROM pg_catalog.pg_type b WHERE b.oid = t.typbasetype)
        THEN (SELECT cn.nspname FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = t.typcollation) END AS collns
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. [[ AND (t.typtype IN ('e', 'c', 'd', 'r') OR (t.typtype = 'p' AND NOT t.typisdefined)
        OR (t.typtype = 'b' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.oid = t.typelem AND e.typarray = t.oid)))
      AND ]] .. cat:not_ext("pg_type", "t.oid") .. [[
    ORDER BY n.nspname, t.typname]])
  for _, r in ipairs(rows) do
    local name = cat:qn(r.nspname, r.typname)
    local key = "pg_type:" .. r.oid
    local o = { key = key, kind = "type", desc = "TYPE", tag = r.typname, namespace = r.nspname, owner = r.owner,
      drop = "DROP TYPE " .. name .. ";\n", label = "TYPE " .. name, label_tag = "TYPE " .. r.typname,
      acl_obj = "TYPE " .. name, acl_tag = "TYPE " .. r.typname }
    if r.typtype == "b" then
      o.kind = "base_type"
      o.drop = "DROP TYPE " .. name .. " CASCADE;\n"
      o.defn = base_type(cat, r, name)
      cat:add(o)
      shell(cat, r, name, o, base_functions(cat, r.oid))
    elseif r.typtype == "p" then
      -- a shell type never filled in
      o.defn = "CREATE TYPE " .. name .. ";\n"
      cat:add(o)
    elseif r.typtype == "e" then
      local labels = {}
      for _, l in ipairs(cat:query("SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder", r.oid)) do
        labels[#labels + 1] = "    " .. cat:lit(l.enumlabel)
      end
      o.defn = string.format("CREATE TYPE %s AS ENUM (\n%s\n);\n", name, table.concat(labels, ",\n"))
      cat:add(o)
    elseif r.typtype == "c" then
      if r.relkind == "c" then
        local cols = {}
        o.columns, o.qname = {}, name
        for _, a in ipairs(cat:query([[SELECT a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
            CASE WHEN a.attcollation <> t.typcollation THEN co.collname END AS collname, cn.nspname AS collns
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
          LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum]], r.typrelid)) do
          cols[#cols + 1] = "    " .. cat:q(a.attname) .. " " .. a.type .. collate_clause(cat, a.collns, a.collname)
          o.columns[a.attnum] = a.attname
        end
        o.defn = string.format("CREATE TYPE %s AS (\n%s\n);\n", name, table.concat(cols, ",\n"))
        cat:add(o)
        -- its column comments are stored on the pg_class row
        cat.labels["pg_class:" .. r.typrelid] = { target = key, label = "TYPE " .. name, label_tag = "TYPE " .. r.typname }
      end
    elseif r.typtype == "d" then
      o.desc, o.kind = "DOMAIN", "domain"
      o.drop, o.label, o.label_tag = "DROP DOMAIN " .. name .. ";\n", "DOMAIN " .. name, "DOMAIN " .. r.typname
      local notnull_name
      local parts = {}
      for _, k in ipairs(cat:query([[SELECT oid, conname, contype, pg_catalog.pg_get_constraintdef(oid) AS def, convalidated
          FROM pg_catalog.pg_constraint WHERE contypid = $1 ORDER BY conname]], r.oid)) do
        local ckey = "pg_constraint:" .. k.oid
        local label = string.format("CONSTRAINT %s ON DOMAIN %s", cat:q(k.conname), name)
        if k.contype == "n" then
          -- PostgreSQL 17+: the domain's NOT NULL is a named constraint, written inline
          notnull_name = k.conname
          cat:add { key = ckey, parent = key, inline = true, desc = "CONSTRAINT", tag = r.typname .. " " .. k.conname,
            namespace = r.nspname, label = label, label_tag = "CONSTRAINT " .. k.conname .. " ON DOMAIN " .. r.typname }
        else
          local sep = {
            key = ckey, parent = key, desc = "CHECK CONSTRAINT", conname = k.conname, condef = k.def, section = "post-data", tag = r.typname .. " " .. k.conname,
            namespace = r.nspname, owner = r.owner, label = label, label_tag = "CONSTRAINT " .. k.conname .. " ON DOMAIN " .. r.typname,
            defn = string.format("ALTER DOMAIN %s\n    ADD CONSTRAINT %s %s;\n", name, cat:q(k.conname), k.def),
            drop = string.format("ALTER DOMAIN %s DROP CONSTRAINT %s;\n", name, cat:q(k.conname)),
          }
          if k.convalidated then
            -- written inside CREATE DOMAIN, unless a dependency cycle needs it apart
            sep.inline, sep.deps = true, { key }
            sep.split = function() end
            parts[#parts + 1] = sep
          else
            -- NOT VALID: it must be added after the data, as ALTER DOMAIN ... NOT VALID
            sep.deps = { key }
          end
          cat:add(sep)
        end
      end
      o.render = function()
        local p = { string.format("CREATE DOMAIN %s AS %s", name, r.basetype) }
        if r.collname then p[#p + 1] = collate_clause(cat, r.collns, r.collname) end
        if r.typdefault then p[#p + 1] = " DEFAULT " .. r.typdefault end
        if notnull_name then p[#p + 1] = "\n\tCONSTRAINT " .. cat:q(notnull_name) .. " NOT NULL"
        elseif r.typnotnull then p[#p + 1] = " NOT NULL" end
        for _, s in ipairs(parts) do
          if s.inline then p[#p + 1] = string.format("\n\tCONSTRAINT %s %s", cat:q(s.conname), s.condef) end
        end
        return table.concat(p) .. ";\n"
      end
      cat:add(o)
    else
      local rg = cat:query([[SELECT pg_catalog.format_type(rngsubtype, NULL) AS sub, ]] ..
          (cat:since(140000) and "pg_catalog.format_type(rngmultitypid, NULL)" or "NULL::text") .. [[ AS multi,
          opc.opcname, opcn.nspname AS opcns, opc.opcdefault, rngcanonical::pg_catalog.regproc::text AS canonical,
          rngcanonical::pg_catalog.oid AS canonical_oid,
          rngsubdiff::pg_catalog.regproc::text AS subdiff,
          CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> (SELECT typcollation FROM pg_catalog.pg_type WHERE oid = r.rngsubtype)
            THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) FROM pg_catalog.pg_collation co
                  JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = r.rngcollation) END AS coll
        FROM pg_catalog.pg_range r JOIN pg_catalog.pg_opclass opc ON opc.oid = r.rngsubopc
        JOIN pg_catalog.pg_namespace opcn ON opcn.oid = opc.opcnamespace WHERE r.rngtypid = $1]], r.oid)[1]
      local p = { "    subtype = " .. rg.sub }
      if rg.multi then p[#p + 1] = "    multirange_type_name = " .. rg.multi end
      if not rg.opcdefault then p[#p + 1] = "    subtype_opclass = " .. cat:qn(rg.opcns, rg.opcname) end
      if rg.coll then p[#p + 1] = "    collation = " .. rg.coll end
      if rg.subdiff ~= "-" then p[#p + 1] = "    subtype_diff = " .. rg.subdiff end
      if rg.canonical ~= "-" then p[#p + 1] = "    canonical = " .. rg.canonical end
      o.defn = string.format("CREATE TYPE %s AS RANGE (\n%s\n);\n", name, table.concat(p, ",\n"))
      cat:add(o)
      -- a canonical function takes and returns the range type: it is created over a shell
      if rg.canonical ~= "-" then shell(cat, r, name, o, { rg.canonical_oid }) end
    end
  end
end

return K
