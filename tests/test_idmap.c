/*
 * test_idmap.c -- the broker's routing-id table: the keyed hash against
 * SipHash-2-4's reference vectors, empty and longest keys, growth, removal
 * during iteration, and random operations checked against a plain list of
 * which keys are in.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "idmap.h"

/* A test record: its node and its index among the test's keys. */
typedef struct rec {
    zb_idmap_node_t node; /* first: the table's pointer is the record's */
    int idx;
} rec_t;

/* A key of the test, with room for the longest. */
typedef struct tkey {
    size_t len;
    uint8_t b[ZB_IDMAP_KEY_MAX];
} tkey_t;

static rec_t *s_find(const zb_idmap_t *m, const tkey_t *k) {
    return (rec_t *)zb_idmap_find(m, k->b, k->len);
}

/* Visits the whole table; checks each node is visited once and is in[]'s;
 * returns how many were visited. */
static size_t s_walk(const zb_idmap_t *m, const bool *in, int n) {
    char *seen = calloc((size_t)n, 1);
    assert_non_null(seen);
    size_t visits = 0;
    for (zb_idmap_node_t *x = zb_idmap_first(m); x; x = zb_idmap_next(m, x)) {
        int i = ((rec_t *)x)->idx;
        assert_true(i >= 0 && i < n);
        assert_true(in[i]);
        assert_false(seen[i]);
        seen[i] = 1;
        visits++;
    }
    free(seen);
    return visits;
}

static void test_siphash_vectors(void **st) {
    (void)st;
    /* The reference vectors of the SipHash paper: key 00 01 .. 0f,
     * messages 00 01 .. (len - 1). */
    uint8_t hash_key[16], msg[64];
    for (int i = 0; i < 16; i++) hash_key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++) msg[i] = (uint8_t)i;
    zb_idmap_t *m = NULL;
    assert_int_equal(zb_idmap_new_keyed(hash_key, &m), 0);
    assert_true(zb_idmap_hash(m, msg, 0) == 0x726fdb47dd0e0e31ull);
    assert_true(zb_idmap_hash(m, msg, 1) == 0x74f839c593dc67fdull);
    assert_true(zb_idmap_hash(m, msg, 8) == 0x93f5f5799a932462ull);
    assert_true(zb_idmap_hash(m, msg, 15) == 0xa129ca6149be45e5ull);
    assert_true(zb_idmap_hash(m, msg, 63) == 0x958a324ceb064572ull);
    zb_idmap_destroy(&m);
    assert_null(m);
    zb_idmap_destroy(&m); /* NULL-safe */
    zb_idmap_destroy(NULL);
}

static void test_keyed_per_table(void **st) {
    (void)st;
    /* Two tables draw two hash keys: a peer cannot know where its id
     * falls.  (Equal hashes by chance: one in 2^64.) */
    zb_idmap_t *a = NULL, *b = NULL;
    assert_int_equal(zb_idmap_new(&a), 0);
    assert_int_equal(zb_idmap_new(&b), 0);
    assert_true(zb_idmap_hash(a, "worker-1", 8) != zb_idmap_hash(b, "worker-1", 8));
    assert_true(zb_idmap_hash(a, "worker-1", 8) == zb_idmap_hash(a, "worker-1", 8));
    zb_idmap_destroy(&a);
    zb_idmap_destroy(&b);
}

