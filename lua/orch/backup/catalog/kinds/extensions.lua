--- Extensions: CREATE EXTENSION with its schema and version; the objects
-- an extension creates are its own and are not dumped (references to them
-- are references to the extension: see graph.lua). plpgsql comes with
-- every database.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT e.oid, e.extname, n.nspname, e.extversion, e.extrelocatable
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname <> 'plpgsql' ORDER BY e.extname]])) do
    local name = cat:q(r.extname)
    cat:add { key = "pg_extension:" .. r.oid, kind = "extension", desc = "EXTENSION", tag = r.extname,
      defn = string.format("CREATE EXTENSION IF NOT EXISTS %s WITH SCHEMA %s;\n", name, cat:q(r.nspname)),
      drop = "DROP EXTENSION " .. name .. ";\n", label = "EXTENSION " .. name, label_tag = "EXTENSION " .. r.extname,
      extversion = r.extversion }
  end
  -- plpgsql is there already; its comment and privileges are the database's own
  local pl = cat:query("SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'plpgsql'")[1]
  if pl then cat:cover("pg_extension:" .. pl.oid, "part of every database") end
end

return K
