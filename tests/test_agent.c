/*
 * test_agent.c -- the worker agent (worker/agent) in process, as a broker
 * sees it.  zb_agent_run() runs in a thread of this test, serving
 * tests/fixtures/tiny-seed1 to a fake broker: a ROUTER socket in the test
 * speaking proto/msg.h over ipc:// in a temporary directory.  Checked:
 * `ready` (name, model identity, dim, threads, credit, epoch 1) and the
 * default credit, results bit-identical to an in-process engine run, credit
 * (a task beyond it dropped unanswered, credit back after the results),
 * heartbeats while idle and while a task computes, stop = drain (queued
 * tasks finished and sent, a task arriving meanwhile dropped, then `bye`),
 * a second stop leaves at once, malformed messages dropped and counted
 * without harm, `reconnect` answered with a new epoch (tasks of the old one
 * dropped as stale), reconnection after silence with a doubling wait, two
 * brokers, and settings refused.
 *
 * Each test's agent is stopped (second stop), joined and destroyed in the
 * teardown whatever failed.  Waits have generous timeouts; timing checks
 * are lower bounds only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "agent.h"
#include "clock.h"
#include "embed.h"
#include "fixture.h"
#include "log.h"
#include "msg.h"
#include "model.h"
#include "result_check.h"

#define S_WAIT_MS 20000 /* upper bound for anything expected to happen */
#define S_THREADS 2     /* the agent's and the in-process embedder's */
/* The tests' heartbeat: short, so that a stop is seen soon (the loop looks
 * at it after each poll); silence never reconnects unless a test asks. */
#define S_HEARTBEAT_MS 100
#define S_NEVER_MS     600000

static char s_dir[256];
static void *s_ctx;
static zb_model_t *s_model;
static zb_embed_t *s_emb;       /* references, in this thread */
static zb_embed_t *s_agent_emb; /* the agent's */
static fx_file_t s_fx;

/* The shared clock, signed: intervals below may be negative. */
static int64_t s_now_ms(void) {
    return (int64_t)zb_clock_ms();
}

static void s_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* --- the agent in a thread ------------------------------------------------- */

typedef struct runner {
    zb_agent_t *agent;
    volatile sig_atomic_t stop; /* the agent's stop counter */
    pthread_t thread;
    bool started;    /* the thread runs or has not been joined */
    atomic_int done; /* zb_agent_run returned */
    int rc;          /* what it returned */
} runner_t;

static runner_t s_r; /* the test's agent */

static void *s_run_main(void *arg) {
    runner_t *r = arg;
    r->rc = zb_agent_run(r->agent, &r->stop);
    atomic_store(&r->done, 1);
    return NULL;
}

/* The tests' settings: one broker, the test's name, both embedders' thread
 * count, heartbeats every S_HEARTBEAT_MS and no reconnect on silence. */
static void s_config(zb_agent_config_t *c, const char *const *endpoints, int n) {
    zb_agent_config_default(c);
    c->embedder = s_agent_emb;
    c->model = zb_model_identity(s_model);
    c->brokers = endpoints;
    c->n_brokers = n;
    c->name = "agent-test";
    c->threads = S_THREADS;
    c->heartbeat_ms = S_HEARTBEAT_MS;
    c->dead_ms = S_NEVER_MS;
    c->dead_max_ms = S_NEVER_MS;
}

/* Makes the agent of c and runs it in a thread. */
static void s_run(const zb_agent_config_t *c) {
    assert_null(s_r.agent);
    memset(&s_r, 0, sizeof s_r);
    zb_diag_t d = {{0}};
    int rc = zb_agent_new(c, &s_r.agent, &d);
    if (rc != 0) fprintf(stderr, "zb_agent_new: %s\n", zb_diag_text(&d, rc));
    assert_int_equal(rc, 0);
    assert_int_equal(pthread_create(&s_r.thread, NULL, s_run_main, &s_r), 0);
    s_r.started = true;
}

/* Waits up to timeout_ms for zb_agent_run to return; true when it did
 * (then the thread is joined). */
static bool s_wait_done(int timeout_ms) {
    int64_t end = s_now_ms() + timeout_ms;
    while (!atomic_load(&s_r.done)) {
        if (s_now_ms() > end) return false;
        s_sleep_ms(10);
    }
    pthread_join(s_r.thread, NULL);
    s_r.started = false;
    return true;
}

/* Raises the stop counter to `to` and returns what zb_agent_run returned
 * (the agent stays, for its statistics, until the teardown). */
static int s_stop(int to) {
    s_r.stop = to;
    if (!s_wait_done(S_WAIT_MS)) {
        fprintf(stderr, "the agent did not return within %d ms of stop %d\n", S_WAIT_MS, to);
        fail();
    }
    return s_r.rc;
}

