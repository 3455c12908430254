/* propose.h -- stage 1: every seat answers.
 *
 * Round 0: the system message (wf->prompts.system with the seat's persona
 * and role) and wf->prompts.propose with {question}. Round r > 0: the same
 * system message and wf->prompts.revise with {question}, {round} (r) and
 * the seat's consensus-state blocks from the forget gate ({winner},
 * {own_previous}, {critiques}, {scores}; "" for a block not carried). The
 * default templates put the stable text first and the changing blocks
 * last, so a serving engine's prefix cache keeps hitting.
 *
 * A reply is stored cleaned and capped (STATE_TEXT_MAX). It is:
 *   SKIP    when the trimmed reply is "SKIP" in any letter case: no
 *           candidate this round, the seat still evaluates;
 *   FAILED  when no reply came (infrastructure: the seat is lost and the
 *           question degraded; otherwise a model failure) or it is empty
 *           or only white space;
 *   OK      otherwise, with the answer extracted by answer_extract (NULL
 *           when the reply has none -- it is still a candidate).
 * A seat lost to infrastructure in an earlier round (state.missing) is
 * not asked again: no request is planned for it, and when the stage
 * closes its proposal reads FAILED (infra) without a call, so it neither
 * proposes nor evaluates for the rest of the question.
 * When every seat is resolved in round 0, the strict majority vote of the
 * extracted answers is recorded as the question's baseline
 * (state.baseline_answer / baseline_votes / baseline_tie /
 * baseline_drawn): the answer with the most votes when one answer alone
 * has that count; when the top count is shared it is a tie (no majority),
 * and a draw seeded by (run seed, question id, "majority-tie") picks one
 * of the tied answers, recorded apart. Then the stage moves to anonymize.
 */
#ifndef NSED_STAGES_PROPOSE_H
#define NSED_STAGES_PROPOSE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/request.h"
#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>

/* True when reply[0..len) is SKIP (trimmed, any case). */
bool propose_is_skip(const char *reply, size_t len);

/* The propose/revise user message of seat in the current round, appended
 * to out. Same returns as workflow_prompt_render. */
NSED_MUST_CHECK int propose_render(const state *st, const workflow *wf,
                                   size_t seat, buf *out);

/* Requests for every seat whose proposal is still pending. Same returns
 * as stage_plan. */
NSED_MUST_CHECK int propose_plan(const state *st, const workflow *wf,
                                 stage_requests *out);

/* Record responses; advance to anonymize when no proposal is pending. Same
 * returns as stage_reduce; st unchanged on failure. */
NSED_MUST_CHECK int propose_reduce(state *st, const workflow *wf,
                                   const stage_response *resps, size_t n,
                                   nsed_err *err);

#endif
