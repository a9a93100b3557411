/*
 * zbert-worker -- serves one model to one or more brokers.
 *
 *   zbert-worker --model PATH --broker EP [--broker EP ...] --threads N
 *                [--credit N] [--name NAME] [--batch-texts N]
 *                [--batch-tokens N] [--config FILE] [--log-level L]
 *
 * The model is mapped once (a .zbm bundle is shared with every other
 * process of the node through the page cache) and served by one embedder
 * to every broker: the worker speaks PROTOCOL.md section 6 to each.
 *
 * Threads.  The main thread owns every ZeroMQ socket: one DEALER per
 * broker and the main end of an inproc PAIR to the compute thread, which
 * owns the embedder (and the OpenMP threads inside it) and never touches a
 * broker socket.  Work crosses the PAIR as pointers to jobs, and ownership
 * of a job goes with its pointer: the main thread hands a batch of jobs
 * over, the compute thread runs them (worker/task: several queued tasks of
 * the same options in one embedder call for bigger batches), encodes each
 * result and hands the batch back, and the main thread sends each result to
 * the broker its task came from.  The queue of tasks lives in the main
 * thread only, bounded by the credit advertised to each broker.  Because the
 * main thread never computes, it keeps heartbeating while a batch runs.
 *
 * Options.  A task's options go to the engine as they came, the later ones
 * included (sentences, token vector, Spark NLP compatibility, token
 * metadata: PROTOCOL.md 3 and 5), and its result carries the token
 * metadata they ask for.  Queued tasks share a run only when all their
 * options agree (zb_task_same_options): the engine takes one options
 * struct per call, and Spark NLP compatibility switches the encoder's GELU
 * for the whole call.
 *
 * Liveness (PROTOCOL.md 6, Lazy Pirate style).  A broker that has had
 * nothing from us for 1 s gets a heartbeat.  A broker silent for 3 s is
 * presumed gone: its DEALER is closed and reopened (a new routing id, so a
 * broker that lost us sees a new worker), `ready` is sent again and the
 * tasks it had queued here are dropped (it re-queues them when it expires
 * us); each fruitless reconnect doubles the wait before the next, up to
 * S_DEAD_MAX_MS, and anything received resets it.  `reconnect` from a
 * broker (it does not know us) is answered with `ready`, dropping its tasks
 * likewise.
 *
 * Epochs (PROTOCOL.md 6).  Every `ready` to a broker carries a new epoch
 * (1, 2, 3, ... per broker); the broker stamps each task with the epoch it
 * was dispatched under.  Credit is counted per epoch: a new `ready` starts
 * the count at zero, and tasks of an earlier epoch that were already on
 * their way when it left (the broker took them back when it read the
 * `ready`) are dropped on arrival, at debug level, using no credit.  Results
 * of tasks of an earlier epoch are not sent.  A task of the current epoch
 * beyond the credit is a broker fault: dropped unanswered and logged at
 * warn (the broker's shard timeout takes it back).
 *
 * Draining.  SIGTERM or SIGINT: tasks arriving from then on are dropped,
 * queued and running tasks are finished and their results sent, then every
 * broker gets `bye` (it re-queues what it still counted on us) and the
 * process exits 0.  A second signal leaves at once (exit 1).
 *
 * Hostile input.  Nothing a broker sends is trusted: a body that does not
 * decode, a message of several frames, a type a worker does not take, a
 * task of an epoch we never announced: each is dropped, counted and logged
 * (once per broker connection at warn, with a sanitised sample; later ones
 * at debug).
 * ZMQ_MAXMSGSIZE bounds what reaches us; the receive HWM and the credit
 * bound what we hold.
 */
#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "embed.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "message.h"
#include "model.h"
#include "task.h"

#define S_PROGRAM        "zbert-worker"
#define S_DEFAULT_BROKER "tcp://127.0.0.1:5556"

/* PROTOCOL.md 6: heartbeat after 1 s of saying nothing, dead after 3 s. */
#define S_HEARTBEAT_MS 1000
#define S_DEAD_MS      3000
/* Cap of the doubling wait between reconnects to a silent broker. */
#define S_DEAD_MAX_MS 30000

/* PROTOCOL.md 7: a broker shard holds at most 64 texts; the default merge
 * limit is one such shard, so full shards run alone (no added latency) and
 * only small ones are merged. */
#define S_SHARD_TEXTS 64
/* Bytes of text one merged run takes at most (the head task always runs,
 * whatever its size): keeps a merge of small tasks from becoming a huge
 * result. */
#define S_MERGE_BYTES (1u << 20)
/* Tasks one merged run takes at most. */
#define S_MERGE_TASKS 64

/* Messages read from one broker per poll round, so a chatty broker cannot
 * starve the others or the compute pipe. */
#define S_READ_BURST 64
/* Bytes above the body limit a socket accepts: a slightly oversized body
 * still arrives, to be rejected, counted and logged by the decoder instead
 * of silently dropping the connection. */
#define S_MAXMSG_SLACK 4096
/* Messages beyond the credit either socket direction may queue: control
 * messages (heartbeats, ready, bye). */
#define S_HWM_SLACK 16
/* How long a closing socket may keep flushing results and `bye`. */
#define S_LINGER_BYE_MS 2000

#define S_PIPE_ENDPOINT "inproc://zbert-worker-compute"

