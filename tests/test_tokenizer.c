/*
 * test_tokenizer.c -- the WordPiece tokenizer against the reference
 * fixtures (ids, code-point and byte offsets, 100%), hand-checked hard
 * cases, the uncased path, vocabulary parsing and the Spark-style split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fixture.h"
#include "limits.h"
#include "tokenizer.h"

/* --- helpers ----------------------------------------------------------- */

static zb_tokenizer_t *s_load_cased(void) {
    size_t n;
    char *v = fx_read_file(fx_path("vocab-bert-base-cased.txt"), &n);
    assert_non_null(v);
    zb_tokenizer_t *t = NULL;
    zb_diag_t d = {{0}};
    zb_tokenizer_options_t opt = {false, false};
    int rc = zb_tokenizer_new(v, n, &opt, &t, &d);
    if (rc) fprintf(stderr, "zb_tokenizer_new: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    free(v);
    return t;
}

static int32_t s_id(const zb_tokenizer_t *t, const char *tok) {
    size_t n = strlen(tok);
    for (size_t i = 0; i < zb_tokenizer_vocab_size(t); i++) {
        size_t l;
        const char *s = zb_tokenizer_token(t, (int32_t)i, &l);
        if (l == n && memcmp(s, tok, n) == 0) return (int32_t)i;
    }
    return -1;
}

/* Compares one encoding with a fixture case (which has [CLS]/[SEP] at the
 * ends).  Returns 0 when equal; prints the first difference otherwise.  When
 * `truncated_ok`, the fixture may hold only the first T-2 pieces. */
static int s_compare(const fx_case_t *k, const zb_tokenizer_pieces_t *p, int truncated_ok) {
    size_t inner = (size_t)(k->n_ids - 2);
    if (p->n != inner && !(truncated_ok && p->n > inner)) {
        fprintf(stderr, "case %d (%s): %zu pieces, expected %zu\n", k->index, k->name, p->n, inner);
        goto show;
    }
    for (size_t i = 0; i < inner; i++) {
        const zb_tokenizer_piece_t *x = &p->v[i];
        const uint32_t *bo = &k->byte_off[2 * (i + 1)], *co = &k->char_off[2 * (i + 1)];
        if (x->id != k->ids[i + 1] || x->begin != co[0] || x->end != co[1] ||
            x->byte_begin != bo[0] || x->byte_end != bo[1]) {
            fprintf(stderr,
                    "case %d (%s) piece %zu: got %d [%u,%u) b[%u,%u), expected %d "
                    "[%u,%u) b[%u,%u)\n",
                    k->index, k->name, i, x->id, x->begin, x->end, x->byte_begin, x->byte_end,
                    k->ids[i + 1], co[0], co[1], bo[0], bo[1]);
            goto show;
        }
    }
    return 0;
show:
    fprintf(stderr, "  text (%zu bytes):", k->text_len);
    for (size_t i = 0; i < k->text_len && i < 80; i++)
        fprintf(stderr, " %02x", (unsigned char)k->text[i]);
    fprintf(stderr, "\n  got:");
    for (size_t i = 0; i < p->n && i < 40; i++) fprintf(stderr, " %d", p->v[i].id);
    fprintf(stderr, "\n  exp:");
    for (int i = 1; i < k->n_ids - 1 && i < 41; i++) fprintf(stderr, " %d", k->ids[i]);
    fprintf(stderr, "\n");
    return -1;
}

/* --- fixtures ---------------------------------------------------------- */

static void test_fixture_tokenization_2000(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    fx_file_t f;
    assert_int_equal(fx_load(fx_path("tokenization-2000.txt"), &f), 0);
    assert_int_equal(f.n, 2000);
    zb_tokenizer_pieces_t p = {0};
    int bad = 0;
    for (int i = 0; i < f.n; i++) {
        const fx_case_t *k = &f.cases[i];
        int rc = zb_tokenizer_encode(t, k->text, k->text_len, &p);
        assert_int_equal(rc, 0);
        assert_int_equal(k->ids[0], zb_tokenizer_cls_id(t));
        assert_int_equal(k->ids[k->n_ids - 1], zb_tokenizer_sep_id(t));
        if (s_compare(k, &p, 0) != 0 && ++bad > 20) break;
    }
    fprintf(stderr, "tokenization-2000: %d of %d cases differ\n", bad, f.n);
    assert_int_equal(bad, 0);
    zb_tokenizer_pieces_free(&p);
    fx_free(&f);
    zb_tokenizer_destroy(&t);
    assert_null(t);
}

static void test_fixture_embeddings(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    fx_file_t f;
    assert_int_equal(fx_load(fx_path("embeddings-tiny-seed1.txt"), &f), 0);
    assert_int_equal(f.n, 40);
    zb_tokenizer_pieces_t p = {0};
    int bad = 0, truncated = 0;
    for (int i = 0; i < f.n; i++) {
        const fx_case_t *k = &f.cases[i];
        assert_int_equal(zb_tokenizer_encode(t, k->text, k->text_len, &p), 0);
        /* The embeddings fixtures cut at 510 pieces + [CLS] + [SEP]. */
        int trunc = k->n_ids == 512 && p.n > 510;
        truncated += trunc;
        if (s_compare(k, &p, trunc) != 0) bad++;
        /* Each BERT word's row is a wordpiece that starts where the word
         * starts: the offsets agree with the fixture's token table. */
        for (int j = 0; j < k->n_tokens; j++) {
            uint32_t row = k->tokens[3 * j + 2];
            assert_true(row >= 1 && row <= p.n);
            assert_int_equal(p.v[row - 1].byte_begin, k->tokens[3 * j]);
        }
    }
    assert_int_equal(bad, 0);
    assert_int_equal(truncated, 1); /* over_512_wordpieces */
    zb_tokenizer_pieces_free(&p);
    fx_free(&f);
    zb_tokenizer_destroy(&t);
}

/* --- hand-checked hard cases (bert-base-cased vocabulary) ------------- */

typedef struct exp_piece {
    int32_t id;
    uint32_t b, e, bb, be; /* code points, then bytes */
} exp_piece_t;

typedef struct hard_case {
    const char *what;
    const char *text;
    size_t len; /* 0: strlen(text) */
    int n;
    exp_piece_t p[6];
} hard_case_t;

/* Ids come from tests/fixtures/vocab-bert-base-cased.txt (line number - 1):
 * a 170, ##b 1830, b 171, x 193, e 174, 5 126, [ 164, ] 166, Hello 8667,
 * zero 6756, ##wi 10073, ##dt 12518, ##h 1324, ##c 1665, ##d 1181, 中 980,
 * 文 1030, ##\u0301 28310, café 20583, ##€ 28731, mask 7739, MA 9960, ##S 1708,
 * ##K 2428, — 783, na 9468, ##ï 28203, ##ve 2707, [UNK] 100, [CLS] 101,
 * [MASK] 103. */
static const hard_case_t s_hard[] = {
    {"empty", "", 0, 0, {{0}}},
    {"whitespace only", " \t\r\n\xe3\x80\x80\xc2\xa0 ", 0, 0, {{0}}},
    {"removed only", "\x01\x7f\xe2\x80\x8b", 0, 0, {{0}}},
    {"plain word", "Hello", 0, 1, {{8667, 0, 5, 0, 5}}},
    {"zero-width inside a piece is spanned", "Hel\xe2\x80\x8blo", 0, 1, {{8667, 0, 6, 0, 8}}},
    {"removed at the edges is not", "\xe2\x80\x8bHello\xe2\x80\x8b", 0, 1, {{8667, 1, 6, 3, 8}}},
    {"zero-width does not split",
     "zero\xe2\x80\x8bwidth",
     0,
     4,
     {{6756, 0, 4, 0, 4}, {10073, 5, 7, 7, 9}, {12518, 7, 9, 9, 11}, {1324, 9, 10, 11, 12}}},
    {"BEL inside a word",
     "ab\x07"
     "cd",
     0,
     4,
     {{170, 0, 1, 0, 1}, {1830, 1, 2, 1, 2}, {1665, 3, 4, 3, 4}, {1181, 4, 5, 4, 5}}},
    {"VT is a removed control", "a\vb", 0, 2, {{170, 0, 1, 0, 1}, {1830, 2, 3, 2, 3}}},
    {"NEL is a removed control",
     "a\xc2\x85"
     "b",
     0,
     2,
     {{170, 0, 1, 0, 1}, {1830, 2, 3, 3, 4}}},
    {"NUL is removed", "a\0b", 3, 2, {{170, 0, 1, 0, 1}, {1830, 2, 3, 2, 3}}},
    {"U+FFFD is removed",
     "a\xef\xbf\xbd"
     "b",
     0,
     2,
     {{170, 0, 1, 0, 1}, {1830, 2, 3, 4, 5}}},
    {"private use is removed",
     "a\xee\x80\x80"
     "b",
     0,
     2,
     {{170, 0, 1, 0, 1}, {1830, 2, 3, 4, 5}}},
    {"format char (LRI) is removed",
     "a\xe2\x81\xa6"
     "b",
     0,
     2,
     {{170, 0, 1, 0, 1}, {1830, 2, 3, 4, 5}}},
    {"NBSP separates",
     "a\xc2\xa0"
     "b",
     0,
     2,
     {{170, 0, 1, 0, 1}, {171, 2, 3, 3, 4}}},
    {"CJK", "\xe4\xb8\xad\xe6\x96\x87", 0, 2, {{980, 0, 1, 0, 3}, {1030, 1, 2, 3, 6}}},
    {"CJK inside a word",
     "a\xe4\xb8\xad"
     "b",
     0,
     3,
     {{170, 0, 1, 0, 1}, {980, 1, 2, 1, 4}, {171, 2, 3, 4, 5}}},
    {"combining mark kept (cased)", "e\xcc\x81", 0, 2, {{174, 0, 1, 0, 1}, {28310, 1, 2, 1, 3}}},
    {"precomposed", "caf\xc3\xa9", 0, 1, {{20583, 0, 4, 0, 5}}},
    {"emoji stays in the word: [UNK] covers it", "I\xf0\x9f\x98\x80you", 0, 1, {{100, 0, 5, 0, 8}}},
    {"currency symbol stays in the word",
     "5\xe2\x82\xac",
     0,
     2,
     {{126, 0, 1, 0, 1}, {28731, 1, 2, 1, 4}}},
    {"em dash is punctuation",
     "a\xe2\x80\x94"
     "b",
     0,
     3,
     {{170, 0, 1, 0, 1}, {783, 1, 2, 1, 4}, {171, 2, 3, 4, 5}}},
    {"accented pieces",
     "na\xc3\xafve",
     0,
     3,
     {{9468, 0, 2, 0, 2}, {28203, 2, 3, 2, 4}, {2707, 3, 5, 4, 6}}},
    {"[MASK] inside a word",
     "a[MASK]b",
     0,
     3,
     {{170, 0, 1, 0, 1}, {103, 1, 7, 1, 7}, {171, 7, 8, 7, 8}}},
    {"specials are case-sensitive",
     "[mask]",
     0,
     3,
     {{164, 0, 1, 0, 1}, {7739, 1, 5, 1, 5}, {166, 5, 6, 5, 6}}},
    {"adjacent specials", "[UNK][CLS]", 0, 2, {{100, 0, 5, 0, 5}, {101, 5, 10, 5, 10}}},
    {"unterminated special",
     "[MASK",
     0,
     4,
     {{164, 0, 1, 0, 1}, {9960, 1, 3, 1, 3}, {1708, 3, 4, 3, 4}, {2428, 4, 5, 4, 5}}},
    {"U+10FFFF (unassigned) is kept", "\xf4\x8f\xbf\xbf", 0, 1, {{100, 0, 1, 0, 4}}},
    /* Unicode 8.0 categories, as the reference: U+2E43 (Po since 9.0) is a
     * word character, U+166D (Po in 8.0, So now) is punctuation, U+0890
     * (Cf since 14.0) is kept. */
    {"U+2E43 is not punctuation",
     "a\xe2\xb9\x83"
     "b",
     0,
     1,
     {{100, 0, 3, 0, 5}}},
    {"U+166D is punctuation",
     "a\xe1\x99\xad"
     "b",
     0,
     3,
     {{170, 0, 1, 0, 1}, {100, 1, 2, 1, 4}, {171, 2, 3, 4, 5}}},
    {"U+0890 is kept",
     "a\xe0\xa2\x90"
     "b",
     0,
     1,
     {{100, 0, 3, 0, 5}}},
    {"trailing zero-width", "x\xe2\x80\x8b", 0, 1, {{193, 0, 1, 0, 1}}},
};

static void s_check_case(const zb_tokenizer_t *t, const hard_case_t *c, zb_tokenizer_pieces_t *p) {
    size_t len = c->len ? c->len : strlen(c->text);
    int rc = zb_tokenizer_encode(t, c->text, len, p);
    if (rc != 0 || p->n != (size_t)c->n) {
        fprintf(stderr, "%s: rc %d, %zu pieces, expected %d\n", c->what, rc, p->n, c->n);
        fail();
    }
    for (int i = 0; i < c->n; i++) {
        const zb_tokenizer_piece_t *x = &p->v[i];
        const exp_piece_t *e = &c->p[i];
        if (x->id != e->id || x->begin != e->b || x->end != e->e || x->byte_begin != e->bb ||
            x->byte_end != e->be) {
            fprintf(stderr, "%s: piece %d is %d [%u,%u) b[%u,%u), expected %d [%u,%u) b[%u,%u)\n",
                    c->what, i, x->id, x->begin, x->end, x->byte_begin, x->byte_end, e->id, e->b,
                    e->e, e->bb, e->be);
            fail();
        }
    }
}

static void test_hard_cases(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    zb_tokenizer_pieces_t p = {0};
    for (size_t i = 0; i < sizeof s_hard / sizeof *s_hard; i++) s_check_case(t, &s_hard[i], &p);
    zb_tokenizer_pieces_free(&p);
    assert_null(p.v);
    zb_tokenizer_destroy(&t);
}

/* 100 code points after cleaning are still split; 101 are one [UNK]. */
static void test_word_length_limit(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    zb_tokenizer_pieces_t p = {0};
    char buf[512];
    /* "x" * 100: "x" then 99 x "##x" (1775), one per code point. */
    memset(buf, 'x', 100);
    assert_int_equal(zb_tokenizer_encode(t, buf, 100, &p), 0);
    assert_int_equal(p.n, 100);
    assert_int_equal(p.v[0].id, 193);
    for (size_t i = 1; i < 100; i++) {
        assert_int_equal(p.v[i].id, 1775);
        assert_int_equal(p.v[i].begin, i);
        assert_int_equal(p.v[i].end, i + 1);
    }
    /* 101: one [UNK] over the whole word, even with a word after it. */
    memset(buf, 'x', 101);
    memcpy(buf + 101, " a", 2);
    assert_int_equal(zb_tokenizer_encode(t, buf, 103, &p), 0);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.v[0].id, 100);
    assert_int_equal(p.v[0].begin, 0);
    assert_int_equal(p.v[0].end, 101);
    assert_int_equal(p.v[0].byte_end, 101);
    assert_int_equal(p.v[1].id, 170);
    assert_int_equal(p.v[1].begin, 102);
    /* 100 x plus a zero-width space in the middle: 100 after cleaning, so
     * not [UNK]; the pieces skip the removed code point. */
    memset(buf, 'x', 50);
    memcpy(buf + 50, "\xe2\x80\x8b", 3);
    memset(buf + 53, 'x', 50);
    assert_int_equal(zb_tokenizer_encode(t, buf, 103, &p), 0);
    assert_int_equal(p.n, 100);
    assert_int_equal(p.v[49].begin, 49);
    assert_int_equal(p.v[50].begin, 51);
    assert_int_equal(p.v[50].byte_begin, 53);
    assert_int_equal(p.v[99].end, 101);
    assert_int_equal(p.v[99].byte_end, 103);
    /* 101 multi-byte code points: [UNK] with byte offsets of the whole. */
    for (int i = 0; i < 101; i++) memcpy(buf + 2 * i, "\xc3\xa9", 2);
    assert_int_equal(zb_tokenizer_encode(t, buf, 202, &p), 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.v[0].id, 100);
    assert_int_equal(p.v[0].end, 101);
    assert_int_equal(p.v[0].byte_end, 202);
    zb_tokenizer_pieces_free(&p);
    zb_tokenizer_destroy(&t);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    static const struct {
        const char *what, *s;
    } bad[] = {
        {"stray continuation", "\x80"},
        {"lone lead at end", "ab\xc3"},
        {"truncated 3-byte", "\xe2\x82"},
        {"truncated 4-byte", "a\xf0\x9f\x98"},
        {"bad continuation", "\xe2\x28\xa1"},
        {"overlong NUL", "\xc0\x80"},
        {"overlong C1", "\xc1\xbf"},
        {"overlong 3-byte", "\xe0\x80\xaf"},
        {"overlong 4-byte", "\xf0\x8f\xbf\xbf"},
        {"surrogate D800", "\xed\xa0\x80"},
        {"surrogate DFFF", "\xed\xbf\xbf"},
        {"above U+10FFFF", "\xf4\x90\x80\x80"},
        {"F5 lead", "\xf5\x80\x80\x80"},
        {"5-byte form", "\xf8\x88\x80\x80\x80"},
        {"FF byte", "Hello \xff world"},
        {"invalid after a special", "[MASK]\xfe"},
    };
    zb_tokenizer_t *t = s_load_cased();
    zb_tokenizer_pieces_t p = {0};
    zb_tokenizer_words_t w = {0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        /* Fill the outputs first: an error must leave them empty. */
        assert_int_equal(zb_tokenizer_encode(t, "Hello world", 11, &p), 0);
        assert_int_equal(zb_tokenizer_split_words("Hello world", 11, &w), 0);
        assert_true(p.n > 0 && w.n > 0);
        int rc = zb_tokenizer_encode(t, bad[i].s, strlen(bad[i].s), &p);
        if (rc != ZB_EUTF8 || p.n != 0) {
            fprintf(stderr, "%s: rc %d, %zu pieces\n", bad[i].what, rc, p.n);
            fail();
        }
        assert_int_equal(zb_tokenizer_split_words(bad[i].s, strlen(bad[i].s), &w), ZB_EUTF8);
        assert_int_equal(w.n, 0);
    }
    /* The extremes of each length are valid. */
    static const char *good = "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80"
                              "\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf";
    assert_int_equal(zb_tokenizer_encode(t, good, strlen(good), &p), 0);
    /* The length limit. */
    size_t big = (size_t)ZB_TEXT_BYTES_MAX + 1;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'a', big);
    assert_int_equal(zb_tokenizer_encode(t, huge, big, &p), ZB_ELIMIT);
    assert_int_equal(zb_tokenizer_split_words(huge, big, &w), ZB_ELIMIT);
    /* At the limit: one long word, one [UNK]. */
    assert_int_equal(zb_tokenizer_encode(t, huge, big - 1, &p), 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.v[0].end, big - 1);
    free(huge);
    zb_tokenizer_pieces_free(&p);
    zb_tokenizer_words_free(&w);
    zb_tokenizer_words_free(&w); /* freeing twice is harmless */
    zb_tokenizer_destroy(&t);
}

