/*
 * test_qgemm.c -- the int8 GEMM against its definition (qgemm.h), computed
 * here independently in 64-bit integers and the same float formula: every
 * variant this CPU runs must give exactly those bits, for every shape edge,
 * init mode, thread count and batch position; plus weight quantization
 * bounds, NaN and zero rows, the consistency check of row sums, and the
 * accuracy of the int8 product against fp32.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "qgemm.h"

typedef fx_rng_t rng_t;

static uint64_t s_next(rng_t *r) {
    return fx_rng_next(r);
}

static float s_unif(rng_t *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(s_next(r) >> 40) / (double)(1ull << 24));
}

static void *s_aligned(size_t bytes) {
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, 64, bytes ? bytes : 64), 0);
    return p;
}

/* A quantized random [n][k] matrix (with a few all-zero rows when asked). */
typedef struct {
    zb_qgemm_w_t w;
    float *plain; /* the fp32 matrix it came from */
    int8_t *q;
    float *scale;
    int32_t *sum;
    float *col;    /* column multipliers the weights were quantized with, or NULL */
    float *smooth; /* 1 / col */
} s_mat_t;

static void s_mat_new(s_mat_t *m, rng_t *r, int n, int k, int zero_rows, int smoothed) {
    m->plain = malloc((size_t)n * (size_t)k * sizeof(float));
    assert_non_null(m->plain);
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++) m->plain[i] = s_unif(r, -0.1f, 0.1f);
    for (int z = 0; z < zero_rows && z < n; z++)
        memset(m->plain + (size_t)(z * 7 % n) * (size_t)k, 0, (size_t)k * sizeof(float));
    const size_t bytes = zb_qgemm_packed_bytes(n, k);
    m->q = s_aligned(bytes);
    memset(m->q, 0, bytes);
    m->scale = malloc((size_t)n * sizeof(float));
    m->sum = malloc((size_t)n * sizeof(int32_t));
    assert_non_null(m->scale);
    assert_non_null(m->sum);
    m->col = m->smooth = NULL;
    if (smoothed) {
        m->col = malloc((size_t)k * sizeof(float));
        m->smooth = malloc((size_t)k * sizeof(float));
        assert_non_null(m->col);
        assert_non_null(m->smooth);
        for (int c = 0; c < k; c++) {
            m->col[c] = s_unif(r, 0.25f, 4.0f);
            m->smooth[c] = 1.0f / m->col[c];
        }
    }
    assert_int_equal(
        zb_qgemm_quantize_rows(m->plain, n, k, (size_t)k, m->col, 0, m->q, m->scale, m->sum), 0);
    m->w = (zb_qgemm_w_t){
        .q = m->q, .scale = m->scale, .sum = m->sum, .smooth = m->smooth, .n = n, .k = k};
}

static void s_mat_free(s_mat_t *m) {
    free(m->plain);
    free(m->q);
    free(m->scale);
    free(m->sum);
    free(m->col);
    free(m->smooth);
}

/* The definition, written out independently of qgemm.c: quantize the row,
 * dot in 64 bits, one float formula. */
