/*
 * fuzz_tokenizer.c -- libFuzzer target for the tokenizer.
 *
 * Arbitrary bytes go through zb_tokenizer_encode() (bert-base-cased vocabulary,
 * cased and uncased) and zb_tokenizer_split_words().  Checked invariants: the
 * result is 0 exactly when the bytes are valid UTF-8 (utf8proc is the
 * independent judge), ids are in the vocabulary, every offset lies inside
 * the text on a code point boundary, begin < end, code-point and byte
 * offsets name the same characters, and pieces/tokens come in text order.
 * Inputs starting with "\x01V" are parsed as a vocabulary instead.
 *
 * The vocabulary is read once from $ZB_FIXTURES or tests/fixtures.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "limits.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static zb_tokenizer_t *s_cased, *s_uncased;
static uint32_t *s_cp_at; /* code point index of each byte offset */

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static char *s_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *p = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n))) {
            if (fread(p, 1, (size_t)n, f) != (size_t)n) {
                free(p);
                p = NULL;
            } else {
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return p;
}

static void s_init(void) {
    char path[4096];
    const char *dir = getenv("ZB_FIXTURES");
    snprintf(path, sizeof path, "%s/vocab-bert-base-cased.txt",
             dir && *dir ? dir : "tests/fixtures");
    size_t n = 0;
    char *v = s_read(path, &n);
    if (!v) s_die("cannot read the vocabulary (run from the repo root or set ZB_FIXTURES)");
    zb_tokenizer_options_t cased = {false, false}, uncased = {true, true};
    if (zb_tokenizer_new(v, n, &cased, &s_cased, NULL) ||
        zb_tokenizer_new(v, n, &uncased, &s_uncased, NULL))
        s_die("zb_tokenizer_new on the real vocabulary");
    free(v);
    s_cp_at = malloc(sizeof *s_cp_at * ((size_t)ZB_TEXT_BYTES_MAX + 1));
    if (!s_cp_at) s_die("out of memory");
}

/* Independent validity check and code point index of every boundary. */
static int s_valid(const uint8_t *d, size_t n) {
    size_t i = 0;
    uint32_t cp = 0;
    while (i < n) {
        utf8proc_int32_t u;
        utf8proc_ssize_t k = utf8proc_iterate(d + i, (utf8proc_ssize_t)(n - i), &u);
        if (k <= 0) return 0;
        for (utf8proc_ssize_t j = 0; j < k; j++) s_cp_at[i + (size_t)j] = UINT32_MAX;
        s_cp_at[i] = cp++;
        i += (size_t)k;
    }
    s_cp_at[n] = cp;
    return 1;
}

static void s_check_span(uint32_t b, uint32_t e, uint32_t bb, uint32_t be, size_t n) {
    if (b >= e || bb >= be) s_die("empty or reversed span");
    if (be > n) s_die("byte offset past the text");
    if (s_cp_at[bb] == UINT32_MAX || s_cp_at[be] == UINT32_MAX)
        s_die("byte offset inside a code point");
    if (s_cp_at[bb] != b || s_cp_at[be] != e) s_die("code point and byte offsets disagree");
}

static void s_check_encode(const zb_tokenizer_t *t, const uint8_t *d, size_t n, int valid,
                           int may_share, zb_tokenizer_pieces_t *p) {
    int rc = zb_tokenizer_encode(t, (const char *)d, n, p);
    if (n > ZB_TEXT_BYTES_MAX) {
        if (rc != ZB_ELIMIT) s_die("oversized text accepted");
        return;
    }
    if (!valid) {
        if (rc != ZB_EUTF8 || p->n) s_die("invalid UTF-8 not rejected");
        return;
    }
    if (rc != 0) s_die("valid text rejected");
    size_t vocab = zb_tokenizer_vocab_size(t);
    for (size_t i = 0; i < p->n; i++) {
        const zb_tokenizer_piece_t *x = &p->v[i];
        if (x->id < 0 || (size_t)x->id >= vocab) s_die("id out of the vocabulary");
        s_check_span(x->begin, x->end, x->byte_begin, x->byte_end, n);
        if (i == 0) continue;
        const zb_tokenizer_piece_t *y = &p->v[i - 1];
        /* Uncased normalization can turn one code point into several
         * pieces (Hangul jamo), which then share its span. */
        if (may_share ? (x->begin < y->begin || x->end < y->end) : x->begin < y->end)
            s_die("pieces out of order");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!s_cased) s_init();
    if (size >= 2 && data[0] == 1 && data[1] == 'V') {
        zb_tokenizer_t *t = NULL;
        zb_diag_t d;
        zb_tokenizer_options_t opt = {size > 2 && (data[2] & 1), size > 2 && (data[2] & 2)};
        int rc = zb_tokenizer_new((const char *)data + 2, size - 2, &opt, &t, &d);
        if (rc == 0) {
            zb_tokenizer_pieces_t p = {0};
            static const char text[] = "Hello [UNK] wor\xc3\xa9ld, \xe4\xb8\xad x";
            if (!s_valid((const uint8_t *)text, sizeof text - 1)) s_die("test text");
            s_check_encode(t, (const uint8_t *)text, sizeof text - 1, 1, 1, &p);
            zb_tokenizer_pieces_free(&p);
            zb_tokenizer_destroy(&t);
        } else if (t || !d.msg[0]) {
            s_die("failed zb_tokenizer_new left an object or said nothing");
        }
        return 0;
    }
    int valid = size <= ZB_TEXT_BYTES_MAX && s_valid(data, size);
    zb_tokenizer_pieces_t p = {0};
    s_check_encode(s_cased, data, size, valid, 0, &p);
    s_check_encode(s_uncased, data, size, valid, 1, &p);
    zb_tokenizer_pieces_free(&p);

    zb_tokenizer_words_t w = {0};
    int rc = zb_tokenizer_split_words((const char *)data, size, &w);
    if (size > ZB_TEXT_BYTES_MAX) {
        if (rc != ZB_ELIMIT) s_die("split: oversized text accepted");
    } else if (!valid) {
        if (rc != ZB_EUTF8 || w.n) s_die("split: invalid UTF-8 not rejected");
    } else {
        if (rc != 0) s_die("split: valid text rejected");
        for (size_t i = 0; i < w.n; i++) {
            const zb_tokenizer_word_t *x = &w.v[i];
            s_check_span(x->begin, x->end, x->byte_begin, x->byte_end, size);
            if (i && x->begin < w.v[i - 1].end) s_die("split: tokens out of order");
        }
    }
    zb_tokenizer_words_free(&w);
    return 0;
}
