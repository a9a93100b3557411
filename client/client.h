/*
 * client.h -- the client library's internal side: where the public API's
 * types (zbert.h) meet the internal ones (options.h), for the library
 * itself and for the programs linked with its static archive (zbert).
 *
 * zbert.h must stand alone, so it spells the options and token metadata
 * its own way (zbert_options_t, zbert_level_t, ..., the per-row arrays of
 * zbert_text_t), with the same values as options.h.  The conversions
 * between the two are these functions and nothing else: no enum is ever
 * cast into another.  Nothing here is exported from libzbert.so (its
 * version script keeps only zbert_* symbols).
 *
 * Thread-safety: no state; every function is re-entrant.
 */
#ifndef ZB_CLIENT_H
#define ZB_CLIENT_H

#include <stddef.h>

#include "error.h"
#include "options.h"
#include "zbert.h"

/*
 * The internal options of public options in: every field but deadline_ms
 * (the request's, not the options'), tokenize_only false.  Returns 0, or
 * ZB_EINVAL when a field holds no value of its type or the options break a
 * rule of options.h (d says which, in the public API's words; d may be
 * NULL); *out is then unspecified.
 */
int zb_client_options_from_public(const zbert_options_t *in, zb_options_t *out, zb_diag_t *d);

/* The public options of internal options in (deadline_ms 0; tokenize_only,
 * which the service does not carry, dropped).  Values out of range map to
 * the defaults. */
void zb_client_options_to_public(const zb_options_t *in, zbert_options_t *out);

/* The public level of an internal one (out of range: the token level). */
zbert_level_t zb_client_level_to_public(zb_level_t level);

/*
 * The token metadata of a text received through the service, t's per-row
 * arrays, as meta[0..t->n_rows) (the caller's): sentence, piece_id (-1 when
 * oov), word_start, oov; row 0 and begin16 = end16 = -1 (the service sends
 * no UTF-16 spans: the text's owner computes them).  Returns false, writing
 * nothing, when t carries no metadata.
 */
bool zb_client_token_meta(const zbert_text_t *t, zb_token_meta_t *meta);

#endif
