/*
 * pdeflate.c -- parallel deflate into one zlib stream (see pdeflate.h).
 *
 * Chunk life cycle: FREE -> (filled by the writer) -> READY (queued with a
 * sequence number) -> BUSY (a worker compresses it) -> DONE -> emitted by the
 * writer in sequence order -> FREE. The mutex guards states and sequence
 * numbers; a chunk's buffers belong to whoever moved it to its state.
 *
 * The chunks are compressed by libdeflate without a dictionary (its 1.14
 * has none); at 256 KiB that costs well under 1% of size (measured on the
 * bench dataset), and no 32 KiB of history is copied per chunk.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
#include <zlib.h>
#include "pdeflate.h"

/* ---------------------------------------------------------------- the block walker
 *
 * pdeflate_unfinal() must find where the final block of libdeflate's output
 * starts and ends; DEFLATE has no block lengths for Huffman blocks, so the
 * walker decodes every symbol (RFC 1951, 3.2) with table lookups, producing
 * no output: a literal/length table entry tells how many bits the code and
 * its extra bits take, and whether a distance code follows. It is as strict
 * as zlib's inflate (the judge of the result): over-subscribed or incomplete
 * codes (but a single code of length 1), more than 286 literal/length or 30
 * distance codes, no end-of-block code, the symbols 286/287 and distances
 * 30/31, a stored block whose NLEN is not ~LEN, block type 3 and truncation
 * are all refused with the bit where they were met.
 *
 * As only the length of each code matters, a primary literal/length entry
 * whose code is a literal stands for the whole run of literal codes that
 * fits in its LIT_TB bits: text such as hex digits takes two or three
 * literals per lookup. */

enum { K_LIT, K_LEN, K_EOB, K_SUB, K_BAD, K_SYM };
#define ENTRY(bits, kind, val) ((uint32_t)(bits) | ((uint32_t)(kind) << 8) | ((uint32_t)(val) << 16))
#define E_BITS(e) ((e) & 0xFFu)
#define E_KIND(e) (((e) >> 8) & 7u)
#define E_SUBBITS(e) (((e) >> 11) & 31u)
#define E_VAL(e) ((e) >> 16)

#define LIT_TB 11
#define DIST_TB 8
#define PRE_TB 7
/* primary table plus one subtable of 2^(15 - TB) entries per distinct prefix
 * of a code longer than TB bits (at most one per symbol) */
#define LIT_TABLE ((1 << LIT_TB) + 288 * (1 << (15 - LIT_TB)))
#define DIST_TABLE ((1 << DIST_TB) + 32 * (1 << (15 - DIST_TB)))

enum { W_PRE, W_LIT, W_DIST };

typedef struct Bits {
    const unsigned char *start, *p, *end;
    uint64_t buf;       /* bits not consumed yet, the next one lowest */
    unsigned cnt;       /* how many of buf's bits are valid */
    unsigned over;      /* zero bytes supplied past the end */
} Bits;

static size_t bits_pos(const Bits *b) { return ((size_t)(b->p - b->start) + b->over) * 8 - b->cnt; }

/* At least 56 valid bits in buf. Returns -1 once the reader ran well past
 * the end of the data (it supplies zeros there, so that a truncated stream
 * ends the loops that decode it). */
static inline int refill(Bits *b) {
    if (b->end - b->p >= 8) {
        uint64_t w;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(&w, b->p, 8);
#else
        int i;
        for (w = 0, i = 7; i >= 0; i--) w = (w << 8) | b->p[i];
#endif
        b->buf |= w << b->cnt;
        b->p += (63 - b->cnt) >> 3;
        b->cnt |= 56;
        return 0;
    }
    while (b->cnt < 56) {
        if (b->p < b->end) b->buf |= (uint64_t)*b->p++ << b->cnt;
        else b->over++;
        b->cnt += 8;
    }
    return b->over > 16 ? -1 : 0;
}

static inline void consume(Bits *b, unsigned n) { b->buf >>= n; b->cnt -= n; }

static inline unsigned take(Bits *b, unsigned n) {
    unsigned v = (unsigned)(b->buf & ((1u << n) - 1));
    consume(b, n);
    return v;
}