/* The only mutable global: signals received (SIGTERM/SIGINT). */
static volatile sig_atomic_t s_signals;

static void s_on_signal(int sig) {
    (void)sig;
    s_signals = s_signals + 1;
}

/* --- settings ----------------------------------------------------------- */

typedef struct s_args {
    const char *model;
    char **brokers; /* [n_brokers] (malloc'd strings) */
    int n_brokers;
    int threads;
    int credit; /* 0: default */
    int batch_texts;
    int batch_tokens;
    char name[ZB_MSG_NAME_BYTES_MAX + 1];
    int log_level;
} s_args_t;

static void s_usage(FILE *f) {
    fputs("usage: zbert-worker --model PATH --broker EP [--broker EP ...] --threads N\n"
          "                    [--credit N] [--name NAME] [--batch-texts N]\n"
          "                    [--batch-tokens N] [--config FILE]\n"
          "                    [--log-level error|warn|info|debug]\n"
          "PATH is a .zbm bundle or a Hugging Face directory; EP a broker's worker\n"
          "endpoint (default " S_DEFAULT_BROKER "). Keys of FILE and ZBERT_* variables:\n"
          "deploy/zbert-worker.conf.example.\n",
          f);
}

static int s_parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || e == s || *e || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static void s_free_brokers(s_args_t *a) {
    for (int i = 0; i < a->n_brokers; i++) free(a->brokers[i]);
    free(a->brokers);
    a->brokers = NULL;
    a->n_brokers = 0;
}

static int s_add_broker(s_args_t *a, const char *ep, size_t len) {
    if (len == 0) return 0;
    char **p = realloc(a->brokers, (size_t)(a->n_brokers + 1) * sizeof *p);
    if (p == NULL) return -1;
    a->brokers = p;
    if ((p[a->n_brokers] = strndup(ep, len)) == NULL) return -1;
    a->n_brokers++;
    return 0;
}

/* A comma-separated list, each entry trimmed. */
static int s_add_broker_list(s_args_t *a, const char *list) {
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if (s_add_broker(a, p, (size_t)(t - p)) != 0) return -1;
        p = e;
    }
    return 0;
}

/* One numeric setting: the command line's value, else the config's
 * (environment, then file), else def. */
