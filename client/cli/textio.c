/*
 * textio.c -- input lines and output formats of the command-line tools.
 */
#include "textio.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"

/* --- input -------------------------------------------------------------- */

struct zb_textio_reader {
    FILE *f;
    zb_textio_input_t format;
    char *line; /* reused line buffer */
    size_t cap;
};

zb_textio_reader_t *zb_textio_reader_new(FILE *f, zb_textio_input_t format) {
    zb_textio_reader_t *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->f = f;
    r->format = format;
    return r;
}

void zb_textio_reader_destroy(zb_textio_reader_t **pr) {
    if (pr == NULL || *pr == NULL) return;
    free((*pr)->line);
    free(*pr);
    *pr = NULL;
}

void zb_textio_item_clear(zb_textio_item_t *it) {
    free(it->text);
    it->text = NULL;
    it->len = 0;
    it->error[0] = '\0';
}

/* Reads one line (without "\n" and a trailing "\r") into r->line.  A line
 * over ZB_INPUT_LINE_MAX is consumed to its end and reported as too long,
 * so one runaway line cannot take the process's memory.
 * Returns 1 for a line, 0 at EOF, -1 for an over-long line, -2 on error. */
static int s_read_line(zb_textio_reader_t *r, size_t *len) {
    size_t n = 0;
    int c, too_long = 0, any = 0;
    while ((c = getc_unlocked(r->f)) != EOF) {
        any = 1;
        if (c == '\n') break;
        if (n >= ZB_INPUT_LINE_MAX) {
            too_long = 1;
            continue;
        }
        if (n + 1 >= r->cap) {
            size_t nc = r->cap ? 2 * r->cap : 4096;
            char *p = realloc(r->line, nc);
            if (p == NULL) {
                too_long = 1;
                continue;
            }
            r->line = p;
            r->cap = nc;
        }
        r->line[n++] = (char)c;
    }
    if (ferror(r->f)) return -2;
    if (!any) return 0;
    if (too_long) return -1;
    if (n > 0 && r->line[n - 1] == '\r') n--;
    *len = n;
    return 1;
}

static int s_set_text(zb_textio_item_t *it, const char *s, size_t n) {
    it->text = malloc(n + 1);
    if (it->text == NULL) {
        snprintf(it->error, sizeof it->error, "out of memory");
        return -1;
    }
    memcpy(it->text, s, n);
    it->text[n] = '\0';
    it->len = n;
    return 0;
}

/* --- the "text" member of a JSONL line --------------------------------- */

/* cJSON validates the line, but its strings end at their first NUL, so a
 * text holding an escaped \u0000 would be cut.  The member is therefore
 * located and decoded here, from the raw bytes, with explicit lengths.
 * Every scan is bounded by the line's length; the scanner is also safe on
 * input cJSON refused (it is then only used to name the problem). */

enum {
    S_JT_FOUND = 0,
    S_JT_NONE = -1, /* an object without a "text" member */
    S_JT_BAD = -2,  /* not a single top-level object */
    S_JT_DUP = -3,  /* "text" more than once */
};

enum {
    S_UN_OK = 0,
    S_UN_ESCAPE = -1,    /* an escape JSON does not have */
    S_UN_SURROGATE = -2, /* a \uD800-\uDFFF not part of a pair: no UTF-8 form */
};

static size_t s_ws(const char *s, size_t n, size_t i) {
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) i++;
    return i;
}

/* i at an opening quote: the index after the closing one, or SIZE_MAX. */
static size_t s_skip_string(const char *s, size_t n, size_t i) {
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++; /* the escaped byte cannot close the string */
        else if (s[i] == '"')
            return i + 1;
    }
    return SIZE_MAX;
}

/* i at a value: the index after it, or SIZE_MAX.  Arrays and objects are
 * skipped by counting brackets outside strings; their inner syntax is
 * cJSON's to check. */
static size_t s_skip_value(const char *s, size_t n, size_t i) {
    if (i >= n) return SIZE_MAX;
    if (s[i] == '"') return s_skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        size_t depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = s_skip_string(s, n, i);
                if (i == SIZE_MAX) return SIZE_MAX;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            i++;
        }
        return SIZE_MAX;
    }
    size_t b = i; /* number, true, false, null */
    while (i < n && !strchr(",}] \t\r\n", s[i])) i++;
    return i > b ? i : SIZE_MAX;
}

