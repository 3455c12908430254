/* workflow_canon.c -- canonical JSON, workflow hash, resolved JSON and the
 * readable print of a loaded workflow.
 *
 * The JSON is written by hand rather than through cJSON so that the key
 * order is the schema's, 64-bit integers stay exact, and every number is
 * printed the same way on every machine: the workflow hash recorded in a
 * run's manifest must not depend on the build.
 */
#include "pipeline/workflow/workflow_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Canonical text grows only from a file of at most 1 MiB plus built-in
 * defaults; escaping can at worst multiply it by six. */
#define CANON_CAP ((size_t)16 << 20)

typedef struct jw {
    buf *b;
    bool pretty;
    bool first;     /* no item written yet in the open container */
    bool after_key; /* the next value belongs to the key just written */
    int depth;
    int rc;         /* first error; later writes are skipped */
} jw;

static void put(jw *w, const char *s, size_t n)
{
    if (!w->rc)
        w->rc = buf_add(w->b, s, n);
}

static void puts_(jw *w, const char *s)
{
    put(w, s, strlen(s));
}

static void newline(jw *w)
{
    if (!w->pretty)
        return;
    puts_(w, "\n");
    for (int i = 0; i < w->depth; i++)
        puts_(w, "  ");
}

/* Separator before a key or an array item. */
static void sep(jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        if (!w->first)
            puts_(w, ",");
        newline(w);
    }
    w->first = false;
}

static void jw_open(jw *w, char c)
{
    sep(w);
    put(w, &c, 1);
    w->depth++;
    w->first = true;
}

static void jw_close(jw *w, char c)
{
    w->depth--;
    if (!w->first)
        newline(w);
    put(w, &c, 1);
    w->first = false;
}

static void jw_raw_str(jw *w, const char *s)
{
    char esc[8];

    puts_(w, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': puts_(w, "\\\""); break;
        case '\\': puts_(w, "\\\\"); break;
        case '\n': puts_(w, "\\n"); break;
        case '\t': puts_(w, "\\t"); break;
        case '\r': puts_(w, "\\r"); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                puts_(w, esc);
            } else {
                put(w, (const char *)p, 1);
            }
        }
    }
    puts_(w, "\"");
}

static void jw_key(jw *w, const char *k)
{
    sep(w);
    jw_raw_str(w, k);
    puts_(w, w->pretty ? ": " : ":");
    w->after_key = true;
}

static void jw_str(jw *w, const char *s)
{
    sep(w);
    if (s)
        jw_raw_str(w, s);
    else
        puts_(w, "null");
}

static void jw_null(jw *w)
{
    sep(w);
    puts_(w, "null");
}

static void jw_bool(jw *w, bool v)
{
    sep(w);
    puts_(w, v ? "true" : "false");
}

static void jw_int(jw *w, long long v)
{
    char t[32];

    sep(w);
    snprintf(t, sizeof t, "%lld", v);
    puts_(w, t);
}

static void jw_uint(jw *w, unsigned long long v)
{
    char t[32];

    sep(w);
    snprintf(t, sizeof t, "%llu", v);
    puts_(w, t);
}

/* Integral values print as integers; others with the fewest digits that
 * read back to the same double, so 0.7 stays "0.7" everywhere. */
static void jw_num(jw *w, double v)
{
    char t[40];

    sep(w);
    if (v == 0)
        v = 0; /* -0 and 0 are one value in a workflow */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(t, sizeof t, "%.0f", v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, v);
            if (strtod(t, NULL) == v)
                break;
        }
    }
    puts_(w, t);
}

/* A number where a negative value means "not given". */
static void jw_num_opt(jw *w, double v)
{
    if (v < 0)
        jw_null(w);
    else
        jw_num(w, v);
}

/* A number where 0 means "not given" (the value itself must be > 0). */
static void jw_num_pos(jw *w, double v)
{
    if (v > 0)
        jw_num(w, v);
    else
        jw_null(w);
}

static void jw_strs(jw *w, char *const *v, size_t n)
{
    jw_open(w, '[');
    for (size_t i = 0; i < n; i++)
        jw_str(w, v[i]);
    jw_close(w, ']');
}

