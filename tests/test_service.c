/*
 * test_service.c -- the whole service with real processes: a zbert-broker,
 * two zbert-workers on a bundle, and clients (the zbert CLI, and raw
 * DEALER sockets speaking proto/PROTOCOL.md through the codec), all on
 * 127.0.0.1 with free ports found at start.
 *
 * What it holds the service to:
 *   - `zbert embed` output is byte-identical to `zbert-embed` for the same
 *     texts and options (so vectors are bit-identical), the later options
 *     included: sentences, mean token vectors, Spark NLP compatibility,
 *     token metadata in JSONL and sparknlp-json, with the same per-line
 *     errors and exit status;
 *   - a 10,000-text request is answered with every text exactly once, and
 *     its vectors equal an in-process run;
 *   - two clients using the same request id concurrently each get their own
 *     results only;
 *   - status lists both workers with the bundle's identity, the one
 *     zbert-model inspect prints and zbert status shows;
 *   - a worker killed mid-request loses nothing: the request completes with
 *     every text exactly once.
 * Every child process is killed and reaped in teardown, whatever failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "embed.h"
#include "fixture.h"
#include "msg.h"
#include "model.h"
#include "proc.h"

static char s_dir[256];
static char s_bundle[512];
static char s_clients[64], s_backend[64];
static pid_t s_broker, s_workers[3];
static void *s_ctx;

/* --- a raw protocol client ---------------------------------------------- */

static void *s_dealer(void) {
    void *s = zmq_socket(s_ctx, ZMQ_DEALER);
    int linger = 0, hwm = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    assert_int_equal(zmq_connect(s, s_clients), 0);
    return s;
}

static void s_send(void *s, const uint8_t *body, size_t len) {
    assert_int_equal(zmq_send(s, body, len, 0), (int)len);
}

/* Receives one message (timeout ms) into a malloc'd body; NULL on timeout. */
static uint8_t *s_recv(void *s, int timeout_ms, size_t *len) {
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, s, 0) >= 0);
    *len = zmq_msg_size(&m);
    uint8_t *b = malloc(*len ? *len : 1);
    memcpy(b, zmq_msg_data(&m), *len);
    zmq_msg_close(&m);
    return b;
}

static void s_send_embed(void *s, const char *id, const char *const *texts, size_t n,
                         zb_level_t level) {
    zb_msg_str_t *t = calloc(n, sizeof *t);
    for (size_t i = 0; i < n; i++) t[i] = (zb_msg_str_t){texts[i], strlen(texts[i])};
    zb_msg_embed_t e = {.id = {id, strlen(id)}, .texts = t, .n_texts = n, .opt = {.level = level}};
    uint8_t *body;
    size_t len;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_msg_encode_embed(&e, &body, &len, &d), 0);
    s_send(s, body, len);
    free(body);
    free(t);
}

/* Collected answer of one request at sentence level. */
typedef struct s_answer {
    size_t n;
    int dim;
    float *vec; /* [n][dim] */
    int *seen;  /* times each text was covered */
    bool done;
    uint64_t done_texts;
    int parts;
} s_answer_t;

/* Reads messages for id until done/error or timeout; fails on anything odd. */
static void s_collect(void *s, const char *id, s_answer_t *a, int timeout_s) {
    double end = proc_now() + timeout_s;
    while (!a->done && proc_now() < end) {
        size_t len;
        uint8_t *b = s_recv(s, 200, &len);
        if (!b) continue;
        zb_msg_t m = {0};
        zb_diag_t d = {{0}};
        int rc = zb_msg_decode(b, len, &m, &d);
        if (rc) fprintf(stderr, "decode: %s\n", d.msg);
        assert_int_equal(rc, 0);
        if (m.type == ZB_MSG_ERROR) {
            fprintf(stderr, "error %s: %.*s\n", zb_msg_code_name(m.u.error.code),
                    (int)m.u.error.message.len, m.u.error.message.ptr);
            fail();
        }
        if (m.type == ZB_MSG_PART) {
            const zb_msg_part_t *p = &m.u.part;
            assert_int_equal(p->id.len, strlen(id));
            assert_memory_equal(p->id.ptr, id, p->id.len);
            if (a->dim == 0) {
                a->dim = (int)p->vec.dim;
                a->vec = calloc(a->n * (size_t)a->dim, sizeof *a->vec);
            }
            assert_true(p->first + p->vec.count <= a->n);
            const char *src = p->vec.vectors;
            for (uint32_t i = 0; i < p->vec.count; i++) {
                a->seen[p->first + i]++;
                assert_int_equal(p->vec.rows[i], 1);
                memcpy(a->vec + (size_t)(p->first + i) * a->dim, src, (size_t)a->dim * 4);
                src += (size_t)a->dim * 4;
            }
            a->parts++;
        } else if (m.type == ZB_MSG_DONE) {
            assert_memory_equal(m.u.done.id.ptr, id, strlen(id));
            a->done = true;
            a->done_texts = m.u.done.texts;
        }
        zb_msg_free(&m);
        free(b);
    }
    assert_true(a->done);
}

