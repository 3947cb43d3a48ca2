--- orch.fleet: one recipe rolled over many databases (`orch fleet RECIPE
-- --env NAME`). Each target runs the recipe as an ordinary run of its own,
-- in a child orch process: its own Lua state, connections, run id, backup
-- namespace (backups.dir/TARGET), run log, history rows, recovery ladder
-- and retention, and its own signal handling. The fleet only schedules,
-- watches and reports, so memory and connections grow with --parallel,
-- never with the fleet's size.
--
--   local fleet = require "orch.fleet"
--   local report = fleet.rollout { recipe = "recipes/prod.lua", env = env, targets = targets,
--                                  parallel = 4, canary = 1, max_failures = 3, yes = true }
--   -- report.exit_code: 0 when every target succeeded, else the worst one's
--
-- Scheduling: the first `canary` targets run one at a time, and the first
-- failure among them stops the rollout; then up to `parallel` at once.
-- After `max_failures` failed targets no new one starts. Ctrl-C: no new
-- target starts and the running ones finish, their recovery included; a
-- second Ctrl-C sends them SIGINT (each cancels its statement and writes
-- its report); a third kills orch at once. Targets that never started are
-- reported as "not started", with the reason.
local sys = require "orch.sys"
local proc = require "orch.proc"
local log = require "orch.log"
local json = require "orch.json"

local F = {}

F.DEFAULT_PARALLEL = 4
F.MAX_PARALLEL = 64
-- connections one target's run holds at most at once (its session and the
-- advisory lock's; measured by tests/bench/fleet_200.sh)
F.CONNECTIONS_PER_RUN = 2
local SIGINT, SIGKILL = 2, 9
local POLL = 0.05
-- how long a target interrupted by --timeout has to end (its recovery) before it is killed
F.TIMEOUT_GRACE = 60

-- How bad an exit code is, for the fleet's overall code ("the worst"):
-- 0 < 1 (nothing changed) < 2 (usage) < 3 (recovered) < 130 (interrupted) < 4 (a human).
local RANK = { [0] = 0, [1] = 1, [2] = 2, [3] = 3, [130] = 4, [4] = 5 }
function F.worse(a, b)
  if a == nil then return b end
  if b == nil then return a end
  return (RANK[b] or 5) > (RANK[a] or 5) and b or a
end

local function duration(s)
  if not s then return "" end
  return s < 1 and string.format("%dms", math.floor(s * 1000)) or string.format("%.1fs", s)
end
F.duration = duration

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- The child's --json result: the last line of its stdout that is a JSON object.
local function child_result(path)
  local text = read(path) or ""
  local last
  for line in text:gmatch("[^\n]+") do if line:sub(1, 1) == "{" then last = line end end
  if not last then return nil end
  local ok, r = pcall(json.decode, last)
  return ok and type(r) == "table" and r or nil
end

-- The error a child printed last (for runs that ended before their report).
local function last_error(path)
  local text = read(path) or ""
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  for i = #lines, 1, -1 do
    local l = lines[i]
    if not l:match("^%s*see 'orch") and not l:match("^stack traceback") and not l:match("^%s+%[") then
      return (l:gsub("^orch: ", ""):gsub("^error: ", ""))
    end
  end
  return nil
end

local function plan_of(r)
  if not r or type(r.steps) ~= "table" then return nil end
  for _, s in ipairs(r.steps) do
    if s.step == "plan and lint" and s.detail then return (s.detail:gsub("\n.*", "")) end
  end
  for _, s in ipairs(r.steps) do
    if type(s.detail) == "string" and s.detail:match("^would apply") then return (s.detail:gsub("\n.*", "")) end
  end
  local n = 0
  for _, s in ipairs(r.steps) do if s.status == "dry-run" then n = n + 1 end end
  return string.format("%d step(s) would run", n)
end

