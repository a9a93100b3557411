/*
 * embed.c -- tokenise, frame, batch, encode and pool.
 *
 * The flow of one zb_embedder_run() call:
 *   1. tokenise every text into its result's pieces, framed as
 *      [CLS] pieces [SEP] (truncated unless windows are asked for);
 *   2. cut each text into sequences: one, or overlapping windows;
 *   3. sort sequences by length and pack them into encoder batches under
 *      the token budget (no padding anywhere);
 *   4. scatter each batch's output rows into per-text row buffers (the
 *      result's vectors array, [pieces][dim]);
 *   5. reduce those rows to the level asked for, in place, and normalise.
 * Only step 3's encoder call touches the model; everything else is linear
 * in the number of pieces.
 */
#include "embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "limits.h"

#define S_BATCH_TOKENS_DEFAULT 4096

/* One encoder sequence: a window of a text's pieces. */
typedef struct s_seq {
    size_t text;   /* index of the text */
    int first;     /* first content piece (0-based, excluding [CLS]) */
    int n;         /* content pieces; the sequence has n + 2 tokens */
    int window;    /* window number within the text */
    int n_windows; /* windows of the text */
} s_seq_t;

struct zb_embedder {
    const zb_model_t *model;
    zb_tok_t *tok;
    zb_bert_t *bert;
    int dim;
    int seq_len_max;      /* tokens per sequence, [CLS] and [SEP] included */
    int batch_tokens_max; /* encoder batch budget */
    int32_t *ids;         /* [batch_tokens_max] */
    int *seq_len;         /* [batch_tokens_max / 2] */
    float *out;           /* [batch_tokens_max][dim] */
    s_seq_t *seqs;        /* sequences of the current call */
    size_t seqs_cap;
    zb_embed_stats_t stats;
};

void zb_result_free(zb_result_t *r) {
    if (r == NULL) return;
    zb_pieces_free(&r->pieces);
    zb_words_free(&r->words);
    free(r->vectors);
    memset(r, 0, sizeof *r);
}

int zb_embedder_new(const zb_model_t *m, const zb_embedder_config_t *cfg, zb_embedder_t **out,
                    zb_diag_t *d) {
    *out = NULL;
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "no model");
    const zb_bert_config_t *c = zb_model_config(m);
    zb_embedder_t *e = calloc(1, sizeof *e);
    if (e == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    int rc;
    e->model = m;
    e->dim = c->hidden;
    e->seq_len_max = c->max_positions < 512 ? c->max_positions : 512;
    if (e->seq_len_max < 3) {
        rc = zb_diag_set(d, ZB_EUNSUPPORTED, "model has %d positions; at least 3 are needed",
                         c->max_positions);
        goto fail;
    }
    e->batch_tokens_max = cfg && cfg->batch_tokens_max > 0 ? cfg->batch_tokens_max
                                                           : S_BATCH_TOKENS_DEFAULT;
    if (e->batch_tokens_max < e->seq_len_max) e->batch_tokens_max = e->seq_len_max;

    size_t vlen;
    const char *vocab = zb_model_vocab(m, &vlen);
    rc = zb_tok_new(vocab, vlen, &(zb_tok_options_t){
                                     .lowercase = zb_model_tokenizer_config(m)->lowercase,
                                     .strip_accents = zb_model_tokenizer_config(m)->strip_accents},
                    &e->tok, d);
    if (rc != 0) goto fail;
    if (zb_tok_cls_id(e->tok) < 0 || zb_tok_sep_id(e->tok) < 0) {
        rc = zb_diag_set(d, ZB_EFORMAT, "vocabulary lacks [CLS] or [SEP]");
        goto fail;
    }
    rc = zb_bert_new(m, e->batch_tokens_max, e->seq_len_max, cfg ? cfg->threads : 0, &e->bert, d);
    if (rc != 0) goto fail;
    e->ids = malloc(sizeof *e->ids * (size_t)e->batch_tokens_max);
    e->seq_len = malloc(sizeof *e->seq_len * (size_t)e->batch_tokens_max);
    e->out = malloc(sizeof *e->out * (size_t)e->batch_tokens_max * (size_t)e->dim);
    if (!e->ids || !e->seq_len || !e->out) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory for a %d-token batch", e->batch_tokens_max);
        goto fail;
    }
    *out = e;
    return 0;
fail:
    zb_embedder_destroy(&e);
    return rc;
}

void zb_embedder_destroy(zb_embedder_t **pe) {
    if (pe == NULL || *pe == NULL) return;
    zb_embedder_t *e = *pe;
    zb_tok_destroy(&e->tok);
    zb_bert_destroy(&e->bert);
    free(e->ids);
    free(e->seq_len);
    free(e->out);
    free(e->seqs);
    free(e);
    *pe = NULL;
}

const zb_tok_t *zb_embedder_tokenizer(const zb_embedder_t *e) {
    return e->tok;
}

void zb_embedder_stats(const zb_embedder_t *e, zb_embed_stats_t *out) {
    *out = e->stats;
}

