/*
 * client.c -- the zbert client object: one DEALER socket to a broker,
 * requests, events, retry, status (the "client", "events" and "status"
 * sections of zbert.h).
 *
 * Requests.  An open request is an s_req_t in c->reqs, sorted by handle
 * (handles only grow, so submitting appends; lookups bisect).  Its wire id
 * is c->prefix followed by the handle in decimal, so an id read off the
 * wire maps back to its request in O(log n) without a second table.  Pings
 * and status requests use the same prefix followed by 'p' or 's': they can
 * never be mistaken for a request.  A request keeps its encoded `embed`
 * body for resending, and one bit per text received.
 *
 * A request is in one of four states:
 *   to send     want_send, retry_at 0: sent as soon as the socket takes it
 *               (held back while the broker in use is closing);
 *   backing off want_send, retry_at > 0: the broker said busy;
 *   outstanding sent_at > 0: the broker has it (as far as we know);
 *   resuming    sent_at > 0 and resume: it was at a broker we left, or one
 *               that said closing; the next status reply's `open` says
 *               whether the broker in use holds it (outstanding again) or
 *               not (to send, with `have`: the texts already received).
 *
 * Liveness.  quiet_since is when the broker last sent anything, or when we
 * started waiting for it (a send while nothing was outstanding).  While
 * something is outstanding: after ping_ms of quiet a `status` ping goes out
 * (again every ping_ms); after retry_ms of quiet, with a ping unanswered for
 * ping_ms, the broker is presumed gone: an outage begins (down_since), and
 * s_reconnect() moves to the next endpoint, pings first and resumes.  While
 * nothing answers, reconnections follow at reconnect_at, a back-off that
 * doubles from 2 x retry_ms up to S_BACKOFF_MAX_MS with jitter; hearing
 * anything but `closing` ends the outage, and an outage that lasts
 * outage_ms fails every open request.  The socket is always drained before
 * these checks, so a caller that was busy elsewhere cannot cause a false
 * alarm: an answer already waiting counts.
 *
 * Events.  Decoded results become s_event_t blocks in a FIFO; a part is
 * split into runs of texts not seen before (after a resend the broker may
 * send texts again), each run its own event, so every text is handed out
 * exactly once.  Each event is one allocation holding its arrays.
 *
 * Thread-safety: a client belongs to one thread at a time.
 */
#include "client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "curve.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "msg.h"
#include "options.h"
#include "random.h"
#include "zbert.h"

_Static_assert((int)ZBERT_ENOMEM == (int)ZB_ENOMEM && (int)ZBERT_EINVAL == (int)ZB_EINVAL &&
                   (int)ZBERT_EIO == (int)ZB_EIO && (int)ZBERT_EFORMAT == (int)ZB_EFORMAT &&
                   (int)ZBERT_ELIMIT == (int)ZB_ELIMIT && (int)ZBERT_EUTF8 == (int)ZB_EUTF8 &&
                   (int)ZBERT_ENOTFOUND == (int)ZB_ENOTFOUND &&
                   (int)ZBERT_EUNSUPPORTED == (int)ZB_EUNSUPPORTED &&
                   (int)ZBERT_EPROTO == (int)ZB_EPROTO && (int)ZBERT_EBUSY == (int)ZB_EBUSY &&
                   (int)ZBERT_ETIMEOUT == (int)ZB_ETIMEOUT &&
                   (int)ZBERT_ECANCELED == (int)ZB_ECANCELED &&
                   (int)ZBERT_EDENIED == (int)ZB_EDENIED,
               "the public error codes are the service's");
/* Defaults of zbert_config_t (documented in zbert.h). */
#define S_RETRY_MS_DEFAULT  3000u
#define S_RETRY_MS_MIN      50u
#define S_TRIES_DEFAULT     3u
#define S_REQUESTS_DEFAULT  64u
#define S_TEXTS_DEFAULT     1000000u
#define S_BYTES_DEFAULT     (1u << 30)
#define S_OUTAGE_MS_DEFAULT 300000u

/* Reconnections while no broker answers: after retry_ms x 2, x 4, ... up
 * to this (or retry_ms, when larger), each 20 % shorter or longer at
 * random, so that the clients of a broker that went away do not all come
 * back in the same millisecond. */
#define S_BACKOFF_MAX_MS     30000u
#define S_BACKOFF_JITTER_PCT 20u

/* A `busy` answer is retried after 100 ms, doubling up to 5 s: quick when
 * the queue drains fast, a trickle when it stays full. */
#define S_BUSY_BACKOFF_MIN_MS 100u
#define S_BUSY_BACKOFF_MAX_MS 5000u

/* Messages drained from the socket per wake-up before timers are looked
 * at again: keeps deadlines and pings timely under a flood. */
#define S_DRAIN_MAX 256

/* ZMQ_RCVHWM: parts the socket buffers when the caller is slow to take
 * events.  A part is up to ~100 MB at worst (64 texts x 512 rows x 768
 * floats), usually far less; this bounds what a stalled caller accumulates
 * in ZeroMQ while leaving the broker room to stream. */
#define S_RCVHWM 256

/* Bytes ZMQ_MAXMSGSIZE allows above the body limit: none are needed (a body
 * is the whole frame), a little slack keeps an off-by-some encoder on the
 * other side from turning into silent drops. */
#define S_MSG_SLACK 4096

/* How long the last messages (cancels) may take to leave on destroy. */
#define S_LINGER_CLOSE_MS 250

/* Wake-up interval while a message waits for room in the socket. */
#define S_SEND_RETRY_MS 10

/* Bytes of the routing id: 16 random bytes, the first not 0 (libzmq
 * reserves ids starting with 0 for those it makes up), are unique among a
 * broker's clients without coordination. */
#define S_ROUTING_ID_BYTES 16

/* --- time ------------------------------------------------------------------ */

/* 0 means "unset" in every timestamp below, so the clock starts at 1. */
static uint64_t s_now_ms(void) {
    return zb_clock_ms() + 1u;
}

/* --- structures ----------------------------------------------------------- */

typedef struct s_event {
    zbert_event_t pub;    /* first: an event pointer is an s_event pointer */
    struct s_event *next; /* the client's queue */
    /* PART, per text of the run (count entries): */
    const uint32_t *rows;
    const uint64_t *row_start; /* [count + 1] first row of each text */
    const uint8_t *truncated;
    const int32_t *status;   /* 0 or ZBERT_E* */
    const char **code_name;  /* static names, NULL when ok */
    const char **message;    /* NULL when ok */
    const uint32_t *offsets; /* [2 * n_rows] or NULL */
    const uint32_t *byte_offsets;
    const uint32_t *ids; /* [n_rows] or NULL */
    /* token metadata, [n_rows] each, or NULL */
    const uint32_t *sentence;
    const int32_t *piece_id; /* -1 for an oov row */
    const bool *word_start;
    const bool *oov;
    char id[ZB_MSG_ID_BYTES_MAX + 1];
    char model[ZB_MSG_NAME_BYTES_MAX + 1]; /* pub.model points here, or is NULL */
} s_event_t;

typedef struct s_req {
    uint64_t handle;
    char id[ZB_MSG_ID_BYTES_MAX + 1];
    size_t id_len;
    void *user;
    zb_options_t opt;
    uint32_t deadline_ms; /* the public options' */
    uint32_t n_texts;
    size_t text_bytes;
    uint8_t *body; /* the `embed` as last encoded (kept for resends) */
    size_t body_len;
    uint64_t deadline_at; /* 0: none */
    uint64_t sent_at;     /* > 0: outstanding since then */
    uint64_t retry_at;    /* > 0: backing off after `busy` until then */
    uint32_t backoff_ms;  /* next busy delay */
    uint32_t tries;       /* sends since it last heard anything (for the log) */
    uint32_t no_model;    /* `no_model` answers so far */
    bool want_send;
    bool fresh;     /* body as submitted, not yet sent */
    bool resent;    /* sent again: `duplicate_id` answering it means an
                     * earlier copy is still open there */
    bool resume;    /* outstanding at a broker that may no longer hold it:
                     * decided by the next status reply (file header) */
    bool moved;     /* it was at a broker we left: parts sent into that
                     * connection may be lost without the broker knowing */
    uint32_t dim;   /* 0 until the first part */
    uint32_t n_got; /* texts delivered */
    uint8_t *got;   /* [(n_texts + 7) / 8] bits */

    /* the model of its results: the caller's (pinned), else the first
     * part's; "" while unknown */
    bool pinned;
    char model[ZB_MSG_NAME_BYTES_MAX + 1];
    size_t model_len;
} s_req_t;

struct zbert_client {
    void *ctx;
    void *sock;
    char **brokers;
    size_t n_brokers;
    size_t cur; /* the endpoint in use */
    /* CURVE, or NULL: kept for every socket opened, failover included */
    zb_curve_cert_t *curve;                    /* this client's key pair; zeroed
                                                * before it is freed */
    uint8_t (*broker_pub)[ZB_CURVE_KEY_BYTES]; /* [n_brokers] each endpoint's
                                                * server key, with curve */
    uint32_t retry_ms, ping_ms, tries, outage_ms;
    size_t requests_max, texts_max, bytes_max;
    uint8_t routing_id[S_ROUTING_ID_BYTES]; /* every socket's, for the client's life */
    char prefix[16];                        /* "z<8 hex>-" */
    size_t prefix_len;
    uint64_t next_handle;
    uint64_t n_pings, n_status;
    s_req_t **reqs; /* [n_reqs] sorted by handle */
    size_t n_reqs;
    size_t texts_open, bytes_open;
    s_event_t *q_head, *q_tail;
    /* liveness of the current connection */
    uint64_t quiet_since;
    uint64_t ping_at;       /* last ping since the broker last spoke; 0: none */
    uint64_t blocked_since; /* the socket has refused every message since;
                             * 0: it took the last one */
    bool warned;            /* a malformed message was logged on this socket */
    bool warned_unknown;    /* an ignored message (unknown type, other v) was */
    bool closing;           /* the broker in use said it is stopping: no
                             * request goes to it */
    /* an outage: no broker serving us */
    uint64_t down_since;   /* since when no broker has answered (or the one
                            * in use said closing); 0: no outage */
    uint64_t reconnect_at; /* the next reconnection, while the broker in use
                            * stays silent; 0: silence not yet noticed */
    uint32_t n_reconnects; /* reconnections in this outage: the back-off's
                            * exponent */
    /* zbert_status() in progress */
    bool st_wait, st_want_send;
    uint64_t st_sent_at;
    char st_id[32];
    zbert_status_t *st_out;
    int st_rc;
    zb_diag_t st_diag;
};

/* --- small helpers --------------------------------------------------------- */