static zb_agent_stats_t s_stats(void) {
    zb_agent_stats_t st;
    zb_agent_stats(s_r.agent, &st);
    return st;
}

/* Waits until the counter at offset off of the statistics reaches want. */
static void s_wait_stat(size_t off, uint64_t want, const char *what) {
    int64_t end = s_now_ms() + S_WAIT_MS;
    for (;;) {
        zb_agent_stats_t st = s_stats();
        uint64_t v;
        memcpy(&v, (const char *)&st + off, sizeof v);
        if (v >= want) return;
        if (s_now_ms() > end) {
            fprintf(stderr, "%s stayed at %llu, not %llu\n", what, (unsigned long long)v,
                    (unsigned long long)want);
            fail();
        }
        s_sleep_ms(5);
    }
}
#define S_WAIT_STAT(field, want) s_wait_stat(offsetof(zb_agent_stats_t, field), (want), #field)

/* --- the fake broker ----------------------------------------------------------- */

typedef struct fake {
    void *sock;
    char endpoint[300];
    uint8_t id[256]; /* routing id of the agent's latest ready */
    size_t id_len;
    uint64_t epoch; /* of the agent's latest ready: tasks carry it */
    int readies;
    int heartbeats; /* received */
    bool keepalive; /* send heartbeats while waiting */
    int64_t last_hb;
} fake_t;

/* A message received: its routing id, body (owned) and decoded form. */
typedef struct got {
    uint8_t id[256];
    size_t id_len;
    uint8_t *body;
    size_t len;
    zb_msg_t m;
} got_t;

static void s_got_free(got_t *g) {
    zb_msg_free(&g->m);
    free(g->body);
    memset(g, 0, sizeof *g);
}

/* The sockets of the running test's fakes, closed by the teardown
 * whatever failed (an open socket would hang zmq_ctx_term; the fakes
 * themselves live on the test's stack, gone after a failure). */
static void *s_fake_socks[4];

static void s_fake_open(fake_t *f, const char *name) {
    memset(f, 0, sizeof *f);
    size_t k = 0;
    while (k < 4 && s_fake_socks[k]) k++;
    assert_true(k < 4);
    snprintf(f->endpoint, sizeof f->endpoint, "ipc://%s/%s.sock", s_dir, name);
    f->sock = zmq_socket(s_ctx, ZMQ_ROUTER);
    assert_non_null(f->sock);
    int one = 1, zero = 0;
    int64_t max = (int64_t)ZB_MSG_BODY_MAX + 4096;
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one), 0);
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(f->sock, ZMQ_MAXMSGSIZE, &max, sizeof max), 0);
    s_fake_socks[k] = f->sock;
    assert_int_equal(zmq_bind(f->sock, f->endpoint), 0);
    f->keepalive = true;
}

static void s_fake_close(fake_t *f) {
    for (size_t k = 0; k < 4; k++)
        if (f->sock && s_fake_socks[k] == f->sock) s_fake_socks[k] = NULL;
    if (f->sock) zmq_close(f->sock);
    f->sock = NULL;
}

