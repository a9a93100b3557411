/*
 * zbert.h -- libzbert, the C client of the zbert embedding service.
 *
 * A client talks to a zbert-broker (proto/PROTOCOL.md) over one ZeroMQ
 * DEALER socket, encrypted with CurveZMQ when configured (zbert_config_t).
 * It offers
 *   - an asynchronous API: zbert_submit() sends a request (texts + options)
 *     and returns at once with a request handle; many requests may be open
 *     at a time; zbert_next() waits for the next event: a PART (results of
 *     a run of consecutive texts of one request, in whatever order the
 *     broker's workers finish them), then exactly one DONE or ERROR per
 *     request;
 *   - a reassembly helper (zbert_reorder_*) that turns those events into
 *     per-text results in submission order, handing out each text as soon
 *     as every text before it has arrived, so that a job of any size
 *     streams through bounded memory;
 *   - a blocking call, zbert_embed(): texts in, one result per text out;
 *   - zbert_status(): the broker's workers, queues, rates and latency.
 *
 * Delivery.  Every text of a request is delivered exactly once: in one PART
 * event, or as a missing text of a request that failed (ERROR).  Every
 * request ends with exactly one DONE or ERROR event, after its PART events;
 * nothing follows it.  Vectors are copied out of the wire message into
 * properly aligned float arrays owned by the event.
 *
 * Identity.  Every socket the client opens (reconnections and failover
 * included) carries the same ZeroMQ routing id, 16 random bytes drawn when
 * the client is created, so that a broker knows a reconnected client for
 * the owner of its requests (PROTOCOL.md 10).
 *
 * Retry (Lazy Pirate, with resumption).  While a request is open, a broker
 * that sends nothing at all for ping_ms is pinged (a `status` message); a
 * broker that then stays silent for retry_ms in all is presumed gone: an
 * outage begins.  The socket is closed and reopened, to the next endpoint
 * when several are configured, under the same routing id, and a ping goes
 * out first: its answer lists the requests that broker still holds
 * (`open`), which are not sent again (their results come); every other
 * open request is sent again under its id with `have`, the texts already
 * received, so that nothing delivered is computed twice.  While no broker
 * answers, reconnections follow at growing intervals (retry_ms x 2, x 4,
 * ... up to 30 s, each 20 % more or less at random, so that clients cut
 * off together do not come back together), cycling through the brokers.
 * Only when no broker has answered for outage_ms do the open requests fail,
 * with ZBERT_ETIMEOUT.  A broker that says it is stopping (`closing`) is
 * left at once for the next endpoint; with a single endpoint the client
 * waits for it to come back (the same outage budget) and sends again what
 * it lost.  A broker that restarted behind the same endpoint is noticed
 * from its uptime and is sent the requests it cannot know.  Results
 * already received are kept and repeated texts are dropped, so the caller
 * still sees each text once.  A `busy` answer (the broker's queue is full)
 * is retried after a growing delay, for as long as the request's deadline
 * allows; `no_model` (no worker for the model connected, as right after a
 * broker starts) is retried every ping_ms, `tries` times.  A slow broker
 * that keeps answering pings is waited for: only a deadline bounds how
 * long a request takes.
 *
 * Models.  Every part of a request comes from workers of one model, whose
 * identity the broker names in each part (protocol 1.3; the id `zbert
 * status` and `zbert-model inspect` show): the client checks that they
 * agree, reports it in PART and DONE events, and pins a request it sends
 * again to the model its first results came from.  zbert_options_t.model
 * pins a request from the start.
 *
 * Timers run inside zbert_next(), zbert_embed() and zbert_status(): a
 * caller that stops calling them for longer than retry_ms only delays the
 * retry logic, it cannot make it fire wrongly (the socket is read before a
 * broker is declared gone).
 *
 * Memory.  The caller bounds what a client holds: requests_max open
 * requests, texts_max texts and bytes_max text bytes in them (the texts of
 * an open request are kept for resending); zbert_submit() answers
 * ZBERT_EBUSY beyond that, until events have been taken.  Each open request
 * also keeps one bit per text.  Events not yet taken are results the broker
 * sent for open requests.
 *
 * Errors.  Functions that can fail return 0 or a negative ZBERT_E* code;
 * those that take a zbert_diag_t also write a sentence naming the problem
 * there (when it is not NULL).
 *
 * Thread-safety.  A client, a reorder and a result belong to one thread at
 * a time; distinct clients are independent (each has its own ZeroMQ
 * context).  Events and results may be passed between threads.
 */