/* --- uncased mode ------------------------------------------------------- */

static const char s_small_vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" /* 0-4 */
                                    "hello\n"                              /* 5 */
                                    "cafe\n"                               /* 6 */
                                    "e\n"                                  /* 7 */
                                    "istanbul\n"                           /* 8 */
                                    "h\n"                                  /* 9 */
                                    "##\xc3\xa9\n"                         /* 10 ##é */
                                    "##llo\n"                              /* 11 */
                                    "\xe1\x84\x92\n"                       /* 12 ᄒ */
                                    "##\xe1\x85\xa1\n"                     /* 13 ##ᅡ */
                                    "##\xe1\x86\xab\n"                     /* 14 ##ᆫ */
                                    "[\n]\nmask\n"                         /* 15-17 */
                                    "Hello\n"                              /* 18 */
                                    "\xcf\x83\n"                           /* 19 σ */
                                    "i\n##\xcc\x87\n##stanbul\n";          /* 20-22 */

static zb_tokenizer_t *s_small(bool lower, bool strip) {
    zb_tokenizer_t *t = NULL;
    zb_tokenizer_options_t opt = {lower, strip};
    assert_int_equal(zb_tokenizer_new(s_small_vocab, sizeof s_small_vocab - 1, &opt, &t, NULL), 0);
    return t;
}

