--- Publications and subscriptions.
--
-- A publication is written with its options (publish, via partition root,
-- generated columns on 18), then one entry per table (column list, row
-- filter) and per schema it publishes, as pg_dump does.
--
-- A subscription is written as pg_dump writes it: connect = false, so a
-- restore never reaches the publisher nor creates a slot; it comes back
-- disabled with its slot name, options and publications, and is started
-- by hand (ALTER SUBSCRIPTION ... ENABLE, after making sure the slot is not
-- in use by the original) — its entry says so when it was enabled. Only a
-- role that may read pg_subscription.subconninfo (a superuser) can back
-- subscriptions up; for any other role the backup fails naming them,
-- unless --skip subscription leaves them out knowingly. Their comments and
-- security labels live in the shared catalogs (pg_shdescription,
-- pg_shseclabel) and are written after them.
local sys = require "orch.sys"

local K = {}

local function publications(cat)
  local viaroot = cat:since(130000) and "p.pubviaroot" or "false"
  local gencols = cat:since(180000) and "p.pubgencols::text" or "'n'"
  for _, r in ipairs(cat:query([[SELECT p.oid, p.pubname, pg_catalog.pg_get_userbyid(p.pubowner) AS owner, p.puballtables,
      p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, ]] .. viaroot .. " AS viaroot, " .. gencols .. [[ AS gencols
    FROM pg_catalog.pg_publication p WHERE p.oid >= 16384 AND ]] .. cat:not_ext("pg_publication", "p.oid") .. " ORDER BY p.pubname")) do
    local name = cat:q(r.pubname)
    local publish = {}
    for _, a in ipairs { "insert", "update", "delete", "truncate" } do
      if r["pub" .. a] then publish[#publish + 1] = a end
    end
    local with = { "publish = " .. cat:lit(table.concat(publish, ", ")) }
    if r.viaroot then with[#with + 1] = "publish_via_partition_root = true" end
    if r.gencols == "s" then with[#with + 1] = "publish_generated_columns = stored" end
    cat:add { key = "pg_publication:" .. r.oid, kind = "publication", desc = "PUBLICATION", section = "post-data", tag = r.pubname,
      owner = r.owner, drop = "DROP PUBLICATION " .. name .. ";\n", label = "PUBLICATION " .. name, label_tag = "PUBLICATION " .. r.pubname,
      defn = string.format("CREATE PUBLICATION %s%s WITH (%s);\n", name, r.puballtables and " FOR ALL TABLES" or "", table.concat(with, ", ")) }
  end
  local filters = cat:since(150000) and [[pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) AS qual,
      (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY x.i)
         FROM pg_catalog.unnest(pr.prattrs::pg_catalog.int2[]) WITH ORDINALITY AS x(attnum, i)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = x.attnum) AS cols]] or "NULL::text AS qual, NULL::text AS cols"
  for _, r in ipairs(cat:query([[SELECT pr.oid, pr.prpubid, pr.prrelid, p.pubname, c.relname, n.nspname,
      pg_catalog.pg_get_userbyid(p.pubowner) AS owner, ]] .. filters .. [[
    FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
    JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE pr.oid >= 16384 ORDER BY p.pubname, n.nspname, c.relname]])) do
    cat:add { key = "pg_publication_rel:" .. r.oid, kind = "publication", desc = "PUBLICATION TABLE", section = "post-data",
      tag = r.pubname .. " " .. r.relname, namespace = r.nspname, owner = r.owner,
      deps = { "pg_publication:" .. r.prpubid, "pg_class:" .. r.prrelid },
      defn = string.format("ALTER PUBLICATION %s ADD TABLE ONLY %s%s%s;\n", cat:q(r.pubname), cat:qn(r.nspname, r.relname),
        r.cols and (" (" .. r.cols .. ")") or "", r.qual and (" WHERE (" .. r.qual .. ")") or "") }
  end
  if cat:since(150000) then
    for _, r in ipairs(cat:query([[SELECT pn.oid, pn.pnpubid, pn.pnnspid, p.pubname, n.nspname, pg_catalog.pg_get_userbyid(p.pubowner) AS owner
      FROM pg_catalog.pg_publication_namespace pn JOIN pg_catalog.pg_publication p ON p.oid = pn.pnpubid
      JOIN pg_catalog.pg_namespace n ON n.oid = pn.pnnspid WHERE pn.oid >= 16384 ORDER BY p.pubname, n.nspname]])) do
      cat:add { key = "pg_publication_namespace:" .. r.oid, kind = "publication", desc = "PUBLICATION TABLES IN SCHEMA", section = "post-data",
        tag = r.pubname .. " " .. r.nspname, namespace = r.nspname, owner = r.owner,
        deps = { "pg_publication:" .. r.pnpubid, "pg_namespace:" .. r.pnnspid },
        defn = string.format("ALTER PUBLICATION %s ADD TABLES IN SCHEMA %s;\n", cat:q(r.pubname), cat:q(r.nspname)) }
    end
  end
end

local TWO_PHASE_OFF = "d"

local function subscriptions(cat)
  local here = "s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
  -- (PostgreSQL 12 grants everyone its columns but oid and subconninfo: a database owner backing up reads the names)
  local oid = cat.conn:value("SELECT pg_catalog.has_column_privilege('pg_catalog.pg_subscription', 'oid', 'SELECT')")
    and "s.oid" or "NULL::pg_catalog.oid AS oid"
  local names = cat:query("SELECT " .. oid .. ", s.subname FROM pg_catalog.pg_subscription s WHERE " .. here .. " ORDER BY s.subname")
  if #names == 0 then return end
  if cat:skipping("subscription") then
    for _, r in ipairs(names) do
      cat.skipped[#cat.skipped + 1] = { key = "pg_subscription:" .. (r.oid or r.subname), kind = "subscription", desc = "SUBSCRIPTION", tag = r.subname }
    end
    return
  end
  if not cat.conn:value("SELECT pg_catalog.has_column_privilege('pg_catalog.pg_subscription', 'subconninfo', 'SELECT')") then
    local list = {}
    for _, r in ipairs(names) do list[#list + 1] = r.subname end
    sys.error("the backup was not taken: this database has subscriptions (" .. table.concat(list, ", ") .. "), and only a superuser " ..
      "may read their connection strings; back up as a superuser, or leave subscriptions out knowingly with --skip subscription", 1)
  end
  local v = cat.version
  local cols = {
    v >= 140000 and "s.subbinary" or "false AS subbinary",
    v >= 140000 and "s.substream::text AS substream" or "'f' AS substream",
    v >= 150000 and "s.subtwophasestate::text AS subtwophasestate" or "'d' AS subtwophasestate",
    v >= 150000 and "s.subdisableonerr" or "false AS subdisableonerr",
    v >= 160000 and "s.subpasswordrequired" or "true AS subpasswordrequired",
    v >= 160000 and "s.subrunasowner" or "false AS subrunasowner",
    v >= 160000 and "s.suborigin" or "'any' AS suborigin",
    v >= 170000 and "s.subfailover" or "false AS subfailover",
  }
  for _, r in ipairs(cat:query([[SELECT s.oid, s.subname, pg_catalog.pg_get_userbyid(s.subowner) AS owner, s.subenabled, s.subconninfo,
      s.subslotname, s.subsynccommit, pg_catalog.array_to_string(ARRAY(SELECT pg_catalog.quote_ident(x) FROM pg_catalog.unnest(s.subpublications) x), ', ') AS pubs,
      ]] .. table.concat(cols, ", ") .. [[,
      (SELECT d.description FROM pg_catalog.pg_shdescription d WHERE d.classoid = 'pg_catalog.pg_subscription'::pg_catalog.regclass
         AND d.objoid = s.oid) AS comment
    FROM pg_catalog.pg_subscription s WHERE ]] .. here .. " ORDER BY s.subname")) do
    local name = cat:q(r.subname)
    -- substream: boolean on 14-15, 'f'/'t'/'p' from 16
    local stream = tostring(r.substream)
    local w = { "connect = false", "slot_name = " .. (r.subslotname and cat:lit(r.subslotname) or "NONE") }
    if r.subbinary then w[#w + 1] = "binary = true" end
    if stream == "t" or stream == "true" then w[#w + 1] = "streaming = on" elseif stream == "p" then w[#w + 1] = "streaming = parallel" end
    if r.subtwophasestate ~= TWO_PHASE_OFF then w[#w + 1] = "two_phase = on" end
    if r.subdisableonerr then w[#w + 1] = "disable_on_error = true" end
    if not r.subpasswordrequired then w[#w + 1] = "password_required = false" end
    if r.subrunasowner then w[#w + 1] = "run_as_owner = true" end
    if r.subfailover then w[#w + 1] = "failover = true" end
    if r.subsynccommit ~= "off" then w[#w + 1] = "synchronous_commit = " .. cat:q(r.subsynccommit) end
    if r.suborigin and r.suborigin:lower() ~= "any" then w[#w + 1] = "origin = " .. r.suborigin end
    local defn = string.format("CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH (%s);\n", name, cat:lit(r.subconninfo), r.pubs,
      table.concat(w, ", "))
    if r.subenabled then
      defn = defn .. string.format("-- %s was enabled; it is restored disabled. Once the slot is not in use by the original: " ..
        "ALTER SUBSCRIPTION %s ENABLE; ALTER SUBSCRIPTION %s REFRESH PUBLICATION;\n", r.subname, name, name)
    end
    local o = cat:add { key = "pg_subscription:" .. r.oid, kind = "subscription", desc = "SUBSCRIPTION", section = "post-data",
      tag = r.subname, owner = r.owner, defn = defn, drop = "DROP SUBSCRIPTION " .. name .. ";\n",
      label = "SUBSCRIPTION " .. name, label_tag = "SUBSCRIPTION " .. r.subname }
    -- decorations from the shared catalogs (decor.lua reads pg_description and pg_seclabel)
    o.decor = {}
    if r.comment then
      o.decor[1] = { desc = "COMMENT", tag = "SUBSCRIPTION " .. r.subname, defn = string.format("COMMENT ON SUBSCRIPTION %s IS %s;\n", name, cat:lit(r.comment)) }
    end
    for _, l in ipairs(cat:query([[SELECT provider, label FROM pg_catalog.pg_shseclabel
        WHERE classoid = 'pg_catalog.pg_subscription'::pg_catalog.regclass AND objoid = $1 ORDER BY provider]], r.oid)) do
      o.decor[#o.decor + 1] = { desc = "SECURITY LABEL", tag = "SUBSCRIPTION " .. r.subname,
        defn = string.format("SECURITY LABEL FOR %s ON SUBSCRIPTION %s IS %s;\n", cat:q(l.provider), name, cat:lit(l.label)) }
    end
  end
end

function K.collect(cat)
  publications(cat)
  subscriptions(cat)
end

return K
