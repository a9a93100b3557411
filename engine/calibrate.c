/*
 * calibrate.c -- per-channel activation maxima of the fp32 model (see
 * calibrate.h), gathered through the encoder's observer hook.
 */
#include "calibrate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bert.h"
#include "tokenizer.h"

struct zb_calibrate {
    int n_arrays; /* layers * 4 */
    float **max;  /* [n_arrays][channels] */
    size_t texts;
    size_t tokens;
};

static void s_observe(void *ctx, int layer, int which, const float *x, size_t ldx, int rows,
                      int cols) {
    zb_calibrate_t *c = ctx;
    float *m = c->max[layer * 4 + which];
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * ldx;
        for (int k = 0; k < cols; k++) {
            const float v = fabsf(xr[k]);
            if (v > m[k]) m[k] = v; /* a NaN never wins */
        }
    }
}

int zb_calibrate_run(const zb_model_t *m, const char *const *texts, const size_t *lens, size_t n,
                     int threads, zb_calibrate_t **out, zb_diag_t *d) {
    int rc = 0;
    zb_tokenizer_t *tok = NULL;
    zb_bert_t *bert = NULL;
    zb_tokenizer_pieces_t pieces = {0};
    int32_t *ids = NULL;
    if (out == NULL || m == NULL || (texts == NULL && n > 0))
        return zb_diag_set(d, ZB_EINVAL, "calibration: no model or texts");
    *out = NULL;
    if (zb_model_is_int8(m))
        return zb_diag_set(d, ZB_EINVAL, "calibration needs the fp32 model, not an int8 one");
    const zb_config_t *cfg = zb_model_config(m);
    zb_calibrate_t *c = calloc(1, sizeof *c);
    if (c == NULL) return zb_diag_set(d, ZB_ENOMEM, "calibration: out of memory");
    c->n_arrays = cfg->layers * 4;
    c->max = calloc((size_t)c->n_arrays, sizeof *c->max);
    if (c->max == NULL) goto oom;
    for (int i = 0; i < c->n_arrays; i++) {
        const int k = i % 4 == 3 ? cfg->intermediate : cfg->hidden;
        if ((c->max[i] = calloc((size_t)k, sizeof(float))) == NULL) goto oom;
    }
    size_t vlen;
    const char *vocab = zb_model_vocab(m, &vlen);
    const zb_config_tokenizer_t *tc = zb_model_tokenizer_config(m);
    const zb_tokenizer_options_t to = {.lowercase = tc->lowercase,
                                       .strip_accents = tc->strip_accents};
    if ((rc = zb_tokenizer_new(vocab, vlen, &to, &tok, d)) != 0) goto fail;
    const int seq_max = cfg->max_positions;
    if ((rc = zb_bert_new(m, seq_max, seq_max, threads, &bert, d)) != 0) goto fail;
    zb_bert_set_observer(bert, s_observe, c);
    ids = malloc((size_t)seq_max * sizeof *ids);
    float *hidden = malloc((size_t)seq_max * (size_t)cfg->hidden * sizeof *hidden);
    if (ids == NULL || hidden == NULL) {
        free(hidden);
        goto oom;
    }
    for (size_t i = 0; i < n; i++) {
        if (zb_tokenizer_encode(tok, texts[i], lens[i], &pieces) != 0 || pieces.n == 0) continue;
        int len = 0;
        ids[len++] = zb_tokenizer_cls_id(tok);
        for (size_t p = 0; p < pieces.n && len < seq_max - 1; p++) ids[len++] = pieces.v[p].id;
        ids[len++] = zb_tokenizer_sep_id(tok);
        if ((rc = zb_bert_forward(bert, ids, &len, 1, hidden)) != 0) {
            free(hidden);
            rc = zb_diag_set(d, rc, "calibration: the encoder failed on text %zu", i);
            goto fail;
        }
        c->texts++;
        c->tokens += (size_t)len;
    }
    free(hidden);
    if (c->texts == 0) {
        rc = zb_diag_set(d, ZB_EINVAL, "calibration: no usable text");
        goto fail;
    }
    *out = c;
    c = NULL;
    goto done;
oom:
    rc = zb_diag_set(d, ZB_ENOMEM, "calibration: out of memory");
fail:
    zb_calibrate_destroy(&c);
done:
    zb_tokenizer_pieces_free(&pieces);
    free(ids);
    zb_bert_destroy(&bert);
    zb_tokenizer_destroy(&tok);
    return rc;
}

const float *const *zb_calibrate_act_max(const zb_calibrate_t *c) {
    return (const float *const *)c->max;
}

size_t zb_calibrate_texts(const zb_calibrate_t *c) {
    return c->texts;
}

size_t zb_calibrate_tokens(const zb_calibrate_t *c) {
    return c->tokens;
}

void zb_calibrate_destroy(zb_calibrate_t **pc) {
    if (pc == NULL || *pc == NULL) return;
    zb_calibrate_t *c = *pc;
    for (int i = 0; c->max != NULL && i < c->n_arrays; i++) free(c->max[i]);
    free(c->max);
    free(c);
    *pc = NULL;
}
