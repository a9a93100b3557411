/*
 * test_msg.c -- the wire codec: proto/mp (bounded MessagePack reader)
 * and proto/msg (messages of PROTOCOL.md, packed with msgpack-c).
 *
 * What is checked:
 *   - the reader accepts every width of every type and refuses lengths and
 *     counts that run past the data, leaving the cursor where it was;
 *   - the encoder writes the smallest form of every value (fixstr, str
 *     8/16/32, uint widths, array 16/32, bin 8/16/32, float 64) at every
 *     width boundary, against bodies built by hand; UTF-8 validation agrees
 *     with utf8proc;
 *   - every message type round-trips (edge values included), decoded
 *     strings and vectors are views into the body, and msgpack-c reads our
 *     bodies as one complete object;
 *   - bodies written by hand with wide encodings (map16, str32, uint64,
 *     int8, bin32, float32 ...) decode to the same messages;
 *   - the worked examples of proto/PROTOCOL.md section 8, byte for byte;
 *   - hostile input: every truncation of valid bodies, declared counts of
 *     2^32-1, a wrong type in every field (every map value and first array
 *     element of every message, rebuilt with msgpack-c), every required
 *     key missing, every key duplicated, nesting past the limit, invalid
 *     UTF-8, v != 1, unknown type, cross-field mismatches, trailing bytes;
 *     each fails with ZB_EPROTO, a sentence naming the field, the right
 *     protocol code, and allocates nothing or a bounded amount;
 *   - the later options (sentences, token_vector, compat, token_meta) and
 *     token metadata (sentence, piece_id, word_start, oov): every rule of
 *     PROTOCOL.md (all four arrays or none, token level, lengths per text,
 *     an oov row's piece 0, options the engine cannot honour refused);
 *   - an unknown type is flagged (unknown_type) and nothing else is, so a
 *     client can ignore later revisions' messages.
 *
 * Run from the repository root (the examples are read from
 * proto/PROTOCOL.md).  ZB_PRINT_EXAMPLES=1 prints the examples' annotated
 * hex, as section 8 shows it; ZB_WRITE_CORPUS=dir writes the sample bodies
 * into dir as seeds for tests/fuzz/fuzz_msg.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "limits.h"
#include "msg.h"
#include "mp.h"

#define S(lit) ((zb_msg_str_t){lit, sizeof(lit) - 1})

/* --- a byte builder with explicit widths (hand-written bodies) ------------ */

typedef struct hb {
    uint8_t *b;
    size_t n, cap;
} hb_t;

static void hb_raw(hb_t *h, const void *p, size_t n) {
    if (h->n + n > h->cap) {
        h->cap = (h->n + n) * 2 + 64;
        h->b = realloc(h->b, h->cap);
        assert_non_null(h->b);
    }
    if (n) memcpy(h->b + h->n, p, n);
    h->n += n;
}

static void hb_byte(hb_t *h, uint8_t x) {
    hb_raw(h, &x, 1);
}

static void hb_be(hb_t *h, uint64_t v, int bytes) {
    for (int k = bytes - 1; k >= 0; k--) hb_byte(h, (uint8_t)(v >> (8 * k)));
}

/* width 0: fix form; 8/16/32: that header width. */
static void hb_str(hb_t *h, int width, const char *s) {
    size_t n = strlen(s);
    if (width == 0)
        hb_byte(h, (uint8_t)(0xa0 | n));
    else if (width == 8)
        hb_byte(h, 0xd9), hb_be(h, n, 1);
    else if (width == 16)
        hb_byte(h, 0xda), hb_be(h, n, 2);
    else
        hb_byte(h, 0xdb), hb_be(h, n, 4);
    hb_raw(h, s, n);
}

static void hb_bin(hb_t *h, int width, const void *p, size_t n) {
    if (width == 8)
        hb_byte(h, 0xc4), hb_be(h, n, 1);
    else if (width == 16)
        hb_byte(h, 0xc5), hb_be(h, n, 2);
    else
        hb_byte(h, 0xc6), hb_be(h, n, 4);
    hb_raw(h, p, n);
}

/* form 0: positive fixint; 8..64: uint N; -8..-64: int N. */
static void hb_uint(hb_t *h, int form, uint64_t v) {
    switch (form) {
    case 0:
        hb_byte(h, (uint8_t)v);
        break;
    case 8:
        hb_byte(h, 0xcc), hb_be(h, v, 1);
        break;
    case 16:
        hb_byte(h, 0xcd), hb_be(h, v, 2);
        break;
    case 32:
        hb_byte(h, 0xce), hb_be(h, v, 4);
        break;
    case 64:
        hb_byte(h, 0xcf), hb_be(h, v, 8);
        break;
    case -8:
        hb_byte(h, 0xd0), hb_be(h, v, 1);
        break;
    case -16:
        hb_byte(h, 0xd1), hb_be(h, v, 2);
        break;
    case -32:
        hb_byte(h, 0xd2), hb_be(h, v, 4);
        break;
    default:
        hb_byte(h, 0xd3), hb_be(h, v, 8);
        break;
    }
}

static void hb_container(hb_t *h, bool map, int width, uint32_t n) {
    if (width == 0)
        hb_byte(h, (uint8_t)((map ? 0x80 : 0x90) | n));
    else if (width == 16)
        hb_byte(h, map ? 0xde : 0xdc), hb_be(h, n, 2);
    else
        hb_byte(h, map ? 0xdf : 0xdd), hb_be(h, n, 4);
}
#define hb_map(h, w, n)   hb_container(h, true, w, n)
#define hb_array(h, w, n) hb_container(h, false, w, n)

static void hb_f32(hb_t *h, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    hb_byte(h, 0xca), hb_be(h, u, 4);
}

static void hb_f64(hb_t *h, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    hb_byte(h, 0xcb), hb_be(h, u, 8);
}

static void hb_free(hb_t *h) {
    free(h->b);
    memset(h, 0, sizeof *h);
}

/* --- helpers ------------------------------------------------------------------ */

static bool s_inside(const void *p, const void *body, size_t len) {
    const uint8_t *q = p, *b = body;
    return q >= b && q <= b + len;
}

/* Encodes m, checks msgpack-c reads it as one complete object, decodes it
 * and checks it equals m with views inside the body.  Returns the body. */
static uint8_t *s_roundtrip(const zb_msg_t *m, size_t *len_out) {
    uint8_t *buf = NULL;
    size_t len = 0;
    zb_diag_t d = {{0}};
    int rc = zb_msg_encode(m, &buf, &len, &d);
    if (rc != 0) fail_msg("encode %s: %d %s", zb_msg_type_name(m->type), rc, d.msg);

    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy(&u);

    zb_msg_t back;
    rc = zb_msg_decode(buf, len, &back, &d);
    if (rc != 0) fail_msg("decode %s: %d %s", zb_msg_type_name(m->type), rc, d.msg);
    assert_true(zb_msg_equal(m, &back));
    assert_true(zb_msg_equal(&back, m));
    assert_int_equal(zb_msg_decode_failure(&back), ZB_MSG_CODE_NONE);
    /* Each allocated element stands for at least one byte of the body. */
    assert_true(back.mem_bytes <= 16 * len + 256);
    switch (back.type) {
    case ZB_MSG_EMBED:
        assert_true(s_inside(back.u.embed.id.ptr, buf, len));
        for (size_t i = 0; i < back.u.embed.n_texts; i++)
            assert_true(s_inside(back.u.embed.texts[i].ptr, buf, len) ||
                        back.u.embed.texts[i].len == 0);
        break;
    case ZB_MSG_PART:
        if (back.u.part.vec.vectors_len) assert_true(s_inside(back.u.part.vec.vectors, buf, len));
        break;
    case ZB_MSG_RESULT:
        if (back.u.result.vec.vectors_len)
            assert_true(s_inside(back.u.result.vec.vectors, buf, len));
        break;
    default:
        break;
    }
    zb_msg_free(&back);
    assert_null(back.mem);
    if (len_out) *len_out = len;
    return buf;
}

static void s_accept(const void *b, size_t n, zb_msg_t *m) {
    zb_diag_t d = {{0}};
    int rc = zb_msg_decode(b, n, m, &d);
    if (rc != 0) fail_msg("expected success, got %d: %s", rc, d.msg);
}

/* --- the worked examples of PROTOCOL.md section 8 ------------------------- */

static const float s_part_vec[6] = {0.5f, -1.0f, 0.25f, 2.0f, 1.5f, -0.5f};
static const uint32_t s_part_rows[2] = {3, 0};
static const uint32_t s_part_off[6] = {0, 1, 2, 6, 7, 10};
static const zb_msg_text_error_t s_part_err[1] = {
    {1, ZB_MSG_CODE_BAD_UTF8, {"invalid UTF-8 at byte 3", 23}}};
static const zb_msg_str_t s_ex_texts[2] = {{"I love NLP", 10}, {"caf\xe9", 4}};
static const float s_res_vec[12] = {0.125f, -0.25f, 1, 0, -2, 0.75f, 3, -1, 0.5f, 0.5f, -0.125f, 4};
static const uint32_t s_res_rows[1] = {6};
static const uint32_t s_res_off[12] = {0, 0, 0, 1, 2, 6, 7, 9, 9, 10, 0, 0};
static const uint32_t s_res_ids[6] = {101, 146, 1567, 21239, 2101, 102};
static const zb_msg_str_t s_meta_texts[1] = {{"Hi. Don't", 9}};
static const float s_meta_vec[6] = {0.5f, 1.0f, -0.25f, 0.75f, 2.0f, -1.5f};
static const uint32_t s_meta_rows[1] = {3};
static const uint32_t s_meta_off[6] = {0, 2, 2, 3, 4, 9};
/* as decoded: the UTF-16 spans do not travel (-1) */
static const zb_token_meta_t s_meta_rows3[3] = {
    {.sentence = 0, .piece_id = 8790, .begin16 = -1, .end16 = -1, .word_start = true},
    {.sentence = 0, .piece_id = 119, .begin16 = -1, .end16 = -1, .word_start = true},
    {.sentence = 1, .piece_id = 1790, .begin16 = -1, .end16 = -1, .word_start = true}};

/* The example called name, as a struct. */
static bool s_example(const char *name, zb_msg_t *m) {
    memset(m, 0, sizeof *m);
    if (!strcmp(name, "embed")) {
        m->type = ZB_MSG_EMBED;
        m->u.embed = (zb_msg_embed_t){
            .id = S("r1"), .texts = s_ex_texts, .n_texts = 2, .deadline_ms = 30000};
    } else if (!strcmp(name, "part")) {
        m->type = ZB_MSG_PART;
        m->u.part = (zb_msg_part_t){.id = S("r1"),
                                    .first = 0,
                                    .vec = {.level = ZB_LEVEL_TOKEN,
                                            .dim = 2,
                                            .count = 2,
                                            .rows = s_part_rows,
                                            .n_rows = 3,
                                            .vectors = s_part_vec,
                                            .vectors_len = sizeof s_part_vec,
                                            .offsets = s_part_off,
                                            .byte_offsets = s_part_off,
                                            .errors = s_part_err,
                                            .n_errors = 1}};
    } else if (!strcmp(name, "done")) {
        m->type = ZB_MSG_DONE;
        m->u.done = (zb_msg_done_t){S("r1"), 2, 6, 1, 12, {NULL, 0}};
    } else if (!strcmp(name, "error")) {
        m->type = ZB_MSG_ERROR;
        m->u.error = (zb_msg_error_t){
            S("r2"), ZB_MSG_CODE_BUSY, S("the queue holds 250000 texts; retry later"), {NULL, 0}};
    } else if (!strcmp(name, "ready")) {
        m->type = ZB_MSG_READY;
        m->u.ready = (zb_msg_ready_t){S("node1:4242"), S("bert-base-cased"), 768, 8, 4, 1};
    } else if (!strcmp(name, "task")) {
        m->type = ZB_MSG_TASK;
        m->u.task = (zb_msg_task_t){.shard = 7,
                                    .epoch = 1,
                                    .texts = s_ex_texts,
                                    .n_texts = 1,
                                    .opt = {.level = ZB_LEVEL_WORDPIECE}};
    } else if (!strcmp(name, "result")) {
        m->type = ZB_MSG_RESULT;
        m->u.result = (zb_msg_result_t){.shard = 7,
                                        .epoch = 1,
                                        .tokens = 6,
                                        .vec = {.level = ZB_LEVEL_WORDPIECE,
                                                .dim = 2,
                                                .count = 1,
                                                .rows = s_res_rows,
                                                .n_rows = 6,
                                                .vectors = s_res_vec,
                                                .vectors_len = sizeof s_res_vec,
                                                .offsets = s_res_off,
                                                .byte_offsets = s_res_off,
                                                .ids = s_res_ids}};
    } else if (!strcmp(name, "heartbeat")) {
        m->type = ZB_MSG_HEARTBEAT;
    } else if (!strcmp(name, "embed_meta")) {
        m->type = ZB_MSG_EMBED;
        m->u.embed =
            (zb_msg_embed_t){.id = S("r3"),
                             .texts = s_meta_texts,
                             .n_texts = 1,
                             .opt = {.sentences = true, .token_vector = ZB_TOKEN_VECTOR_MEAN}};
    } else if (!strcmp(name, "part_meta")) {
        m->type = ZB_MSG_PART;
        m->u.part = (zb_msg_part_t){.id = S("r3"),
                                    .first = 0,
                                    .vec = {.level = ZB_LEVEL_TOKEN,
                                            .dim = 2,
                                            .count = 1,
                                            .rows = s_meta_rows,
                                            .n_rows = 3,
                                            .vectors = s_meta_vec,
                                            .vectors_len = sizeof s_meta_vec,
                                            .offsets = s_meta_off,
                                            .byte_offsets = s_meta_off,
                                            .token_meta = true,
                                            .meta = s_meta_rows3}};
    } else {
        return false;
    }
    return true;
}

/* The examples of section 8: its heading number and the example's name. */
static const struct {
    const char *section, *name;
} s_examples[] = {{"8.1", "embed"},     {"8.2", "part"},      {"8.3", "done"},
                  {"8.4", "error"},     {"8.5", "ready"},     {"8.6", "task"},
                  {"8.7", "result"},    {"8.8", "heartbeat"}, {"8.9", "embed_meta"},
                  {"8.10", "part_meta"}};

/* Annotated hex of one value (as section 8 shows it): one line per header
 * or scalar, long payloads 16 bytes a line, comments after ';'. */
