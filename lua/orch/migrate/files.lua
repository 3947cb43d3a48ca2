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
  if not s:find("[^%d]") then return { math.tointeger(tonumber(s)) or tonumber(s) } end   -- "42": the common case
  local parts = {}
  for p in (s:gsub("_", ".") .. "."):gmatch("([^.]*)%.") do
    if not p:match("^%d+$") then return nil end
    parts[#parts + 1] = math.tointeger(tonumber(p)) or tonumber(p)
  end
  return parts
end

--- A string that sorts as the version does (each part zero-padded, the
-- trailing zero parts dropped): comparing keys is comparing versions.
function files.version_key(v)
  local n = #v
  if n == 1 then return string.format("%020.0f", v[1]) end
  while n > 1 and v[n] == 0 do n = n - 1 end
  local t = {}
  for i = 1, n do t[i] = string.format("%020.0f", v[i]) end
  return table.concat(t, ".")
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
  if n == 1 then return tostring(v[1]) end
  while n > 1 and v[n] == 0 do n = n - 1 end
  local t = {}
  for i = 1, n do t[i] = tostring(v[i]) end
  return table.concat(t, ".")
end

-- ------------------------------------------------------------ checksums

--- Flyway's checksum: CRC-32 over the lines without their endings (\r\n,
-- \r or \n), a leading UTF-8 BOM removed, as a signed 32-bit integer.
-- CRC-32 runs on: the CRC of line after line is the CRC of the text with
-- every \r and \n removed, so one linear pass does (a search for the next
-- line end from each line was quadratic: 4 MB took minutes).
function files.checksum(text)
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  local crc = sys.crc32(text, 0, true)   -- without the \r and \n bytes
  if crc >= 0x80000000 then crc = crc - 0x100000000 end
  return math.tointeger(crc)
end

-- ------------------------------------------------------------ SQL text

--- Split a SQL script into statements with PostgreSQL's own parser (see
-- orch.migrate.split: dollar quotes, comments, BEGIN ATOMIC bodies, COPY
-- ... FROM STDIN data up to a line "\."). Returns a list of { sql, line,
-- pos, copy } (with opts.trees also tree, base). Text the parser rejects
-- raises "path:line:column: message".
function files.split_sql(text, path, opts)
  return require("orch.migrate.split").statements(text, path, opts)
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

