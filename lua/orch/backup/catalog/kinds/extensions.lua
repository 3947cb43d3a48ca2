--- Extensions: CREATE EXTENSION with its schema and version (the one the
-- source runs, not the target's default). The objects an extension creates
-- are its own and are not dumped (references to them are references to
-- the extension: see graph.lua), except the rows of its configuration
-- tables (pg_extension_config_dump: pg_extension.extconfig and
-- extcondition), which are the database's: a TABLE DATA entry per table,
-- filtered by its condition (WHERE NOT builtin: the rows the user added),
-- in foreign-key order among them, and a SEQUENCE SET per configuration
-- sequence. plpgsql comes with every database.
local K = {}

-- The configuration tables and sequences of extension row r.
local function config(cat, r)
  local cfg = cat:query([[SELECT c.oid, c.relname, n.nspname, c.relkind, x.cond
    FROM ROWS FROM (pg_catalog.unnest((SELECT extconfig FROM pg_catalog.pg_extension WHERE oid = $1)),
                    pg_catalog.unnest((SELECT extcondition FROM pg_catalog.pg_extension WHERE oid = $1))) AS x(rel, cond)
    JOIN pg_catalog.pg_class c ON c.oid = x.rel JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                  AND d.objid = c.oid AND d.refobjid = $1 AND d.deptype = 'e')
    ORDER BY n.nspname, c.relname]], r.oid)
  local ext_key = "pg_extension:" .. r.oid
  local data_of = {}
  for _, t in ipairs(cfg) do
    local name = cat:qn(t.nspname, t.relname)
    if t.relkind == "S" then
      local v = cat:query(string.format("SELECT last_value, is_called FROM %s", name))[1]
      cat:add { key = "seqset:pg_class:" .. t.oid, kind = "extension", desc = "SEQUENCE SET", section = "data", tag = t.relname,
        namespace = t.nspname, deps = { ext_key },
        defn = string.format("SELECT pg_catalog.setval(%s, %s, %s);\n", cat:lit(name), v.last_value, v.is_called and "true" or "false") }
    elseif t.relkind == "r" then
      local cols = {}
      for _, a in ipairs(cat:query([[SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
          AND attgenerated = '' ORDER BY attnum]], t.oid)) do cols[#cols + 1] = cat:q(a.attname) end
      local list = table.concat(cols, ", ")
      local cond = t.cond or ""
      local out = cond ~= "" and string.format("COPY (SELECT %s FROM %s %s) TO STDOUT", list, name, cond)
        or string.format("COPY %s (%s) TO STDOUT", name, list)
      local key = "data:pg_class:" .. t.oid
      cat:add { key = key, kind = "extension", desc = "TABLE DATA", section = "data", tag = t.relname, namespace = t.nspname,
        deps = { ext_key }, data = { table_key = ext_key, name = name, oid = t.oid, copy_out = out, filter = cond ~= "" and cond or nil,
          copy_in = string.format("COPY %s (%s) FROM stdin;\n", name, list) } }
      data_of[t.oid] = key
    elseif t.relkind ~= "p" then
      -- (a partitioned table holds no rows of its own: its partitions do)
      require("orch.sys").error(string.format("the backup was not taken: extension %s marks %s (relkind '%s') as configuration " ..
        "data, which orch does not know how to dump; --skip extension leaves the extension out", r.extname, name, t.relkind), 1)
    end
  end
  -- a configuration table referring to another is loaded after it
  for oid, key in pairs(data_of) do
    for _, f in ipairs(cat:query([[SELECT DISTINCT confrelid FROM pg_catalog.pg_constraint WHERE conrelid = $1 AND contype = 'f']], oid)) do
      if data_of[f.confrelid] and f.confrelid ~= oid then cat:dep(key, data_of[f.confrelid]) end
    end
  end
end

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT e.oid, e.extname, n.nspname, e.extversion, e.extrelocatable
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname <> 'plpgsql' ORDER BY e.extname]])) do
    local name = cat:q(r.extname)
    cat:add { key = "pg_extension:" .. r.oid, kind = "extension", desc = "EXTENSION", tag = r.extname,
      defn = string.format("CREATE EXTENSION IF NOT EXISTS %s WITH SCHEMA %s VERSION %s;\n", name, cat:q(r.nspname), cat:lit(r.extversion)),
      drop = "DROP EXTENSION " .. name .. ";\n", label = "EXTENSION " .. name, label_tag = "EXTENSION " .. r.extname,
      extversion = r.extversion }
    if not cat:skipping("extension") then config(cat, r) end
  end
  -- plpgsql is there already; its comment and privileges are the database's own
  local pl = cat:query("SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'plpgsql'")[1]
  if pl then cat:cover("pg_extension:" .. pl.oid, "part of every database") end
end

return K
