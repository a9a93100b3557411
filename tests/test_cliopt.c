/*
 * test_cliopt.c -- client/cli/cliopt, the embedding options zbert-embed and
 * `zbert embed` share: every flag and value, the defaults that depend on
 * other options (npy's level, windows at the token level), the refusals
 * with their messages, that arguments not its own are left alone, and that
 * its table spells every value as options.h does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cliopt.h"

/* stderr of the code under test, captured into a temporary file. */
static FILE *s_err;
static int s_saved = -1;

static void s_capture(void) {
    fflush(stderr);
    s_err = tmpfile();
    assert_non_null(s_err);
    s_saved = dup(2);
    dup2(fileno(s_err), 2);
}

/* Restores stderr; returns what was written (static buffer). */
static const char *s_captured(void) {
    static char buf[1024];
    fflush(stderr);
    dup2(s_saved, 2);
    close(s_saved);
    rewind(s_err);
    size_t n = fread(buf, 1, sizeof buf - 1, s_err);
    buf[n] = '\0';
    fclose(s_err);
    return buf;
}

/* A program's own options next to the shared ones: "--tokenize-only" and
 * "--mine V". */
typedef struct s_own {
    char mine[16];
} s_own_t;

/* Parses the words of line (space separated) as a program does: the shared
 * table and hook with a table of the program's own, then zb_cliopt_finish;
 * a refusal is printed as "prog: <why>" (one line), as the programs do.
 * Returns 0 or -1; *msg gets stderr, which holds only that line. */
static int s_parse(const char *line, zb_cliopt_t *o, const char **msg) {
    char buf[512];
    snprintf(buf, sizeof buf, "prog %s", line);
    char *argv[32];
    int argc = 0;
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t && argc < 32;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    static const zb_settings_t own[] = {
        {.name = "tokenize-only",
         .kind = ZB_SETTINGS_FLAG,
         ZB_SETTINGS_AT(zb_cliopt_t, opt.tokenize_only),
         .help = "pieces only"},
        {.name = "mine",
         .kind = ZB_SETTINGS_STRING,
         ZB_SETTINGS_AT(s_own_t, mine),
         .max = 15,
         .help = "the program's own"},
    };
    s_own_t mine;
    memset(&mine, 0, sizeof mine);
    zb_cliopt_init(o);
    size_t n;
    const zb_settings_t *table = zb_cliopt_table(&n);
    const zb_settings_group_t groups[] = {
        {table, n, o, true}, {&own[0], 1, o, true}, {&own[1], 1, &mine, true}};
    const zb_settings_program_t p = {.name = "prog",
                                     .groups = groups,
                                     .n_groups = 3,
                                     .hook = zb_cliopt_hook,
                                     .hook_ctx = o,
                                     .hook_help = zb_cliopt_hook_help};
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    s_capture();
    int rc = zb_settings_parse(&p, argc, argv, &res, &d);
    if (rc == 0) rc = zb_cliopt_finish(o, &p, &res, &d);
    zb_settings_release(&p);
    if (rc != 0) fprintf(stderr, "prog: %s\n", zb_diag_text(&d, rc));
    *msg = s_captured();
    return rc == 0 ? 0 : -1;
}

static void test_defaults(void **st) {
    (void)st;
    zb_cliopt_t o, z;
    const char *msg;
    assert_int_equal(s_parse("", &o, &msg), 0);
    assert_string_equal(msg, "");
    assert_int_equal(o.opt.level, ZB_LEVEL_TOKEN);
    assert_true(o.opt.windows); /* token level: every token gets a vector */
    assert_false(o.windows_set || o.level_set || o.opt.sentences || o.opt.token_meta);
    assert_int_equal(o.opt.pooling, ZB_POOLING_CLS);
    assert_int_equal(o.opt.token_vector, ZB_TOKEN_VECTOR_FIRST);
    assert_int_equal(o.opt.compat, ZB_COMPAT_NONE);
    assert_false(o.opt.normalize || o.opt.tokenize_only);
    assert_int_equal(o.input, ZB_TEXTIO_IN_LINES);
    assert_int_equal(o.output, ZB_TEXTIO_OUT_JSONL);
    memset(&z, 0, sizeof z);
    zb_cliopt_init(&o);
    assert_memory_equal(&o, &z, sizeof o); /* zero is the default */
}

