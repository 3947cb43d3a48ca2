/*
 * l_db.c -- orch.db: PostgreSQL connections over libpq.
 *
 *   local db = require "orch.db"
 *   local c <close> = db.connect("postgres://app@localhost/app")
 *   local rows = c:query("SELECT id, name FROM t WHERE id > $1", 10)
 *   c:tx(function() c:exec("UPDATE ...") end)
 *   c:copy_out("COPY t TO STDOUT", function(chunk) ... end)
 *
 * Handles follow liolib: the userdata is created closed, then connected; one
 * close function serves close(), __close and __gc and is safe twice; a closed
 * handle raises "attempt to use a closed connection". Every PGresult lives in
 * a userdata box from the moment libpq returns it, so an error anywhere frees
 * it. SQL values are always sent as parameters ($1..$n), never spliced in.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include "orch.h"

#define CONN_MT   "orch.conn"
#define RESULT_MT "orch.pgresult"
#define ERROR_MT  "orch.sqlerror"
#define MAX_NOTICES 1000
#define COPY_BATCH (64 * 1024)

typedef struct Notice {
    struct Notice *next;
    char severity[16];
    char text[];
} Notice;

typedef struct Conn {
    PGconn *pg;          /* NULL once closed */
    PGcancel *cancel;
    int txdepth;         /* nesting of tx(): 0 outside */
    int in_copy;         /* 1 while a copy_in_begin() is open */
    int dropped;         /* notices dropped because the queue was full */
    int nnotices;
    Notice *nhead, *ntail;
} Conn;

typedef struct ResultBox { PGresult *res; } ResultBox;

/* ================================================================ helpers */

static Conn *toconn(lua_State *L, int idx) {
    return (Conn *)luaL_checkudata(L, idx, CONN_MT);
}

static Conn *checkopen(lua_State *L, int idx) {
    Conn *c = toconn(L, idx);
    if (!c->pg) luaL_error(L, "attempt to use a closed connection");
    return c;
}

PGconn *orch_checkconn(lua_State *L, int idx) {
    Conn *c = checkopen(L, idx);
    if (c->in_copy) luaL_error(L, "connection is in the middle of COPY FROM STDIN: call copy_in_end() first");
    return c->pg;
}

/* A fresh, empty result box on the stack; the GC clears what it holds. */
static ResultBox *newbox(lua_State *L) {
    ResultBox *b = (ResultBox *)lua_newuserdatauv(L, sizeof *b, 0);
    b->res = NULL;
    luaL_setmetatable(L, RESULT_MT);
    return b;
}

static int box_gc(lua_State *L) {
    ResultBox *b = (ResultBox *)luaL_checkudata(L, 1, RESULT_MT);
    if (b->res) PQclear(b->res);
    b->res = NULL;
    return 0;
}

static void free_notices(Conn *c) {
    Notice *n = c->nhead, *next;
    for (; n; n = next) { next = n->next; free(n); }
    c->nhead = c->ntail = NULL;
    c->nnotices = 0;
}

/* libpq calls this inside its own functions: never touch Lua here, only queue. */
static void notice_receiver(void *arg, const PGresult *res) {
    Conn *c = (Conn *)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    size_t len;
    Notice *n;
    if (!msg) msg = PQresultErrorMessage(res);
    if (c->nnotices >= MAX_NOTICES) { c->dropped++; return; }
    len = strlen(msg);
    n = (Notice *)malloc(sizeof *n + len + 1);
    if (!n) { c->dropped++; return; }
    n->next = NULL;
    snprintf(n->severity, sizeof n->severity, "%s", sev ? sev : "NOTICE");
    memcpy(n->text, msg, len + 1);
    if (c->ntail) c->ntail->next = n; else c->nhead = n;
    c->ntail = n;
    c->nnotices++;
}

/* Hand queued notices to the handler set with db.on_notice (default: stderr). */
void orch_flush_notices(lua_State *L, int idx) {
    Conn *c = toconn(L, idx);
    idx = lua_absindex(L, idx);
    while (c->nhead) {
        Notice *n = c->nhead;
        c->nhead = n->next;
        if (!c->nhead) c->ntail = NULL;
        c->nnotices--;
        if (lua_getfield(L, LUA_REGISTRYINDEX, "orch.db.notice") == LUA_TFUNCTION) {
            lua_pushstring(L, n->severity);
            lua_pushstring(L, n->text);
            lua_pushvalue(L, idx);
            free(n);
            if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);  /* a logger must not break work */
        } else {
            lua_pop(L, 1);
            fprintf(stderr, "orch: server %s: %s\n", n->severity, n->text);
            free(n);
        }
    }
    if (c->dropped) {
        fprintf(stderr, "orch: %d server notices were dropped (more than %d queued)\n",
                c->dropped, MAX_NOTICES);
        c->dropped = 0;
    }
}

/* libpq messages end with a newline and may carry tab-indented hints. */
static void push_trimmed(lua_State *L, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ')) n--;
    lua_pushlstring(L, s, n);
}

static void setfield_str(lua_State *L, const char *k, const char *v) {
    if (v && *v) {
        push_trimmed(L, v);
        lua_setfield(L, -2, k);
    }
}

static void set_error_mt(lua_State *L);

/* Build the error object for a failed command and raise it. res may be
 * NULL (then the connection's message is used); it is cleared here. */
