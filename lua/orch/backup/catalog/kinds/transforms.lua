--- Transforms (CREATE TRANSFORM FOR type LANGUAGE lang): no owner, no
-- privileges, a comment. They come after their functions, type and
-- language by their pg_depend rows.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT t.oid, pg_catalog.format_type(t.trftype, NULL) AS type, l.lanname,
      CASE WHEN t.trffromsql <> 0 THEN t.trffromsql::pg_catalog.regprocedure::text END AS fromsql,
      CASE WHEN t.trftosql <> 0 THEN t.trftosql::pg_catalog.regprocedure::text END AS tosql
    FROM pg_catalog.pg_transform t JOIN pg_catalog.pg_language l ON l.oid = t.trflang
    WHERE t.oid >= 16384 AND ]] .. cat:not_ext("pg_transform", "t.oid") .. " ORDER BY 2, 3")) do
    local what = string.format("FOR %s LANGUAGE %s", r.type, cat:q(r.lanname))
    local parts = {}
    if r.fromsql then parts[#parts + 1] = "FROM SQL WITH FUNCTION " .. r.fromsql end
    if r.tosql then parts[#parts + 1] = "TO SQL WITH FUNCTION " .. r.tosql end
    cat:add { key = "pg_transform:" .. r.oid, kind = "transform", desc = "TRANSFORM", tag = "TRANSFORM " .. what,
      defn = string.format("CREATE TRANSFORM %s (%s);\n", what, table.concat(parts, ", ")),
      drop = string.format("DROP TRANSFORM %s;\n", what), label = "TRANSFORM " .. what, label_tag = "TRANSFORM " .. what }
  end
end

return K
