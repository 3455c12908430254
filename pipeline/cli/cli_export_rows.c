/* cli_export_rows.c -- the rows of `nsed export --format traces|sft|dpo|csv`
 * (cli_export.h; schemas in docs/results.md). */
#include "pipeline/base/json.h"
#include "pipeline/cli/cli_export.h"
#include "stages/answer.h"
#include "stages/converge.h"
#include "stages/evaluate.h"
#include "stages/mask.h"
#include "stages/propose.h"
#include "stages/request.h"
#include "stages/state.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rounds a question can have (rounds.max is far below). */
#define EXPORT_ROUNDS_MAX 1024

int export_format_parse(const char *s, enum export_format *out)
{
    static const struct {
        const char *name;
        enum export_format f;
    } names[] = {
        {"results", EXPORT_FMT_RESULTS}, {"traces", EXPORT_FMT_TRACES},
        {"sft", EXPORT_FMT_SFT},         {"dpo", EXPORT_FMT_DPO},
        {"csv", EXPORT_FMT_CSV},
    };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].f;
            return 0;
        }
    }
    return NSED_EINVAL;
}

/* ---- the run ------------------------------------------------------------ */

/* Drop every member whose value is null or an empty list: the canonical
 * form writes a key left unset that way, which the loader reads as a value
 * (and refuses for some keys); absent, it takes the same default again.
 * load_canonical checks the result by its hash. */
static void drop_nulls(cJSON *j)
{
    cJSON *c = j ? j->child : NULL;

    while (c) {
        cJSON *next = c->next;

        if (cJSON_IsObject(j) &&
            (cJSON_IsNull(c) || (cJSON_IsArray(c) && !c->child)))
            cJSON_Delete(cJSON_DetachItemViaPointer(j, c));
        else
            drop_nulls(c);
        c = next;
    }
}

/* The workflow a store ran, from the manifest's canonical text, checked
 * to hash as the manifest says (so the prompts are rendered with exactly
 * the workflow that ran). */
static int load_canonical(const char *canon, const char *hash, workflow **out,
                          nsed_err *err)
{
    cJSON *j = cJSON_Parse(canon);
    char *text = NULL;
    workflow *wf = NULL;
    int rc;

    if (!j)
        return nsed_error(err, NSED_ESTORE,
                          "the store's canonical workflow "
                          "is not JSON");
    drop_nulls(j);
    text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text)
        return NSED_ENOMEM;
    rc = workflow_load_string("the store's workflow", text, strlen(text), &wf,
                              err);
    free(text);
    if (rc)
        return rc;
    if (hash && strcmp(workflow_hash(wf), hash) != 0) {
        rc = nsed_error(err, NSED_EINTERNAL,
                        "the store's workflow reloads "
                        "with hash %.16s, not its recorded %.16s",
                        workflow_hash(wf), hash);
        workflow_free(wf);
        return rc;
    }
    *out = wf;
    return 0;
}

int export_run_load(store *st, bool need_wf, export_run *run, nsed_err *err)
{
    char *text = NULL;
    cJSON *man = NULL;
    const char *canon, *hash, *created, *seed;
    int rc;

    memset(run, 0, sizeof *run);
    rc = store_manifest_json(st, &text, err);
    if (rc == NSED_ENOTFOUND && !need_wf)
        return 0;
    if (rc)
        return rc;
    man = cJSON_Parse(text);
    if (!man) {
        rc = nsed_error(err, NSED_ESTORE, "the store's manifest is damaged");
        goto out;
    }
    hash = json_str(man, "workflow_hash", NULL);
    created = json_str(man, "created_at", "");
    seed = json_str(man, "seed", "");
    if (hash && !(run->workflow_hash = strdup(hash))) {
        rc = NSED_ENOMEM;
        goto out;
    }
    {
        hash_ctx *h = hash_new();
        uint8_t d[HASH_LEN];
        char hex[HASH_HEX_LEN + 1];

        if (!h) {
            rc = NSED_ENOMEM;
            goto out;
        }
        hash_update_field(h, "nsed-run", 8);
        hash_update_field(h, created, strlen(created));
        hash_update_field(h, seed, strlen(seed));
        hash_final(h, d);
        hash_free(h);
        hash_hex(d, hex);
        memcpy(run->run_id, hex, 16);
        run->run_id[16] = '\0';
    }
    if (need_wf) {
        canon = json_str(man, "workflow_canonical", NULL);
        if (!canon) {
            rc = nsed_error(err, NSED_ESTORE,
                            "the store's manifest holds no "
                            "canonical workflow to render the prompts with");
            goto out;
        }
        rc = load_canonical(canon, hash, &run->wf, err);
    }
out:
    cJSON_Delete(man);
    free(text);
    if (rc)
        export_run_release(run);
    return rc;
}

