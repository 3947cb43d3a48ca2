-- Nothing is left out silently: a catalog entry orch does not recognise
-- fails the backup naming the object and its --skip name, and --skip KIND
-- leaves out exactly that kind (and what hangs on its objects), saying so
-- in the output and the manifest. Unknown objects are made honestly: the
-- test-only ORCH_TEST_WITHOUT_KINDS drops a kind module from C.KINDS, so
-- orch knows its objects no more than a future server's new kind.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local catalog = require "orch.backup.catalog"

-- How many objects of each kind a database has (user objects only).
local CENSUS = [[
SELECT k, n FROM (
  SELECT 'table' AS k, count(*) AS n FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND s.nspname !~ '^pg_' AND s.nspname <> 'information_schema'
  UNION ALL SELECT 'view', count(*) FROM pg_class WHERE relkind = 'v' AND oid >= 16384
  UNION ALL SELECT 'materialized_view', count(*) FROM pg_class WHERE relkind = 'm' AND oid >= 16384
  UNION ALL SELECT 'sequence', count(*) FROM pg_class WHERE relkind = 'S' AND oid >= 16384
  UNION ALL SELECT 'index', count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname !~ '^pg_' AND s.nspname <> 'information_schema'
    AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
  UNION ALL SELECT 'constraint', count(*) FROM pg_constraint WHERE oid >= 16384 AND contype <> 'f'
  UNION ALL SELECT 'foreign_key', count(*) FROM pg_constraint WHERE oid >= 16384 AND contype = 'f'
  UNION ALL SELECT 'trigger', count(*) FROM pg_trigger WHERE NOT tgisinternal AND oid >= 16384
  UNION ALL SELECT 'rule', count(*) FROM pg_rewrite WHERE rulename <> '_RETURN' AND oid >= 16384
  UNION ALL SELECT 'policy', count(*) FROM pg_policy
  UNION ALL SELECT 'row_security', count(*) FROM pg_class WHERE relrowsecurity
  UNION ALL SELECT 'function', count(*) FROM pg_proc p WHERE p.oid >= 16384 AND p.prokind IN ('f', 'p')
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
  UNION ALL SELECT 'aggregate', count(*) FROM pg_proc WHERE oid >= 16384 AND prokind = 'a'
  UNION ALL SELECT 'type', count(*) FROM pg_type t WHERE t.oid >= 16384 AND t.typtype IN ('e', 'r', 'd')
  UNION ALL SELECT 'schema', count(*) FROM pg_namespace WHERE oid >= 16384
  UNION ALL SELECT 'extension', count(*) FROM pg_extension WHERE extname <> 'plpgsql'
  UNION ALL SELECT 'large_object', count(*) FROM pg_largeobject_metadata
  UNION ALL SELECT 'comment', count(*) FROM pg_description WHERE objoid >= 16384
) x ORDER BY k]]

local function census(dbname)
  local c <close> = H.connect(dbname)
  local out = {}
  for _, r in ipairs(c:query(CENSUS)) do out[r.k] = r.n end
  return out
end

describe("coverage: nothing left out silently", function()
  local work, src
  setup(function()
    work = H.tmpdir()
    local c <close> = H.connect("postgres")
    for _, r in ipairs { "orch_owner_t", "orch_reader_t", "orch_lo_owner", "orch_lo_reader" } do
      H.ensure_role(c, r)
    end
    local url
    url, src = H.fresh_db("cov_src")
    local s <close> = db.connect(url)
    s:exec(H.read("tests/fixtures/allkinds.sql"))
    s:exec("SELECT lo_from_bytea(0, 'a large object'::bytea); CREATE INDEX legacy_note ON app.legacy (note)")
  end)
  teardown(function() H.drop_db(src) end)

  -- a kind module, the --skip name of its objects, and one of them as the server names it
  local CASES = {
    { module = "policies", skip = "policy", names = "policy people_read on table app.people" },
    { module = "rules", skip = "rule", names = "rule legacy_log on table app.legacy" },
    { module = "triggers", skip = "trigger", names = "trigger people_touch on table app.people" },
    { module = "indexes", skip = "index", names = "index app.people_doc" },
    { module = "large_objects", skip = "large_object", names = "large object" },
    { module = "types", skip = "type", names = "type app.mood" },
    { module = "functions", skip = "function", names = "function app.touch()" },
  }

  for _, case in ipairs(CASES) do
    it("without the " .. case.module .. " module its objects are unknown: the backup fails naming them and --skip " .. case.skip, function()
      local dir = work .. "/" .. case.module
      local r = H.orch({ "backup", "--db", H.cluster():url(src), "--dir", dir }, { env = { ORCH_TEST_WITHOUT_KINDS = case.module } })
      assert.equals(1, r.code, r.stderr)
      assert.matches("orch cannot back up these objects, so the backup was not taken", r.stderr, 1, true)
      assert.matches(case.names, r.stderr, 1, true)
      assert.matches("--skip " .. case.skip, r.stderr, 1, true)
      assert.matches("ORCH_TEST_WITHOUT_KINDS is set", r.stderr, 1, true)
      -- nothing was written
      for _, f in ipairs(sys.listdir(dir) or {}) do assert.is_nil(f:match("%.dump$"), f) end
    end)
  end

  it("an unknown ORCH_TEST_WITHOUT_KINDS name is refused, never ignored", function()
    local r = H.orch({ "backup", "--db", H.cluster():url(src), "--dir", work .. "/bad" }, { env = { ORCH_TEST_WITHOUT_KINDS = "polices" } })
    assert.equals(2, r.code)
    assert.matches("ORCH_TEST_WITHOUT_KINDS names polices, which is not a kind module", r.stderr, 1, true)
  end)

  -- kinds that can be left out of this database and still give a restorable archive
  for _, kind in ipairs { "trigger", "policy", "rule", "index", "large_object" } do
    it("--skip " .. kind .. " leaves exactly that kind out and says so in the output and the manifest", function()
      local r = H.orch { "backup", "--db", H.cluster():url(src), "--dir", work .. "/skip_" .. kind, "--skip", kind, "--json" }
      assert.is_true(r.ok, r.stderr)
      local m = json.decode(r.stdout)
      assert.equals(1, #m.skipped)
      assert.equals(kind, m.skipped[1].kind)
      assert.is_true(m.skipped[1].count > 0)
      local text = H.orch { "backup", "--db", H.cluster():url(src), "--dir", work .. "/skip_" .. kind, "--skip", kind }
      assert.is_true(text.ok, text.stderr)
      assert.matches("left out (--skip " .. kind .. "): " .. m.skipped[1].count .. " object", text.stderr, 1, true)
      local url, dst = H.fresh_db("cov_skip")
      local rr = H.orch { "restore", m.path, "--db", url }
      assert.is_true(rr.ok, rr.stderr)
      local want, got = census(src), census(dst)
      local census_kind = kind
      assert.is_true(want[census_kind] > 0)
      assert.equals(0, got[census_kind])
      if kind == "policy" then assert.equals(0, got.row_security); want.row_security = 0 end
      -- comments on what was left out go with it
      want.comment, got.comment = nil, nil
      want[census_kind] = 0
      assert.same(want, got)
      H.drop_db(dst)
    end)
  end

  it("--skip of a kind the database does not have says it matched nothing", function()
    local r = H.orch { "backup", "--db", H.cluster():url(src), "--dir", work .. "/none", "--skip", "event_trigger" }
    assert.is_true(r.ok, r.stderr)
    assert.matches("--skip event_trigger matched nothing in this database", r.stderr, 1, true)
  end)
end)
