-- orch.http against a real local HTTP(S) server (tests/httpd.py): methods,
-- bodies, headers, timings, timeouts, redirects, TLS verification, size
-- limits, secrets kept out of messages, and Ctrl-C.
local H = require "helper"
local sys = require "orch.sys"
local json = require "orch.json"
local http = require "orch.http"

describe("orch.http", function()
  local srv
  setup(function() srv = H.httpd() end)
  teardown(function() srv:stop() end)

  it("GET returns status, lower-case headers, body, the final URL and per-phase timings", function()
    local r = assert(http.request { url = srv:url("/json") })
    assert.equals(200, r.status)
    assert.equals("application/json", r.headers["content-type"])
    assert.equals("1.2.3", json.decode(r.body).version)
    assert.equals(srv:url("/json"), r.url)
    assert.equals("127.0.0.1", r.ip)
    assert.equals(srv.port, r.port)
    assert.equals("1.1", r.http_version)
    local t = r.timings
    assert.is_true(t.total > 0 and t.first_byte <= t.total and t.dns >= 0 and t.connect >= 0 and t.tls == 0, json.encode(t))
  end)

  it("an HTTP error status is a response, not a failure", function()
    local r = assert(http.request { url = srv:url("/status/503") })
    assert.equals(503, r.status)
    assert.equals("status 503", r.body)
  end)

  it("sends the method, headers and a string body as given", function()
    local r = assert(http.request { method = "PUT", url = srv:url("/echo"), body = '{"a":1}',
      headers = { ["Content-Type"] = "application/json", ["X-Team"] = "payments" } })
    local e = json.decode(r.body)
    assert.equals("PUT", e.method)
    assert.equals('{"a":1}', e.body)
    assert.equals("application/json", e.headers["content-type"])
    assert.equals("payments", e.headers["x-team"])
    assert.is_nil(e.headers["expect"])
    -- list form, and POST is the default for a body
    r = assert(http.request { url = srv:url("/echo"), body = "x=1", headers = { "X-List: yes" } })
    e = json.decode(r.body)
    assert.equals("POST", e.method)
    assert.equals("yes", e.headers["x-list"])
    assert.equals("application/octet-stream", e.headers["content-type"])
  end)

  it("streams a request body from a file", function()
    local dir = H.tmpdir()
    local chunk = string.rep("0123456789abcdef", 65536)   -- 1 MiB
    H.write(dir .. "/body", chunk)
    local r = assert(http.request { url = srv:url("/echo"), body_file = dir .. "/body", headers = { ["Content-Type"] = "text/plain" } })
    local e = json.decode(r.body)
    assert.equals(#chunk, e.body_length)
    assert.equals(sys.sha256(chunk), sys.sha256(e.body))
    local none, err, kind = http.request { url = srv:url("/echo"), body_file = dir .. "/missing" }
    assert.is_nil(none)
    assert.equals("io", kind)
    assert.matches("cannot read the request body .*/missing", err)
    sys.rmtree(dir)
  end)

  it("HEAD and DELETE", function()
    local r = assert(http.request { method = "HEAD", url = srv:url("/big/1000") })
    assert.equals(200, r.status)
    assert.equals("", r.body)
    assert.equals("1000", r.headers["content-length"])
    r = assert(http.request { method = "DELETE", url = srv:url("/echo") })
    assert.equals("DELETE", json.decode(r.body).method)
  end)

  it("honours the total timeout on a server that never answers", function()
    local t0 = sys.monotonic()
    local r, err, kind = http.request { url = srv:url("/hang"), timeout = 1 }
    local took = sys.monotonic() - t0
    assert.is_nil(r)
    assert.equals("timeout", kind)
    assert.matches("GET http://127.0.0.1:%d+/hang: timed out", err)
    assert.is_true(took >= 0.9 and took < 4, "took " .. took)
  end)

  it("a slow body counts against the timeout too", function()
    local r, _, kind = http.request { url = srv:url("/slow-body/3"), timeout = 1 }
    assert.is_nil(r)
    assert.equals("timeout", kind)
    r = assert(http.request { url = srv:url("/slow-body/0.2"), timeout = 5 })
    assert.matches("the rest", r.body)
  end)

  it("reports a refused connection quickly and by kind", function()
    local port = sys.free_port()
    local t0 = sys.monotonic()
    local r, err, kind = http.request { url = "http://127.0.0.1:" .. port .. "/health", timeout = 5 }
    assert.is_nil(r)
    assert.equals("connect", kind)
    assert.matches("could not connect", err)
    assert.is_true(sys.monotonic() - t0 < 4)
  end)

  it("follows redirects up to max_redirects, and no further", function()
    local r = assert(http.request { url = srv:url("/redirect/3") })
    assert.equals(200, r.status)
    assert.equals("arrived", r.body)
    assert.equals(3, r.redirects)
    assert.equals(srv:url("/redirect/0"), r.url)
    local none, err, kind = http.request { url = srv:url("/redirect/3"), max_redirects = 2 }
    assert.is_nil(none)
    assert.equals("redirects", kind)
    assert.matches("too many redirects", err)
    none, err, kind = http.request { url = srv:url("/loop") }
    assert.equals("redirects", kind)
    -- max_redirects = 0: the redirect itself is the answer
    r = assert(http.request { url = srv:url("/redirect/1"), max_redirects = 0 })
    assert.equals(302, r.status)
    assert.equals("/redirect/0", r.headers.location)
  end)

  it("refuses to follow a redirect to anything but http(s)", function()
    local r, _, kind = http.request { url = srv:url("/redirect-to?url=file:///etc/passwd") }
    assert.is_nil(r)
    assert.equals("protocol", kind)
    r, _, kind = http.request { url = "ftp://127.0.0.1/x" }
    assert.equals("protocol", kind)
  end)

  it("stops reading a response larger than max_body", function()
    local r, err, kind = http.request { url = srv:url("/big/2000000"), max_body = 1000000 }
    assert.is_nil(r)
    assert.equals("too_large", kind)
    assert.matches("larger than max_body", err)
    r = assert(http.request { url = srv:url("/big/2000000") })
    assert.equals(2000000, #r.body)
  end)

  it("never shows URL credentials, query strings or header values in its messages", function()
    local port = sys.free_port()
    local _, err = http.request { url = "http://deploy:s3cretpw@127.0.0.1:" .. port .. "/hook?token=tok123abc",
      headers = { Authorization = "Bearer abcdef123456" }, timeout = 2 }
    assert.matches("http://%*%*%*@127.0.0.1:%d+/hook%?%*%*%*", err)
    for _, secret in ipairs { "s3cretpw", "tok123abc", "abcdef123456", "deploy" } do
      assert.is_nil(err:find(secret, 1, true), err)
    end
    _, err = http.request { url = srv:url("/hang?api_key=k3y999"), timeout = 0.5 }
    assert.is_nil(err:find("k3y999", 1, true), err)
  end)

  it("raises on misuse, naming the option", function()
    assert.has_error(function() http.request {} end, "http.request: url is required")
    assert.has_error(function() http.request { url = srv:url("/"), headers = { ["X-A"] = "a\r\nX-Injected: 1" } } end,
      "http.request: the value of header X-A contains a line break")
    assert.has_error(function() http.request { url = srv:url("/"), timeout = "soon" } end)
    assert.has_error(function() http.request { url = srv:url("/"), body = "a", body_file = "/etc/hostname" } end)
  end)

  describe("over TLS", function()
    local tls, cert
    setup(function()
      cert = H.tls_cert()
      tls = H.httpd { tls = cert }
    end)
    teardown(function() tls:stop() end)

    it("verifies the server's certificate by default", function()
      local r, err, kind = http.request { url = tls:url("/json"), timeout = 5 }
      assert.is_nil(r)
      assert.equals("tls", kind)
      assert.matches("pass its certificate as cainfo", err)
    end)

    it("trusts a private CA given as cainfo, and reports the TLS time", function()
      local r = assert(http.request { url = tls:url("/json"), cainfo = cert.cert })
      assert.equals(200, r.status)
      assert.is_true(r.timings.tls > 0, json.encode(r.timings))
      -- the certificate is for 127.0.0.1 and localhost: any other name fails verification
      r = assert(http.request { url = "https://localhost:" .. tls.port .. "/json", cainfo = cert.cert })
      assert.equals(200, r.status)
    end)

    it("presents a client certificate to a server that requires one (mutual TLS)", function()
      local client = H.client_cert()
      local mtls = H.httpd { tls = cert, client_ca = client.cert }
      finally(function() mtls:stop() end)
      local r, err, kind = http.request { url = mtls:url("/json"), cainfo = cert.cert, timeout = 5 }
      assert.is_nil(r)
      assert.is_true(kind == "tls" or kind == "connect", tostring(kind) .. ": " .. tostring(err))
      r = assert(http.request { url = mtls:url("/json"), cainfo = cert.cert, cert = client.cert, key = client.key })
      assert.equals(200, r.status)
    end)

    it("verify = false skips verification (for test servers only)", function()
      local r = assert(http.request { url = tls:url("/json"), verify = false })
      assert.equals(200, r.status)
    end)
  end)

  it("Ctrl-C stops a request in flight: exit 130, promptly", function()
    local dir = H.tmpdir()
    -- a server of its own that logs when it holds the request: the signal goes once it does
    local hang = H.httpd { log = dir .. "/httpd.log" }
    finally(function() hang:stop() end)
    H.write(dir .. "/slow.lua", string.format([[
local http = require "orch.http"
local r, err = http.request { url = %q, timeout = 60 }
print("returned", r, err)
]], hang:url("/hang")))
    local r = sys.spawn { "sh", "-c", string.format(
      "%s %s/slow.lua > %s/out 2> %s/err & pid=$!; seen=no; for i in $(seq 1200); do grep -q 'hanging on /hang' %s/httpd.log 2>/dev/null && seen=yes && break; sleep 0.05; done; " ..
      "echo $(date +%%s.%%N) > %s/signalled; kill -INT $pid; wait $pid; echo $? seen=$seen",
      H.orch_bin, dir, dir, dir, dir, dir), timeout = 120 }
    assert.matches("seen=yes", r.stdout, 1, true)
    local took = sys.now() - tonumber(H.read(dir .. "/signalled"))
    assert.equals("130", r.stdout:match("%d+"), H.read(dir .. "/out") .. H.read(dir .. "/err"))
    assert.is_nil(H.read(dir .. "/out"):find("returned", 1, true))
    assert.matches("interrupted", H.read(dir .. "/err"))
    assert.is_true(took < 5, "took " .. took)
    sys.rmtree(dir)
  end)
end)
