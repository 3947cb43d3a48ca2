--- orch.lint: risky migration statements, found before they reach a
-- database. Rules are Lua; a team adds its own with lint.add_rule{} or an
-- orch.lint.lua file at the project root returning a list of rules.
--
-- A rule: { id = "OR008", name = "index-not-concurrent", severity =
-- "error"|"warning"|"info", hint = "...", check = function(stmt, ctx)
-- return message-or-nil end }. stmt: { sql, norm (upper-cased, comments
-- removed, spaces collapsed), line }; ctx: { file, created = set of tables
-- created earlier in the same file, transactional = bool }.
-- Suppress one statement with a comment in it: -- orch:lint-ignore OR008
-- (or just -- orch:lint-ignore for every rule).
local files = require "orch.migrate.files"

local lint = { rules = {} }

local function tname(s)
  return s and (s:gsub('"', ""):lower():match("([^.]+)$")) or nil
end

-- The table a statement works on, when it is ALTER TABLE / CREATE INDEX ON.
local function altered_table(norm)
  local t = norm:match("^ALTER TABLE IF EXISTS ONLY ([%w_.\"]+)") or norm:match("^ALTER TABLE IF EXISTS ([%w_.\"]+)")
    or norm:match("^ALTER TABLE ONLY ([%w_.\"]+)") or norm:match("^ALTER TABLE ([%w_.\"]+)")
  return tname(t)
end

local function is_existing(ctx, t)
  return t and not ctx.created[t]
end

