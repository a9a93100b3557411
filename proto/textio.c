/*
 * textio.c -- input lines and output formats of the command-line tools.
 */
#include "textio.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"

/* --- input -------------------------------------------------------------- */

struct zb_io_reader {
    FILE *f;
    zb_io_input_t format;
    char *line; /* reused line buffer */
    size_t cap;
};

zb_io_reader_t *zb_io_reader_new(FILE *f, zb_io_input_t format) {
    zb_io_reader_t *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->f = f;
    r->format = format;
    return r;
}

void zb_io_reader_destroy(zb_io_reader_t **pr) {
    if (pr == NULL || *pr == NULL) return;
    free((*pr)->line);
    free(*pr);
    *pr = NULL;
}

void zb_io_item_clear(zb_io_item_t *it) {
    free(it->text);
    it->text = NULL;
    it->len = 0;
    it->error[0] = '\0';
}

/* Reads one line (without "\n" and a trailing "\r") into r->line.  A line
 * over ZB_INPUT_LINE_MAX is consumed to its end and reported as too long,
 * so one runaway line cannot take the process's memory.
 * Returns 1 for a line, 0 at EOF, -1 for an over-long line, -2 on error. */
static int s_read_line(zb_io_reader_t *r, size_t *len) {
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

static int s_set_text(zb_io_item_t *it, const char *s, size_t n) {
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

int zb_io_read(zb_io_reader_t *r, zb_io_item_t *it) {
    zb_io_item_clear(it);
    size_t len = 0;
    int got = s_read_line(r, &len);
    if (got == 0) return 0;
    if (got == -2) return -1;
    if (got == -1) {
        snprintf(it->error, sizeof it->error, "line longer than %u bytes", ZB_INPUT_LINE_MAX);
        return 1;
    }
    const char *line = r->line ? r->line : "";
    if (r->format == ZB_IO_IN_LINES) {
        s_set_text(it, line, len);
        return 1;
    }
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (j == NULL) {
        snprintf(it->error, sizeof it->error, "bad JSON");
        return 1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsObject(j) || !cJSON_IsString(t))
        snprintf(it->error, sizeof it->error, "JSON object has no string field \"text\"");
    else
        s_set_text(it, t->valuestring, strlen(t->valuestring));
    cJSON_Delete(j);
    return 1;
}

/* --- output ------------------------------------------------------------- */

struct zb_io_writer {
    FILE *f;
    zb_io_format_t format;
    zb_io_level_t level;
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

zb_io_writer_t *zb_io_writer_new(FILE *f, zb_io_format_t format, zb_io_level_t level,
                                 bool tokenize_only, bool pooling_mean, int dim) {
    if (format == ZB_IO_OUT_NPY && (level != ZB_IO_SENTENCE || tokenize_only || dim <= 0))
        return NULL;
    if (format == ZB_IO_OUT_SPARKNLP_JSON && (level != ZB_IO_TOKEN || tokenize_only)) return NULL;
    zb_io_writer_t *w = calloc(1, sizeof *w);
    if (w == NULL) return NULL;
    *w = (zb_io_writer_t){.f = f, .format = format, .level = level,
                          .tokenize_only = tokenize_only, .pooling_mean = pooling_mean,
                          .dim = dim};
    if (format == ZB_IO_OUT_NPY) {
        w->seekable = fseek(f, 0, SEEK_SET) == 0 && ftell(f) == 0;
        if (w->seekable) s_npy_header(f, 0, dim);
    }
    return w;
}

void zb_io_writer_destroy(zb_io_writer_t **pw) {
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

static void s_write_jsonl(zb_io_writer_t *w, const zb_io_text_t *t) {
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
    if (w->tokenize_only || w->level == ZB_IO_WORDPIECE) {
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
    } else if (w->level == ZB_IO_SENTENCE) {
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
                const zb_io_token_meta_t *m = &t->meta[i];
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
static int32_t s_utf16_at(const zb_io_text_t *t, uint32_t b, uint32_t *at_b, int32_t *at_u) {
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

/* One line of Spark NLP word_embeddings annotations. */
static void s_write_sparknlp(zb_io_writer_t *w, const zb_io_text_t *t) {
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
        zb_io_token_meta_t m = {.piece_id = -1, .word_start = true};
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

void zb_io_write_sentence_spans(FILE *f, size_t index, const uint32_t *spans, size_t n,
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

static void s_write_table(zb_io_writer_t *w, const zb_io_text_t *t) {
    enum { SHOW = 4 };
    FILE *f = w->f;
    if (t->error) {
        fprintf(f, "text %zu: error: %s\n", t->index, t->error);
        return;
    }
    bool sentence = !w->tokenize_only && w->level == ZB_IO_SENTENCE;
    bool vectors = !w->tokenize_only;
    fprintf(f, "text %zu%s, %d-dimensional vectors\n", t->index,
            t->truncated ? " (truncated)" : "", t->dim);
    fprintf(f, "  %-16s %6s %6s", sentence ? "sentence"
                                  : w->level == ZB_IO_TOKEN && vectors ? "token"
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

static int s_write_npy(zb_io_writer_t *w, const zb_io_text_t *t) {
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
            if (p == NULL) rc = -1;
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

int zb_io_write(zb_io_writer_t *w, const zb_io_text_t *t) {
    switch (w->format) {
    case ZB_IO_OUT_JSONL: s_write_jsonl(w, t); return 0;
    case ZB_IO_OUT_TABLE: s_write_table(w, t); return 0;
    case ZB_IO_OUT_NPY: return s_write_npy(w, t);
    case ZB_IO_OUT_SPARKNLP_JSON: s_write_sparknlp(w, t); return 0;
    }
    return -1;
}

int zb_io_writer_finish(zb_io_writer_t *w) {
    if (w->format == ZB_IO_OUT_NPY) {
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
