/*
 * safetensors.c -- bounded safetensors reader and writer (see safetensors.h).
 *
 * Every number of the header is validated before it is used: the header
 * length against ZB_SAFETENSORS_HEADER_MAX and the file size, each tensor's
 * dims and shape with checked multiplication, each byte range against the
 * data section, and all ranges against each other (sorted by offset).  Names
 * and metadata are copied out of the cJSON tree, which is freed before
 * returning, so a parsed file holds only the table and its strings.
 *
 * The data is little-endian on disk and the code assumes a little-endian
 * host (checked at compile time below).
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "zbert reads little-endian tensor data in place: a little-endian host is required"
#endif

struct zb_safetensors {
    zb_safetensors_tensor_t *t; /* [n], sorted by offset */
    size_t n;
    size_t *by_name;   /* [n] indices into t, sorted by name (for find) */
    char *strings;     /* names and metadata, NUL-terminated, one block */
    const char **meta; /* [2 * n_meta]: key, value, key, value ... */
    size_t n_meta;
    void *map; /* the file mapping, when opened from a file */
    size_t map_len;
};

static const struct {
    const char *name;
    size_t size;
} s_dtypes[ZB_SAFETENSORS_DTYPE_COUNT] = {
    [ZB_SAFETENSORS_BOOL] = {"BOOL", 1}, [ZB_SAFETENSORS_U8] = {"U8", 1},
    [ZB_SAFETENSORS_I8] = {"I8", 1},     [ZB_SAFETENSORS_I16] = {"I16", 2},
    [ZB_SAFETENSORS_U16] = {"U16", 2},   [ZB_SAFETENSORS_F16] = {"F16", 2},
    [ZB_SAFETENSORS_BF16] = {"BF16", 2}, [ZB_SAFETENSORS_I32] = {"I32", 4},
    [ZB_SAFETENSORS_U32] = {"U32", 4},   [ZB_SAFETENSORS_F32] = {"F32", 4},
    [ZB_SAFETENSORS_I64] = {"I64", 8},   [ZB_SAFETENSORS_U64] = {"U64", 8},
    [ZB_SAFETENSORS_F64] = {"F64", 8},
};

size_t zb_safetensors_dtype_size(zb_safetensors_dtype_t dtype) {
    if ((int)dtype < 0 || dtype >= ZB_SAFETENSORS_DTYPE_COUNT) return 0;
    return s_dtypes[dtype].size;
}

const char *zb_safetensors_dtype_name(zb_safetensors_dtype_t dtype) {
    if ((int)dtype < 0 || dtype >= ZB_SAFETENSORS_DTYPE_COUNT) return "?";
    return s_dtypes[dtype].name;
}

int zb_safetensors_dtype_parse(const char *s, zb_safetensors_dtype_t *out) {
    if (s == NULL) return ZB_EUNSUPPORTED;
    for (int i = 0; i < ZB_SAFETENSORS_DTYPE_COUNT; i++) {
        if (strcmp(s, s_dtypes[i].name) == 0) {
            *out = (zb_safetensors_dtype_t)i;
            return 0;
        }
    }
    return ZB_EUNSUPPORTED;
}

/* --- conversions -------------------------------------------------------- */

static float s_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t s_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float zb_safetensors_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in binary32 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return s_bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return s_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

float zb_safetensors_bf16_to_f32(uint16_t b) {
    return s_bits_to_f32((uint32_t)b << 16);
}

uint16_t zb_safetensors_f32_to_f16(float f) {
    uint32_t x = s_f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN */
    if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00u); /* >= 65536 or inf */
    if (ax < 0x38800000u) {
        /* below the smallest normal half (2^-14): a subnormal in units of 2^-24 */
        if (ax <= 0x33000000u) return sign; /* <= 2^-25 rounds (to even) to zero */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14 .. 24 */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    /* normal: rebias the exponent (127 -> 15) and round the 13 dropped bits;
     * a carry out of the mantissa correctly bumps the exponent (to inf at top) */
    uint32_t r = (ax - 0x38000000u) >> 13;
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
    return (uint16_t)(sign | r);
}