static void s_reference(const s_mat_t *m, const float *x, size_t ldx, int rows, zb_gemm_init_t init,
                        const float *bias, float *y, size_t ldy) {
    const int n = m->w.n, k = m->w.k;
    float *deq = malloc((size_t)n * (size_t)k * sizeof(float));
    int8_t *a = malloc((size_t)k);
    assert_non_null(deq);
    assert_non_null(a);
    /* q[j][kk] back from the dequantized matrix: exact, q * s / s */
    zb_qgemm_dequantize(m->q, m->scale, n, k, deq, (size_t)k);
    float *xsm = malloc((size_t)k * sizeof(float));
    assert_non_null(xsm);
    for (int i = 0; i < rows; i++) {
        const float *xr = x + (size_t)i * ldx;
        if (m->smooth != NULL) {
            for (int kk = 0; kk < k; kk++) xsm[kk] = xr[kk] * m->smooth[kk];
            xr = xsm;
        }
        float amax = 0.0f;
        int bad = 0;
        for (int kk = 0; kk < k; kk++) {
            if (!isfinite(xr[kk]))
                bad = 1;
            else if (fabsf(xr[kk]) > amax)
                amax = fabsf(xr[kk]);
        }
        float sx = bad ? NAN : amax / 127.0f;
        for (int kk = 0; kk < k; kk++) {
            long v = (bad || amax == 0.0f) ? 0 : lrintf(xr[kk] * (127.0f / amax));
            a[kk] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
        for (int j = 0; j < n; j++) {
            int64_t dot = 0;
            for (int kk = 0; kk < k; kk++) {
                const float s = m->scale[j];
                const long q = s == 0.0f ? 0 : lrintf(deq[(size_t)j * (size_t)k + (size_t)kk] / s);
                dot += (int64_t)a[kk] * q;
            }
            const float p = (float)(int32_t)dot * (sx * m->scale[j]);
            float *yj = y + (size_t)i * ldy + (size_t)j;
            *yj = init == ZB_GEMM_ZERO ? p : init == ZB_GEMM_BIAS ? bias[j] + p : *yj + p;
        }
    }
    free(deq);
    free(a);
    free(xsm);
}

static int s_isas(zb_qgemm_isa_t out[3]) {
    int n = 0;
    for (int i = ZB_QGEMM_SCALAR; i <= ZB_QGEMM_VNNI; i++)
        if (zb_qgemm_isa_supported((zb_qgemm_isa_t)i)) out[n++] = (zb_qgemm_isa_t)i;
    return n;
}

static void s_run(zb_qgemm_isa_t isa, int threads, const s_mat_t *m, const float *x, size_t ldx,
                  int rows, zb_gemm_init_t init, const float *bias, float *y, size_t ldy,
                  zb_gemm_epilogue_fn epi) {
    void *work = s_aligned(zb_qgemm_work_bytes(threads, m->w.k));
    const zb_qgemm_exec_t e = {.threads = threads, .isa = isa, .work = work};
    const zb_qgemm_args_t a = {.m = rows,
                               .x = x,
                               .ldx = ldx,
                               .w = &m->w,
                               .init = init,
                               .bias = bias,
                               .y = y,
                               .ldy = ldy,
                               .epilogue = epi};
    zb_qgemm(&e, &a);
    free(work);
}

static void test_isa(void **state) {
    (void)state;
    assert_true(zb_qgemm_isa_supported(ZB_QGEMM_SCALAR));
    zb_qgemm_isa_t best = zb_qgemm_isa_best();
    assert_true(zb_qgemm_isa_supported(best));
    assert_string_equal(zb_qgemm_isa_name(ZB_QGEMM_VNNI), "vnni");
    printf("# int8 GEMM variant on this CPU: %s\n", zb_qgemm_isa_name(best));
}

/* Every variant, every init mode, shapes around each tile and group edge,
 * one and two threads: exactly the reference's bits. */
static void test_exact_against_definition(void **state) {
    (void)state;
    rng_t r = {42};
    zb_qgemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int ms[] = {1, 4, 5, 12, 13, 40, 200};
    const int ns[] = {1, 15, 16, 17, 48};
    const int ks[] = {1, 3, 4, 5, 64, 67};
    int cases = 0;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            const int n = ns[ni], k = ks[ki];
            s_mat_t m;
            s_mat_new(&m, &r, n, k, n > 4 ? 2 : 0, (int)((ni + ki) % 2));
            float *bias = malloc((size_t)n * sizeof(float));
            for (int j = 0; j < n; j++) bias[j] = s_unif(&r, -1, 1);
            for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
                const int rows = ms[mi];
                const size_t ldx = (size_t)k + 3, ldy = (size_t)n + 5;
                float *x = malloc((size_t)rows * ldx * sizeof(float));
                float *y0 = malloc((size_t)rows * ldy * sizeof(float));
                float *want = malloc((size_t)rows * ldy * sizeof(float));
                for (size_t i = 0; i < (size_t)rows * ldx; i++) x[i] = s_unif(&r, -3, 3);
                if (rows > 2) memset(x + ldx, 0, (size_t)k * sizeof(float)); /* a zero row */
                for (size_t i = 0; i < (size_t)rows * ldy; i++) y0[i] = s_unif(&r, -1, 1);
                for (int init = ZB_GEMM_ZERO; init <= ZB_GEMM_BIAS; init++) {
                    memcpy(want, y0, (size_t)rows * ldy * sizeof(float));
                    s_reference(&m, x, ldx, rows, (zb_gemm_init_t)init, bias, want, ldy);
                    for (int v = 0; v < n_isa; v++)
                        for (int t = 1; t <= 2; t++) {
                            float *y = malloc((size_t)rows * ldy * sizeof(float));
                            memcpy(y, y0, (size_t)rows * ldy * sizeof(float));
                            s_run(isas[v], t, &m, x, ldx, rows, (zb_gemm_init_t)init, bias, y, ldy,
                                  NULL);
                            if (memcmp(y, want, (size_t)rows * ldy * sizeof(float)) != 0)
                                fail_msg("%s, %d threads, m %d n %d k %d init %d: differs",
                                         zb_qgemm_isa_name(isas[v]), t, rows, n, k, init);
                            free(y);
                            cases++;
                        }
                }
                free(x);
                free(y0);
                free(want);
            }
            free(bias);
            s_mat_free(&m);
        }
    printf("# %d exact comparisons over %d variants\n", cases, n_isa);
}

