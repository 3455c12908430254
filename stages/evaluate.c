#include "stages/evaluate.h"

#include "pipeline/base/json.h"
#include "stages/mask.h"
#include "stages/seed.h"
#include "stages/text.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ----------------------------------------------------------- */

/* json_find_last_object's test: the object has an "evaluations" array. */
static bool has_evaluations(const cJSON *o, void *arg)
{
    (void)arg;
    return cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "evaluations"));
}

/* Label of an entry: trimmed, an optional leading "candidate" dropped,
 * upper-cased; then it must read as a label. */
static int entry_label(const cJSON *v, size_t *index)
{
    char tmp[TEXT_LABEL_MAX];
    const char *s;
    size_t n;

    if (!cJSON_IsString(v))
        return NSED_EINVAL;
    s = v->valuestring;
    n = strlen(s);
    text_trim(&s, &n);
    if (n > 9 && text_eq_ci(s, "candidate", 9) && !isalpha((unsigned char)s[9])) {
        s += 9;
        n -= 9;
        while (n && (isspace((unsigned char)*s) || *s == ':' || *s == '#')) {
            s++;
            n--;
        }
    }
    if (n == 0 || n >= TEXT_LABEL_MAX)
        return NSED_EINVAL;
    for (size_t i = 0; i < n; i++)
        tmp[i] = (char)toupper((unsigned char)s[i]);
    return text_label_index(tmp, n, index);
}

/* Weight of an entry: a number, or a string holding only a number. */
static int entry_weight(const cJSON *v, int *out)
{
    double d;

    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
    } else if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        size_t n = strlen(s);
        char tmp[64], *end;

        text_trim(&s, &n);
        if (n == 0 || n >= sizeof tmp)
            return NSED_EINVAL;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        /* strtod also reads "inf", "nan" and hex: only decimal forms */
        if (strspn(tmp, "0123456789+-.eE") != n)
            return NSED_EINVAL;
        errno = 0;
        d = strtod(tmp, &end);
        if (end != tmp + n || errno == ERANGE)
            return NSED_EINVAL;
    } else {
        return NSED_EINVAL;
    }
    if (!isfinite(d))
        return NSED_EINVAL;
    d = fmax(-100.0, fmin(100.0, d));
    *out = (int)lround(d);
    return 0;
}

static int by_cand(const void *a, const void *b)
{
    const state_weight *x = a, *y = b;

    return x->cand < y->cand ? -1 : x->cand > y->cand;
}

int evaluate_parse(const char *reply, size_t ncand, long own, bool self_votes,
                   state_evaluation *out, char *why, size_t whysize)
{
    cJSON *root = NULL;
    const cJSON *arr, *e;
    state_weight *w = NULL;
    size_t nw = 0, dself = 0, dunknown = 0, dinvalid = 0, ddup = 0;
    bool *seen = NULL;
    int rc = 0;

    /* the reply's own object: the last top-level one, so an object it
     * quotes before (a candidate's injected scores) is not taken */
    root = reply ? json_find_last_object(reply, strlen(reply),
                                         EVALUATE_JSON_TRIES, has_evaluations,
                                         NULL)
                 : NULL;
    if (!root) {
        snprintf(why, whysize, "the reply holds no JSON object with an "
                 "\"evaluations\" list");
        return NSED_EINVAL;
    }
    arr = cJSON_GetObjectItemCaseSensitive(root, "evaluations");
    w = calloc(ncand ? ncand : 1, sizeof *w);
    seen = calloc(ncand ? ncand : 1, sizeof *seen);
    if (!w || !seen) {
        rc = NSED_ENOMEM;
        goto out;
    }
    cJSON_ArrayForEach(e, arr) {
        const cJSON *c = cJSON_IsObject(e)
                             ? cJSON_GetObjectItemCaseSensitive(e, "candidate")
                             : NULL;
        const cJSON *cr;
        size_t idx;
        int weight;

        if (!c || !cJSON_IsObject(e)) {
            dinvalid++;
            continue;
        }
        if (entry_label(c, &idx)) {
            /* a string that is no label at all names no candidate */
            if (cJSON_IsString(c))
                dunknown++;
            else
                dinvalid++;
            continue;
        }
        if (idx >= ncand) {
            dunknown++;
            continue;
        }
        if (own >= 0 && idx == (size_t)own && !self_votes) {
            dself++;
            continue;
        }
        if (entry_weight(cJSON_GetObjectItemCaseSensitive(e, "weight"),
                         &weight)) {
            dinvalid++;
            continue;
        }
        if (seen[idx]) {
            ddup++;
            continue;
        }
        cr = cJSON_GetObjectItemCaseSensitive(e, "critique");
        rc = text_clean(cJSON_IsString(cr) ? cr->valuestring : "",
                        cJSON_IsString(cr) ? strlen(cr->valuestring) : 0,
                        STATE_CRITIQUE_MAX, &w[nw].critique);
        if (rc)
            goto out;
        seen[idx] = true;
        w[nw].cand = idx;
        w[nw].weight = weight;
        nw++;
    }
    if (nw == 0 && cJSON_GetArraySize(arr) == 0) {
        snprintf(why, whysize,
                 "the \"evaluations\" list was empty; it "
                 "needs one entry for each candidate you were shown");
        rc = NSED_EINVAL;
        goto out;
    }
    if (nw == 0) {
        snprintf(why, whysize, "no entry of \"evaluations\" had a candidate "
                 "label you were shown and a numeric weight");
        rc = NSED_EINVAL;
        goto out;
    }
    qsort(w, nw, sizeof *w, by_cand);
    out->weights = w;
    out->nweights = nw;
    out->dropped_self = dself;
    out->dropped_unknown = dunknown;
    out->dropped_invalid = dinvalid;
    out->dropped_duplicate = ddup;
    w = NULL;
out:
    if (w) {
        for (size_t i = 0; i < nw; i++)
            free(w[i].critique);
        free(w);
    }
    free(seen);
    cJSON_Delete(root);
    return rc;
}

