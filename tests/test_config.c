/*
 * test_config.c -- config files, environment overrides, log samples.
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

#include "settings.h"
#include "log.h"

static const char *s_write(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/zbert-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_file_and_env(void **st) {
    (void)st;
    const char *p = s_write("# broker settings\n\n  clients = tcp://127.0.0.1:5555 # frontend\n"
                            "threads=4\nthreads = 8\nqueue-texts-max = 1000\n");
    zb_conf_t *c = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_conf_load(p, &c, &d), 0);
    assert_string_equal(zb_conf_get(c, "clients"), "tcp://127.0.0.1:5555");
    assert_string_equal(zb_conf_get(c, "threads"), "8");
    assert_null(zb_conf_get(c, "workers"));
    setenv("ZBERT_QUEUE_TEXTS_MAX", "5", 1);
    assert_string_equal(zb_conf_get(c, "queue-texts-max"), "5");
    unsetenv("ZBERT_QUEUE_TEXTS_MAX");
    assert_string_equal(zb_conf_get(c, "queue-texts-max"), "1000");
    assert_null(zb_conf_get(NULL, "clients"));
    zb_conf_destroy(&c);
    assert_null(c);
    unlink(p);
}

static void test_bad_files(void **st) {
    (void)st;
    const char *bad[] = {"novalue\n", "Key = 1\n", "a b = 1\n", "= 1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = s_write(bad[i]);
        zb_conf_t *c = NULL;
        zb_diag_t d = {{0}};
        assert_int_not_equal(zb_conf_load(p, &c, &d), 0);
        assert_null(c);
        assert_non_null(strstr(d.msg, ":1:"));
        unlink(p);
    }
    zb_conf_t *c = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_conf_load("/nonexistent/zbert.conf", &c, &d), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "/nonexistent/zbert.conf"));
}

static void test_log_sample(void **st) {
    (void)st;
    char out[600];
    zb_log_sample(out, sizeof out, "ab\x01\\\xff", 5);
    assert_string_equal(out, "ab\\x01\\x5c\\xff");
    char big[300];
    memset(big, 'x', sizeof big);
    zb_log_sample(out, sizeof out, big, sizeof big);
    assert_int_equal(strlen(out), 128 + 3);
    zb_log_sample(out, 8, big, sizeof big);
    assert_true(strlen(out) < 8);
    assert_int_equal(zb_log_parse_level("debug"), ZB_LOG_DEBUG);
    assert_int_equal(zb_log_parse_level("loud"), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_log_sample),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
