/* test_pdeflate.c -- the parallel compressor produces one ordinary zlib
 * stream that stock inflate() reads back byte for byte, whatever the chunk
 * size, thread count and kind of libdeflate block; the block walker that
 * makes libdeflate's streams continue refuses what is not a valid stream,
 * saying what and where. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
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
/* 0 if z inflates (wbits 15: a zlib stream, -15: raw DEFLATE) to exactly
 * expect, its final block ending exactly at the end of the buffer. */
static int inflate_bits(const unsigned char *z, size_t zlen, const unsigned char *expect, size_t elen, int wbits) {
    z_stream s;
    unsigned char *out = (unsigned char *)malloc(elen + 1);
    int rc;
    memset(&s, 0, sizeof s);
    if (!out || inflateInit2(&s, wbits) != Z_OK) { free(out); return -1; }
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

static int inflate_check(const unsigned char *z, size_t zlen, const unsigned char *expect, size_t elen) {
    return inflate_bits(z, zlen, expect, elen, 15);
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

/* ---------------------------------------------------------------- the block walker */

/* Raw DEFLATE (no zlib wrapper): 0 if it decodes to exactly expect. */
static int raw_inflate_check(const unsigned char *z, size_t zlen, const unsigned char *expect, size_t elen) {
    return inflate_bits(z, zlen, expect, elen, -15);
}

/* 1 if zlib's raw inflate reads z[0..zlen) as one complete stream that
 * ends in its last byte; else 0 with *msg = zlib's message. */
static int raw_inflate_whole(const unsigned char *z, size_t zlen, const char **msg) {
    static unsigned char out[1 << 16];
    z_stream s;
    int rc;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return 0;
    s.next_in = (unsigned char *)z;
    s.avail_in = (uInt)zlen;
    do {
        s.next_out = out;
        s.avail_out = sizeof out;
        rc = inflate(&s, Z_NO_FLUSH);
    } while (rc == Z_OK);
    *msg = rc == Z_DATA_ERROR ? s.msg : NULL;
    inflateEnd(&s);
    return rc == Z_STREAM_END && s.avail_in == 0;
}

/* libdeflate's raw stream of in[0..n) at level, in a malloc'd buffer with
 * room for pdeflate_unfinal and more behind it (*cap bytes). */
static unsigned char *ld_compress(const unsigned char *in, size_t n, int level, size_t *zlen, size_t *cap) {
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    unsigned char *z;
    *cap = libdeflate_deflate_compress_bound(NULL, n) + 64;
    z = (unsigned char *)malloc(*cap);
    *zlen = c && z ? libdeflate_deflate_compress(c, in, n, z, *cap - 64) : 0;
    libdeflate_free_compressor(c);
    return z;
}

static unsigned char *noise(size_t n, unsigned seed) {
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    unsigned x = seed;
    size_t i;
    for (i = 0; i < n; i++) { x = x * 1103515245u + 12345u; p[i] = (unsigned char)(x >> 16); }
    return p;
}

static unsigned char *text(size_t n, unsigned seed) {
    static const char *words[] = {"select", "row", "\t", "42", "\\N", "\n", "2026-01-01", "uuid", "abc", "payload"};
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    unsigned x = seed;
    size_t i = 0;
    while (i < n) {
        const char *w;
        x = x * 1103515245u + 12345u;
        w = words[(x >> 16) % 10];
        while (*w && i < n) p[i++] = (unsigned char)*w++;
    }
    return p;
}

/* unfinal(libdeflate(in)) + an empty final block inflates to in; returns the
 * bytes unfinal added (4 or 5), or -1 */
static int unfinal_roundtrip(const unsigned char *in, size_t n, int level, int want_btype, const char *what) {
    size_t zlen, cap, nl;
    char err[200];
    unsigned char *z = ld_compress(in, n, level, &zlen, &cap);
    int added = -1;
    if (zlen == 0) { CHECK(0, "%s: libdeflate compressed", what); free(z); return -1; }
    if (want_btype >= 0) CHECK(((z[0] >> 1) & 3) == want_btype, "%s: libdeflate's first block has type %d (wanted %d)", what, (z[0] >> 1) & 3, want_btype);
    if (pdeflate_unfinal(z, zlen, cap, &nl, err, sizeof err) != 0) { CHECK(0, "%s: unfinal failed: %s", what, err); free(z); return -1; }
    CHECK(nl >= 4 && z[nl - 4] == 0 && z[nl - 3] == 0 && z[nl - 2] == 0xFF && z[nl - 1] == 0xFF, "%s: ends with the sync marker", what);
    z[nl] = 0x03; z[nl + 1] = 0x00;       /* empty final fixed block */
    CHECK(raw_inflate_check(z, nl + 2, in, n) == 0, "%s: continued stream inflates to the input", what);
    added = (int)(nl - zlen);
    free(z);
    return added;
}

/* How many blocks zlib meets in a raw stream (inflate stops at each end
 * of block with Z_BLOCK): an independent view of libdeflate's output. */
static int count_blocks(const unsigned char *z, size_t zlen, size_t outlen) {
    z_stream s;
    unsigned char *out = (unsigned char *)malloc(outlen + 1);
    int blocks = 0, rc = Z_OK, guard = 0;
    memset(&s, 0, sizeof s);
    if (!out || inflateInit2(&s, -15) != Z_OK) { free(out); return -1; }
    s.next_in = (unsigned char *)z;
    s.avail_in = (uInt)zlen;
    s.next_out = out;
    s.avail_out = (uInt)outlen + 1;
    while (rc == Z_OK && guard++ < 100000) {
        rc = inflate(&s, Z_BLOCK);
        if ((rc == Z_OK || rc == Z_STREAM_END) && (s.data_type & 128)) blocks++;
    }
    inflateEnd(&s);
    free(out);
    return rc == Z_STREAM_END ? blocks : -1;
}

typedef struct BW { unsigned char b[512]; size_t bit; } BW;
static void bw_put(BW *w, unsigned v, unsigned n) {
    unsigned i;
    for (i = 0; i < n; i++, w->bit++)
        if ((v >> i) & 1) w->b[w->bit >> 3] |= (unsigned char)(1u << (w->bit & 7));
}
static void bw_code(BW *w, unsigned code, unsigned len) { while (len--) bw_put(w, (code >> len) & 1, 1); }  /* Huffman codes: first bit highest */
static size_t bw_len(const BW *w) { return (w->bit + 7) / 8; }
/* a dynamic block header up to its code-length code lengths (given in the RFC's order) */
static void bw_dynamic(BW *w, unsigned hlit, unsigned hdist, unsigned hclen, const unsigned char *plens) {
    unsigned i;
    bw_put(w, 1, 1);
    bw_put(w, 2, 2);
    bw_put(w, hlit - 257, 5);
    bw_put(w, hdist - 1, 5);
    bw_put(w, hclen - 4, 4);
    for (i = 0; i < hclen; i++) bw_put(w, plens[i], 3);
}

/* unfinal refuses buf[0..len) with a message containing want, leaving buf as it was */
static void refuses(const unsigned char *buf, size_t len, const char *want, const char *what) {
    unsigned char copy[600];
    size_t nl = 0;
    char err[200] = "";
    memset(copy, 0xAA, sizeof copy);
    memcpy(copy, buf, len);
    CHECK(pdeflate_unfinal(copy, len, sizeof copy, &nl, err, sizeof err) == -1, "%s: refused", what);
    CHECK(strstr(err, want) != NULL && strstr(err, "invalid DEFLATE data at bit ") == err, "%s: message \"%s\" says \"%s\" and where", what, err, want);
    CHECK(memcmp(copy, buf, len) == 0, "%s: buffer left unchanged", what);
}

static void test_walker(void) {
    size_t n;
    int added, seen4 = 0, seen5 = 0;
    /* the kinds of block libdeflate writes: fixed Huffman for tiny input,
     * stored for noise and at level 0, dynamic for text; several blocks */
    {
        unsigned char *t = text(1 << 20, 1), *r = noise(300000, 2);
        static const unsigned char tiny[] = "select row 42 select row 42 select";
        unfinal_roundtrip(tiny, sizeof tiny - 1, 6, 1, "34 bytes of text (fixed Huffman)");
        unfinal_roundtrip(t, 0, 6, -1, "empty input");
        unfinal_roundtrip(r, 300000, 6, 0, "noise (stored blocks)");
        unfinal_roundtrip(t, 200000, 0, 0, "level 0 (stored blocks)");
        unfinal_roundtrip(t, 1 << 20, 6, 2, "1 MiB of text (dynamic blocks)");
        unfinal_roundtrip(t, 1 << 20, 1, 2, "1 MiB of text at level 1");
        unfinal_roundtrip(t, 1 << 20, 9, 2, "1 MiB of text at level 9");
        /* every end position of the final block within its byte */
        for (n = 1; n < 400; n++) {
            added = unfinal_roundtrip(n % 2 ? t + n : r + n, n, 6, -1, "small input");
            if (added == 4) seen4++;
            if (added == 5) seen5++;
        }
        CHECK(seen4 > 0 && seen5 > 0, "both sync-marker placements met (%d in the last byte, %d spilling)", seen4, seen5);
        free(t); free(r);
    }
    /* continued streams concatenate into one: A B C (C keeps its final block) */
    {
        unsigned char *t = text(700000, 3), *r = noise(100000, 4), *all = (unsigned char *)malloc(900000), *z = (unsigned char *)malloc(2000000);
        size_t zl = 0, parts[3] = {400000, 100000, 200000}, off = 0, i;
        const unsigned char *src[3] = {t, r, t + 400000};
        for (i = 0; i < 3; i++) {
            size_t len, cap, nl;
            char err[200];
            unsigned char *c = ld_compress(src[i], parts[i], 6, &len, &cap);
            if (i < 2) CHECK(pdeflate_unfinal(c, len, cap, &nl, err, sizeof err) == 0, "part %zu: %s", i, err);
            else nl = len;
            memcpy(z + zl, c, nl);
            zl += nl;
            memcpy(all + off, src[i], parts[i]);
            off += parts[i];
            free(c);
        }
        CHECK(raw_inflate_check(z, zl, all, off) == 0, "three continued pieces inflate as one stream");
        free(t); free(r); free(all); free(z);
    }
    /* what is not a valid stream is refused, with what and where */
    {
        static const unsigned char type3[] = {0x07}, nlen[] = {0x01, 0x05, 0x00, 0x00, 0x00},
            short_stored[] = {0x01, 0x05, 0x00, 0xFA, 0xFF, 'a'}, no_final[] = {0x00, 0x00, 0x00, 0xFF, 0xFF},
            after[] = {0x03, 0x00, 0x00};
        BW w;
        refuses(type3, 1, "invalid block type 3", "block type 3");
        refuses(nlen, sizeof nlen, "does not match its complement", "stored NLEN");
        refuses(short_stored, sizeof short_stored, "truncated stored block", "short stored block");
        refuses(no_final, sizeof no_final, "ends before its final block", "no final block");
        refuses(no_final, 0, "ends before its final block", "empty buffer");
        refuses(after, sizeof after, "data after the final block", "a byte after the final block");
        /* fixed Huffman: 'a', length 3 (257), distance code 30 */
        memset(&w, 0, sizeof w); bw_put(&w, 1, 1); bw_put(&w, 1, 2);
        bw_code(&w, 0x30 + 'a', 8); bw_code(&w, 1, 7); bw_code(&w, 30, 5); bw_code(&w, 0, 7);
        refuses(w.b, bw_len(&w), "invalid distance code", "distance code 30");
        /* fixed Huffman: literal/length symbol 286 */
        memset(&w, 0, sizeof w); bw_put(&w, 1, 1); bw_put(&w, 1, 2);
        bw_code(&w, 0xC0 + 6, 8); bw_code(&w, 0, 7);
        refuses(w.b, bw_len(&w), "invalid literal/length code", "symbol 286");
        /* fixed Huffman without its end-of-block code */
        memset(&w, 0, sizeof w); bw_put(&w, 1, 1); bw_put(&w, 1, 2);
        bw_code(&w, 0x30 + 'a', 8); bw_code(&w, 0x30 + 'b', 8);
        refuses(w.b, bw_len(&w), "truncated", "no end-of-block code");
        /* dynamic headers */
        {
            static const unsigned char over[] = {1, 1, 1, 0}, incomplete[] = {1, 0, 0, 0}, rep16[] = {1, 0, 0, 1}, zeros[] = {0, 0, 1, 1},
                eob_only[] = {0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
            memset(&w, 0, sizeof w); bw_dynamic(&w, 287, 1, 4, zeros);
            refuses(w.b, bw_len(&w), "too many literal/length or distance codes", "HLIT 287");
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 31, 4, zeros);
            refuses(w.b, bw_len(&w), "too many literal/length or distance codes", "HDIST 31");
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 4, over);
            refuses(w.b, bw_len(&w), "over-subscribed", "code-length code over-subscribed");
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 4, incomplete);
            refuses(w.b, bw_len(&w), "incomplete", "code-length code incomplete");
            /* codes: 0 -> 0, 16 -> 1; the first length is a repeat */
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 4, rep16);
            bw_code(&w, 1, 1); bw_put(&w, 0, 2);
            refuses(w.b, bw_len(&w), "repeated code length with none before it", "repeat first");
            /* codes: 0 -> 0, 18 -> 1; 258 zero lengths: no end-of-block code */
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 4, zeros);
            bw_code(&w, 1, 1); bw_put(&w, 127, 7); bw_code(&w, 1, 1); bw_put(&w, 109, 7);
            refuses(w.b, bw_len(&w), "no end-of-block code", "no end-of-block code");
            /* 276 zero lengths for 258 codes */
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 4, zeros);
            bw_code(&w, 1, 1); bw_put(&w, 127, 7); bw_code(&w, 1, 1); bw_put(&w, 127, 7);
            refuses(w.b, bw_len(&w), "code lengths run past the codes", "too many lengths");
            /* codes: 18 -> 0, 0 -> 10, 2 -> 11; only end-of-block has a
             * length (2): an incomplete literal/length code */
            memset(&w, 0, sizeof w); bw_dynamic(&w, 257, 1, 16, eob_only);
            bw_code(&w, 0, 1); bw_put(&w, 127, 7); bw_code(&w, 0, 1); bw_put(&w, 107, 7);
            bw_code(&w, 3, 2); bw_code(&w, 2, 2);
            refuses(w.b, bw_len(&w), "incomplete Huffman code", "incomplete literal/length code");
        }
    }
    /* every strict prefix of a real stream is refused; with a bit flipped
     * the walker accepts exactly what zlib's inflate reads as one whole
     * stream (zlib also refuses distances beyond the data, which the walker
     * leaves to it: in the concatenation they reach into earlier chunks),
     * and a refusal says where */
    {
        unsigned char *t = text(30000, 9), *r = noise(10000, 10), *z, *c;
        size_t zlen, cap, len, nl;
        unsigned x = 77;
        int i, prefixes_refused = 1, flips_ok = 1, blocks, refused = 0, accepted = 0;
        char err[200];
        memcpy(t + 10000, r, 10000);        /* text, noise, text: blocks of each kind */
        z = ld_compress(t, 30000, 6, &zlen, &cap);
        blocks = count_blocks(z, zlen, 30000);
        CHECK(blocks >= 3, "a stream of several blocks (%d, %zu bytes)", blocks, zlen);
        c = (unsigned char *)malloc(cap);
        for (len = 0; len < zlen; len++) {
            memcpy(c, z, len);
            if (pdeflate_unfinal(c, len, cap, &nl, err, sizeof err) != -1 || strstr(err, "invalid DEFLATE data at bit ") != err) {
                prefixes_refused = 0;
                printf("prefix of %zu bytes: %s\n", len, err);
                break;
            }
        }
        CHECK(prefixes_refused, "every strict prefix refused (%zu of %zu bytes)", len, zlen);
        for (i = 0; i < 1000; i++) {
            size_t bit;
            memcpy(c, z, zlen);
            x = x * 1103515245u + 12345u;
            bit = (x >> 8) % (zlen * 8);
            c[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            err[0] = 0;
            {
                const char *zmsg = NULL;
                int zok = raw_inflate_whole(c, zlen, &zmsg), wok;
                wok = pdeflate_unfinal(c, zlen, cap, &nl, err, sizeof err) == 0;
                if (wok) accepted++; else refused++;
                if (!wok && strstr(err, "invalid DEFLATE data at bit ") != err) flips_ok = 0;
                if (wok != zok && !(wok && zmsg && strstr(zmsg, "too far back"))) {
                    printf("flip of bit %zu: walker %s (%s), zlib %s (%s)\n", bit, wok ? "accepts" : "refuses", err, zok ? "accepts" : "refuses", zmsg ? zmsg : "");
                    flips_ok = 0;
                }
            }
        }
        CHECK(flips_ok, "flipped bits: the walker agrees with zlib, and refusals say where");
        CHECK(refused > 0 && accepted > 0, "flips both refused (%d) and accepted (%d)", refused, accepted);
        memcpy(c, z, zlen);
        CHECK(pdeflate_unfinal(c, zlen, zlen + 5, &nl, err, sizeof err) == -1 && strstr(err, "no room") != NULL, "no room for the marker: %s", err);
        free(t); free(r); free(z); free(c);
    }
}

