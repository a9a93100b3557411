/*
 * fixture.c -- parser of the BERTTOK / BERTFIX line formats (tests only).
 * The files are our own committed fixtures, but the parser still checks
 * every count so that a damaged file fails loudly instead of misreading.
 */
#include "fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fx_path(const char *name) {
    static char buf[4096];
    const char *dir = getenv("ZB_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : "tests/fixtures", name);
    return buf;
}

char *fx_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (!p) return NULL;
    p[n] = '\0';
    if (len) *len = (size_t)n;
    return p;
}

typedef struct cursor {
    const char *p, *end;
    const char *path;
} cursor_t;

static int fail(const cursor_t *c, const char *what) {
    fprintf(stderr, "%s: bad fixture near byte %ld: %s\n", c->path, (long)(c->end - c->p), what);
    return -1;
}

/* Reads the next whitespace-delimited word into buf. */
static int word(cursor_t *c, char *buf, size_t cap) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n')) c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != ' ' && *c->p != '\n') {
        if (n + 1 >= cap) return -1;
        buf[n++] = *c->p++;
    }
    buf[n] = '\0';
    return n ? 0 : -1;
}

static int expect(cursor_t *c, const char *kw) {
    char buf[64];
    if (word(c, buf, sizeof buf) != 0 || strcmp(buf, kw) != 0) return fail(c, kw);
    return 0;
}

static int number(cursor_t *c, long *v) {
    char buf[64], *e;
    if (word(c, buf, sizeof buf) != 0) return -1;
    *v = strtol(buf, &e, 10);
    return *e ? -1 : 0;
}

static int floats(cursor_t *c, float *v, long n) {
    char buf[64], *e;
    for (long i = 0; i < n; i++) {
        if (word(c, buf, sizeof buf) != 0) return -1;
        v[i] = strtof(buf, &e);
        if (*e) return -1;
    }
    return 0;
}

static int u32s(cursor_t *c, uint32_t *v, long n) {
    long x;
    for (long i = 0; i < n; i++) {
        if (number(c, &x) != 0 || x < 0) return -1;
        v[i] = (uint32_t)x;
    }
    return 0;
}

/* full: 0 BERTTOK, 1 BERTFIX, 2 BERTREF (ids and hidden rows only). */
static int parse_case(cursor_t *c, fx_case_t *k, int full) {
    long v, n;
    char buf[64];
    if (number(c, &v) != 0) return fail(c, "case index");
    k->index = (int)v;
    if (word(c, k->name, sizeof k->name) != 0) return fail(c, "case name");
    if (full == 2) {
        long rows, cols;
        if (expect(c, "ids") || number(c, &n) || n < 1) return fail(c, "ids");
        k->n_ids = (int)n;
        k->ids = malloc(sizeof *k->ids * (size_t)n);
        for (long i = 0; i < n; i++) {
            if (number(c, &v) != 0) return fail(c, "id");
            k->ids[i] = (int32_t)v;
        }
        if (expect(c, "hidden") || number(c, &rows) || number(c, &cols) || rows != n)
            return fail(c, "hidden");
        k->hidden_rows = (int)rows;
        k->hidden_cols = (int)cols;
        k->hidden = malloc(sizeof(float) * (size_t)(rows * cols + 1));
        if (floats(c, k->hidden, rows * cols)) return fail(c, "hidden floats");
        return expect(c, "end");
    }
    if (expect(c, "text") || number(c, &n) || n < 0) return fail(c, "text");
    if (c->p >= c->end || *c->p != '\n' || c->end - c->p - 1 < n) return fail(c, "text bytes");
    c->p++;
    k->text = malloc((size_t)n + 1);
    memcpy(k->text, c->p, (size_t)n);
    k->text[n] = '\0';
    k->text_len = (size_t)n;
    c->p += n;
    if (expect(c, "ids") || number(c, &n) || n < 0) return fail(c, "ids");
    k->n_ids = (int)n;
    k->ids = malloc(sizeof *k->ids * (size_t)(n + 1));
    k->byte_off = malloc(sizeof(uint32_t) * 2 * (size_t)(n + 1));
    k->char_off = malloc(sizeof(uint32_t) * 2 * (size_t)(n + 1));
    for (long i = 0; i < n; i++) {
        if (number(c, &v) != 0) return fail(c, "id");
        k->ids[i] = (int32_t)v;
    }
    if (expect(c, "byte_offsets") || number(c, &v) || v != n || u32s(c, k->byte_off, 2 * n))
        return fail(c, "byte_offsets");
    if (expect(c, "char_offsets") || number(c, &v) || v != n || u32s(c, k->char_off, 2 * n))
        return fail(c, "char_offsets");
    if (full) {
        long rows, cols;
        if (expect(c, "hidden") || number(c, &rows) || number(c, &cols)) return fail(c, "hidden");
        k->hidden_rows = (int)rows;
        k->hidden_cols = (int)cols;
        k->hidden = malloc(sizeof(float) * (size_t)(rows * cols + 1));
        if (floats(c, k->hidden, rows * cols)) return fail(c, "hidden floats");
        if (expect(c, "tokens") || number(c, &n)) return fail(c, "tokens");
        k->n_tokens = (int)n;
        k->tokens = malloc(sizeof(uint32_t) * 3 * (size_t)(n + 1));
        if (u32s(c, k->tokens, 3 * n)) return fail(c, "token rows");
        float **dst[4] = {&k->pooled_cls, &k->pooled_mean, &k->pooled_mean_all,
                          &k->pooled_token_mean};
        const char *names[4] = {"cls", "mean", "mean_all", "token_mean"};
        for (int i = 0; i < 4; i++) {
            if (expect(c, "pooled") || word(c, buf, sizeof buf) || strcmp(buf, names[i]) ||
                number(c, &n) || n != cols)
                return fail(c, "pooled");
            *dst[i] = malloc(sizeof(float) * (size_t)cols);
            if (floats(c, *dst[i], cols)) return fail(c, "pooled floats");
        }
    }
    return expect(c, "end");
}

