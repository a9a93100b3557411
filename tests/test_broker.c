/*
 * test_broker.c -- bin/zbert-broker as a process ($ZB_BIN, default bin),
 * on random loopback ports, driven through its two sockets by fake clients
 * and fake workers written here with libzmq and the protocol codec.
 *
 * Fake workers need no engine: a text "<tag>:<n>" (n its index in the
 * request, "!" after it for a text that must fail, padding after that) gets
 * rows whose first float is n, so every row a client receives can be traced
 * to exactly one text (and token metadata, when a task asks for it, that
 * is traceable too: the later options reach every task unchanged, and
 * each part's metadata is its text's).  Checks count shards and messages,
 * never time:
 * durations appear only as generous timeouts against hangs.
 *
 * Every test starts its own broker; the teardown stops it with SIGTERM and
 * requires exit status 0 (under ASan that includes the leak check).  The
 * children are killed at exit whatever happens.  The brokers' logs are
 * kept in /tmp/zbert-broker-test-* when a test fails (or ZB_KEEP_LOGS is
 * set).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "broker.h"
#include "curve.h"
#include "fixture.h"
#include "msg.h"

#define S_TIMEOUT_MS 15000 /* any single wait: far beyond what it should take */

static void *s_ctx;
static char s_dir[64];

static uint64_t s_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- the broker process ------------------------------------------------- */

typedef struct broker {
    pid_t pid;
    char front[64], back[64], log[128];
} broker_t;

static broker_t s_b;
static const char *s_broker_level = "info"; /* --log-level of the next start */
struct fc;
static struct fc *s_admin; /* the client asking for status; NULL: none yet */
static pid_t s_children[64];
static int s_n_children;

static void s_kill_children(void) {
    for (int i = 0; i < s_n_children; i++) {
        if (s_children[i] > 0) {
            kill(s_children[i], SIGKILL);
            waitpid(s_children[i], NULL, 0);
            s_children[i] = 0;
        }
    }
}

static void s_forget_child(pid_t pid) {
    for (int i = 0; i < s_n_children; i++)
        if (s_children[i] == pid) s_children[i] = 0;
}

static int s_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* CurveZMQ (tests that start the broker with keys): the broker's pair and
 * the keys s_socket() gives the fake clients and workers by default. */
static bool s_curve;
static zb_curve_cert_t s_server_cert, s_client_cert, s_worker_cert;

/* A socket connected to endpoint as a CurveZMQ client with self's key pair
 * (NULL: without CurveZMQ). */
static void *s_socket_as(int type, const char *endpoint, const zb_curve_cert_t *self) {
    void *s = zmq_socket(s_ctx, type);
    assert_non_null(s);
    int zero = 0, unlimited = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &unlimited, sizeof unlimited);
    zmq_setsockopt(s, ZMQ_SNDHWM, &unlimited, sizeof unlimited);
    zb_diag_t d = {{0}};
    if (self != NULL && zb_curve_client_socket(s, self, s_server_cert.pub, &d) != 0)
        fail_msg("CURVE options: %s", d.msg);
    assert_int_equal(zmq_connect(s, endpoint), 0);
    return s;
}

/* A socket for endpoint, with the default key of its side when the broker
 * runs with keys. */
static void *s_socket(int type, const char *endpoint) {
    const zb_curve_cert_t *self = NULL;
    if (s_curve) self = strcmp(endpoint, s_b.back) == 0 ? &s_worker_cert : &s_client_cert;
    return s_socket_as(type, endpoint, self);
}

static void s_send_raw(void *s, const void *p, size_t n, int flags) {
    assert_int_equal(zmq_send(s, p, n, flags), (int)n);
}

static void s_send_msg(void *s, const zb_msg_t *m) {
    uint8_t *body = NULL;
    size_t len = 0;
    zb_diag_t d = {{0}};
    int rc = zb_msg_encode(m, &body, &len, &d);
    if (rc != 0) fail_msg("encode %s: %s", zb_msg_type_name(m->type), d.msg);
    s_send_raw(s, body, len, 0);
    free(body);
}

/* One received message: its body and what it decodes to. */
typedef struct rx {
    zmq_msg_t body;
    zb_msg_t m;
} rx_t;

static void rx_free(rx_t *rx) {
    zb_msg_free(&rx->m);
    zmq_msg_close(&rx->body);
}

static void s_recv_now(void *s, rx_t *rx) {
    zmq_msg_init(&rx->body);
    assert_true(zmq_msg_recv(&rx->body, s, ZMQ_DONTWAIT) >= 0);
    assert_false(zmq_msg_more(&rx->body)); /* one frame per message */
    zb_diag_t d = {{0}};
    int rc = zb_msg_decode(zmq_msg_data(&rx->body), zmq_msg_size(&rx->body), &rx->m, &d);
    if (rc != 0) fail_msg("the broker sent a malformed message: %s", d.msg);
}

static uint8_t *s_find_bytes(uint8_t *hay, size_t n, const char *needle, size_t k) {
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(hay + i, needle, k) == 0) return hay + i;
    return NULL;
}

static bool s_str_is(zb_msg_str_t s, const char *want) {
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/* Asks for the status on a fresh socket; false when no answer in ms. */
static bool s_status_once(const char *front, int ms, rx_t *rx) {
    void *s = s_socket(ZMQ_DEALER, front);
    zb_msg_t m = {.type = ZB_MSG_STATUS};
    s_send_msg(s, &m);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    bool ok = zmq_poll(&it, 1, ms) == 1;
    if (ok) s_recv_now(s, rx);
    zmq_close(s);
    return ok;
}

/* Starts the broker with extra environment settings ("ZBERT_X=1", NULL
 * terminated) and waits until it answers `status`. */
static void s_broker_start(const char *const *env) {
    static int started;
    for (int attempt = 0; attempt < 5; attempt++) {
        int p1 = s_free_port(), p2 = s_free_port();
        if (p1 == p2) continue;
        snprintf(s_b.front, sizeof s_b.front, "tcp://127.0.0.1:%d", p1);
        snprintf(s_b.back, sizeof s_b.back, "tcp://127.0.0.1:%d", p2);
        snprintf(s_b.log, sizeof s_b.log, "%s/broker-%d.log", s_dir, ++started);
        const char *bin = getenv("ZB_BIN");
        char path[512];
        snprintf(path, sizeof path, "%s/zbert-broker", bin && *bin ? bin : "bin");
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (const char *const *e = env; e && *e; e++) putenv(strdup(*e));
            int fd = open(s_b.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) dup2(fd, 2);
            execl(path, path, "--clients", s_b.front, "--workers", s_b.back, "--log-level",
                  s_broker_level, (char *)NULL);
            _exit(127);
        }
        s_children[s_n_children++] = pid;
        s_b.pid = pid;
        s_admin = NULL; /* a new broker, new ports */
        uint64_t end = s_ms() + S_TIMEOUT_MS;
        while (s_ms() < end) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) { /* could not bind: try other ports */
                s_forget_child(pid);
                s_b.pid = 0;
                break;
            }
            rx_t rx;
            if (s_status_once(s_b.front, 200, &rx)) {
                rx_free(&rx);
                return;
            }
        }
        if (s_b.pid != 0) fail_msg("the broker did not answer; log: %s", s_b.log);
    }
    fail_msg("the broker would not start; log: %s", s_b.log);
}

/* Sends signals and waits for the broker to exit; returns its status. */
static int s_broker_stop(int signals) {
    if (s_b.pid == 0) return 0;
    for (int i = 0; i < signals; i++) {
        kill(s_b.pid, SIGTERM);
        usleep(20000);
    }
    int st = 0;
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    while (waitpid(s_b.pid, &st, WNOHANG) == 0) {
        if (s_ms() > end) {
            kill(s_b.pid, SIGKILL);
            waitpid(s_b.pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    s_forget_child(s_b.pid);
    s_b.pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Lines of the broker's log containing needle. */
static int s_log_count(const char *needle) {
    size_t len = 0;
    char *text = fx_read_file(s_b.log, &len);
    assert_non_null(text);
    int n = 0;
    for (char *p = text; (p = strstr(p, needle)) != NULL; p++) n++;
    free(text);
    return n;
}

/* --- fake workers ----------------------------------------------------------- */

enum { FW_AUTO, FW_HOLD, FW_DEAD };
#define S_TASK_TEXTS 64

typedef struct task {
    uint64_t shard, epoch;
    uint32_t n;
    zb_level_t level;
    zb_options_t opt; /* as the task carried them */
    char tag[16];
    uint32_t num[S_TASK_TEXTS];
    bool bad[S_TASK_TEXTS];
    uint64_t at_ms;
} task_t;

typedef struct fw {
    void *s;
    char name[32], model[32];
    uint32_t dim, credit, threads;
    int mode; /* FW_AUTO answers tasks older than delay_ms */
    int delay_ms;
    bool wrong_dim;        /* answer with dim + 1: a result not matching its task */
    bool drop_meta;        /* answer without the token metadata a task asks for */
    int bad_content;       /* 1: byte spans past the text; 2: a NaN in every row */
    zb_options_t last_opt; /* options of the last task received */
    bool ready_on_reconnect;
    bool paused; /* reads and answers nothing; heartbeats on */
    /* like zbert-worker: tasks of an epoch other than the latest ready's are
     * dropped, and so are tasks beyond the credit of that epoch */
    bool per_epoch;
    uint64_t epoch; /* of the latest ready sent */
    int n_stale, n_over;
    int swallow;         /* tasks still to drop silently, as if lost */
    task_t swallowed[4]; /* the first ones dropped so */
    int n_swallowed;
    task_t pend[64];
    int n_pend, max_pend;
    int n_tasks, n_reconnects;
    char order[4096]; /* tag of each task received, in order */
    uint64_t last_send_ms;
} fw_t;

static fw_t *s_fw[16];
static int s_n_fw;

/* Announces w under a new epoch: what it held counts no more. */
static void fw_send_ready(fw_t *w) {
    zb_msg_t m = {.type = ZB_MSG_READY};
    m.u.ready = (zb_msg_ready_t){.name = {w->name, strlen(w->name)},
                                 .model = {w->model, strlen(w->model)},
                                 .dim = w->dim,
                                 .threads = w->threads,
                                 .credit = w->credit,
                                 .epoch = ++w->epoch};
    s_send_msg(w->s, &m);
    w->last_send_ms = s_ms();
}

/* A fake worker connected with key pair self (as s_socket_as). */
static fw_t *fw_new_as(const char *name, const char *model, uint32_t dim, uint32_t credit, int mode,
                       const zb_curve_cert_t *self) {
    fw_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    snprintf(w->name, sizeof w->name, "%s", name);
    snprintf(w->model, sizeof w->model, "%s", model);
    w->dim = dim;
    w->credit = credit;
    w->threads = 2;
    w->mode = mode;
    w->s = s_socket_as(ZMQ_DEALER, s_b.back, self);
    s_fw[s_n_fw++] = w;
    fw_send_ready(w);
    return w;
}

static fw_t *fw_new(const char *name, const char *model, uint32_t dim, uint32_t credit, int mode) {
    return fw_new_as(name, model, dim, credit, mode, s_curve ? &s_worker_cert : NULL);
}

static void s_put_f32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i));
}

static float s_get_f32(const uint8_t *p) {
    uint32_t u = 0;
    for (int i = 0; i < 4; i++) u |= (uint32_t)p[i] << (8 * i);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The rows the fake worker gives a text at a level. */
static uint32_t s_rows_of(zb_level_t level, bool bad) {
    return bad ? 0 : level == ZB_LEVEL_SENTENCE ? 1 : 2;
}

/* The token metadata the fake worker gives row j of text n: traceable to
 * the text, with an oov row (piece 0) in every odd text. */
static void s_meta_of(uint32_t n, uint32_t j, zb_token_meta_t *m) {
    bool oov = j == 1 && n % 2 == 1;
    *m = (zb_token_meta_t){.sentence = n % 7 + j,
                           .piece_id = oov ? -1 : (int32_t)(1000 + n),
                           .begin16 = -1,
                           .end16 = -1,
                           .word_start = j == 0,
                           .oov = oov};
}

/* Answers pending task k and forgets it. */
static void fw_answer(fw_t *w, int k) {
    assert_true(k < w->n_pend);
    task_t *t = &w->pend[k];
    uint32_t rows[S_TASK_TEXTS], trunc[S_TASK_TEXTS], n_rows = 0;
    zb_msg_text_error_t errs[S_TASK_TEXTS];
    size_t n_trunc = 0, n_errs = 0;
    uint32_t dim = w->dim + (w->wrong_dim ? 1 : 0);
    for (uint32_t i = 0; i < t->n; i++) {
        rows[i] = s_rows_of(t->level, t->bad[i]);
        n_rows += rows[i];
        if (t->bad[i])
            errs[n_errs++] = (zb_msg_text_error_t){
                .index = i, .code = ZB_MSG_CODE_BAD_UTF8, .message = {"invalid UTF-8", 13}};
        else if (t->num[i] % 10 == 3)
            trunc[n_trunc++] = i;
    }
    uint8_t *vec = calloc((size_t)n_rows * dim * 4 + 1, 1);
    uint32_t *off = calloc((size_t)n_rows * 2 + 1, sizeof *off);
    uint32_t *boff = calloc((size_t)n_rows * 2 + 1, sizeof *boff);
    uint32_t *ids = calloc((size_t)n_rows + 1, sizeof *ids);
    zb_token_meta_t *tm = calloc((size_t)n_rows + 1, sizeof *tm);
    assert_true(vec && off && boff && ids && tm);
    uint32_t r = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        for (uint32_t j = 0; j < rows[i]; j++, r++) {
            s_put_f32(vec + ((size_t)r * dim + 0) * 4, (float)t->num[i]);
            s_put_f32(vec + ((size_t)r * dim + 1) * 4, (float)j);
            s_put_f32(vec + ((size_t)r * dim + 2) * 4, (float)w->dim);
            if (dim > 3) s_put_f32(vec + ((size_t)r * dim + 3) * 4, (float)t->epoch);
            if (w->bad_content == 2) s_put_f32(vec + ((size_t)r * dim + 1) * 4, NAN);
            off[2 * r] = j;
            off[2 * r + 1] = j + 1;
            /* within the shortest text ("T:0"), as a real worker's are;
             * bad_content 1 puts the end past it */
            boff[2 * r] = j;
            boff[2 * r + 1] = w->bad_content == 1 ? 4096 : j + 1;
            ids[r] = 100 + j;
            s_meta_of(t->num[i], j, &tm[r]);
        }
    }
    bool meta = zb_options_meta(&t->opt) && !w->drop_meta;
    bool spans = t->level != ZB_LEVEL_SENTENCE && n_rows > 0;
    zb_msg_t m = {.type = ZB_MSG_RESULT};
    m.u.result =
        (zb_msg_result_t){.shard = t->shard,
                          .epoch = t->epoch,
                          .tokens = (uint64_t)t->n * 5,
                          .vec = {.level = t->level,
                                  .dim = dim,
                                  .count = t->n,
                                  .rows = rows,
                                  .n_rows = n_rows,
                                  .vectors = n_rows ? vec : NULL,
                                  .vectors_len = (size_t)n_rows * dim * 4,
                                  .offsets = spans ? off : NULL,
                                  .byte_offsets = spans ? boff : NULL,
                                  .ids = t->level == ZB_LEVEL_WORDPIECE && n_rows ? ids : NULL,
                                  .token_meta = meta,
                                  .meta = meta && n_rows ? tm : NULL,
                                  .truncated = n_trunc ? trunc : NULL,
                                  .n_truncated = n_trunc,
                                  .errors = n_errs ? errs : NULL,
                                  .n_errors = n_errs}};
    s_send_msg(w->s, &m);
    w->last_send_ms = s_ms();
    free(vec);
    free(off);
    free(boff);
    free(ids);
    free(tm);
    memmove(&w->pend[k], &w->pend[k + 1], (size_t)(w->n_pend - k - 1) * sizeof *w->pend);
    w->n_pend--;
}

/* Parses "<tag>:<n>[!]..." texts of a task. */
static void s_parse_task(const zb_msg_task_t *t, task_t *out) {
    memset(out, 0, sizeof *out);
    out->shard = t->shard;
    out->epoch = t->epoch;
    out->n = (uint32_t)t->n_texts;
    out->level = t->opt.level;
    out->opt = t->opt;
    out->at_ms = s_ms();
    assert_true(t->n_texts <= S_TASK_TEXTS);
    for (size_t i = 0; i < t->n_texts; i++) {
        char buf[32];
        size_t n = t->texts[i].len < sizeof buf - 1 ? t->texts[i].len : sizeof buf - 1;
        memcpy(buf, t->texts[i].ptr, n);
        buf[n] = '\0';
        char *colon = strchr(buf, ':');
        assert_non_null(colon);
        *colon = '\0';
        if (i == 0) snprintf(out->tag, sizeof out->tag, "%.15s", buf);
        char *end;
        out->num[i] = (uint32_t)strtoul(colon + 1, &end, 10);
        out->bad[i] = *end == '!';
    }
}

/* Reads everything waiting for w, answers (FW_AUTO) and heartbeats. */
/* Tasks w holds of its current epoch. */
static int fw_current(const fw_t *w) {
    int n = 0;
    for (int k = 0; k < w->n_pend; k++) n += w->pend[k].epoch == w->epoch;
    return n;
}

static void fw_service(fw_t *w) {
    if (w->mode == FW_DEAD) return;
    while (!w->paused) {
        zmq_pollitem_t it = {w->s, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 0) != 1) break;
        rx_t rx;
        s_recv_now(w->s, &rx);
        if (rx.m.type == ZB_MSG_TASK && w->per_epoch && rx.m.u.task.epoch != w->epoch) {
            w->n_stale++;
        } else if (rx.m.type == ZB_MSG_TASK && w->per_epoch && fw_current(w) >= (int)w->credit) {
            w->n_over++;
        } else if (rx.m.type == ZB_MSG_TASK && w->swallow > 0) {
            w->swallow--;
            if (w->n_swallowed < 4) s_parse_task(&rx.m.u.task, &w->swallowed[w->n_swallowed]);
            w->n_swallowed++;
        } else if (rx.m.type == ZB_MSG_TASK) {
            assert_true(w->n_pend < 64);
            s_parse_task(&rx.m.u.task, &w->pend[w->n_pend++]);
            w->last_opt = rx.m.u.task.opt;
            if (w->n_pend > w->max_pend) w->max_pend = w->n_pend;
            size_t o = strlen(w->order);
            if (o + 2 < sizeof w->order) w->order[o] = w->pend[w->n_pend - 1].tag[0];
            w->n_tasks++;
        } else if (rx.m.type == ZB_MSG_RECONNECT) {
            w->n_reconnects++;
            if (w->ready_on_reconnect) fw_send_ready(w);
        } else {
            assert_int_equal(rx.m.type, ZB_MSG_HEARTBEAT);
        }
        rx_free(&rx);
    }
    uint64_t now = s_ms();
    while (w->mode == FW_AUTO && !w->paused && w->n_pend > 0 &&
           now - w->pend[0].at_ms >= (uint64_t)w->delay_ms)
        fw_answer(w, 0);
    if (now - w->last_send_ms >= 400) {
        /* Without waiting: a worker whose handshake was refused has no
         * connection left to send on, and would block. */
        zb_msg_t hb = {.type = ZB_MSG_HEARTBEAT};
        uint8_t *body = NULL;
        size_t len = 0;
        assert_int_equal(zb_msg_encode(&hb, &body, &len, NULL), 0);
        zmq_send(w->s, body, len, ZMQ_DONTWAIT);
        free(body);
        w->last_send_ms = now;
    }
}

