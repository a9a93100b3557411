/*
 * json.c -- strict helpers over cJSON for model files.
 */
#include "json.h"

#include <math.h>
#include <string.h>

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