static void s_hexline(FILE *f, const uint8_t *p, size_t n, int depth, const char *fmt, ...) {
    char hex[64] = "";
    for (size_t k = 0; k < n && k < 16; k++) snprintf(hex + 3 * k, 4, "%02x ", p[k]);
    if (n) hex[3 * (n < 16 ? n : 16) - 1] = '\0';
    if (*fmt == '\0') {
        fprintf(f, "%s\n", hex);
        return;
    }
    fprintf(f, "%-48s; %*s", hex, 2 * depth, "");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

static void s_hexdump(FILE *f, zb_mp_reader_t *r, int depth) {
    const uint8_t *p0 = r->p;
    size_t n;
    uint64_t u;
    bool b;
    double x;
    const char *s;
    const uint8_t *bin;
    switch (zb_mp_peek(r)) {
    case ZB_MP_MAP:
        assert_int_equal(zb_mp_read_map(r, &n), 0);
        s_hexline(f, p0, (size_t)(r->p - p0), depth, "map, %zu pairs", n);
        for (size_t k = 0; k < 2 * n; k++) s_hexdump(f, r, depth + (k % 2));
        break;
    case ZB_MP_ARRAY: {
        assert_int_equal(zb_mp_read_array(r, &n), 0);
        /* A short array of uints or bools fits on one line. */
        zb_mp_reader_t r2 = *r;
        char q[80] = "";
        size_t at = 0, k = 0;
        for (; k < n && r2.p - p0 < 16; k++) {
            if (zb_mp_read_uint(&r2, &u) == 0)
                at += (size_t)snprintf(q + at, sizeof q - at, "%s%llu", k ? ", " : "",
                                       (unsigned long long)u);
            else if (zb_mp_read_bool(&r2, &b) == 0)
                at += (size_t)snprintf(q + at, sizeof q - at, "%s%s", k ? ", " : "",
                                       b ? "true" : "false");
            else
                break;
            if (r2.p - p0 > 16) break;
        }
        if (k == n) {
            r->p = r2.p;
            s_hexline(f, p0, (size_t)(r->p - p0), depth, "[%s]", q);
            break;
        }
        s_hexline(f, p0, (size_t)(r->p - p0), depth, "array, %zu", n);
        for (k = 0; k < n; k++) s_hexdump(f, r, depth + 1);
        break;
    }
    case ZB_MP_STR: {
        assert_int_equal(zb_mp_read_str(r, &s, &n), 0);
        char q[80];
        size_t at = 0;
        for (size_t k = 0; k < n && at < sizeof q - 6; k++) {
            unsigned char c = (unsigned char)s[k];
            at += (size_t)snprintf(q + at, sizeof q - at, c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x",
                                   c);
        }
        q[at] = '\0';
        size_t all = (size_t)(r->p - p0);
        for (size_t off = 0; off < all; off += 16) {
            size_t m = all - off < 16 ? all - off : 16;
            if (off == 0)
                s_hexline(f, p0, m, depth, "\"%s\"", q);
            else
                s_hexline(f, p0 + off, m, depth, "");
        }
        break;
    }
    case ZB_MP_BIN: {
        assert_int_equal(zb_mp_read_bin(r, &bin, &n), 0);
        s_hexline(f, p0, (size_t)(bin - p0), depth, "bin, %zu bytes", n);
        for (size_t off = 0; off < n; off += 16) {
            size_t m = n - off < 16 ? n - off : 16;
            char q[128];
            size_t at = 0;
            for (size_t k = 0; k + 4 <= m; k += 4) {
                float v;
                memcpy(&v, bin + off + k, 4);
                at += (size_t)snprintf(q + at, sizeof q - at, "%s%g",
                                       k ? ", " : "float32 LE: ", (double)v);
            }
            s_hexline(f, bin + off, m, depth + 1, "%s", q);
        }
        break;
    }
    case ZB_MP_UINT:
        assert_int_equal(zb_mp_read_uint(r, &u), 0);
        s_hexline(f, p0, (size_t)(r->p - p0), depth, "%llu", (unsigned long long)u);
        break;
    case ZB_MP_BOOL:
        assert_int_equal(zb_mp_read_bool(r, &b), 0);
        s_hexline(f, p0, 1, depth, b ? "true" : "false");
        break;
    case ZB_MP_FLOAT:
        assert_int_equal(zb_mp_read_float(r, &x), 0);
        s_hexline(f, p0, (size_t)(r->p - p0), depth, "%g", x);
        break;
    default:
        fail_msg("unexpected kind in an example");
    }
}

/* The hex block after the heading "### <section> " of PROTOCOL.md. */
static uint8_t *s_doc_example(const char *doc, const char *section, size_t *len) {
    char heading[64];
    snprintf(heading, sizeof heading, "\n### %s ", section);
    const char *h = strstr(doc, heading);
    if (h == NULL) return NULL;
    const char *name = section;
    const char *fence = strstr(h, "\n```hex\n");
    if (fence == NULL) return NULL;
    const char *p = fence + 8, *end = strstr(p, "\n```");
    if (end == NULL) return NULL;
    uint8_t *out = malloc((size_t)(end - p) / 2 + 1);
    size_t n = 0;
    bool comment = false;
    for (; p < end; p++) {
        if (*p == '\n')
            comment = false;
        else if (*p == ';')
            comment = true;
        if (comment || *p == ' ' || *p == '\n') continue;
        unsigned v;
        if (sscanf(p, "%2x", &v) != 1) fail_msg("example %s: bad hex near `%.10s`", name, p);
        out[n++] = (uint8_t)v;
        p++;
    }
    *len = n;
    return out;
}

static char *s_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void test_doc_examples(void **state) {
    (void)state;
    char *doc = s_read_file("proto/PROTOCOL.md");
    if (doc == NULL) fail_msg("proto/PROTOCOL.md not found: run from the repository root");
    size_t n_examples = sizeof s_examples / sizeof *s_examples;
    for (size_t k = 0; k < n_examples && getenv("ZB_PRINT_EXAMPLES"); k++) {
        zb_msg_t m;
        assert_true(s_example(s_examples[k].name, &m));
        size_t len;
        uint8_t *body = s_roundtrip(&m, &len);
        printf("### %s %s\n```hex\n", s_examples[k].section, s_examples[k].name);
        zb_mp_reader_t r;
        zb_mp_reader_init(&r, body, len);
        s_hexdump(stdout, &r, 0);
        assert_int_equal(zb_mp_left(&r), 0);
        printf("```\n(%zu bytes)\n\n", len);
        free(body);
    }
    for (size_t k = 0; k < n_examples; k++) {
        zb_msg_t m;
        const char *name = s_examples[k].name, *sec = s_examples[k].section;
        assert_true(s_example(name, &m));
        size_t len;
        uint8_t *body = s_roundtrip(&m, &len);
        size_t dlen = 0;
        uint8_t *dbytes = s_doc_example(doc, sec, &dlen);
        if (dbytes == NULL) fail_msg("PROTOCOL.md has no example %s (`%s`)", sec, name);
        if (dlen != len || memcmp(dbytes, body, len) != 0)
            fail_msg("PROTOCOL.md example %s (`%s`) differs from the encoder's %zu bytes", sec,
                     name, len);
        zb_msg_t back;
        s_accept(dbytes, dlen, &back);
        assert_true(zb_msg_equal(&m, &back));
        zb_msg_free(&back);
        free(dbytes);
        free(body);
    }
    free(doc);
}

/* --- hex strings -------------------------------------------------------------- */

/* Bytes of a hex string (spaces ignored) into a static buffer. */
static const uint8_t *s_hex(const char *hex, size_t *n) {
    static uint8_t buf[4096];
    size_t k = 0;
    for (const char *p = hex; *p; p++) {
        if (*p == ' ') continue;
        unsigned v;
        assert_int_equal(sscanf(p, "%2x", &v), 1);
        assert_true(k < sizeof buf);
        buf[k++] = (uint8_t)v;
        p++;
    }
    *n = k;
    return buf;
}

/* --- proto/mp: reader ------------------------------------------------------- */

static void test_mp_uint_widths(void **state) {
    (void)state;
    static const struct {
        const char *hex;
        uint64_t v;
    } ok[] = {
        {"00", 0},
        {"7f", 127},
        {"cc 80", 128},
        {"cc ff", 255},
        {"cc 05", 5}, /* wider than needed is fine */
        {"cd 01 00", 256},
        {"cd ff ff", 65535},
        {"cd 00 00", 0},
        {"ce 00 01 00 00", 65536},
        {"ce ff ff ff ff", 4294967295u},
        {"cf 00 00 00 01 00 00 00 00", 4294967296u},
        {"cf ff ff ff ff ff ff ff ff", UINT64_MAX},
        {"cf 00 00 00 00 00 00 00 01", 1},
        {"d0 05", 5},
        {"d0 7f", 127},
        {"d1 7f ff", 32767},
        {"d1 00 01", 1},
        {"d2 7f ff ff ff", 2147483647},
        {"d3 7f ff ff ff ff ff ff ff", INT64_MAX},
        {"d3 00 00 00 00 00 00 00 00", 0},
    };
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++) {
        size_t n;
        const uint8_t *b = s_hex(ok[k].hex, &n);
        zb_mp_reader_t r;
        zb_mp_reader_init(&r, b, n);
        assert_int_equal(zb_mp_peek(&r), ZB_MP_UINT);
        uint64_t v = 12345;
        assert_int_equal(zb_mp_read_uint(&r, &v), 0);
        assert_true(v == ok[k].v);
        assert_int_equal(zb_mp_left(&r), 0);
        /* any integer also reads as a float */
        zb_mp_reader_init(&r, b, n);
        double x;
        assert_int_equal(zb_mp_read_float(&r, &x), 0);
        assert_true(x == (double)ok[k].v);
    }
    static const struct {
        const char *hex;
        zb_mp_kind_t kind; /* what peek says */
    } bad[] = {
        {"ff", ZB_MP_NEGINT},
        {"e0", ZB_MP_NEGINT},
        {"d0 80", ZB_MP_NEGINT},
        {"d1 ff 00", ZB_MP_NEGINT},
        {"d2 ff ff ff ff", ZB_MP_NEGINT},
        {"d3 80 00 00 00 00 00 00 00", ZB_MP_NEGINT},
        {"c0", ZB_MP_NIL},
        {"c3", ZB_MP_BOOL},
        {"a1 31", ZB_MP_STR},
        {"c4 01 31", ZB_MP_BIN},
        {"91 01", ZB_MP_ARRAY},
        {"80", ZB_MP_MAP},
        {"ca 3f 80 00 00", ZB_MP_FLOAT},
        {"cb 3f f0 00 00 00 00 00 00", ZB_MP_FLOAT},
        {"d4 01 00", ZB_MP_EXT},
        {"c1", ZB_MP_INVALID},
        {"", ZB_MP_END},
        /* cut short: the kind is known, the value is not there */
        {"cc", ZB_MP_UINT},
        {"cd 01", ZB_MP_UINT},
        {"ce 00 00 01", ZB_MP_UINT},
        {"cf 00 00 00 00 00 00 00", ZB_MP_UINT},
        {"d0", ZB_MP_UINT},
        {"d3 00 00", ZB_MP_UINT},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        size_t n;
        const uint8_t *b = s_hex(bad[k].hex, &n);
        zb_mp_reader_t r;
        zb_mp_reader_init(&r, b, n);
        assert_int_equal(zb_mp_peek(&r), bad[k].kind);
        uint64_t v = 7;
        assert_int_equal(zb_mp_read_uint(&r, &v), ZB_EFORMAT);
        assert_non_null(r.why);
        assert_true(v == 7);
        assert_int_equal(zb_mp_pos(&r), 0); /* the cursor did not move */
    }
    /* negative integers read as floats */
    size_t n;
    const uint8_t *b = s_hex("d1 ff 00", &n);
    zb_mp_reader_t r;
    zb_mp_reader_init(&r, b, n);
    double x;
    assert_int_equal(zb_mp_read_float(&r, &x), 0);
    assert_true(x == -256.0);
}

static void test_mp_other_widths(void **state) {
    (void)state;
    static const char *const strs[] = {"a3 61 62 63", "d9 03 61 62 63", "da 00 03 61 62 63",
                                       "db 00 00 00 03 61 62 63"};
    static const char *const bins[] = {"c4 03 61 62 63", "c5 00 03 61 62 63",
                                       "c6 00 00 00 03 61 62 63"};
    static const char *const arrays[] = {"93 01 02 03", "dc 00 03 01 02 03",
                                         "dd 00 00 00 03 01 02 03"};
    static const char *const maps[] = {"82 01 02 03 04", "de 00 02 01 02 03 04",
                                       "df 00 00 00 02 01 02 03 04"};
    size_t n, len;
    zb_mp_reader_t r;
    for (int k = 0; k < 4; k++) {
        const uint8_t *b = s_hex(strs[k], &n);
        zb_mp_reader_init(&r, b, n);
        const char *s;
        assert_int_equal(zb_mp_peek(&r), ZB_MP_STR);
        assert_int_equal(zb_mp_read_str(&r, &s, &len), 0);
        assert_int_equal(len, 3);
        assert_memory_equal(s, "abc", 3);
        assert_ptr_equal(s, b + n - 3); /* a view, not a copy */
        assert_int_equal(zb_mp_left(&r), 0);
    }
    for (int k = 0; k < 3; k++) {
        const uint8_t *b = s_hex(bins[k], &n), *p;
        zb_mp_reader_init(&r, b, n);
        assert_int_equal(zb_mp_peek(&r), ZB_MP_BIN);
        assert_int_equal(zb_mp_read_bin(&r, &p, &len), 0);
        assert_int_equal(len, 3);
        assert_ptr_equal(p, b + n - 3);
        /* a bin is not a str, and the reverse */
        zb_mp_reader_init(&r, b, n);
        const char *s;
        assert_int_equal(zb_mp_read_str(&r, &s, &len), ZB_EFORMAT);
    }
    for (int k = 0; k < 3; k++) {
        const uint8_t *b = s_hex(arrays[k], &n);
        zb_mp_reader_init(&r, b, n);
        assert_int_equal(zb_mp_read_array(&r, &len), 0);
        assert_int_equal(len, 3);
        for (uint64_t i = 1, v; i <= 3; i++) {
            assert_int_equal(zb_mp_read_uint(&r, &v), 0);
            assert_true(v == i);
        }
        b = s_hex(maps[k], &n);
        zb_mp_reader_init(&r, b, n);
        assert_int_equal(zb_mp_read_map(&r, &len), 0);
        assert_int_equal(len, 2);
        assert_int_equal(zb_mp_left(&r), 4);
    }
    const uint8_t *b = s_hex("c0 c2 c3 ca 3f c0 00 00 cb 3f f8 00 00 00 00 00 00", &n);
    zb_mp_reader_init(&r, b, n);
    bool t = true, f = false;
    double x, y;
    assert_int_equal(zb_mp_read_nil(&r), 0);
    assert_int_equal(zb_mp_read_bool(&r, &f), 0);
    assert_int_equal(zb_mp_read_bool(&r, &t), 0);
    assert_false(f);
    assert_true(t);
    assert_int_equal(zb_mp_read_float(&r, &x), 0);
    assert_int_equal(zb_mp_read_float(&r, &y), 0);
    assert_true(x == 1.5 && y == 1.5);
    assert_int_equal(zb_mp_left(&r), 0);
}

/* Declared lengths and counts that run past the data fail before anything
 * is read past the end, whatever their size; the cursor stays put. */
static void test_mp_bounds(void **state) {
    (void)state;
    static const char *const lies[] = {
        "db ff ff ff ff 61",    /* str32 of 2^32-1 bytes, 1 present */
        "da 00 05 61 62",       /* str16 of 5, 2 present */
        "d9 02 61",             /* str8 of 2, 1 present */
        "a5 61 62",             /* fixstr of 5, 2 present */
        "c6 ff ff ff ff 00",    /* bin32 */
        "c4 01",                /* bin8 of 1, none present */
        "dd ff ff ff ff 01 02", /* array32 of 2^32-1 */
        "dc ff ff 01",          /* array16 */
        "94 01 02 03",          /* fixarray of 4, 3 bytes */
        "df ff ff ff ff 01 01", /* map32 */
        "82 01 02 03",          /* map of 2 pairs needs >= 4 bytes */
        "de 00 02 01 02 03",    /* map16, same */
        "db ff ff ff",          /* header itself cut short */
        "c7 ff 01 00",          /* ext8 of 255 */
        "c9 ff ff ff ff 01 02", /* ext32 */
        "d8 01 00 00",          /* fixext16, 2 of 16 bytes */
        "c1",                   /* never used */
    };
    for (size_t k = 0; k < sizeof lies / sizeof *lies; k++) {
        size_t n, len;
        const uint8_t *b = s_hex(lies[k], &n), *p;
        const char *s;
        zb_mp_reader_t r;
        zb_mp_reader_init(&r, b, n);
        switch (zb_mp_peek(&r)) {
        case ZB_MP_STR:
            assert_int_equal(zb_mp_read_str(&r, &s, &len), ZB_EFORMAT);
            break;
        case ZB_MP_BIN:
            assert_int_equal(zb_mp_read_bin(&r, &p, &len), ZB_EFORMAT);
            break;
        case ZB_MP_ARRAY:
            assert_int_equal(zb_mp_read_array(&r, &len), ZB_EFORMAT);
            break;
        case ZB_MP_MAP:
            assert_int_equal(zb_mp_read_map(&r, &len), ZB_EFORMAT);
            break;
        default:
            break;
        }
        assert_int_equal(zb_mp_pos(&r), 0);
        assert_int_equal(zb_mp_skip(&r, 8), ZB_EFORMAT);
        assert_int_equal(zb_mp_pos(&r), 0);
        assert_non_null(r.why);
    }
    /* exactly as many bytes as declared is fine */
    size_t n, len;
    const uint8_t *b = s_hex("92 01 02", &n);
    zb_mp_reader_t r;
    zb_mp_reader_init(&r, b, n);
    assert_int_equal(zb_mp_read_array(&r, &len), 0);
    assert_int_equal(len, 2);
    /* a container whose count fits the bytes but whose elements do not */
    b = s_hex("92 a3 61 62", &n);
    zb_mp_reader_init(&r, b, n);
    assert_int_equal(zb_mp_skip(&r, 8), ZB_EFORMAT);
    assert_int_equal(zb_mp_pos(&r), 0);
}

