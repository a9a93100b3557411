/*
 * test_settings.c -- config files, environment overrides, typed settings
 * tables and their driver (every kind, precedence, ranges, lists, errors,
 * help), log samples.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "settings.h"

static const char *s_write(const char *text) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/zbert-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* --- config files --------------------------------------------------------- */

static void test_file_and_env(void **st) {
    (void)st;
    const char *p = s_write("# broker settings\n\n  clients = tcp://127.0.0.1:5555 # frontend\n"
                            "threads=4\nthreads = 8\nqueue-texts-max = 1000\n");
    zb_settings_file_t *c = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_settings_file_load(p, &c, &d), 0);
    assert_string_equal(zb_settings_file_get(c, "clients"), "tcp://127.0.0.1:5555");
    assert_string_equal(zb_settings_file_get(c, "threads"), "8");
    assert_null(zb_settings_file_get(c, "workers"));
    setenv("ZBERT_QUEUE_TEXTS_MAX", "5", 1);
    assert_string_equal(zb_settings_file_get(c, "queue-texts-max"), "5");
    unsetenv("ZBERT_QUEUE_TEXTS_MAX");
    assert_string_equal(zb_settings_file_get(c, "queue-texts-max"), "1000");
    assert_null(zb_settings_file_get(NULL, "clients"));
    zb_settings_file_destroy(&c);
    assert_null(c);
    zb_settings_file_destroy(&c); /* NULL-safe */
    unlink(p);
}

static void test_bad_files(void **st) {
    (void)st;
    const char *bad[] = {"novalue\n", "Key = 1\n", "a b = 1\n", "= 1\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = s_write(bad[i]);
        zb_settings_file_t *c = NULL;
        zb_diag_t d = {{0}};
        assert_int_not_equal(zb_settings_file_load(p, &c, &d), 0);
        assert_null(c);
        assert_non_null(strstr(d.msg, ":1:"));
        unlink(p);
    }
    zb_settings_file_t *c = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_settings_file_load("/nonexistent/zbert.conf", &c, &d), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "/nonexistent/zbert.conf"));
    /* a line over 4 KiB */
    char big[5000];
    memset(big, 'x', sizeof big);
    memcpy(big, "a = ", 4);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    const char *p = s_write(big);
    assert_int_equal(zb_settings_file_load(p, &c, &d), ZB_ELIMIT);
    assert_non_null(strstr(d.msg, ":1: line longer"));
    unlink(p);
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

/* --- a program's settings ------------------------------------------------- */

typedef struct cfg {
    char endpoint[32];
    uint32_t count;
    uint64_t bytes;
    int offset;
    bool verbose;
    zb_settings_list_t peers;
    int level;
    int mode;
    char output[64];
} cfg_t;

static const char *const s_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const s_modes[] = {"fast", "exact", NULL};
static const int s_mode_values[] = {10, 20};

#define AT(f) ZB_SETTINGS_AT(cfg_t, f)
static const zb_settings_t s_table[] = {
    {.name = "endpoint",
     .kind = ZB_SETTINGS_STRING,
     AT(endpoint),
     .min = 1,
     .max = 31,
     .def = "tcp://127.0.0.1:1",
     .value_name = "EP",
     .help = "where to connect"},
    {.name = "count",
     .kind = ZB_SETTINGS_U32,
     AT(count),
     .min = 1,
     .max = 100,
     .def = "8",
     .value_name = "N",
     .help = "how many"},
    {.name = "bytes-max",
     .kind = ZB_SETTINGS_U64,
     AT(bytes),
     .min = 1024,
     .max = (int64_t)1 << 40,
     .def = "1073741824",
     .value_name = "N",
     .help = "how much"},
    {.name = "offset",
     .kind = ZB_SETTINGS_INT,
     AT(offset),
     .min = -5,
     .max = 5,
     .def = "0",
     .value_name = "N",
     .help = "a shift"},
    {.name = "verbose", .kind = ZB_SETTINGS_FLAG, AT(verbose), .def = "false", .help = "say more"},
    {.name = "peer",
     .kind = ZB_SETTINGS_LIST,
     AT(peers),
     .min = 1,
     .max = 3,
     .def = "a,b",
     .value_name = "EP",
     .help = "peers to talk to"},
    {.name = "log-level",
     .kind = ZB_SETTINGS_ENUM,
     AT(level),
     .def = "warn",
     .choices = s_levels,
     .help = "what to log"},
    {.name = "mode",
     .kind = ZB_SETTINGS_ENUM,
     AT(mode),
     .def = "fast",
     .choices = s_modes,
     .values = s_mode_values,
     .value_name = "MODE",
     .help = "how"},
};
static const zb_settings_t s_cli_table[] = {
    {.name = "output",
     .kind = ZB_SETTINGS_STRING,
     AT(output),
     .min = 1,
     .max = 63,
     .short_name = 'o',
     .value_name = "FILE",
     .def_help = "stdout",
     .help = "where to write"},
};
#undef AT

