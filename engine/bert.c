/*
 * bert.c -- the BERT encoder forward pass over packed (padding-free) batches.
 *
 * Data flow of one batch of n tokens (H hidden, I intermediate):
 *   out <- LayerNorm(word[id] + position[i] + token_type[0])
 *   per layer:
 *     qkv <- out Wqkv^T + bqkv    one GEMM for Q, K and V (stacked weights),
 *                                 accumulators started from the bias
 *     ctx <- attention per (sequence, head), reading q, k, v out of qkv
 *     t   <- ctx Wo^T             into the spent qkv buffer
 *     out <- LayerNorm((t + bo) + out)        one pass
 *     ffn <- gelu(out W1^T + b1)  GELU fused into the GEMM's last k block
 *     t   <- ffn W2^T
 *     out <- LayerNorm((t + b2) + out)        one pass
 * The two output projections do not accumulate into the residual:
 * (t + b) + residual is the reference's association, and a sum started
 * from the residual (~1) rounds at the residual's magnitude (as one fma
 * chain over K, that was 10x less accurate against the float64 reference at
 * bert-base shapes).
 * The linear layers run on zb_gemm (gemm.h) over weights packed at convert
 * time; the caller's out buffer is the hidden state throughout, so the
 * result needs no copy.
 *
 * Batch invariance: zb_gemm computes every element by a fixed sequence of
 * fma chains over its own row only (gemm.h), the row kernels and attention
 * likewise never mix rows of different sequences, so a sequence's output
 * rows are the same bits alone, in any batch, at any position and with any
 * thread count.
 *
 * Invariants: the scratch arena (qkv and ctx [n_tokens_max][3H], ffn
 * [n_tokens_max][I, padded], the GEMM work buffer, per-thread attention
 * scratch, sequence offsets and positions, the lane split's arrays) is
 * allocated once in zb_bert_new; zb_bert_forward allocates nothing and
 * never writes to the model's weights (read-only views, possibly into a
 * shared mapping).
 *
 * Threads: a batch of enough sequences runs as b->threads lanes, one
 * OpenMP region for the whole pass: the sequences are regrouped per lane
 * (s_plan_lanes), each thread runs s_encode on its lane's rows with
 * one-thread GEMMs and kernels and its own parts of the work buffers, and
 * the rows go back to the caller's order at the end.  Otherwise every GEMM
 * and kernel opens its own region of b->threads threads.  Attention's
 * OpenBLAS calls (when it uses them) run single-threaded inside those
 * regions; zb_bert_forward sets the caller's nthreads-var to b->threads for
 * its duration and restores it.
 */
#include "bert.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "kernels.h"
#include "qgemm.h"
#include "limits.h"

#define S_ALIGN 64 /* cache line; also the widest vector load */

/* A sequence and its estimated cost (s_seq_cost), for the lane split. */
struct s_by_cost {
    int64_t cost;
    int seq;
};