static void test_mp_skip(void **state) {
    (void)state;
    /* every kind, ext included, skipped exactly */
    size_t n;
    const uint8_t *b = s_hex("8f"
                             "00 c0  01 c3  02 ff  03 d3 80 00 00 00 00 00 00 00"
                             "04 ca 00 00 00 00  05 cb 00 00 00 00 00 00 00 00"
                             "06 a2 68 69  07 c5 00 01 00  08 d4 01 02"
                             "09 d8 05 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f"
                             "0a c7 02 05 01 02  0b c8 00 01 05 00  0c c9 00 00 00 00 05"
                             "0d 92 80 90  0e 81 a0 c0"
                             "a1 7a",
                             &n);
    zb_mp_reader_t r;
    zb_mp_reader_init(&r, b, n);
    assert_int_equal(zb_mp_skip(&r, 8), 0);
    assert_int_equal(zb_mp_left(&r), 2);
    /* depth: 8 nested arrays need depth 8 */
    uint8_t deep[16];
    for (int d = 1; d <= 12; d++) {
        memset(deep, 0x91, (size_t)d);
        deep[d] = 0x00;
        for (int allow = 0; allow <= 12; allow++) {
            zb_mp_reader_init(&r, deep, (size_t)d + 1);
            int rc = zb_mp_skip(&r, allow);
            assert_int_equal(rc, d <= allow ? 0 : ZB_EFORMAT);
            assert_int_equal(zb_mp_pos(&r), d <= allow ? (size_t)d + 1 : 0);
        }
    }
    /* map values count as a level too */
    b = s_hex("81 00 81 00 81 00 00", &n);
    zb_mp_reader_init(&r, b, n);
    assert_int_equal(zb_mp_skip(&r, 2), ZB_EFORMAT);
    assert_int_equal(zb_mp_skip(&r, 3), 0);
}

static bool s_utf8proc_valid(const uint8_t *s, size_t n) {
    while (n > 0) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
        if (k <= 0) return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

static void test_utf8(void **state) {
    (void)state;
    static const struct {
        const char *hex;
        bool ok;
    } cases[] = {
        {"", true},
        {"61 62 63", true},
        {"c3 a9", true},       /* é */
        {"e2 82 ac", true},    /* € */
        {"f0 9f 98 80", true}, /* U+1F600 */
        {"f4 8f bf bf", true}, /* U+10FFFF */
        {"ef bf bf", true},    /* U+FFFF */
        {"ed 9f bf", true},    /* U+D7FF */
        {"ee 80 80", true},    /* U+E000 */
        {"41 41 41 41 41 41 41 41 c3 a9 41", true},
        {"e9", false}, /* Latin-1 é */
        {"c3", false}, /* cut short */
        {"e2 82", false},
        {"f0 9f 98", false},
        {"80", false},    /* lone continuation */
        {"c0 80", false}, /* overlong NUL */
        {"c1 bf", false},
        {"e0 80 80", false}, /* overlong */
        {"e0 9f bf", false},
        {"f0 80 80 80", false},
        {"f0 8f bf bf", false},
        {"ed a0 80", false},    /* surrogate U+D800 */
        {"ed bf bf", false},    /* U+DFFF */
        {"f4 90 80 80", false}, /* U+110000 */
        {"f5 80 80 80", false},
        {"ff", false},
        {"c3 41", false}, /* bad continuation */
        {"41 41 41 41 41 41 41 41 41 41 41 41 41 41 41 e9", false},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t n;
        const uint8_t *b = s_hex(cases[k].hex, &n);
        if (zb_mp_utf8_valid(b, n) != cases[k].ok) fail_msg("utf8 case %zu: %s", k, cases[k].hex);
        assert_int_equal(s_utf8proc_valid(b, n), cases[k].ok);
    }
    /* utf8proc as the judge over random strings rich in high bytes */
    uint64_t x = 88172645463325252ull;
    uint8_t buf[12];
    for (int it = 0; it < 300000; it++) {
        size_t n = (size_t)(it % 12);
        for (size_t k = 0; k < n; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            static const uint8_t pick[] = {0x41, 0x80, 0x9f, 0xa0, 0xbf, 0xc2, 0xc3, 0xdf,
                                           0xe0, 0xe1, 0xed, 0xee, 0xef, 0xf0, 0xf4, 0xf5};
            buf[k] = (x >> 40) & 1 ? pick[(x >> 20) & 15] : (uint8_t)(x >> 8);
        }
        if (zb_mp_utf8_valid(buf, n) != s_utf8proc_valid(buf, n))
            fail_msg("utf8 disagrees with utf8proc on a %zu-byte string", n);
    }
}

/* --- encoder: the smallest form of every value, byte for byte ------------- */

/* Encodes m and checks the body is exactly want's bytes (built by hand with
 * explicit widths, independently of the packer). */
static void s_encodes_to(const zb_msg_t *m, const hb_t *want, const char *what) {
    uint8_t *buf = NULL;
    size_t len = 0;
    zb_diag_t d = {{0}};
    if (zb_msg_encode(m, &buf, &len, &d) != 0) fail_msg("%s: encode failed: %s", what, d.msg);
    size_t k = 0;
    while (k < len && k < want->n && buf[k] == want->b[k]) k++;
    if (len != want->n || k != len)
        fail_msg("%s: %zu bytes, expected %zu; first difference at byte %zu", what, len, want->n,
                 k);
    free(buf);
}

static void hb_head(hb_t *h, uint32_t n_keys, const char *type) {
    hb_map(h, 0, n_keys + 2);
    hb_str(h, 0, "v"), hb_uint(h, 0, 1);
    hb_str(h, 0, "type"), hb_str(h, 0, type);
}

static void test_encode_smallest_forms(void **state) {
    (void)state;
    zb_msg_t m;
    hb_t h = {0};
    char what[64];

    /* str: fixstr up to 31 bytes, then str 8, 16, 32 */
    static const struct {
        size_t len;
        int width;
    } strs[] = {{0, 0}, {1, 0}, {31, 0}, {32, 8}, {255, 8}, {256, 16}, {1024, 16}};
    char *text = malloc(65537);
    memset(text, 'm', 65536);
    for (size_t k = 0; k < sizeof strs / sizeof *strs; k++) {
        text[strs[k].len] = '\0';
        m = (zb_msg_t){.type = ZB_MSG_ERROR};
        m.u.error = (zb_msg_error_t){.code = ZB_MSG_CODE_BUSY, .message = {text, strs[k].len}};
        hb_head(&h, 2, "error");
        hb_str(&h, 0, "code"), hb_str(&h, 0, "busy");
        hb_str(&h, 0, "message"), hb_str(&h, strs[k].width, text);
        snprintf(what, sizeof what, "message of %zu bytes", strs[k].len);
        s_encodes_to(&m, &h, what);
        hb_free(&h);
        text[strs[k].len] = 'm';
    }
    /* texts (whose size the protocol leaves to the engine) reach str 16 and
     * 32; every option key written; arrays: fixarray, array 16, array 32 */
    static const struct {
        size_t len, n;
        int sw, aw;
    } texts[] = {{65535, 1, 16, 0}, {65536, 1, 32, 0}, {0, 15, 0, 0},
                 {0, 16, 0, 16},    {0, 65535, 0, 16}, {0, 65536, 0, 32}};
    zb_msg_str_t *many = malloc(65536 * sizeof *many);
    for (size_t k = 0; k < sizeof texts / sizeof *texts; k++) {
        text[texts[k].len] = '\0';
        for (size_t i = 0; i < texts[k].n; i++) many[i] = (zb_msg_str_t){text, texts[k].len};
        m = (zb_msg_t){.type = ZB_MSG_EMBED};
        m.u.embed = (zb_msg_embed_t){.id = S("a"),
                                     .texts = many,
                                     .n_texts = texts[k].n,
                                     .opt = {ZB_LEVEL_SENTENCE, ZB_POOLING_MEAN, true, true}};
        hb_head(&h, 6, "embed");
        hb_str(&h, 0, "id"), hb_str(&h, 0, "a");
        hb_str(&h, 0, "texts"), hb_array(&h, texts[k].aw, (uint32_t)texts[k].n);
        for (size_t i = 0; i < texts[k].n; i++) hb_str(&h, texts[k].sw, text);
        hb_str(&h, 0, "level"), hb_str(&h, 0, "sentence");
        hb_str(&h, 0, "pooling"), hb_str(&h, 0, "mean");
        hb_str(&h, 0, "normalize"), hb_byte(&h, 0xc3);
        hb_str(&h, 0, "windows"), hb_byte(&h, 0xc3);
        snprintf(what, sizeof what, "%zu texts of %zu bytes", texts[k].n, texts[k].len);
        s_encodes_to(&m, &h, what);
        hb_free(&h);
        text[texts[k].len] = 'm';
    }
    free(many);
    free(text);

    /* uint: positive fixint up to 127, then uint 8, 16, 32, 64 (never int) */
    static const struct {
        uint64_t v;
        int form;
    } uints[] = {{0, 0},          {127, 0},         {128, 8},
                 {255, 8},        {256, 16},        {65535, 16},
                 {65536, 32},     {UINT32_MAX, 32}, {(uint64_t)UINT32_MAX + 1, 64},
                 {UINT64_MAX, 64}};
    for (size_t k = 0; k < sizeof uints / sizeof *uints; k++) {
        m = (zb_msg_t){.type = ZB_MSG_DONE};
        m.u.done = (zb_msg_done_t){S("r"), ZB_MSG_TEXTS_MAX, uints[k].v, 1, uints[k].v, {NULL, 0}};
        hb_head(&h, 5, "done");
        hb_str(&h, 0, "id"), hb_str(&h, 0, "r");
        hb_str(&h, 0, "texts"), hb_uint(&h, 32, ZB_MSG_TEXTS_MAX);
        hb_str(&h, 0, "tokens"), hb_uint(&h, uints[k].form, uints[k].v);
        hb_str(&h, 0, "parts"), hb_uint(&h, 0, 1);
        hb_str(&h, 0, "elapsed_ms"), hb_uint(&h, uints[k].form, uints[k].v);
        snprintf(what, sizeof what, "uint %llu", (unsigned long long)uints[k].v);
        s_encodes_to(&m, &h, what);
        hb_free(&h);
    }

    /* bin: bin 8 up to 255 bytes (empty included), then bin 16, 32 */
    static const struct {
        uint32_t dim, rows;
        int width;
    } bins[] = {{1, 0, 8}, {63, 1, 8}, {64, 1, 16}, {16383, 1, 16}, {16384, 1, 32}};
    float *vec = calloc(16384, sizeof *vec);
    for (size_t i = 0; i < 16384; i++) vec[i] = (float)i - 0.5f;
    for (size_t k = 0; k < sizeof bins / sizeof *bins; k++) {
        uint32_t rows[1] = {bins[k].rows};
        size_t bytes = (size_t)bins[k].dim * 4 * bins[k].rows;
        m = (zb_msg_t){.type = ZB_MSG_RESULT};
        m.u.result = (zb_msg_result_t){.shard = 3,
                                       .epoch = 70000,
                                       .tokens = 9,
                                       .vec = {.level = ZB_LEVEL_SENTENCE,
                                               .dim = bins[k].dim,
                                               .count = 1,
                                               .rows = rows,
                                               .n_rows = bins[k].rows,
                                               .vectors = bytes ? vec : NULL,
                                               .vectors_len = bytes}};
        hb_head(&h, 7, "result");
        hb_str(&h, 0, "shard"), hb_uint(&h, 0, 3);
        hb_str(&h, 0, "epoch"), hb_uint(&h, 32, 70000);
        hb_str(&h, 0, "tokens"), hb_uint(&h, 0, 9);
        hb_str(&h, 0, "level"), hb_str(&h, 0, "sentence");
        hb_str(&h, 0, "dim"), hb_uint(&h, bins[k].dim < 128 ? 0 : 16, bins[k].dim);
        hb_str(&h, 0, "rows"), hb_array(&h, 0, 1), hb_uint(&h, 0, bins[k].rows);
        hb_str(&h, 0, "vectors"), hb_bin(&h, bins[k].width, vec, bytes);
        snprintf(what, sizeof what, "bin of %zu bytes", bytes);
        s_encodes_to(&m, &h, what);
        hb_free(&h);
    }
    free(vec);

    /* float: always float 64, whole numbers and zero included */
    m = (zb_msg_t){.type = ZB_MSG_STATUS_REPLY};
    m.u.status_reply = (zb_msg_status_reply_t){.uptime_ms = 1000,
                                               .requests = 200,
                                               .texts_per_s = 2.0,
                                               .tokens_per_s = 0.0,
                                               .latency_p50_ms = 0.1,
                                               .latency_p90_ms = 1e300,
                                               .latency_p99_ms = 5e-324};
    hb_head(&h, 10, "status_reply");
    hb_str(&h, 0, "uptime_ms"), hb_uint(&h, 16, 1000);
    hb_str(&h, 0, "workers"), hb_array(&h, 0, 0);
    hb_str(&h, 0, "requests"), hb_uint(&h, 8, 200);
    hb_str(&h, 0, "queued_shards"), hb_uint(&h, 0, 0);
    hb_str(&h, 0, "queued_texts"), hb_uint(&h, 0, 0);
    hb_str(&h, 0, "in_flight_shards"), hb_uint(&h, 0, 0);
    hb_str(&h, 0, "texts_per_s"), hb_f64(&h, 2.0);
    hb_str(&h, 0, "tokens_per_s"), hb_f64(&h, 0.0);
    hb_str(&h, 0, "latency_ms"), hb_map(&h, 0, 3);
    hb_str(&h, 0, "p50"), hb_f64(&h, 0.1);
    hb_str(&h, 0, "p90"), hb_f64(&h, 1e300);
    hb_str(&h, 0, "p99"), hb_f64(&h, 5e-324);
    hb_str(&h, 0, "protocol_errors"), hb_uint(&h, 0, 0);
    s_encodes_to(&m, &h, "status_reply floats");
    hb_free(&h);
}

/* --- sample messages ------------------------------------------------------ */

static const float s_f_wp[28] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
                                 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28};
static const uint32_t s_rows_wp[3] = {4, 0, 3};
static const uint32_t s_off_wp[14] = {0, 0, 0, 2, 2, 5, 0, 0, 0, 0, 0, 3, 0, 0};
static const uint32_t s_boff_wp[14] = {0, 0, 0, 2, 2, 6, 0, 0, 0, 0, 0, 4, 0, 0};
static const uint32_t s_ids_wp[7] = {101, 7, 8, 102, 101, 9, 102};
static const uint32_t s_trunc_wp[1] = {12};
static const zb_msg_text_error_t s_err_wp[1] = {
    {11, ZB_MSG_CODE_TOO_LARGE, {"text of 2000000 bytes is over the 1 MiB limit", 45}}};
static const float s_f_sent[6] = {0.1f, 0.2f, 0.3f, -0.1f, -0.2f, -0.3f};
static const uint32_t s_rows_sent[3] = {1, 0, 1};
static const uint32_t s_trunc_sent[1] = {99999};
static const zb_msg_text_error_t s_err_sent[1] = {{99998, ZB_MSG_CODE_BAD_UTF8, {NULL, 0}}};
static const float s_f_res[6] = {1, -1, 2, -2, 3, -3};
static const uint32_t s_rows_res[3] = {2, 1, 0};
static const uint32_t s_off_res[6] = {0, 3, 4, 8, 0, 5};
static const uint32_t s_boff_res[6] = {0, 3, 4, 9, 0, 6};
static const uint32_t s_trunc_res[1] = {0};
static const zb_msg_text_error_t s_err_res[1] = {{2, ZB_MSG_CODE_INTERNAL, {"worker failed", 13}}};
static const zb_msg_str_t s_texts3[3] = {{"first text", 10}, {"", 0}, {"\xff\xfe", 2}};
static const zb_msg_worker_info_t s_workers[2] = {
    {{"a:1", 3}, {"bert-base-cased", 15}, 768, 8, 4, 2, 100, 123456, 15, 0},
    {{"b:2", 3}, {"bert-base-cased", 15}, 768, 16, 8, 0, 0, 0, 999999, 29000}};

static const zb_msg_str_t s_texts_opt[2] = {{"Hi. Don't", 9}, {"", 0}};
static const float s_f_meta[6] = {1, 2, 0, 0, -3, 4};
static const uint32_t s_rows_meta[3] = {2, 0, 1};
static const uint32_t s_off_meta[6] = {0, 2, 4, 5, 3, 8};
static const uint32_t s_boff_meta[6] = {0, 2, 4, 6, 3, 9};
/* row 1 is oov: piece -1 here, 0 on the wire */
static const zb_token_meta_t s_tm_meta[3] = {
    {.sentence = 0, .piece_id = 146, .begin16 = -1, .end16 = -1, .word_start = true},
    {.sentence = 1, .piece_id = -1, .begin16 = -1, .end16 = -1, .oov = true},
    {.sentence = 0, .piece_id = 1790, .begin16 = -1, .end16 = -1, .word_start = true}};
