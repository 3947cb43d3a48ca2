/* test_sha256.c -- the FIPS 180-4 example vectors. */
#include <stdio.h>
#include <string.h>
#include "sha256.h"

static int passed, failed;

static void check(const char *name, const void *data, size_t len, size_t reps, const char *want) {
    Sha256 s;
    unsigned char d[32];
    char hex[65];
    size_t i;
    sha256_init(&s);
    for (i = 0; i < reps; i++) sha256_update(&s, data, len);
    sha256_final(&s, d);
    sha256_hex(d, hex);
    if (!strcmp(hex, want)) passed++;
    else { failed++; printf("FAIL %s: %s\n", name, hex); }
}

int main(void) {
    static const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check("empty", "", 0, 1, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check("abc", "abc", 3, 1, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    check("448 bits", two_blocks, strlen(two_blocks), 1, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    check("million a", "aaaaaaaaaa", 10, 100000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    check("55 bytes (padding edge)", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 55, 1,
          "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