/*
 * Services the fake workers for up to ms milliseconds; returns true as soon
 * as sock (may be NULL) has a message waiting.
 */
static bool s_pump(int ms, void *sock) {
    uint64_t end = s_ms() + (uint64_t)ms;
    for (;;) {
        zmq_pollitem_t it[17];
        int n = 0;
        if (sock) it[n++] = (zmq_pollitem_t){sock, 0, ZMQ_POLLIN, 0};
        for (int i = 0; i < s_n_fw; i++)
            if (s_fw[i]->mode != FW_DEAD && !s_fw[i]->paused)
                it[n++] = (zmq_pollitem_t){s_fw[i]->s, 0, ZMQ_POLLIN, 0};
        uint64_t now = s_ms();
        long t = now >= end ? 0 : (long)(end - now < 20 ? end - now : 20);
        int rc = zmq_poll(it, n, t);
        for (int i = 0; i < s_n_fw; i++) fw_service(s_fw[i]);
        if (sock && rc > 0 && (it[0].revents & ZMQ_POLLIN)) return true;
        if (sock) {
            zmq_pollitem_t one = {sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&one, 1, 0) == 1) return true;
        }
        if (s_ms() >= end) return false;
    }
}

/* Pumps until cond(arg) holds; fails after S_TIMEOUT_MS. */
#define S_PUMP_UNTIL(cond)                                                                         \
    do {                                                                                           \
        uint64_t end_ = s_ms() + S_TIMEOUT_MS;                                                     \
        while (!(cond)) {                                                                          \
            if (s_ms() > end_) fail_msg("timed out waiting for: %s", #cond);                       \
            s_pump(10, NULL);                                                                      \
        }                                                                                          \
    } while (0)

/* --- fake clients ------------------------------------------------------------ */

typedef struct fc {
    void *s;
} fc_t;

static fc_t *s_fc[16];
static int s_n_fc;

/* A fake client connected with key pair self (as s_socket_as). */
static fc_t *fc_new_as(const zb_curve_cert_t *self) {
    fc_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->s = s_socket_as(ZMQ_DEALER, s_b.front, self);
    s_fc[s_n_fc++] = c;
    return c;
}

static fc_t *fc_new(void) {
    return fc_new_as(s_curve ? &s_client_cert : NULL);
}

/* The next message for c within ms (workers serviced meanwhile). */
static bool fc_recv(fc_t *c, rx_t *rx, int ms) {
    if (!s_pump(ms, c->s)) return false;
    s_recv_now(c->s, rx);
    return true;
}

static void fc_expect(fc_t *c, rx_t *rx, zb_msg_type_t type) {
    if (!fc_recv(c, rx, S_TIMEOUT_MS))
        fail_msg("no %s arrived; broker log: %s", zb_msg_type_name(type), s_b.log);
    if (rx->m.type != type) {
        const char *what = rx->m.type == ZB_MSG_ERROR ? zb_msg_code_name(rx->m.u.error.code) : "";
        fail_msg("expected %s, got %s %s", zb_msg_type_name(type), zb_msg_type_name(rx->m.type),
                 what);
    }
}

/* A duplicate_id for the open request id: without id, naming it in of. */
static void fc_expect_duplicate(fc_t *c, const char *id) {
    rx_t rx;
    fc_expect(c, &rx, ZB_MSG_ERROR);
    assert_int_equal(rx.m.u.error.code, ZB_MSG_CODE_DUPLICATE_ID);
    assert_int_equal(rx.m.u.error.id.len, 0);
    assert_true(s_str_is(rx.m.u.error.of, id));
    rx_free(&rx);
}

static void fc_expect_error(fc_t *c, const char *id, zb_msg_code_t code) {
    rx_t rx;
    fc_expect(c, &rx, ZB_MSG_ERROR);
    if (rx.m.u.error.code != code)
        fail_msg("expected error %s, got %s: %.*s", zb_msg_code_name(code),
                 zb_msg_code_name(rx.m.u.error.code), (int)rx.m.u.error.message.len,
                 rx.m.u.error.message.ptr);
    if (id)
        assert_true(s_str_is(rx.m.u.error.id, id));
    else
        assert_int_equal(rx.m.u.error.id.len, 0);
    assert_true(rx.m.u.error.message.len > 0);
    rx_free(&rx);
}

/* Nothing arrives for c within ms. */
static void fc_expect_silence(fc_t *c, int ms) {
    rx_t rx;
    if (fc_recv(c, &rx, ms)) {
        zb_msg_type_t t = rx.m.type;
        rx_free(&rx);
        fail_msg("unexpected %s", zb_msg_type_name(t));
    }
}

/* A request: texts "<tag>:<i>" ("!" for failing ones), padded to pad bytes. */
typedef struct spec {
    const char *id, *tag;
    uint32_t n;
    zb_level_t level;
    bool windows, errors;
    zb_options_t later; /* sentences, token_vector, compat, token_meta */
    uint64_t deadline_ms;
    size_t pad;
    const uint32_t *have; /* texts the client holds: sent empty, never delivered */
    size_t n_have;
    const char *model; /* embed.model: the model that must serve it; NULL: any */
} spec_t;

static bool s_spec_bad(const spec_t *sp, uint32_t i) {
    return sp->errors && i % 13 == 5;
}

static bool s_spec_held(const spec_t *sp, uint32_t i) {
    for (size_t k = 0; k + 1 < sp->n_have; k += 2)
        if (sp->have[k] <= i && i - sp->have[k] < sp->have[k + 1]) return true;
    return false;
}

static zb_options_t s_spec_options(const spec_t *sp) {
    zb_options_t o = sp->later;
    o.level = sp->level;
    o.windows = sp->windows;
    return o;
}

static void fc_embed(fc_t *c, const spec_t *sp) {
    zb_msg_str_t *texts = calloc(sp->n, sizeof *texts);
    assert_non_null(texts);
    for (uint32_t i = 0; i < sp->n; i++) {
        size_t len = sp->pad > 32 ? sp->pad : 32;
        char *t = malloc(len + 1);
        assert_non_null(t);
        int k = snprintf(t, len + 1, "%s:%u%s", sp->tag, i, s_spec_bad(sp, i) ? "!" : "");
        size_t n = (size_t)k;
        while (n < sp->pad) t[n++] = 'x';
        texts[i] = (zb_msg_str_t){t, s_spec_held(sp, i) ? 0 : n};
    }
    zb_msg_t m = {.type = ZB_MSG_EMBED};
    m.u.embed = (zb_msg_embed_t){.id = {sp->id, strlen(sp->id)},
                                 .texts = texts,
                                 .n_texts = sp->n,
                                 .opt = s_spec_options(sp),
                                 .deadline_ms = sp->deadline_ms,
                                 .have = sp->have,
                                 .n_have = sp->n_have};
    if (sp->model) m.u.embed.model = (zb_msg_str_t){sp->model, strlen(sp->model)};
    s_send_msg(c->s, &m);
    for (uint32_t i = 0; i < sp->n; i++) free((void *)texts[i].ptr);
    free(texts);
}

static void fc_cancel(fc_t *c, const char *id) {
    zb_msg_t m = {.type = ZB_MSG_CANCEL};
    m.u.cancel.id = (zb_msg_str_t){id, strlen(id)};
    s_send_msg(c->s, &m);
}

/* What a client saw of one request. */
typedef struct outcome {
    const spec_t *sp;
    uint8_t *covered; /* per text: parts that covered it */
    int parts, part_count_max, part_count_min;
    uint32_t dim;
    bool done;
    zb_msg_done_t done_msg;
    zb_msg_code_t error;
    char model[64]; /* of its parts: one per request */
} outcome_t;

/* When not 0: the epoch every row must come from (the fake workers write
 * their task's epoch into the fourth float of a row). */
static uint64_t s_want_epoch;

/* Checks one part against its spec: every text's rows, first float,
 * offsets, per-text errors and truncation flags, indices absolute. */
static void s_check_part(outcome_t *o, const zb_msg_part_t *p) {
    const spec_t *sp = o->sp;
    const zb_msg_vectors_t *v = &p->vec;
    assert_true((uint64_t)p->first + v->count <= sp->n);
    assert_int_equal(v->level, sp->level);
    if (o->parts == 0) o->dim = v->dim;
    assert_int_equal(v->dim, o->dim);
    /* every part names the model that made it, the same for the request */
    assert_true(p->model.len > 0 && p->model.len < sizeof o->model);
    if (o->parts == 0) snprintf(o->model, sizeof o->model, "%.*s", (int)p->model.len, p->model.ptr);
    assert_true(s_str_is(p->model, o->model));
    if (sp->model) assert_true(s_str_is(p->model, sp->model));
    zb_options_t so = s_spec_options(sp);
    bool meta = zb_options_meta(&so);
    assert_int_equal(v->token_meta, meta);
    const uint8_t *vec = v->vectors;
    uint64_t r = 0;
    size_t ke = 0, kt = 0;
    for (uint32_t i = 0; i < v->count; i++) {
        uint32_t idx = p->first + i;
        o->covered[idx]++;
        if (o->covered[idx] != 1) fail_msg("text %u delivered %u times", idx, o->covered[idx]);
        if (s_spec_held(sp, idx)) fail_msg("text %u is held by the client", idx);
        bool bad = s_spec_bad(sp, idx);
        assert_int_equal(v->rows[i], s_rows_of(sp->level, bad));
        for (uint32_t j = 0; j < v->rows[i]; j++, r++) {
            assert_true(s_get_f32(vec + (r * v->dim) * 4) == (float)idx);
            assert_true(s_get_f32(vec + (r * v->dim + 1) * 4) == (float)j);
            if (s_want_epoch && v->dim > 3)
                assert_true(s_get_f32(vec + (r * v->dim + 3) * 4) == (float)s_want_epoch);
            if (v->offsets) assert_int_equal(v->offsets[2 * r], j);
            if (v->ids) assert_int_equal(v->ids[r], 100 + j);
            if (meta) {
                zb_token_meta_t want;
                s_meta_of(idx, j, &want);
                assert_int_equal(v->meta[r].sentence, want.sentence);
                assert_int_equal(v->meta[r].piece_id, want.piece_id);
                assert_int_equal(v->meta[r].word_start, want.word_start);
                assert_int_equal(v->meta[r].oov, want.oov);
            }
        }
        if (bad) {
            assert_true(ke < v->n_errors);
            assert_int_equal(v->errors[ke].index, idx);
            assert_int_equal(v->errors[ke].code, ZB_MSG_CODE_BAD_UTF8);
            ke++;
        } else if (idx % 10 == 3) {
            assert_true(kt < v->n_truncated);
            assert_int_equal(v->truncated[kt], idx);
            kt++;
        }
    }
    assert_int_equal(ke, v->n_errors);
    assert_int_equal(kt, v->n_truncated);
    if (sp->level == ZB_LEVEL_WORDPIECE && r > 0) assert_non_null(v->ids);
    o->parts++;
    if (o->parts == 1 || (int)v->count > o->part_count_max) o->part_count_max = (int)v->count;
    if (o->parts == 1 || (int)v->count < o->part_count_min) o->part_count_min = (int)v->count;
}

/*
 * Receives c's messages until each of the n requests has ended (done or
 * error); checks every part; after a done, every text covered exactly once.
 */
static void s_collect(fc_t *c, outcome_t *o, const spec_t *const *specs, int n) {
    int open = n;
    for (int k = 0; k < n; k++) {
        memset(&o[k], 0, sizeof o[k]);
        o[k].sp = specs[k];
        o[k].covered = calloc(specs[k]->n, 1);
        assert_non_null(o[k].covered);
    }
    while (open > 0) {
        rx_t rx;
        if (!fc_recv(c, &rx, S_TIMEOUT_MS))
            fail_msg("%d requests still open; broker log: %s", open, s_b.log);
        zb_msg_str_t id = rx.m.type == ZB_MSG_PART    ? rx.m.u.part.id
                          : rx.m.type == ZB_MSG_DONE  ? rx.m.u.done.id
                          : rx.m.type == ZB_MSG_ERROR ? rx.m.u.error.id
                                                      : (zb_msg_str_t){NULL, 0};
        outcome_t *x = NULL;
        for (int k = 0; k < n; k++)
            if (s_str_is(id, specs[k]->id)) x = &o[k];
        if (x == NULL) fail_msg("a %s for an unknown request", zb_msg_type_name(rx.m.type));
        assert_false(x->done || x->error); /* nothing after the end */
        if (rx.m.type == ZB_MSG_PART) {
            s_check_part(x, &rx.m.u.part);
        } else if (rx.m.type == ZB_MSG_DONE) {
            x->done = true;
            x->done_msg = rx.m.u.done;
            x->done_msg.id = (zb_msg_str_t){NULL, 0};
            if (x->parts > 0) assert_true(s_str_is(rx.m.u.done.model, x->model));
            x->done_msg.model = (zb_msg_str_t){NULL, 0};
            for (uint32_t i = 0; i < x->sp->n; i++)
                if (x->covered[i] != !s_spec_held(x->sp, i))
                    fail_msg("text %u covered %u times", i, x->covered[i]);
            assert_int_equal(x->done_msg.texts, x->sp->n);
            assert_int_equal(x->done_msg.parts, (uint64_t)x->parts);
            open--;
        } else {
            x->error = rx.m.u.error.code;
            open--;
        }
        rx_free(&rx);
    }
    for (int k = 0; k < n; k++) {
        free(o[k].covered);
        o[k].covered = NULL;
    }
}

static void s_collect_one(fc_t *c, const spec_t *sp, outcome_t *o) {
    s_collect(c, o, &sp, 1);
    if (!o->done) fail_msg("request %s failed: %s", sp->id, zb_msg_code_name(o->error));
}

/* The broker's status through one client kept for it (fails when it does
 * not answer). */

static void s_status(rx_t *rx) {
    if (s_admin == NULL) s_admin = fc_new();
    fc_t *c = s_admin;
    zb_msg_t m = {.type = ZB_MSG_STATUS};
    m.u.status.id = (zb_msg_str_t){"st", 2};
    s_send_msg(c->s, &m);
    fc_expect(c, rx, ZB_MSG_STATUS_REPLY);
    assert_true(s_str_is(rx->m.u.status_reply.id, "st"));
}

/* The status asked on c's own socket: answered after everything c sent
 * before (one pipe keeps its order; two sockets would not). */
static void fc_sync_status(fc_t *c, rx_t *rx) {
    zb_msg_t m = {.type = ZB_MSG_STATUS};
    s_send_msg(c->s, &m);
    fc_expect(c, rx, ZB_MSG_STATUS_REPLY);
}

/* Waits until the broker has no open request and no shard on a worker
 * (results on their way are processed), then leaves that status in rx. */
static void s_wait_idle(rx_t *rx) {
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    for (;;) {
        s_status(rx);
        if (rx->m.u.status_reply.requests == 0 && rx->m.u.status_reply.in_flight_shards == 0)
            return;
        rx_free(rx);
        if (s_ms() > end) fail_msg("the broker stays busy");
        s_pump(20, NULL);
    }
}

static void s_wait_workers(size_t n) {
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    for (;;) {
        rx_t rx;
        s_status(&rx);
        size_t have = rx.m.u.status_reply.n_workers;
        rx_free(&rx);
        if (have == n) return;
        if (s_ms() > end) fail_msg("%zu workers registered, expected %zu", have, n);
        s_pump(20, NULL);
    }
}

static const zb_msg_worker_info_t *s_worker_info(const zb_msg_status_reply_t *s, const char *name) {
    for (size_t i = 0; i < s->n_workers; i++)
        if (s_str_is(s->workers[i].name, name)) return &s->workers[i];
    fail_msg("worker %s not in the status", name);
    return NULL;
}

/* --- setup and teardown ---------------------------------------------------------- */

static int s_setup(void **st) {
    (void)st;
    s_n_fw = s_n_fc = 0;
    s_admin = NULL;
    s_want_epoch = 0;
    s_broker_level = "info";
    s_curve = false;
    return 0;
}

static int s_teardown(void **st) {
    (void)st;
    for (int i = 0; i < s_n_fw; i++) {
        zmq_close(s_fw[i]->s);
        free(s_fw[i]);
    }
    for (int i = 0; i < s_n_fc; i++) {
        if (s_fc[i]->s) zmq_close(s_fc[i]->s);
        free(s_fc[i]);
    }
    s_n_fw = s_n_fc = 0;
    s_admin = NULL;
    int st_code = s_broker_stop(2);
    if (st_code != 0) {
        fprintf(stderr, "zbert-broker exited with status %d; log: %s\n", st_code, s_b.log);
        return -1;
    }
    return 0;
}

/* --- tests -------------------------------------------------------------------------- */

/* Sharding: bounded by texts and by estimated tokens; each text exactly once. */
static void test_split_reassemble(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_new("w1", "model-a", 4, 4, FW_AUTO);
    s_wait_workers(1);
    fc_t *c = fc_new();
    outcome_t o;

    spec_t a = {.id = "r1", .tag = "A", .n = 1000, .level = ZB_LEVEL_SENTENCE, .errors = true};
    fc_embed(c, &a);
    s_collect_one(c, &a, &o);
    assert_int_equal(o.parts, 16); /* ceil(1000 / 64) */
    assert_int_equal(o.part_count_max, 64);
    assert_int_equal(o.part_count_min, 1000 - 15 * 64);
    assert_int_equal(o.done_msg.tokens, 5000); /* the fake worker's 5 per text */
    assert_int_equal(o.dim, 4);

    /* ~4000-byte texts: ~1002 estimated tokens, capped at 512 when
     * truncating: 16 per shard; with windows 8 per shard. */
    spec_t b = {.id = "r2", .tag = "B", .n = 100, .level = ZB_LEVEL_TOKEN, .pad = 4000};
    fc_embed(c, &b);
    s_collect_one(c, &b, &o);
    assert_int_equal(o.part_count_max, 16);
    assert_int_equal(o.parts, 7);
    spec_t w = b;
    w.id = "r3";
    w.windows = true;
    fc_embed(c, &w);
    s_collect_one(c, &w, &o);
    assert_int_equal(o.part_count_max, 8);
    assert_int_equal(o.parts, 13);

    /* Wordpiece level with per-text errors: ids and offsets pass through. */
    spec_t p = {.id = "r4", .tag = "C", .n = 200, .level = ZB_LEVEL_WORDPIECE, .errors = true};
    fc_embed(c, &p);
    s_collect_one(c, &p, &o);
    assert_int_equal(o.parts, 4);

    /* One text. */
    spec_t one = {.id = "r5", .tag = "D", .n = 1, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &one);
    s_collect_one(c, &one, &o);
    assert_int_equal(o.parts, 1);
}

/* Parts stream as shards finish; a worker never holds more than its credit. */
static void test_stream_and_credit(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "s", .tag = "S", .n = 200, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    uint32_t firsts = 0;
    for (int shard = 0; shard < 4; shard++) {
        S_PUMP_UNTIL(w->n_pend == 1);
        s_pump(100, NULL);
        assert_int_equal(w->n_pend, 1); /* credit 1: the next waits */
        fw_answer(w, 0);
        rx_t rx;
        /* Its part arrives while the other shards are still to compute. */
        fc_expect(c, &rx, ZB_MSG_PART);
        assert_int_equal(rx.m.u.part.first, firsts);
        firsts += rx.m.u.part.vec.count;
        rx_free(&rx);
    }
    rx_t rx;
    fc_expect(c, &rx, ZB_MSG_DONE);
    assert_int_equal(rx.m.u.done.parts, 4);
    rx_free(&rx);
    assert_int_equal(w->max_pend, 1);
    assert_int_equal(w->n_tasks, 4);

    /* Two workers, credits 1 and 3: each filled to its credit, no more. */
    fw_t *w2 = fw_new("w2", "model-a", 4, 3, FW_HOLD);
    s_wait_workers(2);
    spec_t big = {.id = "b", .tag = "B", .n = 640, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &big);
    S_PUMP_UNTIL(w->n_pend == 1 && w2->n_pend == 3);
    s_pump(200, NULL);
    assert_int_equal(w->n_pend, 1);
    assert_int_equal(w2->n_pend, 3);
    rx_t srx;
    s_status(&srx);
    assert_int_equal(srx.m.u.status_reply.in_flight_shards, 4);
    assert_int_equal(srx.m.u.status_reply.queued_shards, 6);
    assert_int_equal(srx.m.u.status_reply.queued_texts, 6 * 64);
    assert_int_equal(s_worker_info(&srx.m.u.status_reply, "w2")->in_flight, 3);
    rx_free(&srx);
    w->mode = w2->mode = FW_AUTO;
    outcome_t o;
    s_collect_one(c, &big, &o);
    assert_int_equal(o.parts, 10);
    assert_int_equal(w->max_pend, 1);
    assert_int_equal(w2->max_pend, 3);
    assert_int_equal(w->n_tasks + w2->n_tasks, 4 + 10);
}

/* A worker that stops talking: expired, its shards re-run elsewhere, each
 * text delivered once; its late results are dropped and it is told to
 * reconnect. */
static void test_dead_worker(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w1 = fw_new("w1", "model-a", 4, 2, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "d", .tag = "D", .n = 256, .level = ZB_LEVEL_TOKEN, .errors = true};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(w1->n_pend == 2);
    w1->mode = FW_DEAD; /* no answers, no heartbeats */
    fw_t *w2 = fw_new("w2", "model-a", 4, 2, FW_AUTO);
    outcome_t o;
    s_collect_one(c, &sp, &o); /* two shards only after w1 expires */
    assert_int_equal(o.parts, 4);
    assert_int_equal(w2->n_tasks, 4);

    /* w1 wakes up and answers what it held: nothing reaches the client. */
    w1->mode = FW_HOLD;
    fw_answer(w1, 0);
    fw_answer(w1, 0);
    S_PUMP_UNTIL(w1->n_reconnects >= 1);
    fc_expect_silence(c, 300);
    rx_t rx;
    s_status(&rx);
    const zb_msg_status_reply_t *s = &rx.m.u.status_reply;
    assert_int_equal(s->n_workers, 1);
    assert_true(s_str_is(s->workers[0].name, "w2"));
    assert_int_equal(s->requests, 0);
    assert_int_equal(s->in_flight_shards, 0);
    assert_int_equal(s->protocol_errors, 0); /* late results are not errors */
    rx_free(&rx);
    assert_int_equal(s_log_count("silent for"), 1);
}

/* Client A queues 20,000 texts; client B's one text overtakes them after
 * at most a few of A's shards. */
static void test_fairness(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 2, FW_HOLD);
    s_wait_workers(1);
    fc_t *a = fc_new(), *b = fc_new();
    spec_t big = {.id = "big", .tag = "A", .n = 20000, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a, &big);
    S_PUMP_UNTIL(w->n_pend == 2);
    spec_t small = {.id = "small", .tag = "B", .n = 1, .level = ZB_LEVEL_SENTENCE};
    fc_embed(b, &small);
    rx_t rx;
    fc_sync_status(b, &rx);
    assert_int_equal(rx.m.u.status_reply.requests, 2);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 313 - 2 + 1);
    rx_free(&rx);

    /* The worker computes in order, one shard at a time. */
    int a_before_b = 0;
    for (;;) {
        S_PUMP_UNTIL(w->n_pend >= 1);
        if (strcmp(w->pend[0].tag, "B") == 0) break;
        fw_answer(w, 0);
        a_before_b++;
        assert_true(a_before_b < 50);
        s_pump(30, NULL); /* let the next task arrive */
    }
    fw_answer(w, 0);
    fc_expect(b, &rx, ZB_MSG_PART);
    rx_free(&rx);
    fc_expect(b, &rx, ZB_MSG_DONE);
    rx_free(&rx);
    /* Credit 2: the two shards already on the worker, and one more
     * dispatched before B's turn came in the round. */
    assert_true(a_before_b <= 3);
    int a_parts = 0;
    while (fc_recv(a, &rx, 200)) {
        assert_int_equal(rx.m.type, ZB_MSG_PART);
        a_parts++;
        rx_free(&rx);
    }
    assert_int_equal(a_parts, a_before_b);

    /* A gives up: canceled at once; what the worker still holds is
     * discarded when it returns. */
    fc_cancel(a, "big");
    fc_expect_error(a, "big", ZB_MSG_CODE_CANCELED);
    int held = w->n_pend;
    assert_true(held >= 1);
    while (w->n_pend > 0) fw_answer(w, 0);
    s_wait_idle(&rx);
    fc_expect_silence(a, 300);
    const zb_msg_status_reply_t *s = &rx.m.u.status_reply;
    assert_int_equal(s->requests, 0);
    assert_int_equal(s->queued_shards, 0);
    assert_int_equal(s->queued_texts, 0);
    assert_int_equal(s->in_flight_shards, 0);
    assert_int_equal(w->n_pend, 0);
    rx_free(&rx);
}

