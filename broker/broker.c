/*
 * broker.c -- clients, requests, shards and workers, and the poll loop that
 * moves shards between them.  The rules are in broker.h; comments here say
 * why the code is shaped the way it is.
 *
 * Records and who owns them:
 *   owner    who a request belongs to: its client's CurveZMQ key, or
 *            without CurveZMQ its routing id (broker.h, Ownership); one per
 *            owner with open requests; owns them and its lane of the fair
 *            queue; freed when its last request has closed.
 *   conn     one per routing id of the frontend that requests' parts go to
 *            or messages are held for (with CurveZMQ, bound to the key of
 *            the connection holding that id); owns its held messages and
 *            lists the requests whose parts go to it; freed when it has
 *            neither.
 *   request  owns its body (the embed message, whose texts the shards
 *            point into) and an array of shards.  Closing it (done, error,
 *            client gone) releases the body at once; the record itself
 *            stays, detached from its owner, while some of its shards are
 *            still in flight ("closed"), because the workers' in-flight
 *            lists point into its shard array.  An open request without a
 *            conn is waiting for its owner ("detached"): it owns the parts
 *            made since, in order, until the owner comes back.
 *   held     a message for a client not yet handed to ZeroMQ: on its conn
 *            (in order), or a part on its detached request; a part names
 *            its request and shard while the request is open.
 *   shard    in exactly one state: idle (never queued, dropped, or to be
 *            sent again), queued (in its owner's lane), flight (on one
 *            worker's list), held (its part made, not yet handed to
 *            ZeroMQ) or done (handed, or its texts held by the client).
 *   worker   one per routing id of the backend that sent a valid `ready`,
 *            with that ready's epoch: its tasks carry it, and only results
 *            carrying it are taken (PROTOCOL.md 6, Epochs).
 *   ident    a model identity (model, dim), shared by the workers that have
 *            it and the requests bound to it; freed with its last user.
 *
 * Indexes, each embedded in the records it orders: conns and workers by
 * routing id and owners by key (idmap.h), requests with a deadline by that
 * deadline (deadline.h), queued shards in their owners' lanes (queue.h).
 */
#include "broker.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zmq.h>

#include "allow.h"
#include "clock.h"
#include "curve.h"
#include "deadline.h"
#include "idmap.h"
#include "limits.h"
#include "log.h"
#include "msg.h"
#include "queue.h"
#include "random.h"
#include "stats.h"
#include "zap.h"

/* Messages read from one socket before the loop looks at the other and
 * dispatches: keeps both sides and the clock served under load. */
#define S_RECV_BATCH 256
/* How often worker liveness, heartbeats and orphaned requests are checked;
 * also the longest the loop sleeps. */
#define S_TICK_MS         100u
#define S_ORPHAN_CHECK_MS 1000u
/* Frames beyond the body limit: a message body may be ZB_MSG_BODY_MAX; the
 * slack lets the decoder answer `too_large` for a body a little over it
 * instead of libzmq dropping the connection. */
#define S_MAXMSGSIZE ((int64_t)ZB_MSG_BODY_MAX + 4096)
/* Peers remembered as "already logged" for protocol errors, and protocol
 * error lines per second in all: a flood of bad messages is counted, not
 * written to the log line by line. */
#define S_LOGGED_PEERS    256
#define S_LOG_LINES_PER_S 10
/* Peers remembered for the rate limit of `reconnect`. */
#define S_RECONNECT_PEERS 64
/* Shards a worker lost to the shard timeout, remembered per worker so that
 * their late results are dropped quietly; a worker late on more than this
 * many has the oldest ones' results counted as protocol errors. */
#define S_LATE_IDS 64

/* Workers set aside for returning results that did not match their tasks,
 * by key (CurveZMQ) or name: a quarantine of S_QUARANTINE_FIRST_MS, doubled at each new
 * offence up to S_QUARANTINE_MAX_MS (a worker that keeps its fault keeps
 * being set aside, one that was fixed comes back soon).  An offence
 * S_QUARANTINE_FORGIVE_MS after the last quarantine ended starts again at
 * the first step.  Slots are few: a name that cannot be remembered is set
 * aside only until it reconnects. */
#define S_QUARANTINE_SLOTS      256
#define S_QUARANTINE_FIRST_MS   30000u
#define S_QUARANTINE_MAX_MS     600000u
#define S_QUARANTINE_FORGIVE_MS 3600000u
/* How long closing the frontend waits for the last errors to leave (held
 * ones included). */
#define S_FRONT_LINGER_MS 1000
/* While messages are held for clients, the loop wakes at least this often
 * to retry them. */
#define S_HELD_RETRY_MS 10
/* Messages ZeroMQ queues towards one client (the frontend's SNDHWM): few,
 * so that what ZeroMQ holds for a client stays a few parts; the rest waits
 * in the broker, where it is counted against client-bytes-max. */
#define S_FRONT_SNDHWM 4
/* What `closing` says, and the routing ids remembered per owner while
 * telling it (more are told again: a second closing harms no one). */
#define S_CLOSING_TEXT                                                                             \
    "the broker is stopping: send your open requests again (with have) to another broker, or "     \
    "to this one when it is back"
#define S_CLOSING_RIDS 8
/* ZAP requests answered per turn of the loop: handshakes are served
 * between batches of messages, never starved by them nor starving them. */
#define S_ZAP_BATCH 256
/* libzmq's ZMQ_ZAP_ENFORCE_DOMAIN (a draft option of 4.3, accepted by its
 * stable builds): a CURVE socket with a ZAP domain then refuses handshakes
 * when no ZAP handler answers, instead of letting them through. */
/* An allow-list's directory changed: it is read this long after the first
 * event, so that a file being copied in is read once, whole. */
#define S_ALLOW_SETTLE_MS 50
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif

/* --- settings ---------------------------------------------------------- */

#define S_AT(f) ZB_SETTINGS_AT(zb_broker_config_t, f)
/* Defaults are text, parsed like any value; zb_broker_config_default()
 * asserts that the ones named in broker.h agree with their macros. */
static const zb_settings_t s_table[] = {
    {.name = "clients",
     .kind = ZB_SETTINGS_STRING,
     S_AT(clients),
     .min = 1,
     .max = 255,
     .def = "tcp://127.0.0.1:5555",
     .value_name = "EP",
     .help = "endpoint to bind for clients"},
    {.name = "workers",
     .kind = ZB_SETTINGS_STRING,
     S_AT(workers),
     .min = 1,
     .max = 255,
     .def = "tcp://127.0.0.1:5556",
     .value_name = "EP",
     .help = "endpoint to bind for workers"},
    {.name = "queue-texts-max",
     .kind = ZB_SETTINGS_U64,
     S_AT(queue_texts_max),
     .min = 1,
     .max = 1000000000,
     .def = "4000000",
     .value_name = "N",
     .help = "texts of open requests not yet returned"},
    {.name = "queue-bytes-max",
     .kind = ZB_SETTINGS_U64,
     S_AT(queue_bytes_max),
     .min = 1 << 20,
     .max = (int64_t)1 << 40,
     .def = "1073741824",
     .value_name = "N",
     .help = "bytes of open requests' bodies"},
    {.name = "request-texts-max",
     .kind = ZB_SETTINGS_U32,
     S_AT(request_texts_max),
     .min = 1,
     .max = ZB_MSG_TEXTS_MAX,
     .def = "100000",
     .value_name = "N",
     .help = "texts of one embed"},
    {.name = "client-requests-max",
     .kind = ZB_SETTINGS_U32,
     S_AT(client_requests_max),
     .min = 1,
     .max = 1000000,
     .def = "1024",
     .value_name = "N",
     .help = "open requests of one client"},
    {.name = "shard-texts-max",
     .kind = ZB_SETTINGS_U32,
     S_AT(shard_texts_max),
     .min = 1,
     .max = ZB_BROKER_SHARD_TEXTS_MAX,
     .def = "64",
     .value_name = "N",
     .help = "texts per shard"},
    {.name = "shard-tokens-max",
     .kind = ZB_SETTINGS_U32,
     S_AT(shard_tokens_max),
     .min = 1,
     .max = 1000000,
     .def = "8192",
     .value_name = "N",
     .help = "estimated tokens per shard"},
    {.name = "client-hwm",
     .kind = ZB_SETTINGS_U32,
     S_AT(client_hwm),
     .min = 1,
     .max = 1000000,
     .def = "1000",
     .value_name = "N",
     .help = "replies of no request (status, refusals) held for a client that does not read"},
    {.name = "client-bytes-max",
     .kind = ZB_SETTINGS_U64,
     S_AT(client_bytes_max),
     .min = 1 << 16,
     .max = (int64_t)1 << 40,
     .def = "268435456",
     .value_name = "N",
     .help = "bytes of parts held for one client (in the broker and in ZeroMQ) before its work "
             "pauses"},
    {.name = "drain-ms",
     .kind = ZB_SETTINGS_U64,
     S_AT(drain_ms),
     .min = 0,
     .max = 3600000,
     .def = "10000",
     .value_name = "MS",
     .help = "how long a stopping broker waits for the shards on workers"},
    {.name = "no-worker-ms",
     .kind = ZB_SETTINGS_U64,
     S_AT(no_worker_ms),
     .min = 0,
     .max = 86400000,
     .def = "10000",
     .value_name = "MS",
     .help = "how long a request waits for a worker, 0: no limit"},
    /* Far above any shard's compute time (a full shard of bert-base takes
     * seconds): only a shard a worker dropped ever reaches it. */
    {.name = "shard-timeout-ms",
     .kind = ZB_SETTINGS_U64,
     S_AT(shard_timeout_ms),
     .min = 100,
     .max = 86400000,
     .def = "300000",
     .value_name = "MS",
     .help = "how long a shard may stay on one worker"},
    {.name = "curve-key",
     .kind = ZB_SETTINGS_STRING,
     S_AT(curve_key),
     .min = 0,
     .max = 255,
     .def = "",
     .value_name = "FILE",
     .help = "the broker's secret key (NAME.key of zbert keygen): CurveZMQ on both endpoints"},
    {.name = "allow-clients",
     .kind = ZB_SETTINGS_STRING,
     S_AT(allow_clients),
     .min = 0,
     .max = 255,
     .def = "",
     .value_name = "DIR",
     .help = "with curve-key: the .pub files of the clients that may connect"},
    {.name = "allow-workers",
     .kind = ZB_SETTINGS_STRING,
     S_AT(allow_workers),
     .min = 0,
     .max = 255,
     .def = "",
     .value_name = "DIR",
     .help = "with curve-key: the .pub files of the workers that may connect"},
    {.name = "insecure",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(insecure),
     .def = "false",
     .help = "without curve-key, bind endpoints other hosts can reach all the same"},
    {.name = "resume-ms",
     .kind = ZB_SETTINGS_U64,
     S_AT(resume_ms),
     .min = 0,
     .max = 86400000,
     .def = "300000",
     .value_name = "MS",
     .help = "how long a request whose client is gone waits for its owner, 0: not at all"},
};
#undef S_AT
#define S_N_SETTINGS (sizeof s_table / sizeof *s_table)

const zb_settings_t *zb_broker_config_table(size_t *n) {
    *n = S_N_SETTINGS;
    return s_table;
}

void zb_broker_config_default(zb_broker_config_t *c) {
    memset(c, 0, sizeof *c);
    int rc = zb_settings_default(s_table, S_N_SETTINGS, c, NULL);
    assert(rc == 0);
    (void)rc;
    assert(c->request_texts_max == ZB_MSG_TEXTS_MAX);
    assert(c->shard_texts_max == ZB_BROKER_SHARD_TEXTS_MAX);
    assert(c->shard_tokens_max == ZB_BROKER_SHARD_TOKENS_DEFAULT);
}

int zb_broker_config_set(zb_broker_config_t *c, const char *key, const char *value, zb_diag_t *d) {
    return zb_settings_set(s_table, S_N_SETTINGS, c, key, value, d);
}

/* --- records ------------------------------------------------------------ */

/* A ZeroMQ routing id: 1..255 bytes; the key of clients and workers. */
typedef zb_idmap_key_t s_rid_t;

/* A peer and when something was last sent to it. */
typedef struct s_sent {
    s_rid_t rid;
    uint64_t at_ms;
} s_sent_t;

/* A worker set aside (see S_QUARANTINE_SLOTS), by its key with CurveZMQ,
 * else by the name of its ready. */
typedef struct s_quarantine {
    char name[ZB_MSG_NAME_BYTES_MAX];
    size_t name_len; /* 0: free slot */
    uint64_t until_ms;
    uint32_t offences;
} s_quarantine_t;

/*
 * The bytes of one owner's parts not yet taken by its client
 * (client-bytes-max): held by the broker (on its conns or its detached
 * requests; this thread only) and handed to ZeroMQ but not yet written to
 * the connection (ZeroMQ's I/O thread gives them back through the
 * message's free function, hence the atomics).  Shared by the owner and by
 * every message charged to it, so that it outlives both (refs).
 */
typedef struct s_meter {
    atomic_uint refs;
    atomic_uint_fast64_t in_zmq; /* bytes ZeroMQ holds */
    uint64_t held;               /* bytes the broker holds */
} s_meter_t;

typedef struct s_ident {
    struct s_ident *next;
    char model[ZB_MSG_NAME_BYTES_MAX];
    size_t model_len;
    uint32_t dim;
    uint32_t n_workers; /* live workers with this identity */
    uint32_t n_active;  /* of them, not set aside (counted by s_check_orphans) */
    uint32_t n_refs;    /* workers and bound requests */
} s_ident_t;

/* SH_HELD: its part is made and waits in the broker (for room in ZeroMQ's
 * queue to the client, or for the request's owner to come back); SH_DONE:
 * its part was handed to ZeroMQ, or its texts are held by the client. */
enum { SH_IDLE, SH_QUEUED, SH_FLIGHT, SH_HELD, SH_DONE };

struct s_request;
struct s_worker;

typedef struct s_shard {
    zb_queue_item_t q; /* first: the queue's item is the shard */
    struct s_request *req;
    struct s_worker *worker;       /* in flight on it, else NULL */
    struct s_shard *wprev, *wnext; /* the worker's in-flight list */
    uint64_t id;                   /* task id on the wire, unique per broker */
    uint32_t first, count;         /* texts first..first+count-1 of the request */
    uint32_t failures;             /* times lost (workers lost, timeouts) */
    uint64_t sent_ms;              /* when it left for its worker */
    int state;
    bool client_has; /* every text of it is in a resumption's have: no part */
} s_shard_t;

typedef struct s_owner s_owner_t;
typedef struct s_conn s_conn_t;

/* A message for a client that ZeroMQ had no room for, or a part kept for a
 * request whose connection is gone.  A part knows its request and shard
 * (NULL for other messages, and once the request has closed). */
typedef struct s_held {
    struct s_held *next;
    uint8_t *body;
    size_t len;
    struct s_request *req;
    struct s_shard *sh;
    uint64_t tokens;  /* the part's, for done.tokens */
    s_meter_t *meter; /* the owner's, charged with len (a ref); NULL: none */
    bool reply;       /* a reply of no request: counts towards client-hwm */
} s_held_t;

typedef struct s_request {
    zb_deadline_item_t deadline;           /* first; in the heap when the embed set one */
    struct s_request *prev, *next;         /* the owner's open requests */
    struct s_request *cprev, *cnext;       /* the requests of its conn */
    struct s_request *all_prev, *all_next; /* every open request */
    s_owner_t *owner;                      /* NULL once closed */
    s_conn_t *conn;                        /* where its parts go; NULL: waiting for its
                                            * owner (or closed) */
    uint64_t detached_ms;                  /* when it lost its conn */
    s_rid_t rid_last;                      /* the routing id of the conn it lost */
    s_held_t *held_head, *held_tail;       /* its parts made since (in order) */
    char id[ZB_MSG_ID_BYTES_MAX];
    size_t id_len;
    zmq_msg_t *body; /* the embed's bytes; NULL once closed */
    size_t body_len;
    zb_msg_t msg; /* decoded embed: views into body */
    zb_options_t opt;
    uint32_t n_texts, texts_left; /* texts_left: not yet in a part */
    s_shard_t *shards;
    uint32_t n_shards, n_done, n_flight, n_queued;
    uint64_t tokens, parts;   /* of the parts for its conn (since its last resumption) */
    uint64_t made;            /* parts made since it opened */
    uint64_t received_ms;     /* when the embed arrived */
    s_ident_t *ident;         /* bound model, or NULL */
    uint64_t orphan_since_ms; /* no worker could serve it since; 0 */
    bool closed;
} s_request_t;

struct s_owner {
    zb_idmap_node_t h; /* first; its key is the CurveZMQ key, or the routing id */
    zb_queue_lane_t lane;
    s_request_t *reqs; /* open requests, newest first */
    uint32_t n_reqs;
    uint32_t n_detached; /* of them, waiting for their owner (no conn) */
    s_meter_t *meter;    /* its parts' bytes not yet taken (a ref) */
    bool paused;         /* over client-bytes-max at the last look (for logs) */
};

