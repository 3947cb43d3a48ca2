-- What the peers' users expect (issue 15 §4), on a real server: undo the
-- last run (Knex's last batch), apply or undo one chosen migration when its
-- dependencies allow, orch current (Alembic's), creating a missing database
-- and waiting for the server (dbmate's --wait and create-if-missing).
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"

local B004 = sys.realpath("tests/fixtures/layouts/brief004/migrations")

local function run(url, dir, ...)
  local argv = { ... }
  for _, a in ipairs { "--db", url, "--dir", dir } do argv[#argv + 1] = a end
  return H.orch(argv, { cwd = H.tmpdir() })
end

local function tables(c)
  local out = {}
  for _, r in ipairs(c:query([[SELECT tablename FROM pg_tables WHERE schemaname = 'public'
      AND tablename <> 'orch_schema_history' ORDER BY 1]])) do out[#out + 1] = r.tablename end
  return out
end

describe("conveniences", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("conv")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  it("undo --run last takes back exactly the newest run (Knex's last batch); --run ID a given one", function()
    local r1 = run(url, B004, "migrate", "--service", "auth-service", "--json")
    assert.is_true(r1.ok, r1.stderr)
    local run1 = json.decode(r1.stdout).run_id
    assert.matches("^%d+T%d+Z%-%x+$", run1)
    local r2 = run(url, B004, "migrate")
    assert.is_true(r2.ok, r2.stderr)
    assert.matches("applied 2 migrations %(run .*orch undo %-%-run last", r2.stdout)
    assert.same({ "customers", "user_preferences", "users" }, tables(c))
    local u = run(url, B004, "undo", "--run", "last", "--yes")
    assert.is_true(u.ok, u.stderr)
    assert.same({ "user_preferences", "users" }, tables(c))   -- run 2 (crm's) only
    u = run(url, B004, "undo", "--run", "last", "--yes")
    assert.is_true(u.ok, u.stderr)
    assert.same({}, tables(c))                                -- then run 1
    u = run(url, B004, "undo", "--run", "last", "--yes")
    assert.equals(1, u.code)
    assert.matches("no applied migration records the run", u.stderr)
    assert.is_true(run(url, B004, "migrate", "--service", "auth-service", "--run-id", "r-auth").ok)
    u = run(url, B004, "undo", "--run", "nope", "--yes")
    assert.equals(1, u.code)
    assert.matches("no applied migration was applied by run nope", u.stderr)
    assert.is_true(run(url, B004, "undo", "--run", "r-auth", "--yes").ok)
    assert.same({}, tables(c))
  end)

  it("migrate --only and undo --only: one chosen migration, when its dependencies allow", function()
    local r = run(url, B004, "migrate", "--only", "20240101_003_crm_create_customers_table.sql")
    assert.equals(1, r.code)
    assert.matches("depends on auth%-service:V20240101.1 .* which is pending and not in this run", r.stderr)
    assert.same({}, tables(c))
    assert.is_true(run(url, B004, "migrate", "--only", "auth-service:20240101_001").ok)
    assert.same({ "users" }, tables(c))
    r = run(url, B004, "migrate", "--only", "20240101_001")
    assert.equals(1, r.code)
    assert.matches("is applied: migrate %-%-only applies a pending migration", r.stderr)
    assert.is_true(run(url, B004, "migrate").ok)
    -- undo one in the middle: refused while something applied depends on it, allowed for a leaf
    r = run(url, B004, "undo", "--only", "auth-service:20240101_002", "--yes")
    assert.equals(1, r.code)
    assert.matches("crm%-service:V20240101.3 .* is applied and depends on it", r.stderr)
    r = run(url, B004, "undo", "--only", "20240102_002", "--yes")
    assert.is_true(r.ok, r.stderr)
    assert.equals(0, c:value("SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'status'"))
    r = run(url, B004, "undo", "--only", "V99", "--yes")
    assert.equals(2, r.code)
    assert.matches("no migration 'V99'", r.stderr)
  end)

  it("orch current prints the version in one line, and --json", function()
    local dir = sys.realpath("tests/fixtures/layouts/brief002/migrations")
    local r = run(url, dir, "current")
    assert.is_true(r.ok, r.stderr)
    assert.equals("none, 3 pending\n", r.stdout)
    assert.is_true(run(url, dir, "migrate", "--only", "1").ok)
    r = run(url, dir, "current")
    assert.equals("1 (001_initial_schema.lua), 2 pending\n", r.stdout)
    local url2, name2 = H.fresh_db("conv")
    assert.is_true(run(url2, B004, "migrate").ok)
    local j = json.decode(run(url2, B004, "current", "--json").stdout)
    assert.equals("20240102.1", j.current["auth-service"].version)
    assert.equals("20240102.2", j.current["crm-service"].version)
    assert.equals(0, j.pending)
    assert.equals("auth-service:20240102.1 crm-service:20240102.2\n", run(url2, B004, "current").stdout)
    H.drop_db(name2)
  end)

  it("--create-db (or database.create) makes a missing database; without it the error says how", function()
    local newname = name .. "_new"
    local newurl = url:gsub("/[^/?]*$", "/" .. newname)
    local r = run(newurl, B004, "status")
    assert.equals(1, r.code)
    assert.matches('database "' .. newname .. '" does not exist', r.stderr)
    assert.matches("pass %-%-create%-db", r.stderr)
    r = run(newurl, B004, "migrate", "--create-db")
    assert.is_true(r.ok, r.stderr)
    assert.matches("created database " .. newname, r.stderr)
    local n <close> = db.connect(newurl)
    assert.equals(5, n:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    n:close()
    H.drop_db(newname)
    -- the environment's setting
    local envdir = H.tmpdir()
    H.write(envdir .. "/orch.env.lua", "return { ci = { database = { create = true } } }\n")
    r = H.orch({ "migrate", "--db", newurl, "--dir", B004, "--env", "ci" }, { cwd = envdir })
    assert.is_true(r.ok, r.stderr)
    H.drop_db(newname)
  end)

  it("--wait retries a server that does not answer, with backoff within its bound, then says so; an answering one at once", function()
    local t0 = sys.monotonic()
    local r = run("postgresql://postgres@127.0.0.1:1/x", B004, "status", "--wait", "1500ms")
    assert.equals(1, r.code)
    assert.matches("the server did not accept connections within 1500ms %((%d+) attempts%)", r.stderr)
    assert.is_true(tonumber(r.stderr:match("within 1500ms %((%d+) attempts")) >= 3)
    local took = sys.monotonic() - t0
    assert.is_true(took >= 1.4 and took < 10, "took " .. took)
    -- without --wait: one attempt, at once
    r = run("postgresql://postgres@127.0.0.1:1/x", B004, "status")
    assert.equals(1, r.code)
    assert.not_matches("did not accept connections within", r.stderr)
    r = run(url, B004, "status", "--wait", "5s")
    assert.is_true(r.ok, r.stderr)
    -- orch backup waits the same way
    r = H.orch({ "backup", "--db", "postgresql://postgres@127.0.0.1:1/x", "--output", H.tmpdir() .. "/x.dump", "--wait", "1s" }, { cwd = H.tmpdir() })
    assert.equals(1, r.code)
    assert.matches("the server did not accept connections within 1s", r.stderr)
    -- and so do restore and verify --deep, which connect on their own later; with a server that
    -- answers, the backup of a live database restores and verifies with --wait
    local work = H.tmpdir()
    local b = H.orch({ "backup", "--db", url, "--output", work .. "/w.dump", "--wait", "5s" }, { cwd = work })
    assert.is_true(b.ok, b.stderr)
    for _, argv in ipairs {
      { "restore", work .. "/w.dump", "--db", "postgresql://postgres@127.0.0.1:1/x", "--wait", "1s" },
      { "verify", work .. "/w.dump", "--deep", "--db", "postgresql://postgres@127.0.0.1:1/x", "--wait", "1s" },
    } do
      r = H.orch(argv, { cwd = work })
      assert.equals(1, r.code, argv[1] .. ": " .. r.stdout .. r.stderr)
      assert.matches("the server did not accept connections within 1s %(%d+ attempts%)", r.stderr)
    end
    local rurl, rname = H.fresh_db("cv_wait")
    r = H.orch({ "restore", work .. "/w.dump", "--db", rurl, "--wait", "5s" }, { cwd = work })
    assert.is_true(r.ok, r.stderr)
    r = H.orch({ "verify", work .. "/w.dump", "--deep", "--db", rurl, "--wait", "5s" }, { cwd = work })
    assert.is_true(r.ok, r.stderr)
    H.drop_db(rname)
  end)

  it("writes a schema snapshot after migrate with orch's own catalog code, and orch drift names each difference", function()
    local dir = H.tmpdir()
    for _, f in ipairs(sys.listdir(B004)) do
      if f:match("%-service$") then
        for _, k in ipairs { "schema", "data", "seeds", "rollback" } do
          sys.mkdir_p(dir .. "/" .. f .. "/" .. k)
          for _, m in ipairs(sys.listdir(B004 .. "/" .. f .. "/" .. k) or {}) do
            local src = assert(io.open(B004 .. "/" .. f .. "/" .. k .. "/" .. m, "rb"))
            H.write(dir .. "/" .. f .. "/" .. k .. "/" .. m, src:read("a"))
            src:close()
          end
        end
      end
    end
    local r = run(url, dir, "migrate", "--schema-file", dir .. "/schema.sql")
    assert.is_true(r.ok, r.stderr)
    local f = assert(io.open(dir .. "/schema.sql", "rb"))
    local text = f:read("a")
    f:close()
    assert.matches("%-%- Name: users; Type: TABLE; Schema: public\n%-%-\nCREATE TABLE \"public\".\"users\"", text)
    assert.matches("Name: idx_users_email; Type: INDEX", text)
    assert.not_matches("pg_dump", text)
    -- the snapshot in the migrations directory is not taken for a migration; no drift yet
    r = run(url, dir, "drift")
    assert.is_true(r.ok, r.stderr)
    assert.matches("no drift", r.stdout)
    -- someone changes production by hand: each difference by name
    c:exec("ALTER TABLE users ADD COLUMN nickname text; CREATE INDEX customers_name_idx ON customers (name); DROP INDEX idx_users_email")
    r = run(url, dir, "drift")
    assert.equals(1, r.code)
    assert.matches("changed  TABLE public.users: line %d+ of its definition", r.stdout)
    assert.matches("missing  INDEX public.idx_users_email: in .*schema.sql, not in the database", r.stdout)
    assert.matches("extra    INDEX public.customers_name_idx: in the database, not in", r.stdout)
    local j = json.decode(run(url, dir, "drift", "--json").stdout)
    assert.equals(3, #j.differences)
  end)

  it("runs verify scripts after apply (a failing one rolls the migration back) and again with validate --verify", function()
    local dir = H.tmpdir()
    H.write(dir .. "/V1__items.sql", "CREATE TABLE items (id int PRIMARY KEY, name text);\n")
    H.write(dir .. "/V1__items.verify.sql", "SELECT id, name FROM items WHERE false;\n")
    H.write(dir .. "/V2__owner.lua", [[return {
      up = function(db) db:exec("ALTER TABLE items ADD COLUMN owner text") end,
      verify = function(db) db:query("SELECT owner FROM items WHERE false") end,
    }]])
    H.write(dir .. "/V3__broken.sql", "CREATE TABLE tags (id int);\n")
    H.write(dir .. "/V3__broken.verify.sql", "SELECT label FROM tags WHERE false;\n")
    local r = run(url, dir, "migrate")
    assert.equals(1, r.code)
    assert.matches("verify of V3__broken.sql failed at .*V3__broken.verify.sql:1", r.stderr)
    assert.matches('column "label" does not exist', r.stderr)
    assert.is_false(c:value("SELECT to_regclass('tags') IS NOT NULL"))   -- rolled back with its migration
    assert.equals(2, c:value("SELECT count(*) FROM orch_schema_history WHERE success"))
    os.remove(dir .. "/V3__broken.sql"); os.remove(dir .. "/V3__broken.verify.sql")
    assert.is_true(run(url, dir, "validate", "--verify").ok)
    -- after deploy someone drops a column the migrations made: validate --verify catches it, naming the script
    c:exec("ALTER TABLE items DROP COLUMN name")
    assert.is_true(run(url, dir, "validate").ok)   -- checksums alone cannot see it
    r = run(url, dir, "validate", "--verify")
    assert.equals(1, r.code)
    assert.matches("V1__items.verify.sql: .*column \"name\" does not exist", r.stderr)
    c:exec("ALTER TABLE items DROP COLUMN owner")
    local j = json.decode(run(url, dir, "validate", "--verify", "--json").stdout)
    assert.equals(2, #j.problems)
  end)
end)
