/*
 * test_bundle.c -- the .zbm bundle: round trips of both fixture models
 * (bit-identical weights, 64-byte aligned views inside the file mapping,
 * checksum computed independently), hostile archives and manifests (each
 * must fail with the right code and a message naming the problem), every
 * truncation and single-byte corruption of a small bundle, verify's checksum,
 * and the pages of two processes mapping the same bundle being shared.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zip.h>

#include "bundle.h"
#include "convert.h"
#include "fixture.h"
#include "gemm.h"
#include "model.h"

/* path buffers (Linux PATH_MAX; <limits.h> is shadowed by the project header) */
#define S_PATH_MAX 4096

static char s_dir[64];            /* this test's temporary directory */
static char s_tiny[128];          /* a small valid bundle (packed table) */
static char s_tiny_plain[128];    /* the same with the plain table */
static unsigned char *s_tiny_img; /* its bytes */
static size_t s_tiny_len;

/* --- helpers -------------------------------------------------------------- */

static void rm_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *dp = opendir(path);
        struct dirent *e;
        while (dp && (e = readdir(dp)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char p[S_PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            rm_tree(p);
        }
        if (dp) closedir(dp);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void write_file(const char *path, const void *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static const char *tmp_path(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", s_dir, name);
    return p;
}

/* Opens bytes as a bundle file; returns the code, d gets the message. */
static int open_bytes(const void *buf, size_t len, zb_diag_t *d) {
    const char *p = tmp_path("probe.zbm");
    write_file(p, buf, len);
    zb_bundle_t *b = (zb_bundle_t *)1;
    memset(d, 0, sizeof *d);
    int rc = zb_bundle_open(p, &b, d);
    if (rc == 0) {
        assert_non_null(b);
        zb_bundle_close(&b);
    } else {
        assert_null(b);
        if (d->msg[0] == '\0') fail_msg("code %d without a message", rc);
    }
    return rc;
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void wr32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Byte offset of the end-of-central-directory record of an image. */
static size_t eocd_of(const unsigned char *p, size_t len) {
    for (size_t i = len - 22 + 1; i-- > 0;)
        if (rd32(p + i) == 0x06054b50u) return i;
    fail_msg("no end record");
    return 0;
}

/* Reads a whole zip entry with libzip (independently of bundle.c). */
static unsigned char *zip_entry(const char *path, const char *name, size_t *len) {
    int err;
    zip_t *za = zip_open(path, ZIP_RDONLY, &err);
    assert_non_null(za);
    zip_stat_t st;
    assert_int_equal(zip_stat(za, name, 0, &st), 0);
    unsigned char *buf = malloc(st.size + 1);
    zip_file_t *zf = zip_fopen(za, name, 0);
    assert_non_null(zf);
    assert_int_equal(zip_fread(zf, buf, st.size), (zip_int64_t)st.size);
    zip_fclose(zf);
    zip_discard(za);
    *len = st.size;
    buf[st.size] = '\0';
    return buf;
}

enum { Z_COMPRESS = 1, Z_NO_PAD = 2, Z_NO_WEIGHTS = 4, Z_MANY = 8, Z_WEIGHTS_LAST = 16 };

/* Writes a zip like the bundle writer does (weights first, stored, padded to
 * 64) with any manifest, or with one of the deviations in flags. */
static void make_zip(const char *path, const char *manifest, const void *w, size_t wlen,
                     const char *vocab, int flags) {
    int err;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    assert_non_null(za);
    const char *names[3] = {"weights.bin", "zbert.json", "vocab.txt"};
    const void *bufs[3] = {w, manifest, vocab};
    size_t lens[3] = {wlen, strlen(manifest), strlen(vocab)};
    for (int k = 0; k < 3; k++) {
        int i = (flags & Z_WEIGHTS_LAST) ? (k + 1) % 3 : k;
        if (i == 0 && (flags & Z_NO_WEIGHTS)) continue;
        zip_source_t *src = zip_source_buffer(za, bufs[i], lens[i], 0);
        zip_int64_t idx = zip_file_add(za, names[i], src, 0);
        assert_true(idx >= 0);
        if (i == 0) {
            zip_set_file_compression(za, (zip_uint64_t)idx,
                                     (flags & Z_COMPRESS) ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
            if (!(flags & Z_NO_PAD)) {
                unsigned char pad[19] = {64, 0};
                assert_int_equal(zip_file_extra_field_set(za, (zip_uint64_t)idx, 0xD935,
                                                          ZIP_EXTRA_FIELD_NEW, pad, 19,
                                                          ZIP_FL_LOCAL),
                                 0);
            }
        }
    }
    for (int i = 0; (flags & Z_MANY) && i < ZB_BUNDLE_ENTRIES_MAX; i++) {
        char n[32];
        snprintf(n, sizeof n, "extra-%d.txt", i);
        zip_source_t *src = zip_source_buffer(za, "x", 1, 0);
        assert_true(zip_file_add(za, n, src, 0) >= 0);
    }
    assert_int_equal(zip_close(za), 0);
}

/* A bundle of a tiny model (16-entry vocabulary, hidden 8, 1 layer), with
 * the packed table (what convert writes) or the plain one, as version 2;
 * the manifest of a plain one can be turned into a version 1 bundle. */
static void write_tiny(const char *path, bool packed) {
    zb_config_t c = {.vocab_size = 16,
                     .hidden = 8,
                     .layers = 1,
                     .heads = 2,
                     .intermediate = 16,
                     .max_positions = 8,
                     .type_vocab_size = 2,
                     .layer_norm_eps = 1e-12f};
    zb_config_tokenizer_t t = {.lowercase = false, .strip_accents = false};
    char vocab[256] = "";
    for (int i = 0; i < 16; i++) snprintf(vocab + strlen(vocab), 16, "t%d\n", i);
    int n = packed ? zb_model_n_packed(&c) : 5 + 16;
    zb_model_tensor_t ts[21];
    float *data[21];
    for (int i = 0; i < n; i++) {
        if (packed)
            assert_int_equal(zb_model_packed_spec(&c, i, &ts[i]), 0);
        else
            assert_int_equal(zb_model_tensor_spec(&c, i, &ts[i]), 0);
        data[i] = malloc(ts[i].n_stored * sizeof(float));
        for (size_t k = 0; k < ts[i].n_stored; k++) data[i][k] = (float)i + (float)k / 1024.0f;
        ts[i].data = data[i];
    }
    zb_convert_spec_t spec = {.config = &c,
                              .tokenizer = &t,
                              .vocab = vocab,
                              .vocab_len = strlen(vocab),
                              .tensors = ts,
                              .n_tensors = (size_t)n,
                              .source = "test tiny model"};
    zb_diag_t d = {{0}};
    int rc = zb_convert_write(path, &spec, &d);
    if (rc) fail_msg("write_tiny: %s", d.msg);
    for (int i = 0; i < n; i++) free(data[i]);
}

static int setup(void **state) {
    (void)state;
    snprintf(s_dir, sizeof s_dir, "/tmp/zb_test_bundle_XXXXXX");
    if (mkdtemp(s_dir) == NULL) return -1;
    snprintf(s_tiny, sizeof s_tiny, "%s/tiny.zbm", s_dir);
    write_tiny(s_tiny, true);
    snprintf(s_tiny_plain, sizeof s_tiny_plain, "%s/tiny-plain.zbm", s_dir);
    write_tiny(s_tiny_plain, false);
    s_tiny_img = (unsigned char *)fx_read_file(s_tiny, &s_tiny_len);
    return s_tiny_img ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    free(s_tiny_img);
    rm_tree(s_dir);
    return 0;
}

/* --- round trips ---------------------------------------------------------- */

/* [lo, hi) ranges of this process's mappings of the file at path */
static int mapped_ranges(const char *path, uintptr_t lo[], uintptr_t hi[], int cap) {
    char real[S_PATH_MAX];
    assert_non_null(realpath(path, real));
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[S_PATH_MAX + 128];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        unsigned long a, b;
        char name[S_PATH_MAX] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, name) >= 2 &&
            strcmp(name, real) == 0) {
            lo[n] = a;
            hi[n] = b;
            n++;
        }
    }
    fclose(f);
    return n;
}

static void roundtrip(const char *fixture, const char *bundle_name) {
    zb_diag_t d = {{0}};
    zb_model_t *hf = NULL, *bm = NULL;
    const char *bpath = tmp_path(bundle_name);
    char path[256];
    snprintf(path, sizeof path, "%s", bpath);
    assert_int_equal(zb_model_open(fx_path(fixture), &hf, &d), 0);
    int rc = zb_convert_model(path, hf, "round trip test", &d);
    if (rc) fail_msg("%s", d.msg);
    rc = zb_model_open(path, &bm, &d);
    if (rc) fail_msg("%s", d.msg);

    assert_memory_equal(zb_model_config(hf), zb_model_config(bm), sizeof(zb_config_t));
    assert_int_equal(zb_model_tokenizer_config(hf)->lowercase,
                     zb_model_tokenizer_config(bm)->lowercase);
    assert_int_equal(zb_model_tokenizer_config(hf)->strip_accents,
                     zb_model_tokenizer_config(bm)->strip_accents);
    size_t l1, l2;
    const char *v1 = zb_model_vocab(hf, &l1), *v2 = zb_model_vocab(bm, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(v1, v2, l1);

    uintptr_t lo[8], hi[8];
    int n_maps = mapped_ranges(path, lo, hi, 8);
    assert_true(n_maps >= 1);
    /* the directory was packed at load; the bundle holds the packed table
     * and maps it: the same bytes, views into the file */
    assert_true(zb_model_packed_at_load(hf));
    assert_false(zb_model_packed_at_load(bm));
    const zb_config_t *c = zb_model_config(bm);
    assert_int_equal(zb_model_n_tensors(bm), zb_model_n_packed(c));
    assert_int_equal(zb_model_n_packed(c), 5 + 12 * c->layers);
    int n_packed = 0;
    for (int i = 0; i < zb_model_n_tensors(bm); i++) {
        zb_model_tensor_t a, b;
        assert_int_equal(zb_model_packed_at(hf, i, &a), 0);
        assert_int_equal(zb_model_tensor_at(bm, i, &b), 0);
        assert_string_equal(a.name, b.name);
        assert_int_equal(a.n_elems, b.n_elems);
        assert_int_equal(a.packed, b.packed);
        assert_int_equal(a.n_stored, b.n_stored);
        n_packed += b.packed;
        if (memcmp(a.data, b.data, a.n_stored * sizeof(float)) != 0)
            fail_msg("%s: tensor %s differs after the round trip", fixture, a.name);
        if ((uintptr_t)b.data % 64 != 0) fail_msg("%s: %s not 64-byte aligned", fixture, b.name);
        uintptr_t p = (uintptr_t)b.data, e = p + b.n_stored * sizeof(float);
        int inside = 0;
        for (int k = 0; k < n_maps; k++) inside |= p >= lo[k] && e <= hi[k];
        if (!inside) fail_msg("%s: %s is not a view into the bundle mapping", fixture, b.name);
    }
    assert_int_equal(n_packed, 4 * c->layers);
    /* unpacked independently, the bundle's operands are the directory's plain
     * matrices (Q, K, V stacked in that order) */
    const int hd = c->hidden, in = c->intermediate;
    float *u = malloc((size_t)3 * (size_t)hd * (size_t)(hd > in ? hd : in) * sizeof(float));
    for (int l = 0; l < c->layers; l++) {
        const zb_model_layer_t *P = &zb_model_weights(hf)->layer[l];
        const zb_model_layer_t *B = &zb_model_weights(bm)->layer[l];
        assert_null(B->q_w);
        assert_null(B->ffn_out_w);
        assert_int_equal(B->qkv.n, 3 * hd);
        assert_int_equal(B->qkv.k, hd);
        zb_gemm_unpack(B->qkv.p, 3 * hd, hd, u, (size_t)hd);
        assert_memory_equal(u, P->q_w, (size_t)hd * (size_t)hd * sizeof(float));
        assert_memory_equal(u + (size_t)hd * (size_t)hd, P->k_w, (size_t)hd * (size_t)hd * 4);
        assert_memory_equal(u + 2 * (size_t)hd * (size_t)hd, P->v_w, (size_t)hd * (size_t)hd * 4);
        assert_memory_equal(B->k_b, P->k_b, (size_t)hd * sizeof(float));
        assert_ptr_equal(B->v_b, B->qkv_b + 2 * hd);
        zb_gemm_unpack(B->ffn_out.p, hd, in, u, (size_t)in);
        assert_memory_equal(u, P->ffn_out_w, (size_t)hd * (size_t)in * sizeof(float));
        zb_gemm_unpack(B->ffn_in.p, in, hd, u, (size_t)hd);
        assert_memory_equal(u, P->ffn_in_w, (size_t)hd * (size_t)in * sizeof(float));
        zb_gemm_unpack(B->attn_out.p, hd, hd, u, (size_t)hd);
        assert_memory_equal(u, P->attn_out_w, (size_t)hd * (size_t)hd * sizeof(float));
    }
    free(u);

    /* identity = first 16 hex digits of the sha256 of weights.bin, computed here */
    size_t wlen;
    unsigned char *w = zip_entry(path, "weights.bin", &wlen);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, w, wlen);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    free(w);
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(path, &b, &d), 0);
    assert_string_equal(zb_bundle_sha256(b), hex);
    hex[16] = '\0';
    assert_string_equal(zb_model_identity(bm), hex);
    assert_string_equal(zb_bundle_source(b), "round trip test");
    size_t map_len;
    const unsigned char *map = zb_bundle_map(b, &map_len);
    assert_int_equal(zb_bundle_weights_offset(b) % 64, 0);
    assert_int_equal(zb_bundle_weights_size(b), wlen);
    for (size_t i = 0; i < zb_bundle_n_tensors(b); i++) {
        const zb_bundle_tensor_t *t = zb_bundle_tensor_at(b, i);
        assert_ptr_equal(t->data, map + zb_bundle_weights_offset(b) + t->offset);
        assert_true((const unsigned char *)t->data + t->nbytes <= map + map_len);
    }
    assert_int_equal(zb_bundle_verify(b, &d), 0);
    zb_bundle_close(&b);
    zb_model_close(&bm);
    zb_model_close(&hf);
}

static void test_roundtrip_seed1(void **state) {
    (void)state;
    roundtrip("tiny-seed1", "seed1.zbm");
}

static void test_roundtrip_seed2(void **state) {
    (void)state;
    roundtrip("tiny-seed2-bert-gammabeta-f16", "seed2.zbm");
}

/* Runs bin/zbert-model (ZB_BIN) with up to 8 arguments; returns its exit
 * status, its stderr in err. */
static int run_model(char *err, size_t cap, const char *a0, const char *a1, const char *a2,
                     const char *a3, const char *a4) {
    const char *bin = getenv("ZB_BIN");
    char prog[S_PATH_MAX], errf[256];
    snprintf(prog, sizeof prog, "%s/zbert-model", bin && *bin ? bin : "bin");
    snprintf(errf, sizeof errf, "%s/stderr.txt", s_dir);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen(errf, "w", stderr) == NULL || freopen("/dev/null", "w", stdout) == NULL)
            _exit(126);
        execl(prog, prog, a0, a1, a2, a3, a4, (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    size_t n = 0;
    char *e = fx_read_file(errf, &n);
    snprintf(err, cap, "%s", e ? e : "");
    free(e);
    if (!WIFEXITED(st)) return -1;
    if (WEXITSTATUS(st) == 127) fail_msg("cannot run %s (set ZB_BIN)", prog);
    return WEXITSTATUS(st);
}

/* The program writes the same bundle as the library; verify accepts it. */
static void test_program(void **state) {
    (void)state;
    char err[1024], out[256];
    snprintf(out, sizeof out, "%s/prog-seed2.zbm", s_dir);
    int st = run_model(err, sizeof err, "convert", fx_path("tiny-seed2-bert-gammabeta-f16"), "-o",
                       out, NULL);
    if (st != 0) fail_msg("convert: %s", err);
    assert_int_equal(run_model(err, sizeof err, "verify", out, NULL, NULL, NULL), 0);
    assert_int_equal(run_model(err, sizeof err, "inspect", out, NULL, NULL, NULL), 0);
    zb_diag_t d;
    zb_bundle_t *a = NULL, *b = NULL;
    assert_int_equal(zb_bundle_open(out, &a, &d), 0);
    if (zb_bundle_open(tmp_path("seed2.zbm"), &b, &d) == 0) /* when the round trip ran first */
        assert_string_equal(zb_bundle_sha256(a), zb_bundle_sha256(b));
    zb_bundle_close(&a);
    zb_bundle_close(&b);
    /* failures: one line on stderr, non-zero exit */
    assert_int_equal(run_model(err, sizeof err, "verify", "/nonexistent.zbm", NULL, NULL, NULL), 1);
    assert_non_null(strstr(err, "zbert-model: /nonexistent.zbm: cannot open"));
    assert_int_equal(strchr(err, '\n'), err + strlen(err) - 1);
    assert_int_equal(run_model(err, sizeof err, "convert", "/nonexistent", NULL, NULL, NULL), 2);
    assert_int_equal(run_model(err, sizeof err, "frobnicate", NULL, NULL, NULL, NULL), 2);
    assert_int_equal(run_model(err, sizeof err, "random", "--layers", "1", NULL, NULL), 2);
}

/* --- hostile archives ------------------------------------------------------ */

static void test_hostile_zip(void **state) {
    (void)state;
    const unsigned char *img = s_tiny_img;
    size_t len = s_tiny_len;
    size_t eocd = eocd_of(img, len);
    uint32_t cd_off = rd32(img + eocd + 16);
    unsigned char *p = malloc(len + 64);
    zb_diag_t d;

    struct {
        const char *what;
        size_t at; /* byte to patch */
        int width; /* 1, 2 or 4 */
        uint32_t value;
        int xor_; /* value is xored in rather than stored */
        int rc;
        const char *needle;
    } cases[] = {
        {"local signature", 0, 1, 0xff, 1, ZB_EFORMAT, "no local file header at 0"},
        {"local name", 30, 1, 'x', 0, ZB_EFORMAT, "names another file than weights.bin"},
        {"local size", 22, 4, 1, 1, ZB_EFORMAT, "disagrees with the central directory"},
        {"local crc", 14, 4, 1, 1, ZB_EFORMAT, "disagrees with the central directory"},
        {"local method", 8, 2, 8, 0, ZB_EFORMAT, "disagrees with the central directory"},
        {"local extra length", 28, 2, 0xffff, 0, ZB_EFORMAT, "runs into the central directory"},
        {"local data descriptor flag", 6, 2, 8, 0, ZB_EUNSUPPORTED, "data descriptor"},
        {"central method deflate", cd_off + 10, 2, 8, 0, ZB_EUNSUPPORTED, "is compressed"},
        {"central encrypted", cd_off + 8, 2, 1, 0, ZB_EUNSUPPORTED, "encrypted"},
        {"central sizes differ", cd_off + 20, 4, 1, 1, ZB_EFORMAT, "stored weights.bin has size"},
        {"central local offset", cd_off + 42, 4, 0x7fffffff, 0, ZB_EFORMAT,
         "runs into the central directory"},
        {"central signature", cd_off, 1, 0xff, 1, ZB_EFORMAT, "central directory entry 0"},
        {"central name length", cd_off + 28, 2, 0xffff, 0, ZB_EFORMAT, "runs past the directory"},
        {"end record cd offset", eocd + 16, 4, 0x7fffffff, 0, ZB_EFORMAT,
         "central directory [2147483647"},
        {"end record zip64 count", eocd + 10, 2, 0xffff, 0, ZB_EUNSUPPORTED, "zip64"},
        {"end record disk", eocd + 4, 2, 1, 0, ZB_EUNSUPPORTED, "multi-disk"},
        {"end record no entries", eocd + 8, 4, 0, 0, ZB_ELIMIT, "0 zip entries"},
        {"end record comment length", eocd + 20, 2, 5, 0, ZB_EFORMAT, "no zip end-of-central"},
        {"end record signature", eocd, 1, 0xff, 1, ZB_EFORMAT, "no zip end-of-central"},
        {"weights data byte", 64, 1, 0xff, 1, 0, ""}, /* structure fine; verify catches it */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(p, img, len);
        unsigned char *q = p + cases[i].at;
        uint32_t v = cases[i].value;
        if (cases[i].width == 1) q[0] = (unsigned char)(cases[i].xor_ ? q[0] ^ v : v);
        if (cases[i].width == 2) wr16(q, (uint16_t)(cases[i].xor_ ? (q[0] | q[1] << 8) ^ v : v));
        if (cases[i].width == 4) wr32(q, cases[i].xor_ ? rd32(q) ^ v : v);
        int rc = open_bytes(p, len, &d);
        if (rc != cases[i].rc || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("%s: rc %d (want %d), \"%s\" (want \"%s\")", cases[i].what, rc, cases[i].rc,
                     d.msg, cases[i].needle);
    }
    /* junk after the end record, and an empty file */
    memcpy(p, img, len);
    memset(p + len, 'J', 64);
    assert_int_equal(open_bytes(p, len + 64, &d), ZB_EFORMAT);
    assert_non_null(strstr(d.msg, "no zip end-of-central"));
    assert_int_equal(open_bytes(p, 0, &d), ZB_EFORMAT);
    /* a directory is not a bundle */
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(s_dir, &b, &d), ZB_EIO);
    assert_non_null(strstr(d.msg, "not a regular file"));
    assert_int_equal(zb_bundle_open(tmp_path("missing.zbm"), &b, &d), ZB_ENOTFOUND);
    free(p);
}

/* Archives the libzip way with a deviation: compressed, unpadded, ... */
static void test_hostile_layout(void **state) {
    (void)state;
    zb_diag_t d;
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(s_tiny, &b, &d), 0);
    size_t wlen = zb_bundle_weights_size(b);
    unsigned char *w = malloc(wlen);
    memcpy(w, (const unsigned char *)zb_bundle_map(b, NULL) + zb_bundle_weights_offset(b), wlen);
    size_t mlen;
    char *manifest = (char *)zip_entry(s_tiny, "zbert.json", &mlen);
    size_t vlen;
    const char *vocab = zb_bundle_vocab(b, &vlen);
    struct {
        const char *what;
        int flags, rc;
        const char *needle;
    } cases[] = {
        {"as written", 0, 0, ""},
        {"compressed weights", Z_COMPRESS, ZB_EUNSUPPORTED, "weights.bin is compressed"},
        {"misaligned weights", Z_NO_PAD, ZB_EFORMAT, "data starts at byte 41, not 64-byte"},
        {"no weights", Z_NO_WEIGHTS, ZB_ENOTFOUND, "no weights.bin entry"},
        {"too many entries", Z_MANY, ZB_ELIMIT, "zip entries (allowed 1..64)"},
        {"weights last (still aligned by luck or not)", Z_WEIGHTS_LAST, -100, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = tmp_path("layout.zbm");
        make_zip(p, manifest, w, wlen, vocab, cases[i].flags);
        memset(&d, 0, sizeof d);
        zb_bundle_t *x = NULL;
        int rc = zb_bundle_open(p, &x, &d);
        zb_bundle_close(&x);
        if (cases[i].rc == -100) {
            /* weights after other entries: accepted only when aligned */
            if (rc != 0 && strstr(d.msg, "64-byte aligned") == NULL)
                fail_msg("%s: rc %d \"%s\"", cases[i].what, rc, d.msg);
            continue;
        }
        if (rc != cases[i].rc || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("%s: rc %d (want %d), \"%s\" (want \"%s\")", cases[i].what, rc, cases[i].rc,
                     d.msg, cases[i].needle);
    }
    free(manifest);
    free(w);
    zb_bundle_close(&b);
}

/* Replaces the first occurrence of from by to in s (malloc'd result). */
static char *replace(const char *s, const char *from, const char *to) {
    const char *at = strstr(s, from);
    if (at == NULL) fail_msg("pattern %s not in the manifest", from);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *r = malloc(n + 1);
    size_t k = (size_t)(at - s);
    memcpy(r, s, k);
    memcpy(r + k, to, strlen(to));
    strcpy(r + k + strlen(to), at + strlen(from));
    return r;
}

static void test_hostile_manifest(void **state) {
    (void)state;
    zb_diag_t d;
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(s_tiny, &b, &d), 0);
    size_t wlen = zb_bundle_weights_size(b);
    unsigned char *w = malloc(wlen);
    memcpy(w, (const unsigned char *)zb_bundle_map(b, NULL) + zb_bundle_weights_offset(b), wlen);
    size_t mlen;
    char *raw = (char *)zip_entry(s_tiny, "zbert.json", &mlen);
    cJSON *root = cJSON_Parse(raw);
    assert_non_null(root);
    char *manifest = cJSON_PrintUnformatted(root); /* patterns below match this spelling */
    cJSON_Delete(root);
    free(raw);
    char wsize[64], wsize_bad[64];
    snprintf(wsize, sizeof wsize, "\"nbytes\":%zu,\"sha256\"", wlen);
    snprintf(wsize_bad, sizeof wsize_bad, "\"nbytes\":%zu,\"sha256\"", wlen + 1);
    const char *vocab17 = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\no\np\nq\n";

    struct {
        const char *what, *from, *to, *vocab;
        int stage; /* 0: zb_bundle_open fails; 1: it passes and zb_model_open fails */
        int trail; /* append garbage after the JSON object */
        int rc;
        const char *needle;
    } cases[] = {
        {"unchanged", "\"format\"", "\"format\"", NULL, 1, 0, 0, ""},
        {"not JSON", "{", "[", NULL, 0, 0, ZB_EFORMAT, "zbert.json: not a JSON object"},
        {"trailing garbage", "\"format\"", "\"format\"", NULL, 0, 1, ZB_EFORMAT,
         "zbert.json: not a JSON object"},
        {"format", "\"format\":\"zbert-bundle\"", "\"format\":\"zip\"", NULL, 0, 0, ZB_EFORMAT,
         "format is not \"zbert-bundle\""},
        {"version", "\"format\":\"zbert-bundle\",\"version\":2",
         "\"format\":\"zbert-bundle\",\"version\":3", NULL, 0, 0, ZB_EUNSUPPORTED,
         "format version 3; this build reads versions 1 to 2"},
        {"version type", "\"format\":\"zbert-bundle\",\"version\":2",
         "\"format\":\"zbert-bundle\",\"version\":\"2\"", NULL, 0, 0, ZB_EFORMAT,
         "version is not an integer"},
        {"version 1 with packed tensors", "\"format\":\"zbert-bundle\",\"version\":2",
         "\"format\":\"zbert-bundle\",\"version\":1", NULL, 0, 0, ZB_EFORMAT,
         "layout \"panel\" needs format version 2"},
        /* the packed layout must be the one this build computes on */
        {"layout missing", "\"layout\":{", "\"layouts\":{", NULL, 0, 0, ZB_EFORMAT,
         "layout needs to be an object with a name"},
        {"layout name", "\"name\":\"panel\"", "\"name\":\"tiles\"", NULL, 0, 0, ZB_EUNSUPPORTED,
         "layout \"tiles\" is not one this build reads (\"panel\")"},
        {"layout version", "\"name\":\"panel\",\"version\":1", "\"name\":\"panel\",\"version\":2",
         NULL, 0, 0, ZB_EUNSUPPORTED,
         "layout panel version 2 with 16-row panels; this build reads version 1"},
        {"layout version type", "\"name\":\"panel\",\"version\":1",
         "\"name\":\"panel\",\"version\":true", NULL, 0, 0, ZB_EFORMAT,
         "layout needs integer version and panel_rows"},
        {"panel rows", "\"panel_rows\":16", "\"panel_rows\":8", NULL, 0, 0, ZB_EUNSUPPORTED,
         "with 8-row panels; this build reads version 1 with 16-row panels"},
        {"packed tensor of the wrong size", "\"shape\":[24,8]", "\"shape\":[16,8]", NULL, 0, 0,
         ZB_EFORMAT, "qkv.weight: nbytes 1024 but its packed shape needs 512"},
        {"packed tensor with 3 dims", "\"shape\":[24,8]", "\"shape\":[24,8,1]", NULL, 0, 0,
         ZB_EFORMAT, "a panel tensor has 2 dimensions, not 3"},
        {"packed tensor declared plain", "qkv.weight\",\"dtype\":\"F32\",\"layout\":\"panel\"",
         "qkv.weight\",\"dtype\":\"F32\",\"layout\":\"plain\"", NULL, 0, 0, ZB_EFORMAT,
         "qkv.weight: nbytes 1024 but its shape needs 768"},
        {"vector declared packed", "qkv.bias\",\"dtype\":\"F32\",\"layout\":\"plain\"",
         "qkv.bias\",\"dtype\":\"F32\",\"layout\":\"panel\"", NULL, 0, 0, ZB_EFORMAT,
         "qkv.bias: a panel tensor has 2 dimensions, not 1"},
        {"unknown tensor layout", "qkv.bias\",\"dtype\":\"F32\",\"layout\":\"plain\"",
         "qkv.bias\",\"dtype\":\"F32\",\"layout\":\"csr\"", NULL, 0, 0, ZB_EUNSUPPORTED,
         "layout \"csr\" is not \"plain\", \"panel\" or \"panel-q8\""},
        {"tensor layout type", "qkv.bias\",\"dtype\":\"F32\",\"layout\":\"plain\"",
         "qkv.bias\",\"dtype\":\"F32\",\"layout\":7", NULL, 0, 0, ZB_EFORMAT,
         "qkv.bias: layout is not a string"},
        /* int8 tensors: only as panel-q8 matrices (declared) and I32 vectors */
        {"panel-q8 undeclared", "qkv.weight\",\"dtype\":\"F32\",\"layout\":\"panel\"",
         "qkv.weight\",\"dtype\":\"I8\",\"layout\":\"panel-q8\"", NULL, 0, 0, ZB_EFORMAT,
         "layout \"panel-q8\" needs the manifest's layout_q8 object"},
        {"I8 vector", "qkv.bias\",\"dtype\":\"F32\"", "qkv.bias\",\"dtype\":\"I8\"", NULL, 0, 0,
         ZB_EFORMAT, "qkv.bias: dtype I8 in the plain layout"},
        {"I32 panel", "qkv.weight\",\"dtype\":\"F32\"", "qkv.weight\",\"dtype\":\"I32\"", NULL, 0,
         0, ZB_EFORMAT, "qkv.weight: dtype I32 in the panel layout"},
        {"layout_q8 k_group", "\"format\":\"zbert-bundle\"",
         "\"layout_q8\":{\"name\":\"panel-q8\",\"version\":1,\"panel_rows\":16,\"k_group\":8},"
         "\"format\":\"zbert-bundle\"",
         NULL, 0, 0, ZB_EUNSUPPORTED,
         "layout_q8 panel-q8 version 1 with 16-row panels; this build reads"},
        {"layout_q8 type", "\"format\":\"zbert-bundle\"",
         "\"layout_q8\":3,\"format\":\"zbert-bundle\"", NULL, 0, 0, ZB_EFORMAT,
         "layout_q8 needs to be an object with a name"},
        /* structurally fine, but the table is not the packed one the config describes */
        {"missing packed tensor", "\"name\":\"encoder.layer.0.output.dense.weight\"",
         "\"name\":\"encoder.layer.0.output.dense.weights\"", NULL, 1, 0, ZB_ENOTFOUND,
         "missing tensor encoder.layer.0.output.dense.weight"},
        {"packed stack of another width", "\"shape\":[24,8]", "\"shape\":[32,8]", NULL, 1, 0,
         ZB_EFORMAT, "qkv.weight: expected shape [24,8] from the config, found [32,8]"},
        {"config missing", "\"config\":", "\"configs\":", NULL, 0, 0, ZB_EFORMAT,
         "config is not an object"},
        {"heads", "\"num_attention_heads\":2", "\"num_attention_heads\":3", NULL, 0, 0, ZB_EFORMAT,
         "not a multiple of num_attention_heads 3"},
        {"hidden_act", "\"hidden_act\":\"gelu\"", "\"hidden_act\":\"relu\"", NULL, 0, 0,
         ZB_EUNSUPPORTED, "hidden_act must be \"gelu\""},
        {"layers limit", "\"num_hidden_layers\":1", "\"num_hidden_layers\":100000", NULL, 0, 0,
         ZB_ELIMIT, "num_hidden_layers\" is 100000, outside [1, 128]"},
        {"tokenizer", "\"lowercase\":false", "\"lowercase\":0", NULL, 0, 0, ZB_EFORMAT,
         "tokenizer needs boolean lowercase"},
        {"weights entry", "\"entry\":\"weights.bin\"", "\"entry\":\"w.bin\"", NULL, 0, 0,
         ZB_EFORMAT, "weights needs entry"},
        {"weights nbytes", wsize, wsize_bad, NULL, 0, 0, ZB_EFORMAT, "but the weights.bin entry"},
        {"sha256 length", "\"sha256\":\"", "\"sha256\":\"0", NULL, 0, 0, ZB_EFORMAT,
         "sha256 is not 64 lower-case hex digits"},
        {"source type", "\"source\":\"test tiny model\"", "\"source\":7", NULL, 0, 0, ZB_EFORMAT,
         "source is not a string"},
        {"tensors missing", "\"tensors\":", "\"tensorz\":", NULL, 0, 0, ZB_EFORMAT,
         "tensors is not an array"},
        {"dtype", "\"dtype\":\"F32\"", "\"dtype\":\"F16\"", NULL, 0, 0, ZB_EUNSUPPORTED,
         "dtype must be \"F32\""},
        {"offset misaligned", "\"offset\":0,", "\"offset\":4,", NULL, 0, 0, ZB_EFORMAT,
         "offset 4 is not 64-byte aligned"},
        {"offset negative", "\"offset\":0,", "\"offset\":-64,", NULL, 0, 0, ZB_EFORMAT,
         "offset and nbytes must be non-negative integers"},
        {"offset huge", "\"offset\":0,", "\"offset\":1e300,", NULL, 0, 0, ZB_EFORMAT,
         "offset and nbytes must be non-negative integers"},
        {"offset past end", "\"offset\":0,", "\"offset\":1048576,", NULL, 0, 0, ZB_EFORMAT,
         "runs past the"},
        {"overlap", "\"offset\":0,", "\"offset\":64,", NULL, 0, 0, ZB_EFORMAT, "overlap"},
        {"shape/nbytes", "\"shape\":[16,8]", "\"shape\":[16,4]", NULL, 0, 0, ZB_EFORMAT,
         "nbytes 512 but its shape needs 256"},
        {"shape overflow", "\"shape\":[16,8]", "\"shape\":[4294967296,4294967296,4294967296]", NULL,
         0, 0, ZB_EFORMAT, "shape product overflows"},
        {"shape negative", "\"shape\":[16,8]", "\"shape\":[-16,-8]", NULL, 0, 0, ZB_EFORMAT,
         "shape[0] is not a non-negative integer"},
        {"too many dims", "\"shape\":[16,8]", "\"shape\":[1,1,1,1,1,1,1,1,16,8]", NULL, 0, 0,
         ZB_ELIMIT, "10 dimensions, more than 8"},
        {"duplicate name", "\"name\":\"embeddings.position_embeddings.weight\"",
         "\"name\":\"embeddings.word_embeddings.weight\"", NULL, 0, 0, ZB_EFORMAT,
         "tensor embeddings.word_embeddings.weight appears twice"},
        {"empty name", "\"name\":\"embeddings.position_embeddings.weight\"", "\"name\":\"\"", NULL,
         0, 0, ZB_ELIMIT, "name has 0 bytes"},
        /* structurally fine, but not the model the config describes */
        {"missing tensor", "\"name\":\"embeddings.LayerNorm.bias\"",
         "\"name\":\"embeddings.LayerNorm.beta\"", NULL, 1, 0, ZB_ENOTFOUND,
         "missing tensor embeddings.LayerNorm.bias"},
        {"wrong shape", "\"intermediate_size\":16", "\"intermediate_size\":32", NULL, 1, 0,
         ZB_EFORMAT, "tensor encoder.layer.0.intermediate.dense.weight: expected shape [32,8]"},
        {"vocab too long", "\"format\"", "\"format\"", vocab17, 1, 0, ZB_EFORMAT,
         "more than vocab_size = 16 entries"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *m = replace(manifest, cases[i].from, cases[i].to);
        if (cases[i].trail) {
            char *g = malloc(strlen(m) + 8);
            sprintf(g, "%s x", m);
            free(m);
            m = g;
        }
        const char *p = tmp_path("manifest.zbm");
        make_zip(p, m, w, wlen, cases[i].vocab ? cases[i].vocab : zb_bundle_vocab(b, NULL), 0);
        free(m);
        memset(&d, 0, sizeof d);
        zb_bundle_t *x = NULL;
        int rc = zb_bundle_open(p, &x, &d);
        zb_bundle_close(&x);
        if (cases[i].stage == 1) {
            if (rc != 0) fail_msg("%s: bundle open failed: %s", cases[i].what, d.msg);
            zb_model_t *mm = NULL;
            rc = zb_model_open(p, &mm, &d);
            zb_model_close(&mm);
        }
        if (rc != cases[i].rc || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("%s: rc %d (want %d), \"%s\" (want \"%s\")", cases[i].what, rc, cases[i].rc,
                     d.msg, cases[i].needle);
    }
    cJSON_free(manifest);
    free(w);
    zb_bundle_close(&b);
}

/* Rewrites src's manifest through edit() into a bundle at dst with the same
 * weights and vocabulary. */
static void rewrite_manifest(const char *src, const char *dst, void (*edit)(cJSON *root)) {
    zb_diag_t d;
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(src, &b, &d), 0);
    size_t wlen = zb_bundle_weights_size(b), mlen;
    unsigned char *w = malloc(wlen);
    memcpy(w, (const unsigned char *)zb_bundle_map(b, NULL) + zb_bundle_weights_offset(b), wlen);
    char *raw = (char *)zip_entry(src, "zbert.json", &mlen);
    cJSON *root = cJSON_Parse(raw);
    assert_non_null(root);
    edit(root);
    char *m = cJSON_PrintUnformatted(root);
    make_zip(dst, m, w, wlen, zb_bundle_vocab(b, NULL), 0);
    cJSON_free(m);
    cJSON_Delete(root);
    free(raw);
    free(w);
    zb_bundle_close(&b);
}

static cJSON *tensor_named(cJSON *root, const char *name) {
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "tensors")) {
        if (strcmp(cJSON_GetObjectItem(e, "name")->valuestring, name) == 0) return e;
    }
    fail_msg("no tensor %s in the manifest", name);
    return NULL;
}

/* A version 1 manifest: no layout anywhere. */
static void edit_to_v1(cJSON *root) {
    cJSON_ReplaceItemInObject(root, "version", cJSON_CreateNumber(1));
    cJSON_DeleteItemFromObject(root, "layout");
    cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, "tensors")) {
        cJSON_DeleteItemFromObject(e, "layout");
    }
}

