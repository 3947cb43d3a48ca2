--- orch.backup.writes: what was written to a database since one of its
-- backups. The recovery ladder restores a backup only when nothing would be
-- lost; this module is the measurement it trusts.
--
--   local since = writes.markers(conn)          -- inside the backup's snapshot
--   local w = writes.measure(conn, manifest)     -- later: { changed, tables, rows_new, rows_gone, ... }
--   print(writes.format(w))
--
-- How, and why this way. A backup runs in one REPEATABLE READ snapshot and
-- records it (pg_current_snapshot()) with the rows it copied per table. Every
-- row version carries the transaction that created it (xmin), and
-- PostgreSQL keeps the raw xmin even after freezing. Later, per table:
--   new  = visible rows whose xmin the backup's snapshot did not see
--          (inserted or updated since the backup, by anyone), and
--   gone = the backup's row count - visible rows whose xmin it did see
--          (deleted or updated since: their backup version is no longer there).
-- new + gone = 0 for every table means the database holds exactly the rows
-- the backup holds: restoring it loses nothing. This is exact, and read from
-- the rows themselves, which is what matters here:
--   * the statistics counters (pg_stat_user_tables n_tup_ins/upd/del) are
--     flushed asynchronously (PostgreSQL 15+ flushes a backend's pending
--     counts when it goes idle, at most about once a second, and never
--     while it stays busy; pg_stat_force_next_flush() only reaches our own
--     backend), count rolled-back writes, are per server and are lost on a
--     stats reset or a crash. Any of these can make them say "nothing
--     written" while rows were written, so they are recorded in the
--     manifest for people and never decide anything.
--   * pg_xact_commit_timestamp needs track_commit_timestamp, usually off.
-- Rows written by orch itself (this run's migrations) count as written too:
-- telling them apart by xid would be unsafe, because a migration that
-- rewrites or updates a row hides the application's earlier write to it.
-- So the measurement can say "written" when only the release wrote (the
-- report says so), but it never says "nothing written" when rows were.
-- orch's own history table is left out. Tables created since the backup
-- count with all their rows; tables dropped since are named.
-- Cost: one sequential pass over every table (as the backup itself made).
local W = {}

-- The 64-bit form of a 32-bit xid seen now: xids are within 2^31 of the
-- next one, so the epoch is the current one, or the one before it.
local WIDEN = "(CASE WHEN $1::bigint + x > $2::bigint THEN $1::bigint + x - 4294967296 ELSE $1::bigint + x END)"

-- The snapshot functions: PostgreSQL 13 renamed txid_* to pg_* (pg_snapshot,
-- xid8); 12 has only the old names, whose snapshots print the same way.
local function snapshot_sql(conn)
  if tonumber(conn:value("SHOW server_version_num")) >= 130000 then
    return { current = "pg_current_snapshot()", xmax = "pg_snapshot_xmax", type = "pg_snapshot",
             visible = "pg_visible_in_snapshot(%s::text::xid8, $3::pg_snapshot)" }
  end
  return { current = "txid_current_snapshot()", xmax = "txid_snapshot_xmax", type = "txid_snapshot",
           visible = "txid_visible_in_snapshot(%s, $3::txid_snapshot)" }
end

--- Where a backup was taken, read inside its own snapshot (call it in the
-- backup's REPEATABLE READ transaction, after its first query). Returns a
-- table for the manifest's `since`.
function W.markers(conn)
  local r = conn:query([[SELECT ]] .. snapshot_sql(conn).current .. [[::text AS snapshot, d.oid::bigint AS dboid,
      (SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()) AS stats_reset
    FROM pg_database d WHERE d.datname = current_database()]])[1]
  local counters = {}
  for _, t in ipairs(conn:query([[SELECT format('%s.%s', schemaname, relname) AS name, n_tup_ins, n_tup_upd, n_tup_del
      FROM pg_stat_user_tables]])) do
    counters[t.name] = { t.n_tup_ins, t.n_tup_upd, t.n_tup_del }
  end
  return { method = "xmin against the backup's snapshot", snapshot = r.snapshot, database_oid = r.dboid,
           stats_reset = r.stats_reset, counters = require("orch.json").object(counters) }
end

local function tables_now(conn)
  return conn:query([[SELECT n.nspname || '.' || c.relname AS name, format('%I.%I', n.nspname, c.relname) AS quoted
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
      AND n.nspname !~ '^pg_temp' ORDER BY 1]])
end

--- Measure what was written since the backup whose manifest is given.
-- opts.exclude: table names ("public.orch_schema_history") left out.
-- Returns { changed = bool, measurable = bool, why (when not measurable),
-- tables = { { name, new, gone, backup_rows, rows } ... only those that
-- differ }, rows_new, rows_gone, dropped = { names }, counters = { name =
-- server counter delta } }. Never raises for a database it cannot judge:
-- that is measurable = false, which callers must treat as written.
function W.measure(conn, manifest, opts)
  opts = opts or {}
  local since = manifest and manifest.since
  local out = { changed = true, measurable = false, tables = {}, rows_new = 0, rows_gone = 0, dropped = {}, counters = {} }
  if type(since) ~= "table" or type(since.snapshot) ~= "string" then
    out.why = "the backup records no snapshot (it was taken by an older orch, or is not an orch backup)"
    return out
  end
  local snap = snapshot_sql(conn)
  local now = conn:query(string.format([[SELECT %s(%s)::text::bigint AS nextxid,
      (SELECT oid::bigint FROM pg_database WHERE datname = current_database()) AS dboid,
      %s($1::%s)::text::bigint AS then_xmax]], snap.xmax, snap.current, snap.xmax, snap.type), since.snapshot)[1]
  if since.database_oid and now.dboid ~= since.database_oid then
    out.why = string.format("this is not the database the backup was taken from (oid %s, the backup's %s)", tostring(now.dboid), tostring(since.database_oid))
    return out
  end
  if now.nextxid < now.then_xmax or now.nextxid - now.then_xmax >= 2147483648 then
    out.why = "the server's transaction ids are not in the backup's range (another server, or 2 billion transactions later)"
    return out
  end
  local hi = (now.nextxid >> 32) << 32
  local exclude = {}
  for _, n in ipairs(opts.exclude or {}) do exclude[n] = true end
  local backup_rows = manifest.tables or {}
  local seen = {}
  conn:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
  local ok, err = pcall(function()
    for _, t in ipairs(tables_now(conn)) do
      seen[t.name] = true
      if not exclude[t.name] then
        local r = conn:query(string.format([[SELECT count(*) AS rows,
            count(*) FILTER (WHERE ]] .. snap.visible .. [[) AS kept
          FROM (SELECT xmin::text::bigint AS x FROM ONLY %s) s]], WIDEN, t.quoted), hi, now.nextxid, since.snapshot)[1]
        local before = backup_rows[t.name]
        local new, gone
        if before == nil then new, gone = r.rows, 0       -- created since the backup: every row is new
        else new, gone = r.rows - r.kept, math.max(before - r.kept, 0) end
        if new > 0 or gone > 0 then
          out.tables[#out.tables + 1] = { name = t.name, new = new, gone = gone, backup_rows = before, rows = r.rows,
                                          created = before == nil or nil }
          out.rows_new, out.rows_gone = out.rows_new + new, out.rows_gone + gone
        end
      end
    end
    local counted = {}
    for _, t in ipairs(conn:query([[SELECT format('%s.%s', schemaname, relname) AS name, n_tup_ins + n_tup_upd + n_tup_del AS n
        FROM pg_stat_user_tables]])) do counted[t.name] = t.n end
    for name, c in pairs(type(since.counters) == "table" and since.counters or {}) do
      if counted[name] and type(c) == "table" then out.counters[name] = counted[name] - ((c[1] or 0) + (c[2] or 0) + (c[3] or 0)) end
    end
  end)
  pcall(conn.exec, conn, "COMMIT")
  if not ok then error(err, 0) end
  for name, n in pairs(backup_rows) do
    if not seen[name] and not exclude[name] then out.dropped[#out.dropped + 1] = string.format("%s (%d rows in the backup)", name, n) end
  end
  table.sort(out.dropped)
  out.measurable = true
  out.changed = #out.tables > 0
  return out
end

--- The lines of a measurement, for a report: one per table that differs.
function W.lines(w, indent)
  indent = indent or "  "
  local out = {}
  if not w.measurable then return { indent .. "cannot tell what was written since the backup: " .. tostring(w.why) } end
  for _, t in ipairs(w.tables) do
    local parts = {}
    if t.new > 0 then parts[#parts + 1] = string.format("%d row%s new or changed", t.new, t.new == 1 and "" or "s") end
    if t.gone > 0 then parts[#parts + 1] = string.format("%d row%s of the backup deleted or changed", t.gone, t.gone == 1 and "" or "s") end
    out[#out + 1] = string.format("%s%s: %s%s", indent, t.name, table.concat(parts, ", "), t.created and " (a table created since the backup)" or "")
  end
  for _, d in ipairs(w.dropped) do out[#out + 1] = indent .. "dropped since the backup: " .. d end
  return out
end

--- One line: "tickets 12 new, 0 gone; users 1 new" (or "nothing").
function W.summary(w)
  if not w.measurable then return "unknown (" .. tostring(w.why) .. ")" end
  if not w.changed then return "nothing" end
  local parts = {}
  for _, t in ipairs(w.tables) do parts[#parts + 1] = string.format("%s +%d/-%d", t.name, t.new, t.gone) end
  return string.format("%d row(s) new or changed, %d gone: %s", w.rows_new, w.rows_gone, table.concat(parts, ", "))
end

return W
