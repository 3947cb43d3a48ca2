/*
 * l_pgarchive.c -- orch.pgarchive: pg_dump's custom archive format (see
 * ../shared/formats/pgdump-custom-format.md), written and read by orch.
 *
 *   local A = require "orch.pgarchive"
 *   local w <close> = A.writer("x.dump", { level = -1, dbname = "app", server_version = "15.4" })
 *   w:entry { id = 1, tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = "SET client_encoding = 'UTF8';\n" }
 *   ... w:write_toc(); w:copy_table(conn, id, "COPY s.t (a) TO STDOUT"); w:close()
 *   local r <close> = A.open("x.dump"); for _, e in ipairs(r:entries()) do ... end
 *
 * Writes format 1.14 (what pg_restore 15, 16 and 17 read); reads 1.12-1.16.
 * Data blocks are one zlib stream each, compressed on worker threads
 * (pdeflate); a seekable output gets its TOC rewritten with the block
 * offsets at close, so pg_restore -j can seek. Nothing holds a whole table.
 */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <zlib.h>
#include <lua.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include "orch.h"
#include "pdeflate.h"
#include "sha256.h"

#define WRITER_MT "orch.pgarchive.writer"
#define READER_MT "orch.pgarchive.reader"
#define RAW_CHUNK (64 * 1024)

enum { OFF_NOT_SET = 1, OFF_SET = 2, OFF_NO_DATA = 3 };
enum { BLK_DATA = 1, BLK_BLOBS = 3 };

/* ================================================================ writer */

typedef struct Entry {
    int id, had_dumper, section;
    char *tableoid, *oid, *tag, *desc, *defn, *drop, *copy, *ns, *tablespace, *tableam, *owner;
    int *deps, ndeps;
    long long pos;          /* offset of the block's type byte, -1 = none yet */
} Entry;

typedef struct Writer {
    int fd, seekable, closed, level, threads;
    long long off;          /* bytes written so far = current position */
    long long toc_start;
    Entry *entries;
    int n, cap;
    int next_block;         /* index in entries of the next data entry expected */
    int in_block;
    PDeflate *pd;
    unsigned char *raw;     /* level 0: coalescing buffer */
    size_t rawlen;
    long long block_in, total_in;
    char *dbname, *server_version, *dumper_version;
    int err;                /* errno of the first write failure */
    char errmsg[256];
} Writer;

static int wfail(Writer *w, const char *what) {
    if (!w->errmsg[0]) snprintf(w->errmsg, sizeof w->errmsg, "%s: %s", what, strerror(w->err ? w->err : errno));
    return -1;
}

static int wwrite(Writer *w, const void *buf, size_t len) {
    const char *p = (const char *)buf;
    if (w->errmsg[0]) return -1;
    while (len > 0) {
        ssize_t k = write(w->fd, p, len);
        if (k < 0) {
            if (errno == EINTR) continue;
            w->err = errno;
            return wfail(w, "writing the archive failed");
        }
        p += k;
        len -= (size_t)k;
        w->off += k;
    }
    return 0;
}

/* Int: sign byte, then 4 magnitude bytes least significant first. */
static int put_int(Writer *w, long long v) {
    unsigned char b[5];
    unsigned long long m = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
    b[0] = v < 0 ? 1 : 0;
    b[1] = (unsigned char)(m & 0xff);
    b[2] = (unsigned char)((m >> 8) & 0xff);
    b[3] = (unsigned char)((m >> 16) & 0xff);
    b[4] = (unsigned char)((m >> 24) & 0xff);
    return wwrite(w, b, 5);
}

static int put_str(Writer *w, const char *s) {
    if (!s) return put_int(w, -1);
    size_t n = strlen(s);
    if (put_int(w, (long long)n)) return -1;
    return wwrite(w, s, n);
}

static int put_byte(Writer *w, int b) {
    unsigned char c = (unsigned char)b;
    return wwrite(w, &c, 1);
}

static int write_header(Writer *w) {
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    if (wwrite(w, "PGDMP", 5) || put_byte(w, 1) || put_byte(w, 14) || put_byte(w, 0) ||
        put_byte(w, 4) || put_byte(w, 8) || put_byte(w, 1) || put_int(w, w->level))
        return -1;
    if (put_int(w, tm.tm_sec) || put_int(w, tm.tm_min) || put_int(w, tm.tm_hour) || put_int(w, tm.tm_mday) ||
        put_int(w, tm.tm_mon) || put_int(w, tm.tm_year) || put_int(w, tm.tm_isdst))
        return -1;
    return put_str(w, w->dbname) || put_str(w, w->server_version) || put_str(w, w->dumper_version);
}

static int write_toc(Writer *w) {
    int i, j;
    char buf[32];
    if (put_int(w, w->n)) return -1;
    for (i = 0; i < w->n; i++) {
        Entry *e = &w->entries[i];
        unsigned char off[9];
        if (put_int(w, e->id) || put_int(w, e->had_dumper) || put_str(w, e->tableoid) || put_str(w, e->oid) ||
            put_str(w, e->tag) || put_str(w, e->desc) || put_int(w, e->section) || put_str(w, e->defn) ||
            put_str(w, e->drop) || put_str(w, e->copy) || put_str(w, e->ns) || put_str(w, e->tablespace) ||
            put_str(w, e->tableam) || put_str(w, e->owner) || put_str(w, "false"))
            return -1;
        for (j = 0; j < e->ndeps; j++) {
            snprintf(buf, sizeof buf, "%d", e->deps[j]);
            if (put_str(w, buf)) return -1;
        }
        if (put_str(w, NULL)) return -1;
        memset(off, 0, sizeof off);
        if (!e->had_dumper) off[0] = OFF_NO_DATA;
        else if (e->pos >= 0) {
            unsigned long long p = (unsigned long long)e->pos;
            off[0] = OFF_SET;
            for (j = 0; j < 8; j++) off[1 + j] = (unsigned char)((p >> (8 * j)) & 0xff);
        } else off[0] = OFF_NOT_SET;
        if (wwrite(w, off, 9)) return -1;
    }
    return 0;
}