int orch_raise_pgerror(lua_State *L, PGconn *conn, PGresult *res, const char *query) {
    static const struct { const char *name; int code; } fields[] = {
        {"severity", PG_DIAG_SEVERITY_NONLOCALIZED}, {"sqlstate", PG_DIAG_SQLSTATE},
        {"message", PG_DIAG_MESSAGE_PRIMARY}, {"detail", PG_DIAG_MESSAGE_DETAIL},
        {"hint", PG_DIAG_MESSAGE_HINT}, {"context", PG_DIAG_CONTEXT},
        {"schema", PG_DIAG_SCHEMA_NAME}, {"table", PG_DIAG_TABLE_NAME},
        {"column", PG_DIAG_COLUMN_NAME}, {"constraint", PG_DIAG_CONSTRAINT_NAME},
        {"internal_query", PG_DIAG_INTERNAL_QUERY},
    };
    size_t i;
    int lost;
    lua_createtable(L, 0, 12);
    if (res) {
        const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
        for (i = 0; i < sizeof fields / sizeof fields[0]; i++)
            setfield_str(L, fields[i].name, PQresultErrorField(res, fields[i].code));
        if (pos) {
            lua_pushinteger(L, atoi(pos));
            lua_setfield(L, -2, "position");
        }
        if (lua_getfield(L, -1, "message") == LUA_TNIL) {
            lua_pop(L, 1);
            setfield_str(L, "message", PQresultErrorMessage(res));
        } else {
            lua_pop(L, 1);
        }
        PQclear(res);
    }
    lua_getfield(L, -1, "message");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        setfield_str(L, "message", conn ? PQerrorMessage(conn) : "unknown error");
        lua_getfield(L, -1, "message");
        if (lua_isnil(L, -1)) {
            lua_pushliteral(L, "unknown error");
            lua_setfield(L, -3, "message");
        }
    }
    lua_pop(L, 1);
    lost = conn && PQstatus(conn) == CONNECTION_BAD;
    if (lost) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "connection_lost");
        lua_getfield(L, -1, "sqlstate");
        if (lua_isnil(L, -1)) {
            lua_pushliteral(L, "08006");
            lua_setfield(L, -3, "sqlstate");
        }
        lua_pop(L, 1);
    }
    if (query) {
        lua_pushstring(L, query);
        lua_setfield(L, -2, "query");
    }
    if (orch_interrupted()) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "interrupted");
        lua_pushinteger(L, 130);
        lua_setfield(L, -2, "exit_code");
    }
    set_error_mt(L);
    return lua_error(L);
}

/* __tostring of SQL errors: message, SQLSTATE, detail, hint, where in the statement. */
static int error_tostring(lua_State *L) {
    luaL_Buffer b;
    const char *q;
    lua_Integer pos;
    luaL_buffinit(L, &b);
    if (lua_getfield(L, 1, "prefix") == LUA_TSTRING) {
        luaL_addvalue(&b);
        luaL_addstring(&b, ": ");
    } else lua_pop(L, 1);
    lua_getfield(L, 1, "message");
    luaL_addstring(&b, lua_isstring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "sqlstate") == LUA_TSTRING) {
        luaL_addstring(&b, " (SQLSTATE ");
        luaL_addvalue(&b);
        luaL_addchar(&b, ')');
    } else lua_pop(L, 1);
    if (lua_getfield(L, 1, "detail") == LUA_TSTRING) {
        luaL_addstring(&b, "\n  detail: ");
        luaL_addvalue(&b);
    } else lua_pop(L, 1);
    if (lua_getfield(L, 1, "hint") == LUA_TSTRING) {
        luaL_addstring(&b, "\n  hint: ");
        luaL_addvalue(&b);
    } else lua_pop(L, 1);
    lua_getfield(L, 1, "query");
    lua_getfield(L, 1, "position");
    q = lua_tostring(L, -2);
    pos = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (q) {
        /* show the statement line the position points at, with line/column */
        lua_Integer line = 1, col = 1, i;
        const char *start = q, *end;
        for (i = 0; pos > 0 && i < pos - 1 && q[i]; i++) {
            if (q[i] == '\n') { line++; col = 1; start = q + i + 1; }
            else col++;
        }
        if (pos <= 0) {
            while (*start == '\n' || *start == ' ') start++;
        }
        end = strchr(start, '\n');
        if (!end) end = start + strlen(start);
        if (end - start > 200) end = start + 200;
        luaL_addstring(&b, "\n  statement: ");
        luaL_addlstring(&b, start, (size_t)(end - start));
        if (*end && pos <= 0) luaL_addstring(&b, " ...");
        if (pos > 0) {
            lua_pushfstring(L, "\n  at line %d, column %d of the statement", (int)line, (int)col);
            luaL_addvalue(&b);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "where") == LUA_TSTRING) {
        luaL_addstring(&b, "\n  where: ");
        luaL_addvalue(&b);
    } else lua_pop(L, 1);
    luaL_pushresult(&b);
    return 1;
}

static void set_error_mt(lua_State *L) {
    if (luaL_newmetatable(L, ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "orch.sqlerror");
        lua_setfield(L, -2, "__name");
    }
    lua_setmetatable(L, -2);
}

/* Wait for the results of a sent command. Leaves the last result in box
 * (or raises the first error). The statement can be cancelled by Ctrl-C. */
