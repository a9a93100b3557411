/*
 * model.c -- opens a BERT model from a Hugging Face directory or a zbert
 * bundle and binds its tensors to zb_model_weights_t (see model.h).
 *
 * One table (s_emb_slots, s_layer_slots) says which tensors the encoder
 * needs, under which canonical name, with which shape in terms of the
 * config, and where its pointer goes.  Both sources go through the same
 * binder: it looks a canonical name up in the source, checks dtype and exact
 * shape, and either points into the source's mapping (fp32, 4-byte aligned)
 * or widens into 64-byte aligned memory the model owns (F16, BF16,
 * misaligned F32 -- Hugging Face directories only; a bundle is fp32 and
 * aligned by construction, anything else in one is an error).
 *
 * Two tables exist: the plain one (Hugging Face names and layout, 16
 * tensors per layer) and the packed one a bundle stores (12 per layer: Q, K
 * and V stacked, linear weights in gemm.h's panel layout).  A source is
 * bound through the table it holds; when that is the plain one, the linear
 * weights are then packed into owned memory (and Q, K, V biases stacked),
 * so the forward pass always finds the packed operands.
 *
 * Invariants of an open model: every packed operand, bias and LayerNorm
 * pointer of zb_model_weights_t is non-NULL and points to exactly the number
 * of floats its shape implies (packed data 64-byte aligned); the plain
 * matrix pointers are set exactly when the source is plain; the
 * config respects limits.h; vocab.txt has between 1 and vocab_size entries.
 *
 * Thread-safety: an open model is never written again.
 */
#include "model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "gemm.h"
#include "json.h"
#include "limits.h"
#include "safetensors.h"

#define S_EMB_TENSORS          5
#define S_LAYER_TENSORS        16
#define S_PACKED_LAYER_TENSORS 12
#define S_INT8_LAYER_TENSORS   24
#define S_PACKED_PER_LAYER     5 /* owned blocks when packing at load: 4 matrices + qkv bias */

/* The three tables a source may hold: Hugging Face names and layout; the
 * packed fp32 one; the int8 one (model.h). */
typedef enum { S_TABLE_PLAIN, S_TABLE_PACKED, S_TABLE_INT8 } s_table_t;

struct zb_model {
    zb_config_t cfg;
    zb_config_tokenizer_t tok;
    zb_model_weights_t w;
    zb_model_layer_t *layers; /* [cfg.layers], pointed to by w.layer */
    char *vocab;              /* vocab.txt bytes (NUL appended, not counted) */
    size_t vocab_len;
    char identity[320];
    zb_safetensors_t *st; /* Hugging Face source: views point into its mapping */
    zb_bundle_t *bundle;  /* bundle source: views point into its mapping */
    void **owned;         /* widened or packed tensors, 64-byte aligned, freed on close */
    int n_owned;
    s_table_t table;     /* the table the source holds */
    bool packed_at_load; /* the packed operands were made here */
};

/* --- the tensor table ---------------------------------------------------- */

typedef enum { S_D_NONE, S_D_V, S_D_P, S_D_T, S_D_H, S_D_I, S_D_H3 } s_dim_t;

typedef struct {
    const char *name; /* canonical name (under "encoder.layer.N." for layer slots) */
    s_dim_t d0, d1;   /* shape in terms of the config; d1 == S_D_NONE for vectors */
    size_t field;     /* offset in its struct of the const float * / const int32_t *, or of
                       * the zb_gemm_w_t (panel) or zb_qgemm_w_t (panel-q8) */
    zb_bundle_layout_t layout;
    zb_safetensors_dtype_t dtype; /* F32, or I8 (panel-q8), I32 (row sums) */
} s_slot_t;

#define S_PLAIN ZB_BUNDLE_LAYOUT_PLAIN, ZB_SAFETENSORS_F32

static const s_slot_t s_emb_slots[S_EMB_TENSORS] = {
    {"embeddings.word_embeddings.weight", S_D_V, S_D_H, offsetof(zb_model_weights_t, word),
     S_PLAIN},
    {"embeddings.position_embeddings.weight", S_D_P, S_D_H, offsetof(zb_model_weights_t, position),
     S_PLAIN},
    {"embeddings.token_type_embeddings.weight", S_D_T, S_D_H,
     offsetof(zb_model_weights_t, token_type), S_PLAIN},
    {"embeddings.LayerNorm.weight", S_D_H, S_D_NONE, offsetof(zb_model_weights_t, emb_ln_g),
     S_PLAIN},
    {"embeddings.LayerNorm.bias", S_D_H, S_D_NONE, offsetof(zb_model_weights_t, emb_ln_b), S_PLAIN},
};

