--- orch notify: send a test notification to an environment's webhooks, to
-- prove the integration before a release needs it.
local args = require "orch.args"
local envmod = require "orch.env"
local notify = require "orch.notify"
local json = require "orch.json"

local spec = args.spec({ "env" }, {
  { name = "message", type = "string", metavar = "TEXT", help = "a line to add to the test notification" },
})

return {
  summary = "send a test notification to the environment's webhooks (Slack-compatible or JSON)",
  usage = "usage: orch notify [--env NAME] [--message TEXT] [--json]",
  description = "Exit status: 0 when every configured webhook took the notification, 1 otherwise\n" ..
    "(a webhook whose URL variable is not set counts as not delivered).",
  examples = { "orch notify --env prod", "orch notify --env staging --message 'release train 42 starts at 14:00'" },
  spec = spec,
  run = function(argv)
    local opts = args.parse(argv, spec, "notify")
    local env = envmod.load(opts.env)
    local targets, missing = notify.targets(env)
    if #targets == 0 and #missing == 0 then
      -- raised, so that --json makes it an error object like every other
      require("orch.sys").error(string.format("environment %s has no webhooks: add webhooks = { { url_env = \"VAR\", kind = \"slack\" } } to orch.env.lua", env.name), 1)
    end
    local results = notify.send(targets, "test", { recipe = "notify", env = env.name, run_id = "test",
      message = opts.message, outcome = "test" })
    for _, m in ipairs(missing) do results[#results + 1] = { name = m, delivered = false, error = "the variable " .. m .. " is not set" } end
    local ok = 0
    for _, r in ipairs(results) do if r.delivered then ok = ok + 1 end end
    if opts.json then
      io.stdout:write(json.encode({ env = env.name, delivered = ok, webhooks = results }, { indent = "  " }), "\n")
    else
      for _, r in ipairs(results) do
        print(string.format("%-24s %s", r.name, r.delivered and ("delivered (HTTP " .. tostring(r.status) .. ")") or ("NOT delivered: " .. tostring(r.error))))
      end
      print(string.format("%d of %d webhook(s) took the test notification", ok, #results))
    end
    return ok == #results and 0 or 1
  end,
}
