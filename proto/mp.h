/*
 * mp.h -- a bounded MessagePack reader for untrusted bytes.
 *
 * A cursor over [p, end).  Every read checks the bytes left before
 * touching them; a str, bin or ext length must fit in the bytes left, and an
 * array (map) count must too, at one (two) bytes per element, so a 5-byte
 * header cannot announce more than the buffer holds.  The reader never
 * allocates: strings and bins come back as views into the buffer, which
 * must outlive them.  Every width of every type is accepted (a uint may be a
 * positive fixint, uint 8..64 or a non-negative int 8..64).  A read that
 * fails leaves the cursor where it was, so the caller can zb_mp_peek() to
 * say what it found.  Nesting is bounded by the depth the caller gives
 * zb_mp_skip(); everything else reads one level at a time.
 *
 * Decoding and encoding are split on purpose.  msgpack-c's unpacker is not
 * used on received bytes because it allocates arrays and maps from their
 * declared counts before reading them, so a few hostile bytes could make it
 * allocate gigabytes; this reader checks every count against the bytes
 * present instead.  Encoding has no such hazard (the input is our own
 * struct), so msg.c packs bodies with msgpack-c's packer, which always
 * writes the smallest encoding, as PROTOCOL.md asks of senders.
 *
 * Thread-safety: a reader is a plain value owned by one caller.
 */
#ifndef ZB_MP_H
#define ZB_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* What the next value is. */
typedef enum zb_mp_kind {
    ZB_MP_END = 0, /* no byte left */
    ZB_MP_NIL,
    ZB_MP_BOOL,
    ZB_MP_UINT,   /* any integer encoding holding a value >= 0 */
    ZB_MP_NEGINT, /* any integer encoding holding a value < 0 */
    ZB_MP_FLOAT,  /* float 32 or float 64 */
    ZB_MP_STR,
    ZB_MP_BIN,
    ZB_MP_ARRAY,
    ZB_MP_MAP,
    ZB_MP_EXT,     /* fixext and ext 8/16/32 */
    ZB_MP_INVALID, /* 0xc1, which MessagePack never uses */
} zb_mp_kind_t;

typedef struct zb_mp_reader {
    const uint8_t *start; /* first byte of the buffer, for positions */
    const uint8_t *p;     /* next byte to read; start <= p <= end */
    const uint8_t *end;   /* one past the last byte */
    const char *why;      /* static reason of the last failure, or NULL */
} zb_mp_reader_t;

/* Starts a cursor over buf[0..len) (borrowed). */
void zb_mp_reader_init(zb_mp_reader_t *r, const void *buf, size_t len);

/* Bytes not read yet. */
size_t zb_mp_left(const zb_mp_reader_t *r);

/* Byte offset of the cursor from the start of the buffer. */
size_t zb_mp_pos(const zb_mp_reader_t *r);

/* Kind of the next value, without moving; ZB_MP_END when no byte is left.
 * Looks at the header byte (and the sign byte of an int 8..64) only: a
 * value of a valid kind may still be truncated. */
zb_mp_kind_t zb_mp_peek(const zb_mp_reader_t *r);

/* A short English name of a kind ("uint", "str", "end of data", ...). */
const char *zb_mp_kind_name(zb_mp_kind_t k);

/*
 * Readers of one value.  Each returns 0 and advances past the value, or
 * returns ZB_EFORMAT, sets r->why and leaves the cursor unchanged: wrong
 * kind ("wrong type"; peek to say which), bytes ending inside the value, or
 * a declared length or count larger than the bytes left.
 */
int zb_mp_read_nil(zb_mp_reader_t *r);
int zb_mp_read_bool(zb_mp_reader_t *r, bool *v);
/* Any non-negative integer of any width. */
int zb_mp_read_uint(zb_mp_reader_t *r, uint64_t *v);
/* float 32 or 64, or any integer (converted to the nearest double): some
 * encoders (JavaScript's) write whole-number doubles as integers. */
int zb_mp_read_float(zb_mp_reader_t *r, double *v);
/* str of any width: *s points into the buffer (not NUL-terminated).  The
 * bytes are not checked here: see zb_mp_utf8_valid(). */
int zb_mp_read_str(zb_mp_reader_t *r, const char **s, size_t *len);
/* bin of any width: *b points into the buffer, any alignment. */
int zb_mp_read_bin(zb_mp_reader_t *r, const uint8_t **b, size_t *len);
/* Array header: *n elements follow; *n <= zb_mp_left() after the header. */
int zb_mp_read_array(zb_mp_reader_t *r, size_t *n);
/* Map header: *n key/value pairs follow; 2 * *n <= zb_mp_left(). */
int zb_mp_read_map(zb_mp_reader_t *r, size_t *n);

/*
 * Skips one complete value of any kind (ext included), checking every
 * header and length inside it.  depth is the number of container levels
 * the value may open: 0 accepts only scalars, 1 an array or map of
 * scalars, and so on; deeper nesting fails with why "nested too deeply".
 * Work is linear in the bytes skipped; recursion is at most depth deep.
 */
int zb_mp_skip(zb_mp_reader_t *r, int depth);

/* True when buf[0..len) is well-formed UTF-8: no overlong forms, no
 * surrogates, nothing above U+10FFFF, no truncated sequence. */
bool zb_mp_utf8_valid(const void *buf, size_t len);

#endif
