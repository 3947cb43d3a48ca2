--- Relations: sequences, tables (ordinary, partitioned, partitions,
-- inheritance children, typed tables), views and materialized views, with
-- their data: TABLE DATA, SEQUENCE SET and MATERIALIZED VIEW DATA entries.
--
-- Written the way pg_dump writes them:
--   * a partition is created as a table of its own, with every column in its
--     own order, and attached to its parent by a TABLE ATTACH entry (so a
--     sub-partition keeps its PARTITION BY, and column order or dropped
--     columns that differ from the parent's come back as they were);
--   * an inheritance child lists only its local columns and INHERITS the
--     rest; a default or NOT NULL it has on an inherited column that its
--     parents do not give it is set apart (DEFAULT entry, SET NOT NULL);
--   * per-column settings CREATE TABLE has no syntax for (statistics
--     targets, storage, compression, attribute options), REPLICA IDENTITY
--     FULL/NOTHING and FORCE ROW LEVEL SECURITY follow the CREATE in the
--     table's own entry; the tablespace and access method are the entry's.
--
-- Parts written inside CREATE TABLE — column defaults and validated CHECK
-- constraints — are inline parts of the table (see graph.lua): a cycle
-- through one (a serial column's sequence is owned by its own table) writes
-- it apart, as ALTER TABLE ... SET DEFAULT or ADD CONSTRAINT. A view's query
-- is an inline part too: in a cycle the view is first created with
-- placeholder columns and its query set in post-data.
--
-- Every catalog is read once, in bulk (one query for all relations, one for
-- all columns, ...), whatever the number of tables.
local sys = require "orch.sys"

local K = {}

local STORAGE = { p = "PLAIN", e = "EXTERNAL", m = "MAIN", x = "EXTENDED" }
local COMPRESSION = { p = "pglz", l = "lz4" }
local ENUM_HASH_OPS = [[(SELECT oc.oid FROM pg_catalog.pg_opclass oc JOIN pg_catalog.pg_am a ON a.oid = oc.opcmethod
    WHERE oc.opcname = 'enum_ops' AND oc.opcnamespace = 'pg_catalog'::pg_catalog.regnamespace AND a.amname = 'hash')]]

--- SQL: the storage parameters of an options array (reloptions and the
-- like) as pg_dump writes them: name='value', ... (NULL when there are
-- none). prefix: "toast." for a TOAST table's. Exported for other kinds.
function K.options_sql(col, prefix, exclude)
  return string.format([[(SELECT pg_catalog.string_agg(%spg_catalog.quote_ident(o.option_name) || '=' || pg_catalog.quote_literal(o.option_value), ', ' ORDER BY o.n)
      FROM pg_catalog.pg_options_to_table(%s) WITH ORDINALITY o(option_name, option_value, n)%s)]],
    prefix and ("'" .. prefix .. "' || ") or "", col, exclude and (" WHERE o.option_name NOT IN (" .. exclude .. ")") or "")
end

-- ---------------------------------------------------------------- sequences

-- last_value and is_called of every sequence, by oid. PostgreSQL 18 reads
-- them with the sequence rows (pg_get_sequence_data). Older servers give
-- the last value of a sequence that has been called in the same query
-- (pg_sequence_last_value); the others, never called or reset, are read
-- from the sequences themselves, many per statement.
local function sequence_values(cat, rows)
  local out, rest = {}, {}
  for _, r in ipairs(rows) do
    if r.last_value ~= nil then
      -- on 18 is_called comes with the value; before, a value means it was called
      local called = true
      if cat:since(180000) then called = r.is_called end
      out[r.oid] = { last_value = r.last_value, is_called = called }
    else rest[#rest + 1] = r end
  end
  if cat:since(180000) then return out end
  local CHUNK = 200
  for i = 1, #rest, CHUNK do
    local parts = {}
    for j = i, math.min(i + CHUNK - 1, #rest) do
      local r = rest[j]
      parts[#parts + 1] = string.format("SELECT %d::pg_catalog.oid AS oid, last_value, is_called FROM %s", r.oid, cat:qn(r.nspname, r.relname))
    end
    for _, v in ipairs(cat:query(table.concat(parts, "\nUNION ALL\n"))) do out[v.oid] = v end
  end
  return out
end

local function sequences(cat)
  local rows = cat:query([[SELECT c.oid, c.relname, n.nspname, pg_catalog.pg_get_userbyid(c.relowner) AS owner, c.relpersistence,
      pg_catalog.format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
      (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
         AND d.deptype = 'i' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS identity_of,
      (SELECT pg_catalog.format('%s.%s', d.refobjid::pg_catalog.regclass, pg_catalog.quote_ident(a.attname)) FROM pg_catalog.pg_depend d
         JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'a'
           AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS owned_by,
      (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
         AND d.deptype = 'a' AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) AS owned_by_oid]] ..
      (cat:since(180000) and ", sd.last_value, sd.is_called" or ", pg_catalog.pg_sequence_last_value(c.oid) AS last_value") .. [[
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid]] ..
      (cat:since(180000) and " LEFT JOIN LATERAL pg_catalog.pg_get_sequence_data(c.oid) sd ON true" or "") .. [[
    WHERE c.relkind = 'S' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname")
  local values = sequence_values(cat, rows)
  for _, r in ipairs(rows) do
    local name = cat:qn(r.nspname, r.relname)
    local key = "pg_class:" .. r.oid
    local val = values[r.oid]
    if not val or val.last_value == nil then
      sys.error(string.format("the backup was not taken: the state of sequence %s cannot be read (no SELECT privilege on it, " ..
        "or an unlogged sequence on a standby); back up as a role that can read it", name), 1)
    end
    if r.identity_of then
      -- an identity column's sequence is created by its table (see tables); only its value is data
      cat:alias(key, "pg_class:" .. r.identity_of)
    else
      local p = { string.format("CREATE %sSEQUENCE %s", r.relpersistence == "u" and "UNLOGGED " or "", name) }
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
          owner = r.owner, defn = string.format("ALTER SEQUENCE %s OWNED BY %s;\n", name, r.owned_by),
          deps = { key, "pg_class:" .. r.owned_by_oid } }
      end
    end
    cat:add { key = "seqset:" .. key, kind = "sequence", desc = "SEQUENCE SET", section = "data", tag = r.relname, namespace = r.nspname,
      owner = r.owner,
      defn = string.format("SELECT pg_catalog.setval(%s, %s, %s);\n", cat:lit(name), val.last_value, val.is_called and "true" or "false"),
      deps = { r.identity_of and ("pg_class:" .. r.identity_of) or key } }
  end
end

-- ---------------------------------------------------------------- what tables are made of

-- Every column of every relation orch dumps, by relation oid, in attnum order.
local function columns(cat)
  local by_rel = {}
  local compression = cat:since(140000) and "a.attcompression" or "''::\"char\""
  for _, a in ipairs(cat:query([[SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
      a.attnotnull, a.attidentity, a.attgenerated, d.oid AS defoid, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def,
      a.attislocal, a.attinhcount, a.attstorage, t.typstorage, ]] .. compression .. [[::text AS compression,
      NULLIF(a.attstattarget, -1) AS stattarget, pg_catalog.array_to_string(a.attoptions, ', ') AS attoptions,
      CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
        THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) FROM pg_catalog.pg_collation co
              JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation,
      CASE WHEN a.attidentity <> '' THEN
        (SELECT pg_catalog.format(E'SEQUENCE NAME %s\n    START WITH %s\n    INCREMENT BY %s\n    MINVALUE %s\n    MAXVALUE %s\n    CACHE %s%s%s',
            s.seqrelid::pg_catalog.regclass, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache,
            CASE WHEN s.seqcycle THEN E'\n    CYCLE' ELSE '' END,
            ]] .. (cat:since(150000) and [[CASE WHEN sc.relpersistence <> c.relpersistence
              THEN CASE sc.relpersistence WHEN 'u' THEN E'\n    UNLOGGED' ELSE E'\n    LOGGED' END ELSE '' END]] or "''") .. [[)
         FROM pg_catalog.pg_depend d2 JOIN pg_catalog.pg_sequence s ON s.seqrelid = d2.objid JOIN pg_catalog.pg_class sc ON sc.oid = s.seqrelid
         WHERE d2.refobjid = a.attrelid AND d2.refobjsubid = a.attnum AND d2.deptype = 'i'
           AND d2.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d2.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass) END AS identity_seq
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

-- NOT NULL constraints (PostgreSQL 18 keeps them in pg_constraint, with
-- names, NO INHERIT and NOT VALID), by relation and column number.
local function notnulls(cat)
  local out = {}
  if not cat:since(180000) then return out end
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conrelid, k.conkey[1] AS attnum, k.conname, k.connoinherit, k.conislocal, k.convalidated,
      pg_catalog.pg_get_constraintdef(k.oid) AS def
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE k.contype = 'n' AND ]] .. cat:user_ns("n.nspname"))) do
    out[k.conrelid] = out[k.conrelid] or {}
    out[k.conrelid][k.attnum] = k
  end
  return out
end

-- CHECK constraints of every table, by relation oid, by name.
local function checks(cat)
  local out = {}
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conrelid, k.conname, pg_catalog.pg_get_constraintdef(k.oid) AS def, k.convalidated, k.conislocal
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE k.contype = 'c' AND c.relkind IN ('r', 'p') AND ]] .. cat:user_ns("n.nspname") .. " ORDER BY k.conrelid, k.conname")) do
    local l = out[k.conrelid]
    if not l then l = {}; out[k.conrelid] = l end
    l[#l + 1] = k
  end
  return out
end

-- Parents of every table (inheritance and partitioning), by child oid, in inhseqno order.
local function parents(cat)
  local out = {}
  for _, r in ipairs(cat:query([[SELECT i.inhrelid, i.inhparent, i.inhparent::pg_catalog.regclass::text AS name
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE c.relkind IN ('r', 'p')
    ORDER BY i.inhrelid, i.inhseqno]])) do
    local l = out[r.inhrelid]
    if not l then l = {}; out[r.inhrelid] = l end
    l[#l + 1] = r
  end
  return out
end

-- ---------------------------------------------------------------- tables

-- The column of a parent table with this name, or nil.
local function parent_column(ctx, parent_oid, name)
  local p = ctx.by_name[parent_oid]
  return p and p[name]
end

-- The same-named constraints of every ancestor of table oid (find(parent oid)
-- returns the parent's, or nil): their keys, and whether one is NOT VALID.
local function ancestors_constraint(ctx, oid, find)
  local keys, invalid, seen = {}, false, {}
  local stack = { oid }
  while #stack > 0 do
    local cur = table.remove(stack)
    for _, p in ipairs(ctx.parents[cur] or {}) do
      if not seen[p.inhparent] then
        seen[p.inhparent] = true
        local k = find(p.inhparent)
        if k then
          keys[#keys + 1] = "pg_constraint:" .. k.oid
          if not k.convalidated then invalid = true end
        end
        stack[#stack + 1] = p.inhparent
      end
    end
  end
  return keys, invalid
end

-- An inherited copy that is valid although an ancestor's constraint is NOT
-- VALID (the child came after it): restored NOT VALID by the ancestor's ADD
-- CONSTRAINT, then validated on the child alone.
local function validate_copy(cat, ctx, r, name, ckey, conname, label, label_tag, find)
  local keys, invalid = ancestors_constraint(ctx, r.oid, find)
  if not invalid then return false end
  local deps = { "pg_class:" .. r.oid }
  for _, k in ipairs(keys) do deps[#deps + 1] = k end
  cat:add { key = ckey, kind = "constraint", desc = "CHECK CONSTRAINT", section = "post-data", tag = r.relname .. " " .. conname,
    namespace = r.nspname, owner = r.owner, deps = deps, label = label, label_tag = label_tag,
    defn = string.format("ALTER TABLE %s VALIDATE CONSTRAINT %s;\n", name, cat:q(conname)) }
  return true
end

local function tables(cat, ctx, r)
  local name = cat:qn(r.nspname, r.relname)
  local key = "pg_class:" .. r.oid
  local cols = ctx.cols[r.oid] or {}
  local nn = ctx.notnulls[r.oid] or {}
  local pars = ctx.parents[r.oid] or {}
  local partition = r.relispartition
  local t = { key = key, kind = "table", desc = "TABLE", tag = r.relname, namespace = r.nspname,
    owner = r.owner, tablespace = r.tablespace, relkind = r.relkind,
    -- (a partitioned table's own access method, 17+, is said in its CREATE: default_table_access_method does not reach it)
    tableam = r.relkind == "r" and r.amname or nil,
    drop = "DROP TABLE " .. name .. ";\n", label = "TABLE " .. name, label_tag = "TABLE " .. r.relname,
    acl_obj = "TABLE " .. name, acl_tag = "TABLE " .. r.relname, qname = name, columns = {} }
  cat:add(t)
  local coldefs, copycols, extra, inline_checks, tablecons = {}, {}, {}, {}, {}
  for _, a in ipairs(cols) do
    t.columns[a.attnum] = a.attname
    if a.attgenerated == "" then copycols[#copycols + 1] = cat:q(a.attname) end
    local qcol = cat:q(a.attname)
    -- columns an inheritance child gets from its parents are not written again; a partition lists them all
    local printed = a.attislocal or partition
    local col = { a = a }
    if a.defoid then
      local dkey = "pg_attrdef:" .. a.defoid
      local part = { key = dkey, parent = key, inline = true, desc = "DEFAULT", tag = r.relname .. " " .. a.attname,
        namespace = r.nspname, owner = r.owner,
        defn = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET DEFAULT %s;\n", name, qcol, a.def),
        drop = string.format("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT;\n", name, qcol) }
      if printed then
        -- a generated column's expression cannot be set apart
        if a.attgenerated == "" then part.split = function() end end
        cat:add(part)
        col.default = part
      else
        -- an inherited column: its default is set apart (its parent's may be set apart itself, after
        -- INHERITS copied it); a generation expression can only come from the parent
        local same = false
        for _, p in ipairs(pars) do
          local pc = parent_column(ctx, p.inhparent, a.attname)
          if pc and pc.def == a.def then same = true end
        end
        if a.attgenerated == "" then
          part.inline, part.deps = nil, { key }
          cat:add(part)
        else
          cat:cover(dkey, "the generation expression its parent gives it")
        end
        if a.attgenerated ~= "" and not same then
          sys.error(string.format("orch cannot back up table %s: its inherited generated column %s has an expression of its own " ..
            "(%s) that CREATE TABLE ... INHERITS cannot give it; the backup was not taken. --skip table leaves every table out", name, qcol, a.def), 1)
        end
      end
    elseif printed and not partition then
      -- a column of its own, merged with a parent's that has a default: CREATE TABLE ... INHERITS would give
      -- it that default, so its "no default" is written as DEFAULT NULL (ATTACH PARTITION copies no default)
      for _, p in ipairs(pars) do
        local pc = parent_column(ctx, p.inhparent, a.attname)
        if pc and pc.def and pc.attgenerated == "" then col.null_default = true break end
      end
    elseif not printed then
      -- an inherited column without the default a parent has: the child's own "no default"
      for _, p in ipairs(pars) do
        local pc = parent_column(ctx, p.inhparent, a.attname)
        if pc and pc.def and pc.attgenerated == "" then
          cat:add { key = "nodefault:" .. key .. ":" .. a.attnum, kind = "table", desc = "DEFAULT", tag = r.relname .. " " .. a.attname,
            namespace = r.nspname, owner = r.owner, deps = { key },
            defn = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET DEFAULT NULL;\n", name, qcol),
            drop = string.format("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT;\n", name, qcol) }
          break
        end
      end
    end
    -- NOT NULL: named constraints from 18 on, the column flag before
    local n = nn[a.attnum]
    if cat:since(180000) then
      if n then
        local ckey = "pg_constraint:" .. n.oid
        local label = string.format("CONSTRAINT %s ON %s", cat:q(n.conname), name)
        local label_tag = "CONSTRAINT " .. n.conname .. " ON " .. r.relname
        local cname = n.conname ~= (r.relname .. "_" .. a.attname .. "_not_null") and n.conname or nil
        if not n.convalidated then
          -- NOT VALID: added after the data, which may hold NULLs
          if n.conislocal then
            cat:add { key = ckey, kind = "constraint", desc = "CONSTRAINT", section = "post-data", tag = r.relname .. " " .. n.conname,
              namespace = r.nspname, owner = r.owner, label = label, label_tag = label_tag, deps = { key },
              -- not ONLY: it reaches the children, as it did when it was added
              defn = string.format("ALTER TABLE %s\n    ADD CONSTRAINT %s %s;\n", name, cat:q(n.conname), n.def),
              drop = string.format("ALTER TABLE %s DROP CONSTRAINT %s;\n", name, cat:q(n.conname)) }
          else
            cat:cover(ckey, "inherited")
            cat.labels[ckey] = { target = key, label = label, label_tag = label_tag }
          end
        elseif printed and (n.conislocal or partition) then
          col.notnull = (cname and (" CONSTRAINT " .. cat:q(cname)) or "") .. " NOT NULL" .. (n.connoinherit and " NO INHERIT" or "")
          cat:add { key = ckey, parent = key, inline = true, desc = "CONSTRAINT", tag = r.relname .. " " .. n.conname,
            namespace = r.nspname, label = label, label_tag = label_tag }
        elseif not printed and n.conislocal then
          -- an inherited column with a NOT NULL of its own: a table constraint
          tablecons[#tablecons + 1] = (cname and ("CONSTRAINT " .. cat:q(cname) .. " ") or "") .. "NOT NULL " .. qcol ..
            (n.connoinherit and " NO INHERIT" or "")
          cat:add { key = ckey, parent = key, inline = true, desc = "CONSTRAINT", tag = r.relname .. " " .. n.conname,
            namespace = r.nspname, label = label, label_tag = label_tag }
        elseif not (n.convalidated and not partition and validate_copy(cat, ctx, r, name, ckey, n.conname, label, label_tag,
            function(poid)
              local pc = parent_column(ctx, poid, a.attname)
              return pc and ctx.notnulls[poid] and ctx.notnulls[poid][pc.attnum]
            end)) then
          cat:cover(ckey, "inherited")
          cat.labels[ckey] = { target = key, label = label, label_tag = label_tag }
        end
      end
    elseif a.attnotnull then
      if printed then
        col.notnull = " NOT NULL"
      else
        local inherited = false
        for _, p in ipairs(pars) do
          local pc = parent_column(ctx, p.inhparent, a.attname)
          if pc and pc.attnotnull then inherited = true end
        end
        if not inherited then
          extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET NOT NULL;\n", name, qcol)
        end
      end
    end
    if printed then coldefs[#coldefs + 1] = col end
    -- what CREATE TABLE cannot say about a column
    if a.stattarget then
      extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STATISTICS %s;\n", name, qcol, a.stattarget)
    end
    -- storage and compression: what the column has against what CREATE gives it (a parent's, for an inherited column)
    local storage, compression = a.typstorage, ""
    if a.attinhcount > 0 and not partition then
      for _, p in ipairs(pars) do
        local pc = parent_column(ctx, p.inhparent, a.attname)
        if pc then storage, compression = pc.attstorage, pc.compression break end
      end
    end
    if a.attstorage ~= storage and STORAGE[a.attstorage] then
      extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STORAGE %s;\n", name, qcol, STORAGE[a.attstorage])
    end
    if a.compression ~= compression and (COMPRESSION[a.compression] or a.compression == "") then
      extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET COMPRESSION %s;\n", name, qcol,
        COMPRESSION[a.compression] or "default")
    end
    if a.attoptions and a.attoptions ~= "" then
      extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET (%s);\n", name, qcol, a.attoptions)
    end
  end
  -- CHECK constraints: validated ones inline, NOT VALID (and NOT ENFORCED) ones after the data
  for _, k in ipairs(ctx.checks[r.oid] or {}) do
    local ckey = "pg_constraint:" .. k.oid
    local label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), name)
    local part = { key = ckey, parent = key, kind = "constraint", desc = "CHECK CONSTRAINT", section = "post-data",
      tag = r.relname .. " " .. k.conname, namespace = r.nspname, owner = r.owner, conname = k.conname, condef = k.def, label = label,
      label_tag = "CONSTRAINT " .. k.conname .. " ON " .. r.relname,
      -- not ONLY: a parent's constraint reaches its children, as it did when it was added
      defn = string.format("ALTER TABLE %s\n    ADD CONSTRAINT %s %s;\n", name, cat:q(k.conname), k.def),
      drop = string.format("ALTER TABLE %s DROP CONSTRAINT %s;\n", name, cat:q(k.conname)) }
    if k.convalidated and (k.conislocal or partition) then
      -- a partition is created with its parent's constraints too, and ATTACH PARTITION takes them as inherited
      part.inline, part.split = true, function() end
      cat:add(part)
      inline_checks[#inline_checks + 1] = part
    elseif k.conislocal then
      part.deps = { key }
      cat:add(part)
    elseif not (k.convalidated and not partition and validate_copy(cat, ctx, r, name, ckey, k.conname, label, part.label_tag,
        function(poid)
          for _, pk in ipairs(ctx.checks[poid] or {}) do if pk.conname == k.conname then return pk end end
        end)) then
      -- inherited from a parent, which creates it
      cat:cover(ckey, "inherited")
      cat.labels[ckey] = { target = key, label = label, label_tag = part.label_tag }
    end
  end
  local parent_names = {}
  for _, p in ipairs(pars) do parent_names[#parent_names + 1] = p.name end
  if partition then
    cat:add { key = "attach:" .. key, kind = "table", desc = "TABLE ATTACH", tag = r.relname, namespace = r.nspname, owner = r.owner,
      defn = string.format("ALTER TABLE ONLY %s ATTACH PARTITION %s %s;\n", parent_names[1], name, r.bound),
      deps = { key, "pg_class:" .. pars[1].inhparent } }
  end
  t.render = function()
    local lines = {}
    for _, c in ipairs(coldefs) do
      local a = c.a
      local with_default = c.default and c.default.inline
      -- a typed table's column is there already; only what it adds is written
      if not (r.oftype and not with_default and not c.notnull and a.attidentity == "") then
        local s = "    " .. cat:q(a.attname) .. (r.oftype and "" or (" " .. a.type))
        if a.collation and not r.oftype then s = s .. " COLLATE " .. a.collation end
        if a.attgenerated == "s" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ") STORED"
        elseif a.attgenerated == "v" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ")"
        elseif with_default then s = s .. " DEFAULT " .. a.def
        elseif c.null_default then s = s .. " DEFAULT NULL" end
        if c.notnull then s = s .. c.notnull end
        if a.attidentity ~= "" and a.identity_seq then
          s = s .. string.format(" GENERATED %s AS IDENTITY (\n    %s\n)", a.attidentity == "a" and "ALWAYS" or "BY DEFAULT", a.identity_seq)
        end
        lines[#lines + 1] = s
      end
    end
    for _, s in ipairs(tablecons) do lines[#lines + 1] = "    " .. s end
    for _, k in ipairs(inline_checks) do
      if k.inline then lines[#lines + 1] = "    CONSTRAINT " .. cat:q(k.conname) .. " " .. k.condef end
    end
    local p = { string.format("CREATE %sTABLE %s", (r.relpersistence == "u" and r.relkind ~= "p") and "UNLOGGED " or "", name) }
    if r.oftype then p[#p + 1] = " OF " .. r.oftype end
    if #lines > 0 then p[#p + 1] = " (\n" .. table.concat(lines, ",\n") .. "\n)"
    elseif not r.oftype then p[#p + 1] = " (\n)" end
    if #parent_names > 0 and not partition then p[#p + 1] = "\nINHERITS (" .. table.concat(parent_names, ", ") .. ")" end
    if r.partkey then p[#p + 1] = "\nPARTITION BY " .. r.partkey end
    if r.relkind == "p" and r.amname then p[#p + 1] = "\nUSING " .. cat:q(r.amname) end
    local with = {}
    if r.options then with[#with + 1] = r.options end
    if r.toast_options then with[#with + 1] = r.toast_options end
    if #with > 0 then p[#p + 1] = "\nWITH (" .. table.concat(with, ", ") .. ")" end
    p[#p + 1] = ";\n"
    for _, x in ipairs(extra) do p[#p + 1] = x end
    if r.relreplident == "f" then p[#p + 1] = string.format("ALTER TABLE ONLY %s REPLICA IDENTITY FULL;\n", name)
    elseif r.relreplident == "n" then p[#p + 1] = string.format("ALTER TABLE ONLY %s REPLICA IDENTITY NOTHING;\n", name) end
    if r.relforcerowsecurity then p[#p + 1] = string.format("ALTER TABLE ONLY %s FORCE ROW LEVEL SECURITY;\n", name) end
    return table.concat(p)
  end
  if r.relrowsecurity then
    cat:add { key = "rowsecurity:" .. key, kind = "policy", desc = "ROW SECURITY", section = "post-data", tag = r.relname,
      namespace = r.nspname, owner = r.owner, deps = { key },
      defn = string.format("ALTER TABLE %s ENABLE ROW LEVEL SECURITY;\n", name) }
  end
  if r.relkind == "r" then
    local list = table.concat(copycols, ", ")
    -- rows of a hash partition on an enum go in through the root: the hash of an enum value differs between databases
    local into, defn = name, nil
    local root = ctx.unsafe_root(r.oid)
    if root then into, defn = root, "-- load via partition root " .. root .. "\n" end
    cat:add { key = "data:" .. key, kind = "table_data", desc = "TABLE DATA", section = "data", tag = r.relname, namespace = r.nspname,
      owner = r.owner, deps = { key }, defn = defn, data = { table_key = key, name = name, oid = r.oid,
        -- (a table without columns has rows all the same: COPY takes no empty column list)
        copy_out = #copycols > 0 and string.format("COPY %s (%s) TO STDOUT", name, list) or string.format("COPY %s TO STDOUT", name),
        copy_in = #copycols > 0 and string.format("COPY %s (%s) FROM stdin;\n", into, list) or string.format("COPY %s  FROM stdin;\n", into) } }
  end
end

-- ---------------------------------------------------------------- views

-- What CREATE VIEW / CREATE MATERIALIZED VIEW cannot say about a column:
-- defaults (views) and statistics targets, storage, compression and
-- attribute options (materialized views).
local function view_columns(cat, r, cols, name, key)
  local extra = {}
  for _, a in ipairs(cols or {}) do
    local qcol = cat:q(a.attname)
    if a.defoid then
      cat:add { key = "pg_attrdef:" .. a.defoid, kind = "view", desc = "DEFAULT", tag = r.relname .. " " .. a.attname, namespace = r.nspname,
        owner = r.owner, deps = { key },
        defn = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET DEFAULT %s;\n", name, qcol, a.def),
        drop = string.format("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT;\n", name, qcol) }
    end
    if r.relkind == "m" then
      if a.stattarget then
        extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STATISTICS %s;\n", name, qcol, a.stattarget)
      end
      if a.attstorage ~= a.typstorage and STORAGE[a.attstorage] then
        extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET STORAGE %s;\n", name, qcol, STORAGE[a.attstorage])
      end
      if COMPRESSION[a.compression] then
        extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET COMPRESSION %s;\n", name, qcol, COMPRESSION[a.compression])
      end
      if a.attoptions and a.attoptions ~= "" then
        extra[#extra + 1] = string.format("ALTER TABLE ONLY %s ALTER COLUMN %s SET (%s);\n", name, qcol, a.attoptions)
      end
    end
  end
  return table.concat(extra)
end

local function views(cat, ctx, r)
  local cols = ctx.cols[r.oid]
  local name = cat:qn(r.nspname, r.relname)
  local key = "pg_class:" .. r.oid
  local with = r.options and (" WITH (" .. r.options .. ")") or ""
  if r.relkind == "m" and r.toast_options then
    with = " WITH (" .. (r.options and (r.options .. ", ") or "") .. r.toast_options .. ")"
  end
  local def = (r.viewdef or ""):gsub(";%s*$", "")
  local check = r.checkoption and ("\n  WITH " .. r.checkoption .. " CHECK OPTION") or ""
  local o = { key = key, tag = r.relname, namespace = r.nspname, owner = r.owner, relkind = r.relkind, acl_obj = "TABLE " .. name,
    qname = name, columns = {} }
  for _, a in ipairs(cols or {}) do o.columns[a.attnum] = a.attname end
  local rule = ctx.rules[r.oid]
  if r.relkind == "v" then
    o.kind, o.desc, o.drop = "view", "VIEW", "DROP VIEW " .. name .. ";\n"
    o.label, o.label_tag, o.acl_tag = "VIEW " .. name, "VIEW " .. r.relname, "TABLE " .. r.relname
    cat:add(o)
    local part
    if rule then
      part = cat:add { key = "pg_rewrite:" .. rule, parent = key, inline = true, desc = "RULE", section = "post-data",
        tag = r.relname .. " _RETURN", namespace = r.nspname, owner = r.owner,
        defn = string.format("CREATE OR REPLACE VIEW %s%s AS\n%s%s;\n", name, with, def, check), split = function() end }
    end
    view_columns(cat, r, cols, name, key)
    o.render = function()
      if not part or part.inline then return string.format("CREATE VIEW %s%s AS\n%s%s;\n", name, with, def, check) end
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
    o.tablespace, o.tableam = r.tablespace, r.amname
    local extra = view_columns(cat, r, cols, name, key)
    if r.relreplident == "f" then extra = extra .. string.format("ALTER TABLE ONLY %s REPLICA IDENTITY FULL;\n", name)
    elseif r.relreplident == "n" then extra = extra .. string.format("ALTER TABLE ONLY %s REPLICA IDENTITY NOTHING;\n", name) end
    o.defn = string.format("CREATE MATERIALIZED VIEW %s%s AS\n%s\n  WITH NO DATA;\n%s", name, with, def, extra)
    cat:add(o)
    if rule then cat:alias("pg_rewrite:" .. rule, key) end
    if r.relispopulated then
      local deps = { key }
      for _, other in ipairs(ctx.refresh[r.oid] or {}) do deps[#deps + 1] = "refresh:pg_class:" .. other end
      cat:add { key = "refresh:" .. key, kind = "materialized_view", desc = "MATERIALIZED VIEW DATA", section = "post-data",
        tag = r.relname, namespace = r.nspname, owner = r.owner, deps = deps,
        defn = string.format("REFRESH MATERIALIZED VIEW %s;\n", name) }
    end
  end
end

-- ---------------------------------------------------------------- collect

function K.collect(cat)
  sequences(cat)
  local ctx = { cols = columns(cat), notnulls = notnulls(cat), checks = checks(cat), parents = parents(cat), rules = {}, refresh = {},
    by_name = {} }
  for oid, l in pairs(ctx.cols) do
    local m = {}
    for _, a in ipairs(l) do m[a.attname] = a end
    ctx.by_name[oid] = m
  end
  for _, r in ipairs(cat:query([[SELECT r.oid, r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.rulename = '_RETURN' AND r.ev_class >= 16384]])) do
    ctx.rules[r.ev_class] = r.oid
  end
  -- a materialized view reading another is refreshed after it
  for _, r in ipairs(cat:query([[SELECT DISTINCT rw.ev_class AS mv, d.refobjid AS other FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
      JOIN pg_catalog.pg_class a ON a.oid = rw.ev_class AND a.relkind = 'm'
      JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND b.relkind = 'm'
      WHERE rw.ev_class <> d.refobjid]])) do
    ctx.refresh[r.mv] = ctx.refresh[r.mv] or {}
    table.insert(ctx.refresh[r.mv], r.other)
  end
  local rows = cat:query([[SELECT c.oid, c.relname, n.nspname, c.relkind, c.relpersistence, c.relispartition,
      pg_catalog.pg_get_userbyid(c.relowner) AS owner,
      ]] .. K.options_sql("c.reloptions", nil, "'check_option'") .. [[ AS options,
      CASE WHEN 'check_option=local' = ANY (c.reloptions) THEN 'LOCAL' WHEN 'check_option=cascaded' = ANY (c.reloptions) THEN 'CASCADED' END AS checkoption,
      (SELECT ]] .. K.options_sql("tc.reloptions", "toast.") .. [[ FROM pg_catalog.pg_class tc WHERE tc.oid = c.reltoastrelid) AS toast_options,
      c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
      CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partkey,
      c.relkind = 'p' AND EXISTS (SELECT 1 FROM pg_catalog.pg_partitioned_table pt WHERE pt.partrelid = c.oid
        AND ]] .. ENUM_HASH_OPS .. [[ = ANY (pt.partclass)) AS unsafe_partitions,
      CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END AS bound,
      CASE WHEN c.reloftype <> 0 THEN pg_catalog.format_type(c.reloftype, NULL) END AS oftype,
      CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS viewdef, c.relispopulated, am.amname,
      coalesce(ts.spcname, '') AS tablespace
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam
    LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm') AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname")
  local by_oid = {}
  for _, r in ipairs(rows) do by_oid[r.oid] = r end
  -- the topmost ancestor of a partition below a hash-on-enum partitioned table, or nil
  ctx.unsafe_root = function(oid)
    local root, cur, seen = nil, oid, 0
    while ctx.parents[cur] and by_oid[cur] and by_oid[cur].relispartition and seen < 100 do
      local p = ctx.parents[cur][1]
      if by_oid[p.inhparent] and by_oid[p.inhparent].unsafe_partitions then root = true end
      cur, seen = p.inhparent, seen + 1
    end
    if root then return by_oid[cur] and cat:qn(by_oid[cur].nspname, by_oid[cur].relname) end
  end
  for _, r in ipairs(rows) do
    if r.relkind == "v" or r.relkind == "m" then views(cat, ctx, r)
    else tables(cat, ctx, r) end
  end
end

return K
