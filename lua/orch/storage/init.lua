--- orch.storage: where backups live. A backups directory is a local path or
-- an S3 location (s3://bucket/prefix, see orch.storage.s3). This module is
-- what the backup code asks about remote backups: listing them with their
-- manifests, deleting one, and fetching one to a local spool so that it is
-- proven (the manifest's SHA-256, computed while it streams down) before
-- anything reads it.
local sys = require "orch.sys"
local manifest = require "orch.backup.manifest"
local s3 = require "orch.storage.s3"

local M = {}

M.SUFFIX = manifest.SUFFIX

--- Is path remote (s3://)?
function M.is_remote(path) return s3.is(path) end

--- The manifest name of an archive name (x.dump -> x.manifest.json).
local function manifest_name(name) return (name:gsub("%.dump$", "")) .. M.SUFFIX end
M.manifest_name = manifest_name

--- The location of a backup URL s3://bucket/prefix/name.dump: location, name.
function M.split(url)
  local dir, name = url:match("^(s3://.+)/([^/]+)$")
  if not dir then
    local bucket, key = s3.parse(url)
    return s3.open("s3://" .. bucket), key
  end
  return s3.open(dir), name
end

--- The backups in an s3:// location, newest first, as orch.backup.retention.list gives
-- them for a directory: { path, file, manifest, size, status, note, time }.
function M.list(url)
  local retention = require "orch.backup.retention"   -- it lists s3:// locations through this module
  local loc = s3.open(url)
  local objects, by_name = loc.list(), {}
  for _, o in ipairs(objects) do by_name[o.name] = o end
  local out = {}
  for _, o in ipairs(objects) do
    if o.name:match("%.dump$") then
      local m, note
      if by_name[manifest_name(o.name)] then
        local v = manifest.decode(loc.get(loc.key(manifest_name(o.name))) or "", o.name)
        if type(v) == "table" then m = v else note = "its manifest is not valid JSON" end
      else
        note = "no manifest: the backup did not finish, or its manifest was removed"
      end
      out[#out + 1] = retention.entry { path = loc.url_of(o.key), file = o.name, manifest = m, size = o.size, note = note, partial = false,
        mtime = o.last_modified or "" }
    end
  end
  return retention.newest_first(out)
end

--- Delete a backup: the manifest first, so that a delete cut short leaves an incomplete
-- backup (which nothing restores or counts), never a manifest without its archive.
function M.delete(url)
  local loc, name = M.split(url)
  loc.delete(loc.key(manifest_name(name)))
  loc.delete(loc.key(name))
end

--- The manifest of a remote backup (nil when it has none).
function M.read_manifest(url)
  local loc, name = M.split(url)
  local body = loc.get(loc.key(manifest_name(name)))
  if not body then return nil end
  return manifest.decode(body, url:gsub("%.dump$", "") .. M.SUFFIX)
end

--- Write a remote backup's manifest (JSON).
function M.write_manifest(url, m)
  local loc, name = M.split(url)
  loc.put(loc.key(manifest_name(name)), manifest.encode(m), "application/json")
end

--- Fetch a remote backup into a new spool directory (ORCH_SPOOL_DIR, else TMPDIR, else /tmp):
-- its manifest (when there is one) and the archive, streamed to disk with its SHA-256 computed
-- on the way. Returns { path = local archive, dir = spool dir, manifest, sha256, bytes }; the
-- caller removes dir (M.release). Raises when the object is missing.
function M.fetch(url, opts)
  opts = opts or {}
  local loc, name = M.split(url)
  local dir = sys.mkdtemp(M.spool_base() .. "/orch-spool-")
  local ok, res = pcall(function()
    local path = dir .. "/" .. name
    local m = loc.get(loc.key(manifest_name(name)))
    if m then
      local okw, err = sys.write_atomic(dir .. "/" .. manifest_name(name), m, 384)
      if not okw then error("cannot write the spool copy of the manifest: " .. tostring(err), 0) end
    end
    -- one stream (its SHA-256 computed on the way), or opts.jobs ranges at once (the reader proves it after)
    local got = (opts.jobs or 1) > 1 and loc.download_ranges(loc.key(name), path, opts.jobs) or loc.download(loc.key(name), path)
    return { path = path, dir = dir, manifest = m ~= nil, sha256 = got.sha256, bytes = got.bytes, ranges = (opts.jobs or 1) > 1 }
  end)
  if not ok then sys.rmtree(dir) error(res, 0) end
  return res
end

--- Where the run logs of a backups location go (<base>/runs): the directory itself, or for
-- an s3:// location a local one, .orch/s3/<bucket>/<prefix> (run logs are appended line by
-- line while a run goes, which object storage cannot do).
function M.runs_base(dir)
  if not s3.is(dir) then return dir end
  local bucket, prefix = s3.parse(dir)
  return require("orch.project").path(".orch/s3/" .. bucket .. (prefix ~= "" and ("/" .. prefix) or ""))
end

--- The local directory a restore or verify of a remote backup spools into.
function M.spool_base() return os.getenv("ORCH_SPOOL_DIR") or os.getenv("TMPDIR") or "/tmp" end

--- Remove a spool directory made by fetch.
function M.release(f) if f and f.dir then sys.rmtree(f.dir) end end

return M