/* BERT-base shapes, many rows: the block and thread splits of real
 * batches; the variants agree bit for bit, and each row equals itself
 * computed alone. */
static void test_bert_shapes_and_batch_invariance(void **state) {
    (void)state;
    rng_t r = {7};
    zb_qgemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int shapes[][2] = {{2304, 768}, {768, 3072}};
    for (size_t s = 0; s < 2; s++) {
        const int n = shapes[s][0], k = shapes[s][1], rows = 421;
        s_mat_t m;
        s_mat_new(&m, &r, n, k, 0, (int)s);
        float *x = malloc((size_t)rows * (size_t)k * sizeof(float));
        for (size_t i = 0; i < (size_t)rows * (size_t)k; i++) x[i] = s_unif(&r, -2, 2);
        float *bias = calloc((size_t)n, sizeof(float));
        float *ref = NULL;
        for (int v = 0; v < n_isa; v++) {
            float *y = malloc((size_t)rows * (size_t)n * sizeof(float));
            s_run(isas[v], 2, &m, x, (size_t)k, rows, ZB_GEMM_BIAS, bias, y, (size_t)n, NULL);
            if (ref == NULL) {
                ref = y;
                continue;
            }
            assert_memory_equal(y, ref, (size_t)rows * (size_t)n * sizeof(float));
            free(y);
        }
        /* rows alone, at the best variant */
        const int picks[] = {0, 11, 12, 200, 420};
        float *one = malloc((size_t)n * sizeof(float));
        for (size_t p = 0; p < sizeof picks / sizeof picks[0]; p++) {
            s_run(isas[n_isa - 1], 1, &m, x + (size_t)picks[p] * (size_t)k, (size_t)k, 1,
                  ZB_GEMM_BIAS, bias, one, (size_t)n, NULL);
            assert_memory_equal(one, ref + (size_t)picks[p] * (size_t)n, (size_t)n * sizeof(float));
        }
        /* and close to the fp32 product: per-row int8 error, relative to the row's scale */
        double worst = 0;
        for (int i = 0; i < rows; i += 37)
            for (int j = 0; j < n; j += 13) {
                double e = 0, mag = 0;
                for (int kk = 0; kk < k; kk++) {
                    e += (double)x[(size_t)i * (size_t)k + (size_t)kk] *
                         m.plain[(size_t)j * (size_t)k + (size_t)kk];
                    mag += fabs((double)x[(size_t)i * (size_t)k + (size_t)kk] *
                                m.plain[(size_t)j * (size_t)k + (size_t)kk]);
                }
                const double rel = fabs(ref[(size_t)i * (size_t)n + (size_t)j] - e) / mag;
                if (rel > worst) worst = rel;
            }
        printf("# [%d x %d]: worst |int8 - fp64| / sum|x w| = %.2e\n", n, k, worst);
        assert_true(worst < 0.02);
        free(one);
        free(ref);
        free(bias);
        free(x);
        s_mat_free(&m);
    }
}

static void s_double_epilogue(void *ctx, float *y, int n) {
    (*(int *)ctx)++;
    for (int i = 0; i < n; i++) y[i] *= 2.0f;
}