struct s_conn {
    zb_idmap_node_t h; /* first; its key is the routing id */
    s_request_t *reqs; /* requests whose parts go here */
    uint32_t n_reqs;
    /* Messages waiting for room in ZeroMQ's queue to the client, oldest
     * first: while there are any, every message for it queues here too, so
     * it gets them in order. */
    s_held_t *held_head, *held_tail;
    uint32_t n_held;
    uint32_t n_replies;           /* of them, replies of no request (client-hwm) */
    struct s_conn *hprev, *hnext; /* in the broker's holding list */
    /* With CurveZMQ: the key of the connection that holds the routing id. */
    bool has_key;
    uint8_t key[ZB_CURVE_KEY_BYTES];
};

typedef struct s_worker {
    zb_idmap_node_t h; /* first; its key is the routing id */
    struct s_worker *prev, *next;
    char name[ZB_MSG_NAME_BYTES_MAX];
    size_t name_len;
    char label[ZB_MSG_NAME_BYTES_MAX + 1]; /* the name fit for logs */
    s_ident_t *ident;
    uint32_t threads, credit, n_flight;
    s_shard_t *flight_head, *flight_tail; /* in dispatch order */
    uint64_t shards_done, tokens_done;
    uint64_t last_recv_ms, last_send_ms;
    uint64_t epoch;            /* of the ready that registered it */
    uint64_t last_dispatch;    /* dispatch sequence number, for ties */
    uint64_t late[S_LATE_IDS]; /* shards taken back by the timeout (0: free) */
    size_t late_next;
    uint64_t skip_round;             /* nothing eligible for it in this dispatch round */
    uint64_t quarantined_until_ms;   /* no work for it before then */
    uint8_t key[ZB_CURVE_KEY_BYTES]; /* with CurveZMQ: its connection's key */
} s_worker_t;

struct zb_broker {
    zb_broker_config_t cfg;
    void *ctx, *front, *back;
    zb_queue_t *queue;
    zb_stats_t *stats;
    zb_idmap_t *owners, *conns, *workers_by_rid;
    s_worker_t *workers; /* list */
    s_conn_t *holding;   /* conns with held messages */
    uint32_t n_workers;
    s_ident_t *idents;
    s_request_t *open;        /* every open request */
    zb_deadline_t *deadlines; /* requests with a deadline */
    zmq_msg_t *spare_body;    /* receives the next frontend body */

    uint64_t n_requests, open_texts, open_bytes;
    uint64_t queued_texts, in_flight;
    uint64_t protocol_errors;
    uint64_t bad_results; /* worker results refused as not matching their task */
    s_quarantine_t quarantine[S_QUARANTINE_SLOTS];
    uint64_t next_shard_id, dispatch_seq, dispatch_round;
    uint64_t start_ms, next_tick_ms, next_orphan_ms;
    bool draining;
    uint64_t drain_until_ms;

    s_sent_t reconnects[S_RECONNECT_PEERS]; /* recent reconnects, by peer */
    size_t reconnect_next;
    s_rid_t logged[S_LOGGED_PEERS]; /* peers whose protocol errors were logged */
    size_t logged_next;
    uint64_t log_second, log_lines, log_suppressed;

    /* CurveZMQ (curve true): the allow-lists by endpoint (zb_zap_endpoint_t),
     * whether an inotify event asked for a reload, and the ZAP handler. */
    bool curve;
    zb_allow_t *allow[ZB_ZAP_ENDPOINTS];
    bool allow_due[ZB_ZAP_ENDPOINTS];
    uint64_t allow_due_ms[ZB_ZAP_ENDPOINTS]; /* when a due list is read */
    uint64_t next_allow_check_ms;
    zb_zap_t *zap; /* refusal counters (zero without CurveZMQ) */
    void *zap_sock;
};

static s_conn_t *s_conn_find(const zb_broker_t *b, const s_rid_t *rid) {
    return (s_conn_t *)zb_idmap_find(b->conns, rid->b, rid->len);
}

/* The owner of a client's requests: its key with CurveZMQ, else the
 * routing id it sends from. */
static s_owner_t *s_owner_find(const zb_broker_t *b, const s_rid_t *rid, const uint8_t *key) {
    if (b->curve && key == NULL) return NULL; /* refused before it gets here */
    return (s_owner_t *)(b->curve ? zb_idmap_find(b->owners, key, ZB_CURVE_KEY_BYTES)
                                  : zb_idmap_find(b->owners, rid->b, rid->len));
}

static s_worker_t *s_worker_find(const zb_broker_t *b, const s_rid_t *rid) {
    return (s_worker_t *)zb_idmap_find(b->workers_by_rid, rid->b, rid->len);
}

/* --- logging of peers ------------------------------------------------------ */

/* "a1b2c3d4e5" for a routing id (its first 16 bytes). */
static const char *s_rid_hex(const s_rid_t *rid, char out[40]) {
    size_t n = rid->len < 16 ? rid->len : 16;
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", rid->b[i]);
    out[2 * n] = '\0';
    return out;
}

/* A copy of n bytes from a peer (a name, an id, a sentence quoting them),
 * fit for a log line: control characters become '?'; cut to cap - 1. */
static const char *s_clean(char *out, size_t cap, const char *s, size_t n) {
    size_t i = 0;
    for (; i < n && i + 1 < cap; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    out[i] = '\0';
    return out;
}

/* Whether a protocol error of this peer may be logged now: once per peer
 * (among the last S_LOGGED_PEERS), and S_LOG_LINES_PER_S lines a second. */
static bool s_log_allowed(zb_broker_t *b, const s_rid_t *rid) {
    for (size_t i = 0; i < S_LOGGED_PEERS; i++)
        if (b->logged[i].len == rid->len && memcmp(b->logged[i].b, rid->b, rid->len) == 0)
            return false;
    uint64_t sec = zb_clock_ms() / 1000;
    if (sec != b->log_second) {
        if (b->log_suppressed > 0)
            ZB_LOG(ZB_LOG_WARN, "%llu more protocol errors were not logged",
                   (unsigned long long)b->log_suppressed);
        b->log_second = sec;
        b->log_lines = 0;
        b->log_suppressed = 0;
    }
    if (b->log_lines >= S_LOG_LINES_PER_S) {
        b->log_suppressed++;
        return false;
    }
    b->log_lines++;
    b->logged[b->logged_next] = *rid;
    b->logged_next = (b->logged_next + 1) % S_LOGGED_PEERS;
    return true;
}

/* Counts a malformed message and logs it (once per peer) with a sample of
 * its bytes. */
static void s_proto_error(zb_broker_t *b, const char *side, const s_rid_t *rid, const void *body,
                          size_t len, const char *why) {
    b->protocol_errors++;
    if (zb_log_level < ZB_LOG_WARN || !s_log_allowed(b, rid)) return;
    char hex[40], sample[600], clean[300];
    zb_log_sample(sample, sizeof sample, body, len);
    s_clean(clean, sizeof clean, why, strlen(why));
    /* Peers are named by routing id (hex): a worker's name is its own
     * claim, and a client has none. */
    ZB_LOG(ZB_LOG_WARN, "%s %s: %s; %zu bytes: %s (this peer's further errors are only counted)",
           side, s_rid_hex(rid, hex), clean, len, sample);
}

/* --- keys ------------------------------------------------------------------- */

/* The CurveZMQ key libzmq attached to a received frame: the Z85 the ZAP
 * handler gave as the connection's user id.  False when there is none (no
 * CurveZMQ) or it is not a key's. */
static bool s_msg_key(const zmq_msg_t *m, uint8_t key[ZB_CURVE_KEY_BYTES]) {
    const char *uid = zmq_msg_gets(m, "User-Id");
    return uid != NULL && zb_curve_unz85(uid, strnlen(uid, ZB_CURVE_Z85_CHARS + 1), key);
}

/* The peer's address for a log line, made printable ("" when unknown). */
static const char *s_msg_address(const zmq_msg_t *m, char *out, size_t cap) {
    const char *a = zmq_msg_gets(m, "Peer-Address");
    return s_clean(out, cap, a ? a : "", a ? strnlen(a, cap) : 0);
}

/*
 * Whether a message received on endpoint e may be served: its key (NULL:
 * it had none) is on that endpoint's allow-list now.  A message refused is
 * counted and logged (zap.h's limits).  Always true without CurveZMQ.
 */
static bool s_key_allowed(zb_broker_t *b, zb_zap_endpoint_t e, const uint8_t *key,
                          const zmq_msg_t *m) {
    if (!b->curve) return true;
    if (key != NULL && zb_allow_has(b->allow[e], key)) return true;
    char addr[64];
    zb_zap_refuse(b->zap, e, key, s_msg_address(m, addr, sizeof addr),
                  key == NULL           ? "a message without a key"
                  : e == ZB_ZAP_CLIENTS ? "key removed from allow-clients since it connected"
                                        : "key removed from allow-workers since it connected",
                  zb_clock_ms());
    return false;
}

/* --- sending ---------------------------------------------------------------- */

static void s_free_body(void *data, void *hint) {
    (void)hint;
    free(data);
}

static void s_meter_unref(s_meter_t *m) {
    if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1) free(m);
}

/* A new meter with one ref (its owner's); NULL when out of memory. */
static s_meter_t *s_meter_new(void) {
    s_meter_t *m = calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    atomic_init(&m->refs, 1);
    atomic_init(&m->in_zmq, 0);
    return m;
}

/* The bytes an owner's client has not taken yet. */
static uint64_t s_meter_bytes(s_meter_t *m) {
    return m->held + atomic_load(&m->in_zmq);
}

/* A message ZeroMQ holds for a metered owner. */
typedef struct s_zmq_charge {
    s_meter_t *meter;
    size_t len;
} s_zmq_charge_t;

/* ZeroMQ is done with a metered message (written out, or dropped with its
 * connection): may run on ZeroMQ's I/O thread. */
static void s_free_metered(void *data, void *hint) {
    s_zmq_charge_t *c = hint;
    free(data);
    atomic_fetch_sub(&c->meter->in_zmq, c->len);
    s_meter_unref(c->meter);
    free(c);
}

/*
 * Sends [rid][*body] without blocking; with meter (may be NULL), the body's
 * bytes count in the meter's in_zmq until ZeroMQ lets go of them.  Returns
 * 0 (sent; *body taken and nulled), or -1 with errno: when the routing
 * frame is refused -- EHOSTUNREACH (no such peer) or EAGAIN (its queue is
 * full), the ROUTER being mandatory -- *body is left to the caller; after
 * a later failure (out of memory) it is taken and nulled too.
 */