static int s_setting_int(const zb_conf_t *conf, const char *key, const char *cli, int lo, int hi,
                         int def, int *out) {
    const char *v = cli ? cli : zb_conf_get(conf, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    if (s_parse_int(v, lo, hi, out) != 0) {
        fprintf(stderr, S_PROGRAM ": %s: '%s' is not a whole number in %d..%d\n", key, v, lo, hi);
        return -1;
    }
    return 0;
}

static int s_parse_args(int argc, char **argv, s_args_t *a) {
    memset(a, 0, sizeof *a);
    const char *cli_threads = NULL, *cli_credit = NULL, *cli_batch_texts = NULL,
               *cli_batch_tokens = NULL, *cli_name = NULL, *cli_level = NULL, *config = NULL;
    int rc = -1;
    zb_conf_t *conf = NULL;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            s_usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, S_PROGRAM ": %s needs a value (or is unknown)\n", k);
            s_usage(stderr);
            goto out;
        }
        const char *v = argv[++i];
        if (!strcmp(k, "--model"))
            a->model = v;
        else if (!strcmp(k, "--broker")) {
            if (s_add_broker(a, v, strlen(v)) != 0) goto oom;
        } else if (!strcmp(k, "--threads"))
            cli_threads = v;
        else if (!strcmp(k, "--credit"))
            cli_credit = v;
        else if (!strcmp(k, "--batch-texts"))
            cli_batch_texts = v;
        else if (!strcmp(k, "--batch-tokens"))
            cli_batch_tokens = v;
        else if (!strcmp(k, "--name"))
            cli_name = v;
        else if (!strcmp(k, "--log-level"))
            cli_level = v;
        else if (!strcmp(k, "--config"))
            config = v;
        else {
            fprintf(stderr, S_PROGRAM ": unknown option '%s'\n", k);
            s_usage(stderr);
            goto out;
        }
    }
    zb_diag_t d = {{0}};
    int crc = zb_conf_load(config, &conf, &d);
    if (crc != 0) {
        fprintf(stderr, S_PROGRAM ": config: %s\n", zb_diag_text(&d, crc));
        goto out;
    }
    if (a->model == NULL) a->model = zb_conf_get(conf, "model");
    if (a->model == NULL || *a->model == '\0') {
        fprintf(stderr, S_PROGRAM ": --model PATH is required\n");
        s_usage(stderr);
        goto out;
    }
    if (a->n_brokers == 0) {
        const char *list = zb_conf_get(conf, "broker");
        if (s_add_broker_list(a, list ? list : S_DEFAULT_BROKER) != 0) goto oom;
        if (a->n_brokers == 0) {
            fprintf(stderr, S_PROGRAM ": broker: no endpoint in '%s'\n", list);
            goto out;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int def_threads = cpus < 1 ? 1 : cpus > ZB_THREADS_MAX ? ZB_THREADS_MAX : (int)cpus;
    if (s_setting_int(conf, "threads", cli_threads, 1, ZB_THREADS_MAX, def_threads, &a->threads) ||
        s_setting_int(conf, "batch-texts", cli_batch_texts, 1, (int)ZB_MSG_TEXTS_MAX, S_SHARD_TEXTS,
                      &a->batch_texts) ||
        s_setting_int(conf, "batch-tokens", cli_batch_tokens, 0, ZB_BATCH_TOKENS_MAX, 0,
                      &a->batch_tokens) ||
        s_setting_int(conf, "credit", cli_credit, 1, (int)ZB_MSG_CREDIT_MAX, 0, &a->credit))
        goto out;
    if (a->credit == 0) {
        /* PROTOCOL.md 6: twice what one run holds, so the next shard is
         * already here when a run ends. */
        int per_run = (a->batch_texts + S_SHARD_TEXTS - 1) / S_SHARD_TEXTS;
        a->credit = 2 * per_run;
        if (a->credit < 2) a->credit = 2;
        if (a->credit > (int)ZB_MSG_CREDIT_MAX) a->credit = (int)ZB_MSG_CREDIT_MAX;
    }
    const char *name = cli_name ? cli_name : zb_conf_get(conf, "name");
    if (name) {
        size_t n = strlen(name);
        if (n == 0 || n > ZB_MSG_NAME_BYTES_MAX) {
            fprintf(stderr, S_PROGRAM ": name: %zu bytes, not 1..%u\n", n, ZB_MSG_NAME_BYTES_MAX);
            goto out;
        }
        memcpy(a->name, name, n + 1);
    } else {
        char host[200] = "localhost";
        if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(a->name, sizeof a->name, "%s:%ld", host, (long)getpid());
    }
    const char *lv = cli_level ? cli_level : zb_conf_get(conf, "log-level");
    a->log_level = lv ? zb_log_parse_level(lv) : ZB_LOG_INFO;
    if (a->log_level < 0) {
        fprintf(stderr, S_PROGRAM ": log-level: '%s' is not error, warn, info or debug\n", lv);
        goto out;
    }
    /* zb_conf_get's value lives in the config (or environment), which is
     * released below: keep a copy. */
    if ((a->model = strdup(a->model)) == NULL) goto oom;
    rc = 0;
    goto out;
oom:
    fprintf(stderr, S_PROGRAM ": out of memory\n");
out:
    zb_conf_destroy(&conf);
    if (rc != 0) s_free_brokers(a);
    return rc;
}

/* --- jobs and the compute thread ------------------------------------------- */

/* One task from receipt to result.  Owned by the main thread while queued,
 * by the compute thread while it runs (its pointer crossed the pipe). */
typedef struct s_job {
    struct s_job *next; /* queue link */
    zmq_msg_t frame;    /* the task's body: msg's views point into it */
    zb_msg_t msg;       /* the decoded task */
    int broker;         /* index of the broker it came from */
    uint64_t epoch;     /* the task's epoch, that broker's current at receipt */
    size_t bytes;       /* body bytes, for the merge limit */
    int64_t t_received; /* ms, monotonic */
    zb_task_out_t out; /* filled by the compute thread */
} s_job_t;

static void s_job_free(s_job_t *j) {
    if (j == NULL) return;
    zb_msg_free(&j->msg);
    zmq_msg_close(&j->frame);
    free(j->out.body);
    free(j);
}

typedef struct s_compute {
    void *pipe; /* its PAIR end: created and connected by the main thread
                 * (so a failure is seen at start), used only here after
                 * pthread_create, whose barrier hands it over */
    zb_task_t *shard;
    int dim;
} s_compute_t;

/*
 * The compute thread: receives batches of job pointers, runs each batch
 * through the task runner in one embedder call and sends the same
 * pointers back.  An empty message asks it to leave.  It touches only its
 * own PAIR end and the jobs it was handed.
 */
static void *s_compute_main(void *arg) {
    s_compute_t *c = arg;
    void *pipe = c->pipe;
    s_job_t *jobs[S_MERGE_TASKS];
    const zb_msg_task_t *tasks[S_MERGE_TASKS];
    zb_task_out_t outs[S_MERGE_TASKS];
    for (;;) {
        int n = zmq_recv(pipe, jobs, sizeof jobs, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            ZB_LOG(ZB_LOG_ERROR, "compute thread: pipe: %s", zmq_strerror(errno));
            break;
        }
        size_t k = (size_t)n / sizeof *jobs;
        if (k == 0) break; /* asked to leave */
        for (size_t i = 0; i < k; i++) tasks[i] = &jobs[i]->msg.u.task;
        zb_diag_t d = {{0}};
        int rc = zb_task_run(c->shard, tasks, k, outs, &d);
        for (size_t i = 0; i < k; i++) {
            if (rc != 0) {
                /* Nothing of the run could be encoded: every text fails,
                 * and the broker still gets its credit back. */
                ZB_LOG(ZB_LOG_ERROR, "shard %llu: %s", (unsigned long long)tasks[i]->shard,
                       zb_diag_text(&d, rc));
                zb_diag_t d2 = {{0}};
                int rc2 = zb_task_fail(tasks[i], c->dim, ZB_MSG_CODE_INTERNAL, zb_strerror(rc),
                                        &outs[i], &d2);
                if (rc2 != 0)
                    ZB_LOG(ZB_LOG_ERROR, "shard %llu: no result at all: %s",
                           (unsigned long long)tasks[i]->shard, zb_diag_text(&d2, rc2));
            }
            jobs[i]->out = outs[i];
        }
        while (zmq_send(pipe, jobs, k * sizeof *jobs, 0) < 0 && errno == EINTR) {
        }
    }
    zmq_close(pipe);
    c->pipe = NULL;
    return NULL;
}

/* --- brokers ---------------------------------------------------------------- */

typedef struct s_broker {
    const char *endpoint;
    void *sock;            /* DEALER, or NULL while it cannot be opened */
    uint64_t epoch;        /* of our latest ready: bumped at each announce */
    int64_t last_in;       /* ms: when we last heard from it (or reconnected) */
    int64_t last_out;      /* ms: when we last sent it anything */
    int64_t dead_ms;       /* silence allowed before reconnecting */
    uint32_t in_flight;    /* tasks of this epoch not answered yet */
    uint64_t malformed;    /* messages dropped as malformed, since start */
    bool malformed_logged; /* this connection's first was logged at warn */
    uint64_t dropped;      /* tasks dropped (over credit, draining) */
    uint64_t stale;        /* tasks of an earlier epoch dropped */
    bool over_logged;      /* a task beyond the credit was logged this epoch */
} s_broker_t;

typedef struct s_worker {
    void *ctx;
    void *pipe; /* main end of the PAIR */
    s_broker_t *b;
    int n_b;
    zb_msg_ready_t ready; /* sent at every (re)connect, with that epoch */
    uint8_t *heartbeat, *bye;
    size_t heartbeat_len, bye_len;
    uint32_t credit;
    size_t batch_texts;
    s_job_t *head, *tail; /* queued, oldest first */
    size_t queued;
    size_t running; /* jobs on the compute thread (0: it is idle) */
    bool draining;
    uint64_t tasks, texts, tokens; /* results sent since start */
} s_worker_t;

static int64_t s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_free_body(void *data, void *hint) {
    (void)hint;
    free(data);
}

/* Sends a copy of body[0..len) without blocking; false when the socket
 * would block (no connection yet and the queue is full) or failed. */
static bool s_send_copy(s_broker_t *b, const void *body, size_t len) {
    if (b->sock == NULL) return false;
    if (zmq_send(b->sock, body, len, ZMQ_DONTWAIT) < 0) return false;
    b->last_out = s_now_ms();
    return true;
}

/* Sends a malloc'd body, handing it to ZeroMQ (freed in every case). */
static bool s_send_owned(s_broker_t *b, uint8_t *body, size_t len) {
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, body, len, s_free_body, NULL) != 0) {
        free(body);
        return false;
    }
    if (b->sock == NULL || zmq_msg_send(&m, b->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m); /* frees the body */
        return false;
    }
    b->last_out = s_now_ms();
    return true;
}

