/*
 * test_curve.c -- CurveZMQ key files (proto/curve): a key pair saved and
 * loaded back, the file format against pyzmq's reader and writer (the
 * ZeroMQ ecosystem's certificates, CZMQ's format), keys never overwritten,
 * secret files others may read refused, a public file where a secret one
 * is needed refused, Z85 both ways, and a hostile-input table for
 * zb_curve_parse (each text handed over in a buffer of exactly its length,
 * so that a read past it is caught under ASan).
 *
 * Files live in a temporary directory removed at the end.  The pyzmq
 * checks need /usr/bin/python3 with zmq; without it they say so and pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "fixture.h"
#include "proc.h"

#define S_PYTHON "/usr/bin/python3"

static char s_dir[256];
static zb_curve_cert_t s_a, s_b; /* two key pairs for the tables */
static char s_a_pub[ZB_CURVE_Z85_CHARS + 1], s_a_sec[ZB_CURVE_Z85_CHARS + 1];
static char s_b_pub[ZB_CURVE_Z85_CHARS + 1];

static const char *s_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

static void s_write(const char *name, const char *data, size_t n, mode_t mode) {
    FILE *f = fopen(s_path(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(s_path(name), mode), 0);
}

static mode_t s_mode(const char *name) {
    struct stat st;
    assert_int_equal(stat(s_path(name), &st), 0);
    return st.st_mode & 07777;
}

static bool s_have_pyzmq(void) {
    return access(S_PYTHON, X_OK) == 0 &&
           proc_sh(S_PYTHON " -c 'import zmq.auth' 2> /dev/null") == 0;
}

static int setup(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-curve-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    if (!zb_curve_available()) {
        fprintf(stderr, "this libzmq has no CURVE\n");
        return -1;
    }
    if (zb_curve_keypair(&s_a, "a", NULL) != 0 || zb_curve_keypair(&s_b, "b", NULL) != 0) return -1;
    zb_curve_z85(s_a.pub, s_a_pub);
    zb_curve_z85(s_a.sec, s_a_sec);
    zb_curve_z85(s_b.pub, s_b_pub);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    return proc_sh("rm -rf '%s'", s_dir) == 0 ? 0 : -1;
}

/* --- files ------------------------------------------------------------------ */

/* keypair, save, load: the same keys and name back, from either file; the
 * modes are 0600 and 0644 whatever the umask. */
static void test_round_trip(void **st) {
    (void)st;
    mode_t old = umask(0077); /* would make the .pub 0600 if save relied on it */
    zb_curve_cert_t c, k, p;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(&c, "alice", &d), 0);
    assert_true(c.has_secret);
    assert_string_equal(c.name, "alice");
    assert_int_equal(zb_curve_save(s_path("alice"), &c, &d), 0);
    umask(old);
    assert_int_equal(s_mode("alice.key"), 0600);
    assert_int_equal(s_mode("alice.pub"), 0644);

    assert_int_equal(zb_curve_load(s_path("alice.key"), true, &k, &d), 0);
    assert_true(k.has_secret);
    assert_memory_equal(k.pub, c.pub, ZB_CURVE_KEY_BYTES);
    assert_memory_equal(k.sec, c.sec, ZB_CURVE_KEY_BYTES);
    assert_string_equal(k.name, "alice");

    assert_int_equal(zb_curve_load(s_path("alice.pub"), false, &p, &d), 0);
    assert_false(p.has_secret);
    assert_memory_equal(p.pub, c.pub, ZB_CURVE_KEY_BYTES);
    const uint8_t zero[ZB_CURVE_KEY_BYTES] = {0};
    assert_memory_equal(p.sec, zero, ZB_CURVE_KEY_BYTES);
    assert_string_equal(p.name, "alice");

    /* a secret file where a public one will do: its public part */
    assert_int_equal(zb_curve_load(s_path("alice.key"), false, &p, &d), 0);
    assert_memory_equal(p.pub, c.pub, ZB_CURVE_KEY_BYTES);

    /* Z85 both ways, and the keys libzmq makes are different each time */
    char z[ZB_CURVE_Z85_CHARS + 1];
    uint8_t back[ZB_CURVE_KEY_BYTES];
    assert_int_equal(strlen(zb_curve_z85(c.pub, z)), ZB_CURVE_Z85_CHARS);
    assert_true(zb_curve_unz85(z, ZB_CURVE_Z85_CHARS, back));
    assert_memory_equal(back, c.pub, ZB_CURVE_KEY_BYTES);
    assert_false(zb_curve_unz85(z, ZB_CURVE_Z85_CHARS - 1, back));
    assert_memory_not_equal(s_a.pub, s_b.pub, ZB_CURVE_KEY_BYTES);

    /* names: none, and too long */
    assert_int_equal(zb_curve_keypair(&c, NULL, &d), 0);
    assert_string_equal(c.name, "");
    char long_name[ZB_CURVE_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_int_equal(zb_curve_keypair(&c, long_name, &d), ZB_EINVAL);
    /* a name that cannot be written in the file */
    assert_int_equal(zb_curve_keypair(&c, "quo\"te", &d), 0);
    assert_int_equal(zb_curve_save(s_path("quote"), &c, &d), ZB_EINVAL);
    assert_int_equal(access(s_path("quote.key"), F_OK), -1);
    /* a public key cannot be saved as a pair */
    p.has_secret = false;
    assert_int_equal(zb_curve_save(s_path("pubonly"), &p, &d), ZB_EINVAL);
    assert_int_equal(access(s_path("pubonly.pub"), F_OK), -1);
}

/* The format: CZMQ's, as pyzmq writes and reads it.  Our files open with
 * the comment lines, then `metadata` and `curve` sections with indented
 * entries; pyzmq's reader finds our keys, and ours finds the keys of a
 * pair pyzmq wrote. */
static void test_format_pyzmq(void **st) {
    (void)st;
    zb_curve_cert_t c;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(&c, "bob", &d), 0);
    assert_int_equal(zb_curve_save(s_path("bob"), &c, &d), 0);
    char zp[ZB_CURVE_Z85_CHARS + 1], zs[ZB_CURVE_Z85_CHARS + 1];
    zb_curve_z85(c.pub, zp);
    zb_curve_z85(c.sec, zs);
    for (int secret = 0; secret <= 1; secret++) {
        size_t len;
        char *text = fx_read_file(s_path(secret ? "bob.key" : "bob.pub"), &len);
        assert_non_null(text);
        assert_true(strncmp(text, "#   ****  Generated on ", 23) == 0);
        assert_non_null(strstr(text, secret ? "\n#   ZeroMQ CURVE **Secret** Certificate\n"
                                            : "\n#   ZeroMQ CURVE Public Certificate\n"));
        char want[512];
        snprintf(want, sizeof want,
                 "\n\nmetadata\n    name = \"bob\"\ncurve\n    public-key = \"%s\"\n%s%s%s", zp,
                 secret ? "    secret-key = \"" : "", secret ? zs : "", secret ? "\"\n" : "");
        const char *body = strstr(text, "\n\nmetadata\n");
        assert_non_null(body);
        assert_string_equal(body, want);
        /* every line before the sections is a comment */
        for (const char *q = text; q < body; q = strchr(q, '\n') + 1) assert_true(*q == '#');
        free(text);
    }
    if (!s_have_pyzmq()) {
        printf("pyzmq checks skipped: " S_PYTHON " with zmq is not available\n");
        return;
    }
    /* pyzmq reads ours */
    char out[600];
    snprintf(out, sizeof out, "%s", s_path("py.out"));
    assert_int_equal(proc_sh(S_PYTHON " -c 'import sys, zmq.auth as a; p, s = "
                                      "a.load_certificate(sys.argv[1]); q, n = "
                                      "a.load_certificate(sys.argv[2]); "
                                      "print(p.decode(), s.decode(), q.decode(), n)' %s %s > %s",
                             s_path("bob.key"), s_path("bob.pub"), out),
                     0);
    size_t len;
    char *got = fx_read_file(out, &len);
    assert_non_null(got);
    char want[256];
    snprintf(want, sizeof want, "%s %s %s None\n", zp, zs, zp);
    assert_string_equal(got, want);
    free(got);
    /* ours reads pyzmq's (its secret file keeps the umask's mode: made 0600) */
    assert_int_equal(proc_sh(S_PYTHON " -c 'import sys, zmq.auth as a; "
                                      "a.create_certificates(sys.argv[1], \"carol\")' %s",
                             s_dir),
                     0);
    assert_int_equal(chmod(s_path("carol.key_secret"), 0600), 0);
    zb_curve_cert_t k, p;
    assert_int_equal(zb_curve_load(s_path("carol.key_secret"), true, &k, &d), 0);
    assert_int_equal(zb_curve_load(s_path("carol.key"), false, &p, &d), 0);
    assert_memory_equal(k.pub, p.pub, ZB_CURVE_KEY_BYTES);
    assert_true(k.has_secret);
    assert_int_equal(proc_sh(S_PYTHON " -c 'import sys, zmq.auth as a; p, s = "
                                      "a.load_certificate(sys.argv[1]); print(p.decode())' "
                                      "%s > %s",
                             s_path("carol.key"), out),
                     0);
    got = fx_read_file(out, &len);
    assert_non_null(got);
    zb_curve_z85(p.pub, zp);
    snprintf(want, sizeof want, "%s\n", zp);
    assert_string_equal(got, want);
    free(got);
}

