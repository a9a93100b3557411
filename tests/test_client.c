/*
 * test_client.c -- libzbert and the zbert command against a fake broker.
 *
 * The fake broker is a ROUTER socket on a random loopback port, served by
 * a thread of this process with proto/msg.h.  It embeds texts with a
 * fake model (deterministic vectors, whitespace tokens, per-text errors
 * for texts starting "BAD", truncation for texts starting "LONG") and a
 * behaviour chosen per test: parts out of order and split unevenly, half
 * the parts then silence (so that the client resends and gets duplicates),
 * errors, busy, silence, lost requests behind a restart, malformed
 * messages, a status reply with known values.
 *
 * What is checked:
 *   - every text reaches the caller exactly once, with the fake model's
 *     rows, vectors, offsets, ids, truncation and per-text errors, and each
 *     request ends with one DONE or ERROR after its parts;
 *   - the reorder hands texts out in submission order;
 *   - Lazy Pirate with resumption: one routing id on every socket; after
 *     a silence the client reconnects and pings, and a request the broker
 *     lists in `open` is not sent again, while one a restarted broker lost
 *     goes again under its id with `have` (no text computed twice by a
 *     broker that honours it, duplicates dropped from one that does not);
 *     failover to a second endpoint; `closing` moves requests to the next
 *     broker at once, or is waited out with one broker; reconnections back
 *     off while nobody answers and requests fail when the outage budget is
 *     spent; a restart noticed from the uptime; duplicate_id tolerated for
 *     a copy we sent twice, and an error without id (with `of` or not)
 *     ending nothing; busy retried;
 *   - deadlines (sent to the broker, enforced locally), cancel, bounded
 *     in-flight requests and texts, the blocking call;
 *   - the later options reach the broker as given, token metadata reaches
 *     the caller per text (piece -1 when oov), a part whose metadata does
 *     not match its request fails it; messages of an unknown type or
 *     another version are ignored even with a request's id, while a
 *     malformed message of a known type fails its request;
 *   - bin/zbert embed writes byte for byte what client/cli/textio writes for the
 *     same results (jsonl, npy to a file and to a pipe, table, sparknlp-json
 *     and token metadata with UTF-16 spans, JSONL input with a bad line),
 *     error lines and exit status as zbert-embed's;
 *   - bin/zbert status as a table and as JSON;
 *   - CURVE: against a fake serving CURVE (no ZAP handler: libzmq lets any
 *     client key in), the client with its key files gets status and
 *     embeddings, also after failing over to a broker with another key;
 *     with a wrong broker key, or none, it gets no answer; key files it
 *     cannot use are refused with the file named; bin/zbert keygen writes
 *     a pair (modes 0600 and 0644) and never overwrites one; bin/zbert
 *     status and embed with key files (options or ZBERT_* variables), and
 *     their refusals (exit 2, the file named).
 *
 * Timing is never asserted, except generous upper bounds against hangs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client.h"
#include "curve.h"
#include "fixture.h"
#include "msg.h"
#include "textio.h"
#include "zbert.h"

#define DIM      4
#define ROWS_MAX 64

static uint64_t s_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void s_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the fake model ---------------------------------------------------------- */

typedef struct fk {
    uint32_t rows;
    float vec[ROWS_MAX * DIM];
    uint32_t off[2 * ROWS_MAX]; /* code points = bytes: tests use ASCII */
    uint32_t ids[ROWS_MAX];
    /* token metadata (token level): the sentence is the word's index / 2;
     * the word "x" has no piece (oov), a word opening with '"' is not a
     * word start */
    uint32_t sent[ROWS_MAX], piece[ROWS_MAX];
    bool wstart[ROWS_MAX], oov[ROWS_MAX];
    bool truncated;
    zb_msg_code_t code; /* NONE, or the per-text error */
    const char *message;
} fk_t;

static uint32_t s_hash(const char *t, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)t[i]) * 16777619u;
    return h;
}

/* Whitespace-separated words as [begin, end) byte spans. */
static uint32_t s_words(const char *t, size_t n, uint32_t *spans) {
    uint32_t k = 0;
    for (size_t i = 0; i < n && k < ROWS_MAX - 2;) {
        while (i < n && t[i] == ' ') i++;
        if (i == n) break;
        size_t b = i;
        while (i < n && t[i] != ' ') i++;
        spans[2 * k] = (uint32_t)b;
        spans[2 * k + 1] = (uint32_t)i;
        k++;
    }
    return k;
}

static void fk_text(const char *t, size_t n, zb_level_t level, fk_t *o) {
    memset(o, 0, sizeof *o);
    if (n >= 3 && !memcmp(t, "BAD", 3)) {
        o->code = ZB_MSG_CODE_BAD_UTF8;
        o->message = "invalid UTF-8";
        return;
    }
    o->truncated = n >= 4 && !memcmp(t, "LONG", 4);
    uint32_t spans[2 * ROWS_MAX];
    uint32_t w = s_words(t, n, spans);
    if (level == ZB_LEVEL_SENTENCE) {
        o->rows = 1;
    } else if (level == ZB_LEVEL_TOKEN) {
        o->rows = w;
        memcpy(o->off, spans, 2 * w * sizeof *spans);
        for (uint32_t k = 0; k < w; k++) {
            const char *wd = t + spans[2 * k];
            uint32_t wl = spans[2 * k + 1] - spans[2 * k];
            o->sent[k] = k / 2;
            o->oov[k] = wl == 1 && wd[0] == 'x';
            o->piece[k] = o->oov[k] ? 0 : 1000 + s_hash(wd, wl) % 5000;
            o->wstart[k] = !o->oov[k] && wd[0] != '"';
        }
    } else {
        o->rows = w + 2;
        o->ids[0] = 101;
        for (uint32_t k = 0; k < w; k++) {
            o->off[2 * (k + 1)] = spans[2 * k];
            o->off[2 * (k + 1) + 1] = spans[2 * k + 1];
            o->ids[k + 1] =
                1000 + (s_hash(t + spans[2 * k], spans[2 * k + 1] - spans[2 * k]) % 5000);
        }
        o->ids[w + 1] = 102;
    }
    uint32_t h = s_hash(t, n);
    for (uint32_t r = 0; r < o->rows; r++)
        for (int j = 0; j < DIM; j++)
            o->vec[r * DIM + j] = (float)((h + 31u * r + 7u * (uint32_t)j) % 251u) / 8.0f - 15.0f;
}

/* --- the fake broker ---------------------------------------------------------- */

typedef struct fb fb_t;
typedef void (*fb_fn)(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e);

enum { FB_LOG = 64 };

struct fb {
    void *ctx, *sock;
    char ep[128];
    pthread_t th;
    atomic_int stop;
    /* behaviour, set before the thread starts */
    fb_fn on_embed;
    bool silent;        /* ignores everything */
    bool meta_wrong;    /* sends token metadata exactly when not asked */
    bool status_ignore; /* ignores status requests */
    /* state and log, under mu */
    pthread_mutex_t mu;
    uint64_t start_ms; /* uptime origin */
    int n_embed, n_cancel, n_status;
    char ids[FB_LOG][ZB_MSG_ID_BYTES_MAX + 1];
    uint8_t rids[FB_LOG][16];
    size_t rid_lens[FB_LOG];
    uint64_t deadlines[FB_LOG];
    zb_options_t opts[FB_LOG];
    char cancels[FB_LOG][ZB_MSG_ID_BYTES_MAX + 1];
    uint8_t last_rid[16]; /* routing id of the latest message, silent or not */
    size_t last_rid_len;
    /* outages, scripted by the behaviours below (times of s_ms()) */
    uint64_t closing_until;             /* answers everything with `closing` until then */
    uint64_t mute_until;                /* then ignores everything until then */
    bool forget;                        /* and then starts again knowing nothing: a restart */
    char held[ZB_MSG_ID_BYTES_MAX + 1]; /* a request held across the mute ("" none) */
    char **held_texts;                  /* [held_n] its texts, copied */
    size_t held_n;
    zb_options_t held_opt;
    uint32_t held_from;   /* its texts sent before the mute */
    int n_closing;        /* messages answered with `closing` */
    int n_nonempty;       /* non-empty texts received in embeds */
    int nonempty[FB_LOG]; /* the same, per embed logged */
    bool have[FB_LOG];    /* the embed carried have */
    int n_computed;       /* texts covered by the parts sent */
    int n_have;           /* embeds that carried have */
    /* models (revision 1.3): parts and done name part_model (NULL: none, as
     * a broker of an earlier revision); h_model sets it per request */
    const char *part_model;
    const char *models[2]; /* h_model: the k-th request is models[k % n_models]'s */
    int n_models;
    char embed_models[FB_LOG][64]; /* the model each embed named ("" none) */
    void *mon;                     /* PAIR on the socket's monitor, or NULL */
    int n_accepted;                /* connections accepted (with mon) */
};

static void fb_send(fb_t *fb, const uint8_t *rid, size_t rlen, uint8_t *body, size_t len) {
    zmq_send(fb->sock, rid, rlen, ZMQ_SNDMORE);
    zmq_send(fb->sock, body, len, 0);
    free(body);
}

/* Sends a part for texts [a, b) of e. */
static void fb_part(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e, uint32_t a,
                    uint32_t b) {
    uint32_t count = b - a;
    uint32_t *rows = calloc(count, sizeof *rows);
    float *vec = malloc((size_t)count * ROWS_MAX * DIM * sizeof *vec);
    uint32_t *off = malloc((size_t)count * 2 * ROWS_MAX * sizeof *off);
    uint32_t *ids = malloc((size_t)count * ROWS_MAX * sizeof *ids);
    uint32_t *trunc = malloc(count * sizeof *trunc);
    zb_msg_text_error_t *errs = calloc(count, sizeof *errs);
    zb_token_meta_t *tm = malloc((size_t)count * ROWS_MAX * sizeof *tm);
    assert_true(rows && vec && off && ids && trunc && errs && tm);
    uint64_t nr = 0;
    size_t nt = 0, ne = 0;
    fk_t f;
    for (uint32_t i = 0; i < count; i++) {
        zb_msg_str_t t = e->texts[a + i];
        fk_text(t.ptr, t.len, e->opt.level, &f);
        rows[i] = f.rows;
        memcpy(vec + nr * DIM, f.vec, f.rows * DIM * sizeof *vec);
        memcpy(off + 2 * nr, f.off, 2 * f.rows * sizeof *off);
        memcpy(ids + nr, f.ids, f.rows * sizeof *ids);
        for (uint32_t k = 0; k < f.rows; k++)
            tm[nr + k] = (zb_token_meta_t){.sentence = f.sent[k],
                                           .piece_id = f.oov[k] ? -1 : (int32_t)f.piece[k],
                                           .word_start = f.wstart[k],
                                           .oov = f.oov[k]};
        nr += f.rows;
        if (f.truncated) trunc[nt++] = a + i;
        if (f.code)
            errs[ne++] = (zb_msg_text_error_t){a + i, f.code, {f.message, strlen(f.message)}};
    }
    bool sl = e->opt.level == ZB_LEVEL_SENTENCE;
    bool meta = zb_options_meta(&e->opt) != fb->meta_wrong && e->opt.level == ZB_LEVEL_TOKEN;
    zb_msg_part_t p = {.id = e->id,
                       .first = a,
                       .vec = {.level = e->opt.level,
                               .dim = DIM,
                               .count = count,
                               .rows = rows,
                               .n_rows = nr,
                               .vectors = nr ? vec : NULL,
                               .vectors_len = nr * DIM * sizeof(float),
                               .offsets = sl ? NULL : off,
                               .byte_offsets = sl ? NULL : off,
                               .ids = e->opt.level == ZB_LEVEL_WORDPIECE ? ids : NULL,
                               .token_meta = meta,
                               .meta = meta && nr ? tm : NULL,
                               .truncated = trunc,
                               .n_truncated = nt,
                               .errors = errs,
                               .n_errors = ne},
                       .model = {fb->part_model, fb->part_model ? strlen(fb->part_model) : 0}};
    uint8_t *body;
    size_t len;
    zb_diag_t d = {{0}};
    int rc = zb_msg_encode_part(&p, &body, &len, &d);
    if (rc != 0) fail_msg("encode part: %s", d.msg);
    fb_send(fb, rid, rlen, body, len);
    pthread_mutex_lock(&fb->mu);
    fb->n_computed += (int)count;
    pthread_mutex_unlock(&fb->mu);
    free(rows);
    free(vec);
    free(off);
    free(ids);
    free(trunc);
    free(errs);
    free(tm);
}

