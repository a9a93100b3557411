/*
 * gemm.c -- packed-weight fp32 GEMM for the linear layers (see gemm.h).
 *
 * Structure (BLIS-style, with the weights as the pre-packed operand):
 *   for each block of S_MC rows of x                (this thread's rows)
 *     for each block of S_KC columns of x / rows of the panels
 *       pack the x block into slivers of MR rows, [kc][MR] each, zero rows
 *       past the end (the activation block stays in L2)
 *       for each panel p                            (this thread's panels)
 *         for each sliver: micro-kernel MR x 16 over kc steps (the panel's
 *         kc x 16 slice stays in L1 across the slivers)
 * Each k block's micro-kernel call starts its accumulators from 0 and adds
 * their sums to 0, the bias (first block) or the partial result in y (later
 * blocks) when it stores them: exactly gemm.h's "Determinism", whatever the
 * rows, panels and threads.  Tiles cut
 * by the edge of y (rows past m, columns past n) run the same micro-kernel
 * on a local tile and copy the valid part, so no element ever takes a
 * different instruction sequence.
 *
 * Blocking for Zen 3/4 (32 KiB L1d, 512 KiB-1 MiB L2 per core): a panel
 * slice is S_KC * 64 bytes = 16 KiB (half of L1, the rest for the sliver and
 * the C tile); an activation block is S_MC * S_KC * 4 = 192 KiB of L2.
 * While a panel runs, the next panel's slice is prefetched into L2 and each
 * C tile before its kernel call ends (together about 4% at BERT shapes).  Measured on the
 * target (Zen 4, AVX-512 12 x 16): 105-110 GFLOP/s per core at BERT shapes,
 * about 95% of the FMA peak; kc 192/384 and mc 96/384 were no better.
 *
 * A few rows (one short text: up to S_TALL_ROWS on AVX-512,
 * S_TALL_ROWS_AVX2 on AVX2) take another road: packed once before the team
 * starts, they run as slivers of about equal height (up to S_TALL_MAX, or
 * S_TALL_MAX_AVX2) on kernels of that height, and the next slice's
 * prefetches are spread over the k loop.  One 15-token text on 2 cores:
 * 21 -> 14.5 ms with AVX-512, 25 -> 18 ms with AVX2; 27 tokens 30 -> 23 ms
 * with AVX-512 (the 12-row tile plus a short remainder read each slice
 * twice and ran the remainder at FMA latency; every thread repacked the
 * rows; bursts of prefetches stalled).
 *
 * Threads take work units (row blocks, or panel groups when rows are few)
 * from a dynamic schedule; the split never changes a result.
 */
#include "gemm.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define S_NR         ZB_GEMM_NR
#define S_KC         ZB_GEMM_KC /* k block: a panel slice of 16 KiB stays in L1 */
#define S_MC         192        /* row block: a multiple of every MR (4, 6, 12) */
#define S_EPI_PANELS (ZB_GEMM_EPILOGUE_MAX / ZB_GEMM_NR) /* panels per epilogue call */
/* per-thread work: one packed activation block, or every k block of a few
 * rows (s_run); a multiple of 16 floats, so each thread's part stays
 * cache-line aligned */
#define S_WORK_THREAD ((size_t)S_MC * S_KC * 2)

#define S_AVX2_FN   __attribute__((target("avx2,fma")))
#define S_AVX512_FN __attribute__((target("avx512f")))

/* What a micro-kernel call adds its block sums to before storing them. */
typedef enum { S_ADD_NONE, S_ADD_C, S_ADD_BIAS } s_add_t;

/* c[MR][16] (row stride ldc) = (add) + the fma chains from 0 over kc steps
 * of a[kc][MR] and b[kc][16]; bias holds 16 readable floats for
 * S_ADD_BIAS.  On the way, the SIMD kernels prefetch into L2 the first
 * min(pf_n, ceil(kc / 16)) cache lines at pf, one per 16 steps, and the
 * tile's rows of c, which come back from L3 after the first k block (the
 * row block's y outgrows L2): spread through the loop, these cost nothing,
 * where bursts of prefetches between calls stalled on page walks (3% of the
 * time). */
typedef void (*s_kern_fn)(int kc, const float *a, const float *b, float *c, size_t ldc, s_add_t add,
                          const float *bias, const float *pf, int pf_n);

/* The same for one sliver of rows packed with row stride `stride`. */
typedef void (*s_tall_fn)(int kc, const float *a, int stride, const float *b, float *c, size_t ldc,
                          s_add_t add, const float *bias, const float *pf, int pf_n);

typedef void (*s_pack_fn)(const float *x, size_t ldx, int rows, int kc, int mr, float *dst);

typedef struct {
    int mr;
    s_kern_fn fn;
    s_pack_fn pack;
    /* kernels for one sliver of r rows at any row stride (index r, 1 <= r
     * <= tall_max >= mr), used for products of up to tall_rows rows and for
     * the first r < mr rows of a sliver (the last of a row block); NULL:
     * none, such an edge runs fn on a zero-padded local tile.  Each row's
     * sums are the same fma chains as in fn, so the bits are too. */
    const s_tall_fn *tall;
    int tall_max, tall_rows;
} s_kern_t;

/* --- micro-kernels ------------------------------------------------------ */

/* The reference: fmaf is the same correctly rounded fused operation as the
 * SIMD FMA instructions, and + the same rounded add, so this gives the
 * same bits as they do. */