void export_run_release(export_run *run)
{
    if (!run)
        return;
    workflow_free(run->wf);
    free(run->workflow_hash);
    memset(run, 0, sizeof *run);
}

/* ---- reading a question back ------------------------------------------- */

/* A question's latest state and every round, from the archive (or, for a
 * round not archived, from the state). */
typedef struct export_q {
    state *st;
    int nrounds;
    const state_round **rounds;
    state_round **owned;
} export_q;

static void export_q_release(export_q *q)
{
    if (!q->st)
        return;
    for (int i = 0; q->owned && i < q->nrounds; i++)
        state_round_free(q->owned[i], q->st->nseats);
    free(q->owned);
    free(q->rounds);
    state_free(q->st);
    memset(q, 0, sizeof *q);
}

static int damaged(store_txn *txn, const char *qid, const char *what, int index,
                   nsed_err *err)
{
    char rec[STORE_KEY_MAX + 64], why[NSED_ERR_MSG_MAX];

    snprintf(why, sizeof why, "%s", err->msg[0] ? err->msg : "unreadable");
    if (index >= 0)
        snprintf(rec, sizeof rec, "%s %d of %s", what, index, qid);
    else
        snprintf(rec, sizeof rec, "%s of %s", what, qid);
    return store_corrupt(err, txn, STORE_STATE, rec, why);
}

static int export_q_load(const export_run *run, store_txn *txn, const char *qid,
                         export_q *q, nsed_err *err)
{
    store_key key;
    const void *val;
    size_t vlen;
    int rc;

    memset(q, 0, sizeof *q);
    rc = store_keys_question(qid, STORE_KEYS_STATE, 0, &key);
    if (!rc)
        rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
    if (rc)
        return nsed_error(err, rc == NSED_ENOTFOUND ? NSED_ESTORE : rc,
                          "store %s: question %s has a result but no state",
                          store_txn_dir(txn), qid);
    rc = state_from_json(val, vlen, run->wf, &q->st, err);
    if (rc)
        return rc == NSED_ENOMEM ? rc : damaged(txn, qid, "the state", -1, err);
    if (q->st->round < 0 || q->st->round >= EXPORT_ROUNDS_MAX)
        return NSED_EINTERNAL;
    q->nrounds = q->st->round + 1;
    q->rounds = calloc((size_t)q->nrounds, sizeof *q->rounds);
    q->owned = calloc((size_t)q->nrounds, sizeof *q->owned);
    if (!q->rounds || !q->owned)
        return NSED_ENOMEM;
    for (int i = 0; i < q->nrounds; i++) {
        rc = store_keys_question(qid, STORE_KEYS_ROUND, (uint32_t)i, &key);
        if (!rc)
            rc = store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen);
        if (rc == NSED_ENOTFOUND) {
            q->rounds[i] = state_round_get(q->st, i);
            if (!q->rounds[i])
                return nsed_error(err, NSED_ESTORE,
                                  "store %s: round %d of %s is neither "
                                  "archived nor in its state",
                                  store_txn_dir(txn), i, qid);
            continue;
        }
        if (!rc)
            rc = state_round_from_json(val, vlen, q->st->nseats, &q->owned[i],
                                       err);
        if (rc)
            return rc == NSED_ENOMEM
                       ? rc
                       : damaged(txn, qid, "archived round", i, err);
        q->rounds[i] = q->owned[i];
    }
    return 0;
}

/* ---- JSON helpers ------------------------------------------------------- */