/* The attention output matrix of a packed bundle declared plain (with its
 * plain size): the archive is sound, the table is not the packed one. */
static void edit_attn_out_plain(cJSON *root) {
    cJSON *e = tensor_named(root, "encoder.layer.0.attention.output.dense.weight");
    cJSON_ReplaceItemInObject(e, "layout", cJSON_CreateString("plain"));
    cJSON_ReplaceItemInObject(e, "nbytes", cJSON_CreateNumber(8 * 8 * 4));
}

/* Packed and plain tables, old bundles: what opens, packed where, and the
 * operands the forward pass gets are the same either way. */
static void test_layouts(void **state) {
    (void)state;
    zb_diag_t d;
    zb_model_t *mp = NULL, *m2 = NULL, *m1 = NULL;
    zb_bundle_t *b = NULL;
    const char *v1 = tmp_path("tiny-v1.zbm");
    char v1p[256];
    snprintf(v1p, sizeof v1p, "%s", v1);
    rewrite_manifest(s_tiny_plain, v1p, edit_to_v1);
    assert_int_equal(zb_bundle_open(v1p, &b, &d), 0);
    assert_int_equal(zb_bundle_version(b), 1);
    for (size_t i = 0; i < zb_bundle_n_tensors(b); i++)
        assert_false(zb_bundle_tensor_at(b, i)->packed);
    zb_bundle_close(&b);

    assert_int_equal(zb_model_open(s_tiny, &mp, &d), 0);
    assert_int_equal(zb_model_open(s_tiny_plain, &m2, &d), 0);
    assert_int_equal(zb_model_open(v1p, &m1, &d), 0);
    assert_false(zb_model_packed_at_load(mp));
    assert_true(zb_model_packed_at_load(m2));
    assert_true(zb_model_packed_at_load(m1));
    assert_int_equal(zb_model_n_tensors(mp), 5 + 12);
    assert_int_equal(zb_model_n_tensors(m1), 5 + 16);
    /* the plain bundles' operands are their own matrices packed; both equal */
    const zb_model_layer_t *a = &zb_model_weights(m2)->layer[0];
    const zb_model_layer_t *c = &zb_model_weights(m1)->layer[0];
    float u[24 * 8];
    zb_gemm_unpack(a->qkv.p, 24, 8, u, 8);
    assert_memory_equal(u, a->q_w, 64 * sizeof(float));
    assert_memory_equal(u + 64, a->k_w, 64 * sizeof(float));
    assert_memory_equal(u + 128, a->v_w, 64 * sizeof(float));
    assert_memory_equal(a->qkv_b + 8, a->k_b, 8 * sizeof(float));
    assert_memory_equal(a->qkv.p, c->qkv.p, zb_gemm_packed_floats(24, 8) * sizeof(float));
    assert_memory_equal(a->ffn_out.p, c->ffn_out.p, zb_gemm_packed_floats(8, 16) * sizeof(float));
    assert_int_equal((uintptr_t)a->ffn_in.p % 64, 0);
    zb_model_close(&mp);
    zb_model_close(&m2);
    zb_model_close(&m1);

    /* a packed table with one matrix plain is refused when binding */
    const char *bad = tmp_path("attn-out-plain.zbm");
    char badp[256];
    snprintf(badp, sizeof badp, "%s", bad);
    rewrite_manifest(s_tiny, badp, edit_attn_out_plain);
    assert_int_equal(zb_bundle_open(badp, &b, &d), 0);
    zb_bundle_close(&b);
    assert_int_equal(zb_model_open(badp, &mp, &d), ZB_EFORMAT);
    assert_non_null(strstr(d.msg, "attention.output.dense.weight: stored in the plain layout, "
                                  "expected panel"));

    /* the programs: verify warns about the old layout, inspect names the layouts */
    char err[1024];
    assert_int_equal(run_model(err, sizeof err, "verify", v1p, NULL, NULL, NULL), 0);
    assert_non_null(strstr(err, "warning: "));
    assert_non_null(strstr(err, "plain layout of format version 1"));
    assert_int_equal(run_model(err, sizeof err, "verify", s_tiny, NULL, NULL, NULL), 0);
    assert_null(strstr(err, "warning"));
}

