/*
 * bundle.c -- writes and opens zbert bundles (see bundle.h for the format).
 *
 * Opening maps the whole file once and does everything from that mapping:
 * libzip reads the manifest and vocabulary through a buffer source over it
 * (bounded by their sizes), and the weights are located by our own parse of
 * the zip end record, central directory and weights.bin's local header,
 * because libzip does not expose where an entry's data starts.  Every field
 * read from the file is range-checked before it is used as an offset.
 *
 * Writing builds weights.bin in memory (tensors at 64-byte aligned offsets,
 * zero padding), hashes it, and lets libzip write the archive with
 * weights.bin first and stored, its local header padded by an alignment
 * extra field so that its data starts at a multiple of 64.  The result is
 * reopened to prove the layout before the writer reports success.
 */
#include "bundle.h"

#include "gemm.h"
#include "qgemm.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "json.h"

#define S_WEIGHTS "weights.bin"
#define S_MANIFEST "zbert.json"
#define S_VOCAB "vocab.txt"

/* zip record layouts (APPNOTE 4.3): signatures and fixed sizes */
#define S_SIG_LOCAL 0x04034b50u
#define S_SIG_CENTRAL 0x02014b50u
#define S_SIG_EOCD 0x06054b50u
#define S_SIG_EOCD64_LOC 0x07064b50u
#define S_LOCAL_LEN 30u
#define S_CENTRAL_LEN 46u
#define S_EOCD_LEN 22u

struct zb_bundle {
    zb_bert_config_t cfg;
    zb_tokenizer_config_t tok;
    char *vocab; /* vocab.txt bytes, NUL appended */
    size_t vocab_len;
    char *source;
    char sha256[65];
    char identity[17];
    int version;           /* manifest format version (1 or 2) */
    zb_bundle_tensor_t *t; /* [n], sorted by offset */
    size_t n;
    size_t *by_name;  /* [n] indices into t, sorted by name */
    char *names;      /* all tensor names, one block */
    void *map;        /* the whole file */
    size_t map_len;
    size_t w_off;     /* weights.bin data: file offset and size */
    size_t w_size;
    uint32_t w_crc;
};

static uint16_t s_u16(const unsigned char *p) {
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t s_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* --- zip structure ------------------------------------------------------- */

/*
 * Finds weights.bin's data in the file image p[0..len): end record, central
 * directory entry, local header, each checked against the others and the
 * file bounds; the data must be stored and start ZB_BUNDLE_ALIGN-aligned.
 */
static int s_locate_weights(const unsigned char *p, size_t len, size_t *data_off,
                            size_t *size, uint32_t *crc, zb_diag_t *d) {
    if (len < S_EOCD_LEN)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: %zu bytes, too short for a zip archive", len);
    /* the end record is the last 22 bytes, or followed by a comment of at most 64 KiB */
    size_t eocd = SIZE_MAX;
    size_t lo = len - S_EOCD_LEN > ZB_ZIP_COMMENT_MAX ? len - S_EOCD_LEN - ZB_ZIP_COMMENT_MAX : 0;
    for (size_t i = len - S_EOCD_LEN + 1; i-- > lo;) {
        if (s_u32(p + i) == S_SIG_EOCD && i + S_EOCD_LEN + s_u16(p + i + 20) == len) {
            eocd = i;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: no zip end-of-central-directory record");
    const unsigned char *e = p + eocd;
    uint16_t disk = s_u16(e + 4), cd_disk = s_u16(e + 6);
    uint16_t n_disk = s_u16(e + 8), n_total = s_u16(e + 10);
    uint32_t cd_size = s_u32(e + 12), cd_off = s_u32(e + 16);
    if (n_total == 0xffffu || cd_size == 0xffffffffu || cd_off == 0xffffffffu ||
        (eocd >= 20 && s_u32(p + eocd - 20) == S_SIG_EOCD64_LOC))
        return zb_diag_set(d, ZB_EUNSUPPORTED, "bundle: zip64 archives are not supported");
    if (disk != 0 || cd_disk != 0 || n_disk != n_total)
        return zb_diag_set(d, ZB_EUNSUPPORTED, "bundle: multi-disk zip archives are not "
                           "supported");
    if (n_total == 0 || n_total > ZB_BUNDLE_ENTRIES_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "bundle: %u zip entries (allowed 1..%d)", n_total,
                           ZB_BUNDLE_ENTRIES_MAX);
    if ((size_t)cd_off + cd_size > eocd)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: central directory [%u,+%u) runs past its end record at %zu",
                           cd_off, cd_size, eocd);

    size_t off = cd_off, cd_end = (size_t)cd_off + cd_size;
    const unsigned char *w = NULL;
    for (unsigned i = 0; i < n_total; i++) {
        if (cd_end - off < S_CENTRAL_LEN || s_u32(p + off) != S_SIG_CENTRAL)
            return zb_diag_set(d, ZB_EFORMAT, "bundle: central directory entry %u is malformed",
                               i);
        const unsigned char *c = p + off;
        size_t ent = S_CENTRAL_LEN + (size_t)s_u16(c + 28) + s_u16(c + 30) + s_u16(c + 32);
        if (ent > cd_end - off)
            return zb_diag_set(d, ZB_EFORMAT,
                               "bundle: central directory entry %u runs past the directory", i);
        if (s_u16(c + 28) == strlen(S_WEIGHTS) &&
            memcmp(c + S_CENTRAL_LEN, S_WEIGHTS, strlen(S_WEIGHTS)) == 0) {
            if (w != NULL)
                return zb_diag_set(d, ZB_EFORMAT, "bundle: two %s entries", S_WEIGHTS);
            w = c;
        }
        off += ent;
    }
    if (w == NULL) return zb_diag_set(d, ZB_ENOTFOUND, "bundle: no %s entry", S_WEIGHTS);

    uint16_t flags = s_u16(w + 8), method = s_u16(w + 10);
    uint32_t wcrc = s_u32(w + 16), csize = s_u32(w + 20), usize = s_u32(w + 24);
    uint32_t lho = s_u32(w + 42);
    if (flags & 1u)
        return zb_diag_set(d, ZB_EUNSUPPORTED, "bundle: %s is encrypted", S_WEIGHTS);
    if (method != 0)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "bundle: %s is compressed (zip method %u); it must be stored so it "
                           "can be mapped",
                           S_WEIGHTS, method);
    if (csize != usize)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: stored %s has size %u but %u bytes of data",
                           S_WEIGHTS, usize, csize);
    if ((size_t)lho + S_LOCAL_LEN > cd_off)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header at %u runs into the central directory",
                           S_WEIGHTS, lho);
    const unsigned char *l = p + lho;
    if (s_u32(l) != S_SIG_LOCAL)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: no local file header at %u for %s", lho,
                           S_WEIGHTS);
    uint16_t lflags = s_u16(l + 6), lmethod = s_u16(l + 8);
    uint16_t lnlen = s_u16(l + 26), lxlen = s_u16(l + 28);
    if (lflags & 8u)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "bundle: %s local header defers its sizes to a data descriptor",
                           S_WEIGHTS);
    if (lmethod != method || s_u32(l + 14) != wcrc || s_u32(l + 18) != csize ||
        s_u32(l + 22) != usize)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header disagrees with the central directory "
                           "(method, crc or sizes)",
                           S_WEIGHTS);
    size_t data = (size_t)lho + S_LOCAL_LEN + lnlen + lxlen;
    if (data > cd_off)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header (%u name + %u extra bytes) runs into the "
                           "central directory",
                           S_WEIGHTS, lnlen, lxlen);
    if (lnlen != strlen(S_WEIGHTS) || memcmp(l + S_LOCAL_LEN, S_WEIGHTS, lnlen) != 0)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: the local header at %u names another file than %s", lho,
                           S_WEIGHTS);
    if (usize > cd_off - data)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s data [%zu,+%u) runs into the central directory at %u",
                           S_WEIGHTS, data, usize, cd_off);
    if (data % ZB_BUNDLE_ALIGN != 0)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s data starts at byte %zu, not %d-byte aligned", S_WEIGHTS,
                           data, ZB_BUNDLE_ALIGN);
    *data_off = data;
    *size = usize;
    *crc = wcrc;
    return 0;
}

