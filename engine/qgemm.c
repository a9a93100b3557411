/*
 * qgemm.c -- int8 GEMM over per-row quantized weights (see qgemm.h).
 *
 * Structure (as gemm.c, with the weights as the pre-packed operand):
 *   for each block of rows of x                       (this thread's rows)
 *     quantize the rows and pack them into slivers of MR rows,
 *     [K4 / 4][MR][4] bytes each (the block stays in L2)
 *     for each panel p                                (this thread's panels)
 *       for each sliver: integer micro-kernel MR x 16 over all of K into a
 *       local int32 tile, then one dequantizing store into y
 * Integer sums are exact whatever their order, so K is not cut into blocks
 * (the panel, at most K4 x 16 bytes, streams from L2 across the slivers)
 * and every variant gives the same D; the dequantizing store is the same
 * sequence of float roundings in every variant (qgemm.h).
 *
 * Kernels:
 *   VNNI    vpdpbusd multiplies unsigned bytes by signed bytes, four to a
 *           32-bit lane.  Activations go in as a + 128 (unsigned), weights as
 *           they are; D = sum (a + 128) q - 128 sum_k q.  12 rows: 12
 *           accumulators, the broadcast of each row's four bytes folds into a
 *           load.
 *   AVX2    vpmaddubsw saturates its pairs of products at 16 bits, so it is
 *           fed |a| and sign(a) q (each at most 127 in magnitude: a pair is
 *           at most 32,258, never saturated), then vpmaddwd by ones sums the
 *           pairs into 32-bit lanes.  4 rows.
 *   scalar  the definition, 4 rows.
 *
 * Threads take units (row blocks, or panel groups when rows are few) from a
 * dynamic schedule, as in gemm.c; the split never changes a result.
 */
#include "qgemm.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define S_NR         ZB_GEMM_NR
#define S_MC_MAX     192 /* rows per block: a multiple of every MR (4, 12) */
#define S_MR_MAX     12
#define S_ABLOCK     (256 * 1024) /* bytes of packed activations per block (L2) */
#define S_EPI_PANELS (ZB_GEMM_EPILOGUE_MAX / ZB_GEMM_NR)

#define S_AVX2_FN __attribute__((target("avx2,fma")))
#define S_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* d[MR][16] = the exact dot products of a sliver ([groups][MR][4] bytes)
 * with a panel slice ([groups][16][4]); sum is the panel's 16 row sums. */
typedef void (*s_kern_fn)(int groups, const uint8_t *a, const int8_t *b, const int32_t *sum,
                          int32_t *d);

/* Quantizes one row of k floats into dst[0..k4) (padding zero), returning
 * its scale (qgemm.h). */
typedef float (*s_quant_fn)(const float *x, int k, int k4, int8_t *dst);

/* The dequantizing store of rows x cols of a tile: y = init + (float)d * (sx * sw). */
typedef void (*s_store_fn)(const int32_t *d, int rows, int cols, const float *sx, const float *sw,
                           zb_gemm_init_t init, const float *bias, float *y, size_t ldy);

typedef struct {
    int mr;
    s_kern_fn kern;
    s_quant_fn quant;
    s_store_fn store;
    uint8_t offset; /* added to every activation byte when packing (VNNI: 128) */
} s_variant_t;

static int s_k4(int k) {
    return (k + ZB_QGEMM_KGROUP - 1) / ZB_QGEMM_KGROUP * ZB_QGEMM_KGROUP;
}

/* --- quantizing a row ------------------------------------------------------ */

