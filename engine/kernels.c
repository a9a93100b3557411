/*
 * kernels.c -- the non-GEMM numeric kernels of the forward pass (fp32).
 *
 * Approximations (coefficients fitted for this file by iteratively
 * reweighted least squares against 30-digit references):
 *   exp(x):  x = n ln2 + r with |r| <= ln2/2 (two-constant Cody-Waite
 *            reduction), e^r = 1 + r + r^2 P4(r) (rel. error 3e-9 before
 *            rounding), times 2^n built in the exponent bits.
 *   erf(x), |x| < 1:       x + x Q6(x^2)             (rel. error 1.4e-9)
 *   erfc(x), 1 <= x <= 4.5: exp(-x^2) G7(1/(1 + x/2)) (rel. error 1.1e-9),
 *            with x^2 split into hi + lo by an FMA so exp(-x^2) keeps its
 *            accuracy; erfc(4.5) = 2e-10, so beyond it erf is 1 in float.
 * The float evaluation keeps erf within ~1e-7 absolute of the true value.
 * GELU for negative x takes erfc directly (1 + erf(z) = erfc(-z)), which
 * avoids the cancellation of 1 + erf near -1.
 *
 * The scalar variant evaluates the same formulas without FMA; both variants
 * must agree with double-precision references (tests/test_kernels.c).
 *
 * Thread-safety: no state.  Row kernels open an OpenMP region of
 * exec->threads threads with a static schedule, so each row's arithmetic is
 * independent of the thread count.
 */
#include "kernels.h"

#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "gemm.h"

#define ZB_AVX2_FN   __attribute__((target("avx2,fma")))
#define ZB_AVX512_FN __attribute__((target("avx512f,avx2,fma")))

/* exp: Cody-Waite split of ln 2 (the high part has 9 significant bits, so
 * n * LN2_HI is exact for |n| < 2^15). */
#define LOG2E  1.44269504f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define EXP_LO -87.0f /* 2^-126 region: the smallest normal float */
#define EXP_HI 88.0f  /* below log(FLT_MAX) = 88.72 */
static const float s_exp_p[5] = {4.99999933e-01f, 1.66665190e-01f, 4.16684072e-02f, 8.36891376e-03f,
                                 1.38141908e-03f};

/* erf(x)/x - 1 as a polynomial in u = x^2 on [0, 1] (erf(x) = x + x Q(u):
 * the leading x stays exact; 2/sqrt(pi) itself would lose 5e-8 to rounding).
 * Fitted one coefficient at a time, each refit after rounding the previous
 * ones to float. */
static const float s_erf_a[7] = {1.283791661e-01f,  -3.761262596e-01f, 1.128357872e-01f,
                                 -2.685334720e-02f, 5.187162198e-03f,  -7.997853099e-04f,
                                 7.806903159e-05f};

/* erfc(x) exp(x^2) as a polynomial in t = 1/(1 + x/2) on x in [1, 4.5]. */
static const float s_erfc_g[8] = {-1.319322773e-04f, 2.845774612e-01f,  2.618298671e-01f,
                                  3.402649124e-01f,  -8.784554686e-02f, 5.436666692e-01f,
                                  -4.577851975e-01f, 1.154501313e-01f};
#define ERF_SPLIT 1.0f /* below: the series form; from here: the erfc form */
#define ERFC_ZERO 4.5f /* erfc below 2e-10 from here on: taken as 0 */
#define SQRT1_2   0.707106781f

bool zb_kernels_isa_supported(zb_kernels_isa_t isa) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    switch (isa) {
    case ZB_KERNELS_SCALAR:
        return true;
    case ZB_KERNELS_AVX2:
        return avx2;
    case ZB_KERNELS_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f");
    }
    return false;
}

zb_kernels_isa_t zb_kernels_isa_best(void) {
    zb_kernels_isa_t best = ZB_KERNELS_SCALAR;
    if (zb_kernels_isa_supported(ZB_KERNELS_AVX2)) best = ZB_KERNELS_AVX2;
    if (zb_kernels_isa_supported(ZB_KERNELS_AVX512)) best = ZB_KERNELS_AVX512;
    /* a ceiling for measurements and tests */
    static const char *const names[] = {"scalar", "avx2", "avx512"};
    return (zb_kernels_isa_t)zb_gemm_isa_ceiling("ZB_KERNELS_ISA", names, 3, (int)best);
}

/* ===================================================================== */
/* scalar variant                                                        */
/* ===================================================================== */

static float s_exp1(float x) {
    if (x != x) return x;
    if (x < EXP_LO) x = EXP_LO;
    if (x > EXP_HI) x = EXP_HI;
    float n = rintf(x * LOG2E);
    float r = x - n * LN2_HI;
    r = r - n * LN2_LO;
    float p = s_exp_p[4];
    for (int i = 3; i >= 0; i--) p = p * r + s_exp_p[i];
    /* 1 + (r + r^2 p): the small part first, so rounding it costs little. */
    float er = 1.0f + (r + r * r * p);
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return er * scale;
}

/* x + x Q6(x^2): erf for |x| < ERF_SPLIT. */
static float s_erf_small1(float x) {
    float u = x * x;
    float p = s_erf_a[6];
    for (int i = 5; i >= 0; i--) p = p * u + s_erf_a[i];
    return x + x * p;
}

/* erfc(a) for a >= ERF_SPLIT. */
static float s_erfc_big1(float a) {
    if (a >= ERFC_ZERO) return 0.0f;
    float t = 1.0f / (1.0f + 0.5f * a);
    float g = s_erfc_g[7];
    for (int i = 6; i >= 0; i--) g = g * t + s_erfc_g[i];
    /* a^2 = hi + lo exactly (Dekker split, no FMA needed), then
     * exp(-hi - lo) ~ exp(-hi) (1 - lo) since |lo| < 2^-20. */
    float hi = a * a;
    float c = 4097.0f * a; /* 2^12 + 1 splits a 24-bit mantissa in halves */
    float ah = c - (c - a), al = a - ah;
    float lo = ((ah * ah - hi) + 2.0f * ah * al) + al * al;
    return s_exp1(-hi) * (1.0f - lo) * g;
}

