/*
 * test_zap.c -- the broker's ZAP handler: a hostile table of requests
 * (frame counts, sizes, versions, mechanisms, domains) with the status and
 * reason each gets; decisions against an allow function; the refusal
 * counters and the limits of their log; the handler on a real socket,
 * asked by hand through a REQ socket (malformed requests, too many frames)
 * and by libzmq itself for real CurveZMQ handshakes, whose accepted
 * connections carry the key as "User-Id".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "curve.h"
#include "log.h"
#include "zap.h"

#define F(s) ((zb_zap_frame_t){(const uint8_t *)(s), sizeof(s) - 1})

static const uint8_t s_key_a[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/* --- parsing ------------------------------------------------------------------ */

static void test_parse_table(void **st) {
    (void)st;
    const zb_zap_frame_t key = {s_key_a, 32}, short_key = {s_key_a, 31}, long_key = {s_key_a, 33};
    const zb_zap_frame_t empty = {(const uint8_t *)"", 0};
    static const uint8_t nul_addr[] = {'1', 0, '\n', 0x7f, 0xff};
    const zb_zap_frame_t bad_addr = {nul_addr, sizeof nul_addr};
    static const struct {
        int n;
        int status;
        const char *why; /* a part of the reason; NULL for 200 */
        int endpoint;
    } want[] = {
        {7, 200, NULL, ZB_ZAP_CLIENTS},                  /* 0: clients */
        {7, 200, NULL, ZB_ZAP_WORKERS},                  /* 1: workers */
        {7, 400, "not a domain", -1},                    /* 2: another domain */
        {7, 400, "not a domain", -1},                    /* 3: empty domain */
        {6, 400, "only CURVE", ZB_ZAP_CLIENTS},          /* 4: NULL */
        {8, 400, "only CURVE", ZB_ZAP_CLIENTS},          /* 5: PLAIN */
        {7, 500, "32-byte key", ZB_ZAP_CLIENTS},         /* 6: short key */
        {7, 500, "32-byte key", ZB_ZAP_CLIENTS},         /* 7: long key */
        {6, 500, "32-byte key", ZB_ZAP_CLIENTS},         /* 8: no key */
        {8, 500, "32-byte key", ZB_ZAP_CLIENTS},         /* 9: two keys */
        {7, 500, "version 1.0", -1},                     /* 10: version 2.0 */
        {7, 500, "version 1.0", -1},                     /* 11: version "1.0\0" */
        {5, 500, "fewer frames", -1},                    /* 12 */
        {0, 500, "fewer frames", -1},                    /* 13 */
        {ZB_ZAP_FRAMES_MAX + 1, 500, "more frames", -1}, /* 14 */
        {7, 200, NULL, ZB_ZAP_CLIENTS},                  /* 15: odd address bytes */
        {7, 400, "not a domain", -1},                    /* 16: "Clients" */
        {7, 400, "only CURVE", ZB_ZAP_WORKERS},          /* 17: "curve" */
    };
    for (size_t t = 0; t < sizeof want / sizeof *want; t++) {
        zb_zap_frame_t f[ZB_ZAP_FRAMES_MAX + 1];
        for (int i = 0; i <= ZB_ZAP_FRAMES_MAX; i++) f[i] = empty;
        f[0] = F("1.0");
        f[1] = F("rid-7");
        f[2] = F("clients");
        f[3] = F("127.0.0.1");
        f[4] = empty;
        f[5] = F("CURVE");
        f[6] = key;
        switch (t) {
        case 1:
            f[2] = F("workers");
            break;
        case 2:
            f[2] = F("admins");
            break;
        case 3:
            f[2] = empty;
            break;
        case 4:
            f[5] = F("NULL");
            break;
        case 5:
            f[5] = F("PLAIN"), f[6] = F("user"), f[7] = F("password");
            break;
        case 6:
            f[6] = short_key;
            break;
        case 7:
            f[6] = long_key;
            break;
        case 9:
            f[7] = key;
            break;
        case 10:
            f[0] = F("2.0");
            break;
        case 11:
            f[0] = (zb_zap_frame_t){(const uint8_t *)"1.0", 4};
            break;
        case 15:
            f[3] = bad_addr;
            break;
        case 16:
            f[2] = F("Clients");
            break;
        case 17:
            f[2] = F("workers"), f[5] = F("curve");
            break;
        default:
            break;
        }
        zb_zap_request_t req;
        const char *why = "unset";
        int status = zb_zap_parse(f, (size_t)want[t].n, &req, &why);
        if (status != want[t].status)
            fail_msg("case %zu: status %d, expected %d (%s)", t, status, want[t].status,
                     why ? why : "");
        if (want[t].why == NULL)
            assert_null(why);
        else if (why == NULL || strstr(why, want[t].why) == NULL)
            fail_msg("case %zu: reason `%s` does not say `%s`", t, why ? why : "(null)",
                     want[t].why);
        assert_int_equal(req.endpoint, want[t].endpoint);
        if (status == 200) {
            assert_true(req.has_key);
            assert_memory_equal(req.key, s_key_a, 32);
        }
        /* the request id is echoed whenever there is one */
        if (want[t].n >= 2) {
            assert_int_equal(req.request_id.len, 5);
            assert_memory_equal(req.request_id.p, "rid-7", 5);
        } else {
            assert_int_equal(req.request_id.len, 0);
        }
        for (const char *c = req.address; *c; c++) assert_true(*c >= 0x20 && *c < 0x7f);
    }
    /* an address longer than kept is cut */
    zb_zap_frame_t f[7] = {F("1.0"), F("1"),     F("clients"), {NULL, 0},
                           F(""),    F("CURVE"), {s_key_a, 32}};
    char longaddr[300];
    memset(longaddr, 'a', sizeof longaddr);
    f[3] = (zb_zap_frame_t){(const uint8_t *)longaddr, sizeof longaddr};
    zb_zap_request_t req;
    const char *why;
    assert_int_equal(zb_zap_parse(f, 7, &req, &why), 200);
    assert_int_equal(strlen(req.address), ZB_ZAP_ADDRESS_MAX);
}

