/*
 * zbert -- the command-line client of the zbert service.
 *
 *   zbert embed  --broker EP [--broker EP2 ...] [--level wordpiece|token|sentence]
 *                [--pooling cls|mean] [--normalize] [--truncate|--windows]
 *                [--sentences] [--token-vector first|mean] [--compat none|sparknlp]
 *                [--input-format lines|jsonl] [--format jsonl|npy|table|sparknlp-json]
 *                [--batch N] [--inflight N] [--deadline-ms N] [--retry-ms N]
 *                [--tries N] [--outage-ms N] [--timeout-ms N]
 *                [--progress auto|always|never]
 *                [--model-id ID] [--config F] [--log-level L] [-o OUTPUT] [INPUT]
 *                (default: stdin, stdout)
 *   zbert status --broker EP [--json] [--timeout-ms N] [--retry-ms N] [--tries N]
 *                [--outage-ms N] [--config F] [--log-level L]
 *   zbert keygen NAME
 *
 * Both embed and status take --curve-key FILE --broker-key FILE.pub: the
 * connection is then CurveZMQ (encrypted, the broker proven by its public
 * key, this client known to the broker by its own).  `zbert keygen NAME`
 * writes such a key pair, NAME.key (secret, mode 0600) and NAME.pub, and
 * never overwrites a file.
 *
 * `zbert embed` reads and writes exactly what zbert-embed reads and writes
 * (client/cli/textio), and takes its embedding options from the same table
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
 * done and ETA when the input is a regular file.  One output holds the
 * vectors of one model: --model-id names it (only its workers serve the
 * run), else the run keeps to the model of the first results it receives
 * and names it in every later request; results of another model fail the
 * run (exit 1) before anything of them is written.
 *
 * `zbert status` prints the broker's status_reply as a table, or JSON.
 *
 * Settings are proto/settings tables, picked by the command: both commands'
 * (broker, curve-key, broker-key, retry-ms, tries, outage-ms, timeout-ms,
 * log-level)
 * and embed's (batch, inflight, deadline-ms, progress) come from the
 * command line, else
 * ZBERT_<KEY> environment variables, else the --config file (or
 * $ZBERT_CONFIG), else the defaults (see deploy/zbert.conf.example); the
 * output options (the embedding options of client/cli/cliopt, -o, --json)
 * are command line only.  `zbert COMMAND --help` is generated from the
 * tables.  Exit status: 0, 1 on failure (or rejected input lines), 2 on a
 * usage error (a key file that cannot be used included: it is read before
 * anything is sent), 130 when interrupted (SIGINT, SIGTERM: the open
 * requests are cancelled at the broker first).
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
#include "clock.h"
#include "curve.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "settings.h"
#include "textio.h"
#include "zbert.h"

/* Brokers a client fails over between at most. */
#define S_BROKERS_MAX    16
#define S_BROKER_DEFAULT "tcp://127.0.0.1:5555"

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

/* Everything the command line, the environment and the file set, filled by
 * the tables below; written once, in main. */
typedef struct s_args {
    /* both commands; also ZBERT_<KEY> and the config file */
    zb_settings_list_t broker;     /* --broker, repeatable */
    char curve_key[4096];          /* a path; "": no CURVE */
    zb_settings_list_t broker_key; /* --broker-key, repeatable: 1 or one per broker */
    int retry_ms, tries, outage_ms, timeout_ms;
    int log_level;
    /* embed; also ZBERT_<KEY> and the config file */
    int batch, inflight, deadline_ms;
    int progress; /* s_progress_t */
    /* command line only */
    zb_cliopt_t cli;                          /* embed: the embedding options shared with
                                               * zbert-embed */
    char output[4096];                        /* embed: -o, --output */
    char model_id[ZB_MSG_NAME_BYTES_MAX + 1]; /* embed: --model-id; "": the first
                                               * results' */
    bool json;                                /* status: --json */
    /* derived after parsing */
    const char *const *brokers; /* broker's entries, or the default */
    size_t n_brokers;
    zbert_options_t opt;     /* the request's: cli.opt through the client
                              * library's conversion, and --deadline-ms */
    const char *input_path;  /* NULL: stdin */
    const char *output_path; /* NULL: stdout */
} s_args_t;

