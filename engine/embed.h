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
 * Sentences (options.sentences): the text is split by the default
 * segmenter (engine/sentences.h) and each sentence is its own sequence (or
 * windows of it); tokens are split per sentence and carry metadata (their
 * sentence, first piece id, UTF-16 span).  A token's vector is its first
 * wordpiece's row or, with ZB_TOKEN_VECTOR_MEAN, the mean of its pieces' rows; a
 * token whose characters all vanish in normalisation (no wordpiece) gets a
 * zero vector flagged oov.
 *
 * Spark NLP compatibility (options.compat = ZB_COMPAT_SPARKNLP, token level):
 * engine/sparknlp.h's pipeline decides sentences, tokens, the ids each
 * sentence feeds and which row each token gets; the encoder runs with the
 * tanh GELU; a token may get no vector or two, as in Spark NLP 2.6.4-2.7.5.
 *
 * Texts longer than the model's positions are truncated (first P-2 pieces,
 * result flagged) or, with windows, covered by overlapping windows: each
 * wordpiece takes its row from the window where it sits farthest from an
 * edge, so it always has context on both sides.
 *
 * Scheduling: the sequences of one call are sorted by length and packed into
 * encoder batches under a token budget, without padding.  Results come back
 * in input order whatever the batching, and a row is bit-identical to a
 * one-text run: the GEMM's summation order does not depend on the batch.
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
#include "options.h"
#include "tokenizer.h"

/* The options of a run are zb_options_t (options.h), the same from the
 * command line and the wire; a token-level vector's metadata beyond its
 * span is a zb_token_meta_t (zb_embed_result_t.meta). */

typedef struct zb_embed_config {
    int threads;          /* OpenMP threads; <= 0: the OpenMP default */
    int batch_tokens_max; /* encoder batch budget in tokens; <= 0: default */
} zb_embed_config_t;

/* The result for one text; owned by the caller, reusable across calls,
 * zero-initialise and release with zb_embed_result_free(). */
typedef struct zb_embed_result {
    int status;                   /* 0, or ZB_EUTF8 / ZB_ELIMIT for this text alone */
    bool truncated;               /* pieces were dropped (truncate mode) */
    int n_windows;                /* sequences the text was run as (1 unless windows) */
    uint32_t n_pieces_total;      /* wordpieces of the text before truncation */
    zb_tokenizer_pieces_t pieces; /* wordpieces incl. [CLS] first and [SEP] last
                                   * (offsets [0,0]); after truncation; with
                                   * sentences or compat, one such frame per
                                   * sentence (see seq_off) */
    zb_tokenizer_words_t words;   /* token level: the tokens that have a vector */
    int dim;                      /* vector width (hidden size) */
    size_t n_vectors;             /* rows in vectors */
    float *vectors;               /* [n_vectors][dim] */
    size_t vectors_cap;           /* floats allocated */
    /* since options.sentences / compat / token_meta: */
    zb_token_meta_t *meta; /* [words.n] when the options ask for it, else NULL */
    size_t meta_cap;
    size_t n_sentences; /* sentences of the text (sequences when not windowed) */
    uint32_t *seq_off;  /* [n_sentences + 1]: sentence k's framed pieces are
                         * pieces.v[seq_off[k] .. seq_off[k+1]) */
    size_t seq_off_cap;
    char detail[160]; /* why status != 0, when more is known than the code */
} zb_embed_result_t;

void zb_embed_result_free(zb_embed_result_t *r);

typedef struct zb_embed zb_embed_t;

/* Creates an embedder over m (borrowed, must outlive it). cfg may be NULL. */
int zb_embed_new(const zb_model_t *m, const zb_embed_config_t *cfg, zb_embed_t **out, zb_diag_t *d);

void zb_embed_destroy(zb_embed_t **e);

/* The tokenizer the embedder uses (borrowed). */
const zb_tokenizer_t *zb_embed_tokenizer(const zb_embed_t *e);

/* Work done since creation, for throughput figures. */
typedef struct zb_embed_stats {
    uint64_t texts;     /* texts passed to zb_embed_run */
    uint64_t sequences; /* encoder sequences (windows count one each) */
    uint64_t tokens;    /* tokens through the encoder, [CLS]/[SEP] included,
                         * no padding (there is none) */
    uint64_t batches;   /* encoder calls */
} zb_embed_stats_t;

void zb_embed_stats(const zb_embed_t *e, zb_embed_stats_t *out);

/* Hidden width of the model. */
int zb_embed_dim(const zb_embed_t *e);

/*
 * Embeds n texts (texts[i] of lens[i] bytes) into results[0..n).  A text
 * that cannot be tokenized (invalid UTF-8, too long) gets its own status
 * and no vectors; the others are unaffected.  Returns 0, or a ZB_E* code
 * for a failure of the whole call (out of memory, encoder error).
 */
int zb_embed_run(zb_embed_t *e, const char *const *texts, const size_t *lens, size_t n,
                 const zb_options_t *opt, zb_embed_result_t *results);

#endif
