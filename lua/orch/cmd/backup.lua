--- orch backup: a pg_dump-compatible backup with a manifest.
local args = require "orch.args"
local envmod = require "orch.env"
local backup = require "orch.backup"
local json = require "orch.json"
local log = require "orch.log"
local sys = require "orch.sys"

local spec = args.spec({ "db", "env", "fleet_target" }, {
  { name = "output", short = "o", type = "string", metavar = "FILE|-", path = true, complete = "file", help = "write to FILE, or - for stdout (no manifest)" },
  { name = "dir", type = "string", metavar = "DIR", path = true, complete = "directory", help = "backups directory, or s3://BUCKET/PREFIX (AWS_* variables; behind a private CA: AWS_CA_BUNDLE or backups.cainfo; default: the environment's backups.dir, else backups/<env>)" },
  { name = "compress", short = "Z", type = "string", metavar = "METHOD[:LEVEL]|N",
    help = "gzip[:1-9] (default), lz4[:1-12], zstd[:1-22] or none, as pg_dump 16 takes them; lz4 and zstd " ..
           "make a format 1.15 archive, which only pg_restore 16 or newer reads (pg_restore 15: \"unsupported version " ..
           "(1.15) in file header\"); a number N is pg_dump 15's -Z N: gzip level N, 0 = none" },
  { name = "threads", type = "integer", min = 1, default = 2, help = "compression threads (shared out between the --jobs connections)" },
  { name = "jobs", short = "j", type = "integer", min = 1, default = 1, metavar = "N",
    help = "dump N tables at once, on N connections sharing one snapshot, largest first, into one archive; " ..
           "to standard output the blocks go out in TOC order (at most 64 MiB of the others' held in temporary files)" },
  { name = "skip", type = "list", metavar = "KIND", help = "leave out every object of a kind (repeatable; the kinds are listed above); the output and the manifest name what was left out" },
  { name = "lock-timeout", type = "duration", metavar = "DURATION", default = "10s", help = "how long to wait for table locks" },
  { name = "run-id", type = "string", help = "tie the manifest to this run id" },
  { name = "wait", type = "duration", metavar = "DURATION", help = "wait up to this long for the server to accept connections (default: the environment's database.wait, else none)" },
  { name = "no-owner", type = "boolean", help = "do not record object owners" },
  { name = "schema", short = "n", type = "list", metavar = "PATTERN",
    help = "back up only the schemas matching PATTERN and their objects (repeatable; psql patterns: * ? \"Quoted\"); " ..
           "objects outside any schema (extensions, casts, large objects, ...) are then left out, as by pg_dump -n" },
  { name = "exclude-schema", short = "N", type = "list", metavar = "PATTERN", help = "leave out the schemas matching PATTERN and everything in them (repeatable)" },
  { name = "table", short = "t", type = "list", metavar = "PATTERN",
    help = "back up only the tables, views, sequences matching [SCHEMA.]PATTERN, with their data, indexes, constraints, triggers, " ..
           "policies and the sequences they own, not the schemas, types or functions they use (repeatable; -n/-N then do not apply)" },
  { name = "exclude-table", short = "T", type = "list", metavar = "PATTERN", help = "leave out the tables matching PATTERN and what hangs on them (repeatable)" },
  { name = "exclude-table-data", type = "list", metavar = "PATTERN",
    help = "keep the definition of the tables matching PATTERN but not their rows (a huge audit or log table; repeatable)" },
  { name = "schema-only", short = "s", type = "boolean", help = "definitions only: no rows, sequence values, large objects or materialized view data" },
  { name = "data-only", short = "a", type = "boolean", help = "rows, sequence values and large objects only, for a database whose schema exists (orch restore -a)" },
  { name = "no-privileges", short = "x", type = "boolean", help = "leave out privileges (GRANT/REVOKE, default privileges); also --no-acl" },
  { name = "no-acl", type = "boolean", help = "the same as --no-privileges" },
  { name = "no-comments", type = "boolean", help = "leave out comments" },
  { name = "no-prune", type = "boolean", help = "keep every older backup (default: apply the environment's backups.keep / max_age afterwards)" },
})

