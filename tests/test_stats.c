/*
 * test_stats.c -- the broker's rates (sliding 10 s window of 100 ms
 * buckets) and nearest-rank latency percentiles over the last 1000.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "stats.h"

#define T0 1000000u /* an arbitrary monotonic start */

static void test_rates(void **st) {
    (void)st;
    zb_stats_t *s = NULL;
    double tx = -1, tk = -1;
    assert_int_equal(zb_stats_new(T0, &s), 0);
    zb_stats_rates(s, T0, &tx, &tk);
    assert_true(tx == 0 && tk == 0);

    zb_stats_add_work(s, T0 + 500, 100, 1000);
    /* Under a second of history: divided by one second, not by 0.5. */
    zb_stats_rates(s, T0 + 500, &tx, &tk);
    assert_true(tx == 100 && tk == 1000);
    zb_stats_rates(s, T0 + 5000, &tx, &tk);
    assert_true(tx == 20 && tk == 200);
    /* Still inside the window 9.9 s later (slot difference 99)... */
    zb_stats_rates(s, T0 + 10400, &tx, &tk);
    assert_true(tx == 10 && tk == 100);
    /* ...gone at slot difference 100. */
    zb_stats_rates(s, T0 + 10500, &tx, &tk);
    assert_true(tx == 0 && tk == 0);

    /* The bucket reused 10 s later starts from zero. */
    zb_stats_add_work(s, T0 + 10550, 7, 70);
    zb_stats_add_work(s, T0 + 10560, 3, 30);
    zb_stats_rates(s, T0 + 10600, &tx, NULL);
    assert_true(tx == 1);
    /* Work spread over the window adds up. */
    for (unsigned t = 0; t < 10000; t += 250) zb_stats_add_work(s, T0 + 20000 + t, 5, 0);
    zb_stats_rates(s, T0 + 29999, &tx, &tk);
    assert_true(fabs(tx - 20.0) < 1e-9); /* 40 adds x 5 texts / 10 s */
    assert_true(tk == 0);
    zb_stats_destroy(&s);
    assert_null(s);
    zb_stats_destroy(&s);
}

static void test_latency(void **st) {
    (void)st;
    zb_stats_t *s = NULL;
    double p50 = -1, p90 = -1, p99 = -1;
    assert_int_equal(zb_stats_new(0, &s), 0);
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 0 && p90 == 0 && p99 == 0);
    assert_int_equal(zb_stats_latency_count(s), 0);

    zb_stats_add_latency(s, 7.5);
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 7.5 && p90 == 7.5 && p99 == 7.5);

    zb_stats_destroy(&s);
    assert_int_equal(zb_stats_new(0, &s), 0);
    for (int i = 100; i >= 1; i--) zb_stats_add_latency(s, i); /* any order */
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 50 && p90 == 90 && p99 == 99);

    /* Only the last 1000 count: 1000 samples of 1000 push the 1..100 out. */
    for (int i = 0; i < 1000; i++) zb_stats_add_latency(s, 1000);
    assert_int_equal(zb_stats_latency_count(s), 1000);
    zb_stats_latency(s, &p50, NULL, &p99);
    assert_true(p50 == 1000 && p99 == 1000);
    /* 20 fast ones replace the oldest: the upper percentiles stay. */
    for (int i = 0; i < 20; i++) zb_stats_add_latency(s, 1);
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 1000 && p90 == 1000);
    /* 600 fast ones in all: the median is fast, p90 still slow. */
    for (int i = 0; i < 580; i++) zb_stats_add_latency(s, 2);
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 2 && p90 == 1000 && p99 == 1000);

    /* What cannot be a latency is stored as 0, keeping the reply valid. */
    zb_stats_destroy(&s);
    assert_int_equal(zb_stats_new(0, &s), 0);
    zb_stats_add_latency(s, NAN);
    zb_stats_add_latency(s, -3);
    zb_stats_add_latency(s, INFINITY);
    zb_stats_latency(s, &p50, &p90, &p99);
    assert_true(p50 == 0 && p99 == 0);
    zb_stats_destroy(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates),
        cmocka_unit_test(test_latency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