static void s_answer_init(s_answer_t *a, size_t n) {
    memset(a, 0, sizeof *a);
    a->n = n;
    a->seen = calloc(n, sizeof *a->seen);
}

static void s_answer_free(s_answer_t *a) {
    free(a->vec);
    free(a->seen);
}

/* --- cluster ------------------------------------------------------------ */

static pid_t s_start_worker(int k) {
    char name[32], log[512];
    snprintf(name, sizeof name, "test-%d", k);
    snprintf(log, sizeof log, "%s/worker-%d.log", s_dir, k);
    char exe[512];
    snprintf(exe, sizeof exe, "%s/zbert-worker", proc_bin());
    char *argv[] = {exe,         "--model", s_bundle, "--broker", s_backend,
                    "--threads", "1",       "--name", name,       NULL};
    return proc_spawn(log, argv);
}

/* Asks the broker's status until n workers are listed (or fails). */
static void s_wait_workers(size_t n) {
    void *s = s_dealer();
    double end = proc_now() + 30;
    size_t have = 0;
    while (proc_now() < end) {
        uint8_t *body;
        size_t len;
        zb_msg_status_t st = {.id = {"w", 1}};
        assert_int_equal(zb_msg_encode_status(&st, &body, &len, NULL), 0);
        s_send(s, body, len);
        free(body);
        uint8_t *b = s_recv(s, 1000, &len);
        if (!b) continue;
        zb_msg_t m = {0};
        if (zb_msg_decode(b, len, &m, NULL) == 0 && m.type == ZB_MSG_STATUS_REPLY)
            have = m.u.status_reply.n_workers;
        zb_msg_free(&m);
        free(b);
        if (have == n) break;
        usleep(100 * 1000);
    }
    zmq_close(s);
    assert_int_equal(have, n);
}

