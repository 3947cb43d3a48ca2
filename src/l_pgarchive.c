/*
 * l_pgarchive.c -- orch.pgarchive: pg_dump's custom archive format (see
 * ../shared/formats/pgdump-custom-format.md), written and read by orch.
 *
 *   local A = require "orch.pgarchive"
 *   local w <close> = A.writer("x.dump", { compression = "zstd", level = 3, dbname = "app", server_version = "15.4" })
 *   w:entry { id = 1, tag = "ENCODING", desc = "ENCODING", section = "pre-data", defn = "SET client_encoding = 'UTF8';\n" }
 *   ... w:write_toc(); w:copy_table(conn, id, "COPY s.t (a) TO STDOUT"); w:close()
 *   local r <close> = A.open("x.dump"); for _, e in ipairs(r:entries()) do ... end
 *
 * Writes format 1.14 (what pg_restore 12 to 18 read) with gzip or no
 * compression, and 1.15 (pg_restore 16 or newer) when asked for lz4 or zstd,
 * which 1.14 cannot declare; reads 1.12-1.16 with all four. Each data block
 * (each large object of a BLOBS block) is one compressed stream: zlib
 * compressed on worker threads (pdeflate), an lz4 frame, or a zstd frame
 * (zstd's own worker threads). A seekable output gets its TOC rewritten with
 * the block offsets at close, so pg_restore -j can seek. Nothing holds a
 * whole table.
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
#include <limits.h>
#include <zlib.h>
#include <libdeflate.h>
#include <lz4frame.h>
#include <zstd.h>
#include <lua.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include <libpq/libpq-fs.h>
#include "orch.h"
#include "copybin.h"
#include "pdeflate.h"
#include "sha256.h"

int luaopen_orch_pgarchive(lua_State *L);

#define WRITER_MT "orch.pgarchive.writer"
#define READER_MT "orch.pgarchive.reader"
#define RAW_CHUNK (64 * 1024)

enum { OFF_NOT_SET = 1, OFF_SET = 2, OFF_NO_DATA = 3 };
enum { BLK_DATA = 1, BLK_BLOBS = 3 };
enum { ALG_NONE = 0, ALG_GZIP = 1, ALG_LZ4 = 2, ALG_ZSTD = 3 };

static const char *algorithm_name(int a) {
    return a == 0 ? "none" : a == 1 ? "gzip" : a == 2 ? "lz4" : a == 3 ? "zstd" : "unknown";
}


/* ================================================================ writer */

typedef struct Entry {
    int id, had_dumper, section;
    char *tableoid, *oid, *tag, *desc, *defn, *drop, *copy, *ns, *tablespace, *tableam, *owner;
    int *deps, ndeps;
    long long pos;          /* offset of the block's type byte, -1 = not placed yet */
} Entry;

/* Where encoded bytes go (the archive, or a dump worker's sink): 0 / -1. */
typedef int (*out_fn)(void *ud, const void *buf, size_t len);

/* One compressor: turns a stream of data into chunks (Int length, bytes),
 * each stream (a data block, or one large object) compressed on its own:
 * zlib on pdeflate's threads, an lz4 frame, a zstd frame (zstd's own
 * threads), or raw bytes in 64 KiB chunks. Owned by one thread at a time. */
typedef struct Codec {
    int algorithm, level, threads;
    PDeflate *pd;
    unsigned char *raw;     /* none: coalescing buffer */
    size_t rawlen;
    LZ4F_cctx *lz;
    ZSTD_CCtx *zc;
    unsigned char *cbuf;    /* lz4/zstd output buffer */
    size_t cbufcap;
    int in_stream;          /* lz4/zstd: a frame is open */
    out_fn out;
    void *ud;
    long long in;           /* bytes fed since codec_reset_count */
    char errmsg[256];       /* what failed inside the codec */
} Codec;

typedef struct Writer {
    int fd, seekable, closed, level, threads;
    int algorithm, minor;   /* ALG_*, archive version 1.<minor> */
    long long off;          /* bytes written so far = current position */
    long long toc_start;
    Entry *entries;
    int n, cap;
    int next_block;         /* index in entries of the next data entry expected */
    int in_block;
    int reordered;          /* blocks were placed out of TOC order (parallel dump) */
    Codec codec;            /* the serial path's compressor */
    long long block_in, total_in;
    char *dbname, *server_version, *dumper_version;
    int err;                /* errno of the first write failure */
    char errmsg[256];
} Writer;

static int wfail(Writer *w, const char *what) {
    if (!w->errmsg[0]) snprintf(w->errmsg, sizeof w->errmsg, "%s: %s", what, strerror(w->err ? w->err : errno));
    return -1;
}

