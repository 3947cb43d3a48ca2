--- orch.recipe: the recipe engine. A recipe is a list of named steps with
-- on_failure and always handlers; each step is logged (terminal and a JSON
-- lines run log per environment), and the exit code says how the run ended:
--   0 succeeded, 1 failed and nothing was changed (before any change, or
--   the release's transaction rolled back), 3 failed and was recovered (this
--   run's migrations undone, or its backup restored: the report says which),
--   4 failed and needs a human, 130 interrupted.
--
--   local R = require "orch.recipe"
--   local opts, env = R.setup({ ... }, "prod")
--   return R.run { name = "prod", opts = opts, env = env,
--     steps = { R.step.preflight {}, R.step.plan {}, R.step.approve {}, R.step.backup {}, R.step.migrate {}, R.step.verify {} },
--     on_failure = { R.step.recover {}, R.step.verify { only = "db" } }, always = { R.step.notify {} } }
--
-- R.step.recover is the recovery ladder (see its comment): the first rung
-- that applies wins, and the report, the run log and the webhooks say which
-- and why.
--
-- A step is { name = "...", run = function(ctx) ... end, plan = function(ctx)
-- return "what it would do" end, changes = true (it modifies the database),
-- retries = n, runs_in_dry_run = true (it only reads: a dry run runs it for
-- real) }; R.step.lua { name =, run = } makes one from a function.
local sys = require "orch.sys"
local log = require "orch.log"
local db = require "orch.db"
local json = require "orch.json"
local args = require "orch.args"
local envmod = require "orch.env"

local R = { step = {} }

R.EXIT = { ok = 0, failed = 1, usage = 2, restored = 3, human = 4, interrupted = 130 }

-- ================================================================ setup

-- (and the global options: --verbose, --quiet, --json, --help, --version)
R.common_options = { "db", "dir", "env", "fleet_target", "yes", "dry_run" }

--- Parse a recipe's arguments and load its environment.
-- Returns opts, env, operands. With --help prints the recipe's help and exits 0.
-- A recipe runs in its project (orch.project): outside any project it
-- stops here, before anything is written (exit 2). A word that is not an
-- option is a usage error, unless the recipe takes some: how = { operands =
-- { max = N, name = "FILE..." } } (max = math.huge for any number).
function R.setup(argv, default_env, extra, summary, how)
  local spec = args.spec(R.common_options, extra)
  R._spec, R._summary = spec, summary
  if R._describing then return {}, { name = default_env, backups = {}, database = {}, health = {}, webhooks = {}, placeholders = {} }, {} end
  -- usage errors point at this recipe's own help: orch recipes/dev.lua --help
  local me = R._invoked or "RECIPE.lua"
  local opts, operands = args.parse(argv, spec, me)
  local o = (how or {}).operands or { max = 0 }
  if #operands > (o.max or 0) then
    local words = {}
    for i = (o.max or 0) + 1, #operands do words[#words + 1] = "'" .. operands[i] .. "'" end
    args.usage_error(me, string.format("unexpected argument%s %s: %s", #words == 1 and "" or "s", table.concat(words, " "),
      (o.max or 0) == 0 and "this recipe takes options only" or ("this recipe takes " .. (o.name or (o.max .. " argument(s)")))))
  end
  if opts.help then
    print((summary or "") .. "\n\noptions:\n" .. args.help(spec))
    os.exit(0)
  end
  local function global(name)
    for _, s in ipairs(spec) do if s.name == name then return s.global and opts[name] end end
  end
  if global("version") then
    require("orch.cli").print_version()
    os.exit(0)
  end
  require("orch.project").need("a recipe", "keep the recipe in one (its directory is looked at first)")
  local env = envmod.load_target(opts.env or default_env, nil, opts.fleet_target)
  return opts, env, operands
end

function R.new_run_id()
  local b = sys.random_bytes(3)
  return os.date("!%Y%m%dT%H%M%SZ") .. "-" .. (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- ================================================================ the run

local function duration(s) return s < 1 and string.format("%dms", math.floor(s * 1000)) or string.format("%.1fs", s) end

local function runlog_open(ctx)
  if ctx.dry_run then return nil end
  local dir = require("orch.storage").runs_base(ctx.env.backups.dir) .. "/runs"
  if not sys.mkdir_p(dir, 448) then return nil end
  ctx.runlog_path = string.format("%s/%s.jsonl", dir, ctx.run_id)
  -- 0600 like the archives: a run log names databases, tables and errors
  if not sys.exists(ctx.runlog_path) and not sys.write_atomic(ctx.runlog_path, "", 384) then return nil end
  local f = io.open(ctx.runlog_path, "a")
  sys.chmod(ctx.runlog_path, 384)
  return f
end

local function event(ctx, ev)
  ev.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  ev.run_id = ctx.run_id
  if ctx.runlog then
    -- (a name or server message from an SQL_ASCII database may hold bytes that are not UTF-8: written as they are)
    ctx.runlog:write(log.redact(json.encode(ev, { bytes = true })), "\n")
    ctx.runlog:flush()
  end
end

local function errtext(e)
  if type(e) == "table" and e.interrupted then return "interrupted" end
  return log.redact(log.error_text(e))
end

--- Describe what a recipe declares (for orch help RECIPE).
function R.describe(path, as_data)
  R._describing = true
  local cli = require "orch.cli"
  local chunk = cli.load_recipe(path, {})
  local ok, def = pcall(chunk)
  R._describing = false
  if not ok then error(def, 0) end
  if type(def) ~= "table" or not def.steps then
    if as_data then return { recipe = path, orch_recipe = false } end
    return path .. ": not an orch.recipe recipe (it does not return R.run{...})"
  end
  if as_data then
    local function steps(list)
      local out = {}
      for _, s in ipairs(list or {}) do out[#out + 1] = { name = s.name, about = s.about } end
      return out
    end
    return { recipe = path, orch_recipe = true, name = def.name or path, summary = R._summary or def.summary,
             usage = "usage: orch " .. path .. " [options]", options = R._spec and args.data(R._spec) or {},
             steps = steps(def.steps), on_failure = steps(def.on_failure), always = steps(def.always) }
  end
  local out = { string.format("%s — %s", def.name or path, R._summary or def.summary or ""), "", "usage: orch " .. path .. " [options]" }
  if R._spec then out[#out + 1] = "\noptions:\n" .. args.help(R._spec) end
  out[#out + 1] = "\nsteps:"
  for i, s in ipairs(def.steps) do out[#out + 1] = string.format("  %d. %s%s", i, s.name, s.about and ("  — " .. s.about) or "") end
  if def.on_failure then
    out[#out + 1] = "\non failure:"
    for _, s in ipairs(def.on_failure) do out[#out + 1] = "  - " .. s.name .. (s.about and ("  — " .. s.about) or "") end
  end
  if def.always then
    out[#out + 1] = "\nalways:"
    for _, s in ipairs(def.always) do out[#out + 1] = "  - " .. s.name .. (s.about and ("  — " .. s.about) or "") end
  end
  return table.concat(out, "\n")
end

--- Run a recipe definition; returns the exit code.
function R.run(def)
  if R._describing then return def end
  if (def.opts or {}).json and not R._json_run then
    -- --json: stdout carries only the JSON result; the steps' human output goes to stderr (none with --quiet)
    local real = _G.print
    _G.print = def.opts.quiet and function() end or function(...)
      local t = table.pack(...)
      for i = 1, t.n do t[i] = tostring(t[i]) end
      io.stderr:write(table.concat(t, "\t", 1, t.n), "\n")
    end
    R._json_run = true
    local ok, code = pcall(R.run, def)
    _G.print, R._json_run = real, nil
    if not ok then error(code, 0) end
    return code
  end
  local opts, env = def.opts or {}, def.env
  local ctx = { def = def, name = def.name, opts = opts, env = env, dry_run = opts.dry_run, yes = opts.yes, state = {},
                run_id = opts.run_id or (env.target and env.target.run_id) or R.new_run_id(), changed = false, results = {} }
  function ctx:conn()
    if not self._conn or self._conn:is_closed() then self._conn = db.connect(self.url) end
    return self._conn
  end
  function ctx:close_conn() if self._conn then self._conn:close() end end
  if def.uses_migrations then
    -- the migrations are read before anything else: a missing or unreadable directory, a bad
    -- file name or a binary file stops the run before a database is created, recreated or touched
    local okp, perr = pcall(R.project, ctx)
    if not okp then
      local text = errtext(perr)
      if type(perr) == "table" and perr.exit_code and perr.exit_code ~= 1 then error(perr, 0) end
      sys.error(text .. (text:match("nothing was") and "" or "; nothing was changed"), 1)
    end
  end
  ctx.url = envmod.database(env, opts)
  if not ctx.url and env.database.local_cluster then
    local pg = require("orch.localpg").ensure(env.database.dir or ".orch/localpg")
    ctx.localpg = pg
    ctx.url = pg:create_database(env.database.dbname or "orch_dev")
  end
  ctx.runlog = runlog_open(ctx)
  local t0 = sys.monotonic()
  ctx.t0 = t0
  local target = ctx.url and log.redact(ctx.url) or "libpq defaults"
  local P = require "orch.project"
  print(string.format("orch %s — run %s, %senvironment %s%s, database %s%s", def.name, ctx.run_id,
    P.moved() and ("project " .. P.root .. ", ") or "", env.name,
    env.protected and " (protected)" or "", target, ctx.dry_run and "  [DRY RUN: nothing will change]" or ""))
  event(ctx, { event = "run_start", recipe = def.name, env = env.name, database = target, dry_run = ctx.dry_run or false })
  if def.notify_start ~= false and not ctx.dry_run then
    pcall(R.notify, ctx, "run_started")
  end

  local function run_step(s, i, total, phase)
    local label = string.format("[%s%d/%d] %s", phase ~= "steps" and (phase .. " ") or "", i, total, s.name)
    if ctx.dry_run and not s.runs_in_dry_run then
      local what = s.plan and s.plan(ctx) or ("would run " .. s.name)
      print(string.format("%s %s\n      %s", log.paint("notice", "==>"), label, what))
      ctx.results[#ctx.results + 1] = { step = s.name, phase = phase, status = "dry-run", detail = what }
      return true
    end
    print(string.format("%s %s", log.paint("notice", "==>"), label))
    ctx.current_step = s.name
    event(ctx, { event = "step_start", step = s.name, phase = phase })
    -- a changing step that fails part-way has changed something: count it before it runs
    if s.changes and phase == "steps" then ctx.changed = true end
    local st = sys.monotonic()
    local attempts, ok, res = 0, false, nil
    repeat
      attempts = attempts + 1
      ok, res = pcall(s.run, ctx)
      if not ok and attempts <= (s.retries or 0) and not (type(res) == "table" and res.interrupted) then
        log.warn("%s failed (%s); retrying (%d of %d)", s.name, errtext(res), attempts, s.retries)
        sys.sleep(math.min(2 ^ attempts, 30) * (0.5 + math.random()))
      end
    until ok or attempts > (s.retries or 0) or (type(res) == "table" and res.interrupted)
    local dt = sys.monotonic() - st
    local detail = ok and (type(res) == "string" and res or nil) or errtext(res)
    ctx.results[#ctx.results + 1] = { step = s.name, phase = phase, status = ok and "ok" or "failed", seconds = dt, detail = detail }
    event(ctx, { event = "step_end", step = s.name, phase = phase, status = ok and "ok" or "failed", seconds = dt,
                 detail = detail or json.null, attempts = attempts })
    if ok then
      print(string.format("    %s %s%s", log.paint("ok", "ok"), duration(dt), detail and ("  " .. detail) or ""))
    else
      print(string.format("    %s %s after %s", log.paint("error", "FAILED"), s.name, duration(dt)))
      for line in (errtext(res) .. "\n"):gmatch("([^\n]*)\n") do print("      " .. line) end
    end
    return ok, res
  end

  -- Everything after the start runs protected: an interrupt that lands
  -- between steps, or in the engine itself, still ends with a report and a
  -- run_end line in the run log.
  local failure
  local code = R.EXIT.ok
  local function body()
    for i, s in ipairs(def.steps) do
      sys.check_interrupt()   -- a Ctrl-C caught by a notification or a handler still stops the run here
      local ok, err = run_step(s, i, #def.steps, "steps")
      if not ok then failure = { step = s.name, error = err } break end
      if s.changes then ctx.changed = true end
      if ctx.state.stop_early then break end
    end
    sys.check_interrupt()
    if failure then
      local interrupted = type(failure.error) == "table" and failure.error.interrupted
      if interrupted then
        code = R.EXIT.interrupted
      elseif not ctx.changed and not ctx.state.migrating then
        code = R.EXIT.failed
      elseif def.on_failure and #def.on_failure > 0 then
        ctx.failure = failure
        print(log.paint("warn", string.format("step '%s' failed after changes were made: running the failure handlers", failure.step)))
        local all_ok = true
        for i, s in ipairs(def.on_failure) do
          local ok, err = run_step(s, i, #def.on_failure, "on_failure")
          if not ok then
            all_ok = false
            if type(err) == "table" and err.interrupted then code = R.EXIT.interrupted return end
            break
          end
        end
        code = all_ok and (ctx.recovery and ctx.recovery.exit_code or R.EXIT.restored) or R.EXIT.human
      else
        code = R.EXIT.human
      end
    end
  end
  local okb, berr = pcall(body)
  if not okb then
    if type(berr) == "table" and berr.interrupted then
      code = R.EXIT.interrupted
      failure = failure or { step = ctx.current_step or "between steps", error = berr }
    else
      code = ctx.changed and R.EXIT.human or R.EXIT.failed
      failure = failure or { step = ctx.current_step or "engine", error = berr }
    end
  end
  if code == R.EXIT.interrupted then
    -- the first Ctrl-C is handled: clear it so the report, the run log and
    -- the notifications are still written (a second Ctrl-C kills at once)
    sys.clear_interrupt()
    event(ctx, { event = "interrupted", step = failure and failure.step or json.null })
    print(log.paint("warn", string.format("interrupted during '%s'%s", failure and failure.step or "?",
      ctx.state.backup and ("; the backup " .. ctx.state.backup .. " is complete and usable") or "")))
  end
  ctx.failure = failure
  ctx.exit_code = code
  local outcome = ({ [0] = "SUCCEEDED", [1] = "FAILED (nothing was changed)", [3] = "FAILED AND RESTORED",
    [4] = "FAILED: NEEDS A HUMAN", [130] = "INTERRUPTED" })[code]
  local rung = ctx.recovery and ctx.recovery.rung
  if code == 1 and rung == "rolled back" then outcome = "FAILED AND ROLLED BACK (nothing was changed)"
  elseif code == 3 and rung == "undo" then outcome = "FAILED AND UNDONE (the application's writes kept)" end
  if ctx.dry_run then outcome = "DRY RUN (nothing was changed)" end
  ctx.outcome = outcome
  for i, s in ipairs(def.always or {}) do
    if not ctx.dry_run or s.plan then
      local ok, err = pcall(run_step, s, i, #def.always, "always")
      if not ok and type(err) == "table" and err.interrupted then sys.clear_interrupt() break end
    end
  end
  -- the final report
  print("")
  print(string.format("%s %s in %s — run %s", def.name, log.paint(code == 0 and "ok" or "error", outcome), duration(sys.monotonic() - t0), ctx.run_id))
  for _, r in ipairs(ctx.results) do
    print(string.format("  %-10s %-8s %-28s %s", r.phase, r.status, r.step, r.seconds and duration(r.seconds) or ""))
  end
  if failure and code ~= 130 then print("  cause: " .. errtext(failure.error):gsub("\n.*", "")) end
  if ctx.recovery then
    local rec = ctx.recovery
    print(string.format("  recovery: %s — %s", rec.rung, rec.why))
    for _, t in ipairs(rec.passed_over or {}) do print(string.format("    (not %s: %s)", t.rung, t.why)) end
    for _, l in ipairs(rec.lines or {}) do print("    " .. l) end
  end
  if code == R.EXIT.human then
    print("  " .. log.paint("error", "a human must look at the database: the failure handlers did not bring it back") ..
      (ctx.state.backup and ("; this run's backup is " .. ctx.state.backup) or ""))
  end
  if ctx.runlog_path then print("  run log: " .. ctx.runlog_path) end
  event(ctx, { event = "run_end", exit_code = code, outcome = outcome, seconds = sys.monotonic() - t0,
               failed_step = failure and failure.step or json.null,
               recovery = ctx.recovery and { rung = ctx.recovery.rung, why = ctx.recovery.why } or json.null })
  if ctx.runlog then ctx.runlog:close() end
  if ctx.runlog_path then
    -- run logs are kept like backups are: the newest backups.keep_runs (100),
    -- and every run whose backup is still there
    local okp, perr = pcall(require("orch.backup").retain_runs, ctx.env.backups.dir, { keep = ctx.env.backups.keep_runs, current = ctx.run_id })
    if not okp then log.warn("could not prune old run logs in %s/runs: %s", ctx.env.backups.dir, errtext(perr)) end
  end
  pcall(ctx.close_conn, ctx)
  if opts.json then
    io.stdout:write(json.encode { run_id = ctx.run_id, exit_code = code, outcome = outcome, steps = ctx.results,
      backup = ctx.state.backup, failed_step = failure and failure.step or nil, run_log = ctx.runlog_path,
      cause = failure and code ~= 130 and (errtext(failure.error):gsub("\n.*", "")) or nil,
      recovery = ctx.recovery and { rung = ctx.recovery.rung, why = ctx.recovery.why, details = ctx.recovery.lines } or nil }, "\n")
  end
  return code
end

-- ================================================================ notifications

--- Send an event to the environment's webhooks. Never raises: failures are
-- logged (run log and terminal) and returned.
function R.notify(ctx, what)
  local notify = require "orch.notify"
  local targets, missing = notify.targets(ctx.env)
  if not ctx._warned_missing then
    for _, m in ipairs(missing) do log.warn("webhook %s is not set in the environment: not notified", m) end
    ctx._warned_missing = true
  end
  if #targets == 0 then return {} end
  -- applied: what this run applied (before a failure too: a restore may have taken it back since)
  local info = { recipe = ctx.name, env = ctx.env.name, run_id = ctx.run_id, exit_code = ctx.exit_code,
    outcome = ctx.outcome, failed_step = ctx.failure and ctx.failure.step, cause = ctx.failure and errtext(ctx.failure.error):gsub("\n.*", ""),
    seconds = ctx.t0 and (sys.monotonic() - ctx.t0), backup = ctx.state.backup, applied = ctx.state.applied_names or {},
    database = ctx.url and log.redact(ctx.url) or nil,
    recovery = ctx.recovery and { rung = ctx.recovery.rung, why = ctx.recovery.why, lines = ctx.recovery.lines } or nil }
  local ok, results = pcall(notify.send, targets, what, info)
  if not ok then results = { { name = "webhooks", delivered = false, error = errtext(results) } } end
  for _, r in ipairs(results) do
    event(ctx, { event = "notification", what = what, hook = r.name, delivered = r.delivered, status = r.status or json.null,
                 attempts = r.attempts, error = r.error or json.null })
    if not r.delivered then
      log.warn("notification %s to %s not delivered: %s (the run goes on)", what, r.name, tostring(r.error))
    end
  end
  return results
end

-- ================================================================ steps

local function migrate_project(ctx)
  if not ctx.project then
    local migrate = require "orch.migrate"
    ctx.project = migrate.load { dir = ctx.opts.dir or "migrations", env = ctx.env.name, placeholders = ctx.env.placeholders }
  end
  return ctx.project
end
R.project = migrate_project

--- A step from a function.
function R.step.lua(s)
  assert(type(s.name) == "string" and type(s.run) == "function", "step.lua{ name =, run = function(ctx) } expected")
  return s
end

--- Preflight: long transactions, sessions waiting on locks, standby or
-- replication lag, and room for the backup (orch.health's database checks).
-- Read-only: a dry run runs it for real.
function R.step.preflight(o)
  o = o or {}
  return { name = "preflight", runs_in_dry_run = true, about = "long transactions, lock queues, replication lag, room for a backup",
    plan = function(ctx) return "would check for long transactions, lock queues, replication lag and room in " .. ctx.env.backups.dir end,
    run = function(ctx)
      local health = require "orch.health"
      local pf = ctx.env.preflight or {}
      local c = ctx:conn()
      local role = health.db.role(c, { expect = o.expect_role or pf.expect_role or "primary" })
      local lag = health.db.replication_lag(c, { max = o.max_replication_lag or pf.max_replication_lag or 10, role = role.observed })
      local room = health.db.backup_room(c, { dir = ctx.env.backups.dir })
      local checks = {
        role,
        health.db.long_transactions(c, { max = o.max_transaction_age or pf.max_transaction_age or 300 }),
        health.db.blocked(c, { max_wait = o.max_lock_wait or pf.max_lock_wait or "30s" }),
        lag,
        health.db.invalid_indexes(c),
        room,
      }
      -- in preflight every finding stops the run before anything changes: a
      -- blocked session now becomes a migration stuck behind it later
      local problems, warnings = {}, {}
      for _, r in ipairs(checks) do
        if r.status == "fail" or (r.status == "warn" and r.name == "database:blocked") then problems[#problems + 1] = r.output
        elseif r.status == "warn" then warnings[#warnings + 1] = r.output end
      end
      -- the checks verify will run must be runnable: find out now, not after the migration
      for _, h in ipairs((ctx.env.health or {}).http or {}) do
        if not h.url and h.url_env and (os.getenv(h.url_env) or "") == "" then
          problems[#problems + 1] = string.format("health check %s reads its URL from %s, which is not set: set it, or remove the check from the environment",
            h.name or "http", h.url_env)
        end
      end
      ctx.state.preflight = checks
      if #problems > 0 then error("preflight found problems:\n  - " .. table.concat(problems, "\n  - "), 0) end
      for _, w in ipairs(warnings) do print("      warning: " .. w) end
      return string.format("database %d MiB on the %s (%s), no long transactions, no lock waits, %d MiB free in %s",
        room.database_bytes // 1048576, role.observed, (lag.detail:gsub("^primary,? ", "")), room.free_bytes // 1048576, room.dir)
    end }
end

--- Plan and lint: the pending migrations; lint errors stop the run.
-- Whether this run refuses a database that has objects but no migration
-- history (as orch migrate and Flyway do): unless the recipe's migrate step
-- says allow_non_empty = true or the environment sets allow_non_empty.
local function refuses_non_empty(ctx)
  if ctx.env.allow_non_empty then return false end
  for _, s in ipairs(ctx.def and ctx.def.steps or {}) do
    if s.release_options and s.release_options.allow_non_empty then return false end
  end
  return true
end

local function non_empty_override(ctx)
  return string.format("set allow_non_empty = true in environment %s (%s)", ctx.env.name, os.getenv("ORCH_ENV_FILE") or "orch.env.lua")
end

function R.step.plan(o)
  o = o or {}
  return { name = "plan and lint", about = "pending migrations and lint findings",
    plan = function(ctx)
      local migrate = require "orch.migrate"
      local ok, p = pcall(migrate.plan, ctx:conn(), migrate_project(ctx))
      if not ok then return "would stop: " .. errtext(p) end
      if #p > 0 then
        local okn, err = pcall(migrate.check_non_empty, ctx:conn(), migrate_project(ctx), { refuse_non_empty = refuses_non_empty(ctx), override = non_empty_override(ctx) })
        if not okn then return "would stop: " .. errtext(err) end
      end
      local names = {}
      for _, e in ipairs(p) do names[#names + 1] = e.name end
      if #names == 0 then return "nothing to migrate" end
      return "would apply: " .. table.concat(names, ", ") .. "\n      release: " .. R.release_mode(ctx, p).why ..
        "\n      on failure: " .. R.ladder_text(ctx)
    end,
    run = function(ctx)
      local migrate, lint = require "orch.migrate", require "orch.lint"
      local project = migrate_project(ctx)
      lint.load_rules("orch.lint.lua")
      local plan = migrate.plan(ctx:conn(), project)
      ctx.state.pending = plan
      -- before the approval and the backup: migrations never run over a schema something else made
      if #plan > 0 then migrate.check_non_empty(ctx:conn(), project, { refuse_non_empty = refuses_non_empty(ctx), override = non_empty_override(ctx) }) end
      -- the target is the server itself, unless orch.lint.lua chose a version
      local pgv
      if not lint.config.pg_version_chosen then
        local okv, info = pcall(function() return ctx:conn():info() end)
        pgv = okv and info.server_version_num and info.server_version_num // 10000 or nil
      end
      local findings = lint.run(project, plan, { pg_version = pgv })
      ctx.state.lint = findings
      local errors = 0
      for _, f in ipairs(findings) do if f.severity == "error" then errors = errors + 1 end end
      for _, e in ipairs(plan) do print("      pending: " .. e.name) end
      local mode = R.release_mode(ctx, plan)
      ctx.state.release_mode = mode
      if #plan > 0 then
        print("      release: " .. mode.why)
        print("      on failure: " .. R.ladder_text(ctx))
      end
      if #findings > 0 then print((lint.format(findings):gsub("^", "      "):gsub("\n", "\n      "))) end
      if errors > 0 and not o.allow_lint_errors then error(string.format("%d lint error(s) in the pending migrations", errors), 0) end
      if #plan == 0 then ctx.state.nothing_to_do = true end
      return string.format("%d pending, %d lint finding(s)%s", #plan, #findings,
        #plan > 0 and ("; " .. (mode.atomic and "one transaction for the release" or "one transaction per migration")) or "")
    end }
end

--- Approval: on a terminal show the plan and ask; --yes for automation; a
-- protected environment without a terminal and without --yes stops here.
function R.step.approve(o)
  o = o or {}
  return { name = "approval", about = "asks on a terminal; --yes for automation",
    plan = function(ctx) return ctx.yes and "approved by --yes" or "would ask for approval" end,
    run = function(ctx)
      if ctx.state.nothing_to_do and not o.question then ctx.state.stop_early = true return "nothing to migrate: stopping here" end
      if ctx.yes then return "approved by --yes" end
      if sys.isatty(0) then
        -- the plan: what will change, what lint says, where the backup goes, what failure undoes
        local lines = { string.format("      plan for %s (%s)%s:", ctx.env.name, log.redact(ctx.url or "libpq defaults"),
          ctx.env.protected and ", a protected environment" or "") }
        if ctx.state.pending then
          lines[#lines + 1] = string.format("        pending migrations: %d", #ctx.state.pending)
          for _, e in ipairs(ctx.state.pending) do lines[#lines + 1] = "          - " .. e.name end
        end
        if ctx.state.lint then
          lines[#lines + 1] = string.format("        lint findings: %d", #ctx.state.lint)
          for _, f in ipairs(ctx.state.lint) do
            lines[#lines + 1] = string.format("          - %s:%d %s %s: %s", f.file, f.line, f.severity, f.rule, f.message)
          end
        end
        for _, s in ipairs(ctx.def.steps) do
          if s.name == "backup" then lines[#lines + 1] = "        backup: into " .. ctx.env.backups.dir .. ", verified, before any change" end
        end
        if ctx.state.release_mode and ctx.state.pending and #ctx.state.pending > 0 then
          lines[#lines + 1] = "        release: " .. ctx.state.release_mode.why
        end
        for _, s in ipairs(ctx.def.on_failure or {}) do
          lines[#lines + 1] = "        on failure: " .. s.name .. (s.rungs and (": " .. R.ladder_text(ctx, s.rungs)) or (s.about and (" (" .. s.about .. ")") or ""))
        end
        io.stdout:write(table.concat(lines, "\n"), "\n")
        local q = o.question and o.question(ctx) or string.format("apply %d migration(s) to %s (%s)? a backup is taken first; on failure the recovery above runs",
          #(ctx.state.pending or {}), ctx.env.name, log.redact(ctx.url or "libpq defaults"))
        io.stdout:write("      ", q, " [y/N] ")
        io.stdout:flush()
        local a = io.read("l")
        if a and a:lower():match("^y") then return "approved" end
        error("approval declined: nothing was changed", 0)
      end
      if ctx.env.protected then
        error(string.format("environment %s is protected and there is no terminal to ask: pass --yes to approve; nothing was changed", ctx.env.name), 0)
      end
      return "not protected, no terminal: approved"
    end }
end

--- A verified backup of the target (kept for the restore on failure).
function R.step.backup(o)
  o = o or {}
  return { name = "backup", about = "a verified backup, restored on failure",
    plan = function(ctx) return "would back up the database into " .. ctx.env.backups.dir .. " and verify it" end,
    run = function(ctx)
      local backup = require "orch.backup"
      local m = backup.create(ctx:conn(), { dir = ctx.env.backups.dir, env = ctx.env.name, run_id = ctx.run_id })
      ctx.state.backup = m.path
      local lm = m.latest_migration
      ctx.state.schema_before = type(lm) == "table" and lm.version and tostring(lm.version) or "none"
      event(ctx, { event = "backup", path = m.path, sha256 = m.sha256 })
      if o.verify ~= false then backup.verify(m.path) end
      if ctx.env.backups.keep or ctx.env.backups.max_age then
        backup.retain(ctx.env.backups.dir, { keep = ctx.env.backups.keep,
          max_age = args.seconds(ctx.env.backups.max_age, "backups.max_age") })
      end
      return string.format("%s (%.1f MiB, %d rows, verified)", m.path, m.size / 1048576, m.rows)
    end }
end

--- How the release runs, and why: { atomic = bool, why = "..." }. Atomic
-- (one transaction for the whole release, its database checks inside it)
-- when every pending migration can run in a transaction, unless the
-- recipe's migrate step says atomic = false or the environment says
-- release = { atomic = false } (a release too long to hold its locks).
-- o: the migrate step's options (found in the recipe when not given).
function R.release_mode(ctx, plan, o)
  if not o then
    for _, s in ipairs(ctx.def and ctx.def.steps or {}) do if s.release_options then o = s.release_options break end end
  end
  o = o or {}
  if #plan == 0 then return { atomic = false, why = "nothing to migrate" } end
  if o.atomic == false then
    return { atomic = false, why = "the recipe's migrate step says atomic = false: one transaction per migration" }
  end
  if (ctx.env.release or {}).atomic == false then
    return { atomic = false, why = string.format("environment %s sets release.atomic = false: one transaction per migration", ctx.env.name) }
  end
  local ok, _, why = require("orch.migrate").groupable(plan)
  if not ok then return { atomic = false, why = why .. ": one transaction per migration" } end
  return { atomic = true, why = string.format("%s transactional: the release and its database checks run in one transaction (a failure changes nothing)",
    #plan == 1 and "the pending migration is" or string.format("all %d pending migrations are", #plan)) }
end

--- Apply the pending migrations with lock timeouts and retries: as one
-- transaction when R.release_mode allows (then the environment's database
-- checks, orch.health's schema, index, constraint, SQL, row and team
-- checks, run inside it before COMMIT; o.checks = false skips them), else
-- one transaction per migration. o: atomic (default true), checks,
-- lock_timeout, retries. What each run commits is recorded for the
-- recovery ladder (ctx.state.committed, ctx.state.partial).
function R.step.migrate(o)
  o = o or {}
  return { name = "migrate", changes = true, about = "pending migrations, lock_timeout and retries; one transaction when they all allow it",
    release_options = o,
    plan = function(ctx) return string.format("would apply the pending migrations (lock_timeout %s, %d retries)",
      o.lock_timeout or ctx.env.lock_timeout or "5s", o.retries or ctx.env.retries or 5) end,
    run = function(ctx)
      local migrate = require "orch.migrate"
      ctx.state.migrating = true
      local project = migrate_project(ctx)
      local c = ctx:conn()
      local plan = migrate.plan(c, project)
      local mode = R.release_mode(ctx, plan, o)
      ctx.state.release_mode = mode
      if #plan > 0 then print("      " .. mode.why) end
      ctx.state.committed = ctx.state.committed or {}
      ctx.state.applied_names = ctx.state.applied_names or {}
      ctx.state.applied_seen = ctx.state.applied_seen or {}
      local function committed(e)
        table.insert(ctx.state.committed, e)
        if not ctx.state.applied_seen[e.name] then   -- staging migrates twice: name each once
          ctx.state.applied_seen[e.name] = true
          table.insert(ctx.state.applied_names, e.name)
        end
      end
      local before_commit
      if mode.atomic and o.checks ~= false then
        before_commit = function(conn)
          local health = require "orch.health"
          local report = health.run_checks { conn = conn, env = ctx.env, project = project, ctx = ctx, only = "release", savepoints = true }
          event(ctx, { event = "health", step = "migrate (inside the release's transaction)", report = health.to_json(report) })
          if report.status == "fail" then
            local p = health.problems(report, "fail")
            error(string.format("%d database check(s) failed inside the release's transaction: %s", #p, table.concat(p, "; ")), 0)
          end
          print(string.format("      %d database check(s) pass inside the transaction: COMMIT", #report.checks))
        end
      end
      local by_key = {}
      for _, e in ipairs(plan) do by_key[e.key] = e end
      local ok, r = pcall(migrate.up, c, project, { run_id = ctx.run_id, group = mode.atomic, before_commit = before_commit,
        refuse_non_empty = refuses_non_empty(ctx), override = non_empty_override(ctx),
        lock_timeout = o.lock_timeout or ctx.env.lock_timeout, retries = o.retries or ctx.env.retries,
        on_progress = function(ev)
          if ev.event == "done" then
            print(string.format("      %s %s (%d ms)", ev.group and "ran" or "applied", ev.migration.name, ev.ms))
            if not ev.group then committed(ev.migration) end
          elseif ev.event == "committed" then
            for _, a in ipairs(ev.applied) do committed(by_key[a.key]) end
            print(string.format("      committed %d migration(s) in one transaction", #ev.applied))
          end
        end })
      if not ok then
        if type(r) == "table" then
          ctx.state.migrate_error = { group = r.group, partial = r.partial, checks_failed = r.checks_failed, migration = r.migration }
          if r.partial and r.failed_key then ctx.state.partial = project.by_key[r.failed_key] end
        else
          ctx.state.migrate_error = {}
        end
        event(ctx, { event = "migrate_failed", group = r.group or false, partial = r.partial or false,
                     migration = type(r) == "table" and r.migration or json.null })
        error(r, 0)
      end
      ctx.state.applied = r.applied
      return string.format("%d migration(s) applied%s", #r.applied, mode.atomic and " in one transaction" or "")
    end }
end

--- Verify: the environment's health checks (orch.health: database, SQL
-- assertions, row counts, HTTP endpoints, team checks). A failing check
-- fails the step; warnings are printed. o.wait (or the environment's
-- health.wait) keeps polling the HTTP endpoints that long, for services
-- that restart after a release. o.only = "db" | "http" | "database" picks
-- checks; o.advisory = true reports failures without failing the step;
-- o.table = "all" prints every check, not only the ones that do not pass.
function R.step.verify(o)
  o = o or {}
  local about = ({ db = "database checks and SQL assertions (not the endpoints)", http = "the HTTP endpoints",
    database = "the built-in database checks" })[o.only] or "database, SQL assertions and HTTP endpoints (orch check)"
  return { name = o.name or "verify", about = about,
    plan = function(ctx)
      local hc = ctx.env.health or {}
      return string.format("would run the health checks: database, %d SQL assertion(s), %d row count(s), %d HTTP endpoint(s)",
        #(hc.sql or {}), #(hc.rows or {}), #(hc.http or {}))
    end,
    run = function(ctx)
      local health = require "orch.health"
      local ok_p, project = pcall(migrate_project, ctx)
      local wait = o.wait or (ctx.env.health or {}).wait
      -- the schema version to expect: the option, else after a restore the
      -- backup's version, else the environment's setting (default: latest)
      local schema = o.schema
      if schema == nil and ctx.state.restored then schema = "before" end
      if schema == "before" then schema = ctx.state.schema_before or false end
      local report = health.run_checks { conn = ctx:conn(), env = ctx.env, project = ok_p and project or nil, ctx = ctx,
        wait = args.seconds(wait, "wait"), only = o.only, schema = schema }
      ctx.state.health = report
      event(ctx, { event = "health", step = o.name or "verify", report = health.to_json(report) })
      -- the whole table with --verbose (or o.table = "all"); otherwise what is not passing, and the summary
      print(health.format_table(report, { indent = "      ", problems_only = not (ctx.opts.verbose or o.table == "all") }))
      if report.status == "fail" and o.advisory then
        return string.format("NOT healthy (reported, not acted on): %s", table.concat(health.problems(report, "fail"), "; "))
      end
      if report.status == "fail" then
        local p = health.problems(report, "fail")
        error(string.format("%d health check(s) failed: %s%s", #p, p[1], #p > 1 and ("\n  - " .. table.concat(p, "\n  - ", 2)) or ""), 0)
      end
      local n = #report.checks
      return report.status == "pass" and string.format("all %d health checks pass", n)
        or string.format("%d health checks, with warnings: %s", n, table.concat(health.problems(report, "warn"), "; "))
    end }
end

--- Restore this run's backup by swap (the failed database is kept renamed).
function R.step.restore(o)
  o = o or {}
  return { name = "restore", about = "this run's backup, swapped in by rename",
    plan = function() return "on failure: would restore this run's backup (swap by rename)" end,
    run = function(ctx)
      if not ctx.state.backup then error("no backup was taken in this run: cannot restore; a human must look at the database", 0) end
      ctx:close_conn()
      local r = require("orch.backup.restore").run { archive = ctx.state.backup, db = ctx.url, mode = o.mode or "swap", whole = true }
      ctx.project = nil
      ctx.state.restored = true
      event(ctx, { event = "restored", backup = ctx.state.backup, old_database = r.old_database or json.null })
      return string.format("restored %s%s", ctx.state.backup, r.old_database and ("; the failed database is kept as " .. r.old_database) or "")
    end }
end

--- Undo the migrations applied in this run (the staging rollback test).
function R.step.undo_applied(o)
  return { name = "undo this run's migrations", changes = true,
    plan = function() return "would undo the migrations this run applied" end,
    run = function(ctx)
      local n = #(ctx.state.applied or {})
      if n == 0 then return "nothing to undo" end
      require("orch.migrate").undo(ctx:conn(), migrate_project(ctx), { count = n, run_id = ctx.run_id,
        lock_timeout = ctx.env.lock_timeout, retries = ctx.env.retries })
      for _ = 1, n do table.remove(ctx.state.committed or {}) end   -- no longer this run's to recover
      return string.format("%d migration(s) undone", n)
    end }
end

-- ================================================================ the recovery ladder

local RUNG_TEXT = { ["rolled back"] = "nothing committed (the release's transaction rolled back)",
  undo = "undo this run's migrations", restore = "restore this run's backup only if nothing was written since it" }

--- The ladder as one line, for plans: "rolled back, else undo ..., else ...".
function R.ladder_text(ctx, rungs)
  if not rungs then
    for _, s in ipairs(ctx.def and ctx.def.on_failure or {}) do if s.rungs then rungs = s.rungs break end end
  end
  if not rungs then
    local names = {}
    for _, s in ipairs(ctx.def and ctx.def.on_failure or {}) do names[#names + 1] = s.name end
    return #names > 0 and table.concat(names, ", ") or "no failure handlers: a human (exit 4)"
  end
  local parts = {}
  for _, r in ipairs(rungs) do
    local t = RUNG_TEXT[r] or r
    if r == "restore" and (ctx.env.release or {}).discard_writes then
      t = string.format("restore this run's backup, DISCARDING writes made since it (environment %s sets release.discard_writes = true)", ctx.env.name)
    end
    parts[#parts + 1] = t
  end
  parts[#parts + 1] = "stop for a human (exit 4)"
  return table.concat(parts, "; else ")
end

local function names_of(list)
  local out = {}
  for _, e in ipairs(list) do out[#out + 1] = e.name end
  return table.concat(out, ", ")
end

local function has(list, x) for _, v in ipairs(list) do if v == x then return true end end return false end

--- The recovery ladder, for on_failure: the first rung that applies wins,
-- and ctx.recovery (the report, the run log, the webhooks) says which and why.
--   1. "rolled back": nothing this run changed was committed (the atomic
--      release rolled back, or the first migration's own transaction did):
--      exit 1, nothing to restore, no write lost.
--   2. "undo": every migration this run committed (and a half-applied one)
--      has a U file or a Lua down: undone newest first, each in its own
--      transaction; the application's writes stay. Exit 3.
--   3. "restore": this run's backup, only when nothing was written since it
--      (orch.backup.writes measures every table against the backup's
--      snapshot), or when the environment says release = { discard_writes =
--      true }; by swap, so the old database is kept, and the report lists
--      what it holds that the restored one does not. Exit 3. Refused
--      otherwise: exit 4, naming the tables and rows, and the command that
--      would restore anyway.
--   4. Nothing reversible: exit 4 with numbered next steps.
-- o.rungs chooses and orders rungs 1-3 (default all three).
function R.step.recover(o)
  o = o or {}
  local rungs = o.rungs or { "rolled back", "undo", "restore" }
  for _, r in ipairs(rungs) do
    if not RUNG_TEXT[r] then error(string.format("R.step.recover: unknown rung '%s' (rungs: \"rolled back\", \"undo\", \"restore\")", tostring(r)), 2) end
  end
  return { name = "recover", rungs = rungs,
    about = "the ladder: " .. table.concat(rungs, ", then ") .. ", else a human (exit 4)",
    plan = function(ctx) return "on failure: " .. R.ladder_text(ctx, rungs) end,
    run = function(ctx)
      local st = ctx.state
      local committed = st.committed or {}
      local partial = st.partial
      local passed = {}
      local function decide(rung, code, why, lines, quiet)
        ctx.recovery = { rung = rung, exit_code = code, why = why, passed_over = passed, lines = lines }
        event(ctx, { event = "recovery", rung = rung, exit_code = code, why = why, passed_over = passed, lines = lines or json.null })
        if not quiet then   -- the why is the step's result line; its details go above it
          for _, l in ipairs(lines or {}) do print("      " .. l) end
        end
        return rung .. ": " .. why
      end
      -- (the engine prints the error, and the report repeats it: not printed here too)
      local function stop(rung, why, lines)
        decide(rung, R.EXIT.human, why, lines, true)
        error(why .. (lines and #lines > 0 and ("\n" .. table.concat(lines, "\n")) or ""), 0)
      end
      local me = st.migrate_error
      local failed_where = ctx.failure and ctx.failure.step or "?"
      -- 1. nothing committed
      if #committed == 0 and not partial then
        if has(rungs, "rolled back") then
          st.restored = true   -- the schema is where it was before the run
          local why
          if me and me.group then
            why = string.format("%s; the release ran in one transaction and it rolled back: nothing to restore, no write lost",
              me.checks_failed and "a database check failed before COMMIT" or ((me.migration or "a migration") .. " failed"))
          else
            why = string.format("'%s' failed before this run committed any migration: nothing to restore, no write lost", failed_where)
          end
          return decide("rolled back", R.EXIT.failed, why)
        end
        passed[#passed + 1] = { rung = "rolled back", why = "not one of this recipe's rungs" }
      else
        passed[#passed + 1] = { rung = "rolled back", why = string.format("this run committed %s%s", #committed > 0 and names_of(committed) or "",
          partial and (string.format("%s%s ran part-way without a transaction", #committed > 0 and "; " or "", partial.name)) or "") }
      end
      local migrate = require "orch.migrate"
      local project = migrate_project(ctx)
      -- 2. undo, newest first: the half-applied one (the newest), then what was committed
      local todo = {}
      if partial then todo[1] = partial end
      for i = #committed, 1, -1 do todo[#todo + 1] = committed[i] end
      if has(rungs, "undo") and #todo > 0 then
        local missing = {}
        for _, e in ipairs(todo) do if not e.undo then missing[#missing + 1] = e end end
        if #missing > 0 then
          passed[#passed + 1] = { rung = "undo", why = string.format("%s ha%s no undo (no U file, no Lua down)", names_of(missing), #missing == 1 and "s" or "ve") }
        else
          local undone = {}
          local ok, err = pcall(migrate.undo, ctx:conn(), project, { only = todo, run_id = ctx.run_id,
            lock_timeout = ctx.env.lock_timeout, retries = ctx.env.retries,
            on_progress = function(ev)
              if ev.event == "done" then
                undone[#undone + 1] = ev.migration
                print(string.format("      undid %s (%d ms)", ev.migration.undo.name, ev.ms))
              end
            end })
          -- what was undone is no longer this run's to recover
          local gone = {}
          for _, e in ipairs(undone) do gone[e] = true end
          if partial and gone[partial] then st.partial, partial = nil, nil end
          local keep = {}
          for _, e in ipairs(committed) do if not gone[e] then keep[#keep + 1] = e end end
          st.committed, committed = keep, keep
          if ok then
            st.restored = true
            local why = string.format("%s%s undone newest first (%s), each in its own transaction: what the application wrote meanwhile stays",
              (not me and failed_where ~= "migrate") and string.format("'%s' failed after the release committed; ", failed_where) or "",
              #undone == 1 and "this run's migration" or string.format("this run's %d migrations", #undone), names_of(undone))
            return decide("undo", R.EXIT.restored, why)
          end
          passed[#passed + 1] = { rung = "undo", why = string.format("undoing failed: %s%s", errtext(err):gsub("\n.*", ""),
            #undone > 0 and (" (undone before it: " .. names_of(undone) .. ")") or "") }
        end
      elseif #todo > 0 then
        passed[#passed + 1] = { rung = "undo", why = "not one of this recipe's rungs" }
      end
      -- 3. restore, when nothing would be lost
      local writes = require "orch.backup.writes"
      local exclude = { project.schema .. "." .. project.table }
      local lost_lines
      if has(rungs, "restore") then
        if not st.backup then
          passed[#passed + 1] = { rung = "restore", why = "this run took no backup" }
        else
          local manifest = require("orch.backup").read_manifest(st.backup)
          local w = writes.measure(ctx:conn(), manifest, { exclude = exclude })
          local discard = (ctx.env.release or {}).discard_writes == true
          event(ctx, { event = "writes_since_backup", backup = st.backup, measurable = w.measurable, changed = w.changed,
                       tables = w.tables, why = w.why or json.null })
          if w.changed and not discard then
            lost_lines = writes.lines(w, "")
            passed[#passed + 1] = { rung = "restore", why = string.format("refused: %s since the backup %s (restoring would lose %s)",
              w.measurable and "rows were written" or "orch cannot tell what was written", st.backup,
              not w.measurable and "them" or (w.rows_new > 0 and w.rows_gone > 0) and
                string.format("%d new or changed row(s) and bring back %d deleted or changed one(s)", w.rows_new, w.rows_gone)
              or w.rows_new > 0 and string.format("%d new or changed row(s)", w.rows_new)
              or string.format("the deletes or changes of %d row(s), bringing them back", w.rows_gone)) }
          else
            ctx:close_conn()
            local r = require("orch.backup.restore").run { archive = st.backup, db = ctx.url, mode = "swap", whole = true }
            ctx.project = nil
            st.restored = true
            event(ctx, { event = "restored", backup = st.backup, old_database = r.old_database or json.null })
            -- the kept old database, measured now that no session writes to it: what it holds that the restored one does not
            local oc <close> = ctx:conn():clone { dbname = r.old_database }
            local after = writes.measure(oc, manifest, { exclude = exclude })
            oc:close()
            local lines = { string.format("the failed database is kept as %s", r.old_database) }
            if after.changed then
              lines[#lines + 1] = string.format("%s holds what the restored database does not:", r.old_database)
              for _, l in ipairs(writes.lines(after, "  ")) do lines[#lines + 1] = l end
            else
              lines[#lines + 1] = string.format("%s holds no row the restored database does not", r.old_database)
            end
            if after.changed and not discard then
              -- written while the restore ran (after the measurement): kept, but not in the restored database
              stop("restore", string.format("restored %s, but rows were written to the old database while it was restored: they are not in the restored database", st.backup), lines)
            end
            local why = discard and w.changed and string.format("restored %s by swap, discarding what was written since it (environment %s sets release.discard_writes = true)", st.backup, ctx.env.name)
              or string.format("nothing was written since the backup (every table measured against its snapshot): restored %s by swap", st.backup)
            return decide("restore", R.EXIT.restored, why, lines)
          end
        end
      end
      -- 4. a human
      local name = ctx.env.name
      local steps = { "what was written since the backup, and would be lost by restoring it:" }
      if lost_lines then for _, l in ipairs(lost_lines) do steps[#steps + 1] = "  " .. l end else steps = {} end
      local n = 0
      local function step(t) n = n + 1; steps[#steps + 1] = string.format("%d. %s", n, t) end
      step(string.format("see where the database stands: orch status --env %s (and orch runs show %s for this run)", name, ctx.run_id))
      if partial then
        step(string.format("%s ran part-way without a transaction (the error above says which statements ran): finish or reverse them by hand", partial.name))
        step(string.format("then clear its failed entry: orch repair --env %s --yes", name))
      end
      if #committed > 0 then
        local no_undo = {}
        for _, e in ipairs(committed) do if not e.undo then no_undo[#no_undo + 1] = e end end
        step(string.format("undo what this run committed%s: %s (newest first: orch undo --env %s --count %d --yes)",
          #no_undo > 0 and (", once " .. names_of(no_undo) .. " ha" .. (#no_undo == 1 and "s" or "ve") .. " an undo") or "",
          names_of(committed), name, #committed))
      end
      if st.backup then
        step(string.format("or restore this run's backup, LOSING what is listed above (the current database is kept, renamed): orch restore %s --env %s --swap --yes", st.backup, name))
      end
      step(string.format("then run the release again: orch recipes/%s.lua --env %s", ctx.name, name))
      local why = #passed > 0 and passed[#passed].why or "no rung applies"
      stop("a human", "nothing could be reversed without losing data: " .. why, steps)
    end }
end

--- Notify the environment's webhooks of the outcome (never fails the run).
function R.step.notify()
  return { name = "notify", about = "the environment's webhooks (never fails the run)", plan = function(ctx) return #require("orch.notify").targets(ctx.env) .. " webhook(s) configured" end,
    run = function(ctx)
      local what = ({ [R.EXIT.ok] = "run_succeeded", [R.EXIT.restored] = "run_restored", [R.EXIT.human] = "run_needs_human",
                      [R.EXIT.interrupted] = "run_interrupted" })[ctx.exit_code] or "run_failed"
      local res = R.notify(ctx, what)
      local n = 0
      for _, r in ipairs(res) do if r.delivered then n = n + 1 end end
      return string.format("%d of %d webhook(s) notified", n, #res)
    end }
end

return R
