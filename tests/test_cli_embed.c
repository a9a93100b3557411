/*
 * test_cli_embed.c -- bin/zbert-embed as a user drives it: real processes,
 * files in a temporary directory, output parsed back and compared with the
 * reference fixtures.  The program is found through $ZB_BIN (default bin).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

static char s_dir[256];
static fx_file_t s_fx;

static const char *s_bin(void) {
    const char *b = getenv("ZB_BIN");
    return b && *b ? b : "bin";
}

static int setup(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-cli-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    return fx_load(fx_path("embeddings-tiny-seed1.txt"), &s_fx);
}

static int teardown(void **st) {
    (void)st;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    fx_free(&s_fx);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *s_file(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

static void s_write(const char *name, const char *data, size_t n) {
    FILE *f = fopen(s_file(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Runs zbert-embed with args on in.txt, output to out, stderr to err.txt;
 * returns the exit status. */
static int s_run(const char *args, const char *out_redirect) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/zbert-embed --model %s %s < %s %s 2> %s", s_bin(),
             fx_path("tiny-seed1"), args, s_file("in.txt"), out_redirect, s_file("err.txt"));
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* Output lines parsed as JSON; returns the count. */
static int s_read_jsonl(cJSON **objs, int cap) {
    size_t len;
    char *data = fx_read_file(s_file("out.jsonl"), &len);
    assert_non_null(data);
    int n = 0;
    for (char *p = data, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        assert_non_null(nl); /* every object ends its line */
        *nl = '\0';
        assert_true(n < cap);
        objs[n] = cJSON_Parse(p);
        assert_non_null(objs[n]);
        n++;
    }
    free(data);
    return n;
}

static const fx_case_t *s_case(const char *name) {
    for (int i = 0; i < s_fx.n; i++)
        if (!strcmp(s_fx.cases[i].name, name)) return &s_fx.cases[i];
    fail_msg("no fixture case %s", name);
    return NULL;
}

static double s_vec_diff(const cJSON *arr, const float *want, int n) {
    assert_int_equal(cJSON_GetArraySize(arr), n);
    double m = 0;
    int j = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        /* %.9g round-trips float32: compare as float */
        double d = fabs((double)(float)x->valuedouble - (double)want[j++]);
        if (!(d <= m)) m = d;
    }
    return m;
}

static void test_token_default(void **st) {
    (void)st;
    s_write("in.txt", "I love NLP\n", 11);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("", redirect), 0);
    cJSON *o[4];
    assert_int_equal(s_read_jsonl(o, 4), 1);
    assert_int_equal(cJSON_GetObjectItem(o[0], "index")->valueint, 0);
    const cJSON *toks = cJSON_GetObjectItem(o[0], "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 3);
    const fx_case_t *k = s_case("i_love_nlp");
    const char *want_text[] = {"I", "love", "NLP"};
    int want_begin[] = {0, 2, 7}, want_end[] = {1, 6, 10}, want_row[] = {1, 2, 3};
    for (int i = 0; i < 3; i++) {
        const cJSON *t = cJSON_GetArrayItem(toks, i);
        assert_string_equal(cJSON_GetObjectItem(t, "text")->valuestring, want_text[i]);
        assert_int_equal(cJSON_GetObjectItem(t, "begin")->valueint, want_begin[i]);
        assert_int_equal(cJSON_GetObjectItem(t, "end")->valueint, want_end[i]);
        const float *row = k->hidden + (size_t)want_row[i] * k->hidden_cols;
        assert_true(s_vec_diff(cJSON_GetObjectItem(t, "vector"), row, k->hidden_cols) <= 1e-4);
    }
    cJSON_Delete(o[0]);
}

/* All 40 fixture texts as JSONL (they hold newlines and control chars):
 * ids, offsets and vectors equal the reference. */