static int s_setopt_int(void *sock, int opt, int v) {
    return zmq_setsockopt(sock, opt, &v, sizeof v);
}

/* Opens a DEALER to the broker with our limits; NULL and errno on failure. */
static void *s_open_socket(s_worker_t *w, const char *endpoint) {
    void *s = zmq_socket(w->ctx, ZMQ_DEALER);
    if (s == NULL) return NULL;
    int64_t maxmsg = (int64_t)ZB_MSG_BODY_MAX + S_MAXMSG_SLACK;
    int hwm = (int)w->credit + S_HWM_SLACK;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        s_setopt_int(s, ZMQ_SNDHWM, hwm) != 0 || s_setopt_int(s, ZMQ_RCVHWM, hwm) != 0 ||
        /* a reconnect discards what was queued for the old connection */
        s_setopt_int(s, ZMQ_LINGER, 0) != 0 || s_setopt_int(s, ZMQ_RECONNECT_IVL, 100) != 0 ||
        s_setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 2000) != 0 || zmq_connect(s, endpoint) != 0) {
        int e = errno;
        zmq_close(s);
        errno = e;
        return NULL;
    }
    return s;
}

/* Drops the queued jobs of broker bi (it will re-queue them itself). */
static void s_drop_queued(s_worker_t *w, int bi) {
    s_job_t **pp = &w->head;
    w->tail = NULL;
    while (*pp) {
        s_job_t *j = *pp;
        if (j->broker == bi) {
            *pp = j->next;
            w->queued--;
            s_job_free(j);
        } else {
            w->tail = j;
            pp = &j->next;
        }
    }
}

/* A new epoch: queued tasks dropped, credit restored, `ready` sent with
 * the new epoch. */
static void s_announce(s_worker_t *w, int bi) {
    s_broker_t *b = &w->b[bi];
    b->epoch++;
    b->in_flight = 0;
    b->malformed_logged = false;
    b->over_logged = false;
    s_drop_queued(w, bi);
    zb_msg_ready_t r = w->ready;
    r.epoch = b->epoch;
    uint8_t *body = NULL;
    size_t len = 0;
    zb_diag_t d = {{0}};
    int rc = zb_msg_encode_ready(&r, &body, &len, &d);
    if (rc != 0) {
        /* only out of memory: the silence timer retries with a new epoch */
        ZB_LOG(ZB_LOG_ERROR, "broker %s: ready: %s", b->endpoint, zb_diag_text(&d, rc));
        return;
    }
    if (!s_send_owned(b, body, len))
        ZB_LOG(ZB_LOG_WARN, "broker %s: cannot queue ready: %s", b->endpoint, zmq_strerror(errno));
    else
        ZB_LOG(ZB_LOG_DEBUG, "broker %s: ready, epoch %llu", b->endpoint,
               (unsigned long long)b->epoch);
}

