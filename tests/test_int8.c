/*
 * test_int8.c -- quantized models end to end: an fp32 fixture model
 * converted to an int8 bundle (zb_convert_model_int8), opened, run on
 * the 40 fixture cases.  Checks: the bundle's table and refusals, accuracy
 * against the fixture's float64-derived hidden states (min cosine per row),
 * and the same bits whatever the batching, thread count and int8 GEMM
 * variant (what the service's determinism relies on); and a bundle
 * calibrated on the even cases (SmoothQuant multipliers), judged on the odd
 * ones.
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
#include "calibrate.h"
#include "fixture.h"
#include "model.h"
#include "qgemm.h"

#define MIN_COSINE 0.999 /* int8 rows against the reference rows */

typedef struct {
    const char *dir;
    char path[64]; /* the int8 bundle */
    zb_model_t *fp32;
    zb_model_t *int8;
    fx_file_t fx;
    int total;
    int32_t *ids; /* every case back to back */
    int *len;
} state_t;

static int s_setup(void **st, const char *dir, const char *fixture) {
    state_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->dir = dir;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_model_open(fx_path(dir), &s->fp32, &d), 0);
    snprintf(s->path, sizeof s->path, "/tmp/zb-int8-%d.zbm", (int)getpid());
    int rc = zb_convert_model_int8(s->path, s->fp32, "test", NULL, &d);
    if (rc != 0) fprintf(stderr, "write int8: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    rc = zb_model_open(s->path, &s->int8, &d);
    if (rc != 0) fprintf(stderr, "open int8: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_int_equal(fx_load(fx_path(fixture), &s->fx), 0);
    s->total = fx_all_ids(&s->fx, &s->ids, &s->len);
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
    zb_model_close(&s->fp32);
    zb_model_close(&s->int8);
    unlink(s->path);
    fx_free(&s->fx);
    free(s->ids);
    free(s->len);
    free(s);
    return 0;
}

/* How s_run feeds the cases to the encoder. */
enum { S_BATCH, S_ALONE, S_LANES };

/* All cases in one batch, each alone, or (S_LANES) those under 512 tokens
 * in length order as one batch that must run as one lane per thread and
 * the rest alone; threads as given.  Rows come back in case order. */
static float *s_run(const zb_model_t *m, const state_t *s, int threads, int how) {
    const int h = zb_model_config(m)->hidden;
    zb_bert_t *b = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_bert_new(m, s->total, 512, threads, &b, &d), 0);
    float *out = malloc((size_t)s->total * (size_t)h * sizeof *out);
    assert_non_null(out);
    if (how == S_BATCH) {
        assert_int_equal(zb_bert_forward(b, s->ids, s->len, s->fx.n, out), 0);
        zb_bert_destroy(&b);
        return out;
    }
    int off[64], order[64], lens[64], k = 0, rows = 0;
    assert_true(s->fx.n <= 64);
    for (int i = 0, o = 0; i < s->fx.n; o += s->len[i], i++) {
        off[i] = o;
        if (how == S_ALONE || s->len[i] == 512) {
            assert_int_equal(
                zb_bert_forward(b, s->ids + o, &s->len[i], 1, out + (size_t)o * (size_t)h), 0);
            continue;
        }
        int j = k++; /* insertion by length, ties in case order */
        for (; j > 0 && s->len[order[j - 1]] > s->len[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    if (how == S_LANES) {
        int32_t *ids = malloc((size_t)s->total * sizeof *ids);
        float *rows_out = malloc((size_t)s->total * (size_t)h * sizeof *rows_out);
        assert_non_null(ids);
        assert_non_null(rows_out);
        for (int j = 0; j < k; j++) {
            memcpy(ids + rows, s->ids + off[order[j]], (size_t)s->len[order[j]] * sizeof *ids);
            lens[j] = s->len[order[j]];
            rows += lens[j];
        }
        assert_int_equal(zb_bert_forward(b, ids, lens, k, rows_out), 0);
        assert_int_equal(zb_bert_last_lanes(b), threads);
        for (int j = 0, r = 0; j < k; r += lens[j], j++)
            memcpy(out + (size_t)off[order[j]] * (size_t)h, rows_out + (size_t)r * (size_t)h,
                   (size_t)lens[j] * (size_t)h * sizeof *out);
        free(ids);
        free(rows_out);
    }
    zb_bert_destroy(&b);
    return out;
}

static void test_table(void **st) {
    state_t *s = *st;
    const zb_config_t *c = zb_model_config(s->int8);
    assert_true(zb_model_is_int8(s->int8));
    assert_false(zb_model_is_int8(s->fp32));
    assert_int_equal(zb_model_n_tensors(s->int8), 5 + 24 * c->layers);
    int n_q8 = 0;
    for (int i = 0; i < zb_model_n_tensors(s->int8); i++) {
        zb_model_tensor_t t, spec;
        assert_int_equal(zb_model_tensor_at(s->int8, i, &t), 0);
        assert_int_equal(zb_model_int8_spec(c, i, &spec), 0);
        assert_string_equal(t.name, spec.name);
        assert_int_equal(t.dtype, spec.dtype);
        assert_int_equal(t.layout, spec.layout);
        assert_int_equal(t.nbytes, spec.nbytes);
        assert_non_null(t.data);
        if (t.layout == ZB_BUNDLE_LAYOUT_PANEL_Q8) {
            n_q8++;
            assert_int_equal(t.dtype, ZB_SAFETENSORS_I8);
            assert_int_equal(t.nbytes, zb_qgemm_packed_bytes((int)t.shape[0], (int)t.shape[1]));
            assert_int_equal((uintptr_t)t.data % 64, 0);
        }
    }
    assert_int_equal(n_q8, 4 * c->layers);
    for (int l = 0; l < c->layers; l++) {
        const zb_model_layer_t *L = &zb_model_weights(s->int8)->layer[l];
        assert_true(L->int8);
        assert_null(L->qkv.p);
        assert_true(zb_qgemm_check_sums(&L->qkv_q8));
        assert_true(zb_qgemm_check_sums(&L->ffn_out_q8));
    }
    /* its fp32 table is gone: no fp32 bundle from it; an int8 one again is the same bytes */
    zb_model_tensor_t t;
    assert_int_equal(zb_model_packed_at(s->int8, 0, &t), ZB_EINVAL);
    zb_diag_t d = {{0}};
    char again[80];
    snprintf(again, sizeof again, "%s.again", s->path);
    assert_int_equal(zb_convert_model(again, s->int8, "x", &d), ZB_EINVAL);
    assert_non_null(strstr(zb_diag_text(&d, ZB_EINVAL), "int8"));
    assert_int_equal(zb_convert_model_int8(again, s->int8, "x", NULL, &d), 0);
    zb_model_t *m2 = NULL;
    assert_int_equal(zb_model_open(again, &m2, &d), 0);
    assert_string_equal(zb_model_identity(m2), zb_model_identity(s->int8));
    zb_model_close(&m2);
    unlink(again);
}

/* Per-row cosine of int8 against the reference, and of fp32 for scale. */
static void test_accuracy(void **st) {
    state_t *s = *st;
    const int h = zb_model_config(s->fp32)->hidden;
    float *q = s_run(s->int8, s, 2, S_BATCH);
    float *f = s_run(s->fp32, s, 2, S_BATCH);
    double min_cos = 1.0, max_abs = 0.0, max_abs_fp32 = 0.0;
    for (int i = 0, o = 0; i < s->fx.n; i++) {
        const fx_case_t *c = &s->fx.cases[i];
        for (int r = 0; r < c->n_ids; r++) {
            const float *ref = c->hidden + (size_t)r * (size_t)h;
            const float *x = q + (size_t)(o + r) * (size_t)h;
            const float *y = f + (size_t)(o + r) * (size_t)h;
            double dot = 0, na = 0, nb = 0;
            for (int k = 0; k < h; k++) {
                dot += (double)x[k] * ref[k];
                na += (double)x[k] * x[k];
                nb += (double)ref[k] * ref[k];
                max_abs = fmax(max_abs, fabs((double)x[k] - ref[k]));
                max_abs_fp32 = fmax(max_abs_fp32, fabs((double)y[k] - ref[k]));
            }
            const double cs = dot / sqrt(na * nb);
            if (!(cs >= min_cos)) min_cos = cs;
        }
        o += c->n_ids;
    }
    printf("%s int8: %d rows, min cosine %.8f, max abs diff %.4g (fp32: %.3g)\n", s->dir, s->total,
           min_cos, max_abs, max_abs_fp32);
    assert_true(min_cos >= MIN_COSINE);
    assert_true(max_abs_fp32 < 1e-4);
    free(q);
    free(f);
}

/* One batch on 2 threads == each case alone on 1 thread == the short cases
 * as one lane per thread on 2 and 3 threads == every int8 GEMM variant this
 * CPU runs. */
static void test_same_bits(void **st) {
    state_t *s = *st;
    const size_t bytes =
        (size_t)s->total * (size_t)zb_model_config(s->int8)->hidden * sizeof(float);
    float *batch = s_run(s->int8, s, 2, S_BATCH);
    float *alone = s_run(s->int8, s, 1, S_ALONE);
    assert_memory_equal(batch, alone, bytes);
    for (int t = 2; t <= 3; t++) {
        float *lanes = s_run(s->int8, s, t, S_LANES);
        assert_memory_equal(lanes, alone, bytes);
        free(lanes);
    }
    static const char *const isas[] = {"scalar", "avx2", "vnni"};
    for (int i = 0; i < 3; i++) {
        if (!zb_qgemm_isa_supported((zb_qgemm_isa_t)i)) continue;
        setenv("ZB_QGEMM_ISA", isas[i], 1);
        assert_int_equal(zb_qgemm_isa_best(), (zb_qgemm_isa_t)i);
        float *v = s_run(s->int8, s, 2, S_BATCH);
        if (memcmp(v, batch, bytes) != 0) fail_msg("int8 variant %s differs", isas[i]);
        free(v);
    }
    unsetenv("ZB_QGEMM_ISA");
    free(batch);
    free(alone);
}

/* Calibrated on the even cases' texts: multipliers that are not all 1, the
 * same accuracy bar on the odd cases, the same bits across variants. */
static void test_calibrated(void **st) {
    state_t *s = *st;
    const char *texts[64];
    size_t lens[64], n = 0;
    for (int i = 0; i < s->fx.n && n < 64; i += 2) {
        texts[n] = s->fx.cases[i].text;
        lens[n++] = s->fx.cases[i].text_len;
    }
    zb_diag_t d = {{0}};
    zb_calibrate_t *calib = NULL;
    int rc = zb_calibrate_run(s->fp32, texts, lens, n, 2, &calib, &d);
    if (rc != 0) fprintf(stderr, "calibrate: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_true(zb_calibrate_texts(calib) > 0);
    assert_int_equal(zb_calibrate_run(s->int8, texts, lens, n, 2, &(zb_calibrate_t *){NULL}, &d),
                     ZB_EINVAL); /* an int8 model has no fp32 activations to measure */
    char path[80];
    snprintf(path, sizeof path, "%s.cal", s->path);
    assert_int_equal(zb_convert_model_int8(path, s->fp32, "test", zb_calibrate_act_max(calib), &d),
                     0);
    zb_calibrate_destroy(&calib);
    assert_null(calib);
    zb_model_t *m = NULL;
    assert_int_equal(zb_model_open(path, &m, &d), 0);
    const zb_model_layer_t *L = &zb_model_weights(m)->layer[0];
    int not_one = 0;
    for (int k = 0; k < L->qkv_q8.k; k++) not_one += L->qkv_q8.smooth[k] != 1.0f;
    assert_true(not_one > 0);
    assert_true(zb_qgemm_check_sums(&L->ffn_out_q8));

    const int h = zb_model_config(m)->hidden;
    float *q = s_run(m, s, 2, S_BATCH);
    double min_cos = 1.0;
    for (int i = 0, o = 0; i < s->fx.n; i++) {
        const fx_case_t *c = &s->fx.cases[i];
        for (int r = 0; i % 2 == 1 && r < c->n_ids; r++) {
            const float *ref = c->hidden + (size_t)r * (size_t)h;
            const float *x = q + (size_t)(o + r) * (size_t)h;
            double dot = 0, na = 0, nb = 0;
            for (int k = 0; k < h; k++) {
                dot += (double)x[k] * ref[k];
                na += (double)x[k] * x[k];
                nb += (double)ref[k] * ref[k];
            }
            const double cs = dot / sqrt(na * nb);
            if (!(cs >= min_cos)) min_cos = cs;
        }
        o += c->n_ids;
    }
    printf("%s int8, calibrated on %zu texts: min cosine %.8f on the other cases\n", s->dir, n,
           min_cos);
    assert_true(min_cos >= MIN_COSINE);
    setenv("ZB_QGEMM_ISA", "scalar", 1);
    float *v = s_run(m, s, 1, S_ALONE);
    unsetenv("ZB_QGEMM_ISA");
    assert_memory_equal(v, q, (size_t)s->total * (size_t)h * sizeof(float));
    free(v);
    free(q);
    zb_model_close(&m);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest seed1[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_same_bits),
        cmocka_unit_test(test_calibrated),
    };
    const struct CMUnitTest seed2[] = {
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_same_bits),
    };
    int failed = cmocka_run_group_tests_name("tiny-seed1", seed1, setup_seed1, teardown);
    failed += cmocka_run_group_tests_name("tiny-seed2", seed2, setup_seed2, teardown);
    return failed;
}