/* An existing NAME.key or NAME.pub is never overwritten, nor is the other
 * file of the pair written. */
static void test_no_overwrite(void **st) {
    (void)st;
    zb_curve_cert_t c, c2, k;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(&c, "dave", &d), 0);
    assert_int_equal(zb_curve_save(s_path("dave"), &c, &d), 0);
    assert_int_equal(zb_curve_keypair(&c2, "dave", &d), 0);
    assert_int_equal(zb_curve_save(s_path("dave"), &c2, &d), ZB_EINVAL);
    printf("again: %s\n", d.msg);
    assert_non_null(strstr(d.msg, "never overwritten"));
    assert_non_null(strstr(d.msg, s_path("dave")));
    assert_int_equal(zb_curve_load(s_path("dave.key"), true, &k, &d), 0);
    assert_memory_equal(k.sec, c.sec, ZB_CURVE_KEY_BYTES); /* the first pair's */

    /* only one of the two exists: still refused, and the other not made */
    s_write("erin.pub", "x", 1, 0644);
    assert_int_equal(zb_curve_save(s_path("erin"), &c2, &d), ZB_EINVAL);
    assert_int_equal(access(s_path("erin.key"), F_OK), -1);
    s_write("fred.key", "x", 1, 0600);
    assert_int_equal(zb_curve_save(s_path("fred"), &c2, &d), ZB_EINVAL);
    assert_int_equal(access(s_path("fred.pub"), F_OK), -1);
    /* a directory that does not exist: an I/O error, nothing left behind */
    assert_int_equal(zb_curve_save(s_path("nodir/gina"), &c2, &d), ZB_EIO);
    assert_int_equal(zb_curve_save("", &c2, &d), ZB_EINVAL);
}

