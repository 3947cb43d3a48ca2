--- Functions, procedures and aggregates of every kind.
--
-- Functions and procedures are written by the server's own
-- pg_get_functiondef (SQL-standard bodies, SET options, SUPPORT,
-- TRANSFORM, WINDOW, LEAKPROOF, COST/ROWS included), followed by ALTER ...
-- DEPENDS ON EXTENSION for the extensions a function is marked as needing.
-- Aggregates (normal, ordered-set and hypothetical; moving-aggregate and
-- FINALFUNC_MODIFY options; zero-argument ones as name(*)) are written as
-- pg_dump writes them; their privileges are GRANTed as a FUNCTION's, with
-- the plain argument-type list (there is no GRANT ON AGGREGATE).
local K = {}

local MODIFY = { r = "READ_ONLY", s = "SHAREABLE", w = "READ_WRITE" }

-- ALTER <kw> <sig> DEPENDS ON EXTENSION e, for each extension pg_proc row oid is marked with ('x').
local function depends_on_ext(cat)
  local out = {}
  for _, r in ipairs(cat:query([[SELECT d.objid, e.extname FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'x'
        AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass ORDER BY e.extname]])) do
    out[r.objid] = out[r.objid] or {}
    table.insert(out[r.objid], r.extname)
  end
  return out
end

local function functions(cat, xdeps)
  for _, r in ipairs(cat:query([[SELECT p.oid, p.proname, n.nspname, p.prokind, pg_catalog.pg_get_functiondef(p.oid) AS def,
      pg_catalog.pg_get_function_identity_arguments(p.oid) AS args, pg_catalog.pg_get_userbyid(p.proowner) AS owner,
      (SELECT pg_catalog.string_agg(pg_catalog.format_type(a.t, NULL), ', ' ORDER BY a.o)
         FROM pg_catalog.unnest(p.proargtypes) WITH ORDINALITY AS a(t, o)) AS argtypes
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE ]] .. cat:user_ns("n.nspname") .. [[ AND p.prokind IN ('f', 'p', 'w')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype IN ('e', 'i'))
    ORDER BY n.nspname, p.proname, args]])) do
    local kw = r.prokind == "p" and "PROCEDURE" or "FUNCTION"
    local sig = string.format("%s(%s)", cat:qn(r.nspname, r.proname), r.args)
    local defn = r.def:gsub("\n$", "") .. ";\n"
    for _, e in ipairs(xdeps[r.oid] or {}) do
      defn = defn .. string.format("ALTER %s %s DEPENDS ON EXTENSION %s;\n", kw, sig, cat:q(e))
    end
    cat:add { key = "pg_proc:" .. r.oid, kind = r.prokind == "p" and "procedure" or "function", desc = kw,
      -- tagged as pg_dump tags it, name(argument types) (its comment and privileges name the arguments too):
      -- what pg_restore -P and orch restore -P match
      tag = string.format("%s(%s)", r.proname, r.argtypes or ""), namespace = r.nspname, owner = r.owner,
      defn = defn, drop = "DROP " .. kw .. " " .. sig .. ";\n",
      label = kw .. " " .. sig, label_tag = string.format("%s %s(%s)", kw, r.proname, r.args),
      acl_obj = kw .. " " .. sig, acl_tag = string.format("%s %s(%s)", kw, r.proname, r.args) }
  end
end

