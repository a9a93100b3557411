/*
 * zbert-embed -- embed texts in process, without a broker.
 *
 *   zbert-embed --model PATH [--level wordpiece|token|sentence]
 *               [--pooling cls|mean] [--normalize] [--threads N]
 *               [--truncate|--windows] [--tokenize-only]
 *               [--input-format lines|jsonl] [--format jsonl|npy|table]
 *               [--batch-tokens N] [--stats] < input > output
 *
 * --format table is for people: one row per token, piece or text with its
 * span, the first values of its vector and its L2 norm.  --stats prints
 * throughput on stderr at the end (time from the model being ready).
 *
 * Reads texts from stdin (one per line, or one {"text": ...} object per
 * line), embeds them in chunks (length-sorted batches inside a chunk) and
 * writes one output object per input, in input order.  A bad input line gets
 * an error object and a message on stderr naming the line; the other lines
 * go on, and the exit status is 1 at the end.
 *
 * The command line is a contract other tools drive: options are only ever
 * added.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "embed.h"
#include "limits.h"
#include "model.h"

/* A chunk closes at this many texts or input bytes, whichever comes first:
 * enough texts for length sorting to pay, few enough rows to stay in RAM. */
#define S_CHUNK_TEXTS 512
#define S_CHUNK_BYTES (256u * 1024u)

typedef enum { S_IN_LINES, S_IN_JSONL } s_input_t;
typedef enum { S_OUT_JSONL, S_OUT_NPY, S_OUT_TABLE } s_output_t;

typedef struct s_args {
    const char *model;
    zb_embed_options_t opt;
    bool level_set;
    int threads;
    int batch_tokens;
    s_input_t input;
    s_output_t output;
    bool stats;
} s_args_t;

static void s_usage(FILE *f) {
    fputs("usage: zbert-embed --model PATH [--level wordpiece|token|sentence]\n"
          "                   [--pooling cls|mean] [--normalize] [--threads N]\n"
          "                   [--truncate|--windows] [--tokenize-only]\n"
          "                   [--input-format lines|jsonl] [--format jsonl|npy|table]\n"
          "                   [--batch-tokens N] [--stats] < input > output\n"
          "PATH is a .zbm bundle or a Hugging Face directory.\n",
          f);
}

static int s_parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || *e || e == s || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int s_parse_args(int argc, char **argv, s_args_t *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDS_VALUE                                                                   \
    do {                                                                              \
        if (v == NULL) {                                                              \
            fprintf(stderr, "zbert-embed: %s needs a value\n", k);                    \
            return -1;                                                                \
        }                                                                             \
        i++;                                                                          \
    } while (0)
        if (!strcmp(k, "--model")) {
            NEEDS_VALUE;
            a->model = v;
        } else if (!strcmp(k, "--level")) {
            NEEDS_VALUE;
            a->level_set = true;
            if (!strcmp(v, "wordpiece")) a->opt.level = ZB_LEVEL_WORDPIECE;
            else if (!strcmp(v, "token")) a->opt.level = ZB_LEVEL_TOKEN;
            else if (!strcmp(v, "sentence")) a->opt.level = ZB_LEVEL_SENTENCE;
            else goto bad_value;
        } else if (!strcmp(k, "--pooling")) {
            NEEDS_VALUE;
            if (!strcmp(v, "cls")) a->opt.pooling = ZB_POOL_CLS;
            else if (!strcmp(v, "mean")) a->opt.pooling = ZB_POOL_MEAN;
            else goto bad_value;
        } else if (!strcmp(k, "--normalize")) {
            a->opt.normalize = true;
        } else if (!strcmp(k, "--threads")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, 1024, &a->threads)) goto bad_value;
        } else if (!strcmp(k, "--batch-tokens")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, 1 << 20, &a->batch_tokens)) goto bad_value;
        } else if (!strcmp(k, "--truncate")) {
            a->opt.windows = false;
        } else if (!strcmp(k, "--windows")) {
            a->opt.windows = true;
        } else if (!strcmp(k, "--stats")) {
            a->stats = true;
        } else if (!strcmp(k, "--tokenize-only")) {
            a->opt.tokenize_only = true;
        } else if (!strcmp(k, "--input-format")) {
            NEEDS_VALUE;
            if (!strcmp(v, "lines")) a->input = S_IN_LINES;
            else if (!strcmp(v, "jsonl")) a->input = S_IN_JSONL;
            else goto bad_value;
        } else if (!strcmp(k, "--format")) {
            NEEDS_VALUE;
            if (!strcmp(v, "jsonl")) a->output = S_OUT_JSONL;
            else if (!strcmp(v, "npy")) a->output = S_OUT_NPY;
            else if (!strcmp(v, "table")) a->output = S_OUT_TABLE;
            else goto bad_value;
        } else if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            s_usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "zbert-embed: unknown option '%s'\n", k);
            s_usage(stderr);
            return -1;
        }
        continue;
    bad_value:
        fprintf(stderr, "zbert-embed: bad value '%s' for %s\n", v, k);
        return -1;
