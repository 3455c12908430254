/* converge.h -- stage 5: decide whether to stop; if not, build the next
 * round's consensus state through the semantic forget gate. Makes no model
 * calls.
 *
 * Rounds are counted from 0; after round r, r+1 rounds are complete. The
 * rules, checked in this order after every round (the first that fires
 * gives the stop reason):
 *
 *   all_failed          the round has no candidate at all (every seat
 *                       skipped, failed or was lost): stop at once, even
 *                       before rounds.min -- there is nothing to revise.
 *   (rounds.min)        while r+1 < rounds.min no other rule may stop.
 *   consensus_margin    the round has a winner whose conviction is at
 *                       least rounds.consensus_margin.
 *   stable_answer       the winning extracted answer has been the same
 *                       (answer_same) for rounds.stable_answer rounds in a
 *                       row, this one included. A round without a winner,
 *                       or whose winner has no extractable answer, resets
 *                       the streak to 0.
 *   efficiency_fatigue  t = r (rounds completed after round 0) has reached
 *                       ceil(effort * T_opt), where
 *                         U(t)  = 1 - (1-p_g) e^(-k t) - beta t^2,
 *                         k     = lambda (p_v - p_g),
 *                         T_opt = W((1-p_g) k^2 / (2 beta)) / k
 *                       (the t where U'(t) = 0; W = Lambert W, principal
 *                       branch) and T_opt = 0 when p_v <= p_g (more rounds
 *                       cannot help: stop after round 0, or at rounds.min).
 *                       Each parameter comes from the workflow when it
 *                       fixes it, else from the caller's fit (stage_ctx),
 *                       else from a prior: p_g and p_v are the mean over
 *                       the seats of each model's prior (models[].prior,
 *                       else broker.priors), lambda CONVERGE_PRIOR_LAMBDA,
 *                       beta CONVERGE_PRIOR_BETA. With a fit
 *                       (ctx->fit == STAGE_FIT_GOOD) the open parameters
 *                       are the fitted curve's: p_g = U(0), its k (unless
 *                       the workflow fixes lambda: then k = lambda (p_v -
 *                       p_g)) and beta, which may be <= 0 (no peak: the
 *                       rule never fires); with STAGE_FIT_POOR the rule
 *                       does not fire (target and t_opt -1).
 *   exploration slice   a question of the slice (converge_in_slice) is
 *                       stopped only by all_failed and max_rounds: the
 *                       fit needs every round of it (runner_fit.c).
 *   max_rounds          r+1 == rounds.max (always stops).
 *
 * When the question stops: if no round ever had a winner, its final answer
 * is the majority vote (answer_majority, in label order) of the extracted
 * answers of the latest round that has any, marked
 * STATE_FINAL_MAJORITY. Status: DEGRADED when a seat was ever lost to
 * infrastructure, else INCOMPLETE when there is no final answer, else
 * DONE.
 *
 * The forget gate (rounds.carry, caps rounds.max_*_chars, counted in
 * bytes and cut on a UTF-8 boundary with a visible "[… truncated]"): for
 * the next round each seat gets, as fenced blocks (text.h) with one fence
 * nonce that occurs in none of their bodies:
 *   WINNING SOLUTION      the winner's anonymized text (winner carried and
 *                         the round had one);
 *   YOUR PREVIOUS ANSWER  the seat's own reply this round (when it had
 *                         one);
 *   CRITIQUES             what each reviewer said about the seat's
 *                         candidate, "Reviewer k (weight +73): ...", or a
 *                         line saying nobody scored it;
 *   SCORES                the score table by label with the seat's own row
 *                         and the winner marked.
 * Everything older is dropped from the prompt (it stays in the store), so
 * a revise prompt is bounded by the template, the question and the four
 * caps, whatever the number of rounds.
 */
#ifndef NSED_STAGES_CONVERGE_H
#define NSED_STAGES_CONVERGE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/stage_ctx.h"
#include "stages/state.h"

#define CONVERGE_PRIOR_LAMBDA 1.0
#define CONVERGE_PRIOR_BETA 0.005

typedef struct converge_fatigue {
    double p_g, p_v, lambda, beta; /* in use */
    double k;                      /* the rate in use */
    double effort;
    bool hold; /* STAGE_FIT_POOR: the rule does not fire */
} converge_fatigue;

/* True when question qid of a run seeded seed is in the exploration slice
 * of share explore in [0, 1]: with x the first 8 bytes of
 * SHA-256("nsed-explore\n" <seed in decimal> "\n" <qid>) read as a
 * big-endian integer, (x >> 11) / 2^53 < explore (docs/protocol.md). */
bool converge_in_slice(const char *qid, uint64_t seed, double explore);

/* The same for question st of workflow wf: wf's fatigue rule is on and
 * the question is in its slice. */
bool converge_explores(const state *st, const workflow *wf);

/* T_opt of the curve 1 - (1 - p_g) e^(-k t) - beta t^2: 0 when k <= 0 or
 * p_g >= 1, INFINITY when beta <= 0 (and k > 0), else
 * W((1 - p_g) k^2 / (2 beta)) / k. */
double converge_t_opt_k(double p_g, double k, double beta);

/* Lambert W, principal branch W0: the w >= -1 with w e^w = x. NaN for x
 * below -1/e or NaN; +inf for +inf. Halley iteration to about 1e-15. */
double converge_lambert_w(double x);

/* U(t) of the efficiency-fatigue model. */
double converge_utility(double t, double p_g, double p_v, double lambda,
                        double beta);

/* T_opt of the model (0 when p_v <= p_g, p_g >= 1, lambda or beta not
 * positive). */
double converge_t_opt(double p_g, double p_v, double lambda, double beta);

/* The parameters the efficiency-fatigue rule uses for st (see above);
 * ctx may be NULL. */
void converge_fatigue_params(const state *st, const workflow *wf,
                             const stage_ctx *ctx, converge_fatigue *out);

/* The decision for the current round (aggregated) without changing st.
 * Always succeeds. */
void converge_decide(const state *st, const workflow *wf,
                     const stage_ctx *ctx, state_decision *out);

/* The consensus state that round cur+1 would get (the forget gate).
 * Returns 0 and fills *out (release with state_carry_release) or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int converge_build_carry(const state *st, const workflow *wf,
                                         state_carry *out);

/* Run the stage (stage must be STATE_STAGE_CONVERGE): record the decision;
 * then either finish the question (final answer, status, stage finished)
 * or build the carry, free the round before the previous one and start
 * round r+1 at stage propose. Returns 0; NSED_EINTERNAL for a wrong stage;
 * NSED_ENOMEM. st unchanged on failure. */
NSED_MUST_CHECK int converge_run(state *st, const workflow *wf,
                                 const stage_ctx *ctx, nsed_err *err);

#endif
