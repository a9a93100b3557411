/*
 * fuzz_bundle.c -- libFuzzer target for the .zbm bundle reader.
 *
 * Two input modes:
 *   - anything not starting with 'M' is written to a temporary file and
 *     opened as a bundle (zip structure, local header, manifest, tensors);
 *   - "M" + bytes: the bytes become zbert.json of an otherwise valid bundle
 *     (the weights and vocabulary of a tiny model made at start-up), so the
 *     manifest parser and the tensor binding are reached past zip's CRCs.
 * On success: every tensor lies inside weights.bin in the mapping, 64-byte
 * aligned, sorted without overlap; verify and zb_model_open() run too, and
 * every weight the model binds is read.
 *
 * Seeds: tests/fuzz/corpus/bundle.  Run e.g.
 *   build/fuzz/bin/fuzz_bundle -max_total_time=60 tests/fuzz/corpus/bundle
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>

#include "bundle.h"
#include "convert.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char s_path[64];    /* the file each input is written to */
static char s_seed[64];    /* the tiny model's bundle, made once */
static uint8_t *s_weights; /* its weights.bin and vocab.txt */
static size_t s_weights_len;
static char *s_vocab;

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static void s_init(void) {
    snprintf(s_path, sizeof s_path, "/tmp/zb_fuzz_bundle_%d.zbm", (int)getpid());
    snprintf(s_seed, sizeof s_seed, "/tmp/zb_fuzz_bundle_seed_%d.zbm", (int)getpid());
    zb_config_t c = {.vocab_size = 8,
                     .hidden = 4,
                     .layers = 1,
                     .heads = 2,
                     .intermediate = 8,
                     .max_positions = 4,
                     .type_vocab_size = 2,
                     .layer_norm_eps = 1e-12f};
    zb_config_tokenizer_t t = {false, false};
    static zb_model_tensor_t ts[21];
    static float vals[1024];
    for (int i = 0; i < 1024; i++) vals[i] = (float)i / 64.0f;
    for (int i = 0; i < 21; i++) {
        zb_model_tensor_spec(&c, i, &ts[i]);
        ts[i].data = vals;
    }
    const char *vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\nc\nd\n";
    zb_convert_spec_t spec = {&c, &t, vocab, strlen(vocab), ts, 21, "fuzz seed"};
    zb_diag_t d;
    zb_bundle_t *b = NULL;
    if (zb_convert_write(s_seed, &spec, &d) != 0 || zb_bundle_open(s_seed, &b, &d) != 0)
        s_die(d.msg);
    s_weights_len = zb_bundle_weights_size(b);
    s_weights = malloc(s_weights_len);
    memcpy(s_weights, (const uint8_t *)zb_bundle_map(b, NULL) + zb_bundle_weights_offset(b),
           s_weights_len);
    s_vocab = strdup(vocab);
    zb_bundle_close(&b);
    unlink(s_seed);
}