struct zb_bert {
    const zb_model_t *model;
    zb_config_t cfg;             /* copy of the model's architecture */
    const zb_model_weights_t *w; /* borrowed from the model */
    int n_tokens_max;            /* tokens per batch */
    int seq_len_max;             /* tokens per sequence */
    int threads;                 /* OpenMP threads for kernels and GEMMs */
    int head_dim;                /* hidden / heads */
    zb_kernels_exec_t ex;        /* threads + instruction set for the kernels */
    zb_gemm_exec_t gx;           /* threads, instruction set and work buffer of the GEMMs */
    zb_qgemm_exec_t qx;          /* the same for int8 models (work NULL otherwise) */
    size_t qwork_lane;           /* bytes of qx.work one thread needs */
    int last_lanes;              /* lanes of the last forward pass (1: operations split) */
    bool int8;                   /* the model's linear layers are int8 */
    void *arena;                 /* the one allocation behind the pointers below */
    float *qkv;                  /* [n_tokens_max][3 hidden]: q | k | v per row */
    float *ctx;                  /* [n_tokens_max][3 hidden], first hidden columns used */
    float *ffn;                  /* [n_tokens_max][ld_ffn] */
    size_t ld_ffn;               /* row stride of ffn, >= intermediate (see s_row_stride) */
    float *scores;               /* [threads][zb_kernels_attention_scratch] attention scratch */
    int *seq_off;                /* [n_tokens_max + 1] first row of each sequence */
    int32_t *pos;                /* [n_tokens_max] position of each row */
    /* lanes (zb_bert_forward): the batch's sequences regrouped per lane */
    struct s_by_cost *by_cost;    /* [n_tokens_max] sequences by cost */
    int *lane_seq;                /* [n_tokens_max] original index, lane by lane */
    int *lane_len;                /* [n_tokens_max] their lengths */
    int32_t *lane_ids;            /* [n_tokens_max] their ids */
    int *lane_off;                /* [n_tokens_max + 1] the caller's seq_off */
    zb_bert_gelu_t gelu;          /* FFN activation (erf unless set) */
    zb_bert_observer_fn observer; /* NULL, or called with every linear layer's input */
    void *observer_ctx;
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

/* Row stride (floats) for a scratch matrix of `cols` columns: whole cache
 * lines, and never a multiple of 4 KiB, where the rows of a GEMM tile would
 * all fall into one L1 set (bert-base's 3072-wide FFN: ~8% of its GEMMs). */
static size_t s_row_stride(int cols) {
    size_t ld = ((size_t)cols + 15) / 16 * 16;
    if (ld * sizeof(float) % 4096 == 0) ld += 16;
    return ld;
}

/* Checks the architecture against what the kernels assume; the model
 * loader validates too, but a zb_bert_t must not trust a caller's model. */
static int s_check_config(const zb_config_t *c, const zb_model_weights_t *w, zb_diag_t *d) {
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
    if (w == NULL || !w->word || !w->position || !w->token_type || !w->emb_ln_g || !w->emb_ln_b ||
        !w->layer)
        return zb_diag_set(d, ZB_EINVAL, "model has no embedding weights");
    for (int l = 0; l < c->layers; l++) {
        const zb_model_layer_t *L = &w->layer[l];
        const float *p[] = {L->qkv_b,    L->attn_out_b, L->attn_ln_g, L->attn_ln_b,
                            L->ffn_in_b, L->ffn_out_b,  L->ffn_ln_g,  L->ffn_ln_b};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            if (p[i] == NULL) return zb_diag_set(d, ZB_EINVAL, "layer %d lacks a weight", l);
        if (L->int8 != w->layer[0].int8)
            return zb_diag_set(d, ZB_EINVAL, "layer %d: int8 and fp32 layers mixed", l);
        /* the four linear operands: [n][k] as the architecture says */
        const int want[4][2] = {{3 * c->hidden, c->hidden},
                                {c->hidden, c->hidden},
                                {c->intermediate, c->hidden},
                                {c->hidden, c->intermediate}};
        const zb_gemm_w_t *f[4] = {&L->qkv, &L->attn_out, &L->ffn_in, &L->ffn_out};
        const zb_qgemm_w_t *q[4] = {&L->qkv_q8, &L->attn_out_q8, &L->ffn_in_q8, &L->ffn_out_q8};
        for (int i = 0; i < 4; i++) {
            const bool set = L->int8 ? q[i]->q && q[i]->scale && q[i]->sum : f[i]->p != NULL;
            const int n = L->int8 ? q[i]->n : f[i]->n, k = L->int8 ? q[i]->k : f[i]->k;
            if (!set) return zb_diag_set(d, ZB_EINVAL, "layer %d lacks a weight", l);
            if (n != want[i][0] || k != want[i][1])
                return zb_diag_set(d, ZB_EINVAL,
                                   "layer %d has packed weights of the wrong "
                                   "shape",
                                   l);
        }
    }
    return 0;
}

int zb_bert_new(const zb_model_t *m, int n_tokens_max, int seq_len_max, int threads,
                zb_bert_t **out, zb_diag_t *d) {
    if (out == NULL) return zb_diag_set(d, ZB_EINVAL, "no place for the context");
    *out = NULL;
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "no model");
    const zb_config_t *c = zb_model_config(m);
    const zb_model_weights_t *w = zb_model_weights(m);
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
    b->ex = (zb_kernels_exec_t){.threads = threads, .isa = zb_kernels_isa_best()};
    b->gx = (zb_gemm_exec_t){.threads = threads, .isa = zb_gemm_isa_best()};
    b->int8 = w->layer[0].int8;
    b->qx = (zb_qgemm_exec_t){.threads = threads, .isa = zb_qgemm_isa_best()};
    const int k_max = c->hidden > c->intermediate ? c->hidden : c->intermediate;

