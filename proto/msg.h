/*
 * msg.h -- the messages of the zbert wire protocol (proto/PROTOCOL.md)
 * as C structs, their encoders and one validating decoder.
 *
 * A message body is one MessagePack map.  zb_msg_decode() reads a body
 * received from anyone and either rejects it with ZB_EPROTO and a sentence
 * naming the field, or returns a message that satisfies every rule of the
 * specification: required keys present with their types, limits of
 * limits.h, and the cross-field rules (len(rows) == count, sum(rows) x dim x
 * 4 == len(vectors), offsets of 2 x rows[i] entries per text, indices in
 * range and increasing, ...).  The encoders check the same rules on the
 * struct they are given and produce the smallest encoding, so whatever
 * encodes decodes to an equal message and vice versa.
 *
 * Two MessagePack implementations, one per direction.  Received bodies are
 * read by our bounded reader (mp.h), never by msgpack-c's unpacker, which
 * allocates arrays and maps from their declared counts before reading
 * them.  Bodies we send are packed by msgpack-c's packer (callers link
 * -lmsgpackc), which picks the smallest encoding of every value; the body
 * is measured by a first pass that only counts bytes and packed by a
 * second into one malloc() of exactly that size, so a large vectors bin is
 * copied once.
 *
 * Memory.  A decoded message holds views into the body it was decoded from
 * (strings, texts and the vectors bin are pointer + length, never copied,
 * never NUL-terminated, the vectors not aligned): the body must outlive the
 * message.  The few arrays that need converting (texts' views, rows,
 * offsets, ids, token metadata, truncated, errors, workers) live in memory
 * the message owns, released by zb_msg_free().  Their size is bounded by
 * the body's length (each element takes at least one byte of the body, and
 * counts are checked against the bytes present before anything is
 * allocated), so hostile bytes cannot make the decoder allocate more than a
 * small multiple of their own size.
 *
 * Cost.  Decoding is linear in the number of MessagePack values: the
 * vectors are not touched (no per-float work), texts are not copied.
 *
 * Thread-safety: the functions are re-entrant; a zb_msg_t belongs to one
 * thread at a time.
 */
#ifndef ZB_MSG_H
#define ZB_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "limits.h"
#include "options.h"

/* The protocol version this codec speaks. */
#define ZB_MSG_VERSION 1

/* Bytes, usually text: a view, not NUL-terminated.  len == 0 with a NULL
 * ptr is the empty string (and, for optional ids, "absent"). */
typedef struct zb_msg_str {
    const char *ptr;
    size_t len;
} zb_msg_str_t;

typedef enum zb_msg_type {
    ZB_MSG_NONE = 0,     /* not a message (a decode that failed early) */
    ZB_MSG_EMBED,        /* client -> broker */
    ZB_MSG_CANCEL,       /* client -> broker */
    ZB_MSG_STATUS,       /* client -> broker */
    ZB_MSG_PART,         /* broker -> client */
    ZB_MSG_DONE,         /* broker -> client */
    ZB_MSG_ERROR,        /* broker -> client */
    ZB_MSG_STATUS_REPLY, /* broker -> client */
    ZB_MSG_READY,        /* worker -> broker */
    ZB_MSG_TASK,         /* broker -> worker */
    ZB_MSG_RESULT,       /* worker -> broker */
    ZB_MSG_HEARTBEAT,    /* worker <-> broker */
    ZB_MSG_BYE,          /* worker -> broker */
    ZB_MSG_RECONNECT,    /* broker -> worker */
    ZB_MSG_CLOSING,      /* broker -> client (revision 1.3) */
    ZB_MSG_TYPE_COUNT
} zb_msg_type_t;

/* Error codes of the protocol: of an `error` message, or of one text in a
 * part's `errors`.  Their wire names are those of PROTOCOL.md section 4. */
typedef enum zb_msg_code {
    ZB_MSG_CODE_NONE = 0,    /* no error */
    ZB_MSG_CODE_BAD_REQUEST, /* malformed message or field */
    ZB_MSG_CODE_TOO_LARGE,   /* a size limit exceeded (message, or one text) */
    ZB_MSG_CODE_VERSION,     /* unsupported v */
    ZB_MSG_CODE_DUPLICATE_ID,
    ZB_MSG_CODE_BUSY,
    ZB_MSG_CODE_TIMEOUT,
    ZB_MSG_CODE_CANCELED,
    ZB_MSG_CODE_NO_MODEL,
    ZB_MSG_CODE_INTERNAL,
    ZB_MSG_CODE_BAD_UTF8,    /* one text is not valid UTF-8 */
    ZB_MSG_CODE_UNSUPPORTED, /* one text the options cannot take (Spark NLP
                              * would misplace its sentences, ...) */
    ZB_MSG_CODE_FORBIDDEN,   /* the sender's CURVE key is no longer allowed
                              * (PROTOCOL.md 4, revision 1.2) */
    ZB_MSG_CODE_UNKNOWN,     /* decoded: a code this version does not know */
    ZB_MSG_CODE_COUNT
} zb_msg_code_t;

