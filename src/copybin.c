/*
 * copybin.c -- COPY text rows to COPY binary rows (see copybin.h).
 *
 * The text format (what COPY TO writes): one row per line ending in a
 * newline, columns separated by a tab, \N alone for NULL, and in values a
 * backslash escapes: \b \f \n \r \t \v, \ and 1-3 octal digits, \x and 1-2
 * hex digits, and any other character stands for itself. The binary format:
 * the signature "PGCOPY\n\377\r\n\0", a flags word and a header extension
 * length (both 0), then per row the number of columns (int16) and per column
 * its length (int32, -1 for NULL) and the bytes of the type's send format,
 * everything big-endian; the int16 -1 ends the data.
 */
#include "copybin.h"
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_CHUNK (64 * 1024)

struct CopyBin {
    char *kinds;
    int ncols;
    copybin_out_fn out;
    void *ud;
    char *obuf;                 /* binary rows not yet handed to out */
    size_t olen, ocap;
    char *carry;                /* the start of a row whose newline has not come yet */
    size_t clen, ccap;
    char *val;                  /* a value with its escapes undone */
    size_t vcap;
    int header, ended, spent;
    long long rows;
    char err[320];
};

/* ---------------------------------------------------------------- output */

static void put16(char *o, int v) { o[0] = (char)((v >> 8) & 0xff); o[1] = (char)(v & 0xff); }
static void put32(char *o, uint32_t v) {
    o[0] = (char)(v >> 24); o[1] = (char)(v >> 16); o[2] = (char)(v >> 8); o[3] = (char)v;
}
static void put64(char *o, uint64_t v) { put32(o, (uint32_t)(v >> 32)); put32(o + 4, (uint32_t)v); }

/* Grow buffer *p of *cap bytes (doubling, from first) to hold need bytes: 0, or -1 out of memory. */
static int reserve(char **p, size_t *cap, size_t need, size_t first) {
    size_t nc = *cap ? *cap : first;
    char *np;
    if (need <= *cap) return 0;
    while (nc < need) nc *= 2;
    if (!(np = (char *)realloc(*p, nc))) return -1;
    *p = np;
    *cap = nc;
    return 0;
}

static int flush(CopyBin *b) {
    if (b->olen && b->out(b->ud, b->obuf, b->olen) != 0) return COPYBIN_OUT_FAILED;
    b->olen = 0;
    return 0;
}

/* Room for need more bytes in obuf (flushing first when it is full). */
static int room(CopyBin *b, size_t need) {
    if (b->olen + need <= b->ocap) return 0;
    if (flush(b)) return COPYBIN_OUT_FAILED;
    if (need > b->ocap) {
        char *nb = (char *)realloc(b->obuf, need);
        if (!nb) return COPYBIN_NOMEM;
        b->obuf = nb;
        b->ocap = need;
    }
    return 0;
}

static int header(CopyBin *b) {
    static const char sig[11] = { 'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0' };
    int r;
    if (b->header) return 0;
    if ((r = room(b, 19))) return r;
    memcpy(b->obuf + b->olen, sig, 11);
    put32(b->obuf + b->olen + 11, 0);     /* flags: no OIDs */
    put32(b->obuf + b->olen + 15, 0);     /* no header extension */
    b->olen += 19;
    b->header = 1;
    return 0;
}

