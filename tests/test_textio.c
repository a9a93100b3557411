/*
 * test_textio.c -- input reading and output formats of the command-line
 * tools, on in-memory streams.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "textio.h"

static FILE *s_input(const char *data, size_t n) {
    FILE *f = fmemopen((void *)data, n, "r");
    assert_non_null(f);
    return f;
}

static void test_read_lines(void **st) {
    (void)st;
    static const char in[] = "one\r\ntwo\n\nthree\xff\nlast";
    FILE *f = s_input(in, sizeof in - 1);
    zb_textio_reader_t *r = zb_textio_reader_new(f, ZB_TEXTIO_IN_LINES);
    zb_textio_item_t it = {0};
    const char *want[] = {"one", "two", "", "three\xff", "last"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(zb_textio_read(r, &it), 1);
        assert_non_null(it.text);
        assert_int_equal(it.len, strlen(want[i]));
        assert_memory_equal(it.text, want[i], it.len);
    }
    assert_int_equal(zb_textio_read(r, &it), 0);
    zb_textio_item_clear(&it);
    zb_textio_reader_destroy(&r);
    assert_null(r);
    fclose(f);
}

static void test_read_jsonl(void **st) {
    (void)st;
    static const char in[] = "{\"text\":\"a\\nb\",\"id\":3}\n"
                             "not json\n"
                             "{\"text\":5}\n"
                             "[\"text\"]\n"
                             "{\"text\":\"\\u00e9\\ud83d\\ude00\"}\n";
    FILE *f = s_input(in, sizeof in - 1);
    zb_textio_reader_t *r = zb_textio_reader_new(f, ZB_TEXTIO_IN_JSONL);
    zb_textio_item_t it = {0};
    assert_int_equal(zb_textio_read(r, &it), 1);
    assert_string_equal(it.text, "a\nb");
    assert_int_equal(zb_textio_read(r, &it), 1);
    assert_null(it.text);
    assert_string_equal(it.error, "bad JSON");
    assert_int_equal(zb_textio_read(r, &it), 1);
    assert_null(it.text);
    assert_non_null(strstr(it.error, "\"text\""));
    assert_int_equal(zb_textio_read(r, &it), 1);
    assert_null(it.text);
    assert_int_equal(zb_textio_read(r, &it), 1);
    assert_string_equal(it.text, "\xc3\xa9\xf0\x9f\x98\x80");
    assert_int_equal(zb_textio_read(r, &it), 0);
    zb_textio_item_clear(&it);
    zb_textio_reader_destroy(&r);
    fclose(f);
}

/* Reads the single JSONL line in (n bytes) into *it; returns zb_textio_read's result. */
static int s_read_one(const char *in, size_t n, zb_textio_item_t *it) {
    FILE *f = s_input(in, n);
    zb_textio_reader_t *r = zb_textio_reader_new(f, ZB_TEXTIO_IN_JSONL);
    assert_non_null(r);
    int rc = zb_textio_read(r, it);
    zb_textio_reader_destroy(&r);
    fclose(f);
    return rc;
}

#define S_READ_OK(line, want)                                                                      \
    do {                                                                                           \
        zb_textio_item_t it_ = {0};                                                                \
        assert_int_equal(s_read_one(line, sizeof line - 1, &it_), 1);                              \
        if (it_.text == NULL) fail_msg("%s: %s", line, it_.error);                                 \
        assert_int_equal(it_.len, sizeof want - 1);                                                \
        assert_memory_equal(it_.text, want, sizeof want - 1);                                      \
        assert_int_equal(it_.text[it_.len], '\0');                                                 \
        zb_textio_item_clear(&it_);                                                                \
    } while (0)

#define S_READ_ERR(line, msg_part)                                                                 \
    do {                                                                                           \
        zb_textio_item_t it_ = {0};                                                                \
        assert_int_equal(s_read_one(line, sizeof line - 1, &it_), 1);                              \
        assert_null(it_.text);                                                                     \
        if (strstr(it_.error, msg_part) == NULL)                                                   \
            fail_msg("%s: error \"%s\" lacks \"%s\"", line, it_.error, msg_part);                  \
    } while (0)