/* busy (queue and per-client limits), too_large, duplicate_id. */
static void test_limits(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_QUEUE_TEXTS_MAX=100", "ZBERT_CLIENT_REQUESTS_MAX=2",
                         "ZBERT_REQUEST_TEXTS_MAX=80", NULL};
    s_broker_start(env);
    fc_t *a = fc_new(), *b = fc_new();
    spec_t r1 = {.id = "r1", .tag = "A", .n = 10, .level = ZB_LEVEL_SENTENCE};
    spec_t r2 = r1, r1again = r1, r3 = r1;
    r2.id = "r2";
    r1again.n = 5;
    r3.id = "r3";
    fc_embed(a, &r1);
    fc_embed(a, &r2);
    fc_embed(a, &r1again);
    fc_expect_duplicate(a, "r1");
    fc_embed(a, &r3);
    fc_expect_error(a, "r3", ZB_MSG_CODE_BUSY); /* two open requests per client */

    spec_t b1 = {.id = "r1", .tag = "B", .n = 81, .level = ZB_LEVEL_SENTENCE};
    fc_embed(b, &b1);
    fc_expect_error(b, "r1", ZB_MSG_CODE_TOO_LARGE); /* over 80 per request */
    b1.n = 70;                                       /* ids are per client: r1 is free here */
    fc_embed(b, &b1);
    spec_t b2 = {.id = "b2", .tag = "B", .n = 20, .level = ZB_LEVEL_SENTENCE};
    fc_embed(b, &b2);
    fc_expect_error(b, "b2", ZB_MSG_CODE_BUSY); /* 90 + 20 > 100: refused whole */
    spec_t b3 = {.id = "b3", .tag = "B", .n = 10, .level = ZB_LEVEL_SENTENCE};
    fc_embed(b, &b3);

    rx_t rx;
    fc_sync_status(a, &rx);
    rx_free(&rx);
    fc_sync_status(b, &rx);
    assert_int_equal(rx.m.u.status_reply.requests, 4);
    assert_int_equal(rx.m.u.status_reply.queued_texts, 100);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    rx_free(&rx);

    fw_new("w1", "model-a", 4, 2, FW_AUTO);
    outcome_t o[2];
    const spec_t *as[] = {&r1, &r2}, *bs[] = {&b1, &b3};
    s_collect(a, o, as, 2);
    assert_true(o[0].done && o[1].done);
    assert_int_equal(o[0].done_msg.texts, 10); /* the first r1, not the duplicate */
    s_collect(b, o, bs, 2);
    assert_true(o[0].done && o[1].done);
    /* Refused requests are retried with the same id. */
    fc_embed(a, &r3);
    s_collect_one(a, &r3, o);
}

/* cancel, and deadlines: parts before the deadline stand, later results
 * are dropped. */
static void test_cancel_deadline(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new();
    /* token level: the late result has spans, which are checked against
     * texts only while their request is open (its body is gone after) */
    spec_t x = {.id = "x", .tag = "X", .n = 200, .level = ZB_LEVEL_TOKEN};
    fc_embed(c, &x);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_cancel(c, "x");
    fc_expect_error(c, "x", ZB_MSG_CODE_CANCELED);
    fc_cancel(c, "nope"); /* unknown: ignored */
    fc_cancel(c, "x");    /* no longer open: ignored */
    fw_answer(w, 0);
    rx_t rx;
    s_wait_idle(&rx); /* the result came back, and was dropped */
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    rx_free(&rx);
    fc_expect_silence(c, 300);
    assert_int_equal(w->n_tasks, 1); /* the other shards were dropped */

    spec_t d = {.id = "d", .tag = "D", .n = 128, .level = ZB_LEVEL_SENTENCE, .deadline_ms = 1500};
    fc_embed(c, &d);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0);
    fc_expect(c, &rx, ZB_MSG_PART);
    assert_int_equal(rx.m.u.part.first, 0);
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1); /* the second shard, held past the deadline */
    fc_expect_error(c, "d", ZB_MSG_CODE_TIMEOUT);
    fw_answer(w, 0);
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    rx_free(&rx);
    fc_expect_silence(c, 300);
}

