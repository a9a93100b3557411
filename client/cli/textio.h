/*
 * textio.h -- the text formats of the command-line tools: reading input
 * texts and writing embeddings.
 *
 * zbert-embed (in process) and `zbert embed` (through the service) read the
 * same inputs and must write byte-identical outputs for the same vectors, so
 * both go through this module.  It knows nothing of the engine or the wire:
 * a result is described by a zb_textio_text_t view, the request by its
 * zb_options_t and token metadata by zb_token_meta_t rows (options.h).
 *
 * Input: one text per line ("\n", a trailing "\r" dropped), or one JSON
 * object {"text": "..."} per line.  A line that cannot be read (too long,
 * bad JSON, no "text") becomes an item with an error; indices stay aligned.
 * JSONL: the line must be exactly one object (whitespace around it allowed);
 * only its top-level member named "text" counts (members nested in other
 * values are skipped), and it must be a string.  Its value is decoded with
 * its length, so an escaped \u0000 is a NUL byte of the text; surrogate
 * pairs become one 4-byte UTF-8 sequence.  Refused lines: a lone surrogate
 * (it has no UTF-8 form), and "text" present more than once (however its
 * name is escaped), since which value was meant would be a guess.
 *
 * Output formats:
 *   jsonl  one object per text, in input order, floats as %.9g (they
 *          round-trip float32):
 *            token      {"index":i,"tokens":[{"text","begin","end","vector"}]}
 *                       and, when the text carries token metadata, each
 *                       token {"text","begin","end","sentence","pieceId",
 *                       "isWordStart","isOOV","vector"}
 *            wordpiece  {"index":i,"ids":[..],"offsets":[[b,e],..],"vectors":[[..],..]}
 *            sentence   {"index":i,"vector":[..]}
 *            tokenize-only: the wordpiece object without "vectors"
 *            a truncated text adds "truncated":true; a failed one is
 *            {"index":i,"error":"..."}
 *   npy    an N x dim float32 .npy of sentence vectors (NaN rows for
 *          failed texts); the header is patched at the end on a seekable
 *          stream, rows are buffered in memory on a pipe;
 *   table  for people: spans and the first values of each vector;
 *   sparknlp-json  token level only: one line per text,
 *          {"index":i,"annotations":[A,...]} where each A is a Spark NLP
 *          word_embeddings annotation {"annotatorType":"word_embeddings",
 *          "begin":b,"end":e,"result":"token","metadata":{"sentence":"0",
 *          "token":"token","pieceId":"146","isWordStart":"true",
 *          "isOOV":"false"},"embeddings":[...]}: begin and end in UTF-16
 *          units with the end INCLUSIVE (Java string indices), metadata
 *          values strings; pieceId "-1" when the text carries no metadata;
 *          a failed text is {"index":i,"error":"..."}.
 *
 * Sentence spans (zb_textio_write_sentence_spans): {"index":i,
 * "sentence_spans":[[begin,end],...]} in code points, end exclusive.
 *
 * Thread-safety: none needed; each object belongs to one thread.
 */
#ifndef ZB_TEXTIO_H
#define ZB_TEXTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "options.h"

/* --- input -------------------------------------------------------------- */

typedef enum zb_textio_input { ZB_TEXTIO_IN_LINES = 0, ZB_TEXTIO_IN_JSONL } zb_textio_input_t;

/* One input text. */
typedef struct zb_textio_item {
    char *text;      /* malloc'd, NUL-terminated (may hold NULs before
                      * len); NULL when the line was rejected */
    size_t len;      /* bytes */
    char error[160]; /* why the line was rejected */
} zb_textio_item_t;

typedef struct zb_textio_reader zb_textio_reader_t;

/* Reads from f (borrowed) in the given format.  NULL when out of memory. */
zb_textio_reader_t *zb_textio_reader_new(FILE *f, zb_textio_input_t format);
void zb_textio_reader_destroy(zb_textio_reader_t **r);

/* Reads the next input into *it (its previous text is freed first).
 * Returns 1 for an item (it->text NULL when the line was rejected), 0 at end
 * of input, -1 on a read error of the stream. */
int zb_textio_read(zb_textio_reader_t *r, zb_textio_item_t *it);

/* Releases it->text. */
void zb_textio_item_clear(zb_textio_item_t *it);

/* --- output ------------------------------------------------------------- */

typedef enum zb_textio_format {
    ZB_TEXTIO_OUT_JSONL = 0,
    ZB_TEXTIO_OUT_NPY,
    ZB_TEXTIO_OUT_TABLE,
    ZB_TEXTIO_OUT_SPARKNLP_JSON,
} zb_textio_format_t;

/* What one text came to, as views (nothing is copied or kept). */
typedef struct zb_textio_text {
    size_t index;     /* 0-based input index */
    const char *text; /* the input text (token texts are slices) */
    size_t text_len;
    const char *error;            /* non-NULL: the text failed, this says why */
    bool truncated;               /* pieces past the model's positions dropped */
    size_t n_rows;                /* vectors, or pieces when tokenize-only */
    int dim;                      /* floats per vector */
    const float *vectors;         /* [n_rows][dim]; NULL when tokenize-only */
    const uint32_t *offsets;      /* [n_rows][2] code points (token, wordpiece) */
    const uint32_t *byte_offsets; /* [n_rows][2] bytes (token, wordpiece) */
    const int32_t *ids;           /* [n_rows] (wordpiece level) */
    const zb_token_meta_t *meta;  /* [n_rows] token level, or NULL (not written) */
} zb_textio_text_t;

typedef struct zb_textio_writer zb_textio_writer_t;

/*
 * A writer of format to f (borrowed).  o (read here, not kept) says what the
 * rows are: its level and tokenize_only; its pooling only labels the table.
 * npy needs dim (> 0) and sentence level.  NULL when out of memory or the
 * combination is invalid.
 */
zb_textio_writer_t *zb_textio_writer_new(FILE *f, zb_textio_format_t format, const zb_options_t *o,
                                         int dim);

/* Writes one text's result; texts must come in index order.  Returns 0 or
 * -1 when out of memory. */
int zb_textio_write(zb_textio_writer_t *w, const zb_textio_text_t *t);

/* Completes the output (the npy header and buffered rows) and flushes.
 * Returns 0 or -1 on a write error (errno says which). */
int zb_textio_writer_finish(zb_textio_writer_t *w);

void zb_textio_writer_destroy(zb_textio_writer_t **w);

/* Fills meta[i].begin16 and meta[i].end16 for i < n: the UTF-16 units of
 * text[0..len) before byte_offsets[2i], and before byte_offsets[2i+1]
 * minus one (end INCLUSIVE, as Spark NLP writes it).  For rows whose
 * metadata came without its UTF-16 span (the service sends the byte spans
 * only: PROTOCOL.md 4).  Spans may come in any order; offsets past len
 * count to len.  The text is taken as valid UTF-8 (a text with rows is). */
void zb_textio_utf16_spans(const char *text, size_t len, const uint32_t *byte_offsets, size_t n,
                           zb_token_meta_t *meta);

/* Writes {"index":index,"sentence_spans":[[b,e],...]} (spans[2k], spans[2k+1]
 * code points, end exclusive) or, when error is not NULL,
 * {"index":index,"error":error}, and a newline. */
void zb_textio_write_sentence_spans(FILE *f, size_t index, const uint32_t *spans, size_t n,
                                    const char *error);

#endif