/* Closes and reopens broker bi's DEALER (Lazy Pirate), then `ready`. */
static void s_reconnect(s_worker_t *w, int bi, int64_t now) {
    s_broker_t *b = &w->b[bi];
    if (b->sock) zmq_close(b->sock);
    b->sock = s_open_socket(w, b->endpoint);
    if (b->sock == NULL)
        ZB_LOG(ZB_LOG_WARN, "broker %s: cannot reopen: %s", b->endpoint, zmq_strerror(errno));
    b->last_in = now;
    b->last_out = now;
    s_announce(w, bi);
}

/* Logs a dropped message: the first of a connection at warn with a
 * sample, later ones at debug. */
static void s_malformed(s_broker_t *b, const char *why, const void *body, size_t len) {
    b->malformed++;
    int level = b->malformed_logged ? ZB_LOG_DEBUG : ZB_LOG_WARN;
    if (level > zb_log_level) return;
    char sample[4 * 128 + 8];
    zb_log_sample(sample, sizeof sample, body, len);
    ZB_LOG(level, "broker %s: dropped a message (%s; %llu so far): %zu bytes: %s", b->endpoint, why,
           (unsigned long long)b->malformed, len, sample);
    b->malformed_logged = true;
}

/* Handles one received body (moved into a new job first, so a task's
 * decoded views stay valid wherever the job goes). */
static void s_on_message(s_worker_t *w, int bi, zmq_msg_t *frame) {
    s_broker_t *b = &w->b[bi];
    s_job_t *j = calloc(1, sizeof *j);
    if (j == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "broker %s: out of memory for a message", b->endpoint);
        return;
    }
    zmq_msg_init(&j->frame);
    zmq_msg_move(&j->frame, frame);
    const void *body = zmq_msg_data(&j->frame);
    size_t len = zmq_msg_size(&j->frame);
    zb_diag_t d = {{0}};
    int rc = zb_msg_decode(body, len, &j->msg, &d);
    if (rc != 0) {
        s_malformed(b, zb_diag_text(&d, rc), body, len);
        s_job_free(j);
        return;
    }
    switch (j->msg.type) {
    case ZB_MSG_HEARTBEAT:
        break;
    case ZB_MSG_RECONNECT:
        ZB_LOG(ZB_LOG_INFO, "broker %s: asks us to reconnect; sending ready", b->endpoint);
        if (!w->draining) s_announce(w, bi);
        break;
    case ZB_MSG_TASK:
        if (w->draining) {
            b->dropped++;
            ZB_LOG(ZB_LOG_DEBUG, "broker %s: shard %llu dropped: draining", b->endpoint,
                   (unsigned long long)j->msg.u.task.shard);
            break;
        }
        if (j->msg.u.task.epoch < b->epoch) {
            /* Sent before the broker read our latest ready: it took the
             * shard back then, and counts no credit for it. */
            b->stale++;
            ZB_LOG(ZB_LOG_DEBUG,
                   "broker %s: shard %llu of epoch %llu dropped: we are at epoch %llu", b->endpoint,
                   (unsigned long long)j->msg.u.task.shard, (unsigned long long)j->msg.u.task.epoch,
                   (unsigned long long)b->epoch);
            break;
        }
        if (j->msg.u.task.epoch > b->epoch) {
            char why[96];
            snprintf(why, sizeof why, "a task of epoch %llu, which we never announced (ours: %llu)",
                     (unsigned long long)j->msg.u.task.epoch, (unsigned long long)b->epoch);
            b->dropped++;
            s_malformed(b, why, body, len);
            break;
        }
        if (b->in_flight >= w->credit) {
            /* The broker broke the credit of this very epoch.  Nothing is
             * answered: a result would return a credit it never had; its
             * shard timeout takes the shard back. */
            b->dropped++;
            b->malformed++;
            ZB_LOG(b->over_logged ? ZB_LOG_DEBUG : ZB_LOG_WARN,
                   "broker %s: shard %llu of epoch %llu is beyond the credit of %u; dropped "
                   "unanswered (%llu task(s) dropped so far)",
                   b->endpoint, (unsigned long long)j->msg.u.task.shard,
                   (unsigned long long)b->epoch, w->credit, (unsigned long long)b->dropped);
            b->over_logged = true;
            break;
        }
        j->broker = bi;
        j->epoch = b->epoch;
        j->bytes = len;
        j->t_received = s_now_ms();
        if (w->tail)
            w->tail->next = j;
        else
            w->head = j;
        w->tail = j;
        w->queued++;
        b->in_flight++;
        ZB_LOG(ZB_LOG_DEBUG, "broker %s: shard %llu queued (%zu texts)", b->endpoint,
               (unsigned long long)j->msg.u.task.shard, j->msg.u.task.n_texts);
        return; /* the queue owns it now */
    default: {
        char why[64];
        snprintf(why, sizeof why, "a worker does not take '%s'", zb_msg_type_name(j->msg.type));
        s_malformed(b, why, body, len);
        break;
    }
    }
    s_job_free(j);
}

