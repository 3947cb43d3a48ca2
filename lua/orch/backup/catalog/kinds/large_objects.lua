--- Large objects, as pg_dump 15 writes them (archive 1.14): one BLOB entry
-- per object (pre-data; defn lo_create of its oid, owned by its owner),
-- carrying its comment, security label and privileges ("LARGE OBJECT oid"),
-- and one BLOBS data entry whose block holds every object's bytes
-- (orch.backup streams them with w:copy_blobs, in bounded memory).
-- Every large object is taken, whatever its oid: lo_create(42) makes one
-- below the oids of user objects that coverage looks at.
local K = {}

function K.collect(cat)
  local oids = {}
  for _, r in ipairs(cat:query([[SELECT m.oid, pg_catalog.pg_get_userbyid(m.lomowner) AS owner
      FROM pg_catalog.pg_largeobject_metadata m ORDER BY m.oid]])) do
    local oid = tostring(math.tointeger(r.oid) or r.oid)
    local key = "pg_largeobject_metadata:" .. oid
    cat:add { key = key, kind = "large_object", desc = "BLOB", tag = oid, owner = r.owner, section = "pre-data",
      defn = string.format("SELECT pg_catalog.lo_create('%s');\n", oid),
      drop = string.format("SELECT pg_catalog.lo_unlink('%s');\n", oid),
      label = "LARGE OBJECT " .. oid, label_tag = "LARGE OBJECT " .. oid,
      acl_obj = "LARGE OBJECT " .. oid, acl_tag = "LARGE OBJECT " .. oid }
    -- comments and security labels name a large object by pg_largeobject, its privileges by the metadata row
    cat:alias("pg_largeobject:" .. oid, key)
    oids[#oids + 1] = math.tointeger(r.oid)
  end
  if #oids > 0 then
    cat:add { key = "blobs", kind = "large_object", desc = "BLOBS", tag = "BLOBS", section = "data", blobs = oids }
  end
end

return K