/* status_reply carries the workers and every figure. */
static void test_status(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w1 = fw_new("alpha", "m-test", 4, 2, FW_HOLD);
    fw_t *w2 = fw_new("beta", "m-test", 4, 3, FW_HOLD);
    s_wait_workers(2);
    fc_t *c = fc_new();
    spec_t sp = {.id = "q", .tag = "Q", .n = 640, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(w1->n_pend == 2 && w2->n_pend == 3);
    rx_t rx;
    s_status(&rx);
    const zb_msg_status_reply_t *s = &rx.m.u.status_reply;
    assert_int_equal(s->n_workers, 2);
    assert_int_equal(s->requests, 1);
    assert_int_equal(s->in_flight_shards, 5);
    assert_int_equal(s->queued_shards, 5);
    assert_int_equal(s->queued_texts, 320);
    const zb_msg_worker_info_t *a = s_worker_info(s, "alpha"), *b = s_worker_info(s, "beta");
    assert_true(s_str_is(a->model, "m-test"));
    assert_int_equal(a->dim, 4);
    assert_int_equal(a->threads, 2);
    assert_int_equal(a->credit, 2);
    assert_int_equal(b->credit, 3);
    assert_int_equal(a->in_flight, 2);
    assert_int_equal(b->in_flight, 3);
    assert_int_equal(a->shards + b->shards, 0);
    assert_true(s->uptime_ms > 0);
    rx_free(&rx);

    w1->mode = w2->mode = FW_AUTO;
    w1->delay_ms = w2->delay_ms = 20; /* each request takes >= 20 ms */
    outcome_t o;
    s_collect_one(c, &sp, &o);
    spec_t sp2 = {.id = "q2", .tag = "Q", .n = 3, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp2);
    s_collect_one(c, &sp2, &o);
    s_status(&rx);
    s = &rx.m.u.status_reply;
    a = s_worker_info(s, "alpha");
    b = s_worker_info(s, "beta");
    assert_int_equal(a->shards + b->shards, 11);
    assert_int_equal(a->tokens + b->tokens, 5 * 643);
    assert_int_equal(a->in_flight + b->in_flight, 0);
    assert_true(a->idle_ms < 5000);
    assert_int_equal(s->requests, 0);
    assert_int_equal(s->queued_shards, 0);
    assert_int_equal(s->in_flight_shards, 0);
    /* 643 texts within the last 10 s: at least 64 a second on average. */
    assert_true(s->texts_per_s >= 64.3 - 1e-9);
    assert_true(s->tokens_per_s >= 5 * 64.3 - 1e-9);
    assert_true(s->latency_p50_ms >= 20);
    assert_true(s->latency_p50_ms <= s->latency_p90_ms);
    assert_true(s->latency_p90_ms <= s->latency_p99_ms);
    assert_int_equal(s->protocol_errors, 0);
    rx_free(&rx);
}

/* Hostile client and worker bytes: answered or dropped, counted, logged
 * once per peer; the broker keeps serving. */
/* libzmq names a ROUTER's anonymous peers 0x00 + a count starting at a
 * value from rand(); with the C library's default seed that start is the
 * same after every restart, and a peer that claims the next name with
 * ZMQ_ROUTING_ID used to make the broker abort on the next ordinary
 * connection.  Claim the first 64 names of that unseeded sequence on both
 * endpoints (the frontend's socket is made first, then the backend's), then
 * connect ordinary peers: the broker stays up and answers. */
/* The claims against the broker running now: n_claims names from the start
 * of each of the first n_seq sockets' unseeded sequences, on each endpoint
 * (with CurveZMQ, by peers whose keys are allowed: only they get a name at
 * all; the ZAP handler's REP socket is a ROUTER made first). */
static void s_claim_routing_ids(int n_seq, int n_claims) {
    srand(1); /* glibc's default seed, as an unseeded process has it */
    uint32_t start[3];
    assert_true(n_seq <= 3);
    for (int e = 0; e < 3; e++) {
        uint32_t low = (uint32_t)rand(), high = (uint32_t)rand();
        start[e] = (high << 31) | low; /* libzmq's generate_random() */
    }
    assert_int_equal(start[0], 0x6b8b4567u);
    assert_int_equal(start[1], 0xe43c9869u);
    void **claims = calloc((size_t)(2 * n_seq * n_claims), sizeof *claims);
    assert_non_null(claims);
    int n = 0;
    for (int ep = 0; ep < 2; ep++) {
        for (int e = 0; e < n_seq; e++) {
            for (int k = 0; k < n_claims; k++) {
                uint32_t x = start[e] + (uint32_t)k;
                uint8_t rid[5] = {0, (uint8_t)(x >> 24), (uint8_t)(x >> 16), (uint8_t)(x >> 8),
                                  (uint8_t)x};
                void *s = zmq_socket(s_ctx, ZMQ_DEALER);
                assert_non_null(s);
                int zero = 0;
                zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
                assert_int_equal(zmq_setsockopt(s, ZMQ_ROUTING_ID, rid, sizeof rid), 0);
                zb_diag_t d = {{0}};
                if (s_curve)
                    assert_int_equal(zb_curve_client_socket(s, ep ? &s_worker_cert : &s_client_cert,
                                                            s_server_cert.pub, &d),
                                     0);
                assert_int_equal(zmq_connect(s, ep == 0 ? s_b.front : s_b.back), 0);
                /* a message, so that the claim is a peer the broker served */
                zmq_send(s, "\x81\xa1v\x01", 4, ZMQ_DONTWAIT);
                claims[n++] = s;
            }
        }
    }
    usleep(300000); /* the claims connect before the ordinary peers below */
    for (int k = 0; k < 8; k++) {
        rx_t rx;
        assert_true(s_status_once(s_b.front, S_TIMEOUT_MS, &rx));
        assert_int_equal(rx.m.type, ZB_MSG_STATUS_REPLY);
        rx_free(&rx);
        void *w = s_socket(ZMQ_DEALER, s_b.back); /* an anonymous peer on the backend */
        zmq_close(w);
    }
    rx_t rx;
    assert_true(s_status_once(s_b.front, S_TIMEOUT_MS, &rx));
    rx_free(&rx);
    int status = 0;
    assert_int_equal(waitpid(s_b.pid, &status, WNOHANG), 0); /* still running */
    for (int k = 0; k < n; k++) zmq_close(claims[k]);
    free(claims);
}

static void test_claimed_routing_ids(void **st) {
    (void)st;
    s_broker_start(NULL);
    s_claim_routing_ids(2, 64);
}

static void test_malformed(void **st) {
    (void)st;
    s_broker_start(NULL);
    fc_t *c = fc_new();
    int sent_bad = 0;

    s_send_raw(c->s, "\xff\x00garbage", 9, 0);
    fc_expect_error(c, NULL, ZB_MSG_CODE_BAD_REQUEST);
    sent_bad++;

    /* A valid embed cut short. */
    zb_msg_str_t texts[2] = {{"one", 3}, {"two", 3}};
    zb_msg_t m = {.type = ZB_MSG_EMBED};
    m.u.embed = (zb_msg_embed_t){.id = {"cut", 3}, .texts = texts, .n_texts = 2};
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(zb_msg_encode(&m, &body, &len, NULL), 0);
    for (size_t cut = 1; cut < len; cut += len / 4) {
        s_send_raw(c->s, body, cut, 0);
        rx_t rx;
        fc_expect(c, &rx, ZB_MSG_ERROR);
        assert_int_equal(rx.m.u.error.code, ZB_MSG_CODE_BAD_REQUEST);
        rx_free(&rx);
        sent_bad++;
    }
    free(body);

    /* {"v": 2, "type": "embed", "id": "v2", "texts": ["a"]} */
    static const uint8_t v2[] = {0x84, 0xa1, 'v', 0x02, 0xa4, 't',  'y', 'p',  'e',  0xa5,
                                 'e',  'm',  'b', 'e',  'd',  0xa2, 'i', 'd',  0xa2, 'v',
                                 '2',  0xa5, 't', 'e',  'x',  't',  's', 0x91, 0xa1, 'a'};
    s_send_raw(c->s, v2, sizeof v2, 0);
    fc_expect_error(c, "v2", ZB_MSG_CODE_VERSION);
    sent_bad++;

    /* Two frames: answered without an id (PROTOCOL.md 2). */
    zb_msg_t stm = {.type = ZB_MSG_STATUS};
    assert_int_equal(zb_msg_encode(&stm, &body, &len, NULL), 0);
    s_send_raw(c->s, body, len, ZMQ_SNDMORE);
    s_send_raw(c->s, body, len, 0);
    free(body);
    sent_bad++;
    fc_expect_error(c, NULL, ZB_MSG_CODE_BAD_REQUEST);

    s_send_raw(c->s, "", 0, 0); /* an empty frame */
    fc_expect_error(c, NULL, ZB_MSG_CODE_BAD_REQUEST);
    sent_bad++;

    /* A message of the broker's own, sent by a client. */
    zb_msg_t dm = {.type = ZB_MSG_DONE};
    dm.u.done = (zb_msg_done_t){.id = {"dd", 2}, .texts = 1, .parts = 1};
    s_send_msg(c->s, &dm);
    fc_expect_error(c, "dd", ZB_MSG_CODE_BAD_REQUEST);
    sent_bad++;

    /* 100,001 texts: the encoder refuses it, so patch the count of a
     * 100,000-text embed (array 32 header, texts last) and add one. */
    enum { N = 100000 };
    zb_msg_str_t *many = calloc(N, sizeof *many);
    assert_non_null(many);
    for (int i = 0; i < N; i++) many[i] = (zb_msg_str_t){"a", 1};
    m.u.embed = (zb_msg_embed_t){.id = {"big", 3}, .texts = many, .n_texts = N};
    assert_int_equal(zb_msg_encode(&m, &body, &len, NULL), 0);
    free(many);
    uint8_t *p = s_find_bytes(body, len, "\xdd\x00\x01\x86\xa0", 5);
    assert_non_null(p);
    p[4] = 0xa1;
    uint8_t *more = realloc(body, len + 2);
    assert_non_null(more);
    more[len] = 0xa1;
    more[len + 1] = 'b';
    s_send_raw(c->s, more, len + 2, 0);
    free(more);
    fc_expect_error(c, "big", ZB_MSG_CODE_TOO_LARGE);
    sent_bad++;

    /* No texts; an unknown type. */
    static const uint8_t empty_texts[] = {0x84, 0xa1, 'v', 0x01, 0xa4, 't',  'y', 'p', 'e',  0xa5,
                                          'e',  'm',  'b', 'e',  'd',  0xa2, 'i', 'd', 0xa4, 'n',
                                          'o',  'n',  'e', 0xa5, 't',  'e',  'x', 't', 's',  0x90};
    s_send_raw(c->s, empty_texts, sizeof empty_texts, 0);
    fc_expect_error(c, "none", ZB_MSG_CODE_BAD_REQUEST);
    sent_bad++;
    static const uint8_t foo[] = {0x83, 0xa1, 'v', 0x01, 0xa4, 't', 'y', 'p',  'e',
                                  0xa3, 'f',  'o', 'o',  0xa2, 'i', 'd', 0xa1, 'f'};
    s_send_raw(c->s, foo, sizeof foo, 0);
    fc_expect_error(c, "f", ZB_MSG_CODE_BAD_REQUEST);
    sent_bad++;

    /* The worker side: garbage, a broker's message, two frames -- all
     * dropped without an answer (not even reconnect). */
    void *raw = s_socket(ZMQ_DEALER, s_b.back);
    s_send_raw(raw, "\xc1\xc1\xc1", 3, 0);
    zb_msg_t tm = {.type = ZB_MSG_TASK};
    tm.u.task = (zb_msg_task_t){.shard = 1, .texts = texts, .n_texts = 1};
    s_send_msg(raw, &tm);
    s_send_raw(raw, "a", 1, ZMQ_SNDMORE);
    s_send_raw(raw, "b", 1, 0);
    sent_bad += 3;
    zmq_pollitem_t it = {raw, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 300), 0);
    zmq_close(raw);

    /* Still serving. */
    fw_new("w1", "model-a", 4, 2, FW_AUTO);
    spec_t sp = {.id = "ok", .tag = "K", .n = 100, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    outcome_t o;
    s_collect_one(c, &sp, &o);
    rx_t rx;
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, (uint64_t)sent_bad);
    rx_free(&rx);
    /* One client and one worker socket misbehaved: one line each. */
    assert_int_equal(s_log_count("further errors are only counted"), 2);
}

/* Messages from a worker the broker does not know: reconnect. */
static void test_reconnect(void **st) {
    (void)st;
    s_broker_start(NULL);
    void *raw = s_socket(ZMQ_DEALER, s_b.back);
    zmq_pollitem_t it = {raw, 0, ZMQ_POLLIN, 0};
    rx_t rx;

    zb_msg_t hb = {.type = ZB_MSG_HEARTBEAT};
    s_send_msg(raw, &hb);
    assert_int_equal(zmq_poll(&it, 1, S_TIMEOUT_MS), 1);
    s_recv_now(raw, &rx);
    assert_int_equal(rx.m.type, ZB_MSG_RECONNECT);
    rx_free(&rx);
    /* More messages right after: one reconnect is enough. */
    s_send_msg(raw, &hb);
    assert_int_equal(zmq_poll(&it, 1, 300), 0);

    /* A late result of a peer the broker does not know. */
    uint32_t rows[1] = {1};
    float v[2] = {1, 2};
    zb_msg_t res = {.type = ZB_MSG_RESULT};
    res.u.result = (zb_msg_result_t){.shard = 999,
                                     .vec = {.level = ZB_LEVEL_SENTENCE,
                                             .dim = 2,
                                             .count = 1,
                                             .rows = rows,
                                             .n_rows = 1,
                                             .vectors = v,
                                             .vectors_len = 8}};
    void *raw2 = s_socket(ZMQ_DEALER, s_b.back);
    zmq_pollitem_t it2 = {raw2, 0, ZMQ_POLLIN, 0};
    s_send_msg(raw2, &res);
    assert_int_equal(zmq_poll(&it2, 1, S_TIMEOUT_MS), 1);
    s_recv_now(raw2, &rx);
    assert_int_equal(rx.m.type, ZB_MSG_RECONNECT);
    rx_free(&rx);
    zb_msg_t bye = {.type = ZB_MSG_BYE};
    s_send_msg(raw2, &bye); /* leaving: nothing to say */
    assert_int_equal(zmq_poll(&it2, 1, 300), 0);
    zmq_close(raw2);

    zb_msg_t ready = {.type = ZB_MSG_READY};
    ready.u.ready = (zb_msg_ready_t){
        .name = {"raw", 3}, .model = {"m", 1}, .dim = 2, .threads = 1, .credit = 1};
    s_send_msg(raw, &ready);
    s_wait_workers(1);
    /* Known now: no reconnect, only heartbeats; a result for a shard it
     * was never given is a protocol error, dropped. */
    s_send_msg(raw, &hb);
    s_send_msg(raw, &res);
    while (zmq_poll(&it, 1, 300) == 1) {
        s_recv_now(raw, &rx);
        assert_int_equal(rx.m.type, ZB_MSG_HEARTBEAT);
        rx_free(&rx);
    }
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 1);
    assert_int_equal(rx.m.u.status_reply.n_workers, 1);
    rx_free(&rx);
    /* bye: forgotten. */
    s_send_msg(raw, &bye);
    s_wait_workers(0);
    zmq_close(raw);
}

/* A worker whose results do not match their tasks is set aside: its shards
 * go to a good worker without counting a loss, so every request completes
 * exactly once; status shows it set aside and counts its bad results; it
 * gets no task while set aside, even after it reconnects. */