static const hard_case_t s_uncased[] = {
    {"accent stripped, offsets in the original", "H\xc3\xa9llo", 0, 1, {{5, 0, 5, 0, 6}}},
    {"all caps", "H\xc3\x89LLO", 0, 1, {{5, 0, 5, 0, 6}}},
    {"ASCII caps", "HELLO", 0, 1, {{5, 0, 5, 0, 5}}},
    {"precomposed", "Caf\xc3\xa9", 0, 1, {{6, 0, 4, 0, 5}}},
    {"decomposed: a trailing dropped mark is outside the piece",
     "e\xcc\x81",
     0,
     1,
     {{7, 0, 1, 0, 1}}},
    {"dropped mark inside a word is spanned",
     "cafe\xcc\x81 Ca\xcc\x81"
     "fe",
     0,
     2,
     {{6, 0, 4, 0, 4}, {6, 6, 11, 7, 13}}},
    {"dotted capital I", "\xc4\xb0stanbul", 0, 1, {{8, 0, 8, 0, 9}}},
    /* NFD splits a Hangul syllable into three jamo: all three pieces map
     * back to the one original code point. */
    {"hangul jamo", "\xed\x95\x9c", 0, 3, {{12, 0, 1, 0, 3}, {13, 0, 1, 0, 3}, {14, 0, 1, 0, 3}}},
    {"specials still match the raw text",
     "[MASK] [mask]",
     0,
     4,
     {{4, 0, 6, 0, 6}, {15, 7, 8, 7, 8}, {17, 8, 12, 8, 12}, {16, 12, 13, 12, 13}}},
    {"capital sigma", "\xce\xa3", 0, 1, {{19, 0, 1, 0, 2}}},
};