local function append(t, list)
  t = t or {}
  for _, x in ipairs(list) do t[#t + 1] = x end
  return t
end

-- The values of a "-- Dependencies:" header (brief 004's migration script
-- structure): versions or file names, separated by commas or spaces, with
-- optional brackets and quotes; "none", "n/a", "-" and "[]" say there are none.
local function dependency_list(v)
  local t = {}
  for item in v:gsub("[%[%]\"']", " "):gmatch("[^,%s]+") do
    local l = item:lower()
    if l ~= "none" and l ~= "n/a" and l ~= "-" then t[#t + 1] = item end
  end
  return t
end

--- Directives from the leading comment lines "-- orch: key=value, ...",
-- and a "-- Dependencies: a, b" header among them (as depends). depends
-- and env given twice (two keys, two lines, "depends=a:V1, b:V2") are all
-- kept. Returns a table, or raises with the file and line of a bad one.
function files.directives(text, path)
  local d = {}
  local lineno = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if lineno == 1 then line = line:gsub("^\239\187\191", "") end
    if line:match("^%s*$") then goto continue end
    if not line:match("^%s*%-%-") then break end
    local deps = line:match("^%s*%-%-%s*[Dd]ependencies%s*:%s*(.-)%s*$")
    if deps and #dependency_list(deps) > 0 then d.depends = append(d.depends, dependency_list(deps)) end
    local body = line:match("^%s*%-%-%s*orch:%s*(.*)$")
    if body and body:match("^lint%-") then body = nil end -- orch:lint-ignore / orch:lint-disable: lint's, not a directive
    if body then
      local last -- the list-valued key an item without '=' continues (depends=a:V1, b:V2)
      for item in body:gmatch("[^,]+") do
        local k, v = item:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
        if not k and last and item:match("^%s*[^=%s][^=]*$") then k, v = last, item:match("^%s*(.-)%s*$") end
        if not k then
          sys.error(string.format("%s:%d: bad orch directive '%s' (expected key=value)", path, lineno, item:match("^%s*(.-)%s*$")), 1)
        end
        last = nil
        if k == "transaction" then
          if v ~= "true" and v ~= "false" then
            sys.error(string.format("%s:%d: transaction must be true or false, not '%s'", path, lineno, v), 1)
          end
          d.transaction = v == "true"
        elseif k == "env" then d.env = append(d.env, parse_list(v)); last = k
        elseif k == "depends" then d.depends = append(d.depends, parse_list(v)); last = k
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

-- ------------------------------------------------------------ self-wrapped transactions

local function control(sql)
  local n = files.normalize(sql):gsub("%s*;%s*$", "")
  local modes = n:match("^BEGIN$") and "" or n:match("^BEGIN TRANSACTION ?(.*)$") or n:match("^BEGIN WORK ?(.*)$")
    or n:match("^START TRANSACTION ?(.*)$") or (not n:match("^BEGIN ATOMIC") and n:match("^BEGIN (ISOLATION .*)$"))
    or n:match("^BEGIN (READ .*)$") or n:match("^BEGIN (NOT DEFERRABLE.*)$") or n:match("^BEGIN (DEFERRABLE.*)$")
  if modes then return "begin", modes end
  if n == "COMMIT" or n == "COMMIT WORK" or n == "COMMIT TRANSACTION" or n == "END" or n == "END WORK" or n == "END TRANSACTION" then
    return "commit"
  end
  if n:match("^COMMIT") or n:match("^END ?%u*$") or n:match("^ROLLBACK") or n:match("^ABORT") then return "other" end
end

--- A script that wraps itself in one transaction (BEGIN; ... COMMIT;, as
-- brief 004's scripts do) runs as the one transaction orch opens for it:
-- returns its statements without the wrapper (a "SET TRANSACTION modes" in
-- place of "BEGIN ISOLATION LEVEL ..."), and true; other scripts come back
-- as they are, with false. A script with transaction control anywhere else
-- (two blocks, a ROLLBACK, BEGIN without its COMMIT) raises naming the line.
function files.unwrap_transaction(stmts, path)
  local first, last = stmts[1], stmts[#stmts]
  if not first or control(first.sql) ~= "begin" then return stmts, false end
  local _, modes = control(first.sql)
  if #stmts < 2 or control(last.sql) ~= "commit" then
    sys.error(string.format("%s:%d: the script opens a transaction (BEGIN) but does not end with COMMIT; orch runs a file as one " ..
      "transaction: end it with COMMIT;, or remove the BEGIN", path, first.line), 1)
  end
  local out = {}
  if modes ~= "" then out[1] = { sql = "SET TRANSACTION " .. modes, line = first.line, pos = first.pos } end
  for i = 2, #stmts - 1 do
    local s = stmts[i]
    if control(s.sql) then
      sys.error(string.format("%s:%d: %s inside the script's own BEGIN ... COMMIT: orch runs a file as one transaction, so a " ..
        "script may wrap itself in one block only: split it into files, or add '-- orch: transaction=false' to run it as written",
        path, s.line, files.normalize(s.sql):gsub("%s*;%s*$", "")), 1)
    end
    out[#out + 1] = s
  end
  return out, true
end

-- ------------------------------------------------------------ placeholders

--- Replace ${name} with values[name]; an unknown name raises naming the
-- file and line. $${name} stays as the literal text ${name}.
function files.placeholders(text, values, path)
  values = values or {}
  -- most files have none: a plain search is ~100x faster than the pattern over a big data migration
  if not text:find("${", 1, true) then return text end
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
  local s, rerr = f:read("a")
  f:close()
  if not s then sys.error("cannot read migration " .. path .. ": " .. tostring(rerr), 1) end
  return s
end

--- Refuse a migration that is not UTF-8 text (a binary file, another
-- encoding), naming the file and the first bad byte by its offset (from 0)
-- and line; the bytes themselves are never echoed.
function files.check_text(text, path)
  local where = function(pos)
    local line = files.line_of(text, pos)
    local bol = 1
    for p in text:sub(1, pos - 1):gmatch("()\n") do bol = p + 1 end
    return string.format("at byte offset %d (line %d, byte %d of the line)", pos - 1, line, pos - bol + 1)
  end
  local nul = text:find("\0", 1, true)
  if nul then
    sys.error(string.format("migration %s is a binary file, not text: a NUL byte %s; nothing was checked or applied", path, where(nul)), 1)
  end
  local ok, bad = utf8.len(text)
  if not ok then
    sys.error(string.format("migration %s is not UTF-8 text: the byte 0x%02X %s is not valid UTF-8; save the file as UTF-8 " ..
      "(orch reads migrations as UTF-8, as Flyway does); nothing was checked or applied", path, text:byte(bad), where(bad)), 1)
  end
end

-- Files that look like migrations but are not run (an upper-case
-- extension, an editor's or a backup copy): why, or nil. Such a file is
-- warned about by name, once per process, never silently left out.
local warned = {}
local function lookalike(name)
  if name:match("%.sql$") or name:match("%.lua$") then return nil end
  local lower = name:lower()
  local ext = lower:match("%.(sql)$") or lower:match("%.(lua)$")
  if ext then
    return string.format("its extension is %s, not .%s: rename it %s to run it", name:match("%.[^.]+$"), ext,
      name:sub(1, #name - 4) .. "." .. ext)
  end
  if lower:match("%.sql") or lower:match("%.lua") then
    return "its name does not end in .sql or .lua (an editor's or a backup copy?): orch does not run it"
  end
  return nil
end

local function warn_ignored(ignored, path, why)
  ignored[#ignored + 1] = { path = path, why = why }
  if warned[path] then return end
  warned[path] = true
  require("orch.log").warn("ignored %s: it looks like a migration, but %s", path, why)
end

-- The folders of a service (brief 004): schema/ and data/ hold its
-- migrations, seeds/ its seed data (only in the environments that load
-- seeds), rollback/ the undo of the same-named migration.
files.folders = { schema = true, data = true, seeds = true, rollback = true }

local NAMES = "V<version>__<description>.%s, U<version>__<description>.%s or R__<description>.%s (Flyway's), " ..
  "<timestamp>_<sequence>_<description>.%s (20240101_001_create_users.%s) or <number>_<description>.%s (001_initial_schema.%s)"

local function malformed(path, ext, why)
  sys.error(string.format("malformed migration file name %s: %s; expected " .. NAMES, path, why,
    ext, ext, ext, ext, ext, ext, ext), 1)
end

--- Parse one file name. Returns an entry, nil for files that are not
-- migrations (README.md), or raises for a malformed migration name.
-- Besides Flyway's names, numbered ones: 20240101_001_x.sql (a timestamp
-- and a sequence: version 20240101.1) and 001_x.sql (version 1). A name
-- N_M_x.sql whose N is shorter than a date (001_002_x.sql) can be read
-- either way: layout ("timestamp" or "sequential", from orch.env.lua's
-- migrations = { layout = ... }) says which, and without it such a name is
-- an error that says so.
function files.parse_name(name, path, layout)
  local ext = name:match("%.(%w+)$")
  if ext ~= "sql" and ext ~= "lua" then return nil end
  local stem = name:sub(1, #name - #ext - 1)
  -- a verify script (sqitch's): V3__x.verify.sql, 001_x.verify.sql checks what its migration made
  local verify = stem:match("%.verify$") ~= nil
  if verify then
    local e = files.parse_name(stem:sub(1, #stem - 7) .. "." .. ext, path, layout)
    if e.kind ~= "V" then
      sys.error(string.format("%s: a verify script belongs to a versioned migration (V<version>__x.verify.sql or 001_x.verify.sql)", path), 1)
    end
    e.kind, e.name = "verify", name
    return e
  end
  if stem:match("^%d") then
    -- golang-migrate's pairs: 000001_x.up.sql and its undo 000001_x.down.sql
    local updown = stem:match("%.(up)$") or stem:match("%.(down)$")
    if updown then stem = stem:sub(1, #stem - #updown - 1) end
    local a, b, rest = stem:match("^(%d+)_(%d+)_(.+)$")
    local version, desc, kind_of
    if a and (layout == "timestamp" or (layout == nil and #a >= 8)) then
      version, desc, kind_of = { math.tointeger(tonumber(a)), math.tointeger(tonumber(b)) }, rest, "timestamp"
    elseif a and layout == nil then
      sys.error(string.format("%s: is %s_%s the version %s.%s (a timestamp and a sequence) or the version %s described as '%s'? " ..
        "Say which in orch.env.lua with one line: migrations = { layout = \"timestamp\" } (version %s.%s) or " ..
        "migrations = { layout = \"sequential\" } (version %s)", path, a, b, tonumber(a), tonumber(b), tonumber(a),
        (b .. " " .. rest):gsub("_", " "), tonumber(a), tonumber(b), tonumber(a)), 1)
    elseif layout == "timestamp" then
      malformed(path, ext, "the layout is \"timestamp\" (orch.env.lua) and the name is not <timestamp>_<sequence>_<description>")
    else
      local n, d = stem:match("^(%d+)_(.+)$")
      if not n then malformed(path, ext, "no description after the number") end
      version, desc, kind_of = { math.tointeger(tonumber(n)) }, d, "sequential"
    end
    if desc:match("^_*$") then malformed(path, ext, "the description is empty") end
    return {
      kind = updown == "down" and "U" or "V", version = version, version_text = files.version_string(version), naming = kind_of,
      description = desc:gsub("_", " "), lang = ext, name = name, path = path,
    }
  end
  local kind, ver, desc = name:match("^([VUR])(.-)__(.+)%.%w+$")
  if not kind then
    malformed(path, ext, name:match("^[VUR]") and "a Flyway name has two underscores (__) between the version and the description"
      or "not a name orch knows")
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
    kind = kind, version = version, version_text = version and files.version_string(version), naming = "flyway",
    description = desc:gsub("_", " "), lang = ext, name = name, path = path,
  }
end

--- Find every migration under dir. Files directly in dir belong to the
-- service "" ; each subdirectory is a service. A service's (or dir's own)
-- schema/, data/, seeds/ and rollback/ folders hold its migrations (see
-- files.folders); seeds/NAME/ holds the seeds of environment NAME only.
-- opts: layout (see parse_name). Returns a list of entries with text,
-- checksum and directives loaded; each says its folder (nil, "schema",
-- "data", "seeds" or "rollback") and, for seeds/NAME/, seed_env = NAME.
function files.scan(dir, opts)
  opts = opts or {}
  local P = require "orch.project"
  local st, _, errno = sys.stat(dir)
  local loop = not st and P.loop_message(dir, errno)
  if loop then sys.error("the migrations directory " .. loop, 1) end
  if st and st.type ~= "directory" then
    sys.error(string.format("the migrations directory %s is a %s, not a directory: choose another with --dir", dir, st.type), 1)
  end
  if not st then
    sys.error(string.format("migrations directory %s not found: create it, or choose another with --dir", P.path(dir)), 1)
  end
  local real_dir = sys.realpath(dir) or dir
  local out, ignored = {}, {}
  -- a directory orch does not look into, holding files named like migrations: an error, never left out unsaid
  local function refuse_dir(full, why)
    for _, n in ipairs(sys.listdir(full) or {}) do
      if (n:match("%.sql$") or n:match("%.lua$")) and not n:match("^%.") then
        sys.error(string.format("%s holds %s, but orch does not look for migrations there: %s; nothing was checked or applied",
          full, n, why), 1)
      end
    end
  end
  -- Anything orch cannot read is an error, never "up to date": an unreadable
  -- directory, a migration name that is a dangling link, a directory, a FIFO.
  local function scan_dir(path, service, folder, seed_env)
    local names, lerr = sys.listdir(path)
    if not names then
      sys.error(string.format("cannot read the migrations %s %s: %s; nothing was checked or applied",
        service == "" and "directory" or ("of service '" .. service .. "' in"), path, tostring(lerr)), 1)
    end
    for _, name in ipairs(names) do
      local full = path .. "/" .. name
      local s, serr, serrno = sys.stat(full)
      local eloop = not s and P.loop_message(full, serrno)
      if eloop then sys.error(string.format("cannot read %s; nothing was checked or applied", eloop), 1) end
      local migration_name = name:match("%.sql$") or name:match("%.lua$")
      if migration_name and not name:match("^%.") and not (s and s.type == "file") then
        sys.error(string.format("cannot read migration %s: %s; nothing was checked or applied", full,
          not s and tostring(serr) or ("it is a " .. s.type .. ", not a file")), 1)
      end
      if not s and not name:match("^%.") then
        local ls = sys.stat(full, true)
        if not (ls and ls.type == "link") then
          sys.error(string.format("cannot read %s in the migrations directory: %s", full, tostring(serr)), 1)
        end
      end
      if s and s.type == "directory" and not name:match("^%.") then
        local real = sys.realpath(full) or full
        if real_dir == real or real_dir:sub(1, #real + 1) == real .. "/" then
          sys.error(string.format("the %s directory %s is a symbolic link loop: it leads back to %s, %s; " ..
            "nothing was checked or applied", service == "" and not files.folders[name] and "service" or "migrations", full, real,
            real == real_dir and "the migrations directory itself" or "a directory that holds the migrations directory"), 1)
        end
        if not folder and files.folders[name] then
          scan_dir(full, service, name)
        elseif folder == "seeds" and not seed_env then
          scan_dir(full, service, folder, name)
        elseif service == "" and not folder then
          scan_dir(full, name)
        else
          refuse_dir(full, folder and string.format("a %s/ folder has no subfolders%s", folder,
            folder == "seeds" and " but one per environment (seeds/dev/)" or "")
            or string.format("the folders of service '%s' are schema/, data/, seeds/ and rollback/", service))
        end
      elseif s and s.type == "file" and name:lower():match("depend.*%.ya?ml$") then
        -- brief 004's migration-dependencies.yml: orch reads each file's own header instead, and says so
        require("orch.log").warn("%s is not read: orch takes a migration's dependencies from its own '-- Dependencies:' " ..
          "header (or '-- orch: depends=...'); check that the headers say what this file says", full)
      elseif s and s.type == "file" and name == "schema.sql" and path == dir then
        -- the schema snapshot orch migrate writes (--schema-file), not a migration
      elseif s and s.type == "file" then
        local e = files.parse_name(name, full, opts.layout)
        local why = not e and lookalike(name)
        if why then warn_ignored(ignored, full, why) end
        if e then
          e.service = service
          e.folder, e.seed_env = folder, seed_env
          if folder == "rollback" then
            if e.kind ~= "V" and e.kind ~= "U" then
              sys.error(string.format("%s is in rollback/, which holds the undo of the same-named migration; a repeatable " ..
                "migration has no undo: move it to schema/", full), 1)
            end
            e.kind = "U"
          end
          e.text = read(full)
          files.check_text(e.text, full)
          e.checksum = files.checksum(e.text)
          if e.lang == "sql" then e.directives = files.directives(e.text, full) end
          out[#out + 1] = e
        end
      end
    end
  end
  scan_dir(dir, "")
  return out, ignored
end

return files