    /* Every factor is bounded by limits.h, but the products are still
     * checked: the limits may grow. */
    const size_t n = (size_t)n_tokens_max, h3 = 3 * (size_t)c->hidden;
    size_t nh3, ni, per_thread, scores;
    size_t off = 0, at_qkv, at_ctx, at_ffn, at_work, at_qwork, at_scores, at_seq, at_pos;
    size_t at_by_cost, at_lane_seq, at_lane_len, at_lane_ids, at_lane_off;
    per_thread = zb_kernels_attention_scratch(seq_len_max, c->hidden / c->heads);
    if (__builtin_mul_overflow(n, h3, &nh3) ||
        __builtin_mul_overflow(n, s_row_stride(c->intermediate), &ni) ||
        __builtin_mul_overflow(per_thread, (size_t)threads, &scores) ||
        !s_layout(&off, nh3, sizeof(float), &at_qkv) ||
        !s_layout(&off, nh3, sizeof(float), &at_ctx) ||
        !s_layout(&off, ni, sizeof(float), &at_ffn) ||
        !s_layout(&off, zb_gemm_work_floats(threads), sizeof(float), &at_work) ||
        !s_layout(&off, b->int8 ? zb_qgemm_work_bytes(threads, k_max) : 0, 1, &at_qwork) ||
        !s_layout(&off, scores, sizeof(float), &at_scores) ||
        !s_layout(&off, n + 1, sizeof(int), &at_seq) ||
        !s_layout(&off, n, sizeof(int32_t), &at_pos) ||
        !s_layout(&off, n, sizeof(struct s_by_cost), &at_by_cost) ||
        !s_layout(&off, n, sizeof(int), &at_lane_seq) ||
        !s_layout(&off, n, sizeof(int), &at_lane_len) ||
        !s_layout(&off, n, sizeof(int32_t), &at_lane_ids) ||
        !s_layout(&off, n + 1, sizeof(int), &at_lane_off) ||
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
    b->qkv = (float *)(void *)(base + at_qkv);
    b->ctx = (float *)(void *)(base + at_ctx);
    b->ffn = (float *)(void *)(base + at_ffn);
    b->ld_ffn = s_row_stride(c->intermediate);
    b->gx.work = (float *)(void *)(base + at_work);
    b->qx.work = b->int8 ? base + at_qwork : NULL;
    b->qwork_lane = zb_qgemm_work_bytes(1, k_max);
    b->scores = (float *)(void *)(base + at_scores);
    b->seq_off = (int *)(void *)(base + at_seq);
    b->pos = (int32_t *)(void *)(base + at_pos);
    b->by_cost = (struct s_by_cost *)(void *)(base + at_by_cost);
    b->lane_seq = (int *)(void *)(base + at_lane_seq);
    b->lane_len = (int *)(void *)(base + at_lane_len);
    b->lane_ids = (int32_t *)(void *)(base + at_lane_ids);
    b->lane_off = (int *)(void *)(base + at_lane_off);
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

int zb_bert_n_tokens_max(const zb_bert_t *b) {
    return b->n_tokens_max;
}
int zb_bert_seq_len_max(const zb_bert_t *b) {
    return b->seq_len_max;
}
int zb_bert_hidden(const zb_bert_t *b) {
    return b->cfg.hidden;
}
int zb_bert_last_lanes(const zb_bert_t *b) {
    return b->last_lanes;
}

void zb_bert_set_observer(zb_bert_t *b, zb_bert_observer_fn fn, void *ctx) {
    if (b == NULL) return;
    b->observer = fn;
    b->observer_ctx = ctx;
}

void zb_bert_set_gelu(zb_bert_t *b, zb_bert_gelu_t g) {
    if (b) b->gelu = g == ZB_BERT_GELU_TANH ? ZB_BERT_GELU_TANH : ZB_BERT_GELU_ERF;
}

/* The rows one team of threads works on, and how: all rows with every
 * thread splitting each operation (one text, small batches), or one thread
 * alone on its group of whole sequences, contiguous in the regrouped batch
 * (see zb_bert_forward). */
typedef struct {
    zb_kernels_exec_t ex; /* threads + instruction set of the kernels */
    zb_gemm_exec_t gx;    /* of the fp32 GEMMs, with this lane's work buffer */
    zb_qgemm_exec_t qx;   /* of the int8 GEMMs, likewise */
    float *scores;        /* attention scratch for ex.threads threads */
    int r0, n;            /* rows [r0, r0 + n) */
    int s0, n_seqs;       /* sequences [s0, s0 + n_seqs) */
} s_lane_t;

/* y[n][w->n] (row stride ldy) = x W^T started from init (and bias), with
 * an optional epilogue on every finished output segment: on the fp32
 * operand w, or on q for an int8 model. */
static void s_linear(const zb_bert_t *b, const s_lane_t *ln, int layer, int which, const float *x,
                     size_t ldx, const zb_gemm_w_t *w, const zb_qgemm_w_t *q, zb_gemm_init_t init,
                     const float *bias, float *y, size_t ldy, zb_gemm_epilogue_fn epilogue) {
    void *ctx = (void *)(uintptr_t)&ln->ex;
    const int n = ln->n;
    if (b->observer != NULL)
        b->observer(b->observer_ctx, layer, which, x, ldx, n, b->int8 ? q->k : w->k);
    if (b->int8) {
        const zb_qgemm_args_t a = {.m = n,
                                   .x = x,
                                   .ldx = ldx,
                                   .w = q,
                                   .init = init,
                                   .bias = bias,
                                   .y = y,
                                   .ldy = ldy,
                                   .epilogue = epilogue,
                                   .epilogue_ctx = ctx};
        zb_qgemm(&ln->qx, &a);
        return;
    }
    const zb_gemm_args_t a = {.m = n,
                              .x = x,
                              .ldx = ldx,
                              .w = w,
                              .init = init,
                              .bias = bias,
                              .y = y,
                              .ldy = ldy,
                              .epilogue = epilogue,
                              .epilogue_ctx = ctx};
    zb_gemm(&ln->gx, &a);
}

/* The FFN's GELU as a GEMM epilogue: the segment is still in L1. */
static void s_gelu_epilogue(void *ctx, float *y, int n) {
    const zb_kernels_exec_t *ex = ctx;
    zb_kernels_gelu(ex->isa, y, y, (size_t)n);
}

static void s_gelu_tanh_epilogue(void *ctx, float *y, int n) {
    const zb_kernels_exec_t *ex = ctx;
    zb_kernels_gelu_tanh(ex->isa, y, y, (size_t)n);
}

/* seq_off and pos for sequences of these lengths, back to back. */
static void s_fill_offsets(zb_bert_t *b, const int *seq_len, int n_seqs) {
    int total = 0;
    b->seq_off[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int i = 0; i < seq_len[s]; i++) b->pos[total + i] = i;
        total += seq_len[s];
        b->seq_off[s + 1] = total;
    }
}

/* Checks the batch and fills seq_off and pos; returns the token count or a
 * negative ZB_E* code. */
static int s_check_batch(zb_bert_t *b, const int32_t *ids, const int *seq_len, int n_seqs) {
    if (n_seqs > b->n_tokens_max) return ZB_EINVAL;
    int total = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int len = seq_len[s];
        if (len < 1 || len > b->seq_len_max || len > b->n_tokens_max - total) return ZB_EINVAL;
        total += len;
    }
    const int32_t vocab = b->cfg.vocab_size;
    for (int i = 0; i < total; i++)
        if (ids[i] < 0 || ids[i] >= vocab) return ZB_EINVAL;
    s_fill_offsets(b, seq_len, n_seqs);
    return total;
}

