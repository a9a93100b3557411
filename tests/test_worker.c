/*
 * test_worker.c -- bin/zbert-worker as a broker sees it.  The real program
 * ($ZB_BIN/zbert-worker, default bin) runs tests/fixtures/tiny-seed1 against
 * a fake broker: a ROUTER socket in this process speaking proto/msg.h
 * over ipc:// in a temporary directory.  Checked: `ready` (name, model
 * identity, dim, threads, credit, epoch), results bit-identical to an
 * in-process engine run, credit, epochs (tasks of an earlier epoch dropped,
 * credit counted per epoch), heartbeats while idle and while a long task
 * computes, draining on SIGTERM, malformed messages, reconnection after
 * silence and on `reconnect`, two brokers, CURVE (key files given as
 * settings; files it cannot use refused at start with the file named).
 *
 * Every worker started is registered and killed (SIGKILL, then waited for)
 * in the test's teardown and again at exit, whatever failed.  Waits have
 * generous timeouts; no assertion depends on how fast the machine is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "embed.h"
#include "fakebroker.h"
#include "fixture.h"
#include "msg.h"
#include "model.h"
#include "result_check.h"

#define S_WAIT_MS FB_WAIT_MS /* upper bound for anything expected to happen */
#define S_THREADS "2"        /* the worker's and the in-process embedder's */

static char s_dir[256];
static void *s_ctx;
static fb_config_t s_fb; /* the fake brokers: heartbeats every 500 ms */
static zb_model_t *s_model;
static zb_embed_t *s_emb;
static fx_file_t s_fx;
static pid_t s_children[32];
static char s_child_logs[32][300];
static int s_n_children;

/* --- processes ------------------------------------------------------------ */

static void s_kill_children(void) {
    for (int i = 0; i < s_n_children; i++) {
        if (s_children[i] <= 0) continue;
        kill(s_children[i], SIGKILL);
        waitpid(s_children[i], NULL, 0);
        s_children[i] = 0;
    }
    s_n_children = 0;
}

static const char *s_bin(void) {
    const char *b = getenv("ZB_BIN");
    return b && *b ? b : "bin";
}

/* Starts the worker with the common arguments, args (NULL-terminated)
 * after them, stderr into log. */
static pid_t s_spawn(const char *log, const char *const *args) {
    char prog[512];
    snprintf(prog, sizeof prog, "%s/zbert-worker", s_bin());
    const char *argv[40] = {prog, "--model", fx_path("tiny-seed1"), "--threads", S_THREADS};
    int n = 5;
    for (int i = 0; args[i] && n < 38; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char *model = strdup(argv[2]); /* fx_path's buffer is static */
    argv[2] = model;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
        }
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    free(model);
    assert_true(s_n_children < 32);
    snprintf(s_child_logs[s_n_children], sizeof s_child_logs[0], "%s", log);
    s_children[s_n_children++] = pid;
    return pid;
}

/* Waits for pid to exit; returns its status, or -1 after timeout_ms. */
static int s_wait_exit(pid_t pid, int timeout_ms) {
    int64_t end = fb_now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            for (int i = 0; i < s_n_children; i++)
                if (s_children[i] == pid) s_children[i] = 0;
            return st;
        }
        if (fb_now_ms() > end) return -1;
        fb_sleep_ms(20);
    }
}

static bool s_alive(pid_t pid) {
    return waitpid(pid, NULL, WNOHANG) == 0;
}

/* Lines of the log holding all of the given words. */
static int s_log_count(const char *log, const char *w1, const char *w2) {
    size_t len;
    char *data = fx_read_file(log, &len);
    if (data == NULL) return 0;
    int n = 0;
    for (char *p = data, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (nl == NULL) break;
        *nl = '\0';
        if (strstr(p, w1) && (w2 == NULL || strstr(p, w2))) n++;
    }
    free(data);
    return n;
}

/* Waits until the log has a line with w1 (and w2). */
static void s_wait_log(const char *log, const char *w1, const char *w2) {
    int64_t end = fb_now_ms() + S_WAIT_MS;
    while (s_log_count(log, w1, w2) == 0) {
        if (fb_now_ms() > end) {
            fprintf(stderr, "log %s never said '%s' '%s'\n", log, w1, w2 ? w2 : "");
            fail();
        }
        fb_sleep_ms(20);
    }
}

