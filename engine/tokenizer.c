/*
 * tokenizer.c -- BERT WordPiece tokenization with offsets into the original
 * text (Hugging Face `tokenizers` BERT pipeline semantics).
 *
 * Design: one left-to-right pass over the UTF-8 bytes decodes, validates and
 * classifies each code point, normalizes it (uncased models only) into zero
 * or more normalized code points, and appends those to a small word buffer
 * that remembers, for every normalized code point, the original code point
 * it came from.  A separator, a punctuation character, a CJK ideograph, a
 * literal special token or the end of the text flushes the word through
 * WordPiece.  Nothing is allocated per text except growth of the caller's
 * output array.
 *
 * Vocabulary: an open-addressing hash table built once in zb_tokenizer_new().
 * Keys are (is_continuation, piece bytes): a vocabulary entry "##xy" is
 * stored as the continuation key "xy", so a lookup never has to build the
 * "##" string.  Hashes are polynomial (mod 2^64) so that the hash of any
 * substring of the word comes from two prefix hashes in O(1); a 64-bit mixer
 * then spreads them over the table.  A hit is always confirmed by comparing
 * bytes.
 *
 * Invariants: every piece has begin <= end, offsets are within the text and
 * pieces are in text order (non-decreasing begins, non-overlapping).
 *
 * Thread-safety: a zb_tokenizer_t is read-only after zb_tokenizer_new(); all scratch
 * state of an encode lives on the caller's stack or in its output array.
 */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "grow.h"
#include "limits.h"

/* --- character classes ------------------------------------------------- */

enum {
    C_WORD = 0, /* part of a word */
    C_SPACE,    /* separator (White_Space, \t \n \r included) */
    C_DROP,     /* removed by the cleaner; does not split */
    C_PUNCT,    /* a word of its own */
    C_CJK,      /* a word of its own (CJK ideograph) */
};

/* ASCII classes.  The cleaner removes every control but \t \n \r before
 * it maps whitespace, so \v and \f are removed (they do not split). */
#define W C_WORD
#define S C_SPACE
#define D C_DROP
#define P C_PUNCT
static const unsigned char s_ascii[128] = {
    D, D, D, D, D, D, D, D, D, S, S, D, D, S, D, D, /* 0x00 */
    D, D, D, D, D, D, D, D, D, D, D, D, D, D, D, D, /* 0x10 */
    S, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, /* 0x20 */
    W, W, W, W, W, W, W, W, W, W, P, P, P, P, P, P, /* 0x30 */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, /* 0x40 */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, P, /* 0x50 */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W, /* 0x60 */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, D, /* 0x70 */
};
#undef W
#undef S
#undef D
#undef P

/* The CJK ideograph blocks BERT isolates (its own list, not a Unicode
 * property). */
static bool s_is_cjk(int32_t u) {
    return (u >= 0x4E00 && u <= 0x9FFF) || (u >= 0x3400 && u <= 0x4DBF) ||
           (u >= 0x20000 && u <= 0x2A6DF) || (u >= 0x2A700 && u <= 0x2B73F) ||
           (u >= 0x2B740 && u <= 0x2B81F) || (u >= 0x2B920 && u <= 0x2CEAF) ||
           (u >= 0xF900 && u <= 0xFAFF) || (u >= 0x2F800 && u <= 0x2FA1F);
}

/*
 * Unicode version skew.  The reference (Hugging Face `tokenizers`) takes
 * "is punctuation" and "is control/format" from the unicode_categories
 * crate, whose tables are Unicode 8.0, while utf8proc here is Unicode 15.0.
 * These are exactly the differences for the categories BERT consults (P*
 * and Cf; Cc and Co did not change), computed by comparing the two tables
 * over every code point.  Characters assigned after 8.0 were unassigned
 * (Cn) for the reference, so they are ordinary word characters.
 */
typedef struct range {
    int32_t lo, hi;
} range_t;

