/*
 * zbert -- the command-line client of the zbert service.
 *
 *   zbert embed  --broker EP [--broker EP2 ...] [--level wordpiece|token|sentence]
 *                [--pooling cls|mean] [--normalize] [--truncate|--windows]
 *                [--sentences] [--token-vector first|mean] [--compat none|sparknlp]
 *                [--input-format lines|jsonl] [--format jsonl|npy|table|sparknlp-json]
 *                [--batch N] [--inflight N] [--deadline-ms N] [--retry-ms N]
 *                [--tries N] [--progress auto|always|never] [--config F]
 *                [--log-level L] [-o OUTPUT] [INPUT]   (default: stdin, stdout)
 *   zbert status --broker EP [--json] [--timeout-ms N] [--config F] [--log-level L]
 *
 * `zbert embed` reads and writes exactly what zbert-embed reads and writes
 * (client/cli/textio), and takes its embedding options through the same parser
 * (client/cli/cliopt): for the same texts, options and model the output bytes
 * are the same, and so are the per-line error messages on stderr and the
 * exit status (1 when a line was rejected).  Token metadata (--sentences,
 * --compat sparknlp, --format sparknlp-json) comes with the parts; the
 * UTF-16 spans Spark NLP annotations show are computed here from the
 * texts, as the protocol has clients do.  It sends the input as
 * requests of --batch texts, keeps up to --inflight of them at the broker,
 * and writes each text as soon as every text before it is written, so a
 * corpus of any size streams through memory bounded by --inflight x
 * --batch texts (and four times that many held for in-order output).
 * On a terminal, a progress bar on stderr shows texts/s, and the fraction
 * done and ETA when the input is a regular file.
 *
 * `zbert status` prints the broker's status_reply as a table, or JSON.
 *
 * Settings come from the command line, else ZBERT_<KEY> environment
 * variables, else the --config file, else the defaults (see
 * deploy/zbert.conf.example).  Exit status: 0, 1 on failure (or rejected
 * input lines), 2 on a usage error, 130 when interrupted (SIGINT, SIGTERM:
 * the open requests are cancelled at the broker first).
 *
 * The command line is a contract other tools drive: options are only ever
 * added.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "cliopt.h"
#include "settings.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "textio.h"
#include "zbert.h"

#define S_BROKERS_MAX            16
#define S_BROKER_DEFAULT         "tcp://127.0.0.1:5555"
#define S_BATCH_DEFAULT          64
#define S_INFLIGHT_DEFAULT       8
#define S_STATUS_TIMEOUT_DEFAULT 5000

/* A request also closes at this many input bytes, so that its message
 * stays far below the 256 MiB body limit whatever the lines hold. */
#define S_BATCH_BYTES (32u << 20)

/* Requests whose results are held for in-order output, per request at the
 * broker: room for later requests to finish while an early one is slow. */
#define S_WINDOW_FACTOR 4

/* Progress bar redraws at most this often. */
#define S_PROGRESS_MS 200

/* Set by SIGINT and SIGTERM: embed stops, cancels its open requests (so
 * that the broker does not compute them for nobody) and exits 130. */
static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig) {
    (void)sig;
    s_stop = 1;
}

typedef enum s_progress { S_PROGRESS_AUTO = 0, S_PROGRESS_ALWAYS, S_PROGRESS_NEVER } s_progress_t;

typedef struct s_args {
    const char *cmd;
    const char *brokers[S_BROKERS_MAX];
    size_t n_brokers;
    char *broker_list; /* the config value, split in place */
    zb_cliopt_t cli;   /* embedding options shared with zbert-embed */
    zbert_options_t opt; /* the request's: cli.opt through the client
                          * library's conversion, and --deadline-ms */
    int batch, inflight;
    int retry_ms, tries, timeout_ms;
    s_progress_t progress;
    bool json;
    const char *config;
    const char *log_level;
    const char *input_path;  /* NULL: stdin */
    const char *output_path; /* NULL: stdout */
    /* which were given on the command line */
    bool batch_set, inflight_set, deadline_set, retry_set, tries_set, timeout_set, progress_set;
} s_args_t;

