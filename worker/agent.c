/*
 * agent.c -- the worker agent (agent.h says what it does and why).
 *
 * One zb_agent_run() call: start (context, compute pipe and thread, one
 * DEALER and a first `ready` per broker), the poll loop (hand the next
 * batch to an idle compute thread, heartbeats and liveness, collect a
 * finished batch, read each broker), then after a drain `bye` and the
 * tear-down, which zb_agent_destroy() also runs when the loop was left at
 * once on a second stop.
 */
#include "agent.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "clock.h"
#include "limits.h"
#include "log.h"
#include "msg.h"
#include "task.h"

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

/* Per context, so agents in one process do not meet. */
#define S_PIPE_ENDPOINT "inproc://zbert-worker-compute"

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
    zb_task_out_t out;  /* filled by the compute thread */
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
    zb_task_t *task;
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
        int rc = zb_task_run(c->task, tasks, k, outs, &d);
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

/* The counters are atomic so that zb_agent_stats() may read them from any
 * thread; everything else belongs to the thread running the agent. */
typedef struct s_broker {
    char *endpoint;                         /* malloc'd copy */
    uint8_t server_key[ZB_CURVE_KEY_BYTES]; /* its CURVE public key, with a->curve */
    void *sock;                             /* DEALER, or NULL while it cannot be opened */
    uint64_t epoch;                         /* of our latest ready: bumped at each announce */
    int64_t last_in;                        /* ms: when we last heard from it (or reconnected) */
    int64_t last_out;                       /* ms: when we last sent it anything */
    int64_t dead_ms;                        /* silence allowed before reconnecting */
    uint32_t in_flight;                     /* tasks of this epoch not answered yet */
    _Atomic uint64_t malformed;             /* messages dropped as malformed, since start */
    bool malformed_logged;                  /* this connection's first was logged at warn */
    _Atomic uint64_t dropped;               /* tasks dropped (over credit, draining) */
    _Atomic uint64_t stale;                 /* tasks of an earlier epoch dropped */
    bool over_logged;                       /* a task beyond the credit was logged this epoch */
} s_broker_t;

/* Where zb_agent_run() is in an agent's life. */
typedef enum s_state {
    S_NEW,     /* made, not run */
    S_RUNNING, /* zb_agent_run() in progress */
    S_LEFT,    /* left at once on a second stop: tear-down still to do */
    S_DONE,    /* run and torn down */
} s_state_t;

struct zb_agent {
    /* settings, fixed by zb_agent_new */
    char *name, *model; /* malloc'd copies; ready's views point into them */
    int threads;
    uint32_t credit;
    size_t batch_texts;
    int heartbeat_ms, dead_ms, dead_max_ms;
    zb_msg_ready_t ready; /* sent at every (re)connect, with that epoch */
    uint8_t *heartbeat, *bye;
    size_t heartbeat_len, bye_len;
    zb_task_t *task; /* the runner: the compute thread's while it runs */
    int dim;
    zb_curve_cert_t *curve; /* our key pair (zeroed before it is freed), or NULL */
    s_broker_t *b;          /* [n_b] */
    int n_b;
    /* the run */
    s_state_t state;
    void *ctx;
    void *pipe; /* main end of the PAIR */
    s_compute_t comp;
    pthread_t thread;
    bool thread_started;
    s_job_t *head, *tail; /* queued, oldest first */
    size_t queued;
    size_t running;                        /* jobs on the compute thread (0: it is idle) */
    _Atomic bool draining;                 /* *stop seen (atomic: zb_agent_stats) */
    _Atomic uint64_t taken;                /* tasks queued since start */
    _Atomic uint64_t tasks, texts, tokens; /* results sent since start */
};

