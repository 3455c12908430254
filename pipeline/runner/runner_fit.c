/* runner_fit.c -- per-round accuracy telemetry and the fit of the
 * efficiency-fatigue curve to the exploration slice (runner_fit.h).
 *
 * The STORE_TELEMETRY record of store_keys_rounds() ("rounds") is
 *   {"n":[...], "k":[...]                 per round index r: decided rounds
 *                                         r whose winner could be judged
 *                                         against a reference, and of
 *                                         those right (every question)
 *    "slice_n":[...], "slice_k":[...],    the same for the questions of
 *    "slice_questions": q}                the exploration slice alone, and
 *                                         the slice questions finished
 * (the slice members are left out while no slice question was seen, so a
 * run without one writes the record an older nsed wrote, and a record of
 * an older nsed reads with the slice empty). Only the slice is fitted:
 * its questions run every round, so round t's accuracy is that of the
 * same questions at every t, where the rounds reached by the questions
 * that did not stop early are the harder ones.
 */
#include "pipeline/runner/runner_int.h"
#include "pipeline/broker/telemetry.h"
#include "store/store_keys.h"
#include "stages/answer.h"
#include "stages/converge.h"

#include <gsl/gsl_blas.h>
#include <gsl/gsl_cdf.h>
#include <gsl/gsl_errno.h>
#include <gsl/gsl_matrix.h>
#include <gsl/gsl_multifit_nlinear.h>
#include <gsl/gsl_vector.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void runner_rounds_observe(const workflow *wf, const state *st,
                           const state_round *r, runner_round_counts *c)
{
    const char *ans;
    int right;

    if (r->index < 0 || r->index >= RUNNER_MAX_ROUNDS || !st->reference ||
        !r->aggregated || r->agg.winner < 0 ||
        (size_t)r->agg.winner >= r->ncand)
        return;
    ans = r->proposals[r->cands[r->agg.winner].seat].answer;
    if (!ans)
        return;
    right = answer_matches(&wf->answer, ans, st->reference);
    c->n[r->index] += 1;
    c->k[r->index] += right;
    if (converge_explores(st, wf)) {
        c->sn[r->index] += 1;
        c->sk[r->index] += right;
    }
}

void runner_rounds_finished(const workflow *wf, const state *st,
                            runner_round_counts *c)
{
    if (st->status != STATE_STATUS_FAILED && converge_explores(st, wf))
        c->squestions += 1;
}

/* Array member name of o into a[] (absent: zeros); -1 when it is there
 * but not an array. */
static int read_array(const cJSON *o, const char *name, double *a)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    memset(a, 0, RUNNER_MAX_ROUNDS * sizeof *a);
    if (!v)
        return 0;
    if (!cJSON_IsArray(v))
        return -1;
    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);

        a[i] = cJSON_IsNumber(e) ? e->valuedouble : 0;
    }
    return 0;
}

/* NSED_ESTORE when the record is not the object runner_rounds_commit
 * writes: a damaged record must not read as "no rounds yet" and then be
 * overwritten. */
static int parse_counts(const void *val, size_t vlen, runner_round_counts *c)
{
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "k");
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(j, "slice_questions");
    int rc = 0;

    if (!cJSON_IsObject(j) || !cJSON_IsArray(n) || !cJSON_IsArray(k) ||
        read_array(j, "n", c->n) || read_array(j, "k", c->k) ||
        read_array(j, "slice_n", c->sn) || read_array(j, "slice_k", c->sk) ||
        (q && !cJSON_IsNumber(q)))
        rc = NSED_ESTORE;
    else
        c->squestions = q ? q->valuedouble : 0;
    cJSON_Delete(j);
    return rc;
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

/* Add a[0..last] to o as member name. */
static bool add_array(cJSON *o, const char *name, const double *a, int last)
{
    cJSON *v = cJSON_AddArrayToObject(o, name);

    for (int i = 0; v && i <= last; i++)
        cJSON_AddItemToArray(v, cJSON_CreateNumber(a[i]));
    return v != NULL;
}

