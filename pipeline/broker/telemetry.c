/* telemetry.c -- per-model measurements for the broker (see telemetry.h). */
#include "pipeline/broker/telemetry.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/json.h"
#include "pipeline/gateway/gateway.h"
#include "stages/answer.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokens assumed for a question in the usage guess (it is shown twice). */
#define GUESS_QUESTION_TOKENS 512.0
/* Share of sampling.max_tokens the usage guess takes for one reply. Every
 * reply at the limit would be safe but would keep a tight budget from
 * staffing any team, and then nothing would ever be measured. */
#define GUESS_REPLY_SHARE 0.5

typedef struct tele_model {
    telemetry_counts own;
    telemetry_counts prior;
    gateway_stats calls;       /* the store's (and the live run's) */
    gateway_stats prior_calls; /* imported */
} tele_model;

struct telemetry {
    const workflow *wf;
    tele_model *m; /* wf->nmodels */
};

int telemetry_new(const workflow *wf, telemetry **out)
{
    telemetry *t = calloc(1, sizeof *t);

    if (!t || !(t->m = calloc(wf->nmodels, sizeof *t->m))) {
        free(t);
        return NSED_ENOMEM;
    }
    t->wf = wf;
    *out = t;
    return 0;
}

void telemetry_free(telemetry *t)
{
    if (!t)
        return;
    free(t->m);
    free(t);
}

/* ---- counts <-> JSON ------------------------------------------------------ */

/* The fields of a counts record: JSON object, key, member. */
typedef struct count_field {
    const char *obj;
    const char *key;
    size_t off;
} count_field;

#define CF(o, k, f) {o, k, offsetof(telemetry_counts, f)}
static const count_field count_fields[] = {
    CF("gen", "n", gen_n),
    CF("gen", "k", gen_k),
    CF("ver", "n", ver_n),
    CF("ver", "k", ver_k),
    CF("usage", "seat_rounds", seat_rounds),
    CF("usage", "team_sum", team_sum),
    CF("usage", "calls", calls),
    CF("usage", "prompt_tokens", prompt_tokens),
    CF("usage", "completion_tokens", completion_tokens),
    CF("usage", "prompt_sq", prompt_sq),
    CF("usage", "completion_sq", completion_sq),
    CF("usage", "cost_usd", cost_usd),
    CF("later", "seat_rounds", later_seat_rounds),
    CF("later", "team_sum", later_team_sum),
    CF("later", "prompt_tokens", later_prompt_tokens),
    CF("later", "completion_tokens", later_completion_tokens),
    CF("later", "prompt_sq", later_prompt_sq),
    CF("later", "completion_sq", later_completion_sq),
};
#define NCOUNT_FIELDS (sizeof count_fields / sizeof count_fields[0])
/* every member is listed above */
_Static_assert(sizeof(telemetry_counts) == NCOUNT_FIELDS * sizeof(double),
               "count_fields must list every member of telemetry_counts");

static double *field_ptr(telemetry_counts *c, size_t i)
{
    return (double *)(void *)((char *)c + count_fields[i].off);
}

static double field_val(const telemetry_counts *c, size_t i)
{
    return *(const double *)(const void *)((const char *)c +
                                           count_fields[i].off);
}

static void counts_add(telemetry_counts *a, const telemetry_counts *b)
{
    for (size_t i = 0; i < NCOUNT_FIELDS; i++)
        *field_ptr(a, i) += field_val(b, i);
}

bool telemetry_counts_empty(const telemetry_counts *c)
{
    for (size_t i = 0; i < NCOUNT_FIELDS; i++)
        if (field_val(c, i) != 0)
            return false;
    return true;
}

/* Add the counts members to object o. Returns 0 or NSED_ENOMEM. */
static int counts_to_json(const telemetry_counts *c, cJSON *o)
{
    for (size_t i = 0; i < NCOUNT_FIELDS; i++) {
        cJSON *sub = cJSON_GetObjectItemCaseSensitive(o, count_fields[i].obj);

        if (!sub && !(sub = cJSON_AddObjectToObject(o, count_fields[i].obj)))
            return NSED_ENOMEM;
        if (json_add_num(sub, count_fields[i].key, field_val(c, i)))
            return NSED_ENOMEM;
    }
    return 0;
}

