#include "stages/stage.h"

#include "stages/aggregate.h"
#include "stages/anonymize.h"
#include "stages/converge.h"
#include "stages/evaluate.h"
#include "stages/propose.h"

int stage_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests none = {0};

    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return propose_plan(st, wf, out);
    case STATE_STAGE_EVALUATE:
        return evaluate_plan(st, wf, out);
    case STATE_STAGE_ANONYMIZE:
    case STATE_STAGE_AGGREGATE:
    case STATE_STAGE_CONVERGE:
    case STATE_STAGE_FINISHED:
        break;
    }
    *out = none;
    return 0;
}

int stage_reduce(state *st, const workflow *wf, const stage_ctx *ctx,
                 const stage_response *resps, size_t n, nsed_err *err)
{
    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return propose_reduce(st, wf, resps, n, err);
    case STATE_STAGE_EVALUATE:
        return evaluate_reduce(st, wf, resps, n, err);
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
        return converge_run(st, wf, ctx, err);
    case STATE_STAGE_PROPOSE:
    case STATE_STAGE_EVALUATE:
    case STATE_STAGE_FINISHED:
        break;
    }
    return 0;
}