static void free_entries(Writer *w) {
    int i;
    for (i = 0; i < w->n; i++) {
        Entry *e = &w->entries[i];
        free(e->tableoid); free(e->oid); free(e->tag); free(e->desc); free(e->defn); free(e->drop);
        free(e->copy); free(e->ns); free(e->tablespace); free(e->tableam); free(e->owner); free(e->deps);
    }
    free(w->entries);
    w->entries = NULL;
    w->n = w->cap = 0;
}

static int writer_release(Writer *w) {
    if (w->pd) { pdeflate_free(w->pd); w->pd = NULL; }
    free(w->raw); w->raw = NULL;
    free_entries(w);
    free(w->dbname); free(w->server_version); free(w->dumper_version);
    w->dbname = w->server_version = w->dumper_version = NULL;
    if (w->fd > 2) close(w->fd);
    w->fd = -1;
    w->closed = 1;
    return 0;
}

static Writer *checkwriter(lua_State *L) {
    Writer *w = (Writer *)luaL_checkudata(L, 1, WRITER_MT);
    if (w->closed) luaL_error(L, "attempt to use a closed archive writer");
    return w;
}

static char *dupfield(lua_State *L, int t, const char *k) {
    char *r = NULL;
    if (lua_getfield(L, t, k) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        r = (char *)malloc(n + 1);
        if (!r) luaL_error(L, "out of memory");
        memcpy(r, s, n + 1);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "entry field '%s' must be a string or nil", k);
    }
    lua_pop(L, 1);
    return r;
}

static int section_of(lua_State *L, int t) {
    int type = lua_getfield(L, t, "section"), s = 2;
    if (type == LUA_TNUMBER) s = (int)lua_tointeger(L, -1);
    else if (type == LUA_TSTRING) {
        const char *n = lua_tostring(L, -1);
        s = !strcmp(n, "none") ? 1 : !strcmp(n, "pre-data") ? 2 : !strcmp(n, "data") ? 3 : !strcmp(n, "post-data") ? 4 : 0;
    }
    lua_pop(L, 1);
    if (s < 1 || s > 4) luaL_error(L, "entry section must be none, pre-data, data or post-data");
    return s;
}

static int emit_chunk(void *ud, const unsigned char *buf, size_t len) {
    Writer *w = (Writer *)ud;
    if (len == 0) return 0;
    return put_int(w, (long long)len) || wwrite(w, buf, len) ? -1 : 0;
}

/* A.writer(path|"-", opts) -> writer. The file is created 0600 (never
 * over an existing one unless opts.overwrite). */
static int a_writer(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    Writer *w;
    int fd;
    struct stat st;
    lua_settop(L, 2);
    w = (Writer *)lua_newuserdatauv(L, sizeof *w, 0);
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->closed = 1;
    luaL_setmetatable(L, WRITER_MT);
    w->level = -1;
    w->threads = 2;
    if (lua_istable(L, 2)) {
        if (lua_getfield(L, 2, "level") == LUA_TNUMBER) w->level = (int)lua_tointeger(L, -1);
        if (lua_getfield(L, 2, "threads") == LUA_TNUMBER) w->threads = (int)lua_tointeger(L, -1);
        lua_pop(L, 2);
        w->dbname = dupfield(L, 2, "dbname");
        w->server_version = dupfield(L, 2, "server_version");
        w->dumper_version = dupfield(L, 2, "dumper_version");
    }
    if (w->level < -1 || w->level > 9) return luaL_error(L, "compression level must be -1 (default) or 0..9");
    if (w->threads < 1) w->threads = 1;
    if (!strcmp(path, "-")) {
        fd = 1;
    } else {
        int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_TRUNC, overwrite = 0;
        if (lua_istable(L, 2)) {
            lua_getfield(L, 2, "overwrite");
            overwrite = lua_toboolean(L, -1);
            lua_pop(L, 1);
        }
        if (!overwrite) flags |= O_EXCL;
        fd = open(path, flags, 0600);
        if (fd < 0) return luaL_error(L, "cannot create archive %s: %s", path, strerror(errno));
    }
    w->fd = fd;
    w->closed = 0;
    w->seekable = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(fd, 0, SEEK_CUR) >= 0;
    if (w->seekable) w->off = lseek(fd, 0, SEEK_CUR);
    if (w->level != 0) {
        w->pd = pdeflate_new(w->level, w->threads, 0, emit_chunk, w);
        if (!w->pd) return luaL_error(L, "cannot start the compression threads");
    } else {
        w->raw = (unsigned char *)malloc(RAW_CHUNK);
        if (!w->raw) return luaL_error(L, "out of memory");
    }
    return 1;
}