/* Opens the mapped image with libzip (checking its own consistency rules). */
static int s_zip_open_image(const void *map, size_t len, zip_t **out, zb_diag_t *d) {
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(map, len, 0, &ze);
    if (src == NULL) {
        int rc = zb_diag_set(d, ZB_ENOMEM, "bundle: %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return rc;
    }
    zip_t *za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
    if (za == NULL) {
        int rc = zb_diag_set(d, zip_error_code_zip(&ze) == ZIP_ER_MEMORY ? ZB_ENOMEM
                                                                          : ZB_EFORMAT,
                             "bundle: not a valid zip archive: %s", zip_error_strerror(&ze));
        zip_source_free(src);
        zip_error_fini(&ze);
        return rc;
    }
    zip_error_fini(&ze);
    *out = za;
    return 0;
}

/* Reads a whole entry of at most max bytes (NUL appended). */
static int s_zip_read(zip_t *za, const char *name, size_t max, char **buf, size_t *len,
                      zb_diag_t *d) {
    int rc;
    char *b = NULL;
    zip_file_t *zf = NULL;
    zip_stat_t st;
    *buf = NULL;
    zip_int64_t i = zip_name_locate(za, name, 0);
    if (i < 0) return zb_diag_set(d, ZB_ENOTFOUND, "bundle: no %s entry", name);
    if (zip_stat_index(za, (zip_uint64_t)i, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return zb_diag_set(d, ZB_EFORMAT, "bundle: %s: cannot stat: %s", name,
                           zip_strerror(za));
    if (st.size > max)
        return zb_diag_set(d, ZB_ELIMIT, "bundle: %s: %llu bytes, more than the %zu-byte limit",
                           name, (unsigned long long)st.size, max);
    size_t n = (size_t)st.size;
    b = malloc(n + 1);
    if (b == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: %s: out of memory", name);
    zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
    if (zf == NULL) {
        rc = zb_diag_set(d, ZB_EFORMAT, "bundle: %s: cannot open: %s", name, zip_strerror(za));
        goto out;
    }
    size_t got = 0;
    while (got < n) {
        zip_int64_t r = zip_fread(zf, b + got, n - got);
        if (r <= 0) {
            rc = zb_diag_set(d, ZB_EFORMAT, "bundle: %s: %s", name,
                             r < 0 ? zip_file_strerror(zf) : "shorter than its stated size");
            goto out;
        }
        got += (size_t)r;
    }
    char extra;
    if (zip_fread(zf, &extra, 1) != 0) {
        rc = zb_diag_set(d, ZB_EFORMAT, "bundle: %s: longer than its stated size or corrupt",
                         name);
        goto out;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
    rc = 0;
out:
    if (zf != NULL) zip_fclose(zf);
    free(b);
    return rc;
}

/* --- manifest ----------------------------------------------------------- */

static int s_cmp_offset(const void *a, const void *b) {
    const zb_bundle_tensor_t *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

typedef struct {
    const char *name;
    size_t index;
} s_name_ref_t;

static int s_cmp_name(const void *a, const void *b) {
    return strcmp(((const s_name_ref_t *)a)->name, ((const s_name_ref_t *)b)->name);
}

/* Parses tensors[i].  q8 says whether the manifest declared the panel-q8
 * layout this build computes on. */
static int s_parse_tensor(const cJSON *e, size_t i, size_t w_size, int version, bool q8,
                          zb_bundle_tensor_t *t, zb_diag_t *d) {
    const cJSON *jn = cJSON_GetObjectItemCaseSensitive(e, "name");
    if (!cJSON_IsString(jn))
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensors[%zu] has no name", i);
    char pn[80];
    const char *name = zb_json_printable(jn->valuestring, pn, sizeof pn);
    size_t nl = strlen(jn->valuestring);
    if (nl == 0 || nl >= ZB_TENSOR_NAME_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "zbert.json: tensors[%zu] name has %zu bytes "
                           "(allowed 1..%d)", i, nl, ZB_TENSOR_NAME_MAX - 1);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(jd) || zb_safetensors_dtype_parse(jd->valuestring, &t->dtype) != 0 ||
        (t->dtype != ZB_ST_F32 && t->dtype != ZB_ST_I8 && t->dtype != ZB_ST_I32))
        return zb_diag_set(d, ZB_EUNSUPPORTED, "zbert.json: tensor %s: dtype must be \"F32\", "
                           "\"I8\" or \"I32\"", name);
    uint64_t n_elems;
    int rc = zb_json_shape(cJSON_GetObjectItemCaseSensitive(e, "shape"), 4, "zbert.json", name,
                           t->shape, &t->n_dims, &n_elems, d);
    if (rc != 0) return rc;
    /* layout: plain unless it says panel (version 2 on) or panel-q8 (declared) */
    t->layout = ZB_LAYOUT_PLAIN;
    const cJSON *jl = cJSON_GetObjectItemCaseSensitive(e, "layout");
    if (jl != NULL) {
        if (!cJSON_IsString(jl))
            return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: layout is not a string",
                               name);
        char pl[80];
        if (strcmp(jl->valuestring, ZB_GEMM_LAYOUT_NAME) == 0) {
            if (version < 2)
                return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: layout \"%s\" needs "
                                   "format version 2", name, ZB_GEMM_LAYOUT_NAME);
            t->layout = ZB_LAYOUT_PANEL;
        } else if (strcmp(jl->valuestring, ZB_QGEMM_LAYOUT_NAME) == 0) {
            if (!q8)
                return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: layout \"%s\" needs "
                                   "the manifest's layout_q8 object", name, ZB_QGEMM_LAYOUT_NAME);
            t->layout = ZB_LAYOUT_PANEL_Q8;
        } else if (strcmp(jl->valuestring, "plain") != 0) {
            return zb_diag_set(d, ZB_EUNSUPPORTED, "zbert.json: tensor %s: layout \"%s\" is "
                               "not \"plain\", \"%s\" or \"%s\"", name,
                               zb_json_printable(jl->valuestring, pl, sizeof pl),
                               ZB_GEMM_LAYOUT_NAME, ZB_QGEMM_LAYOUT_NAME);
        }
    }
    t->packed = t->layout != ZB_LAYOUT_PLAIN;
    /* int8 data is a panel-q8 matrix; panels of floats are F32 */
    const zb_safetensors_dtype_t want_dtype = t->layout == ZB_LAYOUT_PANEL_Q8 ? ZB_ST_I8
                                              : t->layout == ZB_LAYOUT_PANEL  ? ZB_ST_F32
                                              : t->dtype == ZB_ST_I8          ? ZB_ST_F32
                                                                              : t->dtype;
    if (t->dtype != want_dtype)
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: dtype %s in the %s layout",
                           name, zb_safetensors_dtype_name(t->dtype),
                           zb_tensor_layout_name(t->layout));
    uint64_t want = n_elems * zb_safetensors_dtype_size(t->dtype);
    if (t->packed) {
        /* whole panels of ZB_GEMM_NR rows: [K][16] floats, or [K4 / 4][16][4] bytes */
        uint64_t panels, stored;
        if (t->n_dims != 2)
            return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: a %s tensor has 2 "
                               "dimensions, not %d", name, zb_tensor_layout_name(t->layout),
                               t->n_dims);
        panels = ((uint64_t)t->shape[0] + ZB_GEMM_NR - 1) / ZB_GEMM_NR;
        const uint64_t k = t->layout == ZB_LAYOUT_PANEL
                               ? (uint64_t)t->shape[1] * 4
                               : ((uint64_t)t->shape[1] + 3) / 4 * 4;
        if (__builtin_mul_overflow(panels, (uint64_t)ZB_GEMM_NR * k, &stored) ||
            stored > SIZE_MAX)
            return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: packed size overflows",
                               name);
        want = stored;
    }
    uint64_t off, nbytes;
    if (!zb_json_uint(cJSON_GetObjectItemCaseSensitive(e, "offset"), &off) ||
        !zb_json_uint(cJSON_GetObjectItemCaseSensitive(e, "nbytes"), &nbytes))
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: tensor %s: offset and nbytes must be non-negative "
                           "integers",
                           name);
    if (nbytes != want)
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: tensor %s: nbytes %llu but its %sshape needs %llu", name,
                           (unsigned long long)nbytes, t->packed ? "packed " : "",
                           (unsigned long long)want);
    if (off % ZB_BUNDLE_ALIGN != 0)
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: tensor %s: offset %llu is not %d-byte aligned", name,
                           (unsigned long long)off, ZB_BUNDLE_ALIGN);
    if (off > w_size || nbytes > w_size - off)
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: tensor %s: [%llu,+%llu) runs past the %zu-byte %s",
                           name, (unsigned long long)off, (unsigned long long)nbytes, w_size,
                           S_WEIGHTS);
    t->n_elems = (size_t)n_elems;
    t->offset = (size_t)off;
    t->nbytes = (size_t)nbytes;
    return 0;
}

