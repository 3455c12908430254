/* Tests for the converge stage (stages/converge.c): Lambert W, the
 * efficiency-fatigue optimum against an independent bisection, every stop
 * rule with rounds.min / rounds.max, the final answer fallback, and the
 * forget gate (caps, carry subsets, fences the simulator reads, a prompt
 * that stays bounded over 50 rounds). */
#include "tests/sim/sim_prompt.h"
#include "stages/answer.h"
#include "stages/converge.h"
#include "stages/evaluate.h"
#include "stages/mask.h"
#include "stages/propose.h"
#include "stages/stage.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* ---- Lambert W and the fatigue model ----------------------------------- */

START_TEST(lambert_w_known_values)
{
    const double e = exp(1.0);

    ck_assert_double_eq_tol(converge_lambert_w(1), 0.5671432904097838, 1e-15);
    ck_assert_double_eq_tol(converge_lambert_w(e), 1.0, 1e-15);
    ck_assert_double_eq_tol(converge_lambert_w(10), 1.7455280027406994,
                            1e-15);
    ck_assert_double_eq(converge_lambert_w(0), 0);
    ck_assert_double_eq_tol(converge_lambert_w(-1 / e), -1, 1e-7);
    ck_assert_double_eq_tol(converge_lambert_w(-0.2), -0.2591711018190737,
                            1e-14);
    ck_assert_double_eq_tol(converge_lambert_w(2 * exp(2.0)), 2.0, 1e-14);
    ck_assert(isnan(converge_lambert_w(-0.5)));
    ck_assert(isnan(converge_lambert_w(NAN)));
    ck_assert(isinf(converge_lambert_w(INFINITY)));
    /* w e^w = x across the range */
    for (double x = -0.36; x < 1e12; x = x < 1 ? x + 0.07 : x * 3.7) {
        double w = converge_lambert_w(x);

        ck_assert_msg(fabs(w * exp(w) - x) <= 1e-12 * fmax(1, fabs(x)),
                      "x=%g w=%.17g", x, w);
    }
}
END_TEST

/* U'(t) = (1 - p_g) k e^(-k t) - 2 beta t, computed independently. */
static double dU(double t, double pg, double pv, double lambda, double beta)
{
    double k = lambda * (pv - pg);

    return (1 - pg) * k * exp(-k * t) - 2 * beta * t;
}

START_TEST(fatigue_optimum_matches_bisection)
{
    /* p_g = 0.5, p_v = 0.8, lambda = 2, beta = 0.002: k = 0.6,
     * W((0.5)(0.36)/(0.004) = 45) / 0.6 */
    const double pg = 0.5, pv = 0.8, lambda = 2, beta = 0.002;
    double lo = 0, hi = 100, t_opt = converge_t_opt(pg, pv, lambda, beta);

    for (int i = 0; i < 200; i++) {
        double mid = (lo + hi) / 2;

        if (dU(mid, pg, pv, lambda, beta) > 0)
            lo = mid;
        else
            hi = mid;
    }
    ck_assert_double_eq_tol(t_opt, (lo + hi) / 2, 1e-10);
    ck_assert_double_eq_tol(t_opt, converge_lambert_w(45) / 0.6, 1e-15);
    ck_assert_double_eq_tol(t_opt, 4.6385, 1e-3);
    /* it is a maximum of U */
    ck_assert(converge_utility(t_opt, pg, pv, lambda, beta) >
              converge_utility(t_opt - 0.05, pg, pv, lambda, beta));
    ck_assert(converge_utility(t_opt, pg, pv, lambda, beta) >
              converge_utility(t_opt + 0.05, pg, pv, lambda, beta));
    /* rounds cannot help when verification is no better than generation */
    ck_assert_double_eq(converge_t_opt(0.7, 0.7, 2, 0.002), 0);
    ck_assert_double_eq(converge_t_opt(0.7, 0.6, 2, 0.002), 0);
    ck_assert_double_eq(converge_t_opt(0.5, 0.8, 2, 0), 0);
}
END_TEST

