/*
 * l_http.c -- orch.http: one HTTP(S) request function over libcurl, for
 * health checks and webhooks.
 *
 *   local r, err, kind = http.request { method = "GET", url = "https://...",
 *     headers = { Accept = "application/json" }, body = "..." | body_file = path,
 *     timeout = 30, connect_timeout = 10, max_redirects = 5,
 *     verify = true, cainfo = path, capath = dir, cert = path, key = path,
 *     max_body = 16 MiB, proxy = "...", user_agent = "..." }
 *   r = { status, headers = { lower-case name = value }, body, url,
 *         redirects, http_version, ip, port,
 *         timings = { dns, connect, tls, first_byte, total } }   -- seconds
 *
 * Error convention (as liolib): a request that could not be completed
 * returns nil, a message and a kind ("timeout", "connect", "dns", "tls",
 * "redirects", "too_large", "protocol", "url", "io", "error"); an HTTP error
 * status is a response, not a failure. Misuse (a bad option) raises, and so
 * does Ctrl-C (the interrupt error, exit 130).
 *
 * Nothing is logged here. Messages name the method and the URL without its
 * user info and query string, and never a header value, so credentials
 * (Authorization headers, tokens in URLs) do not reach output or logs.
 *
 * All transfer state lives in a userdata whose __gc frees it, and the curl
 * callbacks never call into Lua, so an error raised while the result is
 * built (out of memory) cannot leak the handle or longjmp through libcurl.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <curl/curl.h>
#include <lua.h>
#include <lauxlib.h>
#include "orch.h"

#define REQ_MT "orch.http.request"
#define DEFAULT_MAX_BODY (16 * 1024 * 1024)

typedef struct Buf {
    char *p;
    size_t n, cap;
} Buf;

typedef struct Req {
    CURL *curl;
    struct curl_slist *headers;
    FILE *upload;
    Buf body, head;
    size_t max_body;
    int too_large, oom;
    char errbuf[CURL_ERROR_SIZE];
} Req;

static int buf_add(Buf *b, const char *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 1;
}

static void req_free(Req *r) {
    if (r->curl) curl_easy_cleanup(r->curl);
    if (r->headers) curl_slist_free_all(r->headers);
    if (r->upload) fclose(r->upload);
    free(r->body.p);
    free(r->head.p);
    memset(r, 0, sizeof *r);
}

static int req_gc(lua_State *L) {
    req_free((Req *)luaL_checkudata(L, 1, REQ_MT));
    return 0;
}

/* ------------------------------------------------------------ callbacks */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
    Req *r = (Req *)ud;
    size_t len = size * n;
    if (r->body.n + len > r->max_body) { r->too_large = 1; return 0; }
    if (!buf_add(&r->body, p, len)) { r->oom = 1; return 0; }
    return len;
}

/* Header lines of every response, redirects included: a status line starts
 * a new response, so only the last response's headers are kept. */
static size_t on_header(char *p, size_t size, size_t n, void *ud) {
    Req *r = (Req *)ud;
    size_t len = size * n;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) r->head.n = 0;
    if (r->head.n + len > 1024 * 1024) { r->too_large = 1; return 0; }
    if (!buf_add(&r->head, p, len)) { r->oom = 1; return 0; }
    return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud) {
    Req *r = (Req *)ud;
    size_t got = fread(p, size, n, r->upload);
    if (got == 0 && ferror(r->upload)) return CURL_READFUNC_ABORT;
    return got;
}

/* Called by libcurl at least once a second, also while it waits: the place
 * where Ctrl-C stops a transfer. */
static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)ud; (void)dt; (void)dn; (void)ut; (void)un;
    return orch_interrupted() ? 1 : 0;
}

/* ------------------------------------------------------------ helpers */

/* The URL as it may be shown: no user info, no query string, no fragment. */
static void push_shown_url(lua_State *L, const char *url) {
    luaL_Buffer b;
    const char *scheme = strstr(url, "://");
    const char *start = scheme ? scheme + 3 : url;
    const char *end = start + strcspn(start, "/?#");
    const char *at = NULL, *q;
    for (q = start; q < end; q++) if (*q == '@') at = q;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, url, (size_t)(start - url));
    if (at) { luaL_addstring(&b, "***@"); start = at + 1; }
    q = start + strcspn(start, "?#");
    luaL_addlstring(&b, start, (size_t)(q - start));
    if (*q == '?') luaL_addstring(&b, "?***");
    luaL_pushresult(&b);
}

static int has_crlf(const char *s) { return strchr(s, '\r') || strchr(s, '\n'); }