const char *zbert_strerror(int code) {
    return zb_strerror(code);
}

static int s_diag(zbert_diag_t *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_diag(zbert_diag_t *d, int code, const char *fmt, ...) {
    if (d == NULL) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return code;
}

int zbert_log_level(const char *level) {
    int l = zb_log_parse_level(level);
    if (l < 0) return ZBERT_EINVAL;
    zb_log_level = l;
    return 0;
}

/* A protocol error code as a ZBERT_E* code. */
static int s_code_err(zb_msg_code_t code) {
    switch (code) {
    case ZB_MSG_CODE_TOO_LARGE:
        return ZBERT_ELIMIT;
    case ZB_MSG_CODE_VERSION:
        return ZBERT_EUNSUPPORTED;
    case ZB_MSG_CODE_BUSY:
        return ZBERT_EBUSY;
    case ZB_MSG_CODE_TIMEOUT:
        return ZBERT_ETIMEOUT;
    case ZB_MSG_CODE_CANCELED:
        return ZBERT_ECANCELED;
    case ZB_MSG_CODE_NO_MODEL:
        return ZBERT_ENOTFOUND;
    case ZB_MSG_CODE_INTERNAL:
        return ZBERT_EIO;
    case ZB_MSG_CODE_BAD_UTF8:
        return ZBERT_EUTF8;
    case ZB_MSG_CODE_UNSUPPORTED:
        return ZBERT_EUNSUPPORTED;
    case ZB_MSG_CODE_FORBIDDEN:
        return ZBERT_EDENIED;
    default:
        return ZBERT_EPROTO; /* bad_request, duplicate_id, unknown */
    }
}

static const char *s_code_name(zb_msg_code_t code) {
    return code == ZB_MSG_CODE_UNKNOWN ? "unknown" : zb_msg_code_name(code);
}

/* --- public <-> internal: the one place (client.h) ----------------------------- */

/* Each enum value by name on both sides: the public values equal the
 * internal ones, but nothing here relies on it. */
static bool s_level_in(zbert_level_t v, zb_level_t *out) {
    switch (v) {
    case ZBERT_LEVEL_TOKEN:
        *out = ZB_LEVEL_TOKEN;
        return true;
    case ZBERT_LEVEL_WORDPIECE:
        *out = ZB_LEVEL_WORDPIECE;
        return true;
    case ZBERT_LEVEL_SENTENCE:
        *out = ZB_LEVEL_SENTENCE;
        return true;
    }
    return false;
}

static bool s_pooling_in(zbert_pooling_t v, zb_pooling_t *out) {
    switch (v) {
    case ZBERT_POOLING_CLS:
        *out = ZB_POOLING_CLS;
        return true;
    case ZBERT_POOLING_MEAN:
        *out = ZB_POOLING_MEAN;
        return true;
    }
    return false;
}

static bool s_token_vector_in(zbert_token_vector_t v, zb_token_vector_t *out) {
    switch (v) {
    case ZBERT_TOKEN_VECTOR_FIRST:
        *out = ZB_TOKEN_VECTOR_FIRST;
        return true;
    case ZBERT_TOKEN_VECTOR_MEAN:
        *out = ZB_TOKEN_VECTOR_MEAN;
        return true;
    }
    return false;
}

static bool s_compat_in(zbert_compat_t v, zb_compat_t *out) {
    switch (v) {
    case ZBERT_COMPAT_NONE:
        *out = ZB_COMPAT_NONE;
        return true;
    case ZBERT_COMPAT_SPARKNLP:
        *out = ZB_COMPAT_SPARKNLP;
        return true;
    }
    return false;
}

zbert_level_t zb_client_level_to_public(zb_level_t level) {
    switch (level) {
    case ZB_LEVEL_WORDPIECE:
        return ZBERT_LEVEL_WORDPIECE;
    case ZB_LEVEL_SENTENCE:
        return ZBERT_LEVEL_SENTENCE;
    default:
        return ZBERT_LEVEL_TOKEN;
    }
}

int zb_client_options_from_public(const zbert_options_t *in, zb_options_t *out, zb_diag_t *d) {
    *out = (zb_options_t){.normalize = in->normalize,
                          .windows = in->windows,
                          .sentences = in->sentences,
                          .token_meta = in->token_meta};
    if (!s_level_in(in->level, &out->level) || !s_pooling_in(in->pooling, &out->pooling))
        return zb_diag_set(d, ZB_EINVAL, "level or pooling out of range");
    if (!s_token_vector_in(in->token_vector, &out->token_vector) ||
        !s_compat_in(in->compat, &out->compat))
        return zb_diag_set(d, ZB_EINVAL, "token_vector or compat out of range");
    switch (zb_options_broken(out)) {
    case ZB_OPTIONS_RULE_NONE:
        return 0;
    case ZB_OPTIONS_RULE_COMPAT_LEVEL:
        return zb_diag_set(d, ZB_EINVAL,
                           "compat sparknlp gives token vectors: use the token level");
    case ZB_OPTIONS_RULE_SENTENCES_LEVEL:
        return zb_diag_set(d, ZB_EINVAL, "sentences applies to the token and wordpiece levels");
    default:
        return zb_options_check(out, d); /* a range: ruled out above */
    }
}

void zb_client_options_to_public(const zb_options_t *in, zbert_options_t *out) {
    *out = (zbert_options_t){
        .level = zb_client_level_to_public(in->level),
        .pooling = in->pooling == ZB_POOLING_MEAN ? ZBERT_POOLING_MEAN : ZBERT_POOLING_CLS,
        .normalize = in->normalize,
        .windows = in->windows,
        .sentences = in->sentences,
        .token_vector = in->token_vector == ZB_TOKEN_VECTOR_MEAN ? ZBERT_TOKEN_VECTOR_MEAN
                                                                 : ZBERT_TOKEN_VECTOR_FIRST,
        .compat = in->compat == ZB_COMPAT_SPARKNLP ? ZBERT_COMPAT_SPARKNLP : ZBERT_COMPAT_NONE,
        .token_meta = in->token_meta};
}

bool zb_client_token_meta(const zbert_text_t *t, zb_token_meta_t *meta) {
    if (t->sentence == NULL || t->piece_id == NULL || t->word_start == NULL || t->oov == NULL)
        return false;
    for (uint32_t i = 0; i < t->n_rows; i++)
        meta[i] = (zb_token_meta_t){.sentence = t->sentence[i],
                                    .piece_id = t->piece_id[i],
                                    .begin16 = -1,
                                    .end16 = -1,
                                    .word_start = t->word_start[i],
                                    .oov = t->oov[i]};
    return true;
}

static bool s_bit(const uint8_t *bits, size_t i) {
    return (bits[i >> 3] >> (i & 7)) & 1u;
}

/* --- the socket ------------------------------------------------------------ */

static int s_open_socket(zbert_client_t *c, zbert_diag_t *d) {
    const char *ep = c->brokers[c->cur];
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (s == NULL) return s_diag(d, ZBERT_EIO, "cannot create a socket: %s", zmq_strerror(errno));
    int64_t maxmsg = (int64_t)ZB_MSG_BODY_MAX + S_MSG_SLACK;
    int linger = 0; /* a socket is closed here because its broker went quiet */
    int rcvhwm = S_RCVHWM;
    /* every open request, its cancel and a few pings fit without EAGAIN */
    size_t want = 2 * c->requests_max + 64;
    int sndhwm = want > 100000 ? 100000 : (int)want;
    /* The same routing id on every socket: a broker takes a reconnection
     * for the client it knew (ZMQ_ROUTER_HANDOVER on its side) and keeps
     * its open requests for it (PROTOCOL.md 10). */
    if (zmq_setsockopt(s, ZMQ_ROUTING_ID, c->routing_id, sizeof c->routing_id) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm)) {
        int e = errno;
        zmq_close(s);
        return s_diag(d, ZBERT_EIO, "cannot set socket options: %s", zmq_strerror(e));
    }
    /* CURVE options apply to the connections made after them: before connect */
    zb_diag_t zd = {{0}};
    int rc = c->curve ? zb_curve_client_socket(s, c->curve, c->broker_pub[c->cur], &zd) : 0;
    if (rc != 0) {
        zmq_close(s);
        return s_diag(d, rc, "%s: %s", ep, zb_diag_text(&zd, rc));
    }
    if (zmq_connect(s, ep) != 0) {
        int e = errno;
        zmq_close(s);
        return s_diag(d, ZBERT_EINVAL, "cannot connect to '%s': %s", ep, zmq_strerror(e));
    }
    c->sock = s;
    c->quiet_since = s_now_ms();
    c->ping_at = 0;
    c->blocked_since = 0;
    c->warned = false;
    c->warned_unknown = false;
    c->closing = false;
    return 0;
}

/* Sends one body.  Returns 0, 1 when the socket cannot take it now (its
 * queue is full: try later), or ZBERT_EIO. */
static int s_send(zbert_client_t *c, const void *body, size_t len) {
    for (;;) {
        if (zmq_send(c->sock, body, len, ZMQ_DONTWAIT) >= 0) {
            c->blocked_since = 0;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            /* A full queue, or no connection at all: libzmq gives a DEALER
             * no pipe until a handshake succeeds, and never retries one the
             * broker refused (a key it does not allow, a wrong broker key)
             * on the same socket.  s_tick treats a socket that refuses
             * everything for retry_ms as a silent broker. */
            if (c->blocked_since == 0) c->blocked_since = s_now_ms();
            return 1;
        }
        ZB_LOG(ZB_LOG_ERROR, "send to %s failed: %s", c->brokers[c->cur], zmq_strerror(errno));
        return ZBERT_EIO;
    }
}

/* True when the broker owes an answer: a request is outstanding or a status
 * is being asked for; or, the broker being closing, a request waits to be
 * sent (pings find out when a broker takes requests again). */
static bool s_outstanding(const zbert_client_t *c) {
    if (c->st_wait && c->st_sent_at) return true;
    for (size_t i = 0; i < c->n_reqs; i++)
        if (c->reqs[i]->sent_at || (c->closing && c->reqs[i]->want_send)) return true;
    return false;
}

static int s_send_cancel(zbert_client_t *c, const s_req_t *r) {
    zb_msg_cancel_t m = {.id = {r->id, r->id_len}};
    uint8_t *body = NULL;
    size_t len = 0;
    int rc = zb_msg_encode_cancel(&m, &body, &len, NULL);
    if (rc != 0) return rc;
    rc = s_send(c, body, len); /* a full socket loses the cancel: the broker
                                * then computes a little for nothing */
    free(body);
    return rc < 0 ? rc : 0;
}

