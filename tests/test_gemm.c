/*
 * test_gemm.c -- the packed-weight GEMM: every instruction-set variant
 * against a naive float64 reference over many shapes (every M from 1 to 67,
 * N and K off the tile sizes, the k-block boundary, BERT's shapes), and
 * bit-for-bit against the definition gemm.h states (fmaf chains over k
 * blocks of ZB_GEMM_KC, added in order), which makes the variants agree bit
 * for bit; batch invariance (a row alone, at any place in any batch, with
 * any thread count, is the same bits); the init modes and the epilogue;
 * strides and
 * untouched padding; pack / unpack round trips; OpenBLAS as a second judge
 * at BERT shapes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fixture.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"

/* --- helpers ----------------------------------------------------------- */

typedef fx_rng_t rng_t;

static uint64_t s_next(rng_t *r) {
    return fx_rng_next(r);
}

/* Uniform in [-1, 1). */
static float s_unif(rng_t *r) {
    return (float)((double)(s_next(r) >> 40) / (double)(1ull << 23) - 1.0);
}

static float *s_alloc(size_t n) {
    /* 64-byte aligned, size rounded up as aligned_alloc wants */
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64 + 64);
    assert_non_null(p);
    return p;
}

static float *s_rand(rng_t *r, size_t n) {
    float *p = s_alloc(n);
    for (size_t i = 0; i < n; i++) p[i] = s_unif(r);
    return p;
}

static uint32_t s_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The variants this CPU runs. */
static int s_isas(zb_gemm_isa_t out[3]) {
    int n = 0;
    for (int i = ZB_GEMM_SCALAR; i <= ZB_GEMM_AVX512; i++)
        if (zb_gemm_isa_supported((zb_gemm_isa_t)i)) out[n++] = (zb_gemm_isa_t)i;
    return n;
}

/* A packed copy of w [n][k]. */
static float *s_packed(const float *w, int n, int k) {
    float *p = s_alloc(zb_gemm_packed_floats(n, k));
    zb_gemm_pack(w, n, k, (size_t)k, p);
    return p;
}

/* Runs zb_gemm with its own work buffer. */
static void s_gemm(zb_gemm_isa_t isa, int threads, const zb_gemm_args_t *a) {
    float *work = s_alloc(zb_gemm_work_floats(threads));
    zb_gemm_exec_t e = {.threads = threads, .isa = isa, .work = work};
    zb_gemm(&e, a);
    free(work);
}

/* The definition (gemm.h): per block of ZB_GEMM_KC, one fmaf chain from 0
 * in increasing k; the block sums added in order to init (no init for
 * ZB_GEMM_ZERO). */
static void s_chain(const float *x, size_t ldx, const float *w, int m, int n, int k,
                    zb_gemm_init_t init, const float *bias, float *y, size_t ldy) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int k0 = 0; k0 < k; k0 += ZB_GEMM_KC) {
                float blk = 0.0f;
                for (int kk = k0; kk < k && kk < k0 + ZB_GEMM_KC; kk++)
                    blk = fmaf(x[(size_t)i * ldx + (size_t)kk],
                               w[(size_t)j * (size_t)k + (size_t)kk], blk);
                if (k0 > 0)
                    acc = acc + blk;
                else if (init == ZB_GEMM_ZERO)
                    acc = blk;
                else
                    acc = (init == ZB_GEMM_BIAS ? bias[j] : y[(size_t)i * ldy + (size_t)j]) + blk;
            }
            y[(size_t)i * ldy + (size_t)j] = acc;
        }
}

/* float64 reference of one element and the scale of its rounding error. */
static double s_ref(const float *x, const float *w, int k, double init, double *scale) {
    double s = init, a = fabs(init);
    for (int kk = 0; kk < k; kk++) {
        s += (double)x[kk] * (double)w[kk];
        a += fabs((double)x[kk] * (double)w[kk]);
    }
    *scale = a;
    return s;
}

/* Checks every element of one GEMM against float64 (error within k + 2
 * roundings of the magnitudes involved) and against the fmaf chain, bit for
 * bit.  x is [m][k] with stride ldx, y [m][n] with stride ldy > n, whose
 * padding columns must stay untouched. */
