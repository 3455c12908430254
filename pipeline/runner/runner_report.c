/* runner_report.c -- the report of a run store (see runner_report.h). */
#include "pipeline/runner/runner_report.h"

#include "pipeline/base/json.h"

#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_bias.h"
#include "pipeline/runner/runner_int.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What is read in the transaction besides the report itself. */
typedef struct report_read {
    runner_report *r;
    runner_round_counts rounds;
    double ver_n, ver_k; /* pooled verification judgements */
    double gen_n, gen_k; /* pooled round-0 answers judged */
    size_t rounds_sum;
    size_t stopped; /* results converge stopped (rounds_mean's count) */
    double expected_cost, expected_value, actual_cost; /* broker sums */
    runner_bias_acc bias; /* position and length bias (runner_bias.h) */
    store_txn *txn;
    nsed_err *err;
    int rc;
} report_read;

/* ---- reading the records ------------------------------------------------ */

/* The entry for name, added when new; NULL when the table is full or out
 * of memory (the occurrence is then not counted). */
static runner_report_tally *tally_get(runner_report_tallies *t,
                                      const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->items[i].name, name))
            return &t->items[i];
    if (t->n == RUNNER_REPORT_NAMES_MAX)
        return NULL;
    t->items[t->n].name = strdup(name);
    if (!t->items[t->n].name)
        return NULL;
    return &t->items[t->n++];
}

static void tally_release(runner_report_tallies *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->items[i].name);
    t->n = 0;
}

/* Add a result's "counts" (runner_result.c) to the report. */
static void count_rounds(runner_report *r, const cJSON *counts)
{
    const cJSON *m;

    r->rounds += (size_t)json_num(counts, "rounds", 0);
    r->winnerless += (size_t)json_num(counts, "winnerless_rounds", 0);
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(counts, "models")) {
        /* every model seen gets an entry in each table, zeros included */
        runner_report_tally *t = tally_get(&r->proposals, m->string);

        if (t)
            t->n += (size_t)json_num(m, "proposals", 0);
        if ((t = tally_get(&r->no_answer, m->string)))
            t->n += (size_t)json_num(m, "no_answer", 0);
        if ((t = tally_get(&r->evaluations, m->string)))
            t->n += (size_t)json_num(m, "evaluations", 0);
        if ((t = tally_get(&r->abstained, m->string)))
            t->n += (size_t)json_num(m, "abstained", 0);
        if ((t = tally_get(&r->truncated, m->string)))
            t->n += (size_t)json_num(m, "truncated", 0);
    }
}

/* Count a result's baselines.self_consistency (b: its baselines) into
 * sc; judged: the question counts into the accuracy. */
static void count_selfcons(runner_report_selfcons *sc, const cJSON *b,
                           bool judged)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(b, "self_consistency");
    runner_report_tally *t;

    if (!x)
        return;
    sc->results++;
    if (!cJSON_IsObject(x)) {
        sc->incomplete++;
        return;
    }
    sc->samples += (size_t)json_num(x, "samples", 0);
    sc->failed += (size_t)json_num(x, "failed", 0);
    sc->cost_usd += json_num(x, "cost_usd", 0);
    if ((t = tally_get(&sc->models, json_str(x, "model", "?"))))
        t->n++;
    if (!json_bool(x, "complete", false)) {
        sc->incomplete++;
        return;
    }
    if (!judged)
        return;
    sc->judged++;
    sc->correct += (size_t)json_bool(x, "correct", false);
    sc->ties += (size_t)json_bool(x, "tie", false);
}

/* Count a result record (runner_result_json). */
static void count_result(report_read *rr, const cJSON *res)
{
    runner_report *r = rr->r;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(res, "baselines");
    const cJSON *m, *maj = cJSON_GetObjectItemCaseSensitive(b, "majority");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(res, "tokens");
    const char *stop = json_str(res, "stop_reason", NULL);
    const cJSON *counts = cJSON_GetObjectItemCaseSensitive(res, "counts");
    runner_report_tally *t;
    enum state_status outcome;

    /* the record's owner reads its status; one it cannot read counts as
     * failed, so the report never hides it */
    if (runner_result_outcome_json(res, &outcome))
        outcome = STATE_STATUS_FAILED;
    switch (outcome) {
    case STATE_STATUS_DONE:
        r->done++;
        break;
    case STATE_STATUS_DEGRADED:
        r->degraded++;
        break;
    case STATE_STATUS_FAILED:
    case STATE_STATUS_INCOMPLETE:
    case STATE_STATUS_ACTIVE:
        r->failed++;
        t = tally_get(&r->failed_why,
                      json_str(res, "failure", "no final answer"));
        if (t)
            t->n++;
        break;
    }
    r->tokens += json_num(tok, "prompt", 0) + json_num(tok, "completion", 0);
    r->cost_usd += json_num(res, "cost_usd", 0);
    count_rounds(r, counts);
    /* a question a permanent error stopped was never stopped by a rule */
    if (stop && strcmp(stop, "none") != 0) {
        rr->stopped++;
        rr->rounds_sum += (size_t)json_num(res, "rounds", 0);
        if ((t = tally_get(&r->stops, stop)))
            t->n++;
    }
    /* a result has a boolean "correct" only when it has a reference;
     * accuracy is over the questions a stopping rule stopped, as a
     * question a permanent error stopped has no round-0 baselines to
     * compare (it counts as failed) */
    count_selfcons(&r->sc, b,
                   cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(res,
                                                                 "correct")) &&
                       stop && strcmp(stop, "none") != 0);
    if (!cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(res, "correct")) ||
        !stop || strcmp(stop, "none") == 0)
        return;
    r->with_ref++;
    r->correct += (size_t)json_bool(res, "correct", false);
    r->majority_correct += (size_t)json_bool(maj, "correct", false);
    runner_baselines_count(r->baselines, res);
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(b, "models")) {
        const char *id = json_str(m, "model", NULL);

        if (id && (t = tally_get(&r->round0, id))) {
            t->n++;
            t->correct += (size_t)json_bool(m, "correct", false);
        }
    }
}

