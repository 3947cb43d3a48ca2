--- orch.notify: webhooks on run start, success and failure.
--
-- Two payload kinds: "slack" (Slack-compatible incoming webhooks: text plus
-- a coloured attachment, also understood by Mattermost and Rocket.Chat) and
-- "json" (a plain JSON event). URLs come from environment variables
-- (url_env), never from files: webhook URLs carry tokens. A notification
-- that cannot be delivered is reported, never raised: a broken chat
-- integration must not fail a migration.
--
--   webhooks = { { url_env = "PROD_SLACK_WEBHOOK", kind = "slack" },
--                { url_env = "OPS_EVENTS_URL", kind = "json", token_env = "OPS_EVENTS_TOKEN",
--                  events = { "run_failed", "run_restored" } } }
local json = require "orch.json"
local log = require "orch.log"
local sys = require "orch.sys"

local N = {}

local TITLES = { run_started = "started", run_succeeded = "succeeded", run_failed = "FAILED",
  run_restored = "FAILED and was RESTORED", run_needs_human = "FAILED: NEEDS A HUMAN", run_interrupted = "was interrupted",
  test = "test notification",
  fleet_started = "rollout started", fleet_succeeded = "rollout succeeded", fleet_failed = "rollout FAILED",
  fleet_interrupted = "rollout was interrupted" }
local COLORS = { run_started = "#439FE0", run_succeeded = "good", run_failed = "danger", run_restored = "warning",
  run_needs_human = "danger", run_interrupted = "warning", test = "#439FE0",
  fleet_started = "#439FE0", fleet_succeeded = "good", fleet_failed = "danger", fleet_interrupted = "warning" }

--- The targets of an environment: { url, kind, name, token, events }.
-- Hooks whose variable is unset are skipped (listed in missing).
function N.targets(env)
  local out, missing = {}, {}
  for i, w in ipairs(env.webhooks or {}) do
    local url = w.url_env and os.getenv(w.url_env) or nil
    if url and url ~= "" then
      log.secret(url)
      local token = w.token_env and os.getenv(w.token_env) or nil
      if token then log.secret(token) end
      local events
      if w.events then
        events = {}
        for _, e in ipairs(w.events) do events[e] = true end
      end
      out[#out + 1] = { url = url, kind = w.kind or "json", name = w.name or w.url_env, token = token, events = events,
                        timeout = w.timeout }
    else
      missing[#missing + 1] = w.url_env or ("webhooks[" .. i .. "]")
    end
  end
  return out, missing
end

--- The payload for one hook. info: recipe, env, run_id, outcome, exit_code,
-- failed_step, cause, seconds, backup, applied (list of names), database.
function N.payload(kind, event, info)
  local what = TITLES[event] or event
  -- run_restored is any recovery (exit 3): say which one
  if event == "run_restored" and info.recovery and info.recovery.rung == "undo" then what = "FAILED and was UNDONE (the application's writes kept)" end
  local title = string.format("orch %s on %s %s", info.recipe or "run", info.env or "?", what)
  local lines = {}
  if info.database then lines[#lines + 1] = "database: " .. log.redact(info.database) end
  if info.failed_step then lines[#lines + 1] = "failed step: " .. info.failed_step end
  if info.message then lines[#lines + 1] = log.redact(info.message) end
  if info.cause then lines[#lines + 1] = "cause: " .. log.redact(info.cause) end
  if info.applied and #info.applied > 0 then lines[#lines + 1] = "applied: " .. table.concat(info.applied, ", ") end
  if info.recovery then lines[#lines + 1] = string.format("recovery: %s — %s", info.recovery.rung, log.redact(info.recovery.why or "")) end
  if info.backup then lines[#lines + 1] = "backup: " .. info.backup end
  if info.seconds and event ~= "run_started" then lines[#lines + 1] = string.format("duration: %.1fs", info.seconds) end
  lines[#lines + 1] = "run: " .. (info.run_id or "?") .. " on " .. sys.hostname()
  if kind == "slack" then
    return json.encode { text = title, attachments = { { color = COLORS[event] or "#439FE0", fallback = title,
      text = table.concat(lines, "\n"), footer = "orch " .. (package.orch_version or "") } } }
  end
  return json.encode(json.object {
    event = event, recipe = info.recipe, env = info.env, run_id = info.run_id, outcome = info.outcome,
    exit_code = info.exit_code, failed_step = info.failed_step, cause = info.cause and log.redact(info.cause) or nil,
    seconds = info.seconds, backup = info.backup, applied = info.applied, host = sys.hostname(),
    recovery = info.recovery and json.object { rung = info.recovery.rung, why = log.redact(info.recovery.why or ""),
      details = info.recovery.lines } or nil,
    database = info.database and log.redact(info.database) or nil, message = info.message and log.redact(info.message) or nil,
    time = os.date("!%Y-%m-%dT%H:%M:%SZ"), orch_version = package.orch_version, summary = title })
end

--- Deliver one event to every target that wants it. Never raises (but for
-- Ctrl-C). Returns a list of { name, delivered, error, status, attempts }.
function N.send(targets, event, info, opts)
  opts = opts or {}
  local ok_http, http = pcall(require, "orch.http")
  local results = {}
  for _, t in ipairs(targets) do
    if not t.events or t.events[event] then
      local res = { name = t.name, kind = t.kind, delivered = false, attempts = 0 }
      local okp, body = pcall(N.payload, t.kind, event, info)
      if not okp then res.error = "could not build the payload: " .. tostring(body)
      elseif not ok_http then res.error = "orch.http is not available: " .. tostring(http)
      else
        local headers = { ["Content-Type"] = "application/json" }
        if t.token then headers.Authorization = "Bearer " .. t.token end
        for attempt = 1, (opts.attempts or 2) do
          res.attempts = attempt
          local r, err = http.request { method = "POST", url = t.url, body = body, headers = headers,
            timeout = t.timeout or opts.timeout or 5, connect_timeout = 3, max_redirects = 2, max_body = 65536 }
          if r and r.status >= 200 and r.status < 300 then
            res.delivered, res.status, res.error = true, r.status, nil
            break
          end
          res.status = r and r.status
          res.error = r and string.format("HTTP %d%s", r.status, r.body ~= "" and (": " .. r.body:sub(1, 120):gsub("%s+", " ")) or "") or err
          -- a 4xx will not get better by asking again
          if r and r.status >= 400 and r.status < 500 then break end
          if attempt < (opts.attempts or 2) then sys.sleep(0.3) end
        end
      end
      if res.error then res.error = log.redact(res.error) end
      results[#results + 1] = res
    end
  end
  return results
end

return N