/* The encoder on one lane's rows: every row of a lane belongs to one of its
 * sequences, so a lane reads and writes only its own rows of out and the
 * scratch matrices. */
static void s_encode(const zb_bert_t *b, const s_lane_t *ln, const int32_t *ids, float *out) {
    const zb_config_t *c = &b->cfg;
    const zb_model_weights_t *w = b->w;
    const zb_kernels_exec_t *ex = &ln->ex;
    /* not H, I: <complex.h> (via cblas.h elsewhere) defines I */
    const int hid = c->hidden, n = ln->n;
    const float eps = c->layer_norm_eps;
    const size_t ld3 = 3 * (size_t)hid, r0 = (size_t)ln->r0;
    float *x = out + r0 * (size_t)hid; /* the hidden state, in place */
    float *qkv = b->qkv + r0 * ld3, *ctx = b->ctx + r0 * ld3;
    float *t = qkv; /* [n][hid] in the spent qkv rows */
    float *ffn = b->ffn + r0 * b->ld_ffn;
    zb_kernels_embed_layernorm(ex, x, ids + r0, b->pos + r0, n, hid, w->word, w->position,
                               w->token_type, w->emb_ln_g, w->emb_ln_b, eps);
    for (int l = 0; l < c->layers; l++) {
        const zb_model_layer_t *L = &w->layer[l];
        s_linear(b, ln, l, 0, x, (size_t)hid, &L->qkv, &L->qkv_q8, ZB_GEMM_BIAS, L->qkv_b, qkv, ld3,
                 NULL);
        /* attention addresses rows by the batch's own offsets: base pointers
         * of row 0, this lane's sequences */
        zb_kernels_attention(ex, b->qkv, b->qkv + hid, b->qkv + 2 * hid, b->ctx, (int)ld3,
                             b->seq_off + ln->s0, ln->n_seqs, c->heads, b->head_dim, b->seq_len_max,
                             ln->scores);
        /* t = ctx Wo^T, x = LayerNorm((t + bo) + x) */
        s_linear(b, ln, l, 1, ctx, ld3, &L->attn_out, &L->attn_out_q8, ZB_GEMM_ZERO, NULL, t,
                 (size_t)hid, NULL);
        zb_kernels_bias_residual_layernorm(ex, x, t, n, hid, L->attn_out_b, L->attn_ln_g,
                                           L->attn_ln_b, eps);
        s_linear(b, ln, l, 2, x, (size_t)hid, &L->ffn_in, &L->ffn_in_q8, ZB_GEMM_BIAS, L->ffn_in_b,
                 ffn, b->ld_ffn,
                 b->gelu == ZB_BERT_GELU_TANH ? s_gelu_tanh_epilogue : s_gelu_epilogue);
        /* t = gelu(...) W2^T, x = LayerNorm((t + b2) + x) */
        s_linear(b, ln, l, 3, ffn, b->ld_ffn, &L->ffn_out, &L->ffn_out_q8, ZB_GEMM_ZERO, NULL, t,
                 (size_t)hid, NULL);
        zb_kernels_bias_residual_layernorm(ex, x, t, n, hid, L->ffn_out_b, L->ffn_ln_g, L->ffn_ln_b,
                                           eps);
    }
}

