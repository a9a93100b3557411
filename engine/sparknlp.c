/*
 * sparknlp.c -- a C port of Spark NLP 2.6.4-2.7.5's pipeline rules (see
 * sparknlp.h for what is reproduced).
 *
 * Sentence detector.  Spark rewrites the text with java.util.regex
 * replaceAll, rule after rule, each rule reading the previous rule's output.
 * Each rule here is a hand-written matcher answering "does a match start at
 * position i, and where does it end" with the regex's own leftmost, ordered
 * alternation and backtracking outcome; s_apply() is replaceAll (scan left to
 * right, non-overlapping, lookarounds read the rule's input, never its
 * output).  The regex dialect is Java's default: \s is [ \t\n\x0B\f\r], \w
 * is [A-Za-z0-9_], `.` excludes \n \r U+0085 U+2028 U+2029, ^ and \z are the
 * ends of the whole text, (?i) folds ASCII only, \b counts Unicode letters
 * and digits.  Java works on UTF-16 while this works on code points: every
 * rule only asks ASCII questions or "is it whitespace", so the answers are
 * the same, and offsets are converted at the end.
 *
 * Tokenizer and feed.  Spark's BasicTokenizer walks UTF-16 units, where a
 * surrogate is an ordinary word character; here a supplementary code point
 * is a word character and lengths are counted in UTF-16 units wherever
 * Spark compares or adds them (the 200-unit word limit, piece begins).
 *
 * Java 8 (what Spark 2.4 runs on) counts U+180E as whitespace; it is kept.
 *
 * Invariants: every output span lies inside the text; sentences are
 * disjoint and increasing; tokens are in text order inside their sentence.
 */
#include "sparknlp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "grow.h"
#include "limits.h"

/* --- marker characters of the detector ------------------------------------ */

#define M_BRK    0xF050
#define M_DOT    0xF051
#define M_SEMI   0xF053
#define M_QST    0xF054
#define M_EXC    0xF055
#define M_POPEN  0xF056
#define M_PCLOSE 0xF057
#define M_ABBR   0x255E
#define M_NUM    0x255F
#define M_MULT   0x2554
#define M_QIQ    0x2564
#define M_EXI    0x2565
#define M_ELL    0x2566

/* --- scratch ---------------------------------------------------------- */

typedef struct s_buf {
    int32_t *v;
    size_t n, cap;
} s_buf_t;

/* A piece fed by one sentence. */
typedef struct s_piece {
    int32_t id;
    int32_t begin16; /* Spark's begin of the piece (UTF-16) */
    uint32_t token;  /* the token that fed it */
    bool word_start;
} s_piece_t;

struct zb_sparknlp_scratch {
    uint32_t *u16;  /* [n + 1] UTF-16 index of code point i */
    uint32_t *byte; /* [n + 1] byte offset of code point i */
    size_t pos_cap;
    s_buf_t cp;     /* the text's code points */
    s_buf_t a, b;   /* rewrite buffers */
    s_buf_t needle; /* a recovered sentence */
    int32_t *kmp;   /* failure table for the needle */
    size_t kmp_cap;
    s_buf_t word, nfd;   /* a token's content; a normalised sub-token */
    s_buf_t tmp;         /* canonical ordering of a long run of marks */
    unsigned char *utf8; /* the normalised sub-token as UTF-8 */
    uint32_t *at;        /* [m + 1] byte offset of its code points */
    uint32_t *at16;      /* [m + 1] UTF-16 offset of its code points */
    size_t utf8_cap, at_cap;
    s_piece_t *pc; /* pieces of the current sentence (<= 128 kept) */
};

static int s_buf_reserve(s_buf_t *b, size_t extra) {
    size_t need;
    if (__builtin_add_overflow(b->n, extra, &need)) return ZB_ENOMEM;
    return zb_grow((void **)&b->v, &b->cap, need, sizeof *b->v);
}

static void s_buf_free(s_buf_t *b) {
    free(b->v);
    memset(b, 0, sizeof *b);
}

void zb_sparknlp_doc_free(zb_sparknlp_doc_t *doc) {
    if (doc == NULL) return;
    free(doc->sentences);
    free(doc->tokens);
    free(doc->ids);
    free(doc->seq_off);
    free(doc->piece_token);
    free(doc->vectors);
    struct zb_sparknlp_scratch *s = doc->scratch;
    if (s) {
        free(s->u16);
        free(s->byte);
        s_buf_free(&s->cp);
        s_buf_free(&s->a);
        s_buf_free(&s->b);
        s_buf_free(&s->needle);
        free(s->kmp);
        s_buf_free(&s->word);
        s_buf_free(&s->nfd);
        s_buf_free(&s->tmp);
        free(s->utf8);
        free(s->at);
        free(s->at16);
        free(s->pc);
        free(s);
    }
    memset(doc, 0, sizeof *doc);
}

/* --- character classes (Java regex, default flags) ---------------------- */

static inline bool s_ws(int32_t c) { /* \s */
    return c == ' ' || (c >= 0x09 && c <= 0x0D);
}
static inline bool s_digit(int32_t c) {
    return c >= '0' && c <= '9';
}
static inline bool s_upper(int32_t c) {
    return c >= 'A' && c <= 'Z';
}
static inline bool s_lower(int32_t c) {
    return c >= 'a' && c <= 'z';
}
static inline bool s_alpha(int32_t c) {
    return s_upper(c) || s_lower(c);
}
static inline bool s_w(int32_t c) { /* \w */
    return s_alpha(c) || s_digit(c) || c == '_';
}
static inline bool s_any(int32_t c) { /* `.` without DOTALL; -1 (past the end) never */
    return c >= 0 && c != '\n' && c != '\r' && c != 0x85 && c != 0x2028 && c != 0x2029;
}
static inline int32_t s_fold(int32_t c) { /* (?i) without UNICODE_CASE */
    return s_upper(c) ? c + 32 : c;
}

/* s[i], or -1 past the end: lookaheads then fail on their own. */
static inline int32_t s_at(const int32_t *s, size_t n, size_t i) {
    return i < n ? s[i] : -1;
}

/* Java's \b word character: Character.isLetterOrDigit or '_'. */
static bool s_java_word(int32_t c) {
    if (c == '_') return true;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
        return true;
    default:
        return false;
    }
}

/* The left half of Java's \b before position i: a word character, or a
 * nonspacing mark whose run of marks rests on a letter or digit. */
static bool s_word_before(const int32_t *s, size_t i) {
    if (i == 0) return false;
    int32_t c = s[i - 1];
    if (s_java_word(c)) return true;
    if (utf8proc_category(c) != UTF8PROC_CATEGORY_MN) return false;
    for (size_t x = i; x-- > 0;) {
        int32_t b = s[x];
        if (s_java_word(b) && b != '_') return true;
        if (utf8proc_category(b) == UTF8PROC_CATEGORY_MN) continue;
        return false;
    }
    return false;
}

