/*
 * test_model.c -- zb_model_open() on the fixture directories: config and
 * tokenizer settings, weights checked against element values read
 * independently from the files (numpy), exact F16 widening, and the errors
 * of broken directories (bad config fields, missing tensors, wrong shapes).
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"
#include "model.h"
#include "safetensors.h"

/* path buffers (Linux PATH_MAX; <limits.h> is shadowed by the project header) */
#define S_PATH_MAX 4096

static uint32_t s_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static char s_seed1[4096], s_seed2[4096];

static int setup(void **state) {
    (void)state;
    snprintf(s_seed1, sizeof s_seed1, "%s", fx_path("tiny-seed1"));
    snprintf(s_seed2, sizeof s_seed2, "%s", fx_path("tiny-seed2-bert-gammabeta-f16"));
    return 0;
}

static void check_tiny_config(const zb_model_t *m) {
    const zb_config_t *c = zb_model_config(m);
    assert_int_equal(c->vocab_size, 28996);
    assert_int_equal(c->hidden, 64);
    assert_int_equal(c->layers, 2);
    assert_int_equal(c->heads, 4);
    assert_int_equal(c->intermediate, 256);
    assert_int_equal(c->max_positions, 512);
    assert_int_equal(c->type_vocab_size, 2);
    assert_true(c->layer_norm_eps == 1e-12f);
    const zb_config_tokenizer_t *t = zb_model_tokenizer_config(m);
    assert_false(t->lowercase);
    assert_false(t->strip_accents);
    size_t vlen = 0;
    const char *v = zb_model_vocab(m, &vlen);
    assert_int_equal(vlen, 213450);
    assert_memory_equal(v, "[PAD]\n", 6);
    assert_int_equal(zb_model_n_tensors(m), 5 + 16 * 2);
}

/* Values read with numpy from model.safetensors: (index, float32 bits). */
static void test_seed1(void **state) {
    (void)state;
    zb_model_t *m = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_model_open(s_seed1, &m, &d);
    assert_int_equal(rc, 0);
    assert_non_null(m);
    check_tiny_config(m);
    assert_string_equal(zb_model_identity(m), "hf:tiny-seed1");
    const zb_model_weights_t *w = zb_model_weights(m);
    assert_int_equal(s_bits(w->word[0]), 0x3d0510fe);
    assert_int_equal(s_bits(w->word[28995 * 64 + 63]), 0xbc0ad589);
    assert_int_equal(s_bits(w->word[101 * 64 + 7]), 0x3b514e39);
    assert_int_equal(s_bits(w->position[511 * 64 + 1]), 0x3bb27d31);
    assert_int_equal(s_bits(w->emb_ln_g[3]), 0x3f86d66b);
    assert_int_equal(s_bits(w->layer[1].ffn_out_w[63 * 256 + 255]), 0xbc6eea88);
    assert_int_equal(s_bits(w->layer[0].ffn_in_w[200 * 64 + 10]), 0xbc855073);
    assert_int_equal(s_bits(w->layer[1].attn_ln_b[5]), 0x3dc28d6d);

    /* the table enumerates the same pointers */
    zb_model_tensor_t t;
    assert_int_equal(zb_model_tensor_at(m, 0, &t), 0);
    assert_string_equal(t.name, "embeddings.word_embeddings.weight");
    assert_ptr_equal(t.data, w->word);
    assert_int_equal(t.shape[0], 28996);
    assert_int_equal(t.shape[1], 64);
    assert_int_equal(zb_model_tensor_at(m, 5 + 16 + 12, &t), 0);
    assert_string_equal(t.name, "encoder.layer.1.output.dense.weight");
    assert_ptr_equal(t.data, w->layer[1].ffn_out_w);
    assert_int_equal(t.n_elems, 64 * 256);
    assert_int_equal(zb_model_tensor_at(m, 37, &t), ZB_EINVAL);
    assert_int_equal(zb_model_tensor_at(m, -1, &t), ZB_EINVAL);
    zb_model_close(&m);
    assert_null(m);
    zb_model_close(&m); /* NULL-safe */
    zb_model_close(NULL);
}