/* The relative cost of a sequence of len tokens: per token, the linear
 * layers' 8H^2 + 4HI FLOPs and attention's 4 len H, the latter weighted 3x
 * for its small GEMMs' lower efficiency; divided by 4H. */
static int64_t s_seq_cost(const zb_config_t *c, int len) {
    return (int64_t)len * (2 * (int64_t)c->hidden + c->intermediate + 3 * (int64_t)len);
}

/* Whether x goes before y: heaviest first, ties in batch order (a total
 * order, so the split is deterministic). */
static bool s_by_cost_before(const struct s_by_cost *x, const struct s_by_cost *y) {
    return x->cost != y->cost ? x->cost > y->cost : x->seq < y->seq;
}

/* Heap sort by s_by_cost_before: in place, where glibc's qsort may call
 * malloc, and zb_bert_forward allocates nothing. */
static void s_sort_by_cost(struct s_by_cost *v, int n) {
    for (int end = n, start = n / 2 - 1;;) {
        int root;
        if (start >= 0) {
            root = start--;
        } else {
            if (--end <= 0) return;
            const struct s_by_cost t = v[0];
            v[0] = v[end];
            v[end] = t;
            root = 0;
        }
        /* sift down: the heap's top is the element that goes last */
        for (int child; (child = 2 * root + 1) < end; root = child) {
            if (child + 1 < end && s_by_cost_before(&v[child], &v[child + 1])) child++;
            if (!s_by_cost_before(&v[root], &v[child])) break;
            const struct s_by_cost t = v[root];
            v[root] = v[child];
            v[child] = t;
        }
    }
}