static const uint32_t s_piece_meta[3] = {146, 0, 1790};
static const uint32_t s_trunc_meta[1] = {5};
static const zb_msg_text_error_t s_err_meta[1] = {
    {4, ZB_MSG_CODE_UNSUPPORTED, {"Spark NLP would place a sentence at -1", 38}}};

static const char *const s_sample_names[] = {
    "embed",         "cancel",    "status",    "part_token",   "part_wordpiece",
    "part_sentence", "done",      "error",     "status_reply", "ready",
    "task",          "result",    "heartbeat", "bye",          "reconnect",
    "embed_opts",    "task_opts", "part_meta", "result_meta"};
#define S_N_SAMPLES (sizeof s_sample_names / sizeof *s_sample_names)

/* Samples carry every optional key, so that removing one tests its
 * absence. */
static void s_sample(const char *name, zb_msg_t *m) {
    memset(m, 0, sizeof *m);
    if (!strcmp(name, "embed")) {
        m->type = ZB_MSG_EMBED;
        m->u.embed = (zb_msg_embed_t){.id = S("req-1"),
                                      .texts = s_texts3,
                                      .n_texts = 3,
                                      .opt = {ZB_LEVEL_SENTENCE, ZB_POOLING_MEAN, true, true},
                                      .deadline_ms = 2500};
    } else if (!strcmp(name, "cancel")) {
        m->type = ZB_MSG_CANCEL;
        m->u.cancel.id = S("req-1");
    } else if (!strcmp(name, "status")) {
        m->type = ZB_MSG_STATUS;
        m->u.status.id = S("st");
    } else if (!strcmp(name, "part_token")) {
        assert_true(s_example("part", m));
        static const uint32_t trunc[1] = {0};
        m->u.part.vec.truncated = trunc;
        m->u.part.vec.n_truncated = 1;
    } else if (!strcmp(name, "part_wordpiece")) {
        m->type = ZB_MSG_PART;
        m->u.part = (zb_msg_part_t){.id = S("req-7"),
                                    .first = 10,
                                    .vec = {.level = ZB_LEVEL_WORDPIECE,
                                            .dim = 4,
                                            .count = 3,
                                            .rows = s_rows_wp,
                                            .n_rows = 7,
                                            .vectors = s_f_wp,
                                            .vectors_len = sizeof s_f_wp,
                                            .offsets = s_off_wp,
                                            .byte_offsets = s_boff_wp,
                                            .ids = s_ids_wp,
                                            .truncated = s_trunc_wp,
                                            .n_truncated = 1,
                                            .errors = s_err_wp,
                                            .n_errors = 1}};
    } else if (!strcmp(name, "part_sentence")) {
        m->type = ZB_MSG_PART;
        m->u.part = (zb_msg_part_t){.id = S("s"),
                                    .first = 99997,
                                    .vec = {.level = ZB_LEVEL_SENTENCE,
                                            .dim = 3,
                                            .count = 3,
                                            .rows = s_rows_sent,
                                            .n_rows = 2,
                                            .vectors = s_f_sent,
                                            .vectors_len = sizeof s_f_sent,
                                            .truncated = s_trunc_sent,
                                            .n_truncated = 1,
                                            .errors = s_err_sent,
                                            .n_errors = 1}};
    } else if (!strcmp(name, "done")) {
        assert_true(s_example("done", m));
    } else if (!strcmp(name, "error")) {
        assert_true(s_example("error", m));
    } else if (!strcmp(name, "status_reply")) {
        m->type = ZB_MSG_STATUS_REPLY;
        m->u.status_reply = (zb_msg_status_reply_t){.id = S("st"),
                                                    .uptime_ms = 123456,
                                                    .workers = s_workers,
                                                    .n_workers = 2,
                                                    .requests = 3,
                                                    .queued_shards = 40,
                                                    .queued_texts = 2560,
                                                    .in_flight_shards = 12,
                                                    .texts_per_s = 1234.5,
                                                    .tokens_per_s = 0.25,
                                                    .latency_p50_ms = 3.25,
                                                    .latency_p90_ms = 10.5,
                                                    .latency_p99_ms = 99,
                                                    .protocol_errors = 1,
                                                    .bad_results = 2,
                                                    .has_security = true,
                                                    .curve = true,
                                                    .refused_clients = 7,
                                                    .refused_workers = 70000};
    } else if (!strcmp(name, "ready")) {
        assert_true(s_example("ready", m));
    } else if (!strcmp(name, "task")) {
        m->type = ZB_MSG_TASK;
        m->u.task = (zb_msg_task_t){.shard = 42,
                                    .epoch = 3,
                                    .texts = s_texts3,
                                    .n_texts = 3,
                                    .opt = {ZB_LEVEL_SENTENCE, ZB_POOLING_MEAN, true, true}};
    } else if (!strcmp(name, "result")) {
        m->type = ZB_MSG_RESULT;
        m->u.result = (zb_msg_result_t){.shard = (uint64_t)1 << 40,
                                        .epoch = (uint64_t)1 << 35,
                                        .tokens = 17,
                                        .vec = {.level = ZB_LEVEL_TOKEN,
                                                .dim = 2,
                                                .count = 3,
                                                .rows = s_rows_res,
                                                .n_rows = 3,
                                                .vectors = s_f_res,
                                                .vectors_len = sizeof s_f_res,
                                                .offsets = s_off_res,
                                                .byte_offsets = s_boff_res,
                                                .truncated = s_trunc_res,
                                                .n_truncated = 1,
                                                .errors = s_err_res,
                                                .n_errors = 1}};
    } else if (!strcmp(name, "embed_opts")) {
        /* every option, at the one level where all of them apply */
        m->type = ZB_MSG_EMBED;
        m->u.embed = (zb_msg_embed_t){.id = S("opt"),
                                      .texts = s_texts_opt,
                                      .n_texts = 2,
                                      .opt = {ZB_LEVEL_TOKEN, ZB_POOLING_MEAN, true, true, true,
                                              ZB_TOKEN_VECTOR_MEAN, ZB_COMPAT_SPARKNLP, true},
                                      .deadline_ms = 1};
    } else if (!strcmp(name, "task_opts")) {
        m->type = ZB_MSG_TASK;
        m->u.task = (zb_msg_task_t){.shard = 9,
                                    .epoch = 2,
                                    .texts = s_texts_opt,
                                    .n_texts = 2,
                                    .opt = {.level = ZB_LEVEL_WORDPIECE,
                                            .sentences = true,
                                            .token_vector = ZB_TOKEN_VECTOR_MEAN,
                                            .token_meta = true}};
    } else if (!strcmp(name, "part_meta") || !strcmp(name, "result_meta")) {
        zb_msg_vectors_t v = {.level = ZB_LEVEL_TOKEN,
                              .dim = 2,
                              .count = 3,
                              .rows = s_rows_meta,
                              .n_rows = 3,
                              .vectors = s_f_meta,
                              .vectors_len = sizeof s_f_meta,
                              .offsets = s_off_meta,
                              .byte_offsets = s_boff_meta,
                              .token_meta = true,
                              .meta = s_tm_meta,
                              .truncated = s_trunc_meta,
                              .n_truncated = 1,
                              .errors = s_err_meta,
                              .n_errors = 1};
        if (name[0] == 'p') {
            m->type = ZB_MSG_PART;
            m->u.part = (zb_msg_part_t){.id = S("m"), .first = 3, .vec = v};
        } else {
            m->type = ZB_MSG_RESULT;
            static const uint32_t trunc0[1] = {2};
            static const zb_msg_text_error_t err0[1] = {
                {1, ZB_MSG_CODE_UNSUPPORTED, {"Spark NLP would place a sentence at -1", 38}}};
            v.truncated = trunc0;
            v.errors = err0;
            m->u.result = (zb_msg_result_t){.shard = 4, .epoch = 1, .tokens = 12, .vec = v};
        }
    } else if (!strcmp(name, "heartbeat")) {
        m->type = ZB_MSG_HEARTBEAT;
    } else if (!strcmp(name, "bye")) {
        m->type = ZB_MSG_BYE;
    } else if (!strcmp(name, "reconnect")) {
        m->type = ZB_MSG_RECONNECT;
    } else {
        fail_msg("no sample %s", name);
    }
}

/* Keys a sample may lose and still be valid. */
static bool s_optional(zb_msg_type_t t, const char *path) {
    static const char *const opt_embed[] = {"level",        "pooling", "normalize",  "windows",
                                            "sentences",    "compat",  "token_meta", "deadline_ms",
                                            "token_vector", NULL};
    static const char *const opt_vec[] = {"truncated", "errors", NULL};
    const char *const *opt = NULL;
    switch (t) {
    case ZB_MSG_EMBED:
    case ZB_MSG_TASK:
        opt = opt_embed;
        break;
    case ZB_MSG_PART:
    case ZB_MSG_RESULT:
        opt = opt_vec;
        break;
    case ZB_MSG_STATUS:
    case ZB_MSG_ERROR:
        return !strcmp(path, "id");
    case ZB_MSG_STATUS_REPLY:
        return !strcmp(path, "id") || !strcmp(path, "bad_results") ||
               !strcmp(path, "workers[0].quarantined_ms");
    default:
        return false;
    }
    for (; *opt; opt++)
        if (!strcmp(*opt, path)) return true;
    return false;
}

static void test_roundtrip_samples(void **state) {
    (void)state;
    const char *corpus = getenv("ZB_WRITE_CORPUS"); /* seeds for fuzz_msg */
    for (size_t k = 0; k < S_N_SAMPLES; k++) {
        zb_msg_t m;
        s_sample(s_sample_names[k], &m);
        size_t len;
        uint8_t *body = s_roundtrip(&m, &len);
        if (corpus) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.msgpack", corpus, s_sample_names[k]);
            FILE *f = fopen(path, "wb");
            assert_non_null(f);
            assert_int_equal(fwrite(body, 1, len, f), len);
            fclose(f);
        }
        free(body);
        /* the per-type encoders write the same bytes as zb_msg_encode */
        uint8_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        assert_int_equal(zb_msg_encode(&m, &a, &na, NULL), 0);
        int rc;
        switch (m.type) {
        case ZB_MSG_EMBED:
            rc = zb_msg_encode_embed(&m.u.embed, &b, &nb, NULL);
            break;
        case ZB_MSG_CANCEL:
            rc = zb_msg_encode_cancel(&m.u.cancel, &b, &nb, NULL);
            break;
        case ZB_MSG_STATUS:
            rc = zb_msg_encode_status(&m.u.status, &b, &nb, NULL);
            break;
        case ZB_MSG_PART:
            rc = zb_msg_encode_part(&m.u.part, &b, &nb, NULL);
            break;
        case ZB_MSG_DONE:
            rc = zb_msg_encode_done(&m.u.done, &b, &nb, NULL);
            break;
        case ZB_MSG_ERROR:
            rc = zb_msg_encode_error(&m.u.error, &b, &nb, NULL);
            break;
        case ZB_MSG_STATUS_REPLY:
            rc = zb_msg_encode_status_reply(&m.u.status_reply, &b, &nb, NULL);
            break;
        case ZB_MSG_READY:
            rc = zb_msg_encode_ready(&m.u.ready, &b, &nb, NULL);
            break;
        case ZB_MSG_TASK:
            rc = zb_msg_encode_task(&m.u.task, &b, &nb, NULL);
            break;
        case ZB_MSG_RESULT:
            rc = zb_msg_encode_result(&m.u.result, &b, &nb, NULL);
            break;
        default:
            rc = zb_msg_encode_empty(m.type, &b, &nb, NULL);
            break;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, na);
        free(a);
        free(b);
    }
}

static void test_roundtrip_edges(void **state) {
    (void)state;
    zb_msg_t m;
    char id64[64], name256[256], msg1024[1024];
    memset(id64, 'x', sizeof id64);
    memset(name256, 'n', sizeof name256);
    memset(msg1024, 'm', sizeof msg1024);

    /* embed: max id, one empty text, defaults, deadline at its maximum */
    static const zb_msg_str_t empty1[1] = {{"", 0}};
    m = (zb_msg_t){.type = ZB_MSG_EMBED};
    m.u.embed = (zb_msg_embed_t){
        .id = {id64, 64}, .texts = empty1, .n_texts = 1, .deadline_ms = UINT64_MAX};
    free(s_roundtrip(&m, NULL));

    /* embed: 100,000 texts, the limit */
    zb_msg_str_t *many = malloc(ZB_MSG_TEXTS_MAX * sizeof *many);
    for (size_t i = 0; i < ZB_MSG_TEXTS_MAX; i++) many[i] = (zb_msg_str_t){"abc", i % 4};
    m = (zb_msg_t){.type = ZB_MSG_EMBED};
    m.u.embed = (zb_msg_embed_t){.id = S("big"), .texts = many, .n_texts = ZB_MSG_TEXTS_MAX};
    size_t len;
    free(s_roundtrip(&m, &len));
    /* one more is too large: the encoder says so, and so does the decoder */
    m.u.embed.n_texts = ZB_MSG_TEXTS_MAX + 1;
    many = realloc(many, (ZB_MSG_TEXTS_MAX + 1) * sizeof *many);
    m.u.embed.texts = many;
    many[ZB_MSG_TEXTS_MAX] = S("x");
    uint8_t *out = (uint8_t *)"unchanged";
    size_t out_len = 77;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_msg_encode(&m, &out, &out_len, &d), ZB_ELIMIT);
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_non_null(strstr(d.msg, "texts"));
    free(many);

    /* status, error without id; error with every code and the longest message */
    m = (zb_msg_t){.type = ZB_MSG_STATUS};
    free(s_roundtrip(&m, NULL));
    for (int c = ZB_MSG_CODE_BAD_REQUEST; c < ZB_MSG_CODE_UNKNOWN; c++) {
        m = (zb_msg_t){.type = ZB_MSG_ERROR};
        m.u.error = (zb_msg_error_t){.code = (zb_msg_code_t)c, .message = {msg1024, 1024}};
        if (c % 2) m.u.error.id = S("e");
        free(s_roundtrip(&m, NULL));
    }
    m.u.error.message = (zb_msg_str_t){NULL, 0};
    free(s_roundtrip(&m, NULL));

    /* part: every text without rows (0 rows, empty vectors) */
    static const uint32_t zeros[3] = {0, 0, 0};
    m = (zb_msg_t){.type = ZB_MSG_PART};
    m.u.part =
        (zb_msg_part_t){.id = S("z"),
                        .first = 5,
                        .vec = {.level = ZB_LEVEL_TOKEN, .dim = 768, .count = 3, .rows = zeros}};
    free(s_roundtrip(&m, NULL));
    m.u.part.vec.level = ZB_LEVEL_WORDPIECE;
    free(s_roundtrip(&m, NULL));

    /* part: big vectors (130 rows x 768 = 99,840 floats), wordpiece level */
    const uint32_t nr = 130, dim = 768;
    static uint32_t rows2[2] = {100, 30};
    float *vec = malloc((size_t)nr * dim * sizeof *vec);
    uint32_t *off = malloc(2 * nr * sizeof *off), *ids = malloc(nr * sizeof *ids);
    for (size_t i = 0; i < (size_t)nr * dim; i++) vec[i] = (float)i * 0.001f - 3.0f;
    for (uint32_t i = 0; i < nr; i++) {
        off[2 * i] = i;
        off[2 * i + 1] = i + (i % 7);
        ids[i] = i * 997 % 28996;
    }
    m = (zb_msg_t){.type = ZB_MSG_RESULT};
    m.u.result = (zb_msg_result_t){.shard = UINT64_MAX,
                                   .epoch = UINT64_MAX,
                                   .tokens = UINT64_MAX,
                                   .vec = {.level = ZB_LEVEL_WORDPIECE,
                                           .dim = dim,
                                           .count = 2,
                                           .rows = rows2,
                                           .n_rows = nr,
                                           .vectors = vec,
                                           .vectors_len = (size_t)nr * dim * 4,
                                           .offsets = off,
                                           .byte_offsets = off,
                                           .ids = ids}};
    uint8_t *body = s_roundtrip(&m, &len);
    assert_true(len > (size_t)nr * dim * 4);
    /* the decoded vectors are the body's bytes, where the bin puts them */
    zb_msg_t back;
    s_accept(body, len, &back);
    const uint8_t *v = back.u.result.vec.vectors;
    assert_true(v > body && v + back.u.result.vec.vectors_len <= body + len);
    assert_true(v[-5] == 0xc6); /* bin 32 header just before */
    float f;
    memcpy(&f, v + 4 * 1000, 4);
    assert_true(f == vec[1000]);
    zb_msg_free(&back);
    free(body);
    free(vec);
    free(off);
    free(ids);

    /* ready and status_reply at their limits; floats of every size */
    m = (zb_msg_t){.type = ZB_MSG_READY};
    m.u.ready = (zb_msg_ready_t){{name256, 256}, {name256, 256},    ZB_HIDDEN_MAX,
                                 ZB_THREADS_MAX, ZB_MSG_CREDIT_MAX, UINT64_MAX};
    free(s_roundtrip(&m, NULL));
    m.u.ready = (zb_msg_ready_t){S("a"), S("\xc3\xa9"), 1, 1, 1, 0};
    free(s_roundtrip(&m, NULL));
    m = (zb_msg_t){.type = ZB_MSG_STATUS_REPLY};
    m.u.status_reply = (zb_msg_status_reply_t){.texts_per_s = 1e300,
                                               .tokens_per_s = 0.1,
                                               .latency_p50_ms = 5e-324,
                                               .uptime_ms = UINT64_MAX};
    free(s_roundtrip(&m, NULL));

    /* task: every combination of the later options the codec accepts; the
     * others are refused by both sides */
    for (int lv = 0; lv < ZB_LEVEL_COUNT; lv++)
        for (int bits = 0; bits < 16; bits++) {
            m = (zb_msg_t){.type = ZB_MSG_TASK};
            zb_options_t o = {.level = (zb_level_t)lv,
                              .sentences = (bits & 1) != 0,
                              .token_vector = (zb_token_vector_t)((bits >> 1) & 1),
                              .compat = (zb_compat_t)((bits >> 2) & 1),
                              .token_meta = (bits & 8) != 0};
            m.u.task = (zb_msg_task_t){.shard = 1, .texts = s_texts3, .n_texts = 3, .opt = o};
            bool valid =
                !(o.compat && lv != ZB_LEVEL_TOKEN) && !(o.sentences && lv == ZB_LEVEL_SENTENCE);
            if (valid) {
                free(s_roundtrip(&m, NULL));
            } else {
                uint8_t *o_body = NULL;
                size_t o_len = 0;
                assert_int_equal(zb_msg_encode(&m, &o_body, &o_len, NULL), ZB_EINVAL);
            }
            assert_int_equal(zb_options_meta(&o),
                             lv == ZB_LEVEL_TOKEN && (bits & (1 | 4 | 8)) != 0);
        }
    assert_false(zb_options_meta(NULL));

    /* token metadata over texts without rows: flag set, arrays NULL */
    m = (zb_msg_t){.type = ZB_MSG_PART};
    m.u.part = (zb_msg_part_t){
        .id = S("e"),
        .first = 1,
        .vec = {.level = ZB_LEVEL_TOKEN, .dim = 4, .count = 3, .rows = zeros, .token_meta = true}};
    body = s_roundtrip(&m, &len);
    s_accept(body, len, &back);
    assert_true(back.u.part.vec.token_meta);
    assert_null(back.u.part.vec.meta);
    zb_msg_free(&back);
    free(body);
    m.u.part.vec.token_meta = false; /* not the same message */
    body = NULL;
    assert_int_equal(zb_msg_encode(&m, &body, &len, NULL), 0);
    s_accept(body, len, &back);
    assert_false(back.u.part.vec.token_meta);
    m.u.part.vec.token_meta = true;
    assert_false(zb_msg_equal(&m, &back));
    zb_msg_free(&back);
    free(body);

    /* task: every option combination */
    for (int lv = 0; lv < ZB_LEVEL_COUNT; lv++)
        for (int bits = 0; bits < 8; bits++) {
            m = (zb_msg_t){.type = ZB_MSG_TASK};
            m.u.task = (zb_msg_task_t){.shard = (uint64_t)bits << 33,
                                       .epoch = (uint64_t)1 << (8 * (bits % 8)),
                                       .texts = s_texts3,
                                       .n_texts = 1 + bits % 3,
                                       .opt = {(zb_level_t)lv, (zb_pooling_t)(bits & 1),
                                               (bits & 2) != 0, (bits & 4) != 0}};
            free(s_roundtrip(&m, NULL));
        }
}

