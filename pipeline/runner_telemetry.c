/* runner_telemetry.c -- call statistics per model, cumulative across the
 * runs of a store, kept in STORE_TELEMETRY as "gateway/<model id>". */
#include "pipeline/runner_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct runner_telemetry_base {
    size_t n;
    gateway_stats *stats; /* per wf->models index */
};

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

void runner_stats_from_json(const cJSON *j, gateway_stats *s)
{
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(j, "latency_hist");
    int i = 0;
    const cJSON *v;

    memset(s, 0, sizeof *s);
    s->calls = (uint64_t)num(j, "calls");
    s->ok = (uint64_t)num(j, "ok");
    s->failed = (uint64_t)num(j, "failed");
    s->attempts = (uint64_t)num(j, "attempts");
    s->retries = (uint64_t)num(j, "retries");
    s->ledger_hits = (uint64_t)num(j, "ledger_hits");
    s->breaker_opens = (uint64_t)num(j, "breaker_opens");
    s->prompt_tokens = (int64_t)num(j, "prompt_tokens");
    s->completion_tokens = (int64_t)num(j, "completion_tokens");
    s->cached_tokens = (int64_t)num(j, "cached_tokens");
    s->cost_usd = num(j, "cost_usd");
    s->latency_sum_s = num(j, "latency_sum_s");
    s->latency_max_s = num(j, "latency_max_s");
    for (int k = 0; k < GATEWAY_ERR_KIND_COUNT; k++)
        s->attempt_errors[k] = (uint64_t)num(
            errs, gateway_error_kind_name((enum gateway_error_kind)k));
    cJSON_ArrayForEach(v, hist) {
        if (i >= GATEWAY_LATENCY_BUCKETS)
            break;
        s->latency_hist[i++] = cJSON_IsNumber(v) ? (uint64_t)v->valuedouble : 0;
    }
}

cJSON *runner_stats_to_json(const gateway_stats *s)
{
    cJSON *o = cJSON_CreateObject(), *errs, *hist;
    int last = -1;

    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "calls", (double)s->calls);
    cJSON_AddNumberToObject(o, "ok", (double)s->ok);
    cJSON_AddNumberToObject(o, "failed", (double)s->failed);
    cJSON_AddNumberToObject(o, "attempts", (double)s->attempts);
    cJSON_AddNumberToObject(o, "retries", (double)s->retries);
    cJSON_AddNumberToObject(o, "ledger_hits", (double)s->ledger_hits);
    cJSON_AddNumberToObject(o, "breaker_opens", (double)s->breaker_opens);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)s->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens",
                            (double)s->completion_tokens);
    cJSON_AddNumberToObject(o, "cached_tokens", (double)s->cached_tokens);
    cJSON_AddNumberToObject(o, "cost_usd", s->cost_usd);
    cJSON_AddNumberToObject(o, "latency_sum_s", s->latency_sum_s);
    cJSON_AddNumberToObject(o, "latency_max_s", s->latency_max_s);
    errs = cJSON_AddObjectToObject(o, "errors");
    for (int k = 1; errs && k < GATEWAY_ERR_KIND_COUNT; k++)
        cJSON_AddNumberToObject(
            errs, gateway_error_kind_name((enum gateway_error_kind)k),
            (double)s->attempt_errors[k]);
    hist = cJSON_AddArrayToObject(o, "latency_hist");
    for (int i = 0; i < GATEWAY_LATENCY_BUCKETS; i++)
        if (s->latency_hist[i])
            last = i;
    for (int i = 0; hist && i <= last; i++)
        cJSON_AddItemToArray(hist,
                             cJSON_CreateNumber((double)s->latency_hist[i]));
    if (!errs || !hist) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int key_of(const workflow_model *m, char *key, size_t cap)
{
    int n = snprintf(key, cap, "gateway/%s", m->id);

    return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int load_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct {
        const workflow *wf;
        runner_telemetry_base *b;
    } *a = arg;
    char key[128];

    (void)err;
    for (size_t i = 0; i < a->wf->nmodels; i++) {
        const void *val;
        size_t vlen;
        int klen = key_of(&a->wf->models[i], key, sizeof key);
        cJSON *j;

        if (klen < 0 ||
            store_get(txn, STORE_TELEMETRY, key, (size_t)klen, &val, &vlen))
            continue;
        j = cJSON_ParseWithLength(val, vlen);
        if (j)
            runner_stats_from_json(j, &a->b->stats[i]);
        cJSON_Delete(j);
    }
    return 0;
}

int runner_telemetry_load(store *st, const workflow *wf,
                          runner_telemetry_base **out, nsed_err *err)
{
    runner_telemetry_base *b = calloc(1, sizeof *b);
    struct {
        const workflow *wf;
        runner_telemetry_base *b;
    } a = {wf, b};
    int rc;

    if (!b || !(b->stats = calloc(wf->nmodels, sizeof *b->stats))) {
        free(b);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    b->n = wf->nmodels;
    rc = store_read(st, load_fn, &a, err);
    if (rc) {
        runner_telemetry_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static void stats_add(gateway_stats *t, const gateway_stats *s)
{
    t->calls += s->calls;
    t->ok += s->ok;
    t->failed += s->failed;
    t->attempts += s->attempts;
    t->retries += s->retries;
    t->ledger_hits += s->ledger_hits;
    t->dry_run += s->dry_run;
    t->breaker_opens += s->breaker_opens;
    t->prompt_tokens += s->prompt_tokens;
    t->completion_tokens += s->completion_tokens;
    t->cached_tokens += s->cached_tokens;
    t->cost_usd += s->cost_usd;
    t->latency_sum_s += s->latency_sum_s;
    if (s->latency_max_s > t->latency_max_s)
        t->latency_max_s = s->latency_max_s;
    for (int k = 0; k < GATEWAY_ERR_KIND_COUNT; k++)
        t->attempt_errors[k] += s->attempt_errors[k];
    for (int i = 0; i < GATEWAY_LATENCY_BUCKETS; i++)
        t->latency_hist[i] += s->latency_hist[i];
}

int runner_telemetry_put(store_txn *txn, const runner_telemetry_base *base,
                         const workflow *wf, const gateway *gw)
{
    char key[128];

    for (size_t i = 0; i < wf->nmodels && i < base->n; i++) {
        gateway_stats s = base->stats[i], now;
        cJSON *j;
        char *text;
        int klen = key_of(&wf->models[i], key, sizeof key), rc;

        if (klen < 0 || gateway_stats_get(gw, i, &now))
            continue;
        stats_add(&s, &now);
        j = runner_stats_to_json(&s);
        text = j ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        if (!text)
            return NSED_ENOMEM;
        rc = store_put(txn, STORE_TELEMETRY, key, (size_t)klen, text,
                       strlen(text));
        free(text);
        if (rc)
            return rc;
    }
    return 0;
}

void runner_telemetry_current(const runner_telemetry_base *base,
                              const gateway *gw, size_t m,
                              gateway_stats *out)
{
    gateway_stats now;

    memset(out, 0, sizeof *out);
    if (m >= base->n)
        return;
    *out = base->stats[m];
    if (gateway_stats_get(gw, m, &now) == 0)
        stats_add(out, &now);
}

void runner_telemetry_free(runner_telemetry_base *b)
{
    if (!b)
        return;
    free(b->stats);
    free(b);
}
