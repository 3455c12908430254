/* aggregate.h -- stage 4: count the votes. Makes no model calls.
 *
 * Input: for each evaluator i that produced weights (STATE_EVAL_OK) and
 * each candidate j, a weight w_ij in [-100, 100] or nothing (not shown,
 * not scored, or dropped). Schemes (scoring.scheme):
 *
 *   quadratic (default, signed QV)
 *       f_ij = w_ij / sum_k |w_ik|   (0 when the sum is 0)
 *       q_ij = sign(f_ij) * sqrt(|f_ij|)
 *       S_j  = sum_i r_i * q_ij
 *   quadratic_credits (unsigned 100-credit QV, the paper's first version)
 *       P_i  = sum_k max(w_ik, 0), the credits evaluator i asks to spend
 *       c_ij = max(w_ij, 0)                 when P_i <= 100 (kept as given)
 *       c_ij = 100 * max(w_ij, 0) / P_i     when P_i > 100 (scaled to 100)
 *       S_j  = sum_i r_i * sqrt(c_ij)
 *   mean
 *       S_j  = sum_i r_i * w_ij / sum_i r_i   over evaluators that scored j
 *   borda
 *       each evaluator ranks the n candidates it scored by weight; the
 *       best gets n-1 points, the worst 0, tied weights share the average
 *       of the points they span; S_j = sum_i r_i * points_ij
 *
 * r_i is the evaluator's reliability weight (stage_ctx.reliability of its
 * model) when scoring.reliability_weighting is on, else 1.
 *
 * An evaluator every weight of which is 0 judged nothing: it counts as an
 * abstention, not an evaluation -- it adds to no candidate's score, net
 * support, evaluator count, minimum or variance, so a candidate only it
 * saw counts as scored by nobody and cannot win; aggregate_run counts it
 * in agg.abstained, not agg.evaluators.
 *
 * Per candidate: S_j, net support (evaluators with w > 0 minus those with
 * w < 0), the number of evaluators that scored it, the minimum peer score
 * (lowest w received) and the population variance of the w received.
 *
 * Winner: among candidates that at least one evaluator scored, the highest
 * S_j; scores within 1e-9 * max(1, |S|) of each other tie. A tie is broken
 * by scoring.tie_break in order -- higher minimum peer score, lower
 * variance (same tolerance), the seeded order (lower label, i.e. earlier
 * in the anonymizer's permutation) -- the seeded order deciding last in
 * any case. A candidate nobody scored never wins, whatever its score (it
 * has none). When no candidate was scored at all the round has no winner
 * (winner -1, conviction 0, decided_by none): no consensus this round; see
 * converge.h for what the question's final answer is then.
 * Conviction = S_win / sum_j |S_j| (0 when the sum is 0).
 */
#ifndef NSED_STAGES_AGGREGATE_H
#define NSED_STAGES_AGGREGATE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/stage_ctx.h"
#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>

/* The vote matrix, row-major: entry i * ncand + j is evaluator i's weight
 * for candidate j, counted only where present[i * ncand + j]. */
typedef struct aggregate_input {
    enum workflow_scheme scheme;
    size_t nevaluators;
    size_t ncand;
    const int *weights;
    const bool *present;
    const double *reliability; /* nevaluators factors, or NULL for 1 */
    const enum workflow_tie_break *tie_break; /* order of tie breakers */
    size_t ntie_break;
} aggregate_input;

typedef struct aggregate_outcome {
    long winner;        /* candidate index or -1 */
    double conviction;
    enum state_decider decided_by;
} aggregate_outcome;

/* Score every candidate (scores[0..ncand)) and pick the winner. Returns 0,
 * or NSED_ENOMEM. */
NSED_MUST_CHECK int aggregate_compute(const aggregate_input *in,
                                      state_score *scores,
                                      aggregate_outcome *out);

/* Run the stage on st (stage must be STATE_STAGE_AGGREGATE): build the
 * matrix from the round's evaluations, fill cur->agg, update the
 * question's final answer when there is a winner, and move to
 * STATE_STAGE_CONVERGE. ctx may be NULL. Returns 0, NSED_EINTERNAL for a
 * wrong stage (a bug in the caller), NSED_ENOMEM; st unchanged on
 * failure. */
NSED_MUST_CHECK int aggregate_run(state *st, const workflow *wf,
                                  const stage_ctx *ctx, nsed_err *err);

#endif