static int s_send_status(zbert_client_t *c, const char *id) {
    zb_msg_status_t m = {.id = {id, strlen(id)}};
    uint8_t *body = NULL;
    size_t len = 0;
    int rc = zb_msg_encode_status(&m, &body, &len, NULL);
    if (rc != 0) return rc;
    rc = s_send(c, body, len);
    free(body);
    return rc;
}

/* A liveness ping: a `status` under a ping id, whose answer also lists the
 * requests the broker holds for us.  Returns 0 (sent, or left for s_tick
 * when the socket is full) or ZBERT_EIO. */
static int s_ping(zbert_client_t *c, uint64_t now) {
    char id[40];
    snprintf(id, sizeof id, "%sp%llu", c->prefix, (unsigned long long)++c->n_pings);
    int rc = s_send_status(c, id);
    if (rc < 0) return rc;
    if (rc == 0) c->ping_at = now;
    return 0;
}

/* --- events ------------------------------------------------------------------ */

static void s_enqueue(zbert_client_t *c, s_event_t *e) {
    e->next = NULL;
    if (c->q_tail)
        c->q_tail->next = e;
    else
        c->q_head = e;
    c->q_tail = e;
}

void zbert_event_destroy(zbert_event_t **ev) {
    if (ev == NULL || *ev == NULL) return;
    free(*ev); /* one block: the s_event_t and its arrays */
    *ev = NULL;
}

/* Reserves bytes at alignment in a block being laid out; returns the
 * offset.  *ovf is set when the total overflows. */
static size_t s_take(size_t *size, size_t bytes, size_t align, bool *ovf) {
    size_t off = (*size + align - 1) & ~(align - 1);
    if (off < *size || __builtin_add_overflow(off, bytes, size)) *ovf = true;
    return off;
}

/* A DONE or ERROR event of r (message copied, NUL-terminated). */
static s_event_t *s_event_end(const s_req_t *r, zbert_event_type_t type, const char *message) {
    size_t mlen = message ? strlen(message) : 0;
    s_event_t *e = calloc(1, sizeof *e + mlen + 1);
    if (e == NULL) return NULL;
    char *m = (char *)(e + 1);
    if (mlen) memcpy(m, message, mlen);
    m[mlen] = '\0';
    memcpy(e->id, r->id, r->id_len + 1);
    e->pub = (zbert_event_t){.type = type,
                             .request = r->handle,
                             .id = e->id,
                             .user = r->user,
                             .message = type == ZBERT_EVENT_ERROR ? m : NULL};
    return e;
}

/* Sets e's model to model[0..len) (none when len is 0). */
static void s_event_model(s_event_t *e, const char *model, size_t len) {
    if (len == 0 || len > ZB_MSG_NAME_BYTES_MAX) return;
    memcpy(e->model, model, len);
    e->model[len] = '\0';
    e->pub.model = e->model;
}

/* --- requests ---------------------------------------------------------------- */

static void s_req_free(s_req_t *r) {
    if (r == NULL) return;
    free(r->body);
    free(r->got);
    free(r);
}

static size_t s_req_pos(const zbert_client_t *c, uint64_t handle, bool *found) {
    size_t lo = 0, hi = c->n_reqs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->reqs[mid]->handle < handle)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < c->n_reqs && c->reqs[lo]->handle == handle;
    return lo;
}

static s_req_t *s_req_find(const zbert_client_t *c, uint64_t handle) {
    bool found;
    size_t i = s_req_pos(c, handle, &found);
    return found ? c->reqs[i] : NULL;
}

/* The request a wire id names, or NULL (someone else's id, a ping, a
 * request already finished). */
static s_req_t *s_req_by_id(const zbert_client_t *c, zb_msg_str_t id) {
    if (id.len <= c->prefix_len || id.len > c->prefix_len + 20 ||
        memcmp(id.ptr, c->prefix, c->prefix_len) != 0)
        return NULL;
    uint64_t h = 0;
    for (size_t i = c->prefix_len; i < id.len; i++) {
        unsigned char ch = (unsigned char)id.ptr[i];
        if (ch < '0' || ch > '9' || (i == c->prefix_len && ch == '0')) return NULL;
        if (__builtin_mul_overflow(h, 10u, &h) || __builtin_add_overflow(h, ch - '0', &h))
            return NULL;
    }
    return s_req_find(c, h);
}

/* Removes r from the table and frees it. */
static void s_req_remove(zbert_client_t *c, s_req_t *r) {
    bool found;
    size_t i = s_req_pos(c, r->handle, &found);
    if (found) {
        memmove(&c->reqs[i], &c->reqs[i + 1], (c->n_reqs - i - 1) * sizeof *c->reqs);
        c->n_reqs--;
    }
    c->texts_open -= r->n_texts;
    c->bytes_open -= r->text_bytes;
    s_req_free(r);
}

/* Ends r with an ERROR event and removes it.  The broker is told to drop
 * it when it may still be working on it.  Returns 0 or ZBERT_ENOMEM. */
static int s_fail(zbert_client_t *c, s_req_t *r, int code, const char *code_name, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));
static int s_fail(zbert_client_t *c, s_req_t *r, int code, const char *code_name, const char *fmt,
                  ...) {
    char msg[ZB_MSG_MESSAGE_BYTES_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->sent_at) s_send_cancel(c, r);
    s_event_t *e = s_event_end(r, ZBERT_EVENT_ERROR, msg);
    if (e == NULL) return ZBERT_ENOMEM;
    e->pub.code = code;
    e->pub.code_name = code_name;
    ZB_LOG(ZB_LOG_DEBUG, "request %s failed: %s: %s", r->id, code_name, msg);
    s_enqueue(c, e);
    s_req_remove(c, r);
    return 0;
}

/* Ends r with a DONE event and removes it. */
static int s_finish(zbert_client_t *c, s_req_t *r, const zb_msg_done_t *done) {
    s_event_t *e = s_event_end(r, ZBERT_EVENT_DONE, NULL);
    if (e == NULL) return ZBERT_ENOMEM;
    s_event_model(e, r->model, r->model_len);
    e->pub.texts = r->n_texts;
    if (done) {
        e->pub.tokens = done->tokens;
        e->pub.parts = done->parts;
        e->pub.elapsed_ms = done->elapsed_ms;
    }
    s_enqueue(c, e);
    s_req_remove(c, r);
    return 0;
}

/*
 * Re-encodes r's `embed` for sending it again: the time left of its
 * deadline, and `have`, the runs of texts already received, which go as
 * empty texts (the broker does not read them; their bytes are freed for
 * good, since a text once received is never asked for again).  Returns 0,
 * ZBERT_ENOMEM or ZBERT_EIO.
 */
static int s_req_rebody(s_req_t *r, uint64_t now) {
    zb_msg_t m = {0};
    int rc = zb_msg_decode(r->body, r->body_len, &m, NULL);
    if (rc != 0) return rc == ZB_ENOMEM ? rc : ZBERT_EIO; /* our own body */
    zb_msg_embed_t *e = &m.u.embed;
    zb_msg_str_t *texts = NULL;
    uint32_t *have = NULL;
    size_t n_have = 0;
    rc = ZBERT_ENOMEM;
    if (r->n_got > 0) {
        size_t runs = 0;
        for (size_t i = 0; i < r->n_texts; i++)
            if (s_bit(r->got, i) && (i == 0 || !s_bit(r->got, i - 1))) runs++;
        texts = malloc(r->n_texts * sizeof *texts);
        have = malloc(2 * runs * sizeof *have);
        if (texts == NULL || have == NULL) goto out;
        for (size_t i = 0; i < r->n_texts; i++) {
            bool got = s_bit(r->got, i);
            texts[i] = got ? (zb_msg_str_t){"", 0} : e->texts[i];
            if (got && (i == 0 || !s_bit(r->got, i - 1))) {
                have[n_have++] = (uint32_t)i;
                have[n_have++] = 0;
            }
            if (got) have[n_have - 1]++;
        }
        e->texts = texts;
    }
    e->have = have;
    e->n_have = n_have;
    /* a request is never served by two models: where its first results
     * came from, the rest must come from too */
    e->model = (zb_msg_str_t){r->model_len ? r->model : NULL, r->model_len};
    if (r->deadline_at) e->deadline_ms = r->deadline_at > now ? r->deadline_at - now : 1;
    uint8_t *body = NULL;
    size_t len = 0;
    rc = zb_msg_encode_embed(e, &body, &len, NULL);
    if (rc == 0) {
        free(r->body); /* e's views pointed into it: encoded by now */
        r->body = body;
        r->body_len = len;
    } else if (rc != ZBERT_ENOMEM) {
        rc = ZBERT_EIO; /* a body we made refused by our own codec */
    }
out:
    free(texts);
    free(have);
    zb_msg_free(&m);
    return rc;
}

/* Sends r (again).  A request sent before is re-encoded (s_req_rebody).
 * Returns 0 (sent, or left for later when the socket is full) or an
 * error. */
static int s_req_send(zbert_client_t *c, s_req_t *r, uint64_t now) {
    if (!r->fresh && (r->deadline_at || r->n_got > 0 || r->model_len)) {
        int rc = s_req_rebody(r, now);
        if (rc != 0) return rc;
    }
    bool was_waiting = s_outstanding(c);
    int rc = s_send(c, r->body, r->body_len);
    if (rc < 0) return rc;
    if (rc == 1) return 0; /* the socket is full: s_flush tries again */
    if (!was_waiting) {
        c->quiet_since = now;
        c->ping_at = 0;
    }
    if (!r->fresh) r->resent = true;
    r->want_send = false;
    r->fresh = false;
    r->sent_at = now;
    r->tries++;
    ZB_LOG(ZB_LOG_DEBUG, "sent request %s (%u texts, try %u)", r->id, r->n_texts, r->tries);
    return 0;
}

/* Sends whatever is due.  Stops at the first message the socket refuses.
 * Nothing goes to a broker that said closing: it would take none of it. */
static int s_flush(zbert_client_t *c, uint64_t now) {
    if (c->closing) return 0;
    if (c->st_wait && c->st_want_send) {
        bool was_waiting = s_outstanding(c);
        int rc = s_send_status(c, c->st_id);
        if (rc < 0) return rc;
        if (rc == 1) return 0;
        if (!was_waiting) {
            c->quiet_since = now;
            c->ping_at = 0;
        }
        c->st_want_send = false;
        c->st_sent_at = now;
    }
    for (size_t i = 0; i < c->n_reqs; i++) {
        s_req_t *r = c->reqs[i];
        if (!r->want_send || (r->retry_at && now < r->retry_at)) continue;
        r->retry_at = 0;
        int rc = s_req_send(c, r, now);
        if (rc < 0) return rc;
        if (r->want_send) break; /* the socket is full */
    }
    return 0;
}

