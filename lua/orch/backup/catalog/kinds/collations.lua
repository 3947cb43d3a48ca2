--- Collations (libc, ICU, builtin), deterministic or not, with ICU rules
-- (16+). The catalog changed across majors: before 15 an ICU locale is in
-- collcollate; 15 and 16 keep it in colliculocale, 17 in colllocale. The
-- collation version is not carried over: the target computes its own, as
-- pg_dump leaves it.
local K = {}

local PROVIDER = { c = "libc", i = "icu", b = "builtin" }

function K.collect(cat)
  local locale = cat:since(170000) and "c.colllocale" or (cat:since(150000) and "c.colliculocale" or "NULL::text")
  local rules = cat:since(160000) and "c.collicurules" or "NULL::text"
  for _, r in ipairs(cat:query([[SELECT c.oid, c.collname, n.nspname, pg_catalog.pg_get_userbyid(c.collowner) AS owner,
      c.collprovider, c.collisdeterministic, NULLIF(c.collcollate::text, '') AS collcollate, NULLIF(c.collctype::text, '') AS collctype,
      ]] .. locale .. " AS locale, " .. rules .. [[ AS rules
    FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
    WHERE c.oid >= 16384 AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_collation", "c.oid") ..
    " ORDER BY n.nspname, c.collname")) do
    local name = cat:qn(r.nspname, r.collname)
    local provider = PROVIDER[r.collprovider]
    if not provider then
      require("orch.sys").error(string.format("the backup was not taken: collation %s has provider '%s', which orch does not know; " ..
        "--skip collation leaves collations out", name, r.collprovider), 1)
    end
    local p = { "provider = " .. provider }
    if not r.collisdeterministic then p[#p + 1] = "deterministic = false" end
    if r.collprovider == "c" then
      if r.collcollate == r.collctype then p[#p + 1] = "locale = " .. cat:lit(r.collcollate or "")
      else
        p[#p + 1] = "lc_collate = " .. cat:lit(r.collcollate or "")
        p[#p + 1] = "lc_ctype = " .. cat:lit(r.collctype or "")
      end
    else
      -- icu (locale in collcollate before 15) and builtin
      p[#p + 1] = "locale = " .. cat:lit(r.locale or r.collcollate or "")
      if r.rules then p[#p + 1] = "rules = " .. cat:lit(r.rules) end
    end
    cat:add { key = "pg_collation:" .. r.oid, kind = "collation", desc = "COLLATION", tag = r.collname, namespace = r.nspname,
      owner = r.owner, defn = string.format("CREATE COLLATION %s (%s);\n", name, table.concat(p, ", ")),
      drop = "DROP COLLATION " .. name .. ";\n", label = "COLLATION " .. name, label_tag = "COLLATION " .. cat:q(r.collname) }
  end
end

return K
