--- Functions, procedures and aggregates.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT p.oid, p.proname, n.nspname, p.prokind, pg_catalog.pg_get_functiondef(p.oid) AS def,
      pg_catalog.pg_get_function_identity_arguments(p.oid) AS args, pg_catalog.pg_get_userbyid(p.proowner) AS owner
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. [[ AND p.prokind IN ('f', 'p', 'w')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype IN ('e', 'i'))
    ORDER BY n.nspname, p.proname, args]])) do
    local kw = r.prokind == "p" and "PROCEDURE" or "FUNCTION"
    local sig = string.format("%s(%s)", cat:qn(r.nspname, r.proname), r.args)
    cat:add { key = "pg_proc:" .. r.oid, kind = r.prokind == "p" and "procedure" or "function", desc = kw,
      tag = string.format("%s(%s)", r.proname, r.args), namespace = r.nspname, owner = r.owner,
      defn = r.def:gsub("\n$", "") .. ";\n", drop = "DROP " .. kw .. " " .. sig .. ";\n",
      label = kw .. " " .. sig, label_tag = string.format("%s %s(%s)", kw, r.proname, r.args),
      acl_obj = kw .. " " .. sig, acl_tag = string.format("%s %s(%s)", kw, r.proname, r.args) }
  end

  -- aggregates (normal ones; ordered-set and hypothetical ones are not registered, so coverage names them)
  for _, r in ipairs(cat:query([[SELECT p.oid, p.proname, n.nspname, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
      pg_catalog.pg_get_userbyid(p.proowner) AS owner,
      a.aggtransfn::pg_catalog.regproc::text AS sfunc, pg_catalog.format_type(a.aggtranstype, NULL) AS stype,
      NULLIF(a.aggfinalfn, 0)::pg_catalog.regproc::text AS finalfunc, NULLIF(a.aggcombinefn, 0)::pg_catalog.regproc::text AS combinefunc,
      NULLIF(a.aggserialfn, 0)::pg_catalog.regproc::text AS serialfunc, NULLIF(a.aggdeserialfn, 0)::pg_catalog.regproc::text AS deserialfunc,
      a.agginitval, a.aggfinalextra, NULLIF(a.aggsortop, 0)::pg_catalog.regoperator::text AS sortop, p.proparallel
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.prokind = 'a' AND a.aggkind = 'n' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_proc", "p.oid") ..
    " ORDER BY n.nspname, p.proname")) do
    local sig = string.format("%s(%s)", cat:qn(r.nspname, r.proname), r.args ~= "" and r.args or "*")
    local p = { "    SFUNC = " .. r.sfunc, "    STYPE = " .. r.stype }
    if r.agginitval then p[#p + 1] = "    INITCOND = " .. cat:lit(r.agginitval) end
    if r.finalfunc then p[#p + 1] = "    FINALFUNC = " .. r.finalfunc end
    if r.aggfinalextra then p[#p + 1] = "    FINALFUNC_EXTRA" end
    if r.combinefunc then p[#p + 1] = "    COMBINEFUNC = " .. r.combinefunc end
    if r.serialfunc then p[#p + 1] = "    SERIALFUNC = " .. r.serialfunc end
    if r.deserialfunc then p[#p + 1] = "    DESERIALFUNC = " .. r.deserialfunc end
    if r.sortop then p[#p + 1] = "    SORTOP = OPERATOR(" .. r.sortop:gsub("%(.*$", "") .. ")" end
    if r.proparallel == "s" then p[#p + 1] = "    PARALLEL = safe" elseif r.proparallel == "r" then p[#p + 1] = "    PARALLEL = restricted" end
    local tag = string.format("%s(%s)", r.proname, r.args ~= "" and r.args or "*")
    cat:add { key = "pg_proc:" .. r.oid, kind = "aggregate", desc = "AGGREGATE", tag = tag, namespace = r.nspname, owner = r.owner,
      defn = string.format("CREATE AGGREGATE %s (\n%s\n);\n", sig, table.concat(p, ",\n")),
      drop = "DROP AGGREGATE " .. sig .. ";\n", label = "AGGREGATE " .. sig, label_tag = "AGGREGATE " .. tag,
      acl_obj = "FUNCTION " .. sig, acl_tag = "FUNCTION " .. tag }
  end
end

return K