/* --- the rules ------------------------------------------------------------ */

/* A rule: true when a match starts at i, with *end its end.  On false a
 * rule may set *end (preset to i + 1) further, to the first position where
 * a match could still start: the runs a greedy quantifier scans are then
 * scanned once, not once per start (java.util.regex would backtrack
 * quadratically there; the result is the same). */
typedef bool (*s_rule_fn)(const int32_t *s, size_t n, size_t i, size_t *end);

/* Length of the run of digits at j (stops counting at 3). */
static size_t s_digit_run(const int32_t *s, size_t n, size_t j) {
    size_t k = 0;
    while (k < 3 && s_digit(s_at(s, n, j + k))) k++;
    return k;
}

/* \d{1,2}\. at j: the end after the dot, or 0. */
static size_t s_d12_dot(const int32_t *s, size_t n, size_t j) {
    size_t r = s_digit_run(s, n, j);
    if ((r == 1 || r == 2) && s_at(s, n, j + r) == '.') return j + r + 1;
    return 0;
}

/* 1a  (\()[a-z]+\)|^[a-z]+\) */
static bool r_list_paren(const int32_t *s, size_t n, size_t i, size_t *end) {
    size_t j = i;
    if (s[i] == '(')
        j++;
    else if (i != 0)
        return false;
    size_t k = j;
    while (s_lower(s_at(s, n, k))) k++;
    if (k == j || s_at(s, n, k) != ')') return false;
    *end = k + 1;
    return true;
}

/* 1b  \s\d{1,2}\.\s | ^\d{1,2}\.\s | \s\d{1,2}\.\) | ^\d{1,2}\.\) |
 *     \s\-\d{1,2}\.\s | ^\-\d{1,2}\.\s | s\-\d{1,2}\.\) | ^\-\d{1,2}(.\))
 * tried in this order at each position. */
static bool r_list_num(const int32_t *s, size_t n, size_t i, size_t *end) {
    int32_t c = s[i];
    size_t e;
    if (s_ws(c) && (e = s_d12_dot(s, n, i + 1)) && s_ws(s_at(s, n, e))) goto hit1;
    if (i == 0 && (e = s_d12_dot(s, n, 0)) && s_ws(s_at(s, n, e))) goto hit1;
    if (s_ws(c) && (e = s_d12_dot(s, n, i + 1)) && s_at(s, n, e) == ')') goto hit1;
    if (i == 0 && (e = s_d12_dot(s, n, 0)) && s_at(s, n, e) == ')') goto hit1;
    if (s_ws(c) && s_at(s, n, i + 1) == '-' && (e = s_d12_dot(s, n, i + 2)) && s_ws(s_at(s, n, e)))
        goto hit1;
    if (i == 0 && c == '-' && (e = s_d12_dot(s, n, 1)) && s_ws(s_at(s, n, e))) goto hit1;
    if (c == 's' && s_at(s, n, i + 1) == '-' && (e = s_d12_dot(s, n, i + 2)) &&
        s_at(s, n, e) == ')')
        goto hit1;
    if (i == 0 && c == '-') {
        /* \d{1,2} backtracks: two digits first, then one (the `.` may then
         * be the second digit). */
        size_t r = s_digit_run(s, n, 1);
        if (r >= 2 && s_any(s_at(s, n, 3)) && s_at(s, n, 4) == ')') {
            *end = 5;
            return true;
        }
        if (r >= 1 && s_any(s_at(s, n, 2)) && s_at(s, n, 3) == ')') {
            *end = 4;
            return true;
        }
    }
    return false;
hit1:
    *end = e + 1;
    return true;
}

/* 2a  (?<=\d)\.(?=\d) */
static bool r_num_between(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || i == 0 || !s_digit(s[i - 1]) || !s_digit(s_at(s, n, i + 1))) return false;
    *end = i + 1;
    return true;
}

/* 2b  \.(?=\d) */
static bool r_num_before(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || !s_digit(s_at(s, n, i + 1))) return false;
    *end = i + 1;
    return true;
}

/* 2c  (?<=\d)\.(?=\S) */
static bool r_num_after(const int32_t *s, size_t n, size_t i, size_t *end) {
    int32_t nx = s_at(s, n, i + 1);
    if (s[i] != '.' || i == 0 || !s_digit(s[i - 1]) || nx < 0 || s_ws(nx)) return false;
    *end = i + 1;
    return true;
}

/* (?=(\s\S)|\)) */
static bool s_ws_nonws_or_paren(const int32_t *s, size_t n, size_t j) {
    int32_t a = s_at(s, n, j), b = s_at(s, n, j + 1);
    return (s_ws(a) && b >= 0 && !s_ws(b)) || a == ')';
}

/* 2d  (?<=^\d)\.(?=(\s\S)|\)) */
static bool r_num_start1(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (i != 1 || s[1] != '.' || !s_digit(s[0]) || !s_ws_nonws_or_paren(s, n, 2)) return false;
    *end = 2;
    return true;
}

/* 2e  (?<=^\d\d)\.(?=(\s\S)|\)) */
static bool r_num_start2(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (i != 2 || s[2] != '.' || !s_digit(s[0]) || !s_digit(s[1]) || !s_ws_nonws_or_paren(s, n, 3))
        return false;
    *end = 3;
    return true;
}

/* 3a  \b[a-zA-Z](?:\.[a-zA-Z])+(?:\.(?!\s[A-Z]))* */
static bool r_multi_period(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (!s_alpha(s[i]) || s_word_before(s, i)) return false;
    size_t j = i + 1;
    while (s_at(s, n, j) == '.' && s_alpha(s_at(s, n, j + 1))) j += 2;
    if (j == i + 1) return false;
    while (s_at(s, n, j) == '.' && !(s_ws(s_at(s, n, j + 1)) && s_upper(s_at(s, n, j + 2)))) j++;
    *end = j;
    return true;
}

/* (?i)X\.m\.* for X = p, a */
static bool s_xm(const int32_t *s, size_t n, size_t i, int32_t x, size_t *end) {
    if (s_fold(s[i]) != x || s_at(s, n, i + 1) != '.' || s_fold(s_at(s, n, i + 2)) != 'm')
        return false;
    size_t j = i + 3;
    while (s_at(s, n, j) == '.') j++;
    *end = j;
    return true;
}
static bool r_pm(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_xm(s, n, i, 'p', end);
}
static bool r_am(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_xm(s, n, i, 'a', end);
}

/* 3b  \.(?='s\s)|\.(?='s\$)|\.(?='s\z) */
static bool r_possessive(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || s_at(s, n, i + 1) != '\'' || s_at(s, n, i + 2) != 's') return false;
    int32_t c = s_at(s, n, i + 3);
    if (!(c < 0 || s_ws(c) || c == '$')) return false;
    *end = i + 1;
    return true;
}