/* Splits the batch's sequences between nt lanes of about equal cost:
 * heaviest first, each to the lightest lane so far (within one sequence's
 * cost of even, where cutting the length-sorted list in nt runs was off by
 * up to half a long sequence: 6-13% between lanes).  Fills lane_seq (the
 * sequences lane by lane, each lane in batch order), lane_len, cut (lane g
 * is lane_seq[cut[g] .. cut[g + 1])) and rows (lane g's rows).  Returns
 * false when a lane would hold fewer than S_LANE_ROWS_MIN rows or cost more
 * than S_LANE_SKEW of an equal share: then splitting each operation is
 * better. */
#define S_LANE_ROWS_MIN 96   /* 8 slivers of 12 rows: a GEMM at full speed */
#define S_LANE_SKEW     1.05 /* a lane's cost / (total / nt) */
static bool s_plan_lanes(zb_bert_t *b, const int *seq_len, int n_seqs, int nt, int *cut,
                         int *rows) {
    int64_t load[ZB_THREADS_MAX], total = 0;
    int count[ZB_THREADS_MAX];
    for (int s = 0; s < n_seqs; s++) {
        b->by_cost[s] = (struct s_by_cost){s_seq_cost(&b->cfg, seq_len[s]), s};
        total += b->by_cost[s].cost;
    }
    s_sort_by_cost(b->by_cost, n_seqs);
    for (int g = 0; g < nt; g++) {
        load[g] = 0;
        count[g] = 0;
        rows[g] = 0;
    }
    /* lane_len borrowed as each sequence's lane until the regrouping */
    int *lane_of = b->lane_len;
    for (int i = 0; i < n_seqs; i++) {
        int best = 0;
        for (int g = 1; g < nt; g++)
            if (load[g] < load[best]) best = g;
        const int s = b->by_cost[i].seq;
        load[best] += b->by_cost[i].cost;
        count[best]++;
        rows[best] += seq_len[s];
        lane_of[s] = best;
    }
    for (int g = 0; g < nt; g++)
        if (rows[g] < S_LANE_ROWS_MIN || (double)load[g] * nt > S_LANE_SKEW * (double)total)
            return false;
    cut[0] = 0;
    for (int g = 0; g < nt; g++) cut[g + 1] = cut[g] + count[g];
    int next[ZB_THREADS_MAX];
    for (int g = 0; g < nt; g++) next[g] = cut[g];
    for (int s = 0; s < n_seqs; s++) b->lane_seq[next[lane_of[s]]++] = s;
    for (int i = 0; i < n_seqs; i++) b->lane_len[i] = seq_len[b->lane_seq[i]];
    return true;
}