static void test_bad_results(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *bad = fw_new("bad", "model-a", 4, 4, FW_AUTO);
    bad->wrong_dim = true;
    bad->ready_on_reconnect = true;
    s_wait_workers(1);
    fc_t *c = fc_new();
    /* Alone, it takes a shard, returns garbage and is set aside. */
    spec_t sp = {.id = "p", .tag = "P", .n = 200, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(bad->n_reconnects >= 1);
    int tasks_then = bad->n_tasks;
    /* A good worker joins: every text arrives exactly once. */
    fw_t *good = fw_new("good", "model-a", 4, 2, FW_AUTO);
    (void)good;
    outcome_t o;
    s_collect_one(c, &sp, &o);
    assert_int_equal(bad->n_tasks, tasks_then);
    rx_t rx;
    s_status(&rx);
    const zb_msg_status_reply_t *s = &rx.m.u.status_reply;
    assert_int_equal(s->n_workers, 2);
    assert_int_equal(s->bad_results, 1);
    for (size_t k = 0; k < s->n_workers; k++) {
        if (s_str_is(s->workers[k].name, "bad"))
            assert_true(s->workers[k].quarantined_ms > 20000);
        else
            assert_int_equal(s->workers[k].quarantined_ms, 0);
    }
    rx_free(&rx);
    assert_int_equal(s_log_count("set aside for 30 s"), 1);
    /* More work: only the good one serves it. */
    spec_t more = {.id = "q", .tag = "Q", .n = 100, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &more);
    s_collect_one(c, &more, &o);
    assert_int_equal(bad->n_tasks, tasks_then);
}

/* The later options reach every task as the request had them, token
 * metadata reaches the client with every part, re-based to the request;
 * options no worker can honour are refused at once. */
static void test_token_options(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 2, FW_AUTO);
    s_wait_workers(1);
    fc_t *c = fc_new();
    outcome_t o;
    const zb_options_t later[] = {
        {.sentences = true, .token_vector = ZB_TOKEN_VECTOR_MEAN},
        {.compat = ZB_COMPAT_SPARKNLP},
        {.token_meta = true, .token_vector = ZB_TOKEN_VECTOR_MEAN},
        {.token_vector = ZB_TOKEN_VECTOR_MEAN}, /* no metadata */
    };
    char id[8];
    for (size_t k = 0; k < sizeof later / sizeof *later; k++) {
        snprintf(id, sizeof id, "t%zu", k);
        spec_t sp = {.id = id,
                     .tag = "T",
                     .n = 300,
                     .level = ZB_LEVEL_TOKEN,
                     .errors = true,
                     .windows = k % 2 == 0,
                     .later = later[k]};
        fc_embed(c, &sp);
        s_collect_one(c, &sp, &o);
        assert_true(o.parts > 1);
        zb_options_t want = s_spec_options(&sp), got = w->last_opt;
        assert_int_equal(got.level, want.level);
        assert_int_equal(got.windows, want.windows);
        assert_int_equal(got.sentences, want.sentences);
        assert_int_equal(got.token_vector, want.token_vector);
        assert_int_equal(got.compat, want.compat);
        assert_int_equal(got.token_meta, want.token_meta);
    }
    /* wordpiece level with sentences: no metadata, options passed on */
    spec_t wp = {.id = "wp",
                 .tag = "W",
                 .n = 100,
                 .level = ZB_LEVEL_WORDPIECE,
                 .later = {.sentences = true, .token_meta = true}};
    fc_embed(c, &wp);
    s_collect_one(c, &wp, &o);
    assert_true(w->last_opt.sentences && w->last_opt.token_meta);
    /* what the engine cannot honour (our encoder refuses to write it):
     * bad_request naming the option */
    static const zb_msg_str_t three[1] = {{"B:0", 3}};
    zb_msg_embed_t e = {
        .id = {"bad", 3}, .texts = three, .n_texts = 1, .opt = {.compat = ZB_COMPAT_SPARKNLP}};
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(zb_msg_encode_embed(&e, &body, &len, NULL), 0);
    uint8_t *lv = s_find_bytes(body, len, "\xa5level\xa5token", 12);
    assert_non_null(lv);
    uint8_t *bad = malloc(len + 4);
    size_t at = (size_t)(lv - body) + 6;
    memcpy(bad, body, at);
    memcpy(bad + at, "\xa9wordpiece", 10);
    memcpy(bad + at + 10, body + at + 6, len - at - 6);
    s_send_raw(c->s, bad, len + 4, 0);
    free(bad);
    free(body);
    rx_t rx;
    fc_expect(c, &rx, ZB_MSG_ERROR);
    assert_int_equal(rx.m.u.error.code, ZB_MSG_CODE_BAD_REQUEST);
    assert_true(s_str_is(rx.m.u.error.id, "bad"));
    assert_non_null(
        s_find_bytes((uint8_t *)rx.m.u.error.message.ptr, rx.m.u.error.message.len, "compat", 6));
    rx_free(&rx);
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 1);
    rx_free(&rx);
}

/* A worker that ignores the options asking for token metadata (an older
 * one) breaks the protocol: it is set aside, and with no other worker the
 * request fails no_model instead of reaching the client without it. */
static void test_meta_mismatch(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_NO_WORKER_MS=1000", NULL};
    s_broker_start(env);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_AUTO);
    w->drop_meta = true;
    w->ready_on_reconnect = true;
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {
        .id = "m", .tag = "M", .n = 10, .level = ZB_LEVEL_TOKEN, .later = {.sentences = true}};
    fc_embed(c, &sp);
    fc_expect_error(c, "m", ZB_MSG_CODE_NO_MODEL);
    assert_int_equal(w->n_tasks, 1);
    assert_int_equal(s_log_count("lacks token metadata, which the task asked for"), 1);
    rx_t rx;
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 1);
    assert_int_equal(rx.m.u.status_reply.bad_results, 1);
    rx_free(&rx);
}

/* Results of the right shape but impossible content -- a span past the end
 * of its text, a NaN -- are refused like a wrong shape. */
static void test_bad_content(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *bad = fw_new("bad", "model-a", 4, 2, FW_AUTO);
    bad->bad_content = 1; /* spans past the text */
    bad->ready_on_reconnect = true;
    fw_t *nan = fw_new("nan", "model-a", 4, 2, FW_AUTO);
    nan->bad_content = 2; /* a NaN */
    nan->ready_on_reconnect = true;
    s_wait_workers(2);
    fc_t *c = fc_new();
    spec_t sp = {.id = "t", .tag = "T", .n = 300, .level = ZB_LEVEL_TOKEN};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(bad->n_reconnects >= 1 && nan->n_reconnects >= 1);
    fw_t *good = fw_new("good", "model-a", 4, 2, FW_AUTO);
    (void)good;
    outcome_t o;
    s_collect_one(c, &sp, &o);
    assert_int_equal(s_log_count("code points of a"), 1);
    assert_int_equal(s_log_count("is NaN"), 1);
    rx_t rx;
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.bad_results, 2);
    rx_free(&rx);
}

/* Waits until the broker counts n shards on workers. */
static void s_wait_in_flight(uint64_t n) {
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    for (;;) {
        rx_t rx;
        s_status(&rx);
        uint64_t have = rx.m.u.status_reply.in_flight_shards;
        rx_free(&rx);
        if (have == n) return;
        if (s_ms() > end)
            fail_msg("%llu shards in flight, expected %llu", (unsigned long long)have,
                     (unsigned long long)n);
        s_pump(20, NULL);
    }
}

/*
 * A worker announcing itself again on the same connection while tasks are
 * on their way to it.  Without epochs, those tasks arrived after both sides
 * had reset their counts and used up credit of the new registration: the
 * tasks dispatched after the ready were dropped as beyond the credit and
 * never answered, and the request hung (with an old-style worker, request b
 * below never finished).  Now the worker drops the earlier epoch's tasks
 * and the broker drops the earlier epoch's results: both requests complete,
 * every text once, every row from a task of the latest epoch.
 */
static void test_ready_race(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 4, FW_AUTO);
    w->per_epoch = true;
    s_wait_workers(1);
    fc_t *c = fc_new();

    /* Two tasks of epoch 1 wait unread in the worker's socket when its
     * second ready leaves; the broker takes them back, sends them again
     * under epoch 2, and fills the credit with request b's. */
    w->paused = true;
    spec_t a = {.id = "a", .tag = "A", .n = 128, .level = ZB_LEVEL_SENTENCE};
    spec_t b = {.id = "b", .tag = "B", .n = 128, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &a);
    s_wait_in_flight(2);
    fw_send_ready(w);
    S_PUMP_UNTIL(s_log_count("sent ready again") == 1);
    s_wait_in_flight(2);
    fc_embed(c, &b);
    s_wait_in_flight(4);
    w->paused = false;
    s_want_epoch = 2;
    outcome_t o[2];
    const spec_t *ab[] = {&a, &b};
    s_collect(c, o, ab, 2);
    assert_true(o[0].done && o[1].done);
    assert_int_equal(o[0].parts + o[1].parts, 4);
    assert_int_equal(w->n_stale, 2); /* the epoch-1 copies, dropped on arrival */
    assert_int_equal(w->n_over, 0);  /* the new epoch had its whole credit */

    /* Results of the earlier epoch for shards in flight again under the
     * same ids: discarded, not delivered. */
    w->mode = FW_HOLD;
    spec_t r = {.id = "r", .tag = "R", .n = 640, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &r);
    S_PUMP_UNTIL(w->n_pend == 4);
    fw_send_ready(w); /* epoch 3 */
    S_PUMP_UNTIL(s_log_count("sent ready again") == 2);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(w->pend[0].epoch, 2);
        fw_answer(w, 0);
    }
    s_want_epoch = 3;
    w->mode = FW_AUTO;
    s_collect_one(c, &r, o);
    assert_int_equal(o[0].parts, 10);
    assert_int_equal(w->n_over, 0);

    rx_t rx;
    s_wait_idle(&rx);
    const zb_msg_status_reply_t *s = &rx.m.u.status_reply;
    assert_int_equal(s->protocol_errors, 0); /* stale results are not errors */
    assert_int_equal(s->n_workers, 1);
    assert_int_equal(s->workers[0].shards, 10); /* since its latest ready */
    rx_free(&rx);
}

/*
 * A live worker that drops a task without a word: after shard-timeout-ms
 * the shard goes back to the queue and the worker's credit for it is given
 * back; the request completes, every text once; a late answer is dropped.
 * A shard lost to the timeout three times fails its request.
 */
static void test_shard_timeout(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_SHARD_TIMEOUT_MS=500", NULL};
    s_broker_start(env);
    fw_t *w = fw_new("w1", "model-a", 4, 2, FW_AUTO);
    w->per_epoch = true;
    w->swallow = 1;
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "t", .tag = "T", .n = 320, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    outcome_t o;
    s_collect_one(c, &sp, &o);
    assert_int_equal(o.parts, 5);
    assert_int_equal(w->n_swallowed, 1);
    assert_int_equal(w->n_tasks, 5); /* the lost shard ran again, once */
    assert_int_equal(w->n_over, 0);  /* its credit came back with it */
    assert_int_equal(s_log_count("shard-timeout-ms); it goes back"), 1);

    /* The lost task's answer, long after: dropped, not an error. */
    w->pend[w->n_pend++] = w->swallowed[0];
    fw_answer(w, w->n_pend - 1);
    S_PUMP_UNTIL(s_log_count("late result for shard") == 1);
    fc_expect_silence(c, 300);
    rx_t rx;
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    assert_int_equal(rx.m.u.status_reply.workers[0].in_flight, 0);
    rx_free(&rx);

    /* Lost three times: the request fails, the worker stays. */
    w->swallow = 3;
    spec_t lost = {.id = "x", .tag = "X", .n = 10, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &lost);
    fc_expect_error(c, "x", ZB_MSG_CODE_INTERNAL);
    assert_int_equal(w->n_swallowed, 4);
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.n_workers, 1);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    rx_free(&rx);
    spec_t after = {.id = "y", .tag = "Y", .n = 10, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &after);
    s_collect_one(c, &after, &o);
}

/* A client that reads nothing yet: ZeroMQ queues 1 message for it and the
 * kernel as little as it can. */