/* The "text" value is decoded with its length: escaped NULs are kept. */
static void test_read_jsonl_strings(void **st) {
    (void)st;
    S_READ_OK("{\"text\":\"nul\\u0000char\"}", "nul\0char");
    S_READ_OK("{\"text\":\"\\u0000\"}", "\0");
    S_READ_OK("{\"text\":\"a\\u0000\\u0000b\\u0000\"}", "a\0\0b\0");
    S_READ_OK("{\"text\":\"\"}", "");
    S_READ_OK("{\"text\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}", "\"\\/\b\f\n\r\t");
    S_READ_OK("{\"text\":\"\\u0041\\u00e9\\u20AC\\uffff\"}", "A\xc3\xa9\xe2\x82\xac\xef\xbf\xbf");
    /* surrogate pairs: the lowest and highest supplementary code points */
    S_READ_OK("{\"text\":\"\\ud800\\udc00|\\uDBFF\\uDFFF\"}", "\xf0\x90\x80\x80|\xf4\x8f\xbf\xbf");
    S_READ_OK("{\"text\":\"x\\ud83d\\ude00y\"}", "x\xf0\x9f\x98\x80y");
    /* raw UTF-8 passes through unchanged */
    S_READ_OK("{\"text\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}", "caf\xc3\xa9 \xf0\x9f\x98\x80");
    /* a lone surrogate has no UTF-8 form: the line is refused, saying why */
    S_READ_ERR("{\"text\":\"a\\ud800b\"}", "lone UTF-16 surrogate \\uD800");
    S_READ_ERR("{\"text\":\"a\\udc00\"}", "lone UTF-16 surrogate \\uDC00");
    S_READ_ERR("{\"text\":\"\\ud83d\"}", "lone UTF-16 surrogate \\uD83D");
    S_READ_ERR("{\"text\":\"\\ud83d\\u0041\"}", "lone UTF-16 surrogate \\uD83D");
    S_READ_ERR("{\"text\":\"\\ude00\\ud83d\"}", "lone UTF-16 surrogate \\uDE00");
    S_READ_ERR("{\"text\":\"\\x\"}", "bad JSON");
    S_READ_ERR("{\"text\":\"\\u12\"}", "bad JSON");
    S_READ_ERR("{\"text\":\"open}", "bad JSON");
}

/* Where "text" is in the object, and what is around it. */
static void test_read_jsonl_members(void **st) {
    (void)st;
    /* nested objects and arrays before "text", with "text" keys, brackets
     * and quotes inside them, are skipped whole */
    S_READ_OK("{\"meta\":{\"text\":\"inner\",\"a\":[1,{\"b\":\"}]\\\"\"}]},"
              "\"list\":[[\"text\"],{}],\"text\":\"outer\"}",
              "outer");
    S_READ_OK("{\"n\":-1.5e3,\"t\":true,\"f\":false,\"z\":null,\"text\":\"v\",\"after\":[1]}", "v");
    S_READ_OK(" \t{ \"text\" : \"sp\\u0000aced\" , \"x\" : [ ] } \t\r\n", "sp\0aced");
    /* the name is compared decoded and whole */
    S_READ_OK("{\"t\\u0065xt\":\"escaped name\"}", "escaped name");
    S_READ_OK("{\"text\\u0000\":\"other\",\"texts\":\"other\",\"Text\":\"other\","
              "\"text\":\"this\"}",
              "this");
    S_READ_ERR("{\"text\\u0000\":\"not it\"}", "no string field \"text\"");
    S_READ_ERR("{\"inner\":{\"text\":\"nested only\"}}", "no string field \"text\"");
    S_READ_ERR("{}", "no string field \"text\"");
    S_READ_ERR("{\"text\":null}", "no string field \"text\"");
    S_READ_ERR("{\"text\":[\"a\"]}", "no string field \"text\"");
    S_READ_ERR("\"text\"", "no string field \"text\"");
    /* a duplicate "text" is ambiguous: refused, however it is spelled */
    S_READ_ERR("{\"text\":\"a\",\"text\":\"b\"}", "more than one field \"text\"");
    S_READ_ERR("{\"text\":\"a\",\"x\":1,\"te\\u0078t\":\"a\"}", "more than one field \"text\"");
    /* one object per line */
    S_READ_ERR("{\"text\":\"a\"} {\"text\":\"b\"}", "bad JSON");
    S_READ_ERR("{\"text\":\"a\"", "bad JSON");
    S_READ_ERR("{\"text\" \"a\"}", "bad JSON");
    S_READ_ERR("\n", "bad JSON"); /* an empty line */
}