/* ---- prompts ----------------------------------------------------------- */

int evaluate_schema(const char *const *labels, size_t n, char **out)
{
    cJSON *root = cJSON_CreateObject(), *props, *ev, *item, *ip, *x, *req;
    char *s = NULL;

    if (!root)
        return NSED_ENOMEM;
    /* minItems = maxItems = n with the label enum: a grammar-constrained
     * server cannot produce an empty list or leave a candidate out (it can
     * still repeat a label; evaluate_parse drops the repeat) */
    if (!cJSON_AddStringToObject(root, "type", "object") ||
        !(props = cJSON_AddObjectToObject(root, "properties")) ||
        !(ev = cJSON_AddObjectToObject(props, "evaluations")) ||
        !cJSON_AddStringToObject(ev, "type", "array") ||
        !cJSON_AddNumberToObject(ev, "minItems", (double)n) ||
        !cJSON_AddNumberToObject(ev, "maxItems", (double)n) ||
        !(item = cJSON_AddObjectToObject(ev, "items")) ||
        !cJSON_AddStringToObject(item, "type", "object") ||
        !(ip = cJSON_AddObjectToObject(item, "properties")))
        goto out;
    x = cJSON_AddObjectToObject(ip, "candidate");
    if (!x || !cJSON_AddStringToObject(x, "type", "string"))
        goto out;
    {
        cJSON *en = cJSON_CreateStringArray(labels, (int)n);

        if (!en)
            goto out;
        cJSON_AddItemToObject(x, "enum", en);
    }
    x = cJSON_AddObjectToObject(ip, "weight");
    if (!x || !cJSON_AddStringToObject(x, "type", "integer") ||
        !cJSON_AddNumberToObject(x, "minimum", -100) ||
        !cJSON_AddNumberToObject(x, "maximum", 100))
        goto out;
    x = cJSON_AddObjectToObject(ip, "critique");
    if (!x || !cJSON_AddStringToObject(x, "type", "string") ||
        !cJSON_AddNumberToObject(x, "maxLength", EVALUATE_SCHEMA_CRITIQUE_MAX))
        goto out;
    {
        static const char *const fields[] = {"candidate", "weight",
                                             "critique"};

        req = cJSON_CreateStringArray(fields, 3);
        if (!req)
            goto out;
        cJSON_AddItemToObject(item, "required", req);
    }
    if (!cJSON_AddFalseToObject(item, "additionalProperties"))
        goto out;
    req = cJSON_CreateStringArray((const char *const[]){"evaluations"}, 1);
    if (!req)
        goto out;
    cJSON_AddItemToObject(root, "required", req);
    if (!cJSON_AddFalseToObject(root, "additionalProperties"))
        goto out;
    s = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    if (!s)
        return NSED_ENOMEM;
    *out = s;
    return 0;
}

