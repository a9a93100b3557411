/*
 * fixture.h -- readers for the reference fixtures (tests only).
 *
 * Two line formats, described in tests/fixtures/README.md:
 *   BERTTOK 1   tokenization cases: text, ids, byte and char offsets;
 *   BERTFIX 1   embedding cases: the same plus last_hidden_state, the
 *               Spark-style token rows and the pooled vectors.
 * A fixture file is read whole; cases point into arrays it owns.
 * Also the tests' one random generator (fx_rng_t), for data they draw.
 */
#ifndef ZB_TEST_FIXTURE_H
#define ZB_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fx_case {
    int index;
    char name[64]; /* case name (BERTFIX) or source (BERTTOK) */
    char *text;    /* NUL-terminated copy; may hold NULs: use text_len */
    size_t text_len;
    int n_ids;                    /* T, with [CLS] and [SEP] */
    int32_t *ids;                 /* [T] */
    uint32_t *byte_off;           /* [T][2] */
    uint32_t *char_off;           /* [T][2] */
    int hidden_rows, hidden_cols; /* BERTFIX only, else 0 */
    float *hidden;                /* [rows][cols] */
    int n_tokens;                 /* Spark-style tokens */
    uint32_t *tokens;             /* [n][3]: byte_begin byte_end wordpiece_index */
    float *pooled_cls, *pooled_mean, *pooled_mean_all, *pooled_token_mean; /* [cols] */
} fx_case_t;

typedef struct fx_file {
    int n;
    fx_case_t *cases;
} fx_file_t;

/* Path of a file under the fixtures folder ($ZB_FIXTURES or tests/fixtures);
 * returns a static buffer. */
const char *fx_path(const char *name);

/* Reads a whole file; returns malloc'd bytes (NUL appended) or NULL. */
char *fx_read_file(const char *path, size_t *len);

/* Parses a BERTTOK or BERTFIX file; returns 0 or -1 (message on stderr). */
int fx_load(const char *path, fx_file_t *out);
void fx_free(fx_file_t *f);

/* Every case's ids back to back in *ids and each case's count in *lens
 * (both malloc'd, the caller's); returns the total, or -1 when out of
 * memory.  A batch of all the cases, ready for zb_bert_forward(). */
int fx_all_ids(const fx_file_t *f, int32_t **ids, int **lens);

/* splitmix64: random numbers that are the same on every platform, unlike
 * rand(), for tests that draw their data. */
typedef struct fx_rng {
    uint64_t s; /* the seed, then the state */
} fx_rng_t;

uint64_t fx_rng_next(fx_rng_t *r);

#endif
