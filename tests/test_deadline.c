/*
 * test_deadline.c -- the broker's deadline heap: order, removal and update
 * through an item, growth, and random push/remove/update/pop sequences
 * checked against a plain array of deadlines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "fixture.h"

/* A test record: its heap item and its index among the test's records. */
typedef struct rec {
    zb_deadline_item_t d; /* first: the heap's pointer is the record's */
    int idx;
} rec_t;

static rec_t *s_pop(zb_deadline_t *h) {
    return (rec_t *)zb_deadline_pop(h);
}

static void test_order(void **st) {
    (void)st;
    zb_deadline_t *h = NULL;
    assert_int_equal(zb_deadline_new(&h), 0);
    assert_null(zb_deadline_first(h));
    assert_null(zb_deadline_pop(h));
    rec_t r[6] = {{.idx = 0}, {.idx = 1}, {.idx = 2}, {.idx = 3}, {.idx = 4}, {.idx = 5}};
    const uint64_t at[6] = {50, 10, 40, 10, UINT64_MAX, 0};
    for (int i = 0; i < 6; i++) {
        assert_false(zb_deadline_item_pending(&r[i].d)); /* zeros: in no heap */
        assert_int_equal(zb_deadline_push(h, &r[i].d, at[i]), 0);
        assert_true(zb_deadline_item_pending(&r[i].d));
        assert_true(r[i].d.at == at[i]);
    }
    assert_int_equal(zb_deadline_count(h), 6);
    assert_ptr_equal(zb_deadline_first(h), &r[5].d);
    assert_int_equal(zb_deadline_count(h), 6); /* first leaves it in */
    const uint64_t want[6] = {0, 10, 10, 40, 50, UINT64_MAX};
    for (int i = 0; i < 6; i++) {
        rec_t *x = s_pop(h);
        assert_non_null(x);
        assert_true(x->d.at == want[i]);
        assert_false(zb_deadline_item_pending(&x->d));
        assert_int_equal(zb_deadline_count(h), 5 - i);
    }
    assert_null(s_pop(h));
    zb_deadline_destroy(&h);
    assert_null(h);
    zb_deadline_destroy(&h); /* NULL-safe */
    zb_deadline_destroy(NULL);
}

static void test_remove_and_update(void **st) {
    (void)st;
    zb_deadline_t *h = NULL;
    assert_int_equal(zb_deadline_new(&h), 0);
    rec_t r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (rec_t){.idx = i};
        assert_int_equal(zb_deadline_push(h, &r[i].d, 100 + 10 * (uint64_t)i), 0);
    }
    zb_deadline_remove(h, &r[0].d); /* the first */
    zb_deadline_remove(h, &r[0].d); /* in no heap now: nothing */
    zb_deadline_remove(h, &r[7].d); /* the last */
    zb_deadline_remove(h, &r[3].d); /* in the middle */
    assert_int_equal(zb_deadline_count(h), 5);
    assert_false(zb_deadline_item_pending(&r[3].d));
    assert_ptr_equal(zb_deadline_first(h), &r[1].d);
    zb_deadline_update(h, &r[6].d, 5); /* earlier: becomes the first */
    assert_ptr_equal(zb_deadline_first(h), &r[6].d);
    zb_deadline_update(h, &r[6].d, 1000); /* later: the last */
    zb_deadline_update(h, &r[1].d, 145);  /* later, among the others */
    const int want[5] = {2, 4, 1, 5, 6};
    for (int i = 0; i < 5; i++) assert_int_equal(s_pop(h)->idx, want[i]);
    /* A removed item can be pushed again. */
    assert_int_equal(zb_deadline_push(h, &r[3].d, 7), 0);
    assert_ptr_equal(s_pop(h), &r[3]);
    zb_deadline_destroy(&h);
}

static int s_cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_growth(void **st) {
    (void)st;
    enum { N = 50000 };
    zb_deadline_t *h = NULL;
    assert_int_equal(zb_deadline_new(&h), 0);
    rec_t *r = calloc(N, sizeof *r);
    uint64_t *sorted = malloc(N * sizeof *sorted);
    assert_non_null(r);
    assert_non_null(sorted);
    fx_rng_t rng = {.s = 3};
    for (int i = 0; i < N; i++) {
        r[i].idx = i;
        sorted[i] = fx_rng_next(&rng) % 100000;
        assert_int_equal(zb_deadline_push(h, &r[i].d, sorted[i]), 0);
    }
    assert_int_equal(zb_deadline_count(h), N);
    qsort(sorted, N, sizeof *sorted, s_cmp_u64);
    for (int i = 0; i < N; i++) {
        rec_t *x = s_pop(h);
        assert_non_null(x);
        assert_true(x->d.at == sorted[i]);
    }
    assert_int_equal(zb_deadline_count(h), 0);
    free(sorted);
    free(r);
    zb_deadline_destroy(&h);
}

/* Random pushes, removals, updates and pops, the heap's first checked
 * against the earliest deadline of the records that are in after every
 * step.  Deadlines from a narrow range, so many are equal. */
static void test_random_against_reference(void **st) {
    (void)st;
    enum { K = 300, STEPS = 200000 };
    static rec_t r[K];
    bool in[K] = {false};
    uint64_t at[K] = {0};
    size_t n = 0;
    fx_rng_t rng = {.s = 42};
    zb_deadline_t *h = NULL;
    assert_int_equal(zb_deadline_new(&h), 0);
    for (int i = 0; i < K; i++) r[i].idx = i;
    for (int s = 0; s < STEPS; s++) {
        uint64_t x = fx_rng_next(&rng);
        int i = (int)(x % K);
        uint64_t when = (x >> 32) % 64;
        switch ((x >> 24) % 5) {
        case 0:
        case 1:
            if (!in[i]) {
                assert_int_equal(zb_deadline_push(h, &r[i].d, when), 0);
                in[i] = true;
                at[i] = when;
                n++;
            }
            break;
        case 2:
            zb_deadline_remove(h, &r[i].d);
            if (in[i]) n--;
            in[i] = false;
            break;
        case 3:
            if (in[i]) {
                zb_deadline_update(h, &r[i].d, when);
                at[i] = when;
            }
            break;
        default: {
            rec_t *p = s_pop(h);
            if (n == 0) {
                assert_null(p);
                break;
            }
            assert_non_null(p);
            assert_true(in[p->idx]);
            for (int j = 0; j < K; j++)
                if (in[j]) assert_true(at[j] >= p->d.at);
            in[p->idx] = false;
            n--;
            break;
        }
        }
        assert_int_equal(zb_deadline_count(h), n);
        assert_int_equal(zb_deadline_item_pending(&r[i].d), in[i]);
        if (in[i]) assert_true(r[i].d.at == at[i]);
        rec_t *first = (rec_t *)zb_deadline_first(h);
        if (n == 0) {
            assert_null(first);
        } else {
            assert_non_null(first);
            assert_true(in[first->idx]);
            uint64_t min = UINT64_MAX;
            for (int j = 0; j < K; j++)
                if (in[j] && at[j] < min) min = at[j];
            assert_true(first->d.at == min);
        }
    }
    /* Drain: the rest come out in order. */
    uint64_t last = 0;
    for (rec_t *p; (p = s_pop(h)) != NULL; n--) {
        assert_true(in[p->idx]);
        assert_true(p->d.at >= last);
        last = p->d.at;
        in[p->idx] = false;
    }
    assert_int_equal(n, 0);
    zb_deadline_destroy(&h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_remove_and_update),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