static PGresult *collect(lua_State *L, Conn *c, ResultBox *box, const char *query) {
    PGresult *r, *err = NULL;
    orch_interrupt_set_cancel(c->cancel);
    while ((r = PQgetResult(c->pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
            if (!err) err = r; else PQclear(r);
            continue;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            if (box->res) PQclear(box->res);
            box->res = r;
            break;          /* the caller continues the COPY protocol */
        }
        if (box->res) PQclear(box->res);
        box->res = r;
    }
    orch_interrupt_set_cancel(NULL);
    if (err) {
        if (box->res) { PQclear(box->res); box->res = NULL; }
        orch_raise_pgerror(L, c->pg, err, query);
    }
    if (!box->res) orch_raise_pgerror(L, c->pg, NULL, query);
    return box->res;
}

/* ======================================================= values and rows */

enum { T_TEXT, T_INT, T_FLOAT, T_BOOL, T_BYTEA };

static int type_class(Oid oid) {
    switch (oid) {
    case 20: case 21: case 23: case 26: case 28: return T_INT;   /* int8 int2 int4 oid xid */
    case 700: case 701: case 1700: return T_FLOAT;               /* float4 float8 numeric */
    case 16: return T_BOOL;
    case 17: return T_BYTEA;
    default: return T_TEXT;
    }
}

static void push_value(lua_State *L, const PGresult *r, int row, int col, int cls) {
    const char *v = PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    char *end;
    switch (cls) {
    case T_INT: {
        long long n;
        errno = 0;
        n = strtoll(v, &end, 10);
        if (errno == 0 && *end == '\0') { lua_pushinteger(L, (lua_Integer)n); return; }
        break;
    }
    case T_FLOAT: {
        double d = strtod(v, &end);
        if (*end == '\0') { lua_pushnumber(L, d); return; }
        break;
    }
    case T_BOOL:
        lua_pushboolean(L, v[0] == 't');
        return;
    case T_BYTEA: {
        size_t n;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)v, &n);
        if (raw) {
            lua_pushlstring(L, (const char *)raw, n);
            PQfreemem(raw);
            return;
        }
        break;
    }
    }
    lua_pushlstring(L, v, (size_t)len);
}

/* __index of rows: a NULL column reads as nil, an unknown column raises. */
static int row_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 0;
        return luaL_error(L, "no column '%s' in this result (columns: %s)",
                          lua_tostring(L, 2), lua_tostring(L, lua_upvalueindex(2)));
    }
    return 0;
}

/* Turn a tuples result into { {col=val,...}, ..., columns={...}, status=, affected= }. */
static void push_rows(lua_State *L, const PGresult *r) {
    int nrows = PQntuples(r), ncols = PQnfields(r), i, j, *cls;
    const char *tag = PQcmdStatus((PGresult *)r), *aff = PQcmdTuples((PGresult *)r);
    luaL_Buffer names;
    lua_createtable(L, nrows, 3);
    int t = lua_gettop(L);
    cls = (int *)lua_newuserdatauv(L, sizeof(int) * (size_t)(ncols ? ncols : 1), 0);
    lua_createtable(L, ncols, 0);                 /* columns, in order */
    lua_createtable(L, 0, ncols);                 /* set of column names */
    luaL_buffinit(L, &names);
    for (j = 0; j < ncols; j++) {
        cls[j] = type_class(PQftype(r, j));
        lua_pushstring(L, PQfname(r, j));
        lua_pushvalue(L, -1);
        lua_rawseti(L, t + 2, j + 1);
        lua_pushboolean(L, 1);
        lua_rawset(L, t + 3);
        if (j) luaL_addstring(&names, ", ");
        luaL_addstring(&names, PQfname(r, j));
    }
    luaL_pushresult(&names);                      /* t+4 */
    lua_createtable(L, 0, 2);                     /* row metatable, t+5 */
    lua_pushvalue(L, t + 3);
    lua_pushvalue(L, t + 4);
    lua_pushcclosure(L, row_index, 2);
    lua_setfield(L, -2, "__index");
    for (i = 0; i < nrows; i++) {
        lua_createtable(L, 0, ncols);
        for (j = 0; j < ncols; j++) {
            if (PQgetisnull(r, i, j)) continue;
            lua_pushstring(L, PQfname(r, j));
            push_value(L, r, i, j, cls[j]);
            lua_rawset(L, -3);
        }
        lua_pushvalue(L, t + 5);
        lua_setmetatable(L, -2);
        lua_rawseti(L, t, i + 1);
    }
    lua_pushvalue(L, t + 2);
    lua_setfield(L, t, "columns");
    lua_settop(L, t);
    lua_pushstring(L, tag);
    lua_setfield(L, t, "status");
    if (aff && *aff) {
        lua_pushinteger(L, (lua_Integer)strtoll(aff, NULL, 10));
        lua_setfield(L, t, "affected");
    }
}

/* Convert Lua arguments first..top into text parameters; the strings stay
 * anchored on the stack (numbers are converted in place). */
static int gather_params(lua_State *L, int first, const char ***out) {
    int n = lua_gettop(L) - first + 1, i;
    const char **vals;
    if (n <= 0) { *out = NULL; return 0; }
    if (n > 65535) luaL_error(L, "too many parameters (%d)", n);
    vals = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)n, 0);
    for (i = 0; i < n; i++) {
        int idx = first + i;
        switch (lua_type(L, idx)) {
        case LUA_TNIL: vals[i] = NULL; break;
        case LUA_TBOOLEAN:
            lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f");
            lua_replace(L, idx);
            vals[i] = lua_tostring(L, idx);
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx)) {
                lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
            } else {
                double d = lua_tonumber(L, idx);
                char buf[64];
                if (isnan(d)) snprintf(buf, sizeof buf, "NaN");
                else if (isinf(d)) snprintf(buf, sizeof buf, d > 0 ? "Infinity" : "-Infinity");
                else snprintf(buf, sizeof buf, "%.17g", d);
                lua_pushstring(L, buf);
            }
            lua_replace(L, idx);
            vals[i] = lua_tostring(L, idx);
            break;
        case LUA_TSTRING: {
            size_t len;
            vals[i] = lua_tolstring(L, idx, &len);
            if (strlen(vals[i]) != len)
                luaL_error(L, "parameter $%d contains a zero byte: text parameters cannot carry one "
                              "(encode binary data, e.g. with decode($%d, 'hex'))", i + 1, i + 1);
            break;
        }
        default:
            luaL_error(L, "bad parameter $%d (nil, boolean, number or string expected, got %s)",
                       i + 1, luaL_typename(L, idx));
        }
    }
    *out = vals;
    return n;
}

