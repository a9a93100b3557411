/*
 * test_deploy.c -- the example configs of deploy/ against the programs: every
 * setting of a program's table (as its generated --help lists them) is a
 * key of its example config, every key of the example is a setting, and
 * an example value not commented out is the setting's default (the
 * examples say their values are the defaults).
 *
 * The programs come from $ZB_BIN (default bin); every program whose
 * settings are a proto/settings table has a row in s_programs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "proc.h"

#define S_KEYS_MAX 64

typedef struct conf_key {
    char name[64];
    char value[256]; /* help: the literal default ("" when none); example: the value */
    int line;        /* example: its line; 0 when commented out */
} conf_key_t;

typedef struct conf_keys {
    conf_key_t k[S_KEYS_MAX];
    int n;
} conf_keys_t;

/* Key spelling of settings: '_' and '-' are the same character. */
static void s_norm(char *s) {
    for (; *s; s++)
        if (*s == '_') *s = '-';
}

static conf_key_t *s_find(conf_keys_t *ks, const char *name) {
    for (int i = 0; i < ks->n; i++)
        if (strcmp(ks->k[i].name, name) == 0) return &ks->k[i];
    return NULL;
}

/* Adds the settings section of `program --help` to ks: lines
 * "  --KEY ... (...default X)" between "settings (" and "options:"
 * (program may be a program and its subcommand, "zbert embed"). */
static void s_help_keys(const char *program, conf_keys_t *ks) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s/%s --help", proc_bin(), program);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[1024];
    bool in = false;
    int listed = 0; /* settings lines, new keys or not */
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "settings (", 10) == 0) in = true;
        if (strncmp(line, "options:", 8) == 0) in = false;
        if (!in || strncmp(line, "  --", 4) != 0) continue;
        char name[64] = "";
        size_t n = strcspn(line + 4, " \n");
        assert_true(n > 0 && n < sizeof name);
        memcpy(name, line + 4, n);
        listed++;
        if (s_find(ks, name) != NULL) continue; /* another subcommand's too */
        assert_true(ks->n < S_KEYS_MAX);
        conf_key_t *k = &ks->k[ks->n++];
        memset(k, 0, sizeof *k);
        memcpy(k->name, name, n);
        /* "default X)" or "default X;" at the end of the line; "default: ..."
         * is a description, not a value */
        const char *d = strstr(line, "default ");
        if (d != NULL) {
            d += 8;
            size_t m = strcspn(d, ";)\n");
            assert_true(m < sizeof k->value);
            memcpy(k->value, d, m);
        }
    }
    assert_int_equal(pclose(f), 0);
    if (listed == 0) fail_msg("%s --help lists no settings", program);
}

/* The keys of an example config: `key = value` lines, commented out or not
 * (a commented-out key is documented without a default to show). */
static void s_example_keys(const char *path, conf_keys_t *ks) {
    size_t len = 0;
    char *text = fx_read_file(path, &len);
    if (text == NULL) fail_msg("cannot read %s", path);
    ks->n = 0;
    int no = 0;
    for (char *line = text, *next; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) *next++ = '\0';
        no++;
        char *p = line;
        bool commented = *p == '#';
        if (commented) p++;
        while (*p == ' ') p++;
        size_t n = 0;
        while (islower((unsigned char)p[n]) || isdigit((unsigned char)p[n]) || p[n] == '-' ||
               p[n] == '_')
            n++;
        char *q = p + n;
        while (*q == ' ') q++;
        if (n == 0 || *q != '=') continue;
        /* prose in comments has no `word =`; a commented key is "# key = value" */
        assert_true(ks->n < S_KEYS_MAX);
        conf_key_t *k = &ks->k[ks->n++];
        memset(k, 0, sizeof *k);
        assert_true(n < sizeof k->name);
        memcpy(k->name, p, n);
        s_norm(k->name);
        q++;
        while (*q == ' ') q++;
        char *hash = strchr(q, '#');
        if (hash) *hash = '\0';
        size_t m = strlen(q);
        while (m > 0 && q[m - 1] == ' ') m--;
        assert_true(m < sizeof k->value);
        memcpy(k->value, q, m);
        k->line = commented ? 0 : no;
    }
    free(text);
}

/* Each example config and the programs (or subcommands) that read it. */
static const struct {
    const char *example;
    const char *programs[3]; /* NULL-terminated */
} s_examples[] = {
    {"deploy/zbert-broker.conf.example", {"zbert-broker", NULL}},
    {"deploy/zbert-worker.conf.example", {"zbert-worker", NULL}},
    {"deploy/zbert.conf.example", {"zbert embed", "zbert status", NULL}},
};

static void test_examples_match_tables(void **st) {
    (void)st;
    for (size_t i = 0; i < sizeof s_examples / sizeof *s_examples; i++) {
        const char *path = s_examples[i].example, *program = s_examples[i].programs[0];
        conf_keys_t help = {.n = 0}, example;
        for (int p = 0; s_examples[i].programs[p]; p++)
            s_help_keys(s_examples[i].programs[p], &help);
        s_example_keys(path, &example);
        for (int j = 0; j < help.n; j++)
            if (s_find(&example, help.k[j].name) == NULL)
                fail_msg("%s: setting %s is not in %s", program, help.k[j].name, path);
        for (int j = 0; j < example.n; j++) {
            const conf_key_t *e = &example.k[j];
            conf_key_t *h = s_find(&help, e->name);
            if (h == NULL) fail_msg("%s: key %s is not a setting of %s", path, e->name, program);
            if (e->line > 0 && h->value[0] != '\0' && strcmp(e->value, h->value) != 0)
                fail_msg("%s:%d: %s = %s, but its default is %s", path, e->line, e->name, e->value,
                         h->value);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_match_tables),
    };
    return cmocka_run_group_tests_name("deploy", tests, NULL, NULL);
}