static float s_quant_scalar(const float *x, int k, int k4, int8_t *dst) {
    float amax = 0.0f;
    int bad = 0;
    for (int i = 0; i < k; i++) {
        const float v = fabsf(x[i]);
        if (!(v <= FLT_MAX))
            bad = 1;
        else if (v > amax)
            amax = v;
    }
    if (bad || amax == 0.0f) {
        memset(dst, 0, (size_t)k4);
        return bad ? NAN : 0.0f;
    }
    const float inv = 127.0f / amax;
    for (int i = 0; i < k; i++) {
        long q = lrintf(x[i] * inv);
        dst[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    memset(dst + k, 0, (size_t)(k4 - k));
    return amax / 127.0f;
}

S_VNNI_FN static float s_quant_avx512(const float *x, int k, int k4, int8_t *dst) {
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m512 v = _mm512_abs_ps(_mm512_loadu_ps(x + i));
        bad |= _mm512_cmp_ps_mask(v, big, _CMP_NLE_UQ);
        vmax = _mm512_max_ps(vmax, v);
    }
    if (i < k) {
        const __mmask16 m = (__mmask16)((1u << (k - i)) - 1u);
        const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + i));
        bad |= _mm512_mask_cmp_ps_mask(m, v, big, _CMP_NLE_UQ);
        vmax = _mm512_max_ps(vmax, v);
    }
    const float amax = _mm512_reduce_max_ps(vmax);
    if (bad || amax == 0.0f) {
        memset(dst, 0, (size_t)k4);
        return bad ? NAN : 0.0f;
    }
    const __m512 inv = _mm512_set1_ps(127.0f / amax);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    for (i = 0; i + 16 <= k; i += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
        q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm512_cvtepi32_epi8(q));
    }
    for (; i < k; i++) { /* lrintf rounds as vcvtps2dq does: to nearest even */
        long q = lrintf(x[i] * (127.0f / amax));
        dst[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    memset(dst + k, 0, (size_t)(k4 - k));
    return amax / 127.0f;
}

S_AVX2_FN static float s_quant_avx2(const float *x, int k, int k4, int8_t *dst) {
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
    __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m256 v = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
        vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(v, big, _CMP_NLE_UQ));
        vmax = _mm256_max_ps(vmax, v);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, vmax);
    float amax = 0.0f;
    for (int l = 0; l < 8; l++) amax = lanes[l] > amax ? lanes[l] : amax;
    int bad = _mm256_movemask_ps(vbad) != 0;
    for (; i < k; i++) {
        const float v = fabsf(x[i]);
        if (!(v <= FLT_MAX))
            bad = 1;
        else if (v > amax)
            amax = v;
    }
    if (bad || amax == 0.0f) {
        memset(dst, 0, (size_t)k4);
        return bad ? NAN : 0.0f;
    }
    const float finv = 127.0f / amax;
    const __m256 inv = _mm256_set1_ps(finv);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    for (i = 0; i + 8 <= k; i += 8) {
        __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
        q = _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
        /* 8 int32 in [-127, 127] -> 8 bytes */
        const __m128i w =
            _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(void *)(dst + i), _mm_packs_epi16(w, w));
    }
    for (; i < k; i++) {
        long q = lrintf(x[i] * finv);
        dst[i] = (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
    }
    memset(dst + k, 0, (size_t)(k4 - k));
    return amax / 127.0f;
}

/* --- micro-kernels ----------------------------------------------------------- */

#define S_MR_SCALAR 4
static void s_kern_scalar(int groups, const uint8_t *a, const int8_t *b, const int32_t *sum,
                          int32_t *d) {
    (void)sum; /* activations are packed signed here: no offset to take back */
    int32_t acc[S_MR_SCALAR][S_NR];
    memset(acc, 0, sizeof acc);
    for (int g = 0; g < groups; g++) {
        const int8_t *ag = (const int8_t *)a + (size_t)g * S_MR_SCALAR * 4;
        const int8_t *bg = b + (size_t)g * S_NR * 4;
        for (int r = 0; r < S_MR_SCALAR; r++)
            for (int c = 0; c < S_NR; c++)
                for (int t = 0; t < 4; t++) acc[r][c] += (int32_t)ag[r * 4 + t] * bg[c * 4 + t];
    }
    memcpy(d, acc, sizeof acc);
}