/* P* in Unicode 15.0 but unassigned in 8.0. */
static const range_t s_punct_after_8[] = {
    {0x061D, 0x061D},   {0x09FD, 0x09FD},   {0x0A76, 0x0A76},   {0x0C77, 0x0C77},
    {0x0C84, 0x0C84},   {0x1B7D, 0x1B7E},   {0x2E43, 0x2E4F},   {0x2E52, 0x2E5D},
    {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59}, {0x10F86, 0x10F89}, {0x1144B, 0x1144F},
    {0x1145A, 0x1145B}, {0x1145D, 0x1145D}, {0x11660, 0x1166C}, {0x116B9, 0x116B9},
    {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46},
    {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11B00, 0x11B09}, {0x11C41, 0x11C45},
    {0x11C70, 0x11C71}, {0x11EF7, 0x11EF8}, {0x11F43, 0x11F4F}, {0x11FFF, 0x11FFF},
    {0x12FF1, 0x12FF2}, {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F},
};

/* Cf in Unicode 15.0 but unassigned in 8.0. */
static const range_t s_format_after_8[] = {
    {0x0890, 0x0891},
    {0x08E2, 0x08E2},
    {0x110CD, 0x110CD},
    {0x13430, 0x1343F},
};

static bool s_in(int32_t u, const range_t *r, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (u >= r[i].lo && u <= r[i].hi) return true;
    return false;
}

/* Class of a code point as it appears in the raw text (cleaning rules). */
static int s_class_raw(int32_t u) {
    if (u < 0x80) return s_ascii[u];
    if (u == 0xFFFD) return C_DROP;
    /* Po in Unicode 8.0, since recategorized (So, Mn). */
    if (u == 0x166D || u == 0x111C9) return C_PUNCT;
    if (s_is_cjk(u)) return C_CJK;
    switch (utf8proc_category(u)) {
    case UTF8PROC_CATEGORY_CF:
        if (s_in(u, s_format_after_8, sizeof s_format_after_8 / sizeof *s_format_after_8))
            return C_WORD;
        return C_DROP;
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
        return C_DROP;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return C_SPACE;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        if (s_in(u, s_punct_after_8, sizeof s_punct_after_8 / sizeof *s_punct_after_8))
            return C_WORD;
        return C_PUNCT;
    default:
        return C_WORD;
    }
}

/* Separator test of the Spark-style split: the same separators as the BERT
 * pre-tokenizer (White_Space less the controls its cleaner removes, such as
 * \v, \f and U+0085), so that every token boundary is also a wordpiece
 * boundary and every token starts at a wordpiece. */
static bool s_is_white_space(int32_t u) {
    return s_class_raw(u) == C_SPACE;
}

/* Class of a code point produced by normalization (pre-tokenizer rules
 * only: the cleaner has already run on its source character). */
static int s_class_norm(int32_t u) {
    int c = s_class_raw(u);
    return c == C_DROP || c == C_CJK ? C_WORD : c;
}

/*
 * Strict UTF-8 decoder: rejects stray continuation bytes, overlong forms,
 * surrogates, code points above U+10FFFF and sequences cut by the end.
 * Returns the sequence length (1-4) and *u, or 0 when invalid.
 */
static int s_decode(const unsigned char *p, size_t avail, int32_t *u) {
    unsigned c = p[0];
    if (c < 0x80) {
        *u = (int32_t)c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4) return 0; /* continuation, overlong C0/C1, > F4 */
    int n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (avail < (size_t)n) return 0;
    unsigned c1 = p[1];
    /* The second byte's valid range depends on the lead: this is where
     * overlongs, surrogates and > U+10FFFF are excluded. */
    unsigned lo = 0x80, hi = 0xBF;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (c1 < lo || c1 > hi) return 0;
    if (n == 2) {
        *u = (int32_t)(((c & 0x1Fu) << 6) | (c1 & 0x3Fu));
        return 2;
    }
    unsigned c2 = p[2];
    if ((c2 & 0xC0u) != 0x80u) return 0;
    if (n == 3) {
        *u = (int32_t)(((c & 0x0Fu) << 12) | ((c1 & 0x3Fu) << 6) | (c2 & 0x3Fu));
        return 3;
    }
    unsigned c3 = p[3];
    if ((c3 & 0xC0u) != 0x80u) return 0;
    *u = (int32_t)(((c & 0x07u) << 18) | ((c1 & 0x3Fu) << 12) | ((c2 & 0x3Fu) << 6) | (c3 & 0x3Fu));
    return 4;
}

