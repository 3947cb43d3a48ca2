--- Indexes that are not part of a constraint.
local K = {}

function K.collect(cat)
  for _, i in ipairs(cat:query([[SELECT i.indexrelid, ic.relname, n.nspname, i.indrelid, pg_catalog.pg_get_indexdef(i.indexrelid) AS def,
      ic.relispartition, pg_catalog.pg_get_userbyid(tc.relowner) AS owner
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
    JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
    WHERE ]] .. cat:user_ns("n.nspname") .. [[ AND tc.relkind IN ('r', 'p', 'm')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
      AND ]] .. cat:not_ext("pg_class", "tc.oid") .. " ORDER BY n.nspname, ic.relname")) do
    local key = "pg_class:" .. i.indexrelid
    if i.relispartition then
      -- a partition's index is made by its parent's CREATE INDEX
      cat:cover(key, "made by its parent index")
    else
      local name = cat:qn(i.nspname, i.relname)
      cat:add { key = key, kind = "index", desc = "INDEX", section = "post-data", tag = i.relname, namespace = i.nspname, owner = i.owner,
        tablespace = "", deps = { "pg_class:" .. i.indrelid },
        defn = i.def:gsub(" ON ONLY ", " ON ", 1) .. ";\n", drop = "DROP INDEX " .. name .. ";\n",
        label = "INDEX " .. name, label_tag = "INDEX " .. i.relname }
    end
  end
end

return K