#define S_AT(f) ZB_SETTINGS_AT(s_args_t, f)
static const zb_settings_t s_common_table[] = {
    /* An empty value from the file or the environment means the default
     * (main), as a key left blank did before these were tables. */
    {.name = "broker",
     .kind = ZB_SETTINGS_LIST,
     S_AT(broker),
     .max = S_BROKERS_MAX,
     .def = S_BROKER_DEFAULT,
     .value_name = "EP",
     .help = "the broker's client endpoint; several (comma-separated in the file) to fail over "
             "between"},
    /* CURVE: both or neither (main checks, and reads the files before
     * anything is sent); an empty value is no file, as for broker. */
    {.name = "curve-key",
     .kind = ZB_SETTINGS_STRING,
     S_AT(curve_key),
     .max = sizeof((s_args_t *)0)->curve_key - 1,
     .value_name = "FILE",
     .def_help = "no CURVE",
     .help = "this client's secret key file (NAME.key of zbert keygen): connect with CurveZMQ, "
             "with --broker-key"},
    {.name = "broker-key",
     .kind = ZB_SETTINGS_LIST,
     S_AT(broker_key),
     .max = S_BROKERS_MAX,
     .value_name = "FILE",
     .help = "the broker's public key file (its NAME.pub): one for every --broker, or one per "
             "--broker in the same order"},
    /* 3000 and 3 are the client library's own defaults (zbert.h). */
    {.name = "retry-ms",
     .kind = ZB_SETTINGS_INT,
     S_AT(retry_ms),
     .min = 50,
     .max = 3600000,
     .def = "3000",
     .value_name = "MS",
     .help = "a broker silent this long while requests are open is presumed gone"},
    {.name = "tries",
     .kind = ZB_SETTINGS_INT,
     S_AT(tries),
     .min = 1,
     .max = 1000,
     .def = "3",
     .value_name = "N",
     .help = "`no_model` answers (no worker for the model) a request takes before it fails; "
             "silence is bounded by outage-ms"},
    /* 300000 is the client library's default (zbert.h) */
    {.name = "outage-ms",
     .kind = ZB_SETTINGS_INT,
     S_AT(outage_ms),
     .min = 50,
     .max = 2000000000,
     .def = "300000",
     .value_name = "MS",
     .help = "how long open requests wait while no broker answers (silent, unreachable or "
             "stopping), reconnecting with growing pauses, before they fail; at least retry-ms"},
    /* embed asks for the status too: the vector width of an npy of no text */
    {.name = "timeout-ms",
     .kind = ZB_SETTINGS_INT,
     S_AT(timeout_ms),
     .min = 1,
     .max = 86400000,
     .def = "5000",
     .value_name = "MS",
     .help = "how long to wait for the broker's status"},
    ZB_SETTINGS_LOG_LEVEL(s_args_t, log_level, "warn", "what to log on stderr"),
};

static const zb_settings_t s_embed_table[] = {
    {.name = "batch",
     .kind = ZB_SETTINGS_INT,
     S_AT(batch),
     .min = 1,
     .max = ZB_MSG_TEXTS_MAX,
     .def = "64",
     .value_name = "N",
     .help = "texts per request"},
    {.name = "inflight",
     .kind = ZB_SETTINGS_INT,
     S_AT(inflight),
     .min = 1,
     .max = 1024,
     .def = "8",
     .value_name = "N",
     .help = "requests at the broker at once"},
    {.name = "deadline-ms",
     .kind = ZB_SETTINGS_INT,
     S_AT(deadline_ms),
     .min = 0,
     .max = 2000000000,
     .def = "0",
     .value_name = "MS",
     .help = "a request still open this long after sending fails; 0: no deadline"},
    {.name = "progress",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(progress),
     .choices = (const char *const[]){"auto", "always", "never", NULL},
     .def = "auto",
     .help = "progress bar on stderr; auto: when stderr is a terminal"},
};

