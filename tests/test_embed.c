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

#include "bert.h"
#include "embed.h"
#include "fixture.h"
#include "model.h"
#include "sentences.h"
#include "sparknlp.h"

#define TOL 1e-4 /* float32 engine vs float64 reference, tiny models */

typedef struct state {
    zb_model_t *model;
    zb_embed_t *emb;
    fx_file_t fx;
} state_t;

static int s_setup_model(void **st, const char *dir, const char *fixture, int batch_tokens) {
    state_t *s = calloc(1, sizeof *s);
    zb_diag_t d = {{0}};
    int rc = zb_model_open(fx_path(dir), &s->model, &d);
    if (rc != 0) fprintf(stderr, "open %s: %s\n", dir, zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    zb_embed_config_t cfg = {.threads = 2, .batch_tokens_max = batch_tokens};
    rc = zb_embed_new(s->model, &cfg, &s->emb, &d);
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
    zb_embed_destroy(&s->emb);
    assert_null(s->emb);
    zb_model_close(&s->model);
    assert_null(s->model);
    fx_free(&s->fx);
    free(s);
    return 0;
}

/* Runs every fixture text in one call. */
static zb_embed_result_t *s_run_all(state_t *s, const zb_options_t *o) {
    size_t n = (size_t)s->fx.n;
    const char **texts = malloc(n * sizeof *texts);
    size_t *lens = malloc(n * sizeof *lens);
    zb_embed_result_t *res = calloc(n, sizeof *res);
    for (size_t i = 0; i < n; i++) {
        texts[i] = s->fx.cases[i].text;
        lens[i] = s->fx.cases[i].text_len;
    }
    assert_int_equal(zb_embed_run(s->emb, texts, lens, n, o, res), 0);
    free(texts);
    free(lens);
    return res;
}

static void s_free_all(state_t *s, zb_embed_result_t *res) {
    for (int i = 0; i < s->fx.n; i++) zb_embed_result_free(&res[i]);
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
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    zb_embed_result_t *res = s_run_all(s, &o);
    double worst = 0;
    for (int i = 0; i < s->fx.n; i++) {
        const fx_case_t *k = &s->fx.cases[i];
        const zb_embed_result_t *r = &res[i];
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
        zb_options_t o = {.level = ZB_LEVEL_SENTENCE,
                          .pooling = pool ? ZB_POOLING_MEAN : ZB_POOLING_CLS};
        zb_embed_result_t *res = s_run_all(s, &o);
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
            for (int j = 0; j < res[i].dim; j++)
                ss += (double)res[i].vectors[j] * res[i].vectors[j];
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
    zb_options_t o = {.level = ZB_LEVEL_TOKEN};
    zb_embed_result_t *res = s_run_all(s, &o);
    int checked = 0;
    for (int i = 0; i < s->fx.n; i++) {
        const fx_case_t *k = &s->fx.cases[i];
        const zb_embed_result_t *r = &res[i];
        assert_int_equal(r->n_vectors, r->words.n);
        for (size_t w = 0; w < r->words.n; w++) {
            const zb_tokenizer_word_t *wd = &r->words.v[w];
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
    zb_embed_result_t r[2] = {{0}};
    zb_options_t o = {.level = ZB_LEVEL_TOKEN};
    assert_int_equal(zb_embed_run(s->emb, t, l, 2, &o, r), 0);
    assert_int_equal(r[0].words.n, 3);
    assert_int_equal(r[0].words.v[2].begin, 7);
    assert_int_equal(r[0].words.v[2].end, 10);
    /* ( hello ) , don't U.S . */
    assert_int_equal(r[1].words.n, 7);
    assert_int_equal(r[1].words.v[4].begin, 9);
    assert_int_equal(r[1].words.v[4].end, 14);
    assert_int_equal(r[1].words.v[5].end, 18);
    zb_embed_result_free(&r[0]);
    zb_embed_result_free(&r[1]);
}

/* One text at a time gives the same vectors as the whole batch. */
static void test_batch_invariance(void **st) {
    state_t *s = *st;
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    zb_embed_result_t *all = s_run_all(s, &o);
    double worst = 0;
    for (int i = 0; i < s->fx.n; i++) {
        zb_embed_result_t one = {0};
        const char *t = s->fx.cases[i].text;
        size_t l = s->fx.cases[i].text_len;
        assert_int_equal(zb_embed_run(s->emb, &t, &l, 1, &o, &one), 0);
        assert_int_equal(one.n_vectors, all[i].n_vectors);
        double m = s_maxdiff(one.vectors, all[i].vectors, one.n_vectors * (size_t)one.dim);
        if (m > worst) worst = m;
        /* bit for bit: the service's sharding must not change a vector */
        if (memcmp(one.vectors, all[i].vectors,
                   one.n_vectors * (size_t)one.dim * sizeof *one.vectors) != 0)
            fail_msg("text %d: vectors alone differ from the batch's (max abs diff %.3g)", i, m);
        zb_embed_result_free(&one);
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
    zb_embed_result_t r[3] = {{0}};
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    assert_int_equal(zb_embed_run(s->emb, t, l, 3, &o, r), 0);
    assert_int_equal(r[0].status, 0);
    assert_int_equal(r[1].status, ZB_EUTF8);
    assert_int_equal(r[1].n_vectors, 0);
    assert_int_equal(r[2].status, 0);
    assert_true(s_maxdiff(r[0].vectors, s->fx.cases[0].pooled_cls, (size_t)r[0].dim) <= TOL);
    for (int i = 0; i < 3; i++) zb_embed_result_free(&r[i]);
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
    zb_embed_result_t tr = {0}, wr = {0};
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    assert_int_equal(zb_embed_run(s->emb, &t, &len, 1, &o, &tr), 0);
    assert_true(tr.truncated);
    assert_int_equal(tr.pieces.n, 512);
    assert_true(tr.n_pieces_total > 1000);
    o.windows = true;
    assert_int_equal(zb_embed_run(s->emb, &t, &len, 1, &o, &wr), 0);
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
    zb_embed_result_free(&tr);
    zb_embed_result_free(&wr);
    free(text);

    /* short text: windows and truncation agree exactly */
    const char *sh = s->fx.cases[0].text;
    size_t shl = s->fx.cases[0].text_len;
    zb_embed_result_t a = {0}, b = {0};
    o.windows = false;
    assert_int_equal(zb_embed_run(s->emb, &sh, &shl, 1, &o, &a), 0);
    o.windows = true;
    assert_int_equal(zb_embed_run(s->emb, &sh, &shl, 1, &o, &b), 0);
    assert_int_equal(b.n_windows, 1);
    assert_true(s_maxdiff(a.vectors, b.vectors, a.n_vectors * (size_t)a.dim) == 0);
    zb_embed_result_free(&a);
    zb_embed_result_free(&b);
}

/* Tokenize-only computes no vectors but gives the pieces. */
static void test_tokenize_only(void **st) {
    state_t *s = *st;
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE, .tokenize_only = true};
    zb_embed_result_t *res = s_run_all(s, &o);
    zb_embed_stats_t before, after;
    zb_embed_stats(s->emb, &before);
    for (int i = 0; i < s->fx.n; i++) {
        assert_int_equal(res[i].n_vectors, 0);
        assert_int_equal((int)res[i].pieces.n, s->fx.cases[i].n_ids);
    }
    zb_embed_stats(s->emb, &after);
    assert_int_equal(after.tokens, before.tokens);
    s_free_all(s, res);
}

/* Runs one text; asserts success. */
static void s_run1(state_t *s, const char *t, const zb_options_t *o, zb_embed_result_t *r) {
    size_t l = strlen(t);
    assert_int_equal(zb_embed_run(s->emb, &t, &l, 1, o, r), 0);
    assert_int_equal(r->status, 0);
}

/* --sentences: one sequence per sentence; each token's vector is the row it
 * gets when its sentence is embedded alone, and every token has one. */
static void test_sentences(void **st) {
    state_t *s = *st;
    const char *text = "Hello world. This is a test!  The U.S. Army is here.\n\n"
                       "Caf\xc3\xa9 \xf0\x9f\x98\x80 ok. world.Today we go";
    zb_options_t o = {.level = ZB_LEVEL_TOKEN, .sentences = true, .windows = true};
    zb_embed_result_t r = {0};
    s_run1(s, text, &o, &r);
    zb_sentences_spans_t sp = {0};
    assert_int_equal(zb_sentences_split(text, strlen(text), &sp), 0);
    assert_true(sp.n >= 4);
    assert_int_equal(r.n_sentences, sp.n);
    assert_non_null(r.meta);
    zb_tokenizer_words_t w = {0};
    size_t at = 0;
    for (size_t k = 0; k < sp.n; k++) {
        const char *sub = text + sp.v[k].byte_begin;
        size_t sl = sp.v[k].byte_end - sp.v[k].byte_begin;
        assert_int_equal(zb_tokenizer_split_words(sub, sl, &w), 0);
        /* the sentence alone, as a text of its own */
        char *copy = strndup(sub, sl);
        zb_options_t one = {.level = ZB_LEVEL_TOKEN};
        zb_embed_result_t alone = {0};
        s_run1(s, copy, &one, &alone);
        assert_int_equal(alone.words.n, w.n);
        for (size_t i = 0; i < w.n; i++, at++) {
            assert_true(at < r.words.n);
            assert_int_equal(r.meta[at].sentence, k);
            assert_false(r.meta[at].oov);
            assert_true(r.meta[at].word_start);
            assert_int_equal(r.words.v[at].byte_begin, w.v[i].byte_begin + sp.v[k].byte_begin);
            assert_int_equal(r.words.v[at].begin, w.v[i].begin + sp.v[k].begin);
            /* bit for bit: rows do not depend on their batch */
            assert_memory_equal(r.vectors + at * (size_t)r.dim,
                                alone.vectors + i * (size_t)alone.dim,
                                (size_t)r.dim * sizeof *r.vectors);
        }
        zb_embed_result_free(&alone);
        free(copy);
    }
    assert_int_equal(at, r.words.n); /* every token, none twice */
    /* UTF-16 spans: the emoji counts two units */
    for (size_t i = 0; i < r.words.n; i++) {
        const zb_tokenizer_word_t *x = &r.words.v[i];
        if (strncmp(text + x->byte_begin, "ok", 2) == 0) {
            assert_int_equal(r.meta[i].begin16, (int32_t)x->begin + 1);
            assert_int_equal(r.meta[i].end16, (int32_t)x->end);
        }
        if (x->begin < 10) assert_int_equal(r.meta[i].begin16, (int32_t)x->begin);
    }
    zb_tokenizer_words_free(&w);
    zb_sentences_spans_free(&sp);
    zb_embed_result_free(&r);
}

/* A sentence longer than the model's positions: windows, every token gets
 * a vector, the same as the whole-text windows mode (one sentence). */
static void test_sentences_long(void **st) {
    state_t *s = *st;
    size_t n = 700;
    char *text = malloc(n * 13 + 2);
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        at += (size_t)sprintf(text + at, "%s ", i % 3 ? "word" : "unbelievable");
    text[at - 1] = '.';
    text[at] = '\0';
    zb_options_t o = {.level = ZB_LEVEL_TOKEN, .sentences = true, .windows = true};
    zb_embed_result_t r = {0}, ref = {0};
    s_run1(s, text, &o, &r);
    assert_int_equal(r.n_sentences, 1);
    assert_false(r.truncated);
    assert_true(r.n_windows > 1);
    assert_int_equal(r.words.n, n + 1); /* 700 words and the final "." */
    zb_options_t w = {.level = ZB_LEVEL_TOKEN, .windows = true};
    s_run1(s, text, &w, &ref);
    assert_int_equal(ref.words.n, r.words.n);
    assert_memory_equal(r.vectors, ref.vectors, r.words.n * (size_t)r.dim * sizeof *r.vectors);
    /* explicit truncation drops the tail and says so */
    zb_options_t t = {.level = ZB_LEVEL_TOKEN, .sentences = true};
    zb_embed_result_t tr = {0};
    s_run1(s, text, &t, &tr);
    assert_true(tr.truncated);
    assert_true(tr.words.n < n);
    zb_embed_result_free(&tr);
    zb_embed_result_free(&ref);
    zb_embed_result_free(&r);
    free(text);
}

/* --token-vector mean: the mean of the token's wordpiece rows. */
static void test_token_vector_mean(void **st) {
    state_t *s = *st;
    const char *text = "unbelievable Johanson's house, NLP";
    zb_options_t o = {
        .level = ZB_LEVEL_TOKEN, .token_vector = ZB_TOKEN_VECTOR_MEAN, .token_meta = true};
    zb_options_t wp = {.level = ZB_LEVEL_WORDPIECE};
    zb_embed_result_t r = {0}, p = {0};
    s_run1(s, text, &o, &r);
    s_run1(s, text, &wp, &p);
    size_t H = (size_t)r.dim;
    int multi = 0;
    for (size_t i = 0; i < r.words.n; i++) {
        const zb_tokenizer_word_t *w = &r.words.v[i];
        double worst = 0;
        size_t cnt = 0;
        for (size_t j = 0; j < H; j++) {
            double sum = 0;
            cnt = 0;
            for (size_t q = 1; q + 1 < p.pieces.n; q++)
                if (p.pieces.v[q].byte_begin >= w->byte_begin &&
                    p.pieces.v[q].byte_begin < w->byte_end) {
                    sum += p.vectors[q * H + j];
                    cnt++;
                }
            assert_true(cnt >= 1);
            worst = fmax(worst, fabs(sum / (double)cnt - r.vectors[i * H + j]));
        }
        assert_true(worst < 1e-6);
        multi += cnt > 1;
        assert_int_equal(r.meta[i].sentence, 0);
    }
    assert_true(multi >= 2); /* unbelievable, Johanson: several pieces */
    zb_embed_result_free(&r);
    zb_embed_result_free(&p);
}

/* Spark NLP compatibility end to end on the tiny model: the structure is
 * the port's (engine/sparknlp.c), and every vector is the row of a plain
 * encoder run (tanh GELU) on the same fed ids. */
static void test_compat_sparknlp(void **st) {
    state_t *s = *st;
    char long_text[1024];
    size_t at = 0;
    for (int i = 0; i < 130; i++) at += (size_t)sprintf(long_text + at, "word ");
    sprintf(long_text + at - 1, ".");
    const char *texts[] = {"I love NLP",
                           "I don't like the e-mail from the U.S. government.",
                           "He paid $10 (hello), then left... What?",
                           long_text,
                           "Caf\xc3\xa9 au lait costs \xe2\x82\xac"
                           "3.50; it's na\xc3\xafve.",
                           "\xef\xac\xb1\xef\xac\xb1 x y",
                           ""};
    size_t n = sizeof texts / sizeof *texts;
    size_t lens[8];
    for (size_t i = 0; i < n; i++) lens[i] = strlen(texts[i]);
    zb_options_t o = {.level = ZB_LEVEL_TOKEN, .compat = ZB_COMPAT_SPARKNLP};
    zb_embed_result_t r[8];
    memset(r, 0, sizeof r);
    assert_int_equal(zb_embed_run(s->emb, texts, lens, n, &o, r), 0);

    zb_bert_t *bert = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_bert_new(s->model, 512, 512, 2, &bert, &d), 0);
    zb_sparknlp_doc_t doc = {0};
    const int H = r[0].dim;
    float *rows = malloc(sizeof *rows * 512 * (size_t)H);
    float *rows_erf = malloc(sizeof *rows_erf * 512 * (size_t)H);
    int n_sep = 0, n_twice = 0;
    double erf_gap = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(r[i].status, 0);
        assert_int_equal(
            zb_sparknlp_analyze(zb_embed_tokenizer(s->emb), true, texts[i], lens[i], &doc), 0);
        assert_int_equal(r[i].words.n, doc.n_vectors);
        assert_int_equal(r[i].n_vectors, doc.n_vectors);
        assert_int_equal(r[i].n_sentences, doc.n_sentences);
        for (size_t k = 0; k < doc.n_sentences; k++) {
            int len = (int)(doc.seq_off[k + 1] - doc.seq_off[k]);
            const int32_t *ids = doc.ids + doc.seq_off[k];
            zb_bert_set_gelu(bert, ZB_BERT_GELU_TANH);
            assert_int_equal(zb_bert_forward(bert, ids, &len, 1, rows), 0);
            zb_bert_set_gelu(bert, ZB_BERT_GELU_ERF);
            assert_int_equal(zb_bert_forward(bert, ids, &len, 1, rows_erf), 0);
            for (size_t a = 0; a < doc.n_vectors; a++) {
                const zb_sparknlp_vector_t *v = &doc.vectors[a];
                const zb_sparknlp_token_t *t = &doc.tokens[v->token];
                if (t->sentence != k) continue;
                const zb_token_meta_t *m = &r[i].meta[a];
                assert_int_equal(m->sentence, k);
                assert_int_equal(m->row, v->row);
                assert_int_equal(m->piece_id, v->piece_id);
                assert_int_equal(m->word_start, v->word_start);
                assert_int_equal(m->begin16, t->span.begin16);
                assert_int_equal(m->end16, t->span.end16);
                assert_false(m->oov);
                assert_int_equal(r[i].words.v[a].begin, t->span.begin);
                assert_int_equal(r[i].words.v[a].byte_end, t->span.byte_end);
                const float *got = r[i].vectors + a * (size_t)H;
                double diff = s_maxdiff(got, rows + (size_t)v->row * (size_t)H, (size_t)H);
                if (diff > 1e-5) fail_msg("text %zu vector %zu: %g from the plain run", i, a, diff);
                erf_gap =
                    fmax(erf_gap, s_maxdiff(got, rows_erf + (size_t)v->row * (size_t)H, (size_t)H));
                if (v->row_is_sep) {
                    n_sep++;
                    assert_int_equal(v->row, (uint32_t)len - 1); /* the [SEP] row */
                }
                n_twice += !v->word_start;
            }
        }
    }
    assert_int_equal(r[0].words.n, 3);
    assert_int_equal(r[3].words.n, 127); /* 131 tokens, 127 vectors */
    assert_int_equal(n_sep, 1);
    assert_int_equal(n_twice, 1);
    assert_int_equal(r[6].words.n, 0);
    /* the tanh GELU is in use: the erf run differs */
    printf("compat: tanh vs erf GELU rows differ by up to %.3g\n", erf_gap);
    assert_true(erf_gap > 1e-7);
    free(rows);
    free(rows_erf);
    zb_sparknlp_doc_free(&doc);
    zb_bert_destroy(&bert);
    for (size_t i = 0; i < n; i++) zb_embed_result_free(&r[i]);

    /* a text Spark would misplace fails alone, with a reason */
    const char *bad[] = {"a\xe2\x95\x94"
                         "b",
                         "fine."};
    size_t bl[] = {strlen(bad[0]), strlen(bad[1])};
    zb_embed_result_t br[2] = {{0}};
    assert_int_equal(zb_embed_run(s->emb, bad, bl, 2, &o, br), 0);
    assert_int_equal(br[0].status, ZB_EUNSUPPORTED);
    assert_non_null(strstr(br[0].detail, "sentence detector"));
    assert_int_equal(br[1].status, 0);
    assert_int_equal(br[1].words.n, 2);
    zb_embed_result_free(&br[0]);
    zb_embed_result_free(&br[1]);
    /* compat is a token-level mode */
    zb_options_t bad_o = {.level = ZB_LEVEL_SENTENCE, .compat = ZB_COMPAT_SPARKNLP};
    assert_int_equal(zb_embed_run(s->emb, bad, bl, 1, &bad_o, br), ZB_EINVAL);
}

int main(void) {
    const struct CMUnitTest seed1[] = {
        cmocka_unit_test(test_wordpiece_parity),  cmocka_unit_test(test_sentence_pooling),
        cmocka_unit_test(test_token_level),       cmocka_unit_test(test_token_spans),
        cmocka_unit_test(test_batch_invariance),  cmocka_unit_test(test_bad_text_isolated),
        cmocka_unit_test(test_windows),           cmocka_unit_test(test_tokenize_only),
        cmocka_unit_test(test_sentences),         cmocka_unit_test(test_sentences_long),
        cmocka_unit_test(test_token_vector_mean), cmocka_unit_test(test_compat_sparknlp),
    };
    const struct CMUnitTest seed2[] = {
        cmocka_unit_test(test_wordpiece_parity), cmocka_unit_test(test_sentence_pooling),
        cmocka_unit_test(test_token_level),      cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_windows),
    };
    int fails = cmocka_run_group_tests_name("embed tiny-seed1", seed1, setup_seed1, teardown);
    fails += cmocka_run_group_tests_name("embed tiny-seed2 (f16, bert. prefix, gamma/beta)", seed2,
                                         setup_seed2, teardown);
    return fails ? 1 : 0;
}