static unsigned extra_bits(int what, int sym) {
    if (what == W_LIT) return sym >= 265 && sym <= 284 ? (unsigned)(sym - 261) / 4 : 0;
    if (what == W_DIST) return sym >= 4 && sym <= 29 ? (unsigned)(sym - 2) / 2 : 0;
    return 0;
}

/* The entry of symbol sym whose code has len bits (used from the table
 * level that has already consumed `skip` of them). */
static uint32_t sym_entry(int what, int sym, unsigned len, unsigned skip) {
    unsigned bits = len - skip;
    if (what == W_PRE) return ENTRY(bits, K_SYM, sym);
    if (what == W_DIST) return sym >= 30 ? ENTRY(bits, K_BAD, 0) : ENTRY(bits + extra_bits(what, sym), K_SYM, sym);
    if (sym < 256) return ENTRY(bits, K_LIT, sym);
    if (sym == 256) return ENTRY(bits, K_EOB, sym);
    if (sym >= 286) return ENTRY(bits, K_BAD, 0);
    return ENTRY(bits + extra_bits(what, sym), K_LEN, sym);
}

static unsigned reverse(unsigned code, unsigned len) {
    unsigned r = 0;
    while (len--) { r = (r << 1) | (code & 1); code >>= 1; }
    return r;
}

/* Build the decoding table of a canonical Huffman code from its lengths.
 * Returns NULL, or what is wrong with the code. */
static const char *build(uint32_t *t, int tb, const unsigned char *lens, int n, int what) {
    unsigned count[16] = {0}, next[16], code;
    int sorted[320], off[17], s, len, maxlen = 0, i;
    long left = 1;
    size_t subnext = (size_t)1 << tb;
    unsigned prefix = ~0u, subbits = 0;
    uint32_t *sub = NULL;
    for (s = 0; s < n; s++) count[lens[s]]++;
    count[0] = 0;
    for (len = 1; len <= 15; len++) {
        left = (left << 1) - (long)count[len];
        if (left < 0) return "over-subscribed Huffman code";
        if (count[len]) maxlen = len;
    }
    for (i = 0; i < (1 << tb); i++) t[i] = ENTRY(0, K_BAD, 0);
    if (maxlen == 0) return NULL;   /* no codes at all: any use of one is refused when met */
    if (left > 0 && (what == W_PRE || maxlen != 1)) return "incomplete Huffman code";
    off[1] = 0;
    for (len = 1; len <= 15; len++) off[len + 1] = off[len] + (int)count[len];
    for (s = 0; s < n; s++) if (lens[s]) sorted[off[lens[s]]++] = s;
    next[1] = 0;
    for (len = 2; len <= 15; len++) next[len] = (next[len - 1] + count[len - 1]) << 1;
    if (maxlen > tb) subbits = (unsigned)(maxlen - tb);
    for (i = 0; i < off[15 + 1]; i++) {
        unsigned l;
        s = sorted[i];
        l = lens[s];
        code = next[l]++;
        if ((int)l <= tb) {
            unsigned r = reverse(code, l);
            for (; r < (1u << tb); r += 1u << l) t[r] = sym_entry(what, s, l, 0);
        } else {
            unsigned pre = code >> (l - (unsigned)tb), r;
            if (pre != prefix) {
                size_t k;
                prefix = pre;
                sub = t + subnext;
                for (k = 0; k < ((size_t)1 << subbits); k++) sub[k] = ENTRY(0, K_BAD, 0);
                t[reverse(pre, (unsigned)tb)] = ENTRY((unsigned)tb, K_SUB, subnext) | (subbits << 11);
                subnext += (size_t)1 << subbits;
            }
            r = reverse(code, l) >> tb;
            for (; r < (1u << subbits); r += 1u << (l - (unsigned)tb)) sub[r] = sym_entry(what, s, l, (unsigned)tb);
        }
    }
    if (what == W_LIT) {
        /* literal runs: the bits above a complete code are the next code's
         * first ones (looked up with zeros above them, exact when that code
         * fits in what is left) */
        unsigned char run[1 << LIT_TB];
        for (i = 0; i < (1 << tb); i++) {
            unsigned pos = 0;
            for (;;) {
                uint32_t e = t[(unsigned)i >> pos];
                if (E_KIND(e) != K_LIT || pos + E_BITS(e) > (unsigned)tb) break;
                pos += E_BITS(e);
            }
            run[i] = (unsigned char)pos;
        }
        for (i = 0; i < (1 << tb); i++)
            if (E_KIND(t[i]) == K_LIT) t[i] = ENTRY(run[i], K_LIT, 0);
    }
    return NULL;
}

