#include "stages/aggregate.h"

#include "stages/mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TIE_EPS 1e-9

static bool same(double a, double b)
{
    return fabs(a - b) <= TIE_EPS * fmax(1.0, fmax(fabs(a), fabs(b)));
}

static double factor(const aggregate_input *in, size_t i)
{
    return in->reliability ? in->reliability[i] : 1.0;
}

/* Borda points of evaluator i for candidate j (present): the number of
 * candidates it scored lower, plus half of those it scored equal. That is
 * n-1 for the best and 0 for the worst, and ties share the average. */
static double borda_points(const aggregate_input *in, size_t i, size_t j)
{
    const int *w = in->weights + i * in->ncand;
    const bool *p = in->present + i * in->ncand;
    double pts = 0;

    for (size_t k = 0; k < in->ncand; k++) {
        if (!p[k] || k == j)
            continue;
        if (w[k] < w[j])
            pts += 1;
        else if (w[k] == w[j])
            pts += 0.5;
    }
    return pts;
}

/* Evaluator i gave no non-zero weight: it judged nothing, so it counts as
 * an abstention -- for no candidate's evaluator count, score or winner
 * rule (an all-zero row would otherwise let a candidate only it saw win
 * with S = 0). */
static bool row_abstains(const aggregate_input *in, size_t i)
{
    for (size_t j = 0; j < in->ncand; j++)
        if (in->present[i * in->ncand + j] &&
            in->weights[i * in->ncand + j] != 0)
            return false;
    return true;
}

static void score_all(const aggregate_input *in, state_score *scores,
                      double *rsum)
{
    const size_t m = in->ncand;

    for (size_t i = 0; i < in->nevaluators; i++) {
        const int *w = in->weights + i * m;
        const bool *p = in->present + i * m;
        const double r = factor(in, i);
        double abs_sum = 0, pos_sum = 0;

        if (row_abstains(in, i))
            continue;

        for (size_t j = 0; j < m; j++) {
            if (!p[j])
                continue;
            abs_sum += abs(w[j]);
            pos_sum += w[j] > 0 ? w[j] : 0;
        }
        for (size_t j = 0; j < m; j++) {
            double v = 0;

            if (!p[j])
                continue;
            switch (in->scheme) {
            case WORKFLOW_SCHEME_QUADRATIC:
                if (abs_sum > 0) {
                    double f = w[j] / abs_sum;

                    v = (f < 0 ? -1.0 : 1.0) * sqrt(fabs(f));
                }
                break;
            case WORKFLOW_SCHEME_QUADRATIC_CREDITS:
                /* 100 credits at most: a budget over 100 is scaled down
                 * to 100, one within it is spent as given */
                if (w[j] > 0)
                    v = sqrt(pos_sum > 100.0 ? 100.0 * w[j] / pos_sum
                                             : (double)w[j]);
                break;
            case WORKFLOW_SCHEME_MEAN:
                v = w[j];
                break;
            case WORKFLOW_SCHEME_BORDA:
                v = borda_points(in, i, j);
                break;
            }
            scores[j].score += r * v;
            rsum[j] += r;
        }
    }
    if (in->scheme == WORKFLOW_SCHEME_MEAN) {
        for (size_t j = 0; j < m; j++)
            scores[j].score = rsum[j] > 0 ? scores[j].score / rsum[j] : 0;
    }
}

/* Net support, evaluator count, minimum and variance of the raw weights. */
static void describe_all(const aggregate_input *in, state_score *scores)
{
    const size_t m = in->ncand;

    for (size_t j = 0; j < m; j++) {
        double sum = 0, sq = 0;
        size_t n = 0;
        int min = 0;

        for (size_t i = 0; i < in->nevaluators; i++) {
            int w;

            if (!in->present[i * m + j] || row_abstains(in, i))
                continue;
            w = in->weights[i * m + j];
            if (n == 0 || w < min)
                min = w;
            n++;
            sum += w;
            scores[j].net_support += (w > 0) - (w < 0);
        }
        if (n) {
            double mean = sum / (double)n;

            for (size_t i = 0; i < in->nevaluators; i++) {
                if (in->present[i * m + j] && !row_abstains(in, i)) {
                    double d = in->weights[i * m + j] - mean;

                    sq += d * d;
                }
            }
            scores[j].variance = sq / (double)n;
        }
        scores[j].nevaluators = n;
        scores[j].min_peer = min;
    }
}

