--- orch backups: list and prune a backups directory. prune applies the
-- retention given on the command line, else the environment's (backups.keep,
-- backups.max_age in orch.env.lua), and prunes old run logs with it.
local args = require "orch.args"
local backup = require "orch.backup"
local envmod = require "orch.env"
local json = require "orch.json"

local spec = args.spec({ "env", "fleet_target" }, {
  { name = "dir", type = "string", metavar = "DIR", path = true, complete = "directory", help = "backups directory, or s3://BUCKET/PREFIX (AWS_* variables; behind a private CA: AWS_CA_BUNDLE or backups.cainfo; default: the environment's backups.dir, else backups/<env>)" },
  { name = "keep", type = "integer", min = 1, metavar = "N", help = "prune: keep the newest N complete backups (default: the environment's backups.keep)" },
  { name = "max-age", type = "duration", metavar = "AGE", help = "prune: delete backups older than this, e.g. 14d, 12h (default: backups.max_age)" },
  { name = "keep-runs", type = "integer", min = 1, metavar = "N", help = "prune: keep the newest N run logs, and those of kept backups (default: backups.keep_runs, else 100)" },
})

local function seconds(s)
  local ok, v = pcall(args.seconds, s)
  return ok and v or nil
end

return {
  summary = "list backups (orch backups list) or apply retention (orch backups prune [--keep N] [--max-age 14d])",
  usage = "usage: orch backups list|prune [--env NAME | --dir DIR] [--keep N] [--max-age AGE] [--keep-runs N] [--json]",
  operands = { max = 1, name = "list|prune", words = { "list", "prune" } },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "backups")
    local name = opts.env or os.getenv("ORCH_ENV")
    if name == "" then name = nil end
    -- directory and retention of the environment (--env, else ORCH_ENV), else of the one orch backup
    -- writes into without --env (the project's dev): orch backup, then orch backups list, shows it
    local conf = name and envmod.backups(name, nil, opts.fleet_target) or envmod.for_command(opts).backups
    local dir = opts.dir or conf.dir
    if dir:sub(1, 1) ~= "/" then require("orch.project").need("orch backups", "name the directory with --dir DIR") end
    local action = rest[1] or "list"
    if action == "list" then
      local list = backup.list(dir)
      if opts.json then
        local out = {}
        for i, b in ipairs(list) do out[i] = { path = b.path, status = b.status, size = b.size, note = b.note or json.null, manifest = b.manifest or json.null } end
        io.stdout:write(json.encode(out, { indent = "  " }), "\n")
      elseif #list == 0 then print("no backups in " .. dir)
      else
        for _, b in ipairs(list) do
          local m = b.manifest or {}
          print(string.format("%-10s %-50s %10.1f MiB  %s  %s", b.status, b.file, (b.size or 0) / 1048576, m.started_at or "?",
            m.latest_migration and m.latest_migration ~= json.null and ("V" .. m.latest_migration.version) or (b.note or "")))
          -- a backup of part of the database says so, with what it holds
          local part = require("orch.backup.select").summary(m)
          if part then print(string.format("%-10s PARTIAL, not the whole database: %s", "", part)) end
        end
      end
    elseif action == "prune" then
      local keep = opts.keep or (not opts.max_age and conf.keep) or nil
      local age_text = opts.max_age or (not opts.keep and conf.max_age) or nil
      local max_age = age_text and seconds(age_text)
      if age_text and not max_age then args.usage_error("backups", "bad --max-age '" .. tostring(age_text) .. "' (e.g. 14d, 12h)") end
      if keep and (math.type(keep) ~= "integer" or keep < 1) then args.usage_error("backups", "--keep needs a whole number of 1 or more") end
      if not keep and not max_age then
        args.usage_error("backups", "prune needs --keep N and/or --max-age AGE" ..
          (name and (" (environment " .. name .. " sets no backups.keep or backups.max_age)") or ""))
      end
      local keep_runs = opts.keep_runs or conf.keep_runs
      if keep_runs and (math.type(keep_runs) ~= "integer" or keep_runs < 1) then args.usage_error("backups", "--keep-runs needs a whole number of 1 or more") end
      local deleted = backup.retain(dir, { keep = keep, max_age = max_age })
      local runs_deleted = backup.retain_runs(dir, { keep = keep_runs })
      if opts.json then io.stdout:write(json.encode({ deleted = deleted, run_logs_deleted = runs_deleted }), "\n")
      else
        print(#deleted == 0 and ("no backups to prune in " .. dir) or ("deleted:\n  " .. table.concat(deleted, "\n  ")))
        if #runs_deleted > 0 then print(string.format("deleted %d old run log(s) from %s/runs", #runs_deleted, dir)) end
      end
    else
      args.usage_error("backups", "unknown action '" .. action .. "' (list or prune)")
    end
    return 0
  end,
}