static float s_erf1(float x) {
    if (x != x) return x;
    float a = fabsf(x);
    if (a < ERF_SPLIT) return s_erf_small1(x);
    float r = 1.0f - s_erfc_big1(a);
    return x < 0 ? -r : r;
}

static float s_gelu1(float x) {
    float z = x * SQRT1_2;
    float a = fabsf(z);
    float one_plus;
    if (!(a >= ERF_SPLIT)) { /* also NaN: it propagates through x */
        one_plus = 1.0f + s_erf_small1(z);
    } else {
        float c = s_erfc_big1(a);
        one_plus = z < 0 ? c : 2.0f - c;
    }
    return 0.5f * x * one_plus;
}

/* tanh GELU = x / (1 + exp(-2u)); exp's argument is clamped where the
 * result is 0 (or x) in float anyway, to stay inside exp's domain. */
#define GELU_TANH_C 0.7978845608f /* sqrt(2/pi) */
#define GELU_TANH_A 0.044715f
static float s_gelu_tanh1(float x) {
    float u = GELU_TANH_C * (x + GELU_TANH_A * x * x * x);
    float t = -2.0f * u;
    t = t > EXP_HI ? EXP_HI : t < EXP_LO ? EXP_LO : t;
    return x / (1.0f + s_exp1(t));
}

static void s_softmax_row1(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = s_exp1(x[i] - m);
        s += x[i];
    }
    float inv = 1.0f / s;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

/* y = LayerNorm(a + b + c) where c, or b and c, may be NULL (then a + b or
 * a alone); y may alias a or c element for element.
 * Mean and variance work on values shifted by k = v[0]: v - k is exact when
 * v is near k, so a large common offset (mean >> stddev) neither swamps the
 * float sums nor leaves the rounding of a large mean in every v - mean.  The
 * second pass sums d and d^2 over d = (v - k) - mean_k and corrects the
 * variance by (sum d)^2 / n, cancelling the first-order error left in the
 * mean (corrected two-pass). */
static void s_ln_row1(float *y, const float *a, const float *b, const float *c, int n,
                      const float *gamma, const float *beta, float eps) {
    const int terms = b == NULL ? 1 : c == NULL ? 2 : 3;
    const float k = terms == 3 ? (a[0] + b[0]) + c[0] : terms == 2 ? a[0] + b[0] : a[0];
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        float v = terms == 3 ? (a[i] + b[i]) + c[i] : terms == 2 ? a[i] + b[i] : a[i];
        y[i] = v;
        s += v - k;
    }
    const float mean_k = s / (float)n;
    float sd = 0.0f, ss = 0.0f;
    for (int i = 0; i < n; i++) {
        float d = (y[i] - k) - mean_k;
        sd += d;
        ss += d * d;
    }
    float var = (ss - sd * sd / (float)n) / (float)n;
    if (var < 0.0f) var = 0.0f;
    const float rstd = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; i++) y[i] = ((y[i] - k) - mean_k) * rstd * gamma[i] + beta[i];
}

/* ===================================================================== */
/* AVX2 + FMA variant                                                    */
/* ===================================================================== */

/* Lane mask with the first n (0..8) lanes set. */
ZB_AVX2_FN static inline __m256i s_mask8(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

ZB_AVX2_FN static inline float s_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ZB_AVX2_FN static inline float s_hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ZB_AVX2_FN static inline __m256 s_exp8(__m256 x) {
    /* Constant first: max/min return the second operand when either is
     * NaN, so a NaN input stays NaN. */
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_set1_ps(s_exp_p[4]);
    for (int i = 3; i >= 0; i--) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(s_exp_p[i]));
    __m256 er = _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_mul_ps(r, r), p, r));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(er, _mm256_castsi256_ps(e));
}

/* Returns x + x Q6(x^2) (erf for |x| < 1). */
ZB_AVX2_FN static inline __m256 s_erf_small8(__m256 x) {
    __m256 u = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(s_erf_a[6]);
    for (int i = 5; i >= 0; i--) p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(s_erf_a[i]));
    return _mm256_fmadd_ps(x, p, x);
}

/* erfc(a) for a = |x| >= 1; lanes below 1 get erfc(1), lanes at or past
 * ERFC_ZERO get 0. */
ZB_AVX2_FN static inline __m256 s_erfc_big8(__m256 a) {
    __m256 ab =
        _mm256_min_ps(_mm256_set1_ps(ERFC_ZERO), _mm256_max_ps(_mm256_set1_ps(ERF_SPLIT), a));
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(ab, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 g = _mm256_set1_ps(s_erfc_g[7]);
    for (int i = 6; i >= 0; i--) g = _mm256_fmadd_ps(g, t, _mm256_set1_ps(s_erfc_g[i]));
    __m256 hi = _mm256_mul_ps(ab, ab);
    __m256 lo = _mm256_fmsub_ps(ab, ab, hi); /* exact: ab^2 = hi + lo */
    __m256 e = _mm256_mul_ps(s_exp8(_mm256_sub_ps(_mm256_setzero_ps(), hi)),
                             _mm256_fnmadd_ps(lo, _mm256_set1_ps(1.0f), _mm256_set1_ps(1.0f)));
    __m256 r = _mm256_mul_ps(e, g);
    __m256 zero = _mm256_cmp_ps(a, _mm256_set1_ps(ERFC_ZERO), _CMP_GE_OQ);
    return _mm256_andnot_ps(zero, r);
}

ZB_AVX2_FN static inline __m256 s_erf8(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(sign, x);
    __m256 small = s_erf_small8(x);
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f), s_erfc_big8(a));
    big = _mm256_or_ps(big, _mm256_and_ps(sign, x)); /* big >= 0: copy x's sign */
    __m256 is_small = _mm256_cmp_ps(a, _mm256_set1_ps(ERF_SPLIT), _CMP_LT_OQ);
    __m256 r = _mm256_blendv_ps(big, small, is_small);
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_ps(r, x, nan);
}