static void s_usage(FILE *f) {
    fputs("usage: zbert embed --broker EP [--level wordpiece|token|sentence]\n"
          "                   [--pooling cls|mean] [--normalize] [--truncate|--windows]\n"
          "                   [--sentences] [--token-vector first|mean]\n"
          "                   [--compat none|sparknlp] [--input-format lines|jsonl]\n"
          "                   [--format jsonl|npy|table|sparknlp-json]\n"
          "                   [--batch N] [--inflight N] [--deadline-ms N] [--retry-ms N]\n"
          "                   [--tries N] [--progress auto|always|never] [--config FILE]\n"
          "                   [--log-level error|warn|info|debug] [-o OUTPUT] [INPUT]\n"
          "       zbert status --broker EP [--json] [--timeout-ms N] [--config FILE]\n"
          "                   [--log-level error|warn|info|debug]\n"
          "EP is the broker's client endpoint (default " S_BROKER_DEFAULT "); give --broker\n"
          "several times for brokers to fail over to.  INPUT and OUTPUT default to stdin and\n"
          "stdout.\n",
          f);
}

static int s_parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || *e || e == s || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int s_parse_progress(const char *v, s_progress_t *p) {
    if (!strcmp(v, "auto"))
        *p = S_PROGRESS_AUTO;
    else if (!strcmp(v, "always"))
        *p = S_PROGRESS_ALWAYS;
    else if (!strcmp(v, "never"))
        *p = S_PROGRESS_NEVER;
    else
        return -1;
    return 0;
}

static int s_parse_args(int argc, char **argv, s_args_t *a) {
    zb_cliopt_init(&a->cli);
    for (int i = 2; i < argc; i++) {
        bool embed = !strcmp(a->cmd, "embed");
        if (embed) {
            int shared = zb_cliopt_arg(&a->cli, argc, argv, &i, "zbert");
            if (shared < 0) return -1;
            if (shared > 0) continue;
        }
        const char *k = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDS_VALUE                                                                                \
    do {                                                                                           \
        if (v == NULL) {                                                                           \
            fprintf(stderr, "zbert: %s needs a value\n", k);                                       \
            return -1;                                                                             \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(k, "--broker")) {
            NEEDS_VALUE;
            if (a->n_brokers == S_BROKERS_MAX) {
                fprintf(stderr, "zbert: more than %d brokers\n", S_BROKERS_MAX);
                return -1;
            }
            a->brokers[a->n_brokers++] = v;
        } else if (!strcmp(k, "--config")) {
            NEEDS_VALUE;
            a->config = v;
        } else if (!strcmp(k, "--log-level")) {
            NEEDS_VALUE;
            if (zb_log_parse_level(v) < 0) goto bad_value;
            a->log_level = v;
        } else if (!strcmp(k, "--retry-ms")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 50, 3600000, &a->retry_ms)) goto bad_value;
            a->retry_set = true;
        } else if (!strcmp(k, "--tries")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, 1000, &a->tries)) goto bad_value;
            a->tries_set = true;
        } else if (!embed && !strcmp(k, "--json")) {
            a->json = true;
        } else if (!embed && !strcmp(k, "--timeout-ms")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, 86400000, &a->timeout_ms)) goto bad_value;
            a->timeout_set = true;
        } else if (embed && !strcmp(k, "--batch")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, (int)ZB_MSG_TEXTS_MAX, &a->batch)) goto bad_value;
            a->batch_set = true;
        } else if (embed && !strcmp(k, "--inflight")) {
            NEEDS_VALUE;
            if (s_parse_int(v, 1, 1024, &a->inflight)) goto bad_value;
            a->inflight_set = true;
        } else if (embed && !strcmp(k, "--deadline-ms")) {
            NEEDS_VALUE;
            int ms;
            if (s_parse_int(v, 0, 2000000000, &ms)) goto bad_value;
            a->opt.deadline_ms = (uint32_t)ms;
            a->deadline_set = true;
        } else if (embed && !strcmp(k, "--progress")) {
            NEEDS_VALUE;
            if (s_parse_progress(v, &a->progress)) goto bad_value;
            a->progress_set = true;
        } else if (embed && (!strcmp(k, "-o") || !strcmp(k, "--output"))) {
            NEEDS_VALUE;
            a->output_path = v;
        } else if (embed && k[0] != '-' && a->input_path == NULL) {
            a->input_path = k;
        } else if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            s_usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "zbert %s: unknown option '%s'\n", a->cmd, k);
            s_usage(stderr);
            return -1;
        }
        continue;
    bad_value:
        fprintf(stderr, "zbert: bad value '%s' for %s\n", v, k);
        return -1;