/* w:entry{...}: add a TOC entry (before write_toc). */
static int w_entry(lua_State *L) {
    Writer *w = checkwriter(L);
    Entry *e;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (w->toc_start || w->next_block) return luaL_error(L, "entries must be added before write_toc()");
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        Entry *ne = (Entry *)realloc(w->entries, sizeof(Entry) * (size_t)cap);
        if (!ne) return luaL_error(L, "out of memory");
        w->entries = ne;
        w->cap = cap;
    }
    e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    e->pos = -1;
    lua_getfield(L, 2, "id");
    e->id = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (e->id <= 0) return luaL_error(L, "entry id must be > 0");
    lua_getfield(L, 2, "had_dumper");
    e->had_dumper = lua_toboolean(L, -1);
    lua_pop(L, 1);
    e->section = section_of(L, 2);
    w->n++;   /* from here on, free_entries owns the strings */
    e->tableoid = dupfield(L, 2, "tableoid");
    e->oid = dupfield(L, 2, "oid");
    e->tag = dupfield(L, 2, "tag");
    e->desc = dupfield(L, 2, "desc");
    if (!e->tableoid) e->tableoid = strdup("0");
    if (!e->oid) e->oid = strdup("0");
    if (!e->tag || !e->desc) return luaL_error(L, "entry %d needs tag and desc", e->id);
    e->defn = dupfield(L, 2, "defn");
    e->drop = dupfield(L, 2, "drop");
    e->copy = dupfield(L, 2, "copy");
    e->ns = dupfield(L, 2, "namespace");
    e->tablespace = dupfield(L, 2, "tablespace");
    e->tableam = dupfield(L, 2, "tableam");
    e->owner = dupfield(L, 2, "owner");
    if (lua_getfield(L, 2, "deps") == LUA_TTABLE) {
        int n = (int)luaL_len(L, -1), i;
        if (n > 0) {
            e->deps = (int *)malloc(sizeof(int) * (size_t)n);
            if (!e->deps) return luaL_error(L, "out of memory");
            for (i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                e->deps[e->ndeps++] = (int)luaL_checkinteger(L, -1);
                lua_pop(L, 1);
            }
        }
    }
    lua_pop(L, 1);
    return 0;
}

static int raise_werr(lua_State *L, Writer *w) {
    return luaL_error(L, "%s", w->errmsg[0] ? w->errmsg : "archive write failed");
}

/* w:write_toc(): header and TOC (data offsets unset until close). */
static int w_write_toc(lua_State *L) {
    Writer *w = checkwriter(L);
    if (w->toc_start) return luaL_error(L, "write_toc() called twice");
    if (write_header(w)) return raise_werr(L, w);
    w->toc_start = w->off;
    if (write_toc(w)) return raise_werr(L, w);
    if (w->toc_start == 0) w->toc_start = 1;   /* mark written even at offset 0 */
    return 0;
}

static Entry *next_data_entry(Writer *w) {
    while (w->next_block < w->n && !w->entries[w->next_block].had_dumper) w->next_block++;
    return w->next_block < w->n ? &w->entries[w->next_block] : NULL;
}

static int flush_raw(Writer *w) {
    int r = 0;
    if (w->rawlen) r = emit_chunk(w, w->raw, w->rawlen);
    w->rawlen = 0;
    return r;
}

static int block_write(Writer *w, const char *data, size_t len) {
    w->block_in += (long long)len;
    w->total_in += (long long)len;
    if (w->pd) {
        if (pdeflate_write(w->pd, data, len)) {
            if (!w->errmsg[0]) snprintf(w->errmsg, sizeof w->errmsg, "%s", pdeflate_errmsg(w->pd));
            return -1;
        }
        return 0;
    }
    while (len > 0) {
        size_t n = RAW_CHUNK - w->rawlen;
        if (n > len) n = len;
        memcpy(w->raw + w->rawlen, data, n);
        w->rawlen += n;
        data += n;
        len -= n;
        if (w->rawlen == RAW_CHUNK && flush_raw(w)) return -1;
    }
    return 0;
}

/* w:begin_block(id): start the data block of entry id (TOC order). */
static int w_begin_block(lua_State *L) {
    Writer *w = checkwriter(L);
    int id = (int)luaL_checkinteger(L, 2);
    Entry *e;
    if (!w->toc_start) return luaL_error(L, "write_toc() must come before data blocks");
    if (w->in_block) return luaL_error(L, "a data block is already open");
    e = next_data_entry(w);
    if (!e) return luaL_error(L, "no more data entries in the TOC (got block %d)", id);
    if (e->id != id)
        return luaL_error(L, "data blocks must follow TOC order: expected entry %d (%s), got %d", e->id, e->tag, id);
    e->pos = w->off;
    if (put_byte(w, BLK_DATA) || put_int(w, id)) return raise_werr(L, w);
    w->in_block = 1;
    w->block_in = 0;
    return 0;
}

/* w:write(data): append to the open block. */
static int w_write(lua_State *L) {
    Writer *w = checkwriter(L);
    size_t len;
    const char *d = luaL_checklstring(L, 2, &len);
    if (!w->in_block) return luaL_error(L, "write() outside a data block");
    if (len && block_write(w, d, len)) return raise_werr(L, w);
    return 0;
}

/* w:end_block() -> uncompressed bytes of the block. */
static int w_end_block(lua_State *L) {
    Writer *w = checkwriter(L);
    if (!w->in_block) return luaL_error(L, "end_block() without begin_block()");
    if (w->pd ? pdeflate_finish(w->pd) : flush_raw(w)) {
        if (w->pd && !w->errmsg[0]) snprintf(w->errmsg, sizeof w->errmsg, "%s", pdeflate_errmsg(w->pd));
        return raise_werr(L, w);
    }
    if (put_int(w, 0)) return raise_werr(L, w);
    w->in_block = 0;
    w->next_block++;
    lua_pushinteger(L, w->block_in);
    return 1;
}

/* w:copy_table(conn, id, "COPY ... TO STDOUT" [, progress]) -> rows, bytes.
 * Streams the COPY output into block id with bounded memory; the block ends
 * with the "\.\n\n\n" trailer pg_dump writes. progress(rows, bytes_in,
 * bytes_out) is called every 4 MiB of data (its errors are ignored). */