#define S_MR_SCALAR 4
static void s_kern_scalar(int kc, const float *a, const float *b, float *c, size_t ldc, s_add_t add,
                          const float *bias, const float *pf, int pf_n) {
    (void)pf; /* the reference has no use for prefetching */
    (void)pf_n;
    float acc[S_MR_SCALAR][S_NR];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        const float *ak = a + (size_t)k * S_MR_SCALAR, *bk = b + (size_t)k * S_NR;
        for (int r = 0; r < S_MR_SCALAR; r++)
            for (int j = 0; j < S_NR; j++) acc[r][j] = fmaf(ak[r], bk[j], acc[r][j]);
    }
    for (int r = 0; r < S_MR_SCALAR; r++)
        for (int j = 0; j < S_NR; j++) {
            float *cj = c + (size_t)r * ldc + (size_t)j;
            *cj = add == S_ADD_NONE ? acc[r][j]
                  : add == S_ADD_C  ? *cj + acc[r][j]
                                    : bias[j] + acc[r][j];
        }
}

/* The prefetches of a SIMD kernel at the start of each run of 16 k steps
 * (see s_kern_fn): one line of the next slice while pf_n lasts, and row
 * k0 / 16 of the tile's mr rows of c. */
static inline void s_prefetch_step(const float **pf, int *pf_n, const float *c, size_t ldc, int k0,
                                   int mr) {
    if (*pf_n > 0) {
        __builtin_prefetch(*pf, 0, 2);
        *pf += S_NR;
        (*pf_n)--;
    }
    if (k0 / 16 < mr) __builtin_prefetch(c + (size_t)(k0 / 16) * ldc, 1, 3);
}

/* AVX2: 6 rows x 16 columns = 12 ymm accumulators, 2 for the panel row, 1
 * for the broadcast: 15 of the 16 registers. */
#define S_MR_AVX2 6
S_AVX2_FN static void s_kern_avx2(int kc, const float *a, const float *b, float *c, size_t ldc,
                                  s_add_t add, const float *bias, const float *pf, int pf_n) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c10 = c20 = c30 = c40 = c50 = _mm256_setzero_ps();
    c01 = c11 = c21 = c31 = c41 = c51 = _mm256_setzero_ps();
#define S_STEP(r)                                                                                  \
    x = _mm256_broadcast_ss(a + (r));                                                              \
    c##r##0 = _mm256_fmadd_ps(x, w0, c##r##0);                                                     \
    c##r##1 = _mm256_fmadd_ps(x, w1, c##r##1)
    for (int k0 = 0; k0 < kc; k0 += 16) {
        s_prefetch_step(&pf, &pf_n, c, ldc, k0, S_MR_AVX2);
        const int k1 = kc - k0 < 16 ? kc : k0 + 16;
        for (int k = k0; k < k1; k++) {
            const __m256 w0 = _mm256_load_ps(b), w1 = _mm256_load_ps(b + 8);
            __m256 x;
            S_STEP(0);
            S_STEP(1);
            S_STEP(2);
            S_STEP(3);
            S_STEP(4);
            S_STEP(5);
            a += S_MR_AVX2;
            b += S_NR;
        }
    }
#undef S_STEP
    __m256 z0 = _mm256_setzero_ps(), z1 = _mm256_setzero_ps();
    if (add == S_ADD_BIAS) {
        z0 = _mm256_loadu_ps(bias);
        z1 = _mm256_loadu_ps(bias + 8);
    }
    /* NONE stores the sums as they are (no + 0, which would turn -0 to 0) */
#define S_STORE_ROW(r)                                                                             \
    do {                                                                                           \
        float *cr = c + (size_t)(r)*ldc;                                                           \
        if (add == S_ADD_C) {                                                                      \
            z0 = _mm256_loadu_ps(cr);                                                              \
            z1 = _mm256_loadu_ps(cr + 8);                                                          \
        }                                                                                          \
        if (add != S_ADD_NONE) {                                                                   \
            c##r##0 = _mm256_add_ps(z0, c##r##0);                                                  \
            c##r##1 = _mm256_add_ps(z1, c##r##1);                                                  \
        }                                                                                          \
        _mm256_storeu_ps(cr, c##r##0);                                                             \
        _mm256_storeu_ps(cr + 8, c##r##1);                                                         \
    } while (0)
    S_STORE_ROW(0);
    S_STORE_ROW(1);
    S_STORE_ROW(2);
    S_STORE_ROW(3);
    S_STORE_ROW(4);
    S_STORE_ROW(5);
#undef S_STORE_ROW
}

/* AVX-512: 12 rows x 16 columns = 12 zmm accumulators; the broadcast of
 * each activation folds into its FMA as a memory operand, so one panel row
 * load feeds 12 FMAs. */
#define S_MR_AVX512 12
S_AVX512_FN static void s_kern_avx512(int kc, const float *a, const float *b, float *c, size_t ldc,
                                      s_add_t add, const float *bias, const float *pf, int pf_n) {
    __m512 c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = _mm512_setzero_ps();
    for (int k0 = 0; k0 < kc; k0 += 16) {
        s_prefetch_step(&pf, &pf_n, c, ldc, k0, S_MR_AVX512);
        const int k1 = kc - k0 < 16 ? kc : k0 + 16;
        for (int k = k0; k < k1; k++) {
            const __m512 w = _mm512_load_ps(b);
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), w, c0);
            c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1]), w, c1);
            c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2]), w, c2);
            c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3]), w, c3);
            c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4]), w, c4);
            c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5]), w, c5);
            c6 = _mm512_fmadd_ps(_mm512_set1_ps(a[6]), w, c6);
            c7 = _mm512_fmadd_ps(_mm512_set1_ps(a[7]), w, c7);
            c8 = _mm512_fmadd_ps(_mm512_set1_ps(a[8]), w, c8);
            c9 = _mm512_fmadd_ps(_mm512_set1_ps(a[9]), w, c9);
            c10 = _mm512_fmadd_ps(_mm512_set1_ps(a[10]), w, c10);
            c11 = _mm512_fmadd_ps(_mm512_set1_ps(a[11]), w, c11);
            a += S_MR_AVX512;
            b += S_NR;
        }
    }
    __m512 z = add == S_ADD_BIAS ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
