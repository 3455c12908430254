/* runner.c -- the event loop that drives questions through the stages. */
#include "pipeline/runner/runner.h"

#include "pipeline/broker/broker.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_int.h"
#include "stages/selfcons.h"
#include "stages/stage.h"
#include "store/store_keys.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One call a slot is waiting for. */
typedef struct call {
    struct slot *slot;
    size_t idx; /* index into slot->reqs / slot->resps */
} call;

typedef struct archived {
    int round;
    char *json;
} archived;

/* Where a question in the active list stands. */
enum slot_phase {
    SLOT_LOADED,     /* just loaded or staffed: step it */
    SLOT_WAITING,    /* its stage's calls are out (outstanding > 0) */
    SLOT_READY,      /* every call answered: reduce next */
    SLOT_DRY,        /* dry run: some request was printed instead of
                        sent; dropped once no call is outstanding */
    SLOT_FINISHED,   /* result built: commit, then drop */
    SLOT_INCOMPLETE, /* marker built: commit, then drop */
};

typedef struct slot {
    struct slot *next;     /* in the active list */
    enum slot_phase phase;
    state *st;
    question q;            /* for tags and meta */
    stage_requests reqs;   /* the requests in flight for the stage */
    stage_response *resps;
    char **contents;       /* copies of the replies (resps point here) */
    char **errors;
    bool *permanent; /* per call: failed for good (gateway.h) */
    call *calls;
    size_t outstanding;    /* calls not answered yet */
    size_t answered;       /* calls answered in this run (for the ETA) */
    bool dirty;            /* changed since the last commit (apart from
                              the phase: a waiting question can have
                              reduced and planned in this turn) */
    char *result_json;
    char *marker_json;
    char *marker_error;    /* why it is incomplete (for the log) */
    char *fail_reason;     /* a per-question failure found while calls
                              were still out: fail once they are in */
    bool drop_result;      /* --retry-failed: delete the failed result at
                              the next commit */
    archived *rounds;      /* rounds decided since the last commit */
    size_t nrounds;
    char *state_json;      /* serialized at commit time */
    char *decision_json;   /* the broker's decision, to write with the
                              question's first state */
    char *broker_record;   /* the decision (new or read back), for the
                              result's "broker" field; NULL when none */
    char *qid;             /* unstaffed (st NULL): the question id */
    runner_qctx qctx;      /* reliability weights and fatigue fit, fixed
                              when the question started */
    char *ctx_json;        /* qctx, to write with the first state */
} slot;

