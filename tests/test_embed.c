/*
 * test_embed.c -- the embedding front door end to end: tokenizer, forward
 * pass, framing, truncation, windows, batching and the three output levels,
 * against the float64 reference fixtures.
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

#include "embed.h"
#include "fixture.h"
#include "model.h"

#define TOL 1e-4 /* float32 engine vs float64 reference, tiny models */

typedef struct state {
    zb_model_t *model;
    zb_embedder_t *emb;
    fx_file_t fx;
} state_t;

static int s_setup_model(void **st, const char *dir, const char *fixture, int batch_tokens) {
    state_t *s = calloc(1, sizeof *s);
    zb_diag_t d = {{0}};
    int rc = zb_model_open(fx_path(dir), &s->model, &d);
    if (rc != 0) fprintf(stderr, "open %s: %s\n", dir, zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    zb_embedder_config_t cfg = {.threads = 2, .batch_tokens_max = batch_tokens};
    rc = zb_embedder_new(s->model, &cfg, &s->emb, &d);
    if (rc != 0) fprintf(stderr, "embedder: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_int_equal(fx_load(fx_path(fixture), &s->fx), 0);
    assert_int_equal(s->fx.n, 40);
    *st = s;
    return 0;
}

static int setup_seed1(void **st) {
    return s_setup_model(st, "tiny-seed1", "embeddings-tiny-seed1.txt", 0);
}

static int setup_seed2(void **st) {
    /* a small budget forces many batches */
    return s_setup_model(st, "tiny-seed2-bert-gammabeta-f16",
                         "embeddings-tiny-seed2-bert-gammabeta-f16.txt", 600);
}

static int teardown(void **st) {
    state_t *s = *st;
    zb_embedder_destroy(&s->emb);
    assert_null(s->emb);
    zb_model_close(&s->model);
    assert_null(s->model);
    fx_free(&s->fx);
    free(s);
    return 0;
}

/* Runs every fixture text in one call. */
static zb_result_t *s_run_all(state_t *s, const zb_embed_options_t *o) {
    size_t n = (size_t)s->fx.n;
    const char **texts = malloc(n * sizeof *texts);
    size_t *lens = malloc(n * sizeof *lens);
    zb_result_t *res = calloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++) {
        texts[i] = s->fx.cases[i].text;
        lens[i] = s->fx.cases[i].text_len;
    }
    assert_int_equal(zb_embedder_run(s->emb, texts, lens, n, o, res), 0);
    free(texts);
    free(lens);
    return res;
}

static void s_free_all(state_t *s, zb_result_t *res) {
    for (int i = 0; i < s->fx.n; i++) zb_result_free(&res[i]);
    free(res);
}

static double s_maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

/* Wordpiece level: ids, offsets and every row match the reference. */
static void test_wordpiece_parity(void **st) {
    state_t *s = *st;
    zb_embed_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    zb_result_t *res = s_run_all(s, &o);
    double worst = 0;
    for (int i = 0; i < s->fx.n; i++) {
        const fx_case_t *k = &s->fx.cases[i];
        const zb_result_t *r = &res[i];
        assert_int_equal(r->status, 0);
        assert_int_equal((int)r->pieces.n, k->n_ids);
        assert_int_equal((int)r->n_vectors, k->hidden_rows);
        assert_int_equal(r->dim, k->hidden_cols);
        for (int t = 0; t < k->n_ids; t++) {
            assert_int_equal(r->pieces.v[t].id, k->ids[t]);
            assert_int_equal(r->pieces.v[t].begin, k->char_off[2 * t]);
            assert_int_equal(r->pieces.v[t].end, k->char_off[2 * t + 1]);
            assert_int_equal(r->pieces.v[t].byte_begin, k->byte_off[2 * t]);
            assert_int_equal(r->pieces.v[t].byte_end, k->byte_off[2 * t + 1]);
        }
        double m = s_maxdiff(r->vectors, k->hidden, (size_t)k->hidden_rows * k->hidden_cols);
        if (m > worst) worst = m;
        if (m > TOL) fprintf(stderr, "case %s: max abs diff %g\n", k->name, m);
        assert_true(m <= TOL);
        assert_int_equal(r->truncated, strcmp(k->name, "over_512_wordpieces") == 0);
    }
    printf("wordpiece parity: 40 cases, max abs diff %.3g\n", worst);
    s_free_all(s, res);
}

/* Sentence level: cls is row 0; mean excludes [CLS]/[SEP]; both against the
 * fixture's pooled vectors; normalisation gives unit vectors. */
static void test_sentence_pooling(void **st) {
    state_t *s = *st;
    for (int pool = 0; pool < 2; pool++) {
        zb_embed_options_t o = {.level = ZB_LEVEL_SENTENCE, .pooling = pool ? ZB_POOL_MEAN : ZB_POOL_CLS};
        zb_result_t *res = s_run_all(s, &o);
        for (int i = 0; i < s->fx.n; i++) {
            const fx_case_t *k = &s->fx.cases[i];
            assert_int_equal((int)res[i].n_vectors, 1);
            const float *want = pool ? k->pooled_mean : k->pooled_cls;
            assert_true(s_maxdiff(res[i].vectors, want, (size_t)k->hidden_cols) <= TOL);
        }
        s_free_all(s, res);
        o.normalize = true;
        res = s_run_all(s, &o);
        for (int i = 0; i < s->fx.n; i++) {
            double ss = 0;
            for (int j = 0; j < res[i].dim; j++) ss += (double)res[i].vectors[j] * res[i].vectors[j];
            const fx_case_t *k = &s->fx.cases[i];
            bool zero = pool && k->n_ids == 2; /* no wordpiece: the mean is zero */
            assert_true(fabs(ss - (zero ? 0.0 : 1.0)) < 1e-5);
        }
        s_free_all(s, res);
    }
}

/* Token level: a token whose begin coincides with one of the fixture's
 * Spark-style tokens has that token's row; every token has a first piece
 * starting inside it; tokens are in text order. */
static void test_token_level(void **st) {
    state_t *s = *st;
    zb_embed_options_t o = {.level = ZB_LEVEL_TOKEN};
    zb_result_t *res = s_run_all(s, &o);
    int checked = 0;
    for (int i = 0; i < s->fx.n; i++) {
        const fx_case_t *k = &s->fx.cases[i];
        const zb_result_t *r = &res[i];
        assert_int_equal(r->n_vectors, r->words.n);
        for (size_t w = 0; w < r->words.n; w++) {
            const zb_word_t *wd = &r->words.v[w];
            assert_true(wd->byte_begin < wd->byte_end);
            if (w) assert_true(wd->byte_begin >= r->words.v[w - 1].byte_end);
            for (int t = 0; t < k->n_tokens; t++) {
                if (k->tokens[3 * t] != wd->byte_begin) continue;
                const float *want = k->hidden + (size_t)k->tokens[3 * t + 2] * k->hidden_cols;
                assert_true(s_maxdiff(r->vectors + w * (size_t)r->dim, want,
                                      (size_t)k->hidden_cols) <= TOL);
                checked++;
            }
        }
    }
    printf("token level: %d token rows checked against the reference\n", checked);
    assert_true(checked > 300);
    s_free_all(s, res);
}

/* "I love NLP" gives three tokens with their spans. */
static void test_token_spans(void **st) {
    state_t *s = *st;
    const char *t[] = {"I love NLP", "(hello), don't U.S."};
    size_t l[] = {strlen(t[0]), strlen(t[1])};
    zb_result_t r[2] = {{0}};
    zb_embed_options_t o = {.level = ZB_LEVEL_TOKEN};
    assert_int_equal(zb_embedder_run(s->emb, t, l, 2, &o, r), 0);
    assert_int_equal(r[0].words.n, 3);
    assert_int_equal(r[0].words.v[2].begin, 7);
    assert_int_equal(r[0].words.v[2].end, 10);
    /* ( hello ) , don't U.S . */
    assert_int_equal(r[1].words.n, 7);
    assert_int_equal(r[1].words.v[4].begin, 9);
    assert_int_equal(r[1].words.v[4].end, 14);
    assert_int_equal(r[1].words.v[5].end, 18);
    zb_result_free(&r[0]);
    zb_result_free(&r[1]);
}

/* One text at a time gives the same vectors as the whole batch. */
static void test_batch_invariance(void **st) {
    state_t *s = *st;
    zb_embed_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    zb_result_t *all = s_run_all(s, &o);
    double worst = 0;
    for (int i = 0; i < s->fx.n; i++) {
        zb_result_t one = {0};
        const char *t = s->fx.cases[i].text;
        size_t l = s->fx.cases[i].text_len;
        assert_int_equal(zb_embedder_run(s->emb, &t, &l, 1, &o, &one), 0);
        assert_int_equal(one.n_vectors, all[i].n_vectors);
        double m = s_maxdiff(one.vectors, all[i].vectors, one.n_vectors * (size_t)one.dim);
        if (m > worst) worst = m;
        /* bit for bit: the service's sharding must not change a vector */
        if (memcmp(one.vectors, all[i].vectors,
                   one.n_vectors * (size_t)one.dim * sizeof *one.vectors) != 0)
            fail_msg("text %d: vectors alone differ from the batch's (max abs diff %.3g)", i, m);
        zb_result_free(&one);
    }
    printf("batch vs single: max abs diff %.3g (bit-identical)\n", worst);
    assert_true(worst == 0);
    s_free_all(s, all);
}

/* A bad text fails alone; its neighbours are embedded. */
static void test_bad_text_isolated(void **st) {
    state_t *s = *st;
    const char *t[] = {"Hello, world.", "bad \xff\xfe bytes", "I love NLP"};
    size_t l[] = {13, 13, 10};
    zb_result_t r[3] = {{0}};
    zb_embed_options_t o = {.level = ZB_LEVEL_SENTENCE};
    assert_int_equal(zb_embedder_run(s->emb, t, l, 3, &o, r), 0);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, ZB_EUTF8);
    assert_int_equal(r[1].n_vectors, 0);
    assert_int_equal(r[2].status, 0);
    assert_true(s_maxdiff(r[0].vectors, s->fx.cases[0].pooled_cls, (size_t)r[0].dim) <= TOL);
    for (int i = 0; i < 3; i++) zb_result_free(&r[i]);
}

