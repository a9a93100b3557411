/*
 * test_bert.c -- the forward pass against the float64 reference fixtures of
 * both tiny models, plus input validation and batch invariance: a
 * sequence's rows are the same bits alone, in one big batch, in
 * length-sorted batches, in reverse order, with any thread count, and from
 * a packed bundle as from the directory it was converted from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bert.h"
#include "bundle.h"
#include "convert.h"
#include "fixture.h"
#include "gemm.h"
#include "kernels.h"
#include "limits.h"
#include "model.h"

#define TOL_REF 1e-4 /* float32 engine vs float64 reference */

typedef struct state {
    const char *name;
    zb_model_t *model;
    fx_file_t fx;
    int total;        /* tokens of all 40 cases */
    int32_t *all_ids; /* [total]: every case back to back */
    int *all_len;     /* [40] */
    float *single;    /* [total][H]: each case run alone */
} state_t;

static int s_setup(void **st, const char *dir, const char *fixture) {
    state_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->name = dir;
    zb_diag_t d = {{0}};
    int rc = zb_model_open(fx_path(dir), &s->model, &d);
    if (rc != 0) fprintf(stderr, "open %s: %s\n", dir, zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_int_equal(fx_load(fx_path(fixture), &s->fx), 0);
    assert_int_equal(s->fx.n, 40);
    s->total = fx_all_ids(&s->fx, &s->all_ids, &s->all_len);
    assert_true(s->total > 0);
    *st = s;
    return 0;
}

static int setup_seed1(void **st) {
    return s_setup(st, "tiny-seed1", "embeddings-tiny-seed1.txt");
}

static int setup_seed2(void **st) {
    return s_setup(st, "tiny-seed2-bert-gammabeta-f16",
                   "embeddings-tiny-seed2-bert-gammabeta-f16.txt");
}

static int teardown(void **st) {
    state_t *s = *st;
    zb_model_close(&s->model);
    fx_free(&s->fx);
    free(s->all_ids);
    free(s->all_len);
    free(s->single);
    free(s);
    return 0;
}

static zb_bert_t *s_new(const zb_model_t *m, int n_tokens_max, int seq_len_max, int threads) {
    zb_bert_t *b = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_bert_new(m, n_tokens_max, seq_len_max, threads, &b, &d);
    if (rc != 0) fprintf(stderr, "zb_bert_new: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_non_null(b);
    return b;
}

static double s_max_diff(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= m)) m = e; /* NaN wins */
    }
    return m;
}

/* The engine against itself must agree bit for bit (max abs diff is
 * printed for the record; 0 is not enough: -0 vs 0 or NaN payloads). */
static void s_same_bits(const float *a, const float *b, size_t n, const char *what) {
    if (memcmp(a, b, n * sizeof *a) != 0)
        fail_msg("%s: not bit-identical (max abs diff %.3g)", what, s_max_diff(a, b, n));
}

/* Every case alone vs the reference; keeps the rows for the later tests. */
static void test_parity(void **st) {
    state_t *s = *st;
    const int hidden = zb_model_config(s->model)->hidden;
    zb_bert_t *b = s_new(s->model, 512, 512, 2);
    assert_int_equal(zb_bert_hidden(b), hidden);
    assert_int_equal(zb_bert_n_tokens_max(b), 512);
    assert_int_equal(zb_bert_seq_len_max(b), 512);
    s->single = malloc((size_t)s->total * (size_t)hidden * sizeof *s->single);
    assert_non_null(s->single);
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0, o = 0; i < s->fx.n; i++) {
        const fx_case_t *c = &s->fx.cases[i];
        assert_int_equal(c->hidden_rows, c->n_ids);
        assert_int_equal(c->hidden_cols, hidden);
        float *rows = s->single + (size_t)o * (size_t)hidden;
        assert_int_equal(zb_bert_forward(b, c->ids, &c->n_ids, 1, rows), 0);
        assert_int_equal(zb_bert_last_lanes(b), 1); /* one text: the threads share */
        double e = s_max_diff(rows, c->hidden, (size_t)c->n_ids * (size_t)hidden);
        if (e > TOL_REF) fprintf(stderr, "case %d %s: max abs diff %.3g\n", i, c->name, e);
        assert_true(e <= TOL_REF);
        if (e > worst) {
            worst = e;
            worst_name = c->name;
        }
        o += c->n_ids;
    }
    printf("%s: 40 cases, max abs diff vs reference %.3g (%s)\n", s->name, worst, worst_name);
    zb_bert_destroy(&b);
    assert_null(b);
}

