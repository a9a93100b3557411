/*
 * zbert-model -- build, inspect and check model files.
 *
 *   zbert-model convert SOURCE -o NAME.zbm [--quantize int8 [--calibrate TEXTS]]
 *               (SOURCE: a Hugging Face directory or an fp32 bundle)
 *   zbert-model inspect FILE            (bundle or Hugging Face directory)
 *   zbert-model verify FILE             (exit 0 when sound, 1 otherwise)
 *   zbert-model random --layers L --hidden H --heads A --intermediate I
 *               --vocab FILE --seed S -o DIR [--dtype f32|f16|bf16]
 *               [--names plain|bert-gammabeta] [--max-positions 512]
 *   zbert-model fetch MODEL_ID DIR      (e.g. bert-base-cased, with curl)
 *
 * Every failure prints one line "zbert-model: ..." on stderr and exits 1;
 * usage errors exit 2.  The options of convert and random are tables of
 * proto/settings (command line only): `zbert-model convert --help` and
 * `zbert-model random --help` are generated from them.
 *
 * random writes a Hugging Face directory whose weights follow the fixtures'
 * distributions (matrices, embeddings, biases N(0, 0.02); LayerNorm gamma
 * 1 + N(0, 0.1), beta N(0, 0.1)) from a PRNG of our own (splitmix64 seeding
 * xoshiro256**, Box-Muller in double), drawn in canonical tensor order, one
 * value per element, so the same arguments give the same bytes everywhere
 * the C library's log/cos/sqrt are correctly rounded (glibc is).
 *
 * The command line is a contract other tools drive: options are only ever
 * added.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bundle.h"
#include "convert.h"
#include "calibrate.h"
#include "limits.h"
#include "model.h"
#include "safetensors.h"
#include "settings.h"

static const char *s_prog = "zbert-model";

static void s_usage(FILE *f) {
    fputs("usage: zbert-model convert SOURCE -o NAME.zbm [--quantize int8 [--calibrate TEXTS]]\n"
          "       zbert-model inspect FILE\n"
          "       zbert-model verify FILE\n"
          "       zbert-model random --layers L --hidden H --heads A --intermediate I\n"
          "                   --vocab FILE --seed S -o DIR [--dtype f32|f16|bf16]\n"
          "                   [--names plain|bert-gammabeta] [--max-positions N]\n"
          "       zbert-model fetch MODEL_ID DIR\n"
          "FILE and SOURCE are a .zbm bundle or a Hugging Face directory (config.json,\n"
          "vocab.txt, model.safetensors).  --quantize int8 stores the linear layers as int8\n"
          "with a scale per output row (activations are quantized per row as they run);\n"
          "--calibrate TEXTS (one text per line) first runs the fp32 model on them and\n"
          "moves the range of outlier activation channels into the weights (SmoothQuant).\n"
          "zbert-model convert --help and zbert-model random --help list their options.\n",
          f);
}

/* One line on stderr; what (a path) is left out when the message names it. */
static int s_fail(const char *what, int rc, const zb_diag_t *d) {
    const char *msg = zb_diag_text(d, rc);
    if (strstr(msg, what) != NULL)
        fprintf(stderr, "%s: %s\n", s_prog, msg);
    else
        fprintf(stderr, "%s: %s: %s\n", s_prog, what, msg);
    return 1;
}

static int s_usage_error(const char *msg) {
    fprintf(stderr, "%s: %s (run without arguments for usage)\n", s_prog, msg);
    return 2;
}

/*
 * Parses the options of a subcommand (argv[-1] is its name) with its table
 * into o: command line only (zbert-model reads no variables and no file).
 * Returns -1 when the caller goes on, else the exit status: 0 after --help
 * (printed), 2 after a usage error (said on stderr).
 */
static int s_parse(const char *cmd, const char *args, int args_min, const zb_settings_t *table,
                   size_t n, void *o, int argc, char **argv, zb_settings_result_t *res) {
    char name[64];
    snprintf(name, sizeof name, "%s %s", s_prog, cmd);
    const zb_settings_group_t group = {table, n, o, true};
    const zb_settings_program_t p = {.name = name,
                                     .args = args,
                                     .args_min = args_min,
                                     .args_max = args_min,
                                     .groups = &group,
                                     .n_groups = 1};
    zb_diag_t d = {{0}};
    int rc = zb_settings_parse(&p, argc + 1, argv - 1, res, &d);
    zb_settings_release(&p); /* no lists in these tables */
    if (rc != 0) {
        fprintf(stderr, "%s: %s (see %s --help)\n", name, zb_diag_text(&d, rc), name);
        return 2;
    }
    if (res->help) {
        zb_settings_help(&p, stdout);
        return 0;
    }
    return -1;
}

