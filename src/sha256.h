/* sha256.h -- SHA-256 (FIPS 180-4) for backup manifests and archive
 * checksums, computed by libcrypto's EVP interface (OpenSSL: hardware SHA
 * extensions or its assembly, several times the speed of portable C). */
#ifndef ORCH_SHA256_H
#define ORCH_SHA256_H
#include <stddef.h>

typedef struct Sha256 {
    void *ctx;               /* EVP_MD_CTX *, NULL before init / after final */
    int failed;              /* libcrypto refused a step: the digest is unusable */
} Sha256;

/* Start a digest. Returns 0, or -1 when libcrypto cannot (out of memory, no
 * SHA-256 provider); s->failed is then set and later calls do nothing. */
int sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t len);
/* Write the 32-byte digest to out and free the state; returns 0, or -1 if any
 * step failed (out is then zeroed). s must be initialised again to reuse it. */
int sha256_final(Sha256 *s, unsigned char out[32]);
/* dst becomes an independent copy of src's running state (0 / -1). */
int sha256_copy(Sha256 *dst, const Sha256 *src);
/* Free the state without a digest; safe on a finished or never-started one. */
void sha256_free(Sha256 *s);
/* Lower-case hex of a digest into hex (65 bytes with the terminator). */
void sha256_hex(const unsigned char d[32], char hex[65]);
#endif