static void s_check_shape(rng_t *r, zb_gemm_isa_t isa, int threads, int m, int n, int k,
                          zb_gemm_init_t init) {
    const size_t ldx = (size_t)k + 3, ldy = (size_t)n + 5;
    float *x = s_rand(r, (size_t)m * ldx + 1);
    float *w = s_rand(r, (size_t)n * (size_t)k);
    float *bias = s_rand(r, (size_t)n);
    float *y0 = s_rand(r, (size_t)m * ldy + 1); /* initial y, for accumulate */
    float *y = s_alloc((size_t)m * ldy + 1), *want = s_alloc((size_t)m * ldy + 1);
    memcpy(y, y0, ((size_t)m * ldy + 1) * sizeof *y);
    memcpy(want, y0, ((size_t)m * ldy + 1) * sizeof *y);
    float *p = s_packed(w, n, k);
    zb_gemm_w_t W = {.p = p, .n = n, .k = k};
    zb_gemm_args_t a = {
        .m = m, .x = x, .ldx = ldx, .w = &W, .init = init, .bias = bias, .y = y, .ldy = ldy};
    s_gemm(isa, threads, &a);
    s_chain(x, ldx, w, m, n, k, init, bias, want, ldy);
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < (int)ldy; j++) {
            const size_t at = (size_t)i * ldy + (size_t)j;
            if (j >= n) {
                if (s_bits(y[at]) != s_bits(y0[at]))
                    fail_msg("%s m=%d n=%d k=%d: padding y[%d][%d] written", zb_gemm_isa_name(isa),
                             m, n, k, i, j);
                continue;
            }
            double init_v = init == ZB_GEMM_ZERO ? 0.0 : init == ZB_GEMM_BIAS ? bias[j] : y0[at];
            double scale;
            double ref = s_ref(x + (size_t)i * ldx, w + (size_t)j * (size_t)k, k, init_v, &scale);
            double tol = (k + 2) * 6e-8 * scale + 1e-30;
            if (fabs((double)y[at] - ref) > tol)
                fail_msg("%s m=%d n=%d k=%d init=%d: y[%d][%d] = %.9g, float64 %.9g (tol %.3g)",
                         zb_gemm_isa_name(isa), m, n, k, (int)init, i, j, (double)y[at], ref, tol);
            if (s_bits(y[at]) != s_bits(want[at]))
                fail_msg("%s m=%d n=%d k=%d init=%d: y[%d][%d] = %a, the definition gives %a",
                         zb_gemm_isa_name(isa), m, n, k, (int)init, i, j, (double)y[at],
                         (double)want[at]);
        }
    }
    free(x);
    free(w);
    free(bias);
    free(y0);
    free(y);
    free(want);
    free(p);
}

/* --- tests --------------------------------------------------------------- */

static void test_isa(void **state) {
    (void)state;
    assert_true(zb_gemm_isa_supported(ZB_GEMM_SCALAR));
    assert_true(zb_gemm_isa_supported(zb_gemm_isa_best()));
    assert_string_equal(zb_gemm_isa_name(ZB_GEMM_SCALAR), "scalar");
    assert_string_equal(zb_gemm_isa_name(ZB_GEMM_AVX2), "avx2");
    assert_string_equal(zb_gemm_isa_name(ZB_GEMM_AVX512), "avx512");
    zb_gemm_isa_t isas[3];
    print_message("variants on this CPU: %d (best %s)\n", s_isas(isas),
                  zb_gemm_isa_name(zb_gemm_isa_best()));
}

/* Every M from 1 to 67 (past every tile height, several slivers and their
 * tails) for N and K off the tile sizes, in every variant. */
static void test_shapes_every_m(void **state) {
    (void)state;
    rng_t r = {1};
    zb_gemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int nk[][2] = {{1, 1}, {5, 3}, {16, 16}, {17, 31}, {33, 64}, {50, 7}};
    for (int v = 0; v < n_isa; v++)
        for (size_t s = 0; s < sizeof nk / sizeof nk[0]; s++)
            for (int m = 1; m <= 67; m++)
                s_check_shape(&r, isas[v], 1 + m % 3, m, nk[s][0], nk[s][1],
                              (zb_gemm_init_t)(m % 3));
}

/* K across the k-block boundaries (the chain continues through y), N over
 * several panels, all init modes, threads 1..4. */
static void test_shapes_k_blocks(void **state) {
    (void)state;
    rng_t r = {2};
    zb_gemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int ks[] = {255, 256, 257, 600};
    for (int v = 0; v < n_isa; v++)
        for (size_t s = 0; s < sizeof ks / sizeof ks[0]; s++)
            for (int init = 0; init < 3; init++)
                s_check_shape(&r, isas[v], 1 + (int)s, 13 + init * 11, 47, ks[s],
                              (zb_gemm_init_t)init);
}

