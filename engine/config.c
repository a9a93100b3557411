/*
 * config.c -- a BERT model's architecture and tokenizer settings from their
 * Hugging Face JSON files, and the vocabulary check (see config.h).
 *
 * Both the model loader (a Hugging Face directory) and the bundle reader
 * (the manifest's "config" object) parse through here, so a bundle and the
 * directory it was converted from are held to the same limits.
 */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "json.h"
#include "limits.h"

/* Config files are small flat objects: more keys than this is not a config. */
#define S_JSON_KEYS_MAX 1024

/* Refuses objects with repeated or too many keys: cJSON keeps duplicates and
 * lookups would silently take the first, hiding what the file says. */
static int s_json_check_keys(const cJSON *obj, const char *src, zb_diag_t *d) {
    int n = 0;
    for (const cJSON *a = obj->child; a != NULL; a = a->next, n++) {
        if (n >= S_JSON_KEYS_MAX)
            return zb_diag_set(d, ZB_ELIMIT, "%s: more than %d keys", src, S_JSON_KEYS_MAX);
        for (const cJSON *b = obj->child; b != a; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return zb_diag_set(d, ZB_EFORMAT, "%s: key \"%.64s\" appears twice", src,
                                   a->string);
    }
    return 0;
}

/* Reads an integer field into *out: default def when absent (required == 0),
 * else it must be an integer in [lo, hi]. */
static int s_cfg_int(const cJSON *root, const char *src, const char *key, int def, int required,
                     int lo, int hi, int *out, zb_diag_t *d) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (v == NULL || cJSON_IsNull(v)) {
        if (required) return zb_diag_set(d, ZB_EFORMAT, "%s: missing \"%s\"", src, key);
        *out = def;
        return 0;
    }
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(x) || floor(x) != x)
        return zb_diag_set(d, ZB_EFORMAT, "%s: \"%s\" is not an integer", src, key);
    if (x < lo || x > hi)
        return zb_diag_set(d, ZB_ELIMIT, "%s: \"%s\" is %.0f, outside [%d, %d]", src, key, x, lo,
                           hi);
    *out = (int)x;
    return 0;
}

int zb_config_parse(const char *json, size_t len, const char *src, zb_config_t *c, zb_diag_t *d) {
    int rc;
    cJSON *root = zb_json_parse_exact(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "%s: not a JSON object", src);
        goto out;
    }
    if ((rc = s_json_check_keys(root, src, d)) != 0) goto out;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt != NULL && !(cJSON_IsString(mt) && strcmp(mt->valuestring, "bert") == 0)) {
        rc = zb_diag_set(d, ZB_EUNSUPPORTED, "%s: model_type is not \"bert\"", src);
        goto out;
    }
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(root, "position_embedding_type");
    if (pe != NULL && !(cJSON_IsString(pe) && strcmp(pe->valuestring, "absolute") == 0)) {
        rc =
            zb_diag_set(d, ZB_EUNSUPPORTED, "%s: position_embedding_type is not \"absolute\"", src);
        goto out;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act != NULL && !(cJSON_IsString(act) && strcmp(act->valuestring, "gelu") == 0)) {
        rc = zb_diag_set(d, ZB_EUNSUPPORTED,
                         "%s: hidden_act must be \"gelu\" (exact erf GELU), found %s", src,
                         cJSON_IsString(act) ? "another function" : "a non-string");
        goto out;
    }
    /* Hugging Face BertConfig defaults for the optional fields */
    if ((rc = s_cfg_int(root, src, "vocab_size", 0, 1, 1, ZB_VOCAB_MAX, &c->vocab_size, d)) ||
        (rc = s_cfg_int(root, src, "hidden_size", 0, 1, 1, ZB_HIDDEN_MAX, &c->hidden, d)) ||
        (rc = s_cfg_int(root, src, "num_hidden_layers", 0, 1, 1, ZB_LAYERS_MAX, &c->layers, d)) ||
        (rc = s_cfg_int(root, src, "num_attention_heads", 0, 1, 1, ZB_HEADS_MAX, &c->heads, d)) ||
        (rc = s_cfg_int(root, src, "intermediate_size", 0, 1, 1, ZB_INTERMEDIATE_MAX,
                        &c->intermediate, d)) ||
        (rc = s_cfg_int(root, src, "max_position_embeddings", 512, 0, 1, ZB_POSITIONS_MAX,
                        &c->max_positions, d)) ||
        (rc = s_cfg_int(root, src, "type_vocab_size", 2, 0, 1, ZB_TYPE_VOCAB_MAX,
                        &c->type_vocab_size, d)))
        goto out;
    if (c->hidden % c->heads != 0) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "%s: hidden_size %d is not a multiple of "
                         "num_attention_heads %d",
                         src, c->hidden, c->heads);
        goto out;
    }
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    double e = 1e-12;
    if (eps != NULL) {
        e = cJSON_IsNumber(eps) ? eps->valuedouble : NAN;
        /* a LayerNorm epsilon is a small positive guard; outside (0, 1] is a broken file */
        if (!isfinite(e) || !(e > 0) || e > 1 || !((float)e > 0)) {
            rc = zb_diag_set(d, ZB_EFORMAT, "%s: layer_norm_eps is not a number in (0, 1]", src);
            goto out;
        }
    }
    c->layer_norm_eps = (float)e;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* tokenizer_config.json: do_lower_case defaults to false here (cased), as the
 * models zbert targets are cased; strip_accents follows do_lower_case unless
 * set (Hugging Face BertTokenizer semantics). */
int zb_config_parse_tokenizer(const char *json, size_t len, const char *src,
                              zb_config_tokenizer_t *t, zb_diag_t *d) {
    int rc = 0;
    cJSON *root = zb_json_parse_exact(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "%s: not a JSON object", src);
        goto out;
    }
    if ((rc = s_json_check_keys(root, src, d)) != 0) goto out;
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(root, "do_lower_case");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(root, "strip_accents");
    if (lc != NULL && !cJSON_IsBool(lc)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "%s: do_lower_case is not a boolean", src);
        goto out;
    }
    if (sa != NULL && !cJSON_IsBool(sa) && !cJSON_IsNull(sa)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "%s: strip_accents is not a boolean or null", src);
        goto out;
    }
    t->lowercase = lc != NULL && cJSON_IsTrue(lc);
    t->strip_accents = (sa != NULL && cJSON_IsBool(sa)) ? cJSON_IsTrue(sa) : t->lowercase;
out:
    cJSON_Delete(root);
    return rc;
}

int zb_config_vocab_check(const char *v, size_t len, int vocab_size, const char *src,
                          zb_diag_t *d) {
    size_t lines = 0, line_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && v[i] == '\0')
            return zb_diag_set(d, ZB_EFORMAT, "%s: NUL byte in line %zu", src, lines + 1);
        if (i == len || v[i] == '\n') {
            if (i == len && i == line_start) break; /* a final newline ends the file */
            if (i - line_start > ZB_VOCAB_ENTRY_BYTES_MAX)
                return zb_diag_set(d, ZB_ELIMIT, "%s: line %zu has %zu bytes, more than %d", src,
                                   lines + 1, i - line_start, ZB_VOCAB_ENTRY_BYTES_MAX);
            lines++;
            if (lines > (size_t)vocab_size)
                return zb_diag_set(d, ZB_EFORMAT, "%s: more than vocab_size = %d entries", src,
                                   vocab_size);
            line_start = i + 1;
        }
    }
    if (lines == 0) return zb_diag_set(d, ZB_EFORMAT, "%s: empty vocabulary", src);
    return 0;
}