/* Checks a layout object {"name", "version", "panel_rows"[, "k_group"]} of
 * the manifest (under key) against the one this build computes on; k_group 0:
 * the layout has none. */
static int s_check_layout(const cJSON *lay, const char *key, const char *name, int version,
                          int k_group, zb_diag_t *d) {
    const cJSON *ln = cJSON_GetObjectItemCaseSensitive(lay, "name");
    uint64_t lv, rows, kg = 0;
    char pn[80];
    if (!cJSON_IsObject(lay) || !cJSON_IsString(ln))
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: %s needs to be an object with a name",
                           key);
    if (strcmp(ln->valuestring, name) != 0)
        return zb_diag_set(d, ZB_EUNSUPPORTED, "zbert.json: %s \"%s\" is not one this build "
                           "reads (\"%s\")", key,
                           zb_json_printable(ln->valuestring, pn, sizeof pn), name);
    if (!zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "version"), &lv) ||
        !zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "panel_rows"), &rows) ||
        (k_group > 0 && !zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "k_group"), &kg)))
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: %s needs integer version and "
                           "panel_rows%s", key, k_group > 0 ? " and k_group" : "");
    if (lv != (uint64_t)version || rows != ZB_GEMM_NR || kg != (uint64_t)k_group)
        return zb_diag_set(d, ZB_EUNSUPPORTED, "zbert.json: %s %s version %llu with %llu-row "
                           "panels; this build reads version %d with %d-row panels "
                           "(re-convert the model)", key, name, (unsigned long long)lv,
                           (unsigned long long)rows, version, ZB_GEMM_NR);
    return 0;
}

