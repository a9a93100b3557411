/*
 * broker.h -- zbert-broker's state and its one zmq_poll loop: a ROUTER
 * frontend for clients, a ROUTER backend for workers (proto/PROTOCOL.md).
 *
 * What the loop does with each request: validates it, refuses it whole when
 * a limit is reached (`busy`), splits it into shards of consecutive texts
 * (at most ZB_BROKER_SHARD_TEXTS_MAX texts and about shard-tokens-max
 * estimated tokens each), queues them in its client's lane of the fair queue
 * (queue.h), hands them to workers by credit (least-loaded worker first),
 * turns each shard's result into one `part` for the client at once, and
 * closes the request with `done` after its last shard, or with `error`
 * (timeout, canceled, no_model, internal) -- exactly one of them.
 *
 * Options and results pass through unchanged: every task of a request
 * carries the request's options as they were decoded (the later ones, such
 * as sentences or Spark NLP compatibility, included), and each part carries
 * its result's payload as it came (token metadata included) with indices
 * made absolute.  A result whose token metadata does not match what its
 * task asked for breaks the protocol, like one of the wrong level or width
 * (an older worker ignoring the options: PROTOCOL.md 9).
 *
 * Exactly-once delivery: every shard is in one place at a time (queued, in
 * flight on one worker, or finished).  A worker that stops talking for
 * ZB_BROKER_WORKER_DEAD_MS, says `bye`, breaks the protocol or cannot be
 * sent to is forgotten and its in-flight shards go back to the head of
 * their lanes; a `result` is accepted only from the worker the shard is
 * in flight on, and only with the epoch of that worker's latest `ready`
 * (PROTOCOL.md 6), so a late answer of a forgotten worker, or one for a
 * task sent before the worker announced itself again, is discarded.  A
 * shard on a worker whose request ended (cancel, timeout) stays counted on
 * that worker until its result comes back (or the shard timeout passes),
 * so a worker never holds more than its credit.
 *
 * Shard timeout.  A shard in flight on one worker for shard-timeout-ms is
 * taken back as if that worker had been lost while holding it (a loss
 * towards ZB_BROKER_SHARD_FAILURES_MAX) and the worker's credit for it is
 * given back; the worker stays registered, and the shard's late result, if
 * it ever comes, is discarded.  This recovers a shard a live, heartbeating
 * worker dropped (a protocol fault) instead of waiting on it forever.
 *
 * Models.  Each request is bound to the model identity (model name and dim
 * of `ready`) of the first worker that takes one of its shards; its other
 * shards go only to workers of the same identity, so one request never
 * mixes models or widths.  A request that no connected worker can serve for
 * no-worker-ms fails with `no_model` (an unbound one, or one bound to an
 * identity whose workers all left before any part was sent, is free to go
 * to any worker).  A request whose embed names a model goes only to
 * workers whose ready.model is that string (then binds as above), and
 * counts as unservable while none is connected.  Each part and the done
 * carry the bound identity's model.
 *
 * Stopping (PROTOCOL.md 7).  Once *stop becomes 1 the broker sends
 * `closing` to every client with open requests (at its conn, or at the
 * routing id a detached request lost; once per routing id of an owner) and
 * answers every later client message with `closing`, after what was kept
 * for its owner there.  It starts no queued shard; the shards on workers
 * deliver their parts (done included, for a request they complete).  It
 * stops when no shard is on a worker and nothing is held for a connected
 * client, when drain-ms has passed, or when *stop reaches 2 -- and sends
 * no `error` at all once `closing` is out (deadlines, lost shards and the
 * requests left end without a word): the clients take their requests
 * elsewhere, with `have`, and an error from here would fail them there.
 *
 * Slow clients.  ZeroMQ queues a few messages towards a client
 * (S_FRONT_SNDHWM in broker.c); what does not fit is held by the broker
 * and retried at every turn of the loop, and so is every later message for
 * that client while any is held, so nothing is lost and the order stays.
 * A client is never dropped for being slow: its work pauses instead
 * (Memory, below).  Only replies of no request (status, refusals) are
 * bounded by count: past client-hwm of them waiting, further ones are
 * dropped.
 *
 * Ownership (PROTOCOL.md 1, 3 and 7).  A request belongs to its owner:
 * with CurveZMQ the key of the client that sent its `embed`, without it
 * that client's routing id (a client that sets its own keeps it across
 * reconnections; the frontend sets ZMQ_ROUTER_HANDOVER so that a
 * reconnection takes it over at once).  An owner has one lane of the fair
 * queue, one count towards client-requests-max and one space of request
 * ids, however many connections it has.  Each request also remembers the
 * connection its parts go to: the one its `embed` came from.
 *
 * Never a silent drop.  A conn found gone (a send fails with no route) has
 * its requests detached, with or without CurveZMQ: each keeps running, and
 * keeps -- in order, after the parts its conn still held -- the parts
 * made while it has no conn; `done` waits too.  When its owner speaks
 * again from the routing id the request lost (any message), the request
 * takes that conn back and what it kept goes first, before the message's
 * answer; a detached request ends without a word after resume-ms, when the
 * broker stops, or at its deadline.  status_reply.open lists the asking
 * owner's open requests, detached ones included.
 *
 * Resumption and have (PROTOCOL.md 3).  An `embed` of a new request skips
 * the texts of its `have` (no shard, no part; every text held: `done` at
 * once with parts 0).  An `embed` under the id of an open request of its
 * owner, with as many texts and the same options and model, resumes it
 * from whichever connection it comes (the texts are not compared: held
 * ones may come empty): the parts go there from then on; the parts the
 * broker still holds for it (on its conn, or kept while it had none) go
 * there unless their texts are in the embed's have; each part already
 * handed to ZeroMQ is made again unless its texts are in have; a shard all
 * of whose texts are in have makes no part (one on a worker: its result is
 * dropped).  done.parts and done.tokens count what was sent since.  A
 * message from the owner's routing id that resumes a detached request does
 * not bring that request's kept parts back first (what the client holds
 * decides).  Another text count or other options under an open id is
 * `duplicate_id`, sent without `id` and with `of`.  With CurveZMQ:
 *   - a `cancel` from any connection of the key cancels it; from another
 *     key the id is unknown, and the cancel is ignored;
 *   - a routing id heard with another key than the one it was bound to
 *     means the connection that held it is gone (libzmq keeps the ids of
 *     live connections distinct, and a peer may choose its own): its
 *     requests wait for their owner and its held messages are dropped, so
 *     nothing meant for one key ever reaches another.
 * Without CurveZMQ a client that reconnects under a new routing id is a new
 * owner: its earlier requests wait for nobody and end after resume-ms.
 *
 * Security (PROTOCOL.md 1).  With curve-key, both ROUTERs are CurveZMQ
 * servers holding that one key pair, with the ZAP domains "clients" and
 * "workers"; the broker's own ZAP handler (zap.h), served in this loop and
 * bound before the ROUTERs, accepts a handshake only for a key of that
 * endpoint's allow-list (allow.h: allow-clients, allow-workers, both then
 * required).  The lists are reloaded when their directories change
 * (inotify, and their mtime every ZB_BROKER_ALLOW_CHECK_MS) and on demand
 * (*reload, SIGHUP).  A key removed from a list is refused from then on,
 * on connections already made too: at the reload, its requests end with
 * `error forbidden` and its workers are forgotten (their shards
 * re-queued); every later message is checked against the current list by
 * the key libzmq attached to it (User-Id) and refused -- a client's with
 * `forbidden`, a worker's dropped -- counted and logged (rate-limited).
 * Without curve-key, allow-lists are refused (they would protect nothing)
 * and so is an endpoint other hosts could reach (zb_broker_endpoint_local)
 * unless `insecure` is set, which is then logged as a warning.  No message
 * to a peer ever carries a routing id, an address or a key.
 *
 * Memory (PROTOCOL.md 7), in bytes where it is large.  Each open request
 * keeps its body until it closes (queue-bytes-max in all) and 16 bytes of
 * view per text into it (queue-texts-max in all).  The parts of one owner
 * not yet taken by its client -- held by the broker (on its connections,
 * or on its requests while it is away), or in ZeroMQ's queue towards it
 * (counted until ZeroMQ frees them) -- are counted against
 * client-bytes-max: over it, the owner's lane of the fair queue is passed
 * over (its work pauses, the others' goes on) until its client drains;
 * nothing is dropped.  Shards already on workers when it paused still make
 * their parts, so an owner overshoots by what its shards in flight make.
 * The broker's peak memory is therefore about
 *
 *     F + queue-bytes-max + 16 B x queue-texts-max
 *       + owners x client-bytes-max
 *       + (credit of all workers) x R + 2 x R
 *
 * where owners counts the clients with open requests (those away
 * included), R is the largest result (64 texts x rows x dim x 4 bytes:
 * 196 KiB for 64 sentence vectors of bert-base, 100 MB for 64 windowed
 * texts of 512 wordpieces), 2 x R a result and its part during the
 * conversion, and F the fixed part (about 10 MiB: code, libzmq's threads
 * and buffers, ZB_MSG_WORKERS_MAX workers' records, client-hwm replies per
 * client).  Blocks from 256 KiB on are mapped on their own (zbert-broker
 * sets M_MMAP_THRESHOLD at start), so they go back to the system when
 * freed: the memory goes down again once a slow client has drained.
 *
 * Nothing received is asserted; malformed messages are answered (clients)
 * or dropped (workers), counted in `protocol_errors`, and logged once per
 * peer with a sanitised sample.
 *
 * Thread-safety: a broker and its sockets belong to the thread that runs
 * it.
 */