struct loop {
    const workflow *wf;
    store *st;
    const runner_opts *opts;
    gateway *gw;
    stage_ctx ctx;
    slot *active;
    size_t nactive;
    size_t max_active;
    uint64_t next_seq;     /* next question sequence number to look at */
    uint64_t end_seq;      /* one past the last sequence number to run */
    size_t scanned;        /* questions of the range looked at so far */
    runner_summary *sum;
    double started;
    double last_progress;
    double last_telemetry;
    size_t done_total;     /* questions with results (before + now) */
    size_t no_answer_seen; /* finished now without any extracted answer */
    runner_telemetry_base *tele;
    telemetry *view;       /* what the broker decides on */
    telemetry_counts *pending; /* observations of rounds archived since
                                  the last commit (per model) */
    runner_round_counts rounds;         /* per-round accuracy, committed */
    runner_round_counts rounds_pending; /* ... and since the last commit */
    runner_fitted fitted; /* the fatigue fit, remade as the slice grows */
    /* when no team could be served any more; < 0 while some team can */
    double unservable_since;
    runner_breakers *breakers; /* for nsed status: who is paused */
    bool run_ended;            /* the last commit: breaker records say so */
    nsed_err *err;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void slot_clear_calls(slot *s)
{
    for (size_t i = 0; i < s->reqs.n; i++) {
        free(s->contents ? s->contents[i] : NULL);
        free(s->errors ? s->errors[i] : NULL);
    }
    free(s->contents);
    free(s->errors);
    free(s->permanent);
    free(s->resps);
    free(s->calls);
    s->permanent = NULL;
    s->contents = s->errors = NULL;
    s->resps = NULL;
    s->calls = NULL;
    stage_requests_release(&s->reqs);
    s->outstanding = 0;
}

/* True when some call of the stage failed after every retry. */
static bool slot_lost_calls(const slot *s)
{
    for (size_t i = 0; i < s->reqs.n; i++)
        if (s->resps[i].infra)
            return true;
    return false;
}

static void slot_clear_pending(slot *s)
{
    for (size_t i = 0; i < s->nrounds; i++)
        free(s->rounds[i].json);
    free(s->rounds);
    s->rounds = NULL;
    s->nrounds = 0;
    free(s->state_json);
    s->state_json = NULL;
    free(s->decision_json);
    s->decision_json = NULL;
    free(s->ctx_json);
    s->ctx_json = NULL;
}

/* The question id of a slot (an unstaffed question has no state). */
static const char *slot_id(const slot *s)
{
    return s->st ? s->st->qid : s->qid;
}

static void slot_free(slot *s)
{
    if (!s)
        return;
    slot_clear_calls(s);
    slot_clear_pending(s);
    free(s->result_json);
    free(s->marker_json);
    free(s->marker_error);
    free(s->fail_reason);
    free(s->broker_record);
    runner_qctx_release(&s->qctx);
    free(s->qid);
    question_release(&s->q);
    state_free(s->st);
    free(s);
}

/* ---- gateway completions ---------------------------------------------- */

static void on_result(const gateway_result *res, void *user)
{
    call *c = user;
    slot *s = c->slot;
    stage_response *r = &s->resps[c->idx];

    if (res->code == GATEWAY_DRY_RUN) {
        s->phase = SLOT_DRY;
    } else if (res->code == 0) {
        s->contents[c->idx] = strdup(res->content);
        r->ok = s->contents[c->idx] != NULL;
        r->content = s->contents[c->idx];
        r->prompt_tokens = res->usage.prompt_tokens;
        r->completion_tokens = res->usage.completion_tokens;
        r->cost_usd = res->cost_usd;
        r->truncated = res->finish_reason &&
                       strcmp(res->finish_reason, "length") == 0;
        r->infra = !r->ok;
    } else {
        s->errors[c->idx] = strdup(res->error ? res->error : "call failed");
        s->permanent[c->idx] = res->permanent;
        r->ok = false;
        /* an optional call (a repair) that fails loses no seat: the stage
         * takes it as an unusable reply */
        r->infra = !s->reqs.items[c->idx].optional;
        r->error = s->errors[c->idx];
    }
    if (res->code != GATEWAY_DRY_RUN)
        s->answered++;
    if (--s->outstanding == 0 && s->phase == SLOT_WAITING)
        s->phase = SLOT_READY;
}

/* True for an error that belongs to one question's data (a stage that
 * cannot process a reply, a prompt over a cap, a request the gateway
 * refuses): that question fails and the run goes on. Out of memory, the
 * store, the file system and bugs stop the run. */
static bool question_error(int rc)
{
    return rc != 0 && rc != NSED_ENOMEM && rc != NSED_ESTORE &&
           rc != NSED_EIO && rc != NSED_EINTERNAL;
}

/* The message of the error just reported into L->err as a failure reason
 * ("<what>: <message>", malloc'd; NULL when out of memory), and L->err
 * cleared: the run goes on. */
static char *take_reason(struct loop *L, int rc, const char *what)
{
    char *r = NULL;
    const char *m = L->err->msg[0] ? L->err->msg : nsed_strerror(rc);

    if (asprintf(&r, "%s: %s", what, m) < 0)
        r = NULL;
    L->err->msg[0] = '\0';
    L->err->code = 0;
    return r;
}

/* Send the stage's requests of s. */
static int submit_all(struct loop *L, slot *s)
{
    size_t n = s->reqs.n;

    s->resps = calloc(n, sizeof *s->resps);
    s->contents = calloc(n, sizeof *s->contents);
    s->errors = calloc(n, sizeof *s->errors);
    s->permanent = calloc(n, sizeof *s->permanent);
    s->calls = calloc(n, sizeof *s->calls);
    if (!s->resps || !s->contents || !s->errors || !s->permanent || !s->calls)
        return nsed_error(L->err, NSED_ENOMEM, "out of memory");
    s->outstanding = n;
    s->phase = SLOT_WAITING;
    for (size_t i = 0; i < n; i++) {
        const stage_request *rq = &s->reqs.items[i];
        const workflow_model *m = &L->wf->models[rq->model];
        gateway_message msgs[STAGE_MAX_MESSAGES];
        gateway_request gr = {0};
        int rc;

        for (size_t k = 0; k < rq->nmessages; k++) {
            msgs[k].role = stage_role_name(rq->messages[k].role);
            msgs[k].content = rq->messages[k].content;
        }
        s->resps[i].kind = rq->kind;
        s->resps[i].seat = rq->seat;
        s->resps[i].round = rq->round;
        s->resps[i].sample = rq->sample;
        s->calls[i].slot = s;
        s->calls[i].idx = i;
        gr.model = rq->model;
        gr.messages = msgs;
        gr.nmessages = rq->nmessages;
        gr.schema = rq->json_schema;
        gr.schema_name = rq->json_schema ? STAGE_SCHEMA_NAME : NULL;
        gr.max_tokens = rq->max_tokens;
        gr.has_seed = m->sampling.has_seed;
        gr.seed = (int64_t)rq->seed;
        gr.scope = s->st->qid;
        gr.seat = (int)rq->seat;
        gr.round = rq->round;
        gr.sample = rq->sample;
        gr.call_kind = runner_call_kind(rq);
        rc = gateway_submit(L->gw, &gr, on_result, &s->calls[i], L->err);
        if (rc) {
            /* Calls already submitted will still report; keep the count
             * of those only. A request this question cannot make (over
             * the body cap, refused by the checks) fails the question
             * once they are in; anything else stops the run. */
            s->outstanding -= n - i;
            if (!question_error(rc))
                return rc;
            s->fail_reason = take_reason(L, rc, "request");
            if (!s->fail_reason)
                return nsed_error(L->err, NSED_ENOMEM, "out of memory");
            if (s->outstanding == 0)
                s->phase = SLOT_READY;
            return 0;
        }
    }
    return 0;
}

/* ---- stepping one question -------------------------------------------- */

static int archive_round(struct loop *L, slot *s, int round)
{
    const state_round *r = state_round_get(s->st, round);
    archived *a;
    char *json = NULL;
    int rc;

    if (!r)
        return 0;
    rc = state_round_to_json(r, s->st->nseats, &json);
    if (rc)
        return nsed_error(L->err, rc, "cannot serialize round %d of %s",
                          round, s->st->qid);
    a = realloc(s->rounds, (s->nrounds + 1) * sizeof *a);
    if (!a) {
        free(json);
        return nsed_error(L->err, NSED_ENOMEM, "out of memory");
    }
    s->rounds = a;
    a[s->nrounds].round = round;
    a[s->nrounds].json = json;
    s->nrounds++;
    /* Counted now, committed with the round: a round is archived exactly
     * once, so a resumed run never counts it again. */
    telemetry_observe_round(L->wf, s->st, r, L->pending);
    runner_rounds_observe(L->wf, s->st, r, &L->rounds_pending);
    return 0;
}

/* Reduce with the responses collected (n may be 0) and archive a round
 * converge has just decided. */
static int reduce(struct loop *L, slot *s, const stage_response *resps,
                  size_t n)
{
    int round = s->st->round;
    enum state_stage stage = s->st->stage;
    stage_ctx ctx = L->ctx;
    int rc;

    runner_qctx_apply(&s->qctx, L->wf->nmodels, &ctx);
    rc = stage_reduce(s->st, L->wf, &ctx, resps, n, L->err);
    if (rc)
        return rc;
    s->dirty = true;
    if (stage == STATE_STAGE_CONVERGE)
        rc = archive_round(L, s, round);
    return rc;
}

/* s is finished (its status final): build its result record; the next
 * commit writes it. */
static int finish_slot(struct loop *L, slot *s)
{
    int rc = runner_result_json(L->wf, L->st, s->st, &s->q, s->broker_record,
                                &s->qctx, &s->result_json, L->err);

    if (rc)
        return rc;
    runner_rounds_finished(L->wf, s->st, &L->rounds_pending);
    s->phase = SLOT_FINISHED;
    s->dirty = true;
    return 0;
}

/* Fail question s for good with reason (taken over): its result record
 * says failed and why, and a rerun skips it unless --retry-failed. */
static int fail_question(struct loop *L, slot *s, char *reason)
{
    if (!reason)
        return nsed_error(L->err, NSED_ENOMEM, "out of memory");
    slot_clear_calls(s);
    free(s->st->failure);
    s->st->failure = reason;
    s->st->status = STATE_STATUS_FAILED;
    return finish_slot(L, s);
}

/* Leave s incomplete (transient: a rerun resumes it), with prefix (may
 * be NULL) before the first error in its marker. */
static int leave_incomplete(struct loop *L, slot *s, const char *prefix)
{
    int rc = runner_incomplete_marker(s->st, s->resps, s->reqs.n, prefix,
                                      &s->marker_json, &s->marker_error);

    if (rc)
        return nsed_error(L->err, rc, "out of memory");
    s->phase = SLOT_INCOMPLETE;
    slot_clear_calls(s);
    return 0;
}

/* Seats of the current round still served: not lost to infrastructure in
 * an earlier stage of the round nor in this stage's calls. */
static size_t live_seats(const slot *s)
{
    const state_round *r = s->st->cur;
    size_t live = 0;

    for (size_t seat = 0; seat < s->st->nseats; seat++) {
        bool lost = (r->proposals[seat].status == STATE_PROPOSAL_FAILED &&
                     r->proposals[seat].infra) ||
                    (r->evals && r->evals[seat].status == STATE_EVAL_FAILED);

        for (size_t i = 0; i < s->reqs.n && !lost; i++)
            lost = s->resps[i].seat == seat && s->resps[i].infra;
        live += !lost;
    }
    return live;
}

/* Some call of s failed after every retry. Without --allow-degraded a
 * permanent failure fails the question and a transient one leaves it
 * incomplete; with it the stage goes on without the lost seats while at
 * least rounds.min_live_seats remain, and otherwise the question fails
 * when every loss is permanent and is left incomplete when the outage may
 * end. Sets *go_on when the stage should be reduced. */
static int lost_calls(struct loop *L, slot *s, bool *go_on)
{
    size_t live, transient = 0, first_perm = s->reqs.n;
    char *why = NULL;
    int rc;

    *go_on = false;
    for (size_t i = 0; i < s->reqs.n; i++) {
        if (!s->resps[i].infra)
            continue;
        if (!s->permanent[i])
            transient++;
        else if (first_perm == s->reqs.n)
            first_perm = i;
    }
    if (!L->opts->allow_degraded) {
        if (first_perm < s->reqs.n)
            return fail_question(L, s, strdup(s->errors[first_perm]));
        return leave_incomplete(L, s, NULL);
    }
    live = live_seats(s);
    if (live >= (size_t)L->wf->rounds.min_live_seats) {
        *go_on = true;
        return 0;
    }
    if (transient == 0 && first_perm < s->reqs.n)
        return fail_question(L, s, strdup(s->errors[first_perm]));
    if (asprintf(&why,
                 "%zu of %zu seats left, fewer than "
                 "rounds.min_live_seats (%d)",
                 live, s->st->nseats, L->wf->rounds.min_live_seats) < 0)
        return nsed_error(L->err, NSED_ENOMEM, "out of memory");
    rc = leave_incomplete(L, s, why);
    free(why);
    return rc;
}

/* The self-consistency samples of s that could not be sent (a request
 * the gateway refused): failed samples, not a failed question -- the
 * baseline never changes the question's outcome (stages/selfcons.h). */
static int unsent_samples(slot *s)
{
    for (size_t i = 0; i < s->reqs.n; i++) {
        stage_response *r = &s->resps[i];

        if (r->ok || s->errors[i])
            continue; /* answered, or failed through the gateway */
        r->kind = s->reqs.items[i].kind;
        r->seat = s->reqs.items[i].seat;
        r->round = s->reqs.items[i].round;
        r->sample = s->reqs.items[i].sample;
        r->infra = false;
        s->errors[i] = strdup(s->fail_reason);
        if (!s->errors[i])
            return NSED_ENOMEM;
        r->error = s->errors[i];
    }
    free(s->fail_reason);
    s->fail_reason = NULL;
    return 0;
}

/* Advance s (loaded or ready) as far as it goes without waiting for the
 * network. An error that belongs to this question's data fails the
 * question (the run goes on); any other error stops the run. */
static int step(struct loop *L, slot *s)
{
    bool go_on = true;
    int rc;

    if (s->phase == SLOT_READY) {
        if (s->fail_reason && s->st->stage == STATE_STAGE_SELFCONS) {
            rc = unsent_samples(s);
            if (rc)
                return nsed_error(L->err, rc, "out of memory");
        }
        if (s->fail_reason) {
            char *why = s->fail_reason;

            s->fail_reason = NULL;
            return fail_question(L, s, why);
        }
        if (slot_lost_calls(s)) {
            rc = lost_calls(L, s, &go_on);
            if (rc || !go_on)
                return rc;
        }
        rc = reduce(L, s, s->resps, s->reqs.n);
        slot_clear_calls(s);
        if (question_error(rc))
            return fail_question(L, s,
                                 take_reason(L, rc,
                                             state_stage_name(s->st->stage)));
        if (rc)
            return rc;
    }
    while (s->st->stage != STATE_STAGE_FINISHED) {
        rc = stage_plan(s->st, L->wf, &s->reqs);
        if (question_error(rc)) {
            nsed_error(L->err, rc, "cannot plan it: %s", nsed_strerror(rc));
            return fail_question(L, s,
                                 take_reason(L, rc,
                                             state_stage_name(s->st->stage)));
        }
        if (rc)
            return nsed_error(L->err, rc, "%s: cannot plan stage %s: %s",
                              s->st->qid, state_stage_name(s->st->stage),
                              nsed_strerror(rc));
        if (s->reqs.n > 0)
            return submit_all(L, s);
        stage_requests_release(&s->reqs);
        rc = reduce(L, s, NULL, 0);
        if (question_error(rc))
            return fail_question(L, s,
                                 take_reason(L, rc,
                                             state_stage_name(s->st->stage)));
        if (rc)
            return rc;
    }
    rc = runner_finish_outcome(L->wf, L->st, s->st, L->err);
    return rc ? rc : finish_slot(L, s);
}

/* ---- loading questions ------------------------------------------------- */

typedef struct fill_ctx {
    struct loop *L;
    slot *loaded;     /* new slots, in order */
    size_t want;
    uint64_t last_seq;
    bool scanned_any;
} fill_ctx;

static int fill_one(const question *q, uint64_t seq, void *arg);
static void count_outcome(runner_summary *sum, enum state_status st);

/* A record of question qid in db that failed to parse (rc, with
 * err saying why) is damage: name the store, the record and the reason
 * (store_corrupt), so the user knows what to restore. Out of memory stays
 * what it is. */
static int damaged_in(store_txn *txn, nsed_err *err, enum store_db db,
                      const char *record, const char *qid, int rc)
{
    char what[STORE_KEY_MAX + 64], why[NSED_ERR_MSG_MAX];

    if (rc == NSED_ENOMEM)
        return nsed_error(err, rc, "out of memory");
    snprintf(why, sizeof why, "%s",
             err && err->msg[0] ? err->msg : nsed_strerror(rc));
    snprintf(what, sizeof what, "the %s of %s", record, qid);
    return store_corrupt(err, txn, db, what, why);
}

static int damaged(store_txn *txn, nsed_err *err, const char *record,
                   const char *qid, int rc)
{
    return damaged_in(txn, err, STORE_STATE, record, qid, rc);
}

/* The decision recorded for a question that has a state (absent in stores
 * written before the broker recorded its decisions). */
static int read_decision(store_txn *txn, const char *qid, slot *s,
                         nsed_err *err)
{
    store_key key;
    size_t vlen;
    const void *val;
    cJSON *j;
    int rc = store_keys_question(qid, STORE_KEYS_BROKER, 0, &key);

    if (!rc)
        rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return nsed_error(err, rc,
                          "store %s: cannot read the broker "
                          "decision of %s",
                          store_txn_dir(txn), qid);
    /* it goes into the result record as it is: it must be an object */
    j = cJSON_ParseWithLength(val, vlen);
    rc = cJSON_IsObject(j) ? 0 : NSED_ESTORE;
    cJSON_Delete(j);
    if (rc) {
        nsed_error(err, rc, "not a JSON object");
        return damaged(txn, err, "broker decision", qid, rc);
    }
    s->broker_record = strndup(val, vlen);
    return s->broker_record ? 0 : NSED_ENOMEM;
}

/* The context a resumed question started with. A question started before
 * the workflow wanted one gets the context of now (and keeps it: it is
 * written with its next commit). */
static int read_qctx(struct loop *L, store_txn *txn, const char *qid,
                     slot *s)
{
    store_key key;
    size_t vlen;
    const void *val;
    int rc = store_keys_question(qid, STORE_KEYS_CONTEXT, 0, &key);

    if (!rc)
        rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND) {
        rc = runner_qctx_new(L->wf, L->view, &L->fitted, s->st, &s->qctx,
                             &s->ctx_json);
        s->dirty = rc == 0;
        return rc;
    }
    if (rc)
        return nsed_error(L->err, rc, "cannot read the context of %s", qid);
    rc = runner_qctx_parse(L->wf, val, vlen, &s->qctx, L->err);
    return rc ? damaged(txn, L->err, "context", qid, rc) : 0;
}