ZB_AVX2_FN static inline __m256 s_gelu8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(SQRT1_2));
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    __m256 small = _mm256_add_ps(one, s_erf_small8(z));
    __m256 c = s_erfc_big8(a);
    __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 big = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), c), c, neg);
    __m256 is_small = _mm256_cmp_ps(a, _mm256_set1_ps(ERF_SPLIT), _CMP_LT_OQ);
    __m256 one_plus = _mm256_blendv_ps(big, small, is_small);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), one_plus);
}

ZB_AVX2_FN static inline __m256 s_gelu_tanh8(__m256 x) {
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 u = _mm256_mul_ps(_mm256_set1_ps(GELU_TANH_C),
                             _mm256_fmadd_ps(_mm256_set1_ps(GELU_TANH_A), x3, x));
    __m256 t = _mm256_mul_ps(_mm256_set1_ps(-2.0f), u);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), s_exp8(t));
    return _mm256_div_ps(x, d);
}

/* Applies f to n floats; the tail goes through masked loads and stores so
 * that every element takes the same vector path. */
#define ZB_MAP8(f, x, y, n)                                                                        \
    do {                                                                                           \
        size_t i_ = 0;                                                                             \
        for (; i_ + 8 <= (n); i_ += 8) _mm256_storeu_ps((y) + i_, f(_mm256_loadu_ps((x) + i_)));   \
        if (i_ < (n)) {                                                                            \
            __m256i m_ = s_mask8((int)((n)-i_));                                                   \
            _mm256_maskstore_ps((y) + i_, m_, f(_mm256_maskload_ps((x) + i_, m_)));                \
        }                                                                                          \
    } while (0)

ZB_AVX2_FN static void s_erf_avx2(const float *x, float *y, size_t n) {
    ZB_MAP8(s_erf8, x, y, n);
}

ZB_AVX2_FN static void s_exp_avx2(const float *x, float *y, size_t n) {
    ZB_MAP8(s_exp8, x, y, n);
}

ZB_AVX2_FN static void s_gelu_avx2(const float *x, float *y, size_t n) {
    ZB_MAP8(s_gelu8, x, y, n);
}

ZB_AVX2_FN static void s_gelu_tanh_avx2(const float *x, float *y, size_t n) {
    ZB_MAP8(s_gelu_tanh8, x, y, n);
}

ZB_AVX2_FN static void s_bias_gelu_row_avx2(float *x, const float *bias, int n) {
    if (bias == NULL) {
        s_gelu_avx2(x, x, (size_t)n);
        return;
    }
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(bias + i));
        _mm256_storeu_ps(x + i, s_gelu8(v));
    }
    if (i < n) {
        __m256i m = s_mask8(n - i);
        __m256 v = _mm256_add_ps(_mm256_maskload_ps(x + i, m), _mm256_maskload_ps(bias + i, m));
        _mm256_maskstore_ps(x + i, m, s_gelu8(v));
    }
}

ZB_AVX2_FN static void s_softmax_row_avx2(float *x, int n) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vm = ninf;
    int i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    __m256i mt = s_mask8(n - i);
    if (i < n) {
        __m256 v = _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + i, mt), _mm256_castsi256_ps(mt));
        vm = _mm256_max_ps(vm, v);
    }
    __m256 m = _mm256_set1_ps(s_hmax8(vm));
    __m256 vs = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = s_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    if (i < n) {
        __m256 e = s_exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mt), m));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(mt));
        _mm256_maskstore_ps(x + i, mt, e);
        vs = _mm256_add_ps(vs, e);
    }
    __m256 inv = _mm256_set1_ps(1.0f / s_hsum8(vs));
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    if (i < n) _mm256_maskstore_ps(x + i, mt, _mm256_mul_ps(_mm256_maskload_ps(x + i, mt), inv));
}

/* As s_ln_row1, eight lanes at a time (masked lanes load as 0 and are
 * masked out of the sums). */
ZB_AVX2_FN static void s_ln_row_avx2(float *y, const float *a, const float *b, const float *c,
                                     int n, const float *gamma, const float *beta, float eps) {
    const int terms = b == NULL ? 1 : c == NULL ? 2 : 3;
    const __m256 mt = _mm256_castsi256_ps(s_mask8(n % 8));
    const __m256i mti = s_mask8(n % 8);
    const int nv = n - n % 8;
    const __m256 vk = _mm256_set1_ps(terms == 3   ? (a[0] + b[0]) + c[0]
                                     : terms == 2 ? a[0] + b[0]
                                                  : a[0]);
    __m256 vs = _mm256_setzero_ps();
    int i;
    if (terms == 3) {
        for (i = 0; i < nv; i += 8) {
            __m256 v = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)),
                                     _mm256_loadu_ps(c + i));
            _mm256_storeu_ps(y + i, v);
            vs = _mm256_add_ps(vs, _mm256_sub_ps(v, vk));
        }
        if (i < n) {
            __m256 v = _mm256_add_ps(
                _mm256_add_ps(_mm256_maskload_ps(a + i, mti), _mm256_maskload_ps(b + i, mti)),
                _mm256_maskload_ps(c + i, mti));
            _mm256_maskstore_ps(y + i, mti, v);
            vs = _mm256_add_ps(vs, _mm256_and_ps(_mm256_sub_ps(v, vk), mt));
        }
    } else if (terms == 2) {
        for (i = 0; i < nv; i += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
            _mm256_storeu_ps(y + i, v);
            vs = _mm256_add_ps(vs, _mm256_sub_ps(v, vk));
        }
        if (i < n) {
            __m256 v =
                _mm256_add_ps(_mm256_maskload_ps(a + i, mti), _mm256_maskload_ps(b + i, mti));
            _mm256_maskstore_ps(y + i, mti, v);
            vs = _mm256_add_ps(vs, _mm256_and_ps(_mm256_sub_ps(v, vk), mt));
        }
    } else {
        for (i = 0; i < nv; i += 8) {
            __m256 v = _mm256_loadu_ps(a + i);
            _mm256_storeu_ps(y + i, v);
            vs = _mm256_add_ps(vs, _mm256_sub_ps(v, vk));
        }
        if (i < n) {
            __m256 v = _mm256_maskload_ps(a + i, mti);
            _mm256_maskstore_ps(y + i, mti, v);
            vs = _mm256_add_ps(vs, _mm256_and_ps(_mm256_sub_ps(v, vk), mt));
        }
    }
    const __m256 vmean = _mm256_set1_ps(s_hsum8(vs) / (float)n); /* of v - k */
    __m256 vsd = _mm256_setzero_ps(), vss = _mm256_setzero_ps();
    for (i = 0; i < nv; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(y + i), vk), vmean);
        vsd = _mm256_add_ps(vsd, d);
        vss = _mm256_fmadd_ps(d, d, vss);
    }
    if (i < n) {
        __m256 d = _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(y + i, mti), vk), vmean);
        d = _mm256_and_ps(d, mt);
        vsd = _mm256_add_ps(vsd, d);
        vss = _mm256_fmadd_ps(d, d, vss);
    }
    const float sd = s_hsum8(vsd);
    float var = (s_hsum8(vss) - sd * sd / (float)n) / (float)n;
    if (var < 0.0f) var = 0.0f;
    const __m256 rstd = _mm256_set1_ps(1.0f / sqrtf(var + eps));
    for (i = 0; i < nv; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(y + i), vk), vmean);
        d = _mm256_mul_ps(d, rstd);
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(d, _mm256_loadu_ps(gamma + i), _mm256_loadu_ps(beta + i)));
    }
    if (i < n) {
        __m256 d = _mm256_sub_ps(_mm256_sub_ps(_mm256_maskload_ps(y + i, mti), vk), vmean);
        d = _mm256_mul_ps(d, rstd);
        _mm256_maskstore_ps(y + i, mti,
                            _mm256_fmadd_ps(d, _mm256_maskload_ps(gamma + i, mti),
                                            _mm256_maskload_ps(beta + i, mti)));
    }
}