static void test_empty_and_longest_keys(void **st) {
    (void)st;
    zb_idmap_t *m = NULL;
    assert_int_equal(zb_idmap_new(&m), 0);
    uint8_t longest[ZB_IDMAP_KEY_MAX], other[ZB_IDMAP_KEY_MAX];
    memset(longest, 0xab, sizeof longest);
    memcpy(other, longest, sizeof other);
    other[ZB_IDMAP_KEY_MAX - 1] ^= 1; /* differs in the last byte only */
    rec_t r[5] = {{.idx = 0}, {.idx = 1}, {.idx = 2}, {.idx = 3}, {.idx = 4}};
    assert_null(zb_idmap_find(m, "", 0));
    assert_null(zb_idmap_first(m));
    zb_idmap_add(m, &r[0].node, "", 0);
    zb_idmap_add(m, &r[1].node, longest, sizeof longest);
    zb_idmap_add(m, &r[2].node, "\0", 1); /* a NUL byte is a key, not the empty one */
    zb_idmap_add(m, &r[3].node, longest, sizeof longest - 1); /* a prefix */
    zb_idmap_add(m, &r[4].node, other, sizeof other);
    assert_int_equal(zb_idmap_count(m), 5);
    assert_ptr_equal(zb_idmap_find(m, "", 0), &r[0].node);
    assert_ptr_equal(zb_idmap_find(m, longest, sizeof longest), &r[1].node);
    assert_ptr_equal(zb_idmap_find(m, "\0", 1), &r[2].node);
    assert_ptr_equal(zb_idmap_find(m, longest, sizeof longest - 1), &r[3].node);
    assert_ptr_equal(zb_idmap_find(m, other, sizeof other), &r[4].node);
    assert_null(zb_idmap_find(m, "\0\0", 2));
    assert_null(zb_idmap_find(m, longest, 2));
    /* The node keeps its own copy of the key. */
    assert_int_equal(r[1].node.key.len, ZB_IDMAP_KEY_MAX);
    assert_memory_equal(r[1].node.key.b, longest, sizeof longest);
    assert_int_equal(r[0].node.key.len, 0);

    zb_idmap_del(m, &r[0].node);
    zb_idmap_del(m, &r[0].node); /* not in the table: nothing */
    assert_null(zb_idmap_find(m, "", 0));
    assert_int_equal(zb_idmap_count(m), 4);
    zb_idmap_del(m, &r[1].node);
    assert_null(zb_idmap_find(m, longest, sizeof longest));
    assert_ptr_equal(zb_idmap_find(m, other, sizeof other), &r[4].node);
    assert_ptr_equal(zb_idmap_find(m, longest, sizeof longest - 1), &r[3].node);
    zb_idmap_add(m, &r[0].node, "", 0); /* back again */
    assert_ptr_equal(zb_idmap_find(m, "", 0), &r[0].node);
    bool in[5] = {true, false, true, true, true};
    assert_int_equal(s_walk(m, in, 5), 4);
    zb_idmap_destroy(&m);
}

/* n distinct 4-byte keys, i as little-endian bytes. */
static void s_int_key(tkey_t *k, uint32_t i) {
    k->len = 4;
    for (int j = 0; j < 4; j++) k->b[j] = (uint8_t)(i >> (8 * j));
}

