/*
 * msg.c -- encoders and the validating decoder of the wire messages
 * (see msg.h and PROTOCOL.md).
 *
 * Decoding runs in three steps:
 *   1. locate: the body map is walked once with zb_mp_skip(), which checks
 *      every header, length and the nesting depth of the whole body without
 *      allocating; each key's value is recorded as a byte span.  Keys must
 *      be short UTF-8 strings, unique, at most ZB_MSG_KEYS_MAX of them.
 *   2. parse: the fields of the message's type are read from their spans
 *      in an order where counts come before the arrays they size (rows
 *      before offsets), so every allocation is bounded both by a limit and
 *      by the bytes the span really holds.
 *   3. check: the struct is checked against the rules of PROTOCOL.md by
 *      the same functions the encoders run on their input, so the decoder
 *      and the encoders cannot disagree about what a valid message is.
 * Decoding uses our bounded reader (mp.h), never msgpack-c's unpacker,
 * which allocates arrays and maps from their declared counts.  Encoding
 * packs trusted structs with msgpack-c's packer: twice, first into a sink
 * that only counts, then into one allocation of exactly that size.
 */
#include "msg.h"

#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp.h"

/* --- names ---------------------------------------------------------------- */

static const char *const s_type_names[ZB_MSG_TYPE_COUNT] = {
    [ZB_MSG_NONE] = "?",          [ZB_MSG_EMBED] = "embed",
    [ZB_MSG_CANCEL] = "cancel",   [ZB_MSG_STATUS] = "status",
    [ZB_MSG_PART] = "part",       [ZB_MSG_DONE] = "done",
    [ZB_MSG_ERROR] = "error",     [ZB_MSG_STATUS_REPLY] = "status_reply",
    [ZB_MSG_READY] = "ready",     [ZB_MSG_TASK] = "task",
    [ZB_MSG_RESULT] = "result",   [ZB_MSG_HEARTBEAT] = "heartbeat",
    [ZB_MSG_BYE] = "bye",         [ZB_MSG_RECONNECT] = "reconnect",
    [ZB_MSG_CLOSING] = "closing",
};

static const char *const s_code_names[ZB_MSG_CODE_COUNT] = {
    [ZB_MSG_CODE_NONE] = "?",
    [ZB_MSG_CODE_BAD_REQUEST] = "bad_request",
    [ZB_MSG_CODE_TOO_LARGE] = "too_large",
    [ZB_MSG_CODE_VERSION] = "version",
    [ZB_MSG_CODE_DUPLICATE_ID] = "duplicate_id",
    [ZB_MSG_CODE_BUSY] = "busy",
    [ZB_MSG_CODE_TIMEOUT] = "timeout",
    [ZB_MSG_CODE_CANCELED] = "canceled",
    [ZB_MSG_CODE_NO_MODEL] = "no_model",
    [ZB_MSG_CODE_INTERNAL] = "internal",
    [ZB_MSG_CODE_BAD_UTF8] = "bad_utf8",
    [ZB_MSG_CODE_UNSUPPORTED] = "unsupported",
    [ZB_MSG_CODE_FORBIDDEN] = "forbidden",
    [ZB_MSG_CODE_UNKNOWN] = "?",
};

const char *zb_msg_type_name(zb_msg_type_t t) {
    return (unsigned)t < ZB_MSG_TYPE_COUNT ? s_type_names[t] : "?";
}

const char *zb_msg_code_name(zb_msg_code_t c) {
    return (unsigned)c < ZB_MSG_CODE_COUNT ? s_code_names[c] : "?";
}

/* Index of s[0..len) in names[first..n), or -1. */
static int s_lookup(const char *const *names, int first, int n, const char *s, size_t len) {
    for (int k = first; k < n; k++)
        if (strlen(names[k]) == len && memcmp(names[k], s, len) == 0) return k;
    return -1;
}

/* --- memory owned by a decoded message -------------------------------------- */

typedef struct s_block {
    struct s_block *next;
    _Alignas(max_align_t) unsigned char data[];
} s_block_t;

/* n elements of size bytes, owned by m; *out is NULL when n is 0. */
static int s_alloc(zb_msg_t *m, size_t n, size_t size, void **out) {
    size_t bytes;
    *out = NULL;
    if (n == 0) return 0;
    if (__builtin_mul_overflow(n, size, &bytes) ||
        __builtin_add_overflow(bytes, sizeof(s_block_t), &bytes))
        return ZB_ENOMEM;
    s_block_t *b = malloc(bytes);
    if (b == NULL) return ZB_ENOMEM;
    b->next = m->mem;
    m->mem = b;
    m->mem_bytes += bytes;
    *out = b->data;
    return 0;
}

static void s_release(zb_msg_t *m) {
    s_block_t *b = m->mem;
    while (b != NULL) {
        s_block_t *next = b->next;
        free(b);
        b = next;
    }
    m->mem = NULL;
}

void zb_msg_free(zb_msg_t *m) {
    if (m == NULL) return;
    s_release(m);
    memset(m, 0, sizeof *m);
}

zb_msg_code_t zb_msg_decode_failure(const zb_msg_t *m) {
    return m != NULL ? m->reject : ZB_MSG_CODE_BAD_REQUEST;
}

/* --- context shared by the decoder and the encoders' checks ----------------- */

typedef struct s_ctx {
    zb_msg_t *m; /* decoding: the message being filled; NULL encoding */
    zb_diag_t *d;
    const char *what; /* the message type, first word of every sentence */
    bool enc;         /* checking an encoder's input, not a received body */
} s_ctx_t;

/*
 * Says what is wrong and returns the code for it.  Decoding: ZB_EPROTO and
 * the protocol code to answer (reject).  Encoding: ZB_ELIMIT for a size
 * limit (the caller should split), ZB_EINVAL for anything else.
 */