/* Look a symbol up in t (buf holds >= 30 valid bits); consumes its code and
 * extra bits. */
static inline uint32_t decode(Bits *b, const uint32_t *t, int tb) {
    uint32_t e = t[b->buf & ((1u << tb) - 1)];
    if (E_KIND(e) == K_SUB) {
        consume(b, (unsigned)tb);
        e = t[E_VAL(e) + (b->buf & ((1u << E_SUBBITS(e)) - 1))];
    }
    if (E_KIND(e) != K_BAD) consume(b, E_BITS(e));
    return e;
}

typedef struct Walk {
    uint32_t lit[LIT_TABLE], dist[DIST_TABLE], pre[1 << PRE_TB];
} Walk;

static const char *dynamic_header(Bits *b, Walk *w) {
    static const unsigned char order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    unsigned char lens[320], plens[19];
    unsigned hlit, hdist, hclen, i, total, n = 0;
    const char *err;
    if (refill(b)) return "truncated block header";
    hlit = take(b, 5) + 257;
    hdist = take(b, 5) + 1;
    hclen = take(b, 4) + 4;
    if (hlit > 286 || hdist > 30) return "too many literal/length or distance codes";
    memset(plens, 0, sizeof plens);
    for (i = 0; i < hclen; i++) {
        if (refill(b)) return "truncated block header";
        plens[order[i]] = (unsigned char)take(b, 3);
    }
    if ((err = build(w->pre, PRE_TB, plens, 19, W_PRE))) return err;
    total = hlit + hdist;
    while (n < total) {
        uint32_t e;
        unsigned sym, rep;
        unsigned char v = 0;
        if (refill(b)) return "truncated code lengths";
        e = decode(b, w->pre, PRE_TB);
        if (E_KIND(e) == K_BAD) return "invalid code-length code";
        sym = E_VAL(e);
        if (sym < 16) { lens[n++] = (unsigned char)sym; continue; }
        if (sym == 16) {
            if (n == 0) return "a repeated code length with none before it";
            v = lens[n - 1];
            rep = 3 + take(b, 2);
        } else if (sym == 17) rep = 3 + take(b, 3);
        else rep = 11 + take(b, 7);
        if (n + rep > total) return "code lengths run past the codes";
        while (rep--) lens[n++] = v;
    }
    if (lens[256] == 0) return "no end-of-block code";
    if ((err = build(w->lit, LIT_TB, lens, (int)hlit, W_LIT))) return err;
    if ((err = build(w->dist, DIST_TB, lens + hlit, (int)hdist, W_DIST))) return err;
    return NULL;
}

static void fixed_tables(Walk *w) {
    unsigned char lens[320];
    int i;
    for (i = 0; i < 144; i++) lens[i] = 8;
    for (; i < 256; i++) lens[i] = 9;
    for (; i < 280; i++) lens[i] = 7;
    for (; i < 288; i++) lens[i] = 8;
    for (i = 0; i < 32; i++) lens[288 + i] = 5;
    build(w->lit, LIT_TB, lens, 288, W_LIT);      /* complete codes: cannot fail */
    build(w->dist, DIST_TB, lens + 288, 32, W_DIST);
}

/* Skip the symbols of a Huffman block up to its end-of-block code (on a
 * copy of the reader, which the compiler keeps in registers). */
static const char *huffman_data(Bits *bp, const Walk *w) {
    Bits b = *bp;
    const char *why = NULL;
    for (;;) {
        uint32_t e;
        if (refill(&b)) { why = "truncated compressed data (no end-of-block code)"; break; }
        e = decode(&b, w->lit, LIT_TB);       /* <= 15 + 5 bits */
        if (E_KIND(e) == K_LIT) continue;
        if (E_KIND(e) == K_LEN) {
            e = decode(&b, w->dist, DIST_TB);  /* <= 15 + 13 bits: 48 in all, refill gave 56 */
            if (E_KIND(e) == K_BAD) { why = "invalid distance code"; break; }
            continue;
        }
        if (E_KIND(e) != K_EOB) why = "invalid literal/length code";
        break;
    }
    *bp = b;
    return why;
}