/* Every prefix of a valid bundle is refused with a message. */
static void test_truncated(void **state) {
    (void)state;
    zb_diag_t d;
    for (size_t n = 0; n < s_tiny_len; n++) {
        int rc = open_bytes(s_tiny_img, n, &d);
        if (rc == 0) fail_msg("prefix of %zu bytes opened", n);
    }
    assert_int_equal(open_bytes(s_tiny_img, s_tiny_len, &d), 0);
}

/* Every single-byte corruption: refused with a message, or (for bytes the
 * structure does not cover, like weight data) opened and caught by verify. */
static void test_byte_flips(void **state) {
    (void)state;
    unsigned char *p = malloc(s_tiny_len);
    zb_diag_t d;
    size_t opened = 0, refused = 0, caught = 0;
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(s_tiny, &b, &d), 0);
    size_t w0 = zb_bundle_weights_offset(b), w1 = w0 + zb_bundle_weights_size(b);
    zb_bundle_close(&b);
    for (size_t i = 0; i < s_tiny_len; i++) {
        memcpy(p, s_tiny_img, s_tiny_len);
        p[i] ^= 0xa5;
        const char *path = tmp_path("flip.zbm");
        write_file(path, p, s_tiny_len);
        memset(&d, 0, sizeof d);
        int rc = zb_bundle_open(path, &b, &d);
        if (rc != 0) {
            if (d.msg[0] == '\0') fail_msg("byte %zu: code %d without a message", i, rc);
            refused++;
            continue;
        }
        opened++;
        rc = zb_bundle_verify(b, &d);
        zb_bundle_close(&b);
        if (i >= w0 && i < w1) {
            if (rc != ZB_ECHECKSUM || strstr(d.msg, "sha256") == NULL)
                fail_msg("byte %zu of the weights: verify rc %d \"%s\"", i, rc, d.msg);
        }
        if (rc != 0) caught++;
    }
    /* the weights are data: all of their flips open, and verify catches all */
    assert_true(opened >= w1 - w0);
    assert_true(caught >= w1 - w0);
    print_message("byte flips: %zu refused at open, %zu opened (%zu caught by verify)\n", refused,
                  opened, caught);
    free(p);
}