/* --- deciding ------------------------------------------------------------------ */

/* Allows a key on an endpoint when its first byte is even (clients) or a
 * multiple of 3 (workers); counts the questions. */
static int s_asked;
static bool s_allow(void *arg, zb_zap_endpoint_t e, const uint8_t key[32]) {
    (void)arg;
    s_asked++;
    assert_true(e == ZB_ZAP_CLIENTS || e == ZB_ZAP_WORKERS);
    return e == ZB_ZAP_CLIENTS ? key[0] % 2 == 0 : key[0] % 3 == 0;
}

static void test_decide(void **st) {
    (void)st;
    zb_zap_t *z = NULL;
    assert_int_equal(zb_zap_new(&z), 0);
    uint8_t k[32];
    memcpy(k, s_key_a, 32);
    zb_zap_frame_t f[7] = {F("1.0"), F("9"),     F("clients"), F("10.0.0.1"),
                           F(""),    F("CURVE"), {k, 32}};
    zb_zap_reply_t r;
    s_asked = 0;
    k[0] = 2; /* even: a client */
    zb_zap_decide(z, f, 7, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "200");
    char z85[41];
    assert_string_equal(r.user_id, zb_curve_z85(k, z85));
    assert_int_equal(r.request_id.len, 1);
    assert_int_equal(s_asked, 1);
    k[0] = 3; /* odd: not a client, but a worker */
    zb_zap_decide(z, f, 7, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "400");
    assert_string_equal(r.user_id, "");
    assert_null(strstr(r.text, "allow")); /* the peer is not told which list */
    f[2] = F("workers");
    zb_zap_decide(z, f, 7, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "200");
    k[0] = 4;
    zb_zap_decide(z, f, 7, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "400");
    /* malformed: not asked, 500, not counted for an endpoint */
    s_asked = 0;
    zb_zap_decide(z, f, 5, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "500");
    f[2] = F("elsewhere");
    zb_zap_decide(z, f, 7, s_allow, NULL, 1000, &r);
    assert_string_equal(r.status, "400");
    assert_int_equal(s_asked, 0);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_CLIENTS), 1);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_WORKERS), 1);
    zb_zap_refuse(z, ZB_ZAP_WORKERS, k, "x", "removed", 1000);
    zb_zap_refuse(z, ZB_ZAP_CLIENTS, NULL, NULL, "no key", 1000);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_CLIENTS), 2);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_WORKERS), 2);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_ENDPOINTS), 0);
    assert_string_equal(zb_zap_domain(ZB_ZAP_CLIENTS), "clients");
    assert_string_equal(zb_zap_domain(ZB_ZAP_WORKERS), "workers");
    assert_string_equal(zb_zap_domain(ZB_ZAP_ENDPOINTS), "?");
    zb_zap_destroy(&z);
    assert_null(z);
    zb_zap_destroy(NULL);
}

/* --- the log's limits ------------------------------------------------------------ */

static char s_logpath[64];
static int s_saved_stderr = -1;

