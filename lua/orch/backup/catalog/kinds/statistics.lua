--- Extended statistics (CREATE STATISTICS): their kinds, columns and
-- expressions as pg_get_statisticsobjdef gives them, and a statistics
-- target set with ALTER STATISTICS (13+; -1 before 17 and NULL from 17 on
-- mean the default).
local K = {}

function K.collect(cat)
  local target = cat:since(130000) and "NULLIF(s.stxstattarget, -1)" or "NULL::integer"
  for _, s in ipairs(cat:query([[SELECT s.oid, s.stxname, n.nspname, pg_catalog.pg_get_userbyid(s.stxowner) AS owner, s.stxrelid,
      pg_catalog.pg_get_statisticsobjdef(s.oid) AS def, ]] .. target .. [[ AS stattarget
    FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace
    JOIN pg_catalog.pg_class c ON c.oid = s.stxrelid
    WHERE ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_statistic_ext", "s.oid") .. " AND " ..
      cat:not_ext("pg_class", "c.oid") .. " ORDER BY n.nspname, s.stxname")) do
    local name = cat:qn(s.nspname, s.stxname)
    local defn = s.def .. ";\n"
    if s.stattarget then defn = defn .. string.format("ALTER STATISTICS %s SET STATISTICS %s;\n", name, s.stattarget) end
    cat:add { key = "pg_statistic_ext:" .. s.oid, kind = "statistics", desc = "STATISTICS", section = "post-data", tag = s.stxname,
      namespace = s.nspname, owner = s.owner, deps = { "pg_class:" .. s.stxrelid }, defn = defn,
      drop = "DROP STATISTICS " .. name .. ";\n", label = "STATISTICS " .. name, label_tag = "STATISTICS " .. s.stxname }
  end
end

return K