/* Names as written in the file, indexed by enum value (carry: by bit
 * position); the loader parses with the same tables. */
const char *const wf_policy_names[2] = {
    [WORKFLOW_POLICY_FIXED] = "fixed",
    [WORKFLOW_POLICY_KNAPSACK] = "knapsack",
};
const char *const wf_objective_names[3] = {
    [WORKFLOW_OBJECTIVE_EVIDENCE] = "evidence",
    [WORKFLOW_OBJECTIVE_VERIFICATION] = "verification",
    [WORKFLOW_OBJECTIVE_GENERATION] = "generation",
};
const char *const wf_scheme_names[4] = {
    [WORKFLOW_SCHEME_QUADRATIC] = "quadratic",
    [WORKFLOW_SCHEME_QUADRATIC_CREDITS] = "quadratic_credits",
    [WORKFLOW_SCHEME_MEAN] = "mean",
    [WORKFLOW_SCHEME_BORDA] = "borda",
};
const char *const wf_tie_break_names[WORKFLOW_TIE_BREAK_COUNT] = {
    [WORKFLOW_TIE_MIN_PEER_SCORE] = "min_peer_score",
    [WORKFLOW_TIE_VARIANCE] = "variance",
    [WORKFLOW_TIE_SEEDED] = "seeded",
};
const char *const wf_extract_names[5] = {
    [WORKFLOW_EXTRACT_BOXED] = "boxed",
    [WORKFLOW_EXTRACT_REGEX] = "regex",
    [WORKFLOW_EXTRACT_LAST_NUMBER] = "last_number",
    [WORKFLOW_EXTRACT_JSON_FIELD] = "json_field",
    [WORKFLOW_EXTRACT_CODE_BLOCK] = "code_block",
};
const char *const wf_compare_names[4] = {
    [WORKFLOW_COMPARE_EXACT] = "exact",
    [WORKFLOW_COMPARE_NUMERIC] = "numeric",
    [WORKFLOW_COMPARE_NORMALIZED] = "normalized",
    [WORKFLOW_COMPARE_REGEX] = "regex",
};
const char *const wf_carry_names[4] = {
    "winner", "own_previous", "critiques", "scores",
};

static const char *name_of(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "?";
}

#define NAME_OF(table, v) name_of(table, sizeof table / sizeof *table, (int)(v))

const char *workflow_policy_name(enum workflow_policy p)
{
    return NAME_OF(wf_policy_names, p);
}

const char *workflow_objective_name(enum workflow_objective o)
{
    return NAME_OF(wf_objective_names, o);
}

const char *workflow_scheme_name(enum workflow_scheme s)
{
    return NAME_OF(wf_scheme_names, s);
}

const char *workflow_tie_break_name(enum workflow_tie_break t)
{
    return NAME_OF(wf_tie_break_names, t);
}

const char *workflow_extract_name(enum workflow_extract e)
{
    return NAME_OF(wf_extract_names, e);
}

const char *workflow_compare_name(enum workflow_compare c)
{
    return NAME_OF(wf_compare_names, c);
}