/* The candidates seat is shown, in the order shown, into order[0..n) (at
 * least r->ncand entries): the order anonymize recorded, or for a state
 * of an older nsed, which recorded none, the round's order masked. */
static size_t shown_order(const state_round *r, size_t seat, bool self,
                          size_t *order)
{
    const state_evaluation *ev = r->evals ? &r->evals[seat] : NULL;
    size_t n = 0;

    if (ev && ev->shown) {
        memcpy(order, ev->shown, ev->nshown * sizeof *order);
        return ev->nshown;
    }
    for (size_t j = 0; j < r->ncand; j++)
        if (mask_shows(r, seat, j, self))
            order[n++] = j;
    return n;
}

/* The label shown at position p for candidate cand: under per_evaluator
 * the evaluator's own A, B, ... by position, else the candidate's. */
static void shown_label(const state_round *r, size_t p, size_t cand,
                        char label[TEXT_LABEL_MAX])
{
    text_label(r->per_evaluator ? p : cand, label);
}

int evaluate_render(const state *st, const workflow *wf, size_t seat,
                    buf *out, buf *labels_out)
{
    const state_round *r = st->cur;
    const bool self = wf->scoring.allow_self_votes;
    size_t order[WORKFLOW_MAX_SEATS], n;
    buf cands, labels;
    int rc = 0;

    if (r->ncand > WORKFLOW_MAX_SEATS)
        return NSED_EINTERNAL;
    n = shown_order(r, seat, self, order);
    buf_init(&cands, STAGE_PROMPT_MAX);
    buf_init(&labels, 4096);
    for (size_t p = 0; p < n && !rc; p++) {
        const size_t j = order[p];
        char label[TEXT_LABEL_MAX];

        shown_label(r, p, j, label);
        if (cands.len)
            rc = buf_adds(&cands, "\n\n");
        if (!rc)
            rc = text_add_block(&cands, "CANDIDATE", label, r->fence,
                                r->cands[j].text, strlen(r->cands[j].text));
        if (!rc && labels.len)
            rc = buf_adds(&labels, ", ");
        if (!rc)
            rc = buf_adds(&labels, label);
    }
    if (!rc) {
        workflow_prompt_var vars[] = {
            {"question", st->question},
            {"candidates", cands.ptr},
            {"labels", labels.ptr},
        };

        rc = workflow_prompt_render(wf->prompts.evaluate, vars, 3, out);
    }
    if (!rc && labels_out)
        rc = buf_add(labels_out, labels.ptr, labels.len);
    buf_release(&cands);
    buf_release(&labels);
    return rc;
}

/* The labels seat is shown, as an array for the schema. */
static int shown_labels(const state_round *r, size_t seat, bool self,
                        char (*labels)[TEXT_LABEL_MAX], const char **ptrs,
                        size_t *n)
{
    size_t order[WORKFLOW_MAX_SEATS];

    if (r->ncand > WORKFLOW_MAX_SEATS)
        return NSED_EINTERNAL;
    *n = shown_order(r, seat, self, order);
    for (size_t p = 0; p < *n; p++) {
        shown_label(r, p, order[p], labels[p]);
        ptrs[p] = labels[p];
    }
    return 0;
}

