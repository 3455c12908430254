#include "stages/converge.h"
#include "pipeline/base/hash.h"

#include "stages/answer.h"
#include "stages/mask.h"
#include "stages/seed.h"
#include "stages/text.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the efficiency-fatigue model -------------------------------------- */

double converge_lambert_w(double x)
{
    const double e = 2.718281828459045235;
    double w;

    if (isnan(x) || x < -1.0 / e - 1e-15)
        return NAN;
    if (isinf(x))
        return INFINITY;
    if (x == 0)
        return 0;
    if (x <= -1.0 / e)
        return -1;
    if (x < -0.25) {
        /* series around the branch point -1/e */
        double p = sqrt(2.0 * (e * x + 1.0));

        w = -1.0 + p - p * p / 3.0 + 11.0 / 72.0 * p * p * p;
    } else if (x < 3.0) {
        /* Winitzki's approximation */
        double l = log1p(x);

        w = l * (1.0 - log1p(l) / (2.0 + l));
    } else {
        double l1 = log(x), l2 = log(l1);

        w = l1 - l2 + l2 / l1;
    }
    for (int i = 0; i < 64; i++) {
        double ew = exp(w), f = w * ew - x, wp1 = w + 1.0, dw;

        if (wp1 == 0)
            break;
        dw = f / (ew * wp1 - (w + 2.0) * f / (2.0 * wp1));
        w -= dw;
        if (fabs(dw) <= 1e-15 * (1.0 + fabs(w)))
            break;
    }
    return w;
}

double converge_utility(double t, double p_g, double p_v, double lambda,
                        double beta)
{
    double k = lambda * (p_v - p_g);

    return 1.0 - (1.0 - p_g) * exp(-k * t) - beta * t * t;
}

double converge_t_opt_k(double p_g, double k, double beta)
{
    if (!(k > 0) || !(p_g < 1) || isinf(k))
        return 0;
    if (!(beta > 0))
        return INFINITY;
    return converge_lambert_w((1.0 - p_g) * k * k / (2.0 * beta)) / k;
}

bool converge_in_slice(const char *qid, uint64_t seed, double explore)
{
    uint8_t d[HASH_LEN];
    char pre[64];
    uint64_t x = 0;
    hash_ctx *h;
    int n;

    if (!(explore > 0))
        return false;
    if (explore >= 1)
        return true;
    n = snprintf(pre, sizeof pre, "nsed-explore\n%" PRIu64 "\n", seed);
    h = hash_new();
    if (!h || n < 0) {
        /* out of memory: no slice rather than a wrong one */
        hash_free(h);
        return false;
    }
    hash_update(h, pre, (size_t)n);
    hash_update(h, qid, strlen(qid));
    hash_final(h, d);
    hash_free(h);
    for (int i = 0; i < 8; i++)
        x = x << 8 | d[i];
    return (double)(x >> 11) / 9007199254740992.0 < explore;
}

bool converge_explores(const state *st, const workflow *wf)
{
    return wf->rounds.fatigue &&
           converge_in_slice(st->qid, st->seed, wf->rounds.fatigue_explore);
}

double converge_t_opt(double p_g, double p_v, double lambda, double beta)
{
    double k = lambda * (p_v - p_g);

    if (!(k > 0) || !(beta > 0) || !(p_g < 1))
        return 0;
    return converge_lambert_w((1.0 - p_g) * k * k / (2.0 * beta)) / k;
}

static bool is_prob(double p)
{
    return p >= 0 && p <= 1;
}

static bool is_pos(double v)
{
    return v > 0 && isfinite(v);
}