static void fb_done(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e,
                    uint64_t parts) {
    zb_msg_done_t m = {.id = e->id,
                       .texts = e->n_texts,
                       .tokens = 7 * e->n_texts,
                       .parts = parts,
                       .elapsed_ms = 3,
                       .model = {fb->part_model, fb->part_model ? strlen(fb->part_model) : 0}};
    uint8_t *body;
    size_t len;
    assert_int_equal(zb_msg_encode_done(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
}

static void fb_error(fb_t *fb, const uint8_t *rid, size_t rlen, zb_msg_str_t id, zb_msg_code_t code,
                     const char *msg) {
    zb_msg_error_t m = {.id = id, .code = code, .message = {msg, strlen(msg)}};
    uint8_t *body;
    size_t len;
    assert_int_equal(zb_msg_encode_error(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
}

static void fb_status_reply(fb_t *fb, const uint8_t *rid, size_t rlen, zb_msg_str_t id,
                            const zb_msg_str_t *open, size_t n_open) {
    static const zb_msg_worker_info_t w[2] = {
        {{"node1:101", 9}, {"tiny-seed1", 10}, 32, 4, 8, 1, 120, 45678, 250, 0},
        {{"node2:\x1b[2J", 11}, {"tiny-seed1", 10}, 32, 2, 4, 0, 7, 890, 3725000, 61000},
    };
    pthread_mutex_lock(&fb->mu);
    uint64_t up = s_ms() >= fb->start_ms ? s_ms() - fb->start_ms : 0;
    pthread_mutex_unlock(&fb->mu);
    zb_msg_status_reply_t m = {.id = id,
                               .uptime_ms = up,
                               .workers = w,
                               .n_workers = 2,
                               .requests = 3,
                               .queued_shards = 12,
                               .queued_texts = 700,
                               .in_flight_shards = 4,
                               .texts_per_s = 812.5,
                               .tokens_per_s = 25012.25,
                               .bad_results = 2,
                               .has_security = true,
                               .curve = true,
                               .refused_clients = 9,
                               .refused_workers = 1,
                               .latency_p50_ms = 12,
                               .latency_p90_ms = 30.5,
                               .latency_p99_ms = 80.25,
                               .protocol_errors = 5,
                               .open = open,
                               .n_open = n_open};
    uint8_t *body;
    size_t len;
    assert_int_equal(zb_msg_encode_status_reply(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
}

static void fb_closing(fb_t *fb, const uint8_t *rid, size_t rlen) {
    zb_msg_closing_t m = {.message = {"stopping: SIGTERM", 17}};
    uint8_t *body;
    size_t len;
    assert_int_equal(zb_msg_encode_closing(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
}

/* An embed of the held request (views into fb's copies). */
static zb_msg_embed_t fb_held_embed(fb_t *fb, zb_msg_str_t *views) {
    for (size_t i = 0; i < fb->held_n; i++)
        views[i] = (zb_msg_str_t){fb->held_texts[i], strlen(fb->held_texts[i])};
    return (zb_msg_embed_t){.id = {fb->held, strlen(fb->held)},
                            .texts = views,
                            .n_texts = fb->held_n,
                            .opt = fb->held_opt};
}

static void fb_held_free(fb_t *fb) {
    for (size_t i = 0; i < fb->held_n; i++) free(fb->held_texts[i]);
    free(fb->held_texts);
    fb->held_texts = NULL;
    fb->held_n = 0;
    fb->held[0] = '\0';
}

/* A status while a request is held: the reply lists it in `open`, then its
 * other texts follow, and its done. */
static void fb_status_held(fb_t *fb, const uint8_t *rid, size_t rlen, zb_msg_str_t id) {
    zb_msg_str_t *views = calloc(fb->held_n, sizeof *views);
    zb_msg_embed_t e = fb_held_embed(fb, views);
    fb_status_reply(fb, rid, rlen, id, &e.id, 1);
    uint32_t parts = 0;
    for (uint32_t a = fb->held_from; a < e.n_texts; a += 3, parts++)
        fb_part(fb, rid, rlen, &e, a, a + 3 > e.n_texts ? (uint32_t)e.n_texts : a + 3);
    fb_done(fb, rid, rlen, &e, parts + 1);
    free(views);
    fb_held_free(fb);
}

static void fb_handle(fb_t *fb, const uint8_t *rid, size_t rlen, const void *body, size_t len) {
    pthread_mutex_lock(&fb->mu);
    memcpy(fb->last_rid, rid, rlen < 16 ? rlen : 16);
    fb->last_rid_len = rlen;
    pthread_mutex_unlock(&fb->mu);
    if (fb->silent) return;
    zb_msg_t m = {0};
    if (zb_msg_decode(body, len, &m, NULL) != 0) return;
    pthread_mutex_lock(&fb->mu);
    uint64_t now = s_ms();
    if (now < fb->closing_until) {
        fb->n_closing++;
        pthread_mutex_unlock(&fb->mu);
        fb_closing(fb, rid, rlen);
        zb_msg_free(&m);
        return;
    }
    if (now < fb->mute_until) {
        pthread_mutex_unlock(&fb->mu);
        zb_msg_free(&m);
        return;
    }
    if (fb->mute_until && fb->forget) {
        fb->start_ms = now; /* uptime 0: a broker that started just now */
        fb_held_free(fb);
    }
    fb->mute_until = 0;
    bool held = fb->held[0] != '\0' && m.type == ZB_MSG_STATUS;
    int nonempty = 0;
    if (m.type == ZB_MSG_EMBED) {
        for (size_t i = 0; i < m.u.embed.n_texts; i++) nonempty += m.u.embed.texts[i].len > 0;
        fb->n_nonempty += nonempty;
        fb->n_have += m.u.embed.n_have > 0;
    }
    if (m.type == ZB_MSG_EMBED && fb->n_embed++ < FB_LOG) {
        int k = fb->n_embed - 1;
        fb->nonempty[k] = nonempty;
        fb->have[k] = m.u.embed.n_have > 0;
        snprintf(fb->embed_models[k], sizeof fb->embed_models[k], "%.*s", (int)m.u.embed.model.len,
                 m.u.embed.model.ptr);
        snprintf(fb->ids[k], sizeof fb->ids[k], "%.*s", (int)m.u.embed.id.len, m.u.embed.id.ptr);
        memcpy(fb->rids[k], rid, rlen < 16 ? rlen : 16);
        fb->rid_lens[k] = rlen;
        fb->deadlines[k] = m.u.embed.deadline_ms;
        fb->opts[k] = m.u.embed.opt;
    } else if (m.type == ZB_MSG_CANCEL && fb->n_cancel++ < FB_LOG) {
        int k = fb->n_cancel - 1;
        snprintf(fb->cancels[k], sizeof fb->cancels[k], "%.*s", (int)m.u.cancel.id.len,
                 m.u.cancel.id.ptr);
    } else if (m.type == ZB_MSG_STATUS) {
        fb->n_status++;
    }
    pthread_mutex_unlock(&fb->mu);
    if (m.type == ZB_MSG_EMBED && fb->on_embed) fb->on_embed(fb, rid, rlen, &m.u.embed);
    if (held)
        fb_status_held(fb, rid, rlen, m.u.status.id);
    else if (m.type == ZB_MSG_STATUS && !fb->status_ignore)
        fb_status_reply(fb, rid, rlen, m.u.status.id, NULL, 0);
    zb_msg_free(&m);
}

/* Counts the connections the fake accepts (its socket monitor). */
static void fb_monitor_read(fb_t *fb) {
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, fb->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2) memcpy(&event, zmq_msg_data(&ev), 2);
        zmq_msg_close(&ev);
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, fb->mon, 0); /* the second frame: the address */
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_ACCEPTED) {
            pthread_mutex_lock(&fb->mu);
            fb->n_accepted++;
            pthread_mutex_unlock(&fb->mu);
        }
    }
}

static void *fb_main(void *arg) {
    fb_t *fb = arg;
    while (!atomic_load(&fb->stop)) {
        zmq_pollitem_t it[2] = {{.socket = fb->sock, .events = ZMQ_POLLIN},
                                {.socket = fb->mon, .events = ZMQ_POLLIN}};
        if (zmq_poll(it, fb->mon ? 2 : 1, 10) <= 0) continue;
        if (fb->mon && (it[1].revents & ZMQ_POLLIN)) fb_monitor_read(fb);
        if (!(it[0].revents & ZMQ_POLLIN)) continue;
        uint8_t rid[256];
        int rlen = zmq_recv(fb->sock, rid, sizeof rid, 0);
        if (rlen < 0) continue;
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, fb->sock, 0) >= 0)
            fb_handle(fb, rid, (size_t)rlen, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
    return NULL;
}

/* A fake serving CURVE with server's key pair when it is not NULL. */
static fb_t *fb_start_curve(fb_fn on_embed, const zb_curve_cert_t *server) {
    fb_t *fb = calloc(1, sizeof *fb);
    assert_non_null(fb);
    fb->on_embed = on_embed;
    /* up for a minute: a request sent in a test's first milliseconds is
     * not taken for one sent before the broker started */
    fb->start_ms = s_ms() > 60000 ? s_ms() - 60000 : 0;
    pthread_mutex_init(&fb->mu, NULL);
    fb->ctx = zmq_ctx_new();
    fb->sock = zmq_socket(fb->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(fb->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(fb->sock, ZMQ_LINGER, &zero, sizeof zero);
    /* as the broker: a reconnection under a known routing id takes it over */
    zmq_setsockopt(fb->sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
    if (server) assert_int_equal(zb_curve_server_socket(fb->sock, server, "clients", NULL), 0);
    assert_int_equal(zmq_bind(fb->sock, "tcp://127.0.0.1:*"), 0);
    size_t n = sizeof fb->ep;
    assert_int_equal(zmq_getsockopt(fb->sock, ZMQ_LAST_ENDPOINT, fb->ep, &n), 0);
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://fb-monitor-%p", (void *)fb);
    assert_int_equal(zmq_socket_monitor(fb->sock, mon, ZMQ_EVENT_ACCEPTED), 0);
    fb->mon = zmq_socket(fb->ctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(fb->mon, mon), 0);
    return fb;
}

static fb_t *fb_start(fb_fn on_embed) {
    return fb_start_curve(on_embed, NULL);
}

static void fb_run(fb_t *fb) {
    assert_int_equal(pthread_create(&fb->th, NULL, fb_main, fb), 0);
}

static void fb_stop(fb_t **pfb) {
    fb_t *fb = *pfb;
    if (fb == NULL) return;
    atomic_store(&fb->stop, 1);
    pthread_join(fb->th, NULL);
    zmq_socket_monitor(fb->sock, NULL, 0);
    zmq_close(fb->mon);
    fb_held_free(fb);
    zmq_close(fb->sock);
    zmq_ctx_term(fb->ctx);
    pthread_mutex_destroy(&fb->mu);
    free(fb);
    *pfb = NULL;
}

static int fb_count(fb_t *fb, const int *field) {
    pthread_mutex_lock(&fb->mu);
    int v = *field;
    pthread_mutex_unlock(&fb->mu);
    return v;
}

/* Waits up to 5 s for a counter to reach want. */
static void fb_wait(fb_t *fb, const int *field, int want) {
    for (uint64_t t0 = s_ms(); fb_count(fb, field) < want && s_ms() - t0 < 5000;) s_sleep_ms(5);
    assert_true(fb_count(fb, field) >= want);
}

/* --- behaviours ----------------------------------------------------------------- */

/* Parts of uneven sizes (1, 3, 2, 5, ...), sent last first, then done. */
static void h_shuffle(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    static const uint32_t sizes[] = {1, 3, 2, 5, 4};
    uint32_t starts[1024], ends[1024], n = 0;
    for (uint32_t a = 0, k = 0; a < e->n_texts; k++) {
        uint32_t b = a + sizes[k % 5];
        if (b > e->n_texts) b = (uint32_t)e->n_texts;
        if (n < 1024) {
            starts[n] = a;
            ends[n++] = b;
        }
        a = b;
    }
    if (e->n_texts > 3000) { /* big requests: plain order, fewer parts */
        for (uint32_t a = 0; a < e->n_texts; a += 100) {
            uint32_t b = a + 100 > e->n_texts ? (uint32_t)e->n_texts : a + 100;
            fb_part(fb, rid, rlen, e, a, b);
        }
        fb_done(fb, rid, rlen, e, (e->n_texts + 99) / 100);
        return;
    }
    for (uint32_t k = n; k-- > 0;) fb_part(fb, rid, rlen, e, starts[k], ends[k]);
    fb_done(fb, rid, rlen, e, n);
}

/* "NOMODEL" first: the request is refused; otherwise as h_shuffle. */
static void h_errors(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (e->texts[0].len == 7 && !memcmp(e->texts[0].ptr, "NOMODEL", 7)) {
        fb_error(fb, rid, rlen, e->id, ZB_MSG_CODE_NO_MODEL, "no worker serves the model");
        return;
    }
    h_shuffle(fb, rid, rlen, e);
}

/* Times an id was received so far (the current one included). */
static int fb_seen(fb_t *fb, zb_msg_str_t id) {
    int n = 0;
    pthread_mutex_lock(&fb->mu);
    for (int k = 0; k < fb->n_embed && k < FB_LOG; k++)
        if (strlen(fb->ids[k]) == id.len && !memcmp(fb->ids[k], id.ptr, id.len)) n++;
    pthread_mutex_unlock(&fb->mu);
    return n;
}

/* Parts of at most per texts for the texts of e outside its `have`, as
 * revision 1.3 asks; returns how many. */
static uint32_t fb_parts_outside_have(fb_t *fb, const uint8_t *rid, size_t rlen,
                                      const zb_msg_embed_t *e, uint32_t from, uint32_t per) {
    uint32_t n = (uint32_t)e->n_texts, parts = 0;
    size_t h = 0;
    for (uint32_t a = from; a < n;) {
        while (h < e->n_have && e->have[h] + e->have[h + 1] <= a) h += 2;
        if (h < e->n_have && e->have[h] <= a) {
            a = e->have[h] + e->have[h + 1];
            continue;
        }
        uint32_t b = a + per > n ? n : a + per;
        if (h < e->n_have && e->have[h] < b) b = e->have[h];
        fb_part(fb, rid, rlen, e, a, b);
        parts++;
        a = b;
    }
    return parts;
}

/* The first half of e's texts in parts of 2; then silence for 500 ms. */
static void fb_half_then_mute(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e,
                              bool forget) {
    uint32_t n = (uint32_t)e->n_texts;
    for (uint32_t a = 0; a < n / 2; a += 2)
        fb_part(fb, rid, rlen, e, a, a + 2 > n / 2 ? n / 2 : a + 2);
    pthread_mutex_lock(&fb->mu);
    fb->mute_until = s_ms() + 500;
    fb->forget = forget;
    pthread_mutex_unlock(&fb->mu);
}

/* First copy: the first half, then silence, after which the fake is a
 * broker that restarted and holds nothing.  Second copy: every text in
 * parts of 3, `have` or not (as a broker of an earlier revision: the
 * client drops the texts it holds), and done. */
static void h_half_then_restart(fb_t *fb, const uint8_t *rid, size_t rlen,
                                const zb_msg_embed_t *e) {
    uint32_t n = (uint32_t)e->n_texts;
    if (fb_seen(fb, e->id) == 1) {
        fb_half_then_mute(fb, rid, rlen, e, true);
        return;
    }
    uint32_t parts = 0;
    for (uint32_t a = 0; a < n; a += 3, parts++)
        fb_part(fb, rid, rlen, e, a, a + 3 > n ? n : a + 3);
    fb_done(fb, rid, rlen, e, parts);
}

/* As h_half_then_restart, but the second copy is answered as revision 1.3
 * asks: parts for the texts outside `have` only. */
static void h_half_then_restart_have(fb_t *fb, const uint8_t *rid, size_t rlen,
                                     const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) == 1) {
        fb_half_then_mute(fb, rid, rlen, e, true);
        return;
    }
    fb_done(fb, rid, rlen, e, fb_parts_outside_have(fb, rid, rlen, e, 0, 3));
}

/* Keeps a copy of e as the request held across an outage, its texts
 * [0, from) sent. */
static void fb_hold(fb_t *fb, const zb_msg_embed_t *e, uint32_t from) {
    pthread_mutex_lock(&fb->mu);
    fb_held_free(fb);
    snprintf(fb->held, sizeof fb->held, "%.*s", (int)e->id.len, e->id.ptr);
    fb->held_texts = calloc(e->n_texts, sizeof *fb->held_texts);
    for (size_t i = 0; i < e->n_texts; i++)
        fb->held_texts[i] = strndup(e->texts[i].ptr, e->texts[i].len);
    fb->held_n = e->n_texts;
    fb->held_opt = e->opt;
    fb->held_from = from;
    pthread_mutex_unlock(&fb->mu);
}

/* The first half, then silence while the fake holds the request (a broker
 * cut off from the client, then back): the next status lists it in `open`
 * and the rest follows, then done.  A second copy would be answered as
 * h_shuffle does. */
static void h_half_then_hold(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) > 1) {
        h_shuffle(fb, rid, rlen, e);
        return;
    }
    fb_hold(fb, e, (uint32_t)e->n_texts / 2);
    fb_half_then_mute(fb, rid, rlen, e, false);
}

/* As h_half_then_hold, but the last 4 texts of the first half are lost:
 * parts the broker took for sent into the connection that died.  Its done
 * comes with texts missing; a second copy gets the texts outside `have`. */
static void h_half_lost_then_hold(fb_t *fb, const uint8_t *rid, size_t rlen,
                                  const zb_msg_embed_t *e) {
    uint32_t n = (uint32_t)e->n_texts;
    if (fb_seen(fb, e->id) > 1) {
        fb_done(fb, rid, rlen, e, fb_parts_outside_have(fb, rid, rlen, e, 0, 3));
        return;
    }
    for (uint32_t a = 0; a < n / 2 - 4; a += 2)
        fb_part(fb, rid, rlen, e, a, a + 2 > n / 2 - 4 ? n / 2 - 4 : a + 2);
    fb_hold(fb, e, n / 2);
    pthread_mutex_lock(&fb->mu);
    fb->mute_until = s_ms() + 500;
    fb->forget = false;
    pthread_mutex_unlock(&fb->mu);
}

/* A third of the texts, then `closing` at once and in answer to everything
 * from then on (for stop_ms; then silence for 300 ms and a broker that
 * restarted, when restart). */
static void fb_third_then_closing(fb_t *fb, const uint8_t *rid, size_t rlen,
                                  const zb_msg_embed_t *e, uint64_t stop_ms, bool restart) {
    uint32_t n = (uint32_t)e->n_texts;
    for (uint32_t a = 0; a < n / 3; a += 2)
        fb_part(fb, rid, rlen, e, a, a + 2 > n / 3 ? n / 3 : a + 2);
    pthread_mutex_lock(&fb->mu);
    uint64_t now = s_ms();
    fb->closing_until = now + stop_ms;
    if (restart) {
        fb->mute_until = now + stop_ms + 300;
        fb->forget = true;
    }
    pthread_mutex_unlock(&fb->mu);
    fb_closing(fb, rid, rlen);
}

/* A broker that stops for good after a third of the first request. */
static void h_closing(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    fb_third_then_closing(fb, rid, rlen, e, 3600000, false);
}

/* The first copy: a third, then `closing` for 400 ms, then a restart.
 * Later copies: the texts outside `have`, and done. */
static void h_closing_restart(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) == 1) {
        fb_third_then_closing(fb, rid, rlen, e, 400, true);
        return;
    }
    fb_done(fb, rid, rlen, e, fb_parts_outside_have(fb, rid, rlen, e, 0, 3));
}

/* Every text outside `have` in parts of 3, and done (a revision 1.3
 * broker, in order). */
static void h_have(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    fb_done(fb, rid, rlen, e, fb_parts_outside_have(fb, rid, rlen, e, 0, 3));
}

/* As h_shuffle, the k-th request (0-based) served by models[k % n_models],
 * whatever it asked for. */
static void h_model(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    int k = fb_count(fb, &fb->n_embed) - 1;
    fb->part_model = fb->models[k % fb->n_models];
    h_shuffle(fb, rid, rlen, e);
}

/* The first part from models[0], the rest from models[1]: one request
 * served by two models. */
static void h_model_switch(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    uint32_t n = (uint32_t)e->n_texts;
    fb->part_model = fb->models[0];
    fb_part(fb, rid, rlen, e, 0, 1);
    fb->part_model = fb->models[1];
    if (n > 1) fb_part(fb, rid, rlen, e, 1, n);
    fb_done(fb, rid, rlen, e, n > 1 ? 2 : 1);
}

/* Before answering: an error without id naming the request in `of` (a
 * duplicate_id of revision 1.3, which must not end it), and one without
 * id or `of`; then as h_shuffle. */
static void h_dup_of(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    zb_msg_error_t m = {.code = ZB_MSG_CODE_DUPLICATE_ID,
                        .message = {"another request is open under this id", 37},
                        .of = e->id};
    uint8_t *body;
    size_t len;
    assert_int_equal(zb_msg_encode_error(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
    m.of = (zb_msg_str_t){NULL, 0};
    m.code = ZB_MSG_CODE_BAD_REQUEST;
    assert_int_equal(zb_msg_encode_error(&m, &body, &len, NULL), 0);
    fb_send(fb, rid, rlen, body, len);
    h_shuffle(fb, rid, rlen, e);
}

/* Every part, no done. */
static void h_parts_only(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    for (uint32_t a = 0; a < e->n_texts; a += 4)
        fb_part(fb, rid, rlen, e, a, a + 4 > e->n_texts ? (uint32_t)e->n_texts : a + 4);
}

/* busy for the first copy of each id, then as h_shuffle. */
static void h_busy(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) == 1) {
        fb_error(fb, rid, rlen, e->id, ZB_MSG_CODE_BUSY, "queue full");
        return;
    }
    h_shuffle(fb, rid, rlen, e);
}

/* no_model for the first copy of each id (no worker yet), then as
 * h_shuffle. */
static void h_no_model_once(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) == 1) {
        fb_error(fb, rid, rlen, e->id, ZB_MSG_CODE_NO_MODEL, "no worker");
        return;
    }
    h_shuffle(fb, rid, rlen, e);
}