static void s_capture(void) {
    fflush(stderr);
    s_saved_stderr = dup(2);
    int fd = open(s_logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr; returns the lines captured that hold needle. */
static int s_release(const char *needle) {
    fflush(stderr);
    dup2(s_saved_stderr, 2);
    close(s_saved_stderr);
    FILE *f = fopen(s_logpath, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static int s_count(const char *needle) {
    FILE *f = fopen(s_logpath, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static void test_log_limits(void **st) {
    (void)st;
    zb_zap_t *z = NULL;
    assert_int_equal(zb_zap_new(&z), 0);
    uint8_t k[32];
    memcpy(k, s_key_a, 32);
    s_capture();
    /* one key, 1,000 refusals within 10 s: one line */
    for (int i = 0; i < 1000; i++)
        zb_zap_refuse(z, ZB_ZAP_CLIENTS, k, "10.1.1.1", "not in allow-clients", 5000 + i);
    /* 10 s later: one more line, saying how many were left out */
    zb_zap_refuse(z, ZB_ZAP_CLIENTS, k, "10.1.1.1", "not in allow-clients", 15001);
    /* 20 keys in one second: 5 lines a second in all, and the rest counted
     * when the second is over */
    for (int i = 0; i < 20; i++) {
        k[0] = (uint8_t)(100 + i);
        zb_zap_refuse(z, ZB_ZAP_WORKERS, k, "10.1.1.2", "not in allow-workers", 20000 + i);
    }
    zb_zap_tick(z, 20500);
    zb_zap_tick(z, 21000);
    int lines = s_release("refused key");
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_CLIENTS), 1001);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_WORKERS), 20);
    assert_int_equal(lines, 1 + 1 + 5);
    assert_int_equal(s_count("(999 more since its last line)"), 1);
    assert_int_equal(s_count("15 more refusals were not logged"), 1);
    char z85[41];
    k[0] = 100;
    assert_int_equal(s_count(zb_curve_z85(k, z85)), 1);
    assert_int_equal(s_count("workers: refused key"), 5);
    assert_int_equal(s_count("from 10.1.1.2: not in allow-workers"), 5);
    zb_zap_destroy(&z);
}

/* --- on sockets ------------------------------------------------------------------- */

/* Sends n frames on a REQ socket to the handler and returns the reply's
 * frames (up to 8) with their count. */
static int s_ask(void *req, void *rep, zb_zap_t *z, const zb_zap_frame_t *f, int n,
                 char out[8][64]) {
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(req, f[i].len ? (const void *)f[i].p : "", f[i].len,
                             i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
    zmq_pollitem_t it = {rep, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 5000), 1);
    assert_int_equal(zb_zap_serve(z, rep, s_allow, NULL, 8, 1000), 1);
    int k = 0, more = 1;
    while (more) {
        char buf[64];
        int len = zmq_recv(req, buf, sizeof buf - 1, 0);
        assert_true(len >= 0);
        if (k < 8) {
            memcpy(out[k], buf, (size_t)(len < 63 ? len : 63));
            out[k][len < 63 ? len : 63] = '\0';
        }
        k++;
        int m = 0;
        size_t ml = sizeof m;
        zmq_getsockopt(req, ZMQ_RCVMORE, &m, &ml);
        more = m;
    }
    return k;
}

static void test_socket_requests(void **st) {
    (void)st;
    void *ctx = zmq_ctx_new();
    void *rep = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_zap_bind(ctx, &rep, &d), 0);
    /* a second handler cannot take the endpoint */
    void *rep2 = NULL;
    assert_int_equal(zb_zap_bind(ctx, &rep2, &d), ZB_EIO);
    assert_null(rep2);
    void *req = zmq_socket(ctx, ZMQ_REQ);
    int zero = 0;
    zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(req, ZB_ZAP_ENDPOINT), 0);
    zb_zap_t *z = NULL;
    assert_int_equal(zb_zap_new(&z), 0);
    uint8_t k[32];
    memcpy(k, s_key_a, 32);
    k[0] = 8;
    zb_zap_frame_t f[ZB_ZAP_FRAMES_MAX + 4];
    for (int i = 0; i < ZB_ZAP_FRAMES_MAX + 4; i++) f[i] = F("x");
    f[0] = F("1.0"), f[1] = F("42"), f[2] = F("clients"), f[3] = F("127.0.0.1"), f[4] = F("");
    f[5] = F("CURVE"), f[6] = (zb_zap_frame_t){k, 32};
    char out[8][64];
    char z85[41];
    assert_int_equal(s_ask(req, rep, z, f, 7, out), 6);
    assert_string_equal(out[0], "1.0");
    assert_string_equal(out[1], "42");
    assert_string_equal(out[2], "200");
    assert_string_equal(out[4], zb_curve_z85(k, z85));
    assert_string_equal(out[5], "");
    /* one frame; too many frames; the handler keeps answering */
    assert_int_equal(s_ask(req, rep, z, f, 1, out), 6);
    assert_string_equal(out[1], "");
    assert_string_equal(out[2], "500");
    assert_int_equal(s_ask(req, rep, z, f, ZB_ZAP_FRAMES_MAX + 4, out), 6);
    assert_string_equal(out[1], "42");
    assert_string_equal(out[2], "500");
    k[0] = 9;
    assert_int_equal(s_ask(req, rep, z, f, 7, out), 6);
    assert_string_equal(out[2], "400");
    assert_string_equal(out[4], "");
    assert_int_equal(zb_zap_serve(z, rep, s_allow, NULL, 8, 1000), 0); /* nothing waiting */
    zb_zap_destroy(&z);
    zmq_close(req);
    zmq_close(rep);
    zmq_ctx_term(ctx);
}

