--- orch.args: command-line options for built-in commands and recipes.
--
--   local opts, rest = args.parse(argv, spec, "migrate")
--
-- spec is a list of { name, type = "string"|"number"|"boolean"|"list",
-- short = "y", metavar = "URL", help = "...", default = v }. Accepts
-- --name=value, --name value, -x, --no-flag for booleans and "--" to end
-- options. A mistake raises a usage error (exit code 2) that names the
-- option and points at --help.
local sys = require "orch.sys"

local args = {}

--- Seconds from a number (seconds) or a text "250ms", "5s", "2m", "1h",
-- "1d", "2w": the durations of options and of orch.env.lua settings. A bad
-- one raises a plain message naming `what`.
function args.seconds(v, what)
  if v == nil then return nil end
  if type(v) == "number" then return v end
  local n, unit = tostring(v):match("^%s*([%d.]+)%s*(%a*)%s*$")
  local mult = ({ [""] = 1, ms = 0.001, s = 1, sec = 1, m = 60, min = 60, h = 3600, d = 86400, w = 604800 })[unit or ""]
  if not n or not tonumber(n) or not mult then
    error(string.format("%s: '%s' is not a duration (use e.g. 500ms, 5s, 2m)", what or "duration", tostring(v)), 0)
  end
  return tonumber(n) * mult
end

function args.usage_error(cmd, msg)
  local where = cmd and ("orch " .. cmd) or "orch"
  sys.error(string.format("%s\nsee '%s --help'", msg, where), 2)
end

-- Options most commands share; commands pick the ones they take by name.
args.common = {
  db = { name = "db", type = "string", metavar = "URL",
         help = "database URL or conninfo (default: the environment's, else DATABASE_URL, else libpq's PG* variables / service file)" },
  dir = { name = "dir", type = "string", metavar = "DIR", help = "migrations directory (default: migrations/)" },
  env = { name = "env", type = "string", metavar = "NAME", help = "environment from orch.env.lua (default: ORCH_ENV or dev)" },
  json = { name = "json", type = "boolean", help = "print a machine-readable JSON result on stdout" },
  yes = { name = "yes", short = "y", type = "boolean", help = "answer yes to confirmations (for automation)" },
  dry_run = { name = "dry-run", type = "boolean", help = "show what would happen; change nothing" },
  verbose = { name = "verbose", short = "v", type = "boolean", help = "more detail, tracebacks on errors" },
  quiet = { name = "quiet", short = "q", type = "boolean", help = "only errors" },
}

--- Build a spec from common option names plus extra entries.
function args.spec(names, extra)
  local s = {}
  for _, n in ipairs(names) do
    s[#s + 1] = assert(args.common[n], "unknown common option " .. n)
  end
  for _, e in ipairs(extra or {}) do s[#s + 1] = e end
  s[#s + 1] = { name = "help", short = "h", type = "boolean", help = "show this help" }
  return s
end

local function key(name) return (name:gsub("-", "_")) end

local function convert(cmd, o, v)
  if o.type == "number" then
    local n = tonumber(v)
    if not n then args.usage_error(cmd, string.format("option --%s expects a number, got '%s'", o.name, v)) end
    return n
  end
  return v
end

--- Parse argv (a list of strings) against spec. Returns opts (keys with
-- dashes turned into underscores) and the list of positional arguments.
function args.parse(argv, spec, cmd)
  local by_name, by_short, opts, rest = {}, {}, {}, {}
  for _, o in ipairs(spec) do
    by_name[o.name] = o
    if o.short then by_short[o.short] = o end
    if o.default ~= nil then opts[key(o.name)] = o.default end
    if o.type == "list" and opts[key(o.name)] == nil then opts[key(o.name)] = {} end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do rest[#rest + 1] = argv[j] end
      break
    end
    local name, value = a:match("^%-%-([%w][%w%-]*)=(.*)$")
    if not name then name = a:match("^%-%-([%w][%w%-]*)$") end
    local o
    if name then
      o = by_name[name]
      if not o and name:sub(1, 3) == "no-" and by_name[name:sub(4)] and by_name[name:sub(4)].type == "boolean" then
        opts[key(name:sub(4))] = false
        goto continue
      end
      if not o then args.usage_error(cmd, string.format("unknown option --%s", name)) end
    elseif a:match("^%-%a$") then
      o = by_short[a:sub(2)]
      if not o then args.usage_error(cmd, string.format("unknown option %s", a)) end
    elseif a:match("^%-%a%a+$") and by_short[a:sub(2, 2)] then
      -- bundled short booleans: -yq
      for c in a:sub(2):gmatch(".") do
        local b = by_short[c]
        if not b or b.type ~= "boolean" then args.usage_error(cmd, string.format("unknown option -%s in %s", c, a)) end
        opts[key(b.name)] = true
      end
      goto continue
    else
      rest[#rest + 1] = a
      goto continue
    end
    if o.type == "boolean" then
      if value ~= nil then
        if value == "true" or value == "1" or value == "yes" then opts[key(o.name)] = true
        elseif value == "false" or value == "0" or value == "no" then opts[key(o.name)] = false
        else args.usage_error(cmd, string.format("option --%s takes no value (got '%s')", o.name, value)) end
      else
        opts[key(o.name)] = true
      end
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then args.usage_error(cmd, string.format("option --%s needs a value", o.name)) end
      end
      if o.type == "list" then
        local l = opts[key(o.name)]
        for part in value:gmatch("[^,]+") do l[#l + 1] = part end
      else
        opts[key(o.name)] = convert(cmd, o, value)
      end
    end
    ::continue::
    i = i + 1
  end
  return opts, rest
end

--- Format the option list of a spec for --help.
function args.help(spec)
  local lines, width = {}, 0
  local left = {}
  for i, o in ipairs(spec) do
    local l = (o.short and ("-" .. o.short .. ", ") or "    ") .. "--" .. o.name
    if o.type ~= "boolean" then l = l .. " " .. (o.metavar or o.name:upper()) end
    left[i] = l
    if #l > width then width = #l end
  end
  for i, o in ipairs(spec) do
    local h = o.help or ""
    if o.default ~= nil and o.type ~= "boolean" then h = h .. " (default: " .. tostring(o.default) .. ")" end
    lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", left[i], h)
  end
  return table.concat(lines, "\n")
end

return args
