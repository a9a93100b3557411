/*
 * curve.c -- CurveZMQ key files and socket options (see curve.h).
 */
#include "curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* The Z85 alphabet (ZeroMQ RFC 32). */
static const char s_z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                            ".-:+=^!/*?&<>()[]{}@%$#";

bool zb_curve_available(void) {
    return zmq_has("curve") != 0;
}

const char *zb_curve_z85(const uint8_t key[ZB_CURVE_KEY_BYTES], char out[ZB_CURVE_Z85_CHARS + 1]) {
    if (zmq_z85_encode(out, key, ZB_CURVE_KEY_BYTES) == NULL) out[0] = '\0';
    return out;
}

bool zb_curve_unz85(const char *z85, size_t n, uint8_t key[ZB_CURVE_KEY_BYTES]) {
    if (n != ZB_CURVE_Z85_CHARS) return false;
    char buf[ZB_CURVE_Z85_CHARS + 1];
    for (size_t i = 0; i < n; i++) {
        if (z85[i] == '\0' || strchr(s_z85, z85[i]) == NULL) return false;
        buf[i] = z85[i];
    }
    buf[n] = '\0';
    /* Every 5 characters are a base-85 number below 2^32; a larger one
     * is not the encoding of any key. */
    for (size_t i = 0; i < n; i += 5) {
        uint64_t v = 0;
        for (size_t j = 0; j < 5; j++) v = v * 85 + (uint64_t)(strchr(s_z85, buf[i + j]) - s_z85);
        if (v > UINT32_MAX) return false;
    }
    return zmq_z85_decode(key, buf) != NULL;
}

int zb_curve_keypair(zb_curve_cert_t *c, const char *name, zb_diag_t *d) {
    memset(c, 0, sizeof *c);
    if (name != NULL && strlen(name) > ZB_CURVE_NAME_MAX)
        return zb_diag_set(d, ZB_EINVAL, "a key name is at most %u bytes", ZB_CURVE_NAME_MAX);
    char pub[ZB_CURVE_Z85_CHARS + 1], sec[ZB_CURVE_Z85_CHARS + 1];
    if (!zb_curve_available() || zmq_curve_keypair(pub, sec) != 0)
        return zb_diag_set(d, ZB_EUNSUPPORTED,
                           "this libzmq has no CURVE support (built without "
                           "libsodium)");
    if (!zb_curve_unz85(pub, ZB_CURVE_Z85_CHARS, c->pub) ||
        !zb_curve_unz85(sec, ZB_CURVE_Z85_CHARS, c->sec))
        return zb_diag_set(d, ZB_EUNSUPPORTED, "libzmq made a key that is not Z85");
    explicit_bzero(sec, sizeof sec);
    c->has_secret = true;
    if (name != NULL) memcpy(c->name, name, strlen(name) + 1);
    return 0;
}

/* --- reading --------------------------------------------------------------- */

/* The public key of a secret one (zmq_curve_public). */
static bool s_public_of(const uint8_t sec[ZB_CURVE_KEY_BYTES], uint8_t pub[ZB_CURVE_KEY_BYTES]) {
    char zs[ZB_CURVE_Z85_CHARS + 1], zp[ZB_CURVE_Z85_CHARS + 1];
    zb_curve_z85(sec, zs);
    bool ok = zmq_curve_public(zp, zs) == 0 && zb_curve_unz85(zp, ZB_CURVE_Z85_CHARS, pub);
    explicit_bzero(zs, sizeof zs);
    return ok;
}

/* A value after '=': "quoted", 'quoted' or bare up to a comment or the end
 * of the line; trailing blanks dropped.  Sets *v, *vn; false when a quote
 * is not closed. */
static bool s_value(const char *p, const char *end, const char **v, size_t *vn) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p < end && (*p == '"' || *p == '\'')) {
        char q = *p++;
        const char *e = memchr(p, q, (size_t)(end - p));
        if (e == NULL) return false;
        *v = p;
        *vn = (size_t)(e - p);
        return true;
    }
    /* A bare value ends at a blank ('#' is a Z85 character, so a comment
     * after a bare value needs a blank before it). */
    const char *e = p;
    while (e < end && *e != ' ' && *e != '\t') e++;
    *v = p;
    *vn = (size_t)(e - p);
    return true;
}