/* Writes u (a valid scalar value) as UTF-8; returns its length. */
static int s_encode(int32_t u, unsigned char *d) {
    if (u < 0x80) {
        d[0] = (unsigned char)u;
        return 1;
    }
    if (u < 0x800) {
        d[0] = (unsigned char)(0xC0 | (u >> 6));
        d[1] = (unsigned char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        d[0] = (unsigned char)(0xE0 | (u >> 12));
        d[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
        d[2] = (unsigned char)(0x80 | (u & 0x3F));
        return 3;
    }
    d[0] = (unsigned char)(0xF0 | (u >> 18));
    d[1] = (unsigned char)(0x80 | ((u >> 12) & 0x3F));
    d[2] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
    d[3] = (unsigned char)(0x80 | (u & 0x3F));
    return 4;
}

/* --- hashing ----------------------------------------------------------- */

/* Polynomial hash base (odd, so multiplication is invertible mod 2^64). */
#define HASH_BASE 0x100000001B3ull
/* Salt that separates continuation keys ("##" entries) from plain ones. */
#define HASH_CONT_SALT 0x9E3779B97F4A7C15ull

/* A bijective 64-bit finalizer: polynomial hashes have weak low bits. */
static inline uint64_t s_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDull;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t s_hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) h = h * HASH_BASE + p[i];
    return h;
}

/* --- the tokenizer object ---------------------------------------------- */

/* A normalized word holds at most ZB_WORD_CHARS_MAX code points (one more
 * makes it [UNK]); a code point is at most 4 bytes. */
#define WORD_BYTES_CAP (ZB_WORD_CHARS_MAX * 4)

typedef struct slot {
    uint32_t tag; /* high half of the mixed hash, to skip most byte compares */
    int32_t id;   /* -1: empty */
} slot_t;

enum { SPECIAL_N = 5 };

struct zb_tokenizer {
    char *blob;                             /* the vocabulary bytes (token i at blob + off[i]) */
    uint32_t *off;                          /* [n] */
    uint32_t *len;                          /* [n] bytes, line ending excluded */
    size_t n;                               /* vocabulary size */
    slot_t *slots;                          /* [mask + 1] */
    size_t mask;                            /* table size - 1 (a power of two minus one) */
    size_t plain_max;                       /* longest plain entry, bytes */
    size_t cont_max;                        /* longest continuation entry without "##", bytes */
    int32_t pad_id, unk_id, cls_id, sep_id; /* -1 when absent ([UNK] never is) */
    struct {
        const char *s;
        size_t n;
        int32_t id;
    } special[SPECIAL_N]; /* literal special tokens present in the vocab */
    int n_special;
    bool lowercase, strip_accents;
    uint64_t pow[WORD_BYTES_CAP + 1]; /* HASH_BASE^k */
};

/* Finds the slot of key (cont, p[0..n)) with mixed hash m: either the
 * slot holding it or the empty slot where it would go. */
static size_t s_find(const zb_tokenizer_t *t, uint64_t m, bool cont, const unsigned char *p,
                     size_t n) {
    uint32_t tag = (uint32_t)(m >> 32);
    size_t i = (size_t)m & t->mask;
    for (;;) {
        const slot_t *s = &t->slots[i];
        if (s->id < 0) return i;
        if (s->tag == tag) {
            const char *tok = t->blob + t->off[s->id];
            size_t tl = t->len[s->id];
            if (cont) {
                if (tl == n + 2 && tok[0] == '#' && tok[1] == '#' && memcmp(tok + 2, p, n) == 0)
                    return i;
            } else if (tl == n && memcmp(tok, p, n) == 0) {
                return i;
            }
        }
        i = (i + 1) & t->mask;
    }
}

