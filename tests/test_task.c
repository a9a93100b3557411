/*
 * test_task.c -- tasks through worker/task: every result is decoded back
 * with the protocol's own decoder and compared with zb_embed_run() on the
 * same texts: rows, offsets, ids, truncation and per-text errors identical,
 * vectors bit for bit, token metadata included (sentences, mean token
 * vectors, Spark NLP compatibility; a text Spark would misplace fails with
 * the engine's sentence).  Also the tokens a result reports, merged runs,
 * the exact body-size limit (texts failed as too_large, biggest first, only as
 * many as needed), the all-failed result and bad arguments.
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
#include "msg.h"
#include "model.h"
#include "result_check.h"
#include "task.h"

#define S_MAX_TEXTS 64

typedef struct state {
    zb_model_t *model;
    zb_embed_t *emb;
    fx_file_t fx;
    /* the texts of the main task */
    const char *texts[S_MAX_TEXTS];
    size_t lens[S_MAX_TEXTS];
    size_t n;
    char *long_text; /* > 512 pieces: truncated, or windows */
} state_t;

/* A text of n_words words, some split into several pieces. */
static char *s_long_text(int n_words, size_t *len) {
    static const char *w[] = {"alpha", "Embeddings", "gamma,",          "delta.", "tokenization",
                              "zbert", "x",          "(parenthesised)", "café"};
    size_t cap = (size_t)n_words * 20 + 1, n = 0;
    char *p = malloc(cap);
    assert_non_null(p);
    for (int i = 0; i < n_words; i++)
        n += (size_t)snprintf(p + n, cap - n, "%s%s", i ? " " : "", w[i % 9]);
    *len = n;
    return p;
}

static int setup(void **st) {
    state_t *s = calloc(1, sizeof *s);
    zb_diag_t d = {{0}};
    int rc = zb_model_open(fx_path("tiny-seed1"), &s->model, &d);
    if (rc != 0) fprintf(stderr, "open: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    zb_embed_config_t cfg = {.threads = 2};
    assert_int_equal(zb_embed_new(s->model, &cfg, &s->emb, &d), 0);
    assert_int_equal(fx_load(fx_path("embeddings-tiny-seed1.txt"), &s->fx), 0);
    /* 20 fixture texts, then the hard cases */
    for (int i = 0; i < 20 && i < s->fx.n; i++) {
        s->texts[s->n] = s->fx.cases[i].text;
        s->lens[s->n++] = s->fx.cases[i].text_len;
    }
    assert_int_equal(s->n, 20);
    s->texts[s->n] = "bad \xff\xfe bytes";
    s->lens[s->n++] = 13;
    s->texts[s->n] = "";
    s->lens[s->n++] = 0;
    s->texts[s->n] = "   ";
    s->lens[s->n++] = 3;
    s->long_text = s_long_text(700, &s->lens[s->n]);
    s->texts[s->n++] = s->long_text;
    s->texts[s->n] = "caf\xc3"; /* truncated UTF-8 sequence */
    s->lens[s->n++] = 4;
    s->texts[s->n] = "I love NLP";
    s->lens[s->n++] = 10;
    *st = s;
    return 0;
}

static int teardown(void **st) {
    state_t *s = *st;
    zb_embed_destroy(&s->emb);
    zb_model_close(&s->model);
    fx_free(&s->fx);
    free(s->long_text);
    free(s);
    return 0;
}

/* --- helpers --------------------------------------------------------------- */

/* A task as the worker gets it: encoded, then decoded from the bytes.  The
 * decoded message points into *body (the caller frees both).  Its epoch is
 * S_EPOCH(shard), which its result must echo. */
#define S_EPOCH(shard) ((uint64_t)(shard)*65537u + 3u)
static void s_task(uint64_t shard, const char *const *texts, const size_t *lens, size_t n,
                   const zb_options_t *o, uint8_t **body, zb_msg_t *m) {
    zb_msg_str_t *v = calloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (zb_msg_str_t){texts[i], lens[i]};
    zb_msg_task_t t = {
        .shard = shard, .epoch = S_EPOCH(shard), .texts = v, .n_texts = n, .opt = *o};
    size_t len;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_msg_encode_task(&t, body, &len, &d), 0);
    free(v);
    memset(m, 0, sizeof *m);
    assert_int_equal(zb_msg_decode(*body, len, m, &d), 0);
    assert_int_equal(m->type, ZB_MSG_TASK);
}

