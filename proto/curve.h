/*
 * curve.h -- CurveZMQ keys: the files that hold them and the socket options
 * that use them (libzmq's CURVE mechanism; the broker's ZAP handler decides
 * who may connect, broker/allow.h).
 *
 * A key pair is written by `zbert keygen NAME` as two text files in CZMQ's
 * certificate format (ZPL, the convention of the ZeroMQ ecosystem, so that
 * zcert files and ours are interchangeable):
 *
 *   NAME.pub (public, mode 0644)      NAME.key (secret, mode 0600)
 *     #   ZeroMQ CURVE Public Certificate     #   ZeroMQ CURVE **Secret** Certificate
 *     metadata                              metadata
 *         name = "NAME"                         name = "NAME"
 *     curve                                 curve
 *         public-key = "<40 chars Z85>"         public-key = "<40 chars Z85>"
 *                                               secret-key = "<40 chars Z85>"
 *
 * Files are opened without blocking and must be regular files.
 * Reading: lines of at most ZB_CURVE_LINE_MAX bytes, `#` comments and blank
 * lines skipped, a section name at column 0, its `key = value` entries
 * indented; a value may be "quoted", 'quoted' or bare (up to a blank).  Only the `curve`
 * section's `public-key` and `secret-key` are used (a `.key` file without
 * `public-key` gets it computed from the secret); everything else is
 * ignored.  A file over ZB_CURVE_FILE_MAX bytes, a key that is not 40 Z85
 * characters, a key given twice or a public key that does not match its
 * secret is refused with a sentence naming the file and line.
 *
 * A secret-key file readable by others or writable by its group is refused
 * (as ssh does): "chmod 600 FILE".  The mode is judged after the file is
 * parsed, so that a public file given where a secret one is needed is
 * refused as what it is.
 *
 * Thread-safety: re-entrant; a socket passed here belongs to the caller's
 * thread.
 */
#ifndef ZB_CURVE_H
#define ZB_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define ZB_CURVE_KEY_BYTES 32u    /* a Curve25519 key */
#define ZB_CURVE_Z85_CHARS 40u    /* its Z85 text, without the NUL */
#define ZB_CURVE_FILE_MAX  65536u /* a certificate is a few hundred bytes */
#define ZB_CURVE_LINE_MAX  1024u  /* per line, newline excluded */
#define ZB_CURVE_NAME_MAX  128u   /* bytes of metadata.name kept */

typedef struct zb_curve_cert {
    uint8_t pub[ZB_CURVE_KEY_BYTES];
    uint8_t sec[ZB_CURVE_KEY_BYTES]; /* zero unless has_secret */
    bool has_secret;
    char name[ZB_CURVE_NAME_MAX + 1]; /* metadata.name, "" when absent */
} zb_curve_cert_t;

/* A fresh key pair (libzmq's zmq_curve_keypair) named name (may be NULL or
 * "").  Returns 0, ZB_EUNSUPPORTED (libzmq built without CURVE) or
 * ZB_EINVAL (name too long). */
int zb_curve_keypair(zb_curve_cert_t *c, const char *name, zb_diag_t *d);

/*
 * Parses a certificate from text[0..len) (untrusted: bounded, never
 * reads past len).  origin names the text in messages (a path).  With
 * need_secret, a text without `secret-key` is refused.  Returns 0 or
 * ZB_EFORMAT / ZB_ELIMIT with d naming the line.
 */
int zb_curve_parse(const char *text, size_t len, bool need_secret, const char *origin,
                   zb_curve_cert_t *c, zb_diag_t *d);

/*
 * Reads the certificate at path: a public one (need_secret false: a .pub,
 * or a .key whose public part is then used) or a secret one (need_secret
 * true; its permissions are checked, see above).  Returns 0, ZB_ENOTFOUND,
 * ZB_EIO, ZB_EFORMAT, ZB_ELIMIT or ZB_EINVAL (permissions).
 */
int zb_curve_load(const char *path, bool need_secret, zb_curve_cert_t *c, zb_diag_t *d);

/*
 * Writes c as base.pub and base.key (base is NAME or a path ending in it).
 * Neither file may exist already (ZB_EINVAL: keys are never overwritten by
 * accident); the secret is created with mode 0600 before a byte is written.
 * Returns 0, ZB_EINVAL, ZB_EIO.
 */
int zb_curve_save(const char *base, const zb_curve_cert_t *c, zb_diag_t *d);

/* key's 40-character Z85 text into out (NUL-terminated); returns out. */
const char *zb_curve_z85(const uint8_t key[ZB_CURVE_KEY_BYTES], char out[ZB_CURVE_Z85_CHARS + 1]);

/* Decodes exactly 40 Z85 characters (z85[0..n)) into key; false when n is
 * not 40 or a character is not Z85. */
bool zb_curve_unz85(const char *z85, size_t n, uint8_t key[ZB_CURVE_KEY_BYTES]);

/*
 * Socket options, set before the socket connects or binds:
 * the client side (a DEALER of a client or worker) authenticates with its
 * own cert (secret needed) and checks that the server holds server_pub;
 * the server side (the broker's ROUTERs) serves with its cert and asks the
 * ZAP handler, naming the endpoint by zap_domain ("clients", "workers").
 * Returns 0, or ZB_EUNSUPPORTED / ZB_EIO with d saying why.
 */
int zb_curve_client_socket(void *sock, const zb_curve_cert_t *self,
                           const uint8_t server_pub[ZB_CURVE_KEY_BYTES], zb_diag_t *d);
int zb_curve_server_socket(void *sock, const zb_curve_cert_t *self, const char *zap_domain,
                           zb_diag_t *d);

/* Whether this libzmq has CURVE (zmq_has("curve")). */
bool zb_curve_available(void);

#endif