static void s_print_log(const char *log) {
    size_t len;
    char *data = fx_read_file(log, &len);
    if (data) fprintf(stderr, "--- worker log %s:\n%s---\n", log, data);
    free(data);
}

/* --- the fake broker ------------------------------------------------------- */

/* Starts a worker on f (extra args NULL-terminated) and takes its ready. */
static pid_t s_start(fb_fake_t *f, const char *const *extra, fb_got_t *ready) {
    const char *args[32] = {"--broker", f->endpoint};
    int n = 2;
    for (int i = 0; extra && extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    pid_t pid = s_spawn(f->log, args);
    fb_got_t g;
    fb_expect(f, ZB_MSG_READY, ready ? ready : &g);
    if (!ready) fb_got_free(&g);
    return pid;
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
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-worker-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    atexit(s_kill_children);
    s_ctx = zmq_ctx_new();
    s_fb = (fb_config_t){
        .ctx = s_ctx, .dir = s_dir, .peer = "worker", .heartbeat_ms = 500, .poll_ms = 100};
    zb_diag_t d = {{0}};
    if (zb_model_open(fx_path("tiny-seed1"), &s_model, &d) != 0) return -1;
    zb_embed_config_t cfg = {.threads = atoi(S_THREADS)};
    if (zb_embed_new(s_model, &cfg, &s_emb, &d) != 0) return -1;
    if (fx_load(fx_path("embeddings-tiny-seed1.txt"), &s_fx) != 0) return -1;
    if (fb_long_texts(S_LONG_MAX, &s_long, &s_long_lens) != 0) return -1;
    return fb_texts(&s_fx, s_long[0], s_long_lens[0], s_texts, s_lens);
}

static int group_teardown(void **st) {
    (void)st;
    s_kill_children();
    zb_embed_destroy(&s_emb);
    zb_model_close(&s_model);
    fx_free(&s_fx);
    fb_long_free(&s_long, &s_long_lens);
    zmq_ctx_term(s_ctx);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Ends the workers started so far the way an operator does (SIGTERM:
 * drain and exit), so that sanitizer builds check the whole life of the
 * process, leaks included; then no log may hold a sanitizer report.
 * Returns 0, or -1 when one did not exit 0 or reported something. */
static int s_end_children(void) {
    int bad = 0;
    for (int i = 0; i < s_n_children; i++) {
        pid_t pid = s_children[i];
        if (pid > 0) {
            kill(pid, SIGTERM);
            int status = s_wait_exit(pid, S_WAIT_MS);
            if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "worker %ld did not drain and exit 0 (status %d)\n", (long)pid,
                        status);
                bad = 1;
            }
        }
        const char *log = s_child_logs[i];
        if (s_log_count(log, "Sanitizer", NULL) || s_log_count(log, "runtime error:", NULL)) {
            s_print_log(log);
            bad = 1;
        }
    }
    s_kill_children();
    return bad ? -1 : 0;
}

static int teardown(void **st) {
    (void)st;
    int rc = s_end_children();
    fb_close_all();
    return rc;
}

/* --- tests -------------------------------------------------------------------------- */

/* ready: what the worker says about itself. */
static void test_ready(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "ready");
    fb_got_t r;
    s_start(&f, (const char *[]){"--credit", "3", "--name", "w-test", NULL}, &r);
    const zb_msg_ready_t *m = &r.m.u.ready;
    assert_int_equal(m->name.len, 6);
    assert_memory_equal(m->name.ptr, "w-test", 6);
    const char *id = zb_model_identity(s_model);
    assert_int_equal(m->model.len, strlen(id));
    assert_memory_equal(m->model.ptr, id, m->model.len);
    assert_int_equal(m->dim, zb_embed_dim(s_emb));
    assert_int_equal(m->threads, 2);
    assert_int_equal(m->credit, 3);
    assert_int_equal(m->epoch, 1); /* the first announcement */
    fb_got_free(&r);
    assert_int_equal(s_end_children(), 0);

    /* default credit: twice what one run holds (batch-texts / 64 shards),
     * the name host:pid */
    fb_close(&f);
    fb_open(&f, &s_fb, "ready2");
    pid_t pid = s_start(&f, (const char *[]){"--batch-texts", "200", NULL}, &r);
    assert_int_equal(r.m.u.ready.credit, 8);
    char pidpart[32];
    int k = snprintf(pidpart, sizeof pidpart, ":%ld", (long)pid);
    assert_true(r.m.u.ready.name.len > (size_t)k);
    assert_memory_equal(r.m.u.ready.name.ptr + r.m.u.ready.name.len - (size_t)k, pidpart,
                        (size_t)k);
    fb_got_free(&r);
    assert_int_equal(s_end_children(), 0);
    fb_close(&f);
    fb_open(&f, &s_fb, "ready3");
    s_start(&f, NULL, &r);
    assert_int_equal(r.m.u.ready.credit, 2);
    fb_got_free(&r);
    fb_close(&f);
}

