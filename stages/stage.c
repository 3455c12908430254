#include "stages/stage.h"

#include "stages/aggregate.h"
#include "stages/anonymize.h"
#include "stages/converge.h"
#include "stages/evaluate.h"
#include "stages/propose.h"
#include "stages/selfcons.h"

int stage_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests none = {0};

    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return propose_plan(st, wf, out);
    case STATE_STAGE_EVALUATE:
        return evaluate_plan(st, wf, out);
    case STATE_STAGE_SELFCONS:
        return selfcons_plan(st, wf, out);
    case STATE_STAGE_ANONYMIZE:
    case STATE_STAGE_AGGREGATE:
    case STATE_STAGE_CONVERGE:
    case STATE_STAGE_FINISHED:
        break;
    }
    *out = none;
    return 0;
}

/* The team's calls (propose, evaluate, repair responses) go into
 * sc.team_calls: the self-consistency baseline takes as many samples. */
static int count_calls(state *st, int rc, size_t n)
{
    if (!rc)
        st->sc.team_calls += n;
    return rc;
}

/* Converge's stop hands over to the baseline when the workflow has it. */
static int after_converge(state *st, int rc, nsed_err *err)
{
    if (rc || st->stage != STATE_STAGE_FINISHED || !st->sc.on)
        return rc;
    rc = selfcons_begin(st);
    if (rc == NSED_ENOMEM)
        return nsed_error(err, rc, "out of memory");
    if (rc)
        return nsed_error(err, rc,
                          "question %s: self-consistency begun "
                          "twice",
                          st->qid);
    return 0;
}

int stage_reduce(state *st, const workflow *wf, const stage_ctx *ctx,
                 const stage_response *resps, size_t n, nsed_err *err)
{
    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return count_calls(st, propose_reduce(st, wf, resps, n, err), n);
    case STATE_STAGE_EVALUATE:
        return count_calls(st, evaluate_reduce(st, wf, resps, n, err), n);
    case STATE_STAGE_SELFCONS:
        return selfcons_reduce(st, wf, resps, n, err);
    case STATE_STAGE_ANONYMIZE:
    case STATE_STAGE_AGGREGATE:
    case STATE_STAGE_CONVERGE:
        if (n)
            return nsed_error(err, NSED_EINTERNAL, "question %s: stage %s "
                              "makes no calls but got %zu responses", st->qid,
                              state_stage_name(st->stage), n);
        break;
    case STATE_STAGE_FINISHED:
        return nsed_error(err, NSED_EINTERNAL, "question %s is finished",
                          st->qid);
    }
    switch (st->stage) {
    case STATE_STAGE_ANONYMIZE:
        return anonymize_run(st, wf, err);
    case STATE_STAGE_AGGREGATE:
        return aggregate_run(st, wf, ctx, err);
    case STATE_STAGE_CONVERGE:
        return after_converge(st, converge_run(st, wf, ctx, err), err);
    case STATE_STAGE_PROPOSE:
    case STATE_STAGE_EVALUATE:
    case STATE_STAGE_SELFCONS:
    case STATE_STAGE_FINISHED:
        break;
    }
    return 0;
}