static void s_send_raw(fake_t *f, const void *body, size_t len) {
    assert_true(f->id_len > 0);
    if (zmq_send(f->sock, f->id, f->id_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(f->sock, body, len, 0) < 0) {
        fprintf(stderr, "fake broker: send: %s\n", zmq_strerror(errno));
        fail();
    }
}

static void s_send_empty(fake_t *f, zb_msg_type_t t) {
    uint8_t *b;
    size_t n;
    assert_int_equal(zb_msg_encode_empty(t, &b, &n, NULL), 0);
    s_send_raw(f, b, n);
    free(b);
}

/* A task under the given epoch. */
static void s_send_task_in(fake_t *f, uint64_t epoch, uint64_t shard, const char *const *texts,
                           const size_t *lens, size_t n, const zb_options_t *o) {
    zb_msg_str_t *v = calloc(n, sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) v[i] = (zb_msg_str_t){texts[i], lens[i]};
    zb_msg_task_t t = {.shard = shard, .epoch = epoch, .texts = v, .n_texts = n, .opt = *o};
    uint8_t *b;
    size_t len;
    assert_int_equal(zb_msg_encode_task(&t, &b, &len, NULL), 0);
    s_send_raw(f, b, len);
    free(b);
    free(v);
}

/* A task under the epoch of the agent's latest ready, as a broker sends
 * it. */
static void s_send_task(fake_t *f, uint64_t shard, const char *const *texts, const size_t *lens,
                        size_t n, const zb_options_t *o) {
    s_send_task_in(f, f->epoch, shard, texts, lens, n, o);
}

/*
 * The next message that is not a heartbeat, within timeout_ms: true and *g
 * filled, or false.  Heartbeats are counted; a ready records the agent's
 * routing id and epoch; with keepalive, heartbeats go to the agent every
 * 50 ms.
 */
static bool s_next(fake_t *f, int timeout_ms, got_t *g) {
    int64_t end = s_now_ms() + timeout_ms;
    memset(g, 0, sizeof *g);
    for (;;) {
        int64_t now = s_now_ms();
        if (f->keepalive && f->id_len > 0 && now - f->last_hb >= 50) {
            /* not asserted: an agent that has left (after its bye) is
             * unreachable, which is no failure of the agent */
            uint8_t *hb;
            size_t hb_len;
            assert_int_equal(zb_msg_encode_empty(ZB_MSG_HEARTBEAT, &hb, &hb_len, NULL), 0);
            if (zmq_send(f->sock, f->id, f->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                zmq_send(f->sock, hb, hb_len, ZMQ_DONTWAIT);
            free(hb);
            f->last_hb = now;
        }
        if (now >= end) return false;
        zmq_pollitem_t it = {.socket = f->sock, .events = ZMQ_POLLIN};
        int left = (int)(end - now);
        int r = zmq_poll(&it, 1, left < 20 ? left : 20);
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
        if (rc != 0) fprintf(stderr, "the agent sent a bad body: %s\n", zb_diag_text(&d, rc));
        assert_int_equal(rc, 0);
        if (g->m.type == ZB_MSG_HEARTBEAT) {
            f->heartbeats++;
            s_got_free(g);
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

/* The next message, which must be of type t. */
static void s_expect(fake_t *f, zb_msg_type_t t, got_t *g) {
    if (!s_next(f, S_WAIT_MS, g)) {
        fprintf(stderr, "no %s within %d ms\n", zb_msg_type_name(t), S_WAIT_MS);
        fail();
    }
    if (g->m.type != t) {
        fprintf(stderr, "expected %s, got %s\n", zb_msg_type_name(t), zb_msg_type_name(g->m.type));
        fail();
    }
}

/* Runs an agent of c (whose broker is f) and takes its first ready. */
static void s_start(fake_t *f, const zb_agent_config_t *c, got_t *ready) {
    s_run(c);
    got_t g;
    s_expect(f, ZB_MSG_READY, ready ? ready : &g);
    if (!ready) s_got_free(&g);
}

/* --- texts and references -------------------------------------------------------- */

#define S_TEXTS 24
static const char *s_texts[S_TEXTS];
static size_t s_lens[S_TEXTS];
static char *s_long_pool; /* long texts for heavy tasks, one after the other */
static const char **s_long;
static size_t *s_long_lens;
#define S_LONG_MAX 4000

static int s_make_long(void) {
    static const char *w[] = {"alpha", "Embeddings", "gamma,",          "delta.", "tokenization",
                              "zbert", "x",          "(parenthesised)", "café",   "NLP"};
    size_t per = 600 * 20;
    s_long_pool = malloc(per * S_LONG_MAX);
    s_long = calloc(S_LONG_MAX, sizeof *s_long);
    s_long_lens = calloc(S_LONG_MAX, sizeof *s_long_lens);
    if (!s_long_pool || !s_long || !s_long_lens) return -1;
    for (int t = 0; t < S_LONG_MAX; t++) {
        char *p = s_long_pool + (size_t)t * per;
        size_t n = 0;
        for (int i = 0; i < 600; i++)
            n += (size_t)snprintf(p + n, per - n, "%s%s", i ? " " : "", w[(i * 7 + t) % 10]);
        s_long[t] = p;
        s_long_lens[t] = n;
    }
    return 0;
}

/* The engine run directly on the same texts (same call composition). */
static void s_reference(const char *const *texts, const size_t *lens, size_t n,
                        const zb_options_t *o, zb_embed_result_t *ref) {
    assert_int_equal(zb_embed_run(s_emb, texts, lens, n, o, ref), 0);
}

static void s_free_refs(zb_embed_result_t *ref, size_t n) {
    for (size_t i = 0; i < n; i++) zb_embed_result_free(&ref[i]);
}

/* --- fixtures -------------------------------------------------------------------- */

static int group_setup(void **st) {
    (void)st;
    /* ZB_TEST_LOG=debug shows what the agents do */
    const char *lv = getenv("ZB_TEST_LOG");
    int level = lv ? zb_log_parse_level(lv) : ZB_LOG_WARN;
    zb_log_init("test_agent", level < 0 ? ZB_LOG_WARN : level);
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-agent-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    s_ctx = zmq_ctx_new();
    if (s_ctx == NULL) return -1;
    zb_diag_t d = {{0}};
    if (zb_model_open(fx_path("tiny-seed1"), &s_model, &d) != 0) return -1;
    zb_embed_config_t cfg = {.threads = S_THREADS};
    if (zb_embed_new(s_model, &cfg, &s_emb, &d) != 0) return -1;
    if (zb_embed_new(s_model, &cfg, &s_agent_emb, &d) != 0) return -1;
    if (fx_load(fx_path("embeddings-tiny-seed1.txt"), &s_fx) != 0) return -1;
    int n = 0;
    for (int i = 0; i < 20; i++) {
        s_texts[n] = s_fx.cases[i].text;
        s_lens[n++] = s_fx.cases[i].text_len;
    }
    s_texts[n] = "bad \xff\xfe bytes";
    s_lens[n++] = 13;
    s_texts[n] = "";
    s_lens[n++] = 0;
    s_texts[n] = "I love NLP";
    s_lens[n++] = 10;
    if (s_make_long() != 0) return -1;
    s_texts[n] = s_long[0]; /* truncated, or windows */
    s_lens[n++] = s_long_lens[0];
    return n == S_TEXTS ? 0 : -1;
}

static int group_teardown(void **st) {
    (void)st;
    zb_embed_destroy(&s_agent_emb);
    zb_embed_destroy(&s_emb);
    zb_model_close(&s_model);
    fx_free(&s_fx);
    free(s_long_pool);
    free(s_long);
    free(s_long_lens);
    zmq_ctx_term(s_ctx);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Whatever a test left: its agent leaves at once, is joined, destroyed. */
static int teardown(void **st) {
    (void)st;
    if (s_r.started) {
        s_r.stop = 2;
        if (!s_wait_done(S_WAIT_MS)) {
            /* cannot free what its thread still uses */
            fprintf(stderr, "teardown: the agent does not return\n");
            return -1;
        }
    }
    zb_agent_destroy(&s_r.agent);
    memset(&s_r, 0, sizeof s_r);
    for (size_t k = 0; k < 4; k++) {
        if (s_fake_socks[k]) zmq_close(s_fake_socks[k]);
        s_fake_socks[k] = NULL;
    }
    return 0;
}

/* --- tests -------------------------------------------------------------------------- */

/* ready: what the agent says about itself; the default credit; a stop
 * with nothing to do is a bye at once. */
static void test_ready(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "ready");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 3;
    c.name = "w-test";
    got_t r;
    s_start(&f, &c, &r);
    const zb_msg_ready_t *m = &r.m.u.ready;
    assert_int_equal(m->name.len, 6);
    assert_memory_equal(m->name.ptr, "w-test", 6);
    const char *id = zb_model_identity(s_model);
    assert_int_equal(m->model.len, strlen(id));
    assert_memory_equal(m->model.ptr, id, m->model.len);
    assert_int_equal(m->dim, zb_embed_dim(s_emb));
    assert_int_equal(m->threads, S_THREADS);
    assert_int_equal(m->credit, 3);
    assert_int_equal(m->epoch, 1); /* the first announcement */
    assert_int_equal(zb_agent_credit(s_r.agent), 3);
    s_got_free(&r);
    assert_int_equal(s_stop(1), 0);
    s_expect(&f, ZB_MSG_BYE, &r);
    s_got_free(&r);
    zb_agent_stats_t sx = s_stats();
    assert_true(sx.draining);
    assert_int_equal(sx.taken + sx.results + sx.malformed + sx.dropped + sx.stale, 0);
    s_fake_close(&f);

    /* default credit: twice what one run holds (batch texts / 64), at
     * least 2; not run */
    zb_agent_t *a = NULL;
    const size_t batch[] = {1, 64, 65, 200, 100000};
    const uint32_t want[] = {2, 2, 4, 8, 1024};
    for (size_t k = 0; k < sizeof batch / sizeof *batch; k++) {
        s_config(&c, eps, 1);
        c.batch_texts = batch[k];
        assert_int_equal(zb_agent_new(&c, &a, NULL), 0);
        assert_int_equal(zb_agent_credit(a), want[k]);
        zb_agent_destroy(&a);
        assert_null(a);
    }
}

/* Results: bit-identical to the engine run in process, every level, with
 * the tokens the engine counted. */
static void test_results_identical(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "ident");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    const zb_options_t opts[] = {
        {.level = ZB_LEVEL_TOKEN},
        {.level = ZB_LEVEL_WORDPIECE, .windows = true},
        {.level = ZB_LEVEL_WORDPIECE},
        {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOLING_MEAN, .normalize = true},
        {.level = ZB_LEVEL_SENTENCE},
        {.level = ZB_LEVEL_TOKEN, .sentences = true, .token_meta = true},
    };
    const size_t n_opts = sizeof opts / sizeof *opts;
    uint64_t tokens = 0;
    for (size_t k = 0; k < n_opts; k++) {
        s_send_task(&f, 10 + k, s_texts, s_lens, S_TEXTS, &opts[k]);
        got_t g;
        s_expect(&f, ZB_MSG_RESULT, &g);
        assert_int_equal(g.m.u.result.shard, 10 + k);
        assert_int_equal(g.m.u.result.epoch, 1);
        zb_embed_result_t ref[S_TEXTS] = {{0}};
        zb_embed_stats_t a, b;
        zb_embed_stats(s_emb, &a);
        s_reference(s_texts, s_lens, S_TEXTS, &opts[k], ref);
        zb_embed_stats(s_emb, &b);
        assert_int_equal(g.m.u.result.tokens, b.tokens - a.tokens);
        tokens += g.m.u.result.tokens;
        rc_compare(&g.m.u.result.vec, 0, ref, S_TEXTS, &opts[k], NULL, zb_embed_dim(s_emb), 0,
                   NULL);
        s_free_refs(ref, S_TEXTS);
        s_got_free(&g);
    }
    assert_int_equal(s_stop(1), 0);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.taken, n_opts);
    assert_int_equal(sx.results, n_opts);
    assert_int_equal(sx.texts, n_opts * S_TEXTS);
    assert_int_equal(sx.tokens, tokens);
    s_fake_close(&f);
}

/* Credit: as many tasks as the credit at once, all answered; one more
 * while they are all in flight is dropped unanswered and counted; the
 * credit comes back with the results. */
static void test_credit(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "credit");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 2;
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    /* shard 1 is heavy, so the others arrive while it computes (credit is
     * given back only when a result is collected) */
    s_send_task(&f, 1, s_long, s_long_lens, 100, &o);
    s_send_task(&f, 2, s_texts, s_lens, 3, &o);
    s_send_task(&f, 3, s_texts + 3, s_lens + 3, 3, &o);
    bool seen[3] = {false, false, false};
    for (int k = 0; k < 2; k++) {
        got_t g;
        s_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh == 1 || sh == 2);
        assert_false(seen[sh]);
        seen[sh] = true;
        s_got_free(&g);
    }
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.taken, 2);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.malformed, 1); /* a broker fault */
    /* credit came back: two more are taken */
    s_send_task(&f, 4, s_texts, s_lens, 2, &o);
    s_send_task(&f, 5, s_texts + 2, s_lens + 2, 2, &o);
    for (int k = 0; k < 2; k++) {
        got_t g;
        s_expect(&f, ZB_MSG_RESULT, &g);
        assert_true(g.m.u.result.shard == 4 || g.m.u.result.shard == 5);
        s_got_free(&g);
    }
    /* nothing for shard 3 */
    got_t g;
    assert_false(s_next(&f, 300, &g));
    assert_int_equal(s_stop(1), 0);
    sx = s_stats();
    assert_int_equal(sx.taken, 4);
    assert_int_equal(sx.results, 4);
    assert_int_equal(sx.dropped, 1);
    s_fake_close(&f);
}

