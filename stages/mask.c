#include "stages/mask.h"

long mask_own_candidate(const state_round *r, size_t seat)
{
    for (size_t j = 0; j < r->ncand; j++) {
        if (r->cands[j].seat == seat)
            return (long)j;
    }
    return -1;
}

bool mask_shows(const state_round *r, size_t seat, size_t cand,
                bool self_votes)
{
    return cand < r->ncand && (self_votes || r->cands[cand].seat != seat);
}

enum state_eval_status mask_initial_status(const state_round *r, size_t seat,
                                           bool self_votes, bool propose_only)
{
    const state_proposal *p = &r->proposals[seat];

    if (propose_only || (p->status == STATE_PROPOSAL_FAILED && p->infra))
        return STATE_EVAL_IDLE;
    for (size_t j = 0; j < r->ncand; j++) {
        if (mask_shows(r, seat, j, self_votes))
            return STATE_EVAL_PENDING;
    }
    return STATE_EVAL_IDLE;
}
