/* test_sha256.c -- the FIPS 180-4 / NIST example vectors through orch's
 * SHA-256 (libcrypto's EVP), fed whole, byte by byte and in odd pieces, and
 * a copied running state finishing on its own. */
#include <stdio.h>
#include <string.h>
#include "sha256.h"

static int passed, failed;

static void digest_hex(Sha256 *s, char hex[65]) {
    unsigned char d[32];
    if (sha256_final(s, d) != 0) { strcpy(hex, "(libcrypto failed)"); return; }
    sha256_hex(d, hex);
}

/* data repeated reps times, fed in pieces of `piece` bytes (0 = whole). */
static void check(const char *name, const void *data, size_t len, size_t reps, size_t piece, const char *want) {
    Sha256 s;
    char hex[65];
    size_t i, off;
    if (sha256_init(&s) != 0) { failed++; printf("FAIL %s: init\n", name); return; }
    for (i = 0; i < reps; i++) {
        if (!piece) { sha256_update(&s, data, len); continue; }
        for (off = 0; off < len; off += piece)
            sha256_update(&s, (const char *)data + off, len - off < piece ? len - off : piece);
    }
    digest_hex(&s, hex);
    if (!strcmp(hex, want)) passed++;
    else { failed++; printf("FAIL %s (pieces of %zu): %s\n", name, piece, hex); }
}

int main(void) {
    static const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    static const char *long896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    static const size_t pieces[] = { 0, 1, 7, 64, 65 };
    size_t k;
    for (k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
        size_t p = pieces[k];
        check("empty", "", 0, 1, p, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        check("abc", "abc", 3, 1, p, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        check("448 bits", two_blocks, strlen(two_blocks), 1, p, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        check("896 bits", long896, strlen(long896), 1, p, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
        check("55 bytes (padding edge)", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 55, 1, p,
              "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    }
    check("million a", "aaaaaaaaaa", 10, 100000, 0, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    check("million a, in 3-byte pieces", "aaaaaaaaaa", 10, 100000, 3, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    {   /* a copy of a running state finishes independently of the original */
        Sha256 a, b;
        char ha[65], hb[65];
        sha256_init(&a);
        sha256_update(&a, "ab", 2);
        if (sha256_copy(&b, &a) != 0) { failed++; printf("FAIL copy\n"); }
        sha256_update(&a, "c", 1);
        digest_hex(&a, ha);
        sha256_update(&b, "c", 1);
        digest_hex(&b, hb);
        if (!strcmp(ha, hb) && !strcmp(ha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")) passed++;
        else { failed++; printf("FAIL copy: %s / %s\n", ha, hb); }
        sha256_free(&a);   /* after final: a no-op */
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