static void s_free_results(zb_embed_result_t *r, size_t n) {
    for (size_t i = 0; i < n; i++) zb_embed_result_free(&r[i]);
}

/* Runs texts through the shard as one task and through the engine
 * directly; compares; returns the result's body length. */
static size_t s_check_task(state_t *s, zb_task_t *sh, const zb_options_t *o,
                           const char *const *texts, const size_t *lens, size_t n,
                           const bool *cut) {
    uint8_t *tb;
    zb_msg_t tm;
    s_task(42, texts, lens, n, o, &tb, &tm);
    const zb_msg_task_t *tp = &tm.u.task;
    zb_task_out_t out;
    zb_diag_t d = {{0}};
    zb_embed_stats_t st0, st1;
    zb_embed_stats(s->emb, &st0);
    int rc = zb_task_run(sh, &tp, 1, &out, &d);
    zb_embed_stats(s->emb, &st1);
    if (rc != 0) fprintf(stderr, "shard: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_non_null(out.body);
    assert_int_equal(out.n_texts, n);
    assert_int_equal(out.tokens, st1.tokens - st0.tokens);

    zb_embed_result_t ref[S_MAX_TEXTS] = {{0}};
    assert_true(n <= S_MAX_TEXTS);
    assert_int_equal(zb_embed_run(s->emb, texts, lens, n, o, ref), 0);

    zb_msg_t rm = {0};
    rc = zb_msg_decode(out.body, out.body_len, &rm, &d);
    if (rc != 0) fprintf(stderr, "decode: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_int_equal(rm.type, ZB_MSG_RESULT);
    assert_int_equal(rm.u.result.shard, 42);
    assert_int_equal(rm.u.result.epoch, S_EPOCH(42));
    assert_int_equal(rm.u.result.tokens, out.tokens);
    rc_compare(&rm.u.result.vec, 0, ref, n, o, cut, zb_embed_dim(s->emb), 0, NULL);
    size_t n_failed = 0;
    for (size_t i = 0; i < n; i++) n_failed += ref[i].status != 0 || (cut && cut[i]);
    assert_int_equal(out.n_failed, n_failed);
    size_t len = out.body_len;
    zb_msg_free(&rm);
    free(out.body);
    zb_msg_free(&tm);
    free(tb);
    s_free_results(ref, n);
    return len;
}

/* --- tests ------------------------------------------------------------------ */

/* Every level and option: identical to the engine run directly. */
static void test_levels_identical(void **st) {
    state_t *s = *st;
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    const zb_options_t opts[] = {
        {.level = ZB_LEVEL_TOKEN},
        {.level = ZB_LEVEL_TOKEN, .normalize = true},
        {.level = ZB_LEVEL_TOKEN, .windows = true},
        {.level = ZB_LEVEL_WORDPIECE},
        {.level = ZB_LEVEL_WORDPIECE, .windows = true, .normalize = true},
        {.level = ZB_LEVEL_SENTENCE},
        {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOLING_MEAN},
        {.level = ZB_LEVEL_SENTENCE,
         .pooling = ZB_POOLING_MEAN,
         .normalize = true,
         .windows = true},
    };
    for (size_t k = 0; k < sizeof opts / sizeof *opts; k++)
        s_check_task(s, sh, &opts[k], s->texts, s->lens, s->n, NULL);
    zb_task_destroy(&sh);
    assert_null(sh);
    zb_task_destroy(&sh); /* NULL-safe */
}

/* The later options: sentences, mean token vectors, Spark NLP
 * compatibility and token metadata, identical to the engine run directly
 * (metadata included); a text Spark NLP would misplace fails alone with
 * code unsupported and the engine's sentence. */
static void test_token_options(void **st) {
    state_t *s = *st;
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    const zb_options_t opts[] = {
        {.level = ZB_LEVEL_TOKEN, .sentences = true, .windows = true},
        {.level = ZB_LEVEL_TOKEN, .sentences = true, .token_vector = ZB_TOKEN_VECTOR_MEAN},
        {.level = ZB_LEVEL_TOKEN, .token_meta = true, .windows = true},
        {.level = ZB_LEVEL_TOKEN, .token_vector = ZB_TOKEN_VECTOR_MEAN, .normalize = true},
        {.level = ZB_LEVEL_TOKEN, .compat = ZB_COMPAT_SPARKNLP},
        {.level = ZB_LEVEL_TOKEN,
         .compat = ZB_COMPAT_SPARKNLP,
         .sentences = true,
         .token_meta = true},
        {.level = ZB_LEVEL_WORDPIECE, .sentences = true},
        {.level = ZB_LEVEL_WORDPIECE, .sentences = true, .windows = true},
    };
    for (size_t k = 0; k < sizeof opts / sizeof *opts; k++)
        s_check_task(s, sh, &opts[k], s->texts, s->lens, s->n, NULL);

    /* U+2554 is one of the characters Spark's detector rewrites: refused */
    const char *t[] = {"abc\xe2\x95\x94 x. Y", "I love NLP"};
    size_t l[] = {strlen(t[0]), strlen(t[1])};
    zb_options_t o = {.level = ZB_LEVEL_TOKEN, .compat = ZB_COMPAT_SPARKNLP};
    s_check_task(s, sh, &o, t, l, 2, NULL);
    uint8_t *tb;
    zb_msg_t tm;
    s_task(8, t, l, 2, &o, &tb, &tm);
    const zb_msg_task_t *tp = &tm.u.task;
    zb_task_out_t out;
    assert_int_equal(zb_task_run(sh, &tp, 1, &out, NULL), 0);
    zb_msg_t rm = {0};
    assert_int_equal(zb_msg_decode(out.body, out.body_len, &rm, NULL), 0);
    const zb_msg_vectors_t *v = &rm.u.result.vec;
    assert_true(v->token_meta);
    assert_int_equal(v->n_errors, 1);
    assert_int_equal(v->errors[0].code, ZB_MSG_CODE_UNSUPPORTED);
    const char *generic = zb_strerror(ZB_EUNSUPPORTED);
    assert_true(v->errors[0].message.len > 0);
    assert_false(v->errors[0].message.len == strlen(generic) &&
                 memcmp(v->errors[0].message.ptr, generic, v->errors[0].message.len) == 0);
    assert_int_equal(v->rows[1], 3);
    assert_int_equal(v->meta[0].piece_id, 146); /* I */
    assert_true(v->meta[0].word_start);
    assert_false(v->meta[0].oov);
    zb_msg_free(&rm);
    free(out.body);
    zb_msg_free(&tm);
    free(tb);

    /* tasks with different later options are not merged */
    zb_options_t a = {.level = ZB_LEVEL_TOKEN}, b = a;
    assert_true(zb_task_same_options(&a, &b));
    b.sentences = true;
    assert_false(zb_task_same_options(&a, &b));
    b = a;
    b.token_vector = ZB_TOKEN_VECTOR_MEAN;
    assert_false(zb_task_same_options(&a, &b));
    b = a;
    b.compat = ZB_COMPAT_SPARKNLP;
    assert_false(zb_task_same_options(&a, &b));
    b = a;
    b.token_meta = true;
    assert_false(zb_task_same_options(&a, &b));
    /* the engine runs a task with its options as decoded (one type, no
     * conversion): the later ones arrive intact */
    b = (zb_options_t){.level = ZB_LEVEL_TOKEN,
                       .sentences = true,
                       .token_vector = ZB_TOKEN_VECTOR_MEAN,
                       .compat = ZB_COMPAT_SPARKNLP,
                       .token_meta = true};
    s_task(9, t, l, 2, &b, &tb, &tm);
    const zb_options_t *eo = &tm.u.task.opt;
    assert_true(eo->sentences && eo->token_meta);
    assert_int_equal(eo->token_vector, ZB_TOKEN_VECTOR_MEAN);
    assert_int_equal(eo->compat, ZB_COMPAT_SPARKNLP);
    assert_false(eo->tokenize_only);
    assert_true(zb_task_same_options(eo, &b));
    zb_msg_free(&tm);
    free(tb);
    zb_task_destroy(&sh);
}

/* The hard cases come out as the protocol says. */
static void test_text_cases(void **st) {
    state_t *s = *st;
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    const char *t[] = {"", "bad \xff", "I love NLP", s->long_text};
    size_t l[] = {0, 5, 10, s->lens[23]};
    assert_ptr_equal(s->texts[23], s->long_text);
    const zb_level_t levels[] = {ZB_LEVEL_TOKEN, ZB_LEVEL_WORDPIECE, ZB_LEVEL_SENTENCE};
    const uint32_t empty_rows[] = {0, 2, 1}; /* no token; [CLS][SEP]; one vector */
    for (int k = 0; k < 3; k++) {
        zb_options_t o = {.level = levels[k]};
        uint8_t *tb;
        zb_msg_t tm;
        s_task(7, t, l, 4, &o, &tb, &tm);
        const zb_msg_task_t *tp = &tm.u.task;
        zb_task_out_t out;
        assert_int_equal(zb_task_run(sh, &tp, 1, &out, NULL), 0);
        zb_msg_t rm = {0};
        assert_int_equal(zb_msg_decode(out.body, out.body_len, &rm, NULL), 0);
        const zb_msg_vectors_t *v = &rm.u.result.vec;
        assert_int_equal(v->rows[0], empty_rows[k]);
        assert_int_equal(v->rows[1], 0);
        assert_int_equal(v->n_errors, 1);
        assert_int_equal(v->errors[0].index, 1);
        assert_int_equal(v->errors[0].code, ZB_MSG_CODE_BAD_UTF8);
        assert_int_equal(v->errors[0].message.len, strlen("invalid UTF-8"));
        assert_memory_equal(v->errors[0].message.ptr, "invalid UTF-8", 13);
        assert_int_equal(v->n_truncated, 1); /* the long text, without windows */
        assert_int_equal(v->truncated[0], 3);
        if (levels[k] == ZB_LEVEL_WORDPIECE) assert_int_equal(v->rows[3], 512);
        assert_int_equal(out.n_failed, 1);
        assert_int_equal(out.n_cut, 0);
        zb_msg_free(&rm);
        free(out.body);
        zb_msg_free(&tm);
        free(tb);
    }
    zb_task_destroy(&sh);
}

/* Several tasks in one run: each result is its own texts', bit-identical to
 * the engine run over the same concatenated texts; tokens split exactly. */
static void test_merged(void **st) {
    state_t *s = *st;
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    const zb_options_t opts[] = {{.level = ZB_LEVEL_WORDPIECE, .windows = true},
                                 {.level = ZB_LEVEL_TOKEN},
                                 {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOLING_MEAN}};
    const size_t cuts[] = {0, 9, 21, s->n}; /* three tasks */
    for (size_t k = 0; k < 3; k++) {
        const zb_options_t *o = &opts[k];
        uint8_t *tb[3];
        zb_msg_t tm[3];
        const zb_msg_task_t *tp[3];
        uint64_t alone_tokens[3];
        for (int i = 0; i < 3; i++) {
            s_task(100 + (uint64_t)i, s->texts + cuts[i], s->lens + cuts[i], cuts[i + 1] - cuts[i],
                   o, &tb[i], &tm[i]);
            tp[i] = &tm[i].u.task;
            /* tokens do not depend on batching: a run of the task alone */
            zb_embed_result_t r[S_MAX_TEXTS] = {{0}};
            zb_embed_stats_t a, b;
            zb_embed_stats(s->emb, &a);
            assert_int_equal(zb_embed_run(s->emb, s->texts + cuts[i], s->lens + cuts[i],
                                          cuts[i + 1] - cuts[i], o, r),
                             0);
            zb_embed_stats(s->emb, &b);
            alone_tokens[i] = b.tokens - a.tokens;
            s_free_results(r, cuts[i + 1] - cuts[i]);
        }
        zb_task_out_t out[3];
        zb_embed_stats_t st0, st1;
        zb_embed_stats(s->emb, &st0);
        assert_int_equal(zb_task_run(sh, tp, 3, out, NULL), 0);
        zb_embed_stats(s->emb, &st1);
        assert_int_equal(st1.texts - st0.texts, s->n); /* one call for the three */

        zb_embed_result_t ref[S_MAX_TEXTS] = {{0}};
        assert_int_equal(zb_embed_run(s->emb, s->texts, s->lens, s->n, o, ref), 0);
        uint64_t sum = 0;
        for (int i = 0; i < 3; i++) {
            zb_msg_t rm = {0};
            assert_int_equal(zb_msg_decode(out[i].body, out[i].body_len, &rm, NULL), 0);
            assert_int_equal(rm.u.result.shard, 100 + (uint64_t)i);
            assert_int_equal(rm.u.result.epoch, S_EPOCH(100 + (uint64_t)i));
            assert_int_equal(rm.u.result.tokens, alone_tokens[i]);
            rc_compare(&rm.u.result.vec, 0, ref + cuts[i], cuts[i + 1] - cuts[i], o, NULL,
                       zb_embed_dim(s->emb), 0, NULL);
            sum += out[i].tokens;
            zb_msg_free(&rm);
            free(out[i].body);
            zb_msg_free(&tm[i]);
            free(tb[i]);
        }
        assert_int_equal(sum, st1.tokens - st0.tokens);
        s_free_results(ref, s->n);
    }
    zb_task_destroy(&sh);
}

/* Body limit: lowering it one byte below a result's size fails exactly the
 * text with the most rows; the size the result then has is accepted as a
 * limit without another cut (the sizing is exact, not an estimate). */
static void test_too_large(void **st) {
    state_t *s = *st;
    const zb_options_t opts[] = {{.level = ZB_LEVEL_WORDPIECE, .windows = true},
                                 {.level = ZB_LEVEL_WORDPIECE},
                                 {.level = ZB_LEVEL_TOKEN},
                                 {.level = ZB_LEVEL_SENTENCE}};
    for (size_t k = 0; k < sizeof opts / sizeof *opts; k++) {
        const zb_options_t *o = &opts[k];
        zb_task_t *sh = NULL;
        assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
        size_t len = s_check_task(s, sh, o, s->texts, s->lens, s->n, NULL);
        zb_task_destroy(&sh);

        /* rows of each text, to know which should go first */
        zb_embed_result_t ref[S_MAX_TEXTS] = {{0}};
        assert_int_equal(zb_embed_run(s->emb, s->texts, s->lens, s->n, o, ref), 0);
        bool cut[S_MAX_TEXTS] = {0};
        for (int step = 0; step < 3; step++) {
            /* the next victim: most rows, lowest index among equals */
            int victim = -1;
            for (size_t i = 0; i < s->n; i++)
                if (ref[i].status == 0 && !cut[i] && ref[i].n_vectors > 0 &&
                    (victim < 0 || ref[i].n_vectors > ref[victim].n_vectors))
                    victim = (int)i;
            assert_true(victim >= 0);
            cut[victim] = true;
            zb_task_config_t cfg = {.body_max = len - 1};
            assert_int_equal(zb_task_new(s->emb, &cfg, &sh, NULL), 0);
            size_t len2 = s_check_task(s, sh, o, s->texts, s->lens, s->n, cut);
            assert_true(len2 <= len - 1);
            zb_task_destroy(&sh);
            /* exactly at its own size: nothing more is cut */
            cfg.body_max = len2;
            assert_int_equal(zb_task_new(s->emb, &cfg, &sh, NULL), 0);
            assert_int_equal(s_check_task(s, sh, o, s->texts, s->lens, s->n, cut), len2);
            zb_task_destroy(&sh);
            len = len2;
        }
        s_free_results(ref, s->n);
    }
}

/* The truncated flag of a text cut for size goes with it. */
static void test_cut_truncated(void **st) {
    state_t *s = *st;
    const char *t[] = {"I love NLP", s->long_text};
    size_t l[] = {10, s->lens[23]};
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    size_t len = s_check_task(s, sh, &o, t, l, 2, NULL);
    zb_task_destroy(&sh);
    zb_task_config_t cfg = {.body_max = len / 2};
    assert_int_equal(zb_task_new(s->emb, &cfg, &sh, NULL), 0);
    bool cut[2] = {false, true};
    s_check_task(s, sh, &o, t, l, 2, cut); /* checks n_truncated == 0 */
    zb_task_destroy(&sh);
}

/* A limit no result can meet: an error, nothing allocated. */
static void test_limit_unreachable(void **st) {
    state_t *s = *st;
    zb_task_config_t cfg = {.body_max = 40};
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(s->emb, &cfg, &sh, NULL), 0);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    uint8_t *tb;
    zb_msg_t tm;
    s_task(1, s->texts, s->lens, s->n, &o, &tb, &tm);
    const zb_msg_task_t *tp = &tm.u.task;
    zb_task_out_t out;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_task_run(sh, &tp, 1, &out, &d), ZB_ELIMIT);
    assert_null(out.body);
    assert_true(strlen(d.msg) > 0);
    zb_msg_free(&tm);
    free(tb);
    zb_task_destroy(&sh);
}

