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
 * brokers, settings refused, and CURVE: with keys the agent gets through to
 * a fake serving CURVE (reconnections and per-broker keys included), with
 * a wrong broker key or none the fake hears nothing.
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
#include "embed.h"
#include "fakebroker.h"
#include "fixture.h"
#include "log.h"
#include "msg.h"
#include "model.h"
#include "result_check.h"

#define S_WAIT_MS FB_WAIT_MS /* upper bound for anything expected to happen */
#define S_THREADS 2          /* the agent's and the in-process embedder's */
/* The tests' heartbeat: short, so that a stop is seen soon (the loop looks
 * at it after each poll); silence never reconnects unless a test asks. */
#define S_HEARTBEAT_MS 100
#define S_NEVER_MS     600000

static char s_dir[256];
static void *s_ctx;
static fb_config_t s_fb; /* the fake brokers: heartbeats every 50 ms */
static zb_model_t *s_model;
static zb_embed_t *s_emb;       /* references, in this thread */
static zb_embed_t *s_agent_emb; /* the agent's */
static fx_file_t s_fx;

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
    int64_t end = fb_now_ms() + timeout_ms;
    while (!atomic_load(&s_r.done)) {
        if (fb_now_ms() > end) return false;
        fb_sleep_ms(10);
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

/* Destroys the test's agent once s_stop() returned, for another to run. */
static void s_forget(void) {
    assert_false(s_r.started);
    zb_agent_destroy(&s_r.agent);
    memset(&s_r, 0, sizeof s_r);
}

static zb_agent_stats_t s_stats(void) {
    zb_agent_stats_t st;
    zb_agent_stats(s_r.agent, &st);
    return st;
}

/* Waits until the counter at offset off of the statistics reaches want. */
static void s_wait_stat(size_t off, uint64_t want, const char *what) {
    int64_t end = fb_now_ms() + S_WAIT_MS;
    for (;;) {
        zb_agent_stats_t st = s_stats();
        uint64_t v;
        memcpy(&v, (const char *)&st + off, sizeof v);
        if (v >= want) return;
        if (fb_now_ms() > end) {
            fprintf(stderr, "%s stayed at %llu, not %llu\n", what, (unsigned long long)v,
                    (unsigned long long)want);
            fail();
        }
        fb_sleep_ms(5);
    }
}
#define S_WAIT_STAT(field, want) s_wait_stat(offsetof(zb_agent_stats_t, field), (want), #field)

/* --- the fake broker ------------------------------------------------------- */

/* Runs an agent of c (whose broker is f) and takes its first ready. */
static void s_start(fb_fake_t *f, const zb_agent_config_t *c, fb_got_t *ready) {
    s_run(c);
    fb_got_t g;
    fb_expect(f, ZB_MSG_READY, ready ? ready : &g);
    if (!ready) fb_got_free(&g);
}

/* --- texts ---------------------------------------------------------------------- */

#define S_TEXTS FB_TEXTS
static const char *s_texts[S_TEXTS];
static size_t s_lens[S_TEXTS];
static const char **s_long; /* long texts for heavy tasks */
static size_t *s_long_lens;
#define S_LONG_MAX 4000

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
    s_fb = (fb_config_t){.ctx = s_ctx,
                         .dir = s_dir,
                         .peer = "agent",
                         .heartbeat_ms = 50,
                         .poll_ms = 20,
                         .heartbeat_lenient = true};
    zb_diag_t d = {{0}};
    if (zb_model_open(fx_path("tiny-seed1"), &s_model, &d) != 0) return -1;
    zb_embed_config_t cfg = {.threads = S_THREADS};
    if (zb_embed_new(s_model, &cfg, &s_emb, &d) != 0) return -1;
    if (zb_embed_new(s_model, &cfg, &s_agent_emb, &d) != 0) return -1;
    if (fx_load(fx_path("embeddings-tiny-seed1.txt"), &s_fx) != 0) return -1;
    if (fb_long_texts(S_LONG_MAX, &s_long, &s_long_lens) != 0) return -1;
    return fb_texts(&s_fx, s_long[0], s_long_lens[0], s_texts, s_lens);
}

