/* test_copybin.c -- the COPY text-to-binary converter without a server:
 * known encodings byte for byte, the same output whatever pieces the text
 * comes in (random rows of every kind, fed whole, byte by byte and in random
 * pieces), and random garbage, which must end in a result code, never a
 * crash or a read outside the input (run it under valgrind or ASan to see). The
 * server-judged cases are tests/spec/restore_binary_spec.lua. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "copybin.h"

static int passed, failed;

typedef struct Buf { char *p; size_t n, cap; } Buf;

static int buf_out(void *ud, const char *b, size_t n) {
    Buf *o = (Buf *)ud;
    if (o->n + n > o->cap) {
        size_t c = o->cap ? o->cap : 4096;
        while (c < o->n + n) c *= 2;
        if (!(o->p = (char *)realloc(o->p, c))) return -1;
        o->cap = c;
    }
    memcpy(o->p + o->n, b, n);
    o->n += n;
    return 0;
}

/* Convert text in pieces of `piece` bytes (0: whole; -1: random sizes from seed). */
static int convert(const char *kinds, const char *text, size_t len, long piece, unsigned seed, Buf *out, char *err, size_t errlen) {
    CopyBin *b = copybin_new(kinds, buf_out, out);
    size_t off = 0;
    int r = 0;
    out->n = 0;
    if (!b) { snprintf(err, errlen, "copybin_new failed"); return -9; }
    while (off < len && !r) {
        size_t k = piece == 0 ? len : piece > 0 ? (size_t)piece : 1 + (seed = seed * 1103515245u + 12345u) % 97;
        if (k > len - off) k = len - off;
        r = copybin_feed(b, text + off, k);
        off += k;
    }
    if (!r) r = copybin_finish(b);
    snprintf(err, errlen, "%s", r ? copybin_error(b) : "");
    copybin_free(b);
    return r;
}

static void check(int ok, const char *what) {
    if (ok) passed++;
    else { failed++; printf("FAIL %s\n", what); }
}

/* One row of one column: its binary value (after the row's 2-byte count) must be want[0..wn). */
static void known(const char *kind, const char *text, const unsigned char *want, size_t wn) {
    Buf o = { 0 };
    char err[400];
    char name[640];
    int r = convert(kind, text, strlen(text), 0, 0, &o, err, sizeof err);
    snprintf(name, sizeof name, "%s '%s' -> %zu bytes (%s)", kind, text, wn, err);
    /* 19 header bytes, 2 for the column count, the value, 2 for the trailer */
    check(r == 0 && o.n == 19 + 2 + wn + 2 && !memcmp(o.p + 21, want, wn), name);
    free(o.p);
}

static unsigned rnd_state = 1;
static unsigned rnd(void) { rnd_state ^= rnd_state << 13; rnd_state ^= rnd_state >> 17; rnd_state ^= rnd_state << 5; return rnd_state; }