int runner_rounds_commit(store_txn *txn, const runner_round_counts *delta)
{
    runner_round_counts c;
    store_key key;
    cJSON *o;
    char *text = NULL;
    int last = -1, slast = -1, rc;
    bool ok;

    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++)
        if (delta->n[i] > 0 || delta->sn[i] > 0)
            last = i;
    if (last < 0 && delta->squestions <= 0)
        return 0;
    rc = runner_rounds_read(txn, &c);
    if (rc)
        return rc;
    runner_rounds_add(&c, delta);
    for (int i = 0; i < RUNNER_MAX_ROUNDS; i++) {
        if (c.n[i] > 0 && i > last)
            last = i;
        if (c.sn[i] > 0)
            slast = i;
    }
    o = cJSON_CreateObject();
    ok = o && add_array(o, "n", c.n, last) && add_array(o, "k", c.k, last);
    if (ok && (slast >= 0 || c.squestions > 0))
        ok = add_array(o, "slice_n", c.sn, slast) &&
             add_array(o, "slice_k", c.sk, slast) &&
             cJSON_AddNumberToObject(o, "slice_questions", c.squestions);
    text = ok ? cJSON_PrintUnformatted(o) : NULL;
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
        t->sn[i] += d->sn[i];
        t->sk[i] += d->sk[i];
    }
    t->squestions += d->squestions;
}

/* ---- the fit ------------------------------------------------------------ */

typedef struct fit_data {
    const double *t, *y; /* round, accuracy */
    size_t m;
} fit_data;

static double curve(const gsl_vector *x, double t)
{
    double u0 = gsl_vector_get(x, 0), k = gsl_vector_get(x, 1),
           b = gsl_vector_get(x, 2);

    return 1.0 - (1.0 - u0) * exp(-k * t) - b * t * t;
}

static int fit_f(const gsl_vector *x, void *data, gsl_vector *f)
{
    const fit_data *d = data;

    for (size_t i = 0; i < d->m; i++)
        gsl_vector_set(f, i, curve(x, d->t[i]) - d->y[i]);
    return GSL_SUCCESS;
}

static int fit_df(const gsl_vector *x, void *data, gsl_matrix *J)
{
    const fit_data *d = data;
    double u0 = gsl_vector_get(x, 0), k = gsl_vector_get(x, 1);

    for (size_t i = 0; i < d->m; i++) {
        double t = d->t[i], e = exp(-k * t);

        gsl_matrix_set(J, i, 0, e);
        gsl_matrix_set(J, i, 1, (1.0 - u0) * t * e);
        gsl_matrix_set(J, i, 2, -t * t);
    }
    return GSL_SUCCESS;
}

/* One solve from x0; the weighted cost in *chi2 and the unscaled
 * covariance (J'WJ)^-1 in cov. -1 when it did not reach finite values. */
static int solve(gsl_multifit_nlinear_workspace *w,
                 gsl_multifit_nlinear_fdf *fdf, gsl_vector *wts,
                 const double x0[3], gsl_vector *x, gsl_matrix *cov,
                 double *chi2)
{
    double init[3] = {x0[0], x0[1], x0[2]};
    gsl_vector_view xv = gsl_vector_view_array(init, 3);
    gsl_vector *f;
    int info, st;

    st = gsl_multifit_nlinear_winit(&xv.vector, wts, fdf, w);
    if (st == GSL_SUCCESS)
        st = gsl_multifit_nlinear_driver(500, 1e-12, 1e-12, 0.0, NULL, NULL,
                                         &info, w);
    /* no progress or the iteration budget still leaves a usable point */
    if (st != GSL_SUCCESS && st != GSL_ENOPROG && st != GSL_EMAXITER)
        return -1;
    gsl_vector_memcpy(x, gsl_multifit_nlinear_position(w));
    f = gsl_multifit_nlinear_residual(w);
    gsl_blas_ddot(f, f, chi2);
    for (size_t i = 0; i < 3; i++)
        if (!isfinite(gsl_vector_get(x, i)))
            return -1;
    if (!isfinite(*chi2))
        return -1;
    if (gsl_multifit_nlinear_covar(gsl_multifit_nlinear_jac(w), 0.0, cov) !=
        GSL_SUCCESS)
        gsl_matrix_set_all(cov, NAN);
    return 0;
}

static void set_param(runner_fit_param *p, double est, double var, double q)
{
    p->est = est;
    p->se = var >= 0 && isfinite(var) ? sqrt(var) : NAN;
    p->lo = isfinite(q) ? est - q * p->se : NAN;
    p->hi = isfinite(q) ? est + q * p->se : NAN;
}

