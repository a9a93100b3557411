/*
 * settings.h -- every program's settings: one typed table per program, one
 * driver that fills the program's struct from the command line, ZBERT_*
 * environment variables and a config file, and --help generated from the
 * same table, so that options, variables, file keys and help never disagree.
 *
 * A setting has one name, e.g. "queue-texts-max", which is
 *   - the option --queue-texts-max VALUE (a flag takes no value),
 *   - the environment variable ZBERT_QUEUE_TEXTS_MAX (upper case, '-' as '_'),
 *   - the config-file key queue-texts-max (queue_texts_max is the same key).
 * Precedence, highest first: the command line, the environment, the file
 * (--config FILE, else $ZBERT_CONFIG), the table's default.  Only the value
 * that wins is parsed: a bad value below a good one is never seen.
 *
 * A config file holds `key = value` lines; `#` starts a comment; blank lines
 * are ignored; keys are [a-z0-9_-]; values are trimmed and taken literally
 * (a list is comma-separated, e.g. `broker = tcp://a:5556, tcp://b:5556`).
 * A key given twice keeps its last value.  Keys no table of the program
 * names are ignored (one file may serve several programs or subcommands);
 * unknown options on the command line are refused.
 *
 * Kinds and where they land (the field at `off` in the struct of `base`):
 *   STRING  char[size], length min..max (max < size)
 *   U32     uint32_t, decimal, min..max
 *   U64     uint64_t, decimal, min..max
 *   INT     int, decimal with an optional '-', min..max
 *   FLAG    bool; alone on the command line; true|false|yes|no|on|off|1|0
 *           in the file and the environment
 *   LIST    zb_settings_list_t; the option may be repeated (the command
 *           line's entries replace the others), the file and the environment
 *           give one comma-separated value; entries are trimmed, empty ones
 *           dropped; min..max entries
 *   ENUM    int: one of choices (NULL-terminated), stored as its index or
 *           values[index]
 *
 * Invariant: once zb_settings_parse() returns 0 every setting holds its
 * default or a value in range from its winning source.  Lists own their
 * entries until zb_settings_release().
 *
 * Thread-safety: tables are constant; a parse writes only the program's
 * structs and the result, which belong to the caller (settings are written
 * once, in main).  A loaded file is immutable.
 */
#ifndef ZB_SETTINGS_H
#define ZB_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "log.h"

/* --- config files --------------------------------------------------------- */

typedef struct zb_settings_file zb_settings_file_t;

/* Loads path (NULL: an empty config).  Lines over 4 KiB, keys with other
 * characters and lines without '=' are errors naming the line.  *out is the
 * caller's, released with zb_settings_file_destroy(). */
int zb_settings_file_load(const char *path, zb_settings_file_t **out, zb_diag_t *d);

/* Frees the file and nulls *f.  NULL-safe. */
void zb_settings_file_destroy(zb_settings_file_t **f);

/* The value of key: from the environment (ZBERT_<KEY>), else the file (its
 * keys matched as the driver matches them: '-' and '_' alike, the latest
 * line winning), else NULL.  Borrowed: valid until zb_settings_file_destroy()
 * (or until the environment changes, for environment values).  f may be NULL
 * (environment only). */
const char *zb_settings_file_get(const zb_settings_file_t *f, const char *key);

/* --- tables ----------------------------------------------------------------- */

typedef enum zb_settings_kind {
    ZB_SETTINGS_STRING,
    ZB_SETTINGS_U32,
    ZB_SETTINGS_U64,
    ZB_SETTINGS_INT,
    ZB_SETTINGS_FLAG,
    ZB_SETTINGS_LIST,
    ZB_SETTINGS_ENUM,
} zb_settings_kind_t;

/* Where a LIST lands: malloc'd entries, owned by the struct that holds it
 * until zb_settings_release(). */
typedef struct zb_settings_list {
    char **items; /* [n], NUL-terminated strings */
    size_t n;
} zb_settings_list_t;

/* Per-setting flags. */
enum {
    ZB_SETTINGS_REQUIRED = 1u << 0, /* parsing fails when no source gives it */
};

/* One setting.  Fill with designated initializers and ZB_SETTINGS_AT. */
typedef struct zb_settings {
    const char *name;           /* [a-z0-9-]: option, key and variable */
    zb_settings_kind_t kind;    /* see the file comment */
    size_t off, size;           /* the field's offsetof and sizeof */
    uint64_t min, max;          /* numbers: range (INT: a negative bound is
                                 * written as such, e.g. .min = -5); STRING:
                                 * length; LIST: entries */
    const char *def;            /* the default as text, parsed like any value;
                                 * NULL: the field keeps what the caller put
                                 * there before zb_settings_parse() */
    const char *def_help;       /* help's default when def is NULL, or NULL */
    const char *value_name;     /* "N", "EP" in help (ENUM: its choices) */
    const char *help;           /* one line, no final period */
    const char *const *choices; /* ENUM: NULL-terminated */
    const int *values;          /* ENUM: stored value per choice; NULL: index */
    char short_name;            /* -X on the command line, or 0 */
    unsigned flags;             /* ZB_SETTINGS_REQUIRED */
} zb_settings_t;

/* .off and .size of field f of struct type t. */
#define ZB_SETTINGS_AT(t, f) .off = offsetof(t, f), .size = sizeof(((t *)0)->f)

/* The log-level setting every program has, into int field f of t, with
 * its default level (a name of zb_log_level_names) and help line. */