static void test_growth(void **st) {
    (void)st;
    enum { N = 100000 };
    zb_idmap_t *m = NULL;
    assert_int_equal(zb_idmap_new(&m), 0);
    rec_t *r = calloc(N, sizeof *r);
    bool *in = calloc(N, sizeof *in);
    assert_non_null(r);
    assert_non_null(in);
    tkey_t k;
    for (int i = 0; i < N; i++) {
        s_int_key(&k, (uint32_t)i);
        r[i].idx = i;
        zb_idmap_add(m, &r[i].node, k.b, k.len);
        in[i] = true;
        /* Every earlier node is still found across each doubling. */
        if ((i & (i + 1)) == 0)
            for (int j = 0; j <= i; j++) {
                s_int_key(&k, (uint32_t)j);
                assert_ptr_equal(s_find(m, &k), &r[j]);
            }
    }
    assert_int_equal(zb_idmap_count(m), N);
    assert_int_equal(s_walk(m, in, N), N);
    fx_rng_t rng = {.s = 7};
    /* Remove all in a random order. */
    int *order = malloc(N * sizeof *order);
    assert_non_null(order);
    for (int i = 0; i < N; i++) order[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(fx_rng_next(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < N; i++) {
        int x = order[i];
        zb_idmap_del(m, &r[x].node);
        in[x] = false;
        s_int_key(&k, (uint32_t)x);
        assert_null(s_find(m, &k));
        if (i % 10007 == 0) assert_int_equal(s_walk(m, in, N), N - i - 1);
    }
    assert_int_equal(zb_idmap_count(m), 0);
    assert_null(zb_idmap_first(m));
    free(order);
    free(in);
    free(r);
    zb_idmap_destroy(&m);
}

static void test_del_during_iteration(void **st) {
    (void)st;
    enum { N = 1000 };
    zb_idmap_t *m = NULL;
    assert_int_equal(zb_idmap_new(&m), 0);
    static rec_t r[N];
    bool in[N];
    tkey_t k;
    for (int i = 0; i < N; i++) {
        s_int_key(&k, (uint32_t)i * 2654435761u);
        r[i].idx = i;
        zb_idmap_add(m, &r[i].node, k.b, k.len);
        in[i] = true;
    }
    /* Remove the current node when its index is even, and now and then a
     * node not yet visited (never the next one): each node still present
     * when the iteration reaches it is visited once. */
    bool seen[N] = {false};
    size_t visits = 0;
    fx_rng_t rng = {.s = 11};
    for (zb_idmap_node_t *x = zb_idmap_first(m), *next; x; x = next) {
        next = zb_idmap_next(m, x);
        int i = ((rec_t *)x)->idx;
        assert_true(in[i]);
        assert_false(seen[i]);
        seen[i] = true;
        visits++;
        if (i % 2 == 0) {
            zb_idmap_del(m, x);
            in[i] = false;
        }
        int j = (int)(fx_rng_next(&rng) % N);
        if (j % 2 == 1 && in[j] && !seen[j] && &r[j].node != next) {
            zb_idmap_del(m, &r[j].node);
            in[j] = false;
        }
    }
    size_t left = 0;
    for (int i = 0; i < N; i++) {
        s_int_key(&k, (uint32_t)i * 2654435761u);
        assert_ptr_equal(s_find(m, &k), in[i] ? &r[i] : NULL);
        /* Every node was either visited or removed before its turn. */
        assert_true(seen[i] || !in[i]);
        left += in[i];
        if (i % 2 == 0) assert_false(in[i]);
    }
    assert_true(visits >= left);
    assert_int_equal(zb_idmap_count(m), left);
    assert_int_equal(s_walk(m, in, N), left);
    zb_idmap_destroy(&m);
}

/* Random finds, adds and removals over a pool of keys that share prefixes
 * and lengths, checked after every step against which keys are in. */
static void test_random_against_reference(void **st) {
    (void)st;
    enum { K = 400, STEPS = 200000 };
    fx_rng_t rng = {.s = 20240601};
    static tkey_t keys[K];
    static rec_t r[K];
    bool in[K] = {false};
    for (int i = 0; i < K; i++) {
        tkey_t *k = &keys[i];
    again:;
        uint64_t x = fx_rng_next(&rng);
        static const size_t lens[] = {0, 1, 2, 3, 5, 8, 16, 254, 255};
        k->len = x % 4 == 0 ? (size_t)(x >> 8) % (ZB_IDMAP_KEY_MAX + 1) : lens[(x >> 8) % 9];
        /* A small alphabet: many keys are prefixes of others. */
        for (size_t j = 0; j < k->len; j++) k->b[j] = (uint8_t)(fx_rng_next(&rng) % 3);
        for (int j = 0; j < i; j++)
            if (keys[j].len == k->len && memcmp(keys[j].b, k->b, k->len) == 0) goto again;
        r[i].idx = i;
    }
    zb_idmap_t *m = NULL;
    assert_int_equal(zb_idmap_new(&m), 0);
    size_t n = 0;
    for (int s = 0; s < STEPS; s++) {
        uint64_t x = fx_rng_next(&rng);
        int i = (int)(x % K);
        switch ((x >> 32) % 3) {
        case 0:
            break;
        case 1:
            if (!in[i]) {
                zb_idmap_add(m, &r[i].node, keys[i].b, keys[i].len);
                in[i] = true;
                n++;
            }
            break;
        default:
            if (in[i]) {
                zb_idmap_del(m, &r[i].node);
                in[i] = false;
                n--;
            }
            break;
        }
        assert_ptr_equal(s_find(m, &keys[i]), in[i] ? &r[i] : NULL);
        assert_int_equal(zb_idmap_count(m), n);
        if (s % 997 == 0) {
            for (int j = 0; j < K; j++) assert_ptr_equal(s_find(m, &keys[j]), in[j] ? &r[j] : NULL);
            assert_int_equal(s_walk(m, in, K), n);
        }
    }
    zb_idmap_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vectors),
        cmocka_unit_test(test_keyed_per_table),
        cmocka_unit_test(test_empty_and_longest_keys),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_del_during_iteration),
        cmocka_unit_test(test_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
