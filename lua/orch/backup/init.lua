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
local storage = require "orch.storage"

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

-- Who keeps table t (regclass text) from being locked: the session holding
-- AccessExclusiveLock on it, else one waiting for it (queued behind the
-- backup's own lock, it makes a later ACCESS SHARE request wait too).
local function blocker(conn, relation)
  return conn:query([[SELECT a.pid, l.mode, l.granted, a.application_name, a.usename, a.xact_start::text AS since, left(a.query, 120) AS query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.relation = $1::regclass AND l.mode = 'AccessExclusiveLock' AND a.pid <> pg_backend_pid()
    ORDER BY l.granted DESC, a.pid LIMIT 1]], relation)[1]
end

local function lock_failure(t, timeout, h, worker)
  fail(string.format("could not lock table %s for the backup%s within %s: %s; the backup was not taken. " ..
    "Wait for that session, or stop it with SELECT pg_terminate_backend(%s).", t.ns .. "." .. t.tag,
    worker and string.format(" (on its connection %d)", worker) or "", timeout,
    h and string.format("pid %d %s %s (application %q, user %s, in a transaction since %s, running: %s)",
      h.pid, h.granted and "holds" or "is waiting for", h.mode, h.application_name, h.usename, h.since or "?", h.query) ..
      (h and not h.granted and ", queued behind this backup's own lock" or "") or "another session holds a conflicting lock",
    h and tostring(h.pid) or "pid"))
end

-- Take ACCESS SHARE locks on every table, naming the blocker on timeout.
local function lock_tables(conn, tables, timeout)
  conn:query("SELECT set_config('lock_timeout', $1, true)", timeout)
  for _, t in ipairs(tables) do
    local ok, err = pcall(conn.exec, conn, "LOCK TABLE " .. t.name .. " IN ACCESS SHARE MODE")
    if not ok then
      if type(err) == "table" and err.sqlstate == "55P03" then
        pcall(conn.exec, conn, "ROLLBACK")
        lock_failure(t, timeout, blocker(conn, t.name))
      end
      error(err, 0)
    end
  end
end

-- Connections 2..n of a parallel backup: each a clone of conn (every
-- connection parameter, the password included) in a REPEATABLE READ
-- transaction on conn's exported snapshot, with the same pinned output
-- settings and TimeZone, so that every table is read as of one moment.
-- Each worker takes its own ACCESS SHARE lock before it dumps a table
-- (waiting at most lock_timeout: a session queued for an exclusive lock
-- behind the leader's would make it wait for ever).
local function open_workers(conn, n, timezone, lock_timeout, into)
  local snapshot = conn:value("SELECT pg_catalog.pg_export_snapshot()")
  for i = 2, n do
    local wc = conn:clone { application_name = "orch backup worker " .. i }
    into[#into + 1] = wc
    wc:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    wc:exec("SET TRANSACTION SNAPSHOT " .. wc:quote_literal(snapshot))
    require("orch.backup.session").backup(wc)
    wc:query("SELECT pg_catalog.set_config('TimeZone', $1, true)", timezone)
    wc:query("SELECT pg_catalog.set_config('lock_timeout', $1, true)", lock_timeout)
  end
end

-- The data jobs of a backup, in TOC order: one per table (its COPY, and the
-- LOCK a worker takes first) and one per BLOBS entry. size (bytes on disk)
-- and tuples (the planner's row estimate) make the progress estimate.
local function data_jobs(conn, toc)
  local oids = {}
  for _, t in ipairs(toc.tables) do oids[#oids + 1] = tostring(math.tointeger(t.oid) or t.oid) end
  local est = {}
  if #oids > 0 then
    for _, r in ipairs(conn:query([[SELECT c.oid::int8 AS oid, pg_catalog.pg_table_size(c.oid) AS size, c.reltuples::float8 AS tuples
        FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::oid[])]], "{" .. table.concat(oids, ",") .. "}")) do
      est[math.tointeger(r.oid)] = r
    end
  end
  local jobs = {}
  for i, t in ipairs(toc.tables) do
    local e = est[math.tointeger(t.oid)] or {}
    jobs[#jobs + 1] = { id = t.id, copy = t.copy_out, lock = "LOCK TABLE " .. t.name .. " IN ACCESS SHARE MODE",
      size = e.size or 0, tuples = e.tuples or -1, table = t, name = t.ns .. "." .. t.tag, toc_index = i }
  end
  for i, b in ipairs(toc.blobs or {}) do
    local list = b.oids
    if type(list) == "function" then
      list = {}
      for oid in b.oids do list[#list + 1] = oid end
    end
    local size = #list > 0 and conn:value("SELECT pg_catalog.pg_table_size('pg_catalog.pg_largeobject')") or 0
    jobs[#jobs + 1] = { id = b.id, blobs = list, size = size, tuples = #list, name = "large objects", toc_index = #toc.tables + i }
  end
  return jobs
end

--- Take a backup of the database conn is connected to.
-- opts: dir (backups directory; default backups/<env or default>), output
-- (a file path, or "-" for stdout: then no manifest), compression ("gzip"
-- default, "none", "lz4", "zstd": the last two make a 1.15 archive) and level
-- (-1 = the algorithm's default; without compression, 0 means none),
-- threads (compression threads, shared out between the connections), jobs
-- (connections dumping tables at once, on one snapshot: largest tables
-- first; to a stream the blocks go out in TOC order), env, run_id, skip
-- (kinds to leave out), lock_timeout ("10s"), on_progress(ev) (ev.fraction
-- of the estimated work done, bytes_in/out, rows, done/total blocks, the
-- tables being dumped), no_owner, selection (orch.backup.select.from_opts:
-- a partial backup, its manifest's partial says what it holds). Returns the
-- manifest (plus .path).
function B.create(conn, opts)
  opts = opts or {}
  local started = sys.now()
  local info = conn:info()
  local to_stdout = opts.output == "-"
  local dir, final, tmp, candidates, remote
  if to_stdout then
    tmp = "-"
  elseif storage.is_remote(opts.output or opts.dir) then
    if opts.output then
      local name
      remote, name = storage.split(opts.output)
      final = name:match("([^/]*)$")
    else
      remote = require("orch.storage.s3").open(opts.dir)
      local stamp = os.date("!%Y%m%dT%H%M%SZ", math.floor(started))
      local rid = opts.run_id and opts.run_id:gsub("[^%w_-]", "")
      local base = rid and rid:sub(1, #stamp - 2) == stamp:sub(1, #stamp - 2) and string.format("%s-%s", info.dbname, rid)
        or string.format("%s-%s%s", info.dbname, stamp, rid and ("-" .. rid) or "")
      candidates = function(n) return n == 1 and (base .. ".dump") or string.format("%s-%d.dump", base, n) end
    end
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
  local upload
  -- whatever ends this function by an error (also a Ctrl-C that lands as pcall below returns, which
  -- no pcall catches) aborts the upload: no object is left. abort() after finish() does nothing.
  local _ <close> = setmetatable({}, { __close = function(_, err) if err ~= nil and upload then upload.abort() end end })
  if remote then
    -- S3: the archive streams into a multipart upload while it is written (nothing on local disk);
    -- the name is the first free one (HEAD of the archive and of its manifest)
    for n = 1, 1000 do
      local name = candidates and candidates(n):match("([^/]*)$") or final
      if not (remote.head(remote.key(name)) or remote.head(remote.key(storage.manifest_name(name)))) then final = name break end
      if not candidates then fail("refusing to overwrite the existing backup " .. remote.url_of(remote.key(name))) end
      if n == 1000 then fail("no free backup name in " .. remote.url) end
    end
    upload = remote.upload(remote.key(final))
    tmp = upload.path()
  end
  local w
  local workers = {}
  local ok, result = pcall(function()
    conn:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    require("orch.backup.session").backup(conn)
    -- the zone timestamptz values are written in, for verify --deep to read them back the same way
    local timezone = conn:value("SELECT pg_catalog.current_setting('TimeZone')")
    local toc = catalog.build(conn, { skip = opts.skip, no_owner = opts.no_owner, selection = opts.selection,
      no_acl = opts.selection and opts.selection.no_privileges or nil })
    local lock_timeout = opts.lock_timeout or "10s"
    lock_tables(conn, toc.tables, lock_timeout)
    local migration = latest_migration(conn)
    -- where this backup stands: its snapshot (and the server's write counters), so that a
    -- restore can first measure what was written since (orch.backup.writes)
    local since = require("orch.backup.writes").markers(conn)
    local jobs = data_jobs(conn, toc)
    -- as many connections as asked, but not more than there are blocks to write
    local n = math.max(1, math.min(math.tointeger(opts.jobs) or 1, #jobs))
    -- several connections take the largest tables first (one keeps the TOC order)
    if n > 1 then table.sort(jobs, function(a, b) if a.size ~= b.size then return a.size > b.size end return a.toc_index < b.toc_index end) end
    if n > 1 then open_workers(conn, n, timezone, lock_timeout, workers) end
    -- the compression threads are shared out between the connections
    local threads = math.max(1, math.floor((opts.threads or 2) / n + 0.5))
    w = pgarchive.writer(tmp, { overwrite = remote ~= nil, compression = opts.compression, level = opts.level or -1, threads = threads, dbname = toc.dbname,
      server_version = toc.server_version, dumper_version = "orch " .. package.orch_version })
    for _, e in ipairs(toc.entries) do w:entry(e) end
    w:write_toc()
    local est, by_id = 0, {}
    for _, j in ipairs(jobs) do est = est + j.size; by_id[j.id] = j end
    local report
    if opts.on_progress then
      report = function(p)
        -- the share of the estimate behind us, within tables too: rows against the planner's
        -- estimate, else text bytes against the size on disk
        local done = 0
        for _, id in ipairs(p.finished) do by_id[id].finished = true end
        for _, j in ipairs(jobs) do j.running = nil end
        for _, r in ipairs(p.running) do
          local j = by_id[r.id]
          j.running = j.tuples > 0 and math.min(r.rows / j.tuples, 1) or (j.size > 0 and math.min(r.bytes_in / j.size, 1) or 0)
          j.rows_now = r.rows
        end
        local names = {}
        for _, j in ipairs(jobs) do
          if j.finished then done = done + j.size
          elseif j.running then done = done + j.size * j.running; names[#names + 1] = j.name end
        end
        opts.on_progress { event = "data", done = p.done, total = p.total, rows = p.rows, bytes_in = p.bytes_in, bytes_out = p.bytes_out,
          fraction = est > 0 and done / est or (p.total > 0 and p.done / p.total or 0), tables = names }
      end
    end
    local conns = { conn }
    for _, wc in ipairs(workers) do conns[#conns + 1] = wc end
    local okp, res = pcall(w.copy_parallel, w, conns, jobs, { threads = threads, progress = report,
      spool_dir = to_stdout and (os.getenv("TMPDIR") or "/tmp") or dir,
      -- a stream holds back at most this much of the blocks that are not next (temporary files)
      spool_limit = opts.spool_limit or 64 * 1048576 })
    if not okp then
      if type(res) == "table" and res.sqlstate == "55P03" and res.entry and by_id[res.entry] and by_id[res.entry].table then
        lock_failure(by_id[res.entry].table, lock_timeout, blocker(conn, by_id[res.entry].table.name), res.worker)
      end
      error(res, 0)
    end
    local counts, partial, total_rows, los, lo_bytes = {}, {}, 0, 0, 0
    for _, j in ipairs(jobs) do
      local r = res[j.id]
      if j.table then
        -- an extension's configuration table is written filtered (the rows its script does not make):
        -- a restore holds more rows than were written, so its count is kept apart from the tables'
        -- (verify --deep reads the restored table through the same filter)
        if j.table.filter then partial[j.name] = { rows = r.rows, filter = j.table.filter } else counts[j.name] = r.rows end
        total_rows = total_rows + r.rows
      else
        los, lo_bytes = los + r.rows, lo_bytes + r.bytes
      end
    end
    local winfo = w:close()
    w = nil
    conn:exec("COMMIT")
    for _, wc in ipairs(workers) do pcall(wc.exec, wc, "COMMIT"); wc:close() end
    return { toc = toc, counts = counts, partial = partial, rows = total_rows, winfo = winfo, migration = migration, since = since, timezone = timezone,
             large_objects = los, large_object_bytes = lo_bytes, jobs = n, streaming = to_stdout }
  end)
  if not ok then
    if w then pcall(w.close, w) end
    for _, wc in ipairs(workers) do pcall(wc.close, wc) end
    if not conn:is_closed() and conn:info().in_transaction then pcall(conn.exec, conn, "ROLLBACK") end
    if remote then
      -- the upload is aborted (its parts removed): no object is left. When the upload failed on
      -- its own (the writer then saw its pipe close), that failure is what to report.
      local why = upload.abort()
      if why and not (type(result) == "table" and result.interrupted) then
        fail(why .. "; the backup was stopped and its multipart upload aborted" ..
          (upload.parts_removed and "" or " (the parts could not be removed: see the warning above)") .. ": no object was left in " .. remote.url)
      end
      error(result, 0)
    end
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
    -- gzip streams written in independent pieces of this many bytes: a restore inflates them piece by piece
    deflate_pieces = result.winfo.deflate_pieces,
    entries = #result.toc.entries, rows = result.rows,
    tables = json.object(result.counts), extension_rows = json.object(result.partial), uncompressed_bytes = result.winfo.uncompressed, since = result.since,
    -- what --skip left out, by kind: a restore of this backup does not have these
    skipped = result.toc.skipped or {},
    -- a backup of part of the database (-n, -t, -s, -a, -x, ...): what was selected. The recipes and
    -- recipes/restore.lua never restore it as the whole database; retention counts it apart
    partial = result.toc.selection and require("orch.backup.select").describe(result.toc.selection) or nil,
    timezone = result.timezone,
    large_objects = result.large_objects, large_object_bytes = result.large_object_bytes,
    jobs = result.jobs,
  }
  if to_stdout then return manifest end
  if remote then
    -- the object completes (and is read back: size and ETag) before its manifest is written
    local info = upload.finish()
    if info.bytes ~= manifest.size then
      pcall(remote.delete, remote.key(final))
      fail(string.format("the upload of %s carried %d bytes, the archive writer wrote %d; the object was deleted", final, info.bytes, manifest.size))
    end
    manifest.sha256 = info.sha256
    manifest.file = final
    local url = remote.url_of(remote.key(final))
    local okm, merr = pcall(storage.write_manifest, url, manifest)
    if not okm then
      fail("the archive " .. url .. " was uploaded but its manifest could not be written: " ..
        tostring(type(merr) == "table" and merr.message or merr) .. " (the backup counts as incomplete)")
    end
    manifest.path = url
    manifest.upload = { parts = #info.parts, retries = info.retries, etag = info.etag, part_size = remote.cfg.part_size }
    return manifest
  end
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
-- content checks (restore.deep_check): both must match. opts.on_progress(ev) follows the SHA-256, the
-- blocks and (deep) the restore. Records the result in the manifest.
-- Raises with a clear message when anything is wrong.
function B.verify(path, opts)
  opts = opts or {}
  if storage.is_remote(path) and not opts.deep then
    -- an object is streamed through the reader (nothing on local disk; its SHA-256 computed on the
    -- way by the download), then compared with the manifest; the result goes into the remote manifest
    local m, merr = storage.read_manifest(path)
    if merr then fail(merr) end
    if not m and not opts.no_manifest then
      fail(string.format("backup %s has no manifest: it is incomplete or not an orch backup; " ..
        "use --no-manifest to check only the archive itself", path))
    end
    local loc, name = storage.split(path)
    local st = loc.stream(loc.key(name))
    local okr, v, compression = pcall(function()
      local r <close> = pgarchive.open(st.path())
      return r:verify(), r:header().compression
    end)
    if not okr then
      -- the download's own failure (no object, access denied) says more than the reader's
      local why = st.failure()
      if why then fail(why) end
      if type(v) == "table" and type(v.message) == "string" then v.message = v.message:gsub("/dev/fd/%d+", path) end
      if type(v) == "string" then v = v:gsub("/dev/fd/%d+", path) end
      error(v, 0)
    end
    local got = st.finish()
    if m then
      if got.sha256 ~= m.sha256 then
        fail(string.format("backup %s is damaged: its SHA-256 is %s, the manifest says %s", path, got.sha256, tostring(m.sha256)))
      end
      if got.bytes ~= m.size then fail(string.format("backup %s is %d bytes, the manifest says %d", path, got.bytes, m.size)) end
    end
    local result = { path = path, blocks = v.blocks, bytes = v.bytes, sha256 = m and m.sha256, manifest = m ~= nil,
      compression = compression, proven = m ~= nil or v.unchecked_streams == 0, unchecked_streams = v.unchecked_streams,
      large_objects = v.large_objects, streamed = true }
    if m then
      m.verified_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
      m.verified_deep = false
      storage.write_manifest(path, m)
    end
    return result
  end
  if storage.is_remote(path) then
    -- --deep restores the archive: it is streamed down into a spool file first (SHA-256 on the
    -- way), checked there like a file, and the result recorded in the remote manifest
    local f = storage.fetch(path)
    local ok, r = pcall(B.verify, f.path, setmetatable({ keep_manifest = true }, { __index = opts }))
    if ok and r.manifest then
      local m = manifest_m.read(f.path)
      local okw, err = pcall(storage.write_manifest, path, m)
      if not okw then storage.release(f) error(err, 0) end
    end
    storage.release(f)
    if not ok then
      if type(r) == "string" then r = r:gsub(f.path:gsub("%p", "%%%0"), path) end
      if type(r) == "table" and type(r.message) == "string" then r.message = r.message:gsub(f.path:gsub("%p", "%%%0"), path) end
      error(r, 0)
    end
    r.path = path
    return r
  end
  local st = sys.stat(path)
  if not st then fail("no backup file " .. path) end
  local m, merr = manifest_m.read(path)
  if not m and not opts.no_manifest then
    fail(merr or string.format("backup %s has no manifest (%s): it is incomplete or not an orch backup; " ..
      "use --no-manifest to check only the archive itself", path, B.manifest_path(path)))
  end
  if m then
    if opts.on_progress then opts.on_progress { phase = "checksum", done = 0, total = 1, fraction = 0, what = "SHA-256 of " .. path } end
    local sum, size = sys.sha256_file(path)
    if sum ~= m.sha256 then
      fail(string.format("backup %s is damaged: its SHA-256 is %s, the manifest says %s", path, sum, tostring(m.sha256)))
    end
    if size ~= m.size then fail(string.format("backup %s is %d bytes, the manifest says %d", path, size, m.size)) end
  end
  local r <close> = pgarchive.open(path)
  if m then
    -- the manifest's SHA-256 matched: the reader need not hash again, and the gzip streams orch's
    -- pdeflate wrote (the manifest says so) are inflated piece by piece
    r:no_hash()
    manifest_m.inflate_pieces(m, r)
  end
  local v = r:verify(opts.on_progress and function(done, total, pos, size)
    opts.on_progress { phase = "blocks", done = done, total = total, bytes = pos, fraction = size > 0 and pos / size or done / math.max(total, 1),
      unit = "blocks", what = path }
  end or nil)
  -- proven: the manifest's SHA-256 matched, or every stream carries a checksum that did (zlib's
  -- Adler-32, lz4/zstd content checksums); an uncompressed archive, or lz4/zstd frames written without
  -- checksums (pg_dump 16/17's), parse without a manifest, but a damaged byte could go unnoticed
  local compression = r:header().compression
  local result = { path = path, blocks = v.blocks, bytes = v.bytes, sha256 = m and m.sha256, manifest = m ~= nil,
    compression = compression, proven = m ~= nil or v.unchecked_streams == 0, unchecked_streams = v.unchecked_streams,
    large_objects = v.large_objects }
  if opts.deep then
    local counts, checks = opts.deep(path, opts.on_progress)
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