int pdeflate_unfinal(unsigned char *buf, size_t len, size_t cap, size_t *newlen, char *err, size_t errlen) {
    Bits b;
    Walk *w = NULL;
    size_t hdr = 0, end = 0, at = 0, q;
    const char *why = NULL;
    int final = 0, have_fixed = 0;
    memset(&b, 0, sizeof b);
    b.start = b.p = buf;
    b.end = buf + len;
    if (cap < len + PDEFLATE_UNFINAL_EXTRA) { snprintf(err, errlen, "no room after the stream (%zu of %zu bytes)", cap, len); return -1; }
    if (!(w = (Walk *)malloc(sizeof *w))) { snprintf(err, errlen, "out of memory"); return -1; }
    while (!final && !why) {
        unsigned type;
        if (refill(&b)) { why = "truncated stream (no final block)"; break; }
        at = bits_pos(&b);
        if (at >= len * 8) { why = "the stream ends before its final block"; break; }
        hdr = at;
        final = (int)take(&b, 1);
        type = take(&b, 2);
        if (type == 0) {
            unsigned l, nl;
            size_t bytepos;
            consume(&b, b.cnt & 7);             /* to the byte boundary */
            if (refill(&b)) { why = "truncated stored block"; break; }
            l = take(&b, 16);
            nl = take(&b, 16);
            if (l != (~nl & 0xFFFFu)) { why = "stored block length does not match its complement"; break; }
            bytepos = bits_pos(&b) / 8;
            if (bytepos + l > len) { why = "truncated stored block"; break; }
            b.p = buf + bytepos + l;
            b.buf = 0;
            b.cnt = 0;
            b.over = 0;
        } else if (type == 1) {
            if (!have_fixed) fixed_tables(w);
            have_fixed = 1;
            why = huffman_data(&b, w);
        } else if (type == 2) {
            have_fixed = 0;
            if (!(why = dynamic_header(&b, w))) why = huffman_data(&b, w);
        } else why = "invalid block type 3";
        if (!why && bits_pos(&b) > len * 8) why = "truncated stream";
    }
    free(w);
    end = bits_pos(&b);
    if (!why && (end + 7) / 8 != len) why = "data after the final block";
    if (why) {
        snprintf(err, errlen, "invalid DEFLATE data at bit %zu of %zu (in the block at bit %zu): %s", end, len * 8, at, why);
        return -1;
    }
    buf[hdr >> 3] &= (unsigned char)~(1u << (hdr & 7));   /* no longer the final block */
    /* an empty stored block at bit `end`: header 000, zeros to the byte, LEN 0, NLEN 0xFFFF */
    q = end >> 3;
    if (end & 7) buf[q] &= (unsigned char)((1u << (end & 7)) - 1);
    else buf[q] = 0;
    if ((end & 7) + 3 > 8) buf[++q] = 0;
    q++;
    buf[q] = 0; buf[q + 1] = 0; buf[q + 2] = 0xFF; buf[q + 3] = 0xFF;
    *newlen = q + 4;
    return 0;
}

/* ---------------------------------------------------------------- workers */

enum { J_FREE, J_READY, J_BUSY, J_DONE, J_ERR };

typedef struct Job {
    unsigned char *in, *out;
    size_t inlen, outlen, outcap;
    unsigned long adler;
    unsigned long long seq;
    int state;
    int last;               /* the stream's last chunk: keeps its final block */
    char err[256];          /* why the job failed (J_ERR) */
} Job;

struct PDeflate {
    int level, nthreads, njobs;
    size_t chunk;
    pdeflate_emit_fn emit;
    void *ud;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    pthread_t *threads;
    int started, stop;
    Job *jobs, *cur;
    unsigned long long next_seq, emit_seq;
    int header_written, failed;
    unsigned long adler;
    unsigned long long total_in, total_out;
    char err[256];
};

/* Compress one chunk into j->out: its own raw DEFLATE stream, made to
 * continue unless it is the stream's last. Returns 0, or -1 with j->err. */
