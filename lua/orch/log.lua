--- orch.log: messages for people (stderr) with levels, colour on a terminal,
-- and silence in --json / --quiet mode. Server notices from orch.db arrive
-- here too. Secrets are masked by log.redact before anything is printed.
local sys = require "orch.sys"

local log = {
  level = os.getenv("ORCH_LOG_LEVEL") or "info",
  color = sys.isatty(2) and os.getenv("NO_COLOR") == nil and os.getenv("TERM") ~= "dumb",
  out = io.stderr,
}

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

function log.enabled(level)
  return (ranks[level] or 2) >= (ranks[log.level] or 2)
end

function log.paint(kind, text)
  if not log.color or not colors[kind] then return text end
  return "\27[" .. colors[kind] .. "m" .. text .. "\27[0m"
end

local function emit(level, fmt, ...)
  if not log.enabled(level) then return end
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  local prefix = level == "info" and "" or log.paint(level, level .. ": ")
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
