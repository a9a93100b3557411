/*
 * mp.c -- bounded MessagePack reader (see mp.h).
 *
 * Every header is decoded by one function, s_head(), which knows all the
 * formats and checks that the header itself is complete; the readers then
 * check the payload against the bytes left.  Lengths are compared, never
 * added to pointers, before they are known to fit, so a length near 2^32
 * cannot wrap a pointer.
 */
#include "mp.h"

#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire codec assumes a little-endian host"
#endif

/* A decoded header: kind, its own size, and the number it carries. */
typedef struct s_head {
    zb_mp_kind_t kind;
    size_t size; /* bytes of the header (for fixint etc. the whole value) */
    uint64_t n;  /* str/bin/ext payload bytes, array/map count, uint value */
    int64_t i;   /* NEGINT value */
    double f;    /* FLOAT value */
    bool b;      /* BOOL value */
} s_head_t;

static uint64_t s_be(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) v = (v << 8) | p[k];
    return v;
}

/* Integer of width bytes after the type byte, signed or not. */
static void s_int(s_head_t *h, const uint8_t *p, size_t width, bool is_signed) {
    uint64_t u = s_be(p, width);
    h->size = 1 + width;
    if (!is_signed) {
        h->kind = ZB_MP_UINT;
        h->n = u;
        return;
    }
    int64_t v;
    switch (width) {
    case 1:
        v = (int8_t)(uint8_t)u;
        break;
    case 2:
        v = (int16_t)(uint16_t)u;
        break;
    case 4:
        v = (int32_t)(uint32_t)u;
        break;
    default:
        memcpy(&v, &u, sizeof v);
        break;
    }
    if (v >= 0) {
        h->kind = ZB_MP_UINT;
        h->n = (uint64_t)v;
    } else {
        h->kind = ZB_MP_NEGINT;
        h->i = v;
    }
}

/*
 * Decodes the header at p.  Returns 0, or ZB_EFORMAT (why set) when the
 * header is cut short or the byte is 0xc1.  Payloads are not checked here.
 */
static int s_head(zb_mp_reader_t *r, s_head_t *h) {
    const uint8_t *p = r->p;
    size_t left = (size_t)(r->end - p);
    memset(h, 0, sizeof *h);
    if (left == 0) {
        r->why = "the data ends where a value should start";
        return ZB_EFORMAT;
    }
    uint8_t b = p[0];
    size_t need = 1; /* header bytes, checked below before reading them */
    if (b <= 0x7f || b >= 0xe0 || (b >= 0x80 && b <= 0xbf) || b == 0xc0 || b == 0xc1 || b == 0xc2 ||
        b == 0xc3) {
        need = 1;
    } else {
        switch (b) {
        case 0xc4:
        case 0xc7:
        case 0xcc:
        case 0xd0:
        case 0xd9:
            need = 2;
            break;
        case 0xc5:
        case 0xcd:
        case 0xd1:
        case 0xda:
        case 0xdc:
        case 0xde:
            need = 3;
            break;
        case 0xc8:
            need = 4;
            break;
        case 0xc6:
        case 0xca:
        case 0xce:
        case 0xd2:
        case 0xdb:
        case 0xdd:
        case 0xdf:
            need = 5;
            break;
        case 0xc9:
            need = 6;
            break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
            need = 9;
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            need = 2;
            break;
        default:
            need = 1;
            break;
        }
    }
    if (left < need) {
        r->why = "the data ends inside a value's header";
        return ZB_EFORMAT;
    }
    h->size = 1;
    if (b <= 0x7f) {
        h->kind = ZB_MP_UINT;
        h->n = b;
    } else if (b <= 0x8f) {
        h->kind = ZB_MP_MAP;
        h->n = b & 0x0f;
    } else if (b <= 0x9f) {
        h->kind = ZB_MP_ARRAY;
        h->n = b & 0x0f;
    } else if (b <= 0xbf) {
        h->kind = ZB_MP_STR;
        h->n = b & 0x1f;
    } else if (b >= 0xe0) {
        h->kind = ZB_MP_NEGINT;
        h->i = (int8_t)b;
    } else {
        switch (b) {
        case 0xc0:
            h->kind = ZB_MP_NIL;
            break;
        case 0xc1:
            h->kind = ZB_MP_INVALID;
            r->why = "byte 0xc1 is not a MessagePack type";
            return ZB_EFORMAT;
        case 0xc2:
        case 0xc3:
            h->kind = ZB_MP_BOOL;
            h->b = (b == 0xc3);
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6: {
            size_t w = (size_t)1 << (b - 0xc4);
            h->kind = ZB_MP_BIN;
            h->n = s_be(p + 1, w);
            h->size = 1 + w;
            break;
        }
        case 0xc7:
        case 0xc8:
        case 0xc9: {
            size_t w = (size_t)1 << (b - 0xc7);
            h->kind = ZB_MP_EXT;
            h->n = s_be(p + 1, w) + 1; /* the ext type byte counts as payload */
            h->size = 1 + w;
            break;
        }
        case 0xca: {
            uint32_t u = (uint32_t)s_be(p + 1, 4);
            float f;
            memcpy(&f, &u, sizeof f);
            h->kind = ZB_MP_FLOAT;
            h->f = f;
            h->size = 5;
            break;
        }
        case 0xcb: {
            uint64_t u = s_be(p + 1, 8);
            double f;
            memcpy(&f, &u, sizeof f);
            h->kind = ZB_MP_FLOAT;
            h->f = f;
            h->size = 9;
            break;
        }
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            s_int(h, p + 1, (size_t)1 << (b - 0xcc), false);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            s_int(h, p + 1, (size_t)1 << (b - 0xd0), true);
            break;
        case 0xd4:
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            /* fixext: type byte + 1..16 data bytes */
            h->kind = ZB_MP_EXT;
            h->n = 1 + ((uint64_t)1 << (b - 0xd4));
            h->size = 1;
            break;
        case 0xd9:
        case 0xda:
        case 0xdb: {
            size_t w = (size_t)1 << (b - 0xd9);
            h->kind = ZB_MP_STR;
            h->n = s_be(p + 1, w);
            h->size = 1 + w;
            break;
        }
        case 0xdc:
        case 0xdd: {
            size_t w = (size_t)2 << (b - 0xdc);
            h->kind = ZB_MP_ARRAY;
            h->n = s_be(p + 1, w);
            h->size = 1 + w;
            break;
        }
        default: { /* 0xde, 0xdf */
            size_t w = (size_t)2 << (b - 0xde);
            h->kind = ZB_MP_MAP;
            h->n = s_be(p + 1, w);
            h->size = 1 + w;
            break;
        }
        }
    }
    return 0;
}