static int s_hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 0;
}

/*
 * Decodes the n raw bytes between a JSON string's quotes.  Bytes past cap
 * are counted in *out_len but not stored, so a caller can compare a key
 * without a buffer of the key's size; the decoded form is never longer
 * than the raw one, so cap = n always holds a whole value.  *bad_unit gets
 * the offending surrogate on S_UN_SURROGATE.  Returns S_UN_*.
 */
static int s_unescape(const char *s, size_t n, char *out, size_t cap, size_t *out_len,
                      uint32_t *bad_unit) {
    size_t o = 0;
#define S_PUT(b)                                                                                   \
    do {                                                                                           \
        if (o < cap) out[o] = (char)(b);                                                           \
        o++;                                                                                       \
    } while (0)
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            S_PUT(s[i]);
            i++;
            continue;
        }
        if (i + 1 >= n) return S_UN_ESCAPE;
        char e = s[i + 1];
        i += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple != NULL) {
            S_PUT("\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"]);
            continue;
        }
        uint32_t cp;
        if (e != 'u' || n - i < 4 || s_hex4(s + i, &cp) != 0) return S_UN_ESCAPE;
        i += 4;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            *bad_unit = cp;
            return S_UN_SURROGATE;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u' || s_hex4(s + i + 2, &lo) != 0 ||
                lo < 0xDC00 || lo > 0xDFFF) {
                *bad_unit = cp;
                return S_UN_SURROGATE;
            }
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp < 0x80) {
            S_PUT(cp);
        } else if (cp < 0x800) {
            S_PUT(0xC0 | cp >> 6);
            S_PUT(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            S_PUT(0xE0 | cp >> 12);
            S_PUT(0x80 | (cp >> 6 & 0x3F));
            S_PUT(0x80 | (cp & 0x3F));
        } else {
            S_PUT(0xF0 | cp >> 18);
            S_PUT(0x80 | (cp >> 12 & 0x3F));
            S_PUT(0x80 | (cp >> 6 & 0x3F));
            S_PUT(0x80 | (cp & 0x3F));
        }
    }
#undef S_PUT
    *out_len = o;
    return S_UN_OK;
}

/* Finds the top-level member whose decoded name is exactly "text" (4 bytes,
 * so "text\u0000" is another name); [*vb, *ve) is its raw value.  The line
 * must be one object and nothing but whitespace after it.  Returns S_JT_*. */
static int s_find_text(const char *s, size_t n, size_t *vb, size_t *ve) {
    size_t i = s_ws(s, n, 0);
    int found = 0;
    if (i >= n || s[i] != '{') return S_JT_BAD;
    i = s_ws(s, n, i + 1);
    if (i < n && s[i] == '}') {
        i++;
    } else {
        for (;;) {
            if (i >= n || s[i] != '"') return S_JT_BAD;
            size_t kb = i + 1, ke = s_skip_string(s, n, i);
            if (ke == SIZE_MAX) return S_JT_BAD;
            i = s_ws(s, n, ke);
            if (i >= n || s[i] != ':') return S_JT_BAD;
            size_t b = s_ws(s, n, i + 1), e = s_skip_value(s, n, b);
            if (e == SIZE_MAX) return S_JT_BAD;
            char key[5];
            size_t klen = 0;
            uint32_t unit;
            if (s_unescape(s + kb, ke - 1 - kb, key, sizeof key, &klen, &unit) == S_UN_OK &&
                klen == 4 && memcmp(key, "text", 4) == 0) {
                if (found) return S_JT_DUP;
                found = 1;
                *vb = b;
                *ve = e;
            }
            i = s_ws(s, n, e);
            if (i < n && s[i] == ',') {
                i = s_ws(s, n, i + 1);
                continue;
            }
            if (i < n && s[i] == '}') {
                i++;
                break;
            }
            return S_JT_BAD;
        }
    }
    if (s_ws(s, n, i) != n) return S_JT_BAD;
    return found ? S_JT_FOUND : S_JT_NONE;
}

