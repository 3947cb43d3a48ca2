-- Benchmark (not a test): orch lint against squawk (npm squawk-cli 2.66.0,
-- installed by scripts/install-deps into .orch/test-tools/squawk) on the
-- corpus tests/lint/<rule>/{risky,safe}_N.sql: one directory per squawk rule
-- (orch-* for what only orch checks), cases written for orch after squawk's
-- documented rule examples. A first line "-- pg: N" sets the target server
-- for both tools (default 15).
--
--   build/orch tests/bench/lint_compare.lua [--verbose] [--squawk PATH] [--root DIR]
--
-- --root DIR reads another corpus of the same layout (DIR/<rule>/{risky,safe}_N.sql),
-- such as one made from squawk's own rule tests outside the repository.
--
-- Prints, per tool: risky cases caught and safe cases flagged, counted two
-- ways: "rule" counts only findings of the rule(s) that answer the case's
-- squawk rule (tests/lint/answers.lua); "any" counts every lock/safety finding
-- (style rules count only in the style cases; squawk's timeout, robustness,
-- text-field and naming rules never: orch sets lock_timeout itself). squawk
-- runs twice: as it comes, and with --assume-in-transaction (how orch runs a
-- migration file). With --verbose, every case a tool gets wrong.
local sys = require "orch.sys"
local json = require "orch.json"
local lint = require "orch.lint"

local argv = { ... }
local verbose, squawk = false, ".orch/test-tools/squawk/node_modules/.bin/squawk"
local root = "tests/lint"
local i = 1
while argv[i] do
  if argv[i] == "--verbose" then verbose = true
  elseif argv[i] == "--squawk" then i = i + 1; squawk = argv[i]
  elseif argv[i] == "--root" then i = i + 1; root = argv[i]
  else error("unknown argument " .. argv[i] .. " (usage: lint_compare.lua [--verbose] [--squawk PATH] [--root DIR])", 0) end
  i = i + 1
end
if not root or not sys.exists(root) then error("no corpus directory " .. tostring(root) .. " (--root DIR: DIR/<rule>/{risky,safe}_N.sql)", 0) end

