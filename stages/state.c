#include "stages/state.h"

#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s, bool *fail)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        *fail = true;
    return d;
}

state_round *state_round_new(int index, size_t nseats)
{
    state_round *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->index = index;
    r->proposals = calloc(nseats ? nseats : 1, sizeof *r->proposals);
    if (!r->proposals) {
        free(r);
        return NULL;
    }
    r->agg.winner = -1;
    r->decision.target = -1;
    return r;
}

void state_proposal_release(state_proposal *p)
{
    if (!p)
        return;
    free(p->text);
    free(p->answer);
    free(p->error);
    memset(p, 0, sizeof *p);
}

void state_evaluation_release(state_evaluation *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nweights; i++)
        free(e->weights[i].critique);
    free(e->weights);
    free(e->reply);
    free(e->first_reply);
    free(e->error);
    free(e->shown);
    memset(e, 0, sizeof *e);
}

void state_round_free(state_round *r, size_t nseats)
{
    if (!r)
        return;
    for (size_t i = 0; i < nseats; i++)
        state_proposal_release(&r->proposals[i]);
    free(r->proposals);
    for (size_t i = 0; i < r->ncand; i++)
        free(r->cands[i].text);
    free(r->cands);
    if (r->evals) {
        for (size_t i = 0; i < nseats; i++)
            state_evaluation_release(&r->evals[i]);
        free(r->evals);
    }
    free(r->agg.scores);
    free(r);
}

void state_carry_release(state_carry *c, size_t nseats)
{
    if (!c)
        return;
    free(c->winner);
    for (size_t i = 0; i < nseats; i++) {
        if (c->own)
            free(c->own[i]);
        if (c->critiques)
            free(c->critiques[i]);
        if (c->scores)
            free(c->scores[i]);
    }
    free(c->own);
    free(c->critiques);
    free(c->scores);
    memset(c, 0, sizeof *c);
    c->from_round = -1;
}

void state_selfcons_release(state_selfcons *sc)
{
    if (!sc)
        return;
    for (size_t i = 0; i < sc->nsamples; i++) {
        free(sc->samples[i].answer);
        free(sc->samples[i].error);
    }
    free(sc->samples);
    free(sc->why);
    free(sc->answer);
    memset(sc, 0, sizeof *sc);
    sc->seat = -1;
    sc->p_g = -1;
}

void state_free(state *st)
{
    if (!st)
        return;
    free(st->qid);
    free(st->question);
    free(st->reference);
    for (size_t i = 0; i < st->ntags; i++)
        free(st->tags[i]);
    free(st->tags);
    if (st->seats) {
        for (size_t i = 0; i < st->nseats; i++) {
            free(st->seats[i].role);
            free(st->seats[i].persona);
        }
    }
    free(st->seats);
    free(st->missing);
    state_round_free(st->cur, st->nseats);
    state_round_free(st->prev, st->nseats);
    state_carry_release(&st->carry, st->nseats);
    free(st->final_answer);
    free(st->baseline_answer);
    free(st->baseline_drawn);
    free(st->failure);
    state_selfcons_release(&st->sc);
    free(st);
}

int state_new(const workflow *wf, const state_question *q,
              const state_seat_spec *seats, size_t nseats, state **out,
              nsed_err *err)
{
    state *st = NULL;
    bool fail = false;
    int rc = 0;

    if (!q || !q->id || !*q->id || !q->text || !*q->text)
        return nsed_error(err, NSED_EINVAL, "a question needs an id and a "
                          "text");
    if (nseats == 0 || nseats > WORKFLOW_MAX_SEATS)
        return nsed_error(err, NSED_EINVAL, "question %s: a team needs 1..%d "
                          "seats, not %zu", q->id, WORKFLOW_MAX_SEATS, nseats);
    for (size_t i = 0; i < nseats; i++) {
        if (seats[i].model >= wf->nmodels || !seats[i].role)
            return nsed_error(err, NSED_EINVAL, "question %s: seat %zu has "
                              "no role or a model index (%zu) outside the "
                              "workflow's %zu models", q->id, i,
                              seats[i].model, wf->nmodels);
    }
    st = calloc(1, sizeof *st);
    if (!st)
        return NSED_ENOMEM;
    st->seed = wf->seed;
    st->nseats = nseats;
    st->final_seat = -1;
    st->final_round = -1;
    st->carry.from_round = -1;
    st->sc.on = wf->baselines.self_consistency;
    st->sc.seat = -1;
    st->sc.p_g = -1;
    st->qid = dup_or_null(q->id, &fail);
    st->question = dup_or_null(q->text, &fail);
    st->reference = dup_or_null(q->reference, &fail);
    if (q->ntags) {
        st->tags = calloc(q->ntags, sizeof *st->tags);
        if (!st->tags)
            fail = true;
        for (size_t i = 0; st->tags && i < q->ntags; i++) {
            st->tags[i] = dup_or_null(q->tags[i] ? q->tags[i] : "", &fail);
            st->ntags++;
        }
    }
    st->seats = calloc(nseats, sizeof *st->seats);
    st->missing = calloc(nseats, sizeof *st->missing);
    st->cur = state_round_new(0, nseats);
    if (!st->seats || !st->missing || !st->cur) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nseats; i++) {
        st->seats[i].model = seats[i].model;
        st->seats[i].propose_only = seats[i].propose_only;
        st->seats[i].role = dup_or_null(seats[i].role, &fail);
        st->seats[i].persona =
            dup_or_null(seats[i].persona ? seats[i].persona : "", &fail);
    }
    if (fail)
        rc = NSED_ENOMEM;