static cJSON *str_or_null(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static int add_run(const export_run *run, cJSON *o)
{
    if (json_add_item(o, "workflow_hash", str_or_null(run->workflow_hash)) ||
        json_add_item(o, "run_id",
                      str_or_null(run->run_id[0] ? run->run_id : NULL)))
        return NSED_ENOMEM;
    return 0;
}

static int add_message(cJSON *arr, const char *role, const char *content)
{
    cJSON *m = cJSON_CreateObject();

    if (!m)
        return NSED_ENOMEM;
    cJSON_AddItemToArray(arr, m);
    return json_add_str(m, "role", role) || json_add_str(m, "content", content)
               ? NSED_ENOMEM
               : 0;
}

/* Print o as one line onto out. */
static int put_line(cJSON *o, buf *out)
{
    char *s = cJSON_PrintUnformatted(o);
    int rc;

    if (!s)
        return NSED_ENOMEM;
    rc = buf_adds(out, s);
    if (!rc)
        rc = buf_addc(out, '\n');
    free(s);
    return rc;
}

/* ---- re-rendering the prompts ------------------------------------------- */

/* A view of the question as it stood in round r: the state with round r as
 * its current round and the carry round r got. The view borrows
 * everything but its carry (release with view_release). */
typedef struct view {
    state st;
    state_carry carry;
} view;

static int view_init(view *v, const export_q *q, const workflow *wf, int r)
{
    int rc = 0;

    memset(v, 0, sizeof *v);
    v->st = *q->st;
    v->st.prev = NULL;
    memset(&v->st.carry, 0, sizeof v->st.carry);
    v->st.carry.from_round = -1;
    if (r > 0) {
        /* the carry converge built from round r-1 (converge_build_carry
         * reads only the current round, the team, the seed and the id) */
        v->st.cur = (state_round *)q->rounds[r - 1];
        v->st.round = r - 1;
        rc = converge_build_carry(&v->st, wf, &v->carry);
        if (rc)
            return rc;
        v->st.carry = v->carry;
    }
    v->st.cur = (state_round *)q->rounds[r];
    v->st.round = r;
    return 0;
}

static void view_release(view *v, size_t nseats)
{
    state_carry_release(&v->carry, nseats);
}

/* The messages of seat's propose call in the view's round. */
static int propose_messages(const view *v, const workflow *wf, size_t seat,
                            cJSON *arr)
{
    buf sys, user;
    int rc;

    buf_init(&sys, STAGE_PROMPT_MAX);
    buf_init(&user, STAGE_PROMPT_MAX);
    rc = stage_render_system(wf, &v->st.seats[seat], &sys);
    if (!rc)
        rc = propose_render(&v->st, wf, seat, &user);
    if (!rc)
        rc = add_message(arr, "system", sys.ptr);
    if (!rc)
        rc = add_message(arr, "user", user.ptr);
    buf_release(&sys);
    buf_release(&user);
    return rc;
}

/* What evaluate.c's repair told the evaluator about its first reply:
 * parsed again from the stored first reply, as the stage did. *exact is
 * false when that cannot be known for sure (no first reply kept, or a
 * reply cut at max_tokens, whose message depends on which reply was
 * cut). */
static int repair_error(const state_round *r, size_t seat, const workflow *wf,
                        char *why, size_t whysize, bool *exact)
{
    const state_evaluation *ev = &r->evals[seat];
    state_evaluation tmp = {0};
    bool self = wf->scoring.allow_self_votes;
    int rc;

    *exact = ev->first_reply && !ev->truncated;
    if (!ev->first_reply) {
        snprintf(why, whysize, "%s",
                 ev->error ? ev->error : "it could not be parsed");
        return 0;
    }
    if (ev->truncated) {
        snprintf(why, whysize,
                 "it was cut off at the length limit "
                 "(max_tokens) before the JSON was complete; reply with "
                 "the JSON object only, no other text, and keep each "
                 "critique under %d characters",
                 EVALUATE_SCHEMA_CRITIQUE_MAX);
        return 0;
    }
    if (r->per_evaluator && ev->shown)
        rc = evaluate_parse(ev->first_reply, ev->nshown, -1, self, &tmp, why,
                            whysize);
    else
        rc = evaluate_parse(ev->first_reply, r->ncand,
                            mask_own_candidate(r, seat), self, &tmp, why,
                            whysize);
    if (rc == 0) {
        /* it parsed now, so it was not why the repair was asked */
        *exact = false;
        snprintf(why, whysize, "%s",
                 ev->error ? ev->error : "it could not be parsed");
    }
    state_evaluation_release(&tmp);
    return rc == NSED_ENOMEM ? rc : 0;
}

/* The messages of seat's evaluate call (and, when repair, its repair
 * call) in the view's round. */
static int evaluate_messages(const view *v, const workflow *wf, size_t seat,
                             bool repair, cJSON *arr, bool *exact)
{
    const state_evaluation *ev = &v->st.cur->evals[seat];
    buf sys, user, lab, rep;
    char why[256];
    int rc;

    *exact = true;
    buf_init(&sys, STAGE_PROMPT_MAX);
    buf_init(&user, STAGE_PROMPT_MAX);
    buf_init(&lab, 4096);
    buf_init(&rep, STAGE_PROMPT_MAX);
    rc = stage_render_system(wf, &v->st.seats[seat], &sys);
    if (!rc)
        rc = evaluate_render(&v->st, wf, seat, &user, &lab);
    if (!rc)
        rc = add_message(arr, "system", sys.ptr);
    if (!rc)
        rc = add_message(arr, "user", user.ptr);
    if (!rc && repair)
        rc = repair_error(v->st.cur, seat, wf, why, sizeof why, exact);
    if (!rc && repair) {
        workflow_prompt_var vars[] = {
            {"error", why},
            {"labels", lab.ptr},
        };

        rc = add_message(arr, "assistant",
                         ev->first_reply ? ev->first_reply : "");
        if (!rc)
            rc = workflow_prompt_render(wf->prompts.repair, vars, 2, &rep);
        if (!rc)
            rc = add_message(arr, "user", rep.ptr);
    }
    buf_release(&sys);
    buf_release(&user);
    buf_release(&lab);
    buf_release(&rep);
    return rc;
}

/* ---- traces ------------------------------------------------------------- */

static cJSON *seat_ref(const workflow *wf, const state *st, size_t seat)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || json_add_num(o, "seat", (double)seat) ||
        json_add_str(o, "model", wf->models[st->seats[seat].model].id) ||
        json_add_str(o, "role", st->seats[seat].role)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *label_or_null(long cand)
{
    char label[TEXT_LABEL_MAX];

    if (cand < 0)
        return cJSON_CreateNull();
    text_label((size_t)cand, label);
    return cJSON_CreateString(label);
}

static cJSON *usage_json(const state_usage *u)
{
    cJSON *o = cJSON_CreateObject();

    if (!o || json_add_num(o, "prompt", (double)u->prompt_tokens) ||
        json_add_num(o, "completion", (double)u->completion_tokens) ||
        json_add_num(o, "cost_usd", u->cost_usd)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* One proposal of a traced round, with the weights it received. */
static int trace_proposal(const export_q *q, const workflow *wf, const view *v,
                          const bool *lost, size_t s, cJSON *arr)
{
    const state *st = q->st;
    const state_round *r = v->st.cur;
    const state_proposal *p = &r->proposals[s];
    long own = mask_own_candidate(r, s);
    cJSON *o = seat_ref(wf, st, s), *rec, *msgs;
    int rc = NSED_ENOMEM;

    if (!o)
        return NSED_ENOMEM;
    cJSON_AddItemToArray(arr, o);
    if (json_add_item(o, "label", label_or_null(own)) ||
        json_add_str(o, "status", state_proposal_status_name(p->status)) ||
        json_add_item(o, "text", str_or_null(p->text)) ||
        json_add_item(o, "answer", str_or_null(p->answer)) ||
        json_add_item(o, "error", str_or_null(p->error)) ||
        json_add_item(o, "truncated", cJSON_CreateBool(p->truncated)) ||
        json_add_item(o, "tokens", usage_json(&p->usage)) ||
        !(rec = cJSON_AddArrayToObject(o, "received")))
        return rc;
    for (size_t e = 0; own >= 0 && r->evals && e < st->nseats; e++) {
        const state_evaluation *ev = &r->evals[e];

        if (ev->status != STATE_EVAL_OK)
            continue;
        for (size_t k = 0; k < ev->nweights; k++) {
            cJSON *w;

            if ((long)ev->weights[k].cand != own)
                continue;
            if (!(w = seat_ref(wf, st, e)))
                return rc;
            cJSON_AddItemToArray(rec, w);
            if (json_add_num(w, "weight", ev->weights[k].weight) ||
                json_add_str(w, "critique", ev->weights[k].critique))
                return rc;
        }
    }
    /* a seat lost before this round was not asked: no call, no messages */
    if (lost[s])
        return json_add_item(o, "messages", cJSON_CreateNull()) ? rc : 0;
    if (!(msgs = cJSON_AddArrayToObject(o, "messages")))
        return rc;
    return propose_messages(v, wf, s, msgs);
}

/* One evaluation of a traced round: what the seat was shown and gave. */
static int trace_evaluation(const export_q *q, const workflow *wf,
                            const view *v, size_t s, cJSON *arr)
{
    const state *st = q->st;
    const state_round *r = v->st.cur;
    const state_evaluation *ev = &r->evals[s];
    cJSON *o = seat_ref(wf, st, s), *shown, *given, *msgs;
    bool exact = true;
    int rc = NSED_ENOMEM;

    if (!o)
        return NSED_ENOMEM;
    cJSON_AddItemToArray(arr, o);
    if (json_add_str(o, "status", state_eval_status_name(ev->status)) ||
        json_add_item(o, "repaired", cJSON_CreateBool(ev->repaired)) ||
        json_add_item(o, "truncated", cJSON_CreateBool(ev->truncated)) ||
        json_add_item(o, "reply", str_or_null(ev->reply)) ||
        json_add_item(o, "first_reply", str_or_null(ev->first_reply)) ||
        json_add_item(o, "error", str_or_null(ev->error)) ||
        json_add_item(o, "tokens", usage_json(&ev->usage)) ||
        !(shown = cJSON_AddArrayToObject(o, "shown")) ||
        !(given = cJSON_AddArrayToObject(o, "given")))
        return rc;
    for (size_t p = 0; ev->shown && p < ev->nshown; p++)
        if (!cJSON_AddItemToArray(shown, label_or_null((long)ev->shown[p])))
            return rc;
    for (size_t k = 0; k < ev->nweights; k++) {
        const state_weight *w = &ev->weights[k];
        cJSON *g = w->cand < r->ncand ? seat_ref(wf, st, r->cands[w->cand].seat)
                                      : NULL;

        if (!g)
            return rc;
        cJSON_AddItemToArray(given, g);
        if (json_add_item(g, "label", label_or_null((long)w->cand)) ||
            json_add_num(g, "weight", w->weight) ||
            json_add_str(g, "critique", w->critique))
            return rc;
    }
    /* an idle seat was not asked */
    if (ev->status == STATE_EVAL_IDLE)
        return json_add_item(o, "messages", cJSON_CreateNull()) ||
                       json_add_item(o, "repair_messages", cJSON_CreateNull())
                   ? rc
                   : 0;
    if (!(msgs = cJSON_AddArrayToObject(o, "messages")))
        return rc;
    rc = evaluate_messages(v, wf, s, false, msgs, &exact);
    if (rc)
        return rc;
    if (!ev->repaired)
        return json_add_item(o, "repair_messages", cJSON_CreateNull())
                   ? NSED_ENOMEM
                   : 0;
    if (!(msgs = cJSON_AddArrayToObject(o, "repair_messages")))
        return NSED_ENOMEM;
    rc = evaluate_messages(v, wf, s, true, msgs, &exact);
    if (!rc &&
        json_add_item(o, "repair_messages_exact", cJSON_CreateBool(exact)))
        rc = NSED_ENOMEM;
    return rc;
}

static int trace_votes(const export_q *q, const workflow *wf,
                       const state_round *r, cJSON *o)
{
    cJSON *votes = cJSON_AddArrayToObject(o, "votes"), *d;
    const state_decision *dec = &r->decision;

    if (!votes)
        return NSED_ENOMEM;
    for (size_t j = 0; r->aggregated && j < r->ncand; j++) {
        const state_score *sc = &r->agg.scores[j];
        cJSON *v = seat_ref(wf, q->st, r->cands[j].seat);

        if (!v)
            return NSED_ENOMEM;
        cJSON_AddItemToArray(votes, v);
        if (json_add_item(v, "label", label_or_null((long)j)) ||
            json_add_num(v, "score", sc->score) ||
            json_add_num(v, "net_support", sc->net_support) ||
            json_add_num(v, "evaluators", (double)sc->nevaluators) ||
            json_add_num(v, "min_peer", sc->min_peer) ||
            json_add_num(v, "variance", sc->variance))
            return NSED_ENOMEM;
    }
    if (r->aggregated && r->agg.winner >= 0 &&
        (size_t)r->agg.winner < r->ncand) {
        cJSON *w = seat_ref(wf, q->st, r->cands[r->agg.winner].seat);

        if (json_add_item(o, "winner", w) ||
            json_add_item(w, "label", label_or_null(r->agg.winner)))
            return NSED_ENOMEM;
    } else if (json_add_item(o, "winner", cJSON_CreateNull())) {
        return NSED_ENOMEM;
    }
    if (json_add_num(o, "conviction", r->aggregated ? r->agg.conviction : 0) ||
        json_add_str(o, "scheme",
                     r->aggregated ? workflow_scheme_name(r->agg.scheme)
                                   : "") ||
        json_add_str(o, "decided_by", state_decider_name(r->agg.decided_by)) ||
        !(d = cJSON_AddObjectToObject(o, "decision")) ||
        json_add_item(d, "stop", cJSON_CreateBool(dec->stop)) ||
        json_add_str(d, "reason", state_stop_reason_name(dec->reason)) ||
        json_add_num(d, "stable_streak", dec->stable_streak) ||
        json_add_num(d, "t_opt", dec->t_opt) ||
        json_add_num(d, "target", dec->target))
        return NSED_ENOMEM;
    return 0;
}

static int trace_row(const export_run *run, const export_q *q, const cJSON *rec,
                     buf *out)
{
    const workflow *wf = run->wf;
    const state *st = q->st;
    cJSON *o = cJSON_CreateObject(), *seats, *rounds;
    bool lost[WORKFLOW_MAX_SEATS] = {false};
    int rc = NSED_ENOMEM;

    if (st->nseats > WORKFLOW_MAX_SEATS) {
        rc = NSED_EINTERNAL;
        goto out;
    }
    if (!o || json_add_str(o, "id", st->qid) || add_run(run, o) ||
        json_add_str(o, "status", json_str(rec, "status", "")) ||
        json_add_str(o, "question", st->question) ||
        json_add_item(o, "reference", str_or_null(st->reference)) ||
        json_add_item(o, "final_answer", str_or_null(st->final_answer)) ||
        json_add_item(
            o, "correct",
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "correct"),
                            1)) ||
        json_add_item(
            o, "winner",
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "winner"),
                            1)) ||
        json_add_str(o, "stop_reason", json_str(rec, "stop_reason", "")) ||
        !(seats = cJSON_AddArrayToObject(o, "seats")) ||
        !(rounds = cJSON_AddArrayToObject(o, "rounds")))
        goto out;
    for (size_t s = 0; s < st->nseats; s++) {
        cJSON *x = seat_ref(wf, st, s);

        if (!x)
            goto out;
        cJSON_AddItemToArray(seats, x);
        if (json_add_str(x, "persona", st->seats[s].persona) ||
            json_add_item(x, "propose_only",
                          cJSON_CreateBool(st->seats[s].propose_only)))
            goto out;
    }
    for (int i = 0; i < q->nrounds; i++) {
        const state_round *r = q->rounds[i];
        cJSON *ro = cJSON_CreateObject(), *props, *evals;
        view v;

        if (!ro)
            goto out;
        cJSON_AddItemToArray(rounds, ro);
        rc = view_init(&v, q, wf, i);
        if (rc) {
            view_release(&v, st->nseats);
            goto out;
        }
        rc = NSED_ENOMEM;
        if (!json_add_num(ro, "round", r->index) &&
            (props = cJSON_AddArrayToObject(ro, "proposals")) &&
            (evals = cJSON_AddArrayToObject(ro, "evaluations"))) {
            rc = 0;
            for (size_t s = 0; s < st->nseats && !rc; s++)
                rc = trace_proposal(q, wf, &v, lost, s, props);
            for (size_t s = 0; r->evals && s < st->nseats && !rc; s++)
                rc = trace_evaluation(q, wf, &v, s, evals);
            if (!rc)
                rc = trace_votes(q, wf, r, ro);
        }
        view_release(&v, st->nseats);
        if (rc)
            goto out;
        /* who is lost from the next round on (propose.c: not asked again) */
        for (size_t s = 0; s < st->nseats; s++)
            if ((r->proposals[s].status == STATE_PROPOSAL_FAILED &&
                 r->proposals[s].infra) ||
                (r->evals && r->evals[s].status == STATE_EVAL_FAILED))
                lost[s] = true;
    }
    rc = put_line(o, out);