/* Reads what broker bi has for us, up to S_READ_BURST messages. */
static void s_read_broker(s_worker_t *w, int bi) {
    s_broker_t *b = &w->b[bi];
    for (int k = 0; k < S_READ_BURST && b->sock; k++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, b->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        int64_t now = s_now_ms();
        b->last_in = now;
        b->dead_ms = S_DEAD_MS; /* it is alive: back to the normal allowance */
        if (zmq_msg_more(&m)) {
            /* one frame per message (PROTOCOL.md 2): drop all parts */
            s_malformed(b, "a message of several frames", zmq_msg_data(&m), zmq_msg_size(&m));
            while (zmq_msg_more(&m)) {
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, b->sock, ZMQ_DONTWAIT) < 0) break;
            }
            zmq_msg_close(&m);
            continue;
        }
        s_on_message(w, bi, &m);
        zmq_msg_close(&m);
    }
}

/* Hands the next batch to the idle compute thread: the oldest task and,
 * behind it, queued tasks of the same options while the batch stays within
 * batch_texts texts, S_MERGE_BYTES and S_MERGE_TASKS. */
static void s_dispatch(s_worker_t *w) {
    if (w->running > 0 || w->head == NULL) return;
    s_job_t *batch[S_MERGE_TASKS];
    size_t n = 0, texts = 0, bytes = 0;
    s_job_t *first = w->head;
    const zb_msg_options_t *opt = &first->msg.u.task.opt;
    s_job_t **pp = &w->head;
    w->tail = NULL;
    while (*pp) {
        s_job_t *j = *pp;
        size_t t = j->msg.u.task.n_texts;
        bool take =
            n == 0 || (n < S_MERGE_TASKS && zb_task_same_options(opt, &j->msg.u.task.opt) &&
                       texts + t <= w->batch_texts && bytes + j->bytes <= S_MERGE_BYTES);
        if (take) {
            *pp = j->next;
            j->next = NULL;
            batch[n++] = j;
            texts += t;
            bytes += j->bytes;
            w->queued--;
        } else {
            w->tail = j;
            pp = &j->next;
        }
    }
    if (zmq_send(w->pipe, batch, n * sizeof *batch, ZMQ_DONTWAIT) < 0) {
        /* inproc to a live thread does not fail; if it ever does, put the
         * batch back in front rather than lose it */
        ZB_LOG(ZB_LOG_ERROR, "compute pipe: %s", zmq_strerror(errno));
        for (size_t i = n; i-- > 0;) {
            batch[i]->next = w->head;
            w->head = batch[i];
            if (w->tail == NULL) w->tail = batch[i];
            w->queued++;
        }
        return;
    }
    w->running = n;
    ZB_LOG(ZB_LOG_DEBUG, "run of %zu task(s), %zu texts, level %s%s%s%s%s", n, texts,
           zb_msg_level_name(opt->level), opt->sentences ? ", sentences" : "",
           opt->token_vector == ZB_MSG_TOKVEC_MEAN ? ", mean token vectors" : "",
           opt->compat == ZB_MSG_COMPAT_SPARKNLP ? ", Spark NLP compatibility" : "",
           zb_msg_options_meta(opt) ? ", token metadata" : "");
}

/* Takes a finished batch back and sends each result to its broker. */
static void s_collect(s_worker_t *w) {
    s_job_t *batch[S_MERGE_TASKS];
    int n = zmq_recv(w->pipe, batch, sizeof batch, ZMQ_DONTWAIT);
    if (n <= 0) return;
    size_t k = (size_t)n / sizeof *batch;
    int64_t now = s_now_ms();
    for (size_t i = 0; i < k; i++) {
        s_job_t *j = batch[i];
        s_broker_t *b = &w->b[j->broker];
        unsigned long long shard = (unsigned long long)j->msg.u.task.shard;
        if (j->epoch != b->epoch) {
            ZB_LOG(ZB_LOG_DEBUG, "shard %llu: result dropped: broker %s has a new epoch since",
                   shard, b->endpoint);
        } else {
            if (b->in_flight > 0) b->in_flight--;
            if (j->out.body == NULL) {
                ZB_LOG(ZB_LOG_ERROR, "shard %llu: no result to send", shard);
            } else {
                size_t len = j->out.body_len;
                uint8_t *body = j->out.body;
                j->out.body = NULL;
                if (s_send_owned(b, body, len)) {
                    w->tasks++;
                    w->texts += j->out.n_texts;
                    w->tokens += j->out.tokens;
                } else {
                    ZB_LOG(ZB_LOG_WARN, "shard %llu: result to %s not sent: %s", shard, b->endpoint,
                           zmq_strerror(errno));
                }
                if (j->out.n_cut > 0)
                    ZB_LOG(ZB_LOG_WARN,
                           "shard %llu: %u text(s) failed as too_large to fit the body limit",
                           shard, j->out.n_cut);
                if (j->out.engine_rc != 0)
                    ZB_LOG(ZB_LOG_ERROR, "shard %llu: the engine failed: %s", shard,
                           zb_strerror(j->out.engine_rc));
                ZB_LOG(ZB_LOG_DEBUG,
                       "shard %llu: %u texts, %llu tokens, %u failed, %zu bytes, %lld ms", shard,
                       j->out.n_texts, (unsigned long long)j->out.tokens, j->out.n_failed, len,
                       (long long)(now - j->t_received));
            }
        }
        s_job_free(j);
    }
    w->running = 0;
}

