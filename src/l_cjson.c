/*
 * l_cjson.c -- orch.cjson: Debian's lua-cjson (its Lua 5.4 build, linked in
 * from liblua5.4-cjson.a) under orch's module name. orch.json is built on it
 * and adds what lua-cjson 2.1 lacks: sorted keys and indentation, exact
 * integers (lua-cjson reads every number as a double and prints 14 digits),
 * strict UTF-8.
 */
#include <lua.h>
#include <lua-cjson.h>

int luaopen_orch_cjson(lua_State *L);
int luaopen_orch_cjson(lua_State *L) { return luaopen_cjson(L); }
