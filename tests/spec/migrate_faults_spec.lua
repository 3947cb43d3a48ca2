-- Defects of the fault review in migrations (issue 10 §4), each with the
-- test that names it: ctx.batch paging text keys by byte order under a
-- non-C collation, unreadable migration files taken for "up to date", a
-- non-transactional migration cut by a server restart shown as pending,
-- INVALID indexes left by failed concurrent builds, and the statement
-- splitter and checksum (made linear) giving the same answers as before.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local files = require "orch.migrate.files"
local localpg = require "orch.localpg"

local function project_dir(list)
  local dir = H.tmpdir()
  for name, text in pairs(list) do
    local p = dir .. "/" .. name
    sys.mkdir_p(p:match("^(.*)/"))
    H.write(p, text)
  end
  return dir
end

local function run(url, dir, ...)
  local argv = { ... }
  -- the cases make their tables by hand before the first migrate (orch migrate refuses that by default, see layouts_spec)
  if argv[1] == "migrate" then table.insert(argv, "--allow-non-empty") end
  table.insert(argv, 2, "--db"); table.insert(argv, 3, url)
  table.insert(argv, 4, "--dir"); table.insert(argv, 5, dir)
  return H.orch(argv)
end

describe("migration faults", function()
  local url, name, c
  before_each(function()
    url, name = H.fresh_db("mf")
    c = db.connect(url)
  end)
  after_each(function()
    c:close()
    H.drop_db(name)
  end)

  describe("ctx.batch pages by the key in the database's own order", function()
    local function batch_migration(tbl, key)
      return project_dir { ["V1__touch.lua"] = string.format([[
return { transaction = false, up = function(db, ctx)
  ctx.batch { table = %q, key = %s, size = 7, set = "n = n + 1" }
end }]], tbl, key) }
    end
    local function each_once(tbl, total)
      assert.equals(total, c:value("SELECT count(*) FROM " .. tbl))
      assert.equals(0, c:value("SELECT count(*) FROM " .. tbl .. " WHERE n <> 1"), "rows updated twice or never")
    end
    -- words whose byte order differs from a linguistic one: case, accents, punctuation
    local WORDS = [[SELECT w FROM unnest(ARRAY['apple', 'Apple', 'banana', 'Banana', 'cherry', '_under', 'Zebra', 'zebra', 'élan', 'Eel',
      'eel', 'ångström', 'a-b', 'ab', 'a b', 'Äpfel', 'äpfel', 'Ö', 'o', 'O', '1a', 'A1', 'x_y', 'xy', 'X', 'Œuvre', 'oeuvre', 'ß', 'ss', 'St']) w]]

    it("a text key in an ICU collation: every row exactly once", function()
      c:exec([[CREATE TABLE words (w text COLLATE "en-x-icu" PRIMARY KEY, n int NOT NULL DEFAULT 0)]])
      c:exec("INSERT INTO words (w) " .. WORDS)
      c:exec("INSERT INTO words (w) SELECT 'w' || g || CASE WHEN g % 2 = 0 THEN 'A' ELSE 'a' END FROM generate_series(1, 200) g")
      local r = run(url, batch_migration("words", '"w"'), "migrate")
      assert.is_true(r.ok, r.stderr)
      each_once("words", 230)
    end)

    it("a uuid key: every row exactly once", function()
      c:exec([[CREATE TABLE things (id uuid PRIMARY KEY, n int NOT NULL DEFAULT 0)]])
      c:exec("INSERT INTO things (id) SELECT md5(g::text)::uuid FROM generate_series(1, 150) g")
      local r = run(url, batch_migration("things", '"id"'), "migrate")
      assert.is_true(r.ok, r.stderr)
      each_once("things", 150)
    end)

    it("a composite key (text in an ICU collation, int): every row exactly once", function()
      c:exec([[CREATE TABLE pairs (w text COLLATE "en-x-icu", k int, n int NOT NULL DEFAULT 0, PRIMARY KEY (w, k))]])
      c:exec("INSERT INTO pairs (w, k) SELECT w, k FROM (" .. WORDS .. ") x, generate_series(1, 3) k")
      local r = run(url, batch_migration("pairs", '{ "w", "k" }'), "migrate")
      assert.is_true(r.ok, r.stderr)
      each_once("pairs", 90)
      -- the comma form names the same key
      c:exec("UPDATE pairs SET n = 0; DROP TABLE orch_schema_history")
      local r2 = run(url, project_dir { ["V1__touch.lua"] = [[
return { transaction = false, up = function(db, ctx) ctx.batch { table = "pairs", key = "w, k", size = 5, set = "n = n + 1" } end }]] }, "migrate")
      assert.is_true(r2.ok, r2.stderr)
      each_once("pairs", 90)
    end)
  end)

  describe("a migrations directory orch cannot read is an error, not 'up to date'", function()
    local function expect_error(dir, pattern)
      for _, cmd in ipairs { "status", "migrate" } do
        local r = run(url, dir, cmd)
        assert.equals(1, r.code, cmd .. ": " .. r.stdout .. r.stderr)
        assert.matches(pattern, r.stderr)
        assert.is_nil(r.stdout:match("up to date"), r.stdout)
      end
    end

    it("a migration name that is a dangling symbolic link", function()
      local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);" }
      assert.is_true(sys.spawn({ "ln", "-s", dir .. "/gone.sql", dir .. "/V2__b.sql" }).ok)
      expect_error(dir, "cannot read migration .*V2__b%.sql: .*No such file")
    end)

    it("a migration name that is a FIFO (never opened: it would block)", function()
      local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);" }
      assert.is_true(sys.spawn({ "mkfifo", dir .. "/V2__b.sql" }).ok)
      expect_error(dir, "cannot read migration .*V2__b%.sql: it is a fifo, not a file")
    end)

    it("a migration name that is a directory, in a service", function()
      local dir = project_dir { ["auth/V1__a.sql"] = "CREATE TABLE a (id int);" }
      sys.mkdir_p(dir .. "/auth/V2__b.sql")
      expect_error(dir, "cannot read migration .*auth/V2__b%.sql: it is a directory, not a file")
    end)

    for _, what in ipairs { "directory", "file" } do
      it("an unreadable " .. what .. " (permissions, with orch run as nobody)", function()
        local dir = project_dir { ["V1__a.sql"] = "CREATE TABLE a (id int);", ["auth/V1__b.sql"] = "CREATE TABLE b (id int);" }
        sys.chmod(dir, 493)
        if what == "directory" then sys.chmod(dir .. "/auth", 0) else sys.chmod(dir .. "/V1__a.sql", 0) end
        local r = sys.spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", H.orch_bin, "status", "--db", url, "--dir", dir,
          cwd = "/", timeout = 60 }
        sys.chmod(dir .. "/auth", 493)
        sys.chmod(dir .. "/V1__a.sql", 420)
        assert.equals(1, r.code, r.stdout .. r.stderr)
        assert.matches(what == "directory" and "cannot read the migrations of service 'auth' in .*/auth: Permission denied"
          or "cannot read migration .*V1__a%.sql: .*Permission denied", r.stderr)
      end)
    end
  end)

  it("a non-transactional migration cut by a server restart shows as failed part-way, not pending", function()
    local pg = localpg.ensure(H.tmpdir() .. "/pg", { fast = true })
    local ok, err = pcall(function()
      local purl = pg:create_database("restart")
      local dir = project_dir {
        ["V1__t.sql"] = "CREATE TABLE t (id int);",
        ["V2__slow.sql"] = "-- orch: transaction=false\nINSERT INTO t VALUES (1);\nSELECT pg_sleep(60);\nINSERT INTO t VALUES (2);\n",
      }
      local restart = H.write(H.tmpdir() .. "/restart.lua",
        "local pg = require('orch.localpg').open(...)\npg:stop()\npg:start()\n")
      local psql = string.format("%s/psql -h %s -p %d -U %s -d restart -XAtc \"SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(' || '60)%%' AND state = 'active'\"",
        localpg.bindir(), pg.host, pg.port, pg.user)
      local r = sys.spawn { "sh", "-c", string.format(
        "%s migrate --db %s --dir %s > /dev/null 2>&1 & pid=$!; seen=no; for i in $(seq 600); do [ -n \"$(%s)\" ] && seen=yes && break; sleep 0.05; done; echo seen=$seen; " ..
        "%s %s %s; wait $pid; echo migrate=$?", H.orch_bin, purl, dir, psql, H.orch_bin, restart, pg.dir), timeout = 180 }
      assert.matches("seen=yes", r.stdout, 1, true)   -- the restart cut the sleeping migration, not something before it
      assert.matches("migrate=1", r.stdout, 1, true)
      local st = H.orch { "status", "--db", purl, "--dir", dir }
      assert.matches("\n2%s+slow%s+SQL%s+failed", st.stdout)
      assert.matches("did not finish: orch or the server stopped while it ran", st.stdout)
      assert.is_nil(st.stdout:match("1 pending"), st.stdout)
      local again = H.orch { "migrate", "--db", purl, "--dir", dir }
      assert.equals(1, again.code)
      assert.matches("failed part%-way outside a transaction", again.stderr)
    end)
    pg:destroy()
    if not ok then error(err, 0) end
  end)

  describe("a failed CREATE INDEX CONCURRENTLY leaves no INVALID index", function()
    local function invalid() return c:value("SELECT count(*) FROM pg_index WHERE NOT indisvalid") end

    it("a unique build failing on duplicates, quoted and schema-qualified names", function()
      c:exec([[CREATE SCHEMA "My Schema"; CREATE TABLE "My Schema"."My Table" (id int); INSERT INTO "My Schema"."My Table" VALUES (1), (1)]])
      local dir = project_dir { ["V1__idx.sql"] = "-- orch: transaction=false\n" ..
        [[CREATE UNIQUE INDEX CONCURRENTLY "My ""Idx""" ON "My Schema"."My Table" (id);]] .. "\n" }
      local r = run(url, dir, "migrate")
      assert.equals(1, r.code)
      assert.matches("could not create unique index", r.stderr)
      assert.matches([[the INVALID index "My Schema"."My ""Idx""" that the failed concurrent build left was dropped]], r.stderr, 1, true)
      assert.equals(0, invalid())
    end)

    it("an unnamed build cancelled by statement_timeout", function()
      c:exec("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, 300000) g")
      -- a transaction holding an old snapshot: the build, once its index exists (INVALID), waits
      -- for it, so the timeout strikes a build under way however fast the machine builds
      local holder = db.connect(url)
      finally(function() holder:close() end)
      holder:exec("BEGIN ISOLATION LEVEL REPEATABLE READ")
      holder:value("SELECT 1")
      local dir = project_dir { ["V1__idx.sql"] = "-- orch: transaction=false, statement_timeout=500ms\nCREATE INDEX CONCURRENTLY ON big (s, id);\n" }
      local r = run(url, dir, "migrate")
      holder:exec("COMMIT")
      assert.equals(1, r.code, r.stderr)
      assert.matches("statement timeout", r.stderr)
      assert.matches("the INVALID index public.big_s_id_idx that the failed concurrent build left was dropped", r.stderr, 1, true)
      assert.equals(0, invalid())
    end)

    it("IF NOT EXISTS over an INVALID index of that name left by an earlier build: dropped and built again", function()
      c:exec("CREATE TABLE d (id int); INSERT INTO d VALUES (1), (1)")
      assert.is_false(pcall(c.exec, c, "CREATE UNIQUE INDEX CONCURRENTLY d_id ON d (id)"))
      assert.equals(1, invalid())
      c:exec("DELETE FROM d WHERE ctid = (SELECT max(ctid) FROM d)")
      local dir = project_dir { ["V1__idx.sql"] = "-- orch: transaction=false\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS d_id ON public.d (id);\n" }
      local r = run(url, dir, "migrate")
      assert.is_true(r.ok, r.stderr)
      assert.matches("index public.d_id is INVALID %(left by an interrupted concurrent build%): dropping it", r.stderr)
      assert.equals(0, invalid())
      assert.is_true(c:value("SELECT indisvalid FROM pg_index WHERE indexrelid = 'd_id'::regclass"))
    end)
  end)

  it("COPY ... FROM STDIN with its data runs in a migration", function()
    local dir = project_dir { ["V1__copy.sql"] = "CREATE TABLE c (id int, s text);\nCOPY c (id, s) FROM stdin;\n1\tone; two\n2\t'quoted\n\\.\nINSERT INTO c VALUES (3, 'three');\n" }
    local r = run(url, dir, "migrate")
    assert.is_true(r.ok, r.stderr)
    assert.equals("1:one; two|2:'quoted|3:three", c:value("SELECT string_agg(id || ':' || s, '|' ORDER BY id) FROM c"))
  end)