__attribute__((format(printf, 3, 4))) static int s_fail(s_ctx_t *c, zb_msg_code_t reject,
                                                        const char *fmt, ...) {
    char buf[sizeof(((zb_diag_t *)0)->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    int rc;
    if (c->enc) {
        rc = reject == ZB_MSG_CODE_TOO_LARGE ? ZB_ELIMIT : ZB_EINVAL;
    } else {
        rc = ZB_EPROTO;
        c->m->reject = reject;
    }
    return zb_diag_set(c->d, rc, "%s: %s", c->what, buf);
}

#define S_BAD   ZB_MSG_CODE_BAD_REQUEST
#define S_LARGE ZB_MSG_CODE_TOO_LARGE

/* --- checks (decoded messages and encoder input alike) --------------------- */

/* A str field of min..max bytes of UTF-8; min 0 with len 0 also covers an
 * absent optional field. */
static int s_check_str(s_ctx_t *c, const char *field, zb_msg_str_t s, size_t min, size_t max) {
    if (s.ptr == NULL && s.len > 0)
        return s_fail(c, S_BAD, "%s: NULL with length %zu", field, s.len);
    if (s.len < min || s.len > max)
        return s_fail(c, S_BAD, "%s: %zu bytes, expected %zu to %zu", field, s.len, min, max);
    if (!zb_mp_utf8_valid(s.ptr, s.len)) return s_fail(c, S_BAD, "%s: not valid UTF-8", field);
    return 0;
}

static int s_check_id(s_ctx_t *c, zb_msg_str_t id, bool optional) {
    if (optional && id.len == 0) return 0;
    return s_check_str(c, "id", id, 1, ZB_MSG_ID_BYTES_MAX);
}

/* An optional model identity (revision 1.3): len 0 is absent. */
static int s_check_model(s_ctx_t *c, zb_msg_str_t s) {
    if (s.len == 0) return 0;
    return s_check_str(c, "model", s, 1, ZB_MSG_NAME_BYTES_MAX);
}

/* An embed's have (revision 1.3): (first, count) pairs, count >= 1,
 * increasing and non-overlapping, inside the request's n texts. */
static int s_check_have(s_ctx_t *c, const uint32_t *have, size_t n_have, size_t n) {
    if (n_have == 0) return 0;
    if (have == NULL) return s_fail(c, S_BAD, "have: NULL with %zu entries", n_have);
    if (n_have % 2 != 0) return s_fail(c, S_BAD, "have: %zu entries, not pairs", n_have);
    uint64_t end = 0;
    for (size_t k = 0; k < n_have; k += 2) {
        uint64_t first = have[k], count = have[k + 1];
        if (count == 0 || first < end || first + count > n)
            return s_fail(c, S_BAD,
                          "have[%zu]: texts %llu+%llu are empty, overlap the range before or "
                          "are past the %zu texts",
                          k, (unsigned long long)first, (unsigned long long)count, n);
        end = first + count;
    }
    return 0;
}

static int s_check_range(s_ctx_t *c, const char *field, uint64_t v, uint64_t min, uint64_t max) {
    if (v < min || v > max)
        return s_fail(c, S_BAD, "%s: %llu is outside %llu..%llu", field, (unsigned long long)v,
                      (unsigned long long)min, (unsigned long long)max);
    return 0;
}

/* The number of texts of an embed or task. */
static int s_check_n_texts(s_ctx_t *c, size_t n) {
    if (n == 0) return s_fail(c, S_BAD, "texts: empty, a request needs at least one text");
    if (n > ZB_MSG_TEXTS_MAX)
        return s_fail(c, S_LARGE, "texts: %zu texts exceed the limit of %u per message", n,
                      ZB_MSG_TEXTS_MAX);
    return 0;
}

static int s_check_texts(s_ctx_t *c, const zb_msg_str_t *texts, size_t n) {
    int rc = s_check_n_texts(c, n);
    if (rc < 0) return rc;
    if (texts == NULL) return s_fail(c, S_BAD, "texts: NULL with %zu texts", n);
    for (size_t i = 0; i < n; i++)
        if (texts[i].ptr == NULL && texts[i].len > 0)
            return s_fail(c, S_BAD, "texts[%zu]: NULL with length %zu", i, texts[i].len);
    return 0;
}

static int s_check_options(s_ctx_t *c, const zb_options_t *o) {
    /* What the engine cannot honour is refused here, by name, rather than
     * failing every text on a worker. */
    zb_diag_t why = {{0}};
    if (zb_options_check(o, &why) < 0) return s_fail(c, S_BAD, "%s", why.msg);
    /* in process only: a worker must not run what was meant to be
     * tokenized alone (the decoder never sets it) */
    if (o->tokenize_only) return s_fail(c, S_BAD, "tokenize_only: not carried by the protocol");
    return 0;
}

static int s_check_code(s_ctx_t *c, const char *field, zb_msg_code_t code) {
    bool ok = code > ZB_MSG_CODE_NONE && code < ZB_MSG_CODE_COUNT;
    if (c->enc && code == ZB_MSG_CODE_UNKNOWN) ok = false; /* no wire name */
    if (!ok) return s_fail(c, S_BAD, "%s: %d is not an error code", field, (int)code);
    return 0;
}

/* Entry k of a list of text indices: inside [base, base + count) and, after
 * the first, above the previous entry. */
static int s_check_index(s_ctx_t *c, const char *field, size_t k, uint32_t v, uint32_t prev,
                         uint64_t base, uint64_t count) {
    if (v < base || v - base >= count)
        return s_fail(c, S_BAD, "%s[%zu]: text %u is not among the %llu texts from %llu", field, k,
                      v, (unsigned long long)count, (unsigned long long)base);
    if (k > 0 && v <= prev)
        return s_fail(c, S_BAD, "%s[%zu]: text %u does not follow %u (indices increase)", field, k,
                      v, prev);
    return 0;
}

/* (begin, end) pairs with begin <= end. */
static int s_check_spans(s_ctx_t *c, const char *field, const uint32_t *sp, uint64_t n_rows) {
    for (uint64_t k = 0; k < n_rows; k++)
        if (sp[2 * k] > sp[2 * k + 1])
            return s_fail(c, S_BAD, "%s: row %llu spans [%u, %u), which ends before it begins",
                          field, (unsigned long long)k, sp[2 * k], sp[2 * k + 1]);
    return 0;
}

/* Token metadata: rows with the flag, none without, at the token level
 * only; an oov row has no piece (-1), any other a vocabulary id, so that a
 * row has one wire encoding (an oov row's piece_id 0). */
static int s_check_meta(s_ctx_t *c, const zb_msg_vectors_t *v, uint64_t n_rows) {
    if (!v->token_meta) {
        if (v->meta) return s_fail(c, S_BAD, "meta: metadata rows without token_meta");
        return 0;
    }
    if (v->level != ZB_LEVEL_TOKEN)
        return s_fail(c, S_BAD, "sentence: token metadata is sent at the token level only");
    if (n_rows == 0) return 0;
    if (!v->meta)
        return s_fail(c, S_BAD, "meta: NULL with token_meta and %llu rows",
                      (unsigned long long)n_rows);
    for (uint64_t k = 0; k < n_rows; k++) {
        const zb_token_meta_t *m = &v->meta[k];
        if (m->oov && m->piece_id != -1)
            return s_fail(c, S_BAD, "piece_id: row %llu is oov but has piece %d (-1 expected)",
                          (unsigned long long)k, (int)m->piece_id);
        if (!m->oov && m->piece_id < 0)
            return s_fail(c, S_BAD, "piece_id: row %llu has piece %d, not a vocabulary id",
                          (unsigned long long)k, (int)m->piece_id);
    }
    return 0;
}

/* The shared payload of part and result; indices count from base. */
static int s_check_vectors(s_ctx_t *c, const zb_msg_vectors_t *v, uint64_t base) {
    int rc;
    if ((unsigned)v->level >= ZB_LEVEL_COUNT)
        return s_fail(c, S_BAD, "level: %d is not a level", (int)v->level);
    if ((rc = s_check_range(c, "dim", v->dim, 1, ZB_HIDDEN_MAX)) < 0) return rc;
    if (v->count == 0) return s_fail(c, S_BAD, "rows: a message covers at least one text");
    if (v->count > ZB_MSG_TEXTS_MAX)
        return s_fail(c, S_LARGE, "rows: %u texts exceed the limit of %u per message", v->count,
                      ZB_MSG_TEXTS_MAX);
    if (v->rows == NULL) return s_fail(c, S_BAD, "rows: NULL with %u texts", v->count);
    /* A received body is within the limit; an encoder's input may not be,
     * and bounding it here keeps every row count below 2^27. */
    if (v->vectors_len > ZB_MSG_BODY_MAX)
        return s_fail(c, S_LARGE, "vectors: %zu bytes exceed the body limit of %u", v->vectors_len,
                      ZB_MSG_BODY_MAX);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < v->count; i++) {
        sum += v->rows[i]; /* < 2^17 terms below 2^32: cannot overflow */
        if (v->level == ZB_LEVEL_SENTENCE && v->rows[i] > 1)
            return s_fail(c, S_BAD, "rows[%u]: %u rows, the sentence level has 0 or 1", i,
                          v->rows[i]);
    }
    if (sum != v->n_rows)
        return s_fail(c, S_BAD, "rows: they add up to %llu, not n_rows %llu",
                      (unsigned long long)sum, (unsigned long long)v->n_rows);
    uint64_t bytes;
    if (__builtin_mul_overflow(sum, (uint64_t)v->dim * 4u, &bytes) || bytes != v->vectors_len)
        return s_fail(c, S_BAD, "vectors: %zu bytes, but %llu rows x dim %u x 4 bytes make %llu",
                      v->vectors_len, (unsigned long long)sum, v->dim,
                      (unsigned long long)sum * v->dim * 4u);
    if (v->vectors == NULL && v->vectors_len > 0)
        return s_fail(c, S_BAD, "vectors: NULL with %zu bytes", v->vectors_len);

    bool spans = v->level != ZB_LEVEL_SENTENCE, ids = v->level == ZB_LEVEL_WORDPIECE;
    const char *lv = zb_options_level_name(v->level);
    if (!spans && (v->offsets != NULL || v->byte_offsets != NULL))
        return s_fail(c, S_BAD, "offsets: not sent at the sentence level");
    if (!ids && v->ids != NULL) return s_fail(c, S_BAD, "ids: sent at the wordpiece level only");
    if (sum > 0 && spans && (v->offsets == NULL || v->byte_offsets == NULL))
        return s_fail(c, S_BAD, "offsets: required at the %s level", lv);
    if (sum > 0 && ids && v->ids == NULL)
        return s_fail(c, S_BAD, "ids: required at the wordpiece level");
    if (spans && sum > 0) {
        if ((rc = s_check_spans(c, "offsets", v->offsets, sum)) < 0) return rc;
        if ((rc = s_check_spans(c, "byte_offsets", v->byte_offsets, sum)) < 0) return rc;
    }
    if ((rc = s_check_meta(c, v, sum)) < 0) return rc;

    if (v->n_truncated > 0 && v->truncated == NULL)
        return s_fail(c, S_BAD, "truncated: NULL with %zu entries", v->n_truncated);
    for (size_t k = 0; k < v->n_truncated; k++) {
        rc = s_check_index(c, "truncated", k, v->truncated[k], k ? v->truncated[k - 1] : 0, base,
                           v->count);
        if (rc < 0) return rc;
    }
    if (v->n_errors > 0 && v->errors == NULL)
        return s_fail(c, S_BAD, "errors: NULL with %zu entries", v->n_errors);
    for (size_t k = 0; k < v->n_errors; k++) {
        const zb_msg_text_error_t *e = &v->errors[k];
        rc =
            s_check_index(c, "errors", k, e->index, k ? v->errors[k - 1].index : 0, base, v->count);
        if (rc < 0) return rc;
        char field[48];
        snprintf(field, sizeof field, "errors[%zu].code", k);
        if ((rc = s_check_code(c, field, e->code)) < 0) return rc;
        snprintf(field, sizeof field, "errors[%zu].message", k);
        if ((rc = s_check_str(c, field, e->message, 0, ZB_MSG_MESSAGE_BYTES_MAX)) < 0) return rc;
        uint32_t i = (uint32_t)(e->index - base);
        if (v->rows[i] != 0)
            return s_fail(c, S_BAD, "errors[%zu]: text %u failed but has %u rows", k, e->index,
                          v->rows[i]);
    }
    return 0;
}

static int s_check_worker(s_ctx_t *c, const char *pre, zb_msg_str_t name, zb_msg_str_t model,
                          uint32_t dim, uint32_t threads, uint32_t credit) {
    char f[48];
    int rc;
    snprintf(f, sizeof f, "%sname", pre);
    if ((rc = s_check_str(c, f, name, 1, ZB_MSG_NAME_BYTES_MAX)) < 0) return rc;
    snprintf(f, sizeof f, "%smodel", pre);
    if ((rc = s_check_str(c, f, model, 1, ZB_MSG_NAME_BYTES_MAX)) < 0) return rc;
    snprintf(f, sizeof f, "%sdim", pre);
    if ((rc = s_check_range(c, f, dim, 1, ZB_HIDDEN_MAX)) < 0) return rc;
    snprintf(f, sizeof f, "%sthreads", pre);
    if ((rc = s_check_range(c, f, threads, 1, ZB_THREADS_MAX)) < 0) return rc;
    snprintf(f, sizeof f, "%scredit", pre);
    return s_check_range(c, f, credit, 1, ZB_MSG_CREDIT_MAX);
}

static int s_check_rate(s_ctx_t *c, const char *field, double v) {
    if (!isfinite(v) || v < 0)
        return s_fail(c, S_BAD, "%s: %g is not a finite value >= 0", field, v);
    return 0;
}

static int s_check(s_ctx_t *c, const zb_msg_t *m) {
    int rc = 0;
    switch (m->type) {
    case ZB_MSG_EMBED: {
        const zb_msg_embed_t *e = &m->u.embed;
        if ((rc = s_check_id(c, e->id, false)) < 0) return rc;
        if ((rc = s_check_texts(c, e->texts, e->n_texts)) < 0) return rc;
        if ((rc = s_check_have(c, e->have, e->n_have, e->n_texts)) < 0) return rc;
        if ((rc = s_check_model(c, e->model)) < 0) return rc;
        return s_check_options(c, &e->opt);
    }
    case ZB_MSG_CANCEL:
        return s_check_id(c, m->u.cancel.id, false);
    case ZB_MSG_STATUS:
        return s_check_id(c, m->u.status.id, true);
    case ZB_MSG_PART: {
        const zb_msg_part_t *p = &m->u.part;
        if ((rc = s_check_id(c, p->id, false)) < 0) return rc;
        if ((uint64_t)p->first + p->vec.count > ZB_MSG_TEXTS_MAX)
            return s_fail(c, S_BAD, "first: texts %u..%llu are past the %u a request holds",
                          p->first, (unsigned long long)p->first + p->vec.count - 1,
                          ZB_MSG_TEXTS_MAX);
        if ((rc = s_check_model(c, p->model)) < 0) return rc;
        return s_check_vectors(c, &p->vec, p->first);
    }
    case ZB_MSG_DONE: {
        const zb_msg_done_t *e = &m->u.done;
        if ((rc = s_check_id(c, e->id, false)) < 0) return rc;
        if ((rc = s_check_range(c, "texts", e->texts, 1, ZB_MSG_TEXTS_MAX)) < 0) return rc;
        if ((rc = s_check_model(c, e->model)) < 0) return rc;
        return s_check_range(c, "parts", e->parts, 1, UINT64_MAX);
    }
    case ZB_MSG_ERROR: {
        const zb_msg_error_t *e = &m->u.error;
        if ((rc = s_check_id(c, e->id, true)) < 0) return rc;
        if ((rc = s_check_code(c, "code", e->code)) < 0) return rc;
        if (e->of.len > 0 && (rc = s_check_str(c, "of", e->of, 1, ZB_MSG_ID_BYTES_MAX)) < 0)
            return rc;
        return s_check_str(c, "message", e->message, 0, ZB_MSG_MESSAGE_BYTES_MAX);
    }
    case ZB_MSG_STATUS_REPLY: {
        const zb_msg_status_reply_t *s = &m->u.status_reply;
        if ((rc = s_check_id(c, s->id, true)) < 0) return rc;
        if (s->n_workers > ZB_MSG_WORKERS_MAX)
            return s_fail(c, S_BAD, "workers: %zu entries exceed the limit of %u", s->n_workers,
                          ZB_MSG_WORKERS_MAX);
        if (s->n_workers > 0 && s->workers == NULL)
            return s_fail(c, S_BAD, "workers: NULL with %zu entries", s->n_workers);
        for (size_t k = 0; k < s->n_workers; k++) {
            const zb_msg_worker_info_t *w = &s->workers[k];
            char pre[32];
            snprintf(pre, sizeof pre, "workers[%zu].", k);
            rc = s_check_worker(c, pre, w->name, w->model, w->dim, w->threads, w->credit);
            if (rc < 0) return rc;
        }
        if (s->n_open > ZB_MSG_OPEN_MAX)
            return s_fail(c, S_BAD, "open: %zu ids exceed the limit of %u", s->n_open,
                          ZB_MSG_OPEN_MAX);
        if (s->n_open > 0 && s->open == NULL)
            return s_fail(c, S_BAD, "open: NULL with %zu ids", s->n_open);
        for (size_t k = 0; k < s->n_open; k++)
            if ((rc = s_check_str(c, "open", s->open[k], 1, ZB_MSG_ID_BYTES_MAX)) < 0) return rc;
        if ((rc = s_check_rate(c, "texts_per_s", s->texts_per_s)) < 0) return rc;
        if ((rc = s_check_rate(c, "tokens_per_s", s->tokens_per_s)) < 0) return rc;
        if ((rc = s_check_rate(c, "latency_ms.p50", s->latency_p50_ms)) < 0) return rc;
        if ((rc = s_check_rate(c, "latency_ms.p90", s->latency_p90_ms)) < 0) return rc;
        return s_check_rate(c, "latency_ms.p99", s->latency_p99_ms);
    }
    case ZB_MSG_READY: {
        const zb_msg_ready_t *r = &m->u.ready;
        return s_check_worker(c, "", r->name, r->model, r->dim, r->threads, r->credit);
    }
    case ZB_MSG_TASK: {
        const zb_msg_task_t *t = &m->u.task;
        if ((rc = s_check_texts(c, t->texts, t->n_texts)) < 0) return rc;
        return s_check_options(c, &t->opt);
    }
    case ZB_MSG_RESULT:
        return s_check_vectors(c, &m->u.result.vec, 0);
    case ZB_MSG_HEARTBEAT:
    case ZB_MSG_BYE:
    case ZB_MSG_RECONNECT:
        return 0;
    case ZB_MSG_CLOSING:
        return s_check_str(c, "message", m->u.closing.message, 0, ZB_MSG_MESSAGE_BYTES_MAX);
    default:
        return s_fail(c, S_BAD, "%d is not a message type", (int)m->type);
    }
}

/* --- decoding: locate ------------------------------------------------------- */

/* One key of a map and the byte span of its value. */
typedef struct s_field {
    const char *key;
    size_t key_len;
    const uint8_t *val;
    size_t val_len;
} s_field_t;

typedef struct s_map {
    s_field_t f[ZB_MSG_KEYS_MAX];
    size_t n;
    const char *pre; /* field name prefix for sentences: "" or "errors[3]." */
} s_map_t;

/* "found <kind>" for a sentence, from the value a read refused. */
static const char *s_found(const zb_mp_reader_t *r) {
    return zb_mp_kind_name(zb_mp_peek(r));
}

/*
 * Reads the map at r (a container at nesting depth depth, the body being
 * 1) into mp, skipping and so validating every value.  name says what the
 * map is in sentences ("the body", "errors[3]").
 */
static int s_locate(s_ctx_t *c, zb_mp_reader_t *r, int depth, const char *name, s_map_t *mp) {
    size_t n;
    mp->n = 0;
    if (zb_mp_peek(r) != ZB_MP_MAP)
        return s_fail(c, S_BAD, "%s: expected a map, found %s", name, s_found(r));
    if (zb_mp_read_map(r, &n) < 0)
        return s_fail(c, S_BAD, "%s: map header at byte %zu: %s", name, zb_mp_pos(r), r->why);
    if (n > ZB_MSG_KEYS_MAX)
        return s_fail(c, S_BAD, "%s: %zu keys exceed the limit of %u", name, n, ZB_MSG_KEYS_MAX);
    for (size_t k = 0; k < n; k++) {
        s_field_t *f = &mp->f[k];
        if (zb_mp_peek(r) != ZB_MP_STR)
            return s_fail(c, S_BAD, "%s: key %zu (byte %zu) is a %s, keys are str", name, k,
                          zb_mp_pos(r), s_found(r));
        if (zb_mp_read_str(r, &f->key, &f->key_len) < 0)
            return s_fail(c, S_BAD, "%s: key %zu (byte %zu): %s", name, k, zb_mp_pos(r), r->why);
        if (f->key_len > ZB_MSG_KEY_BYTES_MAX)
            return s_fail(c, S_BAD, "%s: key %zu has %zu bytes, keys have at most %u", name, k,
                          f->key_len, ZB_MSG_KEY_BYTES_MAX);
        if (!zb_mp_utf8_valid(f->key, f->key_len))
            return s_fail(c, S_BAD, "%s: key %zu is not valid UTF-8", name, k);
        f->val = r->p;
        if (zb_mp_skip(r, ZB_MSG_DEPTH_MAX - depth) < 0)
            return s_fail(c, S_BAD, "%s: value of `%.*s` (byte %zu): %s", name, (int)f->key_len,
                          f->key, zb_mp_pos(r), r->why);
        f->val_len = (size_t)(r->p - f->val);
        mp->n = k + 1;
        /* At most 64 keys of at most 64 bytes: pairwise is cheap and
         * needs no allocation. */
        for (size_t j = 0; j < k; j++)
            if (mp->f[j].key_len == f->key_len && memcmp(mp->f[j].key, f->key, f->key_len) == 0)
                return s_fail(c, S_BAD, "%s: key `%.*s` appears twice", name, (int)f->key_len,
                              f->key);
    }
    return 0;
}

/* The field named key, or NULL; a nil value counts as absent. */
static const s_field_t *s_find(const s_map_t *mp, const char *key) {
    size_t len = strlen(key);
    for (size_t k = 0; k < mp->n; k++) {
        const s_field_t *f = &mp->f[k];
        if (f->key_len == len && memcmp(f->key, key, len) == 0)
            return f->val_len == 1 && f->val[0] == 0xc0 ? NULL : f;
    }
    return NULL;
}

/* A reader over one field's value. */
static void s_open(const s_field_t *f, zb_mp_reader_t *r) {
    zb_mp_reader_init(r, f->val, f->val_len);
}

/* --- decoding: typed getters -------------------------------------------------
 * Each returns 1 when the key is present (value stored), 0 when it is
 * absent and optional (value untouched), or a negative code. */

static int s_missing(s_ctx_t *c, const s_map_t *mp, const char *key) {
    return s_fail(c, S_BAD, "%s%s: required, but missing or nil", mp->pre, key);
}

static int s_wrong(s_ctx_t *c, const s_map_t *mp, const char *key, const char *want,
                   const zb_mp_reader_t *r) {
    return s_fail(c, S_BAD, "%s%s: expected %s, found %s", mp->pre, key, want, s_found(r));
}

static int s_get_uint(s_ctx_t *c, const s_map_t *mp, const char *key, bool required, uint64_t max,
                      uint64_t *v) {
    const s_field_t *f = s_find(mp, key);
    if (f == NULL) return required ? s_missing(c, mp, key) : 0;
    zb_mp_reader_t r;
    s_open(f, &r);
    uint64_t x;
    if (zb_mp_read_uint(&r, &x) < 0) return s_wrong(c, mp, key, "uint", &r);
    if (x > max)
        return s_fail(c, S_BAD, "%s%s: %llu is out of range (at most %llu)", mp->pre, key,
                      (unsigned long long)x, (unsigned long long)max);
    *v = x;
    return 1;
}

static int s_get_u32(s_ctx_t *c, const s_map_t *mp, const char *key, bool required, uint32_t *v) {
    uint64_t x = 0;
    int rc = s_get_uint(c, mp, key, required, UINT32_MAX, &x);
    if (rc > 0) *v = (uint32_t)x;
    return rc;
}

static int s_get_str(s_ctx_t *c, const s_map_t *mp, const char *key, bool required,
                     zb_msg_str_t *v) {
    const s_field_t *f = s_find(mp, key);
    if (f == NULL) return required ? s_missing(c, mp, key) : 0;
    zb_mp_reader_t r;
    s_open(f, &r);
    if (zb_mp_read_str(&r, &v->ptr, &v->len) < 0) return s_wrong(c, mp, key, "str", &r);
    return 1;
}

static int s_get_bool(s_ctx_t *c, const s_map_t *mp, const char *key, bool *v) {
    const s_field_t *f = s_find(mp, key);
    if (f == NULL) return 0;
    zb_mp_reader_t r;
    s_open(f, &r);
    if (zb_mp_read_bool(&r, v) < 0) return s_wrong(c, mp, key, "bool", &r);
    return 1;
}

static int s_get_float(s_ctx_t *c, const s_map_t *mp, const char *key, double *v) {
    const s_field_t *f = s_find(mp, key);
    if (f == NULL) return s_missing(c, mp, key);
    zb_mp_reader_t r;
    s_open(f, &r);
    if (zb_mp_read_float(&r, v) < 0) return s_wrong(c, mp, key, "float", &r);
    return 1;
}

/* An optional id: absent or nil leaves len 0; present, it must not be
 * empty (len 0 means absent in the struct). */
static int s_get_opt_id(s_ctx_t *c, const s_map_t *mp, zb_msg_str_t *v) {
    int rc = s_get_str(c, mp, "id", false, v);
    if (rc > 0 && v->len == 0) return s_fail(c, S_BAD, "id: empty; omit the key instead");
    return rc;
}

/* An optional str of 1 or more bytes under key: absent or nil leaves len
 * 0; present, it must not be empty (len 0 means absent in the struct). */
static int s_get_opt_str(s_ctx_t *c, const s_map_t *mp, const char *key, zb_msg_str_t *v) {
    int rc = s_get_str(c, mp, key, false, v);
    if (rc > 0 && v->len == 0)
        return s_fail(c, S_BAD, "%s%s: empty; omit the key instead", mp->pre, key);
    return rc;
}

/* A str naming one of names[first..n). */
static int s_get_name(s_ctx_t *c, const s_map_t *mp, const char *key, bool required,
                      const char *const *names, int first, int n, int *v) {
    zb_msg_str_t s;
    int rc = s_get_str(c, mp, key, required, &s);
    if (rc <= 0) return rc;
    int k = s_lookup(names, first, n, s.ptr, s.len);
    if (k < 0)
        return s_fail(c, S_BAD, "%s%s: `%.*s` is not one of the known values", mp->pre, key,
                      (int)(s.len > 32 ? 32 : s.len), s.ptr);
    *v = k;
    return 1;
}

/* Refuses s, the value of key, as naming nothing this version knows. */
static int s_unknown_name(s_ctx_t *c, const s_map_t *mp, const char *key, zb_msg_str_t s) {
    return s_fail(c, S_BAD, "%s%s: `%.*s` is not one of the known values", mp->pre, key,
                  (int)(s.len > 32 ? 32 : s.len), s.ptr);
}

/* The level, named by key (options.h's names). */
static int s_get_level(s_ctx_t *c, const s_map_t *mp, bool required, zb_level_t *v) {
    zb_msg_str_t s;
    int rc = s_get_str(c, mp, "level", required, &s);
    if (rc <= 0) return rc;
    if (zb_options_level_parse(s.ptr, s.len, v, NULL) < 0) return s_unknown_name(c, mp, "level", s);
    return 1;
}

/* An error code: a name this version does not know decodes as UNKNOWN
 * (later versions may add codes; the request failed all the same). */
static int s_get_code(s_ctx_t *c, const s_map_t *mp, const char *key, zb_msg_code_t *v) {
    zb_msg_str_t s;
    int rc = s_get_str(c, mp, key, true, &s);
    if (rc <= 0) return rc;
    int k = s_lookup(s_code_names, ZB_MSG_CODE_BAD_REQUEST, ZB_MSG_CODE_UNKNOWN, s.ptr, s.len);
    *v = k < 0 ? ZB_MSG_CODE_UNKNOWN : (zb_msg_code_t)k;
    return 1;
}

/* An array header; returns its count through n. */
static int s_get_array(s_ctx_t *c, const s_map_t *mp, const char *key, bool required,
                       zb_mp_reader_t *r, size_t *n) {
    const s_field_t *f = s_find(mp, key);
    if (f == NULL) return required ? s_missing(c, mp, key) : 0;
    s_open(f, r);
    if (zb_mp_read_array(r, n) < 0) return s_wrong(c, mp, key, "array", r);
    return 1;
}

/* --- decoding: fields ----------------------------------------------------- */

/* An embed's have: an array of uint32 (s_check_have judges the pairs). */
static int s_dec_have(s_ctx_t *c, const s_map_t *mp, zb_msg_embed_t *e) {
    zb_mp_reader_t r;
    size_t n;
    int rc = s_get_array(c, mp, "have", false, &r, &n);
    if (rc <= 0) return rc;
    /* each pair covers at least one text (locate bounded n by the bytes) */
    if (n > 2 * (size_t)ZB_MSG_TEXTS_MAX)
        return s_fail(c, S_BAD, "have: %zu entries, more than two per text", n);
    uint32_t *h;
    if ((rc = s_alloc(c->m, n, sizeof *h, (void **)&h)) < 0) return rc;
    for (size_t k = 0; k < n; k++) {
        uint64_t x;
        if (zb_mp_read_uint(&r, &x) < 0 || x > UINT32_MAX)
            return s_fail(c, S_BAD, "have[%zu]: expected a uint below 2^32", k);
        h[k] = (uint32_t)x;
    }
    e->have = h;
    e->n_have = n;
    return 0;
}

/* A status reply's open: an array of str (ids). */
static int s_dec_open(s_ctx_t *c, const s_map_t *mp, zb_msg_status_reply_t *s) {
    zb_mp_reader_t r;
    size_t n;
    int rc = s_get_array(c, mp, "open", false, &r, &n);
    if (rc <= 0) return rc;
    if (n > ZB_MSG_OPEN_MAX)
        return s_fail(c, S_BAD, "open: %zu ids exceed the limit of %u", n, ZB_MSG_OPEN_MAX);
    zb_msg_str_t *ids;
    if ((rc = s_alloc(c->m, n, sizeof *ids, (void **)&ids)) < 0) return rc;
    for (size_t k = 0; k < n; k++)
        if (zb_mp_read_str(&r, &ids[k].ptr, &ids[k].len) < 0)
            return s_fail(c, S_BAD, "open[%zu]: expected str, found %s", k, s_found(&r));
    s->open = ids;
    s->n_open = n;
    return 0;
}

static int s_dec_texts(s_ctx_t *c, const s_map_t *mp, const zb_msg_str_t **texts, size_t *n) {
    zb_mp_reader_t r;
    int rc = s_get_array(c, mp, "texts", true, &r, n);
    if (rc < 0) return rc;
    /* The limit before allocating (locate checked the count against the
     * bytes). */
    if ((rc = s_check_n_texts(c, *n)) < 0) return rc;
    zb_msg_str_t *t;
    if ((rc = s_alloc(c->m, *n, sizeof *t, (void **)&t)) < 0) return rc;
    for (size_t i = 0; i < *n; i++) {
        /* A text may come as bin: its bytes are the engine's to judge. */
        const uint8_t *b;
        if (zb_mp_read_str(&r, &t[i].ptr, &t[i].len) == 0) continue;
        if (zb_mp_read_bin(&r, &b, &t[i].len) == 0) {
            t[i].ptr = (const char *)b;
            continue;
        }
        return s_fail(c, S_BAD, "texts[%zu]: expected str, found %s", i, s_found(&r));
    }
    *texts = t;
    return 0;
}

/* The options of embed and task: absent keys keep their zero defaults.
 * The conversion from the wire (names, flags) is here and in
 * s_write_options, nowhere else. */
static int s_dec_options(s_ctx_t *c, const s_map_t *mp, zb_options_t *o) {
    int rc;
    zb_msg_str_t s;
    memset(o, 0, sizeof *o);
    if ((rc = s_get_level(c, mp, false, &o->level)) < 0) return rc;
    if ((rc = s_get_str(c, mp, "pooling", false, &s)) < 0) return rc;
    if (rc > 0 && zb_options_pooling_parse(s.ptr, s.len, &o->pooling, NULL) < 0)
        return s_unknown_name(c, mp, "pooling", s);
    if ((rc = s_get_bool(c, mp, "normalize", &o->normalize)) < 0) return rc;
    if ((rc = s_get_bool(c, mp, "windows", &o->windows)) < 0) return rc;
    if ((rc = s_get_bool(c, mp, "sentences", &o->sentences)) < 0) return rc;
    if ((rc = s_get_str(c, mp, "token_vector", false, &s)) < 0) return rc;
    if (rc > 0 && zb_options_token_vector_parse(s.ptr, s.len, &o->token_vector, NULL) < 0)
        return s_unknown_name(c, mp, "token_vector", s);
    if ((rc = s_get_str(c, mp, "compat", false, &s)) < 0) return rc;
    if (rc > 0 && zb_options_compat_parse(s.ptr, s.len, &o->compat, NULL) < 0)
        return s_unknown_name(c, mp, "compat", s);
    if ((rc = s_get_bool(c, mp, "token_meta", &o->token_meta)) < 0) return rc;
    return 0;
}

/*
 * An array of count arrays of uint (or, with as_bool, of bool), the i-th of
 * per_text * rows[i] entries, into one flat [per_text * n_rows] array of
 * uint32_t (bool).  Absent: *out NULL.
 */
static int s_dec_per_row_of(s_ctx_t *c, const s_map_t *mp, const char *key, bool want,
                            const zb_msg_vectors_t *v, uint32_t *rows, unsigned per_text,
                            bool as_bool, const void **out) {
    zb_mp_reader_t r;
    size_t n;
    *out = NULL;
    int rc = s_get_array(c, mp, key, false, &r, &n);
    if (rc < 0) return rc;
    if (rc == 0) return want ? s_missing(c, mp, key) : 0;
    if (!want)
        return s_fail(c, S_BAD, "%s: not sent at the %s level", key,
                      zb_options_level_name(v->level));
    if (n != v->count) return s_fail(c, S_BAD, "%s: %zu entries for %u texts", key, n, v->count);
    /* n_rows * per_text <= 2 * 100000 * 2^32: no overflow.  Each entry
     * takes at least a byte, so a total larger than the span cannot be
     * true: then nothing is allocated, and the walk below still runs (not
     * storing) to name the first entry that is wrong. */
    uint64_t total = v->n_rows * per_text;
    bool lie = total > zb_mp_left(&r);
    uint32_t *a = NULL;
    bool *ab = NULL;
    if (!lie && !as_bool && (rc = s_alloc(c->m, (size_t)total, sizeof *a, (void **)&a)) < 0)
        return rc;
    if (!lie && as_bool && (rc = s_alloc(c->m, (size_t)total, sizeof *ab, (void **)&ab)) < 0)
        return rc;
    size_t at = 0;
    for (uint32_t i = 0; i < v->count; i++) {
        size_t m;
        if (zb_mp_read_array(&r, &m) < 0)
            return s_fail(c, S_BAD, "%s[%u]: expected array, found %s", key, i, s_found(&r));
        if (m != (uint64_t)rows[i] * per_text)
            return s_fail(c, S_BAD, "%s[%u]: %zu entries, rows[%u] = %u needs %llu", key, i, m, i,
                          rows[i], (unsigned long long)rows[i] * per_text);
        for (size_t k = 0; k < m; k++) {
            uint64_t x;
            if (as_bool) {
                bool b;
                if (zb_mp_read_bool(&r, &b) < 0)
                    return s_fail(c, S_BAD, "%s[%u][%zu]: expected bool, found %s", key, i, k,
                                  s_found(&r));
                if (!lie) ab[at++] = b;
                continue;
            }
            if (zb_mp_read_uint(&r, &x) < 0)
                return s_fail(c, S_BAD, "%s[%u][%zu]: expected uint, found %s", key, i, k,
                              s_found(&r));
            if (x > UINT32_MAX)
                return s_fail(c, S_BAD, "%s[%u][%zu]: %llu is out of range", key, i, k,
                              (unsigned long long)x);
            if (!lie) a[at++] = (uint32_t)x;
        }
    }
    if (lie)
        return s_fail(c, S_BAD, "%s: %llu entries cannot fit in its %zu bytes", key,
                      (unsigned long long)total, zb_mp_left(&r));
    *out = as_bool ? (const void *)ab : (const void *)a;
    return 0;
}

static int s_dec_per_row(s_ctx_t *c, const s_map_t *mp, const char *key, bool want,
                         const zb_msg_vectors_t *v, uint32_t *rows, unsigned per_text,
                         const uint32_t **out) {
    const void *p = NULL;
    int rc = s_dec_per_row_of(c, mp, key, want, v, rows, per_text, false, &p);
    *out = p;
    return rc;
}

/* The keys of token metadata, in the order they are written. */
static const char *const s_meta_keys[4] = {"sentence", "piece_id", "word_start", "oov"};

/* Token metadata: present when any of its keys is (then all four are
 * required), at the token level only.  The four per-row arrays of the wire
 * become one zb_token_meta_t per row here: an oov row's wire piece 0 is
 * -1, the fields the wire does not carry are row 0 and spans -1. */
static int s_dec_meta(s_ctx_t *c, const s_map_t *mp, zb_msg_vectors_t *v, uint32_t *rows) {
    const char *first = NULL;
    for (int k = 0; k < 4 && first == NULL; k++)
        if (s_find(mp, s_meta_keys[k])) first = s_meta_keys[k];
    v->token_meta = first != NULL;
    if (first == NULL) return 0;
    if (v->level != ZB_LEVEL_TOKEN)
        return s_fail(c, S_BAD, "%s: token metadata is sent at the token level only, not %s", first,
                      zb_options_level_name(v->level));
    int rc;
    const uint32_t *sent, *piece;
    const void *start, *oov;
    if ((rc = s_dec_per_row(c, mp, "sentence", true, v, rows, 1, &sent)) < 0 ||
        (rc = s_dec_per_row(c, mp, "piece_id", true, v, rows, 1, &piece)) < 0 ||
        (rc = s_dec_per_row_of(c, mp, "word_start", true, v, rows, 1, true, &start)) < 0 ||
        (rc = s_dec_per_row_of(c, mp, "oov", true, v, rows, 1, true, &oov)) < 0)
        return rc;
    const bool *ws = start, *ov = oov;
    for (uint64_t k = 0; k < v->n_rows; k++) {
        if (ov[k] && piece[k] != 0)
            return s_fail(c, S_BAD, "piece_id: row %llu is oov but has piece %u (0 expected)",
                          (unsigned long long)k, piece[k]);
        if (piece[k] > INT32_MAX)
            return s_fail(c, S_BAD, "piece_id: row %llu has piece %u, not a vocabulary id",
                          (unsigned long long)k, piece[k]);
    }
    /* Rows were counted against the bytes of the arrays just read: each
     * took at least one byte of the body. */
    zb_token_meta_t *m;
    if ((rc = s_alloc(c->m, (size_t)v->n_rows, sizeof *m, (void **)&m)) < 0) return rc;
    for (uint64_t k = 0; k < v->n_rows; k++)
        m[k] = (zb_token_meta_t){.sentence = sent[k],
                                 .piece_id = ov[k] ? -1 : (int32_t)piece[k],
                                 .begin16 = -1,
                                 .end16 = -1,
                                 .word_start = ws[k],
                                 .oov = ov[k]};
    v->meta = m;
    return 0;
}

static int s_dec_errors(s_ctx_t *c, const s_map_t *mp, zb_msg_vectors_t *v) {
    zb_mp_reader_t r;
    size_t n;
    int rc = s_get_array(c, mp, "errors", false, &r, &n);
    if (rc <= 0) return rc;
    if (n > v->count) return s_fail(c, S_BAD, "errors: %zu entries for %u texts", n, v->count);
    zb_msg_text_error_t *e;
    if ((rc = s_alloc(c->m, n, sizeof *e, (void **)&e)) < 0) return rc;
    for (size_t k = 0; k < n; k++) {
        char name[32];
        s_map_t em;
        snprintf(name, sizeof name, "errors[%zu]", k);
        if ((rc = s_locate(c, &r, 3, name, &em)) < 0) return rc;
        strcat(name, ".");
        em.pre = name;
        if ((rc = s_get_u32(c, &em, "index", true, &e[k].index)) < 0) return rc;
        if ((rc = s_get_code(c, &em, "code", &e[k].code)) < 0) return rc;
        e[k].message = (zb_msg_str_t){NULL, 0};
        if ((rc = s_get_str(c, &em, "message", true, &e[k].message)) < 0) return rc;
    }
    v->errors = e;
    v->n_errors = n;
    return 0;
}

/* The payload of part (count given) and result (count = len(rows)). */
static int s_dec_vectors(s_ctx_t *c, const s_map_t *mp, bool has_count, zb_msg_vectors_t *v) {
    int rc;
    uint64_t count = 0;
    if ((rc = s_get_level(c, mp, true, &v->level)) < 0) return rc;
    if ((rc = s_get_u32(c, mp, "dim", true, &v->dim)) < 0) return rc;
    /* Now rather than in the check: dim sizes the vectors' check below. */
    if ((rc = s_check_range(c, "dim", v->dim, 1, ZB_HIDDEN_MAX)) < 0) return rc;
    if (has_count && (rc = s_get_uint(c, mp, "count", true, UINT64_MAX, &count)) < 0) return rc;

    zb_mp_reader_t r;
    size_t n;
    if ((rc = s_get_array(c, mp, "rows", true, &r, &n)) < 0) return rc;
    if (has_count && n != count)
        return s_fail(c, S_BAD, "rows: %zu entries, count is %llu", n, (unsigned long long)count);
    if (n == 0) return s_fail(c, S_BAD, "rows: a message covers at least one text");
    if (n > ZB_MSG_TEXTS_MAX)
        return s_fail(c, S_LARGE, "rows: %zu texts exceed the limit of %u per message", n,
                      ZB_MSG_TEXTS_MAX);
    uint32_t *rows;
    if ((rc = s_alloc(c->m, n, sizeof *rows, (void **)&rows)) < 0) return rc;
    v->count = (uint32_t)n;
    v->n_rows = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t x;
        if (zb_mp_read_uint(&r, &x) < 0)
            return s_fail(c, S_BAD, "rows[%zu]: expected uint, found %s", i, s_found(&r));
        if (x > UINT32_MAX)
            return s_fail(c, S_BAD, "rows[%zu]: %llu is out of range", i, (unsigned long long)x);
        rows[i] = (uint32_t)x;
        v->n_rows += x;
    }
    v->rows = rows;

    const s_field_t *f = s_find(mp, "vectors");
    if (f == NULL) return s_missing(c, mp, "vectors");
    s_open(f, &r);
    const uint8_t *b;
    if (zb_mp_read_bin(&r, &b, &v->vectors_len) < 0) return s_wrong(c, mp, "vectors", "bin", &r);
    v->vectors = v->vectors_len > 0 ? b : NULL;
    /* The vectors bound n_rows, which sizes what follows: check it now. */
    uint64_t bytes;
    if (__builtin_mul_overflow(v->n_rows, (uint64_t)v->dim * 4u, &bytes) || bytes != v->vectors_len)
        return s_fail(c, S_BAD, "vectors: %zu bytes, but %llu rows x dim %u x 4 bytes make %llu",
                      v->vectors_len, (unsigned long long)v->n_rows, v->dim,
                      (unsigned long long)v->n_rows * v->dim * 4u);

    bool spans = v->level != ZB_LEVEL_SENTENCE, ids = v->level == ZB_LEVEL_WORDPIECE;
    if ((rc = s_dec_per_row(c, mp, "offsets", spans, v, rows, 2, &v->offsets)) < 0) return rc;
    rc = s_dec_per_row(c, mp, "byte_offsets", spans, v, rows, 2, &v->byte_offsets);
    if (rc < 0) return rc;
    if ((rc = s_dec_per_row(c, mp, "ids", ids, v, rows, 1, &v->ids)) < 0) return rc;
    if ((rc = s_dec_meta(c, mp, v, rows)) < 0) return rc;

    if ((rc = s_get_array(c, mp, "truncated", false, &r, &n)) < 0) return rc;
    if (rc > 0) {
        if (n > v->count)
            return s_fail(c, S_BAD, "truncated: %zu entries for %u texts", n, v->count);
        uint32_t *t;
        if ((rc = s_alloc(c->m, n, sizeof *t, (void **)&t)) < 0) return rc;
        for (size_t k = 0; k < n; k++) {
            uint64_t x;
            if (zb_mp_read_uint(&r, &x) < 0)
                return s_fail(c, S_BAD, "truncated[%zu]: expected uint, found %s", k, s_found(&r));
            if (x > UINT32_MAX)
                return s_fail(c, S_BAD, "truncated[%zu]: %llu is out of range", k,
                              (unsigned long long)x);
            t[k] = (uint32_t)x;
        }
        v->truncated = t;
        v->n_truncated = n;
    }
    return s_dec_errors(c, mp, v);
}

