--- Foreign data: wrappers, servers, user mappings and foreign tables.
--
-- User mappings are read through pg_user_mappings, the view every role may
-- read (pg_user_mapping itself is the superuser's). The view hides a
-- mapping's options from a role that may not see them; such a backup would
-- silently restore mappings without their passwords, so it fails instead,
-- naming them (--skip user_mapping leaves user mappings out knowingly).
--
-- A foreign table is written like a table: its local columns with their
-- FDW options, NOT NULL, defaults (split out as ALTER ... SET DEFAULT when a
-- dependency cycle needs it) and CHECK constraints, as PARTITION OF or
-- INHERITS where it has parents, then SERVER and OPTIONS; per-column
-- statistics targets, storage and attribute options follow. It has no data.
local sys = require "orch.sys"

local K = {}

local STORAGE = { p = "PLAIN", e = "EXTERNAL", m = "MAIN", x = "EXTENDED" }

-- SQL: the options array col as "name 'value'" pairs, one a line, as pg_dump writes them.
local function options(col)
  return string.format([[pg_catalog.array_to_string(ARRAY(SELECT pg_catalog.quote_ident(option_name) || ' ' ||
    pg_catalog.quote_literal(option_value) FROM pg_catalog.pg_options_to_table(%s) ORDER BY option_name), E',\n    ')]], col)
end

local function opts_clause(o) return (o and o ~= "") and (" OPTIONS (\n    " .. o .. "\n)") or "" end

local function wrappers(cat)
  for _, r in ipairs(cat:query([[SELECT w.oid, w.fdwname, pg_catalog.pg_get_userbyid(w.fdwowner) AS owner,
      NULLIF(w.fdwhandler, 0)::pg_catalog.regproc::text AS handler, NULLIF(w.fdwvalidator, 0)::pg_catalog.regproc::text AS validator,
      ]] .. options("w.fdwoptions") .. [[ AS options
    FROM pg_catalog.pg_foreign_data_wrapper w WHERE w.oid >= 16384 AND ]] .. cat:not_ext("pg_foreign_data_wrapper", "w.oid") ..
    " ORDER BY w.fdwname")) do
    local name = cat:q(r.fdwname)
    local defn = "CREATE FOREIGN DATA WRAPPER " .. name
    if r.handler then defn = defn .. " HANDLER " .. r.handler end
    if r.validator then defn = defn .. " VALIDATOR " .. r.validator end
    cat:add { key = "pg_foreign_data_wrapper:" .. r.oid, kind = "foreign_data_wrapper", desc = "FOREIGN DATA WRAPPER", tag = r.fdwname,
      owner = r.owner, defn = defn .. opts_clause(r.options) .. ";\n", drop = "DROP FOREIGN DATA WRAPPER " .. name .. ";\n",
      label = "FOREIGN DATA WRAPPER " .. name, label_tag = "FOREIGN DATA WRAPPER " .. r.fdwname,
      acl_obj = "FOREIGN DATA WRAPPER " .. name, acl_tag = "FOREIGN DATA WRAPPER " .. r.fdwname }
  end
end

local function servers(cat)
  local owners = {}
  for _, r in ipairs(cat:query([[SELECT s.oid, s.srvname, pg_catalog.pg_get_userbyid(s.srvowner) AS owner, s.srvtype, s.srvversion,
      w.fdwname, ]] .. options("s.srvoptions") .. [[ AS options
    FROM pg_catalog.pg_foreign_server s JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw
    WHERE s.oid >= 16384 AND ]] .. cat:not_ext("pg_foreign_server", "s.oid") .. " ORDER BY s.srvname")) do
    local name = cat:q(r.srvname)
    local defn = "CREATE SERVER " .. name
    if r.srvtype and r.srvtype ~= "" then defn = defn .. " TYPE " .. cat:lit(r.srvtype) end
    if r.srvversion and r.srvversion ~= "" then defn = defn .. " VERSION " .. cat:lit(r.srvversion) end
    defn = defn .. " FOREIGN DATA WRAPPER " .. cat:q(r.fdwname)
    cat:add { key = "pg_foreign_server:" .. r.oid, kind = "foreign_server", desc = "SERVER", tag = r.srvname, owner = r.owner,
      defn = defn .. opts_clause(r.options) .. ";\n", drop = "DROP SERVER " .. name .. ";\n",
      label = "SERVER " .. name, label_tag = "SERVER " .. r.srvname,
      acl_obj = "FOREIGN SERVER " .. name, acl_tag = "FOREIGN SERVER " .. r.srvname }
    owners[r.oid] = r.owner
  end
  return owners
end

local function user_mappings(cat, owners)
  local hidden = {}
  for _, r in ipairs(cat:query([[SELECT m.umid, m.srvid, m.srvname, m.umuser, m.usename, ]] .. options("m.umoptions") .. [[ AS options,
      (m.umuser <> 0 AND m.usename = current_user AND (pg_catalog.pg_has_role(s.srvowner, 'USAGE')
          OR pg_catalog.has_server_privilege(s.oid, 'USAGE')))
        OR (m.umuser = 0 AND pg_catalog.pg_has_role(s.srvowner, 'USAGE'))
        OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) AS readable
    FROM pg_catalog.pg_user_mappings m JOIN pg_catalog.pg_foreign_server s ON s.oid = m.srvid
    WHERE m.umid >= 16384 ORDER BY m.srvname, m.usename]])) do
    local key = "pg_user_mapping:" .. r.umid
    if not r.readable and not cat:skipping("user_mapping") then
      hidden[#hidden + 1] = string.format("user mapping for %s on server %s", r.usename, r.srvname)
    end
    local who = r.umuser == 0 and "PUBLIC" or cat:q(r.usename)
    local srv = cat:q(r.srvname)
    cat:add { key = key, kind = "user_mapping", desc = "USER MAPPING", tag = string.format("USER MAPPING %s SERVER %s", r.usename, r.srvname),
      owner = owners[r.srvid], deps = { "pg_foreign_server:" .. r.srvid },
      defn = string.format("CREATE USER MAPPING FOR %s SERVER %s%s;\n", who, srv, opts_clause(r.options)),
      drop = string.format("DROP USER MAPPING FOR %s SERVER %s;\n", who, srv) }
  end
  if #hidden > 0 then
    sys.error("the backup was not taken: the options (user names, passwords) of these user mappings are hidden from " ..
      "the role orch connects as, so they would be restored without them:\n  - " .. table.concat(hidden, "\n  - ") ..
      "\nback up as a superuser or as the servers' owner, or leave user mappings out knowingly with --skip user_mapping", 1)
  end
end

-- ---------------------------------------------------------------- foreign tables

local function foreign_tables(cat)
  local stat_default = cat:since(170000) and "a.attstattarget IS NOT NULL" or "a.attstattarget >= 0"
  local cols = {}
  for _, a in ipairs(cat:query([[SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
      a.attnotnull, a.attislocal, a.attgenerated, d.oid AS defoid, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS def,
      a.attstorage, t.typstorage, CASE WHEN ]] .. stat_default .. [[ THEN a.attstattarget END AS stattarget,
      pg_catalog.array_to_string(a.attoptions, ', ') AS attoptions, ]] .. options("a.attfdwoptions") .. [[ AS fdwoptions,
      CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
        THEN (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) FROM pg_catalog.pg_collation co
              JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relkind = 'f' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum]])) do
    cols[a.attrelid] = cols[a.attrelid] or {}
    table.insert(cols[a.attrelid], a)
  end
  -- PostgreSQL 18 keeps NOT NULL as named constraints
  local nn = {}
  if cat:since(180000) then
    for _, k in ipairs(cat:query([[SELECT k.oid, k.conrelid, k.conkey[1] AS attnum, k.conname, k.conislocal FROM pg_catalog.pg_constraint k
        JOIN pg_catalog.pg_class c ON c.oid = k.conrelid WHERE k.contype = 'n' AND c.relkind = 'f']])) do
      nn[k.conrelid] = nn[k.conrelid] or {}
      nn[k.conrelid][k.attnum] = k
    end
  end
  for _, r in ipairs(cat:query([[SELECT c.oid, c.relname, n.nspname, pg_catalog.pg_get_userbyid(c.relowner) AS owner, c.relispartition,
      s.srvname, ]] .. options("f.ftoptions") .. [[ AS options,
      CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END AS bound,
      (SELECT pg_catalog.string_agg(i.inhparent::pg_catalog.regclass::text, ', ' ORDER BY i.inhseqno) FROM pg_catalog.pg_inherits i
        WHERE i.inhrelid = c.oid) AS parents
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_foreign_table f ON f.ftrelid = c.oid JOIN pg_catalog.pg_foreign_server s ON s.oid = f.ftserver
    WHERE c.relkind = 'f' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname")) do
    local name = cat:qn(r.nspname, r.relname)
    local key = "pg_class:" .. r.oid
    local t = cat:add { key = key, kind = "foreign_table", desc = "FOREIGN TABLE", tag = r.relname, namespace = r.nspname, owner = r.owner,
      relkind = "f", drop = "DROP FOREIGN TABLE " .. name .. ";\n", label = "FOREIGN TABLE " .. name, label_tag = "FOREIGN TABLE " .. r.relname,
      acl_obj = "TABLE " .. name, acl_tag = "TABLE " .. r.relname, qname = name, columns = {} }
    local written, extra, checks = {}, {}, {}
    for _, a in ipairs(cols[r.oid] or {}) do
      t.columns[a.attnum] = a.attname
      local qcol = cat:q(a.attname)
      local c = { a = a }
      if a.defoid then
        local part = { key = "pg_attrdef:" .. a.defoid, parent = key, inline = true, desc = "DEFAULT", tag = r.relname .. " " .. a.attname,
          namespace = r.nspname, owner = r.owner,
          defn = string.format("ALTER FOREIGN TABLE ONLY %s ALTER COLUMN %s SET DEFAULT %s;\n", name, qcol, a.def),
          drop = string.format("ALTER FOREIGN TABLE %s ALTER COLUMN %s DROP DEFAULT;\n", name, qcol) }
        if a.attgenerated == "" then part.split = function() end end
        c.default = cat:add(part)
      end
      local k = nn[r.oid] and nn[r.oid][a.attnum]
      local is_local = a.attislocal and not r.relispartition
      if k then
        if is_local then
          c.notnull_name = k.conname
          cat:add { key = "pg_constraint:" .. k.oid, parent = key, inline = true, desc = "CONSTRAINT", tag = r.relname .. " " .. k.conname,
            namespace = r.nspname, label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), name),
            label_tag = "CONSTRAINT " .. k.conname .. " ON " .. r.relname }
        else
          cat:cover("pg_constraint:" .. k.oid, "the NOT NULL of a column a parent gives")
        end
      end
      if is_local then written[#written + 1] = c
      elseif a.defoid and a.attgenerated == "" then c.default.inherited = true end
      if a.fdwoptions ~= "" and not is_local then
        extra[#extra + 1] = string.format("ALTER FOREIGN TABLE ONLY %s ALTER COLUMN %s OPTIONS (\n    %s\n);\n", name, qcol, a.fdwoptions)
      end
      if a.attstorage ~= a.typstorage then
        extra[#extra + 1] = string.format("ALTER FOREIGN TABLE ONLY %s ALTER COLUMN %s SET STORAGE %s;\n", name, qcol, STORAGE[a.attstorage])
      end
      if a.stattarget then
        extra[#extra + 1] = string.format("ALTER FOREIGN TABLE ONLY %s ALTER COLUMN %s SET STATISTICS %d;\n", name, qcol, a.stattarget)
      end
      if a.attoptions and a.attoptions ~= "" then
        extra[#extra + 1] = string.format("ALTER FOREIGN TABLE ONLY %s ALTER COLUMN %s SET (%s);\n", name, qcol, a.attoptions)
      end
    end
    for _, k in ipairs(cat:query([[SELECT oid, conname, pg_catalog.pg_get_constraintdef(oid) AS def, convalidated, conislocal
        FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'c' ORDER BY conname]], r.oid)) do
      local ckey = "pg_constraint:" .. k.oid
      local label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), name)
      local part = { key = ckey, parent = key, desc = "CHECK CONSTRAINT", section = "post-data", tag = r.relname .. " " .. k.conname,
        namespace = r.nspname, owner = r.owner, conname = k.conname, condef = k.def, label = label,
        label_tag = "CONSTRAINT " .. k.conname .. " ON " .. r.relname,
        defn = string.format("ALTER FOREIGN TABLE ONLY %s\n    ADD CONSTRAINT %s %s;\n", name, cat:q(k.conname), k.def),
        drop = string.format("ALTER FOREIGN TABLE %s DROP CONSTRAINT %s;\n", name, cat:q(k.conname)) }
      if not k.conislocal then
        cat:cover(ckey, "inherited")
        cat.labels[ckey] = { target = key, label = label, label_tag = part.label_tag }
      elseif k.convalidated then
        part.inline, part.split = true, function() end
        checks[#checks + 1] = cat:add(part)
      else
        part.deps = { key }
        cat:add(part)
      end
    end
    t.render = function()
      local lines = {}
      for _, c in ipairs(written) do
        local a = c.a
        local s = "    " .. cat:q(a.attname) .. " " .. a.type
        if a.fdwoptions ~= "" then s = s .. " OPTIONS (\n    " .. a.fdwoptions .. "\n)" end
        if a.collation then s = s .. " COLLATE " .. a.collation end
        if a.attgenerated == "s" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ") STORED"
        elseif a.attgenerated == "v" then s = s .. " GENERATED ALWAYS AS (" .. a.def .. ") VIRTUAL"
        elseif c.default and c.default.inline then s = s .. " DEFAULT " .. a.def end
        if a.attnotnull then s = s .. (c.notnull_name and (" CONSTRAINT " .. cat:q(c.notnull_name)) or "") .. " NOT NULL" end
        lines[#lines + 1] = s
      end
      for _, k in ipairs(checks) do
        if k.inline then lines[#lines + 1] = "    CONSTRAINT " .. cat:q(k.conname) .. " " .. k.condef end
      end
      local body = #lines > 0 and (" (\n" .. table.concat(lines, ",\n") .. "\n)") or ""
      local defn
      if r.relispartition then
        defn = string.format("CREATE FOREIGN TABLE %s PARTITION OF %s%s\n%s", name, r.parents, body, r.bound)
      else
        defn = string.format("CREATE FOREIGN TABLE %s%s", name, body ~= "" and body or " (\n)")
        if r.parents then defn = defn .. "\nINHERITS (" .. r.parents .. ")" end
      end
      defn = defn .. "\nSERVER " .. cat:q(r.srvname)
      if r.options ~= "" then defn = defn .. "\nOPTIONS (\n    " .. r.options .. "\n)" end
      local out = { defn .. ";\n" }
      -- defaults of columns a parent gives are this table's own
      for _, a in ipairs(cols[r.oid] or {}) do
        local d = a.defoid and cat.objects["pg_attrdef:" .. a.defoid]
        if d and d.inline and d.inherited then out[#out + 1] = d.defn end
      end
      for _, x in ipairs(extra) do out[#out + 1] = x end
      return table.concat(out)
    end
  end
end

function K.collect(cat)
  wrappers(cat)
  user_mappings(cat, servers(cat))
  foreign_tables(cat)
end

return K