/* (?<=Co)\.(?=\sKG) */
static bool r_kommandit(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || i < 2 || s[i - 2] != 'C' || s[i - 1] != 'o' || !s_ws(s_at(s, n, i + 1)) ||
        s_at(s, n, i + 2) != 'K' || s_at(s, n, i + 3) != 'G')
        return false;
    *end = i + 1;
    return true;
}

/* (?<=^[A-Z])\.(?=\s) */
static bool r_single_start(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (i != 1 || s[1] != '.' || !s_upper(s[0]) || !s_ws(s_at(s, n, 2))) return false;
    *end = 2;
    return true;
}

/* (?<=\s[A-Z])\.(?=\s) */
static bool r_single_upper(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || i < 2 || !s_ws(s[i - 2]) || !s_upper(s[i - 1]) || !s_ws(s_at(s, n, i + 1)))
        return false;
    *end = i + 1;
    return true;
}

/* The dictionaries (PragmaticDictionaries: the short lists are the ones in
 * use).  A `.` inside an entry is a regex dot: any character. */
static const char *const s_prepositive[] = {"dr", "mr", "ms", "prof", "mt", "st", NULL};
static const char *const s_number_abbr[] = {"no", "p", "px", NULL};
static const char *const s_abbr[] = {
    "adj", "bros", "btw",  "co",  "col", "corp", "cpl",  "dec", "aug", "del", "dept", "dist", "dr",
    "e.g", "etc",  "exp",  "feb", "fy",  "hr",   "i.e",  "id",  "inc", "jan", "jr",   "jul",  "jun",
    "lt",  "ltd",  "mar",  "may", "min", "mr",   "mrs",  "ms",  "no",  "nov", "oct",  "ok",   "p",
    "px",  "plz",  "prof", "rep", "sec", "sep",  "sept", "sr",  "st",  "u.s", "ver",  "vs",   NULL};

/* Lookbehinds (?<=\s(?i)LIST) and (?<=^(?i)LIST) before position i: some
 * entry ends exactly at i, preceded by whitespace (*ws) or starting the
 * text (*start). */
static void s_behind(const int32_t *s, size_t i, const char *const *list, bool *ws, bool *start) {
    *ws = *start = false;
    for (const char *const *e = list; *e; e++) {
        size_t L = strlen(*e);
        if (L > i) continue;
        size_t b = i - L;
        bool ok = true;
        for (size_t k = 0; k < L && ok; k++) {
            int32_t c = s[b + k];
            ok = (*e)[k] == '.' ? s_any(c) : s_fold(c) == (*e)[k];
        }
        if (!ok) continue;
        if (b == 0)
            *start = true;
        else if (s_ws(s[b - 1]))
            *ws = true;
    }
}

/* (?=\s([a-z]|I\s|I'm|I'll|\d)) at j */
static bool s_ws_then_word(const int32_t *s, size_t n, size_t j) {
    if (!s_ws(s_at(s, n, j))) return false;
    int32_t a = s_at(s, n, j + 1), b = s_at(s, n, j + 2), c = s_at(s, n, j + 3);
    int32_t d = s_at(s, n, j + 4);
    return s_lower(a) || (a == 'I' && s_ws(b)) || (a == 'I' && b == '\'' && c == 'm') ||
           (a == 'I' && b == '\'' && c == 'l' && d == 'l') || s_digit(a);
}

enum { LA_WS, LA_COLON_DIGIT, LA_WS_DIGIT, LA_WS_PAREN, LA_GENERAL, LA_COMMA };

/* The lookahead after the dot at i for the start-of-text (start = true)
 * or the whitespace alternative. */
static bool s_ahead(const int32_t *s, size_t n, size_t i, int kind, bool start) {
    int32_t a = s_at(s, n, i + 1);
    switch (kind) {
    case LA_WS:
        return s_ws(a);
    case LA_COLON_DIGIT:
        return a == ':' && s_digit(s_at(s, n, i + 2));
    case LA_WS_DIGIT:
        return s_ws(a) && s_digit(s_at(s, n, i + 2));
    case LA_WS_PAREN: {
        size_t j = i + 1;
        while (s_ws(s_at(s, n, j))) j++;
        return j > i + 1 && s_at(s, n, j) == '(';
    }
    case LA_GENERAL:
        return a == '.' || a == ':' || (a == '-' && !start) || a == '?' ||
               s_ws_then_word(s, n, i + 1);
    default:
        return a == ',';
    }
}

static bool s_dict(const int32_t *s, size_t n, size_t i, size_t *end, const char *const *list,
                   int kind) {
    if (s[i] != '.') return false;
    bool ws, start;
    s_behind(s, i, list, &ws, &start);
    if ((ws && s_ahead(s, n, i, kind, false)) || (start && s_ahead(s, n, i, kind, true))) {
        *end = i + 1;
        return true;
    }
    return false;
}
static bool r_prepos(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_prepositive, LA_WS);
}
static bool r_prepos_tag(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_prepositive, LA_COLON_DIGIT);
}
static bool r_number_abbr(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_number_abbr, LA_WS_DIGIT);
}
static bool r_number_tag(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_number_abbr, LA_WS_PAREN);
}
static bool r_general(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_abbr, LA_GENERAL);
}
static bool r_general_comma(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_dict(s, n, i, end, s_abbr, LA_COMMA);
}

/* 4  (?<=\S)[!\?]+(?=\s|\z|\$) */
static bool r_punct(const int32_t *s, size_t n, size_t i, size_t *end) {
    if ((s[i] != '!' && s[i] != '?') || i == 0 || s_ws(s[i - 1])) return false;
    size_t j = i;
    while (j < n && (s[j] == '!' || s[j] == '?')) j++;
    if (!(j == n || s_ws(s[j]) || s[j] == '$')) {
        *end = j; /* a later start in the run ends at the same place */
        return false;
    }
    *end = j;
    return true;
}

/* 5  (?<=\w)\.(?=\w) */
static bool r_mult(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || i == 0 || !s_w(s[i - 1]) || !s_w(s_at(s, n, i + 1))) return false;
    *end = i + 1;
    return true;
}

/* 6  (?<=[a-zA-z]°)\.(?=\s*\d+)  ([A-z] is 0x41-0x7A) */
static bool r_geo(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '.' || i < 2 || s[i - 1] != 0xB0 || s[i - 2] < 0x41 || s[i - 2] > 0x7A)
        return false;
    size_t j = i + 1;
    while (s_ws(s_at(s, n, j))) j++;
    if (!s_digit(s_at(s, n, j))) return false;
    *end = i + 1;
    return true;
}

static bool s_three_dots(const int32_t *s, size_t n, size_t i) {
    return s[i] == '.' && s_at(s, n, i + 1) == '.' && s_at(s, n, i + 2) == '.';
}

/* 7a  \.\.\.(?=\s+[A-Z]) */
static bool r_ell3(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (!s_three_dots(s, n, i)) return false;
    size_t j = i + 3;
    while (s_ws(s_at(s, n, j))) j++;
    if (j == i + 3 || !s_upper(s_at(s, n, j))) return false;
    *end = i + 3;
    return true;
}