#define S_MR_AVX2 4
S_AVX2_FN static void s_kern_avx2(int groups, const uint8_t *a, const int8_t *b, const int32_t *sum,
                                  int32_t *d) {
    (void)sum;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
#define S_ROW(r)                                                                                   \
    do {                                                                                           \
        int32_t v;                                                                                 \
        memcpy(&v, a + (r)*4, 4);                                                                  \
        const __m256i av = _mm256_set1_epi32(v), aa = _mm256_abs_epi8(av);                         \
        const __m256i p0 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w0, av));                     \
        const __m256i p1 = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(w1, av));                     \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(p0, ones));                          \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(p1, ones));                          \
    } while (0)
    for (int g = 0; g < groups; g++) {
        const __m256i w0 = _mm256_load_si256((const __m256i *)(const void *)b);
        const __m256i w1 = _mm256_load_si256((const __m256i *)(const void *)(b + 32));
        S_ROW(0);
        S_ROW(1);
        S_ROW(2);
        S_ROW(3);
        a += S_MR_AVX2 * 4;
        b += S_NR * 4;
    }
#undef S_ROW
    _mm256_storeu_si256((__m256i *)(void *)(d + 0), c00);
    _mm256_storeu_si256((__m256i *)(void *)(d + 8), c01);
    _mm256_storeu_si256((__m256i *)(void *)(d + 16), c10);
    _mm256_storeu_si256((__m256i *)(void *)(d + 24), c11);
    _mm256_storeu_si256((__m256i *)(void *)(d + 32), c20);
    _mm256_storeu_si256((__m256i *)(void *)(d + 40), c21);
    _mm256_storeu_si256((__m256i *)(void *)(d + 48), c30);
    _mm256_storeu_si256((__m256i *)(void *)(d + 56), c31);
}

#define S_MR_VNNI 12
S_VNNI_FN static void s_kern_vnni(int groups, const uint8_t *a, const int8_t *b, const int32_t *sum,
                                  int32_t *d) {
    __m512i c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = _mm512_setzero_si512();
    const int32_t *a32 = (const int32_t *)(const void *)a; /* 4-byte aligned by construction */
    for (int g = 0; g < groups; g++) {
        const __m512i w = _mm512_load_si512((const void *)b);
        c0 = _mm512_dpbusd_epi32(c0, _mm512_set1_epi32(a32[0]), w);
        c1 = _mm512_dpbusd_epi32(c1, _mm512_set1_epi32(a32[1]), w);
        c2 = _mm512_dpbusd_epi32(c2, _mm512_set1_epi32(a32[2]), w);
        c3 = _mm512_dpbusd_epi32(c3, _mm512_set1_epi32(a32[3]), w);
        c4 = _mm512_dpbusd_epi32(c4, _mm512_set1_epi32(a32[4]), w);
        c5 = _mm512_dpbusd_epi32(c5, _mm512_set1_epi32(a32[5]), w);
        c6 = _mm512_dpbusd_epi32(c6, _mm512_set1_epi32(a32[6]), w);
        c7 = _mm512_dpbusd_epi32(c7, _mm512_set1_epi32(a32[7]), w);
        c8 = _mm512_dpbusd_epi32(c8, _mm512_set1_epi32(a32[8]), w);
        c9 = _mm512_dpbusd_epi32(c9, _mm512_set1_epi32(a32[9]), w);
        c10 = _mm512_dpbusd_epi32(c10, _mm512_set1_epi32(a32[10]), w);
        c11 = _mm512_dpbusd_epi32(c11, _mm512_set1_epi32(a32[11]), w);
        a32 += S_MR_VNNI;
        b += S_NR * 4;
    }
    /* take back the 128 added to every activation */
    const __m512i comp = _mm512_slli_epi32(_mm512_loadu_si512((const void *)sum), 7);
#define S_ST(r) _mm512_storeu_si512((void *)(d + (r)*S_NR), _mm512_sub_epi32(c##r, comp))
    S_ST(0);
    S_ST(1);
    S_ST(2);
    S_ST(3);
    S_ST(4);
    S_ST(5);
    S_ST(6);
    S_ST(7);
    S_ST(8);
    S_ST(9);
    S_ST(10);
    S_ST(11);
#undef S_ST
}

