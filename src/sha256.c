/* sha256.c -- SHA-256 through libcrypto's EVP digest interface. The running
 * state is an EVP_MD_CTX owned by the Sha256; sha256_final and sha256_free
 * release it. */
#include <string.h>
#include <openssl/evp.h>
#include "sha256.h"

int sha256_init(Sha256 *s) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    s->ctx = c;
    s->failed = 0;
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c);
        s->ctx = NULL;
        s->failed = 1;
        return -1;
    }
    return 0;
}

void sha256_update(Sha256 *s, const void *data, size_t len) {
    if (s->failed || !s->ctx || len == 0) return;
    if (EVP_DigestUpdate((EVP_MD_CTX *)s->ctx, data, len) != 1) s->failed = 1;
}

int sha256_final(Sha256 *s, unsigned char out[32]) {
    unsigned int n = 0;
    int ok = !s->failed && s->ctx && EVP_DigestFinal_ex((EVP_MD_CTX *)s->ctx, out, &n) == 1 && n == 32;
    sha256_free(s);
    if (!ok) { memset(out, 0, 32); s->failed = 1; return -1; }
    return 0;
}

int sha256_copy(Sha256 *dst, const Sha256 *src) {
    dst->ctx = NULL;
    dst->failed = 1;
    if (src->failed || !src->ctx) return -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_MD_CTX_copy_ex(c, (const EVP_MD_CTX *)src->ctx) != 1) { EVP_MD_CTX_free(c); return -1; }
    dst->ctx = c;
    dst->failed = 0;
    return 0;
}

void sha256_free(Sha256 *s) {
    if (s->ctx) EVP_MD_CTX_free((EVP_MD_CTX *)s->ctx);
    s->ctx = NULL;
}

void sha256_hex(const unsigned char d[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    int i;
    for (i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}