#undef NEEDS_VALUE
    }
    if (a->model == NULL) {
        fprintf(stderr, "zbert-embed: --model PATH is required\n");
        s_usage(stderr);
        return -1;
    }
    if (a->output == S_OUT_NPY) {
        if (!a->level_set) a->opt.level = ZB_LEVEL_SENTENCE;
        if (a->opt.level != ZB_LEVEL_SENTENCE || a->opt.tokenize_only) {
            fprintf(stderr, "zbert-embed: --format npy holds one sentence vector per text; "
                            "use it with --level sentence\n");
            return -1;
        }
    }
    return 0;
}

/* --- input -------------------------------------------------------------- */

/* Reads one line (without its "\n" and a trailing "\r") into *buf.  A line
 * over ZB_INPUT_LINE_MAX is consumed to its end and reported as too long.
 * Returns 1 for a line, 0 at EOF, -1 for an over-long line. */
static int s_read_line(FILE *in, char **buf, size_t *cap, size_t *len) {
    size_t n = 0;
    int c, too_long = 0, any = 0;
    while ((c = getc_unlocked(in)) != EOF) {
        any = 1;
        if (c == '\n') break;
        if (n >= ZB_INPUT_LINE_MAX) {
            too_long = 1;
            continue;
        }
        if (n + 1 >= *cap) {
            size_t nc = *cap ? 2 * *cap : 4096;
            char *p = realloc(*buf, nc);
            if (p == NULL) {
                too_long = 1;
                continue;
            }
            *buf = p;
            *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (!any) return 0;
    if (too_long) return -1;
    if (n > 0 && (*buf)[n - 1] == '\r') n--;
    if (*buf) (*buf)[n] = '\0';
    *len = n;
    return 1;
}

/* One input of the current chunk. */
typedef struct s_item {
    char *text;        /* malloc'd; NULL when the line was rejected */
    size_t len;
    char error[160];   /* why the line was rejected */
} s_item_t;

/* Extracts "text" from a JSON object line. */
static int s_json_text(const char *line, size_t len, s_item_t *it) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    if (j == NULL) {
        snprintf(it->error, sizeof it->error, "bad JSON");
        return -1;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsObject(j) || !cJSON_IsString(t)) {
        snprintf(it->error, sizeof it->error, "JSON object has no string field \"text\"");
        cJSON_Delete(j);
        return -1;
    }
    it->len = strlen(t->valuestring);
    it->text = malloc(it->len + 1);
    if (it->text) memcpy(it->text, t->valuestring, it->len + 1);
    cJSON_Delete(j);
    return it->text ? 0 : -1;
}

/* --- output ------------------------------------------------------------- */

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

static void s_write_jsonl(FILE *f, size_t index, const s_item_t *it, const zb_result_t *r,
                          const s_args_t *a) {
    fprintf(f, "{\"index\":%zu", index);
    if (it->text == NULL || r->status != 0) {
        fputs(",\"error\":", f);
        const char *msg = it->text == NULL ? it->error : zb_strerror(r->status);
        s_put_json_string(f, msg, strlen(msg));
        fputs("}\n", f);
        return;
    }
    if (r->truncated) fputs(",\"truncated\":true", f);
    if (r->n_windows > 1) fprintf(f, ",\"windows\":%d", r->n_windows);
    int H = r->dim;
    if (a->opt.tokenize_only || a->opt.level == ZB_LEVEL_WORDPIECE) {
        fputs(",\"ids\":[", f);
        for (size_t i = 0; i < r->pieces.n; i++)
            fprintf(f, i ? ",%d" : "%d", (int)r->pieces.v[i].id);
        fputs("],\"offsets\":[", f);
        for (size_t i = 0; i < r->pieces.n; i++)
            fprintf(f, i ? ",[%u,%u]" : "[%u,%u]", r->pieces.v[i].begin, r->pieces.v[i].end);
        putc(']', f);
        if (!a->opt.tokenize_only) {
            fputs(",\"vectors\":[", f);
            for (size_t i = 0; i < r->n_vectors; i++) {
                if (i) putc(',', f);
                s_put_vector(f, r->vectors + i * (size_t)H, H);
            }
            putc(']', f);
        }
    } else if (a->opt.level == ZB_LEVEL_SENTENCE) {
        fputs(",\"vector\":", f);
        s_put_vector(f, r->vectors, H);
    } else {
        fputs(",\"tokens\":[", f);
        for (size_t i = 0; i < r->words.n; i++) {
            const zb_word_t *w = &r->words.v[i];
            fputs(i ? ",{\"text\":" : "{\"text\":", f);
            s_put_json_string(f, it->text + w->byte_begin, w->byte_end - w->byte_begin);
            fprintf(f, ",\"begin\":%u,\"end\":%u,\"vector\":", w->begin, w->end);
            s_put_vector(f, r->vectors + i * (size_t)H, H);
            putc('}', f);
        }
        putc(']', f);
    }
    fputs("}\n", f);
}

/* A human-readable table of the first values of each vector. */
static void s_write_table(FILE *f, size_t index, const s_item_t *it, const zb_result_t *r,
                          const s_args_t *a, const zb_tok_t *tok) {
    enum { SHOW = 4 };
    if (it->text == NULL || r->status != 0) {
        fprintf(f, "text %zu: error: %s\n", index,
                it->text == NULL ? it->error : zb_strerror(r->status));
        return;
    }
    fprintf(f, "text %zu: %zu wordpieces%s, %d-dimensional vectors\n", index, r->pieces.n,
            r->truncated ? " (truncated)" : "", r->dim);
    bool words = !a->opt.tokenize_only && a->opt.level == ZB_LEVEL_TOKEN;
    bool sentence = !a->opt.tokenize_only && a->opt.level == ZB_LEVEL_SENTENCE;
    size_t rows = words ? r->words.n : sentence ? 1 : r->pieces.n;
    fprintf(f, "  %-16s %6s %6s", sentence ? "sentence" : words ? "token" : "wordpiece", "begin",
            "end");
    if (!a->opt.tokenize_only) {
        for (int j = 0; j < SHOW && j < r->dim; j++) fprintf(f, "  %10s%d", "v", j);
        fprintf(f, "  %10s", "|v|");
    }
    putc('\n', f);
    for (size_t i = 0; i < rows; i++) {
        char label[64];
        uint32_t b, e;
        if (words) {
            const zb_word_t *w = &r->words.v[i];
            int n = (int)(w->byte_end - w->byte_begin);
            snprintf(label, sizeof label, "%.*s", n > 40 ? 40 : n, it->text + w->byte_begin);
            b = w->begin;
            e = w->end;
        } else if (sentence) {
            snprintf(label, sizeof label, "%s", a->opt.pooling == ZB_POOL_MEAN ? "mean" : "[CLS]");
            b = 0;
            e = r->pieces.n > 2 ? r->pieces.v[r->pieces.n - 2].end : 0;
        } else {
            size_t n = 0;
            const char *t = zb_tok_token(tok, r->pieces.v[i].id, &n);
            snprintf(label, sizeof label, "%.*s", (int)(n > 40 ? 40 : n), t ? t : "?");
            b = r->pieces.v[i].begin;
            e = r->pieces.v[i].end;
        }
        fprintf(f, "  %-16s %6u %6u", label, b, e);
        if (!a->opt.tokenize_only) {
            const float *v = r->vectors + i * (size_t)r->dim;
            double ss = 0;
            for (int j = 0; j < r->dim; j++) ss += (double)v[j] * v[j];
            for (int j = 0; j < SHOW && j < r->dim; j++) fprintf(f, "  %11.6f", (double)v[j]);
            fprintf(f, "  %10.4f", sqrt(ss));
        }
        putc('\n', f);
    }
}

/* .npy output: rows go straight to a seekable file whose header is patched
 * at the end, or are buffered when stdout is a pipe. */
typedef struct s_npy {
    FILE *f;
    bool seekable;
    size_t rows;
    int dim;
    float *buf;
    size_t buf_cap; /* rows */
} s_npy_t;

#define S_NPY_HEADER 128 /* bytes; holds any shape we can write */

static void s_npy_header(FILE *f, size_t rows, int dim) {
    char h[S_NPY_HEADER];
    memset(h, ' ', sizeof h);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = S_NPY_HEADER - 10;
    h[8] = (char)(hl & 0xff);
    h[9] = (char)(hl >> 8);
    int k = snprintf(h + 10, sizeof h - 10,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %d), }", rows, dim);
    h[10 + k] = ' ';
    h[S_NPY_HEADER - 1] = '\n';
    fwrite(h, 1, sizeof h, f);
}

