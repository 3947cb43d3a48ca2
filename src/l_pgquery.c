/*
 * l_pgquery.c -- orch.pgquery: PostgreSQL's own parser (libpg_query, the
 * server's grammar as a library) for the migration splitter and lint.
 *
 *   parse(sql)  -> tree (a Lua table decoded from libpg_query's JSON), or
 *                  nil, message, line, column, byte offset
 *   split(sql [, "scanner"]) -> { {pos = 1-based byte offset, len = bytes}, ... }
 *                  or nil, message, line, column, byte offset
 *   parse_json(sql) -> the JSON text itself (or the same nil, ... on error)
 *   version      -> the grammar's PostgreSQL version number (150001)
 *
 * The parse tree's JSON is turned into Lua tables here, in one pass (what a
 * rule reads is Lua; decoding 20 MB of JSON in Lua took half a minute). Lines are 1-based; columns are 1-based characters (UTF-8)
 * within the line, as an editor shows them. libpg_query reports its cursor
 * as a 1-based character position in the whole text; it is turned into a
 * byte offset, a line and a column here, where the bytes are.
 *
 * Text with a NUL byte is refused (the parser reads C strings): nil and a
 * message naming the offset. Misuse (a non-string argument) raises.
 */
#include <stdlib.h>
#include <string.h>
#include <pg_query.h>
#include <lua.h>
#include <lauxlib.h>

/* Where 1-based character position cpos falls in s: its 0-based byte offset,
 * 1-based line and 1-based column in characters. cpos <= 0 means the end. */
static void locate(const char *s, size_t len, int cpos, size_t *off, int *line, int *col) {
    size_t i = 0;
    int ch = 1, ln = 1, c = 1;
    if (cpos <= 0) cpos = 0x7fffffff;
    while (i < len && ch < cpos) {
        unsigned char b = (unsigned char)s[i];
        if (b == '\n') { ln++; c = 1; }
        else c++;
        i++;
        /* skip UTF-8 continuation bytes: one character, one column */
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
        ch++;
    }
    *off = i; *line = ln; *col = c;
}

/* Pushes nil, message, line, column, offset (1-based byte) for a parser
 * error; returns the number of values pushed. */
static int push_error(lua_State *L, const char *sql, size_t len, PgQueryError *e) {
    size_t off; int line, col;
    locate(sql, len, e->cursorpos, &off, &line, &col);
    lua_pushnil(L);
    lua_pushstring(L, e->message ? e->message : "syntax error");
    lua_pushinteger(L, line);
    lua_pushinteger(L, col);
    lua_pushinteger(L, (lua_Integer)off + 1);
    return 5;
}

/* The argument as a C string; a NUL inside is reported as a parser would. */
static const char *check_sql(lua_State *L, size_t *len, int *nret) {
    const char *sql = luaL_checklstring(L, 1, len);
    size_t n = strlen(sql);
    *nret = 0;
    if (n != *len) {
        int line = 1, col = 1;
        for (size_t i = 0; i < n; i++) {
            if (sql[i] == '\n') { line++; col = 1; }
            else if (((unsigned char)sql[i] & 0xC0) != 0x80) col++;
        }
        lua_pushnil(L);
        lua_pushliteral(L, "the text holds a NUL byte, which SQL cannot contain");
        lua_pushinteger(L, line);
        lua_pushinteger(L, col);
        lua_pushinteger(L, (lua_Integer)n + 1);
        *nret = 5;
        return NULL;
    }
    return sql;
}

/* parse_json(sql): the parse tree as libpg_query's JSON text. */
static int pq_parse_json(lua_State *L) {
    size_t len; int nret;
    const char *sql = check_sql(L, &len, &nret);
    if (!sql) return nret;
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error) {
        nret = push_error(L, sql, len, r.error);
        pg_query_free_parse_result(r);
        return nret;
    }
    lua_pushstring(L, r.parse_tree);   /* may raise on memory: copy first, then free */
    pg_query_free_parse_result(r);
    return 1;
}

