#!/usr/bin/env python3
"""A real local HTTP(S) server for orch's busted specs.

The specs never mock HTTP: health checks, webhooks, retries, redirects,
timeouts and TLS are tested against this server, started per spec by
tests/helper.lua (H.httpd). Python 3 standard library only.

    python3 tests/httpd.py --port-file FILE [--tls CERT KEY [--client-ca FILE]] [--parent PID]
                           [--lifetime SECONDS] [--verbose]

It listens on 127.0.0.1 on a free port and, once listening, writes
"PORT\\nPID\\n" to FILE atomically (FILE.tmp, then rename). It exits by itself
when the --parent process is gone (checked every 0.5 s) and in any case after
--lifetime seconds (default 15 minutes), so a crashed test run leaves nothing
behind. SIGTERM/SIGINT make it exit at once; it removes FILE when it exits.

Every route answers GET, POST, PUT, DELETE, HEAD, PATCH and OPTIONS (HEAD
sends the headers only); query strings are allowed everywhere:

    /status/NNN          status NNN (200..599), body "status NNN"
    /delay/SECONDS       sleeps SECONDS (a float), then 200 "slept"
    /health/pass|warn|fail
                         application/health+json; 200 for pass/warn, 503 for fail
    /json                a fixed application/json document
    /echo[/...]          the request as JSON: method, path, query, headers
                         (lower-cased names), body (text), body_length
    /flaky/KEY/N         the first N requests for KEY: 503 "not yet (k of N)";
                         later ones: 200 "ok after N failures"
    /flaky-reset         forgets every /flaky counter
    /redirect/N          302 to /redirect/N-1; /redirect/0 is 200 "arrived"
    /loop                302 to /loop, forever
    /redirect-to?url=U   302 (or ?status=3xx) to U
    /big/BYTES           200 with BYTES bytes of "x", written in 64 KiB pieces
    /hook/NAME           records the request (name, method, headers, body), 200 "ok"
    /hook-fail/NAME      records it likewise, 500 "hook failed"
    /hooks               the recorded hooks, in arrival order, as a JSON list
    /hooks-reset         forgets the recorded hooks
    /hang                reads the request, then sleeps 60 s and closes without answering
    /slow-body/SECONDS   headers and a first part of the body at once, the rest
                         SECONDS later
    /headers/NAME/VALUE  200 "ok" with the response header NAME: VALUE (URL-decoded)
    anything else        404 "no route"

Responses are HTTP/1.1 with a correct Content-Length (none on 204), so
keep-alive works. Request bodies are read whole before answering, with
Content-Length or Transfer-Encoding: chunked; "Expect: 100-continue" is
answered by http.server itself.
"""

import argparse
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

BLOCK = 64 * 1024            # /big writes this much at a time
HANG_SECONDS = 60            # how long /hang keeps a request without answering
TEXT = "text/plain; charset=utf-8"

# The fixed /json document (insertion order is kept by json.dumps).
JSON_DOC = {"status": "up", "db": {"status": "up", "latency_ms": 3},
            "version": "1.2.3", "items": [1, 2, 3]}

HEALTH_OUTPUT = {"pass": "all checks passed", "warn": "database is slow",
                 "fail": "database is unreachable"}

