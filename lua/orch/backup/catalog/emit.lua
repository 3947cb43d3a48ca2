--- orch.backup.catalog.emit: the sorted objects as archive entries.
-- Dump ids are given in file order; each entry's dependencies are the ids
-- of the objects it waits for (what pg_restore -j schedules by); a TABLE
-- DATA entry depends on exactly its table. Comments, security labels and
-- privileges follow their object; privileges of objects orch does not
-- create (system objects, extension members) come last.
local E = {}

--- Build the TOC. order and targets come from graph.sort. Returns
-- { entries, tables, blobs, dbname, server_version, encoding, skipped }.
function E.toc(cat, order, targets)
  local entries, tables, blobs = {}, {}, {}
  local ids = {}
  local function emit(e)
    e.id = #entries + 1
    entries[#entries + 1] = e
    return e
  end
  local function owner_of(o) if not cat.opts.no_owner then return o.owner end end
  -- a backup's selection (orch.backup.select): -s, -a, --exclude-table-data, --no-comments
  local sel = cat.selection
  local select = sel and require "orch.backup.select"
  local info = cat:query([[SELECT pg_catalog.pg_encoding_to_char(encoding) AS enc, pg_catalog.current_database() AS db,
    pg_catalog.current_setting('server_version') AS version, pg_catalog.current_setting('standard_conforming_strings') AS scs
    FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()]])[1]
  emit { tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = string.format("SET client_encoding = '%s';\n", info.enc) }
  emit { tag = "STDSTRINGS", desc = "STDSTRINGS", section = "pre-data", defn = string.format("SET standard_conforming_strings = '%s';\n", info.scs) }
  emit { tag = "SEARCHPATH", desc = "SEARCHPATH", section = "pre-data", defn = "SELECT pg_catalog.set_config('search_path', '', false);\n" }
  -- the database itself, its comment, label, privileges and settings (restored by pg_restore -C)
  local dbid
  for _, e in ipairs(require("orch.backup.catalog.database").entries(cat)) do
    if not sel or select.keep_database_entry(sel, e) then
      if e.desc ~= "DATABASE" and e.desc ~= "DATABASE PROPERTIES" then e.deps = { dbid } end
      emit(e)
      if e.desc == "DATABASE" then dbid = e.id end
    end
  end

  -- inline parts' decorations are written after the object that carries them
  local parts = {}
  for _, o in ipairs(cat.list) do
    if o.inline and not o.skipped and not o.excluded then
      local p = o
      while p.inline do p = cat.objects[p.parent] end
      parts[p.key] = parts[p.key] or {}
      table.insert(parts[p.key], o)
    end
  end
  local function decorate(o, carrier, id)
    for _, d in ipairs(o.decor or {}) do
      if sel and not select.keep_decoration(sel, d.desc) then goto next end
      emit { tag = d.tag, desc = d.desc, section = "none", namespace = carrier.desc ~= "SCHEMA" and carrier.namespace or nil,
        owner = owner_of(carrier), defn = d.defn, deps = { id } }
      ::next::
    end
  end

  for _, o in ipairs(order) do
    if o.desc ~= "BOUNDARY" and not (sel and not select.keep_object(sel, o)) then
      local deps = {}
      if o.data then
        deps[1] = ids[o.data.table_key]
      else
        for t in pairs(targets[o.key] or {}) do if ids[t] then deps[#deps + 1] = ids[t] end end
        table.sort(deps)
      end
      local defn = o.render and o.render(o, cat) or o.defn
      local e = emit { tag = o.tag, desc = o.desc, section = o.section, namespace = o.namespace, tablespace = o.tablespace,
        tableam = o.tableam, relkind = o.relkind, owner = owner_of(o), defn = defn, drop = o.drop, deps = deps,
        had_dumper = (o.data or o.blobs) and true or nil, copy = o.data and o.data.copy_in or nil,
        catalog_oid = o.catalog_oid }
      ids[o.key] = e.id
      if o.data then
        local d = o.data
        tables[#tables + 1] = { id = e.id, key = d.table_key, tag = o.tag, ns = o.namespace, name = d.name, oid = d.oid,
          copy_out = d.copy_out, copy_in = d.copy_in, filter = d.filter }
      end
      if o.blobs then blobs[#blobs + 1] = { id = e.id, oids = o.blobs } end
      decorate(o, o, e.id)
      for _, p in ipairs(parts[o.key] or {}) do decorate(p, o, e.id) end
    end
  end
  -- decorations of objects orch does not create: part of a whole database only, as in pg_dump; each kept
  -- or left out on its own (a --no-comments COMMENT among them no longer ends the labels and ACLs after it)
  local whole = not sel or (sel.everything and not sel.sel.data_only)
  for _, a in ipairs(whole and cat.acl_only or {}) do
    if not sel or select.keep_decoration(sel, a.desc or "ACL") then
      emit { tag = a.tag, desc = a.desc or "ACL", section = "none", defn = a.defn, deps = {} }
    end
  end
  return { entries = entries, tables = tables, blobs = blobs, dbname = info.db, server_version = info.version,
           encoding = info.enc, skipped = cat.skipped }
end

return E
