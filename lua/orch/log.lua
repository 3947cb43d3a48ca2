--- orch.log: messages for people (stderr) with levels, colour on a terminal,
-- and silence in --json / --quiet mode. Server notices from orch.db arrive
-- here too. Secrets are masked by log.redact before anything is printed.
local sys = require "orch.sys"

-- Colour (and other control codes) only on a terminal, never with NO_COLOR
-- set to anything but the empty string (no-color.org), never on TERM=dumb.
-- Decided per stream: stdout piped into a file gets none even when stderr
-- is a terminal.
local function colour(fd)
  local nc = os.getenv("NO_COLOR")
  return sys.isatty(fd) and (nc == nil or nc == "") and os.getenv("TERM") ~= "dumb"
end

local log = {
  level = os.getenv("ORCH_LOG_LEVEL") or "info",
  color = colour(2),          -- stderr: messages
  color_stdout = colour(1),   -- stdout: results
  out = io.stderr,
}

--- May control codes (colour, \r progress lines) go to the stream
-- ("stdout" or "stderr", default stdout)?
function log.terminal(stream)
  if stream == "stderr" then return log.color end
  return log.color_stdout
end

local ranks = { debug = 1, info = 2, notice = 2, warn = 3, error = 4, quiet = 5 }
local colors = { debug = "2", warn = "33", error = "31;1", notice = "36", ok = "32" }

--- Remove passwords and tokens from a string: URL userinfo, password=...,
-- Authorization / token headers, and any value registered with log.secret.
local secrets = {}
function log.secret(value)
  if type(value) == "string" and #value >= 4 then secrets[#secrets + 1] = value end
end

function log.redact(s)
  s = tostring(s)
  s = s:gsub("(%a[%w+.-]*://[^:/@%s]*):[^@%s]*@", "%1:***@")
  s = s:gsub("([Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*)'[^']*'", "%1'***'")
  s = s:gsub("([Pp][Aa][Ss][Ss][Ww][Oo][Rr][Dd]%s*=%s*)[^%s']+", "%1***")
  s = s:gsub("([Aa]uthorization:%s*)[^\r\n]+", "%1***")
  for _, v in ipairs(secrets) do
    s = s:gsub(v:gsub("%p", "%%%0"), "***")
  end
  return s
end

--- Make the log at least as quiet as level (never louder): --json asks
-- for "warn", --quiet for "error", whatever was set before.
function log.quiet_to(level)
  if (ranks[level] or 2) > (ranks[log.level] or 2) then log.level = level end
end

function log.enabled(level)
  return (ranks[level] or 2) >= (ranks[log.level] or 2)
end

--- text in the colour of kind, when the stream it goes to (default
-- stdout; "stderr" for messages) is a terminal that takes colour.
function log.paint(kind, text, stream)
  if not log.terminal(stream) or not colors[kind] then return text end
  return "\27[" .. colors[kind] .. "m" .. text .. "\27[0m"
end

-- A Lua value for people: strings as they are, tables by their fields.
local function show(v, depth)
  if type(v) == "string" then return (string.format("%q", v):gsub("\\\n", "\\n")) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if depth > 2 then return "{...}" end
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local name = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or ("[" .. show(k, depth + 1) .. "]")
    parts[#parts + 1] = name .. " = " .. show(v[k], depth + 1)
  end
  if #parts == 0 then return "{}" end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

--- The text of an error value: a string as it is; an error object by its
-- __tostring; any other table by its fields (its message first when it
-- has one), never "table: 0x...".
function log.error_text(e)
  if type(e) == "string" then return e end
  if type(e) ~= "table" then
    if e == nil then return "an error without a message (error(nil))" end
    return tostring(e)
  end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  local headline = type(e.message) == "string" and e.message or type(e.error) == "string" and e.error or nil
  local rest = {}
  for k, v in pairs(e) do
    if not (headline and (k == "message" or (k == "error" and e.message == nil))) and k ~= "exit_code" then rest[k] = v end
  end
  if headline then
    if next(rest) == nil then return headline end
    return headline .. " " .. show(rest, 1)
  end
  if next(rest) == nil then return "an error raised as an empty table" end
  return "an error raised as a table: " .. show(rest, 1)
end

local function emit(level, fmt, ...)
  if not log.enabled(level) then return end
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  local prefix = level == "info" and "" or log.paint(level, level .. ": ", "stderr")
  log.out:write(prefix, log.redact(msg), "\n")
  log.out:flush()
end

function log.debug(fmt, ...) emit("debug", fmt, ...) end
function log.info(fmt, ...) emit("info", fmt, ...) end
function log.warn(fmt, ...) emit("warn", fmt, ...) end
function log.error(fmt, ...) emit("error", fmt, ...) end

-- Server notices: WARNING and above always, NOTICE unless quiet, the rest in debug.
require("orch.db").on_notice(function(severity, message)
  local level = (severity == "WARNING" or severity == "ERROR") and "warn"
    or (severity == "NOTICE" or severity == "INFO") and "info" or "debug"
  emit(level, "server %s: %s", severity, message)
end)

return log