uint16_t zb_safetensors_f32_to_bf16(float f) {
    uint32_t x = s_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* --- parsing ------------------------------------------------------------ */

static int s_cmp_offset(const void *a, const void *b) {
    const zb_safetensors_tensor_t *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* qsort has no context argument: by-name sorting goes through this table. */
typedef struct {
    const char *name;
    size_t index;
} s_name_ref_t;

static int s_cmp_name(const void *a, const void *b) {
    const s_name_ref_t *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Validates one tensor entry and fills t (name is set by the caller). */
static int s_parse_tensor(const cJSON *e, const char *pname, size_t data_len,
                          const unsigned char *data, zb_safetensors_tensor_t *t, zb_diag_t *d) {
    if (!cJSON_IsObject(e))
        return zb_diag_set(d, ZB_EFORMAT, "safetensors: tensor %s: entry is not an object", pname);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return zb_diag_set(d, ZB_EFORMAT, "safetensors: tensor %s: missing or non-string dtype",
                           pname);
    if (zb_safetensors_dtype_parse(jd->valuestring, &t->dtype) != 0) {
        char b[80];
        return zb_diag_set(d, ZB_EUNSUPPORTED, "safetensors: tensor %s: unknown dtype \"%s\"",
                           pname, zb_json_printable(jd->valuestring, b, sizeof b));
    }
    uint64_t n_elems;
    int rc = zb_json_shape(js, 1, "safetensors", pname, t->shape, &t->n_dims, &n_elems, d);
    if (rc != 0) return rc;
    size_t nbytes;
    if (__builtin_mul_overflow((size_t)n_elems, s_dtypes[t->dtype].size, &nbytes))
        return zb_diag_set(d, ZB_EFORMAT, "safetensors: tensor %s: byte size overflows", pname);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: tensor %s: data_offsets is not an array of two", pname);
    uint64_t begin, end;
    if (!zb_json_uint(jo->child, &begin) || !zb_json_uint(jo->child->next, &end))
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: tensor %s: data_offsets are not non-negative integers",
                           pname);
    if (begin > end)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: tensor %s: data_offsets [%llu,%llu) run backwards", pname,
                           (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: tensor %s: data_offsets [%llu,%llu) run past the "
                           "%zu-byte data section",
                           pname, (unsigned long long)begin, (unsigned long long)end, data_len);
    if (end - begin != nbytes)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: tensor %s: data_offsets [%llu,%llu) hold %llu bytes "
                           "but shape x %s needs %zu",
                           pname, (unsigned long long)begin, (unsigned long long)end,
                           (unsigned long long)(end - begin), s_dtypes[t->dtype].name, nbytes);
    t->n_elems = (size_t)n_elems;
    t->offset = (size_t)begin;
    t->nbytes = nbytes;
    t->data = data + begin;
    return 0;
}

int zb_safetensors_parse(const void *buf, size_t len, zb_safetensors_t **out, zb_diag_t *d) {
    int rc;
    cJSON *root = NULL;
    zb_safetensors_t *st = NULL;
    s_name_ref_t *refs = NULL;
    const unsigned char *p = buf;

    if (out == NULL || (buf == NULL && len > 0))
        return zb_diag_set(d, ZB_EINVAL, "safetensors: no buffer or no output");
    *out = NULL;
    if (len < 8)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: file is %zu bytes, shorter than its 8-byte header "
                           "length",
                           len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > ZB_SAFETENSORS_HEADER_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "safetensors: header length %llu exceeds the %u limit",
                           (unsigned long long)hlen, ZB_SAFETENSORS_HEADER_MAX);
    if (hlen > len - 8)
        return zb_diag_set(d, ZB_EFORMAT,
                           "safetensors: header length %llu runs past the end of the %zu-byte "
                           "file",
                           (unsigned long long)hlen, len);
    if (hlen < 2)
        return zb_diag_set(d, ZB_EFORMAT, "safetensors: header of %llu bytes cannot hold JSON",
                           (unsigned long long)hlen);
    const char *hdr = (const char *)p + 8;
    const char *parse_end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &parse_end, 0);
    if (root == NULL) {
        size_t at = (parse_end != NULL && parse_end >= hdr) ? (size_t)(parse_end - hdr) : 0;
        rc =
            zb_diag_set(d, ZB_EFORMAT, "safetensors: header is not valid JSON (near byte %zu)", at);
        goto out;
    }
    /* writers pad the header with spaces; anything else after the object is garbage */
    for (const char *q = parse_end; q != NULL && q < hdr + hlen; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r') {
            rc = zb_diag_set(d, ZB_EFORMAT,
                             "safetensors: unexpected bytes after the JSON header (byte %zu)",
                             (size_t)(q - hdr));
            goto out;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = zb_diag_set(d, ZB_EFORMAT, "safetensors: header is not a JSON object");
        goto out;
    }

    /* count entries and string bytes first, so one allocation of each kind fits all */
    size_t n = 0, n_meta = 0, str_bytes = 0;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e != NULL; e = e->next) {
        if (e->string == NULL) {
            rc = zb_diag_set(d, ZB_EFORMAT, "safetensors: header entry without a name");
            goto out;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (meta != NULL || !cJSON_IsObject(e)) {
                rc = zb_diag_set(d, ZB_EFORMAT,
                                 "safetensors: __metadata__ is repeated or not an object");
                goto out;
            }
            meta = e;
            for (const cJSON *m = e->child; m != NULL; m = m->next) {
                if (m->string == NULL || !cJSON_IsString(m)) {
                    rc = zb_diag_set(d, ZB_EFORMAT,
                                     "safetensors: __metadata__ values must be strings");
                    goto out;
                }
                if (n_meta >= ZB_TENSORS_MAX) {
                    rc = zb_diag_set(d, ZB_ELIMIT, "safetensors: more than %d __metadata__ entries",
                                     ZB_TENSORS_MAX);
                    goto out;
                }
                n_meta++;
                str_bytes += strlen(m->string) + strlen(m->valuestring) + 2;
            }
            continue;
        }
        size_t nl = strlen(e->string);
        char pb[80];
        if (nl == 0 || nl >= ZB_TENSOR_NAME_MAX) {
            rc = zb_diag_set(
                d, ZB_ELIMIT, "safetensors: tensor name \"%s\" has %zu bytes (allowed 1..%d)",
                zb_json_printable(e->string, pb, sizeof pb), nl, ZB_TENSOR_NAME_MAX - 1);
            goto out;
        }
        if (n >= ZB_TENSORS_MAX) {
            rc = zb_diag_set(d, ZB_ELIMIT, "safetensors: more than %d tensors", ZB_TENSORS_MAX);
            goto out;
        }
        n++;
        str_bytes += nl + 1;
    }

    st = calloc(1, sizeof *st);
    if (st == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "safetensors: out of memory");
        goto out;
    }
    st->t = calloc(n ? n : 1, sizeof *st->t);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    st->strings = malloc(str_bytes ? str_bytes : 1);
    st->meta = calloc(n_meta ? 2 * n_meta : 1, sizeof *st->meta);
    refs = calloc(n ? n : 1, sizeof *refs);
    if (st->t == NULL || st->by_name == NULL || st->strings == NULL || st->meta == NULL ||
        refs == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "safetensors: out of memory for %zu tensors", n);
        goto out;
    }

    const unsigned char *data = p + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    char *sp = st->strings;
    size_t i = 0;
    for (const cJSON *e = root->child; e != NULL; e = e->next) {
        if (e == meta) continue;
        char pb[80];
        rc = s_parse_tensor(e, zb_json_printable(e->string, pb, sizeof pb), data_len, data,
                            &st->t[i], d);
        if (rc != 0) goto out;
        size_t nl = strlen(e->string);
        memcpy(sp, e->string, nl + 1);
        st->t[i].name = sp;
        sp += nl + 1;
        i++;
    }
    st->n = n;
    if (meta != NULL) {
        size_t k = 0;
        for (const cJSON *m = meta->child; m != NULL; m = m->next, k++) {
            size_t kl = strlen(m->string), vl = strlen(m->valuestring);
            memcpy(sp, m->string, kl + 1);
            st->meta[2 * k] = sp;
            sp += kl + 1;
            memcpy(sp, m->valuestring, vl + 1);
            st->meta[2 * k + 1] = sp;
            sp += vl + 1;
        }
        st->n_meta = n_meta;
    }

    /* ranges must not overlap: sorted by offset, each must end before the next begins */
    qsort(st->t, n, sizeof *st->t, s_cmp_offset);
    for (size_t k = 1; k < n; k++) {
        const zb_safetensors_tensor_t *a = &st->t[k - 1], *b = &st->t[k];
        if (a->offset + a->nbytes > b->offset) {
            char pa[80], pb[80];
            rc = zb_diag_set(
                d, ZB_EFORMAT, "safetensors: tensors %s [%zu,%zu) and %s [%zu,%zu) overlap",
                zb_json_printable(a->name, pa, sizeof pa), a->offset, a->offset + a->nbytes,
                zb_json_printable(b->name, pb, sizeof pb), b->offset, b->offset + b->nbytes);
            goto out;
        }
    }
    /* JSON objects may repeat a key; cJSON keeps both, we refuse */
    for (size_t k = 0; k < n; k++) refs[k] = (s_name_ref_t){st->t[k].name, k};
    qsort(refs, n, sizeof *refs, s_cmp_name);
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && strcmp(refs[k - 1].name, refs[k].name) == 0) {
            char pb[80];
            rc = zb_diag_set(d, ZB_EFORMAT, "safetensors: tensor %s appears twice",
                             zb_json_printable(refs[k].name, pb, sizeof pb));
            goto out;
        }
        st->by_name[k] = refs[k].index;
    }
    *out = st;
    st = NULL;
    rc = zb_diag_set(d, 0, NULL);
