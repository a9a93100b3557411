/*
 * convert.c -- writes zbert bundles (see convert.h; the format is bundle.h's).
 *
 * Writing builds weights.bin in memory (tensors at 64-byte aligned offsets,
 * zero padding), hashes it, and lets libzip write the archive with
 * weights.bin first and stored, its local header padded by an alignment
 * extra field so that its data starts at a multiple of 64.  The result is
 * reopened with the reader (bundle.c) to prove the layout before the writer
 * reports success.
 */
#include "convert.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>

#include "bundle.h"
#include "gemm.h"
#include "limits.h"
#include "qgemm.h"

/* Bytes a tensor of a spec occupies: plain ones their elements (whatever
 * n_stored says), packed ones their packed size. */
static size_t s_stored_bytes(const zb_model_tensor_t *t) {
    return (t->layout != ZB_BUNDLE_LAYOUT_PLAIN ? t->n_stored : t->n_elems) *
           zb_safetensors_dtype_size(t->dtype);
}

/* Whether a spec tensor's dtype, layout and stored size agree. */
static bool s_spec_tensor_ok(const zb_model_tensor_t *t) {
    switch (t->layout) {
    case ZB_BUNDLE_LAYOUT_PLAIN:
        return t->dtype == ZB_SAFETENSORS_F32 || t->dtype == ZB_SAFETENSORS_I32;
    case ZB_BUNDLE_LAYOUT_PANEL:
    case ZB_BUNDLE_LAYOUT_PANEL_Q8:
        if (t->n_dims != 2 || t->shape[0] < 1 || t->shape[1] < 1 ||
            t->shape[0] > ZB_INTERMEDIATE_MAX * 3 || t->shape[1] > ZB_INTERMEDIATE_MAX)
            return false;
        if (t->layout == ZB_BUNDLE_LAYOUT_PANEL)
            return t->dtype == ZB_SAFETENSORS_F32 &&
                   t->n_stored == zb_gemm_packed_floats((int)t->shape[0], (int)t->shape[1]);
        return t->dtype == ZB_SAFETENSORS_I8 &&
               t->n_stored == zb_qgemm_packed_bytes((int)t->shape[0], (int)t->shape[1]);
    }
    return false;
}