static int s_dec_workers(s_ctx_t *c, const s_map_t *mp, zb_msg_status_reply_t *s) {
    zb_mp_reader_t r;
    size_t n;
    int rc = s_get_array(c, mp, "workers", true, &r, &n);
    if (rc < 0) return rc;
    if (n > ZB_MSG_WORKERS_MAX)
        return s_fail(c, S_BAD, "workers: %zu entries exceed the limit of %u", n,
                      ZB_MSG_WORKERS_MAX);
    zb_msg_worker_info_t *w;
    if ((rc = s_alloc(c->m, n, sizeof *w, (void **)&w)) < 0) return rc;
    for (size_t k = 0; k < n; k++) {
        char name[32];
        s_map_t wm;
        snprintf(name, sizeof name, "workers[%zu]", k);
        if ((rc = s_locate(c, &r, 3, name, &wm)) < 0) return rc;
        strcat(name, ".");
        wm.pre = name;
        memset(&w[k], 0, sizeof w[k]);
        if ((rc = s_get_str(c, &wm, "name", true, &w[k].name)) < 0 ||
            (rc = s_get_str(c, &wm, "model", true, &w[k].model)) < 0 ||
            (rc = s_get_u32(c, &wm, "dim", true, &w[k].dim)) < 0 ||
            (rc = s_get_u32(c, &wm, "threads", true, &w[k].threads)) < 0 ||
            (rc = s_get_u32(c, &wm, "credit", true, &w[k].credit)) < 0 ||
            (rc = s_get_uint(c, &wm, "in_flight", true, UINT64_MAX, &w[k].in_flight)) < 0 ||
            (rc = s_get_uint(c, &wm, "shards", true, UINT64_MAX, &w[k].shards)) < 0 ||
            (rc = s_get_uint(c, &wm, "tokens", true, UINT64_MAX, &w[k].tokens)) < 0 ||
            (rc = s_get_uint(c, &wm, "idle_ms", true, UINT64_MAX, &w[k].idle_ms)) < 0 ||
            (rc = s_get_uint(c, &wm, "quarantined_ms", false, UINT64_MAX, &w[k].quarantined_ms)) <
                0)
            return rc;
    }
    s->workers = w;
    s->n_workers = n;
    return 0;
}