#define S_STORE_ROW(r)                                                                             \
    do {                                                                                           \
        float *cr = c + (size_t)(r)*ldc;                                                           \
        if (add == S_ADD_C) z = _mm512_loadu_ps(cr);                                               \
        _mm512_storeu_ps(cr, add == S_ADD_NONE ? c##r : _mm512_add_ps(z, c##r));                   \
    } while (0)
    S_STORE_ROW(0);
    S_STORE_ROW(1);
    S_STORE_ROW(2);
    S_STORE_ROW(3);
    S_STORE_ROW(4);
    S_STORE_ROW(5);
    S_STORE_ROW(6);
    S_STORE_ROW(7);
    S_STORE_ROW(8);
    S_STORE_ROW(9);
    S_STORE_ROW(10);
    S_STORE_ROW(11);
#undef S_STORE_ROW
}

/* The tall kernels' prefetches at the start of run blk of 16 k steps, with
 * `left` runs to go: an even share of the next slice's remaining pf_n
 * lines, and row blk of the tile's rows of c. */
static inline void s_prefetch_spread(const float **pf, int *pf_n, int left, const float *c,
                                     size_t ldc, int blk, int rows) {
    for (int n = (*pf_n + left - 1) / left; n > 0; n--, (*pf_n)--) {
        __builtin_prefetch(*pf, 0, 2);
        *pf += S_NR;
    }
    if (blk < rows) __builtin_prefetch(c + (size_t)blk * ldc, 1, 3);
}

/* A few rows (one short text) as one sliver of R rows, up to
 * S_TALL_MAX, packed with row stride `stride` (>= R): each panel row load
 * feeds R FMAs, where 12 + a remainder sliver read every slice twice and
 * ran the remainder's short chains at FMA latency, not throughput.  The
 * next slice's pf_n lines are prefetched spread over the k loop.  Each
 * row's sums are the same fma chains as in s_kern_avx512, so the bits are
 * too. */
#define S_TALL_MAX       24
#define S_TALL_ROWS      64 /* rows that take the tall road (AVX-512) */
#define S_TALL_ROWS_AVX2 24
#define S_TALL_SLIVERS   4 /* the most slivers either road cuts */
#define S_AVX512_TALL(R)                                                                           \
    S_AVX512_FN static void s_tall_avx512_##R(int kc, const float *a, int stride, const float *b,  \
                                              float *c, size_t ldc, s_add_t add,                   \
                                              const float *bias, const float *pf, int pf_n) {      \
        __m512 acc[R];                                                                             \
        _Pragma("GCC unroll 24") for (int r = 0; r < (R); r++) acc[r] = _mm512_setzero_ps();       \
        const int blocks = (kc + 15) / 16;                                                         \
        for (int k0 = 0, blk = 0; k0 < kc; k0 += 16, blk++) {                                      \
            s_prefetch_spread(&pf, &pf_n, blocks - blk, c, ldc, blk, (R));                         \
            const int k1 = kc - k0 < 16 ? kc : k0 + 16;                                            \
            for (int k = k0; k < k1; k++) {                                                        \
                const __m512 w = _mm512_load_ps(b);                                                \
                _Pragma("GCC unroll 24") for (int r = 0; r < (R); r++) acc[r] =                    \
                    _mm512_fmadd_ps(_mm512_set1_ps(a[r]), w, acc[r]);                              \
                a += stride;                                                                       \
                b += S_NR;                                                                         \
            }                                                                                      \
        }                                                                                          \
        __m512 z = add == S_ADD_BIAS ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();                \
        _Pragma("GCC unroll 24") for (int r = 0; r < (R); r++) {                                   \
            float *cr = c + (size_t)r * ldc;                                                       \
            if (add == S_ADD_C) z = _mm512_loadu_ps(cr);                                           \
            _mm512_storeu_ps(cr, add == S_ADD_NONE ? acc[r] : _mm512_add_ps(z, acc[r]));           \
        }                                                                                          \
    }
S_AVX512_TALL(1)
S_AVX512_TALL(2)
S_AVX512_TALL(3)
S_AVX512_TALL(4)
S_AVX512_TALL(5)
S_AVX512_TALL(6)
S_AVX512_TALL(7)
S_AVX512_TALL(8)
S_AVX512_TALL(9)
S_AVX512_TALL(10)
S_AVX512_TALL(11)
S_AVX512_TALL(12)
S_AVX512_TALL(13)
S_AVX512_TALL(14)
S_AVX512_TALL(15)
S_AVX512_TALL(16)
S_AVX512_TALL(17)
S_AVX512_TALL(18)
S_AVX512_TALL(19)
S_AVX512_TALL(20)
S_AVX512_TALL(21)
S_AVX512_TALL(22)
S_AVX512_TALL(23)
S_AVX512_TALL(24)
#undef S_AVX512_TALL

static const s_tall_fn s_avx512_tall[S_TALL_MAX + 1] = {
    NULL,
    s_tall_avx512_1,
    s_tall_avx512_2,
    s_tall_avx512_3,
    s_tall_avx512_4,
    s_tall_avx512_5,
    s_tall_avx512_6,
    s_tall_avx512_7,
    s_tall_avx512_8,
    s_tall_avx512_9,
    s_tall_avx512_10,
    s_tall_avx512_11,
    s_tall_avx512_12,
    s_tall_avx512_13,
    s_tall_avx512_14,
    s_tall_avx512_15,
    s_tall_avx512_16,
    s_tall_avx512_17,
    s_tall_avx512_18,
    s_tall_avx512_19,
    s_tall_avx512_20,
    s_tall_avx512_21,
    s_tall_avx512_22,
    s_tall_avx512_23,
    s_tall_avx512_24,
};

/* The AVX2 form: R rows x 16 columns in 2R registers (R <= 6, as the
 * 6-row kernel), for up to S_TALL_ROWS_AVX2 rows. */