static void test_wordpiece_jsonl(void **st) {
    (void)st;
    FILE *f = fopen(s_file("in.txt"), "wb");
    for (int i = 0; i < s_fx.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", s_fx.cases[i].text);
        char *line = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", line);
        free(line);
        cJSON_Delete(o);
    }
    fclose(f);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("--level wordpiece --input-format jsonl --threads 2", redirect), 0);
    cJSON *o[64];
    assert_int_equal(s_read_jsonl(o, 64), s_fx.n);
    double worst = 0;
    for (int i = 0; i < s_fx.n; i++) {
        const fx_case_t *k = &s_fx.cases[i];
        assert_int_equal(cJSON_GetObjectItem(o[i], "index")->valueint, i);
        const cJSON *ids = cJSON_GetObjectItem(o[i], "ids");
        const cJSON *offs = cJSON_GetObjectItem(o[i], "offsets");
        const cJSON *vecs = cJSON_GetObjectItem(o[i], "vectors");
        assert_int_equal(cJSON_GetArraySize(ids), k->n_ids);
        assert_int_equal(cJSON_GetArraySize(vecs), k->n_ids);
        for (int t = 0; t < k->n_ids; t++) {
            assert_int_equal(cJSON_GetArrayItem(ids, t)->valueint, k->ids[t]);
            const cJSON *be = cJSON_GetArrayItem(offs, t);
            assert_int_equal(cJSON_GetArrayItem(be, 0)->valueint, (int)k->char_off[2 * t]);
            assert_int_equal(cJSON_GetArrayItem(be, 1)->valueint, (int)k->char_off[2 * t + 1]);
            double d = s_vec_diff(cJSON_GetArrayItem(vecs, t),
                                  k->hidden + (size_t)t * k->hidden_cols, k->hidden_cols);
            if (d > worst) worst = d;
        }
        bool trunc = cJSON_IsTrue(cJSON_GetObjectItem(o[i], "truncated"));
        assert_int_equal(trunc, strcmp(k->name, "over_512_wordpieces") == 0);
        cJSON_Delete(o[i]);
    }
    printf("zbert-embed wordpiece output: max abs diff %.3g over 40 texts\n", worst);
    assert_true(worst <= 1e-4);
}

/* Bad lines get an error object in place and a message naming the line;
 * the others are embedded; exit status 1. */
static void test_bad_lines(void **st) {
    (void)st;
    const char lines[] = "Hello, world.\nbad \xc3\x28 utf8\nI love NLP\n";
    s_write("in.txt", lines, sizeof lines - 1);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("--level sentence", redirect), 1);
    cJSON *o[8];
    assert_int_equal(s_read_jsonl(o, 8), 3);
    assert_non_null(cJSON_GetObjectItem(o[0], "vector"));
    assert_non_null(cJSON_GetObjectItem(o[1], "error"));
    assert_null(cJSON_GetObjectItem(o[1], "vector"));
    assert_non_null(cJSON_GetObjectItem(o[2], "vector"));
    for (int i = 0; i < 3; i++) cJSON_Delete(o[i]);
    char *err = fx_read_file(s_file("err.txt"), NULL);
    assert_non_null(strstr(err, "line 2"));
    assert_non_null(strstr(err, "UTF-8"));
    free(err);

    const char js[] = "{\"text\":\"ok\"}\n{\"text\":\"unterminated\n[1,2]\n{\"txt\":\"x\"}\n"
                      "{\"text\":\"caf\\u00e9 \\ud83d\\ude00\"}\n";
    s_write("in.txt", js, sizeof js - 1);
    assert_int_equal(s_run("--input-format jsonl --level sentence", redirect), 1);
    assert_int_equal(s_read_jsonl(o, 8), 5);
    const char *want[] = {"vector", "error", "error", "error", "vector"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(cJSON_GetObjectItem(o[i], "index")->valueint, i);
        assert_non_null(cJSON_GetObjectItem(o[i], want[i]));
        cJSON_Delete(o[i]);
    }
    err = fx_read_file(s_file("err.txt"), NULL);
    assert_non_null(strstr(err, "line 2"));
    assert_non_null(strstr(err, "line 4"));
    free(err);
}

