/*
 * task.h -- the worker's task runner: the texts of a `task` message through
 * the embedder, a `result` message body out (proto/PROTOCOL.md section 6).
 *
 * This is the engine side of zbert-worker and knows nothing of ZeroMQ: it
 * takes decoded tasks and returns encoded bodies, each result carrying its
 * task's shard and epoch.  For each task it
 *   - runs the texts (str or bin, bytes unchecked by the decoder) through
 *     zb_embed_run() with the task's options, the later ones (sentences,
 *     token vector, Spark NLP compatibility, token metadata) included;
 *   - turns each text's zb_embed_result_t into the wire shape of its level: rows,
 *     little-endian float32 vectors, code-point and byte offsets (token and
 *     wordpiece), vocabulary ids (wordpiece), token metadata (token level,
 *     when the options ask for it: zb_options_meta), truncated indices;
 *   - reports a text that failed alone as a per-text error whose message is
 *     what zbert-embed prints for it: the engine's sentence (zb_embed_result_t
 *     detail) when it has one, else zb_strerror() of its code (ZB_EUTF8:
 *     bad_utf8, ZB_ELIMIT: too_large, ZB_EUNSUPPORTED: unsupported,
 *     anything else: internal);
 *   - keeps the body within the size limit: when the result would not fit,
 *     the texts with the most rows are failed one by one as too_large until
 *     it fits (PROTOCOL.md section 6), computed from the exact MessagePack
 *     size of each part, so no text is failed that the body could hold.
 *
 * Several tasks with the same options may run through one embedder call
 * (bigger encoder batches from small tasks); each still gets its own result
 * with its own `tokens`.  When the engine fails a whole call (out of memory,
 * encoder error), each task of a merged run is retried alone, and a task
 * that still fails gets a result in which every text carries the code
 * `internal`, so the broker always gets its credit back.
 *
 * Tokens.  A task's `tokens` are the tokens its texts put through the
 * encoder, [CLS]/[SEP] included, overlapping windows counted each time they
 * run: the tokens of the tasks of one call add up to what the embedder's
 * statistics counted for the call.
 *
 * Thread-safety: a zb_task_t belongs to one thread at a time, like the
 * embedder it drives.
 */
#ifndef ZB_TASK_H
#define ZB_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "embed.h"
#include "error.h"
#include "msg.h"

typedef struct zb_task zb_task_t;

typedef struct zb_task_config {
    size_t body_max; /* bytes a result body may take; 0 (or more than
                      * ZB_MSG_BODY_MAX): ZB_MSG_BODY_MAX.  Tests lower it. */
} zb_task_config_t;

/* One task's outcome. */
typedef struct zb_task_out {
    uint8_t *body;     /* the encoded `result` (malloc'd: the caller's to
                        * free()), or NULL when zb_task_run failed */
    size_t body_len;   /* bytes */
    uint64_t tokens;   /* tokens the task ran through the encoder */
    uint32_t n_texts;  /* texts of the task */
    uint32_t n_failed; /* texts with a per-text error (any code) */
    uint32_t n_cut;    /* of those, texts failed as too_large so the body fits */
    int engine_rc;     /* 0, or the ZB_E* code of an engine failure that made
                        * every text `internal` */
} zb_task_out_t;

/*
 * Creates a runner over e (borrowed: must outlive it; used by one thread at
 * a time).  cfg may be NULL.  Returns 0 and *out (the caller's, released
 * with zb_task_destroy) or ZB_ENOMEM / ZB_EINVAL with d saying why.
 */
int zb_task_new(zb_embed_t *e, const zb_task_config_t *cfg, zb_task_t **out, zb_diag_t *d);

/* Releases the runner and nulls *s.  Accepts NULL and *s == NULL. */
void zb_task_destroy(zb_task_t **s);

/* True when tasks with options a and b can share one embedder call. */
bool zb_task_same_options(const zb_options_t *a, const zb_options_t *b);

/*
 * Runs tasks[0..n) (borrowed, decoded tasks: 1 <= n_texts <= ZB_MSG_TEXTS_MAX
 * each, all with the same options) through one embedder call and writes a
 * result for tasks[i] into outs[i] (overwritten, not freed first).
 * Returns 0 when every outs[i].body is set (per-text errors and engine
 * failures are inside the results), or ZB_EINVAL (n == 0, options differ, a
 * task breaks the limits) / ZB_ENOMEM / ZB_ELIMIT (a result cannot be made
 * to fit even with every text failed: only with a tiny body_max), with d
 * saying why and no body left allocated in outs.
 */
int zb_task_run(zb_task_t *s, const zb_msg_task_t *const *tasks, size_t n, zb_task_out_t *outs,
                zb_diag_t *d);

/*
 * Encodes a result for a task none of whose texts could run: the task's
 * shard, epoch and number of texts (1..ZB_MSG_TEXTS_MAX), each text with
 * rows 0 and a per-text error {code, message} (message: at most
 * ZB_MSG_MESSAGE_BYTES_MAX bytes of UTF-8), tokens 0, at the task's level.
 * For a worker that cannot compute a task at all but must return its
 * credit.  Returns 0 and out->body, or ZB_EINVAL / ZB_ENOMEM / ZB_ELIMIT
 * with d saying why.
 */
int zb_task_fail(const zb_msg_task_t *task, int dim, zb_msg_code_t code, const char *message,
                 zb_task_out_t *out, zb_diag_t *d);

/* The protocol code of a text's engine status: ZB_EUTF8 -> BAD_UTF8,
 * ZB_ELIMIT -> TOO_LARGE, ZB_EUNSUPPORTED -> UNSUPPORTED, any other
 * failure -> INTERNAL, 0 -> NONE. */
zb_msg_code_t zb_task_text_code(int status);

#endif