/* --- dequantizing stores --------------------------------------------------------- */

static void s_store_scalar(const int32_t *d, int rows, int cols, const float *sx, const float *sw,
                           zb_gemm_init_t init, const float *bias, float *y, size_t ldy) {
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ldy;
        for (int c = 0; c < cols; c++) {
            const float s = sx[r] * sw[c];
            const float p = (float)d[r * S_NR + c] * s;
            yr[c] = init == ZB_GEMM_ZERO ? p : init == ZB_GEMM_BIAS ? bias[c] + p : yr[c] + p;
        }
    }
}

S_AVX2_FN static void s_store_avx2(const int32_t *d, int rows, int cols, const float *sx,
                                   const float *sw, zb_gemm_init_t init, const float *bias,
                                   float *y, size_t ldy) {
    if (cols != S_NR) {
        s_store_scalar(d, rows, cols, sx, sw, init, bias, y, ldy);
        return;
    }
    const __m256 w0 = _mm256_loadu_ps(sw), w1 = _mm256_loadu_ps(sw + 8);
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ldy;
        const __m256 s = _mm256_set1_ps(sx[r]);
        __m256 p0 = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)(d + r * S_NR))),
            _mm256_mul_ps(s, w0));
        __m256 p1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256(
                                      (const __m256i *)(const void *)(d + r * S_NR + 8))),
                                  _mm256_mul_ps(s, w1));
        if (init == ZB_GEMM_BIAS) {
            p0 = _mm256_add_ps(_mm256_loadu_ps(bias), p0);
            p1 = _mm256_add_ps(_mm256_loadu_ps(bias + 8), p1);
        } else if (init == ZB_GEMM_ACCUMULATE) {
            p0 = _mm256_add_ps(_mm256_loadu_ps(yr), p0);
            p1 = _mm256_add_ps(_mm256_loadu_ps(yr + 8), p1);
        }
        _mm256_storeu_ps(yr, p0);
        _mm256_storeu_ps(yr + 8, p1);
    }
}

S_VNNI_FN static void s_store_avx512(const int32_t *d, int rows, int cols, const float *sx,
                                     const float *sw, zb_gemm_init_t init, const float *bias,
                                     float *y, size_t ldy) {
    const __mmask16 m = (__mmask16)(cols >= S_NR ? 0xffffu : (1u << cols) - 1u);
    const __m512 w = _mm512_maskz_loadu_ps(m, sw);
    const __m512 bv = init == ZB_GEMM_BIAS ? _mm512_maskz_loadu_ps(m, bias) : w;
    for (int r = 0; r < rows; r++) {
        float *yr = y + (size_t)r * ldy;
        const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sx[r]), w);
        __m512 p = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(d + r * S_NR)), s);
        if (init == ZB_GEMM_BIAS)
            p = _mm512_add_ps(bv, p);
        else if (init == ZB_GEMM_ACCUMULATE)
            p = _mm512_add_ps(_mm512_maskz_loadu_ps(m, yr), p);
        _mm512_mask_storeu_ps(yr, m, p);
    }
}

/* --- instruction sets ---------------------------------------------------------- */

bool zb_qgemm_isa_supported(zb_qgemm_isa_t isa) {
    __builtin_cpu_init();
    switch (isa) {
    case ZB_QGEMM_SCALAR:
        return true;
    case ZB_QGEMM_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ZB_QGEMM_VNNI:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
    }
    return false;
}

const char *zb_qgemm_isa_name(zb_qgemm_isa_t isa) {
    switch (isa) {
    case ZB_QGEMM_SCALAR:
        return "scalar";
    case ZB_QGEMM_AVX2:
        return "avx2";
    case ZB_QGEMM_VNNI:
        return "vnni";
    }
    return "?";
}