static cfg_t s_cfg;
static zb_settings_group_t s_groups[2];
static zb_settings_program_t s_prog;

/* The test program: s_table from every source, s_cli_table command line
 * only, up to two positional arguments. */
static const zb_settings_program_t *s_program(void) {
    s_groups[0] = (zb_settings_group_t){s_table, sizeof s_table / sizeof *s_table, &s_cfg, false};
    s_groups[1] = (zb_settings_group_t){s_cli_table, 1, &s_cfg, true};
    s_prog = (zb_settings_program_t){.name = "zbert-test",
                                     .args = "[INPUT] [MORE]",
                                     .args_max = 2,
                                     .about = "An example.\n",
                                     .groups = s_groups,
                                     .n_groups = 2};
    return &s_prog;
}

static const char *const s_vars[] = {
    "ZBERT_ENDPOINT", "ZBERT_COUNT",     "ZBERT_BYTES_MAX", "ZBERT_OFFSET", "ZBERT_VERBOSE",
    "ZBERT_PEER",     "ZBERT_LOG_LEVEL", "ZBERT_MODE",      "ZBERT_OUTPUT", "ZBERT_CONFIG"};

static void s_clear_env(void) {
    for (size_t i = 0; i < sizeof s_vars / sizeof *s_vars; i++) unsetenv(s_vars[i]);
}

/* Parses a NULL-terminated command line (program name first). */
static int s_parse(zb_settings_result_t *res, zb_diag_t *d, const char *const *args) {
    static char *argv[64];
    int argc = 0;
    while (args[argc]) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    zb_settings_release(s_program());
    memset(&s_cfg, 0, sizeof s_cfg);
    return zb_settings_parse(s_program(), argc, argv, res, d);
}

static int s_setup(void **st) {
    (void)st;
    s_clear_env();
    return 0;
}

static int s_teardown(void **st) {
    (void)st;
    s_clear_env();
    zb_settings_release(s_program());
    return 0;
}

static void test_table_check(void **st) {
    (void)st;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_settings_check(s_table, sizeof s_table / sizeof *s_table, &d), 0);
    assert_int_equal(zb_settings_check(s_cli_table, 1, &d), 0);
    zb_settings_t bad[2];
    /* a wrong field size for the kind */
    bad[0] = s_table[1];
    bad[0].size = 8;
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "count"));
    /* a string whose max does not fit its array */
    bad[0] = s_table[0];
    bad[0].max = 32;
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    /* a default outside the range */
    bad[0] = s_table[1];
    bad[0].def = "101";
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "default"));
    /* a default that is not a choice */
    bad[0] = s_table[6];
    bad[0].def = "loud";
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    /* a name twice, a name with upper case, the driver's own names */
    bad[0] = bad[1] = s_table[1];
    assert_int_equal(zb_settings_check(bad, 2, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "twice"));
    bad[0].name = "Count";
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    bad[0].name = "config";
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    /* a range outside the type */
    bad[0] = s_table[1];
    bad[0].max = (int64_t)UINT32_MAX + 1;
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
    bad[0] = s_table[1];
    bad[0].min = 5, bad[0].max = 4;
    assert_int_equal(zb_settings_check(bad, 1, &d), ZB_EINVAL);
}

