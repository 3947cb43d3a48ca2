--- orch.backup.restore: restore orch's and pg_dump's custom archives.
--
--   restore.run { archive = "b.dump", db = url, mode = "swap" }
--
-- Modes: "empty" (default: the target must hold no user objects),
-- "drop-existing" (drop every schema of the target first), "swap" (restore
-- into a new database, then rename the target away and the new one into
-- place; the old one is kept). Any error is a failure, and the result says
-- what state the target is in.
local sys = require "orch.sys"
local log = require "orch.log"
local db = require "orch.db"
local pgarchive = require "orch.pgarchive"
local backup = require "orch.backup"
local dbprops = require "orch.backup.dbprops"
local json_null = require("orch.json").null

local R = {}

local SPECIAL = { ENCODING = true, STDSTRINGS = true, SEARCHPATH = true, DATABASE = true, ["DATABASE PROPERTIES"] = true }
local OWNABLE = { SCHEMA = "SCHEMA", TABLE = "TABLE", VIEW = "VIEW", SEQUENCE = "SEQUENCE", ["MATERIALIZED VIEW"] = "MATERIALIZED VIEW",
  FUNCTION = "FUNCTION", PROCEDURE = "PROCEDURE", TYPE = "TYPE", DOMAIN = "DOMAIN", AGGREGATE = "AGGREGATE",
  COLLATION = "COLLATION", CONVERSION = "CONVERSION", OPERATOR = "OPERATOR", ["OPERATOR CLASS"] = "OPERATOR CLASS",
  ["OPERATOR FAMILY"] = "OPERATOR FAMILY", ["PROCEDURAL LANGUAGE"] = "PROCEDURAL LANGUAGE",
  ["TEXT SEARCH DICTIONARY"] = "TEXT SEARCH DICTIONARY", ["TEXT SEARCH CONFIGURATION"] = "TEXT SEARCH CONFIGURATION",
  ["FOREIGN DATA WRAPPER"] = "FOREIGN DATA WRAPPER", SERVER = "SERVER", ["FOREIGN TABLE"] = "FOREIGN TABLE",
  PUBLICATION = "PUBLICATION", SUBSCRIPTION = "SUBSCRIPTION", ["EVENT TRIGGER"] = "EVENT TRIGGER",
  STATISTICS = "STATISTICS" }

local function pass_of(e)
  if e.desc == "ACL" or e.desc == "DEFAULT ACL" then return 2 end
  -- an event trigger's comment and security label go in its pass, as pg_restore does
  if e.desc == "MATERIALIZED VIEW DATA" or e.desc == "EVENT TRIGGER"
     or ((e.desc == "COMMENT" or e.desc == "SECURITY LABEL") and (e.tag or ""):match("^EVENT TRIGGER ")) then return 3 end
  return 1
end

