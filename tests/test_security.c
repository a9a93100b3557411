/*
 * test_security.c -- the service with CurveZMQ on, tried from outside with
 * real processes: keys made by `zbert keygen`, a zbert-broker with
 * --curve-key and allow-list directories, two zbert-workers with their own
 * keys, and clients (the zbert CLI, and raw DEALER sockets in this process
 * playing strangers), all on 127.0.0.1 with free ports found at start.
 *
 * What it holds the service to:
 *   - a known client's vectors are byte-identical to zbert-embed's;
 *   - a client with an unknown key, and one without CURVE, get nothing;
 *   - a worker with an unknown key, or without CURVE, receives no text
 *     while a known client's request runs;
 *   - a key copied into the clients' directory works without a restart,
 *     and stops working once removed (also on a connection opened while it
 *     was allowed);
 *   - hostile frames and handshake garbage from strangers and from a
 *     known client leave the broker serving;
 *   - the broker refuses to bind a public endpoint without keys, and
 *     starts with a warning under --insecure.
 * Every child process is killed and reaped in teardown, whatever failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "fixture.h"
#include "msg.h"
#include "proc.h"

static char s_dir[256];
static char s_bundle[512];
static char s_clients[64], s_backend[64];
static int s_clients_port;
static pid_t s_broker, s_workers[2];
static void *s_ctx;

/* A file of the test's folder (static buffers, eight in turn: a call may
 * take up to eight paths). */
static const char *s_path(const char *name) {
    static char p[8][600];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", s_dir, name);
    return p[k];
}

static zb_curve_cert_t s_load(const char *name, bool secret) {
    zb_curve_cert_t c;
    zb_diag_t d = {{0}};
    int rc = zb_curve_load(s_path(name), secret, &c, &d);
    if (rc != 0) fprintf(stderr, "%s\n", d.msg);
    assert_int_equal(rc, 0);
    return c;
}

/* --- raw peers ------------------------------------------------------------ */

/* A DEALER to ep; with CURVE when key (a .key of the test's folder) is given,
 * against the broker's public key. */
static void *s_dealer(const char *ep, const char *key) {
    void *s = zmq_socket(s_ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (key != NULL) {
        zb_curve_cert_t self = s_load(key, true), broker = s_load("broker.pub", false);
        assert_int_equal(zb_curve_client_socket(s, &self, broker.pub, NULL), 0);
    }
    assert_int_equal(zmq_connect(s, ep), 0);
    return s;
}

static void s_send_body(void *s, const uint8_t *body, size_t len) {
    assert_int_equal(zmq_send(s, body, len, ZMQ_DONTWAIT), (int)len);
}

/* One message within timeout_ms into a decoded m (its body in *keep, the
 * caller's to free); false on timeout. */
static bool s_recv_msg(void *s, int timeout_ms, zb_msg_t *m, uint8_t **keep) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return false;
    zmq_msg_t f;
    zmq_msg_init(&f);
    assert_true(zmq_msg_recv(&f, s, 0) >= 0);
    size_t len = zmq_msg_size(&f);
    *keep = malloc(len ? len : 1);
    memcpy(*keep, zmq_msg_data(&f), len);
    zmq_msg_close(&f);
    memset(m, 0, sizeof *m);
    assert_int_equal(zb_msg_decode(*keep, len, m, NULL), 0);
    return true;
}

/* Sends `status` on s and waits up to timeout_ms for its reply. */
static bool s_status_answered(void *s, int timeout_ms) {
    uint8_t *body;
    size_t len;
    zb_msg_status_t st = {.id = {"sec", 3}};
    assert_int_equal(zb_msg_encode_status(&st, &body, &len, NULL), 0);
    int rc = zmq_send(s, body, len, ZMQ_DONTWAIT);
    free(body);
    if (rc < 0) {
        /* A DEALER whose handshake failed has no pipe: nothing can leave. */
        return false;
    }
    double end = proc_now() + timeout_ms / 1000.0;
    while (proc_now() < end) {
        zb_msg_t m;
        uint8_t *keep;
        if (!s_recv_msg(s, 100, &m, &keep)) continue;
        bool ok = m.type == ZB_MSG_STATUS_REPLY;
        zb_msg_free(&m);
        free(keep);
        if (ok) return true;
    }
    return false;
}

/* Whether a fresh connection with key (NULL: no CURVE) gets a status. */
static bool s_client_works(const char *key, int timeout_ms) {
    void *s = s_dealer(s_clients, key);
    bool ok = s_status_answered(s, timeout_ms);
    zmq_close(s);
    return ok;
}