static int compress_job(struct libdeflate_compressor *ld, Job *j) {
    size_t n;
    j->adler = libdeflate_adler32(1, j->in, j->inlen);
    n = libdeflate_deflate_compress(ld, j->in, j->inlen, j->out, j->outcap - PDEFLATE_UNFINAL_EXTRA);
    if (n == 0) {
        snprintf(j->err, sizeof j->err, "libdeflate could not compress %zu bytes into %zu (its own bound)", j->inlen, j->outcap);
        return -1;
    }
    if (j->last) { j->outlen = n; return 0; }
    char why[160];
    if (pdeflate_unfinal(j->out, n, j->outcap, &j->outlen, why, sizeof why) != 0) {
        snprintf(j->err, sizeof j->err, "libdeflate's output cannot be continued (%.160s); this is a bug, please report it", why);
        return -1;
    }
    return 0;
}

static void *worker(void *arg) {
    PDeflate *p = (PDeflate *)arg;
    struct libdeflate_compressor *ld = libdeflate_alloc_compressor(p->level < 0 ? 6 : p->level);
    for (;;) {
        Job *j = NULL;
        int i, rc;
        pthread_mutex_lock(&p->mu);
        for (;;) {
            unsigned long long best = ~0ULL;
            j = NULL;
            for (i = 0; i < p->njobs; i++)
                if (p->jobs[i].state == J_READY && p->jobs[i].seq < best) { best = p->jobs[i].seq; j = &p->jobs[i]; }
            if (j || p->stop) break;
            pthread_cond_wait(&p->work, &p->mu);
        }
        if (!j) { pthread_mutex_unlock(&p->mu); break; }
        j->state = J_BUSY;
        pthread_mutex_unlock(&p->mu);

        if (ld) rc = compress_job(ld, j);
        else { snprintf(j->err, sizeof j->err, "out of memory (libdeflate's compressor)"); rc = -1; }
        pthread_mutex_lock(&p->mu);
        j->state = rc == 0 ? J_DONE : J_ERR;
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
    libdeflate_free_compressor(ld);
    return NULL;
}

/* ---------------------------------------------------------------- writer */

static int fail(PDeflate *p, const char *msg) {
    if (!p->failed) snprintf(p->err, sizeof p->err, "%s", msg);
    p->failed = 1;
    return -1;
}

static int put(PDeflate *p, const unsigned char *buf, size_t len) {
    if (len == 0) return 0;
    if (p->emit(p->ud, buf, len) != 0) return fail(p, "writing compressed data failed");
    p->total_out += len;
    return 0;
}

static int header(PDeflate *p) {
    unsigned char h[2];
    if (p->header_written) return 0;
    /* CMF 0x78 (deflate, 32K window); FLG carries the level class and makes
     * the pair a multiple of 31 */
    h[0] = 0x78;
    h[1] = p->level == 1 || p->level == 0 ? 0x01 : (p->level >= 2 && p->level <= 5) ? 0x5E :
           (p->level == 6 || p->level < 0) ? 0x9C : 0xDA;
    p->header_written = 1;
    return put(p, h, 2);
}

/* Emit finished chunks in order. Called with the mutex held; releases it
 * around the emit callback. If wait_all, returns only when every submitted
 * chunk has been emitted. */
static int drain(PDeflate *p, int wait_all) {
    for (;;) {
        Job *j = NULL;
        int i;
        for (i = 0; i < p->njobs; i++)
            if ((p->jobs[i].state == J_DONE || p->jobs[i].state == J_ERR) && p->jobs[i].seq == p->emit_seq)
                j = &p->jobs[i];
        if (j) {
            if (j->state == J_ERR) { j->state = J_FREE; p->emit_seq++; return fail(p, j->err); }
            pthread_mutex_unlock(&p->mu);
            int r = put(p, j->out, j->outlen);
            pthread_mutex_lock(&p->mu);
            p->adler = adler32_combine(p->adler, j->adler, (z_off_t)j->inlen);
            j->state = J_FREE;
            p->emit_seq++;
            if (r) return -1;
            continue;
        }
        if (!wait_all || p->emit_seq == p->next_seq) return 0;
        pthread_cond_wait(&p->done, &p->mu);
    }
}

/* A free chunk for the writer to fill, emitting finished ones meanwhile. */
static Job *acquire(PDeflate *p) {
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int i;
        if (drain(p, 0) != 0) { pthread_mutex_unlock(&p->mu); return NULL; }
        for (i = 0; i < p->njobs; i++)
            if (p->jobs[i].state == J_FREE) {
                pthread_mutex_unlock(&p->mu);
                p->jobs[i].inlen = 0;
                p->jobs[i].last = 0;
                return &p->jobs[i];
            }
        pthread_cond_wait(&p->done, &p->mu);
    }
}

