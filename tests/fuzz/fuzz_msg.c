/*
 * fuzz_msg.c -- libFuzzer target for zb_msg_decode().
 *
 * Arbitrary bytes are decoded as a message body.  Checked invariants:
 *   - the result is 0, ZB_EPROTO or ZB_ENOMEM; a rejection leaves nothing
 *     allocated, carries a sentence and one of the codes a broker answers
 *     (bad_request, too_large, version), and an echoed id lies inside the
 *     input and is a well-formed id;
 *   - the decoder never allocates more than 16 bytes per input byte (plus
 *     block headers);
 *   - only a rejection of an unknown type is flagged unknown_type (what a
 *     client may ignore), always as bad_request with no type decoded;
 *   - decoded token metadata (part, result) is at the token level, all four
 *     arrays present when there are rows, every oov row with piece 0;
 *     options decode only in combinations the engine honours; an embed's
 *     have is pairs of increasing, non-empty ranges inside its texts;
 *   - whatever decodes is one complete MessagePack object to msgpack-c too,
 *     re-encodes (unless it holds an error code this version cannot name),
 *     decodes again to an equal message, and that message re-encodes to the
 *     same bytes (the encoding is canonical).
 *
 * Seeds in tests/fuzz/corpus/msg: one body of every message type, and
 * bodies with every later option, with token metadata and with the keys of
 * revision 1.3, as
 * tests/test_msg.c writes them (ZB_WRITE_CORPUS=dir).  A dictionary of
 * the protocol's keys and names is tests/fuzz/fuzz_msg.dict:
 *   mkdir -p /tmp/m && build/fuzz/bin/fuzz_msg \
 *       -dict=tests/fuzz/fuzz_msg.dict /tmp/m tests/fuzz/corpus/msg
 */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "mp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_die(const char *what, const zb_diag_t *d) {
    fprintf(stderr, "invariant broken: %s (%s)\n", what, d ? d->msg : "");
    abort();
}

/* The invariants of token metadata and options on a decoded message. */
static void s_check_meta(const zb_msg_t *m, const zb_diag_t *d) {
    const zb_msg_vectors_t *v = NULL;
    const zb_options_t *o = NULL;
    if (m->type == ZB_MSG_PART) v = &m->u.part.vec;
    if (m->type == ZB_MSG_RESULT) v = &m->u.result.vec;
    if (m->type == ZB_MSG_EMBED) o = &m->u.embed.opt;
    if (m->type == ZB_MSG_TASK) o = &m->u.task.opt;
    if (o && o->compat != ZB_COMPAT_NONE && o->level != ZB_LEVEL_TOKEN)
        s_die("compat decoded at another level than token", d);
    if (o && o->sentences && o->level == ZB_LEVEL_SENTENCE)
        s_die("sentences decoded at the sentence level", d);
    if (o && (zb_options_broken(o) != ZB_OPTIONS_RULE_NONE || o->tokenize_only))
        s_die("options decoded that break a rule", d);
    if (m->type == ZB_MSG_EMBED) {
        /* have (revision 1.3): pairs of increasing, non-empty ranges inside
         * the texts */
        const zb_msg_embed_t *e = &m->u.embed;
        uint64_t end = 0;
        if (e->n_have % 2 != 0) s_die("have decoded with an odd count", d);
        for (size_t k = 0; k < e->n_have; k += 2) {
            if (e->have[k + 1] == 0 || e->have[k] < end ||
                (uint64_t)e->have[k] + e->have[k + 1] > e->n_texts)
                s_die("have decoded with a range that breaks a rule", d);
            end = (uint64_t)e->have[k] + e->have[k + 1];
        }
    }
    if (v == NULL) return;
    if (!v->token_meta) {
        if (v->meta) s_die("metadata rows without token_meta", d);
        return;
    }
    if (v->level != ZB_LEVEL_TOKEN) s_die("token metadata at another level", d);
    if (v->n_rows == 0) return;
    if (!v->meta) s_die("token metadata without its rows", d);
    for (uint64_t k = 0; k < v->n_rows; k++) {
        if (v->meta[k].oov && v->meta[k].piece_id != -1) s_die("an oov row with a piece", d);
        if (!v->meta[k].oov && v->meta[k].piece_id < 0) s_die("a row without a piece", d);
    }
}