static bool s_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* SHA-256 of a whole file, streamed, as hex; 0 or -1. */
static int s_sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) crypto_hash_sha256_update(&st, buf, n);
    int err = ferror(f);
    fclose(f);
    if (err) return -1;
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    for (size_t i = 0; i < sizeof h; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    return 0;
}

/* --- convert -------------------------------------------------------------- */

/* Calibration texts: the lines of path (at most ZB_CALIB_TEXTS_MAX, each at
 * most ZB_TEXT_BYTES_MAX bytes; empty lines skipped), run through the fp32
 * model. */
static int s_calibrate(const zb_model_t *m, const char *path, zb_calibrate_t **out) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: %s: %s\n", s_prog, path, strerror(errno));
        return 1;
    }
    char **texts = NULL, *line = NULL;
    size_t *lens = NULL, n = 0, cap = 0, lcap = 0;
    ssize_t got;
    int status = 1;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        size_t len = (size_t)got;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (len == 0) continue;
        if (len > ZB_TEXT_BYTES_MAX || n == ZB_CALIB_TEXTS_MAX) {
            fprintf(stderr, "%s: %s: more than %d texts, or a line over %d bytes\n", s_prog, path,
                    ZB_CALIB_TEXTS_MAX, ZB_TEXT_BYTES_MAX);
            goto out;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            char **t = realloc(texts, cap * sizeof *t);
            size_t *l = t ? realloc(lens, cap * sizeof *l) : NULL;
            if (t) texts = t;
            if (l) lens = l;
            if (t == NULL || l == NULL) goto oom;
        }
        if ((texts[n] = malloc(len + 1)) == NULL) goto oom;
        memcpy(texts[n], line, len);
        texts[n][len] = '\0';
        lens[n++] = len;
    }
    zb_diag_t d = {{0}};
    int rc = zb_calibrate_run(m, (const char *const *)texts, lens, n, 0, out, &d);
    if (rc != 0) {
        s_fail(path, rc, &d);
        goto out;
    }
    printf("calibrated on %zu texts, %zu tokens\n", zb_calibrate_texts(*out),
           zb_calibrate_tokens(*out));
    status = 0;
    goto out;
oom:
    fprintf(stderr, "%s: out of memory reading %s\n", s_prog, path);
out:
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    free(line);
    fclose(f);
    return status;
}

typedef struct s_convert_opts {
    char output[4096];
    int quantize; /* 1: int8 */
    char calibrate[4096];
} s_convert_opts_t;

static const int s_quantize_values[] = {1};
#define S_AT(f) ZB_SETTINGS_AT(s_convert_opts_t, f)
static const zb_settings_t s_convert_table[] = {
    {.name = "output",
     .kind = ZB_SETTINGS_STRING,
     S_AT(output),
     .min = 1,
     .max = 4095,
     .short_name = 'o',
     .value_name = "NAME.zbm",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "the bundle to write"},
    {.name = "quantize",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(quantize),
     .choices = (const char *const[]){"int8", NULL},
     .values = s_quantize_values,
     .def_help = "none",
     .help = "store the linear layers as int8 with a scale per output row"},
    {.name = "calibrate",
     .kind = ZB_SETTINGS_STRING,
     S_AT(calibrate),
     .min = 1,
     .max = 4095,
     .value_name = "TEXTS",
     .help = "with --quantize int8: smooth outlier channels on these texts (one per line)"},
};
#undef S_AT

