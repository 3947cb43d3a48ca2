--- orch.backup.manifest: the JSON file beside each archive. A backup is
-- complete only when its manifest exists; it carries the SHA-256, sizes,
-- row counts and where the backup came from.
local sys = require "orch.sys"
local json = require "orch.json"

local M = {}

M.SUFFIX = ".manifest.json"

--- The manifest path of an archive path (x.dump -> x.manifest.json).
function M.path(archive) return (archive:gsub("%.dump$", "")) .. M.SUFFIX end

--- Read an archive's manifest: the table, or nil (none), or nil, message (not JSON).
function M.read(path)
  local f = io.open(M.path(path), "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  -- a SQL_ASCII or LATIN1 database's names are kept byte for byte (see M.write)
  local ok, m = pcall(json.decode, text, { bytes = true })
  if not ok then return nil, "manifest " .. M.path(path) .. " is not valid JSON: " .. tostring(m) end
  return m
end

--- Write (atomically, mode 0600) the manifest of an archive; returns ok, err.
-- Table names go in as the server gave them: a SQL_ASCII or LATIN1
-- database's are not UTF-8, and they are written byte for byte (json's
-- bytes option), so that verify and restore compare them with the database's own.
function M.write(path, m)
  return sys.write_atomic(M.path(path), json.encode(m, { indent = "  ", bytes = true }) .. "\n", 384)
end

return M
