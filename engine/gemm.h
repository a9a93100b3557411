/*
 * gemm.h -- the fp32 GEMM of the linear layers: y[M][N] (+)= x[M][K] W^T,
 * with W held in a packed panel layout made once (at convert time) from the
 * PyTorch [N][K] matrix.
 *
 * Packed layout ("panel", version 1): W is cut into ceil(N / ZB_GEMM_NR)
 * panels of ZB_GEMM_NR consecutive output rows; panel p is K rows of
 * ZB_GEMM_NR floats, element (k, c) = W[p * ZB_GEMM_NR + c][k], stored at
 * p * K * ZB_GEMM_NR + k * ZB_GEMM_NR + c.  Rows of the last panel beyond N
 * are zero.  Every panel row is one 64-byte cache line; the data must start
 * 64-byte aligned.  The layout does not depend on the instruction set or on
 * any blocking factor, so one bundle serves every CPU.
 *
 * Determinism (the contract the service relies on): K is cut into blocks
 * of ZB_GEMM_KC; block b's sum S_b is one chain of fused multiply-adds from
 * 0 in increasing k, and the blocks are added in order:
 *     S_b = 0;  for k in block b: S_b = fma(x[i][k], W[j][k], S_b);
 *     y[i][j] = epilogue(((init + S_0) + S_1) + ... + S_last)
 * where "init +" is absent for ZB_GEMM_ZERO and init is y[i][j] (accumulate)
 * or bias[j].  So y[i][j] depends only on row i of x, on W and on init --
 * never on M, on the row's place in the batch, on the thread count or on the
 * instruction set: the scalar variant (fmaf) and the SIMD variants give the
 * same bits.  Partial tiles run through the same fma chains: the micro-kernel
 * on zero-padded rows and columns, or (AVX-512, a sliver of r < 12 rows) a
 * kernel of exactly r rows whose every row is the same chain.
 * (Chains of ZB_GEMM_KC rather than K keep the rounding error near a
 * blocked BLAS's: a 3072-long chain started from a residual was 10x worse
 * against a float64 reference.)
 *
 * Threads: zb_gemm opens one OpenMP parallel region of e->threads threads
 * (or none, for one thread or little work) and splits whole tiles between
 * them; no thread waits for another inside the GEMM.
 *
 * Thread-safety: no state.  Concurrent calls need distinct work buffers.
 */
#ifndef ZB_GEMM_H
#define ZB_GEMM_H

#include <stdbool.h>
#include <stddef.h>

/* Output rows per panel of the packed layout (16 floats = 64 bytes). */
#define ZB_GEMM_NR 16

/* The k block of the determinism contract below (and of the cache
 * blocking: a 256 x 16 panel slice is 16 KiB, half of L1).  Changing it
 * changes results in the last bits. */
#define ZB_GEMM_KC 256

/* The packed layout's name and version, as bundles record them. */
#define ZB_GEMM_LAYOUT_NAME    "panel"
#define ZB_GEMM_LAYOUT_VERSION 1

typedef enum zb_gemm_isa {
    ZB_GEMM_SCALAR = 0, /* portable C (fmaf): the reference */
    ZB_GEMM_AVX2 = 1,   /* AVX2 + FMA, 6 x 16 register tile */
    ZB_GEMM_AVX512 = 2, /* AVX-512F, 12 x 16 register tile */
} zb_gemm_isa_t;

/* The fastest variant this CPU runs.  Environment ZB_GEMM_ISA=scalar|avx2|
 * avx512 lowers it (never raises it past what the CPU has). */
zb_gemm_isa_t zb_gemm_isa_best(void);

/* Whether this CPU runs isa; its name ("scalar", "avx2", "avx512"). */
bool zb_gemm_isa_supported(zb_gemm_isa_t isa);
const char *zb_gemm_isa_name(zb_gemm_isa_t isa);

/* Floats of the packed form of an [n][k] matrix: ceil(n / NR) * NR * k.
 * n, k >= 1 and small enough that the product fits (limits.h bounds). */
size_t zb_gemm_packed_floats(int n, int k);

/* Packs w ([n][k], row stride ldw >= k) into packed (zb_gemm_packed_floats
 * (n, k) floats), padding rows set to zero. */
void zb_gemm_pack(const float *w, int n, int k, size_t ldw, float *packed);