/* The options of embed and task are zb_options_t (options.h): the codec
 * writes each field under its PROTOCOL.md key when it differs from its
 * default, and checks zb_options_check()'s rules both ways.  tokenize_only
 * never travels: the encoders refuse it, the decoder leaves it false. */

typedef struct zb_msg_embed {
    zb_msg_str_t id;           /* 1..ZB_MSG_ID_BYTES_MAX bytes of UTF-8 */
    const zb_msg_str_t *texts; /* [n_texts]; bytes not checked (see below) */
    size_t n_texts;            /* 1..ZB_MSG_TEXTS_MAX */
    zb_options_t opt;
    uint64_t deadline_ms; /* 0: none */
    /* Revision 1.3: texts the client holds, as flat (first, count) pairs:
     * increasing, non-overlapping ranges inside the texts, count >= 1;
     * n_have even (0: none).  Texts inside them may be sent empty. */
    const uint32_t *have;
    size_t n_have;
    zb_msg_str_t model; /* 1..ZB_MSG_NAME_BYTES_MAX bytes; len 0: any model */
} zb_msg_embed_t;

/* cancel and status: status's id may be absent (len 0). */
typedef struct zb_msg_cancel {
    zb_msg_str_t id;
} zb_msg_cancel_t;

typedef struct zb_msg_status {
    zb_msg_str_t id;
} zb_msg_status_t;

/* One text that failed alone. */
typedef struct zb_msg_text_error {
    uint32_t index;       /* absolute in a part, shard-relative in a result */
    zb_msg_code_t code;   /* BAD_UTF8, TOO_LARGE, INTERNAL, ... */
    zb_msg_str_t message; /* 0..ZB_MSG_MESSAGE_BYTES_MAX bytes of UTF-8 */
} zb_msg_text_error_t;

/*
 * The vectors of a run of consecutive texts: the payload shared by part
 * and result.  Invariants (checked by the decoder and the encoders):
 *   count == len(rows) in 1..ZB_MSG_TEXTS_MAX;  n_rows == sum(rows);
 *   vectors_len == n_rows x dim x 4;  at sentence level rows[i] <= 1;
 *   offsets, byte_offsets: [2 x n_rows] (begin, end) pairs with begin <= end,
 *     present at token and wordpiece level, NULL at sentence level;
 *   ids: [n_rows] at wordpiece level, else NULL;
 *   token_meta (token level only): meta is [n_rows] (NULL only when
 *     n_rows is 0), NULL without token_meta.  The wire carries a row's
 *     sentence, piece_id, word_start and oov (PROTOCOL.md 4: per-row
 *     arrays, an oov row's piece 0); decoded rows have piece_id -1 when
 *     oov, row 0 and begin16 = end16 = -1; an encoded oov row must have
 *     piece_id -1, any other a piece_id >= 0;
 *   truncated and errors: indices strictly increasing, inside the texts
 *     covered; a text with an error has rows 0.
 */
typedef struct zb_msg_vectors {
    zb_level_t level;
    uint32_t dim;                 /* 1..ZB_HIDDEN_MAX floats per row */
    uint32_t count;               /* texts covered */
    const uint32_t *rows;         /* [count] rows per text */
    uint64_t n_rows;              /* sum of rows */
    const void *vectors;          /* little-endian float32, row-major, any
                                   * alignment; NULL only when empty */
    size_t vectors_len;           /* bytes */
    const uint32_t *offsets;      /* [2 * n_rows] code points, or NULL */
    const uint32_t *byte_offsets; /* [2 * n_rows] UTF-8 bytes, or NULL */
    const uint32_t *ids;          /* [n_rows] vocabulary ids, or NULL */
    bool token_meta;              /* the rows carry token metadata: */
    const zb_token_meta_t *meta;  /* [n_rows], or NULL */
    const uint32_t *truncated;    /* [n_truncated] text indices */
    size_t n_truncated;
    const zb_msg_text_error_t *errors; /* [n_errors] */
    size_t n_errors;
} zb_msg_vectors_t;

typedef struct zb_msg_part {
    zb_msg_str_t id;
    uint32_t first;       /* first + count <= ZB_MSG_TEXTS_MAX */
    zb_msg_vectors_t vec; /* indices absolute: first .. first+count-1 */
    zb_msg_str_t model;   /* revision 1.3: the workers' model; len 0: absent */
} zb_msg_part_t;

