/* stage.h -- the contract between the stages and the runner.
 *
 * A stage is a pair of pure functions over a state (state.h):
 *
 *     stage_plan(state)               -> requests (model calls to make)
 *     stage_reduce(state, responses)  -> the state, updated
 *
 * No I/O, no clock, no global state: everything random derives from
 * (run seed, question id, round, seat) through SHA-256 into a local
 * xoshiro256** generator, so a state and the replies to its requests
 * determine the next state exactly (replay from the call ledger is exact;
 * seed.h).
 *
 * The runner's loop for one question:
 *
 *     while (st->stage != STATE_STAGE_FINISHED) {
 *         stage_plan(st, wf, &reqs);           // may be empty
 *         send every request, collect one response per request;
 *         stage_reduce(st, wf, ctx, resps, n); // advances when complete
 *         checkpoint state_to_json(st);
 *     }
 *
 * Stages that make no calls (anonymize, aggregate, converge) plan no
 * requests and do their work in stage_reduce with n == 0. A stage that
 * makes calls advances only once every seat is resolved: responses may be
 * handed over in several batches, and stage_plan only asks again for what
 * is still unanswered (evaluate also plans the repair turns its reduce
 * asked for). When converge starts a new round it frees the round before
 * the previous one; store a finished round first (state_round_to_json of
 * state_round_get(st, r) right after the converge reduce).
 *
 * With baselines.self_consistency, the converge reduce that stops the
 * question moves it to STATE_STAGE_SELFCONS instead of finishing it: its
 * sample calls (selfcons.h) are planned and reduced like any stage's, and
 * the question finishes when they are all resolved. stage_reduce counts
 * the team's calls (propose, evaluate and repair responses) into
 * st->sc.team_calls, which sets the number of samples.
 */
#ifndef NSED_STAGES_STAGE_H
#define NSED_STAGES_STAGE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/request.h"
#include "stages/stage_ctx.h"
#include "stages/state.h"

#include <stddef.h>

/* The requests the question's current stage needs now (possibly none).
 * Returns 0 and fills *out (release with stage_requests_release; *out is
 * overwritten, not released first); NSED_ETOOBIG when a prompt would pass
 * STAGE_PROMPT_MAX; NSED_EINVAL when a prompt template holds an unknown
 * placeholder (a workflow built by hand; loaded ones never do);
 * NSED_ENOMEM. A finished question plans nothing. */
NSED_MUST_CHECK int stage_plan(const state *st, const workflow *wf,
                               stage_requests *out);

/* Feed n responses to the current stage (n == 0 for anonymize, aggregate
 * and converge) and advance the stage when it is complete. Returns 0;
 * NSED_EINVAL (err says why) when a response does not answer a request the
 * current plan would make (wrong kind, round or seat, a seat given twice);
 * NSED_EINTERNAL when a computing stage gets responses or the question is
 * finished (the caller fed a stage it never planned: a bug in the caller);
 * NSED_ENOMEM. On any failure st is unchanged. */
NSED_MUST_CHECK int stage_reduce(state *st, const workflow *wf,
                                 const stage_ctx *ctx,
                                 const stage_response *resps, size_t n,
                                 nsed_err *err);

#endif
