/*
 * config.h -- what a BERT model is, apart from its weights: the architecture
 * (Hugging Face BertConfig) and the tokenizer settings, parsed and validated
 * from their JSON, and the vocabulary file's sanity check.
 *
 * Every field read from a file is checked against limits.h before anything
 * is sized from it.  The model loader and the bundle reader both depend on
 * this module; it depends on neither.
 *
 * Thread-safety: pure functions over caller-owned memory.
 */
#ifndef ZB_ENGINE_CONFIG_H
#define ZB_ENGINE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct zb_config {
    int vocab_size;      /* rows of the word embedding */
    int hidden;          /* H, width of every activation row */
    int layers;          /* encoder layers */
    int heads;           /* attention heads; hidden % heads == 0 */
    int intermediate;    /* FFN width */
    int max_positions;   /* rows of the position embedding (512) */
    int type_vocab_size; /* rows of the token type embedding (2) */
    float layer_norm_eps;
} zb_config_t;

typedef struct zb_config_tokenizer {
    bool lowercase;     /* do_lower_case (uncased models) */
    bool strip_accents; /* NFD + drop Mn; defaults to lowercase, as in HF */
} zb_config_tokenizer_t;

/*
 * Parses and validates a Hugging Face BERT config.json held in json[0..len)
 * into *c (src names the file in messages).  Every field is checked against
 * limits.h, hidden % heads == 0, hidden_act must be "gelu", model_type (if
 * present) "bert"; absent optional fields take BertConfig's defaults
 * (max_position_embeddings 512, type_vocab_size 2, layer_norm_eps 1e-12).
 * Returns 0 or ZB_EFORMAT / ZB_ELIMIT / ZB_EUNSUPPORTED with d set.
 */
int zb_config_parse(const char *json, size_t len, const char *src, zb_config_t *c, zb_diag_t *d);

/* Checks a vocab.txt image: 1..vocab_size lines, no NUL byte, no line longer
 * than ZB_VOCAB_ENTRY_BYTES_MAX.  Returns 0 or ZB_EFORMAT / ZB_ELIMIT. */
int zb_config_vocab_check(const char *v, size_t len, int vocab_size, const char *src, zb_diag_t *d);

/* Parses a Hugging Face tokenizer_config.json held in json[0..len) into *t:
 * do_lower_case defaults to false (cased), strip_accents follows
 * do_lower_case unless set (BertTokenizer semantics).  Returns 0 or
 * ZB_EFORMAT / ZB_ELIMIT with d set. */
int zb_config_parse_tokenizer(const char *json, size_t len, const char *src,
                              zb_config_tokenizer_t *t, zb_diag_t *d);

#endif
