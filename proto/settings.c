/*
 * settings.c -- key = value config files with environment overrides.
 */
#include "settings.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_LINE_MAX 4096
#define S_KEYS_MAX 256 /* a config has ~20 keys; bounds a hostile file */

typedef struct s_entry {
    char *key, *value;
} s_entry_t;

struct zb_conf {
    s_entry_t e[S_KEYS_MAX];
    int n;
};

static char *s_trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

static int s_set(zb_conf_t *c, const char *key, const char *value) {
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->e[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL) return ZB_ENOMEM;
            free(c->e[i].value);
            c->e[i].value = v;
            return 0;
        }
    }
    if (c->n == S_KEYS_MAX) return ZB_ELIMIT;
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return ZB_ENOMEM;
    }
    c->e[c->n++] = (s_entry_t){k, v};
    return 0;
}

int zb_conf_load(const char *path, zb_conf_t **out, zb_diag_t *d) {
    *out = NULL;
    zb_conf_t *c = calloc(1, sizeof *c);
    if (c == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    if (path == NULL) {
        *out = c;
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        zb_conf_destroy(&c);
        return zb_diag_set(d, ZB_ENOTFOUND, "%s: cannot open", path);
    }
    char line[S_LINE_MAX + 2];
    int rc = 0, no = 0;
    while (fgets(line, sizeof line, f)) {
        no++;
        size_t len = strlen(line);
        if (len > S_LINE_MAX && line[len - 1] != '\n') {
            rc = zb_diag_set(d, ZB_ELIMIT, "%s:%d: line longer than %d bytes", path, no,
                             S_LINE_MAX);
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
        rc = s_set(c, key, value);
        if (rc != 0) {
            zb_diag_set(d, rc, "%s:%d: %s", path, no, zb_strerror(rc));
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        zb_conf_destroy(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void zb_conf_destroy(zb_conf_t **pc) {
    if (pc == NULL || *pc == NULL) return;
    for (int i = 0; i < (*pc)->n; i++) {
        free((*pc)->e[i].key);
        free((*pc)->e[i].value);
    }
    free(*pc);
    *pc = NULL;
}

const char *zb_conf_get(const zb_conf_t *c, const char *key) {
    char env[128] = "ZBERT_";
    size_t n = strlen(env);
    for (const char *k = key; *k && n + 1 < sizeof env; k++)
        env[n++] = *k == '-' ? '_' : (char)toupper((unsigned char)*k);
    env[n] = '\0';
    const char *v = getenv(env);
    if (v != NULL) return v;
    if (c == NULL) return NULL;
    for (int i = c->n - 1; i >= 0; i--)
        if (strcmp(c->e[i].key, key) == 0) return c->e[i].value;
    return NULL;
}
