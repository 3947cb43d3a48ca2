/* test_pdeflate.c -- the parallel compressor produces one ordinary zlib
 * stream that stock inflate() reads back byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "pdeflate.h"

static int passed, failed;
#define CHECK(cond, ...) do { if (cond) passed++; else { failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

typedef struct Buf { unsigned char *p; size_t len, cap; int fail_after; } Buf;

static int sink(void *ud, const unsigned char *data, size_t len) {
    Buf *b = (Buf *)ud;
    if (b->fail_after >= 0 && b->len + len > (size_t)b->fail_after) return -1;
    if (b->len + len > b->cap) {
        size_t cap = (b->len + len) * 2;
        unsigned char *np = (unsigned char *)realloc(b->p, cap);
        if (!np) return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* Inflate one zlib stream; returns 0 if it decodes to exactly expect and
 * ends exactly at the end of the buffer. */
static int inflate_check(const unsigned char *z, size_t zlen, const unsigned char *expect, size_t elen) {
    z_stream s;
    unsigned char *out = (unsigned char *)malloc(elen + 1);
    int rc;
    memset(&s, 0, sizeof s);
    if (!out || inflateInit(&s) != Z_OK) return -1;
    s.next_in = (unsigned char *)z;
    s.avail_in = (uInt)zlen;
    s.next_out = out;
    s.avail_out = (uInt)elen + 1;
    rc = inflate(&s, Z_FINISH);
    inflateEnd(&s);
    rc = rc == Z_STREAM_END && s.avail_in == 0 && s.total_out == elen && memcmp(out, expect, elen) == 0 ? 0 : -1;
    free(out);
    return rc;
}

static unsigned char *make_input(size_t n, unsigned seed) {
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    size_t i;
    unsigned x = seed;
    for (i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        /* half text-like and compressible, half noise, in runs */
        p[i] = ((i / 5000) % 2) ? (unsigned char)(x >> 16) : (unsigned char)("row\t42\tsome text\\n\n"[i % 19]);
    }
    return p;
}

static size_t compress_with(const unsigned char *in, size_t n, int level, int threads, size_t chunk,
                            size_t writes, Buf *out) {
    PDeflate *p = pdeflate_new(level, threads, chunk, sink, out);
    size_t off = 0, step = writes ? (n / writes) + 1 : n;
    if (!p) return 0;
    while (off < n) {
        size_t k = n - off < step ? n - off : step;
        if (pdeflate_write(p, in + off, k) != 0) break;
        off += k;
    }
    pdeflate_finish(p);
    pdeflate_free(p);
    return out->len;
}

int main(void) {
    static const size_t sizes[] = {0, 1, 4095, 65536, 131072, 131073, 1000000, 5 * 1024 * 1024 + 17};
    static const int levels[] = {-1, 1, 6, 9, 0};
    static const int threads[] = {1, 2, 4};
    size_t si;
    int li, ti;
    for (si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        unsigned char *in = make_input(sizes[si], (unsigned)si + 1);
        for (li = 0; li < 5; li++)
            for (ti = 0; ti < 3; ti++) {
                Buf b = {NULL, 0, 0, -1};
                compress_with(in, sizes[si], levels[li], threads[ti], 0, 7, &b);
                CHECK(inflate_check(b.p, b.len, in, sizes[si]) == 0,
                      "round trip size=%zu level=%d threads=%d", sizes[si], levels[li], threads[ti]);
                free(b.p);
            }
        free(in);
    }
    /* one byte at a time still works (many writes, small chunks) */
    {
        size_t n = 200000, i;
        unsigned char *in = make_input(n, 99);
        Buf b = {NULL, 0, 0, -1};
        PDeflate *p = pdeflate_new(-1, 2, 64 * 1024, sink, &b);
        for (i = 0; i < n; i++) pdeflate_write(p, in + i, 1);
        CHECK(pdeflate_total_in(p) == n, "total_in counts every byte");
        pdeflate_finish(p);
        pdeflate_free(p);
        CHECK(inflate_check(b.p, b.len, in, n) == 0, "byte-at-a-time round trip");
        free(b.p);
        free(in);
    }
    /* the same compressor makes two independent streams in a row */
    {
        unsigned char *a = make_input(300000, 5), *c = make_input(70000, 6);
        Buf b1 = {NULL, 0, 0, -1}, b2 = {NULL, 0, 0, -1};
        PDeflate *p = pdeflate_new(6, 2, 0, sink, &b1);
        pdeflate_write(p, a, 300000);
        pdeflate_finish(p);
        p = p; /* switch sinks by hand: the ud pointer is fixed, so copy out */
        Buf first = b1;
        b1.p = NULL; b1.len = b1.cap = 0;
        pdeflate_write(p, c, 70000);
        pdeflate_finish(p);
        pdeflate_free(p);
        CHECK(inflate_check(first.p, first.len, a, 300000) == 0, "first of two streams");
        CHECK(inflate_check(b1.p, b1.len, c, 70000) == 0, "second stream starts fresh (header, no stale dictionary)");
        free(first.p); free(b1.p); free(b2.p); free(a); free(c);
    }
    /* size stays within 1% of single-threaded zlib at the same level */
    {
        size_t n = 8 * 1024 * 1024, i;
        unsigned char *in = (unsigned char *)malloc(n);
        unsigned x = 7;
        for (i = 0; i < n; i++) {       /* pg-like text rows with moderate entropy */
            x = x * 1103515245u + 12345u;
            in[i] = (i % 64 == 63) ? '\n' : (unsigned char)("0123456789abcdef\t"[(x >> 16) % 17]);
        }
        uLongf zl = compressBound(n);
        unsigned char *z = (unsigned char *)malloc(zl);
        compress2(z, &zl, in, n, 6);
        Buf b = {NULL, 0, 0, -1};
        compress_with(in, n, 6, 2, 0, 1, &b);
        CHECK((double)b.len <= 1.01 * (double)zl, "parallel size %zu vs zlib %lu", b.len, (unsigned long)zl);
        CHECK(inflate_check(b.p, b.len, in, n) == 0, "8 MiB round trip");
        free(b.p); free(z); free(in);
    }
    /* a failing sink makes write/finish fail, with a message */
    {
        unsigned char *in = make_input(2000000, 3);
        Buf b = {NULL, 0, 0, 1000};
        PDeflate *p = pdeflate_new(-1, 2, 0, sink, &b);
        int r = pdeflate_write(p, in, 2000000);
        if (r == 0) r = pdeflate_finish(p);
        CHECK(r == -1, "sink failure reported");
        CHECK(strstr(pdeflate_errmsg(p), "writing") != NULL, "message: %s", pdeflate_errmsg(p));
        pdeflate_free(p);
        free(b.p);
        free(in);
    }
    CHECK(pdeflate_new(10, 1, 0, sink, NULL) == NULL, "level 10 refused");
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