/* pdeflate with small chunks: many chunks of every kind go through the
 * walker; inputs end inside a chunk and exactly on a chunk boundary */
static void test_chunks(void) {
    static const size_t chunks[] = {1, 2, 7, 100, 1000, 4096, 65536};
    static const int threads[] = {1, 2, 4};
    size_t ci, k;
    int ti;
    for (ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
        size_t chunk = chunks[ci];
        size_t nchunks = chunk < 100 ? 40 : chunk < 10000 ? 20 : 6;
        size_t lens[6];
        lens[0] = 0;
        lens[1] = chunk;                    /* exactly one chunk */
        lens[2] = nchunks * chunk;          /* ends on a boundary */
        lens[3] = nchunks * chunk + 1;
        lens[4] = nchunks * chunk - 1;
        lens[5] = nchunks * chunk + chunk / 2;
        for (k = 0; k < 6; k++) {
            unsigned char *t = text(lens[k], (unsigned)(ci * 7 + k)), *r = noise(lens[k], (unsigned)(ci + k));
            for (ti = 0; ti < 3; ti++) {
                Buf bt = {NULL, 0, 0, -1}, br = {NULL, 0, 0, -1};
                PDeflate *p = pdeflate_new(6, threads[ti], chunk, sink, &bt);
                CHECK(p != NULL, "started");
                if (!p) continue;
                CHECK(pdeflate_write(p, t, lens[k]) == 0 && pdeflate_finish(p) == 0, "text: %s", pdeflate_errmsg(p));
                pdeflate_free(p);
                CHECK(inflate_check(bt.p, bt.len, t, lens[k]) == 0, "text round trip: %zu bytes in %zu-byte chunks, %d threads", lens[k], chunk, threads[ti]);
                p = pdeflate_new(-1, threads[ti], chunk, sink, &br);
                if (!p) continue;
                CHECK(pdeflate_write(p, r, lens[k]) == 0 && pdeflate_finish(p) == 0, "noise: %s", pdeflate_errmsg(p));
                pdeflate_free(p);
                CHECK(inflate_check(br.p, br.len, r, lens[k]) == 0, "incompressible round trip: %zu bytes in %zu-byte chunks, %d threads", lens[k], chunk, threads[ti]);
                free(bt.p); free(br.p);
            }
            free(t); free(r);
        }
    }
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
    test_walker();
    test_chunks();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
