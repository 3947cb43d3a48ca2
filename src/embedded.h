/* The Lua library and C module table compiled into the binary (see cmake/embed.cmake). */
#ifndef ORCH_EMBEDDED_H
#define ORCH_EMBEDDED_H
#include <stddef.h>
#include <lua.h>

struct orch_embedded {
    const char *name;            /* path below lua/, e.g. "orch/migrate.lua" */
    const unsigned char *data;
    size_t len;
};
struct orch_cmodule {
    const char *name;            /* "orch.db" */
    lua_CFunction open;
};
extern const struct orch_embedded orch_embedded_lua[];
extern const struct orch_cmodule orch_cmodules[];
extern const char orch_version[];
#endif
