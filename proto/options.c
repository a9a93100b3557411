/*
 * options.c -- request options and token metadata (see options.h).  The
 * names here are those of PROTOCOL.md and of the command lines: changing
 * one changes the wire.
 */
#include "options.h"

#include <stdio.h>
#include <string.h>

static const char *const s_level_names[ZB_LEVEL_COUNT] = {
    [ZB_LEVEL_TOKEN] = "token",
    [ZB_LEVEL_WORDPIECE] = "wordpiece",
    [ZB_LEVEL_SENTENCE] = "sentence",
};

static const char *const s_pooling_names[ZB_POOLING_COUNT] = {
    [ZB_POOLING_CLS] = "cls",
    [ZB_POOLING_MEAN] = "mean",
};

static const char *const s_token_vector_names[ZB_TOKEN_VECTOR_COUNT] = {
    [ZB_TOKEN_VECTOR_FIRST] = "first",
    [ZB_TOKEN_VECTOR_MEAN] = "mean",
};

static const char *const s_compat_names[ZB_COMPAT_COUNT] = {
    [ZB_COMPAT_NONE] = "none",
    [ZB_COMPAT_SPARKNLP] = "sparknlp",
};

const char *zb_options_level_name(zb_level_t v) {
    return (unsigned)v < ZB_LEVEL_COUNT ? s_level_names[v] : "?";
}

const char *zb_options_pooling_name(zb_pooling_t v) {
    return (unsigned)v < ZB_POOLING_COUNT ? s_pooling_names[v] : "?";
}

const char *zb_options_token_vector_name(zb_token_vector_t v) {
    return (unsigned)v < ZB_TOKEN_VECTOR_COUNT ? s_token_vector_names[v] : "?";
}

const char *zb_options_compat_name(zb_compat_t v) {
    return (unsigned)v < ZB_COMPAT_COUNT ? s_compat_names[v] : "?";
}

/* Index of s[0..len) among names[0..n), or -1; the refusal lists the names
 * so that a message can be acted on. */
static int s_parse(const char *const *names, int n, const char *what, const char *s, size_t len,
                   zb_diag_t *d) {
    if (s != NULL || len == 0)
        for (int k = 0; k < n; k++)
            if (strlen(names[k]) == len && (len == 0 || memcmp(names[k], s, len) == 0)) return k;
    char list[96] = "";
    for (int k = 0; k < n; k++) {
        size_t at = strlen(list);
        snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "", names[k]);
    }
    zb_diag_set(d, ZB_EINVAL, "`%.*s` is not a %s (%s)", s ? (int)(len > 32 ? 32 : len) : 0,
                s ? s : "", what, list);
    return -1;
}

int zb_options_level_parse(const char *s, size_t len, zb_level_t *out, zb_diag_t *d) {
    int k = s_parse(s_level_names, ZB_LEVEL_COUNT, "level", s, len, d);
    if (k < 0) return ZB_EINVAL;
    *out = (zb_level_t)k;
    return 0;
}

int zb_options_pooling_parse(const char *s, size_t len, zb_pooling_t *out, zb_diag_t *d) {
    int k = s_parse(s_pooling_names, ZB_POOLING_COUNT, "pooling", s, len, d);
    if (k < 0) return ZB_EINVAL;
    *out = (zb_pooling_t)k;
    return 0;
}

int zb_options_token_vector_parse(const char *s, size_t len, zb_token_vector_t *out, zb_diag_t *d) {
    int k = s_parse(s_token_vector_names, ZB_TOKEN_VECTOR_COUNT, "token vector", s, len, d);
    if (k < 0) return ZB_EINVAL;
    *out = (zb_token_vector_t)k;
    return 0;
}

int zb_options_compat_parse(const char *s, size_t len, zb_compat_t *out, zb_diag_t *d) {
    int k = s_parse(s_compat_names, ZB_COMPAT_COUNT, "compatibility mode", s, len, d);
    if (k < 0) return ZB_EINVAL;
    *out = (zb_compat_t)k;
    return 0;
}

zb_options_rule_t zb_options_broken(const zb_options_t *o) {
    if ((unsigned)o->level >= ZB_LEVEL_COUNT) return ZB_OPTIONS_RULE_LEVEL;
    if ((unsigned)o->pooling >= ZB_POOLING_COUNT) return ZB_OPTIONS_RULE_POOLING;
    if ((unsigned)o->token_vector >= ZB_TOKEN_VECTOR_COUNT) return ZB_OPTIONS_RULE_TOKEN_VECTOR;
    if ((unsigned)o->compat >= ZB_COMPAT_COUNT) return ZB_OPTIONS_RULE_COMPAT;
    /* Spark NLP's pipeline ends in token vectors: there is nothing of it to
     * reproduce at the other levels. */
    if (o->compat != ZB_COMPAT_NONE && o->level != ZB_LEVEL_TOKEN)
        return ZB_OPTIONS_RULE_COMPAT_LEVEL;
    /* A sentence-level row pools one sequence per text; sentences would
     * make several. */
    if (o->sentences && o->level == ZB_LEVEL_SENTENCE) return ZB_OPTIONS_RULE_SENTENCES_LEVEL;
    return ZB_OPTIONS_RULE_NONE;
}

int zb_options_check(const zb_options_t *o, zb_diag_t *d) {
    switch (zb_options_broken(o)) {
    case ZB_OPTIONS_RULE_NONE:
        return 0;
    case ZB_OPTIONS_RULE_LEVEL:
        return zb_diag_set(d, ZB_EINVAL, "level: %d is not a level", (int)o->level);
    case ZB_OPTIONS_RULE_POOLING:
        return zb_diag_set(d, ZB_EINVAL, "pooling: %d is not a pooling", (int)o->pooling);
    case ZB_OPTIONS_RULE_TOKEN_VECTOR:
        return zb_diag_set(d, ZB_EINVAL, "token_vector: %d is not a token vector",
                           (int)o->token_vector);
    case ZB_OPTIONS_RULE_COMPAT:
        return zb_diag_set(d, ZB_EINVAL, "compat: %d is not a compatibility mode", (int)o->compat);
    case ZB_OPTIONS_RULE_COMPAT_LEVEL:
        return zb_diag_set(d, ZB_EINVAL, "compat: %s gives token vectors, not the %s level",
                           s_compat_names[o->compat], s_level_names[o->level]);
    case ZB_OPTIONS_RULE_SENTENCES_LEVEL:
        return zb_diag_set(d, ZB_EINVAL, "sentences: applies to the token and wordpiece levels");
    case ZB_OPTIONS_RULE_COUNT:
        break;
    }
    return zb_diag_set(d, ZB_EINVAL, "options: broken");
}

bool zb_options_meta(const zb_options_t *o) {
    return o != NULL && o->level == ZB_LEVEL_TOKEN &&
           (o->sentences || o->token_meta || o->compat != ZB_COMPAT_NONE);
}

bool zb_options_equal(const zb_options_t *a, const zb_options_t *b) {
    return a->level == b->level && a->pooling == b->pooling && a->normalize == b->normalize &&
           a->windows == b->windows && a->sentences == b->sentences &&
           a->token_meta == b->token_meta && a->token_vector == b->token_vector &&
           a->compat == b->compat && a->tokenize_only == b->tokenize_only;
}
