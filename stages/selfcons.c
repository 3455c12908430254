/* selfcons.c -- the self-consistency baseline (see selfcons.h). */
#include "stages/selfcons.h"

#include "stages/answer.h"
#include "stages/propose.h"
#include "stages/seed.h"
#include "stages/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first seat model m holds, or -1. */
static long seat_of(const state *st, size_t m)
{
    for (size_t s = 0; s < st->nseats; s++)
        if (st->seats[s].model == m)
            return (long)s;
    return -1;
}

int selfcons_choose(state *st, const workflow *wf, const double *p_g)
{
    const workflow_baselines *b = &wf->baselines;
    size_t m = 0;
    double pg = -1;
    char *why = NULL;
    int n;

    if (!st->sc.on)
        return 0;
    if (b->sc_model && b->sc_model_index < wf->nmodels) {
        m = b->sc_model_index;
        n = asprintf(&why, "named by baselines.self_consistency_model");
    } else {
        for (size_t i = 1; i < wf->nmodels; i++)
            if (p_g[i] > p_g[m])
                m = i;
        pg = p_g[m];
        n = asprintf(&why,
                     "the highest p_g estimate of the %zu models at the "
                     "question's start (%.4f)",
                     wf->nmodels, pg);
    }
    if (n < 0)
        return NSED_ENOMEM;
    free(st->sc.why);
    st->sc.why = why;
    st->sc.model = m;
    st->sc.p_g = pg;
    st->sc.seat = seat_of(st, m);
    return 0;
}

/* Decide the majority of the resolved samples and finish. */
static int decide(state *st, const workflow *wf)
{
    state_selfcons *sc = &st->sc;
    const char **answers = NULL;
    size_t win = 0, votes = 0, failed = 0;
    bool tie = false, drawn = false;
    char *ans = NULL;
    int rc;

    answers = calloc(sc->nsamples ? sc->nsamples : 1, sizeof *answers);
    if (!answers)
        return NSED_ENOMEM;
    for (size_t i = 0; i < sc->nsamples; i++) {
        answers[i] = sc->samples[i].status == STATE_PROPOSAL_OK
                         ? sc->samples[i].answer
                         : NULL;
        failed += sc->samples[i].status == STATE_PROPOSAL_FAILED;
    }
    rc = selfcons_majority(&wf->answer, answers, sc->nsamples, st->seed,
                           st->qid, &win, &votes, &tie, &drawn);
    if (rc == NSED_ENOTFOUND) {
        rc = 0;
        votes = 0;
    } else if (!rc && !(ans = strdup(answers[win]))) {
        rc = NSED_ENOMEM;
    }
    free(answers);
    if (rc)
        return rc;
    free(sc->answer);
    sc->answer = ans;
    sc->votes = votes;
    sc->tie = tie;
    sc->drawn = drawn;
    sc->failed = failed;
    sc->decided = true;
    st->stage = STATE_STAGE_FINISHED;
    return 0;
}

int selfcons_begin(state *st)
{
    state_selfcons *sc = &st->sc;
    size_t n = sc->team_calls;

    if (sc->nsamples || sc->samples)
        return NSED_EINTERNAL; /* begun twice: a bug in the caller */
    if (n == 0) {
        sc->decided = true;
        return 0;
    }
    sc->samples = calloc(n, sizeof *sc->samples);
    if (!sc->samples)
        return NSED_ENOMEM;
    sc->nsamples = n;
    st->stage = STATE_STAGE_SELFCONS;
    return 0;
}

/* The seat whose system message the samples use (see selfcons.h). */
static state_seat sample_seat(const state *st)
{
    state_seat s;

    if (st->sc.seat >= 0)
        return st->seats[st->sc.seat];
    s.model = st->sc.model;
    s.role = st->seats[0].role;
    s.persona = "";
    return s;
}

static int plan_sample(const state *st, const workflow *wf, size_t i,
                       stage_requests *list)
{
    stage_request *req = stage_requests_add(list);
    state_seat seat = sample_seat(st);
    workflow_prompt_var vars[] = {{"question", st->question}};
    buf user;
    int rc;

    if (!req)
        return NSED_ENOMEM;
    req->kind = STAGE_KIND_SELFCONS;
    req->seat = st->sc.seat >= 0 ? (size_t)st->sc.seat : 0;
    req->model = st->sc.model;
    req->round = 0;
    req->sample = (int)(i + 1);
    /* a failed sample must not touch the question's outcome */
    req->optional = true;
    buf_init(&user, STAGE_PROMPT_MAX);
    rc = seed_call(st->seed, st->qid, 0, req->seat, req->kind, req->sample,
                   &req->seed);
    if (!rc)
        rc = workflow_prompt_render(wf->prompts.propose, vars, 1, &user);
    if (!rc)
        rc = stage_request_add_chat(req, wf, &seat, user.ptr);
    buf_release(&user);
    return rc;
}

int selfcons_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests list = {0};
    int rc = 0;

    if (st->sc.model >= wf->nmodels)
        return NSED_EINTERNAL;
    for (size_t i = 0; i < st->sc.nsamples && !rc; i++)
        if (st->sc.samples[i].status == STATE_PROPOSAL_PENDING)
            rc = plan_sample(st, wf, i, &list);
    if (rc) {
        stage_requests_release(&list);
        return rc;
    }
    *out = list;
    return 0;
}

