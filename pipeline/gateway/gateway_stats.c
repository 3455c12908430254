/* gateway_stats.c -- the JSON form of gateway_stats, as the runner's
 * telemetry records and the telemetry files keep it. */
#include "pipeline/gateway/gateway.h"

#include <cjson/cJSON.h>
#include <string.h>

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

void gateway_stats_from_json(const cJSON *j, gateway_stats *s)
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

cJSON *gateway_stats_to_json(const gateway_stats *s)
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
