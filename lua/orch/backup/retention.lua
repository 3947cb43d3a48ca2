--- orch.backup.retention: the backups of a directory, newest first, and
-- what retention keeps of them and of the run logs beside them.
local sys = require "orch.sys"
local manifest = require "orch.backup.manifest"

local B = {}

--- The backups in dir, newest first: { path, manifest, status, note } where
-- status is "complete", "verified" or "incomplete": an archive without
-- manifest, or the temporary file (.NAME.partial-PID) of a backup that is
-- being written or whose process died (note says which).
function B.list(dir)
  if require("orch.storage").is_remote(dir) then return require("orch.storage").list(dir) end
  local out = {}
  for _, f in ipairs(sys.listdir(dir) or {}) do
    local partial_of, pid = f:match("^%.(.+)%.partial%-(%d+)$")
    if (f:match("%.dump$") and not f:match("^%.")) or partial_of then
      local path = dir .. "/" .. f
      local m = not partial_of and manifest.read(path) or nil
      local st = sys.stat(path)
      local note
      if partial_of then
        note = sys.kill(tonumber(pid), 0) and string.format("being written by pid %s (to become %s)", pid, partial_of)
          or string.format("left by backup pid %s, which died before finishing %s (the next backup removes it)", pid, partial_of)
      elseif not m then
        note = "no manifest: the backup did not finish, or its manifest was removed"
      end
      out[#out + 1] = B.entry { path = path, file = f, manifest = m, size = st and st.size, note = note, partial = partial_of ~= nil,
        mtime = st and st.mtime or 0 }
    end
  end
  return B.newest_first(out)
end

--- A listed backup e (path, file, manifest, size, note, partial, mtime) with
-- its status and time, on disk and in object storage alike.
function B.entry(e)
  local m = e.manifest
  e.status = not m and "incomplete" or (m.verified_at and "verified" or "complete")
  e.time = m and m.started_at or ""
  return e
end

-- Of two backups of the same second (same start, same mtime), whether a
-- was taken after b: the second one of a second is named NAME-2.dump, the
-- third NAME-3.dump (orch.backup picks the first free name); else by name,
-- so that the order never depends on the sort.
local function later_name(a, b)
  local sa, sb = (a or ""):gsub("%.dump$", ""), (b or ""):gsub("%.dump$", "")
  local ba, na = sa:match("^(.*)%-(%d+)$")
  local bb, nb = sb:match("^(.*)%-(%d+)$")
  if ba and ba == sb then return true end
  if bb and bb == sa then return false end
  if ba and bb and ba == bb then return tonumber(na) > tonumber(nb) end
  return sa > sb
end

--- Sort listed backups newest first: by the manifest's start, then the file's mtime,
-- then (the same second) the name's -2, -3 ... suffix.
function B.newest_first(list)
  table.sort(list, function(a, b)
    if a.time ~= b.time then return a.time > b.time end
    if a.mtime ~= b.mtime then return a.mtime > b.mtime end
    return later_name(a.file or a.path, b.file or b.path)
  end)
  return list
end

-- Which series a backup belongs to: retention counts each database (and
-- environment) on its own, so one directory can hold several.
-- A partial backup (-n, -t, -s, ...) is no backup of the whole database: it
-- never counts as one of the newest `keep` whole backups, nor is it the
-- newest verified one kept whatever the age. Partial backups form series of
-- their own, one per selection (the same options), counted the same way.
local function series(b)
  local m = b.manifest or {}
  local envname = type(m.env) == "string" and m.env or ""
  local part = require("orch.backup.select").summary(m)
  return tostring(m.database or "?") .. "\0" .. envname .. (part and ("\0partial " .. part) or "")
end

--- Apply retention: per database and environment (the manifest's database
-- and env; partial backups apart, per selection: see series), keep the newest `keep` complete backups and/or those younger
-- than max_age seconds; never delete a series' newest verified backup;
-- incomplete ones never count toward keep (and are left for a human to look
-- at). Returns the list of deleted paths.
function B.retain(dir, opts)
  opts = opts or {}
  local list = B.list(dir)
  local newest_verified = {}
  for _, b in ipairs(list) do
    if b.status == "verified" and not newest_verified[series(b)] then newest_verified[series(b)] = b.path end
  end
  local kept, deleted = {}, {}
  local now = sys.now()
  for _, b in ipairs(list) do
    if b.status ~= "incomplete" then
      local k = series(b)
      kept[k] = (kept[k] or 0) + 1
      local too_many = opts.keep and kept[k] > opts.keep
      local too_old = false
      if opts.max_age and b.manifest and b.manifest.started_at then
        local y, mo, d, h, mi, s = b.manifest.started_at:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
        if y then
          local t = os.time { year = y, month = mo, day = d, hour = h, min = mi, sec = s, isdst = false }
          local offset = os.time(os.date("*t", t)) - os.time(os.date("!*t", t))
          too_old = now - (t + offset) > opts.max_age
        end
      end
      if (too_many or too_old) and b.path ~= newest_verified[k] then
        if require("orch.storage").is_remote(dir) then
          require("orch.storage").delete(b.path)
        else
          sys.unlink(b.path)
          sys.unlink(manifest.path(b.path))
        end
        deleted[#deleted + 1] = b.path
      end
    end
  end
  return deleted
end

--- The run ids with a log in rdir (<backups dir>/runs/<run id>.jsonl),
-- newest first: by the UTC second a run id starts with, then by the log's
-- last write (runs within one second), then by id.
function B.run_ids(rdir)
  local ids, mtime = {}, {}
  for _, f in ipairs(sys.listdir(rdir) or {}) do
    local id = f:match("^(.-)%.jsonl$")
    if id then
      ids[#ids + 1] = id
      local st = sys.stat(rdir .. "/" .. f)
      mtime[id] = st and st.mtime or 0
    end
  end
  table.sort(ids, function(a, b)
    local sa, sb = a:sub(1, 16), b:sub(1, 16)
    if sa ~= sb then return sa > sb end
    if mtime[a] ~= mtime[b] then return mtime[a] > mtime[b] end
    return a > b
  end)
  return ids
end

--- Prune the run logs of a backups directory (<dir>/runs/<run id>.jsonl):
-- keep the newest `keep` (default 100) and every run whose backup is still
-- there, so a kept backup can always be traced to the run that made it;
-- opts.current (a run id) is never deleted. Returns the deleted paths.
function B.retain_runs(dir, opts)
  opts = opts or {}
  local keep = opts.keep or 100
  -- run logs are written on local disk, never into object storage (orch.storage.runs_base)
  local rdir = require("orch.storage").runs_base(dir) .. "/runs"
  local ids = B.run_ids(rdir)
  local keep_id = { [opts.current or ""] = true }
  for _, b in ipairs(B.list(dir)) do
    local rid = b.manifest and b.manifest.run_id
    if type(rid) == "string" then keep_id[rid] = true end
  end
  local deleted = {}
  for i, id in ipairs(ids) do
    if i > keep and not keep_id[id] then
      local path = rdir .. "/" .. id .. ".jsonl"
      sys.unlink(path)
      deleted[#deleted + 1] = path
    end
  end
  return deleted
end

return B
