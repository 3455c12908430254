/* runner_result.c -- the records the runner stores about a question: the
 * result (one export line) and the incomplete marker. */
#include "pipeline/base/json.h"
#include "pipeline/broker/broker.h"
#include "pipeline/runner/runner_int.h"
#include "stages/answer.h"
#include "stages/converge.h"
#include "stages/text.h"
#include "store/store_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int runner_question_copy(const question *src, question *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->id = strdup(src->id);
    dst->text = strdup(src->text);
    dst->answer = dup_or_null(src->answer);
    dst->meta_json = dup_or_null(src->meta_json);
    if (src->ntags) {
        dst->tags = calloc(src->ntags, sizeof *dst->tags);
        if (dst->tags) {
            dst->ntags = src->ntags;
            for (size_t i = 0; i < src->ntags; i++)
                if (!(dst->tags[i] = strdup(src->tags[i])))
                    goto nomem;
        }
    }
    if (!dst->id || !dst->text || (src->answer && !dst->answer) ||
        (src->meta_json && !dst->meta_json) || (src->ntags && !dst->tags))
        goto nomem;
    return 0;
nomem:
    question_release(dst);
    return NSED_ENOMEM;
}

int runner_incomplete_marker(const state *st, const stage_response *resps,
                             size_t n, const char *prefix, char **json,
                             char **why)
{
    cJSON *o = cJSON_CreateObject(), *failed;
    const char *first = NULL;
    int rc = NSED_ENOMEM;

    *json = NULL;
    *why = NULL;
    if (!o || !cJSON_AddStringToObject(o, "stage",
                                       state_stage_name(st->stage)) ||
        !cJSON_AddNumberToObject(o, "round", st->round) ||
        !(failed = cJSON_AddArrayToObject(o, "failed")))
        goto out;
    for (size_t i = 0; i < n; i++) {
        cJSON *f;
        const char *e = resps[i].error ? resps[i].error : "call failed";

        if (resps[i].ok)
            continue;
        if (!first)
            first = e;
        f = cJSON_CreateObject();
        if (!f)
            goto out;
        cJSON_AddItemToArray(failed, f);
        if (!cJSON_AddNumberToObject(f, "seat", (double)resps[i].seat) ||
            !cJSON_AddStringToObject(f, "kind",
                                     stage_kind_name(resps[i].kind)) ||
            !cJSON_AddStringToObject(f, "error", e))
            goto out;
    }
    first = first ? first : "call failed";
    if (prefix && asprintf(why, "%s: %s", prefix, first) < 0)
        *why = NULL;
    else if (!prefix)
        *why = strdup(first);
    if (!*why || !cJSON_AddStringToObject(o, "reason", *why))
        goto out;
    *json = cJSON_PrintUnformatted(o);
    if (*json)
        rc = 0;
out:
    if (rc) {
        free(*json);
        free(*why);
        *json = *why = NULL;
    }
    cJSON_Delete(o);
    return rc;
}

int runner_unstaffed_marker(const char *reason, char **json, char **why)
{
    cJSON *o = cJSON_CreateObject();
    size_t n = strlen("broker: ") + strlen(reason) + 1;
    int rc = NSED_ENOMEM;

    *json = NULL;
    *why = malloc(n);
    if (!o || !*why || !cJSON_AddStringToObject(o, "stage", "broker") ||
        !cJSON_AddNumberToObject(o, "round", 0) ||
        !cJSON_AddArrayToObject(o, "failed") ||
        !cJSON_AddStringToObject(o, "error", reason))
        goto out;
    snprintf(*why, n, "broker: %s", reason);
    if (!cJSON_AddStringToObject(o, "reason", *why))
        goto out;
    *json = cJSON_PrintUnformatted(o);
    if (*json)
        rc = 0;
out:
    if (rc) {
        free(*why);
        *why = NULL;
    }
    cJSON_Delete(o);
    return rc;
}

/* ---- result ------------------------------------------------------------- */

typedef struct round_read {
    const state *st;
    int index;
    state_round *out;
} round_read;