/* A random value of kind k in the server's text form (COPY-escaped), appended at p. */
static int value_text(char k, char *p) {
    static const char *texts[] = { "plain", "tab\\there", "back\\\\slash", "nl\\nx", "\\\\N", "", "\\303\\251", "\\x41\\x4" };
    static const char *floats[] = { "0", "-0", "1.5", "3.4028235e+38", "1e-45", "NaN", "Infinity", "-Infinity", "0.1", "123456.75" };
    static const char *nums[] = { "0", "1.50", "-123456789012.000100", "0.0001", "99990000.00010000", "NaN", "10000", "-0.5" };
    switch (k) {
    case 'b': return sprintf(p, "%c", rnd() % 2 ? 't' : 'f');
    case '2': return sprintf(p, "%d", (int)(rnd() % 65536) - 32768);
    case '4': return sprintf(p, "%d", (int)rnd());
    case '8': return sprintf(p, "%lld", (long long)(((unsigned long long)rnd() << 32) | rnd()));
    case 'f': case 'F': return sprintf(p, "%s", floats[rnd() % 10]);
    case 'n': return sprintf(p, "%s", nums[rnd() % 8]);
    case 't': case 'j': return sprintf(p, "%s", texts[rnd() % 8]);
    case 'u': return sprintf(p, "%08x-%04x-%04x-%04x-%04x%08x", rnd(), rnd() % 65536, rnd() % 65536, rnd() % 65536, rnd() % 65536, rnd());
    case 'y': return rnd() % 2 ? sprintf(p, "\\\\x%02x%02x", rnd() % 256, rnd() % 256) : sprintf(p, "ab\\\\\\\\c");
    case 'd': return sprintf(p, "%04u-%02u-%02u%s", 1 + rnd() % 9999, 1 + rnd() % 12, 1 + rnd() % 28, rnd() % 5 ? "" : " BC");
    case 's': return sprintf(p, "%04u-%02u-%02u %02u:%02u:%02u.%u", 1 + rnd() % 9999, 1 + rnd() % 12, 1 + rnd() % 28, rnd() % 24, rnd() % 60, rnd() % 60, rnd() % 1000000);
    case 'z': return sprintf(p, "%04u-%02u-%02u %02u:%02u:%02u+%02u:%02u", 1 + rnd() % 9999, 1 + rnd() % 12, 1 + rnd() % 28, rnd() % 24, rnd() % 60, rnd() % 60, rnd() % 15, rnd() % 60);
    }
    return 0;
}