/* Builds a text of about n_words distinct words. */
static char *s_long_text(int n_words, size_t *len) {
    static const char *w[] = {"alpha", "Beta", "gamma,", "delta.", "embedding", "zbert", "x"};
    size_t cap = (size_t)n_words * 12 + 1, n = 0;
    char *p = malloc(cap);
    for (int i = 0; i < n_words; i++)
        n += (size_t)snprintf(p + n, cap - n, "%s%s", i ? " " : "", w[i % 7]);
    *len = n;
    return p;
}

/* Windows: every wordpiece gets a row; rows of the first half-window equal a
 * truncated run's (same sequence); short texts are unaffected. */
static void test_windows(void **st) {
    state_t *s = *st;
    size_t len;
    char *text = s_long_text(700, &len);
    const char *t = text;
    zb_result_t tr = {0}, wr = {0};
    zb_embed_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    assert_int_equal(zb_embedder_run(s->emb, &t, &len, 1, &o, &tr), 0);
    assert_true(tr.truncated);
    assert_int_equal(tr.pieces.n, 512);
    assert_true(tr.n_pieces_total > 1000);
    o.windows = true;
    assert_int_equal(zb_embedder_run(s->emb, &t, &len, 1, &o, &wr), 0);
    assert_false(wr.truncated);
    assert_int_equal(wr.pieces.n, tr.n_pieces_total + 2);
    assert_int_equal(wr.n_vectors, wr.pieces.n);
    assert_true(wr.n_windows >= 3);
    size_t H = (size_t)wr.dim;
    /* pieces 1..255 sit nearest the centre of window 0 */
    assert_true(s_maxdiff(wr.vectors, tr.vectors, 256 * H) == 0);
    /* a window row differs from the truncated run's row past the first
     * window's centre (other context), but all rows are finite */
    for (size_t i = 0; i < wr.n_vectors * H; i++) assert_true(isfinite(wr.vectors[i]));
    zb_result_free(&tr);
    zb_result_free(&wr);
    free(text);

    /* short text: windows and truncation agree exactly */
    const char *sh = s->fx.cases[0].text;
    size_t shl = s->fx.cases[0].text_len;
    zb_result_t a = {0}, b = {0};
    o.windows = false;
    assert_int_equal(zb_embedder_run(s->emb, &sh, &shl, 1, &o, &a), 0);
    o.windows = true;
    assert_int_equal(zb_embedder_run(s->emb, &sh, &shl, 1, &o, &b), 0);
    assert_int_equal(b.n_windows, 1);
    assert_true(s_maxdiff(a.vectors, b.vectors, a.n_vectors * (size_t)a.dim) == 0);
    zb_result_free(&a);
    zb_result_free(&b);
}