/* The model of a new question's self-consistency baseline, from the
 * estimates the broker decides on now (the question's start). */
static int choose_selfcons(struct loop *L, state *st)
{
    double *p_g;
    int rc;

    if (!st->sc.on)
        return 0;
    p_g = calloc(L->wf->nmodels, sizeof *p_g);
    if (!p_g)
        return NSED_ENOMEM;
    for (size_t m = 0; m < L->wf->nmodels; m++) {
        telemetry_estimate e;

        telemetry_estimate_for(L->view, L->wf, m, (int)st->nseats, &e);
        p_g[m] = e.p_g;
    }
    rc = selfcons_choose(st, L->wf, p_g);
    free(p_g);
    return rc;
}

/* Staff a new question: the broker decides now, on the telemetry the
 * store has committed so far. A question no team can staff is left
 * incomplete with the broker's reason (a later run decides again). */
static int decide(struct loop *L, const question *q, slot *s)
{
    broker_decision *d = NULL;
    state_question sq = {.id = q->id, .text = q->text,
                         .reference = q->answer,
                         .tags = (const char *const *)q->tags,
                         .ntags = q->ntags};
    int rc;

    rc = broker_decide_question(L->wf, L->view, sq.tags, sq.ntags, q->id, &d,
                                L->err);
    if (rc)
        return rc;
    rc = broker_decision_json(L->wf, d, &s->decision_json);
    if (!rc && !(s->broker_record = strdup(s->decision_json)))
        rc = NSED_ENOMEM;
    if (rc)
        goto out;
    if (d->staffed) {
        rc = state_new(L->wf, &sq, d->seats.seats, d->seats.nseats, &s->st,
                       L->err);
        if (!rc)
            rc = choose_selfcons(L, s->st);
        if (!rc && runner_qctx_wanted(L->wf))
            rc = runner_qctx_new(L->wf, L->view, &L->fitted, s->st, &s->qctx,
                                 &s->ctx_json);
        if (rc == NSED_ENOMEM)
            nsed_error(L->err, rc, "out of memory");
        s->dirty = rc == 0;
        goto out;
    }
    rc = runner_unstaffed_marker(d->reason, &s->marker_json,
                                 &s->marker_error);
    if (!rc && !(s->qid = strdup(q->id)))
        rc = NSED_ENOMEM;
    if (!rc)
        s->phase = SLOT_INCOMPLETE;
out:
    broker_decision_free(d);
    return rc;
}