/* Count the broker's decision record (broker.h) of a question (res: its
 * result or NULL). */
static void count_decision(report_read *rr, const cJSON *rec,
                           const cJSON *res)
{
    runner_report_broker *b = &rr->r->broker;
    const cJSON *c, *cands = cJSON_GetObjectItemCaseSensitive(rec,
                                                              "candidates");
    const cJSON *cons = cJSON_GetObjectItemCaseSensitive(rec, "constraints");
    const cJSON *budget = cJSON_GetObjectItemCaseSensitive(cons,
                                                           "usd_per_question");
    const char *policy = json_str(rec, "policy", NULL);
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(rec,
                                                         "expected_cost_usd");
    runner_report_tally *t;

    b->decisions++;
    if (policy && (t = tally_get(&b->policies, policy)))
        t->n++;
    if (!json_bool(rec, "staffed", false)) {
        b->unstaffed++;
        return;
    }
    cJSON_ArrayForEach(c, cands) {
        const char *id = json_str(c, "model", NULL);

        if (!id)
            continue;
        if (json_bool(c, "chosen", false) && (t = tally_get(&b->chosen, id)))
            t->n++;
        if (json_bool(c, "in_pool", false) && !json_bool(c, "admitted", false) &&
            (t = tally_get(&b->excluded, id)))
            t->n++;
    }
    if (policy && strcmp(policy, "knapsack") == 0 && cJSON_IsNumber(cost)) {
        b->with_expected++;
        rr->expected_cost += cost->valuedouble;
        rr->expected_value += json_num(rec, "expected_value", 0);
        if (res) {
            double actual = json_num(res, "cost_usd", 0);

            b->actual_n++;
            rr->actual_cost += actual;
            if (cJSON_IsNumber(budget) &&
                actual > budget->valuedouble * (1 + 1e-9))
                b->over_budget++;
        }
    }
}

/* True when question qid has STORE_STATE record rec. A key that cannot be
 * built or a failing read counts as absent: the report then shows the
 * question as not started rather than failing as a whole. */
static bool has_state(report_read *rr, const char *qid,
                      enum store_keys_qrec rec, const void **val,
                      size_t *vlen)
{
    store_key key;
    int rc;

    if (store_keys_question(qid, rec, 0, &key))
        return false;
    rc = store_get(rr->txn, STORE_STATE, key.bytes, key.len, val, vlen);
    /* a record that cannot be read (a compressed one that does not
     * decompress) is damage, not absence: visit_question stops at it */
    if (rc && rc != NSED_ENOTFOUND && !rr->rc)
        rr->rc = nsed_error(rr->err, rc, "cannot read a record of %s", qid);
    return rc == 0;
}

/* Count the decision of qid; a decision that does not parse is damage
 * (rr->rc set, 1 returned to stop the scan). */
static int visit_decision(report_read *rr, const char *qid, const cJSON *res)
{
    const void *val;
    size_t vlen;
    cJSON *rec;

    if (!has_state(rr, qid, STORE_KEYS_BROKER, &val, &vlen))
        return rr->rc ? 1 : 0;
    rec = cJSON_ParseWithLength(val, vlen);
    if (!cJSON_IsObject(rec)) {
        char what[STORE_KEY_MAX + 32];

        cJSON_Delete(rec);
        snprintf(what, sizeof what, "the broker decision of %s", qid);
        rr->rc = store_corrupt(rr->err, rr->txn, STORE_STATE, what,
                               "not a JSON object");
        return 1;
    }
    count_decision(rr, rec, res);
    cJSON_Delete(rec);
    return 0;
}

/* Tally why a question is incomplete: its marker's "reason" (markers of
 * an older nsed: the first failed call's error, or the broker's). */
static void count_incomplete(runner_report *r, const void *val, size_t len)
{
    cJSON *m = cJSON_ParseWithLength(val, len);
    const cJSON *f =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(m, "failed"), 0);
    const char *why = json_str(m, "reason", NULL);
    runner_report_tally *t;

    if (!why)
        why = json_str(f, "error", json_str(m, "error", "unknown"));
    if ((t = tally_get(&r->incomplete_why, why)))
        t->n++;
    cJSON_Delete(m);
}

