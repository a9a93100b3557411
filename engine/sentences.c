/*
 * sentences.c -- rule-based sentence segmentation with spans into the
 * original text.
 *
 * Design: the text is read as a sequence of pieces, a piece being a
 * maximal run of non-whitespace characters (a word with its punctuation),
 * or part of one when a boundary falls inside it ("world.Today", "。").
 * A sentence is a run of consecutive pieces, so spans are trimmed and cover
 * every non-whitespace character by construction.  The only decision is,
 * for each gap between two pieces, whether a sentence ends there; it looks
 * at the piece before the gap (its trailing terminators, closing quotes and
 * the word they follow), the piece after it (how it starts), the line
 * breaks inside the gap and a few facts about the open sentence (words so
 * far, whether it opened with a list marker, whether the previous word was
 * capitalised).  Pieces made only of terminators (". . .", a lone "!") are
 * absorbed into the piece before them, so spaced ellipses are one thing.
 *
 * Every scan moves forward except bounded look-backs (an abbreviation is at
 * most a few bytes), so the cost is linear; a paragraph is scanned once more
 * up front to learn whether it has any terminator at all (a paragraph
 * without one is a list of lines).  Nothing is allocated but the output.
 *
 * The rules were chosen against the "Golden Rules" of the pragmatic
 * segmenter (tests/test_sentences.c holds them and the pass rate); each
 * rule below says what it is for.
 *
 * Thread-safety: re-entrant; all state lives on the caller's stack.
 */
#include "sentences.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "limits.h"

/* --- characters --------------------------------------------------------- */

enum {
    K_SPACE = 1u << 0,     /* Unicode White_Space */
    K_LINE = 1u << 1,      /* a line break */
    K_PARA = 1u << 2,      /* a paragraph break: counts as a blank line */
    K_UPPER = 1u << 3,     /* Lu, Lt */
    K_LOWER = 1u << 4,     /* Ll */
    K_LETTER = 1u << 5,    /* any L* */
    K_DIGIT = 1u << 6,     /* N* */
    K_OPEN = 1u << 7,      /* opening bracket or quote (Ps, Pi, ASCII quotes, ¿ ¡) */
    K_CLOSE = 1u << 8,     /* closing bracket or quote (Pe, Pf, ASCII quotes) */
    K_DOT = 1u << 9,       /* full stop with abbreviation rules: . */
    K_ELLIPSIS = 1u << 10, /* … (three dots) */
    K_STRONG = 1u << 11,   /* ! ? and terminators of other scripts */
    K_CJK = 1u << 12,      /* 。！？｡．: end a sentence with no space after */
    K_SEMI = 1u << 13,     /* ; (a terminator only when asked for) */
    K_BULLET = 1u << 14,   /* • ‣ ⁃ ◦ ...: starts a list item */
    K_CONT = 1u << 15,     /* continues a sentence: , ; : dashes */
};
#define K_TERM (K_DOT | K_ELLIPSIS | K_STRONG | K_CJK)

/* clang-format off */
static const uint16_t s_ascii[128] = {
    ['\t'] = K_SPACE,
    ['\n'] = K_SPACE | K_LINE,
    ['\v'] = K_SPACE | K_LINE,
    ['\f'] = K_SPACE | K_PARA, /* a page break separates paragraphs */
    ['\r'] = K_SPACE | K_LINE,
    [' '] = K_SPACE,
    ['!'] = K_STRONG,
    ['"'] = K_OPEN | K_CLOSE,
    ['\''] = K_OPEN | K_CLOSE,
    ['('] = K_OPEN,
    [')'] = K_CLOSE,
    [','] = K_CONT,
    ['-'] = K_CONT,
    ['.'] = K_DOT,
    [':'] = K_CONT,
    [';'] = K_CONT | K_SEMI,
    ['?'] = K_STRONG,
    ['['] = K_OPEN,
    [']'] = K_CLOSE,
    ['{'] = K_OPEN,
    ['}'] = K_CLOSE,
#define D_ K_DIGIT
    ['0'] = D_, ['1'] = D_, ['2'] = D_, ['3'] = D_, ['4'] = D_,
    ['5'] = D_, ['6'] = D_, ['7'] = D_, ['8'] = D_, ['9'] = D_,
#undef D_
#define U_ (K_UPPER | K_LETTER)
    ['A'] = U_, ['B'] = U_, ['C'] = U_, ['D'] = U_, ['E'] = U_, ['F'] = U_, ['G'] = U_,
    ['H'] = U_, ['I'] = U_, ['J'] = U_, ['K'] = U_, ['L'] = U_, ['M'] = U_, ['N'] = U_,
    ['O'] = U_, ['P'] = U_, ['Q'] = U_, ['R'] = U_, ['S'] = U_, ['T'] = U_, ['U'] = U_,
    ['V'] = U_, ['W'] = U_, ['X'] = U_, ['Y'] = U_, ['Z'] = U_,
#undef U_
#define L_ (K_LOWER | K_LETTER)
    ['a'] = L_, ['b'] = L_, ['c'] = L_, ['d'] = L_, ['e'] = L_, ['f'] = L_, ['g'] = L_,
    ['h'] = L_, ['i'] = L_, ['j'] = L_, ['k'] = L_, ['l'] = L_, ['m'] = L_, ['n'] = L_,
    ['o'] = L_, ['p'] = L_, ['q'] = L_, ['r'] = L_, ['s'] = L_, ['t'] = L_, ['u'] = L_,
    ['v'] = L_, ['w'] = L_, ['x'] = L_, ['y'] = L_, ['z'] = L_,
#undef L_
};
/* clang-format on */