#ifndef ZBERT_H
#define ZBERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --- errors -------------------------------------------------------------- */

/* The service's error space (the same values as its internal codes). */
enum {
    ZBERT_OK = 0,
    ZBERT_ENOMEM = -1,       /* an allocation failed */
    ZBERT_EINVAL = -2,       /* an argument outside the contract */
    ZBERT_EIO = -3,          /* a socket or the system failed; also a worker fault */
    ZBERT_EFORMAT = -4,      /* malformed bytes */
    ZBERT_ELIMIT = -5,       /* a limit exceeded: message, texts, one text */
    ZBERT_EUTF8 = -6,        /* a text is not valid UTF-8 */
    ZBERT_ENOTFOUND = -7,    /* no worker serves the model (`no_model`) */
    ZBERT_EUNSUPPORTED = -8, /* the broker speaks another protocol version; or,
                              * for one text, the options cannot take it */
    ZBERT_EPROTO = -10,      /* the broker broke, or refused, the protocol */
    ZBERT_EBUSY = -11,       /* too much open: take events first */
    ZBERT_ETIMEOUT = -12,    /* a deadline passed, or no answer after every try */
    ZBERT_ECANCELED = -13,   /* cancelled by zbert_cancel() */
    ZBERT_EDENIED = -14,     /* the broker refused this client's key (`forbidden`) */
};

/* A static description of a ZBERT_E* code (never NULL). */
const char *zbert_strerror(int code);

/* One sentence about the last failure, filled by the function that failed. */
typedef struct zbert_diag {
    char msg[256]; /* NUL-terminated; empty when nothing was said */
} zbert_diag_t;

/* --- options ------------------------------------------------------------- */

typedef enum zbert_level {
    ZBERT_LEVEL_TOKEN = 0, /* one row per whitespace/punctuation token (default) */
    ZBERT_LEVEL_WORDPIECE, /* every row of the last layer, [CLS] and [SEP] included */
    ZBERT_LEVEL_SENTENCE,  /* one pooled row per text */
} zbert_level_t;

typedef enum zbert_pooling {
    ZBERT_POOLING_CLS = 0, /* the [CLS] row (default) */
    ZBERT_POOLING_MEAN,    /* the mean of the wordpiece rows */
} zbert_pooling_t;

typedef enum zbert_token_vector {
    ZBERT_TOKEN_VECTOR_FIRST = 0, /* a token's row is its first wordpiece's (default) */
    ZBERT_TOKEN_VECTOR_MEAN,      /* the mean of its wordpieces' rows */
} zbert_token_vector_t;

typedef enum zbert_compat {
    ZBERT_COMPAT_NONE = 0, /* default */
    ZBERT_COMPAT_SPARKNLP, /* Spark NLP 2.6.4-2.7.5 BertEmbeddings, quirks included */
} zbert_compat_t;

/* What to compute for a request.  All zero: token level, no normalisation,
 * truncation at 512 wordpieces, no deadline.  The fields after deadline_ms
 * need brokers and workers of protocol 1.1 (PROTOCOL.md 9): an older one
 * ignores them, which the client notices only for token metadata (the
 * request fails with ZBERT_EPROTO). */
typedef struct zbert_options {
    zbert_level_t level;
    zbert_pooling_t pooling;           /* sentence level only */
    bool normalize;                    /* L2-normalise every vector */
    bool windows;                      /* long texts: overlapping windows, not truncation */
    uint32_t deadline_ms;              /* give up this long after submitting; 0: never */
    bool sentences;                    /* token, wordpiece: each sentence its own sequence */
    zbert_token_vector_t token_vector; /* token level */
    zbert_compat_t compat;             /* token level only */
    bool token_meta;                   /* token level: rows carry metadata (implied by
                                        * sentences and compat) */
    const char *model;                 /* only workers of this model identity (1 to
                                        * 256 bytes of UTF-8; copied) serve it; NULL:
                                        * any.  Needs brokers of protocol 1.3: results
                                        * naming no model fail the request (EPROTO) */
} zbert_options_t;

