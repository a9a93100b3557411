/*
 * test_sparknlp.c -- the Spark NLP 2.6 pipeline port (engine/sparknlp.h)
 * against worked examples, field by field.
 *
 * Where the fixtures come from (our own derived data):
 *   tests/fixtures/sparknlp-examples.jsonl   46 texts; for each, the sentences,
 *       tokens, the input ids fed per sentence and the vectors emitted (token,
 *       pieceId, isWordStart, row of the model output, whether that row is
 *       [SEP]), offsets UTF-16 with inclusive ends plus "cp", the same span in
 *       code points (inclusive).  Vocabulary: vocab-bert-base-cased.txt.
 *   tests/fixtures/sparknlp-golden-sbd.jsonl the 48 English "Golden Rules" of
 *       the pragmatic segmenter (as pySBD's benchmark lists them) with the
 *       spans Spark NLP 2.6's SentenceDetector gives ("sparknlp26", UTF-16,
 *       inclusive): 34 agree with the golden answer, 14 do not.
 * Both were produced by a throw-away Java re-implementation of Spark NLP
 * 2.6.4/2.6.5's SentenceDetector, Tokenizer, BasicTokenizer, WordpieceEncoder
 * and TensorflowBert row mapping, written from those releases' sources and run
 * on java.util.regex (the regex engine Spark uses); it reproduces Spark's own
 * SBD test paragraph and Tokenizer test expectations.  They are not output of
 * a Spark cluster.  Every field must match exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "sparknlp.h"
#include "tokenizer.h"

static zb_tokenizer_t *s_tok;

static int setup(void **st) {
    (void)st;
    size_t len;
    char *v = fx_read_file(fx_path("vocab-bert-base-cased.txt"), &len);
    if (v == NULL) return -1;
    zb_diag_t d = {{0}};
    int rc = zb_tokenizer_new(v, len, &(zb_tokenizer_options_t){0}, &s_tok, &d);
    free(v);
    return rc;
}

static int teardown(void **st) {
    (void)st;
    zb_tokenizer_destroy(&s_tok);
    return 0;
}

/* Parsed lines of a JSONL fixture. */
static int s_load(const char *name, cJSON **out, int cap) {
    size_t len;
    char *data = fx_read_file(fx_path(name), &len);
    assert_non_null(data);
    int n = 0;
    for (char *p = data, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_true(n < cap);
        out[n] = cJSON_Parse(p);
        assert_non_null(out[n]);
        n++;
    }
    free(data);
    return n;
}

static int s_int(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_non_null(x);
    return x->valueint;
}

static const char *s_str(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsString(x));
    return x->valuestring;
}

/* The span's text must be what the fixture names it. */
static void s_check_span(const char *text, int ex, const char *what, const zb_sparknlp_span_t *sp,
                         const cJSON *want) {
    const char *res = s_str(want, "result");
    size_t n = sp->byte_end - sp->byte_begin;
    if (sp->begin16 != s_int(want, "begin") || sp->end16 != s_int(want, "end") ||
        strlen(res) != n || memcmp(text + sp->byte_begin, res, n) != 0)
        fail_msg("example %d %s: got [%d,%d] '%.*s', want [%d,%d] '%s'", ex, what, sp->begin16,
                 sp->end16, (int)n, text + sp->byte_begin, s_int(want, "begin"), s_int(want, "end"),
                 res);
    const cJSON *cp = cJSON_GetObjectItemCaseSensitive(want, "cp");
    if (cp) {
        assert_int_equal(sp->begin, cJSON_GetArrayItem(cp, 0)->valueint);
        assert_int_equal(sp->end - 1, cJSON_GetArrayItem(cp, 1)->valueint);
    }
}