/* --- cluster -------------------------------------------------------------- */

static pid_t s_start_worker(int k) {
    char name[32], log[512], exe[512];
    snprintf(name, sizeof name, "sec-%d", k);
    snprintf(log, sizeof log, "%s/worker-%d.log", s_dir, k);
    snprintf(exe, sizeof exe, "%s/zbert-worker", proc_bin());
    char key[600], pub[600];
    snprintf(key, sizeof key, "%s", s_path("worker.key"));
    snprintf(pub, sizeof pub, "%s", s_path("broker.pub"));
    char *argv[] = {exe, "--model", s_bundle, "--broker",    s_backend, "--threads",
                    "1", "--name",  name,     "--curve-key", key,       "--broker-key",
                    pub, NULL};
    return proc_spawn(log, argv);
}

/* Waits until the broker lists n workers (asked as the known client). */
static void s_wait_workers(size_t n) {
    void *s = s_dealer(s_clients, "alice.key");
    double end = proc_now() + 30;
    size_t have = 0;
    while (proc_now() < end && have != n) {
        uint8_t *body;
        size_t len;
        zb_msg_status_t st = {.id = {"w", 1}};
        assert_int_equal(zb_msg_encode_status(&st, &body, &len, NULL), 0);
        zmq_send(s, body, len, ZMQ_DONTWAIT);
        free(body);
        zb_msg_t m;
        uint8_t *keep;
        if (s_recv_msg(s, 1000, &m, &keep)) {
            if (m.type == ZB_MSG_STATUS_REPLY) have = m.u.status_reply.n_workers;
            zb_msg_free(&m);
            free(keep);
        }
        if (have != n) usleep(100 * 1000);
    }
    zmq_close(s);
    assert_int_equal(have, n);
}

static int s_keygen(const char *name) {
    return proc_sh("cd '%s' && %s/zbert keygen %s > /dev/null", s_dir, proc_bin(), name);
}