/* --- incoming messages ------------------------------------------------------ */

static int s_reconnect(zbert_client_t *c, uint64_t now, const char *why);
static uint64_t s_backoff(const zbert_client_t *c);

/* r was at a broker that no longer holds it (it restarted, or we left it):
 * finished here when every text arrived but the done, else to be sent
 * again, with `have` (s_req_rebody).  r may be gone on return. */
static int s_req_lost(zbert_client_t *c, s_req_t *r) {
    r->sent_at = 0; /* nothing of it at the broker: nothing to cancel */
    r->resume = false;
    if (r->n_got == r->n_texts) return s_finish(c, r, NULL);
    r->want_send = true;
    r->retry_at = 0;
    return 0;
}

/* Queues an event for texts [a, b) of part p (part-relative), whose rows
 * start at row p_row0 of the part.  The texts are then marked received. */
static int s_part_run(zbert_client_t *c, s_req_t *r, const zb_msg_part_t *p, uint32_t a, uint32_t b,
                      uint64_t p_row0) {
    const zb_msg_vectors_t *v = &p->vec;
    uint32_t count = b - a;
    uint64_t n_rows = 0;
    for (uint32_t i = a; i < b; i++) n_rows += v->rows[i];
    /* Errors and truncations of this run: both lists are sorted by index. */
    size_t e0 = 0, e1, t0 = 0, t1, msg_bytes = 0;
    while (e0 < v->n_errors && v->errors[e0].index < p->first + a) e0++;
    for (e1 = e0; e1 < v->n_errors && v->errors[e1].index < p->first + b; e1++)
        msg_bytes += v->errors[e1].message.len + 1;
    while (t0 < v->n_truncated && v->truncated[t0] < p->first + a) t0++;
    for (t1 = t0; t1 < v->n_truncated && v->truncated[t1] < p->first + b; t1++) {
    }

    bool ovf = false;
    size_t size = sizeof(s_event_t), floats = 0, pairs = 0;
    if (__builtin_mul_overflow((size_t)n_rows, (size_t)v->dim, &floats) ||
        __builtin_mul_overflow((size_t)n_rows, (size_t)2, &pairs))
        return ZBERT_ENOMEM;
    size_t o_rows = s_take(&size, count * sizeof(uint32_t), 8, &ovf);
    size_t o_start = s_take(&size, ((size_t)count + 1) * sizeof(uint64_t), 8, &ovf);
    size_t o_status = s_take(&size, count * sizeof(int32_t), 8, &ovf);
    size_t o_names = s_take(&size, count * sizeof(char *), 8, &ovf);
    size_t o_msgs = s_take(&size, count * sizeof(char *), 8, &ovf);
    size_t o_vec = s_take(&size, floats * sizeof(float), 64, &ovf);
    size_t o_off = v->offsets ? s_take(&size, pairs * sizeof(uint32_t), 8, &ovf) : 0;
    size_t o_boff = v->byte_offsets ? s_take(&size, pairs * sizeof(uint32_t), 8, &ovf) : 0;
    size_t o_ids = v->ids ? s_take(&size, (size_t)n_rows * sizeof(uint32_t), 8, &ovf) : 0;
    /* token metadata: present for every run of a part that has it */
    bool meta = v->token_meta;
    size_t o_sent = meta ? s_take(&size, (size_t)n_rows * sizeof(uint32_t), 8, &ovf) : 0;
    size_t o_piece = meta ? s_take(&size, (size_t)n_rows * sizeof(int32_t), 8, &ovf) : 0;
    size_t o_wstart = meta ? s_take(&size, (size_t)n_rows * sizeof(bool), 1, &ovf) : 0;
    size_t o_oov = meta ? s_take(&size, (size_t)n_rows * sizeof(bool), 1, &ovf) : 0;
    size_t o_trunc = s_take(&size, count, 1, &ovf);
    size_t o_text = s_take(&size, msg_bytes, 1, &ovf);
    if (ovf) return ZBERT_ENOMEM;
    void *mem = NULL;
    if (posix_memalign(&mem, 64, size) != 0) return ZBERT_ENOMEM;
    memset(mem, 0, sizeof(s_event_t));
    s_event_t *e = mem;
    uint8_t *base = mem;

    uint32_t *rows = (uint32_t *)(base + o_rows);
    uint64_t *start = (uint64_t *)(base + o_start);
    int32_t *status = (int32_t *)(base + o_status);
    const char **names = (const char **)(base + o_names);
    const char **msgs = (const char **)(base + o_msgs);
    float *vec = (float *)(base + o_vec);
    uint8_t *trunc = base + o_trunc;
    char *text = (char *)(base + o_text);
    memcpy(rows, v->rows + a, count * sizeof *rows);
    start[0] = 0;
    for (uint32_t i = 0; i < count; i++) {
        start[i + 1] = start[i] + rows[i];
        status[i] = 0;
        names[i] = NULL;
        msgs[i] = NULL;
        trunc[i] = 0;
    }
    /* The vectors, converted from little-endian into an aligned array. */
    const uint8_t *src = (const uint8_t *)v->vectors + (size_t)p_row0 * v->dim * 4;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (floats) memcpy(vec, src, floats * sizeof(float));
#else
    for (size_t k = 0; k < floats; k++) {
        uint32_t u = (uint32_t)src[4 * k] | (uint32_t)src[4 * k + 1] << 8 |
                     (uint32_t)src[4 * k + 2] << 16 | (uint32_t)src[4 * k + 3] << 24;
        memcpy(&vec[k], &u, sizeof u);
    }
#endif
    if (v->offsets) {
        e->offsets = (const uint32_t *)(base + o_off);
        memcpy(base + o_off, v->offsets + 2 * p_row0, pairs * sizeof(uint32_t));
    }
    if (v->byte_offsets) {
        e->byte_offsets = (const uint32_t *)(base + o_boff);
        memcpy(base + o_boff, v->byte_offsets + 2 * p_row0, pairs * sizeof(uint32_t));
    }
    if (v->ids) {
        e->ids = (const uint32_t *)(base + o_ids);
        memcpy(base + o_ids, v->ids + p_row0, (size_t)n_rows * sizeof(uint32_t));
    }
    if (meta) {
        /* the public API's per-row arrays (zbert_text_t) of the rows'
         * metadata; an oov row's piece is -1 there as here */
        uint32_t *sent = (uint32_t *)(base + o_sent);
        int32_t *piece = (int32_t *)(base + o_piece);
        bool *wstart = (bool *)(base + o_wstart), *oov = (bool *)(base + o_oov);
        for (uint64_t k = 0; k < n_rows; k++) {
            const zb_token_meta_t *m = &v->meta[p_row0 + k];
            sent[k] = m->sentence;
            piece[k] = m->piece_id;
            wstart[k] = m->word_start;
            oov[k] = m->oov;
        }
        e->sentence = sent;
        e->piece_id = piece;
        e->word_start = wstart;
        e->oov = oov;
    }
    for (size_t k = t0; k < t1; k++) trunc[v->truncated[k] - p->first - a] = 1;
    for (size_t k = e0; k < e1; k++) {
        const zb_msg_text_error_t *er = &v->errors[k];
        uint32_t i = er->index - p->first - a;
        status[i] = s_code_err(er->code);
        names[i] = s_code_name(er->code);
        memcpy(text, er->message.ptr, er->message.len);
        text[er->message.len] = '\0';
        msgs[i] = text;
        text += er->message.len + 1;
    }
    e->rows = rows;
    e->row_start = start;
    e->status = status;
    e->code_name = names;
    e->message = msgs;
    e->truncated = trunc;
    memcpy(e->id, r->id, r->id_len + 1);
    e->pub = (zbert_event_t){.type = ZBERT_EVENT_PART,
                             .request = r->handle,
                             .id = e->id,
                             .user = r->user,
                             .first = p->first + a,
                             .count = count,
                             .level = zb_client_level_to_public(v->level),
                             .dim = v->dim,
                             .n_rows = n_rows,
                             .vectors = vec};
    s_event_model(e, p->model.ptr, p->model.len);
    for (uint32_t i = p->first + a; i < p->first + b; i++)
        r->got[i >> 3] |= (uint8_t)(1u << (i & 7));
    r->n_got += count;
    s_enqueue(c, e);
    return 0;
}

static int s_on_part(zbert_client_t *c, s_req_t *r, const zb_msg_part_t *p) {
    const zb_msg_vectors_t *v = &p->vec;
    if (v->level != r->opt.level)
        return s_fail(c, r, ZBERT_EPROTO, "client", "the broker sent %s rows for a %s request",
                      zb_options_level_name(v->level), zb_options_level_name(r->opt.level));
    if (v->token_meta != zb_options_meta(&r->opt))
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      v->token_meta ? "the broker sent token metadata the request did not ask for"
                                    : "the broker sent no token metadata for a request that "
                                      "asked for it (are its broker and workers older than "
                                      "protocol 1.1?)");
    if ((uint64_t)p->first + v->count > r->n_texts)
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker sent texts %u..%u of a request of %u texts", p->first,
                      p->first + v->count - 1, r->n_texts);
    if (r->dim && v->dim != r->dim)
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker sent %u-dimensional vectors after %u-dimensional ones", v->dim,
                      r->dim);
    if (p->model.len == 0 && r->pinned)
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker sent results that name no model for a request of model %s "
                      "(are its broker and workers older than protocol 1.3?)",
                      r->model);
    if (p->model.len && r->model_len &&
        (p->model.len != r->model_len || memcmp(p->model.ptr, r->model, r->model_len) != 0))
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker sent results of model %.*s for a request %s model %s",
                      (int)p->model.len, p->model.ptr,
                      r->pinned ? "pinned to" : "whose first results came from", r->model);
    if (p->model.len && !r->model_len && p->model.len <= ZB_MSG_NAME_BYTES_MAX) {
        memcpy(r->model, p->model.ptr, p->model.len);
        r->model[p->model.len] = '\0';
        r->model_len = p->model.len;
    }
    r->dim = v->dim;
    r->tries = 0;
    /* Runs of texts not delivered yet; repeated ones (after a resend) are
     * skipped, so each text reaches the caller once. */
    uint64_t row = 0, run_row0 = 0;
    uint32_t run = UINT32_MAX;
    for (uint32_t i = 0; i <= v->count; i++) {
        bool fresh = i < v->count && !s_bit(r->got, (size_t)p->first + i);
        if (fresh && run == UINT32_MAX) {
            run = i;
            run_row0 = row;
        } else if (!fresh && run != UINT32_MAX) {
            int rc = s_part_run(c, r, p, run, i, run_row0);
            if (rc != 0) return rc;
            run = UINT32_MAX;
        }
        if (i < v->count) row += v->rows[i];
    }
    return 0;
}

