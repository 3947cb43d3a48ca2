/*
 * pdeflate.c -- parallel deflate into one zlib stream (see pdeflate.h).
 *
 * Chunk life cycle: FREE -> (filled by the writer) -> READY (queued with a
 * sequence number) -> BUSY (a worker deflates it) -> DONE -> emitted by the
 * writer in sequence order -> FREE. The mutex guards states and sequence
 * numbers; a chunk's buffers belong to whoever moved it to its state.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "pdeflate.h"

#define DICT_SIZE 32768
#define MIN_CHUNK (64 * 1024)

enum { J_FREE, J_READY, J_BUSY, J_DONE, J_ERR };

typedef struct Job {
    unsigned char *in, *out, *dict;
    size_t inlen, outlen, outcap, dictlen;
    unsigned long adler;
    unsigned long long seq;
    int state;
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
    unsigned char last[DICT_SIZE];
    size_t lastlen;
    int header_written, failed;
    unsigned long adler;
    unsigned long long total_in, total_out;
    char err[256];
};

/* ---------------------------------------------------------------- workers */

static void *worker(void *arg) {
    PDeflate *p = (PDeflate *)arg;
    z_stream zs;
    int ok_init;
    memset(&zs, 0, sizeof zs);
    ok_init = deflateInit2(&zs, p->level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK;
    for (;;) {
        Job *j = NULL;
        int i, rc = Z_OK;
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

        if (!ok_init) rc = Z_MEM_ERROR;
        if (rc == Z_OK) rc = deflateReset(&zs);
        if (rc == Z_OK && j->dictlen) rc = deflateSetDictionary(&zs, j->dict, (uInt)j->dictlen);
        if (rc == Z_OK) {
            zs.next_in = j->in;
            zs.avail_in = (uInt)j->inlen;
            zs.next_out = j->out;
            zs.avail_out = (uInt)j->outcap;
            rc = deflate(&zs, Z_SYNC_FLUSH);
            if (rc == Z_OK && (zs.avail_in != 0 || zs.avail_out == 0)) rc = Z_BUF_ERROR;
            j->outlen = j->outcap - zs.avail_out;
            j->adler = adler32(adler32(0L, Z_NULL, 0), j->in, (uInt)j->inlen);
        }
        pthread_mutex_lock(&p->mu);
        j->state = rc == Z_OK ? J_DONE : J_ERR;
        pthread_cond_broadcast(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
    if (ok_init) deflateEnd(&zs);
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
            if (j->state == J_ERR) { j->state = J_FREE; p->emit_seq++; return fail(p, "deflate failed"); }
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
                return &p->jobs[i];
            }
        pthread_cond_wait(&p->done, &p->mu);
    }
}

static void submit(PDeflate *p, Job *j) {
    /* the dictionary is the 32 KiB of input before this chunk */
    memcpy(j->dict, p->last, p->lastlen);
    j->dictlen = p->lastlen;
    if (j->inlen >= DICT_SIZE) {
        memcpy(p->last, j->in + j->inlen - DICT_SIZE, DICT_SIZE);
        p->lastlen = DICT_SIZE;
    } else {
        size_t keep = p->lastlen + j->inlen > DICT_SIZE ? DICT_SIZE - j->inlen : p->lastlen;
        memmove(p->last, p->last + p->lastlen - keep, keep);
        memcpy(p->last + keep, j->in, j->inlen);
        p->lastlen = keep + j->inlen;
    }
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
    if (chunk == 0) chunk = 128 * 1024;
    if (chunk < MIN_CHUNK) chunk = MIN_CHUNK;
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
        j->outcap = deflateBound(NULL, (uLong)chunk) + 64;   /* + room for the sync marker */
        j->in = (unsigned char *)malloc(chunk);
        j->out = (unsigned char *)malloc(j->outcap);
        j->dict = (unsigned char *)malloc(DICT_SIZE);
        if (!j->in || !j->out || !j->dict) { pdeflate_free(p); return NULL; }
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
    int r;
    if (p->failed) return -1;
    if (header(p) != 0) return -1;
    if (p->cur) {
        if (p->cur->inlen) submit(p, p->cur);
        else p->cur->state = J_FREE;
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
    if (put(p, final_block, 2) || put(p, trailer, 4)) return -1;
    /* ready for the next stream */
    p->header_written = 0;
    p->lastlen = 0;
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
            free(p->jobs[i].dict);
        }
    free(p->jobs);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}
