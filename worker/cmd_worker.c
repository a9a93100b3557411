/*
 * cmd_worker.c -- zbert-worker: serves one model to one or more brokers.
 *
 *   zbert-worker --model PATH [--broker EP ...] [--threads N] [--credit N]
 *                [--name NAME] [--batch-texts N] [--batch-tokens N]
 *                [--curve-key FILE --broker-key FILE.pub ...]
 *                [--config FILE] [--log-level error|warn|info|debug]
 *
 * The settings are one proto/settings table, read from the command line,
 * ZBERT_* environment variables and a config file (--config FILE, else
 * $ZBERT_CONFIG), in that precedence, then the defaults; --help is
 * generated from the table and deploy/zbert-worker.conf.example documents
 * the same keys.  The model is mapped once (a .zbm bundle is shared with
 * every other process of the node through the page cache) and served by
 * one embedder to every broker by the worker agent (worker/agent.h:
 * threads, liveness, epochs, draining, hostile input).  The liveness
 * intervals are not settings: PROTOCOL.md 6 fixes them for both sides.
 *
 * CURVE: --curve-key (this worker's secret key file, from `zbert keygen`)
 * and --broker-key (each broker's public key file: one for every --broker,
 * or one per --broker in the same order) go together.  The files are read
 * before the model, so that a worker with a key it cannot use refuses to
 * start at once, saying which file and why.
 *
 * SIGTERM or SIGINT: tasks arriving from then on are dropped, queued and
 * running tasks are finished and their results sent, every broker gets
 * `bye`, and the process exits 0.  A second signal leaves at once (exit 1).
 *
 * Exit status: 0 after a drain, 1 when the worker cannot start or its loop
 * fails (or on a second signal), 2 for a usage error (a key file that
 * cannot be used included).
 */
#include <cblas.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "curve.h"
#include "embed.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "model.h"
#include "settings.h"

#define S_PROGRAM "zbert-worker"

/* A literal of a numeric macro, for the table's default texts. */
#define S_STR_(x) #x
#define S_STR(x)  S_STR_(x)

/* The only mutable global: signals received (SIGTERM/SIGINT). */
static volatile sig_atomic_t s_signals;

static void s_on_signal(int sig) {
    (void)sig;
    s_signals = s_signals + 1;
}

/* --- settings ----------------------------------------------------------- */

/* What the table fills; written once, in main. */
typedef struct s_args {
    char model[4096];          /* a path: PATH_MAX on Linux */
    zb_settings_list_t broker; /* the endpoints, one DEALER each */
    char name[ZB_MSG_NAME_BYTES_MAX + 1];
    int threads;
    int batch_texts;
    int batch_tokens; /* 0: the engine's default */
    uint32_t credit;  /* 0: the agent's default (zb_agent_credit) */
    int log_level;
    char curve_key[4096];          /* a path; "": no CURVE */
    zb_settings_list_t broker_key; /* 1, or one per broker */
} s_args_t;

/* Settings without a table default hold what s_defaults() computed at
 * start; their help says what that is. */
