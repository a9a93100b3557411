/*
 * calibrate.h -- what int8 quantization needs to know about activations:
 * the largest |input| each channel of each linear layer sees when the fp32
 * model runs on sample texts.  zbert-model convert --quantize int8
 * --calibrate FILE feeds it to zb_convert_model_int8(), which smooths
 * the matrices with it (qgemm.h): a few channels of real BERT activations
 * are tens of times larger than the rest, and a per-row scale set by them
 * leaves the others only a few levels.
 *
 * Thread-safety: a calibration is built by one thread, then read-only.
 */
#ifndef ZB_CALIBRATE_H
#define ZB_CALIBRATE_H

#include <stddef.h>

#include "error.h"
#include "model.h"

typedef struct zb_calibrate zb_calibrate_t;

/*
 * Runs the fp32 model m (not an int8 one) over texts[0..n) (lens[i] bytes
 * each), one sequence per text ([CLS] pieces [SEP], cut to the model's
 * positions), on threads threads (0: OpenMP's default), recording the
 * maxima.  Texts that are not valid UTF-8, or have no piece, are skipped.
 * Returns 0 and *out (the caller's, zb_calibrate_destroy), ZB_EINVAL (an int8
 * model, no usable text), ZB_ENOMEM, or what the engine reports; d says why.
 */
int zb_calibrate_run(const zb_model_t *m, const char *const *texts, const size_t *lens, size_t n,
                     int threads, zb_calibrate_t **out, zb_diag_t *d);

/* The maxima: [layers * 4] arrays, array l * 4 + j (j: QKV, attention
 * output, FFN in, FFN out) with one float per input channel. */
const float *const *zb_calibrate_act_max(const zb_calibrate_t *c);

/* Texts used and tokens run. */
size_t zb_calibrate_texts(const zb_calibrate_t *c);
size_t zb_calibrate_tokens(const zb_calibrate_t *c);

/* NULL-safe; nulls *c. */
void zb_calibrate_destroy(zb_calibrate_t **c);

#endif