static void test_every_option(void **st) {
    (void)st;
    zb_cliopt_t o;
    const char *msg;
    assert_int_equal(s_parse("--level sentence --pooling mean --normalize --windows "
                             "--input-format jsonl --format npy --mine x",
                             &o, &msg),
                     0);
    assert_int_equal(o.opt.level, ZB_LEVEL_SENTENCE);
    assert_true(o.level_set && (o.opt.pooling == ZB_POOLING_MEAN) && o.opt.normalize &&
                o.opt.windows && o.windows_set);
    assert_int_equal(o.input, ZB_TEXTIO_IN_JSONL);
    assert_int_equal(o.output, ZB_TEXTIO_OUT_NPY);
    assert_int_equal(s_parse("--level wordpiece --sentences --truncate --format table", &o, &msg),
                     0);
    assert_int_equal(o.opt.level, ZB_LEVEL_WORDPIECE);
    assert_true(o.opt.sentences && o.windows_set && !o.opt.windows);
    assert_int_equal(o.output, ZB_TEXTIO_OUT_TABLE);
    /* the last word wins, as with any flag given twice */
    assert_int_equal(s_parse("--windows --truncate --pooling mean --pooling cls", &o, &msg), 0);
    assert_false(o.opt.windows);
    assert_int_equal(o.opt.pooling, ZB_POOLING_CLS);
    assert_int_equal(
        s_parse("--token-vector mean --compat sparknlp --format sparknlp-json", &o, &msg), 0);
    assert_int_equal(o.opt.token_vector, ZB_TOKEN_VECTOR_MEAN);
    assert_int_equal(o.opt.compat, ZB_COMPAT_SPARKNLP);
    assert_true(o.opt.token_meta);
    assert_false(o.opt.windows); /* Spark NLP has its own cap */
    assert_int_equal(o.output, ZB_TEXTIO_OUT_SPARKNLP_JSON);
    assert_int_equal(s_parse("--token-vector first --compat none --sentences", &o, &msg), 0);
    assert_int_equal(o.opt.token_vector, ZB_TOKEN_VECTOR_FIRST);
    assert_int_equal(o.opt.compat, ZB_COMPAT_NONE);
    assert_false(o.opt.token_meta);
    assert_true(o.opt.sentences && o.opt.windows);
    /* windows stay off where truncation is the default */
    assert_int_equal(s_parse("--level wordpiece", &o, &msg), 0);
    assert_false(o.opt.windows);
    assert_int_equal(s_parse("--tokenize-only", &o, &msg), 0);
    assert_false(o.opt.windows);
    /* npy without a level is the sentence level */
    assert_int_equal(s_parse("--format npy", &o, &msg), 0);
    assert_int_equal(o.opt.level, ZB_LEVEL_SENTENCE);
}

/* Arguments that are not shared options are not consumed: the hook leaves
 * them, and a parse with the shared table alone refuses them. */
static void test_not_mine(void **st) {
    (void)st;
    zb_cliopt_t o;
    zb_cliopt_init(&o);
    char *argv[] = {"prog", "--model", "x", "--levels", "-o", "--format"};
    size_t n;
    const zb_settings_t *table = zb_cliopt_table(&n);
    const zb_settings_group_t group = {table, n, &o, true};
    const zb_settings_program_t p = {
        .name = "prog", .groups = &group, .n_groups = 1, .hook = zb_cliopt_hook, .hook_ctx = &o};
    for (int i = 1; i < 5; i++) {
        int at = i;
        zb_diag_t d = {{0}};
        assert_int_equal(zb_cliopt_hook(&o, 6, argv, &at, &d), 0);
        assert_int_equal(at, i);
        char *one[] = {"prog", argv[i]};
        zb_settings_result_t res;
        assert_int_equal(zb_settings_parse(&p, 2, one, &res, &d), ZB_EINVAL);
        assert_non_null(strstr(d.msg, argv[i][0] == '-' ? "unknown option" : "unexpected"));
    }
    zb_settings_release(&p);
}