typedef struct fill_read {
    fill_ctx *fc;
    store_txn *txn;
    const char *qid; /* the question whose state is being read */
    int rc;
} fill_read;

static int fill_fn(store_txn *txn, void *arg, nsed_err *err)
{
    fill_read *fr = arg;
    int rc;

    fr->txn = txn;
    rc = questions_scan(txn, fr->fc->L->next_seq, fill_one, fr, err);
    if (rc == 1) /* stopped because enough were loaded */
        rc = 0;
    if (!rc && fr->rc)
        rc = fr->rc;
    return rc;
}

/* state_round_fetch_fn of a question's archived rounds in the fill's
 * transaction (arg: the fill_read; fr->qid the question). */
static int fetch_round(void *arg, int index, const void **json, size_t *len,
                       nsed_err *err)
{
    fill_read *fr = arg;
    store_key key;
    int rc = store_keys_question(fr->qid, STORE_KEYS_ROUND, (uint32_t)index,
                                 &key);

    if (!rc)
        rc = store_get(fr->txn, STORE_STATE, key.bytes, key.len, json, len);
    if (rc == NSED_ENOTFOUND)
        return nsed_error(err, NSED_EINVAL,
                          "round %d is referenced but not archived", index);
    return rc;
}

/* Load question q into a new slot unless it has a result already. Returns
 * 1 to stop the scan. */
static int fill_one(const question *q, uint64_t seq, void *arg)
{
    fill_read *fr = arg;
    fill_ctx *fc = fr->fc;
    struct loop *L = fc->L;
    const void *val;
    size_t vlen;
    store_key key;
    slot *s;
    bool retry = false;
    int rc;

    if (seq >= L->end_seq || fc->want == 0)
        return 1;
    fc->last_seq = seq;
    fc->scanned_any = true;
    L->scanned++;
    rc = store_keys_result(q->id, &key);
    if (!rc)
        rc = store_get(fr->txn, STORE_RESULTS, key.bytes, key.len, &val,
                       &vlen);
    if (rc == 0) {
        enum state_status outcome;

        rc = runner_result_outcome(val, vlen, &outcome);
        if (rc) {
            nsed_error(L->err, rc, "not a result record");
            fr->rc = damaged_in(fr->txn, L->err, STORE_RESULTS, "result",
                                q->id, rc);
            return 1;
        }
        if (outcome != STATE_STATUS_FAILED || !L->opts->retry_failed) {
            L->sum->already_done++;
            count_outcome(L->sum, outcome);
            return 0;
        }
        retry = true; /* --retry-failed: run it again */
        rc = NSED_ENOTFOUND;
    }
    if (rc != NSED_ENOTFOUND) {
        fr->rc = nsed_error(L->err, rc, "cannot read the result of %s",
                            q->id);
        return 1;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        fr->rc = nsed_error(L->err, NSED_ENOMEM, "out of memory");
        return 1;
    }
    rc = store_keys_question(q->id, STORE_KEYS_STATE, 0, &key);
    if (!rc)
        rc = store_get(fr->txn, STORE_STATE, key.bytes, key.len, &val,
                       &vlen);
    if (rc == 0) {
        fr->qid = q->id;
        rc = state_from_json_archived(val, vlen, L->wf, fetch_round, fr, &s->st,
                                      L->err);
        if (rc)
            rc = damaged(fr->txn, L->err, "state", q->id, rc);
        if (!rc && retry && s->st->stage != STATE_STAGE_FINISHED) {
            /* stopped mid-way: resume it where it stopped */
            s->st->status = STATE_STATUS_ACTIVE;
            free(s->st->failure);
            s->st->failure = NULL;
        }
        if (!rc)
            rc = read_decision(fr->txn, q->id, s, L->err);
        if (!rc && runner_qctx_wanted(L->wf))
            rc = read_qctx(L, fr->txn, q->id, s);
    } else if (rc == NSED_ENOTFOUND) {
        rc = decide(L, q, s);
    }
    if (!rc)
        rc = runner_question_copy(q, &s->q);
    if (rc) {
        if (rc == NSED_ENOMEM)
            nsed_error(L->err, rc, "out of memory");
        slot_free(s);
        fr->rc = rc;
        return 1;
    }
    s->drop_result = retry;
    s->dirty = s->dirty || retry;
    s->next = fc->loaded;
    fc->loaded = s;
    fc->want--;
    return 0;
}

