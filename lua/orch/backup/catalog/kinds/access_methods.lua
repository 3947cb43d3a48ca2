--- Access methods made by users (CREATE ACCESS METHOD ... TYPE INDEX |
-- TABLE HANDLER f): no owner, no privileges; a comment. A table using one
-- names it in its archive entry (tableam), as pg_dump does.
local K = {}

local TYPE = { i = "INDEX", t = "TABLE" }

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT a.oid, a.amname, a.amtype, a.amhandler::pg_catalog.regproc::text AS handler
    FROM pg_catalog.pg_am a WHERE a.oid >= 16384 AND ]] .. cat:not_ext("pg_am", "a.oid") .. " ORDER BY a.amname")) do
    local name = cat:q(r.amname)
    if not TYPE[r.amtype] then
      require("orch.sys").error(string.format("the backup was not taken: access method %s has type '%s', which orch does not know; " ..
        "--skip access_method leaves access methods out", name, r.amtype), 1)
    end
    cat:add { key = "pg_am:" .. r.oid, kind = "access_method", desc = "ACCESS METHOD", tag = r.amname,
      defn = string.format("CREATE ACCESS METHOD %s TYPE %s HANDLER %s;\n", name, TYPE[r.amtype], r.handler),
      drop = "DROP ACCESS METHOD " .. name .. ";\n", label = "ACCESS METHOD " .. name, label_tag = "ACCESS METHOD " .. r.amname }
  end
end

return K