/* All 40 as one packed batch give the rows they give alone. */
static void test_packed_batch(void **st) {
    state_t *s = *st;
    assert_non_null(s->single); /* test_parity ran */
    const int hidden = zb_model_config(s->model)->hidden;
    size_t n = (size_t)s->total * (size_t)hidden;
    float *out = malloc(n * sizeof *out);
    assert_non_null(out);
    zb_bert_t *b = s_new(s->model, s->total, 512, 2);
    assert_int_equal(zb_bert_forward(b, s->all_ids, s->all_len, s->fx.n, out), 0);
    double e = s_max_diff(out, s->single, n);
    printf("%s: one batch of %d tokens vs one at a time: max abs diff %.3g\n", s->name, s->total,
           e);
    s_same_bits(out, s->single, n, "one batch vs one at a time");
    zb_bert_destroy(&b);
    free(out);
}

typedef struct by_len {
    int len, index, offset;
} by_len_t;

static int s_cmp_len(const void *a, const void *b) {
    const by_len_t *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->index - y->index;
}

/* Length-sorted batches of four, as the batcher builds them. */
static void test_sorted_batches(void **st) {
    state_t *s = *st;
    assert_non_null(s->single);
    const int hidden = zb_model_config(s->model)->hidden;
    by_len_t order[40];
    for (int i = 0, o = 0; i < s->fx.n; i++) {
        order[i] = (by_len_t){s->all_len[i], i, o};
        o += s->all_len[i];
    }
    qsort(order, (size_t)s->fx.n, sizeof order[0], s_cmp_len);
    zb_bert_t *b = s_new(s->model, 4 * 512, 512, 2);
    int32_t *ids = malloc(4 * 512 * sizeof *ids);
    float *out = malloc((size_t)4 * 512 * (size_t)hidden * sizeof *out);
    assert_non_null(ids);
    assert_non_null(out);
    double worst = 0.0;
    for (int first = 0; first < s->fx.n; first += 4) {
        int lens[4], k = 0, tok = 0;
        for (; k < 4 && first + k < s->fx.n; k++) {
            const by_len_t *c = &order[first + k];
            memcpy(ids + tok, s->all_ids + c->offset, (size_t)c->len * sizeof *ids);
            lens[k] = c->len;
            tok += c->len;
        }
        assert_int_equal(zb_bert_forward(b, ids, lens, k, out), 0);
        for (int j = 0, o = 0; j < k; j++) {
            const by_len_t *c = &order[first + j];
            double e = s_max_diff(out + (size_t)o * (size_t)hidden,
                                  s->single + (size_t)c->offset * (size_t)hidden,
                                  (size_t)c->len * (size_t)hidden);
            worst = fmax(worst, e);
            s_same_bits(out + (size_t)o * (size_t)hidden,
                        s->single + (size_t)c->offset * (size_t)hidden,
                        (size_t)c->len * (size_t)hidden, "sorted batch vs alone");
            o += c->len;
        }
    }
    printf("%s: sorted batches of 4 vs one at a time: max abs diff %.3g\n", s->name, worst);
    zb_bert_destroy(&b);
    free(ids);
    free(out);
}

/* One, two and three threads agree bit for bit with each case alone
 * (test_parity, the threads sharing every operation): the whole batch,
 * whose one 512-token case leaves no even cut, and the other 39 cases in
 * length order, which run as one lane per thread. */
