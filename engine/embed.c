/*
 * embed.c -- tokenise, frame, batch, encode and pool.
 *
 * The flow of one zb_embed_run() call:
 *   1. tokenise every text into its result's pieces, framed as
 *      [CLS] pieces [SEP] (truncated unless windows are asked for); with
 *      sentences, one such frame per sentence back to back (seq_off says
 *      where each starts); in Spark NLP compatibility, the frames are the
 *      ids engine/sparknlp.c says each sentence feeds;
 *   2. cut each frame into sequences: one, or overlapping windows;
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "grow.h"
#include "limits.h"
#include "sentences.h"
#include "sparknlp.h"

#define S_BATCH_TOKENS_DEFAULT 4096

/* One encoder sequence: a window of one frame (sentence) of a text. */
typedef struct s_seq {
    size_t text;   /* index of the text */
    uint32_t seg;  /* frame of the text (sentence; 0 without sentences) */
    int first;     /* first content piece of the frame (0-based, excluding [CLS]) */
    int n;         /* content pieces; the sequence has n + 2 tokens */
    int window;    /* window number within the text */
    int n_windows; /* windows of the text */
} s_seq_t;

struct zb_embed {
    const zb_model_t *model;
    zb_tokenizer_t *tok;
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
    bool lowercase;                   /* the model's tokenizer lower-cases (uncased) */
    zb_sparknlp_doc_t snlp;           /* Spark NLP analysis of the current text */
    zb_sentences_spans_t spans;       /* sentences of the current text */
    zb_tokenizer_pieces_t sub_pieces; /* pieces of one sentence */
    zb_tokenizer_words_t sub_words;   /* tokens of one sentence */
};

void zb_embed_result_free(zb_embed_result_t *r) {
    if (r == NULL) return;
    zb_tokenizer_pieces_free(&r->pieces);
    zb_tokenizer_words_free(&r->words);
    free(r->vectors);
    free(r->meta);
    free(r->seq_off);
    memset(r, 0, sizeof *r);
}

int zb_embed_new(const zb_model_t *m, const zb_embed_config_t *cfg, zb_embed_t **out,
                 zb_diag_t *d) {
    *out = NULL;
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "no model");
    const zb_config_t *c = zb_model_config(m);
    zb_embed_t *e = calloc(1, sizeof *e);
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
    e->batch_tokens_max =
        cfg && cfg->batch_tokens_max > 0 ? cfg->batch_tokens_max : S_BATCH_TOKENS_DEFAULT;
    if (e->batch_tokens_max < e->seq_len_max) e->batch_tokens_max = e->seq_len_max;

    size_t vlen;
    const char *vocab = zb_model_vocab(m, &vlen);
    e->lowercase = zb_model_tokenizer_config(m)->lowercase;
    rc = zb_tokenizer_new(
        vocab, vlen,
        &(zb_tokenizer_options_t){.lowercase = zb_model_tokenizer_config(m)->lowercase,
                                  .strip_accents = zb_model_tokenizer_config(m)->strip_accents},
        &e->tok, d);
    if (rc != 0) goto fail;
    if (zb_tokenizer_cls_id(e->tok) < 0 || zb_tokenizer_sep_id(e->tok) < 0) {
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
    zb_embed_destroy(&e);
    return rc;
}

void zb_embed_destroy(zb_embed_t **pe) {
    if (pe == NULL || *pe == NULL) return;
    zb_embed_t *e = *pe;
    zb_tokenizer_destroy(&e->tok);
    zb_bert_destroy(&e->bert);
    free(e->ids);
    free(e->seq_len);
    free(e->out);
    free(e->seqs);
    zb_sparknlp_doc_free(&e->snlp);
    zb_sentences_spans_free(&e->spans);
    zb_tokenizer_pieces_free(&e->sub_pieces);
    zb_tokenizer_words_free(&e->sub_words);
    free(e);
    *pe = NULL;
}

const zb_tokenizer_t *zb_embed_tokenizer(const zb_embed_t *e) {
    return e->tok;
}

void zb_embed_stats(const zb_embed_t *e, zb_embed_stats_t *out) {
    *out = e->stats;
}