static int s_parse_manifest(zb_bundle_t *b, const char *json, size_t len, zb_diag_t *d) {
    int rc;
    char *cfg_txt = NULL;
    s_name_ref_t *refs = NULL;
    cJSON *root = zb_json_parse_exact(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: not a JSON object");
        goto out;
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(f) || strcmp(f->valuestring, ZB_BUNDLE_FORMAT) != 0) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: format is not \"%s\"", ZB_BUNDLE_FORMAT);
        goto out;
    }
    uint64_t version;
    if (!zb_json_uint(cJSON_GetObjectItemCaseSensitive(root, "version"), &version)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: version is not an integer");
        goto out;
    }
    if (version < ZB_BUNDLE_VERSION_PLAIN || version > ZB_BUNDLE_VERSION) {
        rc = zb_diag_set(d, ZB_EUNSUPPORTED, "zbert.json: format version %llu; this build "
                         "reads versions %d to %d", (unsigned long long)version,
                         ZB_BUNDLE_VERSION_PLAIN, ZB_BUNDLE_VERSION);
        goto out;
    }
    b->version = (int)version;
    if (version >= 2 &&
        (rc = s_check_layout(cJSON_GetObjectItemCaseSensitive(root, "layout"), "layout",
                             ZB_GEMM_LAYOUT_NAME, ZB_GEMM_LAYOUT_VERSION, 0, d)) != 0)
        goto out;
    /* int8 matrices need their layout declared too (an absent object: none) */
    const cJSON *lay_q8 = cJSON_GetObjectItemCaseSensitive(root, "layout_q8");
    const bool q8 = lay_q8 != NULL;
    if (q8 && (rc = s_check_layout(lay_q8, "layout_q8", ZB_QGEMM_LAYOUT_NAME,
                                   ZB_QGEMM_LAYOUT_VERSION, ZB_QGEMM_KGROUP, d)) != 0)
        goto out;
    /* the config is Hugging Face's own keys, validated by the same code as config.json */
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
    if (!cJSON_IsObject(cfg)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: config is not an object");
        goto out;
    }
    cfg_txt = cJSON_PrintUnformatted(cfg);
    if (cfg_txt == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "zbert.json: out of memory");
        goto out;
    }
    rc = zb_model_config_parse(cfg_txt, strlen(cfg_txt), "zbert.json config", &b->cfg, d);
    if (rc != 0) goto out;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "tokenizer");
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(tok, "lowercase");
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(tok, "strip_accents");
    if (!cJSON_IsObject(tok) || !cJSON_IsBool(lc) || !cJSON_IsBool(sa)) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "zbert.json: tokenizer needs boolean lowercase and strip_accents");
        goto out;
    }
    b->tok.lowercase = cJSON_IsTrue(lc);
    b->tok.strip_accents = cJSON_IsTrue(sa);

    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "weights");
    const cJSON *we = cJSON_GetObjectItemCaseSensitive(w, "entry");
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(w, "sha256");
    uint64_t wn;
    if (!cJSON_IsObject(w) || !cJSON_IsString(we) || strcmp(we->valuestring, S_WEIGHTS) != 0 ||
        !zb_json_uint(cJSON_GetObjectItemCaseSensitive(w, "nbytes"), &wn)) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "zbert.json: weights needs entry \"%s\" and an integer nbytes",
                         S_WEIGHTS);
        goto out;
    }
    if (wn != b->w_size) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: weights nbytes %llu, but the %s entry "
                         "holds %zu", (unsigned long long)wn, S_WEIGHTS, b->w_size);
        goto out;
    }
    bool hex_ok = cJSON_IsString(ws) && strlen(ws->valuestring) == 64;
    for (int i = 0; hex_ok && i < 64; i++)
        hex_ok = strchr("0123456789abcdef", ws->valuestring[i]) != NULL;
    if (!hex_ok) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "zbert.json: weights sha256 is not 64 lower-case hex digits");
        goto out;
    }
    memcpy(b->sha256, ws->valuestring, 65);
    memcpy(b->identity, b->sha256, 16);
    b->identity[16] = '\0';

    const cJSON *src = cJSON_GetObjectItemCaseSensitive(root, "source");
    if (src != NULL && !cJSON_IsString(src)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: source is not a string");
        goto out;
    }
    b->source = strdup(src ? src->valuestring : "");
    if (b->source == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "zbert.json: out of memory");
        goto out;
    }

    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    if (!cJSON_IsArray(ts)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensors is not an array");
        goto out;
    }
    size_t n = 0, name_bytes = 0;
    for (const cJSON *e = ts->child; e != NULL; e = e->next, n++) {
        if (n >= ZB_TENSORS_MAX) {
            rc = zb_diag_set(d, ZB_ELIMIT, "zbert.json: more than %d tensors", ZB_TENSORS_MAX);
            goto out;
        }
        const cJSON *jn = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (!cJSON_IsObject(e) || !cJSON_IsString(jn)) {
            rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensors[%zu] is not an object with a "
                             "name", n);
            goto out;
        }
        name_bytes += strlen(jn->valuestring) + 1;
    }
    b->t = calloc(n ? n : 1, sizeof *b->t);
    b->by_name = calloc(n ? n : 1, sizeof *b->by_name);
    b->names = malloc(name_bytes ? name_bytes : 1);
    refs = calloc(n ? n : 1, sizeof *refs);
    if (b->t == NULL || b->by_name == NULL || b->names == NULL || refs == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "zbert.json: out of memory for %zu tensors", n);
        goto out;
    }
    char *np = b->names;
    size_t i = 0;
    for (const cJSON *e = ts->child; e != NULL; e = e->next, i++) {
        if ((rc = s_parse_tensor(e, i, b->w_size, b->version, q8, &b->t[i], d)) != 0) goto out;
        const char *nm = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
        size_t nl = strlen(nm);
        memcpy(np, nm, nl + 1);
        b->t[i].name = np;
        b->t[i].data = (const unsigned char *)b->map + b->w_off + b->t[i].offset;
        np += nl + 1;
    }
    b->n = n;
    qsort(b->t, n, sizeof *b->t, s_cmp_offset);
    for (size_t k = 1; k < n; k++) {
        const zb_bundle_tensor_t *x = &b->t[k - 1], *y = &b->t[k];
        if (x->offset + x->nbytes > y->offset) {
            char px[80], py[80];
            rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensors %s and %s overlap",
                             zb_json_printable(x->name, px, sizeof px),
                             zb_json_printable(y->name, py, sizeof py));
            goto out;
        }
    }
    for (size_t k = 0; k < n; k++) refs[k] = (s_name_ref_t){b->t[k].name, k};
    qsort(refs, n, sizeof *refs, s_cmp_name);
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && strcmp(refs[k - 1].name, refs[k].name) == 0) {
            char pn[80];
            rc = zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s appears twice",
                             zb_json_printable(refs[k].name, pn, sizeof pn));
            goto out;
        }
        b->by_name[k] = refs[k].index;
    }
    rc = 0;