/* Sets it->text from the raw value [vb, ve) of "text" (a string: its
 * quotes included), or it->error.  Returns S_UN_OK, S_UN_*, or S_UN_ESCAPE
 * also when the value is not a string or memory runs out (error says). */
static int s_text_from_json(zb_textio_item_t *it, const char *line, size_t vb, size_t ve) {
    if (ve - vb < 2 || line[vb] != '"') {
        snprintf(it->error, sizeof it->error, "JSON object has no string field \"text\"");
        return S_UN_ESCAPE;
    }
    size_t n = ve - vb - 2, len = 0;
    char *out = malloc(n + 1);
    if (out == NULL) {
        snprintf(it->error, sizeof it->error, "out of memory");
        return S_UN_ESCAPE;
    }
    uint32_t unit = 0;
    int rc = s_unescape(line + vb + 1, n, out, n, &len, &unit);
    if (rc != S_UN_OK) {
        if (rc == S_UN_SURROGATE)
            snprintf(it->error, sizeof it->error,
                     "\"text\" holds a lone UTF-16 surrogate \\u%04X: it has no UTF-8 form",
                     (unsigned)unit);
        else
            snprintf(it->error, sizeof it->error, "\"text\" holds an invalid escape");
        free(out);
        return rc;
    }
    out[len] = '\0';
    it->text = out;
    it->len = len;
    return S_UN_OK;
}

int zb_textio_read(zb_textio_reader_t *r, zb_textio_item_t *it) {
    zb_textio_item_clear(it);
    size_t len = 0;
    int got = s_read_line(r, &len);
    if (got == 0) return 0;
    if (got == -2) return -1;
    if (got == -1) {
        snprintf(it->error, sizeof it->error, "line longer than %u bytes", ZB_INPUT_LINE_MAX);
        return 1;
    }
    const char *line = r->line ? r->line : "";
    if (r->format == ZB_TEXTIO_IN_LINES) {
        s_set_text(it, line, len);
        return 1;
    }
    cJSON *j = cJSON_ParseWithLength(line, len);
    bool valid = j != NULL, object = cJSON_IsObject(j);
    cJSON_Delete(j); /* only the verdict is used: see s_find_text */
    size_t vb = 0, ve = 0;
    int found = s_find_text(line, len, &vb, &ve);
    if (!valid) {
        /* cJSON refuses a lone surrogate too; name it when it is in "text" */
        if (found != S_JT_FOUND || s_text_from_json(it, line, vb, ve) != S_UN_SURROGATE) {
            zb_textio_item_clear(it);
            snprintf(it->error, sizeof it->error, "bad JSON");
        }
        return 1;
    }
    if (found == S_JT_FOUND)
        s_text_from_json(it, line, vb, ve);
    else if (found == S_JT_DUP) /* which one was meant is a guess: refuse */
        snprintf(it->error, sizeof it->error, "JSON object has more than one field \"text\"");
    else if (found == S_JT_BAD && object) /* cJSON ignores what follows the value */
        snprintf(it->error, sizeof it->error, "bad JSON: bytes after the object");
    else
        snprintf(it->error, sizeof it->error, "JSON object has no string field \"text\"");
    return 1;
}

/* --- output ------------------------------------------------------------- */

struct zb_textio_writer {
    FILE *f;
    zb_textio_format_t format;
    zb_level_t level;
    bool tokenize_only;
    bool pooling_mean;
    int dim;
    /* npy */
    bool seekable;
    size_t rows;
    float *buf; /* rows buffered when f is not seekable */
    size_t buf_cap;
};

#define S_NPY_HEADER 128 /* bytes; holds any shape we can write */

static void s_npy_header(FILE *f, size_t rows, int dim) {
    char h[S_NPY_HEADER];
    memset(h, ' ', sizeof h);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)((S_NPY_HEADER - 10) & 0xff);
    h[9] = (char)((S_NPY_HEADER - 10) >> 8);
    int k = snprintf(h + 10, sizeof h - 10,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %d), }", rows, dim);
    h[10 + k] = ' ';
    h[S_NPY_HEADER - 1] = '\n';
    fwrite(h, 1, sizeof h, f);
}

