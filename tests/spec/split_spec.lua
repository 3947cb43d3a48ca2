-- orch.migrate.split and orch.pgquery: statements by PostgreSQL's own
-- parser (dollar quotes, BEGIN ATOMIC, COPY data, comments, non-ASCII),
-- parser errors at line:column, and migrate's error messages naming the
-- statement and line of that same parse, on a real server.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local pq = require "orch.pgquery"
local split = require "orch.migrate.split"
local lint = require "orch.lint"

local function lines(stmts)
  local out = {}
  for i, s in ipairs(stmts) do out[i] = s.line end
  return out
end

describe("orch.pgquery", function()
  it("parses into a tree and names the grammar's version", function()
    local t = pq.parse("ALTER TABLE \"bücher\" DROP COLUMN größe")
    local a = t.stmts[1].stmt.AlterTableStmt
    assert.equals("bücher", a.relation.relname)
    assert.equals("AT_DropColumn", a.cmds[1].AlterTableCmd.subtype)
    assert.equals("größe", a.cmds[1].AlterTableCmd.name)
    assert.equals(15, pq.version // 10000)
  end)

  it("hands over strings exactly: quotes, backslashes, control characters, non-ASCII", function()
    local s = "a\"b\\c\nd\te\1f é☃😀"
    local lit = s:gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub("\t", "\\t"):gsub("\1", "\\x01")
    local t = pq.parse("SELECT E'" .. lit .. "', 1.5, true")
    local tl = t.stmts[1].stmt.SelectStmt.targetList
    assert.equals(s, tl[1].ResTarget.val.A_Const.sval.sval)
    assert.equals("1.5", tl[2].ResTarget.val.A_Const.fval.fval)
    assert.is_true(tl[3].ResTarget.val.A_Const.boolval.boolval)
  end)

  it("returns the parser's message with line, column (characters) and byte offset", function()
    local t, msg, line, col, off = pq.parse("SELECT 'é';\nSELECT 'ü' FRM x;")
    assert.is_nil(t)
    assert.equals('syntax error at or near "x"', msg)
    assert.same({ 2, 16, 30 }, { line, col, off })
    local n, nmsg = pq.parse("SELECT 1\0;")
    assert.is_nil(n)
    assert.matches("NUL byte", nmsg)
  end)

  it("splits by parser or by scanner into byte ranges", function()
    local r = pq.split("SELECT 1; SELECT $$;$$;")
    assert.same({ { pos = 1, len = 8 }, { pos = 10, len = 13 } }, r)
    assert.is_nil((pq.split("SELECT 'open", "scanner")))
    assert.has_error(function() pq.split("x", "lexer") end)
  end)
end)

describe("orch.migrate.split", function()
  it("keeps dollar quotes, nested comments and strings with semicolons whole", function()
    local s = split.statements("-- c;\nSELECT 'a;b';\n\nCREATE FUNCTION f() RETURNS int AS $x$ SELECT 1; $x$ LANGUAGE sql;\n" ..
      "/* ; /* nested ; */ ; */ SELECT \"x;\" FROM t;\nSELECT E'it\\'s; fine'")
    assert.same({ 2, 4, 5, 6 }, lines(s))
    assert.equals("-- c;\nSELECT 'a;b';", s[1].sql)
    assert.matches("%$x%$ SELECT 1; %$x%$ LANGUAGE sql;$", s[2].sql)
    assert.equals(20, s[2].pos)
  end)

  it("keeps a BEGIN ATOMIC body (with CASE ... END inside) as one statement", function()
    local s = split.statements("CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n" ..
      "  SELECT 2;\nEND;\nSELECT 3;", nil, { trees = true })
    assert.equals(2, #s)
    assert.matches("SELECT 2;\nEND;$", s[1].sql)
    assert.equals("CreateFunctionStmt", split.kind(s[1].tree))
    assert.equals(6, s[2].line)
  end)

  it("takes COPY ... FROM stdin data up to \\. (quotes and semicolons in it), and parses on after it", function()
    local text = "CREATE TABLE t (a int, b text);\nCOPY t (a, b) FROM stdin;\n1\tfoo;bar\n2\t'x\n3\t$$\n\\.\n" ..
      "COPY t FROM stdin WITH (FORMAT csv);\n4,\"q;\"\n\\.\nSELECT 'after';\nCOPY t TO stdout;\n"
    local s = split.statements(text, nil, { trees = true })
    assert.equals(5, #s)
    assert.equals("1\tfoo;bar\n2\t'x\n3\t$$\n", s[2].copy)
    assert.equals("4,\"q;\"\n", s[3].copy)
    assert.same({ 1, 2, 7, 10, 11 }, lines(s))
    assert.equals("SelectStmt", split.kind(s[4].tree))
    assert.is_nil(s[5].copy)   -- COPY TO has no data in the file
    local ok, err = pcall(split.statements, "SELECT 1;\nCOPY t FROM stdin;\n1\n", "V1__c.sql")
    assert.is_false(ok)
    assert.matches("V1__c%.sql:2:1: COPY ... FROM STDIN has no end of data", err.message)
  end)

  it("counts lines and columns in non-ASCII text, and gives the parser's error at file:line:column", function()
    local s = split.statements("INSERT INTO \"bücher\" VALUES ('größe; ü');\n-- ½;\nSELECT '日本';\n")
    assert.same({ 1, 3 }, lines(s))
    local ok, err = pcall(split.statements, "SELECT 1;\n\nSELECT '日本' FRM x;\n", "V2__bad.sql")
    assert.is_false(ok)
    assert.equals('V2__bad.sql:3:17: syntax error at or near "x"', err.message)
  end)

  it("reads placeholders as identifiers of the same length and a BOM as blanks", function()
    local s = split.statements("\239\187\191SELECT * FROM ${schema}.t;\nSELECT '${x}';", nil, { trees = true })
    assert.equals(2, #s)
    assert.matches("^\239\187\191SELECT %* FROM %${schema}%.t;$", s[1].sql)
    assert.equals(2, s[2].line)
  end)

  it("splits by tokens where asked to, when the parser rejects the text (for servers newer than its grammar)", function()
    local text = "SELECT 1;\nSELECT '{}' IS JSON;\nCOPY t FROM stdin;\n1\n\\.\nSELECT 2;"
    assert.has_error(function() split.statements(text, "V1__j.sql") end)
    local s = split.statements(text, "V1__j.sql", { scanner = true })
    assert.equals(4, #s)
    assert.same({ 1, 2, 3, 6 }, lines(s))
    assert.equals('V1__j.sql:2:16: syntax error at or near "JSON"', s[2].unparsed)
    assert.equals("1\n", s[3].copy)
    assert.is_nil(s[4].unparsed)
  end)

  it("keeps a routine's BEGIN ATOMIC ... END body one statement when it splits by tokens", function()
    local text = "SELECT '{}' IS JSON;\n" ..
      "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT CASE WHEN x > 0 THEN 'a;' END; -- end;\nEND;\n" ..
      "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1; $$;\nSELECT 3;"
    local s = split.statements(text, "V1__a.sql", { scanner = true })
    assert.equals(4, #s)
    assert.same({ 1, 2, 7, 8 }, lines(s))
    assert.matches("^%s*CREATE OR REPLACE FUNCTION.*BEGIN ATOMIC.*CASE.*END;.*\nEND;$", s[2].sql)
    assert.matches("^%s*CREATE PROCEDURE p%(%) LANGUAGE sql AS %$%$ SELECT 1; %$%$;$", s[3].sql)
  end)

  it("gives the same statements with and without trees", function()
    local text = H.read("migrations/V4__tickets.sql")
    local a, b = split.statements(text), split.statements(text, nil, { trees = true })
    assert.equals(#a, #b)
    for i = 1, #a do assert.same({ a[i].sql, a[i].line, a[i].pos }, { b[i].sql, b[i].line, b[i].pos }) end
  end)
end)

describe("migrate's errors from the same parse", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("split")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  local function project(layout)
    local dir = H.tmpdir()
    for path, text in pairs(layout) do H.write(dir .. "/" .. path, text) end
    return dir
  end

  it("names the statement number and line that lint names, past dollar quotes, BEGIN ATOMIC and COPY data", function()
    local text = table.concat({
      "-- orch: lock_timeout=2s\n",                                                           -- 1
      "CREATE TABLE \"bücher\" (id bigint PRIMARY KEY, titel text);\n",                       -- 2
      "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$\nBEGIN\n  RETURN 1; -- ;\nEND\n$body$;\n", -- 3-7
      "CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n",      -- 8-12
      "COPY \"bücher\" (id, titel) FROM stdin;\n1\tfür; alle\n2\t'offen\n\\.\n",             -- 13-16
      "/* größe; */\nUPDATE \"bücher\" SET titel = (1 / 0)::text;\n",                                 -- 17-18
      "SELECT 1;\n",
    })
    local dir = project { ["V1__ok.sql"] = "CREATE TABLE first (id bigint);\n", ["V2__mixed.sql"] = text }
    local r = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(1, r.code, r.stderr)
    assert.matches("migration V2__mixed%.sql failed at .*V2__mixed%.sql:18 %(statement 5 of 6%)", r.stderr)
    assert.matches("SQLSTATE 22012", r.stderr)
    -- lint puts its finding for that UPDATE (the table is created in the file: none) and for a
    -- whole-table UPDATE of an existing table on the same line
    local f = lint.check_sql(text:gsub("UPDATE \"bücher\"", "UPDATE tickets"), "V2__mixed.sql")
    assert.equals(1, #f, lint.format(f))
    assert.same({ "OR016", 18, 5 }, { f[1].rule, f[1].line, f[1].statement_index })
    -- fixed: the COPY data arrives, as written
    H.write(dir .. "/V2__mixed.sql", (text:gsub("%(1 / 0%)::text", "titel || '!'")))
    local ok = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.is_true(ok.ok, ok.stderr)
    assert.equals("für; alle!", c:value("SELECT titel FROM \"bücher\" WHERE id = 1"))
    assert.equals("'offen!", c:value("SELECT titel FROM \"bücher\" WHERE id = 2"))
    assert.equals(2, c:value("SELECT g()"))
  end)

  it("runs a file wrapped in BEGIN ... COMMIT as its one transaction, naming statements as lint does", function()
    local dir = project {
      ["V1__wrapped.sql"] = "BEGIN;\nCREATE TABLE wrapped (id bigint);\nINSERT INTO wrapped VALUES (1);\nCOMMIT;\n",
      ["V2__wrapped_bad.sql"] = "BEGIN;\nCREATE TABLE later (id bigint);\nINSERT INTO later VALUES ('x');\nCOMMIT;\n",
    }
    local r = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(1, r.code, r.stderr)
    assert.matches("V2__wrapped_bad%.sql failed at .*V2__wrapped_bad%.sql:3 %(statement 2 of 2%)", r.stderr)
    assert.equals(1, c:value("SELECT count(*)::int FROM wrapped"))
    assert.is_false(c:value("SELECT to_regclass('later') IS NOT NULL"))   -- rolled back, COMMIT never ran
    local f = lint.check_sql("BEGIN;\nCREATE TABLE later2 (id bigint);\nUPDATE tickets SET x = 1;\nCOMMIT;\n", "V3__w.sql")
    assert.equals(1, #f, lint.format(f))
    assert.same({ "OR016", 3, 2 }, { f[1].rule, f[1].line, f[1].statement_index })
    -- BEGIN and COMMIT anywhere else are still refused
    H.write(dir .. "/V2__wrapped_bad.sql", "CREATE TABLE later (id bigint);\nCOMMIT;\n")
    local again = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(1, again.code)
    assert.matches("V2__wrapped_bad%.sql:2: COMMIT cannot run inside a transaction", again.stderr)
  end)

  it("runs a file of one CREATE INDEX CONCURRENTLY without a transaction", function()
    local dir = project { ["V1__big.sql"] = "CREATE TABLE big (id bigint);\n",
                          ["V2__idx.sql"] = "-- build it online\nCREATE INDEX CONCURRENTLY big_id ON big (id);\n" }
    local r = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.is_true(r.ok, r.stderr)
    assert.matches("cannot run inside a transaction: running it without one", r.stderr .. r.stdout)
    assert.is_true(c:value("SELECT indisvalid FROM pg_index WHERE indexrelid = 'big_id'::regclass"))
    assert.equals(0, #lint.check_sql(H.read(dir .. "/V2__idx.sql"), "V2__idx.sql"))
  end)

  it("refuses a file the parser rejects with file:line:column, before anything is applied", function()
    local dir = project {
      ["V1__ok.sql"] = "CREATE TABLE first (id bigint);\n",
      ["V2__typo.sql"] = "CREATE TABLE second (id bigint);\n\nALTER TABLE second ADD COLUM x int;\n",
    }
    local r = H.orch { "migrate", "--db", url, "--dir", dir }
    assert.equals(1, r.code)
    assert.matches("V2__typo%.sql does not parse: .*V2__typo%.sql:3:32: syntax error at or near \"int\"; nothing was applied", r.stderr)
    assert.is_false(c:value("SELECT to_regclass('first') IS NOT NULL"))
    local dry = H.orch { "migrate", "--dry-run", "--db", url, "--dir", dir }
    assert.equals(1, dry.code)
    assert.matches("V2__typo%.sql:3:32", dry.stderr)
    local l = H.orch { "lint", "--dir", dir }
    assert.equals(1, l.code)
    assert.matches("V2__typo%.sql:3: error OR000 %(parse%-error%): syntax error at or near \"int\" at column 32", l.stdout)
  end)
end)
