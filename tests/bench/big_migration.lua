-- Benchmark (not a test): the migration checksum and the statement splitter
-- on one big generated migration, to show both are linear in its size.
--   build/orch tests/bench/big_migration.lua [MB ...]        (default: 4 50)
-- For each size: writes migrations/V1__big.sql in a temporary directory
-- (INSERTs with quoted strings, comments, a dollar-quoted function, a
-- COPY-free mix of lines), then times files.checksum, files.split_sql and
-- migrate.load (what planning a migrate reads), and prints MB/s. With
-- ORCH_BENCH_URL set (a database), also times `orch migrate --dry-run` on it.
local sys = require "orch.sys"
local files = require "orch.migrate.files"
local migrate = require "orch.migrate"

local sizes = { ... }
if #sizes == 0 then sizes = { "4", "50" } end

local function generate(path, mb)
  local f = assert(io.open(path, "wb"))
  local target, written, i = mb * 1048576, 0, 0
  f:write("-- a big data migration\nCREATE TABLE big (id int PRIMARY KEY, name text, note text);\n")
  while written < target do
    i = i + 1
    local chunk
    if i % 500 == 0 then
      chunk = string.format("CREATE FUNCTION f%d() RETURNS int LANGUAGE plpgsql AS $body$\nBEGIN\n  -- not a statement end; \n  RETURN %d;\nEND\n$body$;\n", i, i)
    elseif i % 97 == 0 then
      chunk = string.format("/* block comment %d; with ; inside */\n", i)
    else
      chunk = string.format("INSERT INTO big VALUES (%d, 'name %d; it''s quoted', E'line\\n%d'); -- row %d\n", i, i, i, i)
    end
    f:write(chunk)
    written = written + #chunk
  end
  f:close()
  return i
end

for _, s in ipairs(sizes) do
  local mb = tonumber(s)
  local dir = sys.mkdtemp("/tmp/orch-bench-mig-")
  sys.mkdir_p(dir .. "/migrations")
  local path = dir .. "/migrations/V1__big.sql"
  generate(path, mb)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  local t0 = sys.monotonic()
  local sum = files.checksum(text)
  local t1 = sys.monotonic()
  local stmts = files.split_sql(text)
  local t2 = sys.monotonic()
  local project = migrate.load { dir = dir .. "/migrations" }
  local t3 = sys.monotonic()
  assert(project.versioned[1].checksum == sum)
  print(string.format("%5.1f MB  checksum %7.3fs (%6.1f MB/s)  split %7.3fs (%6.1f MB/s, %d statements)  load %7.3fs",
    #text / 1048576, t1 - t0, #text / 1048576 / math.max(t1 - t0, 1e-6), t2 - t1, #text / 1048576 / math.max(t2 - t1, 1e-6), #stmts, t3 - t2))
  local url = os.getenv("ORCH_BENCH_URL")
  if url then
    local t4 = sys.monotonic()
    local r = sys.spawn { sys.realpath(arg[-1] or "build/orch") or "build/orch", "migrate", "--dry-run", "--dir", dir .. "/migrations", "--db", url, timeout = 3600 }
    print(string.format("          orch migrate --dry-run: %.3fs (exit %s)", sys.monotonic() - t4, tostring(r.code)))
  end
  sys.rmtree(dir)
end