static int setup(void **st) {
    (void)st;
    snprintf(s_dir, sizeof s_dir, "/tmp/zbert-service-XXXXXX");
    if (!mkdtemp(s_dir)) return -1;
    snprintf(s_bundle, sizeof s_bundle, "%s/tiny.zbm", s_dir);
    if (proc_sh("%s/zbert-model convert %s -o %s > /dev/null", proc_bin(), fx_path("tiny-seed1"),
                s_bundle))
        return -1;
    snprintf(s_clients, sizeof s_clients, "tcp://127.0.0.1:%d", proc_free_port());
    snprintf(s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", proc_free_port());
    s_ctx = zmq_ctx_new();
    char exe[512], log[512];
    snprintf(exe, sizeof exe, "%s/zbert-broker", proc_bin());
    snprintf(log, sizeof log, "%s/broker.log", s_dir);
    char *argv[] = {exe, "--clients", s_clients, "--workers", s_backend, NULL};
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

/* --- tests -------------------------------------------------------------- */

/* A file of the test's folder (static buffer). */
static const char *s_path(const char *name) {
    static char p[600];
    snprintf(p, sizeof p, "%s/%s", s_dir, name);
    return p;
}

/* Writes the fixture texts (40 embedding cases + 2000 tokenization lines)
 * as JSONL input, then the lines of the Spark NLP fixtures as they are (94
 * objects whose "text" members are the Spark NLP examples and the Golden
 * Rules: emoji, quotes, lists), and a few hard cases: a Latin-1 text (fails
 * alone), one Spark NLP refuses (a detector marker), one with an emoji
 * (UTF-16 spans), one of over 512 wordpieces.  Returns the number of
 * texts. */
static size_t s_write_corpus(const char *path) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    size_t n = 0;
    const char *files[] = {"embeddings-tiny-seed1.txt", "tokenization-2000.txt"};
    for (int k = 0; k < 2; k++) {
        fx_file_t fx;
        assert_int_equal(fx_load(fx_path(files[k]), &fx), 0);
        for (int i = 0; i < fx.n; i++) {
            fputs("{\"text\":\"", f);
            for (size_t j = 0; j < fx.cases[i].text_len; j++) {
                unsigned char c = (unsigned char)fx.cases[i].text[j];
                if (c == '"' || c == '\\')
                    fprintf(f, "\\%c", c);
                else if (c < 0x20 || c == 0x7f)
                    fprintf(f, "\\u%04x", c);
                else
                    fputc(c, f);
            }
            fputs("\"}\n", f);
            n++;
        }
        fx_free(&fx);
    }
    const char *spark[] = {"sparknlp-examples.jsonl", "sparknlp-golden-sbd.jsonl"};
    for (int k = 0; k < 2; k++) {
        size_t len;
        char *data = fx_read_file(fx_path(spark[k]), &len);
        assert_non_null(data);
        assert_int_equal(fwrite(data, 1, len, f), len);
        for (size_t i = 0; i < len; i++) n += data[i] == '\n';
        free(data);
    }
    fputs("{\"text\":\"caf\xe9 au lait\"}\n", f);
    fputs("{\"text\":\"abc\\u2554 x. Y\"}\n", f);
    fputs("{\"text\":\"Emoji \\ud83d\\ude00 test. Don't stop \xf0\x9f\x98\x80 here.\"}\n", f);
    fputs("{\"text\":\"", f);
    for (int k = 0; k < 300; k++) fputs(k % 50 == 49 ? "Tokenization. " : "Tokenization ", f);
    fputs("\"}\n", f);
    fclose(f);
    return n + 4;
}

/*
 * zbert embed through the broker and two workers against zbert-embed, for
 * each option set: the same exit status, the same output bytes, the same
 * per-line error messages (program name aside).  Token metadata is carried
 * by the parts (sentences, compat) and written by the same writers; the
 * Spark NLP option sets also cover texts it refuses (errors in both).
 */
static void test_cli_identical(void **st) {
    (void)st;
    char in[600];
    snprintf(in, sizeof in, "%s/corpus.jsonl", s_dir);
    size_t n = s_write_corpus(in);
    const char *opts[] = {
        "--level wordpiece",
        "",
        "--level sentence --pooling mean --normalize",
        "--level sentence --format npy",
        "--level wordpiece --windows",
        "--sentences",
        "--sentences --token-vector mean --format sparknlp-json",
        "--token-vector mean --truncate --normalize",
        "--format sparknlp-json",
        "--compat sparknlp --format sparknlp-json",
        "--compat sparknlp",
        "--sentences --level wordpiece --windows",
        "--sentences --format table",
    };
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        int a = proc_sh("%s/zbert-embed --model %s --input-format jsonl %s < %s > %s/a.out "
                        "2> %s/a.err",
                        proc_bin(), s_bundle, opts[i], in, s_dir, s_dir);
        int b = proc_sh("%s/zbert embed --broker %s --input-format jsonl %s < %s > %s/b.out "
                        "2> %s/b.err",
                        proc_bin(), s_clients, opts[i], in, s_dir, s_dir);
        if (a != b) fprintf(stderr, "options '%s': exit status %d vs %d\n", opts[i], a, b);
        assert_int_equal(a, b);
        int same = proc_sh("cmp -s %s/a.out %s/b.out", s_dir, s_dir);
        if (same) fprintf(stderr, "options '%s': outputs differ\n", opts[i]);
        assert_int_equal(same, 0);
        /* the per-line errors, as each program names itself */
        int errs = proc_sh("sed -n 's/^zbert-embed: //p' %s/a.err > %s/a.lines && "
                           "sed -n 's/^zbert: \\(input line\\|[0-9]* of\\)/\\1/p' %s/b.err "
                           "> %s/b.lines && cmp -s %s/a.lines %s/b.lines",
                           s_dir, s_dir, s_dir, s_dir, s_dir, s_dir);
        if (errs) fprintf(stderr, "options '%s': error lines differ\n", opts[i]);
        assert_int_equal(errs, 0);
        long errors = 0;
        FILE *el = fopen(s_path("a.lines"), "r");
        for (int c; el && (c = fgetc(el)) != EOF;) errors += c == '\n';
        if (el) fclose(el);
        printf("zbert embed %s: identical to zbert-embed on %zu texts (exit %d, %ld error "
               "lines)\n",
               opts[i], n, a, errors);
    }
}