/* ---- states by hand ---------------------------------------------------- */

static const char base_yaml[] =
    "name: t\nversion: 1\nseed: 11\n"
    "models:\n"
    "  - {id: m0, endpoint: 'http://127.0.0.1:9/v1', model: s0, family: f0, "
    "prior: {p_gen: 0.4, p_ver: 0.9}}\n"
    "  - {id: m1, endpoint: 'http://127.0.0.1:9/v1', model: s1, family: f1}\n"
    "  - {id: m2, endpoint: 'http://127.0.0.1:9/v1', model: s2, family: f2}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [m0, m1, m2]}\n"
    "answer: {extract: boxed, compare: numeric}\n";

static workflow *load_wf(const char *extra)
{
    return tu_load_workflow(base_yaml, extra);
}

static state *new_state(const workflow *wf)
{
    state_seat_spec seats[3] = {{0, "solver", ""}, {1, "solver", ""},
                                {2, "solver", ""}};
    state_question q = {"q7", "What is 6 * 7?", "42", NULL, 0};
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(state_new(wf, &q, seats, 3, &st, &e), 0);
    return st;
}

/* Fill the current round as if it had been played: seat s answered
 * answers[s] (NULL: SKIP), candidate j is seat j's (in seat order), the
 * winner is the candidate of seat `win` (-1: none) with conviction conv.
 * Leaves the state at stage converge. */
static void fake_round(state *st, const char *const *answers, long win,
                       double conv)
{
    state_round *r = st->cur;

    r->cands = calloc(3, sizeof *r->cands);
    for (size_t s = 0; s < 3; s++) {
        char text[128];

        if (!answers[s]) {
            r->proposals[s].status = STATE_PROPOSAL_SKIP;
            continue;
        }
        snprintf(text, sizeof text, "Reasoning of seat %zu. \\boxed{%s}", s,
                 answers[s]);
        r->proposals[s].status = STATE_PROPOSAL_OK;
        r->proposals[s].text = strdup(text);
        r->proposals[s].answer = strdup(answers[s]);
        r->cands[r->ncand].seat = s;
        r->cands[r->ncand].text = strdup(text);
        r->ncand++;
    }
    memcpy(r->fence, "0123abcd", 9);
    r->anonymized = true;
    r->aggregated = true;
    r->agg.scores = calloc(3, sizeof *r->agg.scores);
    r->agg.winner = win >= 0 ? mask_own_candidate(r, (size_t)win) : -1;
    r->agg.conviction = conv;
    if (r->agg.winner >= 0) {
        free(st->final_answer);
        st->final_answer = strdup(answers[win]);
        st->final_seat = win;
        st->final_round = r->index;
        st->final_source = STATE_FINAL_WINNER;
    }
    st->stage = STATE_STAGE_CONVERGE;
}

static enum state_stop_reason step(state *st, const workflow *wf,
                                   const stage_ctx *ctx,
                                   const char *const *answers, long win,
                                   double conv)
{
    nsed_err e = {0};
    int index = st->round;
    const state_round *r;

    fake_round(st, answers, win, conv);
    ck_assert_int_eq(converge_run(st, wf, ctx, &e), 0);
    r = state_round_get(st, index);
    ck_assert_ptr_nonnull(r);
    ck_assert(r->decided);
    return r->decision.reason;
}

static const char *const all42[] = {"42", "42", "7"};

