--- orch.progress: the one-line progress bar of the long steps (backup,
-- restore, verify) on a terminal: a bar of the estimated share of the work
-- done (which moves within a table, not only between tables), items done of
-- all, bytes so far, rate, ETA, and what is being worked on. Every call is a
-- no-op when standard error is not a terminal, or with quiet.
--
--   local bar = progress.new { unit = "tables", quiet = opts.quiet }
--   bar:update { done = 2, total = 5, bytes = n, fraction = 0.4, what = "public.events" }
--   bar:finish()
local sys = require "orch.sys"

local P = {}
P.__index = P

--- A bar; opts.unit names the items ("tables"), opts.quiet silences it,
-- opts.stream (default io.stderr) and opts.tty (default: is it a terminal)
-- are for tests.
function P.new(opts)
  opts = opts or {}
  local tty = opts.tty
  if tty == nil then tty = sys.isatty(2) and os.getenv("TERM") ~= "dumb" end
  return setmetatable({ unit = opts.unit or "items", t0 = sys.monotonic(), active = tty and not opts.quiet,
    out = opts.stream or io.stderr, width = 24, last = -1 }, P)
end

local function mib(n) return n / 1048576 end

--- Show ev: done and total items, bytes (processed so far), fraction (0..1
-- of the whole estimated work), what (text, e.g. the tables in progress),
-- phase (a word before the counts, e.g. "indexes").
function P:update(ev)
  if not self.active then return end
  local now = sys.monotonic()
  if now - self.last < 0.1 and not ev.force then return end
  self.last = now
  local el = now - self.t0
  local bytes = ev.bytes or 0
  local frac = math.max(0, math.min(ev.fraction or 0, 1))
  -- after a second and 1% of the work, the time so far scaled to the whole
  local eta = frac >= 0.01 and el >= 1 and (el / frac - el) or nil
  local filled = math.floor(frac * self.width + 0.5)
  local what = ev.what or ""
  if #what > 48 then what = what:sub(1, 45) .. "..." end
  self.out:write(string.format("\r\27[K[%s%s] %3d%%  %s%d/%d %s  %.1f MiB  %.1f MiB/s  %s  %s",
    string.rep("#", filled), string.rep(".", self.width - filled), math.floor(frac * 100),
    ev.phase and (ev.phase .. " ") or "", math.floor(ev.done or 0), math.floor(ev.total or 0), ev.unit or self.unit, mib(bytes), mib(bytes) / math.max(el, 0.001),
    eta and "ETA " .. P.duration(eta) or "ETA --",
    what))
  self.out:flush()
end

--- Seconds as the bar shows them: 42s, 3m07s, 2h05m.
function P.duration(seconds)
  local t = math.floor(seconds + 0.5)
  if t >= 3600 then return string.format("%dh%02dm", t // 3600, t % 3600 // 60) end
  if t >= 60 then return string.format("%dm%02ds", t // 60, t % 60) end
  return string.format("%ds", t)
end

--- Clear the line (the command's own summary follows).
function P:finish()
  if self.active then self.out:write("\r\27[K"); self.out:flush() end
end

return P