/* Heartbeats and liveness; returns the ms until the next deadline. */
static int s_tick(s_worker_t *w, int64_t now) {
    int64_t next = S_HEARTBEAT_MS;
    for (int i = 0; i < w->n_b; i++) {
        s_broker_t *b = &w->b[i];
        if (!w->draining && now - b->last_in >= b->dead_ms) {
            ZB_LOG(ZB_LOG_WARN, "broker %s: silent for %lld ms; reconnecting", b->endpoint,
                   (long long)(now - b->last_in));
            s_reconnect(w, i, now);
            /* each fruitless attempt doubles the wait before the next */
            b->dead_ms = b->dead_ms * 2 > S_DEAD_MAX_MS ? S_DEAD_MAX_MS : b->dead_ms * 2;
        }
        if (now - b->last_out >= S_HEARTBEAT_MS) {
            /* a full queue (broker unreachable) just skips this beat */
            if (!s_send_copy(b, w->heartbeat, w->heartbeat_len)) b->last_out = now;
        }
        int64_t t1 = b->last_out + S_HEARTBEAT_MS - now;
        int64_t t2 = b->last_in + b->dead_ms - now;
        if (!w->draining && t2 < next) next = t2;
        if (t1 < next) next = t1;
    }
    return next < 0 ? 0 : (int)next;
}

/* --- main -------------------------------------------------------------------- */

/* The heartbeat and bye bodies, and the ready of every epoch (checked
 * here once by encoding it, so an announce can only fail for memory). */
static int s_encode_fixed(s_worker_t *w, const s_args_t *a, const char *model_id, int dim) {
    zb_diag_t d = {{0}};
    w->ready = (zb_msg_ready_t){.name = {a->name, strlen(a->name)},
                                .model = {model_id, strlen(model_id)},
                                .dim = (uint32_t)dim,
                                .threads = (uint32_t)a->threads,
                                .credit = w->credit};
    uint8_t *check = NULL;
    size_t check_len = 0;
    int rc = zb_msg_encode_ready(&w->ready, &check, &check_len, &d);
    free(check);
    if (rc == 0) rc = zb_msg_encode_empty(ZB_MSG_HEARTBEAT, &w->heartbeat, &w->heartbeat_len, &d);
    if (rc == 0) rc = zb_msg_encode_empty(ZB_MSG_BYE, &w->bye, &w->bye_len, &d);
    if (rc != 0) fprintf(stderr, S_PROGRAM ": ready: %s\n", zb_diag_text(&d, rc));
    return rc;
}

