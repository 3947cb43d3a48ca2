--- Table constraints written after the data: PRIMARY KEY, UNIQUE, EXCLUDE
-- and FOREIGN KEY. (CHECK constraints are the table's: see relations.lua.)
-- The index behind a key is part of its constraint: references to it, and
-- its comment, go to the constraint's entry.
local K = {}

function K.collect(cat)
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conname, k.contype, k.conrelid, c.relname, c.relkind, n.nspname,
      pg_catalog.pg_get_constraintdef(k.oid) AS def, k.confrelid, k.conindid, ic.relname AS indexname, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_class ic ON ic.oid = k.conindid
    WHERE k.contype IN ('p', 'u', 'x', 'f') AND k.conparentid = 0 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") ..
    " ORDER BY n.nspname, c.relname, k.conname")) do
    local tname = cat:qn(k.nspname, k.relname)
    local fk = k.contype == "f"
    local key = "pg_constraint:" .. k.oid
    cat:add { key = key, kind = fk and "foreign_key" or "constraint", desc = fk and "FK CONSTRAINT" or "CONSTRAINT", section = "post-data",
      tag = k.relname .. " " .. k.conname, namespace = k.nspname, owner = k.owner, tablespace = not fk and "" or nil,
      deps = { "pg_class:" .. k.conrelid },
      -- on a partitioned table the constraint must recurse to the partitions (ONLY would leave them without it)
      defn = string.format("ALTER TABLE %s%s\n    ADD CONSTRAINT %s %s;\n", k.relkind == "p" and "" or "ONLY ", tname, cat:q(k.conname), k.def),
      drop = string.format("ALTER TABLE ONLY %s DROP CONSTRAINT %s;\n", tname, cat:q(k.conname)),
      label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), tname), label_tag = "CONSTRAINT " .. k.conname .. " ON " .. k.relname }
    if not fk and k.conindid ~= 0 then
      local ikey = "pg_class:" .. k.conindid
      cat:alias(ikey, key)
      cat.labels[ikey] = { target = key, label = "INDEX " .. cat:qn(k.nspname, k.indexname), label_tag = "INDEX " .. k.indexname }
    end
  end
  -- a partition's copy of its parent's key comes with the parent's constraint
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conindid FROM pg_catalog.pg_constraint k
      WHERE k.contype IN ('p', 'u', 'x', 'f') AND k.conparentid <> 0]])) do
    cat:cover("pg_constraint:" .. k.oid, "made by its parent's constraint")
    if k.conindid ~= 0 then cat:cover("pg_class:" .. k.conindid, "made by its parent's constraint") end
  end
end

return K
