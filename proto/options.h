/*
 * options.h -- what a request asks for, and what its token rows carry: one
 * shape from the command line to the engine.
 *
 * zb_options_t is the options of an embedding request as every layer holds
 * them: the command-line parser fills it (client/cli/cliopt.h), the text
 * writers read it (client/cli/textio.h), the wire codec carries it in
 * `embed` and `task` (proto/msg.h: the conversion to and from the wire
 * is there, in one place), the broker stores it, the worker hands it to the
 * engine unchanged (engine/embed.h).  zb_token_meta_t is the metadata of a
 * token-level row, in the same layout from the engine through the wire to
 * the writers.  This module is not wire code: it knows no MessagePack, and
 * the engine includes it.
 *
 * Names.  Each enum value has one name, the same on the command line
 * (--level token), on the wire (PROTOCOL.md: "level": "token") and in text
 * output; zb_options_*_name() gives it and zb_options_*_parse() reads it.
 *
 * Rules.  Some combinations cannot be honoured (zb_options_broken says
 * which rule a value breaks): compat sparknlp gives token vectors only;
 * sentences split texts into sequences, which the sentence level pools
 * away.  Each layer refuses them in its own words; the engine lets
 * tokenize_only through them (no vectors: only the pieces matter).
 *
 * Invariants: a zeroed zb_options_t is every default; enum values count
 * from 0 and each enum's _COUNT is one past its last value; the public
 * client API (client/zbert.h) has the same values under its own names.
 *
 * Thread-safety: no state; every function is re-entrant.
 */
#ifndef ZB_OPTIONS_H
#define ZB_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef enum zb_level {
    ZB_LEVEL_TOKEN = 0, /* the default: one row per token (Spark NLP BertEmbeddings) */
    ZB_LEVEL_WORDPIECE, /* every row of the last layer, [CLS] and [SEP] included */
    ZB_LEVEL_SENTENCE,  /* one pooled row per text */
    ZB_LEVEL_COUNT
} zb_level_t;

typedef enum zb_pooling {
    ZB_POOLING_CLS = 0, /* the default: the [CLS] row */
    ZB_POOLING_MEAN,    /* the mean of the text's wordpiece rows */
    ZB_POOLING_COUNT
} zb_pooling_t;

typedef enum zb_token_vector {
    ZB_TOKEN_VECTOR_FIRST = 0, /* the default: the row of the token's first wordpiece */
    ZB_TOKEN_VECTOR_MEAN,      /* the mean of its wordpieces' rows */
    ZB_TOKEN_VECTOR_COUNT
} zb_token_vector_t;

typedef enum zb_compat {
    ZB_COMPAT_NONE = 0, /* the default */
    ZB_COMPAT_SPARKNLP, /* Spark NLP 2.6.4-2.7.5 BertEmbeddings, quirks included */
    ZB_COMPAT_COUNT
} zb_compat_t;

/* The options of one request.  Zero is the default of every field; fields
 * are only ever added. */
typedef struct zb_options {
    zb_level_t level;
    zb_pooling_t pooling;           /* sentence level only */
    bool normalize;                 /* L2-normalise every returned vector */
    bool windows;                   /* long texts: overlapping windows, not truncation */
    bool sentences;                 /* token, wordpiece: one sequence per sentence */
    zb_token_vector_t token_vector; /* token level */
    zb_compat_t compat;             /* token level only */
    bool token_meta;                /* token level: rows carry metadata even without
                                     * sentences or compat */
    bool tokenize_only;             /* pieces (and words) only, no forward pass: in
                                     * process only, never sent on the wire */
} zb_options_t;

/* What a token-level row is, beyond its span (zb_options_meta). */
typedef struct zb_token_meta {
    uint32_t sentence;      /* 0-based sentence of the text (0 without sentences) */
    int32_t piece_id;       /* vocabulary id of the token's first piece (compat: of
                             * the piece fed at its row); -1 for an oov row */
    uint32_t row;           /* engine: row of its sequence the vector came from
                             * (first piece); not on the wire (0 there) */
    int32_t begin16, end16; /* the token's span in UTF-16 units, end INCLUSIVE; not on
                             * the wire (-1 there: the client computes them from its
                             * text) */
    bool word_start;        /* the piece is not a "##" continuation */
    bool oov;               /* no wordpiece: the vector is zeros */
} zb_token_meta_t;

/* The rules a zb_options_t must keep, in the order zb_options_broken()
 * tries them: the ranges of the enum fields first, then the combinations. */
typedef enum zb_options_rule {
    ZB_OPTIONS_RULE_NONE = 0,        /* every rule holds */
    ZB_OPTIONS_RULE_LEVEL,           /* level is not a zb_level_t value */
    ZB_OPTIONS_RULE_POOLING,         /* pooling is not a zb_pooling_t value */
    ZB_OPTIONS_RULE_TOKEN_VECTOR,    /* token_vector is not a zb_token_vector_t value */
    ZB_OPTIONS_RULE_COMPAT,          /* compat is not a zb_compat_t value */
    ZB_OPTIONS_RULE_COMPAT_LEVEL,    /* compat other than none, not at the token level */
    ZB_OPTIONS_RULE_SENTENCES_LEVEL, /* sentences at the sentence level */
    ZB_OPTIONS_RULE_COUNT
} zb_options_rule_t;

/* The name of a value ("token", "mean", "first", "sparknlp"); "?" when out
 * of range.  Static strings. */
const char *zb_options_level_name(zb_level_t v);
const char *zb_options_pooling_name(zb_pooling_t v);
const char *zb_options_token_vector_name(zb_token_vector_t v);
const char *zb_options_compat_name(zb_compat_t v);

/*
 * Reads a value from its name, s[0..len) (not NUL-terminated; exact,
 * case-sensitive match).  Returns 0 with *out set, or ZB_EINVAL (s NULL
 * with len > 0, or no value has that name: *out unchanged, d says which
 * names there are; d may be NULL).
 */
int zb_options_level_parse(const char *s, size_t len, zb_level_t *out, zb_diag_t *d);
int zb_options_pooling_parse(const char *s, size_t len, zb_pooling_t *out, zb_diag_t *d);
int zb_options_token_vector_parse(const char *s, size_t len, zb_token_vector_t *out, zb_diag_t *d);
int zb_options_compat_parse(const char *s, size_t len, zb_compat_t *out, zb_diag_t *d);

/* The first rule o breaks (ZB_OPTIONS_RULE_NONE: none).  tokenize_only is
 * not looked at: whether it lifts a rule is the caller's call. */
zb_options_rule_t zb_options_broken(const zb_options_t *o);

/* 0 when o keeps every rule, else ZB_EINVAL with a sentence naming the rule
 * in d (may be NULL). */
int zb_options_check(const zb_options_t *o, zb_diag_t *d);

/* True when the token rows answering o carry token metadata: token level
 * with sentences, compat or token_meta.  False for NULL. */
bool zb_options_meta(const zb_options_t *o);

/* True when a and b ask for the same results: every field equal,
 * tokenize_only included. */
bool zb_options_equal(const zb_options_t *a, const zb_options_t *b);

#endif
