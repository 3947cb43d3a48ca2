--- Triggers: the user's own (not the internal ones behind foreign keys),
-- constraint triggers (whose pg_constraint row is part of the trigger), and
-- a partition's copy of its parent's trigger when its enabled state differs
-- from the parent's (pg_dump writes it as ALTER TABLE ... DISABLE/ENABLE
-- TRIGGER; the copy itself is made by the parent's CREATE TRIGGER).
--
-- Server versions differ: 15+ marks a partition's copy with tgparentid;
-- 13 and 14 also mark it tgisinternal; 12 marks it internal and links it to
-- its parent only in pg_depend.
local K = {}

local ENABLE = { D = "DISABLE", R = "ENABLE REPLICA", A = "ENABLE ALWAYS", O = "ENABLE" }

function K.collect(cat)
  local own = cat:since(130000) and "NOT t.tgisinternal AND t.tgparentid = 0" or "NOT t.tgisinternal"
  for _, t in ipairs(cat:query([[SELECT t.oid, t.tgname, c.relname, n.nspname, c.oid AS reloid, pg_catalog.pg_get_triggerdef(t.oid, false) AS def,
      t.tgenabled, t.tgconstraint, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE ]] .. own .. " AND " .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") .. " ORDER BY 3, 2")) do
    local name = cat:qn(t.nspname, t.relname)
    local q = cat:q(t.tgname)
    local defn = t.def .. ";\n"
    if t.tgenabled ~= "O" and ENABLE[t.tgenabled] then
      defn = defn .. string.format("\nALTER TABLE %s %s TRIGGER %s;\n", name, ENABLE[t.tgenabled], q)
    end
    local key = "pg_trigger:" .. t.oid
    cat:add { key = key, kind = "trigger", desc = "TRIGGER", section = "post-data", tag = t.relname .. " " .. t.tgname,
      namespace = t.nspname, owner = t.owner, deps = { "pg_class:" .. t.reloid }, defn = defn,
      drop = string.format("DROP TRIGGER %s ON %s;\n", q, name),
      label = string.format("TRIGGER %s ON %s", q, name), label_tag = "TRIGGER " .. t.tgname .. " ON " .. t.relname }
    -- a constraint trigger's constraint row is the trigger's own
    if t.tgconstraint ~= 0 then cat:alias("pg_constraint:" .. t.tgconstraint, key) end
  end

  -- a partition's copy whose enabled state is not its parent's
  local parent_of
  if cat:since(150000) then
    parent_of = "JOIN pg_catalog.pg_trigger u ON u.oid = t.tgparentid WHERE t.tgparentid <> 0"
  elseif cat:since(130000) then
    parent_of = "JOIN pg_catalog.pg_trigger u ON u.oid = t.tgparentid WHERE t.tgisinternal AND t.tgparentid <> 0"
  else
    parent_of = [[JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objid = t.oid
        AND d.refclassid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
      JOIN pg_catalog.pg_trigger u ON u.oid = d.refobjid WHERE t.tgisinternal]]
  end
  local clones, parent = {}, {}
  for _, t in ipairs(cat:query([[SELECT t.oid, t.tgname, c.relname, n.nspname, c.oid AS reloid, t.tgenabled, u.oid AS parent,
      u.tgenabled AS parent_enabled, pg_catalog.pg_get_userbyid(c.relowner) AS owner
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    ]] .. parent_of .. [[ AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.oid = t.tgconstraint AND k.contype <> 't')
      AND ]] .. cat:user_ns("n.nspname") .. " AND " .. cat:not_ext("pg_class", "c.oid") .. " ORDER BY 3, 2")) do
    -- (the triggers behind a foreign key are the constraint's, whatever their state)
    parent[t.oid] = t.parent
    if t.tgenabled ~= t.parent_enabled then clones[#clones + 1] = t end
  end
  for _, t in ipairs(clones) do
    local name = cat:qn(t.nspname, t.relname)
    local q = cat:q(t.tgname)
    -- after the CREATE TRIGGER that made it, and after any ancestor copy's own ALTER
    local deps, up, n = { "pg_class:" .. t.reloid }, t.parent, 0
    while up and n < 100 do
      deps[#deps + 1] = "pg_trigger:" .. up
      up, n = parent[up], n + 1
    end
    cat:add { key = "pg_trigger:" .. t.oid, kind = "trigger", desc = "TRIGGER", section = "post-data", tag = t.relname .. " " .. t.tgname,
      namespace = t.nspname, owner = t.owner, deps = deps,
      defn = string.format("\nALTER TABLE %s %s TRIGGER %s;\n", name, ENABLE[t.tgenabled] or "ENABLE", q),
      label = string.format("TRIGGER %s ON %s", q, name), label_tag = "TRIGGER " .. t.tgname .. " ON " .. t.relname }
  end
end

return K
