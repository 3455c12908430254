/* runner_compare.c -- stores compared on the same questions
 * (runner_compare.h). */
#include "pipeline/runner/runner_compare.h"

#include "pipeline/base/json.h"
#include "pipeline/base/stats.h"
#include "pipeline/questions/questions.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one result contributes. */
typedef struct cmp_q {
    char *id;
    bool judged, correct;
    double cost, tokens, rounds;
    cJSON *tags; /* owned copy of the result's "tags", or NULL */
} cmp_q;

/* One store as read. */
typedef struct cmp_store {
    const char *dir;
    cJSON *manifest; /* owned, NULL when not bound */
    cmp_q *q;        /* the results, in question order */
    size_t nq, cap;
    cmp_q **byid; /* q sorted by id */
    size_t total, judged, correct, stopped;
    double cost, tokens, rounds_sum;
    double calls, ok, failed, retries, ledger_hits;
    store_txn *txn;
    nsed_err *err;
    int rc;
} cmp_store;

static void store_release(cmp_store *s)
{
    for (size_t i = 0; i < s->nq; i++) {
        free(s->q[i].id);
        cJSON_Delete(s->q[i].tags);
    }
    free(s->q);
    free(s->byid);
    cJSON_Delete(s->manifest);
}

/* ---- reading a store ------------------------------------------------------ */

static int add_result(cmp_store *s, const char *qid, const cJSON *res)
{
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(res, "tokens");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(res, "tags");
    const char *stop = json_str(res, "stop_reason", NULL);
    bool by_rule = stop && strcmp(stop, "none") != 0;
    cmp_q *q;

    if (s->nq == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        cmp_q *grown = realloc(s->q, cap * sizeof *grown);

        if (!grown)
            return NSED_ENOMEM;
        s->q = grown;
        s->cap = cap;
    }
    q = &s->q[s->nq];
    *q = (cmp_q){0};
    if (!(q->id = strdup(qid)))
        return NSED_ENOMEM;
    if (cJSON_IsArray(tags) && !(q->tags = cJSON_Duplicate(tags, true))) {
        free(q->id);
        return NSED_ENOMEM;
    }
    s->nq++;
    q->judged = cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(res,
                                                              "correct")) &&
                by_rule;
    q->correct = q->judged && json_bool(res, "correct", false);
    q->cost = json_num(res, "cost_usd", 0);
    q->tokens = json_num(tok, "prompt", 0) + json_num(tok, "completion", 0);
    q->rounds = json_num(res, "rounds", 0);
    s->cost += q->cost;
    s->tokens += q->tokens;
    s->judged += q->judged;
    s->correct += q->correct;
    if (by_rule) {
        s->stopped++;
        s->rounds_sum += q->rounds;
    }
    return 0;
}

static int visit_question(const question *qu, uint64_t seq, void *arg)
{
    cmp_store *s = arg;
    const void *val;
    size_t vlen;
    store_key key;
    cJSON *res;
    int rc;

    (void)seq;
    s->total++;
    rc = store_keys_result(qu->id, &key);
    if (!rc)
        rc = store_get(s->txn, STORE_RESULTS, key.bytes, key.len, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc) {
        s->rc = nsed_error(s->err, rc, "store %s: cannot read the result of %s",
                           s->dir, qu->id);
        return 1;
    }
    res = cJSON_ParseWithLength(val, vlen);
    if (!cJSON_IsObject(res)) {
        char what[STORE_KEY_MAX + 32];

        cJSON_Delete(res);
        snprintf(what, sizeof what, "the result of %s", qu->id);
        s->rc = store_corrupt(s->err, s->txn, STORE_RESULTS, what,
                              "not a JSON object");
        return 1;
    }
    rc = add_result(s, qu->id, res);
    cJSON_Delete(res);
    if (rc) {
        s->rc = nsed_error(s->err, rc, "out of memory");
        return 1;
    }
    return 0;
}

/* A "gateway/<id>" record: add its call counts. */
static int visit_gateway(const void *key, size_t klen, const void *val,
                         size_t vlen, void *arg)
{
    cmp_store *s = arg;
    cJSON *j = cJSON_ParseWithLength(val, vlen);

    (void)key;
    (void)klen;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        s->rc = store_corrupt(s->err, s->txn, STORE_TELEMETRY,
                              "a \"gateway/\" telemetry record",
                              "not a JSON object");
        return 1;
    }
    s->calls += json_num(j, "calls", 0);
    s->ok += json_num(j, "ok", 0);
    s->failed += json_num(j, "failed", 0);
    s->retries += json_num(j, "retries", 0);
    s->ledger_hits += json_num(j, "ledger_hits", 0);
    cJSON_Delete(j);
    return 0;
}