/* The shared clock, signed: intervals below may be negative. */
static int64_t s_now_ms(void) {
    return (int64_t)zb_clock_ms();
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

/* Opens a DEALER to broker b with our limits (and our CURVE keys, set
 * before connecting: they apply to the connections made after them); NULL
 * and errno on failure. */
static void *s_open_socket(zb_agent_t *a, const s_broker_t *b) {
    void *s = zmq_socket(a->ctx, ZMQ_DEALER);
    if (s == NULL) return NULL;
    int64_t maxmsg = (int64_t)ZB_MSG_BODY_MAX + S_MAXMSG_SLACK;
    int hwm = (int)a->credit + S_HWM_SLACK;
    zb_diag_t d = {{0}};
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        s_setopt_int(s, ZMQ_SNDHWM, hwm) != 0 || s_setopt_int(s, ZMQ_RCVHWM, hwm) != 0 ||
        /* a reconnect discards what was queued for the old connection */
        s_setopt_int(s, ZMQ_LINGER, 0) != 0 || s_setopt_int(s, ZMQ_RECONNECT_IVL, 100) != 0 ||
        s_setopt_int(s, ZMQ_RECONNECT_IVL_MAX, 2000) != 0 ||
        (a->curve && zb_curve_client_socket(s, a->curve, b->server_key, &d) != 0) ||
        zmq_connect(s, b->endpoint) != 0) {
        int e = errno;
        zmq_close(s);
        errno = e;
        return NULL;
    }
    return s;
}

/* Drops the queued jobs of broker bi (it will re-queue them itself). */
static void s_drop_queued(zb_agent_t *a, int bi) {
    s_job_t **pp = &a->head;
    a->tail = NULL;
    while (*pp) {
        s_job_t *j = *pp;
        if (j->broker == bi) {
            *pp = j->next;
            a->queued--;
            s_job_free(j);
        } else {
            a->tail = j;
            pp = &j->next;
        }
    }
}

/* A new epoch: queued tasks dropped, credit restored, `ready` sent with
 * the new epoch. */
