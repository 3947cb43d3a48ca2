--- orch restore: restore an orch or pg_dump -Fc archive into the selected database.
local args = require "orch.args"
local envmod = require "orch.env"
local restore = require "orch.backup.restore"
local json = require "orch.json"
local sys = require "orch.sys"
local log = require "orch.log"

local spec = args.spec({ "db", "env", "fleet_target", "yes" }, {
  { name = "jobs", short = "j", type = "integer", min = 1, default = 1, metavar = "N",
    help = "restore on N connections, as pg_restore -j: pre-data in order, then data, indexes, constraints and triggers " ..
           "in parallel as their dependencies allow, post-data last (a file only: standard input and --single-transaction use one); " ..
           "an s3:// archive is also downloaded in N ranges at once" },
  { name = "split-mib", type = "integer", min = 0, default = 8, metavar = "MIB",
    help = "with --jobs: a table whose data block is at least MIB MiB of the archive and more than one connection's share of " ..
           "the data left is loaded over the free connections at once, its rows cut at row ends (every part committed only " ..
           "when all ended well; no COPY FREEZE for it); smaller tables load in one piece with FREEZE; 0: never split" },
  { name = "copy-format", type = "string", metavar = "auto|binary|text", choices = { "auto", "binary", "text" }, default = "auto",
    help = "how rows go to the server: binary sends a table's rows in COPY's binary format, converted from the archive's text " ..
           "by orch, when every column is of a type it converts (booleans, integers, floats, numeric, text, char, varchar, name, " ..
           "json, jsonb, enums, uuid, bytea, date, timestamp, timestamptz, and domains over them): the server parses less, " ..
           "a large table loads faster; a row it does not read exactly as the server writes it makes that table load as text; " ..
           "auto (the default) does so for tables of at least 1 MiB of archive data; text sends every row as written, as pg_restore" },
  { name = "swap", type = "boolean", help = "restore into a new database, then swap it in by rename (the old one is kept)" },
  { name = "drop-existing", type = "boolean", help = "drop everything in the target first (asks for confirmation)" },
  { name = "single-transaction", short = "1", type = "boolean", help = "all or nothing: one transaction" },
  { name = "schema", short = "n", type = "list", help = "restore only these schemas" },
  { name = "table", short = "t", type = "list", help = "restore only these tables (with their data, indexes, constraints)" },
  { name = "list", short = "l", type = "boolean", help = "print the archive's table of contents and exit (pg_restore -l's format: edit it for -L)" },
  { name = "exclude-schema", short = "N", type = "list", metavar = "SCHEMA", help = "leave out this schema and everything in it (repeatable)" },
  { name = "index", short = "I", type = "list", metavar = "NAME", help = "restore only this index (repeatable; with -I, -P, -T only the named objects, plus -t's tables)" },
  { name = "function", short = "P", type = "list", metavar = "NAME(ARGS)", help = "restore only this function, procedure or aggregate, e.g. 'add(integer, integer)' (repeatable)" },
  { name = "trigger", short = "T", type = "list", metavar = "NAME", help = "restore only this trigger: 'TABLE TRIGGER' as listed, or its name (repeatable)" },
  { name = "data-only", short = "a", type = "boolean",
    help = "restore only rows, sequence values and large objects, into the tables the target holds (one transaction; default mode only)" },
  { name = "schema-only", short = "s", type = "boolean", help = "restore everything but rows, sequence values and large objects" },
  { name = "section", type = "list", metavar = "SECTION",
    help = "restore only pre-data, data or post-data (repeatable); without pre-data, into the schema the target holds, as --data-only" },
  { name = "use-list", short = "L", type = "string", metavar = "FILE", path = true, complete = "file",
    help = "restore only the entries listed in FILE (orch restore --list or pg_restore -l output; ';' comments a line out)" },
  { name = "no-privileges", short = "x", type = "boolean", help = "do not restore privileges (GRANT/REVOKE, default privileges); also --no-acl" },
  { name = "no-acl", type = "boolean", help = "the same as --no-privileges" },
  { name = "no-comments", type = "boolean", help = "do not restore comments" },
  { name = "disable-triggers", type = "boolean",
    help = "with --data-only: triggers and foreign-key checks do not fire while the rows load (session_replication_role = replica; needs a superuser)" },
  { name = "no-owner", short = "O", type = "boolean", help = "do not restore object owners" },
  { name = "no-tablespaces", type = "boolean", help = "ignore the archive's tablespaces: everything goes to the target's default" },
  { name = "no-manifest", type = "boolean", help = "restore an orch archive whose manifest is missing" },
  { name = "force", type = "boolean", help = "--drop-existing with an archive that cannot be proven (no manifest, uncompressed)" },
  { name = "wait", type = "duration", metavar = "DURATION", help = "wait up to this long for the server to accept connections (retries with backoff; default: the environment's database.wait, else none)" },
})

