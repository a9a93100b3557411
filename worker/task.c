/*
 * task.c -- tasks through the embedder, result bodies out.
 *
 * One zb_task_run() call:
 *   1. lays the texts of its tasks end to end and runs them through one
 *      zb_embed_run() call (results in input order whatever the
 *      batching);
 *   2. splits the call's encoder tokens between the tasks;
 *   3. for each task, sizes its result exactly, fails its biggest texts
 *      while the body would exceed the limit, gathers the rows into the
 *      wire arrays and encodes the body.
 * Scratch arrays (texts, engine results, wire arrays) live in the runner
 * and are reused from call to call; buffers grown by an exceptional task
 * are released after it (S_KEEP_FLOATS) so one huge task does not pin
 * memory for the life of the worker.
 */
#include "task.h"

#include <stdlib.h>
#include <string.h>

#include "limits.h"

/* Engine row buffers and the gathered vectors are kept across calls up to
 * this many floats (16 MiB): a normal shard (64 texts x 512 rows x 768) is
 * 100 MB and reallocating that per task costs little next to computing it,
 * while keeping it would hold that much per worker forever. */
#define S_KEEP_FLOATS (4u << 20)

/* What a text failed so that the body fits says. */
#define S_CUT_MESSAGE "its vectors do not fit in one result message"

/* Sizing state of one text of the task being built. */
typedef struct s_text {
    uint32_t rows;      /* rows when it succeeds */
    zb_msg_code_t code; /* NONE: it goes out with its rows */
    const char *message;
    uint64_t live; /* body bytes it takes when it succeeds, vectors aside */
} s_text_t;

/* A candidate for cutting: sorted by rows, most first; ties by index, so
 * the choice is deterministic. */
typedef struct s_rank {
    uint32_t rows;
    uint32_t index;
} s_rank_t;

struct zb_task {
    zb_embed_t *e;
    size_t body_max;
    int dim;
    /* inputs and outputs of one embedder call */
    const char **texts;
    size_t *lens;
    zb_embed_result_t *res; /* zero-initialised up to cap */
    size_t cap;             /* texts the three arrays above hold */
    /* per-task build scratch */
    s_text_t *tx;
    s_rank_t *order;
    uint32_t *rows;
    uint32_t *trunc;
    zb_msg_text_error_t *errs;
    size_t task_cap;              /* texts the five arrays above hold */
    uint32_t *offs, *boffs, *ids; /* [2 x row_cap], [2 x row_cap], [row_cap] */
    zb_token_meta_t *meta;        /* token metadata: [row_cap] */
    size_t row_cap;
    float *vec; /* [vec_cap] */
    size_t vec_cap;
};

/* --- exact MessagePack sizes (smallest encodings, PROTOCOL.md 2) ------- */

static uint64_t s_mp_uint(uint64_t v) {
    return v <= 0x7f ? 1 : v <= 0xff ? 2 : v <= 0xffff ? 3 : v <= 0xffffffffu ? 5 : 9;
}

static uint64_t s_mp_str(uint64_t len) {
    return len + (len <= 31 ? 1 : len <= 0xff ? 2 : len <= 0xffff ? 3 : 5);
}

static uint64_t s_mp_bin(uint64_t len) {
    return len + (len <= 0xff ? 2 : len <= 0xffff ? 3 : 5);
}

/* Array and map headers have the same widths. */
static uint64_t s_mp_count(uint64_t n) {
    return n <= 15 ? 1 : n <= 0xffff ? 3 : 5;
}

static uint64_t s_mp_key(const char *k) {
    return s_mp_str(strlen(k));
}

/* --- small helpers ----------------------------------------------------- */

bool zb_task_same_options(const zb_options_t *a, const zb_options_t *b) {
    /* pooling only matters at the sentence level (token_vector and
     * token_meta at the token level), but a run takes one options struct,
     * so tasks must agree on all of them anyway */
    return zb_options_equal(a, b);
}

zb_msg_code_t zb_task_text_code(int status) {
    switch (status) {
    case 0:
        return ZB_MSG_CODE_NONE;
    case ZB_EUTF8:
        return ZB_MSG_CODE_BAD_UTF8;
    case ZB_ELIMIT:
        return ZB_MSG_CODE_TOO_LARGE;
    case ZB_EUNSUPPORTED:
        return ZB_MSG_CODE_UNSUPPORTED;
    default:
        return ZB_MSG_CODE_INTERNAL;
    }
}

