/*
 * bert.c -- the BERT encoder forward pass over packed (padding-free) batches.
 *
 * Data flow of one batch of n tokens (H hidden, I intermediate):
 *   out <- LayerNorm(word[id] + position[i] + token_type[0])
 *   per layer:
 *     q, k, v <- out W^T + b      bias pre-filled, GEMM with beta = 1
 *     ctx     <- attention per (sequence, head)
 *     out     <- out + ctx Wo^T   GEMM accumulating into the residual
 *     out     <- LayerNorm(out + bo)              one pass
 *     ffn     <- out W1^T + b1    bias pre-filled
 *     ffn     <- gelu(ffn)                        one pass
 *     out     <- out + ffn W2^T   into the residual again
 *     out     <- LayerNorm(out + b2)              one pass
 * Every GEMM runs with beta = 1, so OpenBLAS never makes its own pass over
 * C to zero it, and the residual costs no extra read.  The caller's out
 * buffer is the hidden state throughout, so the result needs no copy.
 *
 * Invariants: the scratch arena (q, k, v, ctx [n_tokens_max][H], ffn
 * [n_tokens_max][I], per-thread attention scores, sequence offsets and
 * positions) is allocated once in zb_bert_new; zb_bert_forward allocates
 * nothing and never writes to the model's weights (read-only views, possibly
 * into a shared mapping).
 *
 * Threads: the kernels open OpenMP regions of b->threads threads.  A GEMM
 * either splits its rows across such a region (each thread a single-threaded
 * sgemm) or, for few rows per thread, is one call on OpenBLAS's OpenMP team,
 * which the OpenMP build sizes from the calling thread's nthreads-var:
 * zb_bert_forward sets that to b->threads for its duration and restores the
 * caller's value.  Results do not depend on the thread count beyond the
 * GEMMs' own float rounding.
 */
#include "bert.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "limits.h"

#define S_ALIGN 64 /* cache line; also the widest vector load */

struct zb_bert {
    const zb_model_t *model;
    zb_bert_config_t cfg;        /* copy of the model's architecture */
    const zb_bert_weights_t *w;  /* borrowed from the model */
    int n_tokens_max;            /* tokens per batch */
    int seq_len_max;             /* tokens per sequence */
    int threads;                 /* OpenMP threads for kernels and GEMMs */
    int head_dim;                /* hidden / heads */
    zb_kern_exec_t ex;           /* threads + instruction set for the kernels */
    void *arena;                 /* the one allocation behind the pointers below */
    float *q, *k, *v, *ctx;      /* [n_tokens_max][hidden] each */
    float *ffn;                  /* [n_tokens_max][intermediate] */
    float *scores;               /* [threads][seq_len_max^2] attention scores */
    int *seq_off;                /* [n_tokens_max + 1] first row of each sequence */
    int32_t *pos;                /* [n_tokens_max] position of each row */
};

/* Adds a block of count elements of size bytes to the arena layout at *off
 * (rounded up to S_ALIGN), storing its offset in *at.  Returns false on
 * size_t overflow. */
static bool s_layout(size_t *off, size_t count, size_t size, size_t *at) {
    size_t bytes, end;
    size_t start = (*off + S_ALIGN - 1) / S_ALIGN * S_ALIGN;
    if (start < *off || __builtin_mul_overflow(count, size, &bytes) ||
        __builtin_add_overflow(start, bytes, &end))
        return false;
    *at = start;
    *off = end;
    return true;
}

/* Checks the architecture against what the kernels assume; the model
 * loader validates too, but a zb_bert_t must not trust a caller's model. */