int main(void) {
    static const unsigned char i4_1[] = { 0, 0, 0, 4, 0, 0, 0, 1 };
    static const unsigned char i8_m1[] = { 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    static const unsigned char i2_min[] = { 0, 0, 0, 2, 0x80, 0x00 };
    static const unsigned char b_t[] = { 0, 0, 0, 1, 1 };
    static const unsigned char null[] = { 0xff, 0xff, 0xff, 0xff };
    static const unsigned char d_2000[] = { 0, 0, 0, 4, 0, 0, 0, 0 };
    static const unsigned char d_1999[] = { 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff };
    static const unsigned char d_inf[] = { 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff };
    static const unsigned char ts_0[] = { 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0 };
    /* 2000-01-01 00:00:00+01 is 1999-12-31 23:00 UTC: -3,600,000,000 us */
    static const unsigned char tz_p1[] = { 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0x29, 0x6c, 0x5c, 0x00 };
    static const unsigned char ts_half[] = { 0, 0, 0, 8, 0, 0, 0, 0, 0, 0x07, 0xa1, 0x20 };   /* 0.5 s */
    /* 1.50: ndigits 2, weight 0, sign +, dscale 2, digits 1 and 5000 */
    static const unsigned char n_150[] = { 0, 0, 0, 12, 0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88 };
    /* -0.0001000: ndigits 1, weight -1, sign -, dscale 7, digit 1 */
    static const unsigned char n_small[] = { 0, 0, 0, 10, 0, 1, 0xff, 0xff, 0x40, 0, 0, 7, 0, 1 };
    static const unsigned char n_zero[] = { 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2 };   /* 0.00 */
    static const unsigned char n_nan[] = { 0, 0, 0, 8, 0, 0, 0, 0, 0xc0, 0, 0, 0 };
    static const unsigned char f8_1[] = { 0, 0, 0, 8, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0 };
    static const unsigned char f4_m2[] = { 0, 0, 0, 4, 0xc0, 0, 0, 0 };
    static const unsigned char u_1[] = { 0, 0, 0, 16, 0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11 };
    static const unsigned char y_hex[] = { 0, 0, 0, 2, 0x0a, 0xff };
    static const unsigned char y_esc[] = { 0, 0, 0, 3, 'a', '\\', 0xff };
    static const unsigned char t_esc[] = { 0, 0, 0, 6, 'a', '\t', 'b', '\n', '\\', 'A' };
    static const unsigned char j_x[] = { 0, 0, 0, 3, 1, '{', '}' };
    char kinds[] = COPYBIN_KINDS;
    size_t nk = strlen(kinds);
    char *text;
    Buf whole = { 0 }, other = { 0 };
    char err[400];
    int iter;

    known("4", "1\n", i4_1, sizeof i4_1);
    known("8", "-1\n", i8_m1, sizeof i8_m1);
    known("2", "-32768\n", i2_min, sizeof i2_min);
    known("b", "t\n", b_t, sizeof b_t);
    known("4", "\\N\n", null, sizeof null);
    known("d", "2000-01-01\n", d_2000, sizeof d_2000);
    known("d", "1999-12-31\n", d_1999, sizeof d_1999);
    known("d", "infinity\n", d_inf, sizeof d_inf);
    known("s", "2000-01-01 00:00:00\n", ts_0, sizeof ts_0);
    known("z", "2000-01-01 00:00:00+01\n", tz_p1, sizeof tz_p1);
    known("s", "2000-01-01 00:00:00.5\n", ts_half, sizeof ts_half);
    known("n", "1.50\n", n_150, sizeof n_150);
    known("n", "-0.0001000\n", n_small, sizeof n_small);
    known("n", "0.00\n", n_zero, sizeof n_zero);
    known("n", "NaN\n", n_nan, sizeof n_nan);
    known("F", "1\n", f8_1, sizeof f8_1);
    known("f", "-2\n", f4_m2, sizeof f4_m2);
    known("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n", u_1, sizeof u_1);
    known("y", "\\\\x0aff\n", y_hex, sizeof y_hex);
    known("y", "a\\\\\\\\\\\\377\n", y_esc, sizeof y_esc);
    known("t", "a\\tb\\n\\\\\\x41\n", t_esc, sizeof t_esc);
    known("j", "{}\n", j_x, sizeof j_x);

    /* random rows of every kind: the same output whole, byte by byte and in random pieces */
    text = (char *)malloc(1 << 20);
    for (iter = 0; iter < 200; iter++) {
        size_t len = 0;
        int rows = 1 + (int)(rnd() % 40), i;
        size_t c;
        for (i = 0; i < rows; i++) {
            for (c = 0; c < nk; c++) {
                if (c) text[len++] = '\t';
                if (rnd() % 10 == 0) len += (size_t)sprintf(text + len, "\\N");
                else len += (size_t)value_text(kinds[c], text + len);
            }
            text[len++] = '\n';
        }
        if (iter % 3 == 0) len += (size_t)sprintf(text + len, "\\.\n\n");
        {
            char name[480];
            int r0 = convert(kinds, text, len, 0, 0, &whole, err, sizeof err);
            snprintf(name, sizeof name, "random rows %d convert (%s)", iter, err);
            check(r0 == 0, name);
            if (r0 == 0) {
                int r1 = convert(kinds, text, len, 1, 0, &other, err, sizeof err);
                check(r1 == 0 && other.n == whole.n && !memcmp(other.p, whole.p, whole.n), "random rows byte by byte");
                r1 = convert(kinds, text, len, -1, (unsigned)iter, &other, err, sizeof err);
                check(r1 == 0 && other.n == whole.n && !memcmp(other.p, whole.p, whole.n), "random rows in random pieces");
            }
        }
    }
    /* garbage: any bytes, any kinds; a result code every time */
    for (iter = 0; iter < 20000; iter++) {
        size_t len = rnd() % 300, i;
        char k[6];
        int nkk = 1 + (int)(rnd() % 5), j, r;
        for (j = 0; j < nkk; j++) k[j] = kinds[rnd() % nk];
        k[nkk] = 0;
        for (i = 0; i < len; i++) {
            unsigned x = rnd() % 16;
            text[i] = x == 0 ? '\t' : x == 1 ? '\n' : x == 2 ? '\\' : x < 8 ? (char)('0' + rnd() % 10) : (char)(rnd() % 256);
        }
        r = convert(k, text, len, iter % 2 ? 0 : -1, (unsigned)iter, &other, err, sizeof err);
        if (r != 0 && r != COPYBIN_UNCONVERTIBLE) { check(0, "garbage ends in success or unconvertible"); break; }
    }
    check(1, "garbage never crashed");
    check(copybin_new("", buf_out, &other) == NULL && copybin_new("4x", buf_out, &other) == NULL && !copybin_valid("q"), "bad kinds refused");
    free(text);
    free(whole.p);
    free(other.p);
    printf("test_copybin: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