static void write_model(jw *w, const workflow_model *m)
{
    const workflow_sampling *s = &m->sampling;

    jw_open(w, '{');
    jw_key(w, "id"); jw_str(w, m->id);
    jw_key(w, "endpoint"); jw_str(w, m->endpoint_raw);
    jw_key(w, "model"); jw_str(w, m->model_raw);
    jw_key(w, "api_key_env"); jw_str(w, m->api_key_env);
    jw_key(w, "family"); jw_str(w, m->family);
    jw_key(w, "size_b"); jw_num_pos(w, m->size_b);
    jw_key(w, "placement");
    jw_open(w, '{');
    jw_key(w, "host"); jw_str(w, m->placement_host);
    jw_key(w, "gpu");
    if (m->placement_gpu < 0)
        jw_null(w);
    else
        jw_int(w, m->placement_gpu);
    jw_key(w, "vram_gb"); jw_num_opt(w, m->placement_vram_gb);
    jw_close(w, '}');
    jw_key(w, "max_concurrency"); jw_int(w, m->max_concurrency);
    jw_key(w, "price");
    jw_open(w, '{');
    jw_key(w, "input_per_mtok"); jw_num(w, m->price_input_per_mtok);
    jw_key(w, "output_per_mtok"); jw_num(w, m->price_output_per_mtok);
    jw_close(w, '}');
    jw_key(w, "timeouts");
    jw_open(w, '{');
    jw_key(w, "connect_s"); jw_num(w, m->connect_timeout_s);
    jw_key(w, "request_s"); jw_num(w, m->request_timeout_s);
    jw_close(w, '}');
    jw_key(w, "sampling");
    jw_open(w, '{');
    jw_key(w, "temperature"); jw_num(w, s->temperature);
    jw_key(w, "top_p"); jw_num(w, s->top_p);
    jw_key(w, "max_tokens"); jw_int(w, s->max_tokens);
    jw_key(w, "seed");
    if (s->has_seed)
        jw_int(w, s->seed);
    else
        jw_null(w);
    jw_key(w, "stop"); jw_strs(w, s->stop, s->nstop);
    jw_close(w, '}');
    jw_key(w, "structured_output"); jw_bool(w, m->structured_output);
    jw_key(w, "prior");
    jw_open(w, '{');
    jw_key(w, "p_gen"); jw_num_opt(w, m->prior_p_gen);
    jw_key(w, "p_ver"); jw_num_opt(w, m->prior_p_ver);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_gateway(jw *w, const workflow_gateway *g)
{
    jw_open(w, '{');
    jw_key(w, "retry");
    jw_open(w, '{');
    jw_key(w, "max_attempts"); jw_int(w, g->retry_max_attempts);
    jw_key(w, "base_delay_ms"); jw_int(w, g->retry_base_delay_ms);
    jw_key(w, "max_delay_ms"); jw_int(w, g->retry_max_delay_ms);
    jw_key(w, "max_total_s"); jw_num(w, g->retry_max_total_s);
    jw_close(w, '}');
    jw_key(w, "circuit_breaker");
    jw_open(w, '{');
    jw_key(w, "failures"); jw_int(w, g->breaker_failures);
    jw_key(w, "cooldown_s"); jw_num(w, g->breaker_cooldown_s);
    jw_close(w, '}');
    jw_key(w, "max_response_bytes");
    jw_uint(w, (unsigned long long)g->max_response_bytes);
    jw_close(w, '}');
}

static void write_broker(jw *w, const workflow_broker *b)
{
    jw_open(w, '{');
    jw_key(w, "policy"); jw_str(w, workflow_policy_name(b->policy));
    jw_key(w, "objective"); jw_str(w, workflow_objective_name(b->objective));
    jw_key(w, "budget");
    jw_open(w, '{');
    jw_key(w, "usd_per_question"); jw_num_pos(w, b->budget_usd_per_question);
    jw_key(w, "tokens_per_question");
    if (b->budget_tokens_per_question > 0)
        jw_int(w, b->budget_tokens_per_question);
    else
        jw_null(w);
    jw_close(w, '}');
    jw_key(w, "vram_per_gpu_gb"); jw_num_pos(w, b->vram_per_gpu_gb);
    jw_key(w, "team_size");
    jw_open(w, '{');
    jw_key(w, "min"); jw_int(w, b->team_size_min);
    jw_key(w, "max"); jw_int(w, b->team_size_max);
    jw_close(w, '}');
    jw_key(w, "max_per_family");
    if (b->max_per_family > 0)
        jw_int(w, b->max_per_family);
    else
        jw_null(w);
    jw_key(w, "evaluator_min_pv"); jw_num(w, b->evaluator_min_pv);
    jw_key(w, "default_team"); jw_str(w, b->default_team->name);
    jw_key(w, "tiers");
    jw_open(w, '[');
    for (size_t i = 0; i < b->ntiers; i++) {
        jw_open(w, '{');
        jw_key(w, "tags"); jw_strs(w, b->tiers[i].tags, b->tiers[i].ntags);
        jw_key(w, "team"); jw_str(w, b->tiers[i].team->name);
        jw_close(w, '}');
    }
    jw_close(w, ']');
    jw_key(w, "priors");
    jw_open(w, '{');
    jw_key(w, "p_gen"); jw_num(w, b->prior_p_gen);
    jw_key(w, "p_ver"); jw_num(w, b->prior_p_ver);
    jw_key(w, "strength"); jw_num(w, b->prior_strength);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_teams(jw *w, const workflow *wf)
{
    jw_open(w, '{');
    for (size_t t = 0; t < wf->nteams; t++) {
        const workflow_team *team = &wf->teams[t];

        jw_key(w, team->name);
        jw_open(w, '{');
        jw_key(w, "roles");
        jw_open(w, '[');
        for (size_t r = 0; r < team->nroles; r++) {
            const workflow_role *role = &team->roles[r];

            jw_open(w, '{');
            jw_key(w, "name"); jw_str(w, role->name);
            jw_key(w, "count"); jw_int(w, role->count);
            jw_key(w, "persona"); jw_str(w, role->persona);
            jw_key(w, "models"); jw_strs(w, role->models, role->nmodels);
            jw_key(w, "families");
            jw_strs(w, role->families, role->nfamilies);
            jw_close(w, '}');
        }
        jw_close(w, ']');
        jw_close(w, '}');
    }
    jw_close(w, '}');
}

static void write_rounds(jw *w, const workflow_rounds *r)
{
    jw_open(w, '{');
    jw_key(w, "min"); jw_int(w, r->min);
    jw_key(w, "max"); jw_int(w, r->max);
    jw_key(w, "stop");
    jw_open(w, '{');
    jw_key(w, "consensus_margin"); jw_num_pos(w, r->consensus_margin);
    jw_key(w, "stable_answer");
    if (r->stable_answer > 0)
        jw_int(w, r->stable_answer);
    else
        jw_null(w);
    jw_key(w, "efficiency_fatigue");
    if (r->fatigue) {
        jw_open(w, '{');
        jw_key(w, "effort"); jw_num(w, r->fatigue_effort);
        jw_key(w, "p_g"); jw_num_opt(w, r->fatigue_p_g);
        jw_key(w, "p_v"); jw_num_opt(w, r->fatigue_p_v);
        jw_key(w, "lambda"); jw_num_opt(w, r->fatigue_lambda);
        jw_key(w, "beta"); jw_num_opt(w, r->fatigue_beta);
        jw_close(w, '}');
    } else {
        jw_null(w);
    }
    jw_close(w, '}');
    jw_key(w, "forget_gate");
    jw_open(w, '{');
    jw_key(w, "carry");
    jw_open(w, '[');
    for (size_t i = 0; i < WF_COUNT(wf_carry_names); i++)
        if (r->carry & (1u << i))
            jw_str(w, wf_carry_names[i]);
    jw_close(w, ']');
    jw_key(w, "max_winner_chars"); jw_int(w, r->max_winner_chars);
    jw_key(w, "max_own_chars"); jw_int(w, r->max_own_chars);
    jw_key(w, "max_critique_chars"); jw_int(w, r->max_critique_chars);
    jw_key(w, "max_table_chars"); jw_int(w, r->max_table_chars);
    jw_close(w, '}');
    jw_close(w, '}');
}

static void write_workflow(jw *w, const workflow *wf)
{
    const workflow_scoring *s = &wf->scoring;
    const workflow_answer *a = &wf->answer;
    const workflow_prompts *p = &wf->prompts;

    jw_open(w, '{');
    jw_key(w, "name"); jw_str(w, wf->name);
    jw_key(w, "version"); jw_int(w, wf->version);
    jw_key(w, "seed"); jw_uint(w, (unsigned long long)wf->seed);
    jw_key(w, "models");
    jw_open(w, '[');
    for (size_t i = 0; i < wf->nmodels; i++)
        write_model(w, &wf->models[i]);
    jw_close(w, ']');
    jw_key(w, "gateway"); write_gateway(w, &wf->gateway);
    jw_key(w, "broker"); write_broker(w, &wf->broker);
    jw_key(w, "teams"); write_teams(w, wf);
    jw_key(w, "rounds"); write_rounds(w, &wf->rounds);
    jw_key(w, "scoring");
    jw_open(w, '{');
    jw_key(w, "scheme"); jw_str(w, workflow_scheme_name(s->scheme));
    jw_key(w, "allow_self_votes"); jw_bool(w, s->allow_self_votes);
    jw_key(w, "reliability_weighting"); jw_bool(w, s->reliability_weighting);
    jw_key(w, "tie_break");
    jw_open(w, '[');
    for (size_t i = 0; i < WORKFLOW_TIE_BREAK_COUNT; i++)
        jw_str(w, workflow_tie_break_name(s->tie_break[i]));
    jw_close(w, ']');
    jw_close(w, '}');
    jw_key(w, "answer");
    jw_open(w, '{');
    jw_key(w, "extract"); jw_str(w, workflow_extract_name(a->extract));
    jw_key(w, "pattern"); jw_str(w, a->pattern);
    jw_key(w, "field"); jw_str(w, a->field);
    jw_key(w, "compare"); jw_str(w, workflow_compare_name(a->compare));
    jw_key(w, "tolerance");
    if (a->compare == WORKFLOW_COMPARE_NUMERIC)
        jw_num(w, a->tolerance);
    else
        jw_null(w);
    jw_close(w, '}');
    jw_key(w, "prompts");
    jw_open(w, '{');
    jw_key(w, "system"); jw_str(w, p->system);
    jw_key(w, "propose"); jw_str(w, p->propose);
    jw_key(w, "revise"); jw_str(w, p->revise);
    jw_key(w, "evaluate"); jw_str(w, p->evaluate);
    jw_key(w, "repair"); jw_str(w, p->repair);
    jw_close(w, '}');
    jw_close(w, '}');
}

static int write_resolved(const workflow *wf, buf *b)
{
    jw w = {.b = b};

    jw_open(&w, '{');
    jw_key(&w, "models");
    jw_open(&w, '{');
    for (size_t i = 0; i < wf->nmodels; i++) {
        jw_key(&w, wf->models[i].id);
        jw_open(&w, '{');
        jw_key(&w, "endpoint"); jw_str(&w, wf->models[i].endpoint);
        jw_key(&w, "model"); jw_str(&w, wf->models[i].model);
        jw_close(&w, '}');
    }
    jw_close(&w, '}');
    jw_close(&w, '}');
    return w.rc;
}

int wf_canon_build(workflow *wf)
{
    uint8_t digest[HASH_LEN];
    buf b;
    jw w;
    int rc;

    buf_init(&b, CANON_CAP);
    w = (jw){.b = &b};
    write_workflow(&w, wf);
    rc = w.rc;
    if (rc)
        goto out;
    rc = hash_sha256(b.ptr, b.len, digest);
    if (rc)
        goto out;
    hash_hex(digest, wf->hash_);
    wf->canonical_ = buf_detach(&b, NULL);
    if (!wf->canonical_) {
        rc = NSED_ENOMEM;
        goto out;
    }
    rc = write_resolved(wf, &b);
    if (rc)
        goto out;
    wf->resolved_json_ = buf_detach(&b, NULL);
    if (!wf->resolved_json_)
        rc = NSED_ENOMEM;
out:
    buf_release(&b);
    return rc;
}

const char *workflow_canonical(const workflow *wf)
{
    return wf->canonical_;
}

const char *workflow_hash(const workflow *wf)
{
    return wf->hash_;
}

const char *workflow_resolved_json(const workflow *wf)
{
    return wf->resolved_json_;
}

int workflow_print_normalized(const workflow *wf, FILE *f)
{
    buf b;
    jw w;
    int rc;

    buf_init(&b, CANON_CAP);
    w = (jw){.b = &b, .pretty = true};
    write_workflow(&w, wf);
    rc = w.rc;
    if (!rc)
        rc = buf_addc(&b, '\n');
    if (!rc && (fwrite(b.ptr, 1, b.len, f) != b.len || fflush(f) != 0))
        rc = NSED_EIO;
    buf_release(&b);
    return rc;
}