typedef struct zb_msg_done {
    zb_msg_str_t id;
    uint64_t texts; /* 1..ZB_MSG_TEXTS_MAX */
    uint64_t tokens;
    uint64_t parts; /* >= 1 */
    uint64_t elapsed_ms;
    zb_msg_str_t model; /* revision 1.3: the workers' model; len 0: absent */
} zb_msg_done_t;

typedef struct zb_msg_error {
    zb_msg_str_t id;      /* len 0: absent (the message had no readable id) */
    zb_msg_code_t code;   /* not NONE; UNKNOWN only when decoded */
    zb_msg_str_t message; /* 0..ZB_MSG_MESSAGE_BYTES_MAX bytes of UTF-8 */
    zb_msg_str_t of;      /* revision 1.3: the id a duplicate_id without id
                           * names; len 0: absent */
} zb_msg_error_t;

/* One worker in a status reply. */
typedef struct zb_msg_worker_info {
    zb_msg_str_t name;       /* 1..ZB_MSG_NAME_BYTES_MAX bytes of UTF-8 */
    zb_msg_str_t model;      /* same */
    uint32_t dim;            /* 1..ZB_HIDDEN_MAX */
    uint32_t threads;        /* 1..ZB_THREADS_MAX */
    uint32_t credit;         /* 1..ZB_MSG_CREDIT_MAX */
    uint64_t in_flight;      /* shards on the worker now */
    uint64_t shards;         /* shards it returned since it joined */
    uint64_t tokens;         /* tokens it ran since it joined */
    uint64_t idle_ms;        /* since it last sent anything */
    uint64_t quarantined_ms; /* optional: the broker gives it no work for this
                              * long yet (it returned results that did not
                              * match their tasks); 0: not set aside */
} zb_msg_worker_info_t;

typedef struct zb_msg_status_reply {
    zb_msg_str_t id; /* len 0: absent */
    uint64_t uptime_ms;
    const zb_msg_worker_info_t *workers; /* [n_workers] */
    size_t n_workers;                    /* 0..ZB_MSG_WORKERS_MAX */
    uint64_t requests;
    uint64_t queued_shards;
    uint64_t queued_texts;
    uint64_t in_flight_shards;
    double texts_per_s; /* finite, >= 0, like every float here */
    double tokens_per_s;
    double latency_p50_ms;
    double latency_p90_ms;
    double latency_p99_ms;
    uint64_t protocol_errors;
    uint64_t bad_results; /* optional: worker results refused since start */
    /* Security (revision 1.2): the keys curve, refused_clients and
     * refused_workers travel together; has_security false: absent (a
     * broker of an earlier revision). */
    bool has_security;
    bool curve;               /* CurveZMQ on both endpoints */
    uint64_t refused_clients; /* handshakes and messages refused, clients endpoint */
    uint64_t refused_workers; /* same, workers endpoint */
    /* Revision 1.3: ids of the asking owner's open requests. */
    const zb_msg_str_t *open; /* [n_open] */
    size_t n_open;            /* 0..ZB_MSG_OPEN_MAX */
} zb_msg_status_reply_t;

/* closing (revision 1.3): the broker is stopping. */
typedef struct zb_msg_closing {
    zb_msg_str_t message; /* 0..ZB_MSG_MESSAGE_BYTES_MAX bytes; len 0: absent */
} zb_msg_closing_t;

/*
 * Epochs (PROTOCOL.md section 6).  Each `ready` carries an epoch the worker
 * chose, a new one at every announcement on a connection; a `task` carries
 * the epoch of the `ready` it was dispatched under and its `result` echoes
 * it, so a task or result from before the latest `ready` is told apart from
 * a current one.  Any uint64 value; required in all three messages.
 */
typedef struct zb_msg_ready {
    zb_msg_str_t name;  /* 1..ZB_MSG_NAME_BYTES_MAX bytes of UTF-8 */
    zb_msg_str_t model; /* same */
    uint32_t dim;       /* 1..ZB_HIDDEN_MAX */
    uint32_t threads;   /* 1..ZB_THREADS_MAX */
    uint32_t credit;    /* 1..ZB_MSG_CREDIT_MAX */
    uint64_t epoch;     /* this announcement's epoch */
} zb_msg_ready_t;

typedef struct zb_msg_task {
    uint64_t shard;
    uint64_t epoch;            /* of the ready it was dispatched under */
    const zb_msg_str_t *texts; /* [n_texts] */
    size_t n_texts;            /* 1..ZB_MSG_TEXTS_MAX */
    zb_options_t opt;
} zb_msg_task_t;