/* ------------------------------------------------------------ JSON -> Lua
 * libpg_query's JSON turned into Lua tables right here: a parse tree is
 * about six times the size of its SQL, and decoding it in Lua took 28 s for
 * a 3.5 MB migration (this takes well under one). Objects become tables with
 * string keys, arrays tables with 1..n, strings/numbers/booleans their Lua
 * values, null nil. The text is libpg_query's own output: malformed input
 * raises (a bug, not a user error). */

typedef struct { const char *p, *end; lua_State *L; luaL_Buffer *b; int depth; } JP;

static void jp_fail(JP *j, const char *what) {
    luaL_error(j->L, "orch.pgquery: bad parse tree JSON at byte %d: %s", (int)(j->end - j->p), what);
}

static void jp_ws(JP *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')) j->p++;
}

static void jp_utf8(luaL_Buffer *b, unsigned long c) {
    if (c < 0x80) luaL_addchar(b, (char)c);
    else if (c < 0x800) { luaL_addchar(b, (char)(0xC0 | (c >> 6))); luaL_addchar(b, (char)(0x80 | (c & 0x3F))); }
    else if (c < 0x10000) {
        luaL_addchar(b, (char)(0xE0 | (c >> 12))); luaL_addchar(b, (char)(0x80 | ((c >> 6) & 0x3F)));
        luaL_addchar(b, (char)(0x80 | (c & 0x3F)));
    } else {
        luaL_addchar(b, (char)(0xF0 | (c >> 18))); luaL_addchar(b, (char)(0x80 | ((c >> 12) & 0x3F)));
        luaL_addchar(b, (char)(0x80 | ((c >> 6) & 0x3F))); luaL_addchar(b, (char)(0x80 | (c & 0x3F)));
    }
}

static unsigned long jp_hex4(JP *j) {
    unsigned long v = 0;
    if (j->end - j->p < 4) jp_fail(j, "short \\u escape");
    for (int i = 0; i < 4; i++) {
        char c = *j->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned long)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned long)(c - 'A' + 10);
        else jp_fail(j, "bad \\u escape");
    }
    return v;
}

/* Pushes the string starting after its opening quote. */
static void jp_string(JP *j) {
    const char *start = j->p;
    while (j->p < j->end && *j->p != '"' && *j->p != '\\') j->p++;
    if (j->p < j->end && *j->p == '"') {   /* no escapes: one copy */
        lua_pushlstring(j->L, start, (size_t)(j->p - start));
        j->p++;
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(j->L, &b);
    luaL_addlstring(&b, start, (size_t)(j->p - start));
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') { luaL_addchar(&b, c); continue; }
        if (j->p >= j->end) break;
        c = *j->p++;
        switch (c) {
        case 'n': luaL_addchar(&b, '\n'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'u': {
            unsigned long u = jp_hex4(j);
            if (u >= 0xD800 && u < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
                j->p += 2;
                unsigned long lo = jp_hex4(j);
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            jp_utf8(&b, u);
            break;
        }
        default: luaL_addchar(&b, c);   /* \" \\ \/ */
        }
    }
    if (j->p >= j->end) jp_fail(j, "unterminated string");
    j->p++;
    luaL_pushresult(&b);
}

static void jp_value(JP *j) {
    jp_ws(j);
    if (j->p >= j->end) jp_fail(j, "unexpected end");
    if (++j->depth > 10000) jp_fail(j, "nested too deeply");
    luaL_checkstack(j->L, 4, "parse tree too deep");
    char c = *j->p;
    if (c == '{') {
        j->p++;
        lua_newtable(j->L);
        jp_ws(j);
        if (j->p < j->end && *j->p == '}') { j->p++; j->depth--; return; }
        for (;;) {
            jp_ws(j);
            if (j->p >= j->end || *j->p != '"') jp_fail(j, "object key expected");
            j->p++;
            jp_string(j);
            jp_ws(j);
            if (j->p >= j->end || *j->p != ':') jp_fail(j, "':' expected");
            j->p++;
            jp_value(j);
            lua_rawset(j->L, -3);
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == '}') { j->p++; break; }
            jp_fail(j, "',' or '}' expected");
        }
    } else if (c == '[') {
        j->p++;
        lua_newtable(j->L);
        lua_Integer i = 0;
        jp_ws(j);
        if (j->p < j->end && *j->p == ']') { j->p++; j->depth--; return; }
        for (;;) {
            jp_value(j);
            lua_rawseti(j->L, -2, ++i);
            jp_ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == ']') { j->p++; break; }
            jp_fail(j, "',' or ']' expected");
        }
    } else if (c == '"') {
        j->p++;
        jp_string(j);
    } else if (c == 't' && j->end - j->p >= 4 && memcmp(j->p, "true", 4) == 0) {
        j->p += 4; lua_pushboolean(j->L, 1);
    } else if (c == 'f' && j->end - j->p >= 5 && memcmp(j->p, "false", 5) == 0) {
        j->p += 5; lua_pushboolean(j->L, 0);
    } else if (c == 'n' && j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0) {
        j->p += 4; lua_pushnil(j->L);
    } else {
        const char *start = j->p;
        while (j->p < j->end && strchr("+-0123456789.eE", *j->p)) j->p++;
        if (j->p == start) jp_fail(j, "value expected");
        lua_pushlstring(j->L, start, (size_t)(j->p - start));
        if (!lua_stringtonumber(j->L, lua_tostring(j->L, -1))) jp_fail(j, "bad number");
        lua_remove(j->L, -2);
    }
    j->depth--;
}