static int s_send_metered(void *sock, const s_rid_t *rid, uint8_t **pbody, size_t len,
                          s_meter_t *meter) {
    /* A mandatory ROUTER checks the peer's pipe on the routing frame and
     * refuses it whole, so nothing of the message is queued then. */
    if (zmq_send(sock, rid->b, rid->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return -1;
    uint8_t *body = *pbody;
    *pbody = NULL;
    zmq_msg_t m;
    s_zmq_charge_t *charge = meter ? malloc(sizeof *charge) : NULL;
    int rc;
    if (charge != NULL) {
        *charge = (s_zmq_charge_t){.meter = meter, .len = len};
        atomic_fetch_add(&meter->refs, 1);
        atomic_fetch_add(&meter->in_zmq, len);
        rc = zmq_msg_init_data(&m, body, len, s_free_metered, charge);
        if (rc < 0) {
            atomic_fetch_sub(&meter->in_zmq, len);
            s_meter_unref(meter);
            free(charge);
        }
    } else {
        rc = zmq_msg_init_data(&m, body, len, s_free_body, NULL);
    }
    if (rc < 0) {
        int e = errno;
        free(body);
        /* The routing frame went out with "more": close the message so the
         * socket is not left mid-message. */
        zmq_send(sock, "", 0, ZMQ_DONTWAIT);
        errno = e;
        return -1;
    }
    if (zmq_msg_send(&m, sock, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return -1;
    }
    return 0;
}

static int s_send_keep(void *sock, const s_rid_t *rid, uint8_t **pbody, size_t len) {
    return s_send_metered(sock, rid, pbody, len, NULL);
}

/* s_send_keep(), body taken in every case: for workers and peers that get
 * no second try.  EHOSTUNREACH and EAGAIN both mean the peer is lost to
 * us. */
static int s_send(void *sock, const s_rid_t *rid, uint8_t *body, size_t len) {
    int rc = s_send_keep(sock, rid, &body, len);
    if (rc < 0) {
        int e = errno;
        free(body);
        errno = e;
    }
    return rc;
}

/* Encodes an `error` (of: the id a duplicate_id names, NULL: none); NULL
 * when encoding failed (only when out of memory, or for a message that is
 * not valid UTF-8, then replaced). */
static uint8_t *s_error_body_of(const char *id, size_t id_len, const zb_msg_str_t *of,
                                zb_msg_code_t code, const char *text, size_t *len) {
    zb_msg_error_t e = {.id = {id, id_len}, .code = code, .message = {text, strlen(text)}};
    if (of != NULL) e.of = *of;
    uint8_t *out = NULL;
    if (zb_msg_encode_error(&e, &out, len, NULL) == 0) return out;
    /* A sentence quoting peer bytes may not be UTF-8: say it plainly. */
    e.message = (zb_msg_str_t){"malformed message", 17};
    if (zb_msg_encode_error(&e, &out, len, NULL) == 0) return out;
    return NULL;
}

static uint8_t *s_error_body(const char *id, size_t id_len, zb_msg_code_t code, const char *text,
                             size_t *len) {
    return s_error_body_of(id, id_len, NULL, code, text, len);
}

/* --- model identities --------------------------------------------------- */

static s_ident_t *s_ident_get(zb_broker_t *b, zb_msg_str_t model, uint32_t dim) {
    for (s_ident_t *i = b->idents; i; i = i->next) {
        if (i->dim == dim && i->model_len == model.len &&
            memcmp(i->model, model.ptr, model.len) == 0) {
            i->n_refs++;
            return i;
        }
    }
    s_ident_t *i = calloc(1, sizeof *i);
    if (i == NULL) return NULL;
    /* The decoder bounds model to ZB_MSG_NAME_BYTES_MAX bytes. */
    memcpy(i->model, model.ptr, model.len);
    i->model_len = model.len;
    i->dim = dim;
    i->n_refs = 1;
    i->next = b->idents;
    b->idents = i;
    return i;
}

static void s_ident_put(zb_broker_t *b, s_ident_t *i) {
    if (i == NULL || --i->n_refs > 0) return;
    s_ident_t **p = &b->idents;
    while (*p != i) p = &(*p)->next;
    *p = i->next;
    free(i);
}

/* --- requests and clients --------------------------------------------------- */

static void s_request_free(s_request_t *r) {
    free(r->shards);
    free(r);
}

/* Leaves the request's binding to a model, if any. */
static void s_request_unbind(zb_broker_t *b, s_request_t *r) {
    s_ident_put(b, r->ident);
    r->ident = NULL;
}

/* Takes r off its conn's list (r keeps its owner). */
static void s_request_unlink_conn(s_request_t *r) {
    s_conn_t *c = r->conn;
    if (c == NULL) return;
    if (r->cprev)
        r->cprev->cnext = r->cnext;
    else
        c->reqs = r->cnext;
    if (r->cnext) r->cnext->cprev = r->cprev;
    r->cprev = r->cnext = NULL;
    c->n_reqs--;
    r->conn = NULL;
}

static void s_request_link_conn(s_request_t *r, s_conn_t *c) {
    r->conn = c;
    r->cprev = NULL;
    r->cnext = c->reqs;
    if (c->reqs) c->reqs->cprev = r;
    c->reqs = r;
    c->n_reqs++;
}

/* Takes r's queued shards out of the queue (they become idle). */
static void s_request_dequeue(zb_broker_t *b, s_request_t *r) {
    for (uint32_t i = 0; i < r->n_shards; i++) {
        s_shard_t *sh = &r->shards[i];
        if (sh->state == SH_QUEUED) {
            zb_queue_remove(b->queue, &sh->q);
            b->queued_texts -= sh->count;
            sh->state = SH_IDLE;
        }
    }
    r->n_queued = 0;
}

/* A held message for body (taken), charged to meter (may be NULL); NULL
 * when out of memory (body is then the caller's still). */
static s_held_t *s_held_new(uint8_t *body, size_t len, s_request_t *r, s_shard_t *sh,
                            uint64_t tokens, s_meter_t *meter, bool reply) {
    s_held_t *x = malloc(sizeof *x);
    if (x == NULL) return NULL;
    *x = (s_held_t){.body = body,
                    .len = len,
                    .req = r,
                    .sh = sh,
                    .tokens = tokens,
                    .meter = meter,
                    .reply = reply};
    if (meter != NULL) {
        atomic_fetch_add(&meter->refs, 1);
        meter->held += len;
    }
    return x;
}

/* Frees a held message that will not be sent (or whose body was). */
static void s_held_free(s_held_t *x) {
    if (x->meter != NULL) {
        x->meter->held -= x->len;
        s_meter_unref(x->meter);
    }
    free(x->body);
    free(x);
}

/* Frees a list of held messages. */
static void s_held_free_list(s_held_t *x) {
    while (x != NULL) {
        s_held_t *next = x->next;
        s_held_free(x);
        x = next;
    }
}

/*
 * Closes an open request without a word to its client: its queued shards
 * leave the queue, its body is released, it leaves every index.  In-flight
 * shards stay on their workers (their results will be discarded); the
 * record is freed now if there is none, else by the last of them.  The
 * parts kept for it while it had no connection are dropped; those its
 * conn holds still go (before the request's last message, if any) but no
 * longer name it.  The owner and conn records are not freed here
 * (s_owner_release and s_conn_release do).
 */
static void s_request_close(zb_broker_t *b, s_request_t *r) {
    s_request_dequeue(b, r);
    b->open_texts -= r->texts_left;
    b->open_bytes -= r->body_len;
    s_held_free_list(r->held_head);
    r->held_head = r->held_tail = NULL;
    if (r->conn != NULL)
        for (s_held_t *x = r->conn->held_head; x; x = x->next)
            if (x->req == r) x->req = NULL, x->sh = NULL;
    s_owner_t *o = r->owner;
    if (r->prev)
        r->prev->next = r->next;
    else
        o->reqs = r->next;
    if (r->next) r->next->prev = r->prev;
    o->n_reqs--;
    if (r->conn == NULL) o->n_detached--;
    r->owner = NULL;
    s_request_unlink_conn(r);
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        b->open = r->all_next;
    if (r->all_next) r->all_next->all_prev = r->all_prev;
    zb_deadline_remove(b->deadlines, &r->deadline);
    b->n_requests--;
    s_request_unbind(b, r);
    zb_msg_free(&r->msg);
    zmq_msg_close(r->body);
    free(r->body);
    r->body = NULL;
    r->closed = true;
    if (r->n_flight == 0) s_request_free(r);
}

/* Frees an owner that has no open request left. */
static void s_owner_release(zb_broker_t *b, s_owner_t *o) {
    if (o == NULL || o->n_reqs > 0) return;
    zb_idmap_del(b->owners, &o->h);
    s_meter_unref(o->meter); /* the messages charged to it keep it */
    free(o);
}

/* Frees a conn that has no request and no held message left. */
static void s_conn_release(zb_broker_t *b, s_conn_t *c) {
    if (c == NULL || c->n_reqs > 0 || c->n_held > 0) return;
    zb_idmap_del(b->conns, &c->h);
    free(c);
}

/* Closes r and frees the records it leaves empty (its conn is released
 * unless keep_conn: a caller still using it releases it itself). */
static void s_request_close_release(zb_broker_t *b, s_request_t *r, bool keep_conn) {
    s_owner_t *o = r->owner;
    s_conn_t *c = r->conn;
    s_request_close(b, r);
    s_owner_release(b, o);
    if (!keep_conn) s_conn_release(b, c);
}

/* A record for a routing id of the frontend (key: the connection's, with
 * CurveZMQ): NULL when out of memory. */
static s_conn_t *s_conn_new(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key) {
    s_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    if (key != NULL) {
        c->has_key = true;
        memcpy(c->key, key, sizeof c->key);
    }
    zb_idmap_add(b->conns, &c->h, rid->b, rid->len);
    return c;
}

/* Appends x to c's held messages (the conn joins the holding list with its
 * first). */
static void s_conn_hold(zb_broker_t *b, s_conn_t *c, s_held_t *x) {
    x->next = NULL;
    c->n_replies += x->reply;
    if (c->held_tail)
        c->held_tail->next = x;
    else
        c->held_head = x;
    c->held_tail = x;
    if (c->n_held++ > 0) return;
    c->hprev = NULL;
    c->hnext = b->holding;
    if (b->holding) b->holding->hprev = c;
    b->holding = c;
}

/* Takes the message after prev (NULL: the first) off c's held messages
 * and returns it; c leaves the holding list with its last. */
static s_held_t *s_conn_unhold(zb_broker_t *b, s_conn_t *c, s_held_t *prev) {
    s_held_t *x = prev ? prev->next : c->held_head;
    if (prev)
        prev->next = x->next;
    else
        c->held_head = x->next;
    if (c->held_tail == x) c->held_tail = prev;
    x->next = NULL;
    c->n_replies -= x->reply;
    if (--c->n_held > 0) return x;
    if (c->hprev)
        c->hprev->hnext = c->hnext;
    else
        b->holding = c->hnext;
    if (c->hnext) c->hnext->hprev = c->hprev;
    c->hprev = c->hnext = NULL;
    return x;
}

/* Takes the first held message off c (sent, or given up). */
static void s_held_pop(zb_broker_t *b, s_conn_t *c) {
    s_held_free(s_conn_unhold(b, c, NULL));
}

/* Appends x, a part of r, to the parts kept for r while it has no
 * connection. */
static void s_request_keep(s_request_t *r, s_held_t *x) {
    x->next = NULL;
    if (r->held_tail)
        r->held_tail->next = x;
    else
        r->held_head = x;
    r->held_tail = x;
}

/* Moves the parts of r that c holds, in their order, to the list
 * [*head, *tail) (appended). */
static void s_conn_take_parts(zb_broker_t *b, s_conn_t *c, s_request_t *r, s_held_t **head,
                              s_held_t **tail) {
    for (s_held_t *prev = NULL, *x = c->held_head; x;) {
        if (x->req != r) {
            prev = x;
            x = x->next;
            continue;
        }
        s_held_t *next = x->next;
        s_conn_unhold(b, c, prev);
        if (*tail)
            (*tail)->next = x;
        else
            *head = x;
        *tail = x;
        x = next;
    }
}

/*
 * r's connection is gone: r waits resume-ms for its owner (broker.h,
 * Ownership).  Its shards keep running; the parts made meanwhile are kept
 * on r, after those its conn still held (moved here by the caller), and go
 * out, in order, when its owner speaks again from that routing id or sends
 * r again (a resumption).
 */
static void s_request_detach(zb_broker_t *b, s_request_t *r, uint64_t now) {
    (void)b;
    r->rid_last = r->conn->h.key;
    s_request_unlink_conn(r);
    r->owner->n_detached++;
    r->detached_ms = now;
}

/* Whether a request whose connection is gone waits for its owner. */
static bool s_resumable(const zb_broker_t *b) {
    return b->cfg.resume_ms > 0 && !b->draining;
}

/*
 * A conn we cannot send to: ZeroMQ has no route to it (the client closed
 * its socket, or reconnected under another routing id) or could not take a
 * message (out of memory).  Its requests wait for their owner, with the
 * parts it held, in order (never a silent drop); its other held messages
 * (replies, the last messages of closed requests) are dropped: none could
 * reach it.  While the broker stops, or with resume-ms 0, its requests are
 * closed instead, without a word (no one to tell).
 */
static void s_conn_drop(zb_broker_t *b, s_conn_t *c, int err) {
    char hex[40];
    bool detach = s_resumable(b);
    if (detach)
        ZB_LOG(ZB_LOG_INFO,
               "client %s: %s; its %u open requests wait %llu ms for their owner to come back",
               s_rid_hex(&c->h.key, hex), err == EHOSTUNREACH ? "gone" : zmq_strerror(err),
               c->n_reqs, (unsigned long long)b->cfg.resume_ms);
    else
        ZB_LOG(ZB_LOG_INFO, "client %s: %s; dropping its %u open requests",
               s_rid_hex(&c->h.key, hex), err == EHOSTUNREACH ? "gone" : zmq_strerror(err),
               c->n_reqs);
    uint64_t now = zb_clock_ms();
    /* In order: the parts of one request keep theirs on it. */
    while (c->n_held > 0) {
        s_held_t *x = s_conn_unhold(b, c, NULL);
        if (detach && x->req != NULL) {
            s_request_keep(x->req, x);
            continue;
        }
        s_held_free(x);
    }
    while (c->reqs) {
        if (detach)
            s_request_detach(b, c->reqs, now);
        else
            s_request_close_release(b, c->reqs, true);
    }
    s_conn_release(b, c);
}

/*
 * Sends *pbody to the client at rid, after whatever the broker holds for
 * it: at once when ZeroMQ takes it (S_FRONT_SNDHWM messages at most wait
 * there), else held and retried by s_flush_held() at every turn of the
 * loop, so the client gets its messages in order.  A part (r and sh set)
 * is charged to r's owner's meter while it waits, in the broker and in
 * ZeroMQ.  A reply of no request (reply) is refused with EAGAIN when
 * client-hwm replies wait already for this client (it does not read them:
 * the caller drops this one); nothing else is ever refused for a slow
 * client, whose work pauses instead (client-bytes-max).  Returns 1 (handed
 * to ZeroMQ) or 0 (held), *pbody taken and nulled; or -1 with errno:
 * EHOSTUNREACH (the client is gone), EAGAIN (above) or ENOMEM, *pbody then
 * left to the caller unless it is NULL (lost after the routing frame).
 * For EHOSTUNREACH and ENOMEM the caller drops the conn (s_conn_drop).
 */
static int s_front_put(zb_broker_t *b, const s_rid_t *rid, uint8_t **pbody, size_t len,
                       s_request_t *r, s_shard_t *sh, uint64_t tokens, bool reply) {
    s_meter_t *meter = r != NULL ? r->owner->meter : NULL;
    s_conn_t *c = s_conn_find(b, rid);
    if (c == NULL || c->n_held == 0) {
        if (s_send_metered(b->front, rid, pbody, len, meter) == 0) return 1;
        if (*pbody == NULL || errno != EAGAIN) return -1;
        /* A client without requests (a status, a refusal) is held for all
         * the same: a record for it lives until its messages leave (its key
         * is bound by the caller, s_front_readable). */
        if (c == NULL && (c = s_conn_new(b, rid, NULL)) == NULL) {
            errno = ENOMEM;
            return -1;
        }
    }
    if (reply && c->n_replies >= b->cfg.client_hwm) {
        errno = EAGAIN;
        return -1;
    }
    s_held_t *x = s_held_new(*pbody, len, r, sh, tokens, meter, reply);
    if (x == NULL) {
        errno = ENOMEM;
        return -1;
    }
    *pbody = NULL;
    s_conn_hold(b, c, x);
    if (c->n_held == 1) {
        char hex[40];
        ZB_LOG(ZB_LOG_DEBUG, "client %s: its queue is full; holding what follows",
               s_rid_hex(rid, hex));
    }
    return 0;
}

/* s_front_put() of a message that is not a part (reply: see there), body
 * taken in every case: 0 (sent or held) or -1 with errno. */
static int s_front_send(zb_broker_t *b, const s_rid_t *rid, uint8_t *body, size_t len, bool reply) {
    int rc = s_front_put(b, rid, &body, len, NULL, NULL, 0, reply);
    if (rc >= 0) return 0;
    int e = errno;
    free(body);
    errno = e;
    return -1;
}

/* Sends a reply of no request to rid: dropped when the client does not
 * read its replies (client-hwm of them wait); the conn dropped when it is
 * gone. */
static void s_front_reply(zb_broker_t *b, const s_rid_t *rid, uint8_t *body, size_t len) {
    if (s_front_send(b, rid, body, len, true) == 0) return;
    int e = errno;
    s_conn_t *c = s_conn_find(b, rid);
    char hex[40];
    if (e == EAGAIN)
        ZB_LOG(ZB_LOG_DEBUG, "client %s: %u replies wait unread; this one is dropped",
               s_rid_hex(rid, hex), b->cfg.client_hwm);
    else if (c != NULL)
        s_conn_drop(b, c, e);
}

/* Retries the held messages of every conn, oldest first, until ZeroMQ's
 * queue to that client is full again; a conn found gone is dropped, one
 * whose messages all left is released if it has no request either. */
static void s_flush_held(zb_broker_t *b) {
    for (s_conn_t *c = b->holding, *next; c; c = next) {
        next = c->hnext;
        int err = 0;
        while (c->n_held > 0) {
            s_held_t *x = c->held_head;
            if (s_send_metered(b->front, &c->h.key, &x->body, x->len, x->meter) == 0) {
                if (x->sh != NULL && x->sh->state == SH_HELD) x->sh->state = SH_DONE;
                s_held_pop(b, c); /* its bytes now count as ZeroMQ's */
                continue;
            }
            /* A part lost after its routing frame (out of memory) is lost
             * to its request as to a gone client. */
            if (errno != EAGAIN || x->body == NULL) err = errno ? errno : EIO;
            break;
        }
        if (err != 0)
            s_conn_drop(b, c, err);
        else
            s_conn_release(b, c);
    }
}

/*
 * Ends an open request with a last message (done or error; body NULL: none,
 * e.g. when encoding failed; nothing is sent for a request waiting for its
 * owner), then closes it.  If its client cannot be sent to, the client's
 * other requests wait for their owner (or are dropped, s_conn_drop).
 */
static void s_request_end(zb_broker_t *b, s_request_t *r, uint8_t *body, size_t len) {
    s_conn_t *c = r->conn;
    int err = 0;
    if (body != NULL && c != NULL && s_front_send(b, &c->h.key, body, len, false) < 0)
        err = errno ? errno : EIO;
    else if (c == NULL)
        free(body);
    s_request_close_release(b, r, true);
    if (err != 0)
        s_conn_drop(b, c, err);
    else
        s_conn_release(b, c);
}

/* "the connection a1b2..." or "waiting for its owner", for logs. */
static const char *s_request_where(const s_request_t *r, char *out, size_t cap) {
    char hex[40];
    if (r->conn != NULL)
        snprintf(out, cap, "client %s", s_rid_hex(&r->conn->h.key, hex));
    else
        snprintf(out, cap, "no connection (waiting for its owner)");
    return out;
}

__attribute__((format(printf, 4, 5))) static void
s_request_fail(zb_broker_t *b, s_request_t *r, zb_msg_code_t code, const char *fmt, ...) {
    char text[ZB_MSG_MESSAGE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    char where[64], id[ZB_MSG_ID_BYTES_MAX + 1];
    ZB_LOG(code == ZB_MSG_CODE_INTERNAL || code == ZB_MSG_CODE_NO_MODEL ? ZB_LOG_WARN
                                                                        : ZB_LOG_DEBUG,
           "request %s of %s: %s: %s", s_clean(id, sizeof id, r->id, r->id_len),
           s_request_where(r, where, sizeof where), zb_msg_code_name(code), text);
    size_t len = 0;
    /* A stopping broker told its clients `closing`: they take their
     * requests elsewhere, and an error from here would fail them there. */
    uint8_t *body =
        r->conn && !b->draining ? s_error_body(r->id, r->id_len, code, text, &len) : NULL;
    s_request_end(b, r, body, len);
}

static s_request_t *s_request_find(const s_owner_t *o, zb_msg_str_t id) {
    for (s_request_t *r = o ? o->reqs : NULL; r; r = r->next)
        if (r->id_len == id.len && memcmp(r->id, id.ptr, id.len) == 0) return r;
    return NULL;
}

/* --- shards on workers ------------------------------------------------------ */

static void s_shard_queue(zb_broker_t *b, s_shard_t *sh, bool at_head) {
    s_request_t *r = sh->req;
    zb_queue_push(b->queue, &r->owner->lane, &sh->q, at_head);
    sh->state = SH_QUEUED;
    r->n_queued++;
    b->queued_texts += sh->count;
}

static void s_flight_attach(zb_broker_t *b, s_worker_t *w, s_shard_t *sh) {
    sh->worker = w;
    sh->wnext = NULL;
    sh->wprev = w->flight_tail;
    if (w->flight_tail)
        w->flight_tail->wnext = sh;
    else
        w->flight_head = sh;
    w->flight_tail = sh;
    w->n_flight++;
    sh->req->n_flight++;
    sh->state = SH_FLIGHT;
    b->in_flight++;
}

static void s_flight_detach(zb_broker_t *b, s_shard_t *sh) {
    s_worker_t *w = sh->worker;
    if (sh->wprev)
        sh->wprev->wnext = sh->wnext;
    else
        w->flight_head = sh->wnext;
    if (sh->wnext)
        sh->wnext->wprev = sh->wprev;
    else
        w->flight_tail = sh->wprev;
    sh->wprev = sh->wnext = NULL;
    sh->worker = NULL;
    w->n_flight--;
    sh->req->n_flight--;
    sh->state = SH_IDLE;
    b->in_flight--;
}

/* A shard is back from a worker (a result, or the worker is lost): false
 * when its request is closed, the record then freed with its last shard. */
static bool s_shard_returned(s_shard_t *sh) {
    s_request_t *r = sh->req;
    if (!r->closed) return true;
    if (r->n_flight == 0) s_request_free(r);
    return false;
}

/*
 * A shard just detached from its worker goes back to the head of its lane
 * (failed: it was lost, which counts towards ZB_BROKER_SHARD_FAILURES_MAX,
 * and fails its request at the limit).  Nothing when its request is closed.
 */
static void s_shard_take_back(zb_broker_t *b, s_shard_t *sh, bool failed) {
    if (!s_shard_returned(sh)) return;
    s_request_t *r = sh->req;
    if (failed && ++sh->failures >= ZB_BROKER_SHARD_FAILURES_MAX) {
        s_request_fail(b, r, ZB_MSG_CODE_INTERNAL,
                       "texts %u to %u were lost %u times in turn (did workers crash on these "
                       "texts, or take longer than shard-timeout-ms?)",
                       sh->first, sh->first + sh->count - 1, sh->failures);
        return;
    }
    s_shard_queue(b, sh, true);
    /* Nothing of it has reached the client: any model may serve it. */
    if (r->n_flight == 0 && r->made == 0) s_request_unbind(b, r);
}

/*
 * Forgets a worker: its in-flight shards go back to the head of their
 * lanes, in their order (failed: the worker was lost while holding them).
 * why is logged (NULL: nothing is).
 */
static void s_worker_forget(zb_broker_t *b, s_worker_t *w, bool failed, const char *why) {
    if (why != NULL)
        ZB_LOG(failed ? ZB_LOG_WARN : ZB_LOG_INFO, "worker %s: %s; %u shards go back to the queue",
               w->label, why, w->n_flight);
    /* Tail first, each to the head of its lane: the lanes keep the order
     * the shards were dispatched in. */
    while (w->flight_tail) {
        s_shard_t *sh = w->flight_tail;
        s_flight_detach(b, sh);
        s_shard_take_back(b, sh, failed);
    }
    w->ident->n_workers--;
    s_ident_put(b, w->ident);
    if (w->prev)
        w->prev->next = w->next;
    else
        b->workers = w->next;
    if (w->next) w->next->prev = w->prev;
    zb_idmap_del(b->workers_by_rid, &w->h);
    b->n_workers--;
    free(w);
}

static int s_worker_send(zb_broker_t *b, s_worker_t *w, uint8_t *body, size_t len, uint64_t now) {
    if (s_send(b->back, &w->h.key, body, len) < 0) return -1;
    w->last_send_ms = now;
    return 0;
}

/* --- dispatch --------------------------------------------------------------- */

/* Whether owner o's client holds client-bytes-max of its parts untaken:
 * its lane is passed over until it drains (PROTOCOL.md 7, Memory). */
static bool s_owner_over(const zb_broker_t *b, s_owner_t *o) {
    return s_meter_bytes(o->meter) >= b->cfg.client_bytes_max;
}

typedef struct s_pick {
    const zb_broker_t *b;
    const s_worker_t *w;
} s_pick_t;

/* Whether identity i runs the model a request is pinned to (embed.model;
 * len 0: any). */
static bool s_ident_runs(const s_ident_t *i, zb_msg_str_t model) {
    return model.len == 0 ||
           (i->model_len == model.len && memcmp(i->model, model.ptr, model.len) == 0);
}

static bool s_eligible(const zb_queue_item_t *item, void *arg) {
    const s_shard_t *sh = (const s_shard_t *)item;
    const s_pick_t *p = arg;
    const s_request_t *r = sh->req;
    if (s_owner_over(p->b, r->owner)) return false;
    if (r->ident != NULL) return r->ident == p->w->ident;
    return s_ident_runs(p->w->ident, r->msg.u.embed.model);
}

/* The worker with free credit and the lowest in_flight / credit (ties: the
 * one that got work the longest ago), not yet found idle this round. */
static s_worker_t *s_least_loaded(zb_broker_t *b, uint64_t now) {
    s_worker_t *best = NULL;
    for (s_worker_t *w = b->workers; w; w = w->next) {
        if (w->n_flight >= w->credit || w->skip_round == b->dispatch_round ||
            w->quarantined_until_ms > now)
            continue;
        if (best == NULL) {
            best = w;
            continue;
        }
        uint64_t a = (uint64_t)w->n_flight * best->credit, c = (uint64_t)best->n_flight * w->credit;
        if (a < c || (a == c && w->last_dispatch < best->last_dispatch)) best = w;
    }
    return best;
}

static void s_dispatch(zb_broker_t *b) {
    if (b->draining) return; /* closing: no queued shard starts */
    b->dispatch_round++;
    uint64_t now = zb_clock_ms();
    while (zb_queue_items(b->queue) > 0) {
        s_worker_t *w = s_least_loaded(b, now);
        if (w == NULL) return;
        s_pick_t pick = {b, w};
        s_shard_t *sh = (s_shard_t *)zb_queue_pop(b->queue, s_eligible, &pick);
        if (sh == NULL) {
            w->skip_round = b->dispatch_round;
            continue;
        }
        s_request_t *r = sh->req;
        sh->state = SH_IDLE;
        r->n_queued--;
        b->queued_texts -= sh->count;

        zb_msg_task_t t = {.shard = sh->id,
                           .epoch = w->epoch,
                           .texts = r->msg.u.embed.texts + sh->first,
                           .n_texts = sh->count,
                           .opt = r->opt};
        uint8_t *body = NULL;
        size_t len = 0;
        zb_diag_t d;
        if (zb_msg_encode_task(&t, &body, &len, &d) < 0) {
            s_request_fail(b, r, ZB_MSG_CODE_INTERNAL, "texts %u to %u: %s", sh->first,
                           sh->first + sh->count - 1, d.msg);
            continue;
        }
        if (s_worker_send(b, w, body, len, now) < 0) {
            int e = errno;
            s_shard_queue(b, sh, true);
            s_worker_forget(b, w, true, e == EAGAIN ? "not reading its messages" : "gone");
            continue;
        }
        sh->sent_ms = now;
        s_flight_attach(b, w, sh);
        w->last_dispatch = ++b->dispatch_seq;
        if (r->ident == NULL) {
            r->ident = w->ident;
            w->ident->n_refs++;
        }
    }
}

/* --- frontend: clients ------------------------------------------------------ */

static void s_request_check_done(zb_broker_t *b, s_request_t *r, uint64_t now);

/* Answers a client's message that opened no request with `error`. */
__attribute__((format(printf, 5, 6))) static void s_client_error(zb_broker_t *b, const s_rid_t *rid,
                                                                 zb_msg_str_t id,
                                                                 zb_msg_code_t code,
                                                                 const char *fmt, ...) {
    char text[ZB_MSG_MESSAGE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    size_t len = 0;
    uint8_t *body = s_error_body(id.ptr, id.len, code, text, &len);
    if (body == NULL) return;
    s_front_reply(b, rid, body, len);
}

/* Answers an embed under the id of an open request that it does not
 * resume: `duplicate_id` without `id`, so that no client closes the open
 * request on its account, and with the id in `of` (PROTOCOL.md 4). */
static void s_client_duplicate(zb_broker_t *b, const s_rid_t *rid, zb_msg_str_t id) {
    char text[ZB_MSG_MESSAGE_BYTES_MAX];
    snprintf(text, sizeof text,
             "request id `%.*s` is open with another text count or other options; it goes on",
             (int)id.len, id.ptr);
    size_t len = 0;
    uint8_t *body = s_error_body_of(NULL, 0, &id, ZB_MSG_CODE_DUPLICATE_ID, text, &len);
    if (body != NULL) s_front_reply(b, rid, body, len);
}

/* The estimated tokens of one text (see ZB_BROKER_TEXT_TOKENS_CAP). */
static uint64_t s_estimate(size_t bytes, bool windows) {
    uint64_t t = bytes / ZB_BROKER_TEXT_BYTES_PER_TOKEN + 2;
    if (!windows && t > ZB_BROKER_TEXT_TOKENS_CAP) t = ZB_BROKER_TEXT_TOKENS_CAP;
    return t;
}

/* Splits the texts not in have into shards of consecutive texts (a held
 * text ends a shard: it is never sent to a worker); writes them to out
 * when not NULL; returns how many (0 when every text is held). */
static uint32_t s_split(const zb_broker_t *b, const zb_msg_embed_t *e, s_shard_t *out) {
    uint32_t n = 0, first = 0, count = 0;
    uint64_t tokens = 0;
    size_t k = 0; /* the first have range not wholly before text i */
    for (uint32_t i = 0; i < e->n_texts; i++) {
        while (k + 1 < e->n_have && (uint64_t)e->have[k] + e->have[k + 1] <= i) k += 2;
        bool held = k + 1 < e->n_have && e->have[k] <= i;
        uint64_t t = held ? 0 : s_estimate(e->texts[i].len, e->opt.windows);
        if (count > 0 &&
            (held || count == b->cfg.shard_texts_max || tokens + t > b->cfg.shard_tokens_max)) {
            if (out) out[n] = (s_shard_t){.first = first, .count = count};
            n++;
            count = 0;
            tokens = 0;
        }
        if (held) continue;
        if (count == 0) first = i;
        count++;
        tokens += t;
    }
    if (count > 0) {
        if (out) out[n] = (s_shard_t){.first = first, .count = count};
        n++;
    }
    return n;
}

/* Whether an embed sent under the id of open request r is r again (a
 * resumption): as many texts, the same options and model.  The texts are
 * not compared: those the client holds may come empty (have), and r's own
 * are the ones computed.  Its deadline may differ: r's holds. */
static bool s_same_request(const s_request_t *r, const zb_msg_embed_t *e) {
    const zb_msg_embed_t *o = &r->msg.u.embed;
    return o->n_texts == e->n_texts && zb_options_equal(&o->opt, &e->opt) &&
           o->model.len == e->model.len &&
           (e->model.len == 0 || memcmp(o->model.ptr, e->model.ptr, e->model.len) == 0);
}

/* Whether texts first..first+count-1 all lie in have's ranges (pairs of
 * first and count, increasing, not overlapping: the decoder checked). */
static bool s_have_covers(const uint32_t *have, size_t n_have, uint32_t first, uint32_t count) {
    uint64_t at = first, end = (uint64_t)first + count;
    for (size_t k = 0; k + 1 < n_have && at < end; k += 2) {
        uint64_t a = have[k], z = a + have[k + 1];
        if (a > at) return false; /* a gap at `at` */
        if (at < z) at = z;
    }
    return at >= end;
}

/* A shard that will make no part: its texts are held by the client. */
static void s_shard_client_has(zb_broker_t *b, s_shard_t *sh) {
    s_request_t *r = sh->req;
    if (sh->state == SH_QUEUED) {
        zb_queue_remove(b->queue, &sh->q);
        b->queued_texts -= sh->count;
        r->n_queued--;
    }
    sh->client_has = true;
    if (sh->state == SH_FLIGHT) return; /* s_deliver counts it when it comes back */
    if (sh->state != SH_HELD && sh->state != SH_DONE) {
        r->n_done++;
        r->texts_left -= sh->count;
        b->open_texts -= sh->count;
    }
    sh->state = SH_DONE;
}

/*
 * A request that lost its connection takes c: the parts kept for it go
 * out first, in order (they count in done.parts and done.tokens as parts
 * sent to c), then done if it is complete.
 */
static void s_request_attach(zb_broker_t *b, s_request_t *r, s_conn_t *c, uint64_t now) {
    s_request_link_conn(r, c);
    r->owner->n_detached--;
    r->detached_ms = 0;
    uint32_t n = 0;
    while (r->held_head) {
        s_held_t *x = r->held_head;
        r->held_head = x->next;
        r->parts++;
        r->tokens += x->tokens;
        s_conn_hold(b, c, x);
        n++;
    }
    r->held_tail = NULL;
    char label[ZB_MSG_ID_BYTES_MAX + 1], hex[40];
    ZB_LOG(ZB_LOG_INFO, "request %s: its owner is back on client %s; %u parts kept for it follow",
           s_clean(label, sizeof label, r->id, r->id_len), s_rid_hex(&c->h.key, hex), n);
    s_request_check_done(b, r, now);
}

/*
 * A message from rid (key: its connection's, with CurveZMQ): its owner
 * speaks again.  Its requests that lost their connection at this routing
 * id take it back, and what was kept for them goes first (PROTOCOL.md 7)
 * -- but for the one the message itself sends again (skip, an embed's id;
 * len 0: none), whose resumption says what the client holds already.
 */
static void s_owner_speaks(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                           zb_msg_str_t skip) {
    uint64_t now = zb_clock_ms();
    for (;;) {
        /* Looked up afresh each time: attaching may end a request, and
         * free its owner or conn with it. */
        s_owner_t *o = s_owner_find(b, rid, key);
        if (o == NULL || o->n_detached == 0) return;
        s_request_t *r = o->reqs;
        while (r && !(r->conn == NULL && r->rid_last.len == rid->len &&
                      memcmp(r->rid_last.b, rid->b, rid->len) == 0 &&
                      !(skip.len == r->id_len && memcmp(skip.ptr, r->id, skip.len) == 0)))
            r = r->next;
        if (r == NULL) return;
        s_conn_t *c = s_conn_find(b, rid);
        if (c == NULL && (c = s_conn_new(b, rid, key)) == NULL) return;
        s_request_attach(b, r, c, now);
    }
}

/*
 * Resumption (broker.h, Ownership): the owner of r sent it again from
 * connection c (the one it had, or another), holding the texts of have
 * (n_have 0: none said).  r's parts go to c from now on.  What the broker
 * still holds for r (parts never given to ZeroMQ, on its earlier conn or
 * kept while it had none) goes to c unless the client holds their texts;
 * every part given to ZeroMQ before (perhaps lost with a connection) is
 * made again unless the client holds its texts; shards of texts it holds
 * make no part.  done.parts and done.tokens count what goes to c from now.
 */
static void s_request_resume(zb_broker_t *b, s_request_t *r, s_conn_t *c, const uint32_t *have,
                             size_t n_have, uint64_t now) {
    s_conn_t *old = r->conn;
    s_held_t *head = NULL, *tail = NULL;
    if (old != NULL) {
        s_conn_take_parts(b, old, r, &head, &tail);
        s_request_unlink_conn(r);
        if (old != c) s_conn_release(b, old);
    } else {
        r->owner->n_detached--;
    }
    if (r->held_head != NULL) {
        if (tail)
            tail->next = r->held_head;
        else
            head = r->held_head;
        tail = r->held_tail;
        r->held_head = r->held_tail = NULL;
    }
    s_request_link_conn(r, c);
    r->parts = 0;
    r->tokens = 0;
    r->detached_ms = 0;
    uint32_t again = 0, kept = 0, skipped = 0;
    while (head != NULL) {
        s_held_t *x = head;
        head = x->next;
        if (s_have_covers(have, n_have, x->sh->first, x->sh->count)) {
            s_shard_client_has(b, x->sh);
            s_held_free(x);
            continue;
        }
        r->parts++;
        r->tokens += x->tokens;
        s_conn_hold(b, c, x);
        kept++;
    }
    for (uint32_t i = 0; i < r->n_shards; i++) {
        s_shard_t *sh = &r->shards[i];
        if (s_have_covers(have, n_have, sh->first, sh->count)) {
            s_shard_client_has(b, sh);
            skipped++;
            continue;
        }
        sh->client_has = false;
        if (sh->state != SH_DONE && sh->state != SH_IDLE) continue;
        if (sh->state == SH_DONE) {
            r->n_done--;
            r->texts_left += sh->count;
            b->open_texts += sh->count;
        }
        s_shard_queue(b, sh, false);
        again++;
    }
    char label[ZB_MSG_ID_BYTES_MAX + 1], hex[40];
    ZB_LOG(ZB_LOG_INFO,
           "request %s: resumed by its owner on client %s; %u parts held go there, %u of %u "
           "shards run again, %u are held by the client",
           s_clean(label, sizeof label, r->id, r->id_len), s_rid_hex(&c->h.key, hex), kept, again,
           r->n_shards, skipped);
    s_request_check_done(b, r, now);
}

/* An `embed` (key: the connection's, with CurveZMQ): returns true when the
 * request took the body. */
static bool s_on_embed(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key, zb_msg_t *m,
                       zmq_msg_t *body) {
    zb_msg_embed_t *e = &m->u.embed;
    s_owner_t *o = s_owner_find(b, rid, key);
    s_conn_t *c = s_conn_find(b, rid);
    size_t body_len = zmq_msg_size(body);
    s_request_t *open = s_request_find(o, e->id);
    if (open != NULL) {
        /* Its owner sent it again, from whichever connection: a
         * resumption, when it asks for the same thing. */
        if (!s_same_request(open, e)) {
            s_client_duplicate(b, rid, e->id);
            return false;
        }
        if (c == NULL && (c = s_conn_new(b, rid, key)) == NULL) {
            s_client_error(b, rid, e->id, ZB_MSG_CODE_INTERNAL, "the broker is out of memory");
            return false;
        }
        s_request_resume(b, open, c, e->have, e->n_have, zb_clock_ms());
        return false;
    }
    uint32_t n_shards = s_split(b, e, NULL);
    if (n_shards == 0) {
        /* The client holds every text (have): nothing to compute. */
        zb_msg_done_t done = {.id = e->id, .texts = e->n_texts};
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (zb_msg_encode_done(&done, &out, &out_len, NULL) < 0)
            s_client_error(b, rid, e->id, ZB_MSG_CODE_INTERNAL, "the broker is out of memory");
        else
            s_front_reply(b, rid, out, out_len);
        return false;
    }
    if (b->draining) {
        s_client_error(b, rid, e->id, ZB_MSG_CODE_BUSY, "the broker is stopping");
        return false;
    }
    if (e->n_texts > b->cfg.request_texts_max) {
        s_client_error(b, rid, e->id, ZB_MSG_CODE_TOO_LARGE,
                       "%zu texts exceed this broker's limit of %u per request; split it",
                       e->n_texts, b->cfg.request_texts_max);
        return false;
    }
    if (e->n_texts > b->cfg.queue_texts_max || body_len > b->cfg.queue_bytes_max) {
        /* Busy would never clear for it: say so. */
        s_client_error(b, rid, e->id, ZB_MSG_CODE_TOO_LARGE,
                       "%zu texts in %zu bytes exceed what this broker queues (%llu texts, "
                       "%llu bytes); split it",
                       e->n_texts, body_len, (unsigned long long)b->cfg.queue_texts_max,
                       (unsigned long long)b->cfg.queue_bytes_max);
        return false;
    }
    if (o != NULL && o->n_reqs >= b->cfg.client_requests_max) {
        s_client_error(b, rid, e->id, ZB_MSG_CODE_BUSY,
                       "this client has %u open requests, the limit; retry later", o->n_reqs);
        return false;
    }
    if (b->open_texts + e->n_texts > b->cfg.queue_texts_max) {
        s_client_error(b, rid, e->id, ZB_MSG_CODE_BUSY,
                       "the queue holds %llu texts, the limit is %llu; retry later",
                       (unsigned long long)b->open_texts,
                       (unsigned long long)b->cfg.queue_texts_max);
        return false;
    }
    if (b->open_bytes + body_len > b->cfg.queue_bytes_max) {
        s_client_error(b, rid, e->id, ZB_MSG_CODE_BUSY,
                       "the queue holds %llu bytes of requests, the limit is %llu; retry later",
                       (unsigned long long)b->open_bytes,
                       (unsigned long long)b->cfg.queue_bytes_max);
        return false;
    }

    uint64_t now = zb_clock_ms();
    s_request_t *r = calloc(1, sizeof *r);
    s_shard_t *shards = calloc(n_shards, sizeof *shards);
    bool new_owner = o == NULL, new_conn = c == NULL;
    if (new_owner && (o = calloc(1, sizeof *o)) != NULL && (o->meter = s_meter_new()) == NULL) {
        free(o);
        o = NULL;
    }
    if (new_conn) c = calloc(1, sizeof *c);
    if (r == NULL || shards == NULL || o == NULL || c == NULL) goto nomem;
    if (e->deadline_ms > 0) {
        uint64_t at = e->deadline_ms > UINT64_MAX - now ? UINT64_MAX : now + e->deadline_ms;
        if (zb_deadline_push(b->deadlines, &r->deadline, at) < 0) goto nomem;
    }
    if (new_owner) {
        zb_queue_lane_init(&o->lane);
        if (b->curve)
            zb_idmap_add(b->owners, &o->h, key, ZB_CURVE_KEY_BYTES);
        else
            zb_idmap_add(b->owners, &o->h, rid->b, rid->len);
    }
    if (new_conn) zb_idmap_add(b->conns, &c->h, rid->b, rid->len);
    if (key != NULL && !c->has_key) {
        c->has_key = true;
        memcpy(c->key, key, sizeof c->key);
    }

    memcpy(r->id, e->id.ptr, e->id.len);
    r->id_len = e->id.len;
    r->body = body;
    r->body_len = body_len;
    r->msg = *m;
    memset(m, 0, sizeof *m); /* the request owns the decoded arrays now */
    r->opt = r->msg.u.embed.opt;
    r->n_texts = (uint32_t)r->msg.u.embed.n_texts;
    r->shards = shards;
    r->n_shards = s_split(b, &r->msg.u.embed, shards);
    /* Texts the client holds are not open: no part will carry them. */
    for (uint32_t i = 0; i < r->n_shards; i++) r->texts_left += shards[i].count;
    r->received_ms = now;
    r->owner = o;
    r->next = o->reqs;
    if (o->reqs) o->reqs->prev = r;
    o->reqs = r;
    o->n_reqs++;
    s_request_link_conn(r, c);
    r->all_next = b->open;
    if (b->open) b->open->all_prev = r;
    b->open = r;
    b->n_requests++;
    b->open_texts += r->texts_left;
    b->open_bytes += body_len;
    for (uint32_t i = 0; i < r->n_shards; i++) {
        s_shard_t *sh = &shards[i];
        zb_queue_item_init(&sh->q);
        sh->req = r;
        sh->id = ++b->next_shard_id;
        s_shard_queue(b, sh, false);
    }
    char label[ZB_MSG_ID_BYTES_MAX + 1];
    ZB_LOG(ZB_LOG_DEBUG, "request %s: %u texts in %u shards",
           s_clean(label, sizeof label, r->id, r->id_len), r->n_texts, r->n_shards);
    return true;

nomem:
    free(r); /* in no heap: pushing is the last step that fails */
    free(shards);
    if (new_owner && o != NULL) {
        s_meter_unref(o->meter);
        free(o);
    }
    if (new_conn) free(c);
    s_client_error(b, rid, e->id, ZB_MSG_CODE_INTERNAL, "the broker is out of memory");
    return false;
}

/* A `cancel`: only the request's owner can cancel it, from any of its
 * connections; another owner's id is unknown here, and ignored. */
static void s_on_cancel(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                        const zb_msg_cancel_t *m) {
    s_request_t *r = s_request_find(s_owner_find(b, rid, key), m->id);
    if (r == NULL) return;
    if (r->conn != NULL) {
        s_request_fail(b, r, ZB_MSG_CODE_CANCELED, "canceled by the client");
        return;
    }
    /* Waiting for its owner, which cancels it from here: the answer goes
     * here. */
    s_request_close_release(b, r, false);
    s_client_error(b, rid, m->id, ZB_MSG_CODE_CANCELED, "canceled by the client");
}

/* A `status` (key: the connection's, with CurveZMQ): the broker's figures,
 * and the ids of the asking owner's open requests (at most
 * ZB_MSG_OPEN_MAX, newest first). */
static void s_on_status(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                        const zb_msg_status_t *m) {
    uint64_t now = zb_clock_ms();
    s_owner_t *o = s_owner_find(b, rid, key);
    size_t n_open = o ? (o->n_reqs < ZB_MSG_OPEN_MAX ? o->n_reqs : ZB_MSG_OPEN_MAX) : 0;
    zb_msg_worker_info_t *wi = calloc(b->n_workers ? b->n_workers : 1, sizeof *wi);
    zb_msg_str_t *open = calloc(n_open ? n_open : 1, sizeof *open);
    if (wi == NULL || open == NULL) {
        free(wi);
        free(open);
        s_client_error(b, rid, m->id, ZB_MSG_CODE_INTERNAL, "the broker is out of memory");
        return;
    }
    size_t k = 0;
    for (s_request_t *r = o ? o->reqs : NULL; r && k < n_open; r = r->next)
        open[k++] = (zb_msg_str_t){r->id, r->id_len};
    size_t n = 0;
    for (s_worker_t *w = b->workers; w; w = w->next, n++) {
        wi[n] = (zb_msg_worker_info_t){
            .name = {w->name, w->name_len},
            .model = {w->ident->model, w->ident->model_len},
            .dim = w->ident->dim,
            .threads = w->threads,
            .credit = w->credit,
            .in_flight = w->n_flight,
            .shards = w->shards_done,
            .tokens = w->tokens_done,
            .idle_ms = now > w->last_recv_ms ? now - w->last_recv_ms : 0,
            .quarantined_ms = w->quarantined_until_ms > now ? w->quarantined_until_ms - now : 0,
        };
    }
    zb_msg_status_reply_t s = {
        .id = m->id,
        .uptime_ms = now - b->start_ms,
        .workers = wi,
        .n_workers = n,
        .requests = b->n_requests,
        .queued_shards = zb_queue_items(b->queue),
        .queued_texts = b->queued_texts,
        .in_flight_shards = b->in_flight,
        .protocol_errors = b->protocol_errors,
        .bad_results = b->bad_results,
        .has_security = true,
        .curve = b->curve,
        .refused_clients = zb_zap_refused(b->zap, ZB_ZAP_CLIENTS),
        .refused_workers = zb_zap_refused(b->zap, ZB_ZAP_WORKERS),
        .open = open,
        .n_open = k,
    };
    zb_stats_rates(b->stats, now, &s.texts_per_s, &s.tokens_per_s);
    zb_stats_latency(b->stats, &s.latency_p50_ms, &s.latency_p90_ms, &s.latency_p99_ms);
    uint8_t *body = NULL;
    size_t len = 0;
    zb_diag_t d;
    int rc = zb_msg_encode_status_reply(&s, &body, &len, &d);
    free(wi);
    free(open);
    if (rc < 0) {
        ZB_LOG(ZB_LOG_ERROR, "status reply: %s", d.msg);
        s_client_error(b, rid, m->id, ZB_MSG_CODE_INTERNAL, "the status could not be encoded");
        return;
    }
    s_front_reply(b, rid, body, len);
}

/*
 * Reads one message [routing id][frames...] from sock.  Returns 0 with the
 * id in *rid and the body in *body when it had exactly two frames; 1 for
 * another frame count (the frames are consumed and *nframes says how many;
 * *body holds the second frame when there was one); -1 when nothing was
 * waiting.  *body is initialised in every case but -1 and is the caller's
 * to close.
 */
static int s_recv(void *sock, s_rid_t *rid, zmq_msg_t *body, int *nframes) {
    zmq_msg_t idm;
    zmq_msg_init(&idm);
    if (zmq_msg_recv(&idm, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&idm);
        return -1;
    }
    size_t n = zmq_msg_size(&idm);
    /* ROUTER ids are 1..255 bytes; anything else is not a peer we can
     * answer, handled like a bad frame count. */
    bool id_ok = n >= 1 && n <= sizeof rid->b;
    rid->len = (uint8_t)(id_ok ? n : 0);
    if (id_ok) memcpy(rid->b, zmq_msg_data(&idm), n);
    int more = zmq_msg_more(&idm);
    zmq_msg_close(&idm);
    zmq_msg_init(body);
    *nframes = 1;
    if (more) {
        /* The rest of a multipart message arrives with its first frame. */
        if (zmq_msg_recv(body, sock, 0) >= 0) {
            (*nframes)++;
            more = zmq_msg_more(body);
        } else {
            more = 0;
        }
    }
    while (more) {
        zmq_msg_t x;
        zmq_msg_init(&x);
        if (zmq_msg_recv(&x, sock, 0) < 0)
            more = 0;
        else
            more = zmq_msg_more(&x);
        (*nframes)++;
        zmq_msg_close(&x);
    }
    return *nframes == 2 && id_ok ? 0 : 1;
}

static void s_front_message(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                            zmq_msg_t *body) {
    zb_msg_t m;
    zb_diag_t d = {{0}};
    const void *p = zmq_msg_data(body);
    size_t len = zmq_msg_size(body);
    int rc = zb_msg_decode(p, len, &m, &d);
    s_owner_speaks(b, rid, key,
                   rc == 0 && m.type == ZB_MSG_EMBED ? m.u.embed.id : (zb_msg_str_t){0});
    if (rc < 0) {
        s_proto_error(b, "client", rid, p, len, zb_diag_text(&d, rc));
        zb_msg_code_t code = rc == ZB_EPROTO ? zb_msg_decode_failure(&m) : ZB_MSG_CODE_INTERNAL;
        if (code == ZB_MSG_CODE_NONE) code = ZB_MSG_CODE_BAD_REQUEST;
        s_client_error(b, rid, m.reject_id, code, "%s", zb_diag_text(&d, rc));
        zb_msg_free(&m);
        return;
    }
    switch (m.type) {
    case ZB_MSG_EMBED:
        if (s_on_embed(b, rid, key, &m, body)) {
            b->spare_body = NULL; /* the request holds it now */
            return;
        }
        break;
    case ZB_MSG_CANCEL:
        s_on_cancel(b, rid, key, &m.u.cancel);
        break;
    case ZB_MSG_STATUS:
        s_on_status(b, rid, key, &m.u.status);
        break;
    default: {
        /* A well-formed message of the other directions. */
        char why[96];
        snprintf(why, sizeof why, "`%s` is not a message a client sends", zb_msg_type_name(m.type));
        s_proto_error(b, "client", rid, p, len, why);
        s_client_error(b, rid, m.reject_id, ZB_MSG_CODE_BAD_REQUEST, "%s", why);
        break;
    }
    }
    zb_msg_free(&m);
}

/*
 * Ends every open request of owner o (a key) with `error forbidden`: its key
 * is no longer allowed.  Those waiting for their owner end without a word.
 * o is freed on return.
 */
static void s_owner_forbid(zb_broker_t *b, s_owner_t *o) {
    char z85[ZB_CURVE_Z85_CHARS + 1] = "";
    uint8_t key[ZB_CURVE_KEY_BYTES];
    memcpy(key, o->h.key.b, sizeof key);
    ZB_LOG(ZB_LOG_INFO,
           "client key %s: removed from allow-clients; its %u open requests end with forbidden",
           zb_curve_z85(key, z85), o->n_reqs);
    /* Ending the last one frees the owner: look it up again each time. */
    while ((o = (s_owner_t *)zb_idmap_find(b->owners, key, sizeof key)) != NULL)
        s_request_fail(b, o->reqs, ZB_MSG_CODE_FORBIDDEN,
                       "this client's key is no longer allowed by the broker");
}

/*
 * A message from a client whose key is not allowed (any more): its key's
 * open requests end (they should have at the reload that removed the key,
 * but nothing is assumed), and the message is answered with `forbidden`,
 * echoing its id when it has one.
 */
static void s_front_forbidden(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                              zmq_msg_t *body, bool one_frame) {
    s_owner_t *o = key ? s_owner_find(b, rid, key) : NULL;
    if (o != NULL) s_owner_forbid(b, o);
    zb_msg_t m;
    memset(&m, 0, sizeof m);
    zb_msg_str_t id = {NULL, 0};
    if (one_frame) {
        int rc = zb_msg_decode(zmq_msg_data(body), zmq_msg_size(body), &m, NULL);
        if (rc < 0)
            id = m.reject_id;
        else if (m.type == ZB_MSG_EMBED)
            id = m.u.embed.id;
        else if (m.type == ZB_MSG_CANCEL)
            id = m.u.cancel.id;
        else if (m.type == ZB_MSG_STATUS)
            id = m.u.status.id;
    }
    s_client_error(b, rid, id, ZB_MSG_CODE_FORBIDDEN,
                   "this client's key is no longer allowed by the broker");
    zb_msg_free(&m);
}

/*
 * With CurveZMQ, a routing id bound to one key and now heard from with
 * another: libzmq keeps the routing ids of live connections distinct, so
 * the connection that sent the earlier messages is gone and its id was
 * given to a new one (a peer may choose its own).  What was meant for the
 * old connection must never reach the new holder.
 */
static void s_front_check_holder(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key) {
    s_conn_t *c = s_conn_find(b, rid);
    if (c == NULL || !c->has_key || (key != NULL && memcmp(c->key, key, sizeof c->key) == 0))
        return;
    char hex[40];
    ZB_LOG(ZB_LOG_INFO, "client %s: its routing id now belongs to another key",
           s_rid_hex(rid, hex));
    s_conn_drop(b, c, EHOSTUNREACH); /* its requests wait for their owner */
}

/* Binds a conn record made while answering a message to the key of the
 * connection that sent it (a record made to hold a reply). */
static void s_front_bind_key(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key) {
    s_conn_t *c = key ? s_conn_find(b, rid) : NULL;
    if (c == NULL || c->has_key) return;
    c->has_key = true;
    memcpy(c->key, key, sizeof c->key);
}

/* Sends `closing` to rid (a message of no request that is never dropped
 * for being unread); a client gone is nothing to tell. */
static void s_send_closing(zb_broker_t *b, const s_rid_t *rid) {
    zb_msg_closing_t m = {.message = {S_CLOSING_TEXT, sizeof S_CLOSING_TEXT - 1}};
    uint8_t *body = NULL;
    size_t len = 0;
    if (zb_msg_encode_closing(&m, &body, &len, NULL) < 0) return;
    if (s_front_send(b, rid, body, len, false) < 0 && errno != EHOSTUNREACH) {
        s_conn_t *c = s_conn_find(b, rid);
        if (c != NULL) s_conn_drop(b, c, errno);
    }
}

/*
 * The stop begins (PROTOCOL.md 7, Stopping): `closing` to every client
 * with open requests -- at the routing id of their connection, or the one
 * a detached request lost (its owner may be back there) -- once per
 * routing id.  Returns how many were told.
 */
static size_t s_tell_closing(zb_broker_t *b) {
    size_t told = 0;
    for (zb_idmap_node_t *n = zb_idmap_first(b->owners); n; n = zb_idmap_next(b->owners, n)) {
        /* An owner's requests go to few routing ids (usually one): those
         * told are remembered per owner, the first S_CLOSING_RIDS. */
        s_rid_t done[S_CLOSING_RIDS];
        size_t n_done = 0;
        for (s_request_t *r = ((s_owner_t *)n)->reqs; r; r = r->next) {
            const s_rid_t *rid = r->conn ? &r->conn->h.key : &r->rid_last;
            bool again = false;
            for (size_t k = 0; k < n_done && !again; k++)
                again = done[k].len == rid->len && memcmp(done[k].b, rid->b, rid->len) == 0;
            if (again) continue;
            if (n_done < S_CLOSING_RIDS) done[n_done++] = *rid;
            s_send_closing(b, rid);
            told++;
        }
    }
    return told;
}

static void s_front_readable(zb_broker_t *b) {
    for (int k = 0; k < S_RECV_BATCH; k++) {
        /* Bodies are received into a heap zmq_msg_t: an accepted embed
         * keeps it, and the texts it points into must not move (libzmq
         * stores short messages inside the zmq_msg_t itself). */
        if (b->spare_body == NULL && (b->spare_body = malloc(sizeof(zmq_msg_t))) == NULL) return;
        zmq_msg_t *body = b->spare_body;
        s_rid_t rid;
        int nframes;
        int rc = s_recv(b->front, &rid, body, &nframes);
        if (rc < 0) return;
        uint8_t keyb[ZB_CURVE_KEY_BYTES];
        const uint8_t *key = b->curve && s_msg_key(body, keyb) ? keyb : NULL;
        if (b->curve && rid.len > 0) s_front_check_holder(b, &rid, key);
        bool allowed = s_key_allowed(b, ZB_ZAP_CLIENTS, key, body);
        if (allowed && rid.len > 0 && b->draining) {
            /* Closing: every message is answered so, after what was kept
             * for its owner at this routing id. */
            s_owner_speaks(b, &rid, key, (zb_msg_str_t){0});
            s_send_closing(b, &rid);
            s_front_bind_key(b, &rid, key);
            if (b->spare_body == body) zmq_msg_close(body);
            continue;
        }
        /* Any message of an owner brings back what waits for it at this
         * routing id, before its answer (a well-formed one: once decoded,
         * s_front_message). */
        if (allowed && rid.len > 0 && rc > 0) s_owner_speaks(b, &rid, key, (zb_msg_str_t){0});
        if (!allowed) {
            if (rid.len > 0) s_front_forbidden(b, &rid, key, body, rc == 0);
        } else if (rc > 0) {
            char why[64];
            snprintf(why, sizeof why, "%d frames, a message is one frame", nframes - 1);
            if (rid.len > 0) {
                /* Answered, like any malformed message: a client that
                 * waits for an answer learns what it did wrong. */
                s_proto_error(b, "client", &rid, zmq_msg_data(body), zmq_msg_size(body), why);
                s_client_error(b, &rid, (zb_msg_str_t){NULL, 0}, ZB_MSG_CODE_BAD_REQUEST, "%s",
                               why);
            } else {
                b->protocol_errors++;
            }
        } else {
            s_front_message(b, &rid, key, body);
        }
        if (rid.len > 0) s_front_bind_key(b, &rid, key);
        if (b->spare_body == body) zmq_msg_close(body);
    }
}

/* --- backend: workers ------------------------------------------------------- */

/*
 * Tells a peer that is not a registered worker to send `ready`.  Unless
 * forced, at most once per ZB_BROKER_HEARTBEAT_MS per peer: a forgotten
 * worker usually has several messages on the way, and a `reconnect` for
 * each would make it announce itself several times over.
 */
static void s_send_reconnect(zb_broker_t *b, const s_rid_t *rid, bool force, uint64_t now) {
    size_t slot = b->reconnect_next;
    for (size_t i = 0; i < S_RECONNECT_PEERS; i++) {
        s_sent_t *x = &b->reconnects[i];
        if (x->rid.len == rid->len && memcmp(x->rid.b, rid->b, rid->len) == 0) {
            if (!force && now - x->at_ms < ZB_BROKER_HEARTBEAT_MS) return;
            slot = i;
            break;
        }
    }
    if (slot == b->reconnect_next) b->reconnect_next = (slot + 1) % S_RECONNECT_PEERS;
    b->reconnects[slot] = (s_sent_t){.rid = *rid, .at_ms = now};
    uint8_t *body = NULL;
    size_t len = 0;
    if (zb_msg_encode_empty(ZB_MSG_RECONNECT, &body, &len, NULL) == 0)
        s_send(b->back, rid, body, len); /* a gone peer needs nothing */
}

/* Who a worker is, for its quarantine: its key with CurveZMQ (a name is
 * the worker's to choose, a key is not), else its name. */
static size_t s_worker_who(const zb_broker_t *b, const s_worker_t *w, const char **who) {
    if (b->curve) {
        *who = (const char *)w->key;
        return sizeof w->key;
    }
    *who = w->name;
    return w->name_len;
}

/* The quarantine slot of a worker (s_worker_who), or NULL. */
static s_quarantine_t *s_quarantine_find(zb_broker_t *b, const char *name, size_t len) {
    for (size_t i = 0; i < S_QUARANTINE_SLOTS; i++) {
        s_quarantine_t *q = &b->quarantine[i];
        if (q->name_len == len && memcmp(q->name, name, len) == 0) return q;
    }
    return NULL;
}

/* Sets worker w aside after an offence: it keeps its registration (and
 * shows in status) but gets no work until the quarantine ends, and a
 * reconnection under the same name finds it still set aside. */
static void s_quarantine(zb_broker_t *b, s_worker_t *w, uint64_t now) {
    const char *who;
    size_t who_len = s_worker_who(b, w, &who);
    s_quarantine_t *q = s_quarantine_find(b, who, who_len);
    if (q == NULL) {
        /* a free slot, else the one whose quarantine ended longest ago,
         * else the one that ends first */
        q = &b->quarantine[0];
        for (size_t i = 0; i < S_QUARANTINE_SLOTS; i++) {
            s_quarantine_t *x = &b->quarantine[i];
            if (x->name_len == 0) {
                q = x;
                break;
            }
            if (x->until_ms < q->until_ms) q = x;
        }
        memset(q, 0, sizeof *q);
        memcpy(q->name, who, who_len);
        q->name_len = who_len;
    }
    if (q->offences > 0 && now > q->until_ms + S_QUARANTINE_FORGIVE_MS) q->offences = 0;
    uint64_t ms = S_QUARANTINE_FIRST_MS;
    for (uint32_t k = 0; k < q->offences && ms < S_QUARANTINE_MAX_MS; k++) ms *= 2;
    if (ms > S_QUARANTINE_MAX_MS) ms = S_QUARANTINE_MAX_MS;
    q->offences++;
    q->until_ms = now + ms;
    w->quarantined_until_ms = q->until_ms;
    ZB_LOG(ZB_LOG_WARN,
           "worker %s: set aside for %llu s (offence %u): it returned a result that "
           "does not match its task",
           w->label, (unsigned long long)(ms / 1000), q->offences);
}

static void s_on_ready(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key,
                       const zb_msg_ready_t *m, uint64_t now) {
    s_worker_t *old = s_worker_find(b, rid);
    /*
     * A known worker saying ready again: either it lost what it held (its
     * shards must run elsewhere, or they would wait forever on a worker
     * that heartbeats), or it answered two reconnects that crossed its own
     * messages, and still computes them (then its results come back with
     * the earlier epoch and are dropped as stale).  Re-queue, without
     * counting a failure against the shards.  Tasks sent under the earlier
     * epoch and still on their way are dropped by the worker, which counts
     * credit per epoch.
     */
    if (old != NULL) {
        if (old->epoch == m->epoch)
            ZB_LOG(ZB_LOG_WARN,
                   "worker %s: sent ready again with the same epoch %llu; its stale tasks and "
                   "results cannot be told from current ones",
                   old->label, (unsigned long long)m->epoch);
        s_worker_forget(b, old, false, "sent ready again");
    }
    char label[ZB_MSG_NAME_BYTES_MAX + 1], model[ZB_MSG_NAME_BYTES_MAX + 1];
    s_clean(label, sizeof label, m->name.ptr, m->name.len);
    s_clean(model, sizeof model, m->model.ptr, m->model.len);
    if (b->n_workers >= ZB_MSG_WORKERS_MAX) {
        ZB_LOG(ZB_LOG_WARN, "worker %s refused: %u workers is the limit", label,
               ZB_MSG_WORKERS_MAX);
        return;
    }
    s_worker_t *w = calloc(1, sizeof *w);
    s_ident_t *ident = w ? s_ident_get(b, m->model, m->dim) : NULL;
    if (ident == NULL) {
        free(w);
        ZB_LOG(ZB_LOG_ERROR, "worker %s refused: out of memory", label);
        return;
    }
    bool mixed = false;
    for (s_worker_t *x = b->workers; x; x = x->next) mixed |= x->ident != ident;
    memcpy(w->name, m->name.ptr, m->name.len);
    w->name_len = m->name.len;
    memcpy(w->label, label, sizeof label);
    w->ident = ident;
    ident->n_workers++;
    w->threads = m->threads;
    w->credit = m->credit;
    w->last_recv_ms = w->last_send_ms = now;
    w->epoch = m->epoch;
    const char *who;
    size_t who_len = s_worker_who(b, w, &who);
    const s_quarantine_t *q = s_quarantine_find(b, who, who_len);
    if (q != NULL && q->until_ms > now) w->quarantined_until_ms = q->until_ms;
    if (key != NULL) memcpy(w->key, key, sizeof w->key);
    w->next = b->workers;
    if (b->workers) b->workers->prev = w;
    b->workers = w;
    zb_idmap_add(b->workers_by_rid, &w->h, rid->b, rid->len);
    b->n_workers++;
    ZB_LOG(ZB_LOG_INFO, "worker %s joined: model %s, dim %u, %u threads, credit %u, epoch %llu%s",
           label, model, m->dim, m->threads, m->credit, (unsigned long long)m->epoch,
           w->quarantined_until_ms > now ? " (set aside: no work yet)" : "");
    if (mixed)
        ZB_LOG(ZB_LOG_WARN, "workers of different models (or dims) are connected; each request "
                            "is served by one model, which one is not chosen by the client");
}

/* Every row's span lies inside its text: byte spans end within the text's
 * bytes, code-point spans within as many (a code point takes a byte at
 * least). */
static bool s_result_spans_ok(const s_shard_t *sh, const zb_msg_vectors_t *v, char *why,
                              size_t cap) {
    /* A closed request's texts are gone with its body; its result is
     * discarded anyway, and the shape checks still judge the worker. */
    if ((v->byte_offsets == NULL && v->offsets == NULL) || sh->req->closed) return true;
    const zb_msg_str_t *texts = sh->req->msg.u.embed.texts + sh->first;
    uint64_t row = 0;
    for (uint32_t i = 0; i < v->count; i++) {
        uint64_t bytes = texts[i].len;
        for (uint32_t k = 0; k < v->rows[i]; k++, row++) {
            uint32_t bb = v->byte_offsets ? v->byte_offsets[2 * row] : 0;
            uint32_t be = v->byte_offsets ? v->byte_offsets[2 * row + 1] : 0;
            uint32_t cb = v->offsets ? v->offsets[2 * row] : 0;
            uint32_t ce = v->offsets ? v->offsets[2 * row + 1] : 0;
            if (bb > be || be > bytes || cb > ce || ce > bytes) {
                snprintf(why, cap,
                         "result of shard %llu: text %u, row %u spans [%u, %u) bytes, [%u, %u) "
                         "code points of a %llu-byte text",
                         (unsigned long long)sh->id, i, k, bb, be, cb, ce,
                         (unsigned long long)bytes);
                return false;
            }
        }
    }
    return true;
}

/* Every float is finite: a model's outputs are (LayerNorm bounds them), so
 * a NaN or an infinity is a broken worker, not a text's result. */
static bool s_result_finite(const s_shard_t *sh, const zb_msg_vectors_t *v, char *why, size_t cap) {
    const uint8_t *p = v->vectors;
    size_t n = v->vectors_len / 4;
    for (size_t i = 0; i < n; i++) {
        /* exponent all ones: an infinity or a NaN, whatever the byte order
         * of this machine (the wire is little-endian) */
        uint32_t bits = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                        (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
        if ((bits & 0x7f800000u) == 0x7f800000u) {
            snprintf(why, cap, "result of shard %llu: float %zu is %s", (unsigned long long)sh->id,
                     i, (bits & 0x007fffffu) ? "NaN" : "infinite");
            return false;
        }
    }
    return true;
}

/* Checks a result against its task; a sentence in why when it does not
 * match. */
static bool s_result_ok(const s_worker_t *w, const s_shard_t *sh, const zb_msg_result_t *res,
                        char *why, size_t cap) {
    const zb_msg_vectors_t *v = &res->vec;
    if (v->count != sh->count)
        snprintf(why, cap, "result of shard %llu covers %u texts, the task had %u",
                 (unsigned long long)sh->id, v->count, sh->count);
    else if (v->level != sh->req->opt.level)
        snprintf(why, cap, "result of shard %llu is at the %s level, the task asked %s",
                 (unsigned long long)sh->id, zb_options_level_name(v->level),
                 zb_options_level_name(sh->req->opt.level));
    else if (v->dim != w->ident->dim)
        snprintf(why, cap, "result of shard %llu has dim %u, the worker announced %u",
                 (unsigned long long)sh->id, v->dim, w->ident->dim);
    else if (v->token_meta != zb_options_meta(&sh->req->opt))
        /* an older worker ignores the options that ask for metadata: its
         * rows are not what the client asked for (PROTOCOL.md 9) */
        snprintf(why, cap, "result of shard %llu %s token metadata, which the task %s",
                 (unsigned long long)sh->id, v->token_meta ? "carries" : "lacks",
                 v->token_meta ? "did not ask for" : "asked for");
    else if (v->n_truncated > v->count || v->n_errors > v->count)
        snprintf(why, cap, "result of shard %llu lists more texts than it covers",
                 (unsigned long long)sh->id);
    else if (!s_result_spans_ok(sh, v, why, cap) || !s_result_finite(sh, v, why, cap))
        ;
    else
        return true;
    return false;
}

/*
 * Ends r with `done` once every shard's part is made and r has a
 * connection to tell (a request waiting for its owner keeps its parts, and
 * its done, for it).  The done goes after the parts in the conn's order.
 */
static void s_request_check_done(zb_broker_t *b, s_request_t *r, uint64_t now) {
    if (r->n_done < r->n_shards || r->conn == NULL) return;
    uint64_t elapsed = now - r->received_ms;
    zb_msg_done_t done = {.id = {r->id, r->id_len},
                          .texts = r->n_texts,
                          .tokens = r->tokens,
                          .parts = r->parts,
                          .elapsed_ms = elapsed};
    if (r->ident != NULL && r->made > 0)
        done.model = (zb_msg_str_t){r->ident->model, r->ident->model_len};
    zb_stats_add_latency(b->stats, (double)elapsed);
    uint8_t *body = NULL;
    size_t len = 0;
    zb_diag_t d;
    char label[ZB_MSG_ID_BYTES_MAX + 1];
    s_clean(label, sizeof label, r->id, r->id_len);
    if (zb_msg_encode_done(&done, &body, &len, &d) < 0)
        ZB_LOG(ZB_LOG_ERROR, "request %s: done: %s", label, d.msg);
    ZB_LOG(ZB_LOG_DEBUG, "request %s: done, %u texts in %llu ms", label, r->n_texts,
           (unsigned long long)elapsed);
    s_request_end(b, r, body, len);
}

/*
 * Makes a shard's result one `part` for its client -- sent, held in order
 * behind what the broker holds for the client, or kept on the request
 * while its owner is away -- then `done` if it was the last.  A shard
 * whose texts the client holds (a resumption's have) makes no part.  The
 * request may be closed on return.
 */
static void s_deliver(zb_broker_t *b, s_shard_t *sh, const zb_msg_result_t *res, uint64_t now) {
    s_request_t *r = sh->req;
    r->n_done++;
    r->texts_left -= sh->count;
    b->open_texts -= sh->count;
    zb_stats_add_work(b->stats, now, sh->count, res->tokens);
    if (sh->client_has) {
        sh->state = SH_DONE;
        s_request_check_done(b, r, now);
        return;
    }
    const zb_msg_vectors_t *v = &res->vec;
    uint32_t truncated[ZB_BROKER_SHARD_TEXTS_MAX];
    zb_msg_text_error_t errors[ZB_BROKER_SHARD_TEXTS_MAX];
    /* Indices relative to the shard become indices in the request. */
    for (size_t k = 0; k < v->n_truncated; k++) truncated[k] = v->truncated[k] + sh->first;
    for (size_t k = 0; k < v->n_errors; k++) {
        errors[k] = v->errors[k];
        errors[k].index += sh->first;
    }
    zb_msg_part_t p = {.id = {r->id, r->id_len}, .first = sh->first, .vec = *v};
    /* The identity of the workers that made it: one per request (its
     * binding), so one client's output never mixes models. */
    if (r->ident != NULL) p.model = (zb_msg_str_t){r->ident->model, r->ident->model_len};
    p.vec.truncated = v->n_truncated ? truncated : NULL;
    p.vec.errors = v->n_errors ? errors : NULL;
    uint8_t *body = NULL;
    size_t len = 0;
    zb_diag_t d;
    if (zb_msg_encode_part(&p, &body, &len, &d) < 0) {
        s_request_fail(b, r, ZB_MSG_CODE_INTERNAL, "texts %u to %u: %s", sh->first,
                       sh->first + sh->count - 1, d.msg);
        return;
    }
    r->made++;
    s_held_t *x = NULL;
    if (r->conn != NULL) {
        int rc = s_front_put(b, &r->conn->h.key, &body, len, r, sh, res->tokens, false);
        if (rc >= 0) {
            sh->state = rc == 1 ? SH_DONE : SH_HELD;
            r->parts++;
            r->tokens += res->tokens;
            s_request_check_done(b, r, now);
            return;
        }
        /* Its client is gone: r waits for its owner (with this part, after
         * those its conn held), or, while the broker stops, is closed --
         * perhaps freed -- with the conn's other requests. */
        int e = errno;
        bool keep = s_resumable(b);
        s_conn_drop(b, r->conn, e);
        if (!keep) {
            free(body);
            return;
        }
    }
    if (body != NULL) x = s_held_new(body, len, r, sh, res->tokens, r->owner->meter, false);
    if (x == NULL) {
        /* Lost (out of memory): computed again. */
        free(body);
        r->n_done--;
        r->made--;
        r->texts_left += sh->count;
        b->open_texts += sh->count;
        sh->state = SH_IDLE;
        s_shard_queue(b, sh, true);
        return;
    }
    s_request_keep(r, x);
    sh->state = SH_HELD;
}

static void s_on_result(zb_broker_t *b, s_worker_t *w, const zb_msg_result_t *res, const void *p,
                        size_t len, uint64_t now) {
    if (res->epoch != w->epoch) {
        /* A task of an earlier registration of this peer (before its
         * latest ready): that shard was taken back then, and may even be
         * in flight here again under the same id. */
        ZB_LOG(ZB_LOG_DEBUG,
               "worker %s: result for shard %llu of epoch %llu dropped (epoch %llu now)", w->label,
               (unsigned long long)res->shard, (unsigned long long)res->epoch,
               (unsigned long long)w->epoch);
        return;
    }
    s_shard_t *sh = w->flight_head;
    while (sh && sh->id != res->shard) sh = sh->wnext;
    char why[200];
    if (sh == NULL) {
        for (size_t k = 0; k < S_LATE_IDS; k++) {
            if (w->late[k] == res->shard) {
                w->late[k] = 0;
                ZB_LOG(ZB_LOG_INFO,
                       "worker %s: late result for shard %llu dropped (taken back after "
                       "shard-timeout-ms)",
                       w->label, (unsigned long long)res->shard);
                return;
            }
        }
        snprintf(why, sizeof why, "result for shard %llu, which was never given to it",
                 (unsigned long long)res->shard);
        s_proto_error(b, "worker", &w->h.key, p, len, why);
        return;
    }
    if (!s_result_ok(w, sh, res, why, sizeof why)) {
        /*
         * The worker's fault, not the texts': its shards go back to the
         * queue without counting a loss (a bad worker must not fail
         * requests that a good one can serve), and it is set aside --
         * registered, shown in status, given no work -- for a quarantine
         * that grows with each offence.  Told to reconnect, it announces
         * itself afresh and finds itself still set aside.
         */
        s_proto_error(b, "worker", &w->h.key, p, len, why);
        b->bad_results++;
        s_quarantine(b, w, now);
        s_rid_t rid = w->h.key;
        s_worker_forget(b, w, false, "sent a result that does not match its task");
        s_send_reconnect(b, &rid, true, now);
        return;
    }
    s_flight_detach(b, sh);
    w->shards_done++;
    w->tokens_done += res->tokens;
    if (!s_shard_returned(sh)) return; /* its request ended meanwhile */
    s_deliver(b, sh, res, now);
}

static void s_back_message(zb_broker_t *b, const s_rid_t *rid, const uint8_t *key, zmq_msg_t *body,
                           uint64_t now) {
    zb_msg_t m;
    zb_diag_t d = {{0}};
    const void *p = zmq_msg_data(body);
    size_t len = zmq_msg_size(body);
    s_worker_t *w = s_worker_find(b, rid);
    int rc = zb_msg_decode(p, len, &m, &d);
    if (rc < 0) {
        /* Worker side: dropped, not answered (the worker is software we
         * run; its log and our counter tell the operator). */
        s_proto_error(b, "worker", rid, p, len, zb_diag_text(&d, rc));
        if (w) w->last_recv_ms = now;
        return;
    }
    if (m.type == ZB_MSG_READY) {
        s_on_ready(b, rid, key, &m.u.ready, now);
    } else if (m.type != ZB_MSG_RESULT && m.type != ZB_MSG_HEARTBEAT && m.type != ZB_MSG_BYE) {
        char why[96];
        snprintf(why, sizeof why, "`%s` is not a message a worker sends", zb_msg_type_name(m.type));
        s_proto_error(b, "worker", rid, p, len, why);
        if (w) w->last_recv_ms = now;
    } else if (w == NULL) {
        /* Unknown: it was forgotten (expired, or we restarted).  Its
         * result, if any, is dropped; it must announce itself again. */
        if (m.type != ZB_MSG_BYE) s_send_reconnect(b, rid, false, now);
    } else {
        w->last_recv_ms = now;
        if (m.type == ZB_MSG_RESULT)
            s_on_result(b, w, &m.u.result, p, len, now);
        else if (m.type == ZB_MSG_BYE)
            s_worker_forget(b, w, false, "said bye");
    }
    zb_msg_free(&m);
}

static void s_back_readable(zb_broker_t *b) {
    for (int k = 0; k < S_RECV_BATCH; k++) {
        s_rid_t rid;
        zmq_msg_t body;
        int nframes;
        int rc = s_recv(b->back, &rid, &body, &nframes);
        if (rc < 0) return;
        uint64_t now = zb_clock_ms();
        uint8_t keyb[ZB_CURVE_KEY_BYTES];
        const uint8_t *key = b->curve && s_msg_key(&body, keyb) ? keyb : NULL;
        s_worker_t *w = b->curve && rid.len > 0 ? s_worker_find(b, &rid) : NULL;
        /* A registered worker's routing id heard with another key: that
         * worker's connection is gone (see s_front_check_holder). */
        if (w != NULL && (key == NULL || memcmp(w->key, key, sizeof w->key) != 0)) {
            s_worker_forget(b, w, false, "its routing id now belongs to another key");
            w = NULL;
        }
        if (!s_key_allowed(b, ZB_ZAP_WORKERS, key, &body)) {
            /* Dropped without a word (no reconnect: it would only come back
             * to be refused); a registered worker is forgotten. */
            if (w != NULL) s_worker_forget(b, w, false, "its key was removed from allow-workers");
        } else if (rc > 0) {
            char why[64];
            snprintf(why, sizeof why, "%d frames, a message is one frame", nframes - 1);
            if (rid.len > 0)
                s_proto_error(b, "worker", &rid, zmq_msg_data(&body), zmq_msg_size(&body), why);
            else
                b->protocol_errors++;
        } else {
            s_back_message(b, &rid, key, &body, now);
        }
        zmq_msg_close(&body);
    }
}

/* --- the clock ------------------------------------------------------------------ */

/* Requests that no connected worker can serve: unbound ones when there is
 * no worker at all, bound ones when their model's workers are gone.  And
 * requests whose owner did not come back for them within resume-ms: they
 * end without a word (there is no one to tell). */
static void s_check_orphans(zb_broker_t *b, uint64_t now) {
    /* Workers set aside serve nothing: a request only they could take is
     * as orphaned as one with no worker at all. */
    uint32_t n_active = 0;
    for (s_ident_t *i = b->idents; i; i = i->next) i->n_active = 0;
    for (s_worker_t *w = b->workers; w; w = w->next)
        if (w->quarantined_until_ms <= now) w->ident->n_active++, n_active++;
    for (s_request_t *r = b->open, *next; r; r = next) {
        next = r->all_next;
        /* (While the broker stops they stay: their owner may come back
         * before it exits, and take what was kept for it.) */
        if (r->conn == NULL && now - r->detached_ms >= b->cfg.resume_ms) {
            char label[ZB_MSG_ID_BYTES_MAX + 1];
            ZB_LOG(ZB_LOG_INFO, "request %s: its owner did not resume it; dropped",
                   s_clean(label, sizeof label, r->id, r->id_len));
            s_request_close_release(b, r, false);
            continue;
        }
        if (r->n_queued == 0) {
            r->orphan_since_ms = 0;
            continue;
        }
        if (r->ident != NULL && r->ident->n_workers == 0 && r->made == 0 && r->n_flight == 0)
            s_request_unbind(b, r);
        bool servable = r->ident ? r->ident->n_active > 0 : n_active > 0;
        if (r->ident == NULL && r->msg.u.embed.model.len > 0) {
            /* pinned: only workers of its model count */
            servable = false;
            for (s_ident_t *i = b->idents; i && !servable; i = i->next)
                servable = i->n_active > 0 && s_ident_runs(i, r->msg.u.embed.model);
        }
        if (servable || b->cfg.no_worker_ms == 0) {
            r->orphan_since_ms = 0;
        } else if (r->orphan_since_ms == 0) {
            r->orphan_since_ms = now;
        } else if (now - r->orphan_since_ms >= b->cfg.no_worker_ms) {
            /* Failing r may drop its client's other requests too: start
             * over rather than trust next. */
            if (r->ident)
                s_request_fail(b, r, ZB_MSG_CODE_NO_MODEL,
                               "no worker of model %.*s (dim %u) to serve it for %llu ms",
                               (int)r->ident->model_len, r->ident->model, r->ident->dim,
                               (unsigned long long)(now - r->orphan_since_ms));
            else if (r->msg.u.embed.model.len > 0)
                s_request_fail(b, r, ZB_MSG_CODE_NO_MODEL,
                               "no worker of model %.*s to serve it for %llu ms",
                               (int)r->msg.u.embed.model.len, r->msg.u.embed.model.ptr,
                               (unsigned long long)(now - r->orphan_since_ms));
            else
                s_request_fail(b, r, ZB_MSG_CODE_NO_MODEL, "no worker to serve it for %llu ms",
                               (unsigned long long)(now - r->orphan_since_ms));
            next = b->open;
        }
    }
}

/* Logs the owners whose work paused over client-bytes-max, or resumed
 * (dispatch reads the meters themselves: this is only what the log says). */
static void s_check_budgets(zb_broker_t *b) {
    for (zb_idmap_node_t *n = zb_idmap_first(b->owners); n; n = zb_idmap_next(b->owners, n)) {
        s_owner_t *o = (s_owner_t *)n;
        bool over = s_owner_over(b, o);
        if (over == o->paused) continue;
        o->paused = over;
        char who[64];
        if (n->key.len == ZB_CURVE_KEY_BYTES && b->curve) {
            char z85[ZB_CURVE_Z85_CHARS + 1];
            snprintf(who, sizeof who, "key %s", zb_curve_z85(n->key.b, z85));
        } else {
            char hex[40];
            snprintf(who, sizeof who, "%s", s_rid_hex(&n->key, hex));
        }
        ZB_LOG(ZB_LOG_INFO,
               "client %s: %s (%llu bytes of its parts not yet taken, "
               "client-bytes-max %llu)",
               who, over ? "its work pauses" : "its work resumes",
               (unsigned long long)s_meter_bytes(o->meter),
               (unsigned long long)b->cfg.client_bytes_max);
    }
}

/*
 * Takes back the shards that have been on w for shard-timeout-ms (oldest
 * first: the in-flight list is in dispatch order).  The worker keeps its
 * registration; its credit for each is given back.
 */
static void s_check_shard_timeouts(zb_broker_t *b, s_worker_t *w, uint64_t now) {
    while (w->flight_head && now - w->flight_head->sent_ms >= b->cfg.shard_timeout_ms) {
        s_shard_t *sh = w->flight_head;
        ZB_LOG(ZB_LOG_WARN,
               "worker %s: shard %llu unanswered for %llu ms (shard-timeout-ms); it goes back to "
               "the queue and the worker's credit for it is given back",
               w->label, (unsigned long long)sh->id, (unsigned long long)(now - sh->sent_ms));
        w->late[w->late_next] = sh->id;
        w->late_next = (w->late_next + 1) % S_LATE_IDS;
        s_flight_detach(b, sh);
        s_shard_take_back(b, sh, true);
    }
}

/* --- allow-lists ------------------------------------------------------------------ */

/* Applies a list that lost keys to the connections already made: a client
 * whose key is gone has its requests ended with `forbidden`, a worker is
 * forgotten (its shards go back to the queue, no failure counted). */
static void s_revoke(zb_broker_t *b, zb_zap_endpoint_t e) {
    const zb_allow_t *a = b->allow[e];
    if (e == ZB_ZAP_WORKERS) {
        for (s_worker_t *w = b->workers, *next; w; w = next) {
            next = w->next;
            if (!zb_allow_has(a, w->key))
                s_worker_forget(b, w, false, "its key was removed from allow-workers");
        }
        return;
    }
    /* What waits in the broker for a connection of a revoked key (parts
     * among it) is not sent any more; only the `forbidden` below is. */
    for (zb_idmap_node_t *n = zb_idmap_first(b->conns), *next; n; n = next) {
        next = zb_idmap_next(b->conns, n);
        s_conn_t *c = (s_conn_t *)n;
        if (!c->has_key || zb_allow_has(a, c->key)) continue;
        while (c->n_held > 0) s_held_pop(b, c);
        s_conn_release(b, c);
    }
    /* Owners are keys under CurveZMQ.  Ending one owner's requests frees
     * that owner's record and no other (a conn is not an owner). */
    for (zb_idmap_node_t *n = zb_idmap_first(b->owners), *next; n; n = next) {
        next = zb_idmap_next(b->owners, n);
        if (n->key.len == ZB_CURVE_KEY_BYTES && !zb_allow_has(a, n->key.b))
            s_owner_forbid(b, (s_owner_t *)n);
    }
}

/* Reads endpoint e's allow-list again (cause: what asked for it, for the
 * log) and applies what was removed. */
static void s_allow_reload(zb_broker_t *b, zb_zap_endpoint_t e, const char *cause) {
    zb_allow_t *a = b->allow[e];
    zb_allow_diff_t diff;
    zb_diag_t d = {{0}};
    b->allow_due[e] = false;
    int rc = zb_allow_reload(a, &diff, &d);
    if (rc < 0) {
        ZB_LOG(ZB_LOG_WARN, "%s: %s; its %zu keys stay as they were", zb_allow_label(a),
               zb_diag_text(&d, rc), zb_allow_count(a));
        return;
    }
    ZB_LOG(ZB_LOG_INFO, "%s: reloaded (%s): %zu keys, %zu added, %zu removed, %zu files skipped",
           zb_allow_label(a), cause, diff.keys, diff.added, diff.removed, diff.skipped);
    if (diff.removed > 0) s_revoke(b, e);
}

/* Reloads the lists an inotify event, a changed mtime or *reload asked for. */
static void s_allow_check(zb_broker_t *b, uint64_t now, bool all, const char *cause) {
    bool check = now >= b->next_allow_check_ms;
    if (check) b->next_allow_check_ms = now + ZB_BROKER_ALLOW_CHECK_MS;
    for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++) {
        if (all)
            s_allow_reload(b, (zb_zap_endpoint_t)e, cause);
        else if (b->allow_due[e] && now >= b->allow_due_ms[e])
            s_allow_reload(b, (zb_zap_endpoint_t)e, "its directory changed");
        else if (check && zb_allow_stale(b->allow[e]))
            s_allow_reload(b, (zb_zap_endpoint_t)e, "its directory's mtime changed");
    }
}

static void s_tick(zb_broker_t *b, uint64_t now) {
    zb_deadline_item_t *first;
    while ((first = zb_deadline_first(b->deadlines)) != NULL && first->at <= now) {
        s_request_t *r = (s_request_t *)first; /* failing it takes it out of the heap */
        s_request_fail(b, r, ZB_MSG_CODE_TIMEOUT, "the deadline of %llu ms passed",
                       (unsigned long long)r->msg.u.embed.deadline_ms);
    }
    if (now >= b->next_tick_ms) {
        b->next_tick_ms = now + S_TICK_MS;
        for (s_worker_t *w = b->workers, *next; w; w = next) {
            next = w->next;
            if (now - w->last_recv_ms >= ZB_BROKER_WORKER_DEAD_MS) {
                char why[64];
                snprintf(why, sizeof why, "silent for %llu ms",
                         (unsigned long long)(now - w->last_recv_ms));
                s_worker_forget(b, w, true, why);
                continue;
            }
            s_check_shard_timeouts(b, w, now);
            if (now - w->last_send_ms < ZB_BROKER_HEARTBEAT_MS) continue;
            uint8_t *body = NULL;
            size_t len = 0;
            if (zb_msg_encode_empty(ZB_MSG_HEARTBEAT, &body, &len, NULL) < 0) continue;
            if (s_worker_send(b, w, body, len, now) < 0)
                s_worker_forget(b, w, true, errno == EAGAIN ? "not reading its messages" : "gone");
        }
    }
    if (now >= b->next_orphan_ms) {
        b->next_orphan_ms = now + S_ORPHAN_CHECK_MS;
        s_check_orphans(b, now);
        s_check_budgets(b);
    }
    if (b->curve) {
        zb_zap_tick(b->zap, now);
        s_allow_check(b, now, false, NULL);
    }
}

/* --- life cycle ------------------------------------------------------------- */

/* The ZAP handler's question: is key on endpoint e's allow-list now? */
static bool s_zap_allowed(void *arg, zb_zap_endpoint_t e, const uint8_t key[ZB_CURVE_KEY_BYTES]) {
    const zb_broker_t *b = arg;
    return (unsigned)e < ZB_ZAP_ENDPOINTS && zb_allow_has(b->allow[e], key);
}

/* A ROUTER bound at endpoint; with cert, a CurveZMQ server whose
 * handshakes the ZAP handler decides under the domain what. */
static int s_socket(zb_broker_t *b, void **out, const char *endpoint, int sndhwm, int rcvhwm,
                    const char *what, const zb_curve_cert_t *cert, zb_diag_t *d) {
    void *s = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (s == NULL) return zb_diag_set(d, ZB_EIO, "%s socket: %s", what, zmq_strerror(errno));
    *out = s;
    int64_t maxmsg = S_MAXMSGSIZE;
    int zero = 0, one = 1;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one) < 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm) < 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm) < 0)
        return zb_diag_set(d, ZB_EIO, "%s socket options: %s", what, zmq_strerror(errno));
    if (cert != NULL) {
        int rc = zb_curve_server_socket(s, cert, what, d);
        if (rc < 0) return rc;
        /* Defence in depth: the handler is bound before this socket, but a
         * libzmq that takes the option refuses rather than admits should
         * it ever be missing. */
        if (zmq_setsockopt(s, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) < 0)
            ZB_LOG(ZB_LOG_DEBUG, "%s: ZMQ_ZAP_ENFORCE_DOMAIN: %s", what, zmq_strerror(errno));
    }
    if (zmq_bind(s, endpoint) < 0)
        return zb_diag_set(d, ZB_EIO, "%s: cannot bind %s: %s", what, endpoint,
                           zmq_strerror(errno));
    return 0;
}

/* libzmq (4.3.x) names a ROUTER's peers that announce no routing id
 * 0x00 + a 32-bit count that starts at a value drawn from rand() when the
 * socket is made.  Unseeded, rand() gives the same start after every
 * restart (006b8b4567 on the first socket), and a peer that claims the
 * next name itself (ZMQ_ROUTING_ID) makes libzmq abort the whole process
 * when an ordinary peer then connects: router_t asserts that the name it
 * generated is unused.  libzmq cannot be told to refuse the claim, so the
 * start is made unguessable instead: rand() is seeded from the kernel's
 * random pool before the sockets exist.  The broker itself never calls
 * rand(), and routing ids are never sent to peers. */
static void s_seed_routing_ids(void) {
    unsigned int seed;
    zb_random_bytes(&seed, sizeof seed);
    srand(seed);
}

bool zb_broker_endpoint_local(const char *endpoint) {
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0) return true;
    if (strncmp(endpoint, "tcp://", 6) != 0) return false;
    /* "tcp://[source;]address:port": the address is what is bound. */
    const char *host = endpoint + 6, *semi = strrchr(host, ';');
    if (semi != NULL) host = semi + 1;
    const char *colon = strrchr(host, ':');
    if (colon == NULL) return false;
    char h[256];
    size_t n = (size_t)(colon - host);
    if (n == 0 || n >= sizeof h) return false;
    memcpy(h, host, n);
    h[n] = '\0';
    if (h[0] == '[') {
        if (n < 3 || h[n - 1] != ']') return false;
        memmove(h, h + 1, n - 2);
        h[n - 2] = '\0';
    }
    if (strcasecmp(h, "localhost") == 0) return true;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

/* The security settings fit together, and without CurveZMQ no endpoint is
 * open to other hosts unless the operator said so (Redis' protected mode). */
static int s_check_security(const zb_broker_config_t *c, zb_diag_t *d) {
    bool curve = c->curve_key[0] != '\0';
    if (curve && (c->allow_clients[0] == '\0' || c->allow_workers[0] == '\0'))
        return zb_diag_set(d, ZB_EINVAL,
                           "curve-key needs allow-clients and allow-workers, the directories of "
                           "the .pub files of the clients and workers that may connect (an empty "
                           "one allows nobody)");
    if (!curve && (c->allow_clients[0] != '\0' || c->allow_workers[0] != '\0'))
        return zb_diag_set(d, ZB_EINVAL,
                           "allow-clients and allow-workers need curve-key: without CurveZMQ no "
                           "key is checked, so they would protect nothing");
    const char *eps[2] = {c->clients, c->workers};
    for (int i = 0; i < 2 && !curve && !c->insecure; i++)
        if (!zb_broker_endpoint_local(eps[i]))
            return zb_diag_set(d, ZB_EINVAL,
                               "refusing to bind %s without CurveZMQ (other hosts could use the "
                               "broker): make keys with `zbert keygen` and give --curve-key, "
                               "--allow-clients and --allow-workers, or give --insecure",
                               eps[i]);
    return 0;
}

/* With curve-key: the broker's key (into *cert), the allow-lists and the
 * ZAP handler, bound before the ROUTERs are. */
static int s_security_start(zb_broker_t *b, zb_curve_cert_t *cert, zb_diag_t *d) {
    if (!zb_curve_available())
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "curve-key: this libzmq has no CURVE support (built without "
                           "libsodium)");
    int rc = zb_curve_load(b->cfg.curve_key, true, cert, d);
    if (rc < 0) return rc;
    const char *dirs[ZB_ZAP_ENDPOINTS] = {b->cfg.allow_clients, b->cfg.allow_workers};
    const char *labels[ZB_ZAP_ENDPOINTS] = {"allow-clients", "allow-workers"};
    for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++) {
        zb_allow_diff_t diff;
        if ((rc = zb_allow_new(dirs[e], labels[e], &b->allow[e], &diff, d)) < 0) return rc;
        ZB_LOG(diff.keys ? ZB_LOG_INFO : ZB_LOG_WARN, "%s: %zu keys in %s%s", labels[e], diff.keys,
               dirs[e], diff.keys ? "" : ": nobody can connect there until keys are added");
    }
    /* One directory for both: every client key may serve as a worker (and
     * receive texts), which two lists exist to prevent. */
    char *rc_dir = realpath(dirs[0], NULL), *rw_dir = realpath(dirs[1], NULL);
    if (rc_dir && rw_dir && strcmp(rc_dir, rw_dir) == 0)
        ZB_LOG(ZB_LOG_WARN, "allow-clients and allow-workers are one directory: every client "
                            "key may also connect as a worker");
    free(rc_dir);
    free(rw_dir);
    if ((rc = zb_zap_bind(b->ctx, &b->zap_sock, d)) < 0) return rc;
    b->curve = true;
    return 0;
}

