/* runner.c -- the event loop that drives questions through the stages. */
#include "pipeline/runner/runner.h"

#include "pipeline/broker/broker.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_int.h"
#include "stages/stage.h"
#include "store/store_keys.h"

#include <assert.h>
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
    call *calls;
    size_t outstanding;    /* calls not answered yet */
    bool dirty;            /* changed since the last commit (apart from
                              the phase: a waiting question can have
                              reduced and planned in this turn) */
    char *result_json;
    char *marker_json;
    char *marker_error;    /* why it is incomplete (for the log) */
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
    runner_summary *sum;
    double started;
    double last_progress;
    double last_telemetry;
    size_t done_total;     /* questions with results (before + now) */
    runner_telemetry_base *tele;
    telemetry *view;       /* what the broker decides on */
    telemetry_counts *pending; /* observations of rounds archived since
                                  the last commit (per model) */
    runner_round_counts rounds;         /* per-round accuracy, committed */
    runner_round_counts rounds_pending; /* ... and since the last commit */
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
    free(s->resps);
    free(s->calls);
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
        r->infra = !r->ok;
    } else {
        s->errors[c->idx] = strdup(res->error ? res->error : "call failed");
        r->ok = false;
        r->infra = true;
        r->error = s->errors[c->idx];
    }
    if (--s->outstanding == 0 && s->phase == SLOT_WAITING)
        s->phase = SLOT_READY;
}