/* Packs rows [0, rows) of w (row stride ldw) as rows [row0, row0 + rows) of
 * a packed matrix of n_total rows (row0 + rows <= n_total); writes nothing
 * else.  Used to stack Q, K and V into one packed [3H][H]. */
void zb_gemm_pack_rows(const float *w, int rows, int k, size_t ldw, int row0, int n_total,
                       float *packed);

/* The inverse: w[n][k] (row stride ldw) from a packed matrix. */
void zb_gemm_unpack(const float *packed, int n, int k, float *w, size_t ldw);

/* The lowest of best and the variant that environment variable env names
 * (names[0..n), indexed by variant): a ceiling for measurements and tests,
 * never raising a variant past what the CPU has.  Shared with qgemm.h. */
int zb_gemm_isa_ceiling(const char *env, const char *const *names, int n, int best);

/* How a GEMM of m rows (slivers of mr rows, row blocks of per_block
 * slivers) over n_panels panels is cut into units for nt threads: row
 * blocks, a multiple of nt of them, when rows are many; else groups of
 * panels over every row, so that the weights are still read once.  Threads
 * take units as they finish, so one slowed down by another process on its
 * core does not hold the others up.  Shared with qgemm.h. */
typedef struct zb_gemm_split {
    int m, mr, slivers, n_panels;
    int blocks, groups; /* units: blocks x groups */
} zb_gemm_split_t;

zb_gemm_split_t zb_gemm_split(int m, int mr, int per_block, int n_panels, int nt);

/* Unit u's rows [*m0, *m1) and panels [*p0, *p1). */
void zb_gemm_split_unit(const zb_gemm_split_t *s, int u, int *m0, int *m1, int *p0, int *p1);

/* A packed weight matrix: a borrowed view. */
typedef struct zb_gemm_w {
    const float *p; /* zb_gemm_packed_floats(n, k) floats, 64-byte aligned */
    int n;          /* output features (rows of the PyTorch matrix) */
    int k;          /* input features */
} zb_gemm_w_t;

/* How y starts before the products are added. */
typedef enum zb_gemm_init {
    ZB_GEMM_ZERO = 0,       /* y = x W^T */
    ZB_GEMM_ACCUMULATE = 1, /* y += x W^T (beta = 1: residuals) */
    ZB_GEMM_BIAS = 2,       /* y = bias + x W^T, bias[n] broadcast to every row */
} zb_gemm_init_t;

/* Longest segment an epilogue is called on. */
#define ZB_GEMM_EPILOGUE_MAX 128

/* Fused epilogue: called once for every finished segment y[0..n) of an
 * output row (1 <= n <= ZB_GEMM_EPILOGUE_MAX), while it is still in cache.
 * It must be element-wise (each output depends on its own input only,
 * whatever n and the segment's start), so that determinism holds. */
typedef void (*zb_gemm_epilogue_fn)(void *ctx, float *y, int n);

typedef struct zb_gemm_args {
    int m;                /* rows of x and y, >= 0 */
    const float *x;       /* [m][w->k], row stride ldx */
    size_t ldx;           /* >= w->k */
    const zb_gemm_w_t *w; /* packed weights */
    zb_gemm_init_t init;
    const float *bias;            /* [w->n] for ZB_GEMM_BIAS, else unused */
    float *y;                     /* [m][w->n], row stride ldy */
    size_t ldy;                   /* >= w->n */
    zb_gemm_epilogue_fn epilogue; /* NULL: none */
    void *epilogue_ctx;
} zb_gemm_args_t;

/* How a GEMM runs. */
typedef struct zb_gemm_exec {
    int threads;       /* OpenMP threads, >= 1 */
    zb_gemm_isa_t isa; /* must be one this CPU runs */
    float *work;       /* zb_gemm_work_floats(threads) floats, 64-byte aligned */
} zb_gemm_exec_t;

/* Floats of work buffer a GEMM with this many threads needs (packed
 * activation blocks and edge tiles), whatever the shapes. */
size_t zb_gemm_work_floats(int threads);

/* y (+)= x W^T as the arguments say.  x and y must not overlap.  Nothing is
 * allocated; m == 0 does nothing. */
void zb_gemm(const zb_gemm_exec_t *e, const zb_gemm_args_t *a);

#endif
