--- orch verify: check a backup without trusting it.
local args = require "orch.args"
local backup = require "orch.backup"
local target = require "orch.target"
local json = require "orch.json"

local spec = args.spec({ "db", "json" }, {
  { name = "deep", type = "boolean", help = "also restore into a scratch database (on --db's server) and compare row counts" },
  { name = "no-manifest", type = "boolean", help = "check an archive that has no manifest (e.g. from pg_dump)" },
})

return {
  summary = "verify a backup: manifest SHA-256, structure, every block inflates; --deep restores it to a scratch database",
  usage = "usage: orch verify FILE [--deep] [--db URL]",
  spec = spec,
  run = function(argv)
    local opts, rest = args.parse(argv, spec, "verify")
    if not rest[1] then args.usage_error("verify", "missing the archive to verify") end
    local deep
    if opts.deep then
      deep = function(path)
        local c <close> = target.connect(opts)
        return require("orch.backup.restore").deep_check(c, path)
      end
    end
    local r = backup.verify(rest[1], { deep = deep, no_manifest = opts.no_manifest })
    if opts.json then io.stdout:write(json.encode(r, { indent = "  " }), "\n")
    else
      print(string.format("ok: %s (%d data blocks, %d bytes of data%s%s)", r.path, r.blocks, r.bytes,
        r.sha256 and (", sha256 matches the manifest") or ", no manifest", r.deep and ", row counts match after a restore" or ""))
    end
    return 0
  end,
}