/* Send the stage's requests of s. */
static int submit_all(struct loop *L, slot *s)
{
    size_t n = s->reqs.n;

    s->resps = calloc(n, sizeof *s->resps);
    s->contents = calloc(n, sizeof *s->contents);
    s->errors = calloc(n, sizeof *s->errors);
    s->calls = calloc(n, sizeof *s->calls);
    if (!s->resps || !s->contents || !s->errors || !s->calls)
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
        s->calls[i].slot = s;
        s->calls[i].idx = i;
        gr.model = rq->model;
        gr.messages = msgs;
        gr.nmessages = rq->nmessages;
        gr.schema = rq->json_schema;
        gr.schema_name = rq->json_schema ? STAGE_SCHEMA_NAME : NULL;
        gr.has_seed = m->sampling.has_seed;
        gr.seed = (int64_t)rq->seed;
        gr.scope = s->st->qid;
        gr.seat = (int)rq->seat;
        gr.round = rq->round;
        gr.sample = rq->sample;
        rc = gateway_submit(L->gw, &gr, on_result, &s->calls[i], L->err);
        if (rc) {
            /* Calls already submitted will still report; keep the count
             * of those only, and stop the run. */
            s->outstanding -= n - i;
            return rc;
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

/* Advance s (loaded or ready) as far as it goes without waiting for the
 * network. */
static int step(struct loop *L, slot *s)
{
    int rc;

    if (s->phase == SLOT_READY) {
        if (slot_lost_calls(s) && !L->opts->allow_degraded) {
            rc = runner_incomplete_marker(s->st, s->resps, s->reqs.n,
                                          &s->marker_json, &s->marker_error);
            if (rc)
                return nsed_error(L->err, rc, "out of memory");
            s->phase = SLOT_INCOMPLETE;
            slot_clear_calls(s);
            return 0;
        }
        rc = reduce(L, s, s->resps, s->reqs.n);
        slot_clear_calls(s);
        if (rc)
            return rc;
    }
    while (s->st->stage != STATE_STAGE_FINISHED) {
        rc = stage_plan(s->st, L->wf, &s->reqs);
        if (rc)
            return nsed_error(L->err, rc, "%s: cannot plan stage %s: %s",
                              s->st->qid, state_stage_name(s->st->stage),
                              nsed_strerror(rc));
        if (s->reqs.n > 0)
            return submit_all(L, s);
        stage_requests_release(&s->reqs);
        rc = reduce(L, s, NULL, 0);
        if (rc)
            return rc;
    }
    rc = runner_result_json(L->wf, L->st, s->st, &s->q, s->broker_record,
                            &s->qctx, &s->result_json, L->err);
    if (rc)
        return rc;
    s->phase = SLOT_FINISHED;
    s->dirty = true;
    return 0;
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

/* The decision recorded for a question that has a state (absent in stores
 * written before the broker recorded its decisions). */
static int read_decision(store_txn *txn, const char *qid, slot *s)
{
    store_key key;
    size_t vlen;
    const void *val;
    int rc = store_keys_question(qid, STORE_KEYS_BROKER, 0, &key);

    if (!rc)
        rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
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
        rc = runner_qctx_new(L->wf, L->view, &L->rounds, s->st, &s->qctx,
                             &s->ctx_json);
        s->dirty = rc == 0;
        return rc;
    }
    if (rc)
        return nsed_error(L->err, rc, "cannot read the context of %s", qid);
    return runner_qctx_parse(L->wf, val, vlen, &s->qctx, L->err);
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

    rc = broker_decide(L->wf, L->view, sq.tags, sq.ntags, &d, L->err);
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
        if (!rc && runner_qctx_wanted(L->wf))
            rc = runner_qctx_new(L->wf, L->view, &L->rounds, s->st, &s->qctx,
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
    int rc;
} fill_read;

static int fill_fn(store_txn *txn, void *arg, nsed_err *err)
{
    fill_read *fr = arg;
    int rc;

    (void)err;
    fr->txn = txn;
    rc = questions_scan(txn, fr->fc->L->next_seq, fill_one, fr);
    if (rc == 1) /* stopped because enough were loaded */
        rc = 0;
    if (!rc && fr->rc)
        rc = fr->rc;
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
    int rc;

    if (seq >= L->end_seq || fc->want == 0)
        return 1;
    fc->last_seq = seq;
    fc->scanned_any = true;
    rc = store_keys_result(q->id, &key);
    if (!rc)
        rc = store_get(fr->txn, STORE_RESULTS, key.bytes, key.len, &val,
                       &vlen);
    if (rc == 0) {
        L->sum->already_done++;
        return 0;
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
        rc = state_from_json(val, vlen, L->wf, &s->st, L->err);
        if (!rc)
            rc = read_decision(fr->txn, q->id, s);
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
    s->next = fc->loaded;
    fc->loaded = s;
    fc->want--;
    return 0;
}

/* Top up the active list to max_active questions. */
static int fill(struct loop *L)
{
    while (L->nactive < L->max_active && L->next_seq < L->end_seq) {
        fill_ctx fc = {.L = L, .want = L->max_active - L->nactive};
        fill_read fr = {.fc = &fc};
        slot *s, *rev = NULL;
        int rc;

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
    if (!rc && s->phase == SLOT_FINISHED) {
        rc = store_keys_result(id, &key);
        if (!rc)
            rc = store_put(txn, STORE_RESULTS, key.bytes, key.len,
                           s->result_json, strlen(s->result_json));
    }
    return rc;
}

static int commit_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct loop *L = arg;
    int rc;

    /* The calls answered since the last commit go in the same transaction
     * as the states built from them: one fsync for both. */
    rc = gateway_put_records(L->gw, txn, err);
    for (slot *s = L->active; s && !rc; s = s->next)
        if (s->dirty || s->phase == SLOT_INCOMPLETE)
            rc = commit_slot(txn, s);
    if (!rc)
        rc = runner_telemetry_put(txn, L->tele, L->wf, L->gw);
    if (!rc)
        rc = telemetry_commit(txn, L->wf, L->pending);
    if (!rc)
        rc = runner_rounds_commit(txn, &L->rounds_pending);
    if (rc)
        return nsed_error(err, rc, "cannot commit to the store: %s",
                          nsed_strerror(rc));
    return 0;
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
            if (s->st->status == STATE_STATUS_DEGRADED)
                L->sum->degraded++;
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
            rc = state_to_json(s->st, &s->state_json);
            if (rc)
                return nsed_error(L->err, rc, "out of memory");
        }
    }
    if (!any && gateway_records_pending(L->gw) == 0 &&
        now_s() - L->last_telemetry < 5.0)
        return 0;
    rc = store_write(L->st, commit_fn, L, L->err);
    if (rc)
        return rc;
    gateway_records_committed(L->gw);
    telemetry_add(L->view, L->pending);
    memset(L->pending, 0, L->wf->nmodels * sizeof *L->pending);
    runner_rounds_add(&L->rounds, &L->rounds_pending);
    memset(&L->rounds_pending, 0, sizeof L->rounds_pending);
    L->last_telemetry = now_s();
    for (slot *s = L->active; s; s = s->next) {
        s->dirty = false;
        slot_clear_pending(s);
    }
    drop_done(L);
    return 0;
}

/* ---- progress and events ----------------------------------------------- */

/* Report progress through on_progress (at most every 0.25 s unless
 * final). */
static void progress(struct loop *L, bool final)
{
    gateway_stats t;
    double now = now_s(), el = now - L->started;
    size_t todo = L->sum->questions, done = L->done_total;
    size_t this_run = L->sum->finished + L->sum->incomplete;
    runner_progress p = {0};

    if (!L->opts->on_progress || (!final && now - L->last_progress < 0.25))
        return;
    L->last_progress = now;
    gateway_stats_total(L->gw, &t);
    if (this_run > 0 && todo > done) {
        size_t left = todo - done - L->sum->incomplete;

        p.has_eta = true;
        p.eta_s = el / (double)this_run * (double)left;
    }
    p.done = done;
    p.total = todo;
    p.active = L->nactive;
    p.in_flight = gateway_in_flight(L->gw);
    p.tokens = t.prompt_tokens + t.completion_tokens;
    p.cost_usd = t.cost_usd;
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

static int count_fn(store_txn *txn, void *arg, nsed_err *err)
{
    size_t *n = arg;
    int rc = questions_count(txn, n);

    if (rc)
        return nsed_error(err, rc, "cannot count the questions");
    return 0;
}

static int read_rounds_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = runner_rounds_read(txn, arg);

    if (rc)
        return nsed_error(err, rc, "cannot read the per-round telemetry");
    return 0;
}

/* Phase 2: true when stop_fd (>= 0) has something to read. */
static bool stop_requested(const struct loop *L)
{
    char sink[256];

    return L->opts->stop_fd >= 0 &&
           read(L->opts->stop_fd, sink, sizeof sink) > 0;
}

/* Phase 3: step every question whose calls are all answered. */
static int step_ready(struct loop *L)
{
    int rc = 0;

    for (slot *s = L->active; s && !rc; s = s->next)
        if (s->phase == SLOT_READY)
            rc = step(L, s);
    return rc;
}

/* Phase 8: with questions active but no call in flight or queued and none
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

/* One turn of the loop: the phases listed in runner.h. */
static int loop_turn(struct loop *L)
{
    int rc = gateway_poll(L->gw, 100, L->err); /* 1. poll */

    if (rc)
        return rc;
    if (stop_requested(L)) {                    /* 2. stop */
        L->sum->interrupted = true;
        return 0;
    }
    rc = step_ready(L);                         /* 3. step */
    /* The phases' comments stay aligned. */
    /* clang-format off */
    if (!rc)
        rc = commit(L);                         /* 4. commit */
    if (!rc)
        gateway_kick(L->gw);                    /* 5. send */
    /* clang-format on */
    if (!rc)
        rc = fill(L);                           /* 6. fill */
    progress(L, false);                         /* 7. progress */
    if (!rc)
        rc = check_stalled(L);                  /* 8. check */
    return rc;
}

/* Set up L for a run: the question range, the telemetry, the gateway. */
static int loop_open(struct loop *L, nsed_err *err)
{
    const workflow *wf = L->wf;
    gateway_opts go = {0};
    size_t total = 0, caps = 0;
    int rc;

    rc = store_read(L->st, count_fn, &total, err);
    if (rc)
        return rc;
    L->end_seq = L->opts->limit && L->opts->limit < total ? L->opts->limit
                                                         : total;
    L->sum->questions = (size_t)L->end_seq;
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
    if (rc)
        return rc;
    L->pending = calloc(wf->nmodels, sizeof *L->pending);
    if (!L->pending)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    go.dry_run = L->opts->dry_run;
    go.log = on_gateway_log;
    go.log_user = L;
    go.jitter_seed = wf->seed;
    go.caller_commits = true;
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
}

int runner_run(const workflow *wf, store *st, const runner_opts *opts,
               runner_summary *sum, nsed_err *err)
{
    struct loop L = {0};
    gateway_stats t;
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

    rc = loop_open(&L, err);
    if (rc)
        goto out;
    rc = fill(&L);
    L.done_total = sum->already_done;
    while (!rc && L.nactive > 0 && !sum->interrupted)
        rc = loop_turn(&L);
    if (!rc)
        rc = commit(&L);
    if (!rc)
        rc = gateway_flush(L.gw, err);
    progress(&L, true);
    gateway_stats_total(L.gw, &t);
    sum->calls = t.calls;
    sum->ledger_hits = t.ledger_hits;
    sum->prompt_tokens = t.prompt_tokens;
    sum->completion_tokens = t.completion_tokens;
    sum->cost_usd = t.cost_usd;
out:
    loop_close(&L);
    sum->elapsed_s = now_s() - L.started;
    return rc;
}