int runner_fit_curve(const double *n, const double *k, size_t len,
                     runner_fit *out)
{
    /* starts: k spans slow to fast learning; beta starts at no fatigue */
    static const double k0[] = {0.05, 0.3, 1.0, 3.0};
    double t[RUNNER_MAX_ROUNDS], y[RUNNER_MAX_ROUNDS], wv[RUNNER_MAX_ROUNDS];
    double best = INFINITY, chi2, ybar = 0, sw = 0, sst = 0, ssr = 0, q;
    fit_data d = {.t = t, .y = y};
    gsl_multifit_nlinear_fdf fdf = {0};
    gsl_multifit_nlinear_parameters par =
        gsl_multifit_nlinear_default_parameters();
    gsl_multifit_nlinear_workspace *w = NULL;
    gsl_vector *x = NULL, *bx = NULL;
    gsl_matrix *cov = NULL, *bcov = NULL;
    gsl_vector_view wts;
    gsl_error_handler_t *old;
    size_t m = 0;
    int rc = NSED_ENOTFOUND;

    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < len && m < RUNNER_MAX_ROUNDS; i++) {
        if (!(n[i] > 0))
            continue;
        t[m] = (double)i;
        y[m] = k[i] / n[i];
        wv[m] = n[i];
        m++;
    }
    if (m < RUNNER_FIT_MIN_POINTS)
        return NSED_ENOTFOUND;
    d.m = m;
    fdf.f = fit_f;
    fdf.df = fit_df;
    fdf.n = m;
    fdf.p = 3;
    fdf.params = &d;
    wts = gsl_vector_view_array(wv, m);
    /* GSL's default handler aborts the process; the fit's failures are
     * results here. The handler is GSL's own global: put back what was
     * there. */
    old = gsl_set_error_handler_off();
    w = gsl_multifit_nlinear_alloc(gsl_multifit_nlinear_trust, &par, m, 3);
    x = gsl_vector_alloc(3);
    bx = gsl_vector_alloc(3);
    cov = gsl_matrix_alloc(3, 3);
    bcov = gsl_matrix_alloc(3, 3);
    if (!w || !x || !bx || !cov || !bcov) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t s = 0; s < sizeof k0 / sizeof k0[0]; s++) {
        double x0[3] = {y[0], k0[s], 0.0};

        if (solve(w, &fdf, &wts.vector, x0, x, cov, &chi2) || !(chi2 < best))
            continue;
        best = chi2;
        gsl_vector_memcpy(bx, x);
        gsl_matrix_memcpy(bcov, cov);
        rc = 0;
    }
    if (rc)
        goto out;
    for (size_t i = 0; i < m; i++) {
        sw += wv[i];
        ybar += wv[i] * y[i];
    }
    ybar /= sw;
    for (size_t i = 0; i < m; i++) {
        double r = y[i] - curve(bx, t[i]);

        ssr += wv[i] * r * r;
        sst += wv[i] * (y[i] - ybar) * (y[i] - ybar);
    }
    out->r2 = sst > 0 ? 1.0 - ssr / sst : ssr > 0 ? 0 : 1;
    out->points = m;
    out->judged = sw;
    /* the weights are counts, not inverse variances: scale the covariance
     * by the residual variance */
    q = m > 3 ? gsl_cdf_tdist_Pinv(0.975, (double)(m - 3)) : NAN;
    chi2 = m > 3 ? best / (double)(m - 3) : NAN;
    set_param(&out->u0, gsl_vector_get(bx, 0),
              gsl_matrix_get(bcov, 0, 0) * chi2, q);
    set_param(&out->k, gsl_vector_get(bx, 1), gsl_matrix_get(bcov, 1, 1) * chi2,
              q);
    set_param(&out->beta, gsl_vector_get(bx, 2),
              gsl_matrix_get(bcov, 2, 2) * chi2, q);
    out->t_opt = converge_t_opt_k(out->u0.est, out->k.est, out->beta.est);
out:
    gsl_multifit_nlinear_free(w);
    gsl_vector_free(x);
    gsl_vector_free(bx);
    gsl_matrix_free(cov);
    gsl_matrix_free(bcov);
    gsl_set_error_handler(old);
    return rc;
}

bool runner_fit_good(const runner_fit *f, double min_r2, double min_questions,
                     char *why, size_t whylen)
{
    if (whylen)
        why[0] = '\0';
    if (!(f->r2 >= min_r2)) {
        snprintf(why, whylen, "R^2 %.2f < %.2g", f->r2, min_r2);
        return false;
    }
    if (!(f->questions >= min_questions)) {
        snprintf(why, whylen, "%.0f slice questions < %.0f", f->questions,
                 min_questions);
        return false;
    }
    return true;
}