local function aggregates(cat)
  for _, r in ipairs(cat:query([[SELECT p.oid, p.proname, n.nspname, p.pronargs, a.aggkind,
      pg_catalog.pg_get_function_arguments(p.oid) AS fullargs, pg_catalog.pg_get_function_identity_arguments(p.oid) AS args,
      (SELECT pg_catalog.string_agg(pg_catalog.format_type(t, NULL), ', ' ORDER BY i)
         FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY AS x(t, i)) AS argtypes,
      pg_catalog.pg_get_userbyid(p.proowner) AS owner,
      a.aggtransfn::pg_catalog.regproc::text AS sfunc, pg_catalog.format_type(a.aggtranstype, NULL) AS stype, a.aggtransspace,
      NULLIF(a.aggfinalfn, 0)::pg_catalog.regproc::text AS finalfunc, a.aggfinalextra, a.aggfinalmodify,
      NULLIF(a.aggcombinefn, 0)::pg_catalog.regproc::text AS combinefunc,
      NULLIF(a.aggserialfn, 0)::pg_catalog.regproc::text AS serialfunc, NULLIF(a.aggdeserialfn, 0)::pg_catalog.regproc::text AS deserialfunc,
      NULLIF(a.aggmtransfn, 0)::pg_catalog.regproc::text AS msfunc, NULLIF(a.aggminvtransfn, 0)::pg_catalog.regproc::text AS minvfunc,
      CASE WHEN a.aggmtranstype <> 0 THEN pg_catalog.format_type(a.aggmtranstype, NULL) END AS mstype, a.aggmtransspace,
      NULLIF(a.aggmfinalfn, 0)::pg_catalog.regproc::text AS mfinalfunc, a.aggmfinalextra, a.aggmfinalmodify,
      a.agginitval, a.aggminitval,
      (SELECT pg_catalog.format('OPERATOR(%I.%s)', so.nspname, o.oprname) FROM pg_catalog.pg_operator o
         JOIN pg_catalog.pg_namespace so ON so.oid = o.oprnamespace WHERE o.oid = a.aggsortop) AS sortop, p.proparallel
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = p.oid
    WHERE p.prokind = 'a' AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_proc", "p.oid") ..
    " ORDER BY n.nspname, p.proname, args")) do
    local zero = r.pronargs == 0
    local args = zero and "*" or r.args
    local sig = string.format("%s(%s)", cat:qn(r.nspname, r.proname), args)
    local full = string.format("%s(%s)", cat:qn(r.nspname, r.proname), zero and "*" or r.fullargs)
    local default_modify = r.aggkind == "n" and "r" or "w"
    local p = { "    SFUNC = " .. r.sfunc, "    STYPE = " .. r.stype }
    local function opt(k, v) if v ~= nil then p[#p + 1] = "    " .. k .. (v == true and "" or (" = " .. v)) end end
    if r.aggtransspace ~= 0 then opt("SSPACE", r.aggtransspace) end
    if r.agginitval then opt("INITCOND", cat:lit(r.agginitval)) end
    if r.finalfunc then
      opt("FINALFUNC", r.finalfunc)
      if r.aggfinalextra then opt("FINALFUNC_EXTRA", true) end
      if r.aggfinalmodify ~= default_modify then opt("FINALFUNC_MODIFY", MODIFY[r.aggfinalmodify]) end
    end
    opt("COMBINEFUNC", r.combinefunc)
    opt("SERIALFUNC", r.serialfunc)
    opt("DESERIALFUNC", r.deserialfunc)
    if r.msfunc then
      opt("MSFUNC", r.msfunc); opt("MINVFUNC", r.minvfunc); opt("MSTYPE", r.mstype)
    end
    if r.aggmtransspace ~= 0 then opt("MSSPACE", r.aggmtransspace) end
    if r.aggminitval then opt("MINITCOND", cat:lit(r.aggminitval)) end
    if r.mfinalfunc then
      opt("MFINALFUNC", r.mfinalfunc)
      if r.aggmfinalextra then opt("MFINALFUNC_EXTRA", true) end
      if r.aggmfinalmodify ~= default_modify then opt("MFINALFUNC_MODIFY", MODIFY[r.aggmfinalmodify]) end
    end
    opt("SORTOP", r.sortop)
    if r.aggkind == "h" then opt("HYPOTHETICAL", true) end
    if r.proparallel == "s" then opt("PARALLEL", "safe") elseif r.proparallel == "r" then opt("PARALLEL", "restricted") end
    local tag = string.format("%s(%s)", r.proname, args)
    local grant = string.format("%s(%s)", cat:qn(r.nspname, r.proname), r.argtypes or "")
    cat:add { key = "pg_proc:" .. r.oid, kind = "aggregate", desc = "AGGREGATE", tag = tag, namespace = r.nspname, owner = r.owner,
      defn = string.format("CREATE AGGREGATE %s (\n%s\n);\n", full, table.concat(p, ",\n")),
      drop = "DROP AGGREGATE " .. sig .. ";\n", label = "AGGREGATE " .. sig, label_tag = "AGGREGATE " .. tag,
      acl_obj = "FUNCTION " .. grant, acl_tag = string.format("FUNCTION %s(%s)", r.proname, r.argtypes or "") }
  end
end

function K.collect(cat)
  functions(cat, depends_on_ext(cat))
  aggregates(cat)
end

return K