#define S_TALL_MAX_AVX2 6
#define S_AVX2_TALL(R)                                                                             \
    S_AVX2_FN static void s_tall_avx2_##R(int kc, const float *a, int stride, const float *b,      \
                                          float *c, size_t ldc, s_add_t add, const float *bias,    \
                                          const float *pf, int pf_n) {                             \
        __m256 lo[R], hi[R];                                                                       \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) lo[r] = hi[r] = _mm256_setzero_ps(); \
        const int blocks = (kc + 15) / 16;                                                         \
        for (int k0 = 0, blk = 0; k0 < kc; k0 += 16, blk++) {                                      \
            s_prefetch_spread(&pf, &pf_n, blocks - blk, c, ldc, blk, (R));                         \
            const int k1 = kc - k0 < 16 ? kc : k0 + 16;                                            \
            for (int k = k0; k < k1; k++) {                                                        \
                const __m256 w0 = _mm256_load_ps(b), w1 = _mm256_load_ps(b + 8);                   \
                _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                            \
                    const __m256 x = _mm256_broadcast_ss(a + r);                                   \
                    lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);                                         \
                    hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);                                         \
                }                                                                                  \
                a += stride;                                                                       \
                b += S_NR;                                                                         \
            }                                                                                      \
        }                                                                                          \
        __m256 z0 = _mm256_setzero_ps(), z1 = _mm256_setzero_ps();                                 \
        if (add == S_ADD_BIAS) {                                                                   \
            z0 = _mm256_loadu_ps(bias);                                                            \
            z1 = _mm256_loadu_ps(bias + 8);                                                        \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                    \
            float *cr = c + (size_t)r * ldc;                                                       \
            if (add == S_ADD_C) {                                                                  \
                z0 = _mm256_loadu_ps(cr);                                                          \
                z1 = _mm256_loadu_ps(cr + 8);                                                      \
            }                                                                                      \
            _mm256_storeu_ps(cr, add == S_ADD_NONE ? lo[r] : _mm256_add_ps(z0, lo[r]));            \
            _mm256_storeu_ps(cr + 8, add == S_ADD_NONE ? hi[r] : _mm256_add_ps(z1, hi[r]));        \
        }                                                                                          \
    }
S_AVX2_TALL(1)
S_AVX2_TALL(2)
S_AVX2_TALL(3)
S_AVX2_TALL(4)
S_AVX2_TALL(5)
S_AVX2_TALL(6)
#undef S_AVX2_TALL

static const s_tall_fn s_avx2_tall[S_TALL_MAX_AVX2 + 1] = {
    NULL, s_tall_avx2_1, s_tall_avx2_2, s_tall_avx2_3, s_tall_avx2_4, s_tall_avx2_5, s_tall_avx2_6,
};

/* --- instruction sets ------------------------------------------------------ */

bool zb_gemm_isa_supported(zb_gemm_isa_t isa) {
    __builtin_cpu_init();
    switch (isa) {
    case ZB_GEMM_SCALAR:
        return true;
    case ZB_GEMM_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ZB_GEMM_AVX512:
        return __builtin_cpu_supports("avx512f");
    }
    return false;
}

const char *zb_gemm_isa_name(zb_gemm_isa_t isa) {
    switch (isa) {
    case ZB_GEMM_SCALAR:
        return "scalar";
    case ZB_GEMM_AVX2:
        return "avx2";
    case ZB_GEMM_AVX512:
        return "avx512";
    }
    return "?";
}

int zb_gemm_isa_ceiling(const char *env, const char *const *names, int n, int best) {
    const char *cap = getenv(env);
    for (int i = 0; cap != NULL && i < n; i++)
        if (strcmp(cap, names[i]) == 0 && i < best) best = i;
    return best;
}

zb_gemm_isa_t zb_gemm_isa_best(void) {
    zb_gemm_isa_t best = ZB_GEMM_SCALAR;
    if (zb_gemm_isa_supported(ZB_GEMM_AVX2)) best = ZB_GEMM_AVX2;
    if (zb_gemm_isa_supported(ZB_GEMM_AVX512)) best = ZB_GEMM_AVX512;
    /* a ceiling for measurements and tests; results are the same bits */
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    return (zb_gemm_isa_t)zb_gemm_isa_ceiling("ZB_GEMM_ISA", names, 3, (int)best);
}

/* --- packing ------------------------------------------------------------- */

size_t zb_gemm_packed_floats(int n, int k) {
    size_t panels = ((size_t)n + S_NR - 1) / S_NR;
    return panels * S_NR * (size_t)k;
}

void zb_gemm_pack_rows(const float *w, int rows, int k, size_t ldw, int row0, int n_total,
                       float *packed) {
    (void)n_total; /* the layout of a row does not depend on the total */
    for (int r = 0; r < rows; r++) {
        const int row = row0 + r;
        float *dst = packed + (size_t)(row / S_NR) * S_NR * (size_t)k + (size_t)(row % S_NR);
        const float *src = w + (size_t)r * ldw;
        for (int kk = 0; kk < k; kk++) dst[(size_t)kk * S_NR] = src[kk];
    }
}

void zb_gemm_pack(const float *w, int n, int k, size_t ldw, float *packed) {
    memset(packed, 0, zb_gemm_packed_floats(n, k) * sizeof *packed);
    zb_gemm_pack_rows(w, n, k, ldw, 0, n, packed);
}

void zb_gemm_unpack(const float *packed, int n, int k, float *w, size_t ldw) {
    for (int r = 0; r < n; r++) {
        const float *src = packed + (size_t)(r / S_NR) * S_NR * (size_t)k + (size_t)(r % S_NR);
        float *dst = w + (size_t)r * ldw;
        for (int kk = 0; kk < k; kk++) dst[kk] = src[(size_t)kk * S_NR];
    }
}