int zb_embedder_dim(const zb_embedder_t *e) {
    return e->dim;
}

static int s_reserve_floats(zb_result_t *r, size_t n) {
    if (n <= r->vectors_cap) return 0;
    float *p = realloc(r->vectors, n * sizeof *p);
    if (p == NULL) return ZB_ENOMEM;
    r->vectors = p;
    r->vectors_cap = n;
    return 0;
}

static int s_push_seq(zb_embedder_t *e, size_t *n, s_seq_t s) {
    if (*n == e->seqs_cap) {
        size_t cap = e->seqs_cap ? 2 * e->seqs_cap : 256;
        s_seq_t *p = realloc(e->seqs, cap * sizeof *p);
        if (p == NULL) return ZB_ENOMEM;
        e->seqs = p;
        e->seqs_cap = cap;
    }
    e->seqs[(*n)++] = s;
    return 0;
}

/* Tokenises one text into r->pieces framed by [CLS]/[SEP]. */
static int s_tokenize(zb_embedder_t *e, const char *text, size_t len, const zb_embed_options_t *o,
                      zb_result_t *r) {
    r->status = 0;
    r->truncated = false;
    r->n_windows = 0;
    r->n_vectors = 0;
    r->words.n = 0;
    r->dim = e->dim;
    int rc = zb_tok_encode(e->tok, text, len, &r->pieces);
    if (rc == ZB_ENOMEM) return rc;
    if (rc != 0) {
        r->status = rc;
        r->pieces.n = 0;
        return 0;
    }
    size_t n = r->pieces.n;
    r->n_pieces_total = (uint32_t)n;
    size_t content_max = (size_t)e->seq_len_max - 2;
    if (!o->windows && n > content_max) {
        n = content_max;
        r->truncated = true;
    }
    if (n + 2 > r->pieces.cap) {
        zb_piece_t *p = realloc(r->pieces.v, (n + 2) * sizeof *p);
        if (p == NULL) return ZB_ENOMEM;
        r->pieces.v = p;
        r->pieces.cap = n + 2;
    }
    memmove(r->pieces.v + 1, r->pieces.v, n * sizeof *r->pieces.v);
    r->pieces.v[0] = (zb_piece_t){.id = zb_tok_cls_id(e->tok)};
    r->pieces.v[n + 1] = (zb_piece_t){.id = zb_tok_sep_id(e->tok)};
    r->pieces.n = n + 2;
    if (o->level == ZB_LEVEL_TOKEN) {
        rc = zb_tok_split_words(text, len, &r->words);
        if (rc == ZB_ENOMEM) return rc;
        if (rc != 0) r->words.n = 0;
    }
    return 0;
}

/* Window starts for P content pieces, C per window, stride C/2: the last
 * window ends at the last piece, so every window is full. */
static int s_n_windows(int P, int C) {
    if (P <= C) return 1;
    int S = C / 2;
    return 1 + (P - C + S - 1) / S;
}

static int s_window_start(int w, int n_windows, int P, int C) {
    if (w == n_windows - 1) return P > C ? P - C : 0;
    return w * (C / 2);
}

/* Sorts sequences longest first; ties keep input order (stable output). */
static int s_seq_cmp(const void *a, const void *b) {
    const s_seq_t *x = a, *y = b;
    if (x->n != y->n) return x->n > y->n ? -1 : 1;
    if (x->text != y->text) return x->text < y->text ? -1 : 1;
    return x->window < y->window ? -1 : (x->window > y->window);
}

/* Copies the rows a sequence owns into its text's row buffer. */
static void s_scatter(const zb_embedder_t *e, const s_seq_t *s, const float *rows,
                      zb_result_t *r) {
    size_t H = (size_t)e->dim;
    int P = (int)r->pieces.n - 2;
    int C = e->seq_len_max - 2;
    if (s->n_windows == 1) {
        memcpy(r->vectors, rows, (size_t)(s->n + 2) * H * sizeof *rows);
        return;
    }
    if (s->window == 0) memcpy(r->vectors, rows, H * sizeof *rows);
    if (s->window == s->n_windows - 1)
        memcpy(r->vectors + (size_t)(P + 1) * H, rows + (size_t)(s->n + 1) * H, H * sizeof *rows);
    /* Piece p belongs to the window whose centre is nearest (all windows have
     * length C, so that is the window where p is farthest from an edge). */
    for (int i = 0; i < s->n; i++) {
        int p = s->first + i;
        int best = -1;
        long best_dist = 0;
        int lo = p / (C / 2) - 2;
        for (int w = lo < 0 ? 0 : lo; w < s->n_windows; w++) {
            int st = s_window_start(w, s->n_windows, P, C);
            if (st > p) break;
            if (p >= st + C) continue;
            long dist = labs(2L * (p - st) - (C - 1)); /* 2 x distance to centre */
            if (best < 0 || dist < best_dist) {
                best = w;
                best_dist = dist;
            }
        }
        if (best == s->window)
            memcpy(r->vectors + (size_t)(p + 1) * H, rows + (size_t)(i + 1) * H,
                   H * sizeof *rows);
    }
}