zb_textio_writer_t *zb_textio_writer_new(FILE *f, zb_textio_format_t format, const zb_options_t *o,
                                         int dim) {
    zb_level_t level = o->level;
    bool tokenize_only = o->tokenize_only;
    if (format == ZB_TEXTIO_OUT_NPY && (level != ZB_LEVEL_SENTENCE || tokenize_only || dim <= 0))
        return NULL;
    if (format == ZB_TEXTIO_OUT_SPARKNLP_JSON && (level != ZB_LEVEL_TOKEN || tokenize_only))
        return NULL;
    zb_textio_writer_t *w = calloc(1, sizeof *w);
    if (w == NULL) return NULL;
    *w = (zb_textio_writer_t){.f = f,
                              .format = format,
                              .level = level,
                              .tokenize_only = tokenize_only,
                              .pooling_mean = o->pooling == ZB_POOLING_MEAN,
                              .dim = dim};
    if (format == ZB_TEXTIO_OUT_NPY) {
        w->seekable = fseek(f, 0, SEEK_SET) == 0 && ftell(f) == 0;
        if (w->seekable) s_npy_header(f, 0, dim);
    }
    return w;
}

void zb_textio_writer_destroy(zb_textio_writer_t **pw) {
    if (pw == NULL || *pw == NULL) return;
    free((*pw)->buf);
    free(*pw);
    *pw = NULL;
}

static void s_put_json_string(FILE *f, const char *s, size_t n) {
    putc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            putc('\\', f);
            putc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            putc(c, f);
        }
    }
    putc('"', f);
}

static void s_put_vector(FILE *f, const float *v, int n) {
    char buf[32];
    putc('[', f);
    for (int i = 0; i < n; i++) {
        int k = snprintf(buf, sizeof buf, "%.9g", (double)v[i]);
        if (i) putc(',', f);
        fwrite(buf, 1, (size_t)k, f);
    }
    putc(']', f);
}

static void s_write_jsonl(zb_textio_writer_t *w, const zb_textio_text_t *t) {
    FILE *f = w->f;
    fprintf(f, "{\"index\":%zu", t->index);
    if (t->error) {
        fputs(",\"error\":", f);
        s_put_json_string(f, t->error, strlen(t->error));
        fputs("}\n", f);
        return;
    }
    if (t->truncated) fputs(",\"truncated\":true", f);
    const size_t H = (size_t)t->dim;
    if (w->tokenize_only || w->level == ZB_LEVEL_WORDPIECE) {
        fputs(",\"ids\":[", f);
        for (size_t i = 0; i < t->n_rows; i++) fprintf(f, i ? ",%d" : "%d", (int)t->ids[i]);
        fputs("],\"offsets\":[", f);
        for (size_t i = 0; i < t->n_rows; i++)
            fprintf(f, i ? ",[%u,%u]" : "[%u,%u]", t->offsets[2 * i], t->offsets[2 * i + 1]);
        putc(']', f);
        if (!w->tokenize_only) {
            fputs(",\"vectors\":[", f);
            for (size_t i = 0; i < t->n_rows; i++) {
                if (i) putc(',', f);
                s_put_vector(f, t->vectors + i * H, t->dim);
            }
            putc(']', f);
        }
    } else if (w->level == ZB_LEVEL_SENTENCE) {
        fputs(",\"vector\":", f);
        s_put_vector(f, t->vectors, t->dim);
    } else {
        fputs(",\"tokens\":[", f);
        for (size_t i = 0; i < t->n_rows; i++) {
            uint32_t bb = t->byte_offsets[2 * i], be = t->byte_offsets[2 * i + 1];
            fputs(i ? ",{\"text\":" : "{\"text\":", f);
            s_put_json_string(f, t->text + bb, be - bb);
            fprintf(f, ",\"begin\":%u,\"end\":%u,", t->offsets[2 * i], t->offsets[2 * i + 1]);
            if (t->meta) {
                const zb_token_meta_t *m = &t->meta[i];
                fprintf(f, "\"sentence\":%u,\"pieceId\":%d,\"isWordStart\":%s,\"isOOV\":%s,",
                        m->sentence, (int)m->piece_id, m->word_start ? "true" : "false",
                        m->oov ? "true" : "false");
            }
            fputs("\"vector\":", f);
            s_put_vector(f, t->vectors + i * H, t->dim);
            putc('}', f);
        }
        putc(']', f);
    }
    fputs("}\n", f);
}