static int s_dec_status_reply(s_ctx_t *c, const s_map_t *mp, zb_msg_status_reply_t *s) {
    int rc;
    if ((rc = s_get_opt_id(c, mp, &s->id)) < 0 ||
        (rc = s_get_uint(c, mp, "uptime_ms", true, UINT64_MAX, &s->uptime_ms)) < 0 ||
        (rc = s_dec_workers(c, mp, s)) < 0 ||
        (rc = s_get_uint(c, mp, "requests", true, UINT64_MAX, &s->requests)) < 0 ||
        (rc = s_get_uint(c, mp, "queued_shards", true, UINT64_MAX, &s->queued_shards)) < 0 ||
        (rc = s_get_uint(c, mp, "queued_texts", true, UINT64_MAX, &s->queued_texts)) < 0 ||
        (rc = s_get_uint(c, mp, "in_flight_shards", true, UINT64_MAX, &s->in_flight_shards)) < 0 ||
        (rc = s_get_float(c, mp, "texts_per_s", &s->texts_per_s)) < 0 ||
        (rc = s_get_float(c, mp, "tokens_per_s", &s->tokens_per_s)) < 0 ||
        (rc = s_get_uint(c, mp, "protocol_errors", true, UINT64_MAX, &s->protocol_errors)) < 0 ||
        (rc = s_get_uint(c, mp, "bad_results", false, UINT64_MAX, &s->bad_results)) < 0 ||
        (rc = s_dec_open(c, mp, s)) < 0)
        return rc;
    const s_field_t *f = s_find(mp, "latency_ms");
    if (f == NULL) return s_missing(c, mp, "latency_ms");
    zb_mp_reader_t r;
    s_map_t lm;
    s_open(f, &r);
    if ((rc = s_locate(c, &r, 2, "latency_ms", &lm)) < 0) return rc;
    lm.pre = "latency_ms.";
    if ((rc = s_get_float(c, &lm, "p50", &s->latency_p50_ms)) < 0 ||
        (rc = s_get_float(c, &lm, "p90", &s->latency_p90_ms)) < 0 ||
        (rc = s_get_float(c, &lm, "p99", &s->latency_p99_ms)) < 0)
        return rc;
    /* The security keys travel together: one without the others is a
     * broken reply, not an older broker's. */
    if ((rc = s_get_bool(c, mp, "curve", &s->curve)) < 0) return rc;
    s->has_security = rc > 0;
    bool req = s->has_security;
    int r1, r2;
    if ((r1 = s_get_uint(c, mp, "refused_clients", req, UINT64_MAX, &s->refused_clients)) < 0)
        return r1;
    if ((r2 = s_get_uint(c, mp, "refused_workers", req, UINT64_MAX, &s->refused_workers)) < 0)
        return r2;
    if (!req && (r1 > 0 || r2 > 0))
        return s_fail(c, S_BAD, "refused_clients and refused_workers come with curve");
    return 0;
}