/* ---- admission while endpoints are down -------------------------------- */

static bool model_id_paused(const struct loop *L, const char *id)
{
    for (size_t i = 0; i < L->wf->nmodels; i++)
        if (!strcmp(L->wf->models[i].id, id))
            return gateway_model_paused(L->gw, i);
    return false;
}

/* Whether role ro can staff its seats with no model paused by its
 * breaker. fixed: the models that fill its seats (the first `count`
 * listed, or every admitted one when it names families) must all be
 * up; knapsack: one admitted model up is enough. */
static bool role_servable(const struct loop *L, const workflow_role *ro)
{
    bool fixed = L->wf->broker.policy == WORKFLOW_POLICY_FIXED;

    if (fixed && ro->nmodels > 0 && ro->nfamilies == 0) {
        for (size_t k = 0; k < ro->nmodels && k < (size_t)ro->count; k++)
            if (model_id_paused(L, ro->models[k]))
                return false;
        return true;
    }
    for (size_t k = 0; k < ro->nallowed; k++) {
        bool paused = gateway_model_paused(L->gw, ro->allowed[k]);

        if (fixed && paused)
            return false;
        if (!fixed && !paused)
            return true;
    }
    return fixed;
}

static bool any_team_servable(const struct loop *L)
{
    for (size_t t = 0; t < L->wf->nteams; t++) {
        const workflow_team *tm = &L->wf->teams[t];
        bool ok = true;

        for (size_t r = 0; r < tm->nroles && ok; r++)
            ok = role_servable(L, &tm->roles[r]);
        if (ok)
            return true;
    }
    return false;
}

/* Say on_event's line when admission stops: which models are paused. */
static void event_waiting(struct loop *L)
{
    char names[512] = "";
    size_t n = 0, len = 0;

    if (!L->opts->on_event)
        return;
    for (size_t i = 0; i < L->wf->nmodels; i++) {
        int w;

        if (!gateway_model_paused(L->gw, i))
            continue;
        w = snprintf(names + len, sizeof names - len, "%s%s", n ? ", " : "",
                     L->wf->models[i].id);
        if (w > 0 && (size_t)w < sizeof names - len)
            len += (size_t)w;
        n++;
    }
    {
        char line[768];

        snprintf(line, sizeof line,
                 "waiting: model%s %s %s paused; no team can be served "
                 "(no new questions start; the run gives up after %.0f s "
                 "of this)",
                 n == 1 ? "" : "s", names, n == 1 ? "is" : "are",
                 runner_outage_budget(L->opts));
        L->opts->on_event(L->opts->cb_ctx, line);
    }
}

/* Track whether some team can be served (every turn, before fill): says
 * so once when none can any more and once when one can again. */
static void watch_servable(struct loop *L)
{
    if (L->opts->dry_run)
        return;
    for (size_t i = 0; i < L->wf->nmodels; i++)
        runner_breakers_note(L->breakers, i, gateway_model_paused(L->gw, i));
    if (any_team_servable(L)) {
        if (L->unservable_since >= 0 && L->opts->on_event)
            L->opts->on_event(L->opts->cb_ctx,
                              "resuming: a team can be served again; new "
                              "questions start");
        L->unservable_since = -1;
        return;
    }
    if (L->unservable_since < 0) {
        L->unservable_since = now_s();
        event_waiting(L);
    }
}

/* How many questions fill may start now. While no team can be served no
 * new question starts, except one when none is active: its calls are
 * what lets a paused breaker probe its endpoint again. */
static size_t admissible(const struct loop *L)
{
    if (L->unservable_since < 0)
        return L->max_active - L->nactive;
    return L->nactive == 0 ? 1 : 0;
}

/* True when no team has been servable for the outage budget. */
static bool outage_over(const struct loop *L)
{
    return L->unservable_since >= 0 &&
           now_s() - L->unservable_since >= runner_outage_budget(L->opts);
}

/* Top up the active list to max_active questions (fewer while no team can
 * be served: admissible). */