int zb_broker_new(const zb_broker_config_t *cfg, zb_broker_t **out, zb_diag_t *d) {
    *out = NULL;
    if (cfg->shard_texts_max < 1 || cfg->shard_texts_max > ZB_BROKER_SHARD_TEXTS_MAX ||
        cfg->request_texts_max < 1 || cfg->request_texts_max > ZB_MSG_TEXTS_MAX ||
        cfg->shard_tokens_max < 1 || cfg->client_requests_max < 1 || cfg->client_hwm < 1 ||
        cfg->shard_timeout_ms < 1 || cfg->client_hwm > INT32_MAX)
        return zb_diag_set(d, ZB_EINVAL, "broker settings out of range");
    zb_broker_t *b = calloc(1, sizeof *b);
    if (b == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    b->cfg = *cfg;
    b->cfg.clients[sizeof b->cfg.clients - 1] = '\0';
    b->cfg.workers[sizeof b->cfg.workers - 1] = '\0';
    b->cfg.curve_key[sizeof b->cfg.curve_key - 1] = '\0';
    b->cfg.allow_clients[sizeof b->cfg.allow_clients - 1] = '\0';
    b->cfg.allow_workers[sizeof b->cfg.allow_workers - 1] = '\0';
    b->start_ms = zb_clock_ms();
    zb_curve_cert_t cert;
    memset(&cert, 0, sizeof cert);
    int rc;
    if ((rc = s_check_security(&b->cfg, d)) < 0) goto fail;
    if (zb_queue_new(&b->queue) < 0 || zb_stats_new(b->start_ms, &b->stats) < 0 ||
        zb_idmap_new(&b->owners) < 0 || zb_idmap_new(&b->conns) < 0 ||
        zb_idmap_new(&b->workers_by_rid) < 0 || zb_deadline_new(&b->deadlines) < 0 ||
        zb_zap_new(&b->zap) < 0) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
        goto fail;
    }
    b->ctx = zmq_ctx_new();
    if (b->ctx == NULL) {
        rc = zb_diag_set(d, ZB_EIO, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    s_seed_routing_ids();
    if (b->cfg.curve_key[0] != '\0' && (rc = s_security_start(b, &cert, d)) < 0) goto fail;
    /* Frontend: S_FRONT_SNDHWM messages towards a client in ZeroMQ, the
     * rest held (and counted) by the broker; inbound, a few hundred
     * requests per client.  Backend:
     * tasks are bounded by credit (plus heartbeats), results by the
     * worker's credit too. */
    int back_hwm = 2 * (int)ZB_MSG_CREDIT_MAX + 64;
    const zb_curve_cert_t *c = b->curve ? &cert : NULL;
    if ((rc = s_socket(b, &b->front, b->cfg.clients, S_FRONT_SNDHWM, 1000,
                       zb_zap_domain(ZB_ZAP_CLIENTS), c, d)) < 0 ||
        (rc = s_socket(b, &b->back, b->cfg.workers, back_hwm, back_hwm,
                       zb_zap_domain(ZB_ZAP_WORKERS), c, d)) < 0)
        goto fail;
    /* A client that reconnects under its own routing id (PROTOCOL.md 1)
     * takes it over from a connection the broker has not yet seen die,
     * rather than being ignored until then. */
    int one = 1;
    if (zmq_setsockopt(b->front, ZMQ_ROUTER_HANDOVER, &one, sizeof one) < 0) {
        rc = zb_diag_set(d, ZB_EIO, "clients socket: ZMQ_ROUTER_HANDOVER: %s", zmq_strerror(errno));
        goto fail;
    }
    explicit_bzero(&cert, sizeof cert); /* libzmq holds its own copy */
    b->next_tick_ms = b->start_ms;
    b->next_orphan_ms = b->start_ms + S_ORPHAN_CHECK_MS;
    b->next_allow_check_ms = b->start_ms + ZB_BROKER_ALLOW_CHECK_MS;
    ZB_LOG(ZB_LOG_INFO, "clients on %s, workers on %s, %s", b->cfg.clients, b->cfg.workers,
           b->curve ? "CurveZMQ on both" : "without CurveZMQ");
    const char *eps[2] = {b->cfg.clients, b->cfg.workers};
    for (int i = 0; i < 2 && !b->curve; i++)
        if (!zb_broker_endpoint_local(eps[i]))
            ZB_LOG(ZB_LOG_WARN,
                   "%s is reachable from other hosts without CurveZMQ (insecure): any peer that "
                   "reaches it can use the broker",
                   eps[i]);
    *out = b;
    return 0;
fail:
    explicit_bzero(&cert, sizeof cert);
    zb_broker_destroy(&b);
    return rc;
}

int zb_broker_run(zb_broker_t *b, volatile sig_atomic_t *stop, volatile sig_atomic_t *reload) {
    int rc = 0;
    for (;;) {
        uint64_t now = zb_clock_ms();
        if (reload != NULL && *reload) {
            *reload = 0;
            if (b->curve)
                s_allow_check(b, now, true, "SIGHUP");
            else
                ZB_LOG(ZB_LOG_INFO, "SIGHUP: nothing to reload without curve-key");
        }
        if (*stop >= 1 && !b->draining) {
            b->draining = true;
            b->drain_until_ms = now + b->cfg.drain_ms;
            size_t told = s_tell_closing(b);
            ZB_LOG(ZB_LOG_INFO,
                   "stopping: closing sent to %zu clients of %llu open requests; %llu shards on "
                   "workers deliver their parts for at most %llu ms",
                   told, (unsigned long long)b->n_requests, (unsigned long long)b->in_flight,
                   (unsigned long long)b->cfg.drain_ms);
        }
        /* The drain ends when nothing more can reach a client: no shard on
         * a worker, nothing held for a connected client. */
        if (*stop >= 2 || (b->draining &&
                           ((b->in_flight == 0 && b->holding == NULL) || now >= b->drain_until_ms)))
            break;
        s_flush_held(b);
        uint64_t wake = b->next_tick_ms;
        zb_deadline_item_t *first = zb_deadline_first(b->deadlines);
        if (first && first->at < wake) wake = first->at;
        if (b->holding && now + S_HELD_RETRY_MS < wake) wake = now + S_HELD_RETRY_MS;
        /* With CurveZMQ: the ZAP handler and the allow-lists' watches. */
        zmq_pollitem_t items[2 + 1 + ZB_ZAP_ENDPOINTS] = {{b->back, 0, ZMQ_POLLIN, 0},
                                                          {b->front, 0, ZMQ_POLLIN, 0}};
        int n_items = 2, i_allow[ZB_ZAP_ENDPOINTS] = {-1, -1};
        if (b->curve) {
            items[n_items++] = (zmq_pollitem_t){b->zap_sock, 0, ZMQ_POLLIN, 0};
            for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++) {
                int fd = zb_allow_fd(b->allow[e]);
                if (fd >= 0) {
                    i_allow[e] = n_items;
                    items[n_items++] = (zmq_pollitem_t){NULL, fd, ZMQ_POLLIN, 0};
                }
                if (b->allow_due[e] && b->allow_due_ms[e] < wake) wake = b->allow_due_ms[e];
            }
        }
        long timeout = wake > now ? (long)(wake - now) : 0;
        if (zmq_poll(items, n_items, timeout) < 0) {
            if (errno == EINTR) continue;
            ZB_LOG(ZB_LOG_ERROR, "zmq_poll: %s", zmq_strerror(errno));
            rc = ZB_EIO;
            break;
        }
        if (b->curve) {
            /* Handshakes first: a connection accepted now sends its first
             * message in this turn's batch rather than the next one's. */
            if (items[2].revents & ZMQ_POLLIN)
                zb_zap_serve(b->zap, b->zap_sock, s_zap_allowed, b, S_ZAP_BATCH, zb_clock_ms());
            for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++) {
                if (i_allow[e] < 0 || !(items[i_allow[e]].revents & ZMQ_POLLIN)) continue;
                if (zb_allow_events(b->allow[e]) && !b->allow_due[e]) {
                    b->allow_due[e] = true;
                    b->allow_due_ms[e] = zb_clock_ms() + S_ALLOW_SETTLE_MS;
                }
            }
        }
        if (items[0].revents & ZMQ_POLLIN) s_back_readable(b);
        if (items[1].revents & ZMQ_POLLIN) s_front_readable(b);
        s_tick(b, zb_clock_ms());
        s_dispatch(b);
    }
    if (b->n_requests > 0)
        ZB_LOG(ZB_LOG_INFO,
               "stopped with %llu open requests; their clients were told closing and send them "
               "again elsewhere",
               (unsigned long long)b->n_requests);
    /* Without a word: closing said it all (s_request_fail is silent now). */
    b->draining = true;
    while (b->open) s_request_fail(b, b->open, ZB_MSG_CODE_INTERNAL, "the broker stopped");
    /* Messages still held get the linger time to find room. */
    for (uint64_t until = zb_clock_ms() + S_FRONT_LINGER_MS; b->holding && zb_clock_ms() < until;) {
        s_flush_held(b);
        if (b->holding) zmq_poll(NULL, 0, S_HELD_RETRY_MS);
    }
    if (b->holding) ZB_LOG(ZB_LOG_WARN, "stopping with messages for clients not reading them");
    /* Let those errors leave before the socket closes. */
    int linger = S_FRONT_LINGER_MS;
    zmq_setsockopt(b->front, ZMQ_LINGER, &linger, sizeof linger);
    ZB_LOG(ZB_LOG_INFO, "stopped");
    return rc;
}

