-- orch parses migrations with PostgreSQL 15's grammar (libpg_query): on a
-- server of that major or older a file the parser rejects is refused before
-- anything runs, with file:line:column; on a newer server, whose syntax the
-- grammar may not know, it is split by tokens and the server judges it.
-- ctest: every major
local H = require "helper"
local db = require "orch.db"

-- IS JSON is PostgreSQL 16's: PostgreSQL 15's grammar rejects it
local NEWER = "CREATE TABLE j (ok boolean);\nINSERT INTO j SELECT '{}' IS JSON;\n"

describe("a migration with syntax newer than PostgreSQL 15's grammar", function()
  for _, major in ipairs(H.test_majors()) do
    it("on PostgreSQL " .. major .. (major > 15 and " is run, the server judging it" or " is refused at file:line:column, nothing applied"), function()
      local url, name = H.fresh_db("grammar", major)
      local dir = H.tmpdir()
      H.write(dir .. "/V1__first.sql", "CREATE TABLE first (id bigint);\n")
      H.write(dir .. "/V2__json.sql", NEWER)
      local r = H.orch { "migrate", "--db", url, "--dir", dir }
      local c <close> = db.connect(url)
      if major > 15 then
        assert.is_true(r.ok, r.stderr)
        assert.matches("V2__json%.sql: PostgreSQL 15's grammar rejects .*V2__json%.sql:2:30: syntax error at or near \"JSON\"; the server is newer", r.stderr)
        assert.is_true(c:value("SELECT ok FROM j"))
      else
        assert.equals(1, r.code, r.stderr)
        assert.matches("V2__json%.sql does not parse: .*V2__json%.sql:2:30: syntax error at or near \"JSON\"; nothing was applied", r.stderr)
        assert.is_false(c:value("SELECT to_regclass('first') IS NOT NULL"))
      end
      c:close()
      H.drop_db(name, major)
    end)
  end
end)