#ifndef ZB_BROKER_H
#define ZB_BROKER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "settings.h"

/* --- fixed bounds (PROTOCOL.md sections 6 and 7) ----------------------- */

/* Texts per shard.  Small enough that one shard's compute is the unit of
 * unfairness between clients (a few hundred milliseconds on bert-base), and
 * that its result fits the body limit (64 texts x 512 rows x 768 floats is
 * 100 MB); large enough for the engine to batch well. */
#define ZB_BROKER_SHARD_TEXTS_MAX 64u

/* Default bound on the estimated tokens of a shard: about one engine batch,
 * so long texts make shards of fewer texts and a shard's compute time stays
 * about even whatever its texts' lengths. */
#define ZB_BROKER_SHARD_TOKENS_DEFAULT 8192u

/* Token estimate of a text: bytes / 4 (English averages about four bytes
 * per wordpiece) + 2 for [CLS] and [SEP], capped at the 512 positions of
 * BERT when the request truncates (without windows no text runs longer). */
#define ZB_BROKER_TEXT_BYTES_PER_TOKEN 4u
#define ZB_BROKER_TEXT_TOKENS_CAP      512u

/* Heartbeats (PROTOCOL.md section 6): the broker sends one to a worker it
 * has sent nothing for this long, and forgets a worker silent for
 * ZB_BROKER_WORKER_DEAD_MS. */