static int s_on_done(zbert_client_t *c, s_req_t *r, const zb_msg_done_t *m) {
    r->sent_at = 0; /* the broker closed it */
    if (r->n_got != r->n_texts && r->moved && m->texts == r->n_texts) {
        /* A broker that held the request across a reconnection counts the
         * parts it sent into the connection that died, which never came:
         * the rest goes again, with `have`. */
        ZB_LOG(ZB_LOG_INFO,
               "broker %s ended request %s with %u of its %u texts received; sending it again",
               c->brokers[c->cur], r->id, r->n_got, r->n_texts);
        return s_req_lost(c, r);
    }
    if (m->model.len && r->model_len &&
        (m->model.len != r->model_len || memcmp(m->model.ptr, r->model, r->model_len) != 0))
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker finished the request as model %.*s after results of model %s",
                      (int)m->model.len, m->model.ptr, r->model);
    if (r->n_got != r->n_texts || m->texts != r->n_texts)
        return s_fail(c, r, ZBERT_EPROTO, "client",
                      "the broker finished the request with %u of its %u texts delivered", r->n_got,
                      r->n_texts);
    return s_finish(c, r, m);
}

static int s_on_error(zbert_client_t *c, s_req_t *r, const zb_msg_error_t *m, uint64_t now) {
    r->tries = 0;
    if (m->code == ZB_MSG_CODE_BUSY) {
        /* Nothing of it was accepted: send it again later, same id. */
        uint32_t delay = r->backoff_ms ? r->backoff_ms : S_BUSY_BACKOFF_MIN_MS;
        r->backoff_ms = delay * 2 > S_BUSY_BACKOFF_MAX_MS ? S_BUSY_BACKOFF_MAX_MS : delay * 2;
        /* up to a quarter less, so that clients refused together spread out */
        uint32_t jitter = (uint32_t)((now * 2654435761u) % (delay / 4 + 1));
        r->retry_at = now + delay - jitter;
        r->want_send = true;
        r->sent_at = 0;
        ZB_LOG(ZB_LOG_DEBUG, "request %s: broker busy, retry in %u ms", r->id, delay - jitter);
        return 0;
    }
    if (m->code == ZB_MSG_CODE_NO_MODEL && r->no_model < c->tries) {
        /* A broker that has just started (or restarted) has no worker
         * until they announce themselves, within a heartbeat or two:
         * ask again a few times before giving up. */
        r->no_model++;
        r->retry_at = now + c->ping_ms;
        r->want_send = true;
        r->sent_at = 0;
        ZB_LOG(ZB_LOG_DEBUG, "request %s: no worker yet, retry in %u ms", r->id, c->ping_ms);
        return 0;
    }
    if (m->code == ZB_MSG_CODE_DUPLICATE_ID && r->resent)
        return 0;   /* a copy we sent again; an earlier one goes on */
    r->sent_at = 0; /* the broker closed it: nothing to cancel */
    return s_fail(c, r, s_code_err(m->code), s_code_name(m->code), "%.*s", (int)m->message.len,
                  m->message.ptr);
}

/* Copies a status reply into a new zbert_status_t. */
static int s_status_copy(const zb_msg_status_reply_t *m, zbert_status_t **out) {
    zbert_status_t *s = calloc(1, sizeof *s);
    if (s == NULL) return ZBERT_ENOMEM;
    *s = (zbert_status_t){.uptime_ms = m->uptime_ms,
                          .requests = m->requests,
                          .queued_shards = m->queued_shards,
                          .queued_texts = m->queued_texts,
                          .in_flight_shards = m->in_flight_shards,
                          .texts_per_s = m->texts_per_s,
                          .tokens_per_s = m->tokens_per_s,
                          .latency_p50_ms = m->latency_p50_ms,
                          .latency_p90_ms = m->latency_p90_ms,
                          .latency_p99_ms = m->latency_p99_ms,
                          .protocol_errors = m->protocol_errors,
                          .bad_results = m->bad_results,
                          .has_security = m->has_security,
                          .curve = m->curve,
                          .refused_clients = m->refused_clients,
                          .refused_workers = m->refused_workers};
    if (m->n_workers) {
        s->workers = calloc(m->n_workers, sizeof *s->workers);
        if (s->workers == NULL) goto nomem;
    }
    for (size_t i = 0; i < m->n_workers; i++) {
        const zb_msg_worker_info_t *w = &m->workers[i];
        zbert_worker_status_t *o = &s->workers[i];
        s->n_workers = i + 1;
        *o = (zbert_worker_status_t){.dim = w->dim,
                                     .threads = w->threads,
                                     .credit = w->credit,
                                     .in_flight = w->in_flight,
                                     .shards = w->shards,
                                     .tokens = w->tokens,
                                     .idle_ms = w->idle_ms,
                                     .quarantined_ms = w->quarantined_ms};
        o->name = strndup(w->name.ptr, w->name.len);
        o->model = strndup(w->model.ptr, w->model.len);
        if (o->name == NULL || o->model == NULL) goto nomem;
    }
    *out = s;
    return 0;
nomem:
    zbert_status_destroy(&s);
    return ZBERT_ENOMEM;
}

/* A broker that answers with an uptime shorter than the age of an
 * outstanding request started after we sent it: it restarted behind the
 * same endpoint and cannot know the request.  Such requests are sent again
 * on this socket, with `have`.  The estimate of its start is late by the
 * reply's transit time, so a request sent just after a start may be resent
 * needlessly: the broker resumes it, or answers duplicate_id, which
 * s_on_error ignores. */
static int s_check_restart(zbert_client_t *c, uint64_t uptime_ms, uint64_t now) {
    if (uptime_ms >= now) return 0;
    uint64_t started = now - uptime_ms;
    for (size_t i = 0; i < c->n_reqs;) {
        s_req_t *r = c->reqs[i];
        if (!r->sent_at || r->resume || r->sent_at >= started) {
            i++;
            continue;
        }
        ZB_LOG(ZB_LOG_INFO, "broker %s restarted; sending request %s again", c->brokers[c->cur],
               r->id);
        bool last = r->n_got == r->n_texts;
        int rc = s_req_lost(c, r);
        if (rc != 0) return rc;
        if (!last) i++; /* else r is gone; i now names the next one */
    }
    return 0;
}

/*
 * The requests we left at a broker (a reconnection, `closing`): those the
 * broker in use lists in `open` are held there, and their results will
 * come; the others are sent again with `have`, or finished here when every
 * text arrived.  A broker of an earlier revision lists none: everything is
 * sent again, as it always was.
 */
static int s_resume(zbert_client_t *c, const zb_msg_status_reply_t *m, uint64_t now) {
    size_t held = 0, again = 0;
    for (size_t k = 0; k < m->n_open; k++) {
        s_req_t *r = s_req_by_id(c, m->open[k]);
        if (r && r->resume) {
            r->resume = false;
            r->sent_at = now; /* at this broker, as of its answer */
            held++;
        }
    }
    for (size_t i = 0; i < c->n_reqs;) {
        s_req_t *r = c->reqs[i];
        if (!r->resume) {
            i++;
            continue;
        }
        bool last = r->n_got == r->n_texts;
        int rc = s_req_lost(c, r);
        if (rc != 0) return rc;
        again++;
        if (!last) i++;
    }
    if (held + again > 0)
        ZB_LOG(ZB_LOG_INFO,
               "broker %s holds %zu of the requests left open; %zu sent again without the texts "
               "already received",
               c->brokers[c->cur], held, again);
    return 0;
}

static int s_on_status_reply(zbert_client_t *c, const zb_msg_status_reply_t *m, uint64_t now) {
    c->closing = false; /* a closing broker answers `closing`, not this */
    int rc = s_resume(c, m, now);
    if (rc == 0) rc = s_check_restart(c, m->uptime_ms, now);
    if (rc != 0) return rc;
    if (c->st_wait && c->st_out == NULL && c->st_rc == 0 && m->id.len == strlen(c->st_id) &&
        memcmp(m->id.ptr, c->st_id, m->id.len) == 0)
        c->st_rc = s_status_copy(m, &c->st_out);
    return 0;
}

/*
 * The broker in use is stopping (PROTOCOL.md 10): it takes no request, and
 * what it holds may end without a word.  Every request it has is to be
 * resumed; with another endpoint that happens there at once, else when a
 * broker takes requests again here (a status reply), within the outage
 * budget, which starts now.  Parts it still sends are kept meanwhile.
 */
static int s_on_closing(zbert_client_t *c, const zb_msg_closing_t *m, uint64_t now) {
    if (!c->closing)
        ZB_LOG(ZB_LOG_WARN, "broker %s is stopping%s%.*s", c->brokers[c->cur],
               m->message.len ? ": " : "", (int)m->message.len, m->message.ptr);
    c->closing = true;
    if (!c->down_since) c->down_since = now;
    for (size_t i = 0; i < c->n_reqs; i++)
        if (c->reqs[i]->sent_at) c->reqs[i]->resume = c->reqs[i]->moved = true;
    if (c->st_wait && c->st_sent_at) { /* its answer is `closing` */
        c->st_sent_at = 0;
        c->st_want_send = true;
    }
    if (c->n_brokers == 1) return 0;
    /* The first `closing` of an outage moves on at once; the next ones
     * (every broker stopping) wait for the back-off, or the clients of
     * stopping brokers would bounce between them at message speed. */
    if (c->n_reconnects == 0) {
        c->n_reconnects++;
        return s_reconnect(c, now, "is stopping");
    }
    if (!c->reconnect_at) c->reconnect_at = now + s_backoff(c);
    return 0;
}

/* Something came from the broker: it is there.  Only `closing` leaves an
 * outage going (serving is false), and the reconnection it awaits: a
 * stopping broker serves nobody. */
static void s_heard(zbert_client_t *c, uint64_t now, bool serving) {
    c->quiet_since = now;
    c->ping_at = 0;
    if (serving) {
        c->down_since = 0;
        c->reconnect_at = 0;
        c->n_reconnects = 0;
    }
}