/* BERT's shapes (Q/K/V stacked, attention output, FFN in and out) on a few
 * rows: float64, the fmaf chain, and OpenBLAS within float rounding. */
static void test_bert_shapes(void **state) {
    (void)state;
    rng_t r = {3};
    zb_gemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int shapes[][2] = {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}};
    const int m = 29;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], k = shapes[s][1];
        /* the scalar variant is the definition itself: one shape is enough */
        for (int v = n_isa > 1 ? 1 : 0; v < n_isa; v++)
            s_check_shape(&r, isas[v], 2, m, n, k, ZB_GEMM_BIAS);
        /* OpenBLAS as an independent judge */
        float *x = s_rand(&r, (size_t)m * (size_t)k), *w = s_rand(&r, (size_t)n * (size_t)k);
        float *y = s_alloc((size_t)m * (size_t)n), *yb = s_alloc((size_t)m * (size_t)n);
        float *p = s_packed(w, n, k);
        zb_gemm_w_t W = {.p = p, .n = n, .k = k};
        zb_gemm_args_t a = {.m = m,
                            .x = x,
                            .ldx = (size_t)k,
                            .w = &W,
                            .init = ZB_GEMM_ZERO,
                            .y = y,
                            .ldy = (size_t)n};
        s_gemm(zb_gemm_isa_best(), 2, &a);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x, k, w, k, 0.0f, yb,
                    n);
        double worst = 0;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                /* both within k + 2 roundings of the magnitudes from the exact sum */
                double scale, d = fabs((double)y[i * n + j] - (double)yb[i * n + j]);
                s_ref(x + (size_t)i * (size_t)k, w + (size_t)j * (size_t)k, k, 0.0, &scale);
                if (d > 2 * (k + 2) * 6e-8 * scale)
                    fail_msg("(%d, %d): %.9g vs OpenBLAS %.9g", i, j, (double)y[i * n + j],
                             (double)yb[i * n + j]);
                worst = fmax(worst, d);
            }
        print_message("[%d x %d] x [%d x %d]^T: max abs diff vs OpenBLAS %.3g\n", m, k, n, k,
                      worst);
        free(x);
        free(w);
        free(y);
        free(yb);
        free(p);
    }
}

/* A row's result is the same bits alone, at any place in batches of any
 * size, and with any thread count, in every variant. */
static void test_batch_invariance(void **state) {
    (void)state;
    rng_t r = {4};
    zb_gemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int n = 200, k = 300, big = 257; /* big: several row blocks per thread */
    float *x = s_rand(&r, (size_t)big * (size_t)k), *w = s_rand(&r, (size_t)n * (size_t)k);
    float *bias = s_rand(&r, (size_t)n);
    float *p = s_packed(w, n, k);
    zb_gemm_w_t W = {.p = p, .n = n, .k = k};
    float *yall = s_alloc((size_t)big * (size_t)n), *y = s_alloc((size_t)big * (size_t)n);
    for (int v = 0; v < n_isa; v++) {
        zb_gemm_args_t a = {.m = big,
                            .x = x,
                            .ldx = (size_t)k,
                            .w = &W,
                            .init = ZB_GEMM_BIAS,
                            .bias = bias,
                            .y = yall,
                            .ldy = (size_t)n};
        s_gemm(isas[v], 1, &a);
        /* any thread count, the whole batch */
        for (int t = 2; t <= 4; t++) {
            a.y = y;
            s_gemm(isas[v], t, &a);
            if (memcmp(y, yall, (size_t)big * (size_t)n * sizeof *y) != 0)
                fail_msg("%s: %d threads change the result", zb_gemm_isa_name(isas[v]), t);
        }
        /* sub-batches starting at every offset mod 13 and of every size mod 17 */
        for (int start = 0; start < big; start += 1 + (start % 13)) {
            const int len = 1 + (start * 7) % 17 < big - start ? 1 + (start * 7) % 17 : big - start;
            a.m = len;
            a.x = x + (size_t)start * (size_t)k;
            a.y = y;
            s_gemm(isas[v], 1 + start % 3, &a);
            if (memcmp(y, yall + (size_t)start * (size_t)n, (size_t)len * (size_t)n * sizeof *y))
                fail_msg("%s: rows %d..%d computed as a batch of %d differ from the big batch",
                         zb_gemm_isa_name(isas[v]), start, start + len - 1, len);
        }
        /* the same row copied to every place of a batch */
        float *xr = s_alloc((size_t)40 * (size_t)k);
        for (int i = 0; i < 40; i++)
            memcpy(xr + (size_t)i * (size_t)k, x + (size_t)123 * (size_t)k, (size_t)k * sizeof *x);
        a.m = 40;
        a.x = xr;
        a.y = y;
        s_gemm(isas[v], 2, &a);
        for (int i = 0; i < 40; i++)
            if (memcmp(y + (size_t)i * (size_t)n, yall + (size_t)123 * (size_t)n,
                       (size_t)n * sizeof *y) != 0)
                fail_msg("%s: row 123 at place %d of a batch differs", zb_gemm_isa_name(isas[v]),
                         i);
        free(xr);
        /* and every variant gives the same bits as the first */
        if (v > 0) {
            a = (zb_gemm_args_t){.m = big,
                                 .x = x,
                                 .ldx = (size_t)k,
                                 .w = &W,
                                 .init = ZB_GEMM_BIAS,
                                 .bias = bias,
                                 .y = y,
                                 .ldy = (size_t)n};
            s_gemm(isas[0], 3, &a);
            assert_memory_equal(y, yall, (size_t)big * (size_t)n * sizeof *y);
        }
    }
    free(x);
    free(w);
    free(bias);
    free(p);
    free(yall);
    free(y);
}