/* Naive binary16 decoding for the reference: sign * mant * 2^(exp-25). */
static float ref_f16(uint16_t h) {
    int e = (h >> 10) & 31, mant = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp(mant, -24);
    else if (e == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(mant + 1024, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_seed2_f16(void **state) {
    (void)state;
    zb_model_t *m = NULL;
    zb_diag_t d = {{0}};
    int rc = zb_model_open(s_seed2, &m, &d);
    if (rc) fprintf(stderr, "%s\n", d.msg);
    assert_int_equal(rc, 0);
    check_tiny_config(m);
    assert_string_equal(zb_model_identity(m), "hf:tiny-seed2-bert-gammabeta-f16");
    const zb_model_weights_t *w = zb_model_weights(m);
    /* numpy float16 -> float32 values (bits), including a subnormal at (0,38) */
    assert_true(w->word[0] == -0.00833892822265625f);
    assert_true(w->word[28995 * 64 + 63] == 0.00333404541015625f);
    assert_true(w->word[38] == 1.7881393432617188e-07f);
    assert_true(w->word[4 * 64 + 28] == -4.410743713378906e-05f);
    assert_true(w->emb_ln_g[3] == 1.0576171875f);
    assert_true(w->layer[1].ffn_ln_b[63] == 0.10028076171875f);
    assert_true(w->layer[0].k_w[12 * 64 + 34] == -0.02679443359375f);
    assert_true(w->layer[1].ffn_in_b[255] == -0.009918212890625f);
    /* widened memory is 64-byte aligned */
    assert_int_equal((uintptr_t)w->word % 64, 0);

    /* every element of every tensor equals the naive decoding of the raw half */
    size_t len = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", s_seed2);
    char *raw = fx_read_file(path, &len);
    assert_non_null(raw);
    zb_safetensors_t *st = NULL;
    assert_int_equal(zb_safetensors_parse(raw, len, &st, &d), 0);
    size_t checked = 0;
    for (int i = 0; i < zb_model_n_tensors(m); i++) {
        zb_model_tensor_t t;
        assert_int_equal(zb_model_tensor_at(m, i, &t), 0);
        char name[160];
        snprintf(name, sizeof name, "bert.%s", t.name);
        char *ln = strstr(name, "LayerNorm.");
        if (ln) strcpy(ln + 10, strstr(ln, "weight") ? "gamma" : "beta");
        const zb_safetensors_tensor_t *r = zb_safetensors_find(st, name);
        assert_non_null(r);
        assert_int_equal(r->n_elems, t.n_elems);
        const unsigned char *b = r->data;
        for (size_t k = 0; k < t.n_elems; k++) {
            float want = ref_f16((uint16_t)(b[2 * k] | b[2 * k + 1] << 8));
            if (s_bits(want) != s_bits(((const float *)t.data)[k]))
                fail_msg("%s[%zu] differs", name, k);
        }
        checked += t.n_elems;
    }
    assert_int_equal(checked, 28996 * 64 + 512 * 64 + 2 * 64 + 2 * 64 +
                                  2 * (4 * 64 * 64 + 4 * 64 + 4 * 64 + 2 * 64 * 256 + 256 + 64));
    zb_safetensors_close(&st);
    free(raw);
    zb_model_close(&m);
}

/* --- broken directories --------------------------------------------------- */

static char s_tmp[256];

/* A directory linking the seed1 (or seed2) weights and vocab, with the given
 * config.json text (NULL: the fixture's) and tokenizer_config.json (NULL: none). */
static const char *make_dir(int seed, const char *config, const char *tok_config) {
    char cwd[4096], src[8400], dst[512];
    const char *dir = seed == 1 ? s_seed1 : s_seed2;
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(s_tmp, sizeof s_tmp, "/tmp/zb_test_model_XXXXXX");
    assert_non_null(mkdtemp(s_tmp));
    const char *files[] = {"vocab.txt", "model.safetensors", "config.json"};
    for (int i = 0; i < 3; i++) {
        if (i == 2 && config != NULL) continue;
        snprintf(src, sizeof src, "%s%s%s/%s", dir[0] == '/' ? "" : cwd, dir[0] == '/' ? "" : "/",
                 dir, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", s_tmp, files[i]);
        assert_int_equal(symlink(src, dst), 0);
    }
    if (config != NULL) {
        snprintf(dst, sizeof dst, "%s/config.json", s_tmp);
        FILE *f = fopen(dst, "w");
        assert_non_null(f);
        fputs(config, f);
        fclose(f);
    }
    if (tok_config != NULL) {
        snprintf(dst, sizeof dst, "%s/tokenizer_config.json", s_tmp);
        FILE *f = fopen(dst, "w");
        assert_non_null(f);
        fputs(tok_config, f);
        fclose(f);
    }
    return s_tmp;
}

static void rm_dir(void) {
    const char *files[] = {"vocab.txt", "model.safetensors", "config.json",
                           "tokenizer_config.json"};
    char p[512];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", s_tmp, files[i]);
        unlink(p);
    }
    rmdir(s_tmp);
}

#define CFG(extra)                                                                                 \
    "{\"vocab_size\": 28996, \"num_hidden_layers\": 2, \"max_position_embeddings\": 512, "         \
    "\"type_vocab_size\": 2, " extra "}"
#define CFG_BARE(extra)                                                                            \
    "{\"max_position_embeddings\": 512, \"type_vocab_size\": 2, \"hidden_size\": 64, "             \
    "\"num_attention_heads\": 4, \"intermediate_size\": 256, " extra "}"
#define CFG_OK CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 256")

static void test_tokenizer_config(void **state) {
    (void)state;
    struct {
        const char *json;
        int lower, strip;
    } cases[] = {
        {"{\"do_lower_case\": true}", 1, 1},
        {"{\"do_lower_case\": true, \"strip_accents\": false}", 1, 0},
        {"{\"do_lower_case\": false, \"strip_accents\": true}", 0, 1},
        {"{\"do_lower_case\": false, \"strip_accents\": null}", 0, 0},
        {"{}", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zb_model_t *m = NULL;
        zb_diag_t d = {{0}};
        make_dir(1, NULL, cases[i].json);
        int rc = zb_model_open(s_tmp, &m, &d);
        rm_dir();
        assert_int_equal(rc, 0);
        assert_int_equal(zb_model_tokenizer_config(m)->lowercase, cases[i].lower);
        assert_int_equal(zb_model_tokenizer_config(m)->strip_accents, cases[i].strip);
        zb_model_close(&m);
    }
}

static void test_broken(void **state) {
    (void)state;
    struct {
        int seed;
        const char *config, *tok;
        int rc;
        const char *needle; /* must appear in the diagnostic */
    } cases[] = {
        {1, CFG_OK, NULL, 0, ""},
        {1, CFG("\"hidden_size\": 64, \"num_attention_heads\": 5, \"intermediate_size\": 256"),
         NULL, ZB_EFORMAT, "not a multiple of num_attention_heads 5"},
        {1, CFG_OK ",", NULL, ZB_EFORMAT, "config.json: not a JSON object"},
        {1, "[1,2]", NULL, ZB_EFORMAT, "config.json: not a JSON object"},
        {1, CFG("\"num_attention_heads\": 4, \"intermediate_size\": 256"), NULL, ZB_EFORMAT,
         "missing \"hidden_size\""},
        {1, CFG("\"hidden_size\": 64.5, \"num_attention_heads\": 4, \"intermediate_size\": 256"),
         NULL, ZB_EFORMAT, "\"hidden_size\" is not an integer"},
        {1, CFG("\"hidden_size\": \"64\", \"num_attention_heads\": 4, \"intermediate_size\": 256"),
         NULL, ZB_EFORMAT, "\"hidden_size\" is not an integer"},
        {1, CFG("\"hidden_size\": 0, \"num_attention_heads\": 4, \"intermediate_size\": 256"), NULL,
         ZB_ELIMIT, "\"hidden_size\" is 0, outside [1, 16384]"},
        {1, CFG("\"hidden_size\": 1e300, \"num_attention_heads\": 4, \"intermediate_size\": 256"),
         NULL, ZB_ELIMIT, "\"hidden_size\""},
        {1,
         CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 256, "
             "\"hidden_act\": \"gelu_new\""),
         NULL, ZB_EUNSUPPORTED, "hidden_act must be \"gelu\""},
        {1,
         CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 256, "
             "\"model_type\": \"roberta\""),
         NULL, ZB_EUNSUPPORTED, "model_type"},
        {1,
         CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 256, "
             "\"layer_norm_eps\": -1"),
         NULL, ZB_EFORMAT, "layer_norm_eps"},
        {1,
         CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 256, "
             "\"hidden_size\": 32"),
         NULL, ZB_EFORMAT, "key \"hidden_size\" appears twice"},
        /* shapes the weights do not have */
        {1, CFG("\"hidden_size\": 32, \"num_attention_heads\": 4, \"intermediate_size\": 256"),
         NULL, ZB_EFORMAT,
         "tensor embeddings.word_embeddings.weight: expected shape [28996,32] from the config, "
         "found [28996,64]"},
        {2, CFG("\"hidden_size\": 64, \"num_attention_heads\": 4, \"intermediate_size\": 128"),
         NULL, ZB_EFORMAT,
         "tensor bert.encoder.layer.0.intermediate.dense.weight: expected shape [128,64]"},
        {1, CFG_BARE("\"num_hidden_layers\": 3, \"vocab_size\": 28996"), NULL, ZB_ENOTFOUND,
         "missing tensor encoder.layer.2.attention.self.query.weight"},
        {1, CFG_BARE("\"num_hidden_layers\": 2, \"vocab_size\": 1000"), NULL, ZB_EFORMAT,
         "vocab.txt: more than vocab_size = 1000 entries"},
        {1, CFG_OK, "{\"do_lower_case\": 1}", ZB_EFORMAT, "do_lower_case is not a boolean"},
        {1, CFG_OK, "nope", ZB_EFORMAT, "tokenizer_config.json: not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zb_model_t *m = NULL;
        zb_diag_t d = {{0}};
        make_dir(cases[i].seed, cases[i].config, cases[i].tok);
        int rc = zb_model_open(s_tmp, &m, &d);
        rm_dir();
        if (rc != cases[i].rc || strstr(d.msg, cases[i].needle) == NULL)
            fail_msg("case %zu: rc %d (want %d), diag \"%s\" (want \"%s\")", i, rc, cases[i].rc,
                     d.msg, cases[i].needle);
        if (rc == 0)
            assert_non_null(m);
        else
            assert_null(m);
        zb_model_close(&m);
    }
}

static void test_missing_files(void **state) {
    (void)state;
    zb_model_t *m = (zb_model_t *)1;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_model_open("/nonexistent/zbert-model", &m, &d), ZB_ENOTFOUND);
    assert_null(m);
    assert_non_null(strstr(d.msg, "/nonexistent/zbert-model"));
    assert_int_equal(zb_model_open(NULL, &m, &d), ZB_EINVAL);
    /* a directory without model.safetensors */
    make_dir(1, NULL, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", s_tmp);
    unlink(p);
    int rc = zb_model_open(s_tmp, &m, &d);
    rm_dir();
    assert_int_equal(rc, ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "model.safetensors"));
    /* and one without vocab.txt */
    make_dir(1, NULL, NULL);
    snprintf(p, sizeof p, "%s/vocab.txt", s_tmp);
    unlink(p);
    rc = zb_model_open(s_tmp, &m, &d);
    rm_dir();
    assert_int_equal(rc, ZB_ENOTFOUND);
    assert_non_null(strstr(d.msg, "vocab.txt"));
}

