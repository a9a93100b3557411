/*
 * settings.c -- config files, typed settings tables and the one driver that
 * fills a program's settings from its command line, environment and file.
 */
#include "settings.h"

#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define S_LINE_MAX 4096
#define S_KEYS_MAX 256 /* a config has ~20 keys; bounds a hostile file */
#define S_VAR_MAX  128 /* bytes of ZBERT_<KEY> */
/* Why a value was refused, before the source is put in front of it. */
#define S_WHY_MAX 160

/* --- config files ------------------------------------------------------- */

typedef struct s_entry {
    char *key, *value;
    int line; /* where the value that counts was written */
} s_entry_t;

struct zb_settings_file {
    char *path;
    s_entry_t e[S_KEYS_MAX];
    int n;
};

static char *s_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int s_file_put(zb_settings_file_t *f, const char *key, const char *value, int line) {
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->e[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL) return ZB_ENOMEM;
            free(f->e[i].value);
            f->e[i].value = v;
            f->e[i].line = line;
            return 0;
        }
    }
    if (f->n == S_KEYS_MAX) return ZB_ELIMIT;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return ZB_ENOMEM;
    }
    f->e[f->n++] = (s_entry_t){k, v, line};
    return 0;
}

int zb_settings_file_load(const char *path, zb_settings_file_t **out, zb_diag_t *d) {
    *out = NULL;
    zb_settings_file_t *c = calloc(1, sizeof *c);
    if (c == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    if (path == NULL) {
        *out = c;
        return 0;
    }
    if ((c->path = strdup(path)) == NULL) {
        zb_settings_file_destroy(&c);
        return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        zb_settings_file_destroy(&c);
        return zb_diag_set(d, ZB_ENOTFOUND, "%s: cannot open", path);
    }
    char line[S_LINE_MAX + 2];
    int rc = 0, no = 0;
    while (fgets(line, sizeof line, f)) {
        no++;
        size_t len = strlen(line);
        if (len > S_LINE_MAX && line[len - 1] != '\n') {
            rc =
                zb_diag_set(d, ZB_ELIMIT, "%s:%d: line longer than %d bytes", path, no, S_LINE_MAX);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = s_trim(line);
        if (*s == '\0') continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            rc = zb_diag_set(d, ZB_EFORMAT, "%s:%d: expected key = value", path, no);
            break;
        }
        *eq = '\0';
        char *key = s_trim(s), *value = s_trim(eq + 1);
        int ok = *key != '\0';
        for (char *k = key; *k && ok; k++)
            ok = islower((unsigned char)*k) || isdigit((unsigned char)*k) || *k == '_' || *k == '-';
        if (!ok) {
            rc = zb_diag_set(d, ZB_EFORMAT, "%s:%d: bad key '%.64s'", path, no, key);
            break;
        }
        rc = s_file_put(c, key, value, no);
        if (rc != 0) {
            zb_diag_set(d, rc, "%s:%d: %s", path, no, zb_strerror(rc));
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        zb_settings_file_destroy(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void zb_settings_file_destroy(zb_settings_file_t **pf) {
    if (pf == NULL || *pf == NULL) return;
    for (int i = 0; i < (*pf)->n; i++) {
        free((*pf)->e[i].key);
        free((*pf)->e[i].value);
    }
    free((*pf)->path);
    free(*pf);
    *pf = NULL;
}

/* ZBERT_<KEY>: upper case, '-' as '_'.  False when it does not fit. */
static bool s_var_name(const char *key, char out[S_VAR_MAX]) {
    size_t n = 0;
    for (const char *p = "ZBERT_"; *p; p++) out[n++] = *p;
    for (const char *k = key; *k; k++) {
        if (n + 1 >= S_VAR_MAX) return false;
        out[n++] = *k == '-' ? '_' : (char)toupper((unsigned char)*k);
    }
    out[n] = '\0';
    return true;
}

/* Key names with '-' and '_' taken as the same character: the file keys of
 * some programs were written with '_' and their options with '-'. */
static bool s_same_key(const char *a, const char *b) {
    for (;; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y) return false;
        if (x == '\0') return true;
    }
}

/* The file's entry for a setting, or NULL.  The latest line wins when both
 * spellings of a key were written. */
static const s_entry_t *s_file_find(const zb_settings_file_t *f, const char *name) {
    const s_entry_t *best = NULL;
    for (int i = 0; f && i < f->n; i++)
        if (s_same_key(f->e[i].key, name) && (best == NULL || f->e[i].line > best->line))
            best = &f->e[i];
    return best;
}

/* Where a setting's value outside the command line comes from, the one
 * rule for the driver and zb_settings_file_get(): ZBERT_<KEY> (var gets its
 * name), else the file's entry (*e, with its line), else NULL. */
static const char *s_lookup(const zb_settings_file_t *f, const char *key, char var[S_VAR_MAX],
                            const s_entry_t **e) {
    *e = NULL;
    const char *v = s_var_name(key, var) ? getenv(var) : NULL;
    if (v != NULL) return v;
    *e = s_file_find(f, key);
    return *e ? (*e)->value : NULL;
}

const char *zb_settings_file_get(const zb_settings_file_t *f, const char *key) {
    char var[S_VAR_MAX];
    const s_entry_t *e;
    return s_lookup(f, key, var, &e);
}

/* --- values ----------------------------------------------------------------- */

static void s_list_clear(zb_settings_list_t *l) {
    for (size_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

/* Appends text[0..len) trimmed; an empty entry is dropped. */
static int s_list_add(zb_settings_list_t *l, const char *text, size_t len) {
    while (len > 0 && isspace((unsigned char)*text)) text++, len--;
    while (len > 0 && isspace((unsigned char)text[len - 1])) len--;
    if (len == 0) return 0;
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (items == NULL) return ZB_ENOMEM;
    l->items = items;
    if ((items[l->n] = strndup(text, len)) == NULL) return ZB_ENOMEM;
    l->n++;
    return 0;
}

/* An INT's bound: the table holds it as the uint64_t of its two's
 * complement (a negative initializer converts to that, as C defines). */
static int64_t s_signed(uint64_t u) {
    return u <= (uint64_t)INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
}

/* A decimal whole number, '-' allowed when negative is: its magnitude and
 * sign. */
static int s_number(const char *value, bool negative, uint64_t *out, bool *neg, char *why) {
    const char *p = value;
    *neg = negative && *p == '-';
    if (*neg) p++;
    if (*p == '\0') {
        snprintf(why, S_WHY_MAX, "empty, expected a whole number");
        return ZB_EINVAL;
    }
    uint64_t v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') {
            snprintf(why, S_WHY_MAX, "`%.40s` is not a whole number", value);
            return ZB_EINVAL;
        }
        if (__builtin_mul_overflow(v, 10u, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v)) {
            snprintf(why, S_WHY_MAX, "`%.40s` is too large", value);
            return ZB_EINVAL;
        }
    }
    *out = v;
    return 0;
}

static int s_bool(const char *value, bool *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        if (strcmp(value, yes[i]) == 0) return *out = true, 0;
        if (strcmp(value, no[i]) == 0) return *out = false, 0;
    }
    return ZB_EINVAL;
}

/*
 * Parses value into s's field in base.  A LIST's value is comma-separated
 * when split, else one entry, and is appended (the caller clears).  Returns
 * 0, ZB_EINVAL with why filled, or ZB_ENOMEM.
 */
static int s_apply(const zb_settings_t *s, void *base, const char *value, bool split, char *why) {
    char *field = (char *)base + s->off;
    switch (s->kind) {
    case ZB_SETTINGS_STRING: {
        size_t n = strlen(value);
        if (n < s->min || n > s->max || n >= s->size) {
            snprintf(why, S_WHY_MAX, "%zu characters, expected %llu to %llu", n,
                     (unsigned long long)s->min, (unsigned long long)s->max);
            return ZB_EINVAL;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    case ZB_SETTINGS_U32:
    case ZB_SETTINGS_U64:
    case ZB_SETTINGS_INT: {
        uint64_t mag;
        bool neg;
        int rc = s_number(value, s->kind == ZB_SETTINGS_INT, &mag, &neg, why);
        if (rc != 0) return rc;
        if (s->kind == ZB_SETTINGS_INT) {
            long long lo = s_signed(s->min), hi = s_signed(s->max);
            /* |v| above 2^31 is out of any int range: no overflow below */
            long long v = mag > (1ull << 31) ? (neg ? LLONG_MIN : LLONG_MAX)
                                             : (neg ? -(long long)mag : (long long)mag);
            if (v < lo || v > hi) {
                snprintf(why, S_WHY_MAX, "%.40s is outside %lld..%lld", value, lo, hi);
                return ZB_EINVAL;
            }
            int x = (int)v;
            memcpy(field, &x, sizeof x);
            return 0;
        }
        if (mag < s->min || mag > s->max) {
            snprintf(why, S_WHY_MAX, "%llu is outside %llu..%llu", (unsigned long long)mag,
                     (unsigned long long)s->min, (unsigned long long)s->max);
            return ZB_EINVAL;
        }
        if (s->kind == ZB_SETTINGS_U32) {
            uint32_t x = (uint32_t)mag;
            memcpy(field, &x, sizeof x);
        } else {
            memcpy(field, &mag, sizeof mag);
        }
        return 0;
    }
    case ZB_SETTINGS_FLAG: {
        bool b;
        if (s_bool(value, &b) != 0) {
            snprintf(why, S_WHY_MAX, "`%.40s` is not true or false", value);
            return ZB_EINVAL;
        }
        memcpy(field, &b, sizeof b);
        return 0;
    }
    case ZB_SETTINGS_LIST: {
        zb_settings_list_t *l = (zb_settings_list_t *)(void *)field;
        if (!split) return s_list_add(l, value, strlen(value));
        for (const char *p = value;;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            int rc = s_list_add(l, p, len);
            if (rc != 0) return rc;
            if (e == NULL) return 0;
            p = e + 1;
        }
    }
    case ZB_SETTINGS_ENUM: {
        for (int i = 0; s->choices[i]; i++) {
            if (strcmp(value, s->choices[i]) == 0) {
                int x = s->values ? s->values[i] : i;
                memcpy(field, &x, sizeof x);
                return 0;
            }
        }
        int n = snprintf(why, S_WHY_MAX, "`%.40s` is not one of", value);
        for (int i = 0; s->choices[i] && n > 0 && n < S_WHY_MAX; i++)
            n += snprintf(why + n, S_WHY_MAX - (size_t)n, "%s %s", i ? "," : "", s->choices[i]);
        return ZB_EINVAL;
    }
    }
    snprintf(why, S_WHY_MAX, "unknown kind");
    return ZB_EINVAL;
}

/* A LIST's entry count against its range, once its source is read. */
static int s_list_count(const zb_settings_t *s, const void *base, char *why) {
    const zb_settings_list_t *l =
        (const zb_settings_list_t *)(const void *)((const char *)base + s->off);
    if (l->n < s->min || l->n > s->max) {
        snprintf(why, S_WHY_MAX, "%zu entries, expected %llu to %llu", l->n,
                 (unsigned long long)s->min, (unsigned long long)s->max);
        return ZB_EINVAL;
    }
    return 0;
}

/* Sets s from a whole value of the file, the environment or a default. */
static int s_set_whole(const zb_settings_t *s, void *base, const char *value, char *why) {
    if (s->kind != ZB_SETTINGS_LIST) return s_apply(s, base, value, true, why);
    zb_settings_list_t *l = (zb_settings_list_t *)(void *)((char *)base + s->off);
    s_list_clear(l);
    int rc = s_apply(s, base, value, true, why);
    return rc != 0 ? rc : s_list_count(s, base, why);
}

/* --- tables ----------------------------------------------------------------- */

static size_t s_kind_size(zb_settings_kind_t k) {
    switch (k) {
    case ZB_SETTINGS_U32:
        return sizeof(uint32_t);
    case ZB_SETTINGS_U64:
        return sizeof(uint64_t);
    case ZB_SETTINGS_INT:
    case ZB_SETTINGS_ENUM:
        return sizeof(int);
    case ZB_SETTINGS_FLAG:
        return sizeof(bool);
    case ZB_SETTINGS_LIST:
        return sizeof(zb_settings_list_t);
    case ZB_SETTINGS_STRING:
        return 0;
    }
    return 0;
}

int zb_settings_check(const zb_settings_t *table, size_t n, zb_diag_t *d) {
    for (size_t i = 0; i < n; i++) {
        const zb_settings_t *s = &table[i];
        const char *name = s->name ? s->name : "(null)";
        bool ok = s->name != NULL && *s->name != '\0' && *s->name != '-' && s->help != NULL;
        for (const char *c = s->name; ok && *c; c++)
            ok = islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '-';
        if (!ok) return zb_diag_set(d, ZB_EINVAL, "setting %s: bad name or no help", name);
        if (strcmp(s->name, "config") == 0 || strcmp(s->name, "help") == 0)
            return zb_diag_set(d, ZB_EINVAL, "setting %s: a name of the driver", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(table[j].name, s->name) == 0 ||
                (s->short_name && table[j].short_name == s->short_name))
                return zb_diag_set(d, ZB_EINVAL, "setting %s: named twice", name);
        size_t want = s_kind_size(s->kind);
        if (s->kind == ZB_SETTINGS_STRING ? s->size == 0 || s->max >= s->size : s->size != want)
            return zb_diag_set(d, ZB_EINVAL, "setting %s: field size %zu does not fit its kind",
                               name, s->size);
        bool empty =
            s->kind == ZB_SETTINGS_INT ? s_signed(s->min) > s_signed(s->max) : s->min > s->max;
        if (s->kind != ZB_SETTINGS_FLAG && s->kind != ZB_SETTINGS_ENUM && empty)
            return zb_diag_set(d, ZB_EINVAL, "setting %s: empty range", name);
        if ((s->kind == ZB_SETTINGS_U32 && s->max > UINT32_MAX) ||
            (s->kind == ZB_SETTINGS_INT &&
             (s_signed(s->min) < INT_MIN || s_signed(s->max) > INT_MAX)))
            return zb_diag_set(d, ZB_EINVAL, "setting %s: range outside its type", name);
        if (s->kind == ZB_SETTINGS_ENUM && (s->choices == NULL || s->choices[0] == NULL))
            return zb_diag_set(d, ZB_EINVAL, "setting %s: no choices", name);
        if (s->def != NULL) {
            /* Parse the default into scratch space of the field's size, so
             * that checking writes nothing the caller owns. */
            char why[S_WHY_MAX] = "";
            void *scratch = calloc(1, s->size);
            if (scratch == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
            zb_settings_t t = *s;
            t.off = 0;
            int rc = s_set_whole(&t, scratch, s->def, why);
            if (t.kind == ZB_SETTINGS_LIST) s_list_clear(scratch);
            free(scratch);
            if (rc != 0)
                return zb_diag_set(d, rc == ZB_ENOMEM ? rc : ZB_EINVAL, "setting %s: default: %s",
                                   name, rc == ZB_ENOMEM ? "out of memory" : why);
        }
    }
    return 0;
}

int zb_settings_default(const zb_settings_t *table, size_t n, void *base, zb_diag_t *d) {
    for (size_t i = 0; i < n; i++) {
        if (table[i].def == NULL) continue;
        char why[S_WHY_MAX] = "";
        int rc = s_set_whole(&table[i], base, table[i].def, why);
        if (rc == ZB_ENOMEM) return zb_diag_set(d, rc, "out of memory");
        if (rc != 0) return zb_diag_set(d, rc, "%s: default: %s", table[i].name, why);
    }
    return 0;
}

static const zb_settings_t *s_table_find(const zb_settings_t *table, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (s_same_key(table[i].name, name)) return &table[i];
    return NULL;
}

int zb_settings_set(const zb_settings_t *table, size_t n, void *base, const char *name,
                    const char *value, zb_diag_t *d) {
    const zb_settings_t *s = s_table_find(table, n, name);
    if (s == NULL) return zb_diag_set(d, ZB_ENOTFOUND, "%.64s: no such setting", name);
    char why[S_WHY_MAX] = "";
    int rc = s_set_whole(s, base, value, why);
    if (rc == ZB_ENOMEM) return zb_diag_set(d, rc, "out of memory");
    if (rc != 0) return zb_diag_set(d, rc, "%s: %s", s->name, why);
    return 0;
}

/* --- the driver ----------------------------------------------------------------- */

/* Setting number k (over all groups, in order): its table entry and group. */
typedef struct s_ref {
    const zb_settings_t *s;
    const zb_settings_group_t *g;
} s_ref_t;

static size_t s_refs(const zb_settings_program_t *p, s_ref_t *refs) {
    size_t k = 0;
    for (size_t g = 0; g < p->n_groups; g++)
        for (size_t i = 0; i < p->groups[g].n; i++, k++)
            if (refs && k < ZB_SETTINGS_MAX)
                refs[k] = (s_ref_t){&p->groups[g].table[i], &p->groups[g]};
    return k;
}

/* The setting of option argument a ("--name" or "-x"), or -1. */
static int s_option(const s_ref_t *refs, size_t n, const char *a) {
    for (size_t k = 0; k < n; k++) {
        if (a[1] == '-' ? strcmp(a + 2, refs[k].s->name) == 0
                        : refs[k].s->short_name && a[1] == refs[k].s->short_name && a[2] == '\0')
            return (int)k;
    }
    return -1;
}

static bool s_reads_files(const zb_settings_program_t *p) {
    for (size_t g = 0; g < p->n_groups; g++)
        if (!p->groups[g].argv_only && p->groups[g].n > 0) return true;
    return false;
}

/* Fails with "<where>: <why>". */
static int s_fail(zb_diag_t *d, int rc, const char *where, const char *why) {
    if (rc == ZB_ENOMEM) return zb_diag_set(d, rc, "out of memory");
    return zb_diag_set(d, rc, "%s: %s", where, why);
}

int zb_settings_parse(const zb_settings_program_t *p, int argc, char **argv,
                      zb_settings_result_t *res, zb_diag_t *d) {
    memset(res, 0, sizeof *res);
    s_ref_t refs[ZB_SETTINGS_MAX];
    size_t n = s_refs(p, refs);
    if (n > ZB_SETTINGS_MAX || p->args_max > ZB_SETTINGS_ARGS_MAX || p->args_min > p->args_max)
        return zb_diag_set(d, ZB_EINVAL, "%s: too many settings or arguments", p->name);
    for (size_t g = 0; g < p->n_groups; g++) {
        int rc = zb_settings_check(p->groups[g].table, p->groups[g].n, d);
        if (rc != 0) return rc;
    }
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            res->help = true;
            return 0;
        }
    }
    for (size_t g = 0; g < p->n_groups; g++) {
        int rc = zb_settings_default(p->groups[g].table, p->groups[g].n, p->groups[g].base, d);
        if (rc != 0) return rc;
    }

    /* The command line: the last value of each scalar is kept for later (it
     * wins over the other sources, and only the winner is parsed); list
     * entries are taken as they come, the first replacing the default. */
    const char *given[ZB_SETTINGS_MAX] = {0};
    char why[S_WHY_MAX] = "";
    char where[S_VAR_MAX + 8];
    bool files = s_reads_files(p), options = true;
    const char *config = NULL;
    int rc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && strcmp(a, "--") == 0) {
            options = false;
            continue;
        }
        if (!options || a[0] != '-' || a[1] == '\0') {
            if (res->n_args == p->args_max)
                return zb_diag_set(d, ZB_EINVAL, "unexpected argument `%.64s`", a);
            res->args[res->n_args++] = a;
            continue;
        }
        if (files && strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) return zb_diag_set(d, ZB_EINVAL, "--config needs a value");
            config = argv[++i];
            continue;
        }
        int k = s_option(refs, n, a);
        if (k < 0) {
            rc = p->hook ? p->hook(p->hook_ctx, argc, argv, &i, d) : 0;
            if (rc < 0) return rc;
            if (rc == 0) return zb_diag_set(d, ZB_EINVAL, "unknown option %.64s", a);
            continue;
        }
        const zb_settings_t *s = refs[k].s;
        const char *v = "true";
        if (s->kind != ZB_SETTINGS_FLAG) {
            if (i + 1 >= argc) return zb_diag_set(d, ZB_EINVAL, "--%s needs a value", s->name);
            v = argv[++i];
        }
        if (s->kind == ZB_SETTINGS_LIST) {
            zb_settings_list_t *l =
                (zb_settings_list_t *)(void *)((char *)refs[k].g->base + s->off);
            if (res->source[k] != ZB_SETTINGS_FROM_ARGV) s_list_clear(l);
            if ((rc = s_apply(s, refs[k].g->base, v, false, why)) != 0) {
                snprintf(where, sizeof where, "--%s", s->name);
                return s_fail(d, rc, where, why);
            }
        }
        given[k] = v;
        res->source[k] = ZB_SETTINGS_FROM_ARGV;
    }

    zb_settings_file_t *file = NULL;
    if (files) {
        if (config == NULL) config = getenv("ZBERT_CONFIG");
        if (config != NULL && *config == '\0') config = NULL;
        if ((rc = zb_settings_file_load(config, &file, d)) != 0) return rc;
        res->config = config;
    }
    rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        const zb_settings_t *s = refs[k].s;
        void *base = refs[k].g->base;
        if (res->source[k] == ZB_SETTINGS_FROM_ARGV) {
            snprintf(where, sizeof where, "--%s", s->name);
            rc = s->kind == ZB_SETTINGS_LIST ? s_list_count(s, base, why)
                                             : s_apply(s, base, given[k], false, why);
            if (rc != 0) rc = s_fail(d, rc, where, why);
            continue;
        }
        if (!refs[k].g->argv_only) {
            char var[S_VAR_MAX];
            const s_entry_t *e;
            const char *v = s_lookup(file, s->name, var, &e);
            if (e != NULL) {
                res->source[k] = ZB_SETTINGS_FROM_FILE;
            } else if (v != NULL) {
                res->source[k] = ZB_SETTINGS_FROM_ENV;
                snprintf(where, sizeof where, "%s", var);
            }
            if (v != NULL && (rc = s_set_whole(s, base, v, why)) != 0) {
                if (e != NULL)
                    rc = zb_diag_set(d, rc == ZB_ENOMEM ? rc : ZB_EINVAL, "%s:%d: %s: %s",
                                     file->path, e->line, s->name,
                                     rc == ZB_ENOMEM ? "out of memory" : why);
                else
                    rc = s_fail(d, rc, where, why);
                continue;
            }
        }
    }
    zb_settings_file_destroy(&file);
    /* Missing settings after bad values: a value given wrong is the
     * more useful thing to hear about first. */
    for (size_t k = 0; k < n && rc == 0; k++) {
        const zb_settings_t *s = refs[k].s;
        if ((s->flags & ZB_SETTINGS_REQUIRED) && res->source[k] == ZB_SETTINGS_FROM_DEFAULT)
            rc = zb_diag_set(d, ZB_EINVAL, "--%s %s is required", s->name,
                             s->value_name ? s->value_name : "VALUE");
    }
    if (rc == 0 && res->n_args < p->args_min)
        rc = zb_diag_set(d, ZB_EINVAL, "expected %s", p->args ? p->args : "more arguments");
    if (rc != 0) res->config = NULL;
    return rc;
}

