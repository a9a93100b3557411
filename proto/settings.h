/*
 * settings.h -- settings from a config file and ZBERT_* environment variables.
 *
 * A config file holds `key = value` lines; `#` starts a comment; blank lines
 * are ignored; keys are [a-z0-9_-]; values are trimmed and taken literally
 * (a list is comma-separated, e.g. `broker = tcp://a:5556, tcp://b:5556`).
 * A key given twice keeps its last value.
 *
 * Precedence, highest first: the command line (the caller's business), the
 * environment (ZBERT_<KEY> with the key upper-cased and '-' as '_'), the
 * file, the built-in default.  The deploy/ folder has an example config of
 * each program documenting every key.
 *
 * Thread-safety: a loaded config is immutable.
 */
#ifndef ZB_SETTINGS_H
#define ZB_SETTINGS_H

#include "error.h"

typedef struct zb_conf zb_conf_t;

/* Loads path (NULL: an empty config).  Lines over 4 KiB, keys with other
 * characters and lines without '=' are errors naming the line.  *out is the
 * caller's, released with zb_conf_destroy(). */
int zb_conf_load(const char *path, zb_conf_t **out, zb_diag_t *d);

void zb_conf_destroy(zb_conf_t **c);

/* The value of key: from the environment, else the file, else NULL.
 * Borrowed: valid until zb_conf_destroy() (or until the environment
 * changes, for environment values). c may be NULL (environment only). */
const char *zb_conf_get(const zb_conf_t *c, const char *key);

#endif