static void test_uncased(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_small(true, true);
    zb_tokenizer_pieces_t p = {0};
    for (size_t i = 0; i < sizeof s_uncased / sizeof *s_uncased; i++)
        s_check_case(t, &s_uncased[i], &p);
    zb_tokenizer_destroy(&t);

    /* Lower-casing alone keeps the accent: h ##é ##llo. */
    t = s_small(true, false);
    hard_case_t lower = {"lowercase only",
                         "H\xc3\xa9llo",
                         0,
                         3,
                         {{9, 0, 1, 0, 1}, {10, 1, 2, 1, 3}, {11, 2, 5, 3, 6}}};
    s_check_case(t, &lower, &p);
    /* Full lower-case mapping: U+0130 becomes "i" + U+0307, both pieces
     * pointing at the one original code point. */
    hard_case_t dotted = {"lowercase dotted I",
                          "\xc4\xb0stanbul",
                          0,
                          3,
                          {{20, 0, 1, 0, 2}, {21, 0, 1, 0, 2}, {22, 1, 8, 2, 9}}};
    s_check_case(t, &dotted, &p);
    zb_tokenizer_destroy(&t);

    /* Accent stripping alone keeps the case. */
    t = s_small(false, true);
    hard_case_t strip = {"strip only", "H\xc3\xa9llo", 0, 1, {{18, 0, 5, 0, 6}}};
    s_check_case(t, &strip, &p);
    zb_tokenizer_destroy(&t);

    /* Cased: neither. */
    t = s_small(false, false);
    hard_case_t cased = {"cased", "H\xc3\xa9llo", 0, 1, {{1, 0, 5, 0, 6}}};
    s_check_case(t, &cased, &p);
    zb_tokenizer_destroy(&t);
    zb_tokenizer_pieces_free(&p);
}