out:
    cJSON_Delete(o);
    return rc;
}

/* ---- sft and dpo -------------------------------------------------------- */

/* Whether sft and dpo keep the question of result record rec: it has a
 * winner and its text; then a question with a reference is kept unless
 * --only-correct and it is not correct, and one without a reference is
 * kept when its conviction reaches --min-conviction, or, without that
 * option, unless --only-correct (it cannot be judged). */
static bool export_keep(const export_filter *f, const cJSON *rec)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(rec, "correct");
    const char *status = json_str(rec, "status", "");

    if ((strcmp(status, "done") != 0 && strcmp(status, "degraded") != 0) ||
        !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(rec, "winner")) ||
        !json_str(rec, "winning_response", NULL))
        return false;
    if (cJSON_IsBool(c))
        return !f->only_correct || cJSON_IsTrue(c);
    if (f->has_min_conviction)
        return json_num(rec, "conviction", 0) >= f->min_conviction;
    return !f->only_correct;
}

/* The prompt of sft and dpo rows: the winner's system message and the
 * round-0 propose message (what a model answering the question alone is
 * sent), as chat messages into arr. */
static int train_prompt(const export_q *q, const workflow *wf, size_t seat,
                        cJSON *arr)
{
    view v;
    int rc = view_init(&v, q, wf, 0);

    if (!rc)
        rc = propose_messages(&v, wf, seat, arr);
    view_release(&v, q->st->nseats);
    return rc;
}