static void s_normalize(float *v, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss <= 0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < n; i++) v[i] *= inv;
}

/* Reduces a text's full rows ([pieces][dim]) to the requested level. */
static void s_reduce(const zb_embedder_t *e, const zb_embed_options_t *o, zb_result_t *r) {
    size_t H = (size_t)e->dim;
    size_t T = r->pieces.n;
    float *v = r->vectors;
    if (o->level == ZB_LEVEL_WORDPIECE) {
        r->n_vectors = T;
    } else if (o->level == ZB_LEVEL_SENTENCE) {
        if (o->pooling == ZB_POOL_MEAN) {
            /* Sum in double: a mean over hundreds of rows keeps float32 parity. */
            for (size_t j = 0; j < H; j++) {
                double s = 0;
                for (size_t t = 1; t + 1 < T; t++) s += v[t * H + j];
                v[j] = T > 2 ? (float)(s / (double)(T - 2)) : 0.0f;
            }
        } /* cls: row 0 already */
        r->n_vectors = 1;
    } else {
        /* token: each word takes the row of the first piece starting in it;
         * pieces are in text order, so one forward sweep maps them all. */
        size_t p = 1, kept = 0;
        for (size_t w = 0; w < r->words.n; w++) {
            zb_word_t wd = r->words.v[w];
            while (p + 1 < T && r->pieces.v[p].byte_begin < wd.byte_begin) p++;
            if (p + 1 >= T) break;
            if (r->pieces.v[p].byte_begin >= wd.byte_end) continue; /* no piece: skip word */
            memmove(v + kept * H, v + p * H, H * sizeof *v);
            r->words.v[kept++] = wd;
        }
        r->words.n = kept;
        r->n_vectors = kept;
    }
    if (o->normalize)
        for (size_t i = 0; i < r->n_vectors; i++) s_normalize(v + i * H, (int)H);
}

int zb_embedder_run(zb_embedder_t *e, const char *const *texts, const size_t *lens, size_t n,
                    const zb_embed_options_t *opt, zb_result_t *results) {
    static const zb_embed_options_t defaults = {0};
    const zb_embed_options_t *o = opt ? opt : &defaults;
    int rc;
    size_t n_seqs = 0;
    int C = e->seq_len_max - 2;
    for (size_t i = 0; i < n; i++) {
        zb_result_t *r = &results[i];
        rc = s_tokenize(e, texts[i], lens[i], o, r);
        if (rc != 0) return rc;
        if (r->status != 0 || o->tokenize_only) continue;
        int P = (int)r->pieces.n - 2;
        int nw = s_n_windows(P, C);
        r->n_windows = nw;
        size_t nf;
        if (__builtin_mul_overflow(r->pieces.n, (size_t)e->dim, &nf)) return ZB_ELIMIT;
        if (s_reserve_floats(r, nf) != 0) return ZB_ENOMEM;
        for (int w = 0; w < nw; w++) {
            int st = s_window_start(w, nw, P, C);
            int len = P - st < C ? P - st : C;
            rc = s_push_seq(e, &n_seqs, (s_seq_t){i, st, len, w, nw});
            if (rc != 0) return rc;
        }
    }
    e->stats.texts += n;
    if (n_seqs > 1) qsort(e->seqs, n_seqs, sizeof *e->seqs, s_seq_cmp);

    size_t H = (size_t)e->dim;
    for (size_t b = 0; b < n_seqs;) {
        /* Pack as many sequences as fit the budget (at least one always fits:
         * the budget is >= seq_len_max). */
        size_t end = b;
        int total = 0, k = 0;
        while (end < n_seqs && total + e->seqs[end].n + 2 <= e->batch_tokens_max) {
            const s_seq_t *s = &e->seqs[end];
            const zb_piece_t *pc = results[s->text].pieces.v;
            e->ids[total] = pc[0].id;
            for (int i = 0; i < s->n; i++) e->ids[total + 1 + i] = pc[1 + s->first + i].id;
            e->ids[total + s->n + 1] = pc[results[s->text].pieces.n - 1].id;
            e->seq_len[k++] = s->n + 2;
            total += s->n + 2;
            end++;
        }
        rc = zb_bert_forward(e->bert, e->ids, e->seq_len, k, e->out);
        if (rc != 0) return rc;
        e->stats.batches++;
        e->stats.sequences += (uint64_t)k;
        e->stats.tokens += (uint64_t)total;
        const float *rows = e->out;
        for (size_t q = b; q < end; q++) {
            const s_seq_t *s = &e->seqs[q];
            s_scatter(e, s, rows, &results[s->text]);
            rows += (size_t)(s->n + 2) * H;
        }
        b = end;
    }
    for (size_t i = 0; i < n; i++) {
        zb_result_t *r = &results[i];
        if (r->status != 0 || o->tokenize_only) continue;
        s_reduce(e, o, r);
    }
    return 0;
}
