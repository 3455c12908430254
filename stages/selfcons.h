/* selfcons.h -- the self-consistency baseline at equal cost.
 *
 * When the workflow has baselines.self_consistency, a question whose
 * deliberation has stopped (converge decided its last round) does not
 * finish yet: it moves to STATE_STAGE_SELFCONS, where one model -- the
 * "best single model" -- answers the question N times, N being the calls
 * the team made for it (state.sc.team_calls: every propose, evaluate and
 * repair response of every round, counted by stage_reduce). The baseline
 * is the majority of those N answers; it is what the same budget of calls
 * buys without deliberation.
 *
 * The model: baselines.self_consistency_model when the workflow names
 * one; otherwise, chosen when the question starts (selfcons_choose), the
 * model with the highest generation accuracy estimate p_g then (the first
 * in file order on a tie). The choice and why are kept in the state.
 *
 * A sample is the round-0 proposal request of a seat of that model: its
 * system message (the first seat the model holds; without one, seat 0's
 * role and no persona) and wf->prompts.propose with {question}. Sample i
 * (0-based) has kind STAGE_KIND_SELFCONS, round 0, the seat above (0 when
 * the model has none), sample index i + 1 and its own seed
 * seed_call(run seed, question, 0, seat, STAGE_KIND_SELFCONS, i + 1), so
 * no two samples, and no sample and team call, share a ledger key. The
 * requests are optional: a sample that fails for any reason (after the
 * gateway's retries) is recorded FAILED and never touches the question's
 * outcome. Answers are extracted as the workflow's answer section says.
 *
 * The majority is strict: samples are grouped by answer_same (NULL
 * answers are no votes); the group with more votes than every other wins
 * (tie false). When several groups share the most votes there is no
 * majority (tie true): one of them is drawn uniformly with
 * seed_rng_init("nsed-selfcons-tie", run seed, question, 0, 0) over the
 * tied groups in order of their first sample, and drawn is true. No votes
 * at all leave the answer NULL.
 *
 * Its calls' usage is kept in state.sc.usage, apart from state.usage (the
 * deliberation's cost).
 */
#ifndef NSED_STAGES_SELFCONS_H
#define NSED_STAGES_SELFCONS_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/request.h"
#include "stages/state.h"

#include <stddef.h>

/* Choose the model of st's baseline (st->sc.on; nothing happens when it
 * is off): the workflow's self_consistency_model, else the highest of
 * p_g[0..wf->nmodels) (the estimates at the question's start; the first
 * on a tie). Sets sc.model, sc.seat, sc.p_g and sc.why. Returns 0 or
 * NSED_ENOMEM (st unchanged then). */
NSED_MUST_CHECK int selfcons_choose(state *st, const workflow *wf,
                                    const double *p_g);

/* The deliberation of st has just stopped (converge set
 * STATE_STAGE_FINISHED) and st->sc.on: allocate st->sc.team_calls pending
 * samples and move to STATE_STAGE_SELFCONS (with none to take, decide at
 * once and stay finished). Returns 0 or NSED_ENOMEM (st unchanged). */
NSED_MUST_CHECK int selfcons_begin(state *st);

/* Requests for every sample still pending. Same returns as stage_plan. */
NSED_MUST_CHECK int selfcons_plan(const state *st, const workflow *wf,
                                  stage_requests *out);

/* Record sample replies; when none is pending, take the majority and move
 * to STATE_STAGE_FINISHED. Same returns as stage_reduce; st unchanged on
 * failure. */
NSED_MUST_CHECK int selfcons_reduce(state *st, const workflow *wf,
                                    const stage_response *resps, size_t n,
                                    nsed_err *err);

/* The strict majority of answers[0..n) (NULL entries are no votes) as
 * described above, for question qid under run seed: *winner the index of
 * the first member of the winning (or drawn) group, *votes its size,
 * *tie and *drawn as above. Returns 0; NSED_ENOTFOUND when there is no
 * vote; NSED_ENOMEM. */
NSED_MUST_CHECK int selfcons_majority(const workflow_answer *a,
                                      const char *const *answers, size_t n,
                                      uint64_t run_seed, const char *qid,
                                      size_t *winner, size_t *votes, bool *tie,
                                      bool *drawn);

#endif