static int s_npy_row(s_npy_t *n, const float *v) {
    if (n->seekable) {
        if (fwrite(v, sizeof *v, (size_t)n->dim, n->f) != (size_t)n->dim) return -1;
    } else {
        if (n->rows == n->buf_cap) {
            size_t cap = n->buf_cap ? 2 * n->buf_cap : 1024;
            float *p = realloc(n->buf, cap * (size_t)n->dim * sizeof *p);
            if (p == NULL) return -1;
            n->buf = p;
            n->buf_cap = cap;
        }
        memcpy(n->buf + n->rows * (size_t)n->dim, v, (size_t)n->dim * sizeof *v);
    }
    n->rows++;
    return 0;
}

static int s_npy_finish(s_npy_t *n) {
    if (n->seekable) {
        if (fflush(n->f) || fseek(n->f, 0, SEEK_SET)) return -1;
        s_npy_header(n->f, n->rows, n->dim);
        return fflush(n->f);
    }
    s_npy_header(n->f, n->rows, n->dim);
    if (n->rows && fwrite(n->buf, sizeof *n->buf * (size_t)n->dim, n->rows, n->f) != n->rows)
        return -1;
    return fflush(n->f);
}

/* --- main --------------------------------------------------------------- */

int main(int argc, char **argv) {
    s_args_t a;
    if (s_parse_args(argc, argv, &a) != 0) return 2;

    zb_diag_t d = {{0}};
    zb_model_t *model = NULL;
    zb_embedder_t *emb = NULL;
    int rc = zb_model_open(a.model, &model, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert-embed: %s: %s\n", a.model, zb_diag_text(&d, rc));
        return 1;
    }
    zb_embedder_config_t cfg = {.threads = a.threads, .batch_tokens_max = a.batch_tokens};
    rc = zb_embedder_new(model, &cfg, &emb, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert-embed: %s\n", zb_diag_text(&d, rc));
        zb_model_close(&model);
        return 1;
    }
    int dim = zb_embedder_dim(emb);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    FILE *out = stdout;
    static char outbuf[1 << 16];
    setvbuf(out, outbuf, _IOFBF, sizeof outbuf);
    s_npy_t npy = {.f = out, .dim = dim};
    if (a.output == S_OUT_NPY) {
        npy.seekable = fseek(out, 0, SEEK_SET) == 0 && ftell(out) == 0;
        if (npy.seekable) s_npy_header(out, 0, dim);
    }

    s_item_t *items = calloc(S_CHUNK_TEXTS, sizeof *items);
    zb_result_t *res = calloc(S_CHUNK_TEXTS, sizeof *res);
    const char **texts = calloc(S_CHUNK_TEXTS, sizeof *texts);
    size_t *lens = calloc(S_CHUNK_TEXTS, sizeof *lens);
    char *line = NULL;
    size_t line_cap = 0, line_len = 0, index = 0, n_bad = 0;
    int status = 0;
    if (!items || !res || !texts || !lens) {
        fprintf(stderr, "zbert-embed: out of memory\n");
        status = 1;
        goto out;
    }
    for (bool eof = false; !eof;) {
        size_t n = 0, bytes = 0;
        while (n < S_CHUNK_TEXTS && bytes < S_CHUNK_BYTES) {
            int got = s_read_line(stdin, &line, &line_cap, &line_len);
            if (got == 0) {
                eof = true;
                break;
            }
            s_item_t *it = &items[n++];
            it->text = NULL;
            it->error[0] = '\0';
            if (got < 0) {
                snprintf(it->error, sizeof it->error, "line longer than %u bytes",
                         ZB_INPUT_LINE_MAX);
            } else if (a.input == S_IN_JSONL) {
                s_json_text(line ? line : "", line_len, it);
            } else {
                it->text = malloc(line_len + 1);
                if (it->text) memcpy(it->text, line ? line : "", line_len + 1);
                it->len = line_len;
            }
            bytes += it->len;
        }
        if (n == 0) break;
        /* Rejected lines run as empty texts so indices stay aligned; their
         * results are replaced by the error. */
        for (size_t i = 0; i < n; i++) {
            texts[i] = items[i].text ? items[i].text : "";
            lens[i] = items[i].text ? items[i].len : 0;
        }
        rc = zb_embedder_run(emb, texts, lens, n, &a.opt, res);
        if (rc != 0) {
            fprintf(stderr, "zbert-embed: %s\n", zb_strerror(rc));
            status = 1;
            goto out;
        }
        for (size_t i = 0; i < n; i++, index++) {
            bool bad = items[i].text == NULL || res[i].status != 0;
            if (bad) {
                n_bad++;
                fprintf(stderr, "zbert-embed: input line %zu: %s\n", index + 1,
                        items[i].text == NULL ? items[i].error : zb_strerror(res[i].status));
            }
            if (a.output == S_OUT_JSONL) {
                s_write_jsonl(out, index, &items[i], &res[i], &a);
            } else if (a.output == S_OUT_TABLE) {
                s_write_table(out, index, &items[i], &res[i], &a, zb_embedder_tokenizer(emb));
            } else {
                float nanrow[dim];
                for (int j = 0; j < dim; j++) nanrow[j] = NAN;
                if (s_npy_row(&npy, bad ? nanrow : res[i].vectors) != 0) {
                    fprintf(stderr, "zbert-embed: cannot write output\n");
                    status = 1;
                    goto out;
                }
            }
            free(items[i].text);
            items[i].text = NULL;
        }
    }
    if (a.output == S_OUT_NPY && s_npy_finish(&npy) != 0) {
        fprintf(stderr, "zbert-embed: cannot write output\n");
        status = 1;
    }
    if (fflush(out) != 0) {
        fprintf(stderr, "zbert-embed: cannot write output: %s\n", strerror(errno));
        status = 1;
    }
    if (a.stats) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        zb_embed_stats_t st;
        zb_embedder_stats(emb, &st);
        fprintf(stderr,
                "zbert-embed: stats texts=%llu sequences=%llu tokens=%llu batches=%llu "
                "seconds=%.3f tokens_per_s=%.1f texts_per_s=%.1f\n",
                (unsigned long long)st.texts, (unsigned long long)st.sequences,
                (unsigned long long)st.tokens, (unsigned long long)st.batches, sec,
                sec > 0 ? (double)st.tokens / sec : 0.0, sec > 0 ? (double)st.texts / sec : 0.0);
    }
    if (n_bad) {
        fprintf(stderr, "zbert-embed: %zu of %zu input lines rejected%s\n", n_bad, index,
                a.output == S_OUT_NPY ? " (their rows are NaN)" : "");
        status = 1;
    }
out:
    for (size_t i = 0; items && i < S_CHUNK_TEXTS; i++) {
        free(items[i].text);
        if (res) zb_result_free(&res[i]);
    }
    free(items);
    free(res);
    free(texts);
    free(lens);
    free(line);
    free(npy.buf);
    zb_embedder_destroy(&emb);
    zb_model_close(&model);
    return status;
}
