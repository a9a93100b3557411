/*
 * bert.h -- the BERT encoder forward pass (fp32), padding-free.
 *
 * A batch is a list of sequences of token ids (each already framed with
 * [CLS] ... [SEP] by the caller), packed back to back: the linear layers
 * (QKV, attention output, FFN) see one [n_tokens x H] matrix and run on
 * zb_gemm over the model's packed weights; only attention is computed per
 * sequence (and per head).  A sequence's output rows are bit-identical
 * whatever else is in the batch, its place in it and the thread count.
 * Positions are 0..T-1 within each sequence; token type is 0.
 *
 * Math is Hugging Face BertModel in eval mode: embeddings + LayerNorm, then
 * per layer softmax(QK^T / sqrt(head_dim)) V, output dense, residual +
 * LayerNorm, dense + exact erf GELU, dense, residual + LayerNorm.  The output
 * is last_hidden_state.
 *
 * Memory: zb_bert_new() sizes one scratch arena from n_tokens_max and
 * seq_len_max; zb_bert_forward() allocates nothing.
 *
 * Threads (num_threads set at creation): a batch of several sequences is
 * split into one group of whole sequences per thread, of about equal cost,
 * and each thread runs the whole encoder on its group alone (a "lane"); a batch too small or too
 * uneven for that (one text) runs every operation on all the threads instead.  Either way the bits
 * are the same. Attention's OpenBLAS calls (the OpenMP build) run single-threaded inside our
 * regions.  One zb_bert_t serves one caller thread at a time; the model it borrows may be shared.
 */
#ifndef ZB_BERT_H
#define ZB_BERT_H

#include <stdint.h>

#include "error.h"
#include "model.h"

typedef struct zb_bert zb_bert_t;

/*
 * Creates an encoder context over model m (borrowed: it must outlive the
 * context).  n_tokens_max bounds the total tokens of one batch; seq_len_max
 * (<= the model's max_positions) bounds one sequence; threads <= 0 means
 * the OpenMP default.  *out is the caller's, release with zb_bert_destroy().
 */
int zb_bert_new(const zb_model_t *m, int n_tokens_max, int seq_len_max, int threads,
                zb_bert_t **out, zb_diag_t *d);

void zb_bert_destroy(zb_bert_t **b);

/*
 * Runs the encoder on n_seqs sequences packed in ids: sequence s has
 * seq_len[s] tokens (1 <= seq_len[s] <= seq_len_max) and the total is at
 * most n_tokens_max.  Writes last_hidden_state rows, packed the same way,
 * to out ([total][H] floats).  Every id must be < vocab_size (ZB_EINVAL
 * otherwise, nothing computed).
 */
int zb_bert_forward(zb_bert_t *b, const int32_t *ids, const int *seq_len, int n_seqs, float *out);

/* The FFN activation: the exact erf GELU (Hugging Face, the default) or
 * the tanh approximation of google-research/bert's TensorFlow graph, which
 * Spark NLP's BertEmbeddings ran (they differ by up to ~5e-4 per
 * activation). */
typedef enum zb_bert_gelu {
    ZB_BERT_GELU_ERF = 0,
    ZB_BERT_GELU_TANH,
} zb_bert_gelu_t;

/* Sets the activation used by the following zb_bert_forward() calls. */
void zb_bert_set_gelu(zb_bert_t *b, zb_bert_gelu_t g);

/* Limits the context was created with, and the hidden width. */
int zb_bert_n_tokens_max(const zb_bert_t *b);
int zb_bert_seq_len_max(const zb_bert_t *b);
int zb_bert_hidden(const zb_bert_t *b);

/* How the last zb_bert_forward() ran: the number of lanes (threads each on
 * its own sequences), or 1 when all threads shared every operation. */
int zb_bert_last_lanes(const zb_bert_t *b);

/* Called with the input of every linear layer of the encoder before it
 * runs: layer l, which (0 QKV, 1 attention output, 2 FFN in, 3 FFN out),
 * x [rows][cols] with row stride ldx.  For calibration (calibrate.h);
 * NULL (the default) calls nothing.  Runs on the calling thread. */
typedef void (*zb_bert_observer_fn)(void *ctx, int layer, int which, const float *x, size_t ldx,
                                    int rows, int cols);
void zb_bert_set_observer(zb_bert_t *b, zb_bert_observer_fn fn, void *ctx);

#endif
