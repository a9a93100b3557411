/*
 * fuzz_safetensors.c -- libFuzzer target for the safetensors reader.
 *
 * Arbitrary bytes go through zb_safetensors_parse() exactly as a mapped file
 * would.  On success the invariants of safetensors.h are checked: every
 * tensor's bytes lie inside the input after the header, nbytes equals the
 * shape product times the dtype size, tensors are sorted by offset without
 * overlap, names are unique and found by lookup; every tensor's first and
 * last byte is read (so ASan sees any range that escaped the checks).
 *
 * Seeds: tests/fuzz/corpus/safetensors.  Run e.g.
 *   build/fuzz/bin/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus/safetensors
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a private copy of exactly size bytes, so any read past the end is caught */
    uint8_t *buf = malloc(size ? size : 1);
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    zb_safetensors_t *st = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_safetensors_parse(buf, size, &st, &d);
    if (rc != 0) {
        if (st != NULL) s_die("failure left an object");
        if (d.msg[0] == '\0') s_die("failure without a message");
        if (strlen(d.msg) >= sizeof d.msg) s_die("message not terminated");
        free(buf);
        return 0;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    const uint8_t *lo = buf + 8 + hlen, *hi = buf + size;
    size_t prev_end = 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < zb_safetensors_count(st); i++) {
        const zb_safetensors_tensor_t *t = zb_safetensors_at(st, i);
        const uint8_t *p = t->data;
        if (p < lo || p > hi || t->nbytes > (size_t)(hi - p)) s_die("tensor outside the data");
        if (p != lo + t->offset) s_die("data pointer and offset disagree");
        if (t->n_elems * zb_safetensors_dtype_size(t->dtype) != t->nbytes) s_die("nbytes");
        if (t->n_dims < 0 || t->n_dims > ZB_TENSOR_DIMS_MAX) s_die("n_dims");
        if (i > 0 && t->offset < prev_end) s_die("overlap or unsorted");
        prev_end = t->offset + t->nbytes;
        size_t nl = strlen(t->name);
        if (nl == 0 || nl >= ZB_TENSOR_NAME_MAX) s_die("name length");
        if (zb_safetensors_find(st, t->name) != t) s_die("lookup");
        if (t->nbytes > 0) sink ^= p[0] ^ p[t->nbytes - 1];
    }
    (void)sink;
    zb_safetensors_close(&st);
    free(buf);
    return 0;
}
