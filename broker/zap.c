/*
 * zap.c -- the broker's ZAP handler and refusal log (see zap.h).
 */
#include "zap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

static const char *const s_domains[ZB_ZAP_ENDPOINTS] = {"clients", "workers"};

const char *zb_zap_domain(zb_zap_endpoint_t e) {
    return (unsigned)e < ZB_ZAP_ENDPOINTS ? s_domains[e] : "?";
}

/* A key's refusals on one endpoint as the log remembers them. */
typedef struct s_seen {
    uint8_t key[ZB_CURVE_KEY_BYTES];
    int endpoint;       /* a zb_zap_endpoint_t, or ZB_ZAP_ENDPOINTS (none) */
    bool used, keyless; /* keyless: refusals of messages without a key */
    uint64_t last_ms;   /* when its last line was written */
    uint64_t left_out;  /* its refusals since, not logged */
} s_seen_t;

struct zb_zap {
    uint64_t refused[ZB_ZAP_ENDPOINTS];
    s_seen_t seen[ZB_ZAP_LOG_KEYS];
    size_t seen_next; /* the slot a new key takes (oldest first) */
    uint64_t second, lines, left_out;
};

/* --- parsing ---------------------------------------------------------------- */

static bool s_is(const zb_zap_frame_t *f, const char *s) {
    size_t n = strlen(s);
    return f->len == n && (n == 0 || memcmp(f->p, s, n) == 0);
}

/* A printable copy of a peer's bytes for the log. */
static void s_printable(char *out, size_t cap, const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i < n && i + 1 < cap; i++) out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    out[i] = '\0';
}

int zb_zap_parse(const zb_zap_frame_t *f, size_t n, zb_zap_request_t *req, const char **why) {
    memset(req, 0, sizeof *req);
    req->endpoint = -1;
    *why = NULL;
    /* The request id is echoed whatever else is wrong, so that libzmq can
     * match the answer even to a request it should not have sent. */
    if (n >= 2) req->request_id = f[1];
    if (n >= 4) s_printable(req->address, sizeof req->address, f[3].p, f[3].len);
    if (n < 6) return *why = "fewer frames than a ZAP request has", 500;
    if (n > ZB_ZAP_FRAMES_MAX) return *why = "more frames than a ZAP request has", 500;
    if (!s_is(&f[0], "1.0")) return *why = "not ZAP version 1.0", 500;
    for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++)
        if (s_is(&f[2], s_domains[e])) req->endpoint = e;
    if (!s_is(&f[5], "CURVE")) {
        /* NULL or PLAIN would authenticate nobody: only CURVE is served. */
        return *why = "only CURVE is accepted", 400;
    }
    if (n != 7 || f[6].len != ZB_CURVE_KEY_BYTES)
        return *why = "a CURVE request carries one 32-byte key", 500;
    memcpy(req->key, f[6].p, ZB_CURVE_KEY_BYTES);
    req->has_key = true;
    if (req->endpoint < 0) return *why = "not a domain of this broker", 400;
    return 200;
}

/* --- the refusal log ------------------------------------------------------------ */

static void s_flush_left_out(zb_zap_t *z, uint64_t sec) {
    if (sec == z->second) return;
    if (z->left_out > 0)
        ZB_LOG(ZB_LOG_WARN, "%llu more refusals were not logged", (unsigned long long)z->left_out);
    z->second = sec;
    z->lines = 0;
    z->left_out = 0;
}

void zb_zap_tick(zb_zap_t *z, uint64_t now_ms) {
    s_flush_left_out(z, now_ms / 1000);
}

void zb_zap_refuse(zb_zap_t *z, zb_zap_endpoint_t e, const uint8_t *key, const char *address,
                   const char *why, uint64_t now_ms) {
    if ((unsigned)e < ZB_ZAP_ENDPOINTS)
        z->refused[e]++;
    else
        e = ZB_ZAP_ENDPOINTS;
    /* This key's line, unless one was written in the last ZB_ZAP_LOG_KEY_MS. */
    s_seen_t *s = NULL;
    for (size_t i = 0; i < ZB_ZAP_LOG_KEYS && s == NULL; i++) {
        s_seen_t *x = &z->seen[i];
        if (x->used && x->endpoint == (int)e &&
            (key ? !x->keyless && memcmp(x->key, key, sizeof x->key) == 0 : x->keyless))
            s = x;
    }
    if (s != NULL && now_ms - s->last_ms < ZB_ZAP_LOG_KEY_MS) {
        s->left_out++;
        return;
    }
    s_flush_left_out(z, now_ms / 1000);
    if (z->lines >= ZB_ZAP_LOG_LINES_PER_S) {
        z->left_out++;
        if (s) s->left_out++;
        return;
    }
    z->lines++;
    uint64_t before = 0;
    if (s == NULL) {
        s = &z->seen[z->seen_next];
        z->seen_next = (z->seen_next + 1) % ZB_ZAP_LOG_KEYS;
        memset(s, 0, sizeof *s);
        s->used = true;
        s->endpoint = (int)e;
        s->keyless = key == NULL;
        if (key) memcpy(s->key, key, sizeof s->key);
    } else {
        before = s->left_out;
    }
    s->last_ms = now_ms;
    s->left_out = 0;
    char who[ZB_CURVE_Z85_CHARS + 16] = "a peer without a key";
    if (key) {
        char z85[ZB_CURVE_Z85_CHARS + 1];
        snprintf(who, sizeof who, "key %s", zb_curve_z85(key, z85));
    }
    char more[64] = "";
    if (before > 0)
        snprintf(more, sizeof more, " (%llu more since its last line)", (unsigned long long)before);
    ZB_LOG(ZB_LOG_WARN, "%s: refused %s from %s: %s%s",
           (unsigned)e < ZB_ZAP_ENDPOINTS ? s_domains[e] : "ZAP", who,
           address && *address ? address : "an unknown address", why, more);
}