/* The epilogue sees every element exactly once, after its last k, in
 * segments of at most ZB_GEMM_EPILOGUE_MAX. */
typedef struct {
    int *seen; /* [m][n] */
    const float *base;
    size_t ldy;
    int n;
    int too_long;
} s_epi_t;

static void s_epilogue(void *ctx, float *y, int n) {
    s_epi_t *e = ctx;
    if (n < 1 || n > ZB_GEMM_EPILOGUE_MAX) e->too_long = 1;
    for (int i = 0; i < n; i++) {
        size_t at = (size_t)(y + i - e->base);
        e->seen[(at / e->ldy) * (size_t)e->n + at % e->ldy]++;
        y[i] = 2.0f * y[i] + 1.0f;
    }
}

static void test_epilogue(void **state) {
    (void)state;
    rng_t r = {5};
    zb_gemm_isa_t isas[3];
    const int n_isa = s_isas(isas);
    const int ms[] = {31, 15}; /* the second: one tall sliver (gemm.c) */
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
        const int m = ms[mi], n = 300, k = 600; /* three k blocks, several epilogue groups */
        float *x = s_rand(&r, (size_t)m * (size_t)k), *w = s_rand(&r, (size_t)n * (size_t)k);
        float *bias = s_rand(&r, (size_t)n);
        float *p = s_packed(w, n, k);
        zb_gemm_w_t W = {.p = p, .n = n, .k = k};
        float *y = s_alloc((size_t)m * (size_t)n), *want = s_alloc((size_t)m * (size_t)n);
        int *seen = calloc((size_t)m * (size_t)n, sizeof *seen);
        s_chain(x, (size_t)k, w, m, n, k, ZB_GEMM_BIAS, bias, want, (size_t)n);
        for (int v = 0; v < n_isa; v++) {
            memset(seen, 0, (size_t)m * (size_t)n * sizeof *seen);
            s_epi_t e = {.seen = seen, .base = y, .ldy = (size_t)n, .n = n};
            zb_gemm_args_t a = {.m = m,
                                .x = x,
                                .ldx = (size_t)k,
                                .w = &W,
                                .init = ZB_GEMM_BIAS,
                                .bias = bias,
                                .y = y,
                                .ldy = (size_t)n,
                                .epilogue = s_epilogue,
                                .epilogue_ctx = &e};
            s_gemm(isas[v], 2, &a);
            assert_false(e.too_long);
            for (int i = 0; i < m * n; i++) {
                if (seen[i] != 1) fail_msg("element %d seen %d times", i, seen[i]);
                if (s_bits(y[i]) != s_bits(2.0f * want[i] + 1.0f))
                    fail_msg("%s: element %d is not epilogue(final sum)", zb_gemm_isa_name(isas[v]),
                             i);
            }
        }
        free(x);
        free(w);
        free(bias);
        free(p);
        free(y);
        free(want);
        free(seen);
    }
}

