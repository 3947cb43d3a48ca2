--- Event triggers: CREATE EVENT TRIGGER with its WHEN TAG filter, then its
-- state (disabled, ALWAYS, REPLICA). Restores create them last (pg_restore's
-- third pass), so they do not fire while the rest is restored.
local K = {}

local STATE = { D = "DISABLE", A = "ENABLE ALWAYS", R = "ENABLE REPLICA" }

function K.collect(cat)
  for _, r in ipairs(cat:query([[SELECT e.oid, e.evtname, e.evtevent, pg_catalog.pg_get_userbyid(e.evtowner) AS owner,
      e.evtfoid::pg_catalog.regproc::text AS func, e.evtenabled,
      pg_catalog.array_to_string(ARRAY(SELECT pg_catalog.quote_literal(t) FROM pg_catalog.unnest(e.evttags) t), ', ') AS tags
    FROM pg_catalog.pg_event_trigger e WHERE e.oid >= 16384 AND ]] .. cat:not_ext("pg_event_trigger", "e.oid") .. " ORDER BY e.evtname")) do
    local name = cat:q(r.evtname)
    local defn = string.format("CREATE EVENT TRIGGER %s ON %s\n", name, r.evtevent)
    if r.tags and r.tags ~= "" then defn = defn .. string.format("         WHEN TAG IN (%s)\n", r.tags) end
    defn = defn .. string.format("   EXECUTE FUNCTION %s();\n", r.func)
    if STATE[r.evtenabled] then defn = defn .. string.format("ALTER EVENT TRIGGER %s %s;\n", name, STATE[r.evtenabled]) end
    cat:add { key = "pg_event_trigger:" .. r.oid, kind = "event_trigger", desc = "EVENT TRIGGER", section = "post-data", tag = r.evtname,
      owner = r.owner, defn = defn, drop = "DROP EVENT TRIGGER " .. name .. ";\n",
      label = "EVENT TRIGGER " .. name, label_tag = "EVENT TRIGGER " .. r.evtname }
  end
end

return K