/* ===================================================================== */
/* AVX-512 variant                                                       */
/* ===================================================================== */

/* The AVX2 variant's formulas, operation for operation, sixteen lanes at a
 * time: an element's result is the same bits in both.  Functions without
 * an AVX-512 form here run their AVX2 form. */

ZB_AVX512_FN static inline __m512 s_exp16(__m512 x) {
    /* constant first: a NaN input stays NaN (see s_exp8) */
    x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    __m512 p = _mm512_set1_ps(s_exp_p[4]);
    for (int i = 3; i >= 0; i--) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(s_exp_p[i]));
    __m512 er = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_mul_ps(r, r), p, r));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(er, _mm512_castsi512_ps(e));
}

ZB_AVX512_FN static inline __m512 s_erf_small16(__m512 x) {
    __m512 u = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(s_erf_a[6]);
    for (int i = 5; i >= 0; i--) p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(s_erf_a[i]));
    return _mm512_fmadd_ps(x, p, x);
}

ZB_AVX512_FN static inline __m512 s_erfc_big16(__m512 a) {
    __m512 ab =
        _mm512_min_ps(_mm512_set1_ps(ERFC_ZERO), _mm512_max_ps(_mm512_set1_ps(ERF_SPLIT), a));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(ab, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 g = _mm512_set1_ps(s_erfc_g[7]);
    for (int i = 6; i >= 0; i--) g = _mm512_fmadd_ps(g, t, _mm512_set1_ps(s_erfc_g[i]));
    __m512 hi = _mm512_mul_ps(ab, ab);
    __m512 lo = _mm512_fmsub_ps(ab, ab, hi);
    __m512 e = _mm512_mul_ps(s_exp16(_mm512_sub_ps(_mm512_setzero_ps(), hi)),
                             _mm512_fnmadd_ps(lo, _mm512_set1_ps(1.0f), _mm512_set1_ps(1.0f)));
    __m512 r = _mm512_mul_ps(e, g);
    __mmask16 zero = _mm512_cmp_ps_mask(a, _mm512_set1_ps(ERFC_ZERO), _CMP_GE_OQ);
    return _mm512_mask_blend_ps(zero, r, _mm512_setzero_ps());
}

ZB_AVX512_FN static inline __m512 s_gelu16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(SQRT1_2));
    __m512 a = _mm512_abs_ps(z);
    __m512 small = _mm512_add_ps(one, s_erf_small16(z));
    __m512 c = s_erfc_big16(a);
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 big = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), c), c);
    __mmask16 is_small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(ERF_SPLIT), _CMP_LT_OQ);
    __m512 one_plus = _mm512_mask_blend_ps(is_small, big, small);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), one_plus);
}

ZB_AVX512_FN static void s_gelu_avx512(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, s_gelu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, s_gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* The sum of a softmax row's 16 lane sums (lane l holds the terms j with
 * j % 16 == l, in order), in one fixed order: the AVX2 attention keeps the
 * same 16 lane sums in two registers, so both give the same bits. */
static inline float s_sum16(const float l[16]) {
    float p[8]; /* pairwise: rounding grows with log2(16), not 16 */
    for (int i = 0; i < 8; i++) p[i] = l[i] + l[i + 8];
    for (int i = 0; i < 4; i++) p[i] += p[i + 4];
    return (p[0] + p[2]) + (p[1] + p[3]);
}

/* --- attention, AVX-512 (head_dim a multiple of 16) ----------------------
 *
 * Per (sequence, head) of t tokens, with lds = the scratch's row stride:
 *   kt[d][j] = k[j][d]              16 x 16 register transposes, zero
 *                                   columns past t
 *   s[i][j]  = scale * q_i . k_j    tiles of up to 8 rows x 16 columns: one
 *                                   kt row load feeds 8 FMAs whose q operand
 *                                   is a broadcast from memory
 *   p[i]     = softmax(s[i][0..t))
 *   ctx_i    = sum_j p[i][j] v_j    tiles of up to 6 rows x 64 columns
 * Every element is a fixed fma chain over its own operands (d in order for
 * s, j in order for ctx), so a sequence's result does not depend on the
 * batch, and the AVX2 twin below (8-column tiles, the softmax sum kept as
 * the same 16 lane sums) gives the same bits.  This replaces two OpenBLAS
 * calls per block whose fixed cost dominated at BERT's short lengths. */