# Header names allowed by /headers/NAME/VALUE (RFC 9110 token characters).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class State:
    """What the routes remember between requests; shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.flaky = {}      # KEY -> number of requests seen
        self.hooks = []      # recorded /hook and /hook-fail requests

    def flaky_hit(self, key):
        with self.lock:
            self.flaky[key] = self.flaky.get(key, 0) + 1
            return self.flaky[key]

    def record_hook(self, hook):
        with self.lock:
            self.hooks.append(hook)

    def hooks_copy(self):
        with self.lock:
            return list(self.hooks)

    def reset_hooks(self):
        with self.lock:
            self.hooks.clear()

    def reset_flaky(self):
        with self.lock:
            self.flaky.clear()


class Handler(BaseHTTPRequestHandler):
    """One connection; http.server calls do_<METHOD> once per request."""

    protocol_version = "HTTP/1.1"        # keep-alive; every answer has a length
    server_version = "orch-test-httpd/1"
    timeout = 120                        # an idle keep-alive connection is dropped

    # ---- plumbing -----------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 (http.server's name)
        if self.server.verbose:
            sys.stderr.write("httpd: %s - %s\n" % (self.address_string(), format % args))

    def do_GET(self):
        url = urlsplit(self.path)
        self.route_path, self.query = url.path, url.query
        try:
            self.body = self.read_body()
        except (ValueError, OSError) as e:
            self.close_connection = True
            self.reply(400, "bad request body: %s" % e)
            return
        for pattern, name in ROUTES:
            m = pattern.fullmatch(self.route_path)
            if m:
                getattr(self, name)(*m.groups())
                return
        self.reply(404, "no route")

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def read_body(self):
        """The request body as bytes: chunked, Content-Length, or none."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if n < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ValueError("connection closed after %d of %d bytes" % (len(data), n))
        return data

    def read_chunked(self):
        """Decode a Transfer-Encoding: chunked body (trailers are dropped)."""
        parts = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ValueError("connection closed inside a chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)   # chunk extensions ignored
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            if self.rfile.read(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        while True:                                           # trailer section
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(parts)

    def reply(self, status, body=b"", content_type=TEXT, headers=()):
        """Send a whole response with its Content-Length (no body for HEAD)."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        bodiless = status in (204, 304)
        self.send_response(status)
        if not bodiless:
            self.send_header("Content-Type", content_type)
        if status != 204:
            self.send_header("Content-Length", "0" if bodiless else str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and not bodiless and data:
            self.wfile.write(data)

    def reply_json(self, status, value, content_type="application/json"):
        self.reply(status, json.dumps(value, separators=(",", ":")), content_type)

    def redirect(self, location, status=302):
        self.reply(status, "redirecting to %s" % location, headers=[("Location", location)])

    # ---- routes -------------------------------------------------------------

    def r_status(self, code):
        code = int(code)
        if not 200 <= code <= 599:
            self.reply(400, "status must be 200..599")
            return
        self.reply(code, "status %d" % code)

    def r_delay(self, seconds):
        time.sleep(float(seconds))
        self.reply(200, "slept")

    def r_health(self, status):
        doc = {"status": status, "version": "1", "output": HEALTH_OUTPUT[status],
               "checks": {"db:responseTime": [
                   {"status": status, "observedValue": 12, "observedUnit": "ms"}]}}
        self.reply_json(503 if status == "fail" else 200, doc, "application/health+json")

    def r_json(self):
        self.reply_json(200, JSON_DOC)

    def r_echo(self):
        headers = {}
        for name, value in self.headers.items():   # repeated headers are joined
            name = name.lower()
            headers[name] = headers[name] + ", " + value if name in headers else value
        self.reply_json(200, {"method": self.command, "path": self.route_path,
                              "query": self.query, "headers": headers,
                              "body": self.body.decode("utf-8", "replace"),
                              "body_length": len(self.body)})

    def r_flaky(self, key, n):
        n = int(n)
        k = self.server.state.flaky_hit(unquote(key))
        if k <= n:
            self.reply(503, "not yet (%d of %d)" % (k, n))
        else:
            self.reply(200, "ok after %d failures" % n)

    def r_flaky_reset(self):
        self.server.state.reset_flaky()
        self.reply(200, "ok")

    def r_redirect(self, n):
        n = int(n)
        if n == 0:
            self.reply(200, "arrived")
        else:
            self.redirect("/redirect/%d" % (n - 1))

    def r_loop(self):
        self.redirect("/loop")

    def r_redirect_to(self):
        q = parse_qs(self.query)
        url = q.get("url", [""])[0]
        status = int(q.get("status", ["302"])[0])
        if not url or "\r" in url or "\n" in url or not 300 <= status <= 399:
            self.reply(400, "need ?url=U (and optionally status=3xx)")
            return
        self.redirect(url, status)

    def r_big(self, size):
        size = int(size)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        block = memoryview(b"x" * BLOCK)
        while size > 0:
            k = min(size, BLOCK)
            self.wfile.write(block[:k])
            size -= k

    def record(self, name, status):
        self.server.state.record_hook({
            "name": unquote(name), "method": self.command, "query": self.query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.body.decode("utf-8", "replace"), "status": status})

    def r_hook(self, name):
        self.record(name, 200)
        self.reply(200, "ok")

    def r_hook_fail(self, name):
        self.record(name, 500)
        self.reply(500, "hook failed")

    def r_hooks(self):
        self.reply_json(200, self.server.state.hooks_copy())

    def r_hooks_reset(self):
        self.server.state.reset_hooks()
        self.reply(200, "ok")

    def r_hang(self):
        self.log_message("hanging on %s", self.path)   # (with --verbose: a test can wait for this line)
        time.sleep(HANG_SECONDS)       # the request was read; never answer it
        self.close_connection = True

    def r_slow_body(self, seconds):
        first, rest = b"slow body: first part\n", b"slow body: the rest\n"
        self.send_response(200)
        self.send_header("Content-Type", TEXT)
        self.send_header("Content-Length", str(len(first) + len(rest)))
        self.end_headers()
        if self.command == "HEAD":
            return
        self.wfile.write(first)        # wfile is unbuffered: this leaves now
        time.sleep(float(seconds))
        self.wfile.write(rest)

    def r_headers(self, name, value):
        name, value = unquote(name), unquote(value)
        if not TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            self.reply(400, "bad header name or value")
            return
        self.reply(200, "ok", headers=[(name, value)])


NUM = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"      # a non-negative float
ROUTES = [(re.compile(p), name) for p, name in [
    (r"/status/([0-9]{3})", "r_status"),
    (r"/delay/" + NUM, "r_delay"),
    (r"/health/(pass|warn|fail)", "r_health"),
    (r"/json", "r_json"),
    (r"/echo(?:/.*)?", "r_echo"),
    (r"/flaky/([^/]+)/([0-9]+)", "r_flaky"),
    (r"/flaky-reset", "r_flaky_reset"),
    (r"/redirect/([0-9]+)", "r_redirect"),
    (r"/loop", "r_loop"),
    (r"/redirect-to", "r_redirect_to"),
    (r"/big/([0-9]+)", "r_big"),
    (r"/hook/([^/]+)", "r_hook"),
    (r"/hook-fail/([^/]+)", "r_hook_fail"),
    (r"/hooks", "r_hooks"),
    (r"/hooks-reset", "r_hooks_reset"),
    (r"/hang", "r_hang"),
    (r"/slow-body/" + NUM, "r_slow_body"),
    (r"/headers/([^/]+)/([^/]*)", "r_headers"),
]]


class Server(ThreadingHTTPServer):
    """A thread per connection; TLS (if any) is negotiated in that thread,
    so a client that never finishes its handshake blocks nobody."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, tls_context, verbose):
        self.tls_context = tls_context
        self.verbose = verbose
        self.state = State()
        super().__init__(("127.0.0.1", 0), Handler)

    def finish_request(self, request, client_address):
        if self.tls_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(10)                       # for the handshake
        try:
            conn = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            if self.verbose:
                sys.stderr.write("httpd: TLS handshake with %s failed: %s\n" % (client_address[0], e))
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()

    def handle_error(self, request, client_address):
        # Clients hanging up (timeouts, resets) are normal in these tests.
        if self.verbose:
            super().handle_error(request, client_address)


def process_gone(pid):
    """True when pid no longer exists (or is a zombie nobody reaps)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def main():
    ap = argparse.ArgumentParser(description="Local HTTP(S) server for orch's specs.")
    ap.add_argument("--port-file", required=True, help="write PORT and PID here once listening")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this PEM cert and key")
    ap.add_argument("--client-ca", metavar="FILE", help="with --tls: require a client certificate signed by FILE")
    ap.add_argument("--parent", type=int, help="exit when this process is gone")
    ap.add_argument("--lifetime", type=float, default=15 * 60, help="exit after this many seconds (900)")
    ap.add_argument("--verbose", action="store_true", help="log requests and errors to stderr")
    args = ap.parse_args()

    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)
    server = Server(context, args.verbose)           # bound and listening here

    def leave(*_):
        try:
            os.remove(args.port_file)
        except OSError:
            pass
        os._exit(0)    # handler threads may be asleep (/hang): do not wait for them

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)

    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n%d\n" % (server.server_address[1], os.getpid()))
    os.replace(tmp, args.port_file)

    def watch():
        deadline = time.monotonic() + args.lifetime
        while time.monotonic() < deadline:
            if args.parent and process_gone(args.parent):
                break
            time.sleep(0.5)
        leave()

    threading.Thread(target=watch, daemon=True).start()
    server.serve_forever(poll_interval=0.5)


if __name__ == "__main__":
    main()