/* parse(sql): the parse tree as Lua tables. */
static int pq_parse(lua_State *L) {
    int n = pq_parse_json(L);
    if (n != 1) return n;
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    JP j = { text, text + len, L, NULL, 0 };
    jp_value(&j);
    return 1;
}

/* split(sql [, "scanner"|"parser"]): statements as byte ranges. The parser
 * (default) knows every construct of the grammar; the scanner only tokens,
 * which tolerates text that does not parse. */
static int pq_split(lua_State *L) {
    size_t len; int nret;
    static const char *const modes[] = {"parser", "scanner", NULL};
    const char *sql = check_sql(L, &len, &nret);
    if (!sql) return nret;
    int mode = luaL_checkoption(L, 2, "parser", modes);
    PgQuerySplitResult r = mode == 0 ? pg_query_split_with_parser(sql) : pg_query_split_with_scanner(sql);
    if (r.error) {
        nret = push_error(L, sql, len, r.error);
        pg_query_free_split_result(r);
        return nret;
    }
    /* copy the ranges out and free libpg_query's result before any Lua call
     * that could raise (only out of memory then leaks the small array) */
    int count = r.n_stmts;
    int *ranges = malloc(sizeof(int) * 2 * (size_t)(count > 0 ? count : 1));
    if (!ranges) {
        pg_query_free_split_result(r);
        return luaL_error(L, "out of memory splitting SQL");
    }
    for (int i = 0; i < count; i++) {
        ranges[2 * i] = r.stmts[i]->stmt_location;
        ranges[2 * i + 1] = r.stmts[i]->stmt_len;
    }
    pg_query_free_split_result(r);
    lua_createtable(L, count, 0);
    for (int i = 0; i < count; i++) {
        int loc = ranges[2 * i], l = ranges[2 * i + 1];
        if (l == 0 && (size_t)loc < len) l = (int)(len - (size_t)loc);   /* the last one: to the end */
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, loc + 1);
        lua_setfield(L, -2, "pos");
        lua_pushinteger(L, l);
        lua_setfield(L, -2, "len");
        lua_rawseti(L, -2, i + 1);
    }
    free(ranges);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"parse", pq_parse}, {"parse_json", pq_parse_json}, {"split", pq_split},
    {NULL, NULL}
};

int luaopen_orch_pgquery(lua_State *L);
int luaopen_orch_pgquery(lua_State *L) {
    luaL_newlib(L, funcs);
    lua_pushinteger(L, PG_VERSION_NUM);
    lua_setfield(L, -2, "version");
    return 1;
}