static void test_defaults(void **st) {
    (void)st;
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), 0);
    assert_false(res.help);
    assert_int_equal(res.n_args, 0);
    assert_null(res.config);
    assert_string_equal(s_cfg.endpoint, "tcp://127.0.0.1:1");
    assert_int_equal(s_cfg.count, 8);
    assert_true(s_cfg.bytes == (uint64_t)1 << 30);
    assert_int_equal(s_cfg.offset, 0);
    assert_false(s_cfg.verbose);
    assert_int_equal(s_cfg.peers.n, 2);
    assert_string_equal(s_cfg.peers.items[0], "a");
    assert_string_equal(s_cfg.peers.items[1], "b");
    assert_int_equal(s_cfg.level, ZB_LOG_WARN);
    assert_int_equal(s_cfg.mode, 10);
    assert_string_equal(s_cfg.output, ""); /* no default: the caller's value stays */
    assert_int_equal(zb_settings_source(&s_prog, &res, "count"), ZB_SETTINGS_FROM_DEFAULT);
    assert_int_equal(zb_settings_source(&s_prog, &res, "nonexistent"), ZB_SETTINGS_FROM_DEFAULT);
}

static void test_every_kind(void **st) {
    (void)st;
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog",
                                                        "--endpoint",
                                                        "ipc:///tmp/x",
                                                        "--count",
                                                        "100",
                                                        "--bytes-max",
                                                        "1099511627776",
                                                        "--offset",
                                                        "-5",
                                                        "--verbose",
                                                        "--peer",
                                                        "p1",
                                                        "--peer",
                                                        " p2 ",
                                                        "--log-level",
                                                        "debug",
                                                        "--mode",
                                                        "exact",
                                                        "-o",
                                                        "out.txt",
                                                        "in.txt",
                                                        NULL}),
                     0);
    assert_string_equal(s_cfg.endpoint, "ipc:///tmp/x");
    assert_int_equal(s_cfg.count, 100);
    assert_true(s_cfg.bytes == (uint64_t)1 << 40);
    assert_int_equal(s_cfg.offset, -5);
    assert_true(s_cfg.verbose);
    assert_int_equal(s_cfg.peers.n, 2); /* the command line replaces the default */
    assert_string_equal(s_cfg.peers.items[0], "p1");
    assert_string_equal(s_cfg.peers.items[1], "p2");
    assert_int_equal(s_cfg.level, ZB_LOG_DEBUG);
    assert_int_equal(s_cfg.mode, 20);
    assert_string_equal(s_cfg.output, "out.txt");
    assert_int_equal(res.n_args, 1);
    assert_string_equal(res.args[0], "in.txt");
    assert_int_equal(zb_settings_source(&s_prog, &res, "peer"), ZB_SETTINGS_FROM_ARGV);
    assert_int_equal(zb_settings_source(&s_prog, &res, "output"), ZB_SETTINGS_FROM_ARGV);
    /* a scalar given twice keeps the last; flags in the file and env */
    assert_int_equal(
        s_parse(&res, &d,
                (const char *[]){"prog", "--count", "0", "--count", "7", "--output", "a", NULL}),
        0);
    assert_int_equal(s_cfg.count, 7);
    const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        setenv("ZBERT_VERBOSE", yes[i], 1);
        assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), 0);
        assert_true(s_cfg.verbose);
        setenv("ZBERT_VERBOSE", no[i], 1);
        assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), 0);
        assert_false(s_cfg.verbose);
    }
    /* "--" ends the options; "-" is an argument */
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "-", "--", "--count", NULL}), 0);
    assert_int_equal(res.n_args, 2);
    assert_string_equal(res.args[0], "-");
    assert_string_equal(res.args[1], "--count");
    assert_int_equal(s_cfg.count, 8);
}