START_TEST(max_rounds_always_stops)
{
    workflow *wf = load_wf("rounds: {min: 1, max: 2}\n");
    state *st = new_state(wf);

    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.99), STATE_STOP_NONE);
    ck_assert_int_eq(st->stage, STATE_STAGE_PROPOSE);
    ck_assert_int_eq(st->round, 1);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.99),
                     STATE_STOP_MAX_ROUNDS);
    ck_assert_int_eq(st->stage, STATE_STAGE_FINISHED);
    ck_assert_int_eq(st->status, STATE_STATUS_DONE);
    ck_assert_str_eq(st->final_answer, "42");
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(min_rounds_hold_back_other_rules)
{
    workflow *wf = load_wf("rounds: {min: 3, max: 5, stop: "
                           "{consensus_margin: 0.5, stable_answer: 1}}\n");
    state *st = new_state(wf);

    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.9), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.9), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.9),
                     STATE_STOP_CONSENSUS_MARGIN);
    ck_assert_int_eq(st->round, 2);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(consensus_margin_threshold)
{
    workflow *wf = load_wf("rounds: {max: 5, stop: {consensus_margin: 0.6}}\n");
    state *st = new_state(wf);

    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.59), STATE_STOP_NONE);
    /* no winner: no consensus whatever the number says */
    ck_assert_int_eq(step(st, wf, NULL, all42, -1, 0.9), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.6),
                     STATE_STOP_CONSENSUS_MARGIN);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(stable_answer_streak)
{
    workflow *wf = load_wf("rounds: {max: 8, stop: {stable_answer: 2}}\n");
    state *st = new_state(wf);
    const char *a[] = {"41", "42", "42.0"}, *b[] = {"42", "x", "y"};

    /* round 0: 41 wins (streak 1); round 1: 42 wins (streak 1, changed);
     * round 2: no winner (streak 0); round 3: 42.0 (1); round 4: 42 (2) */
    ck_assert_int_eq(step(st, wf, NULL, a, 0, 0.2), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, a, 1, 0.2), STATE_STOP_NONE);
    ck_assert_int_eq(state_round_get(st, 1)->decision.stable_streak, 1);
    ck_assert_int_eq(step(st, wf, NULL, a, -1, 0), STATE_STOP_NONE);
    ck_assert_int_eq(state_round_get(st, 2)->decision.stable_streak, 0);
    ck_assert_int_eq(step(st, wf, NULL, a, 2, 0.2), STATE_STOP_NONE);
    /* 42 == 42.0 under the numeric comparator */
    ck_assert_int_eq(step(st, wf, NULL, b, 0, 0.2),
                     STATE_STOP_STABLE_ANSWER);
    ck_assert_int_eq(state_round_get(st, 4)->decision.stable_streak, 2);
    ck_assert_str_eq(st->final_answer, "42");
    ck_assert_int_eq(st->final_round, 4);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(efficiency_fatigue_stops_at_optimum)
{
    /* T_opt = 4.6385 -> stop once t = round index reaches ceil = 5 */
    workflow *wf = load_wf("rounds: {max: 20, stop: {efficiency_fatigue: "
                           "{p_g: 0.5, p_v: 0.8, lambda: 2, beta: 0.002}}}\n");
    state *st = new_state(wf);

    for (int r = 0; r < 5; r++)
        ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.1), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.1),
                     STATE_STOP_EFFICIENCY_FATIGUE);
    ck_assert_int_eq(state_round_get(st, 5)->decision.target, 5);
    ck_assert_double_eq_tol(state_round_get(st, 5)->decision.t_opt,
                            converge_lambert_w(45) / 0.6, 1e-12);
    ck_assert_int_eq(st->round, 5);
    state_free(st);
    workflow_free(wf);
    /* half the effort: ceil(0.5 * 4.6385) = 3 */
    wf = load_wf("rounds: {max: 20, stop: {efficiency_fatigue: {effort: 0.5, "
                 "p_g: 0.5, p_v: 0.8, lambda: 2, beta: 0.002}}}\n");
    st = new_state(wf);
    for (int r = 0; r < 3; r++)
        ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.1), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.1),
                     STATE_STOP_EFFICIENCY_FATIGUE);
    state_free(st);
    workflow_free(wf);
    /* p_v <= p_g: stop after round 0 */
    wf = load_wf("rounds: {max: 20, stop: {efficiency_fatigue: "
                 "{p_g: 0.8, p_v: 0.6, lambda: 2, beta: 0.002}}}\n");
    st = new_state(wf);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.1),
                     STATE_STOP_EFFICIENCY_FATIGUE);
    ck_assert_int_eq(state_round_get(st, 0)->decision.target, 0);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(fatigue_parameter_sources)
{
    /* p_g fixed by the workflow; p_v fitted by the caller; lambda and beta
     * from the priors. Prior p_v would be the seats' mean: m0 0.9, m1 and
     * m2 broker default 0.6 -> 0.7. */
    workflow *wf = load_wf("rounds: {max: 20, stop: {efficiency_fatigue: "
                           "{p_g: 0.3}}}\n");
    state *st = new_state(wf);
    stage_ctx ctx = stage_ctx_none();
    converge_fatigue f;

    converge_fatigue_params(st, wf, NULL, &f);
    ck_assert_double_eq(f.p_g, 0.3);
    ck_assert_double_eq_tol(f.p_v, (0.9 + 0.6 + 0.6) / 3, 1e-15);
    ck_assert_double_eq(f.lambda, CONVERGE_PRIOR_LAMBDA);
    ck_assert_double_eq(f.beta, CONVERGE_PRIOR_BETA);
    ctx.fit_p_g = 0.45;  /* the workflow's value wins */
    ctx.fit_p_v = 0.85;
    ctx.fit_beta = 0.01;
    converge_fatigue_params(st, wf, &ctx, &f);
    ck_assert_double_eq(f.p_g, 0.3);
    ck_assert_double_eq(f.p_v, 0.85);
    ck_assert_double_eq(f.beta, 0.01);
    ck_assert_double_eq(f.lambda, CONVERGE_PRIOR_LAMBDA);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(all_failed_stops_even_before_min)
{
    workflow *wf = load_wf("rounds: {min: 3, max: 5}\n");
    state *st = new_state(wf);
    const char *none[] = {NULL, NULL, NULL};

    ck_assert_int_eq(step(st, wf, NULL, none, -1, 0), STATE_STOP_ALL_FAILED);
    ck_assert_int_eq(st->status, STATE_STATUS_INCOMPLETE);
    ck_assert_ptr_null(st->final_answer);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(no_winner_ever_falls_back_to_majority)
{
    workflow *wf = load_wf("rounds: {max: 2}\n");
    state *st = new_state(wf);
    const char *a[] = {"7", "42", "42.0"};

    ck_assert_int_eq(step(st, wf, NULL, a, -1, 0), STATE_STOP_NONE);
    st->missing[1] = true; /* and a seat was lost on the way */
    ck_assert_int_eq(step(st, wf, NULL, a, -1, 0), STATE_STOP_MAX_ROUNDS);
    ck_assert_int_eq(st->final_source, STATE_FINAL_MAJORITY);
    ck_assert_str_eq(st->final_answer, "42");
    ck_assert_int_eq(st->final_seat, 1);
    ck_assert_int_eq(st->final_round, 1);
    ck_assert_int_eq(st->status, STATE_STATUS_DEGRADED);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* ---- the forget gate ---------------------------------------------------- */

static bool valid_utf8(const char *s)
{
    char *c = NULL;
    bool ok;

    ck_assert_int_eq(text_clean(s, strlen(s), strlen(s) + 64, &c), 0);
    ok = !strcmp(c, s);
    free(c);
    return ok;
}

START_TEST(carry_caps_and_fences)
{
    workflow *wf = load_wf("rounds:\n  max: 5\n  forget_gate:\n"
                           "    max_winner_chars: 100\n"
                           "    max_own_chars: 120\n");
    state *st = new_state(wf);
    const char *a[] = {"42", "41", NULL};
    state_round *r;
    char big[3000];
    size_t n = 0;
    sim_span seg[1];
    sim_prompt p;
    buf user;

    /* seat 0's text: 2-byte characters, far over the caps */
    while (n + 2 < sizeof big - 32) {
        big[n++] = '\xc3';
        big[n++] = '\xa9';
    }
    memcpy(big + n, " \\boxed{42}", 12);
    fake_round(st, a, 0, 0.3);
    r = st->cur;
    free(r->cands[0].text);
    r->cands[0].text = strdup(big);
    free(r->proposals[0].text);
    r->proposals[0].text = strdup(big);
    {
        nsed_err e = {0};

        ck_assert_int_eq(converge_run(st, wf, NULL, &e), 0);
    }
    ck_assert_int_eq(st->carry.from_round, 0);
    ck_assert_ptr_nonnull(st->carry.winner);
    ck_assert_ptr_null(st->carry.own[2]); /* SKIP: nothing of its own */
    ck_assert_ptr_nonnull(st->carry.own[0]);
    ck_assert_ptr_null(st->carry.critiques[2]);
    ck_assert_ptr_nonnull(st->carry.critiques[0]);
    ck_assert_ptr_nonnull(st->carry.scores[2]);
    ck_assert(valid_utf8(st->carry.winner));
    ck_assert(valid_utf8(st->carry.own[0]));
    ck_assert(tu_contains(st->carry.winner, TEXT_TRUNCATED));
    ck_assert(tu_contains(st->carry.critiques[0],
                          "No reviewer scored your answer."));
    ck_assert(tu_contains(st->carry.scores[0], "| highest | yours"));

    /* the revise prompt: the simulator finds the blocks, bodies capped */
    buf_init(&user, STAGE_PROMPT_MAX);
    ck_assert_int_eq(propose_render(st, wf, 0, &user), 0);
    seg[0].ptr = user.ptr;
    seg[0].len = user.len;
    sim_prompt_parse(seg, 1, &p);
    ck_assert(p.has_question);
    ck_assert(p.has_winner);
    ck_assert(p.has_previous);
    ck_assert_uint_le(p.winner.len, 100 + 1);
    ck_assert_uint_le(p.previous.len, 120 + 1);
    ck_assert(tu_contains(user.ptr, st->carry.fence));
    ck_assert(tu_contains(user.ptr, "Round 1."));
    buf_release(&user);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(carry_subsets)
{
    workflow *wf = load_wf("rounds:\n  max: 5\n  forget_gate:\n"
                           "    carry: [winner, scores]\n");
    state *st = new_state(wf);
    nsed_err e = {0};

    fake_round(st, all42, 0, 0.3);
    ck_assert_int_eq(converge_run(st, wf, NULL, &e), 0);
    ck_assert_ptr_nonnull(st->carry.winner);
    for (size_t s = 0; s < 3; s++) {
        ck_assert_ptr_null(st->carry.own[s]);
        ck_assert_ptr_null(st->carry.critiques[s]);
        ck_assert_ptr_nonnull(st->carry.scores[s]);
    }
    state_free(st);
    workflow_free(wf);
    wf = load_wf("rounds:\n  max: 5\n  forget_gate:\n    carry: []\n");
    st = new_state(wf);
    fake_round(st, all42, 0, 0.3);
    ck_assert_int_eq(converge_run(st, wf, NULL, &e), 0);
    ck_assert_ptr_null(st->carry.winner);
    for (size_t s = 0; s < 3; s++) {
        ck_assert_ptr_null(st->carry.own[s]);
        ck_assert_ptr_null(st->carry.scores[s]);
    }
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* Answer every request of the current stage: proposals echo their whole
 * prompt (the worst case for prompt growth) and end with an answer;
 * evaluators back 42 and reject the rest, with long critiques. */
static void answer_stage(state *st, const workflow *wf)
{
    stage_requests l = {0};
    stage_response *r;
    char **owned;
    nsed_err e = {0};

    ck_assert_int_eq(stage_plan(st, wf, &l), 0);
    r = calloc(l.n ? l.n : 1, sizeof *r);
    owned = calloc(l.n ? l.n : 1, sizeof *owned);
    for (size_t i = 0; i < l.n; i++) {
        const stage_request *q = &l.items[i];
        buf b;

        buf_init(&b, (size_t)1 << 26);
        r[i].kind = q->kind;
        r[i].seat = q->seat;
        r[i].round = q->round;
        r[i].ok = true;
        if (q->kind == STAGE_KIND_PROPOSE) {
            ck_assert_int_eq(buf_printf(&b, "%s\nSo \\boxed{%d}",
                                        q->messages[1].content,
                                        q->seat == 0 ? 42 : 40 + (int)q->seat),
                             0);
        } else {
            const state_round *rd = st->cur;

            ck_assert_int_eq(buf_adds(&b, "{\"evaluations\":["), 0);
            for (size_t j = 0; j < rd->ncand; j++) {
                char l8[TEXT_LABEL_MAX];
                const char *ans = rd->proposals[rd->cands[j].seat].answer;

                if (!mask_shows(rd, q->seat, j, false))
                    continue;
                text_label(j, l8);
                ck_assert_int_eq(
                    buf_printf(&b,
                               "%s{\"candidate\":\"%s\",\"weight\":%d,"
                               "\"critique\":\"",
                               b.ptr[b.len - 1] == '[' ? "" : ",", l8,
                               ans && !strcmp(ans, "42") ? 80 : -60),
                    0);
                for (int k = 0; k < 200; k++)
                    ck_assert_int_eq(buf_adds(&b, "this is a long critique "),
                                     0);
                ck_assert_int_eq(buf_adds(&b, "\"}"), 0);
            }
            ck_assert_int_eq(buf_adds(&b, "]}"), 0);
        }
        owned[i] = buf_detach(&b, NULL);
        r[i].content = owned[i];
    }
    ck_assert_msg(stage_reduce(st, wf, NULL, r, l.n, &e) == 0, "%s", e.msg);
    for (size_t i = 0; i < l.n; i++)
        free(owned[i]);
    free(owned);
    free(r);
    stage_requests_release(&l);
}

START_TEST(prompt_bounded_over_50_rounds)
{
    workflow *wf = load_wf("rounds: {min: 50, max: 50}\n");
    state *st = new_state(wf);
    size_t longest = 0, bound;
    int rounds = 0;

    /* template + question + the four capped blocks and their markers */
    bound = strlen(wf->prompts.revise) + strlen(st->question) +
            (size_t)(wf->rounds.max_winner_chars + wf->rounds.max_own_chars +
                     wf->rounds.max_critique_chars +
                     wf->rounds.max_table_chars) +
            4 * 2 * 64 + 32;
    while (st->stage != STATE_STAGE_FINISHED) {
        if (st->stage == STATE_STAGE_PROPOSE && st->round > 0) {
            for (size_t s = 0; s < 3; s++) {
                buf u;

                buf_init(&u, STAGE_PROMPT_MAX);
                ck_assert_int_eq(propose_render(st, wf, s, &u), 0);
                if (u.len > longest)
                    longest = u.len;
                buf_release(&u);
            }
            rounds++;
        }
        answer_stage(st, wf);
        /* only the current and the previous round are held */
        ck_assert(!st->prev || st->prev->index == st->round - 1);
    }
    ck_assert_int_eq(rounds, 49);
    ck_assert_int_eq(state_round_get(st, 49)->decision.reason,
                     STATE_STOP_MAX_ROUNDS);
    ck_assert_uint_le(longest, bound);
    /* and it really was under pressure: the echo fills the caps */
    ck_assert_uint_gt(longest, (size_t)wf->rounds.max_winner_chars);
    ck_assert_str_eq(st->final_answer, "42");
    ck_assert_int_eq(st->status, STATE_STATUS_DONE);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* The runner's fit on the exploration slice (stage_ctx.fit): a good fit
 * gives p_g = U(0), k and beta directly (the paper's example, T_opt =
 * W(45)/0.6 = 4.64: stop at round 5); a poor one never stops on the rule;
 * a fitted beta <= 0 is no peak; a slice question runs to rounds.max. */
START_TEST(fatigue_fit_on_the_slice)
{
    workflow *wf = load_wf("rounds: {max: 20, stop: {efficiency_fatigue: "
                           "{explore: 0}}}\n");
    stage_ctx ctx = stage_ctx_none();
    state *st = new_state(wf);
    int r;

    ctx.fit = STAGE_FIT_GOOD;
    ctx.fit_p_g = 0.5;
    ctx.fit_k = 0.6;
    ctx.fit_beta = 0.002;
    ctx.fit_p_v = 0.2; /* below p_g: it does not matter with k fitted */
    for (r = 0; r < 5; r++)
        ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1),
                     STATE_STOP_EFFICIENCY_FATIGUE);
    ck_assert_int_eq(state_round_get(st, 5)->decision.target, 5);
    ck_assert(state_round_get(st, 5)->decision.t_opt > 4.6 &&
              state_round_get(st, 5)->decision.t_opt < 4.7);
    state_free(st);

    ctx.fit_beta = -0.001; /* no peak */
    st = new_state(wf);
    for (r = 0; r < 19; r++)
        ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1), STATE_STOP_MAX_ROUNDS);
    state_free(st);

    ctx.fit = STAGE_FIT_POOR;
    ctx.fit_beta = 0.002;
    st = new_state(wf);
    for (r = 0; r < 19; r++)
        ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1), STATE_STOP_NONE);
    ck_assert_int_eq(state_round_get(st, 18)->decision.target, -1);
    ck_assert_double_eq(state_round_get(st, 18)->decision.t_opt, -1);
    ck_assert_int_eq(step(st, wf, &ctx, all42, 0, 0.1), STATE_STOP_MAX_ROUNDS);
    state_free(st);
    workflow_free(wf);

    /* the whole slice: stable_answer and consensus_margin do not stop it */
    wf = load_wf("rounds: {min: 1, max: 4, stop: {stable_answer: 1, "
                 "consensus_margin: 0.1, efficiency_fatigue: {explore: 1, "
                 "p_g: 0.8, p_v: 0.6, lambda: 1, beta: 0.1}}}\n");
    st = new_state(wf);
    ck_assert(converge_explores(st, wf));
    for (r = 0; r < 3; r++)
        ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.9), STATE_STOP_NONE);
    ck_assert_int_eq(step(st, wf, NULL, all42, 0, 0.9), STATE_STOP_MAX_ROUNDS);
    state_free(st);
    workflow_free(wf);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("converge");
    TCase *t;

    t = tcase_create("model");
    tcase_add_test(t, lambert_w_known_values);
    tcase_add_test(t, fatigue_optimum_matches_bisection);
    suite_add_tcase(s, t);
    t = tcase_create("rules");
    tcase_add_test(t, max_rounds_always_stops);
    tcase_add_test(t, min_rounds_hold_back_other_rules);
    tcase_add_test(t, consensus_margin_threshold);
    tcase_add_test(t, stable_answer_streak);
    tcase_add_test(t, efficiency_fatigue_stops_at_optimum);
    tcase_add_test(t, fatigue_parameter_sources);
    tcase_add_test(t, fatigue_fit_on_the_slice);
    tcase_add_test(t, all_failed_stops_even_before_min);
    tcase_add_test(t, no_winner_ever_falls_back_to_majority);
    suite_add_tcase(s, t);
    t = tcase_create("forget_gate");
    tcase_add_test(t, carry_caps_and_fences);
    tcase_add_test(t, carry_subsets);
    tcase_add_test(t, prompt_bounded_over_50_rounds);
    suite_add_tcase(s, t);
    return s;
}