/* Set the counts members of object o, replacing those it has. Returns 0
 * or NSED_ENOMEM. */
static int counts_to_json_replace(const telemetry_counts *c, cJSON *o)
{
    for (size_t i = 0; i < NCOUNT_FIELDS; i++) {
        cJSON *sub = cJSON_GetObjectItemCaseSensitive(o, count_fields[i].obj);

        if (!sub && !(sub = cJSON_AddObjectToObject(o, count_fields[i].obj)))
            return NSED_ENOMEM;
        if (json_set_item(sub, count_fields[i].key,
                          cJSON_CreateNumber(field_val(c, i))))
            return NSED_ENOMEM;
    }
    return 0;
}

/* Read counts from o (absent members are 0). Returns 0, or -1 naming the
 * bad member in *bad for a value that is not a finite number >= 0. */
static int counts_from_json(const cJSON *o, telemetry_counts *c,
                            const count_field **bad)
{
    telemetry_counts tmp = {0};

    for (size_t i = 0; i < NCOUNT_FIELDS; i++) {
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(
            o, count_fields[i].obj);
        double v = 0;

        if (json_get_num(sub, count_fields[i].key, &v) || v < 0) {
            *bad = &count_fields[i];
            return -1;
        }
        *field_ptr(&tmp, i) = v;
    }
    *c = tmp;
    return 0;
}

/* ---- the store -------------------------------------------------------- */

/* The key of model m's record of kind (store_keys.h): 0 or NSED_ETOOBIG. */
NSED_MUST_CHECK static int model_key(enum store_keys_tele kind,
                                     const workflow_model *m, store_key *key)
{
    return store_keys_telemetry(kind, m->id, key);
}

/* The JSON record under key, or NULL when absent or unparsable. *rc is
 * set to NSED_ESTORE when the store fails. */
static cJSON *get_json(store_txn *txn, const store_key *key, int *rc)
{
    const void *val;
    size_t vlen;
    int r = store_get(txn, STORE_TELEMETRY, key->bytes, key->len, &val, &vlen);

    if (r && r != NSED_ENOTFOUND)
        *rc = r;
    return r ? NULL : cJSON_ParseWithLength(val, vlen);
}

/* The broker's own counts of model m from its "model/<id>" record (none
 * when absent); a record that is no JSON object, or holds a count that is
 * not a number >= 0, is damage, reported as status reports it. */
static int load_own(store_txn *txn, const workflow_model *m,
                    telemetry_counts *own, nsed_err *err)
{
    const count_field *bad = NULL;
    store_key key;
    const void *val;
    size_t vlen;
    char what[STORE_KEY_MAX + 64], why[96];
    cJSON *j;
    int rc;

    if (model_key(STORE_KEYS_MODEL, m, &key))
        return 0;
    rc = store_get(txn, STORE_TELEMETRY, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return nsed_error(err, rc, "cannot read the telemetry: %s",
                          nsed_strerror(rc));
    j = cJSON_ParseWithLength(val, vlen);
    snprintf(what, sizeof what, "the telemetry record \"%s%s\"",
             store_keys_telemetry_prefix(STORE_KEYS_MODEL), m->id);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return store_corrupt(err, txn, STORE_TELEMETRY, what,
                             "not a JSON object");
    }
    rc = counts_from_json(j, own, &bad);
    cJSON_Delete(j);
    if (rc) {
        snprintf(why, sizeof why, "%s.%s is not a count", bad->obj, bad->key);
        return store_corrupt(err, txn, STORE_TELEMETRY, what, why);
    }
    return 0;
}

int telemetry_load(store_txn *txn, telemetry *t, nsed_err *err)
{
    store_key key;
    int rc = 0;

    for (size_t i = 0; i < t->wf->nmodels; i++) {
        const workflow_model *m = &t->wf->models[i];
        tele_model *tm = &t->m[i];
        const count_field *bad;
        cJSON *j;

        memset(tm, 0, sizeof *tm);
        rc = load_own(txn, m, &tm->own, err);
        if (rc)
            return rc;
        if (model_key(STORE_KEYS_PRIOR, m, &key) == 0 &&
            (j = get_json(txn, &key, &rc))) {
            if (counts_from_json(j, &tm->prior, &bad))
                memset(&tm->prior, 0, sizeof tm->prior);
            gateway_stats_from_json(cJSON_GetObjectItemCaseSensitive(j, "calls"),
                                   &tm->prior_calls);
            cJSON_Delete(j);
        }
        if (model_key(STORE_KEYS_GATEWAY, m, &key) == 0 &&
            (j = get_json(txn, &key, &rc))) {
            gateway_stats_from_json(j, &tm->calls);
            cJSON_Delete(j);
        }
        if (rc)
            return nsed_error(err, rc, "cannot read the telemetry: %s",
                              nsed_strerror(rc));
    }
    return 0;
}

