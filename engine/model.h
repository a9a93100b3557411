/*
 * model.h -- a BERT model ready for the forward pass: architecture, tokenizer
 * settings, vocabulary and fp32 weights.
 *
 * A model is opened from either
 *   - a zbert bundle (.zbm, see bundle.h): the weights are read-only views
 *     into one shared mmap of the file, never copied, so every process on a
 *     node that opens the same bundle shares one physical copy; or
 *   - a Hugging Face directory (config.json, vocab.txt, model.safetensors,
 *     optional tokenizer_config.json): F32 tensors that are 4-byte aligned are
 *     views into the mapped safetensors file; F16/BF16 ones are widened into
 *     memory the model owns.
 *
 * The linear layers run on weights in the packed panel layout of gemm.h.  A
 * bundle written by this version stores them packed (Q, K and V stacked into
 * one [3H][H] matrix), so they are views into the mapping like every other
 * tensor.  A Hugging Face directory, or a bundle of the older plain layout,
 * is packed at load time into memory the model owns
 * (zb_model_packed_at_load() tells; re-converting the bundle avoids it).
 *
 * Everything read from disk is untrusted and validated (names, dtypes,
 * shapes, offsets) before a single weight pointer is handed out; a failure is
 * reported through zb_diag_t with the name of what is wrong.
 *
 * Thread-safety: an open model is immutable; any number of threads may use
 * it concurrently.
 */
#ifndef ZB_MODEL_H
#define ZB_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bundle.h"
#include "config.h"
#include "error.h"
#include "gemm.h"
#include "qgemm.h"
#include "safetensors.h"

/* Weights of one encoder layer.  Plain linear weights are [out][in]
 * row-major (PyTorch layout): y = x W^T + b. */
typedef struct zb_model_layer {
    /* Plain matrices: set when the source holds them plain (Hugging Face
     * directory, plain-layout bundle); NULL for a packed bundle.  Biases
     * and LayerNorm vectors are always set (q_b, k_b, v_b may be views into
     * qkv_b). */
    const float *q_w, *q_b;               /* [H][H], [H] */
    const float *k_w, *k_b;               /* [H][H], [H] */
    const float *v_w, *v_b;               /* [H][H], [H] */
    const float *attn_out_w, *attn_out_b; /* [H][H], [H] */
    const float *attn_ln_g, *attn_ln_b;   /* [H], [H] */
    const float *ffn_in_w, *ffn_in_b;     /* [I][H], [I] */
    const float *ffn_out_w, *ffn_out_b;   /* [H][I], [H] */
    const float *ffn_ln_g, *ffn_ln_b;     /* [H], [H] */
    /* What the forward pass runs on: the fp32 packed operands, or (int8
     * set: a quantized bundle) the int8 ones; the other four are zero. */
    zb_gemm_w_t qkv;      /* packed [3H][H]: rows of Q, then K, then V */
    const float *qkv_b;   /* [3H]: q_b, k_b, v_b back to back */
    zb_gemm_w_t attn_out; /* packed [H][H] */
    zb_gemm_w_t ffn_in;   /* packed [I][H] */
    zb_gemm_w_t ffn_out;  /* packed [H][I] */
    bool int8;
    zb_qgemm_w_t qkv_q8, attn_out_q8, ffn_in_q8, ffn_out_q8; /* same shapes, qgemm.h */
} zb_model_layer_t;

typedef struct zb_model_weights {
    const float *word;                /* [vocab_size][H] */
    const float *position;            /* [max_positions][H] */
    const float *token_type;          /* [type_vocab_size][H] */
    const float *emb_ln_g, *emb_ln_b; /* [H], [H] */
    const zb_model_layer_t *layer;    /* [layers] */
} zb_model_weights_t;

typedef struct zb_model zb_model_t;

/*
 * Opens a model from a .zbm bundle or a Hugging Face directory (decided by
 * whether path is a directory).  On success *out is the caller's, to be
 * released with zb_model_close().  On failure returns a ZB_E* code, *out is
 * NULL, and d (may be NULL) names the problem.
 */
int zb_model_open(const char *path, zb_model_t **out, zb_diag_t *d);

/* Releases the model and nulls *m. Accepts NULL and *m == NULL. */
void zb_model_close(zb_model_t **m);

/* Borrowed views, valid until zb_model_close(). */
const zb_config_t *zb_model_config(const zb_model_t *m);
const zb_config_tokenizer_t *zb_model_tokenizer_config(const zb_model_t *m);
const zb_model_weights_t *zb_model_weights(const zb_model_t *m);