-- corpus directory -> the orch rules that answer it, orch's style rules
local answers = dofile("tests/lint/answers.lua")
local map, style_orch, style_case = answers.map, answers.style, answers.style_case
-- squawk's answer to orch's own cases, where it has one
-- (and squawk 2.66's own name for prefer-timestamptz)
local squawk_for = { ["orch-table-rewrite"] = { "prefer-repack" }, ["prefer-timestamptz"] = { "prefer-timestamptz", "prefer-timestamp-tz" },
  ["prefer-big-int"] = { "prefer-bigint-over-int", "prefer-bigint-over-smallint" } }
local style_squawk = { ["prefer-bigint-over-int"] = true, ["prefer-bigint-over-smallint"] = true, ["prefer-identity"] = true,
  ["prefer-timestamptz"] = true, ["ban-char-field"] = true }
local never_squawk = { ["require-lock-timeout"] = true, ["require-statement-timeout"] = true, ["require-timeout-settings"] = true,
  ["prefer-robust-stmts"] = true, ["prefer-text-field"] = true, ["identifier-too-long"] = true, ["require-table-schema"] = true,
  ["require-enum-value-ordering"] = true }

local function set(list) local s = {} for _, v in ipairs(list or {}) do s[v] = true end return s end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local have_squawk = sys.exists(squawk)
if not have_squawk then
  io.stderr:write("squawk not found at " .. squawk .. ": run scripts/install-deps (or tests/tools/install-squawk); orch only\n")
end

local function orch_ids(path, text, pg)
  local ids = {}
  for _, f in ipairs(lint.check_sql(text, path, { pg_version = pg })) do ids[#ids + 1] = f.rule end
  return ids
end

local function squawk_ids(path, pg, assume)
  local cmd = { squawk, "--reporter", "json", "--pg-version", tostring(pg) .. ".0", path, timeout = 60 }
  if assume then table.insert(cmd, 2, "--assume-in-transaction") end
  local r = sys.spawn(cmd)
  local ok, out = pcall(json.decode, r.stdout ~= "" and r.stdout or "[]")
  if not ok then error("squawk output is not JSON for " .. path .. ": " .. r.stdout .. r.stderr, 0) end
  local ids = {}
  for _, v in ipairs(out) do ids[#ids + 1] = v.rule_name end
  return ids
end

local tools = { "orch" }
if have_squawk then tools[#tools + 1] = "squawk"; tools[#tools + 1] = "squawk --assume-in-transaction" end
local totals = {}
local function zero() return { risky = 0, caught = 0, caught_any = 0, safe = 0, flagged = 0, flagged_any = 0, wrong = {} } end
local sq_totals = {}
for _, t in ipairs(tools) do totals[t] = zero(); sq_totals[t] = zero() end

local rules = sys.listdir(root)
table.sort(rules)
for _, rule in ipairs(rules) do
  local dir = root .. "/" .. rule
  local st = sys.stat(dir)
  if st and st.type == "directory" then
    local names = sys.listdir(dir)
    table.sort(names)
    for _, name in ipairs(names) do
      local kind = name:match("^(%a+)_%d+%.sql$") or name:match("^(%a+)_sq_%d+%.sql$")
      local sq = name:match("_sq_") ~= nil
      if kind == "risky" or kind == "safe" then
        local path = dir .. "/" .. name
        local text = read(path)
        local pg = tonumber(text:match("^%-%- pg: (%d+)")) or 15
        for _, t in ipairs(tools) do
          local ids, answer, counts
          if t == "orch" then
            ids, answer = orch_ids(path, text, pg), set(map[rule])
            counts = function(id) return not style_orch[id] or style_case[rule] end
          else
            ids = squawk_ids(path, pg, t ~= "squawk")
            answer = set(squawk_for[rule] or (rule:match("^orch%-") and {} or { rule }))
            counts = function(id) return not never_squawk[id] and (not style_squawk[id] or style_case[rule]) end
          end
          local hit, any = false, false
          for _, id in ipairs(ids) do
            if answer[id] then hit = true end
            if counts(id) then any = true end
          end
          for _, T in ipairs(sq and { totals[t], sq_totals[t] } or { totals[t] }) do
          if kind == "risky" then
            T.risky = T.risky + 1
            if hit then T.caught = T.caught + 1 end
            if hit or any then T.caught_any = T.caught_any + 1 end
            if not hit then T.wrong[#T.wrong + 1] = "missed  " .. path .. "  (" .. table.concat(ids, ",") .. ")" end
          else
            T.safe = T.safe + 1
            if hit then T.flagged = T.flagged + 1 end
            if any then T.flagged_any = T.flagged_any + 1 end
            if any then T.wrong[#T.wrong + 1] = "flagged " .. path .. "  (" .. table.concat(ids, ",") .. ")" end
          end
          end
        end
      end
    end
  end
end

local function report(title, tt)
  print(title)
  print(string.format("  %-32s %18s %18s %18s %18s", "tool", "risky caught/rule", "risky caught/any", "safe flagged/rule", "safe flagged/any"))
  for _, t in ipairs(tools) do
    local T = tt[t]
    print(string.format("  %-32s %18s %18s %18s %18s", t, T.caught .. " of " .. T.risky, T.caught_any .. " of " .. T.risky,
      T.flagged .. " of " .. T.safe, T.flagged_any .. " of " .. T.safe))
  end
end
report("all cases of " .. root, totals)
report("of which written as squawk's examples are (*_sq_*: no orch directive, BEGIN/COMMIT kept)", sq_totals)
if verbose then
  for _, t in ipairs(tools) do
    print("\n" .. t .. ":")
    local seen = {}
    for _, w in ipairs(totals[t].wrong) do if not seen[w] then seen[w] = true; print("  " .. w) end end
  end
end