/* clang-format off */
static unsigned s_class_wide(int32_t u) {
    switch (u) {
    case 0x85: case 0x2028: return K_SPACE | K_LINE;
    case 0x2029: return K_SPACE | K_PARA;
    case 0xA1: case 0xBF: return K_OPEN; /* ¡ ¿ open Spanish sentences */
    case 0x2026: return K_ELLIPSIS;
    case 0xFE52: return K_DOT; /* small full stop */
    /* Ideographic and full-width terminators: CJK text has no spaces. */
    case 0x3002: case 0xFF61: case 0xFF01: case 0xFF1F: case 0xFF0E: return K_CJK;
    /* Terminators of other scripts, and the doubled Latin ones. */
    case 0x203C: case 0x203D: case 0x2047: case 0x2048: case 0x2049: /* ‼ ‽ ⁇ ⁈ ⁉ */
    case 0x2E2E:                                                     /* ⸮ */
    case 0xFE56: case 0xFE57:                                        /* small ? ! */
    case 0x037E:                                                     /* Greek question mark */
    case 0x0589:                                                     /* Armenian full stop */
    case 0x061F: case 0x06D4:                                        /* Arabic ? and . */
    case 0x0964: case 0x0965:                                        /* danda, double danda */
    case 0x104B:                                                     /* Myanmar */
    case 0x1362: case 0x1367:                                        /* Ethiopic . and ? */
    case 0x17D4: case 0x17D5:                                        /* Khmer */
    case 0x1803:                                                     /* Mongolian */
        return K_STRONG;
    case 0x3001: case 0xFF0C: case 0xFF1A: return K_CONT; /* 、，： */
    case 0xFF1B: return K_CONT | K_SEMI;                  /* ； */
    case 0x2022: case 0x2023: case 0x2043: case 0x2219: case 0x25A0: case 0x25A1:
    case 0x25AA: case 0x25AB: case 0x25B8: case 0x25BA: case 0x25CB: case 0x25CF:
    case 0x25E6: case 0x2610: case 0x2611: case 0x2612: case 0x2713: case 0x2714:
    case 0x27A2: case 0x27A4:
        return K_BULLET;
    default: break;
    }
    switch (utf8proc_category(u)) {
    case UTF8PROC_CATEGORY_ZS: return K_SPACE;
    case UTF8PROC_CATEGORY_ZL: return K_SPACE | K_LINE;
    case UTF8PROC_CATEGORY_ZP: return K_SPACE | K_PARA;
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LT: return K_UPPER | K_LETTER;
    case UTF8PROC_CATEGORY_LL: return K_LOWER | K_LETTER;
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return K_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return K_DIGIT;
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PI: return K_OPEN;
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PF: return K_CLOSE;
    case UTF8PROC_CATEGORY_PD: return K_CONT;
    default: return 0;
    }
}
/* clang-format on */

static inline unsigned s_class(int32_t u) {
    return u < 128 ? s_ascii[u] : s_class_wide(u);
}

bool zb_sentences_is_space(int32_t c) {
    return c >= 0 && c <= 0x10FFFF && (s_class(c) & K_SPACE) != 0;
}

/* Decodes the code point at s[i] (the text is already validated) and
 * returns the index after it. */