out:
    free(refs);
    cJSON_free(cfg_txt);
    cJSON_Delete(root);
    return rc;
}

/* --- open / close --------------------------------------------------------- */

int zb_bundle_open(const char *path, zb_bundle_t **out, zb_diag_t *d) {
    int rc;
    int fd = -1;
    zip_t *za = NULL;
    zb_bundle_t *b = NULL;
    char *manifest = NULL;
    size_t manifest_len = 0;

    if (out == NULL || path == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: no path");
    *out = NULL;
    b = calloc(1, sizeof *b);
    if (b == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        rc = zb_diag_set(d, e == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: cannot open: %s", path,
                         strerror(e));
        goto out;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = zb_diag_set(d, ZB_EIO, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size < S_EOCD_LEN || (uint64_t)sb.st_size > SIZE_MAX) {
        rc = zb_diag_set(d, ZB_EFORMAT, "%s: %lld bytes is not a bundle", path,
                         (long long)sb.st_size);
        goto out;
    }
    b->map_len = (size_t)sb.st_size;
    b->map = mmap(NULL, b->map_len, PROT_READ, MAP_SHARED, fd, 0);
    if (b->map == MAP_FAILED) {
        b->map = NULL;
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot map: %s", path, strerror(errno));
        goto out;
    }
    rc = s_locate_weights(b->map, b->map_len, &b->w_off, &b->w_size, &b->w_crc, d);
    if (rc != 0) goto out;
    if ((rc = s_zip_open_image(b->map, b->map_len, &za, d)) != 0) goto out;
    /* libzip's reading of the directory must agree with ours */
    zip_stat_t st;
    zip_int64_t wi = zip_name_locate(za, S_WEIGHTS, 0);
    if (wi < 0 || zip_stat_index(za, (zip_uint64_t)wi, 0, &st) != 0 ||
        !(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_METHOD) ||
        st.size != b->w_size || st.comp_method != ZIP_CM_STORE) {
        rc = zb_diag_set(d, ZB_EFORMAT, "bundle: libzip sees %s differently", S_WEIGHTS);
        goto out;
    }
    if ((rc = s_zip_read(za, S_MANIFEST, ZB_MODEL_TEXT_FILE_MAX, &manifest, &manifest_len, d)))
        goto out;
    if ((rc = s_zip_read(za, S_VOCAB, ZB_MODEL_TEXT_FILE_MAX, &b->vocab, &b->vocab_len, d)))
        goto out;
    if ((rc = s_parse_manifest(b, manifest, manifest_len, d)) != 0) goto out;
    *out = b;
    b = NULL;
    rc = zb_diag_set(d, 0, NULL);
out:
    if (za != NULL) zip_discard(za);
    if (fd >= 0) close(fd);
    free(manifest);
    zb_bundle_close(&b);
    return rc;
}

void zb_bundle_close(zb_bundle_t **pb) {
    if (pb == NULL || *pb == NULL) return;
    zb_bundle_t *b = *pb;
    if (b->map != NULL) munmap(b->map, b->map_len);
    free(b->vocab);
    free(b->source);
    free(b->t);
    free(b->by_name);
    free(b->names);
    free(b);
    *pb = NULL;
}

static void s_hex(const unsigned char *h, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[h[i] >> 4];
        out[2 * i + 1] = digits[h[i] & 15];
    }
    out[2 * n] = '\0';
}

int zb_bundle_verify(const zb_bundle_t *b, zb_diag_t *d) {
    if (b == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: none");
    if (sodium_init() < 0) return zb_diag_set(d, ZB_EIO, "bundle: libsodium failed to start");
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256(h, (const unsigned char *)b->map + b->w_off, b->w_size);
    s_hex(h, sizeof h, hex);
    if (strcmp(hex, b->sha256) != 0)
        return zb_diag_set(d, ZB_ECHECKSUM,
                           "bundle: %s has sha256 %.16s..., the manifest says %.16s...",
                           S_WEIGHTS, hex, b->sha256);
    /* reading every entry to its end makes libzip check each CRC-32 */
    zip_t *za = NULL;
    int rc = s_zip_open_image(b->map, b->map_len, &za, d);
    if (rc != 0) return rc;
    zip_int64_t n = zip_get_num_entries(za, 0);
    size_t chunk_len = 1 << 16;
    char *chunk = malloc(chunk_len);
    if (chunk == NULL) rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    for (zip_int64_t i = 0; rc == 0 && i < n; i++) {
        zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
        const char *name = zip_get_name(za, (zip_uint64_t)i, 0);
        if (zf == NULL) {
            rc = zb_diag_set(d, ZB_EFORMAT, "bundle: entry %s: %s", name ? name : "?",
                             zip_strerror(za));
            break;
        }
        zip_int64_t r;
        while ((r = zip_fread(zf, chunk, chunk_len)) > 0) {}
        if (r < 0) {
            zip_error_t *ze = zip_file_get_error(zf);
            rc = zb_diag_set(d, zip_error_code_zip(ze) == ZIP_ER_CRC ? ZB_ECHECKSUM : ZB_EFORMAT,
                             "bundle: entry %s: %s", name ? name : "?", zip_file_strerror(zf));
        }
        zip_fclose(zf);
    }
    free(chunk);
    zip_discard(za);
    return rc;
}

/* --- writing ------------------------------------------------------------ */

/* Bytes a tensor of a spec occupies: plain ones their elements (whatever
 * n_stored says), packed ones their packed size. */
static size_t s_stored_bytes(const zb_model_tensor_t *t) {
    return (t->layout != ZB_LAYOUT_PLAIN ? t->n_stored : t->n_elems) *
           zb_safetensors_dtype_size(t->dtype);
}

/* Whether a spec tensor's dtype, layout and stored size agree. */
static bool s_spec_tensor_ok(const zb_model_tensor_t *t) {
    switch (t->layout) {
    case ZB_LAYOUT_PLAIN: return t->dtype == ZB_ST_F32 || t->dtype == ZB_ST_I32;
    case ZB_LAYOUT_PANEL:
    case ZB_LAYOUT_PANEL_Q8:
        if (t->n_dims != 2 || t->shape[0] < 1 || t->shape[1] < 1 ||
            t->shape[0] > ZB_INTERMEDIATE_MAX * 3 || t->shape[1] > ZB_INTERMEDIATE_MAX)
            return false;
        if (t->layout == ZB_LAYOUT_PANEL)
            return t->dtype == ZB_ST_F32 &&
                   t->n_stored == zb_gemm_packed_floats((int)t->shape[0], (int)t->shape[1]);
        return t->dtype == ZB_ST_I8 &&
               t->n_stored == zb_qgemm_packed_bytes((int)t->shape[0], (int)t->shape[1]);
    }
    return false;
}

int zb_bundle_write(const char *path, const zb_bundle_spec_t *s, zb_diag_t *d) {
    int rc;
    unsigned char *blob = NULL;
    size_t *offs = NULL;
    cJSON *root = NULL;
    char *manifest = NULL;
    zip_t *za = NULL;
    zb_bundle_t *check = NULL;

    if (path == NULL || s == NULL || s->config == NULL || s->tokenizer == NULL ||
        s->vocab == NULL || (s->tensors == NULL && s->n_tensors > 0))
        return zb_diag_set(d, ZB_EINVAL, "bundle: incomplete spec");
    if (s->n_tensors > ZB_TENSORS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "bundle: %zu tensors, more than %d", s->n_tensors,
                           ZB_TENSORS_MAX);
    if (sodium_init() < 0) return zb_diag_set(d, ZB_EIO, "bundle: libsodium failed to start");

    /* layout: each tensor at the next ZB_BUNDLE_ALIGN boundary */
    offs = calloc(s->n_tensors ? s->n_tensors : 1, sizeof *offs);
    if (offs == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    size_t total = 0;
    bool any_q8 = false;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const zb_model_tensor_t *t = &s->tensors[i];
        size_t nl = strnlen(t->name, sizeof t->name);
        size_t prod = 1;
        for (int k = 0; k < t->n_dims && k < 2; k++) prod *= (size_t)t->shape[k];
        if (nl == 0 || nl >= sizeof t->name || t->n_dims < 1 || t->n_dims > 2 ||
            t->shape[0] < 0 || (t->n_dims == 2 && t->shape[1] < 0) || prod != t->n_elems ||
            (t->data == NULL && t->n_elems > 0) || !s_spec_tensor_ok(t)) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: tensor %zu is malformed", i);
            goto out;
        }
        size_t start = (total + ZB_BUNDLE_ALIGN - 1) / ZB_BUNDLE_ALIGN * ZB_BUNDLE_ALIGN;
        size_t nbytes;
        if (t->layout == ZB_LAYOUT_PANEL_Q8) any_q8 = true;
        nbytes = s_stored_bytes(t);
        if (start < total || __builtin_add_overflow(start, nbytes, &total) || total > ZB_BUNDLE_WEIGHTS_MAX) {
            rc = zb_diag_set(d, ZB_ELIMIT, "bundle: weights exceed %u bytes (no zip64)",
                             ZB_BUNDLE_WEIGHTS_MAX);
            goto out;
        }
        offs[i] = start;
    }
    blob = calloc(total ? total : 1, 1);
    if (blob == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory for %zu bytes of weights", total);
        goto out;
    }
    for (size_t i = 0; i < s->n_tensors; i++)
        if (s_stored_bytes(&s->tensors[i]) > 0)
            memcpy(blob + offs[i], s->tensors[i].data, s_stored_bytes(&s->tensors[i]));
    unsigned char h[crypto_hash_sha256_BYTES];
    char hex[65];
    crypto_hash_sha256(h, blob, total);
    s_hex(h, sizeof h, hex);

    /* manifest */
    const zb_bert_config_t *c = s->config;
    root = cJSON_CreateObject();
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON *tok = cJSON_AddObjectToObject(root, "tokenizer");
    cJSON *w = cJSON_AddObjectToObject(root, "weights");
    cJSON *lay = cJSON_AddObjectToObject(root, "layout");
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    if (root == NULL || cfg == NULL || tok == NULL || w == NULL || lay == NULL || ts == NULL)
        goto oom;
    bool ok = cJSON_AddStringToObject(root, "format", ZB_BUNDLE_FORMAT) &&
              cJSON_AddNumberToObject(root, "version", ZB_BUNDLE_VERSION) &&
              cJSON_AddStringToObject(lay, "name", ZB_GEMM_LAYOUT_NAME) &&
              cJSON_AddNumberToObject(lay, "version", ZB_GEMM_LAYOUT_VERSION) &&
              cJSON_AddNumberToObject(lay, "panel_rows", ZB_GEMM_NR) &&
              cJSON_AddStringToObject(root, "source", s->source ? s->source : "") &&
              cJSON_AddStringToObject(cfg, "model_type", "bert") &&
              cJSON_AddNumberToObject(cfg, "vocab_size", c->vocab_size) &&
              cJSON_AddNumberToObject(cfg, "hidden_size", c->hidden) &&
              cJSON_AddNumberToObject(cfg, "num_hidden_layers", c->layers) &&
              cJSON_AddNumberToObject(cfg, "num_attention_heads", c->heads) &&
              cJSON_AddNumberToObject(cfg, "intermediate_size", c->intermediate) &&
              cJSON_AddNumberToObject(cfg, "max_position_embeddings", c->max_positions) &&
              cJSON_AddNumberToObject(cfg, "type_vocab_size", c->type_vocab_size) &&
              cJSON_AddNumberToObject(cfg, "layer_norm_eps", (double)c->layer_norm_eps) &&
              cJSON_AddStringToObject(cfg, "hidden_act", "gelu") &&
              cJSON_AddBoolToObject(tok, "lowercase", s->tokenizer->lowercase) &&
              cJSON_AddBoolToObject(tok, "strip_accents", s->tokenizer->strip_accents) &&
              cJSON_AddStringToObject(w, "entry", S_WEIGHTS) &&
              cJSON_AddNumberToObject(w, "nbytes", (double)total) &&
              cJSON_AddStringToObject(w, "sha256", hex);
    for (size_t i = 0; ok && i < s->n_tensors; i++) {
        const zb_model_tensor_t *t = &s->tensors[i];
        cJSON *e = cJSON_CreateObject();
        if (e == NULL || !cJSON_AddItemToArray(ts, e)) {
            cJSON_Delete(e);
            ok = false;
            break;
        }
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        ok = sh != NULL;
        for (int k = 0; ok && k < t->n_dims; k++) {
            cJSON *v = cJSON_CreateNumber((double)t->shape[k]);
            ok = v != NULL && cJSON_AddItemToArray(sh, v);
        }
        ok = ok && cJSON_AddStringToObject(e, "name", t->name) &&
             cJSON_AddStringToObject(e, "dtype", zb_safetensors_dtype_name(t->dtype)) &&
             cJSON_AddStringToObject(e, "layout", zb_tensor_layout_name(t->layout)) &&
             cJSON_AddNumberToObject(e, "offset", (double)offs[i]) &&
             cJSON_AddNumberToObject(e, "nbytes", (double)s_stored_bytes(t));
    }
    if (ok && any_q8) {
        cJSON *lq = cJSON_AddObjectToObject(root, "layout_q8");
        ok = lq != NULL && cJSON_AddStringToObject(lq, "name", ZB_QGEMM_LAYOUT_NAME) &&
             cJSON_AddNumberToObject(lq, "version", ZB_QGEMM_LAYOUT_VERSION) &&
             cJSON_AddNumberToObject(lq, "panel_rows", ZB_GEMM_NR) &&
             cJSON_AddNumberToObject(lq, "k_group", ZB_QGEMM_KGROUP);
    }
    if (!ok) goto oom;
    manifest = cJSON_Print(root);
    if (manifest == NULL) goto oom;

    /* the archive: weights.bin first and stored, its local header padded so
     * that its data starts at a multiple of ZB_BUNDLE_ALIGN: 30 fixed bytes +
     * name + 4-byte extra field header + u16 alignment + zeros */
    int zerr = 0;
    za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &zerr);
    if (za == NULL) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, zerr);
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot create: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        goto out;
    }
    size_t hdr = S_LOCAL_LEN + strlen(S_WEIGHTS) + 4 + 2;
    unsigned char pad[2 + ZB_BUNDLE_ALIGN] = {0};
    size_t pad_len = 2 + (ZB_BUNDLE_ALIGN - hdr % ZB_BUNDLE_ALIGN) % ZB_BUNDLE_ALIGN;
    pad[0] = ZB_BUNDLE_ALIGN & 0xff;
    pad[1] = ZB_BUNDLE_ALIGN >> 8;
    zip_source_t *sw = zip_source_buffer(za, blob, total, 0);
    zip_int64_t wi = sw ? zip_file_add(za, S_WEIGHTS, sw, ZIP_FL_ENC_UTF_8) : -1;
    if (wi < 0) zip_source_free(sw);
    if (wi != 0 || zip_set_file_compression(za, 0, ZIP_CM_STORE, 0) != 0 ||
        zip_file_extra_field_set(za, 0, ZB_BUNDLE_ALIGN_FIELD, ZIP_EXTRA_FIELD_NEW, pad,
                                 (zip_uint16_t)pad_len, ZIP_FL_LOCAL) != 0) {
        rc = zb_diag_set(d, ZB_EIO, "%s: %s: %s", path, S_WEIGHTS, zip_strerror(za));
        goto out;
    }
    const char *names[2] = {S_MANIFEST, S_VOCAB};
    const void *bufs[2] = {manifest, s->vocab};
    size_t lens[2] = {strlen(manifest), s->vocab_len};
    for (int i = 0; i < 2; i++) {
        zip_source_t *src = zip_source_buffer(za, bufs[i], lens[i], 0);
        if (src == NULL || zip_file_add(za, names[i], src, ZIP_FL_ENC_UTF_8) < 0) {
            zip_source_free(src);
            rc = zb_diag_set(d, ZB_EIO, "%s: %s: %s", path, names[i], zip_strerror(za));
            goto out;
        }
    }
    if (zip_close(za) != 0) {
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot write: %s", path, zip_strerror(za));
        goto out;
    }
    za = NULL;
    /* prove the layout (alignment above all) before calling it a bundle */
    rc = zb_bundle_open(path, &check, d);
    if (rc != 0) {
        unlink(path);
        goto out;
    }
    rc = 0;
    goto out;