/* Packs rows [0, rows) and columns [0, kc) of x (row stride ldx) into
 * slivers of mr rows, sliver s at dst + s * kc * mr holding [kc][mr]; rows
 * past `rows` up to the sliver's end are zero. */
static void s_pack_x_scalar(const float *x, size_t ldx, int rows, int kc, int mr, float *dst) {
    for (int s0 = 0; s0 < rows; s0 += mr) {
        const int valid = rows - s0 < mr ? rows - s0 : mr;
        for (int k = 0; k < kc; k++) {
            float *d = dst + (size_t)k * (size_t)mr;
            for (int r = 0; r < valid; r++) d[r] = x[(size_t)(s0 + r) * ldx + (size_t)k];
            for (int r = valid; r < mr; r++) d[r] = 0.0f;
        }
        dst += (size_t)kc * (size_t)mr;
    }
}

/* The same with 8 x 4 and 8 x 2 transposes in registers (mr is a multiple
 * of 2): the scalar loop's strided stores cost about 8% of a GEMM with
 * N = 768.  Missing rows read as zero vectors. */
S_AVX2_FN static void s_pack_x_avx2(const float *x, size_t ldx, int rows, int kc, int mr,
                                    float *dst) {
    const size_t smr = (size_t)mr;
    const int kc8 = kc & ~7;
    for (int s0 = 0; s0 < rows; s0 += mr) {
        const int valid = rows - s0 < mr ? rows - s0 : mr;
        const float *xs = x + (size_t)s0 * ldx;
        for (int r0 = 0; r0 < mr; r0 += 4) {
            const int four = mr - r0 >= 4;
            const float *p[4];
            for (int i = 0; i < 4; i++) p[i] = r0 + i < valid ? xs + (size_t)(r0 + i) * ldx : NULL;
            for (int k = 0; k < kc8; k += 8) {
                __m256 v[4];
                for (int i = 0; i < 4; i++)
                    v[i] = p[i] != NULL ? _mm256_loadu_ps(p[i] + k) : _mm256_setzero_ps();
                /* t0 = k0 k1 | k4 k5 of rows 0,1 interleaved; t1 = k2 k3 | k6 k7 */
                const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]);
                const __m256 t1 = _mm256_unpackhi_ps(v[0], v[1]);
                float *d = dst + (size_t)k * smr + (size_t)r0;
                if (four) {
                    const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]);
                    const __m256 t3 = _mm256_unpackhi_ps(v[2], v[3]);
                    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44); /* k0 | k4 */
                    const __m256 u1 = _mm256_shuffle_ps(t0, t2, 0xee); /* k1 | k5 */
                    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44); /* k2 | k6 */
                    const __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xee); /* k3 | k7 */
                    _mm_storeu_ps(d, _mm256_castps256_ps128(u0));
                    _mm_storeu_ps(d + smr, _mm256_castps256_ps128(u1));
                    _mm_storeu_ps(d + 2 * smr, _mm256_castps256_ps128(u2));
                    _mm_storeu_ps(d + 3 * smr, _mm256_castps256_ps128(u3));
                    _mm_storeu_ps(d + 4 * smr, _mm256_extractf128_ps(u0, 1));
                    _mm_storeu_ps(d + 5 * smr, _mm256_extractf128_ps(u1, 1));
                    _mm_storeu_ps(d + 6 * smr, _mm256_extractf128_ps(u2, 1));
                    _mm_storeu_ps(d + 7 * smr, _mm256_extractf128_ps(u3, 1));
                } else { /* two rows: 64-bit pieces */
                    const __m128 a0 = _mm256_castps256_ps128(t0), a1 = _mm256_castps256_ps128(t1);
                    const __m128 b0 = _mm256_extractf128_ps(t0, 1);
                    const __m128 b1 = _mm256_extractf128_ps(t1, 1);
                    _mm_storel_pi((__m64 *)(void *)d, a0);
                    _mm_storeh_pi((__m64 *)(void *)(d + smr), a0);
                    _mm_storel_pi((__m64 *)(void *)(d + 2 * smr), a1);
                    _mm_storeh_pi((__m64 *)(void *)(d + 3 * smr), a1);
                    _mm_storel_pi((__m64 *)(void *)(d + 4 * smr), b0);
                    _mm_storeh_pi((__m64 *)(void *)(d + 5 * smr), b0);
                    _mm_storel_pi((__m64 *)(void *)(d + 6 * smr), b1);
                    _mm_storeh_pi((__m64 *)(void *)(d + 7 * smr), b1);
                }
            }
            const int n = four ? 4 : 2;
            for (int k = kc8; k < kc; k++)
                for (int i = 0; i < n; i++)
                    dst[(size_t)k * smr + (size_t)(r0 + i)] = p[i] != NULL ? p[i][k] : 0.0f;
        }
        dst += (size_t)kc * smr;
    }
}

static s_kern_t s_kernel(zb_gemm_isa_t isa) {
    switch (isa) {
    case ZB_GEMM_AVX512:
        return (s_kern_t){S_MR_AVX512,   s_kern_avx512, s_pack_x_avx2,
                          s_avx512_tall, S_TALL_MAX,    S_TALL_ROWS};
    case ZB_GEMM_AVX2:
        return (s_kern_t){S_MR_AVX2,   s_kern_avx2,     s_pack_x_avx2,
                          s_avx2_tall, S_TALL_MAX_AVX2, S_TALL_ROWS_AVX2};
    case ZB_GEMM_SCALAR:
        break;
    }
    return (s_kern_t){S_MR_SCALAR, s_kern_scalar, s_pack_x_scalar, NULL, 0, 0};
}

/* --- driver ---------------------------------------------------------------- */

typedef struct {
    const zb_gemm_args_t *a;
    s_kern_t kern;
    int n_panels;
} s_plan_t;

/* What the micro-kernels add their sums of the k block at k0 to: the
 * partial result after the first block, else what init says. */
