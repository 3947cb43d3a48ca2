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

local function key(name) return (name:gsub("-", "_")) end

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
-- The global options (--verbose, --quiet, --json, --help, --version) are
-- orch.cli's table: every spec has them, so they work anywhere on a line.
-- path = true: a path the user typed, relative to where they stand (orch
-- works in the project root, see orch.project); made absolute when parsed.
args.common = {
  db = { name = "db", type = "string", metavar = "URL",
         help = "database URL or conninfo (default: the environment's, else DATABASE_URL, else libpq's PG* variables / service file)" },
  dir = { name = "dir", type = "string", metavar = "DIR", path = true, complete = "directory",
          help = "migrations directory (default: migrations/ in the project root)" },
  env = { name = "env", type = "string", metavar = "NAME", complete = "env", help = "environment from orch.env.lua (default: ORCH_ENV or dev)" },
  fleet_target = { name = "fleet-target", type = "string", metavar = "NAME", complete = "target",
             help = "one target of the environment's fleet (see orch fleet): its database, its backups (backups.dir/NAME) and run logs, its variables" },
  yes = { name = "yes", short = "y", type = "boolean", help = "answer yes to confirmations (for automation)" },
  dry_run = { name = "dry-run", type = "boolean", help = "show what would happen; change nothing" },
}

local function globals()
  local ok, cli = pcall(require, "orch.cli")
  return ok and cli.global_options or {}
end

