/*
 * test_options.c -- proto/options, the request options and token metadata
 * every layer shares: each value's name and its parse back (the names are
 * the wire's and the command lines'), the refusals of the parsers, the
 * rules table (zb_options_broken, zb_options_check and its sentences),
 * zb_options_meta and zb_options_equal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "options.h"

/* Every value's name parses back to the value; names are distinct. */
static void test_names_round_trip(void **st) {
    (void)st;
    static const char *const levels[] = {"token", "wordpiece", "sentence"};
    static const char *const poolings[] = {"cls", "mean"};
    static const char *const tokvecs[] = {"first", "mean"};
    static const char *const compats[] = {"none", "sparknlp"};
    assert_int_equal(ZB_LEVEL_COUNT, 3);
    assert_int_equal(ZB_POOLING_COUNT, 2);
    assert_int_equal(ZB_TOKEN_VECTOR_COUNT, 2);
    assert_int_equal(ZB_COMPAT_COUNT, 2);
    for (int k = 0; k < ZB_LEVEL_COUNT; k++) {
        zb_level_t v = ZB_LEVEL_COUNT;
        const char *n = zb_options_level_name((zb_level_t)k);
        assert_string_equal(n, levels[k]);
        assert_int_equal(zb_options_level_parse(n, strlen(n), &v, NULL), 0);
        assert_int_equal(v, k);
    }
    for (int k = 0; k < ZB_POOLING_COUNT; k++) {
        zb_pooling_t v = ZB_POOLING_COUNT;
        const char *n = zb_options_pooling_name((zb_pooling_t)k);
        assert_string_equal(n, poolings[k]);
        assert_int_equal(zb_options_pooling_parse(n, strlen(n), &v, NULL), 0);
        assert_int_equal(v, k);
    }
    for (int k = 0; k < ZB_TOKEN_VECTOR_COUNT; k++) {
        zb_token_vector_t v = ZB_TOKEN_VECTOR_COUNT;
        const char *n = zb_options_token_vector_name((zb_token_vector_t)k);
        assert_string_equal(n, tokvecs[k]);
        assert_int_equal(zb_options_token_vector_parse(n, strlen(n), &v, NULL), 0);
        assert_int_equal(v, k);
    }
    for (int k = 0; k < ZB_COMPAT_COUNT; k++) {
        zb_compat_t v = ZB_COMPAT_COUNT;
        const char *n = zb_options_compat_name((zb_compat_t)k);
        assert_string_equal(n, compats[k]);
        assert_int_equal(zb_options_compat_parse(n, strlen(n), &v, NULL), 0);
        assert_int_equal(v, k);
    }
    /* out of range: "?" */
    assert_string_equal(zb_options_level_name(ZB_LEVEL_COUNT), "?");
    assert_string_equal(zb_options_level_name((zb_level_t)-1), "?");
    assert_string_equal(zb_options_pooling_name(ZB_POOLING_COUNT), "?");
    assert_string_equal(zb_options_token_vector_name(ZB_TOKEN_VECTOR_COUNT), "?");
    assert_string_equal(zb_options_compat_name((zb_compat_t)99), "?");
    /* a name is read with its length: no NUL needed, none looked for */
    zb_level_t lv = ZB_LEVEL_TOKEN;
    assert_int_equal(zb_options_level_parse("sentencexyz", 8, &lv, NULL), 0);
    assert_int_equal(lv, ZB_LEVEL_SENTENCE);
}

/* What the parsers refuse: *out stays as it was, the sentence lists the
 * names. */