static int s_check_config(const zb_bert_config_t *c, const zb_bert_weights_t *w, zb_diag_t *d) {
    if (c->hidden < 1 || c->hidden > ZB_HIDDEN_MAX || c->heads < 1 || c->heads > ZB_HEADS_MAX ||
        c->hidden % c->heads != 0)
        return zb_diag_set(d, ZB_EINVAL, "model has hidden %d and %d heads: unusable", c->hidden,
                           c->heads);
    if (c->intermediate < 1 || c->intermediate > ZB_INTERMEDIATE_MAX || c->layers < 1 ||
        c->layers > ZB_LAYERS_MAX || c->vocab_size < 1 || c->max_positions < 1 ||
        c->type_vocab_size < 1)
        return zb_diag_set(d, ZB_EINVAL,
                           "model has intermediate %d, %d layers, vocab %d, %d positions, "
                           "%d token types: unusable",
                           c->intermediate, c->layers, c->vocab_size, c->max_positions,
                           c->type_vocab_size);
    if (!(c->layer_norm_eps >= 0.0f) || !isfinite(c->layer_norm_eps))
        return zb_diag_set(d, ZB_EINVAL, "model has layer_norm_eps %g", (double)c->layer_norm_eps);
    if (w == NULL || !w->word || !w->position || !w->token_type || !w->emb_ln_g ||
        !w->emb_ln_b || !w->layer)
        return zb_diag_set(d, ZB_EINVAL, "model has no embedding weights");
    for (int l = 0; l < c->layers; l++) {
        const zb_layer_weights_t *L = &w->layer[l];
        const float *p[] = {L->q_w,        L->q_b,        L->k_w,        L->k_b,
                            L->v_w,        L->v_b,        L->attn_out_w, L->attn_out_b,
                            L->attn_ln_g,  L->attn_ln_b,  L->ffn_in_w,   L->ffn_in_b,
                            L->ffn_out_w,  L->ffn_out_b,  L->ffn_ln_g,   L->ffn_ln_b};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            if (p[i] == NULL) return zb_diag_set(d, ZB_EINVAL, "layer %d lacks a weight", l);
    }
    return 0;
}

int zb_bert_new(const zb_model_t *m, int n_tokens_max, int seq_len_max, int threads,
                zb_bert_t **out, zb_diag_t *d) {
    if (out == NULL) return zb_diag_set(d, ZB_EINVAL, "no place for the context");
    *out = NULL;
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "no model");
    const zb_bert_config_t *c = zb_model_config(m);
    const zb_bert_weights_t *w = zb_model_weights(m);
    if (c == NULL) return zb_diag_set(d, ZB_EINVAL, "model has no configuration");
    int rc = s_check_config(c, w, d);
    if (rc != 0) return rc;
    if (seq_len_max < 1 || seq_len_max > c->max_positions)
        return zb_diag_set(d, ZB_EINVAL, "seq_len_max %d outside [1, %d] (model positions)",
                           seq_len_max, c->max_positions);
    if (n_tokens_max < 1 || n_tokens_max > ZB_BATCH_TOKENS_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "n_tokens_max %d outside [1, %d]", n_tokens_max,
                           ZB_BATCH_TOKENS_MAX);
    if (threads <= 0) threads = omp_get_max_threads();
    if (threads > ZB_THREADS_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "%d threads: at most %d", threads, ZB_THREADS_MAX);

    zb_bert_t *b = calloc(1, sizeof *b);
    if (b == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    b->model = m;
    b->cfg = *c;
    b->w = w;
    b->n_tokens_max = n_tokens_max;
    b->seq_len_max = seq_len_max;
    b->threads = threads;
    b->head_dim = c->hidden / c->heads;
    b->ex = (zb_kern_exec_t){.threads = threads, .isa = zb_kern_isa_best()};

    /* Every factor is bounded by limits.h, but the products are still
     * checked: the limits may grow. */
    const size_t n = (size_t)n_tokens_max, h = (size_t)c->hidden;
    size_t nh, ni, per_thread, scores;
    size_t off = 0, at_q, at_k, at_v, at_ctx, at_ffn, at_scores, at_seq, at_pos;
    per_thread = zb_kern_attention_scratch(seq_len_max);
    if (__builtin_mul_overflow(n, h, &nh) ||
        __builtin_mul_overflow(n, (size_t)c->intermediate, &ni) ||
        __builtin_mul_overflow(per_thread, (size_t)threads, &scores) ||
        !s_layout(&off, nh, sizeof(float), &at_q) || !s_layout(&off, nh, sizeof(float), &at_k) ||
        !s_layout(&off, nh, sizeof(float), &at_v) ||
        !s_layout(&off, nh, sizeof(float), &at_ctx) ||
        !s_layout(&off, ni, sizeof(float), &at_ffn) ||
        !s_layout(&off, scores, sizeof(float), &at_scores) ||
        !s_layout(&off, n + 1, sizeof(int), &at_seq) ||
        !s_layout(&off, n, sizeof(int32_t), &at_pos) ||
        __builtin_add_overflow(off, (size_t)S_ALIGN - 1, &off)) {
        rc = zb_diag_set(d, ZB_ELIMIT, "scratch for %d tokens overflows the address space",
                         n_tokens_max);
        goto fail;
    }
    off = off / S_ALIGN * S_ALIGN; /* aligned_alloc wants a multiple */
    b->arena = aligned_alloc(S_ALIGN, off);
    if (b->arena == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory for %zu bytes of scratch (%d tokens)", off,
                         n_tokens_max);
        goto fail;
    }
    char *base = b->arena;
    b->q = (float *)(void *)(base + at_q);
    b->k = (float *)(void *)(base + at_k);
    b->v = (float *)(void *)(base + at_v);
    b->ctx = (float *)(void *)(base + at_ctx);
    b->ffn = (float *)(void *)(base + at_ffn);
    b->scores = (float *)(void *)(base + at_scores);
    b->seq_off = (int *)(void *)(base + at_seq);
    b->pos = (int32_t *)(void *)(base + at_pos);
    *out = b;
    return 0;