void converge_fatigue_params(const state *st, const workflow *wf,
                             const stage_ctx *ctx, converge_fatigue *out)
{
    const workflow_rounds *rd = &wf->rounds;
    double pg = 0, pv = 0;

    for (size_t s = 0; s < st->nseats; s++) {
        const workflow_model *m = &wf->models[st->seats[s].model];

        pg += m->prior_p_gen >= 0 ? m->prior_p_gen : wf->broker.prior_p_gen;
        pv += m->prior_p_ver >= 0 ? m->prior_p_ver : wf->broker.prior_p_ver;
    }
    pg /= (double)st->nseats;
    pv /= (double)st->nseats;
    out->effort = rd->fatigue_effort > 0 ? rd->fatigue_effort : 1.0;
    out->p_g = is_prob(rd->fatigue_p_g) ? rd->fatigue_p_g
               : ctx && is_prob(ctx->fit_p_g) ? ctx->fit_p_g
                                              : pg;
    out->p_v = is_prob(rd->fatigue_p_v) ? rd->fatigue_p_v
               : ctx && is_prob(ctx->fit_p_v) ? ctx->fit_p_v
                                              : pv;
    out->lambda = is_pos(rd->fatigue_lambda) ? rd->fatigue_lambda
                  : ctx && is_pos(ctx->fit_lambda) ? ctx->fit_lambda
                                                   : CONVERGE_PRIOR_LAMBDA;
    out->beta = is_pos(rd->fatigue_beta) ? rd->fatigue_beta
                : ctx && is_pos(ctx->fit_beta) ? ctx->fit_beta
                                               : CONVERGE_PRIOR_BETA;
    out->k = out->lambda * (out->p_v - out->p_g);
    out->hold = ctx && ctx->fit == STAGE_FIT_POOR;
    if (!ctx || ctx->fit != STAGE_FIT_GOOD)
        return;
    /* the fitted curve: U(0) free, k and beta as fitted */
    if (!is_prob(rd->fatigue_p_g))
        out->p_g = ctx->fit_p_g;
    if (!is_pos(rd->fatigue_beta))
        out->beta = ctx->fit_beta;
    if (is_pos(rd->fatigue_lambda)) {
        out->k = out->lambda * (out->p_v - out->p_g);
    } else {
        out->k = ctx->fit_k;
        out->lambda = out->p_v > out->p_g ? out->k / (out->p_v - out->p_g) : -1;
    }
}

/* ---- the decision ------------------------------------------------------ */

static const char *winner_answer(const state_round *r)
{
    if (!r || !r->aggregated || r->agg.winner < 0)
        return NULL;
    return r->proposals[r->cands[r->agg.winner].seat].answer;
}

void converge_decide(const state *st, const workflow *wf,
                     const stage_ctx *ctx, state_decision *out)
{
    const state_round *r = st->cur, *p = st->prev;
    const workflow_rounds *rd = &wf->rounds;
    const char *ans = winner_answer(r), *pans = winner_answer(p);
    state_decision d = {0};

    d.target = -1;
    if (ans)
        d.stable_streak = p && p->decided && pans &&
                                  answer_same(&wf->answer, ans, pans)
                              ? p->decision.stable_streak + 1
                              : 1;
    if (rd->fatigue) {
        converge_fatigue f;
        double x;

        converge_fatigue_params(st, wf, ctx, &f);
        d.p_g = f.p_g;
        d.p_v = f.p_v;
        d.lambda = f.lambda;
        d.beta = f.beta;
        d.t_opt = converge_t_opt_k(f.p_g, f.k, f.beta);
        if (!(d.t_opt <= 1e6)) /* no peak; the record holds finite numbers */
            d.t_opt = 1e6;
        /* a hair below an integer is that integer, not the next one */
        x = ceil(f.effort * d.t_opt - 1e-9);
        d.target = x < 0 ? 0 : !(x <= 1e6) ? 1000000 : (int)x;
        if (f.hold) /* no trustworthy T_opt: none is recorded */
            d.t_opt = d.target = -1;
    }
    if (r->ncand == 0) {
        d.reason = STATE_STOP_ALL_FAILED;
    } else if (converge_explores(st, wf)) {
        if (r->index + 1 >= rd->max)
            d.reason = STATE_STOP_MAX_ROUNDS;
    } else if (r->index + 1 < rd->min) {
        d.reason = STATE_STOP_NONE;
    } else if (rd->consensus_margin > 0 && r->agg.winner >= 0 &&
               r->agg.conviction >= rd->consensus_margin) {
        d.reason = STATE_STOP_CONSENSUS_MARGIN;
    } else if (rd->stable_answer > 0 && d.stable_streak >= rd->stable_answer) {
        d.reason = STATE_STOP_STABLE_ANSWER;
    } else if (rd->fatigue && d.target >= 0 && r->index >= d.target) {
        d.reason = STATE_STOP_EFFICIENCY_FATIGUE;
    } else if (r->index + 1 >= rd->max) {
        d.reason = STATE_STOP_MAX_ROUNDS;
    }
    d.stop = d.reason != STATE_STOP_NONE;
    *out = d;
}

/* ---- the forget gate --------------------------------------------------- */

/* Neutralize s, then cap it: the body of a block. */
static int capped_body(const char *s, size_t len, long cap, char **out)
{
    buf n, c;
    int rc;

    buf_init(&n, len * 2 + 64);
    buf_init(&c, (size_t)cap);
    rc = text_add_neutralized(&n, s, len);
    if (!rc)
        rc = text_add_capped(&c, n.ptr, n.len, (size_t)cap);
    if (!rc) {
        *out = buf_detach(&c, NULL);
        if (!*out)
            rc = NSED_ENOMEM;
    }
    buf_release(&n);
    buf_release(&c);
    return rc;
}