static int s_cmd_convert(int argc, char **argv) {
    s_convert_opts_t o;
    memset(&o, 0, sizeof o);
    zb_settings_result_t res;
    int st = s_parse("convert", "SOURCE", 1, s_convert_table,
                     sizeof s_convert_table / sizeof *s_convert_table, &o, argc, argv, &res);
    if (st >= 0) return st;
    const char *in = res.args[0], *out = o.output;
    const char *calib_path = o.calibrate[0] ? o.calibrate : NULL;
    bool int8 = o.quantize == 1;
    if (calib_path != NULL && !int8)
        return s_usage_error("convert: --calibrate goes with --quantize int8");
    zb_diag_t d = {{0}};
    zb_model_t *m = NULL;
    int rc = zb_model_open(in, &m, &d);
    if (rc != 0) return s_fail(in, rc, &d);

    /* provenance: the directory and the exact safetensors file, or the bundle */
    char path[4200], hex[65] = "unknown", source[4400];
    if (s_is_dir(in)) {
        snprintf(path, sizeof path, "%s/model.safetensors", in);
        if (sodium_init() < 0 || s_sha256_file(path, hex) != 0)
            snprintf(hex, sizeof hex, "unknown");
        snprintf(source, sizeof source, "Hugging Face directory %s; model.safetensors sha256 %s",
                 in, hex);
    } else {
        snprintf(source, sizeof source, "bundle %s (weights %s)", in, zb_model_identity(m));
    }
    zb_calibrate_t *calib = NULL;
    if (calib_path != NULL && s_calibrate(m, calib_path, &calib) != 0) {
        zb_model_close(&m);
        return 1;
    }
    if (int8) {
        size_t k = strlen(source);
        snprintf(source + k, sizeof source - k, "; linear layers quantized to int8 (%s)%s",
                 ZB_QGEMM_LAYOUT_NAME, calib ? ", smoothed by calibration" : "");
    }
    rc = int8
             ? zb_convert_model_int8(out, m, source, calib ? zb_calibrate_act_max(calib) : NULL, &d)
             : zb_convert_model(out, m, source, &d);
    zb_calibrate_destroy(&calib);
    if (rc != 0) {
        zb_model_close(&m);
        return s_fail(out, rc, &d);
    }
    zb_bundle_t *b = NULL;
    rc = zb_bundle_open(out, &b, &d);
    if (rc != 0) {
        zb_model_close(&m);
        return s_fail(out, rc, &d);
    }
    printf("%s: %zu tensors, %zu bytes of weights, identity %s\n", out, zb_bundle_n_tensors(b),
           zb_bundle_weights_size(b), zb_bundle_identity(b));
    zb_bundle_close(&b);
    zb_model_close(&m);
    return 0;
}

/* --- inspect / verify ------------------------------------------------------- */

/* The warning for a bundle of the plain layout (format version 1): it
 * works, at a cost in start-up time and shared memory. */
static void s_warn_plain(const char *path, const zb_model_t *m) {
    if (!zb_model_packed_at_load(m)) return;
    fprintf(stderr,
            "%s: warning: %s has the plain layout of format version 1: its linear "
            "layers are packed at every load, into memory each process owns; re-convert it "
            "(zbert-model convert) to map them packed\n",
            s_prog, path);
}

static void s_print_config(const zb_config_t *c, const zb_config_tokenizer_t *t) {
    printf("config: vocab_size %d, hidden %d, layers %d, heads %d, intermediate %d,\n"
           "        max_positions %d, type_vocab_size %d, layer_norm_eps %g, hidden_act gelu\n",
           c->vocab_size, c->hidden, c->layers, c->heads, c->intermediate, c->max_positions,
           c->type_vocab_size, (double)c->layer_norm_eps);
    printf("tokenizer: lowercase %s, strip_accents %s\n", t->lowercase ? "yes" : "no",
           t->strip_accents ? "yes" : "no");
}

static void s_print_shape(int n_dims, const int64_t *shape) {
    char buf[128];
    size_t k = (size_t)snprintf(buf, sizeof buf, "[");
    for (int i = 0; i < n_dims && k < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < sizeof buf) snprintf(buf + k, sizeof buf - k, "]");
    printf(" %-14s", buf);
}