/* --- the client ---------------------------------------------------------- */

typedef struct zbert_client zbert_client_t;

/* Settings of a client.  Zero fields take the defaults in brackets. */
typedef struct zbert_config {
    const char *const *brokers; /* [n_brokers] ZeroMQ endpoints of the broker's
                                 * client socket, e.g. "tcp://127.0.0.1:5555";
                                 * copied.  Requests go to one at a time; the
                                 * next one takes over when it goes silent */
    size_t n_brokers;           /* 1 or more */
    uint32_t retry_ms;          /* silence after which a broker is presumed
                                 * gone [3000]; 50 at least */
    uint32_t ping_ms;           /* silence after which it is pinged
                                 * [retry_ms / 4]; below retry_ms */
    uint32_t tries;             /* `no_model` answers a request takes before
                                 * it fails [3].  Silence no longer counts
                                 * tries: outage_ms bounds it */
    size_t requests_max;        /* open requests [64] */
    size_t texts_max;           /* texts in open requests [1,000,000] */
    size_t bytes_max;           /* text bytes in open requests [1 GiB] */
    /* CurveZMQ: every connection encrypted, the broker proven to hold the
     * secret of its public key, and this client's public key shown to the
     * broker (which decides whether to let it in).  curve_key and
     * broker_keys go together: both set, or neither (plain connections).
     * The files are those `zbert keygen` writes (CZMQ certificates,
     * proto/curve.h); zbert_client_new() reads them, keeps the keys for
     * the sockets it opens later (failover), and never reads them again. */
    const char *curve_key;          /* path of this client's secret key file
                                     * (NAME.key; refused when others may read
                                     * it), or NULL: no CURVE */
    const char *const *broker_keys; /* [n_broker_keys] paths of the brokers'
                                     * public key files (NAME.pub): one for
                                     * every endpoint of brokers, or one per
                                     * endpoint, in the order of brokers */
    size_t n_broker_keys;           /* 0 without curve_key; else 1 or n_brokers */
    uint32_t outage_ms;             /* how long open requests wait while no
                                     * broker answers (silent, unreachable, or
                                     * stopping) before they fail with
                                     * ZBERT_ETIMEOUT [300000]; at least
                                     * retry_ms */
} zbert_config_t;

/*
 * Creates a client connected to cfg->brokers[0].  Connecting is
 * asynchronous: nothing waits for the broker here.  With CURVE the key
 * files are read and checked first.  *out is the caller's, released with
 * zbert_client_destroy().  Returns 0, ZBERT_EINVAL (a setting out of range,
 * an endpoint ZeroMQ refuses, a key file missing, unreadable, malformed or
 * readable by others, curve_key without broker_keys or the reverse, a count
 * of broker_keys that is neither 1 nor n_brokers: d says which),
 * ZBERT_EUNSUPPORTED (CURVE asked of a libzmq built without it),
 * ZBERT_ENOMEM or ZBERT_EIO.
 *
 * A broker whose public key is not the one given, or that refuses this
 * client's key, never completes the CURVE handshake: to the client it is a
 * silent broker (requests fail with ZBERT_ETIMEOUT after outage_ms).
 */
int zbert_client_new(const zbert_config_t *cfg, zbert_client_t **out, zbert_diag_t *d);

/* Cancels every open request at the broker (best effort, waiting at most a
 * quarter second for the messages to leave), closes the socket and frees
 * the client with its queued events (its secret key overwritten with zeros
 * first).  NULL-safe; sets *c to NULL. */
void zbert_client_destroy(zbert_client_t **c);

/*
 * Sends a request for texts[0..n) (lens[i] bytes each; lens NULL: each text
 * is NUL-terminated).  The texts are copied; their bytes are not checked
 * here (a text that is not UTF-8 or is over 1 MiB fails alone, as a per-text
 * error of its PART).  opt NULL: the defaults.  user is handed back in every
 * event of the request.
 *
 * On success *request is the request's handle: unique within the client,
 * never 0.  Returns 0; ZBERT_EBUSY when the client holds requests_max open
 * requests or the texts would exceed texts_max or bytes_max (take events,
 * then submit again); ZBERT_ELIMIT when the request can never fit (n over
 * 100,000 or texts_max, bytes over bytes_max, the message over 256 MiB);
 * ZBERT_EINVAL (n == 0, NULL arguments, options out of range, a model
 * identity of 0 or over 256 bytes, or not UTF-8); ZBERT_ENOMEM;
 * ZBERT_EIO (the socket failed: the client should be destroyed).
 * A socket that cannot take the message now is not an error: the request
 * is sent from zbert_next().
 */