/* .npy to a file and through a pipe: same header, same rows as JSONL. */
static void test_npy(void **st) {
    (void)st;
    s_write("in.txt", "Hello, world.\nI love NLP\n\n", 26);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("--level sentence --pooling mean", redirect), 0);
    cJSON *o[4];
    assert_int_equal(s_read_jsonl(o, 4), 3);
    snprintf(redirect, sizeof redirect, "> %s", s_file("a.npy"));
    assert_int_equal(s_run("--format npy --pooling mean", redirect), 0);
    snprintf(redirect, sizeof redirect, "| cat > %s", s_file("b.npy"));
    assert_int_equal(s_run("--format npy --pooling mean", redirect), 0);
    size_t la, lb;
    char *a = fx_read_file(s_file("a.npy"), &la);
    char *b = fx_read_file(s_file("b.npy"), &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    assert_memory_equal(a, "\x93NUMPY\x01\x00", 8);
    size_t hl = (size_t)(unsigned char)a[8] | (size_t)(unsigned char)a[9] << 8;
    assert_int_equal((10 + hl) % 64, 0);
    assert_non_null(strstr(a + 10, "'shape': (3, 64)"));
    assert_non_null(strstr(a + 10, "'descr': '<f4'"));
    assert_int_equal(la, 10 + hl + 3 * 64 * 4);
    for (int i = 0; i < 3; i++) {
        float row[64];
        memcpy(row, a + 10 + hl + (size_t)i * 64 * 4, sizeof row);
        assert_true(s_vec_diff(cJSON_GetObjectItem(o[i], "vector"), row, 64) == 0);
        cJSON_Delete(o[i]);
    }
    free(a);
    free(b);
}

static void test_usage_errors(void **st) {
    (void)st;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/zbert-embed < /dev/null > /dev/null 2>&1", s_bin());
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    s_write("in.txt", "x\n", 2);
    assert_int_equal(s_run("--level paragraph", "> /dev/null"), 2);
    assert_int_equal(s_run("--threads 0", "> /dev/null"), 2);
    assert_int_equal(s_run("--format npy --level token", "> /dev/null"), 2);
    snprintf(cmd, sizeof cmd, "%s/zbert-embed --model %s/nonexistent < /dev/null > /dev/null 2> %s",
             s_bin(), s_dir, s_file("err.txt"));
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    char *err = fx_read_file(s_file("err.txt"), NULL);
    assert_non_null(strstr(err, "nonexistent"));
    free(err);
}

static void test_tokenize_only_and_windows(void **st) {
    (void)st;
    /* ~1500 wordpieces: several windows */
    size_t cap = 20000, n = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 750; i++) n += (size_t)snprintf(text + n, cap - n, "word%d ", i % 50);
    text[n - 1] = '\n';
    s_write("in.txt", text, n);
    free(text);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("--tokenize-only", redirect), 0);
    cJSON *o[2];
    assert_int_equal(s_read_jsonl(o, 2), 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o[0], "ids")), 512);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o[0], "truncated")));
    cJSON_Delete(o[0]);
    assert_int_equal(s_run("--tokenize-only --windows", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 2), 1);
    int n_ids = cJSON_GetArraySize(cJSON_GetObjectItem(o[0], "ids"));
    assert_true(n_ids > 1000);
    assert_null(cJSON_GetObjectItem(o[0], "vectors"));
    cJSON_Delete(o[0]);
    assert_int_equal(s_run("--level wordpiece --windows", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 2), 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o[0], "vectors")), n_ids);
    assert_null(cJSON_GetObjectItem(o[0], "truncated"));
    cJSON_Delete(o[0]);
}

/* Ids of the single text in out.jsonl; returns the count. */
static int s_ids(int32_t *ids, int cap) {
    cJSON *o[2];
    assert_int_equal(s_read_jsonl(o, 2), 1);
    const cJSON *arr = cJSON_GetObjectItem(o[0], "ids");
    if (!cJSON_IsArray(arr)) fail_msg("no \"ids\" in the output");
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        assert_true(n < cap);
        ids[n++] = (int32_t)x->valueint;
    }
    cJSON_Delete(o[0]);
    return n;
}

/* An escaped \u0000 in a JSONL text is a NUL byte of the text, as a raw NUL
 * in line input is (fixture tokenization case 45 "nul\0char"). */
static void test_jsonl_nul(void **st) {
    (void)st;
    fx_file_t tok;
    assert_int_equal(fx_load(fx_path("tokenization-2000.txt"), &tok), 0);
    const fx_case_t *c = NULL;
    for (int i = 0; i < tok.n; i++)
        if (tok.cases[i].index == 45) c = &tok.cases[i];
    assert_non_null(c);
    assert_int_equal(c->text_len, 8);
    assert_memory_equal(c->text, "nul\0char", 8);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    int32_t ids[64];

    s_write("in.txt", "nul\0char\n", 9);
    assert_int_equal(s_run("--tokenize-only", redirect), 0);
    assert_int_equal(s_ids(ids, 64), c->n_ids);
    assert_memory_equal(ids, c->ids, (size_t)c->n_ids * sizeof *ids);

    const char js[] = "{\"text\":\"nul\\u0000char\"}\n";
    s_write("in.txt", js, sizeof js - 1);
    assert_int_equal(s_run("--tokenize-only --input-format jsonl", redirect), 0);
    assert_int_equal(s_ids(ids, 64), c->n_ids);
    assert_memory_equal(ids, c->ids, (size_t)c->n_ids * sizeof *ids);
    assert_int_equal(ids[0], 101);
    assert_int_equal(ids[c->n_ids - 1], 102);
    fx_free(&tok);
}