static void test_epilogue_and_nan(void **state) {
    (void)state;
    rng_t r = {9};
    zb_qgemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int n = 300, k = 100, rows = 30;
    s_mat_t m;
    s_mat_new(&m, &r, n, k, 0, 1);
    float *x = malloc((size_t)rows * (size_t)k * sizeof(float));
    for (size_t i = 0; i < (size_t)rows * (size_t)k; i++) x[i] = s_unif(&r, -1, 1);
    x[5 * k + 17] = NAN;
    x[9 * k + 3] = INFINITY;
    float *plain = malloc((size_t)rows * (size_t)n * sizeof(float));
    float *epi = malloc((size_t)rows * (size_t)n * sizeof(float));
    for (int v = 0; v < n_isa; v++) {
        s_run(isas[v], 2, &m, x, (size_t)k, rows, ZB_GEMM_ZERO, NULL, plain, (size_t)n, NULL);
        int calls = 0;
        void *work = s_aligned(zb_qgemm_work_bytes(1, k));
        const zb_qgemm_exec_t e = {.threads = 1, .isa = isas[v], .work = work};
        const zb_qgemm_args_t a = {.m = rows,
                                   .x = x,
                                   .ldx = (size_t)k,
                                   .w = &m.w,
                                   .init = ZB_GEMM_ZERO,
                                   .y = epi,
                                   .ldy = (size_t)n,
                                   .epilogue = s_double_epilogue,
                                   .epilogue_ctx = &calls};
        zb_qgemm(&e, &a);
        free(work);
        assert_true(calls > 0);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++) {
                const float p = plain[(size_t)i * n + (size_t)j];
                const float q = epi[(size_t)i * n + (size_t)j];
                if (i == 5 || i == 9) {
                    assert_true(isnan(p));
                    assert_true(isnan(q));
                } else {
                    assert_true(isfinite(p));
                    assert_true(q == 2.0f * p); /* every element once */
                }
            }
    }
    free(plain);
    free(epi);
    free(x);
    s_mat_free(&m);
}

static void test_weight_quantization(void **state) {
    (void)state;
    rng_t r = {3};
    const int n = 37, k = 53;
    s_mat_t m;
    s_mat_new(&m, &r, n, k, 1, 0);
    float *deq = malloc((size_t)n * (size_t)k * sizeof(float));
    zb_qgemm_dequantize(m.q, m.scale, n, k, deq, (size_t)k);
    for (int j = 0; j < n; j++) {
        float amax = 0;
        for (int kk = 0; kk < k; kk++) amax = fmaxf(amax, fabsf(m.plain[(size_t)j * k + kk]));
        assert_true(m.scale[j] == amax / 127.0f);
        for (int kk = 0; kk < k; kk++)
            assert_true(fabsf(deq[(size_t)j * k + kk] - m.plain[(size_t)j * k + kk]) <=
                        0.5f * m.scale[j] * 1.0001f);
    }
    assert_true(m.scale[0] == 0.0f); /* the zero row */
    assert_true(zb_qgemm_check_sums(&m.w));
    /* a flipped byte or a wrong sum is caught; so is a non-zero padding row */
    m.q[5] ^= 1;
    assert_false(zb_qgemm_check_sums(&m.w));
    m.q[5] ^= 1;
    m.sum[3]++;
    assert_false(zb_qgemm_check_sums(&m.w));
    m.sum[3]--;
    m.q[zb_qgemm_packed_bytes(n, k) - 1] = 1; /* row 47 of the last panel (n = 37) */
    assert_false(zb_qgemm_check_sums(&m.w));
    /* a non-finite weight is refused */
    m.plain[10] = NAN;
    assert_int_equal(zb_qgemm_quantize_rows(m.plain, 1, k, (size_t)k, NULL, 0, m.q, m.scale, m.sum),
                     ZB_EINVAL);
    free(deq);
    s_mat_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa),
        cmocka_unit_test(test_exact_against_definition),
        cmocka_unit_test(test_bert_shapes_and_batch_invariance),
        cmocka_unit_test(test_epilogue_and_nan),
        cmocka_unit_test(test_weight_quantization),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