static void s_announce(zb_agent_t *a, int bi) {
    s_broker_t *b = &a->b[bi];
    b->epoch++;
    b->in_flight = 0;
    b->malformed_logged = false;
    b->over_logged = false;
    s_drop_queued(a, bi);
    zb_msg_ready_t r = a->ready;
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
static void s_reconnect(zb_agent_t *a, int bi, int64_t now) {
    s_broker_t *b = &a->b[bi];
    if (b->sock) zmq_close(b->sock);
    b->sock = s_open_socket(a, b);
    if (b->sock == NULL)
        ZB_LOG(ZB_LOG_WARN, "broker %s: cannot reopen: %s", b->endpoint, zmq_strerror(errno));
    b->last_in = now;
    b->last_out = now;
    s_announce(a, bi);
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
static void s_on_message(zb_agent_t *a, int bi, zmq_msg_t *frame) {
    s_broker_t *b = &a->b[bi];
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
        if (!a->draining) s_announce(a, bi);
        break;
    case ZB_MSG_TASK:
        if (a->draining) {
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
        if (b->in_flight >= a->credit) {
            /* The broker broke the credit of this very epoch.  Nothing is
             * answered: a result would return a credit it never had; its
             * shard timeout takes the shard back. */
            b->dropped++;
            b->malformed++;
            ZB_LOG(b->over_logged ? ZB_LOG_DEBUG : ZB_LOG_WARN,
                   "broker %s: shard %llu of epoch %llu is beyond the credit of %u; dropped "
                   "unanswered (%llu task(s) dropped so far)",
                   b->endpoint, (unsigned long long)j->msg.u.task.shard,
                   (unsigned long long)b->epoch, a->credit, (unsigned long long)b->dropped);
            b->over_logged = true;
            break;
        }
        j->broker = bi;
        j->epoch = b->epoch;
        j->bytes = len;
        j->t_received = s_now_ms();
        if (a->tail)
            a->tail->next = j;
        else
            a->head = j;
        a->tail = j;
        a->queued++;
        a->taken++;
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
static void s_read_broker(zb_agent_t *a, int bi) {
    s_broker_t *b = &a->b[bi];
    for (int k = 0; k < S_READ_BURST && b->sock; k++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, b->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        int64_t now = s_now_ms();
        b->last_in = now;
        b->dead_ms = a->dead_ms; /* it is alive: back to the normal allowance */
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
        s_on_message(a, bi, &m);
        zmq_msg_close(&m);
    }
}

/* Hands the next batch to the idle compute thread: the oldest task and,
 * behind it, queued tasks of the same options while the batch stays within
 * batch_texts texts, S_MERGE_BYTES and S_MERGE_TASKS. */
static void s_dispatch(zb_agent_t *a) {
    if (a->running > 0 || a->head == NULL) return;
    s_job_t *batch[S_MERGE_TASKS];
    size_t n = 0, texts = 0, bytes = 0;
    s_job_t *first = a->head;
    const zb_options_t *opt = &first->msg.u.task.opt;
    s_job_t **pp = &a->head;
    a->tail = NULL;
    while (*pp) {
        s_job_t *j = *pp;
        size_t t = j->msg.u.task.n_texts;
        bool take = n == 0 || (n < S_MERGE_TASKS && zb_task_same_options(opt, &j->msg.u.task.opt) &&
                               texts + t <= a->batch_texts && bytes + j->bytes <= S_MERGE_BYTES);
        if (take) {
            *pp = j->next;
            j->next = NULL;
            batch[n++] = j;
            texts += t;
            bytes += j->bytes;
            a->queued--;
        } else {
            a->tail = j;
            pp = &j->next;
        }
    }
    if (zmq_send(a->pipe, batch, n * sizeof *batch, ZMQ_DONTWAIT) < 0) {
        /* inproc to a live thread does not fail; if it ever does, put the
         * batch back in front rather than lose it */
        ZB_LOG(ZB_LOG_ERROR, "compute pipe: %s", zmq_strerror(errno));
        for (size_t i = n; i-- > 0;) {
            batch[i]->next = a->head;
            a->head = batch[i];
            if (a->tail == NULL) a->tail = batch[i];
            a->queued++;
        }
        return;
    }
    a->running = n;
    ZB_LOG(ZB_LOG_DEBUG, "run of %zu task(s), %zu texts, level %s%s%s%s%s", n, texts,
           zb_options_level_name(opt->level), opt->sentences ? ", sentences" : "",
           opt->token_vector == ZB_TOKEN_VECTOR_MEAN ? ", mean token vectors" : "",
           opt->compat == ZB_COMPAT_SPARKNLP ? ", Spark NLP compatibility" : "",
           zb_options_meta(opt) ? ", token metadata" : "");
}

/* Takes a finished batch back and sends each result to its broker. */
static void s_collect(zb_agent_t *a) {
    s_job_t *batch[S_MERGE_TASKS];
    int n = zmq_recv(a->pipe, batch, sizeof batch, ZMQ_DONTWAIT);
    if (n <= 0) return;
    size_t k = (size_t)n / sizeof *batch;
    int64_t now = s_now_ms();
    for (size_t i = 0; i < k; i++) {
        s_job_t *j = batch[i];
        s_broker_t *b = &a->b[j->broker];
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
                    a->tasks++;
                    a->texts += j->out.n_texts;
                    a->tokens += j->out.tokens;
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
    a->running = 0;
}

/* Heartbeats and liveness; returns the ms until the next deadline. */
static int s_tick(zb_agent_t *a, int64_t now) {
    int64_t next = a->heartbeat_ms;
    for (int i = 0; i < a->n_b; i++) {
        s_broker_t *b = &a->b[i];
        if (!a->draining && now - b->last_in >= b->dead_ms) {
            /* with CURVE, a handshake that cannot complete is silence too */
            ZB_LOG(ZB_LOG_WARN, "broker %s: silent for %lld ms%s; reconnecting", b->endpoint,
                   (long long)(now - b->last_in),
                   a->curve ? " (with CURVE: or its broker key is not that broker's, or it "
                              "does not allow this worker's key)"
                            : "");
            s_reconnect(a, i, now);
            /* each fruitless attempt doubles the wait before the next */
            b->dead_ms = b->dead_ms * 2 > a->dead_max_ms ? a->dead_max_ms : b->dead_ms * 2;
        }
        if (now - b->last_out >= a->heartbeat_ms) {
            /* a full queue (broker unreachable) just skips this beat */
            if (!s_send_copy(b, a->heartbeat, a->heartbeat_len)) b->last_out = now;
        }
        int64_t t1 = b->last_out + a->heartbeat_ms - now;
        int64_t t2 = b->last_in + b->dead_ms - now;
        if (!a->draining && t2 < next) next = t2;
        if (t1 < next) next = t1;
    }
    return next < 0 ? 0 : (int)next;
}

/* --- lifecycle ----------------------------------------------------------------- */

void zb_agent_config_default(zb_agent_config_t *c) {
    memset(c, 0, sizeof *c);
    c->threads = 1;
    c->batch_texts = ZB_AGENT_BATCH_TEXTS;
    c->heartbeat_ms = ZB_AGENT_HEARTBEAT_MS;
    c->dead_ms = ZB_AGENT_DEAD_MS;
    c->dead_max_ms = ZB_AGENT_DEAD_MAX_MS;
}

/* PROTOCOL.md 6: twice what one run holds, so the next shard is already
 * here when a run ends. */
static uint32_t s_default_credit(size_t batch_texts) {
    size_t per_run = (batch_texts + ZB_AGENT_BATCH_TEXTS - 1) / ZB_AGENT_BATCH_TEXTS;
    size_t credit = 2 * per_run;
    if (credit < 2) credit = 2;
    if (credit > ZB_MSG_CREDIT_MAX) credit = ZB_MSG_CREDIT_MAX;
    return (uint32_t)credit;
}

static int s_check_config(const zb_agent_config_t *c, zb_diag_t *d) {
    if (c->embedder == NULL) return zb_diag_set(d, ZB_EINVAL, "agent: no embedder");
    if (c->model == NULL) return zb_diag_set(d, ZB_EINVAL, "agent: no model identity");
    if (c->name == NULL) return zb_diag_set(d, ZB_EINVAL, "agent: no name");
    if (c->n_brokers < 1 || c->brokers == NULL)
        return zb_diag_set(d, ZB_EINVAL, "agent: no broker");
    for (int i = 0; i < c->n_brokers; i++)
        if (c->brokers[i] == NULL || c->brokers[i][0] == '\0')
            return zb_diag_set(d, ZB_EINVAL, "agent: broker %d: no endpoint", i);
    if (c->threads < 1 || c->threads > ZB_THREADS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "agent: threads %d outside 1..%d", c->threads,
                           ZB_THREADS_MAX);
    if (c->credit > ZB_MSG_CREDIT_MAX)
        return zb_diag_set(d, ZB_EINVAL, "agent: credit %u outside 1..%u", c->credit,
                           ZB_MSG_CREDIT_MAX);
    if (c->batch_texts < 1 || c->batch_texts > ZB_MSG_TEXTS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "agent: batch texts %zu outside 1..%u", c->batch_texts,
                           ZB_MSG_TEXTS_MAX);
    if (c->heartbeat_ms < 1 || c->dead_ms < 1 || c->dead_max_ms < c->dead_ms)
        return zb_diag_set(d, ZB_EINVAL,
                           "agent: heartbeat %d ms, dead %d ms, dead max %d ms: each must be "
                           "positive, the max at least dead",
                           c->heartbeat_ms, c->dead_ms, c->dead_max_ms);
    if (c->curve == NULL && c->n_broker_certs == 0) return 0;
    if (c->curve == NULL || !c->curve->has_secret)
        return zb_diag_set(d, ZB_EINVAL, "agent: CURVE needs this worker's secret key");
    if (c->broker_certs == NULL || (c->n_broker_certs != 1 && c->n_broker_certs != c->n_brokers))
        return zb_diag_set(d, ZB_EINVAL,
                           "agent: CURVE needs one broker key for every broker, or one per "
                           "broker (%d given for %d)",
                           c->broker_certs == NULL ? 0 : c->n_broker_certs, c->n_brokers);
    if (!zb_curve_available())
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "agent: CURVE asked for, but this libzmq has no CURVE support");
    return 0;
}

/* The heartbeat and bye bodies, and the ready of every epoch (checked
 * here once by encoding it, so an announce can only fail for memory). */
static int s_encode_fixed(zb_agent_t *a, zb_diag_t *d) {
    a->ready = (zb_msg_ready_t){.name = {a->name, strlen(a->name)},
                                .model = {a->model, strlen(a->model)},
                                .dim = (uint32_t)a->dim,
                                .threads = (uint32_t)a->threads,
                                .credit = a->credit};
    uint8_t *check = NULL;
    size_t check_len = 0;
    int rc = zb_msg_encode_ready(&a->ready, &check, &check_len, d);
    free(check);
    if (rc == 0) rc = zb_msg_encode_empty(ZB_MSG_HEARTBEAT, &a->heartbeat, &a->heartbeat_len, d);
    if (rc == 0) rc = zb_msg_encode_empty(ZB_MSG_BYE, &a->bye, &a->bye_len, d);
    return rc;
}

int zb_agent_new(const zb_agent_config_t *cfg, zb_agent_t **out, zb_diag_t *d) {
    if (out == NULL || cfg == NULL) return zb_diag_set(d, ZB_EINVAL, "zb_agent_new: NULL argument");
    *out = NULL;
    int rc = s_check_config(cfg, d);
    if (rc != 0) return rc;
    zb_agent_t *a = calloc(1, sizeof *a);
    if (a == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    a->threads = cfg->threads;
    a->credit = cfg->credit ? cfg->credit : s_default_credit(cfg->batch_texts);
    a->batch_texts = cfg->batch_texts;
    a->heartbeat_ms = cfg->heartbeat_ms;
    a->dead_ms = cfg->dead_ms;
    a->dead_max_ms = cfg->dead_max_ms;
    a->dim = zb_embed_dim(cfg->embedder);
    a->n_b = cfg->n_brokers;
    a->b = calloc((size_t)a->n_b, sizeof *a->b);
    if (a->b == NULL || (a->name = strdup(cfg->name)) == NULL ||
        (a->model = strdup(cfg->model)) == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < a->n_b; i++) {
        if ((a->b[i].endpoint = strdup(cfg->brokers[i])) == NULL) {
            rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
            goto fail;
        }
    }
    if (cfg->curve != NULL) {
        if ((a->curve = malloc(sizeof *a->curve)) == NULL) {
            rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
            goto fail;
        }
        *a->curve = *cfg->curve;
        for (int i = 0; i < a->n_b; i++)
            memcpy(a->b[i].server_key, cfg->broker_certs[cfg->n_broker_certs == 1 ? 0 : i].pub,
                   ZB_CURVE_KEY_BYTES);
    }
    /* the sentences zbert-worker has always printed for these two */
    zb_diag_t sub = {{0}};
    if ((rc = zb_task_new(cfg->embedder, NULL, &a->task, &sub)) != 0) {
        rc = zb_diag_set(d, rc, "embedder: %s", zb_diag_text(&sub, rc));
        goto fail;
    }
    if ((rc = s_encode_fixed(a, &sub)) != 0) {
        rc = zb_diag_set(d, rc, "ready: %s", zb_diag_text(&sub, rc));
        goto fail;
    }
    *out = a;
    return 0;
fail:
    zb_agent_destroy(&a);
    return rc;
}

uint32_t zb_agent_credit(const zb_agent_t *a) {
    return a->credit;
}

void zb_agent_stats(const zb_agent_t *a, zb_agent_stats_t *out) {
    memset(out, 0, sizeof *out);
    out->draining = a->draining;
    out->taken = a->taken;
    out->results = a->tasks;
    out->texts = a->texts;
    out->tokens = a->tokens;
    for (int i = 0; i < a->n_b; i++) {
        out->malformed += a->b[i].malformed;
        out->dropped += a->b[i].dropped;
        out->stale += a->b[i].stale;
    }
}

/* The context, the compute pipe and thread, and one DEALER per broker with
 * its first `ready`.  0, or ZB_EIO / ZB_ENOMEM (logged); what was made is
 * left for s_teardown. */
static int s_start(zb_agent_t *a) {
    /* The compute thread (and the OpenMP threads it creates) inherits a
     * mask with SIGTERM and SIGINT blocked, so a signal interrupts the
     * caller's zmq_poll, which is what looks at the stop counter. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    a->ctx = zmq_ctx_new();
    if (a->ctx == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "zmq_ctx_new: %s", zmq_strerror(errno));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return ZB_EIO;
    }
    a->pipe = zmq_socket(a->ctx, ZMQ_PAIR);
    a->comp = (s_compute_t){.pipe = zmq_socket(a->ctx, ZMQ_PAIR), .task = a->task, .dim = a->dim};
    if (a->pipe == NULL || a->comp.pipe == NULL || zmq_bind(a->pipe, S_PIPE_ENDPOINT) != 0 ||
        zmq_connect(a->comp.pipe, S_PIPE_ENDPOINT) != 0) {
        ZB_LOG(ZB_LOG_ERROR, "compute pipe: %s", zmq_strerror(errno));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return ZB_EIO;
    }
    int rc = pthread_create(&a->thread, NULL, s_compute_main, &a->comp);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ZB_LOG(ZB_LOG_ERROR, "compute thread: %s", strerror(rc));
        return ZB_EIO;
    }
    a->thread_started = true;

    int64_t now = s_now_ms();
    for (int i = 0; i < a->n_b; i++) {
        s_broker_t *b = &a->b[i];
        b->dead_ms = a->dead_ms;
        b->sock = s_open_socket(a, b);
        if (b->sock == NULL) {
            /* an endpoint that does not parse is a setting to fix, not a
             * network condition to wait out */
            ZB_LOG(ZB_LOG_ERROR, "broker %s: %s", b->endpoint, zmq_strerror(errno));
            return ZB_EIO;
        }
        b->last_in = b->last_out = now;
        s_announce(a, i);
        ZB_LOG(ZB_LOG_INFO, "broker %s: connecting%s", b->endpoint, a->curve ? " with CURVE" : "");
    }
    return 0;
}

/* Stops and joins the compute thread, closes every socket (results and
 * bye already queued get S_LINGER_BYE_MS after a drain, nothing
 * otherwise), frees what is still queued and ends the context. */
static void s_teardown(zb_agent_t *a, bool drained) {
    if (a->thread_started) {
        /* an empty message asks the compute thread to leave; it is idle
         * here unless the loop broke on an error or a second stop */
        zmq_send(a->pipe, "", 0, 0);
        pthread_join(a->thread, NULL);
        a->thread_started = false;
        /* a batch it finished after the loop broke */
        s_job_t *left[S_MERGE_TASKS];
        int n;
        while ((n = zmq_recv(a->pipe, left, sizeof left, ZMQ_DONTWAIT)) > 0)
            for (size_t i = 0; i < (size_t)n / sizeof *left; i++) s_job_free(left[i]);
    }
    if (a->comp.pipe) zmq_close(a->comp.pipe);
    a->comp.pipe = NULL;
    for (int i = 0; i < a->n_b; i++) {
        s_broker_t *b = &a->b[i];
        uint64_t lost = b->malformed + b->dropped + b->stale;
        if (lost)
            ZB_LOG(ZB_LOG_INFO,
                   "broker %s: %llu malformed message(s), %llu task(s) dropped, %llu of an "
                   "earlier epoch",
                   b->endpoint, (unsigned long long)b->malformed, (unsigned long long)b->dropped,
                   (unsigned long long)b->stale);
        if (b->sock) {
            /* results and bye already queued get a bounded time to leave */
            s_setopt_int(b->sock, ZMQ_LINGER, drained ? S_LINGER_BYE_MS : 0);
            zmq_close(b->sock);
            b->sock = NULL;
        }
    }
    while (a->head) {
        s_job_t *j = a->head;
        a->head = j->next;
        s_job_free(j);
    }
    a->tail = NULL;
    a->queued = 0;
    a->running = 0;
    if (a->pipe) zmq_close(a->pipe);
    a->pipe = NULL;
    if (a->ctx) zmq_ctx_term(a->ctx);
    a->ctx = NULL;
    a->state = S_DONE;
}

int zb_agent_run(zb_agent_t *a, volatile sig_atomic_t *stop) {
    if (a == NULL || stop == NULL || a->state != S_NEW) {
        ZB_LOG(ZB_LOG_ERROR, "zb_agent_run: no agent, no stop counter, or run before");
        return ZB_EINVAL;
    }
    a->state = S_RUNNING;
    int rc = s_start(a);
    if (rc != 0) {
        s_teardown(a, false);
        return rc;
    }
    zmq_pollitem_t *items = calloc((size_t)a->n_b + 1, sizeof *items);
    if (items == NULL) {
        ZB_LOG(ZB_LOG_ERROR, "out of memory");
        s_teardown(a, false);
        return ZB_ENOMEM;
    }
    rc = ZB_EIO;
    for (;;) {
        if (*stop >= 2) {
            ZB_LOG(ZB_LOG_WARN, "second signal: leaving without finishing %zu task(s)",
                   a->queued + a->running);
            free(items);
            /* the compute thread may be inside the engine: no clean-up
             * here (zb_agent_destroy waits for it) */
            a->state = S_LEFT;
            return ZB_ECANCELED;
        }
        if (*stop && !a->draining) {
            a->draining = true;
            ZB_LOG(ZB_LOG_INFO, "draining: finishing %zu task(s), taking no more",
                   a->queued + a->running);
        }
        if (a->draining && a->queued == 0 && a->running == 0) break;
        s_dispatch(a);
        int timeout = s_tick(a, s_now_ms());
        items[0] = (zmq_pollitem_t){.socket = a->pipe, .events = ZMQ_POLLIN};
        for (int i = 0; i < a->n_b; i++)
            items[i + 1] =
                (zmq_pollitem_t){.socket = a->b[i].sock, .events = a->b[i].sock ? ZMQ_POLLIN : 0};
        /* a NULL socket with fd 0 would poll stdin: give it no events and
         * an fd that is never ready */
        for (int i = 0; i < a->n_b; i++)
            if (a->b[i].sock == NULL) items[i + 1].fd = -1;
        int n = zmq_poll(items, a->n_b + 1, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            ZB_LOG(ZB_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) s_collect(a);
        for (int i = 0; i < a->n_b; i++)
            if (items[i + 1].revents & ZMQ_POLLIN) s_read_broker(a, i);
    }
    free(items);
    if (a->draining) {
        for (int i = 0; i < a->n_b; i++) {
            s_broker_t *b = &a->b[i];
            if (!s_send_copy(b, a->bye, a->bye_len))
                ZB_LOG(ZB_LOG_WARN, "broker %s: bye not sent: %s", b->endpoint,
                       zmq_strerror(errno));
        }
        rc = 0;
    }
    ZB_LOG(ZB_LOG_INFO, "leaving: %llu results (%llu texts, %llu tokens) sent",
           (unsigned long long)a->tasks, (unsigned long long)a->texts,
           (unsigned long long)a->tokens);
    s_teardown(a, rc == 0);
    return rc;
}

void zb_agent_destroy(zb_agent_t **pa) {
    if (pa == NULL || *pa == NULL) return;
    zb_agent_t *a = *pa;
    /* after a second stop the compute thread may still be running a batch:
     * the tear-down waits for it */
    if (a->state == S_LEFT) s_teardown(a, false);
    for (int i = 0; a->b && i < a->n_b; i++) free(a->b[i].endpoint);
    free(a->b);
    if (a->curve) explicit_bzero(a->curve, sizeof *a->curve);
    free(a->curve);
    free(a->heartbeat);
    free(a->bye);
    free(a->name);
    free(a->model);
    zb_task_destroy(&a->task);
    free(a);
    *pa = NULL;
}
