/*
 * fakebroker.c -- a fake broker for the worker's tests (see fakebroker.h).
 */
#include "fakebroker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "clock.h"

static void *s_socks[FB_SOCKS_MAX]; /* the open fakes' sockets */

void fb_got_free(fb_got_t *g) {
    zb_msg_free(&g->m);
    free(g->body);
    memset(g, 0, sizeof *g);
}

void fb_open(fb_fake_t *f, const fb_config_t *cfg, const char *name) {
    fb_open_curve(f, cfg, name, NULL);
}

void fb_open_curve(fb_fake_t *f, const fb_config_t *cfg, const char *name,
                   const zb_curve_cert_t *server) {
    memset(f, 0, sizeof *f);
    f->cfg = *cfg;
    size_t k = 0;
    while (k < FB_SOCKS_MAX && s_socks[k]) k++;
    assert_true(k < FB_SOCKS_MAX);
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/%s.sock", cfg->dir, name);
    snprintf(f->log, sizeof f->log, "%s/%s.log", cfg->dir, name);
    f->sock = zmq_socket(cfg->ctx, ZMQ_ROUTER);
    assert_non_null(f->sock);
    s_socks[k] = f->sock;
    int one = 1, zero = 0;
    int64_t max = (int64_t)ZB_MSG_BODY_MAX + 4096;
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one), 0);
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_MAXMSGSIZE, &max, sizeof max), 0);
    if (server) assert_int_equal(zb_curve_server_socket(f->sock, server, "workers", NULL), 0);
    assert_int_equal(zmq_bind(f->sock, f->endpoint), 0);
    f->keepalive = true;
}

void fb_close(fb_fake_t *f) {
    if (f->sock == NULL) return;
    for (size_t k = 0; k < FB_SOCKS_MAX; k++)
        if (s_socks[k] == f->sock) s_socks[k] = NULL;
    zmq_close(f->sock);
    f->sock = NULL;
}

void fb_close_all(void) {
    for (size_t k = 0; k < FB_SOCKS_MAX; k++) {
        if (s_socks[k]) zmq_close(s_socks[k]);
        s_socks[k] = NULL;
    }
}