/* Results: bit-identical to the engine run in process, every level. */
static void test_results_identical(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "ident");
    s_start(&f, NULL, NULL);
    const zb_options_t opts[] = {
        {.level = ZB_LEVEL_TOKEN},
        {.level = ZB_LEVEL_WORDPIECE, .windows = true},
        {.level = ZB_LEVEL_WORDPIECE},
        {.level = ZB_LEVEL_SENTENCE, .pooling = ZB_POOLING_MEAN, .normalize = true},
        {.level = ZB_LEVEL_SENTENCE},
    };
    for (size_t k = 0; k < sizeof opts / sizeof *opts; k++) {
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
        rc_compare(&g.m.u.result.vec, 0, ref, S_TEXTS, &opts[k], NULL, zb_embed_dim(s_emb), 0,
                   NULL);
        fb_free_refs(ref, S_TEXTS);
        fb_got_free(&g);
    }
    fb_close(&f);
}

/* Credit: as many tasks as the credit at once, all answered; one more
 * while they are all in flight is dropped, and said so. */
static void test_credit(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "credit");
    pid_t pid = s_start(&f, (const char *[]){"--credit", "4", NULL}, NULL);
    zb_options_t o = {.level = ZB_LEVEL_WORDPIECE};
    /* shard 1 is heavy, so all five arrive while it computes */
    fb_send_task(&f, 1, s_long, s_long_lens, 100, &o);
    for (int i = 2; i <= 5; i++)
        fb_send_task(&f, (uint64_t)i, s_texts + 3 * i, s_lens + 3 * i, 3, &o);
    fb_got_t res[5];
    bool seen[5] = {0};
    for (int k = 0; k < 4; k++) {
        fb_got_t g;
        fb_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh >= 1 && sh <= 4);
        assert_false(seen[sh]);
        seen[sh] = true;
        res[sh] = g;
    }
    assert_int_equal(s_log_count(f.log, "beyond the credit", NULL), 1);
    assert_true(s_alive(pid));
    /* credit came back: the next task is taken */
    fb_send_task(&f, 6, s_texts, s_lens, 2, &o);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 6);
    fb_got_free(&g);
    fb_close(&f);

    /* (compared last: the fake broker does not heartbeat meanwhile) */
    double worst = 0;
    for (uint64_t sh = 1; sh <= 4; sh++) {
        /* merged runs may batch differently from a run alone: spans
         * exact, vectors to float rounding */
        const char *const *t = sh == 1 ? s_long : s_texts + 3 * sh;
        const size_t *l = sh == 1 ? s_long_lens : s_lens + 3 * sh;
        size_t n = sh == 1 ? 100 : 3;
        zb_embed_result_t *ref = calloc(n, sizeof *ref);
        fb_reference(s_emb, t, l, n, &o, ref);
        double md;
        rc_compare(&res[sh].m.u.result.vec, 0, ref, n, &o, NULL, zb_embed_dim(s_emb), 1e-5, &md);
        if (md > worst) worst = md;
        fb_free_refs(ref, n);
        free(ref);
        fb_got_free(&res[sh]);
    }
    printf("credit: results vs runs alone: max abs diff %.3g\n", worst);
}