/* Id of piece p[0..n) with polynomial hash h, or -1. */
static inline int32_t s_lookup(const zb_tokenizer_t *t, uint64_t h, bool cont,
                               const unsigned char *p, size_t n) {
    uint64_t m = s_mix(cont ? h ^ HASH_CONT_SALT : h);
    return t->slots[s_find(t, m, cont, p, n)].id;
}

static int32_t s_lookup_str(const zb_tokenizer_t *t, const char *s) {
    size_t n = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    return s_lookup(t, s_hash_bytes(p, n), false, p, n);
}

/* Checks that p[0..n) is valid UTF-8. */
static bool s_valid_utf8(const unsigned char *p, size_t n) {
    size_t i = 0;
    int32_t u;
    while (i < n) {
        int k = s_decode(p + i, n - i, &u);
        if (!k) return false;
        i += (size_t)k;
    }
    return true;
}

void zb_tokenizer_destroy(zb_tokenizer_t **tp) {
    if (!tp || !*tp) return;
    zb_tokenizer_t *t = *tp;
    free(t->blob);
    free(t->off);
    free(t->len);
    free(t->slots);
    free(t);
    *tp = NULL;
}

int zb_tokenizer_new(const char *vocab, size_t vocab_len, const zb_tokenizer_options_t *opt,
                     zb_tokenizer_t **out, zb_diag_t *d) {
    int rc = 0;
    zb_tokenizer_t *t = NULL;
    if (!out || (!vocab && vocab_len))
        return zb_diag_set(d, ZB_EINVAL, "zb_tokenizer_new: no vocab");
    *out = NULL;
    if (vocab_len == 0) return zb_diag_set(d, ZB_EFORMAT, "vocabulary is empty");
    if (vocab_len > ZB_MODEL_TEXT_FILE_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "vocabulary is %zu bytes, more than the %u allowed",
                           vocab_len, (unsigned)ZB_MODEL_TEXT_FILE_MAX);

    /* Count lines first so that the arrays are sized from what is really
     * there (bounded by the byte count), never from a declared number. */
    size_t lines = 0;
    for (const char *p = vocab, *e = vocab + vocab_len; p < e;) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        lines++;
        p = nl ? nl + 1 : e;
    }
    if (lines > ZB_VOCAB_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "vocabulary has %zu entries, more than the %d allowed",
                           lines, ZB_VOCAB_MAX);

    t = calloc(1, sizeof *t);
    if (!t) return zb_diag_set(d, ZB_ENOMEM, "out of memory for the tokenizer");
    t->lowercase = opt && opt->lowercase;
    t->strip_accents = opt && opt->strip_accents;
    t->blob = malloc(vocab_len);
    t->off = malloc(lines * sizeof *t->off);
    t->len = malloc(lines * sizeof *t->len);
    size_t cap = 16;
    while (cap < 2 * lines) cap *= 2; /* load factor <= 1/2 */
    t->slots = malloc(cap * sizeof *t->slots);
    if (!t->blob || !t->off || !t->len || !t->slots) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory for a %zu-entry vocabulary", lines);
        goto out;
    }
    memcpy(t->blob, vocab, vocab_len);
    t->mask = cap - 1;
    for (size_t i = 0; i < cap; i++) t->slots[i].id = -1;
    t->pow[0] = 1;
    for (size_t i = 1; i <= WORD_BYTES_CAP; i++) t->pow[i] = t->pow[i - 1] * HASH_BASE;

    size_t pos = 0;
    for (size_t i = 0; i < lines; i++) {
        const char *p = t->blob + pos;
        const char *nl = memchr(p, '\n', vocab_len - pos);
        size_t n = nl ? (size_t)(nl - p) : vocab_len - pos;
        size_t next = pos + n + (nl ? 1 : 0);
        if (n && p[n - 1] == '\r') n--;
        if (n > ZB_VOCAB_ENTRY_BYTES_MAX) {
            rc = zb_diag_set(d, ZB_ELIMIT,
                             "vocabulary line %zu is %zu bytes, more than the %d "
                             "allowed",
                             i + 1, n, ZB_VOCAB_ENTRY_BYTES_MAX);
            goto out;
        }
        if (!s_valid_utf8((const unsigned char *)p, n)) {
            rc = zb_diag_set(d, ZB_EFORMAT, "vocabulary line %zu is not valid UTF-8", i + 1);
            goto out;
        }
        t->off[i] = (uint32_t)pos;
        t->len[i] = (uint32_t)n;
        t->n = i + 1;
        bool cont = n >= 2 && p[0] == '#' && p[1] == '#';
        const unsigned char *k = (const unsigned char *)p + (cont ? 2 : 0);
        size_t kn = cont ? n - 2 : n;
        uint64_t m = s_mix(cont ? s_hash_bytes(k, kn) ^ HASH_CONT_SALT : s_hash_bytes(k, kn));
        size_t at = s_find(t, m, cont, k, kn);
        /* A duplicate takes the later id: Hugging Face fills a map line by
         * line, so the last occurrence wins. */
        t->slots[at].tag = (uint32_t)(m >> 32);
        t->slots[at].id = (int32_t)i;
        if (cont && kn > t->cont_max) t->cont_max = kn;
        if (!cont && kn > t->plain_max) t->plain_max = kn;
        pos = next;
    }

    t->unk_id = s_lookup_str(t, "[UNK]");
    if (t->unk_id < 0) {
        rc = zb_diag_set(d, ZB_EFORMAT, "vocabulary has no [UNK] entry (%zu entries)", t->n);
        goto out;
    }
    t->pad_id = s_lookup_str(t, "[PAD]");
    t->cls_id = s_lookup_str(t, "[CLS]");
    t->sep_id = s_lookup_str(t, "[SEP]");
    static const char *const names[SPECIAL_N] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    for (int i = 0; i < SPECIAL_N; i++) {
        int32_t id = s_lookup_str(t, names[i]);
        if (id < 0) continue;
        t->special[t->n_special].s = names[i];
        t->special[t->n_special].n = strlen(names[i]);
        t->special[t->n_special].id = id;
        t->n_special++;
    }
    *out = t;
    t = NULL;
    zb_diag_set(d, 0, "%s", "");