int zbert_submit(zbert_client_t *c, const char *const *texts, const size_t *lens, size_t n,
                 const zbert_options_t *opt, void *user, uint64_t *request, zbert_diag_t *d);

/*
 * Cancels an open request: the broker is told to drop it, and its next and
 * last event is an ERROR with ZBERT_ECANCELED (PART events not yet taken
 * are dropped).  Returns 0, also when the request is no longer open (its
 * DONE or ERROR was or will be returned: nothing changes).
 */
int zbert_cancel(zbert_client_t *c, uint64_t request);

/* Open requests: submitted, their DONE or ERROR not yet returned. */
size_t zbert_open_requests(const zbert_client_t *c);

/* --- events -------------------------------------------------------------- */

typedef enum zbert_event_type {
    ZBERT_EVENT_PART = 1, /* results of texts first .. first+count-1 */
    ZBERT_EVENT_DONE,     /* the request is complete: every text was delivered */
    ZBERT_EVENT_ERROR,    /* the request failed: no more of its texts come */
} zbert_event_type_t;

/*
 * One event.  Read-only for the caller, who owns it after zbert_next() and
 * frees it with zbert_event_destroy().  Fields of the other types are zero.
 */
typedef struct zbert_event {
    zbert_event_type_t type;
    uint64_t request; /* the handle zbert_submit() returned */
    const char *id;   /* the request's wire id (NUL-terminated) */
    void *user;       /* as given to zbert_submit() */
    /* PART: a run of consecutive texts, never one delivered before */
    uint32_t first; /* index of its first text in the request */
    uint32_t count; /* texts: 1 or more */
    zbert_level_t level;
    uint32_t dim;         /* floats per vector */
    uint64_t n_rows;      /* vectors of all count texts */
    const float *vectors; /* [n_rows * dim], text after text, 64-byte
                           * aligned; per text through zbert_event_text() */
    /* DONE: the broker's counts (0 when the client completed the request
     * itself because every text had arrived before a resend) */
    uint64_t texts;      /* texts of the request */
    uint64_t tokens;     /* tokens through the encoder */
    uint64_t parts;      /* part messages the broker sent */
    uint64_t elapsed_ms; /* broker's time from receipt to done */
    /* ERROR */
    int code;              /* ZBERT_E*: ETIMEOUT, ECANCELED, ENOTFOUND,
                            * ELIMIT, EPROTO, EUNSUPPORTED, EIO, ... */
    const char *code_name; /* the protocol's name ("no_model", "timeout"),
                            * or "client" for a failure seen by the client */
    const char *message;   /* one sentence for people */
    /* PART and DONE: the identity of the model that made the request's
     * results (NULL when the broker does not name it: protocol before
     * 1.3, or a DONE the client made itself before any part came) */
    const char *model;
} zbert_event_t;

/* The result of one text, as views into the event (or result, or reorder)
 * that holds it. */
