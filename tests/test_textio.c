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
    zb_io_reader_t *r = zb_io_reader_new(f, ZB_IO_IN_LINES);
    zb_io_item_t it = {0};
    const char *want[] = {"one", "two", "", "three\xff", "last"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(zb_io_read(r, &it), 1);
        assert_non_null(it.text);
        assert_int_equal(it.len, strlen(want[i]));
        assert_memory_equal(it.text, want[i], it.len);
    }
    assert_int_equal(zb_io_read(r, &it), 0);
    zb_io_item_clear(&it);
    zb_io_reader_destroy(&r);
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
    zb_io_reader_t *r = zb_io_reader_new(f, ZB_IO_IN_JSONL);
    zb_io_item_t it = {0};
    assert_int_equal(zb_io_read(r, &it), 1);
    assert_string_equal(it.text, "a\nb");
    assert_int_equal(zb_io_read(r, &it), 1);
    assert_null(it.text);
    assert_string_equal(it.error, "bad JSON");
    assert_int_equal(zb_io_read(r, &it), 1);
    assert_null(it.text);
    assert_non_null(strstr(it.error, "\"text\""));
    assert_int_equal(zb_io_read(r, &it), 1);
    assert_null(it.text);
    assert_int_equal(zb_io_read(r, &it), 1);
    assert_string_equal(it.text, "\xc3\xa9\xf0\x9f\x98\x80");
    assert_int_equal(zb_io_read(r, &it), 0);
    zb_io_item_clear(&it);
    zb_io_reader_destroy(&r);
    fclose(f);
}

/* Writes t with a new writer into a memory buffer; returns it (caller frees). */
static char *s_write(zb_io_format_t fmt, zb_io_level_t level, bool tok_only, const zb_io_text_t *t,
                     size_t n, size_t *len) {
    FILE *f = tmpfile(); /* seekable, like a redirected stdout */
    assert_non_null(f);
    zb_io_writer_t *w = zb_io_writer_new(f, fmt, level, tok_only, false, 2);
    assert_non_null(w);
    for (size_t i = 0; i < n; i++) assert_int_equal(zb_io_write(w, &t[i]), 0);
    assert_int_equal(zb_io_writer_finish(w), 0);
    zb_io_writer_destroy(&w);
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
    zb_io_text_t t = {.index = 7, .text = text, .text_len = strlen(text), .n_rows = 2, .dim = 2,
                      .vectors = v, .offsets = off, .byte_offsets = boff, .ids = ids};
    size_t len;
    char *s = s_write(ZB_IO_OUT_JSONL, ZB_IO_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"tokens\":["
                           "{\"text\":\"a\",\"begin\":0,\"end\":1,\"vector\":[1,-0.100000001]},"
                           "{\"text\":\"\\\"q\\\"\",\"begin\":2,\"end\":5,"
                           "\"vector\":[3.40282347e+38,1.40129846e-45]}]}\n");
    free(s);
    t.truncated = true;
    s = s_write(ZB_IO_OUT_JSONL, ZB_IO_WORDPIECE, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"truncated\":true,\"ids\":[101,102],"
                           "\"offsets\":[[0,1],[2,5]],"
                           "\"vectors\":[[1,-0.100000001],[3.40282347e+38,1.40129846e-45]]}\n");
    free(s);
    s = s_write(ZB_IO_OUT_JSONL, ZB_IO_WORDPIECE, true, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"truncated\":true,\"ids\":[101,102],"
                           "\"offsets\":[[0,1],[2,5]]}\n");
    free(s);
    t.n_rows = 1;
    t.truncated = false;
    s = s_write(ZB_IO_OUT_JSONL, ZB_IO_SENTENCE, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":7,\"vector\":[1,-0.100000001]}\n");
    free(s);
    zb_io_text_t bad = {.index = 8, .error = "invalid \"UTF-8\"\n"};
    s = s_write(ZB_IO_OUT_JSONL, ZB_IO_SENTENCE, false, &bad, 1, &len);
    assert_string_equal(s, "{\"index\":8,\"error\":\"invalid \\\"UTF-8\\\"\\n\"}\n");
    free(s);
    /* control characters in a token's text are escaped */
    uint32_t ctl[] = {5, 7};
    zb_io_text_t c = t;
    c.offsets = ctl;
    c.byte_offsets = ctl;
    s = s_write(ZB_IO_OUT_JSONL, ZB_IO_TOKEN, false, &c, 1, &len);
    assert_non_null(strstr(s, "\"text\":\"\\t\\u0001\""));
    free(s);
}