static double opt_number(lua_State *L, const char *key, double dflt) {
    double v = dflt;
    int t = lua_getfield(L, 1, key);
    if (t == LUA_TNUMBER) v = lua_tonumber(L, -1);
    else if (t != LUA_TNIL) luaL_error(L, "http.request: %s must be a number (seconds or bytes), got a %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, const char *key) {
    const char *v = NULL;
    int t = lua_getfield(L, 1, key);
    if (t == LUA_TSTRING) v = lua_tostring(L, -1);     /* the options table keeps it alive */
    else if (t != LUA_TNIL) luaL_error(L, "http.request: %s must be a string, got a %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, const char *key, int dflt) {
    int v = dflt, t = lua_getfield(L, 1, key);
    if (t != LUA_TNIL) v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static void add_header(lua_State *L, Req *r, const char *line) {
    struct curl_slist *n = curl_slist_append(r->headers, line);
    if (!n) luaL_error(L, "http.request: out of memory");
    r->headers = n;
}

/* headers = { Name = "value", ... } or { "Name: value", ... }. A header
 * without a value ("Name:" in list form, or false in map form) removes one
 * curl would add. */
static int collect_headers(lua_State *L, Req *r) {
    int has_ct = 0, t = lua_getfield(L, 1, "headers");
    if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *line;
            if (lua_type(L, -2) == LUA_TNUMBER) {
                if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "http.request: headers[%d] must be a string \"Name: value\"", (int)lua_tointeger(L, -2));
                line = lua_tostring(L, -1);
                if (!strchr(line, ':')) luaL_error(L, "http.request: header \"%s\" has no ':' (\"Name: value\" expected)", line);
                if (!strncasecmp(line, "content-type:", 13)) has_ct = 1;
                if (has_crlf(line)) luaL_error(L, "http.request: a header contains a line break");
                add_header(L, r, line);
            } else if (lua_type(L, -2) == LUA_TSTRING) {
                const char *name = lua_tostring(L, -2);
                if (has_crlf(name) || strchr(name, ':') || !*name) luaL_error(L, "http.request: bad header name \"%s\"", name);
                if (!strcasecmp(name, "content-type")) has_ct = 1;
                if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
                    line = lua_pushfstring(L, "%s:", name);
                } else {
                    const char *v = lua_tostring(L, -1);
                    if (!v) luaL_error(L, "http.request: header %s must be a string", name);
                    if (has_crlf(v)) luaL_error(L, "http.request: the value of header %s contains a line break", name);
                    line = lua_pushfstring(L, "%s: %s", name, v);
                }
                add_header(L, r, line);
                lua_pop(L, 1);
            } else {
                luaL_error(L, "http.request: headers must be a table of Name = value or \"Name: value\"");
            }
            lua_pop(L, 1);
        }
    } else if (t != LUA_TNIL) {
        luaL_error(L, "http.request: headers must be a table");
    }
    lua_pop(L, 1);
    return has_ct;
}

/* Push the response headers as a table of lower-case names; repeated
 * headers are joined with ", " as RFC 9110 allows. */
static void push_headers(lua_State *L, const Buf *h) {
    const char *p = h->p ? h->p : "", *end = p + h->n;
    lua_newtable(L);
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end, *colon, *v, *ve;
        if (!eol) eol = end;
        ve = eol;
        if (ve > p && ve[-1] == '\r') ve--;
        colon = memchr(p, ':', (size_t)(ve - p));
        if (colon && colon > p && memcmp(p, "HTTP/", 5)) {
            luaL_Buffer b;
            const char *k;
            luaL_buffinit(L, &b);
            for (k = p; k < colon; k++) luaL_addchar(&b, (char)((*k >= 'A' && *k <= 'Z') ? *k + 32 : *k));
            luaL_pushresult(&b);
            v = colon + 1;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(ve - v));
            }
            lua_rawset(L, -3);
        }
        p = next;
    }
}

static double seconds(CURL *c, CURLINFO what) {
    curl_off_t us = 0;
    curl_easy_getinfo(c, what, &us);
    return (double)us / 1e6;
}

static void set_num(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v < 0 ? 0 : v);
    lua_setfield(L, -2, k);
}