/* Heartbeats arrive while idle, and while a task computes. */
static void test_heartbeats(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "hb");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    got_t g;
    /* idle: nothing but heartbeats come */
    int64_t end = s_now_ms() + S_WAIT_MS;
    while (f.heartbeats < 3 && s_now_ms() < end) assert_false(s_next(&f, 50, &g));
    assert_true(f.heartbeats >= 3);

    /* computing: a task sized to run more than 5 heartbeat periods (grown
     * until it does, so the check below always has something to check) */
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    size_t n = 25;
    for (int attempt = 0;; attempt++) {
        int hb0 = f.heartbeats;
        int64_t t0 = s_now_ms();
        s_send_task(&f, 100 + (uint64_t)attempt, s_long, s_long_lens, n, &o);
        assert_true(s_next(&f, 600000, &g));
        int64_t ms = s_now_ms() - t0;
        assert_int_equal(g.m.type, ZB_MSG_RESULT);
        assert_int_equal(g.m.u.result.vec.count, n);
        s_got_free(&g);
        int hb = f.heartbeats - hb0;
        printf("heartbeats: %d during a %zu-text task of %lld ms\n", hb, n, (long long)ms);
        if (ms > 5 * S_HEARTBEAT_MS) {
            assert_true(hb >= 1);
            break;
        }
        assert_true(attempt < 6 && n * 2 <= S_LONG_MAX);
        n *= 2;
    }
    assert_int_equal(s_stop(1), 0);
    s_fake_close(&f);
}