static int w_copy_table(lua_State *L) {
    Writer *w = checkwriter(L);
    PGconn *pg = orch_checkconn(L, 2);
    int id = (int)luaL_checkinteger(L, 3);
    const char *sql = luaL_checkstring(L, 4);
    int has_progress = lua_isfunction(L, 5);
    long long next_report = 4 << 20;
    PGresult *r;
    char *row;
    int n, failed = 0;
    long long rows = 0;
    lua_settop(L, 5);
    lua_pushcfunction(L, w_begin_block);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, id);
    lua_call(L, 2, 0);
    if (!PQsendQuery(pg, sql)) return orch_raise_pgerror(L, pg, NULL, sql);
    r = PQgetResult(pg);
    if (!r || PQresultStatus(r) != PGRES_COPY_OUT) {
        PGresult *more;
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        return orch_raise_pgerror(L, pg, r, sql);
    }
    PQclear(r);
    while ((n = PQgetCopyData(pg, &row, 0)) > 0) {
        if (!failed && block_write(w, row, (size_t)n)) failed = 1;
        PQfreemem(row);
        rows++;
        if (failed || orch_interrupted()) break;
        if (has_progress && w->block_in >= next_report) {
            next_report = w->block_in + (4 << 20);
            lua_pushvalue(L, 5);
            lua_pushinteger(L, rows);
            lua_pushinteger(L, w->total_in);
            lua_pushinteger(L, w->off);
            if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
        }
    }
    if (n > 0) {                 /* stopped early: cancel and drain so the connection stays usable */
        char errbuf[256];
        PGcancel *c = PQgetCancel(pg);
        if (c) { PQcancel(c, errbuf, sizeof errbuf); PQfreeCancel(c); }
        while (PQgetCopyData(pg, &row, 0) > 0) PQfreemem(row);
    }
    r = PQgetResult(pg);
    {
        PGresult *more;
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        if (failed) { if (r) PQclear(r); return raise_werr(L, w); }
        if (orch_interrupted()) { if (r) PQclear(r); return orch_raise_interrupt(L); }
        if (st != PGRES_COMMAND_OK) return orch_raise_pgerror(L, pg, r, sql);
        PQclear(r);
    }
    if (block_write(w, "\\.\n\n\n", 5)) return raise_werr(L, w);
    lua_pushcfunction(L, w_end_block);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_pushinteger(L, rows);
    lua_insert(L, -2);
    return 2;
}

/* w:close() -> {bytes=, uncompressed=, offsets=bool}. Seekable outputs get
 * the TOC rewritten with the block positions, then fsync. */
static int w_close(lua_State *L) {
    Writer *w = checkwriter(L);
    long long end = w->off;
    int offsets = 0;
    if (w->in_block) return luaL_error(L, "close() with a data block still open");
    if (next_data_entry(w)) {
        Entry *e = next_data_entry(w);
        return luaL_error(L, "close(): the data block of entry %d (%s %s) was never written", e->id, e->desc, e->tag);
    }
    if (w->seekable && w->toc_start) {
        if (lseek(w->fd, w->toc_start, SEEK_SET) < 0) { w->err = errno; wfail(w, "seeking in the archive failed"); return raise_werr(L, w); }
        w->off = w->toc_start;
        if (write_toc(w)) return raise_werr(L, w);
        offsets = 1;
        w->off = end;
        if (fsync(w->fd) != 0) { w->err = errno; wfail(w, "fsync of the archive failed"); return raise_werr(L, w); }
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, end); lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, w->total_in); lua_setfield(L, -2, "uncompressed");
    lua_pushboolean(L, offsets); lua_setfield(L, -2, "offsets");
    writer_release(w);
    return 1;
}

static int w_gc(lua_State *L) {
    Writer *w = (Writer *)luaL_checkudata(L, 1, WRITER_MT);
    if (!w->closed) writer_release(w);
    return 0;
}

static int w_progress(lua_State *L) {
    Writer *w = checkwriter(L);
    lua_pushinteger(L, w->off);
    lua_pushinteger(L, w->total_in);
    return 2;
}

/* ================================================================ reader */

typedef struct REntry {
    int id, had_dumper, section, relkind, offflag;
    long long pos;
    int *deps, ndeps;
} REntry;

typedef struct Reader {
    FILE *f;
    int closed, seekable, vmaj, vmin, vrev, intsize, offsize, level, algorithm;
    long long data_start, cur;   /* cur: our idea of the position (stream reads) */
    REntry *e;
    int n;
    int strs_ref;                /* registry ref of the entries table (Lua strings) */
    char path[512];
    Sha256 sha;                  /* SHA-256 of the bytes read so far, while reads are contiguous */
    long long hashed;            /* bytes 0..hashed-1 are (queued to be) in sha */
    long long size;              /* file size, -1 for a pipe */
    /* the hashing runs on a thread of its own, fed through a small ring of buffers */
    pthread_t hth;
    pthread_mutex_t hmu;
    pthread_cond_t hcv;
    unsigned char *ring[4];
    size_t ringlen[4];
    int rhead, rcount, hstarted, hstop;
} Reader;

#define HASH_SLOT (64 * 1024)

static void *hash_worker(void *arg) {
    Reader *r = (Reader *)arg;
    pthread_mutex_lock(&r->hmu);
    for (;;) {
        while (r->rcount == 0 && !r->hstop) pthread_cond_wait(&r->hcv, &r->hmu);
        if (r->rcount == 0 && r->hstop) break;
        int slot = r->rhead;
        pthread_mutex_unlock(&r->hmu);
        sha256_update(&r->sha, r->ring[slot], r->ringlen[slot]);
        pthread_mutex_lock(&r->hmu);
        r->rhead = (r->rhead + 1) % 4;
        r->rcount--;
        pthread_cond_broadcast(&r->hcv);
    }
    pthread_mutex_unlock(&r->hmu);
    return NULL;
}