static int add_common(const export_run *run, const cJSON *rec, cJSON *o)
{
    if (json_add_str(o, "id", json_str(rec, "id", "")) || add_run(run, o) ||
        json_add_item(
            o, "correct",
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "correct"),
                            1)) ||
        json_add_num(o, "conviction", json_num(rec, "conviction", 0)))
        return NSED_ENOMEM;
    return 0;
}

static int sft_row(const export_run *run, const export_q *q, const cJSON *rec,
                   buf *out)
{
    const state *st = q->st;
    cJSON *o = cJSON_CreateObject(), *msgs;
    int rc = NSED_ENOMEM;

    if (st->final_seat < 0 || (size_t)st->final_seat >= st->nseats)
        return 0;
    if (!o || !(msgs = cJSON_AddArrayToObject(o, "messages")))
        goto out;
    rc = train_prompt(q, run->wf, (size_t)st->final_seat, msgs);
    if (!rc)
        rc = add_message(msgs, "assistant",
                         json_str(rec, "winning_response", ""));
    if (!rc)
        rc = add_common(run, rec, o);
    if (!rc &&
        (json_add_item(o, "final_answer", str_or_null(st->final_answer)) ||
         json_add_item(
             o, "winner",
             cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(rec, "winner"),
                             1))))
        rc = NSED_ENOMEM;
    if (!rc)
        rc = put_line(o, out);