/* ============================================================ connect */

static int conn_close(lua_State *L);

static void push_conn_desc(lua_State *L, PGconn *pg) {
    const char *host = PQhost(pg), *port = PQport(pg), *db = PQdb(pg), *user = PQuser(pg);
    lua_pushfstring(L, "host=%s port=%s dbname=%s user=%s",
                    host && *host ? host : "(default)", port && *port ? port : "(default)",
                    db && *db ? db : "(default)", user && *user ? user : "(default)");
}

/* Raise the error object for a failed connection attempt; names host, port,
 * database and user (libpq never puts the password in its messages). */
static int raise_connect_error(lua_State *L, PGconn *pg) {
    const char *msg = PQerrorMessage(pg);
    int needs_pw = PQconnectionNeedsPassword(pg);
    lua_createtable(L, 0, 6);
    push_conn_desc(L, pg);
    lua_setfield(L, -2, "target");
    push_trimmed(L, msg);
    lua_setfield(L, -2, "reason");
    lua_pushliteral(L, "08001");
    lua_setfield(L, -2, "sqlstate");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "connect_failed");
    lua_getfield(L, -1, "target");
    lua_getfield(L, -2, "reason");
    lua_pushfstring(L, "could not connect to PostgreSQL (%s): %s", lua_tostring(L, -2), lua_tostring(L, -1));
    lua_setfield(L, -4, "message");
    lua_pop(L, 2);
    if (needs_pw)
        lua_pushliteral(L, "the server wants a password: set PGPASSWORD or ~/.pgpass, or put it in the URL (orch never prints it)");
    else if (strstr(msg, "password authentication failed"))
        lua_pushliteral(L, "check the password (PGPASSWORD, ~/.pgpass or the URL) and the user name");
    else if (strstr(msg, "Connection refused") || strstr(msg, "No such file"))
        lua_pushliteral(L, "is the server running and are host and port right? (--db URL, DATABASE_URL or PGHOST/PGPORT)");
    else if (strstr(msg, "timeout"))
        lua_pushliteral(L, "the server did not answer in time: check host, port and firewalls, or raise connect_timeout");
    else if (strstr(msg, "does not exist"))
        lua_pushliteral(L, "create the database or role first, or choose another with --db / DATABASE_URL");
    else
        lua_pushnil(L);
    lua_setfield(L, -2, "hint");
    PQfinish(pg);
    set_error_mt(L);
    return lua_error(L);
}

#define MAX_KW 64

/* db.connect(target [, opts]) -> conn. target: URL, conninfo string or a
 * table of libpq keywords; nil uses libpq's defaults (PG* variables, service
 * file, .pgpass). opts: connect_timeout (seconds, default 10),
 * application_name (default "orch"). Raises a connection error object. */
static int db_connect(lua_State *L) {
    const char *kw[MAX_KW + 1], *val[MAX_KW + 1];
    int n = 0, expand = 0, t = lua_type(L, 1);
    Conn *c;
    PGconn *pg;
    luaL_argexpected(L, t == LUA_TNONE || t == LUA_TNIL || t == LUA_TSTRING || t == LUA_TTABLE, 1,
                     "URL, conninfo string or table");
    lua_settop(L, 2);
    kw[n] = "fallback_application_name"; val[n++] = "orch";
    kw[n] = "connect_timeout"; val[n++] = "10";
    if (lua_istable(L, 2)) {
        if (lua_getfield(L, 2, "connect_timeout") != LUA_TNIL) {
            val[1] = lua_tostring(L, -1);
            if (!val[1]) luaL_argerror(L, 2, "connect_timeout must be a number of seconds");
        }
        if (lua_getfield(L, 2, "application_name") != LUA_TNIL) {
            kw[n] = "application_name"; val[n++] = lua_tostring(L, -1);
        }
    }
    if (t == LUA_TSTRING) {
        kw[n] = "dbname"; val[n++] = lua_tostring(L, 1);
        expand = 1;
    } else if (t == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_argerror(L, 1, "connection table keys must be libpq keywords");
            if (n >= MAX_KW) luaL_argerror(L, 1, "too many connection parameters");
            if (lua_type(L, -1) == LUA_TNUMBER) {
                lua_pushstring(L, lua_tostring(L, -1));
                lua_replace(L, -2);
            }
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "bad connection parameter '%s' (string or number expected)", lua_tostring(L, -2));
            kw[n] = lua_tostring(L, -2);
            val[n++] = lua_tostring(L, -1);
            lua_insert(L, -2);                     /* value stays anchored below the key */
        }
    }
    kw[n] = NULL; val[n] = NULL;
    c = (Conn *)lua_newuserdatauv(L, sizeof *c, 2);   /* uservalues: target, opts (for clone) */
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, CONN_MT);
    pg = PQconnectdbParams(kw, val, expand);
    if (!pg) return luaL_error(L, "could not connect to PostgreSQL: out of memory");
    if (PQstatus(pg) != CONNECTION_OK) return raise_connect_error(L, pg);
    c->pg = pg;
    c->cancel = PQgetCancel(pg);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 2);
    PQsetNoticeReceiver(pg, notice_receiver, c);
    if (orch_interrupted()) {
        conn_close(L);
        return orch_raise_interrupt(L);
    }
    return 1;
}

/* ============================================================ methods */