static void test_precedence(void **st) {
    (void)st;
    const char *p = s_write("count = 3\nbytes_max = 2048\npeer = f1, , f2,f3\nmode = exact\n"
                            "offset = 4\nunknown-key = ignored\noutput = not-read\n");
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    /* file only */
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--config", p, NULL}), 0);
    assert_string_equal(res.config, p);
    assert_int_equal(s_cfg.count, 3);
    assert_int_equal(s_cfg.bytes, 2048); /* bytes_max spells bytes-max */
    assert_int_equal(s_cfg.peers.n, 3);  /* trimmed, the empty entry dropped */
    assert_string_equal(s_cfg.peers.items[0], "f1");
    assert_string_equal(s_cfg.peers.items[2], "f3");
    assert_int_equal(s_cfg.mode, 20);
    assert_string_equal(s_cfg.output, ""); /* command line only: not a file key */
    assert_int_equal(zb_settings_source(&s_prog, &res, "count"), ZB_SETTINGS_FROM_FILE);
    /* the environment over the file; ZBERT_CONFIG names the file */
    setenv("ZBERT_CONFIG", p, 1);
    setenv("ZBERT_COUNT", "4", 1);
    setenv("ZBERT_PEER", "e1", 1);
    setenv("ZBERT_OUTPUT", "not-read", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), 0);
    assert_int_equal(s_cfg.count, 4);
    assert_int_equal(s_cfg.bytes, 2048);
    assert_int_equal(s_cfg.peers.n, 1);
    assert_string_equal(s_cfg.peers.items[0], "e1");
    assert_string_equal(s_cfg.output, "");
    assert_int_equal(zb_settings_source(&s_prog, &res, "count"), ZB_SETTINGS_FROM_ENV);
    assert_int_equal(zb_settings_source(&s_prog, &res, "bytes-max"), ZB_SETTINGS_FROM_FILE);
    /* the command line over both */
    assert_int_equal(
        s_parse(&res, &d, (const char *[]){"prog", "--count", "5", "--peer", "c1", NULL}), 0);
    assert_int_equal(s_cfg.count, 5);
    assert_int_equal(s_cfg.peers.n, 1);
    assert_string_equal(s_cfg.peers.items[0], "c1");
    assert_int_equal(s_cfg.offset, 4);
    /* only the winner is parsed: a bad value below a good one is not seen */
    setenv("ZBERT_COUNT", "nonsense", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--count", "6", NULL}), 0);
    assert_int_equal(s_cfg.count, 6);
    s_clear_env();
    unlink(p);
}

static void test_ranges(void **st) {
    (void)st;
    static const struct {
        const char *opt, *value, *msg;
    } bad[] = {
        {"--count", "0", "--count: 0 is outside 1..100"},
        {"--count", "101", "--count: 101 is outside 1..100"},
        {"--count", "-1", "--count: `-1` is not a whole number"},
        {"--count", "", "--count: empty, expected a whole number"},
        {"--count", "12x", "--count: `12x` is not a whole number"},
        {"--count", "99999999999999999999999", "--count: `99999999999999999999999` is too large"},
        {"--bytes-max", "1023", "--bytes-max: 1023 is outside 1024..1099511627776"},
        {"--bytes-max", "1099511627777", "outside"},
        {"--offset", "-6", "--offset: -6 is outside -5..5"},
        {"--offset", "6", "--offset: 6 is outside -5..5"},
        {"--offset", "-", "--offset: empty"},
        {"--endpoint", "", "--endpoint: 0 characters, expected 1 to 31"},
        {"--endpoint", "tcp://a-very-long-host-name:55555", "--endpoint: 33 characters"},
        {"--log-level", "loud", "--log-level: `loud` is not one of error, warn, info, debug"},
        {"--mode", "slow", "--mode: `slow` is not one of fast, exact"},
        {"--output", "", "--output: 0 characters"},
    };
    zb_settings_result_t res;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        zb_diag_t d = {{0}};
        assert_int_equal(
            s_parse(&res, &d, (const char *[]){"prog", bad[i].opt, bad[i].value, NULL}), ZB_EINVAL);
        if (strstr(d.msg, bad[i].msg) == NULL)
            fail_msg("%s %s: `%s` lacks `%s`", bad[i].opt, bad[i].value, d.msg, bad[i].msg);
    }
    /* the edges themselves are in range */
    zb_diag_t d = {{0}};
    assert_int_equal(s_parse(&res, &d,
                             (const char *[]){"prog", "--count", "1", "--bytes-max", "1024",
                                              "--offset", "5", NULL}),
                     0);
    assert_int_equal(s_cfg.count, 1);
    assert_int_equal(s_cfg.bytes, 1024);
    assert_int_equal(s_cfg.offset, 5);
}