/* 7b  (?<=\S)\.{3}(?=\.\s[A-Z]) */
static bool r_ell4(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (i == 0 || s_ws(s[i - 1]) || !s_three_dots(s, n, i) || s_at(s, n, i + 3) != '.' ||
        !s_ws(s_at(s, n, i + 4)) || !s_upper(s_at(s, n, i + 5)))
        return false;
    *end = i + 3;
    return true;
}

/* 8a  (?<=\s|^)'[\w\s?!\.,|'\w]+'(?:\W): the body is greedy and may hold
 * quotes, so the closing quote is the last one inside the run of body
 * characters that is followed by a non-word character. */
static bool s_quote_body(int32_t c) {
    return s_w(c) || s_ws(c) || c == '?' || c == '!' || c == '.' || c == ',' || c == '|' ||
           c == '\'';
}
static bool r_single_quote(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '\'' || (i > 0 && !s_ws(s[i - 1]))) return false;
    size_t r = i + 1;
    while (r < n && s_quote_body(s[r])) r++;
    for (size_t k = r; k-- > i + 2;) {
        if (s[k] == '\'' && k + 1 < n && !s_w(s[k + 1])) {
            *end = k + 2;
            return true;
        }
    }
    *end = r; /* a later start inside the run has fewer closings to choose from */
    return false;
}

/* 8b-d  "[\w\s?!\.,]+"  \[[\w\s?!\.,]+\]  \([\w\s?!\.,]+\) */
static bool s_between(const int32_t *s, size_t n, size_t i, int32_t open, int32_t close,
                      size_t *end) {
    if (s[i] != open) return false;
    size_t j = i + 1;
    while (j < n &&
           (s_w(s[j]) || s_ws(s[j]) || s[j] == '?' || s[j] == '!' || s[j] == '.' || s[j] == ','))
        j++;
    if (j == i + 1 || s_at(s, n, j) != close) return false;
    *end = j + 1;
    return true;
}
static bool r_double_quote(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_between(s, n, i, '"', '"', end);
}
static bool r_square(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_between(s, n, i, '[', ']', end);
}
static bool r_parens(const int32_t *s, size_t n, size_t i, size_t *end) {
    return s_between(s, n, i, '(', ')', end);
}

/* 9  \?(?=(\'|\")) */
static bool r_qiq(const int32_t *s, size_t n, size_t i, size_t *end) {
    int32_t a = s_at(s, n, i + 1);
    if (s[i] != '?' || (a != '\'' && a != '"')) return false;
    *end = i + 1;
    return true;
}

/* 10  \!(?=(\'|\"))   \!(?=\,\s[a-z])   \!(?=\s[a-z]) */
static bool r_exi_quote(const int32_t *s, size_t n, size_t i, size_t *end) {
    int32_t a = s_at(s, n, i + 1);
    if (s[i] != '!' || (a != '\'' && a != '"')) return false;
    *end = i + 1;
    return true;
}
static bool r_exi_comma(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '!' || s_at(s, n, i + 1) != ',' || !s_ws(s_at(s, n, i + 2)) ||
        !s_lower(s_at(s, n, i + 3)))
        return false;
    *end = i + 1;
    return true;
}
static bool r_exi_mid(const int32_t *s, size_t n, size_t i, size_t *end) {
    if (s[i] != '!' || !s_ws(s_at(s, n, i + 1)) || !s_lower(s_at(s, n, i + 2))) return false;
    *end = i + 1;
    return true;
}

/* 11  \.  and  ; */
static bool r_dot(const int32_t *s, size_t n, size_t i, size_t *end) {
    (void)n;
    if (s[i] != '.') return false;
    *end = i + 1;
    return true;
}
static bool r_semi(const int32_t *s, size_t n, size_t i, size_t *end) {
    (void)n;
    if (s[i] != ';') return false;
    *end = i + 1;
    return true;
}

/* --- replaceAll ------------------------------------------------------------ */

enum {
    T_SYM,         /* the match becomes sym */
    T_SYM_BRK,     /* the match becomes sym + BRK */
    T_APPEND_BRK,  /* the match is kept, BRK after it */
    T_PROTECT,     /* POPEN + match + PCLOSE */
    T_BRK_PROTECT, /* BRK + POPEN + match + PCLOSE */
};

/* Applies one rule to *in, writing *out, then swaps them. */
static int s_apply(s_buf_t **in, s_buf_t **out, s_rule_fn f, int how, int32_t sym) {
    const int32_t *s = (*in)->v;
    size_t n = (*in)->n;
    s_buf_t *o = *out;
    o->n = 0;
    if (s_buf_reserve(o, n + 16)) return ZB_ENOMEM;
    for (size_t i = 0; i < n;) {
        size_t e = i + 1;
        if (!f(s, n, i, &e)) {
            if (s_buf_reserve(o, e - i)) return ZB_ENOMEM;
            while (i < e) o->v[o->n++] = s[i++];
            continue;
        }
        if (s_buf_reserve(o, e - i + 4)) return ZB_ENOMEM;
        switch (how) {
        case T_SYM:
            o->v[o->n++] = sym;
            break;
        case T_SYM_BRK:
            o->v[o->n++] = sym;
            o->v[o->n++] = M_BRK;
            break;
        case T_APPEND_BRK:
            for (size_t k = i; k < e; k++) o->v[o->n++] = s[k];
            o->v[o->n++] = M_BRK;
            break;
        default:
            if (how == T_BRK_PROTECT) o->v[o->n++] = M_BRK;
            o->v[o->n++] = M_POPEN;
            /* Spark passes the matched text as a replacement string with
             * only `$` escaped, so java.util.regex takes a backslash as an
             * escape: it vanishes and the next character is literal. */
            for (size_t k = i; k < e; k++) {
                if (s[k] == '\\') {
                    if (k + 1 < e) o->v[o->n++] = s[++k];
                    continue;
                }
                o->v[o->n++] = s[k];
            }
            o->v[o->n++] = M_PCLOSE;
            break;
        }
        i = e;
    }
    s_buf_t *t = *in;
    *in = *out;
    *out = t;
    return 0;
}

typedef struct s_step {
    s_rule_fn f;
    int how;
    int32_t sym;
} s_step_t;

/* DefaultPragmaticMethod(useAbbreviations = true, detectLists = true):
 * lists, numbers, abbreviations (special, standard, dictionary),
 * punctuation, multiple periods, geo, ellipses, between punctuation,
 * question in quotes, exclamation, basic breakers. */