typedef struct zb_msg_result {
    uint64_t shard;
    uint64_t epoch; /* the task's */
    uint64_t tokens;
    zb_msg_vectors_t vec; /* indices relative to the shard: 0 .. count-1 */
} zb_msg_result_t;

/* Any message.  heartbeat, bye and reconnect carry nothing. */
typedef struct zb_msg {
    zb_msg_type_t type;
    union {
        zb_msg_embed_t embed;
        zb_msg_cancel_t cancel;
        zb_msg_status_t status;
        zb_msg_part_t part;
        zb_msg_done_t done;
        zb_msg_error_t error;
        zb_msg_status_reply_t status_reply;
        zb_msg_ready_t ready;
        zb_msg_task_t task;
        zb_msg_result_t result;
        zb_msg_closing_t closing;
    } u;
    /* Filled by zb_msg_decode(): */
    zb_msg_code_t reject;   /* after a failure: BAD_REQUEST, TOO_LARGE or
                             * VERSION, what the broker answers; else NONE */
    zb_msg_str_t reject_id; /* after a failure: the body's id when it had a
                             * well-formed one (to address the error) */
    bool unknown_type;      /* after a failure: the body's `type` is a str
                             * naming no type this version knows (a later
                             * revision's: clients ignore such messages) */
    void *mem;              /* blocks owned by the message */
    size_t mem_bytes;       /* bytes the decode allocated (kept after a
                             * failure, for accounting) */
} zb_msg_t;

/*
 * Decodes and validates one body, body[0..len) (borrowed: *out points into
 * it and must not outlive it).  *out is overwritten, never freed: pass a
 * zeroed or freed message.  Texts (str or bin) are not checked for UTF-8 or
 * size here: a bad text fails alone, in the engine.  Unknown keys are
 * ignored; duplicate keys are rejected.
 *
 * Returns 0 (free *out with zb_msg_free), ZB_ENOMEM, or ZB_EPROTO: then d
 * says which field is wrong and why, out->type is the type when it was
 * readable, out->reject the error code to answer (zb_msg_decode_failure),
 * out->reject_id the id when readable, out->unknown_type whether the
 * failure is only that the type is unknown, and nothing is left allocated.
 * ZB_EINVAL when body is NULL with len > 0 or out is NULL.
 */
int zb_msg_decode(const void *body, size_t len, zb_msg_t *out, zb_diag_t *d);

/* The protocol error code a failed decode answers: BAD_REQUEST, TOO_LARGE
 * or VERSION (NONE when m was decoded successfully). */
zb_msg_code_t zb_msg_decode_failure(const zb_msg_t *m);

/* Releases what the message owns and zeroes it.  NULL-safe, idempotent. */
void zb_msg_free(zb_msg_t *m);

/*
 * Encoders: each checks the struct against the rules above and writes its
 * body into a new malloc() buffer, *out (the caller's to free(); it can be
 * handed to zmq_msg_init_data with a free callback), of *out_len bytes.
 * Returns 0, ZB_EINVAL (the struct breaks a rule: d names it), ZB_ELIMIT
 * (the body would exceed ZB_MSG_BODY_MAX: split the work) or ZB_ENOMEM.
 * Optional keys are written only when they differ from their defaults.
 */
int zb_msg_encode(const zb_msg_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_embed(const zb_msg_embed_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_cancel(const zb_msg_cancel_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_status(const zb_msg_status_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_part(const zb_msg_part_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_done(const zb_msg_done_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_error(const zb_msg_error_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_status_reply(const zb_msg_status_reply_t *m, uint8_t **out, size_t *out_len,
                               zb_diag_t *d);
int zb_msg_encode_ready(const zb_msg_ready_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_task(const zb_msg_task_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_result(const zb_msg_result_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
int zb_msg_encode_closing(const zb_msg_closing_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d);
/* heartbeat, bye, reconnect: type is one of those three. */
int zb_msg_encode_empty(zb_msg_type_t type, uint8_t **out, size_t *out_len, zb_diag_t *d);

/* True when a and b are the same message: same type and fields, views
 * compared by their bytes, arrays by their elements.  Decoder bookkeeping
 * (reject, mem) is not compared. */
bool zb_msg_equal(const zb_msg_t *a, const zb_msg_t *b);

/* Wire names ("embed", "bad_request"); "?" when out of range.  Static
 * strings.  The names of option values are zb_options_*_name(). */
const char *zb_msg_type_name(zb_msg_type_t t);
const char *zb_msg_code_name(zb_msg_code_t c);

#endif