/* Stop once: tasks queued and running are finished and their results sent,
 * a task arriving meanwhile is dropped, then bye, and zb_agent_run
 * returns 0. */
static void test_drain(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "drain");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 3;
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    for (int i = 1; i <= 3; i++)
        s_send_task(&f, (uint64_t)i, s_long + 60 * i, s_long_lens + 60 * i, 60, &o);
    S_WAIT_STAT(taken, 3);
    s_r.stop = 1;
    int64_t end = s_now_ms() + S_WAIT_MS;
    while (!s_stats().draining) {
        assert_true(s_now_ms() < end);
        s_sleep_ms(5);
    }
    s_send_task(&f, 99, s_texts, s_lens, 2, &o);
    bool seen[4] = {0};
    for (int k = 0; k < 3; k++) {
        got_t g;
        s_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh >= 1 && sh <= 3);
        assert_false(seen[sh]);
        seen[sh] = true;
        assert_int_equal(g.m.u.result.vec.count, 60);
        s_got_free(&g);
    }
    got_t g;
    s_expect(&f, ZB_MSG_BYE, &g); /* not a result for 99 */
    s_got_free(&g);
    assert_true(s_wait_done(S_WAIT_MS));
    assert_int_equal(s_r.rc, 0);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.results, 3);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.malformed, 0);
    assert_false(s_next(&f, 200, &g));
    s_fake_close(&f);
}

