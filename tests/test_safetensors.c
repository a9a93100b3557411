/*
 * test_safetensors.c -- the bounded safetensors reader: a valid file read
 * field by field, a table of hostile headers (each must fail with the right
 * code and a message naming the problem), every truncation of a valid file,
 * the writer's round trip, and the F16/BF16 conversions against naive
 * references over every half and many floats.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "safetensors.h"

/* A file image: 8-byte length of json (or hlen when not ~0), json, then
 * data_len bytes 0, 1, 2, ... */
static unsigned char *image(const char *json, uint64_t hlen, size_t data_len, size_t *len) {
    size_t jl = strlen(json);
    *len = 8 + jl + data_len;
    unsigned char *p = malloc(*len ? *len : 1);
    uint64_t h = hlen == ~(uint64_t)0 ? jl : hlen;
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(h >> (8 * i));
    memcpy(p + 8, json, jl);
    for (size_t i = 0; i < data_len; i++) p[8 + jl + i] = (unsigned char)i;
    return p;
}

static const char *s_valid =
    "{\"__metadata__\":{\"format\":\"pt\",\"seed\":\"3\"},"
    "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1,1],\"data_offsets\":[24,32]},"
    "\"scalar\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[32,34]},"
    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[34,34]}}  ";

static void test_valid(void **state) {
    (void)state;
    size_t len;
    unsigned char *p = image(s_valid, ~(uint64_t)0, 34, &len);
    zb_safetensors_t *st = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_safetensors_parse(p, len, &st, &d), 0);
    assert_int_equal(zb_safetensors_count(st), 5);
    /* sorted by offset: a, b, ids, scalar/empty */
    assert_string_equal(zb_safetensors_at(st, 0)->name, "a");
    assert_string_equal(zb_safetensors_at(st, 1)->name, "b");
    assert_null(zb_safetensors_at(st, 5));
    const zb_safetensors_tensor_t *a = zb_safetensors_find(st, "a");
    assert_non_null(a);
    assert_int_equal(a->dtype, ZB_SAFETENSORS_F32);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 2);
    assert_int_equal(a->n_elems, 4);
    assert_int_equal(a->nbytes, 16);
    size_t data0 = 8 + strlen(s_valid);
    assert_ptr_equal(a->data, p + data0);
    const zb_safetensors_tensor_t *b = zb_safetensors_find(st, "b");
    assert_int_equal(b->dtype, ZB_SAFETENSORS_F16);
    assert_int_equal(b->offset, 16);
    assert_ptr_equal(b->data, p + data0 + 16);
    assert_int_equal(((const unsigned char *)b->data)[0], 16);
    const zb_safetensors_tensor_t *s = zb_safetensors_find(st, "scalar");
    assert_int_equal(s->n_dims, 0);
    assert_int_equal(s->n_elems, 1);
    const zb_safetensors_tensor_t *e = zb_safetensors_find(st, "empty");
    assert_int_equal(e->n_elems, 0);
    assert_int_equal(e->nbytes, 0);
    assert_int_equal(zb_safetensors_find(st, "ids")->dtype, ZB_SAFETENSORS_I64);
    assert_null(zb_safetensors_find(st, "c"));
    assert_null(zb_safetensors_find(st, "__metadata__"));
    assert_string_equal(zb_safetensors_metadata(st, "format"), "pt");
    assert_string_equal(zb_safetensors_metadata(st, "seed"), "3");
    assert_null(zb_safetensors_metadata(st, "nope"));
    zb_safetensors_close(&st);
    assert_null(st);
    zb_safetensors_close(&st);
    free(p);
}