static int read_round_fn(store_txn *txn, void *arg, nsed_err *err)
{
    round_read *rr = arg;
    store_key key;
    const void *val;
    size_t vlen;
    int rc;

    rc = store_keys_question(rr->st->qid, STORE_KEYS_ROUND,
                             (uint32_t)rr->index, &key);
    if (!rc)
        rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return nsed_error(err, rc, "cannot read round %d of %s", rr->index,
                          rr->st->qid);
    rc = state_round_from_json(val, vlen, rr->st->nseats, &rr->out, err);
    if (rc && rc != NSED_ENOMEM) {
        char what[STORE_KEY_MAX + 64], why[NSED_ERR_MSG_MAX];

        snprintf(why, sizeof why, "%s",
                 err && err->msg[0] ? err->msg : nsed_strerror(rc));
        snprintf(what, sizeof what, "archived round %d of %s", rr->index,
                 rr->st->qid);
        rc = store_corrupt(err, txn, STORE_STATE, what, why);
    }
    return rc;
}

/* Round index of st, from memory or from the archive (*owned then set to
 * what the caller frees). NULL when it is in neither. */
static const state_round *get_round(store *sto, const state *st, int index,
                                    state_round **owned, nsed_err *err,
                                    int *rc)
{
    const state_round *r = state_round_get(st, index);
    round_read rr = {.st = st, .index = index};

    *owned = NULL;
    *rc = 0;
    if (r || index < 0 || !sto)
        return r;
    *rc = store_read(sto, read_round_fn, &rr, err);
    *owned = rr.out;
    return rr.out;
}

static cJSON *correct_json(const workflow *wf, const char *answer,
                           const char *reference)
{
    if (!reference)
        return cJSON_CreateNull();
    return cJSON_CreateBool(answer && answer_matches(&wf->answer, answer,
                                                     reference));
}