static void test_lists(void **st) {
    (void)st;
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    /* at most 3 entries, at least 1, wherever they come from */
    assert_int_equal(s_parse(&res, &d,
                             (const char *[]){"prog", "--peer", "1", "--peer", "2", "--peer", "3",
                                              "--peer", "4", NULL}),
                     ZB_EINVAL);
    assert_non_null(strstr(d.msg, "--peer: 4 entries, expected 1 to 3"));
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--peer", "", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "--peer: 0 entries"));
    setenv("ZBERT_PEER", " , ,", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "ZBERT_PEER: 0 entries"));
    setenv("ZBERT_PEER", "a,b,c,d", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "ZBERT_PEER: 4 entries"));
    /* a command-line entry is taken whole, commas included */
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--peer", "x,y", NULL}), 0);
    assert_int_equal(s_cfg.peers.n, 1);
    assert_string_equal(s_cfg.peers.items[0], "x,y");
    unsetenv("ZBERT_PEER");
    /* release empties, and again is harmless */
    zb_settings_release(&s_prog);
    assert_int_equal(s_cfg.peers.n, 0);
    assert_null(s_cfg.peers.items);
    zb_settings_release(&s_prog);
    /* zb_settings_set replaces a list from a comma-separated value */
    cfg_t c;
    memset(&c, 0, sizeof c);
    size_t n = sizeof s_table / sizeof *s_table;
    assert_int_equal(zb_settings_default(s_table, n, &c, &d), 0);
    assert_int_equal(zb_settings_set(s_table, n, &c, "peer", "u, v", &d), 0);
    assert_int_equal(c.peers.n, 2);
    assert_string_equal(c.peers.items[1], "v");
    assert_int_equal(zb_settings_set(s_table, n, &c, "count", "0", &d), ZB_EINVAL);
    assert_string_equal(d.msg, "count: 0 is outside 1..100");
    assert_int_equal(zb_settings_set(s_table, n, &c, "bytes_max", "4096", &d), 0);
    assert_int_equal(c.bytes, 4096);
    assert_int_equal(zb_settings_set(s_table, n, &c, "nope", "1", &d), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "nope"));
    /* the whole u64 range; int bounds against huge magnitudes */
    static const zb_settings_t wide[] = {
        {.name = "seed",
         .kind = ZB_SETTINGS_U64,
         ZB_SETTINGS_AT(cfg_t, bytes),
         .max = UINT64_MAX,
         .help = "a seed"},
        {.name = "shift",
         .kind = ZB_SETTINGS_INT,
         ZB_SETTINGS_AT(cfg_t, offset),
         .min = INT_MIN,
         .max = INT_MAX,
         .help = "a shift"},
    };
    assert_int_equal(zb_settings_check(wide, 2, &d), 0);
    assert_int_equal(zb_settings_set(wide, 2, &c, "seed", "18446744073709551615", &d), 0);
    assert_true(c.bytes == UINT64_MAX);
    assert_int_equal(zb_settings_set(wide, 2, &c, "seed", "18446744073709551616", &d), ZB_EINVAL);
    assert_string_equal(d.msg, "seed: `18446744073709551616` is too large");
    assert_int_equal(zb_settings_set(wide, 2, &c, "shift", "-2147483648", &d), 0);
    assert_int_equal(c.offset, INT_MIN);
    assert_int_equal(zb_settings_set(wide, 2, &c, "shift", "-2147483649", &d), ZB_EINVAL);
    assert_string_equal(d.msg, "shift: -2147483649 is outside -2147483648..2147483647");
    assert_int_equal(zb_settings_set(wide, 2, &c, "shift", "9223372036854775808", &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "is outside"));
    for (size_t i = 0; i < c.peers.n; i++) free(c.peers.items[i]);
    free(c.peers.items);
}

