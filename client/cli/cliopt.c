/*
 * cliopt.c -- the embedding options shared by zbert-embed and `zbert embed`
 * (see cliopt.h).  The messages are those zbert-embed printed before the
 * parser was shared, so that scripts keyed on them keep working.
 */
#include "cliopt.h"

#include <stdio.h>
#include <string.h>

void zb_cli_embed_init(zb_cli_embed_t *o) {
    memset(o, 0, sizeof *o);
    o->level = ZB_IO_TOKEN;
    o->input = ZB_IO_IN_LINES;
    o->output = ZB_IO_OUT_JSONL;
}

/* Index of v in names[0..n), or -1. */
static int s_pick(const char *v, const char *const *names, int n) {
    for (int k = 0; k < n; k++)
        if (strcmp(v, names[k]) == 0) return k;
    return -1;
}

int zb_cli_embed_arg(zb_cli_embed_t *o, int argc, char **argv, int *i, const char *prog) {
    static const char *const levels[] = {"token", "wordpiece", "sentence"};
    static const zb_io_level_t level_of[] = {ZB_IO_TOKEN, ZB_IO_WORDPIECE, ZB_IO_SENTENCE};
    static const char *const poolings[] = {"cls", "mean"};
    static const char *const tokvecs[] = {"first", "mean"};
    static const char *const compats[] = {"none", "sparknlp"};
    static const char *const inputs[] = {"lines", "jsonl"};
    static const zb_io_input_t input_of[] = {ZB_IO_IN_LINES, ZB_IO_IN_JSONL};
    static const char *const formats[] = {"jsonl", "npy", "table", "sparknlp-json"};
    static const zb_io_format_t format_of[] = {ZB_IO_OUT_JSONL, ZB_IO_OUT_NPY, ZB_IO_OUT_TABLE,
                                               ZB_IO_OUT_SPARKNLP_JSON};
    const char *k = argv[*i];
    /* flags without a value */
    if (!strcmp(k, "--normalize")) {
        o->normalize = true;
    } else if (!strcmp(k, "--truncate")) {
        o->windows = false;
        o->windows_set = true;
    } else if (!strcmp(k, "--windows")) {
        o->windows = true;
        o->windows_set = true;
    } else if (!strcmp(k, "--sentences")) {
        o->sentences = true;
    } else {
        const char *const *names;
        int n;
        if (!strcmp(k, "--level")) names = levels, n = 3;
        else if (!strcmp(k, "--pooling")) names = poolings, n = 2;
        else if (!strcmp(k, "--token-vector")) names = tokvecs, n = 2;
        else if (!strcmp(k, "--compat")) names = compats, n = 2;
        else if (!strcmp(k, "--input-format")) names = inputs, n = 2;
        else if (!strcmp(k, "--format")) names = formats, n = 4;
        else return 0;
        if (*i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, k);
            return -1;
        }
        const char *v = argv[++*i];
        int x = s_pick(v, names, n);
        if (x < 0) {
            fprintf(stderr, "%s: bad value '%s' for %s\n", prog, v, k);
            return -1;
        }
        if (names == levels) {
            o->level = level_of[x];
            o->level_set = true;
        } else if (names == poolings) {
            o->pooling_mean = x == 1;
        } else if (names == tokvecs) {
            o->token_vector_mean = x == 1;
        } else if (names == compats) {
            o->compat_sparknlp = x == 1;
        } else if (names == inputs) {
            o->input = input_of[x];
        } else {
            o->output = format_of[x];
        }
    }
    return 1;
}

int zb_cli_embed_finish(zb_cli_embed_t *o, const char *prog) {
    if (o->output == ZB_IO_OUT_NPY) {
        if (!o->level_set) o->level = ZB_IO_SENTENCE;
        if (o->level != ZB_IO_SENTENCE || o->tokenize_only) {
            fprintf(stderr, "%s: --format npy holds one sentence vector per text; "
                            "use it with --level sentence\n",
                    prog);
            return -1;
        }
    }
    bool token = o->level == ZB_IO_TOKEN && !o->tokenize_only;
    if (o->compat_sparknlp && o->level != ZB_IO_TOKEN) {
        fprintf(stderr, "%s: --compat sparknlp gives token vectors (Spark NLP's "
                        "BertEmbeddings); use it with --level token\n",
                prog);
        return -1;
    }
    if (o->output == ZB_IO_OUT_SPARKNLP_JSON && !token) {
        fprintf(stderr, "%s: --format sparknlp-json writes token annotations; use it "
                        "with --level token and without --tokenize-only\n",
                prog);
        return -1;
    }
    if (o->sentences && o->level == ZB_IO_SENTENCE) {
        fprintf(stderr, "%s: --sentences applies to the token and wordpiece levels\n", prog);
        return -1;
    }
    /* Token level done properly: every token gets a vector, so long texts
     * (or sentences) take windows unless truncation is asked for.  The other
     * levels truncate by default.  Spark NLP compatibility has its own cap. */
    if (token && !o->windows_set && !o->compat_sparknlp) o->windows = true;
    /* sparknlp-json carries the metadata fields */
    if (o->output == ZB_IO_OUT_SPARKNLP_JSON) o->token_meta = true;
    return 0;
}
