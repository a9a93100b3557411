/*
 * fuzz_curve.c -- libFuzzer target for zb_curve_parse(), the reader of
 * CurveZMQ key files.
 *
 * Arbitrary bytes are parsed as a certificate, once as a public one and
 * once where a secret one is needed.  Checked invariants:
 *   - the result is 0, ZB_EFORMAT or ZB_ELIMIT; a refusal carries a
 *     sentence that starts with the origin's name; a text over
 *     ZB_CURVE_FILE_MAX is always ZB_ELIMIT;
 *   - what is accepted has no NUL byte and no line over ZB_CURVE_LINE_MAX
 *     bytes (the whole text was read), and names `public-key` or
 *     `secret-key`;
 *   - the two readings agree: a text accepted where a secret is needed is
 *     accepted as a public one with the same keys; one accepted as public
 *     with a secret in it is accepted where a secret is needed;
 *   - with a secret, the public key is the secret's (libzmq derives it
 *     independently); without one, the secret is all zeros;
 *   - the name is printable ASCII of at most ZB_CURVE_NAME_MAX bytes;
 *   - the keys, written back as a certificate, parse to the same keys.
 *
 * Seeds in tests/fuzz/corpus/curve (a .key and a .pub of zbert keygen,
 * pyzmq-style files, CRLF, bare and single-quoted values); the keywords of
 * the format are in tests/fuzz/fuzz_curve.dict:
 *   mkdir -p /tmp/c && build/fuzz/bin/fuzz_curve \
 *       -dict=tests/fuzz/fuzz_curve.dict /tmp/c tests/fuzz/corpus/curve
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "curve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what, const zb_diag_t *d) {
    fprintf(stderr, "invariant broken: %s (%s)\n", what, d ? d->msg : "");
    abort();
}

static int s_parse(const uint8_t *data, size_t size, bool need_secret, zb_curve_cert_t *c) {
    zb_diag_t d = {{0}};
    /* an exact copy: a read past the end is the sanitizer's to catch */
    char *text = malloc(size ? size : 1);
    if (text == NULL) abort();
    if (size) memcpy(text, data, size);
    int rc = zb_curve_parse(text, size, need_secret, "f", c, &d);
    free(text);
    if (rc != 0 && rc != ZB_EFORMAT && rc != ZB_ELIMIT) s_die("unexpected code", &d);
    if (rc != 0 && strncmp(d.msg, "f:", 2) != 0) s_die("a refusal without its origin", &d);
    if (size > ZB_CURVE_FILE_MAX && rc != ZB_ELIMIT) s_die("an oversized text read", &d);
    return rc;
}

static void s_check_accepted(const uint8_t *data, size_t size, const zb_curve_cert_t *c) {
    if (memchr(data, '\0', size) != NULL) s_die("a NUL byte accepted", NULL);
    size_t line = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n') {
            line = 0;
        } else if (++line > ZB_CURVE_LINE_MAX) {
            s_die("a line over the limit accepted", NULL);
        }
    }
    bool named = false;
    for (size_t i = 0; i + 10 <= size && !named; i++)
        named = memcmp(data + i, "public-key", 10) == 0 || memcmp(data + i, "secret-key", 10) == 0;
    if (!named) s_die("a key accepted from a text that names none", NULL);
    size_t n = strnlen(c->name, sizeof c->name);
    if (n > ZB_CURVE_NAME_MAX) s_die("a name over the limit", NULL);
    for (size_t i = 0; i < n; i++)
        if (c->name[i] < 0x20 || c->name[i] > 0x7e) s_die("a name not printable", NULL);
    static const uint8_t zero[ZB_CURVE_KEY_BYTES];
    if (!c->has_secret && memcmp(c->sec, zero, sizeof zero) != 0)
        s_die("a secret without has_secret", NULL);
    if (c->has_secret) {
        char zs[ZB_CURVE_Z85_CHARS + 1], zp[ZB_CURVE_Z85_CHARS + 1];
        uint8_t pub[ZB_CURVE_KEY_BYTES];
        if (zmq_z85_encode(zs, c->sec, sizeof c->sec) == NULL || zmq_curve_public(zp, zs) != 0 ||
            zmq_z85_decode(pub, zp) == NULL || memcmp(pub, c->pub, sizeof pub) != 0)
            s_die("the public key is not the secret's", NULL);
    }
    /* written back, parsed again: the same keys */
    char zp[ZB_CURVE_Z85_CHARS + 1], zs[ZB_CURVE_Z85_CHARS + 1] = "";
    zb_curve_z85(c->pub, zp);
    if (c->has_secret) zb_curve_z85(c->sec, zs);
    char text[256];
    int len = snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n%s%s%s", zp,
                       c->has_secret ? "    secret-key = \"" : "", zs, c->has_secret ? "\"\n" : "");
    zb_curve_cert_t again;
    zb_diag_t d = {{0}};
    if (len <= 0 || zb_curve_parse(text, (size_t)len, c->has_secret, "w", &again, &d) != 0)
        s_die("the keys written back do not parse", &d);
    if (memcmp(again.pub, c->pub, sizeof again.pub) != 0 ||
        memcmp(again.sec, c->sec, sizeof again.sec) != 0 || again.has_secret != c->has_secret)
        s_die("the keys written back parse to others", &d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zb_curve_cert_t pub, sec;
    int rp = s_parse(data, size, false, &pub);
    int rs = s_parse(data, size, true, &sec);
    if (rp == 0) s_check_accepted(data, size, &pub);
    if (rs == 0) {
        s_check_accepted(data, size, &sec);
        if (!sec.has_secret) s_die("accepted where a secret is needed, without one", NULL);
        if (rp != 0 || memcmp(pub.pub, sec.pub, sizeof pub.pub) != 0 ||
            memcmp(pub.sec, sec.sec, sizeof pub.sec) != 0)
            s_die("the two readings disagree", NULL);
    }
    if (rp == 0 && pub.has_secret && rs != 0) s_die("a secret read only as public", NULL);
    return 0;
}