/* A bundle laid out as the writer does, around an arbitrary manifest. */
static int s_wrap_manifest(const uint8_t *m, size_t len) {
    int err;
    zip_t *za = zip_open(s_path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (za == NULL) return -1;
    zip_source_t *sw = zip_source_buffer(za, s_weights, s_weights_len, 0);
    unsigned char pad[19] = {64, 0};
    if (zip_file_add(za, "weights.bin", sw, 0) != 0 ||
        zip_set_file_compression(za, 0, ZIP_CM_STORE, 0) != 0 ||
        zip_file_extra_field_set(za, 0, ZB_BUNDLE_ALIGN_FIELD, ZIP_EXTRA_FIELD_NEW, pad, 19,
                                 ZIP_FL_LOCAL) != 0)
        goto fail;
    zip_source_t *sm = zip_source_buffer(za, m, len, 0);
    if (zip_file_add(za, "zbert.json", sm, 0) < 0) goto fail;
    zip_source_t *sv = zip_source_buffer(za, s_vocab, strlen(s_vocab), 0);
    if (zip_file_add(za, "vocab.txt", sv, 0) < 0) goto fail;
    return zip_close(za) == 0 ? 0 : -1;
fail:
    zip_discard(za);
    return -1;
}

static void s_check(const char *path) {
    zb_bundle_t *b = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_bundle_open(path, &b, &d);
    if (rc != 0) {
        if (b != NULL) s_die("failure left an object");
        if (d.msg[0] == '\0') s_die("failure without a message");
        return;
    }
    size_t map_len;
    const uint8_t *map = zb_bundle_map(b, &map_len);
    size_t w0 = zb_bundle_weights_offset(b), wn = zb_bundle_weights_size(b);
    if (w0 % ZB_BUNDLE_ALIGN != 0 || w0 > map_len || wn > map_len - w0) s_die("weights range");
    size_t prev_end = 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < zb_bundle_n_tensors(b); i++) {
        const zb_bundle_tensor_t *t = zb_bundle_tensor_at(b, i);
        const uint8_t *p = t->data;
        if (p != map + w0 + t->offset || t->offset > wn || t->nbytes > wn - t->offset)
            s_die("tensor outside weights.bin");
        if ((uintptr_t)p % ZB_BUNDLE_ALIGN != 0) s_die("tensor misaligned");
        /* packed tensors hold whole panels: at least the logical elements */
        const size_t es = zb_safetensors_dtype_size(t->dtype);
        if (es == 0 || (t->packed ? t->n_dims != 2 || t->nbytes < t->n_elems * es
                                  : t->nbytes != t->n_elems * es))
            s_die("nbytes");
        if ((t->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8) != (t->dtype == ZB_SAFETENSORS_I8))
            s_die("int8 layout");
        if (i > 0 && t->offset < prev_end) s_die("overlap or unsorted");
        prev_end = t->offset + t->nbytes;
        if (zb_bundle_find(b, t->name) != t) s_die("lookup");
        if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1];
    }
    rc = zb_bundle_verify(b, &d);
    if (rc != 0 && d.msg[0] == '\0') s_die("verify failed without a message");
    zb_bundle_close(&b);

    zb_model_t *m = NULL;
    rc = zb_model_open(path, &m, &d);
    if (rc == 0) {
        for (int i = 0; i < zb_model_n_tensors(m); i++) {
            zb_model_tensor_t t;
            if (zb_model_tensor_at(m, i, &t) != 0) s_die("tensor_at");
            const unsigned char *bytes = t.data;
            volatile unsigned char f = (unsigned char)(bytes[0] + bytes[t.nbytes - 1]);
            (void)f;
        }
        /* the forward pass's operands, packed at load or mapped */
        const zb_model_weights_t *w = zb_model_weights(m);
        for (int l = 0; l < zb_model_config(m)->layers; l++) {
            const zb_model_layer_t *L = &w->layer[l];
            volatile float f = L->qkv_b[3 * zb_model_config(m)->hidden - 1];
            if (L->int8) {
                const zb_qgemm_w_t *q[2] = {&L->qkv_q8, &L->ffn_out_q8};
                for (int k = 0; k < 2; k++)
                    f += (float)q[k]->q[zb_qgemm_packed_bytes(q[k]->n, q[k]->k) - 1] +
                         q[k]->scale[q[k]->n - 1] + (float)q[k]->sum[q[k]->n - 1];
            } else {
                f += L->qkv.p[zb_gemm_packed_floats(L->qkv.n, L->qkv.k) - 1] +
                     L->ffn_out.p[zb_gemm_packed_floats(L->ffn_out.n, L->ffn_out.k) - 1];
            }
            (void)f;
        }
        zb_model_close(&m);
    } else if (m != NULL || d.msg[0] == '\0') {
        s_die("model failure");
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (s_weights == NULL) s_init();
    if (size > 0 && data[0] == 'M') {
        if (s_wrap_manifest(data + 1, size - 1) != 0) return 0;
    } else {
        FILE *f = fopen(s_path, "wb");
        if (f == NULL) return 0;
        size_t w = fwrite(data, 1, size, f);
        if (fclose(f) != 0 || w != size) return 0;
    }
    s_check(s_path);
    unlink(s_path);
    return 0;
}