/* Tokenize-only computes no vectors but gives the pieces. */
static void test_tokenize_only(void **st) {
    state_t *s = *st;
    zb_embed_options_t o = {.level = ZB_LEVEL_WORDPIECE, .tokenize_only = true};
    zb_result_t *res = s_run_all(s, &o);
    zb_embed_stats_t before, after;
    zb_embedder_stats(s->emb, &before);
    for (int i = 0; i < s->fx.n; i++) {
        assert_int_equal(res[i].n_vectors, 0);
        assert_int_equal((int)res[i].pieces.n, s->fx.cases[i].n_ids);
    }
    zb_embedder_stats(s->emb, &after);
    assert_int_equal(after.tokens, before.tokens);
    s_free_all(s, res);
}

int main(void) {
    const struct CMUnitTest seed1[] = {
        cmocka_unit_test(test_wordpiece_parity), cmocka_unit_test(test_sentence_pooling),
        cmocka_unit_test(test_token_level),      cmocka_unit_test(test_token_spans),
        cmocka_unit_test(test_batch_invariance), cmocka_unit_test(test_bad_text_isolated),
        cmocka_unit_test(test_windows),          cmocka_unit_test(test_tokenize_only),
    };
    const struct CMUnitTest seed2[] = {
        cmocka_unit_test(test_wordpiece_parity),
        cmocka_unit_test(test_sentence_pooling),
        cmocka_unit_test(test_token_level),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_windows),
    };
    int fails = cmocka_run_group_tests_name("embed tiny-seed1", seed1, setup_seed1, teardown);
    fails += cmocka_run_group_tests_name("embed tiny-seed2 (f16, bert. prefix, gamma/beta)", seed2,
                                         setup_seed2, teardown);
    return fails ? 1 : 0;
}
