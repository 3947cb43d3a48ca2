--- Triggers (not the internal ones behind foreign keys, nor a partition's
-- copies of its parent's triggers, which the parent's CREATE TRIGGER makes).
local K = {}

function K.collect(cat)
  -- PostgreSQL 13+ marks a partition's copy with tgparentid; 12 marks it internal
  local own = cat:since(130000) and "NOT t.tgisinternal AND t.tgparentid = 0" or "NOT t.tgisinternal"
  for _, t in ipairs(cat:query([[SELECT t.oid, t.tgname, c.relname, n.nspname, c.oid AS reloid, pg_catalog.pg_get_triggerdef(t.oid) AS def,
      t.tgenabled, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. own .. " AND " .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(t.nspname, t.relname)
    local q = cat:q(t.tgname)
    local defn = t.def .. ";\n"
    if t.tgenabled == "D" then defn = defn .. string.format("ALTER TABLE %s DISABLE TRIGGER %s;\n", name, q)
    elseif t.tgenabled == "R" then defn = defn .. string.format("ALTER TABLE %s ENABLE REPLICA TRIGGER %s;\n", name, q)
    elseif t.tgenabled == "A" then defn = defn .. string.format("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s;\n", name, q) end
    cat:add { key = "pg_trigger:" .. t.oid, kind = "trigger", desc = "TRIGGER", section = "post-data", tag = t.relname .. " " .. t.tgname,
      namespace = t.nspname, owner = t.owner, deps = { "pg_class:" .. t.reloid }, defn = defn,
      drop = string.format("DROP TRIGGER %s ON %s;\n", q, name),
      label = string.format("TRIGGER %s ON %s", q, name), label_tag = "TRIGGER " .. t.tgname .. " ON " .. t.relname }
  end
end

return K
