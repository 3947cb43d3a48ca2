-- Backups in S3-compatible storage, against a real server: s3rver (npm)
-- behind tests/s3proxy.py, which checks every request's SigV4 signature with
-- botocore and fails requests on purpose when a test asks. boto3 is the
-- independent judge of what is in the bucket; the stock pg_restore restores
-- what boto3 downloads.
local H = require "helper"
local sys = require "orch.sys"
local db = require "orch.db"
local json = require "orch.json"
local s3 = require "orch.s3"

describe("SigV4 signing", function()
  -- the examples of AWS's "Signature Calculations for the Authorization Header" (S3 API reference)
  local base = { region = "us-east-1", time = "20130524T000000Z", access_key = "AKIAIOSFODNN7EXAMPLE",
    secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" }
  local E = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
  local function sign(t) for k, v in pairs(base) do t[k] = v end return (s3.sign(t)) end
  local function sig(auth) return auth:match("Signature=(%x+)$") end

  it("matches AWS's published GET Object example (Range header)", function()
    local auth, canonical = s3.sign(setmetatable({ method = "GET", path = "/test.txt", headers = { host = "examplebucket.s3.amazonaws.com",
      range = "bytes=0-9", ["x-amz-content-sha256"] = E, ["x-amz-date"] = "20130524T000000Z" } }, { __index = base }))
    assert.equals("GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\nx-amz-content-sha256:" .. E ..
      "\nx-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n" .. E, canonical)
    assert.equals("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " ..
      "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41", auth)
  end)

  it("matches the PUT Object, GET Bucket Lifecycle and GET Bucket (list objects) examples", function()
    local body = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    assert.equals("98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd", sig(sign { method = "PUT", path = "/test%24file.text",
      payload_hash = body, headers = { host = "examplebucket.s3.amazonaws.com", date = "Fri, 24 May 2013 00:00:00 GMT",
        ["x-amz-date"] = "20130524T000000Z", ["x-amz-storage-class"] = "REDUCED_REDUNDANCY", ["x-amz-content-sha256"] = body } }))
    assert.equals("fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543", sig(sign { method = "GET", path = "/", query = "lifecycle=",
      headers = { host = "examplebucket.s3.amazonaws.com", ["x-amz-date"] = "20130524T000000Z", ["x-amz-content-sha256"] = E } }))
    assert.equals("34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7", sig(sign { method = "GET", path = "/",
      query = "max-keys=2&prefix=J", headers = { host = "examplebucket.s3.amazonaws.com", ["x-amz-date"] = "20130524T000000Z", ["x-amz-content-sha256"] = E } }))
  end)
end)

describe("backups in S3 (s3rver, boto3 as judge)", function()
  local srv, src, src_url, work
  local SECRET, TOKEN = "orch-test-secret-4f9a", "orch-test-session-token-77c1"

  setup(function()
    srv = H.s3()
    work = H.tmpdir()
    src_url, src = H.fresh_db("s3src")
    local c <close> = db.connect(src_url)
    -- about 2 MiB of archive that compresses little: many parts of 256 KiB
    c:exec([[CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL, at timestamptz DEFAULT now());
      INSERT INTO items (id, payload) SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 40000) g;
      CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);
      INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;
      CREATE INDEX items_payload ON items (payload);]])
  end)
  teardown(function()
    if srv then srv:stop() end
    if src then H.drop_db(src) end
  end)
  before_each(function() srv:reset() end)

  -- orch with the proxy's endpoint and credentials (and a session token, which botocore checks is signed)
  local function orch(argv, env)
    local e = { AWS_SESSION_TOKEN = TOKEN }
    for k, v in pairs(env or {}) do e[k] = v end
    local r = H.orch(argv, { env = srv:env(e) })
    for _, out in ipairs { r.stdout or "", r.stderr or "" } do
      assert.is_nil(out:find(SECRET, 1, true), "the secret key appeared in orch's output")
      assert.is_nil(out:find(TOKEN, 1, true), "the session token appeared in orch's output")
    end
    return r
  end
  local function backup(prefix, env, extra)
    local argv = { "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/" .. prefix, "--json" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local r = orch(argv, env)
    assert.is_true(r.ok, r.stderr)
    return json.decode(r.stdout), r
  end
  local function bad_signatures()
    local bad = {}
    for _, e in ipairs(srv:log()) do if e.signature then bad[#bad + 1] = e.method .. " " .. e.path .. ": " .. e.signature end end
    return bad
  end
  local function count(pred)
    local n = 0
    for _, e in ipairs(srv:log()) do if pred(e) then n = n + 1 end end
    return n
  end
  local function is_part(e) return e.method == "PUT" and e.query:match("partNumber=") ~= nil end

  it("streams a multipart backup (several parts) that boto3 reads, pg_restore restores and orch restore s3:// round-trips", function()
    local m = backup("roundtrip", { ORCH_S3_PART_SIZE = "256KiB" })
    local key = "roundtrip/" .. m.file
    assert.equals("s3://" .. srv.bucket .. "/" .. key, m.path)
    assert.is_true(m.upload.parts >= 4, "only " .. tostring(m.upload.parts) .. " parts")
    assert.equals(m.upload.parts, count(function(e) return is_part(e) and e.status == 200 end))
    assert.same({}, bad_signatures())
    -- the manifest is the last object written
    local writes = {}
    for _, e in ipairs(srv:log()) do if e.method == "PUT" or e.method == "POST" then writes[#writes + 1] = e end end
    assert.equals("PUT", writes[#writes].method)
    assert.matches("%.manifest%.json$", writes[#writes].path)
    assert.equals("POST", writes[#writes - 1].method)   -- CompleteMultipartUpload, just before
    assert.matches("^uploadId=", writes[#writes - 1].query)
    assert.same({ key, (key:gsub("%.dump$", ".manifest.json")) }, srv:keys("roundtrip/"))
    -- boto3 downloads the archive: its SHA-256 and size are the manifest's
    local file = work .. "/boto.dump"
    local got = json.decode(srv:boto(string.format([[
import hashlib
s3.download_file(bucket, %q, %q)
man = json.loads(s3.get_object(Bucket=bucket, Key=%q)["Body"].read())
print(json.dumps({"sha256": hashlib.sha256(open(%q, "rb").read()).hexdigest(), "manifest": man}))
]], key, file, (key:gsub("%.dump$", ".manifest.json")), file)))
    assert.equals(m.sha256, got.sha256)
    assert.equals(m.sha256, got.manifest.sha256)
    assert.equals(m.size, sys.stat(file).size)
    -- the stock pg_restore restores what boto3 downloaded
    local _, judge = H.fresh_db("s3judge")
    local r = H.pgtool("pg_restore", { "-d", judge, "--exit-on-error", file })
    assert.is_true(r.ok, r.stderr)
    assert.same(H.contents_of(src), H.contents_of(judge))
    H.drop_db(judge)
    -- orch restore streams it down (into a spool file, proven by the manifest's SHA-256 first)
    local url, target = H.fresh_db("s3restored")
    srv:reset()
    r = orch({ "restore", m.path, "--db", url })
    assert.is_true(r.ok, r.stderr)
    assert.matches("SHA%-256 matches the manifest; streamed from s3://", r.stdout)
    assert.same(H.contents_of(src), H.contents_of(target))
    assert.same({}, bad_signatures())
    H.drop_db(target)
    -- --jobs 3: ranges of ORCH_S3_PART_SIZE downloaded at once, one of them answered 503 and retried
    url, target = H.fresh_db("s3ranges")
    srv:reset()
    srv:faults { { method = "GET", path = ".dump", status = 503, times = 1 } }
    r = orch({ "restore", m.path, "--db", url, "--jobs", "3" }, { ORCH_S3_PART_SIZE = "256KiB" })
    assert.is_true(r.ok, r.stderr)
    assert.matches("3 ranges at once", r.stdout)
    assert.same(H.contents_of(src), H.contents_of(target))
    local ranges = count(function(e) return e.method == "GET" and e.path:match("%.dump$") and e.status == 206 end)
    assert.equals(math.ceil(m.size / 262144), ranges)
    assert.equals(1, count(function(e) return e.faulted end))
    H.drop_db(target)
    -- the spool is gone afterwards
    for _, f in ipairs(sys.listdir(srv.dir) or {}) do assert.is_nil(f:match("^orch%-spool%-"), f) end
    -- list and verify work on the object
    r = orch({ "verify", m.path })
    assert.is_true(r.ok, r.stderr)
    assert.matches("sha256 matches the manifest", r.stdout)
    r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/roundtrip", "--json" })
    assert.is_true(r.ok, r.stderr)
    local list = json.decode(r.stdout)
    assert.equals(1, #list)
    assert.equals("verified", list[1].status)
    assert.equals(m.path, list[1].path)
    -- an s3:// location is no path: from a project's subdirectory it is not made relative to it
    assert(sys.mkdir_p(work .. "/proj/sub", 448))
    H.write(work .. "/proj/orch.env.lua", "return {}\n")
    local e = srv:env { AWS_SESSION_TOKEN = TOKEN }
    r = H.orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/roundtrip", "--json" }, { env = e, cwd = work .. "/proj/sub" })
    assert.is_true(r.ok, r.stderr)
    assert.equals(m.path, json.decode(r.stdout)[1].path)
    r = H.orch({ "verify", m.path }, { env = e, cwd = work .. "/proj/sub" })
    assert.is_true(r.ok, r.stderr)
  end)

  it("verify streams the object (no spool) and finds a damaged one; restore refuses it before touching the target", function()
    local m = backup("damaged")
    local r = orch({ "verify", m.path, "--json" })
    assert.is_true(r.ok, r.stderr)
    assert.is_true(json.decode(r.stdout).streamed)
    for _, f in ipairs(sys.listdir(srv.dir) or {}) do assert.is_nil(f:match("^orch%-spool%-"), f) end
    -- boto3 flips one byte in the middle of the archive, keeping the manifest
    srv:boto(string.format([[
key = %q
data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
data[len(data) // 2] ^= 0x40
s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
]], "damaged/" .. m.file))
    r = orch({ "verify", m.path })
    assert.equals(1, r.code)
    assert.matches("s3://orch/damaged/", r.stderr)
    assert.matches("damaged", r.stderr)
    local url, target = H.fresh_db("s3damaged")
    r = orch({ "restore", m.path, "--db", url })
    assert.equals(1, r.code)
    assert.matches("s3://orch/damaged/", r.stderr)
    local c <close> = db.connect(url)
    assert.equals(0, c:value("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"))
    c:close()
    H.drop_db(target)
  end)

  it("retries a part upload that fails twice with 503, and the object is whole", function()
    srv:faults { { method = "PUT", query = "partNumber=2&", status = 503, times = 2 } }
    local m, r = backup("retry", { ORCH_S3_PART_SIZE = "256KiB" })
    assert.equals(2, m.upload.retries)
    local tries = {}
    for _, e in ipairs(srv:log()) do if is_part(e) and e.query:match("partNumber=2&") then tries[#tries + 1] = e.status end end
    assert.same({ 503, 503, 200 }, tries)
    local sum = srv:boto(string.format([[
import hashlib
print(hashlib.sha256(s3.get_object(Bucket=bucket, Key=%q)["Body"].read()).hexdigest())
]], "retry/" .. m.file))
    assert.equals(m.sha256, sum:match("%x+"))
  end)

  it("retries a part that times out and a part answered 429 (slow down)", function()
    srv:faults { { method = "PUT", query = "partNumber=1&", stall = 6, times = 1 },
                 { method = "PUT", query = "partNumber=3&", status = 429, times = 1 } }
    local m = backup("slow", { ORCH_S3_PART_SIZE = "256KiB", ORCH_S3_TIMEOUT = "3" })
    -- (a loaded machine may add a timeout of its own: at least these two)
    assert.is_true(m.upload.retries >= 2, tostring(m.upload.retries))
    local seen = { ["1"] = {}, ["3"] = {} }
    for _, e in ipairs(srv:log()) do
      local n = is_part(e) and e.query:match("partNumber=(%d+)&")
      if seen[n] then table.insert(seen[n], e.status) end
    end
    assert.equals(0, seen["1"][1])              -- stalled, then dropped: the client timed out
    assert.equals(200, seen["1"][#seen["1"]])
    assert.same({ 429, 200 }, seen["3"])
    assert.same({ "slow/" .. m.file, "slow/" .. m.file:gsub("%.dump$", ".manifest.json") }, srv:keys("slow/"))
  end)

  it("explains a wrong secret key (SignatureDoesNotMatch), retries nothing and leaves nothing", function()
    local r = orch({ "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/badkey" }, { AWS_SECRET_ACCESS_KEY = "not-the-secret-91x" })
    assert.equals(1, r.code)
    assert.matches("SignatureDoesNotMatch", r.stderr)
    assert.matches("AWS_SECRET_ACCESS_KEY does not belong to AWS_ACCESS_KEY_ID", r.stderr)
    assert.matches("Not retried", r.stderr)
    assert.is_nil(r.stderr:find("not-the-secret-91x", 1, true))
    -- one request (and the GET that asks why a HEAD was refused), no retries
    local log = srv:log()
    assert.is_true(#log <= 2, json.encode(log))
    assert.same({}, srv:keys("badkey/"))
  end)

  it("does not retry a 403 on a part: the upload is aborted and no object is left", function()
    srv:faults { { method = "PUT", query = "partNumber=2&", status = 403, times = 5 } }
    local r = orch({ "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/denied" }, { ORCH_S3_PART_SIZE = "256KiB" })
    assert.equals(1, r.code)
    assert.matches("uploading part 2 of s3://orch/denied/.-HTTP 403.-access denied", r.stderr)
    assert.matches("multipart upload aborted.-: no object was left", r.stderr)
    assert.equals(1, count(function(e) return is_part(e) and e.query:match("partNumber=2&") end))
    -- AbortMultipartUpload is sent (s3rver 3.7.1 does not implement it and answers 405; S3 removes the parts)
    assert.equals(1, count(function(e) return e.method == "DELETE" and e.query:match("^uploadId=") end))
    assert.same({}, srv:keys("denied/"))
  end)

  for _, sig in ipairs { "INT", "KILL" } do
    it("leaves no object and no manifest when the backup is interrupted (SIG" .. sig .. ") mid-upload", function()
      -- each part waits a while at the server, so the backup is still uploading when the signal comes
      -- (6 parts or more are left after part 2: seconds, for a python poll on a loaded machine)
      srv:faults { { method = "PUT", query = "partNumber=", delay = 0.8, times = 1000 } }
      local env = srv:env { ORCH_S3_PART_SIZE = "128KiB", AWS_SESSION_TOKEN = TOKEN }
      local exports = {}
      for k, v in pairs(env) do exports[#exports + 1] = k .. "='" .. v .. "'" end
      local dir = H.tmpdir()
      local script = string.format("env %s %s backup --db '%s' --dir s3://%s/killed > %s/out 2> %s/err & pid=$!; " ..
        "for i in $(seq 200); do grep -q partNumber=2 %s/proxy-seen 2>/dev/null && break; " ..
        "python3 -c 'import urllib.request,sys; sys.stdout.write(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(\"%s/__log\").read().decode())' > %s/proxy-seen; sleep 0.1; done; " ..
        "kill -%s $pid; wait $pid; echo $?", table.concat(exports, " "), H.orch_bin, src_url, srv.bucket, dir, dir, dir, srv.endpoint, dir, sig)
      local r = sys.spawn { "sh", "-c", script, timeout = 120 }
      local code = tonumber(r.stdout:match("(%d+)%s*$"))
      assert.equals(sig == "INT" and 130 or 137, code, H.read(dir .. "/err"))
      assert.matches("partNumber=2", H.read(dir .. "/proxy-seen"))
      assert.same({}, srv:keys("killed/"))
      if sig == "INT" then
        -- Ctrl-C aborts the multipart upload: its parts are removed too
        assert.equals(1, count(function(e) return e.method == "DELETE" and e.query:match("^uploadId=") end))
        assert.matches("interrupted", H.read(dir .. "/err"))
      end
      -- and orch sees no backup there
      local l = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/killed" })
      assert.is_true(l.ok, l.stderr)
      assert.matches("no backups in s3://orch/killed", l.stdout)
    end)
  end

  it("prunes on S3 by the environment's retention (backups.dir = s3://...), never the newest verified", function()
    local envfile = H.write(work .. "/orch.env.lua", string.format([[
return { s3env = { database = { env = "S3_SRC_URL" }, backups = { dir = "s3://%s/retain", keep = 2 } } }
]], srv.bucket))
    local env = { ORCH_ENV_FILE = envfile, S3_SRC_URL = src_url }
    local paths = {}
    for i = 1, 3 do
      local r = orch({ "backup", "--env", "s3env", "--json", "--no-prune" }, env)
      assert.is_true(r.ok, r.stderr)
      paths[i] = json.decode(r.stdout).path
      if i == 1 then assert.is_true(orch({ "verify", paths[1] }, env).ok) end
    end
    local r = orch({ "backups", "prune", "--env", "s3env", "--keep", "1", "--json" }, env)
    assert.is_true(r.ok, r.stderr)
    -- the newest stays, and the oldest because it is the newest verified one
    assert.same({ paths[2] }, json.decode(r.stdout).deleted)
    local keys = srv:keys("retain/")
    assert.equals(4, #keys)
    for _, p in ipairs { paths[1], paths[3] } do
      local k = p:gsub("^s3://orch/", "")
      assert.is_truthy(table.concat(keys, " "):find(k, 1, true), k)
    end
    -- a backup with the environment's own keep = 2 prunes by itself: once the newest is verified,
    -- the older verified one is an ordinary old backup
    assert.is_true(orch({ "verify", paths[3] }, env).ok)
    r = orch({ "backup", "--env", "s3env", "--json" }, env)
    assert.is_true(r.ok, r.stderr)
    assert.same({ paths[1] }, json.decode(r.stdout).pruned)
    assert.equals(4, #srv:keys("retain/"))
  end)

  it("runs the staging and emergency restore recipes with backups.dir in S3 (run logs stay local)", function()
    local dir = H.tmpdir()
    sys.mkdir_p(dir .. "/migrations")
    for _, f in ipairs(sys.listdir("migrations")) do
      if f:match("^[VU]%d+__") then H.write(dir .. "/migrations/" .. f, H.read("migrations/" .. f)) end
    end
    H.write(dir .. "/orch.env.lua", string.format('return { stg = { database = { env = "S3_STG_URL" }, backups = { dir = "s3://%s/stg", keep = 5 } } }', srv.bucket))
    local url, name = H.fresh_db("s3stg")
    local env = srv:env { S3_STG_URL = url, DATABASE_URL = false, AWS_SESSION_TOKEN = TOKEN }
    local function recipe(file, argv)
      local a = { H.recipe(file:gsub("%.lua$", ""), dir) }
      for _, x in ipairs(argv) do a[#a + 1] = x end
      local r = H.orch(a, { cwd = dir, env = env })
      assert.is_nil((r.stdout .. r.stderr):find(SECRET, 1, true))
      return r
    end
    local r = recipe("staging.lua", { "--env", "stg", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("ok [%d.]+m?s  s3://orch/stg/[^ ]+%.dump %(.-verified%)", r.stdout)
    local keys = srv:keys("stg/")
    assert.equals(2, #keys)
    assert.is_false(sys.exists(dir .. "/backups"))
    local runs = sys.listdir(dir .. "/.orch/s3/orch/stg/runs") or {}
    assert.equals(1, #runs)
    -- the emergency restore: the backup chosen from S3, verified, a safety backup into S3, restored by swap
    r = recipe("restore.lua", { "--env", "stg", "--yes" })
    assert.equals(0, r.code, r.stdout .. r.stderr)
    assert.matches("safety backup", r.stdout)
    keys = srv:keys("stg/")
    assert.equals(4, #keys)
    assert.matches("%-safety%.dump", table.concat(keys, " "))
    assert.equals(2, #sys.listdir(dir .. "/.orch/s3/orch/stg/runs"))
    for _, f in ipairs(sys.listdir(dir .. "/.orch/s3/orch/stg/runs")) do
      local text = H.read(dir .. "/.orch/s3/orch/stg/runs/" .. f)
      assert.is_nil(text:find(SECRET, 1, true), "the secret key is in the run log " .. f)
      assert.is_nil(text:find(TOKEN, 1, true), "the session token is in the run log " .. f)
    end
    -- the backup was taken before staging migrated: the restored database has no migrations
    local c <close> = db.connect(url)
    assert.is_false(c:value("SELECT to_regclass('public.orch_schema_history') IS NOT NULL"))
    c:close()
    for _, d in ipairs(H.connect("postgres"):query("SELECT datname FROM pg_database WHERE datname LIKE $1", name .. "%")) do H.drop_db(d.datname) end
  end)

  it("refuses S3 credentials, endpoints and regions in orch.env.lua", function()
    for _, bad in ipairs { 'access_key = "AKIAEXAMPLE"', 'endpoint = "http://127.0.0.1:9000"', 'region = "eu-west-1"', 'aws_secret_access_key = "x"' } do
      local envfile = H.write(work .. "/bad.env.lua", string.format('return { p = { backups = { dir = "s3://orch/p", %s } } }', bad))
      local r = orch({ "backups", "list", "--env", "p" }, { ORCH_ENV_FILE = envfile })
      assert.equals(1, r.code, bad)
      assert.matches("come only from the environment variables AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID", r.stderr)
    end
  end)

  it("a plain http:// endpoint needs no CA bundle: a stale AWS_CA_BUNDLE does not stop it", function()
    local m = backup("stale_ca", { AWS_CA_BUNDLE = work .. "/no-such-ca.pem" })
    local l = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/stale_ca" }, { AWS_CA_BUNDLE = work .. "/no-such-ca.pem" })
    assert.is_true(l.ok, l.stderr)
    assert.is_true(l.stdout:find(m.file, 1, true) ~= nil, l.stdout)
  end)

  it("names the variables when credentials are missing", function()
    local r = H.orch({ "backups", "list", "--dir", "s3://orch/x" }, { env = srv:env { AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false } })
    assert.equals(1, r.code)
    assert.matches("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", r.stderr)
  end)
end)

describe("backups in S3 behind a private CA (an HTTPS endpoint whose certificate a test CA signed)", function()
  local srv, src, src_url, work, ca, other
  setup(function()
    ca, other = H.test_ca("orch test CA"), H.test_ca("another test CA")
    srv = H.s3 { tls = ca }
    work = H.tmpdir()
    src_url, src = H.fresh_db("s3ca")
    local c <close> = db.connect(src_url)
    c:exec([[CREATE TABLE items (id int PRIMARY KEY, body text NOT NULL);
      INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g;]])
  end)
  teardown(function()
    if srv then srv:stop() end
    if src then H.drop_db(src) end
  end)
  before_each(function() srv:reset() end)

  -- orch against the HTTPS proxy; AWS_CA_BUNDLE only when a test gives it
  local function orch(argv, env)
    local e = { AWS_CA_BUNDLE = false }
    for k, v in pairs(env or {}) do e[k] = v end
    return H.orch(argv, { env = srv:env(e) })
  end
  local function has(text, s) return text:find(s, 1, true) ~= nil end
  local function env_file(name, cainfo)
    return H.write(work .. "/" .. name .. ".env.lua", string.format(
      'return { caenv = { database = { env = "S3CA_SRC_URL" }, backups = { dir = "s3://%s/fromenv", cainfo = %q } } }', srv.bucket, cainfo))
  end
  -- the handshakes the proxy saw fail, once at least n of them are recorded (its thread records
  -- a failure after the client hung up: wait for it, never for a fixed time)
  local function tls_failures(n)
    local deadline = sys.monotonic() + 20
    while true do
      local f = srv:tls_failures()
      if #f >= n then return f end
      assert.is_true(sys.monotonic() < deadline, "the proxy recorded " .. #f .. " failed TLS handshakes in 20 s, not " .. n)
      sys.sleep(0.05)
    end
  end

  it("backs up, lists and restores through the endpoint with AWS_CA_BUNDLE", function()
    assert.matches("^https://127%.0%.0%.1:%d+$", srv.endpoint)
    local r = orch({ "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/bundle", "--json" }, { AWS_CA_BUNDLE = ca.ca })
    assert.is_true(r.ok, r.stderr)
    local m = json.decode(r.stdout)
    assert.same({ "bundle/" .. m.file, "bundle/" .. m.file:gsub("%.dump$", ".manifest.json") }, srv:keys("bundle/"))
    r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/bundle", "--json" }, { AWS_CA_BUNDLE = ca.ca })
    assert.is_true(r.ok, r.stderr)
    assert.equals(m.path, json.decode(r.stdout)[1].path)
    local url, target = H.fresh_db("s3carestored")
    r = orch({ "restore", m.path, "--db", url }, { AWS_CA_BUNDLE = ca.ca })
    assert.is_true(r.ok, r.stderr)
    assert.same(H.contents_of(src), H.contents_of(target))
    H.drop_db(target)
    assert.same({}, srv:tls_failures())
  end)

  it("uses the environment's backups.cainfo, which wins over AWS_CA_BUNDLE", function()
    local env = { ORCH_ENV_FILE = env_file("good", ca.ca), S3CA_SRC_URL = src_url, AWS_CA_BUNDLE = other.ca }
    local r = orch({ "backup", "--env", "caenv", "--json", "--no-prune" }, env)
    assert.is_true(r.ok, r.stderr)
    local m = json.decode(r.stdout)
    assert.equals("s3://" .. srv.bucket .. "/fromenv/" .. m.file, m.path)
    r = orch({ "backups", "list", "--env", "caenv", "--json" }, env)
    assert.is_true(r.ok, r.stderr)
    assert.equals(m.path, json.decode(r.stdout)[1].path)
    r = orch({ "verify", m.path, "--env", "caenv" }, env)
    assert.is_true(r.ok, r.stderr)
    assert.same({}, srv:tls_failures())
    -- and the other way round: the setting names the CA that did not sign, AWS_CA_BUNDLE the one that did
    env = { ORCH_ENV_FILE = env_file("wrong", other.ca), S3CA_SRC_URL = src_url, AWS_CA_BUNDLE = ca.ca }
    r = orch({ "backups", "list", "--env", "caenv" }, env)
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "could not be verified with the CA bundle " .. other.ca .. " (from " .. work .. "/wrong.env.lua: environment caenv: backups.cainfo)"), r.stderr)
  end)

  it("without the CA bundle fails at once, naming the endpoint and how to set the bundle", function()
    local r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/none" })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "the TLS certificate of " .. srv.endpoint .. " could not be verified with the system's CAs"), r.stderr)
    assert.is_true(has(r.stderr, "set the CA bundle: AWS_CA_BUNDLE=/path/ca.pem, or backups.cainfo"), r.stderr)
    assert.is_true(has(r.stderr, "Not retried"), r.stderr)
    assert.is_false(has(r.stderr, "attempts"), r.stderr)
    -- orch refused the certificate in the handshake, once: no request reached the server
    local failures = tls_failures(1)
    assert.equals(1, #failures, json.encode(failures))
    assert.matches("unknown ca", failures[1]:lower())
    assert.same({}, srv:log())
    -- a backup stops there too and leaves nothing
    srv:reset()
    r = orch({ "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/none" })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "could not be verified with the system's CAs"), r.stderr)
    assert.equals(1, #tls_failures(1))
    assert.same({}, srv:keys("none/"))
  end)

  it("names the bundle and where it came from when it did not sign the endpoint's certificate", function()
    local r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/x" }, { AWS_CA_BUNDLE = other.ca })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "the TLS certificate of " .. srv.endpoint .. " could not be verified with the CA bundle " .. other.ca ..
      " (from AWS_CA_BUNDLE)"), r.stderr)
    assert.equals(1, #tls_failures(1))
  end)

  it("refuses a CA bundle that is missing, unreadable or no PEM before any request, naming it and its origin", function()
    local missing = work .. "/missing-ca.pem"
    local r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/x" }, { AWS_CA_BUNDLE = missing })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "AWS_CA_BUNDLE=" .. missing .. ": cannot read the CA bundle"), r.stderr)
    assert.is_true(has(r.stderr, "No such file or directory"), r.stderr)
    r = orch({ "backups", "list", "--env", "caenv" }, { ORCH_ENV_FILE = env_file("missing", missing), AWS_CA_BUNDLE = ca.ca })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, work .. "/missing.env.lua: environment caenv: backups.cainfo = " .. missing .. ": cannot read the CA bundle"), r.stderr)
    local garbage = H.write(work .. "/garbage.pem", "not a certificate\n")
    r = orch({ "backup", "--db", src_url, "--dir", "s3://" .. srv.bucket .. "/x" }, { AWS_CA_BUNDLE = garbage })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "AWS_CA_BUNDLE=" .. garbage .. ": the CA bundle holds no PEM certificate"), r.stderr)
    r = orch({ "backups", "list", "--dir", "s3://" .. srv.bucket .. "/x" }, { AWS_CA_BUNDLE = work })
    assert.equals(1, r.code)
    assert.is_true(has(r.stderr, "the CA bundle is a directory"), r.stderr)
    -- none of these sent a request or even connected
    assert.same({}, srv:log())
    assert.same({}, srv:tls_failures())
  end)

  it("type-checks backups.cainfo and refuses it for local backups", function()
    local f = H.write(work .. "/num.env.lua", 'return { p = { backups = { dir = "s3://orch/p", cainfo = 5 } } }')
    local r = orch({ "backups", "list", "--env", "p" }, { ORCH_ENV_FILE = f })
    assert.equals(1, r.code)
    assert.matches("backups%.cainfo is 5 %(a number%); it must be a string", r.stderr)
    f = H.write(work .. "/local.env.lua", 'return { p = { backups = { dir = "backups/p", cainfo = "ca.pem" } } }')
    r = orch({ "backups", "list", "--env", "p" }, { ORCH_ENV_FILE = f })
    assert.equals(1, r.code)
    assert.matches("backups%.cainfo is the CA bundle of an S3 endpoint, but backups%.dir .- is not an s3:// location", r.stderr)
  end)
end)