out:
    cJSON_Delete(o);
    return rc;
}

/* The rejected candidate of a dpo row in round r whose winner is cand w:
 * the lowest-scored other candidate with a score below the winner's,
 * preferring one whose answer is wrong (against the reference, or without
 * one, different from the winner's); ties to the lower label. -1 when
 * none. *wrong says which kind it is. */
static long dpo_rejected(const workflow *wf, const state *st,
                         const state_round *r, long w, bool *wrong)
{
    long best[2] = {-1, -1};
    const char *wans = r->proposals[r->cands[w].seat].answer;

    for (size_t j = 0; j < r->ncand; j++) {
        const char *a = r->proposals[r->cands[j].seat].answer;
        bool bad;
        int k;

        if ((long)j == w || !(r->agg.scores[j].score < r->agg.scores[w].score))
            continue;
        bad = st->reference ? !answer_matches(&wf->answer, a, st->reference)
                            : !answer_same(&wf->answer, a, wans);
        k = bad ? 0 : 1;
        if (best[k] < 0 ||
            r->agg.scores[j].score < r->agg.scores[best[k]].score)
            best[k] = (long)j;
    }
    *wrong = best[0] >= 0;
    return best[0] >= 0 ? best[0] : best[1];
}

static int dpo_side(const workflow *wf, const export_q *q, const char *side,
                    const state_round *r, long cand, cJSON *o)
{
    const size_t seat = r->cands[cand].seat;
    const state_proposal *p = &r->proposals[seat];
    char key[64];
    cJSON *m = cJSON_CreateArray();

    if (!m || json_add_item(o, side, m) ||
        add_message(m, "assistant", p->text ? p->text : ""))
        return NSED_ENOMEM;
    snprintf(key, sizeof key, "%s_score", side);
    if (json_add_num(o, key, r->agg.scores[cand].score))
        return NSED_ENOMEM;
    snprintf(key, sizeof key, "%s_answer", side);
    if (json_add_item(o, key, str_or_null(p->answer)))
        return NSED_ENOMEM;
    snprintf(key, sizeof key, "%s_seat", side);
    if (json_add_num(o, key, (double)seat))
        return NSED_ENOMEM;
    snprintf(key, sizeof key, "%s_model", side);
    if (json_add_str(o, key, wf->models[q->st->seats[seat].model].id))
        return NSED_ENOMEM;
    snprintf(key, sizeof key, "%s_label", side);
    return json_add_item(o, key, label_or_null(cand)) ? NSED_ENOMEM : 0;
}