/* Never answers embeds (statuses are answered). */
static void h_ignore(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    (void)fb, (void)rid, (void)rlen, (void)e;
}

/* The first copy is lost in a restart (the uptime starts again just
 * after it); the second is answered. */
static void h_restart(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    if (fb_seen(fb, e->id) == 1) {
        pthread_mutex_lock(&fb->mu);
        fb->start_ms = s_ms() + 1;
        pthread_mutex_unlock(&fb->mu);
        return;
    }
    h_shuffle(fb, rid, rlen, e);
}

/* The first copy gets its first text, then the uptime restarts although
 * the request goes on; the second copy is answered duplicate_id, then the
 * rest of the first copy follows. */
static void h_dupid(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    uint32_t n = (uint32_t)e->n_texts;
    if (fb_seen(fb, e->id) == 1) {
        fb_part(fb, rid, rlen, e, 0, 1);
        pthread_mutex_lock(&fb->mu);
        fb->start_ms = s_ms() + 1;
        pthread_mutex_unlock(&fb->mu);
        return;
    }
    fb_error(fb, rid, rlen, e->id, ZB_MSG_CODE_DUPLICATE_ID, "id already open");
    if (n > 1) fb_part(fb, rid, rlen, e, 1, n);
    fb_done(fb, rid, rlen, e, 2);
}

/* Request "lvl": rows of the wrong level.  Request "badid": a part with
 * its id but a missing field.  Both after garbage and a 2-frame message. */
static void h_malformed(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    static const uint8_t junk[] = {0x81, 0xa1, 0x78, 0xc1};
    uint8_t *b = malloc(sizeof junk);
    memcpy(b, junk, sizeof junk);
    fb_send(fb, rid, rlen, b, sizeof junk);
    zmq_send(fb->sock, rid, rlen, ZMQ_SNDMORE);
    zmq_send(fb->sock, "", 0, ZMQ_SNDMORE);
    zmq_send(fb->sock, "x", 1, 0);
    if (e->texts[0].len == 3 && !memcmp(e->texts[0].ptr, "lvl", 3)) {
        zb_msg_embed_t other = *e;
        other.opt.level = ZB_LEVEL_SENTENCE;
        fb_part(fb, rid, rlen, &other, 0, (uint32_t)e->n_texts);
        return;
    }
    /* {"v":1,"type":"part","id":<id>} */
    uint8_t body[128];
    size_t n = 0;
    static const char head[] = "\x83\xa1v\x01\xa4type\xa4part\xa2id";
    memcpy(body, head, sizeof head - 1);
    n = sizeof head - 1;
    body[n++] = (uint8_t)(0xa0 | e->id.len);
    memcpy(body + n, e->id.ptr, e->id.len);
    n += e->id.len;
    b = malloc(n);
    memcpy(b, body, n);
    fb_send(fb, rid, rlen, b, n);
}

/* Before the answer proper, messages a client must ignore although they
 * carry the request's id: a type of a later revision and a body of
 * another version. */
static void h_unknown_first(fb_t *fb, const uint8_t *rid, size_t rlen, const zb_msg_embed_t *e) {
    for (int k = 0; k < 2; k++) {
        /* {"v":1,"type":"later","id":<id>,"more":[1]} / {"v":2,"type":"part","id":<id>} */
        uint8_t body[128];
        size_t n = 0;
        static const char later[] = "\x84\xa1v\x01\xa4type\xa5later\xa4more\x91\x01\xa2id";
        static const char v2[] = "\x83\xa1v\x02\xa4type\xa4part\xa2id";
        const char *head = k == 0 ? later : v2;
        size_t hl = k == 0 ? sizeof later - 1 : sizeof v2 - 1;
        memcpy(body, head, hl);
        n = hl;
        body[n++] = (uint8_t)(0xa0 | e->id.len);
        memcpy(body + n, e->id.ptr, e->id.len);
        n += e->id.len;
        uint8_t *b = malloc(n);
        memcpy(b, body, n);
        fb_send(fb, rid, rlen, b, n);
    }
    h_shuffle(fb, rid, rlen, e);
}

/* --- client helpers -------------------------------------------------------------- */

/* A client whose outage budget is outage_ms. */
static zbert_client_t *s_client_outage(const char *const *eps, size_t n, uint32_t retry_ms,
                                       uint32_t outage_ms) {
    zbert_config_t cfg = {
        .brokers = eps, .n_brokers = n, .retry_ms = retry_ms, .outage_ms = outage_ms};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) fail_msg("client: %s", d.msg);
    return c;
}

static zbert_client_t *s_client(const char *const *eps, size_t n, uint32_t retry_ms, uint32_t tries,
                                size_t requests_max, size_t texts_max) {
    zbert_config_t cfg = {.brokers = eps,
                          .n_brokers = n,
                          .retry_ms = retry_ms,
                          .tries = tries,
                          .requests_max = requests_max,
                          .texts_max = texts_max};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) fail_msg("client: %s", d.msg);
    return c;
}

/* Submitted texts of one request, to check events against. */
typedef struct req {
    uint64_t handle;
    const char **texts;
    size_t n;
    zbert_level_t level;
    bool meta;          /* the options ask for token metadata */
    int *seen;          /* [n] deliveries of each text */
    const char *model;  /* the model its PART and DONE events must name, or NULL */
    int ended;          /* DONE or ERROR events */
    zbert_event_t *end; /* the DONE or ERROR */
} req_t;

/* The internal level of a public one, through the library's conversion. */
static zb_level_t s_level_in(zbert_level_t level) {
    zbert_options_t po = {.level = level};
    zb_options_t o;
    assert_int_equal(zb_client_options_from_public(&po, &o, NULL), 0);
    return o.level;
}

static void s_check_text(const req_t *r, const zbert_text_t *t) {
    assert_true(t->index < r->n);
    const char *s = r->texts[t->index];
    fk_t f;
    fk_text(s, strlen(s), s_level_in(r->level), &f);
    if (f.code) {
        assert_int_equal(t->status, ZBERT_EUTF8);
        assert_string_equal(t->code_name, "bad_utf8");
        assert_string_equal(t->error, f.message);
        assert_int_equal(t->n_rows, 0);
        return;
    }
    assert_int_equal(t->status, 0);
    assert_null(t->error);
    assert_int_equal(t->truncated, f.truncated);
    assert_int_equal(t->dim, DIM);
    assert_int_equal(t->n_rows, f.rows);
    assert_true(((uintptr_t)t->vectors % sizeof(float)) == 0);
    assert_memory_equal(t->vectors, f.vec, f.rows * DIM * sizeof(float));
    if (r->level == ZBERT_LEVEL_SENTENCE) {
        assert_null(t->offsets);
        assert_null(t->ids);
    } else {
        assert_memory_equal(t->offsets, f.off, 2 * f.rows * sizeof(uint32_t));
        assert_memory_equal(t->byte_offsets, f.off, 2 * f.rows * sizeof(uint32_t));
    }
    if (r->level == ZBERT_LEVEL_WORDPIECE)
        assert_memory_equal(t->ids, f.ids, f.rows * 4);
    else
        assert_null(t->ids);
    if (!r->meta) {
        assert_null(t->sentence);
        assert_null(t->piece_id);
        assert_null(t->word_start);
        assert_null(t->oov);
        return;
    }
    assert_true(t->sentence && t->piece_id && t->word_start && t->oov);
    for (uint32_t k = 0; k < f.rows; k++) {
        assert_int_equal(t->sentence[k], f.sent[k]);
        assert_int_equal(t->piece_id[k], f.oov[k] ? -1 : (int32_t)f.piece[k]);
        assert_int_equal(t->word_start[k], f.wstart[k]);
        assert_int_equal(t->oov[k], f.oov[k]);
    }
}

static req_t *s_find_req(req_t *rs, size_t n, uint64_t handle) {
    for (size_t i = 0; i < n; i++)
        if (rs[i].handle == handle) return &rs[i];
    fail_msg("event for unknown request %llu", (unsigned long long)handle);
    return NULL;
}

/* Checks one event against the requests; keeps the end event.  If ro is
 * not NULL the event goes there (after the checks). */
static void s_check_event(req_t *rs, size_t n, zbert_event_t *ev, zbert_reorder_t *ro) {
    req_t *r = s_find_req(rs, n, ev->request);
    assert_int_equal(r->ended, 0); /* nothing after the end */
    if (ev->type == ZBERT_EVENT_PART) {
        assert_true(ev->count >= 1);
        assert_true(((uintptr_t)ev->vectors % 64) == 0);
        for (uint32_t i = 0; i < ev->count; i++) {
            zbert_text_t t;
            assert_int_equal(zbert_event_text(ev, i, &t), 0);
            assert_int_equal(t.index, ev->first + i);
            s_check_text(r, &t);
            if (r->model) assert_string_equal(t.model, r->model);
            r->seen[t.index]++;
            assert_int_equal(r->seen[t.index], 1); /* exactly once */
        }
        zbert_text_t t;
        assert_int_equal(zbert_event_text(ev, ev->count, &t), ZBERT_EINVAL);
    } else {
        r->ended++;
    }
    if (r->model && ev->type != ZBERT_EVENT_ERROR) {
        assert_non_null(ev->model);
        assert_string_equal(ev->model, r->model);
    }
    if (ro) {
        if (ev->type != ZBERT_EVENT_PART && r->end == NULL) {
            /* keep a copy of what matters for the assertions */
            r->end = calloc(1, sizeof *r->end);
            *r->end = *ev;
            r->end->message = ev->message ? strdup(ev->message) : NULL;
            r->end->id = NULL;
        }
        assert_int_equal(zbert_reorder_push(ro, &ev), 0);
        assert_null(ev);
    } else if (ev->type != ZBERT_EVENT_PART) {
        r->end = ev;
    } else {
        zbert_event_destroy(&ev);
    }
}

/* Runs the client until every request ended (10 s at most). */
static void s_run_until_ended(zbert_client_t *c, req_t *rs, size_t n, zbert_reorder_t *ro) {
    uint64_t t0 = s_ms();
    for (;;) {
        size_t ended = 0;
        for (size_t i = 0; i < n; i++) ended += rs[i].ended;
        if (ended == n) break;
        if (s_ms() - t0 > 10000) fail_msg("requests did not end within 10 s");
        zbert_event_t *ev = NULL;
        assert_int_equal(zbert_next(c, 100, &ev), 0);
        if (ev) s_check_event(rs, n, ev, ro);
    }
}

static void s_submit_opt(zbert_client_t *c, req_t *r, const char **texts, size_t n,
                         const zbert_options_t *o) {
    zbert_options_t opt = *o;
    zb_options_t mo;
    assert_int_equal(zb_client_options_from_public(o, &mo, NULL), 0);
    *r = (req_t){.texts = texts,
                 .n = n,
                 .level = o->level,
                 .meta = zb_options_meta(&mo),
                 .seen = calloc(n, sizeof(int))};
    zbert_diag_t d = {{0}};
    int rc = zbert_submit(c, texts, NULL, n, &opt, r, &r->handle, &d);
    if (rc != 0) fail_msg("submit: %s", d.msg);
    assert_true(r->handle != 0);
}

static void s_submit(zbert_client_t *c, req_t *r, const char **texts, size_t n, zbert_level_t level,
                     uint32_t deadline_ms) {
    zbert_options_t opt = {.level = level, .deadline_ms = deadline_ms};
    s_submit_opt(c, r, texts, n, &opt);
}

static void s_req_free(req_t *r) {
    free(r->seen);
    if (r->end) {
        free((void *)r->end->message);
        free(r->end);
    }
    r->end = NULL;
}

static void s_req_free_ev(req_t *r) {
    free(r->seen);
    zbert_event_destroy(&r->end);
}

static void s_all_seen(const req_t *r) {
    for (size_t i = 0; i < r->n; i++) assert_int_equal(r->seen[i], 1);
}

/* Texts "t<k> w w ..." with some BAD and LONG ones. */
static const char **s_texts(size_t n, const char *tag) {
    const char **t = calloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++) {
        char buf[96];
        if (i % 7 == 3)
            snprintf(buf, sizeof buf, "BAD %s %zu", tag, i);
        else if (i % 5 == 4)
            snprintf(buf, sizeof buf, "LONG %s %zu words here", tag, i);
        else
            snprintf(buf, sizeof buf, "%s%zu %.*s", tag, i, (int)(i % 9) * 2, "a b c d e f g h i ");
        t[i] = strdup(buf);
    }
    return t;
}

static void s_texts_free(const char **t, size_t n) {
    for (size_t i = 0; i < n; i++) free((void *)t[i]);
    free(t);
}

/* --- tests: async API ------------------------------------------------------------- */

static void test_out_of_order_and_reorder(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    size_t ns[3] = {23, 1, 40};
    zbert_level_t lv[3] = {ZBERT_LEVEL_TOKEN, ZBERT_LEVEL_SENTENCE, ZBERT_LEVEL_WORDPIECE};
    const char **texts[3];
    req_t rs[3];
    zbert_reorder_t *ro = NULL;
    assert_int_equal(zbert_reorder_new(&ro), 0);
    for (int k = 0; k < 3; k++) {
        texts[k] = s_texts(ns[k], k == 0 ? "x" : k == 1 ? "y" : "z");
        s_submit(c, &rs[k], texts[k], ns[k], lv[k], 0);
        assert_int_equal(zbert_reorder_expect(ro, rs[k].handle, (uint32_t)ns[k]), 0);
    }
    assert_int_equal(zbert_reorder_expect(ro, rs[0].handle, 3), ZBERT_EINVAL);
    assert_int_equal(zbert_open_requests(c), 3);
    assert_int_equal(zbert_reorder_pending(ro), 64);
    s_run_until_ended(c, rs, 3, ro);
    assert_int_equal(zbert_open_requests(c), 0);
    /* The reorder gives every text, in submission order. */
    zbert_text_t t;
    uint64_t seq = 0;
    for (int k = 0; k < 3; k++) {
        s_all_seen(&rs[k]);
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_DONE);
        assert_int_equal(rs[k].end->texts, ns[k]);
        assert_int_equal(rs[k].end->tokens, 7 * ns[k]);
        for (size_t i = 0; i < ns[k]; i++, seq++) {
            assert_int_equal(zbert_reorder_pop(ro, &t), 1);
            assert_int_equal(t.seq, seq);
            assert_int_equal(t.request, rs[k].handle);
            assert_ptr_equal(t.user, &rs[k]);
            assert_int_equal(t.index, i);
            s_check_text(&rs[k], &t);
        }
    }
    assert_int_equal(zbert_reorder_pop(ro, &t), 0);
    assert_int_equal(zbert_reorder_pending(ro), 0);
    /* nothing open: a wait without limit returns at once */
    zbert_event_t *ev = (zbert_event_t *)1;
    assert_int_equal(zbert_next(c, -1, &ev), 0);
    assert_null(ev);
    for (int k = 0; k < 3; k++) {
        s_req_free(&rs[k]);
        s_texts_free(texts[k], ns[k]);
    }
    zbert_reorder_destroy(&ro);
    assert_null(ro);
    zbert_client_destroy(&c);
    assert_null(c);
    fb_stop(&fb);
}

