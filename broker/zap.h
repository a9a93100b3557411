/*
 * zap.h -- the broker's ZAP handler (ZeroMQ RFC 27): for every CurveZMQ
 * handshake on one of the broker's ROUTERs, libzmq asks it whether the
 * peer's public key may connect, and it answers from the allow-list of the
 * endpoint the handshake is on.  It also keeps the refusal counters and
 * their rate-limited log, shared with the refusals the broker makes itself
 * when a key is no longer allowed on a connection already made.
 *
 * The request (frames after the REQ envelope, which the REP socket strips):
 *   version "1.0", request id, domain, address, identity, mechanism,
 *   credentials (CURVE: one frame, the client's 32-byte public key).
 * The reply: version "1.0", the request id, a status code ("200" accepted,
 * "400" refused, "500" not a request this handler understands), a status
 * text, a user id (accepted: the key in Z85, which libzmq attaches to every
 * message of the connection as the "User-Id" property), and empty metadata.
 *
 * Domains are the broker's endpoints (zb_zap_domain()): "clients" for the
 * frontend, "workers" for the backend.  A well-formed CURVE request of one
 * of them is accepted exactly when its key is allowed there; another
 * mechanism or domain is refused (400), a malformed request (wrong frame
 * count or sizes, not version 1.0) gets 500.  Every request is answered,
 * whatever its shape: a REP socket that skipped a reply would take no more
 * requests.  A ZAP request comes from libzmq in this process, but its
 * address and credentials were sent by the peer: every frame is read
 * within its length, and a request of more than ZB_ZAP_FRAMES_MAX frames
 * is refused without being kept.
 *
 * Refusals are counted per endpoint and logged with the endpoint, the key
 * (Z85) and the peer's address, at most one line per key and endpoint per
 * ZB_ZAP_LOG_KEY_MS and ZB_ZAP_LOG_LINES_PER_S lines a second in all: the
 * lines left out are counted and the count is logged (a peer may open
 * connections as fast as it likes; each is a handshake, and a refusal).
 *
 * Thread-safety: none; a handler and its socket belong to the broker's
 * thread.
 */
#ifndef ZB_ZAP_H
#define ZB_ZAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "error.h"

/* Where libzmq sends ZAP requests (RFC 27), in the sockets' context. */
#define ZB_ZAP_ENDPOINT "inproc://zeromq.zap.01"

/* Frames of a request read; a CURVE request has 7. */
#define ZB_ZAP_FRAMES_MAX 16

/* Refusal log limits (see above), and how many keys it remembers. */
#define ZB_ZAP_LOG_KEY_MS      10000u
#define ZB_ZAP_LOG_LINES_PER_S 5u
#define ZB_ZAP_LOG_KEYS        256u

/* Bytes of a peer's address kept for logs (an IPv6 address and more). */
#define ZB_ZAP_ADDRESS_MAX 64u

/* The broker's endpoints, as ZAP domains. */
typedef enum zb_zap_endpoint {
    ZB_ZAP_CLIENTS = 0,
    ZB_ZAP_WORKERS = 1,
    ZB_ZAP_ENDPOINTS
} zb_zap_endpoint_t;

/* "clients" or "workers": the ZAP domain of an endpoint. */
const char *zb_zap_domain(zb_zap_endpoint_t e);

/* A frame: len bytes at p (borrowed). */
typedef struct zb_zap_frame {
    const uint8_t *p;
    size_t len;
} zb_zap_frame_t;

/* What a request asks. */
typedef struct zb_zap_request {
    zb_zap_frame_t request_id; /* echoed in the reply; len 0 when absent */
    int endpoint;              /* a zb_zap_endpoint_t, or -1 (another domain) */
    bool has_key;              /* a CURVE key of the right size */
    uint8_t key[ZB_CURVE_KEY_BYTES];
    char address[ZB_ZAP_ADDRESS_MAX + 1]; /* printable copy, cut */
} zb_zap_request_t;

/*
 * Reads the n frames of a request (untrusted: any n, any sizes; n may be
 * larger than ZB_ZAP_FRAMES_MAX, only the first of them are then given).
 * Returns 200 when it is a well-formed CURVE request of one of the broker's
 * domains, else the status to answer, 400 or 500; *why is a static
 * sentence (NULL for 200).  *req is filled as far as the frames allow.
 */
int zb_zap_parse(const zb_zap_frame_t *f, size_t n, zb_zap_request_t *req, const char **why);

/* Whether key may connect to endpoint e. */
typedef bool (*zb_zap_allowed_fn)(void *arg, zb_zap_endpoint_t e,
                                  const uint8_t key[ZB_CURVE_KEY_BYTES]);

/* The answer to one request, ready to send. */
typedef struct zb_zap_reply {
    zb_zap_frame_t request_id;            /* borrowed from the request */
    char status[4];                       /* "200", "400" or "500" */
    char text[64];                        /* for the peer's log: no key, no list */
    char user_id[ZB_CURVE_Z85_CHARS + 1]; /* the key's Z85 when accepted, else "" */
} zb_zap_reply_t;

typedef struct zb_zap zb_zap_t;

/* A handler with no refusals yet.  *out is the caller's, released with
 * zb_zap_destroy().  Returns 0 or ZB_ENOMEM. */
int zb_zap_new(zb_zap_t **out);

/* Frees it and nulls *z.  NULL-safe. */
void zb_zap_destroy(zb_zap_t **z);

/*
 * Decides one request of n frames: parses it, asks allowed for a
 * well-formed one, counts and logs a refusal.  out borrows from f.
 */
void zb_zap_decide(zb_zap_t *z, const zb_zap_frame_t *f, size_t n, zb_zap_allowed_fn allowed,
                   void *arg, uint64_t now_ms, zb_zap_reply_t *out);

/*
 * A ZMQ_REP socket bound at ZB_ZAP_ENDPOINT in ctx, in *out (the caller's
 * to close).  It must exist before any socket of ctx with a ZAP domain
 * binds: libzmq lets CurveZMQ handshakes through unauthenticated when no
 * handler is bound.  Returns 0 or ZB_EIO, d saying why.
 */
int zb_zap_bind(void *ctx, void **out, zb_diag_t *d);

/*
 * Answers up to max requests waiting on rep (a socket of zb_zap_bind()),
 * without blocking.  Returns how many were answered.
 */
int zb_zap_serve(zb_zap_t *z, void *rep, zb_zap_allowed_fn allowed, void *arg, int max,
                 uint64_t now_ms);

/*
 * A refusal the broker makes itself (a message from a key that is no longer
 * allowed, or without a key): counted for e and logged under the same
 * limits.  key may be NULL, address "" or NULL, why a short sentence.
 */
void zb_zap_refuse(zb_zap_t *z, zb_zap_endpoint_t e, const uint8_t *key, const char *address,
                   const char *why, uint64_t now_ms);

/* Logs the count of refusal lines left out, if the second they were left
 * out in is over (the broker calls it from its clock). */
void zb_zap_tick(zb_zap_t *z, uint64_t now_ms);

/* Refusals on endpoint e since the handler was made. */
uint64_t zb_zap_refused(const zb_zap_t *z, zb_zap_endpoint_t e);

#endif