--- The archive's entries as pg_restore -l would list them.
function R.list(path)
  if require("orch.storage").is_remote(path) then
    local storage = require "orch.storage"
    local f = storage.fetch(path)
    local ok, res = pcall(R.list, f.path)
    storage.release(f)
    if not ok then error(res, 0) end
    return res
  end
  local a <close> = pgarchive.open(path)
  local h = a:header()
  local out = { string.format(";\n; Archive created by %s\n; dbname: %s\n; TOC entries: %d\n; Format: CUSTOM %s\n; Compression: %s\n;\n",
    h.dumper_version or "?", h.dbname or "?", #h.entries, h.version, h.compression) }
  for _, e in ipairs(a:entries()) do
    out[#out + 1] = string.format("%d; %s %s %s %s %s %s", e.id, e.tableoid or "0", e.oid or "0", e.desc,
      e.namespace or "-", e.tag, e.owner or "-")
  end
  return table.concat(out, "\n")
end

-- Which entries to restore, given schema/table filters.
local function selected(entries, opts)
  local schemas, tables = {}, {}
  for _, s in ipairs(opts.schemas or {}) do schemas[s] = true end
  for _, t in ipairs(opts.tables or {}) do tables[t] = true end
  local use_s, use_t = next(schemas) ~= nil, next(tables) ~= nil
  if not use_s and not use_t then return function() return true end end
  local table_ids, by_id = {}, {}
  for _, e in ipairs(entries) do
    by_id[e.id] = e
    if e.desc == "TABLE" and tables[e.tag] and (not use_s or schemas[e.namespace]) then table_ids[e.id] = true end
  end
  -- what hangs on the chosen tables (data, indexes, constraints, triggers, their comments and privileges):
  -- an entry that needs something chosen and nothing left out — another table, or what hangs on one (the
  -- ATTACH of a partition's index, a foreign key to a table not restored) — until nothing more is taken
  local taken = {}
  for id in pairs(table_ids) do taken[id] = true end
  local function hangs(e)
    return e.desc == "TABLE DATA" or e.desc == "TABLE ATTACH" or e.section == "post-data" or e.desc == "COMMENT" or e.desc == "ACL"
  end
  local function left_out(d)
    local de = by_id[d]
    return de ~= nil and not taken[d] and (de.desc == "TABLE" or hangs(de))
  end
  local grew = use_t
  while grew do
    grew = false
    for _, e in ipairs(entries) do
      if not taken[e.id] and hangs(e) then
        local needs, blocked = false, false
        for _, d in ipairs(e.deps or {}) do
          if taken[d] then needs = true elseif left_out(d) then blocked = true end
        end
        if needs and not blocked then taken[e.id] = true grew = true end
      end
    end
  end
  return function(e)
    if SPECIAL[e.desc] then return true end
    if use_t then return taken[e.id] == true end
    if e.desc == "SCHEMA" then return schemas[e.tag] == true end
    return e.namespace ~= nil and schemas[e.namespace] == true
  end
end

-- Large objects as pg_dump writes them: BLOB entries (archives <= 1.15,
-- one per object, defn lo_create), BLOB METADATA (1.16: defn lists the
-- oids), BLOBS data blocks (the contents), COMMENT/ACL on LARGE OBJECT
-- (1.16 groups: one ACL entry tagged "LARGE OBJECTS a..b" written for the
-- first oid of the BLOB METADATA entry it depends on, applied to each).
local LO_DESC = { BLOB = true, ["BLOB METADATA"] = true }

local function lo_oids(e)
  if e.desc == "BLOB" then return { e.tag } end
  local oids = {}
  for line in (e.defn or ""):gmatch("[^\n]+") do
    if not line:match("^%d+$") then error(string.format("entry %d (BLOB METADATA %s) lists %q, not a large object oid", e.id, e.tag, line), 0) end
    oids[#oids + 1] = line
  end
  return oids
end

-- Create the large objects of a BLOB / BLOB METADATA entry, owned as the archive says.
local function create_los(conn, e, opts)
  for _, oid in ipairs(lo_oids(e)) do
    -- one round trip (and one implicit transaction) per object: archives hold thousands of them
    local sql = string.format("SELECT pg_catalog.lo_create('%s')", oid)
    if not opts.no_owner and e.owner then
      sql = sql .. string.format("; ALTER LARGE OBJECT %s OWNER TO %s", oid, conn:quote_ident(e.owner))
    end
    conn:exec(sql)
  end
end

-- An ACL entry of a 1.16 group of large objects: its commands name the
-- first oid; run them once per oid of the BLOB METADATA entry.
local function lo_group_acl(conn, e, by_id)
  local md = by_id[(e.deps or {})[1]]
  if not md or md.desc ~= "BLOB METADATA" then
    error(string.format("entry %d (ACL %s) does not depend on a BLOB METADATA entry", e.id, e.tag), 0)
  end
  for _, oid in ipairs(lo_oids(md)) do
    conn:exec((e.defn:gsub("LARGE OBJECT %d+", "LARGE OBJECT " .. oid)))
  end
end

-- Write the contents of a BLOBS block, in a transaction of its own unless
-- the caller's is open (lo_open works only inside one).
local function restore_blobs(conn, a, e, create)
  local own = not conn:info().in_transaction
  if own then conn:exec("BEGIN") end
  local ok, err = pcall(a.restore_blobs, a, conn, e.id, { create = create })
  if not ok then
    if own then pcall(conn.exec, conn, "ROLLBACK") end
    error(err, 0)
  end
  if own then conn:exec("COMMIT") end
end

-- The SQL of a schema entry: its defn, then (as pg_restore does) ALTER ...
-- OWNER TO its owner. nil when the entry has nothing to run.
local function entry_sql(conn, e, opts)
  if not e.defn or e.defn == "" or e.defn:match("^%-%- load via partition root") then return nil end
  local parts = { e.defn }
  if not opts.no_owner and e.owner and OWNABLE[e.desc] and e.drop and e.drop ~= "" then
    local obj = e.drop:match("^DROP%s+(.-);?%s*$")
    -- a schema is named by its tag, as pg_restore does: pg_dump's public schema entry
    -- drops nothing ("-- *not* dropping schema") but still carries its owner
    if e.desc == "SCHEMA" then obj = "SCHEMA " .. conn:quote_ident(e.tag) end
    if obj then
      local kind = OWNABLE[e.desc]
      local name = obj:sub(#kind + 2):gsub("%s+CASCADE$", "")
      if kind == "VIEW" or kind == "SEQUENCE" or kind == "MATERIALIZED VIEW" then kind = "TABLE" end
      parts[#parts + 1] = string.format("ALTER %s %s OWNER TO %s;", kind, name, conn:quote_ident(e.owner))
    end
  end
  return table.concat(parts, "\n")
end

-- How pg_dump writes a name in a COPY statement (quoted only when it must be).
local function fmt_id(s)
  if s:match("^[a-z_][a-z0-9_]*$") then return s end
  return '"' .. s:gsub('"', '""') .. '"'
end

local function where_of(e)
  return string.format("entry %d (%s %s%s)", e.id, e.desc, e.namespace and (e.namespace .. ".") or "", e.tag)
end

-- What a restore of this archive does, shared by the serial and the parallel path.
local function prepare(conn, a, opts)
  local entries = a:entries()
  local by_id, has_lo_entries = {}, false
  for _, e in ipairs(entries) do
    by_id[e.id] = e
    if LO_DESC[e.desc] then has_lo_entries = true end
  end
  -- -n/-t here, pg_restore's other selection options (-a, -s, -x, -N, -I, -P, -T, --section, -L) in restore_select
  local rsel = require "orch.backup.restore_select"
  local want = opts.want or rsel.wrap(entries, opts, selected(entries, opts), function(e) return SPECIAL[e.desc] or dbprops.is_database_entry(e) end)
  local settings = {}
  for _, e in ipairs(entries) do
    if (e.desc == "ENCODING" or e.desc == "STDSTRINGS" or e.desc == "SEARCHPATH") and e.defn then
      settings[#settings + 1] = e.defn:gsub(";%s*$", "")
    end
  end
  for _, st in ipairs(rsel.settings(opts)) do settings[#settings + 1] = st end
  -- the database's own entries (comment, privileges, settings) are not the target's: see dbprops
  local function restorable(e) return not SPECIAL[e.desc] and not dbprops.is_database_entry(e) and want(e) end
  local ctx = { entries = entries, by_id = by_id, has_lo_entries = has_lo_entries, settings = settings, restorable = restorable,
    binary = {}, text_again = {}, report_text = {}, binary_tables = 0 }
  for _, e in ipairs(entries) do
    if e.desc == "ENCODING" and e.defn then ctx.encoding = e.defn:match("client_encoding%s*=%s*'([^']*)'") end
  end
  -- each data block's length (to the next block; the last one to the end of the file), for
  -- largest-first scheduling and the progress estimate; unknown without offsets
  local blocks = {}
  for _, e in ipairs(entries) do if e.had_dumper and e.pos then blocks[#blocks + 1] = e end end
  table.sort(blocks, function(x, y) return x.pos < y.pos end)
  local size = opts.archive_size
  ctx.length = {}
  for i, e in ipairs(blocks) do
    local nxt = blocks[i + 1] and blocks[i + 1].pos or size
    ctx.length[e.id] = nxt and math.max(nxt - e.pos, 0) or 0
  end
  local ndata = 0
  for _, e in ipairs(entries) do if e.had_dumper and restorable(e) then ndata = ndata + 1 end end
  for _, e in ipairs(entries) do
    if e.had_dumper and not ctx.length[e.id] then ctx.length[e.id] = size and math.floor(size / math.max(ndata, 1)) or 1 end
  end
  -- the tables this restore creates, and the TABLE DATA of each
  ctx.data_of, ctx.attached = {}, {}
  for _, e in ipairs(entries) do
    if e.desc == "TABLE DATA" and restorable(e) and e.deps and e.deps[1] then ctx.data_of[e.deps[1]] = e end
    if e.desc == "TABLE ATTACH" then for _, d in ipairs(e.deps or {}) do ctx.attached[d] = true end end
  end
  return ctx
end

-- May the data of TABLE DATA e be loaded with COPY ... FREEZE into a table
-- this restore creates? The table must be a plain heap table whose TABLE
-- entry this run restores, and the COPY must name that table itself (not a
-- partitioned root it is loaded through). FREEZE is legal only in the
-- (sub)transaction that created or truncated the table: the caller makes it so.
local function freezable(conn, ctx, e)
  local t = e.copy and e.deps and ctx.by_id[e.deps[1]]
  if not t or t.desc ~= "TABLE" or not ctx.restorable(t) or not t.namespace then return false end
  if t.tableam and t.tableam ~= "" and t.tableam ~= "heap" then return false end
  local copy = e.copy
  for _, name in ipairs { fmt_id(t.namespace) .. "." .. fmt_id(t.tag), conn:quote_ident(t.namespace) .. "." .. conn:quote_ident(t.tag) } do
    if copy:sub(1, #name + 6) == "COPY " .. name .. " " then return t, name end
  end
  return false
end

local function with_freeze(copy)
  return (copy:gsub("%s*;%s*$", "")) .. " WITH (FREEZE);"
end

-- ================================================================ rows in COPY's binary format
-- A table's rows go to the server in COPY's binary format when every column
-- the COPY names has a type (or a domain over one) whose receive function
-- is one of these: the client converts each value from the text pg_dump
-- wrote (src/copybin.c), and the server no longer splits lines, undoes
-- escapes or runs the types' input functions (timestamptz_in, uuid_in,
-- int8in, numeric_in, ...), about 40% of its work in a COPY. A row the
-- converter does not read exactly as the server writes it (another
-- DateStyle, an escape COPY TO never writes) stops it before anything is
-- committed, and the table is loaded again in the text format.
local BINARY_RECV = {
  boolrecv = "b", int2recv = "2", int4recv = "4", int8recv = "8", float4recv = "f", float8recv = "F",
  numeric_recv = "n", textrecv = "t", varcharrecv = "t", bpcharrecv = "t", namerecv = "t", json_recv = "t",
  enum_recv = "t", jsonb_recv = "j", uuid_recv = "u", bytearecv = "y", date_recv = "d",
  timestamp_recv = "s", timestamptz_recv = "z",
}
-- client encodings in which a multibyte character may hold a backslash or a newline byte: their
-- text rows cannot be cut byte by byte, so they stay text
local EMBEDS_ASCII = { SJIS = true, SHIFT_JIS_2004 = true, BIG5 = true, GBK = true, GB18030 = true, UHC = true, JOHAB = true }
-- --copy-format auto converts tables from this many archive bytes of data on (below it the
-- catalog query costs more than the conversion saves)
local BINARY_MIN = 1048576

-- "COPY name (a, b) FROM stdin;" -> "name (a, b)", the table's name (quoted,
-- schema-qualified when the COPY is) and the column names, or nil when the
-- statement is not that (no column list, other options). Read by
-- PostgreSQL's own grammar (orch.pgquery).
local function copy_columns(copy)
  local body = copy:match("^%s*COPY%s+(.-)%s+FROM%s+stdin;%s*$")
  local tree = body and require("orch.pgquery").parse(copy)
  local st = tree and #tree.stmts == 1 and tree.stmts[1].stmt.CopyStmt
  if not (st and st.is_from and st.relation and st.attlist and not st.options and not st.filename and not st.query) then return nil end
  local function quoted(id) return '"' .. id:gsub('"', '""') .. '"' end
  local name = (st.relation.schemaname and (quoted(st.relation.schemaname) .. ".") or "") .. quoted(st.relation.relname)
  local cols = {}
  for _, c in ipairs(st.attlist) do cols[#cols + 1] = c.String.sval end
  return body, name, cols
end

-- The kinds of TABLE DATA e's columns (one character each, see copybin.h)
-- and its COPY in the binary format (with FREEZE when freeze), or nil when
-- its rows stay text. The table must exist on conn. Kept in ctx.binary;
-- cached_only: conn is busy, a table not looked up yet stays text.
local function binary_copy(conn, ctx, e, opts, freeze, cached_only)
  local format = opts.copy_format or "auto"
  if format == "text" or not e.copy or ctx.text_again[e.id] then return nil end
  if format == "auto" and (ctx.length[e.id] or 0) < BINARY_MIN then return nil end
  if ctx.encoding and EMBEDS_ASCII[ctx.encoding:upper():gsub("[^%w]", "_")] then return nil end
  local plan = ctx.binary[e.id]
  if plan == nil and cached_only then return nil end
  if plan == nil then
    plan = false
    local body, name, cols = copy_columns(e.copy)
    if body then
      local ok, rows = pcall(conn.query, conn, [[
        WITH RECURSIVE b(attname, typ) AS (
          SELECT attname, atttypid FROM pg_catalog.pg_attribute
           WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0 AND NOT attisdropped
          UNION ALL
          SELECT b.attname, t.typbasetype FROM b JOIN pg_catalog.pg_type t ON t.oid = b.typ WHERE t.typtype = 'd')
        SELECT b.attname, p.proname, n.nspname
          FROM b JOIN pg_catalog.pg_type t ON t.oid = b.typ AND t.typtype <> 'd'
          JOIN pg_catalog.pg_proc p ON p.oid = t.typreceive
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace]], name)
      if ok then
        local kind = {}
        for _, r in ipairs(rows) do
          if r.nspname == "pg_catalog" then kind[r.attname] = BINARY_RECV[r.proname] end
        end
        local ks = {}
        for _, c in ipairs(cols) do
          if not kind[c] then ks = nil break end
          ks[#ks + 1] = kind[c]
        end
        if ks then plan = { kinds = table.concat(ks), body = body } end
      end
    end
    ctx.binary[e.id] = plan
  end
  if not plan then return nil end
  return plan.kinds, "COPY " .. plan.body .. " FROM stdin WITH (FORMAT binary" .. (freeze and ", FREEZE" or "") .. ");"
end

-- Did the converter stop on a row of err's table (the load is to be run again as text)?
local function unconvertible(err) return type(err) == "table" and err.unconvertible == true end

-- Table data e goes again as text: the reason is kept for the restore's report.
local function text_again(ctx, e, err)
  ctx.text_again[e.id] = true
  ctx.report_text[#ctx.report_text + 1] = string.format("%s.%s (%s)", e.namespace or "", e.tag or "", err.message)
end

-- Index builds sort in maintenance_work_mem: a restore session gets at
-- least INDEX_MEM of it (sorts of a few million keys stay in memory),
-- never more than INDEX_MEM_TOTAL over all its connections, and never less
-- than the server gives it already.
local INDEX_MEM, INDEX_MEM_TOTAL = 256 * 1024, 1024 * 1024   -- kB

-- The session of a restore connection: pinned settings, then the archive's
-- own; commits do not wait for the WAL flush (durable() ends the restore
-- with one that does, so a restore reported done is on disk); index builds
-- get their memory (above). jobs: the restore's connections.
local function session_of(conn, ctx, jobs)
  require("orch.backup.session").restore(conn)
  for _, st in ipairs(ctx.settings) do conn:exec(st) end
  conn:query("SELECT pg_catalog.set_config('synchronous_commit', 'off', false)")
  local want = math.min(INDEX_MEM, INDEX_MEM_TOTAL // math.max(jobs or 1, 1))
  local have = conn:value("SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'maintenance_work_mem'")
  if have and have < want then conn:query("SELECT pg_catalog.set_config('maintenance_work_mem', $1, false)", want .. "kB") end
end

-- What the restore wrote is flushed to the server's WAL before it is
-- reported done: one commit with synchronous_commit on (a transaction id is
-- assigned, so it has a commit record to wait for) waits for all WAL before it.
-- Inside the caller's transaction (--single-transaction) its own COMMIT is
-- the one: synchronous_commit is set on for it.
local function durable(conn)
  if conn:info().in_transaction then
    conn:query("SELECT pg_catalog.set_config('synchronous_commit', 'on', true)")
    return
  end
  conn:query("SELECT pg_catalog.set_config('synchronous_commit', 'on', false)")
  conn:query("SELECT pg_catalog.txid_current()")
  conn:exec("RESET synchronous_commit; RESET maintenance_work_mem")
end

local function check_owners(conn, ctx, opts)
  if opts.no_owner then return end
  local missing, seen = {}, {}
  for _, e in ipairs(ctx.entries) do
    if e.owner and (OWNABLE[e.desc] or LO_DESC[e.desc]) and not seen[e.owner] then
      seen[e.owner] = true
      if not conn:value("SELECT 1 FROM pg_roles WHERE rolname = $1", e.owner) then missing[#missing + 1] = e.owner end
    end
  end
  if #missing > 0 then
    sys.error("the archive's objects belong to roles that do not exist on the target server: " .. table.concat(missing, ", ") ..
      "\ncreate them first, or restore with --no-owner (objects then belong to the restoring user); nothing was restored", 1)
  end
end

-- Progress: a share of the work (data bytes, with index and constraint
-- builds weighed by their table's data) reported through opts.on_progress.
local function meter(ctx, opts, items)
  if not opts.on_progress then return nil end
  local weight, total = {}, 0
  for _, e in ipairs(items) do
    local w = 1
    if e.had_dumper then w = ctx.length[e.id] or 1
    elseif e.section == "post-data" then
      for _, d in ipairs(e.deps or {}) do
        local data = ctx.data_of[d]
        if data then w = w + math.floor((ctx.length[data.id] or 0) * 0.3) end
      end
    end
    weight[e.id] = w
    total = total + w
  end
  local m = { done = 0, count = 0, bytes = 0, n = #items, partial = {} }
  function m.finish(e)
    m.done = m.done + (weight[e.id] or 0)
    m.count = m.count + 1
    if e.had_dumper then m.bytes = m.bytes + (ctx.length[e.id] or 0) end
    m.partial[e.id] = nil
  end
  function m.report(what, partial)
    local part, pb = 0, 0
    for id, b in pairs(partial or m.partial) do
      local len = ctx.length[id] or 0
      part = part + math.min(b, len)
      pb = pb + b
    end
    opts.on_progress { done = m.count, total = m.n, bytes = m.bytes + pb, fraction = total > 0 and (m.done + part) / total or 1, what = what }
  end
  return m
end

-- Run entry e on conn (the serial path); raises with where on failure.
local function run_entry(conn, a, e, ctx, opts, state, m)
  if e.tablespace and e.tablespace ~= state.tablespace and not opts.no_tablespaces then
    -- "" = the database's default; otherwise the entry's own tablespace, as pg_restore sets it
    conn:exec("SET default_tablespace = " .. (e.tablespace == "" and "''" or conn:quote_ident(e.tablespace)))
    state.tablespace = e.tablespace
  end
  if LO_DESC[e.desc] then
    create_los(conn, e, opts)
  elseif e.desc == "BLOBS" then
    restore_blobs(conn, a, e, not ctx.has_lo_entries)
  elseif e.desc == "ACL" and (e.tag or ""):match("^LARGE OBJECTS ") and e.defn and e.defn ~= "" then
    lo_group_acl(conn, e, ctx.by_id)
  elseif e.desc == "TABLE DATA" then
    if e.copy then
      local copy = e.copy
      local progress = m and function(n) m.partial[e.id] = n; m.report(e.namespace and (e.namespace .. "." .. e.tag) or e.tag) end
      local own, t = false, nil
      local outer = conn:info().in_transaction
      if freezable(conn, ctx, e) then
        if state.single_transaction then
          copy = with_freeze(copy)   -- every table was created in this very transaction
        elseif not outer then
          -- created in an earlier transaction of this run: truncated in this one, FREEZE is legal
          t = ctx.by_id[e.deps[1]]
          own = true
          copy = with_freeze(copy)
        end
      end
      -- binary rows only where a refused row aborts nothing but this table's own load
      local kinds, bcopy
      if not outer then kinds, bcopy = binary_copy(conn, ctx, e, opts, own) end
      local function load(sql, k)
        if own then
          conn:exec("BEGIN")
          conn:exec("TRUNCATE TABLE ONLY " .. conn:quote_ident(t.namespace) .. "." .. conn:quote_ident(t.tag))
        end
        local ok, err = pcall(a.copy_into, a, conn, e.id, sql, progress, k)
        if not ok then
          if own then pcall(conn.exec, conn, "ROLLBACK") end
          return false, err
        end
        if own then conn:exec("COMMIT") end
        return true
      end
      local ok, err
      if kinds then
        ok, err = load(bcopy, kinds)
        if ok then ctx.binary_tables = ctx.binary_tables + 1
        elseif unconvertible(err) then text_again(ctx, e, err); ok, err = load(copy) end
      else ok, err = load(copy) end
      if not ok then error(err, 0) end
    else
      -- data as SQL statements (pg_dump --inserts)
      local parts = {}
      a:read_block(e.id, function(chunk) parts[#parts + 1] = chunk end)
      conn:exec(table.concat(parts))
    end
  else
    local sql = entry_sql(conn, e, opts)
    -- a table or materialized view stored with another table access method, as pg_restore sets it
    if sql and e.tableam and e.tableam ~= "" and e.tableam ~= state.tableam then
      conn:exec("SET default_table_access_method = " .. conn:quote_ident(e.tableam))
      state.tableam = e.tableam
    end
    if sql then
      -- a table whose data can follow at once: created and loaded in one transaction, with
      -- COPY ... FREEZE (rows written frozen: the first reads and VACUUM have nothing to do)
      local data = state.move_data and e.desc == "TABLE" and ctx.data_of[e.id]
      if data and not state.single_transaction and not ctx.attached[e.id] and freezable(conn, ctx, data)
          and not conn:info().in_transaction and not (data.deps[2]) then
        local binary = false
        local function create_and_load(try_binary)
          conn:exec("BEGIN;\n" .. sql)   -- one round trip
          local progress = m and function(n) m.partial[data.id] = n; m.report(data.namespace .. "." .. data.tag) end
          local kinds, bcopy
          if try_binary then kinds, bcopy = binary_copy(conn, ctx, data, opts, true) end
          a:copy_into(conn, data.id, bcopy or with_freeze(data.copy), progress, kinds)
          conn:exec("COMMIT")
          binary = kinds ~= nil
        end
        local ok, err = pcall(create_and_load, true)
        if not ok and unconvertible(err) then
          pcall(conn.exec, conn, "ROLLBACK")
          text_again(ctx, data, err)
          ok, err = pcall(create_and_load, false)
        end
        if ok and binary then ctx.binary_tables = ctx.binary_tables + 1 end
        if not ok then
          pcall(conn.exec, conn, "ROLLBACK")
          if type(err) == "table" then err.where = "restoring " .. where_of(data) .. " (with its table) of the archive" end
          error(err, 0)
        end
        state.loaded[data.id] = true
        if m then m.finish(data) end
      else
        conn:exec(sql)
      end
    end
  end
end

local function raise_at(e, err, done)
  if type(err) == "table" then
    err.where = err.where or ("restoring " .. where_of(e) .. " of the archive")
    err.restored = done
  else err = string.format("restoring %s failed: %s", where_of(e), tostring(err)) end
  error(err, 0)
end

-- The statements of entry e when it is plain DDL that run_entry would send
-- as they are (with the tablespace / access method it needs set first, as
-- run_entry sets them; state is updated), else nil: run_entry handles it.
local function plain_sql(conn, e, ctx, opts, state)
  if LO_DESC[e.desc] or e.desc == "BLOBS" or e.desc == "TABLE DATA" or (e.desc == "ACL" and (e.tag or ""):match("^LARGE OBJECTS ")) then return nil end
  -- a table whose rows follow at once (created and loaded in one transaction)
  if state.move_data and e.desc == "TABLE" and ctx.data_of[e.id] then return nil end
  local sql = entry_sql(conn, e, opts)
  if not sql then return "" end
  local pre = {}
  if e.tablespace and e.tablespace ~= state.tablespace and not opts.no_tablespaces then
    pre[#pre + 1] = "SET default_tablespace = " .. (e.tablespace == "" and "''" or conn:quote_ident(e.tablespace)) .. ";"
    state.tablespace = e.tablespace
  end
  if e.tableam and e.tableam ~= "" and e.tableam ~= state.tableam then
    pre[#pre + 1] = "SET default_table_access_method = " .. conn:quote_ident(e.tableam) .. ";"
    state.tableam = e.tableam
  end
  pre[#pre + 1] = sql
  return table.concat(pre, "\n")
end

-- Plain DDL entries in a row go to the server together, up to BATCH_ENTRIES
-- or BATCH_BYTES at a time, one round trip for each batch: a Query of
-- several statements runs as one implicit transaction, so a batch that fails
-- left nothing behind and its entries are run again one by one, which names
-- the entry that fails. Not inside a transaction of the caller (a failed
-- statement there ends the transaction: nothing could be run again).
local BATCH_ENTRIES, BATCH_BYTES = 200, 1048576

local function new_batch(conn, a, ctx, opts, state, m, count)
  local b = { es = {}, sqls = {}, bytes = 0 }
  local ts, am
  -- One entry on its own: run, counted, reported; an error names the entry.
  function b.run(e)
    local ok, err = pcall(run_entry, conn, a, e, ctx, opts, state, m)
    if not ok then raise_at(e, err, count.done) end
    count.done = count.done + 1
    if m then m.finish(e); m.report(where_of(e)) end
  end
  function b.flush()
    local es, sqls = b.es, b.sqls
    if #es == 0 then return end
    b.es, b.sqls, b.bytes = {}, {}, 0
    local ok = #es > 1 and pcall(conn.exec, conn, table.concat(sqls, "\n"))
    if not ok then
      -- the batch rolled back whole (its SETs too): one entry at a time, as run_entry does
      state.tablespace, state.tableam = ts, am
      for _, e in ipairs(es) do b.run(e) end
      return
    end
    for _, e in ipairs(es) do
      count.done = count.done + 1
      if m then m.finish(e) end
    end
    if m then m.report(where_of(es[#es])) end
  end
  -- Take entry e into the batch when it is plain DDL; false: run it yourself (after b.flush()).
  function b.add(e)
    if state.single_transaction or conn:info().in_transaction then return false end
    local t0, a0 = state.tablespace, state.tableam
    local sql = plain_sql(conn, e, ctx, opts, state)
    if not sql then return false end
    if #b.es == 0 then ts, am = t0, a0 end
    b.es[#b.es + 1] = e
    if sql ~= "" then
      -- each entry's text ends its last statement: a defn without its ";" would run into the next
      b.sqls[#b.sqls + 1] = sql:match(";%s*$") and sql or (sql .. "\n;")
      b.bytes = b.bytes + #sql
    end
    if #b.es >= BATCH_ENTRIES or b.bytes >= BATCH_BYTES then b.flush() end
    return true
  end
  return b
end


-- What both ways of applying start with: the chosen entries (ctx), the
-- session as pg_restore sets it up, the owners checked, the entries to
-- restore (items) and the progress meter (m, or nil).
local function begin(conn, a, opts)
  local ctx = prepare(conn, a, opts)
  session_of(conn, ctx, opts.jobs)
  check_owners(conn, ctx, opts)
  local items = {}
  for _, e in ipairs(ctx.entries) do if ctx.restorable(e) then items[#items + 1] = e end end
  return ctx, items, meter(ctx, opts, items)
end

-- Run every chosen entry of the archive against conn, in pg_restore's
-- three passes. Returns counts; raises on the first error with the entry.
local function apply(conn, a, opts)
  local ctx, _, m = begin(conn, a, opts)
  local state = { loaded = {}, single_transaction = opts.single_transaction, move_data = opts.archive ~= "-" }
  local count = { done = 0 }
  local batch = new_batch(conn, a, ctx, opts, state, m, count)
  for pass = 1, 3 do
    for _, e in ipairs(ctx.entries) do
      if ctx.restorable(e) and pass_of(e) == pass and not state.loaded[e.id] and not batch.add(e) then
        batch.flush()
        batch.run(e)
      end
    end
    batch.flush()
  end
  durable(conn)
  local loaded = 0
  for _ in pairs(state.loaded) do loaded = loaded + 1 end
  return { entries = count.done + loaded, binary_tables = ctx.binary_tables, text_again = ctx.report_text }
end

-- A TABLE DATA block is split over connections only from this size of
-- archive bytes on (smaller ones load faster with FREEZE in one piece).
local SPLIT_MIN = 8 * 1048576

-- Can this COPY's data be cut at row ends? pg_dump's "COPY t (cols) FROM
-- stdin;" reads the text format, where a raw newline always ends a row
-- (options after stdin would name another format).
local function splittable(copy)
  return copy ~= nil and copy:match("^%s*COPY%s.-%sFROM%s+stdin;%s*$") ~= nil
end

-- The parallel path (jobs > 1, a file): pre-data in TOC order on conn,
-- then data, indexes, constraints and triggers on jobs connections as their
-- dependencies allow (largest first), then the second and third passes
-- (privileges, event triggers, materialized view data) on conn, as pg_restore
-- -j does. Every TABLE DATA of a table this run created is loaded with
-- TRUNCATE + COPY ... FREEZE in one transaction. The first failure cancels
-- what runs, waits for it, and is raised with its entry.
local function apply_parallel(conn, a, opts, jobs)
  local ctx, items, m = begin(conn, a, opts)
  local res_split = {}
  local done, state = 0, { loaded = {} }
  -- pre-data (and what has no section before the first data entry), in order, on the leader
  local first_rest
  for i, e in ipairs(ctx.entries) do
    if e.section == "data" or e.section == "post-data" then first_rest = i break end
  end
  first_rest = first_rest or #ctx.entries + 1
  local count = { done = 0 }
  local batch = new_batch(conn, a, ctx, opts, state, m, count)
  for i = 1, first_rest - 1 do
    local e = ctx.entries[i]
    if ctx.restorable(e) and pass_of(e) == 1 and not batch.add(e) then
      batch.flush()
      local ok, err = pcall(run_entry, conn, a, e, ctx, opts, state, m)
      if not ok then raise_at(e, err, count.done) end
      count.done = count.done + 1
      if m then m.finish(e); m.report(where_of(e)) end
    end
  end
  batch.flush()
  done = count.done
  -- the rest of the first pass, scheduled by dependencies
  local pending, pos = {}, {}
  for i = first_rest, #ctx.entries do
    local e = ctx.entries[i]
    if ctx.restorable(e) and pass_of(e) == 1 then pending[#pending + 1] = e; pos[e.id] = #pending end
  end
  local in_set = {}
  for _, e in ipairs(pending) do in_set[e.id] = true end
  local deps, locks, weight = {}, {}, {}
  local function is_table(d) local t = ctx.by_id[d] return t and (t.desc == "TABLE" or t.desc == "MATERIALIZED VIEW" or t.desc == "FOREIGN TABLE") end
  for _, e in ipairs(pending) do
    local list, lk = {}, {}
    for _, d in ipairs(e.deps or {}) do
      if e.section == "post-data" and is_table(d) then
        -- what needs a table needs its rows: the dependency moves to its TABLE DATA
        if e.desc ~= "INDEX" then lk[d] = true end
        local data = ctx.data_of[d]
        if data and in_set[data.id] then list[#list + 1] = data.id end
      elseif in_set[d] then list[#list + 1] = d end
    end
    if e.desc == "TABLE DATA" and e.deps and e.deps[1] then lk[e.deps[1]] = true end
    deps[e.id], locks[e.id] = list, lk
    local w = ctx.length[e.id] or 0
    if not e.had_dumper then
      for _, d in ipairs(e.deps or {}) do local data = ctx.data_of[d]; if data then w = math.max(w, ctx.length[data.id] or 0) end end
    end
    weight[e.id] = w
  end
  -- a foreign key waits for every index and constraint of the tables it names
  local built_on = {}   -- table id -> the INDEX and CONSTRAINT entries on it
  for _, o in ipairs(pending) do
    if o.desc == "CONSTRAINT" or o.desc == "INDEX" then
      local seen = {}
      for _, d in ipairs(o.deps or {}) do
        if is_table(d) and not seen[d] then
          seen[d] = true
          built_on[d] = built_on[d] or {}
          table.insert(built_on[d], o)
        end
      end
    end
  end
  for _, e in ipairs(pending) do
    if e.desc == "FK CONSTRAINT" then
      local taken = {}
      for _, d in ipairs(e.deps or {}) do
        for _, o in ipairs(is_table(d) and built_on[d] or {}) do
          if o ~= e and not taken[o.id] then taken[o.id] = true; table.insert(deps[e.id], o.id) end
        end
      end
    end
  end
  -- what each entry waits for (nwait) and who waits for it: entries become ready as their
  -- dependencies finish, into a list kept largest first (then in TOC order)
  local nwait, dependents = {}, {}
  for _, e in ipairs(pending) do
    nwait[e.id] = #deps[e.id]
    for _, d in ipairs(deps[e.id]) do
      dependents[d] = dependents[d] or {}
      table.insert(dependents[d], e.id)
    end
  end
  local readyl = {}
  local function first(x, y)
    if weight[x.id] ~= weight[y.id] then return weight[x.id] > weight[y.id] end
    return pos[x.id] < pos[y.id]
  end
  local function make_ready(e)
    local lo, hi = 1, #readyl + 1
    while lo < hi do
      local mid = (lo + hi) // 2
      if first(readyl[mid], e) then lo = mid + 1 else hi = mid end
    end
    table.insert(readyl, lo, e)
  end
  for _, e in ipairs(pending) do if nwait[e.id] == 0 then make_ready(e) end end
  -- a TABLE DATA block larger than one connection's share of the data still to load is cut at row
  -- ends over the free connections (see pool:split): loaded without FREEZE (several sessions cannot
  -- share the transaction that FREEZE needs), every part committed only when all parts ended well
  local split_min = opts.split_min == nil and SPLIT_MIN or opts.split_min
  local data_left = 0
  for _, e in ipairs(pending) do if e.desc == "TABLE DATA" then data_left = data_left + (ctx.length[e.id] or 0) end end
  local function split_over(e, nfree)
    if split_min <= 0 or nfree < 2 or e.desc ~= "TABLE DATA" or not splittable(e.copy) then return false end
    local len = ctx.length[e.id] or 0
    return len >= split_min and len * jobs > data_left
  end
  -- the binary plans of the tables to load, looked up while conn is free (it is a pool connection below)
  for _, e in ipairs(pending) do
    if e.desc == "TABLE DATA" and e.copy then binary_copy(conn, ctx, e, opts, false) end
  end
  local finished, running, by_slot, locked = {}, {}, {}, {}
  local part_failed, sibling, again = {}, {}, {}
  local conns = { conn }
  local pool
  local first_err, first_e
  local ok, err = pcall(function()
    for i = 2, jobs do
      local wc = conn:clone { application_name = "orch restore worker " .. i }
      conns[i] = wc
      session_of(wc, ctx, jobs)
    end
    pool = pgarchive.pool(opts.archive, conns, { inflate_pieces = opts.inflate_pieces })
    local slot_ts, slot_am, slot_pw, free = {}, {}, {}, {}
    for i = 1, #conns do free[#free + 1] = i end
    local left = #pending
    local last_report = 0
    local function complete(e)
      finished[e.id] = true
      left = left - 1
      done = done + 1
      if m then m.finish(e) end
      for _, x in ipairs(dependents[e.id] or {}) do
        nwait[x] = nwait[x] - 1
        if nwait[x] == 0 then make_ready(ctx.by_id[x]) end
      end
    end
    while left > 0 do
      if sys.interrupted() and not first_err then
        first_err = "interrupted"
        pool:cancel()
      end
      -- start what may start, largest first
      while not first_err and #free > 0 do
        -- the first ready entry whose tables no running entry holds
        local bi
        for i, x in ipairs(readyl) do
          local held = false
          for t in pairs(locks[x.id]) do if locked[t] then held = true break end end
          if not held then bi = i break end
        end
        if not bi then break end
        local best = table.remove(readyl, bi)
        local nready = #readyl + 1
        -- an index build gets the server's parallel workers only when it is all that runs (nothing
        -- else is ready and no other connection is busy): otherwise they would take the cores the
        -- other connections' work needs, at a higher total cost
        local alone = nready == 1 and #free == jobs
        local e = best
        if e.desc == "TABLE DATA" then data_left = data_left - (ctx.length[e.id] or 0) end
        if split_over(e, #free) then
          local slots = free
          free = {}
          table.sort(slots)
          running[e.id] = #slots
          for _, sl in ipairs(slots) do by_slot[sl] = e end
          for t in pairs(locks[e.id]) do locked[t] = true end
          local said = string.format("%s.%s over %d connections", e.namespace or "", e.tag, #slots)
          local known = false   -- a table loaded again as text is split again: named once
          for _, x in ipairs(res_split) do if x == said then known = true end end
          if not known then res_split[#res_split + 1] = said end
          local kinds, bcopy = binary_copy(conn, ctx, e, opts, false, true)
          pool:split(slots, { id = e.id, copy = bcopy or e.copy, kinds = kinds, before = "BEGIN", after = "COMMIT" })
          goto next_start
        end
        local slot = table.remove(free)
        local job
        if e.desc == "TABLE DATA" and e.copy then
          local t = freezable(conn, ctx, e)
          local kinds, bcopy = binary_copy(conn, ctx, e, opts, t and true, true)
          if t then
            job = { id = e.id, copy = bcopy or with_freeze(e.copy), kinds = kinds, after = "COMMIT",
              before = "BEGIN; TRUNCATE TABLE ONLY " .. conn:quote_ident(t.namespace) .. "." .. conn:quote_ident(t.tag) }
          else
            job = { id = e.id, copy = bcopy or e.copy, kinds = kinds }
          end
        elseif e.desc == "TABLE DATA" then
          local parts = {}
          a:read_block(e.id, function(chunk) parts[#parts + 1] = chunk end)
          job = { sql = table.concat(parts) }
        elseif e.desc == "BLOBS" then
          job = { id = e.id, blobs = true, create = not ctx.has_lo_entries }
        else
          local sql = entry_sql(conn, e, opts)
          if sql and (e.desc == "INDEX" or e.desc == "CONSTRAINT") and slot_pw[slot] ~= alone then
            sql = (alone and "RESET max_parallel_maintenance_workers;\n" or "SET max_parallel_maintenance_workers = 0;\n") .. sql
            slot_pw[slot] = alone
          end
          if sql and e.tablespace and e.tablespace ~= slot_ts[slot] and not opts.no_tablespaces then
            sql = "SET default_tablespace = " .. (e.tablespace == "" and "''" or conn:quote_ident(e.tablespace)) .. ";\n" .. sql
            slot_ts[slot] = e.tablespace
          end
          if sql and e.tableam and e.tableam ~= "" and e.tableam ~= slot_am[slot] then
            sql = "SET default_table_access_method = " .. conn:quote_ident(e.tableam) .. ";\n" .. sql
            slot_am[slot] = e.tableam
          end
          job = sql and { sql = sql }
        end
        if job then
          running[e.id] = 1
          by_slot[slot] = e
          for t in pairs(locks[e.id]) do locked[t] = true end
          pool:run(slot, job)
        else
          free[#free + 1] = slot
          complete(e)
        end
        ::next_start::
      end
      if next(running) == nil then
        if first_err then break end
        if left > 0 then error("the parallel restore found entries whose dependencies never finish (a dependency loop in the archive?)", 0) end
        break
      end
      local slot, jerr = pool:wait(0.2)
      if slot then
        local e = by_slot[slot]
        by_slot[slot] = nil
        free[#free + 1] = slot
        -- "sibling": a part of a split COPY that stopped because another part failed (which says why);
        -- unconvertible: a row its binary converter refused (nothing of the table committed: loaded again as text)
        if unconvertible(jerr) then again[e.id] = jerr
        elseif jerr == "sibling" then sibling[e.id] = true
        elseif jerr ~= nil then
          part_failed[e.id] = true
          if not first_err then first_err, first_e = jerr, e; pool:cancel() end
        end
        running[e.id] = running[e.id] - 1
        if running[e.id] == 0 then
          running[e.id] = nil
          for t in pairs(locks[e.id]) do locked[t] = nil end
          if part_failed[e.id] then -- reported above
          elseif again[e.id] then
            text_again(ctx, e, again[e.id])
            again[e.id], sibling[e.id] = nil, nil
            data_left = data_left + (ctx.length[e.id] or 0)
            make_ready(e)
          elseif sibling[e.id] then
            if not first_err then first_err, first_e = "every part of its split COPY stopped", e; pool:cancel() end
          else
            if e.desc == "TABLE DATA" and ctx.binary[e.id] and not ctx.text_again[e.id] and binary_copy(conn, ctx, e, opts, false, true) then
              ctx.binary_tables = ctx.binary_tables + 1
            end
            complete(e)
          end
        end
      end
      if m and sys.monotonic() - last_report >= 0.2 then
        last_report = sys.monotonic()
        local partial, names = {}, {}
        local prog = pool:progress()
        local named = {}
        for s2, e2 in pairs(by_slot) do
          if not named[e2.id] then
            named[e2.id] = true
            names[#names + 1] = (e2.desc == "TABLE DATA" and "" or (e2.desc:lower() .. " ")) .. (e2.namespace and (e2.namespace .. ".") or "") .. e2.tag
          end
          if e2.had_dumper then partial[e2.id] = math.max(partial[e2.id] or 0, prog[s2] or 0) end
        end
        m.partial = partial
        m.report(table.concat(names, ", "))
      end
    end
  end)
  if pool then pool:close() end
  for i = 2, #conns do pcall(conns[i].close, conns[i]) end
  if not ok then error(err, 0) end
  if first_err then
    if first_err == "interrupted" then sys.check_interrupt(); error(db.as_error { message = "interrupted", exit_code = 130 }, 0) end
    raise_at(first_e, first_err, done)
  end
  -- the second and third passes, in order, on the leader
  for pass = 2, 3 do
    for _, e in ipairs(ctx.entries) do
      if ctx.restorable(e) and pass_of(e) == pass then
        local ok2, err2 = pcall(run_entry, conn, a, e, ctx, opts, state, m)
        if not ok2 then raise_at(e, err2, done) end
        done = done + 1
        if m then m.finish(e); m.report(where_of(e)) end
      end
    end
  end
  durable(conn)
  return { entries = done, jobs = jobs, split = res_split, binary_tables = ctx.binary_tables, text_again = ctx.report_text }
end

local function apply_any(conn, a, opts)
  if (opts.jobs or 1) > 1 and not opts.single_transaction and opts.archive ~= "-" then
    return apply_parallel(conn, a, opts, opts.jobs)
  end
  return apply(conn, a, opts)
end

-- ================================================================ proving the archive

-- Does the archive carry checksums of its own? zlib data blocks end with
-- an Adler-32 the reader checks; an uncompressed archive has none, so
-- without a manifest a flipped byte in it goes unnoticed.
-- lz4/zstd frames carry a content checksum only when written with one
-- (orch's do, pg_dump 16/17's do not): with v (what a:verify() returned),
-- every stream read must have had one.
local function self_checking(a, v)
  if v then return v.unchecked_streams == 0 end
  local c = a:header().compression
  return c ~= "none"
end

-- Inflate every data block of the file archive a (its checksums checked):
-- on jobs threads, largest block first, when the TOC has every block's
-- offset; else in one pass. Returns what a:verify() does.
local function verify_blocks(path, a, jobs)
  jobs = math.tointeger(jobs) or 1
  local blocks = {}
  for _, e in ipairs(a:entries()) do
    if e.had_dumper then
      if not e.pos then jobs = 0 break end   -- a block without its offset: one pass over the file
      blocks[#blocks + 1] = e
    end
  end
  -- one thread: the restore's own reader (its SHA-256 is off), no second copy of the TOC in memory
  if jobs <= 1 or #blocks < 2 then return a:verify() end
  table.sort(blocks, function(x, y) return x.pos < y.pos end)
  local size = (sys.stat(path) or {}).size or 0
  local len = {}
  for i, e in ipairs(blocks) do len[e.id] = (blocks[i + 1] and blocks[i + 1].pos or size) - e.pos end
  table.sort(blocks, function(x, y) if len[x.id] ~= len[y.id] then return len[x.id] > len[y.id] end return x.id < y.id end)
  local ids = {}
  for i, e in ipairs(blocks) do ids[i] = e.id end
  return pgarchive.verify_parallel(path, math.min(jobs, #ids), ids)
end

--- Prove a file archive before anything touches a target: the manifest's
-- SHA-256 when there is one, else a full pass over the structure and every
-- data block. Returns a short description of the proof; raises (saying the
-- target was not touched) when the archive is damaged or, for a mode that
-- destroys first, cannot be proven and opts.force is not set.
local function prove(path, a, m, mode, opts)
  if m then
    local sum, size = sys.sha256_file(path)
    if sum ~= m.sha256 then
      sys.error(string.format("refusing to restore %s: its SHA-256 %s does not match the manifest's %s (the file is damaged); the target was not touched",
        path, sum, tostring(m.sha256)), 1)
    end
    if m.size and size ~= m.size then
      sys.error(string.format("refusing to restore %s: it is %d bytes, the manifest says %d; the target was not touched", path, size, m.size), 1)
    end
    return "SHA-256 matches the manifest"
  end
  local ok, v = pcall(verify_blocks, path, a, opts.jobs)
  if not ok then
    local e = db.is_error(v) and v or db.as_error { message = tostring(v) }
    e.where = "checking " .. path .. " before restoring it; the target was not touched"
    error(e, 0)
  end
  if mode == "drop-existing" and not self_checking(a, v) and not opts.force then
    sys.error(string.format("refusing to --drop-existing with %s: it has no manifest and no compression checksums (an uncompressed archive, " ..
      "e.g. pg_dump -Z0, or lz4/zstd written without checksums as pg_dump 16/17 do), so a damaged byte could not be detected before the " ..
      "target's contents are dropped; the target was not touched. " ..
      "Restore it with --swap (the current database is kept), or accept it unproven with --force", path), 1)
  end
  return self_checking(a, v) and string.format("every data block checked (%d blocks, no manifest)", v.blocks)
    or string.format("structure and %d data blocks read; UNPROVEN: no manifest and no compression checksums", v.blocks)
end

-- ================================================================ the target's state

local SYSTEM_SCHEMA = "nspname !~ '^pg_' AND nspname <> 'information_schema'"

-- Does the database hold user objects?
local function has_objects(conn)
  return conn:value([[SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')]]) > 0
    or conn:value([[SELECT count(*) FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname NOT IN ('information_schema', 'public')]]) > 0
end

-- Objects in user schemas that stand on their own (not members of an
-- extension, not parts of another object such as an identity column's
-- sequence), with what DROP needs: { key = "classid:objid", type, identity }.
local OBJECTS = [[
SELECT o.classid::oid::int8 || ':' || o.objid::int8 AS key, i.type, i.identity
FROM (SELECT 'pg_class'::regclass AS classid, c.oid AS objid, c.relnamespace AS ns FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
      UNION ALL SELECT 'pg_proc'::regclass, oid, pronamespace FROM pg_proc
      UNION ALL SELECT 'pg_type'::regclass, t.oid, t.typnamespace FROM pg_type t WHERE t.typrelid = 0 AND t.typcategory <> 'A'
      UNION ALL SELECT 'pg_collation'::regclass, oid, collnamespace FROM pg_collation
      UNION ALL SELECT 'pg_conversion'::regclass, oid, connamespace FROM pg_conversion
      UNION ALL SELECT 'pg_operator'::regclass, oid, oprnamespace FROM pg_operator
      UNION ALL SELECT 'pg_opfamily'::regclass, oid, opfnamespace FROM pg_opfamily
      UNION ALL SELECT 'pg_ts_config'::regclass, oid, cfgnamespace FROM pg_ts_config
      UNION ALL SELECT 'pg_ts_dict'::regclass, oid, dictnamespace FROM pg_ts_dict
      UNION ALL SELECT 'pg_statistic_ext'::regclass, oid, stxnamespace FROM pg_statistic_ext) o
JOIN pg_namespace n ON n.oid = o.ns, LATERAL pg_identify_object(o.classid, o.objid, 0) i
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype IN ('e', 'i', 'a'))]]

-- The database-wide objects a restore can create outside any schema, with
-- what DROP needs: { key, type, identity, name }. Event triggers come first
-- (a restored one could stop the drops that follow), subscriptions and
-- publications next, servers before their wrappers, languages and access
-- methods last of the DDL; default privileges for no schema; large
-- objects (their oids may be below 16384: lo_create(42)).
local GLOBALS = [[
SELECT o.classid::oid::int8 || ':' || o.objid::int8 AS key, o.ord, i.type, i.identity, o.name, o.extra
FROM (SELECT 'pg_event_trigger'::regclass AS classid, oid AS objid, 1 AS ord, evtname::text AS name, NULL::text AS extra FROM pg_event_trigger
      UNION ALL SELECT 'pg_subscription'::regclass, oid, 2, subname::text, NULL FROM pg_subscription
        WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      UNION ALL SELECT 'pg_publication'::regclass, oid, 3, pubname::text, NULL FROM pg_publication
      UNION ALL SELECT 'pg_foreign_server'::regclass, oid, 4, srvname::text, NULL FROM pg_foreign_server
      UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, oid, 5, fdwname::text, NULL FROM pg_foreign_data_wrapper
      UNION ALL SELECT 'pg_transform'::regclass, oid, 6, format('FOR %s LANGUAGE %I', trftype::regtype, (SELECT lanname FROM pg_language l WHERE l.oid = trflang)), NULL
        FROM pg_transform
      UNION ALL SELECT 'pg_cast'::regclass, oid, 7, format('(%s AS %s)', castsource::regtype, casttarget::regtype), NULL FROM pg_cast
      UNION ALL SELECT 'pg_language'::regclass, oid, 8, lanname::text, NULL FROM pg_language
      UNION ALL SELECT 'pg_am'::regclass, oid, 9, amname::text, NULL FROM pg_am
      UNION ALL SELECT 'pg_default_acl'::regclass, oid, 10, pg_get_userbyid(defaclrole)::text, defaclobjtype::text FROM pg_default_acl
        WHERE defaclnamespace = 0) o, LATERAL pg_identify_object(o.classid, o.objid, 0) i
WHERE o.objid >= 16384
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.classid AND d.objid = o.objid AND d.deptype IN ('e', 'i', 'a'))
UNION ALL
SELECT 'pg_largeobject:' || oid::int8, 11, 'large object', oid::text, oid::text, NULL FROM pg_largeobject_metadata
ORDER BY 2, 1]]

-- GLOBALS as conn may read it: PostgreSQL 12 grants no one but a superuser pg_subscription.oid, and only a
-- superuser can create a subscription there, so a database owner's restore leaves subscriptions out
local function globals(conn)
  if conn:value("SELECT pg_catalog.has_column_privilege('pg_catalog.pg_subscription', 'oid', 'SELECT')") then return GLOBALS end
  local sql = GLOBALS:gsub("\n      UNION ALL SELECT 'pg_subscription'::regclass, oid, 2, subname::text, NULL FROM pg_subscription\n" ..
    "        WHERE subdbid = %(SELECT oid FROM pg_database WHERE datname = current_database%(%)%)", "")
  assert(sql ~= GLOBALS, "restore.lua: GLOBALS no longer has its pg_subscription branch")
  return sql
end

-- ALTER DEFAULT PRIVILEGES object words by pg_default_acl.defaclobjtype,
-- and what the built-in default gives PUBLIC (an entry equal to the
-- built-in default is removed by the server)
local DEFACL = { r = { "TABLES" }, S = { "SEQUENCES" }, f = { "FUNCTIONS", "EXECUTE" }, T = { "TYPES", "USAGE" }, n = { "SCHEMAS" },
  L = { "LARGE OBJECTS" } }

--- Drop one database-wide object of GLOBALS (r: its row), not a large object.
local function drop_global(conn, r)
  local q = function(x) return conn:quote_ident(x) end
  local t = r.type
  if t == "subscription" then
    -- a restored subscription never made its slot: detach it from the name, or DROP reaches for the publisher
    conn:exec("ALTER SUBSCRIPTION " .. q(r.name) .. " DISABLE")
    conn:exec("ALTER SUBSCRIPTION " .. q(r.name) .. " SET (slot_name = NONE)")
    conn:exec("DROP SUBSCRIPTION " .. q(r.name))
  elseif t == "default acl" then
    local w = DEFACL[r.extra]
    if not w then error("default privileges of an unknown object type '" .. tostring(r.extra) .. "' for role " .. r.name, 0) end
    for _, g in ipairs(conn:query([[SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS g
        FROM pg_default_acl d, aclexplode(d.defaclacl) a WHERE d.oid = $1::oid]], r.key:match(":(%d+)$"))) do
      conn:exec(string.format("ALTER DEFAULT PRIVILEGES FOR ROLE %s REVOKE ALL ON %s FROM %s", q(r.name), w[1], g.g))
    end
    -- back to the built-in default: the owner's own privileges, and PUBLIC's where it has some
    conn:exec(string.format("ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT ALL ON %s TO %s", q(r.name), w[1], q(r.name)))
    if w[2] then conn:exec(string.format("ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT %s ON %s TO PUBLIC", q(r.name), w[2], w[1])) end
  else
    local what = ({ ["event trigger"] = "EVENT TRIGGER", publication = "PUBLICATION", server = "SERVER",
      ["foreign-data wrapper"] = "FOREIGN DATA WRAPPER", transform = "TRANSFORM", cast = "CAST", language = "LANGUAGE",
      ["access method"] = "ACCESS METHOD" })[t]
    if not what then error("a database-wide object of an unknown type '" .. t .. "': " .. r.identity, 0) end
    local name = (t == "transform" or t == "cast") and r.name or q(r.name)
    conn:exec(string.format("DROP %s IF EXISTS %s CASCADE", what, name))
  end
end

--- Does the object of key "classid:objid" (OBJECTS', GLOBALS' keys) still
-- exist? A CASCADE may have taken it along: one look at its own catalog, not
-- the whole listing again. names caches catalog names by classid.
local function still_there(conn, key, names)
  local classid, objid = key:match("^(%d+):(%d+)$")
  local catalog = names[classid]
  if not catalog then
    catalog = conn:value("SELECT $1::pg_catalog.oid::pg_catalog.regclass::text", classid)
    names[classid] = catalog
  end
  return conn:value(string.format("SELECT count(*) FROM pg_catalog.%s WHERE oid = $1::pg_catalog.oid", catalog), objid) > 0
end

--- Drop every database-wide object of GLOBALS that keep (a set of keys) does not hold.
local function drop_globals(conn, keep)
  local los, names = {}, {}
  for _, r in ipairs(conn:query(globals(conn))) do
    if keep[r.key] then
      if r.type == "large object" then los[#los + 1] = r.name end
    elseif r.type ~= "large object" then
      if still_there(conn, r.key, names) then drop_global(conn, r) end
    end
  end
  -- large objects in one statement: there may be many thousands
  conn:query("SELECT count(pg_catalog.lo_unlink(oid)) FROM pg_catalog.pg_largeobject_metadata WHERE oid <> ALL($1::oid[])",
    "{" .. table.concat(los, ",") .. "}")
end

--- What a default-mode restore must give back if it fails: the schemas,
-- extensions and objects the (empty) target holds, and public's owner,
-- privileges and comment.
local function snapshot(conn)
  local s = { schemas = {}, extensions = {}, objects = {} }
  for _, r in ipairs(conn:query("SELECT nspname FROM pg_namespace WHERE " .. SYSTEM_SCHEMA)) do s.schemas[r.nspname] = true end
  for _, r in ipairs(conn:query("SELECT extname FROM pg_extension")) do s.extensions[r.extname] = true end
  for _, r in ipairs(conn:query(OBJECTS)) do s.objects[r.key] = true end
  s.globals = {}
  for _, r in ipairs(conn:query(globals(conn))) do s.globals[r.key] = true end
  s.public = conn:query([[SELECT pg_get_userbyid(nspowner) AS owner, nspacl::text AS acl, obj_description(oid, 'pg_namespace') AS comment
    FROM pg_namespace WHERE nspname = 'public']])[1]
  return s
end

local DROP_KIND = { ["composite type"] = "TYPE", ["index"] = false, ["toast table"] = false }

--- Give the target back as snapshot() found it: drop what the restore
-- created (schemas, extensions, objects in schemas that were there, large
-- objects), put public's owner, privileges and comment back.
local function put_back(conn, s)
  if conn:info().in_transaction then conn:exec("ROLLBACK") end
  local q = function(x) return conn:quote_ident(x) end
  -- a restored event trigger could stop the drops below: those go first
  for _, r in ipairs(conn:query(globals(conn))) do
    if r.type == "event trigger" and not s.globals[r.key] then drop_global(conn, r) end
  end
  for _, r in ipairs(conn:query("SELECT nspname FROM pg_namespace WHERE " .. SYSTEM_SCHEMA .. " ORDER BY 1")) do
    if not s.schemas[r.nspname] then conn:exec("DROP SCHEMA " .. q(r.nspname) .. " CASCADE") end
  end
  for _, r in ipairs(conn:query("SELECT extname FROM pg_extension ORDER BY 1")) do
    if not s.extensions[r.extname] then conn:exec("DROP EXTENSION IF EXISTS " .. q(r.extname) .. " CASCADE") end
  end
  -- relations first: their types, sequences and functions often go with them
  local rows = conn:query(OBJECTS .. " ORDER BY (o.classid <> 'pg_class'::regclass), 1")
  local names = {}
  for _, r in ipairs(rows) do
    local kind = DROP_KIND[r.type]
    if kind == nil then kind = r.type:upper() end
    if kind and not s.objects[r.key] and still_there(conn, r.key, names) then
      conn:exec(string.format("DROP %s IF EXISTS %s CASCADE", kind, r.identity))
    end
  end
  drop_globals(conn, s.globals)
  local p = s.public
  if p then
    if not conn:value("SELECT 1 FROM pg_namespace WHERE nspname = 'public'") then conn:exec("CREATE SCHEMA public") end
    local now = conn:query([[SELECT pg_get_userbyid(nspowner) AS owner, nspacl::text AS acl, obj_description(oid, 'pg_namespace') AS comment
      FROM pg_namespace WHERE nspname = 'public']])[1]
    if now.owner ~= p.owner then conn:exec("ALTER SCHEMA public OWNER TO " .. q(p.owner)) end
    if now.comment ~= p.comment then conn:exec("COMMENT ON SCHEMA public IS " .. (p.comment and conn:quote_literal(p.comment) or "NULL")) end
    if now.acl ~= p.acl then
      conn:exec("REVOKE ALL ON SCHEMA public FROM PUBLIC")
      for _, g in ipairs(conn:query([[SELECT DISTINCT a.grantee::regrole::text AS grantee FROM pg_namespace n, aclexplode(n.nspacl) a
          WHERE n.nspname = 'public' AND a.grantee <> 0]])) do
        conn:exec("REVOKE ALL ON SCHEMA public FROM " .. g.grantee)
      end
      if p.acl then
        for _, g in ipairs(conn:query([[SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee,
            a.privilege_type AS priv, a.is_grantable FROM aclexplode($1::aclitem[]) a]], p.acl)) do
          conn:exec(string.format("GRANT %s ON SCHEMA public TO %s%s", g.priv, g.grantee, g.is_grantable and " WITH GRANT OPTION" or ""))
        end
      else
        -- NULL is the built-in default: the owner's privileges (and, for public, none for PUBLIC since 15)
        conn:exec("GRANT ALL ON SCHEMA public TO " .. q(p.owner))
      end
    end
  end
end

-- ================================================================ one restore of a target at a time

local RESTORE_LOCK = 1869767538   -- 'orch' + 10: restores of one target database, held in the maintenance database
local LEFTOVER = "orch: partial restore of database %s by pid %d"

-- A connection to the target's server outside the target (for the lock,
-- the leftovers and the swap): postgres, else template1.
local function maintenance(c)
  local ok, admin = pcall(c.clone, c, { dbname = "postgres" })
  if ok then return admin end
  local ok2, admin2 = pcall(c.clone, c, { dbname = "template1" })
  if ok2 then return admin2 end
  error(admin, 0)
end

--- Take the restore lock of target dbname on admin, or fail naming who
-- holds it: two restores of one target never run at once.
local function lock_target(admin, dbname)
  if admin:value("SELECT pg_try_advisory_lock($1, hashtext($2))", RESTORE_LOCK, dbname) then return end
  local h = admin:query([[SELECT a.pid, a.application_name, a.usename, a.backend_start::text AS since
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.classid = $1::bigint::oid AND l.granted
      AND l.objid::bigint = (hashtext($2)::bigint + 4294967296) % 4294967296 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())]],
    RESTORE_LOCK, dbname)[1]
  sys.error(string.format("another restore of database %s is running (%s): wait for it to finish, then run this one again; nothing was restored",
    dbname, h and string.format("server pid %d, %s, user %s, connected since %s", h.pid,
      h.application_name ~= "" and h.application_name or "no application name", h.usename, h.since) or "its session holds the restore lock"), 1)
end

--- DROP DATABASE name WITH (FORCE) (12: its sessions ended first), its subscriptions first: a database
-- with subscriptions cannot be dropped, and dropping one that names a slot
-- would reach for the publisher (restored subscriptions never made a slot:
-- they are detached from its name, then dropped).
local function drop_database(admin, name)
  local has = admin:value([[SELECT 1 FROM pg_catalog.pg_subscription s JOIN pg_catalog.pg_database d ON d.oid = s.subdbid
    WHERE d.datname = $1 LIMIT 1]], name)
  if has then
    local sc <close> = admin:clone { dbname = name }
    for _, r in ipairs(sc:query([[SELECT subname FROM pg_catalog.pg_subscription
        WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())]])) do
      local q = sc:quote_ident(r.subname)
      sc:exec("ALTER SUBSCRIPTION " .. q .. " DISABLE")
      sc:exec("ALTER SUBSCRIPTION " .. q .. " SET (slot_name = NONE)")
      sc:exec("DROP SUBSCRIPTION " .. q)
    end
  end
  if admin:info().server_version_num >= 130000 then
    admin:exec("DROP DATABASE IF EXISTS " .. admin:quote_ident(name) .. " WITH (FORCE)")
  else
    -- PostgreSQL 12 has no WITH (FORCE): end the database's sessions, then drop it
    admin:query("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()", name)
    admin:exec("DROP DATABASE IF EXISTS " .. admin:quote_ident(name))
  end
end

--- Drop the half-built databases an earlier restore of dbname left when it
-- was killed (they carry the LEFTOVER comment). Called under the lock, so
-- no live restore of dbname owns them. Returns their names.
local function drop_leftovers(admin, dbname)
  local dropped = {}
  local pattern = LEFTOVER:format(dbname, 0):gsub(" by pid 0$", "")
  for _, r in ipairs(admin:query([[SELECT d.datname FROM pg_database d
      WHERE shobj_description(d.oid, 'pg_database') LIKE $1 || ' by pid %' ORDER BY 1]], pattern)) do
    drop_database(admin, r.datname)
    log.warn("dropped database %s: a half-built copy left by an interrupted restore of %s", r.datname, dbname)
    dropped[#dropped + 1] = r.datname
  end
  -- a restore killed between its CREATE DATABASE and the COMMENT that marks it left an unmarked,
  -- empty copy: its name (run_swap's, see free_name) says whose it was
  for _, r in ipairs(admin:query([[SELECT d.datname FROM pg_database d
      WHERE shobj_description(d.oid, 'pg_database') IS NULL AND strpos(d.datname, '_orch_restore_') > 0 ORDER BY 1]])) do
    local name = r.datname
    local suffix = name:match("(_orch_restore_%d+_%d+)$") or name:match("(_orch_restore_%d+)$")
    if suffix and name == dbname:sub(1, 63 - #suffix) .. suffix then
      drop_database(admin, name)
      log.warn("dropped database %s: an unmarked copy left by a restore of %s interrupted as it began", name, dbname)
      dropped[#dropped + 1] = name
    end
  end
  return dropped
end

-- A database name: prefix (cut to fit) and suffix, at most 63 bytes, not
-- yet taken on the server.
local function free_name(admin, prefix, suffix)
  for n = 1, 100 do
    local s = n == 1 and suffix or (suffix .. "_" .. n)
    local name = prefix:sub(1, 63 - #s) .. s
    if not admin:value("SELECT 1 FROM pg_database WHERE datname = $1", name) then return name end
  end
  sys.error("no free database name for " .. prefix .. suffix, 1)
end

-- ================================================================ restoring

local function as_error(err)
  if type(err) == "table" then return err end
  return db.as_error { message = tostring(err) }
end

local function add_where(err, text)
  err = as_error(err)
  err.where = (err.where and (err.where .. "; ") or "") .. text
  return err
end

-- Restore by swap: into a new database (marked as a leftover until it is
-- swapped in), then rename the target away and the new one into place in
-- one transaction. Returns the name the old database is kept under.
local function run_swap(c, admin, a, opts, res)
  local target_db = c:info().dbname
  local newname = free_name(admin, target_db, "_orch_restore_" .. sys.getpid())
  local qnew = admin:quote_ident(newname)
  -- the new database as the archive's was made (encoding, locale), with its owner, privileges and settings
  local dbe = dbprops.of_archive(a:entries())
  res.database = { applied = {}, skipped = {} }
  -- what was applied is reported under the name the database has in the end
  local qtarget = admin:quote_ident(target_db)
  local function shown(st) return (dbprops.retarget(st, qtarget)) end
  local created = false
  if dbe.database and dbe.database.defn then
    local create, named = dbprops.retarget(dbprops.statements(dbe.database.defn)[1] or "", qnew)
    if named then
      local okc, cerr = pcall(admin.exec, admin, create)
      if okc then
        created = true
        res.database.applied[#res.database.applied + 1] = "created as the archive's database was: " .. shown(create)
      else
        res.database.skipped[#res.database.skipped + 1] = string.format("the archive's encoding and locale (%s): this server refused them (%s); " ..
          "the database was created with the server's defaults instead", shown(create), tostring(db.is_error(cerr) and cerr.message or cerr))
      end
    end
  end
  if not created then admin:exec("CREATE DATABASE " .. qnew .. " TEMPLATE template0") end
  admin:exec("COMMENT ON DATABASE " .. qnew .. " IS " .. admin:quote_literal(LEFTOVER:format(target_db, sys.getpid())))
  local ok, err = pcall(function()
    local nc <close> = c:clone { dbname = newname }
    if opts.single_transaction then nc:exec("BEGIN") end
    local r = apply_any(nc, a, opts)
    if opts.single_transaction then nc:exec("COMMIT") end
    res.entries = r.entries
    if r.split and #r.split > 0 then res.split = r.split end
    res.binary_tables = r.binary_tables
    if r.text_again and #r.text_again > 0 then res.text_again = r.text_again end
    local owner = dbe.database and dbe.database.owner
    if owner and owner ~= "" and not opts.no_owner then
      local st = "ALTER DATABASE " .. qnew .. " OWNER TO " .. nc:quote_ident(owner)
      local okx, xerr = pcall(nc.exec, nc, st)
      if not okx then error(add_where(xerr, "giving the restored database the archive's owner " .. owner), 0) end
      res.database.applied[#res.database.applied + 1] = "ALTER DATABASE OWNER TO " .. owner
    end
    for _, st in ipairs(dbprops.statements_for(dbe.items, qnew)) do
      local okx, xerr = pcall(nc.exec, nc, st)
      if not okx then error(add_where(xerr, "applying the archive's database setting: " .. st), 0) end
      if not st:match("^%u+ SESSION AUTHORIZATION") then res.database.applied[#res.database.applied + 1] = shown(st) end
    end
  end)
  if not ok then
    local dropped = pcall(drop_database, admin, newname)
    error(add_where(err, string.format("the target database %s was not touched (%s)", target_db,
      dropped and "the partial copy was dropped" or ("the partial copy " .. newname .. " could not be dropped: the next restore drops it"))), 0)
  end
  c:close()
  local oldname = free_name(admin, target_db, "_orch_old_" .. os.date("!%Y%m%d%H%M%S"))
  -- the target's sessions are ended; one that reconnects in between makes the rename fail: try again
  for attempt = 1, 5 do
    admin:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", target_db)
    local okr, rerr = pcall(admin.tx, admin, function()
      admin:exec(string.format("ALTER DATABASE %s RENAME TO %s", admin:quote_ident(target_db), admin:quote_ident(oldname)))
      admin:exec(string.format("ALTER DATABASE %s RENAME TO %s", admin:quote_ident(newname), admin:quote_ident(target_db)))
      -- the marker goes, the archive's own comment (if any) comes
      local comment = dbe.comment and dbprops.statements_for({ dbe.comment }, admin:quote_ident(target_db))[1]
      admin:exec(comment or ("COMMENT ON DATABASE " .. admin:quote_ident(target_db) .. " IS NULL"))
      if comment then res.database.applied[#res.database.applied + 1] = comment end
    end)
    if okr then return oldname end
    if not (db.is_error(rerr) and rerr.sqlstate == "55006") or attempt == 5 then
      pcall(drop_database, admin, newname)
      error(add_where(rerr, string.format("swapping the restored copy in failed: the target database %s is as it was (the copy was dropped)", target_db)), 0)
    end
    sys.sleep(0.2 * attempt)
  end
end

-- Restore into the target itself (modes empty and drop-existing).
local function run_in_place(c, a, opts, mode, res)
  local target_db = c:info().dbname
  -- (deep_check's scratch database for a partial backup: made now, the empty schemas its objects need made in it)
  if mode == "empty" and not opts.partial_ok and not opts.into_existing and has_objects(c) then
    sys.error(string.format("the target database %s is not empty: restore into an empty database, use --swap (restore beside it and " ..
      "swap by rename), or --drop-existing to replace its contents; nothing was restored", target_db), 1)
  end
  local before = mode == "empty" and not opts.single_transaction and snapshot(c)
  local ok, err = pcall(function()
    if opts.single_transaction then c:exec("BEGIN") end
    if mode == "drop-existing" then
      -- what lives outside schemas (event triggers first, publications, servers, casts, large objects, ...)
      drop_globals(c, {})
      for _, s in ipairs(c:query("SELECT nspname FROM pg_namespace WHERE " .. SYSTEM_SCHEMA)) do
        c:exec("DROP SCHEMA " .. c:quote_ident(s.nspname) .. " CASCADE")
      end
      c:exec("CREATE SCHEMA public")
    end
    local r = apply_any(c, a, opts)
    if opts.single_transaction then c:exec("COMMIT") end
    res.entries = r.entries
    if r.split and #r.split > 0 then res.split = r.split end
    res.binary_tables = r.binary_tables
    if r.text_again and #r.text_again > 0 then res.text_again = r.text_again end
  end)
  if ok then
    -- the target keeps its own comment, privileges and settings: say which of the archive's were left out
    local dbe = dbprops.of_archive(a:entries())
    res.database = { applied = {}, skipped = dbprops.all_statements(dbe, c:quote_ident(target_db)) }
    return
  end
  if opts.single_transaction then
    if not c:is_closed() then pcall(c.exec, c, "ROLLBACK") end
    error(add_where(err, c:is_closed() and "the connection was lost; the server rolled the restore back: the target is as it was"
      or "rolled back: the target is as it was"), 0)
  elseif before then
    local cleaned, cerr = false, "the connection was lost"
    if not c:is_closed() then cleaned, cerr = pcall(put_back, c, before) end
    error(add_where(err, cleaned and "what was restored was dropped again: the target is as empty as it was"
      or string.format("the target %s is PARTLY RESTORED and could not be cleaned (%s): drop its contents and restore again", target_db, tostring(cerr))), 0)
  end
  error(add_where(err, string.format("the target %s is PARTLY RESTORED (%s entries ran after its contents were dropped): " ..
    "restore again (the archive itself was proven good), or use --single-transaction or --swap", target_db, tostring(as_error(err).restored or "some"))), 0)
end

--- Restore an archive. opts: archive (path or "-"), db (target URL /
-- conninfo; nil = libpq defaults) or conn (an open connection to the
-- target), mode ("empty"|"drop-existing"|"swap"), single_transaction,
-- schemas, tables, no_owner, skip_manifest_check (restore an orch archive
-- whose manifest is missing), force (--drop-existing with an archive that
-- cannot be proven), on_progress.
-- A file is proven whole before the first statement on the target (see
-- prove). From a pipe nothing can be read ahead: the restore then runs in
-- one transaction (or into the swap's new database), so an archive found
-- damaged half-way leaves the target as it was. One restore of a target at
-- a time (an advisory lock); copies left by a killed swap are dropped.
-- Returns { mode, entries, target, old_database (swap), proof, dropped_leftovers }.
function R.run(opts)
  local path = opts.archive
  if require("orch.storage").is_remote(path) then
    -- an object is streamed down into a spool file with its manifest, then restored from there
    -- under the same rules as a file: proven whole (the manifest's SHA-256) before the target is touched
    local storage = require "orch.storage"
    local f = storage.fetch(path, { jobs = opts.jobs })
    local ok, res = pcall(R.run, setmetatable({ archive = f.path }, { __index = opts }))
    storage.release(f)
    if not ok then
      local from = f.path:gsub("%p", "%%%0")
      if type(res) == "table" and type(res.message) == "string" then res.message = res.message:gsub(from, path) end
      if type(res) == "string" then res = res:gsub(from, path) end
      error(res, 0)
    end
    res.proof = res.proof .. string.format("; streamed from %s into a local spool file first (%.1f MiB%s)", path, f.bytes / 1048576,
      f.ranges and string.format(", %d ranges at once", opts.jobs) or "")
    return res
  end
  local mode = opts.mode or "empty"
  local m
  if path ~= "-" then
    if not sys.exists(path) then sys.error("no archive " .. path, 1) end
    if not opts.skip_manifest_check then
      local merr
      m, merr = backup.read_manifest(path)
      if merr then sys.error(merr .. "; the target was not touched", 1) end
    end
  end
  -- a partial backup (-n, -t, -s, -a, ...) is never restored as if it were the whole database
  local part = m and require("orch.backup.select").summary(m)
  if part and opts.whole then
    sys.error(string.format("refusing to restore %s as the whole database: it is a partial backup (%s), so the restored database " ..
      "would lack everything else; the target was not touched. Choose a backup of the whole database (orch backups list marks " ..
      "partial ones), or restore this one by hand with orch restore", path, part), 1)
  end
  local a <close> = pgarchive.open(path)
  a:no_hash()   -- a file is proven below (prove), a stream block by block: the reader's own SHA-256 is not needed
  if not m and path ~= "-" and not opts.skip_manifest_check and (a:header().dumper_version or ""):match("^orch ") then
    -- stock pg_dump archives have no manifest; an orch archive without one is an incomplete backup
    sys.error(string.format("refusing to restore %s: it has no manifest (%s), so it is an incomplete or damaged orch backup; " ..
      "the target was not touched (use --no-manifest to restore it anyway)", path, backup.manifest_path(path)), 1)
  end
  if part and require("orch.backup.select").data_only(m) and not opts.data_only then
    sys.error(string.format("%s is a data-only backup (%s): it holds rows, not the tables they go into; restore it with --data-only " ..
      "into a database that holds its schema; the target was not touched", path, part), 2)
  end
  local res = { mode = mode, partial = part or nil }
  opts = setmetatable({}, { __index = opts })
  local rsel = require "orch.backup.restore_select"
  rsel.check(opts, mode)
  -- the selection is checked before the target is touched (a name that matches nothing, a bad list)
  local special = function(e) return SPECIAL[e.desc] or dbprops.is_database_entry(e) end
  -- made once here (the -L file read once) and used again by prepare
  if rsel.active(opts) then opts.want = rsel.wrap(a:entries(), opts, selected(a:entries(), opts), special) end
  if opts.want and rsel.into_existing(a:entries(), opts.want, mode, opts) then
    -- rows (or post-data) into the schema the target holds: all or nothing, in one transaction
    opts.into_existing = true
    if not opts.single_transaction then
      opts.single_transaction = true
      res.single_transaction = "the target's existing tables get all of the archive's rows or none"
    end
  end
  opts.archive_size = path ~= "-" and (sys.stat(path) or {}).size or nil
  local jobs = math.tointeger(opts.jobs) or 1
  if jobs > 1 and path == "-" then
    res.jobs_note = "standard input cannot seek, and each connection needs to read the archive on its own: restored with one connection"
    jobs = 1
  elseif jobs > 1 and opts.single_transaction then
    res.jobs_note = "--single-transaction is one transaction on one connection: restored with one connection"
    jobs = 1
  end
  opts.jobs = jobs
  res.jobs = jobs
  if path == "-" then
    if mode == "drop-existing" and not self_checking(a) and not opts.force then
      sys.error("refusing to --drop-existing from standard input with an uncompressed archive: it has no checksums, so a damaged byte " ..
        "could not be detected; the target was not touched. Restore it with --swap, or accept it unproven with --force", 1)
    end
    if mode ~= "swap" and not opts.single_transaction then
      opts.single_transaction = true
      if res.jobs_note then res.jobs_note = res.jobs_note .. ", in one transaction" end
      res.single_transaction = "forced: a stream cannot be checked before it is restored"
    end
    res.proof = "streamed: each block checked as it is restored, " ..
      (mode == "swap" and "into the new database (dropped if anything fails)" or "in one transaction (rolled back if anything fails)")
  else
    res.proof = prove(path, a, m, mode, opts)
    -- the manifest (its SHA-256 matched above) says orch's pdeflate wrote the gzip streams: inflated piece by piece
    opts.inflate_pieces = require("orch.backup.manifest").inflate_pieces(m, a)
  end
  local c = opts.conn or db.connect(opts.db)
  local own_conn = not opts.conn
  local admin <close> = maintenance(c)
  local ok, err = pcall(function()
    local target_db = c:info().dbname
    res.target = target_db
    lock_target(admin, target_db)
    res.dropped_leftovers = drop_leftovers(admin, target_db)
    if mode == "swap" then
      res.old_database = run_swap(c, admin, a, opts, res)
    else
      run_in_place(c, a, opts, mode, res)
    end
  end)
  if own_conn then c:close() end
  if not ok then error(err, 0) end
  return res
end

--- Row counts of every table in a database (for deep verification).
function R.row_counts(conn)
  local out = {}
  for _, t in ipairs(conn:query([[SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast']])) do
    -- ONLY: an inheritance parent's own rows, as its TABLE DATA holds them
    out[t.nspname .. "." .. t.relname] = conn:value(string.format("SELECT count(*) FROM ONLY %s.%s", conn:quote_ident(t.nspname), conn:quote_ident(t.relname)))
  end
  return out
end

--- The checksum of each table's data as the archive holds it and as the
-- restored copy gives it back: a CRC-32 and byte count of the COPY text,
-- one read under the settings the backup wrote it with (orch's pinned
-- output settings and the manifest's TimeZone), so a value that came back
-- different (a date read in another DateStyle, a float rounded, a
-- character converted) cannot verify. Returns { [ns.table] = { archive =,
-- restored = } } for every TABLE DATA entry written as COPY, and under
-- "large objects" the oids and sizes of the large objects.
function R.content_checks(conn, a, timezone, filters)
  local s = require("orch.backup.session")
  s.restore(conn)
  for _, kv in ipairs { { "bytea_output", "hex" }, { "synchronize_seqscans", "off" }, { "quote_all_identifiers", "off" } } do
    conn:query("SELECT pg_catalog.set_config($1, $2, false)", kv[1], kv[2])
  end
  if timezone then conn:query("SELECT pg_catalog.set_config('TimeZone', $1, false)", timezone) end
  for _, e in ipairs(a:entries()) do
    if (e.desc == "ENCODING" or e.desc == "STDSTRINGS") and e.defn then conn:exec((e.defn:gsub(";%s*$", ""))) end
  end
  local out = {}
  for _, e in ipairs(a:entries()) do
    local copy = e.desc == "TABLE DATA" and e.copy and e.copy:match("^%s*(COPY%s.-)%s+FROM%s+stdin;%s*$")
    if copy then
      -- the archive's text, without the end-of-data marker ("\.\n" and blank lines) it carries
      local crc, bytes, tail = 0, 0, ""
      a:read_block(e.id, function(chunk)
        local data = tail .. chunk
        local keep = math.max(#data - 16, 0)
        crc = sys.crc32(data:sub(1, keep), crc)
        bytes = bytes + keep
        tail = data:sub(keep + 1)
      end)
      tail = tail:gsub("\\%.\n\n*$", "")
      crc = sys.crc32(tail, crc)
      bytes = bytes + #tail
      local rcrc, rbytes = 0, 0
      local name = (e.namespace and (e.namespace .. ".") or "") .. e.tag
      -- an extension's configuration table holds its script's rows too: read what the backup wrote, through its filter
      local f = filters and filters[name]
      if type(f) == "table" and f.filter then
        local rel, cols = copy:match("^COPY%s+(.-)%s+(%b())%s*$")
        if rel then copy = string.format("COPY (SELECT %s FROM %s %s)", cols:sub(2, -2), rel, f.filter) end
      end
      conn:copy_out(copy .. " TO STDOUT", function(chunk) rcrc = sys.crc32(chunk, rcrc); rbytes = rbytes + #chunk end)
      out[name] = { archive = string.format("%08x/%d", crc, bytes),
        restored = string.format("%08x/%d", rcrc, rbytes) }
    end
  end
  -- large objects: every one the archive carries is there, with its size
  local sizes, n = {}, 0
  for _, e in ipairs(a:entries()) do
    if e.desc == "BLOBS" then
      a:read_block(e.id, function(chunk, oid)
        if not sizes[oid] then sizes[oid] = 0; n = n + 1 end
        sizes[oid] = sizes[oid] + #chunk
      end)
    end
  end
  if n > 0 then
    local function listing(t)
      local oids, parts = {}, {}
      for oid in pairs(t) do oids[#oids + 1] = oid end
      table.sort(oids)
      for _, oid in ipairs(oids) do parts[#parts + 1] = oid .. ":" .. t[oid] end
      return string.format("%d objects, sizes %08x", #oids, sys.crc32(table.concat(parts, "\n")))
    end
    local restored = {}
    conn:exec("BEGIN")
    for _, r in ipairs(conn:query([[SELECT m.oid, pg_catalog.lo_lseek64(pg_catalog.lo_open(m.oid, 262144), 0, 2) AS size
        FROM pg_catalog.pg_largeobject_metadata m]])) do
      restored[math.tointeger(r.oid)] = math.tointeger(r.size)
    end
    conn:exec("COMMIT")
    out["large objects"] = { archive = listing(sizes), restored = listing(restored) }
  end
  return out
end

--- Restore into a scratch database next to conn's, then count every
-- table's rows and compare its contents with the archive's (for
-- backup.verify{deep=}): returns counts ({ [ns.table] = rows }) and checks
-- (see R.content_checks). The scratch database is reached with every
-- connection parameter of conn (password included) and always dropped.
function R.deep_check(conn, path, on_progress)
  local scratch = ("orch_verify_" .. sys.getpid() .. "_" .. math.floor(sys.now())):sub(1, 63)
  local m = path ~= "-" and backup.read_manifest(path) or nil
  local part = m and m.partial
  if type(part) == "table" and require("orch.backup.select").data_only(m) then
    sys.error(string.format("backup %s is data-only (--data-only): it holds no table definitions, so --deep cannot restore it into " ..
      "an empty scratch database; without --deep, orch verify proves its SHA-256 and every data block", path), 1)
  end
  -- made as the archive's database was (encoding, locale): an SQL_ASCII or LATIN1 database's names and rows do not
  -- go into a UTF8 one; the server's defaults when it refuses them (a locale it does not have)
  local created = false
  if path ~= "-" then
    local a <close> = pgarchive.open(path)
    local dbe = dbprops.of_archive(a:entries())
    if dbe.database and dbe.database.defn then
      local create, named = dbprops.retarget(dbprops.statements(dbe.database.defn)[1] or "", conn:quote_ident(scratch))
      if named then created = pcall(conn.exec, conn, create) end
    end
  end
  if not created then conn:exec("CREATE DATABASE " .. conn:quote_ident(scratch) .. " TEMPLATE template0") end
  local ok, counts, checks = pcall(function()
    local sc <close> = conn:clone { dbname = scratch }
    if type(part) == "table" then
      -- a partial backup (-t) may hold objects of schemas it does not create: they are made empty first
      local a <close> = pgarchive.open(path)
      local made, need = {}, {}
      for _, e in ipairs(a:entries()) do
        if e.desc == "SCHEMA" then made[e.tag] = true elseif e.namespace and e.namespace ~= "" then need[e.namespace] = true end
      end
      for ns in pairs(need) do
        if not made[ns] then sc:exec("CREATE SCHEMA IF NOT EXISTS " .. sc:quote_ident(ns)) end
      end
    end
    R.run { archive = path, conn = sc, no_owner = true, skip_manifest_check = true, partial_ok = part ~= nil,
      on_progress = on_progress and function(ev) ev.phase = "restore"; on_progress(ev) end or nil }
    if on_progress then on_progress { phase = "compare", done = 0, total = 1, fraction = 1, what = "the restored rows against the archive" } end
    local a <close> = pgarchive.open(path)
    local checks_ = R.content_checks(sc, a, m and m.timezone ~= json_null and m.timezone or nil, m and m.extension_rows)
    return R.row_counts(sc), checks_
  end)
  drop_database(conn, scratch)
  if not ok then error(counts, 0) end
  return counts, checks
end

return R
