--- Procedural languages not created by an extension: CREATE [TRUSTED]
-- PROCEDURAL LANGUAGE with its handler, inline and validator functions
-- (schema-qualified, wherever they live), owner, privileges (trusted
-- languages) and comment. plpgsql and other extension languages are the
-- extension's.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT l.oid, l.lanname, l.lanpltrusted, pg_catalog.pg_get_userbyid(l.lanowner) AS owner,
      l.lanplcallfoid::pg_catalog.regproc::text AS handler,
      NULLIF(l.laninline, 0)::pg_catalog.regproc::text AS inline, NULLIF(l.lanvalidator, 0)::pg_catalog.regproc::text AS validator
    FROM pg_catalog.pg_language l WHERE l.oid >= 16384 AND l.lanispl AND ]] .. cat:not_ext("pg_language", "l.oid") .. " ORDER BY l.lanname")) do
    local name = cat:q(r.lanname)
    local function qualified(f)
      -- regproc leaves pg_catalog functions bare under our search_path
      return f:find(".", 1, true) and f or ("pg_catalog." .. f)
    end
    local defn = string.format("CREATE %sPROCEDURAL LANGUAGE %s HANDLER %s", r.lanpltrusted and "TRUSTED " or "", name, qualified(r.handler))
    if r.inline then defn = defn .. " INLINE " .. qualified(r.inline) end
    if r.validator then defn = defn .. " VALIDATOR " .. qualified(r.validator) end
    cat:add { key = "pg_language:" .. r.oid, kind = "language", desc = "PROCEDURAL LANGUAGE", tag = r.lanname, owner = r.owner,
      defn = defn .. ";\n", drop = "DROP PROCEDURAL LANGUAGE " .. name .. ";\n",
      label = "LANGUAGE " .. name, label_tag = "LANGUAGE " .. r.lanname,
      acl_obj = "LANGUAGE " .. name, acl_tag = "LANGUAGE " .. r.lanname }
  end
end

return K