out:
    zb_tokenizer_destroy(&t);
    return rc;
}

int32_t zb_tokenizer_cls_id(const zb_tokenizer_t *t) {
    return t->cls_id;
}
int32_t zb_tokenizer_sep_id(const zb_tokenizer_t *t) {
    return t->sep_id;
}
int32_t zb_tokenizer_unk_id(const zb_tokenizer_t *t) {
    return t->unk_id;
}
int32_t zb_tokenizer_pad_id(const zb_tokenizer_t *t) {
    return t->pad_id;
}
size_t zb_tokenizer_vocab_size(const zb_tokenizer_t *t) {
    return t->n;
}

const char *zb_tokenizer_token(const zb_tokenizer_t *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n) return NULL;
    if (len) *len = t->len[id];
    return t->blob + t->off[id];
}

int32_t zb_tokenizer_piece_id(const zb_tokenizer_t *t, const char *piece, size_t n,
                              bool continuation) {
    if (t == NULL || (piece == NULL && n)) return -1;
    if (n > (continuation ? t->cont_max : t->plain_max)) return -1;
    const unsigned char *p = (const unsigned char *)piece;
    return s_lookup(t, s_hash_bytes(p, n), continuation, p, n);
}

void zb_tokenizer_pieces_free(zb_tokenizer_pieces_t *p) {
    if (!p) return;
    free(p->v);
    p->v = NULL;
    p->n = p->cap = 0;
}

void zb_tokenizer_words_free(zb_tokenizer_words_t *w) {
    if (!w) return;
    free(w->v);
    w->v = NULL;
    w->n = w->cap = 0;
}

static inline int s_push(zb_tokenizer_pieces_t *out, int32_t id, uint32_t b, uint32_t e,
                         uint32_t bb, uint32_t be) {
    if (out->n == out->cap && zb_grow((void **)&out->v, &out->cap, out->n + 1, sizeof *out->v))
        return ZB_ENOMEM;
    zb_tokenizer_piece_t *p = &out->v[out->n++];
    p->id = id;
    p->begin = b;
    p->end = e;
    p->byte_begin = bb;
    p->byte_end = be;
    return 0;
}