/* A reorder holding partial results when a request fails: the missing
 * texts come out as failures, the others as results; destroy frees what
 * is held. */
static void test_reorder_error_and_destroy(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_errors);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 200, 3, 0, 0);
    const char *t1[] = {"NOMODEL", "b"};
    const char **t0 = s_texts(6, "p");
    req_t rs[2];
    zbert_reorder_t *ro = NULL;
    assert_int_equal(zbert_reorder_new(&ro), 0);
    s_submit(c, &rs[0], t1, 2, ZBERT_LEVEL_TOKEN, 0);
    s_submit(c, &rs[1], t0, 6, ZBERT_LEVEL_TOKEN, 0);
    assert_int_equal(zbert_reorder_expect(ro, rs[0].handle, 2), 0);
    assert_int_equal(zbert_reorder_expect(ro, rs[1].handle, 6), 0);
    s_run_until_ended(c, rs, 2, ro);
    assert_int_equal(rs[0].end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(rs[0].end->code, ZBERT_ENOTFOUND);
    assert_string_equal(rs[0].end->code_name, "no_model");
    assert_string_equal(rs[0].end->message, "no worker serves the model");
    /* no_model was asked again `tries` times before it counted */
    assert_int_equal(fb_count(fb, &fb->n_embed), 5);
    zbert_text_t t;
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(zbert_reorder_pop(ro, &t), 1);
        assert_int_equal(t.status, ZBERT_ENOTFOUND);
        assert_string_equal(t.error, "no worker serves the model");
        assert_int_equal(t.index, i);
    }
    assert_int_equal(zbert_reorder_pop(ro, &t), 1);
    assert_int_equal(t.seq, 2);
    s_check_text(&rs[1], &t);
    /* an event for a request never announced, or ended: refused, freed */
    zbert_event_t *fake = NULL;
    const char *one[] = {"x"};
    req_t r3;
    s_submit(c, &r3, one, 1, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r3, 1, NULL);
    fake = r3.end;
    r3.end = NULL;
    assert_int_equal(zbert_reorder_push(ro, &fake), ZBERT_EINVAL);
    assert_null(fake);
    zbert_reorder_destroy(&ro); /* 5 texts still held */
    s_req_free(&rs[0]);
    s_req_free(&rs[1]);
    s_req_free_ev(&r3);
    s_texts_free(t0, 6);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_per_text_errors_and_truncation(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *texts[] = {"BAD one", "fine text", "LONG one two", "", "BAD"};
    req_t r;
    s_submit(c, &r, texts, 5, ZBERT_LEVEL_WORDPIECE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* A broker cut off for a while that holds the request all along: after the
 * silence the client reconnects and pings; the answer's `open` lists the
 * request, which is not sent again, and its other texts arrive. */
static void test_silence_then_open(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_half_then_hold);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 200, 0, 0, 0);
    const char **texts = s_texts(21, "o");
    req_t r;
    s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 1);
    assert_int_equal(fb_count(fb, &fb->n_computed), 21);
    assert_true(fb_count(fb, &fb->n_accepted) >= 2); /* it did reconnect */
    s_req_free_ev(&r);
    s_texts_free(texts, 21);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* A broker that held the request across the silence, but whose parts
 * sent into the connection that died never came: its done names texts the
 * client lacks, and the request goes again with `have` instead of failing. */
static void test_parts_lost_with_connection(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_half_lost_then_hold);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 200, 0, 0, 0);
    const char **texts = s_texts(21, "l");
    req_t r;
    s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    assert_true(fb->have[1]);
    assert_int_equal(fb->nonempty[1], 4);
    assert_int_equal(fb_count(fb, &fb->n_computed), 21);
    s_req_free_ev(&r);
    s_texts_free(texts, 21);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* A broker that restarted and lost everything: the ping after the silence
 * lists nothing open, the request goes again under its id, from a new
 * socket with the same routing id (16 bytes, the first not 0), with `have`
 * and the texts received sent empty.  A broker of an earlier revision
 * computes everything again: the client drops what it holds; one of
 * revision 1.3 computes only the rest: no text is computed twice. */
static void test_restart_resend_with_have(void **st) {
    (void)st;
    for (int aware = 0; aware <= 1; aware++) {
        fb_t *fb = fb_start(aware ? h_half_then_restart_have : h_half_then_restart);
        if (aware) fb->part_model = "tiny-a";
        fb_run(fb);
        const char *eps[] = {fb->ep};
        zbert_client_t *c = s_client(eps, 1, 200, 0, 0, 0);
        const char **texts = s_texts(21, "r");
        req_t r;
        s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
        s_run_until_ended(c, &r, 1, NULL);
        s_all_seen(&r); /* each exactly once */
        assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
        assert_int_equal(fb_count(fb, &fb->n_embed), 2);
        assert_string_equal(fb->ids[0], fb->ids[1]);
        assert_string_equal(fb->ids[0], r.end->id);
        assert_int_equal(fb->rid_lens[0], 16);
        assert_int_equal(fb->rid_lens[1], 16);
        assert_memory_equal(fb->rids[0], fb->rids[1], 16);
        assert_true(fb->rids[0][0] != 0);
        /* the first 10 texts arrived before the silence: sent empty */
        assert_false(fb->have[0]);
        assert_true(fb->have[1]);
        assert_int_equal(fb->nonempty[0], 21);
        assert_int_equal(fb->nonempty[1], 11);
        assert_int_equal(fb_count(fb, &fb->n_computed), aware ? 21 : 31);
        /* sent again, it is pinned to the model of its first results */
        assert_string_equal(fb->embed_models[0], "");
        assert_string_equal(fb->embed_models[1], aware ? "tiny-a" : "");
        s_req_free_ev(&r);
        s_texts_free(texts, 21);
        zbert_client_destroy(&c);
        fb_stop(&fb);
    }
}

static void test_failover_to_second_broker(void **st) {
    (void)st;
    fb_t *dead = fb_start(NULL), *live = fb_start(h_shuffle);
    dead->silent = true;
    fb_run(dead);
    fb_run(live);
    const char *eps[] = {dead->ep, live->ep};
    zbert_client_t *c = s_client(eps, 2, 200, 3, 0, 0);
    const char **texts = s_texts(9, "f");
    req_t r;
    s_submit(c, &r, texts, 9, ZBERT_LEVEL_SENTENCE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(live, &live->n_embed), 1);
    /* one routing id for both brokers */
    pthread_mutex_lock(&dead->mu);
    assert_int_equal(dead->last_rid_len, 16);
    assert_memory_equal(dead->last_rid, live->rids[0], 16);
    pthread_mutex_unlock(&dead->mu);
    s_req_free_ev(&r);
    s_texts_free(texts, 9);
    zbert_client_destroy(&c);
    fb_stop(&dead);
    fb_stop(&live);
}

/* No broker answers: the client reconnects after growing pauses (retry_ms
 * x 2, x 4, ... with jitter), not every retry_ms, and the request fails
 * when the outage budget is spent, naming it. */
static void test_outage_budget(void **st) {
    (void)st;
    fb_t *fb = fb_start(NULL);
    fb->silent = true;
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client_outage(eps, 1, 100, 3000);
    const char *texts[] = {"hello"};
    req_t r;
    uint64_t t0 = s_ms();
    s_submit(c, &r, texts, 1, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    uint64_t spent = s_ms() - t0;
    assert_true(spent >= 2500 && spent < 9000);
    assert_int_equal(r.end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(r.end->code, ZBERT_ETIMEOUT);
    assert_string_equal(r.end->code_name, "client");
    assert_non_null(strstr(r.end->message, "outage budget of 3000 ms"));
    assert_int_equal(zbert_open_requests(c), 0);
    /* reconnections at about 0.15, 0.35, 0.75 and 1.55 s: without the
     * back-off there would be one every 0.125 s */
    int conns = fb_count(fb, &fb->n_accepted);
    printf("outage of 3 s with retry_ms 100: %d connections\n", conns);
    assert_true(conns >= 3 && conns <= 8);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    /* the budget cannot be shorter than the silence that starts it */
    zbert_diag_t d = {{0}};
    zbert_config_t cfg = {.brokers = eps, .n_brokers = 1, .retry_ms = 1000, .outage_ms = 999};
    assert_int_equal(zbert_client_new(&cfg, &c, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "outage_ms"));
    fb_stop(&fb);
}

/* A broker that says `closing` after a third of the texts: the client
 * moves the request to the next broker at once (long before retry_ms), with
 * `have`; nothing is computed twice. */
static void test_closing_moves_to_next_broker(void **st) {
    (void)st;
    fb_t *a = fb_start(h_closing), *b = fb_start(h_have);
    fb_run(a);
    fb_run(b);
    const char *eps[] = {a->ep, b->ep};
    zbert_client_t *c = s_client(eps, 2, 5000, 0, 0, 0);
    const char **texts = s_texts(21, "m");
    req_t r;
    uint64_t t0 = s_ms();
    s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    assert_true(s_ms() - t0 < 2500);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(a, &a->n_embed), 1);
    assert_int_equal(fb_count(b, &b->n_embed), 1);
    assert_true(b->have[0]);
    assert_int_equal(b->nonempty[0], 21 - 7);
    assert_int_equal(fb_count(a, &a->n_computed) + fb_count(b, &b->n_computed), 21);
    /* later requests go to the broker that took over */
    req_t r2;
    s_submit(c, &r2, texts, 5, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r2, 1, NULL);
    assert_int_equal(r2.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(b, &b->n_embed), 2);
    assert_int_equal(fb_count(a, &a->n_embed), 1);
    s_req_free_ev(&r);
    s_req_free_ev(&r2);
    s_texts_free(texts, 21);
    zbert_client_destroy(&c);
    fb_stop(&a);
    fb_stop(&b);
}

/* Every broker stopping: the client does not bounce between them at
 * message speed (the back-off paces it), and the request fails when the
 * outage budget is spent, saying the broker is stopping. */
static void test_closing_everywhere(void **st) {
    (void)st;
    fb_t *a = fb_start(h_closing), *b = fb_start(h_have);
    b->closing_until = s_ms() + 3600000;
    fb_run(a);
    fb_run(b);
    const char *eps[] = {a->ep, b->ep};
    zbert_client_t *c = s_client_outage(eps, 2, 200, 2000);
    const char **texts = s_texts(21, "e");
    req_t r;
    uint64_t t0 = s_ms();
    s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    uint64_t spent = s_ms() - t0;
    assert_true(spent >= 1500 && spent < 9000);
    assert_int_equal(r.end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(r.end->code, ZBERT_ETIMEOUT);
    assert_non_null(strstr(r.end->message, "is stopping"));
    assert_int_equal(r.seen[0], 1); /* what came before stays delivered */
    int conns = fb_count(a, &a->n_accepted) + fb_count(b, &b->n_accepted);
    printf("every broker stopping, 2 s: %d connections, %d closing answers\n", conns,
           fb_count(a, &a->n_closing) + fb_count(b, &b->n_closing));
    assert_true(conns >= 2 && conns <= 10);
    s_req_free_ev(&r);
    s_texts_free(texts, 21);
    zbert_client_destroy(&c);
    fb_stop(&a);
    fb_stop(&b);
}

/* With one broker, `closing` is waited out: the broker answers `closing`
 * to everything for a while (nothing is sent to it meanwhile), goes
 * silent, comes back knowing nothing; the request then goes again with
 * `have`, and nothing is computed twice. */
static void test_closing_single_broker_waits(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_closing_restart);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client_outage(eps, 1, 200, 10000);
    const char **texts = s_texts(21, "w");
    req_t r;
    s_submit(c, &r, texts, 21, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    assert_true(fb->have[1]);
    assert_int_equal(fb->nonempty[1], 21 - 7);
    assert_int_equal(fb_count(fb, &fb->n_computed), 21);
    assert_true(fb_count(fb, &fb->n_closing) >= 1); /* pings while it stopped */
    s_req_free_ev(&r);
    s_texts_free(texts, 21);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* Model identities (revision 1.3): events and texts name the model; a
 * pinned request names it to the broker, and fails when results of
 * another model, or naming none, come; one request is never served by two
 * models. */
static void test_model(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_model);
    fb->models[0] = "tiny-a";
    fb->n_models = 1;
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(9, "md");
    req_t rs[3];
    zbert_options_t any = {.level = ZBERT_LEVEL_WORDPIECE};
    zbert_options_t pin_a = {.level = ZBERT_LEVEL_TOKEN, .model = "tiny-a"};
    zbert_options_t pin_b = {.level = ZBERT_LEVEL_TOKEN, .model = "tiny-b"};
    s_submit_opt(c, &rs[0], texts, 9, &any);
    s_submit_opt(c, &rs[1], texts, 4, &pin_a);
    rs[0].model = rs[1].model = "tiny-a";
    s_submit_opt(c, &rs[2], texts, 3, &pin_b);
    s_run_until_ended(c, rs, 3, NULL);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_DONE);
        s_all_seen(&rs[k]);
    }
    assert_int_equal(rs[2].end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(rs[2].end->code, ZBERT_EPROTO);
    assert_int_equal(rs[2].seen[0], 0);
    assert_non_null(
        strstr(rs[2].end->message, "model tiny-a for a request pinned to model tiny-b"));
    assert_string_equal(fb->embed_models[0], "");
    assert_string_equal(fb->embed_models[1], "tiny-a");
    assert_string_equal(fb->embed_models[2], "tiny-b");
    for (int k = 0; k < 3; k++) s_req_free_ev(&rs[k]);
    /* identities the protocol cannot carry: refused before sending */
    uint64_t h;
    zbert_diag_t d = {{0}};
    char big[300];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    zbert_options_t bad = {.model = ""};
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "model"));
    bad.model = big;
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    bad.model = "\xff\xfe";
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    assert_int_equal(zbert_open_requests(c), 0);
    zbert_client_destroy(&c);
    fb_stop(&fb);

    /* a broker that names no model (before revision 1.3): a pinned
     * request fails, since the pin cannot be checked; others go on */
    fb = fb_start(h_shuffle);
    fb_run(fb);
    eps[0] = fb->ep;
    c = s_client(eps, 1, 0, 0, 0, 0);
    s_submit_opt(c, &rs[0], texts, 4, &pin_a);
    s_submit_opt(c, &rs[1], texts, 4, &any);
    s_run_until_ended(c, rs, 2, NULL);
    assert_int_equal(rs[0].end->type, ZBERT_EVENT_ERROR);
    assert_non_null(strstr(rs[0].end->message, "older than protocol 1.3"));
    assert_int_equal(rs[1].end->type, ZBERT_EVENT_DONE);
    assert_null(rs[1].end->model);
    s_req_free_ev(&rs[0]);
    s_req_free_ev(&rs[1]);
    zbert_client_destroy(&c);
    fb_stop(&fb);

    /* one request, two models: it fails */
    fb = fb_start(h_model_switch);
    fb->models[0] = "tiny-a";
    fb->models[1] = "tiny-b";
    fb_run(fb);
    eps[0] = fb->ep;
    c = s_client(eps, 1, 0, 0, 0, 0);
    s_submit_opt(c, &rs[0], texts, 5, &any);
    s_run_until_ended(c, rs, 1, NULL);
    assert_int_equal(rs[0].end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(rs[0].end->code, ZBERT_EPROTO);
    assert_non_null(strstr(rs[0].end->message, "model tiny-b for a request whose first results"));
    assert_int_equal(rs[0].seen[0], 1);
    s_req_free_ev(&rs[0]);
    zbert_client_destroy(&c);
    fb_stop(&fb);
    s_texts_free(texts, 9);
}

