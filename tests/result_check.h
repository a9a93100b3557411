/*
 * result_check.h -- compares a decoded `result` (or `part`) payload with
 * the engine's own results for the same texts (tests only; include after
 * cmocka.h).
 *
 * rc_compare() checks, text by text: rows, the code-point and byte offsets
 * of each row (token: the word's span; wordpiece: the piece's), ids, token
 * metadata (present exactly when the options ask for it: sentence, piece
 * id, -1 for an oov row, word start, oov), truncated indices, per-text
 * errors (code from the engine status, message the engine's detail or
 * zb_strerror()), and the vectors: bit for bit when tol is 0, else within
 * tol (absolute), reporting the largest difference seen.
 */
#ifndef ZB_TEST_RESULT_CHECK_H
#define ZB_TEST_RESULT_CHECK_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "embed.h"
#include "msg.h"
#include "task.h"

__attribute__((unused)) static float rc_le_float(const uint8_t *p) {
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/*
 * v: a decoded payload covering texts 0..n-1 (indices relative to base);
 * ref[0..n): zb_embed_run() results for the same texts and options o;
 * cut[i] (NULL: none): text i is expected to be failed as too_large for
 * size.  tol 0: vectors bit-identical.  *maxdiff (may be NULL) gets the
 * largest absolute difference.
 */
__attribute__((unused)) static void rc_compare(const zb_msg_vectors_t *v, uint32_t base,
                                               const zb_embed_result_t *ref, size_t n,
                                               const zb_options_t *o, const bool *cut, int dim,
                                               double tol, double *maxdiff) {
    assert_int_equal(v->count, n);
    assert_int_equal(v->level, o->level);
    assert_int_equal(v->dim, dim);
    size_t row = 0, n_err = 0, n_trunc = 0;
    double worst = 0;
    bool meta = zb_options_meta(o);
    assert_int_equal(v->token_meta, meta);
    for (size_t i = 0; i < n; i++) {
        const zb_embed_result_t *r = &ref[i];
        bool failed = r->status != 0 || (cut && cut[i]);
        if (failed) {
            assert_int_equal(v->rows[i], 0);
            assert_true(n_err < v->n_errors);
            const zb_msg_text_error_t *e = &v->errors[n_err++];
            assert_int_equal(e->index, base + i);
            if (r->status != 0) {
                assert_int_equal(e->code, zb_task_text_code(r->status));
                const char *want = r->detail[0] ? r->detail : zb_strerror(r->status);
                assert_int_equal(e->message.len, strlen(want));
                assert_memory_equal(e->message.ptr, want, e->message.len);
            } else {
                assert_int_equal(e->code, ZB_MSG_CODE_TOO_LARGE);
                assert_true(e->message.len > 0);
            }
            continue;
        }
        assert_int_equal(v->rows[i], r->n_vectors);
        if (r->truncated) {
            assert_true(n_trunc < v->n_truncated);
            assert_int_equal(v->truncated[n_trunc++], base + i);
        }
        const uint8_t *vb = (const uint8_t *)v->vectors + row * (size_t)dim * 4;
        for (size_t j = 0; j < r->n_vectors * (size_t)dim; j++) {
            float got = rc_le_float(vb + 4 * j), want = r->vectors[j];
            double diff = fabs((double)got - (double)want);
            if (diff > worst || isnan(got) != isnan(want)) worst = isnan(diff) ? INFINITY : diff;
            if (tol == 0 ? memcmp(&got, &want, sizeof got) != 0 : !(diff <= tol)) {
                fprintf(stderr, "text %zu float %zu: %.9g vs %.9g\n", i, j, got, want);
                fail();
            }
        }
        for (size_t j = 0; j < r->n_vectors; j++) {
            const uint32_t *of = v->offsets ? v->offsets + 2 * (row + j) : NULL;
            const uint32_t *bo = v->byte_offsets ? v->byte_offsets + 2 * (row + j) : NULL;
            if (o->level == ZB_LEVEL_TOKEN) {
                const zb_tokenizer_word_t *w = &r->words.v[j];
                assert_non_null(of);
                assert_non_null(bo);
                assert_int_equal(of[0], w->begin);
                assert_int_equal(of[1], w->end);
                assert_int_equal(bo[0], w->byte_begin);
                assert_int_equal(bo[1], w->byte_end);
                if (meta) {
                    const zb_token_meta_t *tm = &r->meta[j];
                    const zb_token_meta_t *vm = &v->meta[row + j];
                    assert_int_equal(vm->sentence, tm->sentence);
                    assert_int_equal(vm->piece_id, tm->oov ? -1 : tm->piece_id);
                    assert_int_equal(vm->word_start, tm->word_start);
                    assert_int_equal(vm->oov, tm->oov);
                }
            } else if (o->level == ZB_LEVEL_WORDPIECE) {
                const zb_tokenizer_piece_t *p = &r->pieces.v[j];
                assert_non_null(of);
                assert_non_null(bo);
                assert_int_equal(of[0], p->begin);
                assert_int_equal(of[1], p->end);
                assert_int_equal(bo[0], p->byte_begin);
                assert_int_equal(bo[1], p->byte_end);
                assert_int_equal(v->ids[row + j], (uint32_t)p->id);
            }
        }
        row += r->n_vectors;
    }
    assert_int_equal(row, v->n_rows);
    assert_int_equal(n_err, v->n_errors);
    assert_int_equal(n_trunc, v->n_truncated);
    if (o->level == ZB_LEVEL_SENTENCE) {
        assert_null(v->offsets);
        assert_null(v->ids);
    } else if (o->level == ZB_LEVEL_TOKEN) {
        assert_null(v->ids);
    }
    if (!meta) {
        assert_null(v->meta);
    }
    if (maxdiff) *maxdiff = worst;
}

#endif