/* 10,000 texts in one request: every text exactly once, vectors equal to an
 * in-process run. */
static void test_ten_thousand(void **st) {
    (void)st;
    enum { N = 10000 };
    char **texts = malloc(N * sizeof *texts);
    size_t *lens = malloc(N * sizeof *lens);
    for (int i = 0; i < N; i++) {
        char buf[96];
        snprintf(buf, sizeof buf, "text number %d, with %d words and some punctuation!", i, i % 17);
        texts[i] = strdup(buf);
        lens[i] = strlen(buf);
    }
    void *s = s_dealer();
    s_send_embed(s, "big", (const char *const *)texts, N, ZB_LEVEL_SENTENCE);
    s_answer_t a;
    s_answer_init(&a, N);
    s_collect(s, "big", &a, 300);
    assert_int_equal(a.done_texts, N);
    for (int i = 0; i < N; i++) assert_int_equal(a.seen[i], 1);
    assert_true(a.parts > 1);

    zb_model_t *m = NULL;
    assert_int_equal(zb_model_open(s_bundle, &m, NULL), 0);
    zb_embed_t *e = NULL;
    assert_int_equal(zb_embed_new(m, &(zb_embed_config_t){.threads = 1}, &e, NULL), 0);
    zb_embed_result_t *r = calloc(N, sizeof *r);
    zb_options_t o = {.level = ZB_LEVEL_SENTENCE};
    assert_int_equal(zb_embed_run(e, (const char *const *)texts, lens, N, &o, r), 0);
    size_t differ = 0;
    for (int i = 0; i < N; i++)
        differ += memcmp(r[i].vectors, a.vec + (size_t)i * a.dim, (size_t)a.dim * 4) != 0;
    printf("10,000 texts: %d parts, %zu vectors differ from the in-process run\n", a.parts, differ);
    assert_int_equal(differ, 0);
    for (int i = 0; i < N; i++) {
        zb_embed_result_free(&r[i]);
        free(texts[i]);
    }
    free(r);
    free(texts);
    free(lens);
    zb_embed_destroy(&e);
    zb_model_close(&m);
    s_answer_free(&a);
    zmq_close(s);
}

/* Two clients, same request id, different texts, at the same time. */
static void test_two_clients(void **st) {
    (void)st;
    enum { N = 500 };
    const char *ta[N], *tb[N];
    for (int i = 0; i < N; i++) {
        ta[i] = i % 2 ? "Alpha client text." : "Another alpha line";
        tb[i] = "Beta";
    }
    void *a = s_dealer(), *b = s_dealer();
    s_send_embed(a, "same-id", ta, N, ZB_LEVEL_SENTENCE);
    s_send_embed(b, "same-id", tb, N, ZB_LEVEL_SENTENCE);
    s_answer_t ra, rb;
    s_answer_init(&ra, N);
    s_answer_init(&rb, N);
    s_collect(a, "same-id", &ra, 120);
    s_collect(b, "same-id", &rb, 120);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ra.seen[i], 1);
        assert_int_equal(rb.seen[i], 1);
        /* b's texts are all the same, a's alternate: compare within each */
        assert_memory_equal(rb.vec + (size_t)i * rb.dim, rb.vec, (size_t)rb.dim * 4);
        assert_memory_equal(ra.vec + (size_t)i * ra.dim, ra.vec + (size_t)(i % 2) * ra.dim,
                            (size_t)ra.dim * 4);
    }
    assert_memory_not_equal(ra.vec, rb.vec, (size_t)ra.dim * 4);
    s_answer_free(&ra);
    s_answer_free(&rb);
    zmq_close(a);
    zmq_close(b);
}