static inline size_t s_dec(const uint8_t *s, size_t i, int32_t *u) {
    uint8_t c = s[i];
    if (c < 0x80) {
        *u = c;
        return i + 1;
    }
    if (c < 0xE0) {
        *u = ((int32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
        return i + 2;
    }
    if (c < 0xF0) {
        *u = ((int32_t)(c & 0x0F) << 12) | ((int32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
        return i + 3;
    }
    *u = ((int32_t)(c & 0x07) << 18) | ((int32_t)(s[i + 1] & 0x3F) << 12) |
         ((int32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
    return i + 4;
}

/* Index of the code point that ends at s[i] (i > 0). */
static inline size_t s_back(const uint8_t *s, size_t i) {
    do i--;
    while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

static inline unsigned s_class_at(const uint8_t *s, size_t i) {
    int32_t u;
    s_dec(s, i, &u);
    return s_class(u);
}

/* Strict UTF-8: no overlong forms, surrogates or values past U+10FFFF. */
static bool s_valid_utf8(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t u, min;
        if (c >= 0xC2 && c <= 0xDF)
            k = 2, u = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            k = 3, u = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            k = 4, u = c & 0x07, min = 0x10000;
        else
            return false;
        if (n - i < k) return false;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return false;
            u = (u << 6) | (p[i + j] & 0x3F);
        }
        if (u < min || u > 0x10FFFF || (u >= 0xD800 && u <= 0xDFFF)) return false;
        i += k;
    }
    return true;
}

/* --- word lists ---------------------------------------------------------- */

/* How an abbreviation behaves before the next word.
 *   A_PRE: comes before a name or number (Mr. Smith, Mt. Fuji, vs. Tigers,
 *          e.g. a hat): never ends a sentence.
 *   A_NUM: comes before a number (p. 55, No. 5, Fig. 3): does not end a
 *          sentence before a digit or a lower-case word; does before a
 *          capital ("I said no. Then ...").
 *   A_GEN: other abbreviations (Co., Inc., etc., Jan., approx.): end a
 *          sentence only before a capital.
 * Matched case-insensitively on ASCII letters. */
enum { A_NONE = 0, A_PRE, A_NUM, A_GEN };

typedef struct abbrev {
    const char *s;
    unsigned char kind;
} abbrev_t;

/* clang-format off */
static const abbrev_t s_abbrevs[] = {
    /* titles and other words that precede a name */
    {"mr", A_PRE}, {"mrs", A_PRE}, {"ms", A_PRE}, {"mx", A_PRE}, {"messrs", A_PRE},
    {"mme", A_PRE}, {"mlle", A_PRE}, {"dr", A_PRE}, {"prof", A_PRE}, {"rev", A_PRE},
    {"hon", A_PRE}, {"rt", A_PRE}, {"fr", A_PRE}, {"msgr", A_PRE}, {"pres", A_PRE},
    {"gov", A_PRE}, {"sen", A_PRE}, {"rep", A_PRE}, {"atty", A_PRE}, {"supt", A_PRE},
    {"det", A_PRE}, {"insp", A_PRE}, {"gen", A_PRE}, {"adm", A_PRE}, {"capt", A_PRE},
    {"cmdr", A_PRE}, {"col", A_PRE}, {"lt", A_PRE}, {"maj", A_PRE}, {"sgt", A_PRE},
    {"cpl", A_PRE}, {"pvt", A_PRE}, {"st", A_PRE}, {"ste", A_PRE}, {"mt", A_PRE},
    {"ft", A_PRE}, {"vs", A_PRE}, {"v", A_PRE}, {"cf", A_PRE}, {"viz", A_PRE},
    {"e.g", A_PRE}, {"i.e", A_PRE}, {"eg", A_PRE}, {"ie", A_PRE}, {"approx", A_PRE},
    {"ca", A_PRE}, {"cca", A_PRE}, {"abt", A_PRE},
    /* words that precede a number */
    {"no", A_NUM}, {"nos", A_NUM}, {"nr", A_NUM}, {"num", A_NUM}, {"n\xc2\xb0", A_NUM},
    {"n\xc2\xba", A_NUM}, {"p", A_NUM}, {"pp", A_NUM}, {"pg", A_NUM}, {"para", A_NUM},
    {"fig", A_NUM}, {"figs", A_NUM}, {"vol", A_NUM}, {"vols", A_NUM}, {"ch", A_NUM},
    {"chap", A_NUM}, {"sec", A_NUM}, {"sect", A_NUM}, {"art", A_NUM}, {"eq", A_NUM},
    {"eqs", A_NUM}, {"eqn", A_NUM}, {"ref", A_NUM}, {"refs", A_NUM}, {"tab", A_NUM},
    {"op", A_NUM}, {"ex", A_NUM}, {"ed", A_NUM}, {"edn", A_NUM}, {"ser", A_NUM},
    {"pt", A_NUM}, {"pts", A_NUM}, {"cl", A_NUM}, {"reg", A_NUM}, {"tel", A_NUM},
    /* everything else */
    {"co", A_GEN}, {"corp", A_GEN}, {"inc", A_GEN}, {"ltd", A_GEN}, {"bros", A_GEN},
    {"assn", A_GEN}, {"assoc", A_GEN}, {"dept", A_GEN}, {"div", A_GEN}, {"univ", A_GEN},
    {"govt", A_GEN}, {"natl", A_GEN}, {"intl", A_GEN}, {"jr", A_GEN}, {"sr", A_GEN},
    {"esq", A_GEN}, {"phd", A_GEN}, {"etc", A_GEN}, {"al", A_GEN}, {"ibid", A_GEN},
    {"cit", A_GEN}, {"et", A_GEN}, {"est", A_GEN}, {"misc", A_GEN}, {"avg", A_GEN},
    {"min", A_GEN}, {"max", A_GEN}, {"mins", A_GEN}, {"hr", A_GEN}, {"hrs", A_GEN},
    {"secs", A_GEN}, {"yr", A_GEN}, {"yrs", A_GEN}, {"mo", A_GEN}, {"mos", A_GEN},
    {"wk", A_GEN}, {"wks", A_GEN}, {"oz", A_GEN}, {"lb", A_GEN}, {"lbs", A_GEN},
    {"qt", A_GEN}, {"gal", A_GEN}, {"mi", A_GEN}, {"km", A_GEN}, {"cm", A_GEN},
    {"mm", A_GEN}, {"kg", A_GEN}, {"mg", A_GEN}, {"ml", A_GEN}, {"sq", A_GEN},
    {"tbsp", A_GEN}, {"tsp", A_GEN}, {"temp", A_GEN}, {"deg", A_GEN}, {"dist", A_GEN},
    {"ave", A_GEN}, {"av", A_GEN}, {"blvd", A_GEN}, {"rd", A_GEN}, {"hwy", A_GEN},
    {"apt", A_GEN}, {"bldg", A_GEN}, {"dir", A_GEN}, {"mgr", A_GEN}, {"asst", A_GEN},
    {"incl", A_GEN}, {"excl", A_GEN}, {"esp", A_GEN}, {"orig", A_GEN}, {"prev", A_GEN},
    {"publ", A_GEN}, {"repr", A_GEN}, {"trans", A_GEN}, {"transl", A_GEN}, {"var", A_GEN},
    {"ver", A_GEN}, {"vers", A_GEN}, {"std", A_GEN}, {"jan", A_GEN},
    {"feb", A_GEN}, {"mar", A_GEN}, {"apr", A_GEN}, {"jun", A_GEN}, {"jul", A_GEN},
    {"aug", A_GEN}, {"sep", A_GEN}, {"sept", A_GEN}, {"oct", A_GEN}, {"nov", A_GEN},
    {"dec", A_GEN}, {"mon", A_GEN}, {"tue", A_GEN}, {"tues", A_GEN}, {"wed", A_GEN},
    {"thu", A_GEN}, {"thur", A_GEN}, {"thurs", A_GEN}, {"fri", A_GEN}, {"sat", A_GEN},
    {"sun", A_GEN},
};

/* Words that often open a sentence.  After a multi-period abbreviation or
 * an initial, a capital word from this list says the sentence ended ("in the
 * U.S. How ..."), any other capital word says it did not ("the U.S.
 * Government").  Lower case, letters only ("I'm" is looked up as "i"). */
static const char *const s_starters[] = {
    "a",        "after",     "all",      "also",    "although", "an",       "and",
    "another",  "are",       "as",       "at",      "because",  "before",   "being",
    "both",     "but",       "by",       "can",     "could",    "did",      "do",
    "does",     "during",    "each",     "either",  "every",    "for",      "from",
    "furthermore", "had",    "has",      "have",    "he",       "her",      "here",
    "his",      "how",       "however",  "i",       "if",       "in",       "instead",
    "is",       "it",        "its",      "later",   "let",      "many",     "may",
    "meanwhile", "might",    "moreover", "most",    "mr",       "mrs",      "ms",
    "dr",       "must",      "my",       "neither", "no",       "nor",      "not",
    "now",      "of",        "on",       "once",    "one",      "or",       "our",
    "please",   "she",       "should",   "since",   "so",       "some",     "still",
    "such",     "that",      "the",      "their",   "then",     "there",    "therefore",
    "these",    "they",      "this",     "those",   "though",   "thus",     "to",
    "today",    "tomorrow",  "under",    "was",     "we",       "were",     "what",
    "when",     "where",     "whereas",  "which",   "while",    "who",      "whose",
    "why",      "will",      "with",     "would",   "yesterday", "yet",     "you",
    "your",
};
/* clang-format on */

/* Short lower-case words a title may hold ("Results and Discussion"). */
static const char *const s_title_words[] = {
    "a",    "an", "and", "as", "at",  "by",  "de", "for", "from", "in",
    "into", "of", "on",  "or", "per", "the", "to", "via", "vs",   "with",
};

/* Copies text[b..e) ASCII-lower-cased into buf (NUL-terminated) when it
 * fits in cap-1 bytes; returns its length, or 0 when it does not fit. */
static size_t s_lower(const uint8_t *s, size_t b, size_t e, char *buf, size_t cap) {
    if (e <= b || e - b >= cap) return 0;
    size_t n = e - b;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[b + i];
        buf[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    buf[n] = 0;
    return n;
}

static unsigned s_abbrev_kind(const uint8_t *s, size_t b, size_t e) {
    char w[8]; /* the longest abbreviation has 6 bytes */
    if (!s_lower(s, b, e, w, sizeof w)) return A_NONE;
    for (size_t i = 0; i < sizeof s_abbrevs / sizeof *s_abbrevs; i++)
        if (s_abbrevs[i].s[0] == w[0] && strcmp(s_abbrevs[i].s, w) == 0) return s_abbrevs[i].kind;
    return A_NONE;
}

static bool s_in_list(const char *w, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (list[i][0] == w[0] && strcmp(list[i], w) == 0) return true;
    return false;
}

/* --- pieces -------------------------------------------------------------- */

/* A piece: non-whitespace characters text[b..e). */
typedef struct piece {
    size_t b, e;
    unsigned nl; /* line breaks in the whitespace before b (2 = a blank line or more) */
    bool glued;  /* a boundary was found inside the word: the next piece follows with no space */
} piece_t;

typedef struct iter {
    const uint8_t *s;
    size_t len;
    size_t pos;      /* next byte to read */
    size_t word_end; /* end of the word pos is inside (pos < word_end after a glued piece) */
    bool latin_cut;  /* the word may hold a missing-space boundary ("world.Today") */
} iter_t;

/* Whether a word may hold a missing-space boundary: not an address, path,
 * URL or dotted identifier ("Jane.Doe@example.com", "a.b.Cd"), whose dots
 * join parts of one name. */
static bool s_word_cuttable(const uint8_t *s, size_t b, size_t e) {
    unsigned inner_dots = 0;
    for (size_t i = b; i < e; i++) {
        uint8_t c = s[i];
        if (c == '@' || c == '/' || c == '\\' || c == '_' || c == '=' || c == '#' || c == '<' ||
            c == '>' || c == '|' || c == '~')
            return false;
        if (c == '.' && i > b && i + 1 < e) {
            uint8_t l = s[i - 1], r = s[i + 1];
            bool l_an = (s_ascii[l & 0x7F] & (K_LETTER | K_DIGIT)) && l < 0x80;
            bool r_an = (s_ascii[r & 0x7F] & (K_LETTER | K_DIGIT)) && r < 0x80;
            if (l_an && r_an && ++inner_dots > 1) return false;
        }
    }
    return true;
}

/* Finds a boundary inside word text[b..e) (e is the word's end): after an
 * ideographic terminator (CJK text has no spaces), or a missing space after
 * . ! ? before a capitalised word.  Returns the byte where the next piece
 * starts, or 0 when the word holds no boundary before its end. */
static size_t s_inner_cut(const uint8_t *s, size_t b, size_t e, bool latin_cut) {
    unsigned prev = 0; /* class of the previous code point */
    size_t i = b;
    while (i < e) {
        int32_t u;
        size_t j = s_dec(s, i, &u);
        unsigned k = s_class(u);
        if (k & K_CJK) {
            /* A full-width full stop between digits is a decimal point (３．２９). */
            if (u == 0xFF0E && (prev & K_DIGIT) && j < e && (s_class_at(s, j) & K_DIGIT)) {
                prev = k;
                i = j;
                continue;
            }
            size_t t = j;
            bool closers = false;
            unsigned kt = 0;
            while (t < e) {
                int32_t v;
                size_t tn = s_dec(s, t, &v);
                kt = s_class(v);
                if (kt & K_TERM) {
                    /* more terminators */
                } else if (kt & K_CLOSE) {
                    closers = true;
                } else {
                    break;
                }
                t = tn;
            }
            if (t >= e) return 0; /* at the end of the word: the gap decides */
            /* A quotation ending in a terminator and followed by more text is
             * quoted inside the sentence (「はい！」と言った); a continuation
             * mark keeps the sentence going. */
            if (!closers && !(kt & K_CONT)) return t;
            prev = 0;
            i = t;
            continue;
        }
        if (latin_cut && (u == '.' || u == '!' || u == '?') && (prev & (K_LOWER | K_DIGIT))) {
            /* The cluster: one period, or a run of ! and ?. */
            size_t t = i;
            unsigned n_dots = 0;
            while (t < e && (s[t] == '!' || s[t] == '?' || s[t] == '.')) n_dots += s[t++] == '.';
            bool ok = t < e && (n_dots == 0 || t - i == 1);
            /* The next word is capitalised: an upper-case letter, then a
             * lower-case one ("Today", "Mr"; not "COM", not "X"). */
            size_t w = t;
            if (ok) {
                int32_t v;
                size_t n1 = s_dec(s, w, &v);
                ok = (s_class(v) & K_UPPER) && n1 < e && (s_class_at(s, n1) & K_LOWER);
            }
            /* The word before is not an initial or an abbreviation. */
            if (ok && (prev & K_LOWER)) {
                size_t wb = i;
                unsigned n_letters = 0;
                while (wb > b && n_letters < 12) {
                    size_t pb = s_back(s, wb);
                    if (!(s_class_at(s, pb) & K_LETTER)) break;
                    wb = pb;
                    n_letters++;
                }
                if (n_letters < 2 || (n_letters < 12 && s_abbrev_kind(s, wb, i) != A_NONE))
                    ok = false;
            }
            if (ok) return t;
            prev = 0;
            i = t;
            continue;
        }
        prev = k;
        i = j;
    }
    return 0;
}

/* Reads the next piece into *p; false at the end of the text. */
static bool s_next_piece(iter_t *it, piece_t *p) {
    const uint8_t *s = it->s;
    size_t i = it->pos;
    unsigned nl = 0;
    if (i >= it->word_end) {
        bool cr = false;
        while (i < it->len) {
            int32_t u;
            size_t j = s_dec(s, i, &u);
            unsigned k = s_class(u);
            if (!(k & K_SPACE)) break;
            if (k & K_PARA)
                nl += 2;
            else if ((k & K_LINE) && !(u == '\n' && cr))
                nl++; /* \r\n is one break */
            cr = u == '\r';
            i = j;
        }
        if (i >= it->len) {
            it->pos = i;
            return false;
        }
        size_t e = i;
        while (e < it->len) {
            int32_t u;
            size_t j = s_dec(s, e, &u);
            if (s_class(u) & K_SPACE) break;
            e = j;
        }
        it->word_end = e;
        it->latin_cut = s_word_cuttable(s, i, e);
    }
    p->b = i;
    p->nl = nl > 2 ? 2 : nl;
    size_t cut = s_inner_cut(s, i, it->word_end, it->latin_cut);
    p->glued = cut != 0;
    p->e = cut ? cut : it->word_end;
    it->pos = p->e;
    return true;
}

/* Whether the paragraph starting at byte b (up to a blank line) holds a
 * terminator at the end of a word.  A paragraph without one is a list of
 * lines (menu items, headings, addresses): each line is its own sentence. */
static bool s_para_has_term(const uint8_t *s, size_t len, size_t b) {
    unsigned nl = 0;
    bool cr = false;
    size_t i = b;
    while (i < len) {
        int32_t u;
        size_t j = s_dec(s, i, &u);
        unsigned k = s_class(u);
        if (k & K_SPACE) {
            if (k & K_PARA)
                nl += 2;
            else if ((k & K_LINE) && !(u == '\n' && cr))
                nl++;
            if (nl >= 2) return false;
            cr = u == '\r';
            i = j;
            continue;
        }
        nl = 0;
        cr = false;
        if (k & K_CJK) return true;
        if (k & K_TERM) {
            size_t t = j;
            while (t < len && (s_class_at(s, t) & (K_TERM | K_CLOSE))) {
                int32_t v;
                t = s_dec(s, t, &v);
            }
            if (t >= len || (s_class_at(s, t) & K_SPACE)) return true;
            i = t;
            continue;
        }
        i = j;
    }
    return false;
}

/* --- what a piece ends with ------------------------------------------------ */

enum { W_REGULAR = 0, W_NUMBER, W_LETTER, W_MULTI, W_ABBREV };

/* The shape of a piece: [openers] core [terminators] [closers]. */
typedef struct tail {
    size_t core_b, core_e; /* the word without leading openers and trailing cluster */
    unsigned dots;         /* periods in the trailing cluster (… counts three) */
    bool strong;           /* ! ? or another script's terminator in the cluster */
    bool cjk;              /* 。！？ in the cluster */
    bool semi;             /* ; in the cluster (only peeled when it is a terminator) */
    bool closers;          /* closing quotes or brackets after the cluster */
    bool last_cont;        /* the piece ends with , ; : or a dash */
    bool alnum;            /* holds a letter or a digit */
    bool bullets;          /* made of bullet characters only */
    unsigned first;        /* class of the first character after the openers */
} tail_t;

static void s_tail(const uint8_t *s, const piece_t *p, bool semi_ends, tail_t *t) {
    memset(t, 0, sizeof *t);
    size_t e = p->e;
    unsigned last = s_class_at(s, s_back(s, e));
    t->last_cont = (last & K_CONT) && !((last & K_SEMI) && semi_ends);
    while (e > p->b) {
        size_t q = s_back(s, e);
        if (!(s_class_at(s, q) & K_CLOSE)) break;
        t->closers = true;
        e = q;
    }
    size_t before_cluster = e;
    unsigned peel = K_TERM | (semi_ends ? K_SEMI : 0);
    while (e > p->b) {
        size_t q = s_back(s, e);
        int32_t u;
        s_dec(s, q, &u);
        unsigned k = s_class(u);
        if (!(k & peel)) break;
        if (k & K_DOT) t->dots++;
        if (k & K_ELLIPSIS) t->dots += 3;
        if (k & K_STRONG) t->strong = true;
        if (k & K_CJK) t->cjk = true;
        if ((k & K_SEMI) && !(k & K_TERM)) t->semi = true;
        e = q;
    }
    if (e == before_cluster) t->closers = false; /* closers without a terminator */
    t->core_e = e;
    size_t b = p->b;
    while (b < e && (s_class_at(s, b) & K_OPEN)) {
        int32_t u;
        b = s_dec(s, b, &u);
    }
    t->core_b = b;
    t->first = b < e ? s_class_at(s, b) : 0;
    bool bullets = true;
    for (size_t i = p->b; i < p->e;) {
        int32_t u;
        i = s_dec(s, i, &u);
        unsigned k = s_class(u);
        if (k & (K_LETTER | K_DIGIT)) t->alnum = true;
        if (!(k & K_BULLET)) bullets = false;
        if (t->alnum && !bullets) break;
    }
    t->bullets = bullets;
}

/* What kind of word the core is. */
static unsigned s_word_kind(const uint8_t *s, const tail_t *t, unsigned *abbrev) {
    size_t b = t->core_b, e = t->core_e;
    *abbrev = A_NONE;
    if (b >= e) return W_REGULAR;
    if ((*abbrev = s_abbrev_kind(s, b, e)) != A_NONE) return W_ABBREV;
    /* A number: optional sign or currency, then digits with , and . */
    size_t i = b;
    int32_t u;
    size_t j = s_dec(s, i, &u);
    if (u == '$' || u == '+' || u == '-' || u == '#' || u == 0x20AC || u == 0xA3 || u == 0xA5)
        i = j;
    bool digit = false, number = i < e;
    while (i < e && number) {
        j = s_dec(s, i, &u);
        if (s_class(u) & K_DIGIT)
            digit = true;
        else if (u != ',' && u != '.')
            number = false;
        i = j;
    }
    if (number && digit) return W_NUMBER;
    /* One letter: an initial, a list letter or a pronoun. */
    j = s_dec(s, b, &u);
    if (j == e && (s_class(u) & K_LETTER)) return W_LETTER;
    /* Letters in groups of one or two joined by periods: U.S, e.g, Ph.D. */
    unsigned groups = 0, run = 0;
    for (i = b; i < e;) {
        j = s_dec(s, i, &u);
        if (s_class(u) & K_LETTER) {
            if (++run > 2) return W_REGULAR;
        } else if (u == '.') {
            if (run == 0) return W_REGULAR;
            groups++;
            run = 0;
        } else {
            return W_REGULAR;
        }
        i = j;
    }
    if (run > 0 && groups >= 1) return W_MULTI;
    return W_REGULAR;
}

/* --- the next word ------------------------------------------------------ */

enum { N_UPPER = 1, N_LOWER, N_CASELESS, N_DIGIT, N_CONT, N_SYMBOL };

/* How piece p starts (after opening quotes and brackets), and, when
 * starter is not NULL, whether its first word opens sentences. */
static unsigned s_start_kind(const uint8_t *s, const piece_t *p, bool *starter) {
    size_t i = p->b;
    int32_t u = 0;
    unsigned k = 0;
    if (starter) *starter = false;
    while (i < p->e) {
        size_t j = s_dec(s, i, &u);
        k = s_class(u);
        if (!(k & K_OPEN)) break;
        i = j;
    }
    if (i >= p->e) return N_SYMBOL;
    if ((k & K_LETTER) && starter) {
        size_t e = i;
        while (e < p->e && (s_class_at(s, e) & K_LETTER)) {
            int32_t v;
            e = s_dec(s, e, &v);
        }
        char w[16];
        if (s_lower(s, i, e, w, sizeof w))
            *starter = s_in_list(w, s_starters, sizeof s_starters / sizeof *s_starters);
    }
    if (k & K_LETTER) {
        if (k & K_UPPER) return N_UPPER;
        if (k & K_LOWER) return N_LOWER;
        return N_CASELESS;
    }
    if (k & K_DIGIT) return N_DIGIT;
    if (k & (K_CONT | K_CLOSE)) return N_CONT;
    return N_SYMBOL;
}

static bool s_opens(unsigned nk) {
    return nk == N_UPPER || nk == N_CASELESS || nk == N_DIGIT || nk == N_SYMBOL;
}

/* --- list markers ------------------------------------------------------- */

/* Marker styles: how the ordinal is written ("1." "1)" "1.)" "(1)") times
 * what it is (digits, lower-case letter, upper-case letter, roman numeral
 * of two or more letters: "ii", "IV"). */
enum { M_DOT = 1, M_PAREN, M_DOTPAREN, M_BOTH };
enum { M_DIGITS = 1, M_LOWER, M_UPPER, M_ROMAN };
#define M_KIND(m) ((m) % 8)

/* The value of a roman numeral of 2 to 7 letters, all lower or all upper
 * case (0 when it is not one).  Loose: "IIII" passes, which is harmless. */
static long s_roman(const uint8_t *s, size_t b, size_t e) {
    if (e - b < 2 || e - b > 7) return 0;
    bool upper = s[b] < 'a';
    long v = 0, prev = 0;
    for (size_t i = e; i-- > b;) {
        uint8_t c = s[i];
        if ((c < 'a') != upper) return 0;
        long d;
        switch (c | 0x20) {
        case 'i':
            d = 1;
            break;
        case 'v':
            d = 5;
            break;
        case 'x':
            d = 10;
            break;
        case 'l':
            d = 50;
            break;
        case 'c':
            d = 100;
            break;
        default:
            return 0;
        }
        v += d < prev ? -d : d;
        if (d > prev) prev = d;
    }
    return v > 0 ? v : 0;
}

/* Parses piece text[b..e) as a whole list marker after optional bullets;
 * returns style * 8 + kind and the ordinal, or 0. */
static int s_marker(const uint8_t *s, size_t b, size_t e, long *ord) {
    while (b < e && (s_class_at(s, b) & K_BULLET)) {
        int32_t u;
        b = s_dec(s, b, &u);
    }
    if (e - b > 10) return 0; /* "(iii)", "viii.)", "100.)" are shorter */
    size_t i = b;
    bool lp = i < e && s[i] == '(';
    if (lp) i++;
    int kind;
    if (i < e && s[i] >= '0' && s[i] <= '9') {
        long v = 0;
        size_t d = 0;
        while (i < e && s[i] >= '0' && s[i] <= '9' && d < 4) v = v * 10 + (s[i++] - '0'), d++;
        if (d > 3) return 0; /* a year, not an item number */
        kind = M_DIGITS;
        *ord = v;
    } else if (i < e && s[i] < 0x80 && (s_ascii[s[i]] & K_LETTER)) {
        size_t r = i;
        while (r < e && s[r] < 0x80 && (s_ascii[s[r]] & K_LETTER)) r++;
        if (r - i == 1) {
            kind = (s_ascii[s[i]] & K_UPPER) ? M_UPPER : M_LOWER;
            *ord = s[i++];
        } else if ((*ord = s_roman(s, i, r))) {
            kind = M_ROMAN;
            i = r;
        } else {
            return 0;
        }
    } else {
        return 0;
    }
    size_t r = e - i;
    int style;
    if (lp)
        style = r == 1 && s[i] == ')' ? M_BOTH : 0;
    else if (r == 1 && s[i] == '.')
        style = M_DOT;
    else if (r == 1 && s[i] == ')')
        style = M_PAREN;
    else if (r == 2 && s[i] == '.' && s[i + 1] == ')')
        style = M_DOTPAREN;
    else
        style = 0;
    return style ? style * 8 + kind : 0;
}

/* --- the segmenter ------------------------------------------------------ */

typedef struct seg {
    const uint8_t *s;
    size_t len;
    bool semi_ends;
    bool para_term; /* the current paragraph has a terminator */
    zb_sentences_spans_t *out;
    /* the open sentence */
    size_t sb, se;     /* bytes [sb, se) so far */
    unsigned n_pieces; /* pieces so far */
    unsigned n_words;  /* pieces with a letter or digit */
    bool only_bullets; /* every piece so far is a bullet (true when empty) */
    bool line_start;   /* opened at the start of a line */
    bool one_line;     /* has not crossed a line break */
    bool titleish;     /* every word is capitalised, a number or a short title word */
    bool prev_cap;     /* the last piece starts with a capital */
    bool prev_colon;   /* the last piece ends with ':' (a list may follow) */
    int marker;        /* list marker style that opened it (0: none) */
    long marker_ord;   /* and its ordinal */
} seg_t;

/* Grows the output so that one more span fits. */
static int s_push(zb_sentences_spans_t *o, size_t b, size_t e) {
    if (o->n == o->cap) {
        size_t nc = o->cap ? o->cap : 16, bytes;
        if (__builtin_mul_overflow(nc, (size_t)2, &nc) ||
            __builtin_mul_overflow(nc, sizeof *o->v, &bytes))
            return ZB_ENOMEM;
        void *v = realloc(o->v, bytes);
        if (!v) return ZB_ENOMEM;
        o->v = v;
        o->cap = nc;
    }
    zb_sentences_span_t *sp = &o->v[o->n++];
    sp->byte_begin = (uint32_t)b;
    sp->byte_end = (uint32_t)e;
    sp->begin = sp->end = 0;
    return 0;
}

static void s_open(seg_t *x, size_t b, bool line_start) {
    x->sb = x->se = b;
    x->n_pieces = x->n_words = 0;
    x->only_bullets = true;
    x->line_start = line_start;
    x->one_line = true;
    x->titleish = true;
    x->prev_cap = false;
    x->prev_colon = false;
    x->marker = 0;
    x->marker_ord = 0;
}

static void s_add(seg_t *x, const piece_t *p, const tail_t *t) {
    const uint8_t *s = x->s;
    if (x->n_pieces > 0 && p->nl > 0) x->one_line = false;
    bool dash = p->e - p->b == 1 && (s[p->b] == '-' || s[p->b] == '*' || s[p->b] == '+');
    if (!t->bullets && !(dash && x->n_pieces == 0)) x->only_bullets = false;
    x->n_pieces++;
    if (t->alnum) x->n_words++;
    x->prev_cap = (t->first & K_UPPER) != 0;
    x->prev_colon = s[p->e - 1] == ':';
    if (!x->titleish || !x->one_line) {
        /* no heading: nothing more to learn */
    } else if (t->first & K_LOWER) {
        char w[16];
        if (!s_lower(s, t->core_b, t->core_e, w, sizeof w) ||
            !s_in_list(w, s_title_words, sizeof s_title_words / sizeof *s_title_words))
            x->titleish = false;
    } else if ((t->first & K_LETTER) && !(t->first & K_UPPER)) {
        x->titleish = false; /* caseless scripts: no title case to read */
    }
    x->se = p->e;
}

/* Whether piece n starts a list item that ends the open sentence. */
static bool s_item_starts(const seg_t *x, const piece_t *n) {
    const uint8_t *s = x->s;
    if (x->only_bullets) return false; /* nothing to end yet */
    if (s_class_at(s, n->b) & K_BULLET) return true;
    long ord = 0;
    int m = s_marker(s, n->b, n->e, &ord);
    /* The next marker in sequence ("a. ... b. ...", "1) ... 2) ...").
     * Upper-case letters are left out: "E. Smith and F. Jones" are
     * initials far more often than an outline. */
    if (m && m == x->marker && M_KIND(m) != M_UPPER && ord == x->marker_ord + 1) return true;
    /* "i." read as a letter, then "ii." as a roman numeral */
    if (m && M_KIND(m) == M_ROMAN && ord == 2 && x->marker / 8 == m / 8 &&
        (x->marker_ord == 'i' || x->marker_ord == 'I'))
        return true;
    if (n->nl == 1) {
        if (m) return true; /* a marker at the start of a line */
        bool dash = n->e - n->b == 1 && (s[n->b] == '-' || s[n->b] == '*' || s[n->b] == '+');
        if (dash) return true;
    }
    return false;
}

/* A period after an ordinary word, number, letter or abbreviation: does it
 * end the sentence before piece n (which starts as nk)? */
static bool s_period_ends(const seg_t *x, const tail_t *t, const piece_t *n, unsigned nk,
                          bool a_start, bool a_prev_cap) {
    bool starter = false;
    unsigned abbrev;
    unsigned kind = s_word_kind(x->s, t, &abbrev);
    if (nk == N_LOWER || nk == N_CONT) {
        /* "Jane and co. at", "U.S. for", "1. above", "p. 55": not an end.
         * After an ordinary word the period ends the sentence even before
         * a lower-case word, as the pragmatic segmenter does. */
        return kind == W_REGULAR;
    }
    if (nk == N_DIGIT) return kind == W_REGULAR || kind == W_NUMBER; /* "item. 2." */
    switch (kind) {
    case W_ABBREV:
        return abbrev != A_PRE; /* "Mr. Smith"; "Co. It closed" */
    case W_LETTER: {
        if (t->first & K_LOWER) return true; /* "the variable x. Then" */
        if (a_start) return false;           /* "E. Smith went", "Q. What" */
        /* "Albert I. Jones" but "you and I. Did"; another capital letter
         * after a capitalised word is an initial, after any other word it
         * ends the sentence only before a sentence opener ("vitamin C. It"). */
        int32_t u;
        s_dec(x->s, t->core_b, &u);
        if (u == 'I') return !a_prev_cap;
        if (a_prev_cap) return false;
        s_start_kind(x->s, n, &starter);
        return starter;
    }
    case W_MULTI:
        /* "the U.S. How" ends, "the U.S. Government" does not, and a fragment
         * of three words or fewer ("At 5 a.m. Mr. Smith") is not a sentence. */
        if (x->n_words < 4) return false;
        s_start_kind(x->s, n, &starter);
        return starter;
    default:
        return true;
    }
}

/* Whether the sentence ends after piece a (tail t, plus an absorbed group
 * g of terminator-only pieces) before piece n. */
static bool s_ends(const seg_t *x, const tail_t *t, const tail_t *g, bool have_g, const piece_t *n,
                   bool a_start, bool a_prev_cap) {
    unsigned dots = t->dots + (have_g ? g->dots : 0);
    bool strong = t->strong || (have_g && g->strong);
    bool cjk = t->cjk || (have_g && g->cjk);
    bool closers = have_g ? g->closers : t->closers;
    if (cjk) return true;
    if (t->semi) return true; /* only peeled when semicolons end sentences */
    if (!strong && (dots == 0 || dots == 3)) return false; /* three dots: an omission */
    unsigned nk = s_start_kind(x->s, n, NULL);
    /* "Yahoo! in", "'This is great.' she said": not before lower case. */
    if (strong || dots != 1 || closers || have_g) return s_opens(nk);
    return s_period_ends(x, t, n, nk, a_start, a_prev_cap);
}

/* Whether line a (the open sentence, one line) is a heading before n. */
static bool s_heading(const seg_t *x, const tail_t *t, const piece_t *n) {
    if (!x->line_start || !x->one_line || !x->titleish || x->n_words > 10) return false;
    if (t->dots || t->strong || t->cjk || t->last_cont) return false;
    return s_start_kind(x->s, n, NULL) == N_UPPER;
}

static int s_emit(seg_t *x) {
    return s_push(x->out, x->sb, x->se);
}

static int s_run(seg_t *x) {
    const uint8_t *s = x->s;
    iter_t it = {s, x->len, 0, 0, false};
    piece_t a, n;
    if (!s_next_piece(&it, &a)) return 0;
    x->para_term = s_para_has_term(s, x->len, a.b);
    s_open(x, a.b, true);
    int rc;
    for (;;) {
        bool a_start = x->only_bullets;
        bool a_prev_cap = x->n_pieces > 0 && x->prev_cap;
        tail_t t;
        s_tail(s, &a, x->semi_ends, &t);
        /* A list marker opens the sentence, or a list after a colon
         * ("Steps: 1) wash 2) dry"); its period ends nothing. */
        bool a_marker = false;
        if (a_start || x->prev_colon) {
            long ord = 0;
            int m = s_marker(s, a.b, a.e, &ord);
            /* after a colon only a first item: "Time: 5. Go." is no list */
            if (m && !a_start && ord != 1 && ord != 'a' && ord != 'A' && ord != 'i' && ord != 'I')
                m = 0;
            if (m) {
                a_marker = true;
                x->marker = m;
                x->marker_ord = ord;
            }
        }
        s_add(x, &a, &t);

        /* Absorb pieces made only of terminators and closers (". . .", "!"). */
        tail_t g;
        memset(&g, 0, sizeof g);
        size_t g_b = 0, g_e = 0;
        unsigned g_n = 0;
        bool g_glued = false; /* the group ends at a boundary inside a word */
        bool have = s_next_piece(&it, &n);
        while (!a.glued && have && n.nl == 0 && (s_class_at(s, n.b) & K_TERM)) {
            tail_t tn;
            s_tail(s, &n, false, &tn);
            if (tn.core_e != n.b) break; /* something else before the cluster */
            if (!g_n) g_b = n.b;
            g_e = n.e;
            g_n++;
            g.dots += tn.dots;
            g.strong |= tn.strong;
            g.cjk |= tn.cjk;
            g.closers = tn.closers;
            g_glued = n.glued;
            have = s_next_piece(&it, &n);
            if (g_glued) break;
        }
        if (!have) {
            if (g_n) x->se = g_e;
            break;
        }

        enum { NO_CUT, CUT_BEFORE_N, CUT_BEFORE_GROUP } cut = NO_CUT;
        if (a.glued || g_glued || n.nl >= 2) {
            cut = CUT_BEFORE_N;
        } else if (g_n && g.dots == 3 && !g.strong && !g.cjk && t.dots == 1 && !t.strong &&
                   !t.cjk && !t.closers) {
            /* "compounds. . . . The practice": the period ends the sentence
             * and the spaced ellipsis opens the next one, when the word is
             * not an abbreviation and a capital follows. */
            unsigned abbrev;
            unsigned k = s_word_kind(s, &t, &abbrev);
            unsigned nk = s_start_kind(s, &n, NULL);
            if ((k == W_REGULAR || k == W_NUMBER) && (nk == N_UPPER || nk == N_CASELESS))
                cut = CUT_BEFORE_GROUP;
        }
        if (cut == NO_CUT) {
            if (s_item_starts(x, &n))
                cut = CUT_BEFORE_N;
            else if (n.nl == 1 && (!x->para_term || s_heading(x, &t, &n)))
                cut = CUT_BEFORE_N;
            else if (!a_marker && s_ends(x, &t, &g, g_n > 0, &n, a_start, a_prev_cap))
                cut = CUT_BEFORE_N;
        }

        if (cut == CUT_BEFORE_GROUP) {
            if ((rc = s_emit(x))) return rc;
            s_open(x, g_b, false);
            x->n_pieces = g_n;
            x->only_bullets = false;
            x->titleish = false;
            x->se = g_e;
        } else if (g_n) {
            x->n_pieces += g_n;
            x->only_bullets = false;
            x->prev_cap = false;
            x->prev_colon = false;
            x->se = g_e;
        }
        if (cut == CUT_BEFORE_N) {
            if ((rc = s_emit(x))) return rc;
            s_open(x, n.b, n.nl > 0);
        }
        if (n.nl >= 2) x->para_term = s_para_has_term(s, x->len, n.b);
        a = n;
    }
    return s_emit(x);
}

/* Fills the code-point offsets of the spans (in text order) in one pass. */
static void s_code_points(const uint8_t *s, zb_sentences_spans_t *o) {
    size_t bi = 0;
    uint32_t ci = 0;
    for (size_t k = 0; k < o->n; k++) {
        zb_sentences_span_t *sp = &o->v[k];
        for (; bi < sp->byte_begin; bi++) ci += (s[bi] & 0xC0) != 0x80;
        sp->begin = ci;
        for (; bi < sp->byte_end; bi++) ci += (s[bi] & 0xC0) != 0x80;
        sp->end = ci;
    }
}

void zb_sentences_spans_free(zb_sentences_spans_t *s) {
    if (!s) return;
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

int zb_sentences_split_opts(const char *text, size_t len, const zb_sentences_options_t *opt,
                            zb_sentences_spans_t *out) {
    if (!out) return ZB_EINVAL;
    out->n = 0;
    if (!text && len) return ZB_EINVAL;
    if (len > ZB_TEXT_BYTES_MAX) return ZB_ELIMIT;
    const uint8_t *s = (const uint8_t *)text;
    if (!s_valid_utf8(s, len)) return ZB_EUTF8;
    if (!len) return 0;
    seg_t x;
    memset(&x, 0, sizeof x);
    x.s = s;
    x.len = len;
    x.semi_ends = opt && opt->semicolon_ends;
    x.out = out;
    int rc = s_run(&x);
    if (rc) {
        out->n = 0;
        return rc;
    }
    s_code_points(s, out);
    return 0;
}

int zb_sentences_split(const char *text, size_t len, zb_sentences_spans_t *out) {
    return zb_sentences_split_opts(text, len, NULL, out);
}