#define ZB_BROKER_HEARTBEAT_MS   1000u
#define ZB_BROKER_WORKER_DEAD_MS 3000u

/* A shard lost this many times (its worker died, broke the protocol or
 * vanished while holding it, or it passed the shard timeout) fails its
 * request with `internal`: a text that crashes workers must not take down
 * every worker in turn. */
#define ZB_BROKER_SHARD_FAILURES_MAX 3u

/* How often the allow-lists' directories are checked by their mtime, for
 * file systems where inotify does not see changes (or is unavailable). */
#define ZB_BROKER_ALLOW_CHECK_MS 2000u

/* --- settings ----------------------------------------------------------- */

/* Every setting of the broker (deploy/zbert-broker.conf.example names the
 * keys: clients, workers, queue-texts-max, ...; zb_broker_config_table()
 * holds their ranges and defaults). */
typedef struct zb_broker_config {
    char clients[256];            /* frontend endpoint to bind */
    char workers[256];            /* backend endpoint to bind */
    uint64_t queue_texts_max;     /* texts of open requests not yet returned */
    uint64_t queue_bytes_max;     /* bytes of open requests' bodies */
    uint32_t request_texts_max;   /* texts of one embed (<= ZB_MSG_TEXTS_MAX) */
    uint32_t client_requests_max; /* open requests of one client */
    uint32_t shard_texts_max;     /* 1..ZB_BROKER_SHARD_TEXTS_MAX */
    uint32_t shard_tokens_max;    /* estimated tokens per shard */
    uint32_t client_hwm;          /* replies of no request (status,
                                   * refusals) held for one client */
    uint64_t drain_ms;            /* how long a stopping broker finishes work */
    uint64_t no_worker_ms;        /* how long a request waits for a worker */
    uint64_t shard_timeout_ms;    /* how long a shard may stay on one worker */
    char curve_key[256];          /* the broker's secret key file; "": no CurveZMQ */
    char allow_clients[256];      /* directory of the clients' .pub files */
    char allow_workers[256];      /* directory of the workers' .pub files */
    bool insecure;                /* bind endpoints others can reach without keys */
    uint64_t resume_ms;           /* how long a request whose connection is
                                   * gone waits for its owner; 0: not at all */
    uint64_t client_bytes_max;    /* bytes of one owner's parts not yet
                                   * taken: over it its lane pauses */
} zb_broker_config_t;

