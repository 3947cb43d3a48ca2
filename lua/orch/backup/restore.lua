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

local R = {}

local SPECIAL = { ENCODING = true, STDSTRINGS = true, SEARCHPATH = true, DATABASE = true, ["DATABASE PROPERTIES"] = true }
local OWNABLE = { SCHEMA = "SCHEMA", TABLE = "TABLE", VIEW = "VIEW", SEQUENCE = "SEQUENCE", ["MATERIALIZED VIEW"] = "MATERIALIZED VIEW",
  FUNCTION = "FUNCTION", PROCEDURE = "PROCEDURE", TYPE = "TYPE", DOMAIN = "DOMAIN", AGGREGATE = "AGGREGATE" }

local function pass_of(e)
  if e.desc == "ACL" or e.desc == "DEFAULT ACL" then return 2 end
  if e.desc == "MATERIALIZED VIEW DATA" or e.desc == "EVENT TRIGGER" or (e.desc == "COMMENT" and (e.tag or ""):match("^EVENT TRIGGER ")) then return 3 end
  return 1
end

--- The archive's entries as pg_restore -l would list them.
function R.list(path)
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
  local table_ids = {}
  for _, e in ipairs(entries) do
    if e.desc == "TABLE" and tables[e.tag] and (not use_s or schemas[e.namespace]) then table_ids[e.id] = true end
  end
  return function(e)
    if SPECIAL[e.desc] then return true end
    if use_t then
      if table_ids[e.id] then return true end
      for _, d in ipairs(e.deps or {}) do
        if table_ids[d] and (e.desc == "TABLE DATA" or e.section == "post-data" or e.desc == "COMMENT" or e.desc == "ACL") then return true end
      end
      return false
    end
    if e.desc == "SCHEMA" then return schemas[e.tag] == true end
    return e.namespace ~= nil and schemas[e.namespace] == true
  end
end