/* What went wrong, in words, and its kind. */
static const char *describe(CURLcode rc, const Req *r, const char **kind) {
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT: *kind = "timeout"; return "timed out";
    case CURLE_COULDNT_CONNECT: *kind = "connect"; return "could not connect";
    case CURLE_COULDNT_RESOLVE_HOST: *kind = "dns"; return "could not resolve the host name";
    case CURLE_COULDNT_RESOLVE_PROXY: *kind = "dns"; return "could not resolve the proxy";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
        *kind = "tls"; return "TLS failed";
    case CURLE_TOO_MANY_REDIRECTS: *kind = "redirects"; return "too many redirects";
    case CURLE_UNSUPPORTED_PROTOCOL: *kind = "protocol"; return "unsupported protocol (only http and https are allowed)";
    case CURLE_URL_MALFORMAT: *kind = "url"; return "malformed URL";
    case CURLE_READ_ERROR: *kind = "io"; return "reading the request body failed";
    case CURLE_WRITE_ERROR:
        if (r->too_large) { *kind = "too_large"; return "the response is larger than max_body"; }
        if (r->oom) { *kind = "error"; return "out of memory for the response"; }
        *kind = "io"; return "storing the response failed";
    case CURLE_GOT_NOTHING: *kind = "connect"; return "the server closed the connection without answering";
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: *kind = "connect"; return "the connection failed";
    default: *kind = "error"; return "request failed";
    }
}

/* ------------------------------------------------------------ request */

