--- Indexes that are not part of a constraint, and the attachment of every
-- partition's index to its parent's (INDEX ATTACH, also for the indexes of
-- constraints).
--
-- As pg_dump does: an index on a partitioned table is created ON ONLY that
-- table, each partition's index is created on its own (keeping its name,
-- tablespace and options) and attached with ALTER INDEX ... ATTACH
-- PARTITION, which makes the parent's index valid once every partition has
-- one. CLUSTER ON, the statistics targets of expression columns and REPLICA
-- IDENTITY USING INDEX follow the CREATE INDEX in its entry. An index left
-- invalid by a failed CREATE INDEX CONCURRENTLY is not dumped (pg_dump does
-- not either): it holds no definition worth restoring.
local K = {}

--- The partition indexes of every partitioned index: parent oid -> list of
-- child index oids (read once per backup).
function K.tree(cat)
  if cat._index_tree then return cat._index_tree end
  local tree = {}
  for _, r in ipairs(cat:query([[SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid WHERE c.relkind IN ('i', 'I') ORDER BY i.inhparent, i.inhrelid]])) do
    local l = tree[r.inhparent]
    if not l then l = {}; tree[r.inhparent] = l end
    l[#l + 1] = r.inhrelid
  end
  cat._index_tree = tree
  return tree
end

function K.collect(cat)
  for _, i in ipairs(cat:query([[SELECT i.indexrelid, ic.relname, n.nspname, i.indrelid, pg_catalog.pg_get_indexdef(i.indexrelid) AS def,
      pg_catalog.pg_get_userbyid(tc.relowner) AS owner, tc.relname AS tablename, tn.nspname AS tablens, i.indisvalid, tc.relkind,
      i.indisclustered, i.indisreplident, coalesce(ts.spcname, '') AS tablespace,
      (SELECT pg_catalog.string_agg(pg_catalog.format('%s %s', a.attnum, a.attstattarget), ',' ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0) AS stattargets
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
    JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace
    LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
    WHERE ]] .. cat:user_ns("n.nspname") .. [[ AND tc.relkind IN ('r', 'p', 'm')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
      AND ]] .. cat:not_ext("pg_class", "tc.oid") .. " ORDER BY n.nspname, ic.relname")) do
    local key = "pg_class:" .. i.indexrelid
    if not i.indisvalid and i.relkind ~= "p" then
      cat:cover(key, "an invalid index (a failed CREATE INDEX CONCURRENTLY), which pg_dump leaves out too")
    else
      local name = cat:qn(i.nspname, i.relname)
      local tname = cat:qn(i.tablens, i.tablename)
      local p = { i.def .. ";\n" }
      if i.indisclustered then p[#p + 1] = string.format("\nALTER TABLE %s CLUSTER ON %s;\n", tname, cat:q(i.relname)) end
      for col, target in (i.stattargets or ""):gmatch("(%d+) (%-?%d+)") do
        p[#p + 1] = string.format("ALTER INDEX %s ALTER COLUMN %s SET STATISTICS %s;\n", name, col, target)
      end
      if i.indisreplident then p[#p + 1] = string.format("\nALTER TABLE ONLY %s REPLICA IDENTITY USING INDEX %s;\n", tname, cat:q(i.relname)) end
      cat:add { key = key, kind = "index", desc = "INDEX", section = "post-data", tag = i.relname, namespace = i.nspname, owner = i.owner,
        tablespace = i.tablespace, deps = { "pg_class:" .. i.indrelid },
        defn = table.concat(p), drop = "DROP INDEX " .. name .. ";\n",
        label = "INDEX " .. name, label_tag = "INDEX " .. i.relname }
    end
  end
  -- every partition's index attached to its parent's, once both exist
  local names = {}
  for _, r in ipairs(cat:query([[SELECT c.oid, c.relname, n.nspname, pg_catalog.pg_get_userbyid(tc.relowner) AS owner
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
      WHERE c.relkind IN ('i', 'I') AND (c.relispartition OR c.relkind = 'I') AND ]] .. cat:user_ns("n.nspname"))) do
    names[r.oid] = r
  end
  local tree = K.tree(cat)
  local parents = {}
  for parent in pairs(tree) do parents[#parents + 1] = parent end
  table.sort(parents)
  for _, parent in ipairs(parents) do
    for _, child in ipairs(tree[parent]) do
      local c, p = names[child], names[parent]
      local ckey, pkey = "pg_class:" .. child, "pg_class:" .. parent
      if c and p and cat.objects[cat:resolve(ckey)] and cat.objects[cat:resolve(pkey)] then
        cat:add { key = "indexattach:" .. ckey, kind = "index", desc = "INDEX ATTACH", section = "post-data", tag = c.relname,
          namespace = c.nspname, owner = c.owner, deps = { ckey, pkey },
          defn = string.format("ALTER INDEX %s ATTACH PARTITION %s;\n", cat:qn(p.nspname, p.relname), cat:qn(c.nspname, c.relname)) }
      end
    end
  end
end

return K