void zb_mp_reader_init(zb_mp_reader_t *r, const void *buf, size_t len) {
    r->start = buf;
    r->p = buf;
    r->end = r->p + len;
    r->why = NULL;
}

size_t zb_mp_left(const zb_mp_reader_t *r) {
    return (size_t)(r->end - r->p);
}

size_t zb_mp_pos(const zb_mp_reader_t *r) {
    return (size_t)(r->p - r->start);
}

zb_mp_kind_t zb_mp_peek(const zb_mp_reader_t *r) {
    if (r->p >= r->end) return ZB_MP_END;
    uint8_t b = r->p[0];
    if (b <= 0x7f) return ZB_MP_UINT;
    if (b <= 0x8f) return ZB_MP_MAP;
    if (b <= 0x9f) return ZB_MP_ARRAY;
    if (b <= 0xbf) return ZB_MP_STR;
    if (b >= 0xe0) return ZB_MP_NEGINT;
    switch (b) {
    case 0xc0:
        return ZB_MP_NIL;
    case 0xc1:
        return ZB_MP_INVALID;
    case 0xc2:
    case 0xc3:
        return ZB_MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return ZB_MP_BIN;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        return ZB_MP_EXT;
    case 0xca:
    case 0xcb:
        return ZB_MP_FLOAT;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        return ZB_MP_UINT;
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        /* The sign is in the first payload byte (big-endian); when it is
         * missing the read will say the data ends. */
        if (r->end - r->p < 2) return ZB_MP_UINT;
        return (r->p[1] & 0x80) ? ZB_MP_NEGINT : ZB_MP_UINT;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return ZB_MP_EXT;
    case 0xd9:
    case 0xda:
    case 0xdb:
        return ZB_MP_STR;
    case 0xdc:
    case 0xdd:
        return ZB_MP_ARRAY;
    default:
        return ZB_MP_MAP;
    }
}

const char *zb_mp_kind_name(zb_mp_kind_t k) {
    switch (k) {
    case ZB_MP_END:
        return "end of data";
    case ZB_MP_NIL:
        return "nil";
    case ZB_MP_BOOL:
        return "bool";
    case ZB_MP_UINT:
        return "uint";
    case ZB_MP_NEGINT:
        return "negative integer";
    case ZB_MP_FLOAT:
        return "float";
    case ZB_MP_STR:
        return "str";
    case ZB_MP_BIN:
        return "bin";
    case ZB_MP_ARRAY:
        return "array";
    case ZB_MP_MAP:
        return "map";
    case ZB_MP_EXT:
        return "ext";
    case ZB_MP_INVALID:
        return "invalid byte 0xc1";
    }
    return "?";
}

/* Reads a header that must be of kind k; cursor unchanged on failure. */
static int s_expect(zb_mp_reader_t *r, zb_mp_kind_t k, s_head_t *h) {
    int rc = s_head(r, h);
    if (rc < 0) return rc;
    if (h->kind != k) {
        r->why = "wrong type";
        return ZB_EFORMAT;
    }
    return 0;
}

