/*
 * cmd_worker.c -- zbert-worker: serves one model to one or more brokers.
 *
 *   zbert-worker --model PATH --broker EP [--broker EP ...] --threads N
 *                [--credit N] [--name NAME] [--batch-texts N]
 *                [--batch-tokens N] [--config FILE] [--log-level L]
 *
 * Settings come from the command line, ZBERT_* environment variables and a
 * config file, in that precedence, then the defaults.  The model is mapped
 * once (a .zbm bundle is shared with every other process of the node
 * through the page cache) and served by one embedder to every broker by
 * the worker agent (worker/agent.h: threads, liveness, epochs, draining,
 * hostile input).
 *
 * SIGTERM or SIGINT: tasks arriving from then on are dropped, queued and
 * running tasks are finished and their results sent, every broker gets
 * `bye`, and the process exits 0.  A second signal leaves at once (exit 1).
 *
 * Exit status: 0 after a drain, 1 when the worker cannot start or its loop
 * fails (or on a second signal), 2 for a usage error.
 */
#include <cblas.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "settings.h"
#include "embed.h"
#include "error.h"
#include "limits.h"
#include "log.h"
#include "model.h"

#define S_PROGRAM        "zbert-worker"
#define S_DEFAULT_BROKER "tcp://127.0.0.1:5556"

/* The only mutable global: signals received (SIGTERM/SIGINT). */
static volatile sig_atomic_t s_signals;

static void s_on_signal(int sig) {
    (void)sig;
    s_signals = s_signals + 1;
}

/* --- settings ----------------------------------------------------------- */

typedef struct s_args {
    const char *model;
    char **brokers; /* [n_brokers] (malloc'd strings) */
    int n_brokers;
    int threads;
    int credit; /* 0: the agent's default (zb_agent_credit) */
    int batch_texts;
    int batch_tokens;
    char name[ZB_MSG_NAME_BYTES_MAX + 1];
    int log_level;
} s_args_t;

static void s_usage(FILE *f) {
    fputs("usage: zbert-worker --model PATH --broker EP [--broker EP ...] --threads N\n"
          "                    [--credit N] [--name NAME] [--batch-texts N]\n"
          "                    [--batch-tokens N] [--config FILE]\n"
          "                    [--log-level error|warn|info|debug]\n"
          "PATH is a .zbm bundle or a Hugging Face directory; EP a broker's worker\n"
          "endpoint (default " S_DEFAULT_BROKER "). Keys of FILE and ZBERT_* variables:\n"
          "deploy/zbert-worker.conf.example.\n",
          f);
}

static int s_parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (errno || e == s || *e || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static void s_free_brokers(s_args_t *a) {
    for (int i = 0; i < a->n_brokers; i++) free(a->brokers[i]);
    free(a->brokers);
    a->brokers = NULL;
    a->n_brokers = 0;
}

static int s_add_broker(s_args_t *a, const char *ep, size_t len) {
    if (len == 0) return 0;
    char **p = realloc(a->brokers, (size_t)(a->n_brokers + 1) * sizeof *p);
    if (p == NULL) return -1;
    a->brokers = p;
    if ((p[a->n_brokers] = strndup(ep, len)) == NULL) return -1;
    a->n_brokers++;
    return 0;
}

/* A comma-separated list, each entry trimmed. */
static int s_add_broker_list(s_args_t *a, const char *list) {
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if (s_add_broker(a, p, (size_t)(t - p)) != 0) return -1;
        p = e;
    }
    return 0;
}

/* One numeric setting: the command line's value, else the config's
 * (environment, then file), else def. */
static int s_setting_int(const zb_settings_file_t *conf, const char *key, const char *cli, int lo, int hi,
                         int def, int *out) {
    const char *v = cli ? cli : zb_settings_file_get(conf, key);
    if (v == NULL) {
        *out = def;
        return 0;
    }
    if (s_parse_int(v, lo, hi, out) != 0) {
        fprintf(stderr, S_PROGRAM ": %s: '%s' is not a whole number in %d..%d\n", key, v, lo, hi);
        return -1;
    }
    return 0;
}

