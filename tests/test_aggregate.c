/* Tests for vote aggregation (stages/aggregate.c): every scheme on a
 * hand-computed example, the tie breakers one level at a time, candidates
 * nobody scored, all-zero weights, reliability weighting, and the stage
 * run on a real state (diagonal mask, abstentions, self votes). */
#include "stages/aggregate.h"
#include "stages/evaluate.h"
#include "stages/mask.h"
#include "stages/stage.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS 1e-12

static const enum workflow_tie_break default_ties[] = {
    WORKFLOW_TIE_MIN_PEER_SCORE, WORKFLOW_TIE_VARIANCE, WORKFLOW_TIE_SEEDED};

/* The 3x3 example. Candidates A, B, C; evaluator i wrote candidate i, so
 * the diagonal is masked.
 *
 *          A     B     C
 *   E0     -    60   -20
 *   E1    30     -    90
 *   E2   -50    50     -
 */
static const int ex_w[9] = {0, 60, -20, 30, 0, 90, -50, 50, 0};
static const bool ex_p[9] = {false, true, true, true, false, true,
                             true, true, false};

static aggregate_outcome run(enum workflow_scheme scheme, size_t ne,
                             size_t nc, const int *w, const bool *p,
                             const double *rel, state_score *scores)
{
    aggregate_input in = {scheme, ne, nc, w, p, rel, default_ties, 3};
    aggregate_outcome oc;

    ck_assert_int_eq(aggregate_compute(&in, scores, &oc), 0);
    return oc;
}

START_TEST(quadratic_by_hand)
{
    /* E0: sum |w| = 80:  f_B = 60/80 = 0.75 -> q = +sqrt(0.75)
     *                    f_C = -20/80 = -0.25 -> q = -0.5
     * E1: sum = 120:     f_A = 0.25 -> +0.5;  f_C = 0.75 -> +sqrt(0.75)
     * E2: sum = 100:     f_A = -0.5 -> -sqrt(0.5); f_B = 0.5 -> +sqrt(0.5)
     * S_A = 0.5 - sqrt(0.5)        = -0.2071068
     * S_B = sqrt(0.75) + sqrt(0.5) =  1.5731322
     * S_C = -0.5 + sqrt(0.75)      =  0.3660254
     * winner B, conviction = S_B / (|S_A| + |S_B| + |S_C|) = 0.7329...
     * net support: A +1-1 = 0, B +2, C -1+1 = 0
     * min peer: A -50, B 50, C -20
     * variance: A {30,-50} mean -10 -> 1600; B {60,50} -> 25;
     *           C {-20,90} mean 35 -> 3025 */
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_QUADRATIC, 3, 3, ex_w, ex_p,
                               NULL, s);
    double sa = 0.5 - sqrt(0.5), sb = sqrt(0.75) + sqrt(0.5),
           sc = -0.5 + sqrt(0.75);

    ck_assert_double_eq_tol(s[0].score, sa, EPS);
    ck_assert_double_eq_tol(s[1].score, sb, EPS);
    ck_assert_double_eq_tol(s[2].score, sc, EPS);
    ck_assert_double_eq_tol(s[1].score, 1.5731322, 1e-7);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_SCORE);
    ck_assert_double_eq_tol(oc.conviction, sb / (fabs(sa) + sb + fabs(sc)),
                            EPS);
    ck_assert_int_eq(s[0].net_support, 0);
    ck_assert_int_eq(s[1].net_support, 2);
    ck_assert_int_eq(s[2].net_support, 0);
    ck_assert_int_eq(s[0].min_peer, -50);
    ck_assert_int_eq(s[1].min_peer, 50);
    ck_assert_int_eq(s[2].min_peer, -20);
    ck_assert_double_eq_tol(s[0].variance, 1600, EPS);
    ck_assert_double_eq_tol(s[1].variance, 25, EPS);
    ck_assert_double_eq_tol(s[2].variance, 3025, EPS);
    for (int j = 0; j < 3; j++)
        ck_assert_uint_eq(s[j].nevaluators, 2);
}
END_TEST