static int unconvertible(CopyBin *b, int col, const char *what, const char *v, size_t n) {
    char shown[48];
    size_t k = n < 40 ? n : 40, i;
    for (i = 0; i < k; i++) shown[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
    shown[k] = 0;
    if (col > 0)
        snprintf(b->err, sizeof b->err, "row %lld, column %d: %s ('%s%s')", b->rows + 1, col, what, shown, n > 40 ? "..." : "");
    else
        snprintf(b->err, sizeof b->err, "row %lld: %s", b->rows + 1, what);
    return COPYBIN_UNCONVERTIBLE;
}

/* ---------------------------------------------------------------- values */

static int digit(char c) { return c >= '0' && c <= '9'; }

/* hex digit values, -1 for every other byte */
static signed char hex_table[256];
static pthread_once_t hex_once = PTHREAD_ONCE_INIT;
static void make_hex_table(void) {
    int i;
    for (i = 0; i < 256; i++) hex_table[i] = -1;
    for (i = 0; i < 10; i++) hex_table['0' + i] = (signed char)i;
    for (i = 0; i < 6; i++) { hex_table['a' + i] = (signed char)(10 + i); hex_table['A' + i] = (signed char)(10 + i); }
}
static int hexval(char c) { return hex_table[(unsigned char)c]; }

/* n bytes of hex digit pairs at v to n/2 bytes at o; -1 at a byte that is not a hex digit. */
static int unhex(const char *v, size_t n, char *o) {
    size_t i;
    for (i = 0; i + 1 < n; i += 2) {
        int hi = hex_table[(unsigned char)v[i]], lo = hex_table[(unsigned char)v[i + 1]];
        if ((hi | lo) < 0) return -1;
        *o++ = (char)(hi << 4 | lo);
    }
    return 0;
}

/* Undo COPY's escapes of field f[0..n) into dst (n bytes are enough);
 * -1 for a backslash-period (only the end-of-data line has one). */
static long unescape(const char *f, size_t n, char *dst) {
    size_t i = 0, k = 0;
    while (i < n) {
        char c = f[i++];
        int v, h;
        if (c != '\\') { dst[k++] = c; continue; }
        c = f[i++];            /* the row scan made sure a character follows */
        switch (c) {
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7':
            v = c - '0';
            if (i < n && f[i] >= '0' && f[i] <= '7') {
                v = v * 8 + (f[i++] - '0');
                if (i < n && f[i] >= '0' && f[i] <= '7') v = v * 8 + (f[i++] - '0');
            }
            dst[k++] = (char)(v & 0xff);
            break;
        case 'x':
            if (i < n && (h = hexval(f[i])) >= 0) {
                v = h;
                i++;
                if (i < n && (h = hexval(f[i])) >= 0) { v = v * 16 + h; i++; }
                dst[k++] = (char)v;
            } else dst[k++] = 'x';
            break;
        case 'b': dst[k++] = '\b'; break;
        case 'f': dst[k++] = '\f'; break;
        case 'n': dst[k++] = '\n'; break;
        case 'r': dst[k++] = '\r'; break;
        case 't': dst[k++] = '\t'; break;
        case 'v': dst[k++] = '\v'; break;
        case '.': return -1;
        default: dst[k++] = c; break;
        }
    }
    return (long)k;
}

/* A decimal integer as int*out writes it: optional minus, digits only. */
static int parse_int(const char *v, size_t n, long long lo, long long hi, long long *out) {
    size_t i = 0;
    unsigned long long acc = 0, lim;
    int neg = 0;
    if (n && v[0] == '-') { neg = 1; i = 1; }
    if (i >= n || n - i > 20) return -1;
    lim = neg ? (unsigned long long)(-(lo + 1)) + 1 : (unsigned long long)hi;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9) return -1;
        if (acc > (lim - d) / 10) return -1;
        acc = acc * 10 + d;
    }
    *out = neg ? (acc ? -(long long)(acc - 1) - 1 : 0) : (long long)acc;
    return 0;
}

