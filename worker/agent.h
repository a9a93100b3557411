/*
 * agent.h -- the worker agent: serves one embedder to one or more brokers,
 * speaking proto/PROTOCOL.md section 6 to each (zbert-worker is this module
 * behind its settings, worker/cmd_worker.c).
 *
 * Threads.  The thread that calls zb_agent_run() (the main thread below)
 * owns every ZeroMQ socket: one DEALER per broker and the main end of an
 * inproc PAIR to the compute thread, which owns the embedder (and the
 * OpenMP threads inside it) and never touches a broker socket.  Work
 * crosses the PAIR as pointers to jobs, and ownership of a job goes with
 * its pointer: the main thread hands a batch of jobs over, the compute
 * thread runs them (worker/task: several queued tasks of the same options
 * in one embedder call for bigger batches), encodes each result and hands
 * the batch back, and the main thread sends each result to the broker its
 * task came from.  The queue of tasks lives in the main thread only,
 * bounded by the credit advertised to each broker.  Because the main
 * thread never computes, it keeps heartbeating while a batch runs.
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
 * nothing from us for heartbeat_ms (1 s) gets a heartbeat.  A broker silent
 * for dead_ms (3 s) is presumed gone: its DEALER is closed and reopened (a
 * new routing id, so a broker that lost us sees a new worker), `ready` is
 * sent again and the tasks it had queued here are dropped (it re-queues
 * them when it expires us); each fruitless reconnect doubles the wait
 * before the next, up to dead_max_ms (30 s), and anything received resets
 * it.  `reconnect` from a broker (it does not know us) is answered with
 * `ready`, dropping its tasks likewise.
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
 * Draining.  Once *stop (the caller's stop counter: zbert-worker counts
 * SIGTERM and SIGINT in it) becomes 1: tasks arriving from then on are
 * dropped, queued and running tasks are finished and their results sent,
 * then every broker gets `bye` (it re-queues what it still counted on us)
 * and zb_agent_run() returns 0 (the process exits 0).  When *stop reaches
 * 2 it leaves at once (ZB_ECANCELED; the process exits 1).
 *
 * CURVE.  Given a key pair (curve), every DEALER is a CurveZMQ client:
 * the connection is encrypted, the broker must prove it holds the secret
 * of the public key given for it, and the broker's ZAP handler sees our
 * public key and decides whether to let us in.  The keys are set on each
 * socket before it connects, reconnections included.  A broker key that is
 * not the broker's, or a broker that refuses ours, never completes the
 * handshake: to the agent that broker is silent (reconnects with the
 * doubling wait, logged at warn with that hint).
 *
 * Hostile input.  Nothing a broker sends is trusted: a body that does not
 * decode, a message of several frames, a type a worker does not take, a
 * task of an epoch we never announced: each is dropped, counted and logged
 * (once per broker connection at warn, with a sanitised sample; later ones
 * at debug).
 * ZMQ_MAXMSGSIZE bounds what reaches us; the receive HWM and the credit
 * bound what we hold.
 *
 * Ownership and thread-safety: an agent borrows its embedder (the compute
 * thread drives it while zb_agent_run() runs) and copies every string of
 * its configuration.  zb_agent_new(), zb_agent_run() and zb_agent_destroy()
 * are called from one thread at a time, in that order; zb_agent_stats() and
 * zb_agent_credit() from any thread, at any time between new and destroy.
 * The agent keeps no global state: the log level and program name are the
 * caller's (proto/log.h), and so are signal handlers.
 */
#ifndef ZB_AGENT_H
#define ZB_AGENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "embed.h"
#include "error.h"

/* --- defaults (PROTOCOL.md sections 6 and 7) ------------------------------ */

/* Heartbeat after 1 s of saying nothing to a broker, reconnect after 3 s of
 * hearing nothing from it. */
#define ZB_AGENT_HEARTBEAT_MS 1000
#define ZB_AGENT_DEAD_MS      3000
/* Cap of the doubling wait between reconnects to a silent broker. */
#define ZB_AGENT_DEAD_MAX_MS 30000

/* A broker shard holds at most 64 texts; the default merge limit is one such
 * shard, so full shards run alone (no added latency) and only small ones
 * are merged. */
#define ZB_AGENT_BATCH_TEXTS 64

/* --- the agent ------------------------------------------------------------ */

typedef struct zb_agent zb_agent_t;