int zb_convert_write(const char *path, const zb_convert_spec_t *s, zb_diag_t *d) {
    int rc;
    unsigned char *blob = NULL;
    size_t *offs = NULL;
    cJSON *root = NULL;
    char *manifest = NULL;
    zip_t *za = NULL;
    zb_bundle_t *check = NULL;

    if (path == NULL || s == NULL || s->config == NULL || s->tokenizer == NULL ||
        s->vocab == NULL || (s->tensors == NULL && s->n_tensors > 0))
        return zb_diag_set(d, ZB_EINVAL, "bundle: incomplete spec");
    if (s->n_tensors > ZB_TENSORS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "bundle: %zu tensors, more than %d", s->n_tensors,
                           ZB_TENSORS_MAX);
    if (sodium_init() < 0) return zb_diag_set(d, ZB_EIO, "bundle: libsodium failed to start");

    /* layout: each tensor at the next ZB_BUNDLE_ALIGN boundary */
    offs = calloc(s->n_tensors ? s->n_tensors : 1, sizeof *offs);
    if (offs == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    size_t total = 0;
    bool any_q8 = false;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const zb_model_tensor_t *t = &s->tensors[i];
        size_t nl = strnlen(t->name, sizeof t->name);
        size_t prod = 1;
        for (int k = 0; k < t->n_dims && k < 2; k++) prod *= (size_t)t->shape[k];
        if (nl == 0 || nl >= sizeof t->name || t->n_dims < 1 || t->n_dims > 2 || t->shape[0] < 0 ||
            (t->n_dims == 2 && t->shape[1] < 0) || prod != t->n_elems ||
            (t->data == NULL && t->n_elems > 0) || !s_spec_tensor_ok(t)) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: tensor %zu is malformed", i);
            goto out;
        }
        size_t start = (total + ZB_BUNDLE_ALIGN - 1) / ZB_BUNDLE_ALIGN * ZB_BUNDLE_ALIGN;
        size_t nbytes;
        if (t->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8) any_q8 = true;
        nbytes = s_stored_bytes(t);
        if (start < total || __builtin_add_overflow(start, nbytes, &total) ||
            total > ZB_BUNDLE_WEIGHTS_MAX) {
            rc = zb_diag_set(d, ZB_ELIMIT, "bundle: weights exceed %u bytes (no zip64)",
                             ZB_BUNDLE_WEIGHTS_MAX);
            goto out;
        }
        offs[i] = start;
    }
    blob = calloc(total ? total : 1, 1);
    if (blob == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory for %zu bytes of weights", total);
        goto out;
    }
    for (size_t i = 0; i < s->n_tensors; i++)
        if (s_stored_bytes(&s->tensors[i]) > 0)
            memcpy(blob + offs[i], s->tensors[i].data, s_stored_bytes(&s->tensors[i]));
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256(h, blob, total);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);

    /* manifest */
    const zb_config_t *c = s->config;
    root = cJSON_CreateObject();
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON *tok = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON *w = cJSON_AddObjectToObject(root, "weights");
    cJSON *lay = cJSON_AddObjectToObject(root, "layout");
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    if (root == NULL || cfg == NULL || tok == NULL || w == NULL || lay == NULL || ts == NULL)
        goto oom;
    bool ok = cJSON_AddStringToObject(root, "format", ZB_BUNDLE_FORMAT) &&
              cJSON_AddNumberToObject(root, "version", ZB_BUNDLE_VERSION) &&
              cJSON_AddStringToObject(lay, "name", ZB_GEMM_LAYOUT_NAME) &&
              cJSON_AddNumberToObject(lay, "version", ZB_GEMM_LAYOUT_VERSION) &&
              cJSON_AddNumberToObject(lay, "panel_rows", ZB_GEMM_NR) &&
              cJSON_AddStringToObject(root, "source", s->source ? s->source : "") &&
              cJSON_AddStringToObject(cfg, "model_type", "bert") &&
              cJSON_AddNumberToObject(cfg, "vocab_size", c->vocab_size) &&
              cJSON_AddNumberToObject(cfg, "hidden_size", c->hidden) &&
              cJSON_AddNumberToObject(cfg, "num_hidden_layers", c->layers) &&
              cJSON_AddNumberToObject(cfg, "num_attention_heads", c->heads) &&
              cJSON_AddNumberToObject(cfg, "intermediate_size", c->intermediate) &&
              cJSON_AddNumberToObject(cfg, "max_position_embeddings", c->max_positions) &&
              cJSON_AddNumberToObject(cfg, "type_vocab_size", c->type_vocab_size) &&
              cJSON_AddNumberToObject(cfg, "layer_norm_eps", (double)c->layer_norm_eps) &&
              cJSON_AddStringToObject(cfg, "hidden_act", "gelu") &&
              cJSON_AddBoolToObject(tok, "lowercase", s->tokenizer->lowercase) &&
              cJSON_AddBoolToObject(tok, "strip_accents", s->tokenizer->strip_accents) &&
              cJSON_AddStringToObject(w, "entry", ZB_BUNDLE_ENTRY_WEIGHTS) &&
              cJSON_AddNumberToObject(w, "nbytes", (double)total) &&
              cJSON_AddStringToObject(w, "sha256", hex);
    for (size_t i = 0; ok && i < s->n_tensors; i++) {
        const zb_model_tensor_t *t = &s->tensors[i];
        cJSON *e = cJSON_CreateObject();
        if (e == NULL || !cJSON_AddItemToArray(ts, e)) {
            cJSON_Delete(e);
            ok = false;
            break;
        }
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        ok = sh != NULL;
        for (int k = 0; ok && k < t->n_dims; k++) {
            cJSON *v = cJSON_CreateNumber((double)t->shape[k]);
            ok = v != NULL && cJSON_AddItemToArray(sh, v);
        }
        ok = ok && cJSON_AddStringToObject(e, "name", t->name) &&
             cJSON_AddStringToObject(e, "dtype", zb_safetensors_dtype_name(t->dtype)) &&
             cJSON_AddStringToObject(e, "layout", zb_bundle_layout_name(t->layout)) &&
             cJSON_AddNumberToObject(e, "offset", (double)offs[i]) &&
             cJSON_AddNumberToObject(e, "nbytes", (double)s_stored_bytes(t));
    }
    if (ok && any_q8) {
        cJSON *lq = cJSON_AddObjectToObject(root, "layout_q8");
        ok = lq != NULL && cJSON_AddStringToObject(lq, "name", ZB_QGEMM_LAYOUT_NAME) &&
             cJSON_AddNumberToObject(lq, "version", ZB_QGEMM_LAYOUT_VERSION) &&
             cJSON_AddNumberToObject(lq, "panel_rows", ZB_GEMM_NR) &&
             cJSON_AddNumberToObject(lq, "k_group", ZB_QGEMM_KGROUP);
    }
    if (!ok) goto oom;
    manifest = cJSON_Print(root);
    if (manifest == NULL) goto oom;

    /* the archive: weights.bin first and stored, its local header padded so
     * that its data starts at a multiple of ZB_BUNDLE_ALIGN: 30 fixed bytes +
     * name + 4-byte extra field header + u16 alignment + zeros */
    int zerr = 0;
    za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (za == NULL) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot create: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        goto out;
    }
    size_t hdr = ZB_BUNDLE_ZIP_LOCAL_LEN + strlen(ZB_BUNDLE_ENTRY_WEIGHTS) + 4 + 2;
    unsigned char pad[2 + ZB_BUNDLE_ALIGN] = {0};
    size_t pad_len = 2 + (ZB_BUNDLE_ALIGN - hdr % ZB_BUNDLE_ALIGN) % ZB_BUNDLE_ALIGN;
    pad[0] = ZB_BUNDLE_ALIGN & 0xff;
    pad[1] = ZB_BUNDLE_ALIGN >> 8;
    zip_source_t *sw = zip_source_buffer(za, blob, total, 0);
    zip_int64_t wi = sw ? zip_file_add(za, ZB_BUNDLE_ENTRY_WEIGHTS, sw, ZIP_FL_ENC_UTF_8) : -1;
    if (wi < 0) zip_source_free(sw);
    if (wi != 0 || zip_set_file_compression(za, 0, ZIP_CM_STORE, 0) != 0 ||
        zip_file_extra_field_set(za, 0, ZB_BUNDLE_ALIGN_FIELD, ZIP_EXTRA_FIELD_NEW, pad,
                                 (zip_uint16_t)pad_len, ZIP_FL_LOCAL) != 0) {
        rc = zb_diag_set(d, ZB_EIO, "%s: %s: %s", path, ZB_BUNDLE_ENTRY_WEIGHTS, zip_strerror(za));
        goto out;
    }
    const char *names[2] = {ZB_BUNDLE_ENTRY_MANIFEST, ZB_BUNDLE_ENTRY_VOCAB};
    const void *bufs[2] = {manifest, s->vocab};
    size_t lens[2] = {strlen(manifest), s->vocab_len};
    for (int i = 0; i < 2; i++) {
        zip_source_t *src = zip_source_buffer(za, bufs[i], lens[i], 0);
        if (src == NULL || zip_file_add(za, names[i], src, ZIP_FL_ENC_UTF_8) < 0) {
            zip_source_free(src);
            rc = zb_diag_set(d, ZB_EIO, "%s: %s: %s", path, names[i], zip_strerror(za));
            goto out;
        }
    }
    if (zip_close(za) != 0) {
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot write: %s", path, zip_strerror(za));
        goto out;
    }
    za = NULL;
    /* prove the layout (alignment above all) before calling it a bundle */
    rc = zb_bundle_open(path, &check, d);
    if (rc != 0) {
        unlink(path);
        goto out;
    }
    rc = 0;
    goto out;