/* A secret file that others may read, or its group write, is refused with
 * the file and the fix; group-readable is allowed (the service's group). */
static void test_permissions(void **st) {
    (void)st;
    zb_curve_cert_t c, k;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(&c, "hank", &d), 0);
    assert_int_equal(zb_curve_save(s_path("hank"), &c, &d), 0);
    static const struct {
        mode_t mode;
        bool ok;
    } modes[] = {{0600, true},  {0400, true},  {0640, true},  {0644, false},
                 {0604, false}, {0660, false}, {0601, false}, {0666, false}};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        assert_int_equal(chmod(s_path("hank.key"), modes[i].mode), 0);
        int rc = zb_curve_load(s_path("hank.key"), true, &k, &d);
        if (modes[i].ok) {
            assert_int_equal(rc, 0);
            continue;
        }
        assert_int_equal(rc, ZB_EINVAL);
        assert_non_null(strstr(d.msg, s_path("hank.key")));
        assert_non_null(strstr(d.msg, "chmod 600"));
        /* nothing of the key is handed back */
        const uint8_t zero[ZB_CURVE_KEY_BYTES] = {0};
        assert_memory_equal(k.sec, zero, ZB_CURVE_KEY_BYTES);
        /* the public part of the same file is no secret */
        assert_int_equal(zb_curve_load(s_path("hank.key"), false, &k, &d), 0);
    }
    printf("0644: refused\n");
    /* a .pub is public: its mode is not checked */
    assert_int_equal(chmod(s_path("hank.pub"), 0666), 0);
    assert_int_equal(zb_curve_load(s_path("hank.pub"), false, &k, &d), 0);
}

/* A .pub where the secret key is needed: refused as what it is (not sent
 * to chmod), whatever its mode. */