/* Stop twice while a task computes: zb_agent_run returns ZB_ECANCELED at
 * once, without its result or a bye; zb_agent_destroy waits for the batch
 * and frees everything. */
static void test_second_stop(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "stop2");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    s_send_task(&f, 1, s_long, s_long_lens, 200, &o);
    S_WAIT_STAT(taken, 1);
    assert_int_equal(s_stop(2), ZB_ECANCELED);
    assert_false(s_stats().draining);
    zb_agent_destroy(&s_r.agent);
    assert_null(s_r.agent);
    /* no bye; the result only if it was sent before the stop was seen
     * (the task is sized to make that rare) */
    got_t g;
    int results = 0;
    while (s_next(&f, 300, &g)) {
        assert_int_equal(g.m.type, ZB_MSG_RESULT);
        results++;
        s_got_free(&g);
    }
    printf("second stop: %d result(s) sent before it\n", results);
    assert_true(results <= 1);
    s_fake_close(&f);
}

/* Malformed messages: dropped and counted; the agent serves on, on the
 * same connection and epoch. */
static void test_malformed(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "bad");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    static const uint8_t garbage[] = {0x00, 0x01, 'h', 'i', 0xff, 0x1b, '[', '2', 'J'};
    /* {"v":1,"type":"task","shard":"x","texts":["a"]}: shard is a str */
    static const uint8_t wrong_type[] = {
        0x84, 0xa1, 'v', 0x01, 0xa4, 't', 'y',  'p', 'e', 0xa4, 't', 'a', 's',  'k',  0xa5, 's',
        'h',  'a',  'r', 'd',  0xa1, 'x', 0xa5, 't', 'e', 'x',  't', 's', 0x91, 0xa1, 'a'};
    /* a task whose texts array claims 2^32-1 entries */
    static const uint8_t huge[] = {0x84, 0xa1, 'v',  0x01, 0xa4, 't',  'y', 'p', 'e',
                                   0xa4, 't',  'a',  's',  'k',  0xa5, 's', 'h', 'a',
                                   'r',  'd',  0x01, 0xa5, 't',  'e',  'x', 't', 's',
                                   0xdd, 0xff, 0xff, 0xff, 0xff, 0xa1, 'a'};
    /* a heartbeat of version 2 */
    static const uint8_t v2[] = {0x82, 0xa1, 'v', 0x02, 0xa4, 't', 'y', 'p', 'e', 0xa9,
                                 'h',  'e',  'a', 'r',  't',  'b', 'e', 'a', 't'};
    s_send_raw(&f, garbage, sizeof garbage);
    s_send_raw(&f, "", 0);
    s_send_raw(&f, wrong_type, sizeof wrong_type);
    s_send_raw(&f, huge, sizeof huge);
    s_send_raw(&f, v2, sizeof v2);
    /* a well-formed message a worker does not take */
    zb_msg_ready_t rd = {.name = {"x", 1}, .model = {"m", 1}, .dim = 1, .threads = 1, .credit = 1};
    uint8_t *b;
    size_t len;
    assert_int_equal(zb_msg_encode_ready(&rd, &b, &len, NULL), 0);
    s_send_raw(&f, b, len);
    free(b);
    /* a task cut short, and a task in two frames */
    zb_msg_str_t t1 = {"I love NLP", 10};
    zb_msg_task_t tk = {.shard = 5, .epoch = 1, .texts = &t1, .n_texts = 1};
    assert_int_equal(zb_msg_encode_task(&tk, &b, &len, NULL), 0);
    s_send_raw(&f, b, len - 3);
    assert_true(zmq_send(f.sock, f.id, f.id_len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f.sock, b, len / 2, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f.sock, b + len / 2, len - len / 2, 0) >= 0);
    free(b);
    /* then a good task is served */
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    s_send_task(&f, 7, s_texts, s_lens, 4, &o);
    got_t g;
    s_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 7);
    assert_int_equal(g.m.u.result.epoch, 1);
    assert_memory_equal(g.id, f.id, f.id_len);
    zb_embed_result_t ref[4] = {{0}};
    s_reference(s_texts, s_lens, 4, &o, ref);
    rc_compare(&g.m.u.result.vec, 0, ref, 4, &o, NULL, zb_embed_dim(s_emb), 0, NULL);
    s_free_refs(ref, 4);
    s_got_free(&g);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.malformed, 8);
    assert_int_equal(sx.taken, 1);
    assert_int_equal(sx.dropped, 0);
    assert_int_equal(f.readies, 1);
    assert_int_equal(s_stop(1), 0);
    got_t bye;
    s_expect(&f, ZB_MSG_BYE, &bye);
    s_got_free(&bye);
    assert_int_equal(s_stats().malformed, 8);
    s_fake_close(&f);
}