static fc_t *fc_new_slow(void) {
    fc_t *c = fc_new();
    zmq_close(c->s);
    c->s = zmq_socket(s_ctx, ZMQ_DEALER);
    assert_non_null(c->s);
    int zero = 0, one = 1, small = 4096;
    zmq_setsockopt(c->s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->s, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(c->s, ZMQ_RCVBUF, &small, sizeof small);
    assert_int_equal(zmq_connect(c->s, s_b.front), 0);
    return c;
}

/*
 * A client slower than the workers: once ZeroMQ's few messages to it wait
 * unread, the broker holds its parts and sends them as room appears --
 * none is lost, each text arrives once, the client is never dropped.  Over
 * client-bytes-max its work pauses (the workers get none of its shards)
 * until it reads.  Replies of no request beyond client-hwm are dropped,
 * its requests never.
 */
static void test_slow_client(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_CLIENT_HWM=20", "ZBERT_CLIENT_BYTES_MAX=4194304", NULL};
    s_broker_level = "debug";
    s_broker_start(env);
    /* 64 texts x 4096 floats: 1 MiB parts */
    fw_t *w = fw_new("w1", "model-a", 4096, 4, FW_AUTO);
    s_wait_workers(1);

    fc_t *c = fc_new_slow();
    spec_t sp = {.id = "slow", .tag = "S", .n = 34 * 64, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(s_log_count("its work pauses") == 1);
    S_PUMP_UNTIL(w->n_pend == 0);
    int tasks = w->n_tasks;
    s_pump(500, NULL); /* nothing more runs for it while it reads nothing */
    assert_int_equal(w->n_tasks, tasks);
    assert_true(tasks < 34);
    /* replies it does not read: past client-hwm they are dropped */
    zb_msg_t ping = {.type = ZB_MSG_STATUS};
    for (int i = 0; i < 30; i++) s_send_msg(c->s, &ping);
    S_PUMP_UNTIL(s_log_count("replies wait unread; this one is dropped") >= 1);
    outcome_t o;
    int open = 1, parts = 0, replies = 0;
    o = (outcome_t){.sp = &sp, .covered = calloc(sp.n, 1)};
    while (open > 0) {
        rx_t rx;
        if (!fc_recv(c, &rx, S_TIMEOUT_MS)) fail_msg("the slow client was left waiting");
        if (rx.m.type == ZB_MSG_STATUS_REPLY) {
            replies++;
        } else if (rx.m.type == ZB_MSG_PART) {
            s_check_part(&o, &rx.m.u.part);
            parts++;
        } else {
            assert_int_equal(rx.m.type, ZB_MSG_DONE);
            assert_int_equal(rx.m.u.done.parts, 34);
            open--;
        }
        rx_free(&rx);
    }
    for (uint32_t i = 0; i < sp.n; i++) assert_int_equal(o.covered[i], 1);
    free(o.covered);
    assert_int_equal(parts, 34);
    assert_true(replies >= 20 && replies < 30);
    assert_int_equal(w->n_tasks, 34);
    assert_int_equal(s_log_count("dropping its"), 0);
}

/* Whether the programs under test run under AddressSanitizer (a build with
 * SANITIZE=1 builds the tests with it too): its quarantine of freed blocks
 * and its shadow memory make the broker's size no measure of its own. */
#if defined(__SANITIZE_ADDRESS__)
#define S_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_ASAN 1
#endif
#endif
#ifndef S_ASAN
#define S_ASAN 0
#endif

/* The broker's memory in KiB: VmRSS (now) or VmHWM (its peak). */
static uint64_t s_broker_kib(const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s_b.pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    uint64_t kib = 0;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') kib = strtoull(line + n + 1, NULL, 10);
    fclose(f);
    assert_true(kib > 0);
    return kib;
}

/*
 * Memory in bytes (broker.h, Memory): a client that reads nothing of a
 * long wordpiece job holds the broker's memory to the formula -- its
 * client-bytes-max plus what was on the workers when its work paused --
 * while another client is served in full; once it has read everything the
 * broker gives the memory back.  Without the budget the job's 400 MiB of
 * parts would pile up in the broker.  (Under AddressSanitizer the figures
 * are printed, not judged.)
 */
static void test_memory_budget(void **st) {
    (void)st;
    const uint64_t budget = 8u << 20, part = 2u << 20; /* 64 texts x 2 rows x 4096 floats */
    const char *env[] = {"ZBERT_CLIENT_BYTES_MAX=8388608", NULL};
    s_broker_start(env);
    fw_t *w = fw_new("w1", "model-a", 4096, 2, FW_AUTO);
    s_wait_workers(1);
    uint64_t base = s_broker_kib("VmRSS");

    fc_t *slow = fc_new_slow();
    spec_t big = {.id = "big", .tag = "B", .n = 200 * 64, .level = ZB_LEVEL_WORDPIECE};
    fc_embed(slow, &big);
    S_PUMP_UNTIL(s_log_count("its work pauses") == 1);
    S_PUMP_UNTIL(w->n_pend == 0);
    /* another client is served meanwhile, whole */
    fc_t *fast = fc_new();
    spec_t small = {.id = "small", .tag = "F", .n = 20 * 64, .level = ZB_LEVEL_SENTENCE};
    fc_embed(fast, &small);
    outcome_t o;
    s_collect_one(fast, &small, &o);
    assert_int_equal(o.parts, 20);
    assert_true(w->n_tasks < 200 / 4);

    /* the formula of broker.h for this run: the bodies of the requests,
     * two owners' budgets, the worker's credit of results, and a result
     * and a part being converted; the fixed overhead is the broker's size
     * before (and an allowance for allocator slack) */
    uint64_t bodies = (uint64_t)(big.n + small.n) * (32 + 16 + 8);
    uint64_t formula = bodies + 2 * budget + 2 * part + 2 * part;
    uint64_t peak = s_broker_kib("VmHWM");
    uint64_t slack = 8u << 10; /* KiB */
    fprintf(stderr,
            "    broker memory: %llu KiB at start, peak %llu KiB, formula %llu KiB + %llu KiB "
            "slack\n",
            (unsigned long long)base, (unsigned long long)peak, (unsigned long long)(formula >> 10),
            (unsigned long long)slack);
    if (!S_ASAN && peak > base + (formula >> 10) + slack)
        fail_msg("peak %llu KiB is over the formula's %llu KiB", (unsigned long long)peak,
                 (unsigned long long)(base + (formula >> 10) + slack));

    /* the slow client drains: every text once, and the memory goes back */
    s_collect_one(slow, &big, &o);
    assert_int_equal(o.parts, 200);
    rx_t rx;
    s_wait_idle(&rx);
    rx_free(&rx);
    uint64_t after = s_broker_kib("VmRSS");
    fprintf(stderr, "    broker memory after the slow client drained: %llu KiB\n",
            (unsigned long long)after);
    if (!S_ASAN && after > base + slack)
        fail_msg("%llu KiB after draining, %llu KiB at start", (unsigned long long)after,
                 (unsigned long long)base);
}

/*
 * A client that reconnects under a new routing id (it set none of its own)
 * and sends its request again: that is a new owner, and a new request.
 * The old one waits for its owner, computed and kept, and ends after
 * resume-ms.  The new one completes.
 */
static void test_client_reconnects(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_RESUME_MS=1500", NULL};
    s_broker_start(env);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "g", .tag = "G", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(w->n_pend == 1);
    /* reconnect: a new socket, the same request */
    zmq_close(c->s);
    c->s = s_socket(ZMQ_DEALER, s_b.front);
    fc_embed(c, &sp);
    rx_t rx;
    fc_sync_status(c, &rx);
    assert_int_equal(rx.m.u.status_reply.requests, 2); /* the old one is not known gone yet */
    assert_int_equal(rx.m.u.status_reply.queued_shards, 2 + 3);
    rx_free(&rx);
    s_pump(300, NULL); /* the broker sees the old connection close */
    fw_answer(w, 0);   /* the old request's first shard: its part has no route */
    w->mode = FW_AUTO;
    outcome_t o;
    s_collect_one(c, &sp, &o);
    assert_int_equal(o.parts, 3);
    S_PUMP_UNTIL(s_log_count("its owner did not resume it; dropped") == 1);
    assert_int_equal(w->n_tasks, 3 + 3); /* the old one ran, for its owner */
    assert_int_equal(s_log_count("gone; its 1 open requests wait 1500 ms"), 1);
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    rx_free(&rx);
}

/* A client socket that announces routing id rid (PROTOCOL.md 1: 16 bytes,
 * the first not 0; a short printable one does as well here), with key pair
 * self (NULL: without CurveZMQ). */
static fc_t *fc_new_rid(const zb_curve_cert_t *self, const char *rid) {
    fc_t *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->s = zmq_socket(s_ctx, ZMQ_DEALER);
    assert_non_null(c->s);
    int zero = 0;
    zmq_setsockopt(c->s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_setsockopt(c->s, ZMQ_ROUTING_ID, rid, strlen(rid)), 0);
    zb_diag_t d = {{0}};
    if (self != NULL)
        assert_int_equal(zb_curve_client_socket(c->s, self, s_server_cert.pub, &d), 0);
    assert_int_equal(zmq_connect(c->s, s_b.front), 0);
    s_fc[s_n_fc++] = c;
    return c;
}

static void fc_close(fc_t *c) {
    zmq_close(c->s);
    c->s = NULL;
}

/* Receives c's parts of request id until its done; marks each text in
 * seen (which must not have it yet); returns the done. */
static zb_msg_done_t fc_parts_until_done(fc_t *c, const char *id, uint8_t *seen, uint32_t n,
                                         int *parts) {
    for (;;) {
        rx_t rx;
        if (!fc_recv(c, &rx, S_TIMEOUT_MS)) fail_msg("no done for %s; log: %s", id, s_b.log);
        if (rx.m.type == ZB_MSG_DONE) {
            assert_true(s_str_is(rx.m.u.done.id, id));
            zb_msg_done_t d = rx.m.u.done;
            d.id = (zb_msg_str_t){NULL, 0};
            rx_free(&rx);
            return d;
        }
        if (rx.m.type != ZB_MSG_PART) fail_msg("a %s before done", zb_msg_type_name(rx.m.type));
        assert_true(s_str_is(rx.m.u.part.id, id));
        const zb_msg_vectors_t *v = &rx.m.u.part.vec;
        for (uint32_t i = 0; i < v->count; i++) {
            uint32_t idx = rx.m.u.part.first + i;
            assert_true(idx < n);
            if (seen[idx]) fail_msg("text %u of %s delivered twice", idx, id);
            seen[idx] = 1;
            assert_true(s_get_f32((const uint8_t *)v->vectors + (size_t)i * v->dim * 4) ==
                        (float)idx);
        }
        (*parts)++;
        rx_free(&rx);
    }
}

/*
 * Without CurveZMQ a request belongs to its client's routing id
 * (PROTOCOL.md 1 and 3): a client that sets its own keeps its requests
 * across reconnections.  Its connection found gone, the request waits,
 * computed and kept; any message from a new connection with the same
 * routing id brings the kept parts first, in order, then the rest.  A new
 * connection taking the routing id from a live one takes it over
 * (ZMQ_ROUTER_HANDOVER) instead of being ignored.  status_reply.open lists
 * the owner's open requests.
 */
static void test_client_identity(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    rx_t rx;
    uint8_t seen[192];
    int parts = 0;

    /* 1: gone, then back under the same routing id */
    memset(seen, 0, sizeof seen);
    fc_t *a = fc_new_rid(NULL, "client-R");
    spec_t g = {.id = "g", .tag = "G", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a, &g);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0);
    fc_expect(a, &rx, ZB_MSG_PART);
    for (uint32_t i = 0; i < rx.m.u.part.vec.count; i++) seen[rx.m.u.part.first + i] = 1;
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_close(a);
    s_pump(300, NULL); /* the broker sees the connection close */
    fw_answer(w, 0);   /* no route: the request waits for its owner, and runs on */
    S_PUMP_UNTIL(s_log_count("gone; its 1 open requests wait 300000 ms") == 1);
    w->mode = FW_AUTO;
    S_PUMP_UNTIL(w->n_tasks == 3 && w->n_pend == 0);
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.requests, 1);
    assert_int_equal(rx.m.u.status_reply.n_open, 0); /* not the asker's */
    rx_free(&rx);
    fc_t *a2 = fc_new_rid(NULL, "client-R");
    zb_msg_t ping = {.type = ZB_MSG_STATUS};
    s_send_msg(a2->s, &ping);
    zb_msg_done_t done = fc_parts_until_done(a2, "g", seen, 192, &parts);
    assert_int_equal(parts, 2);
    assert_int_equal(done.texts, 192);
    assert_int_equal(done.parts, 3); /* one before the connection was lost */
    for (int i = 0; i < 192; i++) assert_int_equal(seen[i], 1);
    fc_expect(a2, &rx, ZB_MSG_STATUS_REPLY); /* after what was kept */
    assert_int_equal(rx.m.u.status_reply.n_open, 0);
    rx_free(&rx);
    assert_int_equal(w->n_tasks, 3); /* nothing computed twice */
    assert_int_equal(s_log_count("its owner is back"), 1);

    /* 2: open lists the owner's requests, to it alone */
    w->mode = FW_HOLD;
    spec_t h = {.id = "h", .tag = "H", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a2, &h);
    fc_sync_status(a2, &rx);
    assert_int_equal(rx.m.u.status_reply.n_open, 1);
    assert_true(s_str_is(rx.m.u.status_reply.open[0], "h"));
    rx_free(&rx);
    s_status(&rx);
    assert_int_equal(rx.m.u.status_reply.n_open, 0);
    rx_free(&rx);

    /* 3: a new connection takes the routing id over from a live one */
    fc_t *a3 = fc_new_rid(NULL, "client-R");
    fc_sync_status(a3, &rx);
    assert_int_equal(rx.m.u.status_reply.n_open, 1);
    rx_free(&rx);
    w->mode = FW_AUTO;
    memset(seen, 0, sizeof seen);
    parts = 0;
    done = fc_parts_until_done(a3, "h", seen, 192, &parts);
    assert_int_equal(parts, 3);
    assert_int_equal(done.parts, 3);
    fc_expect_silence(a2, 200);
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    rx_free(&rx);
}

/*
 * have and resumption (PROTOCOL.md 3): a new request's held texts get no
 * shard and no part (a request holding every text gets done at once with
 * parts 0); the same id sent again by its owner with the same text count
 * and options resumes it, on the same connection too -- with have, nothing
 * the client holds is computed or sent again, parts kept for it included;
 * without, what was handed to ZeroMQ is made again.  Another text count
 * under an open id is duplicate_id without id, naming it in of; the open
 * request goes on.
 */
static void test_resume_have(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new_rid(NULL, "client-H");
    rx_t rx;
    outcome_t o;

    /* 1: a new request with have: texts 10..99 and 150..191 held */
    static const uint32_t have1[4] = {10, 90, 150, 42};
    spec_t a = {.id = "a", .tag = "A", .n = 192, .level = ZB_LEVEL_SENTENCE};
    a.have = have1;
    a.n_have = 4;
    w->mode = FW_AUTO;
    fc_embed(c, &a);
    s_collect_one(c, &a, &o);
    assert_int_equal(o.done_msg.texts, 192);
    assert_int_equal(o.done_msg.parts, (uint64_t)o.parts);
    assert_int_equal(o.parts, 2); /* 0..9 and 100..149 */
    assert_int_equal(w->n_tasks, 2);

    /* 2: every text held: done at once, no part, nothing computed */
    static const uint32_t all[2] = {0, 192};
    spec_t z = a;
    z.id = "z";
    z.have = all;
    z.n_have = 2;
    fc_embed(c, &z);
    fc_expect(c, &rx, ZB_MSG_DONE);
    assert_int_equal(rx.m.u.done.parts, 0);
    assert_int_equal(rx.m.u.done.texts, 192);
    rx_free(&rx);
    assert_int_equal(w->n_tasks, 2);

    /* 3: resumed on the same connection with have: what the client holds
     * is neither computed nor sent again */
    w->mode = FW_HOLD;
    spec_t r = {.id = "r", .tag = "R", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &r);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0); /* texts 0..63 */
    fc_expect(c, &rx, ZB_MSG_PART);
    assert_int_equal(rx.m.u.part.first, 0);
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1); /* 64..127 on the worker */
    int tasks = w->n_tasks;
    static const uint32_t have3[2] = {0, 64};
    spec_t r2 = r;
    r2.have = have3;
    r2.n_have = 2;
    fc_embed(c, &r2);
    spec_t dup = r;
    dup.n = 100;
    fc_embed(c, &dup); /* another text count under the open id */
    fc_expect_duplicate(c, "r");
    w->mode = FW_AUTO;
    s_collect_one(c, &r2, &o);
    assert_int_equal(o.parts, 2);
    assert_int_equal(o.done_msg.parts, 2);
    assert_int_equal(w->n_tasks, tasks + 1);
    assert_int_equal(s_log_count("1 are held by the client"), 1);

    /* 4: resumed without have: the part handed to ZeroMQ is made again */
    w->mode = FW_HOLD;
    spec_t q = {.id = "q", .tag = "Q", .n = 128, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &q);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0);
    fc_expect(c, &rx, ZB_MSG_PART);
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1);
    tasks = w->n_tasks;
    fc_embed(c, &q);
    w->mode = FW_AUTO;
    s_collect_one(c, &q, &o); /* every text once more, from the resumption on */
    assert_int_equal(o.parts, 2);
    assert_int_equal(w->n_tasks, tasks + 1);

    /* 5: parts kept while the client was away: those it holds are dropped,
     * the others sent */
    w->mode = FW_HOLD;
    spec_t k = {.id = "k", .tag = "K", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &k);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_close(c);
    s_pump(300, NULL);
    w->mode = FW_AUTO; /* three parts made and kept */
    S_PUMP_UNTIL(s_log_count("gone; its 1 open requests wait") == 1);
    S_PUMP_UNTIL(w->n_tasks == tasks + 1 + 3 && w->n_pend == 0);
    tasks = w->n_tasks;
    fc_t *c2 = fc_new_rid(NULL, "client-H");
    static const uint32_t have5[2] = {64, 64};
    spec_t k2 = k;
    k2.have = have5;
    k2.n_have = 2;
    fc_embed(c2, &k2);
    s_collect_one(c2, &k2, &o);
    assert_int_equal(o.parts, 2);
    assert_int_equal(w->n_tasks, tasks); /* nothing computed again */
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    rx_free(&rx);
}

/* A client that goes away: at the first send that fails its requests wait
 * for their owner, computed and kept, and end after resume-ms. */
static void test_client_gone(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_RESUME_MS=1000", NULL};
    s_broker_start(env);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "g", .tag = "G", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(w->n_pend == 1);
    zmq_close(c->s);
    c->s = NULL;
    s_pump(300, NULL);
    fw_answer(w, 0);
    w->mode = FW_AUTO;
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    for (;;) {
        rx_t rx;
        s_status(&rx);
        uint64_t open = rx.m.u.status_reply.requests, queued = rx.m.u.status_reply.queued_shards;
        rx_free(&rx);
        if (open == 0) {
            assert_int_equal(queued, 0);
            break;
        }
        assert_true(s_ms() < end);
        s_pump(50, NULL);
    }
    s_pump(200, NULL);
    assert_int_equal(w->n_tasks, 3);
    assert_int_equal(w->n_pend, 0);
    assert_int_equal(s_log_count("its owner did not resume it; dropped"), 1);
}

/*
 * Model pinning (PROTOCOL.md 3 and 6): an embed with model is served only
 * by workers whose ready.model is that model, whatever else is idle; with
 * none connected it fails with no_model after no-worker-ms.  Every part
 * and done names the model of the workers that made the request.
 */