/*
 * The table of these settings (proto/settings.h): one entry per key, with
 * its offset in zb_broker_config_t, range, default and help line.  Static;
 * *n is its length.  zbert-broker parses its command line, environment and
 * config file with it; deploy/zbert-broker.conf.example documents the same
 * keys.
 */
const zb_settings_t *zb_broker_config_table(size_t *n);

/* The defaults of every setting (the table's). */
void zb_broker_config_default(zb_broker_config_t *c);

/*
 * Sets the setting named key (a config-file key such as "queue-texts-max")
 * from its text value, checking syntax and range.  Returns 0, ZB_ENOTFOUND
 * (no such key) or ZB_EINVAL (bad value); d names the problem.
 */
int zb_broker_config_set(zb_broker_config_t *c, const char *key, const char *value, zb_diag_t *d);

/*
 * Whether endpoint can be reached only from this host: ipc:// and inproc://,
 * and tcp:// on a loopback address (127.0.0.0/8, ::1, an IPv4-mapped
 * 127.x, or the name localhost).  The address is the part after the last
 * ';' (libzmq's "source;address" form); anything else -- *, 0.0.0.0, an
 * interface name, another address or host name, another transport -- is
 * not local.
 */
bool zb_broker_endpoint_local(const char *endpoint);

/* --- the broker --------------------------------------------------------- */

typedef struct zb_broker zb_broker_t;

/*
 * Creates a broker with a copy of cfg and binds its two sockets (and, with
 * curve-key, reads the key and the allow-lists and binds the ZAP handler
 * first).  *out is the caller's, released with zb_broker_destroy().
 * Returns 0, ZB_ENOMEM, ZB_EINVAL (a setting is out of range, the security
 * settings do not fit together, an endpoint others can reach without
 * curve-key or insecure: d says why and what to do), ZB_ENOTFOUND /
 * ZB_EFORMAT / ZB_EIO (the key or a directory cannot be read),
 * ZB_EUNSUPPORTED (a libzmq without CURVE) or ZB_EIO (an endpoint cannot be
 * bound: d says which and why).
 */
int zb_broker_new(const zb_broker_config_t *cfg, zb_broker_t **out, zb_diag_t *d);

/*
 * Serves until *stop says so (see "Stopping" above; the caller's signal
 * handler increments it).  When reload (may be NULL) becomes non-zero, the
 * allow-lists are read again and *reload is set back to 0 (SIGHUP).
 * Returns 0 after a clean stop, ZB_EIO when polling fails for a reason
 * other than a signal.
 */
int zb_broker_run(zb_broker_t *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload);

/* Closes the sockets and frees everything; nulls *b.  NULL-safe. */
void zb_broker_destroy(zb_broker_t **b);

#endif
