/*
 * loader.c -- makes orch's library reachable through require: C modules go
 * into package.preload, Lua modules are found by a searcher placed right
 * after the preload one. The Lua sources are the copies compiled into the
 * binary, or, when ORCH_LUA_PATH names a directory holding orch/, the files
 * there (for development without rebuilding). Chunk names are "=orch/x.lua"
 * either way, so tracebacks name the real file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include "embedded.h"

void orch_open_library(lua_State *L);

/* "orch.a.b" -> "orch/a/b.lua" (or ".../init.lua" when init is set). */
static void module_path(luaL_Buffer *b, const char *name, int init) {
    for (; *name; name++) luaL_addchar(b, *name == '.' ? '/' : *name);
    luaL_addstring(b, init ? "/init.lua" : ".lua");
}

static const struct orch_embedded *find_embedded(const char *path) {
    const struct orch_embedded *e;
    for (e = orch_embedded_lua; e->name; e++)
        if (!strcmp(e->name, path)) return e;
    return NULL;
}

/* Load a file from disk as text under chunk name "=path"; pushes the chunk
 * or nothing. Returns 1 if found (raises on a syntax error). */
static int load_override(lua_State *L, const char *dir, const char *path) {
    char *buf;
    long n;
    FILE *f;
    const char *full = lua_pushfstring(L, "%s/%s", dir, path);
    f = fopen(full, "rb");
    lua_pop(L, 1);
    if (!f) return 0;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return luaL_error(L, "cannot read %s/%s", dir, path);
    }
    buf = lua_newuserdatauv(L, (size_t)n + 1, 0);   /* freed by the GC, even on error */
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        return luaL_error(L, "cannot read %s/%s", dir, path);
    }
    fclose(f);
    lua_pushfstring(L, "=%s", path);
    if (luaL_loadbufferx(L, buf, (size_t)n, lua_tostring(L, -1), "t") != LUA_OK)
        return lua_error(L);
    lua_replace(L, -3);
    lua_pop(L, 1);
    return 1;
}

static int searcher(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *over = getenv("ORCH_LUA_PATH");
    int init;
    if (strcmp(name, "orch") && strncmp(name, "orch.", 5)) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    for (init = 0; init < 2; init++) {
        luaL_Buffer b;
        const struct orch_embedded *e;
        luaL_buffinit(L, &b);
        module_path(&b, name, init);
        luaL_pushresult(&b);
        if (over && *over) {
            if (load_override(L, over, lua_tostring(L, -1))) {
                lua_insert(L, -2);   /* chunk, path */
                return 2;
            }
        } else if ((e = find_embedded(lua_tostring(L, -1))) != NULL) {
            lua_pushfstring(L, "=%s", e->name);
            if (luaL_loadbufferx(L, (const char *)e->data, e->len, lua_tostring(L, -1), "t") != LUA_OK)
                return lua_error(L);
            lua_pushstring(L, e->name);
            return 2;
        }
        lua_pop(L, 1);
    }
    lua_pushfstring(L, "no embedded module '%s'%s", name,
                    over && *over ? " (ORCH_LUA_PATH is set)" : "");
    return 1;
}

/* Return the embedded source of a library file ("orch/x.lua"), or nil. */
static int embedded_source(lua_State *L) {
    const struct orch_embedded *e = find_embedded(luaL_checkstring(L, 1));
    if (!e) return 0;
    lua_pushlstring(L, (const char *)e->data, e->len);
    return 1;
}

/* List embedded library files below a prefix ("orch/cmd/") -> array of paths. */
static int embedded_list(lua_State *L) {
    const char *prefix = luaL_optstring(L, 1, "");
    size_t plen = strlen(prefix);
    const struct orch_embedded *e;
    int n = 0;
    lua_newtable(L);
    for (e = orch_embedded_lua; e->name; e++)
        if (!strncmp(e->name, prefix, plen)) {
            lua_pushstring(L, e->name);
            lua_rawseti(L, -2, ++n);
        }
    return 1;
}

void orch_open_library(lua_State *L) {
    const struct orch_cmodule *m;
    int n;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    for (m = orch_cmodules; m->name; m++) {
        lua_pushcfunction(L, m->open);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "searchers");
    n = (int)luaL_len(L, -1);
    for (; n >= 2; n--) {               /* shift to make room at index 2 */
        lua_rawgeti(L, -1, n);
        lua_rawseti(L, -2, n + 1);
    }
    lua_pushcfunction(L, searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
    lua_pushcfunction(L, embedded_source);
    lua_setfield(L, -2, "orch_embedded_source");
    lua_pushcfunction(L, embedded_list);
    lua_setfield(L, -2, "orch_embedded_list");
    lua_pushstring(L, orch_version);
    lua_setfield(L, -2, "orch_version");
    lua_pop(L, 1);
}