static int read_fn(store_txn *txn, void *arg, nsed_err *err)
{
    cmp_store *s = arg;
    const char *p = store_keys_telemetry_prefix(STORE_KEYS_GATEWAY);
    int rc;

    (void)err;
    s->txn = txn;
    rc = questions_scan(txn, 0, visit_question, s, s->err);
    if (s->rc)
        return s->rc;
    if (rc)
        return rc;
    rc = store_scan(txn, STORE_TELEMETRY, p, strlen(p), NULL, 0, visit_gateway,
                    s);
    if (s->rc)
        return s->rc;
    return rc ? nsed_error(s->err, rc, "store %s: cannot read the telemetry",
                           s->dir)
              : 0;
}

static int by_id(const void *x, const void *y)
{
    const cmp_q *const *a = x, *const *b = y;

    return strcmp((*a)->id, (*b)->id);
}

static int store_load(store *st, cmp_store *s, nsed_err *err)
{
    char *text = NULL;
    int rc;

    s->dir = store_dir(st);
    s->err = err;
    rc = store_manifest_json(st, &text, err);
    if (rc && rc != NSED_ENOTFOUND)
        return rc;
    if (!rc) {
        s->manifest = cJSON_Parse(text);
        free(text);
        if (!cJSON_IsObject(s->manifest))
            return nsed_error(err, NSED_ESTORE,
                              "%s: the run manifest is not valid JSON", s->dir);
    }
    rc = store_read(st, read_fn, s, err);
    if (rc)
        return rc;
    if (!s->nq)
        return nsed_error(err, NSED_EINVAL,
                          "store %s has no results yet (%zu questions); "
                          "nothing to compare",
                          s->dir, s->total);
    if (!(s->byid = malloc(s->nq * sizeof *s->byid)))
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->nq; i++)
        s->byid[i] = &s->q[i];
    qsort(s->byid, s->nq, sizeof *s->byid, by_id);
    return 0;
}

static const cmp_q *find(const cmp_store *s, const char *id)
{
    cmp_q key = {.id = (char *)id}, *kp = &key;
    cmp_q **hit = bsearch(&kp, s->byid, s->nq, sizeof *s->byid, by_id);

    return hit ? *hit : NULL;
}

/* ---- the JSON ------------------------------------------------------------- */

/* The builders below clear *ok when cJSON runs out of memory, so that a
 * whole object is built and checked once. */
static void num(cJSON *o, const char *key, double v, bool *ok)
{
    if (!cJSON_AddNumberToObject(o, key, v))
        *ok = false;
}

static void num_or_null(cJSON *o, const char *key, double v, bool have,
                        bool *ok)
{
    if (!(have ? cJSON_AddNumberToObject(o, key, v)
               : cJSON_AddNullToObject(o, key)))
        *ok = false;
}

static void str_or_null(cJSON *o, const char *key, const char *v, bool *ok)
{
    if (!(v ? cJSON_AddStringToObject(o, key, v)
            : cJSON_AddNullToObject(o, key)))
        *ok = false;
}

static cJSON *obj(cJSON *o, const char *key, bool *ok)
{
    cJSON *c = cJSON_AddObjectToObject(o, key);

    if (!c)
        *ok = false;
    return c;
}

static double ratio(double k, double n)
{
    return n > 0 ? k / n : 0;
}

static size_t workflow_changes(const cJSON *man)
{
    const cJSON *e;
    size_t n = 0;

    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(man, "history"))
        n += strcmp(json_str(e, "event", ""), "workflow_change") == 0;
    return n;
}

static void store_json(const cmp_store *s, cJSON *arr, bool *ok)
{
    cJSON *o = cJSON_CreateObject(), *calls;

    if (!o || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        *ok = false;
        return;
    }
    str_or_null(o, "store", s->dir, ok);
    str_or_null(o, "workflow_name",
                json_str(s->manifest, "workflow_name", NULL), ok);
    str_or_null(o, "workflow_hash",
                json_str(s->manifest, "workflow_hash", NULL), ok);
    num(o, "workflow_changes", (double)workflow_changes(s->manifest), ok);
    num(o, "questions", (double)s->total, ok);
    num(o, "results", (double)s->nq, ok);
    num(o, "judged", (double)s->judged, ok);
    num(o, "correct", (double)s->correct, ok);
    num(o, "accuracy", ratio((double)s->correct, (double)s->judged), ok);
    num(o, "tokens", s->tokens, ok);
    num(o, "cost_usd", s->cost, ok);
    num(o, "rounds_mean", ratio(s->rounds_sum, (double)s->stopped), ok);
    if (!(calls = obj(o, "calls", ok)))
        return;
    num(calls, "network", s->calls, ok);
    num(calls, "ok", s->ok, ok);
    num(calls, "failed", s->failed, ok);
    num(calls, "retries", s->retries, ok);
    num(calls, "ledger_hits", s->ledger_hits, ok);
}

