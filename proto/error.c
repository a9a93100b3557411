/*
 * error.c -- descriptions of ZB_E* codes and the zb_diag_t helper.
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *zb_strerror(int code) {
    switch (code) {
    case ZB_OK:
        return "success";
    case ZB_ENOMEM:
        return "out of memory";
    case ZB_EINVAL:
        return "invalid argument";
    case ZB_EIO:
        return "input/output error";
    case ZB_EFORMAT:
        return "malformed input";
    case ZB_ELIMIT:
        return "limit exceeded";
    case ZB_EUTF8:
        return "invalid UTF-8";
    case ZB_ENOTFOUND:
        return "not found";
    case ZB_EUNSUPPORTED:
        return "unsupported";
    case ZB_ECHECKSUM:
        return "checksum mismatch";
    case ZB_EPROTO:
        return "protocol error";
    case ZB_EBUSY:
        return "busy";
    case ZB_ETIMEOUT:
        return "timed out";
    case ZB_ECANCELED:
        return "cancelled";
    case ZB_EDENIED:
        return "access denied";
    default:
        return "unknown error";
    }
}

int zb_diag_set(zb_diag_t *d, int code, const char *fmt, ...) {
    if (d == NULL) return code;
    if (code == 0 || fmt == NULL) {
        d->msg[0] = '\0';
        return code;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *zb_diag_text(const zb_diag_t *d, int code) {
    if (d != NULL && d->msg[0] != '\0') return d->msg;
    return zb_strerror(code);
}