START_TEST(quadratic_credits_by_hand)
{
    /* Negative weights count 0; an evaluator's positive weights are its
     * credits, scaled down to 100 only when they pass 100; votes =
     * sqrt(credits).
     * E0: positives {B 60}, sum 60 <= 100 -> B 60 credits -> sqrt(60)
     * E1: positives {A 30, C 90} sum 120 > 100 -> A 25 -> 5, C 75
     * E2: positives {B 50}, sum 50 -> B 50 -> sqrt(50)
     * S_A = 5, S_B = sqrt(60) + sqrt(50) = 14.8170..., S_C = sqrt(75) */
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_QUADRATIC_CREDITS, 3, 3, ex_w,
                               ex_p, NULL, s);
    const double sb = sqrt(60) + sqrt(50);

    ck_assert_double_eq_tol(s[0].score, 5, EPS);
    ck_assert_double_eq_tol(s[1].score, sb, EPS);
    ck_assert_double_eq_tol(s[1].score, 14.8170345, 1e-7);
    ck_assert_double_eq_tol(s[2].score, sqrt(75), EPS);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_double_eq_tol(oc.conviction, sb / (5 + sb + sqrt(75)), EPS);
}
END_TEST

START_TEST(mean_by_hand)
{
    /* A (30 - 50)/2 = -10, B (60 + 50)/2 = 55, C (-20 + 90)/2 = 35 */
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_MEAN, 3, 3, ex_w, ex_p, NULL,
                               s);

    ck_assert_double_eq_tol(s[0].score, -10, EPS);
    ck_assert_double_eq_tol(s[1].score, 55, EPS);
    ck_assert_double_eq_tol(s[2].score, 35, EPS);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_double_eq_tol(oc.conviction, 55.0 / 100.0, EPS);
}
END_TEST

START_TEST(borda_by_hand)
{
    /* E0 ranks B > C: B 1, C 0.  E1: C > A: C 1, A 0.  E2: B > A: B 1.
     * S_A = 0, S_B = 2, S_C = 1. */
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_BORDA, 3, 3, ex_w, ex_p, NULL,
                               s);
    /* one evaluator, three candidates 50, 50, -10: the tied pair shares
     * (2 + 1) / 2 = 1.5 each, the last gets 0 */
    const int w2[3] = {50, 50, -10};
    const bool p2[3] = {true, true, true};

    ck_assert_double_eq_tol(s[0].score, 0, EPS);
    ck_assert_double_eq_tol(s[1].score, 2, EPS);
    ck_assert_double_eq_tol(s[2].score, 1, EPS);
    ck_assert_int_eq(oc.winner, 1);
    oc = run(WORKFLOW_SCHEME_BORDA, 1, 3, w2, p2, NULL, s);
    ck_assert_double_eq_tol(s[0].score, 1.5, EPS);
    ck_assert_double_eq_tol(s[1].score, 1.5, EPS);
    ck_assert_double_eq_tol(s[2].score, 0, EPS);
    /* equal scores, equal min (50, 50), equal variance: seeded order */
    ck_assert_int_eq(oc.winner, 0);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_SEEDED);
}
END_TEST

START_TEST(reliability_scales_evaluators)
{
    /* E0 counts twice: S_A = 0.5 - sqrt(0.5) (E0 did not score A),
     * S_B = 2 sqrt(0.75) + sqrt(0.5), S_C = 2 (-0.5) + sqrt(0.75) */
    const double rel[3] = {2, 1, 1};
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_QUADRATIC, 3, 3, ex_w, ex_p,
                               rel, s);

    ck_assert_double_eq_tol(s[0].score, 0.5 - sqrt(0.5), EPS);
    ck_assert_double_eq_tol(s[1].score, 2 * sqrt(0.75) + sqrt(0.5), EPS);
    ck_assert_double_eq_tol(s[2].score, -1 + sqrt(0.75), EPS);
    ck_assert_int_eq(oc.winner, 1);
    /* mean is a weighted mean: C = (2 * -20 + 90) / 3 */
    run(WORKFLOW_SCHEME_MEAN, 3, 3, ex_w, ex_p, rel, s);
    ck_assert_double_eq_tol(s[2].score, 50.0 / 3.0, EPS);
}
END_TEST