/* --- bodies written by hand in wide encodings ----------------------------- */

static void test_wide_part(void **state) {
    (void)state;
    hb_t h = {0};
    hb_map(&h, 16, 12);
    hb_str(&h, 32, "v"), hb_uint(&h, 64, 1);
    hb_str(&h, 16, "type"), hb_str(&h, 8, "part");
    hb_str(&h, 8, "errors"); /* keys in another order than the encoder's */
    hb_array(&h, 32, 1);
    hb_map(&h, 32, 3);
    hb_str(&h, 0, "message"), hb_str(&h, 16, "invalid UTF-8 at byte 3");
    hb_str(&h, 0, "code"), hb_str(&h, 32, "bad_utf8");
    hb_str(&h, 0, "index"), hb_uint(&h, -32, 1);
    hb_str(&h, 0, "id"), hb_str(&h, 32, "r1");
    hb_str(&h, 0, "first"), hb_uint(&h, -8, 0);
    hb_str(&h, 0, "count"), hb_uint(&h, -64, 2);
    hb_str(&h, 0, "level"), hb_str(&h, 16, "token");
    hb_str(&h, 0, "dim"), hb_uint(&h, 16, 2);
    hb_str(&h, 0, "rows"), hb_array(&h, 32, 2), hb_uint(&h, 64, 3), hb_uint(&h, -16, 0);
    hb_str(&h, 0, "vectors"), hb_bin(&h, 32, s_part_vec, sizeof s_part_vec);
    hb_str(&h, 0, "offsets"), hb_array(&h, 16, 2);
    hb_array(&h, 32, 6);
    hb_uint(&h, 8, 0), hb_uint(&h, 16, 1), hb_uint(&h, 32, 2), hb_uint(&h, 64, 6);
    hb_uint(&h, -8, 7), hb_uint(&h, -64, 10);
    hb_array(&h, 16, 0);
    hb_str(&h, 8, "byte_offsets"), hb_array(&h, 32, 2);
    hb_array(&h, 16, 6);
    for (int k = 0; k < 6; k++) hb_uint(&h, 0, s_part_off[k]);
    hb_array(&h, 32, 0);
    zb_msg_t want, got;
    assert_true(s_example("part", &want));
    s_accept(h.b, h.n, &got);
    assert_true(zb_msg_equal(&want, &got));
    /* the encoder writes the smallest form: the example's bytes */
    uint8_t *canon;
    size_t n;
    assert_int_equal(zb_msg_encode(&got, &canon, &n, NULL), 0);
    assert_true(n < h.n);
    uint8_t *ex;
    size_t nex;
    assert_int_equal(zb_msg_encode(&want, &ex, &nex, NULL), 0);
    assert_int_equal(n, nex);
    assert_memory_equal(canon, ex, n);
    free(canon);
    free(ex);
    zb_msg_free(&got);
    hb_free(&h);
}

static void test_wide_embed_and_status_reply(void **state) {
    (void)state;
    hb_t h = {0};
    /* texts in every str width and as bin; an unknown key holding ext and
     * negative values; v last */
    hb_map(&h, 32, 9);
    hb_str(&h, 0, "texts");
    hb_array(&h, 32, 3);
    hb_str(&h, 8, "first text"), hb_str(&h, 16, ""), hb_bin(&h, 8, "\xff\xfe", 2);
    hb_str(&h, 0, "deadline_ms"), hb_uint(&h, 32, 2500);
    hb_str(&h, 0, "windows"), hb_byte(&h, 0xc3);
    hb_str(&h, 0, "normalize"), hb_byte(&h, 0xc3);
    hb_str(&h, 0, "pooling"), hb_str(&h, 32, "mean");
    hb_str(&h, 0, "level"), hb_str(&h, 8, "sentence");
    hb_str(&h, 0, "later"), hb_array(&h, 0, 3), hb_byte(&h, 0xd4), hb_byte(&h, 1), hb_byte(&h, 2);
    hb_byte(&h, 0xe0), hb_f64(&h, -2.5);
    hb_str(&h, 0, "id"), hb_str(&h, 16, "req-1");
    hb_str(&h, 0, "type"), hb_str(&h, 0, "embed");
    /* 9 pairs declared: v is the 10th; rewrite the header as 10 */
    hb_str(&h, 0, "v"), hb_uint(&h, -16, 1);
    h.b[4] = 10;
    zb_msg_t want, got;
    s_sample("embed", &want);
    s_accept(h.b, h.n, &got);
    assert_true(zb_msg_equal(&want, &got));
    zb_msg_free(&got);
    hb_free(&h);

    hb_map(&h, 16, 17);
    hb_str(&h, 0, "refused_workers"), hb_uint(&h, 64, 70000);
    hb_str(&h, 0, "curve"), hb_byte(&h, 0xc3);
    hb_str(&h, 0, "refused_clients"), hb_uint(&h, -16, 7);
    hb_str(&h, 0, "v"), hb_uint(&h, 8, 1);
    hb_str(&h, 0, "type"), hb_str(&h, 8, "status_reply");
    hb_str(&h, 16, "bad_results"), hb_uint(&h, 32, 2);
    hb_str(&h, 0, "id"), hb_str(&h, 32, "st");
    hb_str(&h, 0, "uptime_ms"), hb_uint(&h, -32, 123456);
    hb_str(&h, 0, "workers"), hb_array(&h, 16, 2);
    for (int k = 0; k < 2; k++) {
        const zb_msg_worker_info_t *w = &s_workers[k];
        hb_map(&h, 32, 9 + (w->quarantined_ms > 0));
        if (w->quarantined_ms > 0)
            hb_str(&h, 8, "quarantined_ms"), hb_uint(&h, -64, w->quarantined_ms);
        hb_str(&h, 0, "idle_ms"), hb_uint(&h, 64, w->idle_ms);
        hb_str(&h, 0, "tokens"), hb_uint(&h, -64, w->tokens);
        hb_str(&h, 0, "shards"), hb_uint(&h, 32, w->shards);
        hb_str(&h, 0, "in_flight"), hb_uint(&h, 16, w->in_flight);
        hb_str(&h, 0, "credit"), hb_uint(&h, 8, w->credit);
        hb_str(&h, 0, "threads"), hb_uint(&h, -8, w->threads);
        hb_str(&h, 0, "dim"), hb_uint(&h, -16, w->dim);
        hb_str(&h, 32, "model"), hb_str(&h, 32, "bert-base-cased");
        hb_str(&h, 32, "name"), hb_str(&h, 8, k ? "b:2" : "a:1");
    }
    hb_str(&h, 0, "requests"), hb_uint(&h, 64, 3);
    hb_str(&h, 0, "queued_shards"), hb_uint(&h, -8, 40);
    hb_str(&h, 0, "queued_texts"), hb_uint(&h, 16, 2560);
    hb_str(&h, 0, "in_flight_shards"), hb_uint(&h, 0, 12);
    hb_str(&h, 0, "texts_per_s"), hb_f32(&h, 1234.5f);
    hb_str(&h, 0, "tokens_per_s"), hb_f64(&h, 0.25);
    hb_str(&h, 0, "latency_ms"), hb_map(&h, 16, 3);
    hb_str(&h, 0, "p99"), hb_uint(&h, 8, 99); /* an integer where a float goes */
    hb_str(&h, 0, "p90"), hb_f32(&h, 10.5f);
    hb_str(&h, 0, "p50"), hb_f64(&h, 3.25);
    hb_str(&h, 0, "protocol_errors"), hb_uint(&h, -64, 1);
    s_sample("status_reply", &want);
    s_accept(h.b, h.n, &got);
    assert_true(zb_msg_equal(&want, &got));
    zb_msg_free(&got);
    hb_free(&h);
}

/* Whether the k bytes of needle occur in b[0..n). */
static const uint8_t *s_has_bytes(const uint8_t *b, size_t n, const char *needle, size_t k) {
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(b + i, needle, k) == 0) return b + i;
    return NULL;
}

/* Revision 1.2: the security keys of status_reply travel together and are
 * absent from an earlier broker's reply; `forbidden` has a wire name. */
static void test_security_fields(void **state) {
    (void)state;
    zb_msg_t m, got;
    s_sample("status_reply", &m);
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(zb_msg_encode(&m, &b, &n, NULL), 0);
    s_accept(b, n, &got);
    assert_true(got.u.status_reply.has_security && got.u.status_reply.curve);
    assert_int_equal(got.u.status_reply.refused_clients, 7);
    assert_int_equal(got.u.status_reply.refused_workers, 70000);
    assert_true(zb_msg_equal(&m, &got));
    zb_msg_free(&got);
    free(b);
    /* off, and counted */
    m.u.status_reply.curve = false;
    assert_int_equal(zb_msg_encode(&m, &b, &n, NULL), 0);
    s_accept(b, n, &got);
    assert_true(got.u.status_reply.has_security && !got.u.status_reply.curve);
    assert_true(zb_msg_equal(&m, &got));
    zb_msg_free(&got);
    free(b);
    /* absent: what a broker of revision 1.1 sends */
    m.u.status_reply.has_security = false;
    assert_int_equal(zb_msg_encode(&m, &b, &n, NULL), 0);
    assert_null(s_has_bytes(b, n, "curve", 5));
    assert_null(s_has_bytes(b, n, "refused_", 8));
    s_accept(b, n, &got);
    assert_false(got.u.status_reply.has_security);
    assert_int_equal(got.u.status_reply.refused_clients, 0);
    assert_true(zb_msg_equal(&m, &got));
    zb_msg_free(&got);
    free(b);
    /* forbidden round-trips under its name */
    m = (zb_msg_t){.type = ZB_MSG_ERROR};
    m.u.error = (zb_msg_error_t){
        .id = S("r9"), .code = ZB_MSG_CODE_FORBIDDEN, .message = S("key no longer allowed")};
    assert_int_equal(zb_msg_encode(&m, &b, &n, NULL), 0);
    assert_non_null(s_has_bytes(b, n, "forbidden", 9));
    s_accept(b, n, &got);
    assert_int_equal(got.u.error.code, ZB_MSG_CODE_FORBIDDEN);
    zb_msg_free(&got);
    free(b);
    assert_string_equal(zb_msg_code_name(ZB_MSG_CODE_FORBIDDEN), "forbidden");
}

/* --- hostile input: msgpack-c object trees, mutated and repacked ---------- */

typedef struct s_tree {
    uint8_t *body;
    size_t len;
    msgpack_unpacked u;
    zb_msg_type_t type;
} s_tree_t;

static void s_tree_of(const char *sample, s_tree_t *t) {
    zb_msg_t m;
    s_sample(sample, &m);
    t->type = m.type;
    assert_int_equal(zb_msg_encode(&m, &t->body, &t->len, NULL), 0);
    msgpack_unpacked_init(&t->u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&t->u, (const char *)t->body, t->len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, t->len);
}

static void s_tree_free(s_tree_t *t) {
    msgpack_unpacked_destroy(&t->u);
    free(t->body);
}

static uint8_t *s_pack(const msgpack_object *o, size_t *len) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_object(&pk, *o), 0);
    *len = sb.size;
    return (uint8_t *)msgpack_sbuffer_release(&sb);
}

