/*
 * test_queue.c -- the broker's fair shard queue: FIFO lanes, round-robin
 * between lanes, head pushes, removal, eligibility, and a randomised run
 * checked against a plain model of the same rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "queue.h"

/* A test item: which lane it belongs to and a sequence number. */
typedef struct item {
    zb_queue_item_t q; /* first: the queue's pointer is the item's */
    int lane, seq;
} item_t;

static item_t *s_pop(zb_queue_t *q) {
    return (item_t *)zb_queue_pop(q, NULL, NULL);
}

static void test_fifo_and_head(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    zb_queue_lane_t lane;
    zb_queue_lane_init(&lane);
    item_t it[4];
    for (int i = 0; i < 4; i++) {
        zb_queue_item_init(&it[i].q);
        it[i].seq = i;
        assert_false(zb_queue_item_queued(&it[i].q));
    }
    zb_queue_push(q, &lane, &it[0].q, false);
    zb_queue_push(q, &lane, &it[1].q, false);
    zb_queue_push(q, &lane, &it[2].q, false);
    zb_queue_push(q, &lane, &it[3].q, true); /* re-queued: first */
    assert_int_equal(zb_queue_items(q), 4);
    assert_int_equal(zb_queue_lanes(q), 1);
    assert_int_equal(zb_queue_lane_items(&lane), 4);
    assert_true(zb_queue_item_queued(&it[2].q));
    int want[] = {3, 0, 1, 2};
    for (int i = 0; i < 4; i++) {
        item_t *x = s_pop(q);
        assert_non_null(x);
        assert_int_equal(x->seq, want[i]);
        assert_false(zb_queue_item_queued(&x->q));
    }
    assert_null(s_pop(q));
    assert_int_equal(zb_queue_items(q), 0);
    assert_int_equal(zb_queue_lanes(q), 0);
    zb_queue_destroy(&q);
    assert_null(q);
    zb_queue_destroy(&q); /* NULL-safe */
    zb_queue_destroy(NULL);
}

static void test_round_robin(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    zb_queue_lane_t lanes[3];
    item_t it[3][5];
    for (int l = 0; l < 3; l++) {
        zb_queue_lane_init(&lanes[l]);
        for (int i = 0; i < 5; i++) {
            zb_queue_item_init(&it[l][i].q);
            it[l][i].lane = l;
            it[l][i].seq = i;
            zb_queue_push(q, &lanes[l], &it[l][i].q, false);
        }
    }
    assert_int_equal(zb_queue_lanes(q), 3);
    for (int round = 0; round < 5; round++) {
        for (int l = 0; l < 3; l++) {
            item_t *x = s_pop(q);
            assert_non_null(x);
            assert_int_equal(x->lane, l);
            assert_int_equal(x->seq, round);
        }
    }
    assert_null(s_pop(q));
    zb_queue_destroy(&q);
}

/* A client with a huge backlog delays a newcomer by one shard at most. */
static void test_newcomer(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    enum { BIG = 10000 };
    item_t *big = calloc(BIG, sizeof *big);
    assert_non_null(big);
    zb_queue_lane_t a, b, c;
    zb_queue_lane_init(&a);
    zb_queue_lane_init(&b);
    zb_queue_lane_init(&c);
    for (int i = 0; i < BIG; i++) {
        big[i].lane = 0;
        big[i].seq = i;
        zb_queue_push(q, &a, &big[i].q, false);
    }
    assert_int_equal(s_pop(q)->seq, 0);
    assert_int_equal(s_pop(q)->seq, 1);
    item_t one = {.lane = 1};
    zb_queue_push(q, &b, &one.q, false);
    /* b joined while a was being served: a gets at most one more. */
    item_t *x = s_pop(q);
    if (x->lane == 0) x = s_pop(q);
    assert_int_equal(x->lane, 1);
    assert_int_equal(zb_queue_lanes(q), 1);

    /* Two waiting lanes: a third lane waits for one item of each. */
    item_t b2[3] = {{.lane = 1}, {.lane = 1}, {.lane = 1}};
    for (int i = 0; i < 3; i++) zb_queue_push(q, &b, &b2[i].q, false);
    item_t cc = {.lane = 2};
    zb_queue_push(q, &c, &cc.q, false);
    int served_before = 0;
    while ((x = s_pop(q))->lane != 2) served_before++;
    assert_true(served_before <= 2);
    /* The cursor went on: a and b alternate again. */
    int l0 = s_pop(q)->lane, l1 = s_pop(q)->lane;
    assert_int_not_equal(l0, l1);
    while (s_pop(q) != NULL) {
    }
    assert_int_equal(zb_queue_items(q), 0);
    free(big);
    zb_queue_destroy(&q);
}