/* A task that cannot run at all still gets a result for its credit. */
static void test_fail_result(void **st) {
    (void)st;
    static const zb_msg_str_t texts[3] = {{"a", 1}, {"b", 1}, {"c", 1}};
    zb_msg_task_t task = {
        .shard = 9, .epoch = 12, .texts = texts, .n_texts = 3, .opt = {.level = ZB_LEVEL_TOKEN}};
    zb_task_out_t out;
    assert_int_equal(zb_task_fail(&task, 64, ZB_MSG_CODE_INTERNAL, "out of memory", &out, NULL), 0);
    zb_msg_t m = {0};
    assert_int_equal(zb_msg_decode(out.body, out.body_len, &m, NULL), 0);
    assert_int_equal(m.type, ZB_MSG_RESULT);
    assert_int_equal(m.u.result.shard, 9);
    assert_int_equal(m.u.result.epoch, 12);
    assert_int_equal(m.u.result.vec.count, 3);
    assert_int_equal(m.u.result.vec.n_rows, 0);
    assert_int_equal(m.u.result.vec.n_errors, 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(m.u.result.vec.errors[i].index, i);
        assert_int_equal(m.u.result.vec.errors[i].code, ZB_MSG_CODE_INTERNAL);
    }
    assert_int_equal(out.n_failed, 3);
    zb_msg_free(&m);
    free(out.body);
    task.n_texts = 0;
    assert_int_equal(zb_task_fail(&task, 64, ZB_MSG_CODE_INTERNAL, "x", &out, NULL), ZB_EINVAL);
    assert_null(out.body);
}