int zb_curve_parse(const char *text, size_t len, bool need_secret, const char *origin,
                   zb_curve_cert_t *c, zb_diag_t *d) {
    memset(c, 0, sizeof *c);
    if (origin == NULL) origin = "certificate";
    if (len > ZB_CURVE_FILE_MAX)
        return zb_diag_set(d, ZB_ELIMIT, "%s: over %u bytes: not a certificate", origin,
                           ZB_CURVE_FILE_MAX);
    enum { NONE, CURVE, METADATA, OTHER } section = NONE;
    bool have_pub = false;
    const char *p = text, *end = text + len;
    for (unsigned line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) > ZB_CURVE_LINE_MAX)
            return zb_diag_set(d, ZB_ELIMIT, "%s:%u: line over %u bytes", origin, line,
                               ZB_CURVE_LINE_MAX);
        if (le > p && le[-1] == '\r') le--;
        for (const char *q = p; q < le; q++)
            if (*q == '\0')
                return zb_diag_set(d, ZB_EFORMAT, "%s:%u: a NUL byte: not a certificate", origin,
                                   line);
        const char *s = p;
        while (s < le && (*s == ' ' || *s == '\t')) s++;
        bool indented = s > p;
        p = nl ? nl + 1 : end;
        if (s == le || *s == '#') continue;
        const char *eq = memchr(s, '=', (size_t)(le - s));
        const char *ne = eq ? eq : le;
        while (ne > s && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
        size_t nn = (size_t)(ne - s);
        if (!indented) {
            if (eq != NULL) continue; /* a top-level "name = value": not ours */
            section = nn == 5 && memcmp(s, "curve", 5) == 0      ? CURVE
                      : nn == 8 && memcmp(s, "metadata", 8) == 0 ? METADATA
                                                                 : OTHER;
            continue;
        }
        if (eq == NULL || (section != CURVE && section != METADATA)) continue;
        const char *v;
        size_t vn;
        if (!s_value(eq + 1, le, &v, &vn))
            return zb_diag_set(d, ZB_EFORMAT, "%s:%u: a quote is not closed", origin, line);
        if (section == METADATA) {
            if (nn == 4 && memcmp(s, "name", 4) == 0) {
                size_t k = vn > ZB_CURVE_NAME_MAX ? ZB_CURVE_NAME_MAX : vn;
                for (size_t i = 0; i < k; i++)
                    c->name[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
                c->name[k] = '\0';
            }
            continue;
        }
        bool is_pub = nn == 10 && memcmp(s, "public-key", 10) == 0;
        bool is_sec = nn == 10 && memcmp(s, "secret-key", 10) == 0;
        if (!is_pub && !is_sec) continue;
        if ((is_pub && have_pub) || (is_sec && c->has_secret))
            return zb_diag_set(d, ZB_EFORMAT, "%s:%u: %s given twice", origin, line,
                               is_pub ? "public-key" : "secret-key");
        if (!zb_curve_unz85(v, vn, is_pub ? c->pub : c->sec))
            return zb_diag_set(d, ZB_EFORMAT,
                               "%s:%u: %s is not a key (40 characters of Z85 expected)", origin,
                               line, is_pub ? "public-key" : "secret-key");
        if (is_pub)
            have_pub = true;
        else
            c->has_secret = true;
    }
    if (need_secret && !c->has_secret)
        return zb_diag_set(d, ZB_EFORMAT,
                           "%s: no curve secret-key (a secret key file, NAME.key, is needed "
                           "here, not a NAME.pub)",
                           origin);
    if (c->has_secret) {
        uint8_t derived[ZB_CURVE_KEY_BYTES];
        if (!s_public_of(c->sec, derived))
            return zb_diag_set(d, ZB_EUNSUPPORTED, "%s: this libzmq cannot use CURVE keys", origin);
        if (have_pub && memcmp(derived, c->pub, sizeof derived) != 0)
            return zb_diag_set(d, ZB_EFORMAT, "%s: public-key is not that of secret-key", origin);
        memcpy(c->pub, derived, sizeof derived);
        have_pub = true;
    }
    if (!have_pub)
        return zb_diag_set(d, ZB_EFORMAT, "%s: no curve public-key: not a certificate", origin);
    return 0;
}

int zb_curve_load(const char *path, bool need_secret, zb_curve_cert_t *c, zb_diag_t *d) {
    memset(c, 0, sizeof *c);
    /* Opened without blocking, and refused below unless a regular file: a
     * named pipe under a key's name cannot stall the caller (the broker
     * reads allow-list directories from its loop). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return zb_diag_set(d, errno == ENOENT ? ZB_ENOTFOUND : ZB_EIO, "%s: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return zb_diag_set(d, ZB_EIO, "%s: not a regular file", path);
    }
    char buf[ZB_CURVE_FILE_MAX + 1];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            explicit_bzero(buf, n);
            return zb_diag_set(d, ZB_EIO, "%s: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n == sizeof buf) break;
    }
    close(fd);
    int rc = zb_curve_parse(buf, n, need_secret, path, c, d);
    explicit_bzero(buf, n);
    /* The mode is judged once the file is known to hold a secret: a .pub
     * given where the .key belongs is named as such, not sent to chmod. */
    if (rc == 0 && need_secret && (st.st_mode & 0027) != 0)
        rc = zb_diag_set(d, ZB_EINVAL,
                         "%s: a secret key must not be readable by others nor writable by its "
                         "group (mode %03o): chmod 600 %s",
                         path, (unsigned)(st.st_mode & 0777), path);
    if (rc != 0) explicit_bzero(c, sizeof *c);
    return rc;
}

/* --- writing --------------------------------------------------------------- */