/* Serves the handler and waits for a message on router; true when one came
 * within ms, its two frames then in id and body. */
static bool s_wait_msg(void *router, void *rep, zb_zap_t *z, int ms, zmq_msg_t *id,
                       zmq_msg_t *body) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        zmq_pollitem_t it[2] = {{rep, 0, ZMQ_POLLIN, 0}, {router, 0, ZMQ_POLLIN, 0}};
        zmq_poll(it, 2, 20);
        zb_zap_serve(z, rep, s_allow, NULL, 16, 1000);
        if (it[1].revents & ZMQ_POLLIN) {
            zmq_msg_init(id);
            zmq_msg_init(body);
            assert_true(zmq_msg_recv(id, router, 0) >= 0);
            assert_true(zmq_msg_recv(body, router, 0) >= 0);
            return true;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > ms) return false;
    }
}

/* A client key whose first byte is even (s_allow) connects. */
static void s_keypair_with(zb_curve_cert_t *c, bool even) {
    zb_diag_t d = {{0}};
    do assert_int_equal(zb_curve_keypair(c, "t", &d), 0);
    while ((c->pub[0] % 2 == 0) != even);
}

static void test_handshakes(void **st) {
    (void)st;
    if (!zb_curve_available()) skip();
    void *ctx = zmq_ctx_new();
    void *rep = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_zap_bind(ctx, &rep, &d), 0);
    zb_zap_t *z = NULL;
    assert_int_equal(zb_zap_new(&z), 0);
    zb_curve_cert_t server, good, bad;
    assert_int_equal(zb_curve_keypair(&server, "broker", &d), 0);
    s_keypair_with(&good, true);
    s_keypair_with(&bad, false);
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zb_curve_server_socket(router, &server, "clients", &d), 0);
    assert_int_equal(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t eplen = sizeof ep;
    assert_int_equal(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &eplen), 0);

    void *a = zmq_socket(ctx, ZMQ_DEALER), *b = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zb_curve_client_socket(a, &good, server.pub, &d), 0);
    assert_int_equal(zb_curve_client_socket(b, &bad, server.pub, &d), 0);
    assert_int_equal(zmq_connect(a, ep), 0);
    assert_int_equal(zmq_connect(b, ep), 0);
    assert_int_equal(zmq_send(b, "from-b", 6, 0), 6);
    assert_int_equal(zmq_send(a, "from-a", 6, 0), 6);
    zmq_msg_t id, body;
    assert_true(s_wait_msg(router, rep, z, 5000, &id, &body));
    assert_int_equal(zmq_msg_size(&body), 6);
    assert_memory_equal(zmq_msg_data(&body), "from-a", 6);
    char z85[41];
    const char *uid = zmq_msg_gets(&body, "User-Id");
    assert_non_null(uid);
    assert_string_equal(uid, zb_curve_z85(good.pub, z85));
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    /* b is refused (libzmq 4.3 then closes its connection for good) */
    assert_false(s_wait_msg(router, rep, z, 600, &id, &body));
    assert_true(zb_zap_refused(z, ZB_ZAP_CLIENTS) >= 1);
    assert_int_equal(zb_zap_refused(z, ZB_ZAP_WORKERS), 0);
    zmq_close(a);
    zmq_close(b);
    zmq_close(router);
    zmq_close(rep);
    zb_zap_destroy(&z);
    zmq_ctx_term(ctx);
}

int main(void) {
    snprintf(s_logpath, sizeof s_logpath, "/tmp/zbert-zap-test-%d.log", (int)getpid());
    zb_log_init("test_zap", ZB_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table), cmocka_unit_test(test_decide),
        cmocka_unit_test(test_log_limits),  cmocka_unit_test(test_socket_requests),
        cmocka_unit_test(test_handshakes),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(s_logpath);
    return failed;
}