/* --- encoding ---------------------------------------------------------- */

/* The word being collected: normalized bytes and, per normalized code
 * point, where it starts in bytes[] and which original code point made it. */
typedef struct word {
    size_t n;                             /* normalized code points stored */
    bool too_long;                        /* more than ZB_WORD_CHARS_MAX */
    uint32_t first_cp, first_byte;        /* original start of the word */
    uint32_t last_cp_end, last_byte_end;  /* original end of its last char */
    uint16_t at[ZB_WORD_CHARS_MAX + 1];   /* byte start in bytes[]; at[n] = size */
    uint32_t src_cp[ZB_WORD_CHARS_MAX];   /* source code point index */
    uint32_t src_byte[ZB_WORD_CHARS_MAX]; /* source byte offset */
    uint8_t src_len[ZB_WORD_CHARS_MAX];   /* source byte length */
    unsigned char bytes[WORD_BYTES_CAP];
    uint64_t h[ZB_WORD_CHARS_MAX + 1]; /* prefix hashes at char starts */
} word_t;

static inline void s_word_add(word_t *w, int32_t u, uint32_t cp, uint32_t byte, uint32_t blen) {
    if (w->n == 0 && !w->too_long) {
        w->first_cp = cp;
        w->first_byte = byte;
        w->at[0] = 0;
    }
    w->last_cp_end = cp + 1;
    w->last_byte_end = byte + blen;
    if (w->too_long) return;
    if (w->n == ZB_WORD_CHARS_MAX) {
        w->too_long = true;
        return;
    }
    size_t k = w->n++;
    w->src_cp[k] = cp;
    w->src_byte[k] = byte;
    w->src_len[k] = (uint8_t)blen;
    unsigned at = w->at[k];
    if (u < 0x80) {
        w->bytes[at] = (unsigned char)u;
        w->at[k + 1] = (uint16_t)(at + 1);
    } else {
        w->at[k + 1] = (uint16_t)(at + (unsigned)s_encode(u, w->bytes + at));
    }
}

/* Runs WordPiece on the collected word, appends its pieces, resets it. */
static int s_word_flush(const zb_tokenizer_t *t, word_t *w, zb_tokenizer_pieces_t *out) {
    size_t n = w->n;
    if (n == 0 && !w->too_long) return 0;
    w->n = 0;
    if (w->too_long) {
        w->too_long = false;
        return s_push(out, t->unk_id, w->first_cp, w->last_cp_end, w->first_byte, w->last_byte_end);
    }
    /* Prefix hashes at every code point boundary. */
    uint64_t h = 0;
    w->h[0] = 0;
    for (size_t k = 0; k < n; k++) {
        for (unsigned b = w->at[k]; b < w->at[k + 1]; b++) h = h * HASH_BASE + w->bytes[b];
        w->h[k + 1] = h;
    }
    size_t mark = out->n;
    size_t s = 0;
    while (s < n) {
        bool cont = s > 0;
        size_t max = cont ? t->cont_max : t->plain_max;
        size_t e = n;
        /* Longer candidates than the longest entry cannot match. */
        while (e > s && (size_t)(w->at[e] - w->at[s]) > max) e--;
        int32_t id = -1;
        for (; e > s; e--) {
            size_t bn = (size_t)(w->at[e] - w->at[s]);
            uint64_t hs = w->h[e] - w->h[s] * t->pow[bn];
            id = s_lookup(t, hs, cont, w->bytes + w->at[s], bn);
            if (id >= 0) break;
        }
        if (id < 0) {
            /* One position without a match makes the whole word [UNK]. */
            out->n = mark;
            return s_push(out, t->unk_id, w->first_cp, w->last_cp_end, w->first_byte,
                          w->last_byte_end);
        }
        int rc = s_push(out, id, w->src_cp[s], w->src_cp[e - 1] + 1, w->src_byte[s],
                        w->src_byte[e - 1] + w->src_len[e - 1]);
        if (rc) return rc;
        s = e;
    }
    return 0;
}