static void test_bad_arguments(void **st) {
    state_t *s = *st;
    zb_task_t *sh = NULL;
    assert_int_equal(zb_task_new(NULL, NULL, &sh, NULL), ZB_EINVAL);
    assert_null(sh);
    assert_int_equal(zb_task_new(s->emb, NULL, &sh, NULL), 0);
    zb_options_t o1 = {.level = ZB_LEVEL_TOKEN}, o2 = {.level = ZB_LEVEL_SENTENCE};
    uint8_t *b1, *b2;
    zb_msg_t m1, m2;
    s_task(1, s->texts, s->lens, 2, &o1, &b1, &m1);
    s_task(2, s->texts, s->lens, 2, &o2, &b2, &m2);
    const zb_msg_task_t *tp[2] = {&m1.u.task, &m2.u.task};
    zb_task_out_t out[2];
    zb_diag_t d = {{0}};
    assert_int_equal(zb_task_run(sh, tp, 2, out, &d), ZB_EINVAL);
    assert_null(out[0].body);
    assert_null(out[1].body);
    assert_int_equal(zb_task_run(sh, tp, 0, out, &d), ZB_EINVAL);
    assert_false(zb_task_same_options(&m1.u.task.opt, &m2.u.task.opt));
    assert_true(zb_task_same_options(&m1.u.task.opt, &m1.u.task.opt));
    zb_msg_free(&m1);
    zb_msg_free(&m2);
    free(b1);
    free(b2);
    zb_task_destroy(&sh);
    assert_int_equal(zb_task_text_code(ZB_EUTF8), ZB_MSG_CODE_BAD_UTF8);
    assert_int_equal(zb_task_text_code(ZB_ELIMIT), ZB_MSG_CODE_TOO_LARGE);
    assert_int_equal(zb_task_text_code(ZB_ENOMEM), ZB_MSG_CODE_INTERNAL);
    assert_int_equal(zb_task_text_code(0), ZB_MSG_CODE_NONE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_identical),  cmocka_unit_test(test_text_cases),
        cmocka_unit_test(test_token_options),     cmocka_unit_test(test_merged),
        cmocka_unit_test(test_too_large),         cmocka_unit_test(test_cut_truncated),
        cmocka_unit_test(test_limit_unreachable), cmocka_unit_test(test_fail_result),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