static void test_threads(void **st) {
    state_t *s = *st;
    assert_non_null(s->single);
    const int hidden = zb_model_config(s->model)->hidden;
    const size_t n = (size_t)s->total * (size_t)hidden;
    float *o = malloc(n * sizeof *o);
    int32_t *ids = malloc((size_t)s->total * sizeof *ids);
    int lens[40], where[40], k = 0, rows = 0;
    assert_non_null(o);
    assert_non_null(ids);
    assert_true(s->fx.n <= 40);
    /* sorted by length, as the batcher sends them: an even cut is then
     * near a short sequence */
    by_len_t order[40];
    for (int i = 0, off = 0; i < s->fx.n; off += s->all_len[i], i++)
        order[i] = (by_len_t){s->all_len[i], i, off};
    qsort(order, (size_t)s->fx.n, sizeof order[0], s_cmp_len);
    for (int i = 0; i < s->fx.n; i++) {
        if (order[i].len == 512) continue;
        memcpy(ids + rows, s->all_ids + order[i].offset, (size_t)order[i].len * sizeof *ids);
        where[k] = order[i].offset;
        lens[k++] = order[i].len;
        rows += order[i].len;
    }
    assert_int_equal(k, s->fx.n - 1);
    for (int t = 1; t <= 3; t++) {
        zb_bert_t *b = s_new(s->model, s->total, 512, t);
        assert_int_equal(zb_bert_forward(b, s->all_ids, s->all_len, s->fx.n, o), 0);
        assert_int_equal(zb_bert_last_lanes(b), 1);
        printf("%s: all 40 on %d threads vs alone: max abs diff %.3g\n", s->name, t,
               s_max_diff(o, s->single, n));
        s_same_bits(o, s->single, n, "threads, shared operations");
        assert_int_equal(zb_bert_forward(b, ids, lens, k, o), 0);
        assert_int_equal(zb_bert_last_lanes(b), t);
        for (int c = 0, r = 0; c < k; r += lens[c], c++)
            s_same_bits(o + (size_t)r * (size_t)hidden,
                        s->single + (size_t)where[c] * (size_t)hidden,
                        (size_t)lens[c] * (size_t)hidden, "threads, one lane each");
        printf("%s: 39 cases as %d lanes: bit-identical to each alone\n", s->name, t);
        zb_bert_destroy(&b);
    }
    free(o);
    free(ids);
}

/* An AVX2 node and an AVX-512 node give the same bits: the GEMM variants
 * by their definition, GELU and attention by sharing their arithmetic
 * (kernels.c).  Runs each case alone and all in lanes under both ceilings. */
static void test_isa_same_bits(void **st) {
    state_t *s = *st;
    if (!zb_kernels_isa_supported(ZB_KERNELS_AVX512) || !zb_gemm_isa_supported(ZB_GEMM_AVX512))
        skip();
    assert_non_null(s->single); /* test_parity ran, at the best variants */
    const int hidden = zb_model_config(s->model)->hidden;
    const size_t n = (size_t)s->total * (size_t)hidden;
    float *o = malloc(n * sizeof *o);
    assert_non_null(o);
    setenv("ZB_KERNELS_ISA", "avx2", 1);
    setenv("ZB_GEMM_ISA", "avx2", 1);
    zb_bert_t *b = s_new(s->model, s->total, 512, 2);
    unsetenv("ZB_KERNELS_ISA");
    unsetenv("ZB_GEMM_ISA");
    for (int i = 0, off = 0; i < s->fx.n; off += s->all_len[i], i++)
        assert_int_equal(zb_bert_forward(b, s->all_ids + off, &s->all_len[i], 1,
                                         o + (size_t)off * (size_t)hidden),
                         0);
    s_same_bits(o, s->single, n, "AVX2 vs AVX-512, each case alone");
    printf("%s: AVX2 and AVX-512 give the same bits (40 cases)\n", s->name);
    zb_bert_destroy(&b);
    free(o);
}

/* The 40 cases in reverse order, as one batch: each sequence's rows are
 * the ones it gives alone. */