#define S_QK_ROWS 8
#define S_PV_ROWS 6

/* in[0..16) rows of 16 -> out[c] = column c of the block. */
ZB_AVX512_FN static inline void s_transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4g + c], lane l: column 4l + c of rows 4g .. 4g+3 */
    for (int g = 0; g < 4; g++) {
        const __m512 *tg = t + 4 * g;
        u[4 * g + 0] = _mm512_shuffle_ps(tg[0], tg[2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(tg[0], tg[2], 0xee);
        u[4 * g + 2] = _mm512_shuffle_ps(tg[1], tg[3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(tg[1], tg[3], 0xee);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 xl = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        const __m512 xh = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xee);
        const __m512 yl = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        const __m512 yh = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_f32x4(xl, yl, 0x88);
        r[c + 4] = _mm512_shuffle_f32x4(xl, yl, 0xdd);
        r[c + 8] = _mm512_shuffle_f32x4(xh, yh, 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(xh, yh, 0xdd);
    }
}

/* kt[d][j] (row stride lds) = k[j][d] for j < t, d < dh; 0 for t <= j <
 * round16(t). */
ZB_AVX512_FN static void s_transpose_k(const float *k, int ld, int t, int dh, float *kt, int lds) {
    for (int j0 = 0; j0 < t; j0 += 16)
        for (int d0 = 0; d0 < dh; d0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = j0 + i < t ? _mm512_loadu_ps(k + (size_t)(j0 + i) * (size_t)ld + d0)
                                  : _mm512_setzero_ps();
            s_transpose16(r);
            for (int c = 0; c < 16; c++)
                _mm512_storeu_ps(kt + (size_t)(d0 + c) * (size_t)lds + j0, r[c]);
        }
}

/* s[r][0..16) = scale * sum_d q_r[d] kt[d][0..16) for R rows. */
#define S_QK_TILE(R)                                                                               \
    ZB_AVX512_FN static void s_qk_tile_##R(const float *q, int ld, const float *kt, int lds,       \
                                           int dh, float scale, float *s, int ldso) {              \
        __m512 acc[R];                                                                             \
        _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++) acc[r] = _mm512_setzero_ps();        \
        for (int d = 0; d < dh; d++) {                                                             \
            const __m512 w = _mm512_loadu_ps(kt + (size_t)d * (size_t)lds);                        \
            _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++) acc[r] =                         \
                _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)r * (size_t)ld + (size_t)d]), w, acc[r]); \
        }                                                                                          \
        const __m512 sc = _mm512_set1_ps(scale);                                                   \
        _Pragma("GCC unroll 8") for (int r = 0; r < (R); r++)                                      \
            _mm512_storeu_ps(s + (size_t)r * (size_t)ldso, _mm512_mul_ps(acc[r], sc));             \
    }
S_QK_TILE(1)
S_QK_TILE(2)
S_QK_TILE(3)
S_QK_TILE(4)
S_QK_TILE(5)
S_QK_TILE(6)
S_QK_TILE(7)
S_QK_TILE(8)
#undef S_QK_TILE

typedef void (*s_qk_fn)(const float *, int, const float *, int, int, float, float *, int);
static const s_qk_fn s_qk_tiles[S_QK_ROWS + 1] = {
    NULL,        s_qk_tile_1, s_qk_tile_2, s_qk_tile_3, s_qk_tile_4,
    s_qk_tile_5, s_qk_tile_6, s_qk_tile_7, s_qk_tile_8,
};

/* ctx_r[0..16 C) = sum_{j < t} p[r][j] v_j[0..16 C) for R rows. */
#define S_PV_TILE(R, C)                                                                            \
    ZB_AVX512_FN static void s_pv_tile_##R##_##C(const float *p, int lds, const float *v, int ld,  \
                                                 int t, float *ctx) {                              \
        __m512 acc[R][C];                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++)                                      \
            _Pragma("GCC unroll 4") for (int c = 0; c < (C); c++) acc[r][c] = _mm512_setzero_ps(); \
        for (int j = 0; j < t; j++) {                                                              \
            __m512 w[C];                                                                           \
            _Pragma("GCC unroll 4") for (int c = 0; c < (C); c++) w[c] =                           \
                _mm512_loadu_ps(v + (size_t)j * (size_t)ld + 16 * c);                              \
            _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                \
                const __m512 b = _mm512_set1_ps(p[(size_t)r * (size_t)lds + (size_t)j]);           \
                _Pragma("GCC unroll 4") for (int c = 0; c < (C); c++) acc[r][c] =                  \
                    _mm512_fmadd_ps(b, w[c], acc[r][c]);                                           \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++)                                      \
            _Pragma("GCC unroll 4") for (int c = 0; c < (C); c++)                                  \
                _mm512_storeu_ps(ctx + (size_t)r * (size_t)ld + 16 * c, acc[r][c]);                \
    }
#define S_PV_ROW(R) S_PV_TILE(R, 1) S_PV_TILE(R, 2) S_PV_TILE(R, 3) S_PV_TILE(R, 4)
S_PV_ROW(1)
S_PV_ROW(2)
S_PV_ROW(3)
S_PV_ROW(4)
S_PV_ROW(5)
S_PV_ROW(6)
#undef S_PV_ROW
#undef S_PV_TILE