--- Build a spec from common option names plus extra entries; the global
-- options come last (a name that is a global option picks that one).
function args.spec(names, extra)
  local s, have = {}, {}
  local g = {}
  for _, o in ipairs(globals()) do g[key(o.name)] = o end
  for _, n in ipairs(names) do
    if not g[n] then
      local o = assert(args.common[n], "unknown common option " .. n)
      s[#s + 1] = o
      have[o.name] = true
    end
  end
  for _, e in ipairs(extra or {}) do s[#s + 1] = e; have[e.name] = true end
  for _, o in ipairs(globals()) do if not have[o.name] then s[#s + 1] = o end end
  return s
end

local function convert(cmd, o, v)
  local what = "option --" .. o.name
  if o.type == "number" then
    local n = tonumber(v)
    if not n then args.usage_error(cmd, string.format("%s expects a number, got '%s'", what, v)) end
    if o.min and n < o.min then args.usage_error(cmd, string.format("%s must be %s or more, got '%s'", what, tostring(o.min), v)) end
    return n
  elseif o.type == "integer" then
    local n = v:match("^%s*[+-]?%d+%s*$") and math.tointeger(tonumber(v))
    if not n then args.usage_error(cmd, string.format("%s expects a whole number, got '%s'", what, v)) end
    if o.min and n < o.min then args.usage_error(cmd, string.format("%s must be %d or more, got '%s'", what, o.min, v)) end
    return n
  elseif o.type == "duration" then
    local ok, err = pcall(args.seconds, v, what)
    if not ok then args.usage_error(cmd, tostring(err)) end
    return v
  end
  if o.choices then
    local found = false
    for _, c in ipairs(o.choices) do if c == v then found = true end end
    if not found then
      local list = #o.choices == 1 and o.choices[1] or
        (table.concat(o.choices, ", ", 1, #o.choices - 1) .. " or " .. o.choices[#o.choices])
      args.usage_error(cmd, string.format("%s takes %s, not '%s'", what, list, v))
    end
  end
  if v == "" and not o.empty then args.usage_error(cmd, string.format("%s needs a value, got an empty one", what)) end
  if o.path then v = require("orch.project").from_cwd(v) end
  return v
end

--- Parse argv (a list of strings) against spec. Returns opts (keys with
-- dashes turned into underscores) and the list of positional arguments.
-- Long options as --name=value or --name value, --no-name for booleans;
-- short ones bundled (-yq) and with their value attached (-Z0, -ofile) or
-- apart (-Z 0); "--" ends the options; "-" alone is a positional argument
-- (standard input). Anything else that starts with "-" and is not an
-- option of the spec is a usage error (exit 2), never a positional word.
function args.parse(argv, spec, cmd)
  local by_name, by_short, opts, rest = {}, {}, {}, {}
  for _, o in ipairs(spec) do
    by_name[o.name] = o
    if o.short then by_short[o.short] = o end
    if o.default ~= nil then opts[key(o.name)] = o.default end
    if o.type == "list" and opts[key(o.name)] == nil then opts[key(o.name)] = {} end
  end
  local explicit = {}
  local function set(o, value)
    explicit[key(o.name)] = true
    if o.type == "boolean" then
      opts[key(o.name)] = value
    elseif o.type == "list" then
      local l = opts[key(o.name)]
      local n = 0
      for part in value:gmatch("[^,]+") do l[#l + 1] = convert(cmd, o, part); n = n + 1 end
      if n == 0 then args.usage_error(cmd, string.format("option --%s needs a value, got '%s'", o.name, value)) end
    else
      opts[key(o.name)] = convert(cmd, o, value)
    end
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do rest[#rest + 1] = argv[j] end
      break
    end
    if a:sub(1, 2) == "--" then
      local name, value = a:match("^%-%-([%w][%w%-]*)=(.*)$")
      if not name then name = a:match("^%-%-([%w][%w%-]*)$") end
      if not name then args.usage_error(cmd, string.format("malformed option '%s'", a)) end
      local o = by_name[name]
      if not o and name:sub(1, 3) == "no-" and by_name[name:sub(4)] and by_name[name:sub(4)].type == "boolean" then
        if value ~= nil then args.usage_error(cmd, string.format("option --%s takes no value (got '%s')", name, value)) end
        set(by_name[name:sub(4)], false)
      elseif not o then
        args.usage_error(cmd, string.format("unknown option --%s", name))
      elseif o.type == "boolean" then
        if value == nil or value == "true" or value == "1" or value == "yes" then set(o, true)
        elseif value == "false" or value == "0" or value == "no" then set(o, false)
        else args.usage_error(cmd, string.format("option --%s takes no value (got '%s')", o.name, value)) end
      else
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then args.usage_error(cmd, string.format("option --%s needs a value", o.name)) end
        end
        set(o, value)
      end
    elseif a:sub(1, 1) == "-" and #a > 1 then
      -- short options: -y, -yq (booleans bundled), -Z0 / -Z 0 (a value attached or next)
      local j = 2
      while j <= #a do
        local c = a:sub(j, j)
        local o = by_short[c]
        if not o then
          args.usage_error(cmd, #a > 2 and string.format("unknown option -%s in %s", c, a) or string.format("unknown option %s", a))
        end
        if o.type == "boolean" then
          set(o, true)
          j = j + 1
        else
          local value = a:sub(j + 1)
          if value == "" then
            i = i + 1
            value = argv[i]
            if value == nil then args.usage_error(cmd, string.format("option -%s (--%s) needs a value", c, o.name)) end
          end
          set(o, value)
          break
        end
      end
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  -- the global options given before the command (orch -q backup) count here too
  local ok, cli = pcall(require, "orch.cli")
  if ok and cli.apply_globals then cli.apply_globals(opts, spec, explicit) end
  return opts, rest
end

--- Wrap text to width columns (default 79) behind left (the start of the
-- first line, kept as it is); later lines start with indent (default: as
-- many blanks as left is wide).
function args.hang(left, text, width, indent)
  width = width or 79
  indent = indent or string.rep(" ", utf8.len(left) or #left)
  local lines, line, len = {}, left, utf8.len(left) or #left
  local fresh = true
  for word in text:gmatch("%S+") do
    local wl = utf8.len(word) or #word
    if not fresh and len + 1 + wl > width then
      lines[#lines + 1] = line
      line, len = indent .. word, #indent + wl
    elseif fresh then
      line, len = line .. word, len + wl
    else
      line, len = line .. " " .. word, len + 1 + wl
    end
    fresh = false
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n")
end

--- Wrap a paragraph to width columns (default 79); later lines start with indent.
function args.wrap(text, width, indent)
  local lead = text:match("^%s*")
  return args.hang(lead, text, width, indent or lead)
end

--- How an option is written on the left of --help: "-y, --yes", "    --db URL".
function args.left(o)
  local l = (o.short and ("-" .. o.short .. ", ") or "    ") .. "--" .. o.name
  if o.type ~= "boolean" then l = l .. " " .. (o.metavar or o.name:upper()) end
  return l
end

--- An option's help text with its default.
function args.describe(o)
  local h = o.help or ""
  if o.default ~= nil and o.type ~= "boolean" then h = h .. " (default: " .. tostring(o.default) .. ")" end
  return h
end

--- A spec as data (orch help --json): each option's name, short name, type,
-- value name, default, allowed values and help, and whether it is global.
function args.data(spec)
  local out = {}
  for _, o in ipairs(spec) do
    local d = { name = o.name, short = o.short, type = o.type, help = o.help, global = o.global or false }
    if o.type ~= "boolean" then d.metavar = o.metavar or o.name:upper() end
    if type(o.default) ~= "table" and type(o.default) ~= "function" then d.default = o.default end
    if type(o.choices) == "table" then d.choices = o.choices end
    out[#out + 1] = d
  end
  return out
end

--- Format the option list of a spec for --help: its own options, one per
-- line (wrapped), then the global options on one line.
function args.help(spec)
  local lines, width, own, global = {}, 0, {}, {}
  for _, o in ipairs(spec) do
    if o.global then global[#global + 1] = o else own[#own + 1] = o end
  end
  for _, o in ipairs(own) do width = math.max(width, #args.left(o)) end
  width = math.min(width, 28)
  for _, o in ipairs(own) do
    local l = args.left(o)
    local pad = string.rep(" ", width + 4)
    if #l > width then
      lines[#lines + 1] = "  " .. l
      lines[#lines + 1] = args.hang(pad, args.describe(o))
    else
      lines[#lines + 1] = args.hang(string.format("  %-" .. width .. "s  ", l), args.describe(o))
    end
  end
  if #global > 0 then
    local names = {}
    for _, o in ipairs(global) do names[#names + 1] = (o.short and ("-" .. o.short .. "/") or "") .. "--" .. o.name end
    if #own > 0 then lines[#lines + 1] = "" end
    lines[#lines + 1] = "  global options: " .. table.concat(names, ", ") .. " (orch --help)"
  end
  return table.concat(lines, "\n")
end

return args