return {
  summary = "restore an orch or stock pg_dump -Fc archive (file or -) into the selected database",
  usage = "usage: orch restore FILE|s3://BUCKET/KEY|- [--db URL] [--jobs N] [--swap | --drop-existing] [--single-transaction] [-n SCHEMA] [-t TABLE] [-N SCHEMA] [-I INDEX] [-P FUNC(ARGS)] [-T TRIGGER] [-a | -s] [--section S] [-L FILE] [-x] [--no-comments] [--list]",
  description = "Into an empty database by default. --swap restores beside the target and swaps it in by\n" ..
    "rename, keeping the old database. Every mode proves a file whole before its first statement on the target:\n" ..
    "the manifest's SHA-256, else every data block. From standard input nothing can be read ahead, so the restore\n" ..
    "runs in one transaction (or into --swap's new database): a stream found damaged half-way leaves the target as\n" ..
    "it was. A failed restore says what state the target is in; a failed default-mode restore empties it again.\n" ..
    "--env NAME (or ORCH_ENV) picks the target database from orch.env.lua; restoring into a protected\n" ..
    "environment asks first on a terminal, and needs --yes without one.",
  operands = { max = 1, min = 1, name = "FILE|-", complete = "file" },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "restore")
    local path = rest[1]
    if not path then args.usage_error("restore", "missing the archive: orch restore FILE (or - for standard input)") end
    path = require("orch.project").from_cwd(path)
    if opts.list then
      if opts.json then
        -- the table of contents as data: the header and one object per entry (as pg_restore -l lists them)
        local a <close> = require("orch.pgarchive").open(path)
        local h = a:header()
        local entries = {}
        for i, e in ipairs(a:entries()) do
          local o = {}
          for _, k in ipairs { "id", "desc", "namespace", "tag", "owner", "section", "tableoid", "oid", "tablespace", "deps" } do
            local v = e[k]
            if type(v) == "string" or type(v) == "number" or type(v) == "boolean" or (k == "deps" and type(v) == "table") then o[k] = v end
          end
          entries[i] = o
        end
        io.stdout:write(json.encode({ archive = path, dbname = h.dbname, dumper_version = h.dumper_version, format = h.version,
          compression = h.compression, entries = entries }, { indent = "  " }), "\n")
        return 0
      end
      print(restore.list(path))
      return 0
    end
    if opts.swap and opts.drop_existing then args.usage_error("restore", "--swap and --drop-existing exclude each other") end
    local mode = opts.swap and "swap" or opts.drop_existing and "drop-existing" or "empty"
    local env = envmod.for_command(opts)
    local url = envmod.command_database(env, opts)
    if env.protected and mode ~= "drop-existing" then
      require("orch.migrate.cli").approve(env, opts, string.format("restore %s into %s (%s)?", path, log.redact(url or "libpq defaults"), mode))
    end
    if mode == "drop-existing" then
      local protected = env.protected
      if (protected or not sys.isatty(0)) and not opts.yes then
        sys.error("--drop-existing replaces everything in the target" .. (protected and " of a protected environment" or "") ..
          ": confirm with --yes", 1)
      end
      if not opts.yes then
        io.stderr:write("drop everything in the target database and restore " .. path .. "? [y/N] ")
        local a = io.read("l")
        if not (a and a:lower():match("^y")) then sys.error("restore cancelled; nothing was changed", 1) end
      end
    end
    opts.env_loaded = env
    require("orch.migrate.cli").wait_for_server(opts)
    local t0 = sys.monotonic()
    local bar = require("orch.progress").new { unit = "entries", quiet = opts.quiet or opts.json }
    local r = restore.run { archive = path, db = url, mode = mode, single_transaction = opts.single_transaction,
      schemas = opts.schema, tables = opts.table, no_owner = opts.no_owner, no_tablespaces = opts.no_tablespaces,
      exclude_schemas = opts.exclude_schema, indexes = opts.index, functions = opts["function"], triggers = opts.trigger,
      data_only = opts.data_only, schema_only = opts.schema_only, sections = opts.section, use_list = opts.use_list,
      no_privileges = opts.no_privileges or opts.no_acl, no_comments = opts.no_comments, disable_triggers = opts.disable_triggers,
      skip_manifest_check = opts.no_manifest, force = opts.force, jobs = math.tointeger(opts.jobs),
      split_min = math.tointeger(opts.split_mib) * 1048576, copy_format = opts.copy_format,
      on_progress = bar.active and function(ev) bar:update(ev) end or nil }
    bar:finish()
    if opts.json then io.stdout:write(json.encode(r, { indent = "  " }), "\n")
    else
      if r.jobs_note then print("  note: --jobs " .. math.tointeger(opts.jobs) .. ": " .. r.jobs_note) end
      print(string.format("restored %s into %s (%s%s) in %.1fs%s", path, r.target, mode,
        (r.jobs or 1) > 1 and string.format(", %d connections", r.jobs) or "", sys.monotonic() - t0,
        r.old_database and ("; the previous database is kept as " .. r.old_database .. " (drop it when you no longer need it)") or ""))
      if r.split then print("  split: " .. table.concat(r.split, ", ") .. " (cut at row ends, loaded without COPY FREEZE)") end
      if (r.binary_tables or 0) > 0 then print(string.format("  rows of %d %s sent in COPY's binary format", r.binary_tables, r.binary_tables == 1 and "table" or "tables")) end
      for _, t in ipairs(r.text_again or {}) do print("  loaded as text after the binary format stopped: " .. t) end
      print("  archive: " .. r.proof .. (r.single_transaction and ("; one transaction (" .. r.single_transaction .. ")") or ""))
      if r.partial then print("  note: a PARTIAL backup (" .. r.partial .. "): the target holds only what it selected") end
      -- the archive's database-level entries: applied to a database --swap made, named when left out
      local d = r.database or {}
      if d.applied and #d.applied > 0 then
        print("  the archive's database settings, applied to the new database:")
        for _, s in ipairs(d.applied) do print("    " .. s) end
      end
      if d.skipped and #d.skipped > 0 then
        print(mode == "swap" and "  the archive's database settings NOT applied:" or
          string.format("  the archive's database settings NOT applied (%s keeps its own; --swap applies them, or run these):", r.target))
        for _, s in ipairs(d.skipped) do print("    " .. s .. (mode == "swap" and "" or ";")) end
      end
    end
    return 0
  end,
}