static int setup(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-security-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    /* ZB_BIN may be relative to the repo root; keygen runs in s_dir. */
    if (proc_bin()[0] != '/') {
        char cwd[400], abs_bin[512];
        if (!getcwd(cwd, sizeof cwd)) return -1;
        snprintf(abs_bin, sizeof abs_bin, "%s/%s", cwd, proc_bin());
        setenv("ZB_BIN", abs_bin, 1);
    }
    snprintf(s_bundle, sizeof s_bundle, "%s/tiny.zbm", s_dir);
    if (proc_sh("%s/zbert-model convert %s -o %s > /dev/null", proc_bin(), fx_path("tiny-seed1"),
                s_bundle))
        return -1;
    const char *names[] = {"broker", "alice", "worker", "mallory", "rogue", "carol"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (s_keygen(names[i]) != 0) return -1;
    if (proc_sh("mkdir -p '%s/clients' '%s/workers' && cp '%s/alice.pub' '%s/clients/' && "
                "cp '%s/worker.pub' '%s/workers/'",
                s_dir, s_dir, s_dir, s_dir, s_dir, s_dir))
        return -1;
    s_clients_port = proc_free_port();
    snprintf(s_clients, sizeof s_clients, "tcp://127.0.0.1:%d", s_clients_port);
    snprintf(s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", proc_free_port());
    s_ctx = zmq_ctx_new();
    char exe[512], log[512], key[600], ac[600], aw[600];
    snprintf(exe, sizeof exe, "%s/zbert-broker", proc_bin());
    snprintf(log, sizeof log, "%s/broker.log", s_dir);
    snprintf(key, sizeof key, "%s", s_path("broker.key"));
    snprintf(ac, sizeof ac, "%s", s_path("clients"));
    snprintf(aw, sizeof aw, "%s", s_path("workers"));
    char *argv[] = {exe, "--clients",       s_clients, "--workers",       s_backend, "--curve-key",
                    key, "--allow-clients", ac,        "--allow-workers", aw,        NULL};
    s_broker = proc_spawn(log, argv);
    s_workers[0] = s_start_worker(1);
    s_workers[1] = s_start_worker(2);
    s_wait_workers(2);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    proc_kill_all();
    if (s_ctx) zmq_ctx_term(s_ctx);
    if (getenv("ZB_KEEP_LOGS") == NULL) proc_sh("rm -rf '%s'", s_dir);
    return 0;
}

/* The broker is still up and serves the known client. */
static void s_assert_serving(void) {
    assert_int_equal(kill(s_broker, 0), 0);
    assert_true(s_client_works("alice.key", 5000));
}

/* --- tests ---------------------------------------------------------------- */

/* `zbert keygen` wrote a secret only its owner reads, and never overwrites. */
static void test_keygen_files(void **st) {
    (void)st;
    assert_int_equal(proc_sh("test \"$(stat -c %%a '%s')\" = 600", s_path("alice.key")), 0);
    assert_int_equal(proc_sh("test \"$(stat -c %%a '%s')\" = 644", s_path("alice.pub")), 0);
    assert_int_equal(proc_sh("grep -q '^curve' '%s' && ! grep -q secret-key '%s'",
                             s_path("alice.pub"), s_path("alice.pub")),
                     0);
    assert_int_not_equal(s_keygen("alice"), 0);
}

/* A known client through CURVE gets what zbert-embed computes, byte for
 * byte, at every level. */
static void test_known_client_identical(void **st) {
    (void)st;
    FILE *f = fopen(s_path("in.txt"), "w");
    assert_non_null(f);
    for (int i = 0; i < 300; i++)
        fprintf(f, "Line %d: the quick brown fox, %d times, jumps over the lazy dog.\n", i, i * 7);
    fclose(f);
    const char *levels[] = {"token", "wordpiece", "sentence"};
    for (size_t k = 0; k < 3; k++) {
        assert_int_equal(proc_sh("%s/zbert-embed --model %s --level %s < %s > %s 2>/dev/null",
                                 proc_bin(), s_bundle, levels[k], s_path("in.txt"),
                                 s_path("a.out")),
                         0);
        assert_int_equal(proc_sh("%s/zbert embed --broker %s --curve-key %s --broker-key %s "
                                 "--level %s < %s > %s 2>%s",
                                 proc_bin(), s_clients, s_path("alice.key"), s_path("broker.pub"),
                                 levels[k], s_path("in.txt"), s_path("b.out"), s_path("b.err")),
                         0);
        assert_int_equal(proc_sh("cmp -s %s %s", s_path("a.out"), s_path("b.out")), 0);
    }
}

/* An unknown key and a client without CURVE get nothing: neither the CLI
 * nor a raw socket. */
static void test_strangers_get_nothing(void **st) {
    (void)st;
    assert_false(s_client_works("mallory.key", 1500));
    assert_false(s_client_works(NULL, 1500));
    int rc = proc_sh("echo hello | %s/zbert embed --broker %s --curve-key %s --broker-key %s "
                     "--retry-ms 300 --outage-ms 1000 --timeout-ms 1000 > %s 2>/dev/null",
                     proc_bin(), s_clients, s_path("mallory.key"), s_path("broker.pub"),
                     s_path("m.out"));
    assert_int_not_equal(rc, 0);
    assert_int_equal(proc_sh("test ! -s %s", s_path("m.out")), 0);
    rc = proc_sh("%s/zbert status --broker %s --timeout-ms 1000 > /dev/null 2>&1", proc_bin(),
                 s_clients);
    assert_int_not_equal(rc, 0);
    /* A worker's allowed key is no client's. */
    assert_false(s_client_works("worker.key", 1500));
    s_assert_serving();
}

/* Fake workers -- one with an unknown key, one without CURVE, one with a
 * client's key on the workers' endpoint -- announce themselves with the
 * real workers' model while a known client's request runs: not one task
 * reaches them. */
static void test_unknown_workers_get_no_text(void **st) {
    (void)st;
    /* The real workers' identity, as status shows it. */
    void *c = s_dealer(s_clients, "alice.key");
    uint8_t *body;
    size_t len;
    zb_msg_status_t stq = {.id = {"m", 1}};
    assert_int_equal(zb_msg_encode_status(&stq, &body, &len, NULL), 0);
    s_send_body(c, body, len);
    free(body);
    zb_msg_t m;
    uint8_t *keep;
    assert_true(s_recv_msg(c, 5000, &m, &keep));
    assert_int_equal(m.type, ZB_MSG_STATUS_REPLY);
    assert_true(m.u.status_reply.n_workers >= 1);
    char model[ZB_MSG_NAME_BYTES_MAX + 1];
    const zb_msg_str_t *mm = &m.u.status_reply.workers[0].model;
    memcpy(model, mm->ptr, mm->len);
    model[mm->len] = '\0';
    uint32_t dim = m.u.status_reply.workers[0].dim;
    zb_msg_free(&m);
    free(keep);

    const char *keys[] = {"rogue.key", NULL, "alice.key"};
    void *fakes[3];
    for (int k = 0; k < 3; k++) {
        fakes[k] = s_dealer(s_backend, keys[k]);
        char name[32];
        snprintf(name, sizeof name, "fake-%d", k);
        zb_msg_ready_t r = {.name = {name, strlen(name)},
                            .model = {model, strlen(model)},
                            .dim = dim,
                            .threads = 64,
                            .credit = 1024,
                            .epoch = 1};
        assert_int_equal(zb_msg_encode_ready(&r, &body, &len, NULL), 0);
        zmq_send(fakes[k], body, len, ZMQ_DONTWAIT); /* may find no pipe */
        free(body);
    }
    usleep(300 * 1000);
    /* A request of many shards, so that a fake worker would draw some. */
    enum { N = 640 };
    zb_msg_str_t texts[N];
    char buf[N][48];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], "secret text number %d", i);
        texts[i] = (zb_msg_str_t){buf[i], strlen(buf[i])};
    }
    zb_msg_embed_t e = {.id = {"r1", 2}, .texts = texts, .n_texts = N};
    e.opt.level = ZB_LEVEL_SENTENCE;
    assert_int_equal(zb_msg_encode_embed(&e, &body, &len, NULL), 0);
    s_send_body(c, body, len);
    free(body);
    int seen[N] = {0};
    bool done = false;
    double end = proc_now() + 60;
    while (!done && proc_now() < end) {
        for (int k = 0; k < 3; k++) {
            zmq_pollitem_t it = {fakes[k], 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 0) > 0) {
                zmq_msg_t f;
                zmq_msg_init(&f);
                zmq_msg_recv(&f, fakes[k], 0);
                zb_msg_t fm = {0};
                int rc = zb_msg_decode(zmq_msg_data(&f), zmq_msg_size(&f), &fm, NULL);
                bool task = rc == 0 && fm.type == ZB_MSG_TASK;
                if (rc == 0) zb_msg_free(&fm);
                zmq_msg_close(&f);
                if (task) fprintf(stderr, "fake worker %d received a task\n", k);
                assert_false(task);
            }
        }
        if (!s_recv_msg(c, 50, &m, &keep)) continue;
        if (m.type == ZB_MSG_PART) {
            for (uint32_t i = 0; i < m.u.part.vec.count; i++) seen[m.u.part.first + i]++;
        } else {
            assert_int_equal(m.type, ZB_MSG_DONE);
            done = true;
        }
        zb_msg_free(&m);
        free(keep);
    }
    assert_true(done);
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    for (int k = 0; k < 3; k++) zmq_close(fakes[k]);
    zmq_close(c);
}