int aggregate_compute(const aggregate_input *in, state_score *scores,
                      aggregate_outcome *out)
{
    const size_t m = in->ncand;
    double *rsum = calloc(m ? m : 1, sizeof *rsum);
    bool *alive = calloc(m ? m : 1, sizeof *alive);
    enum state_decider decided = STATE_DECIDER_NONE;
    double best = 0, abs_total = 0;
    size_t nalive = 0;
    long winner = -1;

    if (!rsum || !alive) {
        free(rsum);
        free(alive);
        return NSED_ENOMEM;
    }
    memset(scores, 0, m * sizeof *scores);
    score_all(in, scores, rsum);
    describe_all(in, scores);
    /* the best score among candidates somebody scored */
    for (size_t j = 0; j < m; j++) {
        if (scores[j].nevaluators && (nalive == 0 || scores[j].score > best)) {
            best = scores[j].score;
            nalive = 1;
        }
    }
    nalive = 0;
    for (size_t j = 0; j < m; j++) {
        alive[j] = scores[j].nevaluators && same(scores[j].score, best);
        nalive += alive[j];
    }
    if (nalive == 1)
        decided = STATE_DECIDER_SCORE;
    for (size_t t = 0; t <= in->ntie_break && nalive > 1; t++) {
        /* after the configured breakers the seeded order decides anyway */
        enum workflow_tie_break tb =
            t < in->ntie_break ? in->tie_break[t] : WORKFLOW_TIE_SEEDED;
        bool first = true;
        double keep = 0;

        switch (tb) {
        case WORKFLOW_TIE_MIN_PEER_SCORE:
            for (size_t j = 0; j < m; j++) {
                if (alive[j] && (first || scores[j].min_peer > keep)) {
                    keep = scores[j].min_peer;
                    first = false;
                }
            }
            nalive = 0;
            for (size_t j = 0; j < m; j++) {
                alive[j] = alive[j] && scores[j].min_peer == (int)keep;
                nalive += alive[j];
            }
            decided = STATE_DECIDER_MIN_PEER;
            break;
        case WORKFLOW_TIE_VARIANCE:
            for (size_t j = 0; j < m; j++) {
                if (alive[j] && (first || scores[j].variance < keep)) {
                    keep = scores[j].variance;
                    first = false;
                }
            }
            nalive = 0;
            for (size_t j = 0; j < m; j++) {
                alive[j] = alive[j] && same(scores[j].variance, keep);
                nalive += alive[j];
            }
            decided = STATE_DECIDER_VARIANCE;
            break;
        case WORKFLOW_TIE_SEEDED:
            nalive = 0;
            for (size_t j = 0; j < m; j++) {
                alive[j] = alive[j] && nalive == 0;
                nalive += alive[j];
            }
            decided = STATE_DECIDER_SEEDED;
            break;
        }
    }
    for (size_t j = 0; j < m; j++) {
        if (alive[j]) {
            winner = (long)j;
            break;
        }
    }
    for (size_t j = 0; j < m; j++)
        abs_total += fabs(scores[j].score);
    out->winner = winner;
    out->decided_by = winner >= 0 ? decided : STATE_DECIDER_NONE;
    out->conviction = winner >= 0 && abs_total > 0
                          ? scores[winner].score / abs_total
                          : 0;
    free(rsum);
    free(alive);
    return 0;
}

