#include "stages/propose.h"

#include "stages/answer.h"
#include "stages/seed.h"
#include "stages/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool propose_is_skip(const char *reply, size_t len)
{
    text_trim(&reply, &len);
    return len == 4 && text_eq_ci(reply, "SKIP", 4);
}

static const char *or_empty(const char *s)
{
    return s ? s : "";
}

int propose_render(const state *st, const workflow *wf, size_t seat,
                   buf *out)
{
    char round[32];

    if (st->round == 0) {
        workflow_prompt_var vars[] = {{"question", st->question}};

        return workflow_prompt_render(wf->prompts.propose, vars, 1, out);
    }
    snprintf(round, sizeof round, "%d", st->round);
    {
        const state_carry *c = &st->carry;
        workflow_prompt_var vars[] = {
            {"question", st->question},
            {"round", round},
            {"winner", or_empty(c->winner)},
            {"own_previous", c->own ? or_empty(c->own[seat]) : ""},
            {"critiques", c->critiques ? or_empty(c->critiques[seat]) : ""},
            {"scores", c->scores ? or_empty(c->scores[seat]) : ""},
        };

        return workflow_prompt_render(wf->prompts.revise, vars, 6, out);
    }
}

static int plan_seat(const state *st, const workflow *wf, size_t seat,
                     stage_requests *list)
{
    stage_request *req = stage_requests_add(list);
    buf user;
    int rc;

    if (!req)
        return NSED_ENOMEM;
    req->kind = STAGE_KIND_PROPOSE;
    req->seat = seat;
    req->model = st->seats[seat].model;
    req->round = st->round;
    buf_init(&user, STAGE_PROMPT_MAX);
    rc = seed_call(st->seed, st->qid, st->round, seat, req->kind, 0,
                   &req->seed);
    if (!rc)
        rc = propose_render(st, wf, seat, &user);
    if (!rc)
        rc = stage_request_add_chat(req, wf, &st->seats[seat], user.ptr);
    buf_release(&user);
    return rc;
}

int propose_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests list = {0};
    int rc = 0;

    for (size_t s = 0; s < st->nseats && !rc; s++) {
        /* a seat lost in an earlier round stays lost for the question:
         * asking it again would wait out the retry budget once more */
        if (st->cur->proposals[s].status == STATE_PROPOSAL_PENDING &&
            !st->missing[s])
            rc = plan_seat(st, wf, s, &list);
    }
    if (rc) {
        stage_requests_release(&list);
        return rc;
    }
    *out = list;
    return 0;
}

/* The seat's proposal record from a response. */
static int reduce_one(const workflow *wf, const stage_response *rs,
                      state_proposal *p)
{
    const char *content = rs->content ? rs->content : "";
    const char *t = content;
    size_t len = strlen(content), tl = len;
    int rc;

    memset(p, 0, sizeof *p);
    p->usage.prompt_tokens = rs->prompt_tokens;
    p->usage.completion_tokens = rs->completion_tokens;
    p->usage.cost_usd = rs->cost_usd;
    if (!rs->ok) {
        p->status = STATE_PROPOSAL_FAILED;
        p->infra = rs->infra;
        p->error = strdup(rs->error ? rs->error : "call failed");
        return p->error ? 0 : NSED_ENOMEM;
    }
    p->truncated = rs->truncated;
    rc = text_clean(content, len, STATE_TEXT_MAX, &p->text);
    if (rc)
        return rc;
    text_trim(&t, &tl);
    if (tl == 0) {
        p->status = STATE_PROPOSAL_FAILED;
        p->error = strdup("empty reply");
        return p->error ? 0 : NSED_ENOMEM;
    }
    if (propose_is_skip(content, len)) {
        p->status = STATE_PROPOSAL_SKIP;
        return 0;
    }
    p->status = STATE_PROPOSAL_OK;
    rc = answer_extract(&wf->answer, p->text, &p->answer);
    /* no answer (or an answer pattern that does not compile, which a
     * loaded workflow rules out) leaves the answer NULL */
    return rc == NSED_ENOMEM ? rc : 0;
}

/* Seats lost in an earlier round were not asked (propose_plan): their
 * proposals of this round read as lost to infrastructure, so the mask
 * leaves them out of the evaluation and the live count omits them. */
static int close_lost_seats(state *st, state_round *r)
{
    for (size_t s = 0; s < st->nseats; s++) {
        state_proposal *p = &r->proposals[s];

        if (p->status != STATE_PROPOSAL_PENDING || !st->missing[s])
            continue;
        p->status = STATE_PROPOSAL_FAILED;
        p->infra = true;
        p->error = strdup("seat lost in an earlier round");
        if (!p->error)
            return NSED_ENOMEM;
    }
    return 0;
}

