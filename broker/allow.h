/*
 * allow.h -- an allow-list of CurveZMQ public keys: the `.pub` files of one
 * directory (the broker's allow-clients or allow-workers), looked up by key
 * in constant time, reloaded when the directory changes.
 *
 * Reading.  Every entry whose name ends in ".pub" and does not start with
 * '.' is read as a public certificate (proto/curve.h's reader: CZMQ's
 * format, a `.key` file's public part counts too) and its public key joins
 * the set.  Other names are ignored: the NAME.key of a pair, editors'
 * temporary files, Kubernetes' `..data` links.  An entry that is not a
 * regular file (or a link to one), cannot be read or does not parse is
 * logged with its reason and skipped: one bad file never takes the other
 * keys away, and never stops the broker.  A key in several files counts
 * once.
 *
 * Limit: at most ZB_ALLOW_FILES_MAX `.pub` entries are read per load (the
 * set holds at most that many keys); the ones past it, in the directory's
 * own order, are ignored with a log line.  The set's memory is about
 * 64 bytes per key (4 MiB at the limit).
 *
 * Reloading builds a complete new set, then replaces the old one: a lookup
 * sees the old set or the new one, never a half-read directory.  When the
 * directory cannot be read at all (removed, no permission), the old set is
 * kept and the failure logged: keys are revoked by removing their files,
 * and a directory mounted late or briefly unreadable locks nobody out.
 *
 * Watching.  zb_allow_fd() is an inotify descriptor on the directory
 * (entries created, removed, renamed, written, their attributes changed),
 * or -1 where inotify is unavailable; the caller polls it and calls
 * zb_allow_events() when it is readable.  zb_allow_stale() is the fallback
 * the caller runs every few seconds: it compares the directory's identity
 * and modification time with those of the last load, which catches entries
 * added, removed or renamed on any file system, and re-establishes a watch
 * that was lost (the directory replaced).  A file rewritten in place under
 * the same name is seen by inotify only; a reload on demand (the broker's
 * SIGHUP) covers the rest.
 *
 * Lookups hash the key with a per-set random seed (keys come from peers;
 * the set's own keys come from the operator).
 *
 * Thread-safety: none; an allow-list belongs to one thread.
 */
#ifndef ZB_ALLOW_H
#define ZB_ALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "curve.h"
#include "error.h"

/* `.pub` entries read per load, and so keys per list: far beyond any
 * deployment's clients or workers, and a bound on the memory and time of a
 * reload (one open and read per file) that a directory filled by mistake
 * cannot exceed. */
#define ZB_ALLOW_FILES_MAX 65536u

/* Bad files logged one by one per load; the others are counted in one
 * line, so a directory of junk cannot flood the log at each reload. */
#define ZB_ALLOW_LOGGED_FILES_MAX 16u

typedef struct zb_allow zb_allow_t;

/* What a load found. */
typedef struct zb_allow_diff {
    size_t keys;    /* in the set now */
    size_t added;   /* in the set now, not in the one before */
    size_t removed; /* in the set before, not now */
    size_t skipped; /* `.pub` entries not read: bad, or past the limit */
} zb_allow_diff_t;

/*
 * Reads dir into a new allow-list and starts watching it.  label names the
 * list in log lines ("allow-clients").  *out is the caller's, released with
 * zb_allow_destroy().  Returns 0 (an empty directory is a valid, empty
 * list), ZB_ENOTFOUND (no such directory), ZB_EINVAL (not a directory, or
 * a path over PATH_MAX), ZB_EIO (unreadable) or ZB_ENOMEM, d saying which.
 * first, when not NULL, receives what was read (added = keys).
 */
int zb_allow_new(const char *dir, const char *label, zb_allow_t **out, zb_allow_diff_t *first,
                 zb_diag_t *d);

/* Stops watching and frees everything; nulls *a.  NULL-safe. */
void zb_allow_destroy(zb_allow_t **a);

/* Whether key is in the current set. */
bool zb_allow_has(const zb_allow_t *a, const uint8_t key[ZB_CURVE_KEY_BYTES]);

/* Keys in the current set. */
size_t zb_allow_count(const zb_allow_t *a);

/* The directory and the label given to zb_allow_new() (borrowed). */
const char *zb_allow_dir(const zb_allow_t *a);
const char *zb_allow_label(const zb_allow_t *a);

/*
 * Reads the directory again and replaces the set with what it holds now;
 * *diff says what changed.  Returns 0, or ZB_ENOTFOUND / ZB_EINVAL / ZB_EIO
 * / ZB_ENOMEM with the old set kept and d saying why.
 */
int zb_allow_reload(zb_allow_t *a, zb_allow_diff_t *diff, zb_diag_t *d);

/* The inotify descriptor to poll for reading, or -1 (no watch now). */
int zb_allow_fd(const zb_allow_t *a);

/* Reads every pending inotify event; true when one concerns the directory
 * (a reload is due).  Never blocks. */
bool zb_allow_events(zb_allow_t *a);

/* Whether the directory changed since the last load as far as its own
 * stat() tells (another inode, another mtime), or a lost watch could be
 * set again: a reload is due.  One stat(), plus inotify calls when the
 * watch is re-established. */
bool zb_allow_stale(zb_allow_t *a);

#endif