static void test_parse_refusals(void **st) {
    (void)st;
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
        {"", 0},       {"Token", 5},    {"token ", 6},       {"tok", 3},
        {"tokens", 6}, {"sentence", 7}, {"word\0piece", 10}, {"TOKEN", 5},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        zb_level_t v = ZB_LEVEL_WORDPIECE;
        zb_diag_t d = {{0}};
        if (zb_options_level_parse(bad[k].s, bad[k].len, &v, &d) != ZB_EINVAL)
            fail_msg("`%.*s` was accepted as a level", (int)bad[k].len, bad[k].s);
        assert_int_equal(v, ZB_LEVEL_WORDPIECE);
        assert_non_null(strstr(d.msg, "is not a level (token, wordpiece, sentence)"));
    }
    zb_diag_t d = {{0}};
    zb_level_t lv = ZB_LEVEL_SENTENCE;
    assert_int_equal(zb_options_level_parse(NULL, 3, &lv, &d), ZB_EINVAL);
    assert_int_equal(lv, ZB_LEVEL_SENTENCE);
    assert_int_equal(zb_options_level_parse(NULL, 0, &lv, NULL), ZB_EINVAL);

    zb_pooling_t p = ZB_POOLING_MEAN;
    assert_int_equal(zb_options_pooling_parse("first", 5, &p, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "`first` is not a pooling (cls, mean)");
    assert_int_equal(p, ZB_POOLING_MEAN);
    zb_token_vector_t tv = ZB_TOKEN_VECTOR_MEAN;
    assert_int_equal(zb_options_token_vector_parse("cls", 3, &tv, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "`cls` is not a token vector (first, mean)");
    assert_int_equal(tv, ZB_TOKEN_VECTOR_MEAN);
    zb_compat_t c = ZB_COMPAT_SPARKNLP;
    assert_int_equal(zb_options_compat_parse("spark", 5, &c, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "`spark` is not a compatibility mode (none, sparknlp)");
    assert_int_equal(c, ZB_COMPAT_SPARKNLP);
    /* a long name is cut in the sentence, not past the buffer */
    char longname[300];
    memset(longname, 'x', sizeof longname);
    assert_int_equal(zb_options_compat_parse(longname, sizeof longname, &c, &d), ZB_EINVAL);
    assert_true(strlen(d.msg) < 100);
}

/* The rules, as a table over every value of every enum field and flag:
 * each combination breaks exactly the rule predicted, the first in order. */
static void test_rules_table(void **st) {
    (void)st;
    int n_ok = 0;
    for (int lv = 0; lv < ZB_LEVEL_COUNT; lv++)
        for (int pool = 0; pool < ZB_POOLING_COUNT; pool++)
            for (int tv = 0; tv < ZB_TOKEN_VECTOR_COUNT; tv++)
                for (int cp = 0; cp < ZB_COMPAT_COUNT; cp++)
                    for (int bits = 0; bits < 32; bits++) {
                        zb_options_t o = {.level = (zb_level_t)lv,
                                          .pooling = (zb_pooling_t)pool,
                                          .normalize = (bits & 1) != 0,
                                          .windows = (bits & 2) != 0,
                                          .sentences = (bits & 4) != 0,
                                          .token_vector = (zb_token_vector_t)tv,
                                          .compat = (zb_compat_t)cp,
                                          .token_meta = (bits & 8) != 0,
                                          .tokenize_only = (bits & 16) != 0};
                        zb_options_rule_t want = ZB_OPTIONS_RULE_NONE;
                        if (cp != ZB_COMPAT_NONE && lv != ZB_LEVEL_TOKEN)
                            want = ZB_OPTIONS_RULE_COMPAT_LEVEL;
                        else if (o.sentences && lv == ZB_LEVEL_SENTENCE)
                            want = ZB_OPTIONS_RULE_SENTENCES_LEVEL;
                        assert_int_equal(zb_options_broken(&o), want);
                        zb_diag_t d = {{0}};
                        int rc = zb_options_check(&o, &d);
                        assert_int_equal(rc, want == ZB_OPTIONS_RULE_NONE ? 0 : ZB_EINVAL);
                        if (rc == 0)
                            n_ok++;
                        else
                            assert_true(d.msg[0] != '\0');
                        /* metadata: token level with sentences, compat or
                         * token_meta, whatever else */
                        assert_int_equal(zb_options_meta(&o),
                                         lv == ZB_LEVEL_TOKEN &&
                                             (o.sentences || o.token_meta || cp != ZB_COMPAT_NONE));
                    }
    /* token: all 256 combinations; wordpiece: compat none (128); sentence:
     * compat none and no sentences (64) */
    assert_int_equal(n_ok, 256 + 128 + 64);
    assert_false(zb_options_meta(NULL));

    /* ranges first, in field order, each with its sentence */
    static const struct {
        zb_options_t o;
        zb_options_rule_t rule;
        const char *msg;
    } bad[] = {
        {{.level = (zb_level_t)3}, ZB_OPTIONS_RULE_LEVEL, "level: 3 is not a level"},
        {{.level = (zb_level_t)-1, .pooling = (zb_pooling_t)7},
         ZB_OPTIONS_RULE_LEVEL,
         "level: -1 is not a level"},
        {{.pooling = (zb_pooling_t)2}, ZB_OPTIONS_RULE_POOLING, "pooling: 2 is not a pooling"},
        {{.token_vector = (zb_token_vector_t)5},
         ZB_OPTIONS_RULE_TOKEN_VECTOR,
         "token_vector: 5 is not a token vector"},
        {{.compat = (zb_compat_t)2},
         ZB_OPTIONS_RULE_COMPAT,
         "compat: 2 is not a compatibility mode"},
        {{.level = ZB_LEVEL_SENTENCE, .compat = (zb_compat_t)9},
         ZB_OPTIONS_RULE_COMPAT,
         "compat: 9 is not a compatibility mode"},
        {{.level = ZB_LEVEL_WORDPIECE, .compat = ZB_COMPAT_SPARKNLP},
         ZB_OPTIONS_RULE_COMPAT_LEVEL,
         "compat: sparknlp gives token vectors, not the wordpiece "
         "level"},
        {{.level = ZB_LEVEL_SENTENCE, .compat = ZB_COMPAT_SPARKNLP, .sentences = true},
         ZB_OPTIONS_RULE_COMPAT_LEVEL,
         "compat: sparknlp gives token vectors, not the sentence "
         "level"},
        {{.level = ZB_LEVEL_SENTENCE, .sentences = true},
         ZB_OPTIONS_RULE_SENTENCES_LEVEL,
         "sentences: applies to the token and wordpiece levels"},
        {{.level = ZB_LEVEL_SENTENCE, .sentences = true, .tokenize_only = true},
         ZB_OPTIONS_RULE_SENTENCES_LEVEL,
         "sentences: applies to the token and wordpiece levels"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        zb_diag_t d = {{0}};
        assert_int_equal(zb_options_broken(&bad[k].o), bad[k].rule);
        assert_int_equal(zb_options_check(&bad[k].o, &d), ZB_EINVAL);
        assert_string_equal(d.msg, bad[k].msg);
        assert_int_equal(zb_options_check(&bad[k].o, NULL), ZB_EINVAL);
    }
}

/* Zero is every default; equality covers every field, tokenize_only too. */
static void test_defaults_and_equal(void **st) {
    (void)st;
    zb_options_t z = {0};
    assert_int_equal(z.level, ZB_LEVEL_TOKEN);
    assert_int_equal(z.pooling, ZB_POOLING_CLS);
    assert_int_equal(z.token_vector, ZB_TOKEN_VECTOR_FIRST);
    assert_int_equal(z.compat, ZB_COMPAT_NONE);
    assert_int_equal(zb_options_check(&z, NULL), 0);
    assert_false(zb_options_meta(&z));
    zb_options_t a = {.level = ZB_LEVEL_TOKEN,
                      .pooling = ZB_POOLING_MEAN,
                      .normalize = true,
                      .windows = true,
                      .sentences = true,
                      .token_vector = ZB_TOKEN_VECTOR_MEAN,
                      .compat = ZB_COMPAT_SPARKNLP,
                      .token_meta = true};
    assert_true(zb_options_equal(&a, &a));
    for (int k = 0; k < 9; k++) {
        zb_options_t b = a;
        assert_true(zb_options_equal(&a, &b));
        switch (k) {
        case 0:
            b.level = ZB_LEVEL_WORDPIECE;
            break;
        case 1:
            b.pooling = ZB_POOLING_CLS;
            break;
        case 2:
            b.normalize = false;
            break;
        case 3:
            b.windows = false;
            break;
        case 4:
            b.sentences = false;
            break;
        case 5:
            b.token_vector = ZB_TOKEN_VECTOR_FIRST;
            break;
        case 6:
            b.compat = ZB_COMPAT_NONE;
            break;
        case 7:
            b.token_meta = false;
            break;
        default:
            b.tokenize_only = true;
            break;
        }
        assert_false(zb_options_equal(&a, &b));
        assert_false(zb_options_equal(&b, &a));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_parse_refusals),
        cmocka_unit_test(test_rules_table),
        cmocka_unit_test(test_defaults_and_equal),
    };
    return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