void zb_broker_destroy(zb_broker_t **pb) {
    if (pb == NULL || *pb == NULL) return;
    zb_broker_t *b = *pb;
    /* Requests first (closed ones stay while on workers), then workers,
     * which frees the closed requests with their last shards. */
    while (b->open) s_request_close_release(b, b->open, false);
    while (b->workers) s_worker_forget(b, b->workers, false, NULL);
    while (b->holding) {
        s_conn_t *c = b->holding;
        while (c->n_held > 0) s_held_pop(b, c); /* unlinks c at the last */
        s_conn_release(b, c);
    }
    /* Requests re-queued by the last loop were all closed above: the owner
     * and conn tables are empty now. */
    if (b->front) zmq_close(b->front);
    if (b->back) zmq_close(b->back);
    /* The handler goes last: a CurveZMQ socket must never outlive it. */
    if (b->zap_sock) zmq_close(b->zap_sock);
    if (b->ctx) zmq_ctx_term(b->ctx);
    for (int e = 0; e < ZB_ZAP_ENDPOINTS; e++) zb_allow_destroy(&b->allow[e]);
    zb_zap_destroy(&b->zap);
    if (b->spare_body) free(b->spare_body);
    zb_idmap_destroy(&b->owners);
    zb_idmap_destroy(&b->conns);
    zb_idmap_destroy(&b->workers_by_rid);
    zb_deadline_destroy(&b->deadlines);
    zb_queue_destroy(&b->queue);
    zb_stats_destroy(&b->stats);
    free(b);
    *pb = NULL;
}