#define S_LW(f) offsetof(zb_model_layer_t, f)
#define S_PANEL ZB_BUNDLE_LAYOUT_PANEL, ZB_SAFETENSORS_F32
#define S_Q8    ZB_BUNDLE_LAYOUT_PANEL_Q8, ZB_SAFETENSORS_I8
#define S_SUM   ZB_BUNDLE_LAYOUT_PLAIN, ZB_SAFETENSORS_I32

static const s_slot_t s_layer_slots[S_LAYER_TENSORS] = {
    {"attention.self.query.weight", S_D_H, S_D_H, S_LW(q_w), S_PLAIN},
    {"attention.self.query.bias", S_D_H, S_D_NONE, S_LW(q_b), S_PLAIN},
    {"attention.self.key.weight", S_D_H, S_D_H, S_LW(k_w), S_PLAIN},
    {"attention.self.key.bias", S_D_H, S_D_NONE, S_LW(k_b), S_PLAIN},
    {"attention.self.value.weight", S_D_H, S_D_H, S_LW(v_w), S_PLAIN},
    {"attention.self.value.bias", S_D_H, S_D_NONE, S_LW(v_b), S_PLAIN},
    {"attention.output.dense.weight", S_D_H, S_D_H, S_LW(attn_out_w), S_PLAIN},
    {"attention.output.dense.bias", S_D_H, S_D_NONE, S_LW(attn_out_b), S_PLAIN},
    {"attention.output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(attn_ln_g), S_PLAIN},
    {"attention.output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(attn_ln_b), S_PLAIN},
    {"intermediate.dense.weight", S_D_I, S_D_H, S_LW(ffn_in_w), S_PLAIN},
    {"intermediate.dense.bias", S_D_I, S_D_NONE, S_LW(ffn_in_b), S_PLAIN},
    {"output.dense.weight", S_D_H, S_D_I, S_LW(ffn_out_w), S_PLAIN},
    {"output.dense.bias", S_D_H, S_D_NONE, S_LW(ffn_out_b), S_PLAIN},
    {"output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(ffn_ln_g), S_PLAIN},
    {"output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(ffn_ln_b), S_PLAIN},
};

static const s_slot_t s_packed_layer_slots[S_PACKED_LAYER_TENSORS] = {
    {"attention.self.qkv.weight", S_D_H3, S_D_H, S_LW(qkv), S_PANEL},
    {"attention.self.qkv.bias", S_D_H3, S_D_NONE, S_LW(qkv_b), S_PLAIN},
    {"attention.output.dense.weight", S_D_H, S_D_H, S_LW(attn_out), S_PANEL},
    {"attention.output.dense.bias", S_D_H, S_D_NONE, S_LW(attn_out_b), S_PLAIN},
    {"attention.output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(attn_ln_g), S_PLAIN},
    {"attention.output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(attn_ln_b), S_PLAIN},
    {"intermediate.dense.weight", S_D_I, S_D_H, S_LW(ffn_in), S_PANEL},
    {"intermediate.dense.bias", S_D_I, S_D_NONE, S_LW(ffn_in_b), S_PLAIN},
    {"output.dense.weight", S_D_H, S_D_I, S_LW(ffn_out), S_PANEL},
    {"output.dense.bias", S_D_H, S_D_NONE, S_LW(ffn_out_b), S_PLAIN},
    {"output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(ffn_ln_g), S_PLAIN},
    {"output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(ffn_ln_b), S_PLAIN},
};

/* A quantized linear layer: the panel-q8 matrix, its scales, its row sums,
 * its activation multipliers (qgemm.h). */
#define S_Q8_SLOTS(nm, d0, d1, f)                                                                  \
    {nm ".weight", d0, d1, S_LW(f), S_Q8},                                                         \
        {nm ".weight_scale", d0, S_D_NONE, S_LW(f.scale), S_PLAIN},                                \
        {nm ".weight_sum", d0, S_D_NONE, S_LW(f.sum), S_SUM}, {                                    \
        nm ".weight_smooth", d1, S_D_NONE, S_LW(f.smooth), S_PLAIN                                 \
    }

static const s_slot_t s_int8_layer_slots[S_INT8_LAYER_TENSORS] = {
    S_Q8_SLOTS("attention.self.qkv", S_D_H3, S_D_H, qkv_q8),
    {"attention.self.qkv.bias", S_D_H3, S_D_NONE, S_LW(qkv_b), S_PLAIN},
    S_Q8_SLOTS("attention.output.dense", S_D_H, S_D_H, attn_out_q8),
    {"attention.output.dense.bias", S_D_H, S_D_NONE, S_LW(attn_out_b), S_PLAIN},
    {"attention.output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(attn_ln_g), S_PLAIN},
    {"attention.output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(attn_ln_b), S_PLAIN},
    S_Q8_SLOTS("intermediate.dense", S_D_I, S_D_H, ffn_in_q8),
    {"intermediate.dense.bias", S_D_I, S_D_NONE, S_LW(ffn_in_b), S_PLAIN},
    S_Q8_SLOTS("output.dense", S_D_H, S_D_I, ffn_out_q8),
    {"output.dense.bias", S_D_H, S_D_NONE, S_LW(ffn_out_b), S_PLAIN},
    {"output.LayerNorm.weight", S_D_H, S_D_NONE, S_LW(ffn_ln_g), S_PLAIN},
    {"output.LayerNorm.bias", S_D_H, S_D_NONE, S_LW(ffn_ln_b), S_PLAIN},
};

#undef S_Q8_SLOTS
#undef S_LW

static int64_t s_dim(const zb_config_t *c, s_dim_t k) {
    switch (k) {
    case S_D_V:
        return c->vocab_size;
    case S_D_P:
        return c->max_positions;
    case S_D_T:
        return c->type_vocab_size;
    case S_D_H:
        return c->hidden;
    case S_D_I:
        return c->intermediate;
    case S_D_H3:
        return 3 * (int64_t)c->hidden;
    case S_D_NONE:
        break;
    }
    return 0;
}

static int s_per_layer(s_table_t table) {
    return table == S_TABLE_PLAIN    ? S_LAYER_TENSORS
           : table == S_TABLE_PACKED ? S_PACKED_LAYER_TENSORS
                                     : S_INT8_LAYER_TENSORS;
}

/* Describes tensor i of a table: name, shape, dtype, layout; returns its
 * slot and sets *layer (-1 for the embeddings).  i must be in range. */
static const s_slot_t *s_describe(const zb_config_t *c, s_table_t table, int i,
                                  zb_model_tensor_t *t, int *layer) {
    const s_slot_t *s;
    const int per = s_per_layer(table);
    memset(t, 0, sizeof *t);
    if (i < S_EMB_TENSORS) {
        s = &s_emb_slots[i];
        snprintf(t->name, sizeof t->name, "%s", s->name);
        *layer = -1;
    } else {
        int l = (i - S_EMB_TENSORS) / per, k = (i - S_EMB_TENSORS) % per;
        s = table == S_TABLE_PLAIN    ? &s_layer_slots[k]
            : table == S_TABLE_PACKED ? &s_packed_layer_slots[k]
                                      : &s_int8_layer_slots[k];
        snprintf(t->name, sizeof t->name, "encoder.layer.%d.%s", l, s->name);
        *layer = l;
    }
    t->dtype = s->dtype;
    t->n_dims = s->d1 == S_D_NONE ? 1 : 2;
    t->shape[0] = s_dim(c, s->d0);
    t->shape[1] = s->d1 == S_D_NONE ? 0 : s_dim(c, s->d1);
    /* limits.h bounds every dim so that these products cannot overflow */
    t->n_elems = (size_t)t->shape[0] * (size_t)(t->n_dims == 2 ? t->shape[1] : 1);
    t->layout = s->layout;
    t->packed = s->layout != ZB_BUNDLE_LAYOUT_PLAIN;
    const int n = (int)t->shape[0], k = (int)t->shape[1];
    t->n_stored = s->layout == ZB_BUNDLE_LAYOUT_PANEL      ? zb_gemm_packed_floats(n, k)
                  : s->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8 ? zb_qgemm_packed_bytes(n, k)
                                                           : t->n_elems;
    t->nbytes = t->n_stored * zb_safetensors_dtype_size(s->dtype);
    t->data = NULL;
    return s;
}

/* Address of a slot's field inside w (embeddings) or layers[layer]. */
static void *s_slot_addr(const s_slot_t *s, int layer, const zb_model_weights_t *w,
                         const zb_model_layer_t *layers) {
    const char *base = layer < 0 ? (const char *)w : (const char *)&layers[layer];
    return (void *)(uintptr_t)(base + s->field);
}

/* The data a bound slot points to. */
static const void *s_slot_data(const s_slot_t *s, const void *addr) {
    if (s->layout == ZB_BUNDLE_LAYOUT_PANEL) return ((const zb_gemm_w_t *)addr)->p;
    if (s->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8) return ((const zb_qgemm_w_t *)addr)->q;
    return *(const void *const *)addr;
}

static int s_n_table(const zb_config_t *c, s_table_t table) {
    return S_EMB_TENSORS + s_per_layer(table) * c->layers;
}

/* --- small files ---------------------------------------------------------- */

/* Reads a whole regular file of at most max bytes; *buf gets a NUL appended. */
static int s_read_file(const char *path, size_t max, char **buf, size_t *len, zb_diag_t *d) {
    int rc;
    char *b = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *buf = NULL;
    if (fd < 0) {
        int e = errno;
        return zb_diag_set(d, e == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: cannot open: %s", path,
                           strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = zb_diag_set(d, ZB_EIO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > max) {
        rc = zb_diag_set(d, ZB_ELIMIT, "%s: %lld bytes, more than the %zu-byte limit", path,
                         (long long)sb.st_size, max);
        goto out;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    b = malloc(n + 1);
    if (b == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "%s: out of memory", path);
        goto out;
    }
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = zb_diag_set(d, ZB_EIO, "%s: read failed: %s", path,
                             r < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)r;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
    rc = 0;
out:
    free(b);
    close(fd);
    return rc;
}

/* --- binding ------------------------------------------------------------ */

/* A tensor as a source offers it. */
typedef struct {
    char stored_name[ZB_TENSOR_NAME_MAX + 8]; /* as spelled in the file, for messages */
    zb_safetensors_dtype_t dtype;
    int n_dims;
    const int64_t *shape;
    size_t n_elems;
    zb_bundle_layout_t layout; /* a panel layout: bundles only */
    size_t n_stored;           /* elements stored: n_elems, or the packed size */
    const void *data;
} s_src_tensor_t;

typedef int (*s_lookup_fn)(void *ctx, const char *canonical, s_src_tensor_t *out, zb_diag_t *d);

static void s_shape_str(char *buf, size_t cap, int n_dims, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n_dims && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

static void *s_own(zb_model_t *m, size_t nbytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, nbytes ? nbytes : 64) != 0) return NULL;
    m->owned[m->n_owned++] = p;
    return p;
}

/* Binds every tensor of the plain or packed table through lookup.
 * allow_widen permits F16/BF16/misaligned F32 (copied into owned memory);
 * packed tensors must be F32, 64-byte aligned and exactly the packed size. */
static int s_bind(zb_model_t *m, s_lookup_fn lookup, void *ctx, s_table_t table, int allow_widen,
                  zb_diag_t *d) {
    int n = s_n_table(&m->cfg, table);
    m->layers = calloc((size_t)m->cfg.layers, sizeof *m->layers);
    /* room for every tensor widened, plus the blocks of packing at load */
    m->owned =
        calloc((size_t)n + (size_t)S_PACKED_PER_LAYER * (size_t)m->cfg.layers, sizeof *m->owned);
    if (m->layers == NULL || m->owned == NULL)
        return zb_diag_set(d, ZB_ENOMEM, "model: out of memory");
    m->w.layer = m->layers;
    m->table = table;
    for (int i = 0; i < n; i++) {
        zb_model_tensor_t want;
        s_src_tensor_t got;
        int layer;
        const s_slot_t *slot = s_describe(&m->cfg, table, i, &want, &layer);
        void *addr = s_slot_addr(slot, layer, &m->w, m->layers);
        int rc = lookup(ctx, want.name, &got, d);
        if (rc != 0) return rc;
        if (got.layout != want.layout)
            return zb_diag_set(d, ZB_EFORMAT, "tensor %s: stored in the %s layout, expected %s",
                               got.stored_name, zb_bundle_layout_name(got.layout),
                               zb_bundle_layout_name(want.layout));
        int same = got.n_dims == want.n_dims;
        for (int k = 0; same && k < want.n_dims; k++) same = got.shape[k] == want.shape[k];
        if (!same) {
            char ws[64], gs[128];
            s_shape_str(ws, sizeof ws, want.n_dims, want.shape);
            s_shape_str(gs, sizeof gs, got.n_dims, got.shape);
            return zb_diag_set(d, ZB_EFORMAT,
                               "tensor %s: expected shape %s from the config, found %s",
                               got.stored_name, ws, gs);
        }
        if (want.packed || want.dtype != ZB_SAFETENSORS_F32) {
            /* panels and int8 data come from bundles only, which checked the
             * size against the shape; the GEMMs' aligned loads need the
             * alignment */
            const size_t align = want.packed ? 64 : sizeof(int32_t);
            if (got.dtype != want.dtype || got.n_stored != want.n_stored ||
                (uintptr_t)got.data % align != 0)
                return zb_diag_set(
                    d, ZB_EFORMAT, "tensor %s: must be %zu %zu-byte aligned %s values",
                    got.stored_name, want.n_stored, align, zb_safetensors_dtype_name(want.dtype));
            const int rows = (int)want.shape[0], cols = (int)want.shape[1];
            if (want.layout == ZB_BUNDLE_LAYOUT_PANEL) {
                *(zb_gemm_w_t *)addr = (zb_gemm_w_t){.p = got.data, .n = rows, .k = cols};
            } else if (want.layout == ZB_BUNDLE_LAYOUT_PANEL_Q8) {
                zb_qgemm_w_t *q = addr;
                q->q = got.data;
                q->n = rows;
                q->k = cols;
            } else {
                *(const void **)addr = got.data; /* the row sums */
            }
            continue;
        }
        const float *p;
        if (got.dtype == ZB_SAFETENSORS_F32 && ((uintptr_t)got.data % sizeof(float)) == 0) {
            p = got.data;
        } else if (!allow_widen ||
                   (got.dtype != ZB_SAFETENSORS_F32 && got.dtype != ZB_SAFETENSORS_F16 &&
                    got.dtype != ZB_SAFETENSORS_BF16)) {
            return zb_diag_set(d, ZB_EUNSUPPORTED, "tensor %s: dtype %s%s, expected %s",
                               got.stored_name, zb_safetensors_dtype_name(got.dtype),
                               got.dtype == ZB_SAFETENSORS_F32 ? " (misaligned)" : "",
                               allow_widen ? "F32, F16 or BF16" : "aligned F32");
        } else {
            float *q = s_own(m, want.n_elems * sizeof(float));
            if (q == NULL) return zb_diag_set(d, ZB_ENOMEM, "model: out of memory");
            const unsigned char *b = got.data;
            if (got.dtype == ZB_SAFETENSORS_F32) {
                memcpy(q, b, want.n_elems * sizeof(float));
            } else {
                for (size_t k = 0; k < want.n_elems; k++) {
                    uint16_t h = (uint16_t)(b[2 * k] | (b[2 * k + 1] << 8));
                    q[k] = got.dtype == ZB_SAFETENSORS_F16 ? zb_safetensors_f16_to_f32(h)
                                                           : zb_safetensors_bf16_to_f32(h);
                }
            }
            p = q;
        }
        *(const float **)addr = p;
    }
    if (table != S_TABLE_PLAIN) {
        /* the separate Q, K, V biases are views into the stacked one */
        const size_t h = (size_t)m->cfg.hidden;
        for (int l = 0; l < m->cfg.layers; l++) {
            zb_model_layer_t *L = &m->layers[l];
            L->q_b = L->qkv_b;
            L->k_b = L->qkv_b + h;
            L->v_b = L->qkv_b + 2 * h;
            L->int8 = table == S_TABLE_INT8;
        }
    }
    return 0;
}

/* Makes the packed operands of a plainly bound model in owned memory: Q, K
 * and V stacked into one packed matrix (and their biases into one vector),
 * the three other matrices packed alone. */
static int s_pack_at_load(zb_model_t *m, zb_diag_t *d) {
    const int h = m->cfg.hidden, in = m->cfg.intermediate;
    for (int l = 0; l < m->cfg.layers; l++) {
        zb_model_layer_t *L = &m->layers[l];
        float *qkv = s_own(m, zb_gemm_packed_floats(3 * h, h) * sizeof(float));
        float *qkv_b = qkv ? s_own(m, 3 * (size_t)h * sizeof(float)) : NULL;
        float *ao = qkv_b ? s_own(m, zb_gemm_packed_floats(h, h) * sizeof(float)) : NULL;
        float *fi = ao ? s_own(m, zb_gemm_packed_floats(in, h) * sizeof(float)) : NULL;
        float *fo = fi ? s_own(m, zb_gemm_packed_floats(h, in) * sizeof(float)) : NULL;
        if (fo == NULL) return zb_diag_set(d, ZB_ENOMEM, "model: out of memory packing weights");
        memset(qkv, 0, zb_gemm_packed_floats(3 * h, h) * sizeof(float));
        zb_gemm_pack_rows(L->q_w, h, h, (size_t)h, 0, 3 * h, qkv);
        zb_gemm_pack_rows(L->k_w, h, h, (size_t)h, h, 3 * h, qkv);
        zb_gemm_pack_rows(L->v_w, h, h, (size_t)h, 2 * h, 3 * h, qkv);
        memcpy(qkv_b, L->q_b, (size_t)h * sizeof(float));
        memcpy(qkv_b + h, L->k_b, (size_t)h * sizeof(float));
        memcpy(qkv_b + 2 * h, L->v_b, (size_t)h * sizeof(float));
        zb_gemm_pack(L->attn_out_w, h, h, (size_t)h, ao);
        zb_gemm_pack(L->ffn_in_w, in, h, (size_t)h, fi);
        zb_gemm_pack(L->ffn_out_w, h, in, (size_t)in, fo);
        L->qkv = (zb_gemm_w_t){.p = qkv, .n = 3 * h, .k = h};
        L->qkv_b = qkv_b;
        L->attn_out = (zb_gemm_w_t){.p = ao, .n = h, .k = h};
        L->ffn_in = (zb_gemm_w_t){.p = fi, .n = in, .k = h};
        L->ffn_out = (zb_gemm_w_t){.p = fo, .n = h, .k = in};
    }
    m->packed_at_load = true;
    return 0;
}

/* Hugging Face names: with or without "bert.", LayerNorm weight/bias or
 * gamma/beta.  Exactly one spelling must be present. */
static int s_hf_lookup(void *ctx, const char *canonical, s_src_tensor_t *out, zb_diag_t *d) {
    const zb_safetensors_t *st = ctx;
    char alt[128]; /* canonical names are < 96 bytes */
    const char *ln_w = strstr(canonical, "LayerNorm.weight");
    const char *ln_b = strstr(canonical, "LayerNorm.bias");
    const zb_safetensors_tensor_t *found = NULL;
    char found_name[160] = "";
    for (int prefix = 0; prefix < 2; prefix++) {
        for (int variant = 0; variant < 2; variant++) {
            if (variant == 1 && ln_w == NULL && ln_b == NULL) continue;
            char name[160];
            snprintf(alt, sizeof alt, "%s", canonical);
            if (variant == 1) {
                size_t at = (size_t)((ln_w ? ln_w : ln_b) - canonical) + strlen("LayerNorm.");
                snprintf(alt + at, sizeof alt - at, "%s", ln_w ? "gamma" : "beta");
            }
            snprintf(name, sizeof name, "%s%s", prefix ? "bert." : "", alt);
            const zb_safetensors_tensor_t *t = zb_safetensors_find(st, name);
            if (t == NULL) continue;
            if (found != NULL)
                return zb_diag_set(d, ZB_EFORMAT,
                                   "tensors %s and %s are both present: which "
                                   "one is %s?",
                                   found_name, name, canonical);
            found = t;
            snprintf(found_name, sizeof found_name, "%s", name);
        }
    }
    if (found == NULL)
        return zb_diag_set(d, ZB_ENOTFOUND, "model.safetensors: missing tensor %s", canonical);
    snprintf(out->stored_name, sizeof out->stored_name, "%s", found_name);
    out->dtype = found->dtype;
    out->n_dims = found->n_dims;
    out->shape = found->shape;
    out->n_elems = found->n_elems;
    out->layout = ZB_BUNDLE_LAYOUT_PLAIN;
    out->n_stored = found->n_elems;
    out->data = found->data;
    return 0;
}

static int s_bundle_lookup(void *ctx, const char *canonical, s_src_tensor_t *out, zb_diag_t *d) {
    const zb_bundle_tensor_t *t = zb_bundle_find(ctx, canonical);
    if (t == NULL) return zb_diag_set(d, ZB_ENOTFOUND, "bundle: missing tensor %s", canonical);
    snprintf(out->stored_name, sizeof out->stored_name, "%s", t->name);
    out->dtype = t->dtype;
    out->n_dims = t->n_dims;
    out->shape = t->shape;
    out->n_elems = t->n_elems;
    out->layout = t->layout;
    out->n_stored = t->nbytes / zb_safetensors_dtype_size(t->dtype);
    out->data = t->data;
    return 0;
}

/* --- open / close --------------------------------------------------------- */

static int s_open_hf(zb_model_t *m, const char *dir, zb_diag_t *d) {
    int rc;
    char path[4096];
    char *txt = NULL;
    size_t len = 0;

    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = s_read_file(path, ZB_MODEL_TEXT_FILE_MAX, &txt, &len, d)) != 0) goto out;
    if ((rc = zb_config_parse(txt, len, "config.json", &m->cfg, d)) != 0) goto out;
    free(txt);
    txt = NULL;

    m->tok.lowercase = false;
    m->tok.strip_accents = false;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    rc = s_read_file(path, ZB_MODEL_TEXT_FILE_MAX, &txt, &len, d);
    if (rc == 0) {
        rc = zb_config_parse_tokenizer(txt, len, "tokenizer_config.json", &m->tok, d);
        if (rc != 0) goto out;
    } else if (rc != ZB_ENOTFOUND) {
        goto out;
    }
    free(txt);
    txt = NULL;

    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    if ((rc = s_read_file(path, ZB_MODEL_TEXT_FILE_MAX, &m->vocab, &m->vocab_len, d)) != 0)
        goto out;
    if ((rc = zb_config_vocab_check(m->vocab, m->vocab_len, m->cfg.vocab_size, "vocab.txt", d)))
        goto out;

    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = zb_safetensors_open_file(path, &m->st, d)) != 0) goto out;
    if ((rc = s_bind(m, s_hf_lookup, m->st, S_TABLE_PLAIN, 1, d)) != 0) goto out;
    if ((rc = s_pack_at_load(m, d)) != 0) goto out;

    /* identity: "hf:" + the directory's last path component */
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(m->identity, sizeof m->identity, "hf:%.*s", (int)(n - b), dir + b);
out:
    free(txt);
    return rc;
}

static int s_open_bundle(zb_model_t *m, const char *path, zb_diag_t *d) {
    int rc = zb_bundle_open(path, &m->bundle, d);
    if (rc != 0) return rc;
    m->cfg = *zb_bundle_config(m->bundle);
    m->tok = *zb_bundle_tokenizer_config(m->bundle);
    size_t vlen;
    const char *v = zb_bundle_vocab(m->bundle, &vlen);
    m->vocab = malloc(vlen + 1);
    if (m->vocab == NULL) return zb_diag_set(d, ZB_ENOMEM, "model: out of memory");
    memcpy(m->vocab, v, vlen);
    m->vocab[vlen] = '\0';
    m->vocab_len = vlen;
    rc = zb_config_vocab_check(m->vocab, m->vocab_len, m->cfg.vocab_size, "bundle vocab.txt", d);
    if (rc != 0) return rc;
    /* a bundle holds aligned data by construction: no widening, views only.
     * Its table is the int8 one when the stacked QKV matrix has scales, the
     * packed one when that matrix is there alone; an older plain bundle is
     * bound as such and packed here. */
    const s_table_t table =
        zb_bundle_find(m->bundle, "encoder.layer.0.attention.self.qkv.weight_scale") != NULL
            ? S_TABLE_INT8
        : zb_bundle_find(m->bundle, "encoder.layer.0.attention.self.qkv.weight") != NULL
            ? S_TABLE_PACKED
            : S_TABLE_PLAIN;
    if ((rc = s_bind(m, s_bundle_lookup, m->bundle, table, 0, d)) != 0) return rc;
    if (table == S_TABLE_PLAIN && (rc = s_pack_at_load(m, d)) != 0) return rc;
    snprintf(m->identity, sizeof m->identity, "%s", zb_bundle_identity(m->bundle));
    return 0;
}

int zb_model_open(const char *path, zb_model_t **out, zb_diag_t *d) {
    if (out == NULL) return zb_diag_set(d, ZB_EINVAL, "model: no output pointer");
    *out = NULL;
    if (path == NULL || path[0] == '\0') return zb_diag_set(d, ZB_EINVAL, "model: no path");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        return zb_diag_set(d, e == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: %s", path, strerror(e));
    }
    zb_model_t *m = calloc(1, sizeof *m);
    if (m == NULL) return zb_diag_set(d, ZB_ENOMEM, "model: out of memory");
    int rc = S_ISDIR(sb.st_mode) ? s_open_hf(m, path, d) : s_open_bundle(m, path, d);
    if (rc != 0) {
        zb_model_close(&m);
        return rc;
    }
    *out = m;
    return zb_diag_set(d, 0, NULL);
}

void zb_model_close(zb_model_t **pm) {
    if (pm == NULL || *pm == NULL) return;
    zb_model_t *m = *pm;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->vocab);
    zb_safetensors_close(&m->st);
    zb_bundle_close(&m->bundle);
    free(m);
    *pm = NULL;
}

const zb_config_t *zb_model_config(const zb_model_t *m) {
    return &m->cfg;
}

const zb_config_tokenizer_t *zb_model_tokenizer_config(const zb_model_t *m) {
    return &m->tok;
}

const zb_model_weights_t *zb_model_weights(const zb_model_t *m) {
    return &m->w;
}

const char *zb_model_vocab(const zb_model_t *m, size_t *len) {
    if (len) *len = m->vocab_len;
    return m->vocab;
}

const char *zb_model_identity(const zb_model_t *m) {
    return m->identity;
}

int zb_model_n_tensors(const zb_model_t *m) {
    return s_n_table(&m->cfg, m->table);
}

/* Tensor i of a table, with its data from the model's bound weights. */
static int s_model_tensor(const zb_model_t *m, s_table_t table, int i, zb_model_tensor_t *out) {
    if (m == NULL || out == NULL || i < 0 || i >= s_n_table(&m->cfg, table)) return ZB_EINVAL;
    int layer;
    const s_slot_t *s = s_describe(&m->cfg, table, i, out, &layer);
    out->data = s_slot_data(s, s_slot_addr(s, layer, &m->w, m->layers));
    return 0;
}

/* Tensor i of a table for a config alone. */
static int s_spec(const zb_config_t *c, s_table_t table, int i, zb_model_tensor_t *out) {
    if (c == NULL || out == NULL || i < 0 || c->layers < 0 || i >= s_n_table(c, table))
        return ZB_EINVAL;
    int layer;
    s_describe(c, table, i, out, &layer);
    return 0;
}

int zb_model_tensor_at(const zb_model_t *m, int i, zb_model_tensor_t *out) {
    if (m == NULL) return ZB_EINVAL;
    return s_model_tensor(m, m->table, i, out);
}

int zb_model_tensor_spec(const zb_config_t *c, int i, zb_model_tensor_t *out) {
    return s_spec(c, S_TABLE_PLAIN, i, out);
}

int zb_model_n_packed(const zb_config_t *c) {
    return c == NULL || c->layers < 0 ? 0 : s_n_table(c, S_TABLE_PACKED);
}

int zb_model_packed_spec(const zb_config_t *c, int i, zb_model_tensor_t *out) {
    return s_spec(c, S_TABLE_PACKED, i, out);
}

int zb_model_packed_at(const zb_model_t *m, int i, zb_model_tensor_t *out) {
    /* an int8 model has no fp32 matrices to give */
    if (m == NULL || m->table == S_TABLE_INT8) return ZB_EINVAL;
    return s_model_tensor(m, S_TABLE_PACKED, i, out);
}

int zb_model_n_int8(const zb_config_t *c) {
    return c == NULL || c->layers < 0 ? 0 : s_n_table(c, S_TABLE_INT8);
}

int zb_model_int8_spec(const zb_config_t *c, int i, zb_model_tensor_t *out) {
    return s_spec(c, S_TABLE_INT8, i, out);
}

int zb_model_int8_at(const zb_model_t *m, int i, zb_model_tensor_t *out) {
    if (m == NULL || m->table != S_TABLE_INT8) return ZB_EINVAL;
    return s_model_tensor(m, S_TABLE_INT8, i, out);
}

bool zb_model_is_int8(const zb_model_t *m) {
    return m != NULL && m->table == S_TABLE_INT8;
}

bool zb_model_packed_at_load(const zb_model_t *m) {
    return m != NULL && m->packed_at_load;
}