/* --- vocabulary parsing -------------------------------------------------- */

static int s_new(const char *v, size_t n, zb_tokenizer_t **t, zb_diag_t *d) {
    zb_tokenizer_options_t opt = {false, false};
    return zb_tokenizer_new(v, n, &opt, t, d);
}

static void test_vocab_parsing(void **state) {
    (void)state;
    zb_tokenizer_t *t = NULL;
    zb_diag_t d = {{0}};
    zb_tokenizer_pieces_t p = {0};
    size_t len;

    /* CRLF endings: the \r is not part of the token. */
    const char crlf[] = "[UNK]\r\nhello\r\n##s\r\n";
    assert_int_equal(s_new(crlf, sizeof crlf - 1, &t, &d), 0);
    assert_int_equal(zb_tokenizer_vocab_size(t), 3);
    const char *tok = zb_tokenizer_token(t, 1, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(tok, "hello", 5);
    assert_int_equal(zb_tokenizer_encode(t, "hellos", 6, &p), 0);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.v[0].id, 1);
    assert_int_equal(p.v[1].id, 2);
    assert_int_equal(zb_tokenizer_unk_id(t), 0);
    assert_int_equal(zb_tokenizer_cls_id(t), -1);
    assert_int_equal(zb_tokenizer_sep_id(t), -1);
    assert_int_equal(zb_tokenizer_pad_id(t), -1);
    assert_null(zb_tokenizer_token(t, 3, &len));
    assert_null(zb_tokenizer_token(t, -1, &len));
    /* direct lookups: plain and "##" entries are separate keys */
    assert_int_equal(zb_tokenizer_piece_id(t, "hello", 5, false), 1);
    assert_int_equal(zb_tokenizer_piece_id(t, "hello", 5, true), -1);
    assert_int_equal(zb_tokenizer_piece_id(t, "s", 1, true), 2);
    assert_int_equal(zb_tokenizer_piece_id(t, "s", 1, false), -1);
    assert_int_equal(zb_tokenizer_piece_id(t, "hellos", 6, false), -1); /* longer than any entry */
    assert_int_equal(zb_tokenizer_piece_id(t, "##s", 3, false), -1);
    /* Without [MASK] in the vocabulary, "[MASK]" is ordinary text. */
    assert_int_equal(zb_tokenizer_encode(t, "[MASK]", 6, &p), 0);
    assert_int_equal(p.n, 3);
    zb_tokenizer_destroy(&t);
    assert_null(t);
    zb_tokenizer_destroy(&t); /* NULL is fine */
    zb_tokenizer_destroy(NULL);

    /* No final newline; an empty line still takes an id. */
    const char nofinal[] = "[UNK]\n\nhello";
    assert_int_equal(s_new(nofinal, sizeof nofinal - 1, &t, &d), 0);
    assert_int_equal(zb_tokenizer_vocab_size(t), 3);
    assert_int_equal(zb_tokenizer_encode(t, "hello", 5, &p), 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.v[0].id, 2);
    zb_tokenizer_destroy(&t);

    /* A duplicated entry takes its last id. */
    const char dup[] = "[UNK]\nab\nx\nab\n";
    assert_int_equal(s_new(dup, sizeof dup - 1, &t, &d), 0);
    assert_int_equal(zb_tokenizer_encode(t, "ab", 2, &p), 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.v[0].id, 3);
    zb_tokenizer_destroy(&t);

    /* Failures: the code, a message, and no object. */
    const char nounk[] = "[CLS]\n[SEP]\nhello\n";
    t = (zb_tokenizer_t *)&d; /* must be overwritten with NULL */
    assert_int_equal(s_new(nounk, sizeof nounk - 1, &t, &d), ZB_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(d.msg, "[UNK]"));
    assert_int_equal(s_new("", 0, &t, &d), ZB_EFORMAT);
    assert_null(t);
    assert_non_null(strstr(d.msg, "empty"));
    assert_int_equal(s_new("\n", 1, &t, &d), ZB_EFORMAT); /* one empty token, no [UNK] */
    const char badutf8[] = "[UNK]\nab\xff\n";
    assert_int_equal(s_new(badutf8, sizeof badutf8 - 1, &t, &d), ZB_EFORMAT);
    assert_non_null(strstr(d.msg, "line 2"));
    char longline[ZB_VOCAB_ENTRY_BYTES_MAX + 16];
    memcpy(longline, "[UNK]\n", 6);
    memset(longline + 6, 'a', ZB_VOCAB_ENTRY_BYTES_MAX + 1);
    assert_int_equal(s_new(longline, 6 + ZB_VOCAB_ENTRY_BYTES_MAX + 1, &t, &d), ZB_ELIMIT);
    assert_null(t);
    assert_int_equal(zb_tokenizer_new(NULL, 5, NULL, &t, &d), ZB_EINVAL);
    zb_tokenizer_pieces_free(&p);
}

