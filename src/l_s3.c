/*
 * l_s3.c -- orch.s3: the bytes of S3-compatible object storage. AWS
 * Signature Version 4 (HMAC-SHA256 from libcrypto), signed requests over
 * libcurl, and a multipart uploader that streams an archive while it is being
 * written. What to upload where, retention and error explanations are Lua's
 * (orch.storage.s3).
 *
 *   local s3 = require "orch.s3"
 *   s3.sign { method, path, query, headers = { host = ..., ... }, payload_hash, region,
 *             time = "20130524T000000Z", access_key, secret_key }  --> authorization, canonical, string_to_sign
 *   s3.request { method, endpoint = "http://127.0.0.1:9000", host, path, query, headers,
 *                body = s | body_file = p, to_file = p, region, access_key, secret_key, token,
 *                timeout, connect_timeout, cainfo = CA bundle path, cleanup = true (runs even after Ctrl-C) }
 *     --> { status, headers = { lower-case = value }, body, bytes, sha256 } | nil, message, kind
 *   local u = s3.uploader { endpoint, host, path, region, access_key, secret_key, token,   -- 2 x part_size of memory
 *                           upload_id, part_size, attempts, backoff, timeout, connect_timeout }
 *   u:path()     -- "/dev/fd/N": the pipe the archive writer writes into
 *   u:finish()   -- end of data: waits for the last part; --> { parts = { { number, etag } },
 *                --   bytes, sha256, md5, parts_md5, retries } | nil, { message, status, code, kind, part }
 *   u:abort()    -- stops the upload thread (the Lua side then aborts the multipart upload)
 *   local d = s3.downloader { endpoint, host, path, ..., attempts, backoff }   -- a GET down a pipe
 *   d:path() ("/dev/fd/N" to read), d:finish() --> { bytes, sha256 } | nil, failure; d:abort()
 *   s3.download_ranges { endpoint, host, path, ..., to_file, size, jobs, chunk, attempts, backoff }
 *     --> { bytes, retries } | nil, { message, status, code, kind }   -- jobs threads, one range each at a time
 *
 * The uploader holds at most two parts in memory: a reader thread fills one
 * part buffer from the pipe while a sender thread uploads the other, so the
 * backup keeps running during an upload. Each part is retried on 5xx, 429,
 * timeouts and connection failures with exponential backoff; any other
 * status is final. When it fails for good the pipe is closed, so the writer
 * fails with EPIPE and the backup stops; u:finish() then says why.
 *
 * Secrets: the secret key never leaves this file except as a signature, and
 * nothing here prints a header value or a query string.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <lua.h>
#include <lauxlib.h>
#include "orch.h"
#include "sha256.h"

#define UPLOADER_MT "orch.s3.uploader"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MAX_BODY (8 * 1024 * 1024)

/* ================================================================ helpers */

typedef struct Buf { char *p; size_t n, cap; int oom; } Buf;

static int buf_add(Buf *b, const void *p, size_t n) {
    if (b->oom) return 0;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return 0; }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 1;
}
static int buf_str(Buf *b, const char *s) { return buf_add(b, s, strlen(s)); }

static void hex(const unsigned char *d, size_t n, char *out) {
    static const char *x = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) { out[2 * i] = x[d[i] >> 4]; out[2 * i + 1] = x[d[i] & 15]; }
    out[2 * n] = '\0';
}

static void sha256_hex_of(const void *p, size_t n, char out[65]) {
    Sha256 s;
    unsigned char d[32];
    sha256_init(&s);
    sha256_update(&s, p, n);
    sha256_final(&s, d);
    hex(d, 32, out);
}

static void hmac256(const void *key, size_t klen, const char *msg, unsigned char out[32]) {
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &len);
}

static void base64(const unsigned char *in, size_t n, char *out) {
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ================================================================ SigV4 */

typedef struct Hdr { char name[64]; const char *value; } Hdr;

static int hdr_cmp(const void *a, const void *b) { return strcmp(((const Hdr *)a)->name, ((const Hdr *)b)->name); }

/* Trim and collapse runs of spaces, as SigV4's canonical headers want. */
static void canon_value(Buf *b, const char *v) {
    while (*v == ' ' || *v == '\t') v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
    int sp = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') { sp = 1; continue; }
        if (sp) { buf_add(b, " ", 1); sp = 0; }
        buf_add(b, v + i, 1);
    }
}

/*
 * Sign one request. path is the canonical (already URI-encoded) path, query
 * the canonical query string (sorted, encoded; "" for none), hdrs the headers
 * to sign (names lower-case; host included). Fills auth (the Authorization
 * header's value), and canonical / sts when not NULL (caller frees them).
 * Returns 0, or -1 when out of memory.
 */
static int sigv4(const char *method, const char *path, const char *query, Hdr *hdrs, int nh,
                 const char *payload_hash, const char *region, const char *service, const char *amzdate,
                 const char *akey, const char *skey, Buf *auth, char **canonical, char **sts_out) {
    Buf c = {0}, sh = {0}, sts = {0}, key = {0};
    char date[9], h[65], sig[65];
    unsigned char k1[32], k2[32], k3[32], k4[32], s[32];
    int i;
    qsort(hdrs, (size_t)nh, sizeof *hdrs, hdr_cmp);
    memcpy(date, amzdate, 8);
    date[8] = '\0';
    buf_str(&c, method); buf_str(&c, "\n");
    buf_str(&c, path); buf_str(&c, "\n");
    buf_str(&c, query); buf_str(&c, "\n");
    for (i = 0; i < nh; i++) {
        buf_str(&c, hdrs[i].name); buf_str(&c, ":"); canon_value(&c, hdrs[i].value); buf_str(&c, "\n");
        if (i) buf_str(&sh, ";");
        buf_str(&sh, hdrs[i].name);
    }
    buf_str(&c, "\n");
    buf_str(&c, sh.p ? sh.p : ""); buf_str(&c, "\n");
    buf_str(&c, payload_hash);
    if (c.oom || sh.oom) goto oom;
    sha256_hex_of(c.p, c.n, h);
    buf_str(&sts, "AWS4-HMAC-SHA256\n"); buf_str(&sts, amzdate); buf_str(&sts, "\n");
    buf_str(&sts, date); buf_str(&sts, "/"); buf_str(&sts, region); buf_str(&sts, "/"); buf_str(&sts, service);
    buf_str(&sts, "/aws4_request\n"); buf_str(&sts, h);
    buf_str(&key, "AWS4"); buf_str(&key, skey);
    if (sts.oom || key.oom) goto oom;
    hmac256(key.p, key.n, date, k1);
    hmac256(k1, 32, region, k2);
    hmac256(k2, 32, service, k3);
    hmac256(k3, 32, "aws4_request", k4);
    hmac256(k4, 32, sts.p, s);
    hex(s, 32, sig);
    OPENSSL_cleanse(key.p, key.n);
    OPENSSL_cleanse(k4, sizeof k4);
    buf_str(auth, "AWS4-HMAC-SHA256 Credential="); buf_str(auth, akey); buf_str(auth, "/"); buf_str(auth, date);
    buf_str(auth, "/"); buf_str(auth, region); buf_str(auth, "/"); buf_str(auth, service);
    buf_str(auth, "/aws4_request, SignedHeaders="); buf_str(auth, sh.p ? sh.p : "");
    buf_str(auth, ", Signature="); buf_str(auth, sig);
    if (auth->oom) goto oom;
    if (canonical) *canonical = c.p; else free(c.p);
    if (sts_out) *sts_out = sts.p; else free(sts.p);
    free(sh.p);
    free(key.p);
    return 0;
oom:
    free(c.p); free(sh.p); free(sts.p);
    if (key.p) OPENSSL_cleanse(key.p, key.n);
    free(key.p);
    return -1;
}