static const s_step_t s_steps[] = {
    {r_list_paren, T_BRK_PROTECT, 0},
    {r_list_num, T_BRK_PROTECT, 0},
    {r_num_between, T_SYM, M_NUM},
    {r_num_before, T_SYM, M_NUM},
    {r_num_after, T_SYM, M_NUM},
    {r_num_start1, T_SYM, M_NUM},
    {r_num_start2, T_SYM, M_NUM},
    {r_multi_period, T_PROTECT, 0},
    {r_pm, T_PROTECT, 0},
    {r_am, T_PROTECT, 0},
    {r_possessive, T_SYM, M_ABBR},
    {r_kommandit, T_SYM, M_ABBR},
    {r_single_start, T_SYM, M_ABBR},
    {r_single_upper, T_SYM, M_ABBR},
    {r_prepos, T_SYM, M_ABBR},
    {r_prepos_tag, T_SYM, M_ABBR},
    {r_number_abbr, T_SYM, M_ABBR},
    {r_number_tag, T_SYM, M_ABBR},
    {r_general, T_SYM, M_ABBR},
    {r_general_comma, T_SYM, M_ABBR},
    {r_punct, T_APPEND_BRK, 0},
    {r_mult, T_SYM, M_MULT},
    {r_geo, T_SYM, M_MULT},
    {r_ell3, T_SYM_BRK, M_ELL},
    {r_ell4, T_SYM_BRK, M_ELL},
    {r_single_quote, T_PROTECT, 0},
    {r_double_quote, T_PROTECT, 0},
    {r_square, T_PROTECT, 0},
    {r_parens, T_PROTECT, 0},
    {r_qiq, T_SYM, M_QIQ},
    {r_exi_quote, T_SYM, M_EXI},
    {r_exi_comma, T_SYM, M_EXI},
    {r_exi_mid, T_SYM, M_EXI},
    {r_dot, T_SYM_BRK, M_DOT},
    {r_semi, T_SYM_BRK, M_SEMI},
};

/* --- text decoding ------------------------------------------------------- */

/* Decodes text into scratch cp with UTF-16 and byte positions. */
static int s_decode_text(struct zb_sparknlp_scratch *sc, const char *text, size_t len) {
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    sc->cp.n = 0;
    if (s_buf_reserve(&sc->cp, len + 1)) return ZB_ENOMEM;
    if (zb_grow((void **)&sc->u16, &sc->pos_cap, len + 1, sizeof *sc->u16)) return ZB_ENOMEM;
    size_t cap = sc->pos_cap;
    uint32_t *b = realloc(sc->byte, cap * sizeof *b);
    if (b == NULL) return ZB_ENOMEM;
    sc->byte = b;
    size_t i = 0, k = 0;
    uint32_t u16 = 0;
    while (i < len) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate(p + i, (utf8proc_ssize_t)(len - i), &c);
        if (m <= 0) return ZB_EUTF8;
        sc->cp.v[k] = c;
        sc->u16[k] = u16;
        sc->byte[k] = (uint32_t)i;
        k++;
        u16 += c >= 0x10000 ? 2 : 1;
        i += (size_t)m;
    }
    sc->cp.n = k;
    sc->u16[k] = u16;
    sc->byte[k] = (uint32_t)len;
    return 0;
}

static struct zb_sparknlp_scratch *s_scratch(zb_sparknlp_doc_t *doc) {
    if (doc->scratch == NULL) doc->scratch = calloc(1, sizeof *doc->scratch);
    return doc->scratch;
}

static zb_sparknlp_span_t s_span(const struct zb_sparknlp_scratch *sc, size_t b, size_t e) {
    return (zb_sparknlp_span_t){.begin16 = (int32_t)sc->u16[b],
                                .end16 = (int32_t)sc->u16[e] - 1,
                                .begin = (uint32_t)b,
                                .end = (uint32_t)e,
                                .byte_begin = sc->byte[b],
                                .byte_end = sc->byte[e]};
}

/* --- sentence extraction ---------------------------------------------------- */

/* Java String.indexOf(needle, from) over code points, by Knuth-Morris-Pratt
 * (linear even when the needle is not there).  Returns the index or -1. */
static long s_index_of(struct zb_sparknlp_scratch *sc, const int32_t *hay, size_t n, size_t from) {
    const int32_t *p = sc->needle.v;
    size_t m = sc->needle.n;
    if (m == 0) return (long)(from <= n ? from : n);
    if (zb_grow((void **)&sc->kmp, &sc->kmp_cap, m, sizeof *sc->kmp)) return -2;
    int32_t *f = sc->kmp;
    f[0] = 0;
    for (size_t i = 1, k = 0; i < m; i++) {
        while (k > 0 && p[i] != p[k]) k = (size_t)f[k - 1];
        if (p[i] == p[k]) k++;
        f[i] = (int32_t)k;
    }
    for (size_t i = from, k = 0; i < n; i++) {
        while (k > 0 && hay[i] != p[k]) k = (size_t)f[k - 1];
        if (hay[i] == p[k]) k++;
        if (k == m) return (long)(i + 1 - m);
    }
    return -1;
}

static const char *s_recover(int32_t c) {
    switch (c) {
    case M_DOT:
    case M_ABBR:
    case M_NUM:
    case M_MULT:
        return ".";
    case M_SEMI:
        return ";";
    case M_QST:
    case M_QIQ:
        return "?";
    case M_EXC:
    case M_EXI:
        return "!";
    case M_ELL:
        return "...";
    case M_POPEN:
    case M_PCLOSE:
    case M_BRK:
        return "";
    default:
        return NULL;
    }
}

static int s_push_sentence(zb_sparknlp_doc_t *doc, zb_sparknlp_span_t sp) {
    if (zb_grow((void **)&doc->sentences, &doc->caps[0], doc->n_sentences + 1,
                sizeof *doc->sentences))
        return ZB_ENOMEM;
    doc->sentences[doc->n_sentences++] = sp;
    return 0;
}

