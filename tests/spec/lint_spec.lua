-- orch.lint: each built-in rule fires on its risky statement, stays quiet
-- on the safe form, can be suppressed, and teams can add rules.
local lint = require "orch.lint"
local H = require "helper"

local function ids(sql)
  local out = {}
  for _, f in ipairs(lint.check_sql(sql, "V9__x.sql")) do out[#out + 1] = f.rule end
  table.sort(out)
  return table.concat(out, ",")
end

describe("orch.lint", function()
  it("flags the risky operations of the product brief", function()
    assert.equals("OR001", ids("DROP TABLE tickets;"))
    assert.equals("OR002", ids("ALTER TABLE tickets DROP COLUMN legacy;"))
    assert.equals("OR003", ids("ALTER TABLE tickets RENAME COLUMN title TO subject;"))
    assert.equals("OR004", ids("ALTER TABLE tickets RENAME TO issues;"))
    assert.equals("OR005", ids("ALTER TABLE tickets ALTER COLUMN priority TYPE text;"))
    assert.equals("OR006", ids("ALTER TABLE tickets ADD COLUMN region text NOT NULL;"))
    assert.equals("OR007", ids("ALTER TABLE tickets ALTER COLUMN region SET NOT NULL;"))
    assert.equals("OR008", ids("CREATE INDEX tickets_region ON tickets (region);"))
    assert.equals("OR009", ids("ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id);"))
    assert.equals("OR010", ids("ALTER TABLE tickets ADD CONSTRAINT positive CHECK (id > 0);"))
    assert.equals("OR016", ids("UPDATE tickets SET region = 'eu';"))
  end)

  it("stays quiet on the safe forms", function()
    assert.equals("", ids("ALTER TABLE tickets ADD COLUMN region text NOT NULL DEFAULT 'eu';"))
    assert.equals("", ids("CREATE INDEX CONCURRENTLY tickets_region ON tickets (region);"))
    assert.equals("", ids("ALTER TABLE comments ADD CONSTRAINT c_fk FOREIGN KEY (ticket_id) REFERENCES tickets (id) NOT VALID;"))
    assert.equals("", ids("UPDATE tickets SET region = 'eu' WHERE id < 1000;"))
  end)

  it("treats tables created earlier in the same file as new", function()
    assert.equals("", ids("CREATE TABLE t (id int);\nCREATE INDEX t_id ON t (id);\nALTER TABLE t ADD COLUMN x int NOT NULL;"))
  end)

  it("gives file, line, severity and a fix hint", function()
    local f = lint.check_sql("SELECT 1;\n\nCREATE INDEX i ON big (x);", "V9__x.sql")[1]
    assert.equals("V9__x.sql", f.file)
    assert.equals(3, f.line)
    assert.equals("warning", f.severity)
    assert.matches("CONCURRENTLY", f.hint)
  end)

  it("honours a suppression comment for one statement", function()
    assert.equals("OR008", ids("-- orch:lint-ignore OR001\nDROP TABLE old;\nCREATE INDEX i ON big (x);"))
    assert.equals("", ids("DROP TABLE old; -- not this one\n-- orch:lint-ignore\nCREATE INDEX i ON big (x);"):gsub("OR001", ""))
  end)

  it("runs team rules from orch.lint.lua, and the CLI fails on errors", function()
    local dir = H.tmpdir()
    H.write(dir .. "/orch.lint.lua", [[return { { id = "TEAM1", name = "no-serial", severity = "error",
      hint = "use identity columns", check = function(s) if s.norm:match(" SERIAL") then return "uses serial" end end } }]])
    require("orch.sys").mkdir_p(dir .. "/migrations")
    H.write(dir .. "/migrations/V1__t.sql", "CREATE TABLE t (id serial PRIMARY KEY);\n")
    local r = H.orch({ "lint" }, { cwd = dir })
    assert.equals(1, r.code)
    assert.matches("V1__t%.sql:1: error TEAM1 %(no%-serial%): uses serial", r.stdout)
    H.write(dir .. "/migrations/V1__t.sql", "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n")
    local ok = H.orch({ "lint", "--json" }, { cwd = dir })
    assert.is_true(ok.ok, ok.stderr)
    assert.equals(0, require("orch.json").decode(ok.stdout).errors)
  end)
end)
