--- orch.cli: the command line. `orch COMMAND [options]` runs a built-in
-- command (a module in lua/orch/cmd/), `orch FILE.lua [args]` runs a recipe.
-- main() returns the exit code; errors are raised and printed by the host
-- (src/main.c), which asks format_error here for the text.
--
-- This module holds the one description of the command line: the global
-- options, the exit codes, the environment variables and files, and (with
-- each command module's summary, usage, description, spec, operands and
-- examples) it is what `orch --help`, `orch COMMAND --help`, the man pages
-- and the shell completions are made from (cmake/gendocs.lua).
local sys = require "orch.sys"
local log = require "orch.log"
local args = require "orch.args"
local project = require "orch.project"

local cli = {}

--- The global options: every command and every recipe takes them,
-- anywhere on its line (orch -q backup, orch backup -q).
cli.global_options = {
  { name = "help", short = "h", type = "boolean", global = true, help = "show help: orch --help, orch COMMAND --help" },
  { name = "version", short = "V", type = "boolean", global = true, help = "print orch's version (and Lua's and libpq's)" },
  { name = "verbose", short = "v", type = "boolean", global = true, help = "more detail, and a traceback with errors" },
  { name = "quiet", short = "q", type = "boolean", global = true,
    help = "print nothing but errors; the exit code tells the outcome (a --json result is still printed)" },
  { name = "json", type = "boolean", global = true,
    help = "print the result as JSON on stdout; an error is one JSON object on stderr (message, fields, exit_code)" },
}

cli.exit_codes = {
  { 0, "ok" },
  { 1, "failed and nothing was changed (it stopped before any change, or the release's transaction rolled back)" },
  { 2, "usage error: an unknown command, option or --env, a malformed option value, an extra argument, " ..
       "or a command that needs a project run outside one" },
  { 3, "failed and recovered (this run's migrations undone, or its backup restored when nothing was written since)" },
  { 4, "failed and needs a human" },
  { 130, "interrupted (Ctrl-C)" },
}

cli.environment = {
  { "ORCH_ENV", "the environment when --env is not given (default: dev)" },
  { "DATABASE_URL", "the database when neither --db nor the environment names one" },
  { "PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE, PGPASSWORD", "libpq's defaults, used when nothing else names the database" },
  { "NO_COLOR", "set to anything but the empty string: no colour, even on a terminal (colour is only ever used on one)" },
  { "ORCH_ENV_FILE", "the environments file to read instead of orch.env.lua in the project root" },
  { "ORCH_PG_BINDIR", "the directory of initdb and pg_ctl for the local cluster (default: pg_config --bindir, then /usr/lib/postgresql/*/bin)" },
  { "ORCH_LOG_LEVEL", "debug, info (default), warn or error" },
  { "ORCH_LUA_PATH", "load orch's Lua library from this directory instead of the copy built into the binary" },
}

cli.files = {
  { "orch.env.lua", "the project's environments (databases, protection, backups, health checks, webhooks)" },
  { "migrations/", "the migrations: V<version>__<description>.sql, U... (undo), R__... (repeatable), or .lua" },
  { "backups/ENV/", "an environment's backups (.dump and .manifest.json) and, in runs/, its run logs" },
  { ".orch/localpg/", "the project's throwaway PostgreSQL cluster (orch local)" },
  { "orch.lint.lua, orch.health.lua", "the team's lint rules and health checks" },
}

cli.about = "orch runs PostgreSQL schema changes with a verified backup first, lock timeouts and an advisory lock, " ..
  "checks the database and the service's health endpoints afterwards, and recovers a failed release without losing " ..
  "what the application wrote meanwhile. Migrations use Flyway's file names and checksums; backups are pg_dump " ..
  "custom-format archives that stock pg_restore reads. The whole flow is a Lua recipe the team can read and change."

cli.recipes_text = "A recipe is a Lua file run with orch RECIPE.lua [options]: the example project ships recipes/dev.lua " ..
  "(a throwaway cluster, a fresh database, migrations, seed data, lint, checks), staging.lua, prod.lua (preflight, " ..
  "plan and lint, approval, verified backup, migrate, verify; on failure the recovery ladder) and restore.lua; " ..
  "orch help RECIPE.lua shows what one declares."

