-- The orch binary as a user meets it: --version, --help, recipes, errors, exit codes.
local H = require "helper"
local sys = require "orch.sys"

describe("orch host", function()
  local dir
  setup(function() dir = H.tmpdir() end)
  teardown(function() sys.rmtree(dir) end)

  it("answers --version with its version", function()
    local r = H.orch { "--version" }
    assert.is_true(r.ok)
    assert.matches("^orch %d+%.%d+%.%d+", r.stdout)
  end)

  it("answers --help with the commands and exit codes", function()
    local r = H.orch { "--help" }
    assert.is_true(r.ok)
    assert.matches("usage: orch", r.stdout)
    assert.matches("exit codes", r.stdout)
  end)

  it("runs a recipe with arg set as the lua interpreter sets it", function()
    local f = H.write(dir .. "/args.lua", "print(arg[0], arg[1], arg[2], select('#', ...))\n")
    local r = H.orch { f, "one", "two" }
    assert.is_true(r.ok)
    assert.equals(f .. "\tone\ttwo\t2\n", r.stdout)
  end)

  it("returns the recipe's integer result as the exit code", function()
    local f = H.write(dir .. "/code.lua", "return 7\n")
    assert.equals(7, H.orch({ f }).code)
  end)

  it("reports a missing recipe as a usage error (exit 2)", function()
    local r = H.orch { dir .. "/nope.lua" }
    assert.equals(2, r.code)
    assert.matches("cannot open recipe '.-nope%.lua': no such file", r.stderr)
  end)

  it("reports a recipe that does not parse with file and line (exit 1)", function()
    local f = H.write(dir .. "/bad.lua", "local a = 1\nlocal b = = 2\n")
    local r = H.orch { f }
    assert.equals(1, r.code)
    assert.matches("recipe does not parse: .-bad%.lua:2:", r.stderr)
  end)

  it("names the recipe line of a runtime error raised deep in a module", function()
    local f = H.write(dir .. "/deep.lua", "local db = require 'orch.db'\n\nlocal c = db.connect(42)\n")
    local r = H.orch { f }
    assert.equals(1, r.code)
    assert.matches("deep%.lua:3: bad argument #1 to 'connect'", r.stderr)
  end)

  it("names the recipe line for an error raised inside orch's Lua library", function()
    local f = H.write(dir .. "/lib.lua", "local args = require 'orch.args'\nargs.spec({ 'nonsense' })\n")
    local r = H.orch { f }
    assert.equals(1, r.code)
    assert.matches("lib%.lua:2: ", r.stderr)
    assert.matches("unknown common option nonsense", r.stderr)
  end)

  it("catches a typo'd global at the line that reads it", function()
    local f = H.write(dir .. "/typo.lua", "local value = 1\nprint(valeu)\n")
    local r = H.orch { f }
    assert.equals(1, r.code)
    assert.matches("typo%.lua:2: undefined global 'valeu'", r.stderr)
  end)

  it("prints a traceback only with --verbose", function()
    local f = H.write(dir .. "/boom.lua", "local function f() error('boom') end\nf()\n")
    local quiet = H.orch { f }
    assert.not_matches("stack traceback", quiet.stderr)
    local loud = H.orch { "--verbose", f }
    assert.matches("stack traceback", loud.stderr)
    assert.equals(1, loud.code)
  end)

  it("rejects an unknown command with exit code 2", function()
    local r = H.orch { "frobnicate" }
    assert.equals(2, r.code)
    assert.matches("unknown command 'frobnicate'", r.stderr)
  end)

  it("exits 130 on SIGINT and runs __close handlers", function()
    local marker = dir .. "/closed"
    local f = H.write(dir .. "/sleepy.lua", string.format([[
local sys = require 'orch.sys'
local guard <close> = setmetatable({}, { __close = function()
  local fh = io.open(%q, 'w'); fh:write('closed'); fh:close() end })
io.stdout:write('ready\n'); io.stdout:flush()
while true do sys.sleep(0.05) end
]], marker))
    -- run orch in the background through sh, send SIGINT once it is ready
    local script = string.format(
      "rm -f %s/out %s/err; %s %s > %s/out 2> %s/err & pid=$!; seen=no; for i in $(seq 600); do grep -q ready %s/out 2>/dev/null && seen=yes && break; sleep 0.05; done; kill -INT $pid; wait $pid; echo $? ready=$seen",
      dir, dir, H.orch_bin, f, dir, dir, dir)
    local r = sys.spawn { "sh", "-c", script, timeout = 60 }
    assert.matches("ready=yes", r.stdout, 1, true)
    assert.equals("130", r.stdout:match("%d+"))
    assert.equals("closed", H.read(marker))
    assert.matches("interrupted", H.read(dir .. "/err"))
  end)

  -- GNU timeout signals its child and then its process group: one interrupt
  -- arrives twice. The echo must not kill orch while it writes its report; a
  -- second Ctrl-C a moment later still does.
  it("a SIGINT repeated within a moment is the same interrupt; a later second one kills at once", function()
    local f = H.write(dir .. "/reporting.lua", [[
local sys = require 'orch.sys'
io.stdout:setvbuf('line')
-- 'ready' inside the pcall: the interrupt may land before the sleep starts
local ok = pcall(function() print('ready') sys.sleep(30) end)
sys.clear_interrupt()
print('caught', ok)
local t = sys.monotonic()
while sys.monotonic() - t < tonumber(...) do end   -- the "report": busy, no waits to cut short
print('report written')
]])
    -- report: how long the busy report takes; gap: between the two SIGINTs
    local function run(report, gap)
      local script = string.format(
        -- (the last run's out, which says ready too, is removed first: the background shell may
        -- truncate it only after the loop has looked)
        "rm -f %s/out %s/err; %s %s %s > %s/out 2> %s/err & pid=$!; seen=no; for i in $(seq 600); do grep -q ready %s/out 2>/dev/null && seen=yes && break; sleep 0.05; done; " ..
        "kill -INT $pid; sleep %s; kill -INT $pid 2>/dev/null; wait $pid; echo $? ready=$seen",
        dir, dir, H.orch_bin, f, report, dir, dir, dir, gap)
      local r = sys.spawn { "sh", "-c", script, timeout = 60 }
      assert.matches("ready=yes", r.stdout, 1, true)
      return r.stdout:match("%d+"), H.read(dir .. "/out")
    end
    local code, out = run(1.5, "0.02")
    assert.equals("0", code, out)
    assert.matches("caught\tfalse", out)
    assert.matches("report written", out)
    -- the second SIGINT 1.5 s after the first: past the 0.5 s window even when orch took the
    -- first late, and within a report long enough for any load (it is killed well before)
    code, out = run(20, "1.5")
    assert.equals("130", code, out)
    assert.matches("caught\tfalse", out)
    assert.is_nil(out:find("report written", 1, true))
  end)

  it("works when the binary is copied alone to another directory", function()
    local copy = dir .. "/orch-copy"
    assert.is_true(sys.spawn({ "cp", H.orch_bin, copy }).ok)
    local f = H.write(dir .. "/uses_lib.lua", "print(require('orch.args') ~= nil, require('orch').version)\n")
    local r = sys.spawn { copy, f, cwd = "/", env = { ORCH_LUA_PATH = "" } }
    assert.is_true(r.ok, r.stderr)
    assert.matches("^true\t%d", r.stdout)
  end)
end)
