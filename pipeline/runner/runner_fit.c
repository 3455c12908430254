/* runner_fit.c -- per-round accuracy telemetry and the fit of the
 * efficiency-fatigue model to it.
 *
 * The STORE_TELEMETRY record of store_keys_rounds() ("rounds") holds, per
 * round index r, how many decided rounds r had a winner whose extracted
 * answer could be judged against a reference (n) and how many of those
 * winners were right (k). From them
 * the runner fits the model of converge.h,
 *
 *     U(t) = 1 - (1 - p_g) exp(-k t) - beta t^2,    k = lambda (p_v - p_g)
 *
 * in the frame of converge.h: t counts the revision rounds after round 0,
 * p_g and p_v are the team's measured generation and verification
 * accuracies (telemetry.h), and k and beta are fitted by weighted least
 * squares (weights n_t) to the winners' accuracy of rounds t >= 1, on a
 * grid fine enough for a stopping rule. Later rounds are reached only by questions that did not
 * stop, which are harder than average, so the fit leans pessimistic: it
 * is a stopping heuristic, not an accuracy estimate.
 */
#include "pipeline/runner/runner_int.h"
#include "pipeline/broker/telemetry.h"
#include "store/store_keys.h"
#include "stages/answer.h"
#include "stages/converge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIT_BETA_MAX 0.5
#define FIT_BETA_STEPS 1000

void runner_rounds_observe(const workflow *wf, const state *st,
                           const state_round *r, runner_round_counts *c)
{
    const char *ans;

    if (r->index < 0 || r->index >= RUNNER_MAX_ROUNDS || !st->reference ||
        !r->aggregated || r->agg.winner < 0 ||
        (size_t)r->agg.winner >= r->ncand)
        return;
    ans = r->proposals[r->cands[r->agg.winner].seat].answer;
    if (!ans)
        return;
    c->n[r->index] += 1;
    c->k[r->index] += answer_matches(&wf->answer, ans, st->reference);
}

/* NSED_ESTORE when the record is not the object runner_rounds_commit
 * writes: a damaged record must not read as "no rounds yet" and then be
 * overwritten. */
static int parse_counts(const void *val, size_t vlen, runner_round_counts *c)
{
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "k");

    if (!cJSON_IsObject(j) || !cJSON_IsArray(n) || !cJSON_IsArray(k)) {
        cJSON_Delete(j);
        return NSED_ESTORE;
    }
    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++) {
        const cJSON *ni = cJSON_GetArrayItem(n, i), *ki = cJSON_GetArrayItem(k, i);

        c->n[i] = cJSON_IsNumber(ni) ? ni->valuedouble : 0;
        c->k[i] = cJSON_IsNumber(ki) ? ki->valuedouble : 0;
    }
    cJSON_Delete(j);
    return 0;
}

int runner_rounds_read(store_txn *txn, runner_round_counts *c)
{
    const void *val;
    size_t vlen;
    store_key key;
    int rc;

    store_keys_rounds(&key);
    rc = store_get(txn, STORE_TELEMETRY, key.bytes, key.len, &val, &vlen);

    memset(c, 0, sizeof *c);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    return parse_counts(val, vlen, c);
}

int runner_rounds_commit(store_txn *txn, const runner_round_counts *delta)
{
    runner_round_counts c;
    store_key key;
    cJSON *o, *n, *k;
    char *text;
    int last = -1, rc;

    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++)
        if (delta->n[i] > 0)
            last = i;
    if (last < 0)
        return 0;
    rc = runner_rounds_read(txn, &c);
    if (rc)
        return rc;
    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++) {
        c.n[i] += delta->n[i];
        c.k[i] += delta->k[i];
        if (c.n[i] > 0 && i > last)
            last = i;
    }
    o = cJSON_CreateObject();
    n = o ? cJSON_AddArrayToObject(o, "n") : NULL;
    k = o ? cJSON_AddArrayToObject(o, "k") : NULL;
    for (int i = 0; n && k && i <= last; i++) {
        cJSON_AddItemToArray(n, cJSON_CreateNumber(c.n[i]));
        cJSON_AddItemToArray(k, cJSON_CreateNumber(c.k[i]));
    }
    text = n && k ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return NSED_ENOMEM;
    store_keys_rounds(&key);
    rc = store_put(txn, STORE_TELEMETRY, key.bytes, key.len, text,
                   strlen(text));
    free(text);
    return rc;
}