/* Heartbeats arrive while idle, and while a task computes for seconds. */
static void test_heartbeats(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "hb");
    s_start(&f, NULL, NULL);
    fb_got_t g;
    /* idle: nothing but heartbeats come */
    int64_t end = fb_now_ms() + S_WAIT_MS;
    while (f.heartbeats < 2 && fb_now_ms() < end) {
        assert_false(fb_next(&f, 200, &g));
    }
    assert_true(f.heartbeats >= 2);

    /* computing: a task sized to run more than 2.5 s (grown until it does,
     * so the check below always has something to check) */
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    size_t n = 100;
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
        if (ms > 2500) {
            assert_true(hb >= 1);
            break;
        }
        assert_true(attempt < 4 && n * 2 <= S_LONG_MAX);
        n *= 2;
    }
    fb_close(&f);
}

/* SIGTERM with tasks in flight: their results, then bye, then exit 0; a
 * task sent while draining is not taken. */
static void test_drain(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "drain");
    pid_t pid = s_start(&f, (const char *[]){"--credit", "3", "--log-level", "debug", NULL}, NULL);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    for (int i = 1; i <= 3; i++)
        fb_send_task(&f, (uint64_t)i, s_long + 60 * i, s_long_lens + 60 * i, 60, &o);
    s_wait_log(f.log, "shard 3 queued", NULL);
    assert_int_equal(kill(pid, SIGTERM), 0);
    s_wait_log(f.log, "draining", NULL);
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
    int status = s_wait_exit(pid, S_WAIT_MS);
    if (status == -1) s_print_log(f.log);
    assert_true(status != -1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(s_log_count(f.log, "shard 99 dropped", NULL), 1);
    fb_close(&f);
}

/* Malformed messages: dropped, counted, logged once; the worker serves on. */
static void test_malformed(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "bad");
    pid_t pid = s_start(&f, NULL, NULL);
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
    zb_msg_task_t tk = {.shard = 5, .texts = &t1, .n_texts = 1};
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
    zb_embed_result_t ref[4] = {{0}};
    fb_reference(s_emb, s_texts, s_lens, 4, &o, ref);
    rc_compare(&g.m.u.result.vec, 0, ref, 4, &o, NULL, zb_embed_dim(s_emb), 0, NULL);
    fb_free_refs(ref, 4);
    fb_got_free(&g);
    assert_true(s_alive(pid));
    /* logged once at warn, with a sanitised sample (no raw control bytes) */
    assert_int_equal(s_log_count(f.log, "warn:", "dropped a message"), 1);
    assert_int_equal(s_log_count(f.log, "\\x1b[2J", NULL), 1);
    assert_int_equal(s_log_count(f.log, "\x1b", NULL), 0);
    /* counted: reported at exit */
    kill(pid, SIGTERM);
    fb_got_t bye;
    fb_expect(&f, ZB_MSG_BYE, &bye);
    fb_got_free(&bye);
    assert_true(s_wait_exit(pid, S_WAIT_MS) != -1);
    assert_int_equal(s_log_count(f.log, "8 malformed message(s)", NULL), 1);
    fb_close(&f);
}

/* A broker silent for 3 s: the worker reopens its socket (a new routing
 * id) and says ready again; served on the new connection. */
static void test_silence_reconnect(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "silent");
    f.keepalive = false;
    fb_got_t r1;
    s_start(&f, NULL, &r1);
    uint8_t id1[256];
    size_t id1_len = r1.id_len;
    memcpy(id1, r1.id, id1_len);
    fb_got_free(&r1);
    fb_got_t r2;
    fb_expect(&f, ZB_MSG_READY, &r2);
    assert_int_equal(f.readies, 2);
    assert_false(r2.id_len == id1_len && memcmp(r2.id, id1, id1_len) == 0);
    assert_int_equal(r2.m.u.ready.epoch, 2);
    fb_got_free(&r2);
    f.keepalive = true;
    zb_options_t o = {.level = ZB_LEVEL_TOKEN};
    fb_send_task(&f, 3, s_texts, s_lens, 5, &o);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_RESULT, &g);
    assert_int_equal(g.m.u.result.shard, 3);
    assert_memory_equal(g.id, f.id, f.id_len);
    fb_got_free(&g);
    fb_close(&f);
}

