--- orch local: the project's throwaway PostgreSQL cluster, the one the dev
-- recipe (and every command in an environment with database.local_cluster)
-- uses: .orch/localpg under the project root, so two projects never share
-- one, wherever orch is run from.
local args = require "orch.args"
local envmod = require "orch.env"
local json = require "orch.json"
local localpg = require "orch.localpg"
local project = require "orch.project"
local sys = require "orch.sys"

local spec = args.spec({ "env" })

local ACTIONS = { "status", "start", "stop", "destroy" }

-- What there is to know about the cluster, for status and --json.
local function describe(pg, env, dbname)
  local info = { project = project.root, env = env.name, dir = pg.dir, initialized = pg:initialized(), running = false,
                 database = dbname }
  if info.initialized then info.running = pg:running(); info.copy_of = pg:foreign_pidfile() end
  if info.running then
    info.host, info.port, info.pid = pg.host, pg.port, pg:pid()
    local ok, c = pcall(pg.connect, pg, "postgres", { connect_timeout = 5 })
    if ok then
      info.server_version = c:value("SHOW server_version")
      info.databases = {}
      for _, r in ipairs(c:query("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")) do
        info.databases[#info.databases + 1] = r.datname
      end
      c:close()
    end
    info.url = pg:url(dbname)
  end
  return info
end

local function show(info)
  local where = string.format("the local cluster of %s (environment %s)", info.project, info.env)
  if not info.initialized then
    print(string.format("%s: none yet (it would live in %s); 'orch local start' or the dev recipe creates it", where, info.dir))
    return
  end
  print(string.format("%s: %s", where, info.running and "running" or "stopped"))
  print("  directory  " .. info.dir)
  if info.running then
    print(string.format("  server     PostgreSQL %s on %s:%d%s", info.server_version or "?", info.host, info.port,
      info.pid and string.format(" (pid %d)", info.pid) or ""))
    if info.databases then print("  databases  " .. table.concat(info.databases, ", ")) end
    print("  url        " .. info.url)
    print("stop it with 'orch local stop', remove it with 'orch local destroy'")
  else
    if info.copy_of then
      print("  copied     from " .. info.copy_of .. " while that server ran (its server is not this one's; 'orch local start' gives this copy its own)")
    end
    print("start it with 'orch local start', remove it with 'orch local destroy'")
  end
end

return {
  summary = "the project's throwaway PostgreSQL cluster (.orch/localpg): orch local status|start|stop|destroy",
  usage = "usage: orch local [status|start|stop|destroy] [--env NAME] [--json]",
  description = "The cluster the dev recipe starts when no database is configured, for an environment with\n" ..
    "database = { local_cluster = true } (dev, by default): one per project, in .orch/localpg under the\n" ..
    "project root (database.dir in orch.env.lua moves it), listening on a free loopback port only.\n" ..
    "  status   whether it exists and runs, its port, databases and URL (exit 0 running, 1 not)\n" ..
    "  start    create it if needed, start it and create the environment's database (orch_dev)\n" ..
    "  stop     stop it; its data stays for the next start\n" ..
    "  destroy  stop it, and once it has stopped remove its directory and all its data",
  operands = { max = 1, name = "status|start|stop|destroy", words = ACTIONS },
  examples = { "orch local status", "orch local start && orch migrate", "orch local stop", "orch local destroy" },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "local")
    local action = rest[1] or "status"
    local known = false
    for _, a in ipairs(ACTIONS) do if a == action then known = true end end
    if not known then args.usage_error("local", string.format("unknown action '%s' (%s)", action, table.concat(ACTIONS, ", "))) end
    project.need("orch local", nil)
    local env = envmod.load(opts.env)
    if not env.database.local_cluster then
      sys.error(string.format("environment %s does not use a local cluster (its database comes from %s); orch local manages the " ..
        "cluster of an environment with database = { local_cluster = true }, such as dev", env.name,
        env.database.env and ("$" .. env.database.env) or env.database.service and ("the service " .. env.database.service) or "elsewhere"), 2)
    end
    local dir = env.database.dir or ".orch/localpg"
    local dbname = env.database.dbname or "orch_dev"
    local pg = localpg.open(dir)
    local function result(info, text)
      if opts.json then io.stdout:write(json.encode(info, { indent = "  " }), "\n")
      elseif text then print(text)
      else show(info) end
    end
    if action == "status" then
      local info = describe(pg, env, dbname)
      result(info)
      return info.running and 0 or 1
    elseif action == "start" then
      local was = pg:running()
      pg:start()
      pg:create_database(dbname)
      local info = describe(pg, env, dbname)
      info.action = was and "already running" or "started"
      result(info, string.format("local cluster %s on %s:%d (%s)\ndatabase: %s\nstop it with 'orch local stop'",
        info.action, pg.host, pg.port, pg.dir, info.url))
      return 0
    elseif action == "stop" then
      local info = { project = project.root, env = env.name, dir = pg.dir, initialized = pg:initialized() }
      if not info.initialized then
        info.action = "nothing to stop"
        result(info, string.format("no local cluster in %s: nothing to stop", pg.dir))
        return 0
      end
      local was = pg:running()
      pg:stop()
      info.running, info.action = false, was and "stopped" or "was not running"
      result(info, was and string.format("stopped the local cluster in %s (its data is kept: 'orch local start' starts it again)", pg.dir)
        or string.format("the local cluster in %s was not running", pg.dir))
      return 0
    else -- destroy
      local info = { project = project.root, env = env.name, dir = pg.dir, existed = sys.exists(pg.dir) }
      if not info.existed then
        info.action = "nothing to remove"
        result(info, string.format("no local cluster in %s: nothing to remove", pg.dir))
        return 0
      end
      local was = pg:running()
      pg:destroy()
      info.action = "removed"
      result(info, string.format("%sremoved the local cluster in %s and all its data", was and "stopped and " or "", pg.dir))
      return 0
    end
  end,
}