static void test_remove(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    zb_queue_lane_t a, b;
    zb_queue_lane_init(&a);
    zb_queue_lane_init(&b);
    item_t ia[3] = {{.seq = 0}, {.seq = 1}, {.seq = 2}}, ib = {.lane = 1};
    for (int i = 0; i < 3; i++) zb_queue_push(q, &a, &ia[i].q, false);
    zb_queue_push(q, &b, &ib.q, false);
    zb_queue_remove(q, &ia[1].q); /* middle */
    zb_queue_remove(q, &ia[1].q); /* not queued: nothing */
    assert_int_equal(zb_queue_lane_items(&a), 2);
    zb_queue_remove(q, &ib.q); /* b empties and leaves the ring */
    assert_int_equal(zb_queue_lanes(q), 1);
    assert_int_equal(zb_queue_items(q), 2);
    assert_int_equal(s_pop(q)->seq, 0);
    assert_int_equal(s_pop(q)->seq, 2);
    assert_null(s_pop(q));
    /* Removing the lane at the cursor keeps the ring consistent. */
    zb_queue_push(q, &a, &ia[0].q, false);
    zb_queue_push(q, &b, &ib.q, false);
    zb_queue_remove(q, &ia[0].q);
    assert_int_equal(s_pop(q)->lane, 1);
    assert_null(s_pop(q));
    zb_queue_destroy(&q);
}

static bool s_even_lane(const zb_queue_item_t *it, void *arg) {
    (void)arg;
    return ((const item_t *)it)->lane % 2 == 0;
}

static bool s_seq_below(const zb_queue_item_t *it, void *arg) {
    return ((const item_t *)it)->seq < *(int *)arg;
}

static void test_eligible(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    zb_queue_lane_t lanes[3];
    item_t it[3][2];
    for (int l = 0; l < 3; l++) {
        zb_queue_lane_init(&lanes[l]);
        for (int i = 0; i < 2; i++) {
            it[l][i] = (item_t){.lane = l, .seq = i};
            zb_queue_push(q, &lanes[l], &it[l][i].q, false);
        }
    }
    /* Lane 1 is passed over; lanes 0 and 2 alternate. */
    int want[] = {0, 2, 0, 2};
    for (int i = 0; i < 4; i++)
        assert_int_equal(((item_t *)zb_queue_pop(q, s_even_lane, NULL))->lane, want[i]);
    assert_null(zb_queue_pop(q, s_even_lane, NULL));
    assert_int_equal(zb_queue_items(q), 2);
    /* Only the head is considered: lane 1's second item is not taken
     * ahead of its first. */
    int limit = 1;
    item_t *x = (item_t *)zb_queue_pop(q, s_seq_below, &limit);
    assert_int_equal(x->seq, 0);
    zb_queue_push(q, &lanes[1], &x->q, true);
    limit = 0;
    assert_null(zb_queue_pop(q, s_seq_below, &limit));
    assert_int_equal(s_pop(q)->seq, 0);
    assert_int_equal(s_pop(q)->seq, 1);
    zb_queue_destroy(&q);
}

/*
 * Random pushes (tail and head), pops and removals on 8 lanes, checked
 * against a model: per-lane arrays of sequence numbers and a model cursor
 * over a model ring.  Every item leaves exactly once.
 */
enum { R_LANES = 8, R_ITEMS = 4000 };

typedef struct model {
    int lane_items[R_LANES][R_ITEMS]; /* seq numbers, head first */
    int lane_n[R_LANES];
    int ring[R_LANES], ring_n, cursor; /* lane numbers in ring order */
} model_t;

