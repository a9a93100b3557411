/*
 * allow.c -- allow-lists of CurveZMQ keys (see allow.h).
 *
 * The set is an open-addressing table of 32-byte keys, at most half full,
 * with linear probing: a miss (the common case for a refused peer) ends at
 * the first empty slot.  A load reads the directory into a fresh table and
 * swaps it in whole.
 */
#include "allow.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "random.h"

/* What a change to the directory's entries looks like to inotify; the
 * directory itself going away ends the watch (IN_IGNORED follows). */
#define S_WATCH_MASK                                                                               \
    (IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_ATTRIB |            \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

typedef struct s_set {
    uint8_t (*keys)[ZB_CURVE_KEY_BYTES]; /* [cap] */
    uint8_t *used;                       /* [cap]: 1 when the slot holds a key */
    size_t cap;                          /* a power of two, >= 2 * n */
    size_t n;
    uint64_t seed; /* of the hash */
} s_set_t;

struct zb_allow {
    char *dir, *label;
    s_set_t set;
    int fd, wd; /* inotify descriptor and watch, -1 when none */
    /* the directory as the last load (or the watch) found it */
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    dev_t watch_dev;
    ino_t watch_ino;
};

/* --- the set ------------------------------------------------------------- */

static uint64_t s_hash(uint64_t seed, const uint8_t *k) {
    uint64_t h = seed;
    for (size_t i = 0; i < ZB_CURVE_KEY_BYTES; i += 8) {
        uint64_t w;
        memcpy(&w, k + i, 8);
        h ^= w;
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    return h;
}

static void s_set_free(s_set_t *s) {
    free(s->keys);
    free(s->used);
    memset(s, 0, sizeof *s);
}

/* An empty set with room for n keys at most half full. */
static int s_set_init(s_set_t *s, size_t n) {
    memset(s, 0, sizeof *s);
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    s->keys = malloc(cap * sizeof *s->keys);
    s->used = calloc(cap, 1);
    if (s->keys == NULL || s->used == NULL) {
        s_set_free(s);
        return ZB_ENOMEM;
    }
    s->cap = cap;
    zb_random_bytes(&s->seed, sizeof s->seed);
    return 0;
}

static bool s_set_has(const s_set_t *s, const uint8_t *k) {
    if (s->cap == 0) return false;
    for (size_t i = s_hash(s->seed, k) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->used[i]) return false;
        if (memcmp(s->keys[i], k, ZB_CURVE_KEY_BYTES) == 0) return true;
    }
}

/* Adds k (room is guaranteed by s_set_init's n); false when it was there. */
static bool s_set_add(s_set_t *s, const uint8_t *k) {
    size_t i = s_hash(s->seed, k) & (s->cap - 1);
    for (; s->used[i]; i = (i + 1) & (s->cap - 1))
        if (memcmp(s->keys[i], k, ZB_CURVE_KEY_BYTES) == 0) return false;
    memcpy(s->keys[i], k, ZB_CURVE_KEY_BYTES);
    s->used[i] = 1;
    s->n++;
    return true;
}

/* --- reading the directory ------------------------------------------------- */

/* Whether a directory entry is one of ours: NAME.pub, NAME not empty and
 * not hidden. */
static bool s_is_pub(const char *name) {
    size_t n = strlen(name);
    return n > 4 && name[0] != '.' && memcmp(name + n - 4, ".pub", 4) == 0;
}

/* The public key of the certificate at path (zb_curve_load opens it
 * without blocking and takes only a regular file, so a named pipe called
 * x.pub cannot stall the broker's loop). */
static int s_read_pub(const char *path, uint8_t key[ZB_CURVE_KEY_BYTES], zb_diag_t *d) {
    zb_curve_cert_t c;
    int rc = zb_curve_load(path, false, &c, d);
    /* A .pub may hold a secret by mistake: only its public half is kept. */
    if (rc == 0) memcpy(key, c.pub, ZB_CURVE_KEY_BYTES);
    explicit_bzero(&c, sizeof c);
    return rc;
}

/* One key per slot, growing: the keys read before the set is sized. */
typedef struct s_keys {
    uint8_t (*k)[ZB_CURVE_KEY_BYTES];
    size_t n, cap;
} s_keys_t;

static int s_keys_push(s_keys_t *v, const uint8_t *k) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        void *p = realloc(v->k, cap * sizeof *v->k);
        if (p == NULL) return ZB_ENOMEM;
        v->k = p;
        v->cap = cap;
    }
    memcpy(v->k[v->n++], k, ZB_CURVE_KEY_BYTES);
    return 0;
}

