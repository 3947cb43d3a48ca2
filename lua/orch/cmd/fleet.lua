--- orch fleet: run one recipe over every database of an environment's
-- targets, each target a run of its own, with bounded parallelism, a
-- canary, a failure budget, one approval and one report (orch.fleet).
local args = require "orch.args"
local envmod = require "orch.env"
local sys = require "orch.sys"
local log = require "orch.log"
local json = require "orch.json"

local spec = args.spec({ "env", "yes", "dry_run", "json", "verbose" }, {
  { name = "parallel", short = "j", type = "integer", min = 1, metavar = "N",
    help = "run up to N targets at once, 1 to 64 (default: the environment's fleet.parallel, else 4)" },
  { name = "canary", type = "integer", min = 0, metavar = "N",
    help = "run the first N targets first, one at a time, and stop if any fails (default: fleet.canary, else 0)" },
  { name = "max-failures", type = "integer", min = 0, metavar = "N",
    help = "start no new target after N have failed; the rest are reported as not started (default: fleet.max_failures, else no limit)" },
  { name = "only", type = "list", metavar = "NAME[,NAME...]", complete = "target", help = "only these targets (repeatable), in the fleet's order" },
  { name = "list", type = "boolean",
    help = "print the targets a rollout would run over, in its order (name, connection with passwords masked, variables, backups dir), and run nothing; no RECIPE. Connects to no target (a directory query, if the targets come from one, is run)" },
  { name = "timeout", type = "duration", metavar = "DURATION",
    help = "a target still running after this long is interrupted as Ctrl-C would (its recovery runs; killed if it has not ended 60 s later) and counts as failed (default: fleet.timeout, else none)" },
})

local function count_option(v, name, min, max)
  if v == nil then return nil end
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
    args.usage_error("fleet", string.format("--%s expects a whole number, got %s", name, tostring(v)))
  end
  v = math.tointeger(v)
  if v < min or (max and v > max) then
    args.usage_error("fleet", string.format("--%s is %d; it must be %d%s", name, v, min, max and (" to " .. max) or " or more"))
  end
  return v
end

-- The recipe: a path as the user typed it (orch works in the project root,
-- so it is made absolute against where they stand), or a name of the
-- project's recipes/ ("prod" for recipes/prod.lua).
local function resolve_recipe(typed)
  if not typed then args.usage_error("fleet", "which recipe? usage: orch fleet RECIPE --env NAME (e.g. orch fleet recipes/prod.lua --env tenants)") end
  local path = require("orch.project").from_cwd(typed)
  if sys.exists(path) then
    local st = sys.stat(path)
    if st and st.type == "directory" then args.usage_error("fleet", string.format("%s is a directory, not a recipe file", path)) end
    return path
  end
  local named = "recipes/" .. typed .. ".lua"
  if not typed:match("[/.]") and sys.exists(named) then return named end
  sys.error(string.format("cannot open recipe '%s': no such file\nsee 'orch fleet --help'", typed), 2)
end