/* `reconnect` from the broker: ready again on the same connection. */
static void test_reconnect_message(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "reconnect");
    s_start(&f, NULL, NULL);
    fb_send_empty(&f, ZB_MSG_RECONNECT);
    fb_got_t r;
    fb_expect(&f, ZB_MSG_READY, &r);
    assert_int_equal(f.readies, 2);
    assert_int_equal(r.m.u.ready.epoch, 2);
    fb_got_free(&r);
    fb_close(&f);
}

/*
 * Epochs: after a second ready on the same connection, tasks of the first
 * epoch still on their way are dropped without using credit; the new epoch
 * gets its full credit; a task beyond it is dropped unanswered and logged
 * at warn; results of the first epoch are not sent; a task of an epoch the
 * worker never announced is malformed.
 */
static void test_epochs(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "epochs");
    s_start(&f, (const char *[]){"--credit", "2", "--log-level", "debug", NULL}, NULL);
    assert_int_equal(f.epoch, 1);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    /* epoch 1: a heavy task that keeps the compute thread busy through
     * what follows, and one queued behind it */
    fb_send_task(&f, 1, s_long, s_long_lens, 100, &o);
    fb_send_task(&f, 2, s_texts, s_lens, 3, &o);
    s_wait_log(f.log, "shard 2 queued", NULL);
    fb_send_empty(&f, ZB_MSG_RECONNECT);
    fb_got_t g;
    fb_expect(&f, ZB_MSG_READY, &g);
    assert_int_equal(g.m.u.ready.epoch, 2);
    fb_got_free(&g);
    /* tasks the broker sent before it read that ready: stale */
    fb_send_task_in(&f, 1, 3, s_texts + 3, s_lens + 3, 2, &o);
    fb_send_task_in(&f, 1, 4, s_texts + 5, s_lens + 5, 2, &o);
    /* epoch 2: its whole credit, then one too many, then a future epoch */
    fb_send_task(&f, 5, s_texts + 7, s_lens + 7, 2, &o);
    fb_send_task(&f, 6, s_texts + 9, s_lens + 9, 2, &o);
    fb_send_task(&f, 7, s_texts + 11, s_lens + 11, 2, &o);
    fb_send_task_in(&f, 9, 8, s_texts + 13, s_lens + 13, 2, &o);
    bool seen[2] = {false, false};
    for (int k = 0; k < 2; k++) {
        fb_expect(&f, ZB_MSG_RESULT, &g);
        uint64_t sh = g.m.u.result.shard;
        assert_true(sh == 5 || sh == 6);
        assert_false(seen[sh - 5]);
        seen[sh - 5] = true;
        assert_int_equal(g.m.u.result.epoch, 2);
        assert_int_equal(g.m.u.result.vec.count, 2);
        fb_got_free(&g);
    }
    /* the heavy task ran before them: its result was not sent */
    assert_int_equal(s_log_count(f.log, "shard 1: result dropped", NULL), 1);
    assert_int_equal(s_log_count(f.log, "shard 3 of epoch 1 dropped", NULL), 1);
    assert_int_equal(s_log_count(f.log, "shard 4 of epoch 1 dropped", NULL), 1);
    assert_int_equal(s_log_count(f.log, "warn:", "shard 7 of epoch 2 is beyond the credit"), 1);
    assert_int_equal(s_log_count(f.log, "warn:", "epoch 9, which we never announced"), 1);
    assert_int_equal(s_log_count(f.log, "shard 2 queued", NULL), 1);
    assert_int_equal(s_log_count(f.log, "shard 7 queued", NULL), 0);
    /* credit came back within epoch 2: two more are taken */
    fb_send_task(&f, 10, s_texts, s_lens, 1, &o);
    fb_send_task(&f, 11, s_texts + 1, s_lens + 1, 1, &o);
    for (int k = 0; k < 2; k++) {
        fb_expect(&f, ZB_MSG_RESULT, &g);
        assert_true(g.m.u.result.shard == 10 || g.m.u.result.shard == 11);
        assert_int_equal(g.m.u.result.epoch, 2);
        fb_got_free(&g);
    }
    /* nothing else comes: not 1 to 4, not 7, not 8 */
    assert_false(fb_next(&f, 500, &g));
    fb_close(&f);
}