/* One msgpack-c value from hex; keep owns it. */
static msgpack_object s_value(const char *hex, msgpack_unpacked *keep) {
    size_t n, off = 0;
    const uint8_t *b = s_hex(hex, &n);
    msgpack_unpacked_init(keep);
    assert_int_equal(msgpack_unpack_next(keep, (const char *)b, n, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, n);
    return keep->data;
}

/* The object at path ("rows[1]", "errors[0].index", "latency_ms.p50"); with
 * parent and key set, path's last segment is a map key: *parent is that map
 * (found or not) and *key the segment. */
static msgpack_object *s_at(msgpack_object *root, const char *path, msgpack_object **parent,
                            char *key) {
    msgpack_object *cur = root;
    const char *p = path;
    if (parent) *parent = NULL;
    while (*p) {
        size_t n = strcspn(p, ".[");
        if (n > 0) {
            assert_int_equal(cur->type, MSGPACK_OBJECT_MAP);
            if (parent) {
                *parent = cur;
                memcpy(key, p, n);
                key[n] = '\0';
            }
            msgpack_object *next = NULL;
            for (uint32_t k = 0; k < cur->via.map.size; k++) {
                msgpack_object_kv *kv = &cur->via.map.ptr[k];
                if (kv->key.via.str.size == n && !memcmp(kv->key.via.str.ptr, p, n))
                    next = &kv->val;
            }
            p += n;
            if (next == NULL) {
                assert_true(*p == '\0'); /* only the last segment may be new */
                return NULL;
            }
            cur = next;
        }
        while (*p == '[') {
            char *e;
            unsigned long i = strtoul(p + 1, &e, 10);
            assert_int_equal(cur->type, MSGPACK_OBJECT_ARRAY);
            assert_true(i < cur->via.array.size);
            cur = &cur->via.array.ptr[i];
            p = e + 1;
            if (parent) *parent = NULL;
        }
        if (*p == '.') p++;
    }
    return cur;
}

typedef enum { OP_SET, OP_REMOVE, OP_DUP, OP_ADD } s_op_t;

/* The body of tree t with one change applied; t is left as it was. */
static uint8_t *s_mutate(s_tree_t *t, s_op_t op, const char *path, const msgpack_object *val,
                         size_t *len) {
    msgpack_object *root = &t->u.data, *map = NULL;
    char key[64];
    msgpack_object *slot = s_at(root, path, &map, key);
    uint8_t *out;
    if (op == OP_SET) {
        assert_non_null(slot);
        msgpack_object saved = *slot;
        *slot = *val;
        out = s_pack(root, len);
        *slot = saved;
        return out;
    }
    assert_non_null(map);
    uint32_t n = map->via.map.size, at = n;
    for (uint32_t k = 0; k < n; k++)
        if (&map->via.map.ptr[k].val == slot) at = k;
    msgpack_object_kv *saved = map->via.map.ptr;
    if (op == OP_REMOVE) {
        assert_true(at < n);
        msgpack_object_kv *kv = malloc(n * sizeof *kv);
        memcpy(kv, saved, n * sizeof *kv);
        memmove(kv + at, kv + at + 1, (n - at - 1) * sizeof *kv);
        map->via.map.ptr = kv;
        map->via.map.size = n - 1;
        out = s_pack(root, len);
        free(kv);
    } else {
        msgpack_object_kv *kv = malloc((n + 1) * sizeof *kv);
        memcpy(kv, saved, n * sizeof *kv);
        if (op == OP_DUP) {
            assert_true(at < n);
            kv[n] = saved[at];
        } else {
            assert_null(slot);
            kv[n].key.type = MSGPACK_OBJECT_STR;
            kv[n].key.via.str.ptr = key;
            kv[n].key.via.str.size = (uint32_t)strlen(key);
            kv[n].val = *val;
        }
        map->via.map.ptr = kv;
        map->via.map.size = n + 1;
        out = s_pack(root, len);
        free(kv);
    }
    map->via.map.ptr = saved;
    map->via.map.size = n;
    return out;
}

/* Every map value and the first element of every array, with its path as
 * the decoder names it. */
typedef struct s_path {
    char path[64];
    msgpack_object_type type;
    bool map_value;
} s_path_t;

static void s_paths(const msgpack_object *o, const char *pre, s_path_t *out, size_t *n) {
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t k = 0; k < o->via.map.size; k++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[k];
            s_path_t *p = &out[(*n)++];
            snprintf(p->path, sizeof p->path, "%s%s%.*s", pre, *pre ? "." : "",
                     (int)kv->key.via.str.size, kv->key.via.str.ptr);
            p->type = kv->val.type;
            p->map_value = true;
            char sub[64];
            snprintf(sub, sizeof sub, "%s", p->path);
            s_paths(&kv->val, sub, out, n);
        }
    } else if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size > 0) {
        s_path_t *p = &out[(*n)++];
        snprintf(p->path, sizeof p->path, "%s[0]", pre);
        p->type = o->via.array.ptr[0].type;
        p->map_value = false;
        char sub[64];
        snprintf(sub, sizeof sub, "%s", p->path);
        s_paths(&o->via.array.ptr[0], sub, out, n);
    }
}

static void s_check_bytes(const uint8_t *b, size_t n, bool ok, zb_msg_code_t code,
                          const char *needle, const char *what) {
    zb_msg_t m;
    zb_diag_t d = {{0}};
    int rc = zb_msg_decode(b, n, &m, &d);
    if (ok && rc != 0) fail_msg("%s: expected success, got `%s`", what, d.msg);
    if (!ok && rc != ZB_EPROTO) fail_msg("%s: expected rejection, got %d", what, rc);
    if (!ok && m.reject != code)
        fail_msg("%s: code %s, expected %s (`%s`)", what, zb_msg_code_name(m.reject),
                 zb_msg_code_name(code), d.msg);
    if (!ok && needle && !strstr(d.msg, needle))
        fail_msg("%s: sentence `%s` does not name `%s`", what, d.msg, needle);
    if (!ok) assert_null(m.mem);
    assert_true(m.mem_bytes <= 16 * n + 256);
    zb_msg_free(&m);
}

static void test_every_field_wrong_type(void **state) {
    (void)state;
    static const char *const cand_hex[] = {
        "a1 78", "07", "ff", "c3", "cb 3f f8 00 00 00 00 00 00", "c4 01 78", "90", "80", "c0"};
    enum { N_CAND = sizeof cand_hex / sizeof *cand_hex };
    msgpack_unpacked keep[N_CAND];
    msgpack_object cand[N_CAND];
    for (int c = 0; c < N_CAND; c++) cand[c] = s_value(cand_hex[c], &keep[c]);
    size_t runs = 0;
    for (size_t k = 0; k < S_N_SAMPLES; k++) {
        s_tree_t t;
        s_tree_of(s_sample_names[k], &t);
        s_path_t paths[128];
        size_t np = 0;
        s_paths(&t.u.data, "", paths, &np);
        for (size_t i = 0; i < np; i++) {
            const s_path_t *p = &paths[i];
            bool is_float = p->type == MSGPACK_OBJECT_FLOAT64 || p->type == MSGPACK_OBJECT_FLOAT32;
            for (int c = 0; c < N_CAND; c++) {
                msgpack_object_type ct = cand[c].type;
                if (ct == p->type || (is_float && ct == MSGPACK_OBJECT_FLOAT64)) continue;
                bool ok = false;
                zb_msg_code_t code = ZB_MSG_CODE_BAD_REQUEST;
                char what[160];
                snprintf(what, sizeof what, "%s: %.63s := %s", s_sample_names[k], p->path,
                         cand_hex[c]);
                /* what the protocol accepts in place of a value */
                if (ct == MSGPACK_OBJECT_NIL && p->map_value) ok = s_optional(t.type, p->path);
                if (is_float && ct == MSGPACK_OBJECT_POSITIVE_INTEGER) ok = true;
                if (!strcmp(p->path, "texts[0]") && ct == MSGPACK_OBJECT_BIN) ok = true;
                if (!strcmp(p->path, "v") && ct == MSGPACK_OBJECT_POSITIVE_INTEGER)
                    code = ZB_MSG_CODE_VERSION;
                size_t n;
                uint8_t *b = s_mutate(&t, OP_SET, p->path, &cand[c], &n);
                s_check_bytes(b, n, ok, code, p->path, what);
                free(b);
                runs++;
            }
        }
        s_tree_free(&t);
    }
    assert_true(runs > 1000);
    for (int c = 0; c < N_CAND; c++) msgpack_unpacked_destroy(&keep[c]);
}

static void test_missing_and_duplicate_keys(void **state) {
    (void)state;
    for (size_t k = 0; k < S_N_SAMPLES; k++) {
        s_tree_t t;
        s_tree_of(s_sample_names[k], &t);
        s_path_t paths[128];
        size_t np = 0;
        s_paths(&t.u.data, "", paths, &np);
        for (size_t i = 0; i < np; i++) {
            const s_path_t *p = &paths[i];
            if (!p->map_value) continue;
            char what[160], needle[96];
            size_t n;
            snprintf(what, sizeof what, "%s without %.63s", s_sample_names[k], p->path);
            uint8_t *b = s_mutate(&t, OP_REMOVE, p->path, NULL, &n);
            s_check_bytes(b, n, s_optional(t.type, p->path), ZB_MSG_CODE_BAD_REQUEST, p->path,
                          what);
            free(b);
            snprintf(what, sizeof what, "%s with %.63s twice", s_sample_names[k], p->path);
            const char *last = strrchr(p->path, '.');
            snprintf(needle, sizeof needle, "`%.63s` appears twice", last ? last + 1 : p->path);
            b = s_mutate(&t, OP_DUP, p->path, NULL, &n);
            s_check_bytes(b, n, false, ZB_MSG_CODE_BAD_REQUEST, needle, what);
            free(b);
        }
        s_tree_free(&t);
    }
}

/* Unknown keys are skipped whatever they hold, down to the depth limit. */
static void test_unknown_keys(void **state) {
    (void)state;
    msgpack_unpacked k1, k2, k3, k4;
    /* [fixext1, -32, NaN, ext8, {"k": [[[[[]]]]]}]: the innermost array at depth 8 */
    msgpack_object deep8 = s_value("95 d4 01 02 e0 cb 7f f8 00 00 00 00 00 00 c7 01 05 41"
                                   "81 a1 6b 91 91 91 91 90",
                                   &k1);
    msgpack_object deep9 = s_value("95 d4 01 02 e0 cb 7f f8 00 00 00 00 00 00 c7 01 05 41"
                                   "81 a1 6b 91 91 91 91 91 90",
                                   &k2);
    msgpack_object in_entry8 = s_value("91 91 91 91 90", &k3); /* at depth 4..8 */
    msgpack_object in_entry9 = s_value("91 91 91 91 91 90", &k4);
    for (size_t k = 0; k < S_N_SAMPLES; k++) {
        s_tree_t t;
        zb_msg_t want, got;
        s_tree_of(s_sample_names[k], &t);
        s_sample(s_sample_names[k], &want);
        size_t n;
        uint8_t *b = s_mutate(&t, OP_ADD, "zz_later", &deep8, &n);
        s_accept(b, n, &got);
        assert_true(zb_msg_equal(&want, &got));
        zb_msg_free(&got);
        free(b);
        b = s_mutate(&t, OP_ADD, "zz_later", &deep9, &n);
        s_check_bytes(b, n, false, ZB_MSG_CODE_BAD_REQUEST, "nested too deeply", "deep9");
        free(b);
        if (t.type == ZB_MSG_PART || t.type == ZB_MSG_RESULT) {
            b = s_mutate(&t, OP_ADD, "errors[0].zz", &in_entry8, &n);
            s_accept(b, n, &got);
            assert_true(zb_msg_equal(&want, &got));
            zb_msg_free(&got);
            free(b);
            b = s_mutate(&t, OP_ADD, "errors[0].zz", &in_entry9, &n);
            s_check_bytes(b, n, false, ZB_MSG_CODE_BAD_REQUEST, "nested too deeply", "e9");
            free(b);
        }
        s_tree_free(&t);
    }
    msgpack_unpacked_destroy(&k1);
    msgpack_unpacked_destroy(&k2);
    msgpack_unpacked_destroy(&k3);
    msgpack_unpacked_destroy(&k4);
}

