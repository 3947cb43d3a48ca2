/*
 * pdeflate.h -- one zlib stream (RFC 1950), compressed on several threads.
 *
 * Input is cut into chunks; each chunk is deflated on a worker thread with
 * the previous 32 KiB of input as its dictionary, ended with a sync flush so
 * it ends on a byte boundary, and the pieces are emitted in order behind one
 * zlib header; finish() appends an empty final block and the Adler-32 of
 * the whole input (combined from the chunks'). Any inflate() reads the
 * result as a single ordinary stream, so pg_restore does too.
 *
 * Memory is bounded: at most 2 * nthreads chunks are in flight; write()
 * blocks when they are all busy. Output goes to the emit callback, always
 * from the thread that called write() or finish(), in order.
 */
#ifndef ORCH_PDEFLATE_H
#define ORCH_PDEFLATE_H
#include <stddef.h>

typedef struct PDeflate PDeflate;

/* Called with compressed bytes in order; return 0, or -1 to fail the stream
 * (write()/finish() then return -1 with the callback's failure). */
typedef int (*pdeflate_emit_fn)(void *ud, const unsigned char *buf, size_t len);

/* Create a compressor: level -1 (zlib default) or 0..9, nthreads >= 1,
 * chunk size in bytes (0 = 128 KiB). Returns NULL when out of memory or
 * threads cannot start. The caller owns the result (pdeflate_free). */
PDeflate *pdeflate_new(int level, int nthreads, size_t chunk, pdeflate_emit_fn emit, void *ud);

/* Feed input. Returns 0, or -1 on failure (see pdeflate_errmsg). */
int pdeflate_write(PDeflate *p, const void *buf, size_t len);

/* End the current stream: flush every chunk, write the final empty block and
 * the Adler-32 trailer. The compressor is then ready for a new stream (a new
 * zlib header is written on the next write() or finish()). Returns 0 / -1. */
int pdeflate_finish(PDeflate *p);

/* Bytes in and out of the current stream so far. */
unsigned long long pdeflate_total_in(const PDeflate *p);
unsigned long long pdeflate_total_out(const PDeflate *p);

/* What went wrong, after a -1. */
const char *pdeflate_errmsg(const PDeflate *p);

/* Stop the workers and free everything; safe on NULL. */
void pdeflate_free(PDeflate *p);

#endif