/* Grows *p to n elements of size bytes (contents kept); 0 or ZB_ENOMEM. */
static int s_grow(void **p, size_t n, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) return ZB_ENOMEM;
    void *q = realloc(*p, bytes ? bytes : 1);
    if (q == NULL) return ZB_ENOMEM;
    *p = q;
    return 0;
}

static int s_reserve_texts(zb_task_t *s, size_t n) {
    if (n <= s->cap) return 0;
    if (s_grow((void **)&s->texts, n, sizeof *s->texts) ||
        s_grow((void **)&s->lens, n, sizeof *s->lens) ||
        s_grow((void **)&s->res, n, sizeof *s->res))
        return ZB_ENOMEM;
    memset(s->res + s->cap, 0, (n - s->cap) * sizeof *s->res);
    s->cap = n;
    return 0;
}

static int s_reserve_task(zb_task_t *s, size_t n) {
    if (n <= s->task_cap) return 0;
    if (s_grow((void **)&s->tx, n, sizeof *s->tx) ||
        s_grow((void **)&s->order, n, sizeof *s->order) ||
        s_grow((void **)&s->rows, n, sizeof *s->rows) ||
        s_grow((void **)&s->trunc, n, sizeof *s->trunc) ||
        s_grow((void **)&s->errs, n, sizeof *s->errs))
        return ZB_ENOMEM;
    s->task_cap = n;
    return 0;
}

static int s_reserve_rows(zb_task_t *s, uint64_t n_rows, uint64_t n_floats) {
    if (n_rows > s->row_cap) {
        if (n_rows > SIZE_MAX / 8) return ZB_ENOMEM;
        if (s_grow((void **)&s->offs, 2 * (size_t)n_rows, sizeof *s->offs) ||
            s_grow((void **)&s->boffs, 2 * (size_t)n_rows, sizeof *s->boffs) ||
            s_grow((void **)&s->ids, (size_t)n_rows, sizeof *s->ids) ||
            s_grow((void **)&s->meta, (size_t)n_rows, sizeof *s->meta))
            return ZB_ENOMEM;
        s->row_cap = (size_t)n_rows;
    }
    if (n_floats > s->vec_cap) {
        if (n_floats > SIZE_MAX / sizeof(float)) return ZB_ENOMEM;
        /* no realloc: the old contents are not needed */
        free(s->vec);
        s->vec = malloc((size_t)n_floats * sizeof(float));
        s->vec_cap = s->vec ? (size_t)n_floats : 0;
        if (s->vec == NULL) return ZB_ENOMEM;
    }
    return 0;
}

/* Releases what an exceptional call left behind (see S_KEEP_FLOATS). */
static void s_trim(zb_task_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s->res[i].vectors_cap > S_KEEP_FLOATS) zb_embed_result_free(&s->res[i]);
    if (s->vec_cap > S_KEEP_FLOATS) {
        free(s->vec);
        s->vec = NULL;
        s->vec_cap = 0;
    }
}

/* --- lifecycle ----------------------------------------------------------- */