/* Payload of n bytes after a header of size bytes: does it fit? */
static int s_fits(zb_mp_reader_t *r, const s_head_t *h, uint64_t n) {
    if (n > (uint64_t)(zb_mp_left(r) - h->size)) {
        r->why = "a declared length or count runs past the end of the data";
        return ZB_EFORMAT;
    }
    return 0;
}

int zb_mp_read_nil(zb_mp_reader_t *r) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_NIL, &h);
    if (rc == 0) r->p += h.size;
    return rc;
}

int zb_mp_read_bool(zb_mp_reader_t *r, bool *v) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_BOOL, &h);
    if (rc < 0) return rc;
    *v = h.b;
    r->p += h.size;
    return 0;
}

int zb_mp_read_uint(zb_mp_reader_t *r, uint64_t *v) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_UINT, &h);
    if (rc < 0) return rc;
    *v = h.n;
    r->p += h.size;
    return 0;
}

int zb_mp_read_float(zb_mp_reader_t *r, double *v) {
    s_head_t h;
    int rc = s_head(r, &h);
    if (rc < 0) return rc;
    switch (h.kind) {
    case ZB_MP_FLOAT:
        *v = h.f;
        break;
    case ZB_MP_UINT:
        *v = (double)h.n;
        break;
    case ZB_MP_NEGINT:
        *v = (double)h.i;
        break;
    default:
        r->why = "wrong type";
        return ZB_EFORMAT;
    }
    r->p += h.size;
    return 0;
}

int zb_mp_read_str(zb_mp_reader_t *r, const char **s, size_t *len) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_STR, &h);
    if (rc == 0) rc = s_fits(r, &h, h.n);
    if (rc < 0) return rc;
    *s = (const char *)r->p + h.size;
    *len = (size_t)h.n;
    r->p += h.size + (size_t)h.n;
    return 0;
}

int zb_mp_read_bin(zb_mp_reader_t *r, const uint8_t **b, size_t *len) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_BIN, &h);
    if (rc == 0) rc = s_fits(r, &h, h.n);
    if (rc < 0) return rc;
    *b = r->p + h.size;
    *len = (size_t)h.n;
    r->p += h.size + (size_t)h.n;
    return 0;
}

int zb_mp_read_array(zb_mp_reader_t *r, size_t *n) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_ARRAY, &h);
    if (rc == 0) rc = s_fits(r, &h, h.n); /* each element takes >= 1 byte */
    if (rc < 0) return rc;
    *n = (size_t)h.n;
    r->p += h.size;
    return 0;
}

int zb_mp_read_map(zb_mp_reader_t *r, size_t *n) {
    s_head_t h;
    int rc = s_expect(r, ZB_MP_MAP, &h);
    if (rc == 0) rc = s_fits(r, &h, 2 * h.n); /* n < 2^32: no overflow */
    if (rc < 0) return rc;
    *n = (size_t)h.n;
    r->p += h.size;
    return 0;
}

/* Skips one value; on failure the cursor is somewhere inside it. */
static int s_skip(zb_mp_reader_t *r, int depth) {
    s_head_t h;
    int rc = s_head(r, &h);
    if (rc < 0) return rc;
    switch (h.kind) {
    case ZB_MP_STR:
    case ZB_MP_BIN:
    case ZB_MP_EXT:
        if ((rc = s_fits(r, &h, h.n)) < 0) return rc;
        r->p += h.size + (size_t)h.n;
        return 0;
    case ZB_MP_ARRAY:
    case ZB_MP_MAP: {
        uint64_t n = h.kind == ZB_MP_MAP ? 2 * h.n : h.n;
        if ((rc = s_fits(r, &h, n)) < 0) return rc;
        if (depth <= 0) {
            r->why = "arrays and maps are nested too deeply";
            return ZB_EFORMAT;
        }
        r->p += h.size;
        for (uint64_t k = 0; k < n; k++)
            if ((rc = s_skip(r, depth - 1)) < 0) return rc;
        return 0;
    }
    default:
        r->p += h.size;
        return 0;
    }
}

int zb_mp_skip(zb_mp_reader_t *r, int depth) {
    const uint8_t *p0 = r->p;
    int rc = s_skip(r, depth);
    if (rc < 0) r->p = p0;
    return rc;
}

bool zb_mp_utf8_valid(const void *buf, size_t len) {
    const uint8_t *s = buf, *e = s + len;
    while (s < e) {
        /* Text is mostly ASCII: test eight bytes at a time. */
        if (e - s >= 8) {
            uint64_t w;
            memcpy(&w, s, sizeof w);
            if ((w & 0x8080808080808080ull) == 0) {
                s += 8;
                continue;
            }
        }
        uint8_t c = s[0];
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0fu, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07u, min = 0x10000;
        } else {
            return false; /* continuation byte, 0xc0/0xc1 or 0xf5.. */
        }
        if ((size_t)(e - s) <= n) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        s += n + 1;
    }
    return true;
}