int zb_bert_forward(zb_bert_t *b, const int32_t *ids, const int *seq_len, int n_seqs, float *out) {
    if (b == NULL || n_seqs < 0) return ZB_EINVAL;
    if (n_seqs == 0) return 0;
    if (ids == NULL || seq_len == NULL || out == NULL) return ZB_EINVAL;
    const int n = s_check_batch(b, ids, seq_len, n_seqs);
    if (n < 0) return n;

    /* attention's single-threaded OpenBLAS calls run inside our regions; the
     * nthreads-var keeps a stray OpenBLAS call outside them on our team */
    const int icv = omp_get_max_threads();
    omp_set_num_threads(b->threads);

    const int nt = b->threads;
    int cut[ZB_THREADS_MAX + 1], rows[ZB_THREADS_MAX];
    b->last_lanes = 1;
    /* Batches of many sequences: each thread runs the whole encoder on its
     * own group of sequences, alone -- no barrier between operations, no
     * operation cut thinner than its best GEMM shape (about 5% faster than
     * splitting every operation, on 2 cores).  The observer is called from
     * one thread only, so calibration keeps the split. */
    if (nt > 1 && b->observer == NULL && n_seqs >= nt &&
        s_plan_lanes(b, seq_len, n_seqs, nt, cut, rows)) {
        b->last_lanes = nt;
        /* the batch regrouped lane by lane (ids, offsets, positions); the
         * caller's offsets kept for the way back */
        memcpy(b->lane_off, b->seq_off, ((size_t)n_seqs + 1) * sizeof *b->seq_off);
        for (int i = 0, at = 0; i < n_seqs; at += b->lane_len[i], i++)
            memcpy(b->lane_ids + at, ids + b->lane_off[b->lane_seq[i]],
                   (size_t)b->lane_len[i] * sizeof *ids);
        s_fill_offsets(b, b->lane_len, n_seqs);
#pragma omp parallel num_threads(nt)
        {
            const int g = omp_get_thread_num();
            s_lane_t ln = {.ex = {.threads = 1, .isa = b->ex.isa},
                           .gx = {.threads = 1,
                                  .isa = b->gx.isa,
                                  .work = b->gx.work + (size_t)g * zb_gemm_work_floats(1)},
                           .qx = {.threads = 1, .isa = b->qx.isa, .work = NULL},
                           .scores = b->scores + (size_t)g * zb_kernels_attention_scratch(
                                                                 b->seq_len_max, b->head_dim),
                           .r0 = b->seq_off[cut[g]],
                           .n = rows[g],
                           .s0 = cut[g],
                           .n_seqs = cut[g + 1] - cut[g]};
            if (b->int8) ln.qx.work = (uint8_t *)b->qx.work + (size_t)g * b->qwork_lane;
            s_encode(b, &ln, b->lane_ids, out);
        }
        /* rows back in the caller's order, through the spent qkv buffer
         * ([n][3H] >= [n][H]) */
        const size_t hid = (size_t)b->cfg.hidden;
        memcpy(b->qkv, out, (size_t)n * hid * sizeof *out);
        for (int i = 0; i < n_seqs; i++)
            memcpy(out + (size_t)b->lane_off[b->lane_seq[i]] * hid,
                   b->qkv + (size_t)b->seq_off[i] * hid,
                   (size_t)b->lane_len[i] * hid * sizeof *out);
    } else {
        const s_lane_t ln = {.ex = b->ex,
                             .gx = b->gx,
                             .qx = b->qx,
                             .scores = b->scores,
                             .r0 = 0,
                             .n = n,
                             .s0 = 0,
                             .n_seqs = n_seqs};
        s_encode(b, &ln, ids, out);
    }
    omp_set_num_threads(icv);
    return 0;
}
