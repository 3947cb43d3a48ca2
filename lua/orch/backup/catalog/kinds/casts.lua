--- Casts made by users: WITH FUNCTION, WITHOUT FUNCTION (binary
-- coercible) and WITH INOUT, in their context (explicit, AS ASSIGNMENT,
-- AS IMPLICIT). No owner, no privileges; a comment. The casts a range type
-- makes to its multirange are the range type's (an internal dependency).
local K = {}

local CONTEXT = { e = "", a = " AS ASSIGNMENT", i = " AS IMPLICIT" }

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT c.oid, pg_catalog.format_type(c.castsource, NULL) AS source,
      pg_catalog.format_type(c.casttarget, NULL) AS target, c.castmethod, c.castcontext,
      CASE WHEN c.castfunc <> 0 THEN c.castfunc::pg_catalog.regprocedure::text END AS func
    FROM pg_catalog.pg_cast c WHERE c.oid >= 16384 AND ]] .. cat:not_ext("pg_cast", "c.oid") .. [[
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype = 'i')
    ORDER BY 2, 3]])) do
    local what = string.format("(%s AS %s)", r.source, r.target)
    local how
    if r.castmethod == "b" then how = "WITHOUT FUNCTION"
    elseif r.castmethod == "i" then how = "WITH INOUT"
    else how = "WITH FUNCTION " .. r.func end
    cat:add { key = "pg_cast:" .. r.oid, kind = "cast", desc = "CAST", tag = "CAST " .. what,
      defn = string.format("CREATE CAST %s %s%s;\n", what, how, CONTEXT[r.castcontext] or ""),
      drop = "DROP CAST " .. what .. ";\n", label = "CAST " .. what, label_tag = "CAST " .. what }
  end
end

return K