static int conn_close(lua_State *L) {
    Conn *c = toconn(L, 1);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (c->cancel) {
        PQfreeCancel(c->cancel);
        c->cancel = NULL;
    }
    free_notices(c);
    c->in_copy = 0;
    return 0;
}

static int conn_gc(lua_State *L) {
    return conn_close(L);
}

static int conn_closed(lua_State *L) {
    lua_pushboolean(L, toconn(L, 1)->pg == NULL);
    return 1;
}

static int conn_tostring(lua_State *L) {
    Conn *c = toconn(L, 1);
    if (!c->pg) { lua_pushliteral(L, "orch.conn (closed)"); return 1; }
    lua_pushliteral(L, "orch.conn (");
    push_conn_desc(L, c->pg);
    lua_pushliteral(L, ")");
    lua_concat(L, 3);
    return 1;
}

static void after(lua_State *L, int idx) {
    orch_flush_notices(L, idx);
    if (orch_interrupted()) orch_raise_interrupt(L);
}

/* conn:query(sql, ...) -> rows. Parameters $1..$n come from the extra
 * arguments; only a single statement is allowed (use exec for scripts). */
static int conn_query(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    const char **vals;
    int n;
    ResultBox *box;
    PGresult *r;
    orch_checkconn(L, 1);
    n = gather_params(L, 3, &vals);
    box = newbox(L);
    if (!PQsendQueryParams(c->pg, sql, n, NULL, vals, NULL, NULL, 0))
        orch_raise_pgerror(L, c->pg, NULL, sql);
    r = collect(L, c, box, sql);
    if (PQresultStatus(r) == PGRES_COPY_OUT || PQresultStatus(r) == PGRES_COPY_IN)
        return luaL_error(L, "query() cannot run COPY: use copy_out() or copy_in()");
    push_rows(L, r);
    PQclear(box->res);
    box->res = NULL;
    after(L, 1);
    return 1;
}

/* conn:value(sql, ...) -> the first column of the first row, or nil. */
static int conn_value(lua_State *L) {
    int top;
    conn_query(L);
    top = lua_gettop(L);
    if (lua_rawgeti(L, top, 1) != LUA_TTABLE) return 0;
    lua_getfield(L, top, "columns");
    lua_rawgeti(L, -1, 1);
    lua_rawget(L, top + 1);
    return 1;
}

/* conn:exec(script) -> status of the last command. Runs any number of
 * statements through the simple protocol (no parameters). */
static int conn_exec(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    ResultBox *box;
    PGresult *r;
    orch_checkconn(L, 1);
    box = newbox(L);
    if (!PQsendQuery(c->pg, sql)) orch_raise_pgerror(L, c->pg, NULL, sql);
    r = collect(L, c, box, sql);
    if (PQresultStatus(r) == PGRES_COPY_OUT || PQresultStatus(r) == PGRES_COPY_IN) {
        /* refuse politely and leave the connection usable */
        if (PQresultStatus(r) == PGRES_COPY_IN) PQputCopyEnd(c->pg, "COPY is not supported by exec()");
        else PQrequestCancel(c->pg);
        while ((r = PQgetResult(c->pg)) != NULL) {
            if (PQresultStatus(r) == PGRES_COPY_OUT) {
                char *buf;
                while (PQgetCopyData(c->pg, &buf, 0) > 0) PQfreemem(buf);
            }
            PQclear(r);
        }
        return luaL_error(L, "exec() cannot run COPY: use copy_out() or copy_in()");
    }
    lua_pushstring(L, PQcmdStatus(r));
    PQclear(box->res);
    box->res = NULL;
    after(L, 1);
    return 1;
}

static void simple(lua_State *L, Conn *c, const char *sql) {
    ResultBox *box = newbox(L);
    if (!PQsendQuery(c->pg, sql)) orch_raise_pgerror(L, c->pg, NULL, sql);
    collect(L, c, box, sql);
    PQclear(box->res);
    box->res = NULL;
    lua_pop(L, 1);
}

/* conn:tx(fn, ...) -> fn's results. BEGIN, call fn(conn, ...), COMMIT; on
 * error ROLLBACK and re-raise. Nested calls use savepoints. */
static int conn_tx(lua_State *L) {
    Conn *c = checkopen(L, 1);
    int depth, status, nargs = lua_gettop(L) - 2, top, i;
    char sql[64];
    luaL_checktype(L, 2, LUA_TFUNCTION);
    orch_checkconn(L, 1);
    depth = c->txdepth;
    if (depth == 0) simple(L, c, "BEGIN");
    else { snprintf(sql, sizeof sql, "SAVEPOINT orch_sp_%d", depth); simple(L, c, sql); }
    c->txdepth = depth + 1;
    top = lua_gettop(L);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    for (i = 3; i <= top; i++) lua_pushvalue(L, i);
    status = lua_pcall(L, nargs + 1, LUA_MULTRET, 0);
    c->txdepth = depth;
    if (status != LUA_OK) {
        if (c->pg && PQstatus(c->pg) == CONNECTION_OK && !c->in_copy) {
            if (depth == 0) snprintf(sql, sizeof sql, "ROLLBACK");
            else snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT orch_sp_%d; RELEASE SAVEPOINT orch_sp_%d", depth, depth);
            {
                PGresult *r;
                if (PQsendQuery(c->pg, sql)) {
                    while ((r = PQgetResult(c->pg)) != NULL) PQclear(r);
                }
            }
        }
        return lua_error(L);
    }
    if (!c->pg) return luaL_error(L, "connection closed inside tx()");
    if (depth == 0) simple(L, c, "COMMIT");
    else { snprintf(sql, sizeof sql, "RELEASE SAVEPOINT orch_sp_%d", depth); simple(L, c, sql); }
    after(L, 1);
    return lua_gettop(L) - top;
}