--- A fleet run id: like a run's, with an F: 20261201T140000Z-F1a2b3c.
function F.new_id()
  local b = sys.random_bytes(3)
  return os.date("!%Y%m%dT%H%M%SZ") .. "-F" .. (b:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function outcome_word(t)
  if t.status == "not started" then return "not started" end
  if t.exit_code == 0 then return "ok" end
  if t.exit_code == 130 then return "INTERRUPTED" end
  return "FAILED"
end

--- The backup namespace of target t in environment env: backups.dir/TARGET
-- (its backups, run logs and retention; --fleet-target narrows to the same).
function F.backups_dir(env, t) return env.backups.dir .. "/" .. t.name end

--- Run the rollout. o: recipe (path), env (loaded environment), targets
-- (orch.fleet.targets list), parallel, canary, max_failures (nil = no
-- limit), dry_run, recipe_args (list), say (function(line): progress),
-- quiet (no per-target lines), logdir (where the children's output goes).
-- Returns the report table (see F.to_json); never raises for a target's
-- failure, only for misuse.
function F.rollout(o)
  local env, targets = o.env, o.targets
  local parallel = o.parallel or F.DEFAULT_PARALLEL
  local canary = math.min(o.canary or 0, #targets)
  local say = o.say or print
  local exe = proc.exe()
  local fleet_id = o.fleet_id or F.new_id()
  local base_dir = env.backups.dir
  local logdir = o.logdir or (base_dir .. "/fleet/" .. fleet_id)
  assert(sys.mkdir_p(logdir, 448), "cannot create " .. logdir)
  local t0 = sys.monotonic()
  local recs = {}
  for i, t in ipairs(targets) do
    recs[i] = { index = i, name = t.name, database = t.where, target = t, status = "not started", canary = i <= canary }
  end
  local running = {}
  local next_i, failures, done = 1, 0, 0
  local stop, interrupts = nil, 0
  local peak_running = 0
  local namew = 1
  for _, t in ipairs(targets) do if #t.name > namew then namew = #t.name end end

  local function launch(rec)
    local t = rec.target
    if not o.dry_run then rec.run_id = require("orch.recipe").new_run_id() end
    rec.backups_dir = F.backups_dir(env, t)
    rec.out_path = string.format("%s/%s.json", logdir, t.name)
    rec.log_path = string.format("%s/%s.log", logdir, t.name)
    local argv = { exe, o.recipe, "--env", env.name, "--json" }
    argv[#argv + 1] = o.dry_run and "--dry-run" or "--yes"
    for _, a in ipairs(o.recipe_args or {}) do argv[#argv + 1] = a end
    argv.stdout, argv.stderr = rec.out_path, rec.log_path
    argv.env = {
      ORCH_FLEET_ENV = env.name,
      ORCH_FLEET_TARGET = json.encode(json.object { name = t.name, vars = json.object(t.vars), run_id = rec.run_id,
        fleet_id = fleet_id, index = rec.index }),
      ORCH_FLEET_DATABASE = t.conn,
      ORCH_FLEET_BACKUPS_DIR = rec.backups_dir,
    }
    rec.spec = argv
    rec.status = "running"
    rec.started_at = sys.monotonic()
    running[#running + 1] = rec
    if #running > peak_running then peak_running = #running end
    -- proc.start leaves the handle in argv.proc before it returns: a Ctrl-C
    -- landing on the return cannot lose a started child
    local ok, err = pcall(proc.start, argv)
    if not ok and not argv.proc then
      if type(err) == "table" and err.interrupted then error(err, 0) end
      return false, tostring(err)
    end
    if not ok then error(err, 0) end
    return true
  end

  local function finish(rec, r)
    if rec.status == "done" then return end
    local res = not r.start_error and child_result(rec.out_path) or nil
    rec.seconds = r.seconds
    rec.maxrss_kb = r.maxrss_kb
    if r.start_error then
      rec.exit_code, rec.outcome, rec.cause = 1, "could not start", r.start_error
    elseif r.signal then
      rec.exit_code = 4
      rec.signal = r.signal
      rec.outcome = string.format("killed by signal %d (its state is unknown: a human must look)", r.signal)
    else
      rec.exit_code = r.code
      rec.outcome = res and res.outcome or ({ [0] = "SUCCEEDED", [1] = "FAILED (nothing was changed)", [2] = "USAGE ERROR",
        [3] = "FAILED AND RECOVERED", [4] = "FAILED: NEEDS A HUMAN", [130] = "INTERRUPTED" })[r.code] or ("exit " .. tostring(r.code))
    end
    if res then
      rec.run_id = res.run_id or rec.run_id
      rec.backup = res.backup
      rec.failed_step = res.failed_step
      rec.cause = res.cause
      rec.run_log = res.run_log
      rec.recovery = res.recovery
      if o.dry_run then rec.plan = plan_of(res) end
    end
    if rec.timed_out and rec.exit_code == 0 then
      rec.outcome = rec.outcome .. " (it ended as --timeout's interrupt came)"
    elseif rec.timed_out then
      rec.outcome = string.format("TIMED OUT after %s (--timeout), then %s", duration(o.timeout), rec.outcome)
      rec.cause = string.format("still running after --timeout %s: interrupted%s", duration(o.timeout), rec.killed and " and killed" or "") ..
        (rec.cause and ("; " .. rec.cause) or "")
    end
    if rec.exit_code ~= 0 and not rec.cause then rec.cause = last_error(rec.log_path) end
    rec.status = "done"
    done = done + 1
    if rec.exit_code ~= 0 then
      failures = failures + 1
      if rec.canary and not stop then
        stop = { reason = "canary", text = string.format("the canary %s failed: no other target was started", rec.name) }
      elseif o.max_failures and o.max_failures > 0 and failures >= o.max_failures and not stop then
        stop = { reason = "max_failures", text = string.format("%d target(s) failed (--max-failures %d): no new target was started", failures, o.max_failures) }
      end
    end
    if not o.quiet then
      local line = string.format("[%" .. #tostring(#recs) .. "d/%d] %-11s %-" .. namew .. "s  %s in %s", done, #recs, outcome_word(rec), rec.name,
        rec.outcome, duration(rec.seconds))
      if rec.exit_code ~= 0 then
        line = line .. string.format("%s%s", rec.failed_step and (", step '" .. rec.failed_step .. "'") or "", rec.cause and (": " .. rec.cause) or "")
      elseif o.dry_run and rec.plan then
        line = line .. ": " .. rec.plan
      end
      say(log.redact(line))
    end
  end

  local function on_interrupt()
    interrupts = interrupts + 1
    sys.clear_interrupt()
    if interrupts == 1 then
      stop = stop or { reason = "interrupted" }
      stop.interrupted = true
      stop.text = stop.text or "interrupted (Ctrl-C): no new target was started"
      say(log.paint("warn", string.format("Ctrl-C: no new target starts; waiting for the %d running target(s) to finish, their recovery included " ..
        "(Ctrl-C again interrupts them)", #running)))
      proc.rearm_interrupt()
    else
      say(log.paint("warn", string.format("second Ctrl-C: interrupting the %d running target(s); each cancels its statement and writes its report " ..
        "(a third Ctrl-C ends orch at once)", #running)))
      for _, rec in ipairs(running) do if rec.spec.proc then rec.spec.proc:signal(SIGINT) end end
    end
  end

  local function step()
    -- start what may start
    while not stop and next_i <= #recs do
      local rec = recs[next_i]
      local limit = rec.canary and 1 or parallel
      -- the canaries run alone, and the rest only after every canary passed
      local canary_running = false
      for _, r in ipairs(running) do if r.canary then canary_running = true end end
      if #running >= limit or (not rec.canary and canary_running) then break end
      next_i = next_i + 1
      local started, why = launch(rec)
      if not started then
        for i, r in ipairs(running) do if r == rec then table.remove(running, i) break end end
        finish(rec, { code = 1, seconds = 0, start_error = why })
      end
    end
    -- reap what ended
    local i = 1
    while i <= #running do
      local rec = running[i]
      local r = rec.spec.proc:poll()
      if r then
        finish(rec, r)
        table.remove(running, i)
      else
        i = i + 1
        -- --timeout: interrupted as Ctrl-C would (its recovery runs), killed when that does not end it in time
        local now = sys.monotonic()
        if o.timeout and not rec.timed_out and now - rec.started_at > o.timeout then
          rec.timed_out = now
          say(log.paint("warn", string.format("%s: still running after --timeout %s: interrupting it (its recovery runs; killed if it has not ended in %ds)",
            rec.name, duration(o.timeout), F.TIMEOUT_GRACE)))
          rec.spec.proc:signal(SIGINT)
        elseif rec.timed_out and not rec.killed and now - rec.timed_out > F.TIMEOUT_GRACE then
          rec.killed = true
          say(log.paint("error", string.format("%s: did not end %ds after it was interrupted: killed", rec.name, F.TIMEOUT_GRACE)))
          rec.spec.proc:signal(SIGKILL)
        end
      end
    end
    if #running > 0 then sys.sleep(POLL) end
  end

  local engine_error
  while #running > 0 or (not stop and next_i <= #recs) do
    local ok, err = pcall(step)
    if not ok then
      if type(err) == "table" and err.interrupted then
        on_interrupt()
      else
        -- a fault of the fleet itself: start nothing more, but the running targets finish and are reported
        engine_error = log.redact(tostring(err))
        stop = stop or { reason = "error" }
        stop.text = "the fleet stopped on an error of its own: " .. engine_error
        say(log.paint("error", stop.text))
        if #running > 0 then
          -- waiting must not fail too: a plain loop
          while #running > 0 do
            local j = 1
            while j <= #running do
              local r = running[j].spec.proc:poll()
              if r then finish(running[j], r) table.remove(running, j) else j = j + 1 end
            end
            local okw, e = pcall(sys.sleep, POLL)
            if not okw and type(e) == "table" and e.interrupted then on_interrupt() end
          end
        end
      end
    end
  end
  if interrupts > 0 then sys.clear_interrupt() end

  -- the report
  local counts = { succeeded = 0, failed = 0, interrupted = 0, not_started = 0 }
  local code = 0
  for _, rec in ipairs(recs) do
    if rec.status == "not started" then
      counts.not_started = counts.not_started + 1
      rec.not_started_because = stop and stop.reason or nil
    elseif rec.exit_code == 0 then counts.succeeded = counts.succeeded + 1
    elseif rec.exit_code == 130 then counts.interrupted = counts.interrupted + 1; code = F.worse(code, 130)
    else counts.failed = counts.failed + 1; code = F.worse(code, RANK[rec.exit_code] and rec.exit_code or 4) end
  end
  if stop and stop.interrupted then code = F.worse(code, 130) end
  if engine_error then code = F.worse(code, 1) end
  return { fleet_id = fleet_id, recipe = o.recipe, env = env.name, dry_run = o.dry_run or false, exit_code = code,
           seconds = sys.monotonic() - t0, parallel = parallel, canary = canary, max_failures = o.max_failures,
           stopped = stop, counts = counts, targets = recs, logdir = logdir, peak_running = peak_running,
           maxrss_kb = proc.maxrss_kb(), engine_error = engine_error, t0 = t0 }
end

--- The report as the JSON document `orch fleet --json` prints.
function F.to_json(rep)
  local targets = {}
  for i, r in ipairs(rep.targets) do
    targets[i] = json.object {
      name = r.name, database = r.database, status = r.status == "done" and (r.exit_code == 0 and "succeeded" or r.exit_code == 130 and "interrupted" or "failed") or r.status,
      exit_code = r.exit_code, outcome = r.outcome, seconds = r.seconds, run_id = r.run_id, backup = r.backup,
      failed_step = r.failed_step, cause = r.cause, recovery = r.recovery, run_log = r.run_log, log = r.log_path,
      backups_dir = r.backups_dir, canary = r.canary or nil, plan = r.plan, not_started_because = r.not_started_because,
      signal = r.signal, maxrss_kb = r.maxrss_kb, timed_out = r.timed_out and true or nil,
      -- seconds from the rollout's start: when it started (the schedule can be checked from the report)
      started = r.started_at and rep.t0 and (r.started_at - rep.t0) or nil,
    }
  end
  return json.object {
    fleet_id = rep.fleet_id, recipe = rep.recipe, env = rep.env, dry_run = rep.dry_run, exit_code = rep.exit_code,
    outcome = F.outcome(rep), seconds = rep.seconds, parallel = rep.parallel, canary = rep.canary, max_failures = rep.max_failures,
    stopped = rep.stopped and json.object { reason = rep.stopped.reason, text = rep.stopped.text } or nil,
    counts = rep.counts, report = rep.report_path, peak_running = rep.peak_running, maxrss_kb = rep.maxrss_kb, targets = targets,
  }
end

--- One line: "12 targets: 11 succeeded, 1 failed".
function F.summary(rep)
  local c = rep.counts
  local parts = { string.format("%d succeeded", c.succeeded) }
  if c.failed > 0 then parts[#parts + 1] = string.format("%d failed", c.failed) end
  if c.interrupted > 0 then parts[#parts + 1] = string.format("%d interrupted", c.interrupted) end
  if c.not_started > 0 then parts[#parts + 1] = string.format("%d not started", c.not_started) end
  return string.format("%d target%s: %s", #rep.targets, #rep.targets == 1 and "" or "s", table.concat(parts, ", "))
end

function F.outcome(rep)
  if rep.dry_run then return rep.exit_code == 0 and "DRY RUN (nothing was changed)" or "DRY RUN FAILED (nothing was changed)" end
  if rep.stopped and rep.stopped.interrupted then return "INTERRUPTED" end
  if rep.exit_code == 0 then return "SUCCEEDED" end
  if rep.stopped and rep.stopped.reason == "canary" then return "STOPPED: THE CANARY FAILED" end
  if rep.stopped and rep.stopped.reason == "max_failures" then return "STOPPED: TOO MANY FAILURES" end
  return "FAILED"
end

--- The report for people: one line per target, then the totals.
function F.format(rep)
  local out = {}
  out[#out + 1] = string.format("fleet %s %s over environment %s — %s in %s — fleet run %s",
    rep.recipe, F.outcome(rep), rep.env, F.summary(rep), duration(rep.seconds), rep.fleet_id)
  local w = 6
  for _, r in ipairs(rep.targets) do if #r.name > w then w = #r.name end end
  out[#out + 1] = string.format("  %-" .. w .. "s  %-4s  %-8s  %s", "target", "exit", "time", "outcome")
  for _, r in ipairs(rep.targets) do
    local detail
    if r.status == "not started" then
      detail = "not started" .. (r.not_started_because and (" (" .. ({ canary = "the canary failed", max_failures = "max failures reached",
        interrupted = "interrupted", error = "the fleet stopped" })[r.not_started_because] .. ")") or "")
    else
      detail = r.outcome or "?"
      if rep.dry_run and r.plan and r.exit_code == 0 then detail = r.plan end
      if r.exit_code ~= 0 then
        detail = detail .. (r.failed_step and (", step '" .. r.failed_step .. "'") or "") .. (r.cause and (": " .. r.cause) or "")
        if r.recovery and r.recovery.rung then detail = detail .. " [recovery: " .. r.recovery.rung .. "]" end
      end
      if r.backup then detail = detail .. "  backup " .. r.backup end
    end
    out[#out + 1] = log.redact(string.format("  %-" .. w .. "s  %-4s  %-8s  %s%s", r.name, r.exit_code and tostring(r.exit_code) or "-",
      duration(r.seconds), r.canary and "(canary) " or "", detail))
  end
  if rep.stopped and rep.stopped.text then out[#out + 1] = "  stopped: " .. rep.stopped.text end
  if not rep.dry_run then
    out[#out + 1] = string.format("  each target's runs: orch runs --env %s --fleet-target TARGET (backups: orch backups list --env %s --fleet-target TARGET); its output: %s/TARGET.log",
      rep.env, rep.env, rep.logdir)
    if rep.report_path then out[#out + 1] = "  report: " .. rep.report_path end
  end
  out[#out + 1] = string.format("  exit %d%s", rep.exit_code, rep.exit_code == 0 and "" or " (the worst of the targets')")
  return table.concat(out, "\n")
end

--- The rollout's webhooks: fleet_started, then fleet_succeeded,
-- fleet_failed or fleet_interrupted, to the environment's webhooks (their
-- events filter applies). Never raises; returns the delivery results.
function F.notify(env, what, info)
  local notify = require "orch.notify"
  local hooks, missing = notify.targets(env)
  if what == "fleet_started" then
    for _, m in ipairs(missing) do log.warn("webhook %s is not set in the environment: not notified", m) end
  end
  if #hooks == 0 then return {} end
  local ok, res = pcall(notify.send, hooks, what, info)
  if not ok then
    if type(res) == "table" and res.interrupted then sys.clear_interrupt() end
    log.warn("fleet notification %s not sent: %s", what, tostring(res))
    return {}
  end
  for _, r in ipairs(res) do
    if not r.delivered then log.warn("notification %s to %s not delivered: %s (the rollout goes on)", what, r.name, tostring(r.error)) end
  end
  return res
end

--- Keep the newest `keep` fleet reports (and their output directories) in dir/fleet.
function F.retain(dir, keep, current)
  local fdir = dir .. "/fleet"
  local ids = {}
  for _, f in ipairs(sys.listdir(fdir) or {}) do
    local id = f:match("^(.-)%.json$")
    if id and id ~= current then ids[#ids + 1] = id end
  end
  table.sort(ids)
  for i = 1, #ids - (keep - 1) do
    os.remove(fdir .. "/" .. ids[i] .. ".json")
    sys.rmtree(fdir .. "/" .. ids[i])
  end
end

return F