void fb_send_raw(fb_fake_t *f, const void *body, size_t len) {
    assert_true(f->id_len > 0);
    if (zmq_send(f->sock, f->id, f->id_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(f->sock, body, len, 0) < 0) {
        fprintf(stderr, "fake broker: send: %s\n", zmq_strerror(errno));
        fail();
    }
}

void fb_send_empty(fb_fake_t *f, zb_msg_type_t t) {
    uint8_t *b;
    size_t n;
    assert_int_equal(zb_msg_encode_empty(t, &b, &n, NULL), 0);
    fb_send_raw(f, b, n);
    free(b);
}

void fb_send_task_in(fb_fake_t *f, uint64_t epoch, uint64_t shard, const char *const *texts,
                     const size_t *lens, size_t n, const zb_options_t *o) {
    zb_msg_str_t *v = calloc(n ? n : 1, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = (zb_msg_str_t){texts[i], lens[i]};
    zb_msg_task_t t = {.shard = shard, .epoch = epoch, .texts = v, .n_texts = n, .opt = *o};
    uint8_t *b;
    size_t len;
    assert_int_equal(zb_msg_encode_task(&t, &b, &len, NULL), 0);
    fb_send_raw(f, b, len);
    free(b);
    free(v);
}

void fb_send_task(fb_fake_t *f, uint64_t shard, const char *const *texts, const size_t *lens,
                  size_t n, const zb_options_t *o) {
    fb_send_task_in(f, f->epoch, shard, texts, lens, n, o);
}

/* A heartbeat to the peer: asserted, or, lenient, not (a peer that has
 * left after its bye is unreachable, which is no failure of the peer). */
static void s_heartbeat(fb_fake_t *f) {
    if (!f->cfg.heartbeat_lenient) {
        fb_send_empty(f, ZB_MSG_HEARTBEAT);
        return;
    }
    uint8_t *hb;
    size_t hb_len;
    assert_int_equal(zb_msg_encode_empty(ZB_MSG_HEARTBEAT, &hb, &hb_len, NULL), 0);
    if (zmq_send(f->sock, f->id, f->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send(f->sock, hb, hb_len, ZMQ_DONTWAIT);
    free(hb);
}

bool fb_next(fb_fake_t *f, int timeout_ms, fb_got_t *g) {
    int64_t end = fb_now_ms() + timeout_ms;
    memset(g, 0, sizeof *g);
    for (;;) {
        int64_t now = fb_now_ms();
        if (f->keepalive && f->id_len > 0 && now - f->last_hb >= f->cfg.heartbeat_ms) {
            s_heartbeat(f);
            f->last_hb = now;
        }
        if (now >= end) return false;
        zmq_pollitem_t it = {.socket = f->sock, .events = ZMQ_POLLIN};
        int left = (int)(end - now);
        int r = zmq_poll(&it, 1, left < f->cfg.poll_ms ? left : f->cfg.poll_ms);
        if (r < 0 && errno == EINTR) continue;
        assert_true(r >= 0);
        if (r == 0) continue;
        int n = zmq_recv(f->sock, g->id, sizeof g->id, 0);
        assert_true(n > 0 && (size_t)n <= sizeof g->id);
        g->id_len = (size_t)n;
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, f->sock, 0) >= 0);
        assert_false(zmq_msg_more(&m)); /* one frame per body */
        g->len = zmq_msg_size(&m);
        g->body = malloc(g->len ? g->len : 1);
        assert_non_null(g->body);
        memcpy(g->body, zmq_msg_data(&m), g->len);
        zmq_msg_close(&m);
        zb_diag_t d = {{0}};
        int rc = zb_msg_decode(g->body, g->len, &g->m, &d);
        if (rc != 0)
            fprintf(stderr, "the %s sent a bad body: %s\n", f->cfg.peer, zb_diag_text(&d, rc));
        assert_int_equal(rc, 0);
        if (g->m.type == ZB_MSG_HEARTBEAT) {
            f->heartbeats++;
            fb_got_free(g);
            continue;
        }
        if (g->m.type == ZB_MSG_READY) {
            memcpy(f->id, g->id, g->id_len);
            f->id_len = g->id_len;
            f->epoch = g->m.u.ready.epoch;
            f->readies++;
        }
        return true;
    }
}

void fb_expect(fb_fake_t *f, zb_msg_type_t t, fb_got_t *g) {
    if (!fb_next(f, FB_WAIT_MS, g)) {
        size_t len;
        char *log = fx_read_file(f->log, &len);
        if (log) fprintf(stderr, "--- %s log %s:\n%s---\n", f->cfg.peer, f->log, log);
        free(log);
        fprintf(stderr, "no %s within %d ms\n", zb_msg_type_name(t), FB_WAIT_MS);
        fail();
    }
    if (g->m.type != t) {
        fprintf(stderr, "expected %s, got %s\n", zb_msg_type_name(t), zb_msg_type_name(g->m.type));
        fail();
    }
}

/* --- what the tests send ---------------------------------------------------- */

int fb_texts(const fx_file_t *fx, const char *long0, size_t long0_len, const char **texts,
             size_t *lens) {
    if (fx->n < 20) return -1;
    int n = 0;
    for (int i = 0; i < 20; i++) {
        texts[n] = fx->cases[i].text;
        lens[n++] = fx->cases[i].text_len;
    }
    texts[n] = "bad \xff\xfe bytes";
    lens[n++] = 13;
    texts[n] = "";
    lens[n++] = 0;
    texts[n] = "I love NLP";
    lens[n++] = 10;
    texts[n] = long0; /* truncated, or windows */
    lens[n++] = long0_len;
    return n == FB_TEXTS ? 0 : -1;
}

int fb_long_texts(size_t n, const char ***texts, size_t **lens) {
    static const char *w[] = {"alpha", "Embeddings", "gamma,",          "delta.", "tokenization",
                              "zbert", "x",          "(parenthesised)", "café",   "NLP"};
    const size_t per = 600 * 20;
    /* one block: the n pointers, then the texts they point to */
    char *block = malloc(n * (sizeof(char *) + per));
    *lens = calloc(n, sizeof **lens);
    if (block == NULL || *lens == NULL) {
        free(block);
        free(*lens);
        *texts = NULL;
        *lens = NULL;
        return -1;
    }
    const char **t = (const char **)(void *)block;
    char *pool = block + n * sizeof(char *);
    for (size_t k = 0; k < n; k++) {
        char *p = pool + k * per;
        size_t len = 0;
        for (size_t i = 0; i < 600; i++)
            len += (size_t)snprintf(p + len, per - len, "%s%s", i ? " " : "", w[(i * 7 + k) % 10]);
        t[k] = p;
        (*lens)[k] = len;
    }
    *texts = t;
    return 0;
}

void fb_long_free(const char ***texts, size_t **lens) {
    free((void *)*texts);
    free(*lens);
    *texts = NULL;
    *lens = NULL;
}

void fb_reference(zb_embed_t *emb, const char *const *texts, const size_t *lens, size_t n,
                  const zb_options_t *o, zb_embed_result_t *ref) {
    assert_int_equal(zb_embed_run(emb, texts, lens, n, o, ref), 0);
}

void fb_free_refs(zb_embed_result_t *ref, size_t n) {
    for (size_t i = 0; i < n; i++) zb_embed_result_free(&ref[i]);
}

/* --- time ------------------------------------------------------------------- */

int64_t fb_now_ms(void) {
    return (int64_t)zb_clock_ms();
}

void fb_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