int runner_fit_slice(const runner_round_counts *c, runner_fit *out)
{
    int rc = runner_fit_curve(c->sn, c->sk, RUNNER_MAX_ROUNDS, out);

    out->questions = c->squestions;
    return rc;
}

int runner_fitted_update(runner_fitted *f, const runner_round_counts *c)
{
    int rc;

    if (f->tried && c->squestions < f->at + RUNNER_FIT_EVERY)
        return 0;
    f->tried = true;
    f->at = c->squestions;
    f->refits++;
    rc = runner_fit_slice(c, &f->fit);
    f->have = rc == 0;
    return rc == NSED_ENOTFOUND ? 0 : rc;
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
                    const runner_fitted *fitted, const state *st,
                    runner_qctx *q, char **json)
{
    cJSON *o = cJSON_CreateObject(), *a, *f;
    double pv = 0;

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
    q->fit_p_g = q->fit_p_v = q->fit_lambda = q->fit_beta = q->fit_k = -1;
    q->fit = STAGE_FIT_PRIOR;
    if (fatigue_needs_fit(wf)) {
        const runner_fit *fit = &fitted->fit;

        /* p_v, measured on the team, matters only when the workflow fixes
         * lambda (k = lambda (p_v - p_g)) */
        for (size_t i = 0; i < st->nseats; i++) {
            telemetry_estimate e;

            telemetry_estimate_for(t, wf, st->seats[i].model, (int)st->nseats,
                                   &e);
            pv += e.p_v / (double)st->nseats;
        }
        q->fit = STAGE_FIT_POOR;
        if (fitted->have &&
            runner_fit_good(fit, wf->rounds.fatigue_min_r2,
                            wf->rounds.fatigue_min_questions, NULL, 0)) {
            q->fit = STAGE_FIT_GOOD;
            q->fit_p_g = fit->u0.est;
            q->fit_p_v = pv;
            q->fit_k = fit->k.est;
            q->fit_beta = fit->beta.est;
            q->fit_lambda = pv > fit->u0.est ? fit->k.est / (pv - fit->u0.est)
                                             : -1;
        }
        if (!(f = cJSON_AddObjectToObject(o, "fit")))
            goto nomem;
        cJSON_AddStringToObject(f, "use",
                                q->fit == STAGE_FIT_GOOD ? "good" : "poor");
        cJSON_AddNumberToObject(f, "p_g", q->fit_p_g);
        cJSON_AddNumberToObject(f, "p_v", q->fit_p_v);
        cJSON_AddNumberToObject(f, "k", q->fit_k);
        cJSON_AddNumberToObject(f, "lambda", q->fit_lambda);
        cJSON_AddNumberToObject(f, "beta", q->fit_beta);
        if (fitted->have) {
            cJSON_AddNumberToObject(f, "r2", fit->r2);
            cJSON_AddNumberToObject(f, "slice_questions", fit->questions);
        }
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
    q->fit_p_g = q->fit_p_v = q->fit_lambda = q->fit_beta = q->fit_k = -1;
    q->fit = STAGE_FIT_PRIOR;
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
    if (f &&
        (num_field(f, "p_g", &q->fit_p_g) || num_field(f, "p_v", &q->fit_p_v) ||
         num_field(f, "lambda", &q->fit_lambda) ||
         num_field(f, "beta", &q->fit_beta))) {
        rc = nsed_error(err, NSED_ESTORE,
                        "a stored efficiency-fatigue fit lacks a number");
        goto out;
    }
    /* "use" is absent from a context an older nsed stored: its numbers
     * then stand as they were (STAGE_FIT_PRIOR) */
    v = cJSON_GetObjectItemCaseSensitive(f, "use");
    if (v && cJSON_IsString(v) && !strcmp(v->valuestring, "good") &&
        !num_field(f, "k", &q->fit_k))
        q->fit = STAGE_FIT_GOOD;
    else if (v && cJSON_IsString(v) && !strcmp(v->valuestring, "poor"))
        q->fit = STAGE_FIT_POOR;
    else if (v)
        rc = nsed_error(err, NSED_ESTORE,
                        "a stored efficiency-fatigue fit has no valid use");
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
    ctx->fit = q->fit;
    ctx->fit_k = q->fit_k;
}

void runner_qctx_release(runner_qctx *q)
{
    free(q->reliability);
    q->reliability = NULL;
}
