--- orch.backup.manifest: the JSON file beside each archive. A backup is
-- complete only when its manifest exists; it carries the SHA-256, sizes,
-- row counts and where the backup came from.
local sys = require "orch.sys"
local json = require "orch.json"

local M = {}

M.SUFFIX = ".manifest.json"

--- The manifest path of an archive path (x.dump -> x.manifest.json).
function M.path(archive) return (archive:gsub("%.dump$", "")) .. M.SUFFIX end

--- A manifest's text. Table names go in as the server gave them: a
-- SQL_ASCII or LATIN1 database's are not UTF-8, and they are written byte
-- for byte (json's bytes option), so that verify and restore compare them
-- with the database's own. On disk and in object storage alike.
function M.encode(m)
  return json.encode(m, { indent = "  ", bytes = true }) .. "\n"
end

--- A manifest from its text (where: its path, for the message): the table,
-- or nil, message (not JSON).
function M.decode(text, where)
  local ok, m = pcall(json.decode, text, { bytes = true })
  if not ok then return nil, "manifest " .. where .. " is not valid JSON: " .. tostring(m) end
  return m
end

--- Read an archive's manifest: the table, or nil (none), or nil, message (not JSON).
function M.read(path)
  local f = io.open(M.path(path), "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return M.decode(text, M.path(path))
end

--- Write (atomically, mode 0600) the manifest of an archive; returns ok, err.
function M.write(path, m)
  return sys.write_atomic(M.path(path), M.encode(m), 384)
end

--- A proven manifest m (its SHA-256 matched the file) that says orch's
-- pdeflate wrote the gzip streams of archive reader a in pieces: a is told to
-- inflate them piece by piece. Returns the piece size, or nil (another
-- compression, or a manifest of an older orch: zlib as before).
function M.inflate_pieces(m, a)
  local pieces = m and math.tointeger(m.deflate_pieces)
  if not (pieces and pieces >= 1024 and pieces <= 64 * 1048576 and a:header().compression == "gzip") then return nil end
  a:inflate_pieces(pieces)
  return pieces
end

return M