static int visit_question(const question *q, uint64_t seq, void *arg)
{
    report_read *rr = arg;
    runner_report *r = rr->r;
    const void *val;
    size_t vlen;
    store_key key;
    int rc;

    (void)seq;
    r->total++;
    rc = store_keys_result(q->id, &key) == 0
             ? store_get(rr->txn, STORE_RESULTS, key.bytes, key.len, &val,
                         &vlen)
             : NSED_ENOTFOUND;
    if (rc && rc != NSED_ENOTFOUND) {
        rr->rc = nsed_error(rr->err, rc, "cannot read the result of %s", q->id);
        return 1;
    }
    if (rc == 0) {
        cJSON *res = cJSON_ParseWithLength(val, vlen);

        if (!res) {
            char what[STORE_KEY_MAX + 32];

            snprintf(what, sizeof what, "the result of %s", q->id);
            rr->rc = store_corrupt(rr->err, rr->txn, STORE_RESULTS, what,
                                   "not valid JSON");
            return 1;
        }
        count_result(rr, res);
        rc = visit_decision(rr, q->id, res);
        cJSON_Delete(res);
        if (!rc && runner_bias_question(&rr->bias, rr->txn, q->id)) {
            rr->rc = nsed_error(rr->err, NSED_ENOMEM, "out of memory");
            return 1;
        }
        return rc;
    }
    if (visit_decision(rr, q->id, NULL))
        return 1;
    if (has_state(rr, q->id, STORE_KEYS_INCOMPLETE, &val, &vlen)) {
        r->incomplete++;
        count_incomplete(r, val, vlen);
    } else if (has_state(rr, q->id, STORE_KEYS_STATE, &val, &vlen))
        r->in_progress++;
    else if (!rr->rc)
        r->not_started++;
    return rr->rc ? 1 : 0;
}

/* A "breaker/<id>" record: keep the model when it was paused. */
static int visit_breaker(report_read *rr, const char *id, const void *val,
                         size_t vlen)
{
    runner_report *r = rr->r;
    runner_breaker_rec b;
    runner_report_paused *grown;

    if (runner_breaker_parse(val, vlen, &b)) {
        char what[STORE_KEY_MAX + 64];

        snprintf(what, sizeof what, "the telemetry record \"%s%s\"",
                 store_keys_telemetry_prefix(STORE_KEYS_BREAKER), id);
        rr->rc = store_corrupt(rr->err, rr->txn, STORE_TELEMETRY, what,
                               "not the breaker record nsed writes");
        return 1;
    }
    if (!b.paused)
        return 0;
    grown = realloc(r->paused, (r->npaused + 1) * sizeof *grown);
    if (!grown || !(grown[r->npaused].id = strdup(id))) {
        if (grown)
            r->paused = grown;
        rr->rc = nsed_error(rr->err, NSED_ENOMEM, "out of memory");
        return 1;
    }
    r->paused = grown;
    snprintf(grown[r->npaused].since, sizeof grown[r->npaused].since, "%s",
             b.since);
    grown[r->npaused].run_ended = b.run_ended;
    r->npaused++;
    return 0;
}

/* Keep a telemetry record: "gateway/<id>" into r->telemetry, and pool the
 * accuracy counts of "model/<id>". */
static int visit_telemetry(const void *key, size_t klen, const void *val,
                           size_t vlen, void *arg)
{
    report_read *rr = arg;
    enum store_keys_tele kind;
    size_t off, len;
    char id[STORE_KEY_MAX + 1];
    cJSON *j;

    if (store_keys_telemetry_parse(key, klen, &kind, &off, &len) != 0)
        return 0;
    memcpy(id, (const char *)key + off, len);
    id[len] = '\0';
    j = cJSON_ParseWithLength(val, vlen);
    if (!cJSON_IsObject(j) && kind != STORE_KEYS_PRIOR) {
        char what[STORE_KEY_MAX + 64];

        cJSON_Delete(j);
        snprintf(what, sizeof what, "the telemetry record \"%s%s\"",
                 store_keys_telemetry_prefix(kind), id);
        rr->rc = store_corrupt(rr->err, rr->txn, STORE_TELEMETRY, what,
                               "not a JSON object");
        return 1;
    }
    switch (kind) {
    case STORE_KEYS_GATEWAY:
        cJSON_AddItemToObject(rr->r->telemetry, id, j);
        return 0;
    case STORE_KEYS_MODEL:
        rr->ver_n += json_num(cJSON_GetObjectItemCaseSensitive(j, "ver"), "n", 0);
        rr->ver_k += json_num(cJSON_GetObjectItemCaseSensitive(j, "ver"), "k", 0);
        rr->gen_n += json_num(cJSON_GetObjectItemCaseSensitive(j, "gen"), "n", 0);
        rr->gen_k += json_num(cJSON_GetObjectItemCaseSensitive(j, "gen"), "k", 0);
        cJSON_Delete(j);
        return 0;
    case STORE_KEYS_PRIOR:
        cJSON_Delete(j);
        return 0;
    case STORE_KEYS_BREAKER:
        cJSON_Delete(j);
        return visit_breaker(rr, id, val, vlen);
    }
    cJSON_Delete(j);
    return 0;
}

static int scan_kind(report_read *rr, enum store_keys_tele kind)
{
    const char *p = store_keys_telemetry_prefix(kind);

    return store_scan(rr->txn, STORE_TELEMETRY, p, strlen(p), NULL, 0,
                      visit_telemetry, rr);
}

