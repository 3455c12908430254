/* gateway_stats.c -- the JSON form of gateway_stats, as the runner's
 * telemetry records and the telemetry files keep it. */
#include "pipeline/gateway/gateway.h"

#include "pipeline/base/json.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <string.h>

const char *gateway_call_kind_name(enum gateway_call_kind k)
{
    switch (k) {
    case GATEWAY_CALL_OTHER:
        return "other";
    case GATEWAY_CALL_PROPOSE:
        return "propose";
    case GATEWAY_CALL_REVISE:
        return "revise";
    case GATEWAY_CALL_EVALUATE:
        return "evaluate";
    case GATEWAY_CALL_REPAIR:
        return "repair";
    case GATEWAY_CALL_SELFCONS:
        return "self_consistency";
    }
    return "?";
}

/* "by_kind": {kind: {"calls", "prompt_tokens", "cached_tokens"}}, absent
 * in records written before it (they read as zero). */
static void by_kind_from_json(const cJSON *j, gateway_stats *s)
{
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(j, "by_kind");

    for (int k = 0; by && k < GATEWAY_CALL_KIND_COUNT; k++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(
            by, gateway_call_kind_name((enum gateway_call_kind)k));

        s->kind_calls[k] = (uint64_t)json_num(e, "calls", 0);
        s->kind_prompt_tokens[k] = (int64_t)json_num(e, "prompt_tokens", 0);
        s->kind_cached_tokens[k] = (int64_t)json_num(e, "cached_tokens", 0);
    }
}

/* Only the kinds with a call, so a record stays short. */
static bool by_kind_to_json(cJSON *o, const gateway_stats *s)
{
    cJSON *by = cJSON_AddObjectToObject(o, "by_kind");

    for (int k = 0; by && k < GATEWAY_CALL_KIND_COUNT; k++) {
        cJSON *e;

        if (s->kind_calls[k] == 0)
            continue;
        e = cJSON_AddObjectToObject(
            by, gateway_call_kind_name((enum gateway_call_kind)k));
        if (!e || json_add_num(e, "calls", (double)s->kind_calls[k]) ||
            json_add_num(e, "prompt_tokens",
                         (double)s->kind_prompt_tokens[k]) ||
            json_add_num(e, "cached_tokens", (double)s->kind_cached_tokens[k]))
            by = NULL;
    }
    return by == NULL;
}

void gateway_stats_from_json(const cJSON *j, gateway_stats *s)
{
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(j, "latency_hist");
    int i = 0;
    const cJSON *v;

    memset(s, 0, sizeof *s);
    s->calls = (uint64_t)json_num(j, "calls", 0);
    s->ok = (uint64_t)json_num(j, "ok", 0);
    s->failed = (uint64_t)json_num(j, "failed", 0);
    s->attempts = (uint64_t)json_num(j, "attempts", 0);
    s->retries = (uint64_t)json_num(j, "retries", 0);
    s->ledger_hits = (uint64_t)json_num(j, "ledger_hits", 0);
    s->cache_hits = (uint64_t)json_num(j, "cache_hits", 0);
    s->breaker_opens = (uint64_t)json_num(j, "breaker_opens", 0);
    s->stalls = (uint64_t)json_num(j, "stalls", 0);
    s->health_checks = (uint64_t)json_num(j, "health_checks", 0);
    s->prompt_tokens = (int64_t)json_num(j, "prompt_tokens", 0);
    s->completion_tokens = (int64_t)json_num(j, "completion_tokens", 0);
    s->cached_tokens = (int64_t)json_num(j, "cached_tokens", 0);
    s->cost_usd = json_num(j, "cost_usd", 0);
    s->latency_sum_s = json_num(j, "latency_sum_s", 0);
    s->latency_max_s = json_num(j, "latency_max_s", 0);
    for (int k = 0; k < GATEWAY_ERR_KIND_COUNT; k++)
        s->attempt_errors[k] = (uint64_t)json_num(
            errs, gateway_error_kind_name((enum gateway_error_kind)k), 0);
    cJSON_ArrayForEach(v, hist) {
        if (i >= GATEWAY_LATENCY_BUCKETS)
            break;
        s->latency_hist[i++] = cJSON_IsNumber(v) ? (uint64_t)v->valuedouble : 0;
    }
    by_kind_from_json(j, s);
}

cJSON *gateway_stats_to_json(const gateway_stats *s)
{
    cJSON *o = cJSON_CreateObject(), *errs, *hist;
    int last = -1;
    bool bad;

    if (!o)
        return NULL;
    bad = json_add_num(o, "calls", (double)s->calls) ||
          json_add_num(o, "ok", (double)s->ok) ||
          json_add_num(o, "failed", (double)s->failed) ||
          json_add_num(o, "attempts", (double)s->attempts) ||
          json_add_num(o, "retries", (double)s->retries) ||
          json_add_num(o, "ledger_hits", (double)s->ledger_hits) ||
          json_add_num(o, "cache_hits", (double)s->cache_hits) ||
          json_add_num(o, "breaker_opens", (double)s->breaker_opens) ||
          json_add_num(o, "stalls", (double)s->stalls) ||
          json_add_num(o, "health_checks", (double)s->health_checks) ||
          json_add_num(o, "prompt_tokens", (double)s->prompt_tokens) ||
          json_add_num(o, "completion_tokens", (double)s->completion_tokens) ||
          json_add_num(o, "cached_tokens", (double)s->cached_tokens) ||
          json_add_num(o, "cost_usd", s->cost_usd) ||
          json_add_num(o, "latency_sum_s", s->latency_sum_s) ||
          json_add_num(o, "latency_max_s", s->latency_max_s);
    errs = bad ? NULL : cJSON_AddObjectToObject(o, "errors");
    for (int k = 1; errs && k < GATEWAY_ERR_KIND_COUNT; k++) {
        if (json_add_num(errs,
                         gateway_error_kind_name((enum gateway_error_kind)k),
                         (double)s->attempt_errors[k]))
            errs = NULL;
    }
    hist = errs ? cJSON_AddArrayToObject(o, "latency_hist") : NULL;
    for (int i = 0; i < GATEWAY_LATENCY_BUCKETS; i++)
        if (s->latency_hist[i])
            last = i;
    for (int i = 0; hist && i <= last; i++) {
        cJSON *n = cJSON_CreateNumber((double)s->latency_hist[i]);

        if (!n || !cJSON_AddItemToArray(hist, n)) {
            cJSON_Delete(n);
            hist = NULL;
        }
    }
    if (!errs || !hist || by_kind_to_json(o, s)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
