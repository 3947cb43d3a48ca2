--- Shared helpers for the specs. Every spec that needs PostgreSQL gets it
-- from here: the cluster the test run started (ORCH_TEST_PGDIR, see
-- tests/pgcluster.lua), or the cluster of one chosen major, 12 to 18
-- (H.cluster(major); tests/pgmajors.lua). There is no skipping: no cluster =
-- an error.
local sys = require "orch.sys"
local localpg = require "orch.localpg"
local pgmajors = require "pgmajors"
local judge = require "judge"

local H = {}

H.orch_bin = os.getenv("ORCH_BIN") or "build/orch"
if H.orch_bin:sub(1, 1) ~= "/" then H.orch_bin = sys.realpath(H.orch_bin) or H.orch_bin end

local function default_dir() return os.getenv("ORCH_TEST_PGDIR") or "build/testpg" end

--- The test cluster handle; raises when it is not running.
-- major (12 ... 18, see H.majors()): that major's cluster instead, started by
-- its ctest fixture pgMAJOR (15 is the default cluster); raises naming the
-- fixture when it did not run.
H._majors = {}
function H.cluster(major)
  if major ~= nil then
    major = pgmajors.check(major)
    if H._majors[major] then return H._majors[major] end
    local pg
    if major == pgmajors.default then
      pg = H.cluster()
    else
      local dir = pgmajors.dir(default_dir(), major)
      pg = localpg.open(dir)
      if not pg.port or not pg:running() then
        error(string.format("no PostgreSQL %d test cluster in %s: its ctest fixture pg%d did not run. Run the " ..
          "spec through ctest (ctest -R 'spec/NAME/pg%d' starts it), or 'build/orch tests/pgcluster.lua start %s %d'",
          major, dir, major, major, dir, major), 0)
      end
    end
    local c <close> = pg:connect("postgres")
    local num = math.tointeger(tonumber(c:value("SHOW server_version_num")))
    if num // 10000 ~= major then
      error(string.format("the PostgreSQL %d test cluster in %s runs server_version_num %d", major, pg.dir, num), 0)
    end
    pg.version_num = num
    H._majors[major] = pg
    return pg
  end
  if H._cluster then return H._cluster end
  local dir = default_dir()
  local pg = localpg.open(dir)
  if not pg.port then
    error("no test cluster in " .. dir .. ": run the tests through ctest (it starts one), or " ..
      "'build/orch tests/pgcluster.lua start " .. dir .. "'", 0)
  end
  H._cluster = pg
  return pg
end

--- Every major the suite runs a server of: {12, 13, ..., 18}.
function H.majors() return { table.unpack(pgmajors.list) } end

--- The majors this spec run covers: ORCH_TEST_MAJORS (ctest runs a
-- cross-version spec once per major with it) or H.majors().
function H.test_majors() return pgmajors.under_test() end

local counter = 0
--- A new, empty database with a unique name; returns its URL and name.
-- major: in that major's cluster (default: the default cluster).
function H.fresh_db(prefix, major)
  counter = counter + 1
  local name = string.format("%s_%d_%d", prefix or "t", sys.getpid(), counter)
  local pg = H.cluster(major)
  return pg:create_database(name, { drop = true }), name
end

--- A new database made by sql, and its two archives in dir: pg_dump -Fc's
-- and orch backup's (with its manifest). Returns the database's name and
-- { stock = path, orch = path }.
function H.dumped_db(prefix, sql, dir)
  local url, name = H.fresh_db(prefix)
  local c <close> = require("orch.db").connect(url)
  c:exec(sql)
  c:close()
  local stock = dir .. "/" .. prefix .. ".stock.dump"
  local d = H.pgtool("pg_dump", { "-Fc", "-f", stock, "-d", name })
  assert(d.ok, d.stderr)
  local r = H.orch { "backup", "--db", url, "--dir", dir .. "/own_" .. prefix, "--json" }
  assert(r.ok, r.stderr)
  return name, { orch = require("orch.json").decode(r.stdout).path, stock = stock }