/* Queue bytes for the hash thread (blocks while the ring is full). */
static void hash_feed(Reader *r, const unsigned char *p, size_t n) {
    while (n > 0) {
        size_t k = n > HASH_SLOT ? HASH_SLOT : n;
        int slot;
        pthread_mutex_lock(&r->hmu);
        while (r->rcount == 4) pthread_cond_wait(&r->hcv, &r->hmu);
        slot = (r->rhead + r->rcount) % 4;
        pthread_mutex_unlock(&r->hmu);
        memcpy(r->ring[slot], p, k);
        r->ringlen[slot] = k;
        pthread_mutex_lock(&r->hmu);
        r->rcount++;
        pthread_cond_broadcast(&r->hcv);
        pthread_mutex_unlock(&r->hmu);
        p += k;
        n -= k;
    }
}

/* Wait until the hash thread has consumed everything queued. */
static void hash_drain(Reader *r) {
    if (!r->hstarted) return;
    pthread_mutex_lock(&r->hmu);
    while (r->rcount > 0) pthread_cond_wait(&r->hcv, &r->hmu);
    pthread_mutex_unlock(&r->hmu);
}

static void hash_stop(Reader *r) {
    int i;
    if (r->hstarted) {
        pthread_mutex_lock(&r->hmu);
        r->hstop = 1;
        pthread_cond_broadcast(&r->hcv);
        pthread_mutex_unlock(&r->hmu);
        pthread_join(r->hth, NULL);
        pthread_mutex_destroy(&r->hmu);
        pthread_cond_destroy(&r->hcv);
        r->hstarted = 0;
    }
    for (i = 0; i < 4; i++) { free(r->ring[i]); r->ring[i] = NULL; }
}

/* Feed bytes just read at position pos into the running hash if they
 * continue it; a jump forward leaves a gap and the hash is given up. */
static void rhash(Reader *r, const void *buf, size_t n, long long pos) {
    if (r->hashed < 0 || !r->hstarted) return;
    if (pos == r->hashed) {
        hash_feed(r, (const unsigned char *)buf, n);
        r->hashed += (long long)n;
    } else if (pos > r->hashed) {
        r->hashed = -1;
    } else if (pos + (long long)n > r->hashed) {
        size_t skip = (size_t)(r->hashed - pos);
        hash_feed(r, (const unsigned char *)buf + skip, n - skip);
        r->hashed = pos + (long long)n;
    }
}

static int rfail(lua_State *L, Reader *r, const char *fmt, ...) {
    va_list ap;
    char msg[400];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a user-facing fact about the file, not a program error: no Lua position */
    lua_pushfstring(L, "%s: %s", r->path, msg);
    return lua_error(L);
}

static void rread(lua_State *L, Reader *r, void *buf, size_t n, const char *what) {
    if (n && fread(buf, 1, n, r->f) != n) {
        if (ferror(r->f)) rfail(L, r, "read error while reading %s: %s", what, strerror(errno));
        rfail(L, r, "archive is truncated: unexpected end of file while reading %s", what);
    }
    rhash(r, buf, n, r->cur);
    r->cur += (long long)n;
}

static long long get_int(lua_State *L, Reader *r, const char *what) {
    unsigned char b[32];
    long long v = 0;
    int i;
    rread(L, r, b, (size_t)r->intsize + 1, what);
    for (i = r->intsize; i >= 1; i--) v = (v << 8) | b[i];
    if (v > 0x7fffffffLL) rfail(L, r, "bad integer in %s", what);
    return b[0] ? -v : v;
}

/* Read a Str onto the Lua stack (nil for NULL). Lengths are bounded. */
static void get_str(lua_State *L, Reader *r, const char *what) {
    long long n = get_int(L, r, what);
    if (n < 0) { lua_pushnil(L); return; }
    if (n > 256 * 1024 * 1024) rfail(L, r, "implausible string length %lld in %s", n, what);
    {
        luaL_Buffer b;
        char *p = luaL_buffinitsize(L, &b, (size_t)n);
        rread(L, r, p, (size_t)n, what);
        luaL_pushresultsize(&b, (size_t)n);
    }
}

static Reader *checkreader(lua_State *L) {
    Reader *r = (Reader *)luaL_checkudata(L, 1, READER_MT);
    if (r->closed) luaL_error(L, "attempt to use a closed archive");
    return r;
}

static int r_close(lua_State *L) {
    Reader *r = (Reader *)luaL_checkudata(L, 1, READER_MT);
    if (!r->closed) {
        int i;
        hash_stop(r);
        if (r->f && r->f != stdin) fclose(r->f);
        r->f = NULL;
        for (i = 0; i < r->n; i++) free(r->e[i].deps);
        free(r->e);
        r->e = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, r->strs_ref);
        r->closed = 1;
    }
    return 0;
}

static const char *section_name(int s) {
    return s == 1 ? "none" : s == 2 ? "pre-data" : s == 3 ? "data" : s == 4 ? "post-data" : "unknown";
}