static void test_pub_as_secret(void **st) {
    (void)st;
    zb_curve_cert_t c, k;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(&c, "ivy", &d), 0);
    assert_int_equal(zb_curve_save(s_path("ivy"), &c, &d), 0);
    for (int open = 1; open >= 0; open--) {
        assert_int_equal(chmod(s_path("ivy.pub"), open ? 0644 : 0600), 0);
        assert_int_equal(zb_curve_load(s_path("ivy.pub"), true, &k, &d), ZB_EFORMAT);
        printf("pub as secret: %s\n", d.msg);
        assert_non_null(strstr(d.msg, s_path("ivy.pub")));
        assert_non_null(strstr(d.msg, "no curve secret-key"));
        assert_null(strstr(d.msg, "chmod"));
    }
    /* not a file, no file */
    assert_int_equal(zb_curve_load(s_dir, false, &k, &d), ZB_EIO);
    assert_int_equal(zb_curve_load(s_path("nothing.pub"), false, &k, &d), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, s_path("nothing.pub")));
    /* a file too big is not read whole */
    size_t big = ZB_CURVE_FILE_MAX + 100;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '#', big);
    for (size_t i = 80; i < big; i += 81) text[i] = '\n';
    s_write("big.pub", text, big, 0644);
    free(text);
    assert_int_equal(zb_curve_load(s_path("big.pub"), false, &k, &d), ZB_ELIMIT);
}

/* --- hostile input ---------------------------------------------------------- */

/* A template's placeholders: {PUB} {SEC} (pair a), {PUB2} (pair b's
 * public key), {NUL} (a NUL byte), {L1024} {L1025} (a comment line of that
 * many bytes, newline excluded), {BIG} (comment lines past 64 KiB).
 * Returns the text in a buffer of exactly its length (the caller's). */
static char *s_expand(const char *tpl, size_t *len) {
    size_t cap = 2 * ZB_CURVE_FILE_MAX + strlen(tpl) + 4096, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    static const char *names[] = {"{PUB}",   "{SEC}",   "{PUB2}", "{NUL}",
                                  "{L1024}", "{L1025}", "{BIG}"};
    while (*tpl) {
        size_t k = 0;
        while (k < sizeof names / sizeof *names && strncmp(tpl, names[k], strlen(names[k])) != 0)
            k++;
        if (k == sizeof names / sizeof *names) {
            out[n++] = *tpl++;
            continue;
        }
        tpl += strlen(names[k]);
        switch (k) {
        case 0:
        case 1:
        case 2: {
            const char *z = k == 0 ? s_a_pub : k == 1 ? s_a_sec : s_b_pub;
            memcpy(out + n, z, ZB_CURVE_Z85_CHARS);
            n += ZB_CURVE_Z85_CHARS;
            break;
        }
        case 3:
            out[n++] = '\0';
            break;
        case 4:
        case 5: {
            size_t m = k == 4 ? 1024 : 1025;
            memset(out + n, '#', m);
            n += m;
            break;
        }
        default:
            for (size_t i = 0; i < ZB_CURVE_FILE_MAX / 100 + 1; i++) {
                memset(out + n, '#', 99);
                out[n + 99] = '\n';
                n += 100;
            }
        }
        assert_true(n < cap - 2048);
    }
    char *exact = malloc(n ? n : 1);
    assert_non_null(exact);
    memcpy(exact, out, n);
    free(out);
    *len = n;
    return exact;
}

#define S_PUB_LINE "    public-key = \"{PUB}\"\n"
#define S_SEC_LINE "    secret-key = \"{SEC}\"\n"
#define S_KEY_FILE "metadata\n    name = \"a\"\ncurve\n" S_PUB_LINE S_SEC_LINE