/* Two candidates under the mean scheme, weights given per column. */
static aggregate_outcome pair(const int *a, size_t na, const int *b,
                              size_t nb, const enum workflow_tie_break *ties,
                              state_score *s)
{
    size_t ne = na > nb ? na : nb;
    int w[16] = {0};
    bool p[16] = {false};
    aggregate_input in = {WORKFLOW_SCHEME_MEAN, ne, 2, w, p, NULL, ties, 3};
    aggregate_outcome oc;

    for (size_t i = 0; i < na; i++) {
        w[i * 2] = a[i];
        p[i * 2] = true;
    }
    for (size_t i = 0; i < nb; i++) {
        w[i * 2 + 1] = b[i];
        p[i * 2 + 1] = true;
    }
    ck_assert_int_eq(aggregate_compute(&in, s, &oc), 0);
    return oc;
}

START_TEST(tie_min_peer_decides)
{
    /* both mean 50; A's lowest weight 0, B's 50: B wins on min peer */
    const int a[] = {100, 0}, b[] = {50, 50};
    state_score s[2];
    aggregate_outcome oc = pair(a, 2, b, 2, default_ties, s);

    ck_assert_double_eq_tol(s[0].score, s[1].score, EPS);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_MIN_PEER);
}
END_TEST

START_TEST(tie_variance_decides)
{
    /* both mean 50 and min 0; variance A (2500+100+1600)/3 = 1400,
     * B (625+2500+625)/3 = 1250: B wins on variance (B's 0 is not beside
     * A's, as an evaluator whose weights are all 0 abstains) */
    const int a[] = {0, 60, 90}, b[] = {75, 0, 75};
    state_score s[2];
    aggregate_outcome oc = pair(a, 3, b, 3, default_ties, s);

    ck_assert_double_eq_tol(s[0].variance, 1400, EPS);
    ck_assert_double_eq_tol(s[1].variance, 1250, EPS);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_VARIANCE);
}
END_TEST

START_TEST(tie_seeded_decides)
{
    const int a[] = {20, 80}, b[] = {80, 20};
    state_score s[2];
    aggregate_outcome oc = pair(a, 2, b, 2, default_ties, s);

    ck_assert_int_eq(oc.winner, 0);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_SEEDED);
}
END_TEST

START_TEST(tie_break_order_is_the_workflows)
{
    /* A = {35, 50, 50, 50, 50, 65}: mean 50, min 35, variance 75
     * B = {40, 60}:                 mean 50, min 40, variance 100
     * min peer prefers B, variance prefers A, seeded prefers A. */
    const int a[] = {35, 50, 50, 50, 50, 65}, b[] = {40, 60};
    const enum workflow_tie_break var_first[] = {
        WORKFLOW_TIE_VARIANCE, WORKFLOW_TIE_MIN_PEER_SCORE,
        WORKFLOW_TIE_SEEDED};
    const enum workflow_tie_break seeded_first[] = {
        WORKFLOW_TIE_SEEDED, WORKFLOW_TIE_MIN_PEER_SCORE,
        WORKFLOW_TIE_VARIANCE};
    state_score s[2];
    aggregate_outcome oc;

    oc = pair(a, 6, b, 2, default_ties, s);
    ck_assert_double_eq_tol(s[0].variance, 75, EPS);
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_MIN_PEER);
    oc = pair(a, 6, b, 2, var_first, s);
    ck_assert_int_eq(oc.winner, 0);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_VARIANCE);
    oc = pair(a, 6, b, 2, seeded_first, s);
    ck_assert_int_eq(oc.winner, 0);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_SEEDED);
}
END_TEST