static int dpo_row(const export_run *run, const export_q *q, const cJSON *rec,
                   buf *out)
{
    const state *st = q->st;
    const state_round *r;
    cJSON *o = NULL, *prompt;
    long w = -1, rej;
    bool wrong = false;
    int rc = NSED_ENOMEM;

    if (st->final_source != STATE_FINAL_WINNER || st->final_round < 0 ||
        st->final_round >= q->nrounds)
        return 0;
    r = q->rounds[st->final_round];
    for (size_t j = 0; r->aggregated && j < r->ncand; j++)
        if ((long)r->cands[j].seat == st->final_seat)
            w = (long)j;
    if (w < 0 || (rej = dpo_rejected(run->wf, st, r, w, &wrong)) < 0)
        return 0;
    if (!(o = cJSON_CreateObject()) ||
        !(prompt = cJSON_AddArrayToObject(o, "prompt")))
        goto out;
    rc = train_prompt(q, run->wf, (size_t)st->final_seat, prompt);
    if (!rc)
        rc = dpo_side(run->wf, q, "chosen", r, w, o);
    if (!rc)
        rc = dpo_side(run->wf, q, "rejected", r, rej, o);
    if (!rc)
        rc = add_common(run, rec, o);
    if (!rc && (json_add_num(o, "round", r->index) ||
                json_add_item(o, "rejected_wrong", cJSON_CreateBool(wrong))))
        rc = NSED_ENOMEM;
    if (!rc)
        rc = put_line(o, out);
out:
    cJSON_Delete(o);
    return rc;
}

/* ---- csv ---------------------------------------------------------------- */

/* The columns: a name and the member path in the result record ("a" or
 * "a.b"); "tags" and "missing_seats" are joined with ';', and the run's
 * fields come from the run. */
static const char *const csv_cols[][2] = {
    {"id", "id"},
    {"status", "status"},
    {"failure", "failure"},
    {"final_answer", "final_answer"},
    {"final_source", "final_source"},
    {"reference", "reference"},
    {"correct", "correct"},
    {"winner_seat", "winner.seat"},
    {"winner_model", "winner.model"},
    {"winner_role", "winner.role"},
    {"winner_round", "winner.round"},
    {"rounds", "rounds"},
    {"stop_reason", "stop_reason"},
    {"conviction", "conviction"},
    {"prompt_tokens", "tokens.prompt"},
    {"completion_tokens", "tokens.completion"},
    {"cost_usd", "cost_usd"},
    {"degraded", "degraded"},
    {"missing_seats", "missing_seats"},
    {"majority_answer", "baselines.majority.answer"},
    {"majority_correct", "baselines.majority.correct"},
    {"tags", "tags"},
    {"exploration", "exploration"},
    {"winning_response", "winning_response"},
    {"workflow_hash", NULL},
    {"run_id", NULL},
};