static void amz_now(char out[17]) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* s3.sign{...}: SigV4 of a described request, for tests against published examples. */
static int s_sign(lua_State *L) {
    Hdr hdrs[32];
    int nh = 0;
    Buf auth = {0};
    char *canon = NULL, *sts = NULL;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "method"); lua_getfield(L, 1, "path"); lua_getfield(L, 1, "query");
    lua_getfield(L, 1, "payload_hash"); lua_getfield(L, 1, "region"); lua_getfield(L, 1, "time");
    lua_getfield(L, 1, "access_key"); lua_getfield(L, 1, "secret_key"); lua_getfield(L, 1, "service");
    const char *method = luaL_checkstring(L, 2), *path = luaL_checkstring(L, 3), *query = luaL_optstring(L, 4, "");
    const char *ph = luaL_optstring(L, 5, EMPTY_SHA256), *region = luaL_checkstring(L, 6), *t = luaL_checkstring(L, 7);
    const char *ak = luaL_checkstring(L, 8), *sk = luaL_checkstring(L, 9), *svc = luaL_optstring(L, 10, "s3");
    if (strlen(t) != 16) return luaL_error(L, "time must be like 20130524T000000Z");
    if (lua_getfield(L, 1, "headers") != LUA_TTABLE) return luaL_error(L, "headers (a table) expected");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (nh == 32) return luaL_error(L, "too many headers");
        const char *n = luaL_checkstring(L, -2);
        if (strlen(n) >= sizeof hdrs[0].name) return luaL_error(L, "header name too long");
        for (size_t i = 0; n[i]; i++) hdrs[nh].name[i] = (char)((n[i] >= 'A' && n[i] <= 'Z') ? n[i] + 32 : n[i]);
        hdrs[nh].name[strlen(n)] = '\0';
        hdrs[nh].value = luaL_checkstring(L, -1);
        nh++;
        lua_pop(L, 1);
    }
    if (sigv4(method, path, query, hdrs, nh, ph, region, svc, t, ak, sk, &auth, &canon, &sts) < 0) {
        free(auth.p);
        return luaL_error(L, "out of memory");
    }
    lua_pushstring(L, auth.p);
    lua_pushstring(L, canon);
    lua_pushstring(L, sts);
    free(auth.p); free(canon); free(sts);
    return 3;
}

/* ================================================================ one request */

typedef struct Target {
    char *endpoint, *host, *path, *region, *akey, *skey, *token;
    char *cainfo;              /* CA bundle (PEM) that verifies the endpoint, or NULL: curl's default */
    long timeout, connect_timeout;
} Target;

static void target_free(Target *t) {
    free(t->endpoint); free(t->host); free(t->path); free(t->region); free(t->akey); free(t->cainfo);
    if (t->skey) OPENSSL_cleanse(t->skey, strlen(t->skey));
    free(t->skey);
    if (t->token) OPENSSL_cleanse(t->token, strlen(t->token));
    free(t->token);
    memset(t, 0, sizeof *t);
}

static char *dupfield(lua_State *L, int idx, const char *k, int required) {
    char *s = NULL;
    if (lua_getfield(L, idx, k) == LUA_TSTRING) s = strdup(lua_tostring(L, -1));
    else if (required) luaL_error(L, "s3: field '%s' (a string) is required", k);
    lua_pop(L, 1);
    return s;
}

static long numfield(lua_State *L, int idx, const char *k, long dflt) {
    long v = dflt;
    if (lua_getfield(L, idx, k) == LUA_TNUMBER) v = (long)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return v;
}

static void target_read(lua_State *L, int idx, Target *t) {
    t->endpoint = dupfield(L, idx, "endpoint", 1);
    t->host = dupfield(L, idx, "host", 1);
    t->path = dupfield(L, idx, "path", 1);
    t->region = dupfield(L, idx, "region", 1);
    t->akey = dupfield(L, idx, "access_key", 1);
    t->skey = dupfield(L, idx, "secret_key", 1);
    t->token = dupfield(L, idx, "token", 0);
    t->cainfo = dupfield(L, idx, "cainfo", 0);
    t->timeout = numfield(L, idx, "timeout", 300);
    t->connect_timeout = numfield(L, idx, "connect_timeout", 10);
}

typedef struct Xfer {
    CURL *curl;
    struct curl_slist *hl;
    const char *body;          /* request body in memory */
    size_t body_len, body_off;
    FILE *body_file;
    FILE *out;                 /* response body to a file (2xx only) */
    int out_fd;                /* or: into this descriptor at out_off (ranged downloads; -1 = none) */
    long long out_off;
    int pipe_fd;               /* or: down a pipe, hashed on the way (streamed downloads; 0 = none) */
    Buf resp, head;
    long long bytes;
    Sha256 sha;
    EVP_MD_CTX *md5;
    volatile int *stop;        /* uploader abort flag, or NULL */
    int cleanup;               /* a cleanup request (abort an upload): runs even after Ctrl-C */
    int status_checked, to_file_ok, write_err;
    char errbuf[CURL_ERROR_SIZE];
} Xfer;

static size_t on_read(char *dst, size_t size, size_t n, void *ud) {
    Xfer *x = (Xfer *)ud;
    size_t want = size * n;
    if (x->body_file) return fread(dst, 1, want, x->body_file);
    if (want > x->body_len - x->body_off) want = x->body_len - x->body_off;
    memcpy(dst, x->body + x->body_off, want);
    x->body_off += want;
    return want;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud) {
    Xfer *x = (Xfer *)ud;
    size_t len = size * n;
    if (x->out && !x->status_checked) {
        long code = 0;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        x->status_checked = 1;
        x->to_file_ok = code >= 200 && code < 300;
    }
    if (x->out_fd >= 0 && !x->status_checked) {
        long code = 0;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        x->status_checked = 1;
        x->to_file_ok = code == 206;
    }
    if (x->out_fd >= 0 && x->to_file_ok) {
        size_t done = 0;
        while (done < len) {
            ssize_t k = pwrite(x->out_fd, p + done, len - done, (off_t)(x->out_off + x->bytes));
            if (k < 0) { if (errno == EINTR) continue; x->write_err = errno; return 0; }
            done += (size_t)k;
            x->bytes += k;
        }
        return len;
    }
    if (x->pipe_fd > 0 && !x->status_checked) {
        long code = 0;
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &code);
        x->status_checked = 1;
        x->to_file_ok = code >= 200 && code < 300;
    }
    if (x->pipe_fd > 0 && x->to_file_ok) {
        size_t done = 0;
        while (done < len) {
            ssize_t k = write(x->pipe_fd, p + done, len - done);
            if (k < 0) { if (errno == EINTR) continue; x->write_err = errno; return 0; }
            done += (size_t)k;
        }
        sha256_update(&x->sha, p, len);
        x->bytes += (long long)len;
        return len;
    }
    if (x->out && x->to_file_ok) {
        if (fwrite(p, 1, len, x->out) != len) { x->write_err = errno ? errno : EIO; return 0; }
        sha256_update(&x->sha, p, len);
        x->bytes += (long long)len;
        return len;
    }
    if (x->resp.n + len > MAX_BODY) return 0;
    return buf_add(&x->resp, p, len) ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    Xfer *x = (Xfer *)ud;
    size_t len = size * n;
    if (len >= 5 && !strncmp(p, "HTTP/", 5)) x->head.n = 0;   /* a new response (100 Continue, redirects) */
    return buf_add(&x->head, p, len) ? len : 0;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    Xfer *x = (Xfer *)ud;
    if (x->stop && *x->stop) return 1;
    return orch_interrupted() && !x->cleanup ? 1 : 0;
}

