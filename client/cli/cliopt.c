/*
 * cliopt.c -- the embedding options shared by zbert-embed and `zbert embed`
 * (see cliopt.h).  The messages are those zbert-embed printed before the
 * parser was shared, so that scripts keyed on them keep working.
 */
#include "cliopt.h"

#include <stdio.h>
#include <string.h>

void zb_cliopt_init(zb_cliopt_t *o) {
    memset(o, 0, sizeof *o);
    o->opt.level = ZB_LEVEL_TOKEN;
    o->input = ZB_TEXTIO_IN_LINES;
    o->output = ZB_TEXTIO_OUT_JSONL;
}

/* Index of v in names[0..n), or -1. */
static int s_pick(const char *v, const char *const *names, int n) {
    for (int k = 0; k < n; k++)
        if (strcmp(v, names[k]) == 0) return k;
    return -1;
}

/* The value of option k (argv[*i]) from argv[*i + 1], read by options.h's
 * parsers or, for the formats only the command line has, from the tables
 * here.  Returns 0, or -1 after a line on stderr. */
static int s_value(zb_cliopt_t *o, const char *k, const char *v, const char *prog) {
    static const char *const inputs[] = {"lines", "jsonl"};
    static const zb_textio_input_t input_of[] = {ZB_TEXTIO_IN_LINES, ZB_TEXTIO_IN_JSONL};
    static const char *const formats[] = {"jsonl", "npy", "table", "sparknlp-json"};
    static const zb_textio_format_t format_of[] = {
        ZB_TEXTIO_OUT_JSONL, ZB_TEXTIO_OUT_NPY, ZB_TEXTIO_OUT_TABLE, ZB_TEXTIO_OUT_SPARKNLP_JSON};
    size_t len = strlen(v);
    int rc = 0, x;
    if (!strcmp(k, "--level")) {
        rc = zb_options_level_parse(v, len, &o->opt.level, NULL);
        if (rc == 0) o->level_set = true;
    } else if (!strcmp(k, "--pooling")) {
        rc = zb_options_pooling_parse(v, len, &o->opt.pooling, NULL);
    } else if (!strcmp(k, "--token-vector")) {
        rc = zb_options_token_vector_parse(v, len, &o->opt.token_vector, NULL);
    } else if (!strcmp(k, "--compat")) {
        rc = zb_options_compat_parse(v, len, &o->opt.compat, NULL);
    } else if (!strcmp(k, "--input-format")) {
        if ((x = s_pick(v, inputs, 2)) < 0) rc = -1;
        else o->input = input_of[x];
    } else {
        if ((x = s_pick(v, formats, 4)) < 0) rc = -1;
        else o->output = format_of[x];
    }
    if (rc != 0) {
        fprintf(stderr, "%s: bad value '%s' for %s\n", prog, v, k);
        return -1;
    }
    return 0;
}

int zb_cliopt_arg(zb_cliopt_t *o, int argc, char **argv, int *i, const char *prog) {
    static const char *const valued[] = {"--level",  "--pooling",      "--token-vector",
                                         "--compat", "--input-format", "--format"};
    const char *k = argv[*i];
    /* flags without a value */
    if (!strcmp(k, "--normalize")) {
        o->opt.normalize = true;
    } else if (!strcmp(k, "--truncate")) {
        o->opt.windows = false;
        o->windows_set = true;
    } else if (!strcmp(k, "--windows")) {
        o->opt.windows = true;
        o->windows_set = true;
    } else if (!strcmp(k, "--sentences")) {
        o->opt.sentences = true;
    } else {
        if (s_pick(k, valued, 6) < 0) return 0;
        if (*i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, k);
            return -1;
        }
        if (s_value(o, k, argv[++*i], prog) != 0) return -1;
    }
    return 1;
}

int zb_cliopt_finish(zb_cliopt_t *o, const char *prog) {
    zb_options_t *p = &o->opt;
    if (o->output == ZB_TEXTIO_OUT_NPY) {
        if (!o->level_set) p->level = ZB_LEVEL_SENTENCE;
        if (p->level != ZB_LEVEL_SENTENCE || p->tokenize_only) {
            fprintf(stderr, "%s: --format npy holds one sentence vector per text; "
                            "use it with --level sentence\n",
                    prog);
            return -1;
        }
    }
    bool token = p->level == ZB_LEVEL_TOKEN && !p->tokenize_only;
    /* The shared rules, in the command line's words; unlike the engine, the
     * command line holds them with --tokenize-only too. */
    zb_options_rule_t broken = zb_options_broken(p);
    if (broken == ZB_OPTIONS_RULE_COMPAT_LEVEL) {
        fprintf(stderr, "%s: --compat sparknlp gives token vectors (Spark NLP's "
                        "BertEmbeddings); use it with --level token\n",
                prog);
        return -1;
    }
    if (o->output == ZB_TEXTIO_OUT_SPARKNLP_JSON && !token) {
        fprintf(stderr, "%s: --format sparknlp-json writes token annotations; use it "
                        "with --level token and without --tokenize-only\n",
                prog);
        return -1;
    }
    if (broken == ZB_OPTIONS_RULE_SENTENCES_LEVEL) {
        fprintf(stderr, "%s: --sentences applies to the token and wordpiece levels\n", prog);
        return -1;
    }
    /* Token level done properly: every token gets a vector, so long texts
     * (or sentences) take windows unless truncation is asked for.  The other
     * levels truncate by default.  Spark NLP compatibility has its own cap. */
    if (token && !o->windows_set && p->compat == ZB_COMPAT_NONE) p->windows = true;
    /* sparknlp-json carries the metadata fields */
    if (o->output == ZB_TEXTIO_OUT_SPARKNLP_JSON) p->token_meta = true;
    return 0;
}