static const cJSON *s_get(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    if (x == NULL) fail_msg("no field \"%s\"", k);
    return x;
}

static void s_free_objs(cJSON **o, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(o[i]);
}

/* --split-sentences needs no model: code-point spans, end exclusive, from
 * the default segmenter or Spark NLP's detector. */
static void test_split_sentences(void **st) {
    (void)st;
    const char *in = "{\"text\":\"Hello world. This is (really) fine.\"}\n"
                     "{\"text\":\"Mix; of; semis \\ud83d\\ude00 ok.\"}\n"
                     "{\"text\":\"\"}\n"
                     "{\"text\":\"a\\u2554b\"}\n";
    s_write("in.txt", in, strlen(in));
    char cmd[1024], redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    snprintf(cmd, sizeof cmd, "%s/zbert-embed --split-sentences --input-format jsonl < %s %s 2> %s",
             s_bin(), s_file("in.txt"), redirect, s_file("err.txt"));
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    cJSON *o[8];
    assert_int_equal(s_read_jsonl(o, 8), 4);
    char *txt = cJSON_PrintUnformatted(s_get(o[0], "sentence_spans"));
    assert_string_equal(txt, "[[0,12],[13,35]]");
    free(txt);
    txt = cJSON_PrintUnformatted(s_get(o[1], "sentence_spans"));
    assert_string_equal(txt, "[[0,20]]"); /* our segmenter: `;` does not end one */
    free(txt);
    assert_int_equal(cJSON_GetArraySize(s_get(o[2], "sentence_spans")), 0);
    assert_int_equal(cJSON_GetArraySize(s_get(o[3], "sentence_spans")), 1);
    s_free_objs(o, 4);

    snprintf(cmd, sizeof cmd,
             "%s/zbert-embed --split-sentences --compat sparknlp --input-format jsonl "
             "< %s %s 2> %s",
             s_bin(), s_file("in.txt"), redirect, s_file("err.txt"));
    assert_int_equal(WEXITSTATUS(system(cmd)), 1); /* the marker text is refused */
    assert_int_equal(s_read_jsonl(o, 8), 4);
    txt = cJSON_PrintUnformatted(s_get(o[0], "sentence_spans"));
    assert_string_equal(txt, "[[0,12],[13,20],[21,35]]"); /* "(really)" acts as a list item */
    free(txt);
    /* the emoji is one code point here (two UTF-16 units in Spark) */
    txt = cJSON_PrintUnformatted(s_get(o[1], "sentence_spans"));
    assert_string_equal(txt, "[[0,4],[5,8],[9,20]]");
    free(txt);
    assert_non_null(strstr(s_get(o[3], "error")->valuestring, "sentence detector"));
    s_free_objs(o, 4);
}

/* --sentences: token objects carry their sentence and metadata; a long
 * sentence takes windows so that no token is left without a vector. */
static void test_sentences_cli(void **st) {
    (void)st;
    char *in = malloc(8000);
    size_t at = (size_t)sprintf(in, "I love NLP. Don't stop.\n");
    for (int i = 0; i < 600; i++) at += (size_t)sprintf(in + at, "word ");
    sprintf(in + at - 1, ".\n");
    s_write("in.txt", in, strlen(in));
    free(in);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("--sentences", redirect), 0);
    cJSON *o[4];
    assert_int_equal(s_read_jsonl(o, 4), 2);
    const cJSON *toks = s_get(o[0], "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 7);
    const cJSON *t4 = cJSON_GetArrayItem(toks, 4); /* Don't */
    assert_string_equal(s_get(t4, "text")->valuestring, "Don't");
    assert_int_equal(s_get(t4, "sentence")->valueint, 1);
    assert_int_equal(s_get(t4, "begin")->valueint, 12);
    assert_int_equal(s_get(t4, "pieceId")->valueint, 1790);
    assert_true(cJSON_IsTrue(s_get(t4, "isWordStart")));
    assert_true(cJSON_IsFalse(s_get(t4, "isOOV")));
    assert_int_equal(cJSON_GetArraySize(s_get(t4, "vector")), 64);
    /* 600 words and "." in one sentence of > 510 pieces: all there */
    assert_int_equal(cJSON_GetArraySize(s_get(o[1], "tokens")), 601);
    assert_null(cJSON_GetObjectItem(o[1], "truncated"));
    s_free_objs(o, 2);
    /* with --truncate the tail goes, flagged */
    assert_int_equal(s_run("--sentences --truncate", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 4), 2);
    assert_true(cJSON_GetArraySize(s_get(o[1], "tokens")) < 601);
    assert_true(cJSON_IsTrue(s_get(o[1], "truncated")));
    s_free_objs(o, 2);
}