/* The vocabulary file's bytes (vocab.txt: one token per line, id = line). */
const char *zb_model_vocab(const zb_model_t *m, size_t *len);

/* A short identity of the weights: hex of the first 8 bytes of their
 * SHA-256 for a bundle, "hf:<dir basename>" for a directory. */
const char *zb_model_identity(const zb_model_t *m);

/* One weight tensor under its canonical name: no "bert." prefix, LayerNorm
 * parameters as weight/bias ("encoder.layer.0.attention.self.query.weight"). */
typedef struct zb_model_tensor {
    char name[96];                /* canonical name, NUL-terminated */
    zb_safetensors_dtype_t dtype; /* F32; I8 (panel-q8 matrices); I32 (their row sums) */
    int n_dims;                   /* 1 or 2 */
    int64_t shape[2];             /* logical shape; shape[1] is 0 when n_dims == 1 */
    size_t n_elems;               /* product of the shape */
    bool packed;                  /* layout is a panel one (n_dims == 2) */
    zb_bundle_layout_t layout;
    size_t
        n_stored;  /* elements at data: n_elems, zb_gemm_packed_floats(), zb_qgemm_packed_bytes() */
    size_t nbytes; /* bytes at data: n_stored x the dtype's size */
    const void *data; /* borrowed view, valid until zb_model_close() */
} zb_model_tensor_t;

/* Number of weight tensors the model's source holds: 5 embedding tensors +
 * 16 per layer (plain: Hugging Face directory or plain-layout bundle) or 12
 * per layer (packed bundle). */
int zb_model_n_tensors(const zb_model_t *m);

/* Fills *out with tensor i (0 <= i < zb_model_n_tensors(m)) of the source's
 * table: the plain table of zb_model_tensor_spec(), or the packed table of
 * zb_model_packed_spec().  Returns 0, or ZB_EINVAL when i is out of range. */
int zb_model_tensor_at(const zb_model_t *m, int i, zb_model_tensor_t *out);

/* The plain (Hugging Face) table for a config alone (data is NULL): tensor i
 * of 5 + 16 * c->layers in canonical order: embeddings (word, position,
 * token type, LayerNorm weight, bias), then each layer (query, key, value,
 * attention output, attention LayerNorm, intermediate, output, output
 * LayerNorm; weight before bias).  Returns 0 or ZB_EINVAL.  Writers use it
 * to produce files a loader accepts. */
int zb_model_tensor_spec(const zb_config_t *c, int i, zb_model_tensor_t *out);

/* The packed table (what a bundle stores), 5 + 12 * c->layers tensors: the
 * embeddings as above, then per layer attention.self.qkv.weight (packed
 * [3H][H]) and .bias ([3H]), attention.output.dense.weight (packed) and
 * .bias, attention.output.LayerNorm.weight/.bias, intermediate.dense.weight
 * (packed) and .bias, output.dense.weight (packed) and .bias,
 * output.LayerNorm.weight/.bias.  zb_model_packed_spec() describes tensor i
 * for a config (data NULL); zb_model_packed_at() gives it with the data of
 * an open model, whatever its source.  Both return 0 or ZB_EINVAL. */
int zb_model_n_packed(const zb_config_t *c);
int zb_model_packed_spec(const zb_config_t *c, int i, zb_model_tensor_t *out);
int zb_model_packed_at(const zb_model_t *m, int i, zb_model_tensor_t *out);

/* The int8 table (what a quantized bundle stores), 5 + 24 * c->layers
 * tensors: the packed table with each packed matrix W replaced by four
 * tensors: W in the panel-q8 layout (I8), W_scale ([N] F32: "...weight_scale"),
 * W_sum ([N] I32: "...weight_sum") and W_smooth ([K] F32: "...weight_smooth",
 * the activation multipliers), see qgemm.h.  As above. */
int zb_model_n_int8(const zb_config_t *c);
int zb_model_int8_spec(const zb_config_t *c, int i, zb_model_tensor_t *out);
int zb_model_int8_at(const zb_model_t *m, int i, zb_model_tensor_t *out);

/* True when the model's linear layers are int8 (a quantized bundle): its
 * packed fp32 table is then unavailable (zb_model_packed_at() fails). */
bool zb_model_is_int8(const zb_model_t *m);

/* True when the linear weights were packed at load time (Hugging Face
 * directory, plain-layout bundle) into memory this process owns, rather
 * than mapped from a packed bundle. */
bool zb_model_packed_at_load(const zb_model_t *m);

#endif