zb_settings_source_t zb_settings_source(const zb_settings_program_t *p,
                                        const zb_settings_result_t *res, const char *name) {
    s_ref_t refs[ZB_SETTINGS_MAX];
    size_t n = s_refs(p, refs);
    for (size_t k = 0; k < n && k < ZB_SETTINGS_MAX; k++)
        if (s_same_key(refs[k].s->name, name)) return res->source[k];
    return ZB_SETTINGS_FROM_DEFAULT;
}

void zb_settings_release(const zb_settings_program_t *p) {
    for (size_t g = 0; g < p->n_groups; g++)
        for (size_t i = 0; i < p->groups[g].n; i++)
            if (p->groups[g].table[i].kind == ZB_SETTINGS_LIST)
                s_list_clear((zb_settings_list_t *)(void *)((char *)p->groups[g].base +
                                                            p->groups[g].table[i].off));
}

/* --- help ----------------------------------------------------------------------- */

#define S_HELP_COLUMN 30

/* "  -o, --output FILE" padded to the help column (or two spaces). */
static void s_help_option(FILE *f, const zb_settings_t *s) {
    char left[160];
    int n;
    if (s->short_name)
        n = snprintf(left, sizeof left, "  -%c, --%s", s->short_name, s->name);
    else
        n = snprintf(left, sizeof left, "  --%s", s->name);
    if (s->kind == ZB_SETTINGS_ENUM && s->value_name == NULL) {
        for (int i = 0; s->choices[i] && n > 0 && (size_t)n < sizeof left; i++)
            n += snprintf(left + n, sizeof left - (size_t)n, "%c%s", i ? '|' : ' ', s->choices[i]);
    } else if (s->kind != ZB_SETTINGS_FLAG) {
        snprintf(left + n, sizeof left - (size_t)n, " %s", s->value_name ? s->value_name : "VALUE");
    }
    if (strlen(left) + 2 <= S_HELP_COLUMN)
        fprintf(f, "%-*s%s", S_HELP_COLUMN, left, s->help);
    else
        fprintf(f, "%s  %s", left, s->help);
    /* the range, then the default */
    const char *sep = " (";
    if (s->kind == ZB_SETTINGS_INT) {
        fprintf(f, "%s%lld..%lld", sep, (long long)s_signed(s->min), (long long)s_signed(s->max));
        sep = "; ";
    } else if (s->kind == ZB_SETTINGS_U32 || s->kind == ZB_SETTINGS_U64) {
        fprintf(f, "%s%llu..%llu", sep, (unsigned long long)s->min, (unsigned long long)s->max);
        sep = "; ";
    } else if (s->kind == ZB_SETTINGS_LIST) {
        fprintf(f, "%srepeatable", sep);
        sep = "; ";
    } else if (s->kind == ZB_SETTINGS_ENUM && s->value_name != NULL) {
        for (int i = 0; s->choices[i]; i++) fprintf(f, "%s%s", i ? "|" : sep, s->choices[i]);
        sep = "; ";
    }
    if (s->flags & ZB_SETTINGS_REQUIRED) {
        fprintf(f, "%srequired", sep);
        sep = "; ";
    } else if (s->def != NULL && *s->def != '\0' &&
               !(s->kind == ZB_SETTINGS_FLAG && strcmp(s->def, "false") == 0)) {
        fprintf(f, "%sdefault %s", sep, s->def);
        sep = "; ";
    } else if (s->def_help != NULL) {
        fprintf(f, "%sdefault: %s", sep, s->def_help);
        sep = "; ";
    }
    fputs(sep[0] == ';' ? ")\n" : "\n", f);
}