int zb_task_new(zb_embed_t *e, const zb_task_config_t *cfg, zb_task_t **out, zb_diag_t *d) {
    if (out == NULL) return zb_diag_set(d, ZB_EINVAL, "zb_task_new: NULL out");
    *out = NULL;
    if (e == NULL) return zb_diag_set(d, ZB_EINVAL, "zb_task_new: no embedder");
    int dim = zb_embed_dim(e);
    if (dim < 1 || dim > ZB_HIDDEN_MAX)
        return zb_diag_set(d, ZB_EINVAL, "zb_task_new: embedder width %d outside 1..%d", dim,
                           ZB_HIDDEN_MAX);
    zb_task_t *s = calloc(1, sizeof *s);
    if (s == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    s->e = e;
    s->dim = dim;
    s->body_max = cfg && cfg->body_max > 0 && cfg->body_max < ZB_MSG_BODY_MAX ? cfg->body_max
                                                                              : ZB_MSG_BODY_MAX;
    *out = s;
    return 0;
}

void zb_task_destroy(zb_task_t **ps) {
    if (ps == NULL || *ps == NULL) return;
    zb_task_t *s = *ps;
    for (size_t i = 0; i < s->cap; i++) zb_embed_result_free(&s->res[i]);
    free(s->texts);
    free(s->lens);
    free(s->res);
    free(s->tx);
    free(s->order);
    free(s->rows);
    free(s->trunc);
    free(s->errs);
    free(s->offs);
    free(s->boffs);
    free(s->ids);
    free(s->meta);
    free(s->vec);
    free(s);
    *ps = NULL;
}

/* --- sizing ------------------------------------------------------------ */

/* Aggregates of a result that decide its size beyond the per-text parts. */
typedef struct s_sum {
    uint64_t texts;     /* sum of the per-text parts (live or failed) */
    uint64_t vec_bytes; /* vectors bin payload */
    uint64_t n_trunc;   /* truncated texts still live */
    uint64_t trunc;     /* bytes of their indices */
    uint64_t n_err;     /* failed texts */
} s_sum_t;

/* Bytes a failed text takes: rows 0, empty offsets/ids/metadata entries
 * and its errors map {index, code, message}. */
static uint64_t s_failed_bytes(zb_level_t lv, bool meta, uint32_t k, zb_msg_code_t code,
                               const char *message) {
    uint64_t b = 1; /* rows[k] = 0 */
    if (lv != ZB_LEVEL_SENTENCE) b += 2;
    if (lv == ZB_LEVEL_WORDPIECE) b += 1;
    if (meta) b += 4;
    b += s_mp_count(3) + s_mp_key("index") + s_mp_uint(k) + s_mp_key("code") +
         s_mp_str(strlen(zb_msg_code_name(code))) + s_mp_key("message") + s_mp_str(strlen(message));
    return b;
}

/* The whole body: the map, the fixed keys and the aggregates. */
static uint64_t s_body_bytes(const zb_msg_task_t *t, uint64_t tokens, zb_level_t lv, int dim,
                             uint32_t count, const s_sum_t *a) {
    bool meta = zb_options_meta(&t->opt);
    uint64_t keys = 7 + 2 * (lv != ZB_LEVEL_SENTENCE) + (lv == ZB_LEVEL_WORDPIECE) + 4 * meta +
                    (a->n_trunc > 0) + (a->n_err > 0);
    uint64_t b = s_mp_count(keys + 2) + s_mp_key("v") + s_mp_uint(ZB_MSG_VERSION) +
                 s_mp_key("type") + s_mp_str(strlen(zb_msg_type_name(ZB_MSG_RESULT))) +
                 s_mp_key("shard") + s_mp_uint(t->shard) + s_mp_key("epoch") + s_mp_uint(t->epoch) +
                 s_mp_key("tokens") + s_mp_uint(tokens) + s_mp_key("level") +
                 s_mp_str(strlen(zb_options_level_name(lv))) + s_mp_key("dim") +
                 s_mp_uint((uint64_t)dim) + s_mp_key("rows") + s_mp_count(count) +
                 s_mp_key("vectors") + s_mp_bin(a->vec_bytes);
    if (lv != ZB_LEVEL_SENTENCE)
        b += s_mp_key("offsets") + s_mp_count(count) + s_mp_key("byte_offsets") + s_mp_count(count);
    if (lv == ZB_LEVEL_WORDPIECE) b += s_mp_key("ids") + s_mp_count(count);
    if (meta)
        b += s_mp_key("sentence") + s_mp_key("piece_id") + s_mp_key("word_start") +
             s_mp_key("oov") + 4 * s_mp_count(count);
    if (a->n_trunc > 0) b += s_mp_key("truncated") + s_mp_count(a->n_trunc) + a->trunc;
    if (a->n_err > 0) b += s_mp_key("errors") + s_mp_count(a->n_err);
    return b + a->texts;
}

static int s_by_rows(const void *pa, const void *pb) {
    const s_rank_t *a = pa, *b = pb;
    if (a->rows != b->rows) return a->rows > b->rows ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Fails text k so the body fits: moves it from live to failed. */
static void s_cut(s_text_t *t, uint32_t k, zb_level_t lv, bool meta, int dim, bool truncated,
                  s_sum_t *a) {
    a->texts -= t->live;
    a->vec_bytes -= (uint64_t)t->rows * (uint64_t)dim * 4u;
    if (truncated) {
        a->n_trunc--;
        a->trunc -= s_mp_uint(k);
    }
    t->code = ZB_MSG_CODE_TOO_LARGE;
    t->message = S_CUT_MESSAGE;
    a->texts += s_failed_bytes(lv, meta, k, t->code, t->message);
    a->n_err++;
}

/* --- building one result ------------------------------------------------ */

/* The rows a successful result has at its level; -1 when it is inconsistent
 * (which the engine's contract rules out; it is reported, not trusted). */
static int64_t s_rows_of(const zb_embed_result_t *r, zb_level_t lv, bool meta, int dim) {
    if (r->dim != dim || r->n_vectors > UINT32_MAX) return -1;
    if (r->n_vectors > 0 && r->vectors == NULL) return -1;
    if (meta && r->n_vectors > 0 && r->meta == NULL) return -1;
    switch (lv) {
    case ZB_LEVEL_TOKEN:
        return r->words.n == r->n_vectors ? (int64_t)r->n_vectors : -1;
    case ZB_LEVEL_WORDPIECE:
        return r->pieces.n == r->n_vectors ? (int64_t)r->n_vectors : -1;
    default:
        return r->n_vectors == 1 ? 1 : -1;
    }
}

/* A row's piece id on the wire: 0 for an oov row (it has none). */
static uint32_t s_piece_of(const zb_token_meta_t *m) {
    return m->oov || m->piece_id < 0 ? 0 : (uint32_t)m->piece_id;
}

/* Bytes a live text's rows, offsets, ids and metadata take (vectors
 * aside). */
static uint64_t s_live_bytes(const zb_embed_result_t *r, zb_level_t lv, bool meta, uint32_t rows) {
    uint64_t b = s_mp_uint(rows);
    if (lv == ZB_LEVEL_TOKEN) {
        b += 2 * s_mp_count(2 * (uint64_t)rows);
        for (uint32_t j = 0; j < rows; j++) {
            const zb_tokenizer_word_t *w = &r->words.v[j];
            b += s_mp_uint(w->begin) + s_mp_uint(w->end) + s_mp_uint(w->byte_begin) +
                 s_mp_uint(w->byte_end);
        }
        if (meta) {
            b += 4 * s_mp_count(rows) + 2 * (uint64_t)rows; /* two bools a row */
            for (uint32_t j = 0; j < rows; j++)
                b += s_mp_uint(r->meta[j].sentence) + s_mp_uint(s_piece_of(&r->meta[j]));
        }
    } else if (lv == ZB_LEVEL_WORDPIECE) {
        b += 2 * s_mp_count(2 * (uint64_t)rows) + s_mp_count(rows);
        for (uint32_t j = 0; j < rows; j++) {
            const zb_tokenizer_piece_t *p = &r->pieces.v[j];
            b += s_mp_uint(p->begin) + s_mp_uint(p->end) + s_mp_uint(p->byte_begin) +
                 s_mp_uint(p->byte_end) + s_mp_uint((uint32_t)p->id);
        }
    }
    return b;
}

/* Copies n floats as little-endian float32 (the wire's byte order). */
static void s_put_floats(float *dst, const float *src, size_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        u = __builtin_bswap32(u);
        memcpy(&dst[i], &u, 4);
    }
#else
    memcpy(dst, src, n * sizeof *dst);
#endif
}

/* Gathers the live texts' rows into the wire arrays and encodes. */
static int s_encode(zb_task_t *s, const zb_msg_task_t *task, uint64_t tokens, zb_level_t lv,
                    const zb_embed_result_t *res, uint32_t count, const s_sum_t *a, uint8_t **body,
                    size_t *len, zb_diag_t *d) {
    const size_t H = (size_t)s->dim;
    uint64_t n_rows = a->vec_bytes / (4u * H);
    int rc = s_reserve_rows(s, n_rows, n_rows * H);
    if (rc != 0)
        return zb_diag_set(d, rc, "out of memory for %llu rows", (unsigned long long)n_rows);
    bool meta = zb_options_meta(&task->opt);
    size_t at = 0, n_trunc = 0, n_err = 0;
    for (uint32_t k = 0; k < count; k++) {
        const s_text_t *t = &s->tx[k];
        const zb_embed_result_t *r = &res[k];
        if (t->code != ZB_MSG_CODE_NONE) {
            s->rows[k] = 0;
            s->errs[n_err++] =
                (zb_msg_text_error_t){.index = k,
                                      .code = t->code,
                                      .message = {.ptr = t->message, .len = strlen(t->message)}};
            continue;
        }
        s->rows[k] = t->rows;
        if (r->truncated) s->trunc[n_trunc++] = k;
        s_put_floats(s->vec + at * H, r->vectors, (size_t)t->rows * H);
        for (uint32_t j = 0; j < t->rows; j++) {
            size_t o = 2 * (at + j);
            if (lv == ZB_LEVEL_TOKEN) {
                const zb_tokenizer_word_t *w = &r->words.v[j];
                s->offs[o] = w->begin, s->offs[o + 1] = w->end;
                s->boffs[o] = w->byte_begin, s->boffs[o + 1] = w->byte_end;
                if (meta) {
                    /* the engine's row as sent: the piece it goes out
                     * with (s_piece_of), -1 when oov */
                    zb_token_meta_t tm = r->meta[j];
                    tm.piece_id = tm.oov ? -1 : (int32_t)s_piece_of(&tm);
                    s->meta[at + j] = tm;
                }
            } else if (lv == ZB_LEVEL_WORDPIECE) {
                const zb_tokenizer_piece_t *p = &r->pieces.v[j];
                s->offs[o] = p->begin, s->offs[o + 1] = p->end;
                s->boffs[o] = p->byte_begin, s->boffs[o + 1] = p->byte_end;
                s->ids[at + j] = (uint32_t)p->id;
            }
        }
        at += t->rows;
    }
    zb_msg_result_t m = {.shard = task->shard,
                         .epoch = task->epoch,
                         .tokens = tokens,
                         .vec = {.level = lv,
                                 .dim = (uint32_t)s->dim,
                                 .count = count,
                                 .rows = s->rows,
                                 .n_rows = n_rows,
                                 .vectors = n_rows ? s->vec : NULL,
                                 .vectors_len = (size_t)a->vec_bytes,
                                 .offsets = lv != ZB_LEVEL_SENTENCE ? s->offs : NULL,
                                 .byte_offsets = lv != ZB_LEVEL_SENTENCE ? s->boffs : NULL,
                                 .ids = lv == ZB_LEVEL_WORDPIECE ? s->ids : NULL,
                                 .token_meta = meta,
                                 .meta = meta && n_rows ? s->meta : NULL,
                                 .truncated = s->trunc,
                                 .n_truncated = n_trunc,
                                 .errors = s->errs,
                                 .n_errors = n_err}};
    return zb_msg_encode_result(&m, body, len, d);
}

/* Builds and encodes the result of one task from its engine results. */
static int s_build(zb_task_t *s, const zb_msg_task_t *task, const zb_embed_result_t *res,
                   uint64_t tokens, zb_task_out_t *out, zb_diag_t *d) {
    zb_level_t lv = task->opt.level;
    bool meta = zb_options_meta(&task->opt);
    uint32_t count = (uint32_t)task->n_texts;
    int rc = s_reserve_task(s, count);
    if (rc != 0) return zb_diag_set(d, rc, "out of memory for %u texts", count);
    s_sum_t a = {0};
    for (uint32_t k = 0; k < count; k++) {
        const zb_embed_result_t *r = &res[k];
        s_text_t *t = &s->tx[k];
        *t = (s_text_t){0};
        int64_t rows = r->status == 0 ? s_rows_of(r, lv, meta, s->dim) : 0;
        if (r->status != 0 || rows < 0) {
            t->code = r->status != 0 ? zb_task_text_code(r->status) : ZB_MSG_CODE_INTERNAL;
            /* the engine's sentence when it has one, as zbert-embed prints it */
            t->message = r->status != 0 && r->detail[0]
                             ? r->detail
                             : zb_strerror(r->status != 0 ? r->status : ZB_EFORMAT);
            a.texts += s_failed_bytes(lv, meta, k, t->code, t->message);
            a.n_err++;
            continue;
        }
        t->rows = (uint32_t)rows;
        t->live = s_live_bytes(r, lv, meta, t->rows);
        a.texts += t->live;
        a.vec_bytes += (uint64_t)t->rows * (uint64_t)s->dim * 4u;
        if (r->truncated) {
            a.n_trunc++;
            a.trunc += s_mp_uint(k);
        }
    }
    out->n_texts = count;
    out->tokens = tokens;
    out->n_cut = 0;

    /* Fail the texts with the most rows until the body fits.  The sizing is
     * exact, so the first encode fits; the loop around the encoder is a
     * guard that keeps the contract should the two ever disagree. */
    size_t n_order = 0, next = 0;
    bool ranked = false;
    bool fits = s_body_bytes(task, tokens, lv, s->dim, count, &a) <= s->body_max;
    for (;;) {
        if (!fits) {
            if (!ranked) {
                for (uint32_t k = 0; k < count; k++)
                    if (s->tx[k].code == ZB_MSG_CODE_NONE && s->tx[k].rows > 0)
                        s->order[n_order++] = (s_rank_t){s->tx[k].rows, k};
                qsort(s->order, n_order, sizeof *s->order, s_by_rows);
                ranked = true;
            }
            if (next == n_order)
                return zb_diag_set(d, ZB_ELIMIT,
                                   "shard %llu: the result exceeds %zu bytes with every text "
                                   "failed",
                                   (unsigned long long)task->shard, s->body_max);
            uint32_t k = s->order[next++].index;
            s_cut(&s->tx[k], k, lv, meta, s->dim, res[k].truncated, &a);
            out->n_cut++;
            fits = s_body_bytes(task, tokens, lv, s->dim, count, &a) <= s->body_max;
            continue;
        }
        rc = s_encode(s, task, tokens, lv, res, count, &a, &out->body, &out->body_len, d);
        if (rc == 0 && out->body_len <= s->body_max) break;
        if (rc != 0 && rc != ZB_ELIMIT) return rc;
        free(out->body);
        out->body = NULL;
        out->body_len = 0;
        fits = false; /* the guard: one more text out */
    }
    out->n_failed = (uint32_t)a.n_err;
    return 0;
}

/* --- running tasks -------------------------------------------------------- */

int zb_task_fail(const zb_msg_task_t *task, int dim, zb_msg_code_t code, const char *message,
                 zb_task_out_t *out, zb_diag_t *d) {
    if (out == NULL || task == NULL || message == NULL)
        return zb_diag_set(d, ZB_EINVAL, "zb_task_fail: NULL argument");
    memset(out, 0, sizeof *out);
    size_t n_texts = task->n_texts;
    if (n_texts == 0 || n_texts > ZB_MSG_TEXTS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "zb_task_fail: %zu texts outside 1..%u", n_texts,
                           ZB_MSG_TEXTS_MAX);
    uint32_t *rows = calloc(n_texts, sizeof *rows);
    zb_msg_text_error_t *errs = calloc(n_texts, sizeof *errs);
    int rc;
    if (rows == NULL || errs == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t k = 0; k < n_texts; k++)
        errs[k] = (zb_msg_text_error_t){
            .index = (uint32_t)k, .code = code, .message = {message, strlen(message)}};
    zb_msg_result_t m = {.shard = task->shard,
                         .epoch = task->epoch,
                         .vec = {.level = task->opt.level,
                                 .token_meta = zb_options_meta(&task->opt),
                                 .dim = dim > 0 ? (uint32_t)dim : 0,
                                 .count = (uint32_t)n_texts,
                                 .rows = rows,
                                 .errors = errs,
                                 .n_errors = n_texts}};
    rc = zb_msg_encode_result(&m, &out->body, &out->body_len, d);
    if (rc == 0) {
        out->n_texts = (uint32_t)n_texts;
        out->n_failed = (uint32_t)n_texts;
    }
out:
    free(rows);
    free(errs);
    return rc;
}

static void s_free_outs(zb_task_out_t *outs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(outs[i].body);
        memset(&outs[i], 0, sizeof outs[i]);
    }
}