/* Writes t with a new writer into a memory buffer; returns it (caller frees). */
static char *s_write(zb_textio_format_t fmt, zb_level_t level, bool tok_only,
                     const zb_textio_text_t *t, size_t n, size_t *len) {
    FILE *f = tmpfile(); /* seekable, like a redirected stdout */
    assert_non_null(f);
    zb_options_t o = {.level = level, .tokenize_only = tok_only};
    zb_textio_writer_t *w = zb_textio_writer_new(f, fmt, &o, 2);
    assert_non_null(w);
    for (size_t i = 0; i < n; i++) assert_int_equal(zb_textio_write(w, &t[i]), 0);
    assert_int_equal(zb_textio_writer_finish(w), 0);
    zb_textio_writer_destroy(&w);
    long end = ftell(f);
    assert_true(end >= 0);
    *len = (size_t)end;
    char *buf = calloc(1, *len + 1);
    rewind(f);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void test_jsonl_levels(void **st) {
    (void)st;
    const char *text = "a \"q\"\t\x01";
    float v[] = {1.0f, -0.1f, 3.4028235e38f, 1e-45f};
    uint32_t off[] = {0, 1, 2, 5}, boff[] = {0, 1, 2, 5};
    int32_t ids[] = {101, 102};
    zb_textio_text_t t = {.index = 7,
                          .text = text,
                          .text_len = strlen(text),
                          .n_rows = 2,
                          .dim = 2,
                          .vectors = v,
                          .offsets = off,
                          .byte_offsets = boff,
                          .ids = ids};
    size_t len;
    char *s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"tokens\":["
                           "{\"text\":\"a\",\"begin\":0,\"end\":1,\"vector\":[1,-0.100000001]},"
                           "{\"text\":\"\\\"q\\\"\",\"begin\":2,\"end\":5,"
                           "\"vector\":[3.40282347e+38,1.40129846e-45]}]}\n");
    free(s);
    t.truncated = true;
    s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_WORDPIECE, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"truncated\":true,\"ids\":[101,102],"
                           "\"offsets\":[[0,1],[2,5]],"
                           "\"vectors\":[[1,-0.100000001],[3.40282347e+38,1.40129846e-45]]}\n");
    free(s);
    s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_WORDPIECE, true, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"truncated\":true,\"ids\":[101,102],"
                           "\"offsets\":[[0,1],[2,5]]}\n");
    free(s);
    t.n_rows = 1;
    t.truncated = false;
    s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_SENTENCE, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"vector\":[1,-0.100000001]}\n");
    free(s);
    zb_textio_text_t bad = {.index = 8, .error = "invalid \"UTF-8\"\n"};
    s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_SENTENCE, false, &bad, 1, &len);
    assert_string_equal(s, "{\"index\":8,\"error\":\"invalid \\\"UTF-8\\\"\\n\"}\n");
    free(s);
    /* control characters in a token's text are escaped */
    uint32_t ctl[] = {5, 7};
    zb_textio_text_t c = t;
    c.offsets = ctl;
    c.byte_offsets = ctl;
    s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN, false, &c, 1, &len);
    assert_non_null(strstr(s, "\"text\":\"\\t\\u0001\""));
    free(s);
}

static void test_npy(void **st) {
    (void)st;
    float v[2][2] = {{1, 2}, {3, 4}};
    zb_textio_text_t t[3] = {
        {.index = 0, .n_rows = 1, .dim = 2, .vectors = v[0]},
        {.index = 1, .error = "bad"},
        {.index = 2, .n_rows = 1, .dim = 2, .vectors = v[1]},
    };
    size_t len;
    char *s = s_write(ZB_TEXTIO_OUT_NPY, ZB_LEVEL_SENTENCE, false, t, 3, &len);
    assert_int_equal(len, 128 + 3 * 2 * 4);
    assert_memory_equal(s, "\x93NUMPY\x01\x00\x76\x00", 10);
    assert_non_null(strstr(s + 10, "'shape': (3, 2)"));
    assert_int_equal(s[127], '\n');
    float rows[6];
    memcpy(rows, s + 128, sizeof rows);
    assert_true(rows[0] == 1 && rows[1] == 2 && isnan(rows[2]) && isnan(rows[3]) && rows[4] == 3 &&
                rows[5] == 4);
    free(s);
    /* npy holds sentence vectors only */
    zb_options_t tok = {.level = ZB_LEVEL_TOKEN}, sent = {.level = ZB_LEVEL_SENTENCE};
    assert_null(zb_textio_writer_new(stdout, ZB_TEXTIO_OUT_NPY, &tok, 2));
    assert_null(zb_textio_writer_new(stdout, ZB_TEXTIO_OUT_NPY, &sent, 0));
}