/* Appends normalized code point u (from the original character at cp/byte)
 * to the pipeline: separators flush, punctuation is a word of its own. */
static inline int s_feed(const zb_tokenizer_t *t, word_t *w, zb_tokenizer_pieces_t *out, int32_t u,
                         int cls, uint32_t cp, uint32_t byte, uint32_t blen) {
    int rc;
    switch (cls) {
    case C_WORD:
        s_word_add(w, u, cp, byte, blen);
        return 0;
    case C_SPACE:
        return s_word_flush(t, w, out);
    case C_PUNCT:
    case C_CJK:
        if ((rc = s_word_flush(t, w, out))) return rc;
        s_word_add(w, u, cp, byte, blen);
        return s_word_flush(t, w, out);
    default: /* C_DROP: removed, and it does not split the word */
        return 0;
    }
}

/* Uncased normalization of one non-dropped code point: lower-case (full
 * mapping: U+0130 becomes "i" + U+0307), then canonical decomposition with
 * the nonspacing marks removed.  Writes up to cap code points to d;
 * returns the count. */
static int s_normalize(const zb_tokenizer_t *t, int32_t u, int32_t *d, int cap) {
    int32_t low[2];
    int nl = 1;
    low[0] = u;
    if (t->lowercase) {
        if (u == 0x130) {
            low[0] = 'i';
            low[1] = 0x307;
            nl = 2;
        } else {
            low[0] = utf8proc_tolower(u);
        }
    }
    if (!t->strip_accents) {
        memcpy(d, low, (size_t)nl * sizeof *d);
        return nl;
    }
    int n = 0;
    for (int i = 0; i < nl; i++) {
        int32_t buf[8];
        utf8proc_ssize_t k = utf8proc_decompose_char(low[i], buf, 8, UTF8PROC_DECOMPOSE, NULL);
        if (k < 0 || k > 8) { /* cannot happen for a valid scalar; keep it whole */
            buf[0] = low[i];
            k = 1;
        }
        for (utf8proc_ssize_t j = 0; j < k && n < cap; j++)
            if (utf8proc_category(buf[j]) != UTF8PROC_CATEGORY_MN) d[n++] = buf[j];
    }
    return n;
}

int zb_tokenizer_encode(const zb_tokenizer_t *t, const char *text, size_t len,
                        zb_tokenizer_pieces_t *out) {
    if (!t || !out || (!text && len)) return ZB_EINVAL;
    out->n = 0;
    if (len > ZB_TEXT_BYTES_MAX) return ZB_ELIMIT;
    const unsigned char *s = (const unsigned char *)text;
    bool uncased = t->lowercase || t->strip_accents;
    word_t w;
    w.n = 0;
    w.too_long = false;
    int rc = 0;
    size_t i = 0;
    uint32_t cp = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c == '[' && t->n_special) {
                size_t left = len - i;
                int k;
                for (k = 0; k < t->n_special; k++)
                    if (left >= t->special[k].n &&
                        memcmp(s + i, t->special[k].s, t->special[k].n) == 0)
                        break;
                if (k < t->n_special) {
                    /* Literal special tokens are matched on the raw text
                     * before anything else, even inside a word. */
                    uint32_t n = (uint32_t)t->special[k].n;
                    if ((rc = s_word_flush(t, &w, out))) goto out;
                    rc = s_push(out, t->special[k].id, cp, cp + n, (uint32_t)i, (uint32_t)i + n);
                    if (rc) goto out;
                    i += n;
                    cp += n;
                    continue;
                }
            }
            int cls = s_ascii[c];
            if (cls == C_WORD && uncased && t->lowercase && c >= 'A' && c <= 'Z') c += 32;
            rc = s_feed(t, &w, out, (int32_t)c, cls, cp, (uint32_t)i, 1);
            if (rc) goto out;
            i++;
            cp++;
            continue;
        }
        int32_t u;
        int k = s_decode(s + i, len - i, &u);
        if (!k) {
            rc = ZB_EUTF8;
            goto out;
        }
        int cls = s_class_raw(u);
        if (!uncased || cls == C_DROP || cls == C_SPACE) {
            rc = s_feed(t, &w, out, u, cls, cp, (uint32_t)i, (uint32_t)k);
        } else {
            int32_t nu[16];
            int nn = s_normalize(t, u, nu, 16);
            /* A CJK ideograph stays a word of its own after normalization. */
            if (cls == C_CJK && (rc = s_word_flush(t, &w, out))) goto out;
            for (int j = 0; j < nn && !rc; j++)
                rc = s_feed(t, &w, out, nu[j], s_class_norm(nu[j]), cp, (uint32_t)i, (uint32_t)k);
            if (!rc && cls == C_CJK) rc = s_word_flush(t, &w, out);
        }
        if (rc) goto out;
        i += (size_t)k;
        cp++;
    }
    rc = s_word_flush(t, &w, out);
