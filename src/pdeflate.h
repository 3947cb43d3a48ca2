/*
 * pdeflate.h -- one zlib stream (RFC 1950), compressed on several threads.
 *
 * Input is cut into chunks; each chunk is compressed on a worker thread by
 * libdeflate (whole-buffer DEFLATE, about twice zlib's speed at the same
 * level and no larger), whose output always ends with a final block. For
 * every chunk but the stream's last, pdeflate_unfinal() walks that output to
 * its last block, clears the block's BFINAL bit and appends an empty stored
 * block, so the chunk ends on a byte boundary like a zlib sync flush. The
 * pieces are emitted in order behind one zlib header, with the Adler-32 of
 * the whole input (combined from the chunks'). Any inflate() reads the
 * result as a single ordinary stream, so pg_restore does too.
 *
 * Memory is bounded: at most 2 * nthreads + 1 chunks are in flight; write()
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

/* Default chunk size (bytes of input compressed as one piece). */
#define PDEFLATE_CHUNK (256 * 1024)

/* Create a compressor: level -1 (the default, 6) or 0..9 (zlib's scale:
 * libdeflate's level of the same number), nthreads >= 1, chunk size in
 * bytes (0 = PDEFLATE_CHUNK). Returns NULL when out of memory or threads
 * cannot start. The caller owns the result (pdeflate_free). */
PDeflate *pdeflate_new(int level, int nthreads, size_t chunk, pdeflate_emit_fn emit, void *ud);

/* Feed input. Returns 0, or -1 on failure (see pdeflate_errmsg). */
int pdeflate_write(PDeflate *p, const void *buf, size_t len);

/* End the current stream: compress the last chunk (it keeps its final
 * block; with no pending input an empty final block is written) and write
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

/* Turn a complete raw DEFLATE stream (RFC 1951: buf[0..len), ending with
 * its BFINAL block and nothing after that block but zero padding to the
 * byte) into one that continues: the final block's BFINAL bit is cleared and
 * an empty stored block is written right after its end, so the result ends
 * byte-aligned with 00 00 FF FF and more blocks may follow. Needs cap >=
 * len + PDEFLATE_UNFINAL_EXTRA. Returns 0 with *newlen set, or -1 with a
 * message in err (what is wrong, at which bit) when buf is not such a stream
 * (buf is then unchanged). Every block is walked (stored blocks skipped by
 * their length, Huffman blocks decoded symbol by symbol without output). */
#define PDEFLATE_UNFINAL_EXTRA 6
int pdeflate_unfinal(unsigned char *buf, size_t len, size_t cap, size_t *newlen, char *err, size_t errlen);

#endif