/* The blocking call keeps to one model: its later requests name the model
 * of the first results; results of another model fail it. */
static void test_blocking_model(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_model);
    fb->models[0] = "tiny-a";
    fb->n_models = 1;
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 1, 0); /* one request at a time */
    size_t n = 2100;
    const char **texts = s_texts(n, "bm");
    zbert_result_t *res = NULL;
    zbert_diag_t d = {{0}};
    zbert_options_t opt = {.level = ZBERT_LEVEL_SENTENCE};
    assert_int_equal(zbert_embed(c, texts, NULL, n, &opt, &res, &d), 0);
    zbert_text_t t;
    assert_int_equal(zbert_result_text(res, n - 1, &t), 0);
    assert_string_equal(t.model, "tiny-a");
    zbert_result_destroy(&res);
    assert_int_equal(fb_count(fb, &fb->n_embed), 3);
    assert_string_equal(fb->embed_models[0], "");
    assert_string_equal(fb->embed_models[1], "tiny-a");
    assert_string_equal(fb->embed_models[2], "tiny-a");
    zbert_client_destroy(&c);
    fb_stop(&fb);
    /* every request at once, served by two models in turn */
    fb = fb_start(h_model);
    fb->models[0] = "tiny-a";
    fb->models[1] = "tiny-b";
    fb->n_models = 2;
    fb_run(fb);
    eps[0] = fb->ep;
    c = s_client(eps, 1, 0, 0, 0, 0);
    assert_int_equal(zbert_embed(c, texts, NULL, n, &opt, &res, &d), ZBERT_EPROTO);
    assert_null(res);
    printf("two models in one call: %s\n", d.msg);
    assert_non_null(strstr(d.msg, "came from model tiny-b after texts of model tiny-a"));
    assert_int_equal(zbert_open_requests(c), 0);
    zbert_client_destroy(&c);
    fb_stop(&fb);
    s_texts_free(texts, n);
}

/* An error without id ends no request: with `of` naming ours (a copy of
 * ours refused as duplicate_id, revision 1.3) it is logged, the request
 * goes on; without `of` too. */
static void test_error_without_id_ends_nothing(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_dup_of);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(8, "i");
    req_t r;
    s_submit(c, &r, texts, 8, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_cancel), 0);
    s_req_free_ev(&r);
    s_texts_free(texts, 8);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static double s_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A caller away for longer than retry_ms, then waiting: the client pings,
 * waits for the answer without spinning, then resends. */
static void test_wait_after_absence_does_not_spin(void **st) {
    (void)st;
    fb_t *fb = fb_start(NULL);
    fb->silent = true;
    fb_run(fb);
    const char *eps[] = {fb->ep};
    /* the ping then waits 900 ms for its answer */
    zbert_config_t cfg = {.brokers = eps, .n_brokers = 1, .retry_ms = 1000, .ping_ms = 900};
    zbert_client_t *c = NULL;
    assert_int_equal(zbert_client_new(&cfg, &c, NULL), 0);
    const char *texts[] = {"x"};
    req_t r;
    s_submit(c, &r, texts, 1, ZBERT_LEVEL_TOKEN, 0);
    s_sleep_ms(1200);
    double cpu0 = s_cpu_s();
    uint64_t t0 = s_ms();
    zbert_event_t *ev = NULL;
    assert_int_equal(zbert_next(c, 700, &ev), 0);
    assert_null(ev);
    double cpu = s_cpu_s() - cpu0, wall = (double)(s_ms() - t0) / 1000.0;
    /* waiting is sleeping: a spinning loop would burn the whole wait */
    assert_true(cpu < 0.5 * wall);
    free(r.seen);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_busy_is_retried(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_busy);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(8, "b");
    req_t r;
    s_submit(c, &r, texts, 8, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    assert_string_equal(fb->ids[0], fb->ids[1]);
    s_req_free_ev(&r);
    s_texts_free(texts, 8);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_no_model_retried(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_no_model_once);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 200, 3, 0, 0);
    const char **texts = s_texts(4, "m");
    req_t r;
    s_submit(c, &r, texts, 4, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    s_req_free_ev(&r);
    s_texts_free(texts, 4);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_restart_noticed_from_uptime(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_restart);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 2000, 3, 0, 0); /* pings every 500 ms */
    const char **texts = s_texts(5, "u");
    req_t r;
    s_submit(c, &r, texts, 5, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    /* sent again on the same socket: the broker was reachable all along */
    assert_int_equal(fb->rid_lens[0], fb->rid_lens[1]);
    assert_memory_equal(fb->rids[0], fb->rids[1], fb->rid_lens[0]);
    s_req_free_ev(&r);
    s_texts_free(texts, 5);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_duplicate_id_of_own_resend_is_ignored(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_dupid);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 2000, 3, 0, 0);
    const char **texts = s_texts(6, "d");
    req_t r;
    s_submit(c, &r, texts, 6, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(fb, &fb->n_embed), 2);
    s_req_free_ev(&r);
    s_texts_free(texts, 6);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_malformed_messages_fail_their_request(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_malformed);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *a[] = {"lvl", "x"}, *b[] = {"badid"};
    req_t rs[2];
    s_submit(c, &rs[0], a, 2, ZBERT_LEVEL_TOKEN, 0);
    s_submit(c, &rs[1], b, 1, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, rs, 2, NULL);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_ERROR);
        assert_int_equal(rs[k].end->code, ZBERT_EPROTO);
        assert_int_equal(rs[k].seen[0], 0);
    }
    assert_non_null(strstr(rs[0].end->message, "sentence rows for a token request"));
    assert_non_null(strstr(rs[1].end->message, "malformed message"));
    /* the client told the broker to drop both */
    fb_wait(fb, &fb->n_cancel, 2);
    s_req_free_ev(&rs[0]);
    s_req_free_ev(&rs[1]);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* Messages of a type this version does not know, or of another version,
 * are ignored even when they carry a request's id (PROTOCOL.md 2): the
 * request completes as if they had not come. */
static void test_unknown_types_ignored(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_unknown_first);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(12, "u");
    req_t rs[2];
    s_submit(c, &rs[0], texts, 12, ZBERT_LEVEL_TOKEN, 0);
    s_submit(c, &rs[1], texts, 5, ZBERT_LEVEL_WORDPIECE, 0);
    s_run_until_ended(c, rs, 2, NULL);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_DONE);
        s_all_seen(&rs[k]);
        s_req_free_ev(&rs[k]);
    }
    assert_int_equal(fb_count(fb, &fb->n_cancel), 0);
    s_texts_free(texts, 12);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* Token metadata: the later options reach the broker as given; parts
 * answering a request that asked for metadata carry it per text (piece -1
 * for an oov row), others carry none; options that cannot work are
 * refused before sending. */
static void test_token_meta(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *texts[] = {"hello x world", "\"quoted\" x y z", "BAD one", "x", "", "a b c d e"};
    const zbert_options_t opts[] = {
        {.level = ZBERT_LEVEL_TOKEN, .sentences = true, .token_vector = ZBERT_TOKEN_VECTOR_MEAN},
        {.level = ZBERT_LEVEL_TOKEN, .compat = ZBERT_COMPAT_SPARKNLP},
        {.level = ZBERT_LEVEL_TOKEN, .token_meta = true},
        {.level = ZBERT_LEVEL_TOKEN, .token_vector = ZBERT_TOKEN_VECTOR_MEAN},
        {.level = ZBERT_LEVEL_WORDPIECE, .sentences = true, .token_meta = true},
    };
    enum { N = sizeof opts / sizeof *opts };
    req_t rs[N];
    for (int k = 0; k < N; k++) s_submit_opt(c, &rs[k], texts, 6, &opts[k]);
    s_run_until_ended(c, rs, N, NULL);
    for (int k = 0; k < N; k++) {
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_DONE);
        s_all_seen(&rs[k]);
        s_req_free_ev(&rs[k]);
    }
    assert_true(rs[0].meta && rs[1].meta && rs[2].meta && !rs[3].meta && !rs[4].meta);
    assert_int_equal(fb_count(fb, &fb->n_embed), N);
    for (int k = 0; k < N; k++) {
        const zb_options_t *o = &fb->opts[k];
        assert_int_equal(o->sentences, opts[k].sentences);
        assert_int_equal((int)o->token_vector, (int)opts[k].token_vector);
        assert_int_equal((int)o->compat, (int)opts[k].compat);
        assert_int_equal(o->token_meta, opts[k].token_meta);
    }
    /* refused locally, by name */
    uint64_t h;
    zbert_diag_t d = {{0}};
    zbert_options_t bad = {.level = ZBERT_LEVEL_WORDPIECE, .compat = ZBERT_COMPAT_SPARKNLP};
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "compat"));
    bad = (zbert_options_t){.level = ZBERT_LEVEL_SENTENCE, .sentences = true};
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "sentences"));
    bad = (zbert_options_t){.token_vector = (zbert_token_vector_t)7};
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h, &d), ZBERT_EINVAL);
    assert_int_equal(zbert_open_requests(c), 0);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* A broker that does not carry token metadata (older than 1.1), or sends
 * it unasked, fails the request: the client cannot write what was asked
 * for. */