/* The table is well formed and its choices are options.h's names, each
 * stored as the value options.h reads from it. */
static void test_table(void **st) {
    (void)st;
    size_t n;
    const zb_settings_t *table = zb_cliopt_table(&n);
    zb_diag_t d = {{0}};
    assert_int_equal(zb_settings_check(table, n, &d), 0);
    int checked = 0;
    for (size_t k = 0; k < n; k++) {
        const zb_settings_t *s = &table[k];
        for (int c = 0; s->kind == ZB_SETTINGS_ENUM && s->choices[c]; c++) {
            const char *v = s->choices[c];
            int want = s->values ? s->values[c] : c, got = -1, rc = 0;
            if (!strcmp(s->name, "level")) {
                zb_level_t x;
                rc = zb_options_level_parse(v, strlen(v), &x, NULL);
                got = (int)x;
            } else if (!strcmp(s->name, "pooling")) {
                zb_pooling_t x;
                rc = zb_options_pooling_parse(v, strlen(v), &x, NULL);
                got = (int)x;
            } else if (!strcmp(s->name, "token-vector")) {
                zb_token_vector_t x;
                rc = zb_options_token_vector_parse(v, strlen(v), &x, NULL);
                got = (int)x;
            } else if (!strcmp(s->name, "compat")) {
                zb_compat_t x;
                rc = zb_options_compat_parse(v, strlen(v), &x, NULL);
                got = (int)x;
            } else {
                continue; /* the formats are the command line's own */
            }
            if (rc != 0 || got != want) fail_msg("--%s %s: not options.h's", s->name, v);
            checked++;
        }
    }
    assert_int_equal(checked, 3 + 2 + 2 + 2);
}

static void test_refusals(void **st) {
    (void)st;
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"--level char", "prog: --level: `char` is not one of wordpiece, token, sentence\n"},
        {"--pooling max", "prog: --pooling: `max` is not one of cls, mean\n"},
        {"--token-vector last", "prog: --token-vector: `last` is not one of first, mean\n"},
        {"--compat spark", "prog: --compat: `spark` is not one of none, sparknlp\n"},
        {"--format csv", "prog: --format: `csv` is not one of jsonl, npy, table, sparknlp-json\n"},
        {"--input-format xml", "prog: --input-format: `xml` is not one of lines, jsonl\n"},
        {"--format", "prog: --format needs a value\n"},
        {"--compat", "prog: --compat needs a value\n"},
        {"--format npy --level token",
         "prog: --format npy holds one sentence vector per text; use it with --level "
         "sentence\n"},
        {"--format npy --tokenize-only", "prog: --format npy holds one sentence vector"},
        {"--compat sparknlp --level wordpiece",
         "prog: --compat sparknlp gives token vectors (Spark NLP's BertEmbeddings); use it "
         "with --level token\n"},
        {"--format sparknlp-json --level sentence",
         "prog: --format sparknlp-json writes token annotations; use it with --level token "
         "and without --tokenize-only\n"},
        {"--format sparknlp-json --tokenize-only", "prog: --format sparknlp-json writes"},
        {"--sentences --level sentence",
         "prog: --sentences applies to the token and wordpiece levels\n"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        zb_cliopt_t o;
        const char *msg;
        int rc = s_parse(cases[k].line, &o, &msg);
        if (rc != -1) fail_msg("`%s` was accepted", cases[k].line);
        if (strncmp(msg, cases[k].msg, strlen(cases[k].msg)) != 0)
            fail_msg("`%s`: message `%s`, expected `%s`", cases[k].line, msg, cases[k].msg);
        assert_non_null(strchr(msg, '\n'));
        assert_ptr_equal(strchr(msg, '\n'), msg + strlen(msg) - 1); /* one line */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_not_mine), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests_name("cliopt", tests, NULL, NULL);
}