#define S_AT(f) ZB_SETTINGS_AT(s_args_t, f)
static const zb_settings_t s_table[] = {
    {.name = "model",
     .kind = ZB_SETTINGS_STRING,
     S_AT(model),
     .min = 1,
     .max = sizeof((s_args_t *)0)->model - 1,
     .value_name = "PATH",
     .help = "a .zbm bundle or a Hugging Face directory",
     .flags = ZB_SETTINGS_REQUIRED},
    /* The agent counts brokers in an int, and nothing else bounds them:
     * the command line and a file's 4 KiB lines do, in practice. */
    {.name = "broker",
     .kind = ZB_SETTINGS_LIST,
     S_AT(broker),
     .min = 1,
     .max = INT_MAX,
     .def = "tcp://127.0.0.1:5556",
     .value_name = "EP",
     .help = "a broker's worker endpoint; several (comma-separated in the file) to serve each"},
    /* CURVE: both or neither (main checks); an empty value is no file */
    {.name = "curve-key",
     .kind = ZB_SETTINGS_STRING,
     S_AT(curve_key),
     .max = sizeof((s_args_t *)0)->curve_key - 1,
     .value_name = "FILE",
     .def_help = "no CURVE",
     .help = "this worker's secret key file (NAME.key of zbert keygen): connect with CurveZMQ, "
             "with --broker-key"},
    {.name = "broker-key",
     .kind = ZB_SETTINGS_LIST,
     S_AT(broker_key),
     .max = INT_MAX,
     .value_name = "FILE",
     .help = "the broker's public key file (its NAME.pub): one for every --broker, or one per "
             "--broker in the same order"},
    {.name = "name",
     .kind = ZB_SETTINGS_STRING,
     S_AT(name),
     .min = 1,
     .max = ZB_MSG_NAME_BYTES_MAX,
     .def_help = "<hostname>:<pid>",
     .value_name = "NAME",
     .help = "the name shown in the broker's status"},
    {.name = "threads",
     .kind = ZB_SETTINGS_INT,
     S_AT(threads),
     .min = 1,
     .max = ZB_THREADS_MAX,
     .def_help = "the CPUs online",
     .value_name = "N",
     .help = "OpenMP threads of the engine"},
    {.name = "batch-texts",
     .kind = ZB_SETTINGS_INT,
     S_AT(batch_texts),
     .min = 1,
     .max = ZB_MSG_TEXTS_MAX,
     .def = S_STR(ZB_AGENT_BATCH_TEXTS),
     .value_name = "N",
     .help = "texts one engine run takes at most when queued tasks are merged"},
    {.name = "batch-tokens",
     .kind = ZB_SETTINGS_INT,
     S_AT(batch_tokens),
     .min = 0,
     .max = ZB_BATCH_TOKENS_MAX,
     .def = "0",
     .value_name = "N",
     .help = "tokens of one encoder batch; 0: as the engine chooses"},
    {.name = "credit",
     .kind = ZB_SETTINGS_U32,
     S_AT(credit),
     .min = 1,
     .max = ZB_MSG_CREDIT_MAX,
     .def_help = "2 x ceil(batch-texts / 64), at least 2",
     .value_name = "N",
     .help = "tasks each broker may have on this worker at once"},
    ZB_SETTINGS_LOG_LEVEL(s_args_t, log_level, "info", "what to log"),
};
#undef S_AT

static const char s_about[] =
    "SIGINT or SIGTERM: take no more tasks, finish and send the queued and running ones, say\n"
    "bye to every broker, exit 0; a second signal exits at once (1).  Exit status: 1 when the\n"
    "worker cannot start or fails, 2 on a usage error (a key file that cannot be used\n"
    "included).\n"
    "The keys are documented in deploy/zbert-worker.conf.example.\n";

/* The defaults known only at run time: the CPUs online, this host and
 * process, the agent's credit. */
static void s_defaults(s_args_t *a) {
    memset(a, 0, sizeof *a);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    a->threads = cpus < 1 ? 1 : cpus > ZB_THREADS_MAX ? ZB_THREADS_MAX : (int)cpus;
    char host[200] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    snprintf(a->name, sizeof a->name, "%s:%ld", host, (long)getpid());
    zb_agent_config_t acfg;
    zb_agent_config_default(&acfg);
    a->credit = acfg.credit;
}

/* The CURVE settings: both or neither, one broker key for every broker or
 * one per broker, every file readable as what it must be (the secret one
 * not readable by others).  Fills *self and broker[] (n_keys of them) for
 * the agent.  Returns 0, or -1 after saying why on stderr (a usage
 * error). */