int zb_embed_dim(const zb_embed_t *e) {
    return e->dim;
}

static int s_reserve_floats(zb_embed_result_t *r, size_t n) {
    if (n <= r->vectors_cap) return 0;
    float *p = realloc(r->vectors, n * sizeof *p);
    if (p == NULL) return ZB_ENOMEM;
    r->vectors = p;
    r->vectors_cap = n;
    return 0;
}

static int s_push_seq(zb_embed_t *e, size_t *n, s_seq_t s) {
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

/* Appends one frame, [CLS] src[0..n) [SEP], with offsets shifted by the
 * frame's start in the text (cp code points, bb bytes), truncated to the
 * model's positions unless windows are on. */
static int s_push_frame(zb_embed_t *e, zb_embed_result_t *r, const zb_tokenizer_piece_t *src,
                        size_t n, uint32_t cp, uint32_t bb, const zb_options_t *o) {
    size_t content_max = (size_t)e->seq_len_max - 2;
    r->n_pieces_total += (uint32_t)n;
    if (!o->windows && n > content_max) {
        n = content_max;
        r->truncated = true;
    }
    if (zb_grow((void **)&r->seq_off, &r->seq_off_cap, r->n_sentences + 2, sizeof *r->seq_off) ||
        zb_grow((void **)&r->pieces.v, &r->pieces.cap, r->pieces.n + n + 2, sizeof *r->pieces.v))
        return ZB_ENOMEM;
    r->seq_off[r->n_sentences++] = (uint32_t)r->pieces.n;
    zb_tokenizer_piece_t *d = r->pieces.v + r->pieces.n;
    d[0] = (zb_tokenizer_piece_t){.id = zb_tokenizer_cls_id(e->tok)};
    for (size_t i = 0; i < n; i++) {
        zb_tokenizer_piece_t p = src[i];
        p.begin += cp;
        p.end += cp;
        p.byte_begin += bb;
        p.byte_end += bb;
        d[1 + i] = p;
    }
    d[n + 1] = (zb_tokenizer_piece_t){.id = zb_tokenizer_sep_id(e->tok)};
    r->pieces.n += n + 2;
    r->seq_off[r->n_sentences] = (uint32_t)r->pieces.n;
    return 0;
}

/* Appends words[0..n) shifted by (cp, bb) to r->words, sentence k. */
static int s_push_words(zb_embed_result_t *r, const zb_tokenizer_word_t *w, size_t n, uint32_t cp,
                        uint32_t bb, uint32_t k, bool meta) {
    if (zb_grow((void **)&r->words.v, &r->words.cap, r->words.n + n, sizeof *r->words.v))
        return ZB_ENOMEM;
    if (meta && zb_grow((void **)&r->meta, &r->meta_cap, r->words.n + n, sizeof *r->meta))
        return ZB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        zb_tokenizer_word_t x = w[i];
        x.begin += cp;
        x.end += cp;
        x.byte_begin += bb;
        x.byte_end += bb;
        if (meta) r->meta[r->words.n] = (zb_token_meta_t){.sentence = k};
        r->words.v[r->words.n++] = x;
    }
    return 0;
}