static s_add_t s_add_mode(const zb_gemm_args_t *a, int k0) {
    return k0 > 0                    ? S_ADD_C
           : a->init == ZB_GEMM_ZERO ? S_ADD_NONE
           : a->init == ZB_GEMM_BIAS ? S_ADD_BIAS
                                     : S_ADD_C;
}

/* Panel p of a unit's panels [p0, p1) is final for rows [i0, i0 + rows):
 * when it closes a group of S_EPI_PANELS (or the unit), the epilogue runs
 * on the group's columns of those rows, still in cache, each call covering
 * up to ZB_GEMM_EPILOGUE_MAX columns rather than one tile's 16. */
static void s_epilogue_group(const zb_gemm_args_t *a, int i0, int rows, int p, int p0, int p1) {
    if (a->epilogue == NULL || ((p - p0 + 1) % S_EPI_PANELS != 0 && p + 1 != p1)) return;
    const int c0 = (p - (p - p0) % S_EPI_PANELS) * S_NR;
    const int c1 = p * S_NR + S_NR < a->w->n ? p * S_NR + S_NR : a->w->n;
    for (int r = 0; r < rows; r++)
        a->epilogue(a->epilogue_ctx, a->y + (size_t)(i0 + r) * a->ldy + (size_t)c0, c1 - c0);
}

/* A tile cut by the edge of y (cols < 16 of rows rows at c) runs on a
 * local 16-wide tile: zero padding in, with what the kernel adds to (y
 * or the bias), then the valid part out.  Rows up to S_TALL_MAX, which is
 * >= every mr. */
typedef struct {
    float y[S_TALL_MAX * S_NR] __attribute__((aligned(64)));
    float bias[S_NR] __attribute__((aligned(64)));
} s_edge_t;

static void s_edge_in(s_edge_t *e, const float *c, size_t ldc, int rows, int cols, s_add_t add,
                      const float *bias) {
    memset(e, 0, sizeof *e);
    if (add == S_ADD_C)
        for (int r = 0; r < rows; r++)
            memcpy(e->y + r * S_NR, c + (size_t)r * ldc, (size_t)cols * sizeof *c);
    if (add == S_ADD_BIAS) memcpy(e->bias, bias, (size_t)cols * sizeof *bias);
}

static void s_edge_out(const s_edge_t *e, float *c, size_t ldc, int rows, int cols) {
    for (int r = 0; r < rows; r++)
        memcpy(c + (size_t)r * ldc, e->y + r * S_NR, (size_t)cols * sizeof *c);
}

/* One tile: rows x cols of y at c (row stride ldc), from a packed sliver and
 * a panel slice.  A full tile goes straight to y, on fn or, for the first
 * rows < mr of a sliver, on the tall kernel of that height; an edge tile
 * runs fn on a local tile (s_edge_t). */
static void s_tile(const s_plan_t *pl, int kc, const float *ap, const float *bp, float *c, int rows,
                   int cols, s_add_t add, const float *bias, const float *pf, int pf_n) {
    const zb_gemm_args_t *a = pl->a;
    const size_t ldc = a->ldy;
    if (rows == pl->kern.mr && cols == S_NR) {
        pl->kern.fn(kc, ap, bp, c, ldc, add, bias, pf, pf_n);
    } else if (cols == S_NR && pl->kern.tall != NULL) {
        /* one line per 16 steps, as fn: s_panel_block issued the rest */
        const int blocks = (kc + 15) / 16;
        pl->kern.tall[rows](kc, ap, pl->kern.mr, bp, c, ldc, add, bias, pf,
                            pf_n < blocks ? pf_n : blocks);
    } else {
        s_edge_t e;
        s_edge_in(&e, c, ldc, rows, cols, add, bias);
        pl->kern.fn(kc, ap, bp, e.y, S_NR, add, e.bias, pf, pf_n);
        s_edge_out(&e, c, ldc, rows, cols);
    }
}

/* One k block of panel p over the mc rows of a row block starting at row
 * i0: the tiles of every sliver (packed at ap, [kc][mr] each), then, when
 * that was the panel's last k block, the epilogue of its group. */
static void s_panel_block(const s_plan_t *pl, int i0, int mc, int p, int p0, int p1, int k0, int kc,
                          const float *ap, const float *pf_end) {
    const zb_gemm_args_t *a = pl->a;
    const int K = a->w->k, N = a->w->n, mr = pl->kern.mr;
    const s_add_t add = s_add_mode(a, k0);
    const float *bp = a->w->p + (size_t)p * S_NR * (size_t)K + (size_t)k0 * S_NR;
    const int j0 = p * S_NR, cols = N - j0 < S_NR ? N - j0 : S_NR;
    const float *bias = a->init == ZB_GEMM_BIAS ? a->bias + j0 : NULL;
    float *yp = a->y + (size_t)i0 * a->ldy + (size_t)j0;
    /* what runs next, for the prefetches: pf_end is where it starts */
    const float *next = pf_end;
    for (int s = 0; s < mc; s += mr) {
        const int rows = mc - s < mr ? mc - s : mr;
        /* the next slice into L2, a share per sliver, so that its first
         * sliver does not wait for L3 (4% at BERT shapes); the kernel
         * spreads what it can */
        const float *pf = NULL;
        int pf_n = 0;
        if (next != NULL) {
            const int n_sl = (mc + mr - 1) / mr;
            const int l0 = (int)((int64_t)kc * (s / mr) / n_sl);
            const int l1 = (int)((int64_t)kc * (s / mr + 1) / n_sl);
            pf = next + (size_t)l0 * S_NR;
            pf_n = l1 - l0;
            for (int l = (kc + 15) / 16; l < pf_n; l++)
                __builtin_prefetch(pf + (size_t)l * S_NR, 0, 2);
        }
        s_tile(pl, kc, ap + (size_t)s * (size_t)kc, bp, yp + (size_t)s * a->ldy, rows, cols, add,
               bias, pf, pf_n);
    }
    if (k0 + kc == K) s_epilogue_group(a, i0, mc, p, p0, p1);
}