out:
    cJSON_Delete(root);
    free(refs);
    zb_safetensors_close(&st);
    return rc;
}

int zb_safetensors_open_file(const char *path, zb_safetensors_t **out, zb_diag_t *d) {
    int rc;
    int fd = -1;
    void *map = MAP_FAILED;
    size_t len = 0;
    zb_safetensors_t *st = NULL;

    if (out == NULL || path == NULL) return zb_diag_set(d, ZB_EINVAL, "safetensors: no path");
    *out = NULL;
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
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        rc = zb_diag_set(d, ZB_ELIMIT, "%s: too large to map", path);
        goto out;
    }
    len = (size_t)sb.st_size;
    if (len < 8) {
        rc = zb_diag_set(d, ZB_EFORMAT,
                         "%s: file is %zu bytes, shorter than its 8-byte header length", path, len);
        goto out;
    }
    map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot map: %s", path, strerror(errno));
        goto out;
    }
    rc = zb_safetensors_parse(map, len, &st, d);
    if (rc != 0) goto out;
    st->map = map;
    st->map_len = len;
    map = MAP_FAILED;
    *out = st;
out:
    if (map != MAP_FAILED) munmap(map, len);
    if (fd >= 0) close(fd);
    return rc;
}

void zb_safetensors_close(zb_safetensors_t **pst) {
    if (pst == NULL || *pst == NULL) return;
    zb_safetensors_t *st = *pst;
    if (st->map != NULL) munmap(st->map, st->map_len);
    free(st->t);
    free(st->by_name);
    free(st->strings);
    free(st->meta);
    free(st);
    *pst = NULL;
}