/* The canonical workflow of a manifest, parsed (NULL when absent). */
static cJSON *canonical(const cJSON *man)
{
    const char *text = json_str(man, "workflow_canonical", NULL);

    return text ? cJSON_Parse(text) : NULL;
}

/* The top-level keys of object a appended to arr: those whose value in b
 * differs or is absent, or (only_missing) those b has not. */
static void keys_differ(const cJSON *a, const cJSON *b, cJSON *arr, bool *ok,
                        bool only_missing)
{
    const cJSON *k;

    cJSON_ArrayForEach(k, a) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(b, k->string);

        if (only_missing ? v != NULL : (v && cJSON_Compare(k, v, true)))
            continue;
        if (!cJSON_AddItemToArray(arr, cJSON_CreateString(k->string)))
            *ok = false;
    }
}

static void workflow_json(const cmp_store *a, const cmp_store *b, cJSON *o,
                          bool *ok)
{
    cJSON *ca = canonical(a->manifest), *cb = canonical(b->manifest), *arr;
    const char *ha = json_str(a->manifest, "workflow_hash", NULL);
    const char *hb = json_str(b->manifest, "workflow_hash", NULL);

    if (!cJSON_AddBoolToObject(o, "same_workflow",
                               ha && hb && strcmp(ha, hb) == 0))
        *ok = false;
    if (!cJSON_IsObject(ca) || !cJSON_IsObject(cb)) {
        if (!cJSON_AddNullToObject(o, "workflow_keys_differ"))
            *ok = false;
    } else if (!(arr = cJSON_AddArrayToObject(o, "workflow_keys_differ"))) {
        *ok = false;
    } else {
        keys_differ(ca, cb, arr, ok, false); /* changed or gone in b */
        keys_differ(cb, ca, arr, ok, true);  /* new in b */
    }
    cJSON_Delete(ca);
    cJSON_Delete(cb);
}

/* A tag's counts over the paired questions. */
typedef struct cmp_tag {
    const char *name; /* borrowed from a result of the first store */
    size_t n, ka, kb;
} cmp_tag;

typedef struct cmp_side {
    double cost, tokens, rounds;
} cmp_side;

/* 1 when a string equal to t comes before t in the array arr. */
static bool listed_before(const cJSON *arr, const cJSON *t)
{
    for (const cJSON *u = arr->child; u && u != t; u = u->next)
        if (cJSON_IsString(u) && !strcmp(u->valuestring, t->valuestring))
            return true;
    return false;
}

static void tag_add(cmp_tag *tags, size_t *ntags, const cmp_q *qa,
                    const cmp_q *qb)
{
    const cJSON *t;

    cJSON_ArrayForEach(t, qa->tags) {
        size_t i;

        if (!cJSON_IsString(t))
            continue;
        for (i = 0; i < *ntags; i++)
            if (!strcmp(tags[i].name, t->valuestring))
                break;
        if (i == *ntags) {
            if (*ntags == RUNNER_CMP_TAGS)
                continue;
            tags[(*ntags)++] = (cmp_tag){.name = t->valuestring};
        }
        /* a tag listed twice on one question counts once */
        if (listed_before(qa->tags, t))
            continue;
        tags[i].n++;
        tags[i].ka += qa->correct;
        tags[i].kb += qb->correct;
    }
}

static void side_json(cJSON *o, const char *key, const cmp_side *s, size_t n,
                      bool *ok)
{
    cJSON *c = obj(o, key, ok);

    if (!c)
        return;
    num(c, "cost_usd", s->cost, ok);
    num(c, "tokens", s->tokens, ok);
    num(c, "rounds_mean", ratio(s->rounds, (double)n), ok);
}