static void test_model_pin(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_NO_WORKER_MS=300", NULL};
    s_broker_start(env);
    fw_t *wa = fw_new("wa", "model-a", 4, 4, FW_AUTO);
    fw_t *wb = fw_new("wb", "model-b", 4, 1, FW_HOLD);
    s_wait_workers(2);
    fc_t *c = fc_new();
    spec_t pb = {.id = "pb", .tag = "P", .n = 192, .level = ZB_LEVEL_SENTENCE, .model = "model-b"};
    fc_embed(c, &pb);
    S_PUMP_UNTIL(wb->n_pend == 1);
    s_pump(200, NULL); /* the idle model-a worker takes none of it */
    assert_int_equal(wa->n_tasks, 0);
    wb->mode = FW_AUTO;
    outcome_t o;
    s_collect_one(c, &pb, &o);
    assert_int_equal(wb->n_tasks, 3);
    assert_int_equal(wa->n_tasks, 0);

    /* unpinned: any model, named in its parts */
    spec_t any = {.id = "any", .tag = "Q", .n = 64, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &any);
    s_collect_one(c, &any, &o);
    assert_true(!strcmp(o.model, "model-a") || !strcmp(o.model, "model-b"));

    /* a model nobody runs */
    spec_t pc = {.id = "pc", .tag = "C", .n = 5, .level = ZB_LEVEL_SENTENCE, .model = "model-c"};
    fc_embed(c, &pc);
    fc_expect_error(c, "pc", ZB_MSG_CODE_NO_MODEL);
    assert_int_equal(wa->n_tasks + wb->n_tasks, 3 + 1);

    /* the same id with another model is another request: duplicate_id */
    wb->mode = FW_HOLD;
    spec_t pb2 = pb;
    pb2.id = "pb2";
    fc_embed(c, &pb2);
    S_PUMP_UNTIL(wb->n_pend == 1);
    pb2.model = "model-a";
    fc_embed(c, &pb2);
    fc_expect_duplicate(c, "pb2");
    pb2.model = "model-b";
    wb->mode = FW_AUTO;
    s_collect_one(c, &pb2, &o);
    assert_true(!strcmp(o.model, "model-b"));
}

/* A request is bound to the model of the worker that took its first shard:
 * a worker of another model or width never serves it. */
static void test_models(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w1 = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c1 = fc_new(), *c2 = fc_new();
    spec_t x = {.id = "x", .tag = "X", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c1, &x);
    S_PUMP_UNTIL(w1->n_pend == 1);
    fw_t *w2 = fw_new("w2", "model-b", 8, 4, FW_AUTO);
    s_wait_workers(2);
    s_pump(300, NULL);
    assert_int_equal(w2->n_tasks, 0);
    /* A new request is free: the idle worker of the other model takes it. */
    spec_t y = {.id = "y", .tag = "Y", .n = 64, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c2, &y);
    outcome_t o;
    s_collect_one(c2, &y, &o);
    assert_int_equal(o.dim, 8);
    w1->mode = FW_AUTO;
    s_collect_one(c1, &x, &o);
    assert_int_equal(o.dim, 4);
    assert_int_equal(w1->n_tasks, 3);
    assert_int_equal(w2->n_tasks, 1);
    assert_int_equal(s_log_count("workers of different models"), 1);
}