/* The fields of message type t from the body map. */
static int s_dec_fields(s_ctx_t *c, const s_map_t *mp, zb_msg_t *m) {
    int rc = 0;
    switch (m->type) {
    case ZB_MSG_EMBED: {
        zb_msg_embed_t *e = &m->u.embed;
        if ((rc = s_get_str(c, mp, "id", true, &e->id)) < 0 ||
            (rc = s_dec_texts(c, mp, &e->texts, &e->n_texts)) < 0 ||
            (rc = s_dec_options(c, mp, &e->opt)) < 0 ||
            (rc = s_get_uint(c, mp, "deadline_ms", false, UINT64_MAX, &e->deadline_ms)) < 0 ||
            (rc = s_dec_have(c, mp, e)) < 0 || (rc = s_get_opt_str(c, mp, "model", &e->model)) < 0)
            return rc;
        return 0;
    }
    case ZB_MSG_CANCEL:
        return s_get_str(c, mp, "id", true, &m->u.cancel.id);
    case ZB_MSG_STATUS:
        return s_get_opt_id(c, mp, &m->u.status.id);
    case ZB_MSG_PART: {
        zb_msg_part_t *p = &m->u.part;
        if ((rc = s_get_str(c, mp, "id", true, &p->id)) < 0 ||
            (rc = s_get_u32(c, mp, "first", true, &p->first)) < 0 ||
            (rc = s_get_opt_str(c, mp, "model", &p->model)) < 0)
            return rc;
        return s_dec_vectors(c, mp, true, &p->vec);
    }
    case ZB_MSG_DONE: {
        zb_msg_done_t *e = &m->u.done;
        if ((rc = s_get_str(c, mp, "id", true, &e->id)) < 0 ||
            (rc = s_get_uint(c, mp, "texts", true, UINT64_MAX, &e->texts)) < 0 ||
            (rc = s_get_uint(c, mp, "tokens", true, UINT64_MAX, &e->tokens)) < 0 ||
            (rc = s_get_uint(c, mp, "parts", true, UINT64_MAX, &e->parts)) < 0 ||
            (rc = s_get_uint(c, mp, "elapsed_ms", true, UINT64_MAX, &e->elapsed_ms)) < 0 ||
            (rc = s_get_opt_str(c, mp, "model", &e->model)) < 0)
            return rc;
        return 0;
    }
    case ZB_MSG_ERROR: {
        zb_msg_error_t *e = &m->u.error;
        if ((rc = s_get_opt_id(c, mp, &e->id)) < 0 ||
            (rc = s_get_code(c, mp, "code", &e->code)) < 0 ||
            (rc = s_get_str(c, mp, "message", true, &e->message)) < 0 ||
            (rc = s_get_opt_str(c, mp, "of", &e->of)) < 0)
            return rc;
        return 0;
    }
    case ZB_MSG_STATUS_REPLY:
        return s_dec_status_reply(c, mp, &m->u.status_reply);
    case ZB_MSG_READY: {
        zb_msg_ready_t *e = &m->u.ready;
        if ((rc = s_get_str(c, mp, "name", true, &e->name)) < 0 ||
            (rc = s_get_str(c, mp, "model", true, &e->model)) < 0 ||
            (rc = s_get_u32(c, mp, "dim", true, &e->dim)) < 0 ||
            (rc = s_get_u32(c, mp, "threads", true, &e->threads)) < 0 ||
            (rc = s_get_u32(c, mp, "credit", true, &e->credit)) < 0 ||
            (rc = s_get_uint(c, mp, "epoch", true, UINT64_MAX, &e->epoch)) < 0)
            return rc;
        return 0;
    }
    case ZB_MSG_TASK: {
        zb_msg_task_t *t = &m->u.task;
        if ((rc = s_get_uint(c, mp, "shard", true, UINT64_MAX, &t->shard)) < 0 ||
            (rc = s_get_uint(c, mp, "epoch", true, UINT64_MAX, &t->epoch)) < 0 ||
            (rc = s_dec_texts(c, mp, &t->texts, &t->n_texts)) < 0 ||
            (rc = s_dec_options(c, mp, &t->opt)) < 0)
            return rc;
        return 0;
    }
    case ZB_MSG_RESULT: {
        zb_msg_result_t *t = &m->u.result;
        if ((rc = s_get_uint(c, mp, "shard", true, UINT64_MAX, &t->shard)) < 0 ||
            (rc = s_get_uint(c, mp, "epoch", true, UINT64_MAX, &t->epoch)) < 0 ||
            (rc = s_get_uint(c, mp, "tokens", true, UINT64_MAX, &t->tokens)) < 0)
            return rc;
        return s_dec_vectors(c, mp, false, &t->vec);
    }
    case ZB_MSG_CLOSING:
        return s_get_str(c, mp, "message", false, &m->u.closing.message);
    default:
        return 0; /* heartbeat, bye, reconnect: nothing beyond v and type */
    }
}