/* UTF-16 index of byte offset b of the text, walking on from (*at_b, *at_u)
 * (restarting when b is behind). */
static int32_t s_utf16_at(const zb_textio_text_t *t, uint32_t b, uint32_t *at_b, int32_t *at_u) {
    if (b < *at_b) *at_b = 0, *at_u = 0;
    const unsigned char *s = (const unsigned char *)t->text;
    while (*at_b < b && *at_b < t->text_len) {
        unsigned c = s[*at_b];
        uint32_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        *at_b += k;
        *at_u += k == 4 ? 2 : 1;
    }
    return *at_u;
}

void zb_textio_utf16_spans(const char *text, size_t len, const uint32_t *byte_offsets, size_t n,
                           zb_token_meta_t *meta) {
    zb_textio_text_t t = {.text = text, .text_len = len};
    uint32_t at_b = 0;
    int32_t at_u = 0;
    for (size_t i = 0; i < n; i++) {
        meta[i].begin16 = s_utf16_at(&t, byte_offsets[2 * i], &at_b, &at_u);
        meta[i].end16 = s_utf16_at(&t, byte_offsets[2 * i + 1], &at_b, &at_u) - 1;
    }
}

/* One line of Spark NLP word_embeddings annotations. */
static void s_write_sparknlp(zb_textio_writer_t *w, const zb_textio_text_t *t) {
    FILE *f = w->f;
    fprintf(f, "{\"index\":%zu", t->index);
    if (t->error) {
        fputs(",\"error\":", f);
        s_put_json_string(f, t->error, strlen(t->error));
        fputs("}\n", f);
        return;
    }
    fputs(",\"annotations\":[", f);
    uint32_t at_b = 0;
    int32_t at_u = 0;
    for (size_t i = 0; i < t->n_rows; i++) {
        uint32_t bb = t->byte_offsets[2 * i], be = t->byte_offsets[2 * i + 1];
        zb_token_meta_t m = {.piece_id = -1, .word_start = true};
        if (t->meta) {
            m = t->meta[i];
        } else {
            m.begin16 = s_utf16_at(t, bb, &at_b, &at_u);
            m.end16 = s_utf16_at(t, be, &at_b, &at_u) - 1;
        }
        fprintf(f, "%s{\"annotatorType\":\"word_embeddings\",\"begin\":%d,\"end\":%d,\"result\":",
                i ? "," : "", (int)m.begin16, (int)m.end16);
        s_put_json_string(f, t->text + bb, be - bb);
        fprintf(f, ",\"metadata\":{\"sentence\":\"%u\",\"token\":", m.sentence);
        s_put_json_string(f, t->text + bb, be - bb);
        fprintf(f, ",\"pieceId\":\"%d\",\"isWordStart\":\"%s\",\"isOOV\":\"%s\"},\"embeddings\":",
                (int)m.piece_id, m.word_start ? "true" : "false", m.oov ? "true" : "false");
        s_put_vector(f, t->vectors + i * (size_t)t->dim, t->dim);
        putc('}', f);
    }
    fputs("]}\n", f);
}

void zb_textio_write_sentence_spans(FILE *f, size_t index, const uint32_t *spans, size_t n,
                                    const char *error) {
    fprintf(f, "{\"index\":%zu", index);
    if (error) {
        fputs(",\"error\":", f);
        s_put_json_string(f, error, strlen(error));
        fputs("}\n", f);
        return;
    }
    fputs(",\"sentence_spans\":[", f);
    for (size_t k = 0; k < n; k++)
        fprintf(f, k ? ",[%u,%u]" : "[%u,%u]", spans[2 * k], spans[2 * k + 1]);
    fputs("]}\n", f);
}

