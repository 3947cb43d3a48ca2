--- orch backup: a pg_dump-compatible backup with a manifest.
local args = require "orch.args"
local target = require "orch.target"
local backup = require "orch.backup"
local json = require "orch.json"
local log = require "orch.log"
local sys = require "orch.sys"

local spec = args.spec({ "db", "env", "json", "quiet" }, {
  { name = "output", short = "o", type = "string", metavar = "FILE|-", help = "write to FILE, or - for stdout (no manifest)" },
  { name = "dir", type = "string", help = "backups directory (default: the environment's backups.dir, else backups/<env>)" },
  { name = "compress", short = "Z", type = "number", default = -1, help = "zlib level 0-9, -1 = default (6)" },
  { name = "threads", type = "number", default = 2, help = "compression threads" },
  { name = "skip", type = "list", metavar = "KIND", help = "leave out a kind orch cannot dump yet (e.g. aggregate)" },
  { name = "lock-timeout", type = "string", default = "10s", help = "how long to wait for table locks" },
  { name = "run-id", type = "string", help = "tie the manifest to this run id" },
  { name = "no-owner", type = "boolean", help = "do not record object owners" },
})

return {
  summary = "back up the database as a pg_dump custom archive (restorable by pg_restore) with a manifest",
  usage = "usage: orch backup [--db URL] [--output FILE | --output -] [--dir DIR] [-Z LEVEL] [--json]",
  examples = { "orch backup", "orch backup --output /tmp/app.dump", "orch backup -o - | ssh host 'cat > app.dump'" },
  spec = spec,
  run = function(argv)
    local opts = args.parse(argv, spec, "backup")
    if opts.quiet or opts.json or opts.output == "-" then log.level = "warn" end
    local skip = {}
    for _, k in ipairs(opts.skip or {}) do skip[k:gsub("-", "_")] = true end
    local c <close> = target.connect(opts)
    local tty = sys.isatty(2) and not opts.json and opts.output ~= "-"
    local t0 = sys.monotonic()
    local m = backup.create(c, {
      output = opts.output, dir = opts.dir or (opts.env and require("orch.env").backups(opts.env).dir) or nil, level = opts.compress,
      threads = opts.threads, env = opts.env, run_id = opts.run_id, skip = skip, lock_timeout = opts.lock_timeout,
      no_owner = opts.no_owner,
      on_progress = tty and function(ev)
        local el = sys.monotonic() - t0
        local bytes = ev.bytes_in or 0
        local rate = bytes / math.max(el, 0.001)
        -- ETA from the share of the on-disk size already behind us (an estimate: text COPY and heap sizes differ)
        local frac = ev.estimate and ev.estimate > 0 and math.min(ev.done_estimate / ev.estimate, 0.99) or 0
        local eta = frac > 0.02 and el / frac - el or nil
        local width = 24
        local filled = math.floor(frac * width)
        io.stderr:write(string.format("\r\27[K[%s%s] %d/%d tables  %.1f MiB  %.1f MiB/s  %s  %s",
          string.rep("#", filled), string.rep(".", width - filled), ev.index - 1, ev.total, bytes / 1048576, rate / 1048576,
          eta and string.format("ETA %ds", math.floor(eta + 0.5)) or "ETA --", ev.table))
        io.stderr:flush()
      end or nil,
    })
    if tty then io.stderr:write("\r\27[K") end
    if opts.json then io.stdout:write(json.encode(m, { indent = "  " }), "\n")
    elseif opts.output ~= "-" then
      print(string.format("backup %s: %d tables, %d rows, %.1f MiB, sha256 %s", m.path, (function() local n = 0 for _ in pairs(m.tables) do n = n + 1 end return n end)(),
        m.rows, m.size / 1048576, m.sha256))
    end
    return 0
  end,
}