static int read_fn(store_txn *txn, void *arg, nsed_err *err)
{
    return telemetry_load(txn, arg, err);
}

int telemetry_read_store(store *st, const workflow *wf, telemetry **out,
                         nsed_err *err)
{
    telemetry *t = NULL;
    int rc = telemetry_new(wf, &t);

    if (rc)
        return nsed_error(err, rc, "out of memory");
    rc = store_read(st, read_fn, t, err);
    if (rc) {
        telemetry_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Put JSON o under key. */
static int put_json(store_txn *txn, const store_key *key, const cJSON *o)
{
    char *text = cJSON_PrintUnformatted(o);
    int rc;

    if (!text)
        return NSED_ENOMEM;
    rc = store_put(txn, STORE_TELEMETRY, key->bytes, key->len, text,
                   strlen(text));
    free(text);
    return rc;
}

static bool stats_empty(const gateway_stats *s)
{
    gateway_stats z;

    memset(&z, 0, sizeof z);
    return memcmp(s, &z, sizeof z) == 0;
}

int telemetry_put_prior(store_txn *txn, const telemetry *t)
{
    store_key key;

    for (size_t i = 0; i < t->wf->nmodels; i++) {
        const tele_model *tm = &t->m[i];
        cJSON *o;
        int rc;

        if (model_key(STORE_KEYS_PRIOR, &t->wf->models[i], &key))
            continue;
        if (telemetry_counts_empty(&tm->prior) &&
            stats_empty(&tm->prior_calls)) {
            rc = store_del(txn, STORE_TELEMETRY, key.bytes, key.len);
            if (rc && rc != NSED_ENOTFOUND)
                return rc;
            continue;
        }
        o = cJSON_CreateObject();
        rc = o ? counts_to_json(&tm->prior, o) : NSED_ENOMEM;
        if (!rc)
            rc = json_add_item(o, "calls",
                               gateway_stats_to_json(&tm->prior_calls));
        if (!rc)
            rc = put_json(txn, &key, o);
        cJSON_Delete(o);
        if (rc)
            return rc;
    }
    return 0;
}

/* Add delta to the "model/<id>" record under key, read through txn. */
static int commit_one(store_txn *txn, const store_key *key,
                      const telemetry_counts *delta)
{
    telemetry_counts c = {0};
    const count_field *bad;
    cJSON *o;
    int rc = 0;

    o = get_json(txn, key, &rc);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    /* A record that does not parse is started over rather than
     * blocking every later commit. */
    if (o && counts_from_json(o, &c, &bad))
        memset(&c, 0, sizeof c);
    cJSON_Delete(o);
    counts_add(&c, delta);
    o = cJSON_CreateObject();
    rc = o ? counts_to_json(&c, o) : NSED_ENOMEM;
    if (!rc)
        rc = put_json(txn, key, o);
    cJSON_Delete(o);
    return rc;
}

int telemetry_commit(store_txn *txn, const workflow *wf,
                     const telemetry_counts *delta)
{
    store_key key;

    for (size_t i = 0; i < wf->nmodels; i++) {
        int rc;

        if (telemetry_counts_empty(&delta[i]))
            continue;
        if (model_key(STORE_KEYS_MODEL, &wf->models[i], &key))
            continue;
        rc = commit_one(txn, &key, &delta[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int telemetry_merge_own(store_txn *txn, const char *model_id, const void *val,
                        size_t vlen)
{
    telemetry_counts c = {0};
    const count_field *bad;
    store_key key;
    cJSON *o = cJSON_ParseWithLength(val, vlen);
    int rc = !o || counts_from_json(o, &c, &bad) ? NSED_EINVAL : 0;

    cJSON_Delete(o);
    if (!rc)
        rc = store_keys_telemetry(STORE_KEYS_MODEL, model_id, &key);
    if (!rc)
        rc = commit_one(txn, &key, &c);
    return rc;
}

void telemetry_add(telemetry *t, const telemetry_counts *delta)
{
    for (size_t i = 0; i < t->wf->nmodels; i++)
        counts_add(&t->m[i].own, &delta[i]);
}

void telemetry_set_calls(telemetry *t, size_t m, const gateway_stats *s)
{
    if (m < t->wf->nmodels)
        t->m[m].calls = *s;
}

void telemetry_counts_get(const telemetry *t, size_t m,
                          enum telemetry_source src, telemetry_counts *out)
{
    memset(out, 0, sizeof *out);
    if (!t || m >= t->wf->nmodels)
        return;
    switch (src) {
    case TELEMETRY_OWN:
        *out = t->m[m].own;
        break;
    case TELEMETRY_PRIOR:
        *out = t->m[m].prior;
        break;
    }
}

/* ---- observing a round ------------------------------------------------- */

static bool cand_correct(const workflow *wf, const state *st,
                         const state_round *r, size_t cand)
{
    const state_proposal *p = &r->proposals[r->cands[cand].seat];

    return p->status == STATE_PROPOSAL_OK &&
           answer_matches(&wf->answer, p->answer, st->reference);
}

/* How right evaluation e of seat `seat` was, in [0, 1], or -1 when it
 * weighted no candidate with a known verdict: the fraction of (correct,
 * incorrect) candidate pairs it ordered right when it saw both kinds;
 * when all it weighted were of one kind (a team of two sees only one
 * candidate), the fraction it judged by sign (positive weight for a
 * correct one, negative for an incorrect one). Ties and zero weights
 * count 1/2. */
static double eval_fraction(const workflow *wf, const state *st,
                            const state_round *r, size_t seat,
                            const state_evaluation *e)
{
    double right = 0, pairs = 0, signs = 0, sign_right = 0;

    for (size_t a = 0; a < e->nweights; a++) {
        const state_weight *wa = &e->weights[a];
        bool ca;

        if (wa->cand >= r->ncand || r->cands[wa->cand].seat == seat)
            continue;
        ca = cand_correct(wf, st, r, wa->cand);
        signs += 1;
        sign_right += wa->weight == 0                ? 0.5
                      : (wa->weight > 0) == ca ? 1.0
                                                     : 0.0;
        if (!ca)
            continue;
        for (size_t b = 0; b < e->nweights; b++) {
            const state_weight *wb = &e->weights[b];

            if (wb->cand >= r->ncand || r->cands[wb->cand].seat == seat ||
                cand_correct(wf, st, r, wb->cand))
                continue;
            pairs += 1;
            right += wa->weight > wb->weight ? 1.0
                     : wa->weight == wb->weight ? 0.5
                                                : 0.0;
        }
    }
    if (pairs > 0)
        return right / pairs;
    return signs > 0 ? sign_right / signs : -1;
}

void telemetry_observe_round(const workflow *wf, const state *st,
                             const state_round *r, telemetry_counts *delta)
{
    for (size_t i = 0; i < st->nseats; i++) {
        const state_proposal *p = &r->proposals[i];
        const state_evaluation *e = r->evals ? &r->evals[i] : NULL;
        telemetry_counts *d = &delta[st->seats[i].model];
        bool lost = p->status == STATE_PROPOSAL_PENDING ||
                    (p->status == STATE_PROPOSAL_FAILED && p->infra);

        if (st->reference && r->index == 0 && !lost) {
            d->gen_n += 1;
            if (p->status == STATE_PROPOSAL_OK &&
                answer_matches(&wf->answer, p->answer, st->reference))
                d->gen_k += 1;
        }
        if (st->reference && e && e->status == STATE_EVAL_OK) {
            double f = eval_fraction(wf, st, r, i, e);

            if (f >= 0) {
                d->ver_n += 1;
                d->ver_k += f;
            }
        }
        if (lost || (e && (e->status == STATE_EVAL_FAILED ||
                           e->status == STATE_EVAL_PENDING ||
                           e->status == STATE_EVAL_REPAIR)))
            continue;
        {
            double pt = (double)p->usage.prompt_tokens;
            double ct = (double)p->usage.completion_tokens;
            double cost = p->usage.cost_usd, calls = 1;

            if (e && e->status != STATE_EVAL_IDLE) {
                calls += e->repaired ? 2 : 1;
                pt += (double)e->usage.prompt_tokens;
                ct += (double)e->usage.completion_tokens;
                cost += e->usage.cost_usd;
            }
            d->seat_rounds += 1;
            d->team_sum += (double)st->nseats;
            d->calls += calls;
            d->prompt_tokens += pt;
            d->completion_tokens += ct;
            d->prompt_sq += pt * pt;
            d->completion_sq += ct * ct;
            d->cost_usd += cost;
            if (r->index > 0) {
                d->later_seat_rounds += 1;
                d->later_team_sum += (double)st->nseats;
                d->later_prompt_tokens += pt;
                d->later_completion_tokens += ct;
                d->later_prompt_sq += pt * pt;
                d->later_completion_sq += ct * ct;
            }
        }
    }
}

/* ---- estimates ----------------------------------------------------------- */

/* Tokens of one seat-round at a round position. */
typedef struct usage_pos {
    double prompt, completion;
} usage_pos;

static double mean_plus_2sd(double sum, double sq, double n)
{
    double mean = sum / n, var = sq / n - mean * mean;

    return mean + 2 * sqrt(var > 0 ? var : 0);
}

/* Replace *u with the measured estimate when there are n > 0 seat-rounds
 * at this position (team sizes summing to team); size is the team the
 * estimate is for. */
static void position(double n, double team, double prompt, double compl,
                     double prompt_sq, double compl_sq, double size,
                     usage_pos *u)
{
    double n_obs, scale;

    if (n < 0.5) /* counts are whole numbers; differences may round */
        return;
    n_obs = team / n;
    scale = n_obs > 0 && size > n_obs ? size / n_obs : 1.0;
    u->prompt = mean_plus_2sd(prompt, prompt_sq, n) * scale;
    u->completion = mean_plus_2sd(compl, compl_sq, n);
}

static double beta_mean(double prior, double strength, double k, double n)
{
    return (strength * prior + k) / (strength + n);
}

void telemetry_estimate_for(const telemetry *t, const workflow *wf, size_t m,
                        int team_size, telemetry_estimate *out)
{
    const workflow_model *wm = &wf->models[m];
    const workflow_broker *b = &wf->broker;
    telemetry_counts c = {0};
    gateway_stats gs;
    double n = team_size < 1 ? 1 : (double)team_size;
    double pg0 = wm->prior_p_gen >= 0 ? wm->prior_p_gen : b->prior_p_gen;
    double pv0 = wm->prior_p_ver >= 0 ? wm->prior_p_ver : b->prior_p_ver;

    memset(out, 0, sizeof *out);
    memset(&gs, 0, sizeof gs);
    if (t && m < t->wf->nmodels) {
        c = t->m[m].own;
        counts_add(&c, &t->m[m].prior);
        gateway_stats_add(&gs, &t->m[m].calls);
        gateway_stats_add(&gs, &t->m[m].prior_calls);
    }
    out->p_g = beta_mean(pg0, b->prior_strength, c.gen_k, c.gen_n);
    out->p_g_n = c.gen_n;
    out->p_v = beta_mean(pv0, b->prior_strength, c.ver_k, c.ver_n);
    out->p_v_n = c.ver_n;
    {
        double mt = GUESS_REPLY_SHARE * (double)wm->sampling.max_tokens;
        double g = (double)(2 * strlen(wf->prompts.system) +
                            strlen(wf->prompts.revise) +
                            strlen(wf->prompts.evaluate)) / 4.0 +
                   GUESS_QUESTION_TOKENS;
        usage_pos first = {g + (n + 1) * mt, 2 * mt};
        usage_pos later = first;
        double later_rounds = wf->rounds.max > 1 ? wf->rounds.max - 1 : 0;

        position(c.seat_rounds - c.later_seat_rounds,
                 c.team_sum - c.later_team_sum,
                 c.prompt_tokens - c.later_prompt_tokens,
                 c.completion_tokens - c.later_completion_tokens,
                 c.prompt_sq - c.later_prompt_sq,
                 c.completion_sq - c.later_completion_sq, n, &first);
        position(c.later_seat_rounds, c.later_team_sum,
                 c.later_prompt_tokens, c.later_completion_tokens,
                 c.later_prompt_sq, c.later_completion_sq, n, &later);
        out->seat_rounds = c.seat_rounds - c.later_seat_rounds;
        out->later_seat_rounds = c.later_seat_rounds;
        out->first_tokens = first.prompt + first.completion;
        out->later_tokens = later.prompt + later.completion;
        out->prompt_tokens = first.prompt + later_rounds * later.prompt;
        out->completion_tokens =
            first.completion + later_rounds * later.completion;
        out->calls = c.seat_rounds > 0 ? c.calls / c.seat_rounds : 2;
    }
    out->cost_usd = (out->prompt_tokens * wm->price_input_per_mtok +
                     out->completion_tokens * wm->price_output_per_mtok) /
                    1e6;
    out->gw_calls = (double)gs.calls;
    out->failure_rate = gs.calls ? (double)gs.failed / (double)gs.calls : 0;
    out->latency_mean_s = gs.ok ? gs.latency_sum_s / (double)gs.ok : 0;
    out->latency_p95_s = gateway_stats_latency_quantile(&gs, 0.95);
}

/* ---- the telemetry file -------------------------------------------------- */

/* One STORE_TELEMETRY entry into the export being built (arg). */
typedef struct export_ctx {
    cJSON *models;
    int rc;
} export_ctx;

static cJSON *export_model(export_ctx *x, const char *id, size_t len)
{
    char name[STORE_KEY_MAX + 1];
    cJSON *m;

    memcpy(name, id, len);
    name[len] = '\0';
    m = cJSON_GetObjectItemCaseSensitive(x->models, name);
    if (!m && (m = cJSON_AddObjectToObject(x->models, name))) {
        telemetry_counts z = {0};
        gateway_stats gs;

        memset(&gs, 0, sizeof gs);
        if (counts_to_json(&z, m) ||
            json_add_item(m, "calls", gateway_stats_to_json(&gs)))
            return NULL;
    }
    return m;
}

/* Add the counts of j and, when calls_of is not NULL, the call statistics
 * it holds, into model m of the export. */
static int export_add(cJSON *m, const cJSON *j, const cJSON *calls_of)
{
    telemetry_counts a = {0}, b = {0};
    const count_field *bad;
    gateway_stats x, y;

    if (counts_from_json(m, &a, &bad))
        memset(&a, 0, sizeof a);
    if (j && counts_from_json(j, &b, &bad))
        memset(&b, 0, sizeof b);
    counts_add(&a, &b);
    if (counts_to_json_replace(&a, m))
        return NSED_ENOMEM;
    if (!calls_of)
        return 0;
    gateway_stats_from_json(cJSON_GetObjectItemCaseSensitive(m, "calls"), &x);
    gateway_stats_from_json(calls_of, &y);
    gateway_stats_add(&x, &y);
    return json_set_item(m, "calls", gateway_stats_to_json(&x));
}

static int export_entry(const void *key, size_t klen, const void *val,
                        size_t vlen, void *arg)
{
    export_ctx *x = arg;
    enum store_keys_tele kind;
    size_t off, len;
    cJSON *j, *m;

    if (store_keys_telemetry_parse(key, klen, &kind, &off, &len) != 0 ||
        kind == STORE_KEYS_BREAKER) /* the run's state, not telemetry */
        return 0;
    j = cJSON_ParseWithLength(val, vlen);
    if (!j)
        return 0;
    m = export_model(x, (const char *)key + off, len);
    if (!m) {
        x->rc = NSED_ENOMEM;
    } else {
        switch (kind) {
        case STORE_KEYS_MODEL:
            x->rc = export_add(m, j, NULL);
            break;
        case STORE_KEYS_PRIOR:
            x->rc = export_add(m, j,
                               cJSON_GetObjectItemCaseSensitive(j, "calls"));
            break;
        case STORE_KEYS_GATEWAY:
            x->rc = export_add(m, NULL, j);
            break;
        case STORE_KEYS_BREAKER: /* skipped above */
            break;
        }
    }
    cJSON_Delete(j);
    return x->rc ? 1 : 0;
}

int telemetry_export(store_txn *txn, const char *workflow_name, char **out)
{
    cJSON *o = cJSON_CreateObject();
    export_ctx x = {0};
    buf b;
    char *text = NULL;
    int rc = NSED_ENOMEM;

    buf_init(&b, TELEMETRY_FILE_MAX);
    if (!o || json_add_num(o, "nsed_telemetry", TELEMETRY_FORMAT) ||
        json_add_str(o, "workflow", workflow_name) ||
        !(x.models = cJSON_AddObjectToObject(o, "models")))
        goto out;
    rc = store_scan(txn, STORE_TELEMETRY, NULL, 0, NULL, 0, export_entry, &x);
    if (x.rc)
        rc = x.rc;
    if (rc)
        goto out;
    rc = NSED_ENOMEM;
    text = cJSON_PrintUnformatted(o);
    if (!text)
        goto out;
    rc = buf_adds(&b, text);
    if (!rc)
        rc = buf_addc(&b, '\n');
    if (rc)
        goto out;
    *out = buf_detach(&b, NULL);
    rc = *out ? 0 : NSED_ENOMEM;
out:
    free(text);
    buf_release(&b);
    cJSON_Delete(o);
    return rc;
}

int telemetry_import_file(telemetry *t, const char *path, size_t *unknown,
                          nsed_err *err)
{
    buf b;
    cJSON *j = NULL, *v;
    const cJSON *models, *mo;
    telemetry_counts *prior = NULL;
    gateway_stats *calls = NULL;
    size_t nunknown = 0;
    int rc;

    buf_init(&b, TELEMETRY_FILE_MAX);
    rc = buf_read_file(&b, path);
    if (rc == NSED_ETOOBIG) {
        rc = nsed_error(err, rc, "%s: larger than %zu bytes", path,
                        TELEMETRY_FILE_MAX);
        goto out;
    }
    if (rc) {
        rc = nsed_error(err, rc, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    j = cJSON_ParseWithLength(b.ptr, b.len);
    v = cJSON_GetObjectItemCaseSensitive(j, "nsed_telemetry");
    if (!cJSON_IsObject(j) || !cJSON_IsNumber(v)) {
        rc = nsed_error(err, NSED_EINVAL, "%s: not a telemetry file (a JSON "
                        "object with \"nsed_telemetry\" written by nsed "
                        "status --telemetry-out)", path);
        goto out;
    }
    if (v->valuedouble != TELEMETRY_FORMAT) {
        rc = nsed_error(err, NSED_EINVAL, "%s: telemetry format %g is not "
                        "understood (this nsed reads format %d)", path,
                        v->valuedouble, TELEMETRY_FORMAT);
        goto out;
    }
    models = cJSON_GetObjectItemCaseSensitive(j, "models");
    if (!cJSON_IsObject(models)) {
        rc = nsed_error(err, NSED_EINVAL, "%s: \"models\" must be an object",
                        path);
        goto out;
    }
    prior = calloc(t->wf->nmodels, sizeof *prior);
    calls = calloc(t->wf->nmodels, sizeof *calls);
    if (!prior || !calls) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    cJSON_ArrayForEach(mo, models) {
        const workflow_model *wm = workflow_model_find(t->wf, mo->string);
        const count_field *bad = NULL;
        size_t i;

        if (!wm) {
            nunknown++;
            continue;
        }
        i = workflow_model_index(t->wf, wm);
        if (!cJSON_IsObject(mo)) {
            rc = nsed_error(err, NSED_EINVAL, "%s: models.%s: must be an "
                            "object", path, mo->string);
            goto out;
        }
        if (counts_from_json(mo, &prior[i], &bad)) {
            rc = nsed_error(err, NSED_EINVAL, "%s: models.%s.%s.%s: must be "
                            "a number >= 0", path, mo->string, bad->obj,
                            bad->key);
            goto out;
        }
        gateway_stats_from_json(cJSON_GetObjectItemCaseSensitive(mo, "calls"),
                               &calls[i]);
    }
    for (size_t i = 0; i < t->wf->nmodels; i++) {
        t->m[i].prior = prior[i];
        t->m[i].prior_calls = calls[i];
    }
    if (unknown)
        *unknown = nunknown;
    rc = 0;
out:
    free(prior);
    free(calls);
    cJSON_Delete(j);
    buf_release(&b);
    return rc;
}