typedef struct zbert_text {
    uint64_t request;      /* its request */
    void *user;            /* the request's user pointer */
    uint32_t index;        /* in its request */
    uint64_t seq;          /* in a reorder: position in the whole stream;
                            * in a blocking result: index in the call;
                            * else equal to index */
    int status;            /* 0, or ZBERT_E* when the text failed (alone:
                            * EUTF8, ELIMIT, EUNSUPPORTED, EIO; or with
                            * its request) */
    const char *code_name; /* NULL, or the protocol's name of the failure */
    const char *error;     /* NULL, or one sentence: why it failed */
    bool truncated;        /* wordpieces past the model's positions dropped */
    zbert_level_t level;
    uint32_t dim;                 /* floats per vector (also set for a failed text
                                   * when the broker sent it) */
    uint32_t n_rows;              /* vectors (0 for a failed text) */
    const float *vectors;         /* [n_rows * dim] */
    const uint32_t *offsets;      /* [2 * n_rows] [begin, end) code points
                                   * (token, wordpiece), else NULL */
    const uint32_t *byte_offsets; /* [2 * n_rows] the same in UTF-8 bytes */
    const uint32_t *ids;          /* [n_rows] vocabulary ids (wordpiece),
                                   * else NULL */
    /* Token metadata: token level when the options ask for it (sentences,
     * compat or token_meta), else NULL. */
    const uint32_t *sentence; /* [n_rows] 0-based sentence of the text */
    const int32_t *piece_id;  /* [n_rows] vocabulary id of the token's
                               * (first, or fed) piece; -1 when oov */
    const bool *word_start;   /* [n_rows] that piece is not a "##" one */
    const bool *oov;          /* [n_rows] the token has no piece: zeros */
    const char *model;        /* the model that made it, or NULL (see
                               * zbert_event_t.model) */
} zbert_text_t;

/*
 * Waits up to timeout_ms (negative: without limit; 0: only what is already
 * there) for the next event, which is then the caller's.  Sends what is due
 * meanwhile (pings, resends, retries after busy) and fails requests whose
 * deadline passed.  Returns 0 with *ev set, or 0 with *ev NULL when the time
 * ran out, a signal interrupted the wait, or nothing is open and no event
 * is queued (with timeout_ms negative: then it returns at once);
 * ZBERT_ENOMEM or ZBERT_EIO (the socket failed: the client should be
 * destroyed).
 */
int zbert_next(zbert_client_t *c, int timeout_ms, zbert_event_t **ev);

/* Fills t with text i (0 .. count-1) of a PART event: views into ev.
 * Returns 0, or ZBERT_EINVAL when ev is not a PART or i is out of range. */
int zbert_event_text(const zbert_event_t *ev, uint32_t i, zbert_text_t *t);

/* Frees an event.  NULL-safe; sets *ev to NULL. */
void zbert_event_destroy(zbert_event_t **ev);

/* --- in-order reassembly ------------------------------------------------- */

/*
 * A reorder hands out the texts of a sequence of requests in order: the
 * caller announces each request (zbert_reorder_expect) in the order its
 * texts belong, gives it every event of those requests (zbert_reorder_push)
 * and takes texts (zbert_reorder_pop) as long as the next one in order has
 * arrived.  A request that ends with ERROR yields its missing texts as
 * failed texts (status and error of the request).  It holds the events of
 * texts not yet taken: its memory is bounded by the texts announced and not
 * taken (zbert_reorder_pending), which the caller limits.
 */
typedef struct zbert_reorder zbert_reorder_t;

/* Returns 0 or ZBERT_ENOMEM; *out is the caller's. */
int zbert_reorder_new(zbert_reorder_t **out);

/* Frees the reorder and the events it holds.  NULL-safe; sets *r to NULL. */
void zbert_reorder_destroy(zbert_reorder_t **r);

/* Appends the n_texts texts of request (a handle of zbert_submit) to the
 * order.  Returns 0, ZBERT_EINVAL (n_texts 0, the request already
 * announced) or ZBERT_ENOMEM. */
int zbert_reorder_expect(zbert_reorder_t *r, uint64_t request, uint32_t n_texts);

/*
 * Takes *ev (set to NULL: the reorder owns it now, whatever the result).
 * Returns 0; ZBERT_EINVAL when the event's request was not announced (or
 * is finished), or its texts do not fit the request; ZBERT_ENOMEM.
 */
int zbert_reorder_push(zbert_reorder_t *r, zbert_event_t **ev);

/* Next text in order: returns 1 and fills *t (views valid until the next
 * pop or destroy), or 0 when that text has not arrived. */
int zbert_reorder_pop(zbert_reorder_t *r, zbert_text_t *t);

/* Texts announced and not yet popped. */
size_t zbert_reorder_pending(const zbert_reorder_t *r);

/* --- blocking call ------------------------------------------------------- */

typedef struct zbert_result zbert_result_t;

