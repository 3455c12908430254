/* gateway_stats.c -- the JSON form of gateway_stats, as the runner's
 * telemetry records and the telemetry files keep it. */
#include "pipeline/gateway/gateway.h"

#include "pipeline/base/json.h"
#include "pipeline/base/jsonw.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
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
static void by_kind_write(jsonw *w, const gateway_stats *s)
{
    jsonw_key(w, "by_kind");
    jsonw_object_begin(w);
    for (int k = 0; k < GATEWAY_CALL_KIND_COUNT; k++) {
        if (s->kind_calls[k] == 0)
            continue;
        jsonw_key(w, gateway_call_kind_name((enum gateway_call_kind)k));
        jsonw_object_begin(w);
        jsonw_key_uint(w, "calls", s->kind_calls[k]);
        jsonw_key_int(w, "prompt_tokens", s->kind_prompt_tokens[k]);
        jsonw_key_int(w, "cached_tokens", s->kind_cached_tokens[k]);
        jsonw_object_end(w);
    }
    jsonw_object_end(w);
}

/* The counters print as integers and the three sums with the fewest
 * digits that read back (jsonw.h), with no tree built first: the runner
 * writes these records with every commit. */
int gateway_stats_write(const gateway_stats *s, char **out, size_t *len)
{
    jsonw w;
    int last = -1;

    jsonw_init(&w, 1 << 20, JSONW_CJSON);
    jsonw_object_begin(&w);
    jsonw_key_uint(&w, "calls", s->calls);
    jsonw_key_uint(&w, "ok", s->ok);
    jsonw_key_uint(&w, "failed", s->failed);
    jsonw_key_uint(&w, "attempts", s->attempts);
    jsonw_key_uint(&w, "retries", s->retries);
    jsonw_key_uint(&w, "ledger_hits", s->ledger_hits);
    jsonw_key_uint(&w, "cache_hits", s->cache_hits);
    jsonw_key_uint(&w, "breaker_opens", s->breaker_opens);
    jsonw_key_uint(&w, "stalls", s->stalls);
    jsonw_key_uint(&w, "health_checks", s->health_checks);
    jsonw_key_int(&w, "prompt_tokens", s->prompt_tokens);
    jsonw_key_int(&w, "completion_tokens", s->completion_tokens);
    jsonw_key_int(&w, "cached_tokens", s->cached_tokens);
    jsonw_key_num(&w, "cost_usd", s->cost_usd);
    jsonw_key_num(&w, "latency_sum_s", s->latency_sum_s);
    jsonw_key_num(&w, "latency_max_s", s->latency_max_s);
    jsonw_key(&w, "errors");
    jsonw_object_begin(&w);
    for (int k = 1; k < GATEWAY_ERR_KIND_COUNT; k++)
        jsonw_key_uint(&w, gateway_error_kind_name((enum gateway_error_kind)k),
                       s->attempt_errors[k]);
    jsonw_object_end(&w);
    jsonw_key(&w, "latency_hist");
    jsonw_array_begin(&w);
    for (int i = 0; i < GATEWAY_LATENCY_BUCKETS; i++)
        if (s->latency_hist[i])
            last = i;
    for (int i = 0; i <= last; i++)
        jsonw_uint(&w, s->latency_hist[i]);
    jsonw_array_end(&w);
    by_kind_write(&w, s);
    jsonw_object_end(&w);
    return jsonw_finish(&w, out, len);
}

cJSON *gateway_stats_to_json(const gateway_stats *s)
{
    char *text = NULL;
    cJSON *o;

    if (gateway_stats_write(s, &text, NULL))
        return NULL;
    o = cJSON_Parse(text);
    free(text);
    return o;
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