static int s_parse_args(int argc, char **argv, s_args_t *a) {
    memset(a, 0, sizeof *a);
    const char *cli_threads = NULL, *cli_credit = NULL, *cli_batch_texts = NULL,
               *cli_batch_tokens = NULL, *cli_name = NULL, *cli_level = NULL, *config = NULL;
    int rc = -1;
    zb_settings_file_t *conf = NULL;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            s_usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, S_PROGRAM ": %s needs a value (or is unknown)\n", k);
            s_usage(stderr);
            goto out;
        }
        const char *v = argv[++i];
        if (!strcmp(k, "--model"))
            a->model = v;
        else if (!strcmp(k, "--broker")) {
            if (s_add_broker(a, v, strlen(v)) != 0) goto oom;
        } else if (!strcmp(k, "--threads"))
            cli_threads = v;
        else if (!strcmp(k, "--credit"))
            cli_credit = v;
        else if (!strcmp(k, "--batch-texts"))
            cli_batch_texts = v;
        else if (!strcmp(k, "--batch-tokens"))
            cli_batch_tokens = v;
        else if (!strcmp(k, "--name"))
            cli_name = v;
        else if (!strcmp(k, "--log-level"))
            cli_level = v;
        else if (!strcmp(k, "--config"))
            config = v;
        else {
            fprintf(stderr, S_PROGRAM ": unknown option '%s'\n", k);
            s_usage(stderr);
            goto out;
        }
    }
    zb_diag_t d = {{0}};
    int crc = zb_settings_file_load(config, &conf, &d);
    if (crc != 0) {
        fprintf(stderr, S_PROGRAM ": config: %s\n", zb_diag_text(&d, crc));
        goto out;
    }
    if (a->model == NULL) a->model = zb_settings_file_get(conf, "model");
    if (a->model == NULL || *a->model == '\0') {
        fprintf(stderr, S_PROGRAM ": --model PATH is required\n");
        s_usage(stderr);
        goto out;
    }
    if (a->n_brokers == 0) {
        const char *list = zb_settings_file_get(conf, "broker");
        if (s_add_broker_list(a, list ? list : S_DEFAULT_BROKER) != 0) goto oom;
        if (a->n_brokers == 0) {
            fprintf(stderr, S_PROGRAM ": broker: no endpoint in '%s'\n", list);
            goto out;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int def_threads = cpus < 1 ? 1 : cpus > ZB_THREADS_MAX ? ZB_THREADS_MAX : (int)cpus;
    if (s_setting_int(conf, "threads", cli_threads, 1, ZB_THREADS_MAX, def_threads, &a->threads) ||
        s_setting_int(conf, "batch-texts", cli_batch_texts, 1, (int)ZB_MSG_TEXTS_MAX,
                      ZB_AGENT_BATCH_TEXTS, &a->batch_texts) ||
        s_setting_int(conf, "batch-tokens", cli_batch_tokens, 0, ZB_BATCH_TOKENS_MAX, 0,
                      &a->batch_tokens) ||
        s_setting_int(conf, "credit", cli_credit, 1, (int)ZB_MSG_CREDIT_MAX, 0, &a->credit))
        goto out;
    const char *name = cli_name ? cli_name : zb_settings_file_get(conf, "name");
    if (name) {
        size_t n = strlen(name);
        if (n == 0 || n > ZB_MSG_NAME_BYTES_MAX) {
            fprintf(stderr, S_PROGRAM ": name: %zu bytes, not 1..%u\n", n, ZB_MSG_NAME_BYTES_MAX);
            goto out;
        }
        memcpy(a->name, name, n + 1);
    } else {
        char host[200] = "localhost";
        if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(a->name, sizeof a->name, "%s:%ld", host, (long)getpid());
    }
    const char *lv = cli_level ? cli_level : zb_settings_file_get(conf, "log-level");
    a->log_level = lv ? zb_log_parse_level(lv) : ZB_LOG_INFO;
    if (a->log_level < 0) {
        fprintf(stderr, S_PROGRAM ": log-level: '%s' is not error, warn, info or debug\n", lv);
        goto out;
    }
    /* zb_settings_file_get's value lives in the config (or environment), which is
     * released below: keep a copy. */
    if ((a->model = strdup(a->model)) == NULL) goto oom;
    rc = 0;
    goto out;
oom:
    fprintf(stderr, S_PROGRAM ": out of memory\n");
out:
    zb_settings_file_destroy(&conf);
    if (rc != 0) s_free_brokers(a);
    return rc;
}

/* --- main -------------------------------------------------------------------- */

int main(int argc, char **argv) {
    s_args_t a;
    if (s_parse_args(argc, argv, &a) != 0) return 2;
    zb_log_init(S_PROGRAM, a.log_level);

    int status = 1;
    zb_diag_t d = {{0}};
    zb_model_t *model = NULL;
    zb_embed_t *emb = NULL;
    zb_agent_t *agent = NULL;

    int rc = zb_model_open(a.model, &model, &d);
    if (rc != 0) {
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
    acfg.brokers = (const char *const *)a.brokers;
    acfg.n_brokers = a.n_brokers;
    acfg.name = a.name;
    acfg.threads = a.threads;
    acfg.credit = (uint32_t)a.credit;
    acfg.batch_texts = (size_t)a.batch_texts;
    if ((rc = zb_agent_new(&acfg, &agent, &d)) != 0) {
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
    zb_agent_destroy(&agent);
    zb_embed_destroy(&emb);
    zb_model_close(&model);
    free((char *)a.model);
    s_free_brokers(&a);
    return status;
}