/* --- where the weights live ----------------------------------------------- */

/* Whether [p, p + n) lies inside one of this process's mappings of path. */
static int in_mapping_of(const char *path, const void *p, size_t n) {
    char real[S_PATH_MAX];
    if (realpath(path, real) == NULL) return 0;
    FILE *f = fopen("/proc/self/maps", "r");
    assert_non_null(f);
    char line[S_PATH_MAX + 128];
    int inside = 0;
    uintptr_t a0 = (uintptr_t)p, a1 = a0 + n;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char name[S_PATH_MAX] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &lo, &hi, name) >= 2 &&
            strcmp(name, real) == 0 && a0 >= lo && a1 <= hi)
            inside = 1;
    }
    fclose(f);
    return inside;
}

/* Aligned F32 tensors are views into the mapped model.safetensors; shift the
 * data by one byte and they must be widened into owned memory instead, with
 * identical values. */
static void test_views_and_misaligned(void **state) {
    (void)state;
    zb_diag_t d = {{0}};
    zb_model_t *a = NULL, *b = NULL;
    char st_path[4200];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", s_seed1);
    assert_int_equal(zb_model_open(s_seed1, &a, &d), 0);
    for (int i = 0; i < zb_model_n_tensors(a); i++) {
        zb_model_tensor_t t;
        zb_model_tensor_at(a, i, &t);
        if (!in_mapping_of(st_path, t.data, t.n_elems * sizeof(float)))
            fail_msg("%s is not a view into model.safetensors", t.name);
    }

    /* the same file with one more space of header padding */
    size_t len;
    unsigned char *raw = (unsigned char *)fx_read_file(st_path, &len);
    assert_non_null(raw);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | raw[i];
    unsigned char *shifted = malloc(len + 1);
    for (int i = 0; i < 8; i++) shifted[i] = (unsigned char)((hlen + 1) >> (8 * i));
    memcpy(shifted + 8, raw + 8, hlen);
    shifted[8 + hlen] = ' ';
    memcpy(shifted + 9 + hlen, raw + 8 + hlen, len - 8 - hlen);
    make_dir(1, NULL, NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", s_tmp);
    unlink(p);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(shifted, 1, len + 1, f), len + 1);
    fclose(f);
    int rc = zb_model_open(s_tmp, &b, &d);
    if (rc) fail_msg("%s", d.msg);
    for (int i = 0; i < zb_model_n_tensors(a); i++) {
        zb_model_tensor_t x, y;
        zb_model_tensor_at(a, i, &x);
        zb_model_tensor_at(b, i, &y);
        assert_memory_equal(x.data, y.data, x.n_elems * sizeof(float));
        assert_int_equal((uintptr_t)y.data % 64, 0);
        if (in_mapping_of(p, y.data, sizeof(float))) fail_msg("%s: misaligned view", y.name);
    }
    rm_dir();
    zb_model_close(&b);
    zb_model_close(&a);
    free(shifted);
    free(raw);
}