static int s_stat_dir(const char *dir, struct stat *st, zb_diag_t *d) {
    if (stat(dir, st) != 0)
        return zb_diag_set(d, errno == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: %s", dir,
                           strerror(errno));
    if (!S_ISDIR(st->st_mode)) return zb_diag_set(d, ZB_EINVAL, "%s: not a directory", dir);
    return 0;
}

/*
 * Reads every key of a->dir into *out (a new set, the caller's) and tells
 * what was skipped.  The directory's stat is taken before its entries are
 * read, so that a change made during the read makes it stale afterwards.
 */
static int s_load(zb_allow_t *a, s_set_t *out, size_t *skipped, struct stat *st, zb_diag_t *d) {
    int rc = s_stat_dir(a->dir, st, d);
    if (rc < 0) return rc;
    DIR *dh = opendir(a->dir);
    if (dh == NULL)
        return zb_diag_set(d, errno == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: %s", a->dir,
                           strerror(errno));
    s_keys_t keys = {0};
    size_t files = 0, bad = 0, over = 0;
    struct dirent *e;
    for (errno = 0; (e = readdir(dh)) != NULL; errno = 0) {
        if (!s_is_pub(e->d_name)) continue;
        if (files == ZB_ALLOW_FILES_MAX) {
            over++;
            continue;
        }
        files++;
        char path[PATH_MAX];
        uint8_t k[ZB_CURVE_KEY_BYTES];
        zb_diag_t why = {{0}};
        int frc;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", a->dir, e->d_name) >= sizeof path)
            frc = zb_diag_set(&why, ZB_EINVAL, "%s/%s: path too long", a->dir, e->d_name);
        else
            frc = s_read_pub(path, k, &why);
        if (frc < 0) {
            if (++bad <= ZB_ALLOW_LOGGED_FILES_MAX)
                ZB_LOG(ZB_LOG_WARN, "%s: %s; skipped", a->label, zb_diag_text(&why, frc));
            continue;
        }
        if (s_keys_push(&keys, k) < 0) {
            rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
            break;
        }
    }
    int read_errno = errno;
    closedir(dh);
    if (rc == 0 && e == NULL && read_errno != 0)
        rc = zb_diag_set(d, ZB_EIO, "%s: %s", a->dir, strerror(read_errno));
    if (rc == 0 && bad > ZB_ALLOW_LOGGED_FILES_MAX)
        ZB_LOG(ZB_LOG_WARN, "%s: %zu more bad .pub files skipped", a->label,
               bad - ZB_ALLOW_LOGGED_FILES_MAX);
    if (rc == 0 && over > 0)
        ZB_LOG(ZB_LOG_ERROR, "%s: %s holds over %u .pub files; %zu were not read", a->label, a->dir,
               ZB_ALLOW_FILES_MAX, over);
    if (rc == 0 && (rc = s_set_init(out, keys.n)) < 0) zb_diag_set(d, rc, "out of memory");
    for (size_t i = 0; rc == 0 && i < keys.n; i++) s_set_add(out, keys.k[i]);
    free(keys.k);
    *skipped = bad + over;
    return rc;
}

/* --- watching ------------------------------------------------------------------ */

/* (Re)places the inotify watch on the directory; false when none could be
 * placed (no inotify, or the directory is gone). */
static bool s_watch(zb_allow_t *a) {
    if (a->fd < 0) return false;
    if (a->wd >= 0) inotify_rm_watch(a->fd, a->wd);
    a->wd = inotify_add_watch(a->fd, a->dir, S_WATCH_MASK);
    if (a->wd < 0) {
        ZB_LOG(ZB_LOG_DEBUG, "%s: cannot watch %s (%s); checking it every few seconds", a->label,
               a->dir, strerror(errno));
        return false;
    }
    struct stat st;
    if (stat(a->dir, &st) == 0) {
        a->watch_dev = st.st_dev;
        a->watch_ino = st.st_ino;
    }
    return true;
}

int zb_allow_fd(const zb_allow_t *a) {
    return a->wd >= 0 ? a->fd : -1;
}

