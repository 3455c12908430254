/* state_json.c -- state <-> JSON (see state.h for the contract).
 *
 * Writing builds a cJSON tree and prints it compactly; cJSON prints a
 * double with 15 significant digits when that reads back exactly and with
 * 17 otherwise, so every number round-trips. Reading checks every field's
 * type and every index against the sizes it refers to, so a damaged
 * checkpoint is refused instead of crashing a stage later.
 */
#include "stages/state.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writing ---------------------------------------------------------- */

/* Every add below returns false when out of memory. */
static bool add_str(cJSON *o, const char *key, const char *s)
{
    cJSON *v = s ? cJSON_CreateString(s) : cJSON_CreateNull();

    if (!v)
        return false;
    cJSON_AddItemToObject(o, key, v);
    return true;
}

static bool add_num(cJSON *o, const char *key, double d)
{
    return cJSON_AddNumberToObject(o, key, d) != NULL;
}

static bool add_bool(cJSON *o, const char *key, bool b)
{
    return cJSON_AddBoolToObject(o, key, b) != NULL;
}

static cJSON *usage_json(const state_usage *u)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !add_num(o, "prompt_tokens", (double)u->prompt_tokens) ||
        !add_num(o, "completion_tokens", (double)u->completion_tokens) ||
        !add_num(o, "cost_usd", u->cost_usd)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static bool add_usage(cJSON *o, const char *key, const state_usage *u)
{
    cJSON *v = usage_json(u);

    if (!v)
        return false;
    cJSON_AddItemToObject(o, key, v);
    return true;
}

static bool add_label(cJSON *o, const char *key, size_t cand)
{
    char label[TEXT_LABEL_MAX];

    text_label(cand, label);
    return add_str(o, key, label);
}