static void test_parse_table(void **st) {
    (void)st;
    static const struct {
        const char *what, *tpl;
        bool need_secret;
        int rc;
        unsigned line; /* the line the sentence must name; 0: the text as a whole */
        bool secret;   /* on success: a secret was read */
    } cases[] = {
        /* accepted */
        {"our .key", S_KEY_FILE, true, 0, 0, true},
        {"our .pub", "metadata\ncurve\n" S_PUB_LINE, false, 0, 0, false},
        {"CRLF lines",
         "#  c\r\nmetadata\r\n    name = \"a\"\r\ncurve\r\n    public-key = "
         "\"{PUB}\"\r\n    secret-key = \"{SEC}\"\r\n",
         true, 0, 0, true},
        {"bare values", "curve\n    public-key = {PUB}\n    secret-key = {SEC}\n", true, 0, 0,
         true},
        {"bare value, then a comment", "curve\n    public-key = {PUB} # ours\n", false, 0, 0,
         false},
        {"single quotes", "curve\n    public-key = '{PUB}'\n    secret-key = '{SEC}'\n", true, 0, 0,
         true},
        {"tabs", "curve\n\tpublic-key\t=\t\"{PUB}\"\t\n\t secret-key =\t{SEC}\n", true, 0, 0, true},
        {"no final newline", "curve\n    public-key = \"{PUB}\"", false, 0, 0, false},
        {"secret alone: public computed", "curve\n" S_SEC_LINE, true, 0, 0, true},
        {"other sections and keys ignored",
         "zap\n    public-key = \"nonsense\"\ncurve\n    colour = blue\n    note\n" S_PUB_LINE
         "top = level\n",
         false, 0, 0, false},
        {"a line of 1024 bytes", "{L1024}\ncurve\n" S_PUB_LINE, false, 0, 0, false},
        /* refused */
        {"no public key", "metadata\n    name = \"a\"\ncurve\n", false, ZB_EFORMAT, 0, false},
        {"empty text", "", false, ZB_EFORMAT, 0, false},
        {"no secret key where needed", "curve\n" S_PUB_LINE, true, ZB_EFORMAT, 0, false},
        {"the key outside curve", "metadata\n" S_PUB_LINE, false, ZB_EFORMAT, 0, false},
        {"the key not indented", "curve\npublic-key = \"{PUB}\"\n", false, ZB_EFORMAT, 0, false},
        {"39 characters", "curve\n    public-key = \"abcdefghijabcdefghijabcdefghijabcdefghi\"\n",
         false, ZB_EFORMAT, 2, false},
        {"41 characters", "curve\n    public-key = \"{PUB}0\"\n", false, ZB_EFORMAT, 2, false},
        {"a character outside Z85", "curve\n    public-key = \"~{PUB}\"\n", false, ZB_EFORMAT, 2,
         false},
        {"a quote inside",
         "# x\ncurve\n    public-key = 'abcdefghij\"bcdefghijabcdefghijabcdefghij'\n", false,
         ZB_EFORMAT, 3, false},
        {"a Z85 group over 2^32",
         "curve\n    public-key = \"%%%%%abcdefghijabcdefghijabcdefghijabcde\"\n", false,
         ZB_EFORMAT, 2, false},
        {"public key twice", "curve\n" S_PUB_LINE S_PUB_LINE, false, ZB_EFORMAT, 3, false},
        {"secret key twice", "curve\n" S_SEC_LINE "\n" S_SEC_LINE, true, ZB_EFORMAT, 4, false},
        {"public not that of the secret", "curve\n    public-key = \"{PUB2}\"\n" S_SEC_LINE, true,
         ZB_EFORMAT, 0, false},
        {"a NUL byte", "curve\n" S_PUB_LINE "# a{NUL}b\n", false, ZB_EFORMAT, 3, false},
        {"a NUL byte in the key", "curve\n    public-key = \"abc{NUL}\"\n", false, ZB_EFORMAT, 2,
         false},
        {"a line over 1024 bytes", "curve\n" S_PUB_LINE "{L1025}\n", false, ZB_ELIMIT, 3, false},
        {"a text over 64 KiB", "curve\n" S_PUB_LINE "{BIG}", false, ZB_ELIMIT, 0, false},
        {"a quote not closed", "curve\n    public-key = \"{PUB}\n", false, ZB_EFORMAT, 2, false},
        {"a quote not closed at the end", "curve\n    public-key = '{PUB}", false, ZB_EFORMAT, 2,
         false},
        {"an empty value", "curve\n    public-key =\n", false, ZB_EFORMAT, 2, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len;
        char *text = s_expand(cases[i].tpl, &len);
        zb_curve_cert_t c;
        zb_diag_t d = {{0}};
        int rc = zb_curve_parse(text, len, cases[i].need_secret, "t.key", &c, &d);
        printf("%-34s %3d  %s\n", cases[i].what, rc, d.msg);
        if (rc != cases[i].rc) fail_msg("%s: %d, expected %d", cases[i].what, rc, cases[i].rc);
        if (rc == 0) {
            assert_memory_equal(c.pub, s_a.pub, ZB_CURVE_KEY_BYTES);
            assert_int_equal(c.has_secret, cases[i].secret);
            if (cases[i].secret) assert_memory_equal(c.sec, s_a.sec, ZB_CURVE_KEY_BYTES);
        } else {
            char where[32];
            if (cases[i].line)
                snprintf(where, sizeof where, "t.key:%u: ", cases[i].line);
            else
                snprintf(where, sizeof where, "t.key: ");
            if (strncmp(d.msg, where, strlen(where)) != 0)
                fail_msg("%s: the sentence `%s` does not start with `%s`", cases[i].what, d.msg,
                         where);
        }
        free(text);
    }
}

/* The edges of the size limit: 64 KiB is a certificate, a byte more is not;
 * the name is kept printable and bounded. */
static void test_parse_edges(void **st) {
    (void)st;
    size_t len;
    char *key = s_expand("metadata\n    name = \"ab\"\ncurve\n" S_PUB_LINE, &len);
    char *text = malloc(ZB_CURVE_FILE_MAX + 1);
    assert_non_null(text);
    memcpy(text, key, len);
    size_t n = len;
    while (n < ZB_CURVE_FILE_MAX) {
        size_t m = ZB_CURVE_FILE_MAX - n > 100 ? 100 : ZB_CURVE_FILE_MAX - n;
        memset(text + n, '#', m);
        text[n + m - 1] = '\n';
        n += m;
    }
    zb_curve_cert_t c;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_parse(text, ZB_CURVE_FILE_MAX, false, NULL, &c, &d), 0);
    assert_string_equal(c.name, "ab");
    text[ZB_CURVE_FILE_MAX] = '\n';
    assert_int_equal(zb_curve_parse(text, ZB_CURVE_FILE_MAX + 1, false, NULL, &c, &d), ZB_ELIMIT);
    assert_non_null(strstr(d.msg, "certificate"));
    free(text);
    free(key);

    /* control bytes of a name become '?', and a long one is cut */
    char buf[600];
    int m = snprintf(buf, sizeof buf,
                     "metadata\n    name = \"x\x1by\"\ncurve\n    public-key = %s\n", s_a_pub);
    assert_int_equal(zb_curve_parse(buf, (size_t)m, false, "n", &c, &d), 0);
    assert_string_equal(c.name, "x?y");
    char longname[ZB_CURVE_NAME_MAX + 50];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    m = snprintf(buf, sizeof buf, "metadata\n    name = %s\ncurve\n    public-key = %s\n", longname,
                 s_a_pub);
    assert_int_equal(zb_curve_parse(buf, (size_t)m, false, "n", &c, &d), 0);
    assert_int_equal(strlen(c.name), ZB_CURVE_NAME_MAX);

    /* a prefix of a valid file never reads past its end */
    char *full = s_expand(S_KEY_FILE, &len);
    for (size_t k = 0; k <= len; k++) {
        char *cut = malloc(k ? k : 1);
        assert_non_null(cut);
        memcpy(cut, full, k);
        int rc = zb_curve_parse(cut, k, true, "cut", &c, &d);
        assert_true(rc == 0 || rc == ZB_EFORMAT);
        free(cut);
    }
    free(full);
}

