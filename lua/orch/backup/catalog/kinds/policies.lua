--- Row-level security policies (the ENABLE / FORCE switches are the table's: see relations.lua).
local K = {}

local CMD = { r = "SELECT", a = "INSERT", w = "UPDATE", d = "DELETE", ["*"] = "ALL" }

function K.collect(cat)
  for _, p in ipairs(cat:query([[SELECT p.oid, p.polname, c.relname, n.nspname, c.oid AS reloid, p.polpermissive, p.polcmd,
      CASE WHEN p.polroles = '{0}' THEN 'PUBLIC' ELSE (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(rolname), ', ' ORDER BY rolname)
        FROM pg_catalog.pg_roles WHERE oid = ANY (p.polroles)) END AS roles,
      pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS withcheck,
      pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(p.nspname, p.relname)
    local defn = string.format("CREATE POLICY %s ON %s%s FOR %s TO %s", cat:q(p.polname), name, p.polpermissive and "" or " AS RESTRICTIVE",
      CMD[p.polcmd], p.roles)
    if p.qual then defn = defn .. " USING (" .. p.qual .. ")" end
    if p.withcheck then defn = defn .. " WITH CHECK (" .. p.withcheck .. ")" end
    cat:add { key = "pg_policy:" .. p.oid, kind = "policy", desc = "POLICY", section = "post-data", tag = p.relname .. " " .. p.polname,
      namespace = p.nspname, owner = p.owner, deps = { "pg_class:" .. p.reloid }, defn = defn .. ";\n",
      drop = string.format("DROP POLICY %s ON %s;\n", cat:q(p.polname), name),
      label = string.format("POLICY %s ON %s", cat:q(p.polname), name), label_tag = "POLICY " .. p.polname .. " ON " .. p.relname }
  end
end

return K