-- --compress / -Z: pg_dump 16's METHOD[:LEVEL] (also METHOD:level=N), or
-- pg_dump 15's plain level. Returns compression, level; a bad value is a
-- usage error. gzip and none keep format 1.14, which pg_restore 12-18 read.
local LEVELS = { gzip = { 1, 9 }, lz4 = { 1, 12 }, zstd = { 1, 22 } }
local function parse_compress(v)
  if v == nil then return "gzip", -1 end
  local bad = function(why)
    args.usage_error("backup", string.format("--compress %s: %s (use gzip[:1-9], lz4[:1-12], zstd[:1-22], none, or a level 0-9)", v, why))
  end
  local n = tonumber(v)
  if n then
    if n ~= math.floor(n) or n < -1 or n > 9 then bad("a plain level must be 0-9") end
    if n == 0 then return "none", 0 end
    return "gzip", math.tointeger(n)
  end
  local method, rest = v:match("^(%a[%w]*)(.*)$")
  if not method then bad("not a compression method") end
  method = method:lower()
  if method ~= "none" and not LEVELS[method] then bad("unknown method " .. method) end
  local level = -1
  if rest ~= "" then
    local l = rest:match("^:level=(%-?%d+)$") or rest:match("^:(%-?%d+)$")
    if not l then bad("the level goes after a colon, e.g. " .. method .. ":3") end
    level = math.tointeger(tonumber(l))
    if method == "none" then
      if level ~= 0 then bad("none takes no level") end
      return "none", 0
    end
    local r = LEVELS[method]
    if level < r[1] or level > r[2] then bad(string.format("%s levels are %d-%d", method, r[1], r[2])) end
  end
  return method, method == "none" and 0 or level
end

