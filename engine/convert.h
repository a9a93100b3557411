/*
 * convert.h -- writing zbert bundles (.zbm; the format is described in
 * bundle.h): from a table of tensors, or from an open model, fp32 packed or
 * quantized to int8.  zbert-model convert is its command line.
 *
 * Every layout transformation that makes the forward pass faster (packed
 * panels, int8 with scales) happens here, at convert time, so that opening
 * a bundle (bundle.h) only maps and validates.
 *
 * Thread-safety: the functions share no state; the model passed in is only
 * read.
 */
#ifndef ZB_CONVERT_H
#define ZB_CONVERT_H

#include <stddef.h>

#include "config.h"
#include "error.h"
#include "model.h"

/* What a bundle is written from; everything is borrowed. */
typedef struct zb_convert_spec {
    const zb_config_t *config;
    const zb_config_tokenizer_t *tokenizer;
    const char *vocab; /* vocab.txt bytes */
    size_t vocab_len;
    const zb_model_tensor_t *tensors; /* fp32, canonical names, plain or packed */
    size_t n_tensors;
    const char *source; /* free text describing where the weights came from */
} zb_convert_spec_t;

/*
 * Writes a bundle to path (replaced if it exists; libzip writes a temporary
 * file and renames it).  Returns 0, ZB_EINVAL (spec outside the limits),
 * ZB_ELIMIT (weights over ZB_BUNDLE_WEIGHTS_MAX), ZB_ENOMEM or ZB_EIO.  After
 * writing, the file is reopened to check that weights.bin landed aligned.
 */
int zb_convert_write(const char *path, const zb_convert_spec_t *spec, zb_diag_t *d);

/* zb_convert_write() of an open model's packed table (zb_model_packed_at():
 * the linear layers' matrices in the panel layout), config, tokenizer
 * settings and vocabulary. */
int zb_convert_model(const char *path, const zb_model_t *m, const char *source, zb_diag_t *d);

/* The same with the linear layers quantized to int8 (qgemm.h; model.h's
 * int8 table), from an fp32 model, or rewritten as they are from an int8 one.
 * act_max (NULL: none) holds, for linear layer l * 4 + j (j: QKV, attention
 * output, FFN in, FFN out), the largest |input| seen per input channel in a
 * calibration run (calibrate.h): the matrices are then smoothed (qgemm.h).
 * ZB_EINVAL if a matrix holds an infinity or NaN. */
int zb_convert_model_int8(const char *path, const zb_model_t *m, const char *source,
                          const float *const *act_max, zb_diag_t *d);

#endif
