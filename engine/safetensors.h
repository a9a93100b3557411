/*
 * safetensors.h -- a bounded reader (and a small writer) of the safetensors
 * format used by Hugging Face checkpoints.
 *
 * Layout: an 8-byte little-endian header length N, an N-byte JSON object
 * mapping each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the first byte after the header; an optional
 * "__metadata__" object of strings), then the raw little-endian data.
 *
 * Invariants after a successful parse: every tensor has a known dtype, at
 * most ZB_TENSOR_DIMS_MAX dimensions, shape product x dtype size equal to its
 * byte range (checked arithmetic), its range inside the data section, no two
 * ranges overlap, names are unique, non-empty and shorter than
 * ZB_TENSOR_NAME_MAX bytes.  Gaps between ranges are allowed (real files
 * have them).  Nothing of the buffer is touched after the checks except
 * through these validated ranges.
 *
 * Thread-safety: a parsed zb_safetensors_t is immutable; any number of
 * threads may read it.  A file opened with zb_safetensors_open_file() is a
 * read-only shared mapping: if another process truncates the file while it
 * is mapped, reads may fault (the usual mmap caveat).
 */
#ifndef ZB_SAFETENSORS_H
#define ZB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "limits.h"

typedef enum zb_safetensors_dtype {
    ZB_SAFETENSORS_BOOL,
    ZB_SAFETENSORS_U8,
    ZB_SAFETENSORS_I8,
    ZB_SAFETENSORS_I16,
    ZB_SAFETENSORS_U16,
    ZB_SAFETENSORS_F16,
    ZB_SAFETENSORS_BF16,
    ZB_SAFETENSORS_I32,
    ZB_SAFETENSORS_U32,
    ZB_SAFETENSORS_F32,
    ZB_SAFETENSORS_I64,
    ZB_SAFETENSORS_U64,
    ZB_SAFETENSORS_F64,
    ZB_SAFETENSORS_DTYPE_COUNT
} zb_safetensors_dtype_t;

typedef struct zb_safetensors_tensor {
    const char *name; /* NUL-terminated, owned by the parsed file */
    zb_safetensors_dtype_t dtype;
    int n_dims;                        /* 0 (scalar) .. ZB_TENSOR_DIMS_MAX */
    int64_t shape[ZB_TENSOR_DIMS_MAX]; /* each >= 0; unused entries are 0 */
    size_t n_elems;                    /* product of shape (1 for a scalar) */
    size_t offset;                     /* begin, relative to the data section */
    size_t nbytes;                     /* end - begin == n_elems * dtype size */
    const void *data;                  /* into the parsed buffer; any alignment */
} zb_safetensors_tensor_t;

typedef struct zb_safetensors zb_safetensors_t;

/*
 * Parses and validates a whole safetensors file held in buf[0..len).  buf is
 * borrowed: it must outlive *out, whose tensors point into it.  On success
 * *out is the caller's (zb_safetensors_close); on failure returns ZB_EFORMAT
 * (malformed), ZB_ELIMIT (a limit of limits.h), ZB_EUNSUPPORTED (unknown
 * dtype) or ZB_ENOMEM, *out is NULL and d names the problem.
 */
int zb_safetensors_parse(const void *buf, size_t len, zb_safetensors_t **out, zb_diag_t *d);

/*
 * Maps the file at path read-only (MAP_SHARED, so processes share its pages)
 * and parses it as zb_safetensors_parse() does; the mapping is owned by *out
 * and released by zb_safetensors_close().  ZB_EIO when the file cannot be
 * opened or mapped, ZB_ENOTFOUND when it does not exist.
 */
int zb_safetensors_open_file(const char *path, zb_safetensors_t **out, zb_diag_t *d);

/* Releases the parsed file (and its mapping, if any); nulls *st. NULL-safe. */
void zb_safetensors_close(zb_safetensors_t **st);

/* Number of tensors (the __metadata__ entry is not one). */
size_t zb_safetensors_count(const zb_safetensors_t *st);

/* Tensor i < count, in the order of their data offsets. */
const zb_safetensors_tensor_t *zb_safetensors_at(const zb_safetensors_t *st, size_t i);

/* The tensor called name, or NULL. */
const zb_safetensors_tensor_t *zb_safetensors_find(const zb_safetensors_t *st, const char *name);

/* The value of __metadata__[key] (a string), or NULL. */
const char *zb_safetensors_metadata(const zb_safetensors_t *st, const char *key);

/* Size in bytes of one element of dtype (0 for an invalid dtype). */
size_t zb_safetensors_dtype_size(zb_safetensors_dtype_t dtype);

/* The format's spelling of dtype ("F32", "BF16", ...); "?" when invalid. */
const char *zb_safetensors_dtype_name(zb_safetensors_dtype_t dtype);

/* Parses a dtype spelling; returns 0 and sets *out, or ZB_EUNSUPPORTED. */
int zb_safetensors_dtype_parse(const char *s, zb_safetensors_dtype_t *out);

/* --- element conversions (exact) --------------------------------------- */

/* IEEE binary16 -> float, exact for every value (subnormals, inf, NaN). */
float zb_safetensors_f16_to_f32(uint16_t h);

/* bfloat16 -> float: the top 16 bits of a binary32, exact. */
float zb_safetensors_bf16_to_f32(uint16_t b);

/* float -> binary16 / bfloat16, round to nearest even (NaN stays NaN). */
uint16_t zb_safetensors_f32_to_f16(float f);
uint16_t zb_safetensors_f32_to_bf16(float f);

/* --- writing ----------------------------------------------------------- */

/* One tensor to write: data holds n_elems * dtype size little-endian bytes. */
typedef struct zb_safetensors_out {
    const char *name;
    zb_safetensors_dtype_t dtype;
    int n_dims;
    int64_t shape[ZB_TENSOR_DIMS_MAX];
    const void *data;
} zb_safetensors_out_t;

/*
 * Writes n tensors, in the given order and back to back, to path (created or
 * truncated), with a __metadata__ object of the n_meta key/value pairs in
 * meta[2*i], meta[2*i+1].  The header is padded with spaces so the data
 * section starts 8-byte aligned.  ZB_EINVAL for a tensor outside the limits,
 * ZB_EIO when the file cannot be written.
 */
int zb_safetensors_write(const char *path, const zb_safetensors_out_t *t, size_t n,
                         const char *const *meta, size_t n_meta, zb_diag_t *d);

#endif
