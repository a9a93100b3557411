/*
 * test_random.c -- proto/random: every byte asked for is written, at every
 * length, and two draws differ.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "random.h"

/* Each length from 0 to 40 fills exactly its bytes: a canary after them
 * stays, and over many draws every byte position takes more than one
 * value (a position never written would keep its fill). */
static void test_lengths(void **st) {
    (void)st;
    for (size_t n = 0; n <= 40; n++) {
        unsigned char seen[40][2];
        memset(seen, 0, sizeof seen);
        for (int draw = 0; draw < 16; draw++) {
            unsigned char buf[48];
            memset(buf, 0xA5, sizeof buf);
            zb_random_bytes(buf, n);
            for (size_t i = n; i < sizeof buf; i++) assert_int_equal(buf[i], 0xA5);
            for (size_t i = 0; i < n; i++) seen[i][buf[i] != 0xA5] = 1;
        }
        for (size_t i = 0; i < n; i++) assert_true(seen[i][1]);
    }
}

static void test_draws_differ(void **st) {
    (void)st;
    uint8_t a[32], b[32];
    zb_random_bytes(a, sizeof a);
    zb_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_draws_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
