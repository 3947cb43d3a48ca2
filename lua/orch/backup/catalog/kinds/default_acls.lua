--- Default privileges (ALTER DEFAULT PRIVILEGES FOR ROLE r [IN SCHEMA s]
-- GRANT / REVOKE ... ON TABLES | SEQUENCES | FUNCTIONS | TYPES | SCHEMAS |
-- LARGE OBJECTS): the difference from what the role gets without them —
-- the built-in default for a global entry, nothing for a per-schema one,
-- which only adds. DEFAULT ACL entries run in the restores' privilege
-- pass, after every object exists, so they never change restored objects.
local sys = require "orch.sys"
local decor = require "orch.backup.catalog.decor"

local K = {}

local TYPE = { r = "TABLES", S = "SEQUENCES", f = "FUNCTIONS", T = "TYPES", n = "SCHEMAS", L = "LARGE OBJECTS" }

function K.collect(cat)
  local rows = cat:query([[SELECT a.oid, a.defaclrole, pg_catalog.pg_get_userbyid(a.defaclrole) AS role, a.defaclobjtype,
      n.nspname, 'cur' AS which, x.grantor, x.grantee, x.privilege_type, x.is_grantable
    FROM pg_catalog.pg_default_acl a LEFT JOIN pg_catalog.pg_namespace n ON n.oid = a.defaclnamespace,
      pg_catalog.aclexplode(CASE WHEN pg_catalog.cardinality(a.defaclacl) > 0 THEN a.defaclacl END) x
    UNION ALL
    SELECT a.oid, a.defaclrole, pg_catalog.pg_get_userbyid(a.defaclrole), a.defaclobjtype, n.nspname, 'base',
      x.grantor, x.grantee, x.privilege_type, x.is_grantable
    FROM pg_catalog.pg_default_acl a LEFT JOIN pg_catalog.pg_namespace n ON n.oid = a.defaclnamespace,
      pg_catalog.aclexplode(CASE WHEN a.defaclnamespace = 0
        THEN pg_catalog.acldefault(CASE WHEN a.defaclobjtype = 'S' THEN 's'::"char" ELSE a.defaclobjtype END, a.defaclrole)
        END) x
    ORDER BY 1]])
  local by, order = {}, {}
  -- an entry whose ACL is empty has no rows above: find every entry
  for _, r in ipairs(cat:query([[SELECT a.oid, a.defaclrole, pg_catalog.pg_get_userbyid(a.defaclrole) AS role, a.defaclobjtype,
      a.defaclnamespace, n.nspname
      FROM pg_catalog.pg_default_acl a LEFT JOIN pg_catalog.pg_namespace n ON n.oid = a.defaclnamespace ORDER BY a.oid]])) do
    by[r.oid] = { r = r, cur = {}, base = {} }
    order[#order + 1] = r.oid
  end
  for _, r in ipairs(rows) do table.insert(by[r.oid][r.which], r) end
  for _, oid in ipairs(order) do
    local e = by[oid]
    local r = e.r
    local key = "pg_default_acl:" .. oid
    local what = TYPE[r.defaclobjtype]
    if not what then
      sys.error(string.format("the backup was not taken: default privileges of role %s are for object type '%s', which orch does not know; " ..
        "--skip default_acl leaves default privileges out", r.role, r.defaclobjtype), 1)
    end
    if cat.opts.no_acl then
      cat:cover(key, "privileges are not backed up (--no-acl)")
    else
      local prefix = string.format("ALTER DEFAULT PRIVILEGES FOR ROLE %s%s ", cat:q(r.role), r.nspname and (" IN SCHEMA " .. cat:q(r.nspname)) or "")
      local text = decor.acl_commands(cat, e.cur, e.base, what, r.defaclrole)
      local lines = {}
      for line in text:gmatch("[^\n]+") do
        lines[#lines + 1] = (line:match("^GRANT ") or line:match("^REVOKE ")) and (prefix .. line) or line
      end
      local o = cat:add { key = key, kind = "default_acl", desc = "DEFAULT ACL", section = "post-data",
        tag = "DEFAULT PRIVILEGES FOR " .. what, namespace = r.nspname, owner = r.role,
        defn = #lines > 0 and (table.concat(lines, "\n") .. "\n") or "" }
      if r.defaclnamespace ~= 0 then cat:dep(o, "pg_namespace:" .. r.defaclnamespace) end
    end
  end
end

return K