static int s_cmd_inspect(int argc, char **argv) {
    if (argc != 1) return s_usage_error("inspect needs exactly one FILE");
    const char *path = argv[0];
    zb_diag_t d = {{0}};
    int rc;
    if (s_is_dir(path)) {
        zb_model_t *m = NULL;
        if ((rc = zb_model_open(path, &m, &d)) != 0) return s_fail(path, rc, &d);
        printf("Hugging Face directory %s\nidentity: %s\n", path, zb_model_identity(m));
        s_print_config(zb_model_config(m), zb_model_tokenizer_config(m));
        int used = zb_model_n_tensors(m);
        zb_model_close(&m);
        char p[4200];
        snprintf(p, sizeof p, "%s/model.safetensors", path);
        zb_safetensors_t *st = NULL;
        if ((rc = zb_safetensors_open_file(p, &st, &d)) != 0) return s_fail(p, rc, &d);
        printf("model.safetensors: %zu tensors (the encoder uses %d)\n", zb_safetensors_count(st),
               used);
        for (size_t i = 0; i < zb_safetensors_count(st); i++) {
            const zb_safetensors_tensor_t *t = zb_safetensors_at(st, i);
            printf("  %-5s", zb_safetensors_dtype_name(t->dtype));
            s_print_shape(t->n_dims, t->shape);
            printf(" %12zu %12zu  %s\n", t->offset, t->nbytes, t->name);
        }
        zb_safetensors_close(&st);
        return 0;
    }
    zb_bundle_t *b = NULL;
    if ((rc = zb_bundle_open(path, &b, &d)) != 0) return s_fail(path, rc, &d);
    printf("bundle %s (format %s version %d)\n", path, ZB_BUNDLE_FORMAT, zb_bundle_version(b));
    printf("identity: %s\nsha256 of weights: %s (not checked here; see verify)\n",
           zb_bundle_identity(b), zb_bundle_sha256(b));
    printf("source: %s\n", zb_bundle_source(b));
    s_print_config(zb_bundle_config(b), zb_bundle_tokenizer_config(b));
    size_t vlen;
    zb_bundle_vocab(b, &vlen);
    printf("vocab.txt: %zu bytes\n", vlen);
    size_t n_packed = 0, n_q8 = 0;
    for (size_t i = 0; i < zb_bundle_n_tensors(b); i++) {
        n_packed += zb_bundle_tensor_at(b, i)->layout == ZB_BUNDLE_LAYOUT_PANEL;
        n_q8 += zb_bundle_tensor_at(b, i)->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8;
    }
    if (n_q8 > 0)
        printf("layout: %zu matrices int8 in %s version %d (%d-row panels, scale per row), "
               "the rest plain\n",
               n_q8, ZB_QGEMM_LAYOUT_NAME, ZB_QGEMM_LAYOUT_VERSION, ZB_GEMM_NR);
    else if (n_packed > 0)
        printf("layout: %zu matrices packed as %s version %d (%d-row panels), the rest plain\n",
               n_packed, ZB_GEMM_LAYOUT_NAME, ZB_GEMM_LAYOUT_VERSION, ZB_GEMM_NR);
    else
        printf("layout: plain (the engine packs the linear layers when it loads this bundle; "
               "re-convert to map them packed)\n");
    printf("weights.bin: %zu bytes at file offset %zu, %zu tensors\n", zb_bundle_weights_size(b),
           zb_bundle_weights_offset(b), zb_bundle_n_tensors(b));
    for (size_t i = 0; i < zb_bundle_n_tensors(b); i++) {
        const zb_bundle_tensor_t *t = zb_bundle_tensor_at(b, i);
        printf("  %-5s %-8s", zb_safetensors_dtype_name(t->dtype),
               zb_bundle_layout_name(t->layout));
        s_print_shape(t->n_dims, t->shape);
        printf(" %12zu %12zu  %s\n", t->offset, t->nbytes, t->name);
    }
    zb_bundle_close(&b);
    return 0;
}

static int s_cmd_verify(int argc, char **argv) {
    if (argc != 1) return s_usage_error("verify needs exactly one FILE");
    const char *path = argv[0];
    zb_diag_t d = {{0}};
    int rc;
    if (!s_is_dir(path)) {
        zb_bundle_t *b = NULL;
        if ((rc = zb_bundle_open(path, &b, &d)) != 0) return s_fail(path, rc, &d);
        rc = zb_bundle_verify(b, &d);
        char sha[65];
        snprintf(sha, sizeof sha, "%s", zb_bundle_sha256(b));
        zb_bundle_close(&b);
        if (rc != 0) return s_fail(path, rc, &d);
        /* and the encoder can bind every tensor it needs */
        zb_model_t *m = NULL;
        if ((rc = zb_model_open(path, &m, &d)) != 0) return s_fail(path, rc, &d);
        s_warn_plain(path, m);
        /* int8 matrices: their row sums (which the VNNI kernel relies on) agree */
        const zb_model_weights_t *w = zb_model_weights(m);
        for (int l = 0; zb_model_is_int8(m) && l < zb_model_config(m)->layers; l++) {
            const zb_model_layer_t *L = &w->layer[l];
            const zb_qgemm_w_t *q[4] = {&L->qkv_q8, &L->attn_out_q8, &L->ffn_in_q8, &L->ffn_out_q8};
            for (int i = 0; i < 4; i++)
                if (!zb_qgemm_check_sums(q[i])) {
                    fprintf(stderr,
                            "%s: %s: layer %d: int8 matrix %d disagrees with its row "
                            "sums\n",
                            s_prog, path, l, i);
                    zb_model_close(&m);
                    return 1;
                }
        }
        zb_model_close(&m);
        printf("%s: ok (weights sha256 %s)\n", path, sha);
        return 0;
    }
    zb_model_t *m = NULL;
    if ((rc = zb_model_open(path, &m, &d)) != 0) return s_fail(path, rc, &d);
    zb_model_close(&m);
    printf("%s: ok (Hugging Face directory; no checksum to verify)\n", path);
    return 0;
}

