-- orch.backup.writes: what was written since a backup, measured from the
-- rows against the backup's snapshot. It must never say "nothing" when a row
-- was inserted, updated or deleted, whoever did it and whatever VACUUM did
-- since; and a database nobody wrote to measures as unchanged.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local backup = require "orch.backup"
local writes = require "orch.backup.writes"

local function by_name(w)
  local out = {}
  for _, t in ipairs(w.tables) do out[t.name] = t end
  return out
end

describe("orch.backup.writes", function()
  local url, name, dir, c, m
  before_each(function()
    url, name = H.fresh_db("writes")
    dir = H.tmpdir()
    c = db.connect(url)
    c:exec([[CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, 'x' FROM generate_series(1, 50) g;
             CREATE TABLE b (id int); INSERT INTO b SELECT generate_series(1, 10);
             CREATE TABLE gone (id int); INSERT INTO gone VALUES (1), (2)]])
    m = backup.create(c, { dir = dir })
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
    sys.rmtree(dir)
  end)

  it("records the backup's snapshot and the server's counters in the manifest", function()
    local mf = backup.read_manifest(m.path)
    assert.matches("^%d+:%d+:", mf.since.snapshot)
    assert.is_number(mf.since.database_oid)
    assert.is_table(mf.since.counters["public.a"])
  end)

  it("a database nobody wrote to measures as unchanged, even after VACUUM FREEZE and rolled-back writes", function()
    c:exec("BEGIN; INSERT INTO a VALUES (1000, 'never'); DELETE FROM b; ROLLBACK")
    c:exec("VACUUM (FREEZE) a")
    c:exec("VACUUM (FREEZE) b")
    local w = writes.measure(c, backup.read_manifest(m.path))
    assert.is_true(w.measurable)
    assert.is_false(w.changed, writes.summary(w))
  end)

  it("counts inserts, updates and deletes per table, a table created since, and names one dropped since", function()
    c:exec("INSERT INTO a VALUES (51, 'new'), (52, 'new')")
    c:exec("UPDATE a SET v = 'changed' WHERE id = 1")
    c:exec("DELETE FROM b WHERE id <= 3")
    c:exec("CREATE TABLE fresh (id int); INSERT INTO fresh VALUES (1), (2), (3)")
    c:exec("DROP TABLE gone")
    -- freezing must not hide a write: PostgreSQL keeps the raw xmin of a frozen row
    c:exec("VACUUM (FREEZE) a")
    local w = writes.measure(c, backup.read_manifest(m.path))
    assert.is_true(w.changed)
    local t = by_name(w)
    assert.equals(3, t["public.a"].new)     -- two inserted, one updated
    assert.equals(1, t["public.a"].gone)    -- the updated row's backup version
    assert.equals(0, t["public.b"].new)
    assert.equals(3, t["public.b"].gone)
    assert.equals(3, t["public.fresh"].new)
    assert.is_true(t["public.fresh"].created)
    assert.same({ "public.gone (2 rows in the backup)" }, w.dropped)
    local text = table.concat(writes.lines(w), "\n")
    assert.matches("public%.a: 3 rows new or changed, 1 row of the backup deleted or changed", text)
    assert.matches("public%.fresh: 3 rows new or changed %(a table created since the backup%)", text)
  end)

  it("a truncate, and a write by another session still in flight when measured, then committed, are seen", function()
    c:exec("TRUNCATE b")
    local w = writes.measure(c, backup.read_manifest(m.path), { exclude = { "public.a" } })
    assert.equals(10, by_name(w)["public.b"].gone)
    assert.is_nil(by_name(w)["public.a"])
    local other <close> = db.connect(url)
    other:exec("BEGIN; INSERT INTO a VALUES (77, 'late')")
    assert.is_nil(by_name(writes.measure(c, backup.read_manifest(m.path)))["public.a"])   -- not committed: not a write yet
    other:exec("COMMIT")
    assert.equals(1, by_name(writes.measure(c, backup.read_manifest(m.path)))["public.a"].new)
  end)

  it("another database, or a manifest without a snapshot, cannot be judged: measurable = false, changed = true", function()
    local url2, name2 = H.fresh_db("writes_other")
    local c2 <close> = db.connect(url2)
    local w = writes.measure(c2, backup.read_manifest(m.path))
    assert.is_false(w.measurable)
    assert.is_true(w.changed)
    assert.matches("not the database the backup was taken from", w.why)
    c2:close()
    H.drop_db(name2)
    local old = backup.read_manifest(m.path)
    old.since = nil
    local w2 = writes.measure(c, old)
    assert.is_false(w2.measurable)
    assert.is_true(w2.changed)
  end)
end)