out:
    if (rc) {
        state_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

const state_round *state_round_get(const state *st, int index)
{
    if (st->cur && st->cur->index == index)
        return st->cur;
    if (st->prev && st->prev->index == index)
        return st->prev;
    return NULL;
}

void state_usage_add(state_usage *total, const state_usage *u)
{
    total->prompt_tokens += u->prompt_tokens;
    total->completion_tokens += u->completion_tokens;
    total->cost_usd += u->cost_usd;
}

const char *state_stage_name(enum state_stage s)
{
    switch (s) {
    case STATE_STAGE_PROPOSE: return "propose";
    case STATE_STAGE_ANONYMIZE: return "anonymize";
    case STATE_STAGE_EVALUATE: return "evaluate";
    case STATE_STAGE_AGGREGATE: return "aggregate";
    case STATE_STAGE_CONVERGE: return "converge";
    case STATE_STAGE_SELFCONS:
        return "self_consistency";
    case STATE_STAGE_FINISHED: return "finished";
    }
    return "?";
}

const char *state_status_name(enum state_status s)
{
    switch (s) {
    case STATE_STATUS_ACTIVE: return "active";
    case STATE_STATUS_DONE: return "done";
    case STATE_STATUS_INCOMPLETE: return "incomplete";
    case STATE_STATUS_DEGRADED: return "degraded";
    case STATE_STATUS_FAILED:
        return "failed";
    }
    return "?";
}

const char *state_stop_reason_name(enum state_stop_reason r)
{
    switch (r) {
    case STATE_STOP_NONE: return "none";
    case STATE_STOP_MAX_ROUNDS: return "max_rounds";
    case STATE_STOP_CONSENSUS_MARGIN: return "consensus_margin";
    case STATE_STOP_STABLE_ANSWER: return "stable_answer";
    case STATE_STOP_EFFICIENCY_FATIGUE: return "efficiency_fatigue";
    case STATE_STOP_ALL_FAILED: return "all_failed";
    }
    return "?";
}

const char *state_decider_name(enum state_decider d)
{
    switch (d) {
    case STATE_DECIDER_NONE: return "none";
    case STATE_DECIDER_SCORE: return "score";
    case STATE_DECIDER_MIN_PEER: return "min_peer_score";
    case STATE_DECIDER_VARIANCE: return "variance";
    case STATE_DECIDER_SEEDED: return "seeded";
    }
    return "?";
}

const char *state_final_source_name(enum state_final_source s)
{
    switch (s) {
    case STATE_FINAL_NONE: return "none";
    case STATE_FINAL_WINNER: return "winner";
    case STATE_FINAL_MAJORITY: return "majority";
    }
    return "?";
}

const char *state_proposal_status_name(enum state_proposal_status s)
{
    switch (s) {
    case STATE_PROPOSAL_PENDING: return "pending";
    case STATE_PROPOSAL_OK: return "ok";
    case STATE_PROPOSAL_SKIP: return "skip";
    case STATE_PROPOSAL_FAILED: return "failed";
    }
    return "?";
}

const char *state_eval_status_name(enum state_eval_status s)
{
    switch (s) {
    case STATE_EVAL_PENDING: return "pending";
    case STATE_EVAL_REPAIR: return "repair";
    case STATE_EVAL_OK: return "ok";
    case STATE_EVAL_ABSTAINED: return "abstained";
    case STATE_EVAL_FAILED: return "failed";
    case STATE_EVAL_IDLE: return "idle";
    }
    return "?";
}
