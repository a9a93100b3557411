/*
 * bundle.c -- opens and verifies zbert bundles (see bundle.h for the format).
 *
 * Opening maps the whole file once and does everything from that mapping:
 * libzip reads the manifest and vocabulary through a buffer source over it
 * (bounded by their sizes), and the weights are located by our own parse of
 * the zip end record, central directory and weights.bin's local header,
 * because libzip does not expose where an entry's data starts.  Every field
 * read from the file is range-checked before it is used as an offset.
 *
 * Bundles are written by convert.c.
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

/* zip record layouts (APPNOTE 4.3): signatures and fixed sizes */
#define S_SIG_LOCAL      0x04034b50u
#define S_SIG_CENTRAL    0x02014b50u
#define S_SIG_EOCD       0x06054b50u
#define S_SIG_EOCD64_LOC 0x07064b50u
#define S_CENTRAL_LEN    46u
#define S_EOCD_LEN       22u

struct zb_bundle {
    zb_config_t cfg;
    zb_config_tokenizer_t tok;
    char *vocab; /* vocab.txt bytes, NUL appended */
    size_t vocab_len;
    char *source;
    char sha256[65];
    char identity[17];
    int version;           /* manifest format version (1 or 2) */
    zb_bundle_tensor_t *t; /* [n], sorted by offset */
    size_t n;
    size_t *by_name; /* [n] indices into t, sorted by name */
    char *names;     /* all tensor names, one block */
    void *map;       /* the whole file */
    size_t map_len;
    size_t w_off; /* weights.bin data: file offset and size */
    size_t w_size;
    uint32_t w_crc;
};