end)

-- ---------------------------------------------------------------------------
-- The splitter and checksum before they were made linear: a reference to
-- compare with (slow on big files, exact on small ones).

local function reference_checksum(text)
  if text:sub(1, 3) == "\239\187\191" then text = text:sub(4) end
  local crc = 0
  for line in (text .. "\n"):gmatch("([^\r\n]*)\r?\n?") do crc = sys.crc32(line, crc) end
  if crc >= 0x80000000 then crc = crc - 0x100000000 end
  return math.tointeger(crc)
end

local function reference_split(text)
  local stmts = {}
  local i, n = 1, #text
  local start, line = 1, 1
  local first_code_line
  local function flush(stop)
    local s = text:sub(start, stop)
    local stripped = s:gsub("%-%-[^\n]*", ""):gsub("/%*.-%*/", "")
    if stripped:match("[^%s;]") then stmts[#stmts + 1] = { sql = s, line = first_code_line or line, pos = start } end
  end
  while i <= n do
    local ch = text:sub(i, i)
    if ch == "\n" then line = line + 1; i = i + 1
    elseif ch == "-" and text:sub(i + 1, i + 1) == "-" then i = text:find("\n", i, true) or n + 1
    elseif ch == "/" and text:sub(i + 1, i + 1) == "*" then
      local depth, j = 1, i + 2
      while j <= n and depth > 0 do
        local two = text:sub(j, j + 1)
        if two == "/*" then depth = depth + 1; j = j + 2
        elseif two == "*/" then depth = depth - 1; j = j + 2
        else if text:sub(j, j) == "\n" then line = line + 1 end j = j + 1 end
      end
      i = j
    elseif ch == "'" then
      first_code_line = first_code_line or line
      local escapes = i > 1 and text:sub(i - 1, i - 1):match("[eE]") and not text:sub(i - 2, i - 2):match("[%w_]")
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if d == "\n" then line = line + 1 end
        if escapes and d == "\\" then j = j + 2
        elseif d == "'" then if text:sub(j + 1, j + 1) == "'" then j = j + 2 else break end
        else j = j + 1 end
      end
      i = j + 1
    elseif ch == '"' then
      first_code_line = first_code_line or line
      local j = text:find('"', i + 1, true) or n
      line = line + select(2, text:sub(i, j):gsub("\n", ""))
      i = j + 1
    elseif ch == "$" and (i == 1 or not text:sub(i - 1, i - 1):match("[%w_]")) then
      local tag = text:match("^%$[%a_][%w_]*%$", i) or text:match("^%$%$", i)
      if tag then
        first_code_line = first_code_line or line
        local e = text:find(tag, i + #tag, true)
        local stop = e and (e + #tag - 1) or n
        line = line + select(2, text:sub(i, stop):gsub("\n", ""))
        i = stop + 1
      else i = i + 1 end
    elseif ch == ";" then
      flush(i); first_code_line = nil; start = i + 1; i = i + 1
    else
      if not first_code_line and ch:match("%S") then first_code_line = line end
      i = i + 1
    end
  end
  flush(n)
  return stmts
end

describe("the statement splitter and the checksum", function()
  local function same_as_reference(text, label)
    assert.equals(reference_checksum(text), files.checksum(text), label .. ": checksum")
    local want, got = reference_split(text), files.split_sql(text)
    assert.equals(#want, #got, label .. ": statement count")
    for i, w in ipairs(want) do
      assert.equals(w.sql, got[i].sql, label .. ": statement " .. i)
      assert.equals(w.line, got[i].line, label .. ": line of statement " .. i)
      assert.equals(w.pos, got[i].pos, label .. ": position of statement " .. i)
    end
  end

  it("gives the same statements, lines and checksums as before on the example project", function()
    local n = 0
    for _, f in ipairs(sys.listdir("migrations")) do
      if f:match("%.sql$") then
        same_as_reference(H.read("migrations/" .. f), f)
        n = n + 1
      end
    end
    assert.is_true(n >= 8)
  end)

  it("and on awkward files: dollar quotes, nested comments, E'' strings, quoted identifiers, CRLF, a BOM", function()
    local awkward = table.concat({
      "\239\187\191-- leading comment; with a semicolon\r\n",
      "CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $body$\nBEGIN\n  RETURN 'a;b'; -- inside\nEND\n$body$;\r\n",
      "/* outer /* nested ; */ still comment ; */ SELECT 1;\n",
      "SELECT E'it\\'s; fine', 'it''s; fine', \"semi;colon\"\nFROM t;\r",
      "SELECT $$;$$, $a$ $b$ ; $b$ $a$;\n",
      "\n\n  ;;  -- empty statements\n",
      "SELECT a-b, c/d, x$y FROM t; /* trailing */\n",
      "INSERT INTO t VALUES ('multi\nline\nstring'); SELECT \"multi\nline\";\n",
      "SELECT 'last, without a semicolon'",
    })
    same_as_reference(awkward, "awkward")
    -- line endings only: empty lines count as lines, \r\n as one
    for _, t in ipairs { "", "\n", "\r\n\r\n", "a\rb\nc\r\nd", "x\n\n\ny" } do
      assert.equals(reference_checksum(t), files.checksum(t), string.format("%q", t))
    end
  end)

  it("keeps BEGIN ATOMIC bodies (with CASE ... END inside) as one statement, and COPY FROM STDIN data with its COPY", function()
    local text = "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;\n  SELECT 2;\nEND;\n" ..
      "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END;\n" ..
      "CREATE TABLE t2 (begin int, \"end\" int);\n" ..
      "COPY t (a, b) FROM stdin;\n1\tfoo;bar\n2\t'x\n\\.\n" ..
      "BEGIN;\nCOMMIT;\n"
    local s = files.split_sql(text)
    assert.equals(6, #s)
    assert.matches("^CREATE FUNCTION.*SELECT 2;\nEND;$", s[1].sql)
    assert.equals(1, s[1].line)
    assert.matches("^\nCREATE PROCEDURE p%(%).* END;$", s[2].sql)
    assert.equals(6, s[2].line)
    assert.equals(7, s[3].line)
    assert.matches("COPY t %(a, b%) FROM stdin;$", s[4].sql)
    assert.equals("1\tfoo;bar\n2\t'x\n", s[4].copy)
    assert.equals("BEGIN;", s[5].sql)
    assert.equals(12, s[5].line)
    assert.equals(13, s[6].line)
    local ok, err = pcall(files.split_sql, "COPY t FROM stdin;\n1\n")
    assert.is_false(ok)
    assert.matches("no end of data", tostring(err))
  end)
end)