/* Output options: what a run writes and where, never taken from a file
 * or the environment. */
static const zb_settings_t s_embed_argv_table[] = {
    {.name = "output",
     .kind = ZB_SETTINGS_STRING,
     S_AT(output),
     .max = sizeof((s_args_t *)0)->output - 1,
     .short_name = 'o',
     .value_name = "FILE",
     .def_help = "stdout",
     .help = "where to write"},
    /* what is written depends on it: command line only */
    {.name = "model-id",
     .kind = ZB_SETTINGS_STRING,
     S_AT(model_id),
     .max = ZB_MSG_NAME_BYTES_MAX,
     .value_name = "ID",
     .def_help = "the model of the first results",
     .help = "only workers of this model identity (as zbert status and zbert-model inspect show "
             "it) serve the run"},
};

static const zb_settings_t s_status_argv_table[] = {
    {.name = "json", .kind = ZB_SETTINGS_FLAG, S_AT(json), .help = "JSON instead of a table"},
};
#undef S_AT

#define S_N(t) (sizeof t / sizeof *t)

static const char s_embed_about[] =
    "INPUT (default stdin, or -) holds one text per line; the output has one object per text,\n"
    "in input order, as zbert-embed writes it.  Up to 4 x inflight x batch texts' results\n"
    "are held for in-order output.  Exit status: 0; 1 on failure or when input lines were\n"
    "rejected; 2 on a usage error; 130 when interrupted.\n"
    "The keys are documented in deploy/zbert.conf.example.\n";

static const char s_status_about[] =
    "Prints the broker's status as a table, or JSON.  Exit status: 0; 1 on failure; 2 on a\n"
    "usage error.\n"
    "The keys are documented in deploy/zbert.conf.example.\n";

static const char s_keygen_about[] =
    "Writes a new CurveZMQ key pair: NAME.key, the secret key (mode 0600: keep it where it is\n"
    "used, as --curve-key), and NAME.pub, the public key (give it to the other side: a\n"
    "broker's list of allowed keys, or a client's --broker-key).  Prints the two paths and\n"
    "the public key as Z85 text.  Files are in CZMQ's certificate format; NAME may be a path,\n"
    "its last component is the key's name.  An existing NAME.key or NAME.pub is never\n"
    "overwritten.  Exit status: 0; 1 on failure; 2 on a usage error.\n";

static void s_usage(FILE *f) {
    fputs(
        "usage: zbert embed [options] [INPUT]   embed texts through the service\n"
        "       zbert status [options]          the broker's status\n"
        "       zbert keygen NAME               a CurveZMQ key pair: NAME.key (secret), NAME.pub\n"
        "`zbert embed --help`, `zbert status --help` and `zbert keygen --help` list the "
        "options.\n",
        f);
}

/* A client for this command.  For embed, its limits are those of the
 * window: --inflight requests of --batch texts, each under S_BATCH_BYTES
 * plus one text. */
