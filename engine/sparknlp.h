/*
 * sparknlp.h -- Spark NLP 2.6.4-2.7.5's BertEmbeddings pipeline, reproduced:
 *   DocumentAssembler -> SentenceDetector -> Tokenizer -> BertEmbeddings
 * with their default parameters (the Python wrapper's maxLength 99999 for
 * sentences and tokens; caseSensitive as the model says).
 *
 * This is a port of that pipeline's rules, quirks included, not a good
 * segmenter or tokenizer (engine/sentences.h and engine/tokenizer.h are
 * those).  What it reproduces (engine/sparknlp.c says why for each):
 *   - the sentence detector: a rewrite of the text by eleven fixed steps of
 *     regular-expression rules that insert private marker characters
 *     (lists, numbers, abbreviations, punctuation, ellipses, quotes), a split
 *     at every unprotected break marker, then Java trim() and indexOf() to
 *     find each sentence back in the text; a newline is never a boundary by
 *     itself, `;` always is, "(word)" acts as a list marker;
 *   - the tokenizer: candidates are runs of non-ASCII-whitespace; the whole
 *     leading and trailing runs of . , ; : ! ? * - ( ) " ' are one token each
 *     ("(hello)," gives "(" "hello" "),");
 *   - the feed: each token is re-split by Spark's own BERT basic tokenizer
 *     (Java whitespace, 58 punctuation code points, NFD with U+0300-U+036F
 *     removed even for cased models) and only its FIRST sub-token is
 *     WordPiece'd and fed ("don't" feeds "don"); a word of more than 200
 *     UTF-16 units is one [UNK]; a sentence keeps its first 128 pieces;
 *   - the rows: the sequence is [CLS] + first min(n, 126) pieces + [SEP];
 *     piece k takes row k, so with n >= 127 piece 127 takes the [SEP] row
 *     and later pieces nothing; each piece gives a vector to the first token
 *     of its sentence that begins exactly where the piece begins (so a token
 *     whose first unit is dropped by the basic tokenizer gets none, and a
 *     piece shifted by NFD can land on the next token: two vectors for it).
 *
 * Offsets: Spark works on Java strings, so its offsets are UTF-16 code
 * units with the end inclusive; every span here carries those and the same
 * span as code points and bytes, [begin, end).
 *
 * Refusals (per text, ZB_EUNSUPPORTED with a message): a sentence the
 * detector cannot find back in the text (Spark would give it begin -1:
 * text holding the detector's own marker characters, U+F050-U+F057 or
 * U+2554/255E/255F/2564/2565/2566, or the backslash quirk of its quote
 * rule), and a sentence without tokens (Spark's pipeline throws there).
 *
 * Thread-safety: no shared state; a zb_sparknlp_doc_t belongs to one thread.
 * The tokenizer passed in is only read.
 */
#ifndef ZB_SPARKNLP_H
#define ZB_SPARKNLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "tokenizer.h"

/* Spark NLP's limits, as its defaults set them. */
#define ZB_SPARKNLP_PIECES_MAX     128   /* BertEmbeddings maxSentenceLength */
#define ZB_SPARKNLP_WORD_UNITS_MAX 200   /* WordpieceEncoder maxInputCharsPerWord */
#define ZB_SPARKNLP_LENGTH_MAX     99999 /* sentence and token maxLength (UTF-16) */

/* A span of the text in the three units. */
typedef struct zb_sparknlp_span {
    int32_t begin16, end16;        /* UTF-16 units, end INCLUSIVE (Spark's) */
    uint32_t begin, end;           /* code points, [begin, end) */
    uint32_t byte_begin, byte_end; /* bytes, [begin, end) */
} zb_sparknlp_span_t;

/* One token of Spark's Tokenizer. */
typedef struct zb_sparknlp_token {
    zb_sparknlp_span_t span;
    uint32_t sentence; /* index of its sentence */
} zb_sparknlp_token_t;

/* One word_embeddings annotation: a token and the model row it gets. */
typedef struct zb_sparknlp_vector {
    uint32_t token;   /* index into doc->tokens */
    int32_t piece_id; /* vocabulary id of the piece fed at that row */
    uint32_t row;     /* row of its sentence's sequence, 1..127 */
    bool word_start;  /* the piece is not a "##" continuation */
    bool row_is_sep;  /* the row is the sequence's [SEP] (the cap quirk) */
} zb_sparknlp_vector_t;

/* The analysis of one text.  Zero-initialise, reuse across texts, release
 * with zb_sparknlp_doc_free(). */
typedef struct zb_sparknlp_doc {
    zb_sparknlp_span_t *sentences; /* in text order, numbered 0.. */
    size_t n_sentences;
    zb_sparknlp_token_t *tokens; /* in text order */
    size_t n_tokens;
    int32_t *ids;                  /* every sentence's sequence, framed [CLS]..[SEP] */
    uint32_t *seq_off;             /* sentence k's sequence is ids[seq_off[k]..seq_off[k+1]) */
    uint32_t *piece_token;         /* per id: the token that fed it (UINT32_MAX for CLS/SEP) */
    zb_sparknlp_vector_t *vectors; /* annotations, sentence by sentence, piece order */
    size_t n_vectors;
    char error[160];                     /* why the text was refused */
    struct zb_sparknlp_scratch *scratch; /* working memory, reused */
    size_t caps[6];                      /* capacities of the arrays above */
} zb_sparknlp_doc_t;

void zb_sparknlp_doc_free(zb_sparknlp_doc_t *doc);

/*
 * Runs Spark's SentenceDetector on text[0..len): fills doc->sentences only.
 * Returns 0; ZB_EUTF8 (invalid UTF-8), ZB_ELIMIT (len > ZB_TEXT_BYTES_MAX),
 * ZB_EUNSUPPORTED (a sentence Spark would misplace; doc->error says why),
 * ZB_EINVAL or ZB_ENOMEM.  The doc is empty after an error.
 */
int zb_sparknlp_sentences(const char *text, size_t len, zb_sparknlp_doc_t *doc);

/*
 * The whole pipeline on text[0..len): sentences, tokens, the ids each
 * sentence feeds (vocabulary of t; its [CLS], [SEP] and [UNK] must exist)
 * and the annotations.  case_sensitive false lower-cases tokens before the
 * basic tokenizer, as Spark does for uncased models (simple per-character
 * mapping; Java's final-sigma rule is not reproduced).  Returns as
 * zb_sparknlp_sentences.
 */
int zb_sparknlp_analyze(const zb_tokenizer_t *t, bool case_sensitive, const char *text, size_t len,
                        zb_sparknlp_doc_t *doc);

/* True when code point c is one of the 58 characters beyond ASCII that
 * Spark's basic tokenizer treats as punctuation (its Unicode name contains
 * "PUNCTUATION"). */
bool zb_sparknlp_is_punct(int32_t c);

#endif