/* The round-0 majority of answers[0..st->nseats) (answer_tally_votes):
 * *majority the strict majority (NULL on a tie or with no answer), *votes
 * its count; on a tie *tie is set and *drawn is the tied answer a draw
 * seeded by (run seed, question id) picks, the same on every replay.
 * Returns 0 or NSED_ENOMEM (NSED_EINTERNAL past WORKFLOW_MAX_SEATS). */
static int round0_majority(const state *st, const workflow *wf,
                           const char *const *answers, char **majority,
                           char **drawn, size_t *votes, bool *tie)
{
    answer_tally t;
    seed_rng rng;
    const char *pick;

    if (answer_tally_votes(&wf->answer, answers, st->nseats, &t))
        return NSED_EINTERNAL;
    *votes = t.votes;
    *tie = t.votes > 0 && t.ntied > 1;
    if (t.votes == 0)
        return 0;
    if (!*tie) {
        *majority = strdup(answers[t.tied[0]]);
        return *majority ? 0 : NSED_ENOMEM;
    }
    if (seed_rng_init(&rng, "majority-tie", st->seed, st->qid, 0, 0))
        return NSED_ENOMEM;
    pick = answers[t.tied[seed_rng_below(&rng, t.ntied)]];
    *drawn = strdup(pick);
    return *drawn ? 0 : NSED_ENOMEM;
}

int propose_reduce(state *st, const workflow *wf,
                   const stage_response *resps, size_t n, nsed_err *err)
{
    state_round *r = st->cur;
    state_proposal *np = NULL;
    bool *seen = NULL, open = false;
    char *baseline = NULL, *drawn = NULL;
    size_t votes = 0, done = 0;
    bool tie = false;
    int rc = 0;

    if (st->stage != STATE_STAGE_PROPOSE)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: propose called in stage %s", st->qid,
                          state_stage_name(st->stage));
    seen = calloc(st->nseats, sizeof *seen);
    np = calloc(n ? n : 1, sizeof *np);
    if (!seen || !np) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const stage_response *rs = &resps[i];

        if (rs->kind != STAGE_KIND_PROPOSE || rs->seat >= st->nseats ||
            rs->round != r->index || seen[rs->seat] || st->missing[rs->seat] ||
            r->proposals[rs->seat].status != STATE_PROPOSAL_PENDING) {
            rc = nsed_error(err, NSED_EINVAL, "question %s round %d: response "
                            "%zu (%s, seat %zu, round %d) answers no pending "
                            "proposal", st->qid, r->index, i,
                            stage_kind_name(rs->kind), rs->seat, rs->round);
            goto out;
        }
        seen[rs->seat] = true;
    }
    for (; done < n; done++) {
        rc = reduce_one(wf, &resps[done], &np[done]);
        if (rc) {
            state_proposal_release(&np[done]);
            goto out;
        }
    }
    for (size_t s = 0; s < st->nseats; s++) {
        if (r->proposals[s].status == STATE_PROPOSAL_PENDING && !seen[s] &&
            !st->missing[s])
            open = true;
    }
    if (!open && r->index == 0) {
        /* the round-0 majority vote: what the team would answer without
         * deliberating */
        const char *answers[WORKFLOW_MAX_SEATS];

        for (size_t s = 0; s < st->nseats; s++)
            answers[s] = r->proposals[s].answer;
        for (size_t i = 0; i < n; i++)
            answers[resps[i].seat] = np[i].answer;
        rc = round0_majority(st, wf, answers, &baseline, &drawn, &votes, &tie);
        if (rc)
            goto out;
    }
    if (!open) {
        rc = close_lost_seats(st, r);
        if (rc)
            goto out;
    }
    /* commit */
    for (size_t i = 0; i < n; i++) {
        size_t s = resps[i].seat;

        state_proposal_release(&r->proposals[s]);
        r->proposals[s] = np[i];
        if (np[i].status == STATE_PROPOSAL_FAILED && np[i].infra)
            st->missing[s] = true;
        state_usage_add(&st->usage, &np[i].usage);
    }
    done = 0;
    if (!open) {
        if (r->index == 0) {
            free(st->baseline_answer);
            st->baseline_answer = baseline;
            st->baseline_votes = votes;
            st->baseline_tie = tie;
            free(st->baseline_drawn);
            st->baseline_drawn = drawn;
            baseline = NULL;
            drawn = NULL;
        }
        st->stage = STATE_STAGE_ANONYMIZE;
    }
out:
    for (size_t i = 0; i < done; i++)
        state_proposal_release(&np[i]);
    free(np);
    free(seen);
    free(baseline);
    free(drawn);
    return rc;
}