/*
 * Embeds texts[0..n) (lens NULL: NUL-terminated) and waits for all of them:
 * one result per text, in order, in *out (the caller's, freed with
 * zbert_result_destroy).  Any number of texts: they are sent as several
 * requests within the client's limits.  opt->deadline_ms bounds the whole
 * call.  A text that fails alone does not fail the call (see its status).
 *
 * One model serves the whole call: opt->model, or else the model of the
 * first results, which the later requests are pinned to; results of
 * another model fail the call with ZBERT_EPROTO.
 *
 * Uses the client alone: call it when no request of the async API is open
 * (ZBERT_EINVAL otherwise).  Returns 0; the failure of a request
 * (ZBERT_ETIMEOUT, ZBERT_ENOTFOUND, ZBERT_EPROTO, ...; d has the broker's
 * sentence), after cancelling the others; ZBERT_EINVAL; ZBERT_ENOMEM.
 */
int zbert_embed(zbert_client_t *c, const char *const *texts, const size_t *lens, size_t n,
                const zbert_options_t *opt, zbert_result_t **out, zbert_diag_t *d);

/* Texts in the result. */
size_t zbert_result_count(const zbert_result_t *r);

/* Fills t with text i (views valid until the result is destroyed).
 * Returns 0, or ZBERT_EINVAL when i is out of range. */
int zbert_result_text(const zbert_result_t *r, size_t i, zbert_text_t *t);

/* NULL-safe; sets *r to NULL. */
void zbert_result_destroy(zbert_result_t **r);

/* --- status -------------------------------------------------------------- */

/* One worker the broker drives. */
typedef struct zbert_worker_status {
    char *name;              /* NUL-terminated, e.g. "host:pid" */
    char *model;             /* model identity */
    uint32_t dim;            /* floats per vector */
    uint32_t threads;        /* compute threads */
    uint32_t credit;         /* shards it holds at once */
    uint64_t in_flight;      /* shards on it now */
    uint64_t shards;         /* shards it returned since it joined */
    uint64_t tokens;         /* tokens it ran since it joined */
    uint64_t idle_ms;        /* since it last sent anything */
    uint64_t quarantined_ms; /* set aside for this much longer (it returned
                              * results that did not match their tasks); 0:
                              * not set aside */
} zbert_worker_status_t;

typedef struct zbert_status {
    uint64_t uptime_ms;        /* since the broker started */
    uint64_t requests;         /* open requests, every client */
    uint64_t queued_shards;    /* waiting for a worker */
    uint64_t queued_texts;     /* texts in them */
    uint64_t in_flight_shards; /* on workers */
    double texts_per_s;        /* over the last 10 s */
    double tokens_per_s;
    double latency_p50_ms; /* request latency, last 1,000 requests */
    double latency_p90_ms;
    double latency_p99_ms;
    uint64_t protocol_errors; /* malformed messages the broker received */
    uint64_t bad_results;     /* worker results refused as not matching their task */
    bool has_security;        /* the broker sent the three fields below */
    bool curve;               /* CurveZMQ on both endpoints */
    uint64_t refused_clients; /* handshakes and messages refused, clients' endpoint */
    uint64_t refused_workers; /* the same, workers' endpoint */
    size_t n_workers;
    zbert_worker_status_t *workers; /* [n_workers] */
} zbert_status_t;

/*
 * Asks the broker for its status and waits up to timeout_ms (negative:
 * without limit) for the answer, with the client's retry rules; events of
 * open requests that arrive meanwhile are queued for zbert_next().  *out is
 * the caller's, freed with zbert_status_destroy().  Returns 0,
 * ZBERT_ETIMEOUT, ZBERT_EPROTO (the broker refused it: d says why),
 * ZBERT_ENOMEM or ZBERT_EIO.
 */
int zbert_status(zbert_client_t *c, int timeout_ms, zbert_status_t **out, zbert_diag_t *d);

/* NULL-safe; sets *s to NULL. */
void zbert_status_destroy(zbert_status_t **s);

/* --- logging ------------------------------------------------------------- */

/* What the library writes on stderr: "error", "warn" (a broker presumed
 * gone or stopping, a malformed message from it), "info" (the default;
 * adds requests sent again to a restarted broker, and errors the broker
 * addressed to no request) or "debug" (every request).  A
 * process-wide setting, to make once before creating clients.  Returns 0
 * or ZBERT_EINVAL. */
int zbert_log_level(const char *level);

#ifdef __cplusplus
}
#endif

#endif