/* Every prefix of a valid file is refused, with a message. */
static void test_truncated(void **state) {
    (void)state;
    size_t len;
    unsigned char *p = image(s_valid, ~(uint64_t)0, 34, &len);
    for (size_t n = 0; n < len; n++) {
        unsigned char *q = malloc(n ? n : 1); /* exact size, so ASan sees any overread */
        memcpy(q, p, n);
        zb_safetensors_t *st = NULL;
        zb_diag_t d = {{0}};
        int rc = zb_safetensors_parse(q, n, &st, &d);
        if (rc == 0) fail_msg("prefix of %zu bytes parsed", n);
        if (d.msg[0] == '\0') fail_msg("prefix of %zu: no message", n);
        assert_null(st);
        free(q);
    }
    free(p);
}

#define T(dt, shape, offs) "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"

static void test_hostile(void **state) {
    (void)state;
    static const struct {
        const char *what, *json;
        uint64_t hlen; /* ~0: the JSON's length */
        size_t data;
        int rc;
        const char *needle;
    } cases[] = {
        {"huge header length", "{}", 1ull << 63, 0, ZB_ELIMIT, "exceeds the 100000000 limit"},
        {"header past EOF", "{}", 1000, 0, ZB_EFORMAT, "runs past the end of the 10-byte file"},
        {"zero header", "{}", 0, 0, ZB_EFORMAT, "header of 0 bytes"},
        {"bad JSON", "{\"a\":", ~0ull, 0, ZB_EFORMAT, "header is not valid JSON"},
        {"bad JSON string", "{\"a\":\"\\", ~0ull, 0, ZB_EFORMAT, "header is not valid JSON"},
        {"trailing garbage", "{} x", ~0ull, 0, ZB_EFORMAT, "unexpected bytes after"},
        {"not an object", "[1]", ~0ull, 0, ZB_EFORMAT, "not a JSON object"},
        {"entry not object", "{\"a\":1}", ~0ull, 0, ZB_EFORMAT, "tensor a: entry is not an"},
        {"no dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: missing or non-string dtype"},
        {"unknown dtype", "{\"a\":" T("F8", "[1]", "[0,1]") "}", ~0ull, 4, ZB_EUNSUPPORTED,
         "tensor a: unknown dtype \"F8\""},
        {"dtype not string", "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", ~0ull,
         4, ZB_EFORMAT, "missing or non-string dtype"},
        {"no shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: missing or non-array shape"},
        {"negative dim", "{\"a\":" T("F32", "[-1]", "[0,4]") "}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: shape[0] is not a non-negative integer"},
        {"fractional dim", "{\"a\":" T("F32", "[1,1.5]", "[0,4]") "}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: shape[1] is not a non-negative integer"},
        {"string dim", "{\"a\":" T("F32", "[\"1\"]", "[0,4]") "}", ~0ull, 4, ZB_EFORMAT,
         "shape[0] is not a non-negative integer"},
        {"dim past 2^53", "{\"a\":" T("F32", "[18014398509481984]", "[0,4]") "}", ~0ull, 4,
         ZB_EFORMAT, "shape[0] is not a non-negative integer"},
        {"too many dims", "{\"a\":" T("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", ~0ull, 4,
         ZB_ELIMIT, "tensor a: 9 dimensions, more than 8"},
        {"shape product overflow",
         "{\"a\":" T("F32", "[4294967296,4294967296,4294967296]", "[0,4]") "}", ~0ull, 4,
         ZB_EFORMAT, "tensor a: shape product overflows"},
        {"byte size overflow", "{\"a\":" T("F64", "[2147483648,2147483648]", "[0,4]") "}", ~0ull, 4,
         ZB_EFORMAT, "tensor a: byte size overflows"},
        {"no offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: data_offsets is not an array of two"},
        {"three offsets", "{\"a\":" T("F32", "[1]", "[0,4,8]") "}", ~0ull, 8, ZB_EFORMAT,
         "data_offsets is not an array of two"},
        {"negative offset", "{\"a\":" T("F32", "[1]", "[-4,0]") "}", ~0ull, 4, ZB_EFORMAT,
         "tensor a: data_offsets are not non-negative integers"},
        {"backwards offsets", "{\"a\":" T("F32", "[1]", "[8,4]") "}", ~0ull, 8, ZB_EFORMAT,
         "tensor a: data_offsets [8,4) run backwards"},
        {"offsets past end", "{\"a\":" T("F32", "[1]", "[4,8]") "}", ~0ull, 6, ZB_EFORMAT,
         "tensor a: data_offsets [4,8) run past the 6-byte data section"},
        {"huge offsets", "{\"a\":" T("F32", "[1]", "[9007199254740988,9007199254740992]") "}",
         ~0ull, 6, ZB_EFORMAT, "run past the 6-byte data section"},
        {"size mismatch", "{\"a\":" T("F32", "[2]", "[0,4]") "}", ~0ull, 8, ZB_EFORMAT,
         "tensor a: data_offsets [0,4) hold 4 bytes but shape x F32 needs 8"},
        {"overlap", "{\"a\":" T("F32", "[2]", "[0,8]") ",\"b\":" T("F32", "[2]", "[4,12]") "}",
         ~0ull, 12, ZB_EFORMAT, "tensors a [0,8) and b [4,12) overlap"},
        {"same range", "{\"a\":" T("U8", "[2]", "[0,2]") ",\"b\":" T("I8", "[2]", "[0,2]") "}",
         ~0ull, 2, ZB_EFORMAT, "overlap"},
        {"duplicate name", "{\"a\":" T("U8", "[2]", "[0,2]") ",\"a\":" T("U8", "[2]", "[2,4]") "}",
         ~0ull, 4, ZB_EFORMAT, "tensor a appears twice"},
        {"metadata not object", "{\"__metadata__\":1}", ~0ull, 0, ZB_EFORMAT,
         "__metadata__ is repeated or not an object"},
        {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", ~0ull, 0, ZB_EFORMAT,
         "__metadata__ is repeated"},
        {"metadata value", "{\"__metadata__\":{\"a\":1}}", ~0ull, 0, ZB_EFORMAT,
         "__metadata__ values must be strings"},
        {"empty name", "{\"\":" T("U8", "[1]", "[0,1]") "}", ~0ull, 1, ZB_ELIMIT,
         "tensor name \"\" has 0 bytes"},
        {"control chars in name", "{\"a\\nb\":" T("F8", "[1]", "[0,1]") "}", ~0ull, 1,
         ZB_EUNSUPPORTED, "tensor a?b: unknown dtype"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *p = image(cases[i].json, cases[i].hlen, cases[i].data, &len);
        zb_safetensors_t *st = (zb_safetensors_t *)1;
        zb_diag_t d = {{0}};
        int rc = zb_safetensors_parse(p, len, &st, &d);
        if (rc != cases[i].rc || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("%s: rc %d (want %d), \"%s\" (want \"%s\")", cases[i].what, rc, cases[i].rc,
                     d.msg, cases[i].needle);
        assert_null(st);
        free(p);
    }
}

static void test_hostile_generated(void **state) {
    (void)state;
    zb_diag_t d = {{0}};
    zb_safetensors_t *st = NULL;
    /* fewer than 8 bytes */
    assert_int_equal(zb_safetensors_parse("\x02\0\0", 3, &st, &d), ZB_EFORMAT);
    assert_non_null(strstr(d.msg, "file is 3 bytes, shorter than its 8-byte header length"));
    assert_int_equal(zb_safetensors_parse(NULL, 0, &st, &d), ZB_EFORMAT);
    assert_int_equal(zb_safetensors_parse(NULL, 5, &st, &d), ZB_EINVAL);
    /* a 300-byte name */
    char json[1024];
    char name[301];
    memset(name, 'n', 300);
    name[300] = '\0';
    snprintf(json, sizeof json, "{\"%s\":" T("U8", "[1]", "[0,1]") "}", name);
    size_t len;
    unsigned char *p = image(json, ~(uint64_t)0, 1, &len);
    assert_int_equal(zb_safetensors_parse(p, len, &st, &d), ZB_ELIMIT);
    assert_non_null(strstr(d.msg, "has 300 bytes (allowed 1..255)"));
    free(p);
    /* more tensors than ZB_TENSORS_MAX */
    size_t cap = 64 * (ZB_TENSORS_MAX + 2);
    char *big = malloc(cap);
    size_t k = (size_t)snprintf(big, cap, "{");
    for (int i = 0; i <= ZB_TENSORS_MAX; i++)
        k += (size_t)snprintf(big + k, cap - k, "%s\"t%d\":" T("U8", "[1]", "[%d,%d]"),
                              i ? "," : "", i, i, i + 1);
    snprintf(big + k, cap - k, "}");
    p = image(big, ~(uint64_t)0, ZB_TENSORS_MAX + 1, &len);
    assert_int_equal(zb_safetensors_parse(p, len, &st, &d), ZB_ELIMIT);
    assert_non_null(strstr(d.msg, "more than 4096 tensors"));
    free(p);
    /* ... while exactly ZB_TENSORS_MAX parse, and lookups find each */
    k = (size_t)snprintf(big, cap, "{");
    for (int i = 0; i < ZB_TENSORS_MAX; i++)
        k += (size_t)snprintf(big + k, cap - k, "%s\"t%d\":" T("U8", "[1]", "[%d,%d]"),
                              i ? "," : "", i, i, i + 1);
    snprintf(big + k, cap - k, "}");
    p = image(big, ~(uint64_t)0, ZB_TENSORS_MAX, &len);
    assert_int_equal(zb_safetensors_parse(p, len, &st, &d), 0);
    for (int i = 0; i < ZB_TENSORS_MAX; i += 97) {
        char n[16];
        snprintf(n, sizeof n, "t%d", i);
        const zb_safetensors_tensor_t *t = zb_safetensors_find(st, n);
        assert_non_null(t);
        assert_int_equal(t->offset, (size_t)i);
    }
    zb_safetensors_close(&st);
    free(p);
    free(big);
    /* deep nesting inside a tensor entry: refused, no stack exhaustion */
    char *deep = malloc(20000);
    strcpy(deep, "{\"a\":{\"x\":");
    for (int i = 0; i < 5000; i++) strcat(deep, "[");
    p = image(deep, ~(uint64_t)0, 0, &len);
    assert_int_equal(zb_safetensors_parse(p, len, &st, &d), ZB_EFORMAT);
    free(p);
    free(deep);
}

static void test_files(void **state) {
    (void)state;
    zb_diag_t d = {{0}};
    zb_safetensors_t *st = NULL;
    assert_int_equal(zb_safetensors_open_file("/nonexistent/x.safetensors", &st, &d), ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "/nonexistent/x.safetensors"));
    assert_int_equal(zb_safetensors_open_file("/tmp", &st, &d), ZB_EIO);
    assert_non_null(strstr(d.msg, "not a regular file"));

    /* writer round trip */
    char path[] = "/tmp/zb_test_st_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    uint16_t h[3] = {0x3c00, 0x8001, 0x7bff};
    uint16_t bf[2] = {0x3f80, 0xc000};
    zb_safetensors_out_t out[3] = {
        {.name = "x.weight", .dtype = ZB_SAFETENSORS_F32, .n_dims = 2, .shape = {2, 3}, .data = a},
        {.name = "y", .dtype = ZB_SAFETENSORS_F16, .n_dims = 1, .shape = {3}, .data = h},
        {.name = "z\"quoted\"",
         .dtype = ZB_SAFETENSORS_BF16,
         .n_dims = 1,
         .shape = {2},
         .data = bf},
    };
    const char *meta[] = {"format", "pt", "note", "written by a test"};
    assert_int_equal(zb_safetensors_write(path, out, 3, meta, 2, &d), 0);
    assert_int_equal(zb_safetensors_open_file(path, &st, &d), 0);
    assert_int_equal(zb_safetensors_count(st), 3);
    const zb_safetensors_tensor_t *t = zb_safetensors_find(st, "x.weight");
    assert_non_null(t);
    assert_memory_equal(t->data, a, sizeof a);
    assert_int_equal(((uintptr_t)t->data) % 8, 0); /* data section 8-byte aligned */
    t = zb_safetensors_find(st, "y");
    assert_memory_equal(t->data, h, sizeof h);
    t = zb_safetensors_find(st, "z\"quoted\"");
    assert_non_null(t);
    assert_int_equal(t->dtype, ZB_SAFETENSORS_BF16);
    assert_memory_equal(t->data, bf, sizeof bf);
    assert_string_equal(zb_safetensors_metadata(st, "note"), "written by a test");
    zb_safetensors_close(&st);
    /* the writer refuses what the reader would refuse */
    out[0].n_dims = ZB_TENSOR_DIMS_MAX + 1;
    assert_int_equal(zb_safetensors_write(path, out, 1, NULL, 0, &d), ZB_EINVAL);
    unlink(path);
    assert_int_equal(zb_safetensors_write("/nonexistent/dir/x", out + 1, 1, NULL, 0, &d), ZB_EIO);
    /* the fixture files parse and hold what the README says */
    assert_int_equal(zb_safetensors_open_file(
                         fx_path("tiny-seed2-bert-gammabeta-f16/model.safetensors"), &st, &d),
                     0);
    assert_int_equal(zb_safetensors_count(st), 47); /* 37 encoder + 10 others */
    t = zb_safetensors_find(st, "bert.embeddings.position_ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, ZB_SAFETENSORS_I64);
    assert_string_equal(zb_safetensors_metadata(st, "seed"), "2");
    zb_safetensors_close(&st);
}

/* --- conversions ---------------------------------------------------------- */

static double ref_half(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16_to_f32(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = zb_safetensors_f16_to_f32((uint16_t)h);
        double r = ref_half((uint16_t)h);
        if (isnan(r)) {
            assert_true(isnan(f));
            continue;
        }
        if ((double)f != r || !signbit(f) != !signbit(r)) fail_msg("half %#x", h);
        /* and back, exactly */
        if (zb_safetensors_f32_to_f16(f) != h) fail_msg("half %#x does not round trip", h);
    }
    for (uint32_t b = 0; b < 65536; b++) {
        float f = zb_safetensors_bf16_to_f32((uint16_t)b);
        assert_int_equal(fbits(f), b << 16);
        if (!isnan(f) && zb_safetensors_f32_to_bf16(f) != b) fail_msg("bf16 %#x", b);
    }
}

/* Nearest half by search over the ordered positive halves; ties to even; the
 * step past 65504 counts as 65536 so that IEEE overflow rounding holds. */
static uint16_t ref_to_half(float f) {
    double x = fabs((double)f);
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    if (isnan(f)) return 0x7e00;
    uint32_t lo = 0, hi = 0x7c00; /* invariant: val(lo) <= x < val(hi) (val(0x7c00) = 65536) */
    if (x >= 65536.0) return sign | 0x7c00;
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (ref_half((uint16_t)mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    double vlo = ref_half((uint16_t)lo), vhi = hi == 0x7c00 ? 65536.0 : ref_half((uint16_t)hi);
    uint32_t r;
    if (x - vlo < vhi - x)
        r = lo;
    else if (x - vlo > vhi - x)
        r = hi;
    else
        r = (lo & 1) ? hi : lo;
    return (uint16_t)(sign | r);
}

static uint16_t ref_to_bf16(float f) {
    uint32_t u = fbits(f);
    uint32_t lo = u >> 16, hi = lo + 1;
    double x = fabs((double)f);
    double vlo = fabs((double)bitsf(lo << 16));
    double vhi = (hi & 0x7fff) == 0x7f80 ? ldexp(1, 128) : fabs((double)bitsf(hi << 16));
    if (x - vlo < vhi - x) return (uint16_t)lo;
    if (x - vlo > vhi - x) return (uint16_t)hi;
    return (uint16_t)((lo & 1) ? hi : lo);
}

static void test_f32_rounding(void **state) {
    (void)state;
    uint64_t s = 0x243f6a8885a308d3ull;
    size_t n = 0;
    for (int i = 0; i < 2000000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        uint32_t u = (uint32_t)s;
        /* half of the draws land in the half-precision range, where it matters */
        if (i & 1) u = (u & 0x807fffffu) | ((uint32_t)(100 + (s >> 40) % 45) << 23);
        float f = bitsf(u);
        if (isnan(f)) continue;
        uint16_t got = zb_safetensors_f32_to_f16(f), want = ref_to_half(f);
        if (got != want) fail_msg("f16(%a) = %#x, want %#x", (double)f, got, want);
        if ((u & 0x7f800000u) != 0x7f800000u) {
            uint16_t gb = zb_safetensors_f32_to_bf16(f), wb = ref_to_bf16(f);
            if (gb != wb) fail_msg("bf16(%a) = %#x, want %#x", (double)f, gb, wb);
        }
        n++;
    }
    /* the ties and edges by name */
    assert_int_equal(zb_safetensors_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(zb_safetensors_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(zb_safetensors_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(zb_safetensors_f32_to_f16(0x1p-25f), 0); /* tie to even: 0 */
    assert_int_equal(zb_safetensors_f32_to_f16(0x1.000002p-25f), 1);
    assert_int_equal(zb_safetensors_f32_to_f16(0x3p-25f), 2);         /* 1.5 ulp: tie to 2 */
    assert_int_equal(zb_safetensors_f32_to_f16(0x1.ffcp-15f), 0x400); /* rounds up to normal */
    assert_int_equal(zb_safetensors_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(zb_safetensors_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(zb_safetensors_f32_to_f16(-1e30f), 0xfc00);
    assert_true((zb_safetensors_f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    assert_int_equal(zb_safetensors_f32_to_bf16(bitsf(0x3f808000u)), 0x3f80); /* tie, even */
    assert_int_equal(zb_safetensors_f32_to_bf16(bitsf(0x3f818000u)), 0x3f82);
    assert_int_equal(zb_safetensors_f32_to_bf16(bitsf(0x7f7fffffu)), 0x7f80);
    assert_true((zb_safetensors_f32_to_bf16(NAN) & 0x7fff) > 0x7f80);
    assert_true(n > 1000000);
}

static void test_dtype_names(void **state) {
    (void)state;
    for (int i = 0; i < ZB_SAFETENSORS_DTYPE_COUNT; i++) {
        zb_safetensors_dtype_t t;
        assert_int_equal(zb_safetensors_dtype_parse(zb_safetensors_dtype_name(i), &t), 0);
        assert_int_equal(t, i);
        assert_true(zb_safetensors_dtype_size(i) > 0);
    }
    zb_safetensors_dtype_t t;
    assert_int_equal(zb_safetensors_dtype_parse("f32", &t), ZB_EUNSUPPORTED);
    assert_int_equal(zb_safetensors_dtype_size(ZB_SAFETENSORS_DTYPE_COUNT), 0);
    assert_string_equal(zb_safetensors_dtype_name(ZB_SAFETENSORS_DTYPE_COUNT), "?");
    assert_int_equal(zb_safetensors_dtype_size(ZB_SAFETENSORS_BF16), 2);
    assert_int_equal(zb_safetensors_dtype_size(ZB_SAFETENSORS_I64), 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_hostile),      cmocka_unit_test(test_hostile_generated),
        cmocka_unit_test(test_files),        cmocka_unit_test(test_f16_to_f32),
        cmocka_unit_test(test_f32_rounding), cmocka_unit_test(test_dtype_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