static int s_curve(const s_args_t *a, zb_curve_cert_t *self, zb_curve_cert_t **broker) {
    bool key = a->curve_key[0] != '\0';
    size_t n_keys = a->broker_key.n;
    *broker = NULL;
    if (!key && n_keys == 0) return 0;
    if (!key || n_keys == 0) {
        fprintf(stderr,
                S_PROGRAM ": %s needs %s too: CURVE takes this worker's secret key file and "
                          "the broker's public key file\n",
                key ? "--curve-key" : "--broker-key", key ? "--broker-key" : "--curve-key");
        return -1;
    }
    if (n_keys != 1 && n_keys != a->broker.n) {
        fprintf(stderr,
                S_PROGRAM ": %zu --broker-key files for %zu broker%s: give one for every broker, "
                          "or one per --broker in the same order\n",
                n_keys, a->broker.n, a->broker.n == 1 ? "" : "s");
        return -1;
    }
    zb_diag_t d = {{0}};
    int rc = zb_curve_load(a->curve_key, true, self, &d);
    if (rc != 0) {
        fprintf(stderr, S_PROGRAM ": --curve-key %s\n", zb_diag_text(&d, rc));
        return -1;
    }
    if ((*broker = calloc(n_keys, sizeof **broker)) == NULL) {
        fprintf(stderr, S_PROGRAM ": out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < n_keys; i++) {
        if ((rc = zb_curve_load(a->broker_key.items[i], false, &(*broker)[i], &d)) != 0) {
            fprintf(stderr, S_PROGRAM ": --broker-key %s\n", zb_diag_text(&d, rc));
            return -1;
        }
        /* only the public part of a broker's file is needed */
        explicit_bzero((*broker)[i].sec, sizeof(*broker)[i].sec);
        (*broker)[i].has_secret = false;
    }
    return 0;
}

/* --- main -------------------------------------------------------------------- */

int main(int argc, char **argv) {
    s_args_t a;
    s_defaults(&a);
    const zb_settings_group_t groups[] = {{s_table, sizeof s_table / sizeof *s_table, &a, false}};
    const zb_settings_program_t prog = {
        .name = S_PROGRAM, .about = s_about, .groups = groups, .n_groups = 1};
    zb_settings_result_t res;
    zb_diag_t d = {{0}};
    int status = 2;
    zb_model_t *model = NULL;
    zb_embed_t *emb = NULL;
    zb_agent_t *agent = NULL;
    zb_curve_cert_t curve = {0}, *broker_certs = NULL;
    int rc = zb_settings_parse(&prog, argc, argv, &res, &d);
    if (rc < 0) {
        fprintf(stderr, S_PROGRAM ": %s (see " S_PROGRAM " --help)\n", zb_diag_text(&d, rc));
        goto out;
    }
    if (res.help) {
        zb_settings_help(&prog, stdout);
        status = 0;
        goto out;
    }
    zb_log_init(S_PROGRAM, a.log_level);
    if (s_curve(&a, &curve, &broker_certs) != 0) goto out;
    status = 1;

    if ((rc = zb_model_open(a.model, &model, &d)) != 0) {
        ZB_LOG(ZB_LOG_ERROR, "model %s: %s", a.model, zb_diag_text(&d, rc));
        goto out;
    }
    zb_embed_config_t ecfg = {.threads = a.threads, .batch_tokens_max = a.batch_tokens};
    if ((rc = zb_embed_new(model, &ecfg, &emb, &d)) != 0) {
        ZB_LOG(ZB_LOG_ERROR, "embedder: %s", zb_diag_text(&d, rc));
        goto out;
    }
    const zb_config_t *mc = zb_model_config(model);
    const char *model_id = zb_model_identity(model);
    zb_agent_config_t acfg;
    zb_agent_config_default(&acfg);
    acfg.embedder = emb;
    acfg.model = model_id;
    acfg.brokers = (const char *const *)a.broker.items;
    acfg.n_brokers = (int)a.broker.n;
    acfg.name = a.name;
    acfg.threads = a.threads;
    acfg.credit = a.credit;
    acfg.batch_texts = (size_t)a.batch_texts;
    if (curve.has_secret) {
        acfg.curve = &curve;
        acfg.broker_certs = broker_certs;
        acfg.n_broker_certs = (int)a.broker_key.n;
    }
    rc = zb_agent_new(&acfg, &agent, &d);
    /* what a broker's list of allowed keys needs from us */
    char z85[ZB_CURVE_Z85_CHARS + 1];
    if (rc == 0 && curve.has_secret)
        ZB_LOG(ZB_LOG_INFO, "CURVE: this worker's public key is %s", zb_curve_z85(curve.pub, z85));
    /* the agent has its own copy of the secret */
    explicit_bzero(&curve, sizeof curve);
    if (rc != 0) {
        ZB_LOG(ZB_LOG_ERROR, "%s", zb_diag_text(&d, rc));
        goto out;
    }
    ZB_LOG(ZB_LOG_INFO,
           "model %s: identity %s, dim %d, %d layers, vocabulary %d; threads %d, credit %u, "
           "batch texts %d; name %s",
           a.model, model_id, zb_embed_dim(emb), mc->layers, mc->vocab_size, a.threads,
           zb_agent_credit(agent), a.batch_texts, a.name);
    ZB_LOG(ZB_LOG_INFO, "OpenBLAS: %s", openblas_get_config());

    /* Signals: counted for the agent, which drains on the first and leaves
     * at once on the second.  No SA_RESTART: zmq_poll must return EINTR so
     * the loop sees the count. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = zb_agent_run(agent, &s_signals);
    /* the compute thread may be inside the engine: no clean-up */
    if (rc == ZB_ECANCELED) _exit(1);
    status = rc == 0 ? 0 : 1;
out:
    explicit_bzero(&curve, sizeof curve);
    free(broker_certs);
    zb_agent_destroy(&agent);
    zb_embed_destroy(&emb);
    zb_model_close(&model);
    zb_settings_release(&prog);
    return status;
}