/* Two brokers: both get ready, each gets the results of its own tasks. */
static void test_two_brokers(void **st) {
    (void)st;
    fb_fake_t f1, f2;
    fb_open(&f1, &s_fb, "two-a");
    fb_open(&f2, &s_fb, "two-b");
    s_start(&f1, (const char *[]){"--broker", f2.endpoint, NULL}, NULL);
    fb_got_t g;
    fb_expect(&f2, ZB_MSG_READY, &g);
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
    fb_close(&f1);
    fb_close(&f2);
}

/* Settings from a config file and ZBERT_* variables; the command line
 * wins over both, the environment over the file.  The example config
 * documenting the keys is itself a valid config. */
static void test_config(void **st) {
    (void)st;
    fb_fake_t f;
    fb_open(&f, &s_fb, "config");
    char path[300];
    snprintf(path, sizeof path, "%s/worker.conf", s_dir);
    FILE *c = fopen(path, "w");
    assert_non_null(c);
    fprintf(c, "# test\nbroker = %s\ncredit = 5\nname = from-file\nbatch-texts = 7\n", f.endpoint);
    assert_int_equal(fclose(c), 0);
    assert_int_equal(setenv("ZBERT_NAME", "from-env", 1), 0);
    fb_got_t r;
    /* s_start adds --broker: the file's broker is overridden by the same */
    s_start(&f, (const char *[]){"--config", path, NULL}, &r);
    unsetenv("ZBERT_NAME");
    assert_int_equal(r.m.u.ready.credit, 5);
    assert_int_equal(r.m.u.ready.name.len, 8);
    assert_memory_equal(r.m.u.ready.name.ptr, "from-env", 8);
    fb_got_free(&r);
    assert_int_equal(s_end_children(), 0);

    fb_close(&f);
    fb_open(&f, &s_fb, "config2");
    s_start(&f,
            (const char *[]){"--config", "deploy/zbert-worker.conf.example", "--name", "cli", NULL},
            &r);
    assert_int_equal(r.m.u.ready.credit, 2);
    assert_int_equal(r.m.u.ready.name.len, 3);
    assert_memory_equal(r.m.u.ready.name.ptr, "cli", 3);
    fb_got_free(&r);
    fb_close(&f);
}