zb_qgemm_isa_t zb_qgemm_isa_best(void) {
    zb_qgemm_isa_t best = ZB_QGEMM_SCALAR;
    if (zb_qgemm_isa_supported(ZB_QGEMM_AVX2)) best = ZB_QGEMM_AVX2;
    if (zb_qgemm_isa_supported(ZB_QGEMM_VNNI)) best = ZB_QGEMM_VNNI;
    static const char *const names[] = {"scalar", "avx2", "vnni"};
    return (zb_qgemm_isa_t)zb_gemm_isa_ceiling("ZB_QGEMM_ISA", names, 3, (int)best);
}

static s_variant_t s_variant(zb_qgemm_isa_t isa) {
    switch (isa) {
    case ZB_QGEMM_VNNI:
        return (s_variant_t){S_MR_VNNI, s_kern_vnni, s_quant_avx512, s_store_avx512, 128};
    case ZB_QGEMM_AVX2:
        return (s_variant_t){S_MR_AVX2, s_kern_avx2, s_quant_avx2, s_store_avx2, 0};
    case ZB_QGEMM_SCALAR:
        break;
    }
    return (s_variant_t){S_MR_SCALAR, s_kern_scalar, s_quant_scalar, s_store_scalar, 0};
}

/* --- packing weights ------------------------------------------------------------- */

size_t zb_qgemm_packed_bytes(int n, int k) {
    const size_t panels = ((size_t)n + S_NR - 1) / S_NR;
    return panels * S_NR * (size_t)s_k4(k);
}

/* Byte offset of q[row][kk] in the packed layout. */
static size_t s_at(int row, int kk, int k4) {
    return (size_t)(row / S_NR) * S_NR * (size_t)k4 + (size_t)(kk / 4) * S_NR * 4 +
           (size_t)(row % S_NR) * 4 + (size_t)(kk % 4);
}

int zb_qgemm_quantize_rows(const float *w, int rows, int k, size_t ldw, const float *col, int row0,
                           int8_t *packed, float *scale, int32_t *sum) {
    const int k4 = s_k4(k);
    float *row = malloc((size_t)k * sizeof *row);
    if (row == NULL) return ZB_ENOMEM;
    for (int r = 0; r < rows; r++) {
        const float *src = row;
        for (int kk = 0; kk < k; kk++)
            row[kk] = col != NULL ? w[(size_t)r * ldw + (size_t)kk] * col[kk]
                                  : w[(size_t)r * ldw + (size_t)kk];
        float amax = 0.0f;
        for (int kk = 0; kk < k; kk++) {
            const float v = fabsf(src[kk]);
            if (!(v <= FLT_MAX)) {
                free(row);
                return ZB_EINVAL;
            }
            if (v > amax) amax = v;
        }
        const float s = amax / 127.0f;
        int32_t total = 0;
        for (int kk = 0; kk < k; kk++) {
            long q = amax == 0.0f ? 0 : lrintf(src[kk] / s);
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            packed[s_at(row0 + r, kk, k4)] = (int8_t)q;
            total += (int32_t)q;
        }
        scale[row0 + r] = s;
        sum[row0 + r] = total;
    }
    free(row);
    return 0;
}

void zb_qgemm_dequantize(const int8_t *packed, const float *scale, int n, int k, float *w,
                         size_t ldw) {
    const int k4 = s_k4(k);
    for (int r = 0; r < n; r++)
        for (int kk = 0; kk < k; kk++)
            w[(size_t)r * ldw + (size_t)kk] = (float)packed[s_at(r, kk, k4)] * scale[r];
}