static int plan_seat(const state *st, const workflow *wf, size_t seat,
                     bool repair, stage_requests *list)
{
    const state_round *r = st->cur;
    const state_evaluation *ev = &r->evals[seat];
    const size_t model = st->seats[seat].model;
    char labels[WORKFLOW_MAX_SEATS][TEXT_LABEL_MAX];
    const char *ptrs[WORKFLOW_MAX_SEATS];
    stage_request *req;
    buf user, lab, rep;
    size_t nl = 0;
    int rc;

    buf_init(&user, STAGE_PROMPT_MAX);
    buf_init(&lab, 4096);
    buf_init(&rep, STAGE_PROMPT_MAX);
    req = stage_requests_add(list);
    if (!req) {
        rc = NSED_ENOMEM;
        goto out;
    }
    req->kind = repair ? STAGE_KIND_REPAIR : STAGE_KIND_EVALUATE;
    req->seat = seat;
    req->model = model;
    req->round = r->index;
    rc = seed_call(st->seed, st->qid, r->index, seat, req->kind, 0, &req->seed);
    if (!rc)
        rc = evaluate_render(st, wf, seat, &user, &lab);
    if (!rc)
        rc = stage_request_add_chat(req, wf, &st->seats[seat], user.ptr);
    if (!rc && repair) {
        /* a repair is a second chance, not a seat the question needs: its
         * failure makes the seat abstain (evaluate.h) */
        req->optional = true;
        if (ev->truncated)
            req->max_tokens = EVALUATE_REPAIR_BUDGET *
                              wf->models[model].sampling.max_tokens;
    }
    if (!rc && repair) {
        workflow_prompt_var vars[] = {
            {"error", ev->error ? ev->error : "it could not be parsed"},
            {"labels", lab.ptr},
        };

        rc = stage_request_add_message(
            req, STAGE_ROLE_ASSISTANT, ev->first_reply ? ev->first_reply : "");
        if (!rc)
            rc = workflow_prompt_render(wf->prompts.repair, vars, 2, &rep);
        if (!rc)
            rc = stage_request_add_message(req, STAGE_ROLE_USER, rep.ptr);
    }
    if (!rc && wf->models[model].structured_output) {
        rc = shown_labels(r, seat, wf->scoring.allow_self_votes, labels, ptrs,
                          &nl);
        if (!rc)
            rc = evaluate_schema(ptrs, nl, &req->json_schema);
    }
out:
    buf_release(&user);
    buf_release(&lab);
    buf_release(&rep);
    return rc;
}

int evaluate_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests list = {0};
    const state_round *r = st->cur;
    int rc = 0;

    for (size_t s = 0; r->evals && s < st->nseats && !rc; s++) {
        if (r->evals[s].status == STATE_EVAL_PENDING)
            rc = plan_seat(st, wf, s, false, &list);
        else if (r->evals[s].status == STATE_EVAL_REPAIR)
            rc = plan_seat(st, wf, s, true, &list);
    }
    if (rc) {
        stage_requests_release(&list);
        return rc;
    }
    *out = list;
    return 0;
}

/* ---- reduce ------------------------------------------------------------ */

/* Parse a reply of seat into ne. Under per_evaluator its labels are the
 * seat's own (A = the first block it was shown): parsed against the
 * shown positions, then mapped back to candidates through ev->shown. */
static int parse_shown(const state_round *r, size_t seat, const char *reply,
                       bool self, state_evaluation *ne, char *why,
                       size_t whysize)
{
    const state_evaluation *ev = &r->evals[seat];
    int rc;

    if (!r->per_evaluator || !ev->shown)
        return evaluate_parse(reply, r->ncand, mask_own_candidate(r, seat),
                              self, ne, why, whysize);
    /* its own candidate has no label of its own here unless self votes
     * show it, and then it is kept: no index to drop */
    rc = evaluate_parse(reply, ev->nshown, -1, self, ne, why, whysize);
    if (rc)
        return rc;
    for (size_t k = 0; k < ne->nweights; k++)
        ne->weights[k].cand = ev->shown[ne->weights[k].cand];
    qsort(ne->weights, ne->nweights, sizeof *ne->weights, by_cand);
    return 0;
}