#define ZB_SETTINGS_LOG_LEVEL(t, f, default_level, help_line)                                      \
    {                                                                                              \
        .name = "log-level", .kind = ZB_SETTINGS_ENUM, ZB_SETTINGS_AT(t, f), .def = default_level, \
        .choices = zb_log_level_names, .value_name = "LEVEL", .help = help_line                    \
    }

/* One table and the struct its offsets point into.  A program may have
 * several (its own, a library's), parsed together as one command line. */
typedef struct zb_settings_group {
    const zb_settings_t *table;
    size_t n;
    void *base;
    bool argv_only; /* command line only: no variable, no file key */
} zb_settings_group_t;

/*
 * Options outside the tables: called with argv[*i], an option no table
 * knows.  Returns 1 when it is one of its own (consumed, *i advanced past
 * any value it took), 0 when not (then it is refused as unknown), or a
 * negative ZB_E* code with d set.
 */
typedef int (*zb_settings_hook_t)(void *ctx, int argc, char **argv, int *i, zb_diag_t *d);

/* Positional arguments one parse hands back at most; settings of one
 * program at most. */
#define ZB_SETTINGS_ARGS_MAX 16
#define ZB_SETTINGS_MAX      128

/* A program's command line. */
typedef struct zb_settings_program {
    const char *name;  /* "zbert-broker", "zbert-model random": messages, help */
    const char *args;  /* positional arguments for the usage line ("SOURCE"), or NULL */
    int args_min;      /* positional arguments required */
    int args_max;      /* allowed, <= ZB_SETTINGS_ARGS_MAX */
    const char *about; /* text printed after the options in --help, or NULL */
    const zb_settings_group_t *groups;
    size_t n_groups;
    zb_settings_hook_t hook; /* or NULL */
    void *hook_ctx;          /* passed to hook */
    const char *hook_help;   /* help lines of the hook's options ("  --x  ...\n"), or NULL */
} zb_settings_program_t;

typedef enum zb_settings_source {
    ZB_SETTINGS_FROM_DEFAULT = 0,
    ZB_SETTINGS_FROM_FILE,
    ZB_SETTINGS_FROM_ENV,
    ZB_SETTINGS_FROM_ARGV,
} zb_settings_source_t;

/* What a parse found besides the settings. */
typedef struct zb_settings_result {
    bool help;                              /* -h or --help: nothing else was done */
    const char *args[ZB_SETTINGS_ARGS_MAX]; /* positional arguments, borrowed from argv */
    int n_args;
    const char *config;                           /* the file read (borrowed), or NULL */
    zb_settings_source_t source[ZB_SETTINGS_MAX]; /* per setting, groups in order */
} zb_settings_result_t;

/*
 * Checks a table against the rules above (names, kinds against field
 * sizes, ranges, choices, defaults that parse): a table that fails is a
 * programmer error.  Returns 0 or ZB_EINVAL with d naming the setting.
 */
int zb_settings_check(const zb_settings_t *table, size_t n, zb_diag_t *d);

/*
 * Sets every setting of the table that has a default to it, in base.
 * Returns 0 or ZB_EINVAL (a default that does not parse) / ZB_ENOMEM.
 */
int zb_settings_default(const zb_settings_t *table, size_t n, void *base, zb_diag_t *d);

/*
 * Sets one setting, named by name (option/key spelling, '_' or '-'), from
 * its text value, checking syntax and range.  A LIST takes a comma-separated
 * value and replaces its entries.  Returns 0, ZB_ENOTFOUND (no such
 * setting) or ZB_EINVAL (bad value), d naming the setting and the problem;
 * ZB_ENOMEM.
 */
int zb_settings_set(const zb_settings_t *table, size_t n, void *base, const char *name,
                    const char *value, zb_diag_t *d);

/*
 * The driver.  Applies the defaults of every group, then reads argv[1..argc)
 * and, unless every group is argv_only, the environment and the config file
 * (--config FILE, else $ZBERT_CONFIG), and sets every setting from the
 * source that wins.  --help or -h anywhere stops it (res->help; nothing else
 * set); "--" ends the options.  Positional arguments land in res->args.
 *
 * Returns 0, or ZB_EINVAL with d naming the option and where it came from
 * ("--queue-texts-max: 0 is outside 1..1000000000", "ZBERT_CLIENT_HWM: ...",
 * "/etc/zbert/broker.conf:12: client-hwm: ..."; unknown options, missing
 * values, required settings, too many or too few arguments), ZB_ENOTFOUND
 * or ZB_EFORMAT for the config file, a hook's code, or ZB_ENOMEM.  Call
 * zb_settings_release() afterwards whatever it returned.
 */
int zb_settings_parse(const zb_settings_program_t *p, int argc, char **argv,
                      zb_settings_result_t *res, zb_diag_t *d);

/* Where setting name (of any group of p) came from in res; DEFAULT for an
 * unknown name. */
zb_settings_source_t zb_settings_source(const zb_settings_program_t *p,
                                        const zb_settings_result_t *res, const char *name);

/*
 * Writes p's help to f: the usage line, one line per setting (option, value
 * name, help, range, default), the command-line-only options, --config and
 * --help, the hook's lines, then p->about.
 */
void zb_settings_help(const zb_settings_program_t *p, FILE *f);

/* Frees the entries of every LIST of p's groups and empties them.
 * Idempotent. */
void zb_settings_release(const zb_settings_program_t *p);

#endif
