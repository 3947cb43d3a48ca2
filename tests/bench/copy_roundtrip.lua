-- Streams N rows copy_out -> copy_in between two connections; run under
-- /usr/bin/time -v to see orch's peak memory (it must not grow with N):
--   build/orch tests/bench/copy_roundtrip.lua URL 1000000
local db = require "orch.db"
local sys = require "orch.sys"
local url, n = ...
n = math.tointeger(tonumber(n or "1000000"))
local src <close> = db.connect(url)
local dst <close> = db.connect(url)
src:exec("DROP TABLE IF EXISTS bench_copy_src, bench_copy_dst")
src:exec(string.format("CREATE TABLE bench_copy_src AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, %d) g", n))
src:exec("CREATE TABLE bench_copy_dst (LIKE bench_copy_src)")
local t0 = sys.monotonic()
dst:copy_in_begin("COPY bench_copy_dst FROM STDIN")
local rows = src:copy_out("COPY bench_copy_src TO STDOUT", function(chunk) dst:copy_in_put(chunk) end)
local loaded = dst:copy_in_end()
local dt = sys.monotonic() - t0
print(string.format("rows=%d loaded=%d seconds=%.2f rows/s=%.0f", rows, loaded, dt, rows / dt))
src:exec("DROP TABLE bench_copy_src, bench_copy_dst")