static int group_teardown(void **st) {
    (void)st;
    zb_embed_destroy(&s_agent_emb);
    zb_embed_destroy(&s_emb);
    zb_model_close(&s_model);
    fx_free(&s_fx);
    fb_long_free(&s_long, &s_long_lens);
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
    fb_close_all();
    return 0;
}

/* --- tests -------------------------------------------------------------------------- */

/* ready: what the agent says about itself; the default credit; a stop
 * with nothing to do is a bye at once. */
static void test_ready(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "ready");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 3;
    c.name = "w-test";
    fb_got_t r;
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
    fb_got_free(&r);
    assert_int_equal(s_stop(1), 0);
    fb_expect(&f, ZB_MSG_BYE, &r);
    fb_got_free(&r);
    zb_agent_stats_t sx = s_stats();
    assert_true(sx.draining);
    assert_int_equal(sx.taken + sx.results + sx.malformed + sx.dropped + sx.stale, 0);
    fb_close(&f);

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
    fb_fake_t f;
    fb_open(&f, &s_fb, "ident");
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
        fb_send_task(&f, 10 + k, s_texts, s_lens, S_TEXTS, &opts[k]);
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        assert_int_equal(g.m.u.result.shard, 10 + k);
        assert_int_equal(g.m.u.result.epoch, 1);
        zb_embed_result_t ref[S_TEXTS] = {{0}};
        zb_embed_stats_t a, b;
        zb_embed_stats(s_emb, &a);
        fb_reference(s_emb, s_texts, s_lens, S_TEXTS, &opts[k], ref);
        zb_embed_stats(s_emb, &b);
        assert_int_equal(g.m.u.result.tokens, b.tokens - a.tokens);
        tokens += g.m.u.result.tokens;
        rc_compare(&g.m.u.result.vec, 0, ref, S_TEXTS, &opts[k], NULL, zb_embed_dim(s_emb), 0,
                   NULL);
        fb_free_refs(ref, S_TEXTS);
        fb_got_free(&g);
    }
    assert_int_equal(s_stop(1), 0);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.taken, n_opts);
    assert_int_equal(sx.results, n_opts);
    assert_int_equal(sx.texts, n_opts * S_TEXTS);
    assert_int_equal(sx.tokens, tokens);
    fb_close(&f);
}

/* Credit: as many tasks as the credit at once, all answered; one more
 * while they are all in flight is dropped unanswered and counted; the
 * credit comes back with the results. */
static void test_credit(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "credit");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 2;
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    /* shard 1 is heavy, so the others arrive while it computes (credit is
     * given back only when a result is collected) */
    fb_send_task(&f, 1, s_long, s_long_lens, 100, &o);
    fb_send_task(&f, 2, s_texts, s_lens, 3, &o);
    fb_send_task(&f, 3, s_texts + 3, s_lens + 3, 3, &o);
    bool seen[3] = {false, false, false};
    for (int k = 0; k < 2; k++) {
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh == 1 || sh == 2);
        assert_false(seen[sh]);
        seen[sh] = true;
        fb_got_free(&g);
    }
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.taken, 2);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.malformed, 1); /* a broker fault */
    /* credit came back: two more are taken */
    fb_send_task(&f, 4, s_texts, s_lens, 2, &o);
    fb_send_task(&f, 5, s_texts + 2, s_lens + 2, 2, &o);
    for (int k = 0; k < 2; k++) {
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        assert_true(g.m.u.result.shard == 4 || g.m.u.result.shard == 5);
        fb_got_free(&g);
    }
    /* nothing for shard 3 */
    fb_got_t g;
    assert_false(fb_next(&f, 300, &g));
    assert_int_equal(s_stop(1), 0);
    sx = s_stats();
    assert_int_equal(sx.taken, 4);
    assert_int_equal(sx.results, 4);
    assert_int_equal(sx.dropped, 1);
    fb_close(&f);
}