static cJSON *str_or_null(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *seat_json(const workflow *wf, const state *st, size_t seat)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    if (json_add_item(o, "seat", cJSON_CreateNumber((double)seat)) ||
        json_add_item(o, "model", cJSON_CreateString(wf->models[st->seats[seat].model].id)) ||
        json_add_item(o, "role", cJSON_CreateString(st->seats[seat].role))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *scores_json(const workflow *wf, const state *st,
                          const state_round *r)
{
    cJSON *a = cJSON_CreateArray();

    if (!a || !r || !r->aggregated)
        return a;
    for (size_t j = 0; j < r->ncand; j++) {
        const state_score *sc = &r->agg.scores[j];
        char label[TEXT_LABEL_MAX];
        cJSON *o = seat_json(wf, st, r->cands[j].seat);

        if (!o) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, o);
        text_label(j, label);
        if (json_add_item(o, "label", cJSON_CreateString(label)) ||
            json_add_item(o, "score", cJSON_CreateNumber(sc->score)) ||
            json_add_item(o, "net_support", cJSON_CreateNumber(sc->net_support)) ||
            json_add_item(o, "evaluators",
                cJSON_CreateNumber((double)sc->nevaluators)) ||
            json_add_item(o, "answer", str_or_null(r->proposals[r->cands[j].seat].answer))) {
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

/* The strict majority's tie fields (state.h): "tie", "drawn" (the answer
 * the seeded draw picked on a tie, else the majority itself) and
 * "drawn_correct" (the majority with ties broken by that draw). Returns 0
 * or NSED_ENOMEM. */
static int majority_tie_json(const workflow *wf, const state *st, cJSON *maj)
{
    const char *drawn = st->baseline_tie ? st->baseline_drawn
                                         : st->baseline_answer;

    return json_add_item(maj, "tie", cJSON_CreateBool(st->baseline_tie)) ||
                   json_add_item(maj, "drawn", str_or_null(drawn)) ||
                   json_add_item(maj, "drawn_correct",
                                 correct_json(wf, drawn, st->reference))
               ? NSED_ENOMEM
               : 0;
}
static cJSON *selfcons_result_json(const workflow *wf, const state *st);

static cJSON *baselines_json(const workflow *wf, const state *st,
                             const state_round *r0)
{
    cJSON *b = cJSON_CreateObject(), *models, *maj;

    if (!b)
        return NULL;
    if (!(models = cJSON_AddArrayToObject(b, "models")) ||
        !(maj = cJSON_AddObjectToObject(b, "majority")))
        goto fail;
    for (size_t i = 0; r0 && i < st->nseats; i++) {
        const state_proposal *p = &r0->proposals[i];
        const char *ans = p->status == STATE_PROPOSAL_OK ? p->answer : NULL;
        cJSON *o = seat_json(wf, st, i);

        if (!o)
            goto fail;
        cJSON_AddItemToArray(models, o);
        if (json_add_item(o, "answer", str_or_null(ans)) ||
            json_add_item(o, "correct", correct_json(wf, ans, st->reference)))
            goto fail;
    }
    if (json_add_item(maj, "answer", str_or_null(st->baseline_answer)) ||
        json_add_item(maj, "votes",
                      cJSON_CreateNumber((double)st->baseline_votes)) ||
        json_add_item(maj, "correct",
                      correct_json(wf, st->baseline_answer, st->reference)) ||
        majority_tie_json(wf, st, maj))
        goto fail;
    if (st->sc.on &&
        json_add_item(b, "self_consistency", selfcons_result_json(wf, st)))
        goto fail;
    return b;
fail:
    cJSON_Delete(b);
    return NULL;
}

/* The self_consistency member of "baselines" (stages/selfcons.h): null
 * when the question never got to sample (it failed before), else what
 * the samples gave; complete is false when some sample got no usable
 * reply (fewer votes than calls: not at equal cost). */
static cJSON *selfcons_result_json(const workflow *wf, const state *st)
{
    const state_selfcons *sc = &st->sc;
    cJSON *o, *a;

    if (!sc->decided)
        return cJSON_CreateNull();
    if (!(o = cJSON_CreateObject()))
        return NULL;
    if (json_add_item(o, "model",
                      cJSON_CreateString(wf->models[sc->model].id)) ||
        json_add_item(o, "seat",
                      sc->seat >= 0 ? cJSON_CreateNumber((double)sc->seat)
                                    : cJSON_CreateNull()) ||
        json_add_item(o, "chosen", str_or_null(sc->why)) ||
        json_add_item(o, "p_g",
                      sc->p_g >= 0 ? cJSON_CreateNumber(sc->p_g)
                                   : cJSON_CreateNull()) ||
        json_add_item(o, "samples", cJSON_CreateNumber((double)sc->nsamples)) ||
        json_add_item(o, "answer", str_or_null(sc->answer)) ||
        json_add_item(o, "votes", cJSON_CreateNumber((double)sc->votes)) ||
        json_add_item(o, "tie", cJSON_CreateBool(sc->tie)) ||
        json_add_item(o, "drawn", cJSON_CreateBool(sc->drawn)) ||
        json_add_item(o, "correct",
                      correct_json(wf, sc->answer, st->reference)) ||
        json_add_item(o, "failed", cJSON_CreateNumber((double)sc->failed)) ||
        json_add_item(o, "complete", cJSON_CreateBool(sc->failed == 0)) ||
        json_add_item(o, "calls", cJSON_CreateNumber((double)sc->nsamples)) ||
        json_add_item(o, "cost_usd", cJSON_CreateNumber(sc->usage.cost_usd)) ||
        !(a = cJSON_AddArrayToObject(o, "answers")))
        goto fail;
    for (size_t i = 0; i < sc->nsamples; i++) {
        cJSON *x = str_or_null(sc->samples[i].answer);

        if (!x)
            goto fail;
        cJSON_AddItemToArray(a, x);
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

/* ---- what the rounds add up to ------------------------------------------ */

/* Per model index: proposals answered (OK or SKIP), of those OK without an
 * extractable answer; evaluations answered (OK or abstained), of those
 * abstained; proposals and evaluations with a reply cut at max_tokens. */
typedef struct model_counts {
    size_t proposals, no_answer, evaluations, abstained, truncated;
} model_counts;

typedef struct round_counts {
    model_counts *m;   /* wf->nmodels */
    size_t rounds;     /* rounds aggregated */
    size_t winnerless; /* of those, without a winner */
    size_t answers;    /* proposals with an extractable answer */
} round_counts;

static void count_round(const state *st, const state_round *r, round_counts *c)
{
    for (size_t i = 0; i < st->nseats; i++) {
        const state_proposal *p = &r->proposals[i];
        model_counts *m = &c->m[st->seats[i].model];

        if (p->status == STATE_PROPOSAL_OK || p->status == STATE_PROPOSAL_SKIP)
            m->proposals++;
        if (p->status == STATE_PROPOSAL_OK && !p->answer)
            m->no_answer++;
        if (p->status == STATE_PROPOSAL_OK && p->answer)
            c->answers++;
        m->truncated += p->truncated;
        if (!r->evals)
            continue;
        m->truncated += r->evals[i].truncated;
        if (r->evals[i].status == STATE_EVAL_OK ||
            r->evals[i].status == STATE_EVAL_ABSTAINED)
            m->evaluations++;
        if (r->evals[i].status == STATE_EVAL_ABSTAINED)
            m->abstained++;
    }
    if (r->aggregated) {
        c->rounds++;
        c->winnerless += r->agg.winner < 0;
    }
}

/* Count every round of st (from memory or the archive) into *c
 * (c->m malloc'd: release with free). */
static int count_rounds(const workflow *wf, store *sto, const state *st,
                        round_counts *c, nsed_err *err)
{
    int rc = 0;

    memset(c, 0, sizeof *c);
    c->m = calloc(wf->nmodels, sizeof *c->m);
    if (!c->m)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    for (int i = 0; i <= st->round && !rc; i++) {
        state_round *owned = NULL;
        const state_round *r = get_round(sto, st, i, &owned, err, &rc);

        if (r)
            count_round(st, r, c);
        state_round_free(owned, st->nseats);
    }
    return rc;
}

static cJSON *counts_json(const workflow *wf, const state *st,
                          const round_counts *c)
{
    cJSON *o = cJSON_CreateObject(), *models;

    if (!o || json_add_num(o, "rounds", (double)c->rounds) ||
        json_add_num(o, "winnerless_rounds", (double)c->winnerless) ||
        !(models = cJSON_AddObjectToObject(o, "models")))
        goto fail;
    for (size_t i = 0; i < st->nseats; i++) {
        size_t k = st->seats[i].model;
        const model_counts *m = &c->m[k];
        cJSON *e;

        if (cJSON_GetObjectItemCaseSensitive(models, wf->models[k].id))
            continue;
        e = cJSON_AddObjectToObject(models, wf->models[k].id);
        if (!e || json_add_num(e, "proposals", (double)m->proposals) ||
            json_add_num(e, "no_answer", (double)m->no_answer) ||
            json_add_num(e, "evaluations", (double)m->evaluations) ||
            json_add_num(e, "abstained", (double)m->abstained) ||
            json_add_num(e, "truncated", (double)m->truncated))
            goto fail;
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

int runner_finish_outcome(const workflow *wf, store *sto, state *st,
                          nsed_err *err)
{
    round_counts c;
    char *why = NULL;
    int rc;

    if (st->final_answer || st->status == STATE_STATUS_FAILED)
        return 0;
    rc = count_rounds(wf, sto, st, &c, err);
    free(c.m);
    if (rc)
        return rc;
    if (c.answers == 0)
        why = strdup("no extractable answer in any round");
    else if (st->final_source == STATE_FINAL_WINNER &&
             asprintf(&why,
                      "the winner of round %d has no extractable "
                      "answer",
                      st->final_round) < 0)
        why = NULL;
    else if (st->final_source != STATE_FINAL_WINNER)
        why = strdup("no round had a winner and the last rounds no "
                     "extractable answer");
    if (!why)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    free(st->failure);
    st->failure = why;
    st->status = STATE_STATUS_FAILED;
    return 0;
}

int runner_result_outcome_json(const cJSON *rec, enum state_status *out)
{
    const char *s = json_str(rec, "status", "");

    if (!strcmp(s, "done"))
        *out = STATE_STATUS_DONE;
    else if (!strcmp(s, "degraded"))
        *out = STATE_STATUS_DEGRADED;
    else if (!strcmp(s, "failed") || !strcmp(s, "incomplete"))
        *out = STATE_STATUS_FAILED;
    else
        return NSED_ESTORE;
    return 0;
}

int runner_result_outcome(const void *rec, size_t len, enum state_status *out)
{
    cJSON *j = cJSON_ParseWithLength(rec, len);
    int rc = runner_result_outcome_json(j, out);

    cJSON_Delete(j);
    return rc;
}

int runner_result_json(const workflow *wf, store *sto, const state *st,
                       const question *q, const char *broker_record,
                       const runner_qctx *qctx, char **out, nsed_err *err)
{
    cJSON *o = cJSON_CreateObject(), *v, *missing, *tok;
    state_round *own_final = NULL, *own0 = NULL;
    round_counts counts = {0};
    const state_round *rf, *r0, *last = st->cur;
    const char *winning = NULL;
    int rc = 0;

    if (!o)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    rc = count_rounds(wf, sto, st, &counts, err);
    if (rc)
        goto out;
    rf = get_round(sto, st, st->final_round, &own_final, err, &rc);
    if (rc)
        goto out;
    r0 = get_round(sto, st, 0, &own0, err, &rc);
    if (rc)
        goto out;
    if (rf && st->final_seat >= 0 &&
        (size_t)st->final_seat < st->nseats)
        winning = rf->proposals[st->final_seat].text;

    rc = NSED_ENOMEM;
    if (json_add_item(o, "id", cJSON_CreateString(st->qid)) ||
        json_add_item(o, "status",
                      cJSON_CreateString(state_status_name(st->status))) ||
        json_add_item(o, "failure", str_or_null(st->failure)) ||
        json_add_item(o, "final_answer", str_or_null(st->final_answer)) ||
        json_add_item(
            o, "final_source",
            cJSON_CreateString(state_final_source_name(st->final_source))) ||
        json_add_item(o, "reference", str_or_null(st->reference)) ||
        json_add_item(o, "correct",
                      correct_json(wf, st->final_answer, st->reference)) ||
        json_add_item(o, "winning_response", str_or_null(winning)))
        goto out;
    if (st->final_seat >= 0 && (size_t)st->final_seat < st->nseats) {
        v = seat_json(wf, st, (size_t)st->final_seat);
        if (json_add_item(o, "winner", v) ||
            json_add_item(v, "round", cJSON_CreateNumber(st->final_round)))
            goto out;
    } else if (json_add_item(o, "winner", cJSON_CreateNull())) {
        goto out;
    }
    if (json_add_item(o, "rounds", cJSON_CreateNumber(st->round + 1)) ||
        json_add_item(o, "stop_reason",
            cJSON_CreateString(state_stop_reason_name(last->decision.reason))) ||
        json_add_item(o, "conviction",
            cJSON_CreateNumber(last->aggregated ? last->agg.conviction : 0)) ||
        json_add_item(o, "scores", scores_json(wf, st, last)))
        goto out;
    if (!(tok = cJSON_AddObjectToObject(o, "tokens")) ||
        json_add_item(tok, "prompt", cJSON_CreateNumber((double)st->usage.prompt_tokens)) ||
        json_add_item(tok, "completion",
            cJSON_CreateNumber((double)st->usage.completion_tokens)) ||
        json_add_item(o, "cost_usd", cJSON_CreateNumber(st->usage.cost_usd)) ||
        json_add_item(o, "degraded",
            cJSON_CreateBool(st->status == STATE_STATUS_DEGRADED)))
        goto out;
    if (!(missing = cJSON_AddArrayToObject(o, "missing_seats")))
        goto out;
    for (size_t i = 0; i < st->nseats; i++) {
        if (!st->missing[i])
            continue;
        v = seat_json(wf, st, i);
        if (!v)
            goto out;
        cJSON_AddItemToArray(missing, v);
    }
    if (json_add_item(o, "baselines", baselines_json(wf, st, r0)) ||
        json_add_item(o, "counts", counts_json(wf, st, &counts)))
        goto out;
    v = cJSON_CreateArray();
    if (json_add_item(o, "tags", v))
        goto out;
    for (size_t i = 0; i < q->ntags; i++) {
        cJSON *t = cJSON_CreateString(q->tags[i]);

        if (!t)
            goto out;
        cJSON_AddItemToArray(v, t);
    }
    if (json_add_item(o, "meta", q->meta_json ? cJSON_CreateRaw(q->meta_json)
                                    : cJSON_CreateNull()))
        goto out;
    v = broker_record ? broker_record_summary(broker_record,
                                              strlen(broker_record))
                      : NULL;
    if (json_add_item(o, "broker", v ? v : cJSON_CreateNull()))
        goto out;
    if (qctx && qctx->reliability) {
        /* the evaluator weights this question was scored with */
        if (!(v = cJSON_AddObjectToObject(o, "reliability")))
            goto out;
        for (size_t i = 0; i < st->nseats; i++) {
            const char *id = wf->models[st->seats[i].model].id;

            if (!cJSON_GetObjectItemCaseSensitive(v, id) &&
                json_add_item(v, id, cJSON_CreateNumber(
                               qctx->reliability[st->seats[i].model])))
                goto out;
        }
    }
    /* a question of the fatigue fit's exploration slice ran every round */
    if (converge_explores(st, wf) &&
        json_add_item(o, "exploration", cJSON_CreateTrue()))
        goto out;
    *out = cJSON_PrintUnformatted(o);
    rc = *out ? 0 : NSED_ENOMEM;
out:
    if (rc == NSED_ENOMEM)
        nsed_error(err, rc, "out of memory");
    state_round_free(own_final, st->nseats);
    state_round_free(own0, st->nseats);
    free(counts.m);
    cJSON_Delete(o);
    return rc;
}
