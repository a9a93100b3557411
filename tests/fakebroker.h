/*
 * fakebroker.h -- a fake broker for the worker's tests (tests only): a
 * ROUTER socket in the test process speaking proto/msg.h over ipc:// in a
 * temporary directory, for a worker (the zbert-worker program, or the
 * worker agent in a thread of the test) to connect to.  Also what those
 * tests feed it: a batch of texts of every kind, a pool of long texts for
 * heavy tasks, engine runs in process to compare results with, and the
 * clock.
 *
 * A fake records the routing id and epoch of the latest `ready` it
 * received and sends to that peer; tasks carry that epoch unless a test
 * names another.  While a test waits for a message, the fake counts the
 * heartbeats it receives and, with keepalive, sends its own.
 *
 * Failures: every helper that talks to a fake fails the running test
 * (cmocka's fail()) on anything unexpected, with a message on stderr; the
 * exception is fb_next(), which returns false when nothing comes in time.
 * Every socket opened is registered until fb_close(); a test's teardown
 * calls fb_close_all() so that a failed test leaves no socket behind
 * (an open socket would hang zmq_ctx_term()).
 *
 * A fake may serve CurveZMQ (fb_open_curve) with no ZAP handler bound:
 * libzmq then lets in a client with any key, as long as it knows the
 * fake's public key (a client with another server key never completes the
 * handshake, so the fake hears nothing from it).
 *
 * Thread-safety: none; fakes and the registry belong to the test's main
 * thread (cmocka's assertions work only there).
 */
#ifndef ZB_TEST_FAKEBROKER_H
#define ZB_TEST_FAKEBROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "embed.h"
#include "fixture.h"
#include "msg.h"

#define FB_WAIT_MS   20000 /* upper bound for anything expected to happen */
#define FB_SOCKS_MAX 8     /* fakes open at once */

/* Where a test's fakes live and how they behave toward the peer. */
typedef struct fb_config {
    void *ctx;              /* the ZeroMQ context of the sockets */
    const char *dir;        /* the directory of the endpoints and logs */
    const char *peer;       /* what connects, for messages: "worker", "agent" */
    int heartbeat_ms;       /* with keepalive, a heartbeat to the peer this often */
    int poll_ms;            /* the longest single poll while waiting */
    bool heartbeat_lenient; /* a heartbeat the peer cannot take (it has left
                             * after its bye) is no failure */
} fb_config_t;

typedef struct fb_fake {
    void *sock;
    char endpoint[300]; /* ipc://<dir>/<name>.sock */
    char log[300];      /* <dir>/<name>.log: where the test may have the peer
                         * log; shown when fb_expect() fails, if it exists */
    uint8_t id[256];    /* routing id of the peer's latest ready */
    size_t id_len;
    uint64_t epoch; /* of the peer's latest ready: tasks carry it */
    int readies;
    int heartbeats; /* received */
    bool keepalive; /* send heartbeats while waiting; on after fb_open() */
    int64_t last_hb;
    fb_config_t cfg;
} fb_fake_t;

/* A message received: its routing id, body (owned) and decoded form. */
typedef struct fb_got {
    uint8_t id[256];
    size_t id_len;
    uint8_t *body;
    size_t len;
    zb_msg_t m;
} fb_got_t;

void fb_got_free(fb_got_t *g);

/* Binds a fake named name (endpoint and log as above) with a copy of cfg
 * (cfg->dir must outlive it) and registers its socket. */
void fb_open(fb_fake_t *f, const fb_config_t *cfg, const char *name);

/* fb_open() of a fake serving CURVE with server's key pair (ZAP domain
 * "workers"). */
void fb_open_curve(fb_fake_t *f, const fb_config_t *cfg, const char *name,
                   const zb_curve_cert_t *server);

/* Closes f's socket and forgets it; a closed fake may be closed again. */
void fb_close(fb_fake_t *f);

/* Closes every socket still registered (those of a failed test). */
void fb_close_all(void);

/* body, as one frame, to the peer of the latest ready (there must be one). */
void fb_send_raw(fb_fake_t *f, const void *body, size_t len);

/* A message of type t without fields (heartbeat, reconnect, bye). */
void fb_send_empty(fb_fake_t *f, zb_msg_type_t t);

/* A task under the given epoch. */
void fb_send_task_in(fb_fake_t *f, uint64_t epoch, uint64_t shard, const char *const *texts,
                     const size_t *lens, size_t n, const zb_options_t *o);

/* A task under the epoch of the peer's latest ready, as a broker sends it. */
void fb_send_task(fb_fake_t *f, uint64_t shard, const char *const *texts, const size_t *lens,
                  size_t n, const zb_options_t *o);

/*
 * The next message that is not a heartbeat, within timeout_ms: true and *g
 * filled (the caller frees it with fb_got_free()), or false.  Every message
 * must be one frame that decodes.  Heartbeats are counted; a ready records
 * the peer's routing id and epoch; with keepalive, heartbeats go to the
 * peer every cfg.heartbeat_ms.
 */
bool fb_next(fb_fake_t *f, int timeout_ms, fb_got_t *g);

/* The next message within FB_WAIT_MS, which must be of type t. */
void fb_expect(fb_fake_t *f, zb_msg_type_t t, fb_got_t *g);

/* --- what the tests send ------------------------------------------------ */

#define FB_TEXTS 24 /* the batch of fb_texts() */

/* The batch of FB_TEXTS texts: the first 20 cases of fx, invalid UTF-8, an
 * empty text, "I love NLP" and long0 (truncated, or windows).  The texts
 * point into fx and long0.  Returns 0, or -1 when fx has fewer than 20
 * cases. */
int fb_texts(const fx_file_t *fx, const char *long0, size_t long0_len, const char **texts,
             size_t *lens);

/* n long texts (600 words each, some not ASCII), text t the same on every
 * run, for heavy tasks: *texts and *lens malloc'd, freed with
 * fb_long_free().  Returns 0, or -1 when out of memory. */
int fb_long_texts(size_t n, const char ***texts, size_t **lens);
void fb_long_free(const char ***texts, size_t **lens);

/* The engine run directly on the same texts (same call composition): what
 * the peer's results are compared with.  ref holds n results. */
void fb_reference(zb_embed_t *emb, const char *const *texts, const size_t *lens, size_t n,
                  const zb_options_t *o, zb_embed_result_t *ref);
void fb_free_refs(zb_embed_result_t *ref, size_t n);

/* --- time --------------------------------------------------------------- */

/* The shared clock (zb_clock_ms), signed: intervals may be negative. */
int64_t fb_now_ms(void);
void fb_sleep_ms(int ms);

#endif