-- Run every chosen entry of the archive against conn, in pg_restore's
-- three passes. Returns counts; raises on the first error with the entry.
local function apply(conn, a, opts)
  local entries = a:entries()
  local want = selected(entries, opts)
  -- the session as pg_restore sets it up
  require("orch.backup.session").restore(conn)
  local settings = {}
  for _, e in ipairs(entries) do
    if (e.desc == "ENCODING" or e.desc == "STDSTRINGS" or e.desc == "SEARCHPATH") and e.defn then
      settings[#settings + 1] = e.defn:gsub(";%s*$", "")
    end
  end
  for _, s in ipairs(settings) do conn:exec(s) end
  if not opts.no_owner then
    local missing, seen = {}, {}
    for _, e in ipairs(entries) do
      if e.owner and OWNABLE[e.desc] and not seen[e.owner] then
        seen[e.owner] = true
        if not conn:value("SELECT 1 FROM pg_roles WHERE rolname = $1", e.owner) then missing[#missing + 1] = e.owner end
      end
    end
    if #missing > 0 then
      sys.error("the archive's objects belong to roles that do not exist on the target server: " .. table.concat(missing, ", ") ..
        "\ncreate them first, or restore with --no-owner (objects then belong to the restoring user); nothing was restored", 1)
    end
  end
  local done, rows_loaded, total = 0, 0, 0
  for _, e in ipairs(entries) do if not SPECIAL[e.desc] and want(e) then total = total + 1 end end
  local cur_section = 2
  for pass = 1, 3 do
    for _, e in ipairs(entries) do
      if e.section ~= "none" then cur_section = e.section end
      if not SPECIAL[e.desc] and pass_of(e) == pass and want(e) then
        local where = string.format("entry %d (%s %s%s)", e.id, e.desc, e.namespace and (e.namespace .. ".") or "", e.tag)
        local ok, err = pcall(function()
          if e.desc == "TABLE DATA" then
            if e.copy then
              a:copy_into(conn, e.id, e.copy)
            else
              -- data as SQL statements (pg_dump --inserts)
              local parts = {}
              a:read_block(e.id, function(chunk) parts[#parts + 1] = chunk end)
              conn:exec(table.concat(parts))
            end
          elseif e.defn and e.defn ~= "" and not e.defn:match("^%-%- load via partition root") then
            conn:exec(e.defn)
            if not opts.no_owner and e.owner and OWNABLE[e.desc] and e.drop and e.drop ~= "" then
              local obj = e.drop:match("^DROP%s+(.-);?%s*$")
              if obj then
                local kind = OWNABLE[e.desc]
                local name = obj:sub(#kind + 2)
                if kind == "VIEW" or kind == "SEQUENCE" or kind == "MATERIALIZED VIEW" then kind = "TABLE" end
                conn:exec(string.format("ALTER %s %s OWNER TO %s", kind, name, conn:quote_ident(e.owner)))
              end
            end
          end
        end)
        if not ok then
          if type(err) == "table" then err.where = "restoring " .. where .. " of the archive"; err.restored = done
          else err = string.format("restoring %s failed: %s", where, tostring(err)) end
          error(err, 0)
        end
        done = done + 1
        if opts.on_progress then opts.on_progress { index = done, total = total, entry = e } end
      end
    end
  end
  return { entries = done }
end

-- After a streamed restore: does the file match its manifest? The reader
-- hashed what it read; if it skipped parts (filters), hash the file now.
local function check_sha(a, path, expect)
  if not expect then return true end
  local sum = a:sha256() or sys.sha256_file(path)
  if sum == expect then return true end
  return false, string.format("the archive %s is damaged: its SHA-256 %s does not match the manifest's %s", path, sum, expect)
end

-- Does the database hold user objects?
local function has_objects(conn)
  return conn:value([[SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'
      AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')]]) > 0
    or conn:value([[SELECT count(*) FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname NOT IN ('information_schema', 'public')]]) > 0
end

--- Restore an archive. opts: archive (path or "-"), db (target URL /
-- conninfo; nil = libpq defaults), mode ("empty"|"drop-existing"|"swap"),
-- single_transaction, schemas, tables, no_owner, skip_manifest_check,
-- on_progress. Returns { mode, entries, target, old_database (swap) }.
function R.run(opts)
  local path = opts.archive
  local mode = opts.mode or "empty"
  local proven = false     -- the manifest's SHA-256 matched: the file is exactly what was written
  local expect_sha         -- checked after the streamed restore instead (the reader hashes as it reads)
  if path ~= "-" then
    if not sys.exists(path) then sys.error("no archive " .. path, 1) end
    if not opts.skip_manifest_check then
      local m = backup.read_manifest(path)
      if not m then
        -- stock pg_dump archives have no manifest; an orch archive without one is an incomplete backup
        local probe <close> = pgarchive.open(path)
        if (probe:header().dumper_version or ""):match("^orch ") then
          sys.error(string.format("refusing to restore %s: it has no manifest (%s), so it is an incomplete or damaged orch backup; " ..
            "the target was not touched (use --no-manifest to restore it anyway)", path, backup.manifest_path(path)), 1)
        end
      end
      if m and mode == "drop-existing" then
        -- destructive: prove the file before dropping anything
        local sum = sys.sha256_file(path)
        if sum ~= m.sha256 then
          sys.error(string.format("refusing to restore %s: its SHA-256 %s does not match the manifest's %s (the file is damaged); the target was not touched",
            path, sum, tostring(m.sha256)), 1)
        end
        proven = true
      elseif m then
        expect_sha = m.sha256 or "missing"
        proven = true      -- checked at the end, before anything is made final
      end
    end
  end
  local a <close> = pgarchive.open(path)
  -- --drop-existing destroys before it restores, so a damaged archive must fail first: without a
  -- matching manifest, inflate every block up front. Every other mode can undo a failed restore
  -- (rollback, drop the new database, empty the target again), so it reads the file once.
  if path ~= "-" and not proven and mode == "drop-existing" then
    local ok, err = pcall(a.verify, a)
    if not ok then sys.error(tostring(err) .. "\nthe target was not touched", 1) end
  end
  local c <close> = db.connect(opts.db)
  local info = c:info()
  if mode == "swap" then
    local stamp = os.date("!%Y%m%d%H%M%S")
    local newname = (info.dbname .. "_orch_restore_" .. stamp):sub(1, 63)
    local oldname = (info.dbname .. "_orch_old_" .. stamp):sub(1, 63)
    c:exec("CREATE DATABASE " .. c:quote_ident(newname) .. " TEMPLATE template0")
    local target_conninfo = { host = info.host, port = info.port, user = info.user, dbname = newname }
    local nc = db.connect(target_conninfo)
    local ok, err = pcall(function()
      if opts.single_transaction then nc:exec("BEGIN") end
      local r = apply(nc, a, opts)
      local good, why = check_sha(a, path, expect_sha)
      if not good then error(why, 0) end
      if opts.single_transaction then nc:exec("COMMIT") end
      return r
    end)
    nc:close()
    if not ok then
      pcall(c.exec, c, "DROP DATABASE IF EXISTS " .. c:quote_ident(newname))
      if type(err) == "table" then err.where = (err.where or "") .. "; the target database " .. info.dbname .. " was not touched (the partial copy was dropped)" end
      error(err, 0)
    end
    -- swap: from the maintenance database, with the target's sessions ended
    local admin <close> = db.connect { host = info.host, port = info.port, user = info.user, dbname = "postgres" }
    c:close()
    admin:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", info.dbname)
    admin:exec(string.format("ALTER DATABASE %s RENAME TO %s", admin:quote_ident(info.dbname), admin:quote_ident(oldname)))
    local okr, rerr = pcall(admin.exec, admin, string.format("ALTER DATABASE %s RENAME TO %s", admin:quote_ident(newname), admin:quote_ident(info.dbname)))
    if not okr then
      admin:exec(string.format("ALTER DATABASE %s RENAME TO %s", admin:quote_ident(oldname), admin:quote_ident(info.dbname)))
      error(rerr, 0)
    end
    return { mode = mode, target = info.dbname, old_database = oldname, entries = "all" }
  end
  if mode == "empty" and has_objects(c) then
    sys.error(string.format("the target database %s is not empty: restore into an empty database, use --swap (restore beside it and " ..
      "swap by rename), or --drop-existing to replace its contents; nothing was restored", info.dbname), 1)
  end
  local ok, res = pcall(function()
    if opts.single_transaction then c:exec("BEGIN") end
    if mode == "drop-existing" then
      for _, s in ipairs(c:query([[SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema']])) do
        c:exec("DROP SCHEMA " .. c:quote_ident(s.nspname) .. " CASCADE")
      end
      c:exec("CREATE SCHEMA public")
    end
    local r = apply(c, a, opts)
    local good, why = check_sha(a, path, expect_sha)
    if not good then
      if not opts.single_transaction then
        -- the target was empty before: make it empty again
        for _, s in ipairs(c:query([[SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema']])) do
          c:exec("DROP SCHEMA " .. c:quote_ident(s.nspname) .. " CASCADE")
        end
        c:exec("CREATE SCHEMA public")
        why = why .. "; everything restored from it was dropped again: the target is empty, as it was"
      end
      error(why, 0)
    end
    if opts.single_transaction then c:exec("COMMIT") end
    return r
  end)
  if not ok then
    if opts.single_transaction then
      pcall(c.exec, c, "ROLLBACK")
      if type(res) == "table" then res.where = (res.where or "") .. "; rolled back: the target is as it was" end
    elseif mode == "empty" and not c:is_closed() and type(res) == "table" then
      -- the target was empty before: make it empty again
      local cleaned = pcall(function()
        for _, s in ipairs(c:query([[SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema']])) do
          c:exec("DROP SCHEMA " .. c:quote_ident(s.nspname) .. " CASCADE")
        end
        c:exec("CREATE SCHEMA public")
      end)
      res.where = (res.where or "") .. (cleaned and "; what was restored was dropped again: the target is empty, as it was"
        or string.format("; the target %s is PARTLY RESTORED and could not be cleaned: drop it and restore again", info.dbname))
    elseif type(res) == "table" then
      res.where = (res.where or "") .. string.format("; the target %s is PARTLY RESTORED (%s entries ran): drop it and restore again, or use --single-transaction or --swap",
        info.dbname, tostring(res.restored or "some"))
    end
    error(res, 0)
  end
  res.mode, res.target = mode, info.dbname
  return res
end

--- Row counts of every table in a database (for deep verification).
function R.row_counts(conn)
  local out = {}
  for _, t in ipairs(conn:query([[SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast']])) do
    out[t.nspname .. "." .. t.relname] = conn:value(string.format("SELECT count(*) FROM %s.%s", conn:quote_ident(t.nspname), conn:quote_ident(t.relname)))
  end
  return out
end

--- Restore into a scratch database next to conn's and count rows (for
-- backup.verify{deep=}). The scratch database is always dropped.
function R.deep_check(conn, path)
  local info = conn:info()
  local scratch = ("orch_verify_" .. sys.getpid() .. "_" .. math.floor(sys.now())):sub(1, 63)
  conn:exec("CREATE DATABASE " .. conn:quote_ident(scratch) .. " TEMPLATE template0")
  local ok, counts = pcall(function()
    R.run { archive = path, db = { host = info.host, port = info.port, user = info.user, dbname = scratch }, no_owner = true,
            skip_manifest_check = true }
    local sc <close> = db.connect { host = info.host, port = info.port, user = info.user, dbname = scratch }
    return R.row_counts(sc)
  end)
  conn:exec("DROP DATABASE IF EXISTS " .. conn:quote_ident(scratch) .. " WITH (FORCE)")
  if not ok then error(counts, 0) end
  return counts
end

return R
