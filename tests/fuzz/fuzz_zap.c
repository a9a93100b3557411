/*
 * fuzz_zap.c -- libFuzzer target for the broker's ZAP request parser and
 * decision (broker/zap.h).
 *
 * The input is cut into frames: a length byte L, then L bytes (the last
 * frame takes what is left), up to ZB_ZAP_FRAMES_MAX + 4 frames.  Checked
 * invariants, for zb_zap_parse() and zb_zap_decide():
 *   - the status is 200, 400 or 500, and the reason NULL exactly for 200;
 *   - 200 only for exactly 7 frames, version "1.0", mechanism "CURVE", a
 *     domain of the broker's and a 32-byte key, which is copied unchanged;
 *   - the echoed request id is the second frame (empty without one), the
 *     address printable and bounded;
 *   - a decision is 200 exactly when the request parses and the allow
 *     function says yes (here: the key's first byte is even), with the key's
 *     Z85 as user id; otherwise no user id, and the refusal counters move
 *     only for refusals of a known endpoint.
 *
 * Seeds in tests/fuzz/corpus/zap (a CURVE request of each domain, NULL and
 * PLAIN requests, a broken one):
 *   mkdir -p /tmp/z && build/fuzz/bin/fuzz_zap /tmp/z tests/fuzz/corpus/zap
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "zap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static bool s_allow(void *arg, zb_zap_endpoint_t e, const uint8_t key[32]) {
    int *asked = arg;
    if ((unsigned)e >= ZB_ZAP_ENDPOINTS) s_die("asked about an unknown endpoint");
    (*asked)++;
    return key[0] % 2 == 0;
}

static bool s_is(const zb_zap_frame_t *f, const char *s) {
    return f->len == strlen(s) && memcmp(f->p, s, f->len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static zb_zap_t *z;
    if (z == NULL) {
        zb_log_init("fuzz_zap", ZB_LOG_ERROR); /* refusals are logged at warn */
        if (zb_zap_new(&z) != 0) s_die("zb_zap_new");
    }
    enum { MAXF = ZB_ZAP_FRAMES_MAX + 4 };
    zb_zap_frame_t f[MAXF];
    size_t n = 0, off = 0;
    while (off < size && n < MAXF) {
        size_t len = data[off++];
        if (n == MAXF - 1 || len > size - off) len = size - off;
        f[n++] = (zb_zap_frame_t){data + off, len};
        off += len;
    }

    zb_zap_request_t req;
    const char *why = NULL;
    int status = zb_zap_parse(f, n, &req, &why);
    if (status != 200 && status != 400 && status != 500) s_die("status");
    if ((status == 200) != (why == NULL)) s_die("a reason exactly when refused");
    bool well_formed = n == 7 && s_is(&f[0], "1.0") && s_is(&f[5], "CURVE") && f[6].len == 32 &&
                       (s_is(&f[2], "clients") || s_is(&f[2], "workers"));
    if ((status == 200) != well_formed) s_die("200 exactly for a well-formed CURVE request");
    if (status == 200 && memcmp(req.key, f[6].p, 32) != 0) s_die("key copied");
    if (status == 200 && req.endpoint != (s_is(&f[2], "clients") ? 0 : 1)) s_die("endpoint");
    if (n >= 2 ? req.request_id.p != f[1].p || req.request_id.len != f[1].len
               : req.request_id.len != 0)
        s_die("request id echoed");
    size_t alen = strnlen(req.address, sizeof req.address);
    if (alen >= sizeof req.address) s_die("address not terminated");
    for (size_t i = 0; i < alen; i++)
        if (req.address[i] < 0x20 || req.address[i] >= 0x7f) s_die("address not printable");

    uint64_t before[2] = {zb_zap_refused(z, ZB_ZAP_CLIENTS), zb_zap_refused(z, ZB_ZAP_WORKERS)};
    int asked = 0;
    zb_zap_reply_t r;
    zb_zap_decide(z, f, n, s_allow, &asked, 1000, &r);
    bool yes = status == 200 && req.key[0] % 2 == 0;
    if (asked != (status == 200)) s_die("asked exactly about well-formed requests");
    if (strcmp(r.status, yes ? "200" : status == 500 ? "500" : "400") != 0) s_die("reply status");
    if (yes != (strlen(r.user_id) == 40)) s_die("user id exactly when accepted");
    if (r.request_id.p != req.request_id.p || r.request_id.len != req.request_id.len)
        s_die("reply's request id");
    if (strnlen(r.text, sizeof r.text) >= sizeof r.text) s_die("text not terminated");
    uint64_t after[2] = {zb_zap_refused(z, ZB_ZAP_CLIENTS), zb_zap_refused(z, ZB_ZAP_WORKERS)};
    uint64_t moved = (after[0] - before[0]) + (after[1] - before[1]);
    if (moved != (uint64_t)(!yes && req.endpoint >= 0)) s_die("refusal counted once, per endpoint");
    return 0;
}