/* Cross-field rules and value limits, one change to a valid sample each. */
static void test_hostile_fields(void **state) {
    (void)state;
    static const struct {
        const char *sample;
        s_op_t op;
        const char *path;
        const char *hex;
        bool ok;
        const char *needle; /* BAD_REQUEST unless it starts with "!" (VERSION) */
    } cases[] = {
        {"part_token", OP_SET, "vectors",
         "c4 14 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
         "00 00 00 00",
         false, "vectors: 20 bytes, but 3 rows x dim 2 x 4 bytes make 24"},
        {"part_token", OP_SET, "count", "03", false, "rows: 2 entries, count is 3"},
        {"part_token", OP_SET, "rows", "92 02 00", false, "vectors: 24 bytes, but 2 rows"},
        {"part_token", OP_SET, "offsets", "91 96 00 01 02 06 07 0a", false,
         "offsets: 1 entries for 2 texts"},
        {"part_token", OP_SET, "offsets[0]", "94 00 01 02 06", false,
         "offsets[0]: 4 entries, rows[0] = 3 needs 6"},
        {"part_token", OP_SET, "offsets[1]", "92 00 00", false, "offsets[1]: 2 entries"},
        {"part_token", OP_SET, "byte_offsets[0]", "96 00 01 06 02 07 0a", false,
         "byte_offsets: row 1 spans [6, 2)"},
        {"part_token", OP_SET, "offsets[0][0]", "cf 00 00 00 01 00 00 00 00", false,
         "offsets[0][0]: 4294967296 is out of range"},
        {"part_token", OP_SET, "rows[0]", "cf 00 00 00 01 00 00 00 03", false,
         "rows[0]: 4294967299 is out of range"},
        {"part_token", OP_SET, "level", "a8 73 65 6e 74 65 6e 63 65", false,
         "offsets: not sent at the sentence level"},
        {"part_token", OP_SET, "level", "a4 63 68 61 72", false, "level: `char` is not one of"},
        {"part_token", OP_ADD, "ids", "92 93 01 02 03 90", false, "ids: not sent at the token"},
        {"part_token", OP_SET, "dim", "00", false, "dim: 0 is outside 1..16384"},
        {"part_token", OP_SET, "dim", "ce 00 01 00 00", false, "dim: 65536 is outside"},
        {"part_token", OP_SET, "errors[0].index", "00", false,
         "errors[0]: text 0 failed but has 3 rows"},
        {"part_token", OP_SET, "errors[0].index", "05", false,
         "errors[0]: text 5 is not among the 2 texts from 0"},
        {"part_token", OP_SET, "errors[0].message", "a1 e9", false,
         "errors[0].message: not valid UTF-8"},
        {"part_token", OP_SET, "errors[0].code", "a5 66 72 6f 62 7a", true, NULL},
        {"part_token", OP_SET, "truncated", "92 00 00", false,
         "truncated[1]: text 0 does not follow 0"},
        {"part_token", OP_SET, "first", "ce 00 01 86 9f", false, "first: texts 99999..100000"},
        {"part_wordpiece", OP_SET, "truncated", "91 09", false,
         "truncated[0]: text 9 is not among the 3 texts from 10"},
        {"part_wordpiece", OP_SET, "ids[2]", "92 01 02", false, "ids[2]: 2 entries"},
        {"part_wordpiece", OP_SET, "errors",
         "92 83 a5 69 6e 64 65 78 0b a4 63 6f 64 65 a8 62 61"
         "64 5f 75 74 66 38 a7 6d 65 73 73 61 67 65 a0 83 a5"
         "69 6e 64 65 78 0b a4 63 6f 64 65 a8 62 61 64 5f 75"
         "74 66 38 a7 6d 65 73 73 61 67 65 a0",
         false, "errors[1]: text 11 does not follow 11"},
        {"part_sentence", OP_SET, "rows", "93 02 00 00", false,
         "rows[0]: 2 rows, the sentence level has 0 or 1"},
        {"result", OP_SET, "rows", "92 02 01", false, "offsets: 3 entries for 2 texts"},
        {"result", OP_ADD, "count", "05", true, NULL}, /* not a result key: ignored */
        {"embed", OP_SET, "id", "a0", false, "id: 0 bytes, expected 1 to 64"},
        {"embed", OP_SET, "id", "a2 c3 28", false, "id: not valid UTF-8"},
        {"embed", OP_SET, "texts", "90", false, "texts: empty"},
        {"embed", OP_SET, "texts[1]", "a2 c3 28", true, NULL},
        {"embed", OP_SET, "texts[1]", "c4 02 c3 28", true, NULL},
        {"embed", OP_SET, "pooling", "a3 6d 61 78", false, "pooling: `max` is not one of"},
        {"embed", OP_SET, "level", "c0", true, NULL},
        {"embed", OP_SET, "id", "c0", false, "id: required, but missing or nil"},
        {"embed", OP_SET, "v", "02", false, "!v is 2; this receiver speaks version 1"},
        {"embed", OP_SET, "v", "00", false, "!v is 0"},
        {"embed", OP_SET, "v", "cb 3f f0 00 00 00 00 00 00", false,
         "v: expected uint, found float"},
        {"embed", OP_SET, "type", "a4 66 72 6f 62", false, "type: `frob` is not one of"},
        {"embed", OP_SET, "type", "a1 3f", false, "type: `?` is not one of"},
        {"embed", OP_SET, "deadline_ms", "ff", false, "deadline_ms: expected uint"},
        {"status", OP_SET, "id", "a0", false, "id: empty"},
        {"error", OP_SET, "code", "a3 66 6f 6f", true, NULL},
        {"error", OP_SET, "id", "a0", false, "id: empty"},
        {"ready", OP_SET, "credit", "00", false, "credit: 0 is outside 1..1024"},
        {"ready", OP_SET, "credit", "cd 04 01", false, "credit: 1025 is outside"},
        {"ready", OP_SET, "threads", "cd 01 01", false, "threads: 257 is outside 1..256"},
        {"ready", OP_SET, "name", "a0", false, "name: 0 bytes"},
        {"ready", OP_SET, "model", "a1 ff", false, "model: not valid UTF-8"},
        {"done", OP_SET, "texts", "00", false, "texts: 0 is outside"},
        {"done", OP_SET, "texts", "ce 00 01 86 a1", false, "texts: 100001 is outside"},
        {"done", OP_SET, "parts", "00", false, "parts: 0 is outside"},
        {"status_reply", OP_SET, "texts_per_s", "cb 7f f8 00 00 00 00 00 00", false,
         "texts_per_s: nan is not a finite value"},
        {"status_reply", OP_SET, "latency_ms.p99", "cb 7f f0 00 00 00 00 00 00", false,
         "latency_ms.p99: inf"},
        {"status_reply", OP_SET, "tokens_per_s", "ca bf 80 00 00", false, "tokens_per_s: -1"},
        {"status_reply", OP_SET, "texts_per_s", "ca 3f c0 00 00", true, NULL},
        {"status_reply", OP_SET, "workers[1].dim", "00", false, "workers[1].dim: 0 is outside"},
        {"status_reply", OP_SET, "workers[0].name", "a2 c3 28", false,
         "workers[0].name: not valid UTF-8"},
        {"status_reply", OP_SET, "latency_ms", "90", false, "latency_ms: expected a map"},
        {"status_reply", OP_SET, "bad_results", "ff", false, "bad_results: expected uint"},
        {"status_reply", OP_SET, "bad_results", "c0", true, NULL},
        {"status_reply", OP_SET, "workers[1].quarantined_ms", "a1 78", false,
         "workers[1].quarantined_ms: expected uint"},
        {"task", OP_SET, "shard", "ff", false, "shard: expected uint, found negative integer"},
        {"task", OP_SET, "epoch", "c0", false, "epoch: required, but missing or nil"},
        {"task", OP_SET, "epoch", "d0 ff", false, "epoch: expected uint, found negative integer"},
        {"ready", OP_SET, "epoch", "a1 31", false, "epoch: expected uint, found str"},
        {"ready", OP_SET, "epoch", "cf ff ff ff ff ff ff ff ff", true, NULL},
        {"result", OP_SET, "epoch", "cb 3f f0 00 00 00 00 00 00", false,
         "epoch: expected uint, found float"},
        {"result", OP_SET, "epoch", "d3 00 00 00 00 00 00 00 05", true, NULL},
        /* options a worker cannot honour, and their names */
        {"embed_opts", OP_SET, "level", "a9 77 6f 72 64 70 69 65 63 65", false,
         "compat: sparknlp gives token vectors, not the wordpiece level"},
        {"embed_opts", OP_SET, "compat", "a4 6e 6f 6e 65", true, NULL},
        {"embed_opts", OP_SET, "compat", "a5 73 70 61 72 6b", false, "compat: `spark` is not one"},
        {"embed_opts", OP_SET, "token_vector", "a3 6d 61 78", false,
         "token_vector: `max` is not one of"},
        {"embed_opts", OP_SET, "token_vector", "a5 66 69 72 73 74", true, NULL},
        {"embed", OP_ADD, "sentences", "c3", false,
         "sentences: applies to the token and wordpiece levels"},
        {"embed", OP_ADD, "sentences", "c2", true, NULL},
        {"embed", OP_ADD, "token_vector", "a4 6d 65 61 6e", true, NULL}, /* ignored there */
        {"task", OP_ADD, "compat", "a8 73 70 61 72 6b 6e 6c 70", false,
         "compat: sparknlp gives token vectors, not the sentence level"},
        {"task_opts", OP_SET, "sentences", "01", false, "sentences: expected bool, found uint"},
        /* token metadata: lengths, types, the oov rule, the level */
        {"part_meta", OP_SET, "piece_id[0]", "92 ce 80 00 00 00 00", false,
         "piece_id: row 0 has piece 2147483648, not a vocabulary id"},
        {"part_meta", OP_SET, "piece_id[0]", "92 cc 92 05", false,
         "piece_id: row 1 is oov but has piece 5"},
        {"part_meta", OP_SET, "oov", "93 92 c2 c2 90 91 c2", true, NULL},
        {"part_meta", OP_SET, "sentence", "92 92 00 01 90", false, "sentence: 2 entries for 3 "},
        {"part_meta", OP_SET, "sentence[2]", "92 00 00", false,
         "sentence[2]: 2 entries, rows[2] = 1 needs 1"},
        {"part_meta", OP_SET, "word_start[2]", "91 07", false,
         "word_start[2][0]: expected bool, found uint"},
        {"part_meta", OP_SET, "oov[0]", "92 c2 01", false, "oov[0][1]: expected bool, found uint"},
        {"part_meta", OP_SET, "piece_id[0]", "92 c3 00", false,
         "piece_id[0][0]: expected uint, found bool"},
        {"part_meta", OP_SET, "sentence[0][0]", "cf 00 00 00 01 00 00 00 00", false,
         "sentence[0][0]: 4294967296 is out of range"},
        {"part_meta", OP_SET, "level", "a8 73 65 6e 74 65 6e 63 65", false,
         "offsets: not sent at the sentence level"},
        {"part_wordpiece", OP_ADD, "oov", "93 94 c2 c2 c2 c2 90 93 c2 c2 c2", false,
         "oov: token metadata is sent at the token level only, not wordpiece"},
        {"part_token", OP_ADD, "word_start", "92 93 c3 c3 c3 90", false,
         "sentence: required, but missing or nil"},
        {"result_meta", OP_SET, "sentence", "c0", false, "sentence: required, but missing"},
        {"cancel", OP_SET, "id",
         "d9 41 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78"
         "78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78"
         "78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78"
         "78 78 78 78 78 78",
         false, "id: 65 bytes, expected 1 to 64"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        s_tree_t t;
        s_tree_of(cases[k].sample, &t);
        msgpack_unpacked keep;
        msgpack_object v = {0};
        if (cases[k].hex) v = s_value(cases[k].hex, &keep);
        size_t n;
        uint8_t *b = s_mutate(&t, cases[k].op, cases[k].path, &v, &n);
        const char *needle = cases[k].needle;
        zb_msg_code_t code = ZB_MSG_CODE_BAD_REQUEST;
        if (needle && needle[0] == '!') code = ZB_MSG_CODE_VERSION, needle++;
        char what[96];
        snprintf(what, sizeof what, "case %zu (%s %s)", k, cases[k].sample, cases[k].path);
        s_check_bytes(b, n, cases[k].ok, code, needle, what);
        free(b);
        if (cases[k].hex) msgpack_unpacked_destroy(&keep);
        s_tree_free(&t);
    }
    /* an error code this version does not know decodes as UNKNOWN, which
     * no encoder writes */
    size_t n;
    const uint8_t *b = s_hex("84 a1 76 01 a4 74 79 70 65 a5 65 72 72 6f 72 a4 63 6f 64 65 a3 66"
                             "6f 6f a7 6d 65 73 73 61 67 65 a0",
                             &n);
    zb_msg_t m;
    s_accept(b, n, &m);
    assert_int_equal(m.u.error.code, ZB_MSG_CODE_UNKNOWN);
    uint8_t *out;
    size_t out_len;
    assert_int_equal(zb_msg_encode(&m, &out, &out_len, NULL), ZB_EINVAL);
    zb_msg_free(&m);
}

/* Bodies broken below the level of fields. */
static void test_hostile_bodies(void **state) {
    (void)state;
    static const struct {
        const char *hex;
        const char *needle;
    } cases[] = {
        {"", "expected a map, found end of data"},
        {"c1", "expected a map, found invalid byte"},
        {"91 80", "expected a map, found array"},
        {"a1 76", "expected a map, found str"},
        {"80", "v: required"},
        {"81 a1 76 01", "type: required"},
        {"82 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 00", "1 bytes follow"},
        {"82 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 82", "1 bytes follow"},
        /* declared counts of 2^32-1 with a few bytes of payload */
        {"df ff ff ff ff a1 76 01", "runs past the end"},
        {"84 a1 76 01 a4 74 79 70 65 a5 65 6d 62 65 64 a2 69 64 a1 61 a5 74 65 78 74 73"
         "dd ff ff ff ff a1 61",
         "value of `texts`"},
        {"83 a1 76 01 a4 74 79 70 65 a6 63 61 6e 63 65 6c a2 69 64 db ff ff ff ff 61",
         "value of `id`"},
        {"82 a1 76 01 a4 74 79 70 65 c6 ff ff ff ff 61", "value of `type`"},
        {"83 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 a1 7a c9 ff ff ff ff 01 02",
         "value of `z`"},
        {"83 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 a1 7a de ff ff 01",
         "value of `z`"},
        /* keys */
        {"82 01 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74", "key 0 (byte 1) is a uint"},
        {"82 a1 76 01 c4 04 74 79 70 65 a9 68 65 61 72 74 62 65 61 74", "key 1 (byte 4) is a bin"},
        {"83 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 a1 ff 01",
         "key 2 is not valid UTF-8"},
        {"83 a1 76 01 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74",
         "key `v` appears twice"},
        {"83 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74 a1 76 02",
         "key `v` appears twice"},
        /* values */
        {"82 a1 76 ff a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 74",
         "v: expected uint, found negative integer"},
        {"82 a1 76 01 a4 74 79 70 65 a9 68 65 61 72 74 62 65 61 00", "type: `heartbea\\0`"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t n;
        const uint8_t *b = s_hex(cases[k].hex, &n);
        char what[32];
        snprintf(what, sizeof what, "body case %zu", k);
        /* a sentence holding a NUL prints up to it: compare the prefix */
        char needle[64];
        snprintf(needle, sizeof needle, "%s", cases[k].needle);
        char *z = strstr(needle, "\\0");
        if (z) *z = '\0';
        s_check_bytes(b, n, false, ZB_MSG_CODE_BAD_REQUEST, needle, what);
    }

    /* keys: the 65-byte key, 64 and 65 keys */
    hb_t h = {0};
    hb_map(&h, 0, 3);
    hb_str(&h, 0, "v"), hb_uint(&h, 0, 1), hb_str(&h, 0, "type"), hb_str(&h, 0, "bye");
    char key[66];
    memset(key, 'k', 65);
    key[65] = '\0';
    hb_str(&h, 8, key), hb_uint(&h, 0, 0);
    s_check_bytes(h.b, h.n, false, ZB_MSG_CODE_BAD_REQUEST, "key 2 has 65 bytes", "long key");
    key[64] = '\0';
    h.n = 0;
    hb_map(&h, 0, 3);
    hb_str(&h, 0, "v"), hb_uint(&h, 0, 1), hb_str(&h, 0, "type"), hb_str(&h, 0, "bye");
    hb_str(&h, 8, key), hb_uint(&h, 0, 0);
    s_check_bytes(h.b, h.n, true, 0, NULL, "64-byte key");
    for (uint32_t keys = 64; keys <= 65; keys++) {
        h.n = 0;
        hb_map(&h, 16, keys);
        hb_str(&h, 0, "v"), hb_uint(&h, 0, 1), hb_str(&h, 0, "type"), hb_str(&h, 0, "bye");
        for (uint32_t i = 2; i < keys; i++) {
            char kk[16];
            snprintf(kk, sizeof kk, "k%u", i);
            hb_str(&h, 0, kk), hb_byte(&h, 0xc0);
        }
        s_check_bytes(h.b, h.n, keys == 64, ZB_MSG_CODE_BAD_REQUEST, "65 keys exceed the limit",
                      "keys");
    }

    /* too many texts: too_large, and the id is there to answer it */
    h.n = 0;
    hb_map(&h, 0, 4);
    hb_str(&h, 0, "v"), hb_uint(&h, 0, 1), hb_str(&h, 0, "type"), hb_str(&h, 0, "embed");
    hb_str(&h, 0, "id"), hb_str(&h, 0, "big-job");
    hb_str(&h, 0, "texts"), hb_array(&h, 32, ZB_MSG_TEXTS_MAX + 1);
    for (uint32_t i = 0; i <= ZB_MSG_TEXTS_MAX; i++) hb_byte(&h, 0xa0);
    zb_msg_t m;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_msg_decode(h.b, h.n, &m, &d), ZB_EPROTO);
    assert_int_equal(zb_msg_decode_failure(&m), ZB_MSG_CODE_TOO_LARGE);
    assert_int_equal(m.type, ZB_MSG_EMBED);
    assert_int_equal(m.reject_id.len, 7);
    assert_memory_equal(m.reject_id.ptr, "big-job", 7);
    assert_non_null(strstr(d.msg, "embed: texts: 100001 texts exceed the limit"));
    assert_int_equal(m.mem_bytes, 0); /* refused before allocating */
    zb_msg_free(&m);
    hb_free(&h);

    /* version: answered as such, with the id, whatever else the body holds */
    size_t n;
    const uint8_t *b = s_hex("83 a1 76 02 a4 74 79 70 65 01 a2 69 64 a3 61 62 63", &n);
    assert_int_equal(zb_msg_decode(b, n, &m, &d), ZB_EPROTO);
    assert_int_equal(zb_msg_decode_failure(&m), ZB_MSG_CODE_VERSION);
    assert_int_equal(m.reject_id.len, 3);
    assert_memory_equal(m.reject_id.ptr, "abc", 3);
    assert_int_equal(m.type, ZB_MSG_NONE);
    /* a malformed id is not echoed */
    b = s_hex("83 a1 76 02 a4 74 79 70 65 01 a2 69 64 a0", &n);
    assert_int_equal(zb_msg_decode(b, n, &m, &d), ZB_EPROTO);
    assert_int_equal(m.reject_id.len, 0);
    assert_int_equal(zb_msg_decode_failure(&m), ZB_MSG_CODE_VERSION);
    /* a bad field of a readable request: bad_request, with type and id */
    b = s_hex("84 a1 76 01 a4 74 79 70 65 a5 65 6d 62 65 64 a2 69 64 a1 71 a5 74 65 78 74 73 91"
              "07",
              &n);
    assert_int_equal(zb_msg_decode(b, n, &m, &d), ZB_EPROTO);
    assert_int_equal(zb_msg_decode_failure(&m), ZB_MSG_CODE_BAD_REQUEST);
    assert_int_equal(m.type, ZB_MSG_EMBED);
    assert_int_equal(m.reject_id.len, 1);
    assert_string_equal(d.msg, "embed: texts[0]: expected str, found uint");
    assert_int_equal(m.mem_bytes, 16 + sizeof(zb_msg_str_t)); /* the texts' views, freed */

    /* over the body limit: refused on its length, before any byte is read
     * (the buffer is one byte: reading it would be caught by ASan) */
    uint8_t one = 0x80;
    assert_int_equal(zb_msg_decode(&one, (size_t)ZB_MSG_BODY_MAX + 1, &m, &d), ZB_EPROTO);
    assert_int_equal(zb_msg_decode_failure(&m), ZB_MSG_CODE_TOO_LARGE);
    assert_int_equal(zb_msg_decode(NULL, 1, &m, &d), ZB_EINVAL);
    assert_int_equal(zb_msg_decode(&one, 1, NULL, &d), ZB_EINVAL);
    assert_int_equal(zb_msg_decode_failure(NULL), ZB_MSG_CODE_BAD_REQUEST);
}

/* Every strict prefix of a valid body is refused cleanly, before any
 * allocation. */
static void test_truncations(void **state) {
    (void)state;
    size_t checked = 0;
    for (size_t k = 0; k < S_N_SAMPLES; k++) {
        zb_msg_t m;
        s_sample(s_sample_names[k], &m);
        uint8_t *body;
        size_t len;
        assert_int_equal(zb_msg_encode(&m, &body, &len, NULL), 0);
        for (size_t cut = 0; cut < len; cut++) {
            /* an exact-size copy, so ASan sees any read past the cut */
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, body, cut);
            zb_msg_t out;
            zb_diag_t d = {{0}};
            assert_int_equal(zb_msg_decode(p, cut, &out, &d), ZB_EPROTO);
            assert_int_equal(zb_msg_decode_failure(&out), ZB_MSG_CODE_BAD_REQUEST);
            assert_true(d.msg[0] != '\0');
            assert_int_equal(out.mem_bytes, 0);
            assert_null(out.mem);
            free(p);
            checked++;
        }
        free(body);
    }
    assert_true(checked > 1000);
}

/* A type this version does not know is flagged, so that a client can
 * ignore the message (PROTOCOL.md section 2); nothing else is. */
