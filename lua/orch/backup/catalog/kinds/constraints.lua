--- Table constraints written after the data: PRIMARY KEY, UNIQUE, EXCLUDE
-- and FOREIGN KEY. (CHECK and NOT NULL constraints are the table's: see
-- relations.lua.)
--
-- As pg_dump does: a key is added with ALTER TABLE ONLY, also on a
-- partitioned table and on each of its partitions, whose index is then
-- attached to the parent's (INDEX ATTACH, indexes.lua) — so a partition's key
-- keeps its own name. Its index's storage parameters, tablespace (the
-- entry's), CLUSTER ON and REPLICA IDENTITY USING INDEX are the constraint's.
-- A foreign key on a partitioned table is added without ONLY and reaches
-- the partitions; one that references a partitioned table waits for every
-- partition of the referenced index to be attached. The index behind a key
-- is part of its constraint: references to it, and its comment, go to the
-- constraint's entry.
local sys = require "orch.sys"

local K = {}

function K.collect(cat)
  local indexes = require "orch.backup.catalog.kinds.indexes"
  local fk_refs = {}
  for _, k in ipairs(cat:query([[SELECT k.oid, k.conname, k.contype, k.conrelid, c.relname, c.relkind, n.nspname, k.conparentid,
      pg_catalog.pg_get_constraintdef(k.oid) AS def, k.confrelid, k.conindid, ic.relname AS indexname,
      pg_catalog.pg_get_userbyid(c.relowner) AS owner, coalesce(ts.spcname, '') AS tablespace,
      ]] .. require("orch.backup.catalog.kinds.relations").options_sql("ic.reloptions") .. [[ AS indexoptions,
      i.indisclustered, i.indisreplident, fc.relkind AS frelkind,
      CASE WHEN k.contype = 'x' AND k.conparentid <> 0 THEN (SELECT pg_catalog.string_agg(coalesce(a.attname, 'expr'), '_' ORDER BY x.n)
        FROM pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY x(attnum, n)
        LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = x.attnum AND x.attnum > 0) END AS colnames
    FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_class ic ON ic.oid = k.conindid AND k.contype <> 'f'
    LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = ic.oid
    LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = ic.reltablespace
    LEFT JOIN pg_catalog.pg_class fc ON fc.oid = k.confrelid
    WHERE k.contype IN ('p', 'u', 'x', 'f') AND c.relkind IN ('r', 'p') AND ]] .. cat:user_ns("n.nspname") .. " AND " ..
      cat:not_ext("pg_class", "c.oid") .. " ORDER BY n.nspname, c.relname, k.conname")) do
    local tname = cat:qn(k.nspname, k.relname)
    local key = "pg_constraint:" .. k.oid
    local label = string.format("CONSTRAINT %s ON %s", cat:q(k.conname), tname)
    local label_tag = "CONSTRAINT " .. k.conname .. " ON " .. k.relname
    if k.contype == "f" then
      if k.conparentid ~= 0 then
        -- a partition's copy of its parent's foreign key, or the referenced side's copy for a partition: made by the parent's
        cat:cover(key, "made by its parent's constraint")
      else
        -- on a partitioned table the constraint must reach the partitions (ONLY would leave them without it)
        local only = k.relkind == "p" and "" or "ONLY "
        local o = cat:add { key = key, kind = "foreign_key", desc = "FK CONSTRAINT", section = "post-data",
          tag = k.relname .. " " .. k.conname, namespace = k.nspname, owner = k.owner, deps = { "pg_class:" .. k.conrelid },
          defn = string.format("ALTER TABLE %s%s\n    ADD CONSTRAINT %s %s;\n", only, tname, cat:q(k.conname), k.def),
          drop = string.format("ALTER TABLE %s%s DROP CONSTRAINT %s;\n", only, tname, cat:q(k.conname)),
          label = label, label_tag = label_tag }
        if k.frelkind == "p" and k.conindid ~= 0 then fk_refs[#fk_refs + 1] = { o = o, index = k.conindid } end
      end
    elseif k.contype == "x" and k.conparentid ~= 0 then
      -- an exclusion constraint of a partition (17+): PostgreSQL cannot attach an existing exclusion index to a
      -- parent's, so the parent's ADD CONSTRAINT makes it, under the name it gave it the first time
      local expected = k.relname .. "_" .. (k.colnames or "") .. "_excl"
      if #expected <= 63 and k.conname ~= expected and not k.conname:match("^" .. expected:gsub("%p", "%%%0") .. "%d+$") then
        sys.error(string.format("orch cannot back up exclusion constraint %s on partition %s: it was renamed from %s, and a " ..
          "partition's exclusion constraint can only be restored by its parent's, under the name PostgreSQL chooses; the backup " ..
          "was not taken. Rename it back (ALTER TABLE %s RENAME CONSTRAINT %s TO %s) or --skip constraint",
          cat:q(k.conname), tname, cat:q(expected), tname, cat:q(k.conname), cat:q(expected)), 1)
      end
      cat:cover(key, "made by its parent's constraint")
      if k.conindid ~= 0 then cat:cover("pg_class:" .. k.conindid, "made by its parent's constraint") end
    else
      local def = k.def
      if k.contype ~= "x" and k.indexoptions then
        -- pg_get_constraintdef leaves out the index's storage parameters: they go before DEFERRABLE
        local tail = ""
        for _, t in ipairs { " DEFERRABLE INITIALLY DEFERRED", " DEFERRABLE" } do
          if def:sub(-#t) == t then tail = t break end
        end
        def = def:sub(1, #def - #tail) .. " WITH (" .. k.indexoptions .. ")" .. tail
      end
      local extra = ""
      if k.indisclustered then extra = extra .. string.format("\nALTER TABLE %s CLUSTER ON %s;\n", tname, cat:q(k.indexname)) end
      if k.indisreplident then extra = extra .. string.format("\nALTER TABLE ONLY %s REPLICA IDENTITY USING INDEX %s;\n", tname, cat:q(k.indexname)) end
      -- (an exclusion constraint on a partitioned table reaches its partitions itself: see above)
      local only = (k.contype == "x" and k.relkind == "p") and "" or "ONLY "
      cat:add { key = key, kind = "constraint", desc = "CONSTRAINT", section = "post-data",
        tag = k.relname .. " " .. k.conname, namespace = k.nspname, owner = k.owner, tablespace = k.tablespace,
        deps = { "pg_class:" .. k.conrelid },
        defn = string.format("ALTER TABLE %s%s\n    ADD CONSTRAINT %s %s;\n%s", only, tname, cat:q(k.conname), def, extra),
        drop = string.format("ALTER TABLE %s%s DROP CONSTRAINT %s;\n", only, tname, cat:q(k.conname)),
        label = label, label_tag = label_tag }
      if k.conindid ~= 0 then
        local ikey = "pg_class:" .. k.conindid
        cat:alias(ikey, key)
        cat.labels[ikey] = { target = key, label = "INDEX " .. cat:qn(k.nspname, k.indexname), label_tag = "INDEX " .. k.indexname }
      end
    end
  end
  -- a foreign key to a partitioned table needs its unique index valid: every partition's index attached
  if #fk_refs > 0 then
    local tree = indexes.tree(cat)
    for _, f in ipairs(fk_refs) do
      local stack = { f.index }
      while #stack > 0 do
        local idx = table.remove(stack)
        for _, child in ipairs(tree[idx] or {}) do
          cat:dep(f.o, "indexattach:pg_class:" .. child)
          stack[#stack + 1] = child
        end
      end
    end
  end
end

return K