fail:
    zb_bert_destroy(&b);
    return rc;
}

void zb_bert_destroy(zb_bert_t **pb) {
    if (pb == NULL || *pb == NULL) return;
    free((*pb)->arena);
    free(*pb);
    *pb = NULL;
}

int zb_bert_n_tokens_max(const zb_bert_t *b) { return b->n_tokens_max; }
int zb_bert_seq_len_max(const zb_bert_t *b) { return b->seq_len_max; }
int zb_bert_hidden(const zb_bert_t *b) { return b->cfg.hidden; }

/* Rows per thread from which a GEMM is split by rows across our threads,
 * each running a single-threaded sgemm on its rows (measured 3-7% faster
 * than OpenBLAS's own threading on 2 cores: no synchronisation inside the
 * GEMM).  Below it, one OpenBLAS call with OpenBLAS's threads, which share
 * one packed copy of the weights instead of each packing all of it. */
#define S_SPLIT_ROWS_MIN 256

/* Rows [r0, r1) of y (+)= x W^T, W being [out_dim][in_dim] row-major.  With
 * a bias, y's rows are first set to it; without, y's content (the residual)
 * is accumulated into.  Either way beta is 1, so OpenBLAS skips its own
 * pass that scales (or zeroes) C. */
static void s_gemm_rows(const float *x, int r0, int r1, int in_dim, const float *w,
                        int out_dim, const float *bias, float *y) {
    if (r1 <= r0) return;
    float *yr = y + (size_t)r0 * (size_t)out_dim;
    if (bias != NULL)
        for (int r = r0; r < r1; r++)
            memcpy(y + (size_t)r * (size_t)out_dim, bias, (size_t)out_dim * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, out_dim, in_dim, 1.0f,
                x + (size_t)r0 * (size_t)in_dim, in_dim, w, in_dim, 1.0f, yr, out_dim);
}

/* y[n][out_dim] = x W^T + bias, or y += x W^T when bias is NULL. */
static void s_linear(const zb_bert_t *b, const float *x, int n, int in_dim, const float *w,
                     int out_dim, const float *bias, float *y) {
    const int nt = b->threads;
    if (nt > 1 && n / nt >= S_SPLIT_ROWS_MIN) {
#pragma omp parallel num_threads(nt)
        {
            /* this implicit task's sgemm stays single-threaded */
            omp_set_num_threads(1);
            const int t = omp_get_thread_num(), team = omp_get_num_threads();
            const int r0 = (int)((int64_t)n * t / team), r1 = (int)((int64_t)n * (t + 1) / team);
            s_gemm_rows(x, r0, r1, in_dim, w, out_dim, bias, y);
        }
    } else {
        s_gemm_rows(x, 0, n, in_dim, w, out_dim, bias, y);
    }
}

