/*
 * fuzz_pgarchive.c -- libFuzzer harness for orch.pgarchive's reader.
 *
 * Each input is written to a memfd and read through the module exactly as
 * orch uses it (A.open, header, entries, verify, read_block in reverse
 * order, sha256), once from the seekable file and once from a pipe. A fresh
 * Lua state per input, closed afterwards, so every byte the reader
 * allocated must be freed by then: LeakSanitizer reports anything left
 * (the zlib/lz4/zstd state of a corrupt archive included). Raised errors
 * are expected; crashes, leaks, sanitizer reports, timeouts and
 * allocations beyond -malloc_limit_mb are findings.
 *
 * Built by -DORCH_FUZZ=ON with clang; run by tests/fuzz/run.sh.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_orch_pgarchive(lua_State *L);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char SCRIPT[] =
    "local A, path = require 'orch.pgarchive', ...\n"
    "local function sink() end\n"
    "local ok, err = pcall(function()\n"
    "  local r <close> = A.open(path)\n"
    "  local h, ents = r:header(), r:entries()\n"
    "  assert(type(h.version) == 'string' and #ents >= 0)\n"
    "  pcall(r.verify, r)\n"
    "  for i = #ents, 1, -1 do\n"
    "    if ents[i].had_dumper then pcall(r.read_block, r, ents[i].id, sink) end\n"
    "  end\n"
    "  r:sha256()\n"
    "end)\n"
    "assert(ok or type(err) == 'string', 'a reader error must be a message')\n";

static void run(const char *path) {
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    luaL_requiref(L, "orch.pgarchive", luaopen_orch_pgarchive, 0);
    lua_pop(L, 1);
    if (luaL_loadbufferx(L, SCRIPT, sizeof SCRIPT - 1, "=fuzz", "t") != LUA_OK) abort();
    lua_pushstring(L, path);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        /* only the harness's own assertions get here: a finding */
        fprintf(stderr, "harness: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_close(L);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int mfd = -1;
    char path[64];
    int p[2];
    if (mfd < 0 && (mfd = memfd_create("archive", 0)) < 0) abort();
    if (ftruncate(mfd, 0) != 0 || (size && pwrite(mfd, data, size, 0) != (ssize_t)size)) abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
    run(path);
    /* the same bytes from a pipe: no seeking, no size (inputs are capped by
     * -max_len well below the pipe's capacity, so one write is enough) */
    if (pipe(p) != 0) abort();
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    if (size && write(p[1], data, size) != (ssize_t)size) abort();
    close(p[1]);
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
    run(path);
    close(p[0]);
    return 0;
}