bool zb_qgemm_check_sums(const zb_qgemm_w_t *w) {
    const int k4 = s_k4(w->k);
    for (int r = 0; r < w->n; r++) {
        const int8_t *p = w->q + (size_t)(r / S_NR) * S_NR * (size_t)k4 + (size_t)(r % S_NR) * 4;
        int32_t total = 0;
        for (int g = 0; g < k4 / 4; g++)
            for (int t = 0; t < 4; t++) total += p[(size_t)g * S_NR * 4 + (size_t)t];
        if (total != w->sum[r]) return false;
    }
    /* padding rows of the last panel must be zero too: the kernels read them */
    for (int r = w->n; r % S_NR != 0; r++) {
        const int8_t *p = w->q + (size_t)(r / S_NR) * S_NR * (size_t)k4 + (size_t)(r % S_NR) * 4;
        for (int g = 0; g < k4 / 4; g++)
            for (int t = 0; t < 4; t++)
                if (p[(size_t)g * S_NR * 4 + (size_t)t] != 0) return false;
    }
    return true;
}

/* --- driver ------------------------------------------------------------------------ */

/* Rows per block for this K: the packed block within S_ABLOCK, whole
 * multiples of every MR, at least one sliver of the widest. */
static int s_mc(int k4) {
    int mc = S_ABLOCK / k4 / S_MR_MAX * S_MR_MAX;
    if (mc > S_MC_MAX) mc = S_MC_MAX;
    if (mc < S_MR_MAX) mc = S_MR_MAX;
    return mc;
}

/* A thread's work: the packed block, the block's row scales, one row's
 * quantized bytes; each part 64-byte aligned.  The block is at most
 * max(S_ABLOCK, S_MR_MAX * k4) bytes (s_mc), a bound that grows with k, so a
 * buffer sized for k_max holds every smaller k at the same offsets' rule. */
static size_t s_block_bytes(int k4) {
    const size_t most = (size_t)S_MR_MAX * (size_t)k4;
    return ((most > S_ABLOCK ? most : S_ABLOCK) + 63) / 64 * 64;
}

static size_t s_thread_bytes(int k_max) {
    const int k4 = s_k4(k_max < 1 ? 1 : k_max);
    return s_block_bytes(k4) + (size_t)S_MC_MAX * sizeof(float) + ((size_t)k4 + 63) / 64 * 64 +
           ((size_t)k4 * sizeof(float) + 63) / 64 * 64;
}

size_t zb_qgemm_work_bytes(int threads, int k_max) {
    return (size_t)(threads > 0 ? threads : 1) * s_thread_bytes(k_max);
}

typedef struct {
    const zb_qgemm_args_t *a;
    s_variant_t v;
    int n_panels;
    int k4;
    int mc;
} s_plan_t;

/* Quantizes rows [i0, i0 + rows) of x into slivers of mr rows at dst
 * ([k4 / 4][mr][4] each, missing rows zero), their scales into sx. */
static void s_pack_block(const s_plan_t *pl, int i0, int rows, uint8_t *dst, float *sx, int8_t *tmp,
                         float *xs) {
    const zb_qgemm_args_t *a = pl->a;
    const int mr = pl->v.mr, k4 = pl->k4, groups = k4 / 4;
    const uint32_t off = pl->v.offset * 0x01010101u;
    const int padded = (rows + mr - 1) / mr * mr;
    for (int r = 0; r < padded; r++) {
        uint8_t *base = dst + (size_t)(r / mr) * (size_t)k4 * (size_t)mr + (size_t)(r % mr) * 4;
        if (r < rows) {
            const float *x = a->x + (size_t)(i0 + r) * a->ldx;
            if (a->w->smooth != NULL) { /* the same multiply in every variant */
                for (int c = 0; c < a->w->k; c++) xs[c] = x[c] * a->w->smooth[c];
                x = xs;
            }
            sx[r] = pl->v.quant(x, a->w->k, k4, tmp);
        } else {
            memset(tmp, 0, (size_t)k4);
            sx[r] = 0.0f;
        }
        for (int g = 0; g < groups; g++) {
            uint32_t v;
            memcpy(&v, tmp + 4 * g, 4);
            v ^= off; /* + 128 in every byte, when the kernel wants unsigned */
            memcpy(base + (size_t)g * (size_t)mr * 4, &v, 4);
        }
    }
}

