/*
 * json.h -- strict helpers over cJSON for the JSON found in model files
 * (safetensors headers, config.json, bundle manifests).
 *
 * Model files are untrusted: a document must be one JSON value and nothing
 * else, integers must be exact, and names echoed in error messages must not
 * carry control bytes into a terminal or a log.
 *
 * Thread-safety: pure functions.
 */
#ifndef ZB_JSON_H
#define ZB_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* Parses json[0..len) as exactly one JSON value (trailing whitespace
 * allowed, anything else refused: cJSON alone accepts trailing garbage).
 * Returns the tree (the caller's, cJSON_Delete it) or NULL. */
cJSON *zb_json_parse_exact(const char *json, size_t len);

/* A JSON number that is an exact non-negative integer <= 2^53 (the range
 * where a double holds every integer, far beyond any size we accept). */
bool zb_json_uint(const cJSON *v, uint64_t *out);

/*
 * Reads a tensor shape: js must be an array of at most ZB_TENSOR_DIMS_MAX
 * exact non-negative integers whose product, times elem_size bytes, fits a
 * size_t.  Fills shape[0..*n_dims) and *n_elems.  On failure returns a
 * ZB_E* code with d naming "<src>: tensor <name>: ..." and what is wrong.
 */
int zb_json_shape(const cJSON *js, size_t elem_size, const char *src, const char *name,
                  int64_t *shape, int *n_dims, uint64_t *n_elems, zb_diag_t *d);

/* Copies at most 64 bytes of s into buf for an error message, printable
 * ASCII kept and every other byte shown as '?', "..." when cut.  Returns buf. */
const char *zb_json_printable(const char *s, char *buf, size_t cap);

#endif