static void test_errors(void **st) {
    (void)st;
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    /* unknown options, missing values, too many arguments */
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--nope", "1", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "unknown option --nope"));
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "-x", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "unknown option -x"));
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--count", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "--count needs a value"));
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--config", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "--config needs a value"));
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "a", "b", "c", NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "unexpected argument `c`"));
    /* the environment: named by its variable */
    setenv("ZBERT_COUNT", "1000", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), ZB_EINVAL);
    assert_string_equal(d.msg, "ZBERT_COUNT: 1000 is outside 1..100");
    unsetenv("ZBERT_COUNT");
    setenv("ZBERT_VERBOSE", "maybe", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), ZB_EINVAL);
    assert_string_equal(d.msg, "ZBERT_VERBOSE: `maybe` is not true or false");
    unsetenv("ZBERT_VERBOSE");
    /* the file: named by its path and line */
    const char *p = s_write("# comment\ncount = 3\nlog-level = loud\n");
    char want[128];
    snprintf(want, sizeof want, "%s:3: log-level: `loud` is not one of", p);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--config", p, NULL}), ZB_EINVAL);
    assert_non_null(strstr(d.msg, want));
    unlink(p);
    p = s_write("count 3\n");
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--config", p, NULL}), ZB_EFORMAT);
    assert_non_null(strstr(d.msg, ":1: expected key = value"));
    unlink(p);
    assert_int_equal(
        s_parse(&res, &d, (const char *[]){"prog", "--config", "/nonexistent/x.conf", NULL}),
        ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "/nonexistent/x.conf"));
    setenv("ZBERT_CONFIG", "/nonexistent/y.conf", 1);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", NULL}), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "/nonexistent/y.conf"));
    unsetenv("ZBERT_CONFIG");
    /* --help anywhere before "--" wins over everything */
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--nope", "-h", NULL}), 0);
    assert_true(res.help);
    assert_int_equal(s_parse(&res, &d, (const char *[]){"prog", "--help", NULL}), 0);
    assert_true(res.help);
}

/* Records what the hook saw; takes --extra VALUE and --broken. */
static char s_hook_value[32];
static int s_hook(void *ctx, int argc, char **argv, int *i, zb_diag_t *d) {
    *(int *)ctx += 1;
    if (strcmp(argv[*i], "--broken") == 0) return zb_diag_set(d, ZB_EINVAL, "--broken: broken");
    if (strcmp(argv[*i], "--extra") != 0) return 0;
    if (*i + 1 >= argc) return zb_diag_set(d, ZB_EINVAL, "--extra needs a value");
    snprintf(s_hook_value, sizeof s_hook_value, "%s", argv[++*i]);
    return 1;
}

