-- recipes/dev.lua -- the development flow, and the first thing a new user runs:
--   orch recipes/dev.lua
-- Uses the database in --db / DATABASE_URL when one is configured, otherwise
-- starts (or reuses) a throwaway local cluster in .orch/localpg.
local args = require "orch.args"
local target = require "orch.target"
local localpg = require "orch.localpg"
local log = require "orch.log"

local spec = args.spec({ "db" }, {
  { name = "dbname", type = "string", default = "orch_dev", help = "database to use in the local cluster" },
})
local opts = args.parse({ ... }, spec, "recipes/dev.lua")
if opts.help then
  print("usage: orch recipes/dev.lua [--db URL] [--dbname NAME]\n\n" .. args.help(spec))
  return 0
end

local url = target.resolve(opts)
if not url then
  log.info("no database configured (--db, DATABASE_URL): using the local throwaway cluster in .orch/localpg")
  local pg = localpg.ensure(".orch/localpg")
  url = pg:create_database(opts.dbname)
end
local c <close> = require("orch.db").connect(url)
local info = c:info()
print(string.format("connected to %s on %s:%s as %s (PostgreSQL %s)",
  info.dbname, info.host, info.port, info.user, info.server_version))