typedef void (*s_pv_fn)(const float *, int, const float *, int, int, float *);
#define S_PV_ROW(R)                                                                                \
    { NULL, s_pv_tile_##R##_1, s_pv_tile_##R##_2, s_pv_tile_##R##_3, s_pv_tile_##R##_4 }
static const s_pv_fn s_pv_tiles[S_PV_ROWS + 1][5] = {
    {NULL, NULL, NULL, NULL, NULL},
    S_PV_ROW(1),
    S_PV_ROW(2),
    S_PV_ROW(3),
    S_PV_ROW(4),
    S_PV_ROW(5),
    S_PV_ROW(6),
};
#undef S_PV_ROW

/* softmax of s[0..t) in place; lanes t .. round16(t) become 0. */
ZB_AVX512_FN static void s_softmax_row_avx512(float *s, int t) {
    const int tf = t & ~15;
    const __mmask16 mt = (__mmask16)((1u << (t - tf)) - 1);
    __m512 vm = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < tf; j += 16) vm = _mm512_max_ps(vm, _mm512_loadu_ps(s + j));
    if (mt) vm = _mm512_mask_max_ps(vm, mt, vm, _mm512_loadu_ps(s + tf));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(vm));
    __m512 vs = _mm512_setzero_ps();
    for (int j = 0; j < tf; j += 16) {
        const __m512 e = s_exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), m));
        _mm512_storeu_ps(s + j, e);
        vs = _mm512_add_ps(vs, e);
    }
    if (mt) {
        const __m512 x = _mm512_loadu_ps(s + tf);
        const __m512 e = _mm512_maskz_mov_ps(mt, s_exp16(_mm512_sub_ps(x, m)));
        _mm512_storeu_ps(s + tf, e);
        vs = _mm512_add_ps(vs, e);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, vs);
    const __m512 inv = _mm512_set1_ps(1.0f / s_sum16(lanes));
    for (int j = 0; j < t; j += 16)
        _mm512_storeu_ps(s + j, _mm512_mul_ps(_mm512_loadu_ps(s + j), inv));
}

/* One (sequence, head) block: q, k, v, ctx at its first row and column. */
ZB_AVX512_FN static void s_attention_block_avx512(const float *q, const float *k, const float *v,
                                                  float *ctx, int ld, int t, int dh, float scale,
                                                  float *s, float *kt, int lds) {
    s_transpose_k(k, ld, t, dh, kt, lds);
    for (int i0 = 0; i0 < t; i0 += S_QK_ROWS) {
        const int rows = t - i0 < S_QK_ROWS ? t - i0 : S_QK_ROWS;
        for (int j0 = 0; j0 < t; j0 += 16)
            s_qk_tiles[rows](q + (size_t)i0 * (size_t)ld, ld, kt + j0, lds, dh, scale,
                             s + (size_t)i0 * (size_t)lds + j0, lds);
    }
    for (int i = 0; i < t; i++) s_softmax_row_avx512(s + (size_t)i * (size_t)lds, t);
    for (int i0 = 0; i0 < t; i0 += S_PV_ROWS) {
        const int rows = t - i0 < S_PV_ROWS ? t - i0 : S_PV_ROWS;
        for (int d0 = 0; d0 < dh; d0 += 64) {
            const int c = dh - d0 < 64 ? (dh - d0) / 16 : 4;
            s_pv_tiles[rows][c](s + (size_t)i0 * (size_t)lds, lds, v + d0, ld, t,
                                ctx + (size_t)i0 * (size_t)ld + d0);
        }
    }
}

/* --- attention, AVX2 (head_dim a multiple of 16): the AVX-512 tiles' twin */

/* kt[d][j] = k[j][d] for j < t, d < dh; 0 for t <= j < round16(t): 8 x 8
 * register transposes. */
ZB_AVX2_FN static void s_transpose_k_avx2(const float *k, int ld, int t, int dh, float *kt,
                                          int lds) {
    const int tp = (t + 15) / 16 * 16;
    for (int j0 = 0; j0 < tp; j0 += 8)
        for (int d0 = 0; d0 < dh; d0 += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = j0 + i < t ? _mm256_loadu_ps(k + (size_t)(j0 + i) * (size_t)ld + d0)
                                  : _mm256_setzero_ps();
            const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
            const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
            const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
            const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
            const __m256 c[8] = {
                _mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31),
            };
            for (int i = 0; i < 8; i++)
                _mm256_storeu_ps(kt + (size_t)(d0 + i) * (size_t)lds + j0, c[i]);
        }
}

/* s[r][0..16) = scale * sum_d q_r[d] kt[d][0..16) for R rows (<= 6: 12
 * accumulators). */
#define S_QK16_ROWS 6
#define S_QK16_TILE(R)                                                                             \
    ZB_AVX2_FN static void s_qk16_tile_##R(const float *q, int ld, const float *kt, int lds,       \
                                           int dh, float scale, float *s, int ldso) {              \
        __m256 lo[R], hi[R];                                                                       \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) lo[r] = hi[r] = _mm256_setzero_ps(); \
        for (int d = 0; d < dh; d++) {                                                             \
            const __m256 w0 = _mm256_loadu_ps(kt + (size_t)d * (size_t)lds);                       \
            const __m256 w1 = _mm256_loadu_ps(kt + (size_t)d * (size_t)lds + 8);                   \
            _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                \
                const __m256 x = _mm256_broadcast_ss(q + (size_t)r * (size_t)ld + (size_t)d);      \
                lo[r] = _mm256_fmadd_ps(x, w0, lo[r]);                                             \
                hi[r] = _mm256_fmadd_ps(x, w1, hi[r]);                                             \
            }                                                                                      \
        }                                                                                          \
        const __m256 sc = _mm256_set1_ps(scale);                                                   \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                    \
            _mm256_storeu_ps(s + (size_t)r * (size_t)ldso, _mm256_mul_ps(lo[r], sc));              \
            _mm256_storeu_ps(s + (size_t)r * (size_t)ldso + 8, _mm256_mul_ps(hi[r], sc));          \
        }                                                                                          \
    }
S_QK16_TILE(1)
S_QK16_TILE(2)
S_QK16_TILE(3)
S_QK16_TILE(4)
S_QK16_TILE(5)
S_QK16_TILE(6)
#undef S_QK16_TILE

static const s_qk_fn s_qk16_tiles[S_QK16_ROWS + 1] = {
    NULL, s_qk16_tile_1, s_qk16_tile_2, s_qk16_tile_3, s_qk16_tile_4, s_qk16_tile_5, s_qk16_tile_6,
};