static int fill(struct loop *L)
{
    for (;;) {
        size_t want = L->nactive < L->max_active && L->next_seq < L->end_seq
                          ? admissible(L)
                          : 0;
        fill_ctx fc = {.L = L, .want = want};
        fill_read fr = {.fc = &fc};
        slot *s, *rev = NULL;
        int rc;

        if (want == 0)
            break;

        for (size_t i = 0; i < L->wf->nmodels; i++) {
            gateway_stats gs;

            runner_telemetry_current(L->tele, L->gw, i, &gs);
            telemetry_set_calls(L->view, i, &gs);
        }
        rc = store_read(L->st, fill_fn, &fr, L->err);
        if (rc) {
            while (fc.loaded) {
                s = fc.loaded;
                fc.loaded = s->next;
                slot_free(s);
            }
            return rc;
        }
        if (!fc.scanned_any) {
            L->next_seq = L->end_seq;
            break;
        }
        L->next_seq = fc.last_seq + 1;
        /* reverse into question order and start each */
        while (fc.loaded) {
            s = fc.loaded;
            fc.loaded = s->next;
            s->next = rev;
            rev = s;
        }
        while (rev) {
            s = rev;
            rev = s->next;
            s->next = L->active;
            L->active = s;
            L->nactive++;
            rc = s->phase == SLOT_LOADED ? step(L, s) : 0;
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- commits ------------------------------------------------------------ */

/* Put value under STORE_STATE key rec of question id. */
static int put_state(store_txn *txn, const char *id, enum store_keys_qrec rec,
                     uint32_t round, const char *value)
{
    store_key key;
    int rc = store_keys_question(id, rec, round, &key);

    if (!rc)
        rc = store_put(txn, STORE_STATE, key.bytes, key.len, value,
                       strlen(value));
    return rc;
}

/* What one question adds to the commit. */
static int commit_slot(store_txn *txn, const slot *s)
{
    const char *id = slot_id(s);
    bool incomplete = s->phase == SLOT_INCOMPLETE;
    store_key key;
    int rc = 0;

    if (s->decision_json)
        rc = put_state(txn, id, STORE_KEYS_BROKER, 0, s->decision_json);
    if (!rc && s->ctx_json)
        rc = put_state(txn, id, STORE_KEYS_CONTEXT, 0, s->ctx_json);
    for (size_t i = 0; i < s->nrounds && !rc; i++)
        rc = put_state(txn, id, STORE_KEYS_ROUND,
                       (uint32_t)s->rounds[i].round, s->rounds[i].json);
    if (!rc && s->state_json)
        rc = put_state(txn, id, STORE_KEYS_STATE, 0, s->state_json);
    if (!rc && incomplete) {
        rc = put_state(txn, id, STORE_KEYS_INCOMPLETE, 0, s->marker_json);
    } else if (!rc) {
        rc = store_keys_question(id, STORE_KEYS_INCOMPLETE, 0, &key);
        if (!rc)
            rc = store_del(txn, STORE_STATE, key.bytes, key.len);
        if (rc == NSED_ENOTFOUND)
            rc = 0;
    }
    if (!rc && s->drop_result && s->phase != SLOT_FINISHED) {
        rc = store_keys_result(id, &key);
        if (!rc)
            rc = store_del(txn, STORE_RESULTS, key.bytes, key.len);
        if (rc == NSED_ENOTFOUND)
            rc = 0;
    }
    if (!rc && s->phase == SLOT_FINISHED) {
        rc = store_keys_result(id, &key);
        if (!rc)
            rc = store_put(txn, STORE_RESULTS, key.bytes, key.len,
                           s->result_json, strlen(s->result_json));
    }
    return rc;
}

/* The replies answered since the last commit and the call statistics
 * they add to (inside a store_write; replayable). */
static int put_replies(store_txn *txn, struct loop *L, nsed_err *err)
{
    int rc = gateway_put_records(L->gw, txn, err);

    return rc ? rc : runner_telemetry_put(txn, L->tele, L->wf, L->gw);
}

/* The replies read by this turn's poll, with the call statistics, in a
 * transaction of their own before any question steps: a reply holds its
 * model's slot until it is durable (gateway.h), so the slots of a model
 * with requests queued are free again, and those requests out, one fsync
 * after the replies arrive instead of after the whole turn. A kill before
 * the questions' commit loses nothing: their next run answers the calls
 * from the ledger. */
static int replies_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = put_replies(txn, arg, err);

    if (rc)
        return nsed_error(err, rc, "cannot commit to the store: %s",
                          nsed_strerror(rc));
    return 0;
}

static int commit_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct loop *L = arg;
    int rc;

    /* The calls answered since the last commit go in the same transaction
     * as the states built from them: one fsync for both. */
    rc = put_replies(txn, L, err);
    for (slot *s = L->active; s && !rc; s = s->next)
        if (s->dirty || s->phase == SLOT_INCOMPLETE)
            rc = commit_slot(txn, s);
    if (!rc)
        rc = telemetry_commit(txn, L->wf, L->pending);
    if (!rc)
        rc = runner_rounds_commit(txn, &L->rounds_pending);
    if (!rc)
        rc = runner_breakers_put(txn, L->breakers, L->wf, L->run_ended);
    if (rc)
        return nsed_error(err, rc, "cannot commit to the store: %s",
                          nsed_strerror(rc));
    return 0;
}

static int commit_replies(struct loop *L)
{
    int rc;

    if (L->opts->dry_run || !gateway_records_block(L->gw))
        return 0;
    rc = store_write(L->st, replies_fn, L, L->err);
    if (rc)
        return rc;
    gateway_records_committed(L->gw);
    gateway_kick(L->gw);
    return 0;
}

/* Say on_event's warning once when the first RUNNER_NO_ANSWER_WARN
 * questions finished in this run all ended without an extracted answer:
 * the pattern (or extractor) most likely never matches the replies. */
static void warn_no_answers(struct loop *L, const slot *s)
{
    char line[256];

    if (s->st->final_answer || !L->opts->on_event)
        return;
    if (++L->no_answer_seen != RUNNER_NO_ANSWER_WARN ||
        L->sum->finished != RUNNER_NO_ANSWER_WARN)
        return;
    snprintf(line, sizeof line,
             "warning: none of the first %d finished questions has an "
             "extracted answer: answer.extract (%s) matched no proposal; "
             "check answer.pattern against a reply",
             RUNNER_NO_ANSWER_WARN,
             L->wf->answer.pattern ? L->wf->answer.pattern : "no pattern");
    L->opts->on_event(L->opts->cb_ctx, line);
}

/* Say on_event's line for an incomplete question. */
static void event_incomplete(struct loop *L, const slot *s)
{
    char *line = NULL;

    if (!L->opts->on_event)
        return;
    if (asprintf(&line, "question %s left incomplete: %s", slot_id(s),
                 s->marker_error) < 0)
        return; /* out of memory for a log line: the summary counts it */
    L->opts->on_event(L->opts->cb_ctx, line);
    free(line);
}

/* Say on_event's line for a question that failed for good. */
static void event_failed(struct loop *L, const slot *s)
{
    char *line = NULL;

    if (!L->opts->on_event)
        return;
    if (asprintf(&line, "question %s failed: %s", slot_id(s),
                 s->st->failure ? s->st->failure : "?") < 0)
        return; /* out of memory for a log line: the summary counts it */
    L->opts->on_event(L->opts->cb_ctx, line);
    free(line);
}

/* Count a question's outcome (a finished one) into the summary. */
static void count_outcome(runner_summary *sum, enum state_status st)
{
    switch (st) {
    case STATE_STATUS_DONE:
        sum->done++;
        break;
    case STATE_STATUS_DEGRADED:
        sum->degraded++;
        break;
    case STATE_STATUS_FAILED:
    case STATE_STATUS_INCOMPLETE: /* finished without an answer */
        sum->failed++;
        break;
    case STATE_STATUS_ACTIVE: /* not finished: cannot be counted here */
        break;
    }
}

/* Take the questions that are done with out of the active list (counting
 * them into the summary). */
static void drop_done(struct loop *L)
{
    slot **pp = &L->active;

    while (*pp) {
        slot *s = *pp;

        switch (s->phase) {
        case SLOT_LOADED:
        case SLOT_WAITING:
        case SLOT_READY:
            pp = &s->next;
            continue;
        case SLOT_DRY:
            if (s->outstanding > 0) {
                pp = &s->next;
                continue;
            }
            L->sum->dry_run++;
            break;
        case SLOT_FINISHED:
            L->sum->finished++;
            L->done_total++;
            count_outcome(L->sum, s->st->status);
            warn_no_answers(L, s);
            if (s->st->status == STATE_STATUS_FAILED)
                event_failed(L, s);
            break;
        case SLOT_INCOMPLETE:
            L->sum->incomplete++;
            event_incomplete(L, s);
            break;
        }
        *pp = s->next;
        L->nactive--;
        slot_free(s);
    }
}

/* Write every changed question in one transaction, then drop the
 * questions that are finished or incomplete. */
static int commit(struct loop *L)
{
    bool any = false;
    int rc;

    if (L->opts->dry_run) {
        drop_done(L);
        return 0;
    }
    for (slot *s = L->active; s; s = s->next) {
        if (!s->dirty && s->phase != SLOT_INCOMPLETE)
            continue;
        any = true;
        if (s->dirty && !s->state_json) {
            rc = state_to_json_checkpoint(s->st, &s->state_json);
            if (rc)
                return nsed_error(L->err, rc, "out of memory");
        }
    }
    if (!any && gateway_records_pending(L->gw) == 0 &&
        !runner_breakers_dirty(L->breakers) &&
        now_s() - L->last_telemetry < 5.0)
        return 0;
    rc = store_write(L->st, commit_fn, L, L->err);
    if (rc)
        return rc;
    gateway_records_committed(L->gw);
    runner_breakers_committed(L->breakers);
    telemetry_add(L->view, L->pending);
    memset(L->pending, 0, L->wf->nmodels * sizeof *L->pending);
    runner_rounds_add(&L->rounds, &L->rounds_pending);
    memset(&L->rounds_pending, 0, sizeof L->rounds_pending);
    if (runner_fitted_update(&L->fitted, &L->rounds))
        return nsed_error(L->err, NSED_ENOMEM, "out of memory");
    L->last_telemetry = now_s();
    for (slot *s = L->active; s; s = s->next) {
        s->dirty = false;
        s->drop_result = false;
        slot_clear_pending(s);
    }
    drop_done(L);
    return 0;
}

/* ---- progress and events ----------------------------------------------- */

/* Model calls a question takes: the mean over the questions this run is
 * done with, whose calls are those the gateway answered minus those of
 * the questions still active; before any, two per seat per round for the
 * middle of the workflow's round range (see runner_progress). */
static double calls_per_question(const struct loop *L, double answered)
{
    size_t gone = L->sum->finished + L->sum->incomplete, seats = 0, n = 0;
    double active_calls = 0;

    for (const slot *s = L->active; s; s = s->next) {
        active_calls += (double)s->answered;
        if (s->st) {
            seats += s->st->nseats;
            n++;
        }
    }
    if (gone > 0 && answered > active_calls)
        return (answered - active_calls) / (double)gone;
    if (n == 0)
        return 0;
    return 2.0 * (double)seats / (double)n *
           (L->wf->rounds.min + L->wf->rounds.max) / 2.0;
}

/* Seconds to the end: the calls still to make at the rate calls were
 * answered so far (runner_progress says why calls, not questions). */
static bool estimate_eta(const struct loop *L, const gateway_stats *t,
                         double el, double *eta)
{
    size_t todo = L->sum->questions, done = L->done_total;
    double answered = (double)(t->calls + t->ledger_hits + t->cache_hits);
    double active_calls = 0;
    double per_q, left, remaining, floor_calls;

    if (answered <= 0 || el <= 0 || todo <= done + L->sum->incomplete)
        return false;
    per_q = calls_per_question(L, answered);
    if (per_q <= 0)
        return false;
    for (const slot *s = L->active; s; s = s->next)
        active_calls += (double)s->answered;
    left = (double)(todo - done - L->sum->incomplete);
    remaining = left * per_q - active_calls;
    /* calls already submitted are still to come whatever the mean says */
    floor_calls = (double)(gateway_in_flight(L->gw) + gateway_pending(L->gw));
    if (remaining < floor_calls)
        remaining = floor_calls;
    *eta = remaining / (answered / el);
    return true;
}

/* Report progress through on_progress (at most every 0.25 s unless
 * final). */
static void progress(struct loop *L, bool final)
{
    gateway_stats t;
    double now = now_s(), el = now - L->started;
    runner_progress p = {0};

    if (!L->opts->on_progress || (!final && now - L->last_progress < 0.25))
        return;
    L->last_progress = now;
    gateway_stats_total(L->gw, &t);
    p.has_eta = estimate_eta(L, &t, el, &p.eta_s);
    p.done = L->done_total;
    p.total = L->sum->questions;
    p.active = L->nactive;
    p.in_flight = gateway_in_flight(L->gw);
    p.tokens = t.prompt_tokens + t.completion_tokens;
    p.cost_usd = t.cost_usd;
    p.retries = t.retries;
    for (size_t i = 0; i < L->wf->nmodels; i++) {
        if (!gateway_model_paused(L->gw, i))
            continue;
        if (p.npaused < RUNNER_PROGRESS_PAUSED_MAX)
            p.paused[p.npaused] = L->wf->models[i].id;
        p.npaused++;
    }
    /* the rate so far says nothing about a paused model's pace: an ETA
     * from it would climb for as long as the pause lasts */
    if (p.npaused > 0)
        p.has_eta = false;
    p.elapsed_s = el;
    p.final = final;
    L->opts->on_progress(L->opts->cb_ctx, &p);
}

/* The gateway's log lines (endpoint down/up) go to on_event. */
static void on_gateway_log(const char *line, void *user)
{
    const struct loop *L = user;

    if (L->opts->on_event)
        L->opts->on_event(L->opts->cb_ctx, line);
}

/* ---- the loop ----------------------------------------------------------- */

double runner_outage_budget(const runner_opts *opts)
{
    return opts->outage_budget_s > 0 ? opts->outage_budget_s
                                     : RUNNER_OUTAGE_BUDGET_S;
}

/* The questions a run goes through: the first opts->limit of the store
 * (all without a limit) and one past the sequence number of the last of
 * them (sequence numbers need not be dense: a shard, a merged store). */
struct range {
    size_t limit;
    size_t n;
    uint64_t end;
};

static int count_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct range *r = arg;
    int rc = questions_count(txn, &r->n);

    if (!rc && r->limit && r->limit < r->n)
        r->n = r->limit;
    if (!rc)
        rc = questions_seq_end(txn, r->n, &r->end);
    if (rc)
        return nsed_error(err, rc, "cannot count the questions");
    return 0;
}