START_TEST(unevaluated_candidate_cannot_win)
{
    /* A got no weight at all (S_A = 0); B and C only negative ones. The
     * highest score is A's 0, but A has no real evaluation. */
    const int w[6] = {0, -20, -40, 0, -30, -10};
    const bool p[6] = {false, true, true, false, true, true};
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_MEAN, 2, 3, w, p, NULL, s);

    ck_assert_uint_eq(s[0].nevaluators, 0);
    ck_assert_double_eq(s[0].score, 0);
    ck_assert_double_eq_tol(s[1].score, -25, EPS);
    ck_assert_double_eq_tol(s[2].score, -25, EPS);
    ck_assert_int_ne(oc.winner, 0);
    /* B and C tie at -25; min peer: B -30, C -40 -> B */
    ck_assert_int_eq(oc.winner, 1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_MIN_PEER);
    ck_assert(oc.conviction < 0);
    /* nobody scored anything: no winner, no conviction */
    {
        const bool none[6] = {false};

        oc = run(WORKFLOW_SCHEME_QUADRATIC, 2, 3, w, none, NULL, s);
        ck_assert_int_eq(oc.winner, -1);
        ck_assert_int_eq(oc.decided_by, STATE_DECIDER_NONE);
        ck_assert_double_eq(oc.conviction, 0);
        oc = run(WORKFLOW_SCHEME_QUADRATIC, 0, 3, w, none, NULL, s);
        ck_assert_int_eq(oc.winner, -1);
    }
}
END_TEST

START_TEST(all_zero_weights)
{
    /* an evaluator whose weights are all 0 judged nothing: it abstains, so
     * with every evaluator all-zero nobody scored anything -- no winner,
     * conviction 0, and no candidate counts an evaluator */
    const int w[4] = {0, 0, 0, 0};
    const bool p[4] = {true, true, true, true};
    state_score s[2];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_QUADRATIC, 2, 2, w, p, NULL, s);

    ck_assert_double_eq(s[0].score, 0);
    ck_assert_double_eq(s[1].score, 0);
    ck_assert_int_eq(oc.winner, -1);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_NONE);
    ck_assert_double_eq(oc.conviction, 0);
    ck_assert_int_eq(s[0].net_support, 0);
    ck_assert_uint_eq(s[0].nevaluators, 0);
    ck_assert_uint_eq(s[1].nevaluators, 0);
    oc = run(WORKFLOW_SCHEME_QUADRATIC_CREDITS, 2, 2, w, p, NULL, s);
    ck_assert_double_eq(s[0].score, 0);
    ck_assert_int_eq(oc.winner, -1);
}
END_TEST

/* ---- the stage on a real state ------------------------------------------ */

static const char base_yaml[] =
    "name: t\nversion: 1\nseed: 7\n"
    "models:\n"
    "  - {id: m0, endpoint: 'http://127.0.0.1:9/v1', model: served-m0, "
    "family: f0}\n"
    "  - {id: m1, endpoint: 'http://127.0.0.1:9/v1', model: served-m1, "
    "family: f1}\n"
    "  - {id: m2, endpoint: 'http://127.0.0.1:9/v1', model: served-m2, "
    "family: f2}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [m0, m1, m2]}\n";

static workflow *load_wf(const char *extra)
{
    return tu_load_workflow(base_yaml, extra);
}

static state *new_state(const workflow *wf, size_t nseats)
{
    state_seat_spec seats[8] = {{0}};
    state_question q = {"q1", "What is 6 * 7?", "42", NULL, 0};
    state *st = NULL;
    nsed_err e = {0};

    for (size_t i = 0; i < nseats; i++) {
        seats[i].model = i % wf->nmodels;
        seats[i].role = "solver";
        seats[i].persona = "";
    }
    ck_assert_int_eq(state_new(wf, &q, seats, nseats, &st, &e), 0);
    return st;
}

/* Every seat proposes text[i] (NULL: SKIP), then anonymize runs. */
static void propose_and_anonymize(state *st, const workflow *wf,
                                  const char *const *text)
{
    stage_response r[8];
    nsed_err e = {0};

    memset(r, 0, sizeof r);
    for (size_t i = 0; i < st->nseats; i++) {
        r[i].kind = STAGE_KIND_PROPOSE;
        r[i].seat = i;
        r[i].round = st->round;
        r[i].ok = true;
        r[i].content = text[i] ? text[i] : "SKIP";
    }
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, st->nseats, &e), 0);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert_int_eq(st->stage, STATE_STAGE_EVALUATE);
}