/* The detector on the decoded text in sc->cp. */
static int s_detect(zb_sparknlp_doc_t *doc, struct zb_sparknlp_scratch *sc) {
    doc->n_sentences = 0;
    size_t n = sc->cp.n;
    s_buf_t *in = &sc->a, *out = &sc->b;
    in->n = 0;
    if (s_buf_reserve(in, n + 1)) return ZB_ENOMEM;
    memcpy(in->v, sc->cp.v, n * sizeof *in->v);
    in->n = n;
    for (size_t k = 0; k < sizeof s_steps / sizeof *s_steps; k++) {
        int rc = s_apply(&in, &out, s_steps[k].f, s_steps[k].how, s_steps[k].sym);
        if (rc) return rc;
    }
    /* Split at every BRK not protected: the regex BRK(?![^POPEN]*PCLOSE),
     * i.e. the first protection marker after it is not a PCLOSE.  Walk
     * backwards to know, at each BRK, which marker comes next. */
    const int32_t *w = in->v;
    size_t wn = in->n;
    if (s_buf_reserve(out, wn + 1)) return ZB_ENOMEM;
    uint8_t *split = (uint8_t *)out->v; /* reused as a flag per position */
    bool close_next = false;
    for (size_t i = wn; i-- > 0;) {
        split[i] = w[i] == M_BRK && !close_next;
        if (w[i] == M_POPEN)
            close_next = false;
        else if (w[i] == M_PCLOSE)
            close_next = true;
    }
    size_t last = 0; /* Java's lastCharPosition, as a code point index */
    for (size_t b = 0; b <= wn;) {
        size_t e = b;
        while (e < wn && !split[e]) e++;
        /* recover the piece: markers back to text, BRKs removed */
        sc->needle.n = 0;
        for (size_t k = b; k < e; k++) {
            const char *r = s_recover(w[k]);
            size_t rl = r ? strlen(r) : 1;
            if (s_buf_reserve(&sc->needle, rl)) return ZB_ENOMEM;
            if (r == NULL)
                sc->needle.v[sc->needle.n++] = w[k];
            else
                for (size_t q = 0; q < rl; q++) sc->needle.v[sc->needle.n++] = (unsigned char)r[q];
        }
        b = e + 1;
        if (sc->needle.n == 0) continue;
        /* Java trim(): every char <= U+0020 at both ends */
        size_t lo = 0, hi = sc->needle.n;
        while (lo < hi && sc->needle.v[lo] <= 0x20) lo++;
        while (hi > lo && sc->needle.v[hi - 1] <= 0x20) hi--;
        if (lo == hi) continue; /* empty: dropped, and indexOf("") moves nothing */
        memmove(sc->needle.v, sc->needle.v + lo, (hi - lo) * sizeof *sc->needle.v);
        sc->needle.n = hi - lo;
        long at = s_index_of(sc, sc->cp.v, n, last);
        if (at == -2) return ZB_ENOMEM;
        if (at < 0) {
            snprintf(doc->error, sizeof doc->error,
                     "Spark NLP's sentence detector loses this text's offsets (a sentence "
                     "it rewrote is not in the text: marker characters or a backslash quirk)");
            return ZB_EUNSUPPORTED;
        }
        size_t sb = (size_t)at, se = sb + sc->needle.n;
        last = se;
        /* maxLength 99999 (the Python wrapper's default): longer ones dropped */
        if (sc->u16[se] - sc->u16[sb] > ZB_SPARKNLP_LENGTH_MAX) continue;
        if (s_push_sentence(doc, s_span(sc, sb, se))) return ZB_ENOMEM;
    }
    return 0;
}

static int s_begin(zb_sparknlp_doc_t *doc, const char *text, size_t len,
                   struct zb_sparknlp_scratch **out) {
    doc->n_sentences = doc->n_tokens = doc->n_vectors = 0;
    doc->error[0] = '\0';
    if (text == NULL && len) return ZB_EINVAL;
    if (len > ZB_TEXT_BYTES_MAX) return ZB_ELIMIT;
    struct zb_sparknlp_scratch *sc = s_scratch(doc);
    if (sc == NULL) return ZB_ENOMEM;
    int rc = s_decode_text(sc, text ? text : "", len);
    if (rc) return rc;
    *out = sc;
    return 0;
}

int zb_sparknlp_sentences(const char *text, size_t len, zb_sparknlp_doc_t *doc) {
    if (doc == NULL) return ZB_EINVAL;
    struct zb_sparknlp_scratch *sc;
    int rc = s_begin(doc, text, len, &sc);
    if (rc == 0) rc = s_detect(doc, sc);
    if (rc) doc->n_sentences = 0;
    return rc;
}

/* --- tokenizer ------------------------------------------------------------- */

/* Tokenizer contextChars: . , ; : ! ? * - ( ) " ' */
static bool s_context(int32_t c) {
    switch (c) {
    case '.':
    case ',':
    case ';':
    case ':':
    case '!':
    case '?':
    case '*':
    case '-':
    case '(':
    case ')':
    case '"':
    case '\'':
        return true;
    default:
        return false;
    }
}

static int s_push_token(zb_sparknlp_doc_t *doc, const struct zb_sparknlp_scratch *sc, size_t b,
                        size_t e, uint32_t sentence) {
    if (sc->u16[e] - sc->u16[b] > ZB_SPARKNLP_LENGTH_MAX) return 0; /* maxLength */
    if (zb_grow((void **)&doc->tokens, &doc->caps[1], doc->n_tokens + 1, sizeof *doc->tokens))
        return ZB_ENOMEM;
    doc->tokens[doc->n_tokens++] = (zb_sparknlp_token_t){s_span(sc, b, e), sentence};
    return 0;
}

/* Spark's Tokenizer on sentence k: candidates split at \s (and at U+2187,
 * its internal break character), then \A([C]*)([^C](?:.*[^C])*)([C]*)\z. */
static int s_tokenize(zb_sparknlp_doc_t *doc, const struct zb_sparknlp_scratch *sc, uint32_t k) {
    const int32_t *s = sc->cp.v;
    size_t i = doc->sentences[k].begin, end = doc->sentences[k].end;
    int rc;
    while (i < end) {
        if (s_ws(s[i]) || s[i] == 0x2187) {
            i++;
            continue;
        }
        size_t cb = i;
        while (i < end && !s_ws(s[i]) && s[i] != 0x2187) i++;
        size_t f = cb, l = i;
        while (f < i && s_context(s[f])) f++;
        if (f == i) { /* context characters only: the rule does not match */
            if ((rc = s_push_token(doc, sc, cb, i, k))) return rc;
            continue;
        }
        while (s_context(s[l - 1])) l--;
        if (f > cb && (rc = s_push_token(doc, sc, cb, f, k))) return rc;
        if ((rc = s_push_token(doc, sc, f, l, k))) return rc;
        if (l < i && (rc = s_push_token(doc, sc, l, i, k))) return rc;
    }
    return 0;
}

/* --- BertEmbeddings' basic tokenizer and WordPiece ---------------------------- */

/* Java Character.isWhitespace (Java 8 tables), or one of BERT's four. */
static bool s_java_ws(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x1680 || c == 0x180E ||
           (c >= 0x2000 && c <= 0x2006) || (c >= 0x2008 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x205F || c == 0x3000;
}

/* U+0000, U+FFFD or an ISO control other than \t \n \r. */
static bool s_filtered(int32_t c) {
    if (c == 0 || c == 0xFFFD) return true;
    if (c == '\t' || c == '\n' || c == '\r') return false;
    return c <= 0x1F || (c >= 0x7F && c <= 0x9F);
}

bool zb_sparknlp_is_punct(int32_t c) {
    static const int32_t lo[] = {0x05BE, 0x05C0, 0x05C3, 0x05C6, 0x05F3, 0x061E, 0x0830,
                                 0x0837, 0x085E, 0x0DF4, 0x16EB, 0x1735, 0x1C3B, 0x1C7E,
                                 0x1CC0, 0x2008, 0x2055, 0x2058, 0x2E2A, 0xA4FE, 0xAA5C};
    static const int32_t hi[] = {0x05BE, 0x05C0, 0x05C3, 0x05C6, 0x05F4, 0x061E, 0x0835,
                                 0x083E, 0x085E, 0x0DF4, 0x16ED, 0x1736, 0x1C3F, 0x1C7F,
                                 0x1CC7, 0x2008, 0x2056, 0x205A, 0x2E2C, 0xA4FF, 0xAA5F};
    for (size_t i = 0; i < sizeof lo / sizeof *lo; i++)
        if (c >= lo[i] && c <= hi[i]) return true;
    return false;
}

static bool s_bt_punct(int32_t c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126) || zb_sparknlp_is_punct(c);
}