static int http_request(lua_State *L) {
    Req *r;
    CURLcode rc;
    const char *url, *method, *body_file, *s;
    size_t body_len = 0;
    const char *body = NULL;
    double timeout, connect_timeout, max_redirects, max_body;
    int verify, has_ct;
    long status = 0, redirects = 0, port = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    url = opt_string(L, "url");
    if (!url || !*url) return luaL_error(L, "http.request: url is required");
    method = opt_string(L, "method");
    body_file = opt_string(L, "body_file");
    if (lua_getfield(L, 1, "body") == LUA_TSTRING) body = lua_tolstring(L, -1, &body_len);
    else if (!lua_isnil(L, -1)) return luaL_error(L, "http.request: body must be a string (or use body_file = path)");
    lua_pop(L, 1);
    if (body && body_file) return luaL_error(L, "http.request: give body or body_file, not both");
    if (!method) method = (body || body_file) ? "POST" : "GET";
    if (has_crlf(method) || strchr(method, ' ')) return luaL_error(L, "http.request: bad method");
    timeout = opt_number(L, "timeout", 30);
    connect_timeout = opt_number(L, "connect_timeout", timeout < 10 ? timeout : 10);
    max_redirects = opt_number(L, "max_redirects", 5);
    max_body = opt_number(L, "max_body", DEFAULT_MAX_BODY);
    verify = opt_bool(L, "verify", 1);
    if (timeout <= 0 || connect_timeout <= 0) return luaL_error(L, "http.request: timeouts must be positive (seconds)");

    r = (Req *)lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    luaL_setmetatable(L, REQ_MT);
    r->max_body = (size_t)max_body;
    if (!(r->curl = curl_easy_init())) return luaL_error(L, "http.request: curl_easy_init failed");
    CURL *c = r->curl;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout * 1000));
    if (max_redirects > 0) {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)max_redirects);
    }
    /* TLS: verification on unless asked; CA and client certificate options */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    if ((s = opt_string(L, "cainfo"))) curl_easy_setopt(c, CURLOPT_CAINFO, s);
    if ((s = opt_string(L, "capath"))) curl_easy_setopt(c, CURLOPT_CAPATH, s);
    if ((s = opt_string(L, "cert"))) curl_easy_setopt(c, CURLOPT_SSLCERT, s);
    if ((s = opt_string(L, "key"))) curl_easy_setopt(c, CURLOPT_SSLKEY, s);
    if ((s = opt_string(L, "proxy"))) curl_easy_setopt(c, CURLOPT_PROXY, s);
    {
        /* loopback never goes through a proxy; the environment's NO_PROXY still counts */
        const char *np = getenv("NO_PROXY");
        if (!np || !*np) np = getenv("no_proxy");
        lua_pushfstring(L, "localhost,127.0.0.1,::1%s%s", np && *np ? "," : "", np && *np ? np : "");
        curl_easy_setopt(c, CURLOPT_NOPROXY, lua_tostring(L, -1));   /* kept on the stack until we return */
    }
    s = opt_string(L, "user_agent");
    curl_easy_setopt(c, CURLOPT_USERAGENT, s ? s : "orch/" ORCH_VERSION);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");      /* what libcurl can decode */

    has_ct = collect_headers(L, r);
    add_header(L, r, "Expect:");                            /* no 100-continue round trip */
    if (body || body_file) {
        if (!has_ct) add_header(L, r, "Content-Type: application/octet-stream");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        if (body) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);   /* the options table keeps it alive */
        } else {
            struct stat st;
            if (!(r->upload = fopen(body_file, "rb")) || fstat(fileno(r->upload), &st) != 0) {
                int e = errno;
                lua_pushnil(L);
                lua_pushfstring(L, "%s: cannot read the request body %s: %s", method, body_file, strerror(e));
                lua_pushliteral(L, "io");
                return 3;
            }
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(c, CURLOPT_READDATA, r);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)st.st_size);
        }
        if (strcmp(method, "POST")) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    } else if (!strcmp(method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);

    rc = curl_easy_perform(c);
    if (orch_interrupted()) {
        req_free(r);
        return orch_raise_interrupt(L);
    }
    if (rc != CURLE_OK) {
        const char *kind, *what = describe(rc, r, &kind);
        lua_pushnil(L);
        lua_pushstring(L, method);
        lua_pushliteral(L, " ");
        push_shown_url(L, url);
        lua_pushfstring(L, ": %s", what);
        if (r->errbuf[0] && rc != CURLE_WRITE_ERROR) {
            /* curl's own words can carry the URL: show them only when they do not */
            if (!strstr(r->errbuf, "://")) lua_pushfstring(L, " (%s)", r->errbuf);
            else lua_pushliteral(L, "");
        } else {
            lua_pushliteral(L, "");
        }
        if (rc == CURLE_OPERATION_TIMEDOUT) lua_pushfstring(L, " [timeout %fs, connect_timeout %fs]", timeout, connect_timeout);
        else if (!strcmp(kind, "tls") && verify)
            lua_pushliteral(L, "; if the server uses a private CA, pass its certificate as cainfo");
        else lua_pushliteral(L, "");
        lua_concat(L, 6);
        lua_pushstring(L, kind);
        req_free(r);
        return 3;
    }

    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_REDIRECT_COUNT, &redirects);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    push_headers(L, &r->head);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.n);
    lua_setfield(L, -2, "body");
    if (curl_easy_getinfo(c, CURLINFO_EFFECTIVE_URL, &s) == CURLE_OK && s) {
        lua_pushstring(L, s);
        lua_setfield(L, -2, "url");
    }
    lua_pushinteger(L, redirects);
    lua_setfield(L, -2, "redirects");
    {
        long v = 0;
        curl_easy_getinfo(c, CURLINFO_HTTP_VERSION, &v);
        lua_pushstring(L, v == CURL_HTTP_VERSION_1_0 ? "1.0" : v == CURL_HTTP_VERSION_2_0 ? "2" :
                          v == CURL_HTTP_VERSION_3 ? "3" : "1.1");
        lua_setfield(L, -2, "http_version");
    }
    if (curl_easy_getinfo(c, CURLINFO_PRIMARY_IP, &s) == CURLE_OK && s) {
        lua_pushstring(L, s);
        lua_setfield(L, -2, "ip");
    }
    curl_easy_getinfo(c, CURLINFO_PRIMARY_PORT, &port);
    lua_pushinteger(L, port);
    lua_setfield(L, -2, "port");
    {
        /* curl's times are cumulative from the start; report each phase's own */
        double dns = seconds(c, CURLINFO_NAMELOOKUP_TIME_T), conn = seconds(c, CURLINFO_CONNECT_TIME_T);
        double tls = seconds(c, CURLINFO_APPCONNECT_TIME_T), first = seconds(c, CURLINFO_STARTTRANSFER_TIME_T);
        double total = seconds(c, CURLINFO_TOTAL_TIME_T);
        lua_createtable(L, 0, 5);
        set_num(L, "dns", dns);
        set_num(L, "connect", conn - dns);
        set_num(L, "tls", tls > 0 ? tls - conn : 0);
        set_num(L, "first_byte", first);
        set_num(L, "total", total);
        set_num(L, "redirect", seconds(c, CURLINFO_REDIRECT_TIME_T));
        lua_setfield(L, -2, "timings");
    }
    req_free(r);
    return 1;
}

/* http.version() -> "libcurl/7.88.1 OpenSSL/3.0.x ..." */
static int http_version(lua_State *L) {
    lua_pushstring(L, curl_version());
    return 1;
}

static const luaL_Reg funcs[] = {
    {"request", http_request},
    {"version", http_version},
    {NULL, NULL}
};

int luaopen_orch_http(lua_State *L);
int luaopen_orch_http(lua_State *L) {
    static int initialised;
    if (!initialised) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return luaL_error(L, "orch.http: curl_global_init failed");
        initialised = 1;
    }
    if (luaL_newmetatable(L, REQ_MT)) {
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