/* A key copied into the clients' directory is allowed without a restart;
 * removed, it stops working, on new connections and on one opened while
 * it was allowed. */
static void test_allow_list_changes_live(void **st) {
    (void)st;
    assert_false(s_client_works("carol.key", 1000));
    assert_int_equal(proc_sh("cp '%s' '%s/'", s_path("carol.pub"), s_path("clients")), 0);
    bool works = false;
    for (double end = proc_now() + 10; !works && proc_now() < end;)
        works = s_client_works("carol.key", 500);
    assert_true(works);
    void *open_conn = s_dealer(s_clients, "carol.key");
    assert_true(s_status_answered(open_conn, 3000));

    assert_int_equal(proc_sh("rm '%s/carol.pub'", s_path("clients")), 0);
    bool stopped = false;
    for (double end = proc_now() + 10; !stopped && proc_now() < end;)
        stopped = !s_client_works("carol.key", 500);
    assert_true(stopped);
    assert_false(s_status_answered(open_conn, 1500));
    zmq_close(open_conn);

    /* SIGHUP re-reads the directory as well. */
    assert_int_equal(proc_sh("cp '%s' '%s/'", s_path("carol.pub"), s_path("clients")), 0);
    kill(s_broker, SIGHUP);
    works = false;
    for (double end = proc_now() + 10; !works && proc_now() < end;)
        works = s_client_works("carol.key", 500);
    assert_true(works);
    assert_int_equal(proc_sh("rm '%s/carol.pub'", s_path("clients")), 0);
    kill(s_broker, SIGHUP);
    s_assert_serving();
}

/* Raw bytes on the CURVE endpoints: garbage greetings, a NULL-mechanism
 * greeting, a truncated handshake; then a known client sending hostile
 * frames.  The broker stays up and serves. */