/* Handles one message body from the broker. */
static int s_handle(zbert_client_t *c, const void *body, size_t len, uint64_t now) {
    zb_msg_t m = {0};
    zb_diag_t dg = {{0}};
    int rc = zb_msg_decode(body, len, &m, &dg);
    /* Anything at all proves the broker is there. */
    s_heard(c, now, !(rc == 0 && m.type == ZB_MSG_CLOSING));
    if (rc == ZB_ENOMEM) return ZBERT_ENOMEM;
    if (rc != 0 && (m.unknown_type || m.reject == ZB_MSG_CODE_VERSION)) {
        /* A type of a later revision, or a version we do not speak: the
         * protocol has clients ignore (drop) them, whatever id they carry
         * (PROTOCOL.md 2).  Logged once per connection. */
        if (!c->warned_unknown) {
            ZB_LOG(ZB_LOG_INFO, "ignored a message from broker %s: %s", c->brokers[c->cur], dg.msg);
            c->warned_unknown = true;
        }
        return 0;
    }
    if (rc != 0) {
        if (!c->warned) {
            char sample[600];
            zb_log_sample(sample, sizeof sample, body, len);
            ZB_LOG(ZB_LOG_WARN, "malformed message from broker %s: %s; message: %s",
                   c->brokers[c->cur], dg.msg, sample);
            c->warned = true;
        }
        /* A known type that is malformed: the request it names failed. */
        s_req_t *r = m.reject_id.len ? s_req_by_id(c, m.reject_id) : NULL;
        if (r)
            return s_fail(c, r, ZBERT_EPROTO, "client", "malformed message from the broker: %s",
                          dg.msg);
        return 0;
    }
    s_req_t *r = NULL;
    switch (m.type) {
    case ZB_MSG_PART:
        if ((r = s_req_by_id(c, m.u.part.id))) rc = s_on_part(c, r, &m.u.part);
        break;
    case ZB_MSG_DONE:
        if ((r = s_req_by_id(c, m.u.done.id))) rc = s_on_done(c, r, &m.u.done);
        break;
    case ZB_MSG_ERROR:
        if (m.u.error.id.len && (r = s_req_by_id(c, m.u.error.id))) {
            rc = s_on_error(c, r, &m.u.error, now);
        } else if (c->st_wait && m.u.error.id.len == strlen(c->st_id) &&
                   memcmp(m.u.error.id.ptr, c->st_id, m.u.error.id.len) == 0) {
            c->st_rc = zb_diag_set(&c->st_diag, s_code_err(m.u.error.code),
                                   "the broker refused the status request: %s: %.*s",
                                   s_code_name(m.u.error.code), (int)m.u.error.message.len,
                                   m.u.error.message.ptr);
        } else if (m.u.error.id.len == 0 && m.u.error.of.len &&
                   (r = s_req_by_id(c, m.u.error.of))) {
            /* Without an id no request ends (PROTOCOL.md 3): `of` names
             * the open request a copy of ours collided with, which goes
             * on. */
            ZB_LOG(ZB_LOG_INFO, "broker %s refused a copy of request %s (%s: %.*s); it goes on",
                   c->brokers[c->cur], r->id, s_code_name(m.u.error.code),
                   (int)m.u.error.message.len, m.u.error.message.ptr);
        } else {
            ZB_LOG(m.u.error.id.len ? ZB_LOG_DEBUG : ZB_LOG_INFO,
                   "broker error for no open request: %s: %.*s", s_code_name(m.u.error.code),
                   (int)m.u.error.message.len, m.u.error.message.ptr);
        }
        break;
    case ZB_MSG_STATUS_REPLY:
        rc = s_on_status_reply(c, &m.u.status_reply, now);
        break;
    case ZB_MSG_CLOSING:
        rc = s_on_closing(c, &m.u.closing, now);
        break;
    default:
        if (!c->warned) {
            ZB_LOG(ZB_LOG_WARN, "broker %s sent a '%s' message, which is not for clients",
                   c->brokers[c->cur], zb_msg_type_name(m.type));
            c->warned = true;
        }
        break;
    }
    zb_msg_free(&m);
    return rc;
}

/* Reads what the socket holds (up to S_DRAIN_MAX messages). */
static int s_drain(zbert_client_t *c) {
    for (int k = 0; k < S_DRAIN_MAX; k++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int n = zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT);
        if (n < 0) {
            int e = errno;
            zmq_msg_close(&msg);
            if (e == EAGAIN) return 0;
            if (e == EINTR) continue;
            ZB_LOG(ZB_LOG_ERROR, "receive from %s failed: %s", c->brokers[c->cur], zmq_strerror(e));
            return ZBERT_EIO;
        }
        uint64_t now = s_now_ms();
        int rc;
        if (zmq_msg_more(&msg)) {
            /* A body is exactly one frame: drop the whole multi-frame message. */
            int more = 1;
            while (more) {
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, c->sock, 0) < 0) break;
                more = zmq_msg_more(&msg);
            }
            s_heard(c, now, true);
            if (!c->warned) {
                ZB_LOG(ZB_LOG_WARN, "broker %s sent a message of several frames",
                       c->brokers[c->cur]);
                c->warned = true;
            }
            rc = 0;
        } else {
            rc = s_handle(c, zmq_msg_data(&msg), zmq_msg_size(&msg), now);
        }
        zmq_msg_close(&msg);
        if (rc != 0) return rc;
    }
    return 0;
}

/* --- timers: deadlines, pings, reconnection ---------------------------------- */

/* What a silent broker may mean besides being gone: a CURVE handshake that
 * cannot complete is silence to ZeroMQ's user. */
static const char *s_silence_hint(const zbert_client_t *c) {
    return c->curve ? " (with CURVE: or the broker key is not that broker's, or the broker "
                      "does not allow this client's key)"
                    : "";
}

/* The pause before the next reconnection while no broker answers: retry_ms
 * doubled once per reconnection so far, capped, with jitter. */
static uint64_t s_backoff(const zbert_client_t *c) {
    uint64_t cap = c->retry_ms > S_BACKOFF_MAX_MS ? c->retry_ms : S_BACKOFF_MAX_MS;
    uint64_t d = c->retry_ms;
    for (uint32_t k = 0; k < c->n_reconnects && d < cap; k++) d *= 2;
    if (d > cap) d = cap;
    uint32_t u;
    zb_random_bytes(&u, sizeof u);
    uint64_t low = d - d * S_BACKOFF_JITTER_PCT / 100, span = 2 * (d - low);
    return low + (span ? u % (span + 1) : 0);
}

/*
 * Leaves the broker in use: closes the socket and opens one to the next
 * endpoint (the same one when there is one), under the same routing id.
 * What the old broker had is resumed: a ping goes out first, and its
 * answer tells which of those requests the new broker holds (s_resume);
 * requests not yet sent go out at once.  Parts received stay received.
 */
static int s_reconnect(zbert_client_t *c, uint64_t now, const char *why) {
    const char *old = c->brokers[c->cur];
    zmq_close(c->sock);
    c->sock = NULL;
    c->cur = (c->cur + 1) % c->n_brokers;
    size_t moved = 0;
    for (size_t i = 0; i < c->n_reqs; i++) {
        s_req_t *r = c->reqs[i];
        if (r->sent_at) {
            r->resume = r->moved = true;
            moved++;
        }
    }
    if (c->st_wait && c->st_sent_at) {
        c->st_sent_at = 0;
        c->st_want_send = true;
    }
    ZB_LOG(ZB_LOG_WARN, "broker %s %s; %s %s with %zu requests to resume", old, why,
           c->n_brokers > 1 ? "switching to" : "reconnecting to", c->brokers[c->cur], moved);
    int rc = s_open_socket(c, NULL);
    if (rc == 0) rc = s_ping(c, now);
    if (rc == 0) rc = s_flush(c, now);
    return rc;
}

/* The broker in use has been silent since silent_since (or its socket has
 * refused every message): an outage begins, or goes on, and the next
 * endpoint is tried. */
static int s_presume_gone(zbert_client_t *c, uint64_t now, uint64_t silent_since) {
    if (!c->down_since) c->down_since = silent_since;
    c->n_reconnects++;
    c->reconnect_at = now + s_backoff(c);
    char why[64];
    snprintf(why, sizeof why, "sent nothing for %llu ms", (unsigned long long)(now - silent_since));
    return s_reconnect(c, now, why);
}

/* The outage lasted outage_ms: every open request fails, and so does a
 * status request. */
static int s_outage_over(zbert_client_t *c) {
    char why[ZB_MSG_MESSAGE_BYTES_MAX];
    if (c->closing)
        snprintf(why, sizeof why,
                 "broker %s is stopping, and no broker took its requests over within the outage "
                 "budget of %u ms (outage_ms)",
                 c->brokers[c->cur], c->outage_ms);
    else
        snprintf(why, sizeof why,
                 "no broker answered within the outage budget of %u ms (outage_ms; %zu "
                 "endpoint%s tried)%s",
                 c->outage_ms, c->n_brokers, c->n_brokers == 1 ? "" : "s", s_silence_hint(c));
    ZB_LOG(ZB_LOG_WARN, "%s; open requests failing: %zu", why, c->n_reqs);
    while (c->n_reqs > 0) {
        int rc = s_fail(c, c->reqs[0], ZBERT_ETIMEOUT, "client", "%s", why);
        if (rc != 0) return rc;
    }
    if (c->st_wait && c->st_out == NULL && c->st_rc == 0)
        c->st_rc = zb_diag_set(&c->st_diag, ZBERT_ETIMEOUT, "%s", why);
    c->down_since = 0;
    c->reconnect_at = 0;
    c->n_reconnects = 0;
    return 0;
}

static int s_tick(zbert_client_t *c, uint64_t now) {
    for (size_t i = 0; i < c->n_reqs;) {
        s_req_t *r = c->reqs[i];
        if (r->deadline_at && now >= r->deadline_at) {
            int rc = s_fail(c, r, ZBERT_ETIMEOUT, "client", "the deadline of %u ms passed",
                            r->deadline_ms);
            if (rc != 0) return rc;
            continue;
        }
        i++;
    }
    bool waiting = s_outstanding(c) || c->blocked_since;
    for (size_t i = 0; !waiting && i < c->n_reqs; i++) waiting = c->reqs[i]->want_send;
    if (!waiting) {
        /* nothing to lose: an outage ends with the last request in it */
        c->down_since = 0;
        c->reconnect_at = 0;
        c->n_reconnects = 0;
    } else if (c->closing && !c->down_since) {
        c->down_since = now; /* a request came while the broker is stopping */
    }
    if (c->down_since && now - c->down_since >= c->outage_ms) return s_outage_over(c);
    if (c->reconnect_at) {
        if (now >= c->reconnect_at) return s_presume_gone(c, now, c->down_since);
    } else if (c->blocked_since && now - c->blocked_since >= c->retry_ms) {
        return s_presume_gone(c, now, c->blocked_since);
    } else if (s_outstanding(c) && now - c->quiet_since >= c->retry_ms && c->ping_at &&
               now - c->ping_at >= c->ping_ms) {
        return s_presume_gone(c, now, c->quiet_since);
    }
    if (s_outstanding(c) && now - c->quiet_since >= c->ping_ms &&
        (!c->ping_at || now - c->ping_at >= c->ping_ms)) {
        int rc = s_ping(c, now);
        if (rc != 0) return rc;
    }
    return s_flush(c, now);
}

