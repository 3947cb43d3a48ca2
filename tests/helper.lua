--- Shared helpers for the specs. Every spec that needs PostgreSQL gets it
-- from here: the cluster the test run started (ORCH_TEST_PGDIR, see
-- tests/pgcluster.lua). There is no skipping: no cluster = an error.
local sys = require "orch.sys"
local localpg = require "orch.localpg"

local H = {}

H.orch_bin = os.getenv("ORCH_BIN") or "build/orch"
if H.orch_bin:sub(1, 1) ~= "/" then H.orch_bin = sys.realpath(H.orch_bin) or H.orch_bin end

--- The test cluster handle; raises when it is not running.
function H.cluster()
  if H._cluster then return H._cluster end
  local dir = os.getenv("ORCH_TEST_PGDIR") or "build/testpg"
  local pg = localpg.open(dir)
  if not pg.port then
    error("no test cluster in " .. dir .. ": run the tests through ctest (it starts one), or " ..
      "'build/orch tests/pgcluster.lua start " .. dir .. "'", 0)
  end
  H._cluster = pg
  return pg
end

local counter = 0
--- A new, empty database with a unique name; returns its URL and name.
function H.fresh_db(prefix)
  counter = counter + 1
  local name = string.format("%s_%d_%d", prefix or "t", sys.getpid(), counter)
  local pg = H.cluster()
  return pg:create_database(name, { drop = true }), name
end

--- Connect to a database of the test cluster (default: postgres).
function H.connect(dbname)
  return H.cluster():connect(dbname or "postgres")
end

function H.drop_db(name)
  local c <close> = H.connect("postgres")
  c:exec("DROP DATABASE IF EXISTS " .. c:quote_ident(name) .. " WITH (FORCE)")
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

--- Run a stock PostgreSQL client program (pg_dump, pg_restore, psql) from
-- the cluster's bin directory; they are the independent judges in tests.
function H.pgtool(prog, argv, opts)
  opts = opts or {}
  local pg = H.cluster()
  local spec = { localpg.bindir() .. "/" .. prog }
  for _, a in ipairs(argv) do spec[#spec + 1] = a end
  spec.env = { PGHOST = pg.host, PGPORT = tostring(pg.port), PGUSER = pg.user }
  for k, v in pairs(opts.env or {}) do spec.env[k] = v end
  spec.stdin = opts.stdin
  spec.timeout = opts.timeout or 300
  return sys.spawn(spec)
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
-- rows and the state of every sequence.
function H.contents_of(dbname)
  local c <close> = H.connect(dbname)
  local out = {}
  for _, t in ipairs(c:query([[SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND n.nspname !~ '^pg_toast' ORDER BY 1]])) do
    out[t.name] = c:value(string.format("SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), 'empty') FROM %s t", t.name))
  end
  for _, s in ipairs(c:query([[SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' ORDER BY 1]])) do
    local v = c:query(string.format("SELECT last_value, is_called FROM %s", s.name))[1]
    out["seq " .. s.name] = v.last_value .. "/" .. tostring(v.is_called)
  end
  return out
end

--- Write text to a new temporary file; returns its path.
function H.tmpdir()
  return sys.mkdtemp("/tmp/orch-test-")
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

return H