/* Token metadata in JSONL, the Spark NLP annotation shape, sentence spans. */
static void test_sparknlp_json(void **st) {
    (void)st;
    const char *text = "\xf0\x9f\x98\x80 NLP"; /* an emoji: 4 bytes, 2 UTF-16 units */
    float v[] = {0.5f, -2.0f};
    uint32_t off[] = {2, 5}, boff[] = {5, 8};
    zb_token_meta_t m = {
        .sentence = 1, .piece_id = 21239, .begin16 = 3, .end16 = 5, .word_start = true};
    zb_textio_text_t t = {.index = 3,
                          .text = text,
                          .text_len = strlen(text),
                          .n_rows = 1,
                          .dim = 2,
                          .vectors = v,
                          .offsets = off,
                          .byte_offsets = boff,
                          .meta = &m};
    size_t len;
    char *s = s_write(ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":3,\"tokens\":[{\"text\":\"NLP\",\"begin\":2,\"end\":5,"
                           "\"sentence\":1,\"pieceId\":21239,\"isWordStart\":true,"
                           "\"isOOV\":false,\"vector\":[0.5,-2]}]}\n");
    free(s);
    s = s_write(ZB_TEXTIO_OUT_SPARKNLP_JSON, ZB_LEVEL_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":3,\"annotations\":[{\"annotatorType\":\"word_embeddings\","
                           "\"begin\":3,\"end\":5,\"result\":\"NLP\",\"metadata\":{"
                           "\"sentence\":\"1\",\"token\":\"NLP\",\"pieceId\":\"21239\","
                           "\"isWordStart\":\"true\",\"isOOV\":\"false\"},"
                           "\"embeddings\":[0.5,-2]}]}\n");
    free(s);
    /* without metadata: UTF-16 offsets from the text, sentence 0, pieceId -1 */
    t.meta = NULL;
    s = s_write(ZB_TEXTIO_OUT_SPARKNLP_JSON, ZB_LEVEL_TOKEN, false, &t, 1, &len);
    assert_non_null(strstr(s, "\"begin\":3,\"end\":5,"));
    assert_non_null(strstr(s, "\"sentence\":\"0\""));
    assert_non_null(strstr(s, "\"pieceId\":\"-1\""));
    free(s);
    zb_textio_text_t bad = {.index = 4, .error = "no"};
    s = s_write(ZB_TEXTIO_OUT_SPARKNLP_JSON, ZB_LEVEL_TOKEN, false, &bad, 1, &len);
    assert_string_equal(s, "{\"index\":4,\"error\":\"no\"}\n");
    free(s);
    /* the shape exists at token level only */
    zb_options_t sent = {.level = ZB_LEVEL_SENTENCE};
    zb_options_t tok_only = {.level = ZB_LEVEL_TOKEN, .tokenize_only = true};
    assert_null(zb_textio_writer_new(stdout, ZB_TEXTIO_OUT_SPARKNLP_JSON, &sent, 2));
    assert_null(zb_textio_writer_new(stdout, ZB_TEXTIO_OUT_SPARKNLP_JSON, &tok_only, 2));

    FILE *f = tmpfile();
    uint32_t spans[] = {0, 12, 13, 20};
    zb_textio_write_sentence_spans(f, 0, spans, 2, NULL);
    zb_textio_write_sentence_spans(f, 1, NULL, 0, NULL);
    zb_textio_write_sentence_spans(f, 2, NULL, 0, "bad \"x\"");
    long end = ftell(f);
    char buf[256] = {0};
    rewind(f);
    assert_int_equal(fread(buf, 1, (size_t)end, f), (size_t)end);
    fclose(f);
    assert_string_equal(buf, "{\"index\":0,\"sentence_spans\":[[0,12],[13,20]]}\n"
                             "{\"index\":1,\"sentence_spans\":[]}\n"
                             "{\"index\":2,\"error\":\"bad \\\"x\\\"\"}\n");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_lines),         cmocka_unit_test(test_read_jsonl),
        cmocka_unit_test(test_read_jsonl_strings), cmocka_unit_test(test_read_jsonl_members),
        cmocka_unit_test(test_jsonl_levels),       cmocka_unit_test(test_npy),
        cmocka_unit_test(test_sparknlp_json),
    };
    return cmocka_run_group_tests_name("textio", tests, NULL, NULL);
}