/*
 * `reconnect` from the broker: ready again on the same connection with
 * epoch 2; tasks of epoch 1 still on their way are dropped as stale (no
 * credit used), one of an epoch never announced is malformed, and epoch 2
 * is served with its whole credit.
 */
static void test_reconnect_message(void **st) {
    (void)st;
    fake_t f;
    s_fake_open(&f, "reconnect");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 2;
    got_t r;
    s_start(&f, &c, &r);
    uint8_t id1[256];
    size_t id1_len = r.id_len;
    memcpy(id1, r.id, id1_len);
    s_got_free(&r);
    s_send_empty(&f, ZB_MSG_RECONNECT);
    s_expect(&f, ZB_MSG_READY, &r);
    assert_int_equal(f.readies, 2);
    assert_int_equal(r.m.u.ready.epoch, 2);
    assert_int_equal(r.id_len, id1_len);
    assert_memory_equal(r.id, id1, id1_len);
    s_got_free(&r);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    s_send_task_in(&f, 1, 1, s_texts, s_lens, 2, &o);
    s_send_task_in(&f, 1, 2, s_texts + 2, s_lens + 2, 2, &o);
    s_send_task_in(&f, 9, 3, s_texts + 4, s_lens + 4, 2, &o);
    s_send_task(&f, 4, s_texts + 6, s_lens + 6, 2, &o);
    s_send_task(&f, 5, s_texts + 8, s_lens + 8, 2, &o);
    for (int k = 0; k < 2; k++) {
        got_t g;
        s_expect(&f, ZB_MSG_RESULT, &g);
        assert_true(g.m.u.result.shard == 4 || g.m.u.result.shard == 5);
        assert_int_equal(g.m.u.result.epoch, 2);
        s_got_free(&g);
    }
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.stale, 2);
    assert_int_equal(sx.malformed, 1);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.taken, 2);
    got_t g;
    assert_false(s_next(&f, 300, &g)); /* nothing for 1, 2, 3 */
    assert_int_equal(s_stop(1), 0);
    s_fake_close(&f);
}

/* A broker silent for dead_ms: the agent reopens its socket (a new routing
 * id) and says ready again with a new epoch, waiting twice as long before
 * the next attempt; served on the new connection once the broker talks. */
static void test_silence_reconnect(void **st) {
    (void)st;
    const int dead = 300;
    fake_t f;
    s_fake_open(&f, "silent");
    f.keepalive = false;
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.dead_ms = dead;
    c.dead_max_ms = 4 * dead;
    got_t r1, r2, r3;
    s_start(&f, &c, &r1);
    int64_t t1 = s_now_ms();
    s_expect(&f, ZB_MSG_READY, &r2);
    s_expect(&f, ZB_MSG_READY, &r3);
    int64_t t3 = s_now_ms();
    assert_int_equal(f.readies, 3);
    assert_int_equal(r2.m.u.ready.epoch, 2);
    assert_int_equal(r3.m.u.ready.epoch, 3);
    assert_false(r2.id_len == r1.id_len && memcmp(r2.id, r1.id, r1.id_len) == 0);
    assert_false(r3.id_len == r2.id_len && memcmp(r3.id, r2.id, r2.id_len) == 0);
    /* dead, then twice dead: at least 3 x dead between the first ready and
     * the third (less the time the first took to arrive: a margin) */
    printf("silence: three readies over %lld ms (dead %d ms)\n", (long long)(t3 - t1), dead);
    assert_true(t3 - t1 >= 3 * dead - 100);
    s_got_free(&r1);
    s_got_free(&r2);
    s_got_free(&r3);
    f.keepalive = true;
    zb_options_t o = {.level = ZB_LEVEL_TOKEN};
    s_send_task(&f, 3, s_texts, s_lens, 5, &o);
    got_t g;
    s_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 3);
    assert_int_equal(g.m.u.result.epoch, f.epoch);
    assert_memory_equal(g.id, f.id, f.id_len);
    s_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    s_fake_close(&f);
}