/* A.open(path|"-") -> reader. Reads and checks the header and the TOC. */
static int a_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    Reader *r = (Reader *)lua_newuserdatauv(L, sizeof *r, 0);
    unsigned char magic[5], hb[6];
    int i, count, ents;
    memset(r, 0, sizeof *r);
    r->closed = 1;
    r->strs_ref = LUA_NOREF;
    luaL_setmetatable(L, READER_MT);
    snprintf(r->path, sizeof r->path, "%s", strcmp(path, "-") ? path : "(standard input)");
    r->f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!r->f) {
        lua_pushfstring(L, "cannot open archive %s: %s", path, strerror(errno));
        return lua_error(L);
    }
    r->closed = 0;
    r->seekable = r->f != stdin && ftello(r->f) >= 0 && fseeko(r->f, 0, SEEK_CUR) == 0;
    r->intsize = 4;
    sha256_init(&r->sha);
    {
        struct stat st;
        int k, ok = 1;
        r->size = r->f != stdin && fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
        for (k = 0; k < 4; k++) if (!(r->ring[k] = (unsigned char *)malloc(HASH_SLOT))) ok = 0;
        if (ok && r->size >= 0) {
            pthread_mutex_init(&r->hmu, NULL);
            pthread_cond_init(&r->hcv, NULL);
            r->hstarted = pthread_create(&r->hth, NULL, hash_worker, r) == 0;
            if (!r->hstarted) { pthread_mutex_destroy(&r->hmu); pthread_cond_destroy(&r->hcv); }
        }
        if (!r->hstarted) r->hashed = -1;
    }
    if (fread(magic, 1, 5, r->f) != 5 || memcmp(magic, "PGDMP", 5) != 0)
        return rfail(L, r, "not a pg_dump custom-format archive (no PGDMP signature)");
    rhash(r, magic, 5, 0);
    r->cur = 5;
    rread(L, r, hb, 6, "the header");
    r->vmaj = hb[0]; r->vmin = hb[1]; r->vrev = hb[2]; r->intsize = hb[3]; r->offsize = hb[4];
    if (r->vmaj != 1 || r->vmin < 12 || r->vmin > 16)
        return rfail(L, r, "unsupported archive version %d.%d (orch reads 1.12 to 1.16)", r->vmaj, r->vmin);
    if (r->intsize < 1 || r->intsize > 8 || r->offsize < 1 || r->offsize > 16)
        return rfail(L, r, "bad integer/offset sizes %d/%d in the header", r->intsize, r->offsize);
    if (hb[5] != 1) return rfail(L, r, "archive format %d is not the custom format (1)", hb[5]);
    if (r->vmin >= 15) {
        unsigned char a;
        rread(L, r, &a, 1, "the compression algorithm");
        r->algorithm = a;
        r->level = a == 0 ? 0 : -1;
    } else {
        r->level = (int)get_int(L, r, "the compression level");
        r->algorithm = r->level == 0 ? 0 : 1;
    }
    lua_createtable(L, 0, 12);        /* header table, kept with the entries */
    for (i = 0; i < 7; i++) (void)get_int(L, r, "the creation date");
    get_str(L, r, "the database name"); lua_setfield(L, -2, "dbname");
    get_str(L, r, "the server version"); lua_setfield(L, -2, "server_version");
    get_str(L, r, "the pg_dump version"); lua_setfield(L, -2, "dumper_version");
    lua_pushfstring(L, "%d.%d", r->vmaj, r->vmin); lua_setfield(L, -2, "version");
    lua_pushinteger(L, r->level); lua_setfield(L, -2, "level");
    lua_pushstring(L, r->algorithm == 0 ? "none" : r->algorithm == 1 ? "gzip" : r->algorithm == 2 ? "lz4" : r->algorithm == 3 ? "zstd" : "unknown");
    lua_setfield(L, -2, "compression");
    count = (int)get_int(L, r, "the TOC count");
    if (count < 0 || count > 10000000) return rfail(L, r, "implausible TOC entry count %d", count);
    r->e = (REntry *)calloc((size_t)(count ? count : 1), sizeof(REntry));
    if (!r->e) return luaL_error(L, "out of memory");
    lua_createtable(L, count, 0);     /* entries */
    ents = lua_gettop(L);
    for (i = 0; i < count; i++) {
        REntry *e = &r->e[i];
        char what[64];
        int j, cap = 0;
        r->n = i + 1;
        snprintf(what, sizeof what, "TOC entry %d", i + 1);
        lua_createtable(L, 0, 18);
        e->id = (int)get_int(L, r, what);
        if (e->id <= 0) return rfail(L, r, "%s has a bad dump id %d", what, e->id);
        e->had_dumper = (int)get_int(L, r, what);
        lua_pushinteger(L, e->id); lua_setfield(L, -2, "id");
        lua_pushboolean(L, e->had_dumper); lua_setfield(L, -2, "had_dumper");
        get_str(L, r, what); lua_setfield(L, -2, "tableoid");
        get_str(L, r, what); lua_setfield(L, -2, "oid");
        get_str(L, r, what); lua_setfield(L, -2, "tag");
        get_str(L, r, what); lua_setfield(L, -2, "desc");
        e->section = (int)get_int(L, r, what);
        lua_pushstring(L, section_name(e->section)); lua_setfield(L, -2, "section");
        get_str(L, r, what); lua_setfield(L, -2, "defn");
        get_str(L, r, what); lua_setfield(L, -2, "drop");
        get_str(L, r, what); lua_setfield(L, -2, "copy");
        get_str(L, r, what); lua_setfield(L, -2, "namespace");
        get_str(L, r, what); lua_setfield(L, -2, "tablespace");
        get_str(L, r, what); lua_setfield(L, -2, "tableam");
        if (r->vmin >= 16) { e->relkind = (int)get_int(L, r, what); lua_pushinteger(L, e->relkind); lua_setfield(L, -2, "relkind"); }
        get_str(L, r, what); lua_setfield(L, -2, "owner");
        get_str(L, r, what); lua_pop(L, 1);        /* WITH OIDS */
        lua_newtable(L);
        for (j = 1;; j++) {
            get_str(L, r, what);
            if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
            if (e->ndeps == cap) {
                int nc = cap ? cap * 2 : 4;
                int *nd = (int *)realloc(e->deps, sizeof(int) * (size_t)nc);
                if (!nd) return luaL_error(L, "out of memory");
                e->deps = nd;
                cap = nc;
            }
            e->deps[e->ndeps++] = atoi(lua_tostring(L, -1));
            lua_pushinteger(L, atoi(lua_tostring(L, -1)));
            lua_rawseti(L, -3, j);
            lua_pop(L, 1);
        }
        lua_setfield(L, -2, "deps");
        {
            unsigned char off[17];
            unsigned long long p = 0;
            int k;
            rread(L, r, off, (size_t)r->offsize + 1, what);
            e->offflag = off[0];
            if (e->offflag < 1 || e->offflag > 3) return rfail(L, r, "%s has an unexpected data offset flag %d", what, e->offflag);
            for (k = r->offsize; k >= 1; k--) p = (p << 8) | off[k];
            e->pos = e->offflag == OFF_SET ? (long long)p : -1;
        }
        lua_rawseti(L, ents, i + 1);
    }
    r->data_start = r->cur;
    lua_pushvalue(L, ents);
    lua_setfield(L, -3, "entries");   /* header.entries = entries */
    lua_pop(L, 1);
    r->strs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int r_header(lua_State *L) {
    Reader *r = checkreader(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->strs_ref);
    return 1;
}