/* Spark NLP compatibility: frames and annotations from engine/sparknlp.c. */
static int s_tokenize_sparknlp(zb_embed_t *e, const char *text, size_t len, zb_embed_result_t *r) {
    zb_sparknlp_doc_t *doc = &e->snlp;
    if (e->seq_len_max < ZB_SPARKNLP_PIECES_MAX) {
        r->status = ZB_EUNSUPPORTED;
        snprintf(r->detail, sizeof r->detail,
                 "Spark NLP compatibility needs a model of at least %d positions (this one "
                 "has %d)",
                 ZB_SPARKNLP_PIECES_MAX, e->seq_len_max);
        return 0;
    }
    int rc = zb_sparknlp_analyze(e->tok, !e->lowercase, text, len, doc);
    if (rc == ZB_ENOMEM) return rc;
    if (rc != 0) {
        r->status = rc;
        snprintf(r->detail, sizeof r->detail, "%s", doc->error);
        return 0;
    }
    size_t n_ids = doc->n_sentences ? doc->seq_off[doc->n_sentences] : 0;
    if (zb_grow((void **)&r->pieces.v, &r->pieces.cap, n_ids, sizeof *r->pieces.v) ||
        zb_grow((void **)&r->seq_off, &r->seq_off_cap, doc->n_sentences + 1, sizeof *r->seq_off) ||
        zb_grow((void **)&r->words.v, &r->words.cap, doc->n_vectors, sizeof *r->words.v) ||
        zb_grow((void **)&r->meta, &r->meta_cap, doc->n_vectors, sizeof *r->meta))
        return ZB_ENOMEM;
    for (size_t i = 0; i < n_ids; i++) {
        /* a fed piece is shown with the span of the token that fed it */
        zb_tokenizer_piece_t p = {.id = doc->ids[i]};
        if (doc->piece_token[i] != UINT32_MAX) {
            const zb_sparknlp_span_t *sp = &doc->tokens[doc->piece_token[i]].span;
            p = (zb_tokenizer_piece_t){doc->ids[i], sp->begin, sp->end, sp->byte_begin,
                                       sp->byte_end};
        }
        r->pieces.v[i] = p;
    }
    r->pieces.n = n_ids;
    r->n_pieces_total = (uint32_t)(n_ids - 2 * doc->n_sentences);
    r->n_sentences = doc->n_sentences;
    for (size_t k = 0; k <= doc->n_sentences; k++)
        r->seq_off[k] = doc->n_sentences ? doc->seq_off[k] : 0;
    for (size_t i = 0; i < doc->n_vectors; i++) {
        const zb_sparknlp_vector_t *v = &doc->vectors[i];
        const zb_sparknlp_token_t *t = &doc->tokens[v->token];
        r->words.v[i] =
            (zb_tokenizer_word_t){t->span.begin, t->span.end, t->span.byte_begin, t->span.byte_end};
        r->meta[i] = (zb_token_meta_t){.sentence = t->sentence,
                                       .piece_id = v->piece_id,
                                       .row = v->row,
                                       .begin16 = t->span.begin16,
                                       .end16 = t->span.end16,
                                       .word_start = v->word_start};
    }
    r->words.n = doc->n_vectors;
    return 0;
}

