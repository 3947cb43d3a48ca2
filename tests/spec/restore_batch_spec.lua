-- orch restore sends runs of plain DDL entries in batches (one round trip
-- each): a batch that fails is run again entry by entry, so the error names
-- the entry that failed, and the target ends as the mode promises.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

describe("orch restore batches plain DDL", function()
  local work, src, archive
  setup(function()
    work = H.tmpdir()
    local url
    url, src = H.fresh_db("batch_src")
    local c <close> = db.connect(url)
    local sql = {}
    for i = 1, 60 do
      sql[#sql + 1] = string.format("CREATE TABLE t%d (id int PRIMARY KEY, v text); COMMENT ON TABLE t%d IS 'table %d'; " ..
        "CREATE VIEW v%d AS SELECT id FROM t%d;", i, i, i, i, i)
    end
    c:exec(table.concat(sql, "\n"))
    c:exec("INSERT INTO t1 SELECT g, 'x' FROM generate_series(1, 10) g")
    local r = H.orch { "backup", "--db", url, "--dir", work .. "/b", "--json" }
    assert.is_true(r.ok, r.stderr)
    archive = json.decode(r.stdout).path
  end)
  teardown(function()
    H.drop_db(src)
    sys.rmtree(work)
  end)

  it("restores a schema of many plain entries exactly", function()
    for _, jobs in ipairs { "1", "2" } do
      local url, dst = H.fresh_db("batch_ok")
      local r = H.orch { "restore", archive, "--db", url, "--jobs", jobs }
      assert.is_true(r.ok, r.stderr)
      H.same_database(src, dst)
      H.drop_db(dst)
    end
  end)

  -- an event trigger in the target refuses one CREATE VIEW in the middle of the schema
  for _, jobs in ipairs { "1", "2" } do
    it(string.format("--jobs %s: names the entry that failed inside a batch, and the default mode empties the target again", jobs), function()
      local url, dst = H.fresh_db("batch_fail")
      local c <close> = db.connect(url)
      c:exec([[CREATE FUNCTION refuse_v37() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.v37') THEN
            RAISE EXCEPTION 'v37 is refused here';
          END IF;
        END $$;
        CREATE EVENT TRIGGER refuse_v37 ON ddl_command_end EXECUTE FUNCTION refuse_v37();]])
      local r = H.orch { "restore", archive, "--db", url, "--jobs", jobs }
      assert.equals(1, r.code, r.stdout .. r.stderr)
      assert.matches("v37 is refused here", r.stderr)
      assert.matches("entry %d+ %(VIEW public%.v37%)", r.stderr)
      assert.matches("what was restored was dropped again: the target is as empty as it was", r.stderr)
      assert.equals(0, c:value("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"))
      c:exec("DROP EVENT TRIGGER refuse_v37")
      c:close()
      H.drop_db(dst)
    end)
  end
end)