/* Heartbeats arrive while idle, and while a task computes. */
static void test_heartbeats(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "hb");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    fb_got_t g;
    /* idle: nothing but heartbeats come */
    int64_t end = fb_now_ms() + S_WAIT_MS;
    while (f.heartbeats < 3 && fb_now_ms() < end) assert_false(fb_next(&f, 50, &g));
    assert_true(f.heartbeats >= 3);

    /* computing: a task sized to run more than 5 heartbeat periods (grown
     * until it does, so the check below always has something to check) */
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    size_t n = 25;
    for (int attempt = 0;; attempt++) {
        int hb0 = f.heartbeats;
        int64_t t0 = fb_now_ms();
        fb_send_task(&f, 100 + (uint64_t)attempt, s_long, s_long_lens, n, &o);
        assert_true(fb_next(&f, 600000, &g));
        int64_t ms = fb_now_ms() - t0;
        assert_int_equal(g.m.type, ZB_MSG_RESULT);
        assert_int_equal(g.m.u.result.vec.count, n);
        fb_got_free(&g);
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
    fb_close(&f);
}

/* Stop once: tasks queued and running are finished and their results sent,
 * a task arriving meanwhile is dropped, then bye, and zb_agent_run
 * returns 0. */
static void test_drain(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "drain");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 3;
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    for (int i = 1; i <= 3; i++)
        fb_send_task(&f, (uint64_t)i, s_long + 60 * i, s_long_lens + 60 * i, 60, &o);
    S_WAIT_STAT(taken, 3);
    s_r.stop = 1;
    int64_t end = fb_now_ms() + S_WAIT_MS;
    while (!s_stats().draining) {
        assert_true(fb_now_ms() < end);
        fb_sleep_ms(5);
    }
    fb_send_task(&f, 99, s_texts, s_lens, 2, &o);
    bool seen[4] = {0};
    for (int k = 0; k < 3; k++) {
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh >= 1 && sh <= 3);
        assert_false(seen[sh]);
        seen[sh] = true;
        assert_int_equal(g.m.u.result.vec.count, 60);
        fb_got_free(&g);
    }
    fb_got_t g;
    fb_expect(&f, ZB_MSG_BYE, &g); /* not a result for 99 */
    fb_got_free(&g);
    assert_true(s_wait_done(S_WAIT_MS));
    assert_int_equal(s_r.rc, 0);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.results, 3);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.malformed, 0);
    assert_false(fb_next(&f, 200, &g));
    fb_close(&f);
}

/* Stop twice while a task computes: zb_agent_run returns ZB_ECANCELED at
 * once, without its result or a bye; zb_agent_destroy waits for the batch
 * and frees everything. */
static void test_second_stop(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "stop2");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    s_start(&f, &c, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    fb_send_task(&f, 1, s_long, s_long_lens, 200, &o);
    S_WAIT_STAT(taken, 1);
    assert_int_equal(s_stop(2), ZB_ECANCELED);
    assert_false(s_stats().draining);
    zb_agent_destroy(&s_r.agent);
    assert_null(s_r.agent);
    /* no bye; the result only if it was sent before the stop was seen
     * (the task is sized to make that rare) */
    fb_got_t g;
    int results = 0;
    while (fb_next(&f, 300, &g)) {
        assert_int_equal(g.m.type, ZB_MSG_RESULT);
        results++;
        fb_got_free(&g);
    }
    printf("second stop: %d result(s) sent before it\n", results);
    assert_true(results <= 1);
    fb_close(&f);
}

/* Malformed messages: dropped and counted; the agent serves on, on the
 * same connection and epoch. */