/* ctx_r[0..16) = sum_{j < t} p[r][j] v_j[0..16) for R rows. */
#define S_PV16_TILE(R)                                                                             \
    ZB_AVX2_FN static void s_pv16_tile_##R(const float *p, int lds, const float *v, int ld, int t, \
                                           float *ctx) {                                           \
        __m256 lo[R], hi[R];                                                                       \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) lo[r] = hi[r] = _mm256_setzero_ps(); \
        for (int j = 0; j < t; j++) {                                                              \
            const __m256 w0 = _mm256_loadu_ps(v + (size_t)j * (size_t)ld);                         \
            const __m256 w1 = _mm256_loadu_ps(v + (size_t)j * (size_t)ld + 8);                     \
            _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                \
                const __m256 b = _mm256_broadcast_ss(p + (size_t)r * (size_t)lds + (size_t)j);     \
                lo[r] = _mm256_fmadd_ps(b, w0, lo[r]);                                             \
                hi[r] = _mm256_fmadd_ps(b, w1, hi[r]);                                             \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < (R); r++) {                                    \
            _mm256_storeu_ps(ctx + (size_t)r * (size_t)ld, lo[r]);                                 \
            _mm256_storeu_ps(ctx + (size_t)r * (size_t)ld + 8, hi[r]);                             \
        }                                                                                          \
    }
S_PV16_TILE(1)
S_PV16_TILE(2)
S_PV16_TILE(3)
S_PV16_TILE(4)
S_PV16_TILE(5)
S_PV16_TILE(6)
#undef S_PV16_TILE

typedef void (*s_pv16_fn)(const float *, int, const float *, int, int, float *);
static const s_pv16_fn s_pv16_tiles[S_PV_ROWS + 1] = {
    NULL, s_pv16_tile_1, s_pv16_tile_2, s_pv16_tile_3, s_pv16_tile_4, s_pv16_tile_5, s_pv16_tile_6,
};

/* s_softmax_row_avx512's arithmetic: the 16 lane sums as two registers. */
ZB_AVX2_FN static void s_softmax_row16_avx2(float *s, int t) {
    const int tp = (t + 15) / 16 * 16;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vm = ninf;
    for (int j = 0; j < tp; j += 8) {
        const __m256i m = s_mask8(t - j < 0 ? 0 : t - j);
        vm = _mm256_max_ps(vm,
                           _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j), _mm256_castsi256_ps(m)));
    }
    const __m256 m = _mm256_set1_ps(s_hmax8(vm));
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int j = 0; j < tp; j += 16) {
        const __m256 m0 = _mm256_castsi256_ps(s_mask8(t - j < 0 ? 0 : t - j));
        const __m256 m1 = _mm256_castsi256_ps(s_mask8(t - j - 8 < 0 ? 0 : t - j - 8));
        const __m256 e0 = _mm256_and_ps(m0, s_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), m)));
        const __m256 e1 = _mm256_and_ps(m1, s_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), m)));
        _mm256_storeu_ps(s + j, e0);
        _mm256_storeu_ps(s + j + 8, e1);
        lo = _mm256_add_ps(lo, e0);
        hi = _mm256_add_ps(hi, e1);
    }
    float lanes[16];
    _mm256_storeu_ps(lanes, lo);
    _mm256_storeu_ps(lanes + 8, hi);
    const __m256 inv = _mm256_set1_ps(1.0f / s_sum16(lanes));
    for (int j = 0; j < t; j += 8)
        _mm256_storeu_ps(s + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), inv));
}

ZB_AVX2_FN static void s_attention_block_avx2(const float *q, const float *k, const float *v,
                                              float *ctx, int ld, int t, int dh, float scale,
                                              float *s, float *kt, int lds) {
    s_transpose_k_avx2(k, ld, t, dh, kt, lds);
    for (int i0 = 0; i0 < t; i0 += S_QK16_ROWS) {
        const int rows = t - i0 < S_QK16_ROWS ? t - i0 : S_QK16_ROWS;
        for (int j0 = 0; j0 < t; j0 += 16)
            s_qk16_tiles[rows](q + (size_t)i0 * (size_t)ld, ld, kt + j0, lds, dh, scale,
                               s + (size_t)i0 * (size_t)lds + j0, lds);
    }
    for (int i = 0; i < t; i++) s_softmax_row16_avx2(s + (size_t)i * (size_t)lds, t);
    for (int i0 = 0; i0 < t; i0 += S_PV_ROWS) {
        const int rows = t - i0 < S_PV_ROWS ? t - i0 : S_PV_ROWS;
        for (int d0 = 0; d0 < dh; d0 += 16)
            s_pv16_tiles[rows](s + (size_t)i0 * (size_t)lds, lds, v + d0, ld, t,
                               ctx + (size_t)i0 * (size_t)ld + d0);
    }
}

/* ===================================================================== */
/* public functions                                                      */
/* ===================================================================== */

void zb_kernels_erf(zb_kernels_isa_t isa, const float *x, float *y, size_t n) {
    if (isa >= ZB_KERNELS_AVX2) {
        s_erf_avx2(x, y, n);
        return;
    }
    for (size_t i = 0; i < n; i++) y[i] = s_erf1(x[i]);
}

void zb_kernels_exp(zb_kernels_isa_t isa, const float *x, float *y, size_t n) {
    if (isa >= ZB_KERNELS_AVX2) {
        s_exp_avx2(x, y, n);
        return;
    }
    for (size_t i = 0; i < n; i++) y[i] = s_exp1(x[i]);
}

void zb_kernels_gelu(zb_kernels_isa_t isa, const float *x, float *y, size_t n) {
    if (isa == ZB_KERNELS_AVX512) {
        s_gelu_avx512(x, y, n);
        return;
    }
    if (isa >= ZB_KERNELS_AVX2) {
        s_gelu_avx2(x, y, n);
        return;
    }
    for (size_t i = 0; i < n; i++) y[i] = s_gelu1(x[i]);
}

