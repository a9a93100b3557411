/*
 * tokenizer.h -- Hugging Face BertTokenizer, exactly: ids and offsets.
 *
 * Pipeline (the fixtures' README states the semantics this must match id for
 * id and offset for offset):
 *   1. special tokens written literally in the text ([CLS], [SEP], [MASK],
 *      [PAD], [UNK]) are split out first and map to their own ids;
 *   2. clean: drop U+0000, U+FFFD, Cc/Cf/Co/Cs (except \t \n \r); any
 *      whitespace becomes a separator; a dropped character does not split;
 *   3. CJK ideographs become words of their own;
 *   4. optional lower-casing and accent stripping (NFD, drop Mn) for uncased
 *      models;
 *   5. split on whitespace; each punctuation character (ASCII 33-47, 58-64,
 *      91-96, 123-126, Unicode P*) is a word of its own;
 *   6. WordPiece: greedy longest match, "##" continuations, a word longer
 *      than 100 code points or with an unmatchable position is one [UNK].
 * Unicode properties come from utf8proc.
 *
 * Offsets are [begin, end) into the original text, both in code points
 * (Hugging Face / Python convention) and in UTF-8 bytes.  A piece spans from
 * its first character to its last + 1, including removed characters between
 * them; an [UNK] word covers the whole word.
 *
 * Thread-safety: a zb_tokenizer_t is immutable after zb_tokenizer_new(); encode from any
 * number of threads, each with its own output buffer.
 */
#ifndef ZB_TOKENIZER_H
#define ZB_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct zb_tokenizer zb_tokenizer_t;

typedef struct zb_tokenizer_options {
    bool lowercase;     /* lower-case before WordPiece (uncased models) */
    bool strip_accents; /* NFD and drop combining marks (Mn) */
} zb_tokenizer_options_t;

/* One wordpiece. */
typedef struct zb_tokenizer_piece {
    int32_t id;                    /* vocabulary id */
    uint32_t begin, end;           /* [begin, end) in code points of the text */
    uint32_t byte_begin, byte_end; /* [begin, end) in bytes of the text */
} zb_tokenizer_piece_t;

/* A growable array of pieces, owned by the caller; reuse it across texts
 * to avoid allocation. Zero-initialise, release with zb_tokenizer_pieces_free(). */
typedef struct zb_tokenizer_pieces {
    zb_tokenizer_piece_t *v;
    size_t n, cap;
} zb_tokenizer_pieces_t;

void zb_tokenizer_pieces_free(zb_tokenizer_pieces_t *p);

/*
 * Builds a tokenizer from vocab.txt bytes (one token per line, id = line
 * number, "\n" or "\r\n" endings; the last line may lack its newline).
 * The vocabulary must hold [UNK]; [CLS], [SEP], [PAD], [MASK] are looked up
 * when present.  A duplicated token takes its last id, as Hugging Face's
 * vocab.txt readers do (they fill a map line by line).
 * Returns 0 and *out (the caller's; zb_tokenizer_destroy() it) or a ZB_E* code
 * with d saying why.
 */
int zb_tokenizer_new(const char *vocab, size_t vocab_len, const zb_tokenizer_options_t *opt,
                     zb_tokenizer_t **out, zb_diag_t *d);

void zb_tokenizer_destroy(zb_tokenizer_t **t);

/* Ids of the special tokens (-1 when the vocabulary lacks one). */
int32_t zb_tokenizer_cls_id(const zb_tokenizer_t *t);
int32_t zb_tokenizer_sep_id(const zb_tokenizer_t *t);
int32_t zb_tokenizer_unk_id(const zb_tokenizer_t *t);
int32_t zb_tokenizer_pad_id(const zb_tokenizer_t *t);

/* Vocabulary size and the token text of an id (NULL when out of range;
 * not NUL-terminated: *len gets its length). */
size_t zb_tokenizer_vocab_size(const zb_tokenizer_t *t);
const char *zb_tokenizer_token(const zb_tokenizer_t *t, int32_t id, size_t *len);

/* Id of the vocabulary entry piece[0..n) (UTF-8 bytes), looked up as a
 * continuation ("##" + piece) when continuation is set; -1 when absent.
 * For other WordPiece front ends (Spark NLP compatibility): the same table
 * and duplicate rule as zb_tokenizer_encode.  Cost O(n), and O(1) for a piece
 * longer than every entry of its kind. */
int32_t zb_tokenizer_piece_id(const zb_tokenizer_t *t, const char *piece, size_t n,
                              bool continuation);

/*
 * Tokenizes text[0..len) into wordpieces, appended to out after clearing it
 * (out->n = 0 first).  [CLS] and [SEP] are NOT added: the caller frames
 * sequences (truncation and windows decide where).  Returns 0, ZB_EUTF8 when
 * the text is not valid UTF-8 (out is then empty), ZB_ELIMIT when len exceeds
 * ZB_TEXT_BYTES_MAX, or ZB_ENOMEM.
 */
int zb_tokenizer_encode(const zb_tokenizer_t *t, const char *text, size_t len,
                        zb_tokenizer_pieces_t *out);

/* A token of the Spark NLP-style word split (see zb_tokenizer_split_words). */
typedef struct zb_tokenizer_word {
    uint32_t begin, end;           /* [begin, end) code points */
    uint32_t byte_begin, byte_end; /* [begin, end) bytes */
} zb_tokenizer_word_t;

typedef struct zb_tokenizer_words {
    zb_tokenizer_word_t *v;
    size_t n, cap;
} zb_tokenizer_words_t;

void zb_tokenizer_words_free(zb_tokenizer_words_t *w);

/*
 * Splits text into tokens the way Spark NLP's default Tokenizer does: on
 * whitespace (the BERT pre-tokenizer's separators: White_Space less the
 * controls its cleaner removes, such as \v and \f), then leading and trailing punctuation
 * characters are peeled off each chunk one by one as tokens of their own, so "don't" and "e-mail"
 * stay whole, "U.S." gives "U.S" and ".", "(hello)," gives "(", "hello", ")", ",". Characters the
 * cleaner removes (controls, format characters) are not tokens and are trimmed from token edges.
 * The text must be valid UTF-8 (ZB_EUTF8 otherwise) and at most ZB_TEXT_BYTES_MAX bytes
 * (ZB_ELIMIT); ZB_ENOMEM when out cannot grow.  out is cleared first (and left empty on any error).
 */
int zb_tokenizer_split_words(const char *text, size_t len, zb_tokenizer_words_t *out);

#endif