static void test_hostile_bytes(void **st) {
    (void)st;
    /* Each with its length: they hold NUL bytes. */
#define S_BYTES(lit)                                                                               \
    { lit, sizeof lit - 1 }
    static const struct {
        const char *b;
        size_t n;
    } garbage[] = {
        S_BYTES("GET / HTTP/1.1\r\n\r\n"),
        /* a ZMTP 3.0 greeting asking for NULL */
        S_BYTES("\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        /* a CURVE greeting, then a HELLO command that is far too short */
        S_BYTES("\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00CURVE\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x04\x06\x05HELLO"),
    };
#undef S_BYTES
    int ports[2] = {s_clients_port, atoi(strrchr(s_backend, ':') + 1)};
    for (int p = 0; p < 2; p++)
        for (size_t g = 0; g < 3; g++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            assert_true(fd >= 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[p])};
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
                ssize_t w = write(fd, garbage[g].b, garbage[g].n);
                (void)w;
                usleep(50 * 1000);
            }
            close(fd);
        }
    /* A known client's hostile messages: not msgpack, a 2-frame message,
     * an empty frame, a claim on a routing id. */
    void *s = s_dealer(s_clients, "alice.key");
    const uint8_t junk[] = {0xc1, 0xff, 0x00};
    zmq_send(s, junk, sizeof junk, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s, junk, sizeof junk, ZMQ_DONTWAIT);
    zmq_send(s, "", 0, ZMQ_DONTWAIT);
    zmq_send(s, junk, sizeof junk, ZMQ_DONTWAIT);
    usleep(200 * 1000);
    zmq_close(s);
    for (int k = 0; k < 4; k++) {
        void *r = zmq_socket(s_ctx, ZMQ_DEALER);
        uint8_t rid[5] = {0, 0x6b, 0x8b, 0x45, (uint8_t)(0x67 + k)};
        zmq_setsockopt(r, ZMQ_ROUTING_ID, rid, sizeof rid);
        int linger = 0;
        zmq_setsockopt(r, ZMQ_LINGER, &linger, sizeof linger);
        zb_curve_cert_t self = s_load("alice.key", true), broker = s_load("broker.pub", false);
        assert_int_equal(zb_curve_client_socket(r, &self, broker.pub, NULL), 0);
        zmq_connect(r, s_clients);
        assert_true(s_status_answered(r, 3000));
        zmq_close(r);
    }
    s_assert_serving();
}

/* Secure by default: a public bind without keys is refused with a reason;
 * --insecure starts, and warns. */
static void test_public_bind_needs_keys(void **st) {
    (void)st;
    int port = proc_free_port(), port2 = proc_free_port();
    int rc = proc_sh("timeout 10 %s/zbert-broker --clients tcp://0.0.0.0:%d --workers "
                     "tcp://127.0.0.1:%d > %s 2>&1",
                     proc_bin(), port, port2, s_path("pub.log"));
    assert_true(rc != 0 && rc != 124 * 256);
    assert_int_equal(proc_sh("grep -q -- --insecure %s && grep -q -- --curve-key %s",
                             s_path("pub.log"), s_path("pub.log")),
                     0);
    rc = proc_sh("timeout 10 %s/zbert-broker --clients tcp://127.0.0.1:%d --workers "
                 "'tcp://*:%d' > %s 2>&1",
                 proc_bin(), port, port2, s_path("pub2.log"));
    assert_true(rc != 0 && rc != 124 * 256);
    char exe[512], log[512], c_ep[64], w_ep[64];
    snprintf(exe, sizeof exe, "%s/zbert-broker", proc_bin());
    snprintf(log, sizeof log, "%s", s_path("insecure.log"));
    snprintf(c_ep, sizeof c_ep, "tcp://0.0.0.0:%d", port);
    snprintf(w_ep, sizeof w_ep, "tcp://127.0.0.1:%d", port2);
    char *argv[] = {exe, "--clients", c_ep, "--workers", w_ep, "--insecure", NULL};
    pid_t p = proc_spawn(log, argv);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    void *s = s_dealer(ep, NULL);
    assert_true(s_status_answered(s, 5000));
    zmq_close(s);
    assert_int_equal(proc_sh("grep -qi 'insecure' %s", log), 0);
    proc_kill(p, SIGKILL);
}

int main(void) {
    if (!zb_curve_available()) {
        printf("libzmq has no CURVE: skipped\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_files),
        cmocka_unit_test(test_known_client_identical),
        cmocka_unit_test(test_strangers_get_nothing),
        cmocka_unit_test(test_unknown_workers_get_no_text),
        cmocka_unit_test(test_allow_list_changes_live),
        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_public_bind_needs_keys),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