/* Milliseconds until s_tick has something to do (at most cap).  s_tick
 * runs after every wait, so a timer already due means it could not act
 * (the socket refused a message; the last ping is too recent to call the
 * broker gone): such timers wait S_SEND_RETRY_MS rather than spin.  Only
 * deadlines are exact. */
static int s_next_timer(const zbert_client_t *c, uint64_t now, int cap) {
    uint64_t t = cap < 0 ? UINT64_MAX : now + (uint64_t)cap;
    uint64_t soon = now + S_SEND_RETRY_MS;
    /* a closing broker takes nothing: what waits to be sent has no timer */
    if (c->st_wait && c->st_want_send && !c->closing && soon < t) t = soon;
    for (size_t i = 0; i < c->n_reqs; i++) {
        const s_req_t *r = c->reqs[i];
        if (r->deadline_at && r->deadline_at < t) t = r->deadline_at;
        if (r->want_send && !c->closing) {
            uint64_t at = r->retry_at > soon ? r->retry_at : soon;
            if (at < t) t = at;
        }
    }
    if (c->reconnect_at && c->reconnect_at < t) t = c->reconnect_at;
    if (c->down_since && c->down_since + c->outage_ms < t) t = c->down_since + c->outage_ms;
    if (s_outstanding(c)) {
        /* s_tick pings again, or calls the broker gone (retry_ms of quiet
         * and a ping unanswered for ping_ms), when a ping falls due */
        uint64_t next = (c->ping_at ? c->ping_at : c->quiet_since) + c->ping_ms;
        if (next < soon) next = soon;
        if (next < t) t = next;
    }
    if (t <= now) return 0;
    return t - now > (uint64_t)INT32_MAX ? INT32_MAX : (int)(t - now);
}

/* Waits up to wait_ms for the socket, reads it, runs the timers.  Sets
 * *interrupted when a signal cut the wait short. */
static int s_pump(zbert_client_t *c, int wait_ms, bool *interrupted) {
    zmq_pollitem_t it = {.socket = c->sock, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, wait_ms) < 0) {
        if (errno != EINTR) {
            ZB_LOG(ZB_LOG_ERROR, "poll failed: %s", zmq_strerror(errno));
            return ZBERT_EIO;
        }
        if (interrupted) *interrupted = true;
    }
    int rc = s_drain(c);
    if (rc != 0) return rc;
    return s_tick(c, s_now_ms());
}

/* --- public: the client ---------------------------------------------------- */

/* Checks the CURVE settings of cfg; *on tells whether they ask for it. */
static int s_curve_check(const zbert_config_t *cfg, bool *on, zbert_diag_t *d) {
    bool key = cfg->curve_key != NULL && cfg->curve_key[0] != '\0';
    *on = key;
    if (!key && cfg->n_broker_keys == 0) return 0;
    if (!key)
        return s_diag(d, ZBERT_EINVAL,
                      "broker_keys without curve_key: CURVE needs this client's secret key file "
                      "too");
    if (cfg->n_broker_keys == 0 || cfg->broker_keys == NULL)
        return s_diag(d, ZBERT_EINVAL,
                      "curve_key without broker_keys: CURVE needs the broker's public key file "
                      "too");
    if (cfg->n_broker_keys != 1 && cfg->n_broker_keys != cfg->n_brokers)
        return s_diag(d, ZBERT_EINVAL,
                      "%zu broker keys for %zu brokers: give one key for every broker, or one "
                      "per broker in the same order",
                      cfg->n_broker_keys, cfg->n_brokers);
    for (size_t i = 0; i < cfg->n_broker_keys; i++)
        if (cfg->broker_keys[i] == NULL || cfg->broker_keys[i][0] == '\0')
            return s_diag(d, ZBERT_EINVAL, "broker key %zu: no path", i + 1);
    if (!zb_curve_available())
        return s_diag(d, ZBERT_EUNSUPPORTED,
                      "CURVE asked for, but this libzmq has no CURVE support (built without "
                      "libsodium)");
    return 0;
}

/* Reads the key files of cfg (checked by s_curve_check) into c.  A file
 * that cannot be used is the caller's setting to fix: ZBERT_EINVAL with
 * the file and the reason (ZBERT_ENOMEM, ZBERT_EUNSUPPORTED as such). */
static int s_curve_load(zbert_client_t *c, const zbert_config_t *cfg, zbert_diag_t *d) {
    c->curve = calloc(1, sizeof *c->curve);
    c->broker_pub = calloc(c->n_brokers, sizeof *c->broker_pub);
    if (c->curve == NULL || c->broker_pub == NULL) return s_diag(d, ZBERT_ENOMEM, "out of memory");
    zb_diag_t zd = {{0}};
    int rc = zb_curve_load(cfg->curve_key, true, c->curve, &zd);
    if (rc != 0)
        return s_diag(d, rc == ZB_EUNSUPPORTED ? rc : ZBERT_EINVAL, "curve_key %s",
                      zb_diag_text(&zd, rc));
    for (size_t i = 0; i < cfg->n_broker_keys; i++) {
        zb_curve_cert_t b;
        rc = zb_curve_load(cfg->broker_keys[i], false, &b, &zd);
        if (rc != 0)
            return s_diag(d, rc == ZB_EUNSUPPORTED ? rc : ZBERT_EINVAL, "broker key %s",
                          zb_diag_text(&zd, rc));
        /* the public part of whatever file was given: a broker's .key works
         * too, and the secret in it is not kept */
        memcpy(c->broker_pub[i], b.pub, sizeof b.pub);
        explicit_bzero(&b, sizeof b);
    }
    for (size_t i = cfg->n_broker_keys; i < c->n_brokers; i++)
        memcpy(c->broker_pub[i], c->broker_pub[0], sizeof c->broker_pub[0]);
    return 0;
}