/* Tokenises one text into r->pieces: frames of [CLS] pieces [SEP]. */
static int s_tokenize(zb_embed_t *e, const char *text, size_t len, const zb_options_t *o,
                      zb_embed_result_t *r) {
    r->status = 0;
    r->detail[0] = '\0';
    r->truncated = false;
    r->n_windows = 0;
    r->n_vectors = 0;
    r->n_pieces_total = 0;
    r->n_sentences = 0;
    r->pieces.n = 0;
    r->words.n = 0;
    r->dim = e->dim;
    if (o->compat == ZB_COMPAT_SPARKNLP) return s_tokenize_sparknlp(e, text, len, r);
    bool meta = zb_options_meta(o);
    int rc;
    if (!o->sentences) {
        rc = zb_tokenizer_encode(e->tok, text, len, &e->sub_pieces);
        if (rc == ZB_ENOMEM) return rc;
        if (rc != 0) {
            r->status = rc;
            return 0;
        }
        if ((rc = s_push_frame(e, r, e->sub_pieces.v, e->sub_pieces.n, 0, 0, o))) return rc;
        if (o->level == ZB_LEVEL_TOKEN) {
            rc = zb_tokenizer_split_words(text, len, &e->sub_words);
            if (rc == ZB_ENOMEM) return rc;
            if (rc == 0 && (rc = s_push_words(r, e->sub_words.v, e->sub_words.n, 0, 0, 0, meta)))
                return rc;
        }
        return 0;
    }
    /* One frame per sentence; tokens are split inside their sentence, so
     * none straddles two (the segmenter ends sentences without spaces too:
     * "world.Today", "。"). */
    rc = zb_sentences_split(text, len, &e->spans);
    if (rc == ZB_ENOMEM) return rc;
    if (rc != 0) {
        r->status = rc;
        return 0;
    }
    for (size_t k = 0; k < e->spans.n; k++) {
        const zb_sentences_span_t *sp = &e->spans.v[k];
        const char *sub = text + sp->byte_begin;
        size_t sl = sp->byte_end - sp->byte_begin;
        rc = zb_tokenizer_encode(e->tok, sub, sl, &e->sub_pieces);
        if (rc) return rc == ZB_ENOMEM ? rc : (r->status = rc, 0);
        if ((rc = s_push_frame(e, r, e->sub_pieces.v, e->sub_pieces.n, sp->begin, sp->byte_begin,
                               o)))
            return rc;
        if (o->level == ZB_LEVEL_TOKEN) {
            rc = zb_tokenizer_split_words(sub, sl, &e->sub_words);
            if (rc) return rc == ZB_ENOMEM ? rc : (r->status = rc, 0);
            if ((rc = s_push_words(r, e->sub_words.v, e->sub_words.n, sp->begin, sp->byte_begin,
                                   (uint32_t)k, meta)))
                return rc;
        }
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
    if (x->seg != y->seg) return x->seg < y->seg ? -1 : 1;
    return x->window < y->window ? -1 : (x->window > y->window);
}

/* Copies the rows a sequence owns into its text's row buffer (the rows of
 * its frame start at the frame's first piece). */
static void s_scatter(const zb_embed_t *e, const s_seq_t *s, const float *rows,
                      zb_embed_result_t *r) {
    size_t H = (size_t)e->dim;
    size_t base = r->seq_off[s->seg];
    float *v = r->vectors + base * H;
    int P = (int)(r->seq_off[s->seg + 1] - base) - 2;
    int C = e->seq_len_max - 2;
    if (s->n_windows == 1) {
        memcpy(v, rows, (size_t)(s->n + 2) * H * sizeof *rows);
        return;
    }
    if (s->window == 0) memcpy(v, rows, H * sizeof *rows);
    if (s->window == s->n_windows - 1)
        memcpy(v + (size_t)(P + 1) * H, rows + (size_t)(s->n + 1) * H, H * sizeof *rows);
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
            memcpy(v + (size_t)(p + 1) * H, rows + (size_t)(i + 1) * H, H * sizeof *rows);
    }
}

static void s_normalize(float *v, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss <= 0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int i = 0; i < n; i++) v[i] *= inv;
}

/* UTF-16 index of byte offset b of text, walking on from (*at_b, *at_u). */
static int32_t s_utf16_at(const char *text, uint32_t b, uint32_t *at_b, int32_t *at_u) {
    if (b < *at_b) *at_b = 0, *at_u = 0;
    const unsigned char *s = (const unsigned char *)text;
    while (*at_b < b) {
        unsigned c = s[*at_b];
        /* the text is valid UTF-8 here: lead bytes give the length */
        uint32_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        *at_b += k;
        *at_u += k == 4 ? 2 : 1;
    }
    return *at_u;
}

/* A row array for n vectors of h floats; never NULL for n = 0 (one row),
 * so a text without tokens still has a vectors pointer, as before.  NULL
 * when out of memory (or the size overflows). */
static float *s_alloc_rows(size_t n, size_t h) {
    size_t nf;
    if (__builtin_mul_overflow(n ? n : 1, h, &nf) || nf > SIZE_MAX / sizeof(float)) return NULL;
    return malloc(nf * sizeof(float));
}

/* Token level, first piece or mean, with or without metadata: the words of
 * r (grouped by frame) take rows from r->vectors into a new array. */