oom:
    rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory building the manifest");
out:
    if (za != NULL) zip_discard(za);
    zb_bundle_close(&check);
    cJSON_free(manifest);
    cJSON_Delete(root);
    free(blob);
    free(offs);
    return rc;
}

int zb_convert_model(const char *path, const zb_model_t *m, const char *source, zb_diag_t *d) {
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: no model");
    if (zb_model_is_int8(m))
        return zb_diag_set(d, ZB_EINVAL,
                           "bundle: the model is int8; its fp32 weights are gone "
                           "(convert from the fp32 source)");
    int n = zb_model_n_packed(zb_model_config(m));
    zb_model_tensor_t *ts = calloc((size_t)n, sizeof *ts);
    if (ts == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    for (int i = 0; i < n; i++) zb_model_packed_at(m, i, &ts[i]);
    zb_convert_spec_t spec = {
        .config = zb_model_config(m),
        .tokenizer = zb_model_tokenizer_config(m),
        .tensors = ts,
        .n_tensors = (size_t)n,
        .source = source,
    };
    spec.vocab = zb_model_vocab(m, &spec.vocab_len);
    int rc = zb_convert_write(path, &spec, d);
    free(ts);
    return rc;
}

/* The packed-table tensor of a given name, or NULL. */
static const zb_model_tensor_t *s_find_spec(const zb_model_tensor_t *ts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0) return &ts[i];
    return NULL;
}

/* SmoothQuant's column multipliers (alpha 0.5) for a matrix w [rows][cols]
 * whose inputs reached act_max[cols]: c_k = sqrt(max|x_k| / max_j |w_jk|),
 * so that both sides of the product end up with the same range per channel;
 * 1 where either is 0. */