/* Settings that cannot work are refused at start, with a message. */
static void test_bad_settings(void **st) {
    (void)st;
    char log[300];
    snprintf(log, sizeof log, "%s/bad-settings.log", s_dir);
    const char *const cases[][4] = {
        {"--threads", "0", NULL},
        {"--credit", "5000", NULL},
        {"--broker", "nonsense://x", NULL},
        {"--log-level", "loud", NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        pid_t pid = s_spawn(log, cases[k]);
        int status = s_wait_exit(pid, S_WAIT_MS);
        assert_true(status != -1 && WIFEXITED(status));
        assert_true(WEXITSTATUS(status) != 0);
        size_t len;
        char *text = fx_read_file(log, &len);
        assert_non_null(text);
        assert_true(len > 0);
        free(text);
    }
}

/* CURVE from the command line and the environment: the worker's ready
 * reaches a fake that serves CURVE; key files it cannot use stop it at
 * start (exit 2) with a sentence naming the file, before the model is
 * mapped. */
static void test_curve(void **st) {
    (void)st;
    zb_curve_cert_t server, worker;
    zb_diag_t d = {{0}};
    char base[300], wkey[320], wpub[320], bpub[320], bad[320];
    snprintf(base, sizeof base, "%s/broker", s_dir);
    assert_int_equal(zb_curve_keypair(&server, "broker", &d), 0);
    assert_int_equal(zb_curve_save(base, &server, &d), 0);
    snprintf(base, sizeof base, "%s/worker", s_dir);
    assert_int_equal(zb_curve_keypair(&worker, "worker", &d), 0);
    assert_int_equal(zb_curve_save(base, &worker, &d), 0);
    snprintf(wkey, sizeof wkey, "%s/worker.key", s_dir);
    snprintf(wpub, sizeof wpub, "%s/worker.pub", s_dir);
    snprintf(bpub, sizeof bpub, "%s/broker.pub", s_dir);
    fb_fake_t f;
    fb_open_curve(&f, &s_fb, "curve", &server);
    fb_got_t r;
    s_start(&f, (const char *[]){"--curve-key", wkey, "--broker-key", bpub, NULL}, &r);
    assert_int_equal(r.m.u.ready.epoch, 1);
    fb_got_free(&r);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    fb_send_task(&f, 1, s_texts, s_lens, 2, &o);
    fb_expect(&f, ZB_MSG_RESULT, &r);
    assert_int_equal(r.m.u.result.shard, 1);
    fb_got_free(&r);
    s_wait_log(f.log, "public key is", NULL);
    assert_int_equal(s_end_children(), 0);
    fb_close(&f);
    /* the same through ZBERT_CURVE_KEY and ZBERT_BROKER_KEY */
    fb_open_curve(&f, &s_fb, "curve-env", &server);
    assert_int_equal(setenv("ZBERT_CURVE_KEY", wkey, 1), 0);
    assert_int_equal(setenv("ZBERT_BROKER_KEY", bpub, 1), 0);
    s_start(&f, NULL, &r);
    unsetenv("ZBERT_CURVE_KEY");
    unsetenv("ZBERT_BROKER_KEY");
    fb_got_free(&r);
    assert_int_equal(s_end_children(), 0);
    fb_close(&f);

    /* refused at start */
    char log[300];
    snprintf(log, sizeof log, "%s/curve-bad.log", s_dir);
    snprintf(bad, sizeof bad, "%s/missing.key", s_dir);
    char open_key[320];
    snprintf(open_key, sizeof open_key, "%s/open.key", s_dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp %s %s && chmod 644 %s", wkey, open_key, open_key);
    assert_int_equal(system(cmd), 0);
    const struct {
        const char *args[6];
        const char *says; /* in the message besides the program's name */
    } cases[] = {
        {{"--curve-key", bad, "--broker-key", bpub, NULL}, bad},
        {{"--curve-key", open_key, "--broker-key", bpub, NULL}, "chmod 600"},
        {{"--curve-key", wpub, "--broker-key", bpub, NULL}, "no curve secret-key"},
        {{"--curve-key", wkey, "--broker-key", s_dir, NULL}, s_dir},
        {{"--curve-key", wkey, NULL}, "--broker-key"},
        {{"--broker-key", bpub, NULL}, "--curve-key"},
        {{"--curve-key", wkey, "--broker-key", bpub, "--broker-key", NULL}, "needs a value"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        pid_t pid = s_spawn(log, cases[k].args);
        int status = s_wait_exit(pid, S_WAIT_MS);
        assert_true(status != -1 && WIFEXITED(status));
        if (WEXITSTATUS(status) != 2 || s_log_count(log, cases[k].says, NULL) != 1) {
            s_print_log(log);
            fail_msg("case %zu: exit %d, expected 2 and a line with '%s'", k, WEXITSTATUS(status),
                     cases[k].says);
        }
        /* refused before the model: nothing else was logged */
        assert_int_equal(s_log_count(log, "model", NULL), 0);
    }
    /* two broker keys for one broker */
    const char *two[] = {"--broker", "ipc:///nonexistent/a", "--curve-key", wkey, "--broker-key",
                         bpub,       "--broker-key",         bpub,          NULL};
    pid_t pid = s_spawn(log, two);
    int status = s_wait_exit(pid, S_WAIT_MS);
    assert_true(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2);
    assert_int_equal(s_log_count(log, "2 --broker-key files for 1 broker:", NULL), 1);
    explicit_bzero(&worker, sizeof worker);
    explicit_bzero(&server, sizeof server);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ready, teardown),
        cmocka_unit_test_teardown(test_results_identical, teardown),
        cmocka_unit_test_teardown(test_credit, teardown),
        cmocka_unit_test_teardown(test_heartbeats, teardown),
        cmocka_unit_test_teardown(test_drain, teardown),
        cmocka_unit_test_teardown(test_malformed, teardown),
        cmocka_unit_test_teardown(test_silence_reconnect, teardown),
        cmocka_unit_test_teardown(test_reconnect_message, teardown),
        cmocka_unit_test_teardown(test_epochs, teardown),
        cmocka_unit_test_teardown(test_two_brokers, teardown),
        cmocka_unit_test_teardown(test_config, teardown),
        cmocka_unit_test_teardown(test_bad_settings, teardown),
        cmocka_unit_test_teardown(test_curve, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