/* Rows [m0, m1) x panels [p0, p1) of the product, with apack as this
 * thread's activation block.
 * Few rows (every k block of the row block fits the work area at once):
 * the activations are packed once, and each panel runs its k blocks in
 * turn, so the weights stream through in the order they are stored -- at
 * a handful of tokens the GEMM waits on memory, not on FMAs.
 * Else, per k block: pack that block, run every panel over it. */
static void s_run(const s_plan_t *pl, int m0, int m1, int p0, int p1, float *apack) {
    const zb_gemm_args_t *a = pl->a;
    const int K = a->w->k, mr = pl->kern.mr;
    if (m1 <= m0 || p1 <= p0) return;
    const float *w_end = a->w->p + (size_t)p1 * S_NR * (size_t)K;
    for (int i0 = m0; i0 < m1; i0 += S_MC) {
        const int mc = m1 - i0 < S_MC ? m1 - i0 : S_MC;
        const size_t padded = (size_t)((mc + mr - 1) / mr * mr);
        if (padded * (size_t)K <= S_WORK_THREAD) {
            for (int k0 = 0; k0 < K; k0 += S_KC) {
                const int kc = K - k0 < S_KC ? K - k0 : S_KC;
                pl->kern.pack(a->x + (size_t)i0 * a->ldx + (size_t)k0, a->ldx, mc, kc, mr,
                              apack + padded * (size_t)k0);
            }
            for (int p = p0; p < p1; p++)
                for (int k0 = 0; k0 < K; k0 += S_KC) {
                    const int kc = K - k0 < S_KC ? K - k0 : S_KC;
                    /* the next slice is the next in memory */
                    const float *next =
                        a->w->p + (size_t)p * S_NR * (size_t)K + (size_t)(k0 + kc) * S_NR;
                    s_panel_block(pl, i0, mc, p, p0, p1, k0, kc, apack + padded * (size_t)k0,
                                  next < w_end ? next : NULL);
                }
            continue;
        }
        for (int k0 = 0; k0 < K; k0 += S_KC) {
            const int kc = K - k0 < S_KC ? K - k0 : S_KC;
            pl->kern.pack(a->x + (size_t)i0 * a->ldx + (size_t)k0, a->ldx, mc, kc, mr, apack);
            for (int p = p0; p < p1; p++) {
                const float *next =
                    p + 1 < p1 ? a->w->p + (size_t)(p + 1) * S_NR * (size_t)K + (size_t)k0 * S_NR
                               : NULL;
                s_panel_block(pl, i0, mc, p, p0, p1, k0, kc, apack, next);
            }
        }
    }
}

/* A few rows as at most S_TALL_SLIVERS slivers of about equal height (at
 * most the kernel's tall_max), each packed for every k block with an even
 * row stride (the pack's transposes take row pairs). */
typedef struct {
    int n;                      /* slivers */
    int row[S_TALL_SLIVERS];    /* first row */
    int rows[S_TALL_SLIVERS];   /* height, <= the kernel's tall_max */
    int stride[S_TALL_SLIVERS]; /* packed row stride, >= rows */
    size_t at[S_TALL_SLIVERS];  /* offset of its packed [K][stride] in apack */
    size_t floats;              /* the whole pack */
} s_tall_t;

static s_tall_t s_tall_plan(int m, int k, int tall_max) {
    s_tall_t t = {.n = (m + tall_max - 1) / tall_max};
    for (int i = 0, row = 0; i < t.n; i++) {
        t.row[i] = row;
        t.rows[i] = m / t.n + (i < m % t.n);
        t.stride[i] = (t.rows[i] + 1) / 2 * 2;
        t.at[i] = t.floats;
        t.floats += (size_t)t.stride[i] * (size_t)k;
        row += t.rows[i];
    }
    return t;
}

/* Panels [p0, p1) of a product of at most S_TALL_ROWS rows packed once as
 * tp says at apack: each panel's k blocks in storage order, every sliver
 * of a slice on the tall kernel of its height (the slice comes from memory
 * for the first and from L1 for the others), the next slice prefetched a
 * share per sliver as the current one runs, the epilogue per group of
 * panels. */
static void s_run_tall(const s_plan_t *pl, const s_tall_t *tp, int p0, int p1, const float *apack) {
    const zb_gemm_args_t *a = pl->a;
    const int M = a->m, K = a->w->k, N = a->w->n;
    const float *w_end = a->w->p + (size_t)p1 * S_NR * (size_t)K;
    for (int p = p0; p < p1; p++) {
        const int j0 = p * S_NR, cols = N - j0 < S_NR ? N - j0 : S_NR;
        const float *bias = a->init == ZB_GEMM_BIAS ? a->bias + j0 : NULL;
        for (int k0 = 0; k0 < K; k0 += S_KC) {
            const int kc = K - k0 < S_KC ? K - k0 : S_KC;
            const s_add_t add = s_add_mode(a, k0);
            const float *bp = a->w->p + (size_t)p * S_NR * (size_t)K + (size_t)k0 * S_NR;
            /* the next slice is the next in memory, one line per k step */
            const float *next = bp + (size_t)kc * S_NR;
            const int next_k = k0 + kc < K ? (K - k0 - kc < S_KC ? K - k0 - kc : S_KC) : S_KC;
            const int lines = next < w_end ? next_k : 0;
            for (int i = 0; i < tp->n; i++) {
                const int rows = tp->rows[i], stride = tp->stride[i];
                const s_tall_fn fn = pl->kern.tall[rows];
                const int l0 = lines * i / tp->n, l1 = lines * (i + 1) / tp->n;
                const float *ap = apack + tp->at[i] + (size_t)k0 * (size_t)stride;
                float *yp = a->y + (size_t)tp->row[i] * a->ldy + (size_t)j0;
                if (cols == S_NR) {
                    fn(kc, ap, stride, bp, yp, a->ldy, add, bias, next + (size_t)l0 * S_NR,
                       l1 - l0);
                    continue;
                }
                s_edge_t e; /* the edge of y */
                s_edge_in(&e, yp, a->ldy, rows, cols, add, bias);
                fn(kc, ap, stride, bp, e.y, S_NR, add, e.bias, next + (size_t)l0 * S_NR, l1 - l0);
                s_edge_out(&e, yp, a->ldy, rows, cols);
            }
        }
        s_epilogue_group(a, 0, M, p, p0, p1);
    }
}