/* --- the random generator ---------------------------------------------------- */

static int run_random(const char *out, const char *dtype, const char *names, const char *seed) {
    const char *bin = getenv("ZB_BIN");
    char prog[S_PATH_MAX];
    snprintf(prog, sizeof prog, "%s/zbert-model", bin && *bin ? bin : "bin");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (freopen("/dev/null", "w", stdout) == NULL) _exit(126);
        execl(prog, prog, "random", "--layers", "2", "--hidden", "32", "--heads", "4",
              "--intermediate", "64", "--max-positions", "16", "--vocab",
              fx_path("vocab-bert-base-cased.txt"), "--seed", seed, "--dtype", dtype, "--names",
              names, "-o", out, (char *)NULL);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) fail_msg("cannot run %s (set ZB_BIN)", prog);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* One stream of values whatever the dtype or naming: the F16/BF16 models
 * hold exactly the rounded F32 values; the same seed gives the same bytes;
 * the values follow the documented distributions. */
static void test_random_models(void **state) {
    (void)state;
    char base[] = "/tmp/zb_test_random_XXXXXX";
    assert_non_null(mkdtemp(base));
    const char *kinds[][2] = {
        {"f32", "plain"}, {"f16", "bert-gammabeta"}, {"bf16", "plain"}, {"f32", "bert-gammabeta"}};
    char dirs[5][128];
    zb_model_t *m[5] = {NULL};
    zb_diag_t d;
    for (int k = 0; k < 5; k++) {
        snprintf(dirs[k], sizeof dirs[k], "%s/m%d", base, k);
        int kk = k < 4 ? k : 0; /* the fifth repeats the first */
        assert_int_equal(run_random(dirs[k], kinds[kk][0], kinds[kk][1], "5"), 0);
        int rc = zb_model_open(dirs[k], &m[k], &d);
        if (rc) fail_msg("%s: %s", dirs[k], d.msg);
    }
    /* same arguments, same file */
    char p0[256], p4[256];
    snprintf(p0, sizeof p0, "%s/model.safetensors", dirs[0]);
    snprintf(p4, sizeof p4, "%s/model.safetensors", dirs[4]);
    size_t l0, l4;
    char *b0 = fx_read_file(p0, &l0), *b4 = fx_read_file(p4, &l4);
    assert_int_equal(l0, l4);
    assert_memory_equal(b0, b4, l0);
    free(b0);
    free(b4);

    double sum[3] = {0}, sq[3] = {0};
    size_t cnt[3] = {0};
    for (int i = 0; i < zb_model_n_tensors(m[0]); i++) {
        zb_model_tensor_t t[4];
        for (int k = 0; k < 4; k++) zb_model_tensor_at(m[k], i, &t[k]);
        int cls = strstr(t[0].name, "LayerNorm.weight") ? 1
                  : strstr(t[0].name, "LayerNorm.bias") ? 2
                                                        : 0;
        for (size_t e = 0; e < t[0].n_elems; e++) {
            float x = ((const float *)t[0].data)[e];
            float h = zb_safetensors_f16_to_f32(zb_safetensors_f32_to_f16(x));
            float bf = zb_safetensors_bf16_to_f32(zb_safetensors_f32_to_bf16(x));
            if (s_bits(((const float *)t[1].data)[e]) != s_bits(h) ||
                s_bits(((const float *)t[2].data)[e]) != s_bits(bf) ||
                s_bits(((const float *)t[3].data)[e]) != s_bits(x))
                fail_msg("%s[%zu] differs between dtypes or namings", t[0].name, e);
            sum[cls] += x;
            sq[cls] += (double)x * x;
            cnt[cls]++;
        }
    }
    double mean[3], sd[3];
    for (int c = 0; c < 3; c++) {
        mean[c] = sum[c] / (double)cnt[c];
        sd[c] = sqrt(sq[c] / (double)cnt[c] - mean[c] * mean[c]);
    }
    /* ~950k N(0, 0.02) values; 5 * 32 gammas and betas, N(1, 0.1) and N(0, 0.1) */
    assert_true(fabs(mean[0]) < 1e-4 && fabs(sd[0] - 0.02) < 2e-4);
    assert_true(fabs(mean[1] - 1.0) < 0.03 && fabs(sd[1] - 0.1) < 0.02);
    assert_true(fabs(mean[2]) < 0.03 && fabs(sd[2] - 0.1) < 0.02);
    for (int k = 0; k < 5; k++) {
        zb_model_close(&m[k]);
        const char *files[] = {"config.json", "vocab.txt", "model.safetensors"};
        for (int f = 0; f < 3; f++) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dirs[k], files[f]);
            unlink(p);
        }
        rmdir(dirs[k]);
    }
    rmdir(base);
    /* bad arguments are refused before anything is written */
    assert_int_equal(run_random("/tmp/zb_should_not_exist", "f8", "plain", "1"), 2);
    assert_int_equal(run_random("/tmp/zb_should_not_exist", "f32", "odd", "1"), 2);
    assert_int_equal(run_random("/tmp/zb_should_not_exist", "f32", "plain", "-1"), 2);
    struct stat sb;
    assert_int_not_equal(stat("/tmp/zb_should_not_exist", &sb), 0);
}

