--- orch.recipe: the recipe engine. A recipe is a list of named steps with
-- on_failure and always handlers; each step is logged (terminal and a JSON
-- lines run log per environment), and the exit code says how the run ended:
--   0 succeeded, 1 failed before changing anything, 3 failed and was
--   restored, 4 failed and needs a human, 130 interrupted.
--
--   local R = require "orch.recipe"
--   local opts, env = R.setup({ ... }, "prod")
--   return R.run { name = "prod", opts = opts, env = env,
--     steps = { R.step.preflight {}, R.step.plan {}, R.step.approve {}, R.step.backup {}, R.step.migrate {}, R.step.verify {} },
--     on_failure = { R.step.restore {}, R.step.verify {} }, always = { R.step.notify {} } }
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

R.common_options = { "db", "dir", "env", "yes", "dry_run", "json", "verbose" }

--- Parse a recipe's arguments and load its environment.
-- Returns opts, env. With --help prints the recipe's help and exits 0.
function R.setup(argv, default_env, extra, summary)
  local spec = args.spec(R.common_options, extra)
  R._spec, R._summary = spec, summary
  if R._describing then return {}, { name = default_env, backups = {}, database = {}, health = {}, webhooks = {}, placeholders = {} } end
  local opts = args.parse(argv, spec, "recipe")
  if opts.help then
    print((summary or "") .. "\n\noptions:\n" .. args.help(spec))
    os.exit(0)
  end
  if opts.verbose then log.level = "debug" end
  local env = envmod.load(opts.env or default_env)
  return opts, env
end