static int read_fn(store_txn *txn, void *arg, nsed_err *err)
{
    report_read *rr = arg;
    int rc;

    (void)err;
    rr->txn = txn;
    rc = questions_scan(txn, 0, visit_question, rr, rr->err);
    if (rr->rc)
        return rr->rc;
    if (rc)
        return rc; /* the scan's message says which record */
    rc = runner_rounds_read(txn, &rr->rounds);
    if (rc == NSED_ESTORE)
        return store_corrupt(rr->err, txn, STORE_TELEMETRY,
                             "the per-round record \"rounds\"",
                             "not the counts nsed writes");
    if (!rc)
        rc = scan_kind(rr, STORE_KEYS_MODEL);
    if (rr->rc)
        return rr->rc;
    if (rc)
        return nsed_error(rr->err, rc, "cannot read the telemetry");
    rc = scan_kind(rr, STORE_KEYS_GATEWAY);
    if (!rc && !rr->rc)
        rc = scan_kind(rr, STORE_KEYS_BREAKER);
    return rr->rc ? rr->rc : rc;
}

/* ---- the figures derived from what was read ----------------------------- */

static double mean_or(double sum, size_t n)
{
    return n ? sum / (double)n : 0;
}

/* The histogram bucket of a stored statistics record that holds latency
 * quantile q: (*lo, *hi], in ms. */
static void quantile_ms(const cJSON *stats, double q, double *lo, double *hi)
{
    gateway_stats s;

    gateway_stats_from_json(stats, &s);
    gateway_stats_latency_range(&s, q, lo, hi);
    *lo *= 1000.0;
    *hi *= 1000.0;
}

static int derive_models(runner_report *r)
{
    const cJSON *m;
    size_t n = (size_t)cJSON_GetArraySize(r->telemetry), i = 0;

    if (n == 0)
        return 0;
    r->models = calloc(n, sizeof *r->models);
    if (!r->models)
        return NSED_ENOMEM;
    cJSON_ArrayForEach(m, r->telemetry) {
        runner_report_model *rm = &r->models[i++];
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(m, "errors");
        const cJSON *e;
        size_t ne = (size_t)cJSON_GetArraySize(errs);

        r->nmodels++;
        rm->id = m->string;
        rm->calls = json_num(m, "calls", 0);
        rm->ok = json_num(m, "ok", 0);
        rm->failed = json_num(m, "failed", 0);
        rm->retries = json_num(m, "retries", 0);
        rm->ledger_hits = json_num(m, "ledger_hits", 0);
        rm->cache_hits = json_num(m, "cache_hits", 0);
        rm->tokens = json_num(m, "prompt_tokens", 0) + json_num(m, "completion_tokens", 0);
        rm->cost_usd = json_num(m, "cost_usd", 0);
        {
            gateway_stats gs;

            gateway_stats_from_json(m, &gs);
            for (size_t k = 0; k < GATEWAY_CALL_KIND_COUNT; k++) {
                r->kind_calls[k] += (double)gs.kind_calls[k];
                r->kind_prompt_tokens[k] += (double)gs.kind_prompt_tokens[k];
                r->kind_cached_tokens[k] += (double)gs.kind_cached_tokens[k];
            }
        }
        quantile_ms(m, 0.5, &rm->p50_lo_ms, &rm->p50_ms);
        quantile_ms(m, 0.95, &rm->p95_lo_ms, &rm->p95_ms);
        if (ne == 0)
            continue;
        rm->errors = calloc(ne, sizeof *rm->errors);
        if (!rm->errors)
            return NSED_ENOMEM;
        cJSON_ArrayForEach(e, errs) {
            if (!cJSON_IsNumber(e) || e->valuedouble == 0)
                continue;
            rm->errors[rm->nerrors].kind = e->string;
            rm->errors[rm->nerrors].n = e->valuedouble;
            rm->nerrors++;
        }
    }
    return 0;
}

/* ---- the efficiency-fatigue fit (runner_fit.h) ------------------------ */

/* A number of the canonical workflow's fatigue rule: dflt when absent
 * (a key left at its default is not written). */
static double fatigue_key(const cJSON *rule, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rule, key);

    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* The rule's settings from the manifest's canonical workflow. */
static void fit_settings(runner_report *r)
{
    const char *canon = json_str(r->manifest, "workflow_canonical", NULL);
    cJSON *wf = canon ? cJSON_Parse(canon) : NULL;
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(wf, "rounds");
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(rd, "stop");
    const cJSON *rule = cJSON_GetObjectItemCaseSensitive(stop,
                                                         "efficiency_fatigue");
    static const char *const open[] = {"p_g", "p_v", "lambda", "beta"};
    runner_report_fit *f = &r->fit;

    if (cJSON_IsObject(rule)) {
        f->explore = fatigue_key(rule, "explore", 0.15);
        f->min_r2 = fatigue_key(rule, "fit_min_r2", 0.8);
        f->min_questions = fatigue_key(rule, "fit_min_questions", 30);
        f->slice = f->explore > 0;
        for (size_t i = 0; i < 4; i++)
            f->needed =
                f->needed ||
                !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rule,
                                                                 open[i]));
    }
    cJSON_Delete(wf);
}