static void test_hook_and_required(void **st) {
    (void)st;
    static const zb_settings_t req[] = {
        {.name = "model",
         .kind = ZB_SETTINGS_STRING,
         ZB_SETTINGS_AT(cfg_t, output),
         .min = 1,
         .max = 63,
         .value_name = "PATH",
         .flags = ZB_SETTINGS_REQUIRED,
         .help = "the model"},
        {.name = "count",
         .kind = ZB_SETTINGS_U32,
         ZB_SETTINGS_AT(cfg_t, count),
         .min = 1,
         .max = 100,
         .help = "how many"},
    };
    cfg_t c;
    memset(&c, 0, sizeof c);
    int calls = 0;
    zb_settings_group_t g = {req, 1, &c, false};
    zb_settings_program_t p = {.name = "zbert-hooked",
                               .args = "FILE",
                               .args_min = 1,
                               .args_max = 1,
                               .groups = &g,
                               .n_groups = 1,
                               .hook = s_hook,
                               .hook_ctx = &calls,
                               .hook_help = "  --extra X                   hooked\n"};
    char *argv[8] = {"prog", "--extra", "v1", "--model", "m", "f", NULL};
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_settings_parse(&p, 6, argv, &res, &d), 0);
    assert_int_equal(calls, 1); /* only for what no table knows */
    assert_string_equal(s_hook_value, "v1");
    assert_string_equal(c.output, "m");
    assert_string_equal(res.args[0], "f");
    /* the hook's refusals, unknown options, a missing required setting or argument */
    argv[1] = "--broken";
    assert_int_equal(zb_settings_parse(&p, 6, argv, &res, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "--broken: broken");
    argv[1] = "--other";
    assert_int_equal(zb_settings_parse(&p, 6, argv, &res, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "unknown option --other"));
    char *no_model[] = {"prog", "f", NULL};
    assert_int_equal(zb_settings_parse(&p, 2, no_model, &res, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "--model PATH is required");
    g.n = 2; /* a bad value is told before a missing setting */
    char *bad_value[] = {"prog", "f", "--count", "0", NULL};
    assert_int_equal(zb_settings_parse(&p, 4, bad_value, &res, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "--count: 0 is outside 1..100");
    g.n = 1;
    setenv("ZBERT_MODEL", "from-env", 1);
    assert_int_equal(zb_settings_parse(&p, 2, no_model, &res, &d), 0);
    assert_string_equal(c.output, "from-env");
    unsetenv("ZBERT_MODEL");
    char *no_file[] = {"prog", "--model", "m", NULL};
    assert_int_equal(zb_settings_parse(&p, 3, no_file, &res, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "expected FILE");
    /* a program of command-line options only has no --config */
    g.argv_only = true;
    char *config[] = {"prog", "--model", "m", "--config", "x", "f", NULL};
    assert_int_equal(zb_settings_parse(&p, 6, config, &res, &d), ZB_EINVAL);
    assert_non_null(strstr(d.msg, "unknown option --config"));
    setenv("ZBERT_MODEL", "from-env", 1);
    assert_int_equal(zb_settings_parse(&p, 2, no_model, &res, &d), ZB_EINVAL);
    assert_string_equal(d.msg, "--model PATH is required");
    unsetenv("ZBERT_MODEL");
}

/* The help text of the program. */
static char *s_help(const zb_settings_program_t *p) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    zb_settings_help(p, f);
    fclose(f);
    return buf;
}

static void test_help(void **st) {
    (void)st;
    char *h = s_help(s_program());
    static const char *const lines[] = {
        "usage: zbert-test [options] [INPUT] [MORE]\n",
        "settings (each also ZBERT_<KEY>",
        "\n  --endpoint EP               where to connect (default tcp://127.0.0.1:1)\n",
        "\n  --count N                   how many (1..100; default 8)\n",
        "\n  --bytes-max N               how much (1024..1099511627776; default 1073741824)\n",
        "\n  --offset N                  a shift (-5..5; default 0)\n",
        "\n  --verbose                   say more\n",
        "\n  --peer EP                   peers to talk to (repeatable; default a,b)\n",
        "\n  --log-level error|warn|info|debug  what to log (default warn)\n",
        "\n  --mode MODE                 how (fast|exact; default fast)\n",
        "\noptions:\n  -o, --output FILE           where to write (default: stdout)\n",
        "\n  --config FILE               key = value settings",
        "\n  -h, --help                  this help\n",
        "precedence: command line > environment > config file > default\nAn example.\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        if (strstr(h, lines[i]) == NULL) fail_msg("help lacks `%s`:\n%s", lines[i], h);
    /* the command-line-only option is not among the settings */
    assert_true(strstr(h, "--output") > strstr(h, "options:"));
    free(h);

    /* required settings go to the usage line; no file, no --config */
    static const zb_settings_t req[] = {
        {.name = "seed",
         .kind = ZB_SETTINGS_U64,
         ZB_SETTINGS_AT(cfg_t, bytes),
         .max = 10,
         .value_name = "S",
         .flags = ZB_SETTINGS_REQUIRED,
         .help = "the seed"},
        {.name = "output",
         .kind = ZB_SETTINGS_STRING,
         ZB_SETTINGS_AT(cfg_t, output),
         .max = 63,
         .short_name = 'o',
         .value_name = "FILE",
         .flags = ZB_SETTINGS_REQUIRED,
         .help = "where"},
    };
    cfg_t c;
    zb_settings_group_t g = {req, 2, &c, true};
    zb_settings_program_t p = {
        .name = "zbert-x run", .args = "DIR", .args_max = 1, .groups = &g, .n_groups = 1};
    h = s_help(&p);
    assert_non_null(strstr(h, "usage: zbert-x run --seed S -o FILE [options] DIR\n"));
    assert_non_null(strstr(h, "  --seed S                    the seed (0..10; required)\n"));
    assert_non_null(strstr(h, "  -o, --output FILE           where (required)\n"));
    assert_null(strstr(h, "--config"));
    assert_null(strstr(h, "ZBERT_"));
    free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_and_env),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_log_sample),
        cmocka_unit_test_setup_teardown(test_table_check, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_every_kind, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_precedence, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ranges, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_lists, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_hook_and_required, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_help, s_setup, s_teardown),
    };
    return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}
