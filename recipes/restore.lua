-- recipes/restore.lua -- the emergency procedure of the brief ("restore from
-- backup"), as steps an operator can follow and orch can run:
--   orch recipes/restore.lua --env prod                  # the latest verified backup
--   orch recipes/restore.lua --env prod --backup ID      # a file name, a path or a run id
--   orch recipes/restore.lua --env prod --before "2026-11-23 05:00"
-- 1. choose the backup  2. verify it (SHA-256, every block)  3. approval
-- 4. a safety backup of the database as it is now  5. restore beside it and
-- swap by rename (the current database is kept, renamed; --jobs N: on N connections)  6. verify: row
-- counts equal the backup's manifest, schema version, database health.
-- If anything fails after the swap, the safety backup is swapped back in.
-- 7. the application's endpoints are checked and reported, not acted on:
-- after a restore the application may need a restart before it is healthy.
local R = require "orch.recipe"
local backup = require "orch.backup"
local json = require "orch.json"
local sys = require "orch.sys"

local opts, env = R.setup({ ... }, "prod", {
  { name = "backup", type = "string", metavar = "ID|PATH|RUN", help = "the backup: file name, path or run id (default: the latest verified)" },
  { name = "before", type = "string", metavar = "TIME", help = "the newest backup taken at or before TIME (UTC, e.g. 2026-11-23T05:00)" },
  { name = "no-safety-backup", type = "boolean", help = "skip the backup of the current state (when the database is too broken to dump)" },
  { name = "jobs", short = "j", type = "integer", min = 1, default = 1, metavar = "N",
    help = "restore (and put back) on N connections, as orch restore --jobs: data, indexes and constraints in parallel, " ..
           "a big table's rows cut over the free connections (see orch restore --help)" },
}, "emergency restore: choose a backup, verify it, keep a safety backup, restore by swap, verify")

-- "2026-11-23 05:00" -> "2026-11-23T05:00:00Z" (manifests record UTC in this form)
local function iso(t)
  local d, h, m, s = t:match("^(%d%d%d%d%-%d%d%-%d%d)[T ]?(%d?%d?):?(%d?%d?):?(%d?%d?)Z?$")
  if not d then sys.error("--before: expected a UTC time like 2026-11-23T05:00, got '" .. t .. "'", 2) end
  local function two(x) return x == "" and "00" or string.format("%02d", tonumber(x)) end
  return string.format("%sT%s:%s:%sZ", d, two(h), two(m), two(s))
end

-- The backup this run restores, and the list it was chosen from.
local function choose(ctx)
  local list = backup.list(ctx.env.backups.dir)
  local usable = {}
  -- a partial backup (orch backup -n/-t/-s/-a/...) is never the database to restore: it lacks the rest
  local select = require "orch.backup.select"
  local function whole(b)
    local part = select.summary(b.manifest)
    if part then
      sys.error(string.format("backup %s is partial (%s): restoring it would replace the whole database with that part; " ..
        "choose a backup of the whole database (orch backups list marks partial ones)", b.path, part), 1)
    end
    return b, list
  end
  for _, b in ipairs(list) do if b.status ~= "incomplete" and not select.summary(b.manifest) then usable[#usable + 1] = b end end
  local want = ctx.opts.backup
  if want then
    for _, b in ipairs(list) do
      if b.status ~= "incomplete" and (b.path == want or b.file == want or b.file == want .. ".dump" or (b.manifest and b.manifest.run_id == want)
        or sys.realpath(b.path) == sys.realpath(want)) then return whole(b) end
    end
    if sys.exists(want) then
      local m = backup.read_manifest(want)
      if m then return whole { path = want, file = want:match("[^/]*$"), manifest = m, status = m.verified_at and "verified" or "complete" } end
    end
    sys.error(string.format("no complete backup '%s' in %s (a file name, a path, or a run id)", want, ctx.env.backups.dir), 1)
  end
  if #usable == 0 then sys.error("no complete backup of the whole database in " .. ctx.env.backups.dir ..
    " (incomplete ones have no manifest, partial ones hold part of it: neither is ever used)", 1) end
  if ctx.opts.before then
    local t = iso(ctx.opts.before)
    for _, b in ipairs(usable) do if b.manifest.started_at <= t then return b, list end end
    sys.error(string.format("no complete backup taken at or before %s in %s", t, ctx.env.backups.dir), 1)
  end
  for _, b in ipairs(usable) do if b.status == "verified" then return b, list end end
  return usable[1], list
end

local function jobs_of(ctx) return math.tointeger(ctx.opts.jobs) or 1 end
local function jobs_note(ctx)
  local n = jobs_of(ctx)
  return n > 1 and string.format(", on %d connections (a table larger than one connection's share split at row ends)", n) or ""
end

local function describe_backup(b)
  local m = b.manifest
  return string.format("%s (taken %s, %s, schema at %s, %d rows, run %s)", b.path, m.started_at, b.status,
    m.latest_migration ~= json.null and m.latest_migration and ("V" .. m.latest_migration.version) or "no migrations",
    m.rows or 0, m.run_id ~= json.null and m.run_id or "-")
end

return R.run {
  name = "restore", opts = opts, env = env,
  steps = {
    R.step.lua { name = "choose backup", about = "latest verified, or --backup ID / --before TIME",
      plan = function(ctx) local ok, b = pcall(choose, ctx); return ok and ("would restore " .. describe_backup(b)) or ("would stop: " .. tostring(b)) end,
      run = function(ctx)
        local b, list = choose(ctx)
        print("      backups in " .. ctx.env.backups.dir .. " (newest first):")
        for i, x in ipairs(list) do
          if i > 10 then print("        ...") break end
          print(string.format("        %s %-9s %s", x.path == b.path and "->" or "  ", x.status, x.file))
        end
        ctx.state.chosen = b
        return "chose " .. describe_backup(b)
      end },
    R.step.lua { name = "verify backup", about = "SHA-256 against the manifest, every data block inflates",
      plan = function() return "would check the chosen backup's SHA-256 and every block" end,
      run = function(ctx)
        local v = backup.verify(ctx.state.chosen.path)
        return string.format("%d blocks, %.1f MiB, SHA-256 %s matches the manifest", v.blocks, (v.bytes or 0) / 1048576, (v.sha256 or ""):sub(1, 16))
      end },
    R.step.approve { question = function(ctx)
      return string.format("replace the %s database (%s) with %s? the current one is kept, renamed, and backed up first",
        ctx.env.name, require("orch.log").redact(ctx.url or "libpq defaults"), ctx.state.chosen.path)
    end },
    R.step.lua { name = "safety backup", about = "a verified backup of the current state, restored if this procedure fails",
      plan = function(ctx) return ctx.opts.no_safety_backup and "would skip the safety backup (--no-safety-backup)"
        or ("would back up the current database into " .. ctx.env.backups.dir .. " first") end,
      run = function(ctx)
        if ctx.opts.no_safety_backup then return "skipped (--no-safety-backup): the current database is kept renamed by the swap" end
        -- named after the run: the default name has one-second resolution and the chosen backup may be from this very second
        local out = string.format("%s/%s-%s-safety.dump", ctx.env.backups.dir, ctx:conn():info().dbname, ctx.run_id)
        local m = backup.create(ctx:conn(), { output = out, env = ctx.env.name, run_id = ctx.run_id })
        backup.verify(m.path)
        ctx.state.backup = m.path
        return string.format("%s (%d rows, verified)", m.path, m.rows)
      end },
    R.step.lua { name = "restore", changes = true, about = "restore beside the database and swap it in by rename",
      plan = function(ctx) return "would restore into a new database and swap it in by rename (the current one kept)" .. jobs_note(ctx) end,
      run = function(ctx)
        ctx:close_conn()
        local r = require("orch.backup.restore").run { archive = ctx.state.chosen.path, db = ctx.url, mode = "swap", jobs = jobs_of(ctx), whole = true }
        ctx.state.old_database = r.old_database
        ctx.project = nil
        return string.format("restored %s into %s%s; the previous database is kept as %s", ctx.state.chosen.path, r.target,
          (r.jobs or 1) > 1 and string.format(" on %d connections%s", r.jobs, r.split and ("; split " .. table.concat(r.split, ", ")) or "") or "",
          r.old_database)
      end },
    R.step.lua { name = "verify restore", about = "row counts equal the manifest's, schema version as backed up",
      plan = function() return "would compare every table's row count with the backup's manifest" end,
      run = function(ctx)
        local m = ctx.state.chosen.manifest
        local counts = require("orch.backup.restore").row_counts(ctx:conn())
        local bad = {}
        local n = 0
        for t, rows in pairs(m.tables or {}) do
          n = n + 1
          if counts[t] ~= rows then bad[#bad + 1] = string.format("%s: %s rows, the backup had %d", t, tostring(counts[t]), rows) end
        end
        if #bad > 0 then error("the restored database differs from the backup:\n  " .. table.concat(bad, "\n  "), 0) end
        local want = m.latest_migration ~= json.null and m.latest_migration and m.latest_migration.version
        if want then
          local got = ctx:conn():value([[SELECT version FROM public.orch_schema_history WHERE success AND version IS NOT NULL
            AND type NOT LIKE 'UNDO%' ORDER BY installed_rank DESC LIMIT 1]])
          if got ~= want then error(string.format("schema version V%s after the restore, the backup was at V%s", tostring(got), want), 0) end
        end
        return string.format("%d tables with the backup's row counts%s", n, want and (", schema at V" .. want) or "")
      end },
    -- the database must be healthy, or the safety backup goes back in (the version was checked above)
    R.step.verify { name = "health", schema = false, only = "db" },
    -- the application may need a restart after a restore: its endpoints are reported, not acted on
    R.step.verify { name = "endpoints", only = "http", advisory = true },
  },
  on_failure = {
    R.step.lua { name = "put back", about = "swap the safety backup back in",
      run = function(ctx)
        if not ctx.state.backup then error("no safety backup was taken: the previous database is " .. tostring(ctx.state.old_database), 0) end
        ctx:close_conn()
        local r = require("orch.backup.restore").run { archive = ctx.state.backup, db = ctx.url, mode = "swap", jobs = jobs_of(ctx), whole = true }
        return "the database is back as it was before this procedure (" .. ctx.state.backup .. "); the failed restore is kept as " .. r.old_database
      end },
  },
  always = {
    R.step.lua { name = "next steps", about = "what the operator does next",
      run = function(ctx)
        if ctx.exit_code == 0 and not ctx.dry_run then
          print("      1. check the application against the restored database")
          print(string.format("      2. when satisfied, drop the previous database: DROP DATABASE %s;", tostring(ctx.state.old_database)))
          if ctx.state.backup then
            print(string.format("      3. to undo this restore: orch recipes/restore.lua --env %s --backup %s", ctx.env.name, ctx.state.backup))
          end
        end
        return "done"
      end },
    R.step.notify(),
  },
}
