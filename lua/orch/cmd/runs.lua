--- orch runs: the recipe runs of an environment, from their run logs
-- (<backups dir>/runs/<run id>.jsonl): what ran, how it ended, and for one
-- run the whole timeline. A run log without its run_end line belongs to a
-- run that was killed (or is still running): it is shown as such.
local args = require "orch.args"
local backup = require "orch.backup"
local envmod = require "orch.env"
local json = require "orch.json"
local sys = require "orch.sys"

local spec = args.spec({ "env", "fleet_target" }, {
  { name = "dir", type = "string", metavar = "DIR", path = true, complete = "directory", help = "the run log directory (default: the environment's backups dir + /runs)" },
  { name = "last", type = "integer", min = 1, metavar = "N", default = 20, help = "list the newest N runs" },
})

local function read_log(path)
  local events = {}
  local f = io.open(path, "rb")
  if not f then return nil end
  for line in f:lines() do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" then events[#events + 1] = ev end
  end
  f:close()
  return events
end

-- One line of summary from a run's events.
local function summarize(id, events)
  local s = { run_id = id, events = #events }
  local last_step
  for _, e in ipairs(events) do
    if e.event == "run_start" then s.recipe, s.env, s.started, s.database, s.dry_run = e.recipe, e.env, e.time, e.database, e.dry_run end
    if e.event == "step_start" then last_step = e.step end
    if e.event == "backup" then s.backup = e.path end
    if e.event == "run_end" then
      s.finished, s.exit_code, s.outcome, s.seconds = e.time, e.exit_code, e.outcome, e.seconds
      s.failed_step = e.failed_step ~= json.null and e.failed_step or nil
    end
  end
  if not s.outcome then
    s.outcome = "DID NOT FINISH"
    s.failed_step = last_step
    s.note = string.format("no run_end: the run was killed (or is still running) during '%s'", last_step or "its start")
  end
  return s
end

local function show(dir, id, opts)
  local path = dir .. "/" .. id .. ".jsonl"
  local events = read_log(path)
  if not events then
    local known = backup.run_ids(dir)
    sys.error(string.format("no run log %s%s", path, #known > 0 and (" (newest: " .. known[1] .. ")") or ""), 1)
  end
  if opts.json then
    io.stdout:write(json.encode({ summary = summarize(id, events), events = events }, { indent = "  " }), "\n")
    return 0
  end
  local s = summarize(id, events)
  print(string.format("run %s: %s on %s — %s", id, s.recipe or "?", s.env or "?", s.outcome))
  -- a step's start is worth a line only when it never ended (the run stopped there)
  local ended = {}
  for _, e in ipairs(events) do if e.event == "step_end" then ended[(e.phase or "") .. "/" .. tostring(e.step)] = true end end
  for _, e in ipairs(events) do
    local t = (e.time or ""):match("T(%d%d:%d%d:%d%d)") or ""
    local what
    if e.event == "run_start" then what = "start, database " .. tostring(e.database) .. (e.dry_run and " (dry run)" or "")
    elseif e.event == "step_start" then
      if not ended[(e.phase or "") .. "/" .. tostring(e.step)] then
        what = string.format("%s%s started, never ended", e.phase ~= "steps" and (e.phase .. " ") or "", e.step)
      end
    elseif e.event == "step_end" then
      what = string.format("%s%s %s in %.2fs%s", e.phase ~= "steps" and (e.phase .. " ") or "", e.step, e.status, e.seconds or 0,
        e.detail ~= json.null and e.detail and (": " .. tostring(e.detail):gsub("\n.*", "")) or "")
    elseif e.event == "notification" then
      what = string.format("notification %s to %s: %s", e.what, e.hook, e.delivered and "delivered" or ("NOT delivered (" .. tostring(e.error) .. ")"))
    elseif e.event == "backup" then what = "backup " .. tostring(e.path)
    elseif e.event == "restored" then what = "restored " .. tostring(e.backup) .. (e.old_database ~= json.null and e.old_database and ("; kept " .. e.old_database) or "")
    elseif e.event == "health" then what = "health " .. tostring(e.report and e.report.status)
    elseif e.event == "interrupted" then what = "INTERRUPTED during " .. tostring(e.step)
    elseif e.event == "run_end" then what = string.format("end: %s, exit code %s", e.outcome, tostring(e.exit_code))
    else what = e.event end
    if what then print(string.format("  %s  %s", t, what)) end
  end
  if s.note then print("  " .. s.note) end
  return 0
end

return {
  summary = "list an environment's recipe runs from their run logs; orch runs show ID for one run's timeline",
  usage = "usage: orch runs [--env NAME] [--last N] [--json]\n       orch runs show RUN_ID [--env NAME] [--json]",
  examples = { "orch runs --env prod", "orch runs show 20261123T051641Z-4f97aa --env prod" },
  operands = { max = 2, name = "list | show RUN_ID", words = { "list", "show" } },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "runs")
    if rest[1] == "show" then
      if not rest[2] then args.usage_error("runs", "orch runs show needs a run id") end
    elseif rest[1] and rest[1] ~= "list" then
      args.usage_error("runs", "unknown action '" .. rest[1] .. "' (list or show)")
    elseif rest[2] then
      args.usage_error("runs", string.format("unexpected argument '%s': orch runs %s takes no run id (orch runs show RUN_ID does)", rest[2], rest[1]))
    end
    local dir = opts.dir
    if not dir then dir = require("orch.storage").runs_base(envmod.load_target(opts.env, nil, opts.fleet_target).backups.dir) .. "/runs" end
    if dir:sub(1, 1) ~= "/" then require("orch.project").need("orch runs", "name the run log directory with --dir DIR") end
    if rest[1] == "show" then return show(dir, rest[2], opts) end
    local out = {}
    for i, id in ipairs(backup.run_ids(dir)) do
      if i > opts.last then break end
      out[#out + 1] = summarize(id, read_log(dir .. "/" .. id .. ".jsonl") or {})
    end
    if opts.json then
      io.stdout:write(json.encode(out, { indent = "  " }), "\n")
      return 0
    end
    if #out == 0 then print("no runs logged in " .. dir) return 0 end
    print(string.format("%-24s %-10s %-8s %-8s %-30s %s", "RUN", "RECIPE", "ENV", "TIME", "OUTCOME", "STEP"))
    for _, s in ipairs(out) do
      print(string.format("%-24s %-10s %-8s %-8s %-30s %s", s.run_id, s.recipe or "?", s.env or "?",
        s.seconds and string.format("%.1fs", s.seconds) or "-", s.outcome, s.failed_step or ""))
    end
    return 0
  end,
}