size_t zb_safetensors_count(const zb_safetensors_t *st) {
    return st ? st->n : 0;
}

const zb_safetensors_tensor_t *zb_safetensors_at(const zb_safetensors_t *st, size_t i) {
    if (st == NULL || i >= st->n) return NULL;
    return &st->t[i];
}

const zb_safetensors_tensor_t *zb_safetensors_find(const zb_safetensors_t *st, const char *name) {
    if (st == NULL || name == NULL) return NULL;
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const zb_safetensors_tensor_t *t = &st->t[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *zb_safetensors_metadata(const zb_safetensors_t *st, const char *key) {
    if (st == NULL || key == NULL) return NULL;
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

/* --- writing ------------------------------------------------------------ */

int zb_safetensors_write(const char *path, const zb_safetensors_out_t *t, size_t n,
                         const char *const *meta, size_t n_meta, zb_diag_t *d) {
    int rc;
    cJSON *root = NULL;
    char *json = NULL;
    FILE *f = NULL;

    if (path == NULL || (t == NULL && n > 0) || (meta == NULL && n_meta > 0))
        return zb_diag_set(d, ZB_EINVAL, "safetensors: nothing to write");
    if (n > ZB_TENSORS_MAX)
        return zb_diag_set(d, ZB_EINVAL, "safetensors: %zu tensors, more than %d", n,
                           ZB_TENSORS_MAX);
    root = cJSON_CreateObject();
    if (root == NULL) goto oom;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        if (m == NULL) goto oom;
        for (size_t i = 0; i < n_meta; i++)
            if (cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]) == NULL) goto oom;
    }
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        size_t es = zb_safetensors_dtype_size(t[i].dtype);
        size_t nl = t[i].name ? strlen(t[i].name) : 0;
        if (es == 0 || nl == 0 || nl >= ZB_TENSOR_NAME_MAX || t[i].n_dims < 0 ||
            t[i].n_dims > ZB_TENSOR_DIMS_MAX) {
            rc = zb_diag_set(d, ZB_EINVAL, "safetensors: tensor %zu is outside the limits", i);
            goto out;
        }
        size_t nbytes = es;
        for (int k = 0; k < t[i].n_dims; k++) {
            if (t[i].shape[k] < 0 ||
                __builtin_mul_overflow(nbytes, (size_t)t[i].shape[k], &nbytes)) {
                rc = zb_diag_set(d, ZB_EINVAL, "safetensors: tensor %s: bad shape", t[i].name);
                goto out;
            }
        }
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        if (e == NULL ||
            cJSON_AddStringToObject(e, "dtype", zb_safetensors_dtype_name(t[i].dtype)) == NULL)
            goto oom;
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        if (sh == NULL || off == NULL) goto oom;
        for (int k = 0; k < t[i].n_dims; k++) {
            cJSON *v = cJSON_CreateNumber((double)t[i].shape[k]);
            if (v == NULL || !cJSON_AddItemToArray(sh, v)) goto oom;
        }
        cJSON *b = cJSON_CreateNumber((double)offset);
        if (b == NULL || !cJSON_AddItemToArray(off, b)) goto oom;
        if (__builtin_add_overflow(offset, nbytes, &offset)) {
            rc = zb_diag_set(d, ZB_EINVAL, "safetensors: total size overflows");
            goto out;
        }
        cJSON *en = cJSON_CreateNumber((double)offset);
        if (en == NULL || !cJSON_AddItemToArray(off, en)) goto oom;
    }
    json = cJSON_PrintUnformatted(root);
    if (json == NULL) goto oom;
    size_t jl = strlen(json);
    size_t hl = (jl + 7) & ~(size_t)7; /* data section starts 8-byte aligned */
    f = fopen(path, "wb");
    if (f == NULL) {
        rc = zb_diag_set(d, ZB_EIO, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    bool ok = fwrite(le, 1, 8, f) == 8 && fwrite(json, 1, jl, f) == jl;
    for (size_t i = jl; ok && i < hl; i++) ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++) {
        size_t nbytes = zb_safetensors_dtype_size(t[i].dtype);
        for (int k = 0; k < t[i].n_dims; k++) nbytes *= (size_t)t[i].shape[k];
        ok = nbytes == 0 || fwrite(t[i].data, 1, nbytes, f) == nbytes;
    }
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    f = NULL;
    if (!ok) {
        rc = zb_diag_set(d, ZB_EIO, "%s: write failed: %s", path, strerror(e));
        goto out;
    }
    rc = 0;
    goto out;
oom:
    rc = zb_diag_set(d, ZB_ENOMEM, "safetensors: out of memory building the header");
out:
    if (f != NULL) fclose(f);
    cJSON_free(json);
    cJSON_Delete(root);
    return rc;
}