static void sample_release(state_sample *s)
{
    free(s->answer);
    free(s->error);
    memset(s, 0, sizeof *s);
}

/* The sample record of a response (s zeroed on entry). */
static int reduce_one(const workflow *wf, const stage_response *rs,
                      state_sample *s)
{
    const char *content = rs->content ? rs->content : "";
    const char *t = content;
    size_t len = strlen(content), tl = len;
    char *clean = NULL;
    int rc;

    if (!rs->ok) {
        s->status = STATE_PROPOSAL_FAILED;
        s->error = strdup(rs->error ? rs->error : "call failed");
        return s->error ? 0 : NSED_ENOMEM;
    }
    text_trim(&t, &tl);
    if (tl == 0) {
        s->status = STATE_PROPOSAL_FAILED;
        s->error = strdup("empty reply");
        return s->error ? 0 : NSED_ENOMEM;
    }
    if (propose_is_skip(content, len)) {
        s->status = STATE_PROPOSAL_SKIP;
        return 0;
    }
    s->status = STATE_PROPOSAL_OK;
    /* the answer as a proposal's: of the cleaned, capped text */
    rc = text_clean(content, len, STATE_TEXT_MAX, &clean);
    if (!rc)
        rc = answer_extract(&wf->answer, clean, &s->answer);
    free(clean);
    return rc == NSED_ENOMEM ? rc : 0;
}

int selfcons_reduce(state *st, const workflow *wf, const stage_response *resps,
                    size_t n, nsed_err *err)
{
    state_selfcons *sc = &st->sc;
    state_sample *ns = NULL;
    bool *seen = NULL, open = false;
    size_t done = 0;
    int rc = 0;

    if (st->stage != STATE_STAGE_SELFCONS)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: self-consistency called in stage %s",
                          st->qid, state_stage_name(st->stage));
    seen = calloc(sc->nsamples ? sc->nsamples : 1, sizeof *seen);
    ns = calloc(n ? n : 1, sizeof *ns);
    if (!seen || !ns) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const stage_response *rs = &resps[i];
        size_t k = (size_t)rs->sample - 1;

        if (rs->kind != STAGE_KIND_SELFCONS || rs->sample < 1 ||
            k >= sc->nsamples || rs->round != 0 || seen[k] ||
            sc->samples[k].status != STATE_PROPOSAL_PENDING) {
            rc = nsed_error(err, NSED_EINVAL,
                            "question %s: response %zu (%s, sample %d) "
                            "answers no pending self-consistency sample",
                            st->qid, i, stage_kind_name(rs->kind), rs->sample);
            goto out;
        }
        seen[k] = true;
    }
    for (; done < n; done++) {
        rc = reduce_one(wf, &resps[done], &ns[done]);
        if (rc) {
            sample_release(&ns[done]);
            goto out;
        }
    }
    /* commit */
    for (size_t i = 0; i < n; i++) {
        const stage_response *rs = &resps[i];
        state_usage u = {rs->prompt_tokens, rs->completion_tokens,
                         rs->cost_usd};

        sample_release(&sc->samples[rs->sample - 1]);
        sc->samples[rs->sample - 1] = ns[i];
        state_usage_add(&sc->usage, &u);
    }
    done = 0;
    for (size_t k = 0; k < sc->nsamples; k++)
        open = open || sc->samples[k].status == STATE_PROPOSAL_PENDING;
    if (!open)
        rc = decide(st, wf);
out:
    for (size_t i = 0; i < done; i++)
        sample_release(&ns[i]);
    free(ns);
    free(seen);
    return rc;
}

int selfcons_majority(const workflow_answer *a, const char *const *answers,
                      size_t n, uint64_t run_seed, const char *qid,
                      size_t *winner, size_t *votes, bool *tie, bool *drawn)
{
    size_t *first = NULL, *count = NULL, ngroups = 0, best = 0, ntied = 0;
    int rc = 0;

    first = calloc(n ? n : 1, sizeof *first);
    count = calloc(n ? n : 1, sizeof *count);
    if (!first || !count) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t g = 0;

        if (!answers[i])
            continue;
        while (g < ngroups && !answer_same(a, answers[first[g]], answers[i]))
            g++;
        if (g == ngroups)
            first[ngroups++] = i;
        count[g]++;
    }
    if (ngroups == 0) {
        rc = NSED_ENOTFOUND;
        goto out;
    }
    for (size_t g = 0; g < ngroups; g++) {
        if (count[g] > best) {
            best = count[g];
            ntied = 0;
        }
        if (count[g] == best)
            first[ntied++] = first[g]; /* tied groups, in order */
    }
    *votes = best;
    *tie = ntied > 1;
    *drawn = *tie;
    *winner = first[0];
    if (*tie) {
        seed_rng r;

        rc = seed_rng_init(&r, "nsed-selfcons-tie", run_seed, qid, 0, 0);
        if (!rc)
            *winner = first[seed_rng_below(&r, ntied)];
    }
out:
    free(first);
    free(count);
    return rc;
}