static void test_real_vocab_ids(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    assert_int_equal(zb_tokenizer_vocab_size(t), 28996);
    assert_int_equal(zb_tokenizer_pad_id(t), 0);
    assert_int_equal(zb_tokenizer_unk_id(t), 100);
    assert_int_equal(zb_tokenizer_cls_id(t), 101);
    assert_int_equal(zb_tokenizer_sep_id(t), 102);
    assert_int_equal(s_id(t, "[MASK]"), 103);
    size_t len;
    const char *s = zb_tokenizer_token(t, 28995, &len);
    assert_non_null(s);
    assert_true(len > 0);
    zb_tokenizer_destroy(&t);
}

/* --- Spark NLP-style split ---------------------------------------------- */

typedef struct split_case {
    const char *text;
    int n;
    uint32_t w[6][4]; /* begin end byte_begin byte_end */
} split_case_t;

static const split_case_t s_split[] = {
    {"don't", 1, {{0, 5, 0, 5}}},
    {"e-mail", 1, {{0, 6, 0, 6}}},
    {"U.S.", 2, {{0, 3, 0, 3}, {3, 4, 3, 4}}},
    {"(hello),", 4, {{0, 1, 0, 1}, {1, 6, 1, 6}, {6, 7, 6, 7}, {7, 8, 7, 8}}},
    {"I love NLP", 3, {{0, 1, 0, 1}, {2, 6, 2, 6}, {7, 10, 7, 10}}},
    {"...", 3, {{0, 1, 0, 1}, {1, 2, 1, 2}, {2, 3, 2, 3}}},
    /* «Bonjour» and ¿Qué?: Unicode punctuation peels too. */
    {"\xc2\xab"
     "Bonjour\xc2\xbb",
     3,
     {{0, 1, 0, 2}, {1, 8, 2, 9}, {8, 9, 9, 11}}},
    {"\xc2\xbfQu\xc3\xa9?", 3, {{0, 1, 0, 2}, {1, 4, 2, 6}, {4, 5, 6, 7}}},
    {" \t\n\xe3\x80\x80\xc2\xa0 ", 0, {{0}}},
    {"", 0, {{0}}},
    /* CJK is not split here (a whitespace-delimited chunk), but its
     * trailing ideographic full stop peels off. */
    {"\xe6\x88\x91\xe7\x88\xb1NLP\xe3\x80\x82", 2, {{0, 5, 0, 9}, {5, 6, 9, 12}}},
    /* Removed characters are trimmed from edges and are never tokens. */
    {"\xe2\x80\x8bhello\xe2\x80\x8b", 1, {{1, 6, 3, 8}}},
    {"(\xe2\x80\x8b)", 2, {{0, 1, 0, 1}, {2, 3, 4, 5}}},
    {"\xe2\x80\x8b \x01", 0, {{0}}},
    {"a\vb", 1, {{0, 3, 0, 3}}}, /* \v is removed by BERT's cleaner, not a separator */
    {"$5.99", 2, {{0, 1, 0, 1}, {1, 5, 1, 5}}},
};