/* Build the seat's next evaluation record from a response into *ne. */
static int reduce_one(const state *st, const workflow *wf,
                      const stage_response *rs, state_evaluation *ne)
{
    const state_round *r = st->cur;
    const state_evaluation *old = &r->evals[rs->seat];
    const bool repair = old->status == STATE_EVAL_REPAIR;
    const char *content = rs->content ? rs->content : "";
    char why[256];
    char *reply = NULL;
    int rc;

    memset(ne, 0, sizeof *ne);
    ne->usage = old->usage;
    ne->usage.prompt_tokens += rs->prompt_tokens;
    ne->usage.completion_tokens += rs->completion_tokens;
    ne->usage.cost_usd += rs->cost_usd;
    ne->repaired = repair;
    ne->truncated = old->truncated || (rs->ok && rs->truncated);
    if (old->shown) {
        ne->shown = malloc((old->nshown ? old->nshown : 1) * sizeof *ne->shown);
        if (!ne->shown)
            return NSED_ENOMEM;
        memcpy(ne->shown, old->shown, old->nshown * sizeof *ne->shown);
        ne->nshown = old->nshown;
    }
    if (repair) {
        ne->first_reply = old->first_reply ? strdup(old->first_reply) : NULL;
        if (old->first_reply && !ne->first_reply)
            return NSED_ENOMEM;
    }
    if (!rs->ok && rs->infra && !repair) {
        ne->status = STATE_EVAL_FAILED;
        ne->error = strdup(rs->error ? rs->error : "call failed");
        return ne->error ? 0 : NSED_ENOMEM;
    }
    if (rs->ok) {
        rc = text_clean(content, strlen(content), STATE_TEXT_MAX, &reply);
        if (rc)
            return rc;
        ne->reply = reply;
        rc = parse_shown(r, rs->seat, reply, wf->scoring.allow_self_votes, ne,
                         why, sizeof why);
        if (rc == NSED_ENOMEM)
            return rc;
        if (!rc) {
            ne->status = STATE_EVAL_OK;
            return 0;
        }
        if (rs->truncated)
            snprintf(why, sizeof why,
                     "it was cut off at the length limit "
                     "(max_tokens) before the JSON was complete; reply with "
                     "the JSON object only, no other text, and keep each "
                     "critique under %d characters",
                     EVALUATE_SCHEMA_CRITIQUE_MAX);
    } else if (repair) {
        snprintf(why, sizeof why, "the repair call failed: %s",
                 rs->error ? rs->error : "call failed");
    } else {
        snprintf(why, sizeof why, "%s", rs->error ? rs->error
                                                  : "the call failed");
    }
    /* unusable: one repair, then abstention */
    ne->status = repair ? STATE_EVAL_ABSTAINED : STATE_EVAL_REPAIR;
    if (!repair && ne->reply) {
        ne->first_reply = strdup(ne->reply);
        if (!ne->first_reply)
            return NSED_ENOMEM;
    }
    ne->error = strdup(why);
    return ne->error ? 0 : NSED_ENOMEM;
}

int evaluate_reduce(state *st, const workflow *wf,
                    const stage_response *resps, size_t n, nsed_err *err)
{
    state_round *r = st->cur;
    state_evaluation *ne = NULL;
    bool *seen = NULL;
    size_t done = 0;
    int rc = 0;

    if (st->stage != STATE_STAGE_EVALUATE || !r->evals)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: evaluate called in stage %s", st->qid,
                          state_stage_name(st->stage));
    seen = calloc(st->nseats, sizeof *seen);
    ne = calloc(n ? n : 1, sizeof *ne);
    if (!seen || !ne) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const stage_response *rs = &resps[i];
        enum stage_kind want;

        if (rs->seat >= st->nseats || rs->round != r->index ||
            seen[rs->seat] ||
            (r->evals[rs->seat].status != STATE_EVAL_PENDING &&
             r->evals[rs->seat].status != STATE_EVAL_REPAIR)) {
            rc = nsed_error(err, NSED_EINVAL, "question %s round %d: response "
                            "%zu (seat %zu, round %d) answers no pending "
                            "evaluation", st->qid, r->index, i, rs->seat,
                            rs->round);
            goto out;
        }
        want = r->evals[rs->seat].status == STATE_EVAL_REPAIR
                   ? STAGE_KIND_REPAIR
                   : STAGE_KIND_EVALUATE;
        if (rs->kind != want) {
            rc = nsed_error(err, NSED_EINVAL, "question %s round %d: seat "
                            "%zu expected a response of kind %s, got %s", st->qid,
                            r->index, rs->seat, stage_kind_name(want),
                            stage_kind_name(rs->kind));
            goto out;
        }
        seen[rs->seat] = true;
    }
    for (; done < n; done++) {
        rc = reduce_one(st, wf, &resps[done], &ne[done]);
        if (rc) {
            state_evaluation_release(&ne[done]);
            goto out;
        }
    }
    /* commit */
    for (size_t i = 0; i < n; i++) {
        size_t s = resps[i].seat;
        state_usage u = {resps[i].prompt_tokens, resps[i].completion_tokens,
                         resps[i].cost_usd};

        state_evaluation_release(&r->evals[s]);
        r->evals[s] = ne[i];
        if (ne[i].status == STATE_EVAL_FAILED)
            st->missing[s] = true;
        state_usage_add(&st->usage, &u);
    }
    done = 0;
    {
        bool open = false;

        for (size_t s = 0; s < st->nseats; s++) {
            if (r->evals[s].status == STATE_EVAL_PENDING ||
                r->evals[s].status == STATE_EVAL_REPAIR)
                open = true;
        }
        if (!open)
            st->stage = STATE_STAGE_AGGREGATE;
    }
out:
    for (size_t i = 0; i < done; i++)
        state_evaluation_release(&ne[i]);
    free(ne);
    free(seen);
    return rc;
}