/* s as one RFC 4180 field: quoted when it holds a comma, a quote, CR or
 * LF, its quotes doubled. */
static int csv_field(buf *out, const char *s)
{
    int rc = 0;

    if (!strpbrk(s, ",\"\r\n"))
        return buf_adds(out, s);
    rc = buf_addc(out, '"');
    for (const char *p = s; *p && !rc; p++)
        rc = *p == '"' ? buf_adds(out, "\"\"") : buf_addc(out, *p);
    return rc ? rc : buf_addc(out, '"');
}

/* The text of a JSON value in a cell: "" for null or absent, strings as
 * they are, numbers and booleans as JSON writes them, arrays joined with
 * ';' (a seat's model for an object). */
static int csv_value(buf *cell, const cJSON *v)
{
    char *s;
    int rc = 0;

    if (!v || cJSON_IsNull(v))
        return 0;
    if (cJSON_IsString(v))
        return buf_adds(cell, v->valuestring);
    if (cJSON_IsArray(v)) {
        const cJSON *e;

        cJSON_ArrayForEach(e, v) {
            if (cell->len && (rc = buf_addc(cell, ';')))
                return rc;
            rc = cJSON_IsObject(e) ? buf_adds(cell, json_str(e, "model", ""))
                                   : csv_value(cell, e);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (!(s = cJSON_PrintUnformatted(v)))
        return NSED_ENOMEM;
    rc = buf_adds(cell, s);
    free(s);
    return rc;
}

int export_csv_header(buf *out)
{
    int rc = 0;

    for (size_t i = 0; i < sizeof csv_cols / sizeof csv_cols[0] && !rc; i++) {
        if (i)
            rc = buf_addc(out, ',');
        if (!rc)
            rc = csv_field(out, csv_cols[i][0]);
    }
    return rc ? rc : buf_adds(out, "\r\n");
}

static int csv_row(const export_run *run, const cJSON *rec, buf *out)
{
    int rc = 0;

    for (size_t i = 0; i < sizeof csv_cols / sizeof csv_cols[0] && !rc; i++) {
        const char *path = csv_cols[i][1];
        buf cell;

        buf_init(&cell, (size_t)1 << 30);
        if (i)
            rc = buf_addc(out, ',');
        if (!rc && !path) {
            const char *v = strcmp(csv_cols[i][0], "run_id") == 0
                                ? run->run_id
                                : run->workflow_hash;

            rc = buf_adds(&cell, v ? v : "");
        } else if (!rc) {
            const cJSON *v = rec;
            char part[64];

            while (v && *path) {
                size_t n = strcspn(path, ".");

                snprintf(part, sizeof part, "%.*s", (int)n, path);
                v = cJSON_GetObjectItemCaseSensitive(v, part);
                path += n + (path[n] == '.');
            }
            rc = csv_value(&cell, v);
        }
        if (!rc)
            rc = csv_field(out, cell.ptr);
        buf_release(&cell);
    }
    return rc ? rc : buf_adds(out, "\r\n");
}

/* ---- dispatch ----------------------------------------------------------- */

int export_rows(const export_run *run, enum export_format f,
                const export_filter *flt, store_txn *txn, const char *qid,
                const char *text, size_t len, buf *out, nsed_err *err)
{
    cJSON *rec = cJSON_ParseWithLength(text, len);
    export_q q = {0};
    int rc = 0;

    if (!rec)
        return store_corrupt(err, txn, STORE_RESULTS, qid, "not JSON");
    switch (f) {
    case EXPORT_FMT_RESULTS:
        rc = NSED_EINTERNAL;
        break;
    case EXPORT_FMT_CSV:
        rc = csv_row(run, rec, out);
        break;
    case EXPORT_FMT_TRACES:
        rc = export_q_load(run, txn, qid, &q, err);
        if (!rc)
            rc = trace_row(run, &q, rec, out);
        break;
    case EXPORT_FMT_SFT:
    case EXPORT_FMT_DPO:
        if (!export_keep(flt, rec))
            break;
        rc = export_q_load(run, txn, qid, &q, err);
        if (!rc)
            rc = f == EXPORT_FMT_SFT ? sft_row(run, &q, rec, out)
                                     : dpo_row(run, &q, rec, out);
        break;
    }
    export_q_release(&q);
    cJSON_Delete(rec);
    return rc;
}