void runner_rounds_add(runner_round_counts *t, const runner_round_counts *d)
{
    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++) {
        t->n[i] += d->n[i];
        t->k[i] += d->k[i];
    }
}

/* Weighted squared error of the model against the measured rounds. */
static double sse(const runner_round_counts *c, int last, double p_g,
                  double k, double beta)
{
    double e = 0;

    for (int t = 1; t <= last; t++) {
        double u, acc, d;

        if (c->n[t] <= 0)
            continue;
        acc = c->k[t] / c->n[t];
        u = 1 - (1 - p_g) * exp(-k * (double)t) - beta * (double)t * t;
        d = u - acc;
        e += c->n[t] * d * d;
    }
    return e;
}

int runner_fit_fatigue(const runner_round_counts *c, double p_g, double p_v,
                       runner_fit *out)
{
    int last = 0, rounds = 0;
    double best = INFINITY;

    memset(out, 0, sizeof *out);
    if (!(p_g >= 0 && p_g < 1) || !(p_v >= 0 && p_v <= 1))
        return NSED_ENOTFOUND;
    for (int t = 1; t < RUNNER_MAX_ROUNDS; t++) {
        if (c->n[t] >= RUNNER_FIT_MIN_N) {
            rounds++;
            last = t;
        }
    }
    if (rounds < 2)
        return NSED_ENOTFOUND;
    out->p_g = p_g;
    out->p_v = p_v;
    /* k on a log grid 0.01..10, beta on a linear grid 0..0.5 */
    for (int i = 0; i <= 300; i++) {
        double k = 0.01 * pow(1000.0, (double)i / 300.0);

        for (int j = 0; j <= FIT_BETA_STEPS; j++) {
            double beta = FIT_BETA_MAX * (double)j / FIT_BETA_STEPS;
            double e = sse(c, last, out->p_g, k, beta);

            if (e < best) {
                best = e;
                out->k = k;
                out->beta = beta;
            }
        }
    }
    /* beta must stay positive for the closed form; 0 means "no fatigue
     * seen", which the smallest grid step stands for. */
    if (out->beta <= 0)
        out->beta = FIT_BETA_MAX / FIT_BETA_STEPS / 2.0;
    out->lambda = p_v > out->p_g ? out->k / (p_v - out->p_g) : -1;
    out->t_opt = out->lambda > 0 ? converge_t_opt(out->p_g, p_v, out->lambda,
                                                  out->beta)
                                 : 0;
    for (int t = 1; t <= last; t++)
        out->questions += c->n[t];
    return 0;
}

/* ---- the per-question context -------------------------------------------- */

static bool fatigue_needs_fit(const workflow *wf)
{
    const workflow_rounds *r = &wf->rounds;

    return r->fatigue && (r->fatigue_p_g < 0 || r->fatigue_p_v < 0 ||
                          r->fatigue_lambda < 0 || r->fatigue_beta < 0);
}

bool runner_qctx_wanted(const workflow *wf)
{
    return wf->scoring.reliability_weighting || fatigue_needs_fit(wf);
}

