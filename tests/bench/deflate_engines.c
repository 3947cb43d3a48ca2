/* deflate_engines.c -- benchmark (not a test), run by deflate_engines.sh:
 * for each file, the CPU seconds and bytes of zlib as pg_dump uses it (one
 * stream at LEVEL), of libdeflate at LEVEL per CHUNK, of the block walker
 * that makes those chunks continue (pdeflate_unfinal), and of pdeflate end
 * to end on one thread; pdeflate's output is inflated back and compared.
 *   deflate_engines LEVEL CHUNK_KIB FILE... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libdeflate.h>
#include <zlib.h>
#include "pdeflate.h"

static double cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

typedef struct Buf { unsigned char *p; size_t len, cap; } Buf;
static int sink(void *ud, const unsigned char *d, size_t n) {
    Buf *b = (Buf *)ud;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        unsigned char *np = (unsigned char *)realloc(b->p, cap);
        if (!np) return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

int main(int argc, char **argv) {
    int level, fi;
    size_t chunk;
    double t[4] = {0, 0, 0, 0};
    size_t sz[4] = {0, 0, 0, 0}, all = 0;
    if (argc < 4) { fprintf(stderr, "usage: deflate_engines LEVEL CHUNK_KIB FILE...\n"); return 2; }
    level = atoi(argv[1]);
    chunk = (size_t)atoi(argv[2]) * 1024;
    for (fi = 3; fi < argc; fi++) {
        FILE *f = fopen(argv[fi], "rb");
        unsigned char *in, *out, ob[65536];
        size_t n, off, cap, nl;
        double t0;
        char err[200];
        z_stream zs;
        struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
        Buf b = {NULL, 0, 0};
        PDeflate *p;
        if (!f || !c) { fprintf(stderr, "cannot open %s\n", argv[fi]); return 1; }
        fseek(f, 0, SEEK_END);
        n = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        in = (unsigned char *)malloc(n + 1);
        cap = libdeflate_deflate_compress_bound(NULL, chunk) + PDEFLATE_UNFINAL_EXTRA;
        out = (unsigned char *)malloc(cap);
        if (!in || !out || fread(in, 1, n, f) != n) { fprintf(stderr, "cannot read %s\n", argv[fi]); return 1; }
        fclose(f);
        all += n;
        /* zlib, one stream, 64 KiB writes */
        memset(&zs, 0, sizeof zs);
        deflateInit(&zs, level);
        t0 = cpu();
        for (off = 0;;) {
            size_t k = n - off > sizeof ob ? sizeof ob : n - off;
            int fl;
            zs.next_in = in + off;
            zs.avail_in = (uInt)k;
            off += k;
            fl = off == n ? Z_FINISH : Z_NO_FLUSH;
            do {
                zs.next_out = ob;
                zs.avail_out = sizeof ob;
                deflate(&zs, fl);
                sz[0] += sizeof ob - zs.avail_out;
            } while (zs.avail_out == 0);
            if (fl == Z_FINISH) break;
        }
        t[0] += cpu() - t0;
        deflateEnd(&zs);
        /* libdeflate per chunk, then the walker on each chunk's output */
        for (off = 0; off < n; off += chunk) {
            size_t k = n - off > chunk ? chunk : n - off, z;
            t0 = cpu();
            z = libdeflate_deflate_compress(c, in + off, k, out, cap - PDEFLATE_UNFINAL_EXTRA);
            t[1] += cpu() - t0;
            sz[1] += z;
            t0 = cpu();
            if (pdeflate_unfinal(out, z, cap, &nl, err, sizeof err) != 0) { fprintf(stderr, "%s: %s\n", argv[fi], err); return 1; }
            t[2] += cpu() - t0;
        }
        /* pdeflate end to end, one worker thread */
        t0 = cpu();
        p = pdeflate_new(level, 1, chunk, sink, &b);
        for (off = 0; off < n; off += 65536) {
            size_t k = n - off > 65536 ? 65536 : n - off;
            if (pdeflate_write(p, in + off, k) != 0) break;
        }
        if (pdeflate_finish(p) != 0) { fprintf(stderr, "%s: %s\n", argv[fi], pdeflate_errmsg(p)); return 1; }
        pdeflate_free(p);
        t[3] += cpu() - t0;
        sz[3] += b.len;
        {
            uLongf back = (uLongf)n + 1;
            unsigned char *chk = (unsigned char *)malloc(n + 1);
            if (!chk || uncompress(chk, &back, b.p, (uLong)b.len) != Z_OK || back != n || memcmp(chk, in, n) != 0) {
                fprintf(stderr, "%s: pdeflate's output does not inflate back to the input\n", argv[fi]);
                return 1;
            }
            free(chk);
        }
        printf("%-28s %11zu bytes\n", argv[fi], n);
        free(b.p); free(in); free(out);
        libdeflate_free_compressor(c);
    }
    printf("level %d, %zu KiB chunks, %zu bytes in all (CPU seconds of this process)\n", level, chunk / 1024, all);
    printf("zlib, one stream (pg_dump)    %11zu bytes          %6.2fs\n", sz[0], t[0]);
    printf("libdeflate per chunk          %11zu bytes (%.3fx)  %6.2fs (%.2fx)\n", sz[1], (double)sz[1] / (double)sz[0], t[1], t[1] / t[0]);
    printf("block walker (unfinal)                                  %6.2fs (%.1f%% of libdeflate)\n", t[2], 100 * t[2] / t[1]);
    printf("pdeflate, 1 thread, verified  %11zu bytes (%.3fx)  %6.2fs (%.2fx)\n", sz[3], (double)sz[3] / (double)sz[0], t[3], t[3] / t[0]);
    return 0;
}