int zb_msg_decode(const void *body, size_t len, zb_msg_t *out, zb_diag_t *d) {
    if (out == NULL || (body == NULL && len > 0))
        return zb_diag_set(d, ZB_EINVAL, "zb_msg_decode: NULL body or message");
    memset(out, 0, sizeof *out);
    zb_diag_set(d, 0, NULL);
    s_ctx_t c = {.m = out, .d = d, .what = "message", .enc = false};
    s_map_t *top = NULL;
    int rc;
    if (len > ZB_MSG_BODY_MAX) {
        rc = s_fail(&c, S_LARGE, "%zu bytes exceed the body limit of %u", len, ZB_MSG_BODY_MAX);
        goto out;
    }
    /* 2 KiB of spans: on the heap, so that nested decoding stays light on
     * the stack of the broker's poll loop. */
    top = malloc(sizeof *top);
    if (top == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "message: out of memory");
        goto out;
    }
    top->pre = "";
    zb_mp_reader_t r;
    zb_mp_reader_init(&r, body, len);
    if ((rc = s_locate(&c, &r, 1, "body", top)) < 0) goto out;
    if (zb_mp_left(&r) > 0) {
        rc = s_fail(&c, S_BAD, "%zu bytes follow the body's map", zb_mp_left(&r));
        goto out;
    }

    /* The id first, so that even a rejected request can be answered. */
    zb_msg_str_t id = {NULL, 0};
    s_ctx_t quiet = {.m = out, .d = NULL, .what = "", .enc = false};
    if (s_get_str(&quiet, top, "id", false, &id) > 0 && s_check_id(&quiet, id, false) == 0)
        out->reject_id = id;
    out->reject = ZB_MSG_CODE_NONE;

    uint64_t v = 0;
    if ((rc = s_get_uint(&c, top, "v", true, UINT64_MAX, &v)) < 0) goto out;
    if (v != ZB_MSG_VERSION) {
        rc = s_fail(&c, ZB_MSG_CODE_VERSION, "v is %llu; this receiver speaks version %d",
                    (unsigned long long)v, ZB_MSG_VERSION);
        goto out;
    }
    int t = 0;
    rc = s_get_name(&c, top, "type", true, s_type_names, ZB_MSG_EMBED, ZB_MSG_TYPE_COUNT, &t);
    if (rc < 0) {
        /* A str that names no type (a later revision's): the one failure a
         * client may ignore (PROTOCOL.md section 2). */
        zb_msg_str_t ts = {NULL, 0};
        if (s_get_str(&quiet, top, "type", true, &ts) > 0 && zb_mp_utf8_valid(ts.ptr, ts.len))
            out->unknown_type = true;
        goto out;
    }
    out->type = (zb_msg_type_t)t;
    c.what = s_type_names[t];
    if ((rc = s_dec_fields(&c, top, out)) < 0) goto out;
    rc = s_check(&c, out);

out:
    free(top);
    if (rc < 0) {
        /* Keep what the caller needs to answer; drop the rest. */
        zb_msg_t keep = {.type = out->type,
                         .reject = rc == ZB_EPROTO ? out->reject : ZB_MSG_CODE_NONE,
                         .reject_id = out->reject_id,
                         .unknown_type = out->unknown_type};
        size_t mem_bytes = out->mem_bytes;
        s_release(out);
        *out = keep;
        out->mem_bytes = mem_bytes;
        return rc;
    }
    return 0;
}

/* --- encoding ------------------------------------------------------------- */

/*
 * msgpack-c's packer writes every value through a callback.  A body is
 * packed twice by the same s_write(): first into a sink that only counts,
 * then into one allocation of exactly that many bytes, so a vectors bin of
 * 100 MB is copied once and never reallocated (an sbuffer would grow and
 * copy it again).  The copying sink checks every write against its
 * capacity, so a second pass that differs from the first cannot write past
 * the buffer.
 */
typedef struct s_sink {
    uint8_t *buf;  /* copying: the body; counting: NULL */
    size_t cap;    /* bytes of buf */
    size_t len;    /* bytes written (or counted) so far */
    bool overflow; /* a write did not fit, or a length had no encoding */
} s_sink_t;

static int s_sink_count(void *data, const char *p, size_t n) {
    (void)p;
    s_sink_t *s = data;
    if (__builtin_add_overflow(s->len, n, &s->len)) s->overflow = true;
    return s->overflow ? -1 : 0;
}

static int s_sink_copy(void *data, const char *p, size_t n) {
    s_sink_t *s = data;
    if (s->overflow || n > s->cap - s->len) {
        s->overflow = true;
        return -1;
    }
    if (n > 0) memcpy(s->buf + s->len, p, n); /* p may be NULL when n is 0 */
    s->len += n;
    return 0;
}

/* str and bin: msgpack-c would cut a length past 32 bits down to its low
 * bits in the header; such a body is over ZB_MSG_BODY_MAX anyway, so the
 * value is not packed and the sink reports it. */
static bool s_len_ok(msgpack_packer *pk, size_t len) {
    if (len <= UINT32_MAX) return true;
    ((s_sink_t *)pk->data)->overflow = true;
    return false;
}

static void s_pack_str(msgpack_packer *pk, const char *s, size_t len) {
    if (!s_len_ok(pk, len)) return;
    msgpack_pack_str(pk, len); /* fixstr, str 8, 16 or 32: the smallest */
    msgpack_pack_str_body(pk, s, len);
}

static void s_pack_bin(msgpack_packer *pk, const void *b, size_t len) {
    if (!s_len_ok(pk, len)) return;
    msgpack_pack_bin(pk, len);
    msgpack_pack_bin_body(pk, b, len);
}

static void s_key(msgpack_packer *pk, const char *k) {
    s_pack_str(pk, k, strlen(k));
}

static void s_kstr(msgpack_packer *pk, const char *k, zb_msg_str_t s) {
    s_key(pk, k);
    s_pack_str(pk, s.ptr, s.len);
}