static void s_write_table(zb_textio_writer_t *w, const zb_textio_text_t *t) {
    enum { SHOW = 4 };
    FILE *f = w->f;
    if (t->error) {
        fprintf(f, "text %zu: error: %s\n", t->index, t->error);
        return;
    }
    bool sentence = !w->tokenize_only && w->level == ZB_LEVEL_SENTENCE;
    bool vectors = !w->tokenize_only;
    fprintf(f, "text %zu%s, %d-dimensional vectors\n", t->index, t->truncated ? " (truncated)" : "",
            t->dim);
    fprintf(f, "  %-16s %6s %6s",
            sentence                                ? "sentence"
            : w->level == ZB_LEVEL_TOKEN && vectors ? "token"
                                                    : "wordpiece",
            "begin", "end");
    if (vectors) {
        for (int j = 0; j < SHOW && j < t->dim; j++) fprintf(f, "  %10s%d", "v", j);
        fprintf(f, "  %10s", "|v|");
    }
    putc('\n', f);
    for (size_t i = 0; i < t->n_rows; i++) {
        char label[64];
        uint32_t b = 0, e = 0;
        if (sentence) {
            snprintf(label, sizeof label, "%s", w->pooling_mean ? "mean" : "[CLS]");
        } else {
            uint32_t bb = t->byte_offsets[2 * i], be = t->byte_offsets[2 * i + 1];
            b = t->offsets[2 * i];
            e = t->offsets[2 * i + 1];
            if (be > bb) {
                int n = (int)(be - bb);
                snprintf(label, sizeof label, "%.*s", n > 40 ? 40 : n, t->text + bb);
            } else { /* only [CLS] and [SEP] have an empty span */
                snprintf(label, sizeof label, "%s", i == 0 ? "[CLS]" : "[SEP]");
            }
        }
        fprintf(f, "  %-16s %6u %6u", label, b, e);
        if (vectors) {
            const float *v = t->vectors + i * (size_t)t->dim;
            double ss = 0;
            for (int j = 0; j < t->dim; j++) ss += (double)v[j] * v[j];
            for (int j = 0; j < SHOW && j < t->dim; j++) fprintf(f, "  %11.6f", (double)v[j]);
            fprintf(f, "  %10.4f", sqrt(ss));
        }
        putc('\n', f);
    }
}

static int s_write_npy(zb_textio_writer_t *w, const zb_textio_text_t *t) {
    const size_t H = (size_t)w->dim;
    float *row = NULL;
    float stack[256];
    const float *src = t->vectors;
    if (t->error || t->n_rows < 1 || t->dim != w->dim) {
        row = H <= 256 ? stack : malloc(H * sizeof *row);
        if (row == NULL) return -1;
        for (size_t j = 0; j < H; j++) row[j] = NAN;
        src = row;
    }
    int rc = 0;
    if (w->seekable) {
        if (fwrite(src, sizeof *src, H, w->f) != H) rc = -1;
    } else {
        if (w->rows == w->buf_cap) {
            size_t cap = w->buf_cap ? 2 * w->buf_cap : 1024;
            float *p = realloc(w->buf, cap * H * sizeof *p);
            if (p == NULL)
                rc = -1;
            else {
                w->buf = p;
                w->buf_cap = cap;
            }
        }
        if (rc == 0) memcpy(w->buf + w->rows * H, src, H * sizeof *src);
    }
    if (row != stack) free(row);
    if (rc == 0) w->rows++;
    return rc;
}

int zb_textio_write(zb_textio_writer_t *w, const zb_textio_text_t *t) {
    switch (w->format) {
    case ZB_TEXTIO_OUT_JSONL:
        s_write_jsonl(w, t);
        return 0;
    case ZB_TEXTIO_OUT_TABLE:
        s_write_table(w, t);
        return 0;
    case ZB_TEXTIO_OUT_NPY:
        return s_write_npy(w, t);
    case ZB_TEXTIO_OUT_SPARKNLP_JSON:
        s_write_sparknlp(w, t);
        return 0;
    }
    return -1;
}

int zb_textio_writer_finish(zb_textio_writer_t *w) {
    if (w->format == ZB_TEXTIO_OUT_NPY) {
        if (w->seekable) {
            if (fflush(w->f) || fseek(w->f, 0, SEEK_SET)) return -1;
            s_npy_header(w->f, w->rows, w->dim);
            if (fseek(w->f, 0, SEEK_END)) return -1; /* leave the stream at its end */
        } else {
            s_npy_header(w->f, w->rows, w->dim);
            if (w->rows &&
                fwrite(w->buf, sizeof *w->buf * (size_t)w->dim, w->rows, w->f) != w->rows)
                return -1;
        }
    }
    if (fflush(w->f) != 0 || ferror(w->f)) return -1;
    return 0;
}