/* NaN, Infinity or -Infinity as float and numeric output write them: 'N', '+', '-', else 0. */
static char special(const char *v, size_t n) {
    if (n == 3 && !memcmp(v, "NaN", 3)) return 'N';
    if (n == 8 && !memcmp(v, "Infinity", 8)) return '+';
    if (n == 9 && !memcmp(v, "-Infinity", 9)) return '-';
    return 0;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* A float as float4out/float8out write it (shortest exact digits, or
 * NaN, Infinity, -Infinity), read by strtod/strtof as float4in/float8in
 * read it; out of range (the server refuses it) is not converted. */
static int parse_float(const char *v, size_t n, int single, double *d, float *f) {
    char buf[72];
    char *end;
    size_t i;
    char sp = special(v, n);
    if (sp) {
        double x = sp == 'N' ? NAN : sp == '-' ? -INFINITY : INFINITY;
        *d = x;
        *f = (float)x;
        return 0;
    }
    if (n == 0 || n >= sizeof buf) return -1;
    for (i = 0; i < n; i++)
        if (!digit(v[i]) && v[i] != '.' && v[i] != 'e' && v[i] != 'E' && v[i] != '-' && v[i] != '+') return -1;
    memcpy(buf, v, n);
    buf[n] = 0;
    pthread_once(&c_locale_once, make_c_locale);
    if (!c_locale) return -1;
    errno = 0;
    if (single) {
        *f = strtof_l(buf, &end, c_locale);
        if (end != buf + n) return -1;
        if (errno == ERANGE && (*f == 0.0f || isinf(*f))) return -1;
    } else {
        *d = strtod_l(buf, &end, c_locale);
        if (end != buf + n) return -1;
        if (errno == ERANGE && (*d == 0.0 || isinf(*d))) return -1;
    }
    return 0;
}

/* numeric_out's text ([-]digits[.digits], NaN, Infinity, -Infinity) as
 * numeric_send's form: ndigits, weight, sign, dscale (int16 each) and the
 * base-10000 digits, without leading or trailing zero digits. o has room
 * for 8 + 2 * (n / 4 + 2) bytes. */
static int numeric_bin(const char *v, size_t n, char *o, size_t *plen) {
    size_t i = 0, is, il, fs = 0, fl = 0, g, ng, first, last, pad;
    int neg = 0, weight, k;
    char sp = special(v, n);
    if (sp) {
        put16(o, 0);
        put16(o + 2, 0);
        put16(o + 4, sp == 'N' ? 0xC000 : sp == '-' ? 0xF000 : 0xD000);
        put16(o + 6, 0);
        *plen = 8;
        return 0;
    }
    if (n && v[0] == '-') { neg = 1; i = 1; }
    is = i;
    while (i < n && digit(v[i])) i++;
    il = i - is;
    if (il == 0) return -1;
    if (i < n && v[i] == '.') {
        fs = ++i;
        while (i < n && digit(v[i])) i++;
        fl = i - fs;
        if (fl == 0) return -1;
    }
    if (i != n || fl > 0x3FFF) return -1;
    while (il > 0 && v[is] == '0') { is++; il--; }
    /* the digits in groups of four, aligned on the decimal point: the
     * integer part padded with zeros in front, the fraction behind */
    pad = (4 - il % 4) % 4;
    ng = (il + 3) / 4 + (fl + 3) / 4;
    weight = (int)((il + 3) / 4) - 1;
    for (g = 0; g < ng; g++) {
        int val = 0;
        for (k = 0; k < 4; k++) {
            size_t p = g * 4 + (size_t)k;
            char c = '0';
            if (p >= pad && p - pad < il) c = v[is + p - pad];
            else if (p >= pad + il && p - pad - il < fl) c = v[fs + p - pad - il];
            val = val * 10 + (c - '0');
        }
        put16(o + 8 + 2 * g, val);
    }
    /* strip zero digits at both ends */
    first = 0;
    while (first < ng && o[8 + 2 * first] == 0 && o[9 + 2 * first] == 0) first++;
    last = ng;
    while (last > first && o[8 + 2 * (last - 1)] == 0 && o[9 + 2 * (last - 1)] == 0) last--;
    if (last - first > 3000 || weight - (int)first < -32768) return -1;   /* numeric_recv's limit; text reads it */
    if (first) memmove(o + 8, o + 8 + 2 * first, 2 * (last - first));
    ng = last - first;
    weight -= (int)first;
    if (ng == 0) { weight = 0; neg = 0; }
    put16(o, (int)ng);
    put16(o + 2, weight & 0xffff);
    put16(o + 4, neg ? 0x4000 : 0);
    put16(o + 6, (int)fl);
    *plen = 8 + 2 * ng;
    return 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (y astronomical). */
static long long civil_days(long long y, int m, int d) {
    long long era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int leap(long long y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

static int num2(const char *p) { return digit(p[0]) && digit(p[1]) ? (p[0] - '0') * 10 + (p[1] - '0') : -1; }

/* A time zone offset as timestamptz_out writes it at v[*i..n): {+|-}HH[:MM[:SS]]
 * with HH at most 15; its seconds east of UTC in *off, *i past it. */
static int parse_offset(const char *v, size_t n, size_t *i, long long *off) {
    int part[3] = { 0, 0, 0 }, k, sign;
    if (*i + 3 > n || (v[*i] != '+' && v[*i] != '-')) return -1;
    sign = v[*i] == '-' ? -1 : 1;
    part[0] = num2(v + *i + 1);
    *i += 3;
    for (k = 1; k < 3 && *i < n && v[*i] == ':'; k++) {
        if (*i + 3 > n || (part[k] = num2(v + *i + 1)) < 0) return -1;
        *i += 3;
    }
    if (part[0] < 0 || part[0] > 15 || part[1] > 59 || part[2] > 59) return -1;
    *off = sign * (part[0] * 3600LL + part[1] * 60 + part[2]);
    return 0;
}

/* date_out / timestamp_out / timestamptz_out with DateStyle ISO:
 * YYYY-MM-DD[ HH:MM:SS[.ffffff][{+|-}HH[:MM[:SS]]]][ BC], the year in 4 to 7
 * digits, or infinity / -infinity (*inf = +1 / -1). kind d, s or z. Days
 * since 2000-01-01 and, for s and z, microseconds of UTC since its midnight. */
static int parse_datetime(const char *v, size_t n, char kind, long long *days, long long *usec, int *inf) {
    size_t i = 0, yl;
    long long year = 0, y, off = 0;
    int mon, day, bc = 0;
    static const int mdays[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    *inf = 0;
    *usec = 0;
    if (n == 8 && !memcmp(v, "infinity", 8)) { *inf = 1; return 0; }
    if (n == 9 && !memcmp(v, "-infinity", 9)) { *inf = -1; return 0; }
    if (n > 3 && !memcmp(v + n - 3, " BC", 3)) { bc = 1; n -= 3; }
    while (i < n && digit(v[i])) year = year * 10 + (v[i++] - '0');
    yl = i;
    if (yl < 4 || yl > 7 || year == 0) return -1;
    if (i + 6 > n || v[i] != '-' || v[i + 3] != '-') return -1;
    mon = num2(v + i + 1);
    day = num2(v + i + 4);
    i += 6;
    y = bc ? 1 - year : year;
    if (mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] + (mon == 2 && leap(y))) return -1;
    *days = civil_days(y, mon, day) - 10957;
    if (kind == 'd') return i == n && *days >= INT32_MIN && *days <= INT32_MAX ? 0 : -1;
    {
        int h, mi, s;
        long long frac = 0;
        if (i + 9 > n || v[i] != ' ' || v[i + 3] != ':' || v[i + 6] != ':') return -1;
        h = num2(v + i + 1);
        mi = num2(v + i + 4);
        s = num2(v + i + 7);
        if (h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 59) return -1;
        i += 9;
        if (i < n && v[i] == '.') {
            int nd = 0;
            i++;
            while (i < n && digit(v[i]) && nd < 6) { frac = frac * 10 + (v[i++] - '0'); nd++; }
            if (nd == 0 || (i < n && digit(v[i]))) return -1;
            while (nd++ < 6) frac *= 10;
        }
        if (kind == 'z' && parse_offset(v, n, &i, &off)) return -1;
        if (i != n) return -1;
        *usec = (h * 3600LL + mi * 60 + s - off) * 1000000LL + frac;
    }
    return 0;
}

/* ---------------------------------------------------------------- rows */

/* One value v[0..n) of kind k, written at o as its length and bytes;
 * returns the bytes written, or -1 when it is not in the form expected. */
static long value(char k, const char *v, size_t n, char *o) {
    long long x, days, usec;
    int inf;
    switch (k) {
    case 't':
        put32(o, (uint32_t)n);
        memcpy(o + 4, v, n);
        return 4 + (long)n;
    case 'j':
        put32(o, (uint32_t)n + 1);
        o[4] = 1;                   /* jsonb's binary form: version 1, then the text */
        memcpy(o + 5, v, n);
        return 5 + (long)n;
    case 'b':
        if (n != 1 || (v[0] != 't' && v[0] != 'f')) return -1;
        put32(o, 1);
        o[4] = v[0] == 't';
        return 5;
    case '2':
        if (parse_int(v, n, -32768, 32767, &x)) return -1;
        put32(o, 2);
        put16(o + 4, (int)(x & 0xffff));
        return 6;
    case '4':
        if (parse_int(v, n, INT32_MIN, INT32_MAX, &x)) return -1;
        put32(o, 4);
        put32(o + 4, (uint32_t)x);
        return 8;
    case '8':
        if (parse_int(v, n, INT64_MIN, INT64_MAX, &x)) return -1;
        put32(o, 8);
        put64(o + 4, (uint64_t)x);
        return 12;
    case 'f': case 'F': {
        double d;
        float f;
        if (parse_float(v, n, k == 'f', &d, &f)) return -1;
        /* the IEEE bits, big-endian; a NaN as the usual quiet one */
        if (k == 'f') {
            uint32_t b32 = 0x7fc00000u;
            if (!isnan(f)) memcpy(&b32, &f, 4);
            put32(o, 4), put32(o + 4, b32);
            return 8;
        }
        {
            uint64_t b64 = 0x7ff8000000000000ull;
            if (!isnan(d)) memcpy(&b64, &d, 8);
            put32(o, 8), put64(o + 4, b64);
            return 12;
        }
    }
    case 'n': {
        size_t len;
        if (numeric_bin(v, n, o + 4, &len)) return -1;
        put32(o, (uint32_t)len);
        return 4 + (long)len;
    }
    case 'u': {
        static const int at[16] = { 0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34 };
        int j;
        if (n != 36 || v[8] != '-' || v[13] != '-' || v[18] != '-' || v[23] != '-') return -1;
        for (j = 0; j < 16; j++) {
            int hi = hexval(v[at[j]]), lo = hexval(v[at[j] + 1]);
            if (hi < 0 || lo < 0) return -1;
            o[4 + j] = (char)(hi * 16 + lo);
        }
        put32(o, 16);
        return 20;
    }
    case 'y': {
        size_t i, m = 0;
        if (n >= 2 && v[0] == '\\' && v[1] == 'x') {
            if (n % 2 || unhex(v + 2, n - 2, o + 4)) return -1;
            m = (n - 2) / 2;
        } else {
            /* bytea's escape format: \\ is a backslash, \ooo an octal byte, every other byte itself */
            for (i = 0; i < n; i++) {
                if (v[i] != '\\') { o[4 + m++] = v[i]; continue; }
                if (i + 1 < n && v[i + 1] == '\\') { o[4 + m++] = '\\'; i++; continue; }
                if (i + 3 < n && v[i + 1] >= '0' && v[i + 1] <= '3' && v[i + 2] >= '0' && v[i + 2] <= '7' &&
                    v[i + 3] >= '0' && v[i + 3] <= '7') {
                    o[4 + m++] = (char)(((v[i + 1] - '0') << 6) | ((v[i + 2] - '0') << 3) | (v[i + 3] - '0'));
                    i += 3;
                    continue;
                }
                return -1;
            }
        }
        put32(o, (uint32_t)m);
        return 4 + (long)m;
    }
    case 'd':
        if (parse_datetime(v, n, 'd', &days, &usec, &inf)) return -1;
        put32(o, 4);
        put32(o + 4, inf > 0 ? (uint32_t)INT32_MAX : inf < 0 ? (uint32_t)INT32_MIN : (uint32_t)days);
        return 8;
    case 's': case 'z': {
        long long t;
        if (parse_datetime(v, n, k, &days, &usec, &inf)) return -1;
        if (inf) t = inf > 0 ? INT64_MAX : INT64_MIN;
        else if (__builtin_mul_overflow(days, 86400000000LL, &t) || __builtin_add_overflow(t, usec, &t)) return -1;
        else if (t == INT64_MAX || t == INT64_MIN) return -1;    /* those two stand for infinity */
        put32(o, 8);
        put64(o + 4, (uint64_t)t);
        return 12;
    }
    }
    return -1;
}

static const char *kind_name(char k) {
    switch (k) {
    case 'b': return "a boolean"; case '2': return "a smallint"; case '4': return "an integer"; case '8': return "a bigint";
    case 'f': return "a real"; case 'F': return "a double precision"; case 'n': return "a numeric";
    case 't': return "a text"; case 'j': return "a jsonb"; case 'u': return "a uuid"; case 'y': return "a bytea";
    case 'd': return "a date"; case 's': return "a timestamp"; case 'z': return "a timestamptz";
    }
    return "a value";
}

/* Convert one row (p[0..n), its newline not included). */
static int row(CopyBin *b, const char *p, size_t n) {
    const char *s = p, *end = p + n;
    char *o;
    int i, r, escapes;
    if (b->ended) return 0;
    if (n == 2 && p[0] == '\\' && p[1] == '.') { b->ended = 1; return 0; }
    if (memchr(p, '\r', n)) return unconvertible(b, 0, "a carriage return in the data (COPY TO writes \\r)", NULL, 0);
    escapes = memchr(p, '\\', n) != NULL;
    if ((r = header(b))) return r;
    if ((r = room(b, 2 + (size_t)b->ncols * 24 + n))) return r;
    o = b->obuf + b->olen;
    put16(o, b->ncols);
    o += 2;
    for (i = 0; i < b->ncols; i++) {
        const char *f = s, *v;
        size_t fl;
        long w;
        int esc = 0;
        if (!escapes) {
            const char *t = (const char *)memchr(s, '\t', (size_t)(end - s));
            s = t ? t : end;
        } else {
            /* a backslash takes the byte after it with it, a tab too */
            while (s < end && *s != '\t') {
                if (*s == '\\') {
                    if (s + 1 >= end) return unconvertible(b, i + 1, "a backslash ends the row", f, (size_t)(end - f));
                    esc = 1;
                    s += 2;
                } else s++;
            }
        }
        fl = (size_t)(s - f);
        if (i < b->ncols - 1) {
            if (s >= end) return unconvertible(b, 0, "fewer columns than the COPY names", NULL, 0);
            s++;               /* the tab */
        } else if (s < end) return unconvertible(b, 0, "more columns than the COPY names", NULL, 0);
        if (fl == 2 && f[0] == '\\' && f[1] == 'N') {
            put32(o, 0xffffffffu);
            o += 4;
            continue;
        }
        v = f;
        if (esc && b->kinds[i] == 'y' && fl >= 3 && f[0] == '\\' && f[1] == '\\' && f[2] == 'x' && !memchr(f + 3, '\\', fl - 3)) {
            /* bytea in hex as COPY writes it: its one escape (\\x) undone is the row itself from the second byte on */
            v = f + 1;
            fl--;
            esc = 0;
        }
        if (esc) {
            long k;
            if (reserve(&b->val, &b->vcap, fl, 256)) return COPYBIN_NOMEM;
            if ((k = unescape(f, fl, b->val)) < 0) return unconvertible(b, i + 1, "an escape COPY does not write", f, fl);
            v = b->val;
            fl = (size_t)k;
        }
        if ((w = value(b->kinds[i], v, fl, o)) < 0) {
            char what[64];
            snprintf(what, sizeof what, "not %s as the server writes one", kind_name(b->kinds[i]));
            return unconvertible(b, i + 1, what, v, fl);
        }
        o += w;
    }
    b->olen = (size_t)(o - b->obuf);
    b->rows++;
    if (b->olen >= OUT_CHUNK) return flush(b);
    return 0;
}

/* ---------------------------------------------------------------- the converter */

int copybin_valid(const char *kinds) {
    size_t n = kinds ? strlen(kinds) : 0, i;
    if (n == 0 || n > 1600) return 0;
    for (i = 0; i < n; i++) if (!strchr(COPYBIN_KINDS, kinds[i])) return 0;
    return 1;
}

CopyBin *copybin_new(const char *kinds, copybin_out_fn out, void *ud) {
    CopyBin *b;
    size_t n;
    if (!copybin_valid(kinds) || !out) return NULL;
    n = strlen(kinds);
    pthread_once(&hex_once, make_hex_table);
    if (!(b = (CopyBin *)calloc(1, sizeof *b))) return NULL;
    b->kinds = strdup(kinds);
    b->obuf = (char *)malloc(OUT_CHUNK);
    if (!b->kinds || !b->obuf) { copybin_free(b); return NULL; }
    b->ocap = OUT_CHUNK;
    b->ncols = (int)n;
    b->out = out;
    b->ud = ud;
    return b;
}

static int spend(CopyBin *b, int r) {
    b->spent = r;
    if (r == COPYBIN_NOMEM && !b->err[0]) snprintf(b->err, sizeof b->err, "out of memory converting rows to COPY's binary format");
    if (r == COPYBIN_OUT_FAILED && !b->err[0]) snprintf(b->err, sizeof b->err, "sending the rows failed");
    return r;
}

static int carry_add(CopyBin *b, const char *p, size_t n) {
    if (reserve(&b->carry, &b->ccap, b->clen + n, 4096)) return COPYBIN_NOMEM;
    memcpy(b->carry + b->clen, p, n);
    b->clen += n;
    return 0;
}

int copybin_feed(CopyBin *b, const char *buf, size_t len) {
    int r;
    if (b->spent) return b->spent;
    while (len > 0 && !b->ended) {
        const char *nl = (const char *)memchr(buf, '\n', len);
        size_t ln;
        if (!nl) return (r = carry_add(b, buf, len)) ? spend(b, r) : 0;
        ln = (size_t)(nl - buf);
        if (b->clen) {
            if ((r = carry_add(b, buf, ln))) return spend(b, r);
            r = row(b, b->carry, b->clen);
            b->clen = 0;
        } else r = row(b, buf, ln);
        if (r) return spend(b, r);
        buf = nl + 1;
        len -= ln + 1;
    }
    return 0;
}

int copybin_finish(CopyBin *b) {
    int r;
    if (b->spent) return b->spent;
    if (b->clen && !b->ended) {
        if ((r = row(b, b->carry, b->clen))) return spend(b, r);
        b->clen = 0;
    }
    if ((r = header(b)) || (r = room(b, 2))) return spend(b, r);
    put16(b->obuf + b->olen, -1);
    b->olen += 2;
    if ((r = flush(b))) return spend(b, r);
    return 0;
}

const char *copybin_error(const CopyBin *b) { return b->err[0] ? b->err : "no error"; }

long long copybin_rows(const CopyBin *b) { return b->rows; }

void copybin_free(CopyBin *b) {
    if (!b) return;
    free(b->kinds);
    free(b->obuf);
    free(b->carry);
    free(b->val);
    free(b);
}
