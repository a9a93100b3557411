/*
 * test_allow.c -- allow-lists of CurveZMQ keys: which entries of a
 * directory count (only readable NAME.pub certificates; hidden names, other
 * names, bad files, directories and named pipes are skipped without
 * stopping the load or blocking it), lookups, reloads that report what
 * changed and keep the old set when the directory is gone, change
 * detection by inotify and by the directory's mtime, and the file limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "allow.h"
#include "curve.h"
#include "log.h"

static char s_root[64];

static void s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s_sh(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

/* A new key pair saved as <s_root>/keys/<name>.{pub,key}. */
static void s_key(const char *name, zb_curve_cert_t *c) {
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(c, name, &d), 0);
    char base[256];
    snprintf(base, sizeof base, "%s/keys/%s", s_root, name);
    if (zb_curve_save(base, c, &d) != 0) fail_msg("save %s: %s", base, d.msg);
}

static void s_write(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* dir/name, in a static buffer. */
static const char *s_path(const char *dir, const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* The text of dir/name (malloc'd, NUL-terminated). */
static char *s_read(const char *dir, const char *name) {
    FILE *f = fopen(s_path(dir, name), "r");
    assert_non_null(f);
    char *buf = calloc(1, ZB_CURVE_FILE_MAX + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, ZB_CURVE_FILE_MAX, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Waits until the inotify descriptor (if any) is readable and says a
 * reload is due; true when it did within a second. */
static bool s_event(zb_allow_t *a) {
    for (int i = 0; i < 100; i++) {
        int fd = zb_allow_fd(a);
        if (fd < 0) return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) == 1 && zb_allow_events(a)) return true;
    }
    return false;
}

/* Coarse file-system clocks: let the next change get another mtime. */
static void s_tick(void) {
    usleep(30000);
}

static void test_load_and_lookup(void **st) {
    (void)st;
    zb_curve_cert_t k1, k2, k3, k4, stranger;
    s_key("k1", &k1);
    s_key("k2", &k2);
    s_key("k3", &k3);
    s_key("k4", &k4);
    s_key("stranger", &stranger);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/allow1", s_root);
    s_sh("mkdir -p %s/outside", dir);
    s_sh("cp %s/keys/k1.pub %s/keys/k2.pub %s/", s_root, s_root, dir);
    s_sh("cp %s/keys/k1.pub %s/k1-again.pub", s_root, dir);   /* one key, two files */
    s_sh("cp %s/keys/k3.key %s/k3-secret.pub", s_root, dir);  /* a secret: its public half */
    s_sh("cp %s/keys/k4.pub %s/outside/k4.pub", s_root, dir); /* through a link */
    s_sh("ln -s outside/k4.pub %s/k4-link.pub", dir);
    s_sh("cp %s/keys/stranger.pub %s/.hidden.pub", s_root, dir);
    s_sh("cp %s/keys/stranger.pub %s/stranger.pub.bak", s_root, dir);
    s_sh("cp %s/keys/stranger.key %s/stranger.key", s_root, dir);
    s_sh("cp %s/keys/stranger.pub %s/.pub", s_root, dir);
    s_sh("mkdir %s/adir.pub && mkfifo %s/pipe.pub && ln -s nowhere %s/dangling.pub", dir, dir, dir);
    s_write(s_path(dir, "garbage.pub"), "not a certificate at all\n");
    s_write(s_path(dir, "empty.pub"), "");
    s_write(s_path(dir, "short.pub"), "curve\n    public-key = \"abc\"\n");

    zb_allow_t *a = NULL;
    zb_allow_diff_t first;
    zb_diag_t d = {{0}};
    int rc = zb_allow_new(dir, "allow-test", &a, &first, &d);
    if (rc != 0) fail_msg("load: %s", d.msg);
    assert_int_equal(zb_allow_count(a), 4);
    assert_int_equal(first.keys, 4);
    assert_int_equal(first.added, 4);
    assert_int_equal(first.removed, 0);
    /* garbage, empty, short, adir, pipe, dangling */
    assert_int_equal(first.skipped, 6);
    assert_true(zb_allow_has(a, k1.pub));
    assert_true(zb_allow_has(a, k2.pub));
    assert_true(zb_allow_has(a, k3.pub));
    assert_true(zb_allow_has(a, k4.pub));
    assert_false(zb_allow_has(a, stranger.pub));
    assert_false(zb_allow_has(a, k3.sec)); /* a secret is never a key of the set */
    uint8_t zero[ZB_CURVE_KEY_BYTES] = {0};
    assert_false(zb_allow_has(a, zero));
    assert_string_equal(zb_allow_dir(a), dir);
    assert_string_equal(zb_allow_label(a), "allow-test");
    zb_allow_destroy(&a);
    assert_null(a);
    zb_allow_destroy(&a);
    zb_allow_destroy(NULL);
}

static void test_refused_dirs(void **st) {
    (void)st;
    zb_allow_t *a = NULL;
    zb_diag_t d = {{0}};
    char path[128];
    snprintf(path, sizeof path, "%s/missing", s_root);
    assert_int_equal(zb_allow_new(path, "x", &a, NULL, &d), ZB_ENOTFOUND);
    assert_null(a);
    assert_non_null(strstr(d.msg, "missing"));
    snprintf(path, sizeof path, "%s/plain-file", s_root);
    s_write(path, "x");
    assert_int_equal(zb_allow_new(path, "x", &a, NULL, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "not a directory"));
    assert_int_equal(zb_allow_new("", "x", &a, NULL, &d), ZB_EINVAL);
    /* an empty directory is an empty list, not an error */
    snprintf(path, sizeof path, "%s/empty-dir", s_root);
    s_sh("mkdir -p %s", path);
    assert_int_equal(zb_allow_new(path, "x", &a, NULL, &d), 0);
    assert_int_equal(zb_allow_count(a), 0);
    zb_allow_destroy(&a);
    /* an unreadable one is refused (root reads everything: skipped then) */
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/closed-dir", s_root);
        s_sh("mkdir -p %s && chmod 000 %s", path, path);
        assert_int_equal(zb_allow_new(path, "x", &a, NULL, &d), ZB_EIO);
        s_sh("chmod 700 %s", path);
    }
}

/* Adding, removing and rewriting files: seen by inotify and by the mtime
 * fallback; a reload says what changed; a directory gone keeps the set. */
static void test_reload(void **st) {
    (void)st;
    zb_curve_cert_t a1, a2, a3;
    s_key("a1", &a1);
    s_key("a2", &a2);
    s_key("a3", &a3);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/allow2", s_root);
    s_sh("mkdir -p %s && cp %s/keys/a1.pub %s/keys/a2.pub %s/", dir, s_root, s_root, dir);
    zb_allow_t *a = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_allow_new(dir, "allow-test", &a, NULL, &d), 0);
    assert_int_equal(zb_allow_count(a), 2);
    bool inotify = zb_allow_fd(a) >= 0;
    if (!inotify) fprintf(stderr, "no inotify here: only the mtime fallback is tested\n");
    assert_false(zb_allow_stale(a));
    assert_false(zb_allow_events(a));

    /* a3 in, a1 out */
    s_tick();
    s_sh("cp %s/keys/a3.pub %s/ && rm %s/a1.pub", s_root, dir, dir);
    if (inotify) assert_true(s_event(a));
    assert_true(zb_allow_stale(a));
    zb_allow_diff_t diff;
    assert_int_equal(zb_allow_reload(a, &diff, &d), 0);
    assert_int_equal(diff.keys, 2);
    assert_int_equal(diff.added, 1);
    assert_int_equal(diff.removed, 1);
    assert_int_equal(diff.skipped, 0);
    assert_false(zb_allow_has(a, a1.pub));
    assert_true(zb_allow_has(a, a2.pub));
    assert_true(zb_allow_has(a, a3.pub));
    assert_false(zb_allow_stale(a));

    /* a reload with nothing changed */
    assert_int_equal(zb_allow_reload(a, &diff, &d), 0);
    assert_int_equal(diff.added + diff.removed, 0);
    assert_int_equal(diff.keys, 2);

    /* a file rewritten in place (same name, another key): inotify only */
    if (inotify) {
        while (zb_allow_events(a)) {
        }
        char path[160];
        snprintf(path, sizeof path, "%s/a2.pub", dir);
        int fd = open(path, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0);
        char *text = s_read(s_root, "keys/a1.pub");
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        free(text);
        close(fd);
        assert_true(s_event(a));
        assert_int_equal(zb_allow_reload(a, &diff, &d), 0);
        assert_true(zb_allow_has(a, a1.pub));
        assert_false(zb_allow_has(a, a2.pub));
        assert_int_equal(diff.added, 1);
        assert_int_equal(diff.removed, 1);
    }

    /* the directory goes away: the set stays, and the failure says why */
    s_tick();
    char moved[160];
    snprintf(moved, sizeof moved, "%s.moved", dir);
    assert_int_equal(rename(dir, moved), 0);
    if (inotify) assert_true(s_event(a));
    assert_false(zb_allow_stale(a)); /* nothing to read */
    assert_int_equal(zb_allow_reload(a, &diff, &d), ZB_ENOTFOUND);
    assert_int_equal(zb_allow_count(a), 2);
    assert_true(zb_allow_has(a, a3.pub));
    /* it comes back without a2's file: watched again, reloaded */
    s_sh("rm -f %s/a2.pub", moved);
    assert_int_equal(rename(moved, dir), 0);
    assert_true(zb_allow_stale(a));
    assert_int_equal(zb_allow_fd(a) >= 0, inotify);
    assert_int_equal(zb_allow_reload(a, &diff, &d), 0);
    assert_int_equal(diff.keys, 1);
    assert_int_equal(diff.removed, 1);
    assert_true(zb_allow_has(a, a3.pub));
    if (inotify) {
        while (zb_allow_events(a)) {
        }
        s_sh("cp %s/keys/a2.pub %s/", s_root, dir);
        assert_true(s_event(a));
    }
    zb_allow_destroy(&a);
}

/* More .pub files than the limit: the first ZB_ALLOW_FILES_MAX (in the
 * directory's order) are read, the rest counted as skipped. */
static void test_file_limit(void **st) {
    (void)st;
    zb_curve_cert_t k;
    s_key("many", &k);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/many", s_root);
    s_sh("mkdir -p %s", dir);
    char *text = s_read(s_root, "keys/many.pub");
    size_t len = strlen(text);
    for (unsigned i = 0; i < ZB_ALLOW_FILES_MAX + 3; i++) {
        char path[192];
        snprintf(path, sizeof path, "%s/k%05u.pub", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, len), (ssize_t)len);
        close(fd);
    }
    free(text);
    zb_allow_t *a = NULL;
    zb_allow_diff_t diff;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_allow_new(dir, "allow-test", &a, &diff, &d), 0);
    assert_int_equal(diff.skipped, 3);
    assert_int_equal(zb_allow_count(a), 1); /* one key in every file */
    zb_allow_destroy(&a);
    s_sh("rm -rf %s", dir);
}

