/*
 * main.c -- the orch host: one Lua state, orch's library preloaded, and all
 * work done inside a single protected call (the lua.c pattern). This file is
 * the only place that prints an error and picks the exit code.
 *
 * Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted, or the
 * exit_code field of an error object / the number returned by orch.cli.main.
 */
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>
#include <unistd.h>
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#include "orch.h"
#include "embedded.h"

void orch_open_library(lua_State *L);   /* src/loader.c */

/* Message handler: keep the error value as it is, remember a traceback and
 * the innermost user-file frame ("recipes/x.lua:12") in the registry. */
static int msghandler(lua_State *L) {
    lua_Debug ar;
    int level;
    if (!lua_isstring(L, 1) && !luaL_getmetafield(L, 1, "__tostring") && !lua_istable(L, 1))
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1)), lua_replace(L, 1);
    else if (!lua_isstring(L, 1) && !lua_istable(L, 1))
        lua_pop(L, 1);
    luaL_traceback(L, L, NULL, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "orch.traceback");
    for (level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) continue;
        if (ar.source[0] == '@' && ar.currentline > 0) {   /* a file on disk, not orch's own */
            lua_pushfstring(L, "%s:%d", ar.short_src, ar.currentline);
            lua_setfield(L, LUA_REGISTRYINDEX, "orch.where");
            break;
        }
    }
    lua_settop(L, 1);
    return 1;
}

/* Does msg carry a position inside orch's own library ("orch/x.lua:12:")?
 * Then a traceback would help, and we say how to get one. */
static int internal_position(const char *msg) {
    const char *p = msg;
    while ((p = strstr(p, "orch/")) != NULL) {
        const char *q = p + 5;
        if (p == msg || p[-1] == ' ' || p[-1] == '\t') {
            while (*q && (isalnum((unsigned char)*q) || *q == '_' || *q == '/')) q++;
            if (!strncmp(q, ".lua:", 5) && isdigit((unsigned char)q[5])) return 1;
        }
        p += 5;
    }
    return 0;
}

/* Print the error at the top of the stack; return the exit code it asks for
 * (code_override when non-zero). The text comes from orch.cli.format_error
 * (plain, or one JSON object with --json); when that cannot run (orch.cli
 * failed to load), it is formatted here. */
static int report(lua_State *L, int verbose, int code_override) {
    int code = 1, base = lua_gettop(L);   /* the error is at base */
    const char *msg, *where;
    size_t wlen;
    if (lua_istable(L, -1)) {
        if (lua_getfield(L, -1, "exit_code") == LUA_TNUMBER) code = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (code_override) code = code_override;
    lua_getglobal(L, "package");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "loaded") == LUA_TTABLE &&
        lua_getfield(L, -1, "orch.cli") == LUA_TTABLE &&
        lua_getfield(L, -1, "format_error") == LUA_TFUNCTION) {
        lua_pushvalue(L, base);                                   /* the error */
        lua_pushinteger(L, code);
        lua_getfield(L, LUA_REGISTRYINDEX, "orch.where");
        lua_getfield(L, LUA_REGISTRYINDEX, "orch.traceback");
        if (lua_pcall(L, 4, 1, 0) == LUA_OK && lua_isstring(L, -1)) {
            fputs(lua_tostring(L, -1), stderr);
            lua_settop(L, base);
            return code;
        }
    }
    lua_settop(L, base);
    msg = luaL_tolstring(L, -1, NULL);
    lua_getfield(L, LUA_REGISTRYINDEX, "orch.where");
    where = lua_tolstring(L, -1, &wlen);
    if (code == 130)
        fprintf(stderr, "orch: %s\n", msg);
    else if (where && strncmp(msg, where, wlen) != 0)
        fprintf(stderr, "orch: %s: %s\n", where, msg);
    else
        fprintf(stderr, "orch: %s\n", msg);
    if (verbose) {
        lua_getfield(L, LUA_REGISTRYINDEX, "orch.traceback");
        if (lua_isstring(L, -1)) fprintf(stderr, "%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    } else if (code == 1 && internal_position(msg)) {
        fprintf(stderr, "orch: (run with --verbose for a traceback)\n");
    }
    lua_settop(L, base);
    return code;
}

/* The real work, called protected: build arg, then orch.cli.main(argv...). */
static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int i, nres;
    luaL_checkversion(L);
    luaL_openlibs(L);
    orch_open_library(L);
    /* arg as lua.c sets it once the script is known; orch.cli fixes the
     * indices when it finds the script. Here: arg[0] = "orch", arg[i] = argv[i]. */
    lua_createtable(L, argc, 1);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    orch_interrupt_install(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "orch.cli");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "main");
    luaL_checkstack(L, argc, "too many arguments");
    for (i = 1; i < argc; i++) lua_pushstring(L, argv[i]);
    lua_call(L, argc - 1, 1);
    nres = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    lua_pushinteger(L, nres);
    return 1;
}

int main(int argc, char **argv) {
    int status, code = 0, verbose = 0, i;
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "orch: cannot create Lua state: not enough memory\n");
        return 1;
    }
    /* orch works in the project root (orch.project), so a relative
     * ORCH_LUA_PATH must name the same directory from there */
    if (getenv("ORCH_LUA_PATH") && *getenv("ORCH_LUA_PATH") && getenv("ORCH_LUA_PATH")[0] != '/') {
        char *abs = realpath(getenv("ORCH_LUA_PATH"), NULL);
        if (abs) { setenv("ORCH_LUA_PATH", abs, 1); free(abs); }
    }
    /* for an error raised before orch.cli can format it: --verbose anywhere */
    for (i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) verbose = 1;
    if (getenv("ORCH_VERBOSE") && *getenv("ORCH_VERBOSE") && strcmp(getenv("ORCH_VERBOSE"), "0"))
        verbose = 1;
    lua_pushcfunction(L, msghandler);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    status = lua_pcall(L, 2, 1, 1);
    if (status != LUA_OK) {
        if (orch_interrupted() && !lua_istable(L, -1)) {
            lua_settop(L, 0);
            lua_pushliteral(L, "interrupted");
            code = report(L, verbose, 130);
        } else {
            code = report(L, verbose, 0);
        }
    } else {
        code = (int)lua_tointeger(L, -1);
    }
    fflush(stdout);
    lua_close(L);   /* runs __gc: connections closed, temp files removed */
    return code;
}