/* CJK as Spark tests it, on UTF-16 units: the BMP blocks only. */
static bool s_bt_cjk(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0xF900 && c <= 0xFAFF);
}

static int s_units(int32_t c) {
    return c >= 0x10000 ? 2 : 1;
}

/* Canonical ordering of sc->nfd: each run of non-starters sorted by
 * combining class, stably; long runs by counting sort, so that a hostile run
 * of marks costs linear time. */
static int s_canonical_order(struct zb_sparknlp_scratch *sc) {
    int32_t *v = sc->nfd.v;
    size_t n = sc->nfd.n;
    for (size_t i = 0; i < n;) {
        if (utf8proc_get_property(v[i])->combining_class == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && utf8proc_get_property(v[j])->combining_class != 0) j++;
        size_t len = j - i;
        if (len <= 16) {
            for (size_t a = i + 1; a < j; a++)
                for (size_t b = a; b > i; b--) {
                    int ca = utf8proc_get_property(v[b - 1])->combining_class;
                    int cb = utf8proc_get_property(v[b])->combining_class;
                    if (ca <= cb) break;
                    int32_t t = v[b - 1];
                    v[b - 1] = v[b];
                    v[b] = t;
                }
        } else {
            size_t count[257] = {0};
            sc->tmp.n = 0;
            if (s_buf_reserve(&sc->tmp, len)) return ZB_ENOMEM;
            for (size_t a = i; a < j; a++)
                count[utf8proc_get_property(v[a])->combining_class + 1]++;
            for (int c = 1; c < 257; c++) count[c] += count[c - 1];
            for (size_t a = i; a < j; a++)
                sc->tmp.v[count[utf8proc_get_property(v[a])->combining_class]++] = v[a];
            memcpy(v + i, sc->tmp.v, len * sizeof *v);
        }
        i = j;
    }
    return 0;
}

/* normalize(): Java trim, NFD, U+0300-U+036F removed, filtered characters
 * removed, into sc->nfd.  (Lower-casing happened before, on the token.) */
static int s_normalize(struct zb_sparknlp_scratch *sc, const int32_t *w, size_t n) {
    while (n > 0 && w[0] <= 0x20) {
        w++;
        n--;
    }
    while (n > 0 && w[n - 1] <= 0x20) n--;
    sc->nfd.n = 0;
    for (size_t i = 0; i < n; i++) {
        utf8proc_int32_t d[32];
        int lb = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(w[i], d, 32, UTF8PROC_DECOMPOSE, &lb);
        if (k < 0 || k > 32) { /* cannot happen for a valid scalar; keep it */
            d[0] = w[i];
            k = 1;
        }
        if (s_buf_reserve(&sc->nfd, (size_t)k)) return ZB_ENOMEM;
        for (utf8proc_ssize_t j = 0; j < k; j++) sc->nfd.v[sc->nfd.n++] = d[j];
    }
    /* canonical ordering (part of NFD), then U+0300-U+036F and filtered
     * characters out, in Java's order: a removed control is a starter and
     * keeps the marks around it apart while they are ordered */
    int rc = s_canonical_order(sc);
    if (rc) return rc;
    int32_t *v = sc->nfd.v;
    size_t m = 0;
    for (size_t i = 0; i < sc->nfd.n; i++)
        if (!(v[i] >= 0x300 && v[i] <= 0x36F) && !s_filtered(v[i])) v[m++] = v[i];
    sc->nfd.n = m;
    return 0;
}

/* WordPiece on sc->nfd (the head sub-token, which begins at begin16):
 * appends pieces to sc->pc[*np..] up to ZB_SPARKNLP_PIECES_MAX. */
static int s_wordpiece(struct zb_sparknlp_scratch *sc, const zb_tokenizer_t *t, int32_t begin16,
                       uint32_t token, size_t *np) {
    const int32_t *w = sc->nfd.v;
    size_t m = sc->nfd.n;
    size_t units = 0;
    for (size_t i = 0; i < m; i++) units += (size_t)s_units(w[i]);
    s_piece_t *pc = sc->pc;
    if (units > ZB_SPARKNLP_WORD_UNITS_MAX) {
        if (*np < ZB_SPARKNLP_PIECES_MAX)
            pc[(*np)++] = (s_piece_t){zb_tokenizer_unk_id(t), begin16, token, true};
        return 0;
    }
    size_t need = 4 * m + 1;
    if (zb_grow((void **)&sc->utf8, &sc->utf8_cap, need, 1)) return ZB_ENOMEM;
    size_t acap = sc->at_cap;
    if (zb_grow((void **)&sc->at, &acap, m + 1, sizeof *sc->at)) return ZB_ENOMEM;
    if (zb_grow((void **)&sc->at16, &sc->at_cap, m + 1, sizeof *sc->at16)) return ZB_ENOMEM;
    if (acap != sc->at_cap) { /* keep both arrays the same size */
        uint32_t *a = realloc(sc->at, sc->at_cap * sizeof *a);
        if (a == NULL) return ZB_ENOMEM;
        sc->at = a;
    }
    size_t bytes = 0, u = 0;
    for (size_t i = 0; i < m; i++) {
        sc->at[i] = (uint32_t)bytes;
        sc->at16[i] = (uint32_t)u;
        bytes += (size_t)utf8proc_encode_char(w[i], sc->utf8 + bytes);
        u += (size_t)s_units(w[i]);
    }
    sc->at[m] = (uint32_t)bytes;
    sc->at16[m] = (uint32_t)u;
    size_t first = *np;
    for (size_t s = 0; s < m;) {
        size_t e = m;
        int32_t id = -1;
        for (; e > s; e--) {
            id = zb_tokenizer_piece_id(t, (const char *)sc->utf8 + sc->at[s], sc->at[e] - sc->at[s],
                                       s > 0);
            if (id >= 0) break;
        }
        if (id < 0) { /* one unmatched position: the whole word is [UNK] */
            *np = first;
            if (*np < ZB_SPARKNLP_PIECES_MAX)
                pc[(*np)++] = (s_piece_t){zb_tokenizer_unk_id(t), begin16, token, true};
            return 0;
        }
        if (*np < ZB_SPARKNLP_PIECES_MAX)
            pc[(*np)++] = (s_piece_t){id, begin16 + (int32_t)sc->at16[s], token, s == 0};
        s = e;
    }
    return 0;
}

/* Lower-cases the token for an uncased model (Java toLowerCase, simple
 * mappings plus U+0130's two-character one). */