/* --- random ------------------------------------------------------------- */

typedef struct {
    uint64_t s[4];
} s_rng_t;

static uint64_t s_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t s_rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** */
static uint64_t s_next(s_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t out = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return out;
}

/* uniform in (0, 1]: 53 random bits, never 0 so log() is finite */
static double s_uniform(s_rng_t *r) {
    return (double)((s_next(r) >> 11) + 1) * 0x1p-53;
}

/* one standard normal per call (the second Box-Muller value is dropped, so
 * the stream position is simply "two draws per value") */
static double s_normal(s_rng_t *r) {
    double u1 = s_uniform(r), u2 = s_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static int s_write_text(const char *path, const char *txt, size_t len) {
    FILE *f = fopen(path, "wb");
    if (f == NULL) return -1;
    int ok = fwrite(txt, 1, len, f) == len;
    if (fclose(f) != 0) ok = 0;
    return ok ? 0 : -1;
}

typedef struct s_random_opts {
    int layers, hidden, heads, intermediate, max_positions;
    uint64_t seed;
    char vocab[4096], output[4096];
    int dtype, names; /* indices into s_dtypes, s_names */
} s_random_opts_t;

static const char *const s_dtypes[] = {"f32", "f16", "bf16", NULL};
static const char *const s_names[] = {"plain", "bert-gammabeta", NULL};
#define S_AT(f) ZB_SETTINGS_AT(s_random_opts_t, f)
static const zb_settings_t s_random_table[] = {
    {.name = "layers",
     .kind = ZB_SETTINGS_INT,
     S_AT(layers),
     .min = 1,
     .max = ZB_LAYERS_MAX,
     .value_name = "L",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "encoder layers"},
    {.name = "hidden",
     .kind = ZB_SETTINGS_INT,
     S_AT(hidden),
     .min = 1,
     .max = ZB_HIDDEN_MAX,
     .value_name = "H",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "hidden size"},
    {.name = "heads",
     .kind = ZB_SETTINGS_INT,
     S_AT(heads),
     .min = 1,
     .max = ZB_HEADS_MAX,
     .value_name = "A",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "attention heads"},
    {.name = "intermediate",
     .kind = ZB_SETTINGS_INT,
     S_AT(intermediate),
     .min = 1,
     .max = ZB_INTERMEDIATE_MAX,
     .value_name = "I",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "feed-forward size"},
    {.name = "vocab",
     .kind = ZB_SETTINGS_STRING,
     S_AT(vocab),
     .min = 1,
     .max = 4095,
     .value_name = "FILE",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "vocab.txt to copy (its line count is the vocabulary size)"},
    {.name = "seed",
     .kind = ZB_SETTINGS_U64,
     S_AT(seed),
     .max = UINT64_MAX,
     .value_name = "S",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "PRNG seed: the same arguments give the same bytes"},
    {.name = "output",
     .kind = ZB_SETTINGS_STRING,
     S_AT(output),
     .min = 1,
     .max = 4095,
     .short_name = 'o',
     .value_name = "DIR",
     .flags = ZB_SETTINGS_REQUIRED,
     .help = "the Hugging Face directory to write"},
    {.name = "dtype",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(dtype),
     .def = "f32",
     .choices = s_dtypes,
     .help = "weight type"},
    {.name = "names",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(names),
     .def = "plain",
     .choices = s_names,
     .help = "LayerNorm tensor names (bert-gammabeta: gamma/beta)"},
    {.name = "max-positions",
     .kind = ZB_SETTINGS_INT,
     S_AT(max_positions),
     .min = 1,
     .max = ZB_POSITIONS_MAX,
     .def = "512",
     .value_name = "N",
     .help = "position embeddings"},
};
#undef S_AT

static int s_cmd_random(int argc, char **argv) {
    s_random_opts_t o;
    memset(&o, 0, sizeof o);
    zb_settings_result_t res;
    int st = s_parse("random", NULL, 0, s_random_table,
                     sizeof s_random_table / sizeof *s_random_table, &o, argc, argv, &res);
    if (st >= 0) return st;
    long layers = o.layers, hidden = o.hidden, heads = o.heads, inter = o.intermediate,
         maxpos = o.max_positions;
    unsigned long long seed = o.seed;
    const char *vocab_path = o.vocab, *out = o.output;
    /* the table took only these names: the checks below always pass */
    const char *dtype = s_dtypes[o.dtype], *names = s_names[o.names];
    zb_safetensors_dtype_t dt;
    if (strcmp(dtype, "f32") == 0)
        dt = ZB_SAFETENSORS_F32;
    else if (strcmp(dtype, "f16") == 0)
        dt = ZB_SAFETENSORS_F16;
    else if (strcmp(dtype, "bf16") == 0)
        dt = ZB_SAFETENSORS_BF16;
    else
        return s_usage_error("random: --dtype must be f32, f16 or bf16");
    bool gammabeta;
    if (strcmp(names, "plain") == 0)
        gammabeta = false;
    else if (strcmp(names, "bert-gammabeta") == 0)
        gammabeta = true;
    else
        return s_usage_error("random: --names must be plain or bert-gammabeta");

    int rc = 1;
    char *vocab = NULL, *cfg_txt = NULL;
    cJSON *cfg = NULL;
    zb_safetensors_out_t *ts = NULL;
    char(*tnames)[160] = NULL;
    void **bufs = NULL;
    int n = 0;
    zb_diag_t d = {{0}};

    /* vocabulary: its line count is vocab_size */
    FILE *vf = fopen(vocab_path, "rb");
    if (vf == NULL) {
        fprintf(stderr, "%s: random: cannot open %s: %s\n", s_prog, vocab_path, strerror(errno));
        goto out;
    }
    size_t vlen = 0, vcap = 0;
    for (;;) {
        if (vlen == vcap) {
            if (vcap >= ZB_MODEL_TEXT_FILE_MAX) break;
            vcap = vcap ? vcap * 2 : 1 << 16;
            char *nv = realloc(vocab, vcap + 1);
            if (nv == NULL) break;
            vocab = nv;
        }
        size_t r = fread(vocab + vlen, 1, vcap - vlen, vf);
        vlen += r;
        if (r == 0) break;
    }
    bool vbad = ferror(vf) || vlen > ZB_MODEL_TEXT_FILE_MAX || vocab == NULL;
    fclose(vf);
    if (vbad) {
        fprintf(stderr, "%s: random: cannot read %s (or larger than %u bytes)\n", s_prog,
                vocab_path, ZB_MODEL_TEXT_FILE_MAX);
        goto out;
    }
    long vsize = 0;
    for (size_t i = 0; i < vlen; i++) vsize += vocab[i] == '\n';
    if (vlen > 0 && vocab[vlen - 1] != '\n') vsize++;
    if (vsize < 1 || vsize > ZB_VOCAB_MAX) {
        fprintf(stderr, "%s: random: %s has %ld entries (allowed 1..%d)\n", s_prog, vocab_path,
                vsize, ZB_VOCAB_MAX);
        goto out;
    }

    /* config.json, validated by the loader's own parser before anything is written */
    cfg = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(cfg, "architectures");
    if (arch == NULL || !cJSON_AddItemToArray(arch, cJSON_CreateString("BertModel")) ||
        !cJSON_AddStringToObject(cfg, "model_type", "bert") ||
        !cJSON_AddNumberToObject(cfg, "vocab_size", (double)vsize) ||
        !cJSON_AddNumberToObject(cfg, "hidden_size", (double)hidden) ||
        !cJSON_AddNumberToObject(cfg, "num_hidden_layers", (double)layers) ||
        !cJSON_AddNumberToObject(cfg, "num_attention_heads", (double)heads) ||
        !cJSON_AddNumberToObject(cfg, "intermediate_size", (double)inter) ||
        !cJSON_AddStringToObject(cfg, "hidden_act", "gelu") ||
        !cJSON_AddNumberToObject(cfg, "max_position_embeddings", (double)maxpos) ||
        !cJSON_AddNumberToObject(cfg, "type_vocab_size", 2) ||
        !cJSON_AddNumberToObject(cfg, "layer_norm_eps", 1e-12) ||
        !cJSON_AddStringToObject(cfg, "position_embedding_type", "absolute") ||
        !cJSON_AddStringToObject(cfg, "torch_dtype",
                                 dt == ZB_SAFETENSORS_F32   ? "float32"
                                 : dt == ZB_SAFETENSORS_F16 ? "float16"
                                                            : "bfloat16") ||
        (cfg_txt = cJSON_Print(cfg)) == NULL) {
        fprintf(stderr, "%s: random: out of memory\n", s_prog);
        goto out;
    }
    zb_config_t c;
    int crc = zb_config_parse(cfg_txt, strlen(cfg_txt), "config", &c, &d);
    if (crc != 0) {
        s_fail("random", crc, &d);
        goto out;
    }

    n = 5 + 16 * c.layers;
    ts = calloc((size_t)n, sizeof *ts);
    tnames = calloc((size_t)n, sizeof *tnames);
    bufs = calloc((size_t)n, sizeof *bufs);
    if (ts == NULL || tnames == NULL || bufs == NULL) {
        fprintf(stderr, "%s: random: out of memory\n", s_prog);
        goto out;
    }
    s_rng_t rng;
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++) rng.s[i] = s_splitmix64(&sm);
    size_t es = zb_safetensors_dtype_size(dt);
    for (int i = 0; i < n; i++) {
        zb_model_tensor_t t;
        zb_model_tensor_spec(&c, i, &t);
        bool ln_g = strstr(t.name, "LayerNorm.weight") != NULL;
        bool ln_b = strstr(t.name, "LayerNorm.bias") != NULL;
        snprintf(tnames[i], sizeof tnames[i], "%s%s", gammabeta ? "bert." : "", t.name);
        if (gammabeta && (ln_g || ln_b)) {
            char *p = strstr(tnames[i], "LayerNorm.") + strlen("LayerNorm.");
            snprintf(p, sizeof tnames[i] - (size_t)(p - tnames[i]), "%s", ln_g ? "gamma" : "beta");
        }
        unsigned char *buf = malloc(t.n_elems * es);
        if (buf == NULL) {
            fprintf(stderr, "%s: random: out of memory for %s\n", s_prog, t.name);
            goto out;
        }
        bufs[i] = buf;
        double sd = (ln_g || ln_b) ? 0.1 : 0.02, mean = ln_g ? 1.0 : 0.0;
        for (size_t k = 0; k < t.n_elems; k++) {
            float v = (float)(mean + sd * s_normal(&rng));
            if (dt == ZB_SAFETENSORS_F32) {
                memcpy(buf + 4 * k, &v, 4);
            } else {
                uint16_t h = dt == ZB_SAFETENSORS_F16 ? zb_safetensors_f32_to_f16(v)
                                                      : zb_safetensors_f32_to_bf16(v);
                buf[2 * k] = (unsigned char)(h & 0xff);
                buf[2 * k + 1] = (unsigned char)(h >> 8);
            }
        }
        ts[i].name = tnames[i];
        ts[i].dtype = dt;
        ts[i].n_dims = t.n_dims;
        ts[i].shape[0] = t.shape[0];
        ts[i].shape[1] = t.shape[1];
        ts[i].data = buf;
    }

    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: random: cannot create %s: %s\n", s_prog, out, strerror(errno));
        goto out;
    }
    char path[4200], seed_txt[32];
    snprintf(path, sizeof path, "%s/config.json", out);
    if (s_write_text(path, cfg_txt, strlen(cfg_txt)) != 0) {
        fprintf(stderr, "%s: random: cannot write %s\n", s_prog, path);
        goto out;
    }
    snprintf(path, sizeof path, "%s/vocab.txt", out);
    if (s_write_text(path, vocab, vlen) != 0) {
        fprintf(stderr, "%s: random: cannot write %s\n", s_prog, path);
        goto out;
    }
    snprintf(seed_txt, sizeof seed_txt, "%llu", seed);
    const char *meta[] = {"format", "pt", "generator", "zbert-model random", "seed", seed_txt};
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    int wrc = zb_safetensors_write(path, ts, (size_t)n, meta, 3, &d);
    if (wrc != 0) {
        s_fail(path, wrc, &d);
        goto out;
    }
    printf("%s: random BERT, %ld layers, hidden %ld, heads %ld, intermediate %ld, vocab %ld, "
           "%s, seed %llu\n",
           out, layers, hidden, heads, inter, vsize, zb_safetensors_dtype_name(dt), seed);
    rc = 0;