/* A directory is packed at load: the packed table's operands unpack to the
 * plain weights (Q, K, V stacked), biases stacked, data 64-byte aligned;
 * the tables and their specs agree. */
static void test_packed_at_load(void **state) {
    (void)state;
    zb_model_t *m = NULL;
    zb_diag_t d = {{0}};
    assert_int_equal(zb_model_open(s_seed1, &m, &d), 0);
    assert_true(zb_model_packed_at_load(m));
    const zb_config_t *c = zb_model_config(m);
    const int h = c->hidden, in = c->intermediate;
    assert_int_equal(zb_model_n_packed(c), 5 + 12 * c->layers);
    float *u = malloc((size_t)3 * (size_t)h * (size_t)in * sizeof *u);
    assert_non_null(u);
    for (int l = 0; l < c->layers; l++) {
        const zb_model_layer_t *L = &zb_model_weights(m)->layer[l];
        const struct {
            zb_gemm_w_t w;
            int n, k;
            const float *plain[3];
        } ops[] = {
            {L->qkv, 3 * h, h, {L->q_w, L->k_w, L->v_w}},
            {L->attn_out, h, h, {L->attn_out_w, NULL, NULL}},
            {L->ffn_in, in, h, {L->ffn_in_w, NULL, NULL}},
            {L->ffn_out, h, in, {L->ffn_out_w, NULL, NULL}},
        };
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
            assert_int_equal(ops[i].w.n, ops[i].n);
            assert_int_equal(ops[i].w.k, ops[i].k);
            assert_int_equal((uintptr_t)ops[i].w.p % 64, 0);
            zb_gemm_unpack(ops[i].w.p, ops[i].n, ops[i].k, u, (size_t)ops[i].k);
            const size_t part = (size_t)(ops[i].n / (i == 0 ? 3 : 1)) * (size_t)ops[i].k;
            for (int j = 0; j < (i == 0 ? 3 : 1); j++)
                assert_memory_equal(u + (size_t)j * part, ops[i].plain[j], part * sizeof *u);
        }
        assert_memory_equal(L->qkv_b, L->q_b, (size_t)h * sizeof(float));
        assert_memory_equal(L->qkv_b + h, L->k_b, (size_t)h * sizeof(float));
        assert_memory_equal(L->qkv_b + 2 * h, L->v_b, (size_t)h * sizeof(float));
    }
    free(u);
    for (int i = 0; i < zb_model_n_packed(c); i++) {
        zb_model_tensor_t t, spec;
        assert_int_equal(zb_model_packed_at(m, i, &t), 0);
        assert_int_equal(zb_model_packed_spec(c, i, &spec), 0);
        assert_string_equal(t.name, spec.name);
        assert_int_equal(t.packed, spec.packed);
        assert_int_equal(t.n_stored, spec.n_stored);
        assert_int_equal(t.n_elems, spec.n_elems);
        assert_non_null(t.data);
        assert_null(spec.data);
        if (t.packed)
            assert_int_equal(t.n_stored, zb_gemm_packed_floats((int)t.shape[0], (int)t.shape[1]));
    }
    zb_model_tensor_t t;
    assert_int_equal(zb_model_packed_at(m, 5, &t), 0);
    assert_string_equal(t.name, "encoder.layer.0.attention.self.qkv.weight");
    assert_true(t.packed);
    assert_int_equal(t.shape[0], 3 * h);
    assert_int_equal(zb_model_packed_at(m, 5 + 12 * 2, &t), ZB_EINVAL);
    assert_int_equal(zb_model_packed_spec(c, -1, &t), ZB_EINVAL);
    /* the source table of a directory stays the plain one */
    assert_int_equal(zb_model_tensor_at(m, 5, &t), 0);
    assert_string_equal(t.name, "encoder.layer.0.attention.self.query.weight");
    assert_false(t.packed);
    assert_int_equal(t.n_stored, t.n_elems);
    zb_model_close(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed1),
        cmocka_unit_test(test_seed2_f16),
        cmocka_unit_test(test_tokenizer_config),
        cmocka_unit_test(test_broken),
        cmocka_unit_test(test_missing_files),
        cmocka_unit_test(test_views_and_misaligned),
        cmocka_unit_test(test_random_models),
        cmocka_unit_test(test_packed_at_load),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