static int r_entries(lua_State *L) {
    Reader *r = checkreader(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->strs_ref);
    lua_getfield(L, -1, "entries");
    return 1;
}

static REntry *find_entry(Reader *r, int id) {
    int i;
    for (i = 0; i < r->n; i++) if (r->e[i].id == id) return &r->e[i];
    return NULL;
}

/* Skip the chunks of the block we are in (after its header). */
static void skip_chunks(lua_State *L, Reader *r, int id) {
    char buf[65536];
    for (;;) {
        long long len = get_int(L, r, "a data chunk length");
        if (len == 0) return;
        if (len < 0) rfail(L, r, "bad chunk length in the block of entry %d", id);
        if (r->seekable) {
            if (fseeko(r->f, len, SEEK_CUR) != 0) rfail(L, r, "cannot seek: %s", strerror(errno));
            r->cur += len;
        } else {
            while (len > 0) {
                size_t k = len > (long long)sizeof buf ? sizeof buf : (size_t)len;
                rread(L, r, buf, k, "skipped data");
                len -= (long long)k;
            }
        }
    }
}

typedef int (*sink_fn)(lua_State *L, void *ud, const char *buf, size_t len);

/* Position at the block of entry id and stream its decompressed bytes to
 * sink. Verifies the zlib stream ends exactly at the block's end. */
static long long read_block(lua_State *L, Reader *r, int id, sink_fn sink, void *ud) {
    REntry *e = find_entry(r, id);
    unsigned char type;
    long long total = 0;
    z_stream zs;
    int zinit = 0, zdone = 0;
    unsigned char in[65536];
    unsigned char out[65536];
    if (!e) rfail(L, r, "no TOC entry with dump id %d", id);
    if (!e->had_dumper) rfail(L, r, "entry %d has no data block", id);
    if (r->algorithm > 1)
        rfail(L, r, "archive uses %s compression, which orch cannot read (it reads none and gzip); "
                    "re-create it with pg_dump -Z gzip or -Z 0", r->algorithm == 2 ? "lz4" : "zstd");
    if (r->seekable && e->pos >= 0) {
        if (fseeko(r->f, e->pos, SEEK_SET) != 0) rfail(L, r, "cannot seek to the block of entry %d", id);
        r->cur = e->pos;
    } else if (r->seekable && r->cur < r->data_start) {
        fseeko(r->f, r->data_start, SEEK_SET);
        r->cur = r->data_start;
    }
    for (;;) {                        /* walk blocks until ours */
        int bid;
        if (fread(&type, 1, 1, r->f) != 1)
            rfail(L, r, "could not find the data block of entry %d: the archive ends first (truncated, or blocks out of order on a pipe)", id);
        rhash(r, &type, 1, r->cur);
        r->cur++;
        if (type != BLK_DATA && type != BLK_BLOBS) rfail(L, r, "unknown data block type %d (corrupt archive)", type);
        bid = (int)get_int(L, r, "a block id");
        if (bid == id && type == BLK_DATA) break;
        if (r->seekable && e->pos >= 0) rfail(L, r, "found block %d where the TOC says block %d is (corrupt archive)", bid, id);
        if (type == BLK_BLOBS) {
            for (;;) { long long oid = get_int(L, r, "a large object id"); if (oid == 0) break; skip_chunks(L, r, bid); }
        } else skip_chunks(L, r, bid);
    }
    if (r->level != 0) {
        memset(&zs, 0, sizeof zs);
        if (inflateInit(&zs) != Z_OK) rfail(L, r, "zlib init failed");
        zinit = 1;
    }
    for (;;) {
        long long len = get_int(L, r, "a data chunk length");
        if (len == 0) break;
        if (len < 0) { if (zinit) inflateEnd(&zs); rfail(L, r, "bad chunk length in the block of entry %d", id); }
        while (len > 0) {
            size_t k = len > (long long)sizeof in ? sizeof in : (size_t)len;
            if (fread(in, 1, k, r->f) != k) {
                if (zinit) inflateEnd(&zs);
                rfail(L, r, "archive is truncated inside the data block of entry %d", id);
            }
            rhash(r, in, k, r->cur);
            r->cur += (long long)k;
            len -= (long long)k;
            if (!zinit) {
                total += (long long)k;
                if (sink && sink(L, ud, (const char *)in, k)) return -1;
                continue;
            }
            zs.next_in = in;
            zs.avail_in = (uInt)k;
            while (zs.avail_in > 0) {
                int rc;
                if (zdone) { inflateEnd(&zs); rfail(L, r, "data block of entry %d is corrupt: bytes after the end of its compressed stream", id); }
                zs.next_out = out;
                zs.avail_out = sizeof out;
                rc = inflate(&zs, Z_NO_FLUSH);
                if (rc != Z_OK && rc != Z_STREAM_END) {
                    const char *m = zs.msg ? zs.msg : "error";
                    inflateEnd(&zs);
                    rfail(L, r, "data block of entry %d is corrupt: %s", id, m);
                }
                if (sizeof out - zs.avail_out > 0) {
                    total += (long long)(sizeof out - zs.avail_out);
                    if (sink && sink(L, ud, (const char *)out, sizeof out - zs.avail_out)) { inflateEnd(&zs); return -1; }
                }
                if (rc == Z_STREAM_END) zdone = 1;
            }
        }
    }
    if (zinit) {
        inflateEnd(&zs);
        if (!zdone) rfail(L, r, "data block of entry %d is corrupt: its compressed stream is incomplete", id);
    }
    return total;
}