static void test_reverse_order(void **st) {
    state_t *s = *st;
    assert_non_null(s->single);
    const int hidden = zb_model_config(s->model)->hidden;
    int32_t *ids = malloc((size_t)s->total * sizeof *ids);
    int *lens = malloc((size_t)s->fx.n * sizeof *lens);
    int *offs = malloc((size_t)s->fx.n * sizeof *offs);
    float *out = malloc((size_t)s->total * (size_t)hidden * sizeof *out);
    assert_non_null(ids);
    assert_non_null(lens);
    assert_non_null(offs);
    assert_non_null(out);
    for (int i = 0, o = 0; i < s->fx.n; i++) {
        offs[i] = o;
        o += s->all_len[i];
    }
    for (int j = 0, o = 0; j < s->fx.n; j++) {
        const int i = s->fx.n - 1 - j;
        memcpy(ids + o, s->all_ids + offs[i], (size_t)s->all_len[i] * sizeof *ids);
        lens[j] = s->all_len[i];
        o += lens[j];
    }
    zb_bert_t *b = s_new(s->model, s->total, 512, 2);
    assert_int_equal(zb_bert_forward(b, ids, lens, s->fx.n, out), 0);
    for (int j = 0, o = 0; j < s->fx.n; j++) {
        const int i = s->fx.n - 1 - j;
        s_same_bits(out + (size_t)o * (size_t)hidden, s->single + (size_t)offs[i] * (size_t)hidden,
                    (size_t)lens[j] * (size_t)hidden, "reverse order vs alone");
        o += lens[j];
    }
    printf("%s: 40 sequences in reverse order: bit-identical to one at a time\n", s->name);
    zb_bert_destroy(&b);
    free(ids);
    free(lens);
    free(offs);
    free(out);
}

/* The directory (packed at load) and its bundle (packed at convert time,
 * mapped) give the same bits. */
static void test_bundle_same_bits(void **st) {
    state_t *s = *st;
    assert_non_null(s->single);
    char path[64];
    snprintf(path, sizeof path, "/tmp/zb_test_bert_%d.zbm", (int)getpid());
    zb_diag_t d = {{0}};
    int rc = zb_convert_model(path, s->model, "test_bert", &d);
    if (rc != 0) fail_msg("%s", d.msg);
    zb_model_t *m = NULL;
    rc = zb_model_open(path, &m, &d);
    unlink(path); /* the mapping stays valid */
    if (rc != 0) fail_msg("%s", d.msg);
    assert_false(zb_model_packed_at_load(m));
    const int hidden = zb_model_config(m)->hidden;
    size_t n = (size_t)s->total * (size_t)hidden;
    float *out = malloc(n * sizeof *out);
    assert_non_null(out);
    zb_bert_t *b = s_new(m, s->total, 512, 2);
    assert_int_equal(zb_bert_forward(b, s->all_ids, s->all_len, s->fx.n, out), 0);
    s_same_bits(out, s->single, n, "bundle vs directory");
    zb_bert_destroy(&b);
    zb_model_close(&m);
    free(out);
}

/* A rejected batch computes nothing: out keeps its sentinel. */
static void s_expect_rejected(zb_bert_t *b, const int32_t *ids, const int *len, int n_seqs,
                              float *out, size_t n_out) {
    for (size_t i = 0; i < n_out; i++) out[i] = 12345.0f;
    assert_int_equal(zb_bert_forward(b, ids, len, n_seqs, out), ZB_EINVAL);
    for (size_t i = 0; i < n_out; i++) assert_true(out[i] == 12345.0f);
}

static void test_bad_inputs(void **st) {
    state_t *s = *st;
    const zb_config_t *c = zb_model_config(s->model);
    const int hidden = c->hidden;
    zb_bert_t *b = s_new(s->model, 16, 8, 2);
    size_t n_out = (size_t)16 * (size_t)hidden;
    float *out = malloc(n_out * sizeof *out);
    assert_non_null(out);
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = 101 + i;
    int len[17];

    /* ids: vocab_size itself, negative, and a bad id in the last sequence */
    len[0] = 4;
    ids[2] = c->vocab_size;
    s_expect_rejected(b, ids, len, 1, out, n_out);
    ids[2] = -1;
    s_expect_rejected(b, ids, len, 1, out, n_out);
    ids[2] = 103;
    len[0] = 3;
    len[1] = 5;
    ids[7] = INT32_MAX;
    s_expect_rejected(b, ids, len, 2, out, n_out);
    ids[7] = 107;

    /* sequence lengths: 0, negative, above seq_len_max, total above
     * n_tokens_max, more sequences than tokens */
    len[0] = 0;
    s_expect_rejected(b, ids, len, 1, out, n_out);
    len[0] = -3;
    s_expect_rejected(b, ids, len, 1, out, n_out);
    len[0] = 9;
    s_expect_rejected(b, ids, len, 1, out, n_out);
    len[0] = 8;
    len[1] = 8;
    len[2] = 1;
    s_expect_rejected(b, ids, len, 3, out, n_out);
    for (int i = 0; i < 17; i++) len[i] = 1;
    s_expect_rejected(b, ids, len, 17, out, n_out);
    s_expect_rejected(b, ids, len, -1, out, n_out);
    assert_int_equal(zb_bert_forward(b, NULL, len, 1, out), ZB_EINVAL);
    assert_int_equal(zb_bert_forward(b, ids, NULL, 1, out), ZB_EINVAL);
    assert_int_equal(zb_bert_forward(b, ids, len, 1, NULL), ZB_EINVAL);
    assert_int_equal(zb_bert_forward(NULL, ids, len, 1, out), ZB_EINVAL);
    /* an empty batch is nothing to do */
    assert_int_equal(zb_bert_forward(b, ids, len, 0, out), 0);

    /* the limits themselves are accepted */
    len[0] = 8;
    len[1] = 8;
    assert_int_equal(zb_bert_forward(b, ids, len, 2, out), 0);
    for (int i = 0; i < 16; i++) len[i] = 1;
    assert_int_equal(zb_bert_forward(b, ids, len, 16, out), 0);
    ids[0] = c->vocab_size - 1;
    ids[1] = 0;
    assert_int_equal(zb_bert_forward(b, ids, len, 2, out), 0);
    zb_bert_destroy(&b);
    zb_bert_destroy(&b); /* NULL-safe */
    zb_bert_destroy(NULL);
    free(out);
}