static int read_rounds_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = runner_rounds_read(txn, arg);

    if (rc == NSED_ESTORE)
        return store_corrupt(err, txn, STORE_TELEMETRY,
                             "the per-round record \"rounds\"",
                             "not the counts nsed writes");
    if (rc)
        return nsed_error(err, rc, "cannot read the per-round telemetry");
    return 0;
}

/* Phase 3: true when stop_fd (>= 0) has something to read. */
static bool stop_requested(const struct loop *L)
{
    char sink[256];

    return L->opts->stop_fd >= 0 &&
           read(L->opts->stop_fd, sink, sizeof sink) > 0;
}

/* Phase 4: step every question whose calls are all answered. */
static int step_ready(struct loop *L)
{
    int rc = 0;

    for (slot *s = L->active; s && !rc; s = s->next)
        if (s->phase == SLOT_READY)
            rc = step(L, s);
    return rc;
}

/* Phase 10: with questions active but no call in flight or queued and none
 * waiting or ready, nothing can move again: only a bug gets here. */
static int check_stalled(struct loop *L)
{
    if (L->nactive == 0 || gateway_in_flight(L->gw) > 0 ||
        gateway_pending(L->gw) > 0)
        return 0;
    for (slot *s = L->active; s; s = s->next)
        if (s->outstanding > 0 || s->phase == SLOT_READY)
            return 0;
    return nsed_error(L->err, NSED_EINTERNAL,
                      "internal: %zu questions stalled", L->nactive);
}

