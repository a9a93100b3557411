/*
 * fuzz_sentences.c -- libFuzzer target for the sentence segmenter.
 *
 * Arbitrary bytes go through zb_sentences_split() (and, when the first byte is
 * odd, with semicolons ending sentences).  Checked invariants: the result
 * is 0 exactly when the bytes are valid UTF-8 (utf8proc is the independent
 * judge) and ZB_EUTF8 otherwise, with no spans; spans are non-empty, in
 * order, disjoint, inside the text, on code point boundaries, trimmed
 * (neither first nor last character is whitespace), every non-whitespace
 * character is inside a span, and code-point offsets name the same
 * characters as byte offsets.  Whitespace is judged by utf8proc's
 * categories (Zs, Zl, Zp, and \t..\r, U+0085), not by the segmenter.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "limits.h"
#include "sentences.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static int s_space(int32_t u) {
    if ((u >= 9 && u <= 13) || u == 0x85) return 1;
    utf8proc_category_t c = utf8proc_category(u);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static zb_sentences_spans_t sp; /* reused across runs, as callers do */
    zb_sentences_options_t opt = {.semicolon_ends = size > 0 && (data[0] & 1)};

    /* validity by utf8proc */
    int valid = 1;
    for (size_t i = 0; i < size;) {
        utf8proc_int32_t u;
        utf8proc_ssize_t k = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &u);
        if (k <= 0) {
            valid = 0;
            break;
        }
        i += (size_t)k;
    }

    sp.n = 12345; /* must be reset */
    int rc = zb_sentences_split_opts((const char *)data, size, &opt, &sp);
    if (size > ZB_TEXT_BYTES_MAX) {
        if (rc != ZB_ELIMIT) s_die("text over the limit not refused");
        return 0;
    }
    if (!valid) {
        if (rc != ZB_EUTF8) s_die("invalid UTF-8 accepted");
        if (sp.n != 0) s_die("spans left after an error");
        return 0;
    }
    if (rc != 0) s_die("valid text refused");

    for (size_t k = 0; k < sp.n; k++) {
        const zb_sentences_span_t *s = &sp.v[k];
        if (s->byte_begin >= s->byte_end || s->begin >= s->end) s_die("empty span");
        if (s->byte_end > size) s_die("span past the end");
        if (k && s->byte_begin < sp.v[k - 1].byte_end) s_die("spans overlap or out of order");
        if ((data[s->byte_begin] & 0xC0) == 0x80) s_die("span begins inside a code point");
        if (s->byte_end < size && (data[s->byte_end] & 0xC0) == 0x80)
            s_die("span ends inside a code point");
    }

    /* Walk the text once: coverage, trimming, code-point offsets. */
    size_t k = 0;
    uint32_t cp = 0;
    for (size_t i = 0; i < size;) {
        utf8proc_int32_t u;
        utf8proc_ssize_t n = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &u);
        while (k < sp.n && sp.v[k].byte_end <= i) k++;
        int in = k < sp.n && sp.v[k].byte_begin <= i;
        int sp_ = s_space(u);
        if (!!sp_ != !!zb_sentences_is_space(u))
            s_die("zb_sentences_is_space disagrees with White_Space");
        if (!sp_ && !in) s_die("non-space character not covered");
        if (in && sp.v[k].byte_begin == i) {
            if (sp_) s_die("span starts with whitespace");
            if (sp.v[k].begin != cp) s_die("code-point begin wrong");
        }
        if (in && sp.v[k].byte_end == i + (size_t)n) {
            if (sp_) s_die("span ends with whitespace");
            if (sp.v[k].end != cp + 1) s_die("code-point end wrong");
        }
        i += (size_t)n;
        cp++;
    }
    return 0;
}