static int critiques_body(const state *st, const workflow *wf, size_t seat,
                          char **out)
{
    const state_round *r = st->cur;
    long own = mask_own_candidate(r, seat);
    size_t k = 0;
    buf b;
    int rc = 0;

    /* The text is capped below; collect a little more than the cap and
     * stop, so a huge panel cannot make this buffer grow without bound. */
    buf_init(&b, (size_t)wf->rounds.max_critique_chars + STATE_CRITIQUE_MAX +
                     64);
    for (size_t s = 0; r->evals && s < st->nseats && !rc; s++) {
        const state_evaluation *ev = &r->evals[s];

        if (ev->status != STATE_EVAL_OK || s == seat)
            continue;
        for (size_t i = 0; i < ev->nweights && !rc; i++) {
            if ((long)ev->weights[i].cand != own)
                continue;
            k++;
            if (b.len > (size_t)wf->rounds.max_critique_chars)
                break;
            rc = buf_printf(&b, "Reviewer %zu (weight %+d): %s\n", k,
                            ev->weights[i].weight,
                            ev->weights[i].critique[0]
                                ? ev->weights[i].critique
                                : "(no critique)");
        }
    }
    if (!rc && k == 0)
        rc = buf_adds(&b, "No reviewer scored your answer.\n");
    if (!rc)
        rc = capped_body(b.ptr, b.len, wf->rounds.max_critique_chars, out);
    buf_release(&b);
    return rc;
}

static int scores_body(const state *st, const workflow *wf, size_t seat,
                       char **out)
{
    const state_round *r = st->cur;
    long own = mask_own_candidate(r, seat);
    buf b;
    int rc;

    buf_init(&b, (size_t)wf->rounds.max_table_chars + 256);
    rc = buf_printf(&b, "label | score | reviewers | net support\n");
    for (size_t j = 0; j < r->ncand && !rc; j++) {
        const state_score *sc = &r->agg.scores[j];
        char label[TEXT_LABEL_MAX];

        if (b.len > (size_t)wf->rounds.max_table_chars)
            break;
        text_label(j, label);
        rc = buf_printf(&b, "%s | %+.3f | %zu | %+d%s%s\n", label, sc->score,
                        sc->nevaluators, sc->net_support,
                        (long)j == r->agg.winner ? " | highest" : "",
                        (long)j == own ? " | yours" : "");
    }
    if (!rc)
        rc = capped_body(b.ptr, b.len, wf->rounds.max_table_chars, out);
    buf_release(&b);
    return rc;
}

static int wrap(const char *kind, const char *fence, char **body)
{
    buf b;
    int rc;

    if (!*body)
        return 0;
    buf_init(&b, strlen(*body) * 2 + 256);
    rc = text_add_block(&b, kind, NULL, fence, *body, strlen(*body));
    if (!rc) {
        char *s = buf_detach(&b, NULL);

        if (!s) {
            rc = NSED_ENOMEM;
        } else {
            free(*body);
            *body = s;
        }
    }
    buf_release(&b);
    return rc;
}