static cJSON *proposal_json(const state_proposal *p)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !add_str(o, "status", state_proposal_status_name(p->status)) ||
        !add_bool(o, "infra", p->infra) || !add_str(o, "text", p->text) ||
        !add_str(o, "answer", p->answer) || !add_str(o, "error", p->error) ||
        !add_usage(o, "usage", &p->usage)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *evaluation_json(const state_evaluation *e)
{
    cJSON *o = cJSON_CreateObject(), *w = NULL, *d = NULL;

    if (!o || !add_str(o, "status", state_eval_status_name(e->status)) ||
        !add_bool(o, "repaired", e->repaired) ||
        !add_str(o, "reply", e->reply) ||
        !add_str(o, "first_reply", e->first_reply) ||
        !add_str(o, "error", e->error))
        goto fail;
    w = cJSON_AddArrayToObject(o, "weights");
    if (!w)
        goto fail;
    for (size_t i = 0; i < e->nweights; i++) {
        cJSON *x = cJSON_CreateObject();

        if (!x)
            goto fail;
        cJSON_AddItemToArray(w, x);
        if (!add_label(x, "label", e->weights[i].cand) ||
            !add_num(x, "weight", e->weights[i].weight) ||
            !add_str(x, "critique", e->weights[i].critique))
            goto fail;
    }
    d = cJSON_AddObjectToObject(o, "dropped");
    if (!d || !add_num(d, "self", (double)e->dropped_self) ||
        !add_num(d, "unknown", (double)e->dropped_unknown) ||
        !add_num(d, "invalid", (double)e->dropped_invalid) ||
        !add_num(d, "duplicate", (double)e->dropped_duplicate) ||
        !add_usage(o, "usage", &e->usage))
        goto fail;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *aggregate_json(const state_round *r)
{
    const state_aggregate *a = &r->agg;
    cJSON *o = cJSON_CreateObject(), *s;

    if (!o || !add_str(o, "scheme", workflow_scheme_name(a->scheme)) ||
        !add_bool(o, "self_votes", a->self_votes) ||
        !add_bool(o, "reliability", a->reliability) ||
        !add_num(o, "winner", (double)a->winner) ||
        !add_num(o, "conviction", a->conviction) ||
        !add_str(o, "decided_by", state_decider_name(a->decided_by)) ||
        !add_num(o, "evaluators", (double)a->evaluators) ||
        !add_num(o, "abstained", (double)a->abstained) ||
        !add_num(o, "failed", (double)a->failed))
        goto fail;
    s = cJSON_AddArrayToObject(o, "scores");
    if (!s)
        goto fail;
    for (size_t j = 0; j < r->ncand; j++) {
        const state_score *sc = &a->scores[j];
        cJSON *x = cJSON_CreateObject();

        if (!x)
            goto fail;
        cJSON_AddItemToArray(s, x);
        if (!add_label(x, "label", j) || !add_num(x, "score", sc->score) ||
            !add_num(x, "net_support", sc->net_support) ||
            !add_num(x, "evaluators", (double)sc->nevaluators) ||
            !add_num(x, "min_peer", sc->min_peer) ||
            !add_num(x, "variance", sc->variance))
            goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static cJSON *decision_json(const state_decision *d)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || !add_bool(o, "stop", d->stop) ||
        !add_str(o, "reason", state_stop_reason_name(d->reason)) ||
        !add_num(o, "stable_streak", d->stable_streak) ||
        !add_num(o, "p_g", d->p_g) || !add_num(o, "p_v", d->p_v) ||
        !add_num(o, "lambda", d->lambda) || !add_num(o, "beta", d->beta) ||
        !add_num(o, "t_opt", d->t_opt) || !add_num(o, "target", d->target)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *round_json(const state_round *r, size_t nseats)
{
    cJSON *o = cJSON_CreateObject(), *a, *x;

    if (!o || !add_num(o, "v", STATE_JSON_VERSION) ||
        !add_num(o, "round", r->index))
        goto fail;
    a = cJSON_AddArrayToObject(o, "proposals");
    if (!a)
        goto fail;
    for (size_t i = 0; i < nseats; i++) {
        x = proposal_json(&r->proposals[i]);
        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
    }
    if (!r->anonymized) {
        if (!cJSON_AddNullToObject(o, "anonymize"))
            goto fail;
    } else {
        cJSON *an = cJSON_AddObjectToObject(o, "anonymize"), *c;

        if (!an || !add_str(an, "fence", r->fence))
            goto fail;
        c = cJSON_AddArrayToObject(an, "candidates");
        if (!c)
            goto fail;
        for (size_t j = 0; j < r->ncand; j++) {
            x = cJSON_CreateObject();
            if (!x)
                goto fail;
            cJSON_AddItemToArray(c, x);
            if (!add_label(x, "label", j) ||
                !add_num(x, "seat", (double)r->cands[j].seat) ||
                !add_str(x, "text", r->cands[j].text) ||
                !add_num(x, "redactions", (double)r->cands[j].redactions))
                goto fail;
        }
    }
    if (!r->evals) {
        if (!cJSON_AddNullToObject(o, "evaluations"))
            goto fail;
    } else {
        a = cJSON_AddArrayToObject(o, "evaluations");
        if (!a)
            goto fail;
        for (size_t i = 0; i < nseats; i++) {
            x = evaluation_json(&r->evals[i]);
            if (!x)
                goto fail;
            cJSON_AddItemToArray(a, x);
        }
    }
    x = r->aggregated ? aggregate_json(r) : cJSON_CreateNull();
    if (!x)
        goto fail;
    cJSON_AddItemToObject(o, "aggregate", x);
    x = r->decided ? decision_json(&r->decision) : cJSON_CreateNull();
    if (!x)
        goto fail;
    cJSON_AddItemToObject(o, "decision", x);
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

static int print_json(cJSON *o, char **out)
{
    char *s;

    if (!o)
        return NSED_ENOMEM;
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return NSED_ENOMEM;
    /* cJSON's allocator is malloc (the default hooks), so the caller may
     * free() the text. */
    *out = s;
    return 0;
}

int state_round_to_json(const state_round *r, size_t nseats, char **out)
{
    return print_json(round_json(r, nseats), out);
}

static bool add_block_list(cJSON *o, const char *key, char **v, size_t n)
{
    cJSON *a;

    if (!v)
        return cJSON_AddNullToObject(o, key) != NULL;
    a = cJSON_AddArrayToObject(o, key);
    if (!a)
        return false;
    for (size_t i = 0; i < n; i++) {
        cJSON *x = v[i] ? cJSON_CreateString(v[i]) : cJSON_CreateNull();

        if (!x)
            return false;
        cJSON_AddItemToArray(a, x);
    }
    return true;
}

static cJSON *state_json(const state *st)
{
    cJSON *o = cJSON_CreateObject(), *q, *a, *x;
    char seed[17];

    snprintf(seed, sizeof seed, "%016" PRIx64, st->seed);
    if (!o || !add_num(o, "v", STATE_JSON_VERSION) ||
        !add_str(o, "seed", seed))
        goto fail;
    q = cJSON_AddObjectToObject(o, "question");
    if (!q || !add_str(q, "id", st->qid) ||
        !add_str(q, "text", st->question) ||
        !add_str(q, "reference", st->reference))
        goto fail;
    a = cJSON_AddArrayToObject(q, "tags");
    if (!a)
        goto fail;
    for (size_t i = 0; i < st->ntags; i++) {
        x = cJSON_CreateString(st->tags[i]);
        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
    }
    a = cJSON_AddArrayToObject(o, "seats");
    if (!a)
        goto fail;
    for (size_t i = 0; i < st->nseats; i++) {
        x = cJSON_CreateObject();
        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
        if (!add_num(x, "model", (double)st->seats[i].model) ||
            !add_str(x, "role", st->seats[i].role) ||
            !add_str(x, "persona", st->seats[i].persona))
            goto fail;
    }
    if (!add_num(o, "round", st->round) ||
        !add_str(o, "stage", state_stage_name(st->stage)) ||
        !add_str(o, "status", state_status_name(st->status)))
        goto fail;
    a = cJSON_AddArrayToObject(o, "missing");
    if (!a)
        goto fail;
    for (size_t i = 0; i < st->nseats; i++) {
        if (!st->missing[i])
            continue;
        x = cJSON_CreateNumber((double)i);
        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
    }
    x = cJSON_AddObjectToObject(o, "final");
    if (!x || !add_str(x, "answer", st->final_answer) ||
        !add_num(x, "seat", (double)st->final_seat) ||
        !add_num(x, "round", st->final_round) ||
        !add_str(x, "source", state_final_source_name(st->final_source)))
        goto fail;
    x = cJSON_AddObjectToObject(o, "baseline");
    if (!x || !add_str(x, "answer", st->baseline_answer) ||
        !add_num(x, "votes", (double)st->baseline_votes) ||
        !add_usage(o, "usage", &st->usage))
        goto fail;
    x = cJSON_AddObjectToObject(o, "carry");
    if (!x || !add_num(x, "from_round", st->carry.from_round) ||
        !add_str(x, "fence", st->carry.fence) ||
        !add_str(x, "winner", st->carry.winner) ||
        !add_block_list(x, "own", st->carry.own, st->nseats) ||
        !add_block_list(x, "critiques", st->carry.critiques, st->nseats) ||
        !add_block_list(x, "scores", st->carry.scores, st->nseats))
        goto fail;
    a = cJSON_AddArrayToObject(o, "rounds");
    if (!a)
        goto fail;
    if (st->prev) {
        x = round_json(st->prev, st->nseats);
        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
    }
    x = round_json(st->cur, st->nseats);
    if (!x)
        goto fail;
    cJSON_AddItemToArray(a, x);
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

int state_to_json(const state *st, char **out)
{
    return print_json(state_json(st), out);
}

/* ---- reading ---------------------------------------------------------- */

/* Reader: the first error wins and every later call does nothing, so the
 * field-by-field code below needs no error check per line. */
typedef struct rd {
    nsed_err *err;
    int rc;
} rd;

static void rd_fail(rd *r, int code, const char *path, const char *what)
{
    if (r->rc)
        return;
    r->rc = nsed_error(r->err, code, "state JSON: %s: %s", path, what);
}

static const cJSON *rd_item(rd *r, const cJSON *o, const char *key,
                            const char *path)
{
    const cJSON *v;

    if (r->rc)
        return NULL;
    v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        rd_fail(r, NSED_EINVAL, path, "missing");
    return v;
}

static const cJSON *rd_obj(rd *r, const cJSON *o, const char *key,
                           const char *path, bool nullable)
{
    const cJSON *v = rd_item(r, o, key, path);

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsObject(v)) {
        rd_fail(r, NSED_EINVAL, path, "not an object");
        return NULL;
    }
    return v;
}

/* An array of exactly n items when n != (size_t)-1. */
static const cJSON *rd_arr(rd *r, const cJSON *o, const char *key,
                           const char *path, bool nullable, size_t n)
{
    const cJSON *v = rd_item(r, o, key, path);

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsArray(v)) {
        rd_fail(r, NSED_EINVAL, path, "not an array");
        return NULL;
    }
    if (n != (size_t)-1 && (size_t)cJSON_GetArraySize(v) != n) {
        rd_fail(r, NSED_EINVAL, path, "wrong number of entries");
        return NULL;
    }
    return v;
}

static char *rd_str(rd *r, const cJSON *o, const char *key, const char *path,
                    bool nullable)
{
    const cJSON *v = rd_item(r, o, key, path);
    char *s;

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsString(v)) {
        rd_fail(r, NSED_EINVAL, path, "not a string");
        return NULL;
    }
    s = strdup(v->valuestring);
    if (!s)
        rd_fail(r, NSED_ENOMEM, path, "out of memory");
    return s;
}

static double rd_num(rd *r, const cJSON *o, const char *key, const char *path)
{
    const cJSON *v = rd_item(r, o, key, path);

    if (!v)
        return 0;
    if (!cJSON_IsNumber(v)) {
        rd_fail(r, NSED_EINVAL, path, "not a number");
        return 0;
    }
    return v->valuedouble;
}

/* An integer in [lo, hi]. */
static int64_t rd_int_item(rd *r, const cJSON *v, const char *path,
                           int64_t lo, int64_t hi)
{
    double d;

    if (r->rc || !v)
        return lo;
    if (!cJSON_IsNumber(v)) {
        rd_fail(r, NSED_EINVAL, path, "not a number");
        return lo;
    }
    d = v->valuedouble;
    if (d != floor(d) || d < (double)lo || d > (double)hi) {
        rd_fail(r, NSED_EINVAL, path, "not an integer in range");
        return lo;
    }
    return (int64_t)d;
}

static int64_t rd_int(rd *r, const cJSON *o, const char *key,
                      const char *path, int64_t lo, int64_t hi)
{
    return rd_int_item(r, rd_item(r, o, key, path), path, lo, hi);
}

static bool rd_bool(rd *r, const cJSON *o, const char *key, const char *path)
{
    const cJSON *v = rd_item(r, o, key, path);

    if (!v)
        return false;
    if (!cJSON_IsBool(v)) {
        rd_fail(r, NSED_EINVAL, path, "not a boolean");
        return false;
    }
    return cJSON_IsTrue(v);
}

/* Index of the name among name(0..count-1). */
static int rd_enum(rd *r, const cJSON *o, const char *key, const char *path,
                   const char *(*name)(int), int count)
{
    const cJSON *v = rd_item(r, o, key, path);

    if (!v)
        return 0;
    if (cJSON_IsString(v)) {
        for (int i = 0; i < count; i++) {
            if (!strcmp(v->valuestring, name(i)))
                return i;
        }
    }
    rd_fail(r, NSED_EINVAL, path, "unknown value");
    return 0;
}

/* Adapters from the typed name functions to rd_enum's int form. */
static const char *n_stage(int i) { return state_stage_name((enum state_stage)i); }
static const char *n_status(int i) { return state_status_name((enum state_status)i); }
static const char *n_reason(int i) { return state_stop_reason_name((enum state_stop_reason)i); }
static const char *n_decider(int i) { return state_decider_name((enum state_decider)i); }
static const char *n_final(int i) { return state_final_source_name((enum state_final_source)i); }
static const char *n_prop(int i) { return state_proposal_status_name((enum state_proposal_status)i); }
static const char *n_eval(int i) { return state_eval_status_name((enum state_eval_status)i); }
static const char *n_scheme(int i) { return workflow_scheme_name((enum workflow_scheme)i); }

#define P(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)
#define COUNT_MAX ((int64_t)1 << 53)
#define ROUND_MAX 1000000 /* far beyond rounds.max; a sanity bound */

static void rd_usage(rd *r, const cJSON *o, const char *path, state_usage *u)
{
    char p[192];
    const cJSON *v = rd_obj(r, o, "usage", P(p, "%s.usage", path), false);

    if (!v)
        return;
    u->prompt_tokens = rd_int(r, v, "prompt_tokens", p, 0, COUNT_MAX);
    u->completion_tokens = rd_int(r, v, "completion_tokens", p, 0, COUNT_MAX);
    u->cost_usd = rd_num(r, v, "cost_usd", p);
}

/* A label string naming candidate index below ncand. */
static size_t rd_label(rd *r, const cJSON *o, const char *path, size_t ncand)
{
    const cJSON *v = rd_item(r, o, "label", path);
    size_t idx = 0;

    if (!v)
        return 0;
    if (!cJSON_IsString(v) ||
        text_label_index(v->valuestring, strlen(v->valuestring), &idx) ||
        idx >= ncand) {
        rd_fail(r, NSED_EINVAL, path, "not a candidate label");
        return 0;
    }
    return idx;
}

static void rd_proposal(rd *r, const cJSON *o, const char *path,
                        state_proposal *p)
{
    p->status = (enum state_proposal_status)rd_enum(
        r, o, "status", path, n_prop, STATE_PROPOSAL_FAILED + 1);
    p->infra = rd_bool(r, o, "infra", path);
    p->text = rd_str(r, o, "text", path, true);
    p->answer = rd_str(r, o, "answer", path, true);
    p->error = rd_str(r, o, "error", path, true);
    rd_usage(r, o, path, &p->usage);
}

static void rd_evaluation(rd *r, const cJSON *o, const char *path,
                          size_t ncand, state_evaluation *e)
{
    char p[160];
    const cJSON *w, *d, *x;
    size_t n;

    e->status = (enum state_eval_status)rd_enum(r, o, "status", path, n_eval,
                                                STATE_EVAL_IDLE + 1);
    e->repaired = rd_bool(r, o, "repaired", path);
    e->reply = rd_str(r, o, "reply", path, true);
    e->first_reply = rd_str(r, o, "first_reply", path, true);
    e->error = rd_str(r, o, "error", path, true);
    w = rd_arr(r, o, "weights", P(p, "%s.weights", path), false, (size_t)-1);
    n = w ? (size_t)cJSON_GetArraySize(w) : 0;
    if (n > ncand)
        rd_fail(r, NSED_EINVAL, p, "more weights than candidates");
    if (!r->rc && n) {
        e->weights = calloc(n, sizeof *e->weights);
        if (!e->weights)
            rd_fail(r, NSED_ENOMEM, p, "out of memory");
    }
    cJSON_ArrayForEach(x, w) {
        state_weight *sw;

        if (r->rc)
            break;
        sw = &e->weights[e->nweights++];
        P(p, "%s.weights[%zu]", path, e->nweights - 1);
        sw->cand = rd_label(r, x, p, ncand);
        sw->weight = (int)rd_int(r, x, "weight", p, -100, 100);
        sw->critique = rd_str(r, x, "critique", p, false);
        if (e->nweights > 1 && sw->cand <= e->weights[e->nweights - 2].cand)
            rd_fail(r, NSED_EINVAL, p, "labels out of order");
    }
    d = rd_obj(r, o, "dropped", P(p, "%s.dropped", path), false);
    if (d) {
        e->dropped_self = (size_t)rd_int(r, d, "self", p, 0, COUNT_MAX);
        e->dropped_unknown = (size_t)rd_int(r, d, "unknown", p, 0, COUNT_MAX);
        e->dropped_invalid = (size_t)rd_int(r, d, "invalid", p, 0, COUNT_MAX);
        e->dropped_duplicate =
            (size_t)rd_int(r, d, "duplicate", p, 0, COUNT_MAX);
    }
    rd_usage(r, o, path, &e->usage);
}

static void rd_aggregate(rd *r, const cJSON *o, const char *path,
                         state_round *rn)
{
    state_aggregate *a = &rn->agg;
    char p[160];
    const cJSON *s, *x;
    size_t j = 0;

    a->scheme = (enum workflow_scheme)rd_enum(r, o, "scheme", path, n_scheme,
                                              WORKFLOW_SCHEME_BORDA + 1);
    a->self_votes = rd_bool(r, o, "self_votes", path);
    a->reliability = rd_bool(r, o, "reliability", path);
    a->winner = (long)rd_int(r, o, "winner", path, -1,
                             (int64_t)rn->ncand - 1);
    a->conviction = rd_num(r, o, "conviction", path);
    a->decided_by = (enum state_decider)rd_enum(
        r, o, "decided_by", path, n_decider, STATE_DECIDER_SEEDED + 1);
    a->evaluators = (size_t)rd_int(r, o, "evaluators", path, 0, COUNT_MAX);
    a->abstained = (size_t)rd_int(r, o, "abstained", path, 0, COUNT_MAX);
    a->failed = (size_t)rd_int(r, o, "failed", path, 0, COUNT_MAX);
    s = rd_arr(r, o, "scores", P(p, "%s.scores", path), false, rn->ncand);
    if (!r->rc && rn->ncand) {
        a->scores = calloc(rn->ncand, sizeof *a->scores);
        if (!a->scores)
            rd_fail(r, NSED_ENOMEM, p, "out of memory");
    }
    cJSON_ArrayForEach(x, s) {
        state_score *sc;

        if (r->rc)
            break;
        sc = &a->scores[j];
        P(p, "%s.scores[%zu]", path, j);
        if (rd_label(r, x, p, rn->ncand) != j)
            rd_fail(r, NSED_EINVAL, p, "labels out of order");
        sc->score = rd_num(r, x, "score", p);
        sc->net_support = (int)rd_int(r, x, "net_support", p, -64, 64);
        sc->nevaluators = (size_t)rd_int(r, x, "evaluators", p, 0, 64);
        sc->min_peer = (int)rd_int(r, x, "min_peer", p, -100, 100);
        sc->variance = rd_num(r, x, "variance", p);
        j++;
    }
}

static void rd_decision(rd *r, const cJSON *o, const char *path,
                        state_decision *d)
{
    d->stop = rd_bool(r, o, "stop", path);
    d->reason = (enum state_stop_reason)rd_enum(
        r, o, "reason", path, n_reason, STATE_STOP_ALL_FAILED + 1);
    d->stable_streak = (int)rd_int(r, o, "stable_streak", path, 0, 1 << 20);
    d->p_g = rd_num(r, o, "p_g", path);
    d->p_v = rd_num(r, o, "p_v", path);
    d->lambda = rd_num(r, o, "lambda", path);
    d->beta = rd_num(r, o, "beta", path);
    d->t_opt = rd_num(r, o, "t_opt", path);
    d->target = (int)rd_int(r, o, "target", path, -1, INT32_MAX);
}

static state_round *rd_round(rd *r, const cJSON *o, const char *path,
                             size_t nseats)
{
    char p[96];
    const cJSON *a, *an, *x;
    state_round *rn;
    size_t i = 0;
    int64_t v, index;

    v = rd_int(r, o, "v", path, INT64_MIN / 2, INT64_MAX / 2);
    if (!r->rc && v != STATE_JSON_VERSION)
        rd_fail(r, NSED_ESCHEMA, path, "unsupported version");
    index = rd_int(r, o, "round", path, 0, ROUND_MAX);
    if (r->rc)
        return NULL;
    rn = state_round_new((int)index, nseats);
    if (!rn) {
        rd_fail(r, NSED_ENOMEM, path, "out of memory");
        return NULL;
    }
    a = rd_arr(r, o, "proposals", P(p, "%s.proposals", path), false, nseats);
    cJSON_ArrayForEach(x, a) {
        if (r->rc)
            break;
        rd_proposal(r, x, P(p, "%s.proposals[%zu]", path, i),
                    &rn->proposals[i]);
        i++;
    }
    an = rd_obj(r, o, "anonymize", P(p, "%s.anonymize", path), true);
    if (an) {
        char *fence = rd_str(r, an, "fence", p, false);

        if (fence && strlen(fence) == TEXT_FENCE_HEX &&
            strspn(fence, "0123456789abcdef") == TEXT_FENCE_HEX)
            memcpy(rn->fence, fence, TEXT_FENCE_HEX + 1);
        else
            rd_fail(r, NSED_EINVAL, p, "bad fence");
        free(fence);
        a = rd_arr(r, an, "candidates", P(p, "%s.anonymize.candidates", path),
                   false, (size_t)-1);
        if (a && (size_t)cJSON_GetArraySize(a) > nseats)
            rd_fail(r, NSED_EINVAL, p, "more candidates than seats");
        if (!r->rc && cJSON_GetArraySize(a)) {
            rn->cands = calloc((size_t)cJSON_GetArraySize(a),
                               sizeof *rn->cands);
            if (!rn->cands)
                rd_fail(r, NSED_ENOMEM, p, "out of memory");
        }
        rn->anonymized = true;
        cJSON_ArrayForEach(x, a) {
            state_candidate *c;

            if (r->rc)
                break;
            c = &rn->cands[rn->ncand++];
            P(p, "%s.anonymize.candidates[%zu]", path, rn->ncand - 1);
            if (rd_label(r, x, p, nseats) != rn->ncand - 1)
                rd_fail(r, NSED_EINVAL, p, "labels out of order");
            c->seat = (size_t)rd_int(r, x, "seat", p, 0,
                                     (int64_t)nseats - 1);
            c->text = rd_str(r, x, "text", p, false);
            c->redactions = (size_t)rd_int(r, x, "redactions", p, 0,
                                           COUNT_MAX);
        }
    }
    a = rd_arr(r, o, "evaluations", P(p, "%s.evaluations", path), true,
               nseats);
    if (a && !r->rc) {
        rn->evals = calloc(nseats, sizeof *rn->evals);
        if (!rn->evals)
            rd_fail(r, NSED_ENOMEM, p, "out of memory");
        i = 0;
        cJSON_ArrayForEach(x, a) {
            if (r->rc)
                break;
            rd_evaluation(r, x, P(p, "%s.evaluations[%zu]", path, i),
                          rn->ncand, &rn->evals[i]);
            i++;
        }
    }
    x = rd_obj(r, o, "aggregate", P(p, "%s.aggregate", path), true);
    if (x) {
        rn->aggregated = true;
        rd_aggregate(r, x, p, rn);
    }
    x = rd_obj(r, o, "decision", P(p, "%s.decision", path), true);
    if (x) {
        rn->decided = true;
        rd_decision(r, x, p, &rn->decision);
    }
    return rn;
}

static char **rd_block_list(rd *r, const cJSON *o, const char *key,
                            size_t nseats)
{
    char p[64];
    const cJSON *a = rd_arr(r, o, key, P(p, "carry.%s", key), true, nseats);
    const cJSON *x;
    char **v;
    size_t i = 0;

    if (!a || r->rc)
        return NULL;
    v = calloc(nseats, sizeof *v);
    if (!v) {
        rd_fail(r, NSED_ENOMEM, p, "out of memory");
        return NULL;
    }
    cJSON_ArrayForEach(x, a) {
        if (cJSON_IsString(x)) {
            v[i] = strdup(x->valuestring);
            if (!v[i])
                rd_fail(r, NSED_ENOMEM, p, "out of memory");
        } else if (!cJSON_IsNull(x)) {
            rd_fail(r, NSED_EINVAL, p, "not a string or null");
        }
        i++;
    }
    return v;
}

static int parse_root(const char *json, size_t len, cJSON **out,
                      nsed_err *err)
{
    const char *end = NULL;
    cJSON *root;

    if (len > STATE_JSON_MAX)
        return nsed_error(err, NSED_ETOOBIG, "state JSON: %zu bytes, over "
                          "the cap of %zu", len, STATE_JSON_MAX);
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root)
        return nsed_error(err, NSED_EINVAL, "state JSON: not valid JSON "
                          "(at byte %zu)",
                          end ? (size_t)(end - json) : (size_t)0);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return nsed_error(err, NSED_EINVAL, "state JSON: not an object");
    }
    *out = root;
    return 0;
}