int fx_load(const char *path, fx_file_t *out) {
    size_t len;
    char *data = fx_read_file(path, &len);
    memset(out, 0, sizeof *out);
    if (!data) {
        fprintf(stderr, "%s: cannot read\n", path);
        return -1;
    }
    cursor_t c = {data, data + len, path};
    char magic[16];
    int full, rc = -1;
    if (word(&c, magic, sizeof magic) != 0) goto out;
    if (strcmp(magic, "BERTFIX") == 0)
        full = 1;
    else if (strcmp(magic, "BERTTOK") == 0)
        full = 0;
    else if (strcmp(magic, "BERTREF") == 0)
        full = 2;
    else
        goto out;
    while (c.p < c.end && *c.p != '\n') c.p++; /* rest of the header line */
    int cap = 64;
    out->cases = calloc((size_t)cap, sizeof *out->cases);
    char kw[16];
    while (word(&c, kw, sizeof kw) == 0) {
        if (strcmp(kw, "case") != 0) {
            fail(&c, "case");
            goto out;
        }
        if (out->n == cap) {
            cap *= 2;
            out->cases = realloc(out->cases, sizeof *out->cases * (size_t)cap);
            memset(out->cases + out->n, 0, sizeof *out->cases * (size_t)(cap - out->n));
        }
        if (parse_case(&c, &out->cases[out->n++], full) != 0) goto out;
    }
    rc = 0;
out:
    free(data);
    if (rc != 0) fx_free(out);
    return rc;
}

void fx_free(fx_file_t *f) {
    for (int i = 0; i < f->n; i++) {
        fx_case_t *k = &f->cases[i];
        free(k->text);
        free(k->ids);
        free(k->byte_off);
        free(k->char_off);
        free(k->hidden);
        free(k->tokens);
        free(k->pooled_cls);
        free(k->pooled_mean);
        free(k->pooled_mean_all);
        free(k->pooled_token_mean);
    }
    free(f->cases);
    memset(f, 0, sizeof *f);
}

uint64_t fx_rng_next(fx_rng_t *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int fx_all_ids(const fx_file_t *f, int32_t **ids, int **lens) {
    int total = 0;
    for (int i = 0; i < f->n; i++) total += f->cases[i].n_ids;
    *ids = malloc((size_t)(total > 0 ? total : 1) * sizeof **ids);
    *lens = malloc((size_t)(f->n > 0 ? f->n : 1) * sizeof **lens);
    if (*ids == NULL || *lens == NULL) {
        free(*ids);
        free(*lens);
        *ids = NULL;
        *lens = NULL;
        return -1;
    }
    for (int i = 0, o = 0; i < f->n; i++) {
        memcpy(*ids + o, f->cases[i].ids, (size_t)f->cases[i].n_ids * sizeof **ids);
        (*lens)[i] = f->cases[i].n_ids;
        o += f->cases[i].n_ids;
    }
    return total;
}