static void test_malformed(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "bad");
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
    fb_send_raw(&f, garbage, sizeof garbage);
    fb_send_raw(&f, "", 0);
    fb_send_raw(&f, wrong_type, sizeof wrong_type);
    fb_send_raw(&f, huge, sizeof huge);
    fb_send_raw(&f, v2, sizeof v2);
    /* a well-formed message a worker does not take */
    zb_msg_ready_t rd = {.name = {"x", 1}, .model = {"m", 1}, .dim = 1, .threads = 1, .credit = 1};
    uint8_t *b;
    size_t len;
    assert_int_equal(zb_msg_encode_ready(&rd, &b, &len, NULL), 0);
    fb_send_raw(&f, b, len);
    free(b);
    /* a task cut short, and a task in two frames */
    zb_msg_str_t t1 = {"I love NLP", 10};
    zb_msg_task_t tk = {.shard = 5, .epoch = 1, .texts = &t1, .n_texts = 1};
    assert_int_equal(zb_msg_encode_task(&tk, &b, &len, NULL), 0);
    fb_send_raw(&f, b, len - 3);
    assert_true(zmq_send(f.sock, f.id, f.id_len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f.sock, b, len / 2, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(f.sock, b + len / 2, len - len / 2, 0) >= 0);
    free(b);
    /* then a good task is served */
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    fb_send_task(&f, 7, s_texts, s_lens, 4, &o);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 7);
    assert_int_equal(g.m.u.result.epoch, 1);
    assert_memory_equal(g.id, f.id, f.id_len);
    zb_embed_result_t ref[4] = {{0}};
    fb_reference(s_emb, s_texts, s_lens, 4, &o, ref);
    rc_compare(&g.m.u.result.vec, 0, ref, 4, &o, NULL, zb_embed_dim(s_emb), 0, NULL);
    fb_free_refs(ref, 4);
    fb_got_free(&g);
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.malformed, 8);
    assert_int_equal(sx.taken, 1);
    assert_int_equal(sx.dropped, 0);
    assert_int_equal(f.readies, 1);
    assert_int_equal(s_stop(1), 0);
    fb_got_t bye;
    fb_expect(&f, ZB_MSG_BYE, &bye);
    fb_got_free(&bye);
    assert_int_equal(s_stats().malformed, 8);
    fb_close(&f);
}

/*
 * `reconnect` from the broker: ready again on the same connection with
 * epoch 2; tasks of epoch 1 still on their way are dropped as stale (no
 * credit used), one of an epoch never announced is malformed, and epoch 2
 * is served with its whole credit.
 */
static void test_reconnect_message(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "reconnect");
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.credit = 2;
    fb_got_t r;
    s_start(&f, &c, &r);
    uint8_t id1[256];
    size_t id1_len = r.id_len;
    memcpy(id1, r.id, id1_len);
    fb_got_free(&r);
    fb_send_empty(&f, ZB_MSG_RECONNECT);
    fb_expect(&f, ZB_MSG_READY, &r);
    assert_int_equal(f.readies, 2);
    assert_int_equal(r.m.u.ready.epoch, 2);
    assert_int_equal(r.id_len, id1_len);
    assert_memory_equal(r.id, id1, id1_len);
    fb_got_free(&r);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    fb_send_task_in(&f, 1, 1, s_texts, s_lens, 2, &o);
    fb_send_task_in(&f, 1, 2, s_texts + 2, s_lens + 2, 2, &o);
    fb_send_task_in(&f, 9, 3, s_texts + 4, s_lens + 4, 2, &o);
    fb_send_task(&f, 4, s_texts + 6, s_lens + 6, 2, &o);
    fb_send_task(&f, 5, s_texts + 8, s_lens + 8, 2, &o);
    for (int k = 0; k < 2; k++) {
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        assert_true(g.m.u.result.shard == 4 || g.m.u.result.shard == 5);
        assert_int_equal(g.m.u.result.epoch, 2);
        fb_got_free(&g);
    }
    zb_agent_stats_t sx = s_stats();
    assert_int_equal(sx.stale, 2);
    assert_int_equal(sx.malformed, 1);
    assert_int_equal(sx.dropped, 1);
    assert_int_equal(sx.taken, 2);
    fb_got_t g;
    assert_false(fb_next(&f, 300, &g)); /* nothing for 1, 2, 3 */
    assert_int_equal(s_stop(1), 0);
    fb_close(&f);
}

/* A broker silent for dead_ms: the agent reopens its socket (a new routing
 * id) and says ready again with a new epoch, waiting twice as long before
 * the next attempt; served on the new connection once the broker talks. */