return {
  summary = "back up the database as a pg_dump custom archive (restorable by pg_restore) with a manifest",
  usage = "usage: orch backup [--env NAME] [--db URL] [--output FILE | --output -] [--dir DIR] [--compress METHOD[:LEVEL] | -Z N] [-n|-N SCHEMA] [-t|-T TABLE] [--exclude-table-data TABLE] [-s | -a] [-x] [--no-comments] [--json]",
  description = "--env NAME (or ORCH_ENV) picks the database and the backups directory (backups.dir) from\n" ..
    "orch.env.lua; after a complete backup the environment's retention (backups.keep, backups.max_age)\n" ..
    "is applied to that directory, as the recipes' backup step does (--no-prune skips it).\n\n" ..
    "Every object of the database is backed up, or the backup fails naming what it cannot take. --skip KIND\n" ..
    "leaves a kind out knowingly (the manifest lists what was left out; a backup it left objects out of is\n" ..
    "PARTIAL, as with -n/-t/-s: listed so, retained apart, never restored as the whole database by the recipes);\n" ..
    "its kinds:\n" .. (function()
      local lines, cur = {}, " "
      for _, k in ipairs(require("orch.backup.catalog").SKIP_KINDS) do
        if #cur + #k > 100 then lines[#lines + 1] = cur; cur = " " end
        cur = cur .. " " .. k
      end
      lines[#lines + 1] = cur
      return table.concat(lines, "\n")
    end)(),
  examples = { "orch backup", "orch backup --output /tmp/app.dump", "orch backup -o - | ssh host 'cat > app.dump'",
    "orch backup --compress zstd:5   # format 1.15: needs pg_restore 16 or newer (orch restore reads it)",
    "orch backup --skip subscription --skip user_mapping   # as a role that may not read them",
    "orch backup -n app --exclude-table-data 'app.audit_*'   # a partial backup: the manifest and backups list say so" },
  spec = spec,
  run = function(argv)
    local opts = args.parse(argv, spec, "backup")
    if opts.json or opts.output == "-" then log.quiet_to("warn") end
    local skip = {}
    local known = {}
    for _, k in ipairs(require("orch.backup.catalog").SKIP_KINDS) do known[k] = true end
    for _, k in ipairs(opts.skip or {}) do
      local name = k:gsub("-", "_")
      if not known[name] then
        args.usage_error("backup", string.format("--skip %s: no such kind; the kinds are: %s", k,
          table.concat(require("orch.backup.catalog").SKIP_KINDS, ", ")))
      end
      skip[name] = true
    end
    local selection = require("orch.backup.select").from_opts {
      schemas = opts.schema, exclude_schemas = opts.exclude_schema, tables = opts.table, exclude_tables = opts.exclude_table,
      exclude_table_data = opts.exclude_table_data, schema_only = opts.schema_only, data_only = opts.data_only,
      no_privileges = opts.no_privileges or opts.no_acl, no_comments = opts.no_comments }
    local compression, level = parse_compress(opts.compress)
    local env = envmod.for_command(opts)
    if not opts.output and not opts.dir and env.backups.dir:sub(1, 1) ~= "/" then
      -- backups/<env> is the project's: outside any project there is none to write into
      require("orch.project").need("orch backup", "say where the backup goes with --output FILE or --dir DIR")
    end
    opts.env_loaded = env
    local c <close> = require("orch.migrate.cli").connect(opts, { create = false })
    -- the progress line (\r and erase-line codes) only on a terminal, and never when quiet
    local bar = require("orch.progress").new { unit = "tables", quiet = opts.quiet or opts.json or opts.output == "-" }
    local m = backup.create(c, {
      output = opts.output, dir = opts.dir or env.backups.dir, compression = compression, level = level,
      threads = opts.threads, jobs = math.tointeger(opts.jobs), env = not env.implicit and env.name or opts.env, run_id = opts.run_id, skip = skip, lock_timeout = opts.lock_timeout,
      no_owner = opts.no_owner, selection = selection,
      on_progress = bar.active and function(ev)
        bar:update { done = ev.done, total = ev.total, bytes = ev.bytes_in, fraction = ev.fraction, what = table.concat(ev.tables, ", ") }
      end or nil,
    })
    bar:finish()
    if opts.output == "-" and opts.jobs > 1 and not opts.quiet then
      io.stderr:write(string.format("note: streamed to standard output with %d connection%s: a stream cannot be rewritten, so the data blocks " ..
        "went out in TOC order, each connection's block waiting in a temporary file until its turn\n", m.jobs, m.jobs == 1 and "" or "s"))
    end
    local pruned = {}
    if not opts.output and not opts.no_prune and (env.backups.keep or env.backups.max_age) then
      pruned = backup.retain(opts.dir or env.backups.dir, { keep = env.backups.keep,
        max_age = require("orch.args").seconds(env.backups.max_age, "backups.max_age") })
      m.pruned = pruned
    end
    -- (names as the manifest holds them: an SQL_ASCII database's, byte for byte)
    if opts.json then io.stdout:write(json.encode(m, { indent = "  ", bytes = true }), "\n")
    elseif opts.output ~= "-" then
      print(string.format("backup %s: %d tables, %d rows, %.1f MiB%s, sha256 %s", m.path, (function() local n = 0 for _ in pairs(m.tables) do n = n + 1 end return n end)(),
        m.rows, m.size / 1048576, (m.jobs or 1) > 1 and string.format(", %d connections", m.jobs) or "", m.sha256))
      if #pruned > 0 then print(string.format("pruned %d older backup(s) (environment %s keeps %s): %s", #pruned, env.name,
        env.backups.keep and ("the newest " .. env.backups.keep) or ("those younger than " .. tostring(env.backups.max_age)), table.concat(pruned, ", "))) end
    end
    -- what --skip left out is named, so nobody takes the backup for a whole one (-q: in the manifest only)
    if not opts.json and not opts.quiet then
      local part = require("orch.backup.select").summary(m)
      if part then
        io.stderr:write("note: a PARTIAL backup (" .. part .. "): the manifest says so, and no recipe restores it as the whole database\n")
      end
      for _, k in ipairs(m.skipped or {}) do
        if k.count == 0 then
          io.stderr:write(string.format("note: --skip %s matched nothing in this database\n", k.kind))
        else
          local shown = {}
          for i, n in ipairs(k.objects) do if i > 10 then shown[#shown + 1] = string.format("and %d more", k.count - 10) break end shown[#shown + 1] = n end
          io.stderr:write(string.format("left out (--skip %s): %d object%s, NOT in this backup: %s\n", k.kind, k.count,
            k.count == 1 and "" or "s", table.concat(shown, "; ")))
        end
      end
    end
    return 0
  end,
}
