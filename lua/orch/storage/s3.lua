--- orch.storage.s3: backups in S3-compatible object storage (policy; the
-- bytes and the signing are orch.s3, in C).
--
-- A location is "s3://bucket/prefix". Endpoint, region and credentials come
-- only from the standard variables: AWS_ENDPOINT_URL (a self-hosted server:
-- path-style addressing, http://host:port/bucket/key), AWS_REGION (else
-- AWS_DEFAULT_REGION, else us-east-1), AWS_ACCESS_KEY_ID,
-- AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN. Without AWS_ENDPOINT_URL the
-- bucket is addressed on AWS itself (https://bucket.s3.REGION.amazonaws.com).
-- Tuning: ORCH_S3_PART_SIZE (bytes, or 8MiB / 512KiB; default 16MiB),
-- ORCH_S3_ATTEMPTS (tries per request, default 5), ORCH_S3_BACKOFF
-- (seconds before the first retry, doubled each time, default 1),
-- ORCH_S3_TIMEOUT (seconds one request or part may take, default 300; a
-- transfer silent for 60 s is a timeout too).
--
-- An endpoint whose certificate a private CA signed (MinIO, Ceph behind a
-- company CA) is verified with that CA's bundle (PEM): the environment's
-- backups.cainfo in orch.env.lua, else AWS_CA_BUNDLE (as the AWS CLI reads
-- it), else the system's CAs. Verification is never turned off.
--
-- Requests that fail with 5xx, 429, 408, a timeout or a broken connection
-- are retried with backoff; any other answer is final and explained (a 403
-- is never retried). Nothing here prints a credential, a signature or a
-- header value.
local s3c = require "orch.s3"
local sys = require "orch.sys"
local log = require "orch.log"

local S = {}

local function fail(msg) sys.error(msg, 1) end

--- Is path an s3:// location?
function S.is(path) return type(path) == "string" and path:match("^s3://") ~= nil end

--- Split "s3://bucket/some/key" into bucket, key (key without leading slash; may be "").
function S.parse(url)
  local bucket, key = url:match("^s3://([^/]+)/?(.*)$")
  if not bucket or bucket == "" then
    fail(string.format("%s is not an S3 location: write s3://BUCKET/PREFIX (e.g. s3://backups/prod)", tostring(url)))
  end
  return bucket, (key:gsub("/+$", ""))
end

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

local function size_setting(name, default)
  local v = env(name)
  if not v then return default end
  local n, unit = v:match("^(%d+)%s*(%a*)$")
  local mult = ({ [""] = 1, B = 1, KiB = 1024, K = 1024, MiB = 1048576, M = 1048576, GiB = 1073741824, G = 1073741824 })[unit or ""]
  if not n or not mult then fail(string.format("%s=%s: write a size in bytes, or with KiB, MiB or GiB (e.g. 16MiB)", name, v)) end
  return math.tointeger(tonumber(n) * mult)
end

-- The CA bundles orch.env.lua names for its environments' backups.dir: { dir, bucket, prefix, file, origin }.
local ca_settings = {}

--- The CA bundle (a PEM file) that verifies the endpoint for the s3:// location dir and what
-- is under it; origin says where it was set (e.g. "orch.env.lua: environment prod: backups.cainfo"),
-- for errors. orch.env calls it for each environment it loads.
function S.set_cainfo(dir, file, origin)
  local bucket, prefix = S.parse(dir)
  for _, c in ipairs(ca_settings) do
    if c.bucket == bucket and c.prefix == prefix then c.file, c.origin = file, origin return end
  end
  ca_settings[#ca_settings + 1] = { bucket = bucket, prefix = prefix, file = file, origin = origin }
end

-- The setting whose location holds url (the longest such prefix), or nil.
local function ca_setting_for(url)
  local bucket, key = S.parse(url)
  local best
  for _, c in ipairs(ca_settings) do
    local under = c.prefix == "" or key == c.prefix or key:sub(1, #c.prefix + 1) == c.prefix .. "/"
    if c.bucket == bucket and under and (not best or #c.prefix > #best.prefix) then best = c end
  end
  return best
end

-- The CA bundle for url: { file, origin } from the environment's setting, else AWS_CA_BUNDLE,
-- else nil (curl's default CAs). A file that cannot be read, or holds no PEM certificate, is an
-- error here, before any request.
local ca_checked = {}   -- bundles already found readable and holding a certificate (every storage call configures again)
local function cainfo_for(url)
  local c = ca_setting_for(url)
  local file, origin = c and c.file, c and c.origin
  if not file then file, origin = env("AWS_CA_BUNDLE"), "AWS_CA_BUNDLE" end
  if not file then return nil end
  if ca_checked[file] then return { file = file, origin = origin } end
  local what = origin == "AWS_CA_BUNDLE" and ("AWS_CA_BUNDLE=" .. file) or string.format("%s = %s", origin, file)
  local todo = "point it at the PEM file of the CA that signed the S3 endpoint's certificate"
  local st = sys.stat(file)
  if st and st.type == "directory" then fail(string.format("%s: the CA bundle is a directory, not a file: %s", what, todo)) end
  local f, err = io.open(file, "rb")
  local text = f and f:read(1048576)
  if f then f:close() end
  if not text then fail(string.format("%s: cannot read the CA bundle (%s): %s", what, tostring(err or "it cannot be read"), todo)) end
  if not text:find("-----BEGIN CERTIFICATE-----", 1, true) then
    fail(string.format("%s: the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----): %s", what, todo))
  end
  ca_checked[file] = true
  return { file = file, origin = origin }
end

--- The connection settings for the location url, from the environment. Raises naming what is missing.
function S.config(url)
  local ak, sk = env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")
  if not ak or not sk then
    fail("backups in S3 need credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for " ..
      "temporary ones) in the environment; orch takes them from nowhere else")
  end
  local region = env("AWS_REGION") or env("AWS_DEFAULT_REGION") or "us-east-1"
  local endpoint = env("AWS_ENDPOINT_URL") or env("AWS_ENDPOINT_URL_S3")
  local cfg = { access_key = ak, secret_key = sk, token = env("AWS_SESSION_TOKEN"), region = region,
    part_size = size_setting("ORCH_S3_PART_SIZE", 16 * 1048576),
    attempts = math.tointeger(tonumber(env("ORCH_S3_ATTEMPTS") or "5")) or fail("ORCH_S3_ATTEMPTS must be a whole number"),
    backoff = tonumber(env("ORCH_S3_BACKOFF") or "1") or fail("ORCH_S3_BACKOFF must be a number of seconds"),
    timeout = math.tointeger(tonumber(env("ORCH_S3_TIMEOUT") or "300")) or fail("ORCH_S3_TIMEOUT must be a whole number of seconds") }
  if endpoint then
    local scheme, host = endpoint:match("^(https?)://([^/]+)/?$")
    if not scheme or host:match(":$") then fail(string.format("AWS_ENDPOINT_URL=%s: write the server's URL, e.g. http://127.0.0.1:9000 (no path)", endpoint)) end
    if host:find("@", 1, true) then fail("AWS_ENDPOINT_URL must not carry credentials: use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") end
    cfg.endpoint = scheme .. "://" .. host
    cfg.host = host
    cfg.path_style = true
  end
  -- a CA bundle is for TLS: a plain http:// endpoint neither needs nor checks one (a stale AWS_CA_BUNDLE does not stop it)
  cfg.ca = url and not (cfg.endpoint and cfg.endpoint:match("^http://")) and cainfo_for(url) or nil
  if cfg.part_size < 5 * 1048576 then
    log.debug("ORCH_S3_PART_SIZE %d is below 5 MiB: AWS S3 refuses such parts (a self-hosted server may take them)", cfg.part_size)
  end
  return cfg
end

-- RFC 3986 unreserved characters stay, everything else is %XX (SigV4's rule); keep_slash for paths.
local function encode(s, keep_slash)
  return (s:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end)
           :gsub("/", keep_slash and "/" or "%%2F"))
end
S.encode = encode

local function query_string(q)
  if not q then return "" end
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = encode(k) .. "=" .. encode(tostring(q[k])) end
  return table.concat(parts, "&")
end

-- The request fields for bucket/key (key may be nil: the bucket itself).
local function target(cfg, bucket, key)
  local t = { access_key = cfg.access_key, secret_key = cfg.secret_key, token = cfg.token, region = cfg.region, timeout = cfg.timeout,
    cainfo = cfg.ca and cfg.ca.file }
  local kpath = key and key ~= "" and ("/" .. encode(key, true)) or ""
  if cfg.path_style then
    t.endpoint, t.host, t.path = cfg.endpoint, cfg.host, "/" .. encode(bucket) .. (kpath ~= "" and kpath or "/")
  else
    t.host = string.format("%s.s3.%s.amazonaws.com", bucket, cfg.region)
    t.endpoint, t.path = "https://" .. t.host, kpath ~= "" and kpath or "/"
  end
  return t
end

local function xml_unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&#(%d+);", function(n) return utf8.char(tonumber(n)) end):gsub("&amp;", "&"))
end
local function xml_field(body, tag) local v = (body or ""):match("<" .. tag .. ">(.-)</" .. tag .. ">") return v and xml_unescape(v) end
S.xml_field = xml_field

--- What an S3 error means and what to do, from its status and code.
function S.explain(status, code, message, what)
  code = code ~= "" and code or nil
  local why
  if code == "SignatureDoesNotMatch" then
    why = "the server computed a different signature: AWS_SECRET_ACCESS_KEY does not belong to AWS_ACCESS_KEY_ID " ..
      "(or AWS_REGION is not the bucket's region). Not retried: check the secret key and the region"
  elseif code == "InvalidAccessKeyId" then
    why = "the server does not know AWS_ACCESS_KEY_ID. Not retried: check the key id (and AWS_ENDPOINT_URL)"
  elseif code == "ExpiredToken" or code == "TokenRefreshRequired" then
    why = "AWS_SESSION_TOKEN has expired. Not retried: get new temporary credentials"
  elseif code == "RequestTimeTooSkewed" then
    why = "this machine's clock is too far from the server's. Not retried: fix the clock (NTP)"
  elseif code == "NoSuchBucket" then
    why = "the bucket does not exist: create it, or fix the s3:// location (and AWS_ENDPOINT_URL)"
  elseif code == "AccessDenied" or status == 403 then
    why = "access denied: the credentials may not do this on that bucket (check the bucket policy and the key's permissions). Not retried"
  elseif code == "NoSuchUpload" then
    why = "the multipart upload is gone (aborted by someone else, or expired)"
  end
  return string.format("%s failed: HTTP %s%s%s%s", what, tostring(status), code and (" " .. code) or "",
    message and message ~= "" and (" (" .. message .. ")") or "", why and (": " .. why) or "")
end

-- failures without an answer that are the same on every try: an untrusted certificate, an unusable CA bundle
local FINAL = { tls_verify = true, tls_cafile = true }

--- What a request that got no answer means: message and kind as orch.s3 gives them. A TLS
-- verification failure names the endpoint and the CA bundle to set (or the one that was used).
function S.transport_error(cfg, what, message, kind)
  if not FINAL[kind] then return string.format("%s failed: %s (%s)", what, message, kind) end
  local endpoint = cfg.endpoint or "the S3 endpoint"
  local detail = message:match("^%u+ %S+: (.*)$") or message   -- curl's own words, without the request line
  if kind == "tls_cafile" then
    return string.format("%s failed: the CA bundle %s (from %s) could not be loaded to verify %s (%s): point %s at a PEM file " ..
      "of the CA that signed the endpoint's certificate. Not retried", what, cfg.ca and cfg.ca.file or "?", cfg.ca and cfg.ca.origin or "?",
      endpoint, detail, cfg.ca and cfg.ca.origin or "it")
  end
  if cfg.ca then
    return string.format("%s failed: the TLS certificate of %s could not be verified with the CA bundle %s (from %s): %s. " ..
      "Check that the bundle holds the CA that signed the endpoint's certificate and that the certificate names the host. Not retried",
      what, endpoint, cfg.ca.file, cfg.ca.origin, detail)
  end
  return string.format("%s failed: the TLS certificate of %s could not be verified with the system's CAs: %s. If a private CA " ..
    "signed it (MinIO, Ceph behind a company CA), set the CA bundle: AWS_CA_BUNDLE=/path/ca.pem, or backups.cainfo = " ..
    "\"/path/ca.pem\" in the environment's orch.env.lua. Not retried", what, endpoint, detail)
end

local function retryable(res) return res.status >= 500 or res.status == 429 or res.status == 408 end

-- One request with the retry policy. Returns the response (any final status), or raises when it
-- could not be completed after the attempts.
local function request(cfg, req, what)
  local wait = cfg.backoff
  for attempt = 1, cfg.attempts do
    local res, err, kind = s3c.request(req)
    if res and not retryable(res) then return res end
    -- an untrusted certificate or an unusable CA bundle is the same on every try
    if not res and FINAL[kind] then fail(S.transport_error(cfg, what, err, kind)) end
    if attempt == cfg.attempts then
      if res then fail(S.explain(res.status, xml_field(res.body, "Code"), xml_field(res.body, "Message"), what) ..
        string.format(" (after %d attempts)", attempt)) end
      fail(S.transport_error(cfg, what, err, kind) .. string.format(" (after %d attempts)", attempt))
    end
    log.warn("%s: %s; retrying in %.1fs (attempt %d of %d)", what,
      res and ("HTTP " .. res.status) or (err .. " (" .. kind .. ")"), wait, attempt + 1, cfg.attempts)
    sys.sleep(wait)
    wait = math.min(wait * 2, 30)
  end
end

local function merge(a, b) for k, v in pairs(b) do a[k] = v end return a end

local function expect_ok(res, what)
  if res.status < 200 or res.status >= 300 then
    fail(S.explain(res.status, xml_field(res.body, "Code"), xml_field(res.body, "Message"), what))
  end
  return res
end

--- A handle on one location: s3://bucket/prefix.
function S.open(url)
  local bucket, prefix = S.parse(url)
  local cfg = S.config(url)
  local L = { url = url, bucket = bucket, prefix = prefix, cfg = cfg }

  --- The key of a name inside the prefix.
  function L.key(name) return prefix ~= "" and (prefix .. "/" .. name) or name end
  --- The s3:// URL of a key.
  function L.url_of(key) return "s3://" .. bucket .. "/" .. key end

  local function req(method, key, extra)
    return merge(merge(target(cfg, bucket, key), { method = method }), extra or {})
  end
  local function where(method, key) return string.format("%s s3://%s/%s", method, bucket, key or "") end

  --- HEAD: the object's headers, or nil when there is none.
  function L.head(key)
    local res = request(cfg, req("HEAD", key), where("HEAD", key))
    if res.status == 404 then return nil end
    if res.status == 403 or res.status == 400 then
      -- a HEAD answer has no body to say why: ask again with a one-byte GET, whose error says
      local again = request(cfg, req("GET", key, { headers = { range = "bytes=0-0" } }), where("GET", key))
      if again.status == 404 then return nil end
      if again.status >= 300 then res = again end
    end
    expect_ok(res, where("HEAD", key))
    return res.headers
  end

  --- GET into memory (small objects: manifests). nil when there is none.
  function L.get(key)
    local res = request(cfg, req("GET", key), where("GET", key))
    if res.status == 404 and xml_field(res.body, "Code") ~= "NoSuchBucket" then return nil end
    return expect_ok(res, where("GET", key)).body
  end

  --- GET streamed into a local file; returns { bytes, sha256 }.
  function L.download(key, file)
    local res = request(cfg, req("GET", key, { to_file = file }), where("GET", key))
    if res.status == 404 and xml_field(res.body, "Code") ~= "NoSuchBucket" then
      fail(string.format("no object s3://%s/%s: list the backups there with orch backups list --dir s3://%s/%s", bucket, key, bucket,
        key:match("^(.*)/[^/]*$") or ""))
    end
    expect_ok(res, where("GET", key))
    return { bytes = res.bytes, sha256 = res.sha256 }
  end

  --- GET in `jobs` ranges at once (ORCH_S3_PART_SIZE each) into a local file; returns { bytes, retries }.
  function L.download_ranges(key, file, jobs)
    local h = L.head(key)
    if not h then fail(string.format("no object s3://%s/%s", bucket, key)) end
    local size = math.tointeger(tonumber(h["content-length"]))
    if not size then fail(string.format("HEAD s3://%s/%s: the answer has no Content-Length", bucket, key)) end
    local got, f = s3c.download_ranges(merge(target(cfg, bucket, key), { to_file = file, size = size, jobs = jobs,
      chunk = cfg.part_size, attempts = cfg.attempts, backoff = cfg.backoff }))
    if not got then
      local what = string.format("downloading s3://%s/%s in ranges", bucket, key)
      fail(f.kind == "http" and S.explain(f.status, f.code, f.message, what) or S.transport_error(cfg, what, f.message, f.kind))
    end
    return got
  end

  --- GET streamed down a pipe by a thread, for a reader that goes through it once: returns
  -- { path() (what to open), finish() -> { bytes, sha256 } (raises explained), failure() (the
  -- download's own failure, explained, or nil), abort() }.
  function L.stream(key)
    local d = s3c.downloader(merge(target(cfg, bucket, key), { attempts = cfg.attempts, backoff = cfg.backoff }))
    local D = {}
    local function explain(f)
      local what = where("GET", key)
      if f.kind == "http" and f.status == 404 and f.code ~= "NoSuchBucket" then return string.format("no object s3://%s/%s", bucket, key) end
      return f.kind == "http" and S.explain(f.status, f.code, f.message, what) or S.transport_error(cfg, what, f.message, f.kind)
    end
    function D.path() return d:path() end
    function D.failure()
      local got, f = d:finish()
      if got then D.got = got return nil end
      return explain(f)
    end
    function D.finish()
      local got, f = d:finish()
      if not got then fail(explain(f)) end
      return got
    end
    function D.abort() d:abort() end
    return D
  end

  --- PUT a small object from a string.
  function L.put(key, body, content_type)
    expect_ok(request(cfg, req("PUT", key, { body = body, headers = { ["content-type"] = content_type or "application/octet-stream" } }),
      where("PUT", key)), where("PUT", key))
  end

  function L.delete(key)
    local res = request(cfg, req("DELETE", key), where("DELETE", key))
    if res.status ~= 404 then expect_ok(res, where("DELETE", key)) end
  end

  --- The objects directly inside the prefix: { key, name, size, last_modified }.
  function L.list()
    local out, token = {}, nil
    local p = prefix ~= "" and (prefix .. "/") or ""
    repeat
      local q = { ["list-type"] = "2", prefix = p, delimiter = "/" }
      if token then q["continuation-token"] = token end
      local res = expect_ok(request(cfg, req("GET", nil, { query = query_string(q) }), "list " .. url), "list " .. url)
      for c in res.body:gmatch("<Contents>(.-)</Contents>") do
        local key = xml_field(c, "Key")
        out[#out + 1] = { key = key, name = key:sub(#p + 1), size = tonumber(xml_field(c, "Size")), last_modified = xml_field(c, "LastModified") }
      end
      token = xml_field(res.body, "IsTruncated") == "true" and xml_field(res.body, "NextContinuationToken") or nil
    until not token
    return out
  end

  --- Start a multipart upload of key: returns an upload { path(), finish(), abort() } whose
  -- path() is where the archive writer writes. finish() completes the object and reads it back
  -- (size and checksum compared); abort() (safe twice) removes the parts. Raises explained errors.
  function L.upload(key)
    local w = where("create multipart upload of", key)
    local res = expect_ok(request(cfg, req("POST", key, { query = "uploads=", headers = { ["content-type"] = "application/octet-stream" } }), w), w)
    local upload_id = xml_field(res.body, "UploadId")
    if not upload_id then fail(w .. ": the server's answer has no UploadId") end
    local t = target(cfg, bucket, key)
    local u = s3c.uploader(merge(t, { upload_id = upload_id, part_size = cfg.part_size, attempts = cfg.attempts, backoff = cfg.backoff }))
    local U, done = {}, false
    local uq = "uploadId=" .. encode(upload_id)
    local function abort_remote()
      local ok, err = pcall(function()
        local r = request(cfg, req("DELETE", key, { query = uq, cleanup = true, timeout = 30 }), where("abort multipart upload of", key))
        if r.status ~= 404 and (r.status < 200 or r.status >= 300) then
          error(S.explain(r.status, xml_field(r.body, "Code"), xml_field(r.body, "Message"), where("abort multipart upload of", key)), 0)
        end
      end)
      if not ok then
        log.warn("the failed upload's parts could not be removed (%s); they cost storage until removed: " ..
          "a bucket lifecycle rule 'AbortIncompleteMultipartUpload' cleans them up", tostring(type(err) == "table" and err.message or err))
      end
      U.parts_removed = ok
    end
    function U.path() return u:path() end
    --- Why the upload failed on its own, as a message; nil when it did not. Stops the thread and aborts.
    function U.abort()
      if done then return nil end
      done = true
      local f = u:abort()
      abort_remote()
      if f then
        local what = string.format("uploading part %d of s3://%s/%s", f.part, bucket, key)
        if f.kind == "http" then
          return S.explain(f.status, f.code, f.message, what) .. (f.retries > 0 and string.format(" (%d retries in all)", f.retries) or "")
        end
        return S.transport_error(cfg, what, f.message, f.kind) .. (f.retries > 0 and string.format(" (after %d retries)", f.retries) or "")
      end
      return nil
    end
    function U.finish()
      local info, f = u:finish()
      if not info then
        done = true
        abort_remote()
        local what = string.format("uploading part %d of s3://%s/%s", f.part, bucket, key)
        fail(f.kind == "http" and S.explain(f.status, f.code, f.message, what) or S.transport_error(cfg, what, f.message, f.kind))
      end
      local xml = { "<CompleteMultipartUpload>" }
      for _, p in ipairs(info.parts) do
        xml[#xml + 1] = string.format("<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>", p.number,
          (p.etag:gsub("&", "&amp;"):gsub('"', "&quot;")))
      end
      xml[#xml + 1] = "</CompleteMultipartUpload>"
      local cw = where("complete multipart upload of", key)
      local ok, err = pcall(function()
        local r = request(cfg, req("POST", key, { query = uq, body = table.concat(xml), headers = { ["content-type"] = "application/xml" } }), cw)
        expect_ok(r, cw)
        -- a 200 may still carry an error (S3 reports late failures in the body)
        if r.body:match("<Error>") then fail(S.explain(r.status, xml_field(r.body, "Code"), xml_field(r.body, "Message"), cw)) end
      end)
      if not ok then done = true abort_remote() error(err, 0) end
      done = true
      -- read back: the object's size and checksum against what was sent
      local h = L.head(key)
      local function drop(why)
        pcall(L.delete, key)
        fail(string.format("s3://%s/%s was uploaded but %s; the object was deleted and no backup was kept", bucket, key, why))
      end
      if not h then drop("it is not there when read back") end
      local size = tonumber(h["content-length"])
      if size ~= info.bytes then drop(string.format("it is %s bytes on the server, %d were sent", tostring(size), info.bytes)) end
      local etag = (h.etag or ""):gsub('"', "")
      -- an ETag is the MD5 of the object, or S3's multipart form (MD5 of the parts' MD5s, "-N")
      if etag ~= info.md5 and etag ~= info.multipart_etag then
        -- an ETag that is no MD5 (SSE-KMS encrypted buckets): read the object back whole instead
        local got = L.download(key, "/dev/null")
        if got.sha256 ~= info.sha256 or got.bytes ~= info.bytes then
          drop(string.format("reading it back gives %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were sent",
            got.bytes, got.sha256, info.bytes, info.sha256))
        end
        log.info("s3://%s/%s: its ETag is not an MD5 (an encrypted bucket?): read back whole, its SHA-256 matches", bucket, key)
      end
      info.etag = etag
      return info
    end
    return U
  end

  return L
end

return S
