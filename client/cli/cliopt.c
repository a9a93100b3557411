/*
 * cliopt.c -- the embedding options shared by zbert-embed and `zbert embed`
 * (see cliopt.h): their settings table, the hook for --truncate and
 * --windows, and the rules that tie the options together.  The choices'
 * spellings are options.h's names (tests/test_cliopt.c checks each one
 * against zb_options_*_parse).
 */
#include "cliopt.h"

#include <string.h>

void zb_cliopt_init(zb_cliopt_t *o) {
    memset(o, 0, sizeof *o);
    o->opt.level = ZB_LEVEL_TOKEN;
    o->input = ZB_TEXTIO_IN_LINES;
    o->output = ZB_TEXTIO_OUT_JSONL;
}

/* Choices in the order help shows them, and the value each one stores. */
static const char *const s_levels[] = {"wordpiece", "token", "sentence", NULL};
static const int s_level_values[] = {ZB_LEVEL_WORDPIECE, ZB_LEVEL_TOKEN, ZB_LEVEL_SENTENCE};
static const char *const s_poolings[] = {"cls", "mean", NULL};
static const int s_pooling_values[] = {ZB_POOLING_CLS, ZB_POOLING_MEAN};
static const char *const s_token_vectors[] = {"first", "mean", NULL};
static const int s_token_vector_values[] = {ZB_TOKEN_VECTOR_FIRST, ZB_TOKEN_VECTOR_MEAN};
static const char *const s_compats[] = {"none", "sparknlp", NULL};
static const int s_compat_values[] = {ZB_COMPAT_NONE, ZB_COMPAT_SPARKNLP};
static const char *const s_inputs[] = {"lines", "jsonl", NULL};
static const int s_input_values[] = {ZB_TEXTIO_IN_LINES, ZB_TEXTIO_IN_JSONL};
static const char *const s_formats[] = {"jsonl", "npy", "table", "sparknlp-json", NULL};
static const int s_format_values[] = {ZB_TEXTIO_OUT_JSONL, ZB_TEXTIO_OUT_NPY, ZB_TEXTIO_OUT_TABLE,
                                      ZB_TEXTIO_OUT_SPARKNLP_JSON};

#define S_AT(f) ZB_SETTINGS_AT(zb_cliopt_t, f)
static const zb_settings_t s_table[] = {
    /* No default text: it depends on --format (zb_cliopt_finish). */
    {.name = "level",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(opt.level),
     .choices = s_levels,
     .values = s_level_values,
     .def_help = "token; sentence with --format npy",
     .help = "a vector per token, per wordpiece, or per text"},
    {.name = "pooling",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(opt.pooling),
     .choices = s_poolings,
     .values = s_pooling_values,
     .def = "cls",
     .help = "sentence level: the [CLS] row, or the mean of the wordpieces' rows"},
    {.name = "normalize",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(opt.normalize),
     .def = "false",
     .help = "L2-normalise every vector"},
    {.name = "sentences",
     .kind = ZB_SETTINGS_FLAG,
     S_AT(opt.sentences),
     .def = "false",
     .help = "each sentence its own sequence; token objects carry metadata"},
    {.name = "token-vector",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(opt.token_vector),
     .choices = s_token_vectors,
     .values = s_token_vector_values,
     .def = "first",
     .help = "a token's vector: its first wordpiece's row, or their mean"},
    {.name = "compat",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(opt.compat),
     .choices = s_compats,
     .values = s_compat_values,
     .def = "none",
     .help = "sparknlp: Spark NLP 2.6.4-2.7.5's BertEmbeddings pipeline (token level)"},
    {.name = "input-format",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(input),
     .choices = s_inputs,
     .values = s_input_values,
     .def = "lines",
     .help = "one text per line, or one {\"text\": ...} object per line"},
    {.name = "format",
     .kind = ZB_SETTINGS_ENUM,
     S_AT(output),
     .choices = s_formats,
     .values = s_format_values,
     .def = "jsonl",
     .help = "JSON lines, a float32 .npy of sentence vectors, a table for people, "
             "or Spark NLP annotations"},
};
#undef S_AT

const zb_settings_t *zb_cliopt_table(size_t *n) {
    *n = sizeof s_table / sizeof *s_table;
    return s_table;
}

const char zb_cliopt_hook_help[] =
    "  --truncate                  long texts: their first 510 wordpieces (the default but at "
    "token level)\n"
    "  --windows                   long texts: overlapping windows (the default at token level; "
    "the last of the two wins)\n";

int zb_cliopt_hook(void *ctx, int argc, char **argv, int *i, zb_diag_t *d) {
    (void)argc;
    (void)d;
    zb_cliopt_t *o = ctx;
    const char *a = argv[*i];
    if (strcmp(a, "--truncate") != 0 && strcmp(a, "--windows") != 0) return 0;
    o->opt.windows = strcmp(a, "--windows") == 0;
    o->windows_set = true;
    return 1;
}

int zb_cliopt_finish(zb_cliopt_t *o, const zb_settings_program_t *p,
                     const zb_settings_result_t *res, zb_diag_t *d) {
    zb_options_t *opt = &o->opt;
    o->level_set = zb_settings_source(p, res, "level") == ZB_SETTINGS_FROM_ARGV;
    if (o->output == ZB_TEXTIO_OUT_NPY) {
        if (!o->level_set) opt->level = ZB_LEVEL_SENTENCE;
        if (opt->level != ZB_LEVEL_SENTENCE || opt->tokenize_only)
            return zb_diag_set(d, ZB_EINVAL,
                               "--format npy holds one sentence vector per text; "
                               "use it with --level sentence");
    }
    bool token = opt->level == ZB_LEVEL_TOKEN && !opt->tokenize_only;
    /* The shared rules, in the command line's words; unlike the engine, the
     * command line holds them with --tokenize-only too. */
    zb_options_rule_t broken = zb_options_broken(opt);
    if (broken == ZB_OPTIONS_RULE_COMPAT_LEVEL)
        return zb_diag_set(d, ZB_EINVAL,
                           "--compat sparknlp gives token vectors (Spark NLP's "
                           "BertEmbeddings); use it with --level token");
    if (o->output == ZB_TEXTIO_OUT_SPARKNLP_JSON && !token)
        return zb_diag_set(d, ZB_EINVAL,
                           "--format sparknlp-json writes token annotations; use it "
                           "with --level token and without --tokenize-only");
    if (broken == ZB_OPTIONS_RULE_SENTENCES_LEVEL)
        return zb_diag_set(d, ZB_EINVAL, "--sentences applies to the token and wordpiece levels");
    /* Token level done properly: every token gets a vector, so long texts
     * (or sentences) take windows unless truncation is asked for.  The other
     * levels truncate by default.  Spark NLP compatibility has its own cap. */
    if (token && !o->windows_set && opt->compat == ZB_COMPAT_NONE) opt->windows = true;
    /* sparknlp-json carries the metadata fields */
    if (o->output == ZB_TEXTIO_OUT_SPARKNLP_JSON) opt->token_meta = true;
    return 0;
}