/* ---------------------------------------------------------------- COPY */

/* Abandon a COPY OUT in progress: cancel the statement and drain, so the
 * connection is usable afterwards (or clearly closed). */
static void copy_out_abort(Conn *c) {
    char errbuf[256], *buf;
    PGresult *r;
    int n;
    if (!c->pg) return;
    if (c->cancel) PQcancel(c->cancel, errbuf, sizeof errbuf);
    while ((n = PQgetCopyData(c->pg, &buf, 0)) > 0) PQfreemem(buf);
    while ((r = PQgetResult(c->pg)) != NULL) PQclear(r);
}

typedef struct Batch { char *buf; size_t len, cap; } Batch;

static int batch_gc(lua_State *L) {
    Batch *b = (Batch *)lua_touserdata(L, 1);
    free(b->buf);
    b->buf = NULL;
    return 0;
}

static int copy_count(PGresult *r) {
    const char *t = PQcmdTuples(r);
    return t && *t ? atoi(t) : 0;
}

/* conn:copy_out(sql [, sink]) -> rows. sink is a function called with
 * chunks of up to 64 KiB (whole rows), or an open io file written directly;
 * without a sink the whole output is returned as a second result. Memory
 * stays bounded with a sink. If the sink raises, the COPY is cancelled and
 * the connection stays usable. */
