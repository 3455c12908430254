/* runner.c -- the event loop that drives questions through the stages. */
#include "pipeline/runner/runner.h"

#include "pipeline/broker/broker.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_int.h"
#include "pipeline/broker/telemetry.h"
#include "stages/stage.h"

#include <cjson/cJSON.h>
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

typedef struct slot {
    struct slot *next;     /* in the active list */
    state *st;
    question q;            /* for tags and meta */
    stage_requests reqs;   /* the requests in flight for the stage */
    stage_response *resps;
    char **contents;       /* copies of the replies (resps point here) */
    char **errors;
    call *calls;
    size_t outstanding;    /* calls not answered yet */
    bool ready;            /* every call answered: reduce next */
    bool infra_failed;     /* some call failed after every retry */
    bool dry;              /* dry run: requests printed, nothing more */
    bool dirty;            /* state changed since the last commit */
    bool finished;         /* result built, commit then drop */
    bool incomplete;       /* marker built, commit then drop */
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

size_t runner_state_key(const char *qid, char tag, int round,
                        unsigned char *key)
{
    size_t n = strlen(qid);

    memcpy(key, qid, n);
    key[n++] = '\0';
    key[n++] = (unsigned char)tag;
    if (tag == 'r') {
        uint32_t r = (uint32_t)round;

        key[n++] = (unsigned char)(r >> 24);
        key[n++] = (unsigned char)(r >> 16);
        key[n++] = (unsigned char)(r >> 8);
        key[n++] = (unsigned char)r;
    }
    return n;
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
    s->ready = false;
    s->infra_failed = false;
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
        s->dry = true;
    } else if (res->code == 0) {
        s->contents[c->idx] = strdup(res->content);
        r->ok = s->contents[c->idx] != NULL;
        r->content = s->contents[c->idx];
        r->prompt_tokens = res->usage.prompt_tokens;
        r->completion_tokens = res->usage.completion_tokens;
        r->cost_usd = res->cost_usd;
        if (!r->ok) {
            r->infra = true;
            s->infra_failed = true;
        }
    } else {
        s->errors[c->idx] = strdup(res->error ? res->error : "call failed");
        r->ok = false;
        r->infra = true;
        r->error = s->errors[c->idx];
        s->infra_failed = true;
    }
    if (--s->outstanding == 0)
        s->ready = true;
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

/* Advance s as far as it goes without waiting for the network. */
static int step(struct loop *L, slot *s)
{
    int rc;

    if (s->ready) {
        if (s->dry) {
            slot_clear_calls(s);
            return 0;
        }
        if (s->infra_failed && !L->opts->allow_degraded) {
            rc = runner_incomplete_marker(s->st, s->resps, s->reqs.n,
                                          &s->marker_json, &s->marker_error);
            if (rc)
                return nsed_error(L->err, rc, "out of memory");
            s->incomplete = true;
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
                            &s->qctx,
                            &s->result_json, L->err);
    if (rc)
        return rc;
    s->finished = true;
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
    unsigned char key[STORE_KEY_MAX + 8];
    size_t klen = runner_state_key(qid, 'b', 0, key), vlen;
    const void *val;
    int rc = store_get(txn, STORE_STATE, key, klen, &val, &vlen);

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
    unsigned char key[STORE_KEY_MAX + 8];
    size_t klen = runner_state_key(qid, 'c', 0, key), vlen;
    const void *val;
    int rc = store_get(txn, STORE_STATE, key, klen, &val, &vlen);

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
    s->incomplete = rc == 0;
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
    size_t vlen, klen;
    unsigned char key[STORE_KEY_MAX + 8];
    slot *s;
    int rc;

    if (seq >= L->end_seq || fc->want == 0)
        return 1;
    fc->last_seq = seq;
    fc->scanned_any = true;
    rc = store_get(fr->txn, STORE_RESULTS, q->id, strlen(q->id), &val, &vlen);
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
    klen = runner_state_key(q->id, 's', 0, key);
    rc = store_get(fr->txn, STORE_STATE, key, klen, &val, &vlen);
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
            rc = s->st ? step(L, s) : 0;
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- commits ------------------------------------------------------------ */

static int commit_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct loop *L = arg;
    unsigned char key[STORE_KEY_MAX + 8];
    size_t klen;
    int rc;

    /* The calls answered since the last commit go in the same transaction
     * as the states built from them: one fsync for both. */
    rc = gateway_put_records(L->gw, txn, err);
    for (slot *s = L->active; s && !rc; s = s->next) {
        const char *id;

        if (!s->dirty && !s->incomplete)
            continue;
        id = slot_id(s);
        if (s->decision_json) {
            klen = runner_state_key(id, 'b', 0, key);
            rc = store_put(txn, STORE_STATE, key, klen, s->decision_json,
                           strlen(s->decision_json));
        }
        if (!rc && s->ctx_json) {
            klen = runner_state_key(id, 'c', 0, key);
            rc = store_put(txn, STORE_STATE, key, klen, s->ctx_json,
                           strlen(s->ctx_json));
        }
        for (size_t i = 0; i < s->nrounds && !rc; i++) {
            klen = runner_state_key(id, 'r', s->rounds[i].round, key);
            rc = store_put(txn, STORE_STATE, key, klen, s->rounds[i].json,
                           strlen(s->rounds[i].json));
        }
        if (!rc && s->state_json) {
            klen = runner_state_key(id, 's', 0, key);
            rc = store_put(txn, STORE_STATE, key, klen, s->state_json,
                           strlen(s->state_json));
        }
        klen = runner_state_key(id, 'i', 0, key);
        if (!rc && s->incomplete) {
            rc = store_put(txn, STORE_STATE, key, klen, s->marker_json,
                           strlen(s->marker_json));
        } else if (!rc) {
            rc = store_del(txn, STORE_STATE, key, klen);
            if (rc == NSED_ENOTFOUND)
                rc = 0;
        }
        if (!rc && s->finished)
            rc = store_put(txn, STORE_RESULTS, id, strlen(id),
                           s->result_json, strlen(s->result_json));
    }
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

/* Write every changed question in one transaction, then drop the
 * questions that are finished or incomplete. */
static int commit(struct loop *L)
{
    bool any = false;
    slot **pp;
    int rc;

    if (L->opts->dry_run)
        goto drop;
    for (slot *s = L->active; s; s = s->next) {
        if (!s->dirty && !s->incomplete)
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
drop:
    pp = &L->active;
    while (*pp) {
        slot *s = *pp;
        bool idle_dry = s->dry && s->outstanding == 0;

        if (!s->finished && !s->incomplete && !idle_dry) {
            pp = &s->next;
            continue;
        }
        if (s->finished) {
            L->sum->finished++;
            L->done_total++;
            if (s->st->status == STATE_STATUS_DEGRADED)
                L->sum->degraded++;
        } else if (s->incomplete) {
            L->sum->incomplete++;
            if (L->opts->log)
                fprintf(L->opts->log, "\r\033[Kquestion %s left incomplete: "
                        "%s\n", slot_id(s), s->marker_error);
        } else {
            L->sum->dry_run++;
        }
        *pp = s->next;
        L->nactive--;
        slot_free(s);
    }
    return 0;
}

/* ---- progress ----------------------------------------------------------- */

static void progress(struct loop *L, bool final)
{
    gateway_stats t;
    double now = now_s(), el = now - L->started, eta = -1;
    size_t todo = L->sum->questions, done = L->done_total;
    size_t this_run = L->sum->finished + L->sum->incomplete;
    char etabuf[32] = "-";

    if (!L->opts->progress || (!final && now - L->last_progress < 0.25))
        return;
    L->last_progress = now;
    gateway_stats_total(L->gw, &t);
    if (this_run > 0 && todo > done) {
        size_t left = todo - done - L->sum->incomplete;

        eta = el / (double)this_run * (double)left;
        snprintf(etabuf, sizeof etabuf, "%d:%02d", (int)eta / 60,
                 (int)eta % 60);
    }
    fprintf(L->opts->progress,
            "\r\033[K%zu/%zu done, %zu active, %zu calls in flight, "
            "%.1fk tokens, $%.4f, ETA %s",
            done, todo, L->nactive, gateway_in_flight(L->gw),
            (double)(t.prompt_tokens + t.completion_tokens) / 1000.0,
            t.cost_usd, etabuf);
    if (final)
        fputc('\n', L->opts->progress);
    fflush(L->opts->progress);
}

static void on_log(const char *line, void *user)
{
    FILE *f = user;

    if (f) {
        fprintf(f, "\r\033[K%s\n", line);
        fflush(f);
    }
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

/* True when stop_fd (>= 0) has something to read. */
static bool stop_requested(int stop_fd)
{
    char sink[256];

    return stop_fd >= 0 && read(stop_fd, sink, sizeof sink) > 0;
}

static int read_rounds_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = runner_rounds_read(txn, arg);

    if (rc)
        return nsed_error(err, rc, "cannot read the per-round telemetry");
    return 0;
}

int runner_run(const workflow *wf, store *st, const runner_opts *opts,
               runner_summary *sum, nsed_err *err)
{
    struct loop L = {0};
    gateway_opts go = {0};
    gateway_stats t;
    size_t total = 0, caps = 0;
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

    rc = store_read(st, count_fn, &total, err);
    if (rc)
        return rc;
    L.end_seq = opts->limit && opts->limit < total ? opts->limit : total;
    sum->questions = (size_t)L.end_seq;
    for (size_t i = 0; i < wf->nmodels; i++)
        caps += (size_t)wf->models[i].max_concurrency;
    L.max_active = opts->max_active ? opts->max_active : 2 * caps;
    if (L.max_active < 4)
        L.max_active = 4;

    rc = runner_telemetry_load(st, wf, &L.tele, err);
    if (rc)
        return rc;
    rc = telemetry_read_store(st, wf, &L.view, err);
    if (rc)
        goto out;
    rc = store_read(st, read_rounds_fn, &L.rounds, err);
    if (rc)
        goto out;
    L.pending = calloc(wf->nmodels, sizeof *L.pending);
    if (!L.pending) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    go.dry_run = opts->dry_run;
    go.log = on_log;
    go.log_user = opts->log;
    go.jitter_seed = wf->seed;
    go.caller_commits = true;
    /* In a dry run the ledger still answers what it holds; only the
     * calls that would go out are printed. */
    rc = gateway_new(wf, st, &go, &L.gw, err);
    if (rc)
        goto out;

    rc = fill(&L);
    L.done_total = sum->already_done;
    while (!rc && L.nactive > 0) {
        rc = gateway_poll(L.gw, 100, err);
        if (rc)
            break;
        if (stop_requested(opts->stop_fd)) {
            /* Calls in flight are abandoned (a rerun sends them again);
             * everything finished is committed below. */
            sum->interrupted = true;
            break;
        }
        for (slot *s = L.active; s && !rc; s = s->next)
            if (s->ready)
                rc = step(&L, s);
        /* the requests just planned go out while the commit syncs */
        if (!rc)
            gateway_kick(L.gw);
        if (!rc)
            rc = commit(&L);
        if (!rc)
            rc = fill(&L);
        progress(&L, false);
        if (!rc && L.nactive > 0 && gateway_in_flight(L.gw) == 0 &&
            gateway_pending(L.gw) == 0) {
            /* Nothing can make progress: only a bug gets here. */
            bool waiting = false;

            for (slot *s = L.active; s; s = s->next)
                waiting |= s->outstanding > 0 || s->ready;
            if (!waiting)
                rc = nsed_error(err, NSED_EINVAL,
                                "internal: %zu questions stalled",
                                L.nactive);
        }
    }
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
    while (L.active) {
        slot *s = L.active;

        L.active = s->next;
        slot_free(s);
    }
    gateway_free(L.gw);
    runner_telemetry_free(L.tele);
    telemetry_free(L.view);
    free(L.pending);
    sum->elapsed_s = now_s() - L.started;
    return rc;
}