bool zb_allow_events(zb_allow_t *a) {
    if (a->fd < 0) return false;
    /* Events are aligned records of variable length; a buffer of this size
     * holds at least one whatever its name's length. */
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool due = false;
    for (;;) {
        ssize_t n = read(a->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (char *p = buf; p + sizeof(struct inotify_event) <= buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            if (ev->wd == a->wd) {
                due = true;
                /* The directory went away: its watch is gone with it. */
                if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
                    if (!(ev->mask & IN_IGNORED)) inotify_rm_watch(a->fd, a->wd);
                    a->wd = -1;
                }
            }
            p += sizeof(struct inotify_event) + ev->len;
        }
    }
    return due;
}

bool zb_allow_stale(zb_allow_t *a) {
    struct stat st;
    if (stat(a->dir, &st) != 0 || !S_ISDIR(st.st_mode)) return false; /* kept: see allow.h */
    bool due = st.st_dev != a->dev || st.st_ino != a->ino || st.st_mtim.tv_sec != a->mtime.tv_sec ||
               st.st_mtim.tv_nsec != a->mtime.tv_nsec;
    /* A directory replaced (renamed over, a link moved) is watched anew. */
    if (a->fd >= 0 && (a->wd < 0 || st.st_dev != a->watch_dev || st.st_ino != a->watch_ino))
        due |= s_watch(a);
    return due;
}

/* --- life cycle -------------------------------------------------------------------- */

int zb_allow_reload(zb_allow_t *a, zb_allow_diff_t *diff, zb_diag_t *d) {
    s_set_t next;
    size_t skipped = 0;
    struct stat st;
    int rc = s_load(a, &next, &skipped, &st, d);
    if (rc < 0) return rc;
    size_t added = 0;
    for (size_t i = 0; i < next.cap; i++)
        if (next.used[i] && !s_set_has(&a->set, next.keys[i])) added++;
    if (diff)
        *diff = (zb_allow_diff_t){.keys = next.n,
                                  .added = added,
                                  .removed = a->set.n - (next.n - added),
                                  .skipped = skipped};
    s_set_free(&a->set);
    a->set = next;
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    a->mtime = st.st_mtim;
    return 0;
}

int zb_allow_new(const char *dir, const char *label, zb_allow_t **out, zb_allow_diff_t *first,
                 zb_diag_t *d) {
    *out = NULL;
    if (dir == NULL || dir[0] == '\0') return zb_diag_set(d, ZB_EINVAL, "%s: no directory", label);
    if (strlen(dir) >= PATH_MAX) return zb_diag_set(d, ZB_EINVAL, "%s: path too long", label);
    zb_allow_t *a = calloc(1, sizeof *a);
    if (a == NULL) return zb_diag_set(d, ZB_ENOMEM, "out of memory");
    a->fd = a->wd = -1;
    a->dir = strdup(dir);
    a->label = strdup(label ? label : "allow-list");
    int rc;
    if (a->dir == NULL || a->label == NULL) {
        rc = zb_diag_set(d, ZB_ENOMEM, "out of memory");
        goto fail;
    }
    /* Watch first, then read: a change between the two is seen either way. */
    a->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (a->fd < 0)
        ZB_LOG(ZB_LOG_INFO, "%s: no inotify (%s); %s is checked every few seconds", a->label,
               strerror(errno), a->dir);
    s_watch(a);
    if ((rc = zb_allow_reload(a, first, d)) < 0) goto fail;
    *out = a;
    return 0;
fail:
    zb_allow_destroy(&a);
    return rc;
}

void zb_allow_destroy(zb_allow_t **pa) {
    if (pa == NULL || *pa == NULL) return;
    zb_allow_t *a = *pa;
    if (a->fd >= 0) close(a->fd);
    s_set_free(&a->set);
    free(a->dir);
    free(a->label);
    free(a);
    *pa = NULL;
}

bool zb_allow_has(const zb_allow_t *a, const uint8_t key[ZB_CURVE_KEY_BYTES]) {
    return s_set_has(&a->set, key);
}

size_t zb_allow_count(const zb_allow_t *a) {
    return a->set.n;
}

const char *zb_allow_dir(const zb_allow_t *a) {
    return a->dir;
}

const char *zb_allow_label(const zb_allow_t *a) {
    return a->label;
}