int converge_build_carry(const state *st, const workflow *wf,
                         state_carry *out)
{
    const state_round *r = st->cur;
    const unsigned carry = wf->rounds.carry;
    const size_t ns = st->nseats;
    state_carry c = {0};
    const char **texts = NULL;
    size_t nt = 0;
    int rc = 0;

    c.from_round = r->index;
    c.own = calloc(ns, sizeof *c.own);
    c.critiques = calloc(ns, sizeof *c.critiques);
    c.scores = calloc(ns, sizeof *c.scores);
    texts = calloc(3 * ns + 1, sizeof *texts);
    if (!c.own || !c.critiques || !c.scores || !texts) {
        rc = NSED_ENOMEM;
        goto out;
    }
    if ((carry & WORKFLOW_CARRY_WINNER) && r->aggregated &&
        r->agg.winner >= 0) {
        const char *w = r->cands[r->agg.winner].text;

        rc = capped_body(w, strlen(w), wf->rounds.max_winner_chars,
                         &c.winner);
    }
    for (size_t s = 0; s < ns && !rc; s++) {
        const state_proposal *p = &r->proposals[s];
        bool has_cand = mask_own_candidate(r, s) >= 0;

        if ((carry & WORKFLOW_CARRY_OWN_PREVIOUS) &&
            p->status == STATE_PROPOSAL_OK && p->text)
            rc = capped_body(p->text, strlen(p->text),
                             wf->rounds.max_own_chars, &c.own[s]);
        if (!rc && (carry & WORKFLOW_CARRY_CRITIQUES) && has_cand &&
            r->aggregated)
            rc = critiques_body(st, wf, s, &c.critiques[s]);
        if (!rc && (carry & WORKFLOW_CARRY_SCORES) && r->aggregated &&
            r->ncand > 0)
            rc = scores_body(st, wf, s, &c.scores[s]);
    }
    if (rc)
        goto out;
    texts[nt++] = c.winner;
    for (size_t s = 0; s < ns; s++) {
        texts[nt++] = c.own[s];
        texts[nt++] = c.critiques[s];
        texts[nt++] = c.scores[s];
    }
    rc = seed_fence("carry", st->seed, st->qid, r->index, texts, nt,
                     c.fence);
    if (!rc)
        rc = wrap("WINNING SOLUTION", c.fence, &c.winner);
    for (size_t s = 0; s < ns && !rc; s++) {
        rc = wrap("YOUR PREVIOUS ANSWER", c.fence, &c.own[s]);
        if (!rc)
            rc = wrap("CRITIQUES", c.fence, &c.critiques[s]);
        if (!rc)
            rc = wrap("SCORES", c.fence, &c.scores[s]);
    }
out:
    free(texts);
    if (rc) {
        state_carry_release(&c, ns);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- the stage --------------------------------------------------------- */

/* Majority vote of the answers of round r in label order. */
static int majority_of(const workflow *wf, const state_round *r,
                       char **answer, long *seat)
{
    const char *answers[WORKFLOW_MAX_SEATS];
    size_t win, votes;

    if (!r)
        return NSED_ENOTFOUND;
    for (size_t j = 0; j < r->ncand; j++)
        answers[j] = r->proposals[r->cands[j].seat].answer;
    if (answer_majority(&wf->answer, answers, r->ncand, &win, &votes))
        return NSED_ENOTFOUND;
    *answer = strdup(answers[win]);
    if (!*answer)
        return NSED_ENOMEM;
    *seat = (long)r->cands[win].seat;
    return 0;
}

int converge_run(state *st, const workflow *wf, const stage_ctx *ctx,
                 nsed_err *err)
{
    state_decision d;
    state_carry carry = {0};
    state_round *next = NULL;
    char *fallback = NULL;
    long fb_seat = -1;
    int fb_round = -1;
    int rc = 0;

    if (st->stage != STATE_STAGE_CONVERGE)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: converge called in stage %s", st->qid,
                          state_stage_name(st->stage));
    converge_decide(st, wf, ctx, &d);
    if (d.stop) {
        if (st->final_source == STATE_FINAL_NONE) {
            rc = majority_of(wf, st->cur, &fallback, &fb_seat);
            fb_round = st->cur->index;
            if (rc == NSED_ENOTFOUND) {
                rc = majority_of(wf, st->prev, &fallback, &fb_seat);
                fb_round = st->prev ? st->prev->index : -1;
            }
            if (rc == NSED_ENOTFOUND)
                rc = 0;
            if (rc)
                goto out;
        }
        /* commit: finish */
        st->cur->decision = d;
        st->cur->decided = true;
        if (fallback) {
            free(st->final_answer);
            st->final_answer = fallback;
            fallback = NULL;
            st->final_seat = fb_seat;
            st->final_round = fb_round;
            st->final_source = STATE_FINAL_MAJORITY;
        }
        st->status = STATE_STATUS_DONE;
        if (!st->final_answer)
            st->status = STATE_STATUS_INCOMPLETE;
        for (size_t s = 0; s < st->nseats; s++) {
            if (st->missing[s])
                st->status = STATE_STATUS_DEGRADED;
        }
        st->stage = STATE_STAGE_FINISHED;
        goto out;
    }
    rc = converge_build_carry(st, wf, &carry);
    if (rc)
        goto out;
    next = state_round_new(st->cur->index + 1, st->nseats);
    if (!next) {
        rc = NSED_ENOMEM;
        goto out;
    }
    /* commit: next round */
    st->cur->decision = d;
    st->cur->decided = true;
    state_round_free(st->prev, st->nseats);
    st->prev = st->cur;
    st->cur = next;
    next = NULL;
    st->round = st->cur->index;
    state_carry_release(&st->carry, st->nseats);
    st->carry = carry;
    memset(&carry, 0, sizeof carry);
    st->stage = STATE_STAGE_PROPOSE;
out:
    state_carry_release(&carry, st->nseats);
    state_round_free(next, st->nseats);
    free(fallback);
    return rc;
}
