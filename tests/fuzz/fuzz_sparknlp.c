/*
 * fuzz_sparknlp.c -- libFuzzer target for the Spark NLP pipeline port.
 *
 * Arbitrary bytes go through zb_sparknlp_analyze() with a small vocabulary
 * built here.  Checked invariants: invalid UTF-8 gives ZB_EUTF8 and an
 * empty doc; otherwise 0 or ZB_EUNSUPPORTED (with a message and an empty
 * doc); on success sentences are non-empty, in order, disjoint, inside the
 * text, with UTF-16 / code point / byte offsets naming the same characters
 * and no character <= U+0020 at either end (Java trim); tokens lie inside
 * their sentence, in order, without ASCII whitespace; every sentence feeds
 * [CLS] + at most 126 pieces + [SEP]; every vector names a token of its
 * sentence that begins where its piece begins, a row in 1..127, and the
 * [SEP] row only as row 127.  zb_sparknlp_sentences() must agree with the
 * sentences of the full analysis.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "limits.h"
#include "sparknlp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what) {
    fprintf(stderr, "invariant broken: %s\n", what);
    abort();
}

static const char s_vocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\nab\n##a\n##b\n##c\nc\n.\n,\n"
                              "(\n)\n'\nI\nMr\nU\n##S\n\xc3\xa9\n##\xc3\xa9\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static zb_tokenizer_t *tok;
    static zb_sparknlp_doc_t doc, doc2; /* reused across runs, as callers do */
    if (tok == NULL) {
        zb_diag_t d = {{0}};
        if (zb_tokenizer_new(s_vocab, sizeof s_vocab - 1, &(zb_tokenizer_options_t){0}, &tok, &d) !=
            0)
            s_die("vocabulary");
    }
    if (size > 4096) return 0; /* the rules are linear; keep runs quick */
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
    bool cased = size == 0 || !(data[0] & 1);
    int rc = zb_sparknlp_analyze(tok, cased, (const char *)data, size, &doc);
    int rc2 = zb_sparknlp_sentences((const char *)data, size, &doc2);
    if (!valid) {
        if (rc != ZB_EUTF8 || rc2 != ZB_EUTF8) s_die("invalid UTF-8 accepted");
        if (doc.n_sentences || doc.n_tokens || doc.n_vectors) s_die("doc left after an error");
        return 0;
    }
    if (rc == ZB_EUNSUPPORTED) {
        if (doc.error[0] == '\0') s_die("refusal without a message");
        if (doc.n_sentences || doc.n_vectors) s_die("doc left after a refusal");
        return 0;
    }
    if (rc != 0) s_die("valid text failed");
    if (rc2 != 0 || doc2.n_sentences != doc.n_sentences) s_die("sentences disagree");

    for (size_t k = 0; k < doc.n_sentences; k++) {
        const zb_sparknlp_span_t *s = &doc.sentences[k];
        if (memcmp(s, &doc2.sentences[k], sizeof *s) != 0) s_die("sentence spans disagree");
        if (s->byte_begin >= s->byte_end || s->begin >= s->end || s->begin16 > s->end16)
            s_die("empty sentence");
        if (s->byte_end > size) s_die("sentence past the end");
        if (k && s->byte_begin < doc.sentences[k - 1].byte_end) s_die("sentences overlap");
        if (data[s->byte_begin] <= 0x20 || data[s->byte_end - 1] <= 0x20)
            s_die("sentence not trimmed");
        size_t u16 = 0, cps = 0;
        for (size_t i = s->byte_begin; i < s->byte_end;) {
            utf8proc_int32_t u;
            utf8proc_ssize_t n = utf8proc_iterate(data + i, (utf8proc_ssize_t)(size - i), &u);
            u16 += u >= 0x10000 ? 2 : 1;
            cps++;
            i += (size_t)n;
        }
        if (cps != s->end - s->begin || (int32_t)u16 != s->end16 - s->begin16 + 1)
            s_die("sentence units disagree");
        uint32_t off = doc.seq_off[k], len = doc.seq_off[k + 1] - off;
        if (len < 2 || len > ZB_SPARKNLP_PIECES_MAX || doc.ids[off] != zb_tokenizer_cls_id(tok) ||
            doc.ids[off + len - 1] != zb_tokenizer_sep_id(tok))
            s_die("sequence not framed");
    }
    for (size_t t = 0; t < doc.n_tokens; t++) {
        const zb_sparknlp_token_t *tk = &doc.tokens[t];
        if (tk->sentence >= doc.n_sentences) s_die("token sentence");
        const zb_sparknlp_span_t *s = &doc.sentences[tk->sentence];
        if (tk->span.byte_begin < s->byte_begin || tk->span.byte_end > s->byte_end ||
            tk->span.byte_begin >= tk->span.byte_end)
            s_die("token outside its sentence");
        if (t && tk->span.byte_begin < doc.tokens[t - 1].span.byte_end) s_die("tokens overlap");
        for (size_t i = tk->span.byte_begin; i < tk->span.byte_end; i++)
            if (data[i] == ' ' || (data[i] >= 9 && data[i] <= 13)) s_die("whitespace in token");
    }
    for (size_t v = 0; v < doc.n_vectors; v++) {
        const zb_sparknlp_vector_t *x = &doc.vectors[v];
        if (x->token >= doc.n_tokens) s_die("vector token");
        uint32_t k = doc.tokens[x->token].sentence;
        uint32_t len = doc.seq_off[k + 1] - doc.seq_off[k];
        if (x->row < 1 || x->row > ZB_SPARKNLP_PIECES_MAX - 1) s_die("row out of range");
        if (x->row_is_sep != (x->row == len - 1 && x->row == ZB_SPARKNLP_PIECES_MAX - 1))
            s_die("[SEP] row wrong");
        if (!x->row_is_sep && doc.ids[doc.seq_off[k] + x->row] != x->piece_id)
            s_die("row does not hold the piece");
    }
    return 0;
}