const char *zb_bundle_layout_name(zb_bundle_layout_t l) {
    switch (l) {
    case ZB_BUNDLE_LAYOUT_PLAIN:
        return "plain";
    case ZB_BUNDLE_LAYOUT_PANEL:
        return ZB_GEMM_LAYOUT_NAME;
    case ZB_BUNDLE_LAYOUT_PANEL_Q8:
        return ZB_QGEMM_LAYOUT_NAME;
    }
    return "?";
}

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
static int s_locate_weights(const unsigned char *p, size_t len, size_t *data_off, size_t *size,
                            uint32_t *crc, zb_diag_t *d) {
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
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "bundle: multi-disk zip archives are not "
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
            return zb_diag_set(d, ZB_EFORMAT, "bundle: central directory entry %u is malformed", i);
        const unsigned char *c = p + off;
        size_t ent = S_CENTRAL_LEN + (size_t)s_u16(c + 28) + s_u16(c + 30) + s_u16(c + 32);
        if (ent > cd_end - off)
            return zb_diag_set(d, ZB_EFORMAT,
                               "bundle: central directory entry %u runs past the directory", i);
        if (s_u16(c + 28) == strlen(ZB_BUNDLE_ENTRY_WEIGHTS) &&
            memcmp(c + S_CENTRAL_LEN, ZB_BUNDLE_ENTRY_WEIGHTS, strlen(ZB_BUNDLE_ENTRY_WEIGHTS)) ==
                0) {
            if (w != NULL)
                return zb_diag_set(d, ZB_EFORMAT, "bundle: two %s entries",
                                   ZB_BUNDLE_ENTRY_WEIGHTS);
            w = c;
        }
        off += ent;
    }
    if (w == NULL)
        return zb_diag_set(d, ZB_ENOTFOUND, "bundle: no %s entry", ZB_BUNDLE_ENTRY_WEIGHTS);

    uint16_t flags = s_u16(w + 8), method = s_u16(w + 10);
    uint32_t wcrc = s_u32(w + 16), csize = s_u32(w + 20), usize = s_u32(w + 24);
    uint32_t lho = s_u32(w + 42);
    if (flags & 1u)
        return zb_diag_set(d, ZB_EUNSUPPORTED, "bundle: %s is encrypted", ZB_BUNDLE_ENTRY_WEIGHTS);
    if (method != 0)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "bundle: %s is compressed (zip method %u); it must be stored so it "
                           "can be mapped",
                           ZB_BUNDLE_ENTRY_WEIGHTS, method);
    if (csize != usize)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: stored %s has size %u but %u bytes of data",
                           ZB_BUNDLE_ENTRY_WEIGHTS, usize, csize);
    if ((size_t)lho + ZB_BUNDLE_ZIP_LOCAL_LEN > cd_off)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header at %u runs into the central directory",
                           ZB_BUNDLE_ENTRY_WEIGHTS, lho);
    const unsigned char *l = p + lho;
    if (s_u32(l) != S_SIG_LOCAL)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: no local file header at %u for %s", lho,
                           ZB_BUNDLE_ENTRY_WEIGHTS);
    uint16_t lflags = s_u16(l + 6), lmethod = s_u16(l + 8);
    uint16_t lnlen = s_u16(l + 26), lxlen = s_u16(l + 28);
    if (lflags & 8u)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "bundle: %s local header defers its sizes to a data descriptor",
                           ZB_BUNDLE_ENTRY_WEIGHTS);
    if (lmethod != method || s_u32(l + 14) != wcrc || s_u32(l + 18) != csize ||
        s_u32(l + 22) != usize)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header disagrees with the central directory "
                           "(method, crc or sizes)",
                           ZB_BUNDLE_ENTRY_WEIGHTS);
    size_t data = (size_t)lho + ZB_BUNDLE_ZIP_LOCAL_LEN + lnlen + lxlen;
    if (data > cd_off)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s local header (%u name + %u extra bytes) runs into the "
                           "central directory",
                           ZB_BUNDLE_ENTRY_WEIGHTS, lnlen, lxlen);
    if (lnlen != strlen(ZB_BUNDLE_ENTRY_WEIGHTS) ||
        memcmp(l + ZB_BUNDLE_ZIP_LOCAL_LEN, ZB_BUNDLE_ENTRY_WEIGHTS, lnlen) != 0)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: the local header at %u names another file than %s", lho,
                           ZB_BUNDLE_ENTRY_WEIGHTS);
    if (usize > cd_off - data)
        return zb_diag_set(d, ZB_EFORMAT,
                           "bundle: %s data [%zu,+%u) runs into the central directory at %u",
                           ZB_BUNDLE_ENTRY_WEIGHTS, data, usize, cd_off);
    if (data % ZB_BUNDLE_ALIGN != 0)
        return zb_diag_set(d, ZB_EFORMAT, "bundle: %s data starts at byte %zu, not %d-byte aligned",
                           ZB_BUNDLE_ENTRY_WEIGHTS, data, ZB_BUNDLE_ALIGN);
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
        int rc = zb_diag_set(d, zip_error_code_zip(&ze) == ZIP_ER_MEMORY ? ZB_ENOMEM : ZB_EFORMAT,
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
        return zb_diag_set(d, ZB_EFORMAT, "bundle: %s: cannot stat: %s", name, zip_strerror(za));
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
        rc = zb_diag_set(d, ZB_EFORMAT, "bundle: %s: longer than its stated size or corrupt", name);
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
        return zb_diag_set(d, ZB_ELIMIT,
                           "zbert.json: tensors[%zu] name has %zu bytes "
                           "(allowed 1..%d)",
                           i, nl, ZB_TENSOR_NAME_MAX - 1);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!cJSON_IsString(jd) || zb_safetensors_dtype_parse(jd->valuestring, &t->dtype) != 0 ||
        (t->dtype != ZB_SAFETENSORS_F32 && t->dtype != ZB_SAFETENSORS_I8 &&
         t->dtype != ZB_SAFETENSORS_I32))
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "zbert.json: tensor %s: dtype must be \"F32\", "
                           "\"I8\" or \"I32\"",
                           name);
    uint64_t n_elems;
    int rc = zb_json_shape(cJSON_GetObjectItemCaseSensitive(e, "shape"), 4, "zbert.json", name,
                           t->shape, &t->n_dims, &n_elems, d);
    if (rc != 0) return rc;
    /* layout: plain unless it says panel (version 2 on) or panel-q8 (declared) */
    t->layout = ZB_BUNDLE_LAYOUT_PLAIN;
    const cJSON *jl = cJSON_GetObjectItemCaseSensitive(e, "layout");
    if (jl != NULL) {
        if (!cJSON_IsString(jl))
            return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: layout is not a string",
                               name);
        char pl[80];
        if (strcmp(jl->valuestring, ZB_GEMM_LAYOUT_NAME) == 0) {
            if (version < 2)
                return zb_diag_set(d, ZB_EFORMAT,
                                   "zbert.json: tensor %s: layout \"%s\" needs "
                                   "format version 2",
                                   name, ZB_GEMM_LAYOUT_NAME);
            t->layout = ZB_BUNDLE_LAYOUT_PANEL;
        } else if (strcmp(jl->valuestring, ZB_QGEMM_LAYOUT_NAME) == 0) {
            if (!q8)
                return zb_diag_set(d, ZB_EFORMAT,
                                   "zbert.json: tensor %s: layout \"%s\" needs "
                                   "the manifest's layout_q8 object",
                                   name, ZB_QGEMM_LAYOUT_NAME);
            t->layout = ZB_BUNDLE_LAYOUT_PANEL_Q8;
        } else if (strcmp(jl->valuestring, "plain") != 0) {
            return zb_diag_set(d, ZB_EUNSUPPORTED,
                               "zbert.json: tensor %s: layout \"%s\" is "
                               "not \"plain\", \"%s\" or \"%s\"",
                               name, zb_json_printable(jl->valuestring, pl, sizeof pl),
                               ZB_GEMM_LAYOUT_NAME, ZB_QGEMM_LAYOUT_NAME);
        }
    }
    t->packed = t->layout != ZB_BUNDLE_LAYOUT_PLAIN;
    /* int8 data is a panel-q8 matrix; panels of floats are F32 */
    const zb_safetensors_dtype_t want_dtype =
        t->layout == ZB_BUNDLE_LAYOUT_PANEL_Q8 ? ZB_SAFETENSORS_I8
        : t->layout == ZB_BUNDLE_LAYOUT_PANEL  ? ZB_SAFETENSORS_F32
        : t->dtype == ZB_SAFETENSORS_I8        ? ZB_SAFETENSORS_F32
                                               : t->dtype;
    if (t->dtype != want_dtype)
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: dtype %s in the %s layout", name,
                           zb_safetensors_dtype_name(t->dtype), zb_bundle_layout_name(t->layout));
    uint64_t want = n_elems * zb_safetensors_dtype_size(t->dtype);
    if (t->packed) {
        /* whole panels of ZB_GEMM_NR rows: [K][16] floats, or [K4 / 4][16][4] bytes */
        uint64_t panels, stored;
        if (t->n_dims != 2)
            return zb_diag_set(d, ZB_EFORMAT,
                               "zbert.json: tensor %s: a %s tensor has 2 "
                               "dimensions, not %d",
                               name, zb_bundle_layout_name(t->layout), t->n_dims);
        panels = ((uint64_t)t->shape[0] + ZB_GEMM_NR - 1) / ZB_GEMM_NR;
        const uint64_t k = t->layout == ZB_BUNDLE_LAYOUT_PANEL
                               ? (uint64_t)t->shape[1] * 4
                               : ((uint64_t)t->shape[1] + 3) / 4 * 4;
        if (__builtin_mul_overflow(panels, (uint64_t)ZB_GEMM_NR * k, &stored) || stored > SIZE_MAX)
            return zb_diag_set(d, ZB_EFORMAT, "zbert.json: tensor %s: packed size overflows", name);
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
        return zb_diag_set(
            d, ZB_EFORMAT, "zbert.json: tensor %s: nbytes %llu but its %sshape needs %llu", name,
            (unsigned long long)nbytes, t->packed ? "packed " : "", (unsigned long long)want);
    if (off % ZB_BUNDLE_ALIGN != 0)
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: tensor %s: offset %llu is not %d-byte aligned", name,
                           (unsigned long long)off, ZB_BUNDLE_ALIGN);
    if (off > w_size || nbytes > w_size - off)
        return zb_diag_set(
            d, ZB_EFORMAT, "zbert.json: tensor %s: [%llu,+%llu) runs past the %zu-byte %s", name,
            (unsigned long long)off, (unsigned long long)nbytes, w_size, ZB_BUNDLE_ENTRY_WEIGHTS);
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
        return zb_diag_set(d, ZB_EFORMAT, "zbert.json: %s needs to be an object with a name", key);
    if (strcmp(ln->valuestring, name) != 0)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "zbert.json: %s \"%s\" is not one this build "
                           "reads (\"%s\")",
                           key, zb_json_printable(ln->valuestring, pn, sizeof pn), name);
    if (!zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "version"), &lv) ||
        !zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "panel_rows"), &rows) ||
        (k_group > 0 && !zb_json_uint(cJSON_GetObjectItemCaseSensitive(lay, "k_group"), &kg)))
        return zb_diag_set(d, ZB_EFORMAT,
                           "zbert.json: %s needs integer version and "
                           "panel_rows%s",
                           key, k_group > 0 ? " and k_group" : "");
    if (lv != (uint64_t)version || rows != ZB_GEMM_NR || kg != (uint64_t)k_group)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "zbert.json: %s %s version %llu with %llu-row "
                           "panels; this build reads version %d with %d-row panels "
                           "(re-convert the model)",
                           key, name, (unsigned long long)lv, (unsigned long long)rows, version,
                           ZB_GEMM_NR);
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
        rc = zb_diag_set(d, ZB_EUNSUPPORTED,
                         "zbert.json: format version %llu; this build "
                         "reads versions %d to %d",
                         (unsigned long long)version, ZB_BUNDLE_VERSION_PLAIN, ZB_BUNDLE_VERSION);
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
    rc = zb_config_parse(cfg_txt, strlen(cfg_txt), "zbert.json config", &b->cfg, d);
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
    if (!cJSON_IsObject(w) || !cJSON_IsString(we) ||
        strcmp(we->valuestring, ZB_BUNDLE_ENTRY_WEIGHTS) != 0 ||
        !zb_json_uint(cJSON_GetObjectItemCaseSensitive(w, "nbytes"), &wn)) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "zbert.json: weights needs entry \"%s\" and an integer nbytes",
                         ZB_BUNDLE_ENTRY_WEIGHTS);
        goto out;
    }
    if (wn != b->w_size) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "zbert.json: weights nbytes %llu, but the %s entry "
                         "holds %zu",
                         (unsigned long long)wn, ZB_BUNDLE_ENTRY_WEIGHTS, b->w_size);
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
            rc = zb_diag_set(d, ZB_EFORMAT,
                             "zbert.json: tensors[%zu] is not an object with a "
                             "name",
                             n);
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
    zip_int64_t wi = zip_name_locate(za, ZB_BUNDLE_ENTRY_WEIGHTS, 0);
    if (wi < 0 || zip_stat_index(za, (zip_uint64_t)wi, 0, &st) != 0 ||
        !(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_METHOD) || st.size != b->w_size ||
        st.comp_method != ZIP_CM_STORE) {
        rc = zb_diag_set(d, ZB_EFORMAT, "bundle: libzip sees %s differently",
                         ZB_BUNDLE_ENTRY_WEIGHTS);
        goto out;
    }
    if ((rc = s_zip_read(za, ZB_BUNDLE_ENTRY_MANIFEST, ZB_MODEL_TEXT_FILE_MAX, &manifest,
                         &manifest_len, d)))
        goto out;
    if ((rc = s_zip_read(za, ZB_BUNDLE_ENTRY_VOCAB, ZB_MODEL_TEXT_FILE_MAX, &b->vocab,
                         &b->vocab_len, d)))
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
                           ZB_BUNDLE_ENTRY_WEIGHTS, hex, b->sha256);
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
        while ((r = zip_fread(zf, chunk, chunk_len)) > 0) {
        }
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

/* --- accessors ------------------------------------------------------------- */

const zb_config_t *zb_bundle_config(const zb_bundle_t *b) {
    return &b->cfg;
}

const zb_config_tokenizer_t *zb_bundle_tokenizer_config(const zb_bundle_t *b) {
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