#undef NEEDS_VALUE
    }
    return 0;
}

/* Fills what the command line left unset from the environment, the config
 * file and the defaults. */
static int s_settings(s_args_t *a, const zb_settings_file_t *conf) {
    const char *v;
    if (a->n_brokers == 0) {
        v = zb_settings_file_get(conf, "broker");
        if (v && *v) {
            a->broker_list = strdup(v);
            if (a->broker_list == NULL) return -1;
            for (char *save = NULL, *t = strtok_r(a->broker_list, ", \t", &save); t;
                 t = strtok_r(NULL, ", \t", &save)) {
                if (a->n_brokers == S_BROKERS_MAX) {
                    fprintf(stderr, "zbert: more than %d brokers in 'broker'\n", S_BROKERS_MAX);
                    return -1;
                }
                a->brokers[a->n_brokers++] = t;
            }
        }
        if (a->n_brokers == 0) a->brokers[a->n_brokers++] = S_BROKER_DEFAULT;
    }
#define S_INT_SETTING(flag, field, key, lo, hi, def)                                               \
    do {                                                                                           \
        if (!a->flag) {                                                                            \
            v = zb_settings_file_get(conf, key);                                                   \
            if (v == NULL)                                                                         \
                a->field = def;                                                                    \
            else if (s_parse_int(v, lo, hi, &a->field)) {                                          \
                fprintf(stderr, "zbert: bad value '%s' for setting %s\n", v, key);                 \
                return -1;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)
    S_INT_SETTING(batch_set, batch, "batch", 1, (int)ZB_MSG_TEXTS_MAX, S_BATCH_DEFAULT);
    S_INT_SETTING(inflight_set, inflight, "inflight", 1, 1024, S_INFLIGHT_DEFAULT);
    S_INT_SETTING(retry_set, retry_ms, "retry_ms", 50, 3600000, 0);
    S_INT_SETTING(tries_set, tries, "tries", 1, 1000, 0);
    S_INT_SETTING(timeout_set, timeout_ms, "timeout_ms", 1, 86400000, S_STATUS_TIMEOUT_DEFAULT);
#undef S_INT_SETTING
    if (!a->deadline_set && (v = zb_settings_file_get(conf, "deadline_ms"))) {
        int ms;
        if (s_parse_int(v, 0, 2000000000, &ms)) {
            fprintf(stderr, "zbert: bad value '%s' for setting deadline_ms\n", v);
            return -1;
        }
        a->opt.deadline_ms = (uint32_t)ms;
    }
    if (!a->progress_set && (v = zb_settings_file_get(conf, "progress")) &&
        s_parse_progress(v, &a->progress)) {
        fprintf(stderr, "zbert: bad value '%s' for setting progress\n", v);
        return -1;
    }
    if (a->log_level == NULL) {
        v = zb_settings_file_get(conf, "log_level");
        if (v && zb_log_parse_level(v) < 0) {
            fprintf(stderr, "zbert: bad value '%s' for setting log_level\n", v);
            return -1;
        }
        a->log_level = v ? v : "warn";
    }
    return 0;
}

/* A client for this command.  For embed, its limits are those of the
 * window: --inflight requests of --batch texts, each under S_BATCH_BYTES
 * plus one text. */
static zbert_client_t *s_client(const s_args_t *a, size_t requests_max) {
    zbert_config_t cfg = {.brokers = a->brokers,
                          .n_brokers = a->n_brokers,
                          .retry_ms = (uint32_t)a->retry_ms,
                          .tries = (uint32_t)a->tries,
                          .requests_max = requests_max,
                          .texts_max = requests_max * (size_t)(a->batch > 0 ? a->batch : 1),
                          .bytes_max = requests_max * ((size_t)S_BATCH_BYTES + ZB_TEXT_BYTES_MAX)};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) fprintf(stderr, "zbert: %s\n", d.msg[0] ? d.msg : zbert_strerror(rc));
    return c;
}

static uint64_t s_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- progress bar ------------------------------------------------------------ */

typedef struct s_bar {
    bool on;
    bool shown; /* a bar is on the terminal line now */
    uint64_t start, last;
    off_t total;  /* input bytes, 0 when unknown */
    off_t done;   /* input bytes whose texts are all written */
    size_t texts; /* texts written */
} s_bar_t;

static void s_bar_clear(s_bar_t *b) {
    if (b->shown) fputs("\r\033[K", stderr);
    b->shown = false;
}

static void s_bar_draw(s_bar_t *b, bool force) {
    if (!b->on) return;
    uint64_t now = s_now_ms();
    if (!force && now - b->last < S_PROGRESS_MS) return;
    b->last = now;
    double sec = (double)(now - b->start) / 1000.0;
    double rate = sec > 0 ? (double)b->texts / sec : 0.0;
    char line[160];
    if (b->total > 0) {
        double f = (double)b->done / (double)b->total;
        if (f > 1) f = 1;
        enum { W = 24 };
        char bar[W + 1];
        int full = (int)(f * W + 0.5);
        for (int i = 0; i < W; i++) bar[i] = i < full ? '#' : '-';
        bar[W] = '\0';
        char eta[32] = "--:--";
        if (b->done > 0 && f < 1) {
            double left = sec * (double)(b->total - b->done) / (double)b->done;
            long s = (long)(left + 0.5);
            if (s >= 3600)
                snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
            else
                snprintf(eta, sizeof eta, "%ld:%02ld", s / 60, s % 60);
        } else if (f >= 1) {
            snprintf(eta, sizeof eta, "0:00");
        }
        snprintf(line, sizeof line, "[%s] %3d%%  %zu texts  %.1f texts/s  ETA %s", bar,
                 (int)(f * 100), b->texts, rate, eta);
    } else {
        snprintf(line, sizeof line, "%zu texts  %.1f texts/s", b->texts, rate);
    }
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    b->shown = true;
}

/* --- embed ------------------------------------------------------------------ */

/* Texts read together and sent as one request. */
typedef struct s_batch {
    zb_textio_item_t *items; /* [n] */
    size_t n;
    size_t seq0; /* input index of items[0] */
    off_t end;   /* input offset after its last line (-1: unknown) */
    size_t written;
} s_batch_t;

typedef struct s_embed {
    const s_args_t *a;
    zbert_client_t *c;
    zbert_reorder_t *ro;
    zb_textio_reader_t *reader;
    zb_textio_writer_t *writer;
    s_batch_t *ring; /* [cap] batches read and not all written */
    size_t cap, head, n_batches;
    size_t n_read; /* texts read */
    size_t n_written, n_bad;
    const char **texts; /* [batch] scratch for submitting */
    size_t *lens;
    zb_token_meta_t *meta; /* [meta_cap] one text's token metadata */
    size_t meta_cap;
    bool seekable_input;
    s_bar_t bar;
} s_embed_t;

static void s_batch_clear(s_batch_t *b) {
    for (size_t i = 0; b->items && i < b->n; i++) zb_textio_item_clear(&b->items[i]);
    free(b->items);
    *b = (s_batch_t){0};
}

/* Reads up to --batch texts and sends them.  Returns 1 when a request went
 * out, 0 at the end of the input, -1 on failure (reported). */
static int s_send_batch(s_embed_t *e) {
    const s_args_t *a = e->a;
    s_batch_t *b = &e->ring[(e->head + e->n_batches) % e->cap];
    b->items = calloc((size_t)a->batch, sizeof *b->items);
    if (b->items == NULL) {
        fprintf(stderr, "zbert: out of memory\n");
        return -1;
    }
    size_t bytes = 0;
    while (b->n < (size_t)a->batch && bytes < S_BATCH_BYTES) {
        int got = zb_textio_read(e->reader, &b->items[b->n]);
        if (got < 0 && s_stop) {
            s_batch_clear(b);
            return -1;
        }
        if (got < 0) {
            fprintf(stderr, "zbert: cannot read input: %s\n", strerror(errno));
            s_batch_clear(b);
            return -1;
        }
        if (got == 0) break;
        zb_textio_item_t *it = &b->items[b->n];
        /* A rejected line, or a text the engine refuses for its size, goes
         * as an empty text so that indices stay aligned; its result is
         * replaced by the error, as zbert-embed does. */
        bool send = it->text != NULL && it->len <= ZB_TEXT_BYTES_MAX;
        e->texts[b->n] = send ? it->text : "";
        e->lens[b->n] = send ? it->len : 0;
        bytes += e->lens[b->n];
        b->n++;
    }
    if (b->n == 0) {
        s_batch_clear(b);
        return 0;
    }
    b->seq0 = e->n_read;
    b->end = e->seekable_input ? ftello(stdin) : -1;
    e->n_read += b->n;
    uint64_t request = 0;
    zbert_diag_t d = {{0}};
    int rc = zbert_submit(e->c, e->texts, e->lens, b->n, &a->opt, NULL, &request, &d);
    if (rc == 0) rc = zbert_reorder_expect(e->ro, request, (uint32_t)b->n);
    if (rc != 0) {
        fprintf(stderr, "zbert: cannot send texts %zu..%zu: %s\n", b->seq0 + 1, b->seq0 + b->n,
                d.msg[0] ? d.msg : zbert_strerror(rc));
        s_batch_clear(b);
        return -1;
    }
    e->n_batches++;
    return 1;
}

/* Writes one text that came out of the reorder.  Returns 0 or -1. */
static int s_write_text(s_embed_t *e, const zbert_text_t *t) {
    s_batch_t *b = &e->ring[e->head];
    const zb_textio_item_t *it = &b->items[t->seq - b->seq0];
    if (e->writer == NULL) {
        /* npy needs the width, which the first result tells. */
        e->writer = zb_textio_writer_new(stdout, e->a->cli.output, &e->a->cli.opt, (int)t->dim);
        if (e->writer == NULL) {
            fprintf(stderr, "zbert: cannot write %u-dimensional vectors\n", t->dim);
            return -1;
        }
    }
    zb_textio_text_t v = {.index = t->seq, .text = it->text, .text_len = it->len};
    if (it->text == NULL)
        v.error = it->error;
    else if (it->len > ZB_TEXT_BYTES_MAX)
        v.error = zb_strerror(ZB_ELIMIT);
    else if (t->status != 0)
        v.error = t->error && *t->error ? t->error : zbert_strerror(t->status);
    else {
        v.truncated = t->truncated;
        v.n_rows = t->n_rows;
        v.dim = (int)t->dim;
        v.vectors = t->vectors;
        v.offsets = t->offsets;
        v.byte_offsets = t->byte_offsets;
        /* ids are below 2^31 (vocabularies have ~10^5 entries); int32 and
         * uint32 may alias */
        v.ids = (const int32_t *)t->ids;
        if (t->sentence && t->n_rows > 0) {
            if (t->n_rows > e->meta_cap) {
                zb_token_meta_t *m = realloc(e->meta, t->n_rows * sizeof *m);
                if (m == NULL) {
                    fprintf(stderr, "zbert: out of memory\n");
                    return -1;
                }
                e->meta = m;
                e->meta_cap = t->n_rows;
            }
            zb_client_token_meta(t, e->meta);
            /* the service sends byte spans only: UTF-16 from our text */
            zb_textio_utf16_spans(it->text, it->len, t->byte_offsets, t->n_rows, e->meta);
            v.meta = e->meta;
        }
    }
    if (zb_textio_write(e->writer, &v) != 0) {
        fprintf(stderr, "zbert: out of memory\n");
        return -1;
    }
    if (v.error) {
        e->n_bad++;
        s_bar_clear(&e->bar);
        fprintf(stderr, "zbert: input line %zu: %s\n", t->seq + 1, v.error);
    }
    e->n_written++;
    e->bar.texts = e->n_written;
    if (++b->written == b->n) {
        if (b->end >= 0) e->bar.done = b->end;
        s_batch_clear(b);
        e->head = (e->head + 1) % e->cap;
        e->n_batches--;
    }
    return 0;
}

/* The vector width when no text came back (empty input, npy): the first
 * worker's, from the broker's status. */
static int s_dim_from_status(s_embed_t *e) {
    zbert_status_t *st = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_status(e->c, e->a->timeout_ms, &st, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert: %s\n", d.msg[0] ? d.msg : zbert_strerror(rc));
        return -1;
    }
    int dim = st->n_workers ? (int)st->workers[0].dim : -1;
    zbert_status_destroy(&st);
    if (dim < 0) fprintf(stderr, "zbert: no worker is connected to tell the vector width\n");
    return dim;
}

static int s_cmd_embed(const s_args_t *a) {
    if (a->input_path && strcmp(a->input_path, "-") && !freopen(a->input_path, "rb", stdin)) {
        fprintf(stderr, "zbert: %s: %s\n", a->input_path, strerror(errno));
        return 1;
    }
    if (a->output_path && !freopen(a->output_path, "wb", stdout)) {
        fprintf(stderr, "zbert: %s: %s\n", a->output_path, strerror(errno));
        return 1;
    }
    s_embed_t e = {.a = a, .cap = (size_t)a->inflight * S_WINDOW_FACTOR};
    int status = 1;
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    struct stat sb;
    if (fstat(STDIN_FILENO, &sb) == 0 && S_ISREG(sb.st_mode)) {
        e.seekable_input = true;
        e.bar.total = sb.st_size;
    }
    e.bar.on = a->progress == S_PROGRESS_ALWAYS ||
               (a->progress == S_PROGRESS_AUTO && isatty(STDERR_FILENO));
    e.bar.start = s_now_ms();
    e.c = s_client(a, (size_t)a->inflight);
    e.ring = calloc(e.cap, sizeof *e.ring);
    e.texts = calloc((size_t)a->batch, sizeof *e.texts);
    e.lens = calloc((size_t)a->batch, sizeof *e.lens);
    e.reader = zb_textio_reader_new(stdin, a->cli.input);
    if (a->cli.output != ZB_TEXTIO_OUT_NPY)
        e.writer = zb_textio_writer_new(stdout, a->cli.output, &a->cli.opt, 0);
    if (e.c == NULL) goto out;
    if (!e.ring || !e.texts || !e.lens || !e.reader ||
        (a->cli.output != ZB_TEXTIO_OUT_NPY && !e.writer) || zbert_reorder_new(&e.ro) != 0) {
        fprintf(stderr, "zbert: out of memory\n");
        goto out;
    }
    /* No SA_RESTART: a read blocked on a terminal or pipe returns. */
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    bool eof = false;
    for (;;) {
        if (s_stop) goto out;
        while (!eof && zbert_open_requests(e.c) < (size_t)a->inflight && e.n_batches < e.cap) {
            int rc = s_send_batch(&e);
            if (rc < 0) goto out;
            if (rc == 0) eof = true;
        }
        if (eof && e.n_batches == 0) break;
        zbert_event_t *ev = NULL;
        int rc = zbert_next(e.c, e.bar.on ? S_PROGRESS_MS : 1000, &ev);
        if (rc != 0) {
            s_bar_clear(&e.bar);
            fprintf(stderr, "zbert: %s\n", zbert_strerror(rc));
            goto out;
        }
        if (ev && ev->type == ZBERT_EVENT_ERROR) {
            s_bar_clear(&e.bar);
            fprintf(stderr, "zbert: request failed (%s): %s\n", ev->code_name, ev->message);
            zbert_event_destroy(&ev);
            goto out;
        }
        if (ev && zbert_reorder_push(e.ro, &ev) != 0) {
            fprintf(stderr, "zbert: out of memory\n");
            goto out;
        }
        zbert_text_t t;
        while (zbert_reorder_pop(e.ro, &t) == 1)
            if (s_write_text(&e, &t) != 0) goto out;
        s_bar_draw(&e.bar, false);
    }
    if (e.writer == NULL) { /* npy of no text at all */
        int dim = s_dim_from_status(&e);
        if (dim <= 0) goto out;
        e.writer = zb_textio_writer_new(stdout, a->cli.output, &a->cli.opt, dim);
        if (e.writer == NULL) goto out;
    }
    s_bar_draw(&e.bar, true);
    s_bar_clear(&e.bar);
    if (zb_textio_writer_finish(e.writer) != 0) {
        fprintf(stderr, "zbert: cannot write output: %s\n", strerror(errno));
        goto out;
    }
    status = 0;
    if (e.n_bad) {
        fprintf(stderr, "zbert: %zu of %zu input lines rejected%s\n", e.n_bad, e.n_written,
                a->cli.output == ZB_TEXTIO_OUT_NPY ? " (their rows are NaN)" : "");
        status = 1;
    }
out:
    s_bar_clear(&e.bar);
    if (s_stop) {
        fprintf(stderr, "zbert: interrupted; %zu of %zu texts written\n", e.n_written, e.n_read);
        status = 130;
    }
    fflush(stdout);
    for (size_t i = 0; e.ring && i < e.cap; i++) s_batch_clear(&e.ring[i]);
    free(e.ring);
    free(e.texts);
    free(e.lens);
    free(e.meta);
    zb_textio_reader_destroy(&e.reader);
    zb_textio_writer_destroy(&e.writer);
    zbert_reorder_destroy(&e.ro);
    zbert_client_destroy(&e.c);
    return status;
}

/* --- status ------------------------------------------------------------------ */

/* Copies a name from the network with control characters as '?', so that
 * a peer cannot write escape sequences to the terminal. */
static void s_clean(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

static void s_duration(char *buf, size_t cap, uint64_t ms) {
    uint64_t s = ms / 1000;
    if (s >= 86400)
        snprintf(buf, cap, "%llud %02lluh %02llum", (unsigned long long)(s / 86400),
                 (unsigned long long)(s / 3600 % 24), (unsigned long long)(s / 60 % 60));
    else if (s >= 3600)
        snprintf(buf, cap, "%lluh %02llum %02llus", (unsigned long long)(s / 3600),
                 (unsigned long long)(s / 60 % 60), (unsigned long long)(s % 60));
    else if (s >= 60)
        snprintf(buf, cap, "%llum %02llus", (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    else
        snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
}

static void s_print_table(const char *broker, const zbert_status_t *st) {
    char up[64];
    s_duration(up, sizeof up, st->uptime_ms);
    printf("broker      %s\n", broker);
    printf("uptime      %s\n", up);
    printf("requests    %llu open\n", (unsigned long long)st->requests);
    printf("queued      %llu shards, %llu texts\n", (unsigned long long)st->queued_shards,
           (unsigned long long)st->queued_texts);
    printf("in flight   %llu shards\n", (unsigned long long)st->in_flight_shards);
    printf("throughput  %.1f texts/s, %.1f tokens/s (last 10 s)\n", st->texts_per_s,
           st->tokens_per_s);
    printf("latency     p50 %.1f ms, p90 %.1f ms, p99 %.1f ms (last 1000 requests)\n",
           st->latency_p50_ms, st->latency_p90_ms, st->latency_p99_ms);
    printf("errors      %llu malformed messages\n", (unsigned long long)st->protocol_errors);
    printf("workers     %zu\n", st->n_workers);
    if (st->n_workers == 0) return;
    int wn = 6, wm = 5;
    for (size_t i = 0; i < st->n_workers; i++) {
        s_clean(st->workers[i].name);
        s_clean(st->workers[i].model);
        int ln = (int)strlen(st->workers[i].name), lm = (int)strlen(st->workers[i].model);
        if (ln > wn) wn = ln > 64 ? 64 : ln;
        if (lm > wm) wm = lm > 64 ? 64 : lm;
    }
    printf("\n%-*s  %-*s  %6s %7s %6s %9s %10s %12s %8s\n", wn, "WORKER", wm, "MODEL", "DIM",
           "THREADS", "CREDIT", "IN-FLIGHT", "SHARDS", "TOKENS", "IDLE");
    for (size_t i = 0; i < st->n_workers; i++) {
        const zbert_worker_status_t *w = &st->workers[i];
        char idle[64];
        s_duration(idle, sizeof idle, w->idle_ms);
        printf("%-*.*s  %-*.*s  %6u %7u %6u %9llu %10llu %12llu %8s\n", wn, wn, w->name, wm, wm,
               w->model, w->dim, w->threads, w->credit, (unsigned long long)w->in_flight,
               (unsigned long long)w->shards, (unsigned long long)w->tokens, idle);
    }
}

static int s_print_json(const char *broker, const zbert_status_t *st) {
    cJSON *o = cJSON_CreateObject(), *lat = NULL, *ws = NULL;
    int rc = -1;
    if (o == NULL) return -1;
#define NUM(obj, key, val)                                                                         \
    do {                                                                                           \
        if (!cJSON_AddNumberToObject(obj, key, (double)(val))) goto out;                           \
    } while (0)
    if (!cJSON_AddStringToObject(o, "broker", broker)) goto out;
    NUM(o, "uptime_ms", st->uptime_ms);
    NUM(o, "requests", st->requests);
    NUM(o, "queued_shards", st->queued_shards);
    NUM(o, "queued_texts", st->queued_texts);
    NUM(o, "in_flight_shards", st->in_flight_shards);
    NUM(o, "texts_per_s", st->texts_per_s);
    NUM(o, "tokens_per_s", st->tokens_per_s);
    if ((lat = cJSON_AddObjectToObject(o, "latency_ms")) == NULL) goto out;
    NUM(lat, "p50", st->latency_p50_ms);
    NUM(lat, "p90", st->latency_p90_ms);
    NUM(lat, "p99", st->latency_p99_ms);
    NUM(o, "protocol_errors", st->protocol_errors);
    if ((ws = cJSON_AddArrayToObject(o, "workers")) == NULL) goto out;
    for (size_t i = 0; i < st->n_workers; i++) {
        const zbert_worker_status_t *w = &st->workers[i];
        cJSON *x = cJSON_CreateObject();
        if (x == NULL) goto out;
        cJSON_AddItemToArray(ws, x);
        if (!cJSON_AddStringToObject(x, "name", w->name) ||
            !cJSON_AddStringToObject(x, "model", w->model))
            goto out;
        NUM(x, "dim", w->dim);
        NUM(x, "threads", w->threads);
        NUM(x, "credit", w->credit);
        NUM(x, "in_flight", w->in_flight);
        NUM(x, "shards", w->shards);
        NUM(x, "tokens", w->tokens);
        NUM(x, "idle_ms", w->idle_ms);
    }
#undef NUM
    char *text = cJSON_Print(o);
    if (text == NULL) goto out;
    puts(text);
    free(text);
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

static int s_cmd_status(const s_args_t *a) {
    zbert_client_t *c = s_client(a, 1);
    if (c == NULL) return 1;
    zbert_status_t *st = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_status(c, a->timeout_ms, &st, &d);
    zbert_client_destroy(&c);
    if (rc != 0) {
        fprintf(stderr, "zbert: %s\n", d.msg[0] ? d.msg : zbert_strerror(rc));
        return 1;
    }
    const char *broker = a->brokers[0];
    if (a->json) {
        rc = s_print_json(broker, st);
    } else {
        s_print_table(broker, st);
    }
    zbert_status_destroy(&st);
    if (rc != 0 || fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "zbert: cannot write output\n");
        return 1;
    }
    return 0;
}

/* --- main --------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        s_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    s_args_t a = {.cmd = argv[1]};
    if (strcmp(a.cmd, "embed") && strcmp(a.cmd, "status")) {
        fprintf(stderr, "zbert: unknown command '%s'\n", a.cmd);
        s_usage(stderr);
        return 2;
    }
    if (s_parse_args(argc, argv, &a) != 0) return 2;
    zb_settings_file_t *conf = NULL;
    zb_diag_t d = {{0}};
    if (zb_settings_file_load(a.config, &conf, &d) != 0) {
        fprintf(stderr, "zbert: %s\n", d.msg);
        return 2;
    }
    int rc = s_settings(&a, conf);
    int status = 2;
    if (rc == 0) {
        zb_log_init("zbert", zb_log_parse_level(a.log_level));
        bool embed = !strcmp(a.cmd, "embed");
        /* the defaults and refusals zbert-embed has, from the same code */
        if (embed && zb_cliopt_finish(&a.cli, "zbert") == 0) {
            uint32_t deadline_ms = a.opt.deadline_ms;
            zb_client_options_to_public(&a.cli.opt, &a.opt);
            a.opt.deadline_ms = deadline_ms;
            status = s_cmd_embed(&a);
        } else if (!embed) {
            status = s_cmd_status(&a);
        }
    }
    free(a.broker_list);
    zb_settings_file_destroy(&conf);
    return status;
}
