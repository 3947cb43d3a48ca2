--- orch verify: check a backup without trusting it.
local args = require "orch.args"
local backup = require "orch.backup"
local envmod = require "orch.env"
local json = require "orch.json"

local spec = args.spec({ "db", "env", "fleet_target" }, {
  { name = "deep", type = "boolean", help = "also restore into a scratch database (on --db's server) and compare row counts and every table's contents" },
  { name = "no-manifest", type = "boolean", help = "check an archive that has no manifest (e.g. from pg_dump)" },
  { name = "wait", type = "duration", metavar = "DURATION", help = "wait up to this long for the server to accept connections, for --deep (retries with backoff; default: the environment's database.wait, else none)" },
})

return {
  summary = "verify a backup: manifest SHA-256, structure, every block inflates; --deep restores it to a scratch database",
  description = "Exit 0 when the archive is proven (the manifest's SHA-256, or checksums in every block: zlib's, or\n" ..
    "lz4/zstd content checksums, which orch writes and pg_dump 16/17 do not), 1 when it\n" ..
    "is damaged or unproven (no manifest and uncompressed: structure read, but nothing can vouch for its bytes).\n" ..
    "--deep restores into a scratch database on the server of --db, else of the environment's\n" ..
    "database (--env NAME or ORCH_ENV, from orch.env.lua), and drops it afterwards.",
  usage = "usage: orch verify FILE|s3://BUCKET/KEY [--deep] [--env NAME | --db URL]",
  operands = { max = 1, min = 1, name = "FILE", complete = "file" },
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "verify")
    if not rest[1] then args.usage_error("verify", "missing the archive to verify") end
    rest[1] = require("orch.project").from_cwd(rest[1])
    local env = envmod.for_command(opts)   -- first: an unknown --env is a usage error before any file is read
    local deep
    if opts.deep then
      deep = function(path, on_progress)
        opts.env_loaded = env
        local c <close> = require("orch.migrate.cli").connect(opts, { create = false })
        return require("orch.backup.restore").deep_check(c, path, on_progress)
      end
    end
    local bar = require("orch.progress").new { unit = "blocks", quiet = opts.quiet or opts.json }
    local r = backup.verify(rest[1], { deep = deep, no_manifest = opts.no_manifest,
      on_progress = bar.active and function(ev) bar:update(ev) end or nil })
    bar:finish()
    if opts.json then io.stdout:write(json.encode(r, { indent = "  " }), "\n")
      if not r.proven then return 1 end
    elseif not r.proven then
      io.stderr:write(string.format("orch: unproven: %s parses and its %d data blocks read, but it has no manifest and no compression " ..
        "checksums (an uncompressed archive, e.g. pg_dump -Z0, or lz4/zstd frames without checksums, as pg_dump 16/17 write them): " ..
        "a damaged byte in it could not be detected. Restore it with --swap " ..
        "and check the result; restore --drop-existing refuses it without --force\n", r.path, r.blocks))
      return 1
    else
      print(string.format("ok: %s (%d data blocks, %d bytes of data%s%s)", r.path, r.blocks, r.bytes,
        r.sha256 and (", sha256 matches the manifest") or ", no manifest", r.deep and string.format(", row counts match after a restore and %d tables' contents match the archive%s", r.tables_compared or 0,
          r.large_objects_compared and ", large objects too" or "") or ""))
    end
    return 0
  end,
}