/* Lookups of many keys against a set of many: every member found, no
 * stranger. */
static void test_many_keys(void **st) {
    (void)st;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/allow3", s_root);
    s_sh("mkdir -p %s", dir);
    enum { N = 300 };
    zb_curve_cert_t *in = calloc(N, sizeof *in), *out = calloc(N, sizeof *out);
    assert_true(in && out);
    zb_diag_t d = {{0}};
    for (int i = 0; i < N; i++) {
        char base[192];
        assert_int_equal(zb_curve_keypair(&in[i], "in", &d), 0);
        assert_int_equal(zb_curve_keypair(&out[i], "out", &d), 0);
        snprintf(base, sizeof base, "%s/in%03d", dir, i);
        assert_int_equal(zb_curve_save(base, &in[i], &d), 0);
    }
    zb_allow_t *a = NULL;
    assert_int_equal(zb_allow_new(dir, "allow-test", &a, NULL, &d), 0);
    assert_int_equal(zb_allow_count(a), N);
    for (int i = 0; i < N; i++) {
        assert_true(zb_allow_has(a, in[i].pub));
        assert_false(zb_allow_has(a, out[i].pub));
    }
    zb_allow_destroy(&a);
    free(in);
    free(out);
}

int main(void) {
    snprintf(s_root, sizeof s_root, "/tmp/zbert-allow-test-XXXXXX");
    if (mkdtemp(s_root) == NULL) return 1;
    char keys[96];
    snprintf(keys, sizeof keys, "%s/keys", s_root);
    if (mkdir(keys, 0700) != 0) return 1;
    zb_log_init("test_allow", ZB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_lookup), cmocka_unit_test(test_refused_dirs),
        cmocka_unit_test(test_reload),          cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_file_limit),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_root);
    if (system(cmd) != 0) return 1;
    return failed;
}