void zb_settings_help(const zb_settings_program_t *p, FILE *f) {
    fprintf(f, "usage: %s", p->name);
    for (size_t g = 0; g < p->n_groups; g++)
        for (size_t i = 0; i < p->groups[g].n; i++) {
            const zb_settings_t *s = &p->groups[g].table[i];
            if (!(s->flags & ZB_SETTINGS_REQUIRED)) continue;
            if (s->short_name)
                fprintf(f, " -%c", s->short_name);
            else
                fprintf(f, " --%s", s->name);
            fprintf(f, " %s", s->value_name ? s->value_name : "VALUE");
        }
    fprintf(f, " [options]%s%s\n", p->args ? " " : "", p->args ? p->args : "");
    bool files = s_reads_files(p);
    if (files) {
        fputs("settings (each also ZBERT_<KEY> in the environment, KEY upper case with '_' for\n"
              "'-', and `key = value` in the config file):\n",
              f);
        for (size_t g = 0; g < p->n_groups; g++)
            for (size_t i = 0; i < p->groups[g].n && !p->groups[g].argv_only; i++)
                s_help_option(f, &p->groups[g].table[i]);
    }
    fputs("options:\n", f);
    for (size_t g = 0; g < p->n_groups; g++)
        for (size_t i = 0; i < p->groups[g].n && p->groups[g].argv_only; i++)
            s_help_option(f, &p->groups[g].table[i]);
    if (p->hook_help) fputs(p->hook_help, f);
    if (files)
        fprintf(f, "%-*s%s\n", S_HELP_COLUMN, "  --config FILE",
                "key = value settings (default: $ZBERT_CONFIG, if set)");
    fprintf(f, "%-*s%s\n", S_HELP_COLUMN, "  -h, --help", "this help");
    if (files) fputs("precedence: command line > environment > config file > default\n", f);
    if (p->about) fputs(p->about, f);
}