/* No worker at all for no-worker-ms: no_model. */
static void test_no_model(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_NO_WORKER_MS=300", NULL};
    s_broker_start(env);
    fc_t *c = fc_new();
    spec_t sp = {.id = "n", .tag = "N", .n = 5, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    fc_expect_error(c, "n", ZB_MSG_CODE_NO_MODEL);
}

/*
 * SIGTERM (PROTOCOL.md 7, Stopping): `closing` goes at once to every
 * client with open requests, and answers every later message; no queued
 * shard starts; the shards on workers still deliver their parts; the
 * broker exits, status 0, when nothing more can come (or after drain-ms),
 * without an error for what is left.  A client without requests hears
 * nothing until it speaks.
 */
static void test_stop(void **st) {
    (void)st;
    s_broker_start(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c = fc_new_rid(NULL, "client-S"), *idle = fc_new();
    spec_t sp = {.id = "s", .tag = "S", .n = 128, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    S_PUMP_UNTIL(w->n_pend == 1);
    rx_t rx;
    fc_sync_status(idle, &rx);
    rx_free(&rx);
    kill(s_b.pid, SIGTERM);
    fc_expect(c, &rx, ZB_MSG_CLOSING);
    assert_true(rx.m.u.closing.message.len > 0);
    rx_free(&rx);
    S_PUMP_UNTIL(s_log_count("stopping: closing sent to 1 clients of 1 open requests") == 1);
    fc_expect_silence(idle, 200);
    spec_t late = {.id = "late", .tag = "L", .n = 1, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &late);
    fc_expect(c, &rx, ZB_MSG_CLOSING); /* instead of an answer */
    rx_free(&rx);
    zb_msg_t ping = {.type = ZB_MSG_STATUS};
    s_send_msg(idle->s, &ping);
    fc_expect(idle, &rx, ZB_MSG_CLOSING);
    rx_free(&rx);
    w->mode = FW_AUTO; /* the shard on the worker delivers its part */
    fc_expect(c, &rx, ZB_MSG_PART);
    assert_int_equal(rx.m.u.part.first, 0);
    rx_free(&rx);
    assert_int_equal(s_broker_stop(0), 0); /* exits by itself */
    fc_expect_silence(c, 200);             /* no error, no done for the rest */
    assert_int_equal(w->n_tasks, 1);       /* the queued shard never started */
    w->mode = FW_DEAD;

    /* a shard that does not come back within drain-ms is not waited for */
    const char *env[] = {"ZBERT_DRAIN_MS=300", NULL};
    s_broker_start(env);
    fw_t *w2 = fw_new("w2", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *c2 = fc_new();
    fc_embed(c2, &sp);
    S_PUMP_UNTIL(w2->n_pend == 1);
    kill(s_b.pid, SIGTERM);
    fc_expect(c2, &rx, ZB_MSG_CLOSING);
    rx_free(&rx);
    assert_int_equal(s_broker_stop(0), 0);
    fc_expect_silence(c2, 200);
}

/* --- CurveZMQ ------------------------------------------------------------------------- */

static char s_keys[160], s_allow_c[160], s_allow_w[160];

static void s_shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s_shell(const char *fmt, ...) {
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) fail_msg("command failed: %s", cmd);
}

/* A new key pair NAME, saved as s_keys/NAME.pub and NAME.key. */
static void s_keygen(const char *name, zb_curve_cert_t *c) {
    zb_diag_t d = {{0}};
    assert_int_equal(zb_curve_keypair(c, name, &d), 0);
    char base[256];
    snprintf(base, sizeof base, "%s/%s", s_keys, name);
    if (zb_curve_save(base, c, &d) != 0) fail_msg("%s", d.msg);
}

/* Puts NAME's public key into an allow-list directory, or takes it out. */
static void s_allow(const char *name, const char *dir) {
    s_shell("cp %s/%s.pub %s/%s.pub", s_keys, name, dir, name);
}

static void s_deny(const char *name, const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    assert_int_equal(unlink(path), 0);
}

/* Fresh directories for keys and allow-lists, the broker's key pair, the
 * client key "alice" and the worker key "w1" allowed; sockets made from
 * now on use them. */
static void s_curve_prepare(void) {
    static int n;
    n++;
    snprintf(s_keys, sizeof s_keys, "%s/keys-%d", s_dir, n);
    snprintf(s_allow_c, sizeof s_allow_c, "%s/clients-%d", s_dir, n);
    snprintf(s_allow_w, sizeof s_allow_w, "%s/workers-%d", s_dir, n);
    s_shell("mkdir -p %s %s %s", s_keys, s_allow_c, s_allow_w);
    s_keygen("broker", &s_server_cert);
    s_keygen("alice", &s_client_cert);
    s_keygen("w1", &s_worker_cert);
    s_allow("alice", s_allow_c);
    s_allow("w1", s_allow_w);
    s_curve = true;
}

/* Starts the broker with the keys of s_curve_prepare() and extra settings. */
static void s_curve_launch(const char *const *extra) {
    static char key[200], ac[200], aw[200];
    snprintf(key, sizeof key, "ZBERT_CURVE_KEY=%s/broker.key", s_keys);
    snprintf(ac, sizeof ac, "ZBERT_ALLOW_CLIENTS=%s", s_allow_c);
    snprintf(aw, sizeof aw, "ZBERT_ALLOW_WORKERS=%s", s_allow_w);
    const char *env[16] = {key, ac, aw};
    int n = 3;
    for (const char *const *e = extra; e && *e && n < 15; e++) env[n++] = *e;
    env[n] = NULL;
    s_broker_start(env);
}

static void s_curve_start(const char *const *extra) {
    s_curve_prepare();
    s_curve_launch(extra);
}

static void fc_status_as(fc_t *c, const char *id) {
    zb_msg_t m = {.type = ZB_MSG_STATUS};
    m.u.status.id = (zb_msg_str_t){id, strlen(id)};
    s_send_msg(c->s, &m);
}

/* The status, asked until cond holds on it (fails after S_TIMEOUT_MS). */
#define S_STATUS_UNTIL(rx, cond)                                                                   \
    do {                                                                                           \
        uint64_t end_ = s_ms() + S_TIMEOUT_MS;                                                     \
        for (;;) {                                                                                 \
            s_status(&(rx));                                                                       \
            const zb_msg_status_reply_t *sr = &(rx).m.u.status_reply;                              \
            (void)sr;                                                                              \
            if (cond) break;                                                                       \
            rx_free(&(rx));                                                                        \
            if (s_ms() > end_) fail_msg("timed out waiting for: %s", #cond);                       \
            s_pump(50, NULL);                                                                      \
        }                                                                                          \
    } while (0)

/*
 * CurveZMQ on both endpoints: an allowed client is served and the status
 * says CurveZMQ is on; a client with an unknown key, or without CurveZMQ,
 * gets nothing; a worker with an unknown key, or with a client's key,
 * never gets a task while a real request runs; refusals are counted per
 * endpoint and logged; the status holds no key and no address.
 */
static void test_curve_auth(void **st) {
    (void)st;
    s_curve_start(NULL);
    rx_t rx;
    s_status(&rx);
    assert_true(rx.m.u.status_reply.has_security);
    assert_true(rx.m.u.status_reply.curve);
    assert_int_equal(rx.m.u.status_reply.refused_clients, 0);
    assert_int_equal(rx.m.u.status_reply.refused_workers, 0);
    rx_free(&rx);

    zb_curve_cert_t mallory;
    s_keygen("mallory", &mallory);
    fc_t *m = fc_new_as(&mallory), *plain = fc_new_as(NULL);
    fc_status_as(m, "m");
    fc_status_as(plain, "p");
    fw_t *evil = fw_new_as("evil", "model-a", 4, 8, FW_AUTO, &mallory);
    fw_t *as_client = fw_new_as("as-client", "model-a", 4, 8, FW_AUTO, &s_client_cert);
    fw_t *w = fw_new("w1", "model-a", 4, 2, FW_AUTO);
    s_wait_workers(1);
    fc_t *c = fc_new();
    spec_t sp = {.id = "c1", .tag = "C", .n = 640, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    outcome_t o;
    s_collect_one(c, &sp, &o);
    assert_int_equal(w->n_tasks, 10);
    assert_int_equal(evil->n_tasks + as_client->n_tasks, 0);
    assert_int_equal(evil->n_reconnects + as_client->n_reconnects, 0);
    fc_expect_silence(m, 300);
    fc_expect_silence(plain, 300);
    S_STATUS_UNTIL(rx, sr->refused_clients >= 1 && sr->refused_workers >= 2);
    assert_int_equal(rx.m.u.status_reply.n_workers, 1);
    assert_int_equal(rx.m.u.status_reply.protocol_errors, 0);
    /* no key, no address in what any client can read */
    const uint8_t *body = zmq_msg_data(&rx.body);
    size_t len = zmq_msg_size(&rx.body);
    const zb_curve_cert_t *certs[] = {&s_client_cert, &s_worker_cert, &mallory, &s_server_cert};
    for (size_t k = 0; k < 4; k++) {
        char z85[41];
        zb_curve_z85(certs[k]->pub, z85);
        assert_null(s_find_bytes((uint8_t *)body, len, z85, 40));
        assert_null(s_find_bytes((uint8_t *)body, len, (const char *)certs[k]->pub, 32));
    }
    assert_null(s_find_bytes((uint8_t *)body, len, "127.0.0.1", 9));
    rx_free(&rx);
    assert_true(s_log_count("clients: refused key") >= 1);
    assert_true(s_log_count("workers: refused key") >= 2);
    assert_true(s_log_count("not in allow-workers") >= 2);
    assert_int_equal(s_log_count("CurveZMQ on both"), 1);
}

/*
 * The allow-lists change while the broker runs: a key copied into the
 * directory works at once (inotify); a file changed without an event in
 * the directory (a hard link written from elsewhere) works after SIGHUP;
 * a client key removed ends that client's open request with `forbidden`
 * and answers its next message so; a worker key removed drops the worker,
 * whose shards run elsewhere, and its messages are refused from then on.
 */
static void test_curve_reload(void **st) {
    (void)st;
    s_curve_prepare();
    zb_curve_cert_t carol, dave, w2key;
    s_keygen("carol", &carol);
    s_keygen("dave", &dave);
    s_keygen("w2", &w2key);
    /* dave.pub: a hard link to a file outside that holds no key yet */
    char slot[256], linked[256];
    snprintf(slot, sizeof slot, "%s/dave-slot", s_keys);
    snprintf(linked, sizeof linked, "%s/dave.pub", s_allow_c);
    FILE *f = fopen(slot, "w");
    assert_non_null(f);
    fputs("not a certificate yet\n", f);
    fclose(f);
    assert_int_equal(link(slot, linked), 0);
    s_curve_launch(NULL);
    assert_int_equal(s_log_count("dave.pub"), 1); /* logged and skipped */

    /* A refused socket is closed for good by libzmq: each try below is a
     * new connection, as a client or worker makes one when it gets no
     * answer. */
    rx_t rx;
    fc_t *c3 = fc_new_as(&carol);
    fc_status_as(c3, "c3");
    fc_expect_silence(c3, 500);
    S_STATUS_UNTIL(rx, sr->refused_clients == 1);
    rx_free(&rx);
    s_allow("carol", s_allow_c);
    S_PUMP_UNTIL(s_log_count("allow-clients: reloaded (its directory changed): 2 keys, 1 added") ==
                 1);
    c3 = fc_new_as(&carol);
    fc_status_as(c3, "c3");
    fc_expect(c3, &rx, ZB_MSG_STATUS_REPLY);
    assert_true(s_str_is(rx.m.u.status_reply.id, "c3"));
    rx_free(&rx);
    s_admin = c3; /* alice's key is removed below */

    fc_t *c4 = fc_new_as(&dave);
    fc_status_as(c4, "c4");
    fc_expect_silence(c4, 500);
    size_t len = 0;
    char src[256];
    snprintf(src, sizeof src, "%s/dave.pub", s_keys);
    char *text = fx_read_file(src, &len);
    assert_non_null(text);
    int fd = open(slot, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    free(text);
    /* longer than the mtime check's period: the directory did not change,
     * the file changed through a name outside it */
    s_pump(2500, NULL);
    c4 = fc_new_as(&dave);
    fc_status_as(c4, "c4");
    fc_expect_silence(c4, 500);
    assert_int_equal(s_log_count("reloaded"), 1); /* carol's */
    kill(s_b.pid, SIGHUP);
    S_PUMP_UNTIL(s_log_count("reloaded (SIGHUP)") == 2);
    c4 = fc_new_as(&dave);
    fc_status_as(c4, "c4");
    fc_expect(c4, &rx, ZB_MSG_STATUS_REPLY);
    rx_free(&rx);

    /* alice's key goes while her request is open */
    fw_t *w = fw_new("w1", "model-a", 4, 2, FW_HOLD);
    s_wait_workers(1);
    fc_t *a = fc_new();
    spec_t sp = {.id = "r", .tag = "R", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a, &sp);
    S_PUMP_UNTIL(w->n_pend == 2);
    s_deny("alice", s_allow_c);
    fc_expect_error(a, "r", ZB_MSG_CODE_FORBIDDEN);
    fc_status_as(a, "st");
    fc_expect_error(a, "st", ZB_MSG_CODE_FORBIDDEN);
    w->mode = FW_AUTO; /* its results find the request closed */
    s_wait_idle(&rx);
    assert_true(rx.m.u.status_reply.refused_clients >= 1);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    rx_free(&rx);
    fc_expect_silence(a, 300);
    assert_int_equal(s_log_count("removed from allow-clients; its 1 open requests end"), 1);

    /* w1's key goes while it holds shards: w2 runs them */
    s_allow("w2", s_allow_w);
    S_PUMP_UNTIL(s_log_count("allow-workers: reloaded (its directory changed): 2 keys") == 1);
    fw_t *w2 = fw_new_as("w2", "model-a", 4, 2, FW_HOLD, &w2key);
    s_wait_workers(2);
    w->mode = FW_HOLD;
    spec_t sq = {.id = "q", .tag = "Q", .n = 320, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c3, &sq);
    S_PUMP_UNTIL(w->n_pend == 2 && w2->n_pend == 2);
    s_deny("w1", s_allow_w);
    S_PUMP_UNTIL(s_log_count("its key was removed from allow-workers") == 1);
    w2->mode = FW_AUTO;
    outcome_t o;
    s_collect_one(c3, &sq, &o);
    assert_int_equal(w2->n_tasks, 5);
    w->mode = FW_AUTO; /* its late results and heartbeats are refused */
    s_pump(500, NULL);
    assert_int_equal(w->n_reconnects, 0);
    S_STATUS_UNTIL(rx, sr->refused_workers >= 1);
    assert_int_equal(rx.m.u.status_reply.n_workers, 1);
    assert_int_equal(rx.m.u.status_reply.requests, 0);
    rx_free(&rx);
}

/* The routing-id claims of test_claimed_routing_ids, by allowed keys on
 * both endpoints of a broker with CurveZMQ (the ZAP handler's socket takes
 * the first sequence, so three are claimed). */
static void test_curve_claimed_routing_ids(void **st) {
    (void)st;
    s_curve_start(NULL);
    s_claim_routing_ids(3, 16);
    fw_new("w1", "model-a", 4, 2, FW_AUTO);
    fc_t *c = fc_new();
    spec_t sp = {.id = "k", .tag = "K", .n = 100, .level = ZB_LEVEL_SENTENCE};
    fc_embed(c, &sp);
    outcome_t o;
    s_collect_one(c, &sp, &o);
}

/*
 * With CurveZMQ a request belongs to its key.  A client whose connection
 * closes mid-request sends the same embed from a new connection with the
 * same key and receives every text exactly once: when the broker had found
 * the old connection gone (the request waited for its owner, computing
 * nothing) and when it had not.  Another allowed key cannot cancel it; the
 * same id with other texts, or sent again on the same connection, is
 * duplicate_id; a cancel from another connection of the key works; a
 * request nobody resumes ends after resume-ms.
 */
static void test_curve_resume(void **st) {
    (void)st;
    const char *env[] = {"ZBERT_RESUME_MS=1500", NULL};
    s_curve_prepare();
    zb_curve_cert_t bob;
    s_keygen("bob", &bob);
    s_allow("bob", s_allow_c);
    s_curve_launch(env);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    rx_t rx;
    outcome_t o;

    /* 1: the old connection is found gone first */
    fc_t *a = fc_new();
    spec_t g = {.id = "g", .tag = "G", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a, &g);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0);
    fc_expect(a, &rx, ZB_MSG_PART);
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_close(a);
    s_pump(300, NULL);
    fw_answer(w, 0); /* its part has no route: the request waits, and runs on */
    S_PUMP_UNTIL(s_log_count("wait 1500 ms for their owner") == 1);
    S_PUMP_UNTIL(w->n_pend == 1);
    assert_int_equal(w->n_tasks, 3);
    fc_t *bb = fc_new_as(&bob);
    fc_cancel(bb, "g"); /* not bob's: an unknown id to him */
    fc_expect_silence(bb, 300);
    fc_sync_status(bb, &rx);
    assert_int_equal(rx.m.u.status_reply.requests, 1);
    rx_free(&rx);
    fc_t *a2 = fc_new();
    fc_embed(a2, &g);
    w->mode = FW_AUTO;
    s_collect_one(a2, &g, &o); /* every text once, then done */
    assert_int_equal(o.parts, 3);
    assert_int_equal(o.done_msg.parts, 3);
    assert_int_equal(o.done_msg.texts, 192);
    /* the part given to the lost connection is made again, the one kept
     * for the owner is not */
    assert_int_equal(w->n_tasks, 3 + 1);
    assert_int_equal(s_log_count("resumed by its owner"), 1);

    /* 2: resumed before the broker finds the old connection gone */
    w->mode = FW_HOLD;
    fc_t *a3 = fc_new();
    spec_t h = {.id = "h", .tag = "H", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a3, &h);
    S_PUMP_UNTIL(w->n_pend == 1);
    fw_answer(w, 0);
    fc_expect(a3, &rx, ZB_MSG_PART);
    rx_free(&rx);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_close(a3);
    fc_t *a4 = fc_new();
    spec_t other = h;
    other.n = 10;
    fc_embed(a4, &other); /* the same id, another text count */
    fc_expect_duplicate(a4, "h");
    fc_embed(a4, &h); /* resumes */
    fc_embed(a4, &h); /* again on the same connection: nothing sent yet, nothing again */
    fc_cancel(bb, "h");
    fc_expect_silence(bb, 200);
    w->mode = FW_AUTO;
    s_collect_one(a4, &h, &o);
    assert_int_equal(o.parts, 3);
    assert_int_equal(o.done_msg.parts, 3);

    /* 3: a cancel from another connection of the key: the answer goes where
     * the parts go */
    w->mode = FW_HOLD;
    fc_t *a5 = fc_new(), *a6 = fc_new();
    spec_t k = {.id = "k", .tag = "K", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a5, &k);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_cancel(a6, "k");
    fc_expect_error(a5, "k", ZB_MSG_CODE_CANCELED);
    fc_expect_silence(a6, 200);
    w->mode = FW_AUTO;
    s_wait_idle(&rx);
    rx_free(&rx);

    /* 4: nobody comes back: it runs, kept for its owner, and ends after
     * resume-ms */
    w->mode = FW_HOLD;
    fc_t *a7 = fc_new();
    spec_t q = {.id = "q", .tag = "Q", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a7, &q);
    S_PUMP_UNTIL(w->n_pend == 1);
    int tasks = w->n_tasks;
    fc_close(a7);
    s_pump(300, NULL);
    fw_answer(w, 0);
    w->mode = FW_AUTO;
    S_PUMP_UNTIL(s_log_count("its owner did not resume it; dropped") == 1);
    s_wait_idle(&rx);
    assert_int_equal(rx.m.u.status_reply.queued_shards, 0);
    rx_free(&rx);
    assert_int_equal(w->n_tasks, tasks + 2);
    /* a resume that comes too late is a new request */
    fc_t *a8 = fc_new();
    w->mode = FW_AUTO;
    fc_embed(a8, &q);
    s_collect_one(a8, &q, &o);
}

/*
 * A routing id that passes from one key to another (a peer may choose its
 * own): the first key's request is never delivered to the second; its
 * owner resumes it from a new connection and gets every text.
 */
static void test_curve_routing_id_reuse(void **st) {
    (void)st;
    s_curve_prepare();
    zb_curve_cert_t bob;
    s_keygen("bob", &bob);
    s_allow("bob", s_allow_c);
    s_curve_launch(NULL);
    fw_t *w = fw_new("w1", "model-a", 4, 1, FW_HOLD);
    s_wait_workers(1);
    fc_t *a = fc_new_rid(&s_client_cert, "same-id");
    spec_t g = {.id = "g", .tag = "G", .n = 192, .level = ZB_LEVEL_SENTENCE};
    fc_embed(a, &g);
    S_PUMP_UNTIL(w->n_pend == 1);
    fc_close(a);
    s_pump(300, NULL); /* libzmq frees the id when the connection is gone */
    fc_t *bb = fc_new_rid(&bob, "same-id");
    rx_t rx;
    fc_sync_status(bb, &rx);
    rx_free(&rx);
    S_PUMP_UNTIL(s_log_count("its routing id now belongs to another key") == 1);
    fw_answer(w, 0);
    fc_expect_silence(bb, 500); /* not alice's part */
    fc_t *a2 = fc_new();
    fc_embed(a2, &g);
    w->mode = FW_AUTO;
    outcome_t o;
    s_collect_one(a2, &g, &o);
    assert_int_equal(o.parts, 3);
    fc_expect_silence(bb, 200);
}

/* Runs zbert-broker with args (NULL-terminated, after the program) until it
 * exits or ms pass; returns its exit status (-1: still running, then left
 * in *pid) and leaves its stderr in log. */
static int s_run_broker(const char *const *args, const char *log, int ms, pid_t *pid) {
    const char *bin = getenv("ZB_BIN");
    char path[512];
    snprintf(path, sizeof path, "%s/zbert-broker", bin && *bin ? bin : "bin");
    const char *argv[24] = {path};
    int n = 1;
    for (const char *const *a = args; *a && n < 23; a++) argv[n++] = *a;
    argv[n] = NULL;
    fflush(NULL);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    s_children[s_n_children++] = p;
    uint64_t end = s_ms() + (uint64_t)ms;
    int st = 0;
    while (s_ms() < end) {
        if (waitpid(p, &st, WNOHANG) == p) {
            s_forget_child(p);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    *pid = p;
    return -1;
}

static bool s_file_has(const char *path, const char *needle) {
    size_t len = 0;
    char *text = fx_read_file(path, &len);
    bool has = text != NULL && strstr(text, needle) != NULL;
    free(text);
    return has;
}

/*
 * Secure by default: without keys the broker refuses an endpoint other
 * hosts can reach, saying why and what to do; --insecure binds it with a
 * warning.  The security settings must fit together.
 */
static void test_secure_by_default(void **st) {
    (void)st;
    char log[160], open_ep[64], local_ep[64];
    snprintf(log, sizeof log, "%s/refusals.log", s_dir);
    snprintf(open_ep, sizeof open_ep, "tcp://0.0.0.0:%d", s_free_port());
    snprintf(local_ep, sizeof local_ep, "tcp://127.0.0.1:%d", s_free_port());
    pid_t pid = 0;
    const char *a1[] = {"--clients", open_ep, "--workers", local_ep, NULL};
    assert_int_equal(s_run_broker(a1, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "refusing to bind tcp://0.0.0.0:"));
    assert_true(s_file_has(log, "zbert keygen"));
    assert_true(s_file_has(log, "--insecure"));
    const char *a2[] = {"--clients", local_ep, "--workers", "tcp://*:5556", NULL};
    assert_int_equal(s_run_broker(a2, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "refusing to bind tcp://*:5556"));
    const char *a3[] = {"--clients", local_ep, "--workers", "tcp://eth0;10.1.2.3:5556", NULL};
    assert_int_equal(s_run_broker(a3, log, S_TIMEOUT_MS, &pid), 1);
    /* allow-lists without a key, a key without allow-lists */
    s_curve_prepare();
    s_curve = false;
    const char *a4[] = {"--allow-clients", s_allow_c, NULL};
    assert_int_equal(s_run_broker(a4, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "need curve-key"));
    char key[200];
    snprintf(key, sizeof key, "%s/broker.key", s_keys);
    const char *a5[] = {"--curve-key", key, "--allow-clients", s_allow_c, NULL};
    assert_int_equal(s_run_broker(a5, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "curve-key needs allow-clients and allow-workers"));
    /* a secret key others can read; a public key where the secret goes */
    char pub[200];
    snprintf(pub, sizeof pub, "%s/public-only", s_keys);
    s_shell("cp %s/broker.pub %s && chmod 600 %s", s_keys, pub, pub);
    const char *a6[] = {"--curve-key", pub, "--allow-clients", s_allow_c, "--allow-workers",
                        s_allow_w,     NULL};
    assert_int_equal(s_run_broker(a6, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "no curve secret-key"));
    assert_int_equal(chmod(key, 0644), 0);
    const char *a7[] = {"--curve-key", key, "--allow-clients", s_allow_c, "--allow-workers",
                        s_allow_w,     NULL};
    assert_int_equal(s_run_broker(a7, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "chmod 600"));
    assert_int_equal(chmod(key, 0600), 0);
    /* a missing allow-list directory */
    const char *a8[] = {"--curve-key",
                        key,
                        "--allow-clients",
                        s_allow_c,
                        "--allow-workers",
                        "/nonexistent/zbert-workers",
                        NULL};
    assert_int_equal(s_run_broker(a8, log, S_TIMEOUT_MS, &pid), 1);
    assert_true(s_file_has(log, "/nonexistent/zbert-workers"));

    /* --insecure: it starts, and says what it means */
    const char *a9[] = {"--clients", open_ep, "--workers", local_ep, "--insecure", NULL};
    assert_int_equal(s_run_broker(a9, log, 1000, &pid), -1);
    uint64_t end = s_ms() + S_TIMEOUT_MS;
    while (!s_file_has(log, "reachable from other hosts without CurveZMQ") && s_ms() < end)
        usleep(20000);
    assert_true(s_file_has(log, "reachable from other hosts without CurveZMQ"));
    char warned[96];
    snprintf(warned, sizeof warned, "%s is reachable", local_ep); /* not the loopback one */
    assert_false(s_file_has(log, warned));
    kill(pid, SIGTERM);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    s_forget_child(pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* one directory for both lists: it starts, and warns */
    char ep1[64], ep2[64];
    snprintf(ep1, sizeof ep1, "tcp://127.0.0.1:%d", s_free_port());
    snprintf(ep2, sizeof ep2, "tcp://127.0.0.1:%d", s_free_port());
    const char *a10[] = {
        "--clients",       ep1,       "--workers",       ep2,       "--curve-key", key,
        "--allow-clients", s_allow_c, "--allow-workers", s_allow_c, NULL};
    assert_int_equal(s_run_broker(a10, log, 1000, &pid), -1);
    end = s_ms() + S_TIMEOUT_MS;
    while (!s_file_has(log, "CurveZMQ on both") && s_ms() < end) usleep(20000);
    assert_true(s_file_has(log, "are one directory: every client key may also connect"));
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    s_forget_child(pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Which endpoints count as local (zb_broker_endpoint_local). */
static void test_endpoint_local(void **st) {
    (void)st;
    static const struct {
        const char *ep;
        bool local;
    } t[] = {
        {"tcp://127.0.0.1:5555", true},
        {"tcp://127.3.4.5:1", true},
        {"tcp://localhost:5555", true},
        {"tcp://LocalHost:5555", true},
        {"tcp://[::1]:5555", true},
        {"tcp://::1:5555", true},
        {"tcp://[::ffff:127.0.0.1]:5555", true},
        {"tcp://127.0.0.1:*", true},
        {"ipc:///tmp/zbert.sock", true},
        {"inproc://x", true},
        {"tcp://eth0;127.0.0.1:5555", true},
        {"tcp://127.0.0.1;10.0.0.1:5555", false},
        {"tcp://*:5555", false},
        {"tcp://0.0.0.0:5555", false},
        {"tcp://[::]:5555", false},
        {"tcp://eth0:5555", false},
        {"tcp://lo:5555", false},
        {"tcp://10.0.0.1:5555", false},
        {"tcp://128.0.0.1:5555", false},
        {"tcp://[::ffff:10.0.0.1]:5555", false},
        {"tcp://example.com:5555", false},
        {"tcp://localhost.example.com:5555", false},
        {"tcp://127.1:5555", false},
        {"tcp://[::1:5555", false},
        {"tcp://:5555", false},
        {"tcp://127.0.0.1", false},
        {"pgm://eth0;239.192.1.1:5555", false},
        {"ws://127.0.0.1:5555", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (zb_broker_endpoint_local(t[i].ep) != t[i].local)
            fail_msg("%s: expected %s", t[i].ep, t[i].local ? "local" : "not local");
}

int main(void) {
    s_ctx = zmq_ctx_new();
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-broker-test-XXXXXX");
    if (s_ctx == NULL || mkdtemp(s_dir) == NULL) return 1;
    atexit(s_kill_children);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_reassemble, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stream_and_credit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_dead_worker, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_fairness, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_limits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_deadline, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_status, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reconnect, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_token_options, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_meta_mismatch, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_content, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bad_results, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ready_race, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_shard_timeout, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_client_gone, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_client_reconnects, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_client_identity, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_resume_have, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_slow_client, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_memory_budget, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_models, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_model_pin, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_no_model, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stop, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_claimed_routing_ids, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_endpoint_local, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_secure_by_default, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_curve_auth, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_curve_reload, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_curve_claimed_routing_ids, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_curve_resume, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_curve_routing_id_reuse, s_setup, s_teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    s_kill_children();
    zmq_ctx_term(s_ctx);
    if (failed == 0 && getenv("ZB_KEEP_LOGS") == NULL) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", s_dir);
        if (system(cmd) != 0) return 1;
    } else {
        fprintf(stderr, "broker logs kept in %s\n", s_dir);
    }
    return failed;
}