end

--- A streaming standby of the test cluster (pg_basebackup -R, started on a
-- free port); call :destroy() when done. Raises when it cannot be made.
function H.standby()
  counter = counter + 1
  local primary = H.cluster()
  local sb = localpg.open(string.format("/tmp/orch-standby-%d-%d", sys.getpid(), counter))
  sys.rmtree(sb.dir)
  assert(sys.mkdir_p(sb.dir, 448))
  if sb.os_user then sys.chown(sb.dir, sb.os_user, true) end
  local argv = { "-h", primary.host, "-p", tostring(primary.port), "-U", "postgres",
    "-D", sb.data, "-R", "-X", "stream", "-c", "fast", "--no-sync" }
  -- a tablespace another spec made is copied beside the standby, not onto the primary's own directory
  local c <close> = primary:connect("postgres")
  for _, t in ipairs(c:query("SELECT oid, pg_tablespace_location(oid) AS dir FROM pg_tablespace WHERE pg_tablespace_location(oid) <> ''")) do
    local dir = string.format("%s/tablespace_%d", sb.dir, t.oid)
    assert(sys.mkdir_p(dir, 448))
    if sb.os_user then sys.chown(dir, sb.os_user, true) end
    argv[#argv + 1] = "--tablespace-mapping=" .. t.dir .. "=" .. dir
  end
  local r = sb:_run("pg_basebackup", argv, { timeout = 300 })
  if not r.ok then error("pg_basebackup could not make a standby: " .. r.stderr .. r.stdout, 0) end
  sb:start()
  return sb
end

--- A tablespace of the test cluster named name, made if missing, in a
-- directory inside the cluster's own (the server's OS user owns it; it goes
-- with the cluster). Specs share it: it is never dropped. Returns the name.
function H.tablespace(name)
  local pg = H.cluster()
  local c <close> = pg:connect("postgres")
  if c:value("SELECT 1 FROM pg_tablespace WHERE spcname = $1", name) then return name end
  local dir = pg.dir .. "/tablespaces/" .. name
  assert(sys.mkdir_p(dir, 448))
  if pg.os_user then sys.chown(pg.dir .. "/tablespaces", pg.os_user, true) end
  local ok, err = pcall(c.exec, c, string.format("CREATE TABLESPACE %s LOCATION %s", c:quote_ident(name), c:quote_literal(dir)))
  -- another spec of the run may have made it meanwhile
  if not ok and not c:value("SELECT 1 FROM pg_tablespace WHERE spcname = $1", name) then error(err, 0) end
  return name
end

--- Connect to a database of the test cluster (default: postgres); major:
-- of that major's cluster.
function H.connect(dbname, major)
  return H.cluster(major):connect(dbname or "postgres")
end

--- The scram-sha-256 role of the test cluster (tests/pgcluster.lua): its
-- password, and a URL carrying it for database dbname (default postgres).
H.pw_user, H.pw_password = "orch_pw", "correct-horse-battery"
function H.pw_url(dbname)
  return string.format("postgresql://%s:%s@127.0.0.1:%d/%s", H.pw_user, H.pw_password, H.cluster().port, dbname or "postgres")
end

--- A new, empty database owned by the scram role; returns its password URL and name.
function H.fresh_pw_db(prefix)
  counter = counter + 1
  local name = string.format("%s_%d_%d", prefix or "t", sys.getpid(), counter)
  local c <close> = H.connect("postgres")
  c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(name) .. " WITH (FORCE)")
  c:exec("CREATE DATABASE " .. c:quote_ident(name) .. " OWNER " .. H.pw_user)
  return H.pw_url(name), name
end