static void test_unknown_type(void **state) {
    (void)state;
    static const struct {
        const char *hex;
        bool unknown;
        zb_msg_code_t reject;
        const char *id;
    } cases[] = {
        /* {"v":1,"type":"later"} and with an id */
        {"82 a1 76 01 a4 74 79 70 65 a5 6c 61 74 65 72", true, ZB_MSG_CODE_BAD_REQUEST, NULL},
        {"83 a1 76 01 a4 74 79 70 65 a5 6c 61 74 65 72 a2 69 64 a2 72 31", true,
         ZB_MSG_CODE_BAD_REQUEST, "r1"},
        /* "?" names no type either */
        {"82 a1 76 01 a4 74 79 70 65 a1 3f", true, ZB_MSG_CODE_BAD_REQUEST, NULL},
        /* not a type name at all: a uint, invalid UTF-8, missing */
        {"82 a1 76 01 a4 74 79 70 65 05", false, ZB_MSG_CODE_BAD_REQUEST, NULL},
        {"82 a1 76 01 a4 74 79 70 65 a1 ff", false, ZB_MSG_CODE_BAD_REQUEST, NULL},
        {"81 a1 76 01", false, ZB_MSG_CODE_BAD_REQUEST, NULL},
        /* another version: its types are not ours to judge */
        {"82 a1 76 02 a4 74 79 70 65 a5 6c 61 74 65 72", false, ZB_MSG_CODE_VERSION, NULL},
        /* a known type, malformed: {"v":1,"type":"part","id":"r1"} */
        {"83 a1 76 01 a4 74 79 70 65 a4 70 61 72 74 a2 69 64 a2 72 31", false,
         ZB_MSG_CODE_BAD_REQUEST, "r1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t n;
        const uint8_t *b = s_hex(cases[k].hex, &n);
        zb_msg_t m;
        zb_diag_t d = {{0}};
        assert_int_equal(zb_msg_decode(b, n, &m, &d), ZB_EPROTO);
        if (m.unknown_type != cases[k].unknown)
            fail_msg("case %zu: unknown_type %d (%s)", k, m.unknown_type, d.msg);
        assert_int_equal(m.reject, cases[k].reject);
        if (cases[k].id) {
            assert_int_equal(m.reject_id.len, strlen(cases[k].id));
            assert_memory_equal(m.reject_id.ptr, cases[k].id, m.reject_id.len);
        }
        assert_null(m.mem);
        zb_msg_free(&m);
    }
    /* decoded messages never carry the flag */
    zb_msg_t m;
    s_sample("part_meta", &m);
    size_t len;
    uint8_t *body = s_roundtrip(&m, &len);
    zb_msg_t back;
    s_accept(body, len, &back);
    assert_false(back.unknown_type);
    zb_msg_free(&back);
    free(body);
}

static void s_enc_fails(const zb_msg_t *m, int rc_want, const char *needle) {
    uint8_t *out = (uint8_t *)"x";
    size_t len = 5;
    zb_diag_t d = {{0}};
    int rc = zb_msg_encode(m, &out, &len, &d);
    if (rc != rc_want) fail_msg("encode: %d, expected %d (%s)", rc, rc_want, d.msg);
    if (!strstr(d.msg, needle)) fail_msg("encode: `%s` does not name `%s`", d.msg, needle);
    assert_null(out);
    assert_int_equal(len, 0);
}

static void test_encoder_rejects(void **state) {
    (void)state;
    zb_msg_t m;
    s_sample("embed", &m);
    m.u.embed.id = (zb_msg_str_t){NULL, 0};
    s_enc_fails(&m, ZB_EINVAL, "embed: id: 0 bytes");
    m.u.embed.id = (zb_msg_str_t){"\xc3", 1};
    s_enc_fails(&m, ZB_EINVAL, "id: not valid UTF-8");
    m.u.embed.id = (zb_msg_str_t){NULL, 3};
    s_enc_fails(&m, ZB_EINVAL, "id: NULL with length 3");
    s_sample("embed", &m);
    m.u.embed.n_texts = 0;
    s_enc_fails(&m, ZB_EINVAL, "texts: empty");
    static const zb_msg_str_t bad_texts[2] = {{"a", 1}, {NULL, 4}};
    m.u.embed.texts = bad_texts;
    m.u.embed.n_texts = 2;
    s_enc_fails(&m, ZB_EINVAL, "texts[1]: NULL with length 4");
    s_sample("embed", &m);
    m.u.embed.opt.level = (zb_level_t)7;
    s_enc_fails(&m, ZB_EINVAL, "level: 7");
    s_sample("embed", &m);
    m.u.embed.opt.pooling = (zb_pooling_t)-1;
    s_enc_fails(&m, ZB_EINVAL, "pooling");

    /* a body over the limit: measured, never allocated */
    static char big[4096];
    zb_msg_str_t *t = malloc(ZB_MSG_TEXTS_MAX * sizeof *t);
    for (size_t i = 0; i < ZB_MSG_TEXTS_MAX; i++) t[i] = (zb_msg_str_t){big, sizeof big};
    m.u.embed.opt.pooling = ZB_POOLING_CLS;
    m.u.embed.texts = t;
    m.u.embed.n_texts = ZB_MSG_TEXTS_MAX;
    s_enc_fails(&m, ZB_ELIMIT, "the body would exceed");
    free(t);

    s_sample("part_wordpiece", &m);
    m.u.part.vec.n_rows = 6;
    s_enc_fails(&m, ZB_EINVAL, "rows: they add up to 7, not n_rows 6");
    s_sample("part_wordpiece", &m);
    m.u.part.vec.vectors_len -= 4;
    s_enc_fails(&m, ZB_EINVAL, "vectors: 108 bytes");
    s_sample("part_wordpiece", &m);
    m.u.part.vec.ids = NULL;
    s_enc_fails(&m, ZB_EINVAL, "ids: required");
    s_sample("part_wordpiece", &m);
    m.u.part.vec.byte_offsets = NULL;
    s_enc_fails(&m, ZB_EINVAL, "offsets: required at the wordpiece level");
    s_sample("part_wordpiece", &m);
    m.u.part.vec.rows = NULL;
    s_enc_fails(&m, ZB_EINVAL, "rows: NULL");
    s_sample("part_wordpiece", &m);
    m.u.part.vec.n_truncated = 2;
    m.u.part.vec.truncated = NULL;
    s_enc_fails(&m, ZB_EINVAL, "truncated: NULL");
    s_sample("part_wordpiece", &m);
    zb_msg_text_error_t e = s_err_wp[0];
    e.code = ZB_MSG_CODE_UNKNOWN;
    m.u.part.vec.errors = &e;
    s_enc_fails(&m, ZB_EINVAL, "errors[0].code");
    e.code = ZB_MSG_CODE_NONE;
    s_enc_fails(&m, ZB_EINVAL, "errors[0].code");
    e = s_err_wp[0];
    e.index = 10;
    s_enc_fails(&m, ZB_EINVAL, "errors[0]: text 10 failed but has 4 rows");
    s_sample("part_sentence", &m);
    m.u.part.vec.offsets = s_off_wp;
    s_enc_fails(&m, ZB_EINVAL, "offsets: not sent at the sentence level");
    s_sample("part_sentence", &m);
    m.u.part.first = 99998;
    s_enc_fails(&m, ZB_EINVAL, "first: texts 99998..100000");
    s_sample("part_token", &m);
    m.u.part.vec.dim = 0;
    s_enc_fails(&m, ZB_EINVAL, "dim: 0 is outside");
    s_sample("part_token", &m);
    static const uint32_t rows_big[1] = {4097};
    m.u.part.vec = (zb_msg_vectors_t){.level = ZB_LEVEL_SENTENCE,
                                      .dim = ZB_HIDDEN_MAX,
                                      .count = 1,
                                      .rows = rows_big,
                                      .n_rows = 4097,
                                      .vectors = big,
                                      .vectors_len = (size_t)4097 * ZB_HIDDEN_MAX * 4};
    s_enc_fails(&m, ZB_ELIMIT, "vectors: 268500992 bytes exceed the body limit");

    /* options out of range or that cannot be honoured */
    s_sample("embed_opts", &m);
    m.u.embed.opt.token_vector = (zb_token_vector_t)9;
    s_enc_fails(&m, ZB_EINVAL, "token_vector: 9 is not a token vector");
    s_sample("embed_opts", &m);
    m.u.embed.opt.compat = (zb_compat_t)5;
    s_enc_fails(&m, ZB_EINVAL, "compat: 5 is not a compatibility mode");
    s_sample("embed_opts", &m);
    m.u.embed.opt.level = ZB_LEVEL_SENTENCE;
    s_enc_fails(&m, ZB_EINVAL, "compat: sparknlp gives token vectors, not the sentence level");
    m.u.embed.opt.compat = ZB_COMPAT_NONE;
    s_enc_fails(&m, ZB_EINVAL, "sentences: applies to the token and wordpiece levels");
    s_sample("task_opts", &m);
    m.u.task.opt.compat = ZB_COMPAT_SPARKNLP;
    s_enc_fails(&m, ZB_EINVAL, "task: compat: sparknlp gives token vectors, not the wordpiece");

    /* token metadata: the rows with the flag, none without, token level */
    s_sample("part_meta", &m);
    m.u.part.vec.meta = NULL;
    s_enc_fails(&m, ZB_EINVAL, "meta: NULL with token_meta and 3 rows");
    s_sample("part_meta", &m);
    m.u.part.vec.token_meta = false;
    s_enc_fails(&m, ZB_EINVAL, "meta: metadata rows without token_meta");
    s_sample("part_token", &m);
    m.u.part.vec.meta = s_tm_meta;
    s_enc_fails(&m, ZB_EINVAL, "meta: metadata rows without token_meta");
    s_sample("part_meta", &m);
    m.u.part.vec.level = ZB_LEVEL_WORDPIECE;
    m.u.part.vec.ids = s_piece_meta;
    s_enc_fails(&m, ZB_EINVAL, "sentence: token metadata is sent at the token level only");
    s_sample("result_meta", &m);
    zb_token_meta_t piece_bad[3] = {s_tm_meta[0], s_tm_meta[1], s_tm_meta[2]};
    piece_bad[1].piece_id = 7;
    m.u.result.vec.meta = piece_bad;
    s_enc_fails(&m, ZB_EINVAL, "piece_id: row 1 is oov but has piece 7 (-1 expected)");
    piece_bad[1].piece_id = 0; /* the wire's "no piece" is not the struct's */
    s_enc_fails(&m, ZB_EINVAL, "piece_id: row 1 is oov but has piece 0 (-1 expected)");
    piece_bad[1] = s_tm_meta[1];
    piece_bad[2].piece_id = -3;
    s_enc_fails(&m, ZB_EINVAL, "piece_id: row 2 has piece -3, not a vocabulary id");

    s_sample("error", &m);
    m.u.error.code = ZB_MSG_CODE_NONE;
    s_enc_fails(&m, ZB_EINVAL, "code: 0 is not an error code");
    s_sample("ready", &m);
    m.u.ready.credit = 0;
    s_enc_fails(&m, ZB_EINVAL, "credit: 0 is outside");
    s_sample("status_reply", &m);
    m.u.status_reply.latency_p90_ms = NAN;
    s_enc_fails(&m, ZB_EINVAL, "latency_ms.p90");
    s_sample("status_reply", &m);
    m.u.status_reply.n_workers = ZB_MSG_WORKERS_MAX + 1;
    s_enc_fails(&m, ZB_EINVAL, "workers: 4097 entries");
    m = (zb_msg_t){.type = (zb_msg_type_t)99};
    s_enc_fails(&m, ZB_EINVAL, "99 is not a message type");

    uint8_t *out;
    size_t len;
    assert_int_equal(zb_msg_encode_empty(ZB_MSG_EMBED, &out, &len, NULL), ZB_EINVAL);
    assert_int_equal(zb_msg_encode(NULL, &out, &len, NULL), ZB_EINVAL);
    assert_int_equal(zb_msg_encode_part(NULL, &out, &len, NULL), ZB_EINVAL);
}

static void test_names(void **state) {
    (void)state;
    assert_string_equal(zb_msg_type_name(ZB_MSG_STATUS_REPLY), "status_reply");
    assert_string_equal(zb_msg_type_name((zb_msg_type_t)99), "?");
    assert_string_equal(zb_msg_code_name(ZB_MSG_CODE_DUPLICATE_ID), "duplicate_id");
    assert_string_equal(zb_msg_code_name(ZB_MSG_CODE_BAD_UTF8), "bad_utf8");
    assert_string_equal(zb_options_level_name(ZB_LEVEL_WORDPIECE), "wordpiece");
    assert_string_equal(zb_options_pooling_name(ZB_POOLING_MEAN), "mean");
    assert_string_equal(zb_options_pooling_name((zb_pooling_t)5), "?");
    assert_string_equal(zb_msg_code_name(ZB_MSG_CODE_UNSUPPORTED), "unsupported");
    assert_string_equal(zb_options_token_vector_name(ZB_TOKEN_VECTOR_MEAN), "mean");
    assert_string_equal(zb_options_token_vector_name(ZB_TOKEN_VECTOR_FIRST), "first");
    assert_string_equal(zb_options_token_vector_name((zb_token_vector_t)2), "?");
    assert_string_equal(zb_options_compat_name(ZB_COMPAT_SPARKNLP), "sparknlp");
    assert_string_equal(zb_options_compat_name((zb_compat_t)-1), "?");
    /* zb_msg_equal tells messages apart */
    zb_msg_t a, b;
    s_sample("part_wordpiece", &a);
    s_sample("part_wordpiece", &b);
    assert_true(zb_msg_equal(&a, &b));
    static const uint32_t ids2[7] = {101, 7, 8, 102, 101, 9, 103};
    b.u.part.vec.ids = ids2;
    assert_false(zb_msg_equal(&a, &b));
    s_sample("embed", &b);
    assert_false(zb_msg_equal(&a, &b));
    s_sample("embed", &a);
    a.u.embed.opt.windows = false;
    assert_false(zb_msg_equal(&a, &b));
    /* ... by each later option and each metadata array */
    s_sample("embed_opts", &a);
    for (int k = 0; k < 4; k++) {
        s_sample("embed_opts", &b);
        assert_true(zb_msg_equal(&a, &b));
        if (k == 0) b.u.embed.opt.sentences = false;
        if (k == 1) b.u.embed.opt.token_vector = ZB_TOKEN_VECTOR_FIRST;
        if (k == 2) b.u.embed.opt.compat = ZB_COMPAT_NONE;
        if (k == 3) b.u.embed.opt.token_meta = false;
        assert_false(zb_msg_equal(&a, &b));
    }
    s_sample("part_meta", &a);
    for (int k = 0; k < 4; k++) {
        zb_token_meta_t other[3] = {s_tm_meta[0], s_tm_meta[1], s_tm_meta[2]};
        s_sample("part_meta", &b);
        b.u.part.vec.meta = other;
        assert_true(zb_msg_equal(&a, &b));
        if (k == 0) other[0].sentence = 1;
        if (k == 1) other[0].piece_id = 1;
        if (k == 2) other[0].word_start = false;
        if (k == 3) other[0].oov = true;
        assert_false(zb_msg_equal(&a, &b));
    }
    /* ... but not by what does not travel: the engine's row, UTF-16 spans */
    {
        zb_token_meta_t other[3] = {s_tm_meta[0], s_tm_meta[1], s_tm_meta[2]};
        other[0].row = 5;
        other[2].begin16 = 3;
        other[2].end16 = 4;
        s_sample("part_meta", &b);
        b.u.part.vec.meta = other;
        assert_true(zb_msg_equal(&a, &b));
    }
    /* ... and by epoch alone */
    static const char *const epoched[] = {"ready", "task", "result"};
    for (size_t k = 0; k < 3; k++) {
        s_sample(epoched[k], &a);
        s_sample(epoched[k], &b);
        assert_true(zb_msg_equal(&a, &b));
        if (a.type == ZB_MSG_READY) b.u.ready.epoch++;
        if (a.type == ZB_MSG_TASK) b.u.task.epoch++;
        if (a.type == ZB_MSG_RESULT) b.u.result.epoch++;
        assert_false(zb_msg_equal(&a, &b));
    }
    zb_msg_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mp_uint_widths),
        cmocka_unit_test(test_mp_other_widths),
        cmocka_unit_test(test_mp_bounds),
        cmocka_unit_test(test_mp_skip),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_encode_smallest_forms),
        cmocka_unit_test(test_roundtrip_samples),
        cmocka_unit_test(test_roundtrip_edges),
        cmocka_unit_test(test_wide_part),
        cmocka_unit_test(test_wide_embed_and_status_reply),
        cmocka_unit_test(test_security_fields),
        cmocka_unit_test(test_doc_examples),
        cmocka_unit_test(test_every_field_wrong_type),
        cmocka_unit_test(test_missing_and_duplicate_keys),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_hostile_fields),
        cmocka_unit_test(test_hostile_bodies),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_encoder_rejects),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
