/*
 * cliopt.h -- the embedding options zbert-embed (in process) and `zbert
 * embed` (through the service) share on their command lines: one settings
 * table (proto/settings), so that both take the same flags, values,
 * defaults and refusals, list them the same way in --help, and print the
 * same bytes for the same options.
 *
 *   --level wordpiece|token|sentence   --pooling cls|mean   --normalize
 *   --truncate | --windows             --sentences
 *   --token-vector first|mean          --compat none|sparknlp
 *   --input-format lines|jsonl         --format jsonl|npy|table|sparknlp-json
 *
 * They are command line only (no ZBERT_* variable, no config-file key):
 * they change what is written, which a file left in the environment must
 * not do behind a script's back.  --truncate and --windows set one field
 * and the last one given wins, which two flags of a table cannot say: they
 * are the hook's (zb_cliopt_hook), the rest are the table's.
 *
 * Defaults and combinations (zb_cliopt_finish):
 *   - the level is token, or sentence with --format npy (which holds one
 *     sentence vector per text and refuses any other level);
 *   - at token level (with vectors, without --compat) windows are on
 *     unless --truncate is given, so that every token gets a vector; the
 *     other levels truncate unless --windows is given;
 *   - --compat sparknlp is for the token level only, --sentences for the
 *     token and wordpiece levels, --format sparknlp-json for token vectors
 *     (and turns token metadata on: its annotations carry it).
 * Refusals are sentences in a zb_diag_t; the program prints them.
 *
 * The options land in a zb_options_t (options.h), the type the engine and
 * the wire take as they are (the values' names are options.h's); only what
 * the command line alone needs (which options were given, the input and
 * output formats) is this module's own.
 *
 * Thread-safety: the table is constant; no shared state.
 */
#ifndef ZB_CLIOPT_H
#define ZB_CLIOPT_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"
#include "options.h"
#include "settings.h"
#include "textio.h"

typedef struct zb_cliopt {
    zb_options_t opt;          /* the request's; opt.tokenize_only is set by a
                                * program that has --tokenize-only, before
                                * zb_cliopt_finish */
    bool level_set;            /* --level given (set by zb_cliopt_finish) */
    bool windows_set;          /* --truncate or --windows given */
    zb_textio_input_t input;   /* --input-format */
    zb_textio_format_t output; /* --format */
} zb_cliopt_t;

/* The defaults (a zeroed struct is the same). */
void zb_cliopt_init(zb_cliopt_t *o);

/*
 * The shared options' table, filling a zb_cliopt_t; *n gets its length.
 * A program lists it as a group {table, n, &cliopt, true} (command line
 * only), sets zb_cliopt_hook as its hook with the zb_cliopt_t as hook_ctx
 * and zb_cliopt_hook_help as hook_help.  Static; never NULL.
 */
const zb_settings_t *zb_cliopt_table(size_t *n);

/*
 * zb_settings_hook_t for --truncate and --windows; ctx is the zb_cliopt_t.
 * Returns 1 for one of them (*i unchanged: they take no value), 0 for any
 * other argument (nothing changed).
 */
int zb_cliopt_hook(void *ctx, int argc, char **argv, int *i, zb_diag_t *d);

/* --help lines of the hook's options. */
extern const char zb_cliopt_hook_help[];

/*
 * After zb_settings_parse() of p (which lists zb_cliopt_table's group for
 * o) returned 0 into res: records whether --level was given, applies the
 * defaults that depend on other options and refuses the combinations that
 * cannot work (see above).  Returns 0, or ZB_EINVAL with d saying why in
 * the command line's words.
 */
int zb_cliopt_finish(zb_cliopt_t *o, const zb_settings_program_t *p,
                     const zb_settings_result_t *res, zb_diag_t *d);

#endif