static void test_pack_roundtrip(void **state) {
    (void)state;
    rng_t r = {6};
    const int shapes[][2] = {{1, 1}, {15, 4}, {16, 9}, {17, 33}, {100, 3}, {48, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int n = shapes[s][0], k = shapes[s][1];
        const size_t pf = zb_gemm_packed_floats(n, k);
        assert_int_equal(pf, (size_t)((n + ZB_GEMM_NR - 1) / ZB_GEMM_NR) * ZB_GEMM_NR * k);
        float *w = s_rand(&r, (size_t)n * (size_t)k);
        float *p = s_alloc(pf);
        memset(p, 0xff, pf * sizeof *p); /* padding must be overwritten with zeros */
        zb_gemm_pack(w, n, k, (size_t)k, p);
        /* the layout, element by element */
        for (int row = 0; row < (n + 15) / 16 * 16; row++)
            for (int kk = 0; kk < k; kk++) {
                float got = p[(size_t)(row / 16) * 16 * (size_t)k + (size_t)kk * 16 + row % 16];
                float exp = row < n ? w[(size_t)row * (size_t)k + (size_t)kk] : 0.0f;
                if (s_bits(got) != s_bits(exp)) fail_msg("n=%d k=%d: (%d, %d)", n, k, row, kk);
            }
        float *back = s_alloc((size_t)n * (size_t)k);
        zb_gemm_unpack(p, n, k, back, (size_t)k);
        assert_memory_equal(back, w, (size_t)n * (size_t)k * sizeof *w);
        /* stacking three matrices with pack_rows == packing their concatenation */
        float *cat = s_alloc((size_t)3 * (size_t)n * (size_t)k);
        for (int part = 0; part < 3; part++)
            memcpy(cat + (size_t)part * (size_t)n * (size_t)k, w,
                   (size_t)n * (size_t)k * sizeof *w);
        const size_t pf3 = zb_gemm_packed_floats(3 * n, k);
        float *p3 = s_alloc(pf3), *q3 = s_alloc(pf3);
        zb_gemm_pack(cat, 3 * n, k, (size_t)k, p3);
        memset(q3, 0, pf3 * sizeof *q3);
        for (int part = 0; part < 3; part++)
            zb_gemm_pack_rows(w, n, k, (size_t)k, part * n, 3 * n, q3);
        assert_memory_equal(p3, q3, pf3 * sizeof *p3);
        free(w);
        free(p);
        free(back);
        free(cat);
        free(p3);
        free(q3);
    }
}

/* m == 0 writes nothing; one thread and many threads on tiny work agree. */
static void test_edges(void **state) {
    (void)state;
    rng_t r = {7};
    float *w = s_rand(&r, 16 * 8), *x = s_rand(&r, 8), *y = s_rand(&r, 16);
    float keep[16];
    memcpy(keep, y, sizeof keep);
    float *p = s_packed(w, 16, 8);
    zb_gemm_w_t W = {.p = p, .n = 16, .k = 8};
    zb_gemm_args_t a = {.m = 0, .x = x, .ldx = 8, .w = &W, .init = ZB_GEMM_ZERO, .y = y, .ldy = 16};
    s_gemm(zb_gemm_isa_best(), 4, &a);
    assert_memory_equal(y, keep, sizeof keep);
    s_check_shape(&r, zb_gemm_isa_best(), 8, 1, 1, 1, ZB_GEMM_ACCUMULATE);
    s_check_shape(&r, zb_gemm_isa_best(), 8, 2, 3, 4, ZB_GEMM_BIAS);
    /* a NaN in one row poisons that row only (padding rows never leak) */
    float *x2 = s_rand(&r, 13 * 8), *y2 = s_alloc(13 * 16);
    x2[5 * 8 + 3] = NAN;
    a = (zb_gemm_args_t){
        .m = 13, .x = x2, .ldx = 8, .w = &W, .init = ZB_GEMM_ZERO, .y = y2, .ldy = 16};
    s_gemm(zb_gemm_isa_best(), 2, &a);
    for (int i = 0; i < 13; i++)
        for (int j = 0; j < 16; j++) assert_true(isnan(y2[i * 16 + j]) == (i == 5));
    free(x2);
    free(y2);
    free(w);
    free(x);
    free(y);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_shapes_every_m),
        cmocka_unit_test(test_shapes_k_blocks),
        cmocka_unit_test(test_bert_shapes),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_epilogue),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
