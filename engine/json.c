/*
 * json.c -- strict helpers over cJSON for model files.
 */
#include "json.h"

#include <math.h>
#include <string.h>

#include "limits.h"

cJSON *zb_json_parse_exact(const char *json, size_t len) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root == NULL) return NULL;
    for (; end < json + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

bool zb_json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double x = v->valuedouble;
    if (!isfinite(x) || x < 0 || x > 9007199254740992.0 || floor(x) != x) return false;
    *out = (uint64_t)x;
    return true;
}

const char *zb_json_printable(const char *s, char *buf, size_t cap) {
    size_t i = 0;
    if (cap < 5) {
        if (cap) buf[0] = '\0';
        return buf;
    }
    for (; s[i] != '\0' && i + 4 < cap && i < 64; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (s[i] != '\0') {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

int zb_json_shape(const cJSON *js, size_t elem_size, const char *src, const char *name,
                  int64_t *shape, int *n_dims, uint64_t *n_elems, zb_diag_t *d) {
    if (!cJSON_IsArray(js))
        return zb_diag_set(d, ZB_EFORMAT, "%s: tensor %s: missing or non-array shape", src, name);
    int n = cJSON_GetArraySize(js);
    if (n > ZB_TENSOR_DIMS_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "%s: tensor %s: %d dimensions, more than %d", src, name, n,
                           ZB_TENSOR_DIMS_MAX);
    uint64_t elems = 1;
    int k = 0;
    for (const cJSON *v = js->child; v != NULL; v = v->next, k++) {
        uint64_t dim;
        if (!zb_json_uint(v, &dim))
            return zb_diag_set(d, ZB_EFORMAT,
                               "%s: tensor %s: shape[%d] is not a non-negative integer", src, name,
                               k);
        shape[k] = (int64_t)dim;
        if (__builtin_mul_overflow(elems, dim, &elems) || elems > SIZE_MAX / elem_size)
            return zb_diag_set(d, ZB_EFORMAT, "%s: tensor %s: shape product overflows", src, name);
    }
    *n_dims = n;
    *n_elems = elems;
    return 0;
}