static void xfer_free(Xfer *x) {
    sha256_free(&x->sha);
    if (x->curl) curl_easy_cleanup(x->curl);
    if (x->hl) curl_slist_free_all(x->hl);
    free(x->resp.p);
    free(x->head.p);
    memset(x, 0, sizeof *x);
}

/* Prepare a signed request on x (x->curl set up, headers signed). extra:
 * headers "name: value" already lower-case named, signed too. Returns 0 or -1 (oom/curl). */
static int xfer_setup(Xfer *x, const Target *t, const char *method, const char *query,
                      Hdr *extra, int nextra, const char *payload_hash) {
    Hdr hdrs[40];
    int nh = 0, i;
    char amzdate[17];
    Buf url = {0}, auth = {0}, line = {0};
    amz_now(amzdate);
    strcpy(hdrs[nh].name, "host"); hdrs[nh++].value = t->host;
    strcpy(hdrs[nh].name, "x-amz-date"); hdrs[nh++].value = amzdate;
    strcpy(hdrs[nh].name, "x-amz-content-sha256"); hdrs[nh++].value = payload_hash;
    if (t->token) { strcpy(hdrs[nh].name, "x-amz-security-token"); hdrs[nh++].value = t->token; }
    for (i = 0; i < nextra && nh < 40; i++) hdrs[nh++] = extra[i];
    if (sigv4(method, t->path, query, hdrs, nh, payload_hash, t->region, "s3", amzdate, t->akey, t->skey, &auth, NULL, NULL) < 0)
        goto fail;
    x->curl = curl_easy_init();
    if (!x->curl) goto fail;
    buf_str(&url, t->endpoint); buf_str(&url, t->path);
    if (*query) { buf_str(&url, "?"); buf_str(&url, query); }
    if (url.oom) goto fail;
    for (i = 0; i < nh; i++) {
        line.n = 0;
        buf_str(&line, hdrs[i].name); buf_str(&line, ": "); buf_str(&line, hdrs[i].value);
        if (line.oom) goto fail;
        struct curl_slist *s = curl_slist_append(x->hl, line.p);
        if (!s) goto fail;
        x->hl = s;
    }
    line.n = 0;
    buf_str(&line, "Authorization: "); buf_str(&line, auth.p);
    if (line.oom) goto fail;
    { struct curl_slist *s = curl_slist_append(x->hl, line.p); if (!s) goto fail; x->hl = s; }
    { struct curl_slist *s = curl_slist_append(x->hl, "Expect:"); if (!s) goto fail; x->hl = s; }
    curl_easy_setopt(x->curl, CURLOPT_URL, url.p);
    curl_easy_setopt(x->curl, CURLOPT_HTTPHEADER, x->hl);
    curl_easy_setopt(x->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->curl, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(x->curl, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(x->curl, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x->curl, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(x->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(x->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(x->curl, CURLOPT_XFERINFODATA, x);
    if (t->cainfo) curl_easy_setopt(x->curl, CURLOPT_CAINFO, t->cainfo);
    curl_easy_setopt(x->curl, CURLOPT_CONNECTTIMEOUT, t->connect_timeout);
    curl_easy_setopt(x->curl, CURLOPT_TIMEOUT, t->timeout);
    /* a stalled transfer (no byte for 60 s) is a timeout too, whatever the total allows */
    curl_easy_setopt(x->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(x->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(x->curl, CURLOPT_NOBODY, 1L);
    else if (!strcmp(method, "PUT") || !strcmp(method, "POST")) {
        curl_off_t len = (curl_off_t)x->body_len;
        if (x->body_file) {
            fseeko(x->body_file, 0, SEEK_END);
            len = (curl_off_t)ftello(x->body_file);
            fseeko(x->body_file, 0, SEEK_SET);
        }
        curl_easy_setopt(x->curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(x->curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(x->curl, CURLOPT_READDATA, x);
        curl_easy_setopt(x->curl, CURLOPT_INFILESIZE_LARGE, len);
        if (!strcmp(method, "POST")) curl_easy_setopt(x->curl, CURLOPT_CUSTOMREQUEST, "POST");
    } else if (strcmp(method, "GET")) curl_easy_setopt(x->curl, CURLOPT_CUSTOMREQUEST, method);
    free(url.p); free(auth.p); free(line.p);
    return 0;
fail:
    free(url.p); free(auth.p); free(line.p);
    return -1;
}

static const char *kind_of(CURLcode rc) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_COULDNT_CONNECT: return "connect";
    case CURLE_COULDNT_RESOLVE_HOST: return "dns";
    case CURLE_PEER_FAILED_VERIFICATION: return "tls_verify";      /* the endpoint's certificate is not trusted */
    case CURLE_SSL_CACERT_BADFILE: return "tls_cafile";            /* the CA bundle could not be loaded */
    case CURLE_SSL_CONNECT_ERROR: return "tls";
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE: return "connection";
    case CURLE_ABORTED_BY_CALLBACK: return "interrupted";
    case CURLE_WRITE_ERROR: return "io";
    default: return "error";
    }
}

/* May a transfer that failed with rc pass on a retry? Not when Ctrl-C stopped it, nor when
 * the endpoint's certificate is not trusted or the CA bundle is unusable (the same each time). */
static int transient(CURLcode rc) {
    return rc != CURLE_ABORTED_BY_CALLBACK && rc != CURLE_PEER_FAILED_VERIFICATION && rc != CURLE_SSL_CACERT_BADFILE;
}

/* Push the response headers (lower-case names) as a table. */
static void push_headers(lua_State *L, const Buf *head) {
    lua_newtable(L);
    const char *p = head->p ? head->p : "", *e;
    while ((e = strstr(p, "\r\n")) != NULL) {
        const char *colon = memchr(p, ':', (size_t)(e - p));
        if (colon) {
            char name[128];
            size_t n = (size_t)(colon - p);
            if (n < sizeof name) {
                for (size_t i = 0; i < n; i++) name[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
                name[n] = '\0';
                const char *v = colon + 1;
                while (v < e && (*v == ' ' || *v == '\t')) v++;
                lua_pushlstring(L, v, (size_t)(e - v));
                lua_setfield(L, -2, name);
            }
        }
        p = e + 2;
    }
}

typedef struct ReqUd { Xfer x; Target t; FILE *out; FILE *in; } ReqUd;

static int requd_gc(lua_State *L) {
    ReqUd *r = (ReqUd *)lua_touserdata(L, 1);
    xfer_free(&r->x);
    target_free(&r->t);
    if (r->out) fclose(r->out);
    if (r->in) fclose(r->in);
    r->out = r->in = NULL;
    return 0;
}

/* Collect extra headers of table at idx (field "headers") into hdrs; values stay on the Lua stack's table. */
static int read_extra(lua_State *L, int idx, Hdr *hdrs, int max) {
    int n = 0;
    if (lua_getfield(L, idx, "headers") == LUA_TTABLE) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            const char *k = luaL_checkstring(L, -2);
            if (n == max || strlen(k) >= sizeof hdrs[0].name) luaL_error(L, "s3: too many or too long headers");
            for (size_t i = 0; k[i]; i++) hdrs[n].name[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
            hdrs[n].name[strlen(k)] = '\0';
            hdrs[n].value = luaL_checkstring(L, -1);   /* anchored by the headers table */
            n++;
            lua_pop(L, 1);
        }
    }
    /* the headers table stays on the stack, keeping the values alive */
    return n;
}

static int s_request(lua_State *L) {
    Hdr extra[16];
    int nextra;
    char ph[65];
    CURLcode rc;
    long status = 0;
    luaL_checktype(L, 1, LUA_TTABLE);
    ReqUd *r = (ReqUd *)lua_newuserdatauv(L, sizeof *r, 0);   /* index 2 */
    memset(r, 0, sizeof *r);
    r->x.out_fd = -1;
    lua_newtable(L);
    lua_pushcfunction(L, requd_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    target_read(L, 1, &r->t);
    lua_getfield(L, 1, "method");
    const char *method = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "query");
    const char *query = luaL_optstring(L, -1, "");
    nextra = read_extra(L, 1, extra, 16);
    size_t blen = 0;
    const char *body = NULL;
    if (lua_getfield(L, 1, "body") == LUA_TSTRING) body = lua_tolstring(L, -1, &blen);
    const char *body_file = NULL, *to_file = NULL;
    if (lua_getfield(L, 1, "body_file") == LUA_TSTRING) body_file = lua_tostring(L, -1);
    if (lua_getfield(L, 1, "to_file") == LUA_TSTRING) to_file = lua_tostring(L, -1);
    strcpy(ph, EMPTY_SHA256);
    if (body) {
        sha256_hex_of(body, blen, ph);
        r->x.body = body;
        r->x.body_len = blen;
    } else if (body_file) {
        if (!(r->in = fopen(body_file, "rb"))) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot read %s: %s", body_file, strerror(errno));
            lua_pushliteral(L, "io");
            return 3;
        }
        /* the payload hash of a file: one pass before sending */
        Sha256 s;
        unsigned char d[32], chunk[65536];
        size_t k;
        sha256_init(&s);
        while ((k = fread(chunk, 1, sizeof chunk, r->in)) > 0) sha256_update(&s, chunk, k);
        sha256_final(&s, d);
        hex(d, 32, ph);
        r->x.body_file = r->in;
    } else if (!strcmp(method, "PUT") || !strcmp(method, "POST")) {
        r->x.body = "";
    }
    if (to_file) {
        if (!(r->out = fopen(to_file, "wb"))) {
            lua_pushnil(L);
            lua_pushfstring(L, "cannot create %s: %s", to_file, strerror(errno));
            lua_pushliteral(L, "io");
            return 3;
        }
        r->x.out = r->out;
        if (sha256_init(&r->x.sha) < 0) return luaL_error(L, "s3: cannot start SHA-256 (libcrypto)");
    }
    lua_getfield(L, 1, "cleanup");
    r->x.cleanup = lua_toboolean(L, -1);
    if (xfer_setup(&r->x, &r->t, method, query, extra, nextra, ph) < 0) return luaL_error(L, "s3: out of memory");
    rc = curl_easy_perform(r->x.curl);
    if (rc == CURLE_ABORTED_BY_CALLBACK && orch_interrupted() && !r->x.cleanup) return orch_raise_interrupt(L);
    if (rc != CURLE_OK) {
        lua_pushnil(L);
        if (r->x.write_err) lua_pushfstring(L, "%s %s: writing %s failed: %s", method, r->t.path, to_file, strerror(r->x.write_err));
        else lua_pushfstring(L, "%s %s%s: %s", method, r->t.endpoint, r->t.path, r->x.errbuf[0] ? r->x.errbuf : curl_easy_strerror(rc));
        lua_pushstring(L, kind_of(rc));
        return 3;
    }
    if (r->out) {
        if (fflush(r->out) != 0 || (fsync(fileno(r->out)) != 0 && errno != EINVAL)) {   /* EINVAL: /dev/null */
            lua_pushnil(L);
            lua_pushfstring(L, "writing %s failed: %s", to_file, strerror(errno));
            lua_pushliteral(L, "io");
            return 3;
        }
    }
    curl_easy_getinfo(r->x.curl, CURLINFO_RESPONSE_CODE, &status);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, &r->x.head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->x.resp.p ? r->x.resp.p : "", r->x.resp.n);
    lua_setfield(L, -2, "body");
    if (r->out && r->x.to_file_ok) {
        unsigned char d[32];
        char hx[65];
        sha256_final(&r->x.sha, d);
        hex(d, 32, hx);
        lua_pushstring(L, hx);
        lua_setfield(L, -2, "sha256");
        lua_pushinteger(L, r->x.bytes);
        lua_setfield(L, -2, "bytes");
    }
    return 1;
}

/* ================================================================ ranged download */

static void xml_field(const char *body, const char *tag, char *out, size_t cap);

typedef struct Ranged {
    Target t;
    int fd, attempts;
    double backoff;
    long long size, chunk, next;
    pthread_mutex_t mu;
    volatile int stop;
    int failed, retries;
    long fail_status;
    char fail_kind[24], fail_code[64], fail_msg[512];
} Ranged;

/* One range [off, off+len) into rg->fd, retried like a part. 0 ok, -1 failed for good. */
/* Sleep about wait seconds in 50 ms steps, stopping early once *stop is set or orch is interrupted. */
static void backoff_sleep(double wait, volatile int *stop) {
    for (double w = wait; w > 0 && !*stop && !orch_interrupted(); w -= 0.05) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

/* opts.backoff at index idx: the first retry's wait in seconds (1 when not a number). */
static double backoff_field(lua_State *L, int idx) {
    double b = lua_getfield(L, idx, "backoff") == LUA_TNUMBER ? lua_tonumber(L, -1) : 1.0;
    lua_pop(L, 1);
    return b;
}

static int get_range(Ranged *rg, long long off, long long len) {
    char range[64];
    Hdr extra[1];
    snprintf(range, sizeof range, "bytes=%lld-%lld", off, off + len - 1);
    strcpy(extra[0].name, "range");
    extra[0].value = range;
    double wait = rg->backoff;
    for (int attempt = 1;; attempt++) {
        Xfer x;
        long status = 0;
        CURLcode rc;
        memset(&x, 0, sizeof x);
        x.out_fd = rg->fd;
        x.out_off = off;
        x.stop = &rg->stop;
        if (xfer_setup(&x, &rg->t, "GET", "", extra, 1, EMPTY_SHA256) < 0) { xfer_free(&x); return -1; }
        rc = curl_easy_perform(x.curl);
        if (rc == CURLE_OK) curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &status);
        long long got = x.bytes;
        int write_err = x.write_err;
        if (rc == CURLE_OK && status == 206 && got == len) { xfer_free(&x); return 0; }
        int retry;
        pthread_mutex_lock(&rg->mu);
        if (write_err) {
            retry = 0;
            snprintf(rg->fail_kind, sizeof rg->fail_kind, "io");
            snprintf(rg->fail_msg, sizeof rg->fail_msg, "writing the spool file failed: %s", strerror(write_err));
        } else if (rc != CURLE_OK) {
            retry = transient(rc);
            snprintf(rg->fail_kind, sizeof rg->fail_kind, "%s", kind_of(rc));
            snprintf(rg->fail_msg, sizeof rg->fail_msg, "%s", x.errbuf[0] ? x.errbuf : curl_easy_strerror(rc));
        } else if (status == 206) {
            retry = 1;
            snprintf(rg->fail_kind, sizeof rg->fail_kind, "connection");
            snprintf(rg->fail_msg, sizeof rg->fail_msg, "range %s gave %lld bytes", range, got);
        } else {
            retry = status >= 500 || status == 429 || status == 408;
            snprintf(rg->fail_kind, sizeof rg->fail_kind, "http");
            rg->fail_status = status;
            xml_field(x.resp.p, "Code", rg->fail_code, sizeof rg->fail_code);
            xml_field(x.resp.p, "Message", rg->fail_msg, sizeof rg->fail_msg);
            if (status == 200) { retry = 0; snprintf(rg->fail_msg, sizeof rg->fail_msg, "the server ignored the Range header (answered 200)"); }
        }
        pthread_mutex_unlock(&rg->mu);
        xfer_free(&x);
        if (!retry || attempt >= rg->attempts || rg->stop || orch_interrupted()) return -1;
        pthread_mutex_lock(&rg->mu);
        rg->retries++;
        pthread_mutex_unlock(&rg->mu);
        backoff_sleep(wait, &rg->stop);
        if (wait < 30) wait *= 2;
    }
}

static void *ranged_main(void *ud) {
    Ranged *rg = (Ranged *)ud;
    for (;;) {
        pthread_mutex_lock(&rg->mu);
        long long off = rg->next;
        int quit = rg->failed || rg->stop || off >= rg->size;
        if (!quit) rg->next += rg->chunk;
        pthread_mutex_unlock(&rg->mu);
        if (quit) break;
        long long len = rg->size - off < rg->chunk ? rg->size - off : rg->chunk;
        if (get_range(rg, off, len) < 0) {
            pthread_mutex_lock(&rg->mu);
            rg->failed = 1;
            pthread_mutex_unlock(&rg->mu);
            break;
        }
    }
    return NULL;
}

typedef struct RangedUd { Ranged rg; int fd_open; } RangedUd;

static int ranged_gc(lua_State *L) {
    RangedUd *r = (RangedUd *)lua_touserdata(L, 1);
    target_free(&r->rg.t);
    if (r->fd_open) { close(r->rg.fd); r->fd_open = 0; }
    return 0;
}

/* s3.download_ranges{ target..., to_file, size, jobs, chunk, attempts, backoff }: the object's
 * size bytes fetched as ranges by jobs threads into to_file (created, mode 0600).
 * --> { bytes, retries } | nil, { message, status, code, kind } */
static int s_download_ranges(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    RangedUd *r = (RangedUd *)lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    lua_newtable(L);
    lua_pushcfunction(L, ranged_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    Ranged *rg = &r->rg;
    target_read(L, 1, &rg->t);
    lua_getfield(L, 1, "to_file");
    const char *file = luaL_checkstring(L, -1);
    rg->size = numfield(L, 1, "size", -1);
    int jobs = (int)numfield(L, 1, "jobs", 4);
    rg->chunk = numfield(L, 1, "chunk", 8 * 1024 * 1024);
    rg->attempts = (int)numfield(L, 1, "attempts", 5);
    if (lua_getfield(L, 1, "backoff") == LUA_TNUMBER) rg->backoff = lua_tonumber(L, -1); else rg->backoff = 1.0;
    if (rg->size < 0) return luaL_error(L, "s3.download_ranges: size is required");
    if (jobs < 1) jobs = 1;
    if (jobs > 64) jobs = 64;
    if (rg->chunk < 65536) rg->chunk = 65536;
    rg->fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (rg->fd < 0) {
        lua_pushnil(L);
        lua_createtable(L, 0, 2);
        lua_pushfstring(L, "cannot create %s: %s", file, strerror(errno));
        lua_setfield(L, -2, "message");
        lua_pushliteral(L, "io");
        lua_setfield(L, -2, "kind");
        return 2;
    }
    r->fd_open = 1;
    pthread_mutex_init(&rg->mu, NULL);
    pthread_t th[64];
    int started = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < jobs; i++) {
        if (pthread_create(&th[i], NULL, ranged_main, rg) != 0) break;
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started == 0) ranged_main(rg);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&rg->mu);
    if (orch_interrupted() && rg->failed) return orch_raise_interrupt(L);
    if (!rg->failed && fsync(rg->fd) != 0) {
        rg->failed = 1;
        snprintf(rg->fail_kind, sizeof rg->fail_kind, "io");
        snprintf(rg->fail_msg, sizeof rg->fail_msg, "fsync of %s failed: %s", file, strerror(errno));
    }
    if (rg->failed) {
        lua_pushnil(L);
        lua_createtable(L, 0, 5);
        lua_pushstring(L, rg->fail_msg);
        lua_setfield(L, -2, "message");
        lua_pushinteger(L, rg->fail_status);
        lua_setfield(L, -2, "status");
        lua_pushstring(L, rg->fail_code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, rg->fail_kind);
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, rg->retries);
        lua_setfield(L, -2, "retries");
        return 2;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, rg->size);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, rg->retries);
    lua_setfield(L, -2, "retries");
    return 1;
}

/* ================================================================ streamed download */

typedef struct Downloader {
    Target t;
    int rfd, wfd, attempts;
    double backoff;
    pthread_t thread;
    int started, joined;
    volatile int stop;
    long long bytes;
    char sha[65];
    int failed;
    long fail_status;
    char fail_kind[24], fail_code[64], fail_msg[512];
} Downloader;

#define DOWNLOADER_MT "orch.s3.downloader"

/* One GET down the pipe. Retried only while nothing has gone down it (a reader cannot rewind). */
static void *download_main(void *ud) {
    Downloader *d = (Downloader *)ud;
    double wait = d->backoff;
    for (int attempt = 1;; attempt++) {
        Xfer x;
        long status = 0;
        CURLcode rc;
        memset(&x, 0, sizeof x);
        x.out_fd = -1;
        x.pipe_fd = d->wfd;
        x.stop = &d->stop;
        sha256_init(&x.sha);
        if (xfer_setup(&x, &d->t, "GET", "", NULL, 0, EMPTY_SHA256) < 0) {
            snprintf(d->fail_msg, sizeof d->fail_msg, "out of memory");
            d->failed = 1;
            xfer_free(&x);
            break;
        }
        rc = curl_easy_perform(x.curl);
        if (rc == CURLE_OK) curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            unsigned char dg[32];
            sha256_final(&x.sha, dg);
            hex(dg, 32, d->sha);
            d->bytes = x.bytes;
            xfer_free(&x);
            break;
        }
        int retry;
        if (x.write_err) {
            retry = 0;
            snprintf(d->fail_kind, sizeof d->fail_kind, "reader");
            snprintf(d->fail_msg, sizeof d->fail_msg, "the reader stopped reading: %s", strerror(x.write_err));
        } else if (rc != CURLE_OK) {
            retry = transient(rc) && x.bytes == 0;
            snprintf(d->fail_kind, sizeof d->fail_kind, "%s", kind_of(rc));
            snprintf(d->fail_msg, sizeof d->fail_msg, "%s", x.errbuf[0] ? x.errbuf : curl_easy_strerror(rc));
        } else {
            retry = status >= 500 || status == 429 || status == 408;
            snprintf(d->fail_kind, sizeof d->fail_kind, "http");
            d->fail_status = status;
            xml_field(x.resp.p, "Code", d->fail_code, sizeof d->fail_code);
            xml_field(x.resp.p, "Message", d->fail_msg, sizeof d->fail_msg);
        }
        xfer_free(&x);
        if (!retry || attempt >= d->attempts || d->stop || orch_interrupted()) { d->failed = 1; break; }
        backoff_sleep(wait, &d->stop);
        if (wait < 30) wait *= 2;
    }
    /* end of stream (or of a failed one): the reader sees EOF */
    close(d->wfd);
    d->wfd = -1;
    return NULL;
}

static Downloader *check_downloader(lua_State *L) { return (Downloader *)luaL_checkudata(L, 1, DOWNLOADER_MT); }

static void downloader_join(Downloader *d, int drain) {
    if (d->rfd >= 0 && drain) {
        /* what the reader left unread (it stopped at the last block) still has to pass */
        char sink[65536];
        for (;;) {
            ssize_t k = read(d->rfd, sink, sizeof sink);
            if (k > 0) continue;
            if (k < 0 && errno == EINTR) continue;
            break;
        }
    }
    if (d->rfd >= 0) { close(d->rfd); d->rfd = -1; }   /* the thread's writes fail with EPIPE from now on */
    if (d->started && !d->joined) { pthread_join(d->thread, NULL); d->joined = 1; }
}

static int d_release(lua_State *L) {
    Downloader *d = check_downloader(L);
    d->stop = 1;
    downloader_join(d, 0);
    target_free(&d->t);
    return 0;
}

/* s3.downloader{ target..., attempts, backoff }: a GET streamed down a pipe by a thread. */
static int s_downloader(lua_State *L) {
    int fds[2];
    sigset_t all, old;
    luaL_checktype(L, 1, LUA_TTABLE);
    Downloader *d = (Downloader *)lua_newuserdatauv(L, sizeof *d, 0);
    memset(d, 0, sizeof *d);
    d->rfd = d->wfd = -1;
    luaL_setmetatable(L, DOWNLOADER_MT);
    target_read(L, 1, &d->t);
    d->attempts = (int)numfield(L, 1, "attempts", 5);
    d->backoff = backoff_field(L, 1);
    if (pipe2(fds, O_CLOEXEC) < 0) return luaL_error(L, "s3: pipe: %s", strerror(errno));
    d->rfd = fds[0];
    d->wfd = fds[1];
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&d->thread, NULL, download_main, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return luaL_error(L, "s3: cannot start the download thread: %s", strerror(rc));
    d->started = 1;
    return 1;
}

static int d_path(lua_State *L) {
    Downloader *d = check_downloader(L);
    if (d->rfd < 0) return luaL_error(L, "attempt to use a finished downloader");
    lua_pushfstring(L, "/dev/fd/%d", d->rfd);
    return 1;
}

/* d:finish(): drain, wait --> { bytes, sha256 } | nil, { message, status, code, kind } */
static int d_finish(lua_State *L) {
    Downloader *d = check_downloader(L);
    downloader_join(d, 1);
    if (d->failed) {
        lua_pushnil(L);
        lua_createtable(L, 0, 4);
        lua_pushstring(L, d->fail_msg[0] ? d->fail_msg : "the download failed");
        lua_setfield(L, -2, "message");
        lua_pushinteger(L, d->fail_status);
        lua_setfield(L, -2, "status");
        lua_pushstring(L, d->fail_code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, d->fail_kind[0] ? d->fail_kind : "error");
        lua_setfield(L, -2, "kind");
        return 2;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, d->bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushstring(L, d->sha);
    lua_setfield(L, -2, "sha256");
    return 1;
}

static int d_abort(lua_State *L) {
    Downloader *d = check_downloader(L);
    d->stop = 1;
    downloader_join(d, 0);
    return 0;
}

static const luaL_Reg downloader_methods[] = { {"path", d_path}, {"finish", d_finish}, {"abort", d_abort}, {NULL, NULL} };

/* ================================================================ multipart uploader */

typedef struct Part { int number; char etag[80]; } Part;

typedef struct Uploader {
    Target t;
    char *upload_id;
    size_t part_size;
    int attempts;
    double backoff;
    int rfd, wfd;
    pthread_t reader, sender;
    int started, joined;
    volatile int stop;
    /* two part buffers: the reader fills one while the sender uploads the other */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *bufs[2];
    size_t lens[2];
    int nums[2], full[2], eof;
    /* results, owned by the thread until joined */
    Part *parts;
    int nparts, capparts;
    long long bytes;
    int retries;
    Sha256 sha;
    EVP_MD_CTX *md5;           /* the whole object */
    EVP_MD_CTX *md5parts;      /* MD5 of the concatenated part MD5s (S3's multipart ETag) */
    volatile int failed;
    long fail_status;
    int fail_part;
    char fail_kind[24];
    char fail_code[64];
    char fail_msg[512];
} Uploader;

/* Extract <Tag>text</Tag> from an XML error body. */
static void xml_field(const char *body, const char *tag, char *out, size_t cap) {
    char open[80], close[80];
    out[0] = '\0';
    if (!body) return;
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = strstr(body, open), *b;
    if (!a) return;
    a += strlen(open);
    b = strstr(a, close);
    if (!b) return;
    size_t n = (size_t)(b - a);
    if (n >= cap) n = cap - 1;
    memcpy(out, a, n);
    out[n] = '\0';
}

static void sleep_interruptible(Uploader *u, double secs) {
    backoff_sleep(secs, &u->stop);
}

/* Send part number n (len bytes at buf), retrying what may pass. 0 ok, -1 failed for good. */
static int send_part(Uploader *u, int n, const char *buf, size_t len) {
    char query[512], ph[65], md5b64[32];
    unsigned char md5[16];
    unsigned int mlen = 16;
    Hdr extra[1];
    EVP_Digest(buf, len, md5, &mlen, EVP_md5(), NULL);
    base64(md5, 16, md5b64);
    sha256_hex_of(buf, len, ph);
    {
        char *q = curl_easy_escape(NULL, u->upload_id, 0);
        if (!q) { snprintf(u->fail_msg, sizeof u->fail_msg, "out of memory"); return -1; }
        snprintf(query, sizeof query, "partNumber=%d&uploadId=%s", n, q);
        curl_free(q);
    }
    strcpy(extra[0].name, "content-md5");
    extra[0].value = md5b64;
    for (int attempt = 1;; attempt++) {
        Xfer x;
        long status = 0;
        CURLcode rc;
        memset(&x, 0, sizeof x);
        x.out_fd = -1;
        x.body = buf;
        x.body_len = len;
        x.stop = &u->stop;
        if (xfer_setup(&x, &u->t, "PUT", query, extra, 1, ph) < 0) {
            xfer_free(&x);
            snprintf(u->fail_kind, sizeof u->fail_kind, "error");
            snprintf(u->fail_msg, sizeof u->fail_msg, "out of memory");
            return -1;
        }
        rc = curl_easy_perform(x.curl);
        if (rc == CURLE_OK) curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            /* the ETag header */
            const char *h = x.head.p ? x.head.p : "";
            const char *e = strcasestr(h, "\netag:");
            Part *p;
            if (u->nparts == u->capparts) {
                int cap = u->capparts ? u->capparts * 2 : 64;
                Part *np = realloc(u->parts, (size_t)cap * sizeof *np);
                if (!np) { xfer_free(&x); snprintf(u->fail_msg, sizeof u->fail_msg, "out of memory"); return -1; }
                u->parts = np;
                u->capparts = cap;
            }
            p = &u->parts[u->nparts++];
            p->number = n;
            p->etag[0] = '\0';
            if (e) {
                e += 6;
                while (*e == ' ') e++;
                size_t k = strcspn(e, "\r\n");
                if (k >= sizeof p->etag) k = sizeof p->etag - 1;
                memcpy(p->etag, e, k);
                p->etag[k] = '\0';
            }
            EVP_DigestUpdate(u->md5parts, md5, 16);
            xfer_free(&x);
            return 0;
        }
        int retry;
        if (rc != CURLE_OK) {
            retry = transient(rc);
            snprintf(u->fail_kind, sizeof u->fail_kind, "%s", kind_of(rc));
            snprintf(u->fail_msg, sizeof u->fail_msg, "%s", x.errbuf[0] ? x.errbuf : curl_easy_strerror(rc));
            u->fail_status = 0;
            u->fail_code[0] = '\0';
        } else {
            retry = status >= 500 || status == 429 || status == 408;
            snprintf(u->fail_kind, sizeof u->fail_kind, "http");
            u->fail_status = status;
            xml_field(x.resp.p, "Code", u->fail_code, sizeof u->fail_code);
            xml_field(x.resp.p, "Message", u->fail_msg, sizeof u->fail_msg);
        }
        xfer_free(&x);
        if (!retry || attempt >= u->attempts || u->stop || orch_interrupted()) {
            if (u->stop || orch_interrupted()) snprintf(u->fail_kind, sizeof u->fail_kind, "interrupted");
            u->fail_part = n;
            return -1;
        }
        u->retries++;
        double wait = u->backoff;
        for (int i = 1; i < attempt && wait < 30; i++) wait *= 2;
        sleep_interruptible(u, wait);
    }
}

/* Record a failure (the first one wins) and wake the other thread. */
static void set_failed(Uploader *u) {
    pthread_mutex_lock(&u->mu);
    u->failed = 1;
    pthread_cond_broadcast(&u->cv);
    pthread_mutex_unlock(&u->mu);
}

/* The reader: fills the two buffers in turn from the pipe, numbering the parts and
 * hashing the whole object in order. On failure (its own or the sender's) it closes
 * the pipe, so the archive writer gets EPIPE and the backup stops. */
static void *reader_main(void *ud) {
    Uploader *u = (Uploader *)ud;
    int n = 0, i = 0;
    for (;;) {
        size_t len = 0;
        int eof = 0;
        pthread_mutex_lock(&u->mu);
        while (u->full[i] && !u->stop && !u->failed) pthread_cond_wait(&u->cv, &u->mu);
        int quit = u->stop || u->failed;
        pthread_mutex_unlock(&u->mu);
        if (quit) break;
        char *buf = u->bufs[i];
        while (len < u->part_size) {
            struct pollfd pf = { u->rfd, POLLIN, 0 };
            if (u->stop || u->failed) break;
            if (poll(&pf, 1, 100) == 0) continue;
            ssize_t k = read(u->rfd, buf + len, u->part_size - len);
            if (k < 0) {
                if (errno == EINTR) continue;
                snprintf(u->fail_kind, sizeof u->fail_kind, "io");
                snprintf(u->fail_msg, sizeof u->fail_msg, "reading the archive stream failed: %s", strerror(errno));
                set_failed(u);
                goto out;
            }
            if (k == 0) { eof = 1; break; }
            len += (size_t)k;
        }
        if (u->failed) break;
        if (u->stop) { snprintf(u->fail_kind, sizeof u->fail_kind, "interrupted"); set_failed(u); break; }
        int has = len > 0 || n == 0;
        if (has) {
            if (++n > 10000) {
                snprintf(u->fail_kind, sizeof u->fail_kind, "too_large");
                snprintf(u->fail_msg, sizeof u->fail_msg, "the archive needs more than 10000 parts of %zu bytes: "
                         "set ORCH_S3_PART_SIZE larger", u->part_size);
                set_failed(u);
                break;
            }
            sha256_update(&u->sha, buf, len);
            EVP_DigestUpdate(u->md5, buf, len);
            u->bytes += (long long)len;
        }
        pthread_mutex_lock(&u->mu);
        if (has) { u->lens[i] = len; u->nums[i] = n; u->full[i] = 1; }
        if (eof) u->eof = 1;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        if (eof) break;
        i ^= 1;
    }
out:
    close(u->rfd);
    u->rfd = -1;
    return NULL;
}

/* The sender: uploads the buffers in turn as the reader fills them. */
static void *sender_main(void *ud) {
    Uploader *u = (Uploader *)ud;
    int i = 0;
    for (;;) {
        pthread_mutex_lock(&u->mu);
        while (!u->full[i] && !u->eof && !u->stop && !u->failed) pthread_cond_wait(&u->cv, &u->mu);
        int quit = u->stop || u->failed || (!u->full[i] && u->eof);
        pthread_mutex_unlock(&u->mu);
        if (quit) break;
        if (send_part(u, u->nums[i], u->bufs[i], u->lens[i]) < 0) { set_failed(u); break; }
        pthread_mutex_lock(&u->mu);
        u->full[i] = 0;
        pthread_cond_broadcast(&u->cv);
        pthread_mutex_unlock(&u->mu);
        i ^= 1;
    }
    return NULL;
}

static Uploader *check_uploader(lua_State *L) { return (Uploader *)luaL_checkudata(L, 1, UPLOADER_MT); }

static void uploader_join(Uploader *u) {
    if (u->wfd >= 0) { close(u->wfd); u->wfd = -1; }
    if (u->started && !u->joined) {
        if (u->stop) {
            pthread_mutex_lock(&u->mu);
            pthread_cond_broadcast(&u->cv);
            pthread_mutex_unlock(&u->mu);
        }
        pthread_join(u->reader, NULL);
        pthread_join(u->sender, NULL);
        u->joined = 1;
    }
}

static int u_release(lua_State *L) {
    Uploader *u = check_uploader(L);
    u->stop = 1;
    uploader_join(u);
    if (u->rfd >= 0) { close(u->rfd); u->rfd = -1; }
    target_free(&u->t);
    free(u->upload_id); u->upload_id = NULL;
    free(u->parts); u->parts = NULL;
    free(u->bufs[0]); free(u->bufs[1]); u->bufs[0] = u->bufs[1] = NULL;
    if (u->started) { pthread_mutex_destroy(&u->mu); pthread_cond_destroy(&u->cv); u->started = 0; }
    sha256_free(&u->sha);
    if (u->md5) { EVP_MD_CTX_free(u->md5); u->md5 = NULL; }
    if (u->md5parts) { EVP_MD_CTX_free(u->md5parts); u->md5parts = NULL; }
    return 0;
}

static int s_uploader(lua_State *L) {
    int fds[2];
    sigset_t all, old;
    luaL_checktype(L, 1, LUA_TTABLE);
    Uploader *u = (Uploader *)lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->rfd = u->wfd = -1;
    luaL_setmetatable(L, UPLOADER_MT);
    target_read(L, 1, &u->t);
    u->upload_id = dupfield(L, 1, "upload_id", 1);
    u->part_size = (size_t)numfield(L, 1, "part_size", 16 * 1024 * 1024);
    u->attempts = (int)numfield(L, 1, "attempts", 5);
    u->backoff = backoff_field(L, 1);
    if (u->part_size < 1024) return luaL_error(L, "s3: part_size must be at least 1024 bytes");
    if (u->attempts < 1) u->attempts = 1;
    u->bufs[0] = malloc(u->part_size);
    u->bufs[1] = malloc(u->part_size);
    u->md5 = EVP_MD_CTX_new();
    u->md5parts = EVP_MD_CTX_new();
    if (!u->bufs[0] || !u->bufs[1] || !u->md5 || !u->md5parts) return luaL_error(L, "s3: out of memory for a part of %d bytes", (int)u->part_size);
    EVP_DigestInit_ex(u->md5, EVP_md5(), NULL);
    EVP_DigestInit_ex(u->md5parts, EVP_md5(), NULL);
    if (sha256_init(&u->sha) < 0) return luaL_error(L, "s3: cannot start SHA-256 (libcrypto)");
    if (pipe2(fds, O_CLOEXEC) < 0) return luaL_error(L, "s3: pipe: %s", strerror(errno));
    u->rfd = fds[0];
    u->wfd = fds[1];
    /* signals stay with the main thread (Ctrl-C cancels there; the thread polls the flag) */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    int rc = pthread_create(&u->reader, NULL, reader_main, u);
    if (rc == 0 && (rc = pthread_create(&u->sender, NULL, sender_main, u)) != 0) {
        u->stop = 1;
        pthread_join(u->reader, NULL);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&u->mu);
        pthread_cond_destroy(&u->cv);
        return luaL_error(L, "s3: cannot start the upload threads: %s", strerror(rc));
    }
    u->started = 1;
    return 1;
}