static int s_reduce_tokens(const zb_embed_t *e, const zb_options_t *o, const char *text,
                           zb_embed_result_t *r) {
    size_t H = (size_t)e->dim;
    bool meta = zb_options_meta(o);
    size_t nw = r->words.n;
    float *out = s_alloc_rows(nw, H);
    if (out == NULL) return ZB_ENOMEM;
    const float *v = r->vectors;
    size_t kept = 0, w = 0;
    uint32_t at_b = 0;
    int32_t at_u = 0;
    for (size_t k = 0; k < r->n_sentences; k++) {
        size_t p = r->seq_off[k] + 1, end = r->seq_off[k + 1] - 1; /* content pieces */
        /* frame k holds the words of sentence k (all words without sentences) */
        for (; w < nw && (!meta || r->meta[w].sentence == k); w++) {
            zb_tokenizer_word_t wd = r->words.v[w];
            while (p < end && r->pieces.v[p].byte_begin < wd.byte_begin) p++;
            bool has = p < end && r->pieces.v[p].byte_begin < wd.byte_end;
            /* past the pieces of a truncated frame: dropped, as before */
            if (!has && (!meta || (p >= end && r->truncated))) continue;
            float *dst = out + kept * H;
            zb_token_meta_t m = meta ? r->meta[w] : (zb_token_meta_t){0};
            if (!has) {
                memset(dst, 0, H * sizeof *dst);
                m.oov = true;
                m.piece_id = -1;
                m.word_start = false;
            } else {
                size_t q = p + 1;
                while (q < end && r->pieces.v[q].byte_begin < wd.byte_end) q++;
                if (o->token_vector == ZB_TOKEN_VECTOR_MEAN && q - p > 1) {
                    for (size_t j = 0; j < H; j++) {
                        double sum = 0;
                        for (size_t x = p; x < q; x++) sum += v[x * H + j];
                        dst[j] = (float)(sum / (double)(q - p));
                    }
                } else {
                    memcpy(dst, v + p * H, H * sizeof *dst);
                }
                size_t tl = 0;
                const char *tt = zb_tokenizer_token(e->tok, r->pieces.v[p].id, &tl);
                m.piece_id = r->pieces.v[p].id;
                m.row = (uint32_t)(p - r->seq_off[k]);
                m.word_start = !(tt && tl >= 2 && tt[0] == '#' && tt[1] == '#');
                m.oov = false;
            }
            if (meta) {
                m.begin16 = s_utf16_at(text, wd.byte_begin, &at_b, &at_u);
                m.end16 = s_utf16_at(text, wd.byte_end, &at_b, &at_u) - 1;
                r->meta[kept] = m;
            }
            r->words.v[kept++] = wd;
        }
    }
    r->words.n = kept;
    r->n_vectors = kept;
    free(r->vectors);
    r->vectors = out;
    r->vectors_cap = (nw ? nw : 1) * H;
    return 0;
}

/* Spark NLP compatibility: each annotation takes its row as such. */
static int s_reduce_sparknlp(const zb_embed_t *e, zb_embed_result_t *r) {
    size_t H = (size_t)e->dim, nw = r->words.n;
    float *out = s_alloc_rows(nw, H);
    if (out == NULL) return ZB_ENOMEM;
    for (size_t i = 0; i < nw; i++) {
        size_t row = r->seq_off[r->meta[i].sentence] + r->meta[i].row;
        memcpy(out + i * H, r->vectors + row * H, H * sizeof *out);
    }
    free(r->vectors);
    r->vectors = out;
    r->vectors_cap = (nw ? nw : 1) * H;
    r->n_vectors = nw;
    return 0;
}

/* Reduces a text's full rows ([pieces][dim]) to the requested level. */
static int s_reduce(const zb_embed_t *e, const zb_options_t *o, const char *text,
                    zb_embed_result_t *r) {
    size_t H = (size_t)e->dim;
    size_t T = r->pieces.n;
    float *v = r->vectors;
    int rc = 0;
    if (o->level == ZB_LEVEL_WORDPIECE) {
        r->n_vectors = T;
    } else if (o->level == ZB_LEVEL_SENTENCE) {
        if (o->pooling == ZB_POOLING_MEAN) {
            /* Sum in double: a mean over hundreds of rows keeps float32 parity. */
            for (size_t j = 0; j < H; j++) {
                double s = 0;
                for (size_t t = 1; t + 1 < T; t++) s += v[t * H + j];
                v[j] = T > 2 ? (float)(s / (double)(T - 2)) : 0.0f;
            }
        } /* cls: row 0 already */
        r->n_vectors = 1;
    } else if (o->compat == ZB_COMPAT_SPARKNLP) {
        rc = s_reduce_sparknlp(e, r);
    } else {
        rc = s_reduce_tokens(e, o, text, r);
    }
    if (rc) return rc;
    if (o->normalize)
        for (size_t i = 0; i < r->n_vectors; i++) s_normalize(r->vectors + i * H, (int)H);
    return 0;
}