/* r:read_block(id, fn) -> bytes. fn(chunk) gets the decompressed data. */
static int lua_sink(lua_State *L, void *ud, const char *buf, size_t len) {
    int fn = *(int *)ud;
    lua_pushvalue(L, fn);
    lua_pushlstring(L, buf, len);
    lua_call(L, 1, 0);
    return 0;
}

static int r_read_block(lua_State *L) {
    Reader *r = checkreader(L);
    int id = (int)luaL_checkinteger(L, 2), fn = 3;
    long long n;
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
    n = read_block(L, r, id, lua_isnoneornil(L, 3) ? NULL : lua_sink, &fn);
    lua_pushinteger(L, n);
    return 1;
}

typedef struct CopySink { PGconn *pg; int failed; } CopySink;

static int copy_sink(lua_State *L, void *ud, const char *buf, size_t len) {
    CopySink *s = (CopySink *)ud;
    (void)L;
    if (s->failed) return 0;
    if (PQputCopyData(s->pg, buf, (int)len) != 1) s->failed = 1;
    if (orch_interrupted()) s->failed = 2;
    return 0;
}

/* read_block under lua_pcall, so a corrupt archive still ends the COPY. */
static int protected_read(lua_State *L) {
    Reader *r = (Reader *)lua_touserdata(L, 1);
    int id = (int)lua_tointeger(L, 2);
    CopySink *s = (CopySink *)lua_touserdata(L, 3);
    lua_pushinteger(L, read_block(L, r, id, copy_sink, s));
    return 1;
}

/* r:copy_into(conn, id, copy_sql) -> bytes. Runs copy_sql (COPY ... FROM
 * stdin) and streams the block into it. Any error aborts the COPY (the
 * server rolls it back) and is raised. */
static int r_copy_into(lua_State *L) {
    Reader *r = checkreader(L);
    PGconn *pg = orch_checkconn(L, 2);
    int id = (int)luaL_checkinteger(L, 3);
    const char *sql = luaL_checkstring(L, 4);
    PGresult *res;
    CopySink s = { pg, 0 };
    long long n = 0;
    int st;
    if (!PQsendQuery(pg, sql)) return orch_raise_pgerror(L, pg, NULL, sql);
    res = PQgetResult(pg);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        PGresult *more;
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        return orch_raise_pgerror(L, pg, res, sql);
    }
    PQclear(res);
    lua_pushcfunction(L, protected_read);
    lua_pushlightuserdata(L, r);
    lua_pushinteger(L, id);
    lua_pushlightuserdata(L, &s);
    st = lua_pcall(L, 3, 1, 0);
    if (st == LUA_OK) { n = lua_tointeger(L, -1); lua_pop(L, 1); }
    if (st != LUA_OK || s.failed) {
        PGresult *more;
        PQputCopyEnd(pg, "aborted by orch: the archive could not be read");
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        if (st != LUA_OK) return lua_error(L);
        if (s.failed == 2) return orch_raise_interrupt(L);
        return orch_raise_pgerror(L, pg, NULL, sql);
    }
    if (PQputCopyEnd(pg, NULL) != 1) return orch_raise_pgerror(L, pg, NULL, sql);
    {
        PGresult *err = NULL, *x;
        while ((x = PQgetResult(pg)) != NULL) {
            if (PQresultStatus(x) != PGRES_COMMAND_OK && !err) err = x; else PQclear(x);
        }
        if (err) return orch_raise_pgerror(L, pg, err, sql);
    }
    lua_pushinteger(L, n);
    return 1;
}

/* r:sha256() -> hex digest of the whole file when everything was read front
 * to back exactly once (a serial restore does), else nil. */
static int r_sha256(lua_State *L) {
    Reader *r = checkreader(L);
    unsigned char d[32];
    char hex[65];
    Sha256 copy;
    if (r->hashed < 0 || r->size < 0 || r->hashed != r->size) return 0;
    hash_drain(r);
    copy = r->sha;
    sha256_final(&copy, d);
    sha256_hex(d, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* r:verify() -> {blocks=, bytes=}: every data block inflates completely. */
static int r_verify(lua_State *L) {
    Reader *r = checkreader(L);
    int i, blocks = 0;
    long long bytes = 0;
    for (i = 0; i < r->n; i++) {
        if (!r->e[i].had_dumper) continue;
        bytes += read_block(L, r, r->e[i].id, NULL, NULL);
        blocks++;
    }
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, blocks); lua_setfield(L, -2, "blocks");
    lua_pushinteger(L, bytes); lua_setfield(L, -2, "bytes");
    return 1;
}

static const luaL_Reg writer_methods[] = {
    {"entry", w_entry}, {"write_toc", w_write_toc}, {"begin_block", w_begin_block}, {"write", w_write},
    {"end_block", w_end_block}, {"copy_table", w_copy_table}, {"close", w_close}, {"progress", w_progress},
    {NULL, NULL}
};
static const luaL_Reg reader_methods[] = {
    {"header", r_header}, {"entries", r_entries}, {"read_block", r_read_block}, {"copy_into", r_copy_into},
    {"verify", r_verify}, {"sha256", r_sha256}, {"close", r_close}, {NULL, NULL}
};
static const luaL_Reg funcs[] = { {"writer", a_writer}, {"open", a_open}, {NULL, NULL} };

int luaopen_orch_pgarchive(lua_State *L);
int luaopen_orch_pgarchive(lua_State *L) {
    luaL_newmetatable(L, WRITER_MT);
    luaL_newlib(L, writer_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, w_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, w_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newmetatable(L, READER_MT);
    luaL_newlib(L, reader_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, r_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, r_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