-- A recipe that does not parse fails here once, not once per target. A
-- recipe works in its own project (orch.project finds the root from the
-- recipe's directory): one that belongs to another project would run its
-- children on that project's migrations and environments, so it is refused.
local function check_recipe(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then sys.error(string.format("recipe does not parse: %s (no target was started)", err), 1) end
  local P = require "orch.project"
  local abs = P.absolute(path)
  local theirs = P.find(abs:match("^(.*)/[^/]*$") or "/")
  theirs = theirs and (sys.realpath(theirs) or theirs)
  if theirs and P.root and theirs ~= P.root then
    sys.error(string.format("recipe %s belongs to the project in %s, not to this one (%s): its runs would use that project's " ..
      "migrations and environments. Put the recipe (or a link to it) in this project, e.g. ln -s %s %s/recipes/, and run it from there; " ..
      "no target was started", path, theirs, P.root, abs, P.root), 2)
  end
  return path
end

-- The plan per target, grouped: each distinct plan once, with the targets it applies to.
local function plan_lines(rep)
  local groups, order = {}, {}
  for _, r in ipairs(rep.targets) do
    local key = r.exit_code == 0 and (r.plan or "?") or string.format("DRY RUN FAILED%s: %s",
      r.failed_step and (" at '" .. r.failed_step .. "'") or "", r.cause or r.outcome or "?")
    if not groups[key] then groups[key] = {} order[#order + 1] = key end
    table.insert(groups[key], r.name)
  end
  local lines = {}
  for _, k in ipairs(order) do
    local names = groups[k]
    local shown = {}
    for i = 1, math.min(#names, 12) do shown[i] = names[i] end
    lines[#lines + 1] = log.redact(string.format("  %s\n      %d target%s: %s%s", k, #names, #names == 1 and "" or "s",
      table.concat(shown, ", "), #names > 12 and string.format(", ... (%d more)", #names - 12) or ""))
  end
  return lines
end

-- The options that only a rollout takes: with --list they would be ignored, so they are refused.
local ROLLOUT_ONLY = { "parallel", "canary", "max-failures", "timeout", "yes", "dry-run" }

-- A variable as KEY=VALUE, the value quoted when it would not read back as one word.
local function var_text(k, v)
  if v:match("^[%w._:/@+%-]+$") then return k .. "=" .. v end
  return k .. "=" .. string.format("%q", v):gsub("\\\n", "\\n")
end

-- orch fleet --list: the targets resolved as the rollout resolves them
-- (orch.fleet.targets), printed, nothing started and no target connected to.
local function list_targets(opts, rest)
  if #rest > 0 then
    args.usage_error("fleet", string.format("--list takes no RECIPE (got '%s'): orch fleet --list --env NAME [--only NAME,...] [--json]", rest[1]))
  end
  for _, name in ipairs(ROLLOUT_ONLY) do
    -- the option's key in opts, as args.parse makes it: its dashes as underscores
    if opts[(name:gsub("-", "_"))] then
      args.usage_error("fleet", string.format("--%s is an option of a rollout; --list runs nothing: drop --%s", name, name))
    end
  end
  require("orch.project").need("orch fleet", "run it from inside the project whose orch.env.lua names the targets")
  local env = envmod.load(opts.env)
  local fleet = require "orch.fleet"
  local T = require "orch.fleet.targets"
  local all = T.load(env)
  local targets = T.only(all, opts.only)
  local rows = {}
  for i, t in ipairs(targets) do
    local keys = {}
    for k in pairs(t.vars) do keys[#keys + 1] = k end
    table.sort(keys)
    local vars, shown = json.object {}, {}
    for j, k in ipairs(keys) do
      vars[k] = log.redact(t.vars[k])
      shown[j] = var_text(k, vars[k])
    end
    rows[i] = { name = t.name, kind = t.kind, what = t.kind == "url" and log.redact(t.url) or t[t.kind], where = t.where,
      vars = vars, vars_text = #shown > 0 and table.concat(shown, " ") or "-", backups_dir = fleet.backups_dir(env, t) }
  end
  if opts.json then
    local out = {}
    for i, r in ipairs(rows) do
      out[i] = json.object { name = r.name, [r.kind] = r.what, connection = r.where, vars = r.vars, backups_dir = r.backups_dir }
    end
    io.stdout:write(json.encode(out, { indent = "  " }), "\n")
    return 0
  end
  local w = { #"NAME", #"CONNECTS TO", #"VARIABLES" }
  for _, r in ipairs(rows) do
    w[1], w[2], w[3] = math.max(w[1], #r.name), math.max(w[2], #r.where), math.max(w[3], #r.vars_text)
  end
  local function line(a, b, c, d) return (string.format("  %-" .. w[1] .. "s  %-" .. w[2] .. "s  %-" .. w[3] .. "s  %s", a, b, c, d)) end
  print(line("NAME", "CONNECTS TO", "VARIABLES", "BACKUPS DIR"))
  for _, r in ipairs(rows) do print(log.redact(line(r.name, r.where, r.vars_text, r.backups_dir))) end
  print(string.format("%d target%s of environment %s%s%s, in rollout order", #targets, #targets == 1 and "" or "s", env.name,
    env.protected and " (protected)" or "", #targets < #all and string.format(" (--only: %d of %d)", #targets, #all) or ""))
  return 0
end

return {
  summary = "run a recipe over every database of an environment's targets (parallel, canary, one report)",
  usage = "usage: orch fleet RECIPE --env NAME [--parallel N] [--canary N] [--max-failures N] [--only NAME,...] [--dry-run] [--yes] [--json] [-- RECIPE ARGS]\n" ..
    "       orch fleet --list --env NAME [--only NAME,...] [--json]",
  description = "The environment's targets say which databases: a list of database names on its server, URLs\n" ..
    "or libpq services ({ name = \"eu\", service = \"tickets_eu\", vars = { region = \"eu\" } }), a file\n" ..
    "(targets = { file = \"tenants.txt\" }: one '[NAME] TARGET [KEY=VALUE ...]' a line, or a .json list),\n" ..
    "or a query against a directory database (targets = { query = \"SELECT name, dbname, plan FROM tenants\",\n" ..
    "directory = { env = \"DIRECTORY_URL\" } }; columns url, service or dbname, the others are variables).\n" ..
    "Each target runs the recipe as a run of its own, in a child orch: its own run id, connection,\n" ..
    "run log, history rows, recovery ladder, and backups in backups.dir/TARGET (retention per target).\n" ..
    "The recipe sees the target as env.target = { name =, vars = } and its variables as placeholders.\n" ..
    "\n" ..
    "--list prints the targets so resolved, in rollout order, with where each connects (passwords masked),\n" ..
    "its variables and its backups dir, and runs nothing: it connects to no target, only to the directory\n" ..
    "database when the targets come from a query (--json: a list of { name, url | service | dbname,\n" ..
    "connection, vars, backups_dir }).\n" ..
    "\n" ..
    "--canary N runs the first N targets alone, one by one, and any failure stops the rollout; then up\n" ..
    "to --parallel at once. After --max-failures failures no new target starts. Without --yes, on a\n" ..
    "terminal orch shows the plan per target (a dry run of each) and asks once; a protected environment\n" ..
    "without a terminal needs --yes. Ctrl-C: no new target starts, running ones finish (their recovery\n" ..
    "included) and the report is printed; a second Ctrl-C interrupts them; a third ends orch at once.\n" ..
    "One target by hand (a restore, a status, a re-run): any command or recipe with --env NAME --fleet-target\n" ..
    "TARGET works on that target's database, backups and run logs, e.g. orch recipes/restore.lua --env NAME\n" ..
    "--fleet-target TARGET.\n" ..
    "Webhooks: fleet_started and fleet_succeeded / fleet_failed / fleet_interrupted for the rollout;\n" ..
    "the targets' own run notifications only when the environment sets fleet = { notify_targets = true }.\n" ..
    "The report (also backups.dir/fleet/FLEET_ID.json) gives each target's outcome, exit code, duration,\n" ..
    "backup and failed step. Exit code: 0 when every target succeeded, else the worst one's (1 < 2 < 3 <\n" ..
    "130 < 4); 130 after Ctrl-C. Memory and connections grow with --parallel, not with the fleet.",
  examples = {
    "orch fleet --list --env tenants",
    "orch fleet recipes/prod.lua --env tenants --dry-run",
    "orch fleet recipes/prod.lua --env tenants --canary 1 --parallel 8 --max-failures 2 --yes",
    "orch fleet recipes/prod.lua --env tenants --only acme,globex --yes --json",
  },
  operands = { max = 1000, name = "RECIPE [-- RECIPE ARGS]" },   -- (a rollout needs one: resolve_recipe says so; --list takes none)
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "fleet")
    if opts.list then return list_targets(opts, rest) end
    require("orch.project").need("orch fleet", "run it from inside the project whose orch.env.lua names the targets")
    local recipe = check_recipe(resolve_recipe(rest[1]))
    local recipe_args = table.move(rest, 2, #rest, 1, {})
    local env = envmod.load(opts.env)
    local fleet = require "orch.fleet"
    local T = require "orch.fleet.targets"
    local settings = env.fleet or {}
    local parallel = count_option(opts.parallel, "parallel", 1, fleet.MAX_PARALLEL) or settings.parallel or fleet.DEFAULT_PARALLEL
    if parallel < 1 or parallel > fleet.MAX_PARALLEL then
      sys.error(string.format("environment %s: fleet.parallel is %d; it must be 1 to %d", env.name, parallel, fleet.MAX_PARALLEL), 1)
    end
    local canary = count_option(opts.canary, "canary", 0) or settings.canary or 0
    local max_failures = count_option(opts.max_failures, "max-failures", 0) or settings.max_failures
    if max_failures == 0 then max_failures = nil end
    local timeout = opts.timeout or settings.timeout
    timeout = timeout and args.seconds(timeout, "timeout") or nil
    if timeout and timeout <= 0 then args.usage_error("fleet", "--timeout must be more than 0") end
    local all = T.load(env)
    local targets = T.only(all, opts.only)
    -- the targets on the environment's server share its connections: say so when --parallel would not fit
    local on_server = 0
    for _, t in ipairs(targets) do if t.kind == "dbname" then on_server = on_server + 1 end end
    if on_server > 0 then
      local okc, c = pcall(require("orch.db").connect, envmod.command_database(env))
      if okc then
        local okq, room = pcall(c.value, c, [[SELECT current_setting('max_connections')::int
          - current_setting('superuser_reserved_connections')::int - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')]])
        c:close()
        local need = math.min(parallel, on_server) * fleet.CONNECTIONS_PER_RUN
        if okq and room and need > room then
          log.warn("--parallel %d may open up to %d connections to the server of environment %s, which has room for %d now: " ..
            "targets that cannot connect fail (nothing changed); lower --parallel to %d or raise max_connections",
            parallel, need, env.name, room, math.max(1, room // fleet.CONNECTIONS_PER_RUN))
        end
      end
    end
    -- progress for people: stdout, or stderr when stdout carries the JSON
    local function say(line)
      if opts.json then io.stderr:write(line, "\n") io.stderr:flush() else print(line) io.stdout:flush() end
    end
    say(string.format("orch fleet %s — environment %s%s, %d target%s%s, parallel %d%s%s%s%s", recipe, env.name,
      env.protected and " (protected)" or "", #targets, #targets == 1 and "" or "s",
      #targets < #all and string.format(" (--only: %d of %d)", #targets, #all) or "", parallel,
      (canary > 0 and not opts.dry_run) and string.format(", canary %d", canary) or "", max_failures and string.format(", max failures %d", max_failures) or "",
      (timeout and not opts.dry_run) and string.format(", timeout %s per target", fleet.duration(timeout)) or "",
      opts.dry_run and "  [DRY RUN: nothing will change]" or ""))
    local function finish(rep)
      rep.env_backups_dir = env.backups.dir
      if opts.json then
        io.stdout:write(json.encode(fleet.to_json(rep), { indent = "  " }), "\n")
      end
      say("")
      say(fleet.format(rep))
      return rep.exit_code
    end
    if opts.dry_run then
      local tmp = sys.mkdtemp("/tmp/orch-fleet-dry-")
      local ok, rep = pcall(fleet.rollout, { recipe = recipe, env = env, targets = targets, parallel = parallel, canary = 0,
        dry_run = true, recipe_args = recipe_args, say = say, logdir = tmp })
      sys.rmtree(tmp)
      if not ok then error(rep, 0) end
      rep.logdir = nil
      return finish(rep)
    end
    if not opts.yes then
      if sys.isatty(0) then
        say("the plan per target (a dry run of each, nothing is changed):")
        local tmp = sys.mkdtemp("/tmp/orch-fleet-plan-")
        local ok, plan = pcall(fleet.rollout, { recipe = recipe, env = env, targets = targets, parallel = parallel,
          dry_run = true, recipe_args = recipe_args, say = say, quiet = true, logdir = tmp })
        sys.rmtree(tmp)
        if not ok then error(plan, 0) end
        if plan.stopped and plan.stopped.interrupted then
          sys.error("interrupted while the plan was made: no target was started, nothing was changed", 130)
        end
        for _, l in ipairs(plan_lines(plan)) do say(l) end
        -- (with --json, stdout carries only the report)
        local tty = opts.json and io.stderr or io.stdout
        tty:write(string.format("run %s on these %d target(s) of %s, each as a run of its own (its recipe's backup and recovery included)? [y/N] ",
          recipe, #targets, env.name))
        tty:flush()
        local a = io.read("l")
        if not (a and a:lower():match("^y")) then
          sys.error("approval declined: no target was started, nothing was changed", 1)
        end
      elseif env.protected then
        sys.error(string.format("environment %s is protected and there is no terminal to ask: pass --yes to approve the rollout " ..
          "(orch fleet %s --env %s --dry-run shows the plan per target); no target was started, nothing was changed", env.name, recipe, env.name), 1)
      end
    end
    local fleet_id = fleet.new_id()
    local info = { recipe = "fleet " .. recipe, env = env.name, run_id = fleet_id,
      message = string.format("rollout of %s over %d target(s), parallel %d", recipe, #targets, parallel) }
    fleet.notify(env, "fleet_started", info)
    local rep = fleet.rollout { recipe = recipe, env = env, targets = targets, parallel = parallel, canary = canary,
      max_failures = max_failures, timeout = timeout, recipe_args = recipe_args, say = say, fleet_id = fleet_id }
    -- the record of the rollout, beside the targets' namespaces
    rep.report_path = string.format("%s/fleet/%s.json", env.backups.dir, fleet_id)
    local okw, werr = pcall(sys.write_atomic, rep.report_path, json.encode(fleet.to_json(rep), { indent = "  " }) .. "\n", 384)
    if not okw or werr == nil then
      log.warn("could not write the fleet report %s: %s", rep.report_path, tostring(werr))
      rep.report_path = nil
    end
    pcall(fleet.retain, env.backups.dir, env.backups.keep_runs or 100, fleet_id)
    local failed = {}
    for _, r in ipairs(rep.targets) do
      if r.exit_code and r.exit_code ~= 0 and #failed < 10 then
        failed[#failed + 1] = r.name .. (r.failed_step and (" (" .. r.failed_step .. ")") or "")
      end
    end
    info.outcome, info.exit_code, info.seconds = fleet.outcome(rep), rep.exit_code, rep.seconds
    info.message = fleet.summary(rep) .. (rep.stopped and rep.stopped.text and ("; " .. rep.stopped.text) or "")
    if #failed > 0 then info.cause = "failed: " .. table.concat(failed, ", ") end
    fleet.notify(env, rep.exit_code == 0 and "fleet_succeeded" or (rep.stopped and rep.stopped.interrupted) and "fleet_interrupted" or "fleet_failed", info)
    return finish(rep)
  end,
}