static void test_verify_checksum(void **state) {
    (void)state;
    unsigned char *p = malloc(s_tiny_len);
    memcpy(p, s_tiny_img, s_tiny_len);
    p[100] ^= 1; /* inside weights.bin data (starts at 64) */
    const char *path = tmp_path("badsum.zbm");
    write_file(path, p, s_tiny_len);
    free(p);
    zb_diag_t d;
    zb_bundle_t *b = NULL;
    assert_int_equal(zb_bundle_open(path, &b, &d), 0); /* structure only: fast start */
    assert_int_equal(zb_bundle_verify(b, &d), ZB_ECHECKSUM);
    assert_non_null(strstr(d.msg, "weights.bin has sha256"));
    zb_bundle_close(&b);
    char err[1024];
    assert_int_equal(run_model(err, sizeof err, "verify", path, NULL, NULL, NULL), 1);
    assert_non_null(strstr(err, "the manifest says"));
    assert_int_equal(run_model(err, sizeof err, "verify", s_tiny, NULL, NULL, NULL), 0);
}

/* --- shared pages ----------------------------------------------------------- */

typedef struct {
    long rss, pss, shared_clean, shared_dirty, private_clean, private_dirty; /* kB */
} s_mem_t;

/* Sums the smaps fields of pid's mappings of the file at real (a realpath). */
static s_mem_t smaps_of(pid_t pid, const char *real) {
    char p[64], line[S_PATH_MAX + 128];
    snprintf(p, sizeof p, "/proc/%d/smaps", (int)pid);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    s_mem_t m = {0, 0, 0, 0, 0, 0};
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char name[S_PATH_MAX] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, name) >= 2 &&
            strchr(line, ':') != NULL && strchr(line, '-') < strchr(line, ' ')) {
            in = strcmp(name, real) == 0;
            continue;
        }
        long v;
        if (!in) continue;
        if (sscanf(line, "Rss: %ld kB", &v) == 1) m.rss += v;
        if (sscanf(line, "Pss: %ld kB", &v) == 1) m.pss += v;
        if (sscanf(line, "Shared_Clean: %ld kB", &v) == 1) m.shared_clean += v;
        if (sscanf(line, "Private_Clean: %ld kB", &v) == 1) m.private_clean += v;
        if (sscanf(line, "Shared_Dirty: %ld kB", &v) == 1) m.shared_dirty += v;
        if (sscanf(line, "Private_Dirty: %ld kB", &v) == 1) m.private_dirty += v;
    }
    fclose(f);
    return m;
}

