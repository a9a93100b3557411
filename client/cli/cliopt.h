/*
 * cliopt.h -- the embedding options zbert-embed (in process) and `zbert
 * embed` (through the service) share on their command lines: one parser,
 * so that both take the same flags, values, defaults and refusals, and
 * print the same bytes for the same options.
 *
 *   --level wordpiece|token|sentence   --pooling cls|mean   --normalize
 *   --truncate | --windows             --sentences
 *   --token-vector first|mean          --compat none|sparknlp
 *   --input-format lines|jsonl         --format jsonl|npy|table|sparknlp-json
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
 * Messages go to stderr as "<prog>: ..." lines, one per refusal.
 *
 * The options land in a zb_options_t (options.h), the type the engine and
 * the wire take as they are (the values' names are options.h's); only what
 * the command line alone needs (which options were given, the input and
 * output formats) is this module's own.
 *
 * Thread-safety: no shared state.
 */
#ifndef ZB_CLIOPT_H
#define ZB_CLIOPT_H

#include <stdbool.h>

#include "options.h"
#include "textio.h"

typedef struct zb_cliopt {
    zb_options_t opt;          /* the request's; opt.tokenize_only is set by a
                                * program that has --tokenize-only, before
                                * zb_cliopt_finish */
    bool level_set;            /* --level given */
    bool windows_set;          /* --truncate or --windows given */
    zb_textio_input_t input;   /* --input-format */
    zb_textio_format_t output; /* --format */
} zb_cliopt_t;

/* The defaults (a zeroed struct is the same). */
void zb_cliopt_init(zb_cliopt_t *o);

/*
 * Tries argv[*i] (i < argc) as one of the shared options.  Returns 1 when it
 * is one (its value, argv[*i + 1], is taken and *i advanced past it), 0
 * when it is not (nothing changed), -1 when its value is missing or not one
 * of those allowed (a line "<prog>: ..." on stderr).
 */
int zb_cliopt_arg(zb_cliopt_t *o, int argc, char **argv, int *i, const char *prog);

/*
 * After every argument: applies the defaults that depend on other options
 * and refuses the combinations that cannot work (see above).  Returns 0, or
 * -1 after a line "<prog>: ..." on stderr.
 */
int zb_cliopt_finish(zb_cliopt_t *o, const char *prog);

#endif
