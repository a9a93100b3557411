/*
 * bundle.h -- the zbert model bundle (.zbm): one file a worker maps read-only
 * and runs from, sharing its pages with every other worker on the node.
 *
 * A bundle is a plain zip archive (no zip64) holding
 *   weights.bin  the first entry, STORED (never compressed): tensors, each
 *                starting 64-byte aligned inside the entry, whose data
 *                itself starts 64-byte aligned in the file.  A tensor is
 *                plain (row-major) or, for the linear layers' matrices,
 *                packed ready for the GEMM: F32 in gemm.h's panel layout,
 *                or, in an int8 bundle, I8 in qgemm.h's panel-q8 layout
 *                beside its F32 row scales, I32 row sums and F32 activation
 *                multipliers (model.h's int8 table).  The writer pads
 *                the entry's local header with an alignment extra field
 *                (id 0xD935: u16 alignment + zero bytes, the Android zipalign
 *                convention) so the data lands on the boundary.
 *   zbert.json   the manifest: {"format": "zbert-bundle", "version": 2,
 *                "layout": {"name": "panel", "version": 1, "panel_rows": 16},
 *                "config": {Hugging Face BertConfig keys}, "tokenizer":
 *                {"lowercase", "strip_accents"}, "weights": {"entry",
 *                "nbytes", "sha256"}, "tensors": [{"name", "dtype", "shape",
 *                "layout": "plain" | "panel" | "panel-q8", "offset", "nbytes"}],
 *                and, when any tensor is panel-q8, "layout_q8": {"name":
 *                "panel-q8", "version": 1, "panel_rows": 16, "k_group": 4},
 *                "source": "..."}.  "layout" names the packed layout of the
 *                "panel" tensors (their shape is the logical [N, K], their
 *                nbytes the packed size).  Version 1 bundles (no layout,
 *                every tensor plain) are still read.
 *   vocab.txt    the WordPiece vocabulary, one token per line.
 * Tensor names are canonical (no "bert." prefix, LayerNorm weight/bias), so a
 * loader binds them by name without any mapping.
 *
 * Opening validates structure only (fast start): the zip end record and
 * central directory, weights.bin's local header against its central entry
 * (stored, sizes, name, bounds, alignment), the manifest and every tensor's
 * range.  zb_bundle_verify() additionally recomputes the SHA-256 (and the zip
 * CRC) of the weights.
 *
 * Thread-safety: an open bundle is immutable; any number of threads may read
 * it.  As with any mmap, truncating the file under a running process makes
 * its reads fault: replace bundles by renaming a new file into place.
 */
#ifndef ZB_BUNDLE_H
#define ZB_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "error.h"
#include "limits.h"
#include "safetensors.h"

#define ZB_BUNDLE_FORMAT         "zbert-bundle"
#define ZB_BUNDLE_VERSION        2      /* written; versions 1 (all plain) and 2 are read */
#define ZB_BUNDLE_VERSION_PLAIN  1      /* the oldest version read */
#define ZB_BUNDLE_ALIGN          64     /* bytes; tensor data alignment */
#define ZB_BUNDLE_ALIGN_FIELD    0xD935 /* zip extra field id padding the local header */
#define ZB_BUNDLE_ENTRY_WEIGHTS  "weights.bin"
#define ZB_BUNDLE_ENTRY_MANIFEST "zbert.json"
#define ZB_BUNDLE_ENTRY_VOCAB    "vocab.txt"
#define ZB_BUNDLE_ZIP_LOCAL_LEN  30u /* bytes of a zip local header before its name */

/* How a tensor's elements are laid out. */
typedef enum zb_bundle_layout {
    ZB_BUNDLE_LAYOUT_PLAIN = 0,    /* row-major, as in PyTorch */
    ZB_BUNDLE_LAYOUT_PANEL = 1,    /* F32 matrix in gemm.h's panel layout */
    ZB_BUNDLE_LAYOUT_PANEL_Q8 = 2, /* I8 matrix in qgemm.h's panel-q8 layout */
} zb_bundle_layout_t;

/* Name of a layout as bundles spell it: "plain", "panel", "panel-q8". */
const char *zb_bundle_layout_name(zb_bundle_layout_t l);

typedef struct zb_bundle_tensor {
    const char *name;             /* canonical name, owned by the bundle */
    zb_safetensors_dtype_t dtype; /* F32; I8 (panel-q8 layout); I32 (plain) */
    int n_dims;
    int64_t shape[ZB_TENSOR_DIMS_MAX]; /* logical shape, also when packed */
    size_t n_elems;
    bool packed; /* a panel layout (2 dims): nbytes is the packed size */
    zb_bundle_layout_t layout;
    size_t offset;    /* inside weights.bin, a multiple of ZB_BUNDLE_ALIGN */
    size_t nbytes;    /* n_elems x dtype size, zb_gemm_packed_floats(shape) x 4 or
                       * zb_qgemm_packed_bytes(shape) */
    const void *data; /* into the mapping, ZB_BUNDLE_ALIGN-aligned */
} zb_bundle_tensor_t;

typedef struct zb_bundle zb_bundle_t;

/*
 * Opens and validates a bundle; maps the whole file read-only (MAP_SHARED).
 * On success *out is the caller's (zb_bundle_close).  Errors: ZB_ENOTFOUND,
 * ZB_EIO, ZB_EFORMAT (malformed zip, manifest or table), ZB_EUNSUPPORTED
 * (other format version, compressed weights, zip64, dtype), ZB_ELIMIT,
 * ZB_ENOMEM; d names the problem.  A packed tensor whose layout this build
 * does not read is ZB_EUNSUPPORTED.
 */
int zb_bundle_open(const char *path, zb_bundle_t **out, zb_diag_t *d);

/* Releases the bundle and its mapping; nulls *b. NULL-safe. */
void zb_bundle_close(zb_bundle_t **b);

/*
 * Recomputes the SHA-256 of weights.bin and compares it with the manifest's
 * (ZB_ECHECKSUM on mismatch), then reads every entry through libzip so its
 * CRC-32 is checked too.  Reads the whole file.
 */
int zb_bundle_verify(const zb_bundle_t *b, zb_diag_t *d);

/* Borrowed views, valid until zb_bundle_close(). */
const zb_config_t *zb_bundle_config(const zb_bundle_t *b);
const zb_config_tokenizer_t *zb_bundle_tokenizer_config(const zb_bundle_t *b);
const char *zb_bundle_vocab(const zb_bundle_t *b, size_t *len);
const char *zb_bundle_source(const zb_bundle_t *b);   /* "" when absent */
const char *zb_bundle_sha256(const zb_bundle_t *b);   /* 64 hex digits, from the manifest */
const char *zb_bundle_identity(const zb_bundle_t *b); /* first 16 of them */
int zb_bundle_version(const zb_bundle_t *b);          /* the manifest's format version */

size_t zb_bundle_n_tensors(const zb_bundle_t *b);
const zb_bundle_tensor_t *zb_bundle_tensor_at(const zb_bundle_t *b, size_t i);
const zb_bundle_tensor_t *zb_bundle_find(const zb_bundle_t *b, const char *name);

/* The whole-file mapping, and weights.bin's place in it. */
const void *zb_bundle_map(const zb_bundle_t *b, size_t *len);
size_t zb_bundle_weights_offset(const zb_bundle_t *b);
size_t zb_bundle_weights_size(const zb_bundle_t *b);

#endif