static double reliability_of(const stage_ctx *ctx, size_t model)
{
    double r;

    if (!ctx || !ctx->reliability || model >= ctx->nreliability)
        return 1.0;
    r = ctx->reliability[model];
    return isfinite(r) && r >= 0 ? r : 1.0;
}

int aggregate_run(state *st, const workflow *wf, const stage_ctx *ctx,
                  nsed_err *err)
{
    state_round *r = st->cur;
    const size_t m = r->ncand, ns = st->nseats;
    const bool rel = wf->scoring.reliability_weighting;
    int *weights = NULL;
    bool *present = NULL;
    double *factors = NULL;
    state_score *scores = NULL;
    size_t ne = 0, abstained = 0, failed = 0, zero = 0;
    aggregate_outcome oc;
    char *final = NULL;
    int rc;

    if (st->stage != STATE_STAGE_AGGREGATE)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: aggregate called in stage %s", st->qid,
                          state_stage_name(st->stage));
    weights = calloc(ns * (m ? m : 1), sizeof *weights);
    present = calloc(ns * (m ? m : 1), sizeof *present);
    factors = calloc(ns, sizeof *factors);
    scores = calloc(m ? m : 1, sizeof *scores);
    if (!weights || !present || !factors || !scores) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t s = 0; r->evals && s < ns; s++) {
        const state_evaluation *ev = &r->evals[s];

        switch (ev->status) {
        case STATE_EVAL_OK:
            for (size_t k = 0; k < ev->nweights; k++) {
                size_t j = ev->weights[k].cand;

                /* the mask again, in case a state was edited by hand */
                if (j >= m ||
                    !mask_shows(r, s, j, wf->scoring.allow_self_votes))
                    continue;
                weights[ne * m + j] = ev->weights[k].weight;
                present[ne * m + j] = true;
            }
            factors[ne] = rel ? reliability_of(ctx, st->seats[s].model) : 1.0;
            ne++;
            break;
        case STATE_EVAL_ABSTAINED:
            abstained++;
            break;
        case STATE_EVAL_FAILED:
            failed++;
            break;
        case STATE_EVAL_PENDING:
        case STATE_EVAL_REPAIR:
        case STATE_EVAL_IDLE:
            break;
        }
    }
    {
        aggregate_input in = {
            .scheme = wf->scoring.scheme,
            .nevaluators = ne,
            .ncand = m,
            .weights = weights,
            .present = present,
            .reliability = factors,
            .tie_break = wf->scoring.tie_break,
            .ntie_break = WORKFLOW_TIE_BREAK_COUNT,
        };

        rc = aggregate_compute(&in, scores, &oc);
        if (rc)
            goto out;
        /* an all-zero evaluation is an abstention (row_abstains) */
        for (size_t i = 0; i < ne; i++)
            zero += row_abstains(&in, i);
    }
    if (oc.winner >= 0) {
        const char *ans = r->proposals[r->cands[oc.winner].seat].answer;

        if (ans) {
            final = strdup(ans);
            if (!final) {
                rc = NSED_ENOMEM;
                goto out;
            }
        }
    }
    /* commit */
    free(r->agg.scores);
    r->agg.scheme = wf->scoring.scheme;
    r->agg.self_votes = wf->scoring.allow_self_votes;
    r->agg.reliability = rel;
    r->agg.scores = scores;
    r->agg.winner = oc.winner;
    r->agg.conviction = oc.conviction;
    r->agg.decided_by = oc.decided_by;
    r->agg.evaluators = ne - zero;
    r->agg.abstained = abstained + zero;
    r->agg.failed = failed;
    r->aggregated = true;
    scores = NULL;
    if (oc.winner >= 0) {
        free(st->final_answer);
        st->final_answer = final;
        final = NULL;
        st->final_seat = (long)r->cands[oc.winner].seat;
        st->final_round = r->index;
        st->final_source = STATE_FINAL_WINNER;
    }
    st->stage = STATE_STAGE_CONVERGE;
out:
    free(final);
    free(weights);
    free(present);
    free(factors);
    free(scores);
    return rc;
}