cli.env_text = "--env NAME (or ORCH_ENV, else dev) picks an environment of orch.env.lua for every command: " ..
  "its database, protection (approval or --yes), lock_timeout and retries, backups and retention. " ..
  "The database comes from --db URL, else the environment's, else DATABASE_URL, else libpq's defaults " ..
  "(PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE, ~/.pgpass)."

cli.project_text = "orch works in the project root, found as git finds a repository: from the recipe's directory " ..
  "(orch path/to/recipe.lua), else from the current directory, the first directory upwards holding orch.env.lua " ..
  "or migrations/. Migrations, backups, run logs and .orch/ are the root's, wherever you run orch from; paths " ..
  "you type stay relative to where you stand."

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

--- The module of a built-in command, or nil.
function cli.command(name)
  if type(name) ~= "string" or not name:match("^[%w_-]+$") then return nil end
  for _, n in ipairs(cli.commands()) do
    if n == name then return require("orch.cmd." .. name) end
  end
end

--- A command's option spec (every command has one: at least the global options).
function cli.spec_of(c)
  c.spec = c.spec or args.spec({})
  return c.spec
end

--- What orch is built with: { orch, lua, libpq, libpq_version_num }.
function cli.version_info()
  local n = require("orch.db").lib_version()
  return { orch = package.orch_version, lua = _VERSION:match("%d+%.%d+"), libpq = string.format("%d.%d", n // 10000, n % 10000),
           libpq_version_num = n }
end

function cli.version_text()
  local v = cli.version_info()
  return string.format("orch %s (Lua %s, libpq %s)", v.orch, v.lua, v.libpq)
end

function cli.print_version()
  if cli.json then
    io.stdout:write(require("orch.json").encode(cli.version_info()), "\n")
  else
    print(cli.version_text())
  end
  return 0
end

--- orch --help.
function cli.help()
  local lines = {
    "orch - PostgreSQL migrations, backups and health checks, scripted in Lua",
    "",
    "usage: orch [global options] COMMAND [options] [arguments]",
    "       orch [global options] RECIPE.lua [options]",
    "",
    "commands:",
  }
  local names = cli.commands()
  local width = 8
  for _, n in ipairs(names) do if #n > width then width = #n end end
  for _, n in ipairs(names) do
    local ok, c = pcall(require, "orch.cmd." .. n)
    lines[#lines + 1] = args.hang(string.format("  %-" .. width .. "s  ", n), ok and c.summary or "(failed to load)")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "recipes (orch recipes/NAME.lua): dev, staging, prod, restore; your own in any directory."
  lines[#lines + 1] = ""
  lines[#lines + 1] = "global options (anywhere on the line):"
  local gw = 0
  for _, o in ipairs(cli.global_options) do gw = math.max(gw, #args.left(o)) end
  for _, o in ipairs(cli.global_options) do
    lines[#lines + 1] = args.hang(string.format("  %-" .. gw .. "s  ", args.left(o)), o.help)
  end
  for _, l in ipairs {
    "",
    args.wrap(cli.project_text),
    "",
    args.wrap(cli.env_text),
    "",
    "exit codes:",
  } do lines[#lines + 1] = l end
  for _, e in ipairs(cli.exit_codes) do
    lines[#lines + 1] = args.hang(string.format("  %-3d  ", e[1]), e[2])
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "more: orch help COMMAND, man orch, man orch-COMMAND"
  return table.concat(lines, "\n")
end

-- A description's text for a terminal: prose lines (no leading blank) are
-- joined and wrapped; indented lines (tables, lists) are kept as written.
function cli.paragraphs(text)
  local out, para = {}, {}
  local function flush()
    if #para > 0 then out[#out + 1] = { prose = table.concat(para, " ") } para = {} end
  end
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*$") then flush(); out[#out + 1] = { blank = true }
    elseif line:match("^%s") then flush(); out[#out + 1] = { verbatim = line }
    else para[#para + 1] = line end
  end
  flush()
  while out[#out] and out[#out].blank do out[#out] = nil end
  return out
end

--- A usage line wrapped at 79 columns between its words, never inside
-- a bracket ("[--output FILE | --output -]" stays whole).
function cli.wrap_usage(line)
  local lead = line:match("^(%s*%S+%s+%S+%s+%S+%s*)") or line:match("^%s*") or ""
  local words, depth, cur = {}, 0, ""
  for ch in line:sub(#lead + 1):gmatch(".") do
    if ch == "[" then depth = depth + 1 elseif ch == "]" then depth = depth - 1 end
    if ch == " " and depth == 0 then
      if cur ~= "" then words[#words + 1] = cur end
      cur = ""
    else
      cur = cur .. ch
    end
  end
  if cur ~= "" then words[#words + 1] = cur end
  local indent = string.rep(" ", math.min(#lead, 30))
  local lines, l = {}, lead:gsub("%s+$", "")
  for _, w in ipairs(words) do
    if #l + 1 + #w > 79 and l:match("%S") and #l > #indent then
      lines[#lines + 1] = l
      l = indent .. w
    else
      l = l .. " " .. w
    end
  end
  lines[#lines + 1] = l
  return table.concat(lines, "\n")
end

--- Format a command's --help from its module.
function cli.command_help(name, c)
  local out = {}
  for line in ((c.usage or ("usage: orch " .. name .. " [options]")) .. "\n"):gmatch("([^\n]*)\n") do
    out[#out + 1] = cli.wrap_usage(line)
  end
  out[#out + 1] = ""
  if c.summary then out[#out + 1] = args.wrap(c.summary) end
  if c.description then
    out[#out + 1] = ""
    for _, p in ipairs(cli.paragraphs(c.description)) do
      out[#out + 1] = p.prose and args.wrap(p.prose) or p.verbatim or ""
    end
  end
  out[#out + 1] = ""
  out[#out + 1] = "options:"
  out[#out + 1] = args.help(cli.spec_of(c))
  if c.examples then
    out[#out + 1] = ""
    out[#out + 1] = "examples:"
    for _, e in ipairs(c.examples) do out[#out + 1] = "  " .. e end
  end
  return table.concat(out, "\n")
end

--- orch help --json: the commands, the global options and the exit codes as data.
function cli.help_data()
  local cmds = {}
  for _, n in ipairs(cli.commands()) do
    local ok, c = pcall(require, "orch.cmd." .. n)
    cmds[#cmds + 1] = { name = n, summary = ok and c.summary or "(failed to load)" }
  end
  local codes = {}
  for _, e in ipairs(cli.exit_codes) do codes[#codes + 1] = { code = e[1], meaning = e[2] } end
  return { commands = cmds, global_options = args.data(cli.global_options), exit_codes = codes }
end

--- orch help COMMAND --json: a command's help as data, from the table --help prints.
function cli.command_data(name, c)
  local o = c.operands or { max = 0 }
  return { command = name, summary = c.summary, usage = c.usage or ("usage: orch " .. name .. " [options]"),
           description = c.description, options = args.data(cli.spec_of(c)),
           operands = { max = o.max or 0, min = o.min or 0, name = o.name, words = o.words },
           examples = c.examples or {} }
end

-- ------------------------------------------------------------ global options

--- Apply the global options a parse found (args.parse calls this): the log
-- level, quiet output, JSON errors. Options given before the command
-- (orch -q backup) are filled into opts too, so the command sees them.
function cli.apply_globals(opts, spec, explicit)
  local own = {}   -- a command's option of the same name (baseline --version V) is the command's
  for _, s in ipairs(spec) do if not s.global then own[s.name] = true end end
  for _, o in ipairs(cli.global_options) do
    local k = o.name
    if k ~= "help" and k ~= "version" and not own[k] then
      if explicit and explicit[k] then cli[k] = opts[k] and true or nil
      elseif opts[k] == nil and cli[k] then
        for _, s in ipairs(spec) do if s.name == k then opts[k] = true end end
      end
    end
  end
  if cli.verbose then log.level = "debug" end
  if cli.json then log.quiet_to("warn") end
  if cli.quiet then
    log.quiet_to("error")
    -- quiet means quiet: nothing on stdout but a --json result (written with io.stdout:write)
    if not cli._print then cli._print = _G.print; _G.print = function() end end
  end
end

--- Is the run quiet (-q)? For the places that write to a stream directly.
function cli.is_quiet() return cli.quiet == true end

-- Does msg carry a position inside orch's own library ("orch/x.lua:12:")?
-- Then a traceback would help, and the message says how to get one.
local function internal_position(msg)
  for pre in msg:gmatch("()orch/[%w_/]+%.lua:%d") do
    if pre == 1 or msg:sub(pre - 1, pre - 1):match("[ \t]") then return true end
  end
  return false
end

local function jsonable(v, depth)
  local t = type(v)
  if t == "string" or t == "boolean" or (t == "number" and v == v and v ~= math.huge and v ~= -math.huge) then return true end
  if t ~= "table" or depth > 4 or getmetatable(v) then return false end
  for k, x in pairs(v) do
    if (type(k) ~= "string" and math.type(k) ~= "integer") or not jsonable(x, depth + 1) then return false end
  end
  return true
end

--- The text main.c prints on stderr for an error e that ends orch with
-- code: "orch: message" (with where, the recipe line, in front), a
-- traceback with --verbose; with --json one JSON object: error (the text),
-- exit_code, where, and every field the error object carries (sqlstate,
-- detail, migration, file, line, ...).
function cli.format_error(e, code, where, traceback)
  local text = log.error_text(e)
  -- a usage error is about the command line, not the recipe line that parsed it (the JSON keeps where)
  if code ~= 130 and code ~= 2 and where and text:sub(1, #where) ~= where then text = where .. ": " .. text end
  local verbose = cli.verbose or (os.getenv("ORCH_VERBOSE") or "0") ~= "0" and os.getenv("ORCH_VERBOSE") ~= ""
  if cli.json then
    local obj = {}
    if type(e) == "table" then
      for k, v in pairs(e) do
        if type(k) == "string" and jsonable(v, 1) then obj[k] = v end
      end
    end
    obj.error, obj.exit_code = text, code
    if where then obj.where = where end
    if verbose and traceback then obj.traceback = traceback end
    return require("orch.json").encode(obj) .. "\n"
  end
  local out = "orch: " .. text .. "\n"
  if verbose and traceback then out = out .. traceback .. "\n"
  elseif code == 1 and internal_position(text) then out = out .. "orch: (run with --verbose for a traceback)\n" end
  return out
end

-- ------------------------------------------------------------ recipes

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
  local st, err, errno = sys.stat(path)
  if not st then
    local loop = project.loop_message(path, errno)
    if loop then sys.error("cannot open recipe: " .. loop, 2) end
    sys.error(string.format("cannot open recipe '%s': %s\nsee 'orch --help' for commands and recipes", path,
      errno == 2 and "no such file" or tostring(err)), 2)
  elseif st.type == "directory" then
    sys.error(string.format("cannot run '%s': it is a directory, not a recipe file", path), 2)
  end
  local env = cli.recipe_env(path, argv)
  local chunk, perr = loadfile(path, "t", env)
  if not chunk then sys.error(string.format("recipe does not parse: %s", perr), 1) end
  return chunk, env
end

function cli.run_recipe(path, argv)
  local chunk = cli.load_recipe(path, argv)
  local r = chunk(table.unpack(argv))
  if math.type(r) == "integer" then return r end
  if r == false then return 1 end
  return 0
end

-- ------------------------------------------------------------ completion

--- orch __complete env | target [ENV]: the words the shell completions
-- offer for --env (the environments of the project's orch.env.lua) and
-- --fleet-target (the targets of ENV's fleet, else of ORCH_ENV's), one a line.
-- Not a command (never in --help): the completion scripts call it, and it
-- never fails loudly nor connects anywhere (a fleet read by a query has no
-- names to offer).
function cli.complete_words(rest)
  local ok = pcall(function()
    project.enter {}
    local envmod = require "orch.env"
    if rest[1] == "env" then
      local envs = envmod.all()
      local names = {}
      for n in pairs(envs) do if type(n) == "string" then names[#names + 1] = n end end
      table.sort(names)
      for _, n in ipairs(names) do print(n) end
    elseif rest[1] == "target" then
      local name = rest[2] ~= "" and rest[2] or os.getenv("ORCH_ENV")
      local e = envmod.load(name)
      if type(e.targets) == "table" and e.targets.query == nil then
        for _, t in ipairs(require("orch.fleet.targets").load(e)) do print(t.name) end
      end
    end
  end)
  return ok and 0 or 1
end

-- ------------------------------------------------------------ main

local function check_operands(name, c, operands)
  local o = c.operands or { max = 0 }
  local max = o.max or 0
  if #operands > max then
    local extra = {}
    for i = max + 1, #operands do extra[#extra + 1] = "'" .. operands[i] .. "'" end
    args.usage_error(name, string.format("unexpected argument%s %s: %s", #extra == 1 and "" or "s", table.concat(extra, " "),
      max == 0 and ("orch " .. name .. " takes options only")
        or string.format("orch %s takes %s", name, o.name or (max == 1 and "one argument" or (max .. " arguments")))))
  end
  if o.min and #operands < o.min then
    args.usage_error(name, string.format("missing %s: orch %s %s", o.name or "an argument", name, o.name or "ARG"))
  end
end

function cli.main(...)
  local argv = { ... }
  -- --json anywhere asks for JSON errors, from the very first one (a bad option before it too)
  for _, a in ipairs(argv) do
    if a == "--" then break end
    if a == "--json" then cli.json = true end
  end
  -- global options before the command or recipe
  local i, lead = 1, {}
  while argv[i] and argv[i]:match("^%-.") and argv[i] ~= "--" do lead[#lead + 1] = argv[i]; i = i + 1 end
  if argv[i] == "--" then i = i + 1 end
  -- a command's option before the command (orch --env prod migrate) is named as such, with where it goes
  local long, short = {}, {}
  for _, o in ipairs(cli.global_options) do long[o.name] = true; if o.short then short[o.short] = true end end
  for _, a in ipairs(lead) do
    local name = a:match("^%-%-([^=]+)")
    local bad = name and not long[name] and ("--" .. name)
    if not name then
      for ch in a:sub(2):gmatch(".") do if not short[ch] then bad = "-" .. ch break end end
    end
    local known = false   -- an option some command has?
    if bad then
      for _, n in ipairs(cli.commands()) do
        local ok, c = pcall(cli.command, n)
        for _, o in ipairs(ok and c and cli.spec_of(c) or {}) do
          if "--" .. o.name == bad or (o.short and "-" .. o.short == bad) then known = true end
        end
      end
      local word = "COMMAND"   -- the command further on, past the option's value
      for j = i, #argv do
        if argv[j]:match("%.lua$") or cli.command(argv[j]) then word = argv[j] break end
      end
      if not known then args.usage_error(nil, string.format("unknown option %s%s", bad, bad ~= a and (" in " .. a) or "")) end
      args.usage_error(nil, string.format("%s is not a global option: a command's options go after the command " ..
        "(orch %s %s ...); before it only -h, -V, -v, -q and --json", bad, word, a))
    end
  end
  local g = args.parse(lead, cli.global_options, nil)
  local first = argv[i]
  local rest = table.move(argv, i + 1, #argv, 1, {})
  if g.version then return cli.print_version() end
  if g.help then
    if not first then
      if cli.json then io.stdout:write(require("orch.json").encode(cli.help_data(), { indent = "  " }), "\n") return 0 end
      print(cli.help()) return 0
    end
    rest, first = { first }, "help"
  end
  if not first then
    if cli.json then args.usage_error(nil, "missing the command (orch --help lists them)") end
    io.stderr:write(cli.help(), "\n")
    return 2
  end
  if first == "__complete" then return cli.complete_words(rest) end
  local c = cli.command(first)
  if c then
    project.enter {}
    local spec = cli.spec_of(c)
    local opts, operands = args.parse(rest, spec, first)
    local function global(name)
      for _, s in ipairs(spec) do if s.name == name then return s.global and opts[name] end end
    end
    if global("help") then
      if cli.json then io.stdout:write(require("orch.json").encode(cli.command_data(first, c), { indent = "  " }), "\n") return 0 end
      print(cli.command_help(first, c)) return 0
    end
    if global("version") then return cli.print_version() end
    check_operands(first, c, operands)
    local r = c.run(rest)
    return math.type(r) == "integer" and r or (r == false and 1 or 0)
  end
  if first:match("%.lua$") or sys.exists(first) then
    -- the recipe works in its project's root: load it by a path that still holds there
    local abs = project.absolute(first)
    project.enter { recipe = first }
    local path = first
    if first:sub(1, 1) ~= "/" and project.moved() then
      local root = project.root .. "/"
      local real = sys.realpath(abs)
      path = (abs:sub(1, #root) == root and abs:sub(#root + 1)) or (real and real:sub(1, #root) == root and real:sub(#root + 1)) or abs
    end
    require("orch.recipe")._invoked = first   -- its usage errors say: see 'orch FIRST --help'
    return cli.run_recipe(path, rest)
  end
  args.usage_error(nil, string.format("unknown command '%s' (and no recipe file of that name)", first))
end

return cli
