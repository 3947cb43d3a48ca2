--- orch backups: list and prune a backups directory.
local args = require "orch.args"
local backup = require "orch.backup"
local json = require "orch.json"

local spec = args.spec({ "env", "json" }, {
  { name = "dir", type = "string", help = "backups directory (default backups/<env>)" },
  { name = "keep", type = "number", help = "prune: keep the newest N complete backups" },
  { name = "max-age", type = "string", help = "prune: delete backups older than this (e.g. 14d, 12h)" },
})

local function seconds(s)
  if not s then return nil end
  local ok, v = pcall(require("orch.health").seconds, s)
  return ok and v or nil
end

return {
  summary = "list backups (orch backups list) or apply retention (orch backups prune --keep N --max-age 14d)",
  usage = "usage: orch backups list|prune [--dir DIR] [--keep N] [--max-age AGE] [--json]",
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "backups")
    local dir = opts.dir or ("backups/" .. (opts.env or "default"))
    local action = rest[1] or "list"
    if action == "list" then
      local list = backup.list(dir)
      if opts.json then
        local out = {}
        for i, b in ipairs(list) do out[i] = { path = b.path, status = b.status, size = b.size, manifest = b.manifest or json.null } end
        io.stdout:write(json.encode(out, { indent = "  " }), "\n")
      elseif #list == 0 then print("no backups in " .. dir)
      else
        for _, b in ipairs(list) do
          local m = b.manifest or {}
          print(string.format("%-10s %-50s %10.1f MiB  %s  %s", b.status, b.file, (b.size or 0) / 1048576, m.started_at or "?",
            m.latest_migration and m.latest_migration ~= json.null and ("V" .. m.latest_migration.version) or ""))
        end
      end
    elseif action == "prune" then
      local max_age = opts.max_age and seconds(opts.max_age)
      if opts.max_age and not max_age then args.usage_error("backups", "bad --max-age '" .. opts.max_age .. "' (e.g. 14d, 12h)") end
      if not opts.keep and not max_age then args.usage_error("backups", "prune needs --keep N and/or --max-age AGE") end
      local deleted = backup.retain(dir, { keep = opts.keep, max_age = max_age })
      if opts.json then io.stdout:write(json.encode({ deleted = deleted }), "\n")
      else print(#deleted == 0 and "nothing to prune" or ("deleted:\n  " .. table.concat(deleted, "\n  "))) end
    else
      args.usage_error("backups", "unknown action '" .. action .. "' (list or prune)")
    end
    return 0
  end,
}
