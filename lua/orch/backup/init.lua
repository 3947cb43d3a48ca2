--- orch.backup: backups as pg_dump custom archives with a manifest beside
-- each one. A backup is complete when its manifest exists: the archive is
-- written under a hidden temporary name, fsynced, checksummed and renamed,
-- and only then is the manifest written (atomically). Files are mode 0600.
--
--   local b = backup.create(conn, { dir = "backups/prod", run_id = id })
--   backup.verify(b.path)             -- structure, every block, SHA-256
--   backup.list("backups/prod"); backup.retain("backups/prod", { keep = 14 })
local sys = require "orch.sys"
local log = require "orch.log"
local json = require "orch.json"
local catalog = require "orch.backup.catalog"
local pgarchive = require "orch.pgarchive"
local manifest_m = require "orch.backup.manifest"
local retention = require "orch.backup.retention"

local B = {}

local function fail(msg) sys.error(msg, 1) end

B.manifest_path = manifest_m.path
B.read_manifest = manifest_m.read
B.list, B.retain, B.run_ids, B.retain_runs = retention.list, retention.retain, retention.run_ids, retention.retain_runs

-- Remove temporary files of backups that died (their process is gone).
function B.clean_leftovers(dir)
  local removed = {}
  for _, f in ipairs(sys.listdir(dir) or {}) do
    local pid = f:match("^%..+%.partial%-(%d+)$")
    if pid and (tonumber(pid) ~= sys.getpid()) and not sys.kill(tonumber(pid), 0) then
      sys.unlink(dir .. "/" .. f)
      removed[#removed + 1] = f
    end
  end
  if #removed > 0 then log.info("removed %d leftover temporary file(s) of interrupted backups in %s", #removed, dir) end
  return removed
end

local function latest_migration(conn)
  if not conn:value("SELECT to_regclass('public.orch_schema_history') IS NOT NULL") then return nil end
  local r = conn:query([[SELECT version, script FROM public.orch_schema_history WHERE success AND version IS NOT NULL
    AND type NOT LIKE 'UNDO%' ORDER BY installed_rank DESC LIMIT 1]])[1]
  return r and { version = r.version, script = r.script } or nil
end

-- Take ACCESS SHARE locks on every table, naming the blocker on timeout.
local function lock_tables(conn, tables, timeout)
  conn:query("SELECT set_config('lock_timeout', $1, true)", timeout)
  for _, t in ipairs(tables) do
    local ok, err = pcall(conn.exec, conn, "LOCK TABLE " .. t.name .. " IN ACCESS SHARE MODE")
    if not ok then
      if type(err) == "table" and err.sqlstate == "55P03" then
        pcall(conn.exec, conn, "ROLLBACK")
        local h = conn:query([[SELECT a.pid, l.mode, a.application_name, a.usename, a.xact_start::text AS since, left(a.query, 120) AS query
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.relation = $1::regclass AND l.granted AND l.mode = 'AccessExclusiveLock']], t.name)[1]
        fail(string.format("could not lock table %s for the backup within %s: %s; the backup was not taken. " ..
          "Wait for that session, or stop it with SELECT pg_terminate_backend(%s).", t.ns .. "." .. t.tag, timeout,
          h and string.format("pid %d holds %s (application %q, user %s, in a transaction since %s, running: %s)",
            h.pid, h.mode, h.application_name, h.usename, h.since or "?", h.query) or "another session holds a conflicting lock",
          h and tostring(h.pid) or "pid"))
      end
      error(err, 0)
    end
  end
end

--- Take a backup of the database conn is connected to.
-- opts: dir (backups directory; default backups/<env or default>), output
-- (a file path, or "-" for stdout: then no manifest), compression ("gzip"
-- default, "none", "lz4", "zstd": the last two make a 1.15 archive) and level
-- (-1 = the algorithm's default; without compression, 0 means none),
-- threads, env, run_id, skip (kinds to leave out), lock_timeout ("10s"),
-- on_progress(ev), no_owner. Returns the manifest (plus .path).
function B.create(conn, opts)
  opts = opts or {}
  local started = sys.now()
  local info = conn:info()
  local to_stdout = opts.output == "-"
  local dir, final, tmp, candidates
  if to_stdout then
    tmp = "-"
  else
    if opts.output then
      final = opts.output
      dir = final:match("^(.*)/[^/]*$") or "."
    else
      dir = opts.dir or ("backups/" .. (opts.env or "default"))
      local stamp = os.date("!%Y%m%dT%H%M%SZ", math.floor(started))
      local rid = opts.run_id and opts.run_id:gsub("[^%w_-]", "")
      -- a recipe's run id starts with its own time stamp: <db>-<run id>.dump, not the time twice
      local base = rid and rid:sub(1, #stamp - 2) == stamp:sub(1, #stamp - 2) and string.format("%s/%s-%s", dir, info.dbname, rid)
        or string.format("%s/%s-%s%s", dir, info.dbname, stamp, rid and ("-" .. rid) or "")
      -- two backups in the same second (a safety backup right after another, two runs at once)
      -- get -2, -3, ...: the name is reserved atomically when the archive is linked into place
      candidates = function(n) return n == 1 and (base .. ".dump") or string.format("%s-%d.dump", base, n) end
      final = candidates(1)
    end
    local ok, err = sys.mkdir_p(dir, 448)
    if not ok then fail(string.format("cannot create the backup directory %s: %s", dir, err)) end
    local st = sys.stat(dir)
    if not st or st.type ~= "directory" then fail("backup directory " .. dir .. " is not a directory") end
    B.clean_leftovers(dir)
    if not candidates and sys.exists(final) then fail("refusing to overwrite the existing backup " .. final) end
    tmp = string.format("%s/.%s.partial-%d", dir, final:match("([^/]*)$"), sys.getpid())
  end
  local w
  local ok, result = pcall(function()
    conn:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    require("orch.backup.session").backup(conn)
    -- the zone timestamptz values are written in, for verify --deep to read them back the same way
    local timezone = conn:value("SELECT pg_catalog.current_setting('TimeZone')")
    local toc = catalog.build(conn, { skip = opts.skip, no_owner = opts.no_owner })
    lock_tables(conn, toc.tables, opts.lock_timeout or "10s")
    local migration = latest_migration(conn)
    -- where this backup stands: its snapshot (and the server's write counters), so that a
    -- restore can first measure what was written since (orch.backup.writes)
    local since = require("orch.backup.writes").markers(conn)
    w = pgarchive.writer(tmp, { compression = opts.compression, level = opts.level or -1, threads = opts.threads or 2, dbname = toc.dbname,
      server_version = toc.server_version, dumper_version = "orch " .. package.orch_version })
    for _, e in ipairs(toc.entries) do w:entry(e) end
    w:write_toc()
    local counts, partial, total_rows = {}, {}, 0
    -- an estimate of the work, for rate and ETA: the tables' size on disk
    local est = 0
    if opts.on_progress then
      for _, t in ipairs(toc.tables) do t.size = conn:value("SELECT pg_table_size($1::regclass)", t.oid) or 0; est = est + t.size end
    end
    local done_est = 0
    for i, t in ipairs(toc.tables) do
      local report
      if opts.on_progress then
        opts.on_progress { event = "table", index = i, total = #toc.tables, table = t.ns .. "." .. t.tag, bytes_in = w:progress() and select(2, w:progress()), estimate = est, done_estimate = done_est }
        report = function(rows, bytes_in, bytes_out)
          opts.on_progress { event = "data", index = i, total = #toc.tables, table = t.ns .. "." .. t.tag, rows = rows, bytes_in = bytes_in,
            bytes_out = bytes_out, estimate = est, done_estimate = done_est }
        end
      end
      local rows = w:copy_table(conn, t.id, t.copy_out, report)
      done_est = done_est + (t.size or 0)
      -- an extension's configuration table is written filtered (the rows its script does not make):
      -- a restore holds more rows than were written, so its count is kept apart from the tables'
      -- (verify --deep reads the restored table through the same filter)
      if t.filter then partial[t.ns .. "." .. t.tag] = { rows = rows, filter = t.filter } else counts[t.ns .. "." .. t.tag] = rows end
      total_rows = total_rows + rows
    end
    -- large objects: one BLOBS block, each object streamed in pieces (memory stays bounded)
    local los, lo_bytes = 0, 0
    for _, b in ipairs(toc.blobs or {}) do
      local report
      if opts.on_progress then
        report = function(n, bytes_in, bytes_out)
          opts.on_progress { event = "data", index = #toc.tables + 1, total = #toc.tables, table = "large objects", rows = n,
            bytes_in = bytes_in, bytes_out = bytes_out, estimate = est, done_estimate = done_est }
        end
      end
      local n, bytes = w:copy_blobs(conn, b.id, b.oids, report)
      los, lo_bytes = los + n, lo_bytes + bytes
    end
    local winfo = w:close()
    w = nil
    conn:exec("COMMIT")
    return { toc = toc, counts = counts, partial = partial, rows = total_rows, winfo = winfo, migration = migration, since = since, timezone = timezone,
             large_objects = los, large_object_bytes = lo_bytes }
  end)
  if not ok then
    if w then pcall(w.close, w) end
    if not conn:is_closed() and conn:info().in_transaction then pcall(conn.exec, conn, "ROLLBACK") end
    if tmp ~= "-" then sys.unlink(tmp) end
    if type(result) == "string" and result:match("writing the archive failed") then
      -- a full disk (or a file size limit): name the file, not a position in orch's source
      local why = result:gsub("^orch/[%w_/]+%.lua:%d+: ", ""):gsub("^writing the archive failed: ", "")
      if tmp == "-" then fail("the backup could not be written to standard output: " .. why) end
      local fs = sys.statvfs and sys.statvfs(dir)
      fail(string.format("the backup could not be written to %s (to become %s): %s; the partial file was removed and no backup was kept. " ..
        "Free space in %s%s, or choose another directory with --dir, and run again", tmp, final, why, dir,
        type(fs) == "table" and fs.free and string.format(" (%.1f MiB free now)", fs.free / 1048576) or ""))
    end
    error(result, 0)
  end
  local manifest = {
    format = "orch-backup/1", file = final and final:match("([^/]*)$"), size = result.winfo.bytes,
    database = info.dbname, host = info.host, port = info.port, server_version = result.toc.server_version,
    latest_migration = result.migration or json.null, orch_version = package.orch_version,
    started_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started)), finished_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    duration_ms = math.floor((sys.now() - started) * 1000), run_id = opts.run_id or json.null, env = opts.env or json.null,
    compression = result.winfo.compression, compression_level = opts.level or -1, archive_version = result.winfo.version,
    entries = #result.toc.entries, rows = result.rows,
    tables = json.object(result.counts), extension_rows = json.object(result.partial), uncompressed_bytes = result.winfo.uncompressed, since = result.since,
    -- what --skip left out, by kind: a restore of this backup does not have these
    skipped = result.toc.skipped or {},
    timezone = result.timezone,
    large_objects = result.large_objects, large_object_bytes = result.large_object_bytes,
  }
  if to_stdout then return manifest end
  local sum = sys.sha256_file(tmp)
  manifest.sha256 = sum
  -- into place without ever replacing a file: link() fails on a name that exists, so a
  -- backup finishing at the same moment under the same name takes the next one
  for n = 1, 1000 do
    local cand = candidates and candidates(n) or final
    if not (candidates and sys.exists(B.manifest_path(cand))) then
      local okl, lerr, errno = sys.link(tmp, cand)
      if okl then final = cand break end
      if sys.exists(cand) then
        -- taken: by another backup of the same second, or (an explicit --output) an existing file
        if not candidates then sys.unlink(tmp); fail("refusing to overwrite the existing backup " .. final .. "; the new one was not kept") end
      elseif errno == 1 or errno == 95 then
        -- a file system without hard links: rename after the check (not atomic there)
        local okr, rerr = sys.rename(tmp, cand)
        if not okr then sys.unlink(tmp); fail("cannot move the finished backup into place: " .. rerr) end
        final = cand
        break
      else
        sys.unlink(tmp); fail("cannot move the finished backup into place: " .. lerr)
      end
    end
    if n == 1000 or not candidates then sys.unlink(tmp); fail("no free backup name next to " .. final) end
  end
  sys.unlink(tmp)
  manifest.file = final:match("([^/]*)$")
  sys.chmod(final, 384)
  local okm, merr = manifest_m.write(final, manifest)
  if not okm then fail("the archive " .. final .. " was written but its manifest could not be: " .. merr .. " (the backup counts as incomplete)") end
  manifest.path = final
  return manifest
end


--- Verify a backup: the manifest exists and its SHA-256 matches, the archive
-- parses and every data block inflates. opts.deep = a function(path) that
-- restores into a scratch database and returns per-table row counts and
-- content checks (restore.deep_check): both must match. Records the result in the manifest.
-- Raises with a clear message when anything is wrong.
function B.verify(path, opts)
  opts = opts or {}
  local st = sys.stat(path)
  if not st then fail("no backup file " .. path) end
  local m, merr = manifest_m.read(path)
  if not m and not opts.no_manifest then
    fail(merr or string.format("backup %s has no manifest (%s): it is incomplete or not an orch backup; " ..
      "use --no-manifest to check only the archive itself", path, B.manifest_path(path)))
  end
  if m then
    local sum, size = sys.sha256_file(path)
    if sum ~= m.sha256 then
      fail(string.format("backup %s is damaged: its SHA-256 is %s, the manifest says %s", path, sum, tostring(m.sha256)))
    end
    if size ~= m.size then fail(string.format("backup %s is %d bytes, the manifest says %d", path, size, m.size)) end
  end
  local r <close> = pgarchive.open(path)
  local v = r:verify()
  -- proven: the manifest's SHA-256 matched, or every stream carries a checksum that did (zlib's
  -- Adler-32, lz4/zstd content checksums); an uncompressed archive, or lz4/zstd frames written without
  -- checksums (pg_dump 16/17's), parse without a manifest, but a damaged byte could go unnoticed
  local compression = r:header().compression
  local result = { path = path, blocks = v.blocks, bytes = v.bytes, sha256 = m and m.sha256, manifest = m ~= nil,
    compression = compression, proven = m ~= nil or v.unchecked_streams == 0, unchecked_streams = v.unchecked_streams,
    large_objects = v.large_objects }
  if opts.deep then
    local counts, checks = opts.deep(path)
    local bad = {}
    for t, n in pairs(m and m.tables or {}) do
      if counts[t] ~= n then bad[#bad + 1] = string.format("%s: %s rows restored, %d in the manifest", t, tostring(counts[t]), n) end
    end
    -- the restored rows, read back under the backup's output settings, are the archive's text byte for byte
    local names = {}
    for t in pairs(checks or {}) do names[#names + 1] = t end
    table.sort(names)
    for _, t in ipairs(names) do
      local c = checks[t]
      if c.archive ~= c.restored then
        bad[#bad + 1] = string.format("%s: the restored rows differ from the archive's (CRC-32/bytes %s restored, %s in the archive)",
          t, c.restored, c.archive)
      end
    end
    result.tables_compared = #names - ((checks or {})["large objects"] and 1 or 0)
    result.large_objects_compared = (checks or {})["large objects"] ~= nil
    if #bad > 0 then fail("deep verification of " .. path .. " failed:\n  " .. table.concat(bad, "\n  ")) end
    result.deep = true
  end
  if m then
    m.verified_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
    m.verified_deep = result.deep or false
    manifest_m.write(path, m)
  end
  return result
end

return B