/* Checks the batch and fills seq_off and pos; returns the token count or a
 * negative ZB_E* code. */
static int s_check_batch(zb_bert_t *b, const int32_t *ids, const int *seq_len, int n_seqs) {
    if (n_seqs > b->n_tokens_max) return ZB_EINVAL;
    int total = 0;
    b->seq_off[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int len = seq_len[s];
        if (len < 1 || len > b->seq_len_max || len > b->n_tokens_max - total) return ZB_EINVAL;
        for (int i = 0; i < len; i++) b->pos[total + i] = i;
        total += len;
        b->seq_off[s + 1] = total;
    }
    const int32_t vocab = b->cfg.vocab_size;
    for (int i = 0; i < total; i++)
        if (ids[i] < 0 || ids[i] >= vocab) return ZB_EINVAL;
    return total;
}

int zb_bert_forward(zb_bert_t *b, const int32_t *ids, const int *seq_len, int n_seqs,
                    float *out) {
    if (b == NULL || n_seqs < 0) return ZB_EINVAL;
    if (n_seqs == 0) return 0;
    if (ids == NULL || seq_len == NULL || out == NULL) return ZB_EINVAL;
    const int n = s_check_batch(b, ids, seq_len, n_seqs);
    if (n < 0) return n;

    const zb_bert_config_t *c = &b->cfg;
    const zb_bert_weights_t *w = b->w;
    const zb_kern_exec_t *ex = &b->ex;
    /* not H, I: <complex.h>, pulled in by cblas.h, defines I */
    const int hid = c->hidden, inter = c->intermediate;
    const float eps = c->layer_norm_eps;

    /* GEMMs outside our regions: OpenBLAS's OpenMP build takes its team
     * size from this thread's nthreads-var (set for this call only);
     * openblas_set_num_threads covers a build that keeps its own count. */
    const int icv = omp_get_max_threads();
    omp_set_num_threads(b->threads);
    openblas_set_num_threads(b->threads);

    zb_kern_embed_layernorm(ex, out, ids, b->pos, n, hid, w->word, w->position, w->token_type,
                            w->emb_ln_g, w->emb_ln_b, eps);
    for (int l = 0; l < c->layers; l++) {
        const zb_layer_weights_t *L = &w->layer[l];
        s_linear(b, out, n, hid, L->q_w, hid, L->q_b, b->q);
        s_linear(b, out, n, hid, L->k_w, hid, L->k_b, b->k);
        s_linear(b, out, n, hid, L->v_w, hid, L->v_b, b->v);
        zb_kern_attention(ex, b->q, b->k, b->v, b->ctx, hid, b->seq_off, n_seqs, c->heads,
                          b->head_dim, b->seq_len_max, b->scores);
        /* out += ctx Wo^T, then out = LayerNorm(out + bo) */
        s_linear(b, b->ctx, n, hid, L->attn_out_w, hid, NULL, out);
        zb_kern_bias_residual_layernorm(ex, out, NULL, n, hid, L->attn_out_b, L->attn_ln_g,
                                        L->attn_ln_b, eps);
        s_linear(b, out, n, hid, L->ffn_in_w, inter, L->ffn_in_b, b->ffn);
        zb_kern_bias_gelu(ex, b->ffn, n, inter, NULL);
        /* out += gelu(...) W2^T, then out = LayerNorm(out + b2) */
        s_linear(b, b->ffn, n, inter, L->ffn_out_w, hid, NULL, out);
        zb_kern_bias_residual_layernorm(ex, out, NULL, n, hid, L->ffn_out_b, L->ffn_ln_g,
                                        L->ffn_ln_b, eps);
    }
    omp_set_num_threads(icv);
    return 0;
}
