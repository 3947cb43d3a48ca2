-- orch.recipe: the engine itself, with steps of our own, run through the
-- real binary (exit codes, terminal output, run log, signals).
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"

-- A project directory with an orch.env.lua and one recipe file.
local function project(recipe_body, envs)
  local dir = H.tmpdir()
  H.write(dir .. "/orch.env.lua", envs or string.format([[return {
  dev = { backups = { dir = %q } },
  prod = { protected = true, backups = { dir = %q } },
}]], dir .. "/backups/dev", dir .. "/backups/prod"))
  H.write(dir .. "/r.lua", [[local R = require "orch.recipe"
local sys = require "orch.sys"
local dir = ]] .. string.format("%q", dir) .. "\n" .. recipe_body)
  return dir
end

local function run(dir, argv, opts)
  local a = { dir .. "/r.lua" }
  for _, x in ipairs(argv or {}) do a[#a + 1] = x end
  opts = opts or {}
  opts.cwd = dir
  opts.env = opts.env or { DATABASE_URL = false }
  return H.orch(a, opts)
end

local function events_of(r, dir)
  local path = (r.stdout .. r.stderr):match("run log: (%S+)")
  assert(path, "no run log named in the output:\n" .. r.stdout .. r.stderr)
  if path:sub(1, 1) ~= "/" then path = dir .. "/" .. path end
  local out = {}
  for line in io.lines(path) do out[#out + 1] = json.decode(line) end
  return out, path
end

local function find(events, pred)
  for _, e in ipairs(events) do if pred(e) then return e end end
end

describe("orch.recipe", function()
  it("runs named steps in order and logs start, end, duration and result to the terminal and the run log", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.lua { name = "first", run = function() return "one done" end },
  R.step.lua { name = "second", run = function(ctx) return "two done, run " .. ctx.run_id end },
} }]])
    local r = run(dir)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local i1, i2 = r.stdout:find("%[1/2%] first"), r.stdout:find("%[2/2%] second")
    assert.truthy(i1 and i2 and i1 < i2, r.stdout)
    assert.matches("one done", r.stdout)
    local ev, path = events_of(r, dir)
    assert.matches("/backups/dev/runs/[%dTZ]+%-%x+%.jsonl$", path)
    assert.equals("run_start", ev[1].event)
    local run_id = ev[1].run_id
    assert.matches("^%d+T%d+Z%-%x%x%x%x%x%x$", run_id)
    local s = find(ev, function(e) return e.event == "step_start" and e.step == "second" end)
    assert.truthy(s)
    local e = find(ev, function(x) return x.event == "step_end" and x.step == "second" end)
    assert.equals("ok", e.status)
    assert.is_number(e.seconds)
    assert.matches("two done, run " .. run_id, e.detail, 1, true)
    assert.equals("run_end", ev[#ev].event)
    assert.equals(0, ev[#ev].exit_code)
    for _, x in ipairs(ev) do assert.equals(run_id, x.run_id) end
    sys.rmtree(dir)
  end)

  it("retries a step that fails, and records the attempts", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
local n = 0
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.lua { name = "flaky", retries = 2, run = function() n = n + 1; if n < 2 then error("transient #" .. n, 0) end return "worked on attempt " .. n end },
} }]])
    local r = run(dir)
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("flaky failed %(transient #1%); retrying", r.stderr)
    local ev = events_of(r, dir)
    local e = find(ev, function(x) return x.event == "step_end" and x.step == "flaky" end)
    assert.equals(2, e.attempts)
    assert.equals("worked on attempt 2", e.detail)
    sys.rmtree(dir)
  end)

  it("a failure before anything changed exits 1, skips on_failure and still runs always", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "check", run = function() error("precondition not met", 0) end },
            R.step.lua { name = "change", changes = true, run = function() io.open(dir .. "/changed", "w"):close() end } },
  on_failure = { R.step.lua { name = "put back", run = function() io.open(dir .. "/restored", "w"):close() end } },
  always = { R.step.lua { name = "tell", run = function() io.open(dir .. "/told", "w"):close() end } },
}]])
    local r = run(dir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("precondition not met", r.stdout)
    assert.is_false(sys.exists(dir .. "/changed"))
    assert.is_false(sys.exists(dir .. "/restored"))
    assert.is_true(sys.exists(dir .. "/told"))
    sys.rmtree(dir)
  end)

  it("a failure after a change runs on_failure: all handlers ok = restored (3), a handler failing = needs a human (4)", function()
    local body = [[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "change", changes = true, run = function() return "changed" end },
            R.step.lua { name = "verify", run = function() error("health check failed", 0) end } },
  on_failure = { R.step.lua { name = "restore", run = function() if os.getenv("BREAK_RESTORE") then error("restore failed", 0) end return "restored" end } },
}]]
    local dir = project(body)
    local r = run(dir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.matches("FAILED AND RESTORED", r.stdout)
    local ev = events_of(r, dir)
    assert.truthy(find(ev, function(x) return x.event == "step_end" and x.step == "restore" and x.phase == "on_failure" and x.status == "ok" end))
    assert.equals(3, ev[#ev].exit_code)
    assert.equals("verify", ev[#ev].failed_step)
    local r2 = run(dir, {}, { env = { DATABASE_URL = false, BREAK_RESTORE = "1" } })
    assert.equals(4, r2.code, r2.stdout .. r2.stderr)
    assert.matches("NEEDS A HUMAN", r2.stdout)
    sys.rmtree(dir)
  end)

  it("a changing step that fails part-way counts as a change (the handlers run)", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "half", changes = true, run = function() io.open(dir .. "/half", "w"):close(); error("died half-way", 0) end } },
  on_failure = { R.step.lua { name = "restore", run = function() os.remove(dir .. "/half"); return "put back" end } },
}]])
    local r = run(dir)
    assert.equals(3, r.code, r.stdout .. r.stderr)
    assert.is_false(sys.exists(dir .. "/half"))
    sys.rmtree(dir)
  end)

  it("--dry-run says what every step would do and runs none of them", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.lua { name = "write", changes = true, plan = function() return "would write a file" end,
    run = function() io.open(dir .. "/written", "w"):close() end },
  R.step.lua { name = "other", run = function() io.open(dir .. "/other", "w"):close() end },
} }]])
    local r = run(dir, { "--dry-run" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("would write a file", r.stdout)
    assert.matches("would run other", r.stdout)
    assert.matches("DRY RUN", r.stdout)
    assert.is_false(sys.exists(dir .. "/written"))
    assert.is_false(sys.exists(dir .. "/other"))
    sys.rmtree(dir)
  end)

  it("Ctrl-C in the middle: exit 130, the run log records the step where it stopped, no handler restores", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "before", changes = true, run = function() return "done" end },
            R.step.lua { name = "long", run = function() sys.kill(sys.getpid(), 2); sys.sleep(10); return "never" end },
            R.step.lua { name = "after", run = function() io.open(dir .. "/after", "w"):close() end } },
  on_failure = { R.step.lua { name = "restore", run = function() io.open(dir .. "/restored", "w"):close() end } },
}]])
    local t0 = sys.monotonic()
    local r = run(dir)
    assert.equals(130, r.code, r.stdout .. r.stderr)
    assert.is_true(sys.monotonic() - t0 < 8, "the interrupt did not stop the sleeping step")
    assert.matches("interrupted during 'long'", r.stdout)
    assert.is_false(sys.exists(dir .. "/after"))
    local ev = events_of(r, dir)
    assert.truthy(find(ev, function(x) return x.event == "interrupted" and x.step == "long" end))
    assert.equals(130, ev[#ev].exit_code)
    assert.equals("long", ev[#ev].failed_step)
    sys.rmtree(dir)
  end)

  it("Ctrl-C landing in the engine between two steps still ends with a report and a run_end line", function()
    -- the engine reads a step's 'changes' field before and after running it;
    -- the second read sends SIGINT, so the interrupt is raised in engine code
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
local reads = 0
local first = setmetatable({ name = "first", run = function() return "done" end }, { __index = function(_, k)
  if k == "changes" then reads = reads + 1 if reads == 2 then sys.kill(sys.getpid(), 2) end end
end })
return R.run { name = "t", opts = opts, env = env,
  steps = { first, R.step.lua { name = "second", run = function() io.open(dir .. "/second", "w"):close() end } },
  always = { R.step.lua { name = "cleanup", run = function() io.open(dir .. "/cleanup", "w"):close() return "cleaned" end } },
}]])
    local r = run(dir)
    assert.equals(130, r.code, r.stdout .. r.stderr)
    assert.is_false(sys.exists(dir .. "/second"))
    assert.is_true(sys.exists(dir .. "/cleanup"))
    assert.matches("INTERRUPTED", r.stdout)
    local ev = events_of(r, dir)
    assert.equals("run_end", ev[#ev].event)
    assert.equals(130, ev[#ev].exit_code)
    assert.truthy(find(ev, function(x) return x.event == "interrupted" end))
    sys.rmtree(dir)
  end)

  it("orch runs lists the runs of an environment from their run logs, and shows one run's timeline", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev", { { name = "fail", type = "boolean" } })
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "work", changes = true, run = function(ctx) if ctx.opts.fail then error("broken on purpose", 0) end return "worked" end } } }]])
    assert.equals(0, run(dir).code)
    sys.sleep(1.1)   -- run ids start with the second they began
    local failed = run(dir, { "--fail" })
    assert.equals(4, failed.code)
    local fid = failed.stdout:match("run (%d+T%d+Z%-%x+)")
    -- a run killed half-way leaves a log without run_end
    H.write(dir .. "/backups/dev/runs/20000101T000000Z-dead00.jsonl",
      '{"event":"run_start","recipe":"t","env":"dev","run_id":"20000101T000000Z-dead00","time":"2000-01-01T00:00:00Z"}\n' ..
      '{"event":"step_start","step":"work","phase":"steps","time":"2000-01-01T00:00:01Z"}\n')
    local r = H.orch({ "runs", "--json" }, { cwd = dir })
    assert.equals(0, r.code, r.stderr)
    local list = json.decode(r.stdout)
    assert.equals(3, #list)
    assert.equals(fid, list[1].run_id)
    assert.equals("FAILED: NEEDS A HUMAN", list[1].outcome)
    assert.equals("work", list[1].failed_step)
    assert.equals("SUCCEEDED", list[2].outcome)
    assert.equals("DID NOT FINISH", list[3].outcome)
    assert.matches("killed .* during 'work'", list[3].note)
    r = H.orch({ "runs" }, { cwd = dir })
    assert.matches("RUN%s+RECIPE%s+ENV%s+TIME%s+OUTCOME%s+STEP", r.stdout)
    r = H.orch({ "runs", "show", fid }, { cwd = dir })
    assert.equals(0, r.code, r.stderr)
    assert.matches("run " .. fid:gsub("%p", "%%%0") .. ": t on dev — FAILED: NEEDS A HUMAN", r.stdout)
    assert.matches("work failed in [%d.]+s: broken on purpose", r.stdout)
    r = H.orch({ "runs", "show", "20000101T000000Z-dead00" }, { cwd = dir })
    assert.matches("work started, never ended", r.stdout)
    r = H.orch({ "runs", "show", "nope" }, { cwd = dir })
    assert.equals(1, r.code)
    assert.matches("no run log .*nope%.jsonl %(newest: " .. fid:gsub("%p", "%%%0"), r.stderr)
    sys.rmtree(dir)
  end)

  it("webhooks hear which way a run ended: a failure the handlers could not undo is run_needs_human", function()
    local srv = H.httpd()
    finally(function() srv:stop() end)
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env,
  steps = { R.step.lua { name = "work", changes = true, run = function() error("broken", 0) end } },
  on_failure = { R.step.lua { name = "undo", run = function() error("cannot undo", 0) end } },
  always = { R.step.notify() } }]], string.format([[return { dev = { backups = { dir = %q },
  webhooks = { { url_env = "HOOK", kind = "json", events = { "run_needs_human" } } } } }]], H.tmpdir()))
    local r = run(dir, {}, { env = { DATABASE_URL = false, HOOK = srv:url("/hook/ops") } })
    assert.equals(4, r.code, r.stdout .. r.stderr)
    local hooks = srv:hooks()
    assert.equals(1, #hooks)
    assert.equals("run_needs_human", json.decode(hooks[1].body).event)
    sys.rmtree(dir)
  end)

  it("a protected environment without a terminal and without --yes stops before the first change", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "prod")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.approve {},
  R.step.lua { name = "write", changes = true, run = function() io.open(dir .. "/written", "w"):close() end },
} }]])
    local r = run(dir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("protected and there is no terminal", r.stdout)
    assert.is_false(sys.exists(dir .. "/written"))
    local ok = run(dir, { "--yes" })
    assert.equals(0, ok.code, ok.stdout .. ok.stderr)
    assert.is_true(sys.exists(dir .. "/written"))
    sys.rmtree(dir)
  end)

  it("on a terminal, a declined approval changes nothing", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "prod")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.approve {},
  R.step.lua { name = "write", changes = true, run = function() io.open(dir .. "/written", "w"):close() end },
} }]])
    -- script(1) gives the run a pseudo-terminal; the answer comes from stdin
    local cmd = string.format("cd %s && %s %s/r.lua", dir, H.orch_bin, dir)
    local r = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "n\n", timeout = 60 }
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("%[y/N%]", r.stdout)
    assert.matches("approval declined: nothing was changed", r.stdout)
    assert.is_false(sys.exists(dir .. "/written"))
    local yes = sys.spawn { "script", "-qec", cmd, "/dev/null", stdin = "y\n", timeout = 60 }
    assert.equals(0, yes.code, yes.stdout .. yes.stderr)
    assert.is_true(sys.exists(dir .. "/written"))
    sys.rmtree(dir)
  end)

  it("a recipe with a typo'd global fails with a clear error naming the line", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.stpe.lua { name = "x", run = function() end },
} }]])
    local r = run(dir)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.matches("r%.lua:6:", r.stderr)
    local dir2 = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.lua { name = "x", run = function() return prnt("hello") end },
} }]])
    local r2 = run(dir2)
    assert.equals(1, r2.code, r2.stdout .. r2.stderr)
    assert.matches("undefined global 'prnt'", r2.stdout)
    assert.matches("r%.lua:6", r2.stdout)
    sys.rmtree(dir)
    sys.rmtree(dir2)
  end)

  it("teams extend from their project directory: a step type in a module of their own, and orch help shows it", function()
    local dir = project([[
local mysteps = require "mysteps"
local opts, env = R.setup({ ... }, "dev", { { name = "greeting", type = "string", default = "hello", help = "what to say" } }, "a team recipe")
return R.run { name = "team", opts = opts, env = env, steps = {
  mysteps.say { text = opts.greeting },
} }]])
    H.write(dir .. "/mysteps.lua", [[
local R = require "orch.recipe"
local M = {}
function M.say(o)
  return R.step.lua { name = "say", about = "say something", plan = function() return "would say " .. o.text end,
    run = function(ctx) return o.text .. " from " .. ctx.env.name end }
end
return M]])
    local r = run(dir, { "--greeting", "bonjour" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("bonjour from dev", r.stdout)
    local h = H.orch({ "help", dir .. "/r.lua" }, { cwd = dir })
    assert.is_true(h.ok, h.stderr)
    assert.matches("%-%-greeting", h.stdout)
    assert.matches("1%. say", h.stdout)
    sys.rmtree(dir)
  end)

  it("--json: stdout is one JSON result, the steps' output goes to stderr; the run log never holds a password", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {
  R.step.lua { name = "talk", run = function() print("chatty step output"); return "seen postgresql://app:hunter2secret@db/x" end },
} }]])
    local r = run(dir, { "--json" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    local res = json.decode(r.stdout)
    assert.equals(0, res.exit_code)
    assert.equals("talk", res.steps[1].step)
    assert.matches("chatty step output", r.stderr)
    local path = r.stderr:match("run log: (%S+)")
    local text = H.read(path)
    assert.is_nil(text:find("hunter2secret", 1, true), text)
    assert.matches("postgresql://app:%*%*%*@db/x", text)
    sys.rmtree(dir)
  end)

  it("verify never passes HTTP health checks it could not run", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = { R.step.verify {} } }]],
      [[return { dev = { health = { http = { { url = "http://127.0.0.1:9/healthz", expect_status = 200 } } } } }]])
    local r = run(dir, { "--db", H.cluster():url("postgres") })
    assert.is_true(r.code == 1 or r.code == 4, r.stdout .. r.stderr)
    assert.matches("FAILED verify", r.stdout)
    sys.rmtree(dir)
  end)

  it("an unknown environment is a usage error that lists the known ones", function()
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = {} }]])
    local r = run(dir, { "--env", "stagign" })
    assert.equals(2, r.code, r.stdout .. r.stderr)
    assert.matches("no environment named 'stagign'.*known: dev, prod", r.stderr)
    sys.rmtree(dir)
  end)

  it("keeps the newest backups.keep_runs run logs and the run log of every kept backup; orch backups prune --env applies the environment's retention", function()
    local url, name = H.fresh_db("rt_runs")
    local dir = project([[
local opts, env = R.setup({ ... }, "dev")
return R.run { name = "t", opts = opts, env = env, steps = { R.step.lua { name = "noop", run = function() return "done" end } } }]])
    local bdir = dir .. "/bk"
    H.write(dir .. "/orch.env.lua", string.format("return { dev = { backups = { dir = %q, keep = 1, keep_runs = 2 } } }", bdir))
    local ids = {}
    for i = 1, 4 do
      local r = run(dir)
      assert.equals(0, r.code, r.stdout .. r.stderr)
      ids[i] = events_of(r, dir)[1].run_id
      if i == 1 then
        -- the first run's backup: its run log stays while the backup does
        local b = H.orch({ "backup", "--db", url, "--env", "dev", "--run-id", ids[1] }, { cwd = dir })
        assert.is_true(b.ok, b.stderr)
        assert.matches(bdir, b.stdout, 1, true)
      end
    end
    local function present()
      local out = {}
      for _, id in ipairs(ids) do out[#out + 1] = sys.exists(bdir .. "/runs/" .. id .. ".jsonl") end
      return out
    end
    assert.same({ true, false, true, true }, present())
    -- a second backup, then prune with the environment's keep = 1: the first
    -- backup goes, and with it the protection of the first run's log
    -- (--no-prune: orch backup would apply keep = 1 itself; here it is prune's turn)
    local b = H.orch({ "backup", "--db", url, "--env", "dev", "--no-prune" }, { cwd = dir })
    assert.is_true(b.ok, b.stderr)
    local p = H.orch({ "backups", "prune", "--env", "dev", "--json" }, { cwd = dir })
    assert.equals(0, p.code, p.stderr)
    local out = json.decode(p.stdout)
    assert.equals(1, #out.deleted)
    assert.equals(1, #out.run_logs_deleted)
    assert.same({ false, false, true, true }, present())
    assert.equals(1, #json.decode(H.orch({ "backups", "list", "--env", "dev", "--json" }, { cwd = dir }).stdout))
    -- an environment without retention settings: prune says what it needs
    H.write(dir .. "/orch.env.lua", string.format("return { dev = { backups = { dir = %q } } }", bdir))
    p = H.orch({ "backups", "prune", "--env", "dev" }, { cwd = dir })
    assert.equals(2, p.code)
    assert.matches("environment dev sets no backups.keep or backups.max_age", p.stderr)
    -- bad retention settings are refused by name
    H.write(dir .. "/orch.env.lua", string.format("return { dev = { backups = { dir = %q, keep = 0, max_age = 'a month' } } }", bdir))
    p = H.orch({ "backups", "list", "--env", "dev" }, { cwd = dir })
    assert.equals(1, p.code)
    assert.matches("environment dev: backups.keep is 0; it must be a whole number of 1 or more", p.stderr)
    H.drop_db(name)
    sys.rmtree(dir)
  end)
end)