static void test_split_words(void **state) {
    (void)state;
    zb_tokenizer_words_t w = {0};
    for (size_t i = 0; i < sizeof s_split / sizeof *s_split; i++) {
        const split_case_t *c = &s_split[i];
        int rc = zb_tokenizer_split_words(c->text, strlen(c->text), &w);
        if (rc != 0 || w.n != (size_t)c->n) {
            fprintf(stderr, "split \"%s\": rc %d, %zu tokens, expected %d\n", c->text, rc, w.n,
                    c->n);
            fail();
        }
        for (int j = 0; j < c->n; j++) {
            const zb_tokenizer_word_t *x = &w.v[j];
            if (x->begin != c->w[j][0] || x->end != c->w[j][1] || x->byte_begin != c->w[j][2] ||
                x->byte_end != c->w[j][3]) {
                fprintf(stderr, "split \"%s\" token %d: [%u,%u) b[%u,%u)\n", c->text, j, x->begin,
                        x->end, x->byte_begin, x->byte_end);
                fail();
            }
        }
    }
    zb_tokenizer_words_free(&w);
}

/* Every Spark-style token of the embedding texts that starts where a BERT
 * word starts begins exactly at a wordpiece: the token-row lookup works. */
static void test_split_words_vs_pieces(void **state) {
    (void)state;
    zb_tokenizer_t *t = s_load_cased();
    fx_file_t f;
    assert_int_equal(fx_load(fx_path("embeddings-tiny-seed1.txt"), &f), 0);
    zb_tokenizer_pieces_t p = {0};
    zb_tokenizer_words_t w = {0};
    size_t matched = 0, total = 0;
    for (int i = 0; i < f.n; i++) {
        const fx_case_t *k = &f.cases[i];
        assert_int_equal(zb_tokenizer_encode(t, k->text, k->text_len, &p), 0);
        assert_int_equal(zb_tokenizer_split_words(k->text, k->text_len, &w), 0);
        size_t j = 0;
        for (size_t x = 0; x < w.n; x++) {
            assert_true(w.v[x].begin < w.v[x].end);
            assert_true(w.v[x].byte_end <= k->text_len);
            if (x) assert_true(w.v[x].byte_begin >= w.v[x - 1].byte_end);
            while (j < p.n && p.v[j].byte_begin < w.v[x].byte_begin) j++;
            total++;
            matched += j < p.n && p.v[j].byte_begin == w.v[x].byte_begin;
        }
    }
    /* Tokens split where BERT splits, so every token starts at a piece. */
    fprintf(stderr, "split_words: %zu of %zu tokens start at a wordpiece\n", matched, total);
    assert_true(total > 500);
    assert_int_equal(matched, total);
    zb_tokenizer_words_free(&w);
    zb_tokenizer_pieces_free(&p);
    fx_free(&f);
    zb_tokenizer_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_tokenization_2000),
        cmocka_unit_test(test_fixture_embeddings),
        cmocka_unit_test(test_hard_cases),
        cmocka_unit_test(test_word_length_limit),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_uncased),
        cmocka_unit_test(test_vocab_parsing),
        cmocka_unit_test(test_real_vocab_ids),
        cmocka_unit_test(test_split_words),
        cmocka_unit_test(test_split_words_vs_pieces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