oom:
    rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory building the manifest");
out:
    if (za != NULL) zip_discard(za);
    zb_bundle_close(&check);
    cJSON_free(manifest);
    cJSON_Delete(root);
    free(blob);
    free(offs);
    return rc;
}

int zb_bundle_write_model(const char *path, const zb_model_t *m, const char *source,
                          zb_diag_t *d) {
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: no model");
    if (zb_model_is_int8(m))
        return zb_diag_set(d, ZB_EINVAL, "bundle: the model is int8; its fp32 weights are gone "
                           "(convert from the fp32 source)");
    int n = zb_model_n_packed(zb_model_config(m));
    zb_model_tensor_t *ts = calloc((size_t)n, sizeof *ts);
    if (ts == NULL) return zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
    for (int i = 0; i < n; i++) zb_model_packed_at(m, i, &ts[i]);
    zb_bundle_spec_t spec = {
        .config = zb_model_config(m),
        .tokenizer = zb_model_tokenizer_config(m),
        .tensors = ts,
        .n_tensors = (size_t)n,
        .source = source,
    };
    spec.vocab = zb_model_vocab(m, &spec.vocab_len);
    int rc = zb_bundle_write(path, &spec, d);
    free(ts);
    return rc;
}

/* The packed-table tensor of a given name, or NULL. */
static const zb_model_tensor_t *s_find_spec(const zb_model_tensor_t *ts, int n,
                                            const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(ts[i].name, name) == 0) return &ts[i];
    return NULL;
}

