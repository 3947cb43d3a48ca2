--- Relations: sequences, tables (ordinary, partitioned, partitions,
-- inheritance children), views and materialized views, with their data:
-- TABLE DATA, SEQUENCE SET and MATERIALIZED VIEW DATA entries.
--
-- Parts written inside CREATE TABLE — column defaults and validated CHECK
-- constraints — are inline parts of the table (see graph.lua): a cycle
-- through one (a serial column's sequence is owned by its own table) writes
-- it apart, as ALTER TABLE ... SET DEFAULT or ADD CONSTRAINT. A view's query
-- is an inline part too: in a cycle the view is first created with
-- placeholder columns and its query set in post-data.
local K = {}

local STORAGE = { p = "PLAIN", e = "EXTERNAL", m = "MAIN", x = "EXTENDED" }

-- ---------------------------------------------------------------- sequences

local function sequences(cat)
  for _, r in ipairs(cat:query([[SELECT c.oid, c.relname, n.nspname, pg_catalog.pg_get_userbyid(c.relowner) AS owner,
      pg_catalog.format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
      (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
         AND d.deptype = 'i' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS identity_of,
      (SELECT pg_catalog.format('%s.%s', d.refobjid::pg_catalog.regclass, pg_catalog.quote_ident(a.attname)) FROM pg_catalog.pg_depend d
         JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'a'
           AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS owned_by,
      (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
         AND d.deptype = 'a' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS owned_by_oid
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
    WHERE c.relkind = 'S' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname")) do
    local name = cat:qn(r.nspname, r.relname)
    local key = "pg_class:" .. r.oid
    local val = cat:query(string.format("SELECT last_value, is_called FROM %s", name))[1]
    if r.identity_of then
      -- an identity column's sequence is created by its table (see tables); only its value is data
      cat:alias(key, "pg_class:" .. r.identity_of)
    else
      local p = { "CREATE SEQUENCE " .. name }
      if r.type ~= "bigint" then p[#p + 1] = "    AS " .. r.type end
      p[#p + 1] = "    START WITH " .. r.seqstart
      p[#p + 1] = "    INCREMENT BY " .. r.seqincrement
      p[#p + 1] = "    MINVALUE " .. r.seqmin
      p[#p + 1] = "    MAXVALUE " .. r.seqmax
      p[#p + 1] = "    CACHE " .. r.seqcache .. (r.seqcycle and "\n    CYCLE" or "")
      cat:add { key = key, kind = "sequence", desc = "SEQUENCE", tag = r.relname, namespace = r.nspname, owner = r.owner,
        defn = table.concat(p, "\n") .. ";\n", drop = "DROP SEQUENCE " .. name .. ";\n",
        label = "SEQUENCE " .. name, label_tag = "SEQUENCE " .. r.relname, acl_obj = "SEQUENCE " .. name,
        acl_tag = "SEQUENCE " .. r.relname }
      if r.owned_by then
        cat:add { key = "ownedby:" .. key, kind = "sequence", desc = "SEQUENCE OWNED BY", tag = r.relname, namespace = r.nspname,
          defn = string.format("ALTER SEQUENCE %s OWNED BY %s;\n", name, r.owned_by),
          deps = { key, "pg_class:" .. r.owned_by_oid } }
      end
    end
    cat:add { key = "seqset:" .. key, kind = "sequence", desc = "SEQUENCE SET", section = "data", tag = r.relname, namespace = r.nspname,
      defn = string.format("SELECT pg_catalog.setval(%s, %s, %s);\n", cat:lit(name), val.last_value, val.is_called and "true" or "false"),
      deps = { r.identity_of and ("pg_class:" .. r.identity_of) or key } }
  end
end

-- ---------------------------------------------------------------- tables

-- Every column of every relation orch dumps, by relation oid.
local function columns(cat)
  local by_rel = {}
  for _, a in ipairs(cat:query([[SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
      a.attnotnull, a.attidentity, a.attgenerated, d.oid AS defoid, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def,
      a.attislocal, a.attstorage, t.typstorage,
      CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
        THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) FROM pg_catalog.pg_collation co
              JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation,
      (SELECT pg_catalog.format(E'SEQUENCE NAME %s\n    START WITH %s\n    INCREMENT BY %s\n    MINVALUE %s\n    MAXVALUE %s\n    CACHE %s%s',
          s.seqrelid::pg_catalog.regclass, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN E'\n    CYCLE' ELSE '' END)
         FROM pg_catalog.pg_depend d2 JOIN pg_catalog.pg_sequence s ON s.seqrelid = d2.objid
         WHERE d2.refobjid = a.attrelid AND d2.refobjsubid = a.attnum AND d2.deptype = 'i'
           AND d2.classid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS identity_seq
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm') AND ]] .. cat:user_ns("n.nspname") .. [[
    ORDER BY a.attrelid, a.attnum]])) do
    local l = by_rel[a.attrelid]
    if not l then l = {}; by_rel[a.attrelid] = l end
    l[#l + 1] = a
  end
  return by_rel
end

-- Named NOT NULL constraints (PostgreSQL 18 keeps them in pg_constraint), by relation and column.
local function notnull_names(cat)
  local out = {}
  if not cat:since(180000) then return out end
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conrelid, k.conkey[1] AS attnum, k.conname FROM pg_catalog.pg_constraint k
      WHERE k.contype = 'n' AND k.conrelid >= 16384]])) do
    out[k.conrelid] = out[k.conrelid] or {}
    out[k.conrelid][k.attnum] = k
  end
  return out
end

local function tables(cat, r, cols, nn)
  local name = cat:qn(r.nspname, r.relname)
  local key = "pg_class:" .. r.oid
  local t = { key = key, kind = r.relkind == "p" and "table" or "table", desc = "TABLE", tag = r.relname, namespace = r.nspname,
    owner = r.owner, tablespace = "", tableam = r.relkind == "r" and r.amname or nil, relkind = r.relkind,
    drop = "DROP TABLE " .. name .. ";\n", label = "TABLE " .. name, label_tag = "TABLE " .. r.relname,
    acl_obj = "TABLE " .. name, acl_tag = "TABLE " .. r.relname, qname = name, columns = {} }
  cat:add(t)
  local coldefs, copycols, extra, checks = {}, {}, {}, {}
  for _, a in ipairs(cols or {}) do
    t.columns[a.attnum] = a.attname
    if a.attgenerated == "" then copycols[#copycols + 1] = cat:q(a.attname) end
    local col = { a = a }
    if a.defoid then
      local dkey = "pg_attrdef:" .. a.defoid
      local qcol = cat:q(a.attname)
      local part = { key = dkey, parent = key, inline = true, desc = "DEFAULT", tag = r.relname .. " " .. a.attname,
        namespace = r.nspname, owner = r.owner,
        defn = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET DEFAULT %s;\n", name, qcol, a.def),
        drop = string.format("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT;\n", name, qcol) }
      -- a generated column's expression cannot be set apart
      if a.attgenerated == "" then part.split = function() end end
      cat:add(part)
      col.default = part
    end
    -- columns a partition or an inheritance child gets from its parents are not written again
    if a.attislocal and not r.relispartition then coldefs[#coldefs + 1] = col end
    if a.attstorage ~= a.typstorage then
      extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STORAGE %s;\n", name, cat:q(a.attname), STORAGE[a.attstorage])
    end
    local n = nn[r.oid] and nn[r.oid][a.attnum]
    if n then
      col.notnull_name = n.conname
      cat:add { key = "pg_constraint:" .. n.oid, parent = key, inline = true, desc = "CONSTRAINT", tag = r.relname .. " " .. n.conname,
        namespace = r.nspname, label = string.format("CONSTRAINT %s ON %s", cat:q(n.conname), name),
        label_tag = "CONSTRAINT " .. n.conname .. " ON " .. r.relname }
    end
  end
  -- CHECK constraints: validated ones inline, NOT VALID ones after the data
  for _, k in ipairs(cat:query([[SELECT oid, conname, pg_catalog.pg_get_constraintdef(oid) AS def, convalidated, conislocal
      FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'c' ORDER BY conname]], r.oid)) do
    local ckey = "pg_constraint:" .. k.oid
    local label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), name)
    local part = { key = ckey, parent = key, desc = "CHECK CONSTRAINT", section = "post-data", tag = r.relname .. " " .. k.conname,
      namespace = r.nspname, owner = r.owner, conname = k.conname, condef = k.def, label = label,
      label_tag = "CONSTRAINT " .. k.conname .. " ON " .. r.relname,
      defn = string.format("ALTER TABLE %s%s\n    ADD CONSTRAINT %s %s;\n", r.relkind == "p" and "" or "ONLY ", name, cat:q(k.conname), k.def),
      drop = string.format("ALTER TABLE %s DROP CONSTRAINT %s;\n", name, cat:q(k.conname)) }
    if not k.conislocal then
      -- inherited from a parent, which creates it
      cat:cover(ckey, "inherited")
      cat.labels[ckey] = { target = key, label = label, label_tag = part.label_tag }
    elseif k.convalidated then
      part.inline, part.split = true, function() end
      cat:add(part)
      checks[#checks + 1] = part
    else
      part.deps = { key }
      cat:add(part)
    end
  end
  t.render = function()
    local lines = {}
    for _, c in ipairs(coldefs) do
      local a = c.a
      local s = "    " .. cat:q(a.attname) .. " " .. a.type
      if a.collation then s = s .. " COLLATE " .. a.collation end
      if a.attgenerated == "s" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ") STORED"
      elseif a.attgenerated == "v" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ") VIRTUAL"
      elseif c.default and c.default.inline then s = s .. " DEFAULT " .. a.def end
      if a.attnotnull then s = s .. (c.notnull_name and (" CONSTRAINT " .. cat:q(c.notnull_name)) or "") .. " NOT NULL" end
      if a.attidentity ~= "" then
        s = s .. string.format(" GENERATED %s AS IDENTITY (\n    %s\n)", a.attidentity == "a" and "ALWAYS" or "BY DEFAULT", a.identity_seq or "")
      end
      lines[#lines + 1] = s
    end
    for _, k in ipairs(checks) do
      if k.inline then lines[#lines + 1] = "    CONSTRAINT " .. cat:q(k.conname) .. " " .. k.condef end
    end
    local unlogged = r.relpersistence == "u" and "UNLOGGED " or ""
    local defn
    if r.relispartition then
      defn = string.format("CREATE %sTABLE %s PARTITION OF %s%s\n%s", unlogged, name, r.parents,
        #lines > 0 and (" (\n" .. table.concat(lines, ",\n") .. "\n)") or "", r.bound)
    else
      defn = string.format("CREATE %sTABLE %s (\n%s\n)", unlogged, name, table.concat(lines, ",\n"))
      if r.parents then defn = defn .. "\nINHERITS (" .. r.parents .. ")" end
    end
    if r.partkey then defn = defn .. "\nPARTITION BY " .. r.partkey end
    if r.options and r.options ~= "" then defn = defn .. "\nWITH (" .. r.options .. ")" end
    local out = { defn .. ";\n" }
    -- defaults of inherited or partition columns are this table's own
    for _, a in ipairs(cols or {}) do
      local d = a.defoid and cat.objects["pg_attrdef:" .. a.defoid]
      if d and d.inline and not (a.attislocal and not r.relispartition) and a.attgenerated == "" then out[#out + 1] = d.defn end
    end
    for _, x in ipairs(extra) do out[#out + 1] = x end
    return table.concat(out)
  end
  if r.relrowsecurity then
    cat:add { key = "rowsecurity:" .. key, kind = "policy", desc = "ROW SECURITY", section = "post-data", tag = r.relname,
      namespace = r.nspname, owner = r.owner, deps = { key },
      defn = string.format("ALTER TABLE %s ENABLE ROW LEVEL SECURITY;\n", name) ..
        (r.relforcerowsecurity and string.format("ALTER TABLE %s FORCE ROW LEVEL SECURITY;\n", name) or "") }
  end
  if r.relkind == "r" then
    local list = table.concat(copycols, ", ")
    cat:add { key = "data:" .. key, kind = "table_data", desc = "TABLE DATA", section = "data", tag = r.relname, namespace = r.nspname,
      deps = { key }, data = { table_key = key, name = name, oid = r.oid,
        copy_out = string.format("COPY %s (%s) TO STDOUT", name, list),
        copy_in = #copycols > 0 and string.format("COPY %s (%s) FROM stdin;\n", name, list) or string.format("COPY %s  FROM stdin;\n", name) } }
  end
end

-- ---------------------------------------------------------------- views

local function views(cat, r, cols, rules, refresh)
  local name = cat:qn(r.nspname, r.relname)
  local key = "pg_class:" .. r.oid
  local with = r.options and r.options ~= "" and (" WITH (" .. r.options .. ")") or ""
  local def = (r.viewdef or ""):gsub(";%s*$", "")
  local o = { key = key, tag = r.relname, namespace = r.nspname, owner = r.owner, relkind = r.relkind, acl_obj = "TABLE " .. name,
    qname = name, columns = {} }
  for _, a in ipairs(cols or {}) do o.columns[a.attnum] = a.attname end
  local rule = rules[r.oid]
  if r.relkind == "v" then
    o.kind, o.desc, o.drop = "view", "VIEW", "DROP VIEW " .. name .. ";\n"
    o.label, o.label_tag, o.acl_tag = "VIEW " .. name, "VIEW " .. r.relname, "TABLE " .. r.relname
    cat:add(o)
    local part
    if rule then
      part = cat:add { key = "pg_rewrite:" .. rule, parent = key, inline = true, desc = "RULE", section = "post-data",
        tag = r.relname .. " _RETURN", namespace = r.nspname, owner = r.owner,
        defn = string.format("CREATE OR REPLACE VIEW %s%s AS\n%s;\n", name, with, def), split = function() end }
    end
    o.render = function()
      if not part or part.inline then return string.format("CREATE VIEW %s%s AS\n%s;\n", name, with, def) end
      -- its query is set in post-data (a cycle): for now, the right columns with no query behind them
      local p = {}
      for _, a in ipairs(cols or {}) do
        p[#p + 1] = string.format("NULL::%s%s AS %s", a.type, a.collation and (" COLLATE " .. a.collation) or "", cat:q(a.attname))
      end
      return string.format("CREATE VIEW %s AS\n SELECT %s;\n", name, table.concat(p, ",\n    "))
    end
  else
    o.kind, o.desc, o.drop = "materialized_view", "MATERIALIZED VIEW", "DROP MATERIALIZED VIEW " .. name .. ";\n"
    o.label, o.label_tag, o.acl_tag = "MATERIALIZED VIEW " .. name, "MATERIALIZED VIEW " .. r.relname, "TABLE " .. r.relname
    o.tablespace, o.tableam = "", r.amname
    o.defn = string.format("CREATE MATERIALIZED VIEW %s%s AS\n%s\n  WITH NO DATA;\n", name, with, def)
    cat:add(o)
    if rule then cat:alias("pg_rewrite:" .. rule, key) end
    if r.relispopulated then
      local deps = { key }
      for _, other in ipairs(refresh[r.oid] or {}) do deps[#deps + 1] = "refresh:pg_class:" .. other end
      cat:add { key = "refresh:" .. key, kind = "materialized_view", desc = "MATERIALIZED VIEW DATA", section = "post-data",
        tag = r.relname, namespace = r.nspname, owner = r.owner, deps = deps,
        defn = string.format("REFRESH MATERIALIZED VIEW %s;\n", name) }
    end
  end
end

-- ---------------------------------------------------------------- collect

function K.collect(cat)
  sequences(cat)
  local cols = columns(cat)
  local nn = notnull_names(cat)
  local rules, refresh = {}, {}
  for _, r in ipairs(cat:query([[SELECT r.oid, r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.rulename = '_RETURN' AND r.ev_class >= 16384]])) do
    rules[r.ev_class] = r.oid
  end
  -- a materialized view reading another is refreshed after it
  for _, r in ipairs(cat:query([[SELECT DISTINCT rw.ev_class AS mv, d.refobjid AS other FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      JOIN pg_catalog.pg_class a ON a.oid = rw.ev_class AND a.relkind = 'm'
      JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND b.relkind = 'm'
      WHERE rw.ev_class <> d.refobjid]])) do
    refresh[r.mv] = refresh[r.mv] or {}
    table.insert(refresh[r.mv], r.other)
  end
  for _, r in ipairs(cat:query([[SELECT c.oid, c.relname, n.nspname, c.relkind, c.relpersistence, c.relispartition,
      pg_catalog.pg_get_userbyid(c.relowner) AS owner, pg_catalog.array_to_string(c.reloptions, ', ') AS options,
      c.relrowsecurity, c.relforcerowsecurity,
      CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partkey,
      CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END AS bound,
      (SELECT pg_catalog.string_agg(i.inhparent::pg_catalog.regclass::text, ', ' ORDER BY i.inhseqno) FROM pg_catalog.pg_inherits i
        WHERE i.inhrelid = c.oid) AS parents,
      CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS viewdef, c.relispopulated, am.amname
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
    WHERE c.relkind IN ('r', 'p', 'v', 'm') AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname")) do
    if r.relkind == "v" or r.relkind == "m" then views(cat, r, cols[r.oid], rules, refresh)
    else tables(cat, r, cols[r.oid], nn) end
  end
end

return K