static void m_push(model_t *m, int l, int seq, bool head) {
    if (m->lane_n[l] == 0) {
        /* join before the cursor */
        int pos = m->ring_n == 0 ? 0 : m->cursor;
        memmove(&m->ring[pos + 1], &m->ring[pos], (size_t)(m->ring_n - pos) * sizeof(int));
        m->ring[pos] = l;
        m->ring_n++;
        m->cursor = m->ring_n == 1 ? 0 : pos + 1; /* the cursor's lane moved up */
    }
    int *li = m->lane_items[l];
    if (head) {
        memmove(&li[1], &li[0], (size_t)m->lane_n[l] * sizeof(int));
        li[0] = seq;
    } else {
        li[m->lane_n[l]] = seq;
    }
    m->lane_n[l]++;
}

static void m_take(model_t *m, int l, int k) {
    int *li = m->lane_items[l];
    memmove(&li[k], &li[k + 1], (size_t)(m->lane_n[l] - k - 1) * sizeof(int));
    if (--m->lane_n[l] == 0) {
        int pos = 0;
        while (m->ring[pos] != l) pos++;
        memmove(&m->ring[pos], &m->ring[pos + 1], (size_t)(m->ring_n - pos - 1) * sizeof(int));
        m->ring_n--;
        if (pos < m->cursor) m->cursor--;
        if (m->ring_n > 0)
            m->cursor %= m->ring_n;
        else
            m->cursor = 0;
    }
}

static void test_random_model(void **st) {
    (void)st;
    zb_queue_t *q = NULL;
    assert_int_equal(zb_queue_new(&q), 0);
    model_t *m = calloc(1, sizeof *m);
    item_t *items = calloc(R_ITEMS, sizeof *items);
    int *left = calloc(R_ITEMS, sizeof *left); /* 0 new, 1 queued, 2 gone */
    assert_true(m && items && left);
    zb_queue_lane_t lanes[R_LANES];
    for (int l = 0; l < R_LANES; l++) zb_queue_lane_init(&lanes[l]);
    srand(12345);
    int next = 0, gone = 0;
    while (gone < R_ITEMS) {
        int op = rand() % 10;
        if (op < 5 && next < R_ITEMS) {
            int l = rand() % R_LANES;
            bool head = rand() % 4 == 0;
            items[next] = (item_t){.lane = l, .seq = next};
            zb_queue_push(q, &lanes[l], &items[next].q, head);
            m_push(m, l, next, head);
            left[next++] = 1;
        } else if (op < 9) {
            item_t *x = s_pop(q);
            if (m->ring_n == 0) {
                assert_null(x);
                continue;
            }
            int l = m->ring[m->cursor];
            assert_non_null(x);
            assert_int_equal(x->lane, l);
            assert_int_equal(x->seq, m->lane_items[l][0]);
            assert_int_equal(left[x->seq], 1);
            left[x->seq] = 2;
            gone++;
            /* the model cursor moves past l, then l may leave */
            m->cursor = (m->cursor + 1) % m->ring_n;
            m_take(m, l, 0);
        } else {
            int l = rand() % R_LANES;
            if (m->lane_n[l] == 0) continue;
            int k = rand() % m->lane_n[l], seq = m->lane_items[l][k];
            zb_queue_remove(q, &items[seq].q);
            m_take(m, l, k);
            left[seq] = 2;
            gone++;
        }
        size_t total = 0;
        for (int l = 0; l < R_LANES; l++) {
            assert_int_equal(zb_queue_lane_items(&lanes[l]), (size_t)m->lane_n[l]);
            total += (size_t)m->lane_n[l];
        }
        assert_int_equal(zb_queue_items(q), total);
        assert_int_equal(zb_queue_lanes(q), (size_t)m->ring_n);
    }
    assert_int_equal(next, R_ITEMS);
    assert_null(s_pop(q));
    free(m);
    free(items);
    free(left);
    zb_queue_destroy(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_head), cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_newcomer),      cmocka_unit_test(test_remove),
        cmocka_unit_test(test_eligible),      cmocka_unit_test(test_random_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
