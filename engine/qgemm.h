/*
 * qgemm.h -- the int8 GEMM of quantized models: y[M][N] (+)= x[M][K] W^T
 * with W quantized per output row at convert time and x quantized per row
 * on the fly, products summed exactly in 32-bit integers.
 *
 * Quantization (symmetric, zero point 0):
 *   weights      s_w[j] = max_k |W[j][k]| / 127,  q[j][k] = rint(W[j][k] / s_w[j])
 *                (both 0 for an all-zero row), q in [-127, 127];
 *   activations  s_x[i] = max_k |x[i][k]| / 127,  a[i][k] = rint(x[i][k] * (127 / max))
 *                in [-127, 127] (0 for an all-zero row; a row holding an
 *                infinity or NaN gets s_x = NaN, so its outputs are NaN, as
 *                they would be in fp32);
 *   result       y[i][j] = init + ((float)D[i][j] * (s_x[i] * s_w[j]))
 *                where D[i][j] = sum_k a[i][k] q[j][k] is exact (|D| < 2^31
 *                for K <= ZB_INTERMEDIATE_MAX), "init +" is absent for
 *                ZB_GEMM_ZERO, and every operation is one float rounding.
 * Smoothing (optional, per input channel): a matrix quantized from W with
 * its columns scaled, W'[j][k] = W[j][k] * c_k, carries smooth[k] = 1 / c_k,
 * and every activation row is first multiplied by it, x'[k] = x[k] *
 * smooth[k] (one rounding), then quantized as above: x' W'^T = x W^T.
 * Calibrated c_k move the range of a few outlier channels of x into the
 * weights, where per-row scales cope (SmoothQuant).  smooth all 1: none.
 * So y[i][j] depends only on row i of x, on the quantized weights and on
 * init: never on M, the row's place in the batch, the thread count or the
 * instruction set (the scalar, AVX2 and AVX-512 VNNI variants give the same
 * bits), the same batch invariance gemm.h gives the fp32 path.
 *
 * Packed layout ("panel-q8", version 1): W's rows are cut into panels of
 * ZB_GEMM_NR (16) rows; K is padded with zeros to K4 = 4 ceil(K / 4).  Panel
 * p holds K4 / 4 groups of 64 bytes; byte c * 4 + t of group g is
 * q[16 p + c][4 g + t] (zero past N or K): 16 rows x 4 consecutive k, the
 * operand of one VNNI dot-product instruction.  A panel starts at byte
 * p * K4 * 16, so every group is one aligned cache line when the data
 * starts 64-byte aligned.  Beside the panels a quantized matrix carries
 * s_w[N] (float) and sum[N] = sum_k q[j][k] (int32), which the VNNI kernel
 * needs because it feeds activations as unsigned bytes a + 128.
 *
 * Threads: like zb_gemm, one OpenMP region of e->threads threads cutting
 * whole tiles between them.
 *
 * Thread-safety: no state.  Concurrent calls need distinct work buffers.
 */
#ifndef ZB_QGEMM_H
#define ZB_QGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

#define ZB_QGEMM_LAYOUT_NAME    "panel-q8"
#define ZB_QGEMM_LAYOUT_VERSION 1
#define ZB_QGEMM_KGROUP         4 /* consecutive k per 32-bit lane */

typedef enum zb_qgemm_isa {
    ZB_QGEMM_SCALAR = 0, /* portable C: the reference */
    ZB_QGEMM_AVX2 = 1,   /* AVX2: vpmaddubsw/vpmaddwd, 4 x 16 tile */
    ZB_QGEMM_VNNI = 2,   /* AVX-512 VNNI (vpdpbusd), 12 x 16 tile */
} zb_qgemm_isa_t;

/* The fastest variant this CPU runs.  Environment ZB_QGEMM_ISA=scalar|avx2|
 * vnni lowers it (never past what the CPU has). */
zb_qgemm_isa_t zb_qgemm_isa_best(void);
bool zb_qgemm_isa_supported(zb_qgemm_isa_t isa);
const char *zb_qgemm_isa_name(zb_qgemm_isa_t isa);

/* Bytes of the packed form of an [n][k] matrix: ceil(n / 16) * 16 * K4.
 * n, k >= 1 within limits.h. */
size_t zb_qgemm_packed_bytes(int n, int k);

/* Quantizes rows [0, rows) of the fp32 matrix w (row stride ldw, k
 * columns), each column first multiplied by col[k] (NULL: 1), as rows
 * [row0, row0 + rows) of a packed matrix: their bytes in packed
 * (zb_qgemm_packed_bytes of the whole matrix, zero-filled by the caller
 * beforehand), scale[row0 ..] and sum[row0 ..].  Returns 0, or ZB_EINVAL if
 * w holds an infinity or NaN (nothing sensible quantizes it). */
int zb_qgemm_quantize_rows(const float *w, int rows, int k, size_t ldw, const float *col, int row0,
                           int8_t *packed, float *scale, int32_t *sum);

/* The dequantized matrix: w[j][k] = q[j][k] * s_w[j] (row stride ldw). */
void zb_qgemm_dequantize(const int8_t *packed, const float *scale, int n, int k, float *w,
                         size_t ldw);

/* A quantized weight matrix: borrowed views. */
typedef struct zb_qgemm_w {
    const int8_t *q;     /* zb_qgemm_packed_bytes(n, k) bytes, 64-byte aligned */
    const float *scale;  /* [n] */
    const int32_t *sum;  /* [n] */
    const float *smooth; /* [k] activation multipliers, or NULL: none */
    int n;               /* output features */
    int k;               /* input features */
} zb_qgemm_w_t;

/* Checks that sum[] matches the packed bytes (a corrupt or inconsistent
 * bundle); reads the whole matrix.  Returns true when consistent. */
bool zb_qgemm_check_sums(const zb_qgemm_w_t *w);

typedef struct zb_qgemm_args {
    int m;          /* rows of x and y, >= 0 */
    const float *x; /* [m][w->k], row stride ldx */
    size_t ldx;     /* >= w->k */
    const zb_qgemm_w_t *w;
    zb_gemm_init_t init;          /* as in gemm.h */
    const float *bias;            /* [w->n] for ZB_GEMM_BIAS */
    float *y;                     /* [m][w->n], row stride ldy */
    size_t ldy;                   /* >= w->n */
    zb_gemm_epilogue_fn epilogue; /* as in gemm.h; NULL: none */
    void *epilogue_ctx;
} zb_qgemm_args_t;

typedef struct zb_qgemm_exec {
    int threads;        /* OpenMP threads, >= 1 */
    zb_qgemm_isa_t isa; /* must be one this CPU runs */
    void *work;         /* zb_qgemm_work_bytes(threads, k_max) bytes, 64-byte aligned */
} zb_qgemm_exec_t;

/* Bytes of work buffer for GEMMs with K <= k_max on this many threads. */
size_t zb_qgemm_work_bytes(int threads, int k_max);

/* y (+)= x W^T as above.  x and y must not overlap; nothing is allocated;
 * m == 0 does nothing.  w->k must not exceed the k_max the work buffer was
 * sized for. */
void zb_qgemm(const zb_qgemm_exec_t *e, const zb_qgemm_args_t *a);

#endif