/* --token-vector mean: a one-piece token keeps its row, a several-piece
 * token gets the mean of its pieces' rows (checked on the wordpiece output). */
static void test_token_vector_mean_cli(void **st) {
    (void)st;
    s_write("in.txt", "unbelievable NLP\n", 17);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    cJSON *m[2], *w[2];
    assert_int_equal(s_run("--token-vector mean", redirect), 0);
    assert_int_equal(s_read_jsonl(m, 2), 1);
    assert_int_equal(s_run("--level wordpiece", redirect), 0);
    assert_int_equal(s_read_jsonl(w, 2), 1);
    const cJSON *ids = s_get(w[0], "ids"), *offs = s_get(w[0], "offsets");
    const cJSON *rows = s_get(w[0], "vectors");
    const cJSON *toks = s_get(m[0], "tokens");
    int multi = 0;
    for (int t = 0; t < cJSON_GetArraySize(toks); t++) {
        const cJSON *tok = cJSON_GetArrayItem(toks, t);
        int b = s_get(tok, "begin")->valueint, e = s_get(tok, "end")->valueint;
        const cJSON *vec = s_get(tok, "vector");
        double worst = 0;
        int cnt = 0;
        for (int j = 0; j < cJSON_GetArraySize(vec); j++) {
            double sum = 0;
            cnt = 0;
            for (int p = 1; p + 1 < cJSON_GetArraySize(ids); p++) {
                int pb = cJSON_GetArrayItem(cJSON_GetArrayItem(offs, p), 0)->valueint;
                if (pb >= b && pb < e) {
                    sum += (float)cJSON_GetArrayItem(cJSON_GetArrayItem(rows, p), j)->valuedouble;
                    cnt++;
                }
            }
            double d = fabs(sum / cnt - (float)cJSON_GetArrayItem(vec, j)->valuedouble);
            if (d > worst) worst = d;
        }
        assert_true(worst < 1e-5);
        multi += cnt > 1;
    }
    assert_int_equal(multi, 2); /* un ##believable, NL ##P */
    s_free_objs(m, 1);
    s_free_objs(w, 1);
}

