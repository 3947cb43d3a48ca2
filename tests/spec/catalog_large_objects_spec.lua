-- Large objects in orch's own backups: a BLOB entry per object and one
-- BLOBS data entry, restored by orch and by pg_restore 15 with contents,
-- owners, privileges and comments; pg_dump's archives restored by orch the
-- same. Fixture: tests/fixtures/kinds/large_objects.sql (500 small objects,
-- an empty one, a 6 MiB one, one made with lo_create(42)).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

-- Every large object: oid, owner, ACL (items sorted), comment, size and MD5.
local LO_FACTS = [[
SELECT m.oid::text || ' ' || pg_get_userbyid(m.lomowner) || ' acl=' ||
       coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(m.lomacl) a), 'default') ||
       ' comment=' || coalesce(obj_description(m.oid, 'pg_largeobject'), '-') ||
       ' size=' || length(lo_get(m.oid)) || ' md5=' || md5(lo_get(m.oid)) AS line
  FROM pg_largeobject_metadata m ORDER BY m.oid]]

local function lo_facts(dbname)
  local c <close> = H.connect(dbname)
  local out = {}
  for _, r in ipairs(c:query(LO_FACTS)) do out[#out + 1] = r.line end
  return out
end

describe("large objects", function()
  local work, src
  setup(function()
    work = H.tmpdir()
    local c <close> = H.connect("postgres")
    for _, r in ipairs { "orch_lo_owner", "orch_lo_reader" } do
      H.ensure_role(c, r)
    end
    local url
    url, src = H.fresh_db("lo_src")
    local s <close> = db.connect(url)
    s:exec(H.read("tests/fixtures/kinds/large_objects.sql"))
  end)
  teardown(function() H.drop_db(src) end)

  local function backup(extra)
    local argv = { "backup", "--db", H.cluster():url(src), "--dir", work, "--json" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = H.orch(argv)
    assert.is_true(r.ok, r.stderr)
    return json.decode(r.stdout), r
  end

  it("the fixture holds many small objects, an empty one, a multi-MB one and one below oid 16384", function()
    local f = lo_facts(src)
    assert.equals(503, #f)
    assert.matches("^42 postgres acl=", f[1])
    local text = table.concat(f, "\n")
    assert.matches(" size=0 md5=d41d8cd98f00b204e9800998ecf8427e", text, 1, true)
    assert.matches("comment=six megabytes size=6291456", text, 1, true)
    assert.matches("orch_lo_owner=r/orch_lo_reader", text, 1, true)
  end)

  it("orch backup -> pg_restore 15: contents, owners, privileges and comments", function()
    local m = backup()
    assert.equals(503, m.large_objects)
    -- 6 MiB, 3 bytes in object 42, and 'small object 1' ... 'small object 500'
    assert.equals(6291456 + 3 + 500 * 13 + 9 + 90 * 2 + 401 * 3, m.large_object_bytes)
    local l = H.pgtool("pg_restore", { "-l", m.path })
    assert.is_true(l.ok, l.stderr)
    assert.matches("BLOB %- 42 postgres", l.stdout)
    assert.matches("COMMENT %- LARGE OBJECT 42", l.stdout)
    assert.matches("BLOBS %- BLOBS", l.stdout)
    for _, how in ipairs { "serial", "parallel" } do
      local _, dst = H.fresh_db("lo_pgr")
      local argv = { "-d", dst, "--exit-on-error", m.path }
      if how == "parallel" then table.insert(argv, 1, "-j2") end
      local r = H.pgtool("pg_restore", argv)
      assert.is_true(r.ok, r.stderr)
      assert.same(lo_facts(src), lo_facts(dst))
      assert.same(H.contents_of(src), H.contents_of(dst))
      H.drop_db(dst)
    end
  end)

  it("orch backup -> orch restore, and verify --deep finds every object back", function()
    local m = backup()
    local url, dst = H.fresh_db("lo_orch")
    local r = H.orch { "restore", m.path, "--db", url }
    assert.is_true(r.ok, r.stderr)
    assert.same(lo_facts(src), lo_facts(dst))
    local v = H.orch { "verify", m.path, "--deep", "--db", H.cluster():url("postgres") }
    assert.is_true(v.ok, v.stderr)
    assert.matches("large objects too", v.stdout, 1, true)
    H.drop_db(dst)
  end)

  it("pg_dump -Fc -> orch restore gives what pg_restore gives", function()
    local dump = work .. "/lo.pgdump"
    assert.is_true(H.pgtool("pg_dump", { "-Fc", "-f", dump, "-d", src }).ok)
    local _, judge = H.fresh_db("lo_judge")
    assert.is_true(H.pgtool("pg_restore", { "-d", judge, "--exit-on-error", dump }).ok)
    local url, dst = H.fresh_db("lo_viaorch")
    local r = H.orch { "restore", dump, "--db", url }
    assert.is_true(r.ok, r.stderr)
    assert.same(lo_facts(judge), lo_facts(dst))
    assert.same(lo_facts(src), lo_facts(dst))
    H.drop_db(judge); H.drop_db(dst)
  end)

  it("--skip large_object leaves every one out and says so", function()
    local m, r = backup { "--skip", "large_object" }
    assert.equals(0, m.large_objects)
    assert.equals("large_object", m.skipped[1].kind)
    assert.equals(503, m.skipped[1].count)
    local url, dst = H.fresh_db("lo_skip")
    assert.is_true(H.orch({ "restore", m.path, "--db", url }).ok)
    assert.same({}, lo_facts(dst))
    assert.same(H.contents_of(src, nil, { large_objects = false }), H.contents_of(dst))
    H.drop_db(dst)
    local text = H.orch { "backup", "--db", H.cluster():url(src), "--dir", work, "--skip", "large_object" }
    assert.is_true(text.ok, text.stderr)
    assert.matches("left out (--skip large_object): 503 objects, NOT in this backup", text.stderr, 1, true)
  end)
end)
