--- Schemas, and the public schema that every database already has: it is
-- not created, but its owner, comment and privileges are kept when they
-- differ from what a new database starts with.
local K = {}

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT n.oid, n.nspname, pg_catalog.pg_get_userbyid(n.nspowner) AS owner
      FROM pg_catalog.pg_namespace n
      WHERE ]] .. cat:user_ns("n.nspname") .. " AND n.nspname <> 'public' AND " .. cat:not_ext("pg_namespace", "n.oid") ..
      " ORDER BY n.nspname")) do
    local name = cat:q(r.nspname)
    cat:add { key = "pg_namespace:" .. r.oid, kind = "schema", desc = "SCHEMA", tag = r.nspname, owner = r.owner,
      defn = "CREATE SCHEMA " .. name .. ";\n", drop = "DROP SCHEMA " .. name .. ";\n",
      label = "SCHEMA " .. name, label_tag = "SCHEMA " .. r.nspname, acl_obj = "SCHEMA " .. name, acl_tag = "SCHEMA " .. r.nspname }
  end
  -- public: created by CREATE DATABASE. Its default owner is pg_database_owner from 15 on, the
  -- bootstrap superuser before; an owner changed since is restored with ALTER SCHEMA ... OWNER.
  local pub = cat:query([[SELECT n.oid, pg_catalog.pg_get_userbyid(n.nspowner) AS owner, n.nspowner,
      (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10) AS bootstrap
    FROM pg_catalog.pg_namespace n WHERE n.nspname = 'public']])[1]
  if pub then
    local default_owner = cat:since(150000) and "pg_database_owner" or pub.bootstrap
    local changed = pub.owner ~= default_owner
    cat:add { key = "pg_namespace:" .. pub.oid, kind = "schema", desc = "SCHEMA", tag = "public",
      owner = changed and pub.owner or nil,
      -- a comment, not a statement: pg_restore then issues the ALTER ... OWNER itself, as for pg_dump's archives
      defn = changed and "-- *not* creating schema, since initdb creates it\n" or "",
      drop = changed and "DROP SCHEMA public;\n" or nil,
      default_comment = "standard public schema",
      label = "SCHEMA public", label_tag = "SCHEMA public", acl_obj = "SCHEMA public", acl_tag = "SCHEMA public" }
  end
end

return K
