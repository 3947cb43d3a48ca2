--- orch.cli: the command line. `orch COMMAND [options]` runs a built-in
-- command (a module in lua/orch/cmd/), `orch FILE.lua [args]` runs a recipe.
-- main() returns the exit code; errors are raised and printed by the host.
local sys = require "orch.sys"
local log = require "orch.log"
local args = require "orch.args"

local cli = {}

--- The built-in commands, found in lua/orch/cmd/*.lua (embedded or from
-- ORCH_LUA_PATH). Returns a sorted list of names.
function cli.commands()
  local names = {}
  local over = os.getenv("ORCH_LUA_PATH")
  if over and over ~= "" then
    for _, f in ipairs(sys.listdir(over .. "/orch/cmd") or {}) do
      local n = f:match("^(.-)%.lua$")
      if n then names[#names + 1] = n end
    end
  else
    for _, p in ipairs(package.orch_embedded_list("orch/cmd/")) do
      names[#names + 1] = p:match("^orch/cmd/(.-)%.lua$")
    end
  end
  table.sort(names)
  return names
end

local function command(name)
  if not name:match("^[%w_-]+$") then return nil end
  for _, n in ipairs(cli.commands()) do
    if n == name then return require("orch.cmd." .. name) end
  end
end

local function version()
  return string.format("orch %s (Lua %s, libpq %d, %s)", package.orch_version,
    _VERSION:match("%d+%.%d+"), require("orch.db").lib_version(), jit and "LuaJIT" or "PUC Lua")
end

local function help()
  local lines = {
    "orch - PostgreSQL migrations, backups and health checks, scripted in Lua",
    "",
    "usage: orch [--verbose] COMMAND [options]",
    "       orch [--verbose] RECIPE.lua [args...]",
    "",
    "commands:",
  }
  local width = 8
  for _, n in ipairs(cli.commands()) do if #n > width then width = #n end end
  for _, n in ipairs(cli.commands()) do
    local ok, c = pcall(require, "orch.cmd." .. n)
    lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", n, ok and c.summary or "(failed to load)")
  end
  lines[#lines + 1] = string.format("  %-" .. width .. "s  %s", "help", "help for a command or recipe: orch help migrate")
  for _, l in ipairs {
    "",
    "recipes (orch recipes/NAME.lua): dev, staging, prod, restore; your own in any directory.",
    "",
    "global options:",
    "  -h, --help      this help",
    "  -V, --version   print the version",
    "  -v, --verbose   more detail, and a traceback with errors",
    "",
    "--env NAME (or ORCH_ENV, else dev) picks an environment of orch.env.lua for every command:",
    "its database, protection (approval or --yes), lock_timeout and retries, backups and retention.",
    "The database comes from --db URL, else the environment's, else DATABASE_URL, else libpq's",
    "defaults (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE, ~/.pgpass).",
    "Exit codes: 0 ok; 1 failed and nothing was changed (before any change, or the release's",
    "            transaction rolled back); 2 usage error; 3 failed and recovered (this run's",
    "            migrations undone, or its backup restored when nothing was written since);",
    "            4 failed and needs a human; 130 interrupted.",
  } do lines[#lines + 1] = l end
  return table.concat(lines, "\n")
end

--- Format a command's --help from its module.
function cli.command_help(name, c)
  local out = { c.usage or ("usage: orch " .. name .. " [options]"), "" }
  if c.summary then out[#out + 1] = c.summary end
  if c.description then out[#out + 1] = ""; out[#out + 1] = c.description end
  if c.spec then
    out[#out + 1] = ""
    out[#out + 1] = "options:"
    out[#out + 1] = args.help(c.spec)
  end
  if c.examples then
    out[#out + 1] = ""
    out[#out + 1] = "examples:"
    for _, e in ipairs(c.examples) do out[#out + 1] = "  " .. e end
  end
  return table.concat(out, "\n")
end

--- A recipe's global environment: the standard globals, and reading an
-- undefined global raises, so a typo fails at the line that has it.
function cli.recipe_env(script, argv)
  local env = {}
  local a = { [0] = script }
  for i, v in ipairs(argv) do a[i] = v end
  a[-1] = "orch"
  env.arg = a
  return setmetatable(env, {
    __index = function(_, k)
      local v = _G[k]
      if v == nil then
        error(string.format("undefined global '%s' (a typo? declare it with 'local %s')", tostring(k), tostring(k)), 2)
      end
      return v
    end,
  })
end

--- Load a recipe file (text only, never bytecode). Raises a clear error.
function cli.load_recipe(path, argv)
  local st = sys.stat(path)
  if not st then
    sys.error(string.format("cannot open recipe '%s': no such file\nsee 'orch --help' for commands and recipes", path), 2)
  elseif st.type == "directory" then
    sys.error(string.format("cannot run '%s': it is a directory, not a recipe file", path), 2)
  end
  local env = cli.recipe_env(path, argv)
  local chunk, err = loadfile(path, "t", env)
  if not chunk then sys.error(string.format("recipe does not parse: %s", err), 1) end
  return chunk, env
end

function cli.run_recipe(path, argv)
  local chunk = cli.load_recipe(path, argv)
  local r = chunk(table.unpack(argv))
  if math.type(r) == "integer" then return r end
  if r == false then return 1 end
  return 0
end

function cli.main(...)
  local argv = { ... }
  local i = 1
  while argv[i] and argv[i]:sub(1, 1) == "-" do
    local a = argv[i]
    if a == "--version" or a == "-V" then
      print(version())
      return 0
    elseif a == "--help" or a == "-h" then
      print(help())
      return 0
    elseif a == "--verbose" or a == "-v" then
      log.level = "debug"
      cli.verbose = true
    else
      args.usage_error(nil, string.format("unknown option %s before the command", a))
    end
    i = i + 1
  end
  local first = argv[i]
  if not first then
    io.stderr:write(help(), "\n")
    return 2
  end
  local rest = table.move(argv, i + 1, #argv, 1, {})
  if first == "help" then
    local what = rest[1]
    if not what then print(help()); return 0 end
    local c = command(what)
    if c then print(cli.command_help(what, c)); return 0 end
    if sys.exists(what) then
      local ok, recipe = pcall(require, "orch.recipe")
      if ok and recipe.describe then print(recipe.describe(what)); return 0 end
    end
    args.usage_error(nil, string.format("no command or recipe named '%s'", what))
  end
  local c = command(first)
  if c then
    for _, a in ipairs(rest) do
      if a == "--help" or a == "-h" then print(cli.command_help(first, c)); return 0 end
      if a == "--" then break end
    end
    local r = c.run(rest)
    return math.type(r) == "integer" and r or (r == false and 1 or 0)
  end
  if first:match("%.lua$") or sys.exists(first) then
    return cli.run_recipe(first, rest)
  end
  args.usage_error(nil, string.format("unknown command '%s' (and no recipe file of that name)", first))
end

return cli