static void test_examples(void **st) {
    (void)st;
    cJSON *ex[64];
    int n = s_load("sparknlp-examples.jsonl", ex, 64);
    assert_int_equal(n, 46);
    zb_sparknlp_doc_t doc = {0};
    int n_vectors = 0, n_sep = 0, n_collision = 0;
    for (int e = 0; e < n; e++) {
        const char *text = s_str(ex[e], "text");
        size_t len = strlen(text);
        int rc = zb_sparknlp_analyze(s_tok, true, text, len, &doc);
        if (rc != 0) fail_msg("example %d: %s (%s)", e, zb_strerror(rc), doc.error);

        const cJSON *sents = cJSON_GetObjectItemCaseSensitive(ex[e], "sentences");
        assert_int_equal(doc.n_sentences, cJSON_GetArraySize(sents));
        for (size_t k = 0; k < doc.n_sentences; k++)
            s_check_span(text, e, "sentence", &doc.sentences[k], cJSON_GetArrayItem(sents, (int)k));

        const cJSON *toks = cJSON_GetObjectItemCaseSensitive(ex[e], "tokens");
        if ((int)doc.n_tokens != cJSON_GetArraySize(toks))
            fail_msg("example %d: %zu tokens, want %d", e, doc.n_tokens, cJSON_GetArraySize(toks));
        for (size_t k = 0; k < doc.n_tokens; k++) {
            const cJSON *w = cJSON_GetArrayItem(toks, (int)k);
            s_check_span(text, e, "token", &doc.tokens[k].span, w);
            assert_int_equal(doc.tokens[k].sentence, s_int(w, "sentence"));
        }

        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(ex[e], "input_ids");
        assert_int_equal(doc.n_sentences, cJSON_GetArraySize(ids));
        for (size_t k = 0; k < doc.n_sentences; k++) {
            const cJSON *row = cJSON_GetArrayItem(ids, (int)k);
            uint32_t b = doc.seq_off[k], end = doc.seq_off[k + 1];
            if ((int)(end - b) != cJSON_GetArraySize(row))
                fail_msg("example %d sentence %zu: %u ids fed, want %d", e, k, end - b,
                         cJSON_GetArraySize(row));
            for (uint32_t i = b; i < end; i++)
                if (doc.ids[i] != cJSON_GetArrayItem(row, (int)(i - b))->valueint)
                    fail_msg("example %d sentence %zu: id %u is %d, want %d", e, k, i - b,
                             doc.ids[i], cJSON_GetArrayItem(row, (int)(i - b))->valueint);
        }

        const cJSON *vecs = cJSON_GetObjectItemCaseSensitive(ex[e], "vectors");
        if ((int)doc.n_vectors != cJSON_GetArraySize(vecs))
            fail_msg("example %d: %zu vectors, want %d", e, doc.n_vectors,
                     cJSON_GetArraySize(vecs));
        for (size_t k = 0; k < doc.n_vectors; k++) {
            const cJSON *w = cJSON_GetArrayItem(vecs, (int)k);
            const zb_sparknlp_vector_t *v = &doc.vectors[k];
            const zb_sparknlp_token_t *t = &doc.tokens[v->token];
            s_check_span(text, e, "vector token", &t->span, w);
            assert_int_equal(t->sentence, s_int(w, "sentence"));
            assert_int_equal(v->piece_id, s_int(w, "pieceId"));
            assert_int_equal(v->row, s_int(w, "row"));
            assert_int_equal(v->word_start,
                             cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(w, "isWordStart")));
            const cJSON *sep = cJSON_GetObjectItemCaseSensitive(w, "row_is_sep");
            assert_int_equal(v->row_is_sep, sep != NULL && cJSON_IsTrue(sep));
            /* the row is that piece's: the id fed at that position */
            if (!v->row_is_sep)
                assert_int_equal(doc.ids[doc.seq_off[t->sentence] + v->row], v->piece_id);
            n_sep += v->row_is_sep;
            n_collision += !v->word_start;
        }
        n_vectors += (int)doc.n_vectors;
    }
    /* the quirks are all exercised: two [SEP]-row vectors (130 words; 70
     * three-piece words) and one NFD collision */
    assert_int_equal(n_sep, 2);
    assert_int_equal(n_collision, 1);
    assert_true(n_vectors > 400);
    zb_sparknlp_doc_free(&doc);
    for (int e = 0; e < n; e++) cJSON_Delete(ex[e]);
}

static void test_golden_rules(void **st) {
    (void)st;
    cJSON *g[64];
    int n = s_load("sparknlp-golden-sbd.jsonl", g, 64);
    assert_int_equal(n, 48);
    zb_sparknlp_doc_t doc = {0};
    int agree = 0;
    for (int e = 0; e < n; e++) {
        const char *text = s_str(g[e], "text");
        assert_int_equal(zb_sparknlp_sentences(text, strlen(text), &doc), 0);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(g[e], "sparknlp26");
        if ((int)doc.n_sentences != cJSON_GetArraySize(want))
            fail_msg("rule %d: %zu sentences, want %d", s_int(g[e], "rule"), doc.n_sentences,
                     cJSON_GetArraySize(want));
        for (size_t k = 0; k < doc.n_sentences; k++) {
            const cJSON *sp = cJSON_GetArrayItem(want, (int)k);
            if (doc.sentences[k].begin16 != cJSON_GetArrayItem(sp, 0)->valueint ||
                doc.sentences[k].end16 != cJSON_GetArrayItem(sp, 1)->valueint)
                fail_msg("rule %d sentence %zu: [%d,%d], want [%d,%d]", s_int(g[e], "rule"), k,
                         doc.sentences[k].begin16, doc.sentences[k].end16,
                         cJSON_GetArrayItem(sp, 0)->valueint, cJSON_GetArrayItem(sp, 1)->valueint);
        }
        agree += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g[e], "agrees_with_golden"));
    }
    assert_int_equal(agree, 34); /* the fixture's own count: Spark's detector is not ours */
    zb_sparknlp_doc_free(&doc);
    for (int e = 0; e < n; e++) cJSON_Delete(g[e]);
}

