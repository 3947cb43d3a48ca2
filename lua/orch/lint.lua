--- orch.lint: risky migration statements, found before they reach a
-- database, on PostgreSQL's own parse tree (orch.pgquery, libpg_query:
-- the same parse that orch.migrate.split gives migrate, so statement
-- numbers and lines agree).
--
-- A rule: { id = "OR008", name = "index-not-concurrent", severity =
-- "error"|"warning"|"info", hint = "...", check = function(stmt, ctx)
-- return nil | message | { message, ... } | { {message =, location =}, ... } end }.
-- stmt: { tree = { IndexStmt = {...} } (libpg_query's JSON as Lua tables),
--   kind = "IndexStmt", node = tree[kind], sql (as written, with its leading
--   comments), norm (upper-cased, comments removed, spaces collapsed: the
--   text-based field of older team rules), line, index }.
-- ctx: { file, transactional (the file runs in one transaction),
--   pg_version (the target server's major version), created (set of tables
--   created earlier in the file, or in the release when a release is linted),
--   is_new(relname), line_of(location), not_null_checked(table, column),
--   ... }.
--
-- Turning rules off or changing their severity: per statement a comment in
-- it, -- orch:lint-ignore OR008 (or a rule name; nothing after it: every
-- rule); per file a comment line -- orch:lint-disable OR030, OR031; per
-- project orch.lint.lua (a list of team rules plus optional keys
-- pg_version = 12 and severity = { OR030 = "off", ["prefer-timestamptz"] = "error" }).
local files = require "orch.migrate.files"

-- The target server by default: the grammar's own major (PostgreSQL 15).
local lint = { rules = {}, config = { pg_version = 15, severity = {} } }

-- ================================================================ tree helpers

local function kind_of(node)
  if type(node) ~= "table" then return nil end
  local k = next(node)
  return k, node[k]
end

local function list(t) return type(t) == "table" and t or {} end

-- The words of a qualified name list ({ {String = {sval}}, ... }).
local function names(t)
  local out = {}
  for _, n in ipairs(list(t)) do
    local _, v = kind_of(n)
    if type(v) == "table" and v.sval then out[#out + 1] = v.sval end
  end
  return out
end

local function qualified(t) return table.concat(names(t), ".") end

-- A RangeVar as text, and the key tables are remembered by (the bare name).
local function relname(rv) return rv and rv.relname end
local function reltext(rv)
  if not rv then return "?" end
  return (rv.schemaname and (rv.schemaname .. ".") or "") .. (rv.relname or "?")
end

-- The type of a TypeName: its last name ("int4", "timestamp", "serial").
local function typename(tn)
  local n = names(tn and tn.names)
  return n[#n], #n > 1 and n[1] or nil
end

-- The integer type modifiers of a TypeName: varchar(20) -> { 20 }.
local function typmods(tn)
  local out = {}
  for _, m in ipairs(list(tn and tn.typmods)) do
    local c = m.A_Const
    if c and c.ival then out[#out + 1] = c.ival.ival or 0 end
  end
  return out
end

-- A column's type as lint remembers it: { name, schema, mods, array }.
local function coltype(tn)
  if not tn then return nil end
  local t, schema = typename(tn)
  return { name = t, schema = schema, mods = typmods(tn), array = tn.arrayBounds ~= nil }
end

local function constraints_of(coldef)
  local out = {}
  for _, c in ipairs(list(coldef and coldef.constraints)) do
    if c.Constraint then out[#out + 1] = c.Constraint end
  end
  return out
end

local function has_option(opts, name)
  for _, o in ipairs(list(opts)) do
    if o.DefElem and o.DefElem.defname == name then
      local a = o.DefElem.arg
      -- (CONCURRENTLY false) / (FULL off)
      if a and a.String and (a.String.sval == "false" or a.String.sval == "off") then return false end
      if a and a.Integer and (a.Integer.ival or 0) == 0 then return false end
      if a and a.Boolean and not a.Boolean.boolval then return false end
      return true
    end
  end
  return false
end

-- Functions whose value does not change from row to row: a DEFAULT made of
-- these, constants, casts and operators is evaluated once (no rewrite on 11+).
-- The clock functions take no argument (now(123) is no function orch knows).
local no_arg_funcs = { now = true, transaction_timestamp = true, statement_timestamp = true }
local stable_funcs = {}
for f in ([[now transaction_timestamp statement_timestamp
  lower upper btrim ltrim rtrim trim length concat concat_ws format substr substring replace left right
  coalesce nullif greatest least to_char to_date to_timestamp to_number make_date make_time make_timestamp
  make_timestamptz make_interval date_trunc extract date_part abs round floor ceil ceiling trunc
  jsonb_build_object jsonb_build_array json_build_object json_build_array to_jsonb to_json array_fill
  current_user session_user current_schema current_database inet cidr int4 int8 text numeric
  pi version current_setting md5 sha256 encode decode convert_to convert_from
  array_length cardinality jsonb_typeof to_tsvector]]):gmatch("%S+") do
  stable_funcs[f] = true
end

-- Is expression e one whose value is the same for every row? Returns
-- true, or false and the function that makes it vary.
local function row_constant(e)
  local k, v = kind_of(e)
  if not k then return true end
  if k == "A_Const" or k == "SQLValueFunction" or k == "ParamRef" then return true end
  if k == "FuncCall" then
    local fname = names(v.funcname)
    local f = fname[#fname]
    if not stable_funcs[f] or (no_arg_funcs[f] and #list(v.args) > 0) then return false, qualified(v.funcname) end
    for _, a in ipairs(list(v.args)) do
      local ok, why = row_constant(a)
      if not ok then return false, why end
    end
    return true
  end
  if k == "TypeCast" or k == "CollateClause" or k == "NullTest" or k == "BooleanTest" then return row_constant(v.arg) end
  if k == "A_Expr" then
    local ok, why = row_constant(v.lexpr)
    if not ok then return false, why end
    return row_constant(v.rexpr)
  end
  if k == "BoolExpr" or k == "CoalesceExpr" or k == "MinMaxExpr" or k == "A_ArrayExpr" or k == "RowExpr" then
    for _, a in ipairs(list(v.args or v.elements)) do
      local ok, why = row_constant(a)
      if not ok then return false, why end
    end
    return true
  end
  if k == "CaseExpr" then
    for _, w in ipairs(list(v.args)) do
      local ok, why = row_constant(w.CaseWhen and w.CaseWhen.expr)
      if not ok then return false, why end
      ok, why = row_constant(w.CaseWhen and w.CaseWhen.result)
      if not ok then return false, why end
    end
    return row_constant(v.defresult)
  end
  if k == "ColumnRef" then return true end -- (only names like true/false reach here in a DEFAULT)
  return false, k
end

-- The column a CHECK proves NOT NULL: CHECK (col IS NOT NULL).
local function not_null_column(expr)
  local k, v = kind_of(expr)
  if k == "NullTest" and v.nulltesttype == "IS_NOT_NULL" then
    local ck, cv = kind_of(v.arg)
    if ck == "ColumnRef" then
      local f = names(cv.fields)
      return f[#f]
    end
  end
end

-- The ALTER TABLE commands of a statement (AlterTableCmd nodes).
local function cmds(s)
  if s.kind ~= "AlterTableStmt" then return {} end
  local out = {}
  for _, c in ipairs(list(s.node.cmds)) do
    if c.AlterTableCmd then out[#out + 1] = c.AlterTableCmd end
  end
  return out
end

local function is_table_alter(s)
  return s.kind == "AlterTableStmt" and (s.node.objtype == nil or s.node.objtype == "OBJECT_TABLE")
end

lint.tree = { kind_of = kind_of, names = names, typename = typename, constraints_of = constraints_of,
              row_constant = row_constant, cmds = cmds }

-- ================================================================ rules

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

-- Each command of an ALTER TABLE on an existing table: fn(cmd) returns a
-- message (or message, location) for the findings.
-- With also_columns, ALTER FOREIGN TABLE and ALTER TYPE (a composite
-- type's attributes) count too: what running code reads of them is the same.
local column_owners = { OBJECT_FOREIGN_TABLE = true, OBJECT_TYPE = true }
local function per_cmd(fn, also_columns)
  return function(s, ctx)
    local owner = also_columns and s.kind == "AlterTableStmt" and column_owners[s.node.objtype]
    if not (is_table_alter(s) or owner) or not ctx.is_existing(relname(s.node.relation)) then return nil end
    local out = {}
    for _, c in ipairs(cmds(s)) do
      local msg, loc = fn(c, s, ctx)
      if msg then out[#out + 1] = { message = msg, location = loc } end
    end
    return out
  end
end

local function coldef(c) return c.def and c.def.ColumnDef end

add { id = "OR001", name = "drop-table", severity = "warning",
  hint = "make sure no running code reads the table and that a verified backup exists; consider renaming it first and dropping it in a later release",
  check = function(s, ctx)
    if s.kind == "DropStmt" and s.node.removeType == "OBJECT_TABLE" then
      local out = {}
      for _, o in ipairs(list(s.node.objects)) do
        local n = names(o.List and o.List.items)
        if ctx.is_existing(n[#n]) then out[#out + 1] = "drops table " .. table.concat(n, ".") .. " and its data" end
      end
      return out
    end
  end }

add { id = "OR002", name = "drop-column", severity = "warning",
  hint = "deploy code that no longer uses the column first (expand/contract), then drop it in a later migration",
  check = per_cmd(function(c, s)
    if c.subtype == "AT_DropColumn" then
      if s.node.objtype == "OBJECT_TYPE" then return "drops attribute " .. tostring(c.name) .. " of type " .. reltext(s.node.relation) end
      local what = s.node.objtype == "OBJECT_FOREIGN_TABLE" and "foreign table " or ""
      return "drops column " .. tostring(c.name) .. " of " .. what .. reltext(s.node.relation) .. " and its data"
    end
  end, true) }

add { id = "OR003", name = "rename-column", severity = "error",
  hint = "running code still uses the old name: add the new column, write both, backfill, switch reads, then drop the old one",
  check = function(s, ctx)
    if s.kind == "RenameStmt" and s.node.renameType == "OBJECT_COLUMN" and ctx.is_existing(relname(s.node.relation)) then
      return string.format("renames column %s of %s to %s while running code may still use it", s.node.subname, reltext(s.node.relation), s.node.newname)
    end
  end }

-- what running code reads by name (a renamed type or function is found by its OID once planned)
local renamed_objects = { OBJECT_TABLE = "table", OBJECT_VIEW = "view", OBJECT_MATVIEW = "materialized view",
  OBJECT_FOREIGN_TABLE = "foreign table", OBJECT_SCHEMA = "schema" }
add { id = "OR004", name = "rename-table", severity = "error",
  hint = "create the new name beside the old one (a table, or a view with the new name) and move readers over before dropping the old name",
  check = function(s, ctx)
    if s.kind ~= "RenameStmt" then return nil end
    local what = renamed_objects[s.node.renameType]
    if not what then return nil end
    if s.node.relation and not ctx.is_existing(relname(s.node.relation)) then return nil end
    local old = s.node.relation and reltext(s.node.relation) or s.node.subname or "?"
    return string.format("renames %s %s to %s while running code may still use the old name", what, old, s.node.newname)
  end }

-- Built-in types by their catalog names (pg_catalog.varchar, or varchar written as such).
local function builtin(ct, ...)
  if not ct or (ct.schema and ct.schema ~= "pg_catalog") or ct.array then return false end
  for _, n in ipairs({ ... }) do if ct.name == n then return true end end
  return false
end

-- Does changing a column of type old to type new leave every stored value
-- as it is (PostgreSQL 9.2+ then rewrites neither the table nor its indexes)?
-- Only the binary-compatible widenings: varchar(n) to varchar(m >= n), to
-- varchar or to text; text to varchar; numeric(p, s) to numeric(q >= p, s)
-- or numeric; varbit(n) to varbit(m >= n) or varbit; timestamp(p), time(p)
-- and their time zone kinds to a finer precision; cidr to inet; and no
-- change at all. A USING other than the column itself (or cast to the new
-- type) computes every value again.
local function keeps_values(old, new, using, col)
  if using then
    local k, v = kind_of(using)
    if k == "TypeCast" then k, v = kind_of(v.arg) end
    local f = k == "ColumnRef" and names(v.fields) or {}
    if k ~= "ColumnRef" or f[#f] ~= col then return false end
  end
  if not old or not new then return false end
  local function wider(o, n) -- n's modifier allows everything o's does
    if #n.mods == 0 then return true end
    if #o.mods == 0 then return false end
    return n.mods[1] >= o.mods[1]
  end
  if old.name == new.name and (old.schema or "pg_catalog") == (new.schema or "pg_catalog") and old.array == new.array then
    if #old.mods == #new.mods then
      local same = true
      for i = 1, #old.mods do if old.mods[i] ~= new.mods[i] then same = false end end
      if same then return true end
    end
  end
  if builtin(old, "varchar") and builtin(new, "text") then return true end
  if builtin(old, "varchar") and builtin(new, "varchar") then return wider(old, new) end
  if builtin(old, "text") and builtin(new, "varchar") then return #new.mods == 0 end
  if builtin(old, "varbit") and builtin(new, "varbit") then return wider(old, new) end
  for _, t in ipairs({ "timestamp", "timestamptz", "time", "timetz" }) do
    if builtin(old, t) and builtin(new, t) then return wider(old, new) end
  end
  if builtin(old, "numeric") and builtin(new, "numeric") then
    if #new.mods == 0 then return true end
    if #old.mods == 0 then return false end
    return new.mods[1] >= old.mods[1] and (new.mods[2] or 0) == (old.mods[2] or 0)
  end
  if builtin(old, "cidr") and builtin(new, "inet") then return true end
  return false
end

add { id = "OR005", name = "change-column-type", severity = "warning",
  hint = "most type changes rewrite the table and its indexes under an ACCESS EXCLUSIVE lock: add a new column, backfill it in batches (a Lua migration with ctx.batch), then switch",
  check = per_cmd(function(c, s, ctx)
    if c.subtype == "AT_AlterColumnType" then
      local d = coldef(c)
      local new = d and coltype(d.typeName)
      local old = ctx.column_type(relname(s.node.relation), c.name)
      -- varchar(n) to text or a wider varchar keeps every value: no rewrite (9.2+)
      -- (a new collation keeps the values but rebuilds the column's indexes)
      if keeps_values(old, new, d and d.raw_default, c.name) and not (d and d.collClause) then return nil end
      local was = old and (" from " .. old.name .. (#old.mods > 0 and ("(" .. table.concat(old.mods, ",") .. ")") or "")) or ""
      return string.format("changes the type of column %s of %s%s to %s (a rewrite unless binary compatible)", tostring(c.name), reltext(s.node.relation),
        was, tostring(new and new.name)), d and d.location
    end
  end) }

add { id = "OR006", name = "not-null-without-default", severity = "error",
  hint = "adding a NOT NULL column without a DEFAULT fails as soon as the table has rows: add it with a DEFAULT, or nullable, then backfill and add the constraint",
  check = per_cmd(function(c, s)
    if c.subtype ~= "AT_AddColumn" then return nil end
    local d = coldef(c)
    local notnull, default
    for _, k in ipairs(constraints_of(d)) do
      if k.contype == "CONSTR_NOTNULL" or k.contype == "CONSTR_PRIMARY" then notnull = true end
      if k.contype == "CONSTR_DEFAULT" or k.contype == "CONSTR_IDENTITY" or k.contype == "CONSTR_GENERATED" then default = true end
    end
    local t = d and typename(d.typeName)
    if t and t:match("serial$") then default = true end
    if notnull and not default then
      return string.format("adds NOT NULL column %s to %s without a DEFAULT", tostring(d.colname), reltext(s.node.relation)), d.location
    end
  end) }

add { id = "OR007", name = "set-not-null", severity = "warning",
  hint = "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE: first ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in a later migration, then SET NOT NULL (no scan since PostgreSQL 12)",
  check = per_cmd(function(c, s, ctx)
    if c.subtype == "AT_SetNotNull" then
      local t = relname(s.node.relation)
      if ctx.pg_version >= 12 and ctx.not_null_checked(t, c.name) then return nil end
      return string.format("sets NOT NULL on column %s of %s (a full table scan under an exclusive lock)", tostring(c.name), reltext(s.node.relation))
    end
  end) }

add { id = "OR008", name = "index-not-concurrent", severity = "warning",
  hint = "CREATE INDEX blocks writes for the whole build: use CREATE INDEX CONCURRENTLY in a file that starts with '-- orch: transaction=false'",
  check = function(s, ctx)
    if s.kind == "IndexStmt" and not s.node.concurrent and ctx.is_existing(relname(s.node.relation)) then
      return "builds index " .. tostring(s.node.idxname or "") .. " on " .. reltext(s.node.relation) .. " without CONCURRENTLY"
    end
  end }

add { id = "OR009", name = "foreign-key-not-valid", severity = "warning",
  hint = "validating a new foreign key scans the table under a lock on both tables: add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
  check = per_cmd(function(c, s)
    if c.subtype == "AT_AddConstraint" then
      local k = c.def and c.def.Constraint
      if k and k.contype == "CONSTR_FOREIGN" and not k.skip_validation then
        return "adds foreign key " .. (k.conname or "") .. " to " .. reltext(s.node.relation) .. " without NOT VALID", k.location
      end
    elseif c.subtype == "AT_AddColumn" then
      for _, k in ipairs(constraints_of(coldef(c))) do
        if k.contype == "CONSTR_FOREIGN" then
          return "adds column " .. tostring(coldef(c).colname) .. " with an inline foreign key (REFERENCES) to " .. reltext(s.node.relation) ..
            ": it cannot be NOT VALID", k.location
        end
      end
    end
  end) }

add { id = "OR010", name = "check-not-valid", severity = "warning",
  hint = "a new CHECK scans the whole table under ACCESS EXCLUSIVE: add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
  check = per_cmd(function(c, s)
    if c.subtype == "AT_AddConstraint" then
      local k = c.def and c.def.Constraint
      if k and k.contype == "CONSTR_CHECK" and not k.skip_validation then
        return "adds CHECK constraint " .. (k.conname or "") .. " to " .. reltext(s.node.relation) .. " without NOT VALID", k.location
      end
    elseif c.subtype == "AT_AddColumn" then
      for _, k in ipairs(constraints_of(coldef(c))) do
        if k.contype == "CONSTR_CHECK" then
          return "adds column " .. tostring(coldef(c).colname) .. " with an inline CHECK to " .. reltext(s.node.relation) .. " (checked against every row)", k.location
        end
      end
    end
  end) }

add { id = "OR011", name = "unique-constraint-locks", severity = "warning",
  hint = "build the index first with CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE (or PRIMARY KEY) USING INDEX",
  check = per_cmd(function(c, s)
    if c.subtype == "AT_AddConstraint" then
      local k = c.def and c.def.Constraint
      if k and (k.contype == "CONSTR_UNIQUE" or k.contype == "CONSTR_PRIMARY" or k.contype == "CONSTR_EXCLUSION") and not k.indexname then
        local what = k.contype == "CONSTR_PRIMARY" and "a PRIMARY KEY" or k.contype == "CONSTR_UNIQUE" and "a UNIQUE constraint" or "an EXCLUDE constraint"
        return "adds " .. what .. " to " .. reltext(s.node.relation) .. " without an existing index (built under an exclusive lock)", k.location
      end
    elseif c.subtype == "AT_AddColumn" then
      for _, k in ipairs(constraints_of(coldef(c))) do
        if k.contype == "CONSTR_UNIQUE" or k.contype == "CONSTR_PRIMARY" then
          return "adds column " .. tostring(coldef(c).colname) .. " declared " .. (k.contype == "CONSTR_PRIMARY" and "PRIMARY KEY" or "UNIQUE") ..
            " inline to " .. reltext(s.node.relation) .. " (its index is built under an exclusive lock)", k.location
        end
      end
    end
  end) }

add { id = "OR012", name = "volatile-default", severity = "warning",
  hint = "a DEFAULT that differs from row to row (random(), clock_timestamp(), gen_random_uuid(), nextval/serial) rewrites the whole table; before PostgreSQL 11 any DEFAULT does: add the column without it, set the default, backfill in batches",
  check = per_cmd(function(c, s, ctx)
    if c.subtype ~= "AT_AddColumn" then return nil end
    local d = coldef(c)
    local t = d and typename(d.typeName)
    if t and t:match("serial%d?$") then
      return "adds " .. t .. " column " .. tostring(d.colname) .. " to " .. reltext(s.node.relation) .. " (nextval() for every row: a table rewrite)", d.location
    end
    for _, k in ipairs(constraints_of(d)) do
      if k.contype == "CONSTR_DEFAULT" then
        local ok, why = row_constant(k.raw_expr)
        if not ok then
          return "adds column " .. tostring(d.colname) .. " to " .. reltext(s.node.relation) .. " with a volatile DEFAULT (" .. tostring(why) .. "): a table rewrite", k.location
        elseif ctx.pg_version < 11 then
          return "adds column " .. tostring(d.colname) .. " with a DEFAULT to " .. reltext(s.node.relation) .. " (a table rewrite before PostgreSQL 11)", k.location
        end
      elseif k.contype == "CONSTR_IDENTITY" then
        return "adds identity column " .. tostring(d.colname) .. " to " .. reltext(s.node.relation) .. " (every row gets a value: a table rewrite)", k.location
      end
    end
  end) }

add { id = "OR013", name = "lock-table", severity = "warning",
  hint = "an explicit LOCK TABLE blocks readers or writers until the migration commits; keep the migration short or avoid the lock",
  check = function(s) if s.kind == "LockStmt" then return "takes an explicit table lock" end end }

add { id = "OR014", name = "truncate", severity = "warning",
  hint = "TRUNCATE removes every row; make sure this is meant for every environment (use '-- orch: env=dev' for dev-only resets)",
  check = function(s, ctx)
    if s.kind == "TruncateStmt" then
      for _, r in ipairs(list(s.node.relations)) do
        if ctx.is_existing(relname(r.RangeVar)) then return "truncates " .. reltext(r.RangeVar) end
      end
    end
  end }

add { id = "OR015", name = "table-rewrite", severity = "warning",
  hint = "VACUUM FULL, CLUSTER and ALTER TABLE SET TABLESPACE / SET LOGGED / SET UNLOGGED / SET ACCESS METHOD rewrite the table under ACCESS EXCLUSIVE; schedule them outside deployments (pg_repack rewrites online)",
  check = function(s, ctx)
    if s.kind == "VacuumStmt" and s.node.is_vacuumcmd and has_option(s.node.options, "full") then return "VACUUM FULL rewrites the table under an exclusive lock" end
    if s.kind == "ClusterStmt" then return "CLUSTER rewrites the table under an exclusive lock" end
    if is_table_alter(s) and ctx.is_existing(relname(s.node.relation)) then
      for _, c in ipairs(cmds(s)) do
        if c.subtype == "AT_SetTableSpace" or c.subtype == "AT_SetLogged" or c.subtype == "AT_SetUnLogged" or c.subtype == "AT_SetAccessMethod" then
          return "ALTER TABLE " .. reltext(s.node.relation) .. " " .. c.subtype:gsub("^AT_", "") .. " rewrites the table under an exclusive lock"
        end
      end
    end
  end }

add { id = "OR016", name = "unbatched-update", severity = "warning",
  hint = "one UPDATE/DELETE over a whole table holds row locks for the whole run and bloats it: write a Lua migration with ctx.batch{...}",
  check = function(s, ctx)
    if (s.kind == "UpdateStmt" or s.kind == "DeleteStmt") and not s.node.whereClause and ctx.is_existing(relname(s.node.relation)) then
      return (s.kind == "UpdateStmt" and "updates" or "deletes") .. " every row of " .. reltext(s.node.relation) .. " in one statement"
    end
  end }

add { id = "OR017", name = "drop-index-not-concurrent", severity = "warning",
  hint = "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table; DROP INDEX CONCURRENTLY (in a transaction=false file) does not",
  check = function(s) if s.kind == "DropStmt" and s.node.removeType == "OBJECT_INDEX" and not s.node.concurrent then return "drops an index without CONCURRENTLY" end end }

add { id = "OR018", name = "refresh-not-concurrent", severity = "info",
  hint = "REFRESH MATERIALIZED VIEW blocks readers; with a unique index use REFRESH MATERIALIZED VIEW CONCURRENTLY",
  check = function(s) if s.kind == "RefreshMatViewStmt" and not s.node.concurrent then return "refreshes a materialized view without CONCURRENTLY" end end }

add { id = "OR019", name = "stored-generated-column", severity = "warning",
  hint = "adding a stored generated column computes it for every row: a table rewrite under ACCESS EXCLUSIVE; add a plain column, backfill in batches, keep it current with a trigger",
  check = per_cmd(function(c, s)
    if c.subtype ~= "AT_AddColumn" then return nil end
    for _, k in ipairs(constraints_of(coldef(c))) do
      if k.contype == "CONSTR_GENERATED" then
        return "adds stored generated column " .. tostring(coldef(c).colname) .. " to " .. reltext(s.node.relation) .. " (a table rewrite)", k.location
      end
    end
  end) }

add { id = "OR020", name = "truncate-cascade", severity = "error",
  hint = "TRUNCATE ... CASCADE also empties every table that references this one, however far: truncate the tables you mean by name",
  check = function(s) if s.kind == "TruncateStmt" and s.node.behavior == "DROP_CASCADE" then return "TRUNCATE CASCADE empties every referencing table too" end end }

local drop_not_null = per_cmd(function(c, s)
  if c.subtype == "AT_DropNotNull" then return "drops NOT NULL from column " .. tostring(c.name) .. " of " .. reltext(s.node.relation) end
end, true)
add { id = "OR021", name = "drop-not-null", severity = "warning",
  hint = "code that reads the column may assume it is never NULL: make readers handle NULL first, then drop the constraint",
  check = function(s, ctx)
    if s.kind == "AlterDomainStmt" and s.node.subtype == "N" then
      return "drops NOT NULL from domain " .. qualified(s.node.typeName) .. " (every column using it may then hold NULL)"
    end
    return drop_not_null(s, ctx)
  end }

add { id = "OR022", name = "reindex-not-concurrent", severity = "warning",
  hint = "REINDEX blocks writes (and reads using the index) while it runs: REINDEX ... CONCURRENTLY (PostgreSQL 12+, in a transaction=false file)",
  check = function(s, ctx)
    if s.kind == "ReindexStmt" and s.node.kind ~= "REINDEX_OBJECT_SYSTEM" and not has_option(s.node.params, "concurrently") and not s.node.concurrent then
      if ctx.pg_version < 12 then return nil end -- no CONCURRENTLY to suggest before 12
      return "REINDEX without CONCURRENTLY locks the table"
    end
  end }

add { id = "OR023", name = "drop-database", severity = "error",
  hint = "a migration should never drop a database: do it by hand, after a verified backup",
  check = function(s) if s.kind == "DropdbStmt" then return "drops database " .. tostring(s.node.dbname) end end }

-- What PostgreSQL refuses inside a transaction block: the CONCURRENTLY
-- forms, VACUUM, REINDEX of a schema, database or the system catalogs,
-- CREATE/DROP DATABASE and TABLESPACE, ALTER SYSTEM, CREATE SUBSCRIPTION,
-- DISCARD ALL.
local reindex_no_tx = { REINDEX_OBJECT_SCHEMA = "REINDEX SCHEMA", REINDEX_OBJECT_DATABASE = "REINDEX DATABASE", REINDEX_OBJECT_SYSTEM = "REINDEX SYSTEM" }
local no_tx_kinds = { CreatedbStmt = "CREATE DATABASE", DropdbStmt = "DROP DATABASE", AlterSystemStmt = "ALTER SYSTEM",
  CreateTableSpaceStmt = "CREATE TABLESPACE", DropTableSpaceStmt = "DROP TABLESPACE", CreateSubscriptionStmt = "CREATE SUBSCRIPTION" }
local function concurrent_kind(s)
  if no_tx_kinds[s.kind] then return no_tx_kinds[s.kind] end
  if s.kind == "VacuumStmt" and s.node.is_vacuumcmd then return "VACUUM" end
  if s.kind == "DiscardStmt" and s.node.target == "DISCARD_ALL" then return "DISCARD ALL" end
  if s.kind == "ReindexStmt" and reindex_no_tx[s.node.kind] then return reindex_no_tx[s.node.kind] end
  if s.kind == "IndexStmt" and s.node.concurrent then return "CREATE INDEX CONCURRENTLY" end
  if s.kind == "DropStmt" and s.node.concurrent then return "DROP INDEX CONCURRENTLY" end
  if s.kind == "ReindexStmt" and has_option(s.node.params, "concurrently") then return "REINDEX CONCURRENTLY" end
  if s.kind == "AlterTableStmt" then
    for _, c in ipairs(cmds(s)) do
      if c.subtype == "AT_DetachPartition" and c.def and c.def.PartitionCmd and c.def.PartitionCmd.concurrent then return "DETACH PARTITION CONCURRENTLY" end
    end
  end
end

add { id = "OR024", name = "concurrently-in-transaction", severity = "error",
  hint = "PostgreSQL refuses this inside a transaction block (CONCURRENTLY, VACUUM, REINDEX SCHEMA/DATABASE, CREATE/DROP DATABASE, ...) and migrate refuses the file: put it in a file of its own that starts with '-- orch: transaction=false'",
  check = function(s, ctx)
    local k = concurrent_kind(s)
    -- a file of this one statement runs without a transaction (migrate sees to it)
    -- after a COMMIT of its own the file runs outside a transaction until its next BEGIN
    -- (migrate refuses that COMMIT: OR026 says so)
    local in_tx = (ctx.transactional and not ctx.lone and not ctx.left_tx) or ctx.in_explicit_tx
    if k and in_tx then return k .. " cannot run inside a transaction" end
  end }

add { id = "OR025", name = "validate-in-same-transaction", severity = "warning",
  hint = "VALIDATE CONSTRAINT in the transaction that added the constraint NOT VALID keeps the add's lock for the whole scan: validate in a later migration",
  check = per_cmd(function(c, s, ctx)
    if c.subtype == "AT_ValidateConstraint" and ctx.tx_not_valid[tostring(relname(s.node.relation)) .. "." .. tostring(c.name)] then
      return "validates constraint " .. tostring(c.name) .. " in the same transaction that added it NOT VALID"
    end
  end) }

add { id = "OR026", name = "transaction-control", severity = "error",
  hint = "orch runs each migration in its own transaction (or with '-- orch: transaction=false' statement by statement): remove BEGIN/COMMIT/ROLLBACK from the file (one BEGIN ... COMMIT around the whole file is fine)",
  check = function(s, ctx)
    if s.kind == "TransactionStmt" and ctx.transactional and not ctx.wrapper[s.index] then
      local k = tostring(s.node.kind):gsub("^TRANS_STMT_", "")
      if k == "SAVEPOINT" or k == "RELEASE" or k == "ROLLBACK_TO" then return nil end
      return "explicit " .. k:gsub("_", " ") .. " inside a migration that runs in a transaction (migrate refuses it)"
    end
  end }

add { id = "OR027", name = "domain-with-constraint", severity = "warning",
  hint = "constraints on a domain are checked against every column using it whenever they change, under locks you cannot see from the table: put the CHECK on the tables instead",
  check = function(s)
    if s.kind == "CreateDomainStmt" then
      for _, c in ipairs(list(s.node.constraints)) do
        local k = c.Constraint
        if k and (k.contype == "CONSTR_CHECK" or k.contype == "CONSTR_NOTNULL") then
          return "creates domain " .. qualified(s.node.domainname) .. " with a " .. (k.contype == "CONSTR_CHECK" and "CHECK" or "NOT NULL") .. " constraint", k.location
        end
      end
    end
  end }

add { id = "OR028", name = "alter-domain-add-constraint", severity = "warning",
  hint = "ALTER DOMAIN ... ADD CONSTRAINT and SET NOT NULL scan every column of every table using the domain under a SHARE lock (writes wait); add a CHECK NOT VALID and VALIDATE it later, or constrain the tables",
  check = function(s)
    if s.kind == "AlterDomainStmt" and s.node.subtype == "O" then
      return "sets NOT NULL on domain " .. qualified(s.node.typeName) .. " (every row of every column using it is checked)"
    end
    if s.kind == "AlterDomainStmt" and s.node.subtype == "C" then
      local k = s.node.def and s.node.def.Constraint
      if not (k and k.skip_validation) then return "adds a constraint to domain " .. qualified(s.node.typeName) .. " (checked against every row using it)" end
    end
  end }

add { id = "OR029", name = "enum-value-in-transaction", severity = "error",
  hint = "before PostgreSQL 12, ALTER TYPE ... ADD VALUE cannot run in a transaction block: put it in a file that starts with '-- orch: transaction=false'",
  check = function(s, ctx)
    if s.kind == "AlterEnumStmt" and s.node.newVal and not s.node.oldVal and ctx.pg_version < 12 and ctx.transactional and not ctx.lone then
      return "ALTER TYPE " .. qualified(s.node.typeName) .. " ADD VALUE inside a transaction (refused before PostgreSQL 12)"
    end
  end }

-- the columns a statement defines: CREATE TABLE's and ALTER TABLE ADD COLUMN's
local function columns(s)
  local out = {}
  if s.kind == "CreateStmt" then
    for _, e in ipairs(list(s.node.tableElts)) do if e.ColumnDef then out[#out + 1] = e.ColumnDef end end
  elseif is_table_alter(s) then
    for _, c in ipairs(cmds(s)) do
      if c.subtype == "AT_AddColumn" and coldef(c) then out[#out + 1] = coldef(c) end
      if c.subtype == "AT_AlterColumnType" and coldef(c) then
        local d = coldef(c)
        out[#out + 1] = { colname = c.name, typeName = d.typeName, location = d.location }
      end
    end
  end
  return out
end

local function typed_columns(pred)
  return function(s)
    local out = {}
    for _, d in ipairs(columns(s)) do
      local t, schema = typename(d.typeName)
      local msg = t and pred(t, schema, d)
      if msg then out[#out + 1] = { message = "column " .. tostring(d.colname) .. " " .. msg, location = d.location } end
    end
    return out
  end
end

add { id = "OR030", name = "prefer-identity", severity = "warning",
  hint = "serial creates a sequence the column does not own by standard rules (permissions, dumps, copies): use integer GENERATED ALWAYS AS IDENTITY",
  check = typed_columns(function(t, schema) if not schema and (t == "serial" or t == "bigserial" or t == "smallserial" or t:match("^serial%d$")) then return "is " .. t .. " rather than an identity column" end end) }

add { id = "OR031", name = "prefer-timestamptz", severity = "warning",
  hint = "timestamp without time zone stores wall-clock time with no zone: use timestamptz",
  check = typed_columns(function(t, schema) if t == "timestamp" and schema == "pg_catalog" then return "is timestamp without time zone" end end) }

add { id = "OR032", name = "prefer-text-over-char", severity = "warning",
  hint = "char(n) pads with blanks and is no faster: use text (with a CHECK on length if needed)",
  check = typed_columns(function(t, schema, d)
    -- char, character and char(n) are pg_catalog.bpchar; bpchar written as such
    -- is the same type. ("char" is a one-byte type of its own, but "char"(n) or
    -- "character"(n) can only mean char(n).)
    local quoted_char = not schema and (t == "character" or (t == "char" and #typmods(d.typeName) > 0))
    if (t == "bpchar" and (schema == "pg_catalog" or not schema)) or quoted_char then return "is char(n)" end
  end) }

local int4s = { int4 = "integer", serial = "serial", serial4 = "serial", integer = "integer" }
local int2s = { int2 = "smallint", smallserial = "smallserial", serial2 = "smallserial", smallint = "smallint" }
local counters = { serial = true, serial4 = true, smallserial = true, serial2 = true }
-- A column that holds a key: the primary key, one named id or ..._id (what
-- references a key is named so), one with REFERENCES, an identity column.
local function key_like(d, pk)
  if pk[d.colname] then return true end
  local n = tostring(d.colname):lower()
  if n == "id" or n:match("_id$") then return true end
  for _, k in ipairs(constraints_of(d)) do
    if k.contype == "CONSTR_PRIMARY" or k.contype == "CONSTR_FOREIGN" or k.contype == "CONSTR_IDENTITY" then return true end
  end
  return false
end
-- Key and counter columns of one of the given types (int4s, int2s).
local function small_keys(small_ints)
  return function(s)
    local out = {}
    local pk = {}
    if s.kind == "CreateStmt" then
      for _, e in ipairs(list(s.node.tableElts)) do
        local k = e.Constraint
        if k and k.contype == "CONSTR_PRIMARY" then for _, n in ipairs(names(k.keys)) do pk[n] = true end end
      end
    end
    for _, d in ipairs(columns(s)) do
      local t, schema = typename(d.typeName)
      local int = small_ints[t] and (not schema or schema == "pg_catalog")
      if int and (counters[t] or key_like(d, pk)) then
        local what = counters[t] and "counter column " or "key column "
        out[#out + 1] = { message = what .. tostring(d.colname) .. " is " .. small_ints[t], location = d.location }
      end
    end
    return out
  end
end

add { id = "OR033", name = "prefer-bigint-key", severity = "warning",
  hint = "an integer key (or serial counter) runs out at 2^31 and changing it later rewrites the table and every referencing one: use bigint",
  check = small_keys(int4s) }

add { id = "OR034", name = "detach-partition-locks", severity = "warning",
  hint = "DETACH PARTITION takes ACCESS EXCLUSIVE on the parent; on PostgreSQL 14+ use DETACH PARTITION ... CONCURRENTLY in a transaction=false file",
  check = function(s, ctx)
    if ctx.pg_version < 14 or not is_table_alter(s) or not ctx.is_existing(relname(s.node.relation)) then return nil end
    for _, c in ipairs(cmds(s)) do
      local p = c.subtype == "AT_DetachPartition" and c.def and c.def.PartitionCmd
      if p and not p.concurrent then return "detaches a partition of " .. reltext(s.node.relation) .. " without CONCURRENTLY" end
    end
  end }

add { id = "OR035", name = "prefer-bigint-smallint-key", severity = "warning",
  hint = "a smallint key (or smallserial counter) runs out at 32767 and changing it later rewrites the table and every referencing one: use bigint",
  check = small_keys(int2s) }

-- (found in Lua migrations by lint.check_lua, not in SQL statements)
add { id = "OR036", name = "lua-sql-not-linted", severity = "info",
  hint = "pass the SQL as a literal string where you can, and check what is built at run time by hand",
  check = function() return nil end }

-- ================================================================ linting

local severities = { error = true, warning = true, info = true, off = true }

local function rule_setting(rule, settings)
  return settings[rule.id] or (rule.name and settings[rule.name])
end

-- The rule ids and names listed after a marker in text, as a set; the
-- empty set when nothing follows (every rule).
local function listed(rest)
  local set, any = {}, false
  for w in rest:gmatch("[%w_%-]+") do set[w] = true; any = true end
  return set, any
end

-- -- orch:lint-disable ID, ... lines of a file: rules off for the whole file.
local function file_disabled(text)
  local set, all = {}, false
  for rest in text:gmatch("%-%-%s*orch:lint%-disable([^\n]*)") do
    local s, any = listed(rest)
    if not any then all = true end
    for k in pairs(s) do set[k] = true end
  end
  return set, all
end

--- A fresh state shared by the files of one release (tables created, NOT
-- NULL proven by validated CHECKs). lint.run uses one per release.
function lint.new_state()
  return { created = {}, checked = {}, check_names = {}, validated_names = {}, coltypes = {} }
end

-- Does a constraint validated without its definition in sight look like a
-- NOT NULL check of column col? Its name holds the column and says null.
local function named_not_null(name, col)
  name, col = name:lower(), col:lower()
  local words = {}
  for w in name:gmatch("[^_]+") do words[#words + 1] = w end
  local has_null = name:find("null", 1, true) or words[#words] == "nn"
  if not has_null then return false end
  local padded = "_" .. name .. "_"
  return padded:find("_" .. col .. "_", 1, true) ~= nil
end

-- Remember what a statement leaves behind for the statements after it.
local function learn(s, state, tx, wrapper)
  local k, n = s.kind, s.node
  if k == "CreateStmt" then state.created[relname(n.relation) or "?"] = true
    for _, e in ipairs(list(n.tableElts)) do
      if e.ColumnDef then state.coltypes[(relname(n.relation) or "?") .. "." .. tostring(e.ColumnDef.colname)] = coltype(e.ColumnDef.typeName) end
      local c = e.Constraint
      local col = c and c.contype == "CONSTR_CHECK" and not_null_column(c.raw_expr)
      if col then state.checked[relname(n.relation) .. "." .. col] = true end
      if e.ColumnDef then
        for _, cc in ipairs(constraints_of(e.ColumnDef)) do
          if cc.contype == "CONSTR_CHECK" and not_null_column(cc.raw_expr) then state.checked[relname(n.relation) .. "." .. e.ColumnDef.colname] = true end
        end
      end
    end
  elseif k == "CreateTableAsStmt" then
    local into = n.into and n.into.IntoClause or n.into
    local rel = into and into.rel
    if rel then state.created[relname(rel) or "?"] = true end
  elseif k == "AlterTableStmt" then
    local t = relname(n.relation) or "?"
    for _, c in ipairs(cmds(s)) do
      local ct = c.def and c.def.Constraint
      local d = c.def and c.def.ColumnDef
      if c.subtype == "AT_AddColumn" and d then state.coltypes[t .. "." .. tostring(d.colname)] = coltype(d.typeName)
      elseif c.subtype == "AT_AlterColumnType" and d then state.coltypes[t .. "." .. tostring(c.name)] = coltype(d.typeName)
      elseif c.subtype == "AT_DropColumn" then state.coltypes[t .. "." .. tostring(c.name)] = nil end
      if c.subtype == "AT_AddConstraint" and ct and ct.contype == "CONSTR_CHECK" then
        local col = not_null_column(ct.raw_expr)
        if ct.conname then state.check_names[t .. "." .. ct.conname] = col or false end
        if ct.skip_validation then
          if ct.conname then tx.not_valid[t .. "." .. ct.conname] = true end
        elseif col then state.checked[t .. "." .. col] = true end
      elseif c.subtype == "AT_AddConstraint" and ct and ct.skip_validation and ct.conname then
        tx.not_valid[t .. "." .. ct.conname] = true
      elseif c.subtype == "AT_ValidateConstraint" then
        local col = state.check_names[t .. "." .. tostring(c.name)]
        if col then state.checked[t .. "." .. col] = true
        elseif col == nil then
          -- added by a migration orch did not read: a name like orders_email_not_null
          -- or email_nn says which column it proves NOT NULL
          state.validated_names[t .. "." .. tostring(c.name)] = true
        end
      end
    end
  elseif k == "RenameStmt" and n.renameType == "OBJECT_TABLE" and n.relation then
    if state.created[relname(n.relation)] then state.created[n.newname] = true end
    local old = relname(n.relation) .. "."
    for key, v in pairs(state.coltypes) do
      if key:sub(1, #old) == old then state.coltypes[n.newname .. "." .. key:sub(#old + 1)] = v end
    end
  elseif k == "RenameStmt" and n.renameType == "OBJECT_COLUMN" and n.relation then
    local t = relname(n.relation) .. "."
    state.coltypes[t .. tostring(n.newname)], state.coltypes[t .. tostring(n.subname)] = state.coltypes[t .. tostring(n.subname)], nil
  elseif k == "TransactionStmt" and not wrapper then
    if n.kind == "TRANS_STMT_BEGIN" or n.kind == "TRANS_STMT_START" then tx.explicit = true; tx.left = false
    elseif n.kind == "TRANS_STMT_COMMIT" or n.kind == "TRANS_STMT_ROLLBACK" then tx.explicit = false; tx.not_valid = {}; tx.left = true end
  end
end

local function as_findings(res)
  if res == nil or res == false then return {} end
  if type(res) == "string" then return { { message = res } } end
  if type(res) == "table" then
    local out = {}
    for _, r in ipairs(res) do
      if type(r) == "string" then out[#out + 1] = { message = r }
      elseif type(r) == "table" and r.message then out[#out + 1] = r end
    end
    if res.message then out[#out + 1] = res end
    return out
  end
  return { { message = tostring(res) } }
end

--- Lint one SQL text. opts: transactional (default: from the file's
-- directives, else true), pg_version (default lint.config.pg_version),
-- severity (overrides, id or name -> level or "off"), state (shared by the
-- files of a release). Returns a list of findings
-- { rule, name, severity, file, line, message, hint, statement }.
-- A file the parser rejects gives one finding OR000 (parse-error) with the
-- parser's message and line:column.
function lint.check_sql(text, file, opts)
  opts = opts or {}
  file = file or "(sql)"
  local findings = {}
  local transactional, chosen = opts.transactional, opts.transaction_chosen
  if transactional == nil then
    local ok, d = pcall(files.directives, text, file)
    transactional = not (ok and d.transaction == false)
    chosen = ok and d.transaction ~= nil
  end
  local settings = {}
  for k, v in pairs(lint.config.severity or {}) do settings[k] = v end
  for k, v in pairs(opts.severity or {}) do settings[k] = v end
  local pg_version = opts.pg_version or lint.config.pg_version or 15
  local state = opts.state or lint.new_state()
  state.validated_names = state.validated_names or {}
  state.coltypes = state.coltypes or {}
  local off_in_file, all_off = file_disabled(text)
  if all_off then return findings end

  local ok, stmts = pcall(files.split_sql, text, nil, { trees = true })
  if not ok then
    local msg = type(stmts) == "table" and stmts.message or tostring(stmts)
    local line, col, rest = msg:match("^line (%d+), column (%d+): (.*)$")
    local grammar = require("orch.pgquery").version // 10000
    -- a newer target server may know syntax the grammar does not: then it judges
    local newer = pg_version > grammar
    findings[1] = { rule = "OR000", name = "parse-error", severity = newer and "warning" or "error", file = file, line = tonumber(line) or 1,
      column = tonumber(col), message = string.format("%s%s (PostgreSQL %d's parser)", rest or msg, col and (" at column " .. col) or "", grammar),
      hint = newer and ("PostgreSQL " .. pg_version .. " may accept it (migrate lets a newer server judge), but orch cannot lint this file")
        or "fix the statement; migrate refuses a file that does not parse (orch reads SQL with libpg_query's PostgreSQL 15 grammar)" }
    return findings
  end

  local line_of = require("orch.migrate.split").line_counter(text)
  local tx = { not_valid = {}, explicit = false }
  -- one BEGIN ... COMMIT around a transactional file is its transaction:
  -- migrate runs what is between (files.unwrap_transaction), numbered so
  local wrapper, number = {}, {}
  if transactional then
    local okw, inner, wrapped = pcall(files.unwrap_transaction, stmts, file)
    if okw and wrapped then
      wrapper[1], wrapper[#stmts] = true, true
      for i, st in ipairs(inner) do number[st] = i end
    end
  end
  -- constraints the file drops (table.name): a NOT NULL helper CHECK is
  -- validated, used by SET NOT NULL, then dropped
  local dropped = {}
  for _, st in ipairs(stmts) do
    local k, n = kind_of(st.tree)
    if k == "AlterTableStmt" then
      for _, c in ipairs(list(n.cmds)) do
        local a = c.AlterTableCmd
        if a and a.subtype == "AT_DropConstraint" and a.name then dropped[tostring(relname(n.relation)) .. "." .. a.name] = true end
      end
    end
  end
  for idx, st in ipairs(stmts) do
    local kind = kind_of(st.tree)
    local s = { sql = st.sql, norm = files.normalize(st.sql), line = st.line, index = idx, tree = st.tree, kind = kind,
                node = kind and st.tree[kind] or {}, copy = st.copy }
    local ctx = {
      file = file, transactional = transactional, in_explicit_tx = tx.explicit, left_tx = tx.left, pg_version = pg_version,
      -- migrate runs a file of one such statement without a transaction, unless the file chose one
      lone = #stmts == 1 and not chosen, wrapper = wrapper,
      column_type = function(t, c) return state.coltypes[tostring(t) .. "." .. tostring(c)] end,
      created = state.created, tx_not_valid = tx.not_valid,
      is_new = function(t) return t ~= nil and state.created[t] == true end,
      is_existing = function(t) return t ~= nil and not state.created[t] end,
      not_null_checked = function(t, c)
        if state.checked[tostring(t) .. "." .. tostring(c)] then return true end
        -- a constraint validated without its definition in sight proves it only
        -- when its name says so and the file drops it after use (a helper CHECK)
        for k in pairs(state.validated_names) do
          local tt, name = k:match("^(.-)%.(.*)$")
          if tt == tostring(t) and dropped[k] and named_not_null(name, tostring(c)) then return true end
        end
        return false
      end,
      line_of = function(loc) return loc and line_of(st.base + loc + 1) or st.line end,
    }
    local ignore = st.sql:match("orch:lint%-ignore([^\n]*)")
    local ignored, ignore_any = {}, false
    if ignore then ignored, ignore_any = listed(ignore) end
    for _, rule in ipairs(lint.rules) do
      local level = rule_setting(rule, settings) or rule.severity
      local skip = level == "off" or off_in_file[rule.id] or (rule.name and off_in_file[rule.name])
        or (ignore and (not ignore_any or ignored[rule.id] or (rule.name and ignored[rule.name])))
      if not skip then
        local okr, res = pcall(rule.check, s, ctx)
        local list_ = okr and as_findings(res) or { { message = "rule failed: " .. tostring(res) } }
        for _, f in ipairs(list_) do
          findings[#findings + 1] = { rule = rule.id, name = rule.name, severity = level, file = file,
            line = f.location and ctx.line_of(f.location) or st.line, message = f.message, hint = rule.hint,
            statement = s.norm:sub(1, 120), statement_index = number[st] or idx }
        end
      end
    end
    learn(s, state, tx, wrapper[idx])
    -- without a transaction each statement commits on its own
    if not transactional and not tx.explicit then tx.not_valid = {} end
  end
  return findings
end

-- ================================================================ Lua migrations

-- The SQL a Lua migration hands to the database as literal text:
-- db:exec("..."), db:query [[...]], conn:value('...') and the like. Returns
-- the literals ({ sql, line, stop_line }) and the calls whose SQL is built
-- at run time ({ line, method }): a name, a concatenation, a format.
local sql_methods = { exec = true, query = true, value = true }
function lint.lua_sql(text)
  local lits, dynamic = {}, {}
  local line_at = require("orch.migrate.split").line_counter(text)
  local n, i = #text, 1
  -- the undo (down = function / rollback = function, up to the next key of
  -- the table) is not what a release runs
  local keys = {}
  for pos, key in text:gmatch("()[%s,{;]([%a_]+)%s*=%s*function") do
    if key == "up" or key == "apply" or key == "down" or key == "rollback" then keys[#keys + 1] = { pos = pos, undo = key == "down" or key == "rollback" } end
  end
  local function in_undo(pos)
    local undo = false
    for _, k in ipairs(keys) do if k.pos <= pos then undo = k.undo end end
    return undo
  end
  -- a Lua string literal at position j: its value and the position after it, or nil
  local function literal(j)
    local c = text:sub(j, j)
    if c == '"' or c == "'" then
      local out, k = {}, j + 1
      while k <= n do
        local d = text:sub(k, k)
        if d == c then return table.concat(out), k + 1 end
        if d == "\\" then
          local e = text:sub(k + 1, k + 1)
          local map = { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ['"'] = '"', ["'"] = "'", ["\n"] = "\n" }
          out[#out + 1] = map[e] or e
          k = k + 2
        elseif d == "\n" then return nil
        else out[#out + 1] = d; k = k + 1 end
      end
      return nil
    end
    local eq = text:match("^%[(=*)%[", j)
    if eq then
      local open = j + #eq + 2
      local close = text:find("]" .. eq .. "]", open, true)
      if not close then return nil end
      local body = text:sub(open, close - 1)
      return body, close + #eq + 2, body:sub(1, 1) == "\n"
    end
  end
  while i <= n do
    -- skip Lua comments and strings that are no SQL argument
    local two = text:sub(i, i + 1)
    local c = text:sub(i, i)
    if two == "--" then
      local eq = text:match("^%-%-%[(=*)%[", i)
      if eq then
        local close = text:find("]" .. eq .. "]", i, true)
        i = close and close + #eq + 2 or n + 1
      else
        i = (text:find("\n", i, true) or n) + 1
      end
    elseif c == '"' or c == "'" or text:match("^%[=*%[", i) then
      local _, after = literal(i)
      i = after or i + 1
    else
      local m, after = text:match("^[:.]([%a_][%w_]*)%s*()", i)
      if m and sql_methods[m] and i > 1 and text:sub(i - 1, i - 1):match("[%w_%]%)]") then
        local j, paren = after, false
        if text:sub(j, j) == "(" then
          paren = true
          j = text:match("^%(%s*()", j)
        end
        local value, stop, skip_nl = literal(j)
        local rest = stop and text:match("^%s*(.?.?)", stop) or ""
        if in_undo(i) then
          i = stop or after
        elseif value and (not paren or rest:sub(1, 1) == ")" or rest:sub(1, 1) == ",") and rest ~= ".." then
          local first = line_at(j)
          if skip_nl then value = value:sub(2); first = first + 1 end
          lits[#lits + 1] = { sql = value, line = first, stop = stop }
          i = stop
        elseif paren or value then
          dynamic[#dynamic + 1] = { line = line_at(i), method = m }
          i = after
        else
          i = after
        end
      else
        i = i + 1
      end
    end
  end
  return lits, dynamic
end

--- Lint a Lua migration: its literal SQL, each on the lines where it is
-- written, as one script (they run in the migration's transaction), and
-- an info finding OR036 for each call whose SQL is built at run time (orch
-- cannot see it). opts as for check_sql.
function lint.check_lua(text, file, opts)
  opts = opts or {}
  -- -- orch:lint-disable lines of the Lua file count as in a SQL file
  local off, all_off = file_disabled(text)
  if all_off then return {} end
  local lits, dynamic = lint.lua_sql(text)
  local findings = {}
  if #lits > 0 then
    -- the literals on their own lines, blanks between: lines stay the Lua file's
    local parts, line = {}, 1
    for _, l in ipairs(lits) do
      if l.line > line then parts[#parts + 1] = string.rep("\n", l.line - line); line = l.line end
      local body = l.sql:gsub("%s*;?%s*$", "")
      parts[#parts + 1] = body .. ";"
      local _, nl = body:gsub("\n", "")
      line = line + nl
    end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    -- the migration's table says transaction = false, or it runs in one
    if o.transactional == nil then o.transactional = not text:match("[%s,{;]transaction%s*=%s*false") end
    for _, f in ipairs(lint.check_sql(table.concat(parts), file, o)) do
      if not (off[f.rule] or (f.name and off[f.name])) then findings[#findings + 1] = f end
    end
  end
  local rule
  for _, r in ipairs(lint.rules) do if r.id == "OR036" then rule = r end end
  local level = rule_setting(rule, opts.severity or {}) or rule_setting(rule, lint.config.severity or {}) or rule.severity
  if level ~= "off" and not off.OR036 and not off["lua-sql-not-linted"] then
    for _, d in ipairs(dynamic) do
      findings[#findings + 1] = { rule = "OR036", name = "lua-sql-not-linted", severity = level, file = file, line = d.line,
        message = "the SQL of this " .. d.method .. "() is built at run time (a name or an expression): orch cannot lint it",
        hint = rule.hint }
    end
  end
  for k, f in ipairs(findings) do f.order = k end
  table.sort(findings, function(a, b) if a.line ~= b.line then return a.line < b.line end return a.order < b.order end)
  for _, f in ipairs(findings) do f.order = nil end
  return findings
end

--- A file by its kind: .lua as a Lua migration, else SQL.
function lint.check_file(text, file, opts)
  if tostring(file):match("%.lua$") then return lint.check_lua(text, file, opts) end
  return lint.check_sql(text, file, opts)
end

--- Load a project's lint configuration: a file returning a list of team
-- rules (or calling lint.add_rule itself), optionally with keys pg_version
-- and severity. Missing file: nothing happens. Returns the number of rules.
function lint.load_rules(path)
  local f = io.open(path)
  if not f then return 0 end
  f:close()
  local chunk, err = loadfile(path, "t")
  if not chunk then error("lint rules do not parse: " .. err, 0) end
  local conf = chunk()
  local n = 0
  if type(conf) == "table" then
    for k, v in pairs(conf) do
      if k == "pg_version" then
        if math.type(v) ~= "integer" or v < 9 then error(path .. ": pg_version must be a PostgreSQL major version such as 12", 0) end
        lint.config.pg_version = v
        lint.config.pg_version_chosen = true
      elseif k == "severity" then
        if type(v) ~= "table" then error(path .. ": severity must be a table such as { OR030 = \"off\" }", 0) end
        for id, lvl in pairs(v) do
          if not severities[lvl] then error(string.format("%s: severity of %s must be error, warning, info or off, not %s", path, tostring(id), tostring(lvl)), 0) end
          lint.config.severity[id] = lvl
        end
      elseif math.type(k) ~= "integer" then
        error(string.format("%s: unknown key %s (known: pg_version, severity, and a list of rules)", path, tostring(k)), 0)
      end
    end
  end
  for _, r in ipairs(type(conf) == "table" and conf or {}) do lint.add_rule(r); n = n + 1 end
  return n
end

--- Lint a project (from orch.migrate.load), or only the given entries.
-- SQL files are linted with placeholders left as written. With entries
-- (a release: migrate's plan; opts.release = false for a mere selection),
-- a table created by an earlier entry is new for the later ones; without,
-- each file stands alone. Returns findings.
function lint.run(project, entries, opts)
  opts = opts or {}
  local release = opts.release
  if release == nil then release = entries ~= nil and #entries > 0 end
  entries = entries or {}
  if #entries == 0 then
    for _, e in ipairs(project.versioned) do entries[#entries + 1] = e end
    for _, e in ipairs(project.repeatable) do entries[#entries + 1] = e end
  end
  local all = {}
  -- a release shares everything; files linted one by one share only what
  -- constraints say (a CHECK validated in an earlier file is still validated)
  local shared = lint.new_state()
  for _, e in ipairs(entries) do
    if (e.lang == "sql" or e.lang == "lua") and e.text then
      local tx = not (e.directives and e.directives.transaction == false)
      local state = shared
      if not release then
        -- (and a column keeps the type an earlier file gave it)
        state = { created = {}, checked = shared.checked, check_names = shared.check_names, validated_names = shared.validated_names,
                  coltypes = shared.coltypes }
      end
      local o = { transactional = tx, pg_version = opts.pg_version, severity = opts.severity, state = state,
                  transaction_chosen = e.directives ~= nil and e.directives.transaction ~= nil }
      for _, f in ipairs(e.lang == "lua" and lint.check_lua(e.text, e.path, o) or lint.check_sql(e.text, e.path, o)) do all[#all + 1] = f end
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