static void test_silence_reconnect(void **st) {
    (void)st;
    const int dead = 300;
    fb_fake_t f;
    fb_open(&f, &s_fb, "silent");
    f.keepalive = false;
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.dead_ms = dead;
    c.dead_max_ms = 4 * dead;
    fb_got_t r1, r2, r3;
    s_start(&f, &c, &r1);
    int64_t t1 = fb_now_ms();
    fb_expect(&f, ZB_MSG_READY, &r2);
    fb_expect(&f, ZB_MSG_READY, &r3);
    int64_t t3 = fb_now_ms();
    assert_int_equal(f.readies, 3);
    assert_int_equal(r2.m.u.ready.epoch, 2);
    assert_int_equal(r3.m.u.ready.epoch, 3);
    assert_false(r2.id_len == r1.id_len && memcmp(r2.id, r1.id, r1.id_len) == 0);
    assert_false(r3.id_len == r2.id_len && memcmp(r3.id, r2.id, r2.id_len) == 0);
    /* dead, then twice dead: at least 3 x dead between the first ready and
     * the third (less the time the first took to arrive: a margin) */
    printf("silence: three readies over %lld ms (dead %d ms)\n", (long long)(t3 - t1), dead);
    assert_true(t3 - t1 >= 3 * dead - 100);
    fb_got_free(&r1);
    fb_got_free(&r2);
    fb_got_free(&r3);
    f.keepalive = true;
    zb_options_t o = {.level = ZB_LEVEL_TOKEN};
    fb_send_task(&f, 3, s_texts, s_lens, 5, &o);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 3);
    assert_int_equal(g.m.u.result.epoch, f.epoch);
    assert_memory_equal(g.id, f.id, f.id_len);
    fb_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    fb_close(&f);
}

/* Two brokers: both get ready, each gets the results of its own tasks and
 * its own bye. */
static void test_two_brokers(void **st) {
    (void)st;
    fb_fake_t f1, f2;
    fb_open(&f1, &s_fb, "two-a");
    fb_open(&f2, &s_fb, "two-b");
    const char *eps[] = {f1.endpoint, f2.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 2);
    s_start(&f1, &c, NULL);
    fb_got_t g;
    fb_expect(&f2, ZB_MSG_READY, &g);
    assert_int_equal(g.m.u.ready.epoch, 1);
    fb_got_free(&g);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    fb_send_task(&f1, 1, s_texts, s_lens, 3, &o);
    fb_send_task(&f2, 2, s_texts + 3, s_lens + 3, 4, &o);
    fb_expect(&f2, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 2);
    assert_int_equal(g.m.u.result.vec.count, 4);
    fb_got_free(&g);
    fb_expect(&f1, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 1);
    assert_int_equal(g.m.u.result.vec.count, 3);
    fb_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    fb_expect(&f1, ZB_MSG_BYE, &g);
    fb_got_free(&g);
    fb_expect(&f2, ZB_MSG_BYE, &g);
    fb_got_free(&g);
    fb_close(&f1);
    fb_close(&f2);
}

/* CURVE: with its key pair and the fake's public key, the agent's ready
 * arrives and a task is served; after a reconnection (silence) the new
 * socket gets the keys too; two brokers with their own keys are both
 * served.  With another broker key, or without CURVE, the fake hears
 * nothing at all (not even a heartbeat). */
