/*
 * kernels.h -- the non-GEMM numeric kernels of the forward pass (fp32).
 *
 * Element-wise functions (erf, exp, GELU), fused row epilogues (bias + GELU,
 * bias + residual + LayerNorm, embedding gather + LayerNorm), row softmax and
 * per-(sequence, head) attention over packed batches.  The linear layers'
 * GEMMs are gemm.h's.
 *
 * Every function exists in instruction-set variants chosen by the caller
 * through zb_kernels_isa_t: a portable scalar one, an AVX2+FMA one and, for
 * GELU and attention, an AVX-512 one (compiled with target attributes, so
 * the build needs no -march flag).  The AVX-512 variant gives the AVX2
 * one's bits everywhere (attention when head_dim is a multiple of 16), so
 * an AVX2 node and an AVX-512 node compute the same vectors.  Callers take
 * zb_kernels_isa_best() once and pass it down; tests run every variant the CPU
 * has.
 *
 * Determinism: row kernels split whole rows between threads (static
 * schedule) and compute each row with the same instruction sequence whatever
 * its thread, and attention computes each (sequence, head) block on one
 * thread; so results do not depend on the thread count.  In the AVX2 variant
 * an element's result does not depend on its column either (tails use masked
 * loads, not a scalar loop).
 *
 * Thread-safety: no state; every function may run concurrently on disjoint
 * outputs.  Functions taking a zb_kernels_exec_t open their own OpenMP parallel
 * region of exec->threads threads; the others are single-threaded and safe
 * to call from inside a parallel region.
 */
#ifndef ZB_KERNELS_H
#define ZB_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum zb_kernels_isa {
    ZB_KERNELS_SCALAR = 0, /* portable C */
    ZB_KERNELS_AVX2 = 1,   /* AVX2 + FMA intrinsics */
    ZB_KERNELS_AVX512 = 2, /* AVX-512F where it pays (GELU, attention), AVX2 elsewhere */
} zb_kernels_isa_t;

/* Whether this CPU runs the variant. */
bool zb_kernels_isa_supported(zb_kernels_isa_t isa);

/* The best variant this CPU runs (AVX2 needs both the avx2 and fma flags),
 * capped by the environment variable ZB_KERNELS_ISA (scalar, avx2, avx512) for
 * measurements and tests. */
zb_kernels_isa_t zb_kernels_isa_best(void);

/* How a multi-threaded kernel runs. */
typedef struct zb_kernels_exec {
    int threads;          /* OpenMP threads of the kernel's parallel region, >= 1 */
    zb_kernels_isa_t isa; /* variant; must be one this CPU runs */
} zb_kernels_exec_t;

/* --- element-wise, single-threaded ------------------------------------ */

/* y[i] = erf(x[i]), max abs error < 2e-7 (about 2 ulp near 1).  y may be x. */
void zb_kernels_erf(zb_kernels_isa_t isa, const float *x, float *y, size_t n);

/* y[i] = exp(x[i]) for x <= 88; inputs below -87 give ~1e-38 instead of a
 * denormal or 0.  Relative error about 1e-7.  y may be x. */
void zb_kernels_exp(zb_kernels_isa_t isa, const float *x, float *y, size_t n);

/* y[i] = 0.5 x (1 + erf(x / sqrt 2)), the exact GELU; for x < 0 it uses
 * erfc so that small negative outputs keep their relative accuracy.  y may
 * be x. */
void zb_kernels_gelu(zb_kernels_isa_t isa, const float *x, float *y, size_t n);

/* y[i] = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh
 * approximation of GELU that google-research/bert (and so TF-Hub's BERT
 * modules and Spark NLP) uses; computed as x * sigmoid(2u) with this file's
 * exp, relative error about 1e-7 (it differs from the exact GELU by up to
 * ~5e-4).  y may be x. */
void zb_kernels_gelu_tanh(zb_kernels_isa_t isa, const float *x, float *y, size_t n);

/* Each of the rows (row stride ld >= cols) of x becomes softmax(x[r]):
 * max-subtracted exp, normalised to sum 1.  cols >= 1. */
void zb_kernels_softmax_rows(zb_kernels_isa_t isa, float *x, int rows, int cols, int ld);

/* --- row kernels, rows split across exec->threads ----------------------- */

/* x[r][c] = gelu(x[r][c] + bias[c]) in place, one pass; bias may be NULL
 * (plain GELU, for a bias already folded into the GEMM). */
void zb_kernels_bias_gelu(const zb_kernels_exec_t *e, float *x, int rows, int cols,
                          const float *bias);

/* x[r] = LayerNorm(x[r]) in place: (x - mean) / sqrt(var + eps) * gamma +
 * beta, with biased variance, both in float by two passes over the row. */
void zb_kernels_layernorm(const zb_kernels_exec_t *e, float *x, int rows, int cols,
                          const float *gamma, const float *beta, float eps);

/* io[r] = LayerNorm(t[r] + bias + io[r]): the output dense's epilogue, where
 * io holds the residual on entry and the new hidden state on return.  t may
 * be NULL when the GEMM already accumulated into the residual (beta = 1):
 * then io[r] = LayerNorm(io[r] + bias). */
void zb_kernels_bias_residual_layernorm(const zb_kernels_exec_t *e, float *io, const float *t,
                                        int rows, int cols, const float *bias, const float *gamma,
                                        const float *beta, float eps);

/* out[r] = LayerNorm(word[ids[r]] + position[pos[r]] + type0): the embedding
 * step.  ids and pos must already be valid row indices (not checked here). */
void zb_kernels_embed_layernorm(const zb_kernels_exec_t *e, float *out, const int32_t *ids,
                                const int32_t *pos, int rows, int cols, const float *word,
                                const float *position, const float *type0, const float *gamma,
                                const float *beta, float eps);

/* --- attention ---------------------------------------------------------- */

/* Floats of scratch one thread needs for sequences of up to seq_len_max
 * tokens and heads of head_dim (the score matrix, the transposed keys). */
size_t zb_kernels_attention_scratch(int seq_len_max, int head_dim);

/*
 * Multi-head self-attention over a packed batch.  q, k, v and ctx are
 * [n_tokens][ld] with head h in columns [h*head_dim, (h+1)*head_dim);
 * sequence s is rows [seq_off[s], seq_off[s+1]) and attends only to itself.
 * For every (s, h): ctx = softmax(q k^T / sqrt(head_dim)) v, computed by
 * one thread: with this file's SIMD tiles (AVX2 or AVX-512, head_dim a
 * multiple of 16; the same bits in both), else with single-threaded
 * OpenBLAS GEMMs.  scratch holds
 * e->threads * zb_kernels_attention_scratch(seq_len_max, head_dim) floats, and every
 * sequence is at most seq_len_max long.
 */
void zb_kernels_attention(const zb_kernels_exec_t *e, const float *q, const float *k,
                          const float *v, float *ctx, int ld, const int *seq_off, int n_seqs,
                          int heads, int head_dim, int seq_len_max, float *scratch);

#endif