static void s_smooth_cols(const float *w, int rows, int cols, const float *act_max, float *col) {
    for (int k = 0; k < cols; k++) col[k] = 0.0f;
    for (int j = 0; j < rows; j++)
        for (int k = 0; k < cols; k++) {
            const float v = fabsf(w[(size_t)j * (size_t)cols + (size_t)k]);
            if (v > col[k]) col[k] = v;
        }
    for (int k = 0; k < cols; k++) {
        const double c =
            act_max[k] > 0.0f && col[k] > 0.0f ? sqrt((double)act_max[k] / col[k]) : 1.0;
        col[k] = (float)(c < 1e-4 ? 1e-4 : c > 1e4 ? 1e4 : c);
    }
}

int zb_convert_model_int8(const char *path, const zb_model_t *m, const char *source,
                          const float *const *act_max, zb_diag_t *d) {
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: no model");
    const zb_config_t *c = zb_model_config(m);
    const int n = zb_model_n_int8(c), np = zb_model_n_packed(c);
    const bool again = zb_model_is_int8(m); /* already quantized: written as it is */
    int rc = 0;
    zb_model_tensor_t *ts = calloc((size_t)n, sizeof *ts);
    zb_model_tensor_t *pts = calloc((size_t)np, sizeof *pts);
    void **owned = calloc((size_t)n, sizeof *owned);
    float *plain = NULL, *col = NULL;
    int lin = 0; /* quantized matrices so far: layer * 4 + which */
    if (ts == NULL || pts == NULL || owned == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
        goto out;
    }
    for (int i = 0; i < np && !again; i++) zb_model_packed_at(m, i, &pts[i]);
    for (int i = 0; i < n; i++) {
        if (again) {
            zb_model_int8_at(m, i, &ts[i]);
            continue;
        }
        zb_model_int8_spec(c, i, &ts[i]);
        if (ts[i].layout != ZB_BUNDLE_LAYOUT_PANEL_Q8) {
            const zb_model_tensor_t *p = s_find_spec(pts, np, ts[i].name);
            if (p != NULL) ts[i].data = p->data; /* weight_scale, weight_sum: below */
            continue;
        }
        /* W, then W_scale, W_sum and W_smooth (model.h's order): quantized
         * from the packed fp32 W, its columns smoothed when calibrated */
        const zb_model_tensor_t *p = s_find_spec(pts, np, ts[i].name);
        const int rows = (int)ts[i].shape[0], cols = (int)ts[i].shape[1];
        if (p == NULL || i + 3 >= n || p->layout != ZB_BUNDLE_LAYOUT_PANEL) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: no fp32 matrix %s to quantize", ts[i].name);
            goto out;
        }
        for (int k = 1; k <= 3; k++) zb_model_int8_spec(c, i + k, &ts[i + k]);
        free(plain);
        free(col);
        plain = malloc((size_t)rows * (size_t)cols * sizeof *plain);
        col = malloc((size_t)cols * sizeof *col);
        int8_t *q = NULL;
        if (plain == NULL || col == NULL || posix_memalign(&owned[i], 64, ts[i].nbytes) != 0 ||
            (owned[i + 1] = malloc(ts[i + 1].nbytes)) == NULL ||
            (owned[i + 2] = malloc(ts[i + 2].nbytes)) == NULL ||
            (owned[i + 3] = malloc(ts[i + 3].nbytes)) == NULL) {
            rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory quantizing %s", ts[i].name);
            goto out;
        }
        q = owned[i];
        memset(q, 0, ts[i].nbytes);
        zb_gemm_unpack(p->data, rows, cols, plain, (size_t)cols);
        float *smooth = owned[i + 3];
        if (act_max != NULL) {
            s_smooth_cols(plain, rows, cols, act_max[lin], col);
            for (int k = 0; k < cols; k++) smooth[k] = 1.0f / col[k];
        } else {
            for (int k = 0; k < cols; k++) smooth[k] = 1.0f;
        }
        if (zb_qgemm_quantize_rows(plain, rows, cols, (size_t)cols, act_max ? col : NULL, 0, q,
                                   owned[i + 1], owned[i + 2]) != 0) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: %s holds an infinity or NaN", ts[i].name);
            goto out;
        }
        for (int k = 0; k < 4; k++) ts[i + k].data = owned[i + k];
        i += 3;
        lin++;
    }
    zb_convert_spec_t spec = {
        .config = c,
        .tokenizer = zb_model_tokenizer_config(m),
        .tensors = ts,
        .n_tensors = (size_t)n,
        .source = source,
    };
    spec.vocab = zb_model_vocab(m, &spec.vocab_len);
    rc = zb_convert_write(path, &spec, d);
out:
    for (int i = 0; owned != NULL && i < n; i++) free(owned[i]);
    free(owned);
    free(plain);
    free(col);
    free(pts);
    free(ts);
    return rc;
}
