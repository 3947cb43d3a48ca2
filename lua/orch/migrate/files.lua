--- orch.migrate.files: finding and reading migration files.
--
-- Names are Flyway's: V<version>__<description>.sql (versioned),
-- U<version>__<description>.sql (its undo), R__<description>.sql
-- (repeatable); the same with .lua for data migrations. Subdirectories
-- are services with their own version sequences.
local sys = require "orch.sys"

local files = {}

-- ------------------------------------------------------------ versions

--- Parse "1.10", "2_1", "20240101_001" into a list of integers.
function files.parse_version(s)
  if not s or s == "" then return nil end
  local parts = {}
  for p in (s:gsub("_", ".") .. "."):gmatch("([^.]*)%.") do
    if not p:match("^%d+$") then return nil end
    parts[#parts + 1] = math.tointeger(tonumber(p)) or tonumber(p)
  end
  return parts
end

--- Compare two parsed versions part by part as numbers (1.10 > 1.9,
-- 1.0 == 1). Returns -1, 0 or 1.
function files.compare(a, b)
  for i = 1, math.max(#a, #b) do
    local x, y = a[i] or 0, b[i] or 0
    if x < y then return -1 elseif x > y then return 1 end
  end
  return 0
end

--- The canonical text of a version ("1.10", "20240101.1"); trailing zero
-- parts are dropped, so 2, 2.0 and 2_0 are one version.
function files.version_string(v)
  local n = #v
  while n > 1 and v[n] == 0 do n = n - 1 end
  local t = {}
  for i = 1, n do t[i] = tostring(v[i]) end
  return table.concat(t, ".")
end

-- ------------------------------------------------------------ checksums

--- Flyway's checksum: CRC-32 over the lines without their endings (\r\n,
-- \r or \n), a leading UTF-8 BOM removed, as a signed 32-bit integer.
function files.checksum(text)
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  local crc = 0
  local pos, n = 1, #text
  while pos <= n do
    local s, e = text:find("\r\n?", pos)
    local s2 = text:find("\n", pos, true)
    if s2 and (not s or s2 < s) then s, e = s2, s2 end
    if not s then
      crc = sys.crc32(text:sub(pos), crc)
      break
    end
    if s > pos then crc = sys.crc32(text:sub(pos, s - 1), crc) end
    pos = e + 1
  end
  if crc >= 0x80000000 then crc = crc - 0x100000000 end
  return math.tointeger(crc)
end

-- ------------------------------------------------------------ SQL text

--- Split a SQL script into statements. Understands quotes ('' and E''),
-- quoted identifiers, dollar quoting, -- and nested /* */ comments.
-- Returns a list of { sql = text, line = first line, pos = offset }.
function files.split_sql(text)
  local stmts = {}
  local i, n = 1, #text
  local start, line, start_line = 1, 1, nil
  local function flush(stop)
    local s = text:sub(start, stop)
    if s:match("%S") then
      -- strip comment-only content to decide emptiness
      local stripped = s:gsub("%-%-[^\n]*", ""):gsub("/%*.-%*/", "")
      if stripped:match("[^%s;]") then
        -- first line that holds code (not blank, not only a comment)
        local lead = s:match("^[%s]*") or ""
        local _, nl = lead:gsub("\n", "")
        stmts[#stmts + 1] = { sql = s, line = (start_line or line) + 0, pos = start, _lead = nl }
      end
    end
  end
  local first_code_line
  while i <= n do
    local c = text:sub(i, i)
    if c == "\n" then
      line = line + 1
      i = i + 1
    elseif c == "-" and text:sub(i + 1, i + 1) == "-" then
      local e = text:find("\n", i, true) or n + 1
      i = e
    elseif c == "/" and text:sub(i + 1, i + 1) == "*" then
      local depth, j = 1, i + 2
      while j <= n and depth > 0 do
        local two = text:sub(j, j + 1)
        if two == "/*" then depth = depth + 1; j = j + 2
        elseif two == "*/" then depth = depth - 1; j = j + 2
        else
          if text:sub(j, j) == "\n" then line = line + 1 end
          j = j + 1
        end
      end
      i = j
    elseif c == "'" then
      if not first_code_line then first_code_line = line end
      local escapes = i > 1 and text:sub(i - 1, i - 1):match("[eE]") and not text:sub(i - 2, i - 2):match("[%w_]")
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if d == "\n" then line = line + 1 end
        if escapes and d == "\\" then j = j + 2
        elseif d == "'" then
          if text:sub(j + 1, j + 1) == "'" then j = j + 2 else break end
        else j = j + 1 end
      end
      i = j + 1
    elseif c == '"' then
      if not first_code_line then first_code_line = line end
      local j = text:find('"', i + 1, true) or n
      local _, nl = text:sub(i, j):gsub("\n", "")
      line = line + nl
      i = j + 1
    elseif c == "$" and (i == 1 or not text:sub(i - 1, i - 1):match("[%w_]")) then
      local tag = text:match("^%$[%a_][%w_]*%$", i) or text:match("^%$%$", i)
      if tag then
        if not first_code_line then first_code_line = line end
        local e = text:find(tag, i + #tag, true)
        local stop = e and (e + #tag - 1) or n
        local _, nl = text:sub(i, stop):gsub("\n", "")
        line = line + nl
        i = stop + 1
      else
        i = i + 1
      end
    elseif c == ";" then
      start_line = first_code_line
      flush(i)
      first_code_line, start_line = nil, nil
      start = i + 1
      i = i + 1
    else
      if not first_code_line and c:match("%S") then first_code_line = line end
      i = i + 1
    end
  end
  start_line = first_code_line
  flush(n)
  for _, s in ipairs(stmts) do s._lead = nil end
  return stmts
end

--- The 1-based line of byte offset pos in text.
function files.line_of(text, pos)
  local _, nl = text:sub(1, math.max(pos - 1, 0)):gsub("\n", "")
  return nl + 1
end

-- Statements PostgreSQL refuses inside a transaction block.
local no_tx = {
  { "^CREATE%s+UNIQUE%s+INDEX%s+CONCURRENTLY", "CREATE INDEX CONCURRENTLY" },
  { "^CREATE%s+INDEX%s+CONCURRENTLY", "CREATE INDEX CONCURRENTLY" },
  { "^DROP%s+INDEX%s+CONCURRENTLY", "DROP INDEX CONCURRENTLY" },
  { "^REINDEX.-CONCURRENTLY", "REINDEX CONCURRENTLY" },
  { "^VACUUM", "VACUUM" },
  { "^CREATE%s+DATABASE", "CREATE DATABASE" },
  { "^DROP%s+DATABASE", "DROP DATABASE" },
  { "^ALTER%s+SYSTEM", "ALTER SYSTEM" },
  { "^CREATE%s+TABLESPACE", "CREATE TABLESPACE" },
  { "^DROP%s+TABLESPACE", "DROP TABLESPACE" },
  { "^ALTER%s+TABLE.-DETACH%s+PARTITION.-CONCURRENTLY", "ALTER TABLE ... DETACH PARTITION CONCURRENTLY" },
  { "^CREATE%s+SUBSCRIPTION", "CREATE SUBSCRIPTION" },
  { "^DISCARD%s+ALL", "DISCARD ALL" },
  { "^BEGIN", "BEGIN" }, { "^START%s+TRANSACTION", "START TRANSACTION" },
  { "^COMMIT", "COMMIT" }, { "^END%s*;?$", "END" }, { "^ROLLBACK", "ROLLBACK" },
}

--- Upper-cased statement text without leading comments, for matching.
function files.normalize(sql)
  local s = sql:gsub("%-%-[^\n]*", " "):gsub("/%*.-%*/", " ")
  s = s:gsub("%s+", " "):gsub("^ ", "")
  return s:upper()
end

--- If the statement cannot run in a transaction block, its kind, else nil.
function files.needs_no_transaction(sql)
  local s = files.normalize(sql)
  for _, r in ipairs(no_tx) do
    if s:match(r[1]) then return r[2] end
  end
end

-- ------------------------------------------------------------ directives

local function parse_list(v)
  local t = {}
  for item in v:gmatch("[^|%s,]+") do t[#t + 1] = item end
  return t
end

--- Directives from the leading comment lines "-- orch: key=value, ...".
-- Returns a table, or raises with the file and line of a bad one.
function files.directives(text, path)
  local d = {}
  local lineno = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if lineno == 1 then line = line:gsub("^\239\187\191", "") end
    if line:match("^%s*$") then goto continue end
    if not line:match("^%s*%-%-") then break end
    local body = line:match("^%s*%-%-%s*orch:%s*(.*)$")
    if body then
      for item in body:gmatch("[^,]+") do
        local k, v = item:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
        if not k then
          sys.error(string.format("%s:%d: bad orch directive '%s' (expected key=value)", path, lineno, item:match("^%s*(.-)%s*$")), 1)
        end
        if k == "transaction" then
          if v ~= "true" and v ~= "false" then
            sys.error(string.format("%s:%d: transaction must be true or false, not '%s'", path, lineno, v), 1)
          end
          d.transaction = v == "true"
        elseif k == "env" then d.env = parse_list(v)
        elseif k == "depends" then d.depends = parse_list(v)
        elseif k == "lock_timeout" or k == "statement_timeout" then d[k] = v
        else
          sys.error(string.format("%s:%d: unknown orch directive '%s' (known: transaction, env, depends, lock_timeout, statement_timeout)", path, lineno, k), 1)
        end
      end
    end
    ::continue::
  end
  return d
end

-- ------------------------------------------------------------ placeholders

--- Replace ${name} with values[name]; an unknown name raises naming the
-- file and line. $${name} stays as the literal text ${name}.
function files.placeholders(text, values, path)
  values = values or {}
  return (text:gsub("()(%$?)%${([%w_.:-]+)}", function(pos, escape, name)
    if escape == "$" then return "${" .. name .. "}" end
    local v = values[name]
    if v == nil then
      sys.error(string.format("%s:%d: unknown placeholder ${%s}: define it in the environment's placeholders " ..
        "or with --placeholder %s=VALUE", path, files.line_of(text, pos), name, name), 1)
    end
    return tostring(v)
  end))
end

-- ------------------------------------------------------------ discovery

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then sys.error("cannot read migration " .. path .. ": " .. tostring(err), 1) end
  local s = f:read("a")
  f:close()
  return s
end

--- Parse one file name. Returns an entry, nil for files that are not
-- migrations (README.md), or raises for a malformed migration name.
function files.parse_name(name, path)
  local ext = name:match("%.(%w+)$")
  if ext ~= "sql" and ext ~= "lua" then return nil end
  local kind, ver, desc = name:match("^([VUR])(.-)__(.+)%.%w+$")
  if not kind then
    sys.error(string.format("malformed migration file name %s: expected V<version>__<description>.%s, " ..
      "U<version>__<description>.%s or R__<description>.%s (two underscores)", path, ext, ext, ext), 1)
  end
  local version
  if kind == "R" then
    if ver ~= "" then
      sys.error(string.format("malformed migration file name %s: a repeatable migration has no version (R__<description>.%s)", path, ext), 1)
    end
  else
    version = files.parse_version(ver)
    if not version then
      sys.error(string.format("malformed migration file name %s: '%s' is not a version (digits separated by . or _)", path, ver), 1)
    end
  end
  return {
    kind = kind, version = version, version_text = version and files.version_string(version),
    description = desc:gsub("_", " "), lang = ext, name = name, path = path,
  }
end

--- Find every migration under dir. Files directly in dir belong to the
-- service "" ; each subdirectory is a service. Returns a list of entries
-- with text, checksum and directives loaded.
function files.scan(dir)
  local st = sys.stat(dir)
  if not st or st.type ~= "directory" then
    sys.error(string.format("migrations directory %s not found: create it, or choose another with --dir", dir), 1)
  end
  local out = {}
  local function scan_dir(path, service)
    for _, name in ipairs(sys.listdir(path) or {}) do
      local full = path .. "/" .. name
      local s = sys.stat(full)
      if s and s.type == "directory" then
        if service == "" and not name:match("^%.") then scan_dir(full, name) end
      elseif s and s.type == "file" then
        local e = files.parse_name(name, full)
        if e then
          e.service = service
          e.text = read(full)
          e.checksum = files.checksum(e.text)
          if e.lang == "sql" then e.directives = files.directives(e.text, full) end
          out[#out + 1] = e
        end
      end
    end
  end
  scan_dir(dir, "")
  return out
end

return files