/* write() all of buf to fd; returns 0, or the errno. */
static int write_all(int fd, const void *buf, size_t len) {
    const char *p = (const char *)buf;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int wwrite(Writer *w, const void *buf, size_t len) {
    int e;
    if (w->errmsg[0]) return -1;
    if ((e = write_all(w->fd, buf, len)) != 0) {
        w->err = e;
        return wfail(w, "writing the archive failed");
    }
    w->off += (long long)len;
    return 0;
}

static int writer_out(void *ud, const void *buf, size_t len) { return wwrite((Writer *)ud, buf, len); }

/* Int: sign byte, then 4 magnitude bytes least significant first. */
static void encode_int(unsigned char b[5], long long v) {
    unsigned long long m = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
    b[0] = v < 0 ? 1 : 0;
    b[1] = (unsigned char)(m & 0xff);
    b[2] = (unsigned char)((m >> 8) & 0xff);
    b[3] = (unsigned char)((m >> 16) & 0xff);
    b[4] = (unsigned char)((m >> 24) & 0xff);
}

static int put_int(Writer *w, long long v) {
    unsigned char b[5];
    encode_int(b, v);
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
    if (wwrite(w, "PGDMP", 5) || put_byte(w, 1) || put_byte(w, w->minor) || put_byte(w, 0) ||
        put_byte(w, 4) || put_byte(w, 8) || put_byte(w, 1))
        return -1;
    /* 1.14: Int zlib level (0 = none); 1.15: Byte algorithm */
    if (w->minor >= 15 ? put_byte(w, w->algorithm) : put_int(w, w->algorithm == ALG_NONE ? 0 : w->level)) return -1;
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

/* ---------------------------------------------------------------- codec */

static int codec_fail(Codec *c, const char *codec, const char *msg) {
    if (!c->errmsg[0]) snprintf(c->errmsg, sizeof c->errmsg, "%s compression failed: %s", codec, msg);
    return -1;
}

static int codec_raw(Codec *c, const void *buf, size_t len) { return c->out(c->ud, buf, len); }

static int codec_int(Codec *c, long long v) {
    unsigned char b[5];
    encode_int(b, v);
    return c->out(c->ud, b, 5);
}

/* One chunk: Int length, then the bytes (never an empty chunk: 0 ends a block). */
static int codec_chunk(Codec *c, const unsigned char *buf, size_t len) {
    if (len == 0) return 0;
    return codec_int(c, (long long)len) || c->out(c->ud, buf, len) ? -1 : 0;
}

static int pd_emit(void *ud, const unsigned char *buf, size_t len) { return codec_chunk((Codec *)ud, buf, len); }

static void codec_free(Codec *c) {
    if (c->pd) { pdeflate_free(c->pd); c->pd = NULL; }
    free(c->raw); c->raw = NULL;
    if (c->lz) { LZ4F_freeCompressionContext(c->lz); c->lz = NULL; }
    if (c->zc) { ZSTD_freeCCtx(c->zc); c->zc = NULL; }
    free(c->cbuf); c->cbuf = NULL;
}

/* Set up a compressor writing through out(ud). Returns 0, or -1 with
 * c->errmsg set (then codec_free). */
static int codec_init(Codec *c, int algorithm, int level, int threads, out_fn out, void *ud) {
    memset(c, 0, sizeof *c);
    c->algorithm = algorithm;
    c->level = level;
    c->threads = threads < 1 ? 1 : threads;
    c->out = out;
    c->ud = ud;
    if (algorithm == ALG_GZIP) {
        if (!(c->pd = pdeflate_new(level, c->threads, 0, pd_emit, c))) return codec_fail(c, "gzip", "cannot start the compression threads");
    } else if (algorithm == ALG_NONE) {
        if (!(c->raw = (unsigned char *)malloc(RAW_CHUNK))) return codec_fail(c, "none", "out of memory");
    } else if (algorithm == ALG_LZ4) {
        LZ4F_preferences_t pref;
        memset(&pref, 0, sizeof pref);
        if (LZ4F_isError(LZ4F_createCompressionContext(&c->lz, LZ4F_VERSION))) { c->lz = NULL; return codec_fail(c, "lz4", "cannot start (out of memory?)"); }
        pref.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;   /* so a damaged block is caught */
        c->cbufcap = LZ4F_compressBound(RAW_CHUNK, &pref);
        if (c->cbufcap < LZ4F_HEADER_SIZE_MAX) c->cbufcap = LZ4F_HEADER_SIZE_MAX;
        if (!(c->cbuf = (unsigned char *)malloc(c->cbufcap))) return codec_fail(c, "lz4", "out of memory");
    } else {
        if (!(c->zc = ZSTD_createCCtx())) return codec_fail(c, "zstd", "cannot start (out of memory?)");
        ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, level == -1 ? ZSTD_CLEVEL_DEFAULT : level);
        ZSTD_CCtx_setParameter(c->zc, ZSTD_c_checksumFlag, 1);
        /* its own worker threads when the library has them (else it compresses inline) */
        if (c->threads > 1) ZSTD_CCtx_setParameter(c->zc, ZSTD_c_nbWorkers, c->threads);
        c->cbufcap = ZSTD_CStreamOutSize();
        if (!(c->cbuf = (unsigned char *)malloc(c->cbufcap))) return codec_fail(c, "zstd", "out of memory");
    }
    return 0;
}

static int flush_raw(Codec *c) {
    int r = 0;
    if (c->rawlen) r = codec_chunk(c, c->raw, c->rawlen);
    c->rawlen = 0;
    return r;
}

/* Open an lz4 frame if none is (its header is the first chunk). */
static int lz4_begin(Codec *c) {
    LZ4F_preferences_t pref;
    size_t n;
    if (c->in_stream) return 0;
    memset(&pref, 0, sizeof pref);
    pref.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    pref.compressionLevel = c->level == -1 ? 0 : c->level;
    n = LZ4F_compressBegin(c->lz, c->cbuf, c->cbufcap, &pref);
    if (LZ4F_isError(n)) return codec_fail(c, "lz4", LZ4F_getErrorName(n));
    c->in_stream = 1;
    return codec_chunk(c, c->cbuf, n);
}

/* Run zstd over in with mode (continue or end), emitting all output. */
static int zstd_run(Codec *c, const char *data, size_t len, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in = { data, len, 0 };
    for (;;) {
        ZSTD_outBuffer out = { c->cbuf, c->cbufcap, 0 };
        size_t left = ZSTD_compressStream2(c->zc, &out, &in, mode);
        if (ZSTD_isError(left)) return codec_fail(c, "zstd", ZSTD_getErrorName(left));
        if (codec_chunk(c, c->cbuf, out.pos)) return -1;
        if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return 0;
    }
}

/* Compress data into the current stream. */
static int codec_write(Codec *c, const char *data, size_t len) {
    c->in += (long long)len;
    if (c->algorithm == ALG_LZ4) {
        if (lz4_begin(c)) return -1;
        while (len > 0) {
            size_t k = len > RAW_CHUNK ? RAW_CHUNK : len, n;
            n = LZ4F_compressUpdate(c->lz, c->cbuf, c->cbufcap, data, k, NULL);
            if (LZ4F_isError(n)) return codec_fail(c, "lz4", LZ4F_getErrorName(n));
            if (codec_chunk(c, c->cbuf, n)) return -1;
            data += k;
            len -= k;
        }
        return 0;
    }
    if (c->algorithm == ALG_ZSTD) {
        c->in_stream = 1;
        return len ? zstd_run(c, data, len, ZSTD_e_continue) : 0;
    }
    if (c->pd) {
        if (pdeflate_write(c->pd, data, len)) {
            if (!c->errmsg[0]) snprintf(c->errmsg, sizeof c->errmsg, "%s", pdeflate_errmsg(c->pd));
            return -1;
        }
        return 0;
    }
    while (len > 0) {
        size_t n = RAW_CHUNK - c->rawlen;
        if (n > len) n = len;
        memcpy(c->raw + c->rawlen, data, n);
        c->rawlen += n;
        data += n;
        len -= n;
        if (c->rawlen == RAW_CHUNK && flush_raw(c)) return -1;
    }
    return 0;
}

/* End the current stream: the zlib stream, lz4 frame or zstd frame is
 * finished (an empty one if nothing was written), raw bytes flushed. */
static int codec_end(Codec *c) {
    if (c->algorithm == ALG_GZIP) {
        if (pdeflate_finish(c->pd)) {
            if (!c->errmsg[0]) snprintf(c->errmsg, sizeof c->errmsg, "%s", pdeflate_errmsg(c->pd));
            return -1;
        }
        return 0;
    }
    if (c->algorithm == ALG_NONE) return flush_raw(c);
    if (c->algorithm == ALG_LZ4) {
        size_t n;
        if (lz4_begin(c)) return -1;
        n = LZ4F_compressEnd(c->lz, c->cbuf, c->cbufcap, NULL);
        c->in_stream = 0;
        if (LZ4F_isError(n)) return codec_fail(c, "lz4", LZ4F_getErrorName(n));
        return codec_chunk(c, c->cbuf, n);
    }
    c->in_stream = 0;
    return zstd_run(c, "", 0, ZSTD_e_end);
}

/* ---------------------------------------------------------------- the Lua writer */

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
    codec_free(&w->codec);
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
    w->algorithm = -1;
    w->minor = 14;
    if (lua_istable(L, 2)) {
        static const char *const algs[] = { "none", "gzip", "lz4", "zstd", NULL };
        int has_level = lua_getfield(L, 2, "level") == LUA_TNUMBER;
        if (has_level) w->level = (int)lua_tointeger(L, -1);
        if (lua_getfield(L, 2, "threads") == LUA_TNUMBER) w->threads = (int)lua_tointeger(L, -1);
        lua_pop(L, 2);
        if (lua_getfield(L, 2, "compression") != LUA_TNIL) w->algorithm = luaL_checkoption(L, -1, NULL, algs);
        lua_pop(L, 1);
        if (lua_getfield(L, 2, "version") != LUA_TNIL) {
            const char *v = luaL_checkstring(L, -1);
            if (strcmp(v, "1.14") && strcmp(v, "1.15")) return luaL_error(L, "archive version must be \"1.14\" or \"1.15\", got \"%s\"", v);
            w->minor = v[3] == '5' ? 15 : 14;
        }
        lua_pop(L, 1);
        w->dbname = dupfield(L, 2, "dbname");
        w->server_version = dupfield(L, 2, "server_version");
        w->dumper_version = dupfield(L, 2, "dumper_version");
        /* without compression=: level 0 is none, -1/1..9 gzip (the -Z N of pg_dump 15) */
        if (w->algorithm < 0) w->algorithm = has_level && w->level == 0 ? ALG_NONE : ALG_GZIP;
        if (!has_level) w->level = -1;
    }
    if (w->algorithm < 0) w->algorithm = ALG_GZIP;
    switch (w->algorithm) {
    case ALG_NONE: if (w->level > 0) return luaL_error(L, "compression none takes no level (got %d)", w->level); w->level = 0; break;
    case ALG_GZIP: if (w->level != -1 && (w->level < 1 || w->level > 9)) return luaL_error(L, "gzip compression level must be 1..9 (got %d)", w->level); break;
    case ALG_LZ4: if (w->level != -1 && (w->level < 1 || w->level > 12)) return luaL_error(L, "lz4 compression level must be 1..12 (got %d)", w->level); break;
    default: if (w->level != -1 && (w->level < 1 || w->level > ZSTD_maxCLevel())) return luaL_error(L, "zstd compression level must be 1..%d (got %d)", ZSTD_maxCLevel(), w->level);
    }
    /* 1.14 has no way to declare lz4 or zstd: such archives are 1.15 (pg_restore 16+) */
    if (w->algorithm >= ALG_LZ4) w->minor = 15;
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
    if (codec_init(&w->codec, w->algorithm, w->level, w->threads, writer_out, w) != 0)
        return luaL_error(L, "%s", w->codec.errmsg);
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
    return luaL_error(L, "%s", w->errmsg[0] ? w->errmsg : w->codec.errmsg[0] ? w->codec.errmsg : "archive write failed");
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

/* The next data entry in TOC order not placed yet (the open serial block
 * stays the current one until end_block). */
static Entry *next_data_entry(Writer *w) {
    while (w->next_block < w->n &&
           (!w->entries[w->next_block].had_dumper || (w->entries[w->next_block].pos >= 0 && !w->in_block)))
        w->next_block++;
    return w->next_block < w->n ? &w->entries[w->next_block] : NULL;
}

/* w:begin_block(id): start the data block of entry id (TOC order). */
static Entry *start_block(lua_State *L, Writer *w, int id, int type) {
    Entry *e;
    if (!w->toc_start) { luaL_error(L, "write_toc() must come before data blocks"); return NULL; }
    if (w->in_block) { luaL_error(L, "a data block is already open"); return NULL; }
    e = next_data_entry(w);
    if (!e) { luaL_error(L, "no more data entries in the TOC (got block %d)", id); return NULL; }
    if (e->id != id) {
        luaL_error(L, "data blocks must follow TOC order: expected entry %d (%s), got %d", e->id, e->tag, id);
        return NULL;
    }
    e->pos = w->off;
    if (put_byte(w, type) || put_int(w, id)) { raise_werr(L, w); return NULL; }
    w->in_block = 1;
    w->block_in = 0;
    w->codec.in = 0;
    return e;
}

static int w_begin_block(lua_State *L) {
    Writer *w = checkwriter(L);
    start_block(L, w, (int)luaL_checkinteger(L, 2), BLK_DATA);
    return 0;
}

/* Feed the serial codec, keeping the writer's counters. */
static int block_write(Writer *w, const char *data, size_t len) {
    w->block_in += (long long)len;
    w->total_in += (long long)len;
    return codec_write(&w->codec, data, len);
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
    if (codec_end(&w->codec)) return raise_werr(L, w);
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

#define LO_PIECE (256 * 1024)

/* The next oid from an array (index i) or an iterator function at idx;
 * 0 at the end. */
static unsigned int next_oid(lua_State *L, int idx, lua_Integer i) {
    lua_Integer v;
    int isnum;
    if (lua_isfunction(L, idx)) { lua_pushvalue(L, idx); lua_call(L, 0, 1); }
    else lua_rawgeti(L, idx, i);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum || v <= 0 || v > 0xffffffffLL) luaL_error(L, "large object oids must be integers 1..4294967295 (got %s)", luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return (unsigned int)v;
}

/* w:copy_blobs(conn, id, oids [, progress]) -> objects, bytes.
 *
 * The catalog's side of large objects (what orch's backups write):
 *   - one TOC entry per large object, desc "BLOB", tag the oid, section
 *     pre-data, defn "SELECT pg_catalog.lo_create('OID');\n", drop
 *     "SELECT pg_catalog.lo_unlink('OID');\n", owner the LO's owner (what
 *     pg_dump 15 writes, format 1.14), plus COMMENT / ACL entries tagged
 *     "LARGE OBJECT OID" that depend on it;
 *   - one entry desc "BLOBS", tag "BLOBS", section data, had_dumper = true,
 *     no defn, placed after the TABLE DATA entries; its block is written here.
 * Writes that BLOBS block of entry id (TOC order, like copy_table): for each
 * large object Int oid, its bytes as one compressed stream of its own (read
 * with lo_open/lo_read in 256 KiB pieces: memory stays bounded whatever its
 * size), Int 0; then a final Int 0. oids is an array of integers or a
 * function returning the next oid and nil at the end. conn must be inside a
 * transaction (lo_open needs one; the backup's snapshot then covers the
 * objects too). progress(objects, bytes_in, bytes_out) is called every
 * 4 MiB. Raises naming the oid when the server fails; the archive is then
 * unfinished (close the writer and remove the file). */
static int w_copy_blobs(lua_State *L) {
    Writer *w = checkwriter(L);
    PGconn *pg = orch_checkconn(L, 2);
    int id = (int)luaL_checkinteger(L, 3);
    int has_progress = lua_isfunction(L, 5);
    long long next_report = 4 << 20, start_in;
    lua_Integer i = 1;
    int count = 0;
    char *buf;
    if (!lua_istable(L, 4) && !lua_isfunction(L, 4)) return luaL_argerror(L, 4, "an array of oids or an iterator function expected");
    if (PQtransactionStatus(pg) != PQTRANS_INTRANS)
        return luaL_error(L, "copy_blobs() needs the connection inside a transaction (lo_open works only in one)");
    lua_settop(L, 5);
    /* the read buffer is a Lua userdata: freed by the GC whatever is raised */
    buf = (char *)lua_newuserdatauv(L, LO_PIECE, 0);
    start_block(L, w, id, BLK_BLOBS);
    start_in = w->total_in;
    for (;; i++) {
        unsigned int oid = next_oid(L, 4, i);
        int fd, n;
        if (oid == 0) break;
        if (put_int(w, (long long)(int)oid)) return raise_werr(L, w);   /* pg_dump's Int of an Oid */
        fd = lo_open(pg, oid, INV_READ);
        if (fd < 0) return luaL_error(L, "cannot open large object %I for the backup: %s", (lua_Integer)oid, PQerrorMessage(pg));
        while ((n = lo_read(pg, fd, buf, LO_PIECE)) > 0) {
            if (block_write(w, buf, (size_t)n)) { lo_close(pg, fd); return raise_werr(L, w); }
            if (orch_interrupted()) { lo_close(pg, fd); return orch_raise_interrupt(L); }
            if (has_progress && w->total_in - start_in >= next_report) {
                next_report = w->total_in - start_in + (4 << 20);
                lua_pushvalue(L, 5);
                lua_pushinteger(L, count);
                lua_pushinteger(L, w->total_in);
                lua_pushinteger(L, w->off);
                if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
            }
        }
        if (n < 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", PQerrorMessage(pg));
            lo_close(pg, fd);
            return luaL_error(L, "reading large object %I for the backup failed: %s", (lua_Integer)oid, msg);
        }
        if (lo_close(pg, fd) < 0) return luaL_error(L, "closing large object %I failed: %s", (lua_Integer)oid, PQerrorMessage(pg));
        if (codec_end(&w->codec) || put_int(w, 0)) return raise_werr(L, w);
        count++;
    }
    if (put_int(w, 0)) return raise_werr(L, w);
    w->in_block = 0;
    w->next_block++;
    lua_pushinteger(L, count);
    lua_pushinteger(L, w->block_in);
    return 2;
}

/* ---------------------------------------------------------------- parallel dump
 *
 * w:copy_parallel(conns, jobs [, opts]) dumps data blocks on several
 * connections at once, one thread per connection, into this one archive.
 * The Lua side decides everything about the connections (one exported
 * snapshot, session settings, locks) and the order of the jobs; this part
 * moves the bytes.
 *
 * A worker takes the next job, runs its LOCK (if any) and its COPY ... TO
 * STDOUT (or reads its large objects) and compresses the block with a codec
 * of its own. A block must be contiguous in the archive, so one worker at a
 * time (the owner) writes into it directly; the others spool their block to
 * an unnamed temporary file (O_TMPFILE in opts.spool_dir: it vanishes with
 * the process) and either become the owner at their next chunk once the
 * archive is free (copying what they spooled so far, then writing
 * directly), or leave the finished spool queued for whoever frees the
 * archive next to copy in (copy_file_range: on one file system, the kernel
 * moves the bytes). A seekable archive takes blocks in any order: their
 * positions go into the TOC at close, where the data entries are also put
 * in the order of their blocks, so that every reader (a pipe included)
 * still finds blocks in TOC order. A stream (stdout) cannot be rewritten:
 * there blocks go out in TOC order, a spooling worker whose block is not
 * next waits once opts.spool_limit bytes are spooled, and the jobs are
 * taken in TOC order (so the block that is next is always being written by
 * someone: no deadlock).
 *
 * Memory per worker is its codec's buffers and libpq's row buffer, whatever
 * the table sizes. The first failure (a server error, a killed connection,
 * a full disk, Ctrl-C) stops every worker: their COPYs are cancelled, the
 * threads joined, and the error raised (a server error as orch.db's error
 * object, with entry = the block's dump id). The archive is then unusable:
 * close the writer and remove the file.
 */

enum { JOB_TABLE = 0, JOB_BLOBS = 1 };

typedef struct PJob {
    Entry *e;               /* the data entry (pointer into w->entries, stable during the dump) */
    int id, kind;
    char *lock, *copy;      /* SQL (copy: the COPY ... TO STDOUT) */
    unsigned int *oids;     /* JOB_BLOBS */
    size_t noids;
    int order;              /* TOC index of e (for streams) */
    long long rows, in;     /* progress, written by the worker with atomics */
    int state;              /* 0 waiting, 1 running, 2 done */
    int spool_fd;           /* finished but not placed yet: its spool */
    long long spool_len;
    int queued;
} PJob;

struct Par;

typedef struct PWorker {
    struct Par *par;
    int slot;
    PGconn *pg;
    PGcancel *cancel;
    Codec codec;
    int codec_ok;
    pthread_t th;
    int started;
    PJob *job;
    int direct;             /* writing its block straight into the archive */
    int spool_fd;
    long long spool_len;
    unsigned char *buf;     /* lo_read and spool copies */
    PGresult *err;          /* the failed statement's result (NULL: see errmsg / the connection) */
    const char *err_sql;
    int err_pg;             /* the failure is the server's: raise it as orch.db's error */
    char errmsg[400];
} PWorker;

typedef struct Par {
    Writer *w;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the archive changed hands, a block was placed, or something failed */
    pthread_cond_t done;    /* a worker ended */
    int sync_ok;
    PJob *jobs;
    int njobs, next_job;
    PWorker *workers;
    int nworkers, running;
    PWorker *owner;         /* who writes into the archive now (NULL: nobody) */
    int streaming;          /* the archive cannot seek: blocks in TOC order */
    long long spooled, spool_limit;
    int failed;             /* 1 an error, 2 interrupted */
    PWorker *failed_by;
    char errmsg[400];
    char spool_dir[512];
    int finished;           /* par_stop ran */
} Par;

#define PAR_MT "orch.pgarchive.parallel"

static int par_failed(Par *p) { return __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE); }

/* Record the first failure (mutex held). */
static void fail_locked(Par *p, PWorker *k, int how) {
    if (!p->failed) {
        p->failed_by = k;
        __atomic_store_n(&p->failed, how, __ATOMIC_RELEASE);
    }
    pthread_cond_broadcast(&p->cv);
}

static int kfail(PWorker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int kfail(PWorker *k, const char *fmt, ...) {
    va_list ap;
    if (!k->errmsg[0]) {
        va_start(ap, fmt);
        vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The entry that must come next in a stream (mutex held). */
static Entry *head_locked(Par *p) {
    Writer *w = p->w;
    while (w->next_block < w->n && (!w->entries[w->next_block].had_dumper || w->entries[w->next_block].pos >= 0))
        w->next_block++;
    return w->next_block < w->n ? &w->entries[w->next_block] : NULL;
}

static int may_write_locked(Par *p, PJob *j) {
    return !p->owner && (!p->streaming || head_locked(p) == j->e);
}

/* Append the bytes of a direct block to the archive (owner only). */
static int archive_write(PWorker *k, const void *buf, size_t len) {
    Writer *w = k->par->w;
    int e = write_all(w->fd, buf, len);
    if (e) return kfail(k, "writing the archive failed: %s", strerror(e));
    __atomic_add_fetch(&w->off, (long long)len, __ATOMIC_RELAXED);
    return 0;
}

/* Copy len bytes of spool fd (from its start) to the end of the archive
 * (owner only): copy_file_range, else sendfile, else read/write. */
static int spool_copy(PWorker *k, int fd, long long len) {
    Writer *w = k->par->w;
    off_t in_off = 0;
    int mode = 0;           /* 0 copy_file_range, 1 read/write */
    while (len > 0) {
        ssize_t n;
        size_t want = len > (1 << 30) ? (size_t)1 << 30 : (size_t)len;
        if (mode == 0) {
            n = copy_file_range(fd, &in_off, w->fd, NULL, want, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP || errno == EBADF)) { mode = 1; continue; }
            if (n < 0) return kfail(k, "writing the archive failed: %s", strerror(errno));
            if (n == 0) return kfail(k, "writing the archive failed: its temporary spool file ended early");
        } else {
            size_t piece = want > LO_PIECE ? LO_PIECE : want;
            if (!k->buf && !(k->buf = (unsigned char *)malloc(LO_PIECE))) return kfail(k, "writing the archive failed: out of memory");
            n = pread(fd, k->buf, piece, in_off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return kfail(k, "writing the archive failed: reading its temporary spool file: %s", n < 0 ? strerror(errno) : "it ended early");
            if (archive_write(k, k->buf, (size_t)n)) return -1;
            in_off += n;
            len -= n;
            continue;
        }
        in_off += n;
        len -= n;
        __atomic_add_fetch(&w->off, (long long)n, __ATOMIC_RELAXED);
    }
    return 0;
}

static int spool_open(PWorker *k) {
    Par *p = k->par;
    int fd;
    if (k->spool_fd >= 0) return 0;
    fd = open(p->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* a file system without O_TMPFILE: a named file, unlinked at once */
        char path[600];
        snprintf(path, sizeof path, "%s/.orch-spool-XXXXXX", p->spool_dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) unlink(path);
    }
    if (fd < 0) return kfail(k, "writing the archive failed: cannot create a temporary spool file in %s: %s", p->spool_dir, strerror(errno));
    k->spool_fd = fd;
    k->spool_len = 0;
    return 0;
}

/* The spool is empty again (mutex not held). */
static int spool_reset(PWorker *k) {
    if (ftruncate(k->spool_fd, 0) != 0 || lseek(k->spool_fd, 0, SEEK_SET) != 0)
        return kfail(k, "writing the archive failed: cannot reuse its temporary spool file: %s", strerror(errno));
    k->spool_len = 0;
    return 0;
}

/* Place queued spools that may go now, then free the archive (mutex held,
 * k the owner). Copies run with the mutex released. */
static int drain_locked(Par *p, PWorker *k) {
    int r = 0;
    for (;;) {
        PJob *q = NULL;
        int i;
        if (p->failed) break;
        if (p->streaming) {
            Entry *h = head_locked(p);
            for (i = 0; i < p->njobs; i++) if (p->jobs[i].queued && p->jobs[i].e == h) { q = &p->jobs[i]; break; }
        } else {
            for (i = 0; i < p->njobs; i++) if (p->jobs[i].queued) { q = &p->jobs[i]; break; }
        }
        if (!q) break;
        q->queued = 0;
        q->e->pos = __atomic_load_n(&p->w->off, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&p->mu);
        r = spool_copy(k, q->spool_fd, q->spool_len);
        close(q->spool_fd);
        q->spool_fd = -1;
        pthread_mutex_lock(&p->mu);
        p->spooled -= q->spool_len;
        if (r) { fail_locked(p, k, 1); break; }
    }
    p->owner = NULL;
    pthread_cond_broadcast(&p->cv);
    return r;
}

/* Take the archive for the running job (mutex held, may_write true). */
static void take_locked(Par *p, PWorker *k) {
    p->owner = k;
    k->job->e->pos = __atomic_load_n(&p->w->off, __ATOMIC_RELAXED);
    k->direct = 1;
}

/* The codec's output in a worker: into the archive when it owns it, else
 * into its spool, becoming the owner as soon as it may. */
static int worker_out(void *ud, const void *buf, size_t len) {
    PWorker *k = (PWorker *)ud;
    Par *p = k->par;
    int e;
    if (par_failed(p)) return kfail(k, "stopped: another part of the backup failed");
    if (k->direct) return archive_write(k, buf, len);
    pthread_mutex_lock(&p->mu);
    if (may_write_locked(p, k->job)) {
        long long had = k->spool_len;
        take_locked(p, k);
        pthread_mutex_unlock(&p->mu);
        if (spool_copy(k, k->spool_fd, had) || spool_reset(k)) return -1;
        pthread_mutex_lock(&p->mu);
        p->spooled -= had;
        pthread_mutex_unlock(&p->mu);
        return archive_write(k, buf, len);
    }
    /* a stream holds blocks back only so far: then wait for this one's turn */
    while (p->streaming && p->spooled >= p->spool_limit && !p->failed && !may_write_locked(p, k->job))
        pthread_cond_wait(&p->cv, &p->mu);
    if (p->failed) { pthread_mutex_unlock(&p->mu); return kfail(k, "stopped: another part of the backup failed"); }
    if (may_write_locked(p, k->job)) { pthread_mutex_unlock(&p->mu); return worker_out(ud, buf, len); }
    p->spooled += (long long)len;
    pthread_mutex_unlock(&p->mu);
    if ((e = write_all(k->spool_fd, buf, len)) != 0)
        return kfail(k, "writing the archive failed: writing its temporary spool file in %s: %s", p->spool_dir, strerror(e));
    k->spool_len += (long long)len;
    return 0;
}

static int block_begin(PWorker *k, PJob *j, int type) {
    Par *p = k->par;
    unsigned char hdr[6];
    pthread_mutex_lock(&p->mu);
    k->job = j;
    k->direct = 0;
    if (may_write_locked(p, j)) take_locked(p, k);
    pthread_mutex_unlock(&p->mu);
    if (!k->direct && (spool_open(k) || spool_reset(k))) return -1;
    hdr[0] = (unsigned char)type;
    encode_int(hdr + 1, j->id);
    return codec_raw(&k->codec, hdr, 6);
}

/* The block is complete: free the archive, place it, or queue its spool. */
static int block_finish(PWorker *k, PJob *j) {
    Par *p = k->par;
    int r = 0;
    pthread_mutex_lock(&p->mu);
    if (k->direct) {
        r = drain_locked(p, k);
    } else if (may_write_locked(p, j)) {
        long long had = k->spool_len;
        take_locked(p, k);
        pthread_mutex_unlock(&p->mu);
        r = spool_copy(k, k->spool_fd, had);
        pthread_mutex_lock(&p->mu);
        p->spooled -= had;
        k->spool_len = 0;
        if (r) fail_locked(p, k, 1);
        else r = drain_locked(p, k);
    } else {
        j->spool_fd = k->spool_fd;
        j->spool_len = k->spool_len;
        j->queued = 1;
        k->spool_fd = -1;
        k->spool_len = 0;
    }
    k->direct = 0;
    pthread_mutex_unlock(&p->mu);
    return r;
}

/* Cancel the statement in flight and drain the connection. */
static void abort_query(PWorker *k) {
    char errbuf[256], *row;
    PGresult *r;
    if (k->cancel) PQcancel(k->cancel, errbuf, sizeof errbuf);
    while (PQgetCopyData(k->pg, &row, 0) > 0) PQfreemem(row);
    while ((r = PQgetResult(k->pg)) != NULL) PQclear(r);
}

static int stopped(PWorker *k) {
    if (orch_interrupted()) return 2;
    if (par_failed(k->par)) { kfail(k, "stopped: another part of the backup failed"); return 1; }
    return 0;
}

/* A server-side failure of sql: keep its result (or the connection's
 * message) for the main thread. */
static int pgfail(PWorker *k, PGresult *r, const char *sql) {
    PGresult *more;
    if (k->err) PQclear(k->err);
    k->err = r;
    k->err_sql = sql;
    k->err_pg = 1;
    while ((more = PQgetResult(k->pg)) != NULL) PQclear(more);
    return 1;
}

static int run_table(PWorker *k, PJob *j) {
    PGconn *pg = k->pg;
    PGresult *r;
    char *row;
    int n, s;
    if (j->lock) {
        r = PQexec(pg, j->lock);
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return orch_interrupted() ? 2 : pgfail(k, r, j->lock);
        PQclear(r);
    }
    if ((s = stopped(k))) return s;
    if (!PQsendQuery(pg, j->copy)) return pgfail(k, NULL, j->copy);
    r = PQgetResult(pg);
    if (!r || PQresultStatus(r) != PGRES_COPY_OUT) return orch_interrupted() ? 2 : pgfail(k, r, j->copy);
    PQclear(r);
    if (block_begin(k, j, BLK_DATA)) { abort_query(k); return 1; }
    while ((n = PQgetCopyData(pg, &row, 0)) > 0) {
        int bad = codec_write(&k->codec, row, (size_t)n);
        PQfreemem(row);
        if (bad) { abort_query(k); return 1; }
        __atomic_add_fetch(&j->rows, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&j->in, n, __ATOMIC_RELAXED);
        if ((s = stopped(k))) { abort_query(k); return s; }
    }
    r = PQgetResult(pg);
    if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) return orch_interrupted() ? 2 : pgfail(k, r, j->copy);
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL) PQclear(r);
    if (codec_write(&k->codec, "\\.\n\n\n", 5) || codec_end(&k->codec) || codec_int(&k->codec, 0)) return 1;
    __atomic_add_fetch(&j->in, 5, __ATOMIC_RELAXED);
    return block_finish(k, j) ? 1 : 0;
}

static int run_blobs(PWorker *k, PJob *j) {
    PGconn *pg = k->pg;
    size_t i;
    int s;
    if (!k->buf && !(k->buf = (unsigned char *)malloc(LO_PIECE))) return kfail(k, "out of memory"), 1;
    if (block_begin(k, j, BLK_BLOBS)) return 1;
    for (i = 0; i < j->noids; i++) {
        unsigned int oid = j->oids[i];
        int fd, n;
        if (codec_int(&k->codec, (long long)(int)oid)) return 1;   /* pg_dump's Int of an Oid */
        fd = lo_open(pg, oid, INV_READ);
        if (fd < 0) { kfail(k, "cannot open large object %u for the backup: %s", oid, PQerrorMessage(pg)); return orch_interrupted() ? 2 : 1; }
        while ((n = lo_read(pg, fd, (char *)k->buf, LO_PIECE)) > 0) {
            if (codec_write(&k->codec, (const char *)k->buf, (size_t)n)) { lo_close(pg, fd); return 1; }
            __atomic_add_fetch(&j->in, n, __ATOMIC_RELAXED);
            if ((s = stopped(k))) { lo_close(pg, fd); return s; }
        }
        if (n < 0) {
            kfail(k, "reading large object %u for the backup failed: %s", oid, PQerrorMessage(pg));
            lo_close(pg, fd);
            return orch_interrupted() ? 2 : 1;
        }
        if (lo_close(pg, fd) < 0) { kfail(k, "closing large object %u failed: %s", oid, PQerrorMessage(pg)); return 1; }
        if (codec_end(&k->codec) || codec_int(&k->codec, 0)) return 1;
        __atomic_add_fetch(&j->rows, 1, __ATOMIC_RELAXED);
    }
    if (codec_int(&k->codec, 0)) return 1;
    return block_finish(k, j) ? 1 : 0;
}

static void *worker_main(void *arg) {
    PWorker *k = (PWorker *)arg;
    Par *p = k->par;
    for (;;) {
        PJob *j = NULL;
        int r;
        pthread_mutex_lock(&p->mu);
        if (!p->failed && p->next_job < p->njobs) { j = &p->jobs[p->next_job++]; __atomic_store_n(&j->state, 1, __ATOMIC_RELAXED); }
        pthread_mutex_unlock(&p->mu);
        if (!j) break;
        k->job = j;
        r = j->kind == JOB_BLOBS ? run_blobs(k, j) : run_table(k, j);
        pthread_mutex_lock(&p->mu);
        if (r) fail_locked(p, k, r == 2 ? 2 : 1);
        else __atomic_store_n(&j->state, 2, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&p->mu);
        if (r) break;
    }
    pthread_mutex_lock(&p->mu);
    p->running--;
    pthread_cond_broadcast(&p->done);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Stop and join every worker, then free what they held (safe twice). */
static void par_stop(Par *p) {
    int i;
    if (p->finished) return;
    p->finished = 1;
    if (p->sync_ok) {
        pthread_mutex_lock(&p->mu);
        if (p->running > 0 && !p->failed) fail_locked(p, NULL, 1);
        pthread_mutex_unlock(&p->mu);
        for (i = 0; i < p->nworkers; i++) {
            char errbuf[256];
            PWorker *k = &p->workers[i];
            if (k->started && k->cancel) PQcancel(k->cancel, errbuf, sizeof errbuf);
        }
        for (i = 0; i < p->nworkers; i++) if (p->workers[i].started) pthread_join(p->workers[i].th, NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        pthread_cond_destroy(&p->done);
        p->sync_ok = 0;
    }
    for (i = 0; p->workers && i < p->nworkers; i++) {
        PWorker *k = &p->workers[i];
        if (k->codec_ok) codec_free(&k->codec);
        if (k->cancel) PQfreeCancel(k->cancel);
        if (k->spool_fd >= 0) close(k->spool_fd);
        if (k->err) PQclear(k->err);
        free(k->buf);
    }
    for (i = 0; p->jobs && i < p->njobs; i++) {
        free(p->jobs[i].lock);
        free(p->jobs[i].copy);
        free(p->jobs[i].oids);
        if (p->jobs[i].spool_fd >= 0) close(p->jobs[i].spool_fd);
    }
    free(p->workers); p->workers = NULL;
    free(p->jobs); p->jobs = NULL;
}

static int par_gc(lua_State *L) {
    par_stop((Par *)luaL_checkudata(L, 1, PAR_MT));
    return 0;
}

static int cmp_order(const void *a, const void *b) {
    const PJob *x = (const PJob *)a, *y = (const PJob *)b;
    return x->order < y->order ? -1 : x->order > y->order;
}

static char *dupstr_field(lua_State *L, int t, const char *k, int required, int jobno) {
    char *r = NULL;
    int type = lua_getfield(L, t, k);
    if (type == LUA_TSTRING) {
        if (!(r = strdup(lua_tostring(L, -1)))) luaL_error(L, "out of memory");
    } else if (type != LUA_TNIL || required) {
        luaL_error(L, "job %d: field '%s' must be a string", jobno, k);
    }
    lua_pop(L, 1);
    return r;
}

/* Progress for the Lua callback (mutex not held): a table of totals and the running jobs. */
static int push_progress(lua_State *L) {
    Par *p = (Par *)lua_touserdata(L, 1);
    long long rows = 0, in = 0;
    int i, done = 0, r = 0;
    lua_createtable(L, 0, 8);
    lua_newtable(L);        /* finished: { id, ... } */
    for (i = 0; i < p->njobs; i++)
        if (__atomic_load_n(&p->jobs[i].state, __ATOMIC_RELAXED) == 2) { lua_pushinteger(L, p->jobs[i].id); lua_rawseti(L, -2, ++done); }
    lua_setfield(L, -2, "finished");
    done = 0;
    lua_newtable(L);        /* running: { {id=, rows=, bytes_in=}, ... } */
    for (i = 0; i < p->njobs; i++) {
        PJob *j = &p->jobs[i];
        long long jr = __atomic_load_n(&j->rows, __ATOMIC_RELAXED), ji = __atomic_load_n(&j->in, __ATOMIC_RELAXED);
        int st = __atomic_load_n(&j->state, __ATOMIC_RELAXED);
        rows += jr;
        in += ji;
        if (st == 2) done++;
        else if (st == 1) {
            lua_createtable(L, 0, 3);
            lua_pushinteger(L, j->id); lua_setfield(L, -2, "id");
            lua_pushinteger(L, jr); lua_setfield(L, -2, "rows");
            lua_pushinteger(L, ji); lua_setfield(L, -2, "bytes_in");
            lua_rawseti(L, -2, ++r);
        }
    }
    lua_setfield(L, -2, "running");
    lua_pushinteger(L, done); lua_setfield(L, -2, "done");
    lua_pushinteger(L, p->njobs); lua_setfield(L, -2, "total");
    lua_pushinteger(L, rows); lua_setfield(L, -2, "rows");
    lua_pushinteger(L, in); lua_setfield(L, -2, "bytes_in");
    lua_pushinteger(L, __atomic_load_n(&p->w->off, __ATOMIC_RELAXED)); lua_setfield(L, -2, "bytes_out");
    lua_pushvalue(L, 2);
    lua_insert(L, -2);
    lua_call(L, 1, 0);
    return 0;
}

/* Raise a worker's server error as orch.db's error object, with the entry. */
static int raise_worker_pg(lua_State *L) {
    PWorker *k = (PWorker *)lua_touserdata(L, 1);
    PGresult *r = k->err;
    k->err = NULL;          /* orch_raise_pgerror clears it */
    return orch_raise_pgerror(L, k->pg, r, k->err_sql);
}

/* w:copy_parallel(conns, jobs [, opts]) -> { [id] = { rows =, bytes = } }
 * (rows: large objects for a BLOBS job; bytes: uncompressed).
 * conns: orch.conn handles, one worker thread each (each already in the
 * transaction and session it must dump in; not used by Lua meanwhile).
 * jobs, in the order to start them: { id = dump id of a data entry,
 * copy = "COPY ... TO STDOUT", lock = "LOCK TABLE ..." or nil } or
 * { id =, blobs = { oid, ... } }. opts: threads (compression threads per
 * worker), spool_dir (default /tmp), spool_limit (bytes a stream may hold
 * back, default 64 MiB), progress = fn({done, total, rows, bytes_in,
 * bytes_out, finished = {id...}, running = {{id, rows, bytes_in}...}}) every opts.interval
 * seconds (default 0.25; its errors are ignored). See the chapter comment
 * for how blocks reach the archive and how failures end it. */
static int w_copy_parallel(lua_State *L) {
    Writer *w = checkwriter(L);
    Par *p;
    int nconns, njobs, i, threads = 1, has_progress;
    double interval = 0.25;
    const char *dir = "/tmp";
    long long limit = 64LL << 20;
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 4);
    if (!w->toc_start) return luaL_error(L, "write_toc() must come before data blocks");
    if (w->in_block) return luaL_error(L, "a data block is already open");
    has_progress = 0;
    if (lua_istable(L, 4)) {
        if (lua_getfield(L, 4, "threads") == LUA_TNUMBER) threads = (int)lua_tointeger(L, -1);
        if (lua_getfield(L, 4, "interval") == LUA_TNUMBER) interval = lua_tonumber(L, -1);
        if (lua_getfield(L, 4, "spool_dir") == LUA_TSTRING) dir = lua_tostring(L, -1);
        if (lua_getfield(L, 4, "spool_limit") == LUA_TNUMBER) limit = (long long)lua_tointeger(L, -1);
        has_progress = lua_getfield(L, 4, "progress") == LUA_TFUNCTION;
        lua_pop(L, 5);
    }
    if (interval < 0.01) interval = 0.01;
    nconns = (int)luaL_len(L, 2);
    njobs = (int)luaL_len(L, 3);
    if (nconns < 1) return luaL_argerror(L, 2, "at least one connection expected");
    for (i = 1; i <= nconns; i++) {
        lua_rawgeti(L, 2, i);
        orch_checkconn(L, -1);
        lua_pop(L, 1);
    }
    p = (Par *)lua_newuserdatauv(L, sizeof *p, 0);     /* index 5: freed (threads joined) by __gc whatever happens */
    memset(p, 0, sizeof *p);
    p->finished = 1;
    luaL_setmetatable(L, PAR_MT);
    p->w = w;
    p->streaming = !w->seekable;
    p->spool_limit = limit < (1 << 20) ? (1 << 20) : limit;
    snprintf(p->spool_dir, sizeof p->spool_dir, "%s", dir);
    p->jobs = (PJob *)calloc((size_t)(njobs ? njobs : 1), sizeof(PJob));
    p->workers = (PWorker *)calloc((size_t)nconns, sizeof(PWorker));
    if (!p->jobs || !p->workers) return luaL_error(L, "out of memory");
    p->finished = 0;
    for (i = 0; i < njobs; i++) p->jobs[i].spool_fd = -1;
    for (i = 0; i < nconns; i++) p->workers[i].spool_fd = -1;
    p->njobs = njobs;
    p->nworkers = nconns;
    for (i = 0; i < njobs; i++) {
        PJob *j = &p->jobs[i];
        int t, k;
        lua_rawgeti(L, 3, i + 1);
        t = lua_gettop(L);
        luaL_checktype(L, t, LUA_TTABLE);
        lua_getfield(L, t, "id");
        j->id = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        for (k = 0; k < w->n; k++) if (w->entries[k].id == j->id) break;
        if (k == w->n || !w->entries[k].had_dumper) return luaL_error(L, "job %d: entry %d is not a data entry of this archive", i + 1, j->id);
        if (w->entries[k].pos >= 0) return luaL_error(L, "job %d: the data block of entry %d is written already", i + 1, j->id);
        j->e = &w->entries[k];
        j->order = k;
        if (lua_getfield(L, t, "blobs") != LUA_TNIL) {
            size_t n = luaL_len(L, -1), m;
            luaL_checktype(L, -1, LUA_TTABLE);
            j->kind = JOB_BLOBS;
            j->oids = (unsigned int *)malloc(sizeof(unsigned int) * (n ? n : 1));
            if (!j->oids) return luaL_error(L, "out of memory");
            for (m = 0; m < n; m++) j->oids[j->noids++] = next_oid(L, lua_gettop(L), (lua_Integer)m + 1);
        } else {
            j->copy = dupstr_field(L, t, "copy", 1, i + 1);
            j->lock = dupstr_field(L, t, "lock", 0, i + 1);
        }
        lua_pop(L, 2);
    }
    for (i = 0; i < njobs; i++) {
        int m;
        for (m = i + 1; m < njobs; m++)
            if (p->jobs[m].e == p->jobs[i].e) return luaL_error(L, "entry %d is in the jobs twice", p->jobs[i].id);
    }
    if (p->streaming) {
        /* a stream takes blocks in TOC order only: the jobs must be the next data entries, in that order */
        int k = w->next_block;
        qsort(p->jobs, (size_t)njobs, sizeof(PJob), cmp_order);
        for (i = 0; i < njobs; i++) {
            while (k < w->n && (!w->entries[k].had_dumper || w->entries[k].pos >= 0)) k++;
            if (k >= w->n || &w->entries[k] != p->jobs[i].e)
                return luaL_error(L, "copy_parallel() on a stream: the jobs must be the next data entries of the TOC (entry %d is missing)",
                                  k < w->n ? w->entries[k].id : p->jobs[i].id);
            k++;
        }
    }
    if (nconns > njobs) nconns = p->nworkers = njobs > 0 ? njobs : 1;
    for (i = 0; i < p->nworkers; i++) {
        PWorker *k = &p->workers[i];
        lua_rawgeti(L, 2, i + 1);
        k->pg = orch_checkconn(L, -1);
        lua_pop(L, 1);
        k->par = p;
        k->slot = i + 1;
        k->cancel = PQgetCancel(k->pg);
        if (codec_init(&k->codec, w->algorithm, w->level, threads, worker_out, k) != 0) {
            codec_free(&k->codec);
            return luaL_error(L, "%s", k->codec.errmsg);
        }
        k->codec_ok = 1;
        for (int m = 0; m < njobs; m++)
            if (p->jobs[m].kind == JOB_BLOBS && PQtransactionStatus(k->pg) != PQTRANS_INTRANS)
                return luaL_error(L, "copy_parallel(): connection %d is not inside a transaction (large objects can be read only in one)", i + 1);
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->done, NULL);
    p->sync_ok = 1;
    pthread_mutex_lock(&p->mu);
    for (i = 0; i < p->nworkers; i++) {
        if (pthread_create(&p->workers[i].th, NULL, worker_main, &p->workers[i]) != 0) {
            fail_locked(p, NULL, 1);
            snprintf(p->errmsg, sizeof p->errmsg, "cannot start a dump thread: %s", strerror(errno));
            break;
        }
        p->workers[i].started = 1;
        p->running++;
    }
    {
        struct timespec last;
        int cancelled = 0;
        clock_gettime(CLOCK_MONOTONIC, &last);
        while (p->running > 0) {
            struct timespec now, until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 100 * 1000000L;
            if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&p->done, &p->mu, &until);
            if (orch_interrupted() && !p->failed) fail_locked(p, NULL, 2);
            if (p->failed && !cancelled) {
                /* stop the others where they are: their COPYs and lock waits end */
                cancelled = 1;
                for (i = 0; i < p->nworkers; i++) {
                    char errbuf[256];
                    if (p->workers[i].started && p->workers[i].cancel) PQcancel(p->workers[i].cancel, errbuf, sizeof errbuf);
                }
            }
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (has_progress && !p->failed && (double)(now.tv_sec - last.tv_sec) + (now.tv_nsec - last.tv_nsec) / 1e9 >= interval) {
                last = now;
                pthread_mutex_unlock(&p->mu);
                lua_pushcfunction(L, push_progress);
                lua_pushlightuserdata(L, p);
                lua_getfield(L, 4, "progress");
                if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
                pthread_mutex_lock(&p->mu);
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < p->nworkers; i++) if (p->workers[i].started) { pthread_join(p->workers[i].th, NULL); p->workers[i].started = 0; }
    if (p->failed) {
        PWorker *k = p->failed_by;
        int how = p->failed;
        char msg[450];
        if (how == 2 || (k && orch_interrupted())) { par_stop(p); return orch_raise_interrupt(L); }
        if (k && k->err_pg) {
            int id = k->job ? k->job->id : 0, st;
            lua_pushcfunction(L, raise_worker_pg);
            lua_pushlightuserdata(L, k);
            st = lua_pcall(L, 1, 0, 0);
            par_stop(p);
            if (st != LUA_OK && lua_istable(L, -1)) {
                lua_pushinteger(L, id); lua_setfield(L, -2, "entry");
                lua_pushinteger(L, k->slot); lua_setfield(L, -2, "worker");
            }
            return lua_error(L);
        }
        snprintf(msg, sizeof msg, "%s", k ? (k->errmsg[0] ? k->errmsg : k->codec.errmsg[0] ? k->codec.errmsg : "a dump worker failed")
                                          : p->errmsg[0] ? p->errmsg : "the parallel dump failed");
        par_stop(p);
        return luaL_error(L, "%s", msg);
    }
    lua_createtable(L, 0, njobs);
    for (i = 0; i < njobs; i++) {
        PJob *j = &p->jobs[i];
        w->total_in += j->in;
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, j->rows); lua_setfield(L, -2, "rows");
        lua_pushinteger(L, j->in); lua_setfield(L, -2, "bytes");
        lua_rawseti(L, -2, j->id);
    }
    /* out of TOC order when the placement differs from it */
    {
        long long last = -1;
        for (i = 0; i < w->n; i++) {
            if (!w->entries[i].had_dumper || w->entries[i].pos < 0) continue;
            if (w->entries[i].pos < last) w->reordered = 1;
            last = w->entries[i].pos;
        }
    }
    par_stop(p);
    return 1;
}

/* Put the data entries in the order of their blocks in the file: they keep
 * the slots data entries had in the TOC, so nothing else moves (the length of
 * the TOC does not change either), and a reader walking blocks forward, a pipe
 * included, meets them in TOC order. */
static void order_data_entries(Writer *w) {
    int i, n = 0, k;
    Entry *tmp;
    int *slots;
    for (i = 0; i < w->n; i++) if (w->entries[i].had_dumper) n++;
    if (n < 2) return;
    tmp = (Entry *)malloc(sizeof(Entry) * (size_t)n);
    slots = (int *)malloc(sizeof(int) * (size_t)n);
    if (!tmp || !slots) { free(tmp); free(slots); return; }   /* keep the TOC order: positions stay right */
    for (i = 0, k = 0; i < w->n; i++) if (w->entries[i].had_dumper) { slots[k] = i; tmp[k++] = w->entries[i]; }
    /* insertion sort by position (already sorted but for what the dump reordered) */
    for (i = 1; i < n; i++) {
        Entry x = tmp[i];
        int j = i - 1;
        while (j >= 0 && tmp[j].pos > x.pos) { tmp[j + 1] = tmp[j]; j--; }
        tmp[j + 1] = x;
    }
    for (k = 0; k < n; k++) w->entries[slots[k]] = tmp[k];
    free(tmp);
    free(slots);
}

/* w:close() -> {bytes=, uncompressed=, offsets=bool, reordered=bool}.
 * Seekable outputs get the TOC rewritten with the block positions (and the
 * data entries in the order of their blocks), then fsync. */
static int w_close(lua_State *L) {
    Writer *w = checkwriter(L);
    long long end = w->off;
    int offsets = 0, i;
    if (w->in_block) return luaL_error(L, "close() with a data block still open");
    for (i = 0; i < w->n; i++)
        if (w->entries[i].had_dumper && w->entries[i].pos < 0)
            return luaL_error(L, "close(): the data block of entry %d (%s %s) was never written", w->entries[i].id,
                              w->entries[i].desc, w->entries[i].tag);
    if (w->seekable && w->toc_start) {
        if (w->reordered) order_data_entries(w);
        if (lseek(w->fd, w->toc_start, SEEK_SET) < 0) { w->err = errno; wfail(w, "seeking in the archive failed"); return raise_werr(L, w); }
        w->off = w->toc_start;
        if (write_toc(w)) return raise_werr(L, w);
        offsets = 1;
        w->off = end;
        if (fsync(w->fd) != 0) { w->err = errno; wfail(w, "fsync of the archive failed"); return raise_werr(L, w); }
    }
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, end); lua_setfield(L, -2, "bytes");
    lua_pushstring(L, algorithm_name(w->algorithm)); lua_setfield(L, -2, "compression");
    lua_pushfstring(L, "1.%d", w->minor); lua_setfield(L, -2, "version");
    lua_pushinteger(L, w->total_in); lua_setfield(L, -2, "uncompressed");
    lua_pushboolean(L, offsets); lua_setfield(L, -2, "offsets");
    lua_pushboolean(L, w->reordered); lua_setfield(L, -2, "reordered");
    /* every gzip stream is pdeflate's: header, one chunk per piece of this many input bytes at most, trailer */
    if (w->algorithm == ALG_GZIP) { lua_pushinteger(L, PDEFLATE_CHUNK); lua_setfield(L, -2, "deflate_pieces"); }
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

/*
 * The reader trusts nothing in the file. Integers are accumulated unsigned
 * and must fit a C int, as pg_restore reads them; every allocation is
 * bounded by the bytes the file still holds (strings and the TOC grow as
 * their bytes arrive, so a pipe cannot make it allocate ahead either); the
 * decompressor state lives in the Reader, so an error raised in the middle
 * of a block (a longjmp) leaves nothing behind that r:close()/__gc does not
 * free. Errors name the file, the entry (id, desc, tag) and the byte offset.
 */

#define IOBUF (64 * 1024)

typedef struct REntry {
    int id, had_dumper, section, relkind, offflag;
    long long pos;          /* offset of its block from the TOC (flag SET), else -1 */
    long long found;        /* where a walk over the blocks saw it start, else -1 */
    int *deps, ndeps;
    char label[112];        /* "entry 7 (TABLE DATA public.t)", for messages */
} REntry;

typedef struct Reader {
    FILE *f;
    int closed, seekable, vmaj, vmin, vrev, intsize, offsize, level, algorithm;
    long long data_start, cur;   /* cur: our idea of the position (stream reads) */
    long long walk_end;          /* every block before this offset has its .found set */
    int at_boundary;             /* cur is at a block header (not inside a block) */
    REntry *e;
    int n, cap;
    int *byid;                   /* indices of e sorted by id */
    int strs_ref;                /* registry ref of the entries table (Lua strings) */
    char path[512];
    /* decompression, reused from block to block */
    unsigned char *inbuf, *outbuf;
    z_stream zs;
    int zready;
    LZ4F_dctx *lz;
    ZSTD_DStream *zd;
    int dec_done;                /* the current stream (or frame) is complete */
    /* gzip streams whose chunks inflate one by one (orch's own, see read_pieces): the
     * largest piece's output, 0 when the archive is not known to be written so */
    size_t pieces;
    struct libdeflate_decompressor *ld;
    unsigned char *pc[3];        /* the last three chunks read */
    size_t pclen[3], pccap[3];
    unsigned char *pout;
    unsigned char head[5];       /* the current stream's first bytes (frame magic + flags) */
    int headlen;
    long long unchecked;         /* streams read so far that carry no checksum of their own */
    Sha256 sha;                  /* SHA-256 of the bytes read so far, while reads are contiguous */
    long long hashed;            /* bytes 0..hashed-1 are (queued to be) in sha */
    long long size;              /* file size, -1 for a pipe */
    /* the hashing runs on a thread of its own, fed through a small ring of buffers */
    pthread_t hth;
    pthread_mutex_t hmu;
    pthread_cond_t hcv;
    unsigned char *ring[4];
    size_t ringlen[4];
    unsigned char *fill;         /* the slot being filled: handed over when full (or drained) */
    size_t fill_len;
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

/* Hand the filled slot to the hash thread (blocks while the ring is full):
 * its buffer changes places with the free ring slot's. */
static void hash_push(Reader *r) {
    int slot;
    unsigned char *b;
    if (!r->fill_len) return;
    pthread_mutex_lock(&r->hmu);
    while (r->rcount == 4) pthread_cond_wait(&r->hcv, &r->hmu);
    slot = (r->rhead + r->rcount) % 4;
    b = r->ring[slot];
    r->ring[slot] = r->fill;
    r->ringlen[slot] = r->fill_len;
    r->fill = b;
    r->fill_len = 0;
    r->rcount++;
    pthread_cond_broadcast(&r->hcv);
    pthread_mutex_unlock(&r->hmu);
}

/* Queue bytes for the hash thread: gathered into whole slots, so the many
 * small reads of a large TOC cost a copy each, not a hand-over each. */
static void hash_feed(Reader *r, const unsigned char *p, size_t n) {
    while (n > 0) {
        size_t k = HASH_SLOT - r->fill_len;
        if (k > n) k = n;
        memcpy(r->fill + r->fill_len, p, k);
        r->fill_len += k;
        p += k;
        n -= k;
        if (r->fill_len == HASH_SLOT) hash_push(r);
    }
}

/* Wait until the hash thread has consumed everything fed. */
static void hash_drain(Reader *r) {
    if (!r->hstarted) return;
    hash_push(r);
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
    free(r->fill);
    r->fill = NULL;
    r->fill_len = 0;
}

/* Stop hashing what r reads (a reader that seeks, or whose file is proven otherwise). */
static void reader_no_hash(Reader *r) {
    hash_stop(r);
    r->hashed = -1;
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

/* Raise "<file>: <message>". A fact about the file, not a program error:
 * no Lua position. Everything the reader allocated stays in r. */
static int rfail(lua_State *L, Reader *r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rfail(lua_State *L, Reader *r, const char *fmt, ...) {
    va_list ap;
    char msg[600];
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_pushfstring(L, "%s: %s", r->path, msg);
    return lua_error(L);
}

/* Bytes left in the file after the current position (LLONG_MAX on a pipe). */
static long long remaining(const Reader *r) {
    return r->size < 0 ? LLONG_MAX : r->size - r->cur;
}

static void rread(lua_State *L, Reader *r, void *buf, size_t n, const char *what) {
    long long at = r->cur;
    if (n && fread(buf, 1, n, r->f) != n) {
        if (ferror(r->f)) rfail(L, r, "read error at byte %lld while reading %s: %s", at, what, strerror(errno));
        rfail(L, r, "archive is truncated: the file ends at byte %lld while reading %s", at, what);
    }
    rhash(r, buf, n, r->cur);
    r->cur += (long long)n;
}

/* Int: a sign byte, then intSize magnitude bytes, least significant first.
 * Accumulated unsigned (intSize may be 8); pg_restore keeps Ints in a C
 * int, so a value outside -2^31..2^31-1 is refused, never wrapped. */
static long long get_int(lua_State *L, Reader *r, const char *what) {
    unsigned char b[9];
    unsigned long long m = 0;
    long long at = r->cur;
    int i;
    rread(L, r, b, (size_t)r->intsize + 1, what);
    for (i = r->intsize; i >= 1; i--) m = (m << 8) | b[i];
    if (m > (b[0] ? 0x80000000ULL : 0x7fffffffULL))
        rfail(L, r, "integer %s%llu at byte %lld in %s does not fit in 32 bits (corrupt archive)", b[0] ? "-" : "", m, at, what);
    return b[0] ? -(long long)m : (long long)m;
}

/* Read a Str onto the Lua stack (nil for NULL). Its length must fit in
 * what the file still holds; the buffer grows as the bytes arrive. */
static void get_str(lua_State *L, Reader *r, const char *what) {
    long long at = r->cur;
    long long n = get_int(L, r, what);
    luaL_Buffer b;
    if (n < 0) { lua_pushnil(L); return; }
    if (n > remaining(r))
        rfail(L, r, "archive is truncated or corrupt: a string of %lld bytes at byte %lld in %s runs past the end of the file (%lld bytes)", n, at, what, r->size);
    luaL_buffinit(L, &b);
    while (n > 0) {
        size_t k = n > IOBUF ? IOBUF : (size_t)n;
        char *p = luaL_prepbuffsize(&b, k);
        rread(L, r, p, k, what);
        luaL_addsize(&b, k);
        n -= (long long)k;
    }
    luaL_pushresult(&b);
}

static Reader *checkreader(lua_State *L) {
    Reader *r = (Reader *)luaL_checkudata(L, 1, READER_MT);
    if (r->closed) luaL_error(L, "attempt to use a closed archive");
    return r;
}

/* Free everything the reader holds; safe to call twice. */
static int r_close(lua_State *L) {
    Reader *r = (Reader *)luaL_checkudata(L, 1, READER_MT);
    if (!r->closed) {
        int i;
        hash_stop(r);
        sha256_free(&r->sha);
        if (r->f && r->f != stdin) fclose(r->f);
        r->f = NULL;
        for (i = 0; i < r->n; i++) free(r->e[i].deps);
        free(r->e); r->e = NULL;
        free(r->byid); r->byid = NULL;
        r->n = r->cap = 0;
        if (r->zready) inflateEnd(&r->zs);
        r->zready = 0;
        if (r->lz) LZ4F_freeDecompressionContext(r->lz);
        r->lz = NULL;
        if (r->zd) ZSTD_freeDStream(r->zd);
        r->zd = NULL;
        free(r->inbuf); free(r->outbuf);
        r->inbuf = r->outbuf = NULL;
        if (r->ld) libdeflate_free_decompressor(r->ld);
        r->ld = NULL;
        for (i = 0; i < 3; i++) { free(r->pc[i]); r->pc[i] = NULL; r->pccap[i] = 0; }
        free(r->pout);
        r->pout = NULL;
        luaL_unref(L, LUA_REGISTRYINDEX, r->strs_ref);
        r->strs_ref = LUA_NOREF;
        r->closed = 1;
    }
    return 0;
}

static const char *section_name(int s) {
    return s == 1 ? "none" : s == 2 ? "pre-data" : s == 3 ? "data" : s == 4 ? "post-data" : "unknown";
}


/* "entry 7 (TABLE DATA public.t)" from the fields on the Lua table at -1. */
static void make_label(lua_State *L, REntry *e) {
    const char *desc, *ns, *tag;
    lua_getfield(L, -1, "desc");
    lua_getfield(L, -2, "namespace");
    lua_getfield(L, -3, "tag");
    desc = lua_tostring(L, -3);
    ns = lua_tostring(L, -2);
    tag = lua_tostring(L, -1);
    snprintf(e->label, sizeof e->label, "entry %d (%.40s %.30s%s%.40s)", e->id, desc ? desc : "?",
             ns ? ns : "", ns ? "." : "", tag ? tag : "?");
    lua_pop(L, 3);
}

static int cmp_byid(const void *a, const void *b, void *ctx) {
    const REntry *e = (const REntry *)ctx;
    int x = e[*(const int *)a].id, y = e[*(const int *)b].id;
    return x < y ? -1 : x > y;
}

static REntry *find_entry(Reader *r, int id) {
    int lo = 0, hi = r->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        REntry *e = &r->e[r->byid[mid]];
        if (e->id == id) return e;
        if (e->id < id) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

/* Read one TOC entry (the table of its fields is pushed). */
static void read_entry(lua_State *L, Reader *r, REntry *e, int index, int count) {
    char what[160];
    int j, cap = 0;
    unsigned char off[17];
    unsigned long long p = 0;
    long long at = r->cur;
    snprintf(what, sizeof what, "TOC entry %d of %d (starting at byte %lld)", index, count, at);
    lua_createtable(L, 0, 18);
    e->id = (int)get_int(L, r, what);
    if (e->id <= 0) rfail(L, r, "%s has a bad dump id %d", what, e->id);
    e->had_dumper = get_int(L, r, what) != 0;
    lua_pushinteger(L, e->id); lua_setfield(L, -2, "id");
    lua_pushboolean(L, e->had_dumper); lua_setfield(L, -2, "had_dumper");
    get_str(L, r, what); lua_setfield(L, -2, "tableoid");
    get_str(L, r, what); lua_setfield(L, -2, "oid");
    get_str(L, r, what); lua_setfield(L, -2, "tag");
    get_str(L, r, what); lua_setfield(L, -2, "desc");
    make_label(L, e);
    snprintf(what, sizeof what, "the TOC %s (starting at byte %lld)", e->label, at);
    e->section = (int)get_int(L, r, what);
    if (e->section < 1 || e->section > 4) rfail(L, r, "%s has an unknown section %d (corrupt archive)", what, e->section);
    lua_pushstring(L, section_name(e->section)); lua_setfield(L, -2, "section");
    get_str(L, r, what); lua_setfield(L, -2, "defn");
    get_str(L, r, what); lua_setfield(L, -2, "drop");
    get_str(L, r, what); lua_setfield(L, -2, "copy");
    get_str(L, r, what); lua_setfield(L, -2, "namespace");
    make_label(L, e);   /* now with the namespace */
    snprintf(what, sizeof what, "the TOC %s (starting at byte %lld)", e->label, at);
    get_str(L, r, what); lua_setfield(L, -2, "tablespace");
    if (r->vmin >= 14) { get_str(L, r, what); lua_setfield(L, -2, "tableam"); }
    if (r->vmin >= 16) {
        e->relkind = (int)get_int(L, r, what);
        lua_pushinteger(L, e->relkind); lua_setfield(L, -2, "relkind");
    }
    get_str(L, r, what); lua_setfield(L, -2, "owner");
    get_str(L, r, what); lua_pop(L, 1);        /* WITH OIDS */
    lua_newtable(L);
    for (j = 1;; j++) {
        const char *s;
        char *end;
        long v;
        get_str(L, r, what);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        s = lua_tostring(L, -1);
        errno = 0;
        v = strtol(s, &end, 10);
        if (end == s || *end || errno || v <= 0 || v > INT_MAX)
            rfail(L, r, "%s has a dependency \"%.40s\" that is not a dump id (corrupt archive)", what, s);
        if (e->ndeps == cap) {
            int nc = cap ? cap * 2 : 4;
            int *nd = (int *)realloc(e->deps, sizeof(int) * (size_t)nc);
            if (!nd) luaL_error(L, "out of memory");
            e->deps = nd;
            cap = nc;
        }
        e->deps[e->ndeps++] = (int)v;
        lua_pop(L, 1);
        lua_pushinteger(L, v);
        lua_rawseti(L, -2, j);
    }
    lua_setfield(L, -2, "deps");
    at = r->cur;
    rread(L, r, off, (size_t)r->offsize + 1, what);
    e->offflag = off[0];
    if (e->offflag < OFF_NOT_SET || e->offflag > OFF_NO_DATA)
        rfail(L, r, "%s has an unexpected data offset flag %d at byte %lld (corrupt archive)", what, e->offflag, at);
    for (j = r->offsize; j >= 1; j--) {
        if (j > 8 && off[j]) rfail(L, r, "%s has a data offset at byte %lld too large for any file", what, at);
        p = (p << 8) | off[j];
    }
    if (p > (unsigned long long)LLONG_MAX || (r->size >= 0 && e->offflag == OFF_SET && (long long)p >= r->size))
        rfail(L, r, "archive is truncated or corrupt: %s says its data block is at byte %llu, past the end of the file (%lld bytes)", what, p, r->size);
    e->pos = e->offflag == OFF_SET ? (long long)p : -1;
    e->found = -1;
    if (e->pos >= 0) { lua_pushinteger(L, e->pos); lua_setfield(L, -2, "pos"); }
}

/* A.open(path|"-") -> reader. Reads and checks the header and the TOC. */
static int a_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    Reader *r = (Reader *)lua_newuserdatauv(L, sizeof *r, 0);
    unsigned char magic[5], hb[6];
    int i, count, ents;
    long long min_entry;
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
    r->at_boundary = 1;
    if (sha256_init(&r->sha) != 0) r->hashed = -1;
    r->inbuf = (unsigned char *)malloc(IOBUF);
    r->outbuf = (unsigned char *)malloc(IOBUF);
    if (!r->inbuf || !r->outbuf) return luaL_error(L, "out of memory");
    {
        struct stat st;
        int k, ok = 1;
        r->size = r->f != stdin && fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
        for (k = 0; k < 4; k++) if (!(r->ring[k] = (unsigned char *)malloc(HASH_SLOT))) ok = 0;
        if (!(r->fill = (unsigned char *)malloc(HASH_SLOT))) ok = 0;
        if (ok && r->size >= 0) {
            pthread_mutex_init(&r->hmu, NULL);
            pthread_cond_init(&r->hcv, NULL);
            r->hstarted = pthread_create(&r->hth, NULL, hash_worker, r) == 0;
            if (!r->hstarted) { pthread_mutex_destroy(&r->hmu); pthread_cond_destroy(&r->hcv); }
        }
        if (!r->hstarted || r->sha.failed) r->hashed = -1;
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
        return rfail(L, r, "bad integer/offset sizes %d/%d in the header (corrupt archive)", r->intsize, r->offsize);
    if (hb[5] != 1) return rfail(L, r, "archive format %d is not the custom format (1)", hb[5]);
    if (r->vmin >= 15) {
        unsigned char a;
        rread(L, r, &a, 1, "the compression algorithm");
        if (a > 3) return rfail(L, r, "unknown compression algorithm %d in the header at byte 11 (orch knows none, gzip, lz4, zstd)", a);
        r->algorithm = a;
        r->level = a == 0 ? 0 : -1;
    } else {
        r->level = (int)get_int(L, r, "the compression level");
        if (r->level < -1 || r->level > 9)
            return rfail(L, r, "invalid compression level %d in the header at byte 11 (corrupt archive)", r->level);
        r->algorithm = r->level == 0 ? 0 : 1;
    }
    lua_createtable(L, 0, 12);        /* header table, kept with the entries */
    for (i = 0; i < 7; i++) (void)get_int(L, r, "the creation date");
    get_str(L, r, "the database name"); lua_setfield(L, -2, "dbname");
    get_str(L, r, "the server version"); lua_setfield(L, -2, "server_version");
    get_str(L, r, "the pg_dump version"); lua_setfield(L, -2, "dumper_version");
    lua_pushfstring(L, "%d.%d", r->vmaj, r->vmin); lua_setfield(L, -2, "version");
    lua_pushinteger(L, r->level); lua_setfield(L, -2, "level");
    lua_pushstring(L, algorithm_name(r->algorithm)); lua_setfield(L, -2, "compression");
    {
        long long at = r->cur;
        count = (int)get_int(L, r, "the TOC count");
        /* the smallest entry: 3 Ints, 12 Strs, the deps terminator, the offset */
        min_entry = (long long)(3 + 13 + (r->vmin >= 16)) * (r->intsize + 1) + r->offsize + 1;
        if (count < 0 || (long long)count > remaining(r) / min_entry)
            return rfail(L, r, "archive is truncated or corrupt: the TOC at byte %lld claims %d entries, more than the %lld bytes after it can hold",
                         at, count, remaining(r));
    }
    lua_createtable(L, count < 1024 ? count : 1024, 0);     /* entries */
    ents = lua_gettop(L);
    for (i = 0; i < count; i++) {
        if (r->n == r->cap) {   /* grows as entries arrive, never ahead of the file */
            int nc = r->cap ? r->cap * 2 : 64;
            REntry *ne = (REntry *)realloc(r->e, sizeof(REntry) * (size_t)nc);
            if (!ne) return luaL_error(L, "out of memory");
            r->e = ne;
            r->cap = nc;
        }
        memset(&r->e[r->n], 0, sizeof(REntry));
        r->n++;               /* from here on r_close frees its deps */
        read_entry(L, r, &r->e[i], i + 1, count);
        lua_rawseti(L, ents, i + 1);
    }
    r->data_start = r->walk_end = r->cur;
    r->byid = (int *)malloc(sizeof(int) * (size_t)(r->n ? r->n : 1));
    if (!r->byid) return luaL_error(L, "out of memory");
    for (i = 0; i < r->n; i++) r->byid[i] = i;
    qsort_r(r->byid, (size_t)r->n, sizeof(int), cmp_byid, r->e);
    for (i = 1; i < r->n; i++)
        if (r->e[r->byid[i]].id == r->e[r->byid[i - 1]].id)
            return rfail(L, r, "two TOC entries have dump id %d: %s and %s (corrupt archive)", r->e[r->byid[i]].id,
                         r->e[r->byid[i - 1]].label, r->e[r->byid[i]].label);
    for (i = 0; i < r->n; i++)
        if (r->e[i].pos >= 0 && r->e[i].pos < r->data_start)
            return rfail(L, r, "the TOC %s says its data block is at byte %lld, inside the header or TOC (corrupt archive)",
                         r->e[i].label, r->e[i].pos);
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

/* ---------------------------------------------------------------- blocks */

/* Where decompressed bytes go. data() returns 0 (a sink that fails keeps
 * its own state and lets the block be read to its end). lo_begin/lo_end
 * frame each large object of a BLOBS block; any of them may be NULL. */
typedef struct Sink {
    int (*data)(lua_State *L, void *ud, const char *buf, size_t len);
    void (*lo_begin)(lua_State *L, void *ud, unsigned int oid);
    void (*lo_end)(lua_State *L, void *ud, unsigned int oid);
    void *ud;
} Sink;

typedef struct BlockInfo { int type; long long bytes, los; } BlockInfo;

/* Start decompressing a new stream with the archive's algorithm. */
static void dec_begin(lua_State *L, Reader *r, REntry *e) {
    r->dec_done = 0;
    r->headlen = 0;
    switch (r->algorithm) {
    case 1:
        if (!r->zready) {
            memset(&r->zs, 0, sizeof r->zs);
            if (inflateInit(&r->zs) != Z_OK) luaL_error(L, "zlib cannot start (out of memory?)");
            r->zready = 1;
        } else if (inflateReset(&r->zs) != Z_OK) luaL_error(L, "zlib reset failed");
        break;
    case 2:
        if (!r->lz) {
            if (LZ4F_isError(LZ4F_createDecompressionContext(&r->lz, LZ4F_VERSION))) {
                r->lz = NULL;
                luaL_error(L, "lz4 cannot start (out of memory?)");
            }
        } else LZ4F_resetDecompressionContext(r->lz);
        break;
    case 3:
        if (!r->zd) {
            if (!(r->zd = ZSTD_createDStream())) luaL_error(L, "zstd cannot start (out of memory?)");
        } else ZSTD_DCtx_reset(r->zd, ZSTD_reset_session_only);
        break;
    default:
        r->dec_done = 1;   /* raw bytes: always complete */
    }
    (void)e;
}

static long long emit(lua_State *L, const Sink *s, const unsigned char *p, size_t n) {
    if (n && s && s->data) s->data(L, s->ud, (const char *)p, n);
    return (long long)n;
}

/* Decompress one piece of a stream into the sink; returns bytes produced.
 * at = file offset of the piece, for messages. */
static long long dec_feed(lua_State *L, Reader *r, REntry *e, const char *what, const unsigned char *in, size_t len,
                          long long at, const Sink *s) {
    long long total = 0;
    switch (r->algorithm) {
    case 0:
        return emit(L, s, in, len);
    case 1:
        r->zs.next_in = (Bytef *)in;
        r->zs.avail_in = (uInt)len;
        for (;;) {
            int rc;
            size_t made;
            if (r->dec_done) {
                if (r->zs.avail_in)
                    rfail(L, r, "the data block of %s is corrupt: bytes after the end of the compressed stream of %s (near byte %lld)",
                          e->label, what, at + (long long)(len - r->zs.avail_in));
                break;
            }
            r->zs.next_out = r->outbuf;
            r->zs.avail_out = IOBUF;
            rc = inflate(&r->zs, Z_NO_FLUSH);
            made = IOBUF - r->zs.avail_out;
            if (rc == Z_STREAM_END) r->dec_done = 1;
            else if (rc == Z_BUF_ERROR && made == 0) break;        /* needs more input */
            else if (rc != Z_OK && rc != Z_BUF_ERROR)
                rfail(L, r, "the data block of %s is corrupt: zlib: %s in %s (near byte %lld)", e->label,
                      r->zs.msg ? r->zs.msg : "invalid data", what, at + (long long)(len - r->zs.avail_in));
            total += emit(L, s, r->outbuf, made);
            if (!r->dec_done && r->zs.avail_in == 0 && r->zs.avail_out != 0) break;
        }
        return total;
    case 2: {
        size_t off = 0;
        for (;;) {
            size_t outsz = IOBUF, insz = len - off, rc;
            rc = LZ4F_decompress(r->lz, r->outbuf, &outsz, in + off, &insz, NULL);
            if (LZ4F_isError(rc))
                rfail(L, r, "the data block of %s is corrupt: lz4: %s in %s (near byte %lld)", e->label,
                      LZ4F_getErrorName(rc), what, at + (long long)off);
            off += insz;
            total += emit(L, s, r->outbuf, outsz);
            r->dec_done = rc == 0;
            if (off == len && outsz < IOBUF) break;
            if (insz == 0 && outsz == 0)
                rfail(L, r, "the data block of %s is corrupt: lz4 made no progress in %s (near byte %lld)", e->label, what, at + (long long)off);
        }
        return total;
    }
    default: {
        ZSTD_inBuffer ib = { in, len, 0 };
        for (;;) {
            ZSTD_outBuffer ob = { r->outbuf, IOBUF, 0 };
            size_t rc = ZSTD_decompressStream(r->zd, &ob, &ib);
            if (ZSTD_isError(rc))
                rfail(L, r, "the data block of %s is corrupt: zstd: %s in %s (near byte %lld)", e->label,
                      ZSTD_getErrorName(rc), what, at + (long long)ib.pos);
            total += emit(L, s, r->outbuf, ob.pos);
            r->dec_done = rc == 0;
            if (ib.pos == ib.size && ob.pos < ob.size) break;
        }
        return total;
    }
    }
}

/* The next chunk length of a stream of entry e: 0 at its end; a negative one
 * or one running past the end of the file is named as corruption. */
static long long chunk_len(lua_State *L, Reader *r, REntry *e, const char *lenwhat) {
    long long at = r->cur;
    long long len = get_int(L, r, lenwhat);
    if (len < 0) rfail(L, r, "bad chunk length %lld at byte %lld in the data block of %s (corrupt archive)", len, at, e->label);
    if (len > remaining(r))
        rfail(L, r, "archive is truncated: a chunk of %lld bytes at byte %lld in the data block of %s runs past the end of the file (%lld bytes)",
              len, at, e->label, r->size);
    return len;
}

/* Read k bytes of entry e's data block into buf (hashed, counted in r->cur). */
static void stream_bytes(lua_State *L, Reader *r, REntry *e, unsigned char *buf, size_t k) {
    long long pos = r->cur;
    if (fread(buf, 1, k, r->f) != k)
        rfail(L, r, "archive is truncated: the file ends at byte %lld inside the data block of %s", pos, e->label);
    rhash(r, buf, k, pos);
    r->cur += (long long)k;
}

/* One piece of an orch gzip stream (see read_pieces) inflated by libdeflate
 * into the sink: a non-final one gets a final empty stored block appended
 * (it ends byte-aligned after its own empty stored block), the final one is
 * whole as it is; either must be used up exactly. */
static long long inflate_piece(lua_State *L, Reader *r, REntry *e, const char *what, int slot, int final,
                               uint32_t *adler, const Sink *s) {
    static const unsigned char end_block[5] = { 0x01, 0x00, 0x00, 0xff, 0xff };
    size_t len = r->pclen[slot], used = 0, made = 0;
    enum libdeflate_result rc;
    if (!final) memcpy(r->pc[slot] + len, end_block, 5), len += 5;
    rc = libdeflate_deflate_decompress_ex(r->ld, r->pc[slot], len, r->pout, r->pieces, &used, &made);
    if (rc != LIBDEFLATE_SUCCESS || used != len)
        rfail(L, r, "the data block of %s is corrupt: a piece of %s does not inflate on its own (%s), although the "
              "manifest says orch wrote the archive so: the archive is damaged, or the manifest is not its own", e->label, what,
              rc == LIBDEFLATE_INSUFFICIENT_SPACE ? "it holds more than a piece" : rc != LIBDEFLATE_SUCCESS ? "bad deflate data" : "bytes left over");
    *adler = libdeflate_adler32(*adler, r->pout, made);
    return emit(L, s, r->pout, made);
}

/* Read a gzip stream orch's pdeflate wrote, each chunk inflated on its own
 * (libdeflate, whole buffers: about twice zlib's speed): the zlib header
 * alone in the first chunk, then one chunk per piece of r->pieces input
 * bytes at most, compressed without a dictionary, every piece but the last
 * ending with an empty stored block, then the Adler-32 alone in the last
 * chunk. Whether a chunk is the last piece is known only two chunks later,
 * so the last three are kept. Only for archives whose manifest (proven by
 * its SHA-256) says they were written so; anything else in them is named
 * as corrupt. */
static long long read_pieces(lua_State *L, Reader *r, REntry *e, const char *what, const char *lenwhat, const Sink *s) {
    long long total = 0, chunks = 0;
    uint32_t adler = 1, want;
    int i, cur = 0;
    if (!r->ld && !(r->ld = libdeflate_alloc_decompressor())) luaL_error(L, "out of memory");
    if (!r->pout && !(r->pout = (unsigned char *)malloc(r->pieces))) luaL_error(L, "out of memory");
    for (;;) {
        long long at = r->cur;
        long long len = chunk_len(L, r, e, lenwhat), done = 0;
        if (len == 0) break;
        if ((size_t)len > r->pieces + r->pieces / 8 + 4096)
            rfail(L, r, "the data block of %s is corrupt: a chunk of %lld bytes at byte %lld is larger than a piece compresses to", e->label, len, at);
        /* the chunk two before this one is a piece that is not the last */
        if (chunks >= 3) total += inflate_piece(L, r, e, what, (cur + 1) % 3, 0, &adler, s);
        if (r->pccap[cur] < (size_t)len + 5) {
            unsigned char *nb = (unsigned char *)realloc(r->pc[cur], (size_t)len + 5);
            if (!nb) luaL_error(L, "out of memory");
            r->pc[cur] = nb;
            r->pccap[cur] = (size_t)len + 5;
        }
        while (done < len) {
            size_t k = len - done > IOBUF ? IOBUF : (size_t)(len - done);
            stream_bytes(L, r, e, r->pc[cur] + done, k);
            done += (long long)k;
        }
        r->pclen[cur] = (size_t)len;
        if (chunks == 0) {
            const unsigned char *h = r->pc[cur];
            if (len != 2 || (h[0] & 0x0f) != 8 || (h[0] >> 4) > 7 || (h[1] & 0x20) || ((h[0] << 8) | h[1]) % 31)
                rfail(L, r, "the data block of %s is corrupt: %s does not begin with a zlib header in a chunk of its own, "
                      "although the manifest says orch wrote the archive so", e->label, what);
        }
        chunks++;
        cur = (cur + 1) % 3;
    }
    /* the last chunk (cur - 1) is the Adler-32, the one before it the last piece */
    if (chunks < 3) rfail(L, r, "the data block of %s is corrupt: the compressed stream of %s is incomplete", e->label, what);
    i = (cur + 2) % 3;     /* the last chunk */
    if (r->pclen[i] != 4)
        rfail(L, r, "the data block of %s is corrupt: the compressed stream of %s does not end with its Adler-32 in a chunk of its own", e->label, what);
    total += inflate_piece(L, r, e, what, (cur + 1) % 3, 1, &adler, s);
    want = ((uint32_t)r->pc[i][0] << 24) | ((uint32_t)r->pc[i][1] << 16) | ((uint32_t)r->pc[i][2] << 8) | r->pc[i][3];
    if (want != adler)
        rfail(L, r, "the data block of %s is corrupt: the Adler-32 of %s does not match its data", e->label, what);
    r->dec_done = 1;
    return total;
}

/* Read the chunks of one stream (a TABLE DATA block, or one large object)
 * up to its Int 0, decompressing into s; the stream must end exactly
 * there. Returns the decompressed bytes. */
static long long read_stream(lua_State *L, Reader *r, REntry *e, const char *what, const Sink *s) {
    long long total = 0;
    char lenwhat[200];
    snprintf(lenwhat, sizeof lenwhat, "a chunk length in the data block of %s (%s)", e->label, what);
    if (r->algorithm == ALG_GZIP && r->pieces) return read_pieces(L, r, e, what, lenwhat, s);
    dec_begin(L, r, e);
    for (;;) {
        long long len = chunk_len(L, r, e, lenwhat);
        if (len == 0) break;
        while (len > 0) {
            size_t k = len > IOBUF ? IOBUF : (size_t)len;
            long long pos = r->cur;
            stream_bytes(L, r, e, r->inbuf, k);
            while (r->headlen < 5 && (size_t)r->headlen < k) { r->head[r->headlen] = r->inbuf[r->headlen]; r->headlen++; }
            len -= (long long)k;
            total += dec_feed(L, r, e, what, r->inbuf, k, pos, s);
        }
    }
    if (!r->dec_done)
        rfail(L, r, "the data block of %s is corrupt: the compressed stream of %s is incomplete (it stops at byte %lld)",
              e->label, what, r->cur);
    /* zlib streams end with an Adler-32; an lz4 or zstd frame has a content
     * checksum only when its flags byte (after the 4-byte magic) says so,
     * bit 2 in both formats. pg_dump 16/17 write theirs without; orch with. */
    if (r->algorithm == ALG_NONE || (r->algorithm >= ALG_LZ4 && (r->headlen < 5 || !(r->head[4] & 0x04)))) r->unchecked++;
    return total;
}

/* Skip one stream's chunks (a block that is not the one asked for). */
static void skip_stream(lua_State *L, Reader *r, REntry *e) {
    char lenwhat[160];
    snprintf(lenwhat, sizeof lenwhat, "a chunk length in the data block of %s", e->label);
    for (;;) {
        long long at = r->cur;
        long long len = get_int(L, r, lenwhat);
        if (len == 0) return;
        if (len < 0) rfail(L, r, "bad chunk length %lld at byte %lld in the data block of %s (corrupt archive)", len, at, e->label);
        if (len > remaining(r))
            rfail(L, r, "archive is truncated: a chunk of %lld bytes at byte %lld in the data block of %s runs past the end of the file",
                  len, at, e->label);
        if (r->seekable) {
            if (fseeko(r->f, len, SEEK_CUR) != 0) rfail(L, r, "cannot seek in the archive: %s", strerror(errno));
            r->cur += len;
        } else {
            while (len > 0) {
                size_t k = len > IOBUF ? IOBUF : (size_t)len;
                rread(L, r, r->inbuf, k, lenwhat);
                len -= (long long)k;
            }
        }
    }
}

/* A large object's oid from its Int: pg_dump writes an Oid >= 2^31 as a
 * negative int; the cast back restores it. */
static unsigned int lo_oid(long long v) { return (unsigned int)(int)v; }

/* Read (sink) or skip (s == NULL and skip) the body of a block whose header
 * (type, id) was just read. */
static void block_body(lua_State *L, Reader *r, REntry *e, int type, const Sink *s, int skip, BlockInfo *bi) {
    if (type == BLK_DATA) {
        if (skip) skip_stream(L, r, e);
        else bi->bytes += read_stream(L, r, e, "its data", s);
        return;
    }
    for (;;) {
        char what[160];
        long long at = r->cur;
        long long v;
        unsigned int oid;
        snprintf(what, sizeof what, "a large object id in the data block of %s", e->label);
        v = get_int(L, r, what);
        if (v == 0) return;
        oid = lo_oid(v);
        if (skip) { skip_stream(L, r, e); continue; }
        snprintf(what, sizeof what, "large object %u (at byte %lld)", oid, at);
        if (s && s->lo_begin) s->lo_begin(L, s->ud, oid);
        bi->bytes += read_stream(L, r, e, what, s);
        bi->los++;
        if (s && s->lo_end) s->lo_end(L, s->ud, oid);
    }
}

static void seek_to(lua_State *L, Reader *r, long long pos) {
    if (r->cur == pos) return;
    if (fseeko(r->f, pos, SEEK_SET) != 0) rfail(L, r, "cannot seek to byte %lld of the archive: %s", pos, strerror(errno));
    r->cur = pos;
}

/* Position at the header of e's block and read it; returns the block type.
 * With a known offset it seeks there; otherwise it walks the blocks forward
 * (from the furthest point walked so far on a file, from here on a pipe),
 * remembering where each one starts. */
static int locate(lua_State *L, Reader *r, REntry *e) {
    long long target;
    if (!e->had_dumper) rfail(L, r, "%s has no data block", e->label);
    if (!r->seekable && !r->at_boundary)
        rfail(L, r, "cannot read the data block of %s: an earlier read stopped inside a block, and this input cannot seek", e->label);
    target = e->pos >= 0 ? e->pos : e->found;
    if (r->seekable) seek_to(L, r, target >= 0 ? target : r->walk_end);
    else if (e->found >= 0 && e->found < r->cur)
        rfail(L, r, "cannot read the data block of %s: it was passed already, and this input cannot seek back "
                    "(blocks must be read in file order from a pipe)", e->label);
    for (;;) {
        unsigned char type;
        long long at = r->cur;
        char what[80];
        int bid;
        REntry *b;
        BlockInfo bi = { 0, 0, 0 };
        if (fread(&type, 1, 1, r->f) != 1) {
            if (ferror(r->f)) rfail(L, r, "read error at byte %lld: %s", at, strerror(errno));
            rfail(L, r, "could not find the data block of %s: the archive ends at byte %lld first (truncated, or blocks out of order on a pipe)",
                  e->label, at);
        }
        rhash(r, &type, 1, r->cur);
        r->cur++;
        r->at_boundary = 0;
        if (type != BLK_DATA && type != BLK_BLOBS)
            rfail(L, r, "unknown data block type %d at byte %lld (corrupt archive; looking for the block of %s)", type, at, e->label);
        snprintf(what, sizeof what, "the block id at byte %lld", at + 1);
        bid = (int)get_int(L, r, what);
        b = find_entry(r, bid);
        if (!b || !b->had_dumper)
            rfail(L, r, "the data block at byte %lld has id %d, which is %s (corrupt archive)", at, bid,
                  b ? "an entry without data" : "not in the TOC");
        if (b->found < 0) b->found = at;
        else if (b->found != at)
            rfail(L, r, "a second data block for %s at byte %lld (the first is at byte %lld; corrupt archive)", b->label, at, b->found);
        if (b == e) return type;
        if (target >= 0)
            rfail(L, r, "found the block of %s at byte %lld, where the TOC says the block of %s is (corrupt archive)", b->label, at, e->label);
        block_body(L, r, b, type, NULL, 1, &bi);
        r->at_boundary = 1;
        if (at == r->walk_end) r->walk_end = r->cur;
    }
}

/* Stream the decompressed bytes of entry id's block into s. want_type: 0
 * for any, else the block type the caller can handle. */
static BlockInfo read_block(lua_State *L, Reader *r, int id, const Sink *s, int want_type) {
    REntry *e = find_entry(r, id);
    BlockInfo bi = { 0, 0, 0 };
    long long at;
    if (!e) rfail(L, r, "no TOC entry with dump id %d", id);
    at = r->cur;
    bi.type = locate(L, r, e);
    at = e->found;
    if (want_type && bi.type != want_type)
        rfail(L, r, "the data block of %s (at byte %lld) holds %s, not %s", e->label, at,
              bi.type == BLK_BLOBS ? "large objects" : "table data", want_type == BLK_BLOBS ? "large objects" : "table data");
    block_body(L, r, e, bi.type, s, 0, &bi);
    r->at_boundary = 1;
    if (at == r->walk_end) r->walk_end = r->cur;
    return bi;
}

/* r:read_block(id [, fn]) -> bytes. fn(chunk) gets the decompressed data;
 * for a BLOBS block fn(chunk, oid), and fn("", oid) as each large object
 * starts (so empty ones are seen too). */
typedef struct LuaSink { int fn; unsigned int oid; int blobs; } LuaSink;

static int lua_sink(lua_State *L, void *ud, const char *buf, size_t len) {
    LuaSink *ls = (LuaSink *)ud;
    lua_pushvalue(L, ls->fn);
    lua_pushlstring(L, buf, len);
    if (ls->blobs) lua_pushinteger(L, ls->oid);
    lua_call(L, ls->blobs ? 2 : 1, 0);
    return 0;
}

static void lua_lo_begin(lua_State *L, void *ud, unsigned int oid) {
    LuaSink *ls = (LuaSink *)ud;
    ls->oid = oid;
    ls->blobs = 1;
    lua_sink(L, ud, "", 0);
}

static int r_read_block(lua_State *L) {
    Reader *r = checkreader(L);
    int id = (int)luaL_checkinteger(L, 2);
    LuaSink ls = { 3, 0, 0 };
    Sink s = { lua_sink, lua_lo_begin, NULL, &ls };
    BlockInfo bi;
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
    bi = read_block(L, r, id, lua_isnoneornil(L, 3) ? NULL : &s, 0);
    lua_pushinteger(L, bi.bytes);
    return 1;
}

/* COPY data into a connection. With r, how far into the archive the block
 * has been read is kept: in *consumed (atomically, for another thread to
 * watch) and/or reported to the Lua function at stack index progress
 * (bytes of the block read so far) every 1 MiB. */
typedef struct CopySink {
    PGconn *pg;
    int failed;             /* 1 the connection failed, 2 interrupted, 3 a row not convertible to binary */
    CopyBin *bin;           /* rows sent in COPY's binary format (NULL: as they are) */
    Reader *r;
    long long start, next_report;   /* start: where the block begins (-1: found at the first chunk) */
    long long *consumed;
    int progress, id;
} CopySink;

/* The converter's output goes down the COPY of connection ud. */
static int pq_rows_out(void *ud, const char *buf, size_t len) {
    return PQputCopyData((PGconn *)ud, buf, (int)len) == 1 ? 0 : -1;
}

/* Send text rows down pg's COPY, through bin when there is one: 0, -1 the
 * connection failed, -2 bin did not convert them (copybin_error says why). */
static int rows_out(PGconn *pg, CopyBin *bin, const char *buf, size_t len) {
    int r;
    if (!bin) return PQputCopyData(pg, buf, (int)len) == 1 ? 0 : -1;
    r = copybin_feed(bin, buf, len);
    return r == 0 ? 0 : r == COPYBIN_OUT_FAILED ? -1 : -2;
}

/* The end of the rows (bin's last row and trailer), before PQputCopyEnd. */
static int rows_end(CopyBin *bin) {
    int r;
    if (!bin) return 0;
    r = copybin_finish(bin);
    return r == 0 ? 0 : r == COPYBIN_OUT_FAILED ? -1 : -2;
}

/* A converter for the kinds in the Lua string at index idx (nil: none),
 * writing to pg; raises on a bad kinds string. */
static CopyBin *bin_for(lua_State *L, int idx, PGconn *pg) {
    CopyBin *b;
    if (lua_isnoneornil(L, idx)) return NULL;
    if (!(b = copybin_new(luaL_checkstring(L, idx), pq_rows_out, pg)))
        luaL_argerror(L, idx, "column kinds expected (one of " COPYBIN_KINDS " per column)");
    return b;
}

/* What stopped a binary conversion, as the error value copy_into raises
 * and pool:wait returns: { unconvertible = true, message = }. The caller
 * loads the table again in the text format. */
static void push_unconvertible(lua_State *L, const char *msg) {
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "unconvertible");
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
}

/* A CopySink's failure code for what rows_out / rows_end returned. */
static int sink_failure(int r) { return r == -2 ? 3 : 1; }

/* After the block was read into cs without error: the converter's last row
 * and trailer (cs->failed set when they fail). */
static void sink_end(CopySink *cs) {
    int e;
    if (!cs->failed && cs->bin && (e = rows_end(cs->bin)) != 0) cs->failed = sink_failure(e);
}

/* What PQputCopyEnd tells the server when a COPY of cs is abandoned. */
static const char *abort_reason(const CopySink *cs) {
    return cs->failed == 3 ? "aborted by orch: a row not convertible to COPY's binary format (loaded again as text)"
                           : "aborted by orch: the archive could not be read";
}

/* Archive bytes of block id read so far by r, from *start (found on the
 * first call: the block's own offset, the reader may have seeked or walked
 * to it). */
static long long block_consumed(Reader *r, int id, long long *start) {
    long long done;
    if (*start < 0) {
        REntry *e = find_entry(r, id);
        *start = e && e->found >= 0 ? e->found : e && e->pos >= 0 ? e->pos : r->cur;
    }
    done = r->cur - *start;
    return done > 0 ? done : 0;
}

static int copy_sink(lua_State *L, void *ud, const char *buf, size_t len) {
    CopySink *s = (CopySink *)ud;
    int r;
    if (s->failed) return 0;
    if ((r = rows_out(s->pg, s->bin, buf, len)) != 0) s->failed = sink_failure(r);
    if (orch_interrupted()) s->failed = 2;
    if (s->r) {
        long long done = block_consumed(s->r, s->id, &s->start);
        if (s->consumed) __atomic_store_n(s->consumed, done, __ATOMIC_RELAXED);
        if (s->progress && done >= s->next_report) {
            s->next_report = done + (1 << 20);
            lua_pushvalue(L, s->progress);
            lua_pushinteger(L, done);
            if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
        }
    }
    return 0;
}

/* read_block under lua_pcall, so a corrupt archive still ends the COPY. */
static int protected_read(lua_State *L) {
    Reader *r = (Reader *)lua_touserdata(L, 1);
    int id = (int)lua_tointeger(L, 2);
    CopySink *cs = (CopySink *)lua_touserdata(L, 3);
    Sink s = { copy_sink, NULL, NULL, cs };
    if (cs->r) { cs->start = -1; cs->id = id; cs->progress = lua_isfunction(L, 4) ? 4 : 0; }
    lua_pushinteger(L, read_block(L, r, id, &s, BLK_DATA).bytes);
    return 1;
}

/* After PQputCopyEnd: read every remaining result; the first that is not
 * COMMAND_OK is returned (the caller clears it), the rest are cleared. */
static PGresult *copy_end_results(PGconn *pg) {
    PGresult *err = NULL, *x;
    while ((x = PQgetResult(pg)) != NULL) {
        if (PQresultStatus(x) != PGRES_COMMAND_OK && !err) err = x; else PQclear(x);
    }
    return err;
}

/* r:copy_into(conn, id, copy_sql [, progress [, kinds]]) -> bytes. Runs
 * copy_sql (COPY ... FROM stdin) and streams the block into it; progress(n)
 * is called with the bytes of the block read so far, every 1 MiB (its errors
 * are ignored). With kinds (copybin.h: one character per column) the rows
 * are sent in the binary format (copy_sql must say FORMAT binary); a row it
 * does not convert aborts the COPY and raises { unconvertible = true,
 * message = }. Any error aborts the COPY (the server rolls it back) and is
 * raised. */
static int r_copy_into(lua_State *L) {
    Reader *r = checkreader(L);
    PGconn *pg = orch_checkconn(L, 2);
    int id = (int)luaL_checkinteger(L, 3);
    const char *sql = luaL_checkstring(L, 4);
    PGresult *res;
    CopySink s;
    memset(&s, 0, sizeof s);
    s.pg = pg;
    s.r = r;
    lua_settop(L, 6);
    long long n = 0;
    int st;
    s.bin = bin_for(L, 6, pg);     /* every path below frees it */
    if (!PQsendQuery(pg, sql)) { copybin_free(s.bin); return orch_raise_pgerror(L, pg, NULL, sql); }
    res = PQgetResult(pg);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        PGresult *more;
        copybin_free(s.bin);
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        return orch_raise_pgerror(L, pg, res, sql);
    }
    PQclear(res);
    lua_pushcfunction(L, protected_read);
    lua_pushlightuserdata(L, r);
    lua_pushinteger(L, id);
    lua_pushlightuserdata(L, &s);
    lua_pushvalue(L, 5);
    st = lua_pcall(L, 4, 1, 0);
    if (st == LUA_OK) { n = lua_tointeger(L, -1); lua_pop(L, 1); }
    if (st == LUA_OK) sink_end(&s);
    if (st != LUA_OK || s.failed) {
        PGresult *more;
        char msg[400];
        snprintf(msg, sizeof msg, "%s", s.failed == 3 ? copybin_error(s.bin) : "");
        copybin_free(s.bin);
        PQputCopyEnd(pg, abort_reason(&s));
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        if (st != LUA_OK) return lua_error(L);
        if (s.failed == 2) return orch_raise_interrupt(L);
        if (s.failed == 3) { push_unconvertible(L, msg); return lua_error(L); }
        return orch_raise_pgerror(L, pg, NULL, sql);
    }
    copybin_free(s.bin);
    if (PQputCopyEnd(pg, NULL) != 1) return orch_raise_pgerror(L, pg, NULL, sql);
    {
        PGresult *err = copy_end_results(pg);
        if (err) return orch_raise_pgerror(L, pg, err, sql);
    }
    lua_pushinteger(L, n);
    return 1;
}

/* Writes each large object of a BLOBS block into the target. */
typedef struct LoSink {
    PGconn *pg;
    int fd, create;
    int threaded;           /* in a restore thread: never touch the main state's interrupt machinery */
    unsigned int oid;
    const char *label;
} LoSink;

static void lo_sink_fail(lua_State *L, LoSink *ls, const char *what) {
    char msg[300];
    snprintf(msg, sizeof msg, "%s", PQerrorMessage(ls->pg));
    if (ls->fd >= 0) lo_close(ls->pg, ls->fd);
    ls->fd = -1;
    luaL_error(L, "restoring large object %I of %s: %s failed: %s", (lua_Integer)ls->oid, ls->label, what, msg);
}

static void lo_sink_begin(lua_State *L, void *ud, unsigned int oid) {
    LoSink *ls = (LoSink *)ud;
    ls->oid = oid;
    if (ls->create && lo_create(ls->pg, oid) != oid) lo_sink_fail(L, ls, "lo_create");
    ls->fd = lo_open(ls->pg, oid, INV_WRITE);
    if (ls->fd < 0) lo_sink_fail(L, ls, "opening it for writing (lo_open; does the archive create it?)");
}

static int lo_sink_data(lua_State *L, void *ud, const char *buf, size_t len) {
    LoSink *ls = (LoSink *)ud;
    if (lo_write(ls->pg, ls->fd, buf, len) != (int)len) lo_sink_fail(L, ls, "lo_write");
    if (orch_interrupted()) {
        lo_close(ls->pg, ls->fd);
        ls->fd = -1;
        if (ls->threaded) luaL_error(L, "interrupted");
        orch_raise_interrupt(L);
    }
    return 0;
}

static void lo_sink_end(lua_State *L, void *ud, unsigned int oid) {
    LoSink *ls = (LoSink *)ud;
    (void)oid;
    if (lo_close(ls->pg, ls->fd) < 0) { ls->fd = -1; lo_sink_fail(L, ls, "lo_close"); }
    ls->fd = -1;
}

/* r:restore_blobs(conn, id [, {create = bool}]) -> objects, bytes.
 * Writes every large object of entry id's BLOBS block into conn's database:
 * each is opened for writing (lo_open INV_WRITE) and its bytes written as
 * they are decompressed, so memory stays bounded. The objects must exist
 * (the archive's BLOB / BLOB METADATA entries create them) unless
 * opts.create, which makes each with lo_create(oid) first (archives whose
 * BLOBS carry objects no entry creates). conn must be inside a
 * transaction; on any error the caller rolls it back. Raises naming the
 * oid and the entry. */
static int r_restore_blobs(lua_State *L) {
    Reader *r = checkreader(L);
    PGconn *pg = orch_checkconn(L, 2);
    int id = (int)luaL_checkinteger(L, 3);
    LoSink ls;
    Sink s = { lo_sink_data, lo_sink_begin, lo_sink_end, &ls };
    REntry *e = find_entry(r, id);
    BlockInfo bi;
    memset(&ls, 0, sizeof ls);
    ls.pg = pg;
    ls.fd = -1;
    ls.label = e ? e->label : "?";
    if (lua_istable(L, 4)) {
        lua_getfield(L, 4, "create");
        ls.create = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (PQtransactionStatus(pg) != PQTRANS_INTRANS)
        return luaL_error(L, "restore_blobs() needs the connection inside a transaction (lo_open works only in one)");
    bi = read_block(L, r, id, &s, BLK_BLOBS);
    lua_pushinteger(L, bi.los);
    lua_pushinteger(L, bi.bytes);
    return 2;
}

/* ---------------------------------------------------------------- parallel restore
 *
 * A.pool(path, conns) -> pool: one thread per connection, each with a
 * reader of its own on the archive file (a pipe cannot be read twice), for
 * a parallel restore whose scheduling is Lua's: which entry runs when and
 * where (dependencies, locks, largest first) is decided there; a thread
 * only runs what it is given:
 *
 *   pool:run(slot, { sql = "..." })                     -- statements
 *   pool:run(slot, { id = n, copy = "COPY ... FROM stdin", before = "BEGIN; TRUNCATE ...",
 *                    after = "COMMIT" })               -- a TABLE DATA block
 *   pool:run(slot, { id = n, blobs = true, create = bool })   -- a BLOBS block, in a transaction
 *   pool:split({ slot, slot, ... }, { id = n, copy = "COPY ... FROM stdin", before = "BEGIN", after = "COMMIT" })
 *   (a copy or split job with kinds = "..." sends its rows in the binary format: see copybin.h)
 *                                          -- one TABLE DATA block (COPY text) cut at row ends over several
 *                                          -- connections' COPYs at once (see Split below)
 *   local slot, err = pool:wait(seconds)   -- a finished job (err nil when it worked), or nil on timeout
 *   pool:progress() -> { [slot] = bytes of its block read so far }
 *   pool:cancel()                          -- cancel what is running (Ctrl-C, a failure elsewhere)
 *   pool:close()                           -- stop and join the threads (also __gc / __close)
 *
 * A thread's reader raises its errors in a Lua state of that thread's own
 * (never the caller's); a failed statement's result is kept and raised by
 * wait() as orch.db's error object. The connections stay owned by their
 * orch.conn handles; Lua must not use a connection while its job runs.
 */

#define POOL_MT "orch.pgarchive.pool"

/* A split COPY: the first slot of the group (the lead) reads and inflates
 * the block once and cuts the text at row ends (in COPY's text format a
 * raw newline always ends a row: a newline in a value is written as the two
 * characters backslash, n); each cut piece goes to a queue the other slots
 * (the followers) send from, or, when the queue is full, down the lead's
 * own COPY. So every connection loads rows as fast as its server backend
 * takes them, and memory stays a few pieces. pg_dump's end-of-data line
 * (backslash, dot) is not sent: each COPY is ended by the protocol.
 * Every part runs before (BEGIN), its COPY, then waits for the others: only
 * when every part's COPY ended well does each run after (COMMIT), so a
 * failure of any part (a killed connection, a damaged block, a cancel)
 * rolls every part back. A part that stops because another failed reports
 * "sibling" (the failing part reports the error itself). */
#define SPLIT_PIECE (256 * 1024)

typedef struct Split {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a piece queued or taken, the feed ended, a part ended or failed */
    int parts, refs;
    int feeding;                /* the lead is still reading the block */
    int failed;                 /* some part failed: everyone stops, nobody commits */
    int ended;                  /* parts whose COPY ended well */
    int cap, head, count;       /* the queue: a ring of cap pieces */
    char **buf;
    size_t *len, *size;
} Split;

typedef struct RWorker {
    struct RPool *pool;
    int slot;
    PGconn *pg;
    PGcancel *cancel;
    lua_State *Lp;          /* this thread's own state: its reader lives there */
    Reader *r;
    pthread_t th;
    int started;
    /* the job (set by run(), cleared when wait() reports it) */
    int busy, done;
    int kind;               /* 0 sql, 1 copy, 2 blobs, 3 a part of a split COPY */
    int id, create;
    Split *split;           /* kind 3: the group; lead = 1 for the slot that reads */
    int lead;
    char *piece;            /* a follower's piece in flight (swapped with a queue slot) */
    size_t piece_size;
    char *sql, *before, *after;
    char *kinds;            /* kinds 1 and 3: rows sent in the binary format (copybin.h), else NULL */
    CopyBin *bin;           /* this job's converter (made from kinds) */
    long long consumed;     /* atomic: bytes of the block read */
    PGresult *err;
    char *err_sql;
    int err_pg, err_interrupt;
    int err_unconvertible;  /* errmsg says which row the converter refused: load the table again as text */
    char errmsg[600];
} RWorker;

typedef struct RPool {
    pthread_mutex_t mu;
    pthread_cond_t work, finished;
    int sync_ok, stop, closed;
    int cancelled;          /* atomic: pool:cancel() was called (split parts stop feeding) */
    RWorker *w;
    int n;
} RPool;

static int rw_fail(RWorker *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rw_fail(RWorker *k, const char *fmt, ...) {
    va_list ap;
    if (!k->errmsg[0]) {
        va_start(ap, fmt);
        vsnprintf(k->errmsg, sizeof k->errmsg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Keep a failed statement's result for wait() (NULL: the connection's message). */
static int rw_pgfail(RWorker *k, PGresult *res, const char *sql) {
    PGresult *more;
    if (orch_interrupted()) { if (res) PQclear(res); k->err_interrupt = 1; return -1; }
    if (k->err) PQclear(k->err);
    k->err = res;
    free(k->err_sql);
    k->err_sql = strdup(sql ? sql : "");
    k->err_pg = 1;
    while ((more = PQgetResult(k->pg)) != NULL) PQclear(more);
    return -1;
}

static int rw_exec(RWorker *k, const char *sql) {
    PGresult *res = PQexec(k->pg, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) return rw_pgfail(k, res, sql);
    PQclear(res);
    return 0;
}

/* In the thread's own state: read the block into the COPY. */
static int rw_read_copy(lua_State *Lp) {
    RWorker *k = (RWorker *)lua_touserdata(Lp, 1);
    CopySink *cs = (CopySink *)lua_touserdata(Lp, 2);
    Sink s = { copy_sink, NULL, NULL, cs };
    cs->start = -1;
    cs->id = k->id;
    read_block(Lp, k->r, k->id, &s, BLK_DATA);
    return 0;
}

static int rw_read_blobs(lua_State *Lp) {
    RWorker *k = (RWorker *)lua_touserdata(Lp, 1);
    LoSink *ls = (LoSink *)lua_touserdata(Lp, 2);
    Sink s = { lo_sink_data, lo_sink_begin, lo_sink_end, ls };
    read_block(Lp, k->r, k->id, &s, BLK_BLOBS);
    return 0;
}

static int rw_copy(RWorker *k) {
    PGconn *pg = k->pg;
    PGresult *res;
    CopySink cs;
    int st;
    if (k->before && rw_exec(k, k->before)) return -1;
    if (!PQsendQuery(pg, k->sql)) return rw_pgfail(k, NULL, k->sql);
    res = PQgetResult(pg);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) return rw_pgfail(k, res, k->sql);
    PQclear(res);
    memset(&cs, 0, sizeof cs);
    cs.pg = pg;
    cs.r = k->r;
    cs.consumed = &k->consumed;
    cs.bin = k->bin;
    lua_settop(k->Lp, 0);
    lua_pushcfunction(k->Lp, rw_read_copy);
    lua_pushlightuserdata(k->Lp, k);
    lua_pushlightuserdata(k->Lp, &cs);
    st = lua_pcall(k->Lp, 2, 0, 0);
    if (st == LUA_OK) sink_end(&cs);
    if (st != LUA_OK || cs.failed) {
        PGresult *more;
        if (st != LUA_OK) rw_fail(k, "%s", lua_tostring(k->Lp, -1) ? lua_tostring(k->Lp, -1) : "reading the archive failed");
        lua_settop(k->Lp, 0);
        PQputCopyEnd(pg, abort_reason(&cs));
        while ((more = PQgetResult(pg)) != NULL) PQclear(more);
        if (cs.failed == 3) { k->err_unconvertible = 1; rw_fail(k, "%s", copybin_error(cs.bin)); }
        if (cs.failed == 2) k->err_interrupt = 1;
        else if (st == LUA_OK && cs.failed != 3) rw_pgfail(k, NULL, k->sql);
        if (k->before && PQtransactionStatus(pg) != PQTRANS_IDLE) { PGresult *x = PQexec(pg, "ROLLBACK"); PQclear(x); }
        return -1;
    }
    if (PQputCopyEnd(pg, NULL) != 1) return rw_pgfail(k, NULL, k->sql);
    {
        PGresult *err = copy_end_results(pg), *x;
        if (err) {
            rw_pgfail(k, err, k->sql);
            if (k->before && PQtransactionStatus(pg) != PQTRANS_IDLE) { x = PQexec(pg, "ROLLBACK"); PQclear(x); }
            return -1;
        }
    }
    if (k->after && rw_exec(k, k->after)) return -1;
    return 0;
}

static int rw_blobs(RWorker *k) {
    LoSink ls;
    int st;
    memset(&ls, 0, sizeof ls);
    ls.pg = k->pg;
    ls.fd = -1;
    ls.create = k->create;
    ls.label = "the BLOBS entry";
    ls.threaded = 1;
    if (rw_exec(k, "BEGIN")) return -1;
    lua_settop(k->Lp, 0);
    lua_pushcfunction(k->Lp, rw_read_blobs);
    lua_pushlightuserdata(k->Lp, k);
    lua_pushlightuserdata(k->Lp, &ls);
    st = lua_pcall(k->Lp, 2, 0, 0);
    if (st != LUA_OK) {
        PGresult *x;
        rw_fail(k, "%s", lua_tostring(k->Lp, -1) ? lua_tostring(k->Lp, -1) : "restoring large objects failed");
        lua_settop(k->Lp, 0);
        if (orch_interrupted()) k->err_interrupt = 1;
        x = PQexec(k->pg, "ROLLBACK");
        PQclear(x);
        return -1;
    }
    return rw_exec(k, "COMMIT");
}

/* ---- split COPY (see Split above) */

static Split *split_new(int parts) {
    Split *q = (Split *)calloc(1, sizeof *q);
    int i;
    if (!q) return NULL;
    q->parts = q->refs = parts;
    q->feeding = 1;
    q->cap = 2 * (parts > 1 ? parts - 1 : 1);
    q->buf = (char **)calloc((size_t)q->cap, sizeof(char *));
    q->len = (size_t *)calloc((size_t)q->cap, sizeof(size_t));
    q->size = (size_t *)calloc((size_t)q->cap, sizeof(size_t));
    if (!q->buf || !q->len || !q->size) { free(q->buf); free(q->len); free(q->size); free(q); return NULL; }
    for (i = 0; i < q->cap; i++) q->buf[i] = NULL;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    return q;
}

/* Drop one part's reference; the last frees the group. */
static void split_release(Split *q) {
    int last, i;
    pthread_mutex_lock(&q->mu);
    last = --q->refs == 0;
    pthread_mutex_unlock(&q->mu);
    if (!last) return;
    for (i = 0; i < q->cap; i++) free(q->buf[i]);
    free(q->buf); free(q->len); free(q->size);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void split_fail(Split *q) {
    pthread_mutex_lock(&q->mu);
    q->failed = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* The lead's sink: rows accumulate in acc and leave in pieces cut at a row end. */
typedef struct SplitSink {
    RWorker *k;
    char *acc;              /* rows read, not yet cut */
    size_t len, size;
    char *held;             /* the last piece cut, sent when the next is (see split_sink) */
    size_t held_len, held_size;
    int stop;               /* 1 the own COPY failed, 2 interrupted, 3 a sibling failed or the pool was cancelled,
                               4 the own converter refused a row */
    int ended;              /* the end-of-data line was seen: nothing after it is data */
    long long start;
} SplitSink;

/* Where pg_dump's end-of-data line ("\." then a newline) starts in piece p
 * (which begins at a row start), or n when it holds none. A row that
 * begins with backslash, dot is that line: a value is never written so
 * (a backslash in data is doubled). */
static size_t end_marker(const char *p, size_t n) {
    const char *m;
    size_t at = 0;
    if (n >= 3 && p[0] == '\\' && p[1] == '.' && (p[2] == '\n' || p[2] == '\r')) return 0;
    if (n == 2 && p[0] == '\\' && p[1] == '.') return 0;
    while (at < n && (m = (const char *)memmem(p + at, n - at, "\n\\.", 3)) != NULL) {
        size_t i = (size_t)(m - p);
        if (i + 3 >= n || m[3] == '\n' || m[3] == '\r') return i + 1;
        at = i + 1;
    }
    return n;
}

/* Exchange two buffers and their sizes. */
static void swap_bufs(char **a, size_t *asz, char **b, size_t *bsz) {
    char *t = *a;
    size_t tsz = *asz;
    *a = *b;
    *asz = *bsz;
    *b = t;
    *bsz = tsz;
}

/* Send the held piece (whole rows): to the queue when it has room (its
 * buffer changes places with the queue slot's), else down the lead's own
 * COPY. scan: look for the end-of-data line in it first. */
static void split_send_held(SplitSink *ss, int scan) {
    RWorker *k = ss->k;
    Split *q = k->split;
    size_t n = ss->held_len;
    ss->held_len = 0;
    if (ss->ended || ss->stop || n == 0) return;
    if (scan) {
        size_t cut = end_marker(ss->held, n);
        if (cut < n) { ss->ended = 1; n = cut; }
        if (n == 0) return;
    }
    pthread_mutex_lock(&q->mu);
    if (q->failed) { pthread_mutex_unlock(&q->mu); ss->stop = 3; return; }
    if (q->count < q->cap && q->parts > 1) {
        int slot = (q->head + q->count) % q->cap;
        swap_bufs(&q->buf[slot], &q->size[slot], &ss->held, &ss->held_size);
        q->len[slot] = n;
        q->count++;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        return;
    }
    pthread_mutex_unlock(&q->mu);
    {
        int r = rows_out(k->pg, k->bin, ss->held, n);
        if (r) ss->stop = r == -2 ? 4 : 1;
    }
}

/* Does p hold a byte that is not a newline? */
static int has_row_data(const char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) if (p[i] != '\n') return 1;
    return 0;
}

/* Grow buffer *b (of *size bytes) to hold need bytes; 0, or -1 out of memory. */
static int grow(char **b, size_t *size, size_t need) {
    size_t nsize = *size ? *size : SPLIT_PIECE + RAW_CHUNK;
    char *nb;
    if (need <= *size) return 0;
    while (nsize < need) nsize *= 2;
    if (!(nb = (char *)realloc(*b, nsize))) return -1;
    *b = nb;
    *size = nsize;
    return 0;
}

/* The lead's sink: rows gather in acc; at SPLIT_PIECE bytes acc is cut
 * after its last newline and the piece is held while the next one gathers.
 * pg_dump writes nothing after the end-of-data line but empty lines, so a
 * held piece followed by a piece with row data cannot hold that line and
 * goes out unscanned; only the last pieces (and any followed by empty
 * lines alone) are scanned for it. */
static int split_sink(lua_State *L, void *ud, const char *buf, size_t len) {
    SplitSink *ss = (SplitSink *)ud;
    RWorker *k = ss->k;
    if (orch_interrupted()) ss->stop = 2;
    if (__atomic_load_n(&k->pool->cancelled, __ATOMIC_RELAXED)) ss->stop = 3;
    if (ss->stop) luaL_error(L, "split COPY stopped");   /* leaves read_block at once; the part reports why */
    if (ss->ended) return 0;
    if (grow(&ss->acc, &ss->size, ss->len + len)) { rw_fail(k, "out of memory splitting a COPY"); ss->stop = 1; luaL_error(L, "out of memory"); }
    memcpy(ss->acc + ss->len, buf, len);
    ss->len += len;
    if (ss->len >= SPLIT_PIECE) {
        const char *nl = (const char *)memrchr(ss->acc, '\n', ss->len);
        if (nl) {
            size_t n = (size_t)(nl - ss->acc) + 1, rest = ss->len - n;
            if (ss->held_len) split_send_held(ss, !has_row_data(ss->acc, n));
            if (ss->stop) luaL_error(L, "split COPY stopped");
            /* the piece stays where it is and becomes the held one; the cut-off rest moves to a fresh acc */
            swap_bufs(&ss->held, &ss->held_size, &ss->acc, &ss->size);
            ss->held_len = n;
            if (grow(&ss->acc, &ss->size, rest + RAW_CHUNK)) { rw_fail(k, "out of memory splitting a COPY"); ss->stop = 1; luaL_error(L, "out of memory"); }
            memcpy(ss->acc, ss->held + n, rest);
            ss->len = rest;
        }
    }
    if (k->r) __atomic_store_n(&k->consumed, block_consumed(k->r, k->id, &ss->start), __ATOMIC_RELAXED);
    return 0;
}

static int rw_read_split(lua_State *Lp) {
    RWorker *k = (RWorker *)lua_touserdata(Lp, 1);
    SplitSink *ss = (SplitSink *)lua_touserdata(Lp, 2);
    Sink s = { split_sink, NULL, NULL, ss };
    read_block(Lp, k->r, k->id, &s, BLK_DATA);
    /* the last pieces: the held one and what is left, both scanned */
    if (!ss->stop) split_send_held(ss, 1);
    if (!ss->stop && !ss->ended && ss->len) {
        swap_bufs(&ss->held, &ss->held_size, &ss->acc, &ss->size);
        ss->held_len = ss->len;
        ss->len = 0;
        split_send_held(ss, 1);
    }
    return 0;
}

/* The lead feeds; a follower takes pieces until the feed ends. 0 when this
 * part's rows all went down its COPY; -1 when this part failed (a reader's
 * message or the interrupt is kept; else its connection has the error);
 * -2 when it stopped because another part failed or the pool was cancelled;
 * -3 when its converter refused a row (copybin_error says which). */
static int split_feed(RWorker *k) {
    Split *q = k->split;
    if (k->lead) {
        SplitSink ss;
        int st;
        memset(&ss, 0, sizeof ss);
        ss.k = k;
        ss.start = -1;
        lua_settop(k->Lp, 0);
        lua_pushcfunction(k->Lp, rw_read_split);
        lua_pushlightuserdata(k->Lp, k);
        lua_pushlightuserdata(k->Lp, &ss);
        st = lua_pcall(k->Lp, 2, 0, 0);
        if (st != LUA_OK && !ss.stop)
            rw_fail(k, "%s", lua_tostring(k->Lp, -1) ? lua_tostring(k->Lp, -1) : "reading the archive failed");
        lua_settop(k->Lp, 0);
        free(ss.acc);
        free(ss.held);
        pthread_mutex_lock(&q->mu);
        q->feeding = 0;
        if (st != LUA_OK || ss.stop) q->failed = 1;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        if (ss.stop == 2) k->err_interrupt = 1;
        if (ss.stop == 3) return -2;
        if (ss.stop == 4) return -3;
        return st != LUA_OK || ss.stop ? -1 : 0;
    }
    for (;;) {
        size_t n;
        pthread_mutex_lock(&q->mu);
        while (q->count == 0 && q->feeding && !q->failed) pthread_cond_wait(&q->cv, &q->mu);
        if (q->failed) { pthread_mutex_unlock(&q->mu); return -2; }
        if (q->count == 0) { pthread_mutex_unlock(&q->mu); return 0; }   /* fed and drained */
        /* take the piece: swap buffers with the queue slot */
        n = q->len[q->head];
        swap_bufs(&q->buf[q->head], &q->size[q->head], &k->piece, &k->piece_size);
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_mutex_unlock(&q->mu);
        if (orch_interrupted()) { k->err_interrupt = 1; return -1; }
        {
            int r = rows_out(k->pg, k->bin, k->piece, n);
            if (r == -2) { split_fail(q); return -3; }
            if (r) return -1;
        }
    }
}

/* Abandon this part's COPY and its transaction. record: this part's
 * failure is the one to report (the server's error result when there is
 * one, else the connection's message). */
static void split_abandon(RWorker *k, int record) {
    PGresult *err = NULL, *x;
    PGTransactionStatusType ts;
    if (PQputCopyEnd(k->pg, "aborted by orch: another part of this table's data failed") == 1)
        while ((x = PQgetResult(k->pg)) != NULL) {
            if (!err && PQresultStatus(x) == PGRES_FATAL_ERROR) err = x; else PQclear(x);
        }
    if (record && !orch_interrupted()) {
        if (k->err) PQclear(k->err);
        k->err = err;
        err = NULL;
        free(k->err_sql);
        k->err_sql = strdup(k->sql ? k->sql : "");
        k->err_pg = 1;
    } else if (record) k->err_interrupt = 1;
    if (err) PQclear(err);
    ts = PQtransactionStatus(k->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) { x = PQexec(k->pg, "ROLLBACK"); PQclear(x); }
}

static void rollback_if_open(PGconn *pg) {
    PGTransactionStatusType ts = PQtransactionStatus(pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) { PGresult *x = PQexec(pg, "ROLLBACK"); PQclear(x); }
}

static int rw_split(RWorker *k) {
    PGconn *pg = k->pg;
    Split *q = k->split;
    PGresult *res;
    int r, failed;
    if (k->before && rw_exec(k, k->before)) { split_fail(q); return -1; }
    if (!PQsendQuery(pg, k->sql)) { rw_pgfail(k, NULL, k->sql); split_fail(q); rollback_if_open(pg); return -1; }
    res = PQgetResult(pg);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        rw_pgfail(k, res, k->sql);
        split_fail(q);
        rollback_if_open(pg);
        return -1;
    }
    PQclear(res);
    r = split_feed(k);
    if (r == 0 && k->bin && (r = rows_end(k->bin)) != 0) { split_fail(q); r = r == -2 ? -3 : -1; }
    if (r == -3) {
        split_abandon(k, 0);
        k->err_unconvertible = 1;
        rw_fail(k, "%s of one part of its rows", copybin_error(k->bin));
        return -1;
    }
    if (r == -2) { split_abandon(k, 0); rw_fail(k, "sibling"); return -1; }
    if (r == -1) { split_fail(q); split_abandon(k, !k->errmsg[0] && !k->err_interrupt); return -1; }
    if (PQputCopyEnd(pg, NULL) != 1) { split_fail(q); split_abandon(k, 1); return -1; }
    if ((res = copy_end_results(pg)) != NULL) {
        split_fail(q);
        rw_pgfail(k, res, k->sql);
        rollback_if_open(pg);
        return -1;
    }
    /* every part's COPY must have ended well before any commits */
    pthread_mutex_lock(&q->mu);
    q->ended++;
    pthread_cond_broadcast(&q->cv);
    while (q->ended < q->parts && !q->failed) pthread_cond_wait(&q->cv, &q->mu);
    failed = q->failed;
    pthread_mutex_unlock(&q->mu);
    if (failed) {
        rollback_if_open(pg);
        rw_fail(k, "sibling");
        return -1;
    }
    if (k->after && rw_exec(k, k->after)) return -1;
    return 0;
}

static void *rw_main(void *arg) {
    RWorker *k = (RWorker *)arg;
    RPool *p = k->pool;
    for (;;) {
        int r;
        pthread_mutex_lock(&p->mu);
        while (!p->stop && !(k->busy && !k->done)) pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) { pthread_mutex_unlock(&p->mu); break; }
        pthread_mutex_unlock(&p->mu);
        __atomic_store_n(&k->consumed, 0, __ATOMIC_RELAXED);
        if (k->kinds && !(k->bin = copybin_new(k->kinds, pq_rows_out, k->pg))) r = rw_fail(k, "out of memory");
        else r = k->kind == 0 ? rw_exec(k, k->sql) : k->kind == 1 ? rw_copy(k) : k->kind == 3 ? rw_split(k) : rw_blobs(k);
        (void)r;
        pthread_mutex_lock(&p->mu);
        k->done = 1;
        pthread_cond_broadcast(&p->finished);
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

static void rw_clear_job(RWorker *k) {
    if (k->split) { split_release(k->split); k->split = NULL; }
    k->lead = 0;
    free(k->sql); free(k->before); free(k->after); free(k->err_sql); free(k->kinds);
    k->sql = k->before = k->after = k->err_sql = k->kinds = NULL;
    copybin_free(k->bin);
    k->bin = NULL;
    if (k->err) PQclear(k->err);
    k->err = NULL;
    k->err_pg = k->err_interrupt = k->err_unconvertible = 0;
    k->errmsg[0] = 0;
    k->busy = k->done = 0;
}

static void pool_stop(RPool *p) {
    int i;
    if (p->closed) return;
    p->closed = 1;
    if (p->sync_ok) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
        for (i = 0; i < p->n; i++) {
            char errbuf[256];
            if (p->w[i].started && p->w[i].busy && !p->w[i].done && p->w[i].cancel) PQcancel(p->w[i].cancel, errbuf, sizeof errbuf);
        }
        for (i = 0; i < p->n; i++) if (p->w[i].started) pthread_join(p->w[i].th, NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->finished);
        p->sync_ok = 0;
    }
    for (i = 0; p->w && i < p->n; i++) {
        RWorker *k = &p->w[i];
        rw_clear_job(k);
        free(k->piece);
        k->piece = NULL;
        if (k->cancel) PQfreeCancel(k->cancel);
        if (k->Lp) lua_close(k->Lp);   /* closes its reader */
    }
    free(p->w);
    p->w = NULL;
}

static RPool *checkpool(lua_State *L) {
    RPool *p = (RPool *)luaL_checkudata(L, 1, POOL_MT);
    if (p->closed) luaL_error(L, "attempt to use a closed restore pool");
    return p;
}

static int pool_gc(lua_State *L) {
    pool_stop((RPool *)luaL_checkudata(L, 1, POOL_MT));
    return 0;
}

/* A reader of path of a thread's own, in Lp (kept in Lp's registry under
 * key, closed with Lp); it seeks, so it hashes nothing. NULL when it cannot
 * be opened: the message is on top of Lp's stack. */
static Reader *private_reader(lua_State *Lp, const char *path, const char *key) {
    Reader *r;
    luaopen_orch_pgarchive(Lp);
    lua_settop(Lp, 0);
    lua_pushcfunction(Lp, a_open);
    lua_pushstring(Lp, path);
    if (lua_pcall(Lp, 1, 1, 0) != LUA_OK) return NULL;
    r = (Reader *)lua_touserdata(Lp, -1);
    lua_setfield(Lp, LUA_REGISTRYINDEX, key);
    reader_no_hash(r);
    return r;
}

static int a_pool(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    RPool *p;
    int n, i;
    lua_Integer pieces = 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_istable(L, 3)) {   /* { inflate_pieces = n }: see r:inflate_pieces */
        lua_getfield(L, 3, "inflate_pieces");
        pieces = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
        lua_pop(L, 1);
        luaL_argcheck(L, pieces == 0 || (pieces >= 1024 && pieces <= 64 * 1024 * 1024), 3, "a piece size from 1 KiB to 64 MiB expected");
    }
    lua_settop(L, 2);
    if (!strcmp(path, "-")) return luaL_error(L, "a parallel restore needs an archive file: standard input cannot be read more than once");
    n = (int)luaL_len(L, 2);
    if (n < 1) return luaL_argerror(L, 2, "at least one connection expected");
    p = (RPool *)lua_newuserdatauv(L, sizeof *p, 1);
    memset(p, 0, sizeof *p);
    p->closed = 1;
    luaL_setmetatable(L, POOL_MT);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);   /* the connections stay alive as long as the pool */
    p->w = (RWorker *)calloc((size_t)n, sizeof(RWorker));
    if (!p->w) return luaL_error(L, "out of memory");
    p->n = n;
    p->closed = 0;
    for (i = 0; i < n; i++) {
        RWorker *k = &p->w[i];
        k->pool = p;
        k->slot = i + 1;
        lua_rawgeti(L, 2, i + 1);
        k->pg = orch_checkconn(L, -1);
        lua_pop(L, 1);
        k->cancel = PQgetCancel(k->pg);
        if (!(k->Lp = luaL_newstate())) return luaL_error(L, "out of memory");
        if (!(k->r = private_reader(k->Lp, path, "orch.pool.reader"))) {
            lua_pushfstring(L, "%s", lua_tostring(k->Lp, -1));
            return lua_error(L);
        }
        k->r->pieces = (size_t)pieces;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->finished, NULL);
    p->sync_ok = 1;
    for (i = 0; i < n; i++) {
        if (pthread_create(&p->w[i].th, NULL, rw_main, &p->w[i]) != 0) return luaL_error(L, "cannot start a restore thread: %s", strerror(errno));
        p->w[i].started = 1;
    }
    return 1;
}

static char *opt_dup(lua_State *L, int t, const char *k) {
    char *r = NULL;
    if (lua_getfield(L, t, k) == LUA_TSTRING && !(r = strdup(lua_tostring(L, -1)))) luaL_error(L, "out of memory");
    lua_pop(L, 1);
    return r;
}

/* The job table's kinds (see copybin.h) into k->kinds; raises when they are not kinds. */
static void job_kinds(lua_State *L, int t, RWorker *k) {
    if ((k->kinds = opt_dup(L, t, "kinds")) && !copybin_valid(k->kinds)) luaL_error(L, "bad column kinds");
}

static int pool_run(lua_State *L) {
    RPool *p = checkpool(L);
    int slot = (int)luaL_checkinteger(L, 2);
    RWorker *k;
    luaL_checktype(L, 3, LUA_TTABLE);
    if (slot < 1 || slot > p->n) return luaL_argerror(L, 2, "no such slot");
    k = &p->w[slot - 1];
    if (k->busy) return luaL_error(L, "slot %d is busy", slot);
    rw_clear_job(k);
    lua_getfield(L, 3, "id");
    k->id = (int)lua_tointeger(L, -1);
    lua_getfield(L, 3, "create");
    k->create = lua_toboolean(L, -1);
    lua_getfield(L, 3, "blobs");
    k->kind = lua_toboolean(L, -1) ? 2 : 0;
    lua_pop(L, 3);
    k->sql = opt_dup(L, 3, "copy");
    if (k->sql) k->kind = 1;
    else if (k->kind == 0 && !(k->sql = opt_dup(L, 3, "sql"))) return luaL_error(L, "a job needs sql, copy or blobs");
    k->before = opt_dup(L, 3, "before");
    k->after = opt_dup(L, 3, "after");
    if (k->kind == 1) job_kinds(L, 3, k);
    pthread_mutex_lock(&p->mu);
    k->busy = 1;
    k->done = 0;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

/* pool:split({ slot, ... }, { id =, copy =, before =, after = }): the
 * first slot reads the block, every slot loads a part (see Split). */
static int pool_split(lua_State *L) {
    RPool *p = checkpool(L);
    int n, i, slots[64];
    Split *q;
    char *copy;
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (int)luaL_len(L, 2);
    if (n < 1 || n > 64) return luaL_argerror(L, 2, "1 to 64 slots expected");
    for (i = 0; i < n; i++) {
        int j;
        lua_rawgeti(L, 2, i + 1);
        slots[i] = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        if (slots[i] < 1 || slots[i] > p->n) return luaL_argerror(L, 2, "no such slot");
        if (p->w[slots[i] - 1].busy) return luaL_error(L, "slot %d is busy", slots[i]);
        for (j = 0; j < i; j++) if (slots[j] == slots[i]) return luaL_argerror(L, 2, "a slot twice");
    }
    lua_getfield(L, 3, "id");
    i = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    copy = opt_dup(L, 3, "copy");
    if (!copy) return luaL_error(L, "a split job needs copy");
    free(copy);
    if (!(q = split_new(n))) return luaL_error(L, "out of memory");
    for (int s = 0; s < n; s++) {
        RWorker *k = &p->w[slots[s] - 1];
        rw_clear_job(k);
        k->id = i;
        k->kind = 3;
        k->split = q;
        k->lead = s == 0;
        k->sql = opt_dup(L, 3, "copy");
        k->before = opt_dup(L, 3, "before");
        k->after = opt_dup(L, 3, "after");
        job_kinds(L, 3, k);
    }
    pthread_mutex_lock(&p->mu);
    for (int s = 0; s < n; s++) { p->w[slots[s] - 1].busy = 1; p->w[slots[s] - 1].done = 0; }
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static int pool_raise_pg(lua_State *L) {
    RWorker *k = (RWorker *)lua_touserdata(L, 1);
    PGresult *r = k->err;
    k->err = NULL;
    return orch_raise_pgerror(L, k->pg, r, k->err_sql);
}

/* pool:wait(seconds) -> slot, err | nil (timeout). err: nil, an orch.db
 * error object, the string "interrupted", { unconvertible = true, message = }
 * (a job with kinds met a row it could not send as binary: nothing of it
 * was committed), or a message. */
static int pool_wait(lua_State *L) {
    RPool *p = checkpool(L);
    double secs = luaL_optnumber(L, 2, 1.0);
    struct timespec until;
    RWorker *k = NULL;
    int i, any = 0;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)secs;
    until.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&p->mu);
    for (;;) {
        any = 0;
        for (i = 0; i < p->n; i++) {
            if (p->w[i].busy) any = 1;
            if (p->w[i].busy && p->w[i].done) { k = &p->w[i]; break; }
        }
        if (k || !any) break;
        if (pthread_cond_timedwait(&p->finished, &p->mu, &until) != 0) break;
    }
    pthread_mutex_unlock(&p->mu);
    if (!k) { lua_pushnil(L); return 1; }
    lua_pushinteger(L, k->slot);
    if (k->err_interrupt) lua_pushliteral(L, "interrupted");
    else if (k->err_unconvertible) push_unconvertible(L, k->errmsg);
    else if (k->err_pg) {
        lua_pushcfunction(L, pool_raise_pg);
        lua_pushlightuserdata(L, k);
        lua_pcall(L, 1, 0, 0);       /* the error object */
    } else if (k->errmsg[0]) lua_pushstring(L, k->errmsg);
    else lua_pushnil(L);
    rw_clear_job(k);
    return 2;
}

static int pool_progress(lua_State *L) {
    RPool *p = checkpool(L);
    int i;
    lua_createtable(L, p->n, 0);
    for (i = 0; i < p->n; i++) {
        lua_pushinteger(L, p->w[i].busy ? __atomic_load_n(&p->w[i].consumed, __ATOMIC_RELAXED) : 0);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int pool_cancel(lua_State *L) {
    RPool *p = checkpool(L);
    int i;
    __atomic_store_n(&p->cancelled, 1, __ATOMIC_RELAXED);
    /* split parts stop (and none commits), also those waiting for pieces or for each other */
    for (i = 0; i < p->n; i++) if (p->w[i].busy && p->w[i].split) split_fail(p->w[i].split);
    for (i = 0; i < p->n; i++) {
        char errbuf[256];
        if (p->w[i].busy && p->w[i].cancel) PQcancel(p->w[i].cancel, errbuf, sizeof errbuf);
    }
    return 0;
}

static int pool_close(lua_State *L) {
    pool_stop((RPool *)luaL_checkudata(L, 1, POOL_MT));
    return 0;
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
    if (sha256_copy(&copy, &r->sha) != 0 || sha256_final(&copy, d) != 0) return 0;
    sha256_hex(d, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* r:no_hash(): stop hashing what is read (a caller that proves the file
 * otherwise, or not at all, saves the SHA-256 thread's work). */
static int r_no_hash(lua_State *L) {
    reader_no_hash(checkreader(L));
    return 0;
}

/* What r:verify() and A.verify_parallel() return: { unchecked_streams, blocks, bytes, large_objects }. */
static int push_verified(lua_State *L, long long unchecked, long long blocks, long long bytes, long long los) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, unchecked); lua_setfield(L, -2, "unchecked_streams");
    lua_pushinteger(L, blocks); lua_setfield(L, -2, "blocks");
    lua_pushinteger(L, bytes); lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, los); lua_setfield(L, -2, "large_objects");
    return 1;
}

/* r:verify([progress]) -> {blocks=, bytes=, large_objects=, unchecked_streams=}:
 * every data block (every large object of a BLOBS block too) decompresses
 * completely. unchecked_streams counts the streams that carry no checksum
 * (no compression, or lz4/zstd frames written without one, as pg_dump's
 * are): a changed byte in those may go unnoticed without a manifest. */
static int r_verify(lua_State *L) {
    Reader *r = checkreader(L);
    int i, blocks = 0, total = 0, has_progress = lua_isfunction(L, 2);
    long long bytes = 0, los = 0, unchecked0 = r->unchecked;
    for (i = 0; i < r->n; i++) if (r->e[i].had_dumper) total++;
    for (i = 0; i < r->n; i++) {
        BlockInfo bi;
        if (!r->e[i].had_dumper) continue;
        bi = read_block(L, r, r->e[i].id, NULL, 0);
        bytes += bi.bytes;
        los += bi.los;
        blocks++;
        if (has_progress) {   /* progress(blocks done, blocks, bytes of the file read so far, file size) */
            lua_pushvalue(L, 2);
            lua_pushinteger(L, blocks);
            lua_pushinteger(L, total);
            lua_pushinteger(L, r->cur);
            lua_pushinteger(L, r->size);
            if (lua_pcall(L, 4, 0, 0) != LUA_OK) lua_pop(L, 1);
        }
    }
    return push_verified(L, r->unchecked - unchecked0, blocks, bytes, los);
}

/* ---------------------------------------------------------------- parallel verify
 *
 * A.verify_parallel(path, threads, ids [, progress]) -> the table r:verify()
 * returns: the data blocks of entries ids (in that order, largest first is
 * best) inflated on threads threads, each with a reader of its own on the
 * file (so the file must be seekable and its TOC hold the offsets). The
 * first damaged block stops the others and is raised as r:verify() raises
 * it. progress(done, total) is called on the caller's thread as blocks finish. */

typedef struct VJob {
    const char *path;
    const int *ids;
    int n;
    int next, done, failed, stopped;   /* next / done: atomic; failed, stopped under mu */
    long long bytes, los, unchecked;   /* under mu */
    char err[1024];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} VJob;

typedef struct VThread { VJob *j; pthread_t th; int started; } VThread;

static int vt_read(lua_State *Lp) {
    Reader *r = (Reader *)lua_touserdata(Lp, 1);
    BlockInfo bi = read_block(Lp, r, (int)lua_tointeger(Lp, 2), NULL, 0);
    lua_pushinteger(Lp, bi.bytes);
    lua_pushinteger(Lp, bi.los);
    return 2;
}

static void vt_fail(VJob *j, const char *msg) {
    pthread_mutex_lock(&j->mu);
    if (!j->failed) { j->failed = 1; snprintf(j->err, sizeof j->err, "%s", msg ? msg : "verifying the archive failed"); }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void *vt_main(void *arg) {
    VThread *t = (VThread *)arg;
    VJob *j = t->j;
    lua_State *Lp = luaL_newstate();
    Reader *r;
    long long bytes = 0, los = 0;
    if (!Lp) { vt_fail(j, "out of memory"); goto out; }
    if (!(r = private_reader(Lp, j->path, "orch.verify.reader"))) { vt_fail(j, lua_tostring(Lp, -1)); goto out; }
    for (;;) {
        int i, stop;
        pthread_mutex_lock(&j->mu);
        stop = j->failed || j->stopped;
        pthread_mutex_unlock(&j->mu);
        if (stop) break;
        i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->n) break;
        lua_settop(Lp, 0);
        lua_pushcfunction(Lp, vt_read);
        lua_pushlightuserdata(Lp, r);
        lua_pushinteger(Lp, j->ids[i]);
        if (lua_pcall(Lp, 2, 2, 0) != LUA_OK) { vt_fail(j, lua_tostring(Lp, -1)); break; }
        bytes += lua_tointeger(Lp, -2);
        los += lua_tointeger(Lp, -1);
        pthread_mutex_lock(&j->mu);
        j->done++;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_lock(&j->mu);
    j->bytes += bytes;
    j->los += los;
    j->unchecked += r->unchecked;
    pthread_mutex_unlock(&j->mu);
out:
    if (Lp) lua_close(Lp);   /* closes its reader */
    return NULL;
}

static int a_verify_parallel(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int threads = (int)luaL_checkinteger(L, 2);
    int n, i, has_progress, last = -1;
    int *ids;
    VThread *ts;
    VJob j;
    luaL_checktype(L, 3, LUA_TTABLE);
    has_progress = lua_isfunction(L, 4);
    if (threads < 1 || threads > 64) return luaL_argerror(L, 2, "1 to 64 threads expected");
    n = (int)luaL_len(L, 3);
    ids = (int *)calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    ts = (VThread *)calloc((size_t)threads, sizeof(VThread));
    if (!ids || !ts) { free(ids); free(ts); return luaL_error(L, "out of memory"); }
    for (i = 0; i < n; i++) { lua_rawgeti(L, 3, i + 1); ids[i] = (int)lua_tointeger(L, -1); lua_pop(L, 1); }
    memset(&j, 0, sizeof j);
    j.path = path;
    j.ids = ids;
    j.n = n;
    pthread_mutex_init(&j.mu, NULL);
    pthread_cond_init(&j.cv, NULL);
    for (i = 0; i < threads && i < (n > 0 ? n : 1); i++) {
        ts[i].j = &j;
        if (pthread_create(&ts[i].th, NULL, vt_main, &ts[i]) != 0) { vt_fail(&j, "cannot start a verify thread"); break; }
        ts[i].started = 1;
    }
    /* wait, reporting progress, until every block is done or one failed */
    pthread_mutex_lock(&j.mu);
    for (;;) {
        struct timespec until;
        int done = j.done, failed = j.failed;
        if (done != last && has_progress && !failed) {
            pthread_mutex_unlock(&j.mu);
            lua_pushvalue(L, 4);
            lua_pushinteger(L, done);
            lua_pushinteger(L, n);
            if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
            pthread_mutex_lock(&j.mu);
            last = done;
            continue;
        }
        last = done;
        if (failed || done >= n) break;
        if (orch_interrupted()) { j.stopped = 1; break; }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 200000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        /* every thread either fails (and says so) or takes blocks until none is left: done reaches n */
        pthread_cond_timedwait(&j.cv, &j.mu, &until);
    }
    pthread_mutex_unlock(&j.mu);
    for (i = 0; i < threads; i++) if (ts[i].started) pthread_join(ts[i].th, NULL);
    free(ids);
    free(ts);
    pthread_mutex_destroy(&j.mu);
    pthread_cond_destroy(&j.cv);
    if (j.stopped) return orch_raise_interrupt(L);
    if (j.failed) { lua_pushstring(L, j.err); return lua_error(L); }
    return push_verified(L, j.unchecked, n, j.bytes, j.los);
}

static const luaL_Reg writer_methods[] = {
    {"entry", w_entry}, {"write_toc", w_write_toc}, {"begin_block", w_begin_block}, {"write", w_write},
    {"end_block", w_end_block}, {"copy_table", w_copy_table}, {"copy_blobs", w_copy_blobs}, {"copy_parallel", w_copy_parallel},
    {"close", w_close}, {"progress", w_progress},
    {NULL, NULL}
};
/* r:inflate_pieces(n): the archive's gzip streams are orch's (see
 * read_pieces), each piece holding at most n bytes: they are inflated piece
 * by piece. Only for an archive whose manifest says so. */
static int r_inflate_pieces(lua_State *L) {
    Reader *r = checkreader(L);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1024 && n <= 64 * 1024 * 1024, 2, "a piece size from 1 KiB to 64 MiB expected");
    if (r->pout && (size_t)n > r->pieces) { free(r->pout); r->pout = NULL; }
    r->pieces = (size_t)n;
    return 0;
}

static const luaL_Reg reader_methods[] = {
    {"header", r_header}, {"entries", r_entries}, {"read_block", r_read_block}, {"copy_into", r_copy_into}, {"restore_blobs", r_restore_blobs},
    {"verify", r_verify}, {"sha256", r_sha256}, {"no_hash", r_no_hash}, {"inflate_pieces", r_inflate_pieces}, {"close", r_close}, {NULL, NULL}
};
static const luaL_Reg pool_methods[] = {
    {"run", pool_run}, {"split", pool_split}, {"wait", pool_wait}, {"progress", pool_progress}, {"cancel", pool_cancel}, {"close", pool_close}, {NULL, NULL}
};
/* pgarchive.copy_binary(kinds, text [, piece]) -> the binary COPY data of
 * the text rows, or nil, why. Fed in pieces of `piece` bytes (default: all
 * at once). What a restore sends for a table; the specs hold it against
 * the server's own COPY ... TO STDOUT (FORMAT binary). */
static int buf_out(void *ud, const char *buf, size_t len) { luaL_addlstring((luaL_Buffer *)ud, buf, len); return 0; }
static int a_copy_binary(lua_State *L) {
    const char *kinds = luaL_checkstring(L, 1);
    size_t len, off, piece;
    const char *text = luaL_checklstring(L, 2, &len);
    luaL_Buffer out;
    CopyBin *b;
    int r = 0;
    piece = (size_t)luaL_optinteger(L, 3, 0);
    if (!copybin_valid(kinds)) return luaL_argerror(L, 1, "column kinds expected (one of " COPYBIN_KINDS " per column)");
    luaL_buffinit(L, &out);
    if (!(b = copybin_new(kinds, buf_out, &out))) return luaL_error(L, "out of memory");
    for (off = 0; off < len && !r; off += piece ? piece : len) r = copybin_feed(b, text + off, piece && len - off > piece ? piece : len - off);
    if (!r) r = copybin_finish(b);
    if (r) {
        lua_pushnil(L);
        lua_pushstring(L, copybin_error(b));
        copybin_free(b);
        return 2;
    }
    copybin_free(b);
    luaL_pushresult(&out);
    return 1;
}

static const luaL_Reg funcs[] = { {"writer", a_writer}, {"open", a_open}, {"pool", a_pool}, {"verify_parallel", a_verify_parallel},
                                  {"copy_binary", a_copy_binary}, {NULL, NULL} };

/* A metatable for a userdata class: methods as __index, fin as both __gc and __close. */
static void new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction fin) {
    luaL_newmetatable(L, name);
    lua_newtable(L);                 /* luaL_newlib needs an array, not a pointer, for its size hint */
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, fin);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, fin);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}

int luaopen_orch_pgarchive(lua_State *L) {
    new_class(L, WRITER_MT, writer_methods, w_gc);
    luaL_newmetatable(L, PAR_MT);
    lua_pushcfunction(L, par_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    new_class(L, POOL_MT, pool_methods, pool_gc);
    new_class(L, READER_MT, reader_methods, r_close);
    luaL_newlib(L, funcs);
    return 1;
}