static void test_meta_mismatch(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb->meta_wrong = true;
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *texts[] = {"one two", "three"};
    req_t rs[2];
    zbert_options_t asks = {.level = ZBERT_LEVEL_TOKEN, .sentences = true};
    s_submit_opt(c, &rs[0], texts, 2, &asks);
    s_submit(c, &rs[1], texts, 2, ZBERT_LEVEL_TOKEN, 0);
    s_run_until_ended(c, rs, 2, NULL);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(rs[k].end->type, ZBERT_EVENT_ERROR);
        assert_int_equal(rs[k].end->code, ZBERT_EPROTO);
    }
    assert_non_null(strstr(rs[0].end->message, "no token metadata"));
    assert_non_null(strstr(rs[1].end->message, "did not ask for"));
    s_req_free_ev(&rs[0]);
    s_req_free_ev(&rs[1]);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_deadline(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_ignore);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *texts[] = {"slow"};
    req_t r;
    uint64_t t0 = s_ms();
    s_submit(c, &r, texts, 1, ZBERT_LEVEL_TOKEN, 300);
    s_run_until_ended(c, &r, 1, NULL);
    assert_true(s_ms() - t0 >= 290);
    assert_true(s_ms() - t0 < 5000);
    assert_int_equal(r.end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(r.end->code, ZBERT_ETIMEOUT);
    assert_non_null(strstr(r.end->message, "deadline"));
    fb_wait(fb, &fb->n_cancel, 1);
    assert_string_equal(fb->cancels[0], r.end->id);
    assert_true(fb->deadlines[0] > 0 && fb->deadlines[0] <= 300);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_cancel(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_ignore);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char *texts[] = {"one", "two"};
    req_t r;
    s_submit(c, &r, texts, 2, ZBERT_LEVEL_TOKEN, 0);
    fb_wait(fb, &fb->n_embed, 1);
    zbert_event_t *ev = NULL;
    assert_int_equal(zbert_next(c, 50, &ev), 0);
    assert_null(ev);
    assert_int_equal(zbert_cancel(c, r.handle), 0);
    assert_int_equal(zbert_open_requests(c), 0);
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_non_null(ev);
    assert_int_equal(ev->type, ZBERT_EVENT_ERROR);
    assert_int_equal(ev->code, ZBERT_ECANCELED);
    assert_int_equal(ev->request, r.handle);
    zbert_event_destroy(&ev);
    assert_null(ev);
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_null(ev);
    fb_wait(fb, &fb->n_cancel, 1);
    assert_string_equal(fb->cancels[0], fb->ids[0]);
    /* cancelling again, or an unknown handle: nothing happens */
    assert_int_equal(zbert_cancel(c, r.handle), 0);
    assert_int_equal(zbert_cancel(c, 12345), 0);
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_null(ev);
    free(r.seen);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

/* Parts already queued in the client are dropped by cancel. */
static void test_cancel_drops_queued_parts(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(12, "q");
    zbert_status_t *s = NULL;
    req_t r;
    s_submit(c, &r, texts, 12, ZBERT_LEVEL_TOKEN, 0);
    /* zbert_status reads the socket meanwhile: the parts and done queue up */
    assert_int_equal(zbert_status(c, 5000, &s, NULL), 0);
    zbert_status_destroy(&s);
    assert_null(s);
    for (uint64_t t0 = s_ms(); zbert_open_requests(c) > 0 && s_ms() - t0 < 5000;) {
        assert_int_equal(zbert_status(c, 5000, &s, NULL), 0);
        zbert_status_destroy(&s);
    }
    /* done already queued: the request is not open, cancel changes nothing */
    assert_int_equal(zbert_open_requests(c), 0);
    assert_int_equal(zbert_cancel(c, r.handle), 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    s_req_free_ev(&r);

    zbert_client_destroy(&c);
    fb_stop(&fb);

    /* now with a request still open, its parts queued (read by a status
     * request: the fake answers the embed before the status) */
    fb = fb_start(h_parts_only);
    fb_run(fb);
    eps[0] = fb->ep;
    c = s_client(eps, 1, 0, 0, 0, 0);
    s_submit(c, &r, texts, 12, ZBERT_LEVEL_TOKEN, 0);
    fb_wait(fb, &fb->n_embed, 1);
    assert_int_equal(zbert_status(c, 5000, &s, NULL), 0);
    zbert_status_destroy(&s);
    assert_int_equal(zbert_open_requests(c), 1);
    assert_int_equal(zbert_cancel(c, r.handle), 0);
    zbert_event_t *ev = NULL;
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_non_null(ev);
    assert_int_equal(ev->type, ZBERT_EVENT_ERROR); /* the parts were dropped */
    assert_int_equal(ev->code, ZBERT_ECANCELED);
    zbert_event_destroy(&ev);
    free(r.seen);
    s_texts_free(texts, 12);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_bounded_in_flight(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_ignore);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 2, 5);
    const char *texts[] = {"a", "b", "c", "d", "e", "f"};
    uint64_t h1, h2, h3;
    zbert_diag_t d = {{0}};
    assert_int_equal(zbert_submit(c, texts, NULL, 2, NULL, NULL, &h1, &d), 0);
    assert_int_equal(zbert_submit(c, texts, NULL, 4, NULL, NULL, &h2, &d), ZBERT_EBUSY);
    assert_int_equal(h2, 0);
    assert_non_null(strstr(d.msg, "open"));
    assert_int_equal(zbert_submit(c, texts, NULL, 6, NULL, NULL, &h2, &d), ZBERT_ELIMIT);
    assert_int_equal(zbert_submit(c, texts, NULL, 3, NULL, NULL, &h2, &d), 0);
    assert_int_equal(zbert_submit(c, texts, NULL, 1, NULL, NULL, &h3, &d), ZBERT_EBUSY);
    assert_int_equal(zbert_open_requests(c), 2);
    assert_true(h1 != h2);
    /* taking the end of one makes room */
    assert_int_equal(zbert_cancel(c, h1), 0);
    zbert_event_t *ev = NULL;
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_non_null(ev);
    zbert_event_destroy(&ev);
    assert_int_equal(zbert_submit(c, texts, NULL, 2, NULL, NULL, &h3, &d), 0);
    assert_true(h3 != h1 && h3 != h2);
    /* argument checks */
    assert_int_equal(zbert_submit(c, texts, NULL, 0, NULL, NULL, &h3, &d), ZBERT_EINVAL);
    zbert_options_t bad = {.level = (zbert_level_t)7};
    assert_int_equal(zbert_submit(c, texts, NULL, 1, &bad, NULL, &h3, &d), ZBERT_EINVAL);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_blocking_embed(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    size_t n = 2500; /* three requests of at most 1024 texts */
    const char **texts = s_texts(n, "k");
    zbert_result_t *res = NULL;
    zbert_options_t opt = {.level = ZBERT_LEVEL_WORDPIECE, .deadline_ms = 60000};
    zbert_diag_t d = {{0}};
    int rc = zbert_embed(c, texts, NULL, n, &opt, &res, &d);
    if (rc != 0) fail_msg("embed: %s", d.msg);
    assert_int_equal(zbert_result_count(res), n);
    req_t r = {.texts = texts, .n = n, .level = ZBERT_LEVEL_WORDPIECE};
    for (size_t i = 0; i < n; i++) {
        zbert_text_t t;
        assert_int_equal(zbert_result_text(res, i, &t), 0);
        assert_int_equal(t.seq, i);
        t.index = (uint32_t)i; /* check against the call's texts */
        s_check_text(&r, &t);
    }
    zbert_text_t t;
    assert_int_equal(zbert_result_text(res, n, &t), ZBERT_EINVAL);
    assert_int_equal(fb_count(fb, &fb->n_embed), 3);
    zbert_result_destroy(&res);
    assert_null(res);
    assert_int_equal(zbert_open_requests(c), 0);
    /* with lengths: embedded NUL bytes are part of a text */
    const char *raw[] = {"ab\0cd", "e"};
    size_t lens[] = {5, 1};
    assert_int_equal(zbert_embed(c, raw, lens, 2, NULL, &res, &d), 0);
    zbert_result_text(res, 0, &t);
    fk_t f;
    fk_text("ab\0cd", 5, ZB_LEVEL_TOKEN, &f);
    assert_memory_equal(t.vectors, f.vec, f.rows * DIM * sizeof(float));
    zbert_result_destroy(&res);
    /* an async request open: refused */
    uint64_t h;
    assert_int_equal(zbert_submit(c, raw, lens, 1, NULL, NULL, &h, &d), 0);
    assert_int_equal(zbert_embed(c, raw, lens, 1, NULL, &res, &d), ZBERT_EINVAL);
    assert_null(res);
    s_texts_free(texts, n);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_blocking_deadline_and_error(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_ignore);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    const char **texts = s_texts(3000, "w");
    zbert_result_t *res = NULL;
    zbert_options_t opt = {.deadline_ms = 300};
    zbert_diag_t d = {{0}};
    uint64_t t0 = s_ms();
    assert_int_equal(zbert_embed(c, texts, NULL, 3000, &opt, &res, &d), ZBERT_ETIMEOUT);
    assert_true(s_ms() - t0 < 5000);
    assert_null(res);
    assert_non_null(strstr(d.msg, "deadline"));
    assert_int_equal(zbert_open_requests(c), 0);
    zbert_event_t *ev = NULL;
    assert_int_equal(zbert_next(c, 0, &ev), 0);
    assert_null(ev); /* nothing left behind */
    zbert_client_destroy(&c);
    fb_stop(&fb);
    fb = fb_start(h_errors);
    fb_run(fb);
    eps[0] = fb->ep;
    const char *nm[] = {"fine", "NOMODEL"};
    opt.deadline_ms = 0;
    /* the second request is refused: the call fails with it */
    zbert_config_t cfg = {.brokers = eps, .n_brokers = 1, .texts_max = 1, .retry_ms = 200};
    assert_int_equal(zbert_client_new(&cfg, &c, &d), 0);
    assert_int_equal(zbert_embed(c, nm, NULL, 2, &opt, &res, &d), ZBERT_ENOTFOUND);
    assert_non_null(strstr(d.msg, "no_model"));
    assert_int_equal(zbert_open_requests(c), 0);
    s_texts_free(texts, 3000);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_status(void **st) {
    (void)st;
    fb_t *fb = fb_start(NULL);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    zbert_client_t *c = s_client(eps, 1, 0, 0, 0, 0);
    zbert_status_t *s = NULL;
    zbert_diag_t d = {{0}};
    assert_int_equal(zbert_status(c, 5000, &s, &d), 0);
    assert_int_equal(s->requests, 3);
    assert_int_equal(s->queued_shards, 12);
    assert_int_equal(s->queued_texts, 700);
    assert_int_equal(s->in_flight_shards, 4);
    assert_true(s->texts_per_s == 812.5 && s->tokens_per_s == 25012.25);
    assert_true(s->latency_p50_ms == 12 && s->latency_p90_ms == 30.5 && s->latency_p99_ms == 80.25);
    assert_int_equal(s->protocol_errors, 5);
    assert_int_equal(s->n_workers, 2);
    assert_string_equal(s->workers[0].name, "node1:101");
    assert_string_equal(s->workers[0].model, "tiny-seed1");
    assert_int_equal(s->workers[0].threads, 4);
    assert_int_equal(s->workers[0].tokens, 45678);
    assert_int_equal(s->workers[1].idle_ms, 3725000);
    zbert_status_destroy(&s);
    zbert_client_destroy(&c);
    /* a broker that does not answer: a timeout within the time given */
    fb_stop(&fb);
    fb = fb_start(NULL);
    fb->status_ignore = true;
    fb_run(fb);
    eps[0] = fb->ep;
    c = s_client(eps, 1, 100, 2, 0, 0);
    uint64_t t0 = s_ms();
    int rc = zbert_status(c, 2000, &s, &d);
    assert_true(rc == ZBERT_ETIMEOUT);
    assert_true(s_ms() - t0 < 5000);
    assert_null(s);
    zbert_client_destroy(&c);
    fb_stop(&fb);
}

static void test_config_checks(void **st) {
    (void)st;
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    const char *eps[] = {"tcp://127.0.0.1:1"};
    zbert_config_t cfg = {.brokers = eps, .n_brokers = 0};
    assert_int_equal(zbert_client_new(&cfg, &c, &d), ZBERT_EINVAL);
    cfg.n_brokers = 1;
    cfg.retry_ms = 10;
    assert_int_equal(zbert_client_new(&cfg, &c, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "retry_ms"));
    cfg.retry_ms = 1000;
    cfg.ping_ms = 1000;
    assert_int_equal(zbert_client_new(&cfg, &c, &d), ZBERT_EINVAL);
    cfg.ping_ms = 0;
    const char *bad[] = {"nonsense://x"};
    cfg.brokers = bad;
    assert_int_equal(zbert_client_new(&cfg, &c, &d), ZBERT_EINVAL);
    assert_non_null(strstr(d.msg, "nonsense://x"));
    assert_null(c);
    cfg.brokers = eps;
    assert_int_equal(zbert_client_new(&cfg, &c, &d), 0);
    zbert_client_destroy(&c);
    zbert_client_destroy(&c); /* NULL-safe */
    zbert_client_destroy(NULL);
    assert_string_equal(zbert_strerror(ZBERT_ETIMEOUT), "timed out");
    assert_int_equal(zbert_log_level("loud"), ZBERT_EINVAL);
    assert_int_equal(zbert_log_level("warn"), 0);
}

/* --- tests: the zbert command ------------------------------------------------------- */

static char s_dir[256];

static const char *s_bin(void) {
    const char *b = getenv("ZB_BIN");
    return b && *b ? b : "bin";
}

static const char *s_file(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

static void s_write(const char *name, const char *data) {
    FILE *f = fopen(s_file(name), "wb");
    assert_non_null(f);
    fputs(data, f);
    assert_int_equal(fclose(f), 0);
}

static int s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int s_sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* What textio writes for the fake model's results of the input. */
static char *s_expect(const char *input, zb_textio_input_t in_fmt, zb_textio_format_t fmt,
                      zb_level_t level, bool meta, size_t *len) {
    FILE *in = fmemopen((void *)input, strlen(input), "r");
    FILE *out = tmpfile();
    assert_true(in && out);
    zb_textio_reader_t *rd = zb_textio_reader_new(in, in_fmt);
    zb_options_t o = {.level = level};
    zb_textio_writer_t *w = zb_textio_writer_new(out, fmt, &o, DIM);
    assert_true(rd && w);
    zb_textio_item_t it = {0};
    static fk_t f;
    int32_t ids[ROWS_MAX];
    zb_token_meta_t tm[ROWS_MAX];
    for (size_t i = 0; zb_textio_read(rd, &it) == 1; i++) {
        zb_textio_text_t v = {.index = i, .text = it.text, .text_len = it.len};
        if (it.text == NULL) {
            v.error = it.error;
        } else {
            fk_text(it.text, it.len, level, &f);
            if (f.code) {
                v.error = f.message;
            } else {
                for (uint32_t k = 0; k < f.rows; k++) ids[k] = (int32_t)f.ids[k];
                v.truncated = f.truncated;
                v.n_rows = f.rows;
                v.dim = DIM;
                v.vectors = f.vec;
                v.offsets = f.off;
                v.byte_offsets = f.off;
                v.ids = ids;
                /* ASCII: UTF-16 units are bytes; the end is inclusive */
                for (uint32_t k = 0; meta && k < f.rows; k++)
                    tm[k] = (zb_token_meta_t){.sentence = f.sent[k],
                                              .piece_id = f.oov[k] ? -1 : (int32_t)f.piece[k],
                                              .begin16 = (int32_t)f.off[2 * k],
                                              .end16 = (int32_t)f.off[2 * k + 1] - 1,
                                              .word_start = f.wstart[k],
                                              .oov = f.oov[k]};
                if (meta) v.meta = tm;
            }
        }
        assert_int_equal(zb_textio_write(w, &v), 0);
    }
    zb_textio_item_clear(&it);
    assert_int_equal(zb_textio_writer_finish(w), 0);
    zb_textio_writer_destroy(&w);
    zb_textio_reader_destroy(&rd);
    fclose(in);
    long n = ftell(out);
    rewind(out);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, out), (size_t)n);
    buf[n] = '\0';
    fclose(out);
    *len = (size_t)n;
    return buf;
}

static void s_same_file(const char *name, const char *want, size_t want_len) {
    size_t len;
    char *got = fx_read_file(s_file(name), &len);
    assert_non_null(got);
    if (len != want_len || memcmp(got, want, len) != 0)
        fail_msg("%s differs from textio's output (%zu vs %zu bytes):\n%.*s\n---\n%.*s", name, len,
                 want_len, (int)(len < 2000 ? len : 2000), got,
                 (int)(want_len < 2000 ? want_len : 2000), want);
    free(got);
}

static int setup_dir(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-client-XXXXXX");
    return mkdtemp(s_dir) ? 0 : -1;
}

static int teardown_dir(void **st) {
    (void)st;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char s_input[] = "hello world\n"
                              "BAD line here\n"
                              "\n"
                              "LONG text is long\n"
                              "a, b c\r\n"
                              "x\n"
                              "tab\tand \"quote\" here\n"
                              "last line without newline";

static void test_cli_embed_jsonl_levels(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    s_write("in.txt", s_input);
    static const struct {
        const char *args;
        zb_level_t level;
        zb_textio_format_t fmt;
    } cases[] = {
        {"", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_JSONL},
        {"--level wordpiece", ZB_LEVEL_WORDPIECE, ZB_TEXTIO_OUT_JSONL},
        {"--level sentence --pooling mean --normalize --windows", ZB_LEVEL_SENTENCE,
         ZB_TEXTIO_OUT_JSONL},
        {"--level token --format table", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_TABLE},
        {"--level wordpiece --format table --truncate", ZB_LEVEL_WORDPIECE, ZB_TEXTIO_OUT_TABLE},
        {"--sentences --token-vector mean", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_JSONL},
        {"--format sparknlp-json", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_SPARKNLP_JSON},
        {"--compat sparknlp --format sparknlp-json", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_SPARKNLP_JSON},
        {"--compat sparknlp", ZB_LEVEL_TOKEN, ZB_TEXTIO_OUT_JSONL},
        {"--sentences --level wordpiece", ZB_LEVEL_WORDPIECE, ZB_TEXTIO_OUT_JSONL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int rc =
            s_sh("%s/zbert embed --broker %s --batch 2 --inflight 2 %s < %s > %s 2> %s", s_bin(),
                 fb->ep, cases[k].args, s_file("in.txt"), s_file("out"), s_file("err"));
        assert_int_equal(rc, 1); /* a line was rejected, as zbert-embed says */
        size_t len;
        bool meta = cases[k].level == ZB_LEVEL_TOKEN &&
                    (strstr(cases[k].args, "sparknlp") || strstr(cases[k].args, "--sentences"));
        char *want =
            s_expect(s_input, ZB_TEXTIO_IN_LINES, cases[k].fmt, cases[k].level, meta, &len);
        s_same_file("out", want, len);
        free(want);
        size_t elen;
        char *err = fx_read_file(s_file("err"), &elen);
        assert_non_null(strstr(err, "zbert: input line 2: invalid UTF-8\n"));
        assert_non_null(strstr(err, "zbert: 1 of 8 input lines rejected\n"));
        assert_null(strstr(err, "\r")); /* no progress bar off a terminal */
        free(err);
    }
    /* 8 texts in requests of 2: 4 requests per run, options passed on */
    int n = fb_count(fb, &fb->n_embed);
    assert_int_equal(n, 40);
    assert_true(fb->opts[20].sentences && fb->opts[20].windows);
    assert_int_equal(fb->opts[20].token_vector, ZB_TOKEN_VECTOR_MEAN);
    assert_true(fb->opts[24].token_meta && !fb->opts[24].sentences); /* sparknlp-json */
    assert_int_equal(fb->opts[28].compat, ZB_COMPAT_SPARKNLP);
    assert_false(fb->opts[28].windows); /* Spark NLP has its own cap */
    assert_false(fb->opts[32].token_meta);
    assert_true(fb->opts[36].sentences && !fb->opts[36].windows);
    assert_int_equal(fb->opts[8].level, ZB_LEVEL_SENTENCE);
    assert_int_equal(fb->opts[8].pooling, ZB_POOLING_MEAN);
    assert_true(fb->opts[8].normalize && fb->opts[8].windows);
    assert_false(fb->opts[0].normalize);
    assert_true(fb->opts[0].windows); /* token level: windows unless --truncate */
    fb_stop(&fb);
}

static void test_cli_embed_npy_and_jsonl_input(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    s_write("in.txt", s_input);
    size_t len;
    char *want =
        s_expect(s_input, ZB_TEXTIO_IN_LINES, ZB_TEXTIO_OUT_NPY, ZB_LEVEL_SENTENCE, false, &len);
    /* to a file (header patched in place) and to a pipe (rows buffered) */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --format npy --batch 3 < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out.npy"), s_file("err")),
                     1);
    s_same_file("out.npy", want, len);
    size_t elen;
    char *err = fx_read_file(s_file("err"), &elen);
    assert_non_null(strstr(err, "zbert: 1 of 8 input lines rejected (their rows are NaN)\n"));
    free(err);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --format npy < %s 2> %s | cat > %s", s_bin(),
                          fb->ep, s_file("in.txt"), s_file("err"), s_file("pipe.npy")),
                     0); /* the status of cat */
    s_same_file("pipe.npy", want, len);
    /* input and output named on the command line */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --format npy %s -o %s 2> %s", s_bin(), fb->ep,
                          s_file("in.txt"), s_file("named.npy"), s_file("err")),
                     1);
    s_same_file("named.npy", want, len);
    assert_int_equal(s_sh("%s/zbert embed --broker %s %s/missing.txt > %s 2> %s", s_bin(), fb->ep,
                          s_dir, s_file("out"), s_file("err")),
                     1);
    /* npy needs the sentence level */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --format npy --level token < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     2);
    free(want);

    /* JSONL input: a bad JSON line is rejected locally, indices stay */
    static const char jin[] = "{\"text\": \"first one\"}\n"
                              "not json\n"
                              "{\"other\": 1}\n"
                              "{\"text\": \"x y\"}\n";
    s_write("in.jsonl", jin);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --input-format jsonl < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.jsonl"), s_file("out"), s_file("err")),
                     1);
    want = s_expect(jin, ZB_TEXTIO_IN_JSONL, ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN, false, &len);
    s_same_file("out", want, len);
    free(want);
    err = fx_read_file(s_file("err"), &elen);
    assert_non_null(strstr(err, "zbert: input line 2: bad JSON\n"));
    assert_non_null(strstr(err, "zbert: input line 3: JSON object has no string field"));
    free(err);

    /* a text over 1 MiB fails alone with the engine's message, unsent */
    size_t big = (1u << 20) + 1;
    char *text = malloc(big + 32);
    memcpy(text, "ok\n", 3);
    memset(text + 3, 'a', big);
    memcpy(text + 3 + big, "\nlast\n", 7);
    FILE *f = fopen(s_file("big.txt"), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, big + 10, f), big + 10);
    assert_int_equal(fclose(f), 0);
    free(text);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --level sentence < %s > %s 2> %s", s_bin(),
                          fb->ep, s_file("big.txt"), s_file("out"), s_file("err")),
                     1);
    char *out = fx_read_file(s_file("out"), &len);
    assert_non_null(strstr(out, "\n{\"index\":1,\"error\":\"limit exceeded\"}\n{\"index\":2,"));
    free(out);
    err = fx_read_file(s_file("err"), &elen);
    assert_non_null(strstr(err, "zbert: input line 2: limit exceeded\n"));
    free(err);

    /* a clean input exits 0; an empty one writes nothing */
    s_write("clean.txt", "one two\nthree\n");
    assert_int_equal(s_sh("%s/zbert embed --broker %s < %s > %s 2> %s", s_bin(), fb->ep,
                          s_file("clean.txt"), s_file("out"), s_file("err")),
                     0);
    want = s_expect("one two\nthree\n", ZB_TEXTIO_IN_LINES, ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN,
                    false, &len);
    s_same_file("out", want, len);
    free(want);
    assert_int_equal(s_sh("%s/zbert embed --broker %s < /dev/null > %s 2> %s", s_bin(), fb->ep,
                          s_file("out"), s_file("err")),
                     0);
    s_same_file("out", "", 0);
    /* empty input as npy: the width comes from the status (32 here) */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --format npy < /dev/null > %s 2> %s", s_bin(),
                          fb->ep, s_file("out"), s_file("err")),
                     0);
    char *npy = fx_read_file(s_file("out"), &len);
    assert_int_equal(len, 128);
    npy[len - 1] = '\0';
    assert_non_null(strstr(npy + 10, "'shape': (0, 32)")); /* after the magic's NUL */
    free(npy);
    fb_stop(&fb);
}