int state_round_from_json(const char *json, size_t len, size_t nseats,
                          state_round **out, nsed_err *err)
{
    rd r = {err, 0};
    cJSON *root = NULL;
    state_round *rn;
    int rc;

    if (nseats == 0 || nseats > WORKFLOW_MAX_SEATS)
        return nsed_error(err, NSED_EINVAL, "state JSON: bad team size %zu",
                          nseats);
    rc = parse_root(json, len, &root, err);
    if (rc)
        return rc;
    rn = rd_round(&r, root, "round", nseats);
    cJSON_Delete(root);
    if (r.rc) {
        state_round_free(rn, nseats);
        return r.rc;
    }
    *out = rn;
    return 0;
}

/* Whether the round has exactly the parts the stage expects, so that a
 * stage never finds (and overwrites or misreads) parts of the wrong age. */
static bool stage_matches_round(enum state_stage stage, const state_round *c)
{
    if (c->evals && !c->anonymized)
        return false;
    switch (stage) {
    case STATE_STAGE_PROPOSE:
    case STATE_STAGE_ANONYMIZE:
        return !c->anonymized && !c->aggregated && !c->decided;
    case STATE_STAGE_EVALUATE:
    case STATE_STAGE_AGGREGATE:
        return c->anonymized && c->evals && !c->aggregated && !c->decided;
    case STATE_STAGE_CONVERGE:
        return c->anonymized && c->evals && c->aggregated && !c->decided;
    case STATE_STAGE_FINISHED:
        return c->decided;
    }
    return false;
}