function R.new_run_id()
  local b = sys.random_bytes(3)
  return os.date("!%Y%m%dT%H%M%SZ") .. "-" .. (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- ================================================================ the run

local function duration(s) return s < 1 and string.format("%dms", math.floor(s * 1000)) or string.format("%.1fs", s) end

local function runlog_open(ctx)
  if ctx.dry_run then return nil end
  local dir = ctx.env.backups.dir .. "/runs"
  if not sys.mkdir_p(dir, 448) then return nil end
  ctx.runlog_path = string.format("%s/%s.jsonl", dir, ctx.run_id)
  return io.open(ctx.runlog_path, "a")
end

local function event(ctx, ev)
  ev.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  ev.run_id = ctx.run_id
  if ctx.runlog then
    ctx.runlog:write(log.redact(json.encode(ev)), "\n")
    ctx.runlog:flush()
  end
end

local function errtext(e)
  if type(e) == "table" and e.interrupted then return "interrupted" end
  return log.redact(tostring(e))
end

--- Describe what a recipe declares (for orch help RECIPE).
function R.describe(path)
  R._describing = true
  local cli = require "orch.cli"
  local chunk = cli.load_recipe(path, {})
  local ok, def = pcall(chunk)
  R._describing = false
  if not ok then error(def, 0) end
  if type(def) ~= "table" or not def.steps then return path .. ": not an orch.recipe recipe (it does not return R.run{...})" end
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
    -- --json: stdout carries only the JSON result; the steps' human output goes to stderr
    local real = _G.print
    _G.print = function(...)
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
                run_id = opts.run_id or R.new_run_id(), changed = false, results = {} }
  function ctx:conn()
    if not self._conn or self._conn:is_closed() then self._conn = db.connect(self.url) end
    return self._conn
  end
  function ctx:close_conn() if self._conn then self._conn:close() end end
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
  print(string.format("orch %s — run %s, environment %s%s, database %s%s", def.name, ctx.run_id, env.name,
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
        code = all_ok and R.EXIT.restored or R.EXIT.human
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
  if code == R.EXIT.human then
    print("  " .. log.paint("error", "a human must look at the database: the failure handlers did not bring it back") ..
      (ctx.state.backup and ("; this run's backup is " .. ctx.state.backup) or ""))
  end
  if ctx.runlog_path then print("  run log: " .. ctx.runlog_path) end
  event(ctx, { event = "run_end", exit_code = code, outcome = outcome, seconds = sys.monotonic() - t0,
               failed_step = failure and failure.step or json.null })
  if ctx.runlog then ctx.runlog:close() end
  if ctx.runlog_path then
    -- run logs are kept like backups are: the newest backups.keep_runs (100),
    -- and every run whose backup is still there
    local okp, perr = pcall(require("orch.backup").retain_runs, ctx.env.backups.dir, { keep = ctx.env.backups.keep_runs, current = ctx.run_id })
    if not okp then log.warn("could not prune old run logs in %s/runs: %s", ctx.env.backups.dir, errtext(perr)) end
  end
  pcall(ctx.close_conn, ctx)
  if opts.json then
    io.stdout:write(json.encode { run_id = ctx.run_id, exit_code = code, outcome = outcome, steps = ctx.results }, "\n")
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
    database = ctx.url and log.redact(ctx.url) or nil }
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
function R.step.plan(o)
  o = o or {}
  return { name = "plan and lint", about = "pending migrations and lint findings",
    plan = function(ctx)
      local migrate = require "orch.migrate"
      local ok, p = pcall(migrate.plan, ctx:conn(), migrate_project(ctx))
      if not ok then return "would stop: " .. errtext(p) end
      local names = {}
      for _, e in ipairs(p) do names[#names + 1] = e.name end
      return #names == 0 and "nothing to migrate" or ("would apply: " .. table.concat(names, ", "))
    end,
    run = function(ctx)
      local migrate, lint = require "orch.migrate", require "orch.lint"
      local project = migrate_project(ctx)
      lint.load_rules("orch.lint.lua")
      local plan = migrate.plan(ctx:conn(), project)
      ctx.state.pending = plan
      local findings = lint.run(project, plan)
      ctx.state.lint = findings
      local errors = 0
      for _, f in ipairs(findings) do if f.severity == "error" then errors = errors + 1 end end
      for _, e in ipairs(plan) do print("      pending: " .. e.name) end
      if #findings > 0 then print((lint.format(findings):gsub("^", "      "):gsub("\n", "\n      "))) end
      if errors > 0 and not o.allow_lint_errors then error(string.format("%d lint error(s) in the pending migrations", errors), 0) end
      if #plan == 0 then ctx.state.nothing_to_do = true end
      return string.format("%d pending, %d lint finding(s)", #plan, #findings)
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
        for _, s in ipairs(ctx.def.on_failure or {}) do
          lines[#lines + 1] = "        on failure: " .. s.name .. (s.about and (" (" .. s.about .. ")") or "")
        end
        io.stdout:write(table.concat(lines, "\n"), "\n")
        local q = o.question and o.question(ctx) or string.format("apply %d migration(s) to %s (%s)? a backup is taken first and restored on failure",
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

--- Apply the pending migrations with lock timeouts and retries.
function R.step.migrate(o)
  o = o or {}
  return { name = "migrate", changes = true, about = "pending migrations, lock_timeout and retries",
    plan = function(ctx) return string.format("would apply the pending migrations (lock_timeout %s, %d retries)",
      o.lock_timeout or ctx.env.lock_timeout or "5s", o.retries or ctx.env.retries or 5) end,
    run = function(ctx)
      local migrate = require "orch.migrate"
      ctx.state.migrating = true
      local r = migrate.up(ctx:conn(), migrate_project(ctx), { run_id = ctx.run_id,
        lock_timeout = o.lock_timeout or ctx.env.lock_timeout, retries = o.retries or ctx.env.retries,
        on_progress = function(ev)
          if ev.event == "done" then
            print(string.format("      applied %s (%d ms)", ev.migration.name, ev.ms))
            ctx.state.applied_names = ctx.state.applied_names or {}
            ctx.state.applied_seen = ctx.state.applied_seen or {}
            if not ctx.state.applied_seen[ev.migration.name] then   -- staging migrates twice: name each once
              ctx.state.applied_seen[ev.migration.name] = true
              table.insert(ctx.state.applied_names, ev.migration.name)
            end
          end
        end })
      ctx.state.applied = r.applied
      return string.format("%d migration(s) applied", #r.applied)
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
      local r = require("orch.backup.restore").run { archive = ctx.state.backup, db = ctx.url, mode = o.mode or "swap" }
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
      require("orch.migrate").undo(ctx:conn(), migrate_project(ctx), { count = n, run_id = ctx.run_id })
      return string.format("%d migration(s) undone", n)
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