static void test_cli_embed_many_texts_in_order(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    size_t n = 3000, cap = n * 40, o = 0;
    char *input = malloc(cap);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(input + o, cap - o, "text %zu %s\n", i, i % 3 ? "x" : "y z");
    s_write("many.txt", input);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --level sentence --batch 37 --inflight 5 "
                          "< %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("many.txt"), s_file("out"), s_file("err")),
                     0);
    size_t len;
    char *want =
        s_expect(input, ZB_TEXTIO_IN_LINES, ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_SENTENCE, false, &len);
    s_same_file("out", want, len);
    free(want);
    free(input);
    assert_int_equal(fb_count(fb, &fb->n_embed), (int)((n + 36) / 37));
    fb_stop(&fb);
}

static void test_cli_embed_progress_and_failure(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_shuffle);
    fb_run(fb);
    s_write("in.txt", "a b\nc\n");
    /* forced on (stderr is not a terminal here): a bar with a fraction */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --progress always < %s > %s 2> %s", s_bin(),
                          fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     0);
    size_t len;
    char *err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "100%"));
    assert_non_null(strstr(err, "texts/s"));
    assert_non_null(strstr(err, "\r\033[K"));
    free(err);
    /* from a pipe: a count only */
    assert_int_equal(s_sh("cat %s | %s/zbert embed --broker %s --progress always > %s 2> %s",
                          s_file("in.txt"), s_bin(), fb->ep, s_file("out"), s_file("err")),
                     0);
    err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "2 texts"));
    assert_null(strstr(err, "ETA"));
    free(err);
    /* the broker refuses: the command says why and fails */
    s_write("nm.txt", "NOMODEL\n");
    fb_stop(&fb);
    fb = fb_start(h_errors);
    fb_run(fb);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --retry-ms 200 < %s > %s 2> %s", s_bin(),
                          fb->ep, s_file("nm.txt"), s_file("out"), s_file("err")),
                     1);
    err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "zbert: request failed (no_model): no worker serves the model\n"));
    free(err);
    fb_stop(&fb);
    /* nobody answers: no hang, a clear message */
    fb = fb_start(NULL);
    fb->silent = true;
    fb_run(fb);
    uint64_t t0 = s_ms();
    assert_int_equal(
        s_sh("ZBERT_RETRY_MS=100 ZBERT_OUTAGE_MS=1000 %s/zbert embed --broker %s < %s > "
             "%s "
             "2> %s",
             s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
        1);
    assert_true(s_ms() - t0 < 10000);
    err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "no broker answered within the outage budget of 1000 ms"));
    free(err);
    fb_stop(&fb);
    /* usage errors */
    assert_int_equal(s_sh("%s/zbert embed --bogus 2> /dev/null", s_bin()), 2);
    assert_int_equal(s_sh("%s/zbert frobnicate 2> /dev/null", s_bin()), 2);
    assert_int_equal(s_sh("%s/zbert embed --batch 0 2> /dev/null", s_bin()), 2);
    assert_int_equal(s_sh("ZBERT_INFLIGHT=zero %s/zbert embed < /dev/null 2> /dev/null", s_bin()),
                     2);
    /* a budget shorter than the silence that starts an outage */
    assert_int_equal(s_sh("%s/zbert embed --retry-ms 500 --outage-ms 400 < /dev/null 2> %s",
                          s_bin(), s_file("err")),
                     2);
    err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "outage-ms 400 is below retry-ms 500"));
    free(err);
}

/* One output, one model: --model-id names it in every request; without
 * it, the requests sent after the first results name their model; results
 * of another model fail the run, and nothing of them is written. */
static void test_cli_embed_model(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_model);
    fb->models[0] = "tiny-a";
    fb->n_models = 1;
    fb_run(fb);
    s_write("in.txt", "one two\nthree\nfour five six\n");
    size_t len;
    char *want = s_expect("one two\nthree\nfour five six\n", ZB_TEXTIO_IN_LINES,
                          ZB_TEXTIO_OUT_JSONL, ZB_LEVEL_TOKEN, false, &len);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --model-id tiny-a --batch 1 < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     0);
    s_same_file("out", want, len);
    assert_int_equal(fb_count(fb, &fb->n_embed), 3);
    for (int k = 0; k < 3; k++) assert_string_equal(fb->embed_models[k], "tiny-a");
    /* pinned by the first results: one request at a time, so the second
     * and third are sent after them */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --batch 1 --inflight 1 < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     0);
    s_same_file("out", want, len);
    assert_string_equal(fb->embed_models[3], "");
    assert_string_equal(fb->embed_models[4], "tiny-a");
    assert_string_equal(fb->embed_models[5], "tiny-a");
    free(want);
    /* the environment does not set it: it changes what is written */
    assert_int_equal(s_sh("ZBERT_MODEL_ID=tiny-b %s/zbert embed --broker %s --batch 3 < %s > %s "
                          "2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     0);
    assert_string_equal(fb->embed_models[6], "");
    /* a model no worker has: the broker's answer (this fake serves tiny-a
     * anyway, which the client refuses) */
    assert_int_equal(s_sh("%s/zbert embed --broker %s --model-id tiny-b < %s > %s 2> %s", s_bin(),
                          fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     1);
    char *err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "model tiny-a for a request pinned to model tiny-b"));
    free(err);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --model-id '' < %s > %s 2> %s", s_bin(),
                          fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     2);
    fb_stop(&fb);

    /* two requests at once, served by two models: the second's results
     * fail the run, and only the first text is written */
    fb = fb_start(h_model);
    fb->models[0] = "tiny-a";
    fb->models[1] = "tiny-b";
    fb->n_models = 2;
    fb_run(fb);
    assert_int_equal(s_sh("%s/zbert embed --broker %s --batch 1 --inflight 2 < %s > %s 2> %s",
                          s_bin(), fb->ep, s_file("in.txt"), s_file("out"), s_file("err")),
                     1);
    err = fx_read_file(s_file("err"), &len);
    printf("%s", err);
    assert_non_null(
        strstr(err, "zbert: results of model tiny-b arrived for a run of model tiny-a"));
    assert_non_null(strstr(err, "--model-id"));
    free(err);
    char *out = fx_read_file(s_file("out"), &len);
    assert_non_null(strstr(out, "{\"index\":0,"));
    assert_null(strstr(out, "\"index\":1"));
    free(out);
    fb_stop(&fb);
}

/* SIGTERM while requests are open: exit 130, the requests cancelled at
 * the broker. */
static void test_cli_embed_interrupted(void **st) {
    (void)st;
    fb_t *fb = fb_start(h_ignore);
    fb_run(fb);
    s_write("in.txt", "a b\nc d\ne\n");
    char bin[512], pin[512], pout[512], perr[512];
    snprintf(bin, sizeof bin, "%s/zbert", s_bin());
    snprintf(pin, sizeof pin, "%s", s_file("in.txt"));
    snprintf(pout, sizeof pout, "%s", s_file("out"));
    snprintf(perr, sizeof perr, "%s", s_file("err"));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* only async-signal-safe calls: the parent has threads */
        int in = open(pin, O_RDONLY);
        int out = open(pout, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(perr, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (in < 0 || out < 0 || err < 0) _exit(99);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execl(bin, bin, "embed", "--broker", fb->ep, "--batch", "1", (char *)NULL);
        _exit(98);
    }
    fb_wait(fb, &fb->n_embed, 3);
    kill(pid, SIGTERM);
    int status = 0;
    pid_t w = 0;
    for (uint64_t t0 = s_ms(); (w = waitpid(pid, &status, WNOHANG)) == 0 && s_ms() - t0 < 5000;)
        s_sleep_ms(10);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("zbert embed did not stop on SIGTERM");
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 130);
    fb_wait(fb, &fb->n_cancel, 3);
    size_t len;
    char *err = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(err, "zbert: interrupted; 0 of 3 texts written\n"));
    free(err);
    fb_stop(&fb);
}

static void test_cli_status(void **st) {
    (void)st;
    fb_t *fb = fb_start(NULL);
    fb_run(fb);
    /* the endpoint from a config file */
    char conf[600];
    snprintf(conf, sizeof conf, "# test\nbroker = %s\n", fb->ep);
    s_write("zbert.conf", conf);
    assert_int_equal(s_sh("%s/zbert status --config %s > %s 2> %s", s_bin(), s_file("zbert.conf"),
                          s_file("out"), s_file("err")),
                     0);
    size_t len;
    char *out = fx_read_file(s_file("out"), &len);
    assert_non_null(strstr(out, "requests    3 open\n"));
    assert_non_null(strstr(out, "queued      12 shards, 700 texts\n"));
    assert_non_null(strstr(out, "in flight   4 shards\n"));
    assert_non_null(strstr(out, "throughput  812.5 texts/s, 25012.2 tokens/s"));
    assert_non_null(strstr(out, "latency     p50 12.0 ms, p90 30.5 ms, p99 80.2 ms"));
    assert_non_null(strstr(out, "errors      5 malformed messages, 2 bad worker results\n"));
    assert_non_null(strstr(out, "security    CurveZMQ on, refused: 9 clients, 1 workers\n"));
    assert_non_null(strstr(out, "set aside (1m 01s left)\n"));
    assert_non_null(strstr(out, "workers     2\n"));
    assert_non_null(strstr(out, "WORKER"));
    /* worker rows: name, model, numbers; a control character is masked */
    assert_non_null(strstr(out, "node1:101"));
    assert_non_null(strstr(out, "node2:?[2J"));
    assert_null(strchr(out, '\x1b'));
    const char *row = strstr(out, "node1:101");
    char name[64], model[64], idle[32];
    unsigned dim, threads, credit;
    unsigned long long infl, shards, tokens;
    assert_int_equal(sscanf(row, "%63s %63s %u %u %u %llu %llu %llu %31s", name, model, &dim,
                            &threads, &credit, &infl, &shards, &tokens, idle),
                     9);
    assert_string_equal(model, "tiny-seed1");
    assert_int_equal(dim, 32);
    assert_int_equal(threads, 4);
    assert_int_equal(credit, 8);
    assert_int_equal(infl, 1);
    assert_int_equal(shards, 120);
    assert_int_equal(tokens, 45678);
    assert_string_equal(idle, "0.2s");
    assert_non_null(strstr(out, "1h 02m 05s"));
    free(out);
    /* JSON */
    assert_int_equal(s_sh("ZBERT_BROKER=%s %s/zbert status --json > %s 2> %s", fb->ep, s_bin(),
                          s_file("out"), s_file("err")),
                     0);
    out = fx_read_file(s_file("out"), &len);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "broker")->valuestring, fb->ep);
    assert_int_equal(cJSON_GetObjectItem(j, "queued_texts")->valuedouble, 700);
    assert_true(cJSON_GetObjectItem(j, "tokens_per_s")->valuedouble == 25012.25);
    cJSON *lat = cJSON_GetObjectItem(j, "latency_ms");
    assert_true(cJSON_GetObjectItem(lat, "p99")->valuedouble == 80.25);
    cJSON *ws = cJSON_GetObjectItem(j, "workers");
    assert_int_equal(cJSON_GetArraySize(ws), 2);
    cJSON *w1 = cJSON_GetArrayItem(ws, 1);
    assert_string_equal(cJSON_GetObjectItem(w1, "name")->valuestring, "node2:\x1b[2J");
    assert_int_equal(cJSON_GetObjectItem(w1, "idle_ms")->valuedouble, 3725000);
    assert_int_equal(cJSON_GetObjectItem(w1, "quarantined_ms")->valuedouble, 61000);
    assert_int_equal(cJSON_GetObjectItem(j, "bad_results")->valuedouble, 2);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "curve")));
    assert_int_equal(cJSON_GetObjectItem(j, "refused_clients")->valuedouble, 9);
    cJSON_Delete(j);
    free(out);
    fb_stop(&fb);
    /* nobody there */
    fb = fb_start(NULL);
    fb->silent = true;
    fb_run(fb);
    assert_int_equal(s_sh("%s/zbert status --broker %s --timeout-ms 300 > %s 2> %s", s_bin(),
                          fb->ep, s_file("out"), s_file("err")),
                     1);
    out = fx_read_file(s_file("err"), &len);
    assert_non_null(strstr(out, "no status from broker"));
    free(out);
    fb_stop(&fb);
}

/* --- tests: CURVE ---------------------------------------------------------------- */

/* s_file(name) that stays valid for the whole test (s_file's buffers are
 * reused after four calls): from a table of 32. */
static const char *s_kept(const char *name) {
    static char buf[32][512];
    static int k;
    k = (k + 1) % 32;
    snprintf(buf[k], sizeof buf[k], "%s/%s", s_dir, name);
    return buf[k];
}

/* A key pair saved as DIR/name.key and DIR/name.pub. */
static void s_keys(const char *name, zb_curve_cert_t *c) {
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(c, name, &d), 0);
    char base[600];
    snprintf(base, sizeof base, "%s/%s", s_dir, name);
    if (zb_curve_save(base, c, &d) != 0) fail_msg("save %s: %s", base, d.msg);
}

static zbert_client_t *s_curve_client(const char *const *eps, size_t n, const char *key,
                                      const char *const *broker_keys, size_t n_keys,
                                      uint32_t retry_ms, uint32_t outage_ms) {
    zbert_config_t cfg = {.brokers = eps,
                          .n_brokers = n,
                          .retry_ms = retry_ms,
                          .outage_ms = outage_ms,
                          .curve_key = key,
                          .broker_keys = broker_keys,
                          .n_broker_keys = n_keys};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) fail_msg("client: %s", d.msg);
    return c;
}

/* Status and an embed request through CURVE; with a wrong broker key, or
 * without CURVE, the fake hears nothing and the client times out saying
 * what CURVE can mean. */