function H.drop_db(name, major)
  local pg = H.cluster(major)
  local c <close> = pg:connect("postgres")
  -- a database with subscriptions cannot be dropped: detach them from their slots and drop them first
  if c:value("SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = $1 LIMIT 1", name) then
    local s <close> = pg:connect(name)
    for _, r in ipairs(s:query([[SELECT subname FROM pg_subscription
        WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())]])) do
      local q = s:quote_ident(r.subname)
      s:exec("ALTER SUBSCRIPTION " .. q .. " DISABLE")
      s:exec("ALTER SUBSCRIPTION " .. q .. " SET (slot_name = NONE)")
      s:exec("DROP SUBSCRIPTION " .. q)
    end
  end
  c:close()
  pg:drop_database(name)
end

--- Run the orch binary with arguments; returns {ok, code, stdout, stderr}.
-- opts: env (table), stdin (string), timeout (seconds, default 300), cwd.
function H.orch(argv, opts)
  opts = opts or {}
  local spec = { H.orch_bin }
  for _, a in ipairs(argv) do spec[#spec + 1] = a end
  spec.env = opts.env
  spec.stdin = opts.stdin
  spec.cwd = opts.cwd
  spec.timeout = opts.timeout or 300
  return sys.spawn(spec)
end

-- Run a client program bin with argv against cluster pg (PGHOST, PGPORT,
-- PGUSER set; opts.env, opts.stdin, opts.timeout as H.pgtool takes them).
local function run_client(bin, argv, opts, pg)
  local spec = { bin }
  for _, a in ipairs(argv) do spec[#spec + 1] = a end
  spec.env = { PGHOST = pg.host, PGPORT = tostring(pg.port), PGUSER = pg.user }
  for k, v in pairs(opts.env or {}) do spec.env[k] = v end
  spec.stdin = opts.stdin
  spec.timeout = opts.timeout or 300
  return sys.spawn(spec)
end

--- Run a stock PostgreSQL client program (pg_dump, pg_restore, psql) from
-- the cluster's bin directory; they are the independent judges in tests.
-- opts.major: aimed at that major's cluster (pg_dump 15 refuses 16 and newer).
function H.pgtool(prog, argv, opts)
  opts = opts or {}
  return run_client(localpg.bindir() .. "/" .. prog, argv, opts, H.cluster(opts.major))
end

--- PostgreSQL 17's client programs (pg_dump, pg_restore), installed by
-- scripts/install-deps (tests/tools/install-pg17-client): the judges for
-- archive versions 1.15/1.16, which Debian's 15 cannot read. Raises when
-- they are missing. Same arguments and result as H.pgtool.
function H.pg17tool(prog, argv, opts)
  local bin = sys.realpath(".orch/test-tools/postgresql-17/bin/" .. prog)
  if not bin then error("no PostgreSQL 17 " .. prog .. " in .orch/test-tools: run scripts/install-deps", 2) end
  return run_client(bin, argv, opts or {}, H.cluster())
end

--- Restore an archive with pg_restore 17 into a database of the test
-- cluster (a 15 server): pg_restore 17 writes the script, psql 15 runs it
-- stopping at the first error. The one line 17 adds that 15 does not know
-- (SET transaction_timeout) is left out. Returns {ok, stdout, stderr}.
function H.pg17_restore(path, dbname)
  local script = H.pg17tool("pg_restore", { "-f", "-", path })
  if not script.ok then return script end
  local sql = script.stdout:gsub("\nSET transaction_timeout = 0;\n", "\n")
  return H.pgtool("psql", { "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbname }, { stdin = sql })
end

--- The judge's view of a database's schema: pg_dump --schema-only text
-- (without the random \restrict key pg_dump 15.18+ writes per run).
-- opts.exclude_table leaves one table out.
function H.schema_of(dbname, opts)
  local argv = { "--schema-only", "-d", dbname }
  if opts and opts.exclude_table then table.insert(argv, 1, "--exclude-table=" .. opts.exclude_table) end
  local r = H.pgtool("pg_dump", argv)
  assert(r.ok, r.stderr)
  return (r.stdout:gsub("\\u?n?restrict [^\n]*\n", ""))
end

--- The judge's view of a database's contents: a checksum of every table's
-- rows (read under fixed output settings), the state of every sequence and
-- every large object's owner and checksum (tests/judge.lua). major: a
-- database of that major's cluster. opts.large_objects = false: tables and
-- sequences only (for a backup taken with --skip large_object).
function H.contents_of(dbname, major, opts)
  local c <close> = H.connect(dbname, major)
  local out = judge.contents(c)
  if opts and opts.large_objects == false then
    for k in pairs(out) do if k:match("^lo ") then out[k] = nil end end
  end
  return out
end

--- The cross-version judge of a database's schema and settings: a sorted,
-- diffable text built from the server's own catalog functions, never orch's
-- (tests/judge.lua says what it covers). Equal texts = alike databases.
-- major: a database of that major's cluster.
function H.catalog_of(dbname, major)
  local c <close> = H.connect(dbname, major)
  return judge.catalog(c)
end

--- The entries in which two catalog_of texts differ, "- " before a's and
-- "+ " before b's (an entry is a line with its indented continuation lines),
-- for an assertion message; "" when the texts are alike.
function H.catalog_diff(a, b)
  local function entries(t)
    local s, cur = {}, nil
    local function flush() if cur then s[cur] = (s[cur] or 0) + 1 end end
    for l in t:gmatch("[^\n]+") do
      if cur and l:sub(1, 4) == "    " then cur = cur .. "\n" .. l else flush(); cur = l end
    end
    flush()
    return s
  end
  local sa, sb, out = entries(a), entries(b), {}
  for l, n in pairs(sa) do if (sb[l] or 0) < n then out[#out + 1] = "- " .. l end end
  for l, n in pairs(sb) do if (sa[l] or 0) < n then out[#out + 1] = "+ " .. l end end
  table.sort(out, function(x, y) return x:sub(3) < y:sub(3) or (x:sub(3) == y:sub(3) and x < y) end)
  return table.concat(out, "\n")
end

--- A new temporary directory; returns its path. Every one is removed after
-- a run whose specs all passed (tests/run_specs.lua); a failing run keeps
-- them for a look.
H.tmpdirs = {}
function H.tmpdir()
  local d = sys.mkdtemp("/tmp/orch-test-")
  H.tmpdirs[#H.tmpdirs + 1] = d
  return d
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- The connection URL of database `name` on the test run's cluster.
function H.url_of(name) return H.cluster():url(name) end

--- Asserts two databases hold the same schema (pg_dump text) and the same
-- contents (per-table row checksums, sequence values).
function H.same_database(a, b)
  local assert = require "luassert"
  assert.equals(H.schema_of(a), H.schema_of(b))
  assert.same(H.contents_of(a), H.contents_of(b))
end

--- Creates role name (attrs: e.g. "LOGIN") on connection c unless it exists. Roles are
-- cluster-wide and specs run at once: one made by another spec between the look and the
-- CREATE is fine.
function H.ensure_role(c, name, attrs)
  local function exists() return c:value("SELECT 1 FROM pg_roles WHERE rolname = $1", name) end
  if exists() then return end
  local ok, err = pcall(c.exec, c, "CREATE ROLE " .. c:quote_ident(name) .. (attrs and (" " .. attrs) or ""))
  if not ok and not exists() then error(err, 0) end
end

--- Creates the roles the backup fixtures grant to (orch_owner_t,
-- orch_reader_t) unless they exist; roles are cluster-wide.
function H.setup_roles()
  local c <close> = H.connect("postgres")
  for _, r in ipairs { "orch_owner_t", "orch_reader_t" } do
    H.ensure_role(c, r)
  end
end

--- A new temporary project directory holding `layout` ({ ["sub/file"] =
-- text, ... }, subdirectories made as needed); returns its path.
function H.project_dir(layout)
  local dir = H.tmpdir()
  for path, text in pairs(layout) do
    local sub = path:match("^(.*)/[^/]+$")
    if sub then sys.mkdir_p(dir .. "/" .. sub) end
    H.write(dir .. "/" .. path, text)
  end
  return dir
end

--- Runs `orch ... --db url --dir dir` in an empty directory of its own (no
-- orch.env.lua but the one a test writes); returns H.orch's result.
function H.orch_project(url, dir, ...)
  local argv = { ... }
  for _, a in ipairs { "--db", url, "--dir", dir } do argv[#argv + 1] = a end
  return H.orch(argv, { cwd = H.tmpdir() })
end

-- ---------------------------------------------------------------------------
-- A real local HTTP(S) server (tests/httpd.py; its docstring lists the routes).

local function shq(s) return "'" .. (tostring(s):gsub("'", [['\'']])) .. "'" end

-- true while pid exists and is not a zombie
local function alive(pid)
  if not sys.kill(pid, 0) then return false end
  local stat = H.read("/proc/" .. pid .. "/stat")
  return not (stat and stat:match("%)%s+(%S)") == "Z")
end

-- Fetches a URL of the server with Python's urllib, not orch.http (which is
-- what the specs test): no proxies, and the self-signed certificate accepted.
local FETCH = [[
import ssl, sys, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
with opener.open(sys.argv[1], timeout=10) as r:
    sys.stdout.write(r.read().decode("utf-8"))
]]

local Server = {}
Server.__index = Server

function Server:url(path) return self.base .. (path or "") end

function Server:fetch(path)
  local r = sys.spawn { "python3", "-c", FETCH, self:url(path), timeout = 30 }
  if not r.ok then error("the test HTTP server did not answer " .. path .. ": " .. (r.stderr or ""), 2) end
  return r.stdout
end

--- The webhooks recorded so far, in arrival order: a list of
-- {name, method, query, headers (lower-cased names), body, status}.
function Server:hooks()
  return require("orch.json").decode(self:fetch("/hooks"))
end

--- Forget the recorded webhooks and the /flaky counters.
function Server:reset()
  self:fetch("/hooks-reset")
  self:fetch("/flaky-reset")
end

--- Stop the server (SIGTERM, SIGKILL after 3 s) and remove its files; idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  sys.kill(self.pid)
  local deadline = sys.monotonic() + 3
  while alive(self.pid) and sys.monotonic() < deadline do sys.sleep(0.02) end
  if alive(self.pid) then sys.kill(self.pid, 9) end
  sys.rmtree(self.dir)
end

--- Start tests/httpd.py in the background on a free loopback port; raises
-- when it does not come up within 10 s. It exits by itself when this orch
-- process does (or after 15 minutes), but call srv:stop() when done.
-- opts: tls = {cert=, key=} (HTTPS; see H.tls_cert), parent = pid to watch
-- (default: this orch), log = a file for its stdout/stderr (turns on --verbose).
-- Returns srv: srv.port, srv.base ("http://127.0.0.1:PORT" or https), srv.pid,
-- srv:url(path), srv:hooks(), srv:reset(), srv:stop().
function H.httpd(opts)
  opts = opts or {}
  local script = sys.realpath("tests/httpd.py")
  if not script then error("the test HTTP server did not start: no tests/httpd.py (run from the project root)", 2) end
  local dir = H.tmpdir()
  local portfile, errfile = dir .. "/port", dir .. "/stderr"
  local cmd = { "python3", shq(script), "--port-file", shq(portfile),
                "--parent", tostring(math.tointeger(opts.parent or sys.getpid())) }
  if opts.tls then
    cmd[#cmd + 1] = "--tls " .. shq(assert(opts.tls.cert, "opts.tls.cert")) .. " " .. shq(assert(opts.tls.key, "opts.tls.key"))
    if opts.client_ca then cmd[#cmd + 1] = "--client-ca " .. shq(opts.client_ca) end
  end
  if opts.log then
    cmd[#cmd + 1] = "--verbose > " .. shq(opts.log) .. " 2>&1"
    errfile = opts.log
  else
    cmd[#cmd + 1] = "> /dev/null 2> " .. shq(errfile)
  end
  local r = sys.spawn { "sh", "-c", table.concat(cmd, " ") .. " & echo $!", timeout = 30 }
  local pid = r.ok and tonumber(r.stdout:match("%d+"))
  local function fail(why)
    if pid then sys.kill(pid, 9) end
    local err = H.read(errfile) or ""
    sys.rmtree(dir)
    error("the test HTTP server did not start: " .. why .. (err ~= "" and ("\n" .. err) or ""), 3)
  end
  if not pid then fail("sh: " .. (r.stderr or "") .. (r.stdout or "")) end
  local deadline = sys.monotonic() + 10
  local port, realpid
  while true do
    local text = H.read(portfile)
    if text then port, realpid = text:match("^(%d+)\n(%d+)") end
    if port then break end
    if not alive(pid) then fail("python3 " .. script .. " exited") end
    if sys.monotonic() > deadline then fail("no port in " .. portfile .. " after 10 s") end
    sys.sleep(0.05)
  end
  local scheme = opts.tls and "https" or "http"
  return setmetatable({ port = tonumber(port), pid = tonumber(realpid), dir = dir, portfile = portfile,
                        base = scheme .. "://127.0.0.1:" .. port }, Server)
end

--- A self-signed certificate for CN=localhost, IP:127.0.0.1 and DNS:localhost
-- (valid one day), made once per run with openssl: {cert = path, key = path}.
local function make_cert(cn, san)
  local dir = H.tmpdir()
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local argv = { "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=" .. cn }
  if san then argv[#argv + 1] = "-addext"; argv[#argv + 1] = "subjectAltName=" .. san end
  for _, a in ipairs { "-keyout", key, "-out", cert } do argv[#argv + 1] = a end
  argv.timeout = 60
  local r = sys.spawn(argv)
  if not r.ok then error("openssl could not make a test certificate: " .. (r.stderr or ""), 3) end
  return { cert = cert, key = key }
end

function H.tls_cert()
  H._tls_cert = H._tls_cert or make_cert("localhost", "IP:127.0.0.1,DNS:localhost")
  return H._tls_cert
end

--- A test certificate authority and a server certificate it signed for CN=localhost,
-- IP:127.0.0.1 and DNS:localhost (valid one day), as a company CA signs an internal
-- server's: {ca = CA certificate (the bundle a client is given), cert, key}. Each name
-- is a different CA, made once per run with openssl.
function H.test_ca(name)
  name = name or "orch test CA"
  H._test_cas = H._test_cas or {}
  if H._test_cas[name] then return H._test_cas[name] end
  local dir = H.tmpdir()
  local ca, cakey, csr, cert, key, ext = dir .. "/ca.pem", dir .. "/ca.key", dir .. "/server.csr", dir .. "/server.pem", dir .. "/server.key",
    H.write(dir .. "/server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
  for _, argv in ipairs {
    { "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=" .. name,
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", cakey, "-out", ca },
    { "openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr },
    { "openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", cakey, "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", cert },
  } do
    argv.timeout = 60
    local r = sys.spawn(argv)
    if not r.ok then error("openssl could not make the test CA " .. name .. ": " .. (r.stderr or ""), 2) end
  end
  H._test_cas[name] = { ca = ca, cert = cert, key = key }
  return H._test_cas[name]
end

--- A self-signed client certificate (CN=orch-client) for mutual TLS:
-- {cert = path, key = path}; the cert is its own CA (httpd's client_ca).
function H.client_cert()
  H._client_cert = H._client_cert or make_cert("orch-client")
  return H._client_cert
end

--- One of the example project's recipes (recipes/NAME.lua) as a recipe of
-- the project in dir: a link dir/recipes/NAME.lua to it, whose path is
-- returned. A recipe works in its own project (found from its directory,
-- see orch.project), so a spec that runs a shipped recipe against a project
-- of its own links it there.
function H.recipe(name, dir)
  local src = sys.realpath("recipes/" .. name .. ".lua")
  if not src then error("no recipe recipes/" .. name .. ".lua (run from the source root)", 2) end
  assert(sys.mkdir_p(dir .. "/recipes", 493))
  local path = dir .. "/recipes/" .. name .. ".lua"
  if not sys.exists(path) then
    local r = sys.spawn { "ln", "-s", src, path }
    if not r.ok then error("cannot link " .. path .. ": " .. r.stderr, 2) end
  end
  return path
end

-- ---------------------------------------------------------------------------
-- S3-compatible storage: s3rver (npm, .orch/test-tools/s3rver, installed by
-- scripts/install-deps) on a free loopback port, behind tests/s3proxy.py,
-- which checks every request's SigV4 signature with botocore and injects
-- faults on demand. boto3 is the independent client that reads and writes
-- what orch must (srv:boto(code)).

local S3 = {}
S3.__index = S3

local function proxy_call(self, method, path, body)
  local code = string.format([[
import ssl, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode() if sys.argv[2] else None, method=sys.argv[3])
tls = urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=sys.argv[4])) if sys.argv[4] else urllib.request.HTTPSHandler()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), tls)
sys.stdout.write(opener.open(req, timeout=30).read().decode())
]])
  local r = sys.spawn { "python3", "-c", code, self.endpoint .. path, body or "", method, self.ca or "", timeout = 60 }
  if not r.ok then error("the S3 test proxy did not answer " .. path .. ": " .. (r.stderr or ""), 3) end
  return r.stdout
end

--- The requests the proxy saw, in order: {method, path, query, status, faulted, signature}.
function S3:log() return require("orch.json").decode(proxy_call(self, "GET", "/__log")) end
--- Add fault rules (a list of {method, query, path, status, times, delay}).
function S3:faults(rules) proxy_call(self, "POST", "/__faults", require("orch.json").encode(rules)) end
--- With opts.tls: the reasons of the TLS handshakes that failed so far (a list of strings).
function S3:tls_failures() return require("orch.json").decode(proxy_call(self, "GET", "/__tls")) end
--- Forget the log and the rules.
function S3:reset() proxy_call(self, "POST", "/__reset", "{}") end

--- Run Python code with a boto3 client `s3` on s3rver itself (not through the proxy) and the
-- bucket name in `bucket`; returns its stdout (raises when it fails).
function S3:boto(code)
  local prelude = string.format([[
import boto3, json, sys
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=%q, aws_access_key_id="S3RVER", aws_secret_access_key="S3RVER",
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
bucket = %q
]], self.direct, self.bucket)
  local r = sys.spawn { "python3", "-c", prelude .. code, timeout = 120 }
  if not r.ok then error("boto3 failed: " .. (r.stderr or "") .. (r.stdout or ""), 2) end
  return r.stdout
end

--- The keys in the bucket (boto3's list_objects_v2), sorted.
function S3:keys(prefix)
  local out = self:boto(string.format([[
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=%q):
    keys += [o["Key"] for o in page.get("Contents", [])]
print(json.dumps(sorted(keys)))
]], prefix or ""))
  return require("orch.json").decode(out)
end

--- The environment variables that point orch at the proxy (merged with extra).
function S3:env(extra)
  local e = { AWS_ENDPOINT_URL = self.endpoint, AWS_ACCESS_KEY_ID = "S3RVER", AWS_SECRET_ACCESS_KEY = self.secret,
              AWS_REGION = "us-east-1", ORCH_S3_BACKOFF = "0.05", ORCH_SPOOL_DIR = self.dir }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

function S3:stop()
  if self.stopped then return end
  self.stopped = true
  for _, pid in ipairs { self.proxy_pid, self.s3rver_pid } do
    if pid then sys.kill(pid) end
  end
  sys.sleep(0.1)
  for _, pid in ipairs { self.proxy_pid, self.s3rver_pid } do
    if pid and alive(pid) then sys.kill(pid, 9) end
  end
end

--- Start s3rver with one bucket (opts.bucket, default "orch") and the proxy in front of it;
-- both exit when this orch process does. opts.tls = H.test_ca(): the proxy serves HTTPS with
-- that CA's server certificate (srv.ca is the CA bundle). Returns srv: srv.endpoint (the proxy:
-- what orch is given), srv.direct (s3rver itself), srv.bucket, srv.secret, srv.dir (its data and spool),
-- srv:env(), srv:log(), srv:faults(), srv:reset(), srv:boto(code), srv:keys(prefix), srv:stop().
function H.s3(opts)
  opts = opts or {}
  local bin = sys.realpath(".orch/test-tools/s3rver/node_modules/.bin/s3rver")
  if not bin then error("s3rver is not installed: run scripts/install-deps (it runs tests/tools/install-s3rver)", 2) end
  local dir = H.tmpdir()
  local bucket = opts.bucket or "orch"
  assert(sys.mkdir_p(dir .. "/data", 448))
  local me = math.tointeger(sys.getpid())
  -- a watchdog ends the server when this orch process is gone, whatever happens to the spec
  local function background(cmd, out)
    local script = string.format("(%s > %s 2>&1 & pid=$!; echo $pid > %s.pid; while kill -0 %d 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; kill $pid 2>/dev/null) > /dev/null 2>&1 &",
      cmd, shq(out), shq(out), me)
    local r = sys.spawn { "sh", "-c", script, timeout = 30 }
    if not r.ok then error("could not start " .. cmd .. ": " .. (r.stderr or ""), 3) end
  end
  local function wait_for(what, file, pattern, pidfile)
    local deadline = sys.monotonic() + 20
    while true do
      local text = H.read(file) or ""
      local v = text:match(pattern)
      local pid = tonumber((H.read(pidfile) or ""):match("%d+"))
      if v and pid then return v, pid end
      if sys.monotonic() > deadline then error(what .. " did not start within 20 s:\n" .. text, 3) end
      sys.sleep(0.05)
    end
  end
  background(string.format("exec %s -d %s -a 127.0.0.1 -p 0 --configure-bucket %s", shq(bin), shq(dir .. "/data"), shq(bucket)), dir .. "/s3rver.log")
  local sport, spid = wait_for("s3rver", dir .. "/s3rver.log", "listening on 127%.0%.0%.1:(%d+)", dir .. "/s3rver.log.pid")
  local srv = setmetatable({ dir = dir, bucket = bucket, secret = "orch-test-secret-4f9a", s3rver_pid = spid,
    direct = "http://127.0.0.1:" .. sport }, S3)
  local script = sys.realpath("tests/s3proxy.py")
  local tls = opts.tls and string.format(" --tls %s %s", shq(opts.tls.cert), shq(opts.tls.key)) or ""
  background(string.format("exec python3 %s --upstream %s --secret orch-test-secret-4f9a --port-file %s --parent %d%s", shq(script), srv.direct,
    shq(dir .. "/proxy.port"), me, tls), dir .. "/proxy.log")
  local ok, pport, ppid = pcall(wait_for, "the S3 test proxy", dir .. "/proxy.port", "^(%d+)\n", dir .. "/proxy.log.pid")
  if not ok then srv:stop() error(pport .. (H.read(dir .. "/proxy.log") or ""), 2) end
  srv.proxy_pid = ppid
  srv.endpoint = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. pport
  srv.ca = opts.tls and opts.tls.ca
  return srv
end

return H