static void derive_fit(runner_report *r, const runner_round_counts *c)
{
    runner_report_fit *f = &r->fit;

    fit_settings(r);
    memcpy(f->sn, c->sn, sizeof f->sn);
    memcpy(f->sk, c->sk, sizeof f->sk);
    f->questions = c->squestions;
    f->have = runner_fit_slice(c, &f->fit) == 0;
    if (f->have)
        f->good = runner_fit_good(&f->fit, f->min_r2, f->min_questions, f->why,
                                  sizeof f->why);
    else
        snprintf(f->why, sizeof f->why,
                 "fewer than %d slice rounds with "
                 "judged winners",
                 RUNNER_FIT_MIN_POINTS);
}

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static void param_json(cJSON *o, const char *key, const runner_fit_param *p)
{
    cJSON *e = cJSON_AddObjectToObject(o, key), *ci;

    if (!e)
        return;
    cJSON_AddItemToObject(e, "est", num_or_null(p->est));
    cJSON_AddItemToObject(e, "se", num_or_null(p->se));
    if (isfinite(p->lo) && isfinite(p->hi) &&
        (ci = cJSON_AddArrayToObject(e, "ci95"))) {
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(p->lo));
        cJSON_AddItemToArray(ci, cJSON_CreateNumber(p->hi));
    } else {
        cJSON_AddNullToObject(e, "ci95");
    }
}

static void fit_json(const runner_report *r, cJSON *o)
{
    const runner_report_fit *f = &r->fit;
    cJSON *j, *a;

    if (!f->slice) {
        cJSON_AddNullToObject(o, "fatigue_fit");
        return;
    }
    if (!(j = cJSON_AddObjectToObject(o, "fatigue_fit")))
        return;
    cJSON_AddNumberToObject(j, "explore", f->explore);
    cJSON_AddNumberToObject(j, "min_r2", f->min_r2);
    cJSON_AddNumberToObject(j, "min_questions", f->min_questions);
    cJSON_AddBoolToObject(j, "needed", f->needed);
    cJSON_AddNumberToObject(j, "slice_questions", f->questions);
    a = cJSON_AddArrayToObject(j, "slice_rounds");
    for (int t = 0; a && t < RUNNER_MAX_ROUNDS; t++) {
        cJSON *e;

        if (f->sn[t] <= 0)
            continue;
        e = cJSON_CreateObject();
        cJSON_AddItemToArray(a, e);
        cJSON_AddNumberToObject(e, "round", t);
        cJSON_AddNumberToObject(e, "judged", f->sn[t]);
        cJSON_AddNumberToObject(e, "winner_correct", f->sk[t]);
    }
    cJSON_AddBoolToObject(j, "fitted", f->have);
    if (f->have) {
        cJSON_AddNumberToObject(j, "points", (double)f->fit.points);
        cJSON_AddNumberToObject(j, "judged", f->fit.judged);
        cJSON_AddItemToObject(j, "r2", num_or_null(f->fit.r2));
        param_json(j, "u0", &f->fit.u0);
        param_json(j, "k", &f->fit.k);
        param_json(j, "beta", &f->fit.beta);
        cJSON_AddItemToObject(j, "t_opt", num_or_null(f->fit.t_opt));
        cJSON_AddBoolToObject(j, "peak", isfinite(f->fit.t_opt));
    } else {
        static const char *const none[] = {"points", "judged", "r2",    "u0",
                                           "k",      "beta",   "t_opt", "peak"};

        for (size_t i = 0; i < sizeof none / sizeof none[0]; i++)
            cJSON_AddNullToObject(j, none[i]);
    }
    cJSON_AddBoolToObject(j, "used", f->needed && f->good);
    if (f->needed && !f->good)
        cJSON_AddStringToObject(j, "not_used", f->why);
    else
        cJSON_AddNullToObject(j, "not_used");
}

static void derive(report_read *rr)
{
    runner_report *r = rr->r;
    runner_report_broker *b = &r->broker;

    r->rounds_mean = mean_or((double)rr->rounds_sum, rr->stopped);
    memcpy(r->judged, rr->rounds.n, sizeof r->judged);
    memcpy(r->winner_correct, rr->rounds.k, sizeof r->winner_correct);
    derive_fit(r, &rr->rounds);
    b->expected_cost_usd_mean = mean_or(rr->expected_cost, b->with_expected);
    b->expected_value_mean = mean_or(rr->expected_value, b->with_expected);
    b->actual_cost_usd_mean = mean_or(rr->actual_cost, b->actual_n);
}

static int read_manifest(store *st, runner_report *r, nsed_err *err)
{
    char *text = NULL;
    int rc = store_manifest_json(st, &text, err);

    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    r->manifest = cJSON_Parse(text);
    free(text);
    if (!r->manifest)
        return nsed_error(err, NSED_ESTORE,
                          "%s: the run manifest is not valid JSON", r->store);
    r->bound = true;
    r->workflow_name = json_str(r->manifest, "workflow_name", NULL);
    r->workflow_hash = json_str(r->manifest, "workflow_hash", NULL);
    r->git_commit = json_str(r->manifest, "git_commit", NULL);
    r->created_at = json_str(r->manifest, "created_at", NULL);
    r->nsed_version = json_str(r->manifest, "nsed_version", NULL);
    r->seed = json_str(r->manifest, "seed", NULL);
    return 0;
}