static bool s_has_unknown_code(const zb_msg_t *m) {
    const zb_msg_vectors_t *v = NULL;
    if (m->type == ZB_MSG_ERROR) return m->u.error.code == ZB_MSG_CODE_UNKNOWN;
    if (m->type == ZB_MSG_PART) v = &m->u.part.vec;
    if (m->type == ZB_MSG_RESULT) v = &m->u.result.vec;
    for (size_t k = 0; v && k < v->n_errors; k++)
        if (v->errors[k].code == ZB_MSG_CODE_UNKNOWN) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zb_msg_t m;
    zb_diag_t d = {{0}};
    int rc = zb_msg_decode(data, size, &m, &d);
    if (m.mem_bytes > 16 * size + 256) s_die("allocation bound", &d);
    if (rc == ZB_ENOMEM) return 0;
    if (rc != 0) {
        if (rc != ZB_EPROTO) s_die("unexpected return code", &d);
        if (m.mem != NULL) s_die("memory left after a rejection", &d);
        if (d.msg[0] == '\0') s_die("rejection without a sentence", &d);
        zb_msg_code_t c = zb_msg_decode_failure(&m);
        if (c != ZB_MSG_CODE_BAD_REQUEST && c != ZB_MSG_CODE_TOO_LARGE && c != ZB_MSG_CODE_VERSION)
            s_die("rejection code", &d);
        if (m.unknown_type && (c != ZB_MSG_CODE_BAD_REQUEST || m.type != ZB_MSG_NONE))
            s_die("unknown type flagged with a type or another code", &d);
        if (m.reject_id.len > 0) {
            const uint8_t *p = (const uint8_t *)m.reject_id.ptr;
            if (p < data || p + m.reject_id.len > data + size) s_die("echoed id outside", &d);
            if (m.reject_id.len > ZB_MSG_ID_BYTES_MAX ||
                !zb_mp_utf8_valid(m.reject_id.ptr, m.reject_id.len))
                s_die("echoed id malformed", &d);
        }
        return 0;
    }
    if (m.reject != ZB_MSG_CODE_NONE) s_die("success with a rejection code", &d);
    if (m.unknown_type) s_die("success flagged unknown_type", &d);
    s_check_meta(&m, &d);

    /* msgpack-c, an independent reader, sees one complete object.  Safe on
     * these bytes: every declared count was checked against the bytes. */
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, (const char *)data, size, &off) != MSGPACK_UNPACK_SUCCESS ||
        off != size || u.data.type != MSGPACK_OBJECT_MAP)
        s_die("msgpack-c disagrees", &d);
    msgpack_unpacked_destroy(&u);

    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    rc = zb_msg_encode(&m, &b1, &n1, &d);
    if (s_has_unknown_code(&m)) {
        if (rc != ZB_EINVAL) s_die("encoded an unknown error code", &d);
        zb_msg_free(&m);
        return 0;
    }
    if (rc != 0) s_die("a decoded message does not encode", &d);
    zb_msg_t m2;
    if (zb_msg_decode(b1, n1, &m2, &d) != 0) s_die("re-decode failed", &d);
    if (!zb_msg_equal(&m, &m2) || !zb_msg_equal(&m2, &m)) s_die("round trip changed it", &d);
    if (zb_msg_encode(&m2, &b2, &n2, &d) != 0) s_die("second encode failed", &d);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0) s_die("encoding is not canonical", &d);
    zb_msg_free(&m2);
    zb_msg_free(&m);
    free(b1);
    free(b2);
    return 0;
}
