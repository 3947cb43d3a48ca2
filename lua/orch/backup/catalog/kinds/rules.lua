--- Rules (other than a view's own _RETURN rule).
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT r.oid, r.rulename, c.relname, n.nspname, c.oid AS reloid, pg_catalog.pg_get_ruledef(r.oid) AS def,
      r.ev_enabled, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE r.rulename <> '_RETURN' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") .. " ORDER BY 3, 2")) do
    local tname = cat:qn(r.nspname, r.relname)
    local defn = r.def .. "\n"
    if r.ev_enabled == "D" then defn = defn .. string.format("ALTER TABLE %s DISABLE RULE %s;\n", tname, cat:q(r.rulename))
    elseif r.ev_enabled == "R" then defn = defn .. string.format("ALTER TABLE %s ENABLE REPLICA RULE %s;\n", tname, cat:q(r.rulename))
    elseif r.ev_enabled == "A" then defn = defn .. string.format("ALTER TABLE %s ENABLE ALWAYS RULE %s;\n", tname, cat:q(r.rulename)) end
    cat:add { key = "pg_rewrite:" .. r.oid, kind = "rule", desc = "RULE", section = "post-data", tag = r.relname .. " " .. r.rulename,
      namespace = r.nspname, owner = r.owner, deps = { "pg_class:" .. r.reloid }, defn = defn,
      drop = string.format("DROP RULE %s ON %s;\n", cat:q(r.rulename), tname),
      label = string.format("RULE %s ON %s", cat:q(r.rulename), tname), label_tag = "RULE " .. r.rulename .. " ON " .. r.relname }
  end
end

return K