static void test_curve_status_and_embed(void **st) {
    (void)st;
    zb_curve_cert_t server, client, wrong;
    s_keys("cs-broker", &server);
    s_keys("cs-client", &client);
    s_keys("cs-wrong", &wrong);
    fb_t *fb = fb_start_curve(h_shuffle, &server);
    fb_run(fb);
    const char *eps[] = {fb->ep};
    const char *bkey[] = {s_kept("cs-broker.pub")};
    zbert_client_t *c = s_curve_client(eps, 1, s_kept("cs-client.key"), bkey, 1, 0, 0);
    zbert_status_t *s = NULL;
    zbert_diag_t d = {{0}};
    assert_int_equal(zbert_status(c, 5000, &s, &d), 0);
    assert_int_equal(s->queued_texts, 700);
    zbert_status_destroy(&s);
    const char **texts = s_texts(7, "c");
    req_t r;
    s_submit(c, &r, texts, 7, ZBERT_LEVEL_WORDPIECE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    int seen = fb_count(fb, &fb->n_status);
    assert_int_equal(seen, 1);

    /* the wrong broker key: nothing arrives, the status times out */
    bkey[0] = s_kept("cs-wrong.pub");
    c = s_curve_client(eps, 1, s_kept("cs-client.key"), bkey, 1, 100, 1000);
    assert_int_equal(zbert_status(c, 3000, &s, &d), ZBERT_ETIMEOUT);
    printf("wrong broker key: %s\n", d.msg);
    assert_non_null(strstr(d.msg, "CURVE"));
    assert_null(s);
    /* and a request fails when the outage budget is spent */
    s_submit(c, &r, texts, 2, ZBERT_LEVEL_SENTENCE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    assert_int_equal(r.end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(r.end->code, ZBERT_ETIMEOUT);
    assert_non_null(strstr(r.end->message, "CURVE"));
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    /* no CURVE at all: nothing either, and no hint */
    c = s_client(eps, 1, 100, 2, 0, 0);
    assert_int_equal(zbert_status(c, 3000, &s, &d), ZBERT_ETIMEOUT);
    assert_null(strstr(d.msg, "CURVE"));
    zbert_client_destroy(&c);
    assert_int_equal(fb_count(fb, &fb->n_status), seen);
    assert_int_equal(fb_count(fb, &fb->n_embed), 1);
    s_texts_free(texts, 7);
    fb_stop(&fb);
    explicit_bzero(&client, sizeof client);
}

/* Failover between brokers of different keys: one key per broker, in the
 * order of the endpoints; the socket opened for the second broker uses the
 * second key. */
static void test_curve_failover(void **st) {
    (void)st;
    zb_curve_cert_t k1, k2, client;
    s_keys("cf-broker1", &k1);
    s_keys("cf-broker2", &k2);
    s_keys("cf-client", &client);
    fb_t *dead = fb_start_curve(NULL, &k1), *live = fb_start_curve(h_shuffle, &k2);
    dead->silent = true;
    fb_run(dead);
    fb_run(live);
    const char *eps[] = {dead->ep, live->ep};
    const char *bkeys[] = {s_kept("cf-broker1.pub"), s_kept("cf-broker2.pub")};
    zbert_client_t *c = s_curve_client(eps, 2, s_kept("cf-client.key"), bkeys, 2, 200, 0);
    const char **texts = s_texts(9, "cf");
    req_t r;
    s_submit(c, &r, texts, 9, ZBERT_LEVEL_SENTENCE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    s_all_seen(&r);
    assert_int_equal(r.end->type, ZBERT_EVENT_DONE);
    assert_int_equal(fb_count(live, &live->n_embed), 1);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    /* one key for both: the live broker's handshake fails, nothing done */
    const char *one[] = {s_kept("cf-broker1.pub")};
    c = s_curve_client(eps, 2, s_kept("cf-client.key"), one, 1, 100, 1000);
    s_submit(c, &r, texts, 2, ZBERT_LEVEL_SENTENCE, 0);
    s_run_until_ended(c, &r, 1, NULL);
    assert_int_equal(r.end->type, ZBERT_EVENT_ERROR);
    assert_int_equal(fb_count(live, &live->n_embed), 1);
    s_req_free_ev(&r);
    zbert_client_destroy(&c);
    s_texts_free(texts, 9);
    fb_stop(&dead);
    fb_stop(&live);
}

/* Key settings and files zbert_client_new refuses, each with a sentence
 * naming the problem (and the file). */
static void test_curve_config_checks(void **st) {
    (void)st;
    zb_curve_cert_t b, k;
    s_keys("cc-broker", &b);
    s_keys("cc-client", &k);
    assert_int_equal(s_sh("cp %s %s && chmod 644 %s", s_kept("cc-client.key"),
                          s_kept("cc-open.key"), s_kept("cc-open.key")),
                     0);
    s_write("cc-garbage.pub", "curve\n    public-key = \"not a key\"\n");
    const char *eps[] = {"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"};
    const char *pub[] = {s_kept("cc-broker.pub"), s_kept("cc-broker.pub"), s_kept("cc-broker.pub")};
    const char *none[] = {NULL};
    const char *missing[] = {s_kept("cc-missing.pub")};
    const char *garbage[] = {s_kept("cc-garbage.pub")};
    const struct {
        const char *key;
        const char *const *bkeys;
        size_t n_bkeys, n_eps;
        int rc;
        const char *says;
    } cases[] = {
        {s_kept("cc-client.key"), NULL, 0, 1, ZBERT_EINVAL, "broker_keys"},
        {NULL, pub, 1, 1, ZBERT_EINVAL, "curve_key"},
        {"", pub, 1, 1, ZBERT_EINVAL, "curve_key"},
        {s_kept("cc-client.key"), pub, 3, 2, ZBERT_EINVAL, "3 broker keys for 2 brokers"},
        {s_kept("cc-client.key"), none, 1, 1, ZBERT_EINVAL, "no path"},
        {s_kept("cc-client.key"), missing, 1, 1, ZBERT_EINVAL, "cc-missing.pub"},
        {s_kept("cc-client.key"), garbage, 1, 1, ZBERT_EINVAL, "cc-garbage.pub:2:"},
        {s_kept("cc-missing.key"), pub, 1, 1, ZBERT_EINVAL, "cc-missing.key"},
        {s_kept("cc-open.key"), pub, 1, 1, ZBERT_EINVAL, "chmod 600"},
        {s_kept("cc-broker.pub"), pub, 1, 1, ZBERT_EINVAL, "cc-broker.pub: no curve secret-key"},
        {s_dir, pub, 1, 1, ZBERT_EINVAL, "not a regular file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zbert_config_t cfg = {.brokers = eps,
                              .n_brokers = cases[i].n_eps,
                              .curve_key = cases[i].key,
                              .broker_keys = cases[i].bkeys,
                              .n_broker_keys = cases[i].n_bkeys};
        zbert_client_t *c = NULL;
        zbert_diag_t d = {{0}};
        int rc = zbert_client_new(&cfg, &c, &d);
        printf("curve config %zu: %s\n", i, d.msg);
        assert_int_equal(rc, cases[i].rc);
        assert_null(c);
        if (strstr(d.msg, cases[i].says) == NULL)
            fail_msg("case %zu: `%s` does not say `%s`", i, d.msg, cases[i].says);
    }
    /* one key for two brokers, and one per broker: fine (nothing connects) */
    for (size_t n = 1; n <= 2; n++) {
        zbert_config_t cfg = {.brokers = eps,
                              .n_brokers = 2,
                              .curve_key = s_kept("cc-client.key"),
                              .broker_keys = pub,
                              .n_broker_keys = n};
        zbert_client_t *c = NULL;
        assert_int_equal(zbert_client_new(&cfg, &c, NULL), 0);
        zbert_client_destroy(&c);
    }
}

/* bin/zbert keygen: both files with their modes, the paths and the public
 * key printed; never an overwrite; usage errors. */
static void test_cli_keygen(void **st) {
    (void)st;
    assert_int_equal(
        s_sh("%s/zbert keygen %s > %s 2> %s", s_bin(), s_file("kg"), s_file("out"), s_file("err")),
        0);
    struct stat sk, sp;
    assert_int_equal(stat(s_file("kg.key"), &sk), 0);
    assert_int_equal(stat(s_file("kg.pub"), &sp), 0);
    assert_int_equal(sk.st_mode & 0777, 0600);
    assert_int_equal(sp.st_mode & 0777, 0644);
    zb_curve_cert_t k, p;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_load(s_file("kg.key"), true, &k, &d), 0);
    assert_int_equal(zb_curve_load(s_file("kg.pub"), false, &p, &d), 0);
    assert_memory_equal(k.pub, p.pub, ZB_CURVE_KEY_BYTES);
    assert_string_equal(k.name, "kg");
    char z[ZB_CURVE_Z85_CHARS + 1], want[2048];
    snprintf(want, sizeof want, "secret key: %s\npublic key: %s\npublic key (Z85): %s\n",
             s_file("kg.key"), s_file("kg.pub"), zb_curve_z85(p.pub, z));
    size_t len;
    char *out = fx_read_file(s_file("out"), &len);
    assert_string_equal(out, want);
    free(out);
    char *before = fx_read_file(s_file("kg.key"), &len);
    /* again: refused, nothing changed */
    assert_int_equal(
        s_sh("%s/zbert keygen %s > %s 2> %s", s_bin(), s_file("kg"), s_file("out"), s_file("err")),
        1);
    char *err = fx_read_file(s_file("err"), &len);
    printf("keygen again: %s", err);
    assert_non_null(strstr(err, "never overwritten"));
    assert_non_null(strstr(err, s_file("kg")));
    free(err);
    char *after = fx_read_file(s_file("kg.key"), &len);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* usage */
    assert_int_equal(s_sh("%s/zbert keygen 2> /dev/null", s_bin()), 2);
    assert_int_equal(s_sh("%s/zbert keygen a b 2> /dev/null", s_bin()), 2);
    assert_int_equal(s_sh("%s/zbert keygen %s/ 2> /dev/null", s_bin(), s_dir), 2);
    assert_int_equal(s_sh("%s/zbert keygen --help | grep -q NAME.key", s_bin()), 0);
    assert_int_equal(s_sh("%s/zbert --help | grep -q 'zbert keygen NAME'", s_bin()), 0);
    assert_int_equal(s_sh("%s/zbert status --help | grep -q -- '--curve-key FILE'", s_bin()), 0);
    assert_int_equal(s_sh("%s/zbert embed --help | grep -q -- '--broker-key FILE'", s_bin()), 0);
}

/* bin/zbert status and embed with key files, from options, the
 * environment and a config file; a wrong broker key times out saying what
 * CURVE can mean; key settings it cannot use are usage errors (exit 2)
 * naming the file, and nothing is sent. */
static void test_cli_curve(void **st) {
    (void)st;
    zb_curve_cert_t server, client, wrong;
    s_keys("cli-broker", &server);
    s_keys("cli-client", &client);
    s_keys("cli-wrong", &wrong);
    fb_t *fb = fb_start_curve(h_shuffle, &server);
    fb_run(fb);
    const char *key = s_kept("cli-client.key"), *pub = s_kept("cli-broker.pub");
    char keys[1400];
    snprintf(keys, sizeof keys, "--curve-key %s --broker-key %s", key, pub);
    assert_int_equal(s_sh("%s/zbert status --broker %s %s --json > %s 2> %s", s_bin(), fb->ep, keys,
                          s_file("out"), s_file("err")),
                     0);
    size_t len;
    char *out = fx_read_file(s_file("out"), &len);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "queued_texts")->valuedouble, 700);
    cJSON_Delete(j);
    free(out);
    /* embed, keys from the environment */
    s_write("cli-in.txt", "one two\nthree\n");
    assert_int_equal(s_sh("ZBERT_CURVE_KEY=%s ZBERT_BROKER_KEY=%s %s/zbert embed --broker %s "
                          "--level sentence %s > %s 2> %s",
                          key, pub, s_bin(), fb->ep, s_kept("cli-in.txt"), s_file("out"),
                          s_file("err")),
                     0);
    out = fx_read_file(s_file("out"), &len);
    assert_non_null(strstr(out, "{\"index\":1,\"vector\":["));
    free(out);
    /* status, keys from a config file */
    char conf[2048];
    snprintf(conf, sizeof conf, "broker = %s\ncurve-key = %s\nbroker_key = %s\n", fb->ep, key, pub);
    s_write("cli-curve.conf", conf);
    assert_int_equal(s_sh("%s/zbert status --config %s > /dev/null 2> %s", s_bin(),
                          s_kept("cli-curve.conf"), s_file("err")),
                     0);
    int embeds = fb_count(fb, &fb->n_embed), statuses = fb_count(fb, &fb->n_status);
    /* the wrong broker key: no answer, and a hint */
    assert_int_equal(s_sh("%s/zbert status --broker %s --curve-key %s --broker-key %s "
                          "--timeout-ms 500 > /dev/null 2> %s",
                          s_bin(), fb->ep, key, s_kept("cli-wrong.pub"), s_file("err")),
                     1);
    char *err = fx_read_file(s_file("err"), &len);
    printf("wrong broker key: %s", err);
    assert_non_null(strstr(err, "CURVE"));
    free(err);

    /* refused: exit 2, the file named, nothing sent */
    assert_int_equal(
        s_sh("cp %s %s && chmod 644 %s", key, s_kept("cli-open.key"), s_kept("cli-open.key")), 0);
    const struct {
        const char *key, *pub, *pub2;
        const char *says;
    } cases[] = {
        {s_kept("cli-missing.key"), pub, NULL, "cli-missing.key: No such file"},
        {s_kept("cli-open.key"), pub, NULL, "chmod 600"},
        {pub, pub, NULL, "cli-broker.pub: no curve secret-key"},
        {s_dir, pub, NULL, "not a regular file"},
        {key, s_kept("cli-missing.pub"), NULL, "cli-missing.pub"},
        {key, NULL, NULL, "--curve-key needs --broker-key"},
        {NULL, pub, NULL, "--broker-key needs --curve-key"},
        {key, pub, pub, "2 --broker-key files for 1 broker:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[2048] = "";
        int n = 0;
        if (cases[i].key)
            n += snprintf(args + n, sizeof args - (size_t)n, " --curve-key %s", cases[i].key);
        if (cases[i].pub)
            n += snprintf(args + n, sizeof args - (size_t)n, " --broker-key %s", cases[i].pub);
        if (cases[i].pub2)
            snprintf(args + n, sizeof args - (size_t)n, " --broker-key %s", cases[i].pub2);
        for (int embed = 0; embed <= 1; embed++) {
            int rc =
                s_sh("%s/zbert %s --broker %s%s < %s > /dev/null 2> %s", s_bin(),
                     embed ? "embed" : "status", fb->ep, args, s_kept("cli-in.txt"), s_file("err"));
            err = fx_read_file(s_file("err"), &len);
            if (rc != 2 || strstr(err, cases[i].says) == NULL)
                fail_msg("case %zu (%s): exit %d, stderr `%s`, expected 2 and `%s`", i,
                         embed ? "embed" : "status", rc, err, cases[i].says);
            if (embed) printf("refused: %s", err);
            free(err);
        }
    }
    assert_int_equal(fb_count(fb, &fb->n_embed), embeds);
    assert_int_equal(fb_count(fb, &fb->n_status), statuses);
    fb_stop(&fb);
    explicit_bzero(&client, sizeof client);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_checks),
        cmocka_unit_test(test_out_of_order_and_reorder),
        cmocka_unit_test(test_reorder_error_and_destroy),
        cmocka_unit_test(test_per_text_errors_and_truncation),
        cmocka_unit_test(test_silence_then_open),
        cmocka_unit_test(test_restart_resend_with_have),
        cmocka_unit_test(test_parts_lost_with_connection),
        cmocka_unit_test(test_failover_to_second_broker),
        cmocka_unit_test(test_outage_budget),
        cmocka_unit_test(test_closing_moves_to_next_broker),
        cmocka_unit_test(test_closing_single_broker_waits),
        cmocka_unit_test(test_closing_everywhere),
        cmocka_unit_test(test_error_without_id_ends_nothing),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_blocking_model),
        cmocka_unit_test(test_wait_after_absence_does_not_spin),
        cmocka_unit_test(test_busy_is_retried),
        cmocka_unit_test(test_no_model_retried),
        cmocka_unit_test(test_restart_noticed_from_uptime),
        cmocka_unit_test(test_duplicate_id_of_own_resend_is_ignored),
        cmocka_unit_test(test_malformed_messages_fail_their_request),
        cmocka_unit_test(test_unknown_types_ignored),
        cmocka_unit_test(test_token_meta),
        cmocka_unit_test(test_meta_mismatch),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_drops_queued_parts),
        cmocka_unit_test(test_bounded_in_flight),
        cmocka_unit_test(test_blocking_embed),
        cmocka_unit_test(test_blocking_deadline_and_error),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_cli_embed_jsonl_levels),
        cmocka_unit_test(test_cli_embed_npy_and_jsonl_input),
        cmocka_unit_test(test_cli_embed_many_texts_in_order),
        cmocka_unit_test(test_cli_embed_progress_and_failure),
        cmocka_unit_test(test_cli_embed_interrupted),
        cmocka_unit_test(test_cli_embed_model),
        cmocka_unit_test(test_cli_status),
        cmocka_unit_test(test_curve_status_and_embed),
        cmocka_unit_test(test_curve_failover),
        cmocka_unit_test(test_curve_config_checks),
        cmocka_unit_test(test_cli_keygen),
        cmocka_unit_test(test_cli_curve),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