/* The label of the candidate seat wrote. */
static void label_of(const state *st, size_t seat, char out[TEXT_LABEL_MAX])
{
    long c = mask_own_candidate(st->cur, seat);

    ck_assert_int_ge(c, 0);
    text_label((size_t)c, out);
}

/* {"evaluations":[...]} with weights by author seat; INT32_MIN skips. */
static char *eval_reply(const state *st, const int *w_by_seat)
{
    static char out[2048];
    size_t n = 0;

    n += (size_t)snprintf(out + n, sizeof out - n, "{\"evaluations\":[");
    for (size_t s = 0; s < st->nseats; s++) {
        char l[TEXT_LABEL_MAX];

        if (w_by_seat[s] == INT32_MIN)
            continue;
        label_of(st, s, l);
        n += (size_t)snprintf(out + n, sizeof out - n,
                              "%s{\"candidate\":\"%s\",\"weight\":%d,"
                              "\"critique\":\"c%zu\"}",
                              out[n - 1] == '[' ? "" : ",", l, w_by_seat[s],
                              s);
    }
    snprintf(out + n, sizeof out - n, "]}");
    return out;
}

#define NO INT32_MIN

START_TEST(stage_masks_diagonal_and_counts_abstentions)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf, 3);
    const char *text[] = {"A says \\boxed{1}", "B says \\boxed{42}",
                          "C says \\boxed{42}"};
    /* seat 0 scores itself 100 anyway: dropped and counted */
    const int w0[] = {100, 60, -20};
    stage_response r[3];
    nsed_err e = {0};
    char *rep0, *rep1;
    long b, c;

    propose_and_anonymize(st, wf, text);
    memset(r, 0, sizeof r);
    rep0 = strdup(eval_reply(st, w0));
    rep1 = strdup("no JSON here");
    for (int i = 0; i < 3; i++) {
        r[i].kind = STAGE_KIND_EVALUATE;
        r[i].seat = (size_t)i;
        r[i].round = 0;
        r[i].ok = true;
    }
    r[0].content = rep0;
    r[1].content = rep1;  /* seat 1: unusable, then unusable again */
    {
        const int w2[] = {-50, 50, NO};

        r[2].content = eval_reply(st, w2);
        r[2].content = strdup(r[2].content);
    }
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_int_eq(st->cur->evals[0].status, STATE_EVAL_OK);
    ck_assert_uint_eq(st->cur->evals[0].dropped_self, 1);
    ck_assert_uint_eq(st->cur->evals[0].nweights, 2);
    ck_assert_int_eq(st->cur->evals[1].status, STATE_EVAL_REPAIR);
    ck_assert_int_eq(st->stage, STATE_STAGE_EVALUATE);
    r[1].kind = STAGE_KIND_REPAIR;
    ck_assert_int_eq(stage_reduce(st, wf, NULL, &r[1], 1, &e), 0);
    ck_assert_int_eq(st->cur->evals[1].status, STATE_EVAL_ABSTAINED);
    ck_assert_int_eq(st->stage, STATE_STAGE_AGGREGATE);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert_int_eq(st->stage, STATE_STAGE_CONVERGE);
    /* E0: B 60, C -20 (its 100 for itself gone); E2: A -50, B 50.
     * S_A = -sqrt(.5) (E2 alone: -50/100), S_B = sqrt(.75) + sqrt(.5),
     * S_C = -0.5 (E0 alone: -20/80) */
    b = mask_own_candidate(st->cur, 1);
    c = mask_own_candidate(st->cur, 2);
    ck_assert_int_eq(st->cur->agg.winner, b);
    ck_assert_double_eq_tol(st->cur->agg.scores[b].score,
                            sqrt(0.75) + sqrt(0.5), EPS);
    ck_assert_double_eq_tol(st->cur->agg.scores[c].score, -0.5, EPS);
    ck_assert_uint_eq(st->cur->agg.evaluators, 2);
    ck_assert_uint_eq(st->cur->agg.abstained, 1);
    ck_assert(!st->cur->agg.self_votes);
    /* the final answer follows the winner */
    ck_assert_str_eq(st->final_answer, "42");
    ck_assert_int_eq(st->final_seat, 1);
    ck_assert_int_eq(st->final_source, STATE_FINAL_WINNER);
    free(rep0);
    free(rep1);
    free((char *)r[2].content);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(stage_self_votes_when_allowed)
{
    workflow *wf = load_wf("scoring: {allow_self_votes: true}\n");
    state *st = new_state(wf, 2);
    const char *text[] = {"\\boxed{1}", "\\boxed{2}"};
    const int w0[] = {100, -100}, w1[] = {-100, 100};
    stage_response r[2];
    nsed_err e = {0};
    char *a0, *a1;

    propose_and_anonymize(st, wf, text);
    /* with self votes every seat sees every candidate */
    ck_assert(mask_shows(st->cur, 0, (size_t)mask_own_candidate(
                                             st->cur, 0), true));
    memset(r, 0, sizeof r);
    a0 = strdup(eval_reply(st, w0));
    a1 = strdup(eval_reply(st, w1));
    for (int i = 0; i < 2; i++) {
        r[i].kind = STAGE_KIND_EVALUATE;
        r[i].seat = (size_t)i;
        r[i].ok = true;
    }
    r[0].content = a0;
    r[1].content = a1;
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 2, &e), 0);
    ck_assert_uint_eq(st->cur->evals[0].dropped_self, 0);
    ck_assert_uint_eq(st->cur->evals[0].nweights, 2);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert(st->cur->agg.self_votes);
    /* each candidate: +sqrt(.5) from its author, -sqrt(.5) from the other */
    ck_assert_double_eq_tol(st->cur->agg.scores[0].score, 0, EPS);
    ck_assert_uint_eq(st->cur->agg.scores[0].nevaluators, 2);
    free(a0);
    free(a1);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(stage_reliability_from_ctx)
{
    workflow *wf = load_wf("scoring: {reliability_weighting: true}\n");
    state *st = new_state(wf, 3);
    const char *text[] = {"\\boxed{1}", "\\boxed{2}", "\\boxed{3}"};
    /* seats 0 and 1 back opposite candidates; model m1 counts 3x */
    const int w0[] = {NO, -100, 100}, w1[] = {100, NO, -100},
              w2[] = {100, -100, NO};
    const double rel[3] = {1, 3, 1};
    stage_ctx ctx = stage_ctx_none();
    stage_response r[3];
    nsed_err e = {0};
    char *a[3];

    ctx.reliability = rel;
    ctx.nreliability = 3;
    propose_and_anonymize(st, wf, text);
    memset(r, 0, sizeof r);
    a[0] = strdup(eval_reply(st, w0));
    a[1] = strdup(eval_reply(st, w1));
    a[2] = strdup(eval_reply(st, w2));
    for (int i = 0; i < 3; i++) {
        r[i].kind = STAGE_KIND_EVALUATE;
        r[i].seat = (size_t)i;
        r[i].ok = true;
        r[i].content = a[i];
    }
    ck_assert_int_eq(stage_reduce(st, wf, &ctx, r, 3, &e), 0);
    ck_assert_int_eq(stage_reduce(st, wf, &ctx, NULL, 0, &e), 0);
    /* seat 0's candidate: E1 +sqrt(.5)*3, E2 +sqrt(.5) -> 4 sqrt(.5) */
    ck_assert(st->cur->agg.reliability);
    ck_assert_double_eq_tol(
        st->cur->agg.scores[mask_own_candidate(st->cur, 0)].score,
        4 * sqrt(0.5), EPS);
    ck_assert_int_eq(st->cur->agg.winner, mask_own_candidate(st->cur, 0));
    for (int i = 0; i < 3; i++)
        free(a[i]);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* ---- issue 12: the credit cap and all-zero evaluations ------------------ */

START_TEST(credits_rescale_only_above_100)
{
    /* One candidate column per evaluator row, 3 candidates.
     *   E0 {30, 20, -40}: positives sum 50 <= 100, kept:  sqrt(30), sqrt(20), 0
     *   E1 {70, 30, -90}: positives sum 100, kept as is:  sqrt(70), sqrt(30), 0
     *   E2 {80, 40,  0}:  sum 120 > 100, scaled by 100/120:
     *                      80 -> 66.666..., 40 -> 33.333...
     * S_A = sqrt(30) + sqrt(70) + sqrt(200/3) = 5.4772 + 8.3666 + 8.1650
     * S_B = sqrt(20) + sqrt(30) + sqrt(100/3) = 4.4721 + 5.4772 + 5.7735
     * S_C = 0 */
    const int w[9] = {30, 20, -40, 70, 30, -90, 80, 40, 0};
    const bool p[9] = {true, true, true, true, true, true, true, true, true};
    state_score s[3];
    aggregate_outcome oc;

    oc = run(WORKFLOW_SCHEME_QUADRATIC_CREDITS, 3, 3, w, p, NULL, s);
    ck_assert_double_eq_tol(s[0].score, sqrt(30) + sqrt(70) + sqrt(200.0 / 3),
                            EPS);
    ck_assert_double_eq_tol(s[0].score, 22.0088, 1e-4);
    ck_assert_double_eq_tol(s[1].score, sqrt(20) + sqrt(30) + sqrt(100.0 / 3),
                            EPS);
    ck_assert_double_eq_tol(s[1].score, 15.7228, 1e-4);
    ck_assert_double_eq(s[2].score, 0);
    ck_assert_int_eq(oc.winner, 0);
    /* one evaluator under the cap: the votes are sqrt of the raw weights,
     * not of weights blown up to 100 (old: sqrt(60) and sqrt(40)) */
    oc = run(WORKFLOW_SCHEME_QUADRATIC_CREDITS, 1, 3, w, p, NULL, s);
    ck_assert_double_eq_tol(s[0].score, sqrt(30), EPS);
    ck_assert_double_eq_tol(s[1].score, sqrt(20), EPS);
}
END_TEST

START_TEST(all_zero_evaluator_abstains)
{
    /* Candidates A, B, C. E0 was shown only A and gave it 0; E1 was shown
     * B and C: B -40, C -10. A was seen only by the all-zero E0: it counts
     * as scored by nobody, so its S = 0 (the highest) cannot win.
     * E1: sum |w| = 50; f_B = -0.8 -> -sqrt(0.8); f_C = -0.2 -> -sqrt(0.2)
     * winner C with S_C = -sqrt(0.2) = -0.4472 (before: A with S = 0) */
    const int w[6] = {0, 0, 0, 0, -40, -10};
    const bool p[6] = {true, false, false, false, true, true};
    state_score s[3];
    aggregate_outcome oc = run(WORKFLOW_SCHEME_QUADRATIC, 2, 3, w, p, NULL, s);

    ck_assert_uint_eq(s[0].nevaluators, 0);
    ck_assert_uint_eq(s[1].nevaluators, 1);
    ck_assert_uint_eq(s[2].nevaluators, 1);
    ck_assert_double_eq(s[0].score, 0);
    ck_assert_double_eq_tol(s[1].score, -sqrt(0.8), EPS);
    ck_assert_double_eq_tol(s[2].score, -sqrt(0.2), EPS);
    ck_assert_int_eq(oc.winner, 2);
    ck_assert_int_eq(oc.decided_by, STATE_DECIDER_SCORE);
    /* the all-zero row adds nothing under mean and borda either: under mean
     * A would otherwise be a 0 beside B -40 and C -10 */
    oc = run(WORKFLOW_SCHEME_MEAN, 2, 3, w, p, NULL, s);
    ck_assert_int_eq(oc.winner, 2);
    ck_assert_uint_eq(s[0].nevaluators, 0);
}
END_TEST

START_TEST(stage_all_zero_evaluation_abstains)
{
    /* seat 0 gives both candidates it sees 0 (an abstention); by author,
     * seat 1 scores seat 0's candidate 30 and seat 2's 10; seat 2 scores
     * seat 0's 20 and seat 1's -50. Seat 1's candidate is then scored by
     * seat 2 only (-50), seat 2's by seat 1 only.
     * quadratic: E1: sum 40: f(s0) = .75 -> sqrt(.75), f(s2) = .25 -> .5
     *            E2: sum 70: f(s0) = 2/7 -> sqrt(2/7), f(s1) = -5/7
     * S(s0) = sqrt(.75) + sqrt(2/7), S(s1) = -sqrt(5/7), S(s2) = 0.5 */
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf, 3);
    const char *text[] = {"A says \\boxed{42}", "B says \\boxed{1}",
                          "C says \\boxed{2}"};
    const int w0[] = {NO, 0, 0}, w1[] = {30, NO, 10}, w2[] = {20, -50, NO};
    stage_response r[3];
    nsed_err e = {0};
    char *rep[3];
    long c0, c1, c2;

    propose_and_anonymize(st, wf, text);
    memset(r, 0, sizeof r);
    rep[0] = strdup(eval_reply(st, w0));
    rep[1] = strdup(eval_reply(st, w1));
    rep[2] = strdup(eval_reply(st, w2));
    for (int i = 0; i < 3; i++) {
        r[i].kind = STAGE_KIND_EVALUATE;
        r[i].seat = (size_t)i;
        r[i].round = 0;
        r[i].ok = true;
        r[i].content = rep[i];
    }
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_int_eq(st->cur->evals[0].status, STATE_EVAL_OK);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    c0 = mask_own_candidate(st->cur, 0);
    c1 = mask_own_candidate(st->cur, 1);
    c2 = mask_own_candidate(st->cur, 2);
    ck_assert_uint_eq(st->cur->agg.evaluators, 2);
    ck_assert_uint_eq(st->cur->agg.abstained, 1);
    ck_assert_uint_eq(st->cur->agg.scores[c1].nevaluators, 1);
    ck_assert_uint_eq(st->cur->agg.scores[c2].nevaluators, 1);
    ck_assert_uint_eq(st->cur->agg.scores[c0].nevaluators, 2);
    ck_assert_double_eq_tol(st->cur->agg.scores[c0].score,
                            sqrt(0.75) + sqrt(2.0 / 7), EPS);
    ck_assert_double_eq_tol(st->cur->agg.scores[c1].score, -sqrt(5.0 / 7), EPS);
    ck_assert_double_eq_tol(st->cur->agg.scores[c2].score, 0.5, EPS);
    /* net support: seat 0's zeros are not "0 votes" either way */
    ck_assert_int_eq(st->cur->agg.scores[c2].net_support, 1);
    ck_assert_int_eq(st->cur->agg.winner, c0);
    for (int i = 0; i < 3; i++)
        free(rep[i]);
    state_free(st);
    workflow_free(wf);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("aggregate");
    TCase *t;

    t = tcase_create("schemes");
    tcase_add_test(t, quadratic_by_hand);
    tcase_add_test(t, quadratic_credits_by_hand);
    tcase_add_test(t, mean_by_hand);
    tcase_add_test(t, borda_by_hand);
    tcase_add_test(t, reliability_scales_evaluators);
    suite_add_tcase(s, t);
    t = tcase_create("ties");
    tcase_add_test(t, tie_min_peer_decides);
    tcase_add_test(t, tie_variance_decides);
    tcase_add_test(t, tie_seeded_decides);
    tcase_add_test(t, tie_break_order_is_the_workflows);
    suite_add_tcase(s, t);
    t = tcase_create("degenerate");
    tcase_add_test(t, unevaluated_candidate_cannot_win);
    tcase_add_test(t, all_zero_weights);
    tcase_add_test(t, credits_rescale_only_above_100);
    tcase_add_test(t, all_zero_evaluator_abstains);
    suite_add_tcase(s, t);
    t = tcase_create("stage");
    tcase_add_test(t, stage_masks_diagonal_and_counts_abstentions);
    tcase_add_test(t, stage_self_votes_when_allowed);
    tcase_add_test(t, stage_reliability_from_ctx);
    tcase_add_test(t, stage_all_zero_evaluation_abstains);
    suite_add_tcase(s, t);
    return s;
}