typedef struct zb_agent_config {
    zb_embed_t *embedder;       /* borrowed: the model served; must outlive the
                                 * agent, and no other thread may use it while
                                 * zb_agent_run() runs */
    const char *model;          /* the model's identity announced in `ready`
                                 * (zb_model_identity()) */
    const char *const *brokers; /* [n_brokers] endpoints, one DEALER each */
    int n_brokers;              /* 1.. */
    const char *name;           /* 1..ZB_MSG_NAME_BYTES_MAX bytes of UTF-8 */
    int threads;                /* announced in `ready`: the embedder's,
                                 * 1..ZB_THREADS_MAX */
    uint32_t credit;            /* tasks each broker may have on us per epoch,
                                 * 1..ZB_MSG_CREDIT_MAX; 0: twice what one run
                                 * holds (zb_agent_credit()) */
    size_t batch_texts;         /* texts one merged run takes at most (the head
                                 * task always runs whatever its size),
                                 * 1..ZB_MSG_TEXTS_MAX */
    int heartbeat_ms;           /* ms of silence towards a broker before a
                                 * heartbeat, >= 1 */
    int dead_ms;                /* ms of silence from a broker before a
                                 * reconnect, >= 1 */
    int dead_max_ms;            /* cap of the doubling wait, >= dead_ms */
    /* CURVE (see above): both set, or neither */
    const zb_curve_cert_t *curve;        /* this worker's key pair (has_secret),
                                          * copied; NULL: plain connections */
    const zb_curve_cert_t *broker_certs; /* [n_broker_certs] the brokers' public
                                          * keys (pub), copied: one for every
                                          * broker, or one per broker in the
                                          * order of brokers */
    int n_broker_certs;                  /* 0 without curve; else 1 or n_brokers */
} zb_agent_config_t;

/* What an agent did since it was made (counters only grow), and whether
 * it drains. */
typedef struct zb_agent_stats {
    bool draining;      /* it has seen *stop: takes no more tasks */
    uint64_t taken;     /* tasks queued to run */
    uint64_t results;   /* results sent */
    uint64_t texts;     /* texts of those results */
    uint64_t tokens;    /* encoder tokens of those results */
    uint64_t malformed; /* messages dropped as malformed, tasks beyond the
                         * credit included */
    uint64_t dropped;   /* tasks dropped: beyond the credit, of an epoch we
                         * never announced, or while draining */
    uint64_t stale;     /* tasks of an earlier epoch dropped on arrival */
} zb_agent_stats_t;

/* Fills c with the defaults: the constants above, credit 0 (twice what one
 * run holds), one thread, no embedder, model, name or broker, no CURVE. */
void zb_agent_config_default(zb_agent_config_t *c);

/*
 * Makes an agent for cfg (see zb_agent_config_t; strings copied, the
 * embedder borrowed) with its task runner, and checks by encoding it that
 * its `ready` is valid.  Opens no socket and starts no thread.  Returns 0
 * and *out (the caller's, released with zb_agent_destroy()), or ZB_EINVAL
 * (a setting out of range, the name or model not valid for `ready`, curve
 * without a secret or without broker keys, or the reverse, a count of
 * broker keys that is neither 1 nor n_brokers) / ZB_EUNSUPPORTED (curve
 * asked of a libzmq without it) / ZB_ENOMEM with d saying why.
 */
int zb_agent_new(const zb_agent_config_t *cfg, zb_agent_t **out, zb_diag_t *d);

/*
 * Serves the brokers until *stop says so (see "Draining" above; stop is
 * the caller's counter, e.g. incremented by a signal handler, and is only
 * read here).  Starts the compute thread with SIGTERM and SIGINT blocked,
 * so a signal interrupts the calling thread's poll; *stop is looked at
 * after each poll, which waits at most heartbeat_ms.  Once per agent.
 * Returns 0 after a drain (every task taken answered, `bye` sent to every
 * broker, sockets closed, compute thread joined); ZB_ECANCELED when *stop
 * reached 2 first: it left at once, the compute thread may still be
 * running a batch (the process is expected to _exit(); zb_agent_destroy()
 * waits for that batch to end); ZB_EIO when a socket, the compute thread or
 * polling failed, or an endpoint does not parse; ZB_ENOMEM; ZB_EINVAL when
 * called a second time.  Failures are logged (proto/log.h).
 */
int zb_agent_run(zb_agent_t *a, volatile sig_atomic_t *stop);

/* The credit announced to each broker: the configured one, or its default
 * (2 x ceil(batch_texts / ZB_AGENT_BATCH_TEXTS), at least 2). */
uint32_t zb_agent_credit(const zb_agent_t *a);

/* The counters so far (each read atomically; the set is not a snapshot
 * while zb_agent_run() runs). */
void zb_agent_stats(const zb_agent_t *a, zb_agent_stats_t *out);

/* Releases the agent (after zb_agent_run() returned ZB_ECANCELED: first
 * waits for the compute thread's batch), overwrites its copy of the secret
 * key with zeros and nulls *a.  Accepts NULL and *a == NULL.  The embedder
 * is not destroyed. */
void zb_agent_destroy(zb_agent_t **a);

#endif