static void s_kuint(msgpack_packer *pk, const char *k, uint64_t v) {
    s_key(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void s_kname(msgpack_packer *pk, const char *k, const char *name) {
    s_key(pk, k);
    s_pack_str(pk, name, strlen(name));
}

/* The map header and the two keys of every message. */
static void s_write_head(msgpack_packer *pk, uint32_t n_keys, zb_msg_type_t t) {
    msgpack_pack_map(pk, n_keys + 2);
    s_kuint(pk, "v", ZB_MSG_VERSION);
    s_kname(pk, "type", s_type_names[t]);
}

static void s_write_texts(msgpack_packer *pk, const zb_msg_str_t *texts, size_t n) {
    s_key(pk, "texts");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) s_pack_str(pk, texts[i].ptr, texts[i].len);
}

/* Keys written for options: level always, the others when not default. */
static uint32_t s_options_keys(const zb_options_t *o) {
    return 1u + (o->pooling != ZB_POOLING_CLS) + o->normalize + o->windows + o->sentences +
           (o->token_vector != ZB_TOKEN_VECTOR_FIRST) + (o->compat != ZB_COMPAT_NONE) +
           o->token_meta;
}

static void s_kflag(msgpack_packer *pk, const char *k) {
    s_key(pk, k);
    msgpack_pack_true(pk);
}

static void s_write_options(msgpack_packer *pk, const zb_options_t *o) {
    s_kname(pk, "level", zb_options_level_name(o->level));
    if (o->pooling != ZB_POOLING_CLS) s_kname(pk, "pooling", zb_options_pooling_name(o->pooling));
    if (o->normalize) s_kflag(pk, "normalize");
    if (o->windows) s_kflag(pk, "windows");
    if (o->sentences) s_kflag(pk, "sentences");
    if (o->token_vector != ZB_TOKEN_VECTOR_FIRST)
        s_kname(pk, "token_vector", zb_options_token_vector_name(o->token_vector));
    if (o->compat != ZB_COMPAT_NONE) s_kname(pk, "compat", zb_options_compat_name(o->compat));
    if (o->token_meta) s_kflag(pk, "token_meta");
}

static uint32_t s_vectors_keys(const zb_msg_vectors_t *v) {
    return 4u + 2u * (v->level != ZB_LEVEL_SENTENCE) + (v->level == ZB_LEVEL_WORDPIECE) +
           4u * v->token_meta + (v->n_truncated > 0) + (v->n_errors > 0);
}

static void s_write_per_row(msgpack_packer *pk, const char *k, const zb_msg_vectors_t *v,
                            const uint32_t *a, unsigned per_text) {
    s_key(pk, k);
    msgpack_pack_array(pk, v->count);
    size_t at = 0;
    for (uint32_t i = 0; i < v->count; i++) {
        uint32_t m = v->rows[i] * per_text; /* rows[i] <= n_rows <= 2^30 */
        msgpack_pack_array(pk, m);
        for (uint32_t k2 = 0; k2 < m; k2++) msgpack_pack_uint64(pk, a[at++]);
    }
}

static void s_pack_bool(msgpack_packer *pk, bool b) {
    if (b)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* One field of the token metadata rows, as the wire's per-text arrays:
 * sentence, piece_id (0 for an oov row), word_start or oov. */
static void s_write_meta(msgpack_packer *pk, int field, const zb_msg_vectors_t *v) {
    s_key(pk, s_meta_keys[field]);
    msgpack_pack_array(pk, v->count);
    const zb_token_meta_t *m = v->meta;
    for (uint32_t i = 0; i < v->count; i++) {
        msgpack_pack_array(pk, v->rows[i]);
        for (uint32_t k = 0; k < v->rows[i]; k++, m++) {
            switch (field) {
            case 0:
                msgpack_pack_uint64(pk, m->sentence);
                break;
            case 1:
                msgpack_pack_uint64(pk, m->oov ? 0u : (uint32_t)m->piece_id);
                break;
            case 2:
                s_pack_bool(pk, m->word_start);
                break;
            default:
                s_pack_bool(pk, m->oov);
                break;
            }
        }
    }
}

static void s_write_vectors(msgpack_packer *pk, const zb_msg_vectors_t *v) {
    s_kname(pk, "level", zb_options_level_name(v->level));
    s_kuint(pk, "dim", v->dim);
    s_key(pk, "rows");
    msgpack_pack_array(pk, v->count);
    for (uint32_t i = 0; i < v->count; i++) msgpack_pack_uint64(pk, v->rows[i]);
    s_key(pk, "vectors");
    s_pack_bin(pk, v->vectors, v->vectors_len);
    if (v->level != ZB_LEVEL_SENTENCE) {
        s_write_per_row(pk, "offsets", v, v->offsets, 2);
        s_write_per_row(pk, "byte_offsets", v, v->byte_offsets, 2);
    }
    if (v->level == ZB_LEVEL_WORDPIECE) s_write_per_row(pk, "ids", v, v->ids, 1);
    if (v->token_meta) {
        for (int field = 0; field < 4; field++) s_write_meta(pk, field, v);
    }
    if (v->n_truncated > 0) {
        s_key(pk, "truncated");
        msgpack_pack_array(pk, v->n_truncated);
        for (size_t k = 0; k < v->n_truncated; k++) msgpack_pack_uint64(pk, v->truncated[k]);
    }
    if (v->n_errors > 0) {
        s_key(pk, "errors");
        msgpack_pack_array(pk, v->n_errors);
        for (size_t k = 0; k < v->n_errors; k++) {
            msgpack_pack_map(pk, 3);
            s_kuint(pk, "index", v->errors[k].index);
            s_kname(pk, "code", s_code_names[v->errors[k].code]);
            s_kstr(pk, "message", v->errors[k].message);
        }
    }
}

static void s_write(msgpack_packer *pk, const zb_msg_t *m) {
    switch (m->type) {
    case ZB_MSG_EMBED: {
        const zb_msg_embed_t *e = &m->u.embed;
        s_write_head(pk,
                     2 + s_options_keys(&e->opt) + (e->deadline_ms > 0) + (e->n_have > 0) +
                         (e->model.len > 0),
                     m->type);
        s_kstr(pk, "id", e->id);
        s_write_texts(pk, e->texts, e->n_texts);
        s_write_options(pk, &e->opt);
        if (e->deadline_ms > 0) s_kuint(pk, "deadline_ms", e->deadline_ms);
        if (e->n_have > 0) {
            s_key(pk, "have");
            msgpack_pack_array(pk, e->n_have);
            for (size_t k = 0; k < e->n_have; k++) msgpack_pack_uint32(pk, e->have[k]);
        }
        if (e->model.len > 0) s_kstr(pk, "model", e->model);
        break;
    }
    case ZB_MSG_CANCEL:
        s_write_head(pk, 1, m->type);
        s_kstr(pk, "id", m->u.cancel.id);
        break;
    case ZB_MSG_STATUS:
        s_write_head(pk, m->u.status.id.len > 0, m->type);
        if (m->u.status.id.len > 0) s_kstr(pk, "id", m->u.status.id);
        break;
    case ZB_MSG_PART: {
        const zb_msg_part_t *p = &m->u.part;
        s_write_head(pk, 3 + s_vectors_keys(&p->vec) + (p->model.len > 0), m->type);
        s_kstr(pk, "id", p->id);
        s_kuint(pk, "first", p->first);
        s_kuint(pk, "count", p->vec.count);
        s_write_vectors(pk, &p->vec);
        if (p->model.len > 0) s_kstr(pk, "model", p->model);
        break;
    }
    case ZB_MSG_DONE: {
        const zb_msg_done_t *e = &m->u.done;
        s_write_head(pk, 5 + (e->model.len > 0), m->type);
        s_kstr(pk, "id", e->id);
        s_kuint(pk, "texts", e->texts);
        s_kuint(pk, "tokens", e->tokens);
        s_kuint(pk, "parts", e->parts);
        s_kuint(pk, "elapsed_ms", e->elapsed_ms);
        if (e->model.len > 0) s_kstr(pk, "model", e->model);
        break;
    }
    case ZB_MSG_ERROR: {
        const zb_msg_error_t *e = &m->u.error;
        s_write_head(pk, 2 + (e->id.len > 0) + (e->of.len > 0), m->type);
        if (e->id.len > 0) s_kstr(pk, "id", e->id);
        s_kname(pk, "code", s_code_names[e->code]);
        s_kstr(pk, "message", e->message);
        if (e->of.len > 0) s_kstr(pk, "of", e->of);
        break;
    }
    case ZB_MSG_STATUS_REPLY: {
        const zb_msg_status_reply_t *s = &m->u.status_reply;
        s_write_head(
            pk, 10 + (s->id.len > 0) + (s->bad_results > 0) + 3 * s->has_security + (s->n_open > 0),
            m->type);
        if (s->id.len > 0) s_kstr(pk, "id", s->id);
        s_kuint(pk, "uptime_ms", s->uptime_ms);
        s_key(pk, "workers");
        msgpack_pack_array(pk, s->n_workers);
        for (size_t k = 0; k < s->n_workers; k++) {
            const zb_msg_worker_info_t *wi = &s->workers[k];
            msgpack_pack_map(pk, 9 + (wi->quarantined_ms > 0));
            s_kstr(pk, "name", wi->name);
            s_kstr(pk, "model", wi->model);
            s_kuint(pk, "dim", wi->dim);
            s_kuint(pk, "threads", wi->threads);
            s_kuint(pk, "credit", wi->credit);
            s_kuint(pk, "in_flight", wi->in_flight);
            s_kuint(pk, "shards", wi->shards);
            s_kuint(pk, "tokens", wi->tokens);
            s_kuint(pk, "idle_ms", wi->idle_ms);
            if (wi->quarantined_ms > 0) s_kuint(pk, "quarantined_ms", wi->quarantined_ms);
        }
        s_kuint(pk, "requests", s->requests);
        s_kuint(pk, "queued_shards", s->queued_shards);
        s_kuint(pk, "queued_texts", s->queued_texts);
        s_kuint(pk, "in_flight_shards", s->in_flight_shards);
        s_key(pk, "texts_per_s");
        msgpack_pack_double(pk, s->texts_per_s);
        s_key(pk, "tokens_per_s");
        msgpack_pack_double(pk, s->tokens_per_s);
        s_key(pk, "latency_ms");
        msgpack_pack_map(pk, 3);
        s_key(pk, "p50");
        msgpack_pack_double(pk, s->latency_p50_ms);
        s_key(pk, "p90");
        msgpack_pack_double(pk, s->latency_p90_ms);
        s_key(pk, "p99");
        msgpack_pack_double(pk, s->latency_p99_ms);
        s_kuint(pk, "protocol_errors", s->protocol_errors);
        if (s->bad_results > 0) s_kuint(pk, "bad_results", s->bad_results);
        if (s->has_security) {
            s_key(pk, "curve");
            if (s->curve)
                msgpack_pack_true(pk);
            else
                msgpack_pack_false(pk);
            s_kuint(pk, "refused_clients", s->refused_clients);
            s_kuint(pk, "refused_workers", s->refused_workers);
        }
        if (s->n_open > 0) {
            s_key(pk, "open");
            msgpack_pack_array(pk, s->n_open);
            for (size_t k = 0; k < s->n_open; k++) s_pack_str(pk, s->open[k].ptr, s->open[k].len);
        }
        break;
    }
    case ZB_MSG_READY: {
        const zb_msg_ready_t *e = &m->u.ready;
        s_write_head(pk, 6, m->type);
        s_kstr(pk, "name", e->name);
        s_kstr(pk, "model", e->model);
        s_kuint(pk, "dim", e->dim);
        s_kuint(pk, "threads", e->threads);
        s_kuint(pk, "credit", e->credit);
        s_kuint(pk, "epoch", e->epoch);
        break;
    }
    case ZB_MSG_TASK: {
        const zb_msg_task_t *t = &m->u.task;
        s_write_head(pk, 3 + s_options_keys(&t->opt), m->type);
        s_kuint(pk, "shard", t->shard);
        s_kuint(pk, "epoch", t->epoch);
        s_write_texts(pk, t->texts, t->n_texts);
        s_write_options(pk, &t->opt);
        break;
    }
    case ZB_MSG_RESULT: {
        const zb_msg_result_t *t = &m->u.result;
        s_write_head(pk, 3 + s_vectors_keys(&t->vec), m->type);
        s_kuint(pk, "shard", t->shard);
        s_kuint(pk, "epoch", t->epoch);
        s_kuint(pk, "tokens", t->tokens);
        s_write_vectors(pk, &t->vec);
        break;
    }
    case ZB_MSG_CLOSING:
        s_write_head(pk, m->u.closing.message.len > 0, m->type);
        if (m->u.closing.message.len > 0) s_kstr(pk, "message", m->u.closing.message);
        break;
    default:
        s_write_head(pk, 0, m->type);
        break;
    }
}

int zb_msg_encode(const zb_msg_t *m, uint8_t **out, size_t *out_len, zb_diag_t *d) {
    if (m == NULL || out == NULL || out_len == NULL)
        return zb_diag_set(d, ZB_EINVAL, "zb_msg_encode: NULL argument");
    *out = NULL;
    *out_len = 0;
    s_ctx_t c = {.m = NULL, .d = d, .what = zb_msg_type_name(m->type), .enc = true};
    int rc = s_check(&c, m);
    if (rc < 0) return rc;
    s_sink_t sink = {0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sink, s_sink_count);
    s_write(&pk, m);
    if (sink.overflow || sink.len > ZB_MSG_BODY_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "%s: the body would exceed the limit of %u bytes", c.what,
                           ZB_MSG_BODY_MAX);
    size_t len = sink.len;
    uint8_t *buf = malloc(len);
    if (buf == NULL) return zb_diag_set(d, ZB_ENOMEM, "%s: out of memory", c.what);
    sink = (s_sink_t){.buf = buf, .cap = len};
    msgpack_packer_init(&pk, &sink, s_sink_copy);
    s_write(&pk, m);
    if (sink.overflow || sink.len != len) {
        /* The two passes run the same code on the same struct: only a
         * struct changed by another thread meanwhile gets here. */
        free(buf);
        return zb_diag_set(d, ZB_EINVAL, "%s: the message changed while it was encoded", c.what);
    }
    *out = buf;
    *out_len = len;
    zb_diag_set(d, 0, NULL);
    return 0;
}

#define S_ENCODER(name, T, TYPE, member)                                                           \
    int zb_msg_encode_##name(const T *m, uint8_t **out, size_t *out_len, zb_diag_t *d) {           \
        if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "zb_msg_encode_" #name ": NULL");          \
        zb_msg_t all = {.type = TYPE};                                                             \
        all.u.member = *m;                                                                         \
        return zb_msg_encode(&all, out, out_len, d);                                               \
    }

S_ENCODER(embed, zb_msg_embed_t, ZB_MSG_EMBED, embed)
S_ENCODER(cancel, zb_msg_cancel_t, ZB_MSG_CANCEL, cancel)
S_ENCODER(status, zb_msg_status_t, ZB_MSG_STATUS, status)
S_ENCODER(part, zb_msg_part_t, ZB_MSG_PART, part)
S_ENCODER(done, zb_msg_done_t, ZB_MSG_DONE, done)
S_ENCODER(error, zb_msg_error_t, ZB_MSG_ERROR, error)
S_ENCODER(status_reply, zb_msg_status_reply_t, ZB_MSG_STATUS_REPLY, status_reply)
S_ENCODER(ready, zb_msg_ready_t, ZB_MSG_READY, ready)
S_ENCODER(task, zb_msg_task_t, ZB_MSG_TASK, task)
S_ENCODER(result, zb_msg_result_t, ZB_MSG_RESULT, result)
S_ENCODER(closing, zb_msg_closing_t, ZB_MSG_CLOSING, closing)

int zb_msg_encode_empty(zb_msg_type_t type, uint8_t **out, size_t *out_len, zb_diag_t *d) {
    if (type != ZB_MSG_HEARTBEAT && type != ZB_MSG_BYE && type != ZB_MSG_RECONNECT)
        return zb_diag_set(d, ZB_EINVAL, "zb_msg_encode_empty: %s carries fields",
                           zb_msg_type_name(type));
    zb_msg_t m = {.type = type};
    return zb_msg_encode(&m, out, out_len, d);
}

/* --- equality ------------------------------------------------------------- */

static bool s_eq_str(zb_msg_str_t a, zb_msg_str_t b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static bool s_eq_mem(const void *a, const void *b, size_t bytes) {
    if (bytes == 0) return true;
    if (a == NULL || b == NULL) return a == b;
    return memcmp(a, b, bytes) == 0;
}

static bool s_eq_texts(const zb_msg_str_t *a, size_t na, const zb_msg_str_t *b, size_t nb) {
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (!s_eq_str(a[i], b[i])) return false;
    return true;
}

/* Two rows' metadata as the wire carries it (row and UTF-16 spans do not
 * travel). */
static bool s_eq_meta(const zb_token_meta_t *a, const zb_token_meta_t *b, size_t n) {
    if (n == 0) return true;
    if (a == NULL || b == NULL) return a == b;
    for (size_t k = 0; k < n; k++)
        if (a[k].sentence != b[k].sentence || a[k].piece_id != b[k].piece_id ||
            a[k].word_start != b[k].word_start || a[k].oov != b[k].oov)
            return false;
    return true;
}

static bool s_eq_vec(const zb_msg_vectors_t *a, const zb_msg_vectors_t *b) {
    if (a->level != b->level || a->dim != b->dim || a->count != b->count ||
        a->n_rows != b->n_rows || a->vectors_len != b->vectors_len ||
        a->n_truncated != b->n_truncated || a->n_errors != b->n_errors)
        return false;
    size_t spans = (size_t)a->n_rows * 2 * sizeof(uint32_t);
    if (!s_eq_mem(a->rows, b->rows, a->count * sizeof(uint32_t)) ||
        !s_eq_mem(a->vectors, b->vectors, a->vectors_len) ||
        !s_eq_mem(a->offsets, b->offsets, a->offsets || b->offsets ? spans : 0) ||
        !s_eq_mem(a->byte_offsets, b->byte_offsets,
                  a->byte_offsets || b->byte_offsets ? spans : 0) ||
        !s_eq_mem(a->ids, b->ids, a->ids || b->ids ? spans / 2 : 0) ||
        !s_eq_mem(a->truncated, b->truncated, a->n_truncated * sizeof(uint32_t)))
        return false;
    if (a->token_meta != b->token_meta) return false;
    size_t nr = a->token_meta ? (size_t)a->n_rows : 0;
    if (!s_eq_meta(a->meta, b->meta, nr)) return false;
    for (size_t k = 0; k < a->n_errors; k++)
        if (a->errors[k].index != b->errors[k].index || a->errors[k].code != b->errors[k].code ||
            !s_eq_str(a->errors[k].message, b->errors[k].message))
            return false;
    return true;
}

static bool s_eq_worker(const zb_msg_worker_info_t *a, const zb_msg_worker_info_t *b) {
    return s_eq_str(a->name, b->name) && s_eq_str(a->model, b->model) && a->dim == b->dim &&
           a->threads == b->threads && a->credit == b->credit && a->in_flight == b->in_flight &&
           a->shards == b->shards && a->tokens == b->tokens && a->idle_ms == b->idle_ms &&
           a->quarantined_ms == b->quarantined_ms;
}

bool zb_msg_equal(const zb_msg_t *a, const zb_msg_t *b) {
    if (a == NULL || b == NULL) return a == b;
    if (a->type != b->type) return false;
    switch (a->type) {
    case ZB_MSG_EMBED: {
        const zb_msg_embed_t *x = &a->u.embed, *y = &b->u.embed;
        return s_eq_str(x->id, y->id) && s_eq_texts(x->texts, x->n_texts, y->texts, y->n_texts) &&
               zb_options_equal(&x->opt, &y->opt) && x->deadline_ms == y->deadline_ms &&
               x->n_have == y->n_have && s_eq_mem(x->have, y->have, x->n_have * sizeof *x->have) &&
               s_eq_str(x->model, y->model);
    }
    case ZB_MSG_CANCEL:
        return s_eq_str(a->u.cancel.id, b->u.cancel.id);
    case ZB_MSG_STATUS:
        return s_eq_str(a->u.status.id, b->u.status.id);
    case ZB_MSG_PART:
        return s_eq_str(a->u.part.id, b->u.part.id) && a->u.part.first == b->u.part.first &&
               s_eq_vec(&a->u.part.vec, &b->u.part.vec) &&
               s_eq_str(a->u.part.model, b->u.part.model);
    case ZB_MSG_DONE: {
        const zb_msg_done_t *x = &a->u.done, *y = &b->u.done;
        return s_eq_str(x->id, y->id) && x->texts == y->texts && x->tokens == y->tokens &&
               x->parts == y->parts && x->elapsed_ms == y->elapsed_ms &&
               s_eq_str(x->model, y->model);
    }
    case ZB_MSG_ERROR: {
        const zb_msg_error_t *x = &a->u.error, *y = &b->u.error;
        return s_eq_str(x->id, y->id) && x->code == y->code && s_eq_str(x->message, y->message) &&
               s_eq_str(x->of, y->of);
    }
    case ZB_MSG_STATUS_REPLY: {
        const zb_msg_status_reply_t *x = &a->u.status_reply, *y = &b->u.status_reply;
        if (!s_eq_str(x->id, y->id) || x->uptime_ms != y->uptime_ms ||
            x->n_workers != y->n_workers || x->requests != y->requests ||
            x->queued_shards != y->queued_shards || x->queued_texts != y->queued_texts ||
            x->in_flight_shards != y->in_flight_shards || x->texts_per_s != y->texts_per_s ||
            x->tokens_per_s != y->tokens_per_s || x->latency_p50_ms != y->latency_p50_ms ||
            x->latency_p90_ms != y->latency_p90_ms || x->latency_p99_ms != y->latency_p99_ms ||
            x->protocol_errors != y->protocol_errors || x->bad_results != y->bad_results ||
            x->has_security != y->has_security ||
            (x->has_security && (x->curve != y->curve || x->refused_clients != y->refused_clients ||
                                 x->refused_workers != y->refused_workers)))
            return false;
        for (size_t k = 0; k < x->n_workers; k++)
            if (!s_eq_worker(&x->workers[k], &y->workers[k])) return false;
        if (x->n_open != y->n_open) return false;
        for (size_t k = 0; k < x->n_open; k++)
            if (!s_eq_str(x->open[k], y->open[k])) return false;
        return true;
    }
    case ZB_MSG_READY: {
        const zb_msg_ready_t *x = &a->u.ready, *y = &b->u.ready;
        return s_eq_str(x->name, y->name) && s_eq_str(x->model, y->model) && x->dim == y->dim &&
               x->threads == y->threads && x->credit == y->credit && x->epoch == y->epoch;
    }
    case ZB_MSG_TASK: {
        const zb_msg_task_t *x = &a->u.task, *y = &b->u.task;
        return x->shard == y->shard && x->epoch == y->epoch &&
               s_eq_texts(x->texts, x->n_texts, y->texts, y->n_texts) &&
               zb_options_equal(&x->opt, &y->opt);
    }
    case ZB_MSG_RESULT: {
        const zb_msg_result_t *x = &a->u.result, *y = &b->u.result;
        return x->shard == y->shard && x->epoch == y->epoch && x->tokens == y->tokens &&
               s_eq_vec(&x->vec, &y->vec);
    }
    case ZB_MSG_CLOSING:
        return s_eq_str(a->u.closing.message, b->u.closing.message);
    default:
        return true;
    }
}