out:
    if (rc) out->n = 0;
    return rc;
}

/* --- Spark NLP-style word split ----------------------------------------- */

static int s_word_push(zb_tokenizer_words_t *out, uint32_t b, uint32_t e, uint32_t bb,
                       uint32_t be) {
    if (out->n == out->cap && zb_grow((void **)&out->v, &out->cap, out->n + 1, sizeof *out->v))
        return ZB_ENOMEM;
    zb_tokenizer_word_t *x = &out->v[out->n++];
    x->begin = b;
    x->end = e;
    x->byte_begin = bb;
    x->byte_end = be;
    return 0;
}

/* Emits the punctuation characters of s[b..e) (code point index cp at b) as
 * one-character tokens; removed characters are skipped. */
static int s_emit_punct(const unsigned char *s, size_t b, size_t e, uint32_t cp,
                        zb_tokenizer_words_t *out) {
    while (b < e) {
        int32_t u;
        int k = s_decode(s + b, e - b, &u); /* already validated */
        if (s_class_raw(u) == C_PUNCT) {
            int rc = s_word_push(out, cp, cp + 1, (uint32_t)b, (uint32_t)(b + (size_t)k));
            if (rc) return rc;
        }
        b += (size_t)k;
        cp++;
    }
    return 0;
}

int zb_tokenizer_split_words(const char *text, size_t len, zb_tokenizer_words_t *out) {
    if (!out || (!text && len)) return ZB_EINVAL;
    out->n = 0;
    if (len > ZB_TEXT_BYTES_MAX) return ZB_ELIMIT;
    const unsigned char *s = (const unsigned char *)text;
    if (!s_valid_utf8(s, len)) return ZB_EUTF8;
    int rc = 0;
    size_t i = 0;
    uint32_t cp = 0;
    while (i < len) {
        int32_t u;
        int k = s_decode(s + i, len - i, &u);
        if (s_is_white_space(u)) {
            i += (size_t)k;
            cp++;
            continue;
        }
        /* A chunk: the run of non-separators from i.  Find its first and
         * last word characters (neither punctuation nor removed); what lies
         * outside them is peeled off one punctuation character at a time. */
        size_t cb = i, fb = 0, le = 0;
        uint32_t ccp = cp, fcp = 0, lecp = 0;
        bool any = false;
        while (i < len) {
            k = s_decode(s + i, len - i, &u);
            if (s_is_white_space(u)) break;
            int cls = s_class_raw(u);
            if (cls != C_PUNCT && cls != C_DROP) {
                if (!any) {
                    fb = i;
                    fcp = cp;
                    any = true;
                }
                le = i + (size_t)k;
                lecp = cp + 1;
            }
            i += (size_t)k;
            cp++;
        }
        if (!any) {
            if ((rc = s_emit_punct(s, cb, i, ccp, out))) goto out;
            continue;
        }
        if ((rc = s_emit_punct(s, cb, fb, ccp, out))) goto out;
        if ((rc = s_word_push(out, fcp, lecp, (uint32_t)fb, (uint32_t)le))) goto out;
        if ((rc = s_emit_punct(s, le, i, lecp, out))) goto out;
    }
out:
    if (rc) out->n = 0;
    return rc;
}