static int s_check_tasks(const zb_msg_task_t *const *tasks, size_t n, size_t *total, zb_diag_t *d) {
    *total = 0;
    for (size_t i = 0; i < n; i++) {
        const zb_msg_task_t *t = tasks[i];
        if (t == NULL) return zb_diag_set(d, ZB_EINVAL, "task %zu: NULL", i);
        if (t->n_texts == 0 || t->n_texts > ZB_MSG_TEXTS_MAX || t->texts == NULL)
            return zb_diag_set(d, ZB_EINVAL, "task %zu: %zu texts outside 1..%u", i, t->n_texts,
                               ZB_MSG_TEXTS_MAX);
        zb_options_rule_t broken = zb_options_broken(&t->opt);
        if (broken >= ZB_OPTIONS_RULE_LEVEL && broken <= ZB_OPTIONS_RULE_COMPAT)
            return zb_diag_set(d, ZB_EINVAL, "task %zu: options out of range", i);
        if (!zb_task_same_options(&t->opt, &tasks[0]->opt))
            return zb_diag_set(d, ZB_EINVAL, "task %zu: options differ from task 0's", i);
        if (__builtin_add_overflow(*total, t->n_texts, total))
            return zb_diag_set(d, ZB_EINVAL, "too many texts");
    }
    return 0;
}