static void submit(PDeflate *p, Job *j) {
    pthread_mutex_lock(&p->mu);
    j->seq = p->next_seq++;
    j->state = J_READY;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->mu);
}

PDeflate *pdeflate_new(int level, int nthreads, size_t chunk, pdeflate_emit_fn emit, void *ud) {
    PDeflate *p;
    int i;
    if (level < -1 || level > 9 || nthreads < 1 || !emit) return NULL;
    if (chunk == 0) chunk = PDEFLATE_CHUNK;
    p = (PDeflate *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->level = level;
    p->nthreads = nthreads;
    p->njobs = 2 * nthreads + 1;
    p->chunk = chunk;
    p->emit = emit;
    p->ud = ud;
    p->adler = adler32(0L, Z_NULL, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->jobs = (Job *)calloc((size_t)p->njobs, sizeof(Job));
    p->threads = (pthread_t *)calloc((size_t)nthreads, sizeof(pthread_t));
    if (!p->jobs || !p->threads) { pdeflate_free(p); return NULL; }
    for (i = 0; i < p->njobs; i++) {
        Job *j = &p->jobs[i];
        j->outcap = libdeflate_deflate_compress_bound(NULL, chunk) + PDEFLATE_UNFINAL_EXTRA;
        j->in = (unsigned char *)malloc(chunk);
        j->out = (unsigned char *)malloc(j->outcap);
        if (!j->in || !j->out) { pdeflate_free(p); return NULL; }
    }
    for (i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) { pdeflate_free(p); return NULL; }
        p->started++;
    }
    return p;
}

int pdeflate_write(PDeflate *p, const void *buf, size_t len) {
    const unsigned char *b = (const unsigned char *)buf;
    if (p->failed) return -1;
    if (len && header(p) != 0) return -1;
    while (len > 0) {
        size_t n;
        if (!p->cur && !(p->cur = acquire(p))) return -1;
        n = p->chunk - p->cur->inlen;
        if (n > len) n = len;
        memcpy(p->cur->in + p->cur->inlen, b, n);
        p->cur->inlen += n;
        p->total_in += n;
        b += n;
        len -= n;
        if (p->cur->inlen == p->chunk) {
            submit(p, p->cur);
            p->cur = NULL;
        }
    }
    return 0;
}

int pdeflate_finish(PDeflate *p) {
    static const unsigned char final_block[2] = {0x03, 0x00};  /* empty fixed-Huffman block, BFINAL set */
    unsigned char trailer[4];
    int r, ended = 0;
    if (p->failed) return -1;
    if (header(p) != 0) return -1;
    if (p->cur) {
        if (p->cur->inlen) {
            p->cur->last = 1;   /* its own final block ends the stream */
            submit(p, p->cur);
            ended = 1;
        } else p->cur->state = J_FREE;
        p->cur = NULL;
    }
    pthread_mutex_lock(&p->mu);
    r = drain(p, 1);
    pthread_mutex_unlock(&p->mu);
    if (r) return -1;
    trailer[0] = (unsigned char)(p->adler >> 24);
    trailer[1] = (unsigned char)(p->adler >> 16);
    trailer[2] = (unsigned char)(p->adler >> 8);
    trailer[3] = (unsigned char)p->adler;
    /* no input since the last full chunk (or none at all): every chunk emitted
     * continues, so an empty final block ends the stream */
    if ((!ended && put(p, final_block, 2)) || put(p, trailer, 4)) return -1;
    /* ready for the next stream */
    p->header_written = 0;
    p->adler = adler32(0L, Z_NULL, 0);
    p->total_in = p->total_out = 0;
    return 0;
}

unsigned long long pdeflate_total_in(const PDeflate *p) { return p->total_in; }
unsigned long long pdeflate_total_out(const PDeflate *p) { return p->total_out; }
const char *pdeflate_errmsg(const PDeflate *p) { return p->err[0] ? p->err : "no error"; }

void pdeflate_free(PDeflate *p) {
    int i;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < p->started; i++) pthread_join(p->threads[i], NULL);
    if (p->jobs)
        for (i = 0; i < p->njobs; i++) {
            free(p->jobs[i].in);
            free(p->jobs[i].out);
        }
    free(p->jobs);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}
