/*
 * test_reference.c -- the engine against our own float64 reference on a
 * model the project generates itself.
 *
 * `zbert-model random` rebuilds a 3-layer, hidden-96 model in the layout of
 * real checkpoints (`bert.` prefix, LayerNorm gamma/beta), as F32 and as
 * F16; its bytes must hash to what the reference was computed on (else the
 * generator changed and tests/reference/bert_reference.py must be rerun, see
 * tests/reference/README.md).  The texts of tests/fixtures/reference-texts.jsonl
 * (real lines of several languages, edge cases, one text past 512 pieces)
 * are then embedded from the Hugging Face directory and from its bundle, and
 * every wordpiece row is compared with the reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed.h"
#include "fixture.h"
#include "model.h"
#include "proc.h"

#define TOL 1e-4

static char s_dir[256];

static int setup(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-ref-XXXXXX");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    return proc_sh("rm -rf '%s'", s_dir);
}

static void s_sha256_hex(const char *path, char hex[65]) {
    size_t len;
    char *data = fx_read_file(path, &len);
    assert_non_null(data);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)data, len);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    free(data);
}

/* The reference texts, in order. */
static int s_texts(char ***texts, size_t **lens) {
    size_t len;
    char *data = fx_read_file(fx_path("reference-texts.jsonl"), &len);
    assert_non_null(data);
    int n = 0;
    *texts = calloc(64, sizeof **texts);
    *lens = calloc(64, sizeof **lens);
    for (char *p = data, *nl; *p && n < 64; p = nl + 1) {
        nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        cJSON *o = cJSON_Parse(p);
        assert_non_null(o);
        const char *t = cJSON_GetObjectItem(o, "text")->valuestring;
        (*lens)[n] = strlen(t);
        (*texts)[n] = strdup(t);
        n++;
        cJSON_Delete(o);
    }
    free(data);
    return n;
}

/* Embeds the reference texts with the model at path and compares the cases
 * of the BERTREF file (matched by ids: the file may hold a subset). */
static void s_check(const char *path, const char *expected) {
    fx_file_t fx;
    assert_int_equal(fx_load(fx_path(expected), &fx), 0);
    zb_model_t *m = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_model_open(path, &m, &d);
    if (rc) fprintf(stderr, "%s: %s\n", path, zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    zb_embed_t *e = NULL;
    zb_embed_config_t cfg = {.threads = 2};
    assert_int_equal(zb_embed_new(m, &cfg, &e, &d), 0);
    char **texts;
    size_t *lens;
    int n = s_texts(&texts, &lens);
    zb_embed_result_t *res = calloc((size_t)n, sizeof *res);
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    assert_int_equal(zb_embed_run(e, (const char *const *)texts, lens, (size_t)n, &o, res), 0);
    double worst = 0;
    int matched = 0, truncated = 0;
    for (int c = 0; c < fx.n; c++) {
        const fx_case_t *k = &fx.cases[c];
        int hit = -1;
        for (int i = 0; i < n && hit < 0; i++) {
            if ((int)res[i].pieces.n != k->n_ids) continue;
            int same = 1;
            for (int t = 0; t < k->n_ids && same; t++) same = res[i].pieces.v[t].id == k->ids[t];
            if (same) hit = i;
        }
        assert_true(hit >= 0); /* the tokenizer still gives the ids the reference ran */
        const zb_embed_result_t *r = &res[hit];
        assert_int_equal(r->dim, k->hidden_cols);
        truncated += r->truncated;
        for (size_t j = 0; j < (size_t)k->hidden_rows * (size_t)k->hidden_cols; j++) {
            double df = fabs((double)r->vectors[j] - (double)k->hidden[j]);
            if (!(df <= worst)) worst = df;
        }
        matched++;
    }
    printf("%s vs float64 reference: %d texts (%d truncated at 512), max abs diff %.3g\n", path,
           matched, truncated, worst);
    assert_true(worst <= TOL);
    assert_int_equal(truncated, 1);
    for (int i = 0; i < n; i++) {
        zb_embed_result_free(&res[i]);
        free(texts[i]);
    }
    free(res);
    free(texts);
    free(lens);
    zb_embed_destroy(&e);
    zb_model_close(&m);
    fx_free(&fx);
}

static void s_make(const char *dtype, const char *sha256) {
    assert_int_equal(proc_sh("%s/zbert-model random --layers 3 --hidden 96 --heads 6 "
                             "--intermediate 384 --vocab %s --seed 11 --names bert-gammabeta "
                             "--dtype %s -o %s/%s > /dev/null",
                             proc_bin(), fx_path("vocab-bert-base-cased.txt"), dtype, s_dir, dtype),
                     0);
    char path[512], hex[65];
    snprintf(path, sizeof path, "%s/%s/model.safetensors", s_dir, dtype);
    s_sha256_hex(path, hex);
    assert_string_equal(hex, sha256);
    assert_int_equal(proc_sh("%s/zbert-model convert %s/%s -o %s/%s.zbm > /dev/null", proc_bin(),
                             s_dir, dtype, s_dir, dtype),
                     0);
}

static void test_f32(void **st) {
    (void)st;
    s_make("f32", "92b0332f30157ccf5c477ce94b673041e178ec22724fbf33b57981ca05570d21");
    char p[512];
    snprintf(p, sizeof p, "%s/f32", s_dir);
    s_check(p, "reference-r3-h96-seed11-f32.txt");
    snprintf(p, sizeof p, "%s/f32.zbm", s_dir);
    s_check(p, "reference-r3-h96-seed11-f32.txt");
}

static void test_f16(void **st) {
    (void)st;
    s_make("f16", "e4611a19b7de287eae62a297d0b47d9b48670e4f6893977f834a8a375c3f16dc");
    char p[512];
    snprintf(p, sizeof p, "%s/f16", s_dir);
    s_check(p, "reference-r3-h96-seed11-f16.txt");
    snprintf(p, sizeof p, "%s/f16.zbm", s_dir);
    s_check(p, "reference-r3-h96-seed11-f16.txt");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_f16),
    };
    return cmocka_run_group_tests_name("reference", tests, setup, teardown);
}
