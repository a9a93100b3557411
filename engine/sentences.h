/*
 * sentences.h -- rule-based sentence segmentation (English first, with the
 * terminators of other scripts), giving spans into the original text.
 *
 * What ends a sentence (engine/sentences.c states every rule and its why):
 *   - `.` `!` `?` and their clusters ("?!", "....") followed by whitespace and
 *     a word that can open a sentence, with trailing closing quotes and
 *     brackets kept in the sentence ("great." She);
 *   - not: known abbreviations (Mr. Dr. e.g. Co. Jan. p. No. ...), initials
 *     (Jonas E. Smith), numbers before lower-case words, multi-period
 *     abbreviations before words that do not start sentences (U.S. Army),
 *     three-dot ellipses (". . ." "..." "…"), `!`/`?` before a lower-case
 *     word (Yahoo! in ...);
 *   - after an ordinary word a period ends the sentence even before a
 *     lower-case word, as the pragmatic segmenter and Spark NLP do;
 *   - a multi-period abbreviation ends a sentence only before a word that
 *     commonly opens one (I, The, How, Mr., ...) and after at least four
 *     words ("At 5 a.m. Mr. Smith went" is one sentence);
 *   - a four-dot ellipsis before a capital ("word. . . . The" ends at the
 *     first period and the spaced three dots open the next sentence);
 *   - the start of a list item: a bullet, or a marker ("2." "2)" "2.)" "(2)"
 *     "b." "ii.") next in sequence after the marker that opened the
 *     sentence or followed a colon ("Steps: 1) mix 2) bake");
 *   - a missing space when the next word is capitalised ("world.Today");
 *   - 。！？｡ anywhere (no space needed), and the danda, Arabic, Armenian,
 *     Ethiopic, Myanmar and Khmer terminators followed by whitespace;
 *   - a blank line (or form feed, U+2029) always; a single line break when
 *     its paragraph has no terminator at all (a list of lines), when the
 *     next line starts a list item, or when the line before is a short
 *     title-like heading and the next starts with a capital; otherwise a
 *     single line break is a soft wrap and does not end the sentence;
 *   - inside quotations and brackets sentences end as anywhere else (the
 *     pragmatic segmenter keeps a quoted passage whole; BERT sequences are
 *     better short), but a terminator followed by a closer and a lower-case
 *     word does not end one ("'This is great.' she said");
 *   - `;` only when zb_sentences_options_t.semicolon_ends is set (Spark NLP's
 *     detector ends sentences there; the Golden Rules and zbert's default
 *     do not).
 *
 * Spans are [begin, end) in code points and in bytes, end exclusive, in text
 * order, disjoint, trimmed of whitespace (Unicode White_Space), and together
 * they cover every non-whitespace character of the text exactly once.
 *
 * Cost: linear in the text; nothing is allocated except growth of the
 * caller's output array.  No regular expressions.
 *
 * Thread-safety: no shared state; call from any number of threads, each with
 * its own output array.
 */
#ifndef ZB_SENTENCES_H
#define ZB_SENTENCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* One sentence. */
typedef struct zb_sentences_span {
    uint32_t begin, end;           /* [begin, end) in code points of the text */
    uint32_t byte_begin, byte_end; /* [begin, end) in bytes of the text */
} zb_sentences_span_t;

/* A growable array of sentences, owned by the caller; reuse it across texts
 * to avoid allocation.  Zero-initialise, release with zb_sentences_spans_free(). */
typedef struct zb_sentences_spans {
    zb_sentences_span_t *v;
    size_t n, cap;
} zb_sentences_spans_t;

/* Frees s->v and zeroes s (s may be NULL). */
void zb_sentences_spans_free(zb_sentences_spans_t *s);

typedef struct zb_sentences_options {
    bool semicolon_ends; /* `;` at the end of a word ends a sentence (Spark NLP) */
} zb_sentences_options_t;

/*
 * Splits text[0..len) into sentences, written to out after clearing it
 * (out->n = 0 first).  Empty or whitespace-only text gives no sentence.
 * Returns 0, ZB_EUTF8 when the text is not valid UTF-8, ZB_ELIMIT when len
 * exceeds ZB_TEXT_BYTES_MAX, ZB_EINVAL when out is NULL or text is NULL with
 * len > 0, or ZB_ENOMEM; out is empty after any error.
 */
int zb_sentences_split(const char *text, size_t len, zb_sentences_spans_t *out);

/* The same with options (opt NULL = defaults, all false). */
int zb_sentences_split_opts(const char *text, size_t len, const zb_sentences_options_t *opt,
                            zb_sentences_spans_t *out);

/* True when code point c is whitespace to the segmenter (Unicode White_Space):
 * the characters spans are trimmed of and need not cover. */
bool zb_sentences_is_space(int32_t c);

#endif