static void rd_state(rd *r, const cJSON *root, const workflow *wf,
                     state *st)
{
    char p[128];
    const cJSON *q, *a, *x;
    char *seed;
    size_t i = 0, nmodels = wf ? wf->nmodels : (size_t)1 << 20;
    int64_t v;

    v = rd_int(r, root, "v", "v", INT64_MIN / 2, INT64_MAX / 2);
    if (!r->rc && v != STATE_JSON_VERSION)
        rd_fail(r, NSED_ESCHEMA, "v", "unsupported version");
    seed = rd_str(r, root, "seed", "seed", false);
    if (seed) {
        char *end;

        if (strlen(seed) != 16 || strspn(seed, "0123456789abcdef") != 16)
            rd_fail(r, NSED_EINVAL, "seed", "not 16 hex digits");
        else
            st->seed = strtoull(seed, &end, 16);
        free(seed);
    }
    q = rd_obj(r, root, "question", "question", false);
    st->qid = rd_str(r, q, "id", "question.id", false);
    st->question = rd_str(r, q, "text", "question.text", false);
    st->reference = rd_str(r, q, "reference", "question.reference", true);
    a = rd_arr(r, q, "tags", "question.tags", false, (size_t)-1);
    if (a && !r->rc && cJSON_GetArraySize(a)) {
        st->tags = calloc((size_t)cJSON_GetArraySize(a), sizeof *st->tags);
        if (!st->tags)
            rd_fail(r, NSED_ENOMEM, "question.tags", "out of memory");
    }
    cJSON_ArrayForEach(x, a) {
        if (r->rc)
            break;
        if (!cJSON_IsString(x)) {
            rd_fail(r, NSED_EINVAL, "question.tags", "not a string");
            break;
        }
        st->tags[st->ntags] = strdup(x->valuestring);
        if (!st->tags[st->ntags++])
            rd_fail(r, NSED_ENOMEM, "question.tags", "out of memory");
    }
    a = rd_arr(r, root, "seats", "seats", false, (size_t)-1);
    if (a && (cJSON_GetArraySize(a) < 1 ||
              cJSON_GetArraySize(a) > WORKFLOW_MAX_SEATS))
        rd_fail(r, NSED_EINVAL, "seats", "team size out of range");
    if (r->rc)
        return;
    st->nseats = (size_t)cJSON_GetArraySize(a);
    st->seats = calloc(st->nseats, sizeof *st->seats);
    st->missing = calloc(st->nseats, sizeof *st->missing);
    if (!st->seats || !st->missing) {
        rd_fail(r, NSED_ENOMEM, "seats", "out of memory");
        return;
    }
    cJSON_ArrayForEach(x, a) {
        P(p, "seats[%zu]", i);
        st->seats[i].model = (size_t)rd_int(r, x, "model", p, 0,
                                            (int64_t)nmodels - 1);
        st->seats[i].role = rd_str(r, x, "role", p, false);
        st->seats[i].persona = rd_str(r, x, "persona", p, false);
        i++;
    }
    st->round = (int)rd_int(r, root, "round", "round", 0, ROUND_MAX);
    st->stage = (enum state_stage)rd_enum(r, root, "stage", "stage", n_stage,
                                          STATE_STAGE_FINISHED + 1);
    st->status = (enum state_status)rd_enum(r, root, "status", "status",
                                            n_status,
                                            STATE_STATUS_DEGRADED + 1);
    a = rd_arr(r, root, "missing", "missing", false, (size_t)-1);
    cJSON_ArrayForEach(x, a) {
        int64_t s = rd_int_item(r, x, "missing", 0, (int64_t)st->nseats - 1);

        if (r->rc)
            break;
        st->missing[s] = true;
    }
    x = rd_obj(r, root, "final", "final", false);
    st->final_answer = rd_str(r, x, "answer", "final.answer", true);
    st->final_seat = (long)rd_int(r, x, "seat", "final.seat", -1,
                                  (int64_t)st->nseats - 1);
    st->final_round = (int)rd_int(r, x, "round", "final.round", -1,
                                  st->round);
    st->final_source = (enum state_final_source)rd_enum(
        r, x, "source", "final.source", n_final, STATE_FINAL_MAJORITY + 1);
    x = rd_obj(r, root, "baseline", "baseline", false);
    st->baseline_answer = rd_str(r, x, "answer", "baseline.answer", true);
    st->baseline_votes = (size_t)rd_int(r, x, "votes", "baseline.votes", 0,
                                        (int64_t)st->nseats);
    rd_usage(r, root, "state", &st->usage);
    x = rd_obj(r, root, "carry", "carry", false);
    st->carry.from_round = (int)rd_int(r, x, "from_round", "carry.from_round",
                                       -1, st->round);
    {
        char *fence = rd_str(r, x, "fence", "carry.fence", false);
        size_t n = fence ? strlen(fence) : 0;

        if (fence && (n == 0 || n == TEXT_FENCE_HEX) &&
            strspn(fence, "0123456789abcdef") == n)
            memcpy(st->carry.fence, fence, n + 1);
        else if (fence)
            rd_fail(r, NSED_EINVAL, "carry.fence", "bad fence");
        free(fence);
    }
    st->carry.winner = rd_str(r, x, "winner", "carry.winner", true);
    st->carry.own = rd_block_list(r, x, "own", st->nseats);
    st->carry.critiques = rd_block_list(r, x, "critiques", st->nseats);
    st->carry.scores = rd_block_list(r, x, "scores", st->nseats);
    a = rd_arr(r, root, "rounds", "rounds", false, (size_t)-1);
    if (a && (cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > 2))
        rd_fail(r, NSED_EINVAL, "rounds", "must hold one or two rounds");
    if (r->rc)
        return;
    if (cJSON_GetArraySize(a) == 2) {
        st->prev = rd_round(r, cJSON_GetArrayItem(a, 0), "rounds[0]",
                            st->nseats);
        st->cur = rd_round(r, cJSON_GetArrayItem(a, 1), "rounds[1]",
                           st->nseats);
    } else {
        st->cur = rd_round(r, cJSON_GetArrayItem(a, 0), "rounds[0]",
                           st->nseats);
    }
    if (!r->rc && st->cur->index != st->round)
        rd_fail(r, NSED_EINVAL, "rounds", "last round is not the current "
                "round");
    if (!r->rc && st->prev && st->prev->index != st->round - 1)
        rd_fail(r, NSED_EINVAL, "rounds", "first round is not the previous "
                "round");
    if (!r->rc && !stage_matches_round(st->stage, st->cur))
        rd_fail(r, NSED_EINVAL, "stage", "does not match the current round's "
                "progress");
    if (!r->rc && st->prev && !st->prev->decided)
        rd_fail(r, NSED_EINVAL, "rounds[0]", "previous round not decided");
    if (!r->rc && st->final_seat >= 0 && !st->final_answer &&
        st->final_source == STATE_FINAL_NONE)
        rd_fail(r, NSED_EINVAL, "final", "seat without a source");
}

int state_from_json(const char *json, size_t len, const workflow *wf,
                    state **out, nsed_err *err)
{
    rd r = {err, 0};
    cJSON *root = NULL;
    state *st;
    int rc;

    rc = parse_root(json, len, &root, err);
    if (rc)
        return rc;
    st = calloc(1, sizeof *st);
    if (!st) {
        cJSON_Delete(root);
        return NSED_ENOMEM;
    }
    st->carry.from_round = -1;
    rd_state(&r, root, wf, st);
    cJSON_Delete(root);
    if (r.rc) {
        state_free(st);
        return r.rc;
    }
    *out = st;
    return 0;
}