static void test_status(void **st) {
    (void)st;
    zb_model_t *m = NULL;
    assert_int_equal(zb_model_open(s_bundle, &m, NULL), 0);
    const char *identity = zb_model_identity(m);
    void *s = s_dealer();
    uint8_t *body;
    size_t len;
    zb_msg_status_t q = {.id = {"st", 2}};
    assert_int_equal(zb_msg_encode_status(&q, &body, &len, NULL), 0);
    s_send(s, body, len);
    free(body);
    uint8_t *b = s_recv(s, 5000, &len);
    assert_non_null(b);
    zb_msg_t r = {0};
    assert_int_equal(zb_msg_decode(b, len, &r, NULL), 0);
    assert_int_equal(r.type, ZB_MSG_STATUS_REPLY);
    assert_int_equal(r.u.status_reply.n_workers, 2);
    for (size_t i = 0; i < 2; i++) {
        const zb_msg_worker_info_t *w = &r.u.status_reply.workers[i];
        assert_int_equal(w->dim, 64);
        assert_int_equal(w->threads, 1);
        assert_int_equal(w->model.len, strlen(identity));
        assert_memory_equal(w->model.ptr, identity, w->model.len);
        assert_true(w->name.len == 6 && memcmp(w->name.ptr, "test-", 5) == 0);
    }
    zb_msg_free(&r);
    free(b);
    zmq_close(s);
    /* the id zbert-model inspect prints is the one workers announce, which
     * zbert status shows and zbert embed --model-id takes */
    char want[400];
    snprintf(want, sizeof want, "identity: %s", identity);
    assert_int_equal(
        proc_sh("%s/zbert-model inspect %s | grep -qx '%s'", proc_bin(), s_bundle, want), 0);
    snprintf(want, sizeof want, "\"model\":[[:space:]]*\"%s\"", identity);
    assert_int_equal(proc_sh("%s/zbert status --broker %s --json | grep -c '%s' | grep -qx 2",
                             proc_bin(), s_clients, want),
                     0);
    zb_model_close(&m);
}

/* A third worker joins; one worker is killed (-9) while a request runs: the
 * request still completes, every text exactly once. */
static void test_worker_killed(void **st) {
    (void)st;
    s_workers[2] = s_start_worker(3);
    s_wait_workers(3);
    enum { N = 6000 };
    char **texts = malloc(N * sizeof *texts);
    for (int i = 0; i < N; i++) {
        char buf[400];
        int k = snprintf(buf, sizeof buf, "%d:", i);
        for (int j = 0; j < 30; j++)
            k += snprintf(buf + k, sizeof buf - (size_t)k, " word%d", (i + j) % 97);
        texts[i] = strdup(buf);
    }
    void *s = s_dealer();
    s_send_embed(s, "survive", (const char *const *)texts, N, ZB_LEVEL_SENTENCE);
    /* wait for the first part, then kill a worker while shards are in flight */
    size_t len;
    uint8_t *first = s_recv(s, 60000, &len);
    assert_non_null(first);
    proc_kill(s_workers[0], SIGKILL);
    s_workers[0] = 0;
    s_answer_t a;
    s_answer_init(&a, N);
    zb_msg_t m = {0};
    assert_int_equal(zb_msg_decode(first, len, &m, NULL), 0);
    assert_int_equal(m.type, ZB_MSG_PART);
    for (uint32_t i = 0; i < m.u.part.vec.count; i++) a.seen[m.u.part.first + i]++;
    zb_msg_free(&m);
    free(first);
    s_collect(s, "survive", &a, 300);
    for (int i = 0; i < N; i++) assert_int_equal(a.seen[i], 1);
    assert_int_equal(a.done_texts, N);
    printf("worker killed mid-request: %d texts, each delivered once\n", N);
    for (int i = 0; i < N; i++) free(texts[i]);
    free(texts);
    s_answer_free(&a);
    zmq_close(s);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status),        cmocka_unit_test(test_cli_identical),
        cmocka_unit_test(test_ten_thousand),  cmocka_unit_test(test_two_clients),
        cmocka_unit_test(test_worker_killed),
    };
    return cmocka_run_group_tests_name("service", tests, setup, teardown);
}