--- Register a rule (teams call this from orch.lint.lua or a recipe).
function lint.add_rule(rule)
  assert(type(rule) == "table" and rule.id and type(rule.check) == "function", "rule needs id and check")
  rule.severity = rule.severity or "warning"
  for i, r in ipairs(lint.rules) do
    if r.id == rule.id then lint.rules[i] = rule return rule end
  end
  lint.rules[#lint.rules + 1] = rule
  return rule
end

local add = lint.add_rule

add { id = "OR001", name = "drop-table", severity = "warning",
  hint = "make sure no running code reads the table and that a verified backup exists; consider renaming it first and dropping it in a later release",
  check = function(s) if s.norm:match("^DROP TABLE") then return "drops a table and its data" end end }

add { id = "OR002", name = "drop-column", severity = "warning",
  hint = "deploy code that no longer uses the column first (expand/contract), then drop it in a later migration",
  check = function(s) if s.norm:match("^ALTER TABLE .- DROP COLUMN") or s.norm:match("^ALTER TABLE .- DROP [%w_\"]+ ?[;,]?$") and not s.norm:match("CONSTRAINT") then return "drops a column and its data" end end }

add { id = "OR003", name = "rename-column", severity = "error",
  hint = "running code still uses the old name: add the new column, write both, backfill, switch reads, then drop the old one",
  check = function(s) if s.norm:match("^ALTER TABLE .- RENAME COLUMN") or s.norm:match("^ALTER TABLE .- RENAME [%w_\"]+ TO") then return "renames a column that running code may still use" end end }

add { id = "OR004", name = "rename-table", severity = "error",
  hint = "create the new table (or a view with the new name) and move readers over before dropping the old name",
  check = function(s) if s.norm:match("^ALTER TABLE [%w_.\"]+ RENAME TO") then return "renames a table that running code may still use" end end }

add { id = "OR005", name = "change-column-type", severity = "warning",
  hint = "most type changes rewrite the table under an ACCESS EXCLUSIVE lock: add a new column, backfill it in batches (a Lua migration with ctx.batch), then switch",
  check = function(s, ctx)
    if s.norm:match("^ALTER TABLE .- ALTER COLUMN [%w_\"]+ TYPE ") or s.norm:match("^ALTER TABLE .- ALTER COLUMN [%w_\"]+ SET DATA TYPE ")
      or s.norm:match("^ALTER TABLE .- ALTER [%w_\"]+ TYPE ") then
      if is_existing(ctx, altered_table(s.norm)) then return "changes a column's type on an existing table" end
    end
  end }

add { id = "OR006", name = "not-null-without-default", severity = "error",
  hint = "adding a NOT NULL column without a DEFAULT fails as soon as the table has rows: add it with a DEFAULT, or nullable then backfill and add the constraint",
  check = function(s, ctx)
    local n = s.norm
    if n:match("^ALTER TABLE .- ADD ") and n:match(" NOT NULL") and not n:match(" DEFAULT ") and not n:match("ADD CONSTRAINT")
      and not n:match("GENERATED") and is_existing(ctx, altered_table(n)) then
      return "adds a NOT NULL column without a DEFAULT to an existing table"
    end
  end }

add { id = "OR007", name = "set-not-null", severity = "warning",
  hint = "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE: first ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later migration, then SET NOT NULL (no scan since PostgreSQL 12)",
  check = function(s, ctx)
    if s.norm:match("^ALTER TABLE .- ALTER COLUMN [%w_\"]+ SET NOT NULL") and is_existing(ctx, altered_table(s.norm)) then
      return "sets NOT NULL on an existing column (full table scan under an exclusive lock)"
    end
  end }

add { id = "OR008", name = "index-not-concurrent", severity = "warning",
  hint = "CREATE INDEX blocks writes for the whole build: use CREATE INDEX CONCURRENTLY in a file that starts with '-- orch: transaction=false'",
  check = function(s, ctx)
    local n = s.norm
    if (n:match("^CREATE INDEX") or n:match("^CREATE UNIQUE INDEX")) and not n:match("CONCURRENTLY") then
      local t = tname(n:match(" ON ONLY ([%w_.\"]+)") or n:match(" ON ([%w_.\"]+)"))
      if is_existing(ctx, t) then return "builds an index on an existing table without CONCURRENTLY" end
    end
  end }

add { id = "OR009", name = "foreign-key-not-valid", severity = "warning",
  hint = "validating a new foreign key scans the table under a lock on both tables: add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
  check = function(s, ctx)
    local n = s.norm
    if n:match("^ALTER TABLE .- ADD .-FOREIGN KEY") and not n:match("NOT VALID") and is_existing(ctx, altered_table(n)) then
      return "adds a foreign key to an existing table without NOT VALID"
    end
  end }

add { id = "OR010", name = "check-not-valid", severity = "warning",
  hint = "a new CHECK scans the whole table under ACCESS EXCLUSIVE: add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
  check = function(s, ctx)
    local n = s.norm
    if n:match("^ALTER TABLE .- ADD CONSTRAINT [%w_\"]+ CHECK") and not n:match("NOT VALID") and is_existing(ctx, altered_table(n)) then
      return "adds a CHECK constraint to an existing table without NOT VALID"
    end
  end }

add { id = "OR011", name = "unique-constraint-locks", severity = "warning",
  hint = "build the index first with CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX",
  check = function(s, ctx)
    local n = s.norm
    if n:match("^ALTER TABLE .- ADD CONSTRAINT [%w_\"]+ UNIQUE") or n:match("^ALTER TABLE .- ADD CONSTRAINT [%w_\"]+ PRIMARY KEY")
      or n:match("^ALTER TABLE .- ADD PRIMARY KEY") or n:match("^ALTER TABLE .- ADD UNIQUE") then
      if not n:match("USING INDEX") and is_existing(ctx, altered_table(n)) then
        return "adds a UNIQUE/PRIMARY KEY constraint to an existing table (index built under an exclusive lock)"
      end
    end
  end }

add { id = "OR012", name = "volatile-default", severity = "warning",
  hint = "a volatile DEFAULT (random(), clock_timestamp(), gen_random_uuid()) rewrites the whole table: add the column without it, set the default, backfill in batches",
  check = function(s, ctx)
    local n = s.norm
    if n:match("^ALTER TABLE .- ADD ") and (n:match("DEFAULT [%w_.]*RANDOM%(") or n:match("DEFAULT [%w_.]*CLOCK_TIMESTAMP%(")
      or n:match("DEFAULT [%w_.]*GEN_RANDOM_UUID%(") or n:match("DEFAULT [%w_.]*UUID_GENERATE")) and is_existing(ctx, altered_table(n)) then
      return "adds a column with a volatile DEFAULT to an existing table (table rewrite)"
    end
  end }

add { id = "OR013", name = "lock-table", severity = "warning",
  hint = "an explicit LOCK TABLE blocks readers or writers until the migration commits; keep the migration short or avoid the lock",
  check = function(s) if s.norm:match("^LOCK ") then return "takes an explicit table lock" end end }

add { id = "OR014", name = "truncate", severity = "warning",
  hint = "TRUNCATE removes every row; make sure this is meant for every environment (use '-- orch: env=dev' for dev-only resets)",
  check = function(s) if s.norm:match("^TRUNCATE") then return "truncates a table" end end }

add { id = "OR015", name = "table-rewrite", severity = "warning",
  hint = "VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE; schedule them outside deployments",
  check = function(s) if s.norm:match("^VACUUM FULL") or s.norm:match("^VACUUM %(FULL") or s.norm:match("^CLUSTER") then return "rewrites a table under an exclusive lock" end end }

add { id = "OR016", name = "unbatched-update", severity = "warning",
  hint = "one UPDATE/DELETE over a whole table holds row locks for the whole run and bloats it: write a Lua migration with ctx.batch{...}",
  check = function(s, ctx)
    local n = s.norm
    local t = tname(n:match("^UPDATE ONLY ([%w_.\"]+)") or n:match("^UPDATE ([%w_.\"]+)") or n:match("^DELETE FROM ([%w_.\"]+)"))
    if t and not n:match(" WHERE ") and is_existing(ctx, t) then return "updates or deletes every row of an existing table in one statement" end
  end }

add { id = "OR017", name = "drop-index-not-concurrent", severity = "info",
  hint = "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table; DROP INDEX CONCURRENTLY (in a transaction=false file) does not",
  check = function(s) if s.norm:match("^DROP INDEX") and not s.norm:match("CONCURRENTLY") then return "drops an index without CONCURRENTLY" end end }

add { id = "OR018", name = "refresh-not-concurrent", severity = "info",
  hint = "REFRESH MATERIALIZED VIEW blocks readers; with a unique index use REFRESH MATERIALIZED VIEW CONCURRENTLY",
  check = function(s) if s.norm:match("^REFRESH MATERIALIZED VIEW") and not s.norm:match("CONCURRENTLY") then return "refreshes a materialized view without CONCURRENTLY" end end }

--- Lint one SQL text. Returns a list of findings
-- { rule, name, severity, file, line, message, hint, statement }.
function lint.check_sql(text, file, opts)
  opts = opts or {}
  local findings = {}
  local ctx = { file = file, created = {}, transactional = opts.transactional ~= false }
  for _, st in ipairs(files.split_sql(text)) do
    local norm = files.normalize(st.sql)
    local s = { sql = st.sql, norm = norm, line = st.line }
    local ignore = st.sql:match("orch:lint%-ignore([^\n]*)")
    for _, rule in ipairs(lint.rules) do
      local skip = ignore and (ignore:match("^%s*$") or ignore:find(rule.id, 1, true) or (rule.name and ignore:find(rule.name, 1, true)))
      if not skip then
        local ok, msg = pcall(rule.check, s, ctx)
        if not ok then msg = "rule failed: " .. tostring(msg) end
        if msg then
          findings[#findings + 1] = { rule = rule.id, name = rule.name, severity = rule.severity, file = file,
            line = st.line, message = msg, hint = rule.hint, statement = norm:sub(1, 120) }
        end
      end
    end
    local created = norm:match("^CREATE TABLE IF NOT EXISTS ([%w_.\"]+)") or norm:match("^CREATE TABLE ([%w_.\"]+)")
      or norm:match("^CREATE UNLOGGED TABLE ([%w_.\"]+)") or norm:match("^CREATE MATERIALIZED VIEW ([%w_.\"]+)")
    if created then ctx.created[tname(created)] = true end
  end
  return findings
end

--- Load team rules from a file returning a list of rules (or calling
-- lint.add_rule itself). Missing file: nothing happens.
function lint.load_rules(path)
  local f = io.open(path)
  if not f then return 0 end
  f:close()
  local chunk, err = loadfile(path, "t")
  if not chunk then error("lint rules do not parse: " .. err, 0) end
  local rules = chunk()
  local n = 0
  for _, r in ipairs(type(rules) == "table" and rules or {}) do lint.add_rule(r); n = n + 1 end
  return n
end

--- Lint a project (from orch.migrate.load), or only the given entries.
-- SQL files are linted with placeholders left as written. Returns findings.
function lint.run(project, entries)
  entries = entries or {}
  if #entries == 0 then
    for _, e in ipairs(project.versioned) do entries[#entries + 1] = e end
    for _, e in ipairs(project.repeatable) do entries[#entries + 1] = e end
  end
  local all = {}
  for _, e in ipairs(entries) do
    if e.lang == "sql" and e.text then
      local tx = not (e.directives and e.directives.transaction == false)
      for _, f in ipairs(lint.check_sql(e.text, e.path, { transactional = tx })) do all[#all + 1] = f end
    end
  end
  return all
end

--- Human-readable findings, one block each.
function lint.format(findings)
  local log = require "orch.log"
  local out = {}
  for _, f in ipairs(findings) do
    local sev = log.paint(f.severity == "error" and "error" or f.severity == "warning" and "warn" or "debug", f.severity)
    out[#out + 1] = string.format("%s:%d: %s %s (%s): %s", f.file, f.line, sev, f.rule, f.name or "", f.message)
    out[#out + 1] = "    hint: " .. (f.hint or "")
  end
  return table.concat(out, "\n")
end

return lint