static int space_fn(store_txn *txn, void *arg, nsed_err *err)
{
    runner_report_space *sp = arg;
    size_t pages = 0;
    int rc = 0;

    for (int db = 0; db < STORE_DB_COUNT && !rc; db++) {
        rc = store_db_stat(txn, (enum store_db)db, &sp->dbs[db]);
        sp->data_bytes += sp->dbs[db].bytes;
    }
    if (!rc)
        rc = store_env_stat(txn, &sp->page_size, &pages);
    if (rc)
        return nsed_error(err, rc, "cannot read the store's statistics");
    sp->used_bytes = pages * sp->page_size;
    return 0;
}

/* Whether a process writes the store now; a breaker record that still
 * says paused while none does is what a killed run left (it never wrote
 * the end): the last known state, as after a run that ended. */
static int read_writing(store *st, runner_report *r, nsed_err *err)
{
    int rc = store_writer_active(st, &r->writing, err);

    if (!rc)
        rc = questions_ingest_unfinished(st, &r->ingest_unfinished, err);
    for (size_t i = 0; !rc && i < r->npaused && !r->writing; i++)
        r->paused[i].run_ended = true;
    return rc;
}

int runner_report_build(store *st, runner_report **out, nsed_err *err)
{
    runner_report *r = calloc(1, sizeof *r);
    report_read rr = {.r = r, .err = err};
    int rc;

    rr.bias.out = r ? &r->bias : NULL;
    if (!r || !(r->store = strdup(store_dir(st))) ||
        !(r->telemetry = cJSON_CreateObject()) ||
        !(r->baselines = runner_baselines_new())) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    rc = read_manifest(st, r, err);
    if (!rc)
        rc = store_read(st, read_fn, &rr, err);
    if (!rc)
        rc = store_read(st, space_fn, &r->space, err);
    if (rc)
        goto out;
    rc = read_writing(st, r, err);
    if (rc)
        goto out;
    r->space.per_question = r->total
                                ? (double)r->space.data_bytes / (double)r->total
                                : 0;
    derive(&rr);
    runner_bias_finish(&rr.bias);
    rc = derive_models(r);
    if (rc)
        rc = nsed_error(err, rc, "out of memory");
out:
    runner_bias_release(&rr.bias);
    if (rc) {
        runner_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- the JSON form ------------------------------------------------------ */

static void tally_json(cJSON *o, const char *key,
                       const runner_report_tallies *t)
{
    cJSON *m = cJSON_AddObjectToObject(o, key);

    for (size_t i = 0; m && i < t->n; i++)
        cJSON_AddNumberToObject(m, t->items[i].name, (double)t->items[i].n);
}

static void broker_json(const runner_report_broker *b, cJSON *o)
{
    cJSON *j = cJSON_AddObjectToObject(o, "broker");

    if (!j)
        return;
    cJSON_AddNumberToObject(j, "decisions", (double)b->decisions);
    cJSON_AddNumberToObject(j, "unstaffed", (double)b->unstaffed);
    tally_json(j, "policies", &b->policies);
    tally_json(j, "chosen", &b->chosen);
    tally_json(j, "excluded", &b->excluded);
    if (b->with_expected) {
        cJSON_AddNumberToObject(j, "expected_cost_usd_mean",
                                b->expected_cost_usd_mean);
        cJSON_AddNumberToObject(j, "expected_value_mean",
                                b->expected_value_mean);
    } else {
        cJSON_AddNullToObject(j, "expected_cost_usd_mean");
        cJSON_AddNullToObject(j, "expected_value_mean");
    }
    if (b->actual_n)
        cJSON_AddNumberToObject(j, "actual_cost_usd_mean",
                                b->actual_cost_usd_mean);
    else
        cJSON_AddNullToObject(j, "actual_cost_usd_mean");
    cJSON_AddNumberToObject(j, "over_budget", (double)b->over_budget);
}

static void rounds_json(const runner_report *r, cJSON *o)
{
    cJSON *rounds = cJSON_AddArrayToObject(o, "rounds");

    for (int t = 0; rounds && t < RUNNER_MAX_ROUNDS; t++) {
        cJSON *e;

        if (r->judged[t] <= 0)
            continue;
        e = cJSON_CreateObject();
        cJSON_AddItemToArray(rounds, e);
        cJSON_AddNumberToObject(e, "round", t);
        cJSON_AddNumberToObject(e, "judged", r->judged[t]);
        cJSON_AddNumberToObject(e, "winner_correct", r->winner_correct[t]);
    }
    fit_json(r, o);
}

static void models_json(const runner_report *r, cJSON *o)
{
    cJSON *tele = cJSON_AddObjectToObject(o, "models");
    const cJSON *m;
    size_t i = 0;

    cJSON_ArrayForEach(m, r->telemetry) {
        cJSON *copy = cJSON_Duplicate(m, 1);

        if (!copy)
            break;
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "latency_hist");
        cJSON_AddNumberToObject(copy, "latency_p50_ms", r->models[i].p50_ms);
        cJSON_AddNumberToObject(copy, "latency_p95_ms", r->models[i].p95_ms);
        cJSON_AddNumberToObject(copy, "latency_p50_lo_ms",
                                r->models[i].p50_lo_ms);
        cJSON_AddNumberToObject(copy, "latency_p95_lo_ms",
                                r->models[i].p95_lo_ms);
        cJSON_AddItemToObject(tele, m->string, copy);
        i++;
    }
}

/* "prefix_cache": {"prompt_tokens", "cached_tokens", "share", "by_kind":
 * {kind: {"calls", "prompt_tokens", "cached_tokens", "share"}}}; share is
 * null without prompt tokens. */
static void prefix_json(const runner_report *r, cJSON *o)
{
    cJSON *pc = cJSON_AddObjectToObject(o, "prefix_cache");
    cJSON *by = pc ? cJSON_AddObjectToObject(pc, "by_kind") : NULL;
    double pt = 0, ct = 0;

    for (size_t k = 0; by && k < GATEWAY_CALL_KIND_COUNT; k++) {
        cJSON *e;

        pt += r->kind_prompt_tokens[k];
        ct += r->kind_cached_tokens[k];
        if (r->kind_calls[k] <= 0)
            continue;
        e = cJSON_AddObjectToObject(
            by, gateway_call_kind_name((enum gateway_call_kind)k));
        cJSON_AddNumberToObject(e, "calls", r->kind_calls[k]);
        cJSON_AddNumberToObject(e, "prompt_tokens", r->kind_prompt_tokens[k]);
        cJSON_AddNumberToObject(e, "cached_tokens", r->kind_cached_tokens[k]);
        cJSON_AddItemToObject(e, "share",
                              num_or_null(r->kind_prompt_tokens[k] > 0
                                              ? r->kind_cached_tokens[k] /
                                                    r->kind_prompt_tokens[k]
                                              : NAN));
    }
    if (!pc)
        return;
    cJSON_AddNumberToObject(pc, "prompt_tokens", pt);
    cJSON_AddNumberToObject(pc, "cached_tokens", ct);
    cJSON_AddItemToObject(pc, "share", num_or_null(pt > 0 ? ct / pt : NAN));
}

static size_t tally_sum(const runner_report_tallies *t)
{
    size_t n = 0;

    for (size_t i = 0; i < t->n; i++)
        n += t->items[i].n;
    return n;
}

static void deliberation_json(const runner_report *r, cJSON *o)
{
    cJSON *d = cJSON_AddObjectToObject(o, "deliberation"), *models;

    if (!d)
        return;
    cJSON_AddNumberToObject(d, "rounds", (double)r->rounds);
    cJSON_AddNumberToObject(d, "winnerless_rounds", (double)r->winnerless);
    cJSON_AddNumberToObject(d, "proposals", (double)tally_sum(&r->proposals));
    cJSON_AddNumberToObject(d, "no_answer", (double)tally_sum(&r->no_answer));
    cJSON_AddNumberToObject(d, "evaluations",
                            (double)tally_sum(&r->evaluations));
    cJSON_AddNumberToObject(d, "abstained", (double)tally_sum(&r->abstained));
    cJSON_AddNumberToObject(d, "truncated", (double)tally_sum(&r->truncated));
    models = cJSON_AddObjectToObject(d, "models");
    for (size_t i = 0; models && i < r->proposals.n; i++) {
        cJSON *m = cJSON_AddObjectToObject(models, r->proposals.items[i].name);

        cJSON_AddNumberToObject(m, "proposals",
                                (double)r->proposals.items[i].n);
        cJSON_AddNumberToObject(m, "no_answer",
                                (double)r->no_answer.items[i].n);
        cJSON_AddNumberToObject(m, "evaluations",
                                (double)r->evaluations.items[i].n);
        cJSON_AddNumberToObject(m, "abstained",
                                (double)r->abstained.items[i].n);
        cJSON_AddNumberToObject(m, "truncated",
                                (double)r->truncated.items[i].n);
    }
}

/* accuracy.self_consistency (only when some result has the baseline; an
 * allocation that fails leaves a member out, as in runner_report_json). */
static void selfcons_json(const runner_report_selfcons *sc, cJSON *acc)
{
    cJSON *o, *m;

    if (!sc->results || !(o = cJSON_AddObjectToObject(acc, "self_consistency")))
        return;
    cJSON_AddNumberToObject(o, "results", (double)sc->results);
    cJSON_AddNumberToObject(o, "incomplete", (double)sc->incomplete);
    cJSON_AddNumberToObject(o, "judged", (double)sc->judged);
    cJSON_AddNumberToObject(o, "correct", (double)sc->correct);
    cJSON_AddNumberToObject(o, "ties", (double)sc->ties);
    cJSON_AddNumberToObject(o, "samples", (double)sc->samples);
    cJSON_AddNumberToObject(o, "failed_samples", (double)sc->failed);
    cJSON_AddNumberToObject(o, "cost_usd", sc->cost_usd);
    m = cJSON_AddObjectToObject(o, "models");
    for (size_t i = 0; m && i < sc->models.n; i++)
        cJSON_AddNumberToObject(m, sc->models.items[i].name,
                                (double)sc->models.items[i].n);
}

/* "store_bytes": what the store takes, in bytes, and per database. */
static void space_json(const runner_report_space *sp, cJSON *o)
{
    cJSON *so = cJSON_AddObjectToObject(o, "store_bytes"), *dbs;

    cJSON_AddNumberToObject(so, "data", (double)sp->data_bytes);
    cJSON_AddNumberToObject(so, "used", (double)sp->used_bytes);
    cJSON_AddNumberToObject(so, "page_size", (double)sp->page_size);
    cJSON_AddNumberToObject(so, "per_question", sp->per_question);
    dbs = cJSON_AddObjectToObject(so, "databases");
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        cJSON *d = cJSON_AddObjectToObject(dbs,
                                           store_db_name((enum store_db)db));

        cJSON_AddNumberToObject(d, "entries", (double)sp->dbs[db].entries);
        cJSON_AddNumberToObject(d, "pages", (double)sp->dbs[db].pages);
        cJSON_AddNumberToObject(d, "bytes", (double)sp->dbs[db].bytes);
    }
}