/* SmoothQuant's column multipliers (alpha 0.5) for a matrix w [rows][cols]
 * whose inputs reached act_max[cols]: c_k = sqrt(max|x_k| / max_j |w_jk|),
 * so that both sides of the product end up with the same range per channel;
 * 1 where either is 0. */
static void s_smooth_cols(const float *w, int rows, int cols, const float *act_max,
                          float *col) {
    for (int k = 0; k < cols; k++) col[k] = 0.0f;
    for (int j = 0; j < rows; j++)
        for (int k = 0; k < cols; k++) {
            const float v = fabsf(w[(size_t)j * (size_t)cols + (size_t)k]);
            if (v > col[k]) col[k] = v;
        }
    for (int k = 0; k < cols; k++) {
        const double c = act_max[k] > 0.0f && col[k] > 0.0f ? sqrt((double)act_max[k] / col[k])
                                                           : 1.0;
        col[k] = (float)(c < 1e-4 ? 1e-4 : c > 1e4 ? 1e4 : c);
    }
}

int zb_bundle_write_model_int8(const char *path, const zb_model_t *m, const char *source,
                               const float *const *act_max, zb_diag_t *d) {
    if (m == NULL) return zb_diag_set(d, ZB_EINVAL, "bundle: no model");
    const zb_bert_config_t *c = zb_model_config(m);
    const int n = zb_model_n_int8(c), np = zb_model_n_packed(c);
    const bool again = zb_model_is_int8(m); /* already quantized: written as it is */
    int rc = 0;
    zb_model_tensor_t *ts = calloc((size_t)n, sizeof *ts);
    zb_model_tensor_t *pts = calloc((size_t)np, sizeof *pts);
    void **owned = calloc((size_t)n, sizeof *owned);
    float *plain = NULL, *col = NULL;
    int lin = 0; /* quantized matrices so far: layer * 4 + which */
    if (ts == NULL || pts == NULL || owned == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory");
        goto out;
    }
    for (int i = 0; i < np && !again; i++) zb_model_packed_at(m, i, &pts[i]);
    for (int i = 0; i < n; i++) {
        if (again) {
            zb_model_int8_at(m, i, &ts[i]);
            continue;
        }
        zb_model_int8_spec(c, i, &ts[i]);
        if (ts[i].layout != ZB_LAYOUT_PANEL_Q8) {
            const zb_model_tensor_t *p = s_find_spec(pts, np, ts[i].name);
            if (p != NULL) ts[i].data = p->data; /* weight_scale, weight_sum: below */
            continue;
        }
        /* W, then W_scale, W_sum and W_smooth (model.h's order): quantized
         * from the packed fp32 W, its columns smoothed when calibrated */
        const zb_model_tensor_t *p = s_find_spec(pts, np, ts[i].name);
        const int rows = (int)ts[i].shape[0], cols = (int)ts[i].shape[1];
        if (p == NULL || i + 3 >= n || p->layout != ZB_LAYOUT_PANEL) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: no fp32 matrix %s to quantize", ts[i].name);
            goto out;
        }
        for (int k = 1; k <= 3; k++) zb_model_int8_spec(c, i + k, &ts[i + k]);
        free(plain);
        free(col);
        plain = malloc((size_t)rows * (size_t)cols * sizeof *plain);
        col = malloc((size_t)cols * sizeof *col);
        int8_t *q = NULL;
        if (plain == NULL || col == NULL || posix_memalign(&owned[i], 64, ts[i].nbytes) != 0 ||
            (owned[i + 1] = malloc(ts[i + 1].nbytes)) == NULL ||
            (owned[i + 2] = malloc(ts[i + 2].nbytes)) == NULL ||
            (owned[i + 3] = malloc(ts[i + 3].nbytes)) == NULL) {
            rc = zb_diag_set(d, ZB_ENOMEM, "bundle: out of memory quantizing %s", ts[i].name);
            goto out;
        }
        q = owned[i];
        memset(q, 0, ts[i].nbytes);
        zb_gemm_unpack(p->data, rows, cols, plain, (size_t)cols);
        float *smooth = owned[i + 3];
        if (act_max != NULL) {
            s_smooth_cols(plain, rows, cols, act_max[lin], col);
            for (int k = 0; k < cols; k++) smooth[k] = 1.0f / col[k];
        } else {
            for (int k = 0; k < cols; k++) smooth[k] = 1.0f;
        }
        if (zb_qgemm_quantize_rows(plain, rows, cols, (size_t)cols, act_max ? col : NULL, 0, q,
                                   owned[i + 1], owned[i + 2]) != 0) {
            rc = zb_diag_set(d, ZB_EINVAL, "bundle: %s holds an infinity or NaN", ts[i].name);
            goto out;
        }
        for (int k = 0; k < 4; k++) ts[i + k].data = owned[i + k];
        i += 3;
        lin++;
    }
    zb_bundle_spec_t spec = {
        .config = c,
        .tokenizer = zb_model_tokenizer_config(m),
        .tensors = ts,
        .n_tensors = (size_t)n,
        .source = source,
    };
    spec.vocab = zb_model_vocab(m, &spec.vocab_len);
    rc = zb_bundle_write(path, &spec, d);