/* Phases 2 and 7: commit the replies now when that frees a slot a queued
 * request waits for; phase 7 first takes in the replies that arrived
 * during the step and the commit, without waiting. */
static int record(struct loop *L, bool poll)
{
    int rc = poll ? gateway_poll(L->gw, 0, L->err) : 0;

    return rc ? rc : commit_replies(L);
}

/* The poll waits for the network only when nothing else can move: not
 * while a question is ready to step (its replies came in the last turn's
 * catch up) or replies wait to be recorded for a queued request. */
static int poll_wait_ms(const struct loop *L)
{
    if (gateway_records_block(L->gw))
        return 0;
    for (const slot *s = L->active; s; s = s->next)
        if (s->phase == SLOT_READY)
            return 0;
    return 100;
}

/* One turn of the loop: the phases listed in runner.h. */
static int loop_turn(struct loop *L)
{
    int rc = gateway_poll(L->gw, poll_wait_ms(L), L->err); /* 1. poll */

    if (!rc)
        rc = record(L, false);                  /* 2. record */
    if (rc)
        return rc;
    if (stop_requested(L)) {                    /* 3. stop */
        L->sum->interrupted = true;
        return 0;
    }
    rc = step_ready(L);                         /* 4. step */
    /* The phases' comments stay aligned. */
    /* clang-format off */
    if (!rc)
        rc = commit(L);                         /* 5. commit */
    if (!rc)
        gateway_kick(L->gw);                    /* 6. send */
    if (!rc)
        rc = record(L, true);                   /* 7. catch up */
    if (!rc) {
        watch_servable(L);
        rc = fill(L);                           /* 8. fill */
    }
    progress(L, false);                         /* 9. progress */
    if (!rc)
        rc = check_stalled(L);                  /* 10. check */
    if (!rc && outage_over(L)) {                /* 11. outage budget */
        L->sum->gave_up = true;
        L->sum->outage_s = now_s() - L->unservable_since;
    }
    /* clang-format on */
    return rc;
}

/* Set up L for a run: the question range, the telemetry, the gateway. */
static int loop_open(struct loop *L, nsed_err *err)
{
    const workflow *wf = L->wf;
    gateway_opts go = {0};
    struct range range = {.limit = L->opts->limit};
    size_t caps = 0;
    int rc;

    rc = store_read(L->st, count_fn, &range, err);
    if (rc)
        return rc;
    L->end_seq = range.end;
    L->sum->questions = range.n;
    for (size_t i = 0; i < wf->nmodels; i++)
        caps += (size_t)wf->models[i].max_concurrency;
    L->max_active = L->opts->max_active ? L->opts->max_active : 2 * caps;
    if (L->max_active < 4)
        L->max_active = 4;

    rc = runner_telemetry_load(L->st, wf, &L->tele, err);
    if (!rc)
        rc = telemetry_read_store(L->st, wf, &L->view, err);
    if (!rc)
        rc = store_read(L->st, read_rounds_fn, &L->rounds, err);
    if (!rc && runner_fitted_update(&L->fitted, &L->rounds))
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    if (rc)
        return rc;
    L->pending = calloc(wf->nmodels, sizeof *L->pending);
    L->breakers = runner_breakers_new(wf->nmodels);
    if (!L->pending || !L->breakers)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    go.dry_run = L->opts->dry_run;
    go.log = on_gateway_log;
    go.log_user = L;
    go.jitter_seed = wf->seed;
    go.caller_commits = true;
    go.cache = L->opts->cache;
    /* In a dry run the ledger still answers what it holds; only the
     * calls that would go out are printed. */
    return gateway_new(wf, L->st, &go, &L->gw, err);
}

static void loop_close(struct loop *L)
{
    while (L->active) {
        slot *s = L->active;

        L->active = s->next;
        slot_free(s);
    }
    gateway_free(L->gw);
    runner_telemetry_free(L->tele);
    telemetry_free(L->view);
    free(L->pending);
    runner_breakers_free(L->breakers);
}

int runner_run(const workflow *wf, store *st, const runner_opts *opts,
               runner_summary *sum, nsed_err *err)
{
    struct loop L = {0};
    gateway_stats t;
    bool deferred = false;
    int rc;

    memset(sum, 0, sizeof *sum);
    L.wf = wf;
    L.st = st;
    L.opts = opts;
    L.sum = sum;
    L.err = err;
    L.ctx = stage_ctx_none();
    L.started = now_s();
    L.last_telemetry = L.started;
    L.unservable_since = -1;

    rc = loop_open(&L, err);
    if (rc)
        goto out;
    /* One flush per commit instead of two: a kill -9 still loses nothing
     * committed, and an OS crash at most the last commit (store.h); the
     * flush at the end below makes everything durable again. */
    rc = store_defer_meta_sync(st, true, err);
    if (rc)
        goto out;
    deferred = true;
    rc = fill(&L);
    L.done_total = sum->already_done;
    while (!rc && L.nactive > 0 && !sum->interrupted && !sum->gave_up)
        rc = loop_turn(&L);
    /* the breakers' last known state goes with the last commit */
    L.run_ended = true;
    runner_breakers_end(L.breakers);
    if (!rc)
        rc = commit(&L);
    if (sum->gave_up) {
        /* the questions in flight keep their last committed stage: the
         * same command resumes them */
        sum->incomplete += L.nactive;
        sum->not_started = sum->questions - L.scanned;
    }
    if (!rc)
        rc = gateway_flush(L.gw, err);
    progress(&L, true);
    gateway_stats_total(L.gw, &t);
    sum->calls = t.calls;
    sum->ledger_hits = t.ledger_hits;
    sum->cache_hits = t.cache_hits;
    sum->prompt_tokens = t.prompt_tokens;
    sum->completion_tokens = t.completion_tokens;
    sum->cost_usd = t.cost_usd;
out:
    if (deferred) {
        nsed_err serr = {0};
        int src = store_defer_meta_sync(st, false, rc ? &serr : err);

        if (!rc)
            rc = src;
    }
    loop_close(&L);
    sum->elapsed_s = now_s() - L.started;
    return rc;
}