static void test_npy(void **st) {
    (void)st;
    float v[2][2] = {{1, 2}, {3, 4}};
    zb_io_text_t t[3] = {
        {.index = 0, .n_rows = 1, .dim = 2, .vectors = v[0]},
        {.index = 1, .error = "bad"},
        {.index = 2, .n_rows = 1, .dim = 2, .vectors = v[1]},
    };
    size_t len;
    char *s = s_write(ZB_IO_OUT_NPY, ZB_IO_SENTENCE, false, t, 3, &len);
    assert_int_equal(len, 128 + 3 * 2 * 4);
    assert_memory_equal(s, "\x93NUMPY\x01\x00\x76\x00", 10);
    assert_non_null(strstr(s + 10, "'shape': (3, 2)"));
    assert_int_equal(s[127], '\n');
    float rows[6];
    memcpy(rows, s + 128, sizeof rows);
    assert_true(rows[0] == 1 && rows[1] == 2 && isnan(rows[2]) && isnan(rows[3]) &&
                rows[4] == 3 && rows[5] == 4);
    free(s);
    /* npy holds sentence vectors only */
    assert_null(zb_io_writer_new(stdout, ZB_IO_OUT_NPY, ZB_IO_TOKEN, false, false, 2));
    assert_null(zb_io_writer_new(stdout, ZB_IO_OUT_NPY, ZB_IO_SENTENCE, false, false, 0));
}

/* Token metadata in JSONL, the Spark NLP annotation shape, sentence spans. */
static void test_sparknlp_json(void **st) {
    (void)st;
    const char *text = "\xf0\x9f\x98\x80 NLP"; /* an emoji: 4 bytes, 2 UTF-16 units */
    float v[] = {0.5f, -2.0f};
    uint32_t off[] = {2, 5}, boff[] = {5, 8};
    zb_io_token_meta_t m = {.sentence = 1, .piece_id = 21239, .begin16 = 3, .end16 = 5,
                            .word_start = true};
    zb_io_text_t t = {.index = 3, .text = text, .text_len = strlen(text), .n_rows = 1, .dim = 2,
                      .vectors = v, .offsets = off, .byte_offsets = boff, .meta = &m};
    size_t len;
    char *s = s_write(ZB_IO_OUT_JSONL, ZB_IO_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":3,\"tokens\":[{\"text\":\"NLP\",\"begin\":2,\"end\":5,"
                           "\"sentence\":1,\"pieceId\":21239,\"isWordStart\":true,"
                           "\"isOOV\":false,\"vector\":[0.5,-2]}]}\n");
    free(s);
    s = s_write(ZB_IO_OUT_SPARKNLP_JSON, ZB_IO_TOKEN, false, &t, 1, &len);
    assert_string_equal(s, "{\"index\":3,\"annotations\":[{\"annotatorType\":\"word_embeddings\","
                           "\"begin\":3,\"end\":5,\"result\":\"NLP\",\"metadata\":{"
                           "\"sentence\":\"1\",\"token\":\"NLP\",\"pieceId\":\"21239\","
                           "\"isWordStart\":\"true\",\"isOOV\":\"false\"},"
                           "\"embeddings\":[0.5,-2]}]}\n");
    free(s);
    /* without metadata: UTF-16 offsets from the text, sentence 0, pieceId -1 */
    t.meta = NULL;
    s = s_write(ZB_IO_OUT_SPARKNLP_JSON, ZB_IO_TOKEN, false, &t, 1, &len);
    assert_non_null(strstr(s, "\"begin\":3,\"end\":5,"));
    assert_non_null(strstr(s, "\"sentence\":\"0\""));
    assert_non_null(strstr(s, "\"pieceId\":\"-1\""));
    free(s);
    zb_io_text_t bad = {.index = 4, .error = "no"};
    s = s_write(ZB_IO_OUT_SPARKNLP_JSON, ZB_IO_TOKEN, false, &bad, 1, &len);
    assert_string_equal(s, "{\"index\":4,\"error\":\"no\"}\n");
    free(s);
    /* the shape exists at token level only */
    assert_null(zb_io_writer_new(stdout, ZB_IO_OUT_SPARKNLP_JSON, ZB_IO_SENTENCE, false, false, 2));
    assert_null(zb_io_writer_new(stdout, ZB_IO_OUT_SPARKNLP_JSON, ZB_IO_TOKEN, true, false, 2));

    FILE *f = tmpfile();
    uint32_t spans[] = {0, 12, 13, 20};
    zb_io_write_sentence_spans(f, 0, spans, 2, NULL);
    zb_io_write_sentence_spans(f, 1, NULL, 0, NULL);
    zb_io_write_sentence_spans(f, 2, NULL, 0, "bad \"x\"");
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
        cmocka_unit_test(test_read_lines),
        cmocka_unit_test(test_read_jsonl),
        cmocka_unit_test(test_jsonl_levels),
        cmocka_unit_test(test_npy),
        cmocka_unit_test(test_sparknlp_json),
    };
    return cmocka_run_group_tests_name("textio", tests, NULL, NULL);
}