int runner_report_json(const runner_report *r, char **out)
{
    cJSON *o = cJSON_CreateObject(), *q, *acc, *models, *stops, *reasons;

    if (!o)
        return NSED_ENOMEM;
    cJSON_AddStringToObject(o, "store", r->store);
    cJSON_AddBoolToObject(o, "writing", r->writing);
    cJSON_AddBoolToObject(o, "ingest_unfinished", r->ingest_unfinished);
    q = cJSON_AddObjectToObject(o, "questions");
    cJSON_AddNumberToObject(q, "total", (double)r->total);
    cJSON_AddNumberToObject(q, "done", (double)r->done);
    cJSON_AddNumberToObject(q, "degraded", (double)r->degraded);
    cJSON_AddNumberToObject(q, "incomplete", (double)r->incomplete);
    cJSON_AddNumberToObject(q, "failed", (double)r->failed);
    cJSON_AddNumberToObject(q, "in_progress", (double)r->in_progress);
    cJSON_AddNumberToObject(q, "not_started", (double)r->not_started);
    reasons = cJSON_AddObjectToObject(o, "reasons");
    tally_json(reasons, "incomplete", &r->incomplete_why);
    tally_json(reasons, "failed", &r->failed_why);
    deliberation_json(r, o);
    cJSON_AddNumberToObject(o, "rounds_mean", r->rounds_mean);
    stops = cJSON_AddObjectToObject(o, "stop_reasons");
    for (size_t i = 0; i < r->stops.n; i++)
        cJSON_AddNumberToObject(stops, r->stops.items[i].name,
                                (double)r->stops.items[i].n);
    acc = cJSON_AddObjectToObject(o, "accuracy");
    cJSON_AddNumberToObject(acc, "with_reference", (double)r->with_ref);
    cJSON_AddNumberToObject(acc, "nsed_correct", (double)r->correct);
    cJSON_AddNumberToObject(acc, "majority_correct",
                            (double)r->majority_correct);
    models = cJSON_AddObjectToObject(acc, "round0_by_model");
    for (size_t i = 0; i < r->round0.n; i++) {
        cJSON *mm = cJSON_AddObjectToObject(models, r->round0.items[i].name);

        cJSON_AddNumberToObject(mm, "answers", (double)r->round0.items[i].n);
        cJSON_AddNumberToObject(mm, "correct",
                                (double)r->round0.items[i].correct);
    }
    selfcons_json(&r->sc, acc);
    cJSON_AddNumberToObject(o, "tokens", r->tokens);
    cJSON_AddNumberToObject(o, "cost_usd", r->cost_usd);
    rounds_json(r, o);
    models_json(r, o);
    prefix_json(r, o);
    broker_json(&r->broker, o);
    {
        cJSON *pa = cJSON_AddArrayToObject(o, "paused");

        for (size_t i = 0; pa && i < r->npaused; i++) {
            cJSON *e = cJSON_CreateObject();

            if (!e)
                break;
            cJSON_AddStringToObject(e, "model", r->paused[i].id);
            cJSON_AddStringToObject(e, "since", r->paused[i].since);
            cJSON_AddBoolToObject(e, "run_ended", r->paused[i].run_ended);
            cJSON_AddItemToArray(pa, e);
        }
    }
    if (runner_baselines_json(r->baselines, o)) {
        cJSON_Delete(o);
        return NSED_ENOMEM;
    }
    if (r->manifest) {
        cJSON *man = cJSON_Duplicate(r->manifest, 1);

        cJSON_DeleteItemFromObjectCaseSensitive(man, "workflow_canonical");
        cJSON_AddItemToObject(o, "manifest", man);
    } else {
        cJSON_AddNullToObject(o, "manifest");
    }
    runner_bias_json(&r->bias, o);
    space_json(&r->space, o);
    *out = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return *out ? 0 : NSED_ENOMEM;
}

void runner_report_free(runner_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nmodels; i++)
        free(r->models[i].errors);
    free(r->models);
    for (size_t i = 0; i < r->npaused; i++)
        free(r->paused[i].id);
    free(r->paused);
    tally_release(&r->stops);
    tally_release(&r->incomplete_why);
    tally_release(&r->failed_why);
    tally_release(&r->proposals);
    tally_release(&r->no_answer);
    tally_release(&r->evaluations);
    tally_release(&r->abstained);
    tally_release(&r->truncated);
    tally_release(&r->round0);
    tally_release(&r->sc.models);
    tally_release(&r->broker.policies);
    tally_release(&r->broker.chosen);
    tally_release(&r->broker.excluded);
    runner_baselines_free(r->baselines);
    cJSON_Delete(r->manifest);
    cJSON_Delete(r->telemetry);
    free(r->store);
    free(r);
}
