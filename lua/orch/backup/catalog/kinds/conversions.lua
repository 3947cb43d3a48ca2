--- Encoding conversions (CREATE [DEFAULT] CONVERSION), with owner and comment.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT c.oid, c.conname, n.nspname, pg_catalog.pg_get_userbyid(c.conowner) AS owner,
      pg_catalog.pg_encoding_to_char(c.conforencoding) AS src, pg_catalog.pg_encoding_to_char(c.contoencoding) AS dst,
      c.conproc::pg_catalog.regproc::text AS proc, c.condefault
    FROM pg_catalog.pg_conversion c JOIN pg_catalog.pg_namespace n ON n.oid = c.connamespace
    WHERE c.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_conversion", "c.oid") ..
    " ORDER BY n.nspname, c.conname")) do
    local name = cat:qn(r.nspname, r.conname)
    cat:add { key = "pg_conversion:" .. r.oid, kind = "conversion", desc = "CONVERSION", tag = r.conname, namespace = r.nspname,
      owner = r.owner, defn = string.format("CREATE %sCONVERSION %s FOR %s TO %s FROM %s;\n", r.condefault and "DEFAULT " or "",
        name, cat:lit(r.src), cat:lit(r.dst), r.proc),
      drop = "DROP CONVERSION " .. name .. ";\n", label = "CONVERSION " .. name, label_tag = "CONVERSION " .. cat:q(r.conname) }
  end
end

return K