/*
 * Splits the call's encoder tokens between the texts.  A text whose every
 * frame (one, or one per sentence) ran as one sequence put pieces.n tokens
 * through ([CLS] and [SEP] included); a text with a frame run as windows
 * put n_windows sequences through, which share what the call's total
 * leaves: (total - those tokens) / windows (exact while every sequence of
 * such texts is a full window; a windowed text's short sentences make it
 * an estimate).  Any remainder goes to the first windowed text, so the
 * tasks' tokens always add up to the call's.
 */
static void s_split_tokens(const zb_embed_result_t *res, size_t total, uint64_t call_tokens,
                           uint64_t *per_window, uint64_t *remainder) {
    uint64_t single = 0, windows = 0;
    for (size_t i = 0; i < total; i++) {
        if (res[i].status != 0) continue;
        if ((size_t)res[i].n_windows == res[i].n_sentences)
            single += res[i].pieces.n;
        else if (res[i].n_windows > 0)
            windows += (uint64_t)res[i].n_windows;
    }
    *per_window = 0;
    *remainder = 0;
    if (windows == 0 || call_tokens < single) return;
    *per_window = (call_tokens - single) / windows;
    *remainder = (call_tokens - single) - *per_window * windows;
}

int zb_task_run(zb_task_t *s, const zb_msg_task_t *const *tasks, size_t n, zb_task_out_t *outs,
                zb_diag_t *d) {
    if (s == NULL || tasks == NULL || outs == NULL || n == 0)
        return zb_diag_set(d, ZB_EINVAL, "zb_task_run: no tasks");
    memset(outs, 0, n * sizeof *outs);
    size_t total;
    int rc = s_check_tasks(tasks, n, &total, d);
    if (rc != 0) return rc;
    if ((rc = s_reserve_texts(s, total)) != 0)
        return zb_diag_set(d, rc, "out of memory for %zu texts", total);
    size_t at = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < tasks[i]->n_texts; k++, at++) {
            const zb_msg_str_t *t = &tasks[i]->texts[k];
            s->texts[at] = t->ptr ? t->ptr : "";
            s->lens[at] = t->ptr ? t->len : 0;
        }
    zb_embed_stats_t st0, st1;
    zb_embed_stats(s->e, &st0);
    rc = zb_embed_run(s->e, s->texts, s->lens, total, &tasks[0]->opt, s->res);
    zb_embed_stats(s->e, &st1);
    if (rc != 0) {
        s_trim(s, total);
        if (n > 1) {
            /* Alone, a task may still fit where the merged call did not. */
            for (size_t i = 0; i < n; i++) {
                int rc2 = zb_task_run(s, &tasks[i], 1, &outs[i], d);
                if (rc2 != 0) {
                    s_free_outs(outs, n);
                    return rc2;
                }
            }
            return 0;
        }
        int erc = rc;
        rc = zb_task_fail(tasks[0], s->dim, ZB_MSG_CODE_INTERNAL, zb_strerror(erc), &outs[0], d);
        if (rc == 0) outs[0].engine_rc = erc;
        return rc;
    }
    uint64_t per_window, remainder;
    s_split_tokens(s->res, total, st1.tokens - st0.tokens, &per_window, &remainder);
    at = 0;
    for (size_t i = 0; i < n; i++) {
        const zb_msg_task_t *t = tasks[i];
        uint64_t tokens = 0;
        for (size_t k = 0; k < t->n_texts; k++) {
            const zb_embed_result_t *r = &s->res[at + k];
            if (r->status != 0) continue;
            if ((size_t)r->n_windows == r->n_sentences) {
                tokens += r->pieces.n;
            } else if (r->n_windows > 0) {
                tokens += (uint64_t)r->n_windows * per_window + remainder;
                remainder = 0;
            }
        }
        rc = s_build(s, t, s->res + at, tokens, &outs[i], d);
        if (rc != 0) {
            s_free_outs(outs, n);
            s_trim(s, total);
            return rc;
        }
        at += t->n_texts;
    }
    s_trim(s, total);
    return 0;
}
