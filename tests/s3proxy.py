#!/usr/bin/env python3
"""A real HTTP server in front of s3rver for the S3 specs: it forwards every
request to s3rver and answers with s3rver's answer, after two things s3rver
does not do itself:

* it checks each request's AWS Signature Version 4 with botocore (an
  independent implementation) against the secret it was started with, and the
  payload's SHA-256 against x-amz-content-sha256; a mismatch is answered
  403 SignatureDoesNotMatch, as S3 answers;
* it fails requests on purpose when told to (POST /__faults with a JSON list
  of rules {method, query (a substring of the query string), status, times,
  delay (seconds before forwarding), stall (seconds of silence, then the
  connection is dropped unanswered)}), e.g. the first 2 part uploads with 503.

GET /__log returns the requests seen so far as JSON: {method, path, query,
status, headers (names only), faulted}. POST /__reset clears log and rules.

With --tls CERT KEY it serves HTTPS (an endpoint behind a private CA);
GET /__tls returns the TLS handshakes that failed so far, as a JSON list of
the reasons (a client that does not trust the certificate aborts there,
before any request).

usage: s3proxy.py --upstream http://127.0.0.1:PORT --secret KEY --port-file F [--tls CERT KEY] [--parent PID]
"""
import argparse, hashlib, http.client, json, os, ssl, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ap = argparse.ArgumentParser()
ap.add_argument("--upstream", required=True)
ap.add_argument("--secret", required=True)
ap.add_argument("--port-file", required=True)
ap.add_argument("--parent", type=int, default=0)
ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this PEM certificate and key")
args = ap.parse_args()
up = urllib.parse.urlsplit(args.upstream)

lock = threading.Lock()
rules, log, tls_failures = [], [], []


def error_xml(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>' % (code, message)).encode()


def check_signature(method, path, headers, body):
    """None when the request is signed right, else a reason."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header"
    fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    akey, date, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    want = hashlib.sha256(body).hexdigest()
    if headers.get("x-amz-content-sha256") not in (want, "UNSIGNED-PAYLOAD"):
        return "x-amz-content-sha256 is not the payload's SHA-256"
    req = AWSRequest(method=method, url="http://%s%s" % (headers.get("Host"), path), data=body)
    for name in signed:
        req.headers[name] = headers.get(name, "")
    req.context["timestamp"] = headers.get("x-amz-date")
    signer = S3SigV4Auth(Credentials(akey, args.secret, headers.get("x-amz-security-token")), service, region)
    canonical = signer.canonical_request(req)
    sts = signer.string_to_sign(req, canonical)
    if signer.signature(sts, req) != fields["Signature"]:
        return "signature differs from botocore's"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body, ctype="application/xml", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        path, _, query = self.path.partition("?")
        if path == "/__log":
            with lock:
                return self.reply(200, json.dumps(log).encode(), "application/json")
        if path == "/__faults":
            with lock:
                rules.extend(json.loads(body))
            return self.reply(200, b"{}", "application/json")
        if path == "/__tls":
            with lock:
                return self.reply(200, json.dumps(tls_failures).encode(), "application/json")
        if path == "/__reset":
            with lock:
                rules.clear()
                log.clear()
                tls_failures.clear()
            return self.reply(200, b"{}", "application/json")
        entry = {"method": self.command, "path": path, "query": query, "headers": sorted(k.lower() for k in self.headers.keys()),
                 "faulted": False, "bytes": len(body)}
        with lock:
            log.append(entry)
            rule = None
            for r in rules:
                if r.get("times", 1) > 0 and r.get("method", self.command) == self.command and r.get("query", "") in query \
                        and r.get("path", "") in path:
                    r["times"] = r.get("times", 1) - 1
                    rule = r
                    break
        why = check_signature(self.command, self.path, self.headers, body)
        if why:
            entry["status"] = 403
            entry["signature"] = why
            return self.reply(403, error_xml("SignatureDoesNotMatch", "The request signature we calculated does not match "
                                             "the signature you provided (" + why + ")"))
        if rule:
            if rule.get("delay"):
                time.sleep(rule["delay"])
            if rule.get("stall"):
                # no answer at all for a while, then the connection is dropped (the client's timeout)
                entry["status"] = 0
                entry["faulted"] = True
                time.sleep(rule["stall"])
                self.close_connection = True
                return
            if rule.get("status"):
                entry["status"] = rule["status"]
                entry["faulted"] = True
                return self.reply(rule["status"], error_xml("ServiceUnavailable" if rule["status"] == 503 else "InjectedFault",
                                                            "injected by the test proxy"))
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
        conn.request(self.command, self.path, body=body if (body or self.command in ("PUT", "POST")) else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        entry["status"] = resp.status
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "keep-alive"):
                self.send_header(k, v)
        self.send_header("Content-Length", resp.getheader("Content-Length") if self.command == "HEAD" and resp.getheader("Content-Length") else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


def watch_parent():
    while args.parent:
        try:
            os.kill(args.parent, 0)
        except OSError:
            os._exit(0)
        time.sleep(0.5)


class Server(ThreadingHTTPServer):
    """A thread per connection; with --tls the handshake is made in that thread, and one that
    fails is recorded (GET /__tls), not answered."""
    daemon_threads = True

    def __init__(self, context):
        self.context = context
        super().__init__(("127.0.0.1", 0), Handler)

    def finish_request(self, request, client_address):
        if self.context is None:
            return super().finish_request(request, client_address)
        request.settimeout(30)
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with lock:
                tls_failures.append(str(e))
            return
        conn.settimeout(None)
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


context = None
if args.tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls[0], args.tls[1])
srv = Server(context)
threading.Thread(target=watch_parent, daemon=True).start()
with open(args.port_file + ".tmp", "w") as f:
    f.write("%d\n%d\n" % (srv.server_address[1], os.getpid()))
os.rename(args.port_file + ".tmp", args.port_file)
srv.serve_forever()
