/* sha256.h -- SHA-256 (FIPS 180-4), for backup manifests. */
#ifndef ORCH_SHA256_H
#define ORCH_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct Sha256 {
    uint32_t h[8];
    uint64_t len;            /* bytes hashed so far */
    unsigned char buf[64];
    size_t nbuf;
} Sha256;

void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t len);
/* Write the 32-byte digest to out; s must be re-initialised to reuse it. */
void sha256_final(Sha256 *s, unsigned char out[32]);
/* Lower-case hex of a digest into hex (65 bytes with the terminator). */
void sha256_hex(const unsigned char d[32], char hex[65]);
#endif