/* Options that can be honoured: the shared rules, but a tokenize-only run
 * computes no vectors, so what the level makes of them does not matter. */
static bool s_options_valid(const zb_options_t *o) {
    zb_options_rule_t broken = zb_options_broken(o);
    if (broken == ZB_OPTIONS_RULE_NONE) return true;
    return o->tokenize_only &&
           (broken == ZB_OPTIONS_RULE_COMPAT_LEVEL || broken == ZB_OPTIONS_RULE_SENTENCES_LEVEL);
}

int zb_embed_run(zb_embed_t *e, const char *const *texts, const size_t *lens, size_t n,
                 const zb_options_t *opt, zb_embed_result_t *results) {
    static const zb_options_t defaults = {0};
    const zb_options_t *o = opt ? opt : &defaults;
    if (!s_options_valid(o)) return ZB_EINVAL;
    int rc;
    size_t n_seqs = 0;
    int C = e->seq_len_max - 2;
    for (size_t i = 0; i < n; i++) {
        zb_embed_result_t *r = &results[i];
        rc = s_tokenize(e, texts[i], lens[i], o, r);
        if (rc != 0) return rc;
        if (r->status != 0 || o->tokenize_only) continue;
        size_t nf;
        if (__builtin_mul_overflow(r->pieces.n, (size_t)e->dim, &nf)) return ZB_ELIMIT;
        if (s_reserve_floats(r, nf) != 0) return ZB_ENOMEM;
        for (size_t k = 0; k < r->n_sentences; k++) {
            int P = (int)(r->seq_off[k + 1] - r->seq_off[k]) - 2;
            int nw = s_n_windows(P, C);
            r->n_windows += nw;
            for (int w = 0; w < nw; w++) {
                int st = s_window_start(w, nw, P, C);
                int len = P - st < C ? P - st : C;
                rc = s_push_seq(e, &n_seqs, (s_seq_t){i, (uint32_t)k, st, len, w, nw});
                if (rc != 0) return rc;
            }
        }
    }
    e->stats.texts += n;
    if (n_seqs > 1) qsort(e->seqs, n_seqs, sizeof *e->seqs, s_seq_cmp);

    /* Spark NLP's graph uses the tanh GELU; the engine's default is erf. */
    zb_bert_set_gelu(e->bert,
                     o->compat == ZB_COMPAT_SPARKNLP ? ZB_BERT_GELU_TANH : ZB_BERT_GELU_ERF);
    size_t H = (size_t)e->dim;
    for (size_t b = 0; b < n_seqs;) {
        /* Pack as many sequences as fit the budget (at least one always fits:
         * the budget is >= seq_len_max). */
        size_t end = b;
        int total = 0, k = 0;
        while (end < n_seqs && total + e->seqs[end].n + 2 <= e->batch_tokens_max) {
            const s_seq_t *s = &e->seqs[end];
            const zb_embed_result_t *r = &results[s->text];
            const zb_tokenizer_piece_t *pc = r->pieces.v + r->seq_off[s->seg];
            e->ids[total] = pc[0].id;
            for (int i = 0; i < s->n; i++) e->ids[total + 1 + i] = pc[1 + s->first + i].id;
            e->ids[total + s->n + 1] = r->pieces.v[r->seq_off[s->seg + 1] - 1].id;
            e->seq_len[k++] = s->n + 2;
            total += s->n + 2;
            end++;
        }
        rc = zb_bert_forward(e->bert, e->ids, e->seq_len, k, e->out);
        if (rc != 0) {
            zb_bert_set_gelu(e->bert, ZB_BERT_GELU_ERF);
            return rc;
        }
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
    zb_bert_set_gelu(e->bert, ZB_BERT_GELU_ERF);
    for (size_t i = 0; i < n; i++) {
        zb_embed_result_t *r = &results[i];
        if (r->status != 0 || o->tokenize_only) continue;
        if ((rc = s_reduce(e, o, texts[i], r))) return rc;
    }
    return 0;
}