uint64_t zb_zap_refused(const zb_zap_t *z, zb_zap_endpoint_t e) {
    return (unsigned)e < ZB_ZAP_ENDPOINTS ? z->refused[e] : 0;
}

/* --- deciding ------------------------------------------------------------------------ */

int zb_zap_new(zb_zap_t **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : ZB_ENOMEM;
}

void zb_zap_destroy(zb_zap_t **z) {
    if (z == NULL || *z == NULL) return;
    free(*z);
    *z = NULL;
}

static void s_reply(zb_zap_reply_t *out, const char *status, const char *text) {
    memcpy(out->status, status, 4);
    snprintf(out->text, sizeof out->text, "%s", text);
}

void zb_zap_decide(zb_zap_t *z, const zb_zap_frame_t *f, size_t n, zb_zap_allowed_fn allowed,
                   void *arg, uint64_t now_ms, zb_zap_reply_t *out) {
    memset(out, 0, sizeof *out);
    zb_zap_request_t req;
    const char *why;
    int status = zb_zap_parse(f, n, &req, &why);
    out->request_id = req.request_id;
    zb_zap_endpoint_t e = req.endpoint >= 0 ? (zb_zap_endpoint_t)req.endpoint : ZB_ZAP_ENDPOINTS;
    if (status == 200 && allowed(arg, e, req.key)) {
        s_reply(out, "200", "OK");
        zb_curve_z85(req.key, out->user_id);
        ZB_LOG(ZB_LOG_DEBUG, "%s: key %s from %s accepted", s_domains[e], out->user_id,
               req.address[0] ? req.address : "an unknown address");
        return;
    }
    if (status == 200) {
        status = 400;
        why = e == ZB_ZAP_CLIENTS ? "not in allow-clients" : "not in allow-workers";
    }
    /* The peer learns that it was refused, not which list it is missing
     * from: the lists are the operator's business. */
    s_reply(out, status == 400 ? "400" : "500",
            status == 400 ? "authentication failed" : "malformed ZAP request");
    zb_zap_refuse(z, e, req.has_key ? req.key : NULL, req.address, why, now_ms);
}

/* --- the socket ------------------------------------------------------------------------- */

int zb_zap_bind(void *ctx, void **out, zb_diag_t *d) {
    *out = NULL;
    void *s = zmq_socket(ctx, ZMQ_REP);
    if (s == NULL) return zb_diag_set(d, ZB_EIO, "ZAP socket: %s", zmq_strerror(errno));
    int zero = 0;
    if (zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) < 0 || zmq_bind(s, ZB_ZAP_ENDPOINT) < 0) {
        int e = errno;
        zmq_close(s);
        return zb_diag_set(d, ZB_EIO, "ZAP handler: cannot bind %s: %s", ZB_ZAP_ENDPOINT,
                           zmq_strerror(e));
    }
    *out = s;
    return 0;
}

/* Sends the reply's six frames; false when the socket refused one. */
static bool s_send_reply(void *rep, const zb_zap_reply_t *r) {
    const struct {
        const void *p;
        size_t n;
    } fr[6] = {{"1.0", 3},
               {r->request_id.p, r->request_id.len},
               {r->status, 3},
               {r->text, strlen(r->text)},
               {r->user_id, strlen(r->user_id)},
               {"", 0}};
    for (int i = 0; i < 6; i++)
        if (zmq_send(rep, fr[i].n ? fr[i].p : "", fr[i].n, i < 5 ? ZMQ_SNDMORE : 0) < 0)
            return false;
    return true;
}

int zb_zap_serve(zb_zap_t *z, void *rep, zb_zap_allowed_fn allowed, void *arg, int max,
                 uint64_t now_ms) {
    int done = 0;
    while (done < max) {
        zmq_msg_t m[ZB_ZAP_FRAMES_MAX];
        zb_zap_frame_t f[ZB_ZAP_FRAMES_MAX];
        size_t n = 0, kept = 0;
        int more = 1;
        zmq_msg_init(&m[0]);
        if (zmq_msg_recv(&m[0], rep, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m[0]);
            break;
        }
        /* The rest of a multipart message is there with its first frame;
         * frames past the limit are read and dropped. */
        for (;;) {
            more = zmq_msg_more(&m[kept]);
            n++;
            kept++;
            if (!more) break;
            if (kept == ZB_ZAP_FRAMES_MAX) {
                zmq_msg_t x;
                zmq_msg_init(&x);
                while (more && zmq_msg_recv(&x, rep, 0) >= 0) {
                    n++;
                    more = zmq_msg_more(&x);
                }
                zmq_msg_close(&x);
                break;
            }
            zmq_msg_init(&m[kept]);
            if (zmq_msg_recv(&m[kept], rep, 0) < 0) {
                zmq_msg_close(&m[kept]);
                break;
            }
        }
        for (size_t i = 0; i < kept; i++)
            f[i] = (zb_zap_frame_t){zmq_msg_data(&m[i]), zmq_msg_size(&m[i])};
        zb_zap_reply_t r;
        /* n, not kept: a request over the limit is refused as such. */
        zb_zap_decide(z, f, n > kept ? ZB_ZAP_FRAMES_MAX + 1 : kept, allowed, arg, now_ms, &r);
        if (!s_send_reply(rep, &r))
            ZB_LOG(ZB_LOG_ERROR, "ZAP handler: cannot answer: %s", zmq_strerror(errno));
        for (size_t i = 0; i < kept; i++) zmq_msg_close(&m[i]);
        done++;
    }
    return done;
}