out:
    for (int i = 0; bufs != NULL && i < n; i++) free(bufs[i]);
    free(bufs);
    free(tnames);
    free(ts);
    cJSON_free(cfg_txt);
    cJSON_Delete(cfg);
    free(vocab);
    return rc;
}

/* --- fetch -------------------------------------------------------------- */

/* Looks for an executable name on PATH. */
static bool s_on_path(const char *name) {
    const char *path = getenv("PATH");
    if (path == NULL) path = "/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");
        char p[4200];
        snprintf(p, sizeof p, "%.*s/%s", (int)n, n ? path : ".", name);
        if (access(p, X_OK) == 0) return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* Runs curl (no shell) to fetch url into path; 0 or curl's exit status. */
static int s_curl(const char *url, const char *path) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execlp("curl", "curl", "--fail", "--location", "--silent", "--show-error", "--retry", "3",
               "--output", path, url, (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int s_cmd_fetch(int argc, char **argv) {
    if (argc != 2) return s_usage_error("fetch needs MODEL_ID and DIR");
    const char *id = argv[0], *dir = argv[1];
    /* a hub id is [org/]name of letters, digits, '-', '_', '.'; nothing else reaches a URL */
    size_t idl = strlen(id);
    bool ok = idl > 0 && idl < 200 && id[0] != '.' && id[0] != '/' && strstr(id, "..") == NULL;
    for (size_t i = 0; ok && i < idl; i++)
        ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./", id[i]);
    if (!ok) return s_usage_error("fetch: MODEL_ID must look like bert-base-cased or org/name");
    if (!s_on_path("curl")) {
        fprintf(stderr,
                "%s: fetch: curl is not installed (it downloads the files); install it "
                "or download config.json, vocab.txt and model.safetensors by hand\n",
                s_prog);
        return 1;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: fetch: cannot create %s: %s\n", s_prog, dir, strerror(errno));
        return 1;
    }
    const char *files[] = {"config.json", "vocab.txt", "model.safetensors",
                           "tokenizer_config.json"};
    for (int i = 0; i < 4; i++) {
        char url[512], part[4200], final[4200];
        snprintf(url, sizeof url, "https://huggingface.co/%s/resolve/main/%s", id, files[i]);
        snprintf(part, sizeof part, "%s/%s.part", dir, files[i]);
        snprintf(final, sizeof final, "%s/%s", dir, files[i]);
        fprintf(stderr, "%s: fetching %s\n", s_prog, url);
        int st = s_curl(url, part);
        if (st != 0) {
            unlink(part);
            if (i == 3) continue; /* tokenizer_config.json is optional */
            fprintf(stderr, "%s: fetch: curl failed (status %d) on %s\n", s_prog, st, url);
            return 1;
        }
        if (rename(part, final) != 0) {
            fprintf(stderr, "%s: fetch: cannot rename %s: %s\n", s_prog, part, strerror(errno));
            return 1;
        }
    }
    zb_diag_t d = {{0}};
    zb_model_t *m = NULL;
    int rc = zb_model_open(dir, &m, &d);
    if (rc != 0) return s_fail(dir, rc, &d);
    zb_model_close(&m);
    printf("%s: %s downloaded and loads\n", dir, id);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        s_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "convert") == 0) return s_cmd_convert(argc - 2, argv + 2);
    if (strcmp(cmd, "inspect") == 0) return s_cmd_inspect(argc - 2, argv + 2);
    if (strcmp(cmd, "verify") == 0) return s_cmd_verify(argc - 2, argv + 2);
    if (strcmp(cmd, "random") == 0) return s_cmd_random(argc - 2, argv + 2);
    if (strcmp(cmd, "fetch") == 0) return s_cmd_fetch(argc - 2, argv + 2);
    fprintf(stderr, "%s: unknown command %s (run without arguments for usage)\n", s_prog, cmd);
    return 2;
}