static int s_write_file(const char *path, mode_t mode, const char *text, zb_diag_t *d) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode);
    if (fd < 0)
        return zb_diag_set(d, errno == EEXIST ? ZB_EINVAL : ZB_EIO, "%s: %s%s", path,
                           strerror(errno),
                           errno == EEXIST ? " (keys are never overwritten: remove it first)" : "");
    /* The umask may have taken bits away, never added them; say the mode
     * outright so that a 0600 secret stays 0600 whatever it is. */
    size_t len = strlen(text), off = 0;
    int rc = fchmod(fd, mode) == 0 ? 0 : -1;
    while (rc == 0 && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            rc = -1;
        else
            off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) != 0) rc = -1;
    int e = errno;
    if (close(fd) != 0 && rc == 0) rc = -1, e = errno;
    if (rc != 0) {
        unlink(path);
        return zb_diag_set(d, ZB_EIO, "%s: %s", path, strerror(e));
    }
    return 0;
}

static void s_cert_text(char *out, size_t cap, const zb_curve_cert_t *c, bool secret) {
    char day[32] = "";
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) != NULL) strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S UTC", &tm);
    char zp[ZB_CURVE_Z85_CHARS + 1], zs[ZB_CURVE_Z85_CHARS + 1] = "";
    zb_curve_z85(c->pub, zp);
    if (secret) zb_curve_z85(c->sec, zs);
    snprintf(out, cap,
             "#   ****  Generated on %s by zbert keygen  ****\n"
             "#   ZeroMQ CURVE %s Certificate\n"
             "#   %s\n"
             "\n"
             "metadata\n"
             "    name = \"%s\"\n"
             "curve\n"
             "    public-key = \"%s\"\n"
             "%s%s%s",
             day, secret ? "**Secret**" : "Public",
             secret ? "DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."
                    : "Exchange securely, or use a secure mechanism to verify the contents",
             c->name, zp, secret ? "    secret-key = \"" : "", zs, secret ? "\"\n" : "");
    explicit_bzero(zs, sizeof zs);
}

int zb_curve_save(const char *base, const zb_curve_cert_t *c, zb_diag_t *d) {
    if (base == NULL || base[0] == '\0' || !c->has_secret)
        return zb_diag_set(d, ZB_EINVAL, "a key pair and a name are needed");
    for (const char *q = c->name; *q; q++)
        if (*q == '"' || (unsigned char)*q < 0x20)
            return zb_diag_set(d, ZB_EINVAL, "a key name cannot hold quotes or control bytes");
    char pub_path[4096], key_path[4096];
    if ((size_t)snprintf(pub_path, sizeof pub_path, "%s.pub", base) >= sizeof pub_path ||
        (size_t)snprintf(key_path, sizeof key_path, "%s.key", base) >= sizeof key_path)
        return zb_diag_set(d, ZB_EINVAL, "key path too long");
    if (access(pub_path, F_OK) == 0 || access(key_path, F_OK) == 0)
        return zb_diag_set(d, ZB_EINVAL,
                           "%s.pub or %s.key exists (keys are never overwritten: "
                           "remove them first)",
                           base, base);
    char text[1024];
    s_cert_text(text, sizeof text, c, true);
    int rc = s_write_file(key_path, 0600, text, d);
    explicit_bzero(text, sizeof text);
    if (rc != 0) return rc;
    s_cert_text(text, sizeof text, c, false);
    rc = s_write_file(pub_path, 0644, text, d);
    if (rc != 0) unlink(key_path);
    return rc;
}

/* --- sockets --------------------------------------------------------------- */

int zb_curve_client_socket(void *sock, const zb_curve_cert_t *self,
                           const uint8_t server_pub[ZB_CURVE_KEY_BYTES], zb_diag_t *d) {
    if (!zb_curve_available())
        return zb_diag_set(d, ZB_EUNSUPPORTED, "this libzmq has no CURVE support");
    if (!self->has_secret) return zb_diag_set(d, ZB_EINVAL, "CURVE needs this side's secret key");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pub, ZB_CURVE_KEY_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, self->pub, ZB_CURVE_KEY_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, self->sec, ZB_CURVE_KEY_BYTES) != 0)
        return zb_diag_set(d, ZB_EIO, "cannot set CURVE options: %s", zmq_strerror(errno));
    return 0;
}

int zb_curve_server_socket(void *sock, const zb_curve_cert_t *self, const char *zap_domain,
                           zb_diag_t *d) {
    if (!zb_curve_available())
        return zb_diag_set(d, ZB_EUNSUPPORTED, "this libzmq has no CURVE support");
    if (!self->has_secret) return zb_diag_set(d, ZB_EINVAL, "CURVE needs the broker's secret key");
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, self->sec, ZB_CURVE_KEY_BYTES) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, zap_domain, strlen(zap_domain)) != 0)
        return zb_diag_set(d, ZB_EIO, "cannot set CURVE options: %s", zmq_strerror(errno));
    return 0;
}