/* One-line cases from the spec of the port, each a quirk of its own. */
typedef struct s_case {
    const char *text;
    const char *sentences; /* sentences joined by '|' */
} s_case_t;

static void test_detector_quirks(void **st) {
    (void)st;
    static const s_case_t cases[] = {
        {"Hello\nWorld is here.", "Hello\nWorld is here."},
        {"Is it? Yes! No.", "Is it?|Yes!|No."},
        {"Mix; of; semis", "Mix;|of;|semis"},
        {"Mr. Smith went to Washington.", "Mr. Smith went to Washington."},
        {"He arrived at 5 p.m. yesterday.", "He arrived at 5 p.m. yesterday."},
        {"The U.S. Army.", "The U.S.|Army."},
        {"This is (really) fine.", "This is|(really) fine."},
        {"It costs 5. Then we left.", "It costs|5. Then we left."},
        {"Well...I don't know... Maybe.", "Well.|.|.|I don't know...|Maybe."},
        {"Wait... What now?", "Wait...|What now?"},
        {"  Leading spaces. Trailing  ", "Leading spaces.|Trailing"},
        {"", ""},
        {"   ", ""},
    };
    zb_sparknlp_doc_t doc = {0};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *t = cases[c].text;
        assert_int_equal(zb_sparknlp_sentences(t, strlen(t), &doc), 0);
        char got[256] = "";
        for (size_t k = 0; k < doc.n_sentences; k++) {
            const zb_sparknlp_span_t *sp = &doc.sentences[k];
            size_t at = strlen(got);
            snprintf(got + at, sizeof got - at, "%s%.*s", k ? "|" : "",
                     (int)(sp->byte_end - sp->byte_begin), t + sp->byte_begin);
        }
        if (strcmp(got, cases[c].sentences) != 0)
            fail_msg("'%s': got '%s', want '%s'", t, got, cases[c].sentences);
    }
    /* The list rule's `.` takes a backslash, which Spark's replacement
     * string then eats: the sentence is not in the text any more. */
    const char *bs = "-5\\) x";
    assert_int_equal(zb_sparknlp_sentences(bs, strlen(bs), &doc), ZB_EUNSUPPORTED);
    assert_non_null(strstr(doc.error, "sentence detector"));
    assert_int_equal(doc.n_sentences, 0);
    /* a marker character in the text comes back as a period */
    const char *mk = "a\u2554b";
    assert_int_equal(zb_sparknlp_sentences(mk, strlen(mk), &doc), ZB_EUNSUPPORTED);
    /* invalid UTF-8 */
    assert_int_equal(zb_sparknlp_sentences("\xff", 1, &doc), ZB_EUTF8);
    zb_sparknlp_doc_free(&doc);
}

static void test_punct_set(void **st) {
    (void)st;
    int n = 0;
    for (int32_t c = 0x80; c < 0x10000; c++) n += zb_sparknlp_is_punct(c);
    assert_int_equal(n, 58);
    assert_true(zb_sparknlp_is_punct(0x2008));
    assert_false(zb_sparknlp_is_punct(0x2019)); /* ’ is P* but not "PUNCTUATION" by name */
    assert_false(zb_sparknlp_is_punct(0x3002));
}

/* A sentence without a token: Spark's pipeline throws, so the text is refused. */
static void test_sentence_without_token(void **st) {
    (void)st;
    zb_sparknlp_doc_t doc = {0};
    const char *t = "\u2187";
    assert_int_equal(zb_sparknlp_analyze(s_tok, true, t, strlen(t), &doc), ZB_EUNSUPPORTED);
    assert_non_null(strstr(doc.error, "no token"));
    /* the doc is reusable after a refusal */
    assert_int_equal(zb_sparknlp_analyze(s_tok, true, "I love NLP", 10, &doc), 0);
    assert_int_equal(doc.n_vectors, 3);
    zb_sparknlp_doc_free(&doc);
    zb_sparknlp_doc_free(&doc); /* twice is harmless */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_golden_rules),
        cmocka_unit_test(test_detector_quirks),
        cmocka_unit_test(test_punct_set),
        cmocka_unit_test(test_sentence_without_token),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