static void test_bad_new(void **st) {
    state_t *s = *st;
    const int positions = zb_model_config(s->model)->max_positions;
    static char sentinel; /* *out must be reset to NULL on failure */
    zb_bert_t *b = NULL;
    zb_diag_t d = {{0}};
    const struct {
        int n_tokens_max, seq_len_max, threads, rc;
    } bad[] = {
        {512, 0, 1, ZB_EINVAL},
        {512, positions + 1, 1, ZB_EINVAL},
        {0, 8, 1, ZB_ELIMIT},
        {ZB_BATCH_TOKENS_MAX + 1, 8, 1, ZB_ELIMIT},
        {512, 8, ZB_THREADS_MAX + 1, ZB_ELIMIT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d.msg[0] = '\0';
        b = (zb_bert_t *)(void *)&sentinel;
        int rc =
            zb_bert_new(s->model, bad[i].n_tokens_max, bad[i].seq_len_max, bad[i].threads, &b, &d);
        assert_int_equal(rc, bad[i].rc);
        assert_null(b);
        assert_true(d.msg[0] != '\0');
    }
    assert_int_equal(zb_bert_new(NULL, 8, 8, 1, &b, &d), ZB_EINVAL);
    assert_null(b);
    assert_int_equal(zb_bert_new(s->model, 8, 8, 1, NULL, &d), ZB_EINVAL);
    /* threads <= 0: the OpenMP default */
    b = s_new(s->model, 8, 8, 0);
    int32_t ids[3] = {101, 1000, 102};
    int len = 3;
    float *out = malloc((size_t)3 * (size_t)zb_bert_hidden(b) * sizeof *out);
    assert_non_null(out);
    assert_int_equal(zb_bert_forward(b, ids, &len, 1, out), 0);
    for (int i = 0; i < 3 * zb_bert_hidden(b); i++) assert_true(isfinite(out[i]));
    zb_bert_destroy(&b);
    free(out);
}

int main(void) {
    const struct CMUnitTest seed1[] = {
        cmocka_unit_test(test_parity),           cmocka_unit_test(test_packed_batch),
        cmocka_unit_test(test_sorted_batches),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_isa_same_bits),    cmocka_unit_test(test_reverse_order),
        cmocka_unit_test(test_bundle_same_bits), cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_bad_new),
    };
    const struct CMUnitTest seed2[] = {
        cmocka_unit_test(test_parity),           cmocka_unit_test(test_packed_batch),
        cmocka_unit_test(test_sorted_batches),   cmocka_unit_test(test_threads),
        cmocka_unit_test(test_isa_same_bits),    cmocka_unit_test(test_reverse_order),
        cmocka_unit_test(test_bundle_same_bits),
    };
    int fails = cmocka_run_group_tests_name("tiny-seed1", seed1, setup_seed1, teardown);
    fails +=
        cmocka_run_group_tests_name("tiny-seed2-bert-gammabeta-f16", seed2, setup_seed2, teardown);
    return fails;
}