int zbert_client_new(const zbert_config_t *cfg, zbert_client_t **out, zbert_diag_t *d) {
    if (out) *out = NULL;
    if (cfg == NULL || out == NULL) return s_diag(d, ZBERT_EINVAL, "no configuration");
    if (cfg->n_brokers == 0 || cfg->brokers == NULL)
        return s_diag(d, ZBERT_EINVAL, "no broker endpoint");
    if (cfg->n_brokers > 64) return s_diag(d, ZBERT_EINVAL, "more than 64 broker endpoints");
    uint32_t retry = cfg->retry_ms ? cfg->retry_ms : S_RETRY_MS_DEFAULT;
    uint32_t ping = cfg->ping_ms ? cfg->ping_ms : retry / 4;
    if (retry < S_RETRY_MS_MIN)
        return s_diag(d, ZBERT_EINVAL, "retry_ms %u is below %u", retry, S_RETRY_MS_MIN);
    if (ping == 0 || ping >= retry)
        return s_diag(d, ZBERT_EINVAL, "ping_ms %u is not below retry_ms %u", ping, retry);
    if (cfg->tries > 1000) return s_diag(d, ZBERT_EINVAL, "tries %u is over 1000", cfg->tries);
    uint32_t outage = cfg->outage_ms ? cfg->outage_ms : S_OUTAGE_MS_DEFAULT;
    if (outage < retry)
        return s_diag(d, ZBERT_EINVAL, "outage_ms %u is below retry_ms %u", outage, retry);
    if (cfg->requests_max > 1000000)
        return s_diag(d, ZBERT_EINVAL, "requests_max %zu is over 1,000,000", cfg->requests_max);
    for (size_t i = 0; i < cfg->n_brokers; i++)
        if (cfg->brokers[i] == NULL || cfg->brokers[i][0] == '\0')
            return s_diag(d, ZBERT_EINVAL, "broker endpoint %zu is empty", i + 1);
    bool curve = false;
    int rc = s_curve_check(cfg, &curve, d);
    if (rc != 0) return rc;

    rc = ZBERT_ENOMEM;
    zbert_client_t *c = calloc(1, sizeof *c);
    if (c == NULL) return s_diag(d, ZBERT_ENOMEM, "out of memory");
    c->retry_ms = retry;
    c->ping_ms = ping;
    c->tries = cfg->tries ? cfg->tries : S_TRIES_DEFAULT;
    c->outage_ms = outage;
    c->requests_max = cfg->requests_max ? cfg->requests_max : S_REQUESTS_DEFAULT;
    c->texts_max = cfg->texts_max ? cfg->texts_max : S_TEXTS_DEFAULT;
    c->bytes_max = cfg->bytes_max ? cfg->bytes_max : S_BYTES_DEFAULT;
    c->next_handle = 1;
    c->brokers = calloc(cfg->n_brokers, sizeof *c->brokers);
    c->reqs = calloc(c->requests_max, sizeof *c->reqs);
    if (c->brokers == NULL || c->reqs == NULL) goto fail;
    c->n_brokers = cfg->n_brokers;
    for (size_t i = 0; i < cfg->n_brokers; i++)
        if ((c->brokers[i] = strdup(cfg->brokers[i])) == NULL) goto fail;
    if (curve && (rc = s_curve_load(c, cfg, d)) != 0) goto fail;
    /* Ids only need to be unique among this client's open requests; a
     * random tag makes them tell clients apart in the broker's logs. */
    uint32_t tag;
    zb_random_bytes(&tag, sizeof tag);
    zb_random_bytes(c->routing_id, sizeof c->routing_id);
    while (c->routing_id[0] == 0) zb_random_bytes(c->routing_id, 1);
    c->prefix_len = (size_t)snprintf(c->prefix, sizeof c->prefix, "z%08x-", tag);
    c->ctx = zmq_ctx_new();
    if (c->ctx == NULL) {
        rc = s_diag(d, ZBERT_EIO, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_ctx_set(c->ctx, ZMQ_IO_THREADS, 1);
    if ((rc = s_open_socket(c, d)) != 0) goto fail;
    *out = c;
    return 0;
fail:
    if (rc == ZBERT_ENOMEM) s_diag(d, rc, "out of memory");
    zbert_client_destroy(&c);
    return rc;
}

void zbert_client_destroy(zbert_client_t **pc) {
    if (pc == NULL || *pc == NULL) return;
    zbert_client_t *c = *pc;
    if (c->sock) {
        for (size_t i = 0; i < c->n_reqs; i++)
            if (c->reqs[i]->sent_at) s_send_cancel(c, c->reqs[i]);
        int linger = S_LINGER_CLOSE_MS;
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(c->sock);
    }
    if (c->ctx) zmq_ctx_term(c->ctx);
    for (size_t i = 0; i < c->n_reqs; i++) s_req_free(c->reqs[i]);
    free(c->reqs);
    for (size_t i = 0; c->brokers && i < c->n_brokers; i++) free(c->brokers[i]);
    free(c->brokers);
    if (c->curve) explicit_bzero(c->curve, sizeof *c->curve);
    free(c->curve);
    free(c->broker_pub);
    while (c->q_head) {
        s_event_t *e = c->q_head;
        c->q_head = e->next;
        free(e);
    }
    zbert_status_destroy(&c->st_out);
    free(c);
    *pc = NULL;
}

size_t zbert_open_requests(const zbert_client_t *c) {
    return c ? c->n_reqs : 0;
}

int zbert_submit(zbert_client_t *c, const char *const *texts, const size_t *lens, size_t n,
                 const zbert_options_t *opt, void *user, uint64_t *request, zbert_diag_t *d) {
    static const zbert_options_t defaults = {0};
    if (request) *request = 0;
    if (c == NULL || request == NULL || (texts == NULL && n > 0))
        return s_diag(d, ZBERT_EINVAL, "NULL argument");
    if (n == 0) return s_diag(d, ZBERT_EINVAL, "a request needs at least one text");
    if (opt == NULL) opt = &defaults;
    zb_options_t o;
    zb_diag_t od = {{0}};
    if (zb_client_options_from_public(opt, &o, &od) != 0)
        return s_diag(d, ZBERT_EINVAL, "%s", od.msg);
    if (n > ZB_MSG_TEXTS_MAX || n > c->texts_max)
        return s_diag(d, ZBERT_ELIMIT, "%zu texts in one request; the limit is %zu", n,
                      c->texts_max < ZB_MSG_TEXTS_MAX ? c->texts_max : (size_t)ZB_MSG_TEXTS_MAX);
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (texts[i] == NULL) return s_diag(d, ZBERT_EINVAL, "text %zu is NULL", i);
        if (__builtin_add_overflow(bytes, lens ? lens[i] : strlen(texts[i]), &bytes))
            return s_diag(d, ZBERT_ELIMIT, "the texts' sizes overflow");
    }
    if (bytes > c->bytes_max)
        return s_diag(d, ZBERT_ELIMIT, "%zu text bytes in one request; the limit is %zu", bytes,
                      c->bytes_max);
    size_t model_len = opt->model ? strlen(opt->model) : 0;
    if (opt->model && (model_len == 0 || model_len > ZB_MSG_NAME_BYTES_MAX))
        return s_diag(d, ZBERT_EINVAL,
                      "model: %zu bytes; a model identity is 1 to %u bytes (zbert status shows "
                      "the workers')",
                      model_len, ZB_MSG_NAME_BYTES_MAX);
    if (c->n_reqs >= c->requests_max || c->texts_open + n > c->texts_max ||
        c->bytes_open + bytes > c->bytes_max)
        return s_diag(d, ZBERT_EBUSY,
                      "the client holds %zu open requests of %zu texts; take events first",
                      c->n_reqs, c->texts_open);

    int rc = ZBERT_ENOMEM;
    zb_msg_str_t *views = malloc(n * sizeof *views);
    s_req_t *r = calloc(1, sizeof *r);
    if (views == NULL || r == NULL) goto out;
    r->got = calloc((n + 7) / 8, 1);
    if (r->got == NULL) goto out;
    for (size_t i = 0; i < n; i++)
        views[i] = (zb_msg_str_t){texts[i], lens ? lens[i] : strlen(texts[i])};
    r->handle = c->next_handle++;
    r->id_len =
        (size_t)snprintf(r->id, sizeof r->id, "%s%llu", c->prefix, (unsigned long long)r->handle);
    r->user = user;
    r->opt = o;
    r->deadline_ms = opt->deadline_ms;
    r->n_texts = (uint32_t)n;
    r->text_bytes = bytes;
    uint64_t now = s_now_ms();
    if (opt->deadline_ms) r->deadline_at = now + opt->deadline_ms;
    if (model_len) {
        memcpy(r->model, opt->model, model_len + 1);
        r->model_len = model_len;
        r->pinned = true;
    }
    zb_msg_embed_t m = {.id = {r->id, r->id_len},
                        .texts = views,
                        .n_texts = n,
                        .opt = o,
                        .deadline_ms = opt->deadline_ms,
                        .model = {opt->model, model_len}};
    zb_diag_t dg = {{0}};
    rc = zb_msg_encode_embed(&m, &r->body, &r->body_len, &dg);
    if (rc != 0) {
        if (rc == ZB_ELIMIT)
            s_diag(d, rc, "the request's message would exceed %u bytes: send fewer texts",
                   ZB_MSG_BODY_MAX);
        else
            s_diag(d, rc, "%s", zb_diag_text(&dg, rc));
        goto out;
    }
    r->want_send = true;
    r->fresh = true;
    c->reqs[c->n_reqs++] = r; /* handles only grow: the table stays sorted */
    c->texts_open += n;
    c->bytes_open += bytes;
    *request = r->handle;
    r = NULL;
    rc = s_flush(c, now);
    if (rc != 0) s_diag(d, rc, "%s", zbert_strerror(rc));
out:
    if (rc == ZBERT_ENOMEM) s_diag(d, rc, "out of memory");
    free(views);
    s_req_free(r);
    return rc;
}

int zbert_cancel(zbert_client_t *c, uint64_t request) {
    if (c == NULL) return ZBERT_EINVAL;
    s_req_t *r = s_req_find(c, request);
    if (r == NULL) return 0;
    if (r->sent_at) s_send_cancel(c, r);
    /* Its events not yet taken go: the caller asked for no more of it. */
    s_event_t **pp = &c->q_head;
    c->q_tail = NULL;
    while (*pp) {
        if ((*pp)->pub.request == request) {
            s_event_t *dead = *pp;
            *pp = dead->next;
            free(dead);
        } else {
            c->q_tail = *pp;
            pp = &(*pp)->next;
        }
    }
    r->sent_at = 0; /* no second cancel from s_fail */
    return s_fail(c, r, ZBERT_ECANCELED, "canceled", "the request was cancelled");
}

int zbert_next(zbert_client_t *c, int timeout_ms, zbert_event_t **ev) {
    if (ev) *ev = NULL;
    if (c == NULL || ev == NULL) return ZBERT_EINVAL;
    uint64_t start = s_now_ms();
    for (;;) {
        if (c->q_head) {
            s_event_t *e = c->q_head;
            c->q_head = e->next;
            if (c->q_head == NULL) c->q_tail = NULL;
            e->next = NULL;
            *ev = &e->pub;
            return 0;
        }
        uint64_t now = s_now_ms();
        int left = -1;
        if (timeout_ms >= 0) {
            uint64_t spent = now - start;
            left = spent >= (uint64_t)timeout_ms ? 0 : (int)((uint64_t)timeout_ms - spent);
        } else if (c->n_reqs == 0 && !c->st_wait) {
            return 0; /* nothing open: waiting forever would hang */
        }
        bool interrupted = false;
        int rc = s_pump(c, s_next_timer(c, now, left), &interrupted);
        if (rc != 0) return rc;
        if ((left == 0 || interrupted) && c->q_head == NULL) return 0;
    }
}

int zbert_event_text(const zbert_event_t *ev, uint32_t i, zbert_text_t *t) {
    if (ev == NULL || t == NULL || ev->type != ZBERT_EVENT_PART || i >= ev->count)
        return ZBERT_EINVAL;
    const s_event_t *e = (const s_event_t *)ev;
    uint64_t r0 = e->row_start[i];
    *t = (zbert_text_t){.request = ev->request,
                        .user = ev->user,
                        .index = ev->first + i,
                        .seq = ev->first + i,
                        .status = e->status[i],
                        .code_name = e->code_name[i],
                        .error = e->message[i],
                        .truncated = e->truncated[i] != 0,
                        .level = ev->level,
                        .dim = ev->dim,
                        .n_rows = e->rows[i],
                        .vectors = ev->vectors + r0 * ev->dim,
                        .offsets = e->offsets ? e->offsets + 2 * r0 : NULL,
                        .byte_offsets = e->byte_offsets ? e->byte_offsets + 2 * r0 : NULL,
                        .ids = e->ids ? e->ids + r0 : NULL,
                        .sentence = e->sentence ? e->sentence + r0 : NULL,
                        .piece_id = e->piece_id ? e->piece_id + r0 : NULL,
                        .word_start = e->word_start ? e->word_start + r0 : NULL,
                        .oov = e->oov ? e->oov + r0 : NULL,
                        .model = ev->model};
    return 0;
}

/* --- public: status --------------------------------------------------------- */

int zbert_status(zbert_client_t *c, int timeout_ms, zbert_status_t **out, zbert_diag_t *d) {
    if (out) *out = NULL;
    if (c == NULL || out == NULL) return s_diag(d, ZBERT_EINVAL, "NULL argument");
    if (c->st_wait) return s_diag(d, ZBERT_EINVAL, "a status request is already waiting");
    uint64_t start = s_now_ms();
    snprintf(c->st_id, sizeof c->st_id, "%ss%llu", c->prefix, (unsigned long long)++c->n_status);
    c->st_wait = true;
    c->st_want_send = true;
    c->st_sent_at = 0;
    c->st_rc = 0;
    c->st_diag.msg[0] = '\0';
    int rc = s_flush(c, start);
    while (rc == 0 && c->st_rc == 0 && c->st_out == NULL) {
        uint64_t now = s_now_ms();
        int left = -1;
        if (timeout_ms >= 0) {
            if (now - start >= (uint64_t)timeout_ms) {
                c->st_rc =
                    zb_diag_set(&c->st_diag, ZBERT_ETIMEOUT,
                                "no status from broker %s within %d ms%s", c->brokers[c->cur],
                                timeout_ms, c->closing ? " (it is stopping)" : s_silence_hint(c));
                break;
            }
            left = (int)((uint64_t)timeout_ms - (now - start));
        }
        rc = s_pump(c, s_next_timer(c, now, left), NULL);
    }
    if (rc == 0) rc = c->st_rc;
    if (rc == 0) {
        *out = c->st_out;
        c->st_out = NULL;
    } else if (c->st_diag.msg[0]) {
        s_diag(d, rc, "%s", c->st_diag.msg);
    } else {
        s_diag(d, rc, "%s", zbert_strerror(rc));
    }
    zbert_status_destroy(&c->st_out);
    c->st_wait = false;
    c->st_want_send = false;
    c->st_sent_at = 0;
    return rc;
}

void zbert_status_destroy(zbert_status_t **ps) {
    if (ps == NULL || *ps == NULL) return;
    zbert_status_t *s = *ps;
    for (size_t i = 0; i < s->n_workers; i++) {
        free(s->workers[i].name);
        free(s->workers[i].model);
    }
    free(s->workers);
    free(s);
    *ps = NULL;
}