static int s_lower_into(s_buf_t *w, const int32_t *s, size_t n) {
    w->n = 0;
    if (s_buf_reserve(w, 2 * n)) return ZB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0x130) {
            w->v[w->n++] = 'i';
            w->v[w->n++] = 0x307;
        } else {
            w->v[w->n++] = utf8proc_tolower(s[i]);
        }
    }
    return 0;
}

/* The feed of one token: its first basic sub-token, WordPiece'd. */
static int s_feed_token(const zb_tokenizer_t *t, bool case_sensitive, zb_sparknlp_doc_t *doc,
                        struct zb_sparknlp_scratch *sc, uint32_t ti, size_t *np) {
    const zb_sparknlp_token_t *tk = &doc->tokens[ti];
    const int32_t *w = sc->cp.v + tk->span.begin;
    size_t m = tk->span.end - tk->span.begin;
    if (m == 1 && w[0] == ' ') return 0; /* Spark skips a " " token (never happens) */
    if (!case_sensitive) {
        if (s_lower_into(&sc->word, w, m)) return ZB_ENOMEM;
        w = sc->word.v;
        m = sc->word.n;
    }
    size_t i = 0, u = 0; /* position in code points and UTF-16 units */
    while (i < m) {
        while (i < m && s_java_ws(w[i]) && !s_bt_punct(w[i])) u += (size_t)s_units(w[i++]);
        size_t e = i, ue = u;
        while (e < m && !s_filtered(w[e]) && !s_bt_punct(w[e]) && !s_bt_cjk(w[e]) &&
               !s_java_ws(w[e]))
            ue += (size_t)s_units(w[e++]);
        if (e > i) {
            int rc = s_normalize(sc, w + i, e - i);
            if (rc) return rc;
            if (sc->nfd.n) return s_wordpiece(sc, t, tk->span.begin16 + (int32_t)u, ti, np);
        }
        if (e < m && (s_bt_punct(w[e]) || s_bt_cjk(w[e]))) {
            int rc = s_normalize(sc, w + e, 1);
            if (rc) return rc;
            if (sc->nfd.n) return s_wordpiece(sc, t, tk->span.begin16 + (int32_t)ue, ti, np);
        }
        if (e < m) ue += (size_t)s_units(w[e]);
        i = e + 1;
        u = ue;
    }
    return 0; /* nothing survives: the token feeds nothing */
}

/* The first token of tokens[lo, hi) (increasing begins) beginning at b16. */
static long s_find_token(const zb_sparknlp_doc_t *doc, size_t lo, size_t hi, int32_t b16) {
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (doc->tokens[mid].span.begin16 < b16)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < doc->n_tokens && doc->tokens[lo].span.begin16 == b16 ? (long)lo : -1;
}

static int s_push_id(zb_sparknlp_doc_t *doc, size_t *n, int32_t id, uint32_t token) {
    if (zb_grow((void **)&doc->ids, &doc->caps[2], *n + 1, sizeof *doc->ids)) return ZB_ENOMEM;
    size_t cap = doc->caps[2];
    if (zb_grow((void **)&doc->piece_token, &doc->caps[4], cap, sizeof *doc->piece_token))
        return ZB_ENOMEM;
    doc->ids[*n] = id;
    doc->piece_token[*n] = token;
    (*n)++;
    return 0;
}

int zb_sparknlp_analyze(const zb_tokenizer_t *t, bool case_sensitive, const char *text, size_t len,
                        zb_sparknlp_doc_t *doc) {
    if (doc == NULL || t == NULL) return ZB_EINVAL;
    struct zb_sparknlp_scratch *sc;
    int rc = s_begin(doc, text, len, &sc);
    if (rc) goto out;
    if (zb_tokenizer_cls_id(t) < 0 || zb_tokenizer_sep_id(t) < 0) {
        rc = ZB_EINVAL;
        goto out;
    }
    if ((rc = s_detect(doc, sc))) goto out;
    size_t ns = doc->n_sentences;
    doc->n_tokens = 0;
    if (zb_grow((void **)&doc->seq_off, &doc->caps[3], ns + 1, sizeof *doc->seq_off)) {
        rc = ZB_ENOMEM;
        goto out;
    }
    if (sc->pc == NULL && (sc->pc = malloc(ZB_SPARKNLP_PIECES_MAX * sizeof *sc->pc)) == NULL) {
        rc = ZB_ENOMEM;
        goto out;
    }
    size_t n_ids = 0;
    for (uint32_t k = 0; k < ns; k++) {
        size_t t0 = doc->n_tokens;
        if ((rc = s_tokenize(doc, sc, k))) goto out;
        size_t t1 = doc->n_tokens;
        if (t1 == t0) {
            /* TokenizedWithSentence.unpack's require() fails: Spark throws */
            snprintf(doc->error, sizeof doc->error,
                     "Spark NLP fails on this text: sentence %u has no token", k);
            rc = ZB_EUNSUPPORTED;
            goto out;
        }
        size_t np = 0;
        for (size_t ti = t0; ti < t1 && np < ZB_SPARKNLP_PIECES_MAX; ti++)
            if ((rc = s_feed_token(t, case_sensitive, doc, sc, (uint32_t)ti, &np))) goto out;
        /* [CLS] + first min(n, 126) + [SEP]; piece k takes row k for
         * k <= min(n, 127), so the 127th takes the [SEP] row. */
        size_t fed = np < ZB_SPARKNLP_PIECES_MAX - 2 ? np : ZB_SPARKNLP_PIECES_MAX - 2;
        doc->seq_off[k] = (uint32_t)n_ids;
        if ((rc = s_push_id(doc, &n_ids, zb_tokenizer_cls_id(t), UINT32_MAX))) goto out;
        for (size_t p = 0; p < fed; p++)
            if ((rc = s_push_id(doc, &n_ids, sc->pc[p].id, sc->pc[p].token))) goto out;
        if ((rc = s_push_id(doc, &n_ids, zb_tokenizer_sep_id(t), UINT32_MAX))) goto out;
        size_t rows = np < fed + 1 ? np : fed + 1;
        for (size_t p = 0; p < rows; p++) {
            long tok = s_find_token(doc, t0, t1, sc->pc[p].begin16);
            if (tok < 0) continue; /* a piece nobody begins at: dropped */
            if (zb_grow((void **)&doc->vectors, &doc->caps[5], doc->n_vectors + 1,
                        sizeof *doc->vectors)) {
                rc = ZB_ENOMEM;
                goto out;
            }
            doc->vectors[doc->n_vectors++] = (zb_sparknlp_vector_t){
                .token = (uint32_t)tok,
                .piece_id = sc->pc[p].id,
                .row = (uint32_t)(p + 1),
                .word_start = sc->pc[p].word_start,
                .row_is_sep = p == fed,
            };
        }
    }
    doc->seq_off[ns] = (uint32_t)n_ids;
out:
    if (rc) {
        doc->n_sentences = doc->n_tokens = doc->n_vectors = 0;
    }
    return rc;
}