out:
    for (int i = 0; owned != NULL && i < n; i++) free(owned[i]);
    free(owned);
    free(plain);
    free(col);
    free(pts);
    free(ts);
    return rc;
}

/* --- accessors ------------------------------------------------------------- */

const zb_bert_config_t *zb_bundle_config(const zb_bundle_t *b) {
    return &b->cfg;
}

const zb_tokenizer_config_t *zb_bundle_tokenizer_config(const zb_bundle_t *b) {
    return &b->tok;
}

const char *zb_bundle_vocab(const zb_bundle_t *b, size_t *len) {
    if (len) *len = b->vocab_len;
    return b->vocab;
}

const char *zb_bundle_source(const zb_bundle_t *b) {
    return b->source;
}

const char *zb_bundle_sha256(const zb_bundle_t *b) {
    return b->sha256;
}

const char *zb_bundle_identity(const zb_bundle_t *b) {
    return b->identity;
}

int zb_bundle_version(const zb_bundle_t *b) {
    return b->version;
}

size_t zb_bundle_n_tensors(const zb_bundle_t *b) {
    return b ? b->n : 0;
}

const zb_bundle_tensor_t *zb_bundle_tensor_at(const zb_bundle_t *b, size_t i) {
    if (b == NULL || i >= b->n) return NULL;
    return &b->t[i];
}

const zb_bundle_tensor_t *zb_bundle_find(const zb_bundle_t *b, const char *name) {
    if (b == NULL || name == NULL) return NULL;
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const zb_bundle_tensor_t *t = &b->t[b->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const void *zb_bundle_map(const zb_bundle_t *b, size_t *len) {
    if (len) *len = b->map_len;
    return b->map;
}

size_t zb_bundle_weights_offset(const zb_bundle_t *b) {
    return b->w_off;
}

size_t zb_bundle_weights_size(const zb_bundle_t *b) {
    return b->w_size;
}
