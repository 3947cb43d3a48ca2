--- orch.localpg: a throwaway PostgreSQL cluster in a directory, for the dev
-- recipe and the tests. initdb + pg_ctl on a free loopback port, TCP only,
-- trust authentication for 127.0.0.1 (nothing listens elsewhere). When orch
-- runs as root the server runs as the 'postgres' system user, because
-- PostgreSQL refuses to run as root.
--
--   local pg = require("orch.localpg").ensure(".orch/localpg")  -- start or reuse
--   local c <close> = pg:connect("postgres")
--   pg:stop(); pg:destroy()
--
-- A cluster of another PostgreSQL build: ensure(dir, { bindir = "/opt/pg12/bin" }).
-- The directory remembers it, so a later open(dir) without bindir stops and
-- restarts it with the same programs.
local sys = require "orch.sys"
local db = require "orch.db"

local M = {}
local Cluster = {}
Cluster.__index = Cluster

local function run(argv, opts)
  opts = opts or {}
  local spec = { table.unpack(argv) }
  for k, v in pairs(opts) do spec[k] = v end
  return sys.spawn(spec)
end

local function version_of(dir)
  local v = dir:match("/postgresql/([%d.]+)/bin$")
  return tonumber(v) or 0
end

--- Find the directory holding initdb and pg_ctl: ORCH_PG_BINDIR, then
-- `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin.
function M.bindir()
  local env = os.getenv("ORCH_PG_BINDIR")
  if env and env ~= "" then
    if not sys.exists(env .. "/initdb") then
      error(string.format("ORCH_PG_BINDIR=%s has no initdb in it", env), 0)
    end
    return env
  end
  local candidates = {}
  local ok, r = pcall(run, { "pg_config", "--bindir" }, { timeout = 10 })
  if ok and r.ok then candidates[#candidates + 1] = r.stdout:gsub("%s+$", "") end
  local versions = sys.listdir("/usr/lib/postgresql") or {}
  table.sort(versions, function(a, b) return (tonumber(a) or 0) > (tonumber(b) or 0) end)
  for _, v in ipairs(versions) do candidates[#candidates + 1] = "/usr/lib/postgresql/" .. v .. "/bin" end
  candidates[#candidates + 1] = "/usr/local/pgsql/bin"
  for _, d in ipairs(candidates) do
    if sys.exists(d .. "/initdb") and sys.exists(d .. "/pg_ctl") then return d end
  end
  error("PostgreSQL server programs (initdb, pg_ctl) not found: install them with " ..
    "'apt-get install postgresql' or point ORCH_PG_BINDIR at their directory", 0)
end

--- The system user the server runs as: the postgres user when we are root.
function M.server_user()
  if sys.getuid() ~= 0 then return nil end
  if not sys.user("postgres") then
    error("orch runs as root and PostgreSQL refuses to run as root, but there is no 'postgres' " ..
      "system user to run it as: create one (useradd --system postgres) or run orch as a normal user", 0)
  end
  return "postgres"
end

--- Can user reach (traverse to) dir? Checks the nearest existing ancestor.
function M.reachable(dir, user)
  local probe = dir
  while not sys.exists(probe) do
    probe = probe:match("^(.*)/[^/]*$")
    if not probe or probe == "" then probe = "/" break end
  end
  return sys.spawn({ "test", "-x", probe, user = user }).ok
end

-- the bindir line _write_conf leaves in orch.conf for a cluster of a chosen build
local BINDIR_MARK = "# orch.localpg bindir: "

local function check_bindir(d)
  for _, prog in ipairs { "initdb", "pg_ctl", "postgres" } do
    if not sys.exists(d .. "/" .. prog) then
      error(string.format("the PostgreSQL bin directory %s has no %s in it: point bindir at a directory " ..
        "holding initdb, pg_ctl and postgres", d, prog), 0)
    end
  end
  return d
end

--- A handle on the cluster in dir (which need not exist yet).
-- opts.fast (default true): fsync, synchronous_commit and full_page_writes off.
-- opts.bindir: the directory of initdb, pg_ctl and postgres to use (default:
-- the one this cluster was made with, else M.bindir()); raises if it lacks them.
function M.open(dir, opts)
  opts = opts or {}
  local abs = dir
  if abs:sub(1, 1) ~= "/" then abs = (sys.realpath(".") .. "/" .. dir):gsub("/%./", "/") end
  local self = setmetatable({
    dir = abs, data = abs .. "/data", logfile = abs .. "/server.log",
    host = "127.0.0.1", user = "postgres", fast = opts.fast ~= false,
  }, Cluster)
  self.os_user = M.server_user()
  if self.os_user and not M.reachable(abs, self.os_user) then
    -- a private parent (root's home, say): keep the cluster under /tmp,
    -- at a path derived from the requested one so it is found again
    local alt = string.format("/tmp/orch-localpg-%d-%08x", sys.getuid(), sys.crc32(abs))
    self.requested_dir, self.dir = abs, alt
    self.data, self.logfile = alt .. "/data", alt .. "/server.log"
  end
  local conf = io.open(self.data .. "/orch.conf")
  local remembered
  if conf then
    local text = conf:read("a")
    conf:close()
    self.port = tonumber(text:match("\nport = (%d+)")) or tonumber(text:match("^port = (%d+)"))
    remembered = text:match("\n" .. BINDIR_MARK:gsub("%p", "%%%0") .. "([^\n]+)")
  end
  if opts.bindir then
    self.bin, self.chosen_bin = check_bindir(opts.bindir), true
  elseif remembered then
    self.bin, self.chosen_bin = remembered, true
  end
  return self
end

function Cluster:_run(prog, argv, opts)
  self.bin = self.bin or M.bindir()
  local spec = { self.bin .. "/" .. prog, table.unpack(argv) }
  spec.user = self.os_user
  spec.timeout = (opts and opts.timeout) or 120
  -- the user's PG* settings (aimed at their real servers) must not leak in
  spec.env = { LC_ALL = "C", LANG = "C", PGHOST = false, PGPORT = false, PGDATABASE = false,
               PGUSER = false, PGOPTIONS = false, PGDATA = false, PGSERVICE = false, PGPASSWORD = false }
  if sys.exists(self.dir) then spec.cwd = self.dir end
  return sys.spawn(spec)
end

function Cluster:initialized()
  return sys.exists(self.data .. "/PG_VERSION")
end

local function log_tail(path, n)
  local f = io.open(path)
  if not f then return "" end
  local lines = {}
  for l in f:lines() do
    lines[#lines + 1] = l
    if #lines > n then table.remove(lines, 1) end
  end
  f:close()
  return table.concat(lines, "\n")
end

function Cluster:_write_conf()
  local lines = {
    "# written by orch.localpg: a throwaway cluster",
    "listen_addresses = '127.0.0.1'",
    "port = " .. self.port,
    "unix_socket_directories = ''",
    "max_connections = 100",
    "log_min_messages = warning",
  }
  if self.chosen_bin then lines[#lines + 1] = BINDIR_MARK .. self.bin end
  if self.fast then
    lines[#lines + 1] = "fsync = off"
    lines[#lines + 1] = "synchronous_commit = off"
    lines[#lines + 1] = "full_page_writes = off"
  end
  local ok, err = sys.write_atomic(self.data .. "/orch.conf", table.concat(lines, "\n") .. "\n", 420)
  if not ok then error("cannot write cluster settings: " .. err, 0) end
  if self.os_user then sys.chown(self.data .. "/orch.conf", self.os_user) end
end

--- initdb into dir/data (once). Raises with initdb's own output on failure.
function Cluster:init()
  if self:initialized() then return self end
  local ok, err = sys.mkdir_p(self.dir, 493)
  if not ok then error(string.format("cannot create cluster directory %s: %s", self.dir, err), 0) end
  sys.chmod(self.dir, 448)
  if self.os_user then
    sys.chown(self.dir, self.os_user, true)
    local probe = sys.spawn { "test", "-w", self.dir, user = self.os_user }
    if not probe.ok then
      error(string.format("the '%s' user cannot write to %s (a parent directory is private?): " ..
        "choose a directory it can reach, e.g. under /tmp", self.os_user, self.dir), 0)
    end
  end
  local argv = { "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync" }
  -- initdb 12 and 13 do not know --no-instructions (14 added it)
  if self:major() >= 14 then argv[#argv + 1] = "--no-instructions" end
  local r = self:_run("initdb", argv)
  if not r.ok then
    error(string.format("initdb failed in %s:\n%s%s", self.data, r.stdout, r.stderr), 0)
  end
  local conf = io.open(self.data .. "/postgresql.conf", "a")
  conf:write("\ninclude_if_exists = 'orch.conf'\n")
  conf:close()
  return self
end

--- The major version of this cluster's programs (12, 13, ...), from
-- `pg_ctl --version`; raises when the program does not run.
function Cluster:major()
  if self._major then return self._major end
  local r = self:_run("pg_ctl", { "--version" }, { timeout = 30 })
  local v = r.ok and tonumber(r.stdout:match("%(PostgreSQL%) (%d+)"))
  if not v then
    error(string.format("%s/pg_ctl --version did not say which PostgreSQL it is: %s%s", self.bin, r.stdout, r.stderr), 0)
  end
  self._major = math.tointeger(v)
  return self._major
end

--- When postmaster.pid names another data directory (this one was copied
-- from a cluster that was running: cp -a of a project), the directory it
-- names; nil when the file is absent or this directory's own. Its pid is
-- that other cluster's server: never this one's, never to be signalled.
function Cluster:foreign_pidfile()
  local f = io.open(self.data .. "/postmaster.pid")
  if not f then return nil end
  f:read("l")
  local named = f:read("l")
  f:close()
  if not named or named == "" then return nil end
  local mine = sys.realpath(self.data) or self.data
  if named == self.data or named == mine or sys.realpath(named) == mine then return nil end
  return named
end

--- Is a server running on this data directory?
function Cluster:running()
  if not self:initialized() then return false end
  if self:foreign_pidfile() then return false end
  local r = self:_run("pg_ctl", { "status", "-D", self.data }, { timeout = 30 })
  return r.ok
end

--- Start the server (initdb first if needed); reuse it if it already runs.
-- Picks a new free port when the remembered one is taken.
function Cluster:start()
  self:init()
  if self:running() then return self end
  local other = self:foreign_pidfile()
  if other then
    -- copied from a running cluster: the lock file is the other one's, and would stop this server starting
    require("orch.log").info("the cluster in %s is a copy of %s, made while that one ran: its postmaster.pid is that " ..
      "server's and was removed (this copy gets a port of its own)", self.dir, other)
    os.remove(self.data .. "/postmaster.pid")
  end
  if not self.port or sys.port_open(self.port) then self.port = sys.free_port() end
  local r
  -- a port free a moment ago can be taken before the server binds it (another program's
  -- connection got it as its local port, another cluster chose it): then another free one
  for attempt = 1, 5 do
    self:_write_conf()
    local st = sys.stat(self.logfile)
    local logged = st and st.size or 0
    r = self:_run("pg_ctl", { "start", "-D", self.data, "-l", self.logfile, "-w", "-t", "60" },
      { timeout = 90 })
    if r.ok or attempt == 5 then break end
    local f = io.open(self.logfile, "rb")
    local new = ""
    if f then f:seek("set", logged) new = f:read("a") or "" f:close() end
    if not new:find("Address already in use", 1, true) then break end
    self.port = sys.free_port()
  end
  if not r.ok then
    error(string.format("the local PostgreSQL cluster in %s did not start (pg_ctl: %s)\nlast lines of %s:\n%s",
      self.dir, (r.stderr .. r.stdout):gsub("%s+$", ""), self.logfile, log_tail(self.logfile, 15)), 0)
  end
  -- wait until it accepts connections (pg_ctl -w already did; be sure on TCP)
  local deadline = sys.monotonic() + 30
  while true do
    local ok, c = pcall(db.connect, self:conninfo("postgres"), { connect_timeout = 2 })
    if ok then c:close(); break end
    if sys.monotonic() > deadline then error("the local cluster started but refuses connections: " .. tostring(c), 0) end
    sys.sleep(0.1)
  end
  return self
end

--- Stop the server (fast shutdown, else immediate). Fine if it is not
-- running; raises when it is still running afterwards.
function Cluster:stop()
  if not self:initialized() or not self:running() then return self end
  local r = self:_run("pg_ctl", { "stop", "-D", self.data, "-m", "fast", "-w", "-t", "60" }, { timeout = 90 })
  if not r.ok then
    r = self:_run("pg_ctl", { "stop", "-D", self.data, "-m", "immediate", "-w" }, { timeout = 60 })
  end
  if self:running() then
    error(string.format("the local PostgreSQL cluster in %s did not stop (pg_ctl: %s); stop it by hand: pg_ctl stop -D %s",
      self.dir, ((r.stderr or "") .. (r.stdout or "")):gsub("%s+$", ""), self.data), 0)
  end
  return self
end

--- Stop the server, and only once it has stopped remove the whole directory
-- (a server whose files were removed under it would run on, unreachable).
function Cluster:destroy()
  self:stop()
  local ok, err = sys.rmtree(self.dir)
  if not ok then error("cannot remove the cluster directory: " .. err, 0) end
end

--- The postmaster's pid when the server runs (from postmaster.pid), else nil.
function Cluster:pid()
  if self:foreign_pidfile() then return nil end
  local f = io.open(self.data .. "/postmaster.pid")
  if not f then return nil end
  local pid = tonumber(f:read("l") or "")
  f:close()
  return pid
end

--- libpq parameters for a database in this cluster.
function Cluster:conninfo(dbname)
  return { host = self.host, port = tostring(assert(self.port, "cluster not started")),
           user = self.user, dbname = dbname or "postgres" }
end

function Cluster:url(dbname)
  return string.format("postgresql://%s@%s:%d/%s", self.user, self.host, self.port, dbname or "postgres")
end

function Cluster:connect(dbname, opts)
  return db.connect(self:conninfo(dbname), opts)
end

-- DROP DATABASE that does not wait for the database's sessions: WITH (FORCE)
-- from PostgreSQL 13; on 12 its sessions are ended first
local function drop_forced(c, name)
  if tonumber(c:value("SHOW server_version_num")) >= 130000 then
    c:exec("DROP DATABASE " .. c:quote_ident(name) .. " WITH (FORCE)")
    return
  end
  c:exec("ALTER DATABASE " .. c:quote_ident(name) .. " ALLOW_CONNECTIONS false")
  c:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
  local deadline = sys.monotonic() + 10
  while c:value("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name) > 0 and sys.monotonic() < deadline do
    sys.sleep(0.02)
  end
  c:exec("DROP DATABASE " .. c:quote_ident(name))
end

--- Drop a database of this cluster if it exists, ending its sessions.
function Cluster:drop_database(name)
  local c <close> = self:connect("postgres")
  if c:value("SELECT 1 FROM pg_database WHERE datname = $1", name) then drop_forced(c, name) end
end

--- Create (or with drop=true re-create) a database; returns its URL.
function Cluster:create_database(name, opts)
  local c <close> = self:connect("postgres")
  if opts and opts.drop and c:value("SELECT 1 FROM pg_database WHERE datname = $1", name) then
    drop_forced(c, name)
  end
  if not c:value("SELECT 1 FROM pg_database WHERE datname = $1", name) then
    c:exec("CREATE DATABASE " .. c:quote_ident(name))
  end
  return self:url(name)
end

--- Start the cluster in dir, or reuse it if it already runs there.
function M.ensure(dir, opts)
  return M.open(dir, opts):start()
end

return M
