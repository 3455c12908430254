#include "sim_config.h"

#include "pipeline/base/buf.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

const char *sim_fault_name(sim_fault f)
{
    switch (f) {
    case SIM_FAULT_NONE: return "none";
    case SIM_FAULT_429: return "429";
    case SIM_FAULT_500: return "500";
    case SIM_FAULT_503: return "503";
    case SIM_FAULT_HANG: return "hang";
    case SIM_FAULT_DROP: return "drop";
    case SIM_FAULT_MALFORMED: return "malformed";
    case SIM_FAULT_TRUNCATED: return "truncated";
    case SIM_FAULT_EMPTY_CHOICES: return "empty_choices";
    case SIM_FAULT_NONJSON_EVAL: return "nonjson_eval";
    case SIM_FAULT_EMPTY_EVAL:
        return "empty_eval";
    case SIM_FAULT_400_REPAIR:
        return "400_repair";
    }
    return "unknown";
}

typedef struct cfg_ctx {
    const char *path;
    yaml_document_t *doc;
    nsed_err *err;
} cfg_ctx;

static int node_error(const cfg_ctx *c, const yaml_node_t *n,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Report at n's position (libyaml marks are 0-based). */
static int node_error(const cfg_ctx *c, const yaml_node_t *n,
                      const char *fmt, ...)
{
    char msg[NSED_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!n)
        return nsed_error_at(c->err, NSED_EINVAL, c->path, 0, 0, "%s", msg);
    return nsed_error_at(c->err, NSED_EINVAL, c->path, n->start_mark.line + 1,
                         n->start_mark.column + 1, "%s", msg);
}

static yaml_node_t *node_at(const cfg_ctx *c, int index)
{
    return yaml_document_get_node(c->doc, index);
}

/* A scalar that YAML would read as null has no value for our purposes. */
static int scalar_is_null(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;

    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") ||
           !strcmp(v, "Null") || !strcmp(v, "NULL");
}

static int get_scalar(const cfg_ctx *c, const yaml_node_t *n, const char *what,
                      const char **out)
{
    const char *v;

    if (n->type != YAML_SCALAR_NODE)
        return node_error(c, n, "%s: expected a scalar value", what);
    if (scalar_is_null(n))
        return node_error(c, n, "%s: missing value", what);
    v = (const char *)n->data.scalar.value;
    if (strlen(v) != n->data.scalar.length)
        return node_error(c, n, "%s: value contains a NUL byte", what);
    *out = v;
    return 0;
}

static int get_string(const cfg_ctx *c, const yaml_node_t *n, const char *what,
                      size_t max, char **out)
{
    const char *v;
    char *s;
    int rc = get_scalar(c, n, what, &v);

    if (rc)
        return rc;
    if (strlen(v) > max)
        return node_error(c, n, "%s: longer than %zu bytes", what, max);
    s = strdup(v);
    if (!s)
        return nsed_error(c->err, NSED_ENOMEM, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

static int get_bool(const cfg_ctx *c, const yaml_node_t *n, const char *what,
                    int *out)
{
    const char *v;
    int rc = get_scalar(c, n, what, &v);

    if (rc)
        return rc;
    if (!strcmp(v, "true"))
        *out = 1;
    else if (!strcmp(v, "false"))
        *out = 0;
    else
        return node_error(c, n, "%s: \"%s\" is not true or false", what, v);
    return 0;
}

static int get_double(const cfg_ctx *c, const yaml_node_t *n, const char *what,
                      double lo, double hi, double *out)
{
    const char *v;
    char *end;
    double d;
    int rc = get_scalar(c, n, what, &v);

    if (rc)
        return rc;
    errno = 0;
    d = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !isfinite(d))
        return node_error(c, n, "%s: \"%s\" is not a number", what, v);
    if (d < lo || d > hi)
        return node_error(c, n, "%s: %g is out of range [%g, %g]", what, d,
                          lo, hi);
    *out = d;
    return 0;
}

static int get_integer(const cfg_ctx *c, const yaml_node_t *n,
                       const char *what, long long lo, long long hi,
                       long long *out)
{
    const char *v;
    char *end;
    long long x;
    int rc = get_scalar(c, n, what, &v);

    if (rc)
        return rc;
    errno = 0;
    x = strtoll(v, &end, 10);
    if (end == v || *end || errno == ERANGE)
        return node_error(c, n, "%s: \"%s\" is not an integer", what, v);
    if (x < lo || x > hi)
        return node_error(c, n, "%s: %lld is out of range [%lld, %lld]", what,
                          x, lo, hi);
    *out = x;
    return 0;
}

static int get_seed(const cfg_ctx *c, const yaml_node_t *n, uint64_t *out)
{
    const char *v;
    char *end;
    unsigned long long x;
    int rc = get_scalar(c, n, "seed", &v);

    if (rc)
        return rc;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (end == v || *end || errno == ERANGE || strchr(v, '-'))
        return node_error(c, n, "seed: \"%s\" is not an unsigned 64-bit "
                          "integer", v);
    *out = (uint64_t)x;
    return 0;
}

/* Walk a mapping whose keys must come from keys[] (at most 64), each at most
 * once. For every pair fn(c, index of the key, value node, arg) is called. */
typedef int (*pair_fn)(const cfg_ctx *c, int key, const yaml_node_t *value,
                       void *arg);

static int walk_mapping(const cfg_ctx *c, const yaml_node_t *n,
                        const char *what, const char *const keys[],
                        pair_fn fn, void *arg)
{
    uint64_t seen = 0;
    yaml_node_pair_t *p;

    if (n->type != YAML_MAPPING_NODE)
        return node_error(c, n, "%s: expected a mapping", what);
    for (p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        const char *name;
        int idx = -1, rc;

        if (!k || !v || k->type != YAML_SCALAR_NODE)
            return node_error(c, k, "%s: keys must be plain strings", what);
        name = (const char *)k->data.scalar.value;
        for (int i = 0; keys[i]; i++) {
            if (!strcmp(keys[i], name)) {
                idx = i;
                break;
            }
        }
        if (idx < 0)
            return node_error(c, k, "unknown key \"%s\" in %s", name, what);
        if (seen & (UINT64_C(1) << idx))
            return node_error(c, k, "duplicate key \"%s\" in %s", name, what);
        seen |= UINT64_C(1) << idx;
        rc = fn(c, idx, v, arg);
        if (rc)
            return rc;
    }
    return 0;
}

static const char *const latency_keys[] = {"ttft_ms", "per_token_ms", NULL};

static int latency_pair(const cfg_ctx *c, int key, const yaml_node_t *v,
                        void *arg)
{
    sim_model_cfg *m = arg;

    if (key == 0)
        return get_double(c, v, "ttft_ms", 0, 600000, &m->ttft_ms);
    return get_double(c, v, "per_token_ms", 0, 60000, &m->per_token_ms);
}

static const char *const tokens_keys[] = {"completion", "evaluation", NULL};

static int tokens_pair(const cfg_ctx *c, int key, const yaml_node_t *v,
                       void *arg)
{
    sim_model_cfg *m = arg;
    long long x;
    int rc;

    rc = get_integer(c, v, tokens_keys[key], 1, 1000000, &x);
    if (!rc && key == 0)
        m->completion_tokens = (long)x;
    else if (!rc)
        m->evaluation_tokens = (long)x;
    return rc;
}

/* Order matters: the index of each rate_* key is its sim_fault value. */
static const char *const fault_keys[] = {"limit",
                                         "rate_429",
                                         "rate_500",
                                         "rate_503",
                                         "rate_hang",
                                         "rate_drop",
                                         "rate_malformed",
                                         "rate_truncated",
                                         "rate_empty_choices",
                                         "rate_nonjson_eval",
                                         "rate_empty_eval",
                                         "rate_400_repair",
                                         "retry_after_s",
                                         "hang_ms",
                                         "rate_always_timeout",
                                         "down_after_s",
                                         "down_for_s",
                                         NULL};
/* the keys after hang_ms: the always-failing share, the outage window */
enum { FK_ALWAYS_TIMEOUT = SIM_FAULT_COUNT + 2, FK_DOWN_AFTER_S, FK_DOWN_FOR_S };

static int faults_pair(const cfg_ctx *c, int key, const yaml_node_t *v,
                       void *arg)
{
    sim_faults_cfg *f = arg;
    long long x;
    int rc;

    if (key >= SIM_FAULT_429 && key < SIM_FAULT_COUNT)
        return get_double(c, v, fault_keys[key], 0, 1, &f->rate[key]);
    if (key == 0) {
        rc = get_integer(c, v, "limit", 0, 1000000000000LL, &x);
        if (!rc)
            f->limit = x;
        return rc;
    }
    if (key == SIM_FAULT_COUNT) {
        rc = get_integer(c, v, "retry_after_s", 0, 86400, &x);
        if (!rc)
            f->retry_after_s = (long)x;
        return rc;
    }
    if (key == SIM_FAULT_COUNT + 2)
        return get_double(c, v, "rate_always_timeout", 0, 1,
                          &f->rate_always_timeout);
    if (key == FK_DOWN_AFTER_S)
        return get_double(c, v, "down_after_s", 0, 86400, &f->down_after_s);
    if (key == FK_DOWN_FOR_S)
        return get_double(c, v, "down_for_s", 0, 86400, &f->down_for_s);
    rc = get_integer(c, v, "hang_ms", 0, 3600000, &x);
    if (!rc)
        f->hang_ms = (long)x;
    return rc;
}

enum {
    MK_NAME, MK_FAMILY, MK_P_GEN, MK_P_VER, MK_SYCOPHANCY, MK_FATIGUE,
    MK_RATE_SKIP, MK_LATENCY, MK_TOKENS, MK_FAULTS
};
/* the knobs of hostile models (tests/test_poison.c) */
enum { MK_ECHO_AUTHORIZATION = MK_FAULTS + 1, MK_REPLY_PREFIX };
/* the knobs of the paper's findings (issue 12) */
enum {
    MK_FATIGUE_ROUND = MK_REPLY_PREFIX + 1,
    MK_FATIGUE_CONTEXT,
    MK_BLIND_SPOT
};
/* clang-format off: a table, by index */
static const char *const model_keys[] = {"name",
                                         "family",
                                         "p_gen",
                                         "p_ver",
                                         "sycophancy",
                                         "fatigue",
                                         "rate_skip",
                                         "latency",
                                         "tokens",
                                         "faults",
                                         "echo_authorization",
                                         "reply_prefix",
                                         "fatigue_round",
                                         "fatigue_context",
                                         "blind_spot",
                                         NULL};
/* clang-format on */

static int model_pair(const cfg_ctx *c, int key, const yaml_node_t *v,
                      void *arg)
{
    sim_model_cfg *m = arg;

    switch (key) {
    case MK_NAME: return get_string(c, v, "name", SIM_NAME_MAX, &m->name);
    case MK_FAMILY:
        return get_string(c, v, "family", SIM_NAME_MAX, &m->family);
    case MK_P_GEN: return get_double(c, v, "p_gen", 0, 1, &m->p_gen);
    case MK_P_VER: return get_double(c, v, "p_ver", 0, 1, &m->p_ver);
    case MK_SYCOPHANCY:
        return get_double(c, v, "sycophancy", 0, 1, &m->sycophancy);
    case MK_FATIGUE: return get_double(c, v, "fatigue", 0, 1, &m->fatigue);
    case MK_RATE_SKIP:
        return get_double(c, v, "rate_skip", 0, 1, &m->rate_skip);
    case MK_LATENCY:
        return walk_mapping(c, v, "latency", latency_keys, latency_pair, m);
    case MK_TOKENS:
        return walk_mapping(c, v, "tokens", tokens_keys, tokens_pair, m);
    case MK_FAULTS:
        return walk_mapping(c, v, "faults", fault_keys, faults_pair,
                            &m->faults);
    case MK_ECHO_AUTHORIZATION:
        return get_bool(c, v, "echo_authorization", &m->echo_authorization);
    case MK_REPLY_PREFIX:
        return get_string(c, v, "reply_prefix", SIM_PREFIX_MAX,
                          &m->reply_prefix);
    case MK_FATIGUE_ROUND:
        return get_double(c, v, "fatigue_round", 0, 10, &m->fatigue_round);
    case MK_FATIGUE_CONTEXT:
        return get_double(c, v, "fatigue_context", 0, 10, &m->fatigue_context);
    case MK_BLIND_SPOT:
        return get_double(c, v, "blind_spot", 0, 1, &m->blind_spot);
    }
    return node_error(c, v, "internal: unhandled model key");
}

static void model_defaults(sim_model_cfg *m)
{
    memset(m, 0, sizeof *m);
    m->p_gen = 0.5;
    m->p_ver = 0.7;
    m->completion_tokens = 120;
    m->faults.retry_after_s = 1;
    m->faults.hang_ms = 60000;
}

static void model_release(sim_model_cfg *m)
{
    free(m->name);
    free(m->family);
    free(m->reply_prefix);
    m->name = NULL;
    m->family = NULL;
    m->reply_prefix = NULL;
}

static int load_model(const cfg_ctx *c, const yaml_node_t *n, sim_model_cfg *m)
{
    double sum = 0;
    int rc;

    rc = walk_mapping(c, n, "model", model_keys, model_pair, m);
    if (rc)
        return rc;
    if (!m->name)
        return node_error(c, n, "model: missing key \"name\"");
    if (!m->family) {
        m->family = strdup(m->name);
        if (!m->family)
            return nsed_error(c->err, NSED_ENOMEM, "out of memory");
    }
    for (int f = SIM_FAULT_429; f < SIM_FAULT_COUNT; f++)
        sum += m->faults.rate[f];
    /* One uniform draw picks at most one fault, so the rates must fit. */
    if (sum > 1.0 + 1e-9)
        return node_error(c, n, "model \"%s\": fault rates add up to %g, "
                          "more than 1", m->name, sum);
    return 0;
}

typedef struct top_state {
    sim_config cfg;
} top_state;

enum {
    TK_KIND,
    TK_SEED,
    TK_QUESTIONS,
    TK_MODELS,
    TK_DIFFICULTY,
    TK_DIFFICULTY_VER
};
static const char *const top_keys[] = {"kind",   "seed",       "questions",
                                       "models", "difficulty", "difficulty_ver",
                                       NULL};

static int top_pair(const cfg_ctx *c, int key, const yaml_node_t *v, void *arg)
{
    top_state *st = arg;
    sim_config *cfg = &st->cfg;
    yaml_node_item_t *it;
    size_t n;

    switch (key) {
    case TK_KIND: {
        /* Optional marker that tells `nsed validate` this YAML file is a
         * simulator config rather than a workflow. */
        char *kind = NULL;
        int rc = get_string(c, v, "kind", 64, &kind);

        if (!rc && strcmp(kind, "nsed-sim") != 0)
            rc = node_error(c, v, "kind: expected \"nsed-sim\", got \"%s\"",
                            kind);
        free(kind);
        return rc;
    }
    case TK_SEED: return get_seed(c, v, &cfg->seed);
    case TK_DIFFICULTY:
        return get_double(c, v, "difficulty", 0, 10, &cfg->difficulty);
    case TK_DIFFICULTY_VER:
        return get_double(c, v, "difficulty_ver", 0, 10, &cfg->difficulty_ver);
    case TK_QUESTIONS:
        return get_string(c, v, "questions", PATH_MAX, &cfg->questions);
    case TK_MODELS:
        if (v->type != YAML_SEQUENCE_NODE)
            return node_error(c, v, "models: expected a sequence");
        n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        if (n == 0)
            return node_error(c, v, "models: at least one model is needed");
        if (n > SIM_CONFIG_MAX_MODELS)
            return node_error(c, v, "models: more than %d models",
                              SIM_CONFIG_MAX_MODELS);
        cfg->models = calloc(n, sizeof *cfg->models);
        if (!cfg->models)
            return nsed_error(c->err, NSED_ENOMEM, "out of memory");
        for (it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *mn = node_at(c, *it);
            sim_model_cfg *m = &cfg->models[cfg->nmodels];
            int rc;

            model_defaults(m);
            cfg->nmodels++;
            if (!mn)
                return node_error(c, v, "models: bad entry");
            rc = load_model(c, mn, m);
            if (rc)
                return rc;
            for (size_t j = 0; j + 1 < cfg->nmodels; j++) {
                if (!strcmp(cfg->models[j].name, m->name))
                    return node_error(c, mn, "duplicate model name \"%s\"",
                                      m->name);
            }
        }
        return 0;
    }
    return node_error(c, v, "internal: unhandled key");
}

/* Resolve rel against the directory of base; absolute paths stay. */
static char *resolve_path(const char *base, const char *rel)
{
    const char *slash = strrchr(base, '/');
    size_t dlen, rlen = strlen(rel);
    char *p;

    if (rel[0] == '/' || !slash)
        return strdup(rel);
    dlen = (size_t)(slash - base) + 1;
    p = malloc(dlen + rlen + 1);
    if (!p)
        return NULL;
    memcpy(p, base, dlen);
    memcpy(p + dlen, rel, rlen + 1);
    return p;
}

int sim_config_load(const char *path, sim_config *out, nsed_err *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int have_parser = 0, have_doc = 0, rc;
    top_state st;
    cfg_ctx c = {path, &doc, err};
    yaml_node_t *root;
    buf text;

    memset(&st, 0, sizeof st);
    buf_init(&text, SIM_CONFIG_MAX_BYTES);
    rc = buf_read_file(&text, path);
    if (rc == NSED_ETOOBIG) {
        nsed_error_at(err, rc, path, 0, 0, "config larger than %u bytes",
                      SIM_CONFIG_MAX_BYTES);
        goto out;
    }
    if (rc) {
        nsed_error_at(err, rc, path, 0, 0, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    have_parser = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)
                                 text.ptr, text.len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = nsed_error_at(err, NSED_EINVAL, path,
                           parser.problem_mark.line + 1,
                           parser.problem_mark.column + 1, "YAML: %s",
                           parser.problem ? parser.problem : "parse error");
        goto out;
    }
    have_doc = 1;
    root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = nsed_error_at(err, NSED_EINVAL, path, 0, 0, "empty config");
        goto out;
    }
    rc = walk_mapping(&c, root, "config", top_keys, top_pair, &st);
    if (rc)
        goto out;
    if (!st.cfg.nmodels) {
        rc = node_error(&c, root, "missing key \"models\"");
        goto out;
    }
    if (st.cfg.questions) {
        char *abs = resolve_path(path, st.cfg.questions);

        if (!abs) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        free(st.cfg.questions);
        st.cfg.questions = abs;
    }
    *out = st.cfg;
    memset(&st.cfg, 0, sizeof st.cfg);
out:
    sim_config_release(&st.cfg);
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    buf_release(&text);
    return rc;
}

void sim_config_release(sim_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nmodels; i++)
        model_release(&cfg->models[i]);
    free(cfg->models);
    free(cfg->questions);
    memset(cfg, 0, sizeof *cfg);
}

const sim_model_cfg *sim_config_find_model(const sim_config *cfg,
                                           const char *name)
{
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (!strcmp(cfg->models[i].name, name))
            return &cfg->models[i];
    }
    return NULL;
}