int main(int argc, char **argv) {
    s_args_t a;
    if (s_parse_args(argc, argv, &a) != 0) return 2;
    zb_log_init(S_PROGRAM, a.log_level);

    int status = 1;
    zb_diag_t d = {{0}};
    zb_model_t *model = NULL;
    zb_embedder_t *emb = NULL;
    zb_task_t *shard = NULL;
    s_worker_t w = {.credit = (uint32_t)a.credit, .batch_texts = (size_t)a.batch_texts};
    s_compute_t comp = {0};
    bool thread_started = false;
    pthread_t thread;

    int rc = zb_model_open(a.model, &model, &d);
    if (rc != 0) {
        ZB_LOG(ZB_LOG_ERROR, "model %s: %s", a.model, zb_diag_text(&d, rc));
        goto out;
    }
    zb_embedder_config_t ecfg = {.threads = a.threads, .batch_tokens_max = a.batch_tokens};
    if ((rc = zb_embedder_new(model, &ecfg, &emb, &d)) != 0 ||
        (rc = zb_task_new(emb, NULL, &shard, &d)) != 0) {
        ZB_LOG(ZB_LOG_ERROR, "embedder: %s", zb_diag_text(&d, rc));
        goto out;
    }
    const zb_bert_config_t *mc = zb_model_config(model);
    const char *model_id = zb_model_identity(model);
    int dim = zb_embedder_dim(emb);
    if (s_encode_fixed(&w, &a, model_id, dim) != 0) goto out;
    ZB_LOG(ZB_LOG_INFO,
           "model %s: identity %s, dim %d, %d layers, vocabulary %d; threads %d, credit %u, "
           "batch texts %d; name %s",
           a.model, model_id, dim, mc->layers, mc->vocab_size, a.threads, w.credit, a.batch_texts,
           a.name);
    ZB_LOG(ZB_LOG_INFO, "OpenBLAS: %s", openblas_get_config());

    /* Signals: handled by the main thread only.  They are blocked while the
     * compute thread starts, so it (and the OpenMP threads it creates)
     * inherits the block and zmq_poll in the main thread is what wakes. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    w.ctx = zmq_ctx_new();
    if (w.ctx == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "zmq_ctx_new: %s", zmq_strerror(errno));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        goto out;
    }
    w.pipe = zmq_socket(w.ctx, ZMQ_PAIR);
    comp = (s_compute_t){.pipe = zmq_socket(w.ctx, ZMQ_PAIR), .shard = shard, .dim = dim};
    if (w.pipe == NULL || comp.pipe == NULL || zmq_bind(w.pipe, S_PIPE_ENDPOINT) != 0 ||
        zmq_connect(comp.pipe, S_PIPE_ENDPOINT) != 0) {
        ZB_LOG(ZB_LOG_ERROR, "compute pipe: %s", zmq_strerror(errno));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        goto out;
    }
    rc = pthread_create(&thread, NULL, s_compute_main, &comp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ZB_LOG(ZB_LOG_ERROR, "compute thread: %s", strerror(rc));
        goto out;
    }
    thread_started = true;

    w.n_b = a.n_brokers;
    w.b = calloc((size_t)w.n_b, sizeof *w.b);
    if (w.b == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "out of memory");
        goto out;
    }
    int64_t now = s_now_ms();
    for (int i = 0; i < w.n_b; i++) {
        s_broker_t *b = &w.b[i];
        b->endpoint = a.brokers[i];
        b->dead_ms = S_DEAD_MS;
        b->sock = s_open_socket(&w, b->endpoint);
        if (b->sock == NULL) {
            /* an endpoint that does not parse is a setting to fix, not a
             * network condition to wait out */
            ZB_LOG(ZB_LOG_ERROR, "broker %s: %s", b->endpoint, zmq_strerror(errno));
            goto out;
        }
        b->last_in = b->last_out = now;
        s_announce(&w, i);
        ZB_LOG(ZB_LOG_INFO, "broker %s: connecting", b->endpoint);
    }

    zmq_pollitem_t *items = calloc((size_t)w.n_b + 1, sizeof *items);
    if (items == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "out of memory");
        goto out;
    }
    for (;;) {
        if (s_signals >= 2) {
            ZB_LOG(ZB_LOG_WARN, "second signal: leaving without finishing %zu task(s)",
                   w.queued + w.running);
            free(items);
            /* the compute thread may be inside the engine: no clean-up */
            _exit(1);
        }
        if (s_signals && !w.draining) {
            w.draining = true;
            ZB_LOG(ZB_LOG_INFO, "draining: finishing %zu task(s), taking no more",
                   w.queued + w.running);
        }
        if (w.draining && w.queued == 0 && w.running == 0) break;
        s_dispatch(&w);
        int timeout = s_tick(&w, s_now_ms());
        items[0] = (zmq_pollitem_t){.socket = w.pipe, .events = ZMQ_POLLIN};
        for (int i = 0; i < w.n_b; i++)
            items[i + 1] =
                (zmq_pollitem_t){.socket = w.b[i].sock, .events = w.b[i].sock ? ZMQ_POLLIN : 0};
        /* a NULL socket with fd 0 would poll stdin: give it no events and
         * an fd that is never ready */
        for (int i = 0; i < w.n_b; i++)
            if (w.b[i].sock == NULL) items[i + 1].fd = -1;
        int n = zmq_poll(items, w.n_b + 1, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            ZB_LOG(ZB_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) s_collect(&w);
        for (int i = 0; i < w.n_b; i++)
            if (items[i + 1].revents & ZMQ_POLLIN) s_read_broker(&w, i);
    }
    free(items);
    if (w.draining) {
        for (int i = 0; i < w.n_b; i++) {
            s_broker_t *b = &w.b[i];
            if (!s_send_copy(b, w.bye, w.bye_len))
                ZB_LOG(ZB_LOG_WARN, "broker %s: bye not sent: %s", b->endpoint,
                       zmq_strerror(errno));
        }
        status = 0;
    }
    ZB_LOG(ZB_LOG_INFO, "leaving: %llu results (%llu texts, %llu tokens) sent",
           (unsigned long long)w.tasks, (unsigned long long)w.texts, (unsigned long long)w.tokens);
out:
    if (thread_started) {
        /* an empty message asks the compute thread to leave; it is idle
         * here unless the loop broke on an error */
        zmq_send(w.pipe, "", 0, 0);
        pthread_join(thread, NULL);
        /* a batch it finished after the loop broke */
        s_job_t *left[S_MERGE_TASKS];
        int n;
        while ((n = zmq_recv(w.pipe, left, sizeof left, ZMQ_DONTWAIT)) > 0)
            for (size_t i = 0; i < (size_t)n / sizeof *left; i++) s_job_free(left[i]);
    }
    if (comp.pipe) zmq_close(comp.pipe);
    for (int i = 0; w.b && i < w.n_b; i++) {
        s_broker_t *b = &w.b[i];
        uint64_t lost = b->malformed + b->dropped + b->stale;
        if (lost)
            ZB_LOG(ZB_LOG_INFO,
                   "broker %s: %llu malformed message(s), %llu task(s) dropped, %llu of an "
                   "earlier epoch",
                   b->endpoint, (unsigned long long)b->malformed, (unsigned long long)b->dropped,
                   (unsigned long long)b->stale);
        if (b->sock) {
            /* results and bye already queued get a bounded time to leave */
            s_setopt_int(b->sock, ZMQ_LINGER, status == 0 ? S_LINGER_BYE_MS : 0);
            zmq_close(b->sock);
        }
    }
    while (w.head) {
        s_job_t *j = w.head;
        w.head = j->next;
        s_job_free(j);
    }
    if (w.pipe) zmq_close(w.pipe);
    if (w.ctx) zmq_ctx_term(w.ctx);
    free(w.b);
    free(w.heartbeat);
    free(w.bye);
    zb_task_destroy(&shard);
    zb_embedder_destroy(&emb);
    zb_model_close(&model);
    free((char *)a.model);
    s_free_brokers(&a);
    return status;
}