static int u_path(lua_State *L) {
    Uploader *u = check_uploader(L);
    if (u->wfd < 0) return luaL_error(L, "attempt to use a finished uploader");
    lua_pushfstring(L, "/dev/fd/%d", u->wfd);
    return 1;
}

static void push_failure(lua_State *L, Uploader *u) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, u->fail_msg[0] ? u->fail_msg : "the upload failed");
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, u->fail_status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, u->fail_code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, u->fail_kind[0] ? u->fail_kind : "error");
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, u->fail_part);
    lua_setfield(L, -2, "part");
    lua_pushinteger(L, u->retries);
    lua_setfield(L, -2, "retries");
}

static int u_finish(lua_State *L) {
    Uploader *u = check_uploader(L);
    unsigned char d[32], m[16], mp[16];
    unsigned int ml = 16;
    char hx[65], mh[33], mph[33];
    uploader_join(u);
    if (u->failed || !u->md5) {
        lua_pushnil(L);
        push_failure(L, u);
        return 2;
    }
    if (sha256_final(&u->sha, d) < 0) {
        lua_pushnil(L);
        snprintf(u->fail_kind, sizeof u->fail_kind, "error");
        snprintf(u->fail_msg, sizeof u->fail_msg, "libcrypto failed computing the SHA-256 of the upload");
        push_failure(L, u);
        return 2;
    }
    hex(d, 32, hx);
    EVP_DigestFinal_ex(u->md5, m, &ml);
    hex(m, 16, mh);
    EVP_DigestFinal_ex(u->md5parts, mp, &ml);
    hex(mp, 16, mph);
    lua_createtable(L, 0, 6);
    lua_createtable(L, u->nparts, 0);
    for (int i = 0; i < u->nparts; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, u->parts[i].number);
        lua_setfield(L, -2, "number");
        lua_pushstring(L, u->parts[i].etag);
        lua_setfield(L, -2, "etag");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "parts");
    lua_pushinteger(L, u->bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushstring(L, hx);
    lua_setfield(L, -2, "sha256");
    lua_pushstring(L, mh);
    lua_setfield(L, -2, "md5");
    lua_pushfstring(L, "%s-%d", mph, u->nparts);
    lua_setfield(L, -2, "multipart_etag");
    lua_pushinteger(L, u->retries);
    lua_setfield(L, -2, "retries");
    EVP_MD_CTX_free(u->md5); u->md5 = NULL;
    EVP_MD_CTX_free(u->md5parts); u->md5parts = NULL;
    return 1;
}