static void test_curve(void **st) {
    (void)st;
    zb_curve_cert_t server, server2, worker, other;
    assert_int_equal(zb_curve_keypair(&server, "broker", NULL), 0);
    assert_int_equal(zb_curve_keypair(&server2, "broker2", NULL), 0);
    assert_int_equal(zb_curve_keypair(&worker, "worker", NULL), 0);
    assert_int_equal(zb_curve_keypair(&other, "other", NULL), 0);
    fb_fake_t f;
    fb_open_curve(&f, &s_fb, "curve", &server);
    const char *eps[] = {f.endpoint};
    zb_agent_config_t c;
    s_config(&c, eps, 1);
    c.curve = &worker;
    c.broker_certs = &server;
    c.n_broker_certs = 1;
    c.dead_ms = 300;
    c.dead_max_ms = 300;
    fb_got_t r;
    s_start(&f, &c, &r);
    assert_int_equal(r.m.u.ready.epoch, 1);
    fb_got_free(&r);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    fb_send_task(&f, 1, s_texts, s_lens, 3, &o);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 1);
    assert_int_equal(g.m.u.result.vec.count, 3);
    fb_got_free(&g);
    /* silence: the reopened socket has the keys as well */
    f.keepalive = false;
    fb_expect(&f, ZB_MSG_READY, &r);
    assert_int_equal(r.m.u.ready.epoch, 2);
    fb_got_free(&r);
    f.keepalive = true;
    fb_send_task(&f, 2, s_texts, s_lens, 2, &o);
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 2);
    fb_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    fb_expect(&f, ZB_MSG_BYE, &g);
    fb_got_free(&g);
    s_forget();
    fb_close(&f);

    /* another broker key: the handshake never completes; the agent keeps
     * reconnecting (with the same wrong key) and the fake hears nothing */
    fb_open_curve(&f, &s_fb, "curve-wrong", &server);
    eps[0] = f.endpoint;
    c.broker_certs = &other;
    s_run(&c);
    assert_false(fb_next(&f, 1500, &g));
    assert_int_equal(f.readies + f.heartbeats, 0);
    assert_int_equal(s_stop(2), ZB_ECANCELED);
    s_forget();
    /* no CURVE at all against a CURVE broker: nothing either */
    zb_agent_config_t plain;
    s_config(&plain, eps, 1);
    s_run(&plain);
    assert_false(fb_next(&f, 1000, &g));
    assert_int_equal(f.readies + f.heartbeats, 0);
    assert_int_equal(s_stop(2), ZB_ECANCELED);
    s_forget();
    fb_close(&f);

    /* one key per broker, in the order of the brokers */
    fb_fake_t f1, f2;
    fb_open_curve(&f1, &s_fb, "curve-a", &server);
    fb_open_curve(&f2, &s_fb, "curve-b", &server2);
    const char *eps2[] = {f1.endpoint, f2.endpoint};
    const zb_curve_cert_t both[] = {server, server2};
    s_config(&c, eps2, 2);
    c.curve = &worker;
    c.broker_certs = both;
    c.n_broker_certs = 2;
    s_start(&f1, &c, NULL);
    fb_expect(&f2, ZB_MSG_READY, &g);
    fb_got_free(&g);
    fb_send_task(&f2, 3, s_texts, s_lens, 2, &o);
    fb_expect(&f2, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 3);
    fb_got_free(&g);
    assert_int_equal(s_stop(1), 0);
    fb_close(&f1);
    fb_close(&f2);
    explicit_bzero(&worker, sizeof worker);
}

/* Settings that cannot work are refused by zb_agent_new; an endpoint that
 * does not parse, by zb_agent_run; an agent runs once. */
static void test_bad_settings(void **st) {
    (void)st;
    const char *eps[] = {"ipc:///nonexistent/zbert-agent-test.sock"};
    char long_name[ZB_MSG_NAME_BYTES_MAX + 2];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    zb_curve_cert_t pair, pub;
    assert_int_equal(zb_curve_keypair(&pair, "w", NULL), 0);
    pub = pair;
    pub.has_secret = false;
    const zb_curve_cert_t two[] = {pub, pub};
    for (int k = 0; k < 16; k++) {
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
        case 11: /* CURVE without the brokers' keys */
            c.curve = &pair;
            break;
        case 12: /* the brokers' keys without a key pair */
            c.broker_certs = &pub;
            c.n_broker_certs = 1;
            break;
        case 13: /* a key pair without its secret */
            c.curve = &pub;
            c.broker_certs = &pub;
            c.n_broker_certs = 1;
            break;
        case 14: /* two broker keys for one broker */
            c.curve = &pair;
            c.broker_certs = two;
            c.n_broker_certs = 2;
            break;
        case 15: /* a count without keys */
            c.curve = &pair;
            c.n_broker_certs = 1;
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
        cmocka_unit_test_teardown(test_curve, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
