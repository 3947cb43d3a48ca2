--- orch.migrate.snapshot: the schema as a file to review (dbmate's
-- schema.sql), written after a migrate, and the drift between it and a live
-- database. The text is orch's own catalog code's (the DDL of its backups,
-- orch.backup.catalog), never pg_dump's: one block per object under a
-- header "-- Name: N; Type: T; Schema: S", so a review diff shows each
-- object, and orch drift can name each difference.
local sys = require "orch.sys"

local S = {}

-- Entries that are not the schema: the database itself (its name differs
-- between environments), the archive's session lines, and data.
local function wanted(e)
  if e.section == "data" or not e.defn or e.defn == "" then return false end
  if e.desc:match("^DATABASE") or e.desc == "ENCODING" or e.desc == "STDSTRINGS" or e.desc == "SEARCHPATH" then return false end
  if (e.tag or ""):match("^DATABASE ") then return false end
  return true
end

--- The schema of the database conn is connected to, as a list of
-- { type, schema, name, defn } in the order a restore creates them.
function S.capture(conn)
  local c <close> = conn:clone()
  c:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
  require("orch.backup.session").backup(c)
  local toc = require("orch.backup.catalog").build(c, { no_owner = true })
  c:exec("COMMIT")
  local out = {}
  for _, e in ipairs(toc.entries) do
    if wanted(e) then
      out[#out + 1] = { type = e.desc, schema = e.namespace or "-", name = e.tag, defn = (e.defn:gsub("%s+$", "")) }
    end
  end
  return out
end

--- The text of a snapshot; about names what it is a snapshot of.
function S.render(objects, about)
  local t = { "-- orch schema snapshot: " .. about, "-- Written by orch migrate from orch's own catalog code; orch drift compares a database with it.", "" }
  for _, o in ipairs(objects) do
    t[#t + 1] = "--"
    t[#t + 1] = string.format("-- Name: %s; Type: %s; Schema: %s", o.name, o.type, o.schema)
    t[#t + 1] = "--"
    t[#t + 1] = o.defn
    t[#t + 1] = ""
  end
  return table.concat(t, "\n")
end

--- Write the snapshot of conn's database to path (atomically: a temporary
-- file renamed). Returns the number of objects.
function S.write(conn, path, about)
  local objects = S.capture(conn)
  local tmp = path .. ".partial-" .. sys.getpid()
  local f, err = io.open(tmp, "wb")
  if not f then sys.error(string.format("cannot write the schema snapshot %s: %s", path, tostring(err)), 1) end
  f:write(S.render(objects, about), "\n")
  f:close()
  local ok, rerr = os.rename(tmp, path)
  if not ok then os.remove(tmp); sys.error(string.format("cannot write the schema snapshot %s: %s", path, tostring(rerr)), 1) end
  return #objects
end

--- Read a snapshot file back: a list of objects as S.capture returns.
function S.read(path)
  local f, err = io.open(path, "rb")
  if not f then
    sys.error(string.format("no schema snapshot %s (%s): orch migrate writes one with --schema-file, or schema_file in the environment",
      path, tostring(err)), 1)
  end
  local text = f:read("a")
  f:close()
  local out, cur = {}, nil
  local lines = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
  local i = 1
  while i <= #lines do
    local name, typ, schema = lines[i]:match("^%-%- Name: (.-); Type: (.-); Schema: (.-)$")
    if name and lines[i - 1] == "--" and lines[i + 1] == "--" then
      cur = { type = typ, schema = schema, name = name, body = {} }
      out[#out + 1] = cur
      i = i + 2
    else
      if cur then cur.body[#cur.body + 1] = lines[i] end
      i = i + 1
    end
  end
  for _, o in ipairs(out) do
    -- the block ends before the next header's opening "--"
    local b = o.body
    while #b > 0 and (b[#b] == "" or b[#b] == "--") do b[#b] = nil end
    o.defn = table.concat(b, "\n")
    o.body = nil
  end
  return out
end

--- The differences between a snapshot (file) and the live schema: a list
-- of { kind = "missing" | "extra" | "changed", type, schema, name, file, live }.
function S.diff(file_objects, live_objects)
  local function key(o) return o.type .. "\0" .. o.schema .. "\0" .. o.name end
  local live, seen = {}, {}
  for _, o in ipairs(live_objects) do live[key(o)] = o end
  local out = {}
  for _, o in ipairs(file_objects) do
    local k = key(o)
    seen[k] = true
    local l = live[k]
    if not l then
      out[#out + 1] = { kind = "missing", type = o.type, schema = o.schema, name = o.name, file = o.defn }
    elseif l.defn ~= o.defn then
      out[#out + 1] = { kind = "changed", type = o.type, schema = o.schema, name = o.name, file = o.defn, live = l.defn }
    end
  end
  for _, o in ipairs(live_objects) do
    if not seen[key(o)] then out[#out + 1] = { kind = "extra", type = o.type, schema = o.schema, name = o.name, live = o.defn } end
  end
  return out
end

-- The first line where two definitions differ, for a one-line description.
function S.first_difference(a, b)
  local la, lb = {}, {}
  for l in ((a or "") .. "\n"):gmatch("([^\n]*)\n") do la[#la + 1] = l end
  for l in ((b or "") .. "\n"):gmatch("([^\n]*)\n") do lb[#lb + 1] = l end
  for i = 1, math.max(#la, #lb) do
    if la[i] ~= lb[i] then return i, la[i], lb[i] end
  end
end

return S
