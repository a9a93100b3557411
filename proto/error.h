/*
 * error.h -- the one error space of zbert.
 *
 * Every fallible function returns an int: 0 on success or a negative ZB_E*
 * code.  Functions that read untrusted input also take an optional zb_diag_t
 * where they write one human-readable sentence naming the problem ("tensor
 * encoder.layer.0.attention.self.query.weight: data_offsets [10,20) run past
 * the 16-byte data section").  The code is for programs, the sentence is for
 * people.
 *
 * Thread-safety: everything here is re-entrant; a zb_diag_t belongs to one
 * caller at a time.
 */
#ifndef ZB_ERROR_H
#define ZB_ERROR_H

#include <stddef.h>

enum {
    ZB_OK = 0,
    ZB_ENOMEM = -1,       /* an allocation failed */
    ZB_EINVAL = -2,       /* a caller passed an argument outside the contract */
    ZB_EIO = -3,          /* the operating system refused a read, write or map */
    ZB_EFORMAT = -4,      /* malformed bytes: file, message or text */
    ZB_ELIMIT = -5,       /* a value exceeds a hard limit of limits.h */
    ZB_EUTF8 = -6,        /* text is not valid UTF-8 */
    ZB_ENOTFOUND = -7,    /* a named file, tensor or entry does not exist */
    ZB_EUNSUPPORTED = -8, /* well-formed but not something zbert handles */
    ZB_ECHECKSUM = -9,    /* stored checksum does not match the data */
    ZB_EPROTO = -10,      /* a peer broke the wire protocol */
    ZB_EBUSY = -11,       /* the service refuses more work for now */
    ZB_ETIMEOUT = -12,    /* a deadline passed */
    ZB_ECANCELED = -13,   /* the request was cancelled */
    ZB_EDENIED = -14,     /* a peer refused access: a key not (or no longer) allowed */
};

/* Returns a static, constant description of a ZB_E* code (never NULL). */
const char *zb_strerror(int code);

/* A sentence describing the last error, filled by the function that failed. */
typedef struct zb_diag {
    char msg[256]; /* NUL-terminated; empty when nothing was said */
} zb_diag_t;

/*
 * Formats a message into d (when d is not NULL) and returns code, so that a
 * failing path reads:  return zb_diag_set(d, ZB_EFORMAT, "bad %s", what);
 * When code is 0 the message is cleared.
 */
int zb_diag_set(zb_diag_t *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* d->msg when something was said, else zb_strerror(code). d may be NULL. */
const char *zb_diag_text(const zb_diag_t *d, int code);

#endif