static int conn_copy_out(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    luaL_Stream *file = NULL;
    int sinktype = lua_type(L, 3), fnidx = 3;
    ResultBox *box;
    Batch *b;
    PGresult *r;
    char *row;
    int n, status = LUA_OK, rows;
    luaL_Buffer all;
    orch_checkconn(L, 1);
    if (sinktype == LUA_TUSERDATA) {
        file = (luaL_Stream *)luaL_checkudata(L, 3, LUA_FILEHANDLE);
        if (!file->closef) return luaL_error(L, "attempt to use a closed file");
    } else if (sinktype != LUA_TFUNCTION && sinktype != LUA_TNONE && sinktype != LUA_TNIL) {
        return luaL_argerror(L, 3, "function or file expected");
    }
    lua_settop(L, 3);
    b = (Batch *)lua_newuserdatauv(L, sizeof *b, 0);      /* 4 */
    memset(b, 0, sizeof *b);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    box = newbox(L);                                     /* 5 */
    if (sinktype == LUA_TNONE || sinktype == LUA_TNIL) luaL_buffinit(L, &all);
    if (!PQsendQuery(c->pg, sql)) orch_raise_pgerror(L, c->pg, NULL, sql);
    r = collect(L, c, box, sql);
    if (PQresultStatus(r) != PGRES_COPY_OUT) {
        return luaL_error(L, "copy_out() expects a COPY ... TO STDOUT statement");
    }
    orch_interrupt_set_cancel(c->cancel);
    while ((n = PQgetCopyData(c->pg, &row, 0)) > 0) {
        if (file) {
            size_t w = fwrite(row, 1, (size_t)n, file->f);
            PQfreemem(row);
            if (w != (size_t)n) {
                int e = errno;
                orch_interrupt_set_cancel(NULL);
                copy_out_abort(c);
                return luaL_error(L, "copy_out: write failed: %s", strerror(e));
            }
        } else if (sinktype == LUA_TFUNCTION) {
            if (b->len + (size_t)n > b->cap) {
                if (b->len > 0) {
                    lua_pushvalue(L, fnidx);
                    lua_pushlstring(L, b->buf, b->len);
                    b->len = 0;
                    status = lua_pcall(L, 1, 0, 0);
                    if (status != LUA_OK) { PQfreemem(row); break; }
                }
                if ((size_t)n > b->cap) {
                    size_t cap = (size_t)n > COPY_BATCH ? (size_t)n : COPY_BATCH;
                    char *nb = (char *)realloc(b->buf, cap);
                    if (!nb) { PQfreemem(row); lua_pushliteral(L, "out of memory"); status = LUA_ERRMEM; break; }
                    b->buf = nb;
                    b->cap = cap;
                }
            }
            memcpy(b->buf + b->len, row, (size_t)n);
            b->len += (size_t)n;
            PQfreemem(row);
        } else {
            luaL_addlstring(&all, row, (size_t)n);
            PQfreemem(row);
        }
        if (orch_interrupted()) break;
    }
    orch_interrupt_set_cancel(NULL);
    if (status != LUA_OK || (n > 0 && orch_interrupted())) {
        copy_out_abort(c);
        orch_flush_notices(L, 1);
        if (status != LUA_OK) return lua_error(L);
        return orch_raise_interrupt(L);
    }
    if (n == -2) orch_raise_pgerror(L, c->pg, NULL, sql);
    if (sinktype == LUA_TFUNCTION && b->len > 0) {
        lua_pushvalue(L, fnidx);
        lua_pushlstring(L, b->buf, b->len);
        b->len = 0;
        lua_call(L, 1, 0);   /* the COPY already ended: nothing to cancel */
    }
    r = collect(L, c, box, sql);
    rows = copy_count(r);
    if (file && fflush(file->f) != 0) return luaL_error(L, "copy_out: write failed: %s", strerror(errno));
    after(L, 1);
    if (sinktype == LUA_TNONE || sinktype == LUA_TNIL) {
        luaL_pushresult(&all);
        lua_pushinteger(L, rows);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushinteger(L, rows);
    return 1;
}

/* conn:copy_in_begin(sql): start COPY ... FROM STDIN; then copy_in_put(),
 * then copy_in_end(). Nothing else may run on the connection in between. */
static int conn_copy_in_begin(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *sql = luaL_checkstring(L, 2);
    ResultBox *box;
    PGresult *r;
    orch_checkconn(L, 1);
    box = newbox(L);
    if (!PQsendQuery(c->pg, sql)) orch_raise_pgerror(L, c->pg, NULL, sql);
    r = collect(L, c, box, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) return luaL_error(L, "copy_in expects a COPY ... FROM STDIN statement");
    PQclear(box->res);
    box->res = NULL;
    c->in_copy = 1;
    return 0;
}

/* conn:copy_in_put(data): send one chunk (any split of the data is fine). */
static int conn_copy_in_put(lua_State *L) {
    Conn *c = checkopen(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (!c->in_copy) return luaL_error(L, "copy_in_put() outside copy_in_begin()/copy_in_end()");
    if (len == 0) return 0;
    if (PQputCopyData(c->pg, data, (int)len) != 1) {
        c->in_copy = 0;
        return orch_raise_pgerror(L, c->pg, NULL, NULL);
    }
    if (orch_interrupted()) {
        PGresult *r;
        PQputCopyEnd(c->pg, "interrupted");
        c->in_copy = 0;
        while ((r = PQgetResult(c->pg)) != NULL) PQclear(r);
        return orch_raise_interrupt(L);
    }
    return 0;
}

/* conn:copy_in_end([errmsg]) -> rows. With errmsg the COPY is aborted
 * (the server rolls it back) and nothing is raised; rows is then nil. */
static int conn_copy_in_end(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *abort_msg = luaL_optstring(L, 2, NULL);
    ResultBox *box;
    PGresult *r, *err = NULL;
    int rows = 0;
    if (!c->in_copy) return luaL_error(L, "copy_in_end() without copy_in_begin()");
    c->in_copy = 0;
    box = newbox(L);
    orch_interrupt_set_cancel(c->cancel);
    if (PQputCopyEnd(c->pg, abort_msg) != 1) {
        orch_interrupt_set_cancel(NULL);
        return orch_raise_pgerror(L, c->pg, NULL, NULL);
    }
    while ((r = PQgetResult(c->pg)) != NULL) {
        if (PQresultStatus(r) == PGRES_FATAL_ERROR) { if (!err) err = r; else PQclear(r); }
        else { rows = copy_count(r); PQclear(r); }
    }
    orch_interrupt_set_cancel(NULL);
    (void)box;
    if (abort_msg) {
        if (err) PQclear(err);
        orch_flush_notices(L, 1);
        return 0;
    }
    if (err) orch_raise_pgerror(L, c->pg, err, NULL);
    after(L, 1);
    lua_pushinteger(L, rows);
    return 1;
}

/* conn:copy_in(sql, source) -> rows. source: a string, an open io file, or
 * a function returning chunks until nil. If the source raises, the COPY is
 * aborted (nothing is loaded), the connection stays usable, and the error
 * is re-raised. */
static int conn_copy_in(lua_State *L) {
    int st = lua_type(L, 3), status = LUA_OK;
    luaL_Stream *file = NULL;
    luaL_argexpected(L, st == LUA_TSTRING || st == LUA_TFUNCTION || st == LUA_TUSERDATA, 3,
                     "string, function or file");
    if (st == LUA_TUSERDATA) {
        file = (luaL_Stream *)luaL_checkudata(L, 3, LUA_FILEHANDLE);
        if (!file->closef) return luaL_error(L, "attempt to use a closed file");
    }
    lua_settop(L, 3);
    lua_pushcfunction(L, conn_copy_in_begin);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 0);
    if (st == LUA_TSTRING) {
        lua_pushcfunction(L, conn_copy_in_put);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 3);
        status = lua_pcall(L, 2, 0, 0);
    } else if (file) {
        char *buf = (char *)lua_newuserdatauv(L, COPY_BATCH, 0);
        size_t n;
        while ((n = fread(buf, 1, COPY_BATCH, file->f)) > 0) {
            lua_pushcfunction(L, conn_copy_in_put);
            lua_pushvalue(L, 1);
            lua_pushlstring(L, buf, n);
            if ((status = lua_pcall(L, 2, 0, 0)) != LUA_OK) break;
        }
        if (status == LUA_OK && ferror(file->f)) {
            lua_pushfstring(L, "copy_in: read failed: %s", strerror(errno));
            status = LUA_ERRRUN;
        }
    } else {
        for (;;) {
            lua_pushvalue(L, 3);
            if ((status = lua_pcall(L, 0, 1, 0)) != LUA_OK) break;
            if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pushfstring(L, "copy_in: source returned a %s (string or nil expected)", luaL_typename(L, -1));
                status = LUA_ERRRUN;
                break;
            }
            lua_pushcfunction(L, conn_copy_in_put);
            lua_pushvalue(L, 1);
            lua_rotate(L, -3, -1);             /* put, conn, chunk */
            if ((status = lua_pcall(L, 2, 0, 0)) != LUA_OK) break;
        }
    }
    if (status != LUA_OK) {
        Conn *c = toconn(L, 1);
        if (c->pg && c->in_copy) {
            lua_pushcfunction(L, conn_copy_in_end);
            lua_pushvalue(L, 1);
            lua_pushliteral(L, "aborted by orch: the data source failed");
            lua_call(L, 2, 0);
        }
        return lua_error(L);
    }
    lua_pushcfunction(L, conn_copy_in_end);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* conn:clone([overrides]) -> a new connection. Without overrides it is made
 * with the same arguments (a second session to the same database, e.g. to
 * hold an advisory lock). With a table of libpq keywords (e.g. {dbname =
 * "other"}) it is made from every parameter the live connection used, as
 * PQconninfo reports them (host, port, user, password, sslmode, options,
 * service, ...), with those keys replaced: another database on the same
 * server, reached exactly as this one was. The password never leaves C. */