/* --compat sparknlp end to end, in both output shapes. */
static void test_compat_cli(void **st) {
    (void)st;
    const char *in = "I love NLP\nHe said \xf0\x9f\x98\x80 don't.\n";
    s_write("in.txt", in, strlen(in));
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    cJSON *o[4];
    assert_int_equal(s_run("--compat sparknlp", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 4), 2);
    const cJSON *toks = s_get(o[0], "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 3);
    const int want_ids[] = {146, 1567, 21239};
    for (int i = 0; i < 3; i++)
        assert_int_equal(s_get(cJSON_GetArrayItem(toks, i), "pieceId")->valueint, want_ids[i]);
    /* "don't" feeds only "don" */
    const cJSON *dont = cJSON_GetArrayItem(s_get(o[1], "tokens"), 3);
    assert_string_equal(s_get(dont, "text")->valuestring, "don't");
    assert_int_equal(s_get(dont, "pieceId")->valueint, 1274);
    assert_int_equal(s_get(dont, "begin")->valueint, 10); /* code points here */
    s_free_objs(o, 2);

    assert_int_equal(s_run("--compat sparknlp --format sparknlp-json", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 4), 2);
    assert_int_equal(s_get(o[0], "index")->valueint, 0);
    const cJSON *ann = s_get(o[0], "annotations");
    assert_int_equal(cJSON_GetArraySize(ann), 3);
    const cJSON *a2 = cJSON_GetArrayItem(ann, 2);
    assert_string_equal(s_get(a2, "annotatorType")->valuestring, "word_embeddings");
    assert_int_equal(s_get(a2, "begin")->valueint, 7);
    assert_int_equal(s_get(a2, "end")->valueint, 9); /* inclusive */
    assert_string_equal(s_get(a2, "result")->valuestring, "NLP");
    const cJSON *md = s_get(a2, "metadata");
    assert_int_equal(cJSON_GetArraySize(md), 5);
    assert_string_equal(s_get(md, "sentence")->valuestring, "0");
    assert_string_equal(s_get(md, "token")->valuestring, "NLP");
    assert_string_equal(s_get(md, "pieceId")->valuestring, "21239");
    assert_string_equal(s_get(md, "isWordStart")->valuestring, "true");
    assert_string_equal(s_get(md, "isOOV")->valuestring, "false");
    assert_int_equal(cJSON_GetArraySize(s_get(a2, "embeddings")), 64);
    assert_int_equal(cJSON_GetArraySize(a2), 6);
    /* UTF-16: the emoji takes two units, so "don't" begins at 11 */
    const cJSON *d2 = cJSON_GetArrayItem(s_get(o[1], "annotations"), 3);
    assert_int_equal(s_get(d2, "begin")->valueint, 11);
    assert_int_equal(s_get(d2, "end")->valueint, 15);
    s_free_objs(o, 2);

    /* sparknlp-json of the default pipeline: same shape, zbert's tokens */
    assert_int_equal(s_run("--format sparknlp-json", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 4), 2);
    const cJSON *dd = cJSON_GetArrayItem(s_get(o[1], "annotations"), 3);
    assert_string_equal(s_get(dd, "result")->valuestring, "don't");
    assert_int_equal(s_get(dd, "begin")->valueint, 11);
    assert_string_equal(s_get(s_get(dd, "metadata"), "pieceId")->valuestring, "1274");
    s_free_objs(o, 2);

    /* combinations that cannot work are usage errors */
    assert_int_equal(s_run("--compat sparknlp --level sentence", "> /dev/null"), 2);
    assert_int_equal(s_run("--format sparknlp-json --level wordpiece", "> /dev/null"), 2);
    assert_int_equal(s_run("--sentences --level sentence", "> /dev/null"), 2);
    assert_int_equal(s_run("--compat spark", "> /dev/null"), 2);
    assert_int_equal(s_run("--token-vector last", "> /dev/null"), 2);
}

/* Token level: every token gets a vector, however long the text (windows by
 * default); --truncate drops the tokens past 510 pieces and says so. */
static void test_token_level_long_text(void **st) {
    (void)st;
    size_t cap = 20000, n = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 400; i++) n += (size_t)snprintf(text + n, cap - n, "word%d, ", i % 50);
    text[n - 1] = '\n';
    s_write("in.txt", text, n);
    free(text);
    char redirect[600];
    snprintf(redirect, sizeof redirect, "> %s", s_file("out.jsonl"));
    assert_int_equal(s_run("", redirect), 0);
    cJSON *o[2];
    assert_int_equal(s_read_jsonl(o, 2), 1);
    const cJSON *toks = cJSON_GetObjectItem(o[0], "tokens");
    assert_int_equal(cJSON_GetArraySize(toks), 800); /* 400 words + 400 commas */
    const cJSON *t;
    cJSON_ArrayForEach(t, toks)
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t, "vector")), 64);
    assert_null(cJSON_GetObjectItem(o[0], "truncated"));
    cJSON_Delete(o[0]);
    assert_int_equal(s_run("--truncate", redirect), 0);
    assert_int_equal(s_read_jsonl(o, 2), 1);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(o[0], "tokens")) < 800);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(o[0], "truncated")));
    cJSON_Delete(o[0]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_default),
        cmocka_unit_test(test_wordpiece_jsonl),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_npy),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_token_level_long_text),
        cmocka_unit_test(test_tokenize_only_and_windows),
        cmocka_unit_test(test_split_sentences),
        cmocka_unit_test(test_sentences_cli),
        cmocka_unit_test(test_token_vector_mean_cli),
        cmocka_unit_test(test_compat_cli),
        cmocka_unit_test(test_jsonl_nul),
    };
    return cmocka_run_group_tests_name("zbert-embed", tests, setup, teardown);
}