/* Panel groups per thread for a few rows: the weights stream from memory
 * and threads finish unevenly; small groups even them out. */
#define S_TALL_GROUPS_PER_THREAD 12

/* The whole product for at most S_TALL_ROWS rows (tp fits one thread's
 * work area): the activations packed once, before the team starts, then
 * panel groups shared out. */
static void s_gemm_tall(const zb_gemm_exec_t *e, const s_plan_t *pl, const s_tall_t *tp, int nt) {
    const zb_gemm_args_t *a = pl->a;
    const int K = a->w->k;
    float *apack = e->work;
    for (int i = 0; i < tp->n; i++)
        for (int k0 = 0; k0 < K; k0 += S_KC) {
            const int kc = K - k0 < S_KC ? K - k0 : S_KC;
            pl->kern.pack(a->x + (size_t)tp->row[i] * a->ldx + (size_t)k0, a->ldx, tp->rows[i], kc,
                          tp->stride[i], apack + tp->at[i] + (size_t)k0 * (size_t)tp->stride[i]);
        }
    if (nt == 1) {
        s_run_tall(pl, tp, 0, pl->n_panels, apack);
        return;
    }
    const int groups =
        S_TALL_GROUPS_PER_THREAD * nt < pl->n_panels ? S_TALL_GROUPS_PER_THREAD * nt : pl->n_panels;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int g = 0; g < groups; g++) {
        const int p0 = (int)((int64_t)pl->n_panels * g / groups);
        const int p1 = (int)((int64_t)pl->n_panels * (g + 1) / groups);
        s_run_tall(pl, tp, p0, p1, apack);
    }
}

size_t zb_gemm_work_floats(int threads) {
    return (size_t)(threads > 0 ? threads : 1) * S_WORK_THREAD;
}

/* Slivers per thread from which the work is cut by rows (each unit a row
 * block over every panel); below, by panels (each unit every row over a
 * group of panels), so that the weights are still read once. */
#define S_SPLIT_M_SLIVERS 16
/* Panel groups per thread when cutting by panels. */
#define S_GROUPS_PER_THREAD 4

zb_gemm_split_t zb_gemm_split(int m, int mr, int per_block, int n_panels, int nt) {
    zb_gemm_split_t s = {.m = m, .mr = mr, .slivers = (m + mr - 1) / mr, .n_panels = n_panels};
    if (s.slivers >= S_SPLIT_M_SLIVERS * nt) {
        /* row blocks of at most per_block slivers, as equal as can be, a
         * multiple of the thread count: equally fast threads finish together */
        const int per_thread = (s.slivers + nt * per_block - 1) / (nt * per_block);
        s.blocks = per_thread * nt;
        s.groups = 1;
    } else {
        s.blocks = (s.slivers + per_block - 1) / per_block;
        s.groups = S_GROUPS_PER_THREAD * nt < n_panels ? S_GROUPS_PER_THREAD * nt : n_panels;
    }
    return s;
}

void zb_gemm_split_unit(const zb_gemm_split_t *s, int u, int *m0, int *m1, int *p0, int *p1) {
    const int r = u / s->groups, g = u % s->groups;
    *m0 = (int)((int64_t)s->slivers * r / s->blocks) * s->mr;
    const int m1e = (int)((int64_t)s->slivers * (r + 1) / s->blocks) * s->mr;
    *m1 = m1e < s->m ? m1e : s->m;
    *p0 = (int)((int64_t)s->n_panels * g / s->groups);
    *p1 = (int)((int64_t)s->n_panels * (g + 1) / s->groups);
}

void zb_gemm(const zb_gemm_exec_t *e, const zb_gemm_args_t *a) {
    if (a->m <= 0) return;
    s_plan_t pl = {.a = a, .kern = s_kernel(e->isa)};
    pl.n_panels = (a->w->n + S_NR - 1) / S_NR;
    int nt = e->threads > 0 ? e->threads : 1;
    /* too little work to be worth waking a team */
    if ((int64_t)a->m * a->w->n * a->w->k < 65536) nt = 1;
    if (pl.kern.tall != NULL && a->m <= pl.kern.tall_rows) {
        const s_tall_t tp = s_tall_plan(a->m, a->w->k, pl.kern.tall_max);
        if (tp.floats <= S_WORK_THREAD) {
            s_gemm_tall(e, &pl, &tp, nt);
            return;
        }
    }
    if (nt == 1) {
        s_run(&pl, 0, a->m, 0, pl.n_panels, e->work);
        return;
    }
    const zb_gemm_split_t sp = zb_gemm_split(a->m, pl.kern.mr, S_MC / pl.kern.mr, pl.n_panels, nt);
    const int units = sp.blocks * sp.groups;
#pragma omp parallel num_threads(nt)
    {
        float *apack = e->work + (size_t)omp_get_thread_num() * S_WORK_THREAD;
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < units; u++) {
            int m0, m1, p0, p1;
            zb_gemm_split_unit(&sp, u, &m0, &m1, &p0, &p1);
            s_run(&pl, m0, m1, p0, p1, apack);
        }
    }
}