/* Socket options: a client socket needs a secret; a server socket too. */
static void test_socket_options(void **st) {
    (void)st;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    assert_non_null(s);
    zb_curve_cert_t pub = s_a;
    pub.has_secret = false;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_client_socket(s, &pub, s_b.pub, &d), ZB_EINVAL);
    assert_int_equal(zb_curve_client_socket(s, &s_a, s_b.pub, &d), 0);
    uint8_t got[ZB_CURVE_KEY_BYTES];
    size_t n = sizeof got;
    assert_int_equal(zmq_getsockopt(s, ZMQ_CURVE_SERVERKEY, got, &n), 0);
    assert_memory_equal(got, s_b.pub, ZB_CURVE_KEY_BYTES);
    zmq_close(s);
    s = zmq_socket(ctx, ZMQ_ROUTER);
    assert_int_equal(zb_curve_server_socket(s, &pub, "clients", &d), ZB_EINVAL);
    assert_int_equal(zb_curve_server_socket(s, &s_b, "clients", &d), 0);
    int server = 0;
    n = sizeof server;
    assert_int_equal(zmq_getsockopt(s, ZMQ_CURVE_SERVER, &server, &n), 0);
    assert_int_equal(server, 1);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_format_pyzmq),
        cmocka_unit_test(test_no_overwrite),  cmocka_unit_test(test_permissions),
        cmocka_unit_test(test_pub_as_secret), cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_edges),   cmocka_unit_test(test_socket_options),
    };
    return cmocka_run_group_tests_name("curve", tests, setup, teardown);
}