/* u:abort(): stop the thread and wait for it; returns the failure table when
 * the upload had already failed on its own (what made the writer's pipe close). */
static int u_abort(lua_State *L) {
    Uploader *u = check_uploader(L);
    u->stop = 1;
    uploader_join(u);
    if (u->failed && strcmp(u->fail_kind, "interrupted") != 0) { push_failure(L, u); return 1; }
    return 0;
}

static const luaL_Reg uploader_methods[] = {
    {"path", u_path}, {"finish", u_finish}, {"abort", u_abort}, {NULL, NULL}
};

static const luaL_Reg funcs[] = { {"sign", s_sign}, {"request", s_request}, {"uploader", s_uploader},
    {"download_ranges", s_download_ranges}, {"downloader", s_downloader}, {NULL, NULL} };

int luaopen_orch_s3(lua_State *L);
int luaopen_orch_s3(lua_State *L) {
    static int inited;
    if (!inited) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "orch.s3: curl_global_init failed");
        inited = 1;
    }
    luaL_newmetatable(L, UPLOADER_MT);
    lua_newtable(L);
    luaL_setfuncs(L, uploader_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, u_release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, u_release);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newmetatable(L, DOWNLOADER_MT);
    lua_newtable(L);
    luaL_setfuncs(L, downloader_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, d_release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, d_release);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