static int conn_clone(lua_State *L) {
    Conn *c = checkopen(L, 1);
    PQconninfoOption *info, *o;
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_pushcfunction(L, db_connect);
        lua_getiuservalue(L, 1, 1);
        lua_getiuservalue(L, 1, 2);
        lua_call(L, 2, 1);
        return 1;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    info = PQconninfo(c->pg);
    if (!info) return luaL_error(L, "clone: out of memory");
    lua_pushcfunction(L, db_connect);           /* 3 */
    lua_createtable(L, 0, 16);                  /* 4: the parameters */
    for (o = info; o->keyword; o++) {
        if (!o->val || !*o->val) continue;
        if (!strcmp(o->keyword, "connect_timeout") || !strcmp(o->keyword, "fallback_application_name")) continue;
        lua_pushstring(L, o->val);
        lua_setfield(L, 4, o->keyword);
    }
    PQconninfoFree(info);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, 2, "override keys must be libpq keywords");
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, 4);
    }
    lua_getiuservalue(L, 1, 2);                 /* the original opts (timeout, application name) */
    lua_call(L, 2, 1);
    return 1;
}

/* conn:cancel(): ask the server to cancel the statement in flight. */
static int conn_cancel(lua_State *L) {
    Conn *c = checkopen(L, 1);
    char errbuf[256];
    lua_pushboolean(L, c->cancel && PQcancel(c->cancel, errbuf, sizeof errbuf));
    return 1;
}

/* conn:info() -> {host, port, dbname, user, server_version, server_version_num,
 * backend_pid, ssl, in_transaction}. */
static int conn_info(lua_State *L) {
    Conn *c = checkopen(L, 1);
    const char *v;
    lua_createtable(L, 0, 9);
    lua_pushstring(L, PQhost(c->pg)); lua_setfield(L, -2, "host");
    lua_pushstring(L, PQport(c->pg)); lua_setfield(L, -2, "port");
    lua_pushstring(L, PQdb(c->pg)); lua_setfield(L, -2, "dbname");
    lua_pushstring(L, PQuser(c->pg)); lua_setfield(L, -2, "user");
    v = PQparameterStatus(c->pg, "server_version");
    lua_pushstring(L, v ? v : ""); lua_setfield(L, -2, "server_version");
    lua_pushinteger(L, PQserverVersion(c->pg)); lua_setfield(L, -2, "server_version_num");
    lua_pushinteger(L, PQbackendPID(c->pg)); lua_setfield(L, -2, "backend_pid");
    lua_pushboolean(L, PQsslInUse(c->pg)); lua_setfield(L, -2, "ssl");
    lua_pushboolean(L, PQtransactionStatus(c->pg) != PQTRANS_IDLE); lua_setfield(L, -2, "in_transaction");
    lua_pushinteger(L, c->txdepth); lua_setfield(L, -2, "tx_depth");
    return 1;
}

static int escape(lua_State *L, int ident) {
    Conn *c = checkopen(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    char *e = ident ? PQescapeIdentifier(c->pg, s, len) : PQescapeLiteral(c->pg, s, len);
    if (!e) return luaL_error(L, "cannot escape: %s", PQerrorMessage(c->pg));
    lua_pushstring(L, e);
    PQfreemem(e);
    return 1;
}
static int conn_quote_ident(lua_State *L) { return escape(L, 1); }
static int conn_quote_literal(lua_State *L) { return escape(L, 0); }

/* db.on_notice(fn): fn(severity, message, conn) receives server notices. */
static int db_on_notice(lua_State *L) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "orch.db.notice");
    return 0;
}

/* db.is_error(v) -> true if v is an SQL/connection error object. */
static int db_is_error(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, ERROR_MT) != NULL ||
                       (lua_istable(L, 1) && lua_getmetatable(L, 1) &&
                        (luaL_getmetatable(L, ERROR_MT), lua_rawequal(L, -1, -2))));
    return 1;
}

/* db.error_mt(t) -> t with the SQL error metatable (used by Lua code that
 * enriches errors with file and line). */
static int db_as_error(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    set_error_mt(L);
    return 1;
}

/* db.lib_version() -> libpq version number. */
static int db_lib_version(lua_State *L) {
    lua_pushinteger(L, PQlibVersion());
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"query", conn_query}, {"value", conn_value}, {"exec", conn_exec}, {"tx", conn_tx},
    {"copy_out", conn_copy_out}, {"copy_in", conn_copy_in},
    {"copy_in_begin", conn_copy_in_begin}, {"copy_in_put", conn_copy_in_put},
    {"copy_in_end", conn_copy_in_end},
    {"cancel", conn_cancel}, {"info", conn_info}, {"clone", conn_clone}, {"close", conn_close},
    {"is_closed", conn_closed},
    {"quote_ident", conn_quote_ident}, {"quote_literal", conn_quote_literal},
    {NULL, NULL}
};

static const luaL_Reg db_funcs[] = {
    {"connect", db_connect}, {"on_notice", db_on_notice}, {"is_error", db_is_error},
    {"as_error", db_as_error}, {"lib_version", db_lib_version},
    {NULL, NULL}
};

int luaopen_orch_db(lua_State *L);
int luaopen_orch_db(lua_State *L) {
    luaL_newmetatable(L, RESULT_MT);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, CONN_MT);
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, conn_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_newtable(L);
    set_error_mt(L);
    lua_pop(L, 1);
    luaL_newlib(L, db_funcs);
    luaL_getmetatable(L, CONN_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "conn_methods");   /* so Lua code can add methods */
    lua_pop(L, 1);
    return 1;
}