/* Two brokers: both get ready, each gets the results of its own tasks and
 * its own bye. */
static void test_two_brokers(void **st) {
    (void)st;
    fake_t f1, f2;
    s_fake_open(&f1, "two-a");
    s_fake_open(&f2, "two-b");
    const char *eps[] = {f1.endpoint, f2.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 2);
    s_start(&f1, &c, NULL);
    got_t g;
    s_expect(&f2, ZB_MSG_READY, &g);
    assert_int_equal(g.m.u.ready.epoch, 1);
    s_got_free(&g);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    s_send_task(&f1, 1, s_texts, s_lens, 3, &o);
    s_send_task(&f2, 2, s_texts + 3, s_lens + 3, 4, &o);
    s_expect(&f2, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 2);
    assert_int_equal(g.m.u.result.vec.count, 4);
    s_got_free(&g);
    s_expect(&f1, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 1);
    assert_int_equal(g.m.u.result.vec.count, 3);
    s_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    s_expect(&f1, ZB_MSG_BYE, &g);
    s_got_free(&g);
    s_expect(&f2, ZB_MSG_BYE, &g);
    s_got_free(&g);
    s_fake_close(&f1);
    s_fake_close(&f2);
}

/* Settings that cannot work are refused by zb_agent_new; an endpoint that
 * does not parse, by zb_agent_run; an agent runs once. */
static void test_bad_settings(void **st) {
    (void)st;
    const char *eps[] = {"ipc:///nonexistent/zbert-agent-test.sock"};
    char long_name[ZB_MSG_NAME_BYTES_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    for (int k = 0; k < 11; k++) {
        zb_agent_config_t c;
        s_config(&c, eps, 1);
        switch (k) {
        case 0:
            c.embedder = NULL;
            break;
        case 1:
            c.n_brokers = 0;
            break;
        case 2:
            c.name = "";
            break;
        case 3:
            c.name = long_name;
            break;
        case 4:
            c.name = "bad \xff utf-8";
            break;
        case 5:
            c.credit = ZB_MSG_CREDIT_MAX + 1;
            break;
        case 6:
            c.threads = 0;
            break;
        case 7:
            c.batch_texts = 0;
            break;
        case 8:
            c.heartbeat_ms = 0;
            break;
        case 9:
            c.dead_max_ms = c.dead_ms - 1;
            break;
        case 10:
            c.model = NULL;
            break;
        }
        zb_agent_t *a = NULL;
        zb_diag_t d = {{0}};
        int rc = zb_agent_new(&c, &a, &d);
        printf("bad setting %d: %s\n", k, zb_diag_text(&d, rc));
        assert_int_equal(rc, ZB_EINVAL);
        assert_null(a);
        assert_true(d.msg[0] != '\0');
    }
    assert_int_equal(zb_agent_new(NULL, NULL, NULL), ZB_EINVAL);
    zb_agent_destroy(NULL);

    const char *nonsense[] = {"nonsense://x"};
    zb_agent_config_t c;
    s_config(&c, nonsense, 1);
    s_run(&c);
    assert_true(s_wait_done(S_WAIT_MS));
    assert_int_equal(s_r.rc, ZB_EIO);
    volatile sig_atomic_t stop = 0;
    assert_int_equal(zb_agent_run(s_r.agent, &stop), ZB_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ready, teardown),
        cmocka_unit_test_teardown(test_results_identical, teardown),
        cmocka_unit_test_teardown(test_credit, teardown),
        cmocka_unit_test_teardown(test_heartbeats, teardown),
        cmocka_unit_test_teardown(test_drain, teardown),
        cmocka_unit_test_teardown(test_second_stop, teardown),
        cmocka_unit_test_teardown(test_malformed, teardown),
        cmocka_unit_test_teardown(test_reconnect_message, teardown),
        cmocka_unit_test_teardown(test_silence_reconnect, teardown),
        cmocka_unit_test_teardown(test_two_brokers, teardown),
        cmocka_unit_test_teardown(test_bad_settings, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
