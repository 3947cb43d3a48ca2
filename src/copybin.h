/*
 * copybin.h -- a table's rows from COPY's text format to its binary format,
 * on the client, while a restore sends them.
 *
 * With text rows the server splits lines, undoes the escapes and runs every
 * column's input function (timestamptz_in, uuid_in, int8in, ...): for the
 * usual tables that is about 40% of what it spends on a COPY. Sent as binary
 * rows, each value arrives in the type's external binary form and the server
 * only checks and stores it. The conversion is done for tables whose every
 * column has one of the kinds below (the caller finds them from the target's
 * catalog: the type, or a domain's base type, by its receive function).
 *
 * Every value is read strictly in the form the server's output function
 * writes it (DateStyle ISO, as pg_dump and orch dump): anything else -- a
 * date in another style, a number with spaces, a row with too few columns,
 * an escape COPY TO never writes -- stops the conversion with
 * COPYBIN_UNCONVERTIBLE, and the caller loads the table again as text, which
 * the server judges as it always did. So a value is either converted to
 * exactly what the server's text input would have made of it, or not at all.
 *
 * Output goes to the out callback in pieces of about 64 KiB (more for a
 * row larger than that), from the thread that calls feed()/finish().
 */
#ifndef ORCH_COPYBIN_H
#define ORCH_COPYBIN_H
#include <stddef.h>

/* The kinds, one character per column:
 *   b bool          2 int2          4 int4          8 int8
 *   f float4        F float8        n numeric
 *   t text, varchar, bpchar, name, json, an enum: the bytes themselves
 *   j jsonb         u uuid          y bytea
 *   d date          s timestamp     z timestamptz */
#define COPYBIN_KINDS "b248fFntjuydsz"

typedef int (*copybin_out_fn)(void *ud, const char *buf, size_t len);

typedef struct CopyBin CopyBin;

#define COPYBIN_OUT_FAILED (-1)      /* the out callback returned non-zero */
#define COPYBIN_UNCONVERTIBLE (-2)   /* a row or value orch does not convert: load as text */
#define COPYBIN_NOMEM (-3)

/* Is kinds such a string (1 to 1600 characters of COPYBIN_KINDS)? */
int copybin_valid(const char *kinds);

/* A converter for rows of strlen(kinds) columns (at least one, each a
 * character of COPYBIN_KINDS). NULL when kinds is not such a string or
 * memory runs out. The binary header is written with the first output. */
CopyBin *copybin_new(const char *kinds, copybin_out_fn out, void *ud);

/* Convert text rows: buf may end in the middle of a row (the rest is kept
 * for the next call). Nothing after pg_dump's end-of-data line ("\.") is
 * data. Returns 0 or one of the negative codes above (then the converter
 * is spent: only copybin_error and copybin_free remain). */
int copybin_feed(CopyBin *b, const char *buf, size_t len);

/* The end of the rows: a row left without its newline is one more row;
 * the trailer is written and everything flushed. 0 or a negative code. */
int copybin_finish(CopyBin *b);

/* What stopped the conversion (row and column named), after a negative code. */
const char *copybin_error(const CopyBin *b);

/* Rows converted so far. */
long long copybin_rows(const CopyBin *b);

void copybin_free(CopyBin *b);

#endif