int runner_qctx_new(const workflow *wf, const struct telemetry *t,
                    const runner_round_counts *rounds, const state *st,
                    runner_qctx *q, char **json)
{
    cJSON *o = cJSON_CreateObject(), *a, *f;
    double pg = 0, pv = 0;
    runner_fit fit;

    memset(q, 0, sizeof *q);
    *json = NULL;
    if (!o)
        goto nomem;
    if (wf->scoring.reliability_weighting) {
        if (!(q->reliability = calloc(wf->nmodels, sizeof *q->reliability)) ||
            !(a = cJSON_AddArrayToObject(o, "reliability")))
            goto nomem;
        for (size_t m = 0; m < wf->nmodels; m++) {
            telemetry_estimate e;

            telemetry_estimate_for(t, wf, m, (int)st->nseats, &e);
            q->reliability[m] = 2.0 * e.p_v - 1.0;
            if (!(q->reliability[m] > 0)) /* also NaN */
                q->reliability[m] = 0;
            if (q->reliability[m] > 1)
                q->reliability[m] = 1;
            cJSON_AddItemToArray(a, cJSON_CreateNumber(q->reliability[m]));
        }
    }
    q->fit_p_g = q->fit_p_v = q->fit_lambda = q->fit_beta = -1;
    if (fatigue_needs_fit(wf)) {
        for (size_t i = 0; i < st->nseats; i++) {
            telemetry_estimate e;

            telemetry_estimate_for(t, wf, st->seats[i].model,
                                   (int)st->nseats, &e);
            pg += e.p_g / (double)st->nseats;
            pv += e.p_v / (double)st->nseats;
        }
        if (runner_fit_fatigue(rounds, pg, pv, &fit) == 0) {
            q->fit_p_g = fit.p_g;
            q->fit_p_v = fit.p_v;
            q->fit_lambda = fit.lambda;
            q->fit_beta = fit.beta;
        }
        if (!(f = cJSON_AddObjectToObject(o, "fit")))
            goto nomem;
        cJSON_AddNumberToObject(f, "p_g", q->fit_p_g);
        cJSON_AddNumberToObject(f, "p_v", q->fit_p_v);
        cJSON_AddNumberToObject(f, "lambda", q->fit_lambda);
        cJSON_AddNumberToObject(f, "beta", q->fit_beta);
    }
    if (!(*json = cJSON_PrintUnformatted(o)))
        goto nomem;
    cJSON_Delete(o);
    return 0;
nomem:
    cJSON_Delete(o);
    runner_qctx_release(q);
    return NSED_ENOMEM;
}

static int num_field(const cJSON *o, const char *k, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    if (!cJSON_IsNumber(v))
        return -1;
    *out = v->valuedouble;
    return 0;
}

int runner_qctx_parse(const workflow *wf, const char *json, size_t len,
                      runner_qctx *q, nsed_err *err)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "reliability");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "fit"), *v;
    size_t i = 0;
    int rc = 0;

    memset(q, 0, sizeof *q);
    q->fit_p_g = q->fit_p_v = q->fit_lambda = q->fit_beta = -1;
    if (!o) {
        rc = nsed_error(err, NSED_ESTORE, "a stored question context is "
                        "not JSON");
        goto out;
    }
    if (a) {
        if (!cJSON_IsArray(a) ||
            (size_t)cJSON_GetArraySize(a) != wf->nmodels) {
            rc = nsed_error(err, NSED_ESTORE,
                            "stored reliability weights do not match the "
                            "workflow's %zu models", wf->nmodels);
            goto out;
        }
        if (!(q->reliability = calloc(wf->nmodels, sizeof *q->reliability))) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        cJSON_ArrayForEach(v, a) {
            if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0)) {
                rc = nsed_error(err, NSED_ESTORE,
                                "stored reliability weight %zu is not a "
                                "non-negative number", i);
                goto out;
            }
            q->reliability[i++] = v->valuedouble;
        }
    }
    if (f && (num_field(f, "p_g", &q->fit_p_g) ||
              num_field(f, "p_v", &q->fit_p_v) ||
              num_field(f, "lambda", &q->fit_lambda) ||
              num_field(f, "beta", &q->fit_beta)))
        rc = nsed_error(err, NSED_ESTORE,
                        "a stored efficiency-fatigue fit lacks a number");
out:
    if (rc)
        runner_qctx_release(q);
    cJSON_Delete(o);
    return rc;
}

void runner_qctx_apply(const runner_qctx *q, size_t nmodels, stage_ctx *ctx)
{
    if (q->reliability) {
        ctx->reliability = q->reliability;
        ctx->nreliability = nmodels;
    }
    ctx->fit_p_g = q->fit_p_g;
    ctx->fit_p_v = q->fit_p_v;
    ctx->fit_lambda = q->fit_lambda;
    ctx->fit_beta = q->fit_beta;
}

void runner_qctx_release(runner_qctx *q)
{
    free(q->reliability);
    q->reliability = NULL;
}