/* Rows [m0, m1) x panels [p0, p1), with this thread's work area. */
static void s_run(const s_plan_t *pl, int m0, int m1, int p0, int p1, uint8_t *work) {
    const zb_qgemm_args_t *a = pl->a;
    const int N = a->w->n, mr = pl->v.mr, k4 = pl->k4, groups = k4 / 4;
    uint8_t *apack = work;
    float *sx = (float *)(void *)(work + s_block_bytes(k4));
    int8_t *tmp = (int8_t *)(work + s_block_bytes(k4) + (size_t)S_MC_MAX * sizeof(float));
    float *xs = (float *)(void *)((uint8_t *)tmp + ((size_t)k4 + 63) / 64 * 64);
    int32_t d[S_MR_MAX * S_NR] __attribute__((aligned(64)));
    if (m1 <= m0 || p1 <= p0) return;
    for (int i0 = m0; i0 < m1; i0 += pl->mc) {
        const int mc = m1 - i0 < pl->mc ? m1 - i0 : pl->mc;
        s_pack_block(pl, i0, mc, apack, sx, tmp, xs);
        for (int p = p0; p < p1; p++) {
            const int8_t *bp = a->w->q + (size_t)p * S_NR * (size_t)k4;
            const int j0 = p * S_NR, cols = N - j0 < S_NR ? N - j0 : S_NR;
            int32_t sum[S_NR];
            memset(sum, 0, sizeof sum);
            memcpy(sum, a->w->sum + j0, (size_t)cols * sizeof *sum);
            const float *bias = a->init == ZB_GEMM_BIAS ? a->bias + j0 : NULL;
            float *yp = a->y + (size_t)i0 * a->ldy + (size_t)j0;
            for (int s = 0; s < mc; s += mr) {
                const int rows = mc - s < mr ? mc - s : mr;
                pl->v.kern(groups, apack + (size_t)s * (size_t)k4, bp, sum, d);
                pl->v.store(d, rows, cols, sx + s, a->w->scale + j0, a->init, bias,
                            yp + (size_t)s * a->ldy, a->ldy);
            }
            if (a->epilogue != NULL && ((p - p0 + 1) % S_EPI_PANELS == 0 || p + 1 == p1)) {
                const int g0 = p - (p - p0) % S_EPI_PANELS;
                const int c0 = g0 * S_NR, c1 = j0 + cols;
                for (int r = 0; r < mc; r++)
                    a->epilogue(a->epilogue_ctx, a->y + (size_t)(i0 + r) * a->ldy + (size_t)c0,
                                c1 - c0);
            }
        }
    }
}

void zb_qgemm(const zb_qgemm_exec_t *e, const zb_qgemm_args_t *a) {
    if (a->m <= 0) return;
    s_plan_t pl = {.a = a, .v = s_variant(e->isa)};
    pl.n_panels = (a->w->n + S_NR - 1) / S_NR;
    pl.k4 = s_k4(a->w->k);
    pl.mc = s_mc(pl.k4);
    const size_t stride = s_thread_bytes(a->w->k);
    int nt = e->threads > 0 ? e->threads : 1;
    if ((int64_t)a->m * a->w->n * a->w->k < 65536) nt = 1;
    if (nt == 1) {
        s_run(&pl, 0, a->m, 0, pl.n_panels, e->work);
        return;
    }
    /* the fp32 GEMM's split (gemm.h): units of row blocks or panel groups */
    const zb_gemm_split_t sp = zb_gemm_split(a->m, pl.v.mr, pl.mc / pl.v.mr, pl.n_panels, nt);
    const int units = sp.blocks * sp.groups;
#pragma omp parallel num_threads(nt)
    {
        uint8_t *work = (uint8_t *)e->work + (size_t)omp_get_thread_num() * stride;
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < units; u++) {
            int m0, m1, p0, p1;
            zb_gemm_split_unit(&sp, u, &m0, &m1, &p0, &p1);
            s_run(&pl, m0, m1, p0, p1, work);
        }
    }
}