static zbert_client_t *s_client(const s_args_t *a, size_t requests_max) {
    zbert_config_t cfg = {.brokers = a->brokers,
                          .n_brokers = a->n_brokers,
                          .curve_key = a->curve_key[0] ? a->curve_key : NULL,
                          .broker_keys = (const char *const *)a->broker_key.items,
                          .n_broker_keys = a->broker_key.n,
                          .retry_ms = (uint32_t)a->retry_ms,
                          .tries = (uint32_t)a->tries,
                          .outage_ms = (uint32_t)a->outage_ms,
                          .requests_max = requests_max,
                          .texts_max = requests_max * (size_t)(a->batch > 0 ? a->batch : 1),
                          .bytes_max = requests_max * ((size_t)S_BATCH_BYTES + ZB_TEXT_BYTES_MAX)};
    zbert_client_t *c = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_client_new(&cfg, &c, &d);
    if (rc != 0) fprintf(stderr, "zbert: %s\n", d.msg[0] ? d.msg : zbert_strerror(rc));
    return c;
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
    uint64_t now = zb_clock_ms();
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
    zbert_options_t opt;                   /* a->opt, and the model once known */
    char model[ZB_MSG_NAME_BYTES_MAX + 1]; /* the run's model; "" until known */
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
    int rc = zbert_submit(e->c, e->texts, e->lens, b->n, &e->opt, NULL, &request, &d);
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

/* Checks a PART event against the run's model, which the first one naming
 * a model sets (and every later request names).  Returns 0, or -1 after
 * saying why on stderr: then nothing of the event may be written. */
static int s_check_model(s_embed_t *e, const zbert_event_t *ev) {
    if (ev->type != ZBERT_EVENT_PART || ev->model == NULL) return 0;
    if (e->model[0] == '\0') {
        snprintf(e->model, sizeof e->model, "%s", ev->model);
        e->opt.model = e->model;
        return 0;
    }
    if (strcmp(e->model, ev->model) == 0) return 0;
    s_bar_clear(&e->bar);
    fprintf(stderr,
            "zbert: results of model %s arrived for a run of model %s: one output holds one "
            "model's vectors, so nothing of them was written (choose one with --model-id)\n",
            ev->model, e->model);
    return -1;
}

/* The vector width when no text came back (empty input, npy): the first
 * worker's of the run's model (of any, when it is not known), from the
 * broker's status. */
static int s_dim_from_status(s_embed_t *e) {
    zbert_status_t *st = NULL;
    zbert_diag_t d = {{0}};
    int rc = zbert_status(e->c, e->a->timeout_ms, &st, &d);
    if (rc != 0) {
        fprintf(stderr, "zbert: %s\n", d.msg[0] ? d.msg : zbert_strerror(rc));
        return -1;
    }
    int dim = -1;
    for (size_t i = 0; i < st->n_workers && dim < 0; i++)
        if (e->model[0] == '\0' || strcmp(st->workers[i].model, e->model) == 0)
            dim = (int)st->workers[i].dim;
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
    s_embed_t e = {.a = a, .opt = a->opt, .cap = (size_t)a->inflight * S_WINDOW_FACTOR};
    if (a->opt.model) {
        snprintf(e.model, sizeof e.model, "%s", a->opt.model);
        e.opt.model = e.model;
    }
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
    e.bar.start = zb_clock_ms();
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
        if (ev && s_check_model(&e, ev) != 0) {
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
    printf("errors      %llu malformed messages, %llu bad worker results\n",
           (unsigned long long)st->protocol_errors, (unsigned long long)st->bad_results);
    if (st->has_security)
        printf("security    CurveZMQ %s, refused: %llu clients, %llu workers\n",
               st->curve ? "on" : "off", (unsigned long long)st->refused_clients,
               (unsigned long long)st->refused_workers);
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
    printf("\n%-*s  %-*s  %6s %7s %6s %9s %10s %12s %8s  %s\n", wn, "WORKER", wm, "MODEL", "DIM",
           "THREADS", "CREDIT", "IN-FLIGHT", "SHARDS", "TOKENS", "IDLE", "STATE");
    for (size_t i = 0; i < st->n_workers; i++) {
        const zbert_worker_status_t *w = &st->workers[i];
        char idle[64], state[96] = "serving";
        s_duration(idle, sizeof idle, w->idle_ms);
        if (w->quarantined_ms > 0) {
            char left[64];
            s_duration(left, sizeof left, w->quarantined_ms);
            snprintf(state, sizeof state, "set aside (%s left)", left);
        }
        printf("%-*.*s  %-*.*s  %6u %7u %6u %9llu %10llu %12llu %8s  %s\n", wn, wn, w->name, wm, wm,
               w->model, w->dim, w->threads, w->credit, (unsigned long long)w->in_flight,
               (unsigned long long)w->shards, (unsigned long long)w->tokens, idle, state);
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
    NUM(o, "bad_results", st->bad_results);
    if (st->has_security) {
        if (!cJSON_AddBoolToObject(o, "curve", st->curve)) goto out;
        NUM(o, "refused_clients", st->refused_clients);
        NUM(o, "refused_workers", st->refused_workers);
    }
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
        NUM(x, "quarantined_ms", w->quarantined_ms);
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

/* --- keys ---------------------------------------------------------------------- */

/* zbert keygen NAME: a fresh key pair as NAME.key and NAME.pub, named by
 * NAME's last component.  Returns the exit status. */
static int s_cmd_keygen(const char *base) {
    const char *slash = strrchr(base, '/');
    const char *name = slash ? slash + 1 : base;
    if (*name == '\0') {
        fprintf(stderr,
                "zbert: keygen: `%s` names a directory, not the key pair's files "
                "(NAME.key and NAME.pub)\n",
                base);
        return 2;
    }
    zb_curve_cert_t c;
    zb_diag_t d = {{0}};
    char z85[ZB_CURVE_Z85_CHARS + 1] = "";
    int rc = zb_curve_keypair(&c, name, &d);
    if (rc == 0) rc = zb_curve_save(base, &c, &d);
    if (rc == 0) zb_curve_z85(c.pub, z85);
    explicit_bzero(&c, sizeof c);
    if (rc != 0) {
        fprintf(stderr, "zbert: keygen: %s\n", zb_diag_text(&d, rc));
        return 1;
    }
    printf("secret key: %s.key\npublic key: %s.pub\npublic key (Z85): %s\n", base, base, z85);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "zbert: cannot write output\n");
        return 1;
    }
    return 0;
}

/* The CURVE settings of embed and status: both or neither, one broker key
 * for every broker or one per broker, and every file readable as what it
 * must be (the secret one not readable by others).  The files are read
 * here, before anything is sent, so that a bad one is a usage error naming
 * it; the keys are forgotten at once (the client library reads the files
 * again for its sockets).  Returns 0, or -1 after saying why on stderr. */
static int s_check_curve(const s_args_t *a) {
    bool key = a->curve_key[0] != '\0';
    size_t n_keys = a->broker_key.n;
    if (!key && n_keys == 0) return 0;
    if (!key) {
        fprintf(stderr, "zbert: --broker-key needs --curve-key too (this client's secret key "
                        "file, from zbert keygen)\n");
        return -1;
    }
    if (n_keys == 0) {
        fprintf(stderr, "zbert: --curve-key needs --broker-key too (the broker's public key "
                        "file)\n");
        return -1;
    }
    if (n_keys != 1 && n_keys != a->n_brokers) {
        fprintf(stderr,
                "zbert: %zu --broker-key files for %zu broker%s: give one for every broker, or "
                "one per --broker in the same order\n",
                n_keys, a->n_brokers, a->n_brokers == 1 ? "" : "s");
        return -1;
    }
    zb_curve_cert_t c;
    zb_diag_t d = {{0}};
    int rc = zb_curve_load(a->curve_key, true, &c, &d);
    explicit_bzero(&c, sizeof c);
    if (rc != 0) {
        fprintf(stderr, "zbert: --curve-key %s\n", zb_diag_text(&d, rc));
        return -1;
    }
    for (size_t i = 0; i < n_keys; i++) {
        rc = zb_curve_load(a->broker_key.items[i], false, &c, &d);
        explicit_bzero(&c, sizeof c);
        if (rc != 0) {
            fprintf(stderr, "zbert: --broker-key %s\n", zb_diag_text(&d, rc));
            return -1;
        }
    }
    return 0;
}

/* --- main --------------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        s_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    bool embed = !strcmp(argv[1], "embed"), keygen = !strcmp(argv[1], "keygen");
    if (!embed && !keygen && strcmp(argv[1], "status")) {
        fprintf(stderr, "zbert: unknown command '%s'\n", argv[1]);
        s_usage(stderr);
        return 2;
    }
    s_args_t a;
    memset(&a, 0, sizeof a);
    zb_cliopt_init(&a.cli);
    size_t n_cli;
    const zb_settings_t *cli_table = zb_cliopt_table(&n_cli);
    const zb_settings_group_t embed_groups[] = {
        {s_common_table, S_N(s_common_table), &a, false},
        {s_embed_table, S_N(s_embed_table), &a, false},
        {cli_table, n_cli, &a.cli, true},
        {s_embed_argv_table, S_N(s_embed_argv_table), &a, true},
    };
    const zb_settings_group_t status_groups[] = {
        {s_common_table, S_N(s_common_table), &a, false},
        {s_status_argv_table, S_N(s_status_argv_table), &a, true},
    };
    const zb_settings_program_t embed_prog = {.name = "zbert embed",
                                              .args = "[INPUT]",
                                              .args_max = 1,
                                              .about = s_embed_about,
                                              .groups = embed_groups,
                                              .n_groups = S_N(embed_groups),
                                              .hook = zb_cliopt_hook,
                                              .hook_ctx = &a.cli,
                                              .hook_help = zb_cliopt_hook_help};
    const zb_settings_program_t status_prog = {.name = "zbert status",
                                               .about = s_status_about,
                                               .groups = status_groups,
                                               .n_groups = S_N(status_groups)};
    /* no settings: nothing but its argument */
    const zb_settings_program_t keygen_prog = {.name = "zbert keygen",
                                               .args = "NAME",
                                               .args_min = 1,
                                               .args_max = 1,
                                               .about = s_keygen_about};
    const zb_settings_program_t *p = embed ? &embed_prog : keygen ? &keygen_prog : &status_prog;
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    /* argv[1], the command, stands where a program's name would */
    int rc = zb_settings_parse(p, argc - 1, argv + 1, &res, &d);
    /* the defaults and refusals zbert-embed has, from the same code */
    if (rc == 0 && !res.help && embed) rc = zb_cliopt_finish(&a.cli, p, &res, &d);
    int status = 2;
    if (rc != 0) {
        fprintf(stderr, "zbert: %s (see %s --help)\n", zb_diag_text(&d, rc), p->name);
        goto out;
    }
    if (res.help) {
        zb_settings_help(p, stdout);
        status = 0;
        goto out;
    }
    if (keygen) {
        status = s_cmd_keygen(res.args[0]);
        goto out;
    }
    static const char *const broker_default[] = {S_BROKER_DEFAULT};
    a.brokers = a.broker.n ? (const char *const *)a.broker.items : broker_default;
    a.n_brokers = a.broker.n ? a.broker.n : 1;
    zb_log_init("zbert", a.log_level);
    if (a.outage_ms < a.retry_ms) {
        fprintf(stderr,
                "zbert: outage-ms %d is below retry-ms %d: a broker is presumed gone only after "
                "retry-ms (see %s --help)\n",
                a.outage_ms, a.retry_ms, p->name);
        goto out;
    }
    if (s_check_curve(&a) != 0) goto out;
    if (embed) {
        zb_client_options_to_public(&a.cli.opt, &a.opt);
        a.opt.deadline_ms = (uint32_t)a.deadline_ms;
        if (zb_settings_source(p, &res, "model-id") == ZB_SETTINGS_FROM_ARGV) {
            if (a.model_id[0] == '\0') {
                fprintf(stderr, "zbert: --model-id is empty (see %s --help)\n", p->name);
                goto out;
            }
            a.opt.model = a.model_id;
        }
        a.input_path = res.n_args ? res.args[0] : NULL;
        /* given, even empty: opening "" fails as it always did */
        if (zb_settings_source(p, &res, "output") == ZB_SETTINGS_FROM_ARGV)
            a.output_path = a.output;
        status = s_cmd_embed(&a);
    } else {
        status = s_cmd_status(&a);
    }
out:
    zb_settings_release(p);
    return status;
}