static int comparison_json(const cmp_store *a, const cmp_store *b, cJSON *arr)
{
    size_t only_a = 0, only_b = 0, unjudged = 0, ntags = 0;
    size_t t[4] = {0}; /* a, b, c, d */
    cmp_side sa = {0}, sb = {0};
    cmp_tag *tags = calloc(RUNNER_CMP_TAGS, sizeof *tags);
    cJSON *o = cJSON_CreateObject(), *tj;
    double diff, lo, hi;
    size_t n;
    bool ok = true;

    if (!tags || !o) {
        free(tags);
        cJSON_Delete(o);
        return NSED_ENOMEM;
    }
    cJSON_AddItemToArray(arr, o);
    for (size_t i = 0; i < a->nq; i++) {
        const cmp_q *qa = &a->q[i], *qb = find(b, qa->id);

        if (!qb) {
            only_a++;
            continue;
        }
        if (!qa->judged || !qb->judged) {
            unjudged++;
            continue;
        }
        t[qa->correct ? (qb->correct ? 0 : 1) : (qb->correct ? 2 : 3)]++;
        sa.cost += qa->cost;
        sa.tokens += qa->tokens;
        sa.rounds += qa->rounds;
        sb.cost += qb->cost;
        sb.tokens += qb->tokens;
        sb.rounds += qb->rounds;
        tag_add(tags, &ntags, qa, qb);
    }
    for (size_t i = 0; i < b->nq; i++)
        only_b += find(a, b->q[i].id) == NULL;
    n = t[0] + t[1] + t[2] + t[3];
    /* other - first: the other store's right answers count as "first" */
    stats_newcombe_paired(t[0], t[2], t[1], t[3], STATS_Z95, &diff, &lo, &hi);
    str_or_null(o, "first", a->dir, &ok);
    str_or_null(o, "other", b->dir, &ok);
    workflow_json(a, b, o, &ok);
    num(o, "paired", (double)n, &ok);
    num(o, "only_first", (double)only_a, &ok);
    num(o, "only_other", (double)only_b, &ok);
    num(o, "unjudged", (double)unjudged, &ok);
    num(o, "a", (double)t[0], &ok);
    num(o, "b", (double)t[1], &ok);
    num(o, "c", (double)t[2], &ok);
    num(o, "d", (double)t[3], &ok);
    num(o, "first_correct", (double)(t[0] + t[1]), &ok);
    num(o, "other_correct", (double)(t[0] + t[2]), &ok);
    num(o, "first_accuracy", ratio((double)(t[0] + t[1]), (double)n), &ok);
    num(o, "other_accuracy", ratio((double)(t[0] + t[2]), (double)n), &ok);
    /* no pair, no difference: null rather than a [0, 0] interval */
    num_or_null(o, "diff", diff, n > 0, &ok);
    num_or_null(o, "ci95_lo", lo, n > 0, &ok);
    num_or_null(o, "ci95_hi", hi, n > 0, &ok);
    num(o, "mcnemar_p", stats_mcnemar_exact_p(t[1], t[2]), &ok);
    side_json(o, "first_paired", &sa, n, &ok);
    side_json(o, "other_paired", &sb, n, &ok);
    if ((tj = obj(o, "tags", &ok)))
        for (size_t i = 0; i < ntags; i++) {
            cJSON *e = obj(tj, tags[i].name, &ok);

            if (!e)
                break;
            num(e, "n", (double)tags[i].n, &ok);
            num(e, "first_correct", (double)tags[i].ka, &ok);
            num(e, "other_correct", (double)tags[i].kb, &ok);
            num(e, "first_accuracy",
                ratio((double)tags[i].ka, (double)tags[i].n), &ok);
            num(e, "other_accuracy",
                ratio((double)tags[i].kb, (double)tags[i].n), &ok);
            num(e, "diff",
                ratio((double)tags[i].kb - (double)tags[i].ka,
                      (double)tags[i].n),
                &ok);
        }
    free(tags);
    return ok ? 0 : NSED_ENOMEM;
}

int runner_compare_build(store *const *st, size_t n, cJSON **out, nsed_err *err)
{
    cmp_store *s = calloc(n ? n : 1, sizeof *s);
    cJSON *o = cJSON_CreateObject(), *stores, *cmps;
    bool ok = true;
    int rc = 0;

    if (!s || !o) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    if (n < 2) {
        rc = nsed_error(err, NSED_EINVAL, "compare needs at least two stores");
        goto out;
    }
    for (size_t i = 0; i < n && !rc; i++)
        rc = store_load(st[i], &s[i], err);
    if (rc)
        goto out;
    if (!cJSON_AddStringToObject(o, "interval", "newcombe-hybrid-score-95") ||
        !cJSON_AddStringToObject(o, "test", "mcnemar-exact") ||
        !(stores = cJSON_AddArrayToObject(o, "stores")) ||
        !(cmps = cJSON_AddArrayToObject(o, "comparisons"))) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        store_json(&s[i], stores, &ok);
    for (size_t i = 1; i < n && ok; i++)
        ok = comparison_json(&s[0], &s[i], cmps) == 0;
    if (!ok)
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
out:
    for (size_t i = 0; s && i < n; i++)
        store_release(&s[i]);
    free(s);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    *out = o;
    return 0;
}