static s_mem_t rollup_of(pid_t pid) {
    char p[64], line[256];
    snprintf(p, sizeof p, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    s_mem_t m = {0, 0, 0, 0, 0, 0};
    long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "Rss: %ld kB", &v) == 1) m.rss = v;
        if (sscanf(line, "Pss: %ld kB", &v) == 1) m.pss = v;
        if (sscanf(line, "Shared_Clean: %ld kB", &v) == 1) m.shared_clean = v;
        if (sscanf(line, "Private_Clean: %ld kB", &v) == 1) m.private_clean = v;
        if (sscanf(line, "Shared_Dirty: %ld kB", &v) == 1) m.shared_dirty = v;
        if (sscanf(line, "Private_Dirty: %ld kB", &v) == 1) m.private_dirty = v;
    }
    fclose(f);
    return m;
}

static void test_shared_pages(void **state) {
    (void)state;
    char err[1024], dir[256], zbm[256], real[S_PATH_MAX];
    snprintf(dir, sizeof dir, "%s/random-40mb", s_dir);
    snprintf(zbm, sizeof zbm, "%s/random-40mb.zbm", s_dir);
    /* 28996 x 256 word embeddings (29.7 MB) + 4 layers (12.6 MB) */
    const char *bin = getenv("ZB_BIN");
    char prog[S_PATH_MAX];
    snprintf(prog, sizeof prog, "%s/zbert-model", bin && *bin ? bin : "bin");
    pid_t g = fork();
    assert_true(g >= 0);
    if (g == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) _exit(126);
        execl(prog, prog, "random", "--layers", "4", "--hidden", "256", "--heads", "4",
              "--intermediate", "1024", "--vocab", fx_path("vocab-bert-base-cased.txt"), "--seed",
              "11", "-o", dir, (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(g, &st, 0), g);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (run_model(err, sizeof err, "convert", dir, "-o", zbm, NULL) != 0)
        fail_msg("convert: %s", err);
    assert_non_null(realpath(zbm, real));
    /* written pages stay dirty in the page cache until writeback; flush them so
     * the children see the state of a bundle installed long ago (Shared_Clean) */
    int fd = open(zbm, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fsync(fd), 0);
    close(fd);

    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0) {
            close(go[1]); /* or the read below never sees end-of-file */
            close(ready[0]);
            zb_model_t *m = NULL;
            zb_diag_t d;
            char c = 'x';
            if (zb_model_open(zbm, &m, &d) == 0) {
                /* touch every page of every tensor */
                volatile unsigned sink = 0;
                for (int i = 0; i < zb_model_n_tensors(m); i++) {
                    zb_model_tensor_t t;
                    zb_model_tensor_at(m, i, &t);
                    const unsigned char *bytes = t.data;
                    for (size_t e = 0; e < t.nbytes; e += 4096) sink += bytes[e];
                    sink += bytes[t.nbytes - 1];
                }
                (void)sink;
                c = 'r';
            }
            if (write(ready[1], &c, 1) != 1) _exit(3);
            if (read(go[0], &c, 1) < 0) _exit(4); /* parent measures, then closes go */
            zb_model_close(&m);
            _exit(0);
        }
    }
    close(ready[1]);
    close(go[0]);
    for (int k = 0; k < 2; k++) {
        char c = 0;
        assert_int_equal(read(ready[0], &c, 1), 1);
        assert_int_equal(c, 'r');
    }
    zb_bundle_t *b = NULL;
    zb_diag_t d;
    assert_int_equal(zb_bundle_open(zbm, &b, &d), 0);
    long weights_kb = (long)(zb_bundle_weights_size(b) / 1024);
    zb_bundle_close(&b);
    s_mem_t m[2], r[2];
    for (int k = 0; k < 2; k++) {
        m[k] = smaps_of(kids[k], real);
        r[k] = rollup_of(kids[k]);
        print_message("child %d: bundle mapping Rss %ld kB, Pss %ld kB, Shared_Clean %ld kB, "
                      "Shared_Dirty %ld kB, Private %ld kB (weights %ld kB); smaps_rollup Rss "
                      "%ld kB, Pss %ld kB, Shared_Clean %ld kB\n",
                      k, m[k].rss, m[k].pss, m[k].shared_clean, m[k].shared_dirty,
                      m[k].private_clean + m[k].private_dirty, weights_kb, r[k].rss, r[k].pss,
                      r[k].shared_clean);
    }
    close(go[1]);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(waitpid(kids[k], &st, 0), kids[k]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    close(ready[0]);
    for (int k = 0; k < 2; k++) {
        /* all weights resident, all of them shared, each process charged half */
        assert_true(m[k].rss >= weights_kb * 95 / 100);
        assert_true(m[k].shared_clean + m[k].shared_dirty >= m[k].rss * 95 / 100);
        assert_true(m[k].private_clean + m[k].private_dirty <= m[k].rss * 5 / 100);
        assert_true(m[k].pss <= m[k].rss * 55 / 100);
        assert_true(m[k].pss >= m[k].rss * 45 / 100);
        /* and across the whole process the weights dominate the shared part;
         * the packed linear layers are mapped too, not copied at load */
        assert_true(r[k].shared_clean + r[k].shared_dirty >= m[k].shared_clean + m[k].shared_dirty);
        assert_true(r[k].private_clean + r[k].private_dirty <= weights_kb / 4);
    }
}

int main(void) {
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_seed1), cmocka_unit_test(test_roundtrip_seed2),
        cmocka_unit_test(test_program),         cmocka_unit_test(test_hostile_zip),
        cmocka_unit_test(test_hostile_layout),  cmocka_unit_test(test_hostile_manifest),
        cmocka_unit_test(test_layouts),         cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_byte_flips),      cmocka_unit_test(test_verify_checksum),
        cmocka_unit_test(test_shared_pages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
