/*
 * embed.h -- texts in, vectors out: the engine's front door.
 *
 * An embedder ties a model, its tokenizer and an encoder context together
 * and turns a batch of UTF-8 texts into one result per text, at the level a
 * request asks for:
 *   wordpiece  every row of the last layer, [CLS] and [SEP] included, with
 *              ids and offsets;
 *   token      one vector per token (whitespace split, leading/trailing
 *              punctuation peeled off, as Spark NLP's Tokenizer does): the
 *              row of the token's first wordpiece;
 *   sentence   one pooled vector: [CLS] row, or the mean of the text's
 *              wordpieces without [CLS]/[SEP] (zeros for a text with none).
 * Optional L2 normalisation applies to every returned vector.
 *
 * Texts longer than the model's positions are truncated (first P-2 pieces,
 * result flagged) or, with windows, covered by overlapping windows: each
 * wordpiece takes its row from the window where it sits farthest from an
 * edge, so it always has context on both sides.
 *
 * Scheduling: the sequences of one call are sorted by length and packed into
 * encoder batches under a token budget, without padding.  Results come back
 * in input order whatever the batching.  A row does not depend on its batch
 * neighbours mathematically; numerically, GEMM blocking may differ with the
 * batch's row count, so rows agree with a one-text run to float rounding
 * (~1e-6), not always bit for bit.
 *
 * Thread-safety: one embedder serves one caller thread at a time; OpenMP
 * threads run inside it.  The model it borrows may be shared.
 */
#ifndef ZB_EMBED_H
#define ZB_EMBED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "model.h"
#include "tokenizer.h"

typedef enum zb_level {
    ZB_LEVEL_TOKEN = 0, /* default, Spark NLP BertEmbeddings semantics */
    ZB_LEVEL_WORDPIECE,
    ZB_LEVEL_SENTENCE,
} zb_level_t;

typedef enum zb_pooling {
    ZB_POOL_CLS = 0,
    ZB_POOL_MEAN,
} zb_pooling_t;

typedef struct zb_embed_options {
    zb_level_t level;
    zb_pooling_t pooling; /* sentence level only */
    bool normalize;       /* L2-normalise every returned vector */
    bool windows;         /* long texts: windows instead of truncation */
    bool tokenize_only;   /* pieces (and words) only, no forward pass */
} zb_embed_options_t;

typedef struct zb_embedder_config {
    int threads;          /* OpenMP threads; <= 0: the OpenMP default */
    int batch_tokens_max; /* encoder batch budget in tokens; <= 0: default */
} zb_embedder_config_t;

/* The result for one text; owned by the caller, reusable across calls,
 * zero-initialise and release with zb_result_free(). */
typedef struct zb_result {
    int status;          /* 0, or ZB_EUTF8 / ZB_ELIMIT for this text alone */
    bool truncated;      /* pieces were dropped (truncate mode) */
    int n_windows;       /* sequences the text was run as (1 unless windows) */
    uint32_t n_pieces_total; /* wordpieces of the text before truncation */
    zb_pieces_t pieces;  /* wordpieces incl. [CLS] first and [SEP] last
                          * (offsets [0,0]); after truncation */
    zb_words_t words;    /* token level: the tokens that have a vector */
    int dim;             /* vector width (hidden size) */
    size_t n_vectors;    /* rows in vectors */
    float *vectors;      /* [n_vectors][dim] */
    size_t vectors_cap;  /* floats allocated */
} zb_result_t;

void zb_result_free(zb_result_t *r);

typedef struct zb_embedder zb_embedder_t;

/* Creates an embedder over m (borrowed, must outlive it). cfg may be NULL. */
int zb_embedder_new(const zb_model_t *m, const zb_embedder_config_t *cfg,
                    zb_embedder_t **out, zb_diag_t *d);

void zb_embedder_destroy(zb_embedder_t **e);

/* The tokenizer the embedder uses (borrowed). */
const zb_tok_t *zb_embedder_tokenizer(const zb_embedder_t *e);

/* Work done since creation, for throughput figures. */
typedef struct zb_embed_stats {
    uint64_t texts;     /* texts passed to zb_embedder_run */
    uint64_t sequences; /* encoder sequences (windows count one each) */
    uint64_t tokens;    /* tokens through the encoder, [CLS]/[SEP] included,
                         * no padding (there is none) */
    uint64_t batches;   /* encoder calls */
} zb_embed_stats_t;

void zb_embedder_stats(const zb_embedder_t *e, zb_embed_stats_t *out);

/* Hidden width of the model. */
int zb_embedder_dim(const zb_embedder_t *e);

/*
 * Embeds n texts (texts[i] of lens[i] bytes) into results[0..n).  A text
 * that cannot be tokenized (invalid UTF-8, too long) gets its own status
 * and no vectors; the others are unaffected.  Returns 0, or a ZB_E* code
 * for a failure of the whole call (out of memory, encoder error).
 */
int zb_embedder_run(zb_embedder_t *e, const char *const *texts, const size_t *lens, size_t n,
                    const zb_embed_options_t *opt, zb_result_t *results);

#endif