void zb_kernels_gelu_tanh(zb_kernels_isa_t isa, const float *x, float *y, size_t n) {
    if (isa >= ZB_KERNELS_AVX2) {
        s_gelu_tanh_avx2(x, y, n);
        return;
    }
    for (size_t i = 0; i < n; i++) y[i] = s_gelu_tanh1(x[i]);
}

void zb_kernels_softmax_rows(zb_kernels_isa_t isa, float *x, int rows, int cols, int ld) {
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * (size_t)ld;
        if (isa >= ZB_KERNELS_AVX2)
            s_softmax_row_avx2(row, cols);
        else
            s_softmax_row1(row, cols);
    }
}

void zb_kernels_bias_gelu(const zb_kernels_exec_t *e, float *x, int rows, int cols,
                          const float *bias) {
    const zb_kernels_isa_t isa = e->isa;
#pragma omp parallel for num_threads(e->threads) schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * (size_t)cols;
        if (isa >= ZB_KERNELS_AVX2) {
            s_bias_gelu_row_avx2(row, bias, cols);
        } else {
            for (int i = 0; i < cols; i++) row[i] = s_gelu1(bias ? row[i] + bias[i] : row[i]);
        }
    }
}

/* One LayerNorm row in the chosen variant. */
static void s_ln_row(zb_kernels_isa_t isa, float *y, const float *a, const float *b, const float *c,
                     int n, const float *gamma, const float *beta, float eps) {
    if (isa >= ZB_KERNELS_AVX2)
        s_ln_row_avx2(y, a, b, c, n, gamma, beta, eps);
    else
        s_ln_row1(y, a, b, c, n, gamma, beta, eps);
}

void zb_kernels_layernorm(const zb_kernels_exec_t *e, float *x, int rows, int cols,
                          const float *gamma, const float *beta, float eps) {
    const zb_kernels_isa_t isa = e->isa;
#pragma omp parallel for num_threads(e->threads) schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * (size_t)cols;
        s_ln_row(isa, row, row, NULL, NULL, cols, gamma, beta, eps);
    }
}

void zb_kernels_bias_residual_layernorm(const zb_kernels_exec_t *e, float *io, const float *t,
                                        int rows, int cols, const float *bias, const float *gamma,
                                        const float *beta, float eps) {
    const zb_kernels_isa_t isa = e->isa;
#pragma omp parallel for num_threads(e->threads) schedule(static)
    for (int r = 0; r < rows; r++) {
        size_t off = (size_t)r * (size_t)cols;
        /* (t + bias) + residual: the same association as the reference's
         * dense(x) + input. */
        if (t != NULL)
            s_ln_row(isa, io + off, t + off, bias, io + off, cols, gamma, beta, eps);
        else
            s_ln_row(isa, io + off, io + off, bias, NULL, cols, gamma, beta, eps);
    }
}

void zb_kernels_embed_layernorm(const zb_kernels_exec_t *e, float *out, const int32_t *ids,
                                const int32_t *pos, int rows, int cols, const float *word,
                                const float *position, const float *type0, const float *gamma,
                                const float *beta, float eps) {
    const zb_kernels_isa_t isa = e->isa;
#pragma omp parallel for num_threads(e->threads) schedule(static)
    for (int r = 0; r < rows; r++) {
        s_ln_row(isa, out + (size_t)r * (size_t)cols, word + (size_t)ids[r] * (size_t)cols,
                 position + (size_t)pos[r] * (size_t)cols, type0, cols, gamma, beta, eps);
    }
}

/* Row stride of the score matrix: whole vectors, for the AVX-512 tiles. */
static int s_round16(int n) {
    return (n + 15) / 16 * 16;
}

size_t zb_kernels_attention_scratch(int seq_len_max, int head_dim) {
    /* scores [seq_len_max][lds], then the transposed keys [head_dim][lds] */
    return ((size_t)seq_len_max + (size_t)head_dim) * (size_t)s_round16(seq_len_max);
}

void zb_kernels_attention(const zb_kernels_exec_t *e, const float *q, const float *k,
                          const float *v, float *ctx, int ld, const int *seq_off, int n_seqs,
                          int heads, int head_dim, int seq_len_max, float *scratch) {
    const float scale = 1.0f / sqrtf((float)head_dim);
    const size_t per_thread = zb_kernels_attention_scratch(seq_len_max, head_dim);
    const int pairs = n_seqs * heads;
    const zb_kernels_isa_t isa = e->isa;
    const bool own = isa >= ZB_KERNELS_AVX2 && head_dim % 16 == 0;
    const int lds = s_round16(seq_len_max);
#pragma omp parallel num_threads(e->threads)
    {
        float *s = scratch + (size_t)omp_get_thread_num() * per_thread;
        /* The OpenMP build of OpenBLAS sizes its own team from the calling
         * task's nthreads-var (and stays serial inside an active parallel
         * region); setting it to 1 for this implicit task also covers a
         * one-thread team, where the region is inactive.  It ends with the
         * region. */
        omp_set_num_threads(1);
        /* Dynamic: blocks cost T^2, and sequence lengths vary. */
#pragma omp for schedule(dynamic, 1)
        for (int p = 0; p < pairs; p++) {
            int sq = p / heads, h = p % heads;
            int o = seq_off[sq], t = seq_off[sq + 1] - o;
            size_t base = (size_t)o * (size_t)ld + (size_t)h * (size_t)head_dim;
            if (own) {
                (isa == ZB_KERNELS_AVX512 ? s_attention_block_avx512 : s_attention_block_avx2)(
                    q + base, k + base, v + base, ctx + base, ld, t, head_dim, scale, s,
                    s + (size_t)seq_len_max * lds, lds);
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, head_dim, scale, q + base,
                        ld, k + base, ld, 0.0f, s, t);
            zb_kernels_softmax_rows(isa, s, t, t, t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, head_dim, t, 1.0f, s, t,
                        v + base, ld, 0.0f, ctx + base, ld);
        }
    }
}
